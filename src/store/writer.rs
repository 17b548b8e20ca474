//! Adding objects: deduplicated by id, tensors chunked and encoded in parallel against the
//! best delta base, everything streamed into one new pack.

use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use super::{Odb, StoreError};
use crate::codec::{self, ChunkView, Codec, EncodeOptions, convert};
use crate::object::{DType, ObjectId, ObjectKind, TensorMeta};
use crate::pack::{EntryHeader, PackName, PackWriter};
use crate::progress::{Progress, Silent};

/// A tensor's bytes inside a memory-mapped file.
pub struct TensorSource<'a> {
    /// The mapped file.
    pub map: &'a Mmap,
    /// Absolute offset of the first element byte.
    pub start: u64,
    /// Dtype, shape, length.
    pub meta: TensorMeta,
}

impl TensorSource<'_> {
    fn bytes(&self, start: u64, end: u64) -> &[u8] {
        &self.map[(self.start + start) as usize..(self.start + end) as usize]
    }

    /// Tells the kernel the pages of `start..end` (relative) can go: they were read already.
    fn release(&self, start: u64, end: u64) {
        crate::fsutil::release_pages(self.map, self.start + start, end - start);
    }
}

/// An object to store from a mapped file.
pub struct NewObject<'a> {
    /// Tensor or blob.
    pub kind: ObjectKind,
    /// Where its bytes are.
    pub src: TensorSource<'a>,
    /// Its id, already computed.
    pub id: ObjectId,
    /// Delta base candidates, best first.
    pub candidates: Vec<ObjectId>,
}

/// The base chosen for a tensor, with how it was found, for accounting and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseChoice {
    /// Stored standalone.
    Standalone,
    /// Stored as a delta against this tensor.
    Delta(ObjectId),
    /// Already stored: nothing written.
    Duplicate,
}

/// Writes new objects into one pack.
pub struct ObjectWriter<'a> {
    odb: &'a Odb,
    pack: PackWriter,
    opts: EncodeOptions,
    chunk_elems: u64,
    max_chain: u8,
    written_bytes: u64,
    progress: &'a dyn Progress,
    /// Bases named by the chunks of the entry being written.
    open_bases: Vec<ObjectId>,
    /// The id hash of the entry being written, over exactly the bytes that were encoded.
    open_hasher: Option<crate::object::IdHasher>,
    /// Rewriting objects that are stored already (`gc --aggressive`): chain depths of those
    /// rewritten so far, which their old entries no longer tell.
    rewritten: Option<std::collections::HashMap<ObjectId, u8>>,
}

impl<'a> ObjectWriter<'a> {
    /// Starts a new pack in the repository.
    pub fn new(odb: &'a Odb, opts: EncodeOptions, chunk_elems: u64, max_chain: u8) -> Result<Self, StoreError> {
        Ok(ObjectWriter {
            odb,
            pack: PackWriter::new(&odb.staging_dir())?.bypassing_cache(),
            opts,
            chunk_elems: chunk_elems.max(1),
            max_chain,
            written_bytes: 0,
            progress: &Silent,
            open_bases: Vec::new(),
            open_hasher: None,
            rewritten: None,
        })
    }

    /// Writes objects again even when they are stored already, taking the chain depth of
    /// bases from `depths` (what they were rewritten with) where it has them.
    pub fn rewriting(self, depths: std::collections::HashMap<ObjectId, u8>) -> Self {
        ObjectWriter { rewritten: Some(depths), ..self }
    }

    /// The chain depth of a stored object as rewritten here, if it was.
    fn rewritten_depth(&self, id: &ObjectId) -> Option<u8> {
        self.rewritten.as_ref()?.get(id).copied()
    }

    /// Reports the logical bytes stored (or found already stored) to `progress` from now on.
    pub fn with_progress(self, progress: &'a dyn Progress) -> Self {
        ObjectWriter { progress, ..self }
    }

