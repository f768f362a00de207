//! Fault-injecting decorators for engine tests. Each wraps an `Arc<dyn Sink>` and is itself a
//! [`Sink`], so they stack.
//!
//! - [`FailAfter`]: the first N mutating operations succeed, every later one fails.
//! - [`FlipBitOnRead`]: reads return the stored data with one bit flipped.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Sink, SinkError};

type ListResult<'a> =
    Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>;

/// Lets the first `allowed` mutating operations (put, delete) through; every later one fails
/// with [`SinkError::Injected`] without reaching the inner sink. Reads always pass through.
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

    fn admit(&self, op: &str, key: &ObjectKey) -> Result<(), SinkError> {
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

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        self.inner.get(key)
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        self.inner.get_range(key, start, end)
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        self.inner.head(key)
    }

    fn list<'a>(&'a self, prefix: &str) -> ListResult<'a> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.admit("delete", key)?;
        self.inner.delete(key)
    }

    fn location(&self) -> String {
        self.inner.location()
    }
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
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        self.inner.put(key, data, mode)
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        Ok(self.corrupt(key, 0, self.inner.get(key)?))
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        Ok(self.corrupt(key, start, self.inner.get_range(key, start, end)?))
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        self.inner.head(key)
    }

    fn list<'a>(&'a self, prefix: &str) -> ListResult<'a> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.inner.delete(key)
    }

    fn location(&self) -> String {
        self.inner.location()
    }
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
}
