//! A remote that is a repository directory on this machine (bare or not). This process is
//! its receiving side, with the same checks a server makes.

use std::path::Path;
use std::sync::Arc;

use super::{Receiver, ReceivingPacks, ReceivingRefs, Remote, TransportError};
use crate::refs::Head;
use crate::repo::Repository;

/// Opens the repository at `path`.
pub fn open(url: &str, path: &Path) -> Result<Remote, TransportError> {
    let repo = Repository::open_any(path).map_err(|e| match e {
        crate::Error::NotARepository(_) => TransportError::NotARepository(url.to_string()),
        e => TransportError::Failed { url: url.to_string(), what: e.to_string() },
    })?;
    let checked_out = match (repo.bare, repo.refs.head()) {
        (false, Ok(Head::Branch(b))) => Some(b),
        _ => None,
    };
    let work_tree = !repo.bare;
    let receiver = Arc::new(Receiver { odb: repo.odb, refs: repo.refs, checked_out });
    Ok(Remote {
        url: url.to_string(),
        packs: Arc::new(ReceivingPacks(receiver.clone())),
        refs: Box::new(ReceivingRefs(receiver)),
        work_tree,
    })
}
