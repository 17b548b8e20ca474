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

    /// Hint that bytes of a pack were read and will not be needed again soon.
    fn release(&self, _pack: &PackName, _start: u64, _len: u64) {}
}
