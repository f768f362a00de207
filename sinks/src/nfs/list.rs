//! The lazy walk behind [`NfsSink::list`](super::NfsSink), its leftovers and the removal of
//! empty directory trees: one READDIRPLUS page at a time,
//! with the subdirectories still to visit on an explicit stack, so memory grows with one page
//! and the number of pending directories, never with the number of objects.
//!
//! NFS has no hard links to directories and the walk never follows symlinks, so it cannot loop.

use std::collections::VecDeque;

use super::wire::{Attr, CookieVerf, Entry, Handle, Status};
use super::{NfsSink, modified};
use crate::leftover::{self, Leftover, is_temp_name};
use crate::{ObjectKey, ObjectMeta, SinkError};

/// A directory still to read.
struct Pending {
    /// Key prefix of its entries: `""` for the repository directory, else `a/b/`.
    rel: String,
    /// Only names starting with this are listed (the part of the list prefix after `rel`).
    name_prefix: String,
    /// Its handle, when READDIRPLUS of the parent returned one.
    handle: Option<Handle>,
}

/// The directory being read.
struct Reading {
    rel: String,
    name_prefix: String,
    handle: Handle,
    cookie: u64,
    verifier: CookieVerf,
    entries: VecDeque<Entry>,
    eof: bool,
}

pub(super) struct List<'a> {
    sink: &'a NfsSink,
    pending: Vec<Pending>,
    current: Option<Reading>,
    /// What a survey collects on the way (see [`List::survey`]); `None` for a plain listing.
    survey: Option<Survey>,
}

/// What [`List::survey`] finds besides objects.
#[derive(Default)]
pub(super) struct Survey {
    /// Temp files of puts, running or interrupted.
    pub(super) leftovers: Vec<Leftover>,
    /// Every directory below the surveyed one, each found after its parent (`a/b`, no `/`).
    pub(super) dirs: Vec<String>,
}

