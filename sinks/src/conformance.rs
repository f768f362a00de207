//! The test suite every backend must pass: [`run_all`] checks the [`Sink`] contract, and each
//! check is also a pub fn of its own. A violation panics with a message naming the sink's
//! location, the check and what went wrong.
//!
//! Safe to point at shared storage (a bucket, an NFS export): each check works only under a
//! fresh `conformance-<random hex>/<check>/` prefix, never lists or touches anything outside
//! it, and deletes what it wrote, also when it panics. (A directory backend may keep the empty
//! directories.)

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use rand::RngCore;

use crate::{Leftover, ObjectKey, ObjectMeta, PutMode, PutOutcome, Sink, SinkError};

/// The size of a chunk the engine writes.
const CHUNK_SIZE: usize = 4 << 20;
/// Threads the concurrency checks race (as many as a typical uploader pool).
const THREADS: usize = 8;
/// Objects the listing check writes: more than one page of S3's 1000-key `ListObjectsV2`.
const MANY: usize = 1100;

/// Runs every check, in order.
pub fn run_all(sink: &dyn Sink) {
    round_trips(sink);
    missing_objects(sink);
    overwrite_replaces(sink);
    create_keeps_existing(sink);
    ranged_reads(sink);
    list_returns_each_object_once(sink);
    list_prefix_ends_mid_segment(sink);
    concurrent_create_same_content(sink);
    concurrent_overwrite_is_atomic(sink);
    delete_removes(sink);
}

/// Empty, tiny and chunk-sized objects come back byte for byte, with the right `head` size.
pub fn round_trips(sink: &dyn Sink) {
    let s = Scratch::new(sink, "round_trips");
    for (name, data) in [
        ("empty", Vec::new()),
        ("one", random_bytes(1)),
        ("hundred", random_bytes(100)),
        ("chunk", random_bytes(CHUNK_SIZE)),
    ] {
        let key = s.key(name);
        s.assert_written(&key, &data, PutMode::Create);
        s.assert_content(&key, &data);
        let meta = s.ok(format!("head {key}"), sink.head(&key));
        s.check(
            meta.key == key,
            format!("head {key} returned key {}", meta.key),
        );
        s.check(
            meta.size == data.len() as u64,
            format!("head {key}: size {} for {} bytes", meta.size, data.len()),
        );
    }
    s.finish();
}

/// Reads of objects that were never written are [`SinkError::NotFound`].
pub fn missing_objects(sink: &dyn Sink) {
    let s = Scratch::new(sink, "missing_objects");
    let file = s.key("file");
    s.assert_written(&file, b"x", PutMode::Create);
    // Never written; under a "directory" that does not exist; "under" an object.
    for key in [s.key("absent"), s.key("no/such/dir/x"), s.key("file/x")] {
        s.assert_not_found(&format!("get {key}"), sink.get(&key));
        s.assert_not_found(&format!("get_range {key}"), sink.get_range(&key, 0, 0));
        s.assert_not_found(&format!("head {key}"), sink.head(&key));
    }
    s.finish();
}

/// [`PutMode::Overwrite`] creates, then replaces whole (a shorter object leaves no tail).
pub fn overwrite_replaces(sink: &dyn Sink) {
    let s = Scratch::new(sink, "overwrite_replaces");
    let key = s.key("obj");
    let (long, short) = (random_bytes(1000), random_bytes(10));
    s.assert_written(&key, &long, PutMode::Overwrite);
    s.assert_written(&key, &short, PutMode::Overwrite);
    s.assert_content(&key, &short);
    let size = s.ok(format!("head {key}"), sink.head(&key)).size;
    s.check(
        size == 10,
        format!("head {key}: size {size} after overwrite to 10 bytes"),
    );
    s.finish();
}

