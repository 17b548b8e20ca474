//! `mlv init`.

use std::path::PathBuf;

/// Create an empty repository in the current directory (or DIR).
///
/// The repository lives in DIR/.mlv; DIR is the work tree. With --bare, DIR is a repository
/// without a work tree, to push to and serve from.
#[derive(clap::Args)]
pub struct Args {
    /// Directory to create the repository in (default: current directory).
    dir: Option<PathBuf>,
    /// A repository without a work tree, to push to and serve from: DIR holds what `.mlv`
    /// would (HEAD, config, objects, refs).
    #[arg(long)]
    bare: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = std::path::absolute(args.dir.unwrap_or_else(|| PathBuf::from(".")))?;
    std::fs::create_dir_all(&root)?;
    let repo = if args.bare { mlv::Repository::init_bare(&root)? } else { mlv::Repository::init(&root)? };
    let kind = if repo.bare { "bare " } else { "" };
    outln!("Initialized empty {kind}mlv repository in {}", repo.dir.display())?;
    Ok(())
}
