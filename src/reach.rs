//! Reachability: every object a set of commits needs — trees, files, tensors, blobs and the
//! delta bases of those tensors — in an order where each object follows everything it needs.
//!
//! Push, fetch, clone and `log --stat` all walk this graph; packs sent in this order can be
//! installed one by one, each complete on its own.

use std::collections::{HashMap, HashSet};

use crate::object::{EntryKind, MAX_TREE_DEPTH, ObjectId, ObjectKind};
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
    let mut heights = TreeHeights::default();
    // (object, its needs already pushed): an object is emitted when popped the second time.
    let mut stack: Vec<(ObjectId, bool)> = tips.iter().rev().map(|t| (*t, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            match heights.finish(odb, &id) {
                Ok(()) => out.objects.push(id),
                Err(e) => on_error(&id, e)?,
            }
            continue;
        }
        if seen.contains(&id) || (walk.stop)(&id) {
            continue;
        }
        seen.insert(id);
        let needed = match needs(odb, &id, walk, &mut out.boundary, &mut heights) {
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

/// How deep the trees a walk has finished nest (0: no subdirectory), so that a tree nested
/// deeper than any checkout follows is refused where it arrives, not where it is checked out.
#[derive(Default)]
struct TreeHeights {
    /// The subdirectories of each tree entered and not yet finished.
    subtrees: HashMap<ObjectId, Vec<ObjectId>>,
    /// Finished trees.
    heights: HashMap<ObjectId, usize>,
}

impl TreeHeights {
    fn entered(&mut self, tree: ObjectId, subtrees: Vec<ObjectId>) {
        self.subtrees.insert(tree, subtrees);
    }

    /// Records the height of `id` once everything it needs was emitted (a no-op for anything
    /// but a tree). A subtree the walk did not enter (the other side has it) is measured by
    /// reading its trees: trees that each nest within the limit may still exceed it together.
    fn finish(&mut self, odb: &Odb, id: &ObjectId) -> Result<(), StoreError> {
        let Some(subtrees) = self.subtrees.remove(id) else { return Ok(()) };
        let mut height = 0;
        for s in subtrees {
            height = height.max(self.height_of(odb, &s, 1)? + 1);
        }
        self.check(id, height)
    }

    /// The height of a tree (memoised), found `depth` levels below the one being finished.
    fn height_of(&mut self, odb: &Odb, id: &ObjectId, depth: usize) -> Result<usize, StoreError> {
        if let Some(&h) = self.heights.get(id) {
            return Ok(h);
        }
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(*id));
        }
        let mut height = 0;
        for e in odb.tree(id)?.entries.into_iter().filter(|e| e.kind == EntryKind::Tree) {
            height = height.max(self.height_of(odb, &e.id, depth + 1)? + 1);
        }
        self.check(id, height)?;
        Ok(height)
    }

    fn check(&mut self, id: &ObjectId, height: usize) -> Result<(), StoreError> {
        if height > MAX_TREE_DEPTH {
            return Err(too_deep(*id));
        }
        self.heights.insert(*id, height);
        Ok(())
    }
}

fn too_deep(id: ObjectId) -> StoreError {
    StoreError::Corrupt { id, what: format!("directories nested deeper than {MAX_TREE_DEPTH} levels") }
}

/// The objects `id` refers to directly.
fn needs(
    odb: &Odb,
    id: &ObjectId,
    walk: &Walk<'_>,
    boundary: &mut Vec<ObjectId>,
    heights: &mut TreeHeights,
) -> Result<Vec<ObjectId>, StoreError> {
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
        ObjectKind::Tree => {
            let entries = odb.tree(id)?.entries;
            heights.entered(*id, entries.iter().filter(|e| e.kind == EntryKind::Tree).map(|e| e.id).collect());
            entries.into_iter().map(|e| e.id).collect()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Tree, TreeEntry};
    use crate::repo::Repository;

    /// A tree whose file lies `levels` directories down; returns its id.
    fn nested(repo: &Repository, levels: usize) -> ObjectId {
        *nested_trees(repo, levels).last().unwrap()
    }

    /// The trees of such a nest, innermost first, the root last.
    fn nested_trees(repo: &Repository, levels: usize) -> Vec<ObjectId> {
        let mut w = repo.writer().unwrap();
        let file = w.put(ObjectKind::Blob, b"x").unwrap();
        let mut entry = TreeEntry { name: "f".into(), kind: EntryKind::Blob, executable: false, id: file, size: 1 };
        let mut trees = Vec::new();
        for _ in 0..=levels {
            let tree = w.put(ObjectKind::Tree, &Tree { entries: vec![entry] }.encode()).unwrap();
            trees.push(tree);
            entry = TreeEntry { name: "d".into(), kind: EntryKind::Tree, executable: false, id: tree, size: 1 };
        }
        w.finish().unwrap();
        trees
    }

    #[test]
    fn a_walk_that_stops_at_a_subtree_still_measures_its_depth() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let none = HashSet::new();
        // The other side has the inner 200 levels (each within the limit); the 57 sent on top
        // of them make a nest one level too deep.
        let trees = nested_trees(&repo, MAX_TREE_DEPTH + 1);
        let inner = trees[200];
        let walk = Walk { stop: &|id| *id == inner, parents: true, shallow: &none };
        let err = closure(&repo.odb, &[*trees.last().unwrap()], &walk).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 256 levels"), "{err}");
        let fits = nested_trees(&repo, MAX_TREE_DEPTH);
        let inner = fits[200];
        let walk = Walk { stop: &|id| *id == inner, parents: true, shallow: &none };
        assert_eq!(closure(&repo.odb, &[*fits.last().unwrap()], &walk).unwrap().objects.len(), MAX_TREE_DEPTH - 200);
    }

    #[test]
    fn trees_nested_deeper_than_a_checkout_follows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let none = HashSet::new();
        let deepest = nested(&repo, MAX_TREE_DEPTH);
        assert_eq!(closure(&repo.odb, &[deepest], &Walk::everything(&none)).unwrap().objects.len(), MAX_TREE_DEPTH + 2);
        let too_deep = nested(&repo, MAX_TREE_DEPTH + 1);
        let err = closure(&repo.odb, &[too_deep], &Walk::everything(&none)).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 256 levels"), "{err}");
    }
}
