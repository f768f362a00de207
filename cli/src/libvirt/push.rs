//! Push mode: QEMU writes a point-in-time copy of each disk to a scratch file
//! (`virDomainBackupBegin`), Ferry follows the job to its end, then streams the scratch files
//! into the repository and deletes them. Needs libvirt >= 7.2 and QEMU >= 4.2.
//!
//! The scratch copies are raw images of what the guest sees (for a qcow2 disk too), written in
//! full by QEMU, so the scratch directory needs free space for each disk's virtual size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crossbeam_channel::Receiver;
use ferry_engine::Progress;
use virt::domain::Domain;

use crate::libvirt::chain::remove_temporary;
use crate::libvirt::domain_xml::{DiskDef, escape_attr, per_disk_xml};
use crate::libvirt::ffi::{self, JobEnd};
use crate::libvirt::journal::{EntryDisk, Journal};
use crate::libvirt::overlay::DomainTarget;
use crate::libvirt::quiesce::{self, Quiesce};
use crate::libvirt::{SCRATCH_MARK, temporary_path};

const POLL: Duration = Duration::from_millis(50);

/// A disk being copied by QEMU to a scratch file.
#[derive(Debug, Clone)]
pub struct Scratch {
    pub target: String,
    pub base: PathBuf,
    pub scratch: PathBuf,
    pub virtual_size: u64,
}

/// Starts the push job for `disks` into scratch files (in `scratch_dir` or beside each disk),
/// after checking free space. On error nothing is left: no job, no scratch file, no journal.
pub fn begin(
    target: &DomainTarget<'_>,
    all_disks: &[DiskDef],
    disks: &[DiskDef],
    scratch_dir: Option<&Path>,
    quiesce: Quiesce,
) -> Result<Vec<Scratch>> {
    let DomainTarget {
        domain, journal, ..
    } = *target;
    let uuid = domain.uuid_string().map_err(ffi::LibvirtError::from)?;
    let mut scratches = Vec::new();
    for disk in disks {
        let base = disk.source.clone().context("selected disks have images")?;
        let info = domain
            .block_info(&disk.target, 0)
            .map_err(ffi::LibvirtError::from)
            .with_context(|| format!("cannot read the size of disk {}", disk.target))?;
        scratches.push(Scratch {
            target: disk.target.clone(),
            scratch: temporary_path(&base, scratch_dir, SCRATCH_MARK, "raw")?,
            base,
            virtual_size: info.capacity,
        });
    }
    check_free_space(&scratches)?;
    target.record(
        &uuid,
        "push",
        scratches
            .iter()
            .map(|s| EntryDisk {
                target: s.target.clone(),
                base: s.base.clone(),
                temporary: s.scratch.clone(),
            })
            .collect(),
    )?;
    let xml = backup_xml(all_disks, &scratches);
    let started = quiesce::at_point_in_time(domain, quiesce, |quiesced| match quiesced {
        true => quiesce::with_frozen_filesystems(domain, || ffi::backup_begin(domain, &xml)),
        false => ffi::backup_begin(domain, &xml),
    });
    if let Err(e) = started {
        // No job of ours runs (another job may: it is not ours to abort).
        remove_scratches(&scratches)?;
        journal.clear(&uuid)?;
        return Err(e.context("cannot start the push backup job"));
    }
    Ok(scratches)
}

