//! Streaming pack writer: entries go to a temporary file that becomes a pack only when finished.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{EntryHeader, IndexRecord, PACK_MAGIC, PackError, PackIndex, VERSION};
use crate::encoding::Writer as _;
use crate::fsutil;
use crate::object::ObjectId;

/// Writes one new pack. Dropping it unfinished leaves no trace.
pub struct PackWriter {
    dir: PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    offset: u64,
    records: HashMap<ObjectId, IndexRecord>,
    open: Option<OpenEntry>,
}

struct OpenEntry {
    header: EntryHeader,
    start: u64,
}

impl PackWriter {
    /// Starts a pack in `dir` (the repository's pack directory).
    pub fn new(dir: &Path) -> Result<PackWriter, PackError> {
        let tmp = tempfile::Builder::new().prefix(".tmp-pack-").tempfile_in(dir).map_err(|e| PackError::io(dir, e))?;
        let file = tmp.reopen().map_err(|e| PackError::io(tmp.path(), e))?;
        let mut w = PackWriter {
            dir: dir.to_path_buf(),
            tmp: Some(tmp),
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            offset: 0,
            records: HashMap::new(),
            open: None,
        };
        let mut header = PACK_MAGIC.to_vec();
        header.put_u32(VERSION);
        header.put_u32(0);
        w.write(&header)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), PackError> {
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        let path = self.dir.clone();
        self.out.write_all(bytes).map_err(|e| PackError::io(&path, e))
    }

    /// True if this pack already holds (or is writing) `id`.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.records.contains_key(id) || self.open.as_ref().is_some_and(|o| o.header.id == *id)
    }

    /// The record of an object written to this pack.
    pub fn record(&self, id: &ObjectId) -> Option<&IndexRecord> {
        self.records.get(id)
    }

    /// Opens an entry; its chunks follow via [`PackWriter::push_chunk`].
    pub fn begin(&mut self, header: EntryHeader) -> Result<(), PackError> {
        let start = self.offset;
        self.write(&header.encode())?;
        self.open = Some(OpenEntry { header, start });
        Ok(())
    }

    /// Appends the next stored chunk of the open entry.
    pub fn push_chunk(&mut self, chunk: &[u8]) -> Result<(), PackError> {
        self.write(&(chunk.len() as u32).to_le_bytes())?;
        self.write(chunk)
    }

    /// Closes the open entry with its delta chain depth.
    pub fn end(&mut self, depth: u8) -> Result<(), PackError> {
        let Some(open) = self.open.take() else { return Ok(()) };
        let record = IndexRecord {
            id: open.header.id,
            offset: open.start,
            len: self.offset - open.start,
            data_len: open.header.meta.data_len,
            kind: open.header.kind,
            depth,
        };
        self.records.insert(record.id, record);
        Ok(())
    }

    /// Writes a whole small entry in one call.
    pub fn write_entry(&mut self, header: EntryHeader, chunks: &[Vec<u8>], depth: u8) -> Result<(), PackError> {
        self.begin(header)?;
        for c in chunks {
            self.push_chunk(c)?;
        }
        self.end(depth)
    }

    /// Number of objects written.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Seals the pack: trailer, fsync, rename, then the index the same way. Returns its index,
    /// or None (and no files) when nothing was written.
    pub fn finish(mut self) -> Result<Option<PackIndex>, PackError> {
        if self.records.is_empty() {
            return Ok(None);
        }
        let pack_hash = *self.hasher.finalize().as_bytes();
        let dir = self.dir.clone();
        let io = |e| PackError::io(&dir, e);
        self.out.write_all(&pack_hash).map_err(io)?;
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)?;
        let name = format!("pack-{}", hex::encode(pack_hash));
        let pack_path = self.dir.join(format!("{name}.pack"));
        if let Some(tmp) = self.tmp.take() {
            tmp.persist(&pack_path).map_err(|e| PackError::io(&pack_path, e.error))?;
        }
        let mut records: Vec<IndexRecord> = self.records.values().copied().collect();
        records.sort_by_key(|r| r.id);
        let index = PackIndex { pack_hash, records };
        let idx_path = self.dir.join(format!("{name}.idx"));
        fsutil::atomic_write(&idx_path, &index.encode()).map_err(|e| PackError::io(&idx_path, e))?;
        Ok(Some(index))
    }
}
