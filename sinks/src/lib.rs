//! The `Sink` contract: the only way Ferry's repository touches storage.
//!
//! A sink is a flat namespace of immutable-by-convention objects named by [`ObjectKey`]s
//! (`config`, `chunks/ab/ab12…`, `snapshots/…`). The engine builds the repository format on top
//! of exactly the guarantees written down on [`Sink`]; a backend that cannot give one of them is
//! not a sink.
//!
//! Backends, one module each:
//! - [`local`]: a directory on a local (or locally mounted) filesystem.
//! - [`s3`]: a bucket of S3 or an S3-compatible store, through `object_store`.
//! - [`nfs`]: a directory on an NFS export, spoken to over NFSv3 from user space.
//! - [`memory`]: a process-local map, for unit tests and benchmarks of the layers above.
//!
//! Decorators, one module each, wrap any sink:
//! - [`prefixed`]: confines a sink to a sub-prefix (benchmarks write into a throwaway prefix).
//! - [`fault`]: injects failures (fail after N operations, flip a bit on read, stall puts at a
//!   gate) for engine tests.
//!
//! [`retry`] is the one retry policy of the remote backends (S3, NFS): transient failures are
//! retried with backoff until a deadline, and the user is told while it happens.
//!
//! [`conformance`] holds the one test suite every backend must pass.
//!
//! Blocking by design: the engine drives sinks from a fixed pool of uploader threads, so
//! "many requests in flight" is the number of threads, and memory stays bounded by the
//! pipeline's queues rather than by an unbounded set of futures.

pub mod conformance;
pub mod fault;
pub mod leftover;
pub mod local;
pub mod memory;
pub mod nfs;
pub mod prefixed;
pub mod retry;
pub mod s3;

mod key;

pub use key::{InvalidKey, ObjectKey};
pub use leftover::Leftover;

use std::fmt;
use std::time::SystemTime;

/// How [`Sink::put`] treats an object that already exists under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace an existing object atomically.
    Overwrite,
    /// Store only if no object exists under the key ("put-if-absent"). An existing object is
    /// left untouched and the put reports [`PutOutcome::AlreadyExists`].
    Create,
}

/// What a successful [`Sink::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written (created or, with [`PutMode::Overwrite`], replaced).
    Written,
    /// [`PutMode::Create`] found an object already there; nothing was written.
    AlreadyExists,
}

/// Metadata of one stored object, as returned by [`Sink::head`] and [`Sink::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time as the backend records it.
    pub modified: SystemTime,
}

/// Whether retrying an operation that failed this way can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A timeout, a dropped connection, a server busy: worth retrying with backoff.
    Transient,
    /// No such bucket, access denied, no space, invalid input: retrying cannot help.
    Permanent,
}

/// Errors of any sink. Messages name the object and the backend's own reason; they never
/// contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// No object exists under the key.
    #[error("object {key} does not exist")]
    NotFound { key: String },
    /// The repository location itself is unusable (missing directory, bucket or export).
    #[error("storage location {location} is not usable: {reason}")]
    Location { location: String, reason: String },
    /// The backend refused for lack of permission or wrong credentials.
    #[error("access denied to {location}: {reason}")]
    AccessDenied { location: String, reason: String },
    /// The backend has no room left.
    #[error("no space left on {location} while writing {key}")]
    NoSpace { location: String, key: String },
    /// A ranged read asked for bytes outside the object.
    #[error("range {start}..{end} is outside object {key} of {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    /// Any other I/O failure, with its retry class.
    #[error("{op} {key} failed: {source}")]
    Io {
        op: &'static str,
        key: String,
        retry: Retry,
        #[source]
        source: std::io::Error,
    },
    /// A setting (an environment variable or option) has a value the sink cannot use.
    #[error("{name}: {reason}")]
    Setting { name: &'static str, reason: String },
    /// A failure injected by a [`fault`] decorator.
    #[error("injected fault: {0}")]
    Injected(String),
}

impl SinkError {
    /// Checks a ranged read `start..end` of an object of `size` bytes, as every backend must.
    pub fn check_range(key: &ObjectKey, start: u64, end: u64, size: u64) -> Result<(), SinkError> {
        if start > end || end > size {
            return Err(SinkError::InvalidRange {
                key: key.to_string(),
                start,
                end,
                size,
            });
        }
        Ok(())
    }

    /// Whether retrying the operation may succeed.
    pub fn retry(&self) -> Retry {
        match self {
            SinkError::Io { retry, .. } => *retry,
            _ => Retry::Permanent,
        }
    }
}

/// Storage for a Ferry repository.
///
/// # Contract (every backend, checked by [`conformance`])
/// - **Atomic put**: a reader sees either no object or the whole object from one put, never a
///   prefix of it, even when the writer crashes mid-put. An interrupted put leaves nothing
///   visible under the key.
/// - **Durable on return**: once `put` returns `Ok`, the object survives a crash of this process
///   and (for backends that can promise it) of the machine.
/// - **Put-if-absent**: with [`PutMode::Create`] an existing object is never overwritten; two
///   writers racing on one key both get `Ok` (one `Written`, the other `AlreadyExists` or both
///   `Written` with identical content for content-addressed keys) and the stored object is
///   one of the complete values written.
/// - **get / get_range**: return exactly the stored bytes; a missing key is
///   [`SinkError::NotFound`]; a range past the end is [`SinkError::InvalidRange`].
/// - **list**: yields every object whose key starts with `prefix`, each exactly once, in no
///   particular order, however many there are (backends paginate internally). Objects of
///   interrupted puts are never listed.
/// - **delete**: removes the object; deleting a missing key is `Ok` (idempotent).
/// - **leftovers**: an interrupted put may leave a temp object under a [`leftover`] temp name;
///   [`Sink::leftovers`] finds every one and [`Sink::remove_leftover`] removes it. A backend
///   whose puts are single requests (S3) leaves none. A completed put leaves none.
/// - **Errors**: never contain secrets; [`SinkError::retry`] says whether a retry can help.
pub trait Sink: Send + Sync + fmt::Debug {
    /// Stores `data` under `key` atomically and durably, as `mode` says.
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError>;

    /// Reads a whole object.
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError>;

    /// Reads bytes `start..end` of an object.
    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError>;

    /// Size and modification time of an object.
    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError>;

    /// Every object under `prefix` (a key prefix such as `"chunks/"`, or `""` for all).
    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>;

    /// Removes an object; a missing object is not an error.
    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError>;

    /// Temp objects of puts that have not finished, in directory `dir` (`""`, or a key followed
    /// by `/`) and below. The sink cannot tell a put still running from one whose process died,
    /// so callers remove them only when no put can be running (`ferry gc`, under the
    /// repository's exclusive lock).
    fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError>;

    /// Removes a leftover; one already gone is not an error. A put still writing to it then
    /// fails; it never stores a partial object.
    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError>;

    /// A short, secret-free description of where the data goes (`/srv/repo`, `s3://b/p`).
    fn location(&self) -> String;
}
