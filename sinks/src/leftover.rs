//! Leftovers: what interrupted puts leave behind, and the temp names that make them findable.
//!
//! Backends that cannot publish an object in one request (a local directory, NFS) write it
//! under a temp name first and then give it its key. A process killed between the two leaves
//! the temp object behind. Temp names start with [`TEMP_PREFIX`], a dot-name no
//! [`ObjectKey`] can take, so they are never read or listed as objects; [`Sink::leftovers`]
//! finds them and [`Sink::remove_leftover`] removes them.
//!
//! [`Sink::leftovers`]: crate::Sink::leftovers
//! [`Sink::remove_leftover`]: crate::Sink::remove_leftover

use std::fmt;

use crate::{ObjectKey, Retry, SinkError};

/// How every temp name of an in-flight put starts.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A fresh temp name: [`TEMP_PREFIX`] and 16 random hex digits.
pub fn temp_name() -> String {
    format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>())
}

/// Whether `name` (one path segment) is a temp name of this crate.
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The directory argument of [`Sink::leftovers`](crate::Sink::leftovers): `""` is the root
/// (`None`), otherwise a key followed by `/`.
pub fn parse_dir(dir: &str) -> Result<Option<ObjectKey>, SinkError> {
    if dir.is_empty() {
        return Ok(None);
    }
    dir.strip_suffix('/')
        .and_then(|key| ObjectKey::new(key).ok())
        .map(Some)
        .ok_or_else(|| SinkError::Io {
            op: "leftovers",
            key: dir.to_owned(),
            retry: Retry::Permanent,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a leftover directory is \"\" or a key followed by '/'",
            ),
        })
}

/// A temp object of a put that never finished: its directory (a key prefix, `None` for the
/// sink's root), its temp name and its size. Only [`Leftover::new`] makes one, so a leftover
/// can never name anything but a temp object inside the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    dir: Option<ObjectKey>,
    name: String,
    size: u64,
}

impl Leftover {
    /// A leftover named `name` in directory `dir`; `None` unless `name` is a temp name.
    pub fn new(dir: Option<ObjectKey>, name: &str, size: u64) -> Option<Leftover> {
        is_temp_name(name).then(|| Leftover {
            dir,
            name: name.to_owned(),
            size,
        })
    }

    /// The directory holding it, as a key (`chunks/ab`), or `None` for the root.
    pub fn dir(&self) -> Option<&ObjectKey> {
        self.dir.as_ref()
    }

    /// Its temp name (`.tmp-0123456789abcdef`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes it occupies.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The same leftover seen from a sink whose root is directory `dir` of this one's.
    pub fn with_dir(&self, dir: Option<ObjectKey>) -> Leftover {
        Leftover {
            dir,
            ..self.clone()
        }
    }
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dir {
            Some(dir) => write!(f, "{dir}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temp_names_make_leftovers() {
        assert!(is_temp_name(&temp_name()));
        assert!(is_temp_name(".tmp-0123456789abcdef"));
        for name in [
            "",
            ".tmp-",
            "tmp-01",
            ".tmp-01/x",
            ".tmp-../..",
            "config",
            ".tmp-0g",
        ] {
            assert!(!is_temp_name(name), "{name:?}");
            assert!(Leftover::new(None, name, 1).is_none(), "{name:?}");
        }
        let dir = ObjectKey::new("chunks/ab").unwrap();
        let leftover = Leftover::new(Some(dir), ".tmp-00ff", 7).unwrap();
        assert_eq!(leftover.to_string(), "chunks/ab/.tmp-00ff");
        assert_eq!(leftover.size(), 7);
        assert_eq!(leftover.with_dir(None).to_string(), ".tmp-00ff");
        assert_eq!(parse_dir("").unwrap(), None);
        assert_eq!(
            parse_dir("chunks/ab/").unwrap().unwrap().as_str(),
            "chunks/ab"
        );
        for bad in ["chunks", "/", "a//", "../"] {
            assert!(parse_dir(bad).is_err(), "{bad:?}");
        }
    }
}
