//! Snapshot manifests (v1): one object per snapshot, naming every chunk of every disk.
//!
//! ```text
//! offset        size            field
//! 0             8               magic "FERRYSNP"
//! 8             4               format version = 1 (u32 LE)
//! 12            4               metadata length M (u32 LE, at most 16 MiB)
//! 16            M               metadata: UTF-8 JSON, see [`SnapshotMeta`]
//! 16+M          32 * N_d        for each disk d in metadata order: its index, one 32-byte
//!                               chunk id per chunk, or 32 zero bytes for an all-zero chunk
//! end-32        32              BLAKE3 of every preceding byte
//! ```
//!
//! `N_d = ceil(virtual_size / chunk_size)` of disk d. A manifest decodes only when its length is
//! exactly what its metadata implies and its trailing checksum matches, so a truncated,
//! extended or garbled manifest is always rejected, before any large allocation. The snapshot
//! id is the first 8 bytes (16 hex digits) of the BLAKE3 of the whole manifest, so an id also
//! vouches for its manifest.

use serde::{Deserialize, Serialize};

use crate::chunk_id::ChunkId;
use crate::config::check_chunk_size;

pub const MANIFEST_MAGIC: [u8; 8] = *b"FERRYSNP";
pub const MANIFEST_VERSION: u32 = 1;
/// Upper bound of the JSON metadata (a domain XML included).
pub const MAX_META_LEN: u32 = 16 << 20;
const FIXED_HEAD: usize = 16;
const CHECKSUM_LEN: usize = 32;

/// Why bytes are not a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("bad magic (not a Ferry snapshot manifest)")]
    BadMagic,
    #[error("manifest format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u32),
    #[error("metadata length {0} exceeds the limit")]
    MetaTooLarge(u32),
    #[error("metadata does not parse: {0}")]
    BadMeta(String),
    #[error("manifest length {actual} does not match the {expected} bytes its metadata implies")]
    LengthMismatch { actual: usize, expected: u64 },
    #[error("manifest checksum mismatch (the object is damaged)")]
    ChecksumMismatch,
    #[error("invalid disk {disk:?}: {reason}")]
    BadDisk { disk: String, reason: String },
}

/// Snapshot metadata, stored as the manifest's JSON block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// What was backed up: the domain name, or the name given to an image backup.
    pub name: String,
    /// Host that took the backup.
    pub hostname: String,
    /// Start and end of the backup, seconds since the Unix epoch (UTC).
    pub started_unix: u64,
    pub finished_unix: u64,
    /// Nanoseconds past `finished_unix`: orders (and tells apart) backups within one second.
    pub finished_nanos: u32,
    /// Ferry version that wrote the snapshot.
    pub ferry_version: String,
    /// The libvirt domain XML at backup time, for domain backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_xml: Option<String>,
    pub disks: Vec<DiskMeta>,
}

impl SnapshotMeta {
    /// When the backup finished, to the nanosecond: the order of snapshots.
    pub fn finished_at(&self) -> (u64, u32) {
        (self.finished_unix, self.finished_nanos)
    }
}

/// One backed-up disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMeta {
    /// Disk name: `[A-Za-z0-9._-]`, not starting with `.`, at most 255 bytes (it becomes a file
    /// name on restore, so it can never name a path outside the target directory).
    pub name: String,
    /// Path the disk was read from.
    pub source: String,
    /// Size in bytes of the image.
    pub virtual_size: u64,
    /// Chunk size in bytes (power of two, 64 KiB to 64 MiB).
    pub chunk_size: u32,
    /// [`crate::digest::ImageDigest`] of the whole image, hex.
    pub image_digest: String,
    /// Bytes of non-zero chunks (raw), i.e. the data that a restore writes.
    pub data_bytes: u64,
}

impl DiskMeta {
    /// Number of index entries of this disk.
    pub fn chunk_count(&self) -> u64 {
        self.virtual_size.div_ceil(u64::from(self.chunk_size))
    }

    /// Length of chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: u64) -> usize {
        let start = index * u64::from(self.chunk_size);
        (self.virtual_size - start).min(u64::from(self.chunk_size)) as usize
    }
}

/// A decoded snapshot: metadata plus one index per disk (same order as `meta.disks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub meta: SnapshotMeta,
    pub indexes: Vec<Vec<ChunkId>>,
}

/// Checks a disk name (see [`DiskMeta::name`]).
pub fn check_disk_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 bytes".into());
    }
    if name.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only [A-Za-z0-9._-] are allowed".into());
    }
    Ok(())
}

