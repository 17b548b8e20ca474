//! mlv: version control for model checkpoints.
//!
//! Safetensors files become tensor objects, deduplicated across files and commits and stored
//! as compressed deltas against their base model's tensors. The library never prints; the
//! `mlv` binary in `src/main.rs` is a thin layer over [`ops`].
//!
//! Layers, bottom up: [`object`] (ids and encodings), [`codec`] (chunk codecs), [`pack`]
//! (pack files), [`store`] (object database), [`refs`], [`index`], [`worktree`], [`repo`],
//! and [`ops`] (one module per command).

pub mod codec;
pub mod config;
pub mod demo;
pub mod encoding;
pub mod error;
pub mod fsutil;
pub mod index;
pub mod lock;
pub mod notes;
pub mod object;
pub mod ops;
pub mod pack;
pub mod progress;
pub mod provenance;
pub mod reach;
pub mod refs;
pub mod repo;
pub mod safetensors;
pub mod serve;
pub mod spare;
pub mod store;
pub mod sync;
pub mod transport;
pub mod worktree;

pub use error::{Error, Result};
pub use object::ObjectId;
pub use repo::Repository;
