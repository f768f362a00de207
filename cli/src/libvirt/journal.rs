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

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferry";

/// What a domain backup changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub domain: String,
    pub uuid: String,
    /// `overlay` or `push`.
    pub mode: String,
    pub pid: u32,
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
}

impl Journal {
    /// The journal under `$FERRY_STATE_DIR` (or the default state dir).
    pub fn from_env() -> Journal {
        let state = std::env::var_os("FERRY_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Journal {
            dir: state.join("journal"),
        }
    }

    fn path(&self, uuid: &str) -> PathBuf {
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
        let final_path = self.path(&entry.uuid);
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
        match fs::remove_file(self.path(uuid)) {
            Ok(()) => self
                .sync_dir()
                .with_context(|| format!("cannot sync {}", self.dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot clear the journal of domain {uuid}")),
        }
    }

    /// Every record, with the file it came from; unreadable files are reported, not skipped.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let dir = match fs::read_dir(&self.dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context(format!("cannot read {}", self.dir.display())),
        };
        let mut entries = Vec::new();
        for item in dir {
            let path = item?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let entry: Entry = serde_json::from_slice(&bytes)
                .with_context(|| format!("journal file {} is damaged", path.display()))?;
            entries.push(entry);
        }
        entries.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(entries)
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
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
        };
        assert!(journal.entries().unwrap().is_empty());
        let entry = Entry {
            domain: "vm".into(),
            uuid: "u-1".into(),
            mode: "overlay".into(),
            pid: 1,
            started_unix: 2,
            disks: vec![EntryDisk {
                target: "vda".into(),
                base: "/a".into(),
                temporary: "/a.ovl".into(),
            }],
        };
        journal.write(&entry).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![entry]);
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&journal.dir), 0o700);
        assert_eq!(mode(&journal.path("u-1")), 0o600);
        journal.clear("u-1").unwrap();
        journal.clear("u-1").unwrap();
        assert!(journal.entries().unwrap().is_empty());
    }
}
