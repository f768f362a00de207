//! Ferry's copy engine: disk images in, verified, deduplicated, restorable snapshots out.
//!
//! # Modules
//! [`retention`] decides which snapshots a `--keep-*` policy keeps ([`calendar`] places times
//! in UTC days, weeks and months).
//!
//! # Pipeline
//! [`reader`] streams fixed-size chunks of an image (io_uring, O_DIRECT, holes skipped via
//! `SEEK_DATA`) into [`backup`]'s worker pool (zero detection, BLAKE3, zstd), whose output goes
//! to a [`ferry_sinks::Sink`] through bounded queues. [`restore`] and [`verify`] read back.
//!
//! # Repository format, version 1
//!
//! A repository is a set of objects in one sink:
//!
//! | key | content | written |
//! |---|---|---|
//! | `config` | JSON [`config::RepoConfig`]: format name, version 1, default chunk size, hash `blake3`, compression `zstd` | once, by `init`, put-if-absent |
//! | `chunks/<hh>/<id>` | one chunk object ([`chunk_codec`]): magic `FRYC`, version, codec, raw length, payload | by backups, put-if-absent, never modified |
//! | `snapshots/<sid>` | one manifest ([`manifest`]): magic `FERRYSNP`, version, JSON metadata, per-disk index of chunk ids, BLAKE3 trailer | last step of a backup, put-if-absent |
//!
//! `<id>` is the 64-hex BLAKE3 of the chunk's raw bytes and `<hh>` its first two digits.
//! `<sid>` is the first 16 hex digits of the BLAKE3 of the manifest bytes. All-zero chunks are
//! never stored: the index holds 32 zero bytes for them. Every format carries a magic and a
//! version, and readers refuse versions they do not know by name; golden v1 vectors live in the
//! unit tests and must keep decoding.
//!
//! # Invariants
//! 1. **A chunk object's content hashes to its name.** Writers only ever store
//!    `encode(raw)` under `chunks/…/BLAKE3(raw)`; every reader (restore, verify) decodes with
//!    a size cap and re-hashes, so damage is detected, never restored.
//! 2. **A published manifest names only stored chunks.** A backup puts every chunk object, and
//!    waits for each put to return (sinks are durable on return), before it puts the manifest.
//! 3. **Stored objects are never modified.** Chunks and manifests are written with
//!    put-if-absent; a chunk that already exists has the same content by invariant 1.
//! 4. **Snapshots are found only by listing `snapshots/`**, so nothing a backup wrote is visible
//!    as a snapshot before its manifest is complete (sink puts are atomic).
//!
//! # Crash safety
//! A backup killed at any point leaves either no new manifest (only unreferenced chunks, which
//! cost space but no correctness and are reused by the next backup through put-if-absent) or a
//! complete, durable manifest whose chunks are all durable (invariant 2). A crash inside a put
//! leaves nothing visible under the key (the sink contract: temp file, fsync, rename, fsync of
//! the directory for the local sink). A restore writes a temporary file and renames it over the
//! target only after every chunk checked, so a crash or a corrupt chunk never leaves a wrong
//! image under the target name.
//!
//! # Concurrency
//! | operation | may run beside | why |
//! |---|---|---|
//! | backup | backup, restore, verify, list, forget | only adds objects, with put-if-absent |
//! | restore, verify, list | anything above | read only |
//! | forget | anything above | deletes manifests only, never a chunk |
//!
//! Forget beside a backup: the backup may have taken its known chunk ids from a manifest that
//! forget removes meanwhile. Its own manifest still names only stored chunks, because no tool
//! deletes chunks yet; a restore or verify that listed the removed snapshot before it went
//! reports it missing, never a wrong image. Garbage collection, which deletes chunks, must
//! extend this table with a protocol that keeps every chunk a running backup relies on.
//!
//! Dedup relies on invariant 2: ids named by the last snapshot of the same name are known to be
//! stored and are not written or checked again.

pub mod backup;
pub mod bench;
pub mod calendar;
pub mod chunk_codec;
pub mod chunk_id;
pub mod config;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod progress;
pub mod reader;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod sample;
pub mod verify;

pub use backup::{BackupOptions, BackupReport, DiskSource, backup};
pub use error::EngineError;
pub use progress::{NoProgress, Progress};
pub use repository::{Repository, Snapshot};
pub use restore::{RestoreOptions, RestoreReport, restore_disk};
pub use verify::{Problem, VerifyReport, verify};
