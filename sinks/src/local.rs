//! [`LocalSink`]: a repository in a directory of a local (or locally mounted) filesystem.
//!
//! # Layout
//! Key `a/b/c` is the file `root/a/b/c`; the directories `root/a` and `root/a/b` are created on
//! demand with mode 0700, objects are files with mode 0600 (the process umask can only narrow
//! these). Names starting with `.` are never keys (see [`ObjectKey`]), so the sink owns them:
//! in-flight puts live in `.tmp-<hex>` files next to their target, and [`Sink::list`] skips
//! every dot-name. A key can be an object or a directory of other keys, not both: with `a/b`
//! stored, a put of `a` fails (and a get of `a` is [`SinkError::NotFound`]).
//!
//! # How a put keeps the [`Sink`] contract
//! 1. Open (creating if missing) the target's directory. Each directory created is made durable
//!    by fsyncing the directory that holds it.
//! 2. Write the data to a fresh temp file in that directory (`O_EXCL`, 0600, `O_CLOEXEC`) and
//!    fsync it: the bytes are durable before any name points at them.
//! 3. Give it its name in one atomic step: `renameat` for [`PutMode::Overwrite`];
//!    `renameat2(RENAME_NOREPLACE)` for [`PutMode::Create`], falling back to `linkat` + unlink
//!    of the temp name where the filesystem does not support the flag. Both refuse to replace
//!    an existing name, which is what makes put-if-absent race-free between threads and
//!    processes.
//! 4. fsync the directory, so the new name survives a crash. This happens for
//!    [`PutOutcome::AlreadyExists`] too: the existing object may have been named a moment ago
//!    by a racing writer that has not fsynced yet.
//!
//! The temp file is unlinked on every error path; a crash leaves at most a dot-file that no
//! read or list can see and that [`Sink::leftovers`] finds. A `Create` put first checks whether
//! the name exists, so a dedup hit costs a `stat` and a directory fsync instead of writing the
//! data.
//!
//! A delete fsyncs the directory as well: an object deleted before a crash stays deleted.
//!
//! Known window: a directory created by one put becomes visible to other writers before it is
//! fsynced into its parent, so a concurrent put into it may return before that fsync. A machine
//! crash inside that window (microseconds, once per directory) can lose such an object.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, ReadDir};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::leftover::{self, Leftover, is_temp_name, temp_name};
use crate::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Retry, Sink, SinkError};

/// Mode of object files (before the umask).
const FILE_MODE: u32 = 0o600;
/// Mode of directories the sink creates (before the umask).
const DIR_MODE: u32 = 0o700;
/// Attempts at finding an unused temp name before giving up.
const TEMP_NAME_ATTEMPTS: usize = 8;

/// A sink storing each object as a file under a root directory. See the module docs.
#[derive(Debug)]
pub struct LocalSink {
    /// Absolute path of the repository directory.
    root: PathBuf,
}

