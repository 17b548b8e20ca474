//! `mlv status`: staged changes (HEAD vs index), unstaged changes (index vs work tree), untracked files.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use super::tensors::{TensorCounts, named_tensors, pair_by_name};
use crate::error::Result;
use crate::index::{Index, IndexEntry, LockedIndex};
use crate::object::{EntryKind, ObjectId};
use crate::refs::Head;
use crate::repo::Repository;
use crate::worktree::{self, FoundFile, Ingested, NoBases, WorktreeError};

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Not in the older side.
    New,
    /// Content differs.
    Modified,
    /// Not in the newer side.
    Deleted,
}

/// One changed path.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Work-tree path.
    pub path: String,
    /// What happened.
    pub kind: ChangeKind,
    /// For modified safetensors files: how many tensors changed, appeared and disappeared
    /// (counted as `diff` counts them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<TensorCounts>,
    /// Why the work-tree file cannot be stored as it is (e.g. a truncated safetensors file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The whole status.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Current branch, or None when detached.
    pub branch: Option<String>,
    /// HEAD commit.
    pub head: Option<ObjectId>,
    /// HEAD vs index.
    pub staged: Vec<Change>,
    /// Index vs work tree.
    pub unstaged: Vec<Change>,
    /// Files not in the index.
    pub untracked: Vec<String>,
    /// Untracked paths mlv does not store, and why (odd names, symlinks to directories).
    pub skipped: Vec<worktree::Skipped>,
    /// The branch against its upstream (filled in by [`tracking`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
}

/// A branch against its upstream's remote-tracking ref.
#[derive(Debug, Clone, Serialize)]
pub struct Tracking {
    /// `origin/main`.
    pub upstream: String,
    /// False when the upstream has not been fetched (or is gone).
    pub fetched: bool,
    /// Commits here that the upstream lacks.
    pub ahead: usize,
    /// Commits of the upstream that are not here.
    pub behind: usize,
}

/// How `branch` stands against its upstream, if it has one.
pub fn tracking(repo: &Repository, branch: &str) -> Result<Option<Tracking>> {
    let Some(up) = super::remote::upstream(repo, branch)? else { return Ok(None) };
    let ours = repo.refs.read(&format!("{}{branch}", crate::refs::HEADS))?;
    let (ahead, behind) = match (ours, up.id) {
        (Some(o), Some(t)) => super::remote::ahead_behind(repo, &o, &t)?,
        _ => (0, 0),
    };
    Ok(Some(Tracking { upstream: up.name, fetched: up.id.is_some(), ahead, behind }))
}

impl Status {
    /// True when nothing differs anywhere.
    pub fn is_clean(&self) -> bool {
        self.staged.is_empty() && self.unstaged.is_empty() && self.untracked.is_empty() && self.skipped.is_empty()
    }
}

/// Counts the tensors that changed, appeared and disappeared between a stored tensor file
/// and a new list of (name, id).
pub fn tensor_counts(repo: &Repository, old: &ObjectId, new: &[(String, ObjectId)]) -> Option<TensorCounts> {
    let old: Vec<(String, ObjectId)> =
        named_tensors(&repo.odb.tensor_file(old).ok()?).into_iter().map(|t| (t.name, t.id)).collect();
    Some(pair_by_name(&old, new, |(n, id)| (n.as_str(), *id)).counts())
}

/// Computes the status. Files whose stat changed but content did not get their stat refreshed
/// in the index, so the next call is fast again.
pub fn status(repo: &Repository) -> Result<Status> {
    let (branch, head) = match repo.refs.head()? {
        Head::Branch(b) => (Some(b.clone()), repo.refs.read(&format!("{}{b}", crate::refs::HEADS))?),
        Head::Detached(id) => (None, Some(id)),
    };
    let mut index = repo.index()?;
    let head_files = repo.commit_files(head)?;
    let staged = compare_trees(repo, &head_files, &index);
    let mut unstaged = Vec::new();
    let mut refreshed = false;
    let tracked = tracked_files(repo, &index)?;
    for f in &tracked {
        match freshness(&index, f)? {
            Freshness::Clean => {}
            Freshness::Refreshed => {
                if let Some(e) = index.entries.get_mut(&f.rel) {
                    e.stat = f.stat;
                    refreshed = true;
                }
            }
            Freshness::Changed(now) => {
                let tensors = index.entries.get(&f.rel).and_then(|e| tensors_changed_in_file(repo, e, &now));
                unstaged.push(Change { path: f.rel.clone(), kind: ChangeKind::Modified, tensors, problem: None });
            }
            Freshness::Invalid(why) => unstaged.push(Change {
                path: f.rel.clone(),
                kind: ChangeKind::Modified,
                tensors: None,
                problem: Some(format!("not valid safetensors: {why}")),
            }),
        }
    }
    let present: HashSet<&str> = tracked.iter().map(|f| f.rel.as_str()).collect();
    for path in index.entries.keys().filter(|k| !present.contains(k.as_str())) {
        unstaged.push(Change { path: path.clone(), kind: ChangeKind::Deleted, tensors: None, problem: None });
    }
    let scan = worktree::scan(&repo.root, &repo.root)?;
    let untracked = scan.files.into_iter().filter(|f| !index.entries.contains_key(&f.rel)).map(|f| f.rel).collect();
    let skipped = scan.skipped;
    if refreshed {
        save_refreshed(repo, index);
    }
    Ok(Status { branch, head, staged, unstaged, untracked, skipped, tracking: None })
}

