//! `mlv status`.

use mlv::ops::status::{Change, ChangeKind};

use super::{open_repo, print_json};

/// Show the working tree status.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn line(c: &Change) -> String {
    let what = match c.kind {
        ChangeKind::New => "new file:",
        ChangeKind::Modified => "modified:",
        ChangeKind::Deleted => "deleted:",
    };
    match c.tensors_changed {
        Some(n) => format!("\t{what:<10} {} ({n} tensor(s) changed)", c.path),
        None => format!("\t{what:<10} {}", c.path),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = open_repo()?;
    let s = mlv::ops::status::status(&repo)?;
    if args.json {
        return print_json(&s);
    }
    match (&s.branch, &s.head) {
        (Some(b), _) => outln!("On branch {b}")?,
        (None, Some(h)) => outln!("HEAD detached at {}", h.short())?,
        (None, None) => outln!("HEAD detached")?,
    }
    if s.head.is_none() {
        outln!("\nNo commits yet")?;
    }
    if !s.staged.is_empty() {
        outln!("\nChanges to be committed:")?;
        for c in &s.staged {
            outln!("{}", line(c))?;
        }
    }
    if !s.unstaged.is_empty() {
        outln!(
            "\nChanges not staged for commit:\n  (use \"mlv add <path>\" to stage, \"mlv commit -a\" to commit them all)"
        )?;
        for c in &s.unstaged {
            outln!("{}", line(c))?;
        }
    }
    if !s.untracked.is_empty() {
        outln!("\nUntracked files:\n  (use \"mlv add <path>\" to include in what will be committed)")?;
        for p in &s.untracked {
            outln!("\t{p}")?;
        }
    }
    if !s.unsupported.is_empty() {
        outln!(
            "\nFiles mlv cannot track:\n  (names must be valid UTF-8 without '\\'; rename them or list them in .mlvignore)"
        )?;
        for p in &s.unsupported {
            outln!("\t{p}")?;
        }
    }
    if s.is_clean() {
        outln!("nothing to commit, working tree clean")?;
    }
    Ok(())
}
