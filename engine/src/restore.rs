//! Restore: one disk of a snapshot back into a file or block device.
//!
//! Every chunk is fetched, decoded and re-hashed against its id before its bytes are written;
//! the first missing or corrupt chunk stops the restore with an error naming the chunk and its
//! offset. A restore into a file writes a temporary file beside the target (holes for zero
//! chunks, so the result is sparse) and renames it into place only when every chunk checked,
//! so a failed restore never leaves a plausible-looking but wrong image behind.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded};
use ferry_sinks::SinkError;
use serde::Serialize;

use crate::chunk_codec::ChunkDecoder;
use crate::chunk_id::ChunkId;
use crate::digest::ImageDigest;
use crate::error::EngineError;
use crate::manifest::DiskMeta;
use crate::progress::Progress;
use crate::repository::{Repository, Snapshot};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Concurrent chunk fetches.
    pub threads: usize,
    /// Replace an existing regular file at the target.
    pub overwrite: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            threads: 8,
            overwrite: false,
        }
    }
}

/// Result of a restore (`ferry restore --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub disk: String,
    pub target: String,
    pub virtual_size: u64,
    /// Bytes of data written (zero chunks are left as holes).
    pub bytes_written: u64,
    pub chunks_total: u64,
    pub chunks_zero: u64,
    pub image_digest: String,
    pub seconds: f64,
}

/// Picks a disk of a snapshot by name, or its only disk.
pub fn select_disk<'a>(
    snapshot: &'a Snapshot,
    name: Option<&str>,
) -> Result<(usize, &'a DiskMeta), EngineError> {
    let disks = &snapshot.manifest.meta.disks;
    let available = || {
        disks
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => disks
            .iter()
            .enumerate()
            .find(|(_, d)| d.name == name)
            .ok_or_else(|| EngineError::DiskNotFound {
                snapshot: snapshot.id.clone(),
                disk: name.to_owned(),
                available: available(),
            }),
        None if disks.len() == 1 => Ok((0, &disks[0])),
        None => Err(EngineError::InvalidOption(format!(
            "snapshot {} has disks {}; choose one with --disk",
            snapshot.id,
            available()
        ))),
    }
}

/// Restores disk `disk_index` of `snapshot` to `target`.
pub fn restore_disk(
    repo: &Repository,
    snapshot: &Snapshot,
    disk_index: usize,
    target: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, EngineError> {
    let started = Instant::now();
    let disk = &snapshot.manifest.meta.disks[disk_index];
    let index = &snapshot.manifest.indexes[disk_index];
    let digest = ImageDigest::of_index(disk.virtual_size, disk.chunk_size, index);
    if digest != disk.image_digest {
        return Err(EngineError::RestoreTarget {
            path: target.to_owned(),
            reason: format!(
                "snapshot {} disk {}: index does not match its recorded image digest",
                snapshot.id, disk.name
            ),
        });
    }
    let output = Output::open(target, disk.virtual_size, options.overwrite)?;
    progress.start_disk(&disk.name, disk.virtual_size);
    let written = match write_chunks(repo, disk, index, &output, options.threads, progress) {
        Ok(written) => written,
        Err(e) => {
            output.abandon();
            return Err(e);
        }
    };
    output.commit()?;
    progress.finish_disk(&disk.name);
    Ok(RestoreReport {
        snapshot: snapshot.id.clone(),
        disk: disk.name.clone(),
        target: target.display().to_string(),
        virtual_size: disk.virtual_size,
        bytes_written: written,
        chunks_total: index.len() as u64,
        chunks_zero: index.iter().filter(|id| id.is_zero_mark()).count() as u64,
        image_digest: digest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Fetches, checks and writes every data chunk; returns the bytes written.
fn write_chunks(
    repo: &Repository,
    disk: &DiskMeta,
    index: &[ChunkId],
    output: &Output,
    threads: usize,
    progress: &dyn Progress,
) -> Result<u64, EngineError> {
    let (job_tx, job_rx) = bounded::<(u64, ChunkId)>(threads * 2);
    let (done_tx, done_rx) = unbounded::<Result<(u64, usize), EngineError>>();
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (i, id) in index.iter().enumerate() {
                let wanted = !id.is_zero_mark() || output.temp.is_none();
                if wanted && job_tx.send((i as u64, *id)).is_err() {
                    return;
                }
            }
            drop(job_tx);
        });
        for _ in 0..threads.max(1) {
            let (job_rx, done_tx, failed) = (job_rx.clone(), done_tx.clone(), &failed);
            scope.spawn(move || {
                let mut decoder = ChunkDecoder::new();
                for (i, id) in job_rx {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let result = restore_chunk(repo, disk, i, &id, output, &mut decoder);
                    let stop = result.is_err();
                    if done_tx.send(result).is_err() || stop {
                        return;
                    }
                }
            });
        }
        drop((job_rx, done_tx));
        let mut written = 0u64;
        let jobs = if output.temp.is_none() {
            index.len()
        } else {
            progress.advance(disk.virtual_size - disk.data_bytes.min(disk.virtual_size));
            index.iter().filter(|id| !id.is_zero_mark()).count()
        };
        for _ in 0..jobs {
            match done_rx.recv() {
                Ok(Ok((_, len))) => {
                    written += len as u64;
                    progress.advance(len as u64);
                }
                Ok(Err(e)) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(_) => return Err(EngineError::Cancelled),
            }
        }
        Ok(written)
    })
}