    /// Counts logical bytes that were handled without going through a chunk (headers).
    pub fn advance(&self, bytes: u64) {
        self.progress.advance(bytes);
    }

    /// True if the object is stored already or written in this pack.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.pack.contains(id) || self.odb.contains(id)
    }

    /// The repository being written to.
    pub fn odb(&self) -> &Odb {
        self.odb
    }

    /// Stored bytes written so far.
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Stores a small object held in memory (tree, commit, tag, tensor file, small blob).
    pub fn put(&mut self, kind: ObjectKind, body: &[u8]) -> Result<ObjectId, StoreError> {
        let id = ObjectId::hash(kind, body);
        if !self.contains(&id) {
            let meta = TensorMeta { dtype: DType::U8, shape: Vec::new(), data_len: body.len() as u64 };
            let header = EntryHeader { kind, id, meta, chunk_elems: self.chunk_elems };
            let chunks: Vec<Vec<u8>> = body
                .chunks(self.chunk_elems as usize)
                .collect::<Vec<_>>()
                .par_iter()
                .map(|c| codec::encode_with(Codec::Raw, DType::U8, c, None, self.opts))
                .collect();
            self.written_bytes += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
            self.pack.write_entry(header, &chunks, 0)?;
        }
        Ok(id)
    }

    /// Stores blobs held in memory, each with the id computed from those same bytes (so no
    /// file can change between hashing and encoding), encoding them in parallel; those
    /// already stored are skipped. Returns how many were new.
    pub fn put_blobs(&mut self, blobs: Vec<(ObjectId, Vec<u8>)>) -> Result<usize, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<(ObjectId, Vec<u8>)> =
            blobs.into_iter().filter(|(id, _)| !self.contains(id) && seen.insert(*id)).collect();
        let (opts, chunk_elems) = (self.opts, self.chunk_elems as usize);
        let encoded: Vec<Vec<Vec<u8>>> = fresh
            .par_iter()
            .map(|(_, data)| data.chunks(chunk_elems).map(|c| codec::encode_chunk(DType::U8, c, None, opts)).collect())
            .collect();
        for ((id, data), chunks) in fresh.iter().zip(&encoded) {
            let meta = TensorMeta { dtype: DType::U8, shape: Vec::new(), data_len: data.len() as u64 };
            let header = EntryHeader { kind: ObjectKind::Blob, id: *id, meta, chunk_elems: self.chunk_elems };
            self.written_bytes += chunks.iter().map(|c| c.len() as u64 + 4).sum::<u64>();
            self.pack.write_entry(header, chunks, 0)?;
            self.progress.advance(data.len() as u64);
        }
        Ok(fresh.len())
    }

    /// Stores `len` bytes at `start` of a mapped file as a blob whose id is already known.
    pub fn put_blob(&mut self, map: &Mmap, start: u64, len: u64, id: ObjectId) -> Result<BaseChoice, StoreError> {
        let meta = TensorMeta { dtype: DType::U8, shape: Vec::new(), data_len: len };
        let item =
            NewObject { kind: ObjectKind::Blob, src: TensorSource { map, start, meta }, id, candidates: Vec::new() };
        Ok(self.put_all(vec![item])?.remove(0))
    }

    /// Stores many objects, in order, encoding chunks of all of them in parallel so that a
    /// file of many small tensors keeps every core busy. Returns how each was stored.
    pub fn put_all(&mut self, items: Vec<NewObject<'_>>) -> Result<Vec<BaseChoice>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let stored = |id: &ObjectId| match self.rewritten {
            Some(_) => self.pack.contains(id),
            None => self.contains(id),
        };
        let fresh: Vec<bool> = items.iter().map(|it| !stored(&it.id) && seen.insert(it.id)).collect();
        let known: u64 = items.iter().zip(&fresh).filter(|(_, f)| !**f).map(|(it, _)| it.src.meta.data_len).sum();
        self.progress.advance(known);
        let bases: Vec<Option<Base>> = items
            .par_iter()
            .zip(&fresh)
            .map(|(it, &fresh)| if fresh { self.pick_base(&it.src, &it.candidates) } else { Ok(None) })
            .collect::<Result<_, _>>()?;
        let headers: Vec<EntryHeader> = items
            .iter()
            .map(|it| EntryHeader {
                kind: it.kind,
                id: it.id,
                meta: it.src.meta.clone(),
                chunk_elems: self.chunk_elems,
            })
            .collect();
        let work: Vec<(usize, u64)> = (0..items.len())
            .filter(|&k| fresh[k])
            .flat_map(|k| (0..headers[k].chunk_count().max(1)).map(move |i| (k, i)))
            .collect();
        let (odb, opts) = (self.odb, self.opts);
        let encode = |&(k, i): &(usize, u64)| {
            let h = &headers[k];
            (h.chunk_count() > 0).then(|| encode_chunk(odb, opts, h, &items[k].src, bases[k].as_ref(), i)).transpose()
        };
        super::pipelined(&work, encode, |&(k, i), chunk| self.write_chunk(&headers[k], bases[k].as_ref(), i, chunk))?;
        Ok(fresh
            .iter()
            .zip(bases)
            .map(|(&fresh, base)| match (fresh, base) {
                (false, _) => BaseChoice::Duplicate,
                (true, Some(b)) => BaseChoice::Delta(b.id),
                (true, None) => BaseChoice::Standalone,
            })
            .collect())
    }

    /// Appends chunk `i` of an object, opening its entry before the first chunk and closing it
    /// after the last (`chunk` is None for an object with no data).
    fn write_chunk(
        &mut self,
        header: &EntryHeader,
        base: Option<&Base>,
        i: u64,
        chunk: Option<EncodedChunk>,
    ) -> Result<(), StoreError> {
        if self.progress.cancelled() {
            return Err(StoreError::Cancelled);
        }
        if i == 0 {
            self.pack.begin(header.clone())?;
            self.open_hasher = Some(super::id_hasher(header));
        }
        if let Some(EncodedChunk { source, stored }) = chunk {
            // The id hash goes over the very bytes that were encoded, so a file rewritten
            // after it was hashed is caught here, never stored under an id its bytes lack.
            if let Some(h) = self.open_hasher.as_mut() {
                h.update_serial(&source);
            }
            let base = ChunkView::parse(&stored).map_err(|e| StoreError::corrupt(header.id, e))?.base;
            if let Some(b) = base.filter(|b| !self.open_bases.contains(b)) {
                self.open_bases.push(b);
            }
            self.written_bytes += stored.len() as u64 + 4;
            self.pack.push_chunk(&stored)?;
            self.progress.advance(source.len() as u64);
        }
        if i + 1 >= header.chunk_count() {
            if self.open_hasher.take().is_none_or(|h| h.finish() != header.id) {
                return Err(StoreError::SourceChanged(format!("object {}", header.id.short())));
            }
            let bases = std::mem::take(&mut self.open_bases);
            let depth = base.filter(|_| !bases.is_empty()).map_or(0, |b| b.depth.saturating_add(1));
            if let Some(depths) = self.rewritten.as_mut() {
                depths.insert(header.id, depth);
            }
            self.pack.end(depth, bases)?;
        }
        Ok(())
    }

    /// Trial-encodes a sample against each usable candidate and returns the one that saves most,
    /// or None when standalone is smallest.
    /// The sample covers only the elements a candidate has (a resized vocabulary deltas its
    /// overlapping rows), so candidates are ranked by the fraction of bytes they save.
    fn pick_base(&self, src: &TensorSource<'_>, candidates: &[ObjectId]) -> Result<Option<Base>, StoreError> {
        let mut best: Option<(f64, Base)> = None;
        for &cand in candidates {
            let Some(base) = Base::usable(self.odb, &src.meta, cand, self.rewritten_depth(&cand), self.max_chain)?
            else {
                continue;
            };
            let sample = Sample::of(src, self.chunk_elems, base.header.meta.elements());
            let alone = sample.size(self.odb, src.meta.dtype, None, self.opts)?;
            let delta = sample.size(self.odb, src.meta.dtype, Some(&base), self.opts)?;
            let ratio = delta as f64 / alone.max(1) as f64;
            if ratio < 1.0 && best.as_ref().is_none_or(|b| ratio < b.0) {
                best = Some((ratio, base));
            }
        }
        Ok(best.map(|b| b.1))
    }

    /// Seals the pack and installs it. None when nothing new was written.
    pub fn finish(self) -> Result<Option<PackName>, StoreError> {
        Ok(self.finish_rewriting()?.0)
    }

    /// Like [`ObjectWriter::finish`], also giving back the depths of what was rewritten (for
    /// the next writer of a rewrite that spans packs).
    pub fn finish_rewriting(self) -> Result<(Option<PackName>, std::collections::HashMap<ObjectId, u8>), StoreError> {
        let depths = self.rewritten.unwrap_or_default();
        match self.pack.finish()? {
            Some(sealed) => Ok((Some(self.odb.install(sealed)?), depths)),
            None => Ok((None, depths)),
        }
    }
}

