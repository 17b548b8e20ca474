//! The object database: every pack of a repository behind get/has/put, with delta bases
//! resolved transparently and every object verified against its id when read whole.

mod backend;
mod bundle;
mod cache;
mod local;
mod memory;
mod pipeline;
mod verify;
mod writer;

pub use backend::{Doomed, PackInfo, PackStore, decode_mark, encode_mark};
pub use local::LocalPacks;
pub use memory::MemoryPacks;
pub use verify::{check_stored_pack, index_from_content, verify_pack};
pub use writer::{BaseChoice, NewObject, ObjectWriter, TensorSource};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use rayon::prelude::*;

use crate::codec::{Base, ChunkView, CodecError, convert};
use crate::object::{ChunkedFile, Commit, DType, ObjectId, ObjectKind, Tag, TensorFile, Tree};
use crate::pack::{
    EntryHeader, EntryView, IndexRecord, PACK_HEADER_LEN, PackError, PackIndex, PackName, SealedPack, TRAILER_LEN,
};
use cache::ChunkCache;
use pipeline::pipelined;

/// Elements per chunk for new tensors: 1 Mi elements (2 MiB of BF16), small enough to spread
/// over cores, large enough that per-chunk headers and tables cost nothing.
pub const DEFAULT_CHUNK_ELEMS: u64 = 1 << 20;

/// The longest delta chain a reader follows: longer ones (or cycles) are corrupt, not a reason
/// to recurse without end. Writers stay within `delta.max_chain`, at most this.
pub const MAX_DECODE_DEPTH: usize = 32;

/// Decoded chunks kept while a received pack is verified: enough for a large tensor whose
/// deltas follow it in the pack to be decoded once.
const VERIFY_CACHE_BYTES: usize = 192 << 20;

/// Objects larger than this are never read whole into memory.
pub const MAX_IN_MEMORY: u64 = 256 << 20;

/// Failure to read or write an object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No pack holds the object.
    #[error("object {0} not found in the repository")]
    NotFound(ObjectId),
    /// The object is in none of the readable packs, and some packs cannot be read.
    #[error("object {id} not found: it may be in {pack}, which cannot be read ({why})")]
    Unreadable {
        /// The object.
        id: ObjectId,
        /// The unreadable pack.
        pack: String,
        /// Why.
        why: String,
    },
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
    /// The user asked to stop.
    #[error("interrupted")]
    Cancelled,
    /// A file changed while it was being stored: what was encoded is not what was hashed.
    #[error("{0} changed while it was being stored; nothing of it was kept (run the command again)")]
    SourceChanged(String),
    /// The store behind the packs failed (a network or object-store error).
    #[error("{0}")]
    Backend(String),
    /// Another I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl StoreError {
    fn corrupt(id: ObjectId, what: impl ToString) -> StoreError {
        StoreError::Corrupt { id, what: what.to_string() }
    }

    /// True when the bytes are at fault (a damaged or hostile pack or object), not the machine
    /// or the network: what a receiver refuses rather than retries.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::Pack(PackError::Corrupt { .. } | PackError::CorruptAt { .. })
        )
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

/// A hasher for an object's id, primed with the tensor header when it is a tensor.
pub(crate) fn id_hasher(h: &EntryHeader) -> crate::object::IdHasher {
    match h.kind {
        ObjectKind::Tensor => h.meta.hasher(),
        kind => crate::object::IdHasher::new(kind, h.meta.data_len),
    }
}

/// One pack as an object database sees it: its index, and the store to read it from.
pub struct LoadedPack {
    /// Its name.
    pub name: PackName,
    /// Its length in bytes.
    pub len: u64,
    /// Its index.
    pub index: PackIndex,
    source: Arc<dyn PackStore>,
    /// Parsed entry layouts by entry offset, so decoding a chunk reads only that chunk.
    layouts: Mutex<HashMap<u64, Arc<EntryLayout>>>,
}

/// Where an entry's header and chunks lie, read once per entry.
pub struct EntryLayout {
    /// The entry's header.
    pub header: EntryHeader,
    /// Each chunk's offset within the entry and length.
    chunks: Vec<(u64, u64)>,
}

/// Entry layouts kept per pack before the cache starts over (each is a few bytes per chunk).
const MAX_LAYOUTS: usize = 1 << 16;

impl LoadedPack {
    /// Loads a pack's index and checks that every record lies inside the pack.
    fn load(source: Arc<dyn PackStore>, info: PackInfo) -> Result<LoadedPack, StoreError> {
        let index = source.read_index(&info.name)?;
        LoadedPack::new(source, info, index)
    }

    fn new(source: Arc<dyn PackStore>, info: PackInfo, index: PackIndex) -> Result<LoadedPack, StoreError> {
        let body_end = info.len.saturating_sub(TRAILER_LEN);
        for r in &index.records {
            if r.offset < PACK_HEADER_LEN || r.offset.checked_add(r.len).is_none_or(|e| e > body_end) {
                let what = format!("index entry for {} points outside the pack", r.id.short());
                return Err(PackError::corrupt(&PathBuf::from(source.describe()).join(info.name.stem()), what).into());
            }
        }
        Ok(LoadedPack { name: info.name, len: info.len, index, source, layouts: Mutex::new(HashMap::new()) })
    }

