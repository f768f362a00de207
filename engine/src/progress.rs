//! Progress reporting from the engine to whoever displays it.

/// Receives progress of long operations. Called from the collecting thread only; must be cheap.
pub trait Progress: Sync {
    /// A disk of `size` bytes starts.
    fn start_disk(&self, _name: &str, _size: u64) {}
    /// `bytes` more of the current disk are done (holes count as done).
    fn advance(&self, _bytes: u64) {}
    /// The total turned out to be `size` (for work whose size is learnt while it runs).
    fn set_total(&self, _size: u64) {}
    /// The current disk is done.
    fn finish_disk(&self, _name: &str) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
