//! Removing a directory tree that holds no files any more (a benchmark's throwaway prefix, once
//! its objects are deleted): directories are objects of their own on NFS, and deleting every
//! object leaves them behind.

use super::NfsSink;
use super::list::List;
use super::wire::Status;
use crate::{SinkError, leftover};

impl NfsSink {
    /// Removes directory `dir` (a key followed by `/`) and every directory below it, deepest
    /// first. A directory that still holds anything (an object, a leftover, a directory whose
    /// name no key can take) stays, with its parents; that is not an error. A missing `dir` is
    /// not an error either.
    pub fn remove_empty_dirs(&self, dir: &str) -> Result<(), SinkError> {
        let Some(top) = leftover::parse_dir(dir)? else {
            return Ok(()); // the repository directory itself stays
        };
        let mut dirs = vec![top.to_string()];
        dirs.extend(List::survey(self, dir)?.dirs);
        // Each directory was found after its parent: in reverse, children go first.
        for path in dirs.iter().rev() {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            self.retrying("rmdir", path, |conn| {
                let Some(parent) = self.resolve_dir(conn, parent, false)? else {
                    return Ok(());
                };
                match conn.rmdir(&parent, name) {
                    Err(e) if matches!(e.status(), Some(Status::NoEnt | Status::NotEmpty)) => {
                        Ok(())
                    }
                    other => other,
                }
            })?;
            // Cached handles of removed directories would be stale.
            let below = format!("{path}/");
            self.dirs_mut()
                .retain(|cached, _| cached != path && !cached.starts_with(&below));
        }
        Ok(())
    }
}
