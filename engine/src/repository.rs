//! A repository: the config, chunk objects and snapshot manifests in one sink.

use std::sync::Arc;

use ferry_sinks::{ObjectKey, PutMode, PutOutcome, Sink, SinkError};

use crate::chunk_id::ChunkId;
use crate::config::RepoConfig;
use crate::error::EngineError;
use crate::manifest::{Manifest, ManifestError, SnapshotMeta, snapshot_id_of};

/// Key of the config object.
pub const CONFIG_KEY: &str = "config";
/// Prefix of chunk objects: `chunks/<first two hex digits>/<64 hex digits>`.
pub const CHUNKS_PREFIX: &str = "chunks/";
/// Prefix of manifests: `snapshots/<16 hex digits>`.
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";

/// An opened repository. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Repository {
    sink: Arc<dyn Sink>,
    config: RepoConfig,
}

/// A published snapshot: its id and the manifest bytes this publication wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub bytes_written: u64,
}

/// A snapshot id with its decoded manifest.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub manifest: Manifest,
}

impl Repository {
    /// Creates a repository in an empty location. Fails, touching nothing, when a config is
    /// already there.
    pub fn init(sink: Arc<dyn Sink>, chunk_size: u32) -> Result<Repository, EngineError> {
        let config = RepoConfig::new(chunk_size)?;
        let key = key(CONFIG_KEY);
        match sink.put(&key, &config.encode(), PutMode::Create)? {
            PutOutcome::Written => Ok(Repository { sink, config }),
            PutOutcome::AlreadyExists => Err(EngineError::RepositoryExists {
                location: sink.location(),
            }),
        }
    }

