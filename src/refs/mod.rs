//! Refs: branches, tags, remote-tracking branches and HEAD, behind [`RefStore`] so the same
//! logic moves refs in a local repository, a remote one, or memory.
//!
//! Every update is a compare-and-swap: it names the value it expects to replace, so two
//! writers racing on one ref cannot silently lose an update.

mod files;
mod memory;

pub use files::FsRefs;
pub use memory::MemoryRefs;

use crate::lock::LockError;
use crate::object::ObjectId;

/// Prefix of branch refs.
pub const HEADS: &str = "refs/heads/";
/// Prefix of tag refs.
pub const TAGS: &str = "refs/tags/";
/// Prefix of remote-tracking refs: `refs/remotes/<remote>/<branch>`.
pub const REMOTES: &str = "refs/remotes/";

/// A ref could not be read or updated.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// Not a valid ref name.
    #[error("invalid ref name {0:?}: use letters, digits, '.', '_', '-' and '/' (no '..', no leading '-' or '.')")]
    BadName(String),
    /// Another process holds the ref's lock.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The ref moved since it was read.
    #[error("{name} changed concurrently: expected {expected}, found {found}")]
    Conflict {
        /// The ref.
        name: String,
        /// What the caller saw.
        expected: String,
        /// What is there now.
        found: String,
    },
    /// The name and an existing ref cannot both exist: one would be a directory of the other.
    #[error("{name} clashes with the existing ref {existing}: a ref name cannot also be a directory of refs")]
    Clash {
        /// The ref being created.
        name: String,
        /// The ref in the way.
        existing: String,
    },
    /// The stored ref is garbage.
    #[error("{path}: corrupt ref: {what}")]
    Corrupt {
        /// The file or key.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The receiving repository refused the update.
    #[error("{0}")]
    Refused(String),
    /// The store behind the refs failed (a network or object-store error).
    #[error("{0}")]
    Backend(String),
    /// I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl RefError {
    /// The error for a compare-and-swap whose expectation no longer holds.
    pub fn conflict(name: &str, expected: Option<ObjectId>, found: Option<ObjectId>) -> RefError {
        let show = |v: Option<ObjectId>| v.map_or("nothing".to_string(), |i| i.short());
        RefError::Conflict { name: name.to_string(), expected: show(expected), found: show(found) }
    }
}

/// What HEAD says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// On a branch (which may not exist yet, before the first commit).
    Branch(String),
    /// Detached at a commit.
    Detached(ObjectId),
}

impl Head {
    /// The text of a HEAD file: `ref: refs/heads/<b>` or a commit id, newline-terminated.
    pub fn encode(&self) -> Result<String, RefError> {
        Ok(match self {
            Head::Branch(b) => {
                check_name(b)?;
                format!("ref: {HEADS}{b}\n")
            }
            Head::Detached(id) => format!("{id}\n"),
        })
    }

    /// Parses the text of a HEAD file; `path` names it in errors.
    pub fn decode(text: &str, path: &str) -> Result<Head, RefError> {
        let corrupt = |what: &str| RefError::Corrupt { path: path.to_string(), what: what.into() };
        let text = text.trim_end();
        if let Some(target) = text.strip_prefix("ref: ") {
            let branch = target.strip_prefix(HEADS).ok_or_else(|| corrupt("HEAD points outside refs/heads"))?;
            check_name(branch)?;
            return Ok(Head::Branch(branch.to_string()));
        }
        text.parse().map(Head::Detached).map_err(|_| corrupt("neither a ref nor a commit id"))
    }
}

/// Where branches, tags and HEAD live.
pub trait RefStore: Send + Sync {
    /// Reads HEAD (a store that has none yet says `main`, as a new repository does).
    fn head(&self) -> Result<Head, RefError>;
    /// Points HEAD at a branch or a commit.
    fn set_head(&self, head: &Head) -> Result<(), RefError>;
    /// Reads a full ref name (`refs/heads/x`); None if it does not exist.
    fn read(&self, full: &str) -> Result<Option<ObjectId>, RefError>;
    /// The refs under `prefix` (e.g. [`HEADS`]) by name relative to it, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError>;
    /// Sets `full` to `new` if it still holds `expected` (None: must not exist).
    fn update(&self, full: &str, new: ObjectId, expected: Option<ObjectId>) -> Result<(), RefError>;
    /// Deletes `full` if it still holds `expected`.
    fn delete(&self, full: &str, expected: ObjectId) -> Result<(), RefError>;
}

/// Checks a short branch or tag name (`main`, `exp/v2`).
pub fn check_name(name: &str) -> Result<(), RefError> {
    let ok = !name.is_empty()
        && !name.starts_with(['-', '/'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name != "HEAD"
        && name.split('/').all(|c| !c.starts_with('.'))
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if ok { Ok(()) } else { Err(RefError::BadName(name.to_string())) }
}

/// Checks a full ref name: `refs/heads/<name>`, `refs/tags/<name>` or `refs/remotes/<remote>/<name>`.
pub fn check_full_name(full: &str) -> Result<(), RefError> {
    let short = [HEADS, TAGS, REMOTES].iter().find_map(|p| full.strip_prefix(p));
    match short {
        Some(s) if full.starts_with(REMOTES) && !s.contains('/') => Err(RefError::BadName(full.to_string())),
        Some(s) => check_name(s),
        None => Err(RefError::BadName(full.to_string())),
    }
}

/// The existing name that `full` clashes with, if any: one of them would have to be a
/// directory of the other, which refs stored as files (and clones of them) cannot hold.
pub fn find_clash<'a>(full: &str, existing: impl IntoIterator<Item = &'a str>) -> Option<String> {
    existing
        .into_iter()
        .find(|e| {
            let (short, long) = if e.len() < full.len() { (*e, full) } else { (full, *e) };
            long.len() > short.len() && long.starts_with(short) && long.as_bytes()[short.len()] == b'/'
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", "-x", "a..b", "a b", ".hidden", "x.lock", "a//b", "HEAD", "a/"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["main", "exp/v2", "v1.0", "fine_tune-3"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        for bad in ["main", "refs/heads/", "refs/remotes/origin", "refs/other/x", "refs/heads/../x"] {
            assert!(check_full_name(bad).is_err(), "{bad:?}");
        }
        for good in ["refs/heads/main", "refs/tags/v1", "refs/remotes/origin/main", "refs/remotes/o/exp/v2"] {
            assert!(check_full_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn clashes_are_directory_prefixes_only() {
        let existing = ["refs/heads/exp/lr", "refs/heads/main"];
        assert_eq!(find_clash("refs/heads/exp", existing), Some("refs/heads/exp/lr".into()));
        assert_eq!(find_clash("refs/heads/main/x", existing), Some("refs/heads/main".into()));
        assert_eq!(find_clash("refs/heads/mainline", existing), None);
        assert_eq!(find_clash("refs/heads/exp/lr", existing), None);
    }

    #[test]
    fn head_text_round_trips() {
        let id = ObjectId([7; 32]);
        for h in [Head::Branch("exp/v2".into()), Head::Detached(id)] {
            assert_eq!(Head::decode(&h.encode().unwrap(), "HEAD").unwrap(), h);
        }
        assert!(Head::decode("ref: refs/tags/x\n", "HEAD").is_err());
        assert!(Head::decode("garbage", "HEAD").is_err());
    }
}
