//! Object ids: BLAKE3-256 over an object's kind, length and canonical body.

use std::fmt;
use std::str::FromStr;

use super::ObjectKind;

/// Length of an object id in bytes.
pub const ID_LEN: usize = 32;

/// A content address: BLAKE3 of `"mlv <kind> <len>\0" || body`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub [u8; ID_LEN]);

impl ObjectId {
    /// The id with every byte zero; never the id of a real object.
    pub const NULL: ObjectId = ObjectId([0; ID_LEN]);

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first `n` hex characters, for display.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }

    /// Builds an id from a 32-byte slice.
    pub fn from_slice(bytes: &[u8]) -> Option<ObjectId> {
        <[u8; ID_LEN]>::try_from(bytes).ok().map(ObjectId)
    }

    /// Hashes a whole canonical body held in memory.
    pub fn hash(kind: ObjectKind, body: &[u8]) -> ObjectId {
        let mut h = IdHasher::new(kind, body.len() as u64);
        h.update(body);
        h.finish()
    }

    /// True for the all-zero id.
    pub fn is_null(&self) -> bool {
        *self == Self::NULL
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

/// A hex string that is not a full object id.
#[derive(Debug, thiserror::Error)]
#[error("not a 64-character hex object id: {0:?}")]
pub struct BadId(pub String);

impl FromStr for ObjectId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadId(s.to_string()))?;
        Ok(ObjectId(out))
    }
}

impl serde::Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming id computation for bodies too large to hold in memory.
pub struct IdHasher {
    inner: blake3::Hasher,
}

/// Bodies at least this large are hashed on all cores.
const PARALLEL_HASH_MIN: usize = 1 << 20;

impl IdHasher {
    /// Starts hashing an object of `kind` whose body is `len` bytes long.
    pub fn new(kind: ObjectKind, len: u64) -> IdHasher {
        let mut inner = blake3::Hasher::new();
        inner.update(format!("mlv {} {len}\0", kind.name()).as_bytes());
        IdHasher { inner }
    }

    /// Feeds the next part of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        if bytes.len() >= PARALLEL_HASH_MIN {
            self.inner.update_rayon(bytes);
        } else {
            self.inner.update(bytes);
        }
    }

    /// Feeds the next part of the body on this thread alone, for callers whose other cores are
    /// busy with work of their own (a pipeline's consumer).
    pub fn update_serial(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    /// The id of everything fed so far.
    pub fn finish(&self) -> ObjectId {
        ObjectId(*self.inner.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_hash_equals_one_shot_hash() {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        let mut h = IdHasher::new(ObjectKind::Blob, body.len() as u64);
        for part in body.chunks(1 << 21) {
            h.update(part);
        }
        assert_eq!(h.finish(), ObjectId::hash(ObjectKind::Blob, &body));
    }

    #[test]
    fn kind_is_part_of_identity() {
        assert_ne!(ObjectId::hash(ObjectKind::Blob, b"x"), ObjectId::hash(ObjectKind::Tree, b"x"));
    }

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = ObjectId::hash(ObjectKind::Blob, b"abc");
        assert_eq!(id.to_hex().parse::<ObjectId>().unwrap(), id);
        assert!("zz".parse::<ObjectId>().is_err());
        assert!(id.to_hex()[..60].parse::<ObjectId>().is_err());
    }
}
