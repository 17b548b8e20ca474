//! `mlv serve`: repositories over HTTP (see docs/PROTOCOL.md).
