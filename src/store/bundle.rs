//! The index bundle: the indexes of many packs of a directory in one file, so a repository
//! with thousands of packs between two gcs opens with one read instead of one per pack.
//!
//! It is a cache: every index in it was verified when it was first read, the bundle has its
//! own checksum, a pack missing from it is read from its own `.idx`, and a damaged or
//! unreadable bundle is ignored (and rewritten).

use std::collections::HashMap;
use std::path::Path;

use crate::encoding::{Reader, Writer};
use crate::pack::PackName;

/// File name of the bundle in a pack directory.
pub const BUNDLE_FILE: &str = "index-bundle";
/// First bytes of a bundle.
const MAGIC: &[u8; 8] = b"MLVIBNDL";
/// The bundle version this build writes and reads.
const VERSION: u32 = 1;
/// Packs without a bundle entry (or bundled packs deleted since) past which it is rewritten.
pub const REBUNDLE_AFTER: usize = 64;

/// A loaded bundle: per pack, its length and its index (as encoded, decoded on use).
#[derive(Default)]
pub struct Bundle {
    entries: HashMap<PackName, (u64, Vec<u8>)>,
}

impl Bundle {
    /// Loads the bundle of `dir`; an absent or damaged one is empty.
    pub fn load(dir: &Path) -> Bundle {
        std::fs::read(dir.join(BUNDLE_FILE)).ok().and_then(|b| Bundle::decode(&b)).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Bundle> {
        let body_len = bytes.len().checked_sub(32)?;
        if blake3::hash(&bytes[..body_len]).as_bytes() != &bytes[body_len..] {
            return None;
        }
        let mut r = Reader::new(&bytes[..body_len]);
        if &r.array::<8>().ok()? != MAGIC || r.u32().ok()? != VERSION {
            return None;
        }
        let count = r.len_u32(48).ok()?;
        let mut entries = HashMap::with_capacity(count);
        for _ in 0..count {
            let name = PackName(r.array::<32>().ok()?);
            let len = r.u64().ok()?;
            let idx_len = r.len_u64(1).ok()?;
            entries.insert(name, (len, r.bytes(idx_len).ok()?.to_vec()));
        }
        r.finish().ok()?;
        Some(Bundle { entries })
    }

    /// The pack's length and encoded index, if bundled.
    pub fn get(&self, pack: &PackName) -> Option<&(u64, Vec<u8>)> {
        self.entries.get(pack)
    }

    /// How many packs are bundled (some may have been deleted since).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Writes a bundle of `packs` (name, length, encoded index) into `dir`, atomically, and
    /// returns it.
    pub fn write(dir: &Path, packs: Vec<(PackName, u64, Vec<u8>)>) -> std::io::Result<Bundle> {
        let mut out = MAGIC.to_vec();
        out.put_u32(VERSION);
        out.put_u32(packs.len() as u32);
        for (name, len, encoded) in &packs {
            out.extend_from_slice(&name.0);
            out.put_u64(*len);
            out.put_u64(encoded.len() as u64);
            out.extend_from_slice(encoded);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        crate::fsutil::atomic_write(&dir.join(BUNDLE_FILE), &out)?;
        Ok(Bundle { entries: packs.into_iter().map(|(name, len, index)| (name, (len, index))).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_bundle_loads_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::pack::PackIndex::build([3; 32], Vec::new()).encode();
        Bundle::write(dir.path(), vec![(PackName([3; 32]), 100, index)]).unwrap();
        let b = Bundle::load(dir.path());
        assert_eq!(b.get(&PackName([3; 32])).map(|e| e.0), Some(100));
        let mut bytes = std::fs::read(dir.path().join(BUNDLE_FILE)).unwrap();
        bytes[20] ^= 1;
        std::fs::write(dir.path().join(BUNDLE_FILE), bytes).unwrap();
        assert!(Bundle::load(dir.path()).get(&PackName([3; 32])).is_none());
    }
}