/// [`PutMode::Create`] on an existing key reports [`PutOutcome::AlreadyExists`] and changes
/// nothing, whether the new content differs or not, for small objects and chunk-sized ones (a
/// server may refuse a large conditional put before reading its body and close the
/// connection).
pub fn create_keeps_existing(sink: &dyn Sink) {
    let s = Scratch::new(sink, "create_keeps_existing");
    let key = s.key("obj");
    let first = random_bytes(100);
    s.assert_written(&key, &first, PutMode::Create);
    let chunk_key = s.key("chunk");
    let chunk = random_bytes(CHUNK_SIZE);
    s.assert_written(&chunk_key, &chunk, PutMode::Create);
    let outcome = s.ok(
        format!("put {chunk_key} (Create, {CHUNK_SIZE} bytes, again)"),
        sink.put(&chunk_key, &chunk, PutMode::Create),
    );
    s.check(
        outcome == PutOutcome::AlreadyExists,
        format!("put {chunk_key} (Create) over an existing object returned {outcome:?}"),
    );
    s.assert_content(&chunk_key, &chunk);
    for data in [random_bytes(100), random_bytes(3), first.clone()] {
        let outcome = s.ok(
            format!("put {key} (Create)"),
            sink.put(&key, &data, PutMode::Create),
        );
        s.check(
            outcome == PutOutcome::AlreadyExists,
            format!("put {key} (Create) over an existing object returned {outcome:?}"),
        );
        s.assert_content(&key, &first);
    }
    s.finish();
}

/// Ranges at the start, middle and end, empty ones, and out-of-range ones.
pub fn ranged_reads(sink: &dyn Sink) {
    let s = Scratch::new(sink, "ranged_reads");
    let key = s.key("obj");
    let data = random_bytes(1000);
    s.assert_written(&key, &data, PutMode::Create);
    for (start, end) in [
        (0, 10),
        (400, 600),
        (990, 1000),
        (0, 1000),
        (500, 500),
        (1000, 1000),
    ] {
        let what = format!("get_range {key} {start}..{end}");
        let got = s.ok(&what, sink.get_range(&key, start, end));
        assert_bytes(&s.context(&what), &got, &data[start as usize..end as usize]);
    }
    for (start, end) in [
        (0, 1001),
        (999, 1001),
        (1001, 1002),
        (600, 400),
        (u64::MAX, u64::MAX),
    ] {
        let what = format!("get_range {key} {start}..{end} of a 1000-byte object");
        match sink.get_range(&key, start, end) {
            Err(SinkError::InvalidRange {
                start: s_,
                end: e_,
                size: 1000,
                ..
            }) if (s_, e_) == (start, end) => {}
            other => s.fail(format!(
                "{what}: expected InvalidRange, got {}",
                describe(&other)
            )),
        }
    }
    let empty = s.key("empty");
    s.assert_written(&empty, b"", PutMode::Create);
    let got = s.ok(
        format!("get_range {empty} 0..0"),
        sink.get_range(&empty, 0, 0),
    );
    s.check(
        got.is_empty(),
        format!("get_range {empty} 0..0 returned {} bytes", got.len()),
    );
    let result = sink.get_range(&empty, 0, 1);
    s.check(
        matches!(result, Err(SinkError::InvalidRange { .. })),
        format!(
            "get_range {empty} 0..1: expected InvalidRange, got {}",
            describe(&result)
        ),
    );
    s.finish();
}

