//! `mlv add` and `mlv rm`.

use std::path::PathBuf;

use super::{human, open_repo, print_json, progress};

/// Stage files.
///
/// Directories are walked (honouring `.mlvignore`, gitignore syntax). Each tensor of a
/// `.safetensors` file becomes one object: identical tensors are stored once, and changed
/// tensors are stored as deltas against the best base found (same file and tensor in the
/// parent commit, the revision given with --base, or a similar tensor anywhere).
#[derive(clap::Args)]
pub struct Args {
    /// Files or directories to stage.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Use the same paths in this revision as delta bases (e.g. the base model's branch).
    #[arg(long, value_name = "REV")]
    base: Option<String>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = open_repo()?;
    let cwd = std::env::current_dir()?;
    let report = mlv::ops::add::add(&repo, &cwd, &args.paths, args.base.as_deref(), progress::for_stderr().as_ref())?;
    if args.json {
        return print_json(&report);
    }
    if !report.staged.is_empty() {
        outln!(
            "staged {} file(s), {} logical, {} stored ({} tensors new, {} as deltas, {} already stored)",
            report.staged.len(),
            human(report.logical_bytes),
            human(report.stored_bytes),
            report.tensors_standalone,
            report.tensors_delta,
            report.tensors_duplicate
        )?;
    }
    for r in &report.removed {
        outln!("staged removal of {r}")?;
    }
    for s in &report.skipped {
        eprintln!("warning: skipped {}: {}", s.path, s.why);
    }
    Ok(())
}

/// Remove files from the index (and the work tree).
#[derive(clap::Args)]
pub struct RmArgs {
    /// Files or directories to remove.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Only unstage; keep the files in the work tree.
    #[arg(long)]
    cached: bool,
    /// Remove even files with changes that are not committed (they are lost).
    #[arg(short, long)]
    force: bool,
}

pub fn run_rm(args: RmArgs) -> anyhow::Result<()> {
    let repo = open_repo()?;
    let cwd = std::env::current_dir()?;
    for p in mlv::ops::add::rm(&repo, &cwd, &args.paths, args.cached, args.force)? {
        outln!("rm {p}")?;
    }
    Ok(())
}
