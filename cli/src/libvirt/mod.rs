//! libvirt orchestration: the two live backup flows of libvirt's "live full disk backup" guide
//! (overlay and push), recovery after a crash, and the durable journal they share.
//!
//! - [`ffi`]: the libvirt calls the `virt` crate lacks (the only `unsafe` code in the binary).
//! - [`domain_xml`]: disks and chains from a domain's XML.
//! - [`journal`]: what is in flight, durably, for `ferry recover`.
//! - [`chain`]: merging an overlay back (active commit, wait, pivot, check).
//! - [`overlay`], [`push`]: the two backup modes; [`recover`]: undoing what a crash left.

pub mod chain;
pub mod domain_xml;
pub mod ffi;
pub mod journal;
pub mod overlay;
pub mod push;
pub mod qcow2;
pub mod quiesce;
pub mod recover;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use virt::connect::Connect;
use virt::domain::Domain;

use crate::libvirt::domain_xml::DiskDef;

/// Marker in every overlay file name Ferry creates; recovery finds leftovers by it.
pub const OVERLAY_MARK: &str = ".ferry-overlay-";
/// Marker in every push-mode scratch file name.
pub const SCRATCH_MARK: &str = ".ferry-scratch-";

/// An open libvirt connection.
pub struct Hypervisor {
    conn: Connect,
    uri: String,
}

impl Hypervisor {
    pub fn open(uri: &str) -> Result<Hypervisor> {
        // libvirt prints every error to stderr by default; Ferry reports them itself.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri))
            .map_err(ffi::LibvirtError::from)
            .with_context(|| format!("cannot connect to libvirt at {uri}"))?;
        Ok(Hypervisor {
            conn,
            uri: uri.to_owned(),
        })
    }

    pub fn domain(&self, name: &str) -> Result<Domain> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(ffi::LibvirtError::from)
            .with_context(|| format!("domain {name:?} not found at {}", self.uri))
    }

    /// Every running domain.
    pub fn running_domains(&self) -> Result<Vec<Domain>> {
        self.conn
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(ffi::LibvirtError::from)
            .context("cannot list domains")
    }

    /// A domain by UUID string; `None` only when libvirt says no such domain exists.
    pub fn domain_by_uuid(&self, uuid: &str) -> Result<Option<Domain>> {
        match self.conn.lookup_domain_by_uuid_string(uuid) {
            Ok(domain) => Ok(Some(domain)),
            Err(e) if e.code().to_raw() == virt::sys::VIR_ERR_NO_DOMAIN => Ok(None),
            Err(e) => Err(ffi::LibvirtError::from(e))
                .with_context(|| format!("cannot look up domain {uuid}")),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }
}

/// Whether `path` is named like a temporary file Ferry creates (overlay or scratch copy).
pub fn is_ferry_temporary(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.contains(OVERLAY_MARK) || n.contains(SCRATCH_MARK))
}

/// The live (or, when shut off, the persistent) XML of a domain.
pub fn domain_xml(domain: &Domain) -> Result<String> {
    domain
        .xml_desc(0)
        .map_err(ffi::LibvirtError::from)
        .context("cannot read the domain XML")
}

pub fn domain_name(domain: &Domain) -> String {
    domain.name().unwrap_or_else(|_| "?".to_owned())
}

pub fn is_running(domain: &Domain) -> Result<bool> {
    domain
        .is_active()
        .map_err(ffi::LibvirtError::from)
        .context("cannot read the domain state")
}

/// The disks to back up: every `device='disk'` when `wanted` is empty, else exactly the named
/// targets. Refuses, naming the disk, what Ferry cannot back up: non-file disks, formats other
/// than raw and qcow2, and a disk still on a Ferry overlay (left by a crash: `ferry recover`).
/// Disks with a backing chain are selected; modes that copy image files refuse them with
/// [`require_single_images`].
pub fn select_disks(xml: &str, wanted: &[String]) -> Result<Vec<DiskDef>> {
    let all = domain_xml::disks(xml)?;
    for target in wanted {
        if !all.iter().any(|d| &d.target == target) {
            let known: Vec<&str> = all.iter().map(|d| d.target.as_str()).collect();
            bail!(
                "the domain has no disk {target:?} (it has: {})",
                known.join(", ")
            );
        }
    }
    let selected: Vec<DiskDef> = all
        .into_iter()
        .filter(|d| {
            if wanted.is_empty() {
                d.device == "disk"
            } else {
                wanted.contains(&d.target)
            }
        })
        .collect();
    if selected.is_empty() {
        bail!("the domain has no disk to back up");
    }
    let refusals: Vec<String> = selected.iter().filter_map(unsupported).collect();
    if let Some(first) = refusals.first() {
        let supported: Vec<&str> = selected
            .iter()
            .filter(|d| unsupported(d).is_none())
            .map(|d| d.target.as_str())
            .collect();
        if wanted.is_empty() && !supported.is_empty() {
            bail!(
                "{}; to back up the other disks, name them: --disk {}",
                refusals.join("; "),
                supported.join(" --disk ")
            );
        }
        bail!("{first}");
    }
    for disk in &selected {
        let source = disk.source.as_deref().expect("supported disks have images");
        if disk.backing.is_some() && source.to_string_lossy().contains(OVERLAY_MARK) {
            bail!(
                "disk {} is still on a Ferry overlay ({}); run `ferry recover`",
                disk.target,
                source.display()
            );
        }
    }
    Ok(selected)
}

