//! Pack files: many objects in one file, with a sorted index beside it.
//!
//! A pack is written once to a temporary file and sealed; its name is the BLAKE3 of its
//! content, so a pack can travel between repositories as it is and be verified whole. Byte
//! layouts are in `docs/FORMAT.md`.

mod append;
mod entry;
mod index;
mod writer;

pub use entry::{EntryHeader, EntryView, MAX_CHUNK_ELEMS};
pub use index::{INDEX_VERSION, INDEX_VERSION_1, IndexRecord, MAX_BASES, PackIndex};
pub use writer::{PackWriter, RawSink, SealedPack, UnindexedPack};

/// First bytes of every pack file.
pub const PACK_MAGIC: &[u8; 8] = b"MLVPACK\0";
/// First bytes of every pack index file.
pub const INDEX_MAGIC: &[u8; 8] = b"MLVIDX\0\0";
/// The pack format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the first entry.
pub const PACK_HEADER_LEN: u64 = 16;
/// Bytes of the trailing checksum.
pub const TRAILER_LEN: u64 = 32;

/// A pack's name: the BLAKE3 of its bytes before the trailer (which repeats it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackName(pub [u8; 32]);

impl PackName {
    /// `pack-<64 hex>`, the stem of its file names.
    pub fn stem(&self) -> String {
        format!("pack-{}", hex::encode(self.0))
    }

    /// Parses `pack-<64 hex>`.
    pub fn from_stem(stem: &str) -> Option<PackName> {
        let hex = stem.strip_prefix("pack-")?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        (hex.bytes().all(|b| !b.is_ascii_uppercase())).then_some(PackName(out))
    }
}

impl std::fmt::Display for PackName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.stem())
    }
}

/// Checks the fixed pack header: magic and version.
pub fn check_header(path: &std::path::Path, header: &[u8]) -> Result<(), PackError> {
    if header.len() < PACK_HEADER_LEN as usize || &header[..8] != PACK_MAGIC {
        return Err(PackError::corrupt(path, "not an mlv pack (bad magic or too short)"));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(PackError::corrupt(
            path,
            format!("pack version {version} is not supported (this mlv reads {VERSION})"),
        ));
    }
    Ok(())
}

/// A pack or its index is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a valid pack structure.
    #[error("{path}: corrupt pack data: {what}")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The bytes are not a valid pack structure, at a known place.
    #[error("{path}: corrupt pack data at byte {offset}: {what}")]
    CorruptAt {
        /// The file.
        path: std::path::PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

impl PackError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> PackError {
        PackError::Io { path: path.to_path_buf(), source }
    }

    /// Invalid content in `path`.
    pub fn corrupt(path: &std::path::Path, what: impl Into<String>) -> PackError {
        PackError::Corrupt { path: path.to_path_buf(), what: what.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_names_round_trip_and_reject_junk() {
        let n = PackName([0xab; 32]);
        assert_eq!(PackName::from_stem(&n.stem()), Some(n));
        for bad in ["pack-", "pack-zz", "x-abab", &n.stem().to_uppercase(), &format!("{}00", n.stem())] {
            assert_eq!(PackName::from_stem(bad), None, "{bad}");
        }
    }
}