impl Manifest {
    /// Serializes the manifest. Panics only if the invariants checked by [`Manifest::decode`]
    /// do not hold (index lengths, disk names), which the backup code guarantees.
    pub fn encode(&self) -> Vec<u8> {
        assert_eq!(self.meta.disks.len(), self.indexes.len());
        let meta = serde_json::to_vec(&self.meta).expect("metadata serializes");
        let entries: usize = self.indexes.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(FIXED_HEAD + meta.len() + entries * 32 + CHECKSUM_LEN);
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        for (disk, index) in self.meta.disks.iter().zip(&self.indexes) {
            assert_eq!(
                disk.chunk_count(),
                index.len() as u64,
                "index of {}",
                disk.name
            );
            for id in index {
                out.extend_from_slice(id.as_bytes());
            }
        }
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Parses and fully validates manifest bytes. Never panics, never allocates more than the
    /// input's size implies.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() < FIXED_HEAD + CHECKSUM_LEN {
            return Err(ManifestError::Truncated(bytes.len()));
        }
        let meta_len = meta_len_of_head(&bytes[..FIXED_HEAD])?;
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if blake3::hash(body).as_bytes() != checksum {
            return Err(ManifestError::ChecksumMismatch);
        }
        let meta_end = FIXED_HEAD + meta_len as usize;
        if meta_end > body.len() {
            return Err(ManifestError::Truncated(bytes.len()));
        }
        let meta: SnapshotMeta = serde_json::from_slice(&body[FIXED_HEAD..meta_end])
            .map_err(|e| ManifestError::BadMeta(e.to_string()))?;
        let mut expected = (meta_end + CHECKSUM_LEN) as u64;
        let mut names = std::collections::HashSet::new();
        for disk in &meta.disks {
            let bad = |reason: String| ManifestError::BadDisk {
                disk: disk.name.clone(),
                reason,
            };
            check_disk_name(&disk.name).map_err(bad)?;
            if !names.insert(disk.name.as_str()) {
                return Err(bad("appears twice".into()));
            }
            check_chunk_size(u64::from(disk.chunk_size)).map_err(|e| bad(e.to_string()))?;
            expected = disk
                .chunk_count()
                .checked_mul(32)
                .and_then(|n| n.checked_add(expected))
                .ok_or_else(|| bad("virtual size overflows".into()))?;
        }
        if expected != bytes.len() as u64 {
            return Err(ManifestError::LengthMismatch {
                actual: bytes.len(),
                expected,
            });
        }
        let mut entries = body[meta_end..].chunks_exact(32);
        let indexes = meta
            .disks
            .iter()
            .map(|disk| {
                (&mut entries)
                    .take(disk.chunk_count() as usize)
                    .map(|e| ChunkId::from_bytes(e.try_into().expect("32 bytes")))
                    .collect()
            })
            .collect();
        Ok(Manifest { meta, indexes })
    }
}

/// Checks the fixed 16-byte head (magic, version) and returns the metadata length.
pub fn meta_len_of_head(head: &[u8]) -> Result<u32, ManifestError> {
    if head.len() < FIXED_HEAD {
        return Err(ManifestError::Truncated(head.len()));
    }
    if head[..8] != MANIFEST_MAGIC {
        return Err(ManifestError::BadMagic);
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != MANIFEST_VERSION {
        return Err(ManifestError::UnsupportedVersion(version));
    }
    let meta_len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    if meta_len > MAX_META_LEN {
        return Err(ManifestError::MetaTooLarge(meta_len));
    }
    Ok(meta_len)
}

/// A snapshot id: 16 lowercase hex digits, the first 8 bytes of the manifest's BLAKE3.
pub fn snapshot_id_of(manifest_bytes: &[u8]) -> String {
    blake3::hash(manifest_bytes).to_hex()[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(sizes: &[u64]) -> Manifest {
        let disks: Vec<DiskMeta> = sizes
            .iter()
            .enumerate()
            .map(|(i, &virtual_size)| DiskMeta {
                name: format!("vd{}", (b'a' + i as u8) as char),
                source: format!("/images/{i}.img"),
                virtual_size,
                chunk_size: 64 << 10,
                image_digest: "00".repeat(32),
                data_bytes: 0,
            })
            .collect();
        let indexes = disks
            .iter()
            .map(|d| {
                (0..d.chunk_count())
                    .map(|c| {
                        if c % 3 == 0 {
                            ChunkId::ZERO_MARK
                        } else {
                            ChunkId::of(&c.to_le_bytes())
                        }
                    })
                    .collect()
            })
            .collect();
        Manifest {
            meta: SnapshotMeta {
                name: "vm1".into(),
                hostname: "host".into(),
                started_unix: 1_800_000_000,
                finished_unix: 1_800_000_010,
                finished_nanos: 5,
                ferry_version: "0.1.0".into(),
                domain_xml: None,
                disks,
            },
            indexes,
        }
    }

    /// Golden v1 manifest (one disk of 100000 bytes, 64 KiB chunks: a zero chunk and one id).
    #[test]
    fn golden_v1_manifest() {
        let golden = include_bytes!("../tests/golden/manifest-v1.bin");
        let m = Manifest::decode(golden).unwrap();
        assert_eq!(m.meta.name, "golden");
        assert_eq!(m.meta.disks[0].virtual_size, 100_000);
        assert_eq!(m.meta.finished_at(), (1_800_000_001, 123_456_789));
        assert_eq!(
            m.indexes[0],
            vec![ChunkId::ZERO_MARK, ChunkId::of(b"golden")]
        );
        assert_eq!(m.encode(), golden, "v1 encoding must stay byte-identical");
        assert_eq!(snapshot_id_of(golden), "219489e4e3b86be4");
    }

    #[test]
    fn every_truncation_and_flip_is_rejected() {
        let bytes = sample(&[300_000, 70_000]).encode();
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len]).is_err());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} missed");
        }
    }

    #[test]
    fn hostile_disk_names_are_rejected() {
        for name in ["../etc", "/abs", "a/b", ".hidden", "", "nul\0"] {
            let mut m = sample(&[10]);
            m.meta.disks[0].name = name.into();
            let mut bytes = m.encode();
            // Re-seal the checksum so only the name is wrong.
            let n = bytes.len() - 32;
            let sum = blake3::hash(&bytes[..n]);
            bytes[n..].copy_from_slice(sum.as_bytes());
            assert!(
                matches!(Manifest::decode(&bytes), Err(ManifestError::BadDisk { .. })),
                "{name:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn round_trip(sizes in proptest::collection::vec(0u64..2_000_000, 0..4)) {
            let m = sample(&sizes);
            prop_assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Manifest::decode(&bytes);
        }
    }
}