    /// Where the pack is, for messages.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.source.describe()).join(format!("{}.pack", self.name.stem()))
    }

    /// The stored bytes of an entry.
    pub fn entry_bytes(&self, rec: &IndexRecord) -> Result<Bytes, StoreError> {
        self.source.read_range(&self.name, rec.offset, rec.len)
    }

    /// The layout of an entry, parsed and checked against its index record on first use.
    fn layout(&self, rec: &IndexRecord) -> Result<Arc<EntryLayout>, StoreError> {
        if let Some(hit) = self.layouts.lock().ok().and_then(|l| l.get(&rec.offset).cloned()) {
            return Ok(hit);
        }
        let bytes = self.entry_bytes(rec)?;
        let release = |start, len| self.source.release(&self.name, start, len);
        let mut behind = crate::fsutil::ReleaseBehind::new(rec.offset, &release);
        let view = EntryView::parse_with(&bytes, &mut |r| behind.reached(rec.offset + r as u64)).map_err(|e| {
            PackError::corrupt(&self.path(), format!("object {} at offset {}: {e}", rec.id.short(), rec.offset))
        })?;
        if view.header.id != rec.id || view.header.kind != rec.kind || view.header.meta.data_len != rec.data_len {
            let what = format!("entry at offset {} does not match its index record", rec.offset);
            return Err(PackError::corrupt(&self.path(), what).into());
        }
        let base = bytes.as_ptr() as usize;
        let chunks = (0..view.chunk_count())
            .filter_map(|i| view.chunk(i))
            .map(|c| ((c.as_ptr() as usize - base) as u64, c.len() as u64))
            .collect();
        let layout = Arc::new(EntryLayout { header: view.header, chunks });
        // Parsing touched every chunk's length prefix; the pages come back when a chunk is read.
        behind.finish(rec.offset + rec.len);
        if let Ok(mut l) = self.layouts.lock() {
            if l.len() >= MAX_LAYOUTS {
                l.clear();
            }
            l.insert(rec.offset, layout.clone());
        }
        Ok(layout)
    }

    /// The stored bytes of chunk `i` of an entry, and where they lie in the pack.
    fn chunk(&self, rec: &IndexRecord, layout: &EntryLayout, i: u64) -> Result<(Bytes, u64), StoreError> {
        let &(within, len) =
            layout.chunks.get(i as usize).ok_or_else(|| StoreError::corrupt(rec.id, format!("no chunk {i}")))?;
        let at = rec.offset + within;
        Ok((self.source.read_range(&self.name, at, len)?, at))
    }
}

type PackList = Arc<Vec<Arc<LoadedPack>>>;

/// The error for a base whose elements do not convert to its delta's dtype.
fn incompatible(id: &ObjectId, from: DType, to: DType) -> StoreError {
    StoreError::corrupt(*id, format!("{from} elements do not convert to {to}"))
}

/// Packs beyond which lookups go through one merged table instead of each pack's index.
const MERGE_AFTER_PACKS: usize = 16;

/// How objects are found: with few packs, pack by pack; with many (between two gcs), in one
/// table of every object sorted by id, so a lookup costs the same whatever the pack count.
#[derive(Default)]
struct Lookup {
    packs: PackList,
    /// (object, pack position, record position), sorted; empty with few packs.
    by_id: Vec<(ObjectId, u32, u32)>,
}

impl Lookup {
    fn build(packs: &[Arc<LoadedPack>]) -> Lookup {
        let mut by_id = Vec::new();
        if packs.len() > MERGE_AFTER_PACKS {
            for (p, pack) in packs.iter().enumerate() {
                by_id.extend(pack.index.records.iter().enumerate().map(|(r, rec)| (rec.id, p as u32, r as u32)));
            }
            by_id.sort_unstable_by_key(|e| e.0);
        }
        Lookup { packs: Arc::new(packs.to_vec()), by_id }
    }
}

/// A chunk's stored bytes, read from its pack, whose pages are released when it is dropped
/// (once used).
struct StoredChunk {
    pack: Arc<LoadedPack>,
    stored: Bytes,
    at: u64,
}

impl StoredChunk {
    fn view(&self) -> Result<ChunkView<'_>, CodecError> {
        ChunkView::parse(&self.stored)
    }
}

impl Drop for StoredChunk {
    fn drop(&mut self) {
        self.pack.source.release(&self.pack.name, self.at, self.stored.len() as u64);
    }
}

/// What a delta chunk is decoded on a part at a time (see [`crate::codec::Base`]): the
/// difference chunks of its chain that cover the same elements, top down, and what the lowest
/// stands on.
struct PartBase {
    links: Vec<(ObjectId, StoredChunk)>,
    bottom: PartBottom,
}

enum PartBottom {
    /// A byte-grouped F32 chunk under BF16 links.
    GroupedF32(ObjectId, StoredChunk),
    /// Elements decoded the usual way (the lowest link's base).
    Elements(ObjectId, Arc<Vec<u8>>),
}

impl PartBase {
    /// Decodes `fine` (elements of `dtype`) on this chain. An error comes with the id of the
    /// object it was found in (`fine_id` or one below).
    fn decode(&self, fine_id: ObjectId, fine: &ChunkView<'_>, dtype: DType) -> Result<Vec<u8>, StoreError> {
        self.decode_on(fine, dtype).map_err(|mut e| {
            // Each InBase is one link further down.
            let mut id = fine_id;
            for below in self.ids() {
                let CodecError::InBase(inner) = e else { break };
                (e, id) = (*inner, below);
            }
            StoreError::corrupt(id, e)
        })
    }

