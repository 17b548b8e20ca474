//! The work tree: finding files, turning them into objects, and writing them back atomically.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::index::Stat;
use crate::object::{ChunkedFile, DType, EntryKind, IdHasher, ObjectId, ObjectKind, Segment, TensorFile, TensorMeta};
use crate::progress::Progress;
use crate::safetensors::{self as st, Span, TensorSpan};
use crate::spare::{Spare, Spares};
use crate::store::{BaseChoice, NewObject, ObjectWriter, Odb, StoreError, TensorSource};

/// Name of the per-directory ignore file (gitignore syntax).
pub const IGNORE_FILE: &str = ".mlvignore";

/// A work-tree operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A `.safetensors` file is invalid; nothing was written.
    #[error("{path}: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        source: st::FormatError,
    },
    /// A path mlv cannot store.
    #[error("{0}: file names must be valid UTF-8 and not contain '\\'")]
    BadPath(PathBuf),
    /// Object store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WorktreeError + '_ {
    move |source| WorktreeError::Io { path: path.to_path_buf(), source }
}

/// A regular file found in the work tree.
#[derive(Debug, Clone)]
pub struct FoundFile {
    /// Path relative to the root, `/`-separated.
    pub rel: String,
    /// Absolute path.
    pub abs: PathBuf,
    /// Its stat.
    pub stat: Stat,
}

/// True if the file is stored as a tensor file rather than a blob.
pub fn is_safetensors(rel: &str) -> bool {
    rel.ends_with(".safetensors")
}

/// What a walk of the work tree found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Regular files (or symlinks to them) mlv can store.
    pub files: Vec<FoundFile>,
    /// What was not stored, and why: names mlv cannot store, symlinks to directories or to
    /// nothing. Nothing is skipped without saying so.
    pub skipped: Vec<Skipped>,
}

/// A path a walk did not store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// Relative to the root (decoded lossily).
    pub path: String,
    /// Why.
    pub why: String,
}

/// What mlv sees at a work-tree path.
pub enum PathState {
    /// A regular file, or a symlink to one (tracked as the content it points at): the stat
    /// of the content.
    File(Stat),
    /// Something mlv does not store, and why.
    Skipped(&'static str),
    /// Nothing, or a directory.
    Absent,
}

/// Looks at `abs` as mlv tracks files: a symlink to a regular file is that file's content
/// (as in a Hugging Face cache snapshot, whose files link into `../../blobs/`); a symlink to
/// a directory is not followed (no cycles, no surprises).
pub fn inspect(abs: &Path) -> std::io::Result<PathState> {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    let meta = match std::fs::symlink_metadata(abs) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), NotFound | NotADirectory) => return Ok(PathState::Absent),
        Err(e) => return Err(crate::fsutil::with_path(abs, e)),
    };
    if meta.is_file() {
        return Ok(PathState::File(Stat::of(&meta)));
    }
    if !meta.is_symlink() {
        return Ok(if meta.is_dir() { PathState::Absent } else { PathState::Skipped("not a regular file") });
    }
    Ok(match std::fs::metadata(abs) {
        Ok(target) if target.is_file() => PathState::File(Stat::of(&target)),
        Ok(target) if target.is_dir() => PathState::Skipped("a symlink to a directory (not followed)"),
        Ok(_) => PathState::Skipped("a symlink to something that is not a regular file"),
        Err(e) if e.kind() == NotFound => PathState::Skipped("a symlink to nothing"),
        Err(_) => PathState::Skipped("a symlink that cannot be followed (a loop?)"),
    })
}

