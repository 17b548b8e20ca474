//! `mlv checkout` and `mlv restore`.

use std::path::PathBuf;

use mlv::ops::checkout::{CheckoutReport, checkout, checkout_paths, target_of};

use super::{human, open_repo, print_json, progress};

/// Check out a revision, or restore paths from it.
///
/// `mlv checkout REV` makes the work tree match REV byte for byte (every file is verified
/// against its hash while written, and written atomically); a branch name attaches HEAD to
/// it, anything else detaches HEAD. Uncommitted changes that would be overwritten stop the
/// checkout unless --force. `mlv checkout REV -- PATH...` restores only those paths.
#[derive(clap::Args)]
pub struct Args {
    /// Branch, tag, HEAD~N or commit id.
    rev: String,
    /// Only these paths (HEAD does not move).
    #[arg(last = true)]
    paths: Vec<PathBuf>,
    /// Discard local changes that would be overwritten.
    #[arg(short, long)]
    force: bool,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub fn print_report(r: &CheckoutReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    outln!("{} file(s) written ({}), {} removed", r.written.len(), human(r.bytes), r.removed.len())?;
    match (&r.branch, &r.commit) {
        (Some(b), _) => outln!("Switched to branch '{b}'")?,
        (None, Some(c)) => outln!("HEAD is now at {}", c.short())?,
        (None, None) => {}
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = open_repo()?;
    let progress = progress::for_stderr();
    if !args.paths.is_empty() {
        let commit = repo.resolve(&args.rev)?;
        let cwd = std::env::current_dir()?;
        let mut r = checkout_paths(&repo, commit, &cwd, &args.paths, progress.as_ref())?;
        r.commit = None;
        return print_report(&r, args.json);
    }
    let (target, commit) = target_of(&repo, &args.rev)?;
    let r = checkout(&repo, target, Some(commit), args.force, progress.as_ref())?;
    print_report(&r, args.json)
}

/// Restore work-tree files from the index's commit, or unstage them.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Paths to restore.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Unstage: reset the index entries to HEAD, leaving the work tree alone.
    #[arg(long)]
    staged: bool,
    /// Restore from this revision instead of HEAD.
    #[arg(long, value_name = "REV")]
    source: Option<String>,
}

pub fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    let repo = open_repo()?;
    let cwd = std::env::current_dir()?;
    let source = args.source.as_deref().unwrap_or("HEAD");
    if args.staged {
        for p in mlv::ops::checkout::unstage(&repo, source, &cwd, &args.paths)? {
            outln!("unstaged {p}")?;
        }
        return Ok(());
    }
    let commit = repo.resolve(source)?;
    let r = checkout_paths(&repo, commit, &cwd, &args.paths, progress::for_stderr().as_ref())?;
    outln!("restored {} file(s)", r.written.len())?;
    Ok(())
}