impl LocalSink {
    /// Uses the existing directory `root` as the repository.
    ///
    /// Fails with [`SinkError::Location`] naming the path if it is missing or not a directory.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalSink, SinkError> {
        let root = absolute(root.as_ref())?;
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => Ok(LocalSink { root }),
            Ok(_) => Err(location_error(&root, "not a directory".into())),
            Err(err) => Err(location_error(&root, err.to_string())),
        }
    }

    /// Like [`open`](Self::open), creating `root` and any missing parents first, each with mode
    /// 0700. Existing directories are used as they are.
    pub fn create(root: impl AsRef<Path>) -> Result<LocalSink, SinkError> {
        let root = absolute(root.as_ref())?;
        let existing = root
            .ancestors()
            .find(|dir| dir.exists())
            .map(Path::to_path_buf);
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&root)
            .map_err(|err| {
                // Name the path in the way that is not a directory, rather than EEXIST/ENOTDIR.
                let blocker = root.ancestors().find(|p| p.exists() && !p.is_dir());
                match blocker {
                    Some(file) => location_error(
                        &root,
                        format!("{} exists and is not a directory", file.display()),
                    ),
                    None => location_error(&root, err.to_string()),
                }
            })?;
        // A created directory's entry lives in its parent: fsync those parents, deepest first,
        // up to and including the first directory that already existed.
        if let Some(existing) = existing.filter(|dir| *dir != root) {
            for dir in root.ancestors().skip(1) {
                fsync_path(dir).map_err(|err| location_error(dir, err.to_string()))?;
                if dir == existing {
                    break;
                }
            }
        }
        LocalSink::open(root)
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Opens the directory `dir` (relative to root, `""` for root itself), creating missing
    /// directories and fsyncing the parent of each one it had to create.
    fn open_dir_creating(&self, dir: &str) -> io::Result<OwnedFd> {
        match open_dir(&self.path_of(dir)) {
            Err(Errno::NOENT) if !dir.is_empty() => {}
            other => return other.map_err(io::Error::from),
        }
        let mut cur = open_dir(&self.root)?;
        for segment in dir.split('/') {
            match open_dir_at(&cur, segment) {
                Ok(next) => cur = next,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, segment, Mode::from_raw_mode(DIR_MODE)) {
                        // EEXIST: a racing put created it and may not have fsynced `cur` yet.
                        Ok(()) | Err(Errno::EXIST) => rustix::fs::fsync(&cur)?,
                        Err(err) => return Err(err.into()),
                    }
                    cur = open_dir_at(&cur, segment)?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(cur)
    }

    fn put_inner(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> io::Result<PutOutcome> {
        let (dir_rel, name) = split_key(key);
        let dir = self.open_dir_creating(dir_rel)?;
        if mode == PutMode::Create {
            // Cheap early answer for the common dedup hit, sparing the write and fsync of the
            // data. Races are still decided by the no-replace rename below.
            match existing_outcome(&dir, name) {
                Ok(outcome) => {
                    rustix::fs::fsync(&dir)?; // see step 4 in the module docs
                    return Ok(outcome);
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        let mut temp = TempFile::create(dir.as_fd())?;
        temp.file.write_all(data)?;
        temp.file.sync_all()?;
        let outcome = match mode {
            PutMode::Overwrite => {
                rustix::fs::renameat(&dir, &temp.name, &dir, name)?;
                temp.named();
                PutOutcome::Written
            }
            PutMode::Create => install_no_replace(&dir, temp, name)?,
        };
        rustix::fs::fsync(&dir)?;
        Ok(outcome)
    }

    /// Unlinks `key` and fsyncs its directory, so that a deleted object (an old snapshot, say)
    /// cannot reappear after a crash once the caller has acted on its removal.
    fn delete_inner(&self, key: &ObjectKey) -> io::Result<()> {
        let (dir_rel, name) = split_key(key);
        let dir = match open_dir(&self.path_of(dir_rel)) {
            Ok(dir) => dir,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            // NOENT: already gone, maybe by a racing delete that has not fsynced yet.
            Ok(()) | Err(Errno::NOENT) => Ok(rustix::fs::fsync(&dir)?),
            // A directory of other keys, not an object.
            Err(Errno::ISDIR) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Opens the regular file holding `key`; anything else under that path is "no object".
    fn open_object(&self, op: &'static str, key: &ObjectKey) -> Result<(File, u64), SinkError> {
        let read_err = |err| self.read_error(op, key, err);
        let file = File::open(self.path_of(key.as_str())).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(not_found(key));
        }
        Ok((file, meta.len()))
    }

    /// Maps an error of a read operation: a missing object is [`SinkError::NotFound`].
    fn read_error(&self, op: &'static str, key: &ObjectKey, err: io::Error) -> SinkError {
        match Errno::from_io_error(&err) {
            Some(Errno::NOENT | Errno::NOTDIR | Errno::ISDIR) => not_found(key),
            _ => map_io_error(&self.location(), op, key.as_str(), err),
        }
    }
}

impl Sink for LocalSink {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        self.put_inner(key, data, mode)
            .map_err(|err| map_io_error(&self.location(), "put", key.as_str(), err))
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        let (mut file, size) = self.open_object("get", key)?;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut data)
            .map_err(|err| self.read_error("get", key, err))?;
        Ok(data)
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        let (file, size) = self.open_object("get_range", key)?;
        SinkError::check_range(key, start, end, size)?;
        let len = usize::try_from(end - start).map_err(|_| SinkError::InvalidRange {
            key: key.to_string(),
            start,
            end,
            size,
        })?;
        let mut data = vec![0; len];
        file.read_exact_at(&mut data, start)
            .map_err(|err| self.read_error("get_range", key, err))?;
        Ok(data)
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        let meta = fs::metadata(self.path_of(key.as_str()))
            .map_err(|err| self.read_error("head", key, err))?;
        if !meta.is_file() {
            return Err(not_found(key));
        }
        let modified = meta
            .modified()
            .map_err(|err| self.read_error("head", key, err))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: meta.len(),
            modified,
        })
    }

    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>
    {
        let (dir, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i + 1], &prefix[i + 1..]),
            None => ("", prefix),
        };
        // The complete segments of the prefix must themselves form a key, or no key can start
        // with it; checking also keeps `..` and the like from ever reaching the filesystem.
        if !dir.is_empty() && ObjectKey::new(&dir[..dir.len() - 1]).is_err() {
            return Ok(Box::new(std::iter::empty()));
        }
        let mut iter = ListIter::new(self);
        match iter.enter(dir.to_owned(), name_prefix.to_owned()) {
            Ok(()) => Ok(Box::new(iter)),
            Err(err) if dir.is_empty() => Err(location_error(&self.root, err.to_string())),
            Err(err) if is_missing(&err) => Ok(Box::new(std::iter::empty())),
            Err(err) => Err(map_io_error(&self.location(), "list", prefix, err)),
        }
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.delete_inner(key)
            .map_err(|err| map_io_error(&self.location(), "delete", key.as_str(), err))
    }

    fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
        leftover::parse_dir(dir)?;
        let mut walk = ListIter::new(self);
        walk.leftovers = Some(Vec::new());
        match walk.enter(dir.to_owned(), String::new()) {
            Ok(()) => {}
            Err(err) if is_missing(&err) => return Ok(Vec::new()),
            Err(err) => return Err(map_io_error(&self.location(), "leftovers", dir, err)),
        }
        for item in walk.by_ref() {
            item?;
        }
        Ok(walk.leftovers.unwrap_or_default())
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
        let rel = leftover.dir().map_or("", ObjectKey::as_str);
        let removed = open_dir(&self.path_of(rel))
            .and_then(|dir| rustix::fs::unlinkat(&dir, leftover.name(), AtFlags::empty()));
        match removed {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(err) => Err(map_io_error(
                &self.location(),
                "remove leftover",
                &leftover.to_string(),
                err.into(),
            )),
        }
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

