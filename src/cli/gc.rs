//! `mlv gc`.

use std::time::Duration;

use mlv::ops::gc::{DEFAULT_GRACE, DEFAULT_MAX_PACK_BYTES, GcOptions, GcReport, RepackRules};
use mlv::ops::gc_remote::RemoteGcReport;

use super::{count, human, open_remote_anywhere, open_repo_any, print_json, progress};

/// Repack into a few packs, drop unreachable objects (after a grace period), cut long chains.
///
/// Every add and commit writes a pack; gc copies everything that a branch, tag,
/// remote-tracking branch, HEAD or the staging index needs — delta bases included — into a
/// few packs (entries as stored), and deletes the old ones. Unreachable objects are kept for a
/// grace period (two weeks) in case a command is about to use them. Deltas whose chain is
/// longer than `delta.max_chain` are re-encoded without a base. Commands may run meanwhile.
/// The spare files checkout keeps for the next one (`.mlv/spare/`, see `mlv du`) are freed.
///
/// With --remote, gc runs on a shared repository (a path, `mlv serve`, or S3) that others
/// push to meanwhile, in two phases: packs it retires are only marked, and deleted by a
/// later run once marked longer than the grace period, after anything the refs reach by then
/// is copied out of them. Run it again after the grace period to free the space.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv gc                          repack this repository
  mlv gc --prune=now              and drop every unreachable object now
  mlv gc --aggressive             and choose every tensor's delta base again
  mlv gc --remote origin          repack origin; delete what a run 2 weeks ago marked
  mlv gc --remote s3://b/m --prune=1 --json")]
pub struct Args {
    /// Drop unreachable objects older than this many days, or `now` for all of them.
    #[arg(long, value_name = "DAYS|now")]
    prune: Option<String>,
    /// Only if there are more packs than `gc.auto_packs` (what commit runs).
    #[arg(long, conflicts_with = "remote")]
    auto: bool,
    /// Also choose every tensor's delta base again, among all the history holds (slow: every
    /// tensor is decoded and encoded anew). For histories added without good bases.
    #[arg(long, conflicts_with = "remote")]
    aggressive: bool,
    /// Run on a remote (name or URL) instead of this repository, in two phases.
    #[arg(long, value_name = "NAME|URL")]
    remote: Option<String>,
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
    if let Some(name) = &args.remote {
        return run_remote(name, &args);
    }
    let mut repo = open_repo_any()?;
    let opts = GcOptions { grace: grace(args.prune.as_deref())?, aggressive: args.aggressive, ..GcOptions::default() };
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
    let rebased = match r.tensors_rewritten {
        0 => String::new(),
        n => format!("; {} encoded again, {} with another base", count(n, "tensor"), r.bases_changed),
    };
    let spares = match r.spare_bytes_freed {
        0 => String::new(),
        n => format!("; {} of spare files freed", human(n)),
    };
    format!(
        "packs {} -> {}, {} -> {}; {} kept, {} dropped, {} cut{rebased}{spares} ({:.1} s)",
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

fn run_remote(name: &str, args: &Args) -> anyhow::Result<()> {
    let grace = grace(args.prune.as_deref())?;
    let (repo, remote) = open_remote_anywhere(name)?;
    let rules = match &repo {
        Some(r) => RepackRules::of(r, DEFAULT_MAX_PACK_BYTES),
        None => RepackRules::of_config(&Default::default(), DEFAULT_MAX_PACK_BYTES),
    };
    let progress = progress::for_stderr();
    let report = mlv::ops::gc_remote::gc_remote(&remote, &rules, grace, progress.as_ref())?;
    if args.json {
        return print_json(&report);
    }
    outln!("{}", remote_summary(&report))?;
    Ok(())
}

/// The summary of a remote gc: what it kept, wrote, marked and deleted.
pub fn remote_summary(r: &RemoteGcReport) -> String {
    let mut out = format!(
        "{}: packs {} -> {}, {} -> {}; {} copied into {}",
        r.url,
        r.packs_before,
        r.packs_after,
        human(r.bytes_before),
        human(r.bytes_after),
        count(r.objects_copied, "object"),
        count(r.packs_written, "new pack"),
    );
    if r.objects_rescued > 0 {
        out += &format!(" ({} rescued from marked packs)", r.objects_rescued);
    }
    out += &format!("; {} marked for deletion", count(r.packs_marked, "pack"));
    if r.packs_deleted > 0 {
        out += &format!(", {} deleted ({})", count(r.packs_deleted, "pack"), human(r.bytes_deleted));
    }
    if r.packs_waiting > 0 {
        out += &format!(", {} still within the grace period", count(r.packs_waiting, "marked pack"));
    }
    out + &format!(" ({:.1} s)", r.seconds)
}
