//! [`Prefixed`]: confines a sink to the keys under one prefix.
//!
//! Key `k` is stored as `<prefix>/k` in the inner sink, and listing strips `<prefix>/` again,
//! so the layers above see a sink of their own. Keys outside `<prefix>/` are neither visible
//! nor reachable through the decorator. Errors come from the inner sink unchanged, so they
//! name the full inner key.

use std::io;
use std::sync::Arc;

use crate::{
    InvalidKey, Leftover, ObjectKey, ObjectMeta, PutMode, PutOutcome, Retry, Sink, SinkError,
};

/// A sink whose every key lives under `prefix/` in an inner sink.
#[derive(Debug)]
pub struct Prefixed {
    inner: Arc<dyn Sink>,
    prefix: ObjectKey,
}

impl Prefixed {
    /// Confines `inner` to `prefix/`. The prefix must itself be a valid [`ObjectKey`] (no
    /// leading, trailing or doubled `/`).
    pub fn new(inner: Arc<dyn Sink>, prefix: &str) -> Result<Self, InvalidKey> {
        Ok(Prefixed {
            inner,
            prefix: ObjectKey::new(prefix)?,
        })
    }

    pub fn prefix(&self) -> &ObjectKey {
        &self.prefix
    }

    /// The inner key for `key`. Fails only when the result exceeds [`ObjectKey::MAX_LEN`].
    fn inner_key(&self, op: &'static str, key: &ObjectKey) -> Result<ObjectKey, SinkError> {
        ObjectKey::new(format!("{}/{key}", self.prefix)).map_err(|err| SinkError::Io {
            op,
            key: key.to_string(),
            retry: Retry::Permanent,
            source: io::Error::new(io::ErrorKind::InvalidInput, err),
        })
    }

    /// The outer key for an inner key the inner sink listed under our prefix.
    fn outer_key(&self, inner: &ObjectKey) -> Result<ObjectKey, SinkError> {
        let stripped = inner
            .as_str()
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        // Stripping whole leading segments of a valid key leaves a valid key.
        stripped
            .and_then(|rest| ObjectKey::new(rest).ok())
            .ok_or_else(|| SinkError::Io {
                op: "list",
                key: inner.to_string(),
                retry: Retry::Permanent,
                source: io::Error::other(format!(
                    "inner sink listed a key outside prefix {}/",
                    self.prefix
                )),
            })
    }
}

impl Sink for Prefixed {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        self.inner.put(&self.inner_key("put", key)?, data, mode)
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        self.inner.get(&self.inner_key("get", key)?)
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        self.inner
            .get_range(&self.inner_key("get_range", key)?, start, end)
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        let mut meta = self.inner.head(&self.inner_key("head", key)?)?;
        meta.key = key.clone();
        Ok(meta)
    }

    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>
    {
        let inner = self.inner.list(&format!("{}/{prefix}", self.prefix))?;
        Ok(Box::new(inner.map(|item| {
            let mut meta = item?;
            meta.key = self.outer_key(&meta.key)?;
            Ok(meta)
        })))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.inner.delete(&self.inner_key("delete", key)?)
    }

    fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
        crate::leftover::parse_dir(dir)?;
        let inner = self.inner.leftovers(&format!("{}/{dir}", self.prefix))?;
        inner
            .into_iter()
            .map(|leftover| {
                let dir = leftover
                    .dir()
                    .expect("inner leftovers lie under the prefix");
                let outer = if dir == &self.prefix {
                    None
                } else {
                    Some(self.outer_key(dir)?)
                };
                Ok(leftover.with_dir(outer))
            })
            .collect()
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
        let dir = match leftover.dir() {
            Some(dir) => self.inner_key("remove leftover", dir)?,
            None => self.prefix.clone(),
        };
        self.inner.remove_leftover(&leftover.with_dir(Some(dir)))
    }

    fn location(&self) -> String {
        format!("{}/{}", self.inner.location(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;
    use crate::memory::MemorySink;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s).unwrap()
    }

    #[test]
    fn conformance() {
        let inner = Arc::new(MemorySink::new());
        conformance::run_all(&Prefixed::new(inner, "bench/run-1").unwrap());
    }

    #[test]
    fn maps_keys_and_hides_the_rest() {
        let inner = Arc::new(MemorySink::new());
        let outside = key("benchmark/x");
        inner.put(&outside, b"outside", PutMode::Create).unwrap();
        let sink = Prefixed::new(inner.clone(), "bench").unwrap();

        sink.put(&key("a/b"), b"data", PutMode::Create).unwrap();
        assert_eq!(inner.get(&key("bench/a/b")).unwrap(), b"data");
        assert_eq!(sink.head(&key("a/b")).unwrap().key, key("a/b"));

        let listed: Vec<ObjectKey> = sink.list("").unwrap().map(|m| m.unwrap().key).collect();
        assert_eq!(listed, vec![key("a/b")]);
        assert!(matches!(
            sink.get(&key("x")),
            Err(SinkError::NotFound { .. })
        ));
        assert_eq!(sink.location(), "memory/bench");

        sink.delete(&key("a/b")).unwrap();
        assert!(inner.get(&key("bench/a/b")).is_err());
        assert_eq!(inner.get(&outside).unwrap(), b"outside");
    }

    #[test]
    fn rejects_invalid_prefixes() {
        for prefix in ["", "/a", "a/", "a//b", "..", ".hidden"] {
            assert!(
                Prefixed::new(Arc::new(MemorySink::new()), prefix).is_err(),
                "{prefix:?} accepted"
            );
        }
    }

    #[test]
    fn too_long_combined_key_is_an_error_not_a_panic() {
        let sink = Prefixed::new(Arc::new(MemorySink::new()), "p").unwrap();
        let long = key(&"k".repeat(ObjectKey::MAX_LEN));
        let err = sink.put(&long, b"", PutMode::Create).unwrap_err();
        assert_eq!(err.retry(), Retry::Permanent);
    }
}
