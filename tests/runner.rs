//! The one integration-test binary (run with `cargo test --test runner`).
//!
//! Every test drives the built `mlv` binary in a temporary directory. The test modules live
//! in `tests/cases/` so Cargo does not build each of them as a separate test binary.

mod common;

#[path = "cases/test_roundtrip.rs"]
mod test_roundtrip;

#[path = "cases/test_dedup.rs"]
mod test_dedup;

#[path = "cases/test_hostile.rs"]
mod test_hostile;

#[path = "cases/test_errors.rs"]
mod test_errors;

#[path = "cases/test_status.rs"]
mod test_status;

#[path = "cases/test_refs.rs"]
mod test_refs;

#[path = "cases/test_staging.rs"]
mod test_staging;

#[path = "cases/test_du.rs"]
mod test_du;

#[path = "cases/test_python.rs"]
mod test_python;

#[path = "cases/test_demo.rs"]
mod test_demo;

#[path = "cases/test_fuzz.rs"]
mod test_fuzz;

#[path = "cases/test_delta.rs"]
mod test_delta;

#[path = "cases/test_remote.rs"]
mod test_remote;

#[path = "cases/test_http.rs"]
mod test_http;

#[path = "cases/test_s3.rs"]
mod test_s3;

#[path = "cases/test_reliability.rs"]
mod test_reliability;

#[path = "cases/test_symlinks.rs"]
mod test_symlinks;

#[path = "cases/test_chunking.rs"]
mod test_chunking;

#[path = "cases/test_diff.rs"]
mod test_diff;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[path = "cases/test_spares.rs"]
mod test_spares;

#[path = "cases/test_config.rs"]
mod test_config;

#[path = "cases/test_cli.rs"]
mod test_cli;

#[path = "cases/test_kill.rs"]
mod test_kill;

#[path = "cases/test_hostile_corpus.rs"]
mod test_hostile_corpus;

#[path = "cases/test_full_disk.rs"]
mod test_full_disk;

#[path = "cases/test_gc_remote.rs"]
mod test_gc_remote;
