//! `mlv._mlv`: the Python bindings of the mlv library, kept thin. Every operation is a library
//! call made with the GIL released; tensors cross over as bytes that `mlv/__init__.py` views
//! as numpy arrays, and reports as JSON that it parses.

use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use mlv::ops::commit::CommitOptions;
use mlv::ops::diff::Side;
use mlv::ops::read::{FileAt, TensorData};
use mlv::progress::Silent;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

create_exception!(mlv, MlvError, PyException, "An mlv operation failed: `str(e)` is the message the CLI prints.");
create_exception!(mlv, NotARepositoryError, MlvError, "No mlv repository at or above the path.");
create_exception!(mlv, UnknownRevisionError, MlvError, "A revision that names no commit, or several.");
create_exception!(mlv, NotFoundError, MlvError, "A path or tensor that the revision does not have.");
create_exception!(mlv, NothingToCommitError, MlvError, "Commit with nothing staged.");
create_exception!(mlv, LockedError, MlvError, "Another mlv command holds a lock on the repository.");
create_exception!(mlv, CorruptError, MlvError, "The repository is damaged.");

/// The Python exception for a library error: the message and causes as the CLI prints them,
/// with the hint on its own line, also as the attributes `message` and `hint`.
fn to_py(e: mlv::Error) -> PyErr {
    use mlv::Error as E;
    use mlv::store::StoreError;
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Library errors usually embed their cause; saying it twice adds nothing.
        if !message.contains(&cause_text) {
            message.push_str(&format!("\ncaused by: {cause_text}"));
        }
        source = cause.source();
    }
    let hint = e.hint();
    let text = match &hint {
        Some(h) => format!("{message}\nhint: {h}"),
        None => message.clone(),
    };
    let err = match &e {
        E::NotARepository(_) => NotARepositoryError::new_err(text),
        E::UnknownRevision(_) | E::AmbiguousRevision(_) => UnknownRevisionError::new_err(text),
        E::NoSuchFile { .. } | E::NoSuchTensor { .. } | E::NoMatch(_) => NotFoundError::new_err(text),
        E::NothingToCommit => NothingToCommitError::new_err(text),
        E::Lock(_) | E::Ref(mlv::refs::RefError::Locked(_)) | E::Index(mlv::index::IndexError::Locked(_)) => {
            LockedError::new_err(text)
        }
        E::Store(StoreError::Corrupt { .. } | StoreError::Unreadable { .. }) => CorruptError::new_err(text),
        _ => MlvError::new_err(text),
    };
    Python::attach(|py| {
        let value = err.value(py);
        // Setting attributes on a fresh exception cannot fail in practice; if it did, the
        // exception still carries the whole text.
        let _ = value.setattr("message", message);
        let _ = value.setattr("hint", hint);
    });
    err
}

/// Runs a library call with the GIL released.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> mlv::Result<T> + Send) -> PyResult<T> {
    py.detach(f).map_err(to_py)
}

/// Serialises a report as JSON for `mlv/__init__.py` to parse.
fn json<T: serde::Serialize>(value: &T) -> mlv::Result<String> {
    serde_json::to_string(value).map_err(|e| mlv::Error::Io(std::io::Error::other(e)))
}

/// A tensor as Python receives it: name, safetensors dtype name, shape, element bytes.
type PyTensor<'py> = (String, &'static str, Vec<u64>, Bound<'py, PyByteArray>);

fn to_py_tensor(py: Python<'_>, t: TensorData) -> PyTensor<'_> {
    let bytes = PyByteArray::new(py, &t.data);
    (t.name, t.dtype.name(), t.shape, bytes)
}

/// How `files` names a kind of file.
fn kind_name(kind: mlv::object::EntryKind) -> &'static str {
    match kind {
        mlv::object::EntryKind::TensorFile => "safetensors",
        mlv::object::EntryKind::Blob => "blob",
        mlv::object::EntryKind::ChunkedFile => "chunked",
        mlv::object::EntryKind::Tree => "tree",
    }
}

