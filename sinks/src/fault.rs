//! Fault-injecting decorators for engine tests. Each wraps an `Arc<dyn Sink>` and is itself a
//! [`Sink`], so they stack.
//!
//! - [`FailAfter`]: the first N mutating operations succeed, every later one fails.
//! - [`FlipBitOnRead`]: reads return the stored data with one bit flipped.
//! - [`StallPuts`]: puts wait at a gate, counted, until the test opens it.
//! - [`KillAfter`]: the process dies by SIGKILL right after its Nth mutation (crash tests).
//! - [`BeforeRead`]: runs a test's action before each read of chosen keys (take a server down
//!   at an exact point of a reader's work).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::{Leftover, ObjectKey, ObjectMeta, PutMode, PutOutcome, Sink, SinkError};

/// Implements the named [`Sink`] methods by passing each call to `self.inner` unchanged, so a
/// decorator writes only the methods it changes.
macro_rules! forward_to_inner {
    ($($method:ident),* $(,)?) => { $(forward_to_inner!(@one $method);)* };
    (@one put) => {
        fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
            self.inner.put(key, data, mode)
        }
    };
    (@one get) => {
        fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
            self.inner.get(key)
        }
    };
    (@one get_range) => {
        fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
            self.inner.get_range(key, start, end)
        }
    };
    (@one head) => {
        fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
            self.inner.head(key)
        }
    };
    (@one list) => {
        fn list<'a>(&'a self, prefix: &str) -> ListResult<'a> {
            self.inner.list(prefix)
        }
    };
    (@one delete) => {
        fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
            self.inner.delete(key)
        }
    };
    (@one leftovers) => {
        fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
            self.inner.leftovers(dir)
        }
    };
    (@one remove_leftover) => {
        fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
            self.inner.remove_leftover(leftover)
        }
    };
    (@one location) => {
        fn location(&self) -> String {
            self.inner.location()
        }
    };
}

type ListResult<'a> =
    Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>;

/// Lets the first `allowed` mutating operations (put, delete, remove_leftover) through; every
/// later one fails with [`SinkError::Injected`] without reaching the inner sink. Reads always
/// pass through.
///
/// Invariant: the inner sink receives exactly `min(allowed, attempts)` mutations, however many
/// threads race (the counter is one atomic increment per attempt).
#[derive(Debug)]
pub struct FailAfter {
    inner: Arc<dyn Sink>,
    allowed: u64,
    attempts: AtomicU64,
}

impl FailAfter {
    pub fn new(inner: Arc<dyn Sink>, allowed: u64) -> Self {
        FailAfter {
            inner,
            allowed,
            attempts: AtomicU64::new(0),
        }
    }

    /// Mutating operations attempted so far, including failed ones.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    fn admit(&self, op: &str, key: &dyn fmt::Display) -> Result<(), SinkError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        if n < self.allowed {
            Ok(())
        } else {
            Err(SinkError::Injected(format!(
                "{op} {key}: mutation #{} after the allowed {}",
                n + 1,
                self.allowed
            )))
        }
    }
}

impl Sink for FailAfter {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        self.admit("put", key)?;
        self.inner.put(key, data, mode)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.admit("delete", key)?;
        self.inner.delete(key)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
        self.admit("remove leftover", leftover)?;
        self.inner.remove_leftover(leftover)
    }

    forward_to_inner!(get, get_range, head, list, leftovers, location);
}

/// Kills this process with SIGKILL right after its `n`th mutating operation (put, delete or
/// remove_leftover, whatever its outcome) returns: a crash at an exact, repeatable point of a
/// run, for the CLI's crash-safety tests (`FERRY_TEST_KILL_AFTER_MUTATIONS`). Reads pass through.
///
/// The kill comes after the inner sink returned, so it models a crash between two steps:
/// point `n` is "after mutation `n`, before mutation `n + 1`".
#[derive(Debug)]
pub struct KillAfter {
    inner: Arc<dyn Sink>,
    n: u64,
    done: AtomicU64,
}

impl KillAfter {
    pub fn new(inner: Arc<dyn Sink>, n: u64) -> Self {
        KillAfter {
            inner,
            n,
            done: AtomicU64::new(0),
        }
    }

    fn count(&self) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // SIGKILL cannot be caught; nothing runs past this point.
            std::process::abort();
        }
    }
}

impl Sink for KillAfter {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        let result = self.inner.put(key, data, mode);
        self.count();
        result
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        let result = self.inner.delete(key);
        self.count();
        result
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
        let result = self.inner.remove_leftover(leftover);
        self.count();
        result
    }

    forward_to_inner!(get, get_range, head, list, leftovers, location);
}

/// Which keys [`FlipBitOnRead`] corrupts.
type KeyFilter = Box<dyn Fn(&ObjectKey) -> bool + Send + Sync>;

