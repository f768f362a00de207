//! Garbage collection: deletes the chunk objects no snapshot names (`ferry gc`).
//!
//! Runs under the exclusive repository lock ([`crate::lock`]), so no backup is between reading
//! its known chunk ids and publishing its manifest while chunks are deleted: every chunk a
//! backup relies on is either named by a published manifest (and kept) or written after gc
//! released the lock. Mark: every manifest is read and its index collected; gc refuses to run
//! when a manifest cannot be read, since the chunks it needs would be unknown. Sweep: every
//! object under `chunks/` whose id is not marked is deleted, from a few threads; objects under
//! `chunks/` that are not chunk objects are left alone. Quarantine entries (see
//! [`crate::verify`]) whose chunk is stored again, or that no snapshot needs, are cleared.
//! Leftovers of interrupted puts (temp files a killed backup left on a local directory or NFS
//! export, see [`ferry_sinks::leftover`]) are removed: every writer of the repository holds a
//! lock, so under the exclusive one no put is running. For the same reason every object under
//! a benchmark's throwaway prefix ([`crate::bench`], `ferry-bench-<8 hex>/`) belongs to a
//! benchmark that died without removing it (a running one holds a shared lock): gc deletes
//! them too. Chunks and benchmark objects are found in one listing of the whole repository,
//! which costs what the listing of `chunks/` alone would (an S3 listing of a prefix ending
//! mid-name lists the enclosing one anyway). A gc
//! killed at any point leaves a repository whose snapshots are all complete (it only deletes
//! unreferenced chunks) and whose lock goes stale; the next gc finishes the job.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_sinks::{Leftover, ObjectMeta};
use serde::Serialize;

use crate::bench::bench_prefix_of;
use crate::chunk_id::ChunkId;
use crate::error::EngineError;
use crate::lock::{LockKind, RepoLock};
use crate::repository::{CHUNKS_PREFIX, Repository};
use crate::verify::quarantine_entries;

/// Threads deleting at once (requests in flight against a remote store).
const DELETERS: usize = 8;

/// What a garbage collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub snapshots: usize,
    /// Chunk objects present before the sweep.
    pub chunks_total: u64,
    /// Of those, named by some snapshot.
    pub chunks_referenced: u64,
    /// Unreferenced chunk objects deleted (with `dry_run`: that would be deleted).
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    /// Quarantine entries cleared: their chunk is stored again, or no snapshot needs it.
    pub quarantine_cleared: u64,
    /// Temp objects of interrupted puts removed (with `dry_run`: that would be), and their
    /// bytes.
    pub leftovers_removed: u64,
    pub leftover_bytes: u64,
    /// Throwaway prefixes of benchmarks that died without removing them (`ferry-bench-…`),
    /// sorted, and their objects removed (with `dry_run`: that would be) and bytes. Their
    /// directories (local, NFS) are the caller's to remove: a sink has no directories.
    pub bench_prefixes: Vec<String>,
    pub bench_objects_removed: u64,
    pub bench_bytes: u64,
}

/// Deletes every unreferenced chunk of `repo`. With `dry_run` it only counts what it would do
/// now, takes no lock and writes nothing (so it works on a read-only repository, and while a
/// backup runs, whose new chunks and temp files it then counts too).
pub fn gc(repo: &Repository, dry_run: bool) -> Result<GcReport, EngineError> {
    let lock = match dry_run {
        true => None,
        false => Some(RepoLock::acquire(repo, LockKind::Exclusive, "gc")?),
    };
    let leftovers = repo.sink().leftovers("")?;
    let (snapshots, damaged) = repo.load_all_snapshots()?;
    if let Some(err) = damaged.into_iter().next() {
        let snapshot = match &err {
            EngineError::Manifest { snapshot, .. } => snapshot.clone(),
            _ => "?".to_owned(),
        };
        return Err(EngineError::UnreadableSnapshot {
            snapshot,
            reason: err.to_string(),
        });
    }
    let referenced: HashSet<ChunkId> = snapshots
        .iter()
        .flat_map(|s| s.manifest.indexes.iter().flatten())
        .copied()
        .filter(|id| !id.is_zero_mark())
        .collect();
    let mut report = GcReport {
        dry_run,
        snapshots: snapshots.len(),
        ..GcReport::default()
    };
    let mut doomed: Vec<ObjectMeta> = Vec::new();
    let mut stored = HashSet::new();
    let mut bench_objects: Vec<ObjectMeta> = Vec::new();
    let mut bench_prefixes = BTreeSet::new();
    for meta in repo.sink().list("")? {
        let meta = meta?;
        if let Some(prefix) = bench_prefix_of(meta.key.as_str()) {
            bench_prefixes.insert(prefix.to_owned());
            bench_objects.push(meta);
            continue;
        }
        if !meta.key.as_str().starts_with(CHUNKS_PREFIX) {
            continue;
        }
        let Some(id) = Repository::chunk_id_of_key(meta.key.as_str()) else {
            continue;
        };
        stored.insert(id);
        report.chunks_total += 1;
        if referenced.contains(&id) {
            report.chunks_referenced += 1;
        } else {
            doomed.push(meta);
        }
    }
    report.chunks_deleted = doomed.len() as u64;
    report.bytes_freed = doomed.iter().map(|m| m.size).sum();
    // A quarantine entry is done with once its chunk is stored again (a stored chunk that
    // survives this sweep is referenced) or no snapshot needs it.
    let cleared: Vec<ObjectMeta> = quarantine_entries(repo)?
        .into_iter()
        .filter(|(id, _)| stored.contains(id) || !referenced.contains(id))
        .map(|(_, meta)| meta)
        .collect();
    report.quarantine_cleared = cleared.len() as u64;
    report.leftovers_removed = leftovers.len() as u64;
    report.leftover_bytes = leftovers.iter().map(Leftover::size).sum();
    report.bench_prefixes = bench_prefixes.into_iter().collect();
    report.bench_objects_removed = bench_objects.len() as u64;
    report.bench_bytes = bench_objects.iter().map(|m| m.size).sum();
    let Some(lock) = lock else {
        return Ok(report);
    };
    lock.check()?;
    for leftover in &leftovers {
        repo.sink().remove_leftover(leftover)?;
    }
    delete_all(repo, &doomed)?;
    delete_all(repo, &cleared)?;
    delete_all(repo, &bench_objects)?;
    Ok(report)
}

/// Deletes `objects` from [`DELETERS`] threads; the first error is returned after all stop.
fn delete_all(repo: &Repository, objects: &[ObjectMeta]) -> Result<(), EngineError> {
    if objects.is_empty() {
        return Ok(());
    }
    let next = AtomicU64::new(0);
    let failure = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..DELETERS.min(objects.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(meta) = objects.get(i) else { break };
                    if let Err(e) = repo.sink().delete(&meta.key) {
                        failure
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert(e);
                        next.store(objects.len() as u64, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
    });
    match failure
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
