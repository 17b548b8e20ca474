//! The object database: every pack of a repository behind get/has/put, with delta bases
//! resolved transparently and every object verified against its id when read whole.

mod cache;
mod writer;

pub use writer::{BaseChoice, NewObject, ObjectWriter, TensorSource, release_pages};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::codec::{ChunkView, CodecError, convert};
use crate::object::{ObjectId, ObjectKind};
use crate::pack::{EntryHeader, IndexRecord, Pack, PackError};
use cache::ChunkCache;

/// Elements per chunk for new tensors: 1 Mi elements (2 MiB of BF16), small enough to spread
/// over cores, large enough that per-chunk headers and tables cost nothing.
pub const DEFAULT_CHUNK_ELEMS: u64 = 1 << 20;

/// Objects larger than this are never read whole into memory.
pub const MAX_IN_MEMORY: u64 = 256 << 20;

/// Failure to read or write an object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No pack holds the object.
    #[error("object {0} not found in the repository")]
    NotFound(ObjectId),
    /// The object is there but wrong.
    #[error("object {id} is corrupt: {what}")]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// What is wrong.
        what: String,
    },
    /// A pack file problem.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// Another I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl StoreError {
    fn corrupt(id: ObjectId, what: impl ToString) -> StoreError {
        StoreError::Corrupt { id, what: what.to_string() }
    }
}

/// How one stored object is held, for accounting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StorageInfo {
    /// Bytes of its pack entry.
    pub stored: u64,
    /// Chunks per codec name.
    pub codecs: Vec<(String, u64)>,
    /// Delta bases referenced by its chunks.
    pub bases: Vec<ObjectId>,
    /// Delta chain depth.
    pub depth: u8,
}

/// Chunks decoded or encoded per parallel batch: enough to keep every core busy, few
/// enough that memory stays a handful of chunks per core.
pub fn batch_len() -> usize {
    (rayon::current_num_threads() * 2).max(2)
}

/// Runs `produce` on each batch in parallel with `consume` of the previous batch's result,
/// so the sequential part (hashing, writing) overlaps the parallel part (decoding, encoding).
pub fn pipelined<B: Sync, T: Send>(
    batches: &[B],
    produce: impl Fn(&B) -> Result<T, StoreError> + Sync,
    mut consume: impl FnMut(&B, T) -> Result<(), StoreError> + Send,
) -> Result<(), StoreError> {
    let mut pending: Option<(&B, T)> = None;
    for batch in batches {
        let previous = pending.take();
        let (consumed, produced) = rayon::join(|| previous.map_or(Ok(()), |(b, t)| consume(b, t)), || produce(batch));
        consumed?;
        pending = Some((batch, produced?));
    }
    pending.map_or(Ok(()), |(b, t)| consume(b, t))
}

/// A hasher for an object's id, primed with the tensor header when it is a tensor.
fn id_hasher(h: &EntryHeader) -> crate::object::IdHasher {
    match h.kind {
        ObjectKind::Tensor => h.meta.hasher(),
        kind => crate::object::IdHasher::new(kind, h.meta.data_len),
    }
}

/// All packs of one repository.
pub struct Odb {
    dir: PathBuf,
    packs: Vec<Pack>,
    cache: ChunkCache,
}