    fn decode_on(&self, fine: &ChunkView<'_>, dtype: DType) -> Result<Vec<u8>, CodecError> {
        // Errors parsing a link are its own, as deep as it is.
        let nested = |e: CodecError, depth: usize| (0..depth).fold(e, |e, _| CodecError::InBase(Box::new(e)));
        let views: Vec<ChunkView<'_>> = self
            .links
            .iter()
            .enumerate()
            .map(|(k, (_, c))| c.view().map_err(|e| nested(e, k + 1)))
            .collect::<Result<_, _>>()?;
        let bottom_view;
        let mut base = match &self.bottom {
            PartBottom::GroupedF32(_, c) => {
                bottom_view = c.view().map_err(|e| nested(e, views.len() + 1))?;
                Base::GroupedF32(&bottom_view)
            }
            PartBottom::Elements(_, elements) => Base::Elements(elements),
        };
        for view in views.iter().rev() {
            base = Base::Difference(view, Box::new(base));
        }
        fine.decode_on(dtype, Some(base))
    }

    /// The ids below the fine-tune, top down.
    fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        let bottom = match &self.bottom {
            PartBottom::GroupedF32(id, _) | PartBottom::Elements(id, _) => *id,
        };
        self.links.iter().map(|(id, _)| *id).chain(std::iter::once(bottom))
    }
}

/// All packs of one store: objects by id, decoded and verified.
pub struct Odb {
    store: Arc<dyn PackStore>,
    packs: RwLock<PackList>,
    lookup: RwLock<Arc<Lookup>>,
    cache: ChunkCache,
    broken: Mutex<Vec<(PackInfo, String)>>,
    /// Where delta bases may be read instead of decoded (a checkout's work tree).
    base_hints: RwLock<Option<Arc<dyn BaseHints>>>,
}

/// Copies of objects' data outside the packs, unverified: a checkout offers the work-tree
/// files that the index says hold tensors unchanged, so that deltas on those tensors need
/// not decode their bases. A delta decoded on a hinted base is still checked by its chunk
/// checksum; if that fails, or the hint has nothing, the base comes from the packs.
pub trait BaseHints: Send + Sync {
    /// Calls `use_piece` with bytes `start..end` of object `id`'s data, in consecutive pieces
    /// of whole elements, if this source has them; false if it has not (and any pieces given
    /// before are to be dropped).
    fn with_range(&self, id: &ObjectId, start: u64, end: u64, use_piece: &mut dyn FnMut(&[u8])) -> bool;

    /// Reads bytes `start..start + len` of object `id`'s data into `out`, made `len` long, if
    /// this source has them; false if it has not (and `out` holds anything). `out` is only
    /// grown once the source is known to have them: growing zeroes fresh pages.
    fn read_range(&self, id: &ObjectId, start: u64, len: usize, out: &mut Vec<u8>) -> bool;
}

impl Odb {
    /// Opens the packs of a repository's `objects` directory.
    pub fn open_dir(objects_dir: &std::path::Path) -> Result<Odb, StoreError> {
        Odb::open(Arc::new(LocalPacks::new(&objects_dir.join("pack"))))
    }

    /// Opens every complete pack of a store.
    pub fn open(store: Arc<dyn PackStore>) -> Result<Odb, StoreError> {
        let odb = Odb {
            store,
            packs: RwLock::new(Arc::new(Vec::new())),
            lookup: RwLock::new(Arc::new(Lookup::default())),
            cache: ChunkCache::new(64 << 20),
            broken: Mutex::new(Vec::new()),
            base_hints: RwLock::new(None),
        };
        odb.refresh()?;
        Ok(odb)
    }

