//! `mlv remote`: named remotes in `.mlv/config`, their remote-tracking refs
//! (`refs/remotes/<name>/<branch>`) and the upstreams of local branches.

use std::collections::HashSet;

use serde::Serialize;

use crate::config::{BranchConfig, RemoteConfig};
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::refs::{HEADS, REMOTES, check_name};
use crate::repo::Repository;
use crate::transport::{Location, Remote};

/// A configured remote.
#[derive(Debug, Serialize)]
pub struct RemoteInfo {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

/// Checks a remote name: a ref name component without `/`.
pub(crate) fn check_remote_name(name: &str) -> Result<()> {
    check_name(name)?;
    if name.contains('/') {
        return Err(Error::Usage(format!("remote name {name:?} must not contain '/'")));
    }
    Ok(())
}

/// A local path URL made absolute (against the current directory), so the remote still
/// resolves when mlv runs elsewhere; other URLs unchanged.
pub fn normalise_url(url: &str) -> Result<String> {
    Ok(match Location::parse(url)? {
        Location::Path(p) if p.is_relative() || p.components().any(|c| c == std::path::Component::ParentDir) => {
            p.canonicalize().or_else(|_| std::path::absolute(&p))?.display().to_string()
        }
        _ => url.to_string(),
    })
}

fn settings<'a>(repo: &'a Repository, name: &str) -> Result<&'a RemoteConfig> {
    repo.config.remote.get(name).ok_or_else(|| Error::NoSuchRemote(name.to_string()))
}

/// Adds remote `name` at `url`.
pub fn add(repo: &mut Repository, name: &str, url: &str) -> Result<()> {
    check_remote_name(name)?;
    if repo.config.remote.contains_key(name) {
        return Err(Error::Usage(format!("remote {name} already exists")));
    }
    let url = normalise_url(url)?;
    repo.config.remote.insert(name.to_string(), RemoteConfig { url, ..RemoteConfig::default() });
    repo.save_config()
}

/// Changes the URL of remote `name`.
pub fn set_url(repo: &mut Repository, name: &str, url: &str) -> Result<()> {
    let url = normalise_url(url)?;
    settings(repo, name)?;
    if let Some(r) = repo.config.remote.get_mut(name) {
        r.url = url;
    }
    repo.save_config()
}

/// Removes remote `name`, its remote-tracking refs and the upstreams that named it.
pub fn remove(repo: &mut Repository, name: &str) -> Result<()> {
    settings(repo, name)?;
    for (branch, id) in repo.refs.list(&tracking_prefix(name))? {
        repo.refs.delete(&format!("{}{branch}", tracking_prefix(name)), id)?;
    }
    repo.config.remote.remove(name);
    repo.config.branch.retain(|_, b| b.remote != name);
    repo.save_config()
}

/// Renames remote `old` to `new`, with its remote-tracking refs and upstreams.
pub fn rename(repo: &mut Repository, old: &str, new: &str) -> Result<()> {
    check_remote_name(new)?;
    let cfg = settings(repo, old)?.clone();
    if repo.config.remote.contains_key(new) {
        return Err(Error::Usage(format!("remote {new} already exists")));
    }
    for (branch, id) in repo.refs.list(&tracking_prefix(old))? {
        repo.refs.update(&format!("{}{branch}", tracking_prefix(new)), id, None)?;
        repo.refs.delete(&format!("{}{branch}", tracking_prefix(old)), id)?;
    }
    repo.config.remote.remove(old);
    repo.config.remote.insert(new.to_string(), cfg);
    for b in repo.config.branch.values_mut().filter(|b| b.remote == old) {
        b.remote = new.to_string();
    }
    repo.save_config()
}

/// The configured remotes, by name.
pub fn list(repo: &Repository) -> Vec<RemoteInfo> {
    repo.config.remote.iter().map(|(name, r)| RemoteInfo { name: name.clone(), url: r.url.clone() }).collect()
}

/// Opens a remote by name, or by URL when no remote has that name. Returns the name (None
/// for a bare URL) and the open remote.
pub fn open(repo: &Repository, name_or_url: &str) -> Result<(Option<String>, Remote)> {
    if let Some(cfg) = repo.config.remote.get(name_or_url) {
        return Ok((Some(name_or_url.to_string()), Remote::open(&cfg.url, cfg)?));
    }
    match Location::parse(name_or_url) {
        Ok(Location::Path(p)) if !p.exists() => Err(Error::NoSuchRemote(name_or_url.to_string())),
        Ok(_) => Ok((None, Remote::open(&normalise_url(name_or_url)?, &RemoteConfig::default())?)),
        Err(_) => Err(Error::NoSuchRemote(name_or_url.to_string())),
    }
}

