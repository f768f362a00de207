//! Verify: is every snapshot restorable?
//!
//! Without `read_data`, checks that every manifest decodes and every chunk it names is present
//! (one listing of `chunks/`, not one request per chunk). With `read_data`, also fetches every
//! referenced chunk once (or a random sample of them), decodes it and re-hashes it against its
//! id. Every problem is reported, none stops the check.
//!
//! Quarantine (asked for with [`ReadData::quarantine`]): a chunk whose bytes do not decode or
//! hash to its id is copied to `quarantine/<id>` and then removed from `chunks/`; a referenced
//! chunk that is missing gets an empty `quarantine/<id>`. Backups never take a quarantined id as
//! known, so the next backup that reads the same data stores a good copy again. The damaged
//! bytes are kept, never destroyed, for inspection, until gc finds the chunk stored again (or
//! no longer needed) and clears its quarantine entry. A chunk that cannot be read at all is
//! reported but left where it is.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::bounded;
use ferry_sinks::{ObjectMeta, SinkError};
use serde::Serialize;

use crate::chunk_codec::{ChunkDecodeError, ChunkDecoder};
use crate::chunk_id::ChunkId;
use crate::error::EngineError;
use crate::lock::{LockKind, RepoLock};
use crate::progress::Progress;
use crate::repository::{CHUNKS_PREFIX, Repository};

/// One thing wrong with the repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A manifest that does not read or decode.
    ManifestDamaged { snapshot: String, reason: String },
    /// A referenced chunk that is not stored. `snapshot`, `disk`, `offset`: its first use.
    ChunkMissing {
        chunk: String,
        snapshot: String,
        disk: String,
        offset: u64,
        references: u64,
    },
    /// A stored chunk whose content does not decode or hash to its id.
    ChunkCorrupt {
        chunk: String,
        snapshot: String,
        disk: String,
        offset: u64,
        references: u64,
        reason: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::ManifestDamaged { snapshot, reason } => {
                write!(f, "snapshot {snapshot}: manifest damaged: {reason}")
            }
            Problem::ChunkMissing {
                chunk,
                snapshot,
                disk,
                offset,
                references,
            } => write!(
                f,
                "chunk {chunk} missing (snapshot {snapshot} disk {disk} offset {offset}; {references} references)"
            ),
            Problem::ChunkCorrupt {
                chunk,
                snapshot,
                disk,
                offset,
                references,
                reason,
            } => write!(
                f,
                "chunk {chunk} corrupt: {reason} (snapshot {snapshot} disk {disk} offset {offset}; {references} references)"
            ),
        }
    }
}

/// Result of a verify (`ferry verify --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub snapshots_checked: u64,
    /// Distinct chunks referenced by the checked snapshots.
    pub chunks_referenced: u64,
    /// Chunks whose content was read and re-hashed (0 without `read_data`).
    pub chunks_read: u64,
    pub read_data: bool,
    /// The sample's percentage and seed, when only a sample was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_seed: Option<u64>,
    /// Chunks this run quarantined: corrupt ones moved to `quarantine/`, missing ones marked.
    pub quarantined: Vec<String>,
    pub problems: Vec<Problem>,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Prefix of quarantined chunk objects: `quarantine/<64 hex>`.
pub const QUARANTINE_PREFIX: &str = "quarantine/";

/// How much chunk data [`verify`] reads. `false`/`true` convert to "none"/"all".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadData {
    /// Read and re-hash chunks at all.
    pub enabled: bool,
    /// Read only about this percentage (0 < p <= 100) of the referenced chunks, chosen by
    /// `seed`; `None` reads them all.
    pub sample_percent: Option<f64>,
    /// Chooses the sample: the same seed picks the same chunks.
    pub seed: u64,
    /// Quarantine chunks found corrupt (see the module docs).
    pub quarantine: bool,
}

