//! Reading files and tensors of any revision without a checkout: what training code (the
//! Python package) loads checkpoints with. One tensor decodes only its own chunks (and its
//! delta bases' matching chunks); every tensor read is verified against its id.

use std::path::Path;

use super::tensors::{NamedTensor, named_tensors};
use crate::error::{Error, Result};
use crate::object::{DType, EntryKind, ObjectId, ObjectKind, TreeEntry};
use crate::progress::Silent;
use crate::repo::Repository;
use crate::store::StoreError;

/// One tensor's elements, little-endian as in its safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorData {
    /// Header name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// The element bytes.
    pub data: Vec<u8>,
}

/// The `/`-separated path, relative to the repository root, that `path` names: a relative
/// path is taken from the root, an absolute one must lie inside the work tree.
pub fn repo_path(repo: &Repository, path: &Path) -> Result<String> {
    let abs = super::add::work_path(repo, &repo.root, path)?;
    let rel = super::add::rel_prefix(repo, &abs)?;
    if rel.is_empty() {
        return Err(Error::Usage(format!("{} is the repository root, not a file", path.display())));
    }
    Ok(rel)
}

/// One file of one revision.
pub struct FileAt<'r> {
    repo: &'r Repository,
    /// The revision as given, for messages.
    pub rev: String,
    /// The commit it resolved to.
    pub commit: ObjectId,
    /// The path, relative to the root.
    pub path: String,
    /// Its tree entry.
    pub entry: TreeEntry,
}

impl<'r> FileAt<'r> {
    /// Finds `path` (relative to the root, `/`-separated; empty and `.` parts are skipped) in
    /// revision `rev`, reading only the trees on the way to it.
    pub fn open(repo: &'r Repository, rev: &str, path: &str) -> Result<FileAt<'r>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let path = parts.join("/");
        let commit = repo.resolve(rev)?;
        let missing = || Error::NoSuchFile { path: path.clone(), rev: rev.to_string() };
        let mut tree = repo.commit(&commit)?.tree;
        let mut parts = parts.into_iter().peekable();
        while let Some(name) = parts.next() {
            let entry = repo.tree(&tree)?.entries.into_iter().find(|e| e.name == name).ok_or_else(missing)?;
            match (entry.kind, parts.peek().is_some()) {
                (EntryKind::Tree, true) => tree = entry.id,
                (EntryKind::Tree, false) | (_, true) => return Err(missing()),
                (_, false) => {
                    return Ok(FileAt { repo, rev: rev.to_string(), commit, path, entry });
                }
            }
        }
        Err(missing())
    }

