//! `mlv add` and `mlv rm`: staging files, storing their objects.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::bases::RepoBases;
use super::status::{Freshness, freshness, tracked_files};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::index::{Index, IndexEntry};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::store::BaseChoice;
use crate::worktree::{self, FoundFile};

/// What `add` did.
#[derive(Debug, Default, Serialize)]
pub struct AddReport {
    /// Files newly staged or whose staged content changed.
    pub staged: Vec<String>,
    /// Files whose deletion was staged.
    pub removed: Vec<String>,
    /// Logical bytes of the staged files.
    pub logical_bytes: u64,
    /// Bytes written to the new pack.
    pub stored_bytes: u64,
    /// Tensors stored standalone, as deltas, or found already stored.
    pub tensors_standalone: usize,
    /// Tensors stored as deltas.
    pub tensors_delta: usize,
    /// Tensors already in the repository.
    pub tensors_duplicate: usize,
    /// Paths under the paths that were not stored, and why.
    pub skipped: Vec<crate::worktree::Skipped>,
    /// Files found under the paths (staged or not): 0 for an empty directory.
    pub files_found: usize,
}

/// Converts a user path (relative to `cwd`) into an absolute path inside the work tree.
pub fn work_path(repo: &Repository, cwd: &Path, p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(cwd.join(p))?;
    let norm: PathBuf = abs.components().fold(PathBuf::new(), |mut acc, c| {
        match c {
            std::path::Component::ParentDir => {
                acc.pop();
            }
            std::path::Component::CurDir => {}
            other => acc.push(other),
        }
        acc
    });
    if norm.starts_with(&repo.root) { Ok(norm) } else { Err(Error::OutsideRepository(p.to_path_buf())) }
}

/// The `/`-separated prefix a work path stands for ("" for the root).
pub fn rel_prefix(repo: &Repository, abs: &Path) -> Result<String> {
    if abs == repo.root {
        return Ok(String::new());
    }
    Ok(worktree::relative(&repo.root, abs)?)
}

/// True if `path` is `prefix` itself or lies under it.
pub fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
}

/// Stages `paths`: stores new content and records it in the index. Deleted files under the
/// paths are unstaged. `base` names a revision whose same paths serve as delta bases.
pub fn add(
    repo: &Repository,
    cwd: &Path,
    paths: &[PathBuf],
    base: Option<&str>,
    progress: &dyn Progress,
) -> Result<AddReport> {
    let mut index = repo.lock_index()?;
    let mut found: Vec<FoundFile> = Vec::new();
    let mut skipped = Vec::new();
    let mut prefixes = Vec::new();
    for p in paths {
        let abs = work_path(repo, cwd, p)?;
        if abs.strip_prefix(&repo.root).is_ok_and(|r| r.components().any(|c| c.as_os_str() == crate::repo::DIR_NAME)) {
            return Err(Error::Usage(format!(
                "refusing to add {}: .mlv is mlv's own repository directory, never tracked",
                p.display()
            )));
        }
        let prefix = rel_prefix(repo, &abs)?;
        if abs.exists() {
            let scan = worktree::scan(&repo.root, &abs)?;
            found.extend(scan.files);
            skipped.extend(scan.skipped);
        } else if !index.entries.keys().any(|k| under(k, &prefix)) {
            return Err(Error::NoMatch(p.display().to_string()));
        }
        prefixes.push(prefix);
    }
    // Tracked files stay tracked even when an ignore rule now matches them.
    let scanned: HashSet<String> = found.iter().map(|f| f.rel.clone()).collect();
    let ignored_tracked = tracked_files(repo, &index)?
        .into_iter()
        .filter(|f| !scanned.contains(&f.rel) && prefixes.iter().any(|p| under(&f.rel, p)));
    found.extend(ignored_tracked);
    let mut report = stage_files(repo, &mut index, &found, base, progress)?;
    report.skipped = skipped;
    report.files_found = found.len();
    let present: HashSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    let gone: Vec<String> = index
        .entries
        .keys()
        .filter(|k| prefixes.iter().any(|p| under(k, p)) && !present.contains(k.as_str()))
        .cloned()
        .collect();
    for g in gone {
        index.entries.remove(&g);
        report.removed.push(g);
    }
    index.save()?;
    Ok(report)
}

