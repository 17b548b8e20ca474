//! The pack index: fixed-size records sorted by object id, for binary search.

use std::path::Path;

use super::{INDEX_MAGIC, PackError, VERSION};
use crate::encoding::{Reader, Writer};
use crate::object::{ObjectId, ObjectKind};

/// Bytes per index record.
pub const RECORD_LEN: usize = 64;
const HEADER_LEN: usize = 8 + 4 + 4 + 32 + 8;

/// Where one object sits in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    /// Object id.
    pub id: ObjectId,
    /// Offset of the entry's length prefix in the pack.
    pub offset: u64,
    /// Entry length including the prefix.
    pub len: u64,
    /// Logical body length.
    pub data_len: u64,
    /// Object kind.
    pub kind: ObjectKind,
    /// Delta chain depth: 0 for standalone, else 1 + the deepest base's depth.
    pub depth: u8,
}

/// A loaded, verified pack index.
#[derive(Debug, Clone, Default)]
pub struct PackIndex {
    /// BLAKE3 of the pack's content, which is also its name.
    pub pack_hash: [u8; 32],
    /// Records sorted by id.
    pub records: Vec<IndexRecord>,
}

impl PackIndex {
    /// Finds a record by id.
    pub fn find(&self, id: &ObjectId) -> Option<&IndexRecord> {
        self.records.binary_search_by(|r| r.id.cmp(id)).ok().map(|i| &self.records[i])
    }

    /// Serialises the index (records must be sorted) with its trailing checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + RECORD_LEN * self.records.len() + 32);
        out.extend_from_slice(INDEX_MAGIC);
        out.put_u32(VERSION);
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
            out.extend_from_slice(&[0; 6]);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parses and verifies an index file's bytes.
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
        if version != VERSION {
            return Err(corrupt(format!("index version {version} is not supported (this mlv reads {VERSION})")));
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
            r.bytes(6).map_err(e)?;
            if records.last().is_some_and(|p: &IndexRecord| p.id >= id) {
                return Err(corrupt("index records not sorted".into()));
            }
            records.push(IndexRecord { id, offset, len, data_len, kind, depth });
        }
        r.finish().map_err(e)?;
        Ok(PackIndex { pack_hash, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PackIndex {
        let rec = |b: u8| IndexRecord {
            id: ObjectId([b; 32]),
            offset: 16,
            len: 100,
            data_len: 7,
            kind: ObjectKind::Blob,
            depth: 0,
        };
        PackIndex { pack_hash: [5; 32], records: vec![rec(1), rec(2)] }
    }

    #[test]
    fn round_trip_and_lookup() {
        let idx = sample();
        let back = PackIndex::decode(Path::new("x"), &idx.encode()).unwrap();
        assert_eq!(back.records, idx.records);
        assert!(back.find(&ObjectId([2; 32])).is_some());
        assert!(back.find(&ObjectId([3; 32])).is_none());
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
