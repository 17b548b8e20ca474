//! Branches, tags and HEAD: small files under `.mlv/`, updated under a lock file with
//! compare-and-swap so concurrent writers cannot silently lose an update.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fsutil;
use crate::object::ObjectId;

/// A ref could not be read or updated.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// Not a valid ref name.
    #[error("invalid ref name {0:?}: use letters, digits, '.', '_', '-' and '/' (no '..', no leading '-' or '.')")]
    BadName(String),
    /// Another process holds the lock.
    #[error("{0} is locked by another mlv process (remove the .lock file if none is running)")]
    Locked(String),
    /// The ref moved since it was read.
    #[error("{name} changed concurrently: expected {expected}, found {found}")]
    Conflict {
        /// The ref.
        name: String,
        /// What the caller saw.
        expected: String,
        /// What is there now.
        found: String,
    },
    /// The name and an existing ref cannot both exist: one would be a directory of the other.
    #[error("{name} clashes with the existing ref {existing}: a ref name cannot also be a directory of refs")]
    Clash {
        /// The ref being created.
        name: String,
        /// The ref in the way.
        existing: String,
    },
    /// The ref file holds garbage.
    #[error("{path}: corrupt ref: {what}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What HEAD says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// On a branch (which may not exist yet, before the first commit).
    Branch(String),
    /// Detached at a commit.
    Detached(ObjectId),
}

/// The refs of one repository.
pub struct Refs {
    dir: PathBuf,
}

/// Prefix of branch refs.
pub const HEADS: &str = "refs/heads/";
/// Prefix of tag refs.
pub const TAGS: &str = "refs/tags/";

/// Checks a short branch or tag name.
pub fn check_name(name: &str) -> Result<(), RefError> {
    let ok = !name.is_empty()
        && !name.starts_with(['-', '/'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name != "HEAD"
        && name.split('/').all(|c| !c.starts_with('.'))
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if ok { Ok(()) } else { Err(RefError::BadName(name.to_string())) }
}

impl Refs {
    /// Refs stored under the repository directory `dir` (`.mlv`).
    pub fn new(dir: &Path) -> Refs {
        Refs { dir: dir.to_path_buf() }
    }

    fn path(&self, full: impl AsRef<Path>) -> PathBuf {
        self.dir.join(full)
    }

    /// Reads HEAD.
    pub fn head(&self) -> Result<Head, RefError> {
        let path = self.path("HEAD");
        let text = std::fs::read_to_string(&path).map_err(|e| fsutil::with_path(&path, e))?;
        let text = text.trim_end();
        if let Some(target) = text.strip_prefix("ref: ") {
            let branch = target.strip_prefix(HEADS).ok_or_else(|| corrupt(&path, "HEAD points outside refs/heads"))?;
            check_name(branch)?;
            return Ok(Head::Branch(branch.to_string()));
        }
        text.parse().map(Head::Detached).map_err(|_| corrupt(&path, "neither a ref nor a commit id"))
    }

    /// Points HEAD at a branch or a commit.
    pub fn set_head(&self, head: &Head) -> Result<(), RefError> {
        let text = match head {
            Head::Branch(b) => {
                check_name(b)?;
                format!("ref: {HEADS}{b}\n")
            }
            Head::Detached(id) => format!("{id}\n"),
        };
        let _lock = Lock::acquire(&self.path("HEAD"))?;
        fsutil::atomic_write(&self.path("HEAD"), text.as_bytes())?;
        Ok(())
    }

    /// Reads a full ref name (`refs/heads/x`); None if it does not exist.
    pub fn read(&self, full: &str) -> Result<Option<ObjectId>, RefError> {
        let path = self.path(full);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim_end().parse().map(Some).map_err(|_| corrupt(&path, "not an object id")),
            // A directory holds longer names (`exp` while `exp/lr` exists), and a file on the
            // way (`exp/lr` while `exp` exists) means there is no such ref either.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(fsutil::with_path(&path, e).into()),
        }
    }

    /// Sets `full` to `new` if it still holds `expected` (None: must not exist).
    pub fn update(&self, full: &str, new: ObjectId, expected: Option<ObjectId>) -> Result<(), RefError> {
        let path = self.path(full);
        self.check_no_clash(full)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _lock = Lock::acquire(&path)?;
        let found = self.read(full)?;
        if found != expected {
            let show = |v: Option<ObjectId>| v.map_or("nothing".to_string(), |i| i.short());
            return Err(RefError::Conflict { name: full.to_string(), expected: show(expected), found: show(found) });
        }
        fsutil::atomic_write(&path, format!("{new}\n").as_bytes())?;
        Ok(())
    }

    /// Deletes a ref if it still holds `expected`.
    pub fn delete(&self, full: &str, expected: ObjectId) -> Result<(), RefError> {
        let path = self.path(full);
        let lock = Lock::acquire(&path)?;
        if self.read(full)? != Some(expected) {
            return Err(RefError::Conflict {
                name: full.into(),
                expected: expected.short(),
                found: "something else".into(),
            });
        }
        std::fs::remove_file(&path)?;
        drop(lock);
        self.prune_empty_dirs(full);
        Ok(())
    }

    /// Refuses `full` when it is a directory of other refs or lies under an existing ref.
    fn check_no_clash(&self, full: &str) -> Result<(), RefError> {
        let clash = |existing: String| Err(RefError::Clash { name: full.to_string(), existing });
        if self.path(full).is_dir() {
            let below = self.list(&format!("{full}/"))?.into_iter().next();
            return clash(below.map_or_else(|| format!("{full}/"), |(name, _)| format!("{full}/{name}")));
        }
        match Path::new(full).ancestors().skip(1).find(|a| self.path(a).is_file()) {
            Some(file) => clash(file.display().to_string()),
            None => Ok(()),
        }
    }

    /// Removes directories emptied by deleting `full`, keeping `refs/<kind>` itself, so the
    /// directory's name is free for a ref again.
    fn prune_empty_dirs(&self, full: &str) {
        let mut dir = Path::new(full).parent();
        while let Some(d) = dir.filter(|d| d.components().count() > 2) {
            if std::fs::remove_dir(self.path(d)).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Short names of all refs under `prefix` (e.g. [`HEADS`]), sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError> {
        let root = self.path(prefix);
        let mut out = Vec::new();
        if !root.exists() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
            let entry = entry.map_err(std::io::Error::from)?;
            let Ok(rel) = entry.path().strip_prefix(&root) else {
                continue;
            };
            let name = rel.to_string_lossy().to_string();
            if entry.file_type().is_file()
                && !name.ends_with(".lock")
                && check_name(&name).is_ok()
                && let Some(id) = self.read(&format!("{prefix}{name}"))?
            {
                out.push((name, id));
            }
        }
        Ok(out)
    }
}

fn corrupt(path: &Path, what: &str) -> RefError {
    RefError::Corrupt { path: path.display().to_string(), what: what.into() }
}

/// An exclusive `<file>.lock`, removed on drop.
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Creates the lock file or fails if it exists.
    pub fn acquire(target: &Path) -> Result<Lock, RefError> {
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                Ok(Lock { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RefError::Locked(target.display().to_string()))
            }
            Err(e) => Err(fsutil::with_path(&path, e).into()),
        }
    }

    /// Like [`Lock::acquire`], but retries for up to `patience` while another process holds it.
    pub fn acquire_waiting(target: &Path, patience: Duration) -> Result<Lock, RefError> {
        let start = Instant::now();
        loop {
            match Lock::acquire(target) {
                Err(RefError::Locked(_)) if start.elapsed() < patience => std::thread::sleep(LOCK_RETRY),
                other => return other,
            }
        }
    }
}

