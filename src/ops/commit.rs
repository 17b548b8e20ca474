//! `mlv commit`: snapshot the index as a commit and advance the branch.

use serde::Serialize;

use super::add::{AddReport, stage_files};
use super::status::tracked_files;
use crate::error::{Error, Result};
use crate::object::{Commit, ObjectId, ObjectKind};
use crate::progress::Progress;
use crate::refs::{HEADS, Head};
use crate::repo::{FlatEntry, FlatTree, Repository};

/// Options of `mlv commit`.
#[derive(Debug, Default)]
pub struct CommitOptions<'a> {
    /// The message.
    pub message: &'a str,
    /// Stage modified and deleted tracked files first.
    pub all: bool,
    /// A revision whose same paths serve as delta bases for what `all` stages.
    pub base: Option<&'a str>,
}

/// What `commit` did.
#[derive(Debug, Serialize)]
pub struct CommitReport {
    /// The new commit.
    pub commit: ObjectId,
    /// Branch advanced, or None when detached.
    pub branch: Option<String>,
    /// Files in the snapshot.
    pub files: usize,
    /// Logical bytes of the snapshot.
    pub logical_bytes: u64,
    /// What `-a` staged.
    pub staged: AddReport,
}

/// The index as a flat tree.
pub fn index_tree(index: &crate::index::Index) -> FlatTree {
    index
        .entries
        .iter()
        .map(|(p, e)| {
            (p.clone(), FlatEntry { kind: e.kind, id: e.id, size: e.stat.size, executable: e.stat.executable })
        })
        .collect()
}

/// Commits the index (after staging tracked changes with `all`).
pub fn commit(repo: &mut Repository, opts: &CommitOptions<'_>, progress: &dyn Progress) -> Result<CommitReport> {
    let author = repo.signature()?;
    let mut index = repo.lock_index()?;
    let mut staged = AddReport::default();
    if opts.all {
        let found = tracked_files(repo, &index)?;
        staged = stage_files(repo, &mut index, &found, opts.base, progress)?;
        let present: std::collections::HashSet<String> = found.into_iter().map(|f| f.rel).collect();
        index.entries.retain(|k, _| present.contains(k));
        repo.reload()?;
    }
    let head = repo.head_commit()?;
    let files = index_tree(&index);
    let mut writer = repo.writer()?;
    let tree = repo.write_tree(&mut writer, &files)?;
    let unchanged = match head {
        Some(h) => repo.commit(&h)?.tree == tree,
        None => files.is_empty(),
    };
    if unchanged {
        return Err(Error::NothingToCommit);
    }
    let commit = Commit {
        tree,
        parents: head.into_iter().collect(),
        committer: author.clone(),
        author,
        git: crate::provenance::git_source(&repo.root),
        message: normalise_message(opts.message),
    };
    let id = writer.put(ObjectKind::Commit, &commit.encode())?;
    writer.finish()?;
    index.save()?;
    let branch = match repo.refs.head()? {
        Head::Branch(b) => {
            repo.refs.update(&format!("{HEADS}{b}"), id, head)?;
            Some(b)
        }
        Head::Detached(_) => {
            repo.refs.set_head(&Head::Detached(id))?;
            None
        }
    };
    repo.reload()?;
    Ok(CommitReport {
        commit: id,
        branch,
        files: files.len(),
        logical_bytes: files.values().map(|f| f.size).sum(),
        staged,
    })
}

/// Messages end with exactly one newline.
fn normalise_message(m: &str) -> String {
    format!("{}\n", m.trim_end())
}
