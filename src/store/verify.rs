//! Checking a pack that came from elsewhere before anything may point at it (git's
//! index-pack): every byte hashed, every entry walked and decoded, every object id and delta
//! base checked, and the index built from the content, never taken on trust.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

use super::{MAX_DECODE_DEPTH, Odb, PackInfo, PackStore, StoreError};
use crate::codec::ChunkView;
use crate::fsutil::{PageReleaser, ReleaseBehind};
use crate::object::{ObjectId, ObjectKind};
use crate::pack::{
    EntryView, IndexRecord, PACK_HEADER_LEN, PackError, PackIndex, PackName, SealedPack, TRAILER_LEN, UnindexedPack,
    check_header,
};
use crate::progress::Progress;

/// Verifies a received pack against the objects `odb` already holds and returns it sealed
/// with the index built from its content. Delta chains may be as long as any reader follows.
pub fn verify_pack(odb: &Odb, pack: UnindexedPack, progress: &dyn Progress) -> Result<SealedPack, StoreError> {
    let path = pack.file.to_path_buf();
    let file = File::open(&path).map_err(|e| PackError::io(&path, e))?;
    // SAFETY: the temporary file is private to this process until it is installed.
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| PackError::io(&path, e))?);
    let len = map.len() as u64;
    let index = index_from_content(odb, &path, pack.name, &map, &|start, n| {
        crate::fsutil::release_pages(&map, start, n);
    })?;
    let mut records: Vec<&IndexRecord> = index.records.iter().collect();
    records.sort_by_key(|r| r.offset);
    let order: Vec<ObjectId> = records.iter().map(|r| r.id).collect();
    let info = PackInfo { name: pack.name, len };
    let bytes = Bytes::from_owner(MapOwner(map.clone()));
    let source = Arc::new(FilePack { path: path.clone(), name: pack.name, map, pages: PageReleaser::default(), bytes });
    let overlay = odb.overlay(source, info, index.clone())?;
    // A base decoded for its own check is kept for the deltas after it: each chunk decodes once.
    let bases_here: std::collections::HashSet<ObjectId> =
        index.bases.iter().filter(|b| index.find(b).is_some()).copied().collect();
    overlay.stream_all_keeping(&order, &bases_here, |_| {
        if progress.cancelled() { Err(crate::progress::interrupted()) } else { Ok(()) }
    })?;
    // The ids prove the bytes are what the sender meant; parsing proves they are objects a
    // checkout can use (no `..` in a tree), so a hostile one is refused here, not when read.
    for rec in &records {
        overlay.check_parses(&rec.id, rec.kind)?;
    }
    Ok(SealedPack { file: pack.file, name: pack.name, len, index })
}

/// Builds the index of pack `name` (whose bytes are `bytes`, from `path`) from its content:
/// header, checksum, every entry walked, every delta base found here or in `odb`, depths.
/// Nothing is decoded. Ranges of `bytes` read are passed to `release` as the reading goes
/// (a mapping gives its pages back), so memory stays flat in the pack's size.
pub fn index_from_content(
    odb: &Odb,
    path: &Path,
    name: PackName,
    bytes: &[u8],
    release: &dyn Fn(u64, u64),
) -> Result<PackIndex, StoreError> {
    let corrupt =
        |offset: u64, what: String| StoreError::from(PackError::CorruptAt { path: path.to_path_buf(), offset, what });
    check_header(path, bytes)?;
    let len = bytes.len() as u64;
    let body_end = len.checked_sub(TRAILER_LEN).filter(|&e| e >= PACK_HEADER_LEN);
    let body_end = body_end.ok_or_else(|| corrupt(0, "pack too short".into()))? as usize;
    let mut hasher = blake3::Hasher::new();
    for (start, end) in crate::fsutil::pieces(0, body_end as u64) {
        hasher.update_rayon(&bytes[start as usize..end as usize]);
        release(start, end - start);
    }
    let hash = *hasher.finalize().as_bytes();
    if hash != bytes[body_end..] || hash != name.0 {
        return Err(corrupt(body_end as u64, "pack checksum mismatch: its bytes were damaged".into()));
    }
    let entries = walk_entries(&bytes[..body_end], &corrupt, release)?;
    let entries = with_depths(odb, entries, MAX_DECODE_DEPTH as u8, &corrupt)?;
    Ok(PackIndex::build(name.0, entries))
}

