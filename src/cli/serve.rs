//! `mlv serve`.

use std::path::PathBuf;

/// Serve repositories over HTTP.
#[derive(clap::Args)]
pub struct Args {
    /// A repository, or a directory of repositories.
    dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!("mlv serve is not available yet ({})", args.dir.display())
}
