//! Backup: images in, one published snapshot out.
//!
//! Per disk, a pipeline of bounded stages on a fixed set of threads:
//!
//! ```text
//! reader (io_uring) --chunks--> workers x N --objects--> uploaders x M --results--> collector
//!   holes: sent without a buffer       zero check, BLAKE3, dedup,          put-if-absent       index, stats,
//!                                      zstd (only for new chunks)                              progress
//! ```
//!
//! Memory is bounded by the read buffer pool plus a fixed number of encoded objects (see
//! `Sizing`), whatever the disk size. The index (32 bytes per chunk) is the only state that grows with
//! the disk, at 1/131072 of its size with 4 MiB chunks.
//!
//! Dedup never asks the sink whether a chunk exists: ids of the last snapshot of the same
//! name are known to be stored (published manifests only name stored chunks), ids already
//! claimed in this run are skipped, and everything else is written with put-if-absent, whose
//! `AlreadyExists` answer is itself the dedup.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, unbounded};
use ferry_sinks::{PutMode, PutOutcome};
use serde::Serialize;

use crate::chunk_codec::ChunkEncoder;
use crate::chunk_id::{ChunkId, is_all_zero};
use crate::digest::ImageDigest;
use crate::error::EngineError;
use crate::lock::RepoLock;
use crate::manifest::{DiskMeta, Manifest, SnapshotMeta, check_disk_name};
use crate::progress::Progress;
use crate::reader::{
    BufferPool, ImageSource, ReadChunk, ReadResult, ReaderKind, ReaderMode, ReaderOptions,
    ReaderOutput, run_reader,
};
use crate::repository::Repository;

/// Tuning and naming of a backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Snapshot name: the domain, or a name for an image backup.
    pub name: String,
    pub chunk_size: u32,
    pub zstd_level: i32,
    /// Hash/compress threads (default: every core).
    pub workers: usize,
    /// Concurrent sink writes.
    pub uploaders: usize,
    /// Reads in flight.
    pub queue_depth: usize,
    /// Bytes of read buffers (the pool): bounds the pipeline's memory.
    pub buffer_bytes: usize,
    pub reader_mode: ReaderMode,
    /// Domain XML to store beside the disks.
    pub domain_xml: Option<String>,
    /// Stops the backup with [`EngineError::Cancelled`] when it receives a message or its
    /// sender is dropped (a signal handler holds the sender). Nothing is published then.
    pub cancel: Option<Receiver<()>>,
}

impl BackupOptions {
    /// Defaults: 4 MiB chunks, zstd level 1, all cores, 8 uploaders, 16 reads in flight,
    /// 192 MiB of buffers.
    pub fn new(name: impl Into<String>) -> BackupOptions {
        BackupOptions {
            name: name.into(),
            chunk_size: crate::config::DEFAULT_CHUNK_SIZE,
            zstd_level: 1,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            uploaders: 8,
            queue_depth: 16,
            buffer_bytes: 192 << 20,
            reader_mode: ReaderMode::Auto,
            domain_xml: None,
            cancel: None,
        }
    }

    /// `Err(Cancelled)` once `cancel` says stop (a message, or its sender dropped). Checked
    /// before each disk, before each chunk result is taken and before the copy is handed
    /// over for publishing, so a stop request always wins over work that is still ready.
    pub(crate) fn check_cancel(&self) -> Result<(), EngineError> {
        match stop_requested(self.cancel.as_ref()) {
            false => Ok(()),
            true => Err(EngineError::Cancelled),
        }
    }
}

/// Whether `cancel` says stop: a message, or its sender dropped (how a signal handler asks).
fn stop_requested(cancel: Option<&Receiver<()>>) -> bool {
    cancel.is_some_and(|c| !matches!(c.try_recv(), Err(TryRecvError::Empty)))
}

/// One image to back up, named as it will appear in the snapshot.
#[derive(Debug, Clone)]
pub struct DiskSource {
    pub name: String,
    /// Where to read the image.
    pub path: PathBuf,
    /// The source recorded in the snapshot when it differs from `path` (push mode reads a
    /// scratch copy of the disk but records the disk's own image).
    pub recorded_source: Option<String>,
}

