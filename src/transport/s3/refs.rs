//! Refs as small objects: `refs/heads/<name>` holds `<64 hex>\n`. Every write is one
//! conditional PUT — `If-None-Match: *` to create, `If-Match: <etag read with the value>` to
//! replace — never a multipart upload, whose conditional completion is not atomic on every
//! server. S3 has no portable conditional DELETE, so deleting a ref replaces it (If-Match)
//! with a tombstone, `deleted\n`, which reads as no ref; tombstones stay until a gc.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{PutMode, UpdateVersion};

use super::{Bucket, Put};
use crate::object::ObjectId;
use crate::refs::{HEADS, Head, RefError, RefStore, TAGS, check_full_name, find_clash};
use crate::transport::runtime::block_on;

/// What a deleted ref's key holds.
const TOMBSTONE: &str = "deleted\n";
/// Times a compare-and-swap retries when the object changed but its value did not (another
/// writer stored the same value, or a tombstone again).
const CAS_ATTEMPTS: usize = 5;
/// Refs read at once when listing.
const READS_IN_FLIGHT: usize = 16;

/// What a ref's key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// A commit or tag id.
    Id(ObjectId),
    /// A deleted ref.
    Tombstone,
}

/// Parses a ref object's bytes.
fn parse_ref(bytes: &[u8]) -> Result<Stored, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not text")?;
    if text == TOMBSTONE {
        return Ok(Stored::Tombstone);
    }
    let hex = text.strip_suffix('\n').ok_or("no trailing newline")?;
    if hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("not an object id");
    }
    hex.parse().map(Stored::Id).map_err(|_| "not an object id")
}

/// A ref's value with the version it was read at: the ETag to replace it with If-Match, or
/// None when the key does not exist (create it with If-None-Match).
#[derive(Debug, Clone)]
struct Slot {
    value: Option<ObjectId>,
    e_tag: Option<String>,
}

impl Slot {
    fn put_mode(&self) -> PutMode {
        match &self.e_tag {
            None => PutMode::Create,
            Some(e) => PutMode::Update(UpdateVersion { e_tag: Some(e.clone()), version: None }),
        }
    }
}

/// The refs of an S3 repository.
pub struct S3Refs {
    bucket: Arc<Bucket>,
}

impl S3Refs {
    pub(super) fn new(bucket: Arc<Bucket>) -> S3Refs {
        S3Refs { bucket }
    }

    /// Reads a ref with its version; a tombstone reads as no ref.
    async fn slot(&self, full: &str) -> Result<Slot, RefError> {
        let Some(v) = self.bucket.get_small(full).await? else { return Ok(Slot { value: None, e_tag: None }) };
        let corrupt = |what: &str| RefError::Corrupt { path: self.bucket.show(full), what: what.into() };
        let value = match parse_ref(&v.bytes).map_err(corrupt)? {
            Stored::Id(id) => Some(id),
            Stored::Tombstone => None,
        };
        Ok(Slot { value, e_tag: Some(v.e_tag) })
    }

    /// Replaces `full`'s value `expected` with `new` (a tombstone when None), by conditional
    /// PUT against the version read with it.
    async fn swap(&self, full: &str, new: Option<ObjectId>, expected: Option<ObjectId>) -> Result<(), RefError> {
        let text = new.map_or_else(|| TOMBSTONE.to_string(), |id| format!("{id}\n"));
        for attempt in 0..CAS_ATTEMPTS {
            let slot = self.slot(full).await?;
            if slot.value != expected {
                // A write that landed but whose answer was lost (and retried) reads as a
                // conflict with itself: the ref holds what was asked, so it is done.
                return if attempt > 0 && slot.value == new && slot.e_tag.is_some() {
                    Ok(())
                } else {
                    Err(RefError::conflict(full, expected, slot.value))
                };
            }
            if expected.is_none() && new.is_some() {
                self.check_clash(full).await?;
            }
            self.bucket.mark().await?;
            match self.bucket.put(full, Bytes::from(text.clone()), slot.put_mode()).await? {
                Put::Done => return Ok(()),
                Put::Lost => continue,
            }
        }
        Err(RefError::Backend(format!(
            "{}: the object kept changing under a compare-and-swap ({CAS_ATTEMPTS} attempts); try again",
            self.bucket.show(full)
        )))
    }

