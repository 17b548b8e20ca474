//! `mlv gc`.

use std::time::Duration;

use mlv::ops::gc::{DEFAULT_GRACE, GcOptions, GcReport};

use super::{count, human, open_repo_any, print_json, progress};

/// Repack into a few packs, drop unreachable objects (after a grace period), cut long chains.
///
/// Every add and commit writes a pack; gc copies everything that a branch, tag,
/// remote-tracking branch, HEAD or the staging index needs — delta bases included — into a
/// few packs (entries as stored), and deletes the old ones. Unreachable objects are kept for a
/// grace period (two weeks) in case a command is about to use them. Deltas whose chain is
/// longer than `delta.max_chain` are re-encoded without a base. Commands may run meanwhile.
#[derive(clap::Args)]
pub struct Args {
    /// Drop unreachable objects older than this many days, or `now` for all of them.
    #[arg(long, value_name = "DAYS|now")]
    prune: Option<String>,
    /// Only if there are more packs than `gc.auto_packs` (what commit runs).
    #[arg(long)]
    auto: bool,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

fn grace(prune: Option<&str>) -> anyhow::Result<Duration> {
    Ok(match prune {
        None => DEFAULT_GRACE,
        Some("now") => Duration::ZERO,
        Some(days) => {
            let d: f64 = days.parse().map_err(|_| anyhow::anyhow!("--prune takes a number of days or `now`"))?;
            anyhow::ensure!(d >= 0.0 && d.is_finite(), "--prune takes a number of days or `now`");
            Duration::from_secs_f64(d * 86400.0)
        }
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut repo = open_repo_any()?;
    let opts = GcOptions { grace: grace(args.prune.as_deref())?, ..GcOptions::default() };
    if args.auto && !mlv::ops::gc::needed(&repo) {
        return Ok(());
    }
    let report = mlv::ops::gc::gc(&mut repo, &opts, progress::for_stderr().as_ref())?;
    if args.json {
        return print_json(&report);
    }
    outln!("{}", summary(&report))?;
    Ok(())
}

/// The one-line summary.
pub fn summary(r: &GcReport) -> String {
    format!(
        "packs {} -> {}, {} -> {}; {} kept, {} dropped, {} cut ({:.1} s)",
        r.packs_before,
        r.packs_after,
        human(r.bytes_before),
        human(r.bytes_after),
        count(r.objects_kept, "object"),
        r.objects_dropped,
        count(r.chains_cut, "chain"),
        r.seconds
    )
}
