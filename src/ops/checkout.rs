//! `mlv checkout` / `mlv switch`: make the work tree match a revision, byte for byte.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::add::{rel_prefix, under, work_path};
use super::status::status;
use crate::error::{Error, Result};
use crate::fsutil::remove_file_and_empty_dirs;
use crate::index::{Index, IndexEntry, Stat};
use crate::object::ObjectId;
use crate::progress::Progress;
use crate::refs::{HEADS, Head};
use crate::repo::{FlatEntry, FlatTree, Repository};
use crate::spare::Spares;
use crate::worktree;

/// What a checkout did.
#[derive(Debug, Serialize, Default)]
pub struct CheckoutReport {
    /// The commit now checked out.
    pub commit: Option<ObjectId>,
    /// Branch HEAD now points at (None when detached or for path checkouts).
    pub branch: Option<String>,
    /// Files written.
    pub written: Vec<String>,
    /// Files removed.
    pub removed: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
}

/// Where HEAD goes after a full checkout.
pub enum Target {
    /// Attach to this existing branch.
    Branch(String),
    /// Detach at this commit.
    Detached(ObjectId),
}

/// Interprets a revision: a branch name attaches HEAD, `HEAD` (or `@`) leaves it as it is,
/// anything else detaches.
pub fn target_of(repo: &Repository, rev: &str) -> Result<(Target, ObjectId)> {
    if rev == "HEAD" || rev == "@" {
        let id = repo.resolve(rev)?;
        return Ok(match repo.refs.head()? {
            Head::Branch(b) => (Target::Branch(b), id),
            Head::Detached(_) => (Target::Detached(id), id),
        });
    }
    if crate::refs::check_name(rev).is_ok()
        && let Some(id) = repo.refs.read(&format!("{HEADS}{rev}"))?
    {
        return Ok((Target::Branch(rev.to_string()), id));
    }
    let id = repo.resolve(rev)?;
    Ok((Target::Detached(id), id))
}

/// Paths whose local state differs from HEAD (staged, unstaged or untracked).
fn local_changes(repo: &Repository) -> Result<BTreeSet<String>> {
    let s = status(repo)?;
    Ok(s.staged.into_iter().chain(s.unstaged).map(|c| c.path).chain(s.untracked).collect())
}

/// Switches the whole work tree to `commit` (None: an unborn branch, nothing tracked) and
/// points HEAD at `target`. Unless `force`, refuses before changing anything when local
/// changes or files that are not tracked would be overwritten or deleted.
pub fn checkout(
    repo: &Repository,
    target: Target,
    commit: Option<ObjectId>,
    force: bool,
    progress: &dyn Progress,
) -> Result<CheckoutReport> {
    let mut index = repo.lock_index()?;
    let head_files = repo.commit_files(repo.head_commit()?)?;
    let target_files = repo.commit_files(commit)?;
    // Local changes survive a checkout that does not touch their paths, as in git.
    let keep = if force { BTreeSet::new() } else { local_changes(repo)? };
    let mut conflicts: Vec<String> =
        keep.iter().filter(|p| head_files.get(*p) != target_files.get(*p)).cloned().collect();
    let doomed: BTreeSet<String> = index
        .entries
        .keys()
        .chain(head_files.keys())
        .filter(|p| !target_files.contains_key(*p) && !keep.contains(*p))
        .cloned()
        .collect();
    let wanted: FlatTree =
        target_files.iter().filter(|(p, _)| !keep.contains(*p)).map(|(p, e)| (p.clone(), e.clone())).collect();
    let in_the_way = obstructions(&repo.root, &wanted, &doomed)?;
    conflicts.extend(in_the_way.iter().map(|p| p.to_string_lossy().into_owned()));
    if !force && !conflicts.is_empty() {
        return Err(Error::DirtyWorktree(conflicts));
    }
    // Files that leave are deleted after the new ones are written, so a checkout that fails
    // (a damaged object) leaves them in place; first only those whose path changes between
    // file and directory.
    let (first, last): (Vec<String>, Vec<String>) = doomed.into_iter().partition(|p| reshaped(p, &wanted));
    let spares = repo.spares();
    let mut removed = Vec::new();
    let mut remove = |path: String, index: &mut crate::index::Index| -> Result<()> {
        spares.keep(&repo.root.join(&path));
        remove_file_and_empty_dirs(&repo.root, &path)?;
        index.entries.remove(&path);
        removed.push(path);
        Ok(())
    };
    for path in first {
        remove(path, &mut index)?;
    }
    // Only with --force: anything in the way was refused above otherwise.
    for path in &in_the_way {
        remove_file_and_empty_dirs(&repo.root, path)?;
    }
    let mut report = write_files(repo, &mut index, &wanted, &last, force, &spares, progress)?;
    for path in last {
        remove(path, &mut index)?;
    }
    spares.finish();
    report.removed = removed;
    if commit.is_none() {
        // An unborn branch starts with nothing staged; kept files stay, untracked.
        index.entries.clear();
    }
    index.save()?;
    report.branch = match target {
        Target::Branch(b) => {
            repo.refs.set_head(&Head::Branch(b.clone()))?;
            Some(b)
        }
        Target::Detached(id) => {
            repo.refs.set_head(&Head::Detached(id))?;
            None
        }
    };
    report.commit = commit;
    Ok(report)
}