/// Corrupts reads of chosen keys: bit `bit` of the byte at object offset `offset` is flipped in
/// what [`get`](Sink::get) and [`get_range`](Sink::get_range) return, so both show the same
/// corrupted object. Reads not covering `offset` (an object shorter than it, a range outside it)
/// are returned intact. Stored data, writes, `head` and `list` are untouched.
pub struct FlipBitOnRead {
    inner: Arc<dyn Sink>,
    offset: u64,
    mask: u8,
    filter: KeyFilter,
}

impl FlipBitOnRead {
    /// Corrupts reads of every key. `bit` is taken modulo 8.
    pub fn all(inner: Arc<dyn Sink>, offset: u64, bit: u8) -> Self {
        Self::matching(inner, offset, bit, |_| true)
    }

    /// Corrupts reads of the keys for which `filter` returns true. `bit` is taken modulo 8.
    pub fn matching(
        inner: Arc<dyn Sink>,
        offset: u64,
        bit: u8,
        filter: impl Fn(&ObjectKey) -> bool + Send + Sync + 'static,
    ) -> Self {
        FlipBitOnRead {
            inner,
            offset,
            mask: 1 << (bit % 8),
            filter: Box::new(filter),
        }
    }

    /// Flips the bit in `data`, which holds the object's bytes from offset `start` on.
    fn corrupt(&self, key: &ObjectKey, start: u64, mut data: Vec<u8>) -> Vec<u8> {
        if (self.filter)(key) {
            let index = self
                .offset
                .checked_sub(start)
                .and_then(|i| usize::try_from(i).ok());
            if let Some(byte) = index.and_then(|i| data.get_mut(i)) {
                *byte ^= self.mask;
            }
        }
        data
    }
}

impl fmt::Debug for FlipBitOnRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlipBitOnRead")
            .field("inner", &self.inner)
            .field("offset", &self.offset)
            .field("mask", &self.mask)
            .finish_non_exhaustive()
    }
}

impl Sink for FlipBitOnRead {
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        Ok(self.corrupt(key, 0, self.inner.get(key)?))
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        Ok(self.corrupt(key, start, self.inner.get_range(key, start, end)?))
    }

    forward_to_inner!(
        put,
        head,
        list,
        delete,
        leftovers,
        remove_leftover,
        location
    );
}

/// Runs `action` before every read ([`get`](Sink::get), [`get_range`](Sink::get_range)) of the
/// keys `filter` chooses, then passes the read on; everything else passes straight through.
/// A test's hook into the exact point where a reader reaches its data: an outage that starts
/// after the manifests were read and before the first chunk is.
pub struct BeforeRead {
    inner: Arc<dyn Sink>,
    filter: KeyFilter,
    action: Box<dyn Fn() + Send + Sync>,
}

impl BeforeRead {
    pub fn matching(
        inner: Arc<dyn Sink>,
        filter: impl Fn(&ObjectKey) -> bool + Send + Sync + 'static,
        action: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        BeforeRead {
            inner,
            filter: Box::new(filter),
            action: Box::new(action),
        }
    }

    fn before(&self, key: &ObjectKey) {
        if (self.filter)(key) {
            (self.action)();
        }
    }
}

impl fmt::Debug for BeforeRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BeforeRead")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Sink for BeforeRead {
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        self.before(key);
        self.inner.get(key)
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        self.before(key);
        self.inner.get_range(key, start, end)
    }

    forward_to_inner!(
        put,
        head,
        list,
        delete,
        leftovers,
        remove_leftover,
        location
    );
}

/// Holds every put (of the chosen keys) at a gate until [`open`](StallPuts::open) is called,
/// and counts those puts in flight (entered, not yet returned), so a test can freeze a writer mid-upload, observe how
/// many writes it keeps outstanding, and then let it finish. Reads, `head`, `list` and `delete`
/// pass through untouched, also while the gate is closed, and so do puts of keys the filter
/// does not choose ([`matching`](StallPuts::matching)); they are not counted.
///
/// Contract:
/// - The gate starts closed and, once opened, stays open: `open` releases every blocked put and
///   every later put goes straight to the inner sink.
/// - A put blocked at the gate has not reached the inner sink: while the gate is closed the
///   inner sink receives no put from this decorator.
/// - A put counts as in flight from its entry until it returns (including its time in the
///   inner sink, and even if the inner sink panics); [`max_in_flight`](StallPuts::max_in_flight)
///   is the largest count ever observed, updated on entry under the same lock, so it is exact.
/// - Waiting is on a condition variable with a deadline, never a sleep: tests built on
///   [`wait_for_in_flight`](StallPuts::wait_for_in_flight) are deterministic, and the timeout
///   only bounds how long a broken caller makes them hang.
pub struct StallPuts {
    inner: Arc<dyn Sink>,
    filter: KeyFilter,
    state: Mutex<StallState>,
    /// Signalled when the gate opens.
    opened: Condvar,
    /// Signalled when a put enters.
    entered: Condvar,
}

