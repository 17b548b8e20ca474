//! Lock files: `<file>.lock`, created exclusively, holding the owner's pid, removed on drop.
//!
//! Refs and the staging index are updated under such a lock, so two processes cannot both
//! read-modify-write the same file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{0} is locked by another mlv process (remove the .lock file if none is running)")]
    Held(String),
    /// The lock file could not be created.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An exclusive `<file>.lock`, removed on drop.
pub struct Lock {
    path: PathBuf,
}

/// How long to sleep between attempts to take a held lock.
const RETRY: Duration = Duration::from_millis(10);

impl Lock {
    /// Creates the lock file for `target`, or fails if another process holds it.
    pub fn acquire(target: &Path) -> Result<Lock, LockError> {
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                Ok(Lock { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(LockError::Held(target.display().to_string()))
            }
            Err(e) => Err(crate::fsutil::with_path(&path, e).into()),
        }
    }

    /// Like [`Lock::acquire`], but retries for up to `patience` while another process holds it.
    pub fn acquire_waiting(target: &Path, patience: Duration) -> Result<Lock, LockError> {
        let start = Instant::now();
        loop {
            match Lock::acquire(target) {
                Err(LockError::Held(_)) if start.elapsed() < patience => std::thread::sleep(RETRY),
                other => return other,
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_owner_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        let held = Lock::acquire(&target).unwrap();
        assert!(matches!(Lock::acquire(&target), Err(LockError::Held(_))));
        drop(held);
        Lock::acquire(&target).unwrap();
    }
}