/// Lists regular files (and symlinks to them) under `start` (inside `root`), honouring
/// `.mlvignore` and skipping `.mlv`. A file mlv cannot store is set aside with the reason
/// rather than failing the whole walk, so one odd file does not block every command.
pub fn scan(root: &Path, start: &Path) -> Result<Scan, WorktreeError> {
    let mut out = Scan::default();
    let walker = ignore::WalkBuilder::new(start)
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|e| e.file_name() != ".mlv")
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walker {
        let entry =
            entry.map_err(|e| WorktreeError::Io { path: start.to_path_buf(), source: std::io::Error::other(e) })?;
        if entry.file_type().is_none_or(|t| t.is_dir()) {
            continue;
        }
        let abs = entry.path().to_path_buf();
        let lossy = || abs.strip_prefix(root).unwrap_or(&abs).to_string_lossy().into_owned();
        let stat = match inspect(&abs).map_err(io_err(&abs))? {
            PathState::File(stat) => stat,
            PathState::Skipped(why) => {
                out.skipped.push(Skipped { path: lossy(), why: why.into() });
                continue;
            }
            PathState::Absent => continue,
        };
        match relative(root, &abs) {
            Ok(rel) => out.files.push(FoundFile { rel, abs, stat }),
            Err(WorktreeError::BadPath(_)) => out.skipped.push(Skipped {
                path: lossy(),
                why: "a name mlv cannot store (not UTF-8, holds '\\', or nested too deep)".into(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The `/`-separated path of `abs` relative to `root`.
pub fn relative(root: &Path, abs: &Path) -> Result<String, WorktreeError> {
    let rel = abs.strip_prefix(root).map_err(|_| WorktreeError::BadPath(abs.to_path_buf()))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    // The rule trees are read with: a path mlv stores is one it can read back.
    match parts {
        Some(p) if p.len() <= crate::object::MAX_TREE_DEPTH && p.iter().all(|s| crate::object::is_valid_name(s)) => {
            Ok(p.join("/"))
        }
        _ => Err(WorktreeError::BadPath(abs.to_path_buf())),
    }
}

/// Chooses delta base candidates for a tensor of a file being added.
pub trait BaseFinder {
    /// Candidate base tensor ids for tensor `t` of work-tree file `rel`, best first.
    fn candidates(&mut self, rel: &str, t: &TensorSpan) -> Vec<ObjectId>;
}

/// A finder that never proposes a base.
pub struct NoBases;

impl BaseFinder for NoBases {
    fn candidates(&mut self, _: &str, _: &TensorSpan) -> Vec<ObjectId> {
        Vec::new()
    }
}

/// What adding one tensor did, for reports.
#[derive(Debug, Clone)]
pub struct TensorOutcome {
    /// Tensor name.
    pub name: String,
    /// Its id.
    pub id: ObjectId,
    /// How it was stored; None when only hashing.
    pub choice: Option<BaseChoice>,
}

/// A file turned into objects.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// Blob or tensor file.
    pub kind: EntryKind,
    /// The object id.
    pub id: ObjectId,
    /// Per tensor, its id and how it was stored (empty for blobs).
    pub tensors: Vec<TensorOutcome>,
}

fn map_file(path: &Path) -> Result<(File, Mmap), WorktreeError> {
    let file = File::open(path).map_err(io_err(path))?;
    // SAFETY: mapped read-only; a file truncated by another program while mapped could fault,
    // which mlv cannot prevent without reading every file into memory.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
    crate::fsutil::prefer_large_folios(&map);
    Ok((file, map))
}

fn hash_region(map: &Mmap, kind_hasher: &mut IdHasher, start: u64, end: u64) {
    for (from, to) in crate::fsutil::pieces(start, end) {
        kind_hasher.update(&map[from as usize..to as usize]);
        crate::fsutil::release_pages(map, from, to - from);
    }
}

fn blob_id(map: &Mmap, start: u64, end: u64) -> ObjectId {
    let mut h = IdHasher::new(ObjectKind::Blob, end - start);
    hash_region(map, &mut h, start, end);
    h.finish()
}

fn tensor_id(map: &Mmap, t: &TensorSpan) -> (TensorMeta, ObjectId) {
    let meta = TensorMeta { dtype: t.dtype, shape: t.shape.clone(), data_len: t.len() };
    let mut h = meta.hasher();
    hash_region(map, &mut h, t.start, t.end);
    (meta, h.finish())
}

/// Hashes a work-tree file and, with a writer, stores whatever the repository lacks.
/// `.safetensors` files that do not parse are an error naming the file and byte offset.
pub fn ingest(
    path: &Path,
    rel: &str,
    mut writer: Option<&mut ObjectWriter<'_>>,
    bases: &mut dyn BaseFinder,
) -> Result<Ingested, WorktreeError> {
    let (file, map) = map_file(path)?;
    let len = map.len() as u64;
    if !is_safetensors(rel) && len > CDC_MAX as u64 {
        return ingest_chunked(&map, writer);
    }
    if !is_safetensors(rel) {
        let id = blob_id(&map, 0, len);
        if let Some(w) = writer.as_deref_mut() {
            w.put_blob(&map, 0, len, id)?;
        }
        return Ok(Ingested { kind: EntryKind::Blob, id, tensors: Vec::new() });
    }
    let layout = st::read_layout(&file, len).map_err(|e| match e {
        st::ParseError::Io(source) => WorktreeError::Io { path: path.to_path_buf(), source },
        st::ParseError::Format(source) => WorktreeError::Safetensors { path: path.to_path_buf(), source },
    })?;
    // Hash every span on all cores, then store what is new in one batch, so that a file
    // of many small tensors is encoded in parallel too.
    let hashed: Vec<(Segment, Option<TensorMeta>)> = layout
        .spans
        .par_iter()
        .map(|span| match span {
            Span::Tensor(t) => {
                let (meta, id) = tensor_id(&map, t);
                (Segment::Tensor { id, len: t.len() }, Some(meta))
            }
            Span::Bytes { start, end } => (Segment::Bytes { id: blob_id(&map, *start, *end), len: end - start }, None),
        })
        .collect();
    let spans_and_hashes = layout.spans.iter().zip(&hashed);
    let choices: Vec<Option<BaseChoice>> = match writer.as_deref_mut() {
        Some(w) => {
            let items = spans_and_hashes
                .clone()
                .map(|(span, (seg, meta))| new_object(&map, span, seg, meta, w, rel, bases))
                .collect();
            w.put_all(items)?.into_iter().map(Some).collect()
        }
        None => vec![None; hashed.len()],
    };
    let tensors = spans_and_hashes
        .zip(choices)
        .filter_map(|((span, (seg, _)), choice)| match span {
            Span::Tensor(t) => Some(TensorOutcome { name: t.name.clone(), id: seg.id(), choice }),
            Span::Bytes { .. } => None,
        })
        .collect();
    let segments = hashed.into_iter().map(|(seg, _)| seg).collect();
    if let Some(w) = writer.as_deref() {
        w.advance(layout.prefix.len() as u64);
    }
    let tf = TensorFile { prefix: layout.prefix, segments };
    let body = tf.encode();
    let id = match writer {
        Some(w) => w.put(ObjectKind::TensorFile, &body)?,
        None => ObjectId::hash(ObjectKind::TensorFile, &body),
    };
    Ok(Ingested { kind: EntryKind::TensorFile, id, tensors })
}

/// The id a file had as one blob, before large files were cut into chunks: an entry staged
/// that way still matches the same bytes.
pub fn legacy_blob_id(path: &Path) -> Result<ObjectId, WorktreeError> {
    let (_, map) = map_file(path)?;
    Ok(blob_id(&map, 0, map.len() as u64))
}

/// Smallest, average and largest content-defined chunk of a large file that is not
/// safetensors (as Hugging Face's Xet storage cuts them): an edit changes about one chunk.
pub const CDC_MIN: usize = 16 << 10;
/// Average chunk; see [`CDC_MIN`].
pub const CDC_AVG: usize = 64 << 10;
/// Largest chunk; files no larger are stored as one blob.
pub const CDC_MAX: usize = 256 << 10;

/// Cuts a mapped file into content-defined chunks, hashes them on all cores and, with a
/// writer, stores the chunks the repository lacks; the file becomes a chunked-file object.
fn ingest_chunked(map: &Mmap, mut writer: Option<&mut ObjectWriter<'_>>) -> Result<Ingested, WorktreeError> {
    // A batch at a time, pages released behind it, so memory stays flat whatever the file's
    // size; the next batch's cut points are found while this one is hashed and stored.
    const BATCH: usize = 64;
    let mut cuts = fastcdc::v2020::FastCDC::new(map, CDC_MIN, CDC_AVG, CDC_MAX).map(|c| (c.offset, c.length));
    let mut chunks: Vec<(ObjectId, u64)> = Vec::new();
    let mut batch: Vec<(usize, usize)> = cuts.by_ref().take(BATCH).collect();
    while !batch.is_empty() {
        let (next, stored) = rayon::join(
            || cuts.by_ref().take(BATCH).collect::<Vec<_>>(),
            || store_chunks(map, &batch, writer.as_deref_mut()),
        );
        chunks.extend(stored?);
        batch = next;
    }
    let body = ChunkedFile { chunks }.encode();
    let id = match writer {
        Some(w) => w.put(ObjectKind::ChunkedFile, &body)?,
        None => ObjectId::hash(ObjectKind::ChunkedFile, &body),
    };
    Ok(Ingested { kind: EntryKind::ChunkedFile, id, tensors: Vec::new() })
}

/// Reads, hashes and (with a writer) stores one batch of chunks; returns their ids and lengths.
fn store_chunks(
    map: &Mmap,
    batch: &[(usize, usize)],
    writer: Option<&mut ObjectWriter<'_>>,
) -> Result<Vec<(ObjectId, u64)>, WorktreeError> {
    // Each chunk is read once into memory: its id and its encoding come from those bytes.
    let read: Vec<(ObjectId, Vec<u8>)> = batch
        .par_iter()
        .map(|&(start, len)| {
            let bytes = map[start..start + len].to_vec();
            (ObjectId::hash(ObjectKind::Blob, &bytes), bytes)
        })
        .collect();
    let out = read.iter().map(|(id, bytes)| (*id, bytes.len() as u64)).collect();
    if let Some(w) = writer {
        w.put_blobs(read)?;
    }
    if let (Some(&(first, _)), Some(&(last, len))) = (batch.first(), batch.last()) {
        crate::fsutil::release_pages(map, first as u64, (last + len - first) as u64);
    }
    Ok(out)
}

/// The object to store for one span of a safetensors file, with base candidates for tensors.
fn new_object<'m>(
    map: &'m Mmap,
    span: &Span,
    seg: &Segment,
    meta: &Option<TensorMeta>,
    writer: &ObjectWriter<'_>,
    rel: &str,
    bases: &mut dyn BaseFinder,
) -> NewObject<'m> {
    let (kind, start, candidates, meta) = match (span, meta) {
        (Span::Tensor(t), Some(meta)) => {
            let candidates = if writer.contains(&seg.id()) { Vec::new() } else { bases.candidates(rel, t) };
            (ObjectKind::Tensor, t.start, candidates, meta.clone())
        }
        (Span::Bytes { start, .. }, _) | (Span::Tensor(TensorSpan { start, .. }), None) => (
            ObjectKind::Blob,
            *start,
            Vec::new(),
            TensorMeta { dtype: DType::U8, shape: Vec::new(), data_len: seg.len() },
        ),
    };
    NewObject { kind, src: TensorSource { map, start, meta }, id: seg.id(), candidates }
}

/// Streams a file's content (blob or rebuilt safetensors) into `out`, verifying every object.
pub fn write_content(
    odb: &Odb,
    kind: EntryKind,
    id: &ObjectId,
    out: &mut (dyn Write + Send),
    progress: &dyn Progress,
) -> Result<u64, StoreError> {
    let mut written = 0u64;
    let mut sink = |b: &[u8]| {
        written += b.len() as u64;
        if progress.cancelled() {
            return Err(crate::progress::interrupted());
        }
        progress.advance(b.len() as u64);
        out.write_all(b)
    };
    match kind {
        EntryKind::TensorFile => {
            let tf = odb.tensor_file(id)?;
            sink(&tf.prefix)?;
            let ids: Vec<ObjectId> = tf.segments.iter().map(Segment::id).collect();
            let headers = odb.stream_all(&ids, &mut sink)?;
            if let Some(seg) = tf.segments.iter().zip(&headers).find(|(s, h)| h.meta.data_len != s.len()) {
                let what = format!("segment {} has the wrong length", seg.0.id().short());
                return Err(StoreError::Corrupt { id: *id, what });
            }
        }
        EntryKind::ChunkedFile => {
            let file = odb.chunked_file(id)?;
            let ids: Vec<ObjectId> = file.chunks.iter().map(|c| c.0).collect();
            let headers = odb.stream_all(&ids, &mut sink)?;
            if let Some((c, _)) = file.chunks.iter().zip(&headers).find(|(c, h)| h.meta.data_len != c.1) {
                let what = format!("chunk {} has the wrong length", c.0.short());
                return Err(StoreError::Corrupt { id: *id, what });
            }
        }
        _ => {
            odb.stream(id, &mut sink)?;
        }
    }
    Ok(written)
}

/// Writes a file of `size` bytes atomically (a temporary file in the same directory, or a
/// spare of `spares`, then rename), verified against its object id while writing. Work-tree
/// files are not fsynced, as in git; one that replaces another has its writeback started as it
/// is written where that helps (see [`Writeback`]), and its disk kept as a spare.
#[allow(clippy::too_many_arguments)]
pub fn checkout_file(
    odb: &Odb,
    kind: EntryKind,
    id: &ObjectId,
    size: u64,
    dest: &Path,
    executable: bool,
    spares: &Spares,
    progress: &dyn Progress,
) -> Result<u64, WorktreeError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // A directory where the file goes is removed only if empty: files in it may be untracked
    // work, which callers must have dealt with (refused, or deleted on --force).
    if dest.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        crate::fsutil::remove_empty_dir_tree(dest).map_err(io_err(dest))?;
    }
    let staging = match spares.take(dir, size) {
        Some(spare) => Staging::Spare(spare),
        None => Staging::Fresh(tempfile::Builder::new().prefix(".mlv-tmp-").tempfile_in(dir).map_err(io_err(dir))?),
    };
    let replaces = dest.symlink_metadata().is_ok_and(|m| m.is_file());
    // A file whose disk is reserved (or a spare's, allocated already) has no delayed blocks
    // for the rename to flush; writeback started early would only make the index's fsync
    // wait for it (17 ms of MiniLM's 72).
    let reserved = crate::fsutil::preallocate(staging.file(), size) || matches!(staging, Staging::Spare(_));
    let file = Writeback { file: staging.file(), written: 0, started: 0, early: replaces && !reserved };
    // Smaller than a chunk of decoded data, which then goes to the file without a copy;
    // only small tensors and headers are gathered.
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = write_content(odb, kind, id, &mut out, progress)?;
    out.flush().map_err(io_err(dest))?;
    let len = staging.file().metadata().map_err(io_err(dest))?.len();
    if written < size || len != written {
        // A tree that claims more than its content holds, or a longer spare: cut the file to
        // what was written and give back the disk reserved past the end (truncating to the
        // length a file has frees the blocks beyond it).
        staging.file().set_len(written).map_err(io_err(dest))?;
    }
    out.get_mut().start_rest();
    drop(out);
    // Temporary files are created 0600, spares have their old mode; checked-out files get
    // ordinary permissions.
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    staging.file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io_err(dest))?;
    if replaces {
        spares.keep(dest);
    }
    staging.persist(dest).map_err(io_err(dest))?;
    Ok(written)
}

