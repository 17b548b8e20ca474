//! The chunked-file object: a large file that is not safetensors, cut into content-defined
//! chunks (each a blob), so an edit stores only the chunks it touched.

use super::{ObjectId, ObjectKind};
use crate::encoding::{DecodeError, Reader, Writer};

/// A file as the blobs of its content-defined chunks, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkedFile {
    /// Each chunk's blob and length.
    pub chunks: Vec<(ObjectId, u64)>,
}

impl ChunkedFile {
    /// Total file length.
    pub fn file_len(&self) -> u64 {
        self.chunks.iter().map(|c| c.1).sum()
    }

    /// Canonical body: `u32 count`, then per chunk its id and `u64` length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 40 * self.chunks.len());
        out.put_u32(self.chunks.len() as u32);
        for (id, len) in &self.chunks {
            out.extend_from_slice(&id.0);
            out.put_u64(*len);
        }
        out
    }

    /// Parses a body.
    pub fn decode(body: &[u8]) -> Result<ChunkedFile, DecodeError> {
        let mut r = Reader::new(body);
        let count = r.len_u32(40)?;
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            chunks.push((r.id()?, r.u64()?));
        }
        r.finish()?;
        if chunks.iter().try_fold(0u64, |acc, c| acc.checked_add(c.1)).is_none() {
            return Err(r.error("chunk lengths overflow"));
        }
        Ok(ChunkedFile { chunks })
    }

    /// Its id.
    pub fn id(&self) -> ObjectId {
        ObjectId::hash(ObjectKind::ChunkedFile, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let f = ChunkedFile { chunks: vec![(ObjectId([1; 32]), 65536), (ObjectId([2; 32]), 7)] };
        assert_eq!(ChunkedFile::decode(&f.encode()).unwrap(), f);
        assert_eq!(f.file_len(), 65543);
    }

    proptest! {
        #[test]
        fn hostile_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ChunkedFile::decode(&bytes);
        }
    }
}
