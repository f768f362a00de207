//! `ferry recover`: undo what an interrupted domain backup left behind.
//!
//! Two sources of truth, both used: the journal (what Ferry recorded before changing a domain)
//! and the live disk chains (a disk whose active image carries [`OVERLAY_MARK`] and has a
//! backing image is on a Ferry overlay, journal or not). A domain whose journal lock is held
//! belongs to a backup in progress and is left alone. Nothing is ever deleted that does not
//! carry Ferry's temporary-file mark, and an overlay is deleted only after its disk is merged
//! back (or was never switched onto it): when the domain cannot be found, the files are kept.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ferry_engine::NoProgress;
use serde::Serialize;
use virt::domain::Domain;

use crate::libvirt::chain::{merge_into_base, remove_temporary};
use crate::libvirt::journal::{DomainLock, Entry, Journal};
use crate::libvirt::{
    Hypervisor, OVERLAY_MARK, domain_name, domain_xml, is_ferry_temporary, is_running,
};

/// What recovery did for one domain.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub domain: String,
    /// Disks merged back from an overlay.
    pub merged: Vec<String>,
    /// Temporary files deleted.
    pub removed: Vec<PathBuf>,
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let merged = match self.merged.as_slice() {
            [] => "nothing".to_owned(),
            disks => disks.join(", "),
        };
        write!(
            f,
            "domain {}: merged {merged} back; removed {} temporary file(s)",
            self.domain,
            self.removed.len()
        )
    }
}

/// Recovers every domain (or only `only`), returning what was done. `held` is a domain lock
/// the caller already holds (a backup recovering its own domain first). Fails, after trying
/// everything, if any domain could not be brought back.
pub fn recover(
    hv: &Hypervisor,
    journal: &Journal,
    only: Option<&str>,
    held: Option<&DomainLock>,
) -> Result<Vec<Recovered>> {
    let mut done = Vec::new();
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    let (entries, damaged) = journal.entries()?;
    for (uuid, error) in damaged {
        let ours = only.is_none() || held.is_some_and(|h| h.uuid == uuid);
        if ours {
            failures.push(error);
        }
    }
    for entry in entries {
        if only.is_some_and(|name| name != entry.domain) {
            continue;
        }
        seen.push(entry.uuid.clone());
        if !entry.connect.is_empty() && entry.connect != hv.uri() {
            failures.push(format!(
                "{}: its backup went through {}; run `ferry recover --connect {}`",
                entry.domain, entry.connect, entry.connect
            ));
            continue;
        }
        let Some(_lock) = claim(journal, &entry.uuid, held)? else {
            log::warn!(
                "domain {}: a backup is in progress; leaving it alone",
                entry.domain
            );
            continue;
        };
        match recover_entry(hv, journal, &entry) {
            Ok(r) => done.push(r),
            Err(e) => failures.push(format!("{}: {e:#}", entry.domain)),
        }
    }
    for domain in hv.running_domains()? {
        let name = domain_name(&domain);
        let uuid = domain.uuid_string().unwrap_or_default();
        if only.is_some_and(|o| o != name) || seen.contains(&uuid) {
            continue;
        }
        let Some(_lock) = claim(journal, &uuid, held)? else {
            continue;
        };
        match recover_live_chain(&domain) {
            Ok(Some(r)) => done.push(r),
            Ok(None) => {}
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("recovery incomplete: {}", failures.join("; "));
    }
    Ok(done)
}

/// The domain's lock: the caller's when it holds it, else a fresh one if free.
fn claim(journal: &Journal, uuid: &str, held: Option<&DomainLock>) -> Result<Option<Claim>> {
    if held.is_some_and(|h| h.uuid == uuid) {
        return Ok(Some(Claim::Held));
    }
    Ok(journal.try_lock(uuid)?.map(Claim::Taken))
}

/// Keeps a taken lock alive for the duration of one domain's recovery.
enum Claim {
    Held,
    Taken(#[allow(dead_code)] DomainLock),
}

fn recover_entry(hv: &Hypervisor, journal: &Journal, entry: &Entry) -> Result<Recovered> {
    let mut report = Recovered {
        domain: entry.domain.clone(),
        merged: Vec::new(),
        removed: Vec::new(),
    };
    let Some(domain) = hv.domain_by_uuid(&entry.uuid)? else {
        let kept: Vec<String> = entry
            .disks
            .iter()
            .filter(|d| d.temporary.exists())
            .map(|d| d.temporary.display().to_string())
            .collect();
        bail!(
            "the domain no longer exists; its temporary files are kept ({}): an overlay holds \
             guest writes newer than its base (merge it with `qemu-img commit`), then delete \
             the journal entry {}",
            kept.join(", "),
            journal.entry_path(&entry.uuid).display()
        );
    };
    let live = domain_xml::disks(&crate::libvirt::domain_xml(&domain)?)?;
    let on_temporary = |target: &str, temporary: &std::path::Path| {
        live.iter()
            .any(|d| d.target == target && d.source.as_deref() == Some(temporary))
    };
    if is_running(&domain)? {
        if entry.mode == "push" {
            // The lock is ours and the recorded backup is dead: a running job is its leftover.
            crate::libvirt::push::abort_if_running(&domain)?;
        }
        for disk in &entry.disks {
            if entry.mode == "overlay" && on_temporary(&disk.target, &disk.temporary) {
                merge_into_base(
                    &domain,
                    &disk.target,
                    &disk.temporary,
                    &disk.base,
                    &NoProgress,
                )?;
                report.merged.push(disk.target.clone());
            }
        }
    } else {
        let stuck: Vec<&str> = entry
            .disks
            .iter()
            .filter(|d| on_temporary(&d.target, &d.temporary))
            .map(|d| d.target.as_str())
            .collect();
        if !stuck.is_empty() {
            bail!(
                "the domain is shut off with disks {} on Ferry overlays; start it and run \
                 `ferry recover` again",
                stuck.join(", ")
            );
        }
    }
    for disk in &entry.disks {
        if disk.temporary.exists() && is_ferry_temporary(&disk.temporary) {
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
        merge_into_base(domain, &disk.target, source, backing, &NoProgress)?;
        remove_temporary(source)?;
        report.merged.push(disk.target.clone());
        report.removed.push(source.clone());
    }
    Ok((!report.merged.is_empty()).then_some(report))
}
