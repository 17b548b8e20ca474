//! A small byte-bounded cache of decoded chunks, so a base shared by many deltas decodes once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::object::{DType, ObjectId};

/// Object, chunk, and the dtype the chunk was converted to (None: its own).
type Key = (ObjectId, u64, Option<DType>);

/// First-in first-out eviction keeps it simple and is enough for checkout's in-order access.
pub struct ChunkCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Arc<Vec<u8>>>,
    order: VecDeque<Key>,
    bytes: usize,
}

impl ChunkCache {
    /// A cache holding at most `budget` bytes.
    pub fn new(budget: usize) -> ChunkCache {
        ChunkCache { budget, inner: Mutex::new(Inner::default()) }
    }

    /// A cached chunk, in dtype `as_dtype` (None: as stored).
    pub fn get(&self, id: &ObjectId, i: u64, as_dtype: Option<DType>) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().ok()?.map.get(&(*id, i, as_dtype)).cloned()
    }

    /// Caches a chunk in dtype `as_dtype` (None: as stored) and returns it shared.
    pub fn insert(&self, id: ObjectId, i: u64, as_dtype: Option<DType>, data: Vec<u8>) -> Arc<Vec<u8>> {
        let data = Arc::new(data);
        let Ok(mut inner) = self.inner.lock() else { return data };
        let key = (id, i, as_dtype);
        if inner.map.insert(key, data.clone()).is_none() {
            inner.order.push_back(key);
            inner.bytes += data.len();
        }
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(v) = inner.map.remove(&old) {
                inner.bytes -= v.len();
            }
        }
        data
    }
}
