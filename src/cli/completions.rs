//! `mlv completions`.

use clap::CommandFactory;

/// Print a shell completion script to stdout.
///
/// Load it in the current shell, or install it where your shell looks for completions.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  source <(mlv completions bash)                              bash, this shell only
  mlv completions bash > ~/.local/share/bash-completion/completions/mlv
  mlv completions zsh > ~/.zfunc/_mlv                         with fpath+=(~/.zfunc) in .zshrc
  mlv completions fish > ~/.config/fish/completions/mlv.fish
  mlv completions powershell >> $PROFILE")]
pub struct Args {
    /// The shell.
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mlv", &mut out);
    use std::io::Write as _;
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}
