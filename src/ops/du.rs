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
    /// Commit.
    pub commit: ObjectId,
    /// File path.
    pub path: String,
    /// Tensor name, for tensors.
    pub tensor: Option<String>,
}

impl Location {
    /// True when both name the same file and tensor (in any commit).
    pub fn same_place(&self, other: &Location) -> bool {
        self.path == other.path && self.tensor == other.tensor
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tensor {
            Some(t) => write!(f, "{}:{}@{}", self.path, t, self.commit.short()),
            None => write!(f, "{}@{}", self.path, self.commit.short()),
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
        /// True when the base is the same file's same tensor in the first parent.
        parent_tensor: bool,
        /// Codecs of its chunks.
        codecs: Vec<CodecChunks>,
    },
    /// Stored alone, compressed.
    Standalone {
        /// Codecs of its chunks.
        codecs: Vec<CodecChunks>,
    },
    /// Stored uncompressed.
    Raw,
}

/// How many chunks of an object one codec stores.
#[derive(Debug, Clone, Serialize)]
pub struct CodecChunks {
    /// Codec name (`raw`, `grouped`, `bitx-xor`, `bitx-diff-ctx`, `bitx-diff-low`,
    /// `bitx-diff-mask`).
    pub codec: String,
    /// Chunks it stores.
    pub chunks: u64,
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
    /// Stored bytes of the whole repository (every pack).
    pub repository_stored: u64,
    /// Bytes of spare files kept by checkout for the next ([`crate::spare`]), not counted above.
    pub spare_bytes: u64,
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
            let loc = |tensor: Option<String>| Location { commit: c, path: path.clone(), tensor };
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

/// The tensors of the first parent, by file path and tensor name: what "the parent's tensor" is.
type ParentTensors = HashMap<(String, String), ObjectId>;

fn parent_tensors(repo: &Repository, commit: ObjectId) -> Result<ParentTensors> {
    let mut out = HashMap::new();
    let Some(parent) = repo.parents(&commit)?.first().copied() else { return Ok(out) };
    for (path, e) in repo.commit_files(Some(parent))? {
        if e.kind == EntryKind::TensorFile {
            for t in named_tensors(&repo.odb.tensor_file(&e.id)?) {
                out.insert((path.clone(), t.name), t.id);
            }
        }
    }
    Ok(out)
}

/// Where an object's accounting is looked up.
struct Context<'a> {
    first: HashMap<ObjectId, Location>,
    parent: ParentTensors,
    repo: &'a Repository,
}

impl Context<'_> {
    fn is_parent_tensor(&self, here: &Location, id: &ObjectId) -> bool {
        let Some(name) = &here.tensor else { return false };
        self.parent.get(&(here.path.clone(), name.clone())) == Some(id)
    }

    fn storage_of(&self, id: &ObjectId, here: &Location) -> Result<(u64, Storage)> {
        if let Some(loc) = self.first.get(id).filter(|l| l.commit != here.commit || !l.same_place(here)) {
            return Ok((0, Storage::Duplicate { of: loc.clone() }));
        }
        let info = self.repo.odb.storage(id)?;
        let codecs: Vec<CodecChunks> =
            info.codecs.iter().map(|(c, n)| CodecChunks { codec: c.clone(), chunks: *n }).collect();
        let storage = match info.bases.first() {
            Some(b) => Storage::Delta {
                base: self.first.get(b).cloned(),
                base_id: *b,
                parent_tensor: self.is_parent_tensor(here, b),
                codecs,
            },
            None if info.codecs.iter().all(|(c, _)| c == "raw") => Storage::Raw,
            None => Storage::Standalone { codecs },
        };
        Ok((info.stored, storage))
    }

    /// Per-tensor rows of a tensor file this commit stores, and the bytes of its non-tensor parts.
    fn tensor_rows(&self, id: &ObjectId, here: &Location) -> Result<(Vec<TensorUsage>, u64)> {
        let tf = self.repo.odb.tensor_file(id)?;
        let mut rows = Vec::new();
        for t in &named_tensors(&tf) {
            let here = Location { tensor: Some(t.name.clone()), ..here.clone() };
            let (stored, storage) = self.storage_of(&t.id, &here)?;
            let logical = t.dtype.byte_len(t.shape.iter().product()).unwrap_or(0);
            rows.push(TensorUsage { name: t.name.clone(), logical, stored, storage });
        }
        let other = tf
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Bytes { .. }))
            .map(|seg| self.repo.odb.find(&seg.id()).map_or(0, |(_, r)| r.len))
            .sum();
        Ok((rows, other))
    }
}

/// Accounts for `commit`; per-tensor rows when `tensors` is set.
pub fn du(repo: &Repository, commit: ObjectId, tensors: bool) -> Result<Usage> {
    let cx = Context { first: first_locations(repo, commit)?, parent: parent_tensors(repo, commit)?, repo };
    let mut files = Vec::new();
    for (path, e) in repo.commit_files(Some(commit))? {
        let here = Location { commit, path: path.clone(), tensor: None };
        let (mut stored, _) = cx.storage_of(&e.id, &here)?;
        let mut rows = Vec::new();
        if e.kind == EntryKind::TensorFile && stored > 0 {
            let (tensor_rows, other) = cx.tensor_rows(&e.id, &here)?;
            stored += tensor_rows.iter().map(|r| r.stored).sum::<u64>() + other;
            rows = tensor_rows;
        }
        if e.kind == EntryKind::ChunkedFile && stored > 0 {
            // Only the chunks this file introduced; the others are stored for an earlier one.
            let chunks: std::collections::HashSet<ObjectId> =
                repo.odb.chunked_file(&e.id)?.chunks.into_iter().map(|c| c.0).collect();
            for chunk in chunks {
                stored += cx.storage_of(&chunk, &here)?.0;
            }
        }
        files.push(FileUsage { path, logical: e.size, stored, tensors: if tensors { rows } else { Vec::new() } });
    }
    let logical = files.iter().map(|f| f.logical).sum();
    let stored = super::log::stored_added(repo, &commit)?;
    let repository_stored = repo.odb.packs().iter().map(|p| p.len).sum();
    let spare_bytes = crate::spare::held(&repo.dir);
    Ok(Usage { commit, logical, stored, repository_stored, spare_bytes, files })
}
