//! `mlv log` and `mlv show`.

use mlv::object::Signature;
use mlv::ops::log::LogEntry;

use super::{human, open_repo_any, print_json};

/// Show commit history.
///
/// Newest first, from HEAD (or REV) back through the parents. Each commit is shown with the
/// branches and tags that point at it, as git does: `HEAD -> main` is the current branch,
/// `origin/main` a remote-tracking branch, `tag: v1` a tag. With --stat, each commit also says
/// how many bytes of storage it added (what it does not share with its parents).
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv log                         the current branch's history
  mlv log --oneline -n 5          the last five commits, one line each
  mlv log --stat v2               from tag v2, with the bytes each commit stored
  mlv log origin/main             what the remote's main has (after mlv fetch)")]
pub struct Args {
    /// Where to start (default HEAD).
    rev: Option<String>,
    /// At most this many commits.
    #[arg(short = 'n', long, default_value_t = usize::MAX, hide_default_value = true)]
    max_count: usize,
    /// Show the stored bytes each commit added.
    #[arg(long)]
    stat: bool,
    /// One line per commit.
    #[arg(long)]
    oneline: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn date(s: &Signature) -> String {
    mlv::provenance::format_time(s.time, s.tz_minutes)
}

/// ` (HEAD -> main, tag: v1)`, or nothing when no name points at the commit.
fn decoration(e: &LogEntry) -> String {
    if e.refs.is_empty() { String::new() } else { format!(" ({})", e.refs.join(", ")) }
}

fn print_entry(e: &LogEntry, oneline: bool) -> std::io::Result<()> {
    let subject = e.message.lines().next().unwrap_or("");
    if oneline {
        return outln!("{}{} {subject}", e.id.short(), decoration(e));
    }
    outln!("commit {}{}", e.id, decoration(e))?;
    if e.parents.len() > 1 {
        let ps: Vec<String> = e.parents.iter().map(|p| p.short()).collect();
        outln!("Merge: {}", ps.join(" "))?;
    }
    outln!("Author: {} <{}>", e.author.name, e.author.email)?;
    outln!("Date:   {}", date(&e.author))?;
    if let Some(g) = &e.git {
        outln!("Source: git {}{}", g.commit, if g.dirty { " (dirty)" } else { "" })?;
    }
    outln!()?;
    for l in e.message.lines() {
        outln!("    {l}")?;
    }
    match e.stored_bytes_added {
        Some(s) => outln!("\n    {} logical, {} stored added\n", human(e.logical_bytes), human(s)),
        None => outln!(),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = open_repo_any()?;
    let start = repo.resolve(args.rev.as_deref().unwrap_or("HEAD"))?;
    let entries = mlv::ops::log::log(&repo, start, args.max_count, args.stat)?;
    if args.json {
        return print_json(&entries);
    }
    for e in &entries {
        print_entry(e, args.oneline)?;
    }
    Ok(())
}

/// Show a commit: metadata, provenance and what changed.
///
/// The commit's author, date, message and source-code provenance (the git commit that produced
/// the checkpoint), then its changes against its first parent, as `mlv diff` shows them.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// The commit (default HEAD).
    rev: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_show(args: ShowArgs) -> anyhow::Result<()> {
    let repo = open_repo_any()?;
    let id = repo.resolve(args.rev.as_deref().unwrap_or("HEAD"))?;
    let entry = mlv::ops::log::log(&repo, id, 1, true)?.into_iter().next();
    let parent = repo.commit(&id)?.parents.first().copied();
    let old = parent.map_or(mlv::ops::diff::Side::Empty, mlv::ops::diff::Side::Commit);
    let files = mlv::ops::diff::diff(&repo, &old, &mlv::ops::diff::Side::Commit(id))?;
    if args.json {
        return print_json(&serde_json::json!({ "commit": entry, "diff": files }));
    }
    if let Some(e) = &entry {
        print_entry(e, false)?;
    }
    super::diff::print_files(&files)?;
    Ok(())
}