/// True if `path` is a directory of a wanted file, or lies inside a wanted file's path.
fn reshaped(path: &str, wanted: &FlatTree) -> bool {
    let dir = format!("{path}/");
    let below = wanted.range(dir.clone()..).next().is_some_and(|(w, _)| w.starts_with(&dir));
    let above = path.match_indices('/').any(|(i, _)| wanted.contains_key(&path[..i]));
    below || above
}

/// Files that stand where `wanted` files go and that the checkout would not delete anyway
/// (untracked or ignored, relative to `root`): those inside a directory that must become
/// a file, and a file where a directory is needed.
fn obstructions(root: &Path, wanted: &FlatTree, doomed: &BTreeSet<String>) -> Result<Vec<PathBuf>> {
    let mut found = BTreeSet::new();
    let is_doomed = |rel: &Path| rel.to_str().is_some_and(|r| doomed.contains(r));
    for path in wanted.keys() {
        let parents = Path::new(path).ancestors().skip(1).filter(|a| !a.as_os_str().is_empty());
        for parent in parents {
            let not_a_dir = std::fs::symlink_metadata(root.join(parent)).is_ok_and(|m| !m.is_dir());
            if not_a_dir && !is_doomed(parent) {
                found.insert(parent.to_path_buf());
            }
        }
        let dest = root.join(path);
        if !std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        for entry in walkdir::WalkDir::new(&dest) {
            let entry = entry.map_err(std::io::Error::from)?;
            let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
            if !entry.file_type().is_dir() && !is_doomed(rel) {
                found.insert(rel.to_path_buf());
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Restores `paths` from `commit` into the work tree and index; HEAD does not move.
pub fn checkout_paths(
    repo: &Repository,
    commit: ObjectId,
    cwd: &Path,
    paths: &[PathBuf],
    progress: &dyn Progress,
) -> Result<CheckoutReport> {
    let all = repo.commit_files(Some(commit))?;
    let mut selected = FlatTree::new();
    for p in paths {
        let prefix = rel_prefix(repo, &work_path(repo, cwd, p)?)?;
        let before = selected.len();
        selected.extend(all.iter().filter(|(k, _)| under(k, &prefix)).map(|(k, v)| (k.clone(), v.clone())));
        if selected.len() == before {
            return Err(Error::NoMatch(p.display().to_string()));
        }
    }
    let mut index = repo.lock_index()?;
    let spares = repo.spares();
    let mut report = write_files(repo, &mut index, &selected, &[], true, &spares, progress)?;
    spares.finish();
    index.save()?;
    report.commit = Some(commit);
    Ok(report)
}

/// Refuses to write `rel` when a directory on its way is a symlink: the file would land
/// wherever the link points, perhaps outside the work tree.
fn refuse_symlinked_parents(root: &Path, rel: &str) -> Result<()> {
    for parent in Path::new(rel).ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(root.join(parent)).is_ok_and(|m| m.is_symlink()) {
            return Err(Error::Usage(format!(
                "not writing {rel}: {} is a symlink, and checkout never writes through one (replace it with a \
                 directory, or check out with --force to have it replaced)",
                parent.display()
            )));
        }
    }
    Ok(())
}

/// Writes every file of `files` whose work-tree copy is not already that content; files that
/// are, even when their stat says otherwise, are left alone (also with `force`). The caller
/// deletes `deleted_after` once they are written.
fn write_files(
    repo: &Repository,
    index: &mut Index,
    files: &FlatTree,
    deleted_after: &[String],
    force: bool,
    spares: &Spares,
    progress: &dyn Progress,
) -> Result<CheckoutReport> {
    let mut report = CheckoutReport::default();
    let mut todo: Vec<(&String, &FlatEntry)> = Vec::new();
    let stale: Vec<(&String, &FlatEntry)> =
        files.iter().filter(|(p, e)| !is_current(repo, index, p, e, force)).collect();
    for (path, e) in stale {
        match same_content(repo, index, path, e) {
            Some(stat) => {
                index.entries.insert(path.clone(), IndexEntry { kind: e.kind, id: e.id, stat });
            }
            None => todo.push((path, e)),
        }
    }
    progress.start("checking out", todo.iter().map(|(_, e)| e.size).sum());
    let leaving = |p: &str| todo.iter().any(|(t, _)| t.as_str() == p) || deleted_after.iter().any(|d| d == p);
    let _hints = BaseHintsFor::worktree(repo, index, &leaving);
    for (path, e) in todo {
        refuse_symlinked_parents(&repo.root, path)?;
        let dest = repo.root.join(path);
        report.bytes +=
            worktree::checkout_file(&repo.odb, e.kind, &e.id, e.size, &dest, e.executable, spares, progress)?;
        let meta = std::fs::metadata(&dest).map_err(|err| crate::fsutil::with_path(&dest, err))?;
        index.entries.insert(path.clone(), IndexEntry { kind: e.kind, id: e.id, stat: Stat::of(&meta) });
        report.written.push(path.clone());
    }
    progress.finish();
    Ok(report)
}

/// Offers the work tree's unchanged tensors as delta bases while it lives.
struct BaseHintsFor<'r>(&'r Repository);

impl<'r> BaseHintsFor<'r> {
    fn worktree(repo: &'r Repository, index: &Index, leaving: &dyn Fn(&str) -> bool) -> BaseHintsFor<'r> {
        let bases = worktree::WorktreeBases::of(&repo.root, index, &repo.odb, leaving);
        repo.odb.set_base_hints(Some(Arc::new(bases)));
        BaseHintsFor(repo)
    }
}

impl Drop for BaseHintsFor<'_> {
    fn drop(&mut self) {
        self.0.odb.set_base_hints(None);
    }
}

/// True if the work-tree file is known (by index and stat) to hold exactly `e`. With `force`
/// it must also be a regular file: a forced checkout replaces a symlink with the file.
fn is_current(repo: &Repository, index: &Index, path: &str, e: &FlatEntry, force: bool) -> bool {
    let Some(ie) = index.entries.get(path) else {
        return false;
    };
    let abs = repo.root.join(path);
    if force && !std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(meta) = std::fs::metadata(&abs) else {
        return false;
    };
    ie.id == e.id && ie.stat.executable == e.executable && index.is_stat_clean(path, &Stat::of(&meta))
}

/// The stat of the work-tree file when it is a regular file holding exactly `e` (same size,
/// mode and hash), found by hashing it: rewriting it would change nothing. A file the index
/// knows by its stat to hold other content is not hashed: switching between fine-tunes of one
/// model meets files of the same size whose every byte would be read for nothing.
fn same_content(repo: &Repository, index: &Index, path: &str, e: &FlatEntry) -> Option<Stat> {
    refuse_symlinked_parents(&repo.root, path).ok()?;
    let abs = repo.root.join(path);
    let meta = std::fs::symlink_metadata(&abs).ok().filter(|m| m.is_file())?;
    let stat = Stat::of(&meta);
    let known_other = index.is_stat_clean(path, &stat) && index.entries.get(path).is_some_and(|ie| ie.id != e.id);
    if stat.size != e.size || stat.executable != e.executable || known_other {
        return None;
    }
    let now = worktree::ingest(&abs, path, None, &mut worktree::NoBases).ok()?;
    (now.id == e.id).then_some(stat)
}

/// Resets the index entries under `paths` to their state in `rev` (the work tree is untouched).
pub fn unstage(repo: &Repository, rev: &str, cwd: &Path, paths: &[PathBuf]) -> Result<Vec<String>> {
    let source = match repo.head_commit()? {
        None if rev == "HEAD" => FlatTree::new(),
        _ => repo.commit_files(Some(repo.resolve(rev)?))?,
    };
    let mut index = repo.lock_index()?;
    let mut changed = Vec::new();
    for p in paths {
        let prefix = rel_prefix(repo, &work_path(repo, cwd, p)?)?;
        let staged: Vec<String> =
            index.entries.keys().chain(source.keys()).filter(|k| under(k, &prefix)).cloned().collect();
        if staged.is_empty() {
            return Err(Error::NoMatch(p.display().to_string()));
        }
        for path in staged.into_iter().collect::<BTreeSet<_>>() {
            let old = index.entries.get(&path).map(|e| (e.id, e.stat.executable));
            if old == source.get(&path).map(|e| (e.id, e.executable)) {
                continue;
            }
            match source.get(&path) {
                // The work-tree file is not this content (or not known to be): it must be
                // rehashed before it counts as clean.
                Some(e) => {
                    index.entries.insert(
                        path.clone(),
                        IndexEntry { kind: e.kind, id: e.id, stat: Stat::unverified(e.size, e.executable) },
                    );
                }
                None => {
                    index.entries.remove(&path);
                }
            }
            changed.push(path);
        }
    }
    index.save()?;
    Ok(changed)
}
