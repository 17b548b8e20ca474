//! `mlv branch`, `mlv tag`, `mlv switch`.

use mlv::ops::branch::{self, SwitchMode};

use super::{checkout::print_report, open_repo, print_json, progress};

/// List, create or delete branches.
#[derive(clap::Args)]
pub struct BranchArgs {
    /// Branch to create (omit to list).
    name: Option<String>,
    /// Where the new branch starts (default HEAD).
    start: Option<String>,
    /// Delete the named branch.
    #[arg(short, long)]
    delete: bool,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_branch(args: BranchArgs) -> anyhow::Result<()> {
    let repo = open_repo()?;
    match (args.name, args.delete) {
        (Some(name), true) => {
            branch::delete_branch(&repo, &name)?;
            outln!("Deleted branch {name}")?;
        }
        (Some(name), false) => {
            let id = branch::create_branch(&repo, &name, args.start.as_deref())?;
            outln!("Created branch {name} at {}", id.short())?;
        }
        (None, true) => anyhow::bail!("--delete needs a branch name"),
        (None, false) => {
            let list = branch::list_branches(&repo)?;
            if args.json {
                return print_json(&list);
            }
            for b in list {
                outln!("{} {} {}", if b.current { '*' } else { ' ' }, b.name, b.id.short())?;
            }
        }
    }
    Ok(())
}

/// List, create or delete tags.
#[derive(clap::Args)]
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
    let mut repo = open_repo()?;
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

/// Switch branches.
#[derive(clap::Args)]
pub struct SwitchArgs {
    /// Branch to switch to.
    name: String,
    /// Create the branch at HEAD first.
    #[arg(short = 'c', long, conflicts_with = "orphan")]
    create: bool,
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
    let mode = match (args.create, args.orphan) {
        (true, _) => SwitchMode::Create,
        (_, true) => SwitchMode::Orphan,
        _ => SwitchMode::Existing,
    };
    let r = branch::switch(&repo, &args.name, mode, args.force, progress::for_stderr().as_ref())?;
    print_report(&r, false)
}