/// Checks a stored pack against its stored index, which must equal the one its content gives:
/// every record (offset, length, kind, size, depth) and every delta base.
pub fn check_stored_pack(odb: &Odb, info: PackInfo, stored: &PackIndex) -> Result<(), StoreError> {
    let store = odb.store();
    let path = PathBuf::from(store.describe()).join(format!("{}.pack", info.name.stem()));
    let bytes = store.read_range(&info.name, 0, info.len)?;
    let rebuilt =
        index_from_content(odb, &path, info.name, &bytes, &|start, len| store.release(&info.name, start, len))?;
    let idx_path = path.with_extension("idx");
    let wrong = |what: String| StoreError::from(PackError::corrupt(&idx_path, what));
    if rebuilt.records.len() != stored.records.len() {
        return Err(wrong(format!("lists {} objects, the pack holds {}", stored.records.len(), rebuilt.records.len())));
    }
    for (want, got) in rebuilt.records.iter().zip(&stored.records) {
        let same_record = (want.id, want.offset, want.len, want.data_len, want.kind, want.depth)
            == (got.id, got.offset, got.len, got.data_len, got.kind, got.depth);
        let same_bases = !stored.bases_known || rebuilt.bases_of(want) == stored.bases_of(got);
        if !same_record || !same_bases {
            return Err(wrong(format!(
                "its record of {} (offset {}) does not match the pack (object at byte {})",
                got.id.short(),
                got.offset,
                want.offset
            )));
        }
    }
    Ok(())
}

/// Walks every entry of a pack body: its record and the bases its chunks name. What the walk
/// has read past is passed to `release` a piece at a time (it reads the pages around every
/// entry's header and chunk prefix, which may map most of the pack).
fn walk_entries(
    body: &[u8],
    corrupt: &dyn Fn(u64, String) -> StoreError,
    release: &dyn Fn(u64, u64),
) -> Result<Vec<(IndexRecord, Vec<ObjectId>)>, StoreError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut pos = PACK_HEADER_LEN as usize;
    let mut behind = ReleaseBehind::new(0, release);
    while pos < body.len() {
        let at = pos as u64;
        let (entry, used) = EntryView::parse_prefix_with(&body[pos..], &mut |r| behind.reached(at + r as u64))
            .map_err(|e| corrupt(at, e.to_string()))?;
        let h = &entry.header;
        let mut bases = Vec::new();
        // The chunks' headers lie beside their length prefixes, read (and given back) above.
        behind.back_to(at);
        for i in 0..entry.chunk_count() {
            let stored = entry.chunk(i).unwrap_or_default();
            let what = |e: String| corrupt(at, format!("object {} chunk {i}: {e}", h.id.short()));
            let view = ChunkView::parse(stored).map_err(|e| what(e.to_string()))?;
            let (start, end) = h.chunk_range(i as u64);
            if view.raw_len as u64 != end - start {
                return Err(what(format!("holds {} bytes, expected {}", view.raw_len, end - start)));
            }
            bases.extend(view.base);
            behind.reached((stored.as_ptr() as usize - body.as_ptr() as usize + stored.len()) as u64);
        }
        // Sorted rather than searched chunk by chunk: a hostile entry may name a new base in
        // every one of millions of chunks.
        bases.sort_unstable();
        bases.dedup();
        if h.kind != ObjectKind::Tensor && !bases.is_empty() {
            return Err(corrupt(at, format!("{} {} names a delta base", h.kind.name(), h.id.short())));
        }
        if !seen.insert(h.id) {
            return Err(corrupt(at, format!("object {} appears twice", h.id.short())));
        }
        let record = IndexRecord {
            id: h.id,
            offset: at,
            len: used as u64,
            data_len: h.meta.data_len,
            kind: h.kind,
            depth: 0,
            base_count: 0,
            first_base: 0,
        };
        out.push((record, bases));
        pos += used;
    }
    behind.finish(body.len() as u64);
    Ok(out)
}

/// Fills in each entry's delta chain depth; every base must be a tensor in this pack or the
/// store, and no chain may be longer than `max_chain` or loop.
fn with_depths(
    odb: &Odb,
    mut entries: Vec<(IndexRecord, Vec<ObjectId>)>,
    max_chain: u8,
    corrupt: &dyn Fn(u64, String) -> StoreError,
) -> Result<Vec<(IndexRecord, Vec<ObjectId>)>, StoreError> {
    let position: HashMap<ObjectId, usize> = entries.iter().enumerate().map(|(k, (r, _))| (r.id, k)).collect();
    let mut depth: HashMap<ObjectId, u8> = HashMap::new();
    for k in 0..entries.len() {
        let mut path = Vec::new();
        depth_of(k, &entries, &position, odb, max_chain, &mut depth, &mut path, corrupt)?;
    }
    for (rec, _) in &mut entries {
        rec.depth = depth.get(&rec.id).copied().unwrap_or(0);
    }
    Ok(entries)
}

