//! The seam in front of pack storage: a directory, memory, a remote server or an object
//! store all hold packs and their indexes behind [`PackStore`].

use std::io::Write;
use std::path::Path;

use bytes::Bytes;

use super::StoreError;
use crate::pack::{PackIndex, PackName, SealedPack};

/// A complete pack in a store: one whose index is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Its name.
    pub name: PackName,
    /// Its length in bytes.
    pub len: u64,
}

/// A pack that a `gc` of a shared repository marked for deletion, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doomed {
    /// The pack.
    pub name: PackName,
    /// When it was marked, in seconds since the Unix epoch (the marking machine's clock).
    pub marked: u64,
}

/// Where packs live. Packs are immutable and named by their content, so every method but
/// `install` is a pure read, and installing the same pack twice is harmless.
pub trait PackStore: Send + Sync {
    /// Where the store is, for messages (a directory or a URL).
    fn describe(&self) -> String;

    /// Every complete pack.
    fn list(&self) -> Result<Vec<PackInfo>, StoreError>;

    /// A pack's index, checksum-verified.
    fn read_index(&self, pack: &PackName) -> Result<PackIndex, StoreError>;

    /// Bytes `start..start + len` of a pack.
    fn read_range(&self, pack: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError>;

    /// Streams bytes `start..start + len` of a pack into `out`, in bounded memory.
    fn copy_range(&self, pack: &PackName, start: u64, len: u64, out: &mut dyn Write) -> Result<(), StoreError> {
        const PIECE: u64 = 8 << 20;
        let mut pos = start;
        while pos < start + len {
            let n = PIECE.min(start + len - pos);
            out.write_all(&self.read_range(pack, pos, n)?)?;
            pos += n;
        }
        Ok(())
    }

    /// True if the store holds the pack with its index.
    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError>;

    /// Adds a sealed pack: the pack first, then its index, so that no reader ever sees an
    /// index whose pack is missing. The caller has verified its content.
    fn install(&self, pack: SealedPack) -> Result<(), StoreError>;

    /// A local directory on the store's filesystem where new packs can be staged, so that
    /// installing them is a rename; None for stores that are not local.
    fn staging_dir(&self) -> Option<&Path> {
        None
    }

    /// Packs marked for deletion by [`PackStore::doom`] (marks whose pack is gone included).
    fn doomed(&self) -> Result<Vec<Doomed>, StoreError> {
        Ok(Vec::new())
    }

    /// Marks a pack for deletion by a later gc; it stays readable until then. A pack marked
    /// already keeps its first mark, so repeated runs never postpone a deletion.
    fn doom(&self, pack: &PackName, _marked: u64) -> Result<(), StoreError> {
        Err(unsupported(self, pack, "marked for deletion"))
    }

    /// Removes a pack's deletion mark: gc wrote the very same pack again.
    fn spare(&self, pack: &PackName) -> Result<(), StoreError> {
        Err(unsupported(self, pack, "spared"))
    }

    /// Deletes a marked pack: its index first (readers stop listing it), then the pack, then
    /// the mark. Deleting what is not there is not an error, so an interrupted run can repeat.
    fn delete(&self, pack: &PackName) -> Result<(), StoreError> {
        Err(unsupported(self, pack, "deleted"))
    }

    /// Hint that bytes of a pack were read and will not be needed again soon.
    fn release(&self, _pack: &PackName, _start: u64, _len: u64) {}
}

fn unsupported<S: PackStore + ?Sized>(store: &S, pack: &PackName, what: &str) -> StoreError {
    StoreError::Backend(format!("{}: {pack} cannot be {what} here", store.describe()))
}

/// The text of a deletion mark: the time, in decimal seconds since the Unix epoch.
pub fn encode_mark(marked: u64) -> String {
    format!("{marked}\n")
}

/// Reads a deletion mark; None if it is not one.
pub fn decode_mark(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.trim_end_matches('\n').parse().ok()
}
