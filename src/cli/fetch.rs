//! `mlv fetch` and `mlv pull`.

use mlv::ops::fetch::{FetchOptions, FetchReport, PullOutcome};

use super::{checkout::print_report, count, open_repo, open_repo_any, print_json, progress, transfer};

/// Download a remote's branches (as origin/<branch>) and tags.
///
/// Branches become remote-tracking refs (`origin/main`), usable wherever a revision is;
/// tags are created unless a local tag of the same name points elsewhere. Only the objects
/// this repository lacks are transferred, verified before they are kept. Your branches and
/// work tree do not change: `mlv pull` (or `mlv switch`) brings the commits in.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv fetch                       the current branch's remote (or the only one)
  mlv fetch origin --prune        and forget branches origin no longer has
  mlv log origin/main             then look at what arrived")]
pub struct Args {
    /// The remote (default: the current branch's upstream remote, or the only remote).
    remote: Option<String>,
    /// Delete remote-tracking refs of branches the remote no longer has.
    #[arg(short, long)]
    prune: bool,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

/// Fetch and fast-forward the current branch to its upstream.
///
/// The upstream is the remote branch `mlv push -u` or `mlv clone` recorded (`mlv branch -vv`
/// shows it). A branch with commits its upstream lacks is not merged: pull only fast-forwards,
/// and says what to do instead.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv pull                        fetch, then move the branch and the work tree forward
  mlv pull backup                 from another remote")]
pub struct PullArgs {
    /// The remote (default: the current branch's upstream remote).
    remote: Option<String>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

fn print_fetch(r: &FetchReport) -> anyhow::Result<()> {
    let changed: Vec<_> = r.changes.iter().filter(|c| c.note != mlv::ops::fetch::RefNote::UpToDate).collect();
    if !changed.is_empty() {
        outln!("From {}", r.url)?;
    }
    for c in changed {
        let from = c.name.strip_prefix(&format!("{}/", r.remote)).unwrap_or(&c.name);
        outln!("{}", transfer::ref_line(c, from, &c.name))?;
    }
    if r.stats.objects > 0 {
        outln!("{}", transfer::summary("received", &r.stats))?;
    }
    Ok(())
}

fn current_branch(repo: &mlv::Repository) -> Option<String> {
    match repo.refs.head() {
        Ok(mlv::refs::Head::Branch(b)) => Some(b),
        _ => None,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut repo = open_repo_any()?;
    let name = match args.remote {
        Some(r) => r,
        None => mlv::ops::remote::default_remote(&repo, current_branch(&repo).as_deref())?,
    };
    let opts = FetchOptions { prune: args.prune, ..FetchOptions::default() };
    let report = mlv::ops::fetch::fetch(&mut repo, &name, &opts, progress::for_stderr().as_ref())?;
    if args.json {
        return print_json(&report);
    }
    print_fetch(&report)
}

pub fn run_pull(args: PullArgs) -> anyhow::Result<()> {
    let mut repo = open_repo()?;
    let opts = FetchOptions::default();
    let report = mlv::ops::fetch::pull(&mut repo, args.remote.as_deref(), &opts, progress::for_stderr().as_ref())?;
    if args.json {
        return print_json(&report);
    }
    print_fetch(&report.fetch)?;
    match &report.outcome {
        PullOutcome::UpToDate { ahead: 0 } => outln!("Already up to date.")?,
        PullOutcome::UpToDate { ahead } => {
            let ahead = count(*ahead, "commit");
            outln!("Already up to date; {} is ahead of {} by {ahead}.", report.branch, report.upstream)?
        }
        PullOutcome::FastForward { from, to, checkout } => {
            let from = from.map_or_else(|| "nothing".to_string(), |f| f.short());
            outln!("Updating {from}..{}\nFast-forward", to.short())?;
            print_report(checkout, false)?;
        }
    }
    Ok(())
}
