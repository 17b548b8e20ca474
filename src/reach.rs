//! Reachability: every object a set of commits needs — trees, files, tensors, blobs and the
//! delta bases of those tensors — in an order where each object follows everything it needs.
//!
//! Push, fetch, clone and `log --stat` all walk this graph; packs sent in this order can be
//! installed one by one, each complete on its own.

use std::collections::HashSet;

use crate::object::{ObjectId, ObjectKind};
use crate::store::{Odb, StoreError};

/// How far a walk goes.
pub struct Walk<'a> {
    /// Objects the walk does not enter (and so not what only they need): what the other side
    /// already has.
    pub stop: &'a dyn Fn(&ObjectId) -> bool,
    /// Follow commits' parents (false: only the tips' snapshots, as `clone --depth 1`).
    pub parents: bool,
    /// Commits whose parents are not followed (a shallow clone's boundary).
    pub shallow: &'a HashSet<ObjectId>,
}

impl Walk<'_> {
    /// The whole history, nothing excluded.
    pub fn everything(shallow: &HashSet<ObjectId>) -> Walk<'_> {
        Walk { stop: &|_| false, parents: true, shallow }
    }
}

/// The result of a walk.
#[derive(Debug, Default)]
pub struct Closure {
    /// Every object reached, each after all the objects it needs.
    pub objects: Vec<ObjectId>,
    /// Commits whose parents were not followed: not asked for, or not present (shallow).
    pub boundary: Vec<ObjectId>,
}

/// Walks from `tips` (commits or tags) through `odb`; the first object that cannot be read
/// ends the walk with its error.
pub fn closure(odb: &Odb, tips: &[ObjectId], walk: &Walk<'_>) -> Result<Closure, StoreError> {
    closure_with(odb, tips, walk, &mut |_, e| Err(e))
}

/// Like [`closure`], but an object that cannot be read goes to `on_error`, which may end the
/// walk (returning the error) or let it go on around that object (returning Ok), as `fsck`
/// does to report every problem.
pub fn closure_with(
    odb: &Odb,
    tips: &[ObjectId],
    walk: &Walk<'_>,
    on_error: &mut dyn FnMut(&ObjectId, StoreError) -> Result<(), StoreError>,
) -> Result<Closure, StoreError> {
    let mut out = Closure::default();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // (object, its needs already pushed): an object is emitted when popped the second time.
    let mut stack: Vec<(ObjectId, bool)> = tips.iter().rev().map(|t| (*t, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            out.objects.push(id);
            continue;
        }
        if seen.contains(&id) || (walk.stop)(&id) {
            continue;
        }
        seen.insert(id);
        let needed = match needs(odb, &id, walk, &mut out.boundary) {
            Ok(n) => n,
            Err(e) => {
                on_error(&id, e)?;
                continue;
            }
        };
        stack.push((id, true));
        for need in needed.into_iter().rev() {
            if !seen.contains(&need) && !(walk.stop)(&need) {
                stack.push((need, false));
            }
        }
    }
    Ok(out)
}

/// The objects `id` refers to directly.
fn needs(odb: &Odb, id: &ObjectId, walk: &Walk<'_>, boundary: &mut Vec<ObjectId>) -> Result<Vec<ObjectId>, StoreError> {
    let (_, rec) = odb.locate(id)?;
    Ok(match rec.kind {
        ObjectKind::Commit => {
            let commit = odb.commit(id)?;
            let mut out = vec![commit.tree];
            if walk.parents && !walk.shallow.contains(id) {
                for p in commit.parents {
                    match odb.locate(&p) {
                        Ok(_) => out.push(p),
                        Err(StoreError::NotFound(_)) => boundary.push(*id),
                        Err(e) => return Err(e),
                    }
                }
            } else if !commit.parents.is_empty() {
                boundary.push(*id);
            }
            boundary.dedup();
            out
        }
        ObjectKind::Tag => vec![odb.tag(id)?.object],
        ObjectKind::Tree => odb.tree(id)?.entries.into_iter().map(|e| e.id).collect(),
        ObjectKind::TensorFile => odb.tensor_file(id)?.segments.iter().map(|s| s.id()).collect(),
        ObjectKind::ChunkedFile => odb.chunked_file(id)?.chunks.iter().map(|c| c.0).collect(),
        ObjectKind::Tensor => odb.bases(id)?,
        ObjectKind::Blob => Vec::new(),
    })
}

/// The set of objects reachable from `tips`, for membership tests.
pub fn reachable_set(
    odb: &Odb,
    tips: &[ObjectId],
    shallow: &HashSet<ObjectId>,
) -> Result<HashSet<ObjectId>, StoreError> {
    Ok(closure(odb, tips, &Walk::everything(shallow))?.objects.into_iter().collect())
}

/// True if commit `ancestor` is `descendant` or one of its ancestors.
pub fn is_ancestor(odb: &Odb, ancestor: &ObjectId, descendant: &ObjectId) -> Result<bool, StoreError> {
    let mut seen = HashSet::new();
    let mut todo = vec![*descendant];
    while let Some(c) = todo.pop() {
        if c == *ancestor {
            return Ok(true);
        }
        if !seen.insert(c) || !odb.contains(&c) {
            continue;
        }
        todo.extend(odb.commit(&c)?.parents);
    }
    Ok(false)
}

/// Commits reachable from `from` that are not reachable from `not`: how far one branch is
/// ahead of another.
pub fn count_ahead(odb: &Odb, from: &ObjectId, not: &ObjectId) -> Result<usize, StoreError> {
    let theirs = commits(odb, not)?;
    Ok(commits(odb, from)?.difference(&theirs).count())
}

/// Every commit in the history of `tip` that is present.
fn commits(odb: &Odb, tip: &ObjectId) -> Result<HashSet<ObjectId>, StoreError> {
    let mut seen = HashSet::new();
    let mut todo = vec![*tip];
    while let Some(c) = todo.pop() {
        if odb.contains(&c) && seen.insert(c) {
            todo.extend(odb.commit(&c)?.parents);
        }
    }
    Ok(seen)
}
