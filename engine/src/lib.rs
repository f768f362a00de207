//! Ferry's copy engine: disk images in, verified, deduplicated, restorable snapshots out.
//!
//! # Modules
//! [`retention`] decides which snapshots a `--keep-*` policy keeps ([`calendar`] places times
//! in UTC days, weeks and months); [`gc`] deletes unreferenced chunks under [`lock`]'s
//! exclusive repository lock.
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
//! | `snapshots/<sid>` | one manifest ([`manifest`]): magic `FERRYSNP`, version 2 (1 still read), JSON metadata, per-disk index of chunk ids as runs of ids and of all-zero chunks, BLAKE3 trailer | last step of a backup, put-if-absent; deleted by `forget` |
//! | `quarantine/<id>` | the bytes of a chunk object `verify --quarantine` found corrupt (empty: found missing), kept for inspection | by verify, before it removes `chunks/…/<id>`; cleared by gc once the chunk is stored again; never read by restore |
//! | `locks/<32 hex>` | JSON [`lock::LockInfo`]: shared (backup, bench, quarantining verify) or exclusive (gc), operation, host, pid | while a backup or gc runs; rewritten every 5 minutes; deleted at its end |
//! | `ferry-bench-<8 hex>/…` | a running benchmark's throwaway objects ([`bench`]) | by `ferry bench` under its shared lock; removed by it at its end, or by gc after it died |
//!
//! `<id>` is the 64-hex BLAKE3 of the chunk's raw bytes and `<hh>` its first two digits.
//! `<sid>` is the first 16 hex digits of the BLAKE3 of the manifest bytes. All-zero chunks are
//! never stored: the index marks them (a zero run in version 2, 32 zero bytes in version 1), so
//! a sparse disk's manifest grows with its data, not its virtual size. Every format carries a
//! magic and a version, and readers refuse versions they do not know by name; golden vectors of
//! every version (manifests v1 and v2) live in the unit tests and must keep decoding.
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
//! the directory for the local sink); the temp file it may leave (local directory, NFS) is a
//! leftover that the next gc removes. A restore writes a temporary file and renames it over the
//! target only after every chunk checked, so a crash or a corrupt chunk never leaves a wrong
//! image under the target name.
//!
//! # Concurrency
//! | operation | lock | may run beside | why |
//! |---|---|---|---|
//! | backup | shared | backup, restore, verify, list, forget | only adds objects, with put-if-absent |
//! | restore, verify, list | none | anything | read only |
//! | forget | none | anything | deletes manifests only, never a chunk |
//! | verify --quarantine | shared | backup, restore, verify, list, forget | moves only chunks that fail their hash; a backup meanwhile may name such a chunk (missing now instead of corrupt), and the next backup of its data stores it again |
//! | bench (into a repository) | shared | backup, restore, verify, list, forget | writes only under its own `ferry-bench-<hex>/` prefix, which it removes at its end |
//! | gc | exclusive | restore, plain verify, list, forget | deletes chunks no manifest names, leftovers of interrupted puts and the prefixes of dead benchmarks; no backup, benchmark or quarantining verify is running, so no put is |
//!
//! A backup relies on three kinds of chunks: those it uploads, those put-if-absent finds
//! already stored, and those it takes as known from the previous snapshot of its name without
//! asking the sink. gc must not delete any of them before the backup's manifest names them,
//! and none of them is protected by a published manifest while the backup runs (the previous
//! snapshot may be forgotten meanwhile, and a found chunk may be an orphan). Ferry therefore
//! makes gc and backups exclude each other with repository locks ([`lock`]): a backup takes a
//! shared lock before it reads its known ids and holds it until its manifest is published; gc
//! takes an exclusive lock, reads every manifest, and deletes what none names. The lock
//! protocol needs only put-if-absent, list-after-put and delete, which every sink provides.
//!
//! Alternatives weighed: Proxmox Backup marks chunks by updating their access time and sweeps
//! those not touched since the gc started minus a grace period; object stores cannot update a
//! timestamp without rewriting the object, so a mark would cost a copy per chunk. kopia runs two
//! gc cycles and trusts that no backup outlives the gap between them; a backup of a large disk
//! to a slow store can. restic's lock (exclusive prune, shared backups) is what Ferry does: gc
//! never guesses, at the price that it runs only when no backup does (it refuses, naming the
//! holder, and the caller retries). Stale locks (not refreshed for 30 minutes by the sink's
//! clock, or held by a dead process of this host, boot and pid namespace) do not block gc, and gc
//! removes them.
//!
//! Forget beside a backup: the backup may have taken its known ids from a manifest that forget
//! removes meanwhile; its chunks stay, because gc cannot run until the backup has published a
//! manifest that names them. A restore or verify that listed a snapshot before forget removed
//! it reports it missing, never a wrong image.
//!
//! Dedup relies on invariant 2: ids named by the last snapshot of the same name are known to be
//! stored and are not written or checked again (less ids that `verify --quarantine` marked).
//! A backup that finds another backup's lock for the same name (one that was killed, or one
//! still running) asks the sink whether each new chunk is already stored before compressing
//! and sending it, so resuming an interrupted backup does not upload its chunks again.

pub mod backup;
pub mod bench;
pub mod calendar;
pub mod chunk_codec;
pub mod chunk_id;
pub mod config;
pub mod digest;
pub mod error;
pub mod gc;
pub mod lock;
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
