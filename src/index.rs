//! The staging index: what the next commit will contain, with a stat cache so unchanged
//! files are recognised without rehashing.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::lock::{Lock, LockError};
use crate::object::{EntryKind, ObjectId};

/// First bytes of the index file.
pub const INDEX_MAGIC: &[u8; 8] = b"MLVINDEX";
/// Index format version.
pub const INDEX_VERSION: u32 = 1;

/// File metadata that changes whenever content may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stat {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Executable bit.
    pub executable: bool,
}

impl Stat {
    /// Reads the stat fields from file metadata.
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            ino: meta.ino(),
            executable: meta.mode() & 0o111 != 0,
        }
    }

    /// The stat of content known only from a commit: its true size and mode (commits take
    /// both from the index), but inode 0 and an mtime no real file has, so the work-tree
    /// file is rehashed before it counts as clean.
    pub fn unverified(size: u64, executable: bool) -> Stat {
        Stat { size, mtime_ns: i64::MIN, ino: 0, executable }
    }
}

/// One staged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Blob or tensor file.
    pub kind: EntryKind,
    /// The staged object.
    pub id: ObjectId,
    /// Stat of the work-tree file when it was hashed.
    pub stat: Stat,
}

/// The staged tree: work-tree relative paths (with `/`) to entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    /// When the index was written (ns since the epoch), for racy-timestamp detection.
    #[serde(default)]
    pub written_ns: i64,
    /// Entries by path.
    pub entries: BTreeMap<String, IndexEntry>,
}

/// The index file is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Bad content.
    #[error("{0}: corrupt index: {1} (delete it and run `mlv add` again)")]
    Corrupt(String, String),
    /// Another mlv command is updating the index.
    #[error(transparent)]
    Locked(#[from] LockError),
}

/// The index loaded for a read-modify-write. `<index>.lock` is held until this is dropped,
/// so two commands staging at once cannot overwrite each other's entries.
pub struct LockedIndex {
    index: Index,
    path: PathBuf,
    _lock: Lock,
}

impl LockedIndex {
    /// Locks the index at `path`, waiting up to `patience` for another command, then loads it.
    pub fn open(path: &Path, patience: Duration) -> Result<LockedIndex, IndexError> {
        let lock = Lock::acquire_waiting(path, patience)?;
        Ok(LockedIndex { index: Index::load(path)?, path: path.to_path_buf(), _lock: lock })
    }

    /// Writes the index back (the lock stays held).
    pub fn save(&mut self) -> Result<(), IndexError> {
        self.index.save(&self.path)
    }
}

impl Deref for LockedIndex {
    type Target = Index;

    fn deref(&self) -> &Index {
        &self.index
    }
}

impl DerefMut for LockedIndex {
    fn deref_mut(&mut self) -> &mut Index {
        &mut self.index
    }
}

impl Index {
    /// Loads the index, or an empty one if there is none.
    pub fn load(path: &Path) -> Result<Index, IndexError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(fsutil::with_path(path, e).into()),
        };
        Index::decode(&bytes, &path.display().to_string())
    }

    /// Parses and verifies the bytes of an index file; `path` names it in errors.
    pub fn decode(bytes: &[u8], path: &str) -> Result<Index, IndexError> {
        let corrupt = |what: &str| IndexError::Corrupt(path.to_string(), what.to_string());
        if bytes.len() < 12 + 32 || &bytes[..8] != INDEX_MAGIC {
            return Err(corrupt("bad magic"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if version != INDEX_VERSION {
            return Err(corrupt(&format!("version {version} not supported")));
        }
        serde_json::from_slice(&body[12..]).map_err(|e| corrupt(&e.to_string()))
    }

    /// Writes the index atomically, stamping the write time.
    pub fn save(&mut self, path: &Path) -> Result<(), IndexError> {
        self.written_ns = now_ns();
        let mut out = INDEX_MAGIC.to_vec();
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&serde_json::to_vec(self).map_err(std::io::Error::other)?);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        fsutil::atomic_write(path, &out)?;
        Ok(())
    }

    /// True if `stat` proves the file still holds the staged content. A file modified in the
    /// same instant the index was written may have changed unseen ("racy"), so it is not trusted.
    pub fn is_stat_clean(&self, path: &str, stat: &Stat) -> bool {
        self.entries.get(path).is_some_and(|e| e.stat == *stat && stat.mtime_ns < self.written_ns)
    }
}

/// Current time in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let mut idx = Index::default();
        let stat = Stat { size: 3, mtime_ns: 5, ino: 7, executable: false };
        idx.entries
            .insert("a/b.safetensors".into(), IndexEntry { kind: EntryKind::TensorFile, id: ObjectId([1; 32]), stat });
        idx.save(&path).unwrap();
        let back = Index::load(&path).unwrap();
        assert_eq!(back.entries, idx.entries);
        assert!(back.is_stat_clean("a/b.safetensors", &stat));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(Index::load(&path).is_err());
    }

    #[test]
    fn a_locked_index_blocks_a_second_writer_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let mut first = LockedIndex::open(&path, Duration::ZERO).unwrap();
        first.save().unwrap();
        assert!(matches!(LockedIndex::open(&path, Duration::from_millis(30)), Err(IndexError::Locked(_))));
        drop(first);
        LockedIndex::open(&path, Duration::ZERO).unwrap();
    }

    #[test]
    fn an_unverified_stat_never_matches_a_real_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let real = Stat::of(&file.as_file().metadata().unwrap());
        let mut idx = Index::default();
        let stat = Stat::unverified(real.size, real.executable);
        idx.entries.insert("f".into(), IndexEntry { kind: EntryKind::Blob, id: ObjectId([1; 32]), stat });
        idx.written_ns = i64::MAX;
        assert!(!idx.is_stat_clean("f", &real));
    }

    #[test]
    fn racy_entries_are_not_trusted() {
        let mut idx = Index::default();
        let stat = Stat { size: 3, mtime_ns: 100, ino: 7, executable: false };
        idx.entries.insert("f".into(), IndexEntry { kind: EntryKind::Blob, id: ObjectId([1; 32]), stat });
        idx.written_ns = 100;
        assert!(!idx.is_stat_clean("f", &stat));
    }
}