#[derive(Debug, Default)]
struct StallState {
    open: bool,
    in_flight: usize,
    max_in_flight: usize,
}

impl fmt::Debug for StallPuts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StallPuts")
            .field("inner", &self.inner)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl StallPuts {
    /// Wraps `inner` with the gate closed, stalling every put.
    pub fn new(inner: Arc<dyn Sink>) -> Self {
        Self::matching(inner, |_| true)
    }

    /// Wraps `inner` with the gate closed, stalling only puts of keys for which `filter`
    /// returns true.
    pub fn matching(
        inner: Arc<dyn Sink>,
        filter: impl Fn(&ObjectKey) -> bool + Send + Sync + 'static,
    ) -> Self {
        StallPuts {
            inner,
            filter: Box::new(filter),
            state: Mutex::new(StallState::default()),
            opened: Condvar::new(),
            entered: Condvar::new(),
        }
    }

    /// Blocks until at least `n` puts are in flight (while the gate is closed: blocked at it) or
    /// `timeout` passes; returns whether the count was reached.
    pub fn wait_for_in_flight(&self, n: usize, timeout: Duration) -> bool {
        let (state, _) = self
            .entered
            .wait_timeout_while(self.state(), timeout, |s| s.in_flight < n)
            .unwrap_or_else(PoisonError::into_inner);
        state.in_flight >= n
    }

    /// Opens the gate for good: releases every blocked put and lets every later one through.
    pub fn open(&self) {
        self.state().open = true;
        self.opened.notify_all();
    }

    /// Puts entered and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// The most puts ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state().max_in_flight
    }

    /// The counters are only changed under the lock, each by one statement, so a poisoned
    /// lock (a panicking test thread) still holds consistent values.
    fn state(&self) -> MutexGuard<'_, StallState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One put in flight at a [`StallPuts`]: counted on creation, uncounted on drop, so a panic in
/// the inner sink does not leave the count too high.
struct InFlight<'a>(&'a StallPuts);

impl<'a> InFlight<'a> {
    /// Counts a put in, then waits for the gate.
    fn enter(stall: &'a StallPuts) -> Self {
        let mut state = stall.state();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        stall.entered.notify_all();
        let guard = InFlight(stall);
        drop(
            stall
                .opened
                .wait_while(state, |s| !s.open)
                .unwrap_or_else(PoisonError::into_inner),
        );
        guard
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.state().in_flight -= 1;
    }
}