/// Hashes and stores the files not already staged with the same stat, updating `index`.
/// The new pack is durable before the caller saves the index that refers to it.
pub fn stage_files(
    repo: &Repository,
    index: &mut Index,
    files: &[FoundFile],
    base: Option<&str>,
    progress: &dyn Progress,
) -> Result<AddReport> {
    let todo: Vec<&FoundFile> = files.iter().filter(|f| !index.is_stat_clean(&f.rel, &f.stat)).collect();
    let mut report = AddReport::default();
    if todo.is_empty() {
        return Ok(report);
    }
    let mut bases = RepoBases::new(repo, repo.head_commit()?, base)?;
    progress.start("adding", todo.iter().map(|f| f.stat.size).sum());
    let mut writer = repo.writer()?.with_progress(progress);
    let mut updates = Vec::new();
    for f in todo {
        let ingested = worktree::ingest(&f.abs, &f.rel, Some(&mut writer), &mut bases)?;
        for t in &ingested.tensors {
            match t.choice {
                Some(BaseChoice::Standalone) => report.tensors_standalone += 1,
                Some(BaseChoice::Delta(_)) => report.tensors_delta += 1,
                Some(BaseChoice::Duplicate) | None => report.tensors_duplicate += 1,
            }
        }
        // A file whose stat changed but whose content did not (a fresh copy) is refreshed, not staged.
        let changed =
            index.entries.get(&f.rel).is_none_or(|e| e.id != ingested.id || e.stat.executable != f.stat.executable);
        if changed {
            report.logical_bytes += f.stat.size;
            report.staged.push(f.rel.clone());
        }
        updates.push((f.rel.clone(), IndexEntry { kind: ingested.kind, id: ingested.id, stat: f.stat }));
    }
    report.stored_bytes = writer.written_bytes();
    writer.finish()?;
    progress.finish();
    index.entries.extend(updates);
    Ok(report)
}

/// Unstages `paths` and, unless `cached`, deletes them from the work tree (with the
/// directories that leaves empty). Like `git rm`, refuses unless `force` when that would
/// lose changes that are not committed.
pub fn rm(repo: &Repository, cwd: &Path, paths: &[PathBuf], cached: bool, force: bool) -> Result<Vec<String>> {
    let mut index = repo.lock_index()?;
    let mut matched = BTreeSet::new();
    for p in paths {
        let prefix = rel_prefix(repo, &work_path(repo, cwd, p)?)?;
        let hits: Vec<String> = index.entries.keys().filter(|k| under(k, &prefix)).cloned().collect();
        if hits.is_empty() {
            return Err(Error::NoMatch(p.display().to_string()));
        }
        matched.extend(hits);
    }
    if !force {
        let at_risk = uncommitted(repo, &index, &matched, cached)?;
        if !at_risk.is_empty() {
            return Err(Error::UncommittedChanges(at_risk));
        }
    }
    for m in &matched {
        index.entries.remove(m);
        if !cached {
            fsutil::remove_file_and_empty_dirs(&repo.root, m)?;
        }
    }
    index.save()?;
    Ok(matched.into_iter().collect())
}

/// The paths among `paths` whose removal would lose content that is not committed. With
/// `cached` the work-tree file stays, so only staged content found nowhere else counts;
/// otherwise any staged change, or a work-tree file that differs from the index, does.
fn uncommitted(repo: &Repository, index: &Index, paths: &BTreeSet<String>, cached: bool) -> Result<Vec<String>> {
    let head = repo.commit_files(repo.head_commit()?)?;
    let present: BTreeMap<String, FoundFile> =
        tracked_files(repo, index)?.into_iter().map(|f| (f.rel.clone(), f)).collect();
    let mut out = Vec::new();
    for (path, entry) in paths.iter().filter_map(|p| Some((p, index.entries.get(p)?))) {
        let staged = head.get(path).is_none_or(|h| h.id != entry.id || h.executable != entry.stat.executable);
        let in_worktree = match present.get(path) {
            Some(f) => matches!(freshness(index, f)?, Freshness::Clean | Freshness::Refreshed),
            None => false,
        };
        let worktree_changed = present.contains_key(path) && !in_worktree;
        if (cached && staged && !in_worktree) || (!cached && (staged || worktree_changed)) {
            out.push(path.clone());
        }
    }
    Ok(out)
}
