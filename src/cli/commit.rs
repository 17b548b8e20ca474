//! `mlv commit`.

use mlv::ops::commit::CommitOptions;

use super::{count, human, open_repo, print_json, progress};

/// Record the staged snapshot as a new commit.
///
/// What `mlv add` staged becomes the next commit on the current branch (or on the detached
/// HEAD). Tensors were stored when they were added, so a commit itself writes little. The author is MLV_AUTHOR_NAME / MLV_AUTHOR_EMAIL, else `[user]` in .mlv/config, else git's
/// user.name / user.email. When the work tree is inside a git repository, the commit records
/// that repository's HEAD and whether it was dirty: the code that produced the checkpoint.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv commit -m \"base model\"             commit what is staged
  mlv commit -am \"fine-tune v2\"          stage every modified or deleted tracked file first
  mlv commit -a --base main -m \"ft\"      and store changed tensors as deltas against main's")]
pub struct Args {
    /// Commit message.
    #[arg(short, long)]
    message: String,
    /// Stage all modified and deleted tracked files first.
    #[arg(short, long)]
    all: bool,
    /// With -a: use the same paths in this revision as delta bases.
    #[arg(long, value_name = "REV", requires = "all")]
    base: Option<String>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut repo = open_repo()?;
    let opts = CommitOptions { message: &args.message, all: args.all, base: args.base.as_deref() };
    let report = mlv::ops::commit::commit(&mut repo, &opts, progress::for_stderr().as_ref())?;
    if args.json {
        print_json(&report)?;
        return auto_gc(&mut repo);
    }
    let branch = report.branch.as_deref().unwrap_or("detached HEAD");
    let subject = args.message.lines().next().unwrap_or("");
    outln!("[{branch} {}] {subject}", report.commit.short())?;
    outln!(" {}, {} logical", count(report.files, "file"), human(report.logical_bytes))?;
    if !report.staged.staged.is_empty() {
        let changed = count(report.staged.staged.len(), "changed file");
        outln!(" stored {} for {changed}", human(report.staged.stored_bytes))?;
    }
    auto_gc(&mut repo)
}

/// Repacks when packs have piled up (`gc.auto_packs`), as git's `gc --auto` does after a commit.
fn auto_gc(repo: &mut mlv::Repository) -> anyhow::Result<()> {
    if !mlv::ops::gc::needed(repo) {
        return Ok(());
    }
    eprintln!("Packing the repository: more than {} packs (see `mlv gc --help`)...", repo.config.gc.auto_packs);
    let report = mlv::ops::gc::gc(repo, &Default::default(), progress::for_stderr().as_ref())?;
    // On stderr, like the note before it: stdout stays the commit's report (or its JSON).
    eprintln!("{}", super::gc::summary(&report));
    Ok(())
}
