//! `mlv fsck`.

use std::sync::Arc;

use mlv::ops::fsck::{FsckOptions, FsckReport};

use super::{count, human, open_remote_anywhere, open_repo_any, print_json, progress};

/// Verify every pack, object, delta base and ref (exit code 0 only when sound).
///
/// Each pack's index is rebuilt from the pack and compared; each object reachable from a ref
/// (every object, with --unreachable) is decoded, its chunk checksums and its id checked;
/// each ref must name an object that is here. Problems are listed with the object, the file
/// and the byte offset; the exit code is 0 only when there are none. With --remote, the
/// remote's objects are checked where they are, reading only what its refs reach.
#[derive(clap::Args)]
pub struct Args {
    /// Check every object, not only those reachable from a ref.
    #[arg(long)]
    unreachable: bool,
    /// Check a remote (name or URL) instead of this repository.
    #[arg(long, value_name = "REMOTE")]
    remote: Option<String>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let progress = progress::for_stderr();
    let opts = FsckOptions { unreachable: args.unreachable, skip_pack_content: args.remote.is_some() };
    let report = match &args.remote {
        Some(name) => {
            let (_, remote) = open_remote_anywhere(name)?;
            mlv::ops::fsck::fsck(remote.packs.clone(), remote.refs.as_ref(), None, &opts, progress.as_ref())?
        }
        None => {
            let repo = open_repo_any()?;
            let index = (!repo.bare).then(|| repo.index_path());
            let store = Arc::clone(repo.odb.store());
            mlv::ops::fsck::fsck(store, repo.refs.as_ref(), index.as_deref(), &opts, progress.as_ref())?
        }
    };
    print(&report, args.json)?;
    if !report.problems.is_empty() {
        anyhow::bail!("fsck found {}", count(report.problems.len(), "problem"));
    }
    Ok(())
}

fn print(r: &FsckReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    for p in &r.problems {
        let mut at = String::new();
        if let Some(f) = &p.file {
            at.push_str(&format!(" [{f}"));
            if let Some(o) = p.offset {
                at.push_str(&format!(" @ byte {o}"));
            }
            at.push(']');
        }
        let obj = p.object.map(|o| format!("{}: ", o.short())).unwrap_or_default();
        outln!("problem: {obj}{}{at}", p.what)?;
    }
    outln!(
        "checked {} ({}) in {}, {}: {}",
        count(r.objects, "object"),
        human(r.bytes),
        count(r.packs, "pack"),
        count(r.refs, "ref"),
        if r.problems.is_empty() { "no problems".to_string() } else { count(r.problems.len(), "problem") }
    )?;
    Ok(())
}
