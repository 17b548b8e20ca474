//! Lock files: `<file>.lock`, held with an OS file lock (`flock`), holding the owner's pid.
//!
//! Refs and the staging index are updated under such a lock, so two processes cannot both
//! read-modify-write the same file. The kernel releases the OS lock when its process dies,
//! so a lock file left behind by a killed process is recognised as stale and taken over at
//! once (with a note), instead of blocking every later command.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another running process holds the lock.
    #[error("{path} is locked by another running mlv process{}", owner.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        /// The locked file.
        path: String,
        /// The holder's pid, when it could be read.
        owner: Option<u32>,
    },
    /// The lock file could not be created.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An exclusive `<file>.lock`, removed and released on drop.
pub struct Lock {
    path: PathBuf,
    file: File,
}

/// How long to sleep between attempts to take a held lock.
const RETRY: Duration = Duration::from_millis(10);

impl Lock {
    /// Takes the lock for `target`, or fails if a running process holds it. A lock file whose
    /// owner died is taken over, with a note.
    pub fn acquire(target: &Path) -> Result<Lock, LockError> {
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        loop {
            let existed = path.exists();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| crate::fsutil::with_path(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let owner = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
                    return Err(LockError::Held { path: target.display().to_string(), owner });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(crate::fsutil::with_path(&path, e).into()),
            }
            // The previous holder may have removed the file between our open and our lock:
            // then we locked a file nobody else will ever look at, and must start again.
            let same = std::fs::metadata(&path).is_ok_and(|m| file.metadata().is_ok_and(|f| f.ino() == m.ino()));
            if !same {
                continue;
            }
            let stale = std::fs::read_to_string(&path).unwrap_or_default();
            if existed && !stale.trim().is_empty() {
                crate::notes::push(format!(
                    "took over {}: the process that held it (pid {}) is gone",
                    path.display(),
                    stale.trim()
                ));
            }
            // Held from here, so that a failure to write (a full disk) removes the file again.
            let mut lock = Lock { path, file };
            lock.write_owner().map_err(|e| crate::fsutil::with_path(&lock.path, e))?;
            return Ok(lock);
        }
    }

    fn write_owner(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        writeln!(self.file, "{}", std::process::id())
    }

    /// Like [`Lock::acquire`], but retries for up to `patience` while another process holds it.
    pub fn acquire_waiting(target: &Path, patience: Duration) -> Result<Lock, LockError> {
        let start = Instant::now();
        loop {
            match Lock::acquire(target) {
                Err(LockError::Held { .. }) if start.elapsed() < patience => std::thread::sleep(RETRY),
                other => return other,
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still locked, so a waiting process never locks a file on its way out;
        // the OS lock goes with the file handle right after.
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
        let err = Lock::acquire(&target).err().unwrap();
        assert!(matches!(err, LockError::Held { owner: Some(pid), .. } if pid == std::process::id()), "{err}");
        drop(held);
        Lock::acquire(&target).unwrap();
        assert!(!dir.path().join("x.lock").exists());
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("index");
        std::fs::write(dir.path().join("index.lock"), "999999\n").unwrap();
        let _lock = Lock::acquire(&target).unwrap();
        assert!(crate::notes::drain().iter().any(|n| n.contains("999999")));
    }
}
