//! Command-line parsing and dispatch; each command lives in its own file.

/// `println!` that returns the error instead of panicking when stdout is closed (as in
/// `mlv log | head`); `main` then exits quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod add;
mod branch;
mod checkout;
mod clone;
mod commit;
mod completions;
mod config;
mod demo;
mod diff;
mod du;
mod fetch;
mod fsck;
mod gc;
mod init;
mod log;
mod man;
mod progress;
mod push;
mod remote;
mod serve;
mod status;
mod transfer;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Examples shown by `mlv --help`.
const EXAMPLES: &str = "\
Examples:
  mlv init                            make the current directory a repository
  mlv add checkpoint/                 stage a checkpoint folder
  mlv commit -m \"base model\"          record it
  mlv diff                            what changed since the last commit, tensor by tensor
  mlv log --stat                      history, with the bytes each commit stored

`mlv <command> --help` explains a command; `mlv completions bash` and `mlv man` install shell
completions and man pages.";

/// mlv: version control for model checkpoints.
///
/// Safetensors files are stored as tensor objects, deduplicated across files, commits and
/// branches; fine-tunes are stored as compressed deltas (BitX and better) against their base.
#[derive(Parser)]
#[command(name = "mlv", version, about, long_about, propagate_version = true, after_long_help = EXAMPLES)]
pub struct Cli {
    /// Run as if started in this directory.
    // Not named `dir`: a global option shares clap's id space with every subcommand's
    // arguments, and `init DIR` would then read -C's value.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    chdir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// The commands' descriptions are the doc comments of their `Args` structs: a doc comment
// here would replace their long descriptions in `--help` with its one line.
#[derive(Subcommand)]
enum Command {
    Init(init::Args),
    Add(add::Args),
    Rm(add::RmArgs),
    Restore(checkout::RestoreArgs),
    Status(status::Args),
    Commit(commit::Args),
    Log(log::Args),
    Show(log::ShowArgs),
    Diff(diff::Args),
    Checkout(checkout::Args),
    Switch(branch::SwitchArgs),
    Branch(branch::BranchArgs),
    Tag(branch::TagArgs),
    Du(du::Args),
    Config(config::Args),
    Remote(remote::Args),
    Push(push::Args),
    Fetch(fetch::Args),
    Pull(fetch::PullArgs),
    Clone(clone::Args),
    Fsck(fsck::Args),
    Gc(gc::Args),
    Serve(serve::Args),
    Demo(demo::Args),
    Completions(completions::Args),
    Man(man::Args),
}

pub use progress::{install_interrupt_handler, interrupted};

/// Dispatches a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.chdir {
        std::env::set_current_dir(dir).map_err(|e| anyhow::anyhow!("cannot enter {}: {e}", dir.display()))?;
    }
    // Long work that writes checks the interrupt flag and cleans up; the rest just dies.
    if matches!(
        cli.command,
        Command::Add(_)
            | Command::Commit(_)
            | Command::Checkout(_)
            | Command::Switch(_)
            | Command::Restore(_)
            | Command::Push(_)
            | Command::Fetch(_)
            | Command::Pull(_)
            | Command::Clone(_)
            | Command::Demo(_)
            | Command::Gc(_)
    ) {
        install_interrupt_handler();
    }
    match cli.command {
        Command::Init(a) => init::run(a),
        Command::Add(a) => add::run(a),
        Command::Rm(a) => add::run_rm(a),
        Command::Restore(a) => checkout::run_restore(a),
        Command::Status(a) => status::run(a),
        Command::Commit(a) => commit::run(a),
        Command::Log(a) => log::run(a),
        Command::Show(a) => log::run_show(a),
        Command::Diff(a) => diff::run(a),
        Command::Checkout(a) => checkout::run(a),
        Command::Switch(a) => branch::run_switch(a),
        Command::Branch(a) => branch::run_branch(a),
        Command::Tag(a) => branch::run_tag(a),
        Command::Du(a) => du::run(a),
        Command::Config(a) => config::run(a),
        Command::Remote(a) => remote::run(a),
        Command::Push(a) => push::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Pull(a) => fetch::run_pull(a),
        Command::Clone(a) => clone::run(a),
        Command::Fsck(a) => fsck::run(a),
        Command::Gc(a) => gc::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    }
}

/// Prints an error as `error: ...` plus a hint line, as users expect from git.
pub fn report_error(e: &anyhow::Error) {
    let top = e.to_string();
    eprintln!("error: {top}");
    for cause in e.chain().skip(1).map(|c| c.to_string()) {
        // Library errors usually embed their cause ("path: cause"); saying it twice adds nothing.
        if !top.contains(&cause) {
            eprintln!("  caused by: {cause}");
        }
    }
    if let Some(hint) = e.downcast_ref::<mlv::Error>().and_then(mlv::Error::hint) {
        eprintln!("hint: {hint}");
    }
}

/// True when the error is stdout having been closed by its reader: not a failure to report.
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Opens the repository containing the current directory; it must have a work tree.
fn open_repo() -> anyhow::Result<mlv::Repository> {
    let repo = open_repo_any()?;
    repo.require_worktree()?;
    Ok(repo)
}

/// Opens the repository containing the current directory, bare or not.
fn open_repo_any() -> anyhow::Result<mlv::Repository> {
    Ok(mlv::Repository::discover(&std::env::current_dir()?)?)
}

/// Opens a remote by the name this repository gives it, or by URL (also outside any
/// repository); with the repository too, when there is one.
fn open_remote_anywhere(name_or_url: &str) -> anyhow::Result<(Option<mlv::Repository>, mlv::transport::Remote)> {
    let repo = open_repo_any().ok();
    let remote = match &repo {
        Some(r) => mlv::ops::remote::open(r, name_or_url)?.1,
        None => mlv::transport::Remote::open(name_or_url, &Default::default())?,
    };
    Ok((repo, remote))
}

/// Prints a value as pretty JSON.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Formats a byte count for people: `12.34 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.2} {}", UNITS[unit]) }
}

/// `1 file`, `2 files`: a count and its noun, plural unless the count is one.
pub fn count<N: TryInto<u64>>(n: N, noun: &str) -> String {
    match n.try_into().unwrap_or(u64::MAX) {
        1 => format!("1 {noun}"),
        n => format!("{n} {}", plural(noun)),
    }
}

/// The plural of a noun of mlv's messages (`file`, `tensor`, `entry`, `index`).
fn plural(noun: &str) -> String {
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{stem}ies"),
        _ if noun.ends_with(['s', 'x']) || noun.ends_with("ch") || noun.ends_with("sh") => format!("{noun}es"),
        _ => format!("{noun}s"),
    }
}
