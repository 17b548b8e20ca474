//! The pack index: fixed-size records sorted by object id, for binary search, and the delta
//! bases of every object, so "what does this object need" is answered without decoding it.

use std::path::Path;

use super::{INDEX_MAGIC, PackError};
use crate::encoding::{Reader, Writer};
use crate::object::{ObjectId, ObjectKind};

/// The index version this build writes.
pub const INDEX_VERSION: u32 = 2;
/// The first index version, without delta bases; read, and upgraded in place by local stores.
pub const INDEX_VERSION_1: u32 = 1;
/// Bytes per index record.
pub const RECORD_LEN: usize = 64;
/// Most delta bases one object may name (its chunks could each name another).
pub const MAX_BASES: usize = u16::MAX as usize;

/// Where one object sits in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    /// Object id.
    pub id: ObjectId,
    /// Offset of the entry in the pack.
    pub offset: u64,
    /// Entry length.
    pub len: u64,
    /// Logical body length.
    pub data_len: u64,
    /// Object kind.
    pub kind: ObjectKind,
    /// Delta chain depth: 0 for standalone, else 1 + the deepest base's depth.
    pub depth: u8,
    /// Number of delta bases, in [`PackIndex::bases`] from `first_base`.
    pub base_count: u16,
    /// Position of the first base in [`PackIndex::bases`].
    pub first_base: u32,
}

/// A loaded, verified pack index.
#[derive(Debug, Clone, Default)]
pub struct PackIndex {
    /// BLAKE3 of the pack's content, which is also its name.
    pub pack_hash: [u8; 32],
    /// Records sorted by id.
    pub records: Vec<IndexRecord>,
    /// The delta bases of all records, each record's run sorted.
    pub bases: Vec<ObjectId>,
    /// False for a version-1 index, which does not record bases.
    pub bases_known: bool,
}

impl PackIndex {
    /// Builds an index from unsorted records and each record's bases.
    pub fn build(pack_hash: [u8; 32], mut entries: Vec<(IndexRecord, Vec<ObjectId>)>) -> PackIndex {
        entries.sort_by_key(|(r, _)| r.id);
        let mut index =
            PackIndex { pack_hash, records: Vec::with_capacity(entries.len()), bases: Vec::new(), bases_known: true };
        for (mut rec, mut bases) in entries {
            bases.sort();
            bases.dedup();
            bases.truncate(MAX_BASES);
            rec.first_base = index.bases.len() as u32;
            rec.base_count = bases.len() as u16;
            index.bases.extend(bases);
            index.records.push(rec);
        }
        index
    }

    /// Finds a record by id.
    pub fn find(&self, id: &ObjectId) -> Option<&IndexRecord> {
        self.records.binary_search_by(|r| r.id.cmp(id)).ok().map(|i| &self.records[i])
    }

    /// The delta bases of a record of this index.
    pub fn bases_of(&self, rec: &IndexRecord) -> &[ObjectId] {
        let start = rec.first_base as usize;
        self.bases.get(start..start + rec.base_count as usize).unwrap_or_default()
    }

