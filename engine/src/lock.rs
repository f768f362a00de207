//! Repository locks: backups hold a shared lock, garbage collection an exclusive one, so gc
//! never deletes a chunk that a running backup (on any host) relies on.
//!
//! # Protocol
//! A lock is the object `locks/<random hex>` holding JSON [`LockInfo`]. To acquire:
//! 1. put the own lock (put-if-absent under a fresh random key);
//! 2. list `locks/` and read every other lock;
//! 3. if any live lock conflicts (exclusive against anything), delete the own lock and fail
//!    with [`EngineError::Locked`] naming the holder.
//!
//! Why two conflicting acquirers never both succeed: each puts before it lists, and the sinks
//! list what was put before the listing started (S3 is strongly consistent; the local and NFS
//! sinks name objects atomically). If A's listing missed B's lock, B's put came after A's
//! listing, hence after A's put, so B's listing sees A's lock and B backs off. (Both may back
//! off; the caller retries later.)
//!
//! # Liveness
//! A holder rewrites its lock every [`REFRESH_EVERY`]. A lock is stale, and ignored (and removed
//! by gc), when its object is older than [`STALE_AFTER`] by the sink's own clock (the acquirer
//! compares against the modification time of the lock it just wrote, so hosts' clocks do not
//! matter), or when it names this host and a process that no longer runs: gone, a zombie no
//! init reaped, or a later process that got the same pid (its start time differs from
//! [`LockInfo::pid_start`]); a backup killed with SIGKILL on this host does not block gc for
//! half an hour. "This host" means the same
//! hostname, kernel boot and pid namespace ([`LockInfo::pid_scope`]): containers that share a
//! hostname, or a host rebooted since, cannot see the holder's pid, so for them only the age
//! counts. Locks written without a pid scope are judged by age only.
//!
//! A holder whose lock vanished (gc judged it stale, say after the process was suspended for
//! longer than [`STALE_AFTER`]) finds out at its next refresh or at [`RepoLock::check`], which a
//! backup calls right before publishing its manifest, and then publishes nothing. What remains
//! open is a holder suspended for more than [`STALE_AFTER`] exactly between that check and its
//! manifest put; no lock without a lease enforced by the storage can close it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_sinks::{ObjectKey, PutMode, Sink, SinkError};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::repository::Repository;

/// Prefix of lock objects.
pub const LOCKS_PREFIX: &str = "locks/";
/// A lock not rewritten for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder rewrites its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// What a lock allows beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Backups: any number at once.
    Shared,
    /// Garbage collection: alone.
    Exclusive,
}

/// The content of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    /// What holds it: `backup`, `gc`.
    pub operation: String,
    pub hostname: String,
    pub pid: u32,
    pub created_unix: u64,
    /// The snapshot name a backup writes (so a later backup of the same name can tell it
    /// resumes an interrupted one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where `pid` names a process: the kernel's boot id and the holder's pid namespace
    /// (`<boot id>/pid:[<inode>]`). Only a process in the same scope can tell from `/proc`
    /// that the holder is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_scope: Option<String>,
    /// The holder's start time (clock ticks since boot, `/proc/<pid>/stat`), so a later
    /// process that got the same pid is not taken for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

/// This process's [`LockInfo::pid_scope`], when `/proc` tells it.
pub fn pid_scope() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), namespace.to_str()?))
}

/// Whether process `pid` of this pid namespace still runs (exists and is not a zombie).
pub(crate) fn process_runs(pid: u32) -> bool {
    process_status(pid).is_some_and(|(running, _)| running)
}

/// The pid in `name` when `name` is `<prefix><pid>-<anything>` and that process no longer runs
/// in this pid namespace: `name` was left by a process killed before its cleanup (a restore's
/// temporary file, a benchmark's scratch directory). `None` for other names and for the names
/// of running processes. A pid reused by a later process keeps its leftover until that one
/// ends too: this errs towards keeping files.
pub fn pid_of_dead_owner(name: &str, prefix: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix(prefix)?.split_once('-')?;
    let pid = pid.parse::<u32>().ok()?;
    (!process_runs(pid)).then_some(pid)
}

/// What `/proc/<pid>/stat` says of a process of this pid namespace: `None` when there is no
/// such process, else whether it still runs (not a zombie) and its start time.
fn process_status(pid: u32) -> Option<(bool, Option<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may itself hold ") "): state first,
    // start time 20th (field 22 of the whole line).
    let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let mut fields = rest.split_whitespace();
    let running = fields
        .next()
        .is_some_and(|state| state != "Z" && state != "X");
    let start = fields.nth(18).and_then(|f| f.parse().ok());
    Some((running, start))
}

