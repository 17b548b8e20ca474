//! Reading packs: a memory-mapped pack file plus its verified index.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{EntryView, IndexRecord, PACK_HEADER_LEN, PACK_MAGIC, PackError, PackIndex, TRAILER_LEN, VERSION};
use crate::object::ObjectId;

/// An open pack.
pub struct Pack {
    path: PathBuf,
    map: Mmap,
    /// Its index.
    pub index: PackIndex,
}

impl Pack {
    /// Opens `name.pack` with `name.idx`; checks magic, version and that the index fits the pack.
    pub fn open(pack_path: &Path, idx_path: &Path) -> Result<Pack, PackError> {
        let idx_bytes = std::fs::read(idx_path).map_err(|e| PackError::io(idx_path, e))?;
        let index = PackIndex::decode(idx_path, &idx_bytes)?;
        let file = File::open(pack_path).map_err(|e| PackError::io(pack_path, e))?;
        // SAFETY: packs are never modified after they are renamed into place; a concurrent
        // truncation by another program could fault, which no checked read can prevent.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| PackError::io(pack_path, e))?;
        let pack = Pack { path: pack_path.to_path_buf(), map, index };
        pack.check_layout()?;
        Ok(pack)
    }

    fn check_layout(&self) -> Result<(), PackError> {
        let len = self.map.len() as u64;
        if len < PACK_HEADER_LEN + TRAILER_LEN || &self.map[..8] != PACK_MAGIC {
            return Err(PackError::corrupt(&self.path, "not an mlv pack (bad magic or too short)"));
        }
        let version = u32::from_le_bytes([self.map[8], self.map[9], self.map[10], self.map[11]]);
        if version != VERSION {
            return Err(PackError::corrupt(
                &self.path,
                format!("pack version {version} is not supported (this mlv reads {VERSION})"),
            ));
        }
        if self.map[self.map.len() - 32..] != self.index.pack_hash {
            return Err(PackError::corrupt(&self.path, "pack trailer does not match its index"));
        }
        let body_end = len - TRAILER_LEN;
        for r in &self.index.records {
            let end = r.offset.checked_add(r.len);
            if r.offset < PACK_HEADER_LEN || end.is_none_or(|e| e > body_end) {
                return Err(PackError::corrupt(
                    &self.path,
                    format!("index entry for {} points outside the pack", r.id.short()),
                ));
            }
        }
        Ok(())
    }

    /// The pack file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The index record of `id`, if this pack has it.
    pub fn find(&self, id: &ObjectId) -> Option<&IndexRecord> {
        self.index.find(id)
    }

    /// Parses the entry an index record points at.
    pub fn entry(&self, record: &IndexRecord) -> Result<EntryView<'_>, PackError> {
        // check_layout proved the range lies inside the map.
        let bytes = &self.map[record.offset as usize..(record.offset + record.len) as usize];
        let view = EntryView::parse(bytes)
            .map_err(|e| PackError::corrupt(&self.path, format!("object {}: {e}", record.id.short())))?;
        if view.header.id != record.id
            || view.header.kind != record.kind
            || view.header.meta.data_len != record.data_len
        {
            return Err(PackError::corrupt(
                &self.path,
                format!("entry at offset {} does not match its index record", record.offset),
            ));
        }
        Ok(view)
    }

    /// Lets the kernel drop the resident pages behind `bytes` (a slice of this pack), so
    /// reading a large pack once does not keep it all in memory.
    pub fn release(&self, bytes: &[u8]) {
        let base = self.map.as_ptr() as usize;
        let start = (bytes.as_ptr() as usize).wrapping_sub(base);
        if start.checked_add(bytes.len()).is_some_and(|end| end <= self.map.len()) {
            crate::store::release_pages(&self.map, start as u64, bytes.len() as u64);
        }
    }
}
