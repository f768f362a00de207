//! Object keys: the only names a sink ever stores under.

use std::fmt;

/// A validated object key: one or more `/`-separated segments of `[A-Za-z0-9._-]`, no segment
/// empty, `.` or `..`, none starting with `.` (backends use dot-names for temporary files), at
/// most 512 bytes. Keys built from untrusted input (a manifest, a URL) can therefore never
/// escape the repository on any backend.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

/// Why a string is not an [`ObjectKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct InvalidKey {
    pub key: String,
    pub reason: &'static str,
}

impl ObjectKey {
    /// Longest accepted key, in bytes.
    pub const MAX_LEN: usize = 512;

    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidKey> {
        let key = key.into();
        let fail = |reason| {
            Err(InvalidKey {
                key: key.clone(),
                reason,
            })
        };
        if key.is_empty() {
            return fail("empty");
        }
        if key.len() > Self::MAX_LEN {
            return fail("longer than 512 bytes");
        }
        for segment in key.split('/') {
            if segment.is_empty() {
                return fail("empty path segment");
            }
            if segment.starts_with('.') {
                return fail("segment starts with '.'");
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return fail("characters outside [A-Za-z0-9._-]");
            }
        }
        Ok(ObjectKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_repository_keys() {
        for k in ["config", "chunks/ab/ab01", "snapshots/0123-abc_x.y"] {
            assert_eq!(ObjectKey::new(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn rejects_escapes_and_odd_names() {
        for k in [
            "", "/abs", "a//b", "a/", "..", "a/../b", ".hidden", "a/.tmp", "nul\0", "sp ace", "é",
        ] {
            assert!(ObjectKey::new(k).is_err(), "{k:?} accepted");
        }
        assert!(ObjectKey::new("a".repeat(513)).is_err());
    }
}
