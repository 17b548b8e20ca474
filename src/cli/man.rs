//! `mlv man`.

use std::path::PathBuf;

use clap::CommandFactory;

/// Write man pages: mlv.1 and one per command (mlv-add.1, ...).
///
/// With DIR, writes every page into DIR (created if missing). Without, prints mlv.1 to stdout.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv man ~/.local/share/man/man1 && man mlv-diff
  mlv man | man -l -")]
pub struct Args {
    /// Directory to write the pages into.
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cmd = super::Cli::command();
    let Some(dir) = args.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        use std::io::Write as _;
        std::io::stdout().lock().write_all(&out)?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(cmd, &dir)
        .map_err(|e| anyhow::anyhow!("cannot write man pages to {}: {e}", dir.display()))?;
    let pages = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count();
    outln!("wrote {} to {}", super::count(pages, "man page"), dir.display())?;
    Ok(())
}
