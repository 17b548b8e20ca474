//! Refs held in memory: the ref store of test remotes, with the same compare-and-swap and
//! name rules as the others.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Head, RefError, RefStore, check_full_name, find_clash};
use crate::object::ObjectId;

/// An in-memory ref store.
pub struct MemoryRefs {
    inner: Mutex<(Head, BTreeMap<String, ObjectId>)>,
}

impl Default for MemoryRefs {
    fn default() -> Self {
        MemoryRefs { inner: Mutex::new((Head::Branch("main".into()), BTreeMap::new())) }
    }
}

impl MemoryRefs {
    fn with<T>(&self, f: impl FnOnce(&mut (Head, BTreeMap<String, ObjectId>)) -> T) -> Result<T, RefError> {
        let mut guard = self.inner.lock().map_err(|_| RefError::Backend("ref store poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

impl RefStore for MemoryRefs {
    fn head(&self) -> Result<Head, RefError> {
        self.with(|(h, _)| h.clone())
    }

    fn set_head(&self, head: &Head) -> Result<(), RefError> {
        head.encode()?;
        self.with(|(h, _)| *h = head.clone())
    }

    fn read(&self, full: &str) -> Result<Option<ObjectId>, RefError> {
        self.with(|(_, refs)| refs.get(full).copied())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError> {
        self.with(|(_, refs)| {
            refs.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k[prefix.len()..].to_string(), *v))
                .collect()
        })
    }

    fn update(&self, full: &str, new: ObjectId, expected: Option<ObjectId>) -> Result<(), RefError> {
        check_full_name(full)?;
        self.with(|(_, refs)| {
            let found = refs.get(full).copied();
            if found != expected {
                return Err(RefError::conflict(full, expected, found));
            }
            if let Some(existing) = find_clash(full, refs.keys().map(String::as_str)) {
                return Err(RefError::Clash { name: full.into(), existing });
            }
            refs.insert(full.to_string(), new);
            Ok(())
        })?
    }

    fn delete(&self, full: &str, expected: ObjectId) -> Result<(), RefError> {
        self.with(|(_, refs)| {
            let found = refs.get(full).copied();
            if found != Some(expected) {
                return Err(RefError::conflict(full, Some(expected), found));
            }
            refs.remove(full);
            Ok(())
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::HEADS;

    #[test]
    fn behaves_like_the_file_store() {
        let refs = MemoryRefs::default();
        let (a, b) = (ObjectId([1; 32]), ObjectId([2; 32]));
        refs.update("refs/heads/main", a, None).unwrap();
        assert!(matches!(refs.update("refs/heads/main", b, None), Err(RefError::Conflict { .. })));
        assert!(matches!(refs.update("refs/heads/main/x", b, None), Err(RefError::Clash { .. })));
        refs.update("refs/heads/main", b, Some(a)).unwrap();
        refs.update("refs/tags/v1", a, None).unwrap();
        assert_eq!(refs.list(HEADS).unwrap(), vec![("main".to_string(), b)]);
        assert!(refs.delete("refs/heads/main", a).is_err());
        refs.delete("refs/heads/main", b).unwrap();
        assert_eq!(refs.read("refs/heads/main").unwrap(), None);
        assert_eq!(refs.head().unwrap(), Head::Branch("main".into()));
    }
}