    /// The file's bytes (a safetensors file rebuilt byte for byte), verified.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        let mut out = allocate(self.entry.size, &self.entry.id)?;
        crate::worktree::write_content(&self.repo.odb, self.entry.kind, &self.entry.id, &mut out, &Silent)?;
        Ok(out)
    }

    /// The tensors of a safetensors file, in file order, without decoding any.
    pub fn tensors(&self) -> Result<Vec<NamedTensor>> {
        if self.entry.kind != EntryKind::TensorFile {
            return Err(Error::NotSafetensors { path: self.path.clone(), rev: self.rev.clone() });
        }
        Ok(named_tensors(&self.repo.odb.tensor_file(&self.entry.id)?))
    }

    /// One tensor, decoding only its chunks.
    pub fn tensor(&self, name: &str) -> Result<TensorData> {
        let t = self.tensors()?.into_iter().find(|t| t.name == name).ok_or_else(|| Error::NoSuchTensor {
            name: name.to_string(),
            path: self.path.clone(),
            rev: self.rev.clone(),
        })?;
        let len = self.checked_len(&t)?;
        let mut data = allocate(len, &t.id)?;
        self.repo.odb.stream(&t.id, |b| append(&mut data, len, b))?;
        Ok(TensorData { name: t.name, dtype: t.dtype, shape: t.shape, data })
    }

    /// Every tensor of the file, in file order, decoding chunks of all of them in parallel.
    pub fn load(&self) -> Result<Vec<TensorData>> {
        let tensors = self.tensors()?;
        let ids: Vec<ObjectId> = tensors.iter().map(|t| t.id).collect();
        let mut out = Vec::with_capacity(tensors.len());
        for t in tensors {
            let len = self.checked_len(&t)?;
            let data = allocate(len, &t.id)?;
            out.push((len, TensorData { name: t.name, dtype: t.dtype, shape: t.shape, data }));
        }
        // Chunks arrive in order and never span two objects: each fills the first tensor
        // that still has room.
        let mut next = 0;
        self.repo.odb.stream_all(&ids, |b| {
            while out.get(next).is_some_and(|(len, t)| t.data.len() as u64 == *len) {
                next += 1;
            }
            match out.get_mut(next) {
                Some((len, t)) => append(&mut t.data, *len, b),
                None => Err(std::io::Error::other("more data than the tensors hold")),
            }
        })?;
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    /// The tensor's byte length, after checking that its object agrees with the file header.
    fn checked_len(&self, t: &NamedTensor) -> Result<u64> {
        let corrupt = |what: String| Error::Store(StoreError::Corrupt { id: t.id, what });
        let elements = t.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let len = elements
            .and_then(|n| t.dtype.byte_len(n))
            .ok_or_else(|| corrupt(format!("tensor {:?} has an impossible shape {:?}", t.name, t.shape)))?;
        let h = self.repo.odb.header(&t.id)?;
        if h.kind != ObjectKind::Tensor || h.meta.dtype != t.dtype || h.meta.shape != t.shape || h.meta.data_len != len
        {
            return Err(corrupt(format!("tensor {:?} does not match the header of {}", t.name, self.path)));
        }
        Ok(len)
    }
}

/// An empty buffer for `len` bytes, or an error (not an abort) when memory cannot hold them.
fn allocate(len: u64, id: &ObjectId) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    match usize::try_from(len).ok().map(|n| v.try_reserve_exact(n)) {
        Some(Ok(())) => Ok(v),
        _ => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!("cannot allocate {len} bytes for object {}", id.short()),
        ))),
    }
}