/// A chunk as stored, with the source bytes it encodes.
struct EncodedChunk {
    source: Vec<u8>,
    stored: Vec<u8>,
}

/// Encodes chunk `i` of an object against its base, if any. The chunk is read from the
/// mapped file once, into memory of its own: the encoder reads its input several times
/// (trials, transform, checksum), and a file rewritten meanwhile must not give it two
/// versions of the same bytes.
fn encode_chunk(
    odb: &Odb,
    opts: EncodeOptions,
    header: &EntryHeader,
    src: &TensorSource<'_>,
    base: Option<&Base>,
    i: u64,
) -> Result<EncodedChunk, StoreError> {
    let (start, end) = header.chunk_range(i);
    let source = src.bytes(start, end).to_vec();
    src.release(start, end);
    let dtype = header.meta.dtype;
    let base_bytes = match base {
        Some(b) => b.range(odb, dtype, start, end)?,
        None => None,
    };
    let base_ref = base.zip(base_bytes.as_deref()).map(|(b, bytes)| (b.id, bytes.as_slice()));
    let stored = match matrix_geometry(&header.meta, start) {
        Some(geometry) => codec::encode_matrix_chunk(dtype, &source, base_ref, geometry, opts),
        None => codec::encode_chunk(dtype, &source, base_ref, opts),
    };
    Ok(EncodedChunk { source, stored })
}

