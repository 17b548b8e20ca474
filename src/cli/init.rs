//! `mlv init`.

use std::path::PathBuf;

/// Create an empty repository.
#[derive(clap::Args)]
pub struct Args {
    /// Directory to create the repository in (default: current directory).
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = std::path::absolute(args.dir.unwrap_or_else(|| PathBuf::from(".")))?;
    std::fs::create_dir_all(&root)?;
    let repo = mlv::Repository::init(&root)?;
    outln!("Initialized empty mlv repository in {}", repo.dir.display())?;
    Ok(())
}