/// Why Ferry cannot back up `disk`, if it cannot: not a disk device, neither on a file nor on
/// a block device (network, volume), an empty drive, or a format other than raw and qcow2.
fn unsupported(disk: &DiskDef) -> Option<String> {
    let t = &disk.target;
    if disk.device != "disk" {
        return Some(format!("{t} is a {} device, not a disk", disk.device));
    }
    if disk.source_type != "file" && disk.source_type != "block" {
        return Some(format!(
            "disk {t} is a {} disk; Ferry backs up file and block disks (raw or qcow2)",
            disk.source_type
        ));
    }
    if disk.source.is_none() {
        return Some(format!("disk {t} has no image (empty drive)"));
    }
    match disk.format.as_deref() {
        Some("raw") | Some("qcow2") => None,
        other => Some(format!(
            "disk {t} has format {}; Ferry backs up raw and qcow2 images",
            other.unwrap_or("unknown")
        )),
    }
}

/// Why a backup copies image files rather than what the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCopy {
    /// Overlay mode: the frozen images are copied.
    Overlay,
    /// The domain is shut off: its images are copied.
    Offline,
}

/// Refuses disks whose image file is not the whole, frozen disk, for backups that copy image
/// files: a backing chain (shown in the domain XML, or named in the image header, since a
/// shut-off domain's XML may not show it), a qcow2 external data file, a storage slice (the
/// disk is a byte range of the file), or a shareable disk (another domain may write it). Push mode copies what the guest sees, so the error says to
/// use it.
pub fn require_single_images(disks: &[DiskDef], copy: FileCopy) -> Result<()> {
    let advice = match copy {
        FileCopy::Overlay => "use --mode push, which copies what the guest sees",
        FileCopy::Offline => {
            "the domain is shut off, so its image files are copied; start it and use --mode push, \
             or flatten the image (qemu-img convert)"
        }
    };
    for disk in disks {
        let t = &disk.target;
        let source = disk.source.as_deref().expect("selected disks have images");
        if disk.shareable {
            bail!(
                "disk {t} ({}) is shareable: another domain may be writing its image, so the \
                 image file cannot be copied as one point in time: {advice}",
                source.display()
            );
        }
        if let Some((offset, size)) = &disk.storage_slice {
            bail!(
                "disk {t} ({}) is the slice of {size} bytes at offset {offset} of its image file, \
                 so the file is not the disk: {advice}",
                source.display()
            );
        }
        // The chain in the XML first: it needs no access to the image.
        let from_xml = disk.backing.as_ref().map(|b| b.display().to_string());
        let header = match from_xml {
            Some(_) => qcow2::Dependencies::default(),
            None => qcow2::dependencies(source).with_context(|| {
                format!("cannot read the image of disk {t}: {}", source.display())
            })?,
        };
        if let Some(backing) = from_xml.or(header.backing) {
            bail!(
                "disk {t} ({}) has a backing image ({backing}), so its image file alone is not the \
                 whole disk: {advice}",
                source.display()
            );
        }
        if let Some(data_file) = header.data_file {
            bail!(
                "disk {t} ({}) keeps its data in an external data file ({data_file}), so its \
                 image file alone is not the whole disk: {advice}",
                source.display()
            );
        }
    }
    Ok(())
}