/// Listing 1100 objects, flat and nested, yields each exactly once with its size, and
/// nothing from a sibling prefix.
pub fn list_returns_each_object_once(sink: &dyn Sink) {
    let s = Scratch::new(sink, "list_many");
    let objects: Vec<(ObjectKey, Vec<u8>)> = (0..MANY)
        .map(|i| {
            let name = if i % 2 == 0 {
                format!("many/obj-{i:04}")
            } else {
                format!("many/d-{:02}/obj-{i:04}", i % 16)
            };
            (s.key(&name), vec![i as u8; i % 7])
        })
        .collect();
    parallel(&objects, |(key, data)| {
        s.assert_written(key, data, PutMode::Create)
    });
    for sibling in ["many-sibling", "manyx/obj", "other/obj"] {
        s.assert_written(&s.key(sibling), b"outside", PutMode::Create);
    }

    let listed = s.list("many/");
    let mut seen: HashMap<&ObjectKey, usize> = HashMap::new();
    for meta in &listed {
        *seen.entry(&meta.key).or_default() += 1;
    }
    for (key, count) in &seen {
        s.check(
            *count == 1,
            format!("list many/ returned {key} {count} times"),
        );
    }
    for (key, data) in &objects {
        let meta = listed.iter().find(|m| m.key == *key);
        match meta {
            None => s.fail(format!("list many/ did not return {key}")),
            Some(meta) => s.check(
                meta.size == data.len() as u64,
                format!(
                    "list many/: {key} has size {}, stored {}",
                    meta.size,
                    data.len()
                ),
            ),
        }
    }
    s.check(
        listed.len() == MANY,
        format!(
            "list many/ returned {} objects, {MANY} were stored",
            listed.len()
        ),
    );
    s.finish();
}

/// A prefix that ends inside a segment matches keys and "directories" starting with it.
pub fn list_prefix_ends_mid_segment(sink: &dyn Sink) {
    let s = Scratch::new(sink, "list_mid_segment");
    let all = [
        "mid/ab/x",
        "mid/ab/y/z",
        "mid/a1",
        "mid/a",
        "mid/b/x",
        "mid/ba",
        "mid/xa",
    ];
    for name in all {
        s.assert_written(&s.key(name), name.as_bytes(), PutMode::Create);
    }
    let cases: [(&str, &[&str]); 10] = [
        ("mid/a", &["mid/ab/x", "mid/ab/y/z", "mid/a1", "mid/a"]),
        ("mid/b", &["mid/b/x", "mid/ba"]),
        ("mid/ab/", &["mid/ab/x", "mid/ab/y/z"]),
        ("mid/ab/y/z", &["mid/ab/y/z"]),
        ("mid/", &all),
        ("mi", &all),
        ("mid/q", &[]),
        ("nothing/", &[]),
        ("mid//", &[]),
        ("mid/../", &[]),
    ];
    for (prefix, expected) in cases {
        let mut got: Vec<String> = s.list(prefix).into_iter().map(|m| s.name(&m.key)).collect();
        got.sort();
        let mut expected: Vec<&str> = expected.to_vec();
        expected.sort();
        s.check(
            got == expected,
            format!("list {prefix:?} returned {got:?}, expected {expected:?}"),
        );
    }
    s.finish();
}

/// Eight writers racing to create one key with identical content all succeed, at least
/// one of them writes, and the object is intact.
pub fn concurrent_create_same_content(sink: &dyn Sink) {
    let s = Scratch::new(sink, "concurrent_create");
    for round in 0..4 {
        let key = s.key(&format!("obj-{round}"));
        let data = random_bytes(1 << 20);
        let barrier = Barrier::new(THREADS);
        let outcomes: Vec<PutOutcome> = thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        sink.put(&key, &data, PutMode::Create)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    let result = handle
                        .join()
                        .unwrap_or_else(|_| s.fail("a writer panicked"));
                    s.ok(format!("concurrent put {key} (Create)"), result)
                })
                .collect()
        });
        s.check(
            outcomes.contains(&PutOutcome::Written),
            format!("{THREADS} concurrent creates of {key}: none returned Written"),
        );
        s.assert_content(&key, &data);
    }
    s.finish();
}

