//! `ferry recover`: undo what an interrupted domain backup left behind.
//!
//! Two sources of truth, both used: the journal (what Ferry recorded before changing a domain)
//! and the live disk chains (a disk whose active image carries [`OVERLAY_MARK`] and has a
//! backing image is on a Ferry overlay, journal or not). A record whose process is still alive
//! belongs to a backup in progress and is left alone.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferry_engine::NoProgress;
use serde::Serialize;
use virt::domain::Domain;

use crate::libvirt::chain::{merge_into_base, remove_temporary};
use crate::libvirt::journal::{Entry, Journal};
use crate::libvirt::{Hypervisor, OVERLAY_MARK, domain_name, domain_xml, ffi, is_running};

/// What recovery did for one domain.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub domain: String,
    /// Disks merged back from an overlay.
    pub merged: Vec<String>,
    /// Temporary files deleted.
    pub removed: Vec<PathBuf>,
}

/// Recovers every domain (or only `only`), returning what was done. Fails, after trying
/// everything, if any domain could not be brought back.
pub fn recover(hv: &Hypervisor, journal: &Journal, only: Option<&str>) -> Result<Vec<Recovered>> {
    let mut done = Vec::new();
    let mut failures = Vec::new();
    let mut handled_uuids = Vec::new();
    for entry in journal.entries()? {
        if only.is_some_and(|name| name != entry.domain) {
            continue;
        }
        if entry.pid != std::process::id() && process_alive(entry.pid) {
            log::warn!(
                "domain {}: a backup (pid {}) is still running; leaving it alone",
                entry.domain,
                entry.pid
            );
            handled_uuids.push(entry.uuid.clone());
            continue;
        }
        handled_uuids.push(entry.uuid.clone());
        match recover_entry(hv, journal, &entry) {
            Ok(r) => done.push(r),
            Err(e) => failures.push(format!("{}: {e:#}", entry.domain)),
        }
    }
    for domain in hv.running_domains()? {
        let name = domain_name(&domain);
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let uuid = domain.uuid_string().unwrap_or_default();
        if handled_uuids.contains(&uuid) {
            continue;
        }
        match recover_live_chain(&domain) {
            Ok(Some(r)) => done.push(r),
            Ok(None) => {}
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("recovery incomplete: {}", failures.join("; "));
    }
    Ok(done)
}

fn recover_entry(hv: &Hypervisor, journal: &Journal, entry: &Entry) -> Result<Recovered> {
    let mut report = Recovered {
        domain: entry.domain.clone(),
        merged: Vec::new(),
        removed: Vec::new(),
    };
    let domain = hv.domain_by_uuid(&entry.uuid);
    let running = match &domain {
        Some(d) => is_running(d)?,
        None => false,
    };
    if let Some(domain) = domain.as_ref().filter(|_| running) {
        if entry.mode == "push" && ffi::job_progress(domain).is_ok_and(|j| j.running()) {
            ffi::abort_job(domain).context("cannot abort the leftover backup job")?;
        }
        if entry.mode == "overlay" {
            let live = domain_xml::disks(&crate::libvirt::domain_xml(domain)?)?;
            for disk in &entry.disks {
                let on_overlay = live.iter().any(|d| {
                    d.target == disk.target && d.source.as_deref() == Some(&disk.temporary)
                });
                if on_overlay {
                    merge_into_base(domain, &disk.target, &disk.base, &NoProgress)?;
                    report.merged.push(disk.target.clone());
                }
            }
        }
    } else if entry.mode == "overlay" {
        // Shut off (or gone): its persistent definition must not point at an overlay.
        if let Some(domain) = &domain {
            let xml = crate::libvirt::domain_xml(domain)?;
            let stuck: Vec<String> = domain_xml::disks(&xml)?
                .into_iter()
                .filter(|d| {
                    entry
                        .disks
                        .iter()
                        .any(|e| d.source.as_deref() == Some(&e.temporary))
                })
                .map(|d| d.target)
                .collect();
            if !stuck.is_empty() {
                anyhow::bail!(
                    "the domain is shut off with disks {} on Ferry overlays; start it and run \
                     `ferry recover` again",
                    stuck.join(", ")
                );
            }
        }
    }
    for disk in &entry.disks {
        if disk.temporary.exists() {
            remove_temporary(&disk.temporary)?;
            report.removed.push(disk.temporary.clone());
        }
    }
    journal.clear(&entry.uuid)?;
    Ok(report)
}

/// Merges any disk of a running domain that sits on a Ferry overlay the journal does not know.
fn recover_live_chain(domain: &Domain) -> Result<Option<Recovered>> {
    let xml = crate::libvirt::domain_xml(domain)?;
    let mut report = Recovered {
        domain: domain_name(domain),
        merged: Vec::new(),
        removed: Vec::new(),
    };
    for disk in domain_xml::disks(&xml)? {
        let (Some(source), Some(backing)) = (&disk.source, &disk.backing) else {
            continue;
        };
        if !source.to_string_lossy().contains(OVERLAY_MARK) {
            continue;
        }
        merge_into_base(domain, &disk.target, backing, &NoProgress)?;
        remove_temporary(source)?;
        report.merged.push(disk.target.clone());
        report.removed.push(source.clone());
    }
    Ok((!report.merged.is_empty()).then_some(report))
}

/// Whether a process with this pid runs a `ferry` binary.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "ferry")
}
