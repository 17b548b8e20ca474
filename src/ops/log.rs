//! `mlv log` and `mlv show`: history, with the stored bytes each commit added.

use std::collections::{BinaryHeap, HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::object::{GitProvenance, ObjectId, Signature};
use crate::reach;
use crate::refs::{HEADS, Head, REMOTES, TAGS};
use crate::repo::Repository;

/// One commit in a log.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    /// Commit id.
    pub id: ObjectId,
    /// Parent ids.
    pub parents: Vec<ObjectId>,
    /// Author.
    pub author: Signature,
    /// Committer.
    pub committer: Signature,
    /// Source-code provenance.
    pub git: Option<GitProvenance>,
    /// Message.
    pub message: String,
    /// Logical bytes of the snapshot.
    pub logical_bytes: u64,
    /// Stored bytes of objects first introduced by this commit (with `--stat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes_added: Option<u64>,
    /// The names pointing at it, as `git log` decorates commits: `HEAD -> main`, `HEAD`
    /// (detached), `origin/main`, `tag: v1`.
    pub refs: Vec<String>,
}

/// The names pointing at each commit (see [`LogEntry::refs`]): HEAD and its branch first, then
/// the other branches, remote-tracking branches and tags (annotated tags peeled).
pub fn decorations(repo: &Repository) -> Result<HashMap<ObjectId, Vec<String>>> {
    let mut out: HashMap<ObjectId, Vec<String>> = HashMap::new();
    let head = repo.refs.head()?;
    if let Head::Detached(id) = &head {
        out.entry(*id).or_default().push("HEAD".into());
    }
    let branches = repo.refs.list(HEADS)?;
    let (current, others): (Vec<_>, Vec<_>) = branches.into_iter().partition(|(n, _)| head == Head::Branch(n.clone()));
    for (name, id) in current {
        out.entry(id).or_default().insert(0, format!("HEAD -> {name}"));
    }
    for (name, id) in others.into_iter().chain(repo.refs.list(REMOTES)?) {
        out.entry(id).or_default().push(name);
    }
    for (name, id) in repo.refs.list(TAGS)? {
        out.entry(repo.peel(id).unwrap_or(id)).or_default().push(format!("tag: {name}"));
    }
    Ok(out)
}

/// Every object one commit's snapshot needs, itself included: trees, files, tensors, blobs
/// and the delta bases of those tensors (not its parents).
pub fn snapshot_objects(repo: &Repository, commit: &ObjectId) -> Result<HashSet<ObjectId>> {
    let none = HashSet::new();
    let walk = reach::Walk { stop: &|_| false, parents: false, shallow: &none };
    Ok(reach::closure(&repo.odb, &[*commit], &walk)?.objects.into_iter().collect())
}

/// Stored bytes of the objects `commit` needs that none of its parents need.
pub fn stored_added(repo: &Repository, commit: &ObjectId) -> Result<u64> {
    let mut mine = snapshot_objects(repo, commit)?;
    for p in repo.commit(commit)?.parents.iter().filter(|p| repo.odb.contains(p)) {
        for id in snapshot_objects(repo, p)? {
            mine.remove(&id);
        }
    }
    Ok(mine.iter().filter_map(|id| repo.odb.stored_len(id)).sum())
}

/// Up to `limit` commits reachable from `start`, newest first.
pub fn log(repo: &Repository, start: ObjectId, limit: usize, with_stat: bool) -> Result<Vec<LogEntry>> {
    let mut names = decorations(repo)?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = BinaryHeap::new();
    let first = repo.commit(&start)?;
    queue.push((first.committer.time, start));
    seen.insert(start);
    while let Some((_, id)) = queue.pop() {
        if out.len() >= limit {
            break;
        }
        let c = repo.commit(&id)?;
        for p in &repo.parents(&id)? {
            if seen.insert(*p) {
                queue.push((repo.commit(p)?.committer.time, *p));
            }
        }
        let logical_bytes = repo.flatten(&c.tree)?.values().map(|f| f.size).sum();
        let stored_bytes_added = if with_stat { Some(stored_added(repo, &id)?) } else { None };
        out.push(LogEntry {
            id,
            parents: c.parents,
            author: c.author,
            committer: c.committer,
            git: c.git,
            message: c.message,
            logical_bytes,
            stored_bytes_added,
            refs: names.remove(&id).unwrap_or_default(),
        });
    }
    Ok(out)
}
