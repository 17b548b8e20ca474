//! `mlv clone`.

use std::path::PathBuf;

use mlv::ops::clone::CloneOptions;

use super::{checkout::print_report, print_json, progress, transfer};

/// Copy a repository (path, HTTP or S3), every object verified; --depth 1 for one snapshot.
///
/// The new repository gets the source's branches, tags and objects, with a branch checked out;
/// the source becomes its remote `origin`. The source is a path, `file://`, `http(s)://` URL of `mlv serve`, or `s3://bucket/prefix`.
/// Every object is verified on arrival. With `--depth 1` only the checked-out commit's
/// snapshot is fetched (plus the delta bases its tensors need): the fastest way to get one
/// checkpoint; history can be fetched later.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv clone /srv/models/llama-ft.mlv              from a path
  mlv clone http://host:8765/llama-ft ft          from `mlv serve`, into ./ft
  mlv clone --depth 1 s3://bucket/llama-ft        only the latest checkpoint
  mlv clone -b exp http://host:8765/llama-ft      check out branch exp")]
pub struct Args {
    /// Where to clone from.
    url: String,
    /// The new directory (default: the last part of the URL).
    dir: Option<PathBuf>,
    /// Check out this branch instead of the remote's default.
    #[arg(short, long)]
    branch: Option<String>,
    /// Make a bare repository (no work tree): the remote's branches become its branches.
    #[arg(long)]
    bare: bool,
    /// Fetch only the tip's snapshot (1 is the only depth supported).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1))]
    depth: Option<u32>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

fn default_dir(url: &str) -> PathBuf {
    let last = url.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or("repo");
    PathBuf::from(if last.is_empty() { "repo" } else { last })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| default_dir(&args.url));
    let opts = CloneOptions {
        url: args.url,
        dir,
        branch: args.branch,
        bare: args.bare,
        shallow: args.depth.is_some(),
        unit_bytes: mlv::sync::unit_bytes(),
    };
    if !args.json {
        eprintln!("Cloning into '{}'...", opts.dir.display());
    }
    let report = mlv::ops::clone::clone(&opts, progress::for_stderr().as_ref())?;
    if args.json {
        return print_json(&report);
    }
    if report.stats.objects > 0 {
        outln!("{}", transfer::summary("received", &report.stats))?;
    }
    match (&report.checkout, &report.branch) {
        (Some(c), _) => print_report(c, false)?,
        (None, None) => outln!("warning: the remote has no branches: you cloned an empty repository")?,
        (None, Some(_)) => {}
    }
    Ok(())
}