/// The remote a command uses when none is named: the current branch's upstream, else the
/// only remote, else `origin`.
pub fn default_remote(repo: &Repository, branch: Option<&str>) -> Result<String> {
    if let Some(up) = branch.and_then(|b| repo.config.branch.get(b)) {
        return Ok(up.remote.clone());
    }
    match repo.config.remote.keys().collect::<Vec<_>>().as_slice() {
        [only] => Ok((*only).clone()),
        _ if repo.config.remote.contains_key("origin") => Ok("origin".into()),
        [] => Err(Error::Usage("no remote configured: `mlv remote add origin <url>`".into())),
        _ => Err(Error::Usage("several remotes and no upstream: name the remote".into())),
    }
}

/// `refs/remotes/<remote>/`.
pub fn tracking_prefix(remote: &str) -> String {
    format!("{REMOTES}{remote}/")
}

/// Points `refs/remotes/<remote>/<branch>` at `id` (None: deletes it), whatever it held.
pub fn set_tracking(repo: &Repository, remote: &str, branch: &str, id: Option<ObjectId>) -> Result<()> {
    let full = format!("{}{branch}", tracking_prefix(remote));
    let old = repo.refs.read(&full)?;
    match (old, id) {
        (Some(o), Some(n)) if o == n => Ok(()),
        (old, Some(n)) => Ok(repo.refs.update(&full, n, old)?),
        (Some(o), None) => Ok(repo.refs.delete(&full, o)?),
        (None, None) => Ok(()),
    }
}

/// Records `remote`'s `merge` branch as the upstream of local `branch`.
pub fn set_upstream(repo: &mut Repository, branch: &str, remote: &str, merge: &str) -> Result<()> {
    let cfg = BranchConfig { remote: remote.to_string(), merge: format!("{HEADS}{merge}") };
    if repo.config.branch.get(branch) != Some(&cfg) {
        repo.config.branch.insert(branch.to_string(), cfg);
        repo.save_config()?;
    }
    Ok(())
}

/// A branch's upstream: the remote, the branch there, and its remote-tracking ref's value.
#[derive(Debug, Clone, Serialize)]
pub struct Upstream {
    /// `origin/main`.
    pub name: String,
    /// Its remote-tracking ref's commit (None before the first fetch).
    pub id: Option<ObjectId>,
}

/// The upstream of local `branch`, if configured.
pub fn upstream(repo: &Repository, branch: &str) -> Result<Option<Upstream>> {
    let Some(cfg) = repo.config.branch.get(branch) else { return Ok(None) };
    let merge = cfg.merge.strip_prefix(HEADS).unwrap_or(&cfg.merge);
    let full = format!("{}{merge}", tracking_prefix(&cfg.remote));
    Ok(Some(Upstream { name: format!("{}/{merge}", cfg.remote), id: repo.refs.read(&full)? }))
}

/// Commits on `ours` not on `theirs`, and the other way round.
pub fn ahead_behind(repo: &Repository, ours: &ObjectId, theirs: &ObjectId) -> Result<(usize, usize)> {
    Ok((crate::reach::count_ahead(&repo.odb, ours, theirs)?, crate::reach::count_ahead(&repo.odb, theirs, ours)?))
}

/// The commits of a shallow repository whose parents are not here (`.mlv/shallow`).
pub fn shallow(repo: &Repository) -> Result<HashSet<ObjectId>> {
    let path = repo.dir.join("shallow");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.parse().map_err(|_| Error::Usage(format!("{}: not a commit id: {l:?}", path.display()))))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(crate::fsutil::with_path(&path, e).into()),
    }
}

/// Adds commits to the shallow boundary.
pub fn add_shallow(repo: &Repository, commits: &[ObjectId]) -> Result<()> {
    let mut all = shallow(repo)?;
    if commits.iter().all(|c| all.contains(c)) {
        return Ok(());
    }
    all.extend(commits.iter().copied());
    let mut lines: Vec<String> = all.iter().map(|c| format!("{c}\n")).collect();
    lines.sort();
    crate::fsutil::atomic_write(&repo.dir.join("shallow"), lines.concat().as_bytes())?;
    Ok(())
}