/// A temp file in the target directory, unlinked on drop unless [`named`](Self::named).
struct TempFile<'d> {
    dir: BorrowedFd<'d>,
    name: String,
    file: File,
    /// Whether drop still has to unlink `name`.
    armed: bool,
}

impl<'d> TempFile<'d> {
    /// Creates `.tmp-<random hex>` in `dir` with mode 0600, retrying on name collisions.
    fn create(dir: BorrowedFd<'d>) -> io::Result<Self> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let mut attempts = 0;
        loop {
            let name = temp_name();
            match rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(FILE_MODE)) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dir,
                        name,
                        file: File::from(fd),
                        armed: true,
                    });
                }
                Err(Errno::EXIST) if attempts + 1 < TEMP_NAME_ATTEMPTS => attempts += 1,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The temp name was renamed to the object's name: there is nothing left to unlink.
    fn named(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match rustix::fs::unlinkat(self.dir, &self.name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(err) => log::warn!("cannot remove temp file {}: {err}", self.name),
        }
    }
}

/// Names the fsynced temp file `name` unless that name exists.
fn install_no_replace(dir: &OwnedFd, temp: TempFile<'_>, name: &str) -> io::Result<PutOutcome> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::RenameFlags;
        match rustix::fs::renameat_with(dir, &temp.name, dir, name, RenameFlags::NOREPLACE) {
            Ok(()) => {
                temp.named();
                return Ok(PutOutcome::Written);
            }
            Err(Errno::EXIST) => return existing_outcome(dir, name),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
            Err(err) => return Err(err.into()),
        }
    }
    link_no_replace(dir, temp, name)
}

/// The portable put-if-absent: hard-link the temp file to `name` (fails if `name` exists), then
/// drop the temp name.
fn link_no_replace(dir: &OwnedFd, temp: TempFile<'_>, name: &str) -> io::Result<PutOutcome> {
    match rustix::fs::linkat(dir, &temp.name, dir, name, AtFlags::empty()) {
        Ok(()) => Ok(PutOutcome::Written), // `temp` drops here, unlinking the temp name
        Err(Errno::EXIST) => existing_outcome(dir, name),
        Err(err) => Err(err.into()),
    }
}

