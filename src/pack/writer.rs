//! Streaming pack writer: entries go to a temporary file that becomes a sealed pack, ready to
//! be installed in a store, only when finished.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::append::Appender;
use super::{EntryHeader, IndexRecord, PACK_MAGIC, PackError, PackIndex, PackName, VERSION};
use crate::encoding::Writer as _;
use crate::object::ObjectId;
use crate::progress::Progress;

/// A finished pack in a temporary file, with its index, not yet in any store. Dropping it
/// deletes the file.
pub struct SealedPack {
    /// The temporary file.
    pub file: tempfile::TempPath,
    /// Its name (content hash).
    pub name: PackName,
    /// Its length in bytes.
    pub len: u64,
    /// Its index.
    pub index: PackIndex,
}

/// A pack file in a temporary file: its bytes are complete and hashed, but no index was built.
pub struct UnindexedPack {
    /// The temporary file.
    pub file: tempfile::TempPath,
    /// Its name (content hash).
    pub name: PackName,
    /// Its length in bytes.
    pub len: u64,
}

/// An entry's index record and the delta bases its chunks name.
type Indexed = (IndexRecord, Vec<ObjectId>);

/// Appends received bytes to a pack being written; see [`PackWriter::raw_sink`].
pub struct RawSink<'a> {
    writer: &'a mut PackWriter,
    progress: &'a dyn Progress,
}

impl Write for RawSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.progress.cancelled() {
            return Err(crate::progress::interrupted());
        }
        self.writer.write(buf).map_err(std::io::Error::other)?;
        self.progress.advance(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes one new pack. Dropping it unfinished leaves no trace.
pub struct PackWriter {
    dir: PathBuf,
    tmp: tempfile::TempPath,
    out: Appender,
    hasher: blake3::Hasher,
    offset: u64,
    records: Vec<Indexed>,
    ids: std::collections::HashSet<ObjectId>,
    open: Option<OpenEntry>,
    raw_bytes: bool,
}

struct OpenEntry {
    header: EntryHeader,
    start: u64,
}

impl PackWriter {
    /// Starts a pack in a temporary file in `dir`.
    pub fn new(dir: &Path) -> Result<PackWriter, PackError> {
        let tmp = tempfile::Builder::new().prefix(".tmp-pack-").tempfile_in(dir).map_err(|e| PackError::io(dir, e))?;
        let (file, tmp) = tmp.into_parts();
        let mut w = PackWriter {
            dir: dir.to_path_buf(),
            tmp,
            out: Appender::new(file),
            hasher: blake3::Hasher::new(),
            offset: 0,
            records: Vec::new(),
            ids: Default::default(),
            open: None,
            raw_bytes: false,
        };
        let mut header = PACK_MAGIC.to_vec();
        header.put_u32(VERSION);
        header.put_u32(0);
        w.write(&header)?;
        Ok(w)
    }

    /// Writes this pack past the page cache where the filesystem allows it: for a pack that
    /// no step of this command reads back (a commit's, a repack's), not one about to be sent
    /// or verified.
    pub fn bypassing_cache(mut self) -> Self {
        self.out.bypass_cache();
        self
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), PackError> {
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        let path = self.dir.clone();
        self.out.write_all(bytes).map_err(|e| PackError::io(&path, e))
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True if this pack already holds (or is writing) `id`.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.ids.contains(id) || self.open.as_ref().is_some_and(|o| o.header.id == *id)
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

    /// Closes the open entry with its delta chain depth and the bases its chunks name.
    pub fn end(&mut self, depth: u8, bases: Vec<ObjectId>) -> Result<(), PackError> {
        let Some(open) = self.open.take() else { return Ok(()) };
        let record = IndexRecord {
            id: open.header.id,
            offset: open.start,
            len: self.offset - open.start,
            data_len: open.header.meta.data_len,
            kind: open.header.kind,
            depth,
            base_count: 0,
            first_base: 0,
        };
        self.ids.insert(record.id);
        self.records.push((record, bases));
        Ok(())
    }

    /// Writes a whole small entry in one call.
    pub fn write_entry(&mut self, header: EntryHeader, chunks: &[Vec<u8>], depth: u8) -> Result<(), PackError> {
        self.begin(header)?;
        for c in chunks {
            self.push_chunk(c)?;
        }
        self.end(depth, Vec::new())
    }

    /// Appends an entry copied as it is stored elsewhere, described by its record there.
    pub fn copy_entry(&mut self, record: &IndexRecord, bases: &[ObjectId], entry: &[u8]) -> Result<(), PackError> {
        let start = self.offset;
        self.write(entry)?;
        let rec = IndexRecord { offset: start, ..*record };
        self.ids.insert(rec.id);
        self.records.push((rec, bases.to_vec()));
        Ok(())
    }

    /// A sink for bytes that hold whole entries the writer does not index (a received
    /// range), reporting them to `progress`; the pack can then only be finished with
    /// [`PackWriter::finish_unindexed`], and must be verified.
    pub fn raw_sink<'a>(&'a mut self, progress: &'a dyn Progress) -> RawSink<'a> {
        self.raw_bytes = true;
        RawSink { writer: self, progress }
    }

    /// Number of objects written.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && !self.raw_bytes
    }

    /// Seals the pack with its index. None (and no file) when nothing was written.
    pub fn finish(self) -> Result<Option<SealedPack>, PackError> {
        if self.raw_bytes {
            return Err(PackError::corrupt(&self.dir, "a pack with copied ranges must be indexed from its content"));
        }
        if self.records.is_empty() {
            return Ok(None);
        }
        let (file, name, len, records) = self.seal()?;
        Ok(Some(SealedPack { file, name, len, index: PackIndex::build(name.0, records) }))
    }

    /// Seals the pack without an index (see [`PackWriter::copy_raw`]). None when empty.
    pub fn finish_unindexed(self) -> Result<Option<UnindexedPack>, PackError> {
        if self.is_empty() {
            return Ok(None);
        }
        let (file, name, len, _) = self.seal()?;
        Ok(Some(UnindexedPack { file, name, len }))
    }

    /// Writes the trailer and flushes the file to disk.
    fn seal(mut self) -> Result<(tempfile::TempPath, PackName, u64, Vec<Indexed>), PackError> {
        let name = PackName(*self.hasher.finalize().as_bytes());
        let dir = self.dir.clone();
        let io = |e| PackError::io(&dir, e);
        self.out.write_all(&name.0).map_err(io)?;
        self.out.flush().map_err(io)?;
        self.out.file().sync_all().map_err(io)?;
        Ok((self.tmp, name, self.offset + 32, self.records))
    }
}
