//! `mlv add` and `mlv rm`.

use std::path::PathBuf;

use super::{count, human, open_repo, print_json, progress};

/// Stage files: safetensors become tensor objects (deduplicated, delta-compressed); others blobs.
///
/// Directories are walked (honouring `.mlvignore`, gitignore syntax). Each tensor of a
/// `.safetensors` file becomes one object: a tensor already stored anywhere in the repository
/// is not stored again, and a changed tensor is stored as a delta (its difference, compressed)
/// against a base tensor: the same file and tensor in the last commit, the same path in the
/// revision given with --base (or `[delta.bases]` in .mlv/config), or else a tensor of the same
/// shape and a similar name found in the repository. Other files are stored as compressed blobs.
/// Files deleted from the work tree under the paths are staged as removals.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv add checkpoint/                     stage a checkpoint folder
  mlv add model.safetensors config.json   stage two files
  mlv add --base base-model ft/           fine-tune on its own branch: deltas against base-model's ft/")]
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
            "staged {}, {} logical, {} stored (tensors: {} stored whole, {} as deltas, {} already stored)",
            count(report.staged.len(), "file"),
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
    if report.staged.is_empty() && report.removed.is_empty() {
        let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
        match report.files_found {
            0 => outln!("nothing added: no files under {} (mlv tracks files, not directories)", paths.join(", "))?,
            n => {
                let verb = if n == 1 { "is" } else { "are" };
                outln!(
                    "nothing added: {} under {} {verb} already staged, unchanged",
                    count(n, "file"),
                    paths.join(", ")
                )?
            }
        }
    }
    for s in &report.skipped {
        eprintln!("warning: skipped {}: {}", s.path, s.why);
    }
    Ok(())
}

/// Unstage files and delete them from the work tree (or only unstage with --cached).
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