/// Eight writers repeatedly overwriting one key with distinct contents, while a reader
/// reads it: every read is one complete value, and so is the final object.
pub fn concurrent_overwrite_is_atomic(sink: &dyn Sink) {
    let s = Scratch::new(sink, "concurrent_overwrite");
    let key = s.key("obj");
    let initial = random_bytes(64 << 10);
    s.assert_written(&key, &initial, PutMode::Create);
    let values: Vec<Vec<u8>> = (0..THREADS).map(|_| random_bytes(64 << 10)).collect();
    let is_complete = |data: &[u8]| data == initial || values.iter().any(|v| v == data);
    let done = AtomicBool::new(false);
    let barrier = Barrier::new(THREADS + 1);
    thread::scope(|scope| {
        let reader = scope.spawn(|| {
            barrier.wait();
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) && reads < 10_000 {
                let data = s.ok(format!("get {key} during overwrites"), sink.get(&key));
                s.check(
                    is_complete(&data),
                    format!("get {key} during overwrites returned a torn or unknown value"),
                );
                reads += 1;
            }
        });
        let writers: Vec<_> = values
            .iter()
            .map(|value| {
                scope.spawn(|| {
                    barrier.wait();
                    for _ in 0..4 {
                        let outcome = s.ok(
                            format!("concurrent put {key} (Overwrite)"),
                            sink.put(&key, value, PutMode::Overwrite),
                        );
                        s.check(
                            outcome == PutOutcome::Written,
                            format!("put {key} (Overwrite) returned {outcome:?}"),
                        );
                    }
                })
            })
            .collect();
        for writer in writers {
            writer
                .join()
                .unwrap_or_else(|_| s.fail("a writer panicked"));
        }
        done.store(true, Ordering::SeqCst);
        reader
            .join()
            .unwrap_or_else(|_| s.fail("the reader panicked"));
    });
    let last = s.ok(format!("get {key}"), sink.get(&key));
    s.check(
        values.contains(&last),
        format!("after concurrent overwrites {key} is not one of the values written"),
    );
    s.finish();
}

/// A deleted object is gone for get, head and list, and its key is free again; deleting a
/// missing key (twice, or never written, or in a missing "directory") is `Ok`.
pub fn delete_removes(sink: &dyn Sink) {
    let s = Scratch::new(sink, "delete");
    let key = s.key("dir/obj");
    let keep = s.key("dir/keep");
    s.assert_written(&key, b"doomed", PutMode::Create);
    s.assert_written(&keep, b"kept", PutMode::Create);
    s.ok(format!("delete {key}"), sink.delete(&key));
    s.assert_not_found(&format!("get {key} after delete"), sink.get(&key));
    s.assert_not_found(&format!("head {key} after delete"), sink.head(&key));
    let listed: Vec<ObjectKey> = s.list("").into_iter().map(|m| m.key).collect();
    s.check(
        listed == [keep.clone()],
        format!("list after delete returned {listed:?}, expected only {keep}"),
    );
    for missing in [key.clone(), s.key("never"), s.key("no/such/dir/x")] {
        s.ok(
            format!("delete of missing {missing}"),
            sink.delete(&missing),
        );
    }
    s.assert_written(&key, b"again", PutMode::Create);
    s.assert_content(&key, b"again");
    s.assert_content(&keep, b"kept");
    s.finish();
}

/// What an interrupted put leaves: `plant(dir, name, data)` must create temp object `name` with
/// `data` in directory `dir` (`""` or a key followed by `/`) of the sink, the way the backend's
/// own put does before it is killed (a local file, a file on the NFS export).
pub type PlantLeftover<'a> = &'a dyn Fn(&str, &str, &[u8]);