fn restore_chunk(
    repo: &Repository,
    disk: &DiskMeta,
    i: u64,
    id: &ChunkId,
    output: &Output,
    decoder: &mut ChunkDecoder,
) -> Result<(u64, usize), EngineError> {
    let offset = i * u64::from(disk.chunk_size);
    let write = |bytes: &[u8]| {
        output.file.write_all_at(bytes, offset).map_err(|e| {
            EngineError::io(
                format!("writing {} at offset {offset}", output.shown.display()),
                e,
            )
        })
    };
    if id.is_zero_mark() {
        write(&vec![0u8; disk.chunk_len(i)])?;
        return Ok((i, disk.chunk_len(i)));
    }
    let object = match repo.sink().get(&Repository::chunk_key(id)) {
        Ok(object) => object,
        Err(SinkError::NotFound { .. }) => {
            return Err(EngineError::ChunkMissing {
                id: *id,
                disk: disk.name.clone(),
                offset,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let corrupt = |source| EngineError::ChunkCorrupt {
        id: *id,
        disk: disk.name.clone(),
        offset,
        source,
    };
    let raw = decoder
        .decode(&object, id, disk.chunk_size as usize)
        .map_err(corrupt)?;
    let expected = disk.chunk_len(i);
    if raw.len() != expected {
        return Err(corrupt(
            crate::chunk_codec::ChunkDecodeError::LengthMismatch {
                payload: raw.len(),
                raw: expected,
            },
        ));
    }
    write(&raw)?;
    Ok((i, raw.len()))
}

/// Where restored bytes go: a temporary file renamed over the target on success, or a block
/// device written in place (zero chunks written as zeros, since a device has no holes).
struct Output {
    file: File,
    /// The target as the user named it.
    shown: PathBuf,
    /// Temporary file to rename into place, for file targets.
    temp: Option<PathBuf>,
}

impl Output {
    fn open(target: &Path, size: u64, overwrite: bool) -> Result<Output, EngineError> {
        let refuse = |reason: &str| EngineError::RestoreTarget {
            path: target.to_owned(),
            reason: reason.to_owned(),
        };
        match std::fs::metadata(target) {
            Ok(meta) if meta.file_type().is_block_device() && !overwrite => {
                return Err(refuse("is a block device (pass --force to overwrite it)"));
            }
            Ok(meta) if meta.file_type().is_block_device() => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(target)
                    .map_err(|e| refuse(&e.to_string()))?;
                let device_size = std::io::Seek::seek(&mut &file, std::io::SeekFrom::End(0))
                    .map_err(|e| refuse(&e.to_string()))?;
                if device_size < size {
                    return Err(refuse(&format!(
                        "block device holds {device_size} bytes, the disk needs {size}"
                    )));
                }
                return Ok(Output {
                    file,
                    shown: target.to_owned(),
                    temp: None,
                });
            }
            Ok(meta) if meta.is_dir() => return Err(refuse("is a directory")),
            Ok(_) if !overwrite => {
                return Err(refuse("already exists (pass --force to replace it)"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(&e.to_string())),
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = target
            .file_name()
            .ok_or_else(|| refuse("has no file name"))?
            .to_string_lossy();
        let temp = dir.join(format!(
            ".{file_name}.ferry-restore-{:08x}",
            rand::random::<u32>()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| refuse(&format!("cannot create a file in {}: {e}", dir.display())))?;
        if let Err(e) = file.set_len(size) {
            let _ = std::fs::remove_file(&temp);
            return Err(refuse(&format!(
                "cannot size the file to {size} bytes: {e}"
            )));
        }
        Ok(Output {
            file,
            shown: target.to_owned(),
            temp: Some(temp),
        })
    }

    /// Makes the restored image durable and visible under its name.
    fn commit(self) -> Result<(), EngineError> {
        let io = |e| EngineError::io(format!("finishing {}", self.shown.display()), e);
        self.file.sync_all().map_err(io)?;
        if let Some(temp) = &self.temp {
            std::fs::rename(temp, &self.shown).map_err(io)?;
            let dir = self.shown.parent().filter(|p| !p.as_os_str().is_empty());
            File::open(dir.unwrap_or(Path::new(".")))
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    /// Removes the partial output of a failed restore.
    fn abandon(self) {
        if let Some(temp) = &self.temp {
            let _ = std::fs::remove_file(temp);
        }
    }
}
