//! `mlv branch`, `mlv tag`, `mlv switch`: naming commits and moving HEAD between branches.

use serde::Serialize;

use super::checkout::{CheckoutReport, Target, checkout};
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectKind, Tag};
use crate::progress::Progress;
use crate::refs::{HEADS, Head, TAGS, check_name};
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
}

/// Branches, marking the current one.
pub fn list_branches(repo: &Repository) -> Result<Vec<RefInfo>> {
    let current = match repo.refs.head()? {
        Head::Branch(b) => Some(b),
        Head::Detached(_) => None,
    };
    Ok(repo
        .refs
        .list(HEADS)?
        .into_iter()
        .map(|(name, id)| RefInfo { current: current.as_deref() == Some(&name), name, id })
        .collect())
}

/// Tags.
pub fn list_tags(repo: &Repository) -> Result<Vec<RefInfo>> {
    Ok(repo.refs.list(TAGS)?.into_iter().map(|(name, id)| RefInfo { name, id, current: false }).collect())
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

/// Deletes branch `name` (not the current one).
pub fn delete_branch(repo: &Repository, name: &str) -> Result<()> {
    if repo.refs.head()? == Head::Branch(name.to_string()) {
        return Err(Error::CurrentBranch(name.to_string()));
    }
    let full = format!("{HEADS}{name}");
    let id = repo.refs.read(&full)?.ok_or_else(|| Error::UnknownRevision(name.to_string()))?;
    Ok(repo.refs.delete(&full, id)?)
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
    /// Create it at HEAD first.
    Create,
    /// Start an unborn branch with an empty index and work tree, for an unrelated history.
    Orphan,
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
        SwitchMode::Create => {
            create_branch(repo, name, None)?;
        }
        SwitchMode::Orphan => {
            ensure_free(repo, &full, name)?;
            // Checking out no commit also empties the index.
            return checkout(repo, Target::Branch(name.to_string()), None, force, progress);
        }
        SwitchMode::Existing => {}
    }
    let id = repo.refs.read(&full)?.ok_or_else(|| Error::UnknownRevision(name.to_string()))?;
    checkout(repo, Target::Branch(name.to_string()), Some(id), force, progress)
}