impl From<bool> for ReadData {
    fn from(enabled: bool) -> ReadData {
        ReadData {
            enabled,
            ..ReadData::default()
        }
    }
}

impl ReadData {
    /// Whether the sample includes `id`: a hash of the id and the seed, uniform over ids.
    fn samples(&self, id: &ChunkId) -> bool {
        match self.sample_percent {
            None => true,
            Some(percent) => self.draw(id) * 100.0 < percent,
        }
    }

    /// `id`'s place in the sample order of this seed, in [0, 1].
    fn draw(&self, id: &ChunkId) -> f64 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.seed.to_le_bytes());
        hasher.update(id.as_bytes());
        let draw = u64::from_le_bytes(
            hasher.finalize().as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        draw as f64 / u64::MAX as f64
    }

    /// Keeps the sampled chunks of `present`; a sample never reads nothing while there are
    /// chunks (a small percentage of a small repository would), so it keeps at least the one
    /// first in the seed's order.
    fn sample<T>(&self, present: Vec<(ChunkId, T)>) -> Vec<(ChunkId, T)> {
        let first = present
            .iter()
            .map(|(id, _)| self.draw(id))
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        let mut kept = Vec::new();
        let mut fallback = None;
        for (i, entry) in present.into_iter().enumerate() {
            if self.samples(&entry.0) {
                kept.push(entry);
            } else if Some(i) == first {
                fallback = Some(entry);
            }
        }
        if kept.is_empty() {
            kept.extend(fallback);
        }
        kept
    }
}

/// First use of a chunk, for reports, and its expected raw length.
#[derive(Clone)]
struct Reference {
    snapshot: String,
    disk: String,
    offset: u64,
    len: usize,
    max_len: usize,
    count: u64,
}

