//! What travels between `mlv serve` and the HTTP transport: the request paths and the JSON
//! bodies, defined once for both sides (docs/PROTOCOL.md, section "HTTP").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::object::ObjectId;
use crate::refs::Head;

/// The protocol version in every path (`/mlv/v1/...`) and in [`Info`].
pub const VERSION: u32 = 1;

/// The path segment every endpoint starts with, after the repository's base.
pub const API: &str = "mlv/v1";

/// Largest JSON request body a server reads (a ref update is a few hundred bytes).
pub const MAX_JSON_REQUEST: usize = 64 << 10;

/// `GET {base}/mlv/v1/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    /// The protocol version the server speaks.
    pub protocol: u32,
    /// False for a repository the server would create on the first push (`--allow-create`).
    pub exists: bool,
    /// True when the repository has no work tree.
    pub bare: bool,
    /// What its HEAD says; None while it does not exist.
    pub head: Option<WireHead>,
}

/// HEAD on the wire: `{"branch": "main"}` or `{"detached": "<hex id>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireHead {
    /// On a branch (short name).
    Branch(String),
    /// Detached at a commit.
    Detached(ObjectId),
}

impl From<Head> for WireHead {
    fn from(h: Head) -> WireHead {
        match h {
            Head::Branch(b) => WireHead::Branch(b),
            Head::Detached(id) => WireHead::Detached(id),
        }
    }
}

impl From<WireHead> for Head {
    fn from(h: WireHead) -> Head {
        match h {
            WireHead::Branch(b) => Head::Branch(b),
            WireHead::Detached(id) => Head::Detached(id),
        }
    }
}

/// `GET {base}/mlv/v1/refs`: every branch and tag by full name, and HEAD.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefList {
    /// What HEAD says; None while the repository does not exist.
    pub head: Option<WireHead>,
    /// `refs/heads/...` and `refs/tags/...` to their ids.
    pub refs: BTreeMap<String, ObjectId>,
}

/// `POST {base}/mlv/v1/refs`: one compare-and-swap.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefUpdate {
    /// The full ref name.
    pub name: String,
    /// What it must hold now; null: it must not exist.
    pub old: Option<ObjectId>,
    /// What it will hold; null deletes it.
    pub new: Option<ObjectId>,
}

/// The reply to a ref update that was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefUpdated {
    /// The full ref name.
    pub name: String,
    /// What it holds now.
    pub value: Option<ObjectId>,
}

/// `GET {base}/mlv/v1/packs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PackList {
    /// Every complete pack (its index is in place).
    pub packs: Vec<WirePack>,
}

/// One pack in a [`PackList`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WirePack {
    /// `pack-<64 hex>`.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
}

/// `GET {base}/mlv/v1/doomed`: packs a gc marked for deletion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DoomedList {
    /// Each marked pack.
    pub doomed: Vec<WireDoomed>,
}

/// One pack in a [`DoomedList`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDoomed {
    /// `pack-<64 hex>`.
    pub name: String,
    /// When it was marked, in seconds since the Unix epoch.
    pub marked: u64,
}

/// `PUT {base}/mlv/v1/packs/<pack>.doomed`: mark a pack for deletion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    /// When, in seconds since the Unix epoch.
    pub marked: u64,
}

/// The reply to an uploaded pack, verified and installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackReceived {
    /// `pack-<64 hex>`.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
}

/// The body of every error reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Only in a 409 reply to a ref update: what the ref holds now (null: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
    pub found: Option<Option<ObjectId>>,
}

/// Tells a field that is absent from one that is null: `found: null` says the ref does not
/// exist, no `found` says nothing about it.
mod present {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::object::ObjectId;

    pub fn serialize<S: Serializer>(v: &Option<Option<ObjectId>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().and_then(|inner| inner.as_ref()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<ObjectId>>, D::Error> {
        Option::<ObjectId>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_found_differs_from_a_missing_one() {
        let none: ErrorBody = serde_json::from_str(r#"{"error": "x"}"#).unwrap();
        assert_eq!(none.found, None);
        let null: ErrorBody = serde_json::from_str(r#"{"error": "x", "found": null}"#).unwrap();
        assert_eq!(null.found, Some(None));
        let id = ObjectId([3; 32]);
        let body = ErrorBody { error: "x".into(), found: Some(Some(id)) };
        let back: ErrorBody = serde_json::from_str(&serde_json::to_string(&body).unwrap()).unwrap();
        assert_eq!(back.found, Some(Some(id)));
        let text = serde_json::to_string(&ErrorBody { error: "x".into(), found: Some(None) }).unwrap();
        assert!(text.contains(r#""found":null"#), "{text}");
    }

    #[test]
    fn heads_travel_as_tagged_objects() {
        let text = serde_json::to_string(&WireHead::Branch("main".into())).unwrap();
        assert_eq!(text, r#"{"branch":"main"}"#);
        let back: WireHead = serde_json::from_str(&text).unwrap();
        assert_eq!(Head::from(back), Head::Branch("main".into()));
    }
}