/// The tracked files present in the work tree. They are looked up by path rather than found
/// by walking, because ignore rules are for untracked files: a tracked file stays tracked.
pub fn tracked_files(repo: &Repository, index: &Index) -> Result<Vec<FoundFile>> {
    let mut out = Vec::new();
    for rel in index.entries.keys() {
        let abs = repo.root.join(rel);
        if let worktree::PathState::File(stat) = worktree::inspect(&abs)? {
            out.push(FoundFile { rel: rel.clone(), abs, stat });
        }
    }
    Ok(out)
}

/// How a tracked work-tree file compares with its index entry.
pub enum Freshness {
    /// Its stat proves it unchanged.
    Clean,
    /// Same content and mode; only the stat recorded in the index is stale.
    Refreshed,
    /// Its content or executable bit differs: the file as it is now.
    Changed(Ingested),
    /// A `.safetensors` file that is not valid any more (a crashed save, say): why.
    Invalid(String),
}

/// Compares work-tree file `f` with its index entry (a file not in the index has changed),
/// rehashing only when the stat does not prove it unchanged.
pub fn freshness(index: &Index, f: &FoundFile) -> Result<Freshness> {
    if index.is_stat_clean(&f.rel, &f.stat) {
        return Ok(Freshness::Clean);
    }
    let now = match worktree::ingest(&f.abs, &f.rel, None, &mut NoBases) {
        Ok(now) => now,
        Err(WorktreeError::Safetensors { source, .. }) => return Ok(Freshness::Invalid(source.to_string())),
        Err(e) => return Err(e.into()),
    };
    let same = index.entries.get(&f.rel).is_some_and(|e| {
        let same_content =
            e.id == now.id || (e.kind != now.kind && worktree::legacy_blob_id(&f.abs).ok() == Some(e.id));
        same_content && e.stat.executable == f.stat.executable
    });
    Ok(if same { Freshness::Refreshed } else { Freshness::Changed(now) })
}

/// For a safetensors file whose content changed: how many of its tensors did.
fn tensors_changed_in_file(repo: &Repository, entry: &IndexEntry, now: &Ingested) -> Option<TensorCounts> {
    if entry.kind != EntryKind::TensorFile || now.id == entry.id {
        return None;
    }
    let new: Vec<(String, ObjectId)> = now.tensors.iter().map(|t| (t.name.clone(), t.id)).collect();
    tensor_counts(repo, &entry.id, &new)
}

/// Saves refreshed stats, best effort: only if no other command holds the index or wrote it
/// since it was read (its entries would be lost), and a read-only repository still answers.
fn save_refreshed(repo: &Repository, index: Index) {
    if let Ok(mut locked) = LockedIndex::open(&repo.index_path(), Duration::ZERO)
        && locked.written_ns == index.written_ns
    {
        *locked = index;
        let _ = locked.save();
    }
}

fn compare_trees(repo: &Repository, head: &crate::repo::FlatTree, index: &Index) -> Vec<Change> {
    let mut out = Vec::new();
    for (path, e) in &index.entries {
        match head.get(path) {
            None => out.push(Change { path: path.clone(), kind: ChangeKind::New, tensors: None, problem: None }),
            Some(h) if h.id != e.id || h.executable != e.stat.executable => {
                let tensors = (e.kind == EntryKind::TensorFile && h.kind == EntryKind::TensorFile && h.id != e.id)
                    .then(|| repo.odb.tensor_file(&e.id).ok())
                    .flatten()
                    .and_then(|tf| {
                        let new: Vec<(String, ObjectId)> =
                            named_tensors(&tf).into_iter().map(|t| (t.name, t.id)).collect();
                        tensor_counts(repo, &h.id, &new)
                    });
                out.push(Change { path: path.clone(), kind: ChangeKind::Modified, tensors, problem: None });
            }
            Some(_) => {}
        }
    }
    for path in head.keys().filter(|p| !index.entries.contains_key(*p)) {
        out.push(Change { path: path.clone(), kind: ChangeKind::Deleted, tensors: None, problem: None });
    }
    out
}
