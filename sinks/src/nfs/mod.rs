//! [`NfsSink`]: a repository in a directory of an NFS export, spoken to over NFSv3 from user
//! space: no kernel mount, no root, nothing on the host but a TCP connection to the filer.
//!
//! # Layout
//! The same as [`local`](crate::local): key `a/b/c` is the file `a/b/c` below the repository
//! directory, directories are created on demand with mode 0700, objects are files with mode
//! 0600, and dot-names belong to the sink (in-flight puts are `.tmp-<hex>` files next to their
//! target; [`Sink::list`] never shows them).
//!
//! # How a put keeps the [`Sink`] contract
//! 1. Resolve (creating with MKDIR if missing) the target's directory; directory handles are
//!    cached, so a chunk put costs no LOOKUPs of `chunks/` and `chunks/ab/`.
//! 2. For [`PutMode::Create`], LOOKUP the name first: an existing object costs one round trip
//!    and no data transfer.
//! 3. CREATE a fresh temp file (GUARDED, 0600), WRITE the data UNSTABLE in transfers of the
//!    server's preferred size, then COMMIT and compare the COMMIT's write verifier with every
//!    WRITE's: a difference means the server restarted and may have dropped the data, so the
//!    put starts over under a new temp name. After a matching COMMIT the bytes are on the
//!    server's stable storage.
//! 4. Name it in one step: RENAME over the target for [`PutMode::Overwrite`]; LINK for
//!    [`PutMode::Create`], which the server refuses with `NFS3ERR_EXIST` if the name is taken,
//!    so two racing writers cannot both replace it. Then REMOVE the temp name.
//!
//! NFSv3 servers must make namespace operations (CREATE, MKDIR, LINK, RENAME, REMOVE) stable
//! before replying (RFC 1813), so a name that a put returned with survives a server crash.
//! A reader sees no object or a whole one: names only ever point at committed, complete files,
//! and a published file is never written again. An interrupted put leaves at most a temp file
//! that no read or list sees.
//!
//! # Retries
//! A call that fails for a transient reason (connection lost or timed out, `NFS3ERR_JUKEBOX`,
//! a stale handle, a changed write verifier) is retried from the start of the operation on a
//! fresh connection, as the sink's [`RetryPolicy`] says (with backoff, until its deadline,
//! 120 s by default; a server that stops answering costs 30 s per try). NFSv3's
//! non-idempotent procedures are made safe to repeat: a LINK or RENAME whose reply was lost
//! and that fails with `NFS3ERR_EXIST`/`NFS3ERR_NOENT` on the retry is recognised by comparing
//! file ids, and REMOVE of a missing name is success. Permanent failures (no such export,
//! permission denied, read-only export, no space) are reported at once, by name.
//!
//! # Throughput
//! Each thread using the sink holds its own TCP connection (from a pool), so the engine's
//! uploader threads are that many requests in flight.

mod list;
mod prune;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::leftover::{Leftover, temp_name};
use crate::retry::{Retrier, RetryPolicy};
use crate::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Retry, Sink, SinkError};
use wire::{Attr, Conn, Failure, Handle, MountError, Pool, Status};

/// Mode of object files.
const FILE_MODE: u32 = 0o600;
/// Mode of directories the sink creates.
const DIR_MODE: u32 = 0o700;
/// Largest READ/WRITE transfer, whatever the server offers.
const MAX_TRANSFER: u32 = 1 << 20;
/// Directory handles kept; the repository has a few hundred directories.
const DIR_CACHE_LIMIT: usize = 4096;

/// Where the repository is: `nfs://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsConfig {
    pub host: String,
    /// Port of the NFS service; `None`: ask the portmapper, else 2049.
    pub port: Option<u16>,
    /// Path components of the repository directory on the server: the export's path followed
    /// by the directories inside it. Each is a plain name (no `/`, not `.` or `..`).
    pub path: Vec<String>,
}

impl NfsConfig {
    /// `nfs://host[:port]/path` of this configuration; an IPv6 host in brackets.
    pub fn url(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("nfs://{host}{port}/{}", self.path.join("/"))
    }
}

