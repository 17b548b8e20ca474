//! `mlv fetch` and `mlv pull`: bring a remote's branches and tags here, and fast-forward.

use serde::Serialize;

use super::checkout::{CheckoutReport, Target, checkout};
use super::remote::{self, add_shallow, set_tracking, tracking_prefix};
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::progress::Progress;
use crate::reach::{self, Walk};
use crate::refs::{HEADS, Head, TAGS};
use crate::repo::Repository;
use crate::store::{Odb, StoreError};
use crate::sync::{self, TransferStats};
use crate::transport::Remote;

/// How a fetch runs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Delete remote-tracking refs whose branch is gone from the remote.
    pub prune: bool,
    /// Fetch only the tips' snapshots, not their history (`--depth 1`).
    pub shallow: bool,
    /// Transfer unit size in bytes.
    pub unit_bytes: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { prune: false, shallow: false, unit_bytes: sync::unit_bytes() }
    }
}

/// What happened to one ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefNote {
    /// It did not exist before.
    New,
    /// It moved forward.
    FastForward,
    /// It moved to a commit that does not descend from the old one.
    Forced,
    /// It was deleted (pruned, or deleted by a push).
    Deleted,
    /// It did not change.
    UpToDate,
    /// A local tag of that name points elsewhere; it was kept.
    KeptLocalTag,
}

/// One ref a fetch or push changed (or chose not to).
#[derive(Debug, Clone, Serialize)]
pub struct RefChange {
    /// Local ref name, short: `origin/main`, `v1`.
    pub name: String,
    /// Before.
    pub old: Option<ObjectId>,
    /// After.
    pub new: Option<ObjectId>,
    /// How.
    pub note: RefNote,
}

/// What `fetch` did.
#[derive(Debug, Serialize)]
pub struct FetchReport {
    /// The remote's name.
    pub remote: String,
    /// Its URL.
    pub url: String,
    /// Refs changed.
    pub changes: Vec<RefChange>,
    /// Bytes and objects moved.
    pub stats: TransferStats,
}

/// A remote's branches and tags.
pub struct RemoteRefs {
    /// Branch name to commit.
    pub heads: Vec<(String, ObjectId)>,
    /// Tag name to commit or tag object.
    pub tags: Vec<(String, ObjectId)>,
}

impl RemoteRefs {
    /// Reads them.
    pub fn read(remote: &Remote) -> Result<RemoteRefs> {
        Ok(RemoteRefs { heads: remote.refs.list(HEADS)?, tags: remote.refs.list(TAGS)? })
    }
}

/// Copies everything `wants` need that `repo` lacks from `remote` (history too unless
/// `shallow`), each unit verified before it is installed.
pub fn fetch_objects(
    repo: &Repository,
    remote: &Remote,
    wants: &[ObjectId],
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<TransferStats> {
    let wants: Vec<ObjectId> = wants.iter().filter(|w| !repo.odb.contains(w)).copied().collect();
    if wants.is_empty() {
        return Ok(TransferStats::default());
    }
    let theirs = Odb::open(remote.packs.clone())?;
    let none = Default::default();
    let local = &repo.odb;
    let walk = Walk { stop: &|id| local.contains(id), parents: !opts.shallow, shallow: &none };
    let refused = |e| refused_from(&remote.url, e);
    let closure = reach::closure(&theirs, &wants, &walk).map_err(refused)?;
    let stats = sync::receive_objects(local, &theirs, &closure.objects, opts.unit_bytes, progress).map_err(refused)?;
    if !closure.boundary.is_empty() {
        add_shallow(repo, &closure.boundary)?;
    }
    Ok(stats)
}

/// An error reading from the remote at `url`, blamed on the remote when its data is at fault.
fn refused_from(url: &str, e: StoreError) -> Error {
    match e.is_corrupt() || matches!(e, StoreError::NotFound(_) | StoreError::Unreadable { .. }) {
        true => Error::RemoteData { url: url.to_string(), source: e },
        false => e.into(),
    }
}

/// How `new` relates to `old`, for reporting.
fn note(repo: &Repository, old: Option<ObjectId>, new: ObjectId) -> Result<RefNote> {
    Ok(match old {
        None => RefNote::New,
        Some(o) if o == new => RefNote::UpToDate,
        Some(o) if reach::is_ancestor(&repo.odb, &o, &new)? => RefNote::FastForward,
        Some(_) => RefNote::Forced,
    })
}

/// Fetches remote `name`: its branches into `refs/remotes/<name>/`, and its tags that do not
/// clash with local ones.
pub fn fetch(repo: &mut Repository, name: &str, opts: &FetchOptions, progress: &dyn Progress) -> Result<FetchReport> {
    let (remote_name, remote) = remote::open(repo, name)?;
    let remote_name = remote_name.ok_or_else(|| Error::NoSuchRemote(name.to_string()))?;
    let theirs = RemoteRefs::read(&remote)?;
    let wants: Vec<ObjectId> = theirs.heads.iter().chain(&theirs.tags).map(|r| r.1).collect();
    let stats = fetch_objects(repo, &remote, &wants, opts, progress)?;
    let mut changes = Vec::new();
    for (branch, id) in &theirs.heads {
        let old = repo.refs.read(&format!("{}{branch}", tracking_prefix(&remote_name)))?;
        let note = note(repo, old, *id)?;
        set_tracking(repo, &remote_name, branch, Some(*id))?;
        changes.push(RefChange { name: format!("{remote_name}/{branch}"), old, new: Some(*id), note });
    }
    if opts.prune {
        for (branch, id) in repo.refs.list(&tracking_prefix(&remote_name))? {
            if !theirs.heads.iter().any(|(b, _)| *b == branch) {
                set_tracking(repo, &remote_name, &branch, None)?;
                changes.push(RefChange {
                    name: format!("{remote_name}/{branch}"),
                    old: Some(id),
                    new: None,
                    note: RefNote::Deleted,
                });
            }
        }
    }
    for (tag, id) in &theirs.tags {
        let full = format!("{TAGS}{tag}");
        let note = match repo.refs.read(&full)? {
            None if !opts.shallow || repo.odb.contains(id) => {
                repo.refs.update(&full, *id, None)?;
                RefNote::New
            }
            None => continue,
            Some(local) if local == *id => RefNote::UpToDate,
            Some(_) => RefNote::KeptLocalTag,
        };
        changes.push(RefChange { name: tag.clone(), old: None, new: Some(*id), note });
    }
    Ok(FetchReport { remote: remote_name, url: remote.url.clone(), changes, stats })
}

/// What `pull` did after fetching.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum PullOutcome {
    /// The branch already has everything upstream has.
    UpToDate {
        /// Local commits upstream lacks.
        ahead: usize,
    },
    /// The branch moved forward to upstream.
    FastForward {
        /// Before.
        from: Option<ObjectId>,
        /// After.
        to: ObjectId,
        /// The checkout.
        checkout: CheckoutReport,
    },
}

