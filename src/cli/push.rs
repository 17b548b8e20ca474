//! `mlv push`.

use mlv::ops::push::{PushOptions, Rejection};
use mlv::refs::{HEADS, TAGS};

use super::{open_repo_any, print_json, progress, transfer};

/// Send commits to a remote: only what it lacks, verified there before refs move.
///
/// Only the objects the remote lacks are sent, as they are stored (a fine-tune's deltas stay
/// deltas), in packs of bounded size that the remote verifies before any ref may point at
/// them. An interrupted push resumes: run it again and the packs that arrived are skipped.
/// A branch that would lose commits on the remote is rejected unless forced.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv push                          the current branch to its upstream (or same name)
  mlv push -u origin main           and remember origin/main as its upstream
  mlv push origin exp:refs/heads/ft-v2
  mlv push origin --delete old-exp  or: mlv push origin :old-exp
  mlv push --force-with-lease       overwrite, but only what you last fetched")]
pub struct Args {
    /// Remote name or URL (default: the branch's upstream remote, or the only remote).
    remote: Option<String>,
    /// What to push: `branch`, `src:dst`, `+src:dst` (force this one) or `:dst` (delete).
    refspecs: Vec<String>,
    /// Overwrite remote refs even when that loses commits there.
    #[arg(short, long)]
    force: bool,
    /// Force, but only where the remote ref is still at what you last fetched (or at EXPECT).
    #[arg(long, value_name = "REF[:EXPECT]", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Append)]
    force_with_lease: Option<Vec<String>>,
    /// Push all tags as well.
    #[arg(long)]
    tags: bool,
    /// Delete the named remote branches.
    #[arg(short, long)]
    delete: bool,
    /// Remember the remote branch as the local branch's upstream.
    #[arg(short = 'u', long)]
    set_upstream: bool,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut repo = open_repo_any()?;
    let leases = args.force_with_lease.map(|v| v.into_iter().filter(|s| !s.is_empty()).collect());
    let opts = PushOptions {
        remote: args.remote,
        refspecs: args.refspecs,
        force: args.force,
        force_with_lease: leases,
        tags: args.tags,
        delete: args.delete,
        set_upstream: args.set_upstream,
        unit_bytes: mlv::sync::unit_bytes(),
    };
    let report = mlv::ops::push::push(&mut repo, &opts, progress::for_stderr().as_ref())?;
    if args.json {
        print_json(&report)?;
    } else {
        outln!("To {}", report.url)?;
        for r in &report.results {
            let name = r.change.name.strip_prefix(HEADS).or(r.change.name.strip_prefix(TAGS)).unwrap_or(&r.change.name);
            match &r.rejected {
                None => outln!("{}", transfer::ref_line(&r.change, name, ""))?,
                Some(why) => outln!(" ! {:<20} {name} ({})", "[rejected]", reason(why))?,
            }
        }
        outln!("{}", transfer::summary("sent", &report.stats))?;
    }
    if let Some(r) = report.results.iter().find_map(|r| r.rejected.as_ref()) {
        anyhow::bail!(hint(r));
    }
    Ok(())
}

fn reason(r: &Rejection) -> String {
    match r {
        Rejection::NonFastForward => "non-fast-forward".into(),
        Rejection::StaleInfo => "stale info".into(),
        Rejection::AlreadyExists => "already exists".into(),
        Rejection::RemoteChanged => "the remote ref moved during the push".into(),
        Rejection::Refused(why) => why.clone(),
    }
}

fn hint(r: &Rejection) -> String {
    match r {
        Rejection::NonFastForward | Rejection::RemoteChanged => "some refs were rejected: the remote has commits that \
            you do not have. Fetch them (`mlv pull` or `mlv fetch`), then push again; `--force-with-lease` \
            overwrites them"
            .into(),
        Rejection::StaleInfo => "some refs were rejected: the remote moved since you last fetched; fetch and look \
            before forcing"
            .into(),
        Rejection::AlreadyExists => "a tag of that name exists on the remote; use --force to replace it".into(),
        Rejection::Refused(_) => "the remote refused some refs (see above)".into(),
    }
}
