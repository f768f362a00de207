//! Restore: one disk of a snapshot back into a file or block device.
//!
//! Every chunk is fetched, decoded and re-hashed against its id before its bytes are written;
//! the first missing or corrupt chunk stops the restore with an error naming the chunk and its
//! offset. A restore into a file writes a temporary file beside the target (holes for zero
//! chunks, so the result is sparse) and renames it into place only when every chunk checked,
//! so a failed restore never leaves a plausible-looking but wrong image behind.
//!
//! Chunks are decoded into page-aligned buffers and written with O_DIRECT where the target
//! allows it: no copy into the page cache (the restore's largest CPU cost otherwise), no
//! writeback storm at the final fsync, and the host's cached data is not evicted. A short tail
//! chunk, or a filesystem that refuses O_DIRECT, goes through the page cache instead.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, bounded, never, select, unbounded};
use ferry_sinks::SinkError;
use serde::Serialize;

use crate::chunk_codec::ChunkDecoder;
use crate::chunk_id::{ChunkId, is_all_zero};
use crate::digest::ImageDigest;
use crate::error::EngineError;
use crate::manifest::DiskMeta;
use crate::progress::Progress;
use crate::reader::aligned::{AlignedBuf, BUFFER_ALIGN};
use crate::reader::say_once;
use crate::repository::{Repository, Snapshot};