/// Where a checked-out file is written before it is renamed over its destination.
enum Staging {
    /// A new temporary file beside the destination.
    Fresh(tempfile::NamedTempFile),
    /// A spare file, written over.
    Spare(Spare),
}

impl Staging {
    fn file(&self) -> &File {
        match self {
            Staging::Fresh(tmp) => tmp.as_file(),
            Staging::Spare(spare) => &spare.file,
        }
    }

    fn persist(self, dest: &Path) -> std::io::Result<()> {
        match self {
            Staging::Fresh(tmp) => tmp.persist(dest).map(drop).map_err(|e| e.error),
            Staging::Spare(spare) => std::fs::rename(&spare.path, dest),
        }
    }
}

/// A file being written, whose writeback is started every [`WRITEBACK_STEP`] bytes when it
/// will replace another (`early`; see [`crate::fsutil::start_writeback`]).
struct Writeback<'f> {
    file: &'f File,
    written: u64,
    started: u64,
    early: bool,
}

/// Bytes written between two starts of writeback.
const WRITEBACK_STEP: u64 = 64 << 20;

impl Writeback<'_> {
    /// Starts writeback of what is written and not started yet.
    fn start_rest(&mut self) {
        if self.early && self.written > self.started {
            crate::fsutil::start_writeback(self.file, self.started, self.written - self.started);
        }
        self.started = self.written;
    }
}