impl DiskSource {
    /// A disk read from, and recorded as, `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> DiskSource {
        DiskSource {
            name: name.into(),
            path: path.into(),
            recorded_source: None,
        }
    }

    fn recorded(&self) -> String {
        self.recorded_source
            .clone()
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// Counters of one backup (also per disk).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BackupCounts {
    /// Bytes read from the images (holes are not read).
    pub bytes_read: u64,
    /// Bytes written to the sink: new chunk objects, plus the manifest in the total.
    pub bytes_written: u64,
    pub chunks_total: u64,
    /// Chunks written to the sink by this backup.
    pub chunks_new: u64,
    /// Non-zero chunks that were already stored.
    pub chunks_reused: u64,
    /// All-zero chunks (holes and written zeros): recorded in the index, never stored.
    pub chunks_zero: u64,
}

impl BackupCounts {
    fn add(&mut self, other: &BackupCounts) {
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.chunks_total += other.chunks_total;
        self.chunks_new += other.chunks_new;
        self.chunks_reused += other.chunks_reused;
        self.chunks_zero += other.chunks_zero;
    }
}

/// Per-disk part of a [`BackupReport`].
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub name: String,
    pub source: String,
    pub virtual_size: u64,
    pub image_digest: String,
    /// The I/O path taken: `io_uring+O_DIRECT`, `pread`, …
    pub reader: String,
    #[serde(flatten)]
    pub counts: BackupCounts,
}

/// Result of a successful backup (`ferry backup --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Id of the published snapshot.
    pub snapshot: String,
    pub name: String,
    #[serde(flatten)]
    pub counts: BackupCounts,
    pub seconds: f64,
    pub disks: Vec<DiskReport>,
}

