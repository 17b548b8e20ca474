//! `mlv push`: send what a remote lacks and move its refs, never losing commits there.

use serde::Serialize;

use super::fetch::{RefChange, RefNote, RemoteRefs};
use super::remote::{self, set_tracking, set_upstream};
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::progress::Progress;
use crate::reach;
use crate::refs::{HEADS, Head, REMOTES, RefError, TAGS, check_full_name};
use crate::repo::Repository;
use crate::sync::{self, TransferStats};

/// What to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Remote name or URL (default: the branch's upstream remote, or the only one).
    pub remote: Option<String>,
    /// `src`, `src:dst`, `+src:dst`, `:dst` (default: the current branch).
    pub refspecs: Vec<String>,
    /// Overwrite remote refs even when that loses commits there.
    pub force: bool,
    /// Overwrite only if each remote ref still holds what this repository last saw there
    /// (its remote-tracking ref), or what `ref:expect` says.
    pub force_with_lease: Option<Vec<String>>,
    /// Push every tag too.
    pub tags: bool,
    /// Delete the named remote branches.
    pub delete: bool,
    /// Make the remote branch the upstream of the local one.
    pub set_upstream: bool,
    /// Transfer unit size in bytes.
    pub unit_bytes: u64,
}

/// Why a ref was not pushed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rejection {
    /// The remote has commits this one lacks, or the update is not a fast-forward.
    NonFastForward,
    /// The remote ref is not at what the lease expected.
    StaleInfo,
    /// The tag exists on the remote.
    AlreadyExists,
    /// The remote ref moved while this push ran.
    RemoteChanged,
    /// The remote refused (message from it).
    Refused(String),
}

/// The outcome for one ref.
#[derive(Debug, Clone, Serialize)]
pub struct PushResult {
    /// The change (`name` is the remote ref, e.g. `refs/heads/main`).
    pub change: RefChange,
    /// Set when it was not pushed.
    pub rejected: Option<Rejection>,
}

/// What `push` did.
#[derive(Debug, Serialize)]
pub struct PushReport {
    /// The remote's URL.
    pub url: String,
    /// Per ref.
    pub results: Vec<PushResult>,
    /// Bytes and objects sent.
    pub stats: TransferStats,
}

impl PushReport {
    /// True if every ref was pushed (or was up to date).
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(|r| r.rejected.is_none())
    }
}

/// One ref to push.
#[derive(Debug, Clone)]
struct Update {
    /// The local branch, when pushing one (for upstream and tracking refs).
    local_branch: Option<String>,
    /// What to push; None deletes.
    new: Option<ObjectId>,
    /// The remote ref.
    dst: String,
    /// Allowed to lose commits there.
    force: bool,
    /// What the remote ref must hold, when a lease says so.
    lease: Option<Option<ObjectId>>,
}

/// The remote ref a short name goes to: a tag if such a local tag exists, else a branch.
fn full_dst(repo: &Repository, name: &str) -> Result<String> {
    if name.starts_with("refs/") {
        check_full_name(name)?;
        return Ok(name.to_string());
    }
    let tag = format!("{TAGS}{name}");
    Ok(if repo.refs.read(&tag)?.is_some() { tag } else { format!("{HEADS}{name}") })
}

/// Parses the refspecs (or the default: the current branch to its upstream or same name).
fn updates(repo: &Repository, remote_name: Option<&str>, opts: &PushOptions) -> Result<Vec<Update>> {
    let mut specs = opts.refspecs.clone();
    let head_branch = match repo.refs.head()? {
        Head::Branch(b) => Some(b),
        Head::Detached(_) => None,
    };
    if specs.is_empty() && !opts.tags {
        let b = head_branch.clone().ok_or_else(|| {
            Error::Usage("HEAD is detached: name what to push, e.g. `mlv push origin HEAD:refs/heads/<branch>`".into())
        })?;
        let up = repo.config.branch.get(&b).filter(|u| Some(u.remote.as_str()) == remote_name);
        specs.push(match up {
            Some(u) => format!("{b}:{}", u.merge),
            None => b,
        });
    }
    if opts.delete {
        specs = specs.into_iter().map(|s| format!(":{s}")).collect();
    }
    let mut out = Vec::new();
    for spec in &specs {
        let (force, spec) = match spec.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (opts.force, spec.as_str()),
        };
        let (src, dst) = spec.split_once(':').unwrap_or((spec, spec));
        let dst_name = if dst == "HEAD" { head_branch.clone().unwrap_or_default() } else { dst.to_string() };
        let dst = full_dst(repo, if dst_name.is_empty() { src } else { &dst_name })?;
        let new = if src.is_empty() { None } else { Some(repo.resolve_ref_target(src)?) };
        let local_branch = match src {
            "HEAD" | "@" => head_branch.clone(),
            s if repo.refs.read(&format!("{HEADS}{s}"))?.is_some() => Some(s.to_string()),
            _ => None,
        };
        out.push(Update { local_branch, new, dst, force, lease: None });
    }
    if opts.tags {
        for (tag, id) in repo.refs.list(TAGS)? {
            out.push(Update {
                local_branch: None,
                new: Some(id),
                dst: format!("{TAGS}{tag}"),
                force: opts.force,
                lease: None,
            });
        }
    }
    if let Some(leases) = &opts.force_with_lease {
        apply_leases(repo, remote_name, leases, &mut out)?;
    }
    Ok(out)
}

