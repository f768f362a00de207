//! Ferry's durable journal of domain changes in flight.
//!
//! Before Ferry changes a domain (puts a disk on a temporary overlay, or starts a push job with
//! scratch files), it records the change here, durably; it removes the record only after the
//! domain is back as it was and the temporary files are gone. A record that survives a crash
//! tells `ferry recover` exactly what to undo.
//!
//! One file per domain, `$FERRY_STATE_DIR/journal/<domain uuid>.json` (default state dir
//! `/var/lib/ferry`), written as temp file, fsync, rename, fsync of the directory; files are
//! 0600 and directories 0700.
//!
//! `<domain uuid>.lock` is `flock`ed exclusively by a backup for its whole run, and tried by
//! `recover` before it touches the domain: a held lock means a backup is in progress (the
//! kernel releases it when the process dies, even by SIGKILL), so recovery never merges an
//! overlay a live backup is still reading, and two backups of one domain never overlap. The
//! lock is taken in `$FERRY_STATE_DIR/locks/` and also in the host-wide [`HOST_LOCK_DIR`]
//! (when it can be created), so processes with different state directories still exclude
//! each other.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferry";

/// Domain locks shared by every Ferry process of this host, whatever its state directory.
pub const HOST_LOCK_DIR: &str = "/run/ferry/locks";

/// What a domain backup changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub domain: String,
    pub uuid: String,
    /// `overlay` or `push`.
    pub mode: String,
    pub pid: u32,
    /// The libvirt URI the domain was reached through.
    #[serde(default)]
    pub connect: String,
    pub started_unix: u64,
    pub disks: Vec<EntryDisk>,
}

/// One disk of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDisk {
    pub target: String,
    /// The disk's own image, which the domain must end up on.
    pub base: PathBuf,
    /// The temporary file: the overlay (overlay mode) or the scratch copy (push mode).
    pub temporary: PathBuf,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    /// Where domain locks are taken: the state directory's, then the host-wide one.
    locks: Vec<PathBuf>,
}

impl Journal {
    /// The journal under `$FERRY_STATE_DIR` (or the default state dir).
    pub fn from_env() -> Journal {
        let state = std::env::var_os("FERRY_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Journal {
            dir: state.join("journal"),
            locks: vec![state.join("locks"), PathBuf::from(HOST_LOCK_DIR)],
        }
    }

    /// The file holding a domain's record.
    pub fn entry_path(&self, uuid: &str) -> PathBuf {
        self.dir.join(format!("{uuid}.json"))
    }

    /// Records `entry` durably, replacing any earlier record of the domain.
    pub fn write(&self, entry: &Entry) -> Result<()> {
        let failed = || format!("cannot write the journal in {}", self.dir.display());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(failed)?;
        let final_path = self.entry_path(&entry.uuid);
        let temp = self.dir.join(format!(".{}.tmp", entry.uuid));
        let bytes = serde_json::to_vec_pretty(entry)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .with_context(failed)?;
        file.write_all(&bytes).with_context(failed)?;
        file.sync_all().with_context(failed)?;
        fs::rename(&temp, &final_path).with_context(failed)?;
        self.sync_dir().with_context(failed)
    }