/// Temp objects of interrupted puts are invisible to get and list, are found by `leftovers`
/// (in the directory asked for and below, with their sizes) and go with `remove_leftover`
/// (idempotent), leaving every object intact. Only for backends whose puts use temp objects.
pub fn leftovers_are_found_and_removed(sink: &dyn Sink, plant: PlantLeftover<'_>) {
    let s = Scratch::new(sink, "leftovers");
    let kept = s.key("a/kept");
    s.assert_written(&kept, b"kept", PutMode::Create);
    let (deep_name, top_name) = (".tmp-00000000000000a1", ".tmp-00000000000000b2");
    plant(&format!("{}a/", s.prefix), deep_name, &[1; 100]);
    plant(&s.prefix, top_name, &[2; 7]);
    let listed: Vec<ObjectKey> = s.list("").into_iter().map(|m| m.key).collect();
    s.check(
        listed == [kept.clone()],
        format!("list shows leftovers: {listed:?}"),
    );
    let found = |dir: &str| -> Vec<(String, u64)> {
        let mut found: Vec<(String, u64)> = s
            .ok(format!("leftovers {dir:?}"), sink.leftovers(dir))
            .iter()
            .map(|l| (l.to_string(), l.size()))
            .collect();
        found.sort();
        found
    };
    let (deep, top) = (
        format!("{}a/{deep_name}", s.prefix),
        format!("{}{top_name}", s.prefix),
    );
    let all = found(&s.prefix);
    s.check(
        all == [(top, 7), (deep.clone(), 100)],
        format!("leftovers found {all:?}"),
    );
    let below = found(&format!("{}a/", s.prefix));
    s.check(
        below == [(deep, 100)],
        format!("leftovers of a/ found {below:?}"),
    );
    let leftovers = s.ok("leftovers", sink.leftovers(&s.prefix));
    for leftover in leftovers.iter().chain(&leftovers) {
        s.ok(
            format!("remove leftover {leftover}"),
            sink.remove_leftover(leftover),
        );
    }
    let after = found(&s.prefix);
    s.check(
        after.is_empty(),
        format!("leftovers after removal: {after:?}"),
    );
    s.assert_content(&kept, b"kept");
    s.finish();
}

/// One check's private corner of the sink: a fresh `conformance-<hex>/<check>/` prefix,
/// emptied when the check finishes or panics.
struct Scratch<'s> {
    sink: &'s dyn Sink,
    check: &'static str,
    prefix: String,
}

impl<'s> Scratch<'s> {
    fn new(sink: &'s dyn Sink, check: &'static str) -> Self {
        let prefix = format!("conformance-{:016x}/{check}/", rand::random::<u64>());
        Scratch {
            sink,
            check,
            prefix,
        }
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(format!("{}{name}", self.prefix))
            .unwrap_or_else(|err| self.fail(format!("test bug: {err}")))
    }

    /// `key` without the scratch prefix.
    fn name(&self, key: &ObjectKey) -> String {
        let name = key.as_str().strip_prefix(&self.prefix);
        name.unwrap_or_else(|| self.fail(format!("{key} is outside {}", self.prefix)))
            .to_owned()
    }

    /// Every object under the scratch prefix followed by `prefix`, collected.
    fn list(&self, prefix: &str) -> Vec<ObjectMeta> {
        let what = format!("list {prefix:?}");
        let full = format!("{}{prefix}", self.prefix);
        let iter = self.ok(&what, self.sink.list(&full));
        iter.map(|item| self.ok(&what, item))
            .inspect(|meta| {
                if !meta.key.as_str().starts_with(&full) {
                    self.fail(format!("{what} returned {}, outside the prefix", meta.key));
                }
            })
            .collect()
    }

    fn context(&self, what: &str) -> String {
        format!(
            "conformance {} on {}: {what}",
            self.check,
            self.sink.location()
        )
    }

    #[track_caller]
    fn fail(&self, what: impl Display) -> ! {
        panic!("{}", self.context(&what.to_string()))
    }

    #[track_caller]
    fn check(&self, condition: bool, what: impl Display) {
        if !condition {
            self.fail(what)
        }
    }

    #[track_caller]
    fn ok<T>(&self, what: impl Display, result: Result<T, SinkError>) -> T {
        result.unwrap_or_else(|err| self.fail(format!("{what} failed: {err}")))
    }