/// `name` exists: fine if it is an object, an error if it is a directory of other keys.
fn existing_outcome(dir: &OwnedFd, name: &str) -> io::Result<PutOutcome> {
    let stat = rustix::fs::statat(dir, name, AtFlags::empty())?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile {
        Ok(PutOutcome::AlreadyExists)
    } else {
        Err(Errno::ISDIR.into())
    }
}

/// One directory being read by [`ListIter`].
struct OpenDir {
    entries: ReadDir,
    /// Its path relative to root with a trailing `/`; `""` for root itself.
    rel: String,
    /// Only entries whose name starts with this are under the listed prefix. Non-empty only
    /// for the directory a prefix such as `chunks/a` ends in.
    name_prefix: String,
}

/// The lazy walk behind [`LocalSink::list`] and [`Sink::leftovers`]: reads one directory at a
/// time and keeps the subdirectories still to visit on an explicit stack, so at most one
/// directory handle is open and memory grows with the number of pending directories, never
/// with the number of objects.
///
/// Each directory is read at most once, identified by device and inode, so symlink loops end
/// and a directory reachable by several paths is listed under the first one found.
struct ListIter<'a> {
    sink: &'a LocalSink,
    current: Option<OpenDir>,
    /// Directories still to read, relative to root, each with a trailing `/`.
    pending: Vec<String>,
    /// `(device, inode)` of every directory opened so far.
    visited: HashSet<(u64, u64)>,
    /// Temp files of puts met on the way, when the walk collects them ([`Sink::leftovers`]).
    leftovers: Option<Vec<Leftover>>,
}

impl<'a> ListIter<'a> {
    fn new(sink: &'a LocalSink) -> ListIter<'a> {
        ListIter {
            sink,
            current: None,
            pending: Vec::new(),
            visited: HashSet::new(),
            leftovers: None,
        }
    }

    /// Makes `rel` the directory being read, unless it was read before.
    fn enter(&mut self, rel: String, name_prefix: String) -> io::Result<()> {
        let path = self.sink.path_of(&rel);
        let meta = fs::metadata(&path)?;
        if self.visited.insert((meta.dev(), meta.ino())) {
            self.current = Some(OpenDir {
                entries: fs::read_dir(&path)?,
                rel,
                name_prefix,
            });
        }
        Ok(())
    }

    fn error(&self, rel: &str, err: io::Error) -> SinkError {
        map_io_error(&self.sink.location(), "list", rel, err)
    }

    /// Queues `key` as a directory to walk, if keys below it can still fit the length limit.
    fn descend(&mut self, key: ObjectKey) {
        if key.as_str().len() + 2 <= ObjectKey::MAX_LEN {
            self.pending.push(format!("{key}/"));
        }
    }
}

impl Iterator for ListIter<'_> {
    type Item = Result<ObjectMeta, SinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(dir) = self.current.as_mut() else {
                let rel = self.pending.pop()?;
                match self.enter(rel.clone(), String::new()) {
                    Ok(()) => {}
                    Err(err) if is_missing(&err) => {} // removed since we saw it
                    Err(err) => return Some(Err(self.error(&rel, err))),
                }
                continue;
            };
            let entry = match dir.entries.next() {
                Some(Ok(entry)) => entry,
                None => {
                    self.current = None;
                    continue;
                }
                Some(Err(err)) => {
                    // Abandon this directory: the caller sees the error, so knows the listing
                    // is incomplete.
                    let rel = dir.rel.clone();
                    self.current = None;
                    return Some(Err(self.error(&rel, err)));
                }
            };
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8, so not a key
            };
            // Dot-names are temp files of puts, running or interrupted; never objects.
            if name.starts_with('.') {
                if let Some(found) = &mut self.leftovers
                    && is_temp_name(&name)
                    && let Ok(meta) = entry.metadata()
                    && meta.is_file()
                {
                    let dir_key = ObjectKey::new(dir.rel.trim_end_matches('/')).ok();
                    found.extend(Leftover::new(dir_key, &name, meta.len()));
                }
                continue;
            }
            if !name.starts_with(&dir.name_prefix) {
                continue;
            }
            let Ok(key) = ObjectKey::new(format!("{}{name}", dir.rel)) else {
                continue; // a stray file or directory that no key can name
            };
            match entry.file_type() {
                Ok(file_type) if file_type.is_dir() => {
                    self.descend(key);
                    continue;
                }
                Ok(_) => {}
                Err(err) if is_missing(&err) => continue,
                Err(err) => return Some(Err(self.error(key.as_str(), err))),
            }
            // A file, or a symlink that may lead to either: follow it.
            let meta = match fs::metadata(entry.path()) {
                Ok(meta) => meta,
                Err(err) if is_missing(&err) => continue, // deleted since readdir
                Err(err) => return Some(Err(self.error(key.as_str(), err))),
            };
            if meta.is_dir() {
                self.descend(key);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            return Some(match meta.modified() {
                Ok(modified) => Ok(ObjectMeta {
                    key,
                    size: meta.len(),
                    modified,
                }),
                Err(err) => Err(self.error(key.as_str(), err)),
            });
        }
    }
}