/// Depth of entry `k`, computed from its bases' depths; `path` holds the entries being
/// computed, to detect cycles.
#[allow(clippy::too_many_arguments)]
fn depth_of(
    k: usize,
    entries: &[(IndexRecord, Vec<ObjectId>)],
    position: &HashMap<ObjectId, usize>,
    odb: &Odb,
    max_chain: u8,
    depth: &mut HashMap<ObjectId, u8>,
    path: &mut Vec<ObjectId>,
    corrupt: &dyn Fn(u64, String) -> StoreError,
) -> Result<u8, StoreError> {
    let (rec, bases) = &entries[k];
    if let Some(&d) = depth.get(&rec.id) {
        return Ok(d);
    }
    if path.contains(&rec.id) || path.len() > max_chain as usize {
        return Err(corrupt(
            rec.offset,
            format!("delta chain of {} loops or exceeds {max_chain} links", rec.id.short()),
        ));
    }
    path.push(rec.id);
    let mut deepest: Option<u8> = None;
    for b in bases {
        let d = match position.get(b) {
            Some(&j) if entries[j].0.kind == ObjectKind::Tensor => {
                depth_of(j, entries, position, odb, max_chain, depth, path, corrupt)?
            }
            None => match odb.find(b) {
                Some((_, r)) if r.kind == ObjectKind::Tensor => r.depth,
                Some(_) => return Err(corrupt(rec.offset, format!("delta base {} is not a tensor", b.short()))),
                None => {
                    let what = format!(
                        "delta base {} of {} is in neither the pack nor the repository",
                        b.short(),
                        rec.id.short()
                    );
                    return Err(corrupt(rec.offset, what));
                }
            },
            Some(_) => return Err(corrupt(rec.offset, format!("delta base {} is not a tensor", b.short()))),
        };
        deepest = Some(deepest.map_or(d, |m| m.max(d)));
    }
    path.pop();
    let d = match deepest {
        None => 0,
        Some(m) if m < max_chain => m + 1,
        Some(_) => {
            return Err(corrupt(rec.offset, format!("delta chain of {} exceeds {max_chain} links", rec.id.short())));
        }
    };
    depth.insert(rec.id, d);
    Ok(d)
}