    /// Opens an existing repository, refusing other formats and versions.
    pub fn open(sink: Arc<dyn Sink>) -> Result<Repository, EngineError> {
        let bytes = match sink.get(&key(CONFIG_KEY)) {
            Ok(bytes) => bytes,
            Err(SinkError::NotFound { .. }) => {
                return Err(EngineError::NotARepository {
                    location: sink.location(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let config = RepoConfig::decode(&bytes)?;
        Ok(Repository { sink, config })
    }

    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Where the chunk with `id` is stored.
    pub fn chunk_key(id: &ChunkId) -> ObjectKey {
        let hex = id.to_hex();
        key(&format!("{CHUNKS_PREFIX}{}/{hex}", &hex[..2]))
    }

    /// Parses a chunk object's key back into its id; `None` for anything else.
    pub fn chunk_id_of_key(key: &str) -> Option<ChunkId> {
        let rest = key.strip_prefix(CHUNKS_PREFIX)?;
        let (dir, hex) = rest.split_once('/')?;
        let id = ChunkId::from_hex(hex).ok()?;
        (dir == &hex[..2]).then_some(id)
    }

    fn snapshot_key(id: &str) -> ObjectKey {
        key(&format!("{SNAPSHOTS_PREFIX}{id}"))
    }

    /// Ids of every snapshot, sorted.
    pub fn snapshot_ids(&self) -> Result<Vec<String>, EngineError> {
        let mut ids = Vec::new();
        for meta in self.sink.list(SNAPSHOTS_PREFIX)? {
            let meta = meta?;
            if let Some(id) = meta.key.as_str().strip_prefix(SNAPSHOTS_PREFIX)
                && is_snapshot_id(id)
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Reads and validates one manifest, checking that its content matches its id.
    pub fn load_snapshot(&self, id: &str) -> Result<Snapshot, EngineError> {
        let bytes = match self.sink.get(&Self::snapshot_key(id)) {
            Ok(bytes) => bytes,
            Err(SinkError::NotFound { .. }) => {
                return Err(EngineError::SnapshotNotFound(id.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        let manifest = Manifest::decode(&bytes).map_err(|source| EngineError::Manifest {
            snapshot: id.to_owned(),
            source,
        })?;
        if snapshot_id_of(&bytes) != id {
            return Err(EngineError::Manifest {
                snapshot: id.to_owned(),
                source: ManifestError::ChecksumMismatch,
            });
        }
        Ok(Snapshot {
            id: id.to_owned(),
            manifest,
        })
    }

    /// Reads only a manifest's metadata block (two small ranged reads, no index). The
    /// checksum is not verified here; [`Repository::load_snapshot`] does that.
    pub fn load_meta(&self, id: &str) -> Result<SnapshotMeta, EngineError> {
        let key = Self::snapshot_key(id);
        let bad = |source| EngineError::Manifest {
            snapshot: id.to_owned(),
            source,
        };
        let read = |start, end| match self.sink.get_range(&key, start, end) {
            Ok(bytes) => Ok(bytes),
            Err(SinkError::NotFound { .. }) => Err(EngineError::SnapshotNotFound(id.to_owned())),
            Err(SinkError::InvalidRange { size, .. }) => {
                Err(bad(ManifestError::Truncated(size as usize)))
            }
            Err(e) => Err(e.into()),
        };
        let head = read(0, 16)?;
        let meta_len = crate::manifest::meta_len_of_head(&head).map_err(bad)?;
        let meta = read(16, 16 + u64::from(meta_len))?;
        serde_json::from_slice(&meta).map_err(|e| bad(ManifestError::BadMeta(e.to_string())))
    }

    /// The most recent snapshot named `name` whose metadata reads, if any.
    pub fn latest_snapshot_named(&self, name: &str) -> Result<Option<String>, EngineError> {
        let mut best: Option<((u64, u32), String)> = None;
        for id in self.snapshot_ids()? {
            let Ok(meta) = self.load_meta(&id) else {
                continue;
            };
            let key = (meta.finished_at(), id);
            if meta.name == name && best.as_ref().is_none_or(|b| key > *b) {
                best = Some(key);
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    /// Every snapshot that decodes, oldest first, plus the errors of those that do not.
    pub fn load_all_snapshots(&self) -> Result<(Vec<Snapshot>, Vec<EngineError>), EngineError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in self.snapshot_ids()? {
            match self.load_snapshot(&id) {
                Ok(s) => good.push(s),
                Err(e) => bad.push(e),
            }
        }
        good.sort_by(|a, b| {
            (a.manifest.meta.finished_at(), &a.id).cmp(&(b.manifest.meta.finished_at(), &b.id))
        });
        Ok((good, bad))
    }

    /// Resolves a user's snapshot argument: a full id, a unique prefix of one, or `latest`.
    pub fn resolve_snapshot(&self, arg: &str) -> Result<String, EngineError> {
        if arg == "latest" {
            let (all, damaged) = self.load_all_snapshots()?;
            let Some(latest) = all.last() else {
                // Only damaged manifests: name the damage, not "no snapshot".
                return Err(damaged
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| EngineError::SnapshotNotFound(arg.to_owned())));
            };
            for e in &damaged {
                log::warn!("`latest` skips a damaged snapshot: {e}");
            }
            return Ok(latest.id.clone());
        }
        let matches: Vec<String> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.starts_with(&arg.to_ascii_lowercase()))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(EngineError::SnapshotNotFound(arg.to_owned())),
            _ if arg.is_empty() => Err(EngineError::SnapshotNotFound(arg.to_owned())),
            _ => Err(EngineError::AmbiguousSnapshot(arg.to_owned())),
        }
    }

    /// Removes a snapshot's manifest (`ferry forget`). Its chunks stay: other snapshots may
    /// share them, and only garbage collection deletes chunks. Removing a missing snapshot is
    /// `Ok`, so an interrupted forget can simply run again.
    pub fn remove_snapshot(&self, id: &str) -> Result<(), EngineError> {
        if !is_snapshot_id(id) {
            return Err(EngineError::SnapshotNotFound(id.to_owned()));
        }
        Ok(self.sink.delete(&Self::snapshot_key(id))?)
    }

    /// Publishes a manifest: the last step of a backup, after every chunk it names is stored.
    /// Publishing identical bytes twice is one snapshot (the id is the content's hash).
    pub fn publish_snapshot(&self, manifest: &Manifest) -> Result<Published, EngineError> {
        let bytes = manifest.encode();
        let id = snapshot_id_of(&bytes);
        let outcome = self
            .sink
            .put(&Self::snapshot_key(&id), &bytes, PutMode::Create)?;
        let bytes_written = match outcome {
            PutOutcome::Written => bytes.len() as u64,
            PutOutcome::AlreadyExists => 0,
        };
        Ok(Published { id, bytes_written })
    }
}

fn is_snapshot_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Keys built here from constants and hex digits are always valid.
fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("repository keys are valid object keys")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_round_trip() {
        let id = ChunkId::of(b"x");
        let key = Repository::chunk_key(&id);
        assert_eq!(key.as_str(), format!("chunks/{}/{}", &id.to_hex()[..2], id));
        assert_eq!(Repository::chunk_id_of_key(key.as_str()), Some(id));
        assert_eq!(Repository::chunk_id_of_key("chunks/zz/00"), None);
        assert_eq!(
            Repository::chunk_id_of_key(&format!("chunks/00/{}", id.to_hex())),
            None
        );
    }
}