/// Whether the holder of a lock taken in this host's pid scope has gone: no process with its
/// pid, a zombie, or a process that started at another time (the pid was reused).
fn holder_gone(info: &LockInfo) -> bool {
    match process_status(info.pid) {
        None | Some((false, _)) => true,
        Some((true, start)) => info.pid_start.is_some() && start != info.pid_start,
    }
}

/// A held lock. Dropping it stops the refresher and deletes the lock object.
#[derive(Debug)]
pub struct RepoLock {
    sink: Arc<dyn Sink>,
    key: ObjectKey,
    lost: Arc<AtomicBool>,
    refresher: Option<(Sender<()>, JoinHandle<()>)>,
}

impl RepoLock {
    /// Acquires a lock of `kind` for `operation`, removing stale locks it meets when `kind` is
    /// exclusive. Fails with [`EngineError::Locked`] when a live lock conflicts.
    pub fn acquire(
        repo: &Repository,
        kind: LockKind,
        operation: &str,
    ) -> Result<RepoLock, EngineError> {
        Ok(Self::acquire_with(repo, Self::info(kind, operation, None))?.0)
    }

    /// A backup's shared lock for snapshot name `name`, and whether another backup of the same
    /// name holds, or left behind, a lock: this run may resume an interrupted one.
    pub fn acquire_backup(repo: &Repository, name: &str) -> Result<(RepoLock, bool), EngineError> {
        let info = Self::info(LockKind::Shared, "backup", Some(name));
        let (lock, others) = Self::acquire_with(repo, info)?;
        let resumes = others
            .iter()
            .any(|o| o.operation == "backup" && o.name.as_deref() == Some(name));
        Ok((lock, resumes))
    }

    fn info(kind: LockKind, operation: &str, name: Option<&str>) -> LockInfo {
        LockInfo {
            kind,
            operation: operation.to_owned(),
            hostname: crate::backup::hostname(),
            pid: std::process::id(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            name: name.map(str::to_owned),
            pid_scope: pid_scope(),
            pid_start: process_status(std::process::id()).and_then(|(_, start)| start),
        }
    }

    /// Acquires the lock described by `info`; also returns the other locks it saw (stale or
    /// not, those it removed excepted).
    fn acquire_with(
        repo: &Repository,
        info: LockInfo,
    ) -> Result<(RepoLock, Vec<LockInfo>), EngineError> {
        let kind = info.kind;
        let sink = Arc::clone(repo.sink());
        let mut seen = Vec::new();
        let bytes = serde_json::to_vec(&info).expect("lock info serializes");
        let key = lock_key(&format!("{:032x}", rand::random::<u128>()));
        sink.put(&key, &bytes, PutMode::Create)?;
        let lock = RepoLock {
            sink: Arc::clone(&sink),
            key,
            lost: Arc::new(AtomicBool::new(false)),
            refresher: None,
        };
        // `lock` deletes its object on drop, also when the checks below fail.
        let now = sink.head(&lock.key)?.modified;
        for other in sink.list(LOCKS_PREFIX)? {
            let other = other?;
            if other.key == lock.key {
                continue;
            }
            let theirs = match sink.get(&other.key) {
                Ok(bytes) => serde_json::from_slice::<LockInfo>(&bytes).ok(),
                Err(SinkError::NotFound { .. }) => continue, // released meanwhile
                Err(e) => return Err(e.into()),
            };
            if is_stale(theirs.as_ref(), other.modified, now) {
                if kind == LockKind::Exclusive {
                    log::warn!(
                        "removing stale lock: {}",
                        describe(theirs.as_ref(), &other.key)
                    );
                    sink.delete(&other.key)?;
                } else {
                    seen.extend(theirs);
                }
                continue;
            }
            // An unreadable lock might be anything: treat it as exclusive.
            let their_kind = theirs.as_ref().map_or(LockKind::Exclusive, |t| t.kind);
            if kind == LockKind::Exclusive || their_kind == LockKind::Exclusive {
                return Err(EngineError::Locked {
                    holder: describe(theirs.as_ref(), &other.key),
                });
            }
            seen.extend(theirs);
        }
        Ok((lock.with_refresher(bytes), seen))
    }

    /// Starts the thread that rewrites the lock every [`REFRESH_EVERY`].
    fn with_refresher(mut self, bytes: Vec<u8>) -> RepoLock {
        let (stop, stopped) = mpsc::channel::<()>();
        let sink = Arc::clone(&self.sink);
        let key = self.key.clone();
        let lost = Arc::clone(&self.lost);
        let handle = std::thread::Builder::new()
            .name("ferry-lock".into())
            .spawn(move || {
                // The channel is the timer: a message or a hang-up ends the loop at once.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_EVERY) {
                    // Gone means someone judged it stale: never write it back. Any other
                    // failure is one missed refresh; the lock goes stale only after several.
                    match sink.head(&key) {
                        Err(SinkError::NotFound { .. }) => lost.store(true, Ordering::SeqCst),
                        _ => {
                            if let Err(e) = sink.put(&key, &bytes, PutMode::Overwrite) {
                                log::warn!("cannot refresh lock {key}: {e}");
                            }
                        }
                    }
                }
            })
            .expect("spawn the lock refresher");
        self.refresher = Some((stop, handle));
        self
    }