/// Where the chunk starting at byte `start` sits in its tensor seen as rows of its last
/// dimension; None for vectors.
fn matrix_geometry(meta: &TensorMeta, start: u64) -> Option<codec::lowrank::Geometry> {
    let cols = *meta.shape.last()?;
    let first = start / meta.dtype.width() as u64;
    (meta.shape.len() >= 2 && cols > 0)
        .then(|| codec::lowrank::Geometry { cols: cols as usize, col0: (first % cols) as usize })
}

/// A delta base for one tensor.
struct Base {
    id: ObjectId,
    header: EntryHeader,
    depth: u8,
}

impl Base {
    /// The candidate as a base for `meta`, if its dtype converts and the chain stays short
    /// (its depth is `depth` when given, else what its entry records).
    fn usable(
        odb: &Odb,
        meta: &TensorMeta,
        id: ObjectId,
        depth: Option<u8>,
        max_chain: u8,
    ) -> Result<Option<Base>, StoreError> {
        let Some((_, rec)) = odb.find(&id) else { return Ok(None) };
        let depth = depth.unwrap_or(rec.depth);
        if rec.kind != ObjectKind::Tensor || depth >= max_chain {
            return Ok(None);
        }
        let header = odb.header(&id)?;
        if !convert::can_convert(header.meta.dtype, meta.dtype) || header.meta.elements() == 0 {
            return Ok(None);
        }
        Ok(Some(Base { id, header, depth }))
    }

