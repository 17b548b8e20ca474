//! Packs in a directory (`objects/pack/` of a repository): memory-mapped, read without copying.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::Mmap;

use super::bundle::{Bundle, REBUNDLE_AFTER};
use super::{Doomed, PackInfo, PackStore, StoreError, decode_mark, encode_mark};
use crate::codec::ChunkView;
use crate::fsutil::{self, PageReleaser};
use crate::pack::{EntryView, PackError, PackIndex, PackName, SealedPack, TRAILER_LEN, check_header};

/// Extension of a pack's deletion mark.
const DOOMED: &str = "doomed";

/// A directory of `pack-<hex>.pack` files, each with its `.idx`.
pub struct LocalPacks {
    dir: PathBuf,
    maps: Mutex<HashMap<PackName, Mapped>>,
    /// Indexes of many packs in one file, loaded on first listing.
    bundle: Mutex<Option<Arc<Bundle>>>,
    /// Gives back the packs' pages once read.
    pages: PageReleaser,
}

/// A mapped pack: the map for page hints, and a handle that slices it without copying.
#[derive(Clone)]
struct Mapped {
    map: Arc<Mmap>,
    bytes: Bytes,
}

struct MapOwner(Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl LocalPacks {
    /// The packs in `dir`.
    pub fn new(dir: &Path) -> LocalPacks {
        LocalPacks {
            dir: dir.to_path_buf(),
            maps: Mutex::new(HashMap::new()),
            bundle: Mutex::new(None),
            pages: PageReleaser::default(),
        }
    }

    fn path(&self, pack: &PackName, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", pack.stem()))
    }

    /// Removes a pack's files, index first so that no reader opens a pack being removed; the
    /// caller syncs the directory. Files already gone are not an error.
    pub fn remove_files(&self, pack: &PackName) -> Result<(), StoreError> {
        if let Some(removed) = self.maps.lock().ok().and_then(|mut maps| maps.remove(pack)) {
            self.pages.forget(&removed.map);
        }
        for ext in ["idx", "pack", DOOMED] {
            fsutil::remove_if_present(&self.path(pack, ext))?;
        }
        Ok(())
    }

    /// The packs that have a file with extension `ext` here, with that file's path.
    fn files_with(&self, ext: &str) -> Result<Vec<(PackName, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| fsutil::with_path(&self.dir, e))? {
            let path = entry.map_err(|e| fsutil::with_path(&self.dir, e))?.path();
            let name = (path.extension().is_some_and(|x| x == ext))
                .then(|| path.file_stem().and_then(|s| s.to_str()).and_then(PackName::from_stem))
                .flatten();
            out.extend(name.map(|n| (n, path)));
        }
        Ok(out)
    }

    /// The length of a pack whose index was listed; None if both its files are gone since: a
    /// gc removed it (index first, see [`LocalPacks::remove_files`]), which is no damage. A
    /// pack file missing under an index that is still there is.
    fn pack_len(&self, pack: &PackName) -> Result<Option<u64>, StoreError> {
        let path = self.path(pack, "pack");
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.path(pack, "idx").exists() => Ok(None),
            Err(e) => Err(PackError::io(&path, e).into()),
        }
    }

    /// Maps a pack (once) and checks its header.
    fn mapped(&self, pack: &PackName) -> Result<Mapped, StoreError> {
        if let Some(m) = self.maps.lock().ok().and_then(|m| m.get(pack).cloned()) {
            return Ok(m);
        }
        let path = self.path(pack, "pack");
        let file = File::open(&path).map_err(|e| PackError::io(&path, e))?;
        // SAFETY: packs are never modified after they are renamed into place; a concurrent
        // truncation by another program could fault, which no checked read can prevent.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| PackError::io(&path, e))?);
        crate::fsutil::prefer_large_folios(&map);
        check_header(&path, &map)?;
        let trailer = map.len().saturating_sub(TRAILER_LEN as usize);
        if map[trailer..] != pack.0 {
            return Err(PackError::corrupt(&path, "the pack's trailer does not match its name").into());
        }
        let mapped = Mapped { bytes: Bytes::from_owner(MapOwner(map.clone())), map };
        if let Ok(mut maps) = self.maps.lock() {
            maps.insert(*pack, mapped.clone());
        }
        Ok(mapped)
    }

    fn bundle(&self) -> Arc<Bundle> {
        let Ok(mut slot) = self.bundle.lock() else { return Arc::new(Bundle::default()) };
        slot.get_or_insert_with(|| Arc::new(Bundle::load(&self.dir))).clone()
    }

    /// Rewrites the index bundle to cover every listed pack, best effort: it only saves time.
    /// Indexes already bundled are carried over as they are; the others are read and checked.
    fn rebundle(&self, bundle: &Bundle, packs: &[PackInfo]) {
        let encoded = |p: &PackInfo| match bundle.get(&p.name) {
            Some((_, bytes)) => Ok(bytes.clone()),
            None => self.read_index(&p.name).map(|index| index.encode()),
        };
        let indexes: Result<Vec<(PackName, u64, Vec<u8>)>, StoreError> =
            packs.iter().map(|p| Ok((p.name, p.len, encoded(p)?))).collect();
        if let Ok(indexes) = indexes
            && let Ok(fresh) = Bundle::write(&self.dir, indexes)
            && let Ok(mut slot) = self.bundle.lock()
        {
            *slot = Some(Arc::new(fresh));
        }
    }

    /// Fills in the delta bases of a version-1 index by reading every entry's chunk headers.
    fn upgrade(&self, pack: &PackName, index: &mut PackIndex) -> Result<(), StoreError> {
        let mapped = self.mapped(pack)?;
        let path = self.path(pack, "pack");
        let mut entries = Vec::with_capacity(index.records.len());
        let release = |start, len| self.pages.release(&mapped.map, start, len);
        for rec in &index.records {
            let bytes = slice(&mapped.bytes, &path, rec.offset, rec.len)?;
            let mut behind = crate::fsutil::ReleaseBehind::new(rec.offset, &release);
            let entry = EntryView::parse_with(&bytes, &mut |r| behind.reached(rec.offset + r as u64))
                .map_err(|e| PackError::corrupt(&path, e.to_string()))?;
            // The chunks' headers lie beside their length prefixes, read (and given back) above.
            behind.back_to(rec.offset);
            let mut bases = Vec::new();
            for i in 0..entry.chunk_count() {
                let chunk = entry.chunk(i).unwrap_or_default();
                let view = ChunkView::parse(chunk);
                let view = view.map_err(|e| PackError::corrupt(&path, format!("object {}: {e}", rec.id.short())))?;
                bases.extend(view.base);
                behind.reached(rec.offset + (chunk.as_ptr() as usize - bytes.as_ptr() as usize + chunk.len()) as u64);
            }
            behind.finish(rec.offset + rec.len);
            entries.push((*rec, bases));
        }
        *index = PackIndex::build(index.pack_hash, entries);
        Ok(())
    }
}

