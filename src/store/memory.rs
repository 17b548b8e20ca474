//! Packs held in memory: the pack store of test remotes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{PackInfo, PackStore, StoreError};
use crate::pack::{PackIndex, PackName, SealedPack};

/// An in-memory pack store.
#[derive(Default)]
pub struct MemoryPacks {
    packs: Mutex<BTreeMap<PackName, (Bytes, PackIndex)>>,
}

impl MemoryPacks {
    fn get(&self, pack: &PackName) -> Result<(Bytes, PackIndex), StoreError> {
        let packs = self.packs.lock().map_err(|_| StoreError::Backend("pack store poisoned".into()))?;
        packs.get(pack).cloned().ok_or_else(|| StoreError::Backend(format!("no pack {pack} in memory")))
    }
}

impl PackStore for MemoryPacks {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        let packs = self.packs.lock().map_err(|_| StoreError::Backend("pack store poisoned".into()))?;
        Ok(packs.iter().map(|(name, (bytes, _))| PackInfo { name: *name, len: bytes.len() as u64 }).collect())
    }

    fn read_index(&self, pack: &PackName) -> Result<PackIndex, StoreError> {
        Ok(self.get(pack)?.1)
    }

    fn read_range(&self, pack: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError> {
        let bytes = self.get(pack)?.0;
        match start.checked_add(len).filter(|&e| e <= bytes.len() as u64) {
            Some(end) => Ok(bytes.slice(start as usize..end as usize)),
            None => Err(StoreError::Backend(format!("range {start}+{len} lies outside {pack}"))),
        }
    }

    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError> {
        Ok(self.packs.lock().map_err(|_| StoreError::Backend("pack store poisoned".into()))?.contains_key(pack))
    }

    fn install(&self, pack: SealedPack) -> Result<(), StoreError> {
        let bytes = Bytes::from(std::fs::read(&pack.file)?);
        let mut packs = self.packs.lock().map_err(|_| StoreError::Backend("pack store poisoned".into()))?;
        packs.insert(pack.name, (bytes, pack.index));
        Ok(())
    }
}