    /// Fails with [`EngineError::LockLost`] when the lock is no longer held (removed as stale
    /// by another process).
    pub fn check(&self) -> Result<(), EngineError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(EngineError::LockLost);
        }
        match self.sink.head(&self.key) {
            Ok(_) => Ok(()),
            Err(SinkError::NotFound { .. }) => Err(EngineError::LockLost),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.refresher.take() {
            drop(stop);
            let _ = handle.join();
        }
        if let Err(e) = self.sink.delete(&self.key) {
            log::warn!("cannot remove lock {}: {e}", self.key);
        }
    }
}

fn lock_key(name: &str) -> ObjectKey {
    ObjectKey::new(format!("{LOCKS_PREFIX}{name}")).expect("lock keys are valid")
}

/// Whether a lock can be ignored: older than [`STALE_AFTER`] relative to `now` (both times by
/// the sink's clock), or held by a process of this host, boot and pid namespace that no longer
/// runs (gone, a zombie, or its pid reused by a process started later).
fn is_stale(info: Option<&LockInfo>, modified: SystemTime, now: SystemTime) -> bool {
    if now.duration_since(modified).unwrap_or_default() > STALE_AFTER {
        return true;
    }
    info.is_some_and(|info| {
        info.hostname == crate::backup::hostname()
            && info.pid_scope.is_some()
            && info.pid_scope == pid_scope()
            && holder_gone(info)
    })
}

