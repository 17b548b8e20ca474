//! Pack files: many objects in one file, with a sorted index beside it.
//!
//! A pack is written once to a temporary name, fsynced and renamed; its name is the BLAKE3 of
//! its content, so a pack can travel between repositories as it is and be verified whole.
//! Byte layouts are in `docs/FORMAT.md`.

mod entry;
mod index;
mod reader;
mod writer;

pub use entry::{EntryHeader, EntryView};
pub use index::{IndexRecord, PackIndex};
pub use reader::Pack;
pub use writer::PackWriter;

/// First bytes of every pack file.
pub const PACK_MAGIC: &[u8; 8] = b"MLVPACK\0";
/// First bytes of every pack index file.
pub const INDEX_MAGIC: &[u8; 8] = b"MLVIDX\0\0";
/// The pack and index format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the first entry.
pub const PACK_HEADER_LEN: u64 = 16;
/// Bytes of the trailing checksum.
pub const TRAILER_LEN: u64 = 32;

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
}

impl PackError {
    fn io(path: &std::path::Path, source: std::io::Error) -> PackError {
        PackError::Io { path: path.to_path_buf(), source }
    }

    fn corrupt(path: &std::path::Path, what: impl Into<String>) -> PackError {
        PackError::Corrupt { path: path.to_path_buf(), what: what.into() }
    }
}