/// An open repository (the raw class behind `mlv.Repository`).
#[pyclass(frozen, module = "mlv._mlv", name = "Repository")]
struct PyRepository {
    /// Reads share it; `add` and `commit` take it alone.
    repo: RwLock<mlv::Repository>,
}

impl PyRepository {
    fn read(&self) -> mlv::Result<RwLockReadGuard<'_, mlv::Repository>> {
        self.repo.read().map_err(|_| poisoned())
    }

    fn write(&self) -> mlv::Result<RwLockWriteGuard<'_, mlv::Repository>> {
        self.repo.write().map_err(|_| poisoned())
    }
}

fn poisoned() -> mlv::Error {
    mlv::Error::Usage("an earlier call on this Repository failed midway; open it again".into())
}

/// Opens `path` (relative to the root, or absolute inside it) of revision `rev`.
fn open_file<'r>(repo: &'r mlv::Repository, rev: &str, path: &std::path::Path) -> mlv::Result<FileAt<'r>> {
    FileAt::open(repo, rev, &mlv::ops::read::repo_path(repo, path)?)
}

#[pymethods]
impl PyRepository {
    /// Opens the repository at or above `path`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let repo = detached(py, || mlv::Repository::discover(&path))?;
        Ok(PyRepository { repo: RwLock::new(repo) })
    }

    /// The work-tree root (for a bare repository, its directory).
    #[getter]
    fn root(&self) -> PyResult<PathBuf> {
        Ok(self.read().map_err(to_py)?.root.clone())
    }

    /// True for a repository without a work tree.
    #[getter]
    fn bare(&self) -> PyResult<bool> {
        Ok(self.read().map_err(to_py)?.bare)
    }

    /// The commit id a revision names.
    fn resolve(&self, py: Python<'_>, rev: String) -> PyResult<String> {
        detached(py, || Ok(self.read()?.resolve(&rev)?.to_hex()))
    }

    /// The commit HEAD points at, or None before the first commit.
    fn head(&self, py: Python<'_>) -> PyResult<Option<String>> {
        detached(py, || Ok(self.read()?.head_commit()?.map(|c| c.to_hex())))
    }

    /// Files of a revision: path -> (kind, logical size).
    fn files(&self, py: Python<'_>, rev: String) -> PyResult<Vec<(String, &'static str, u64)>> {
        detached(py, || {
            let repo = self.read()?;
            let files = repo.commit_files(Some(repo.resolve(&rev)?))?;
            Ok(files.into_iter().map(|(p, e)| (p, kind_name(e.kind), e.size)).collect())
        })
    }

    /// Tensors of a safetensors file: (name, dtype, shape), in file order, nothing decoded.
    fn tensor_info(
        &self,
        py: Python<'_>,
        rev: String,
        path: PathBuf,
    ) -> PyResult<Vec<(String, &'static str, Vec<u64>)>> {
        detached(py, || {
            let repo = self.read()?;
            let tensors = open_file(&repo, &rev, &path)?.tensors()?;
            Ok(tensors.into_iter().map(|t| (t.name, t.dtype.name(), t.shape)).collect())
        })
    }

    /// Every tensor of a safetensors file, in file order.
    fn load<'py>(&self, py: Python<'py>, rev: String, path: PathBuf) -> PyResult<Vec<PyTensor<'py>>> {
        let tensors = detached(py, || {
            let repo = self.read()?;
            open_file(&repo, &rev, &path)?.load()
        })?;
        Ok(tensors.into_iter().map(|t| to_py_tensor(py, t)).collect())
    }

    /// One tensor of a safetensors file, decoding only its chunks.
    fn tensor<'py>(&self, py: Python<'py>, rev: String, path: PathBuf, name: String) -> PyResult<PyTensor<'py>> {
        let t = detached(py, || {
            let repo = self.read()?;
            open_file(&repo, &rev, &path)?.tensor(&name)
        })?;
        Ok(to_py_tensor(py, t))
    }

    /// A file's bytes (a safetensors file rebuilt byte for byte).
    fn read_bytes<'py>(&self, py: Python<'py>, rev: String, path: PathBuf) -> PyResult<Bound<'py, PyByteArray>> {
        let bytes = detached(py, || {
            let repo = self.read()?;
            open_file(&repo, &rev, &path)?.bytes()
        })?;
        Ok(PyByteArray::new(py, &bytes))
    }

    /// `mlv log --json`, each entry with `date` as the CLI prints it.
    #[pyo3(signature = (rev, max_count, stat))]
    fn log(&self, py: Python<'_>, rev: String, max_count: Option<usize>, stat: bool) -> PyResult<String> {
        detached(py, || {
            let repo = self.read()?;
            let start = repo.resolve(&rev)?;
            let entries = mlv::ops::log::log(&repo, start, max_count.unwrap_or(usize::MAX), stat)?;
            let dated: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        let date = mlv::provenance::format_time(e.author.time, e.author.tz_minutes);
                        o.insert("date".into(), date.into());
                    }
                    v
                })
                .collect();
            json(&dated)
        })
    }

    /// `mlv diff --json OLD [NEW]`: NEW None is the work tree.
    #[pyo3(signature = (old, new))]
    fn diff(&self, py: Python<'_>, old: String, new: Option<String>) -> PyResult<String> {
        detached(py, || {
            let repo = self.read()?;
            let old = Side::Commit(repo.resolve(&old)?);
            let new = match new {
                Some(r) => Side::Commit(repo.resolve(&r)?),
                None => {
                    repo.require_worktree()?;
                    Side::WorkTree
                }
            };
            json(&mlv::ops::diff::diff(&repo, &old, &new)?)
        })
    }

    /// `mlv add --json PATHS`, paths relative to the root or absolute.
    #[pyo3(signature = (paths, base))]
    fn add(&self, py: Python<'_>, paths: Vec<PathBuf>, base: Option<String>) -> PyResult<String> {
        detached(py, || {
            let repo = self.write()?;
            repo.require_worktree()?;
            json(&mlv::ops::add::add(&repo, &repo.root, &paths, base.as_deref(), &Silent)?)
        })
    }

    /// `mlv commit`, repacking afterwards when packs have piled up, as the CLI does; returns
    /// the new commit id.
    #[pyo3(signature = (message, all, base))]
    fn commit(&self, py: Python<'_>, message: String, all: bool, base: Option<String>) -> PyResult<String> {
        detached(py, || {
            let mut repo = self.write()?;
            repo.require_worktree()?;
            let opts = CommitOptions { message: &message, all, base: base.as_deref() };
            let report = mlv::ops::commit::commit(&mut repo, &opts, &Silent)?;
            if mlv::ops::gc::needed(&repo) {
                mlv::ops::gc::gc(&mut repo, &Default::default(), &Silent)?;
            }
            Ok(report.commit.to_hex())
        })
    }
}

/// Creates an empty repository in `path` (made if missing), as `mlv init [--bare]`.
#[pyfunction]
#[pyo3(signature = (path, bare))]
fn init(py: Python<'_>, path: PathBuf, bare: bool) -> PyResult<PyRepository> {
    let repo = detached(py, || {
        let root = std::path::absolute(&path)?;
        std::fs::create_dir_all(&root)?;
        if bare { mlv::Repository::init_bare(&root) } else { mlv::Repository::init(&root) }
    })?;
    Ok(PyRepository { repo: RwLock::new(repo) })
}

/// Notes the library gathered for the user (a stale lock taken over, say).
#[pyfunction]
fn drain_notes() -> Vec<String> {
    mlv::notes::drain()
}

/// The native half of the `mlv` package.
#[pymodule]
mod _mlv {
    #[pymodule_export]
    use super::{
        CorruptError, LockedError, MlvError, NotARepositoryError, NotFoundError, NothingToCommitError, PyRepository,
        UnknownRevisionError, drain_notes, init,
    };
}
