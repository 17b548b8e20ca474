//! `mlv commit`.

use mlv::ops::commit::CommitOptions;

use super::{human, open_repo, print_json, progress};

/// Record the staged snapshot.
///
/// The author is MLV_AUTHOR_NAME / MLV_AUTHOR_EMAIL, else `[user]` in .mlv/config, else git's
/// user.name / user.email. When the work tree is inside a git repository, the commit records
/// that repository's HEAD and whether it was dirty: the code that produced the checkpoint.
#[derive(clap::Args)]
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
        return print_json(&report);
    }
    let branch = report.branch.as_deref().unwrap_or("detached HEAD");
    let subject = args.message.lines().next().unwrap_or("");
    outln!("[{branch} {}] {subject}", report.commit.short())?;
    outln!(" {} file(s), {} logical", report.files, human(report.logical_bytes))?;
    if !report.staged.staged.is_empty() {
        outln!(" stored {} for {} changed file(s)", human(report.staged.stored_bytes), report.staged.staged.len())?;
    }
    Ok(())
}