/// Follows the job until QEMU has written every scratch file. `cancel` disconnecting (a signal)
/// aborts the job. The job's progress goes to `progress`.
pub fn wait(domain: &Domain, cancel: &Receiver<()>, progress: &dyn Progress) -> Result<()> {
    let started = Instant::now();
    let mut shown = 0u64;
    progress.start_disk("QEMU copy", 0);
    loop {
        let job = ffi::job_progress(domain).context("cannot follow the backup job")?;
        if !job.running() {
            break;
        }
        progress.set_total(job.data_total);
        progress.advance(job.data_processed.saturating_sub(shown));
        shown = shown.max(job.data_processed);
        if matches!(
            cancel.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        ) {
            let _ = ffi::abort_job(domain);
            bail!("interrupted: the backup job was aborted");
        }
        std::thread::sleep(POLL);
    }
    progress.finish_disk("QEMU copy");
    match ffi::completed_job(domain).context("cannot read how the backup job ended")? {
        JobEnd::Completed => {
            log::info!(
                "push job completed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        JobEnd::Failed(message) => bail!("the backup job failed: {message}"),
        JobEnd::Cancelled => bail!("the backup job was cancelled"),
        // Without proof of completion the scratch copies may be partial: never store them.
        JobEnd::Unknown => bail!("libvirt did not report how the backup job ended"),
    }
}

/// Aborts the job (ours: [`begin`] started it under the domain lock) if it still runs,
/// deletes the scratch files and clears the journal.
pub fn end(domain: &Domain, scratches: &[Scratch], journal: &Journal) -> Result<()> {
    abort_if_running(domain)?;
    remove_scratches(scratches)?;
    let uuid = domain.uuid_string().map_err(ffi::LibvirtError::from)?;
    journal.clear(&uuid)
}

/// Aborts the domain's job if one runs. The job may finish between the check and the abort:
/// only a job still running after a failed abort is an error.
pub fn abort_if_running(domain: &Domain) -> Result<()> {
    let running = || ffi::job_progress(domain).is_ok_and(|j| j.running());
    if running()
        && let Err(e) = ffi::abort_job(domain)
        && running()
    {
        return Err(anyhow::Error::new(e).context("cannot abort the backup job"));
    }
    Ok(())
}

fn remove_scratches(scratches: &[Scratch]) -> Result<()> {
    let failures: Vec<String> = scratches
        .iter()
        .filter_map(|s| remove_temporary(&s.scratch).err())
        .map(|e| format!("{e:#}"))
        .collect();
    if !failures.is_empty() {
        bail!("cannot delete scratch files: {}", failures.join("; "));
    }
    Ok(())
}

/// Checks each scratch file's size equals its disk's (a truncated copy must not be stored).
pub fn check_complete(scratches: &[Scratch]) -> Result<()> {
    for s in scratches {
        let size = std::fs::metadata(&s.scratch)
            .with_context(|| format!("scratch file {} is missing", s.scratch.display()))?
            .len();
        if size != s.virtual_size {
            bail!(
                "scratch copy of {} holds {size} bytes, the disk {}",
                s.target,
                s.virtual_size
            );
        }
    }
    Ok(())
}

fn check_free_space(scratches: &[Scratch]) -> Result<()> {
    let mut needed: Vec<(PathBuf, u64)> = Vec::new();
    for s in scratches {
        let dir = s.scratch.parent().unwrap_or(Path::new(".")).to_owned();
        match needed.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, n)) => *n += s.virtual_size,
            None => needed.push((dir, s.virtual_size)),
        }
    }
    for (dir, bytes) in needed {
        let stat = rustix::fs::statvfs(&dir)
            .with_context(|| format!("cannot check free space in {}", dir.display()))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < bytes {
            bail!(
                "not enough free space in {} for push-mode scratch copies: {} bytes needed, {} free \
                 (use --scratch-dir, or --mode overlay)",
                dir.display(),
                bytes,
                free
            );
        }
    }
    Ok(())
}

/// The push backup description: a raw scratch target for each selected disk, none for others.
fn backup_xml(all_disks: &[DiskDef], scratches: &[Scratch]) -> String {
    per_disk_xml(
        "domainbackup mode='push'",
        all_disks,
        "backup='no'",
        |disk| {
            scratches.iter().find(|s| s.target == disk.target).map(|s| {
            format!(
                "<disk name='{}' backup='yes' type='file'><target file='{}'/><driver type='raw'/></disk>",
                escape_attr(&s.target),
                escape_attr(&s.scratch.to_string_lossy())
            )
        })
        },
    )
}