    /// Packs whose index could not be loaded, and why: their objects are not readable here.
    /// `fsck` reports them; a missing object names them.
    pub fn broken(&self) -> Vec<(PackInfo, String)> {
        self.broken.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// The store behind this database.
    pub fn store(&self) -> &Arc<dyn PackStore> {
        &self.store
    }

    /// Where new packs are staged before they are installed.
    pub fn staging_dir(&self) -> PathBuf {
        self.store.staging_dir().map_or_else(std::env::temp_dir, std::path::Path::to_path_buf)
    }

    /// The packs loaded now.
    pub fn packs(&self) -> PackList {
        self.packs.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Loads packs added to the store since it was opened (by another process, say), and
    /// forgets packs a gc deleted (a reader holding one keeps it). Returns true when there
    /// were any of either.
    pub fn refresh(&self) -> Result<bool, StoreError> {
        let listed = self.store.list()?;
        let names: HashSet<PackName> = listed.iter().map(|p| p.name).collect();
        let gone = self.packs().iter().any(|p| !names.contains(&p.name));
        if gone {
            self.retain_packs(&names);
        }
        let known: HashSet<PackName> = self.packs().iter().map(|p| p.name).collect();
        let fresh: Vec<PackInfo> = listed.into_iter().filter(|p| !known.contains(&p.name)).collect();
        if fresh.is_empty() {
            return Ok(gone);
        }
        let results: Vec<(PackInfo, Result<LoadedPack, StoreError>)> =
            fresh.into_par_iter().map(|info| (info, LoadedPack::load(self.store.clone(), info))).collect();
        let mut loaded = Vec::new();
        let mut broken = Vec::new();
        for (info, result) in results {
            match result {
                Ok(p) => loaded.push(Arc::new(p)),
                // Removed since it was listed (by gc): nothing to read, nothing wrong.
                Err(StoreError::Pack(PackError::Io { source, .. }))
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => broken.push((info, e.to_string())),
            }
        }
        if let Ok(mut b) = self.broken.lock() {
            b.retain(|(i, _)| !broken.iter().any(|(n, _)| n.name == i.name));
            b.extend(broken);
        }
        let any = !loaded.is_empty();
        self.add_packs(loaded);
        Ok(any)
    }

    /// Drops packs of this store that it no longer lists; packs read from elsewhere (an
    /// overlay's) stay.
    fn retain_packs(&self, names: &HashSet<PackName>) {
        let ours = |p: &LoadedPack| std::ptr::addr_eq(Arc::as_ptr(&p.source), Arc::as_ptr(&self.store));
        self.replace_packs(|packs| packs.iter().filter(|p| !ours(p) || names.contains(&p.name)).cloned().collect());
    }

    fn add_packs(&self, loaded: Vec<Arc<LoadedPack>>) {
        self.replace_packs(|packs| {
            let mut next = packs.to_vec();
            let mut names: HashSet<PackName> = next.iter().map(|p| p.name).collect();
            next.extend(loaded.into_iter().filter(|p| names.insert(p.name)));
            next
        });
    }

    /// Replaces the pack list (and its lookup) by what `next` makes of it.
    fn replace_packs(&self, next: impl FnOnce(&[Arc<LoadedPack>]) -> Vec<Arc<LoadedPack>>) {
        if let Ok(mut packs) = self.packs.write() {
            let next = next(&packs);
            let lookup = Lookup::build(&next);
            *packs = Arc::new(next);
            if let Ok(mut l) = self.lookup.write() {
                *l = Arc::new(lookup);
            }
        }
    }

    /// Installs a sealed pack in the store and makes its objects readable here.
    pub fn install(&self, pack: SealedPack) -> Result<PackName, StoreError> {
        let (name, info, index) = (pack.name, PackInfo { name: pack.name, len: pack.len }, pack.index.clone());
        self.store.install(pack)?;
        self.add_packs(vec![Arc::new(LoadedPack::new(self.store.clone(), info, index)?)]);
        Ok(name)
    }

    /// This database plus one more pack read from `source`, which is not installed anywhere:
    /// how a received pack is checked before it is accepted.
    pub fn overlay(&self, source: Arc<dyn PackStore>, info: PackInfo, index: PackIndex) -> Result<Odb, StoreError> {
        let mut packs: Vec<Arc<LoadedPack>> = vec![Arc::new(LoadedPack::new(source, info, index)?)];
        packs.extend(self.packs().iter().cloned());
        let cache = ChunkCache::new(VERIFY_CACHE_BYTES);
        Ok(Odb {
            store: self.store.clone(),
            lookup: RwLock::new(Arc::new(Lookup::build(&packs))),
            packs: RwLock::new(Arc::new(packs)),
            cache,
            broken: Mutex::new(self.broken()),
            base_hints: RwLock::new(None),
        })
    }

    /// Where an object is stored, among the packs loaded now.
    pub fn find(&self, id: &ObjectId) -> Option<(Arc<LoadedPack>, IndexRecord)> {
        let lookup = self.lookup.read().map(|l| l.clone()).ok()?;
        match lookup.by_id.is_empty() {
            true => lookup.packs.iter().find_map(|p| p.index.find(id).map(|r| (p.clone(), *r))),
            false => {
                let at = lookup.by_id.binary_search_by(|e| e.0.cmp(id)).ok()?;
                let (_, p, r) = lookup.by_id[at];
                let pack = lookup.packs.get(p as usize)?;
                Some((pack.clone(), *pack.index.records.get(r as usize)?))
            }
        }
    }

    /// Where an object is stored, looking for new packs before calling it missing, so that
    /// objects another process just wrote are found.
    pub fn locate(&self, id: &ObjectId) -> Result<(Arc<LoadedPack>, IndexRecord), StoreError> {
        if let Some(found) = self.find(id) {
            return Ok(found);
        }
        if self.refresh()?
            && let Some(found) = self.find(id)
        {
            return Ok(found);
        }
        match self.broken().first() {
            Some((info, why)) => Err(StoreError::Unreadable { id: *id, pack: info.name.stem(), why: why.clone() }),
            None => Err(StoreError::NotFound(*id)),
        }
    }

    /// Runs `read` on the pack holding `id`. If that fails because a gc deleted the pack
    /// since it was listed (the object moved to another pack), runs it once more on the pack
    /// that holds the object now.
    fn with_entry<T>(
        &self,
        id: &ObjectId,
        read: impl Fn(&Arc<LoadedPack>, IndexRecord) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (pack, rec) = self.locate(id)?;
        match read(&pack, rec) {
            Err(e) if !matches!(e, StoreError::Cancelled) => {
                if self.dropped(&[pack.name])? {
                    let (pack, rec) = self.locate(id)?;
                    return read(&pack, rec);
                }
                Err(e)
            }
            done => done,
        }
    }

    /// Refreshes the pack list and tells whether any of `names` has left it: whether a read
    /// from them that failed is worth retrying elsewhere. The list itself is asked, not what
    /// this refresh changed: another thread's read may have failed first and refreshed it.
    pub fn dropped(&self, names: &[PackName]) -> Result<bool, StoreError> {
        self.refresh()?;
        let packs = self.packs();
        Ok(names.iter().any(|n| !packs.iter().any(|p| p.name == *n)))
    }

    /// True if the object is in a loaded pack.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.find(id).is_some()
    }

    /// Stored bytes of an object's entry, if it is here.
    pub fn stored_len(&self, id: &ObjectId) -> Option<u64> {
        self.find(id).map(|(_, r)| r.len)
    }

    /// The delta bases an object's chunks name (from the pack index; nothing is decoded).
    pub fn bases(&self, id: &ObjectId) -> Result<Vec<ObjectId>, StoreError> {
        let (pack, rec) = self.locate(id)?;
        Ok(pack.index.bases_of(&rec).to_vec())
    }

    /// The ids of commits and tags that start with the hex `prefix`.
    pub fn commits_with_prefix(&self, prefix: &str) -> Vec<ObjectId> {
        let mut out: Vec<ObjectId> = self
            .packs()
            .iter()
            .flat_map(|p| p.index.records.iter())
            .filter(|r| matches!(r.kind, ObjectKind::Commit | ObjectKind::Tag) && r.id.to_hex().starts_with(prefix))
            .map(|r| r.id)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Copies an object's entry as it is stored into another pack, bases recorded.
    pub fn copy_entry(&self, id: &ObjectId, to: &mut crate::pack::PackWriter) -> Result<IndexRecord, StoreError> {
        let (_, rec) = self.locate(id)?;
        self.copy_entry_with_depth(id, rec.depth, to)?;
        Ok(rec)
    }

    /// Like [`Odb::copy_entry`], recording delta chain depth `depth` (its bases may have been
    /// re-encoded with shorter chains). Returns `depth`.
    pub fn copy_entry_with_depth(
        &self,
        id: &ObjectId,
        depth: u8,
        to: &mut crate::pack::PackWriter,
    ) -> Result<u8, StoreError> {
        let (pack, rec, bytes) = self.with_entry(id, |pack, rec| Ok((pack.clone(), rec, pack.entry_bytes(&rec)?)))?;
        to.copy_entry(&IndexRecord { depth, ..rec }, pack.index.bases_of(&rec), &bytes)?;
        pack.source.release(&pack.name, rec.offset, rec.len);
        Ok(depth)
    }

    /// Copies an object into another pack re-encoded without delta bases (cutting a chain that
    /// grew too long), its content checked against its id on the way.
    pub fn copy_standalone(
        &self,
        id: &ObjectId,
        to: &mut crate::pack::PackWriter,
        opts: crate::codec::EncodeOptions,
    ) -> Result<(), StoreError> {
        let header = self.header(id)?;
        let mut hasher = id_hasher(&header);
        to.begin(header.clone())?;
        for i in 0..header.chunk_count() {
            let data = self.decode_chunk(id, i)?;
            hasher.update(&data);
            to.push_chunk(&crate::codec::encode_chunk(header.meta.dtype, &data, None, opts))?;
        }
        if hasher.finish() != *id {
            return Err(StoreError::corrupt(*id, "content does not hash to its id"));
        }
        to.end(0, Vec::new())?;
        Ok(())
    }

    /// The entry header (kind, dtype, shape, size) of a stored object.
    pub fn header(&self, id: &ObjectId) -> Result<EntryHeader, StoreError> {
        self.with_entry(id, |pack, rec| Ok(pack.layout(&rec)?.header.clone()))
    }

    /// Decodes chunk `i` of an object through the cache, so a base shared by many deltas
    /// decodes once. The chunk's own bases are not cached: once it is, they are not needed again,
    /// and caching a whole chain would push out the chunks that are.
    pub fn chunk(&self, id: &ObjectId, i: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        self.cached_chunk(id, i, None, 0)
    }

    fn cached_chunk(
        &self,
        id: &ObjectId,
        i: u64,
        as_dtype: Option<DType>,
        depth: usize,
    ) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(hit) = self.cache.get(id, i, as_dtype) {
            return Ok(hit);
        }
        Ok(self.cache.insert(*id, i, as_dtype, self.decode_with(id, i, as_dtype, depth)?))
    }

    /// Offers `hints` for delta bases from now on (None withdraws them).
    pub fn set_base_hints(&self, hints: Option<Arc<dyn BaseHints>>) {
        if let Ok(mut h) = self.base_hints.write() {
            *h = hints;
        }
    }

    /// Decodes a delta chunk on its base as the hints have it, if they do and the result
    /// passes the chunk checksum.
    fn decode_on_hinted_base(
        &self,
        view: &ChunkView<'_>,
        fine: &EntryHeader,
        (start, end): (u64, u64),
    ) -> Option<Vec<u8>> {
        let base = view.base?;
        let hints = self.base_hints.read().ok()?.clone()?;
        let bh = self.header(&base).ok()?;
        let (fw, bw) = (fine.meta.dtype.width() as u64, bh.meta.dtype.width() as u64);
        if !convert::can_convert(bh.meta.dtype, fine.meta.dtype) {
            return None;
        }
        if bh.meta.dtype == fine.meta.dtype {
            thread_local! {
                /// Reused from chunk to chunk: a fresh buffer per chunk costs zeroing and page faults.
                static SAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            // Read straight into the buffer the chunk is decoded on, without a copy.
            return SAME.with_borrow_mut(|buf| {
                let read = hints.read_range(&base, start, usize::try_from(end - start).ok()?, buf);
                read.then(|| view.decode(fine.meta.dtype, Some(buf)).ok()).flatten()
            });
        }
        // Converted a piece at a time, while the piece is in cache.
        let mut converted = Vec::with_capacity(usize::try_from(end - start).ok()?);
        let read = hints.with_range(&base, start / fw * bw, end / fw * bw, &mut |piece| {
            convert::convert_into(piece, bh.meta.dtype, fine.meta.dtype, &mut converted);
        });
        read.then(|| view.decode(fine.meta.dtype, Some(&converted)).ok()).flatten()
    }

    /// Decodes chunk `i` of an object, using its bases' chunks from the cache when they are
    /// there but not adding them: a checkout decodes each fine-tune chunk once, and its base's
    /// chunk, kept, would only take fresh memory (MiniLM ft-a-v2: 5% fewer CPU seconds, peak
    /// RSS 64 → 57 MiB).
    pub fn decode_chunk(&self, id: &ObjectId, i: u64) -> Result<Vec<u8>, StoreError> {
        self.decode_with(id, i, None, 0)
    }

    /// Decodes chunk `i` (converted to `as_dtype`, if given), `depth` links down a delta chain,
    /// using its bases' chunks from the cache when they are there, never adding them: a chunk
    /// that is cached is not decoded again, so neither are its bases.
    fn decode_with(&self, id: &ObjectId, i: u64, as_dtype: Option<DType>, depth: usize) -> Result<Vec<u8>, StoreError> {
        if depth > MAX_DECODE_DEPTH {
            let what = format!("delta chain longer than {MAX_DECODE_DEPTH} links (a cycle of bases?)");
            return Err(StoreError::corrupt(*id, what));
        }
        let (entry, chunk) = self.stored_chunk(id, i)?;
        let view = chunk.view().map_err(|e| StoreError::corrupt(*id, e))?;
        let (start, end) = entry.header.chunk_range(i);
        if view.raw_len as u64 != end - start {
            return Err(StoreError::corrupt(
                *id,
                format!("chunk {i} holds {} bytes, expected {}", view.raw_len, end - start),
            ));
        }
        // Hints serve chunks decoded as they are: those of the objects being checked out.
        if as_dtype.is_none()
            && let Some(decoded) = self.decode_on_hinted_base(&view, &entry.header, (start, end))
        {
            return Ok(decoded);
        }
        if as_dtype.is_none()
            && let Some(base_id) = view.base
            && let Some(chain) = self.part_base(&base_id, &entry.header, (start, end), depth)?
        {
            return chain.decode(*id, &view, entry.header.meta.dtype);
        }
        let base = match view.base {
            Some(base_id) => {
                let range = (start, end);
                Some(self.base_range(&base_id, &entry.header, range, depth + 1)?)
            }
            None => None,
        };
        view.decode_as(entry.header.meta.dtype, as_dtype, base.as_deref().map(Vec::as_slice))
            .map_err(|e: CodecError| StoreError::corrupt(*id, e))
    }

    /// Chunk `i` of object `id` as stored, with the object's layout.
    fn stored_chunk(&self, id: &ObjectId, i: u64) -> Result<(Arc<EntryLayout>, StoredChunk), StoreError> {
        self.with_entry(id, |pack, rec| {
            let layout = pack.layout(&rec)?;
            let (stored, at) = pack.chunk(&rec, &layout, i)?;
            Ok((layout, StoredChunk { pack: pack.clone(), stored, at }))
        })
    }

    /// What delta chunk `start..end` of `fine` (bytes) is decoded on a part at a time, if
    /// anything: its base's chunk when that holds exactly the same elements and is not in the
    /// cache, and is a difference chunk of the same dtype (then again for that chunk's base)
    /// or a standalone byte-grouped F32 chunk under BF16. A chain of fine-tunes (each a
    /// difference on the one before) is then decoded without any link whole in memory. The
    /// lowest link's base, if not F32, is decoded the usual way (`depth` as there).
    fn part_base(
        &self,
        base: &ObjectId,
        fine: &EntryHeader,
        range: (u64, u64),
        depth: usize,
    ) -> Result<Option<PartBase>, StoreError> {
        let (mut links, mut id, mut header) = (Vec::new(), *base, fine.clone());
        loop {
            if let Some(grouped) = self.grouped_f32_base(&id, &header, range)? {
                return Ok(Some(PartBase { links, bottom: PartBottom::GroupedF32(id, grouped) }));
            }
            let Some((link, below, link_header)) = self.difference_link(&id, &header, range)? else { break };
            links.push((id, link));
            (id, header) = (below, link_header);
            if depth + links.len() > MAX_DECODE_DEPTH {
                let what = format!("delta chain longer than {MAX_DECODE_DEPTH} links (a cycle of bases?)");
                return Err(StoreError::corrupt(*base, what));
            }
        }
        if links.is_empty() {
            return Ok(None);
        }
        let elements = self.base_range(&id, &header, range, depth + links.len() + 1)?;
        Ok(Some(PartBase { links, bottom: PartBottom::Elements(id, elements) }))
    }

    /// The chunk of `base` holding exactly bytes `start..end` of `fine`, when `base` has
    /// `fine`'s dtype, the cache does not have that chunk, and it is a difference chunk:
    /// with its own base's id and `base`'s header.
    fn difference_link(
        &self,
        base: &ObjectId,
        fine: &EntryHeader,
        (start, end): (u64, u64),
    ) -> Result<Option<(StoredChunk, ObjectId, EntryHeader)>, StoreError> {
        let bh = self.header(base)?;
        let i = start / (bh.chunk_elems.max(1) * bh.meta.dtype.width() as u64);
        if bh.meta.dtype != fine.meta.dtype
            || bh.chunk_range(i) != (start, end)
            || self.cache.get(base, i, None).is_some()
        {
            return Ok(None);
        }
        let (_, chunk) = self.stored_chunk(base, i)?;
        let below = chunk.view().ok().filter(|v| v.codec.is_difference()).and_then(|v| v.base);
        Ok(below.map(|below| (chunk, below, bh)))
    }

    /// The stored chunk of F32 base `base` that holds exactly the elements of bytes
    /// `start..end` of BF16 delta `fine`, byte-grouped and standalone, when the cache does not
    /// have its elements already: the delta
    /// is then decoded on the base's byte planes a part at a time (see [`crate::codec::Base`]),
    /// rather than on a whole rounded copy of the base chunk that would not stay in cache.
    fn grouped_f32_base(
        &self,
        base: &ObjectId,
        fine: &EntryHeader,
        (start, end): (u64, u64),
    ) -> Result<Option<StoredChunk>, StoreError> {
        if fine.meta.dtype != DType::BF16 {
            return Ok(None);
        }
        let bh = self.header(base)?;
        let (first, last) = (start / 2, end / 2);
        let i = first / bh.chunk_elems.max(1);
        let whole_chunk = bh.chunk_range(i) == (4 * first, 4 * last);
        if bh.meta.dtype != DType::F32 || !whole_chunk || self.cache.get(base, i, Some(DType::BF16)).is_some() {
            return Ok(None);
        }
        let (_, chunk) = self.stored_chunk(base, i)?;
        // Only a standalone byte-grouped chunk: others (deltas themselves) go the usual way.
        let grouped = chunk.view().is_ok_and(|v| v.codec == crate::codec::Codec::Grouped && v.base.is_none());
        Ok(grouped.then_some(chunk))
    }

    /// The base's elements matching bytes `start..end` of `fine`, converted to the fine dtype,
    /// from the cache where it has them, not added to it.
    fn base_range(
        &self,
        base: &ObjectId,
        fine: &EntryHeader,
        (start, end): (u64, u64),
        depth: usize,
    ) -> Result<Arc<Vec<u8>>, StoreError> {
        let bh = self.header(base)?;
        if !convert::can_convert(bh.meta.dtype, fine.meta.dtype) {
            return Err(incompatible(base, bh.meta.dtype, fine.meta.dtype));
        }
        self.read_range_with(base, &bh, (start, end), Some(fine.meta.dtype), false, depth)
    }

    /// Bytes `start..end` of an object's data, decoding only the chunks that cover them
    /// (through the cache).
    pub fn read_range(&self, id: &ObjectId, header: &EntryHeader, start: u64, end: u64) -> Result<Vec<u8>, StoreError> {
        let shared = self.read_range_with(id, header, (start, end), None, true, 0)?;
        Ok(Arc::try_unwrap(shared).unwrap_or_else(|shared| shared.to_vec()))
    }

    /// Bytes `start..end` of an object's elements converted to `dtype` (positions count in
    /// `dtype`'s width), through the cache; a range that is one whole chunk is shared with
    /// the cache, not copied.
    pub fn read_range_as(
        &self,
        id: &ObjectId,
        header: &EntryHeader,
        (start, end): (u64, u64),
        dtype: DType,
    ) -> Result<Arc<Vec<u8>>, StoreError> {
        if !convert::can_convert(header.meta.dtype, dtype) {
            return Err(incompatible(id, header.meta.dtype, dtype));
        }
        self.read_range_with(id, header, (start, end), Some(dtype), true, 0)
    }

    fn read_range_with(
        &self,
        id: &ObjectId,
        header: &EntryHeader,
        (start, end): (u64, u64),
        as_dtype: Option<DType>,
        cached: bool,
        depth: usize,
    ) -> Result<Arc<Vec<u8>>, StoreError> {
        let as_dtype = as_dtype.filter(|&d| d != header.meta.dtype);
        let width = as_dtype.unwrap_or(header.meta.dtype).width() as u64;
        let len = header.meta.data_len / header.meta.dtype.width() as u64 * width;
        if end > len || start > end || end - start > MAX_IN_MEMORY {
            return Err(StoreError::corrupt(*id, format!("range {start}..{end} outside its {len} bytes")));
        }
        let chunk_bytes = header.chunk_elems * width;
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut pos = start;
        while pos < end {
            let i = pos / chunk_bytes;
            // Without `cached`, a chunk already in the cache is still used; it is only not added.
            let chunk = match (cached, self.cache.get(id, i, as_dtype)) {
                (true, _) => self.cached_chunk(id, i, as_dtype, depth)?,
                (false, Some(hit)) => hit,
                (false, None) => Arc::new(self.decode_with(id, i, as_dtype, depth)?),
            };
            let offset = (pos - i * chunk_bytes) as usize;
            let take = ((end - pos) as usize).min(chunk.len().saturating_sub(offset));
            if take == 0 {
                return Err(StoreError::corrupt(*id, format!("chunk {i} shorter than its range")));
            }
            if offset == 0 && take == chunk.len() && pos == start && pos + take as u64 == end {
                return Ok(chunk);
            }
            out.extend_from_slice(&chunk[offset..offset + take]);
            pos += take as u64;
        }
        Ok(Arc::new(out))
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
        sink: impl FnMut(&[u8]) -> std::io::Result<()> + Send,
    ) -> Result<Vec<EntryHeader>, StoreError> {
        self.stream_all_keeping(ids, &HashSet::new(), sink)
    }

    /// Like [`Odb::stream_all`], keeping the decoded chunks of the objects in `keep` in the
    /// cache: when they are bases of objects that follow, those find their base decoded.
    pub fn stream_all_keeping(
        &self,
        ids: &[ObjectId],
        keep: &HashSet<ObjectId>,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()> + Send,
    ) -> Result<Vec<EntryHeader>, StoreError> {
        let headers: Vec<EntryHeader> = ids.iter().map(|id| self.header(id)).collect::<Result<_, _>>()?;
        let work: Vec<(usize, u64)> =
            headers.iter().enumerate().flat_map(|(k, h)| (0..h.chunk_count()).map(move |i| (k, i))).collect();
        let mut hashers: Vec<Option<crate::object::IdHasher>> = headers.iter().map(|h| Some(id_hasher(h))).collect();
        let decode = |&(k, i): &(usize, u64)| match keep.contains(&ids[k]) {
            true => self.chunk(&ids[k], i),
            false => self.decode_chunk(&ids[k], i).map(Arc::new),
        };
        pipelined(&work, decode, |&(k, _), data| {
            if let Some(h) = hashers[k].as_mut() {
                h.update_serial(&data);
            }
            Ok(sink(&data)?)
        })?;
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
        let (pack, rec, entry) = self.with_entry(id, |pack, rec| Ok((pack.clone(), rec, pack.layout(&rec)?)))?;
        let mut codecs: Vec<(String, u64)> = Vec::new();
        let mut bases = Vec::new();
        for i in 0..entry.chunks.len() as u64 {
            let (stored, _) = pack.chunk(&rec, &entry, i)?;
            let view = ChunkView::parse(&stored).map_err(|e| StoreError::corrupt(*id, e))?;
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

    /// Reads and decodes a small object of a known kind.
    fn decode_as<T>(
        &self,
        id: &ObjectId,
        kind: ObjectKind,
        decode: impl FnOnce(&[u8]) -> Result<T, crate::encoding::DecodeError>,
    ) -> Result<T, StoreError> {
        let body = self.read_kind(id, kind)?;
        decode(&body).map_err(|e| StoreError::corrupt(*id, e))
    }

    /// Checks that an object parses as its kind says (a tree's names are safe path components,
    /// a commit's fields well formed, ...); tensors and blobs are bytes, always well formed.
    pub fn check_parses(&self, id: &ObjectId, kind: ObjectKind) -> Result<(), StoreError> {
        match kind {
            ObjectKind::Commit => self.commit(id).map(drop),
            ObjectKind::Tree => self.tree(id).map(drop),
            ObjectKind::Tag => self.tag(id).map(drop),
            ObjectKind::TensorFile => self.tensor_file(id).map(drop),
            ObjectKind::ChunkedFile => self.chunked_file(id).map(drop),
            ObjectKind::Tensor | ObjectKind::Blob => Ok(()),
        }
    }

    /// Reads a commit.
    pub fn commit(&self, id: &ObjectId) -> Result<Commit, StoreError> {
        self.decode_as(id, ObjectKind::Commit, Commit::decode)
    }

    /// Reads a tree.
    pub fn tree(&self, id: &ObjectId) -> Result<Tree, StoreError> {
        self.decode_as(id, ObjectKind::Tree, Tree::decode)
    }

    /// Reads an annotated tag.
    pub fn tag(&self, id: &ObjectId) -> Result<Tag, StoreError> {
        self.decode_as(id, ObjectKind::Tag, Tag::decode)
    }

    /// Reads a tensor file.
    pub fn tensor_file(&self, id: &ObjectId) -> Result<TensorFile, StoreError> {
        self.decode_as(id, ObjectKind::TensorFile, TensorFile::decode)
    }

    /// Reads a chunked file's list of chunks.
    pub fn chunked_file(&self, id: &ObjectId) -> Result<ChunkedFile, StoreError> {
        self.decode_as(id, ObjectKind::ChunkedFile, ChunkedFile::decode)
    }
}
