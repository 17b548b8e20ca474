//! Refs as small files under the repository directory: `HEAD`, `refs/heads/<name>`, ...,
//! each replaced atomically under `<file>.lock`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{Head, RefError, RefStore, check_full_name, check_name};
use crate::fsutil;
use crate::lock::Lock;
use crate::object::ObjectId;

/// The refs of one repository on disk.
pub struct FsRefs {
    dir: PathBuf,
}

impl FsRefs {
    /// Refs stored under the repository directory `dir` (`.mlv`, or a bare repository).
    pub fn new(dir: &Path) -> FsRefs {
        FsRefs { dir: dir.to_path_buf() }
    }

    fn path(&self, full: impl AsRef<Path>) -> PathBuf {
        self.dir.join(full)
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
}

impl RefStore for FsRefs {
    fn head(&self) -> Result<Head, RefError> {
        let path = self.path("HEAD");
        let text = std::fs::read_to_string(&path).map_err(|e| fsutil::with_path(&path, e))?;
        Head::decode(&text, &path.display().to_string())
    }

    fn set_head(&self, head: &Head) -> Result<(), RefError> {
        let text = head.encode()?;
        let _lock = Lock::acquire(&self.path("HEAD"))?;
        fsutil::atomic_write(&self.path("HEAD"), text.as_bytes())?;
        Ok(())
    }

    fn read(&self, full: &str) -> Result<Option<ObjectId>, RefError> {
        let path = self.path(full);
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim_end()
                .parse()
                .map(Some)
                .map_err(|_| RefError::Corrupt { path: path.display().to_string(), what: "not an object id".into() }),
            // A directory holds longer names (`exp` while `exp/lr` exists), and a file on the
            // way (`exp/lr` while `exp` exists) means there is no such ref either.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(fsutil::with_path(&path, e).into()),
        }
    }

    fn update(&self, full: &str, new: ObjectId, expected: Option<ObjectId>) -> Result<(), RefError> {
        check_full_name(full)?;
        let path = self.path(full);
        self.check_no_clash(full)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _lock = Lock::acquire(&path)?;
        let found = self.read(full)?;
        if found != expected {
            return Err(RefError::conflict(full, expected, found));
        }
        fsutil::atomic_write(&path, format!("{new}\n").as_bytes())?;
        Ok(())
    }

    fn delete(&self, full: &str, expected: ObjectId) -> Result<(), RefError> {
        check_full_name(full)?;
        let path = self.path(full);
        let lock = Lock::acquire(&path)?;
        let found = self.read(full)?;
        if found != Some(expected) {
            return Err(RefError::conflict(full, Some(expected), found));
        }
        std::fs::remove_file(&path)?;
        drop(lock);
        self.prune_empty_dirs(full);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockError;
    use crate::refs::HEADS;

    #[test]
    fn compare_and_swap_refuses_a_stale_expectation() {
        let dir = tempfile::tempdir().unwrap();
        let refs = FsRefs::new(dir.path());
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
        let refs = FsRefs::new(dir.path());
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
        let refs = FsRefs::new(dir.path());
        std::fs::create_dir_all(dir.path().join("refs/heads")).unwrap();
        let _held = Lock::acquire(&dir.path().join("refs/heads/main")).unwrap();
        let err = refs.update("refs/heads/main", ObjectId([1; 32]), None);
        assert!(matches!(err, Err(RefError::Locked(LockError::Held { .. }))));
    }
}
