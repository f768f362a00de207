//! Merging a temporary overlay back into its base: active block commit, wait until the two
//! are in sync, pivot, and check that the live disk is on the base again.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_engine::Progress;
use virt::domain::Domain;

use crate::libvirt::domain_xml;
use crate::libvirt::ffi::{self, codes};

/// Longest wait for one commit to become ready (it copies only what the guest wrote while
/// the base was frozen, so this is generous).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Interval between block job polls.
const POLL: Duration = Duration::from_millis(20);

/// Merges the overlay `top` of disk `target` into its immediate backing image `base` and
/// pivots the disk onto `base`. Refuses when the disk's active layer is not `top` over `base`
/// (someone else changed the chain). Works whether or not a commit job is already running (a
/// crashed Ferry may have started one). The commit's progress goes to `progress`.
pub fn merge_into_base(
    domain: &Domain,
    target: &str,
    top: &Path,
    base: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let failed = || {
        format!(
            "cannot merge the overlay of disk {target} back into {}",
            base.display()
        )
    };
    let live = domain_xml::disks(&crate::libvirt::domain_xml(domain)?)?;
    let disk = live
        .iter()
        .find(|d| d.target == target)
        .with_context(|| format!("disk {target} vanished from the domain"))?;
    if disk.source.as_deref() != Some(top) || disk.backing.as_deref() != Some(base) {
        bail!(
            "disk {target} is on {} backed by {}, not on Ferry's overlay {} over {}; not touching it",
            disk.source.as_deref().unwrap_or(Path::new("?")).display(),
            disk.backing
                .as_deref()
                .unwrap_or(Path::new("nothing"))
                .display(),
            top.display(),
            base.display()
        );
    }
    match ffi::block_job(domain, target).with_context(failed)? {
        Some(job) if job.kind == ffi::BLOCK_JOB_ACTIVE_COMMIT => {}
        Some(job) => bail!(
            "disk {target} is busy with another block job (type {}); not touching it",
            job.kind
        ),
        None => ffi::block_commit_active(domain, target).with_context(failed)?,
    }
    let started = Instant::now();
    let label = format!("commit {target}");
    let mut shown = 0u64;
    progress.start_disk(&label, 0);
    loop {
        match ffi::block_job(domain, target).with_context(failed)? {
            Some(job) => {
                progress.set_total(job.end);
                progress.advance(job.cur.saturating_sub(shown));
                shown = shown.max(job.cur);
                if job.ready_to_pivot() {
                    break;
                }
            }
            None => bail!("the commit job of disk {target} disappeared before it was ready"),
        }
        if started.elapsed() > COMMIT_TIMEOUT {
            bail!("the commit of disk {target} was not ready after {COMMIT_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
    progress.finish_disk(&label);
    pivot(domain, target).with_context(failed)?;
    check_on_base(domain, target, base)
}

/// Pivots, retrying while libvirt says the job is not ready yet (it can lag the job info).
fn pivot(domain: &Domain, target: &str) -> Result<(), ffi::LibvirtError> {
    let started = Instant::now();
    loop {
        match ffi::block_job_abort(domain, target, true) {
            Ok(()) => return Ok(()),
            Err(e) if e.code == codes::BLOCK_COPY_ACTIVE && started.elapsed() < COMMIT_TIMEOUT => {
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks that the live disk `target` reads from `base` with no overlay above it.
pub fn check_on_base(domain: &Domain, target: &str, base: &Path) -> Result<()> {
    let xml = crate::libvirt::domain_xml(domain)?;
    let disk = domain_xml::disks(&xml)?
        .into_iter()
        .find(|d| d.target == target)
        .with_context(|| format!("disk {target} vanished from the domain"))?;
    if disk.source.as_deref() != Some(base) || disk.backing.is_some() {
        bail!(
            "after the pivot, disk {target} is on {} (expected {} with no backing image)",
            disk.source.as_deref().unwrap_or(Path::new("?")).display(),
            base.display()
        );
    }
    Ok(())
}

/// Deletes a temporary file, treating "already gone" as done.
pub fn remove_temporary(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
    }
}