    /// Refuses a new ref whose name is a directory of an existing ref, or lies under one, as
    /// every other store does (clones keep refs as files).
    async fn check_clash(&self, full: &str) -> Result<(), RefError> {
        let listing = self.bucket.list("refs").await?;
        for meta in &listing {
            let Some(existing) = self.bucket.relative(&meta.location) else { continue };
            if find_clash(full, [existing]).is_some() && self.slot(existing).await?.value.is_some() {
                return Err(RefError::Clash { name: full.to_string(), existing: existing.to_string() });
            }
        }
        Ok(())
    }
}

impl RefStore for S3Refs {
    fn head(&self) -> Result<Head, RefError> {
        match block_on(self.bucket.get_small("HEAD"))? {
            None => Ok(Head::Branch("main".into())),
            Some(v) => {
                let text = std::str::from_utf8(&v.bytes)
                    .map_err(|_| RefError::Corrupt { path: self.bucket.show("HEAD"), what: "not text".into() })?;
                Head::decode(text, &self.bucket.show("HEAD"))
            }
        }
    }

    fn set_head(&self, head: &Head) -> Result<(), RefError> {
        let text = head.encode()?;
        block_on(async {
            self.bucket.mark().await?;
            self.bucket.put("HEAD", Bytes::from(text), PutMode::Overwrite).await
        })?;
        Ok(())
    }

    fn read(&self, full: &str) -> Result<Option<ObjectId>, RefError> {
        check_full_name(full)?;
        Ok(block_on(self.slot(full))?.value)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        block_on(async {
            let listing = self.bucket.list(dir).await?;
            let names: Vec<String> = listing
                .iter()
                .filter_map(|m| self.bucket.relative(&m.location))
                .filter(|full| full.starts_with(prefix) && check_full_name(full).is_ok())
                .map(str::to_string)
                .collect();
            let mut refs: Vec<(String, ObjectId)> = futures_util::stream::iter(names)
                .map(|full| async move {
                    let value = self.slot(&full).await?.value;
                    Ok::<_, RefError>(value.map(|id| (full[prefix.len()..].to_string(), id)))
                })
                .buffered(READS_IN_FLIGHT)
                .try_filter_map(|r| async move { Ok(r) })
                .try_collect()
                .await?;
            refs.sort();
            Ok(refs)
        })
    }

    fn update(&self, full: &str, new: ObjectId, expected: Option<ObjectId>) -> Result<(), RefError> {
        check_full_name(full)?;
        if !(full.starts_with(HEADS) || full.starts_with(TAGS)) {
            return Err(RefError::Refused(format!("{full}: an S3 repository holds only branches and tags")));
        }
        block_on(async {
            self.swap(full, Some(new), expected).await?;
            // The first branch pushed becomes the repository's HEAD, unless it has one. The ref
            // has moved by now, so failing here would misreport the push; a missing HEAD only
            // means readers pick `main` or the first branch.
            if let (None, Some(branch)) = (expected, full.strip_prefix(HEADS)) {
                let text = Head::Branch(branch.to_string()).encode()?;
                let _ = self.bucket.put("HEAD", Bytes::from(text), PutMode::Create).await;
            }
            Ok(())
        })
    }

    fn delete(&self, full: &str, expected: ObjectId) -> Result<(), RefError> {
        check_full_name(full)?;
        block_on(self.swap(full, None, Some(expected)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_objects_hold_an_id_or_a_tombstone() {
        let id = ObjectId([0x5a; 32]);
        assert_eq!(parse_ref(format!("{id}\n").as_bytes()), Ok(Stored::Id(id)));
        assert_eq!(parse_ref(TOMBSTONE.as_bytes()), Ok(Stored::Tombstone));
        let upper = format!("{}\n", id.to_string().to_uppercase());
        for bad in ["", "deleted", "deleted\n\n", &id.to_string(), &upper, &format!("{id}\nx"), "zz\n"] {
            assert!(parse_ref(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_ref(&[0xff, b'\n']).is_err());
    }

    #[test]
    fn creating_needs_absence_and_replacing_needs_the_version_read() {
        let absent = Slot { value: None, e_tag: None };
        assert_eq!(absent.put_mode(), PutMode::Create);
        let tomb = Slot { value: None, e_tag: Some("\"t\"".into()) };
        assert_eq!(tomb.put_mode(), PutMode::Update(UpdateVersion { e_tag: Some("\"t\"".into()), version: None }));
    }
}
