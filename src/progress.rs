//! Progress reporting, passed into long operations so the library never prints.

/// Receives progress of a long operation.
pub trait Progress: Sync {
    /// A new phase of `total` bytes begins.
    fn start(&self, label: &str, total: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The current phase is over.
    fn finish(&self);
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
