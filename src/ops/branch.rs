//! `mlv branch`, `mlv tag`, `mlv switch`: naming commits and moving HEAD between branches.

use serde::Serialize;

use super::checkout::{CheckoutReport, Target, checkout};
use super::status::Tracking;
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectKind, Tag};
use crate::progress::Progress;
use crate::refs::{HEADS, Head, REMOTES, TAGS, check_name};
use crate::repo::Repository;

/// A branch or tag in a listing.
#[derive(Debug, Serialize)]
pub struct RefInfo {
    /// Short name.
    pub name: String,
    /// What it points at (for annotated tags, the tag object).
    pub id: ObjectId,
    /// True for the checked-out branch.
    pub current: bool,
    /// First line of the commit's message (verbose listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The branch against its upstream (verbose listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
}

/// Branches, marking the current one; with `verbose`, each commit's subject and how the
/// branch stands against its upstream. With `remotes`, the remote-tracking branches instead.
pub fn list_branches(repo: &Repository, verbose: bool, remotes: bool) -> Result<Vec<RefInfo>> {
    let current = match repo.refs.head()? {
        Head::Branch(b) => Some(b),
        Head::Detached(_) => None,
    };
    let prefix = if remotes { REMOTES } else { HEADS };
    let mut out = Vec::new();
    for (name, id) in repo.refs.list(prefix)? {
        let mut info =
            RefInfo { current: !remotes && current.as_deref() == Some(&name), name, id, subject: None, tracking: None };
        if verbose {
            info.subject = repo.commit(&id)?.message.lines().next().map(str::to_string);
            info.tracking = if remotes { None } else { super::status::tracking(repo, &info.name)? };
        }
        out.push(info);
    }
    Ok(out)
}

/// Tags.
pub fn list_tags(repo: &Repository) -> Result<Vec<RefInfo>> {
    Ok(repo
        .refs
        .list(TAGS)?
        .into_iter()
        .map(|(name, id)| RefInfo { name, id, current: false, subject: None, tracking: None })
        .collect())
}

fn ensure_free(repo: &Repository, full: &str, name: &str) -> Result<()> {
    check_name(name)?;
    if repo.refs.read(full)?.is_some() {
        return Err(Error::RefExists(name.to_string()));
    }
    Ok(())
}

/// Creates branch `name` at `rev` (default HEAD).
pub fn create_branch(repo: &Repository, name: &str, rev: Option<&str>) -> Result<ObjectId> {
    let full = format!("{HEADS}{name}");
    ensure_free(repo, &full, name)?;
    let id = repo.resolve(rev.unwrap_or("HEAD"))?;
    repo.refs.update(&full, id, None)?;
    Ok(id)
}

/// Deletes branch `name` (not the current one) and returns the commit it pointed at. Unless
/// `force`, the branch must be merged: its commit in the history of HEAD or of its upstream,
/// so that no commit is left on no branch.
pub fn delete_branch(repo: &mut Repository, name: &str, force: bool) -> Result<ObjectId> {
    if repo.refs.head()? == Head::Branch(name.to_string()) {
        return Err(Error::CurrentBranch(name.to_string()));
    }
    let full = format!("{HEADS}{name}");
    let id = repo.refs.read(&full)?.ok_or_else(|| Error::UnknownRevision(name.to_string()))?;
    if !force {
        let upstream = super::remote::upstream(repo, name)?.and_then(|u| u.id);
        let mut merged = false;
        for tip in repo.head_commit()?.into_iter().chain(upstream) {
            merged |= crate::reach::is_ancestor(&repo.odb, &id, &tip)?;
        }
        if !merged {
            return Err(Error::NotMerged { branch: name.to_string(), id: id.short() });
        }
    }
    repo.refs.delete(&full, id)?;
    if repo.config.branch.remove(name).is_some() {
        repo.save_config()?;
    }
    Ok(id)
}

/// Creates tag `name` at `rev`; annotated (a tag object) when `message` is given.
pub fn create_tag(repo: &mut Repository, name: &str, rev: Option<&str>, message: Option<&str>) -> Result<ObjectId> {
    let full = format!("{TAGS}{name}");
    ensure_free(repo, &full, name)?;
    let commit = repo.resolve(rev.unwrap_or("HEAD"))?;
    let id = match message {
        None => commit,
        Some(m) => {
            let tag = Tag {
                object: commit,
                name: name.into(),
                tagger: repo.signature()?,
                message: format!("{}\n", m.trim_end()),
            };
            let mut w = repo.writer()?;
            let id = w.put(ObjectKind::Tag, &tag.encode())?;
            w.finish()?;
            id
        }
    };
    repo.refs.update(&full, id, None)?;
    repo.reload()?;
    Ok(id)
}

/// Deletes tag `name`.
pub fn delete_tag(repo: &Repository, name: &str) -> Result<()> {
    let full = format!("{TAGS}{name}");
    let id = repo.refs.read(&full)?.ok_or_else(|| Error::UnknownRevision(name.to_string()))?;
    Ok(repo.refs.delete(&full, id)?)
}

/// How `switch` should find or make its branch.
pub enum SwitchMode {
    /// The branch exists.
    Existing,
    /// Create it first, at a revision (default HEAD).
    Create(Option<String>),
    /// Start an unborn branch with an empty index and work tree, for an unrelated history.
    Orphan,
    /// Create it at a revision (default HEAD), or move it there if it exists.
    Reset(Option<String>),
}

/// Switches to branch `name`.
pub fn switch(
    repo: &Repository,
    name: &str,
    mode: SwitchMode,
    force: bool,
    progress: &dyn Progress,
) -> Result<CheckoutReport> {
    let full = format!("{HEADS}{name}");
    match mode {
        SwitchMode::Create(start) => {
            create_branch(repo, name, start.as_deref())?;
        }
        SwitchMode::Orphan => {
            ensure_free(repo, &full, name)?;
            // Checking out no commit also empties the index.
            return checkout(repo, Target::Branch(name.to_string()), None, force, progress);
        }
        SwitchMode::Reset(rev) => {
            let target = repo.resolve(rev.as_deref().unwrap_or("HEAD"))?;
            let old = repo.refs.read(&full)?;
            let report = checkout(repo, Target::Branch(name.to_string()), Some(target), force, progress)?;
            repo.refs.update(&full, target, old)?;
            return Ok(report);
        }
        SwitchMode::Existing => {}
    }
    let id = repo.refs.read(&full)?.ok_or_else(|| not_a_branch(repo, name))?;
    checkout(repo, Target::Branch(name.to_string()), Some(id), force, progress)
}

/// The error for `switch NAME` when no branch is called NAME: says what NAME is instead
/// (a tag, a remote-tracking branch, a commit), so the hint can suggest `checkout`.
fn not_a_branch(repo: &Repository, name: &str) -> Error {
    let is_ref =
        |prefix: &str| check_name(name).is_ok() && repo.refs.read(&format!("{prefix}{name}")).ok().flatten().is_some();
    let what = if is_ref(TAGS) {
        "a tag"
    } else if is_ref(REMOTES) {
        "a remote-tracking branch"
    } else if repo.resolve(name).is_ok() {
        "a commit"
    } else {
        return Error::UnknownRevision(name.to_string());
    };
    Error::NotABranch { name: name.to_string(), what }
}