/// A directory on an NFS export as a [`Sink`]. See the module docs.
pub struct NfsSink {
    pool: Pool,
    /// The repository directory.
    root: Handle,
    /// Directory handles by key prefix (`chunks`, `chunks/ab`).
    dirs: Mutex<HashMap<String, Handle>>,
    read_size: u32,
    write_size: u32,
    location: String,
    retrier: Retrier,
}

impl fmt::Debug for NfsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfsSink")
            .field("location", &self.location)
            .field("read_size", &self.read_size)
            .field("write_size", &self.write_size)
            .finish_non_exhaustive()
    }
}

impl NfsSink {
    /// Uses the existing repository directory. Fails with [`SinkError::Location`] naming the
    /// problem when no server answers, no export holds the path, or the directory is missing,
    /// and with [`SinkError::AccessDenied`] when the server refuses this host.
    /// Transient failures are retried as [`RetryPolicy::from_env`] says.
    pub fn open(config: &NfsConfig) -> Result<NfsSink, SinkError> {
        Self::connect(config, false, RetryPolicy::from_env()?)
    }

    /// Like [`open`](Self::open), creating the repository directory and any missing parents
    /// inside the export (mode 0700) first.
    pub fn create(config: &NfsConfig) -> Result<NfsSink, SinkError> {
        Self::connect(config, true, RetryPolicy::from_env()?)
    }

    /// [`open`](Self::open) with an explicit retry policy.
    pub fn open_with(config: &NfsConfig, retry: RetryPolicy) -> Result<NfsSink, SinkError> {
        Self::connect(config, false, retry)
    }

    fn connect(config: &NfsConfig, create: bool, retry: RetryPolicy) -> Result<NfsSink, SinkError> {
        let location = config.url();
        let location_error = |reason: String| SinkError::Location {
            location: location.clone(),
            reason,
        };
        // A filer that is not answering yet (restarting, failing over) is waited for, like
        // any transient failure; a refusal is not.
        let retrier = Retrier::new(retry, location.clone());
        let export_path = format!("/{}", config.path.join("/"));
        let mounted = retrier
            .run(
                "mount",
                &export_path,
                |e: &MountError| matches!(e, MountError::Unreachable(_)),
                |e| match e {
                    MountError::Unreachable(reason) => reason.clone(),
                    _ => "refused".to_owned(),
                },
                |_| wire::mount_export(&config.host, config.port, &config.path, MAX_TRANSFER),
            )
            .map_err(|gave_up| {
                let retried = gave_up.retried_suffix();
                match gave_up.error {
                    MountError::Unreachable(reason) => location_error(format!("{reason}{retried}")),
                    MountError::Unsuitable(reason) => location_error(reason),
                    MountError::Denied(reason) => SinkError::AccessDenied {
                        location: location.clone(),
                        reason,
                    },
                    MountError::NoExport { exports } => location_error(format!(
                        "no export of {} that this host may mount holds {export_path} (exports \
                         listed: {})",
                        config.host,
                        if exports.is_empty() {
                            "none listed".to_owned()
                        } else {
                            exports.join(", ")
                        }
                    )),
                }
            })?;
        let mut sink = NfsSink {
            pool: Pool::new(mounted.server),
            root: mounted.root,
            dirs: Mutex::new(HashMap::new()),
            read_size: mounted.sizes.read,
            write_size: mounted.sizes.write,
            retrier,
            location: location.clone(),
        };
        // Walk from the export root to the repository directory.
        let below = mounted.below.join("/");
        let root = sink.retrying("open", &below, |conn| {
            sink.resolve_dir(conn, &below, create)
        })?;
        match root {
            Some(handle) => {
                sink.root = handle;
                sink.dirs_mut().clear();
                Ok(sink)
            }
            None => Err(location_error(format!(
                "{below} does not exist in the export {}",
                mounted.export
            ))),
        }
    }