    /// Removes the record of a domain (no error if there is none).
    pub fn clear(&self, uuid: &str) -> Result<()> {
        match fs::remove_file(self.entry_path(uuid)) {
            Ok(()) => self
                .sync_dir()
                .with_context(|| format!("cannot sync {}", self.dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot clear the journal of domain {uuid}")),
        }
    }

    /// Every record; files that do not read or parse are returned apart, by domain uuid (their
    /// file name), so that one damaged record blocks only its own domain.
    pub fn entries(&self) -> Result<(Vec<Entry>, Vec<DamagedEntry>)> {
        let dir = match fs::read_dir(&self.dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()));
            }
            Err(e) => return Err(e).context(format!("cannot read {}", self.dir.display())),
        };
        let mut entries = Vec::new();
        let mut damaged = Vec::new();
        for item in dir {
            let path = item?.path();
            let (Some(uuid), Some("json")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|e| e.to_str()),
            ) else {
                continue;
            };
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Entry>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(entry) => entries.push(entry),
                Err(e) => damaged.push((
                    uuid.to_owned(),
                    format!("journal file {} is damaged: {e}", path.display()),
                )),
            }
        }
        entries.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok((entries, damaged))
    }

    /// Takes the domain's lock, failing at once when another process holds it.
    pub fn lock(&self, uuid: &str, domain: &str) -> Result<DomainLock> {
        self.try_lock(uuid)?.with_context(|| {
            format!("another ferry process is backing up domain {domain:?}; try again when it ends")
        })
    }

    /// Takes the domain's lock if it is free; `None` while another process holds it. The
    /// state directory's lock must be taken; the host-wide one is skipped (with a debug
    /// message) when its directory cannot be created, e.g. without root.
    pub fn try_lock(&self, uuid: &str) -> Result<Option<DomainLock>> {
        let mut files = Vec::new();
        for (i, dir) in self.locks.iter().enumerate() {
            if let Err(e) = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
            {
                if i == 0 {
                    return Err(e).with_context(|| format!("cannot create {}", dir.display()));
                }
                log::debug!("no host-wide domain lock in {}: {e}", dir.display());
                continue;
            }
            match flock_file(&dir.join(format!("{uuid}.lock")))? {
                Some(file) => files.push(file),
                None => return Ok(None),
            }
        }
        Ok(Some(DomainLock {
            uuid: uuid.to_owned(),
            _files: files,
        }))
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// `path` opened (created 0600) and `flock`ed exclusively; `None` while another process
/// holds it.
fn flock_file(path: &std::path::Path) -> Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// A journal file that does not read or parse: the domain uuid (its file name) and why.
pub type DamagedEntry = (String, String);

/// An exclusive claim on one domain, released when dropped or when the process ends.
#[derive(Debug)]
pub struct DomainLock {
    pub uuid: String,
    _files: Vec<File>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_list_clear() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal {
            dir: dir.path().join("journal"),
            locks: vec![dir.path().join("locks")],
        };
        assert!(journal.entries().unwrap().0.is_empty());
        let entry = Entry {
            domain: "vm".into(),
            uuid: "u-1".into(),
            mode: "overlay".into(),
            pid: 1,
            connect: "qemu:///system".into(),
            started_unix: 2,
            disks: vec![EntryDisk {
                target: "vda".into(),
                base: "/a".into(),
                temporary: "/a.ovl".into(),
            }],
        };
        journal.write(&entry).unwrap();
        assert_eq!(journal.entries().unwrap(), (vec![entry], vec![]));
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&journal.dir), 0o700);
        assert_eq!(mode(&journal.entry_path("u-1")), 0o600);
        journal.clear("u-1").unwrap();
        journal.clear("u-1").unwrap();
        assert!(journal.entries().unwrap().0.is_empty());
        fs::write(journal.dir.join("u-2.json"), b"{").unwrap();
        let (good, damaged) = journal.entries().unwrap();
        assert!(good.is_empty());
        assert_eq!(damaged[0].0, "u-2");
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-locks");
        let journal = Journal {
            dir: dir.path().join("journal"),
            locks: vec![dir.path().join("locks"), host.clone()],
        };
        // Another state directory on the same host.
        let elsewhere = Journal {
            dir: dir.path().join("other/journal"),
            locks: vec![dir.path().join("other/locks"), host],
        };
        let held = journal.lock("u", "vm").unwrap();
        assert!(elsewhere.try_lock("u").unwrap().is_none());
        assert!(journal.try_lock("u").unwrap().is_none());
        let err = journal.lock("u", "vm").unwrap_err().to_string();
        assert!(err.contains("another ferry process"), "{err}");
        assert!(journal.try_lock("other").unwrap().is_some());
        drop(held);
        assert!(journal.try_lock("u").unwrap().is_some());
    }
}
