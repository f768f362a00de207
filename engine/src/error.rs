//! The engine's error type: every failure a user can meet, each naming what is wrong.

use std::path::PathBuf;

use ferry_sinks::SinkError;

use crate::chunk_codec::ChunkDecodeError;
use crate::chunk_id::ChunkId;
use crate::manifest::ManifestError;

/// Errors of backup, restore, verify and repository access.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{location} is not a Ferry repository (no config object); run `ferry init` first")]
    NotARepository { location: String },
    #[error("{location} already holds a Ferry repository")]
    RepositoryExists { location: String },
    #[error(
        "repository format version {found} is not supported by this ferry (it reads version {supported})"
    )]
    UnsupportedRepositoryVersion { found: u64, supported: u32 },
    #[error("repository config is unreadable: {0}")]
    BadConfig(String),
    #[error("snapshot {snapshot}: {source}")]
    Manifest {
        snapshot: String,
        #[source]
        source: ManifestError,
    },
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    #[error("snapshot prefix {0:?} is ambiguous; give more digits")]
    AmbiguousSnapshot(String),
    #[error("snapshot {snapshot} has no disk {disk:?} (it has: {available})")]
    DiskNotFound {
        snapshot: String,
        disk: String,
        available: String,
    },
    #[error("cannot open image {path}: {source}")]
    ImageOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading image {path} at offset {offset} failed: {source}")]
    ImageRead {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("image {path} ended at offset {offset}, before its size {size} (did it shrink?)")]
    ImageShrank {
        path: PathBuf,
        offset: u64,
        size: u64,
    },
    #[error("chunk {id} (disk {disk}, offset {offset}) is corrupt: {source}")]
    ChunkCorrupt {
        id: ChunkId,
        disk: String,
        offset: u64,
        #[source]
        source: ChunkDecodeError,
    },
    #[error("chunk {id} (disk {disk}, offset {offset}) is missing from the repository")]
    ChunkMissing {
        id: ChunkId,
        disk: String,
        offset: u64,
    },
    #[error("restore target {path}: {reason}")]
    RestoreTarget { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("operation cancelled")]
    Cancelled,
    #[error(
        "the repository is locked by {holder}; garbage collection runs only when no backup, benchmark or quarantining verify does (retry when it has finished)"
    )]
    Locked { holder: String },
    #[error(
        "this process lost its repository lock (another process removed it as stale); nothing was published"
    )]
    LockLost,
    #[error(
        "garbage collection refuses to run while snapshot {snapshot} cannot be read ({reason}): the chunks it needs are unknown; repair or forget it first"
    )]
    UnreadableSnapshot { snapshot: String, reason: String },
}

impl EngineError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> EngineError {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }
}
