//! Overlay mode: freeze each disk behind a temporary QCOW2 overlay, copy the frozen bases,
//! then merge the overlays back (active commit + pivot) and delete them.
//!
//! Order, and why:
//! 1. journal entry (durable) naming every base and overlay — before anything changes, so a
//!    crash at any later point is recoverable by `ferry recover`;
//! 2. one atomic disk-only snapshot without metadata for all selected disks (one point in time
//!    across disks), quiesced through the guest agent when asked or available;
//! 3. the copy of the frozen bases (the guest keeps writing, into the overlays);
//! 4. always — after success, error, hook failure or signal — commit and pivot each disk, check
//!    the live chain is back on the base, delete the overlay, and clear the journal last.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use virt::domain::Domain;
use virt::sys;

use crate::libvirt::chain::{merge_into_base, remove_temporary};
use crate::libvirt::domain_xml::{self, DiskDef, escape_attr};
use crate::libvirt::ffi;
use crate::libvirt::journal::{Entry, EntryDisk, Journal};
use crate::libvirt::quiesce::{self, Quiesce};
use crate::libvirt::{OVERLAY_MARK, temporary_path};

/// The domain a backup works on, and where it records what it changes.
#[derive(Clone, Copy)]
pub struct DomainTarget<'a> {
    pub domain: &'a Domain,
    pub name: &'a str,
    /// The libvirt URI, recorded in the journal for `recover`.
    pub connect: &'a str,
    pub journal: &'a Journal,
}

impl DomainTarget<'_> {
    /// Records durably, before anything changes, what the backup is about to change (`mode`
    /// `overlay` or `push`), under the domain's `uuid`.
    pub fn record(&self, uuid: &str, mode: &str, disks: Vec<EntryDisk>) -> Result<()> {
        self.journal.write(&Entry {
            domain: self.name.to_owned(),
            uuid: uuid.to_owned(),
            mode: mode.to_owned(),
            pid: std::process::id(),
            connect: self.connect.to_owned(),
            started_unix: crate::libvirt::unix_now(),
            disks,
        })
    }
}

/// A disk frozen behind an overlay.
#[derive(Debug, Clone)]
pub struct Frozen {
    pub target: String,
    pub base: PathBuf,
    pub overlay: PathBuf,
}

/// Freezes `disks` of the running `domain` behind new overlays (in `overlay_dir`, or beside
/// each base). On error nothing is left changed: no overlay, no journal entry.
pub fn freeze(
    target: &DomainTarget<'_>,
    all_disks: &[DiskDef],
    disks: &[DiskDef],
    overlay_dir: Option<&Path>,
    quiesce: Quiesce,
) -> Result<Vec<Frozen>> {
    let DomainTarget {
        domain, journal, ..
    } = *target;
    let uuid = domain.uuid_string().map_err(ffi::LibvirtError::from)?;
    for disk in disks {
        if let Some(job) = ffi::block_job(domain, &disk.target)? {
            bail!(
                "disk {} is already in a block job (type {}); try again when it ends",
                disk.target,
                job.kind
            );
        }
    }
    let mut frozen = Vec::new();
    for disk in disks {
        let base = disk.source.clone().context("selected disks have images")?;
        let overlay = temporary_path(&base, overlay_dir, OVERLAY_MARK, "qcow2")?;
        frozen.push(Frozen {
            target: disk.target.clone(),
            base,
            overlay,
        });
    }
    target.record(
        &uuid,
        "overlay",
        frozen
            .iter()
            .map(|f| EntryDisk {
                target: f.target.clone(),
                base: f.base.clone(),
                temporary: f.overlay.clone(),
            })
            .collect(),
    )?;
    let snapshot_xml = snapshot_xml(all_disks, &frozen);
    let result = quiesce::at_point_in_time(domain, quiesce, |quiesced| {
        take_snapshot(domain, &snapshot_xml, quiesced)
    });
    if let Err(e) = result {
        // An atomic snapshot that failed changed nothing, unless the failure came after QEMU
        // switched (a dropped connection): look before deleting anything.
        let live = domain_xml::disks(&crate::libvirt::domain_xml(domain)?)?;
        let switched: Vec<Frozen> = frozen
            .iter()
            .filter(|f| {
                live.iter()
                    .any(|d| d.target == f.target && d.source.as_deref() == Some(&f.overlay))
            })
            .cloned()
            .collect();
        if !switched.is_empty() {
            thaw(domain, &switched, journal, &ferry_engine::NoProgress)
                .context("the snapshot failed half-way and merging back failed too")?;
        }
        for f in &frozen {
            remove_temporary(&f.overlay)?;
        }
        journal.clear(&uuid)?;
        return Err(e.context("cannot freeze the disks behind overlays (the domain is unchanged)"));
    }
    Ok(frozen)
}

/// Merges every overlay back, deletes them, and clears the journal when all succeeded.
/// Tries every disk even when one fails.
pub fn thaw(
    domain: &Domain,
    frozen: &[Frozen],
    journal: &Journal,
    progress: &dyn ferry_engine::Progress,
) -> Result<()> {
    let uuid = domain.uuid_string().map_err(ffi::LibvirtError::from)?;
    let mut failures = Vec::new();
    for f in frozen {
        let merged = merge_into_base(domain, &f.target, &f.overlay, &f.base, progress)
            .and_then(|()| remove_temporary(&f.overlay));
        if let Err(e) = merged {
            failures.push(format!("{}: {e:#}", f.target));
        }
    }
    if !failures.is_empty() {
        bail!(
            "the domain is still on a temporary overlay ({}); run `ferry recover`",
            failures.join("; ")
        );
    }
    journal.clear(&uuid)
}

fn take_snapshot(domain: &Domain, xml: &str, quiesce: bool) -> Result<(), ffi::LibvirtError> {
    let mut flags = sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        | sys::VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
        | sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
    if quiesce {
        flags |= sys::VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
    }
    domain.create_snapshot_xml(xml, flags)?;
    Ok(())
}

/// The disk-only snapshot: an external overlay for each frozen disk, none for the others.
fn snapshot_xml(all_disks: &[DiskDef], frozen: &[Frozen]) -> String {
    domain_xml::per_disk_xml("domainsnapshot", all_disks, "snapshot='no'", |disk| {
        frozen.iter().find(|f| f.target == disk.target).map(|f| {
            format!(
                "<disk name='{}' snapshot='external'><driver type='qcow2'/><source file='{}'/></disk>",
                escape_attr(&f.target),
                escape_attr(&f.overlay.to_string_lossy())
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_xml_covers_every_disk() {
        let disk = |t: &str, device: &str| DiskDef {
            target: t.into(),
            device: device.into(),
            source_type: "file".into(),
            source: Some(format!("/i/{t}").into()),
            format: Some("raw".into()),
            backing: None,
            readonly: false,
            shareable: false,
            storage_slice: None,
        };
        let all = [
            disk("vda", "disk"),
            disk("vdb", "disk"),
            disk("sda", "cdrom"),
        ];
        let frozen = [Frozen {
            target: "vda".into(),
            base: "/i/vda".into(),
            overlay: "/i/vda.ferry-overlay-1-a.qcow2".into(),
        }];
        assert_eq!(
            snapshot_xml(&all, &frozen),
            "<domainsnapshot><disks><disk name='vda' snapshot='external'><driver type='qcow2'/>\
             <source file='/i/vda.ferry-overlay-1-a.qcow2'/></disk><disk name='vdb' snapshot='no'/>\
             <disk name='sda' snapshot='no'/></disks></domainsnapshot>"
        );
    }
}