    /// The base elements matching fine bytes `start..end`, in the fine dtype; None past its end.
    fn range(&self, odb: &Odb, dtype: DType, start: u64, end: u64) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        if end / dtype.width() as u64 > self.header.meta.elements() {
            return Ok(None);
        }
        Ok(Some(odb.read_range_as(&self.id, &self.header, (start, end), dtype)?))
    }
}

/// A few evenly spread element windows of a tensor, used to compare bases cheaply.
struct Sample {
    ranges: Vec<(u64, u64)>,
    bytes: Vec<u8>,
}

/// Elements per sample window and windows per tensor.
const SAMPLE_WINDOW: u64 = 1024;
const SAMPLE_WINDOWS: u64 = 8;
/// How far past a touched page the kernel may map a file's large folio (2 MiB at most).
const FOLIO_SPAN: u64 = 2 << 20;

impl Sample {
    /// Evenly spread windows over the tensor's first chunk (and its first `limit` elements):
    /// the base chunk a trial decodes is then the one the first encode needs anyway, instead
    /// of chunks all over a large tensor that may leave the cache before they are used.
    fn of(src: &TensorSource<'_>, chunk_elems: u64, limit: u64) -> Sample {
        let w = src.meta.dtype.width() as u64;
        let n = src.meta.elements().min(limit).min(chunk_elems);
        let ranges: Vec<(u64, u64)> = if n <= SAMPLE_WINDOW * SAMPLE_WINDOWS {
            vec![(0, n * w)]
        } else {
            (0..SAMPLE_WINDOWS)
                .map(|k| (n / SAMPLE_WINDOWS * k * w, (n / SAMPLE_WINDOWS * k + SAMPLE_WINDOW) * w))
                .collect()
        };
        let bytes = ranges.iter().flat_map(|&(s, e)| src.bytes(s, e).to_vec()).collect();
        // The windows are copied. Their pages, and the rest of the large folios the kernel
        // mapped around them, would otherwise stay until the tensor is encoded, for every
        // tensor of the file at once.
        src.release(0, (n * w + FOLIO_SPAN).min(src.meta.data_len));
        Sample { ranges, bytes }
    }

    /// Stored size of the sample: byte-grouped alone, or the difference against `base`.
    fn size(&self, odb: &Odb, dtype: DType, base: Option<&Base>, opts: EncodeOptions) -> Result<u64, StoreError> {
        let Some(base) = base else {
            return Ok(codec::encode_with(Codec::Grouped, dtype, &self.bytes, None, opts).len() as u64);
        };
        let mut base_bytes = Vec::with_capacity(self.bytes.len());
        for &(s, e) in &self.ranges {
            match base.range(odb, dtype, s, e)? {
                Some(b) => base_bytes.extend_from_slice(&b),
                None => return Ok(u64::MAX),
            }
        }
        let delta = codec::encode_with(Codec::DiffContext, dtype, &self.bytes, Some((base.id, &base_bytes)), opts);
        Ok(delta.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_changed_after_hashing_are_never_stored_under_the_old_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("objects/pack")).unwrap();
        let odb = Odb::open_dir(&dir.path().join("objects")).unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"as hashed").unwrap();
        let hashed = ObjectId::hash(ObjectKind::Blob, b"as hashed");
        std::fs::write(&file, b"rewritten").unwrap();
        // SAFETY: a private test file nobody else touches.
        let map = unsafe { Mmap::map(&std::fs::File::open(&file).unwrap()) }.unwrap();
        let mut w = ObjectWriter::new(&odb, EncodeOptions::default(), 4, 8).unwrap();
        let err = w.put_blob(&map, 0, 9, hashed).unwrap_err();
        assert!(matches!(err, StoreError::SourceChanged(_)), "{err}");
        assert!(w.finish().unwrap().is_none(), "a pack was kept");
        assert!(odb.find(&hashed).is_none(), "stored under an id that does not match its bytes");
    }
}