    fn dirs_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.dirs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle of directory `path` (`""` for the repository directory, `a/b` below it), from
    /// the cache or by LOOKUP of each missing component; with `create`, missing components are
    /// made (MKDIR, 0700). `None` when a component is missing (or is a file) and `create` is
    /// false.
    fn resolve_dir(
        &self,
        conn: &mut Conn<'_>,
        path: &str,
        create: bool,
    ) -> Result<Option<Handle>, Failure> {
        if path.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(handle) = self.dirs_mut().get(path) {
            return Ok(Some(handle.clone()));
        }
        let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path));
        let Some(parent) = self.resolve_dir(conn, parent_path, create)? else {
            return Ok(None);
        };
        let handle = match conn.lookup_attr(&parent, name) {
            Ok((handle, attr)) if attr.is_dir() => handle,
            Ok(_) if !create => return Ok(None),
            Ok(_) => {
                return Err(Failure::Status {
                    procedure: "LOOKUP",
                    status: Status::NotDir,
                });
            }
            Err(e) if e.status() == Some(Status::NoEnt) && create => {
                match conn.mkdir(&parent, name, DIR_MODE) {
                    Ok(handle) => handle,
                    // A racing put made it (or our MKDIR's reply was lost and this is a retry).
                    Err(e) if e.status() == Some(Status::Exist) => conn.lookup(&parent, name)?.0,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if matches!(e.status(), Some(Status::NoEnt | Status::NotDir)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut dirs = self.dirs_mut();
        if dirs.len() >= DIR_CACHE_LIMIT {
            dirs.clear();
        }
        dirs.insert(path.to_owned(), handle.clone());
        Ok(Some(handle))
    }

    /// Runs `op` on a pooled connection, retrying transient failures (see the module docs).
    fn retrying<T>(
        &self,
        op: &'static str,
        key: &str,
        mut attempt: impl FnMut(&mut Conn<'_>) -> Result<T, Failure>,
    ) -> Result<T, SinkError> {
        self.retrier
            .run(op, key, Failure::is_transient, Failure::to_string, |_| {
                let result = self.pool.conn().and_then(|mut conn| attempt(&mut conn));
                if let Err(failure) = &result
                    && failure.is_stale()
                {
                    self.dirs_mut().clear();
                }
                result
            })
            .map_err(|gave_up| {
                let retried = gave_up.retried_suffix();
                self.error(op, key, gave_up.error, &retried)
            })
    }

    fn error(&self, op: &'static str, key: &str, failure: Failure, retried: &str) -> SinkError {
        let location = self.location.clone();
        match failure.status() {
            Some(Status::NoEnt) => SinkError::NotFound {
                key: key.to_owned(),
            },
            Some(Status::Perm | Status::Access | Status::ReadOnlyFs) => SinkError::AccessDenied {
                location,
                reason: format!("{op} {key}: {failure}"),
            },
            Some(Status::NoSpc | Status::Dquot) => SinkError::NoSpace {
                location,
                key: key.to_owned(),
            },
            _ if matches!(failure, Failure::Denied(_)) => SinkError::AccessDenied {
                location,
                reason: failure.to_string(),
            },
            _ => SinkError::Io {
                op,
                key: key.to_owned(),
                retry: if failure.is_transient() {
                    Retry::Transient
                } else {
                    Retry::Permanent
                },
                source: std::io::Error::other(format!("{failure} (on {location}){retried}")),
            },
        }
    }

    /// One attempt at a put: temp file, WRITE + COMMIT, then LINK or RENAME.
    fn put_once(
        &self,
        conn: &mut Conn<'_>,
        key: &ObjectKey,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, Failure> {
        let (dir_path, name) = split_key(key);
        let dir = self
            .resolve_dir(conn, dir_path, true)?
            .expect("resolve_dir with create returns a handle");
        if mode == PutMode::Create {
            match conn.lookup_attr(&dir, name) {
                Ok((_, attr)) if attr.is_file() => return Ok(PutOutcome::AlreadyExists),
                Ok(_) => {
                    return Err(Failure::Status {
                        procedure: "LOOKUP",
                        status: Status::IsDir,
                    });
                }
                Err(e) if e.status() == Some(Status::NoEnt) => {}
                Err(e) => return Err(e),
            }
        }
        let temp = temp_name();
        let file = conn.create_new(&dir, &temp, FILE_MODE)?;
        let published = self
            .write_committed(conn, &file, data)
            .and_then(|()| self.publish(conn, &dir, &file, &temp, name, mode));
        // The temp name goes in every case (after LINK the object keeps its own name).
        if !matches!((&published, mode), (Ok(_), PutMode::Overwrite)) {
            match conn.remove(&dir, &temp) {
                Ok(()) => {}
                Err(e) if e.status() == Some(Status::NoEnt) => {}
                // A leftover temp name is invisible and `ferry gc` removes it; as a warning,
                // a failing connection printed this once per put in flight.
                Err(e) => log::debug!("cannot remove temp file {dir_path}/{temp}: {e}"),
            }
        }
        published
    }

    /// Writes `data` UNSTABLE and COMMITs it, checking the write verifier.
    fn write_committed(
        &self,
        conn: &mut Conn<'_>,
        file: &Handle,
        data: &[u8],
    ) -> Result<(), Failure> {
        let mut verifier = None;
        let mut offset = 0usize;
        while offset < data.len() {
            let end = (offset + self.write_size as usize).min(data.len());
            let written = conn.write_unstable(file, offset as u64, &data[offset..end])?;
            if written.count == 0 {
                return Err(Failure::Transport("WRITE wrote 0 bytes".into()));
            }
            if written.unstable {
                match verifier {
                    None => verifier = Some(written.verifier),
                    Some(v) if v != written.verifier => return Err(Failure::VerifierChanged),
                    Some(_) => {}
                }
            }
            offset += written.count as usize;
        }
        if let Some(expected) = verifier
            && conn.commit(file)? != expected
        {
            return Err(Failure::VerifierChanged);
        }
        Ok(())
    }

    /// Gives the committed temp file its name.
    fn publish(
        &self,
        conn: &mut Conn<'_>,
        dir: &Handle,
        file: &Handle,
        temp: &str,
        name: &str,
        mode: PutMode,
    ) -> Result<PutOutcome, Failure> {
        match mode {
            PutMode::Overwrite => match conn.rename(dir, temp, name) {
                Ok(()) => Ok(PutOutcome::Written),
                // A retried RENAME whose first try succeeded: the name holds our file.
                Err(e)
                    if e.status() == Some(Status::NoEnt) && same_file(conn, dir, name, file)? =>
                {
                    Ok(PutOutcome::Written)
                }
                Err(e) => Err(e),
            },
            PutMode::Create => match conn.link(file, dir, name) {
                Ok(()) => Ok(PutOutcome::Written),
                Err(e) if e.status() == Some(Status::Exist) => {
                    // Taken by a racing writer, or by our own LINK whose reply was lost.
                    if same_file(conn, dir, name, file)? {
                        Ok(PutOutcome::Written)
                    } else {
                        Ok(PutOutcome::AlreadyExists)
                    }
                }
                Err(e) => Err(e),
            },
        }
    }

    /// LOOKUP of an object file: its handle and attributes; NoEnt for a missing one or a
    /// directory.
    fn lookup_object(
        &self,
        conn: &mut Conn<'_>,
        key: &ObjectKey,
    ) -> Result<(Handle, Attr), Failure> {
        let not_found = || Failure::Status {
            procedure: "LOOKUP",
            status: Status::NoEnt,
        };
        let (dir_path, name) = split_key(key);
        let dir = self
            .resolve_dir(conn, dir_path, false)?
            .ok_or_else(not_found)?;
        let (handle, attr) = conn.lookup_attr(&dir, name).map_err(|e| match e.status() {
            Some(Status::NotDir) => not_found(),
            _ => e,
        })?;
        if !attr.is_file() {
            return Err(not_found());
        }
        Ok((handle, attr))
    }

    /// READs bytes `start..end` of a file.
    fn read_range(
        &self,
        conn: &mut Conn<'_>,
        file: &Handle,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, Failure> {
        let mut data = Vec::with_capacity((end - start) as usize);
        let mut offset = start;
        while offset < end {
            let count = (end - offset).min(u64::from(self.read_size)) as u32;
            let (bytes, eof) = conn.read(file, offset, count)?;
            offset += bytes.len() as u64;
            data.extend_from_slice(&bytes);
            if bytes.is_empty() || (eof && offset < end) {
                // Objects never shrink: a short file is a torn read of a replaced object.
                return Err(Failure::Status {
                    procedure: "READ",
                    status: Status::Stale,
                });
            }
        }
        Ok(data)
    }
}

/// Whether `name` in `dir` is the file `file` (same file id).
fn same_file(
    conn: &mut Conn<'_>,
    dir: &Handle,
    name: &str,
    file: &Handle,
) -> Result<bool, Failure> {
    let named = match conn.lookup_attr(dir, name) {
        Ok((_, attr)) => attr.fileid,
        Err(e) if e.status() == Some(Status::NoEnt) => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(conn.getattr(file)?.fileid == named)
}

/// `(directory, name)` of a key: `("chunks/ab", "ab12…")`, `("", "config")`.
fn split_key(key: &ObjectKey) -> (&str, &str) {
    key.as_str().rsplit_once('/').unwrap_or(("", key.as_str()))
}

fn modified(attr: &Attr) -> SystemTime {
    let (seconds, nanos) = attr.mtime;
    SystemTime::UNIX_EPOCH + Duration::new(u64::from(seconds), nanos.min(999_999_999))
}

impl Sink for NfsSink {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        self.retrying("put", key.as_str(), |conn| {
            self.put_once(conn, key, data, mode)
        })
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        self.retrying("get", key.as_str(), |conn| {
            let (file, attr) = self.lookup_object(conn, key)?;
            self.read_range(conn, &file, 0, attr.size)
        })
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        let mut range_error = None;
        let data = self.retrying("get", key.as_str(), |conn| {
            let (file, attr) = self.lookup_object(conn, key)?;
            if let Err(e) = SinkError::check_range(key, start, end, attr.size) {
                range_error = Some(e);
                return Ok(Vec::new());
            }
            self.read_range(conn, &file, start, end)
        })?;
        range_error.map_or(Ok(data), Err)
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        let attr = self.retrying("head", key.as_str(), |conn| {
            Ok(self.lookup_object(conn, key)?.1)
        })?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: attr.size,
            modified: modified(&attr),
        })
    }

    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>
    {
        Ok(Box::new(list::List::new(self, prefix)))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.retrying("delete", key.as_str(), |conn| {
            let (dir_path, name) = split_key(key);
            let Some(dir) = self.resolve_dir(conn, dir_path, false)? else {
                return Ok(());
            };
            match conn.remove(&dir, name) {
                // NoEnt: never there, or our own REMOVE whose reply was lost.
                Err(e) if e.status() == Some(Status::NoEnt) => Ok(()),
                other => other,
            }
        })
    }

    fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
        Ok(list::List::survey(self, dir)?.leftovers)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
        let dir_path = leftover.dir().map_or("", ObjectKey::as_str);
        self.retrying("remove leftover", &leftover.to_string(), |conn| {
            let Some(dir) = self.resolve_dir(conn, dir_path, false)? else {
                return Ok(());
            };
            match conn.remove(&dir, leftover.name()) {
                Err(e) if e.status() == Some(Status::NoEnt) => Ok(()),
                other => other,
            }
        })
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_put_ipv6_hosts_in_brackets() {
        let config = |host: &str, port| NfsConfig {
            host: host.into(),
            port,
            path: vec!["srv".into(), "repo".into()],
        };
        assert_eq!(config("::1", Some(2049)).url(), "nfs://[::1]:2049/srv/repo");
        assert_eq!(config("filer", None).url(), "nfs://filer/srv/repo");
    }
}
