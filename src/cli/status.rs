//! `mlv status`.

use mlv::ops::status::{Change, ChangeKind, Tracking};
use mlv::ops::tensors::TensorCounts;

use super::{count, open_repo, print_json};

/// Show staged, unstaged and untracked changes.
///
/// Staged changes (`mlv add` ran on them) are what the next commit records; unstaged changes
/// are edits to tracked files since they were staged; untracked files are not tracked yet.
/// A modified safetensors file says how many of its tensors changed (same name, different
/// content: values, dtype or shape), were added and were removed, counted as `mlv diff`
/// counts them; `mlv diff` shows by how much.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv status
  mlv status --json               for scripts: staged, unstaged, untracked, tensor counts")]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `3 tensors changed, 2 added`: the non-zero counts, the noun on the first.
pub fn tensor_summary(t: &TensorCounts) -> String {
    let parts: Vec<(usize, &str)> = [(t.changed, "changed"), (t.added, "added"), (t.removed, "removed")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .collect();
    if parts.is_empty() {
        return "tensors unchanged; header or metadata changed".into();
    }
    let words: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, (n, what))| if i == 0 { format!("{} {what}", count(*n, "tensor")) } else { format!("{n} {what}") })
        .collect();
    words.join(", ")
}

fn line(c: &Change) -> String {
    let what = match c.kind {
        ChangeKind::New => "new file:",
        ChangeKind::Modified => "modified:",
        ChangeKind::Deleted => "deleted:",
    };
    match (&c.problem, &c.tensors) {
        (Some(p), _) => format!("\t{what:<10} {} ({p}; `mlv checkout HEAD -- {}` restores it)", c.path, c.path),
        (None, Some(t)) => format!("\t{what:<10} {} ({})", c.path, tensor_summary(t)),
        (None, None) => format!("\t{what:<10} {}", c.path),
    }
}

/// `Your branch is ahead of 'origin/main' by 2 commits.` and the like, as git says it.
fn tracking_line(t: &Tracking) -> String {
    let up = &t.upstream;
    match (t.fetched, t.ahead, t.behind) {
        (false, _, _) => format!("Your branch is based on '{up}', but it has not been fetched (or is gone)."),
        (true, 0, 0) => format!("Your branch is up to date with '{up}'."),
        (true, a, 0) => {
            format!("Your branch is ahead of '{up}' by {}.\n  (use \"mlv push\" to publish)", count(a, "commit"))
        }
        (true, 0, b) => {
            format!("Your branch is behind '{up}' by {}.\n  (use \"mlv pull\" to fast-forward)", count(b, "commit"))
        }
        (true, a, b) => format!("Your branch and '{up}' have diverged: {a} and {b} different commits each."),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = open_repo()?;
    let mut s = mlv::ops::status::status(&repo)?;
    if let Some(b) = &s.branch {
        s.tracking = mlv::ops::status::tracking(&repo, b)?;
    }
    if args.json {
        return print_json(&s);
    }
    match (&s.branch, &s.head) {
        (Some(b), _) => outln!("On branch {b}")?,
        (None, Some(h)) => outln!("HEAD detached at {}", h.short())?,
        (None, None) => outln!("HEAD detached")?,
    }
    if let Some(t) = &s.tracking {
        outln!("{}", tracking_line(t))?;
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
    if !s.skipped.is_empty() {
        outln!("\nNot tracked, and why:\n  (rename or replace them, or list them in .mlvignore)")?;
        for p in &s.skipped {
            outln!("\t{}: {}", p.path, p.why)?;
        }
    }
    if s.is_clean() {
        outln!("nothing to commit, working tree clean")?;
    }
    Ok(())
}
