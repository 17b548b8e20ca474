//! `mlv branch`, `mlv tag`, `mlv switch`.

use mlv::ops::branch::{self, SwitchMode};

use super::{checkout::print_report, open_repo, open_repo_any, print_json, progress};

/// List, create or delete branches.
///
/// A branch is a name that moves: each commit made on it advances it. `mlv switch` moves
/// HEAD (and the work tree) from one branch to another.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv branch                      list branches (* marks the current one)
  mlv branch -vv                  with each one's last commit and how it stands against its upstream
  mlv branch exp-lr-3e-5 v1       a new branch starting at tag v1
  mlv branch -d exp-lr-3e-5       delete it (refused while its commits are on no other branch)")]
pub struct BranchArgs {
    /// Branch to create (omit to list).
    name: Option<String>,
    /// Where the new branch starts (default HEAD).
    start: Option<String>,
    /// Delete the named branch; it must be merged into HEAD or its upstream.
    #[arg(short, long)]
    delete: bool,
    /// Delete the named branch even if its commits are on no other branch.
    #[arg(short = 'D')]
    force_delete: bool,
    /// Show each branch's commit subject; twice (-vv) also its upstream, ahead and behind.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// List the remote-tracking branches (origin/main, ...).
    #[arg(short, long)]
    remotes: bool,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_branch(args: BranchArgs) -> anyhow::Result<()> {
    let mut repo = open_repo_any()?;
    match (args.name, args.delete || args.force_delete) {
        (Some(name), true) => {
            let id = branch::delete_branch(&mut repo, &name, args.force_delete)?;
            outln!("Deleted branch {name} (was {})", id.short())?;
        }
        (Some(name), false) => {
            let id = branch::create_branch(&repo, &name, args.start.as_deref())?;
            outln!("Created branch {name} at {}", id.short())?;
        }
        (None, true) => anyhow::bail!("--delete needs a branch name"),
        (None, false) => {
            let list = branch::list_branches(&repo, args.verbose > 0 || args.json, args.remotes)?;
            if args.json {
                return print_json(&list);
            }
            let width = list.iter().map(|b| b.name.len()).max().unwrap_or(0);
            for b in list {
                let mark = if b.current { '*' } else { ' ' };
                let mut line = format!("{mark} {:<width$} {}", b.name, b.id.short());
                if args.verbose > 1
                    && let Some(t) = &b.tracking
                {
                    line.push_str(&format!(" [{}]", upstream_state(t)));
                }
                if let Some(s) = b.subject.filter(|_| args.verbose > 0) {
                    line.push_str(&format!(" {s}"));
                }
                outln!("{line}")?;
            }
        }
    }
    Ok(())
}

/// `origin/main: ahead 1, behind 2`, as `git branch -vv` shows it.
fn upstream_state(t: &mlv::ops::status::Tracking) -> String {
    match (t.fetched, t.ahead, t.behind) {
        (false, _, _) => format!("{}: gone", t.upstream),
        (true, 0, 0) => t.upstream.clone(),
        (true, a, 0) => format!("{}: ahead {a}", t.upstream),
        (true, 0, b) => format!("{}: behind {b}", t.upstream),
        (true, a, b) => format!("{}: ahead {a}, behind {b}", t.upstream),
    }
}

/// List, create or delete tags.
///
/// A tag names one commit for good (a release, an evaluated checkpoint); unlike a branch it
/// never moves. With -m it is annotated: a tag object with its own message and author.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv tag v1                      tag HEAD
  mlv tag -m \"eval 81.2\" ft-v2   an annotated tag with a message
  mlv checkout v1                 look at a tagged commit (detached HEAD)")]
pub struct TagArgs {
    /// Tag to create (omit to list).
    name: Option<String>,
    /// What to tag (default HEAD).
    rev: Option<String>,
    /// Make an annotated tag with this message.
    #[arg(short, long)]
    message: Option<String>,
    /// Delete the named tag.
    #[arg(short, long)]
    delete: bool,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_tag(args: TagArgs) -> anyhow::Result<()> {
    let mut repo = open_repo_any()?;
    match (args.name, args.delete) {
        (Some(name), true) => {
            branch::delete_tag(&repo, &name)?;
            outln!("Deleted tag {name}")?;
        }
        (Some(name), false) => {
            let id = branch::create_tag(&mut repo, &name, args.rev.as_deref(), args.message.as_deref())?;
            outln!("Tagged {name} ({})", id.short())?;
        }
        (None, true) => anyhow::bail!("--delete needs a tag name"),
        (None, false) => {
            let list = branch::list_tags(&repo)?;
            if args.json {
                return print_json(&list);
            }
            for t in list {
                outln!("{}", t.name)?;
            }
        }
    }
    Ok(())
}

/// Switch to a branch (-c to create it, --orphan for an unrelated history).
///
/// The work tree becomes the branch's last commit, byte for byte, and HEAD follows the branch,
/// so the next commit advances it. Only files that differ are written. Local changes to files
/// the switch would overwrite stop it unless --force; other local changes are kept. To look at
/// a tag or a commit without a branch, use `mlv checkout`.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv switch main                 back to main
  mlv switch -c exp-lr-3e-5       a new branch at HEAD, and switch to it
  mlv switch -c fix v1            a new branch at tag v1
  mlv switch --orphan base        a new, empty history (e.g. for a base model)
  mlv switch --force-create main origin/main   take the remote's main after a refused pull")]
pub struct SwitchArgs {
    /// Branch to switch to.
    name: String,
    /// With -c or --force-create: where the branch starts (default HEAD).
    start: Option<String>,
    /// Create the branch first.
    #[arg(short = 'c', long, conflicts_with = "orphan")]
    create: bool,
    /// Create the branch, or move it if it exists (e.g. `mlv switch --force-create main
    /// origin/main` to take the remote's commits after a refused pull).
    #[arg(long, conflicts_with_all = ["create", "orphan"])]
    force_create: bool,
    /// Start a new branch with no history and an empty work tree (e.g. for a base model;
    /// relate later commits to it with --base).
    #[arg(long)]
    orphan: bool,
    /// Discard local changes that would be overwritten.
    #[arg(short, long)]
    force: bool,
}

pub fn run_switch(args: SwitchArgs) -> anyhow::Result<()> {
    let repo = open_repo()?;
    if args.start.is_some() && !(args.create || args.force_create) {
        anyhow::bail!("a start point needs -c or --force-create");
    }
    let mode = match (args.create, args.orphan, args.force_create) {
        (_, _, true) => SwitchMode::Reset(args.start),
        (true, _, _) => SwitchMode::Create(args.start),
        (_, true, _) => SwitchMode::Orphan,
        _ => SwitchMode::Existing,
    };
    let r = branch::switch(&repo, &args.name, mode, args.force, progress::for_stderr().as_ref())?;
    print_report(&r, false)
}