struct MapOwner(Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The one pack file being verified, readable like any store but installed nowhere.
struct FilePack {
    path: PathBuf,
    name: PackName,
    map: Arc<Mmap>,
    pages: PageReleaser,
    bytes: Bytes,
}

impl PackStore for FilePack {
    fn describe(&self) -> String {
        self.path.parent().unwrap_or(Path::new(".")).display().to_string()
    }

    fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        Ok(vec![PackInfo { name: self.name, len: self.bytes.len() as u64 }])
    }

    fn read_index(&self, _: &PackName) -> Result<PackIndex, StoreError> {
        Err(StoreError::Backend("a pack being verified has no index yet".into()))
    }

    fn read_range(&self, _: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError> {
        match start.checked_add(len).filter(|&e| e <= self.bytes.len() as u64) {
            Some(end) => Ok(self.bytes.slice(start as usize..end as usize)),
            None => Err(PackError::corrupt(&self.path, format!("range {start}+{len} lies outside the pack")).into()),
        }
    }

    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError> {
        Ok(*pack == self.name)
    }

    fn install(&self, _: SealedPack) -> Result<(), StoreError> {
        Err(StoreError::Backend("a pack being verified cannot take new packs".into()))
    }

    fn release(&self, _: &PackName, start: u64, len: u64) {
        self.pages.release(&self.map, start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, EncodeOptions, encode_with};
    use crate::object::{DType, EntryKind, TensorMeta, Tree, TreeEntry};
    use crate::pack::{EntryHeader, PackWriter};
    use crate::progress::Silent;
    use crate::store::MemoryPacks;

    const N: usize = 64;

    fn values(seed: u8) -> Vec<u8> {
        (0..N).flat_map(|i| (1.0f32 + (i as f32 + seed as f32) / 100.0).to_le_bytes()).collect()
    }

    fn tensor_id(data: &[u8]) -> ObjectId {
        let meta = TensorMeta { dtype: DType::F32, shape: vec![N as u64], data_len: data.len() as u64 };
        let mut h = meta.hasher();
        h.update(data);
        h.finish()
    }

    /// A tensor to pack: its id, its data, and the base id and data it is coded against.
    type Item = (ObjectId, Vec<u8>, Option<(ObjectId, Vec<u8>)>);

    fn pack(dir: &Path, items: &[Item]) -> UnindexedPack {
        let mut w = PackWriter::new(dir).unwrap();
        for (id, data, base) in items {
            let meta = TensorMeta { dtype: DType::F32, shape: vec![N as u64], data_len: data.len() as u64 };
            w.begin(EntryHeader { kind: ObjectKind::Tensor, id: *id, meta, chunk_elems: N as u64 }).unwrap();
            let codec = if base.is_some() { Codec::DiffContext } else { Codec::Grouped };
            let base = base.as_ref().map(|(b, bytes)| (*b, bytes.as_slice()));
            w.push_chunk(&encode_with(codec, DType::F32, data, base, EncodeOptions::default())).unwrap();
            w.end(0, Vec::new()).unwrap();
        }
        let sealed = w.finish().unwrap().unwrap();
        UnindexedPack { file: sealed.file, name: sealed.name, len: sealed.len }
    }

    fn empty() -> Odb {
        Odb::open(Arc::new(MemoryPacks::default())).unwrap()
    }

    fn err(r: Result<SealedPack, StoreError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into())
    }

    #[test]
    fn a_good_pack_is_indexed_from_its_content_with_bases_and_depths() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (values(0), values(1));
        let (ia, ib) = (tensor_id(&a), tensor_id(&b));
        let p = pack(dir.path(), &[(ia, a.clone(), None), (ib, b, Some((ia, a)))]);
        let sealed = verify_pack(&empty(), p, &Silent).unwrap();
        let rec = *sealed.index.find(&ib).unwrap();
        assert_eq!((rec.depth, sealed.index.bases_of(&rec)), (1, &[ia][..]));
    }

    #[test]
    fn a_lying_id_a_missing_base_and_a_self_base_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (values(0), values(1));
        let (ia, ib) = (tensor_id(&a), tensor_id(&b));
        let lying = pack(dir.path(), &[(ib, a.clone(), None)]);
        assert!(err(verify_pack(&empty(), lying, &Silent)).contains("does not hash to its id"));
        let orphan = pack(dir.path(), &[(ib, b.clone(), Some((ia, a.clone())))]);
        assert!(err(verify_pack(&empty(), orphan, &Silent)).contains("neither the pack nor the repository"));
        let cycle = pack(dir.path(), &[(ib, b.clone(), Some((ib, a)))]);
        assert!(err(verify_pack(&empty(), cycle, &Silent)).contains("loops"));
    }

    #[test]
    fn a_tree_that_would_write_outside_the_work_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let entry =
            TreeEntry { name: "..".into(), kind: EntryKind::Blob, executable: false, id: ObjectId([1; 32]), size: 1 };
        let body = Tree { entries: vec![entry] }.encode();
        let meta = TensorMeta { dtype: DType::U8, shape: Vec::new(), data_len: body.len() as u64 };
        let header = EntryHeader {
            kind: ObjectKind::Tree,
            id: ObjectId::hash(ObjectKind::Tree, &body),
            meta,
            chunk_elems: 1 << 20,
        };
        let mut w = PackWriter::new(dir.path()).unwrap();
        w.write_entry(header, &[encode_with(Codec::Raw, DType::U8, &body, None, EncodeOptions::default())], 0).unwrap();
        let sealed = w.finish().unwrap().unwrap();
        let p = UnindexedPack { file: sealed.file, name: sealed.name, len: sealed.len };
        assert!(err(verify_pack(&empty(), p, &Silent)).contains("unsafe tree entry name"));
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let a = values(0);
        let good = pack(dir.path(), &[(tensor_id(&a), a, None)]);
        let bytes = std::fs::read(&good.file).unwrap();
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            std::fs::write(&good.file, &bad).unwrap();
            let copy = tempfile::Builder::new().tempfile_in(dir.path()).unwrap().into_temp_path();
            std::fs::copy(&good.file, &copy).unwrap();
            let p = UnindexedPack { file: copy, name: good.name, len: good.len };
            assert!(verify_pack(&empty(), p, &Silent).is_err(), "flipped byte {i} accepted");
        }
    }
}