/// `--force-with-lease`: force, but only over the value each remote ref was last seen at
/// (its remote-tracking ref), or the value `ref:expect` names.
fn apply_leases(repo: &Repository, remote_name: Option<&str>, leases: &[String], out: &mut [Update]) -> Result<()> {
    for u in out.iter_mut() {
        let short = u.dst.strip_prefix(HEADS).unwrap_or(&u.dst).to_string();
        let last_seen = || -> Result<Option<ObjectId>> {
            match remote_name {
                Some(r) if u.dst.starts_with(HEADS) => Ok(repo.refs.read(&format!("{REMOTES}{r}/{short}"))?),
                _ => Ok(None),
            }
        };
        let expected = if leases.is_empty() {
            last_seen()?
        } else {
            let named = leases.iter().find_map(|l| {
                let (name, expect) = l.split_once(':').unwrap_or((l, ""));
                (name == short || name == u.dst).then_some(expect)
            });
            match named {
                None => continue,
                Some("") => last_seen()?,
                Some(rev) => Some(repo.resolve_ref_target(rev)?),
            }
        };
        u.force = true;
        u.lease = Some(expected);
    }
    Ok(())
}

/// Decides whether one update may go ahead, given what the remote holds now.
fn check(repo: &Repository, u: &Update, old: Option<ObjectId>) -> Result<Option<Rejection>> {
    if let Some(expected) = u.lease
        && expected != old
    {
        return Ok(Some(Rejection::StaleInfo));
    }
    let (Some(old), Some(new)) = (old, u.new) else { return Ok(None) };
    if old == new || u.force {
        return Ok(None);
    }
    if u.dst.starts_with(TAGS) {
        return Ok(Some(Rejection::AlreadyExists));
    }
    let ff = repo.odb.contains(&old) && reach::is_ancestor(&repo.odb, &old, &new)?;
    Ok((!ff).then_some(Rejection::NonFastForward))
}

/// Pushes: works out what the remote lacks, sends it, then moves each remote ref by
/// compare-and-swap. Refs that would lose commits there are rejected unless forced.
pub fn push(repo: &mut Repository, opts: &PushOptions, progress: &dyn Progress) -> Result<PushReport> {
    let current = match repo.refs.head()? {
        Head::Branch(b) => Some(b),
        Head::Detached(_) => None,
    };
    let name_or_url = match &opts.remote {
        Some(r) => r.clone(),
        None => remote::default_remote(repo, current.as_deref())?,
    };
    let (remote_name, remote) = remote::open(repo, &name_or_url)?;
    let updates = updates(repo, remote_name.as_deref(), opts)?;
    let theirs = RemoteRefs::read(&remote)?;
    let remote_value = |dst: &str| -> Option<ObjectId> {
        let (list, short) = match dst.strip_prefix(HEADS) {
            Some(s) => (&theirs.heads, s),
            None => (&theirs.tags, dst.strip_prefix(TAGS).unwrap_or(dst)),
        };
        list.iter().find(|(n, _)| n == short).map(|r| r.1)
    };
    let mut results = Vec::new();
    let mut accepted = Vec::new();
    for u in updates {
        let old = remote_value(&u.dst);
        if u.new.is_none() && old.is_none() {
            return Err(Error::Usage(format!("cannot delete {}: the remote has no such ref", u.dst)));
        }
        let rejected = check(repo, &u, old)?;
        let note = match (old, u.new) {
            (_, None) => RefNote::Deleted,
            (None, Some(_)) => RefNote::New,
            (Some(o), Some(n)) if o == n => RefNote::UpToDate,
            (Some(o), Some(n)) if repo.odb.contains(&o) && reach::is_ancestor(&repo.odb, &o, &n)? => {
                RefNote::FastForward
            }
            _ => RefNote::Forced,
        };
        let change = RefChange { name: u.dst.clone(), old, new: u.new, note };
        if rejected.is_none() && note != RefNote::UpToDate {
            accepted.push((u.clone(), old));
        }
        results.push((u, PushResult { change, rejected }));
    }
    let wants: Vec<ObjectId> = accepted.iter().filter_map(|(u, _)| u.new).collect();
    let haves: Vec<ObjectId> =
        theirs.heads.iter().chain(&theirs.tags).map(|r| r.1).filter(|id| repo.odb.contains(id)).collect();
    let shallow = remote::shallow(repo)?;
    let objects = sync::missing_objects(&repo.odb, &wants, &haves, &shallow)?;
    let stats = sync::send_objects(&repo.odb, &objects, remote.packs.as_ref(), opts.unit_bytes, progress)?;
    for (u, result) in results.iter_mut() {
        if result.rejected.is_some() || result.change.note == RefNote::UpToDate {
            continue;
        }
        let old = result.change.old;
        let moved = match (u.new, old) {
            (Some(new), old) => remote.refs.update(&u.dst, new, old),
            (None, Some(old)) => remote.refs.delete(&u.dst, old),
            (None, None) => Ok(()),
        };
        match moved {
            Ok(()) => after_push(repo, remote_name.as_deref(), u, opts.set_upstream)?,
            Err(RefError::Conflict { .. }) => result.rejected = Some(Rejection::RemoteChanged),
            Err(RefError::Refused(why)) => result.rejected = Some(Rejection::Refused(why)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(PushReport { url: remote.url.clone(), results: results.into_iter().map(|r| r.1).collect(), stats })
}

/// Keeps the remote-tracking ref (and, with `-u`, the upstream) in step with a pushed branch.
fn after_push(repo: &mut Repository, remote_name: Option<&str>, u: &Update, set_up: bool) -> Result<()> {
    let (Some(r), Some(branch)) = (remote_name, u.dst.strip_prefix(HEADS)) else { return Ok(()) };
    set_tracking(repo, r, branch, u.new)?;
    if let (true, Some(local), Some(_)) = (set_up, &u.local_branch, u.new) {
        set_upstream(repo, local, r, branch)?;
    }
    Ok(())
}
