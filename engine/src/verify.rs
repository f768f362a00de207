//! Verify: is every snapshot restorable?
//!
//! Without `read_data`, checks that every manifest decodes and every chunk it names is present
//! (one listing of `chunks/`, not one request per chunk). With `read_data`, also fetches every
//! referenced chunk once, decodes it and re-hashes it against its id. Every problem is
//! reported, none stops the check.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::bounded;
use ferry_sinks::SinkError;
use serde::Serialize;

use crate::chunk_codec::{ChunkDecodeError, ChunkDecoder};
use crate::chunk_id::ChunkId;
use crate::error::EngineError;
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
    pub problems: Vec<Problem>,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
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
    read_data: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport, EngineError> {
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
    for (id, r) in &references {
        if stored.contains(id) {
            present.push((*id, r.clone()));
        } else {
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
    if read_data {
        let total: u64 = present.iter().map(|(_, r)| r.len as u64).sum();
        progress.start_disk("all chunks", total);
        let found = read_all(repo, present, threads, progress)?;
        chunks_read = found.checked;
        problems.extend(found.problems);
        progress.finish_disk("all chunks");
    }
    problems.sort();
    Ok(VerifyReport {
        snapshots_checked: ids.len() as u64,
        chunks_referenced: references.len() as u64,
        chunks_read,
        read_data,
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
}

/// Fetches and re-hashes every chunk in `chunks` on `threads` threads.
fn read_all(
    repo: &Repository,
    chunks: Vec<(ChunkId, Reference)>,
    threads: usize,
    progress: &dyn Progress,
) -> Result<ReadFindings, EngineError> {
    let (job_tx, job_rx) = bounded::<(ChunkId, Reference)>(threads * 2);
    let findings = Mutex::new(ReadFindings {
        checked: 0,
        problems: Vec::new(),
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
                    match check_chunk(repo, &id, &r, &mut decoder) {
                        Ok(None) => {}
                        Ok(Some(problem)) => findings
                            .lock()
                            .expect("findings lock")
                            .problems
                            .push(problem),
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

/// `Ok(Some)` for a damaged chunk, `Err` when the sink itself fails.
fn check_chunk(
    repo: &Repository,
    id: &ChunkId,
    r: &Reference,
    decoder: &mut ChunkDecoder,
) -> Result<Option<Problem>, EngineError> {
    let missing = || Problem::ChunkMissing {
        chunk: id.to_hex(),
        snapshot: r.snapshot.clone(),
        disk: r.disk.clone(),
        offset: r.offset,
        references: r.count,
    };
    let object = match repo.sink().get(&Repository::chunk_key(id)) {
        Ok(object) => object,
        Err(SinkError::NotFound { .. }) => return Ok(Some(missing())),
        // A transient failure says nothing about the chunk; stop rather than guess.
        Err(e) if e.retry() == ferry_sinks::Retry::Transient => return Err(e.into()),
        // Unreadable (EIO, permissions): the chunk cannot be restored, so it is damaged.
        Err(e) => {
            return Ok(Some(Problem::ChunkCorrupt {
                chunk: id.to_hex(),
                snapshot: r.snapshot.clone(),
                disk: r.disk.clone(),
                offset: r.offset,
                references: r.count,
                reason: format!("unreadable: {e}"),
            }));
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
    Ok(Some(Problem::ChunkCorrupt {
        chunk: id.to_hex(),
        snapshot: r.snapshot.clone(),
        disk: r.disk.clone(),
        offset: r.offset,
        references: r.count,
        reason,
    }))
}