/// Checks one snapshot (`Some`, a full id) or all of them (`None`).
pub fn verify(
    repo: &Repository,
    snapshot: Option<&str>,
    read_data: impl Into<ReadData>,
    threads: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport, EngineError> {
    let read = read_data.into();
    if let Some(p) = read.sample_percent
        && !(p > 0.0 && p <= 100.0)
    {
        return Err(EngineError::InvalidOption(format!(
            "sample percentage {p} is outside (0, 100]"
        )));
    }
    // Quarantining writes to the repository: like a backup, it keeps gc away while it runs.
    let _lock = read
        .quarantine
        .then(|| RepoLock::acquire(repo, LockKind::Shared, "verify --quarantine"))
        .transpose()?;
    let started = Instant::now();
    let ids = match snapshot {
        Some(id) => vec![id.to_owned()],
        None => repo.snapshot_ids()?,
    };
    let mut problems = Vec::new();
    let mut references: HashMap<ChunkId, Reference> = HashMap::new();
    for id in &ids {
        let snapshot = match repo.load_snapshot(id) {
            Ok(s) => s,
            // Damaged, vanished or unreadable (EIO on a bad sector): report it and go on.
            Err(e @ (EngineError::Manifest { .. } | EngineError::SnapshotNotFound(_)))
            | Err(e @ EngineError::Sink(_)) => {
                let reason = match e {
                    EngineError::Manifest { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                problems.push(Problem::ManifestDamaged {
                    snapshot: id.clone(),
                    reason,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        for (disk, index) in snapshot
            .manifest
            .meta
            .disks
            .iter()
            .zip(&snapshot.manifest.indexes)
        {
            for (i, chunk) in index.iter().enumerate() {
                if chunk.is_zero_mark() {
                    continue;
                }
                references
                    .entry(*chunk)
                    .and_modify(|r| r.count += 1)
                    .or_insert_with(|| Reference {
                        snapshot: id.clone(),
                        disk: disk.name.clone(),
                        offset: i as u64 * u64::from(disk.chunk_size),
                        len: disk.chunk_len(i as u64),
                        max_len: disk.chunk_size as usize,
                        count: 1,
                    });
            }
        }
    }

    let stored = stored_chunks(repo)?;
    let mut present = Vec::new();
    let mut quarantined = Vec::new();
    for (id, r) in &references {
        if stored.contains(id) {
            present.push((*id, r.clone()));
        } else {
            if read.quarantine {
                mark_missing(repo, id)?;
                quarantined.push(id.to_hex());
            }
            problems.push(Problem::ChunkMissing {
                chunk: id.to_hex(),
                snapshot: r.snapshot.clone(),
                disk: r.disk.clone(),
                offset: r.offset,
                references: r.count,
            });
        }
    }
    let mut chunks_read = 0;
    if read.enabled {
        let present = read.sample(present);
        let total: u64 = present.iter().map(|(_, r)| r.len as u64).sum();
        progress.start_disk("chunks", total);
        let found = read_all(repo, present, threads, read.quarantine, progress)?;
        chunks_read = found.checked;
        problems.extend(found.problems);
        quarantined.extend(found.quarantined);
        progress.finish_disk("chunks");
    }
    problems.sort();
    quarantined.sort();
    let sampled = read.enabled && read.sample_percent.is_some();
    Ok(VerifyReport {
        snapshots_checked: ids.len() as u64,
        chunks_referenced: references.len() as u64,
        chunks_read,
        read_data: read.enabled,
        sample_percent: read.sample_percent.filter(|_| sampled),
        sample_seed: sampled.then_some(read.seed),
        quarantined,
        problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Ids of every stored chunk object, from one listing.
fn stored_chunks(repo: &Repository) -> Result<HashSet<ChunkId>, EngineError> {
    let mut stored = HashSet::new();
    for meta in repo.sink().list(CHUNKS_PREFIX)? {
        if let Some(id) = Repository::chunk_id_of_key(meta?.key.as_str()) {
            stored.insert(id);
        }
    }
    Ok(stored)
}

struct ReadFindings {
    checked: u64,
    problems: Vec<Problem>,
    quarantined: Vec<String>,
}

/// Fetches and re-hashes every chunk in `chunks` on `threads` threads.
fn read_all(
    repo: &Repository,
    chunks: Vec<(ChunkId, Reference)>,
    threads: usize,
    quarantine: bool,
    progress: &dyn Progress,
) -> Result<ReadFindings, EngineError> {
    let (job_tx, job_rx) = bounded::<(ChunkId, Reference)>(threads * 2);
    let findings = Mutex::new(ReadFindings {
        checked: 0,
        problems: Vec::new(),
        quarantined: Vec::new(),
    });
    let fatal: Mutex<Option<EngineError>> = Mutex::new(None);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<u64>();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let (job_rx, done_tx, findings, fatal) =
                (job_rx.clone(), done_tx.clone(), &findings, &fatal);
            scope.spawn(move || {
                let mut decoder = ChunkDecoder::new();
                for (id, r) in job_rx {
                    match check_chunk(repo, &id, &r, &mut decoder, quarantine) {
                        Ok(None) => {}
                        Ok(Some((problem, moved))) => {
                            let mut findings = findings.lock().expect("findings lock");
                            findings.problems.push(problem);
                            if moved {
                                findings.quarantined.push(id.to_hex());
                            }
                        }
                        Err(e) => {
                            fatal.lock().expect("fatal lock").get_or_insert(e);
                            return;
                        }
                    }
                    findings.lock().expect("findings lock").checked += 1;
                    let _ = done_tx.send(r.len as u64);
                }
            });
        }
        drop((job_rx, done_tx));
        scope.spawn(move || {
            for job in chunks {
                if job_tx.send(job).is_err() {
                    return;
                }
            }
        });
        for bytes in done_rx {
            progress.advance(bytes);
        }
    });
    if let Some(e) = fatal.into_inner().expect("fatal lock") {
        return Err(e);
    }
    Ok(findings.into_inner().expect("findings lock"))
}

/// `Ok(Some((problem, quarantined)))` for a damaged chunk, `Err` when the sink itself fails.
fn check_chunk(
    repo: &Repository,
    id: &ChunkId,
    r: &Reference,
    decoder: &mut ChunkDecoder,
    quarantine: bool,
) -> Result<Option<(Problem, bool)>, EngineError> {
    let missing = || Problem::ChunkMissing {
        chunk: id.to_hex(),
        snapshot: r.snapshot.clone(),
        disk: r.disk.clone(),
        offset: r.offset,
        references: r.count,
    };
    let object = match repo.sink().get(&Repository::chunk_key(id)) {
        Ok(object) => object,
        Err(SinkError::NotFound { .. }) => return Ok(Some((missing(), false))),
        // A transient failure says nothing about the chunk; stop rather than guess.
        Err(e) if e.retry() == ferry_sinks::Retry::Transient => return Err(e.into()),
        // Unreadable (EIO, permissions): the chunk cannot be restored, so it is damaged.
        Err(e) => {
            let problem = Problem::ChunkCorrupt {
                chunk: id.to_hex(),
                snapshot: r.snapshot.clone(),
                disk: r.disk.clone(),
                offset: r.offset,
                references: r.count,
                reason: format!("unreadable: {e}"),
            };
            return Ok(Some((problem, false)));
        }
    };
    let reason = match decoder.decode(&object, id, r.max_len) {
        Ok(raw) if raw.len() == r.len => return Ok(None),
        Ok(raw) => ChunkDecodeError::LengthMismatch {
            payload: raw.len(),
            raw: r.len,
        }
        .to_string(),
        Err(e) => e.to_string(),
    };
    if quarantine {
        quarantine_chunk(repo, id, &object)?;
    }
    let problem = Problem::ChunkCorrupt {
        chunk: id.to_hex(),
        snapshot: r.snapshot.clone(),
        disk: r.disk.clone(),
        offset: r.offset,
        references: r.count,
        reason,
    };
    Ok(Some((problem, quarantine)))
}

/// Copies a corrupt chunk object to `quarantine/<id>`, then removes it from `chunks/`. The
/// copy is durable before the removal, so the damaged bytes are never lost.
fn quarantine_chunk(repo: &Repository, id: &ChunkId, object: &[u8]) -> Result<(), EngineError> {
    repo.sink()
        .put(&quarantine_key(id), object, ferry_sinks::PutMode::Overwrite)?;
    repo.sink().delete(&Repository::chunk_key(id))?;
    Ok(())
}

/// Records a missing chunk in the quarantine (an empty object), so backups offer it again.
fn mark_missing(repo: &Repository, id: &ChunkId) -> Result<(), EngineError> {
    repo.sink()
        .put(&quarantine_key(id), &[], ferry_sinks::PutMode::Create)?;
    Ok(())
}

fn quarantine_key(id: &ChunkId) -> ferry_sinks::ObjectKey {
    ferry_sinks::ObjectKey::new(format!("{QUARANTINE_PREFIX}{}", id.to_hex()))
        .expect("quarantine keys are valid")
}

/// Ids of quarantined chunks: a backup must not take them as stored.
pub fn quarantined_ids(repo: &Repository) -> Result<HashSet<ChunkId>, EngineError> {
    Ok(quarantine_entries(repo)?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Every quarantine entry with the id it names (objects under `quarantine/` that name no chunk
/// id are skipped).
pub fn quarantine_entries(repo: &Repository) -> Result<Vec<(ChunkId, ObjectMeta)>, EngineError> {
    let mut entries = Vec::new();
    for meta in repo.sink().list(QUARANTINE_PREFIX)? {
        let meta = meta?;
        let id = meta
            .key
            .as_str()
            .strip_prefix(QUARANTINE_PREFIX)
            .and_then(|hex| ChunkId::from_hex(hex).ok());
        if let Some(id) = id {
            entries.push((id, meta));
        }
    }
    Ok(entries)
}