/// What `pull` did.
#[derive(Debug, Serialize)]
pub struct PullReport {
    /// The fetch.
    pub fetch: FetchReport,
    /// The branch pulled into.
    pub branch: String,
    /// The upstream, `origin/main`.
    pub upstream: String,
    /// What happened to the branch.
    pub outcome: PullOutcome,
}

/// Fetches and fast-forwards the current branch to its upstream (or to `remote`'s branch of
/// the same name). A branch that has diverged is refused.
pub fn pull(
    repo: &mut Repository,
    remote: Option<&str>,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<PullReport> {
    repo.require_worktree()?;
    let Head::Branch(branch) = repo.refs.head()? else {
        return Err(Error::Usage("HEAD is detached: switch to a branch to pull into it".into()));
    };
    let remote_name = match remote {
        Some(r) => r.to_string(),
        None => remote::default_remote(repo, Some(&branch))?,
    };
    let fetched = fetch(repo, &remote_name, opts, progress)?;
    let merge = match repo.config.branch.get(&branch) {
        Some(up) if up.remote == remote_name => up.merge.strip_prefix(HEADS).unwrap_or(&up.merge).to_string(),
        _ => branch.clone(),
    };
    let upstream = format!("{remote_name}/{merge}");
    let theirs = repo
        .refs
        .read(&format!("{}{merge}", tracking_prefix(&remote_name)))?
        .ok_or_else(|| Error::Usage(format!("{remote_name} has no branch {merge:?} to pull")))?;
    let ours = repo.head_commit()?;
    let outcome = match ours {
        Some(o) if o == theirs => PullOutcome::UpToDate { ahead: 0 },
        Some(o) if reach::is_ancestor(&repo.odb, &theirs, &o)? => {
            PullOutcome::UpToDate { ahead: reach::count_ahead(&repo.odb, &o, &theirs)? }
        }
        Some(o) if !reach::is_ancestor(&repo.odb, &o, &theirs)? => {
            let (ahead, behind) = remote::ahead_behind(repo, &o, &theirs)?;
            return Err(Error::Rejected(format!(
                "not pulling: {branch} and {upstream} have diverged ({ahead} and {behind} different commits each), \
                 and pull only fast-forwards. Keep your commits on another branch (`mlv branch <name>`), then \
                 `mlv switch --force-create {branch} {upstream}` to take theirs; or push yours to a new branch \
                 (`mlv push {remote_name} {branch}:<name>`)"
            )));
        }
        _ => {
            let report = checkout(repo, Target::Branch(branch.clone()), Some(theirs), false, progress)?;
            repo.refs.update(&format!("{HEADS}{branch}"), theirs, ours)?;
            PullOutcome::FastForward { from: ours, to: theirs, checkout: report }
        }
    };
    Ok(PullReport { fetch: fetched, branch, upstream, outcome })
}