/// Appends `b` to a buffer that must not grow past `len` bytes.
fn append(buf: &mut Vec<u8>, len: u64, b: &[u8]) -> std::io::Result<()> {
    if buf.len() as u64 + b.len() as u64 > len {
        return Err(std::io::Error::other("an object holds more data than its header says"));
    }
    buf.extend_from_slice(b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use safetensors::{Dtype, tensor::TensorView};

    use super::*;
    use crate::ops::commit::{CommitOptions, commit};

    fn f32s(v: impl Iterator<Item = f32>) -> Vec<u8> {
        v.flat_map(f32::to_le_bytes).collect()
    }

    /// A tensor to write: name, dtype, shape, bytes.
    type Spec = (&'static str, Dtype, Vec<usize>, Vec<u8>);

    /// Writes a safetensors file of `tensors`; returns its bytes.
    fn write(path: &Path, tensors: &[Spec]) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> =
            tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    fn commit_all(repo: &mut Repository, message: &str) -> ObjectId {
        crate::ops::add::add(repo, &repo.root.clone(), &[PathBuf::from(".")], None, &Silent).unwrap();
        commit(repo, &CommitOptions { message, ..Default::default() }, &Silent).unwrap().commit
    }

    /// A repository with two commits of `m/model.safetensors` (a fine-tune of the first,
    /// stored as deltas over small chunks) and a `config.json`; returns the two file versions.
    fn two_commits() -> (tempfile::TempDir, Repository, Vec<Spec>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repository::init(dir.path()).unwrap();
        repo.config.user = Some(crate::config::User { name: "T".into(), email: "t@example.com".into() });
        repo.config.pack.chunk_elems = 16;
        let base = vec![
            ("w", Dtype::F32, vec![10, 10], f32s((0..100).map(|i| i as f32 * 0.01))),
            ("b", Dtype::BF16, vec![70], (0..140).map(|i| (i * 7) as u8).collect()),
            ("ids", Dtype::I64, vec![3], [1i64, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("empty", Dtype::F16, vec![0, 4], Vec::new()),
        ];
        let file = dir.path().join("m/model.safetensors");
        let first = write(&file, &base);
        std::fs::write(dir.path().join("config.json"), b"{}\n").unwrap();
        commit_all(&mut repo, "base");
        let mut tuned = base.clone();
        tuned[0].3 = f32s((0..100).map(|i| i as f32 * 0.01 + if i % 3 == 0 { 1e-4 } else { 0.0 }));
        write(&file, &tuned);
        commit_all(&mut repo, "tuned");
        (dir, repo, base, first)
    }

    #[test]
    fn an_older_revision_loads_tensor_by_tensor_and_whole_without_a_checkout() {
        let (_dir, repo, base, first) = two_commits();
        let f = FileAt::open(&repo, "HEAD~1", "m/model.safetensors").unwrap();
        let loaded = f.load().unwrap();
        assert_eq!(loaded.len(), base.len());
        for (name, _, shape, bytes) in &base {
            let got = loaded.iter().find(|t| t.name == *name).unwrap();
            assert_eq!(&got.data, bytes, "{name}");
            assert_eq!(got.shape, shape.iter().map(|&d| d as u64).collect::<Vec<_>>());
            assert_eq!(f.tensor(name).unwrap(), *got, "{name} alone");
        }
        assert_eq!(loaded.iter().find(|t| t.name == "b").unwrap().dtype, DType::BF16);
        assert_eq!(f.bytes().unwrap(), first, "the file rebuilt byte for byte");
        let head = FileAt::open(&repo, "HEAD", "m/model.safetensors").unwrap();
        assert_ne!(head.tensor("w").unwrap().data, base[0].3, "HEAD has the fine-tune");
    }

    #[test]
    fn missing_paths_tensors_and_revisions_are_named() {
        let (_dir, repo, _, _) = two_commits();
        let err = |r: Result<_>| r.map(|_: FileAt<'_>| ()).unwrap_err();
        assert!(matches!(err(FileAt::open(&repo, "HEAD", "nope")), Error::NoSuchFile { .. }));
        assert!(matches!(err(FileAt::open(&repo, "HEAD", "m")), Error::NoSuchFile { .. }), "a directory");
        assert!(matches!(err(FileAt::open(&repo, "HEAD", "config.json/x")), Error::NoSuchFile { .. }));
        assert!(matches!(err(FileAt::open(&repo, "nope", "config.json")), Error::UnknownRevision(_)));
        let config = FileAt::open(&repo, "HEAD", "config.json").unwrap();
        assert_eq!(config.bytes().unwrap(), b"{}\n");
        assert!(matches!(config.load(), Err(Error::NotSafetensors { .. })));
        let model = FileAt::open(&repo, "HEAD", "./m//model.safetensors").unwrap();
        let e = model.tensor("x").unwrap_err();
        assert_eq!(e.to_string(), "m/model.safetensors in HEAD has no tensor named \"x\"");
        assert!(e.hint().is_some());
    }

    #[test]
    fn paths_are_taken_from_the_root_or_absolute_inside_it() {
        let (dir, repo, _, _) = two_commits();
        assert_eq!(repo_path(&repo, Path::new("m/../m/model.safetensors")).unwrap(), "m/model.safetensors");
        assert_eq!(repo_path(&repo, &dir.path().join("config.json")).unwrap(), "config.json");
        assert!(matches!(repo_path(&repo, Path::new("/elsewhere/x")), Err(Error::OutsideRepository(_))));
        assert!(repo_path(&repo, Path::new(".")).is_err());
    }
}