/// Backs up `disks` into one new snapshot of `repo`. Chunks are stored first; the manifest is
/// published last, only when every chunk it names is durably stored. On error nothing is
/// published (stored chunks stay, unreferenced, for a later backup to reuse).
pub fn backup(
    repo: &Repository,
    disks: &[DiskSource],
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport, EngineError> {
    copy(repo, disks, options, progress)?.publish(repo)
}

/// A backup whose chunks are all stored but whose manifest is not yet published: the caller
/// may still decide against it (a failing hook), and then nothing becomes visible.
///
/// It holds the backup's shared repository lock (taken by [`copy`] before the first chunk is
/// written), so garbage collection cannot delete the chunks it relies on; dropping it releases
/// the lock.
#[derive(Debug)]
pub struct PendingSnapshot {
    manifest: Manifest,
    /// The backup's stop request channel: a stop before publishing wins.
    cancel: Option<Receiver<()>>,
    report: BackupReport,
    started: Instant,
    lock: RepoLock,
}

impl PendingSnapshot {
    /// Publishes the manifest, the last step of a backup, after checking that no stop was
    /// requested (the options' `cancel`) and that the lock is still held (see [`crate::lock`]).
    pub fn publish(self, repo: &Repository) -> Result<BackupReport, EngineError> {
        if stop_requested(self.cancel.as_ref()) {
            return Err(EngineError::Cancelled);
        }
        self.lock.check()?;
        let published = repo.publish_snapshot(&self.manifest)?;
        let mut report = self.report;
        report.counts.bytes_written += published.bytes_written;
        report.snapshot = published.id;
        report.seconds = self.started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// Stores every chunk of `disks` (the first half of [`backup`]); publish the result with
/// [`PendingSnapshot::publish`].
pub fn copy(
    repo: &Repository,
    disks: &[DiskSource],
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<PendingSnapshot, EngineError> {
    let started = Instant::now();
    let started_unix = unix_now();
    check_options(disks, options)?;
    // Before the known ids are read: gc cannot delete what they name while the lock is held.
    let (lock, resumes) = RepoLock::acquire_backup(repo, &options.name)?;
    if resumes {
        log::info!(
            "a backup of {} was interrupted (or runs): chunks are checked before they are stored",
            options.name
        );
    }
    let known = known_chunks(repo, &options.name)?;
    let claimed = Mutex::new(HashSet::new());
    let mut total = BackupCounts::default();
    let mut disk_metas = Vec::new();
    let mut indexes = Vec::new();
    let mut disk_reports = Vec::new();
    let mut entries = 0u64;
    for disk in disks {
        options.check_cancel()?;
        let source = ImageSource::open(&disk.path, options.reader_mode == ReaderMode::Auto)?;
        entries += source.size.div_ceil(u64::from(options.chunk_size));
        if entries > crate::manifest::MAX_INDEX_ENTRIES {
            return Err(EngineError::InvalidOption(format!(
                "{} chunks of {} bytes would exceed the {} a snapshot may name (disk {}); \
                 use a larger --chunk-size",
                entries,
                options.chunk_size,
                crate::manifest::MAX_INDEX_ENTRIES,
                disk.name
            )));
        }
        progress.start_disk(&disk.name, source.size);
        let run = DiskRun {
            repo,
            options,
            known: &known,
            claimed: &claimed,
            check_stored: resumes,
            progress,
        };
        let done = run.run(&source)?;
        progress.finish_disk(&disk.name);
        let image_digest = ImageDigest::of_index(source.size, options.chunk_size, &done.index);
        total.add(&done.counts);
        disk_reports.push(DiskReport {
            name: disk.name.clone(),
            source: disk.recorded(),
            virtual_size: source.size,
            image_digest: image_digest.clone(),
            reader: done.reader.describe(source.direct.is_some()).to_owned(),
            counts: done.counts,
        });
        disk_metas.push(DiskMeta {
            name: disk.name.clone(),
            source: disk.recorded(),
            virtual_size: source.size,
            chunk_size: options.chunk_size,
            image_digest,
            data_bytes: done.data_bytes,
        });
        indexes.push(done.index);
    }
    options.check_cancel()?;
    let finished = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let manifest = Manifest {
        meta: SnapshotMeta {
            name: options.name.clone(),
            hostname: hostname(),
            started_unix,
            finished_unix: finished.as_secs(),
            finished_nanos: finished.subsec_nanos(),
            ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
            domain_xml: options.domain_xml.clone(),
            disks: disk_metas,
        },
        indexes,
    };
    Ok(PendingSnapshot {
        manifest,
        cancel: options.cancel.clone(),
        report: BackupReport {
            snapshot: String::new(),
            name: options.name.clone(),
            counts: total,
            seconds: 0.0,
            disks: disk_reports,
        },
        started,
        lock,
    })
}

fn check_options(disks: &[DiskSource], options: &BackupOptions) -> Result<(), EngineError> {
    crate::config::check_chunk_size(u64::from(options.chunk_size))?;
    if !(-7..=22).contains(&options.zstd_level) {
        return Err(EngineError::InvalidOption(format!(
            "zstd level {} is outside -7..=22",
            options.zstd_level
        )));
    }
    if options.name.is_empty()
        || options.name.len() > 255
        || options.name.chars().any(char::is_control)
    {
        return Err(EngineError::InvalidOption(format!(
            "snapshot name {:?} must be 1 to 255 bytes without control characters (newlines, \
             tabs, escapes)",
            options.name
        )));
    }
    if disks.is_empty() {
        return Err(EngineError::InvalidOption("nothing to back up".into()));
    }
    let mut names = HashSet::new();
    for disk in disks {
        check_disk_name(&disk.name)
            .map_err(|e| EngineError::InvalidOption(format!("disk name {:?}: {e}", disk.name)))?;
        if !names.insert(&disk.name) {
            return Err(EngineError::InvalidOption(format!(
                "disk name {:?} given twice",
                disk.name
            )));
        }
    }
    if options.workers == 0 || options.uploaders == 0 || options.queue_depth == 0 {
        return Err(EngineError::InvalidOption(
            "workers, uploaders and queue depth must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Ids stored by the most recent snapshot named `name`: known present without asking the sink
/// (less any quarantined by verify).
fn known_chunks(repo: &Repository, name: &str) -> Result<HashSet<ChunkId>, EngineError> {
    let Some(id) = repo.latest_snapshot_named(name)? else {
        return Ok(HashSet::new());
    };
    let snapshot = match repo.load_snapshot(&id) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot use snapshot {id} for dedup ({e}); every chunk will be offered");
            return Ok(HashSet::new());
        }
    };
    // A quarantined chunk was removed for damage: offer it again so a good copy is stored.
    let quarantined = crate::verify::quarantined_ids(repo)?;
    Ok(snapshot
        .manifest
        .indexes
        .iter()
        .flatten()
        .filter(|id| !id.is_zero_mark() && !quarantined.contains(id))
        .copied()
        .collect())
}

/// How many buffers of each kind one disk's pipeline may hold, from the byte budget.
///
/// Memory is at most `chunk_size * (read_buffers + objects)`: read buffers are the pool, and
/// encoded objects are either being encoded (one per worker), queued, being uploaded (one per
/// uploader) or waiting for reuse, never more than `objects` in all. With the defaults and
/// 4 MiB chunks: 48 read buffers and 30 objects (about 310 MiB resident).
pub(crate) struct Sizing {
    pub(crate) read_buffers: usize,
    pub(crate) queue_depth: usize,
    uploaders: usize,
    upload_queue: usize,
    objects: usize,
}

impl Sizing {
    pub(crate) fn of(options: &BackupOptions) -> Sizing {
        let slots = (options.buffer_bytes / options.chunk_size as usize).max(4);
        let read_buffers = slots.max(options.workers + 2);
        let queue_depth = options
            .queue_depth
            .min(read_buffers.saturating_sub(options.workers + 1))
            .max(1);
        let uploaders = options.uploaders.min(slots).max(1);
        let upload_queue = (slots / 4).clamp(1, uploaders * 2);
        Sizing {
            read_buffers,
            queue_depth,
            uploaders,
            upload_queue,
            objects: options.workers + upload_queue + uploaders,
        }
    }
}

/// What a worker or uploader reports for one chunk.
struct ChunkDone {
    index: u64,
    id: ChunkId,
    len: usize,
    read: bool,
    outcome: Outcome,
}

enum Outcome {
    Zero,
    Reused,
    Written(u64),
}

/// An encoded chunk on its way to the sink.
struct Upload {
    index: u64,
    id: ChunkId,
    len: usize,
    object: Vec<u8>,
}

struct DiskDone {
    index: Vec<ChunkId>,
    counts: BackupCounts,
    data_bytes: u64,
    reader: ReaderKind,
}

/// One disk's pipeline.
struct DiskRun<'a> {
    repo: &'a Repository,
    options: &'a BackupOptions,
    known: &'a HashSet<ChunkId>,
    claimed: &'a Mutex<HashSet<ChunkId>>,
    /// Ask the sink whether a chunk is stored before compressing and uploading it: set when an
    /// interrupted backup of the same name may have stored chunks already (one `head` per new
    /// chunk instead of sending its bytes again).
    check_stored: bool,
    progress: &'a dyn Progress,
}

impl DiskRun<'_> {
    fn run(&self, source: &ImageSource) -> Result<DiskDone, EngineError> {
        let chunk_count = source.size.div_ceil(u64::from(self.options.chunk_size));
        let sizing = Sizing::of(self.options);
        let pool = BufferPool::new(sizing.read_buffers, self.options.chunk_size as usize);
        let reader_options = ReaderOptions {
            chunk_size: self.options.chunk_size,
            queue_depth: sizing.queue_depth,
            mode: self.options.reader_mode,
        };
        let (read_tx, read_rx) = bounded::<ReadResult>(sizing.read_buffers);
        let (upload_tx, upload_rx) = bounded::<Upload>(sizing.upload_queue);
        let (done_tx, done_rx) = unbounded::<Result<ChunkDone, EngineError>>();
        let (cancel_tx, cancel_rx) = bounded::<()>(0);
        // Object buffers come back from the uploaders, so encoding reuses warm memory.
        let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(sizing.objects);

        std::thread::scope(|scope| {
            let reader = scope.spawn({
                let cancel_rx = cancel_rx.clone();
                move || {
                    let output = ReaderOutput {
                        chunks: &read_tx,
                        cancel: &cancel_rx,
                    };
                    run_reader(source, &reader_options, &pool, &output)
                }
            });
            for _ in 0..self.options.workers {
                let stage = WorkerChannels {
                    reads: read_rx.clone(),
                    uploads: upload_tx.clone(),
                    done: done_tx.clone(),
                    recycled: recycle_rx.clone(),
                };
                scope.spawn(move || self.work(stage));
            }
            for _ in 0..sizing.uploaders {
                let (upload_rx, done_tx, recycle_tx) =
                    (upload_rx.clone(), done_tx.clone(), recycle_tx.clone());
                scope.spawn(move || self.upload(upload_rx, done_tx, recycle_tx));
            }
            drop((read_rx, upload_tx, upload_rx, done_tx, cancel_rx));
            drop((recycle_tx, recycle_rx));

            let collected = self.collect(&done_rx, chunk_count);
            // Stop every stage: the reader waits on `cancel`, the others on their channels.
            drop(cancel_tx);
            drop(done_rx);
            let reader_kind = reader.join().expect("reader thread panicked");
            collected.map(|mut done| {
                done.reader = reader_kind;
                done
            })
        })
    }

    /// Receives one result per chunk and assembles the index.
    fn collect(
        &self,
        done_rx: &Receiver<Result<ChunkDone, EngineError>>,
        chunk_count: u64,
    ) -> Result<DiskDone, EngineError> {
        let mut index = vec![ChunkId::ZERO_MARK; chunk_count as usize];
        let mut counts = BackupCounts {
            chunks_total: chunk_count,
            ..BackupCounts::default()
        };
        let mut data_bytes = 0;
        let never = crossbeam_channel::never();
        let cancel = self.options.cancel.as_ref().unwrap_or(&never);
        for _ in 0..chunk_count {
            self.options.check_cancel()?;
            let done = crossbeam_channel::select! {
                recv(done_rx) -> done => done.map_err(|_| EngineError::Cancelled)??,
                recv(cancel) -> _ => return Err(EngineError::Cancelled),
            };
            if done.read {
                counts.bytes_read += done.len as u64;
            }
            match done.outcome {
                Outcome::Zero => counts.chunks_zero += 1,
                Outcome::Reused => counts.chunks_reused += 1,
                Outcome::Written(bytes) => {
                    counts.chunks_new += 1;
                    counts.bytes_written += bytes;
                }
            }
            if !matches!(done.outcome, Outcome::Zero) {
                data_bytes += done.len as u64;
                index[done.index as usize] = done.id;
            }
            self.progress.advance(done.len as u64);
        }
        Ok(DiskDone {
            index,
            counts,
            data_bytes,
            reader: ReaderKind::Pread,
        })
    }

    /// Worker: zero check, hash, dedup decision, compression.
    fn work(&self, channels: WorkerChannels) {
        let mut encoder = None;
        for read in channels.reads {
            let result = self.process(read, &mut encoder, &channels.recycled);
            let sent = match result {
                Ok(Processed::Done(done)) => channels.done.send(Ok(done)).is_ok(),
                Ok(Processed::Upload(upload)) => channels.uploads.send(upload).is_ok(),
                Err(e) => {
                    let _ = channels.done.send(Err(e));
                    false
                }
            };
            if !sent {
                return;
            }
        }
    }

    fn process(
        &self,
        read: ReadResult,
        encoder: &mut Option<ChunkEncoder>,
        recycled: &Receiver<Vec<u8>>,
    ) -> Result<Processed, EngineError> {
        let ReadChunk {
            index, len, data, ..
        } = read?;
        let done = |id, read, outcome| {
            Ok(Processed::Done(ChunkDone {
                index,
                id,
                len,
                read,
                outcome,
            }))
        };
        let Some(data) = data else {
            return done(ChunkId::ZERO_MARK, false, Outcome::Zero);
        };
        if is_all_zero(&data) {
            return done(ChunkId::ZERO_MARK, true, Outcome::Zero);
        }
        let id = ChunkId::of(&data);
        let first_claim =
            !self.known.contains(&id) && self.claimed.lock().expect("claimed set lock").insert(id);
        if !first_claim {
            return done(id, true, Outcome::Reused);
        }
        if self.check_stored && self.repo.sink().head(&Repository::chunk_key(&id)).is_ok() {
            return done(id, true, Outcome::Reused);
        }
        let encoder = match encoder {
            Some(e) => e,
            None => encoder.insert(
                ChunkEncoder::new(self.options.zstd_level)
                    .map_err(|e| EngineError::io("starting zstd", e))?,
            ),
        };
        let mut object = recycled.try_recv().unwrap_or_default();
        encoder
            .encode_into(&data, &mut object)
            .map_err(|e| EngineError::io(format!("compressing chunk {id}"), e))?;
        Ok(Processed::Upload(Upload {
            index,
            id,
            len,
            object,
        }))
    }

    /// Uploader: put-if-absent of each encoded chunk; the buffer goes back to the workers.
    fn upload(
        &self,
        upload_rx: Receiver<Upload>,
        done_tx: Sender<Result<ChunkDone, EngineError>>,
        recycle_tx: Sender<Vec<u8>>,
    ) {
        let sink = self.repo.sink();
        for upload in upload_rx {
            let key = Repository::chunk_key(&upload.id);
            let result = sink
                .put(&key, &upload.object, PutMode::Create)
                .map_err(EngineError::from)
                .map(|outcome| ChunkDone {
                    index: upload.index,
                    id: upload.id,
                    len: upload.len,
                    read: true,
                    outcome: match outcome {
                        PutOutcome::Written => Outcome::Written(upload.object.len() as u64),
                        PutOutcome::AlreadyExists => Outcome::Reused,
                    },
                });
            let _ = recycle_tx.try_send(upload.object);
            let failed = result.is_err();
            if done_tx.send(result).is_err() || failed {
                return;
            }
        }
    }
}

/// A worker's ends of the pipeline's channels.
struct WorkerChannels {
    reads: Receiver<ReadResult>,
    uploads: Sender<Upload>,
    done: Sender<Result<ChunkDone, EngineError>>,
    recycled: Receiver<Vec<u8>>,
}

enum Processed {
    Done(ChunkDone),
    Upload(Upload),
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
