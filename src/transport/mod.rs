//! Remotes: another repository reached through a path, HTTP (`mlv serve`) or an S3-compatible
//! object store. Every transport is the same two stores — packs and refs — so push, fetch and
//! clone are written once, over [`Remote`].

mod http;
mod path;
mod receive;
pub mod runtime;
pub mod s3;
pub mod wire;

pub use receive::{Receiver, ReceivingPacks, ReceivingRefs};

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::RemoteConfig;
use crate::refs::{MemoryRefs, RefStore};
use crate::store::{MemoryPacks, Odb, PackStore};

/// A transport could not reach or use a remote.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Not a URL mlv understands.
    #[error("{0:?} is not a remote mlv understands: use a path, file://, http(s):// or s3://bucket/prefix")]
    BadUrl(String),
    /// The URL names no repository.
    #[error("{0}: not an mlv repository")]
    NotARepository(String),
    /// The remote refused the credentials.
    #[error("{url}: {what}")]
    Unauthorized {
        /// The remote.
        url: String,
        /// What it said.
        what: String,
    },
    /// The remote failed, or could not be reached.
    #[error("{url}: {what}")]
    Failed {
        /// The remote.
        url: String,
        /// What went wrong.
        what: String,
    },
}

/// Where a remote is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A repository directory on this machine.
    Path(PathBuf),
    /// `mlv serve`.
    Http(String),
    /// An S3 bucket and key prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix, without a trailing `/` (may be empty).
        prefix: String,
    },
}

impl Location {
    /// Parses a remote URL.
    pub fn parse(url: &str) -> Result<Location, TransportError> {
        let bad = || TransportError::BadUrl(url.to_string());
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty() || prefix.split('/').any(|c| c == "." || c == "..") {
                return Err(bad());
            }
            return Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() });
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Location::Http(url.trim_end_matches('/').to_string()));
        }
        if let Some(path) = url.strip_prefix("file://") {
            return if path.starts_with('/') { Ok(Location::Path(PathBuf::from(path))) } else { Err(bad()) };
        }
        if url.is_empty() || url.contains("://") {
            return Err(bad());
        }
        Ok(Location::Path(PathBuf::from(url)))
    }
}

/// An open remote: its packs and its refs.
pub struct Remote {
    /// The URL, for messages.
    pub url: String,
    /// Its packs; installing one delivers it (the receiving side verifies it).
    pub packs: Arc<dyn PackStore>,
    /// Its refs; updates are compare-and-swap.
    pub refs: Box<dyn RefStore>,
    /// It has a work tree (and a staging index, whose objects no ref names): a gc from
    /// elsewhere cannot see everything it needs.
    pub work_tree: bool,
}

impl Remote {
    /// Opens the remote at `url`, with settings (tokens, S3 endpoint) from its config section.
    pub fn open(url: &str, settings: &RemoteConfig) -> Result<Remote, TransportError> {
        match Location::parse(url)? {
            Location::Path(p) => path::open(url, &p),
            Location::Http(base) => http::open(&base, settings),
            Location::S3 { bucket, prefix } => s3::open(url, &bucket, &prefix, settings),
        }
    }

    /// A remote held in memory, receiving like a real one: what the tests push to.
    pub fn memory() -> Result<Remote, crate::store::StoreError> {
        let odb = Odb::open(Arc::new(MemoryPacks::default()))?;
        let receiver = Arc::new(Receiver { odb, refs: Box::new(MemoryRefs::default()), checked_out: None });
        Ok(Remote {
            url: "memory".into(),
            packs: Arc::new(ReceivingPacks(receiver.clone())),
            refs: Box::new(ReceivingRefs(receiver)),
            work_tree: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_sorted_by_transport() {
        assert_eq!(Location::parse("../models").unwrap(), Location::Path("../models".into()));
        assert_eq!(Location::parse("file:///srv/m").unwrap(), Location::Path("/srv/m".into()));
        assert_eq!(Location::parse("http://h:1/x/").unwrap(), Location::Http("http://h:1/x".into()));
        let s3 = Location::S3 { bucket: "b".into(), prefix: "team/llama".into() };
        assert_eq!(Location::parse("s3://b/team/llama/").unwrap(), s3);
        for bad in ["", "ftp://x", "file://relative", "s3://", "s3://b/../x"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