/// Bytes `start..start + len` of a mapped pack, or an error naming the file.
fn slice(bytes: &Bytes, path: &Path, start: u64, len: u64) -> Result<Bytes, StoreError> {
    let end = start.checked_add(len).filter(|&e| e <= bytes.len() as u64);
    match end {
        Some(end) => Ok(bytes.slice(start as usize..end as usize)),
        None => Err(PackError::corrupt(path, format!("range {start}+{len} lies outside the pack")).into()),
    }
}

impl PackStore for LocalPacks {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        let bundle = self.bundle();
        let mut out = Vec::new();
        let mut unbundled = 0;
        for (name, _) in self.files_with("idx")? {
            let len = match bundle.get(&name) {
                Some(&(len, _)) => len,
                None => {
                    unbundled += 1;
                    let Some(len) = self.pack_len(&name)? else { continue };
                    len
                }
            };
            out.push(PackInfo { name, len });
        }
        out.sort_by_key(|p| p.name);
        let stale = (bundle.len() + unbundled).saturating_sub(out.len());
        if unbundled > REBUNDLE_AFTER || stale > REBUNDLE_AFTER {
            self.rebundle(&bundle, &out);
        }
        Ok(out)
    }

    fn read_index(&self, pack: &PackName) -> Result<PackIndex, StoreError> {
        let path = self.path(pack, "idx");
        if let Some((_, bytes)) = self.bundle().get(pack) {
            // Verified when it was first read; its pack is mapped (and checked) on first use.
            return Ok(PackIndex::decode(&path, bytes)?);
        }
        let bytes = std::fs::read(&path).map_err(|e| PackError::io(&path, e))?;
        let mut index = PackIndex::decode(&path, &bytes)?;
        let mapped = self.mapped(pack)?;
        let trailer = mapped.bytes.len().saturating_sub(TRAILER_LEN as usize);
        if index.pack_hash != pack.0 || mapped.bytes[trailer..] != pack.0 {
            return Err(PackError::corrupt(&path, "index, pack name and pack trailer do not agree").into());
        }
        if !index.bases_known {
            self.upgrade(pack, &mut index)?;
            // In place, atomically; a read-only repository keeps working with the upgrade in memory.
            let _ = fsutil::atomic_write(&path, &index.encode());
        }
        Ok(index)
    }

    fn read_range(&self, pack: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError> {
        slice(&self.mapped(pack)?.bytes, &self.path(pack, "pack"), start, len)
    }

    fn copy_range(
        &self,
        pack: &PackName,
        start: u64,
        len: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<(), StoreError> {
        let mapped = self.mapped(pack)?;
        let bytes = slice(&mapped.bytes, &self.path(pack, "pack"), start, len)?;
        for (from, to) in crate::fsutil::pieces(0, len) {
            out.write_all(&bytes[from as usize..to as usize])?;
            self.pages.release(&mapped.map, start + from, to - from);
        }
        Ok(())
    }

    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError> {
        Ok(self.path(pack, "idx").is_file())
    }

    fn install(&self, pack: SealedPack) -> Result<(), StoreError> {
        let pack_path = self.path(&pack.name, "pack");
        let idx_path = self.path(&pack.name, "idx");
        if idx_path.is_file() {
            return Ok(());
        }
        if let Err(e) = pack.file.persist(&pack_path) {
            // Staged on another filesystem: copy, then rename within this directory.
            let tmp = tempfile::Builder::new().prefix(".tmp-pack-").tempfile_in(&self.dir)?;
            std::fs::copy(&e.path, tmp.path()).map_err(|e| fsutil::with_path(&pack_path, e))?;
            tmp.as_file().sync_all()?;
            tmp.persist(&pack_path).map_err(|e| fsutil::with_path(&pack_path, e.error))?;
        }
        fsutil::atomic_write(&idx_path, &pack.index.encode()).map_err(|e| PackError::io(&idx_path, e))?;
        Ok(())
    }

    fn staging_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn doomed(&self) -> Result<Vec<Doomed>, StoreError> {
        let mut out = Vec::new();
        for (name, path) in self.files_with(DOOMED)? {
            let text = std::fs::read(&path).map_err(|e| fsutil::with_path(&path, e))?;
            let marked = decode_mark(&text).ok_or_else(|| PackError::corrupt(&path, "not a deletion mark"))?;
            out.push(Doomed { name, marked });
        }
        out.sort_by_key(|d| d.name);
        Ok(out)
    }

    fn doom(&self, pack: &PackName, marked: u64) -> Result<(), StoreError> {
        let path = self.path(pack, DOOMED);
        if !path.exists() {
            fsutil::atomic_write(&path, encode_mark(marked).as_bytes()).map_err(|e| fsutil::with_path(&path, e))?;
        }
        Ok(())
    }

    fn spare(&self, pack: &PackName) -> Result<(), StoreError> {
        fsutil::remove_if_present(&self.path(pack, DOOMED))?;
        fsutil::fsync_dir(&self.dir).map_err(|e| fsutil::with_path(&self.dir, e))?;
        Ok(())
    }

    fn delete(&self, pack: &PackName) -> Result<(), StoreError> {
        self.remove_files(pack)?;
        fsutil::fsync_dir(&self.dir).map_err(|e| fsutil::with_path(&self.dir, e))?;
        Ok(())
    }

    fn release(&self, pack: &PackName, start: u64, len: u64) {
        if let Some(m) = self.maps.lock().ok().and_then(|m| m.get(pack).cloned()) {
            self.pages.release(&m.map, start, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, EncodeOptions, encode_with};
    use crate::object::{DType, ObjectId, ObjectKind, TensorMeta};
    use crate::pack::{EntryHeader, INDEX_VERSION_1, PackWriter};
    use crate::store::bundle::BUNDLE_FILE;

    #[test]
    fn a_version_1_index_is_upgraded_in_place_with_its_bases() {
        let dir = tempfile::tempdir().unwrap();
        let base = ObjectId([1; 32]);
        let data: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let meta = TensorMeta { dtype: DType::F32, shape: vec![64], data_len: 256 };
        let mut w = PackWriter::new(dir.path()).unwrap();
        w.begin(EntryHeader { kind: ObjectKind::Tensor, id: ObjectId([2; 32]), meta, chunk_elems: 64 }).unwrap();
        let chunk = encode_with(Codec::Xor, DType::F32, &data, Some((base, &data)), EncodeOptions::default());
        w.push_chunk(&chunk).unwrap();
        w.end(1, vec![base]).unwrap();
        let sealed = w.finish().unwrap().unwrap();
        let name = sealed.name;
        let store = LocalPacks::new(dir.path());
        store.install(sealed).unwrap();
        // Rewrite the index as version 1: no base table, zero reserved bytes.
        let idx_path = store.path(&name, "idx");
        let v2 = store.read_index(&name).unwrap();
        let mut v1 = PackIndex { bases: Vec::new(), ..v2.clone() };
        v1.records.iter_mut().for_each(|r| (r.base_count, r.first_base) = (0, 0));
        let mut bytes = v1.encode();
        bytes.truncate(bytes.len() - 32 - 8);
        bytes[8..12].copy_from_slice(&INDEX_VERSION_1.to_le_bytes());
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        std::fs::write(&idx_path, &bytes).unwrap();

        let upgraded = LocalPacks::new(dir.path()).read_index(&name).unwrap();
        assert_eq!(upgraded.bases, vec![base]);
        let on_disk = PackIndex::decode(&idx_path, &std::fs::read(&idx_path).unwrap()).unwrap();
        assert!(on_disk.bases_known, "the index was not rewritten as version 2");
        assert_eq!(on_disk.records, v2.records);
    }

    /// Installs a pack holding one small tensor object with the given id byte.
    fn one_object_pack(dir: &Path, id: u8) -> PackName {
        let data = vec![id; 64];
        let meta = TensorMeta { dtype: DType::U8, shape: vec![64], data_len: 64 };
        let mut w = PackWriter::new(dir).unwrap();
        w.begin(EntryHeader { kind: ObjectKind::Tensor, id: ObjectId([id; 32]), meta, chunk_elems: 64 }).unwrap();
        w.push_chunk(&encode_with(Codec::Raw, DType::U8, &data, None, EncodeOptions::default())).unwrap();
        w.end(1, Vec::new()).unwrap();
        let sealed = w.finish().unwrap().unwrap();
        let name = sealed.name;
        LocalPacks::new(dir).install(sealed).unwrap();
        name
    }

    /// A gc removing a pack between the listing of the indexes and the look at the pack file
    /// (a push to a shared path remote ran into it) is no error; a pack file lost under its
    /// index is.
    #[test]
    fn a_pack_removed_while_listing_is_skipped_and_a_lost_pack_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let name = one_object_pack(dir.path(), 7);
        let store = LocalPacks::new(dir.path());
        let len = std::fs::metadata(store.path(&name, "pack")).unwrap().len();
        assert_eq!(store.pack_len(&name).unwrap(), Some(len));

        std::fs::remove_file(store.path(&name, "pack")).unwrap();
        let lost = store.pack_len(&name).unwrap_err().to_string();
        assert!(lost.contains(&name.stem()), "{lost}");
        assert!(store.list().is_err(), "a pack file lost under its index must not go unnoticed");

        store.remove_files(&name).unwrap();
        assert_eq!(store.pack_len(&name).unwrap(), None);
        assert_eq!(store.list().unwrap(), Vec::new());
    }

    #[test]
    fn many_packs_are_bundled_and_a_damaged_bundle_falls_back_to_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<PackName> = (0..=REBUNDLE_AFTER as u8 + 1).map(|i| one_object_pack(dir.path(), i)).collect();
        let listed = LocalPacks::new(dir.path()).list().unwrap();
        assert_eq!(listed.len(), names.len());
        let bundle = Bundle::load(dir.path());
        assert_eq!(bundle.len(), names.len(), "listing past the threshold writes the bundle");

        // Served from the bundle, the same index as from the .idx file.
        let store = LocalPacks::new(dir.path());
        assert_eq!(store.list().unwrap(), listed);
        let from_bundle = store.read_index(&names[3]).unwrap();
        std::fs::remove_file(dir.path().join(BUNDLE_FILE)).unwrap();
        assert_eq!(LocalPacks::new(dir.path()).read_index(&names[3]).unwrap().records, from_bundle.records);

        // A damaged bundle is ignored.
        std::fs::write(dir.path().join(BUNDLE_FILE), b"garbage").unwrap();
        let store = LocalPacks::new(dir.path());
        assert_eq!(store.list().unwrap(), listed);
        let idx = store.path(&names[5], "idx");
        let on_disk = PackIndex::decode(&idx, &std::fs::read(&idx).unwrap()).unwrap();
        assert_eq!(store.read_index(&names[5]).unwrap().records, on_disk.records);
    }
}
