//! The receiving side of a push, whoever runs it (the pushing process for a path remote, the
//! server for HTTP): every pack is verified before it is installed, and a ref moves only to a
//! commit whose whole snapshot and history are present.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::object::{ObjectId, ObjectKind};
use crate::pack::{PackIndex, PackName, SealedPack, UnindexedPack};
use crate::progress::Silent;
use crate::reach;
use crate::refs::{HEADS, Head, RefError, RefStore, TAGS, check_full_name};
use crate::store::{Doomed, Odb, PackInfo, PackStore, StoreError, verify_pack};

/// A repository taking packs and ref updates from elsewhere.
pub struct Receiver {
    /// Its objects.
    pub odb: Odb,
    /// Its refs.
    pub refs: Box<dyn RefStore>,
    /// The branch checked out in its work tree, which a push must not move under it.
    pub checked_out: Option<String>,
}

impl Receiver {
    /// Verifies a pack against the objects here and installs it. A pack already here is
    /// accepted as it is.
    pub fn receive(&self, pack: UnindexedPack) -> Result<PackName, StoreError> {
        if self.odb.store().has_pack(&pack.name)? {
            return Ok(pack.name);
        }
        let sealed = verify_pack(&self.odb, pack, &Silent)?;
        self.odb.install(sealed)
    }

    /// Checks that `new` may be what `full` points at: a commit (or, for tags, a tag object)
    /// whose snapshot and history are all here.
    fn check_target(&self, full: &str, new: &ObjectId) -> Result<(), RefError> {
        check_full_name(full)?;
        let refused = |what: String| Err(RefError::Refused(format!("{full}: {what}")));
        if !(full.starts_with(HEADS) || full.starts_with(TAGS)) {
            return refused("only branches and tags can be pushed".into());
        }
        let backend = |e: StoreError| RefError::Backend(e.to_string());
        self.odb.refresh().map_err(backend)?;
        let kind = match self.odb.locate(new) {
            Ok((_, rec)) => rec.kind,
            Err(StoreError::NotFound(_)) => return refused(format!("object {} was not received", new.short())),
            Err(e) => return Err(backend(e)),
        };
        let tag_ok = full.starts_with(TAGS) && kind == ObjectKind::Tag;
        if kind != ObjectKind::Commit && !tag_ok {
            return refused(format!("{} is a {}, not a commit", new.short(), kind.name()));
        }
        let known = self.known_commits().map_err(backend)?;
        let walk = reach::Walk { stop: &|id| known.contains(id), parents: true, shallow: &HashSet::new() };
        match reach::closure(&self.odb, &[*new], &walk) {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound(missing)) => {
                refused(format!("object {} that {} needs was not received", missing.short(), new.short()))
            }
            Err(e) if e.is_corrupt() => refused(format!("{} cannot be checked out: {e}", new.short())),
            Err(e) => Err(backend(e)),
        }
    }

    /// Every commit in the history of every branch and tag: complete already.
    fn known_commits(&self) -> Result<HashSet<ObjectId>, StoreError> {
        let mut tips = Vec::new();
        for prefix in [HEADS, TAGS] {
            tips.extend(
                self.refs.list(prefix).map_err(|e| StoreError::Backend(e.to_string()))?.into_iter().map(|r| r.1),
            );
        }
        let mut seen = HashSet::new();
        while let Some(id) = tips.pop() {
            let Some((_, rec)) = self.odb.find(&id) else { continue };
            if !seen.insert(id) {
                continue;
            }
            match rec.kind {
                ObjectKind::Commit => tips.extend(self.odb.commit(&id)?.parents),
                ObjectKind::Tag => tips.push(self.odb.tag(&id)?.object),
                _ => {}
            }
        }
        Ok(seen)
    }

    fn check_not_checked_out(&self, full: &str) -> Result<(), RefError> {
        match &self.checked_out {
            Some(b) if full.strip_prefix(HEADS) == Some(b.as_str()) => Err(RefError::Refused(format!(
                "{full} is checked out in the remote's work tree; push to another branch, or make the remote bare"
            ))),
            _ => Ok(()),
        }
    }
}

/// The receiver's packs as a store: reads go straight through, installing verifies first.
pub struct ReceivingPacks(pub Arc<Receiver>);

impl PackStore for ReceivingPacks {
    fn describe(&self) -> String {
        self.0.odb.store().describe()
    }

    fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        self.0.odb.store().list()
    }

    fn read_index(&self, pack: &PackName) -> Result<PackIndex, StoreError> {
        self.0.odb.store().read_index(pack)
    }

    fn read_range(&self, pack: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError> {
        self.0.odb.store().read_range(pack, start, len)
    }

    fn copy_range(
        &self,
        pack: &PackName,
        start: u64,
        len: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<(), StoreError> {
        self.0.odb.store().copy_range(pack, start, len, out)
    }

    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError> {
        self.0.odb.store().has_pack(pack)
    }

    fn install(&self, pack: SealedPack) -> Result<(), StoreError> {
        self.0.receive(UnindexedPack { file: pack.file, name: pack.name, len: pack.len }).map(|_| ())
    }

    fn doomed(&self) -> Result<Vec<Doomed>, StoreError> {
        self.0.odb.store().doomed()
    }

    fn doom(&self, pack: &PackName, marked: u64) -> Result<(), StoreError> {
        self.0.odb.store().doom(pack, marked)
    }

    fn spare(&self, pack: &PackName) -> Result<(), StoreError> {
        self.0.odb.store().spare(pack)
    }

    fn delete(&self, pack: &PackName) -> Result<(), StoreError> {
        self.0.odb.store().delete(pack)
    }
}

/// The receiver's refs as a store: updates are checked before they are made.
pub struct ReceivingRefs(pub Arc<Receiver>);

impl RefStore for ReceivingRefs {
    fn head(&self) -> Result<Head, RefError> {
        self.0.refs.head()
    }

    fn set_head(&self, _: &Head) -> Result<(), RefError> {
        Err(RefError::Refused("a remote's HEAD is not set by a push".into()))
    }

    fn read(&self, full: &str) -> Result<Option<ObjectId>, RefError> {
        self.0.refs.read(full)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError> {
        self.0.refs.list(prefix)
    }

    fn update(&self, full: &str, new: ObjectId, expected: Option<ObjectId>) -> Result<(), RefError> {
        self.0.check_not_checked_out(full)?;
        self.0.check_target(full, &new)?;
        self.0.refs.update(full, new, expected)
    }

    fn delete(&self, full: &str, expected: ObjectId) -> Result<(), RefError> {
        check_full_name(full)?;
        self.0.check_not_checked_out(full)?;
        self.0.refs.delete(full, expected)
    }
}