impl Odb {
    /// Opens every pack under `objects_dir/pack` that has an index.
    pub fn open(objects_dir: &Path) -> Result<Odb, StoreError> {
        let dir = objects_dir.join("pack");
        let mut packs = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| crate::fsutil::with_path(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "idx"))
            .collect();
        names.sort();
        for idx in names {
            packs.push(Pack::open(&idx.with_extension("pack"), &idx)?);
        }
        Ok(Odb { dir, packs, cache: ChunkCache::new(64 << 20) })
    }

    /// The directory new packs go to.
    pub fn pack_dir(&self) -> &Path {
        &self.dir
    }

    /// The open packs.
    pub fn packs(&self) -> &[Pack] {
        &self.packs
    }

    /// Where an object is stored.
    pub fn find(&self, id: &ObjectId) -> Option<(&Pack, IndexRecord)> {
        self.packs.iter().find_map(|p| p.find(id).map(|r| (p, *r)))
    }

    /// True if the object is stored.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.find(id).is_some()
    }

    /// The entry header (kind, dtype, shape, size) of a stored object.
    pub fn header(&self, id: &ObjectId) -> Result<EntryHeader, StoreError> {
        let (pack, rec) = self.find(id).ok_or(StoreError::NotFound(*id))?;
        Ok(pack.entry(&rec)?.header)
    }

    /// Delta depth of a stored object (0 when standalone).
    pub fn depth(&self, id: &ObjectId) -> Option<u8> {
        self.find(id).map(|(_, r)| r.depth)
    }

    /// Decodes chunk `i` of an object through the cache, so a base shared by many deltas
    /// decodes once. The chunk's own bases are not cached: once it is, they are not needed again,
    /// and caching a whole chain would push out the chunks that are.
    pub fn chunk(&self, id: &ObjectId, i: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(hit) = self.cache.get(id, i) {
            return Ok(hit);
        }
        Ok(self.cache.insert(*id, i, self.decode_with(id, i, false)?))
    }

    /// Decodes chunk `i` of an object, resolving its base through the cache.
    pub fn decode_chunk(&self, id: &ObjectId, i: u64) -> Result<Vec<u8>, StoreError> {
        self.decode_with(id, i, true)
    }

    /// Decodes chunk `i`, reading its base's chunks through the cache or not.
    fn decode_with(&self, id: &ObjectId, i: u64, cache_bases: bool) -> Result<Vec<u8>, StoreError> {
        let (pack, rec) = self.find(id).ok_or(StoreError::NotFound(*id))?;
        let entry = pack.entry(&rec)?;
        let stored = entry.chunk(i as usize).ok_or_else(|| StoreError::corrupt(*id, format!("no chunk {i}")))?;
        let view = ChunkView::parse(stored).map_err(|e| StoreError::corrupt(*id, e))?;
        let (start, end) = entry.header.chunk_range(i);
        if view.raw_len as u64 != end - start {
            return Err(StoreError::corrupt(
                *id,
                format!("chunk {i} holds {} bytes, expected {}", view.raw_len, end - start),
            ));
        }
        let base = match view.base {
            Some(base_id) => Some(self.base_range(&base_id, &entry.header, start, end, cache_bases)?),
            None => None,
        };
        let decoded = view.decode(entry.header.meta.dtype, base.as_deref());
        pack.release(stored);
        decoded.map_err(|e: CodecError| StoreError::corrupt(*id, e))
    }

    /// The base's elements matching bytes `start..end` of `fine`, converted to the fine dtype.
    fn base_range(
        &self,
        base: &ObjectId,
        fine: &EntryHeader,
        start: u64,
        end: u64,
        cached: bool,
    ) -> Result<Vec<u8>, StoreError> {
        let bh = self.header(base)?;
        let (fw, bw) = (fine.meta.dtype.width() as u64, bh.meta.dtype.width() as u64);
        let bytes = self.read_range_with(base, &bh, start / fw * bw, end / fw * bw, cached)?;
        convert::convert(bytes, bh.meta.dtype, fine.meta.dtype).ok_or_else(|| {
            StoreError::corrupt(fine.id, format!("base {} has incompatible dtype {}", base.short(), bh.meta.dtype))
        })
    }

    /// Bytes `start..end` of an object's data, decoding only the chunks that cover them
    /// (through the cache).
    pub fn read_range(&self, id: &ObjectId, header: &EntryHeader, start: u64, end: u64) -> Result<Vec<u8>, StoreError> {
        self.read_range_with(id, header, start, end, true)
    }

    fn read_range_with(
        &self,
        id: &ObjectId,
        header: &EntryHeader,
        start: u64,
        end: u64,
        cached: bool,
    ) -> Result<Vec<u8>, StoreError> {
        if end > header.meta.data_len || start > end || end - start > MAX_IN_MEMORY {
            return Err(StoreError::corrupt(
                *id,
                format!("range {start}..{end} outside its {} bytes", header.meta.data_len),
            ));
        }
        let chunk_bytes = header.chunk_elems * header.meta.dtype.width() as u64;
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut pos = start;
        while pos < end {
            let i = pos / chunk_bytes;
            let chunk = if cached { self.chunk(id, i)? } else { Arc::new(self.decode_with(id, i, false)?) };
            let offset = (pos - i * chunk_bytes) as usize;
            let take = ((end - pos) as usize).min(chunk.len().saturating_sub(offset));
            if take == 0 {
                return Err(StoreError::corrupt(*id, format!("chunk {i} shorter than its range")));
            }
            out.extend_from_slice(&chunk[offset..offset + take]);
            pos += take as u64;
        }
        Ok(out)
    }

    /// Streams an object's data to `sink` in order, decoding chunks in parallel, and verifies
    /// the id at the end. Returns the header.
    pub fn stream(
        &self,
        id: &ObjectId,
        sink: impl FnMut(&[u8]) -> std::io::Result<()> + Send,
    ) -> Result<EntryHeader, StoreError> {
        let mut headers = self.stream_all(std::slice::from_ref(id), sink)?;
        headers.pop().ok_or(StoreError::NotFound(*id))
    }

    /// Streams the data of several objects back to back, decoding chunks of all of them in
    /// parallel (a file of many small tensors keeps every core busy), and verifies every id.
    pub fn stream_all(
        &self,
        ids: &[ObjectId],
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()> + Send,
    ) -> Result<Vec<EntryHeader>, StoreError> {
        let headers: Vec<EntryHeader> = ids.iter().map(|id| self.header(id)).collect::<Result<_, _>>()?;
        let work: Vec<(usize, u64)> =
            headers.iter().enumerate().flat_map(|(k, h)| (0..h.chunk_count()).map(move |i| (k, i))).collect();
        let mut hashers: Vec<Option<crate::object::IdHasher>> = headers.iter().map(|h| Some(id_hasher(h))).collect();
        let batches: Vec<&[(usize, u64)]> = work.chunks(batch_len()).collect();
        pipelined(
            &batches,
            |batch| batch.par_iter().map(|&(k, i)| self.decode_chunk(&ids[k], i)).collect::<Result<Vec<_>, _>>(),
            |batch, decoded| {
                for (&(k, _), data) in batch.iter().zip(&decoded) {
                    if let Some(h) = hashers[k].as_mut() {
                        h.update(data);
                    }
                    sink(data)?;
                }
                Ok(())
            },
        )?;
        for (k, h) in hashers.iter_mut().enumerate() {
            if h.take().is_none_or(|h| h.finish() != ids[k]) {
                return Err(StoreError::corrupt(ids[k], "content does not hash to its id"));
            }
        }
        Ok(headers)
    }

    /// Reads a whole (small) object and verifies it.
    pub fn read(&self, id: &ObjectId) -> Result<(ObjectKind, Vec<u8>), StoreError> {
        let header = self.header(id)?;
        if header.meta.data_len > MAX_IN_MEMORY {
            return Err(StoreError::corrupt(*id, "too large to read into memory"));
        }
        let mut out = Vec::with_capacity(header.meta.data_len as usize);
        self.stream(id, |b| {
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok((header.kind, out))
    }

    /// Reads an object that must be of `kind`.
    pub fn read_kind(&self, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>, StoreError> {
        let (k, body) = self.read(id)?;
        if k != kind {
            return Err(StoreError::corrupt(*id, format!("is a {}, expected a {}", k.name(), kind.name())));
        }
        Ok(body)
    }

    /// How an object is stored: bytes, codecs, bases.
    pub fn storage(&self, id: &ObjectId) -> Result<StorageInfo, StoreError> {
        let (pack, rec) = self.find(id).ok_or(StoreError::NotFound(*id))?;
        let entry = pack.entry(&rec)?;
        let mut codecs: Vec<(String, u64)> = Vec::new();
        let mut bases = Vec::new();
        for i in 0..entry.chunk_count() {
            let view = entry.chunk(i).map(ChunkView::parse).transpose().map_err(|e| StoreError::corrupt(*id, e))?;
            let Some(view) = view else { continue };
            match codecs.iter_mut().find(|c| c.0 == view.codec.name()) {
                Some(c) => c.1 += 1,
                None => codecs.push((view.codec.name().to_string(), 1)),
            }
            if let Some(b) = view.base.filter(|b| !bases.contains(b)) {
                bases.push(b);
            }
        }
        Ok(StorageInfo { stored: rec.len, codecs, bases, depth: rec.depth })
    }
}
