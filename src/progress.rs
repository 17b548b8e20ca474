//! Progress reporting, passed into long operations so the library never prints.

/// Receives progress of a long operation.
pub trait Progress: Sync {
    /// A new phase of `total` bytes begins.
    fn start(&self, label: &str, total: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The current phase is over.
    fn finish(&self);
    /// True once the user asked to stop (Ctrl-C): long operations check it between steps
    /// and end with [`crate::store::StoreError::Cancelled`], removing what they started.
    fn cancelled(&self) -> bool {
        false
    }
}

/// The error a sink returns when the operation was cancelled.
pub fn interrupted() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted")
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
