//! The tensor-file object: a safetensors file as its verbatim header plus object references.

use super::{ObjectId, ObjectKind};
use crate::encoding::{DecodeError, Reader, Writer};

/// One stretch of a safetensors file's data region, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// A tensor object's element bytes.
    Tensor {
        /// The tensor object.
        id: ObjectId,
        /// Its element byte length.
        len: u64,
    },
    /// Bytes that belong to no tensor (a gap or trailing bytes), kept as a blob.
    Bytes {
        /// The blob object.
        id: ObjectId,
        /// Its length.
        len: u64,
    },
}

impl Segment {
    /// The referenced object.
    pub fn id(&self) -> ObjectId {
        match self {
            Segment::Tensor { id, .. } | Segment::Bytes { id, .. } => *id,
        }
    }

    /// Bytes this segment contributes to the file.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Tensor { len, .. } | Segment::Bytes { len, .. } => *len,
        }
    }

    /// True when the segment contributes no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A safetensors file: the 8-byte length and JSON header verbatim, then its data segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorFile {
    /// The first `8 + N` bytes of the file, unchanged.
    pub prefix: Vec<u8>,
    /// The data region, in file order.
    pub segments: Vec<Segment>,
}

const SEGMENT_TENSOR: u8 = 1;
const SEGMENT_BYTES: u8 = 2;

impl TensorFile {
    /// Total file length.
    pub fn file_len(&self) -> u64 {
        self.prefix.len() as u64 + self.segments.iter().map(Segment::len).sum::<u64>()
    }

    /// Canonical body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 12 + 41 * self.segments.len());
        out.put_u64(self.prefix.len() as u64);
        out.extend_from_slice(&self.prefix);
        out.put_u32(self.segments.len() as u32);
        for s in &self.segments {
            out.push(match s {
                Segment::Tensor { .. } => SEGMENT_TENSOR,
                Segment::Bytes { .. } => SEGMENT_BYTES,
            });
            out.extend_from_slice(&s.id().0);
            out.put_u64(s.len());
        }
        out
    }

    /// Parses a canonical body.
    pub fn decode(body: &[u8]) -> Result<TensorFile, DecodeError> {
        let mut r = Reader::new(body);
        let n = r.len_u64(1)?;
        let prefix = r.bytes(n)?.to_vec();
        let count = r.len_u32(41)?;
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = r.u8()?;
            let id = r.id()?;
            let len = r.u64()?;
            segments.push(match kind {
                SEGMENT_TENSOR => Segment::Tensor { id, len },
                SEGMENT_BYTES => Segment::Bytes { id, len },
                k => return Err(r.error(format!("unknown segment kind {k}"))),
            });
        }
        r.finish()?;
        Ok(TensorFile { prefix, segments })
    }

    /// The object id of this tensor file.
    pub fn id(&self) -> ObjectId {
        ObjectId::hash(ObjectKind::TensorFile, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let f = TensorFile {
            prefix: b"\x02\0\0\0\0\0\0\0{}".to_vec(),
            segments: vec![
                Segment::Tensor { id: ObjectId([1; 32]), len: 8 },
                Segment::Bytes { id: ObjectId([2; 32]), len: 3 },
            ],
        };
        assert_eq!(TensorFile::decode(&f.encode()).unwrap(), f);
        assert_eq!(f.file_len(), 21);
    }

    #[test]
    fn decode_rejects_truncation_everywhere() {
        let f = TensorFile { prefix: vec![0; 10], segments: vec![Segment::Tensor { id: ObjectId([1; 32]), len: 8 }] };
        let body = f.encode();
        for cut in 0..body.len() {
            assert!(TensorFile::decode(&body[..cut]).is_err());
        }
    }
}