    #[track_caller]
    fn assert_written(&self, key: &ObjectKey, data: &[u8], mode: PutMode) {
        let outcome = self.ok(
            format!("put {key} ({mode:?})"),
            self.sink.put(key, data, mode),
        );
        self.check(
            outcome == PutOutcome::Written,
            format!("put {key} ({mode:?}) of a new object returned {outcome:?}"),
        );
    }

    #[track_caller]
    fn assert_content(&self, key: &ObjectKey, expected: &[u8]) {
        let got = self.ok(format!("get {key}"), self.sink.get(key));
        assert_bytes(&self.context(&format!("get {key}")), &got, expected);
    }

    #[track_caller]
    fn assert_not_found<T>(&self, what: &str, result: Result<T, SinkError>) {
        if !matches!(result, Err(SinkError::NotFound { .. })) {
            self.fail(format!(
                "{what}: expected NotFound, got {}",
                describe(&result)
            ));
        }
    }

    /// Deletes everything under the prefix, in parallel, and any leftovers there.
    fn clean(&self) -> Result<(), SinkError> {
        let leftovers: Vec<Leftover> = self.sink.leftovers(&self.prefix)?;
        for leftover in &leftovers {
            self.sink.remove_leftover(leftover)?;
        }
        let keys: Vec<ObjectKey> = self
            .sink
            .list(&self.prefix)?
            .map(|item| item.map(|meta| meta.key))
            .collect::<Result<_, _>>()?;
        let failures = std::sync::Mutex::new(Vec::new());
        parallel(&keys, |key| {
            if let Err(err) = self.sink.delete(key) {
                failures
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(err);
            }
        });
        let failures = failures
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.into_iter().next().map_or(Ok(()), Err)
    }

    /// Ends a passing check: checks that its completed puts left no leftovers, cleans up, and
    /// checks that the prefix lists empty afterwards.
    fn finish(self) {
        let leftovers = self.ok("leftovers", self.sink.leftovers(&self.prefix));
        self.check(
            leftovers.is_empty(),
            format!("completed puts left temp objects: {leftovers:?}"),
        );
        let cleaned = self.clean();
        self.ok("cleanup", cleaned);
        let left = self.list("");
        self.check(
            left.is_empty(),
            format!(
                "{} objects still listed after deleting them all",
                left.len()
            ),
        );
    }
}

impl Drop for Scratch<'_> {
    /// Best-effort cleanup when a check panicked (after `finish`, there is nothing to do).
    fn drop(&mut self) {
        if thread::panicking()
            && let Err(err) = self.clean()
        {
            log::warn!("conformance cleanup of {} failed: {err}", self.prefix);
        }
    }
}

/// Runs `f` on every item, from [`THREADS`] threads.
fn parallel<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    let per_thread = items.len().div_ceil(THREADS).max(1);
    thread::scope(|scope| {
        for part in items.chunks(per_thread) {
            let f = &f;
            scope.spawn(move || part.iter().for_each(f));
        }
    });
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// Compares object bytes without printing megabytes on a mismatch.
#[track_caller]
fn assert_bytes(context: &str, got: &[u8], expected: &[u8]) {
    if got != expected {
        let first_diff = got.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "{context}: got {} bytes, expected {}; first difference at {}",
            got.len(),
            expected.len(),
            first_diff.map_or("the end of the shorter".to_owned(), |i| format!("byte {i}"))
        );
    }
}

fn describe<T>(result: &Result<T, SinkError>) -> String {
    match result {
        Ok(_) => "Ok".to_owned(),
        Err(err) => format!("error {err:?}"),
    }
}