/// Flags for opening a directory handle (for `*at` calls and fsync).
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(path, DIR_FLAGS, Mode::empty())
}

fn open_dir_at(dir: &OwnedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
}

fn fsync_path(dir: &Path) -> io::Result<()> {
    rustix::fs::fsync(open_dir(dir)?)?;
    Ok(())
}

/// Splits a key into its directory (`""` for a top-level key) and file name.
fn split_key(key: &ObjectKey) -> (&str, &str) {
    key.as_str().rsplit_once('/').unwrap_or(("", key.as_str()))
}

fn absolute(path: &Path) -> Result<PathBuf, SinkError> {
    std::path::absolute(path).map_err(|err| location_error(path, err.to_string()))
}

fn location_error(path: &Path, reason: String) -> SinkError {
    SinkError::Location {
        location: path.display().to_string(),
        reason,
    }
}

fn not_found(key: &ObjectKey) -> SinkError {
    SinkError::NotFound {
        key: key.to_string(),
    }
}

/// Whether `err` says a path (or one of its directories) does not exist.
fn is_missing(err: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(err),
        Some(Errno::NOENT | Errno::NOTDIR)
    )
}

/// Classifies an I/O error of `op` on `key` (or list prefix) at `location`.
fn map_io_error(location: &str, op: &'static str, key: &str, err: io::Error) -> SinkError {
    let retry = match Errno::from_io_error(&err) {
        Some(Errno::NOSPC | Errno::DQUOT) => {
            return SinkError::NoSpace {
                location: location.to_owned(),
                key: key.to_owned(),
            };
        }
        Some(Errno::ACCESS | Errno::PERM) => {
            return SinkError::AccessDenied {
                location: location.to_owned(),
                reason: format!("{op} {key}: {err}"),
            };
        }
        Some(Errno::INTR | Errno::AGAIN | Errno::TIMEDOUT) => Retry::Transient,
        // EIO included: the device reported a failure, retrying will not fix it.
        _ => Retry::Permanent,
    };
    SinkError::Io {
        op,
        key: key.to_owned(),
        retry,
        source: err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s).unwrap()
    }

    fn sink() -> (TempDir, LocalSink) {
        let dir = TempDir::new().unwrap();
        let sink = LocalSink::open(dir.path()).unwrap();
        (dir, sink)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Names in `dir` starting with a dot.
    fn dot_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn conformance() {
        let (_dir, sink) = sink();
        conformance::run_all(&sink);
    }

    #[test]
    fn conformance_through_prefixed() {
        let (_dir, sink) = sink();
        let sink = crate::prefixed::Prefixed::new(std::sync::Arc::new(sink), "sub").unwrap();
        conformance::run_all(&sink);
    }

    /// Plants a temp file below `root` the way a put killed before its rename leaves it.
    fn plant(root: &Path) -> impl Fn(&str, &str, &[u8]) + '_ {
        move |dir, name, data| {
            fs::create_dir_all(root.join(dir)).unwrap();
            fs::write(root.join(dir).join(name), data).unwrap();
        }
    }

    #[test]
    fn leftovers_of_interrupted_puts() {
        let (dir, sink) = sink();
        conformance::leftovers_are_found_and_removed(&sink, &plant(dir.path()));
    }

    #[test]
    fn leftovers_through_prefixed() {
        let (dir, sink) = sink();
        let sink = crate::prefixed::Prefixed::new(std::sync::Arc::new(sink), "sub").unwrap();
        conformance::leftovers_are_found_and_removed(&sink, &plant(&dir.path().join("sub")));
    }

    #[test]
    fn open_missing_or_file_is_location_error_naming_the_path() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("nope");
        match LocalSink::open(&missing) {
            Err(err @ SinkError::Location { .. }) => {
                assert!(
                    err.to_string().contains(&missing.display().to_string()),
                    "{err}"
                )
            }
            other => panic!("expected Location error, got {other:?}"),
        }
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            LocalSink::open(&file),
            Err(SinkError::Location { .. })
        ));
    }

    #[test]
    fn create_makes_private_directories() {
        let dir = TempDir::new().unwrap();
        let root = dir.path().join("a/b/repo");
        let sink = LocalSink::create(&root).unwrap();
        assert_eq!(sink.location(), root.display().to_string());
        for d in ["a", "a/b", "a/b/repo"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        LocalSink::create(&root).unwrap(); // existing: fine
    }

    #[test]
    fn files_are_0600_and_created_dirs_0700() {
        let (dir, sink) = sink();
        sink.put(&key("a/b/c"), b"x", PutMode::Create).unwrap();
        sink.put(&key("top"), b"x", PutMode::Overwrite).unwrap();
        assert_eq!(mode(&dir.path().join("a/b/c")), 0o600);
        assert_eq!(mode(&dir.path().join("top")), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    }

    #[test]
    fn interrupted_put_leaves_nothing_visible() {
        let (dir, sink) = sink();
        // What a crash between "create temp" and "rename" leaves behind.
        fs::create_dir(dir.path().join("chunks")).unwrap();
        fs::write(dir.path().join("chunks/.tmp-0123456789abcdef"), b"partial").unwrap();
        fs::write(dir.path().join(".tmp-fedcba9876543210"), b"partial").unwrap();
        fs::create_dir(dir.path().join(".tmp-dir")).unwrap();
        fs::write(dir.path().join(".tmp-dir/obj"), b"partial").unwrap();

        assert_eq!(sink.list("").unwrap().count(), 0);
        assert_eq!(sink.list("chunks/").unwrap().count(), 0);
        assert!(matches!(
            sink.get(&key("chunks/obj")),
            Err(SinkError::NotFound { .. })
        ));
        // The key is free for a real put, which leaves no temp file of its own.
        sink.put(&key("chunks/obj"), b"whole", PutMode::Create)
            .unwrap();
        assert_eq!(sink.get(&key("chunks/obj")).unwrap(), b"whole");
        assert_eq!(
            dot_files(&dir.path().join("chunks")),
            [".tmp-0123456789abcdef"]
        );
    }

    #[test]
    fn no_temp_files_remain_after_any_put() {
        let (dir, sink) = sink();
        let k = key("d/obj");
        sink.put(&k, b"1", PutMode::Create).unwrap();
        sink.put(&k, b"2", PutMode::Create).unwrap(); // AlreadyExists
        sink.put(&k, b"3", PutMode::Overwrite).unwrap();
        // An error after the temp file exists: a directory is in the way.
        fs::create_dir_all(dir.path().join("d/blocked/x")).unwrap();
        assert!(
            sink.put(&key("d/blocked"), b"4", PutMode::Overwrite)
                .is_err()
        );
        assert!(dot_files(&dir.path().join("d")).is_empty());
    }

    #[test]
    fn no_replace_installs_keep_existing_objects() {
        let (dir, _sink) = sink();
        let fd = open_dir(dir.path()).unwrap();
        // Both the renameat2 path and the link fallback, on a new and then an existing name.
        type Install = fn(&OwnedFd, TempFile<'_>, &str) -> io::Result<PutOutcome>;
        for (name, install) in [
            ("renamed", install_no_replace as Install),
            ("linked", link_no_replace as Install),
        ] {
            let mut temp = TempFile::create(fd.as_fd()).unwrap();
            temp.file.write_all(b"first").unwrap();
            assert_eq!(install(&fd, temp, name).unwrap(), PutOutcome::Written);
            let mut temp = TempFile::create(fd.as_fd()).unwrap();
            temp.file.write_all(b"second").unwrap();
            assert_eq!(install(&fd, temp, name).unwrap(), PutOutcome::AlreadyExists);
            assert_eq!(fs::read(dir.path().join(name)).unwrap(), b"first", "{name}");
            assert!(dot_files(dir.path()).is_empty(), "{name}");
        }
    }

    #[test]
    fn object_and_directory_cannot_share_a_key() {
        let (_dir, sink) = sink();
        sink.put(&key("a/b"), b"x", PutMode::Create).unwrap();
        // `a` is a directory: not an object, and not "already existing" either.
        assert!(matches!(
            sink.get(&key("a")),
            Err(SinkError::NotFound { .. })
        ));
        assert!(matches!(
            sink.head(&key("a")),
            Err(SinkError::NotFound { .. })
        ));
        let err = sink.put(&key("a"), b"y", PutMode::Create).unwrap_err();
        assert_eq!(err.retry(), Retry::Permanent, "{err}");
        sink.delete(&key("a")).unwrap();
        assert_eq!(sink.get(&key("a/b")).unwrap(), b"x");
        // `a/b` is a file: nothing can be stored under it.
        assert!(sink.put(&key("a/b/c"), b"z", PutMode::Create).is_err());
    }

    #[test]
    fn list_skips_stray_names_and_bad_prefixes() {
        let (dir, sink) = sink();
        sink.put(&key("ok/obj"), b"x", PutMode::Create).unwrap();
        fs::write(dir.path().join("ok/sp ace"), b"").unwrap();
        fs::write(dir.path().join("ok/caf\u{e9}"), b"").unwrap();
        fs::create_dir(dir.path().join("bad dir")).unwrap();
        fs::write(dir.path().join("bad dir/obj"), b"").unwrap();
        let keys: Vec<_> = sink.list("").unwrap().map(|m| m.unwrap().key).collect();
        assert_eq!(keys, [key("ok/obj")]);
        for prefix in ["../", "/", "ok//", "./ok/"] {
            assert_eq!(sink.list(prefix).unwrap().count(), 0, "{prefix:?}");
        }
    }

    #[test]
    fn list_follows_symlinked_directories_without_looping() {
        let (dir, sink) = sink();
        sink.put(&key("real/obj"), b"x", PutMode::Create).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("real/loop")).unwrap();
        let keys: Vec<_> = sink
            .list("link/")
            .unwrap()
            .map(|m| m.unwrap().key)
            .collect();
        assert_eq!(keys, [key("link/obj")]);
        // The loop ends: each directory is read once, so `obj` is listed once, under whichever
        // path reached it first.
        let all: Vec<_> = sink.list("").unwrap().map(|m| m.unwrap().key).collect();
        assert_eq!(all.len(), 1, "{all:?}");
    }

    #[test]
    fn list_of_missing_root_is_location_error() {
        let dir = TempDir::new().unwrap();
        let sink = LocalSink::open(dir.path()).unwrap();
        drop(dir);
        assert!(matches!(sink.list(""), Err(SinkError::Location { .. })));
        assert_eq!(sink.list("x/").unwrap().count(), 0);
    }

    #[test]
    fn io_errors_are_classified() {
        let map = |errno: Errno| map_io_error("/repo", "put", "k", errno.into());
        assert!(matches!(map(Errno::NOSPC), SinkError::NoSpace { .. }));
        assert!(matches!(map(Errno::DQUOT), SinkError::NoSpace { .. }));
        assert!(matches!(map(Errno::ACCESS), SinkError::AccessDenied { .. }));
        assert!(matches!(map(Errno::PERM), SinkError::AccessDenied { .. }));
        assert_eq!(map(Errno::IO).retry(), Retry::Permanent);
        assert_eq!(map(Errno::INVAL).retry(), Retry::Permanent);
        for transient in [Errno::INTR, Errno::AGAIN, Errno::TIMEDOUT] {
            assert_eq!(map(transient).retry(), Retry::Transient);
        }
        let (_dir, sink) = sink();
        let err = sink.read_error("get", &key("k"), Errno::NOENT.into());
        assert!(matches!(err, SinkError::NotFound { .. }));
    }
}