impl Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            self.start_rest();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Work-tree files a checkout may open for delta bases, at most: each holds a descriptor.
const MAX_BASE_FILES: usize = 256;

/// The tensors that work-tree files hold unchanged (by the index and their stat), offered to
/// a checkout as delta bases so that it need not decode them from the packs. The files are
/// opened up front: a file the checkout replaces is still read as it was.
pub struct WorktreeBases {
    files: Vec<BaseFile>,
    /// Object -> (file, offset of its data in the file, its length).
    at: std::collections::HashMap<ObjectId, (usize, u64, u64)>,
}

/// An open work-tree file offering bases.
struct BaseFile {
    file: File,
    /// The checkout replaces or deletes it: what it has read is dropped from the page cache
    /// as it goes, in the decoding threads, instead of in one sequential stretch at the end
    /// when the file is deleted.
    leaving: bool,
}

impl WorktreeBases {
    /// Collects the tensors of the stat-clean safetensors files of `index` under `root`;
    /// `leaving` tells which paths the checkout replaces or deletes.
    pub fn of(root: &Path, index: &crate::index::Index, odb: &Odb, leaving: &dyn Fn(&str) -> bool) -> WorktreeBases {
        let mut bases = WorktreeBases { files: Vec::new(), at: std::collections::HashMap::new() };
        let tensor_files = index.entries.iter().filter(|(_, e)| e.kind == EntryKind::TensorFile);
        for (path, e) in tensor_files {
            if bases.files.len() >= MAX_BASE_FILES {
                break;
            }
            // Checked before opening (opening a FIFO would block) and again on the open file.
            let abs = root.join(path);
            let clean = |m: &std::fs::Metadata| m.is_file() && index.is_stat_clean(path, &Stat::of(m));
            if !std::fs::metadata(&abs).is_ok_and(|m| clean(&m)) {
                continue;
            }
            let Ok(file) = File::open(&abs) else { continue };
            let still_clean = file.metadata().is_ok_and(|m| clean(&m));
            let Some(tf) = still_clean.then(|| odb.tensor_file(&e.id).ok()).flatten() else { continue };
            let mut offset = tf.prefix.len() as u64;
            for segment in &tf.segments {
                if let Segment::Tensor { id, len } = segment {
                    bases.at.entry(*id).or_insert((bases.files.len(), offset, *len));
                }
                offset += segment.len();
            }
            bases.files.push(BaseFile { file, leaving: leaving(path) });
        }
        bases
    }
}