/// How long to sleep between attempts to take a held lock.
const LOCK_RETRY: Duration = Duration::from_millis(10);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_refuses_a_stale_expectation() {
        let dir = tempfile::tempdir().unwrap();
        let refs = Refs::new(dir.path());
        let (a, b) = (ObjectId([1; 32]), ObjectId([2; 32]));
        refs.update("refs/heads/main", a, None).unwrap();
        assert!(matches!(refs.update("refs/heads/main", b, None), Err(RefError::Conflict { .. })));
        refs.update("refs/heads/main", b, Some(a)).unwrap();
        assert_eq!(refs.read("refs/heads/main").unwrap(), Some(b));
        assert_eq!(refs.list(HEADS).unwrap(), vec![("main".to_string(), b)]);
    }

    #[test]
    fn a_name_cannot_also_be_a_directory_of_names_and_deleting_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let refs = Refs::new(dir.path());
        let a = ObjectId([1; 32]);
        refs.update("refs/heads/exp/lr", a, None).unwrap();
        assert_eq!(refs.read("refs/heads/exp").unwrap(), None);
        assert!(matches!(refs.update("refs/heads/exp", a, None), Err(RefError::Clash { .. })));
        assert!(matches!(refs.update("refs/heads/exp/lr/x", a, None), Err(RefError::Clash { .. })));
        refs.delete("refs/heads/exp/lr", a).unwrap();
        assert!(dir.path().join("refs/heads").is_dir());
        refs.update("refs/heads/exp", a, None).unwrap();
    }

    #[test]
    fn a_held_lock_blocks_updates() {
        let dir = tempfile::tempdir().unwrap();
        let refs = Refs::new(dir.path());
        std::fs::create_dir_all(dir.path().join("refs/heads")).unwrap();
        let _held = Lock::acquire(&dir.path().join("refs/heads/main")).unwrap();
        assert!(matches!(refs.update("refs/heads/main", ObjectId([1; 32]), None), Err(RefError::Locked(_))));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "-x", "a..b", "a b", ".hidden", "x.lock", "a//b", "HEAD", "a/"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["main", "exp/v2", "v1.0", "fine_tune-3"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