impl Sink for StallPuts {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        let _in_flight = (self.filter)(key).then(|| InFlight::enter(self));
        // Outside the lock: released puts reach the inner sink concurrently.
        self.inner.put(key, data, mode)
    }

    forward_to_inner!(
        get,
        get_range,
        head,
        list,
        delete,
        leftovers,
        remove_leftover,
        location
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySink;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s).unwrap()
    }

    #[test]
    fn fail_after_counts_mutations_only() {
        let inner = Arc::new(MemorySink::new());
        let sink = FailAfter::new(inner.clone(), 2);
        sink.put(&key("a"), b"1", PutMode::Create).unwrap();
        sink.get(&key("a")).unwrap(); // reads are free
        sink.delete(&key("a")).unwrap();
        let err = sink.put(&key("b"), b"2", PutMode::Create).unwrap_err();
        assert!(matches!(err, SinkError::Injected(_)), "{err}");
        assert!(matches!(
            sink.delete(&key("b")),
            Err(SinkError::Injected(_))
        ));
        assert_eq!(sink.attempts(), 4);
        assert!(
            inner.head(&key("b")).is_err(),
            "failed put reached the inner sink"
        );
        assert_eq!(sink.list("").unwrap().count(), 0);
    }

    #[test]
    fn fail_after_zero_fails_everything_mutating() {
        let sink = FailAfter::new(Arc::new(MemorySink::new()), 0);
        assert!(sink.put(&key("a"), b"", PutMode::Overwrite).is_err());
    }

    #[test]
    fn flip_bit_corrupts_matching_reads_only() {
        let inner = Arc::new(MemorySink::new());
        let data: Vec<u8> = (0..100).collect();
        inner.put(&key("chunks/x"), &data, PutMode::Create).unwrap();
        inner.put(&key("config"), &data, PutMode::Create).unwrap();
        let sink =
            FlipBitOnRead::matching(inner.clone(), 10, 3, |k| k.as_str().starts_with("chunks/"));

        let got = sink.get(&key("chunks/x")).unwrap();
        let diff: Vec<usize> = (0..100).filter(|&i| got[i] != data[i]).collect();
        assert_eq!(diff, vec![10]);
        assert_eq!(got[10] ^ data[10], 1 << 3);

        assert_eq!(sink.get_range(&key("chunks/x"), 5, 15).unwrap()[5], got[10]);
        assert_eq!(
            sink.get_range(&key("chunks/x"), 11, 20).unwrap(),
            &data[11..20]
        );
        assert_eq!(sink.get(&key("config")).unwrap(), data);
        assert_eq!(
            inner.get(&key("chunks/x")).unwrap(),
            data,
            "stored data changed"
        );
    }

    #[test]
    fn flip_bit_past_the_end_leaves_data_intact() {
        let inner = Arc::new(MemorySink::new());
        inner.put(&key("a"), b"abc", PutMode::Create).unwrap();
        inner.put(&key("empty"), b"", PutMode::Create).unwrap();
        let sink = FlipBitOnRead::all(inner, 3, 0);
        assert_eq!(sink.get(&key("a")).unwrap(), b"abc");
        assert_eq!(sink.get(&key("empty")).unwrap(), b"");
    }

    /// Long enough never to expire on a loaded machine; only a broken decorator waits it out.
    const PATIENCE: Duration = Duration::from_secs(60);

    #[test]
    fn stall_holds_puts_until_open_and_counts_them() {
        let inner = Arc::new(MemorySink::new());
        inner.put(&key("before"), b"x", PutMode::Create).unwrap();
        let sink = StallPuts::new(inner.clone());
        std::thread::scope(|scope| {
            let puts: Vec<_> = (0..3)
                .map(|i| {
                    let sink = &sink;
                    scope
                        .spawn(move || sink.put(&key(&format!("p/{i}")), &[i; 10], PutMode::Create))
                })
                .collect();
            assert!(sink.wait_for_in_flight(3, PATIENCE), "{sink:?}");
            assert_eq!(sink.in_flight(), 3);
            assert_eq!(
                inner.list("p/").unwrap().count(),
                0,
                "a stalled put reached the inner sink"
            );
            // Everything but put passes through while the gate is closed.
            assert_eq!(sink.get(&key("before")).unwrap(), b"x");
            assert_eq!(sink.get_range(&key("before"), 0, 1).unwrap(), b"x");
            assert_eq!(sink.head(&key("before")).unwrap().size, 1);
            assert_eq!(sink.list("").unwrap().count(), 1);
            sink.delete(&key("before")).unwrap();
            assert!(inner.head(&key("before")).is_err());

            sink.open();
            for put in puts {
                assert_eq!(put.join().unwrap().unwrap(), PutOutcome::Written);
            }
        });
        for i in 0..3u8 {
            assert_eq!(inner.get(&key(&format!("p/{i}"))).unwrap(), [i; 10]);
        }
        assert_eq!(sink.in_flight(), 0);
        assert_eq!(sink.max_in_flight(), 3);

        // Open for good: a later put goes straight through and is counted.
        sink.put(&key("after"), b"y", PutMode::Create).unwrap();
        assert_eq!(inner.get(&key("after")).unwrap(), b"y");
        assert_eq!(sink.max_in_flight(), 3);
        assert_eq!(sink.in_flight(), 0);
    }

    #[test]
    fn stall_wait_reports_an_unreached_count() {
        let sink = StallPuts::new(Arc::new(MemorySink::new()));
        assert!(sink.wait_for_in_flight(0, Duration::ZERO));
        // No put was ever started, so the count cannot be reached, however long the wait.
        assert!(!sink.wait_for_in_flight(1, Duration::from_millis(1)));
        assert_eq!(sink.max_in_flight(), 0);
    }

    #[test]
    fn stall_opened_before_any_put_never_blocks() {
        let inner = Arc::new(MemorySink::new());
        let sink = StallPuts::new(inner.clone());
        sink.open();
        assert_eq!(
            sink.put(&key("a"), b"1", PutMode::Create).unwrap(),
            PutOutcome::Written
        );
        assert_eq!(
            sink.put(&key("a"), b"2", PutMode::Create).unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(inner.get(&key("a")).unwrap(), b"1");
        assert_eq!(sink.max_in_flight(), 1);
    }

    #[test]
    fn before_read_runs_its_action_before_reads_of_chosen_keys_only() {
        let inner: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let calls = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&calls);
        let sink = BeforeRead::matching(
            Arc::clone(&inner),
            |k| k.as_str().starts_with("chunks/"),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        );
        for k in ["chunks/a", "config"] {
            sink.put(&key(k), b"data", PutMode::Create).unwrap();
        }
        assert_eq!(sink.get(&key("config")).unwrap(), b"data");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "not a chosen key");
        assert_eq!(sink.get(&key("chunks/a")).unwrap(), b"data");
        assert_eq!(sink.get_range(&key("chunks/a"), 1, 3).unwrap(), b"at");
        sink.head(&key("chunks/a")).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "get and get_range of chunks/a"
        );
    }
}