impl<'a> List<'a> {
    pub(super) fn new(sink: &'a NfsSink, prefix: &str) -> List<'a> {
        let (rel, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        List {
            sink,
            pending: vec![Pending {
                rel: rel.to_owned(),
                name_prefix: name_prefix.to_owned(),
                handle: None,
            }],
            current: None,
            survey: None,
        }
    }

    /// Walks directory `dir` (`""` or `a/b/`) and everything below it, collecting the temp
    /// files of puts and the directories (those whose names keys can take).
    pub(super) fn survey(sink: &'a NfsSink, dir: &str) -> Result<Survey, SinkError> {
        leftover::parse_dir(dir)?;
        let mut walk = List::new(sink, dir);
        walk.survey = Some(Survey::default());
        for item in walk.by_ref() {
            item?;
        }
        Ok(walk.survey.unwrap_or_default())
    }

    /// Starts reading the next pending directory; `Ok(false)` when none is left.
    fn enter_next(&mut self) -> Result<bool, SinkError> {
        let Some(next) = self.pending.pop() else {
            return Ok(false);
        };
        let handle = match next.handle {
            Some(handle) => Some(handle),
            None => {
                let dir = next.rel.trim_end_matches('/');
                self.sink.retrying("list", &next.rel, |conn| {
                    self.sink.resolve_dir(conn, dir, false)
                })?
            }
        };
        // A missing directory lists as empty.
        if let Some(handle) = handle {
            self.current = Some(Reading {
                rel: next.rel,
                name_prefix: next.name_prefix,
                handle,
                cookie: 0,
                verifier: CookieVerf::default(),
                entries: VecDeque::new(),
                eof: false,
            });
        }
        Ok(true)
    }

    /// Fetches the next page of the current directory. A directory removed since it was seen
    /// (stale handle) ends as if it were empty.
    fn fetch_page(&mut self) -> Result<(), SinkError> {
        let reading = self.current.as_mut().expect("a directory is being read");
        let page = self.sink.retrying("list", &reading.rel, |conn| {
            match conn.readdirplus(&reading.handle, reading.cookie, reading.verifier) {
                Ok(page) => Ok(Some(page)),
                Err(e) if matches!(e.status(), Some(Status::Stale | Status::NoEnt)) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let Some(page) = page else {
            reading.eof = true;
            return Ok(());
        };
        reading.verifier = page.verifier;
        reading.cookie = page.cookie;
        // A page without entries that is not the last would loop forever: end there.
        reading.eof = page.eof || page.entries.is_empty();
        reading.entries.extend(page.entries);
        Ok(())
    }

    /// The attributes of `entry`, looked up when READDIRPLUS left them out; `None` when it was
    /// removed since.
    fn attr_of(&self, entry: &Entry) -> Result<Option<Attr>, SinkError> {
        if let Some(attr) = &entry.attr {
            return Ok(Some(attr.clone()));
        }
        let reading = self.current.as_ref().expect("a directory is being read");
        let path = format!("{}{}", reading.rel, entry.name);
        self.sink.retrying("list", &path, |conn| {
            match conn.lookup_attr(&reading.handle, &entry.name) {
                Ok((_, attr)) => Ok(Some(attr)),
                Err(e) if e.status() == Some(Status::NoEnt) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Records `entry` when it is a temp file of a put and this walk is a survey.
    fn note_leftover(&mut self, entry: &Entry) -> Result<(), SinkError> {
        if self.survey.is_none() || !is_temp_name(&entry.name) {
            return Ok(());
        }
        let Some(attr) = self.attr_of(entry)?.filter(Attr::is_file) else {
            return Ok(());
        };
        let reading = self.current.as_ref().expect("a directory is being read");
        let dir = ObjectKey::new(reading.rel.trim_end_matches('/')).ok();
        let found = Leftover::new(dir, &entry.name, attr.size);
        if let Some(survey) = &mut self.survey {
            survey.leftovers.extend(found);
        }
        Ok(())
    }

    /// The object an entry names, queuing it instead when it is a directory.
    fn visit(&mut self, entry: Entry) -> Option<Result<ObjectMeta, SinkError>> {
        let reading = self.current.as_ref().expect("a directory is being read");
        // Dot-names are `.`, `..` and temp files of puts, running or interrupted; never objects.
        if entry.name.starts_with('.') {
            return self.note_leftover(&entry).err().map(Err);
        }
        if !entry.name.starts_with(&reading.name_prefix) {
            return None;
        }
        let key = ObjectKey::new(format!("{}{}", reading.rel, entry.name)).ok()?;
        let attr = match self.attr_of(&entry) {
            Ok(Some(attr)) => attr,
            Ok(None) => return None, // deleted since READDIRPLUS
            Err(err) => return Some(Err(err)),
        };
        if attr.is_dir() {
            if let Some(survey) = &mut self.survey {
                survey.dirs.push(key.to_string());
            }
            if key.as_str().len() + 2 <= ObjectKey::MAX_LEN {
                self.pending.push(Pending {
                    rel: format!("{key}/"),
                    name_prefix: String::new(),
                    handle: entry.handle,
                });
            }
            return None;
        }
        attr.is_file().then(|| {
            Ok(ObjectMeta {
                key,
                size: attr.size,
                modified: modified(&attr),
            })
        })
    }
}

impl Iterator for List<'_> {
    type Item = Result<ObjectMeta, SinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(reading) = self.current.as_mut() else {
                match self.enter_next() {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(err) => return Some(Err(err)),
                }
            };
            match reading.entries.pop_front() {
                Some(entry) => {
                    if let Some(item) = self.visit(entry) {
                        return Some(item);
                    }
                }
                None if reading.eof => self.current = None,
                None => {
                    if let Err(err) = self.fetch_page() {
                        // Abandon this directory: the caller sees the error, so knows the
                        // listing is incomplete.
                        self.current = None;
                        return Some(Err(err));
                    }
                }
            }
        }
    }
}
