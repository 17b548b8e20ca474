//! `mlv checkout` and `mlv restore`.

use std::path::PathBuf;

use mlv::ops::checkout::{CheckoutReport, checkout, checkout_paths, target_of};

use super::{count, human, open_repo, print_json, progress};

/// Check out a revision (whole tree) or restore paths from one (`-- PATH...`).
///
/// `mlv checkout REV` makes the work tree match REV byte for byte: every file is verified
/// against its hash while written, written atomically, and only files that differ are written
/// (with --force too). A branch name attaches HEAD to the branch; anything else (a tag, a
/// commit, HEAD~2) detaches HEAD: you can look around and commit, but those commits belong to
/// no branch until `mlv switch -c <name>` gives them one. Uncommitted changes that would be
/// overwritten stop the checkout unless --force, which discards them.
/// `mlv checkout REV -- PATH...` restores only those paths, and HEAD does not move.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv checkout v1                 the work tree as tagged v1 (detached HEAD)
  mlv checkout HEAD~1             the commit before the last one
  mlv checkout main               back to branch main
  mlv checkout -f HEAD            discard every local change
  mlv checkout v1 -- config.json  restore one file from v1")]
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

/// Prints what a checkout wrote and where HEAD is now.
pub fn print_report(r: &CheckoutReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    // A switch between branches on one commit writes nothing, and then says only where HEAD is.
    if !r.written.is_empty() || !r.removed.is_empty() {
        outln!("{} written ({}), {} removed", count(r.written.len(), "file"), human(r.bytes), r.removed.len())?;
    }
    match (&r.branch, &r.commit) {
        (Some(b), _) => outln!("Switched to branch '{b}'")?,
        (None, Some(c)) => {
            outln!("HEAD is now detached at {}: you are on no branch.", c.short())?;
            outln!("  (commits made here belong to no branch; `mlv switch -c <name>` starts one here)")?;
        }
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

/// Unstage files (restore --staged) or restore them from the index's commit.
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
    outln!("restored {}", count(r.written.len(), "file"))?;
    Ok(())
}
