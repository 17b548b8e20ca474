//! One object's entry inside a pack: a header, its chunks, and a table of chunk lengths.

use crate::encoding::{DecodeError, Reader, Writer};
use crate::object::{DType, ObjectId, ObjectKind, TensorMeta};

/// The most elements per chunk a reader accepts (bounds every chunk's size and offsets).
pub const MAX_CHUNK_ELEMS: u64 = crate::codec::MAX_CHUNK_BYTES as u64;

/// Everything about an entry except its chunk bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Object kind.
    pub kind: ObjectKind,
    /// Object id.
    pub id: ObjectId,
    /// Element type and shape (U8 with no shape for non-tensors) and body length.
    pub meta: TensorMeta,
    /// Elements per chunk; the last chunk may be shorter.
    pub chunk_elems: u64,
}

impl EntryHeader {
    /// Number of chunks the body is cut into.
    pub fn chunk_count(&self) -> u64 {
        self.meta.elements().div_ceil(self.chunk_elems.max(1))
    }

    /// Byte range `start..end` of chunk `i` within the object's data.
    pub fn chunk_range(&self, i: u64) -> (u64, u64) {
        let w = self.meta.dtype.width() as u64;
        let start = i * self.chunk_elems * w;
        (start, (start + self.chunk_elems * w).min(self.meta.data_len))
    }

    /// Serialises the header; the chunks follow it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.kind.code()];
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.meta.canonical_header());
        out.put_u64(self.meta.data_len);
        out.put_u64(self.chunk_elems);
        out.put_u32(self.chunk_count() as u32);
        out
    }

    fn decode(r: &mut Reader<'_>) -> Result<EntryHeader, DecodeError> {
        let code = r.u8()?;
        let kind = ObjectKind::from_code(code).ok_or_else(|| r.error(format!("unknown object kind {code}")))?;
        let id = r.id()?;
        let mut meta = TensorMeta::decode_header(r, 0)?;
        meta.data_len = r.u64()?;
        if meta.data_len % meta.dtype.width() as u64 != 0 {
            return Err(r.error("data length is not a whole number of elements"));
        }
        let chunk_elems = r.u64()?;
        if chunk_elems > MAX_CHUNK_ELEMS {
            return Err(r.error(format!("{chunk_elems} elements per chunk is more than any writer uses")));
        }
        let header = EntryHeader { kind, id, meta, chunk_elems };
        let count = r.u32()? as u64;
        if chunk_elems == 0 && header.meta.data_len > 0 || count != header.chunk_count() {
            return Err(r.error(format!("chunk count {count} does not fit the data length")));
        }
        if kind != ObjectKind::Tensor && header.meta.dtype != DType::U8 {
            return Err(r.error("non-tensor entry with a tensor dtype"));
        }
        Ok(header)
    }
}

/// A parsed entry borrowing the pack's bytes.
pub struct EntryView<'a> {
    /// The header.
    pub header: EntryHeader,
    chunks: Vec<&'a [u8]>,
}

impl<'a> EntryView<'a> {
    /// Parses an entry: its header, then every length-prefixed chunk, which must end exactly at the end.
    pub fn parse(entry: &'a [u8]) -> Result<EntryView<'a>, DecodeError> {
        EntryView::parse_with(entry, &mut |_| {})
    }

    /// As [`EntryView::parse`], telling `reached` how far into `entry` the parse has read
    /// after each chunk (see [`EntryView::parse_prefix_with`]).
    pub fn parse_with(entry: &'a [u8], reached: &mut dyn FnMut(usize)) -> Result<EntryView<'a>, DecodeError> {
        let (view, used) = EntryView::parse_prefix_with(entry, reached)?;
        if used != entry.len() {
            return Err(Reader::new(&entry[used..]).error(format!("{} unexpected trailing bytes", entry.len() - used)));
        }
        Ok(view)
    }

    /// Parses the entry at the start of `bytes` (entries are self-delimiting); returns it and
    /// its length.
    pub fn parse_prefix(bytes: &'a [u8]) -> Result<(EntryView<'a>, usize), DecodeError> {
        EntryView::parse_prefix_with(bytes, &mut |_| {})
    }

    /// As [`EntryView::parse_prefix`], telling `reached` how far into `bytes` the parse has
    /// read after each chunk: reading a chunk's length prefix maps the pages around it (a
    /// whole large folio, on recent kernels), so a reader of a mapping gives them back as the
    /// parse goes, or a large entry is resident whole.
    pub fn parse_prefix_with(
        bytes: &'a [u8],
        reached: &mut dyn FnMut(usize),
    ) -> Result<(EntryView<'a>, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let header = EntryHeader::decode(&mut r)?;
        let count = header.chunk_count() as usize;
        if count > r.remaining() / 4 {
            return Err(r.error(format!("{count} chunks cannot fit in {} bytes", r.remaining())));
        }
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u32()? as usize;
            chunks.push(r.bytes(len)?);
            reached(r.position());
        }
        Ok((EntryView { header, chunks }, r.position()))
    }

    /// Stored bytes of chunk `i`.
    pub fn chunk(&self, i: usize) -> Option<&'a [u8]> {
        self.chunks.get(i).copied()
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(data_len: u64, chunk_elems: u64) -> EntryHeader {
        let meta = TensorMeta { dtype: DType::BF16, shape: vec![data_len / 2], data_len };
        EntryHeader { kind: ObjectKind::Tensor, id: ObjectId([4; 32]), meta, chunk_elems }
    }

    fn entry(h: &EntryHeader, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = h.encode();
        for c in chunks {
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    #[test]
    fn parses_chunks_and_ranges() {
        let h = header(10, 2);
        assert!(EntryView::parse(&entry(&h, &[b"ab", b"c", b"", b"dddd", b"e"])).is_err());
        let bytes = entry(&h, &[b"ab", b"c", b""]);
        let v = EntryView::parse(&bytes).unwrap();
        assert_eq!(v.chunk_count(), 3);
        assert_eq!(h.chunk_range(2), (8, 10));
        assert_eq!(v.chunk(1), Some(&b"c"[..]));
    }

    #[test]
    fn wrong_chunk_counts_and_trailing_bytes_are_rejected() {
        let h = header(10, 2);
        let mut bytes = entry(&h, &[b"a", b"b", b"c"]);
        bytes.push(0);
        assert!(EntryView::parse(&bytes).is_err());
        let mut lying = h.encode();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&7u32.to_le_bytes());
        assert!(EntryView::parse(&lying).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = EntryView::parse(&bytes);
        }

        #[test]
        fn mutated_entries_never_panic(pos in 0usize..120, val in any::<u8>()) {
            let h = header(10, 2);
            let mut bytes = entry(&h, &[b"ab", b"cd", b"e"]);
            let i = pos % bytes.len();
            bytes[i] = val;
            if let Ok(v) = EntryView::parse(&bytes) {
                for i in 0..v.chunk_count() {
                    let _ = v.chunk(i);
                }
            }
        }
    }
}