/// The suite must catch broken sinks, not only pass good ones.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySink;

    #[derive(Debug, Clone, Copy)]
    enum Flaw {
        CreateOverwrites,
        ListsTwice,
        ClampsRanges,
        DeleteOfMissingFails,
        MissingIsIo,
        ListIgnoresMidSegment,
    }

    /// A memory sink with one contract violation.
    #[derive(Debug)]
    struct Broken(MemorySink, Flaw);

    impl Sink for Broken {
        fn put(
            &self,
            key: &ObjectKey,
            data: &[u8],
            mode: PutMode,
        ) -> Result<PutOutcome, SinkError> {
            match self.1 {
                Flaw::CreateOverwrites => self.0.put(key, data, PutMode::Overwrite),
                _ => self.0.put(key, data, mode),
            }
        }

        fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
            match (self.1, self.0.get(key)) {
                (Flaw::MissingIsIo, Err(SinkError::NotFound { key })) => Err(SinkError::Io {
                    op: "get",
                    key,
                    retry: crate::Retry::Permanent,
                    source: std::io::ErrorKind::NotFound.into(),
                }),
                (_, result) => result,
            }
        }

        fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
            match self.1 {
                Flaw::ClampsRanges => {
                    let data = self.0.get(key)?;
                    let end = (end as usize).min(data.len());
                    Ok(data[(start as usize).min(end)..end].to_vec())
                }
                _ => self.0.get_range(key, start, end),
            }
        }

        fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
            self.0.head(key)
        }

        fn list<'a>(
            &'a self,
            prefix: &str,
        ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>
        {
            let mut items: Vec<ObjectMeta> = self.0.list(prefix)?.collect::<Result<_, _>>()?;
            match self.1 {
                Flaw::ListsTwice => items.extend(items.first().cloned()),
                // Treats a prefix as whole segments: does not descend into `mid/ab/`.
                Flaw::ListIgnoresMidSegment if !prefix.ends_with('/') => {
                    items.retain(|m| !m.key.as_str()[prefix.len()..].contains('/'))
                }
                _ => {}
            }
            Ok(Box::new(items.into_iter().map(Ok)))
        }

        fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
            match self.1 {
                Flaw::DeleteOfMissingFails => {
                    self.0.head(key)?;
                    self.0.delete(key)
                }
                _ => self.0.delete(key),
            }
        }

        fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
            self.0.leftovers(dir)
        }

        fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
            self.0.remove_leftover(leftover)
        }

        fn location(&self) -> String {
            format!("broken({:?})", self.1)
        }
    }

    fn broken(flaw: Flaw) -> Broken {
        Broken(MemorySink::new(), flaw)
    }

    #[test]
    fn passes_and_leaves_nothing_behind() {
        let sink = MemorySink::new();
        run_all(&sink);
        assert_eq!(sink.list("").unwrap().count(), 0);
    }

    #[test]
    #[should_panic(expected = "over an existing object returned Written")]
    fn catches_create_that_overwrites() {
        create_keeps_existing(&broken(Flaw::CreateOverwrites));
    }

    #[test]
    #[should_panic(expected = "2 times")]
    fn catches_duplicate_listing() {
        list_returns_each_object_once(&broken(Flaw::ListsTwice));
    }

    #[test]
    #[should_panic(expected = "expected InvalidRange")]
    fn catches_clamped_ranges() {
        ranged_reads(&broken(Flaw::ClampsRanges));
    }

    #[test]
    #[should_panic(expected = "delete of missing")]
    fn catches_delete_of_missing_failing() {
        delete_removes(&broken(Flaw::DeleteOfMissingFails));
    }

    #[test]
    #[should_panic(expected = "expected NotFound")]
    fn catches_missing_reported_as_io() {
        missing_objects(&broken(Flaw::MissingIsIo));
    }

    #[test]
    #[should_panic(expected = "list \"mid/a\" returned")]
    fn catches_prefix_matching_only_whole_segments() {
        list_prefix_ends_mid_segment(&broken(Flaw::ListIgnoresMidSegment));
    }

    #[test]
    fn cleans_up_after_a_failed_check() {
        let sink = broken(Flaw::CreateOverwrites);
        let result = std::panic::catch_unwind(|| create_keeps_existing(&sink));
        assert!(result.is_err());
        assert_eq!(sink.0.list("").unwrap().count(), 0);
    }
}