/// A temporary file name beside (or in `dir`) for the image `base`:
/// `<dir>/<base file name><mark><unix time>-<random>.<ext>`.
pub fn temporary_path(base: &Path, dir: Option<&Path>, mark: &str, ext: &str) -> Result<PathBuf> {
    let name = base
        .file_name()
        .with_context(|| format!("{} has no file name", base.display()))?;
    let dir = match dir {
        Some(d) => d.to_owned(),
        // Beside a device is /dev (or /dev/VG): no place for a file of the disk's size.
        None if is_block_device(base) => bail!(
            "{} is a block device: name a directory for its temporary {} ({})",
            base.display(),
            if mark == OVERLAY_MARK {
                "overlay"
            } else {
                "scratch copy"
            },
            if mark == OVERLAY_MARK {
                "--overlay-dir DIR"
            } else {
                "--scratch-dir DIR"
            }
        ),
        None => base
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let path = dir.join(format!(
        "{}{mark}{}-{:08x}.{ext}",
        name.to_string_lossy(),
        unix_now(),
        rand::random::<u32>()
    ));
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    Ok(path)
}

/// Whether `path` is (or links to) a block device.
fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(disks: &str) -> String {
        format!("<domain><devices>{disks}</devices></domain>")
    }

    const RAW: &str = "<disk type='file' device='disk'><driver type='raw'/><source file='/i/a.raw'/><target dev='vda'/></disk>";
    const QCOW: &str = "<disk type='file' device='disk'><driver type='qcow2'/><source file='/i/b.qcow2'/><target dev='vdb'/></disk>";

    #[test]
    fn selects_and_refuses_by_name() {
        let both = xml(&format!("{RAW}{QCOW}"));
        assert_eq!(select_disks(&both, &[]).unwrap().len(), 2);
        let vdb = select_disks(&both, &["vdb".into()]).unwrap();
        assert_eq!(vdb[0].target, "vdb");
        let err = select_disks(&both, &["vdz".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("vdz") && err.contains("vda, vdb"), "{err}");

        let net = xml(
            "<disk type='network' device='disk'><driver type='raw'/><source protocol='nbd'/><target dev='vda'/></disk>",
        );
        assert!(
            select_disks(&net, &[])
                .unwrap_err()
                .to_string()
                .contains("network")
        );
        let on_overlay = xml(
            "<disk type='file' device='disk'><driver type='qcow2'/><source file='/i/x.ferry-overlay-1-a.qcow2'/><backingStore type='file'><source file='/i/x'/></backingStore><target dev='vda'/></disk>",
        );
        assert!(
            select_disks(&on_overlay, &[])
                .unwrap_err()
                .to_string()
                .contains("ferry recover")
        );
        let chained = xml(
            "<disk type='file' device='disk'><driver type='qcow2'/><source file='/i/top.qcow2'/><backingStore type='file'><source file='/i/base.raw'/></backingStore><target dev='vda'/></disk>",
        );
        let disks = select_disks(&chained, &[]).unwrap();
        let err = require_single_images(&disks, FileCopy::Overlay)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/i/base.raw") && err.contains("--mode push"),
            "{err}"
        );
        let vmdk = xml(
            "<disk type='file' device='disk'><driver type='vmdk'/><source file='/i/x'/><target dev='vda'/></disk>",
        );
        assert!(
            select_disks(&vmdk, &[])
                .unwrap_err()
                .to_string()
                .contains("vmdk")
        );
        // A shareable disk may be written by another domain: its file is no point in time.
        let shared = xml(
            "<disk type='file' device='disk'><driver type='raw'/><source file='/i/s.raw'/><target dev='vda'/><shareable/></disk>",
        );
        let disks = select_disks(&shared, &[]).unwrap();
        for copy in [FileCopy::Overlay, FileCopy::Offline] {
            let err = require_single_images(&disks, copy).unwrap_err().to_string();
            assert!(
                err.contains("shareable") && err.contains("--mode push"),
                "{err}"
            );
        }
        // A storage slice is a byte range of its file: copying the file would store the
        // container, and restore would give back the wrong bytes at the wrong offsets.
        let slice = xml(
            "<disk type='file' device='disk'><driver type='raw'/><source file='/i/c.raw'><slices><slice type='storage' offset='1048576' size='67108864'/></slices></source><target dev='vda'/></disk>",
        );
        let disks = select_disks(&slice, &[]).unwrap();
        for copy in [FileCopy::Overlay, FileCopy::Offline] {
            let err = require_single_images(&disks, copy).unwrap_err().to_string();
            assert!(
                err.contains("slice of 67108864 bytes at offset 1048576")
                    && err.contains("--mode push"),
                "{err}"
            );
        }
        // One unsupported disk among supported ones: the error names what --disk can take.
        let mixed = xml(&format!(
            "{RAW}<disk type='network' device='disk'><driver type='raw'/><source protocol='nbd' name='x'/><target dev='vdc'/></disk>{QCOW}"
        ));
        let err = select_disks(&mixed, &[]).unwrap_err().to_string();
        assert!(
            err.contains("vdc is a network disk") && err.contains("--disk vda --disk vdb"),
            "{err}"
        );
        assert_eq!(
            select_disks(&mixed, &["vda".into(), "vdb".into()])
                .unwrap()
                .len(),
            2
        );
        let err = select_disks(&mixed, &["vdc".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vdc is a network disk") && !err.contains("--disk"),
            "{err}"
        );
        // A block disk (an LVM volume, say) is selected like a file disk.
        let block = xml(
            "<disk type='block' device='disk'><driver type='raw'/><source dev='/dev/vg/lv'/><target dev='vda'/></disk>",
        );
        let selected = select_disks(&block, &[]).unwrap();
        assert_eq!(selected[0].source.as_deref(), Some(Path::new("/dev/vg/lv")));
    }

    #[test]
    fn temporary_names_carry_the_mark() {
        let p = temporary_path(Path::new("/i/disk.raw"), None, OVERLAY_MARK, "qcow2").unwrap();
        let s = p.to_string_lossy();
        assert!(
            s.starts_with("/i/disk.raw.ferry-overlay-") && s.ends_with(".qcow2"),
            "{s}"
        );
        let q = temporary_path(
            Path::new("/i/d"),
            Some(Path::new("/s")),
            SCRATCH_MARK,
            "raw",
        )
        .unwrap();
        assert!(q.starts_with("/s"));
    }
}