fn describe(info: Option<&LockInfo>, key: &ObjectKey) -> String {
    match info {
        Some(info) => format!(
            "{} ({} lock {key}) by pid {} on host {}, taken {}",
            info.operation,
            match info.kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            },
            info.pid,
            info.hostname,
            crate::calendar::utc(info.created_unix)
        ),
        None => format!("an unreadable lock {key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sinks::memory::MemorySink;

    #[test]
    fn leftovers_name_their_dead_owner_only() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap(); // reaped: no such process any more
        let prefix = "ferry-bench-";
        assert_eq!(
            pid_of_dead_owner(&format!("{prefix}{dead}-0a1b"), prefix),
            Some(dead)
        );
        let alive = std::process::id();
        assert_eq!(
            pid_of_dead_owner(&format!("{prefix}{alive}-0a1b"), prefix),
            None
        );
        for other in [
            format!("{prefix}{dead}"),
            format!("{prefix}0a1b2c3d"),
            format!("{prefix}x{dead}-0a1b"),
            format!("other-{dead}-0a1b"),
        ] {
            assert_eq!(pid_of_dead_owner(&other, prefix), None, "{other}");
        }
    }

    fn repo() -> Repository {
        Repository::init(Arc::new(MemorySink::new()), 1 << 20).unwrap()
    }

    fn locks(repo: &Repository) -> usize {
        repo.sink().list(LOCKS_PREFIX).unwrap().count()
    }

    #[test]
    fn shared_locks_coexist_and_exclude_gc() {
        let repo = repo();
        let a = RepoLock::acquire(&repo, LockKind::Shared, "backup").unwrap();
        let b = RepoLock::acquire(&repo, LockKind::Shared, "backup").unwrap();
        let err = RepoLock::acquire(&repo, LockKind::Exclusive, "gc").unwrap_err();
        assert!(
            matches!(&err, EngineError::Locked { holder } if holder.contains("backup")),
            "{err}"
        );
        assert_eq!(locks(&repo), 2, "the refused lock was not removed");
        drop((a, b));
        assert_eq!(locks(&repo), 0);
        let gc = RepoLock::acquire(&repo, LockKind::Exclusive, "gc").unwrap();
        let err = RepoLock::acquire(&repo, LockKind::Shared, "backup").unwrap_err();
        assert!(
            matches!(&err, EngineError::Locked { holder } if holder.contains("gc")),
            "{err}"
        );
        gc.check().unwrap();
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_host_is_stale_and_gc_removes_it() {
        let repo = repo();
        // A pid that surely exited: a child we waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let info = LockInfo {
            kind: LockKind::Shared,
            operation: "backup".into(),
            hostname: crate::backup::hostname(),
            pid: dead_pid,
            created_unix: 0,
            name: None,
            pid_scope: pid_scope(),
            pid_start: None,
        };
        assert!(info.pid_scope.is_some(), "no pid scope from /proc");
        // The same pid seen from another pid namespace, another boot, or by a lock that does
        // not say: that process may well be alive, so the lock holds until it is old.
        for scope in [Some("another-boot/pid:[4026531836]".to_owned()), None] {
            let elsewhere = LockInfo {
                pid_scope: scope,
                ..info.clone()
            };
            let key = lock_key("elsewhere");
            repo.sink()
                .put(
                    &key,
                    &serde_json::to_vec(&elsewhere).unwrap(),
                    PutMode::Create,
                )
                .unwrap();
            let err = RepoLock::acquire(&repo, LockKind::Exclusive, "gc").unwrap_err();
            assert!(matches!(err, EngineError::Locked { .. }), "{err}");
            repo.sink().delete(&key).unwrap();
        }
        let key = lock_key("dead");
        repo.sink()
            .put(&key, &serde_json::to_vec(&info).unwrap(), PutMode::Create)
            .unwrap();
        let gc = RepoLock::acquire(&repo, LockKind::Exclusive, "gc").unwrap();
        assert!(matches!(
            repo.sink().head(&key),
            Err(SinkError::NotFound { .. })
        ));
        drop(gc);
    }

    #[test]
    fn zombies_and_reused_pids_do_not_hold_locks() {
        let here = |pid: u32, pid_start: Option<u64>| LockInfo {
            pid,
            pid_start,
            ..RepoLock::info(LockKind::Shared, "backup", None)
        };
        let fresh = SystemTime::now();
        // This process holds its lock, with or without a recorded start time.
        let me = RepoLock::info(LockKind::Shared, "backup", None);
        assert!(me.pid_start.is_some(), "no start time from /proc");
        assert!(!is_stale(Some(&me), fresh, fresh));
        assert!(!is_stale(Some(&here(me.pid, None)), fresh, fresh));
        // The same pid with another start time is a later process: the holder is gone.
        let reused = here(me.pid, me.pid_start.map(|s| s + 1));
        assert!(is_stale(Some(&reused), fresh, fresh));
        // A holder killed but not yet reaped (a zombie: no init reaps it in some containers).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zombie = child.id();
        while process_status(zombie).is_some_and(|(running, _)| running) {
            std::thread::yield_now();
        }
        assert!(is_stale(Some(&here(zombie, None)), fresh, fresh));
        child.wait().unwrap();
    }

    #[test]
    fn a_live_lock_of_another_host_blocks_gc() {
        let repo = repo();
        let info = LockInfo {
            kind: LockKind::Shared,
            operation: "backup".into(),
            hostname: "some-other-hypervisor".into(),
            pid: 1,
            created_unix: 0,
            name: None,
            pid_scope: None,
            pid_start: None,
        };
        let key = lock_key("other");
        repo.sink()
            .put(&key, &serde_json::to_vec(&info).unwrap(), PutMode::Create)
            .unwrap();
        let err = RepoLock::acquire(&repo, LockKind::Exclusive, "gc").unwrap_err();
        assert!(
            matches!(&err, EngineError::Locked { holder } if holder.contains("some-other-hypervisor")),
            "{err}"
        );
        // Garbage in a lock object is treated as an exclusive lock: nothing gets past it.
        repo.sink().delete(&key).unwrap();
        repo.sink()
            .put(&lock_key("junk"), b"not json", PutMode::Create)
            .unwrap();
        assert!(RepoLock::acquire(&repo, LockKind::Shared, "backup").is_err());
    }

    #[test]
    fn old_locks_are_stale_by_the_sinks_clock() {
        let now = SystemTime::now();
        let old = now - STALE_AFTER - Duration::from_secs(1);
        let fresh = now - STALE_AFTER + Duration::from_secs(60);
        let other_host = LockInfo {
            kind: LockKind::Shared,
            operation: "backup".into(),
            hostname: "elsewhere".into(),
            pid: 1,
            created_unix: 0,
            name: None,
            pid_scope: None,
            pid_start: None,
        };
        assert!(is_stale(Some(&other_host), old, now));
        assert!(!is_stale(Some(&other_host), fresh, now));
        assert!(is_stale(None, old, now));
        assert!(!is_stale(None, fresh, now));
    }

    #[test]
    fn a_removed_lock_is_noticed_by_check() {
        let repo = repo();
        let lock = RepoLock::acquire(&repo, LockKind::Shared, "backup").unwrap();
        lock.check().unwrap();
        repo.sink().delete(&lock.key).unwrap();
        assert!(matches!(lock.check(), Err(EngineError::LockLost)));
    }
}