static DIRECT_WRITE_REFUSED: AtomicBool = AtomicBool::new(false);

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Concurrent chunk fetches.
    pub threads: usize,
    /// Replace an existing regular file at the target.
    pub overwrite: bool,
    /// Stops the restore with [`EngineError::Cancelled`] when it receives a message or its
    /// sender is dropped; the partial temporary file is removed.
    pub cancel: Option<Receiver<()>>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            threads: 8,
            overwrite: false,
            cancel: None,
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
    /// What the restored bytes are: `qcow2` (a qcow2 file, as overlay mode and offline backups
    /// store a qcow2 disk) or `raw`.
    pub format: &'static str,
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
    let written = match write_chunks(repo, disk, index, &output, options, progress) {
        Ok(written) => written,
        Err(e) => {
            output.abandon();
            return Err(e);
        }
    };
    output.commit()?;
    progress.finish_disk(&disk.name);
    let format = image_format(target);
    Ok(RestoreReport {
        snapshot: snapshot.id.clone(),
        disk: disk.name.clone(),
        target: target.display().to_string(),
        virtual_size: disk.virtual_size,
        bytes_written: written,
        chunks_total: index.len() as u64,
        chunks_zero: index.iter().filter(|id| id.is_zero_mark()).count() as u64,
        image_digest: digest,
        format,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Fetches, checks and writes every data chunk; returns the bytes written.
fn write_chunks(
    repo: &Repository,
    disk: &DiskMeta,
    index: &[ChunkId],
    output: &Output,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<u64, EngineError> {
    let threads = options.threads.max(1);
    let stop = never();
    let cancel = options.cancel.as_ref().unwrap_or(&stop);
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
        for _ in 0..threads {
            let (job_rx, done_tx, failed) = (job_rx.clone(), done_tx.clone(), &failed);
            scope.spawn(move || {
                let mut decoder = ChunkDecoder::new();
                let mut buf = AlignedBuf::new(disk.chunk_size as usize);
                for (i, id) in job_rx {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let result = restore_chunk(repo, disk, i, &id, output, &mut decoder, &mut buf);
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
            let done = select! {
                recv(done_rx) -> done => done,
                recv(cancel) -> _ => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(EngineError::Cancelled);
                }
            };
            match done {
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

/// Fetches chunk `i`, decodes and checks it into `buf` (chunk-sized, page-aligned) and writes
/// it; a zero chunk is written only to block devices (files keep a hole).
fn restore_chunk(
    repo: &Repository,
    disk: &DiskMeta,
    i: u64,
    id: &ChunkId,
    output: &Output,
    decoder: &mut ChunkDecoder,
    buf: &mut AlignedBuf,
) -> Result<(u64, usize), EngineError> {
    let offset = i * u64::from(disk.chunk_size);
    let expected = disk.chunk_len(i);
    let out = &mut buf.as_mut_slice()[..disk.chunk_size as usize];
    if id.is_zero_mark() {
        out[..expected].fill(0);
    } else {
        fetch_and_decode(repo, disk, offset, id, decoder, out, expected)?;
    }
    output.write_data(&out[..expected], offset).map_err(|e| {
        EngineError::io(
            format!("writing {} at offset {offset}", output.shown.display()),
            e,
        )
    })?;
    Ok((i, expected))
}

/// Gets chunk `id` (at `offset` of `disk`) and decodes it into `out`, checking its id and
/// that it holds exactly `expected` bytes.
fn fetch_and_decode(
    repo: &Repository,
    disk: &DiskMeta,
    offset: u64,
    id: &ChunkId,
    decoder: &mut ChunkDecoder,
    out: &mut [u8],
    expected: usize,
) -> Result<(), EngineError> {
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
    let len = decoder.decode_into(&object, id, out).map_err(corrupt)?;
    if len != expected {
        return Err(corrupt(
            crate::chunk_codec::ChunkDecodeError::LengthMismatch {
                payload: len,
                raw: expected,
            },
        ));
    }
    Ok(())
}

/// Length of the leading [`BUFFER_ALIGN`] blocks of `bytes` that are all zero (`zero`) or
/// that are not (a short last block is a block too).
fn leading_blocks(bytes: &[u8], zero: bool) -> usize {
    bytes
        .chunks(BUFFER_ALIGN)
        .take_while(|block| is_all_zero(block) == zero)
        .map(<[u8]>::len)
        .sum()
}

/// `path` opened for writing with O_DIRECT, or `None` where that is refused (tmpfs, some
/// network filesystems).
fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// `qcow2` when the image at `path` starts with the qcow2 magic, else `raw`.
fn image_format(path: &Path) -> &'static str {
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|f| f.read_exact_at(&mut magic, 0));
    match read {
        Ok(()) if &magic == b"QFI\xfb" => "qcow2",
        _ => "raw",
    }
}

/// The start of the temporary file names of restores to `file_name`:
/// `.NAME.ferry-restore-<pid>-<random>`, the pid telling whether the restore still runs.
fn temp_prefix(file_name: &str) -> String {
    format!(".{file_name}.ferry-restore-")
}

/// Removes the temporary files that restores to `file_name` in `dir` left behind when they
/// were killed (SIGKILL, a crash): those whose process no longer runs on this host. Those of
/// running restores, and names without a pid, are left alone.
fn remove_stale_temps(dir: &Path, file_name: &str) {
    let prefix = temp_prefix(file_name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| crate::lock::pid_of_dead_owner(n, &prefix));
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if let Some(pid) = pid
            && is_file
        {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!(
                    "removed {}, left by an interrupted restore (pid {pid})",
                    path.display()
                ),
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// What a restore target path names. Symbolic links are followed only to block devices
/// (`/dev/disk/by-id/…`, `/dev/VG/LV`); any other link is refused rather than replaced or
/// written through, and so are directories, character devices, FIFOs and sockets (replacing
/// `/dev/null` with a file, or blocking on a FIFO, must never happen).
enum TargetKind {
    Missing,
    File,
    BlockDevice,
    /// Refused whatever the flags: a description ("a directory", "a FIFO", ...).
    Other(String),
}

impl TargetKind {
    fn of(target: &Path) -> std::io::Result<TargetKind> {
        let meta = match std::fs::symlink_metadata(target) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TargetKind::Missing),
            Err(e) => return Err(e),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let points_to = std::fs::read_link(target)?;
            return Ok(match std::fs::metadata(target) {
                Ok(meta) if meta.file_type().is_block_device() => TargetKind::BlockDevice,
                _ => TargetKind::Other(format!(
                    "a symbolic link (to {}); name the file itself",
                    points_to.display()
                )),
            });
        }
        Ok(if kind.is_file() {
            TargetKind::File
        } else if kind.is_block_device() {
            TargetKind::BlockDevice
        } else if kind.is_dir() {
            TargetKind::Other("a directory".to_owned())
        } else if kind.is_char_device() {
            TargetKind::Other("a character device".to_owned())
        } else if kind.is_fifo() {
            TargetKind::Other("a FIFO".to_owned())
        } else {
            TargetKind::Other("a socket".to_owned())
        })
    }
}

/// Where restored bytes go: a temporary file renamed over the target on success, or a block
/// device written in place (zero chunks written as zeros, since a device has no holes).
struct Output {
    file: File,
    /// The same file opened with O_DIRECT, when the target allows it.
    direct: Option<File>,
    /// Cleared when a direct write is refused (EINVAL): the page cache is used from then on.
    direct_ok: AtomicBool,
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
        match TargetKind::of(target).map_err(|e| refuse(&e.to_string()))? {
            TargetKind::BlockDevice if !overwrite => {
                return Err(refuse("is a block device (pass --force to overwrite it)"));
            }
            TargetKind::BlockDevice => return Output::open_device(target, size),
            TargetKind::Missing if target.as_os_str().as_encoded_bytes().ends_with(b"/") => {
                return Err(refuse(
                    "ends with '/' but is no directory; name the file to create",
                ));
            }
            TargetKind::Missing => {}
            TargetKind::File if !overwrite => {
                return Err(refuse("already exists (pass --force to replace it)"));
            }
            TargetKind::File => {}
            TargetKind::Other(what) => {
                return Err(refuse(&format!(
                    "is {what}; Ferry restores into a new or existing regular file, or a block device"
                )));
            }
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = target
            .file_name()
            .ok_or_else(|| refuse("has no file name"))?
            .to_string_lossy();
        remove_stale_temps(&dir, &file_name);
        let temp = dir.join(format!(
            "{}{}-{:08x}",
            temp_prefix(&file_name),
            std::process::id(),
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
            direct: open_direct(&temp),
            direct_ok: AtomicBool::new(true),
            shown: target.to_owned(),
            temp: Some(temp),
        })
    }

    /// A block device written in place: it must hold at least `size` bytes.
    fn open_device(target: &Path, size: u64) -> Result<Output, EngineError> {
        let refuse = |reason: String| EngineError::RestoreTarget {
            path: target.to_owned(),
            reason,
        };
        let file = OpenOptions::new()
            .write(true)
            .open(target)
            .map_err(|e| refuse(e.to_string()))?;
        let device_size = std::io::Seek::seek(&mut &file, std::io::SeekFrom::End(0))
            .map_err(|e| refuse(e.to_string()))?;
        if device_size < size {
            return Err(refuse(format!(
                "block device holds {device_size} bytes, the disk needs {size}"
            )));
        }
        Ok(Output {
            file,
            direct: open_direct(target),
            direct_ok: AtomicBool::new(true),
            shown: target.to_owned(),
            temp: None,
        })
    }

    /// Writes a data chunk at `offset`. Into a new file, runs of all-zero 4 KiB blocks are
    /// skipped and stay holes (as `cp` and `qemu-img convert` leave them); a block device gets
    /// every byte.
    fn write_data(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        if self.temp.is_none() {
            return self.write_at(bytes, offset);
        }
        let mut pos = 0;
        while pos < bytes.len() {
            pos += leading_blocks(&bytes[pos..], true);
            let run = leading_blocks(&bytes[pos..], false);
            if run > 0 {
                self.write_at(&bytes[pos..pos + run], offset + pos as u64)?;
            }
            pos += run;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset`: through the O_DIRECT descriptor when offset, length and
    /// buffer are aligned (and direct writes were not refused), else through the page cache.
    /// A direct write that fails with EINVAL is redone whole through the page cache.
    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        let aligned = offset.is_multiple_of(BUFFER_ALIGN as u64)
            && bytes.len().is_multiple_of(BUFFER_ALIGN)
            && (bytes.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN);
        if let Some(direct) = &self.direct
            && aligned
            && self.direct_ok.load(Ordering::Relaxed)
        {
            match direct.write_all_at(bytes, offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_ok.store(false, Ordering::Relaxed);
                    say_once(
                        &DIRECT_WRITE_REFUSED,
                        &format!(
                            "O_DIRECT writes refused for {}; writing through the page cache",
                            self.shown.display()
                        ),
                    );
                }
                other => return other,
            }
        }
        self.file.write_all_at(bytes, offset)
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