    /// Serialises the index (version 2) with its trailing checksum.
    pub fn encode(&self) -> Vec<u8> {
        let len = 8 + 4 + 4 + 32 + 8 + RECORD_LEN * self.records.len() + 8 + 32 * self.bases.len() + 32;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(INDEX_MAGIC);
        out.put_u32(INDEX_VERSION);
        out.put_u32(0);
        out.extend_from_slice(&self.pack_hash);
        out.put_u64(self.records.len() as u64);
        for r in &self.records {
            out.extend_from_slice(&r.id.0);
            out.put_u64(r.offset);
            out.put_u64(r.len);
            out.put_u64(r.data_len);
            out.push(r.kind.code());
            out.push(r.depth);
            out.put_u16(r.base_count);
            out.put_u32(r.first_base);
        }
        out.put_u64(self.bases.len() as u64);
        for b in &self.bases {
            out.extend_from_slice(&b.0);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parses and verifies an index file's bytes (version 1 or 2); `path` names it in errors.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<PackIndex, PackError> {
        let corrupt = |what: String| PackError::corrupt(path, what);
        let body_len = bytes.len().checked_sub(32).ok_or_else(|| corrupt("index truncated".into()))?;
        if blake3::hash(&bytes[..body_len]).as_bytes() != &bytes[body_len..] {
            return Err(corrupt("index checksum mismatch".into()));
        }
        let mut r = Reader::new(&bytes[..body_len]);
        let e = |e: crate::encoding::DecodeError| corrupt(e.to_string());
        if &r.array::<8>().map_err(e)? != INDEX_MAGIC {
            return Err(corrupt("not an mlv pack index (bad magic)".into()));
        }
        let version = r.u32().map_err(e)?;
        if version != INDEX_VERSION && version != INDEX_VERSION_1 {
            return Err(corrupt(format!("index version {version} is not supported (this mlv reads 1 and 2)")));
        }
        r.u32().map_err(e)?;
        let pack_hash = r.array::<32>().map_err(e)?;
        let count = r.len_u64(RECORD_LEN).map_err(e)?;
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.id().map_err(e)?;
            let (offset, len, data_len) = (r.u64().map_err(e)?, r.u64().map_err(e)?, r.u64().map_err(e)?);
            let code = r.u8().map_err(e)?;
            let kind = ObjectKind::from_code(code).ok_or_else(|| corrupt(format!("unknown kind {code}")))?;
            let depth = r.u8().map_err(e)?;
            let (base_count, first_base) = (r.u16().map_err(e)?, r.u32().map_err(e)?);
            if records.last().is_some_and(|p: &IndexRecord| p.id >= id) {
                return Err(corrupt("index records not sorted".into()));
            }
            records.push(IndexRecord { id, offset, len, data_len, kind, depth, base_count, first_base });
        }
        let mut index = PackIndex { pack_hash, records, bases: Vec::new(), bases_known: version == INDEX_VERSION };
        if version == INDEX_VERSION_1 {
            // Version 1 kept these six bytes zero.
            index.records.iter_mut().for_each(|rec| (rec.base_count, rec.first_base) = (0, 0));
        } else {
            let n = r.len_u64(32).map_err(e)?;
            index.bases = (0..n).map(|_| r.id()).collect::<Result<_, _>>().map_err(e)?;
            if index.records.iter().any(|rec| rec.first_base as usize + rec.base_count as usize > n) {
                return Err(corrupt("a record's bases lie outside the base table".into()));
            }
        }
        r.finish().map_err(e)?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(b: u8) -> IndexRecord {
        IndexRecord {
            id: ObjectId([b; 32]),
            offset: 16,
            len: 100,
            data_len: 7,
            kind: ObjectKind::Tensor,
            depth: 0,
            base_count: 0,
            first_base: 0,
        }
    }

    fn sample() -> PackIndex {
        PackIndex::build([5; 32], vec![(rec(2), vec![ObjectId([9; 32]), ObjectId([1; 32])]), (rec(1), vec![])])
    }

    #[test]
    fn round_trip_lookup_and_bases() {
        let idx = sample();
        let back = PackIndex::decode(Path::new("x"), &idx.encode()).unwrap();
        assert_eq!(back.records, idx.records);
        assert!(back.bases_known);
        let two = back.find(&ObjectId([2; 32])).unwrap();
        assert_eq!(back.bases_of(two), &[ObjectId([1; 32]), ObjectId([9; 32])]);
        assert!(back.bases_of(back.find(&ObjectId([1; 32])).unwrap()).is_empty());
        assert!(back.find(&ObjectId([3; 32])).is_none());
    }

    #[test]
    fn version_1_reads_without_bases() {
        let idx = PackIndex::build([5; 32], vec![(rec(1), vec![])]);
        let mut v1 = idx.encode();
        // A version-1 index is a version-2 one without the base table.
        v1.truncate(v1.len() - 32 - 8);
        v1[8..12].copy_from_slice(&INDEX_VERSION_1.to_le_bytes());
        let sum = blake3::hash(&v1);
        v1.extend_from_slice(sum.as_bytes());
        let back = PackIndex::decode(Path::new("x"), &v1).unwrap();
        assert!(!back.bases_known);
        assert_eq!(back.records, idx.records);
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(PackIndex::decode(Path::new("x"), &bad).is_err());
        }
        assert!(PackIndex::decode(Path::new("x"), &bytes[..10]).is_err());
    }
}
