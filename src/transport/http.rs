//! The HTTP transport: a client for `mlv serve` (see docs/PROTOCOL.md).

use super::{Remote, TransportError};
use crate::config::RemoteConfig;

/// Opens the repository served at `url`.
pub fn open(url: &str, settings: &RemoteConfig) -> Result<Remote, TransportError> {
    let _ = settings;
    Err(TransportError::Failed { url: url.into(), what: "the HTTP transport is not available yet".into() })
}
