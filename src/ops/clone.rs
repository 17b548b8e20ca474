//! `mlv clone`: a new repository with everything (or, `--depth 1`, only the tip's snapshot)
//! of a remote, its branch checked out.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checkout::{CheckoutReport, Target, checkout};
use super::fetch::{FetchOptions, RemoteRefs, fetch_objects};
use super::remote::{normalise_url, set_tracking, set_upstream};
use crate::config::RemoteConfig;
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::progress::Progress;
use crate::refs::{HEADS, Head, TAGS};
use crate::repo::Repository;
use crate::sync::TransferStats;
use crate::transport::Remote;

/// The name a clone gives its remote.
pub const ORIGIN: &str = "origin";

/// What to clone.
#[derive(Debug, Clone)]
pub struct CloneOptions {
    /// The remote's URL.
    pub url: String,
    /// The new repository's directory.
    pub dir: PathBuf,
    /// The branch to check out (default: the remote's HEAD, else `main`, else the first).
    pub branch: Option<String>,
    /// Make a bare repository: the remote's branches become its branches, nothing checked out.
    pub bare: bool,
    /// Fetch only the tip's snapshot and the delta bases it needs (`--depth 1`).
    pub shallow: bool,
    /// Transfer unit size in bytes.
    pub unit_bytes: u64,
}

/// What `clone` did.
#[derive(Debug, Serialize)]
pub struct CloneReport {
    /// The new repository.
    pub dir: PathBuf,
    /// The branch checked out (or HEAD of a bare clone), None for an empty remote.
    pub branch: Option<String>,
    /// Its commit.
    pub commit: Option<ObjectId>,
    /// What was transferred.
    pub stats: TransferStats,
    /// The checkout (None for a bare clone).
    pub checkout: Option<CheckoutReport>,
}

/// Removes a directory this clone created if the clone fails, as git does.
struct Cleanup<'a> {
    dir: &'a Path,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(self.dir);
        }
    }
}

/// The branch a clone checks out.
fn pick_branch(remote: &Remote, theirs: &RemoteRefs, wanted: Option<&str>) -> Result<Option<(String, ObjectId)>> {
    let find = |b: &str| theirs.heads.iter().find(|(n, _)| n == b).cloned();
    if let Some(b) = wanted {
        return find(b).map(Some).ok_or_else(|| Error::Usage(format!("the remote has no branch {b:?}")));
    }
    let head = match remote.refs.head() {
        Ok(Head::Branch(b)) => find(&b),
        _ => None,
    };
    Ok(head.or_else(|| find("main")).or_else(|| theirs.heads.first().cloned()))
}

/// Clones.
pub fn clone(opts: &CloneOptions, progress: &dyn Progress) -> Result<CloneReport> {
    let dir = std::path::absolute(&opts.dir)?;
    let existed = dir.exists();
    if existed && std::fs::read_dir(&dir)?.next().is_some() {
        return Err(Error::Usage(format!("destination {} already exists and is not empty", dir.display())));
    }
    let url = normalise_url(&opts.url)?;
    let remote = Remote::open(&url, &RemoteConfig::default())?;
    let theirs = RemoteRefs::read(&remote)?;
    let chosen = pick_branch(&remote, &theirs, opts.branch.as_deref())?;
    std::fs::create_dir_all(&dir)?;
    let mut cleanup = Cleanup { dir: &dir, armed: !existed };
    let mut repo = if opts.bare { Repository::init_bare(&dir)? } else { Repository::init(&dir)? };
    repo.config.remote.insert(ORIGIN.into(), RemoteConfig { url, ..RemoteConfig::default() });
    repo.save_config()?;
    let wants: Vec<ObjectId> = match (&chosen, opts.shallow) {
        (Some((_, id)), true) => vec![*id],
        _ => theirs.heads.iter().chain(&theirs.tags).map(|r| r.1).collect(),
    };
    let fetch = FetchOptions { prune: false, shallow: opts.shallow, unit_bytes: opts.unit_bytes };
    let stats = fetch_objects(&repo, &remote, &wants, &fetch, progress)?;
    for (tag, id) in theirs.tags.iter().filter(|(_, id)| repo.odb.contains(id)) {
        repo.refs.update(&format!("{TAGS}{tag}"), *id, None)?;
    }
    for (branch, id) in theirs.heads.iter().filter(|(_, id)| repo.odb.contains(id)) {
        if opts.bare {
            repo.refs.update(&format!("{HEADS}{branch}"), *id, None)?;
        } else {
            set_tracking(&repo, ORIGIN, branch, Some(*id))?;
        }
    }
    let mut report = CloneReport { dir: dir.clone(), branch: None, commit: None, stats, checkout: None };
    if let Some((branch, id)) = chosen {
        repo.refs.set_head(&Head::Branch(branch.clone()))?;
        if !opts.bare {
            // Checked out while the branch is unborn, so every file is written; then the branch.
            report.checkout = Some(checkout(&repo, Target::Branch(branch.clone()), Some(id), false, progress)?);
            repo.refs.update(&format!("{HEADS}{branch}"), id, None)?;
            set_upstream(&mut repo, &branch, ORIGIN, &branch)?;
        }
        (report.branch, report.commit) = (Some(branch), Some(id));
    }
    cleanup.armed = false;
    Ok(report)
}
