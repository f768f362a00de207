//! The repository config object (`config`): what a reader must know before touching anything.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Value of the config's `format` field; anything else is not a Ferry repository.
pub const CONFIG_FORMAT: &str = "ferry-repository";
/// The repository format version this build reads and writes.
pub const REPOSITORY_VERSION: u32 = 1;

/// Default chunk size for new backups: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Smallest accepted chunk size: 64 KiB.
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
/// Largest accepted chunk size: 64 MiB.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;

/// The `config` object, stored as JSON:
/// `{"format":"ferry-repository","version":1,"repository_id":"…","chunk_size":4194304,
/// "hash":"blake3","compression":"zstd"}`.
///
/// `chunk_size` is the default for backups into this repository; each disk records its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub repository_id: String,
    pub chunk_size: u32,
    pub hash: String,
    pub compression: String,
}

impl RepoConfig {
    /// A fresh config with a random repository id.
    pub fn new(chunk_size: u32) -> Result<RepoConfig, EngineError> {
        check_chunk_size(u64::from(chunk_size))?;
        Ok(RepoConfig {
            format: CONFIG_FORMAT.to_owned(),
            version: REPOSITORY_VERSION,
            repository_id: format!("{:016x}", rand::random::<u64>()),
            chunk_size,
            hash: "blake3".to_owned(),
            compression: "zstd".to_owned(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("config serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parses and checks a config: the format name, then the version (so that a newer
    /// repository is refused by name, not by a parse error), then the rest.
    pub fn decode(bytes: &[u8]) -> Result<RepoConfig, EngineError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| EngineError::BadConfig(format!("not JSON: {e}")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(CONFIG_FORMAT) {
            return Err(EngineError::BadConfig(format!(
                "format is not {CONFIG_FORMAT:?}"
            )));
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != u64::from(REPOSITORY_VERSION) {
            return Err(EngineError::UnsupportedRepositoryVersion {
                found: version,
                supported: REPOSITORY_VERSION,
            });
        }
        let config: RepoConfig =
            serde_json::from_value(value).map_err(|e| EngineError::BadConfig(e.to_string()))?;
        if config.hash != "blake3" || config.compression != "zstd" {
            return Err(EngineError::BadConfig(format!(
                "unsupported hash {:?} or compression {:?}",
                config.hash, config.compression
            )));
        }
        check_chunk_size(u64::from(config.chunk_size))
            .map_err(|e| EngineError::BadConfig(e.to_string()))?;
        Ok(config)
    }
}

/// Chunk sizes are powers of two from 64 KiB to 64 MiB.
pub fn check_chunk_size(size: u64) -> Result<u32, EngineError> {
    if !size.is_power_of_two()
        || size < u64::from(MIN_CHUNK_SIZE)
        || size > u64::from(MAX_CHUNK_SIZE)
    {
        return Err(EngineError::InvalidOption(format!(
            "chunk size {size} must be a power of two from 64 KiB to 64 MiB"
        )));
    }
    Ok(size as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden v1 config: must stay readable forever.
    #[test]
    fn golden_v1_config() {
        let golden =
            br#"{"format":"ferry-repository","version":1,"repository_id":"00112233aabbccdd",
            "chunk_size":4194304,"hash":"blake3","compression":"zstd"}"#;
        let c = RepoConfig::decode(golden).unwrap();
        assert_eq!(c.chunk_size, 4 << 20);
        assert_eq!(RepoConfig::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let v2 = br#"{"format":"ferry-repository","version":2}"#;
        assert!(matches!(
            RepoConfig::decode(v2),
            Err(EngineError::UnsupportedRepositoryVersion { found: 2, .. })
        ));
        assert!(matches!(
            RepoConfig::decode(b"{"),
            Err(EngineError::BadConfig(_))
        ));
        assert!(matches!(
            RepoConfig::decode(br#"{"format":"restic"}"#),
            Err(EngineError::BadConfig(_))
        ));
    }

    #[test]
    fn chunk_size_bounds() {
        assert!(check_chunk_size(4 << 20).is_ok());
        assert!(check_chunk_size(3 << 20).is_err());
        assert!(check_chunk_size(32 << 10).is_err());
        assert!(check_chunk_size(128 << 20).is_err());
    }
}
