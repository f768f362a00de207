//! Removing a directory tree that holds no files any more (a benchmark's throwaway prefix, once
//! its objects are deleted): directories are objects of their own on NFS, and deleting every
//! object leaves them behind.

use super::NfsSink;
use super::wire::{CookieVerf, Status};
use crate::{SinkError, leftover};

impl NfsSink {
    /// Removes directory `dir` (a key followed by `/`) and every directory below it, deepest
    /// first. A directory that still holds a file (an object, a leftover) stays, with its
    /// parents; that is not an error. A missing `dir` is not an error either.
    pub fn remove_empty_dirs(&self, dir: &str) -> Result<(), SinkError> {
        let Some(top) = leftover::parse_dir(dir)? else {
            return Ok(()); // the repository directory itself stays
        };
        let mut dirs = vec![top.to_string()];
        let mut next = 0;
        while let Some(path) = dirs.get(next).cloned() {
            next += 1;
            dirs.extend(self.subdirectories(&path)?);
        }
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

    /// Paths of the directories directly inside directory `path` (none when it is missing).
    fn subdirectories(&self, path: &str) -> Result<Vec<String>, SinkError> {
        self.retrying("list", path, |conn| {
            let Some(handle) = self.resolve_dir(conn, path, false)? else {
                return Ok(Vec::new());
            };
            let (mut found, mut cookie, mut verifier) = (Vec::new(), 0, CookieVerf::default());
            loop {
                let page = conn.readdirplus(&handle, cookie, verifier)?;
                let last = page.eof || page.entries.is_empty();
                found.extend(
                    page.entries
                        .into_iter()
                        .filter(|e| e.name != "." && e.name != "..")
                        .filter(|e| e.attr.as_ref().is_some_and(|a| a.is_dir()))
                        .map(|e| format!("{path}/{}", e.name)),
                );
                if last {
                    return Ok(found);
                }
                (cookie, verifier) = (page.cookie, page.verifier);
            }
        })
    }
}