/// Bytes of a work-tree base read at a time: a piece stays in the core's cache while it is
/// converted to the fine-tune's dtype.
const BASE_PIECE: usize = 256 << 10;

impl WorktreeBases {
    /// The file holding bytes `start..end` of object `id`'s data, and where in it they begin;
    /// None if they are not here, or if the range is more than one chunk's (all a caller may
    /// ask for).
    fn locate(&self, id: &ObjectId, start: u64, end: u64) -> Option<(&BaseFile, u64)> {
        let &(k, offset, len) = self.at.get(id)?;
        if start > end || end > len || end - start > 2 * crate::codec::MAX_CHUNK_BYTES as u64 {
            return None;
        }
        Some((self.files.get(k)?, offset + start))
    }
}

impl BaseFile {
    /// Drops `len` bytes at `at` from the page cache if the file is leaving; called once per
    /// chunk, as each call drains page lists on every core.
    fn done_with(&self, at: u64, len: u64) {
        if self.leaving {
            crate::fsutil::drop_cached(&self.file, at, len);
        }
    }
}

impl crate::store::BaseHints for WorktreeBases {
    fn with_range(&self, id: &ObjectId, start: u64, end: u64, use_piece: &mut dyn FnMut(&[u8])) -> bool {
        use std::os::unix::fs::FileExt;
        thread_local! {
            /// Reused across reads: a fresh buffer per piece costs zeroing and page faults.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let Some((base, from)) = self.locate(id, start, end) else { return false };
        SCRATCH.with_borrow_mut(|buf| {
            buf.resize(BASE_PIECE, 0);
            let mut at = 0;
            while at < end - start {
                let piece = &mut buf[..BASE_PIECE.min((end - start - at) as usize)];
                if base.file.read_exact_at(piece, from + at).is_err() {
                    return false;
                }
                use_piece(piece);
                at += piece.len() as u64;
            }
            base.done_with(from, end - start);
            true
        })
    }

    fn read_range(&self, id: &ObjectId, start: u64, len: usize, out: &mut Vec<u8>) -> bool {
        use std::os::unix::fs::FileExt;
        let n = len as u64;
        let Some((base, from)) = start.checked_add(n).and_then(|end| self.locate(id, start, end)) else {
            return false;
        };
        out.resize(len, 0);
        if base.file.read_exact_at(out, from).is_err() {
            return false;
        }
        base.done_with(from, n);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_claiming_more_than_the_content_leaves_no_disk_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repo::Repository::init(dir.path()).unwrap();
        let mut w = repo.writer().unwrap();
        let blob = w.put(ObjectKind::Blob, b"hello").unwrap();
        w.finish().unwrap();
        let dest = dir.path().join("f");
        let claimed = 64 << 20;
        let spares = Spares::open(&repo.dir, false);
        checkout_file(&repo.odb, EntryKind::Blob, &blob, claimed, &dest, false, &spares, &crate::progress::Silent)
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        use std::os::unix::fs::MetadataExt;
        let bytes_held = std::fs::metadata(&dest).unwrap().blocks() * 512;
        assert!(bytes_held < 1 << 20, "{bytes_held} bytes of disk held by a 5-byte file");
    }

    #[test]
    fn a_file_written_with_early_writeback_holds_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let data: Vec<u8> = (0..WRITEBACK_STEP + 5000).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = BufWriter::with_capacity(1 << 20, Writeback { file: &file, written: 0, started: 0, early: true });
        for piece in data.chunks(3 << 20) {
            out.write_all(piece).unwrap();
        }
        out.flush().unwrap();
        assert!(out.get_ref().started >= WRITEBACK_STEP, "no writeback was started on the way");
        out.get_mut().start_rest();
        drop(out);
        assert!(std::fs::read(&path).unwrap() == data, "the file differs from what was written");
    }
}
