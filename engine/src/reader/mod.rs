//! The block reader: streams an image's chunks, in any order, into the pipeline.
//!
//! - [`source`]: opens a file or block device, with O_DIRECT where the filesystem allows it.
//! - [`plan`]: finds the chunks that lie wholly in holes, which are never read.
//! - [`uring`]: many reads in flight through io_uring (the fast path).
//! - [`pread`]: plain positioned reads, used when io_uring is refused.
//! - [`aligned`]: page-aligned buffers and the fixed pool that bounds memory.
//!
//! Every chunk is sent exactly once, as data or as a hole, or the reader sends one error and
//! stops. The reader also stops, without error, when the receiving side hangs up.

pub mod aligned;
pub mod plan;
pub mod pread;
pub mod source;
pub mod uring;

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

pub use aligned::{BufferPool, PooledBuf};
pub use plan::{ChunkPlan, PlannedChunk};
pub use source::ImageSource;

use crate::error::EngineError;

/// One chunk read from an image.
pub struct ReadChunk {
    pub index: u64,
    pub offset: u64,
    pub len: usize,
    /// The bytes, or `None` for a chunk wholly inside a hole (all zeros, never read).
    pub data: Option<PooledBuf>,
}

/// Which I/O path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderMode {
    /// io_uring when the kernel allows it, else positioned reads.
    Auto,
    /// Positioned reads only.
    Pread,
}

/// How the reader runs.
#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    pub chunk_size: u32,
    /// Reads in flight on the io_uring path.
    pub queue_depth: usize,
    pub mode: ReaderMode,
}

/// Which path a reader actually took, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    Uring,
    Pread,
}

impl ReaderKind {
    pub fn describe(self, direct: bool) -> &'static str {
        match (self, direct) {
            (ReaderKind::Uring, true) => "io_uring+O_DIRECT",
            (ReaderKind::Uring, false) => "io_uring",
            (ReaderKind::Pread, true) => "pread+O_DIRECT",
            (ReaderKind::Pread, false) => "pread",
        }
    }
}

/// What the reader sends.
pub type ReadResult = Result<ReadChunk, EngineError>;

/// Where the reader sends chunks and how it learns to stop.
pub struct ReaderOutput<'a> {
    pub chunks: &'a Sender<ReadResult>,
    /// Disconnected by the consumer to stop the reader early (it never sends on it).
    pub cancel: &'a Receiver<()>,
}

/// Reads every chunk of `source` into `out`, taking buffers from `pool`. Returns the path it
/// used. Errors are sent on `out`, not returned.
pub fn run_reader(
    source: &ImageSource,
    options: &ReaderOptions,
    pool: &BufferPool,
    out: &ReaderOutput<'_>,
) -> ReaderKind {
    if options.mode == ReaderMode::Auto {
        match uring::UringReader::new(options.queue_depth) {
            Ok(reader) => {
                reader.run(source, options, pool, out);
                return ReaderKind::Uring;
            }
            Err(e) => say_once(
                &URING_REFUSED,
                &format!("io_uring is not available ({e}); using positioned reads"),
            ),
        }
    }
    pread::run(source, options, pool, out);
    ReaderKind::Pread
}

static URING_REFUSED: AtomicBool = AtomicBool::new(false);

/// Logs a fallback warning once per process.
pub(crate) fn say_once(flag: &AtomicBool, message: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::warn!("{message}");
    }
}
