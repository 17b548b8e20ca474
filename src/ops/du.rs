//! `mlv du`: logical versus stored bytes of a commit, per file and per tensor, and how each
//! tensor is stored (duplicate, delta against which base, standalone, raw).

use std::collections::HashMap;

use serde::Serialize;

use super::tensors::named_tensors;
use crate::error::Result;
use crate::object::{EntryKind, ObjectId, Segment};
use crate::repo::Repository;

/// Where an object first appears in history.
#[derive(Debug, Clone, Serialize)]
pub struct Location {
    /// Commit (short id).
    pub commit: String,
    /// File path.
    pub path: String,
    /// Tensor name, for tensors.
    pub tensor: Option<String>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tensor {
            Some(t) => write!(f, "{}:{}@{}", self.path, t, self.commit),
            None => write!(f, "{}@{}", self.path, self.commit),
        }
    }
}

/// How a tensor (or blob) of the commit is stored.
#[derive(Debug, Serialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub enum Storage {
    /// Stored by an earlier commit or earlier file: costs nothing here.
    Duplicate {
        /// Where it is charged.
        of: Location,
    },
    /// Stored as a delta.
    Delta {
        /// The base, where it first appears (if it is in this history).
        base: Option<Location>,
        /// The base object.
        base_id: ObjectId,
        /// Codecs of its chunks.
        codecs: Vec<String>,
    },
    /// Stored alone, compressed.
    Standalone {
        /// Codecs of its chunks.
        codecs: Vec<String>,
    },
    /// Stored uncompressed.
    Raw,
}

/// One tensor's accounting.
#[derive(Debug, Serialize)]
pub struct TensorUsage {
    /// Name.
    pub name: String,
    /// Element bytes.
    pub logical: u64,
    /// Bytes this commit pays for it.
    pub stored: u64,
    /// How.
    pub storage: Storage,
}

/// One file's accounting.
#[derive(Debug, Serialize)]
pub struct FileUsage {
    /// Path.
    pub path: String,
    /// File size.
    pub logical: u64,
    /// Bytes this commit pays for it (tensors + header object).
    pub stored: u64,
    /// Per tensor, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<TensorUsage>,
}

/// A commit's accounting.
#[derive(Debug, Serialize)]
pub struct Usage {
    /// Commit.
    pub commit: ObjectId,
    /// Sum of file sizes.
    pub logical: u64,
    /// Stored bytes this commit added (files, trees and the commit object).
    pub stored: u64,
    /// Files.
    pub files: Vec<FileUsage>,
}

/// First location of every object in the history of `commit`, oldest commit first.
fn first_locations(repo: &Repository, commit: ObjectId) -> Result<HashMap<ObjectId, Location>> {
    let mut chain = vec![commit];
    let mut i = 0;
    while i < chain.len() {
        for p in repo.parents(&chain[i])? {
            if !chain.contains(&p) {
                chain.push(p);
            }
        }
        i += 1;
    }
    let mut out = HashMap::new();
    for c in chain.into_iter().rev() {
        for (path, e) in repo.commit_files(Some(c))? {
            let loc = |tensor: Option<String>| Location { commit: c.short(), path: path.clone(), tensor };
            out.entry(e.id).or_insert_with(|| loc(None));
            if e.kind == EntryKind::TensorFile {
                for t in named_tensors(&repo.odb.tensor_file(&e.id)?) {
                    out.entry(t.id).or_insert_with(|| loc(Some(t.name)));
                }
            }
            if e.kind == EntryKind::ChunkedFile {
                for (chunk, _) in repo.odb.chunked_file(&e.id)?.chunks {
                    out.entry(chunk).or_insert_with(|| loc(None));
                }
            }
        }
    }
    Ok(out)
}

fn storage_of(
    repo: &Repository,
    id: &ObjectId,
    first: &HashMap<ObjectId, Location>,
    here: &Location,
) -> Result<(u64, Storage)> {
    if let Some(loc) =
        first.get(id).filter(|l| l.commit != here.commit || l.path != here.path || l.tensor != here.tensor)
    {
        return Ok((0, Storage::Duplicate { of: loc.clone() }));
    }
    let info = repo.odb.storage(id)?;
    let codecs: Vec<String> = info.codecs.iter().map(|(c, n)| format!("{c}×{n}")).collect();
    let storage = match info.bases.first() {
        Some(b) => Storage::Delta { base: first.get(b).cloned(), base_id: *b, codecs },
        None if info.codecs.iter().all(|(c, _)| c == "raw") => Storage::Raw,
        None => Storage::Standalone { codecs },
    };
    Ok((info.stored, storage))
}

/// Accounts for `commit`; per-tensor rows when `tensors` is set.
pub fn du(repo: &Repository, commit: ObjectId, tensors: bool) -> Result<Usage> {
    let first = first_locations(repo, commit)?;
    let short = commit.short();
    let mut files = Vec::new();
    for (path, e) in repo.commit_files(Some(commit))? {
        let here = Location { commit: short.clone(), path: path.clone(), tensor: None };
        let (mut stored, _) = storage_of(repo, &e.id, &first, &here)?;
        let mut rows = Vec::new();
        if e.kind == EntryKind::TensorFile && stored > 0 {
            let tf = repo.odb.tensor_file(&e.id)?;
            let named = named_tensors(&tf);
            for t in &named {
                let here = Location { tensor: Some(t.name.clone()), ..here.clone() };
                let (s, storage) = storage_of(repo, &t.id, &first, &here)?;
                stored += s;
                let logical = t.dtype.byte_len(t.shape.iter().product()).unwrap_or(0);
                rows.push(TensorUsage { name: t.name.clone(), logical, stored: s, storage });
            }
            for seg in tf.segments.iter().filter(|s| matches!(s, Segment::Bytes { .. })) {
                stored += repo.odb.find(&seg.id()).map_or(0, |(_, r)| r.len);
            }
        }
        if e.kind == EntryKind::ChunkedFile && stored > 0 {
            // Only the chunks this file introduced; the others are stored for an earlier one.
            let chunks: std::collections::HashSet<ObjectId> =
                repo.odb.chunked_file(&e.id)?.chunks.into_iter().map(|c| c.0).collect();
            for chunk in chunks {
                stored += storage_of(repo, &chunk, &first, &here)?.0;
            }
        }
        files.push(FileUsage { path, logical: e.size, stored, tensors: if tensors { rows } else { Vec::new() } });
    }
    let logical = files.iter().map(|f| f.logical).sum();
    let stored = super::log::stored_added(repo, &commit)?;
    Ok(Usage { commit, logical, stored, files })
}
