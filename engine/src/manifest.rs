//! Snapshot manifests: one object per snapshot, naming every chunk of every disk.
//!
//! ```text
//! offset        size            field
//! 0             8               magic "FERRYSNP"
//! 8             4               format version = 2 (u32 LE); version 1 is still read
//! 12            4               metadata length M (u32 LE, at most 16 MiB)
//! 16            M               metadata: UTF-8 JSON, see [`SnapshotMeta`]
//! 16+M          ...             for each disk d in metadata order: its index (below)
//! end-32        32              BLAKE3 of every preceding byte
//! ```
//!
//! A disk's index names `N_d = ceil(virtual_size / chunk_size)` chunks in order, each by its
//! 32-byte id or as an all-zero chunk. Version 2 writes it as runs, so a sparse disk costs
//! bytes in proportion to its data, not its virtual size:
//!
//! ```text
//! 0x00, n (u32 LE, n >= 1)              n all-zero chunks
//! 0x01, n (u32 LE, n >= 1), n * 32 B    n chunks named by their ids (none all-zero marks)
//! ```
//!
//! Runs never cross a disk's end, and consecutive runs of one kind are allowed (encoders merge
//! them; a zero run may not hold more than `u32::MAX` chunks). Version 1 wrote the index flat:
//! `32 * N_d` bytes, 32 zero bytes for an all-zero chunk.
//!
//! A manifest decodes only when its trailing checksum matches, every index covers exactly its
//! disk's chunks and nothing follows the last one, so a truncated, extended or garbled
//! manifest is always rejected. The decoded indexes are bounded by [`MAX_INDEX_ENTRIES`]
//! (checked from the metadata before any index is built), so a small hostile manifest cannot
//! make a reader allocate without bound; a backup refuses disks that would exceed it. The
//! snapshot id is the first 8 bytes (16 hex digits) of the BLAKE3 of the whole manifest, so an
//! id also vouches for its manifest.

use serde::{Deserialize, Serialize};

use crate::chunk_id::ChunkId;
use crate::config::check_chunk_size;

pub const MANIFEST_MAGIC: [u8; 8] = *b"FERRYSNP";
/// The version this build writes.
pub const MANIFEST_VERSION: u32 = 2;
/// The flat index layout, still read.
pub const MANIFEST_VERSION_FLAT: u32 = 1;
/// Most index entries (chunks, over all disks) one manifest may hold: 16 Mi, 512 MiB of ids in
/// memory; with 4 MiB chunks, 64 TiB of disks per snapshot.
pub const MAX_INDEX_ENTRIES: u64 = 1 << 24;
const RUN_ZERO: u8 = 0x00;
const RUN_IDS: u8 = 0x01;
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
    #[error("manifest format version {0} is not supported (this build reads versions 1 and 2)")]
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
    #[error("the index of disk {disk:?} is malformed: {reason}")]
    BadIndex { disk: String, reason: String },
    #[error("the manifest names {0} chunks, more than the {MAX_INDEX_ENTRIES} a manifest may hold")]
    TooManyChunks(u64),
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
    /// Serializes the manifest (current version). Panics only if the invariants checked by
    /// [`Manifest::decode`] do not hold (index lengths, disk names), which the backup code
    /// guarantees.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_version(MANIFEST_VERSION)
    }

    /// Serializes in format `version` (1 or 2); version 1 only for its golden test.
    fn encode_version(&self, version: u32) -> Vec<u8> {
        assert_eq!(self.meta.disks.len(), self.indexes.len());
        let meta = serde_json::to_vec(&self.meta).expect("metadata serializes");
        let mut out = Vec::with_capacity(FIXED_HEAD + meta.len() + CHECKSUM_LEN);
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        for (disk, index) in self.meta.disks.iter().zip(&self.indexes) {
            assert_eq!(
                disk.chunk_count(),
                index.len() as u64,
                "index of {}",
                disk.name
            );
            match version {
                MANIFEST_VERSION_FLAT => {
                    for id in index {
                        out.extend_from_slice(id.as_bytes());
                    }
                }
                _ => encode_runs(index, &mut out),
            }
        }
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Parses and fully validates manifest bytes (version 1 or 2). Never panics, and never
    /// builds indexes of more than [`MAX_INDEX_ENTRIES`] entries.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() < FIXED_HEAD + CHECKSUM_LEN {
            return Err(ManifestError::Truncated(bytes.len()));
        }
        let (version, meta_len) = version_and_meta_len(&bytes[..FIXED_HEAD])?;
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
        let mut entries = 0u64;
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
            entries = entries.saturating_add(disk.chunk_count());
        }
        if entries > MAX_INDEX_ENTRIES {
            return Err(ManifestError::TooManyChunks(entries));
        }
        let index_bytes = &body[meta_end..];
        let indexes = match version {
            MANIFEST_VERSION_FLAT => decode_flat(&meta, index_bytes, bytes.len())?,
            _ => decode_runs(&meta, index_bytes)?,
        };
        Ok(Manifest { meta, indexes })
    }
}

/// Appends `index` as runs of zero chunks and runs of ids.
fn encode_runs(index: &[ChunkId], out: &mut Vec<u8>) {
    let mut rest = index;
    while let Some(first) = rest.first() {
        let zero = first.is_zero_mark();
        let len = rest
            .iter()
            .take(u32::MAX as usize)
            .take_while(|id| id.is_zero_mark() == zero)
            .count();
        let (run, tail) = rest.split_at(len);
        out.push(if zero { RUN_ZERO } else { RUN_IDS });
        out.extend_from_slice(&(len as u32).to_le_bytes());
        if !zero {
            for id in run {
                out.extend_from_slice(id.as_bytes());
            }
        }
        rest = tail;
    }
}

/// Version 1: `32 * N_d` bytes per disk, exactly.
fn decode_flat(
    meta: &SnapshotMeta,
    index_bytes: &[u8],
    total_len: usize,
) -> Result<Vec<Vec<ChunkId>>, ManifestError> {
    let expected: u64 = meta.disks.iter().map(|d| d.chunk_count() * 32).sum();
    if expected != index_bytes.len() as u64 {
        return Err(ManifestError::LengthMismatch {
            actual: total_len,
            expected: expected + (total_len - index_bytes.len()) as u64,
        });
    }
    let mut entries = index_bytes.chunks_exact(32);
    Ok(meta
        .disks
        .iter()
        .map(|disk| {
            (&mut entries)
                .take(disk.chunk_count() as usize)
                .map(|e| ChunkId::from_bytes(e.try_into().expect("32 bytes")))
                .collect()
        })
        .collect())
}

/// Version 2: runs, each disk's covering exactly its chunks, nothing after the last disk.
fn decode_runs(meta: &SnapshotMeta, mut bytes: &[u8]) -> Result<Vec<Vec<ChunkId>>, ManifestError> {
    let mut indexes = Vec::with_capacity(meta.disks.len());
    for disk in &meta.disks {
        let bad = |reason: &str| ManifestError::BadIndex {
            disk: disk.name.clone(),
            reason: reason.to_owned(),
        };
        let want = disk.chunk_count() as usize;
        let mut index = Vec::with_capacity(want);
        while index.len() < want {
            let [kind, n0, n1, n2, n3, rest @ ..] = bytes else {
                return Err(bad("ends inside a run header"));
            };
            let n = u32::from_le_bytes([*n0, *n1, *n2, *n3]) as usize;
            if n == 0 || n > want - index.len() {
                return Err(bad("a run is empty or passes the disk's end"));
            }
            bytes = rest;
            match *kind {
                RUN_ZERO => index.resize(index.len() + n, ChunkId::ZERO_MARK),
                RUN_IDS => {
                    let Some((ids, rest)) = bytes.split_at_checked(n * 32) else {
                        return Err(bad("ends inside a run of ids"));
                    };
                    for id in ids.chunks_exact(32) {
                        let id = ChunkId::from_bytes(id.try_into().expect("32 bytes"));
                        if id.is_zero_mark() {
                            return Err(bad("a run of ids holds the all-zero mark"));
                        }
                        index.push(id);
                    }
                    bytes = rest;
                }
                _ => return Err(bad("unknown run kind")),
            }
        }
        indexes.push(index);
    }
    if !bytes.is_empty() {
        return Err(ManifestError::BadIndex {
            disk: meta
                .disks
                .last()
                .map_or_else(String::new, |d| d.name.clone()),
            reason: format!("{} bytes follow the last index", bytes.len()),
        });
    }
    Ok(indexes)
}

/// Checks the fixed 16-byte head (magic, version) and returns the metadata length.
pub fn meta_len_of_head(head: &[u8]) -> Result<u32, ManifestError> {
    version_and_meta_len(head).map(|(_, len)| len)
}

/// The format version (1 or 2) and metadata length of a manifest's fixed 16-byte head.
fn version_and_meta_len(head: &[u8]) -> Result<(u32, u32), ManifestError> {
    if head.len() < FIXED_HEAD {
        return Err(ManifestError::Truncated(head.len()));
    }
    if head[..8] != MANIFEST_MAGIC {
        return Err(ManifestError::BadMagic);
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != MANIFEST_VERSION && version != MANIFEST_VERSION_FLAT {
        return Err(ManifestError::UnsupportedVersion(version));
    }
    let meta_len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    if meta_len > MAX_META_LEN {
        return Err(ManifestError::MetaTooLarge(meta_len));
    }
    Ok((version, meta_len))
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
        assert_eq!(
            m.encode_version(MANIFEST_VERSION_FLAT),
            golden,
            "v1 encoding must stay byte-identical"
        );
        assert_eq!(snapshot_id_of(golden), "219489e4e3b86be4");
    }

    /// Golden v2 manifest: the same snapshot as the v1 golden, with its index as runs.
    #[test]
    fn golden_v2_manifest() {
        let v1 = Manifest::decode(include_bytes!("../tests/golden/manifest-v1.bin")).unwrap();
        let golden = include_bytes!("../tests/golden/manifest-v2.bin");
        let m = Manifest::decode(golden).unwrap();
        assert_eq!(m, v1);
        assert_eq!(m.encode(), golden, "v2 encoding must stay byte-identical");
        assert_eq!(golden[8..12], 2u32.to_le_bytes());
        assert_eq!(snapshot_id_of(golden), V2_GOLDEN_ID);
    }

    const V2_GOLDEN_ID: &str = "93dcb0b270bd5c1c";

    /// A manifest whose checksum is recomputed after `edit` changed its bytes.
    fn resealed(m: &Manifest, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = m.encode();
        bytes.truncate(bytes.len() - 32);
        edit(&mut bytes);
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        bytes
    }

    #[test]
    fn sparse_disks_cost_bytes_for_their_data_only() {
        let mut m = sample(&[]);
        m.meta.disks = vec![DiskMeta {
            name: "vda".into(),
            source: "/images/big.img".into(),
            virtual_size: 8 << 40,
            chunk_size: 4 << 20,
            image_digest: "00".repeat(32),
            data_bytes: 4 << 20,
        }];
        let mut index = vec![ChunkId::ZERO_MARK; (2 << 20) as usize];
        index[1 << 20] = ChunkId::of(b"the only data");
        m.indexes = vec![index];
        let bytes = m.encode();
        assert!(
            bytes.len() < 1024,
            "{} bytes for an 8 TiB sparse disk",
            bytes.len()
        );
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    /// A change to a manifest's bytes (before it is resealed).
    type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;

    #[test]
    fn malformed_runs_are_rejected() {
        // One disk of 3 chunks (64 KiB each), sealed after each edit.
        let m = sample(&[3 * 65536]);
        let index_at = m.encode().len() - 32 - (5 + 5 + 64);
        let cases: Vec<(&str, Edit)> = vec![
            (
                "empty run",
                Box::new(move |b| {
                    b[index_at + 1..index_at + 5].copy_from_slice(&0u32.to_le_bytes())
                }),
            ),
            (
                "run past the end",
                Box::new(move |b| {
                    b[index_at + 1..index_at + 5].copy_from_slice(&9u32.to_le_bytes())
                }),
            ),
            ("unknown kind", Box::new(move |b| b[index_at] = 7)),
            ("trailing bytes", Box::new(|b| b.push(0))),
            (
                "cut inside a run",
                Box::new(|b| {
                    b.pop();
                }),
            ),
            (
                "zero mark among ids",
                Box::new(move |b| {
                    let at = index_at + 10;
                    b[at..at + 32].fill(0);
                }),
            ),
        ];
        assert!(Manifest::decode(&resealed(&m, |_| {})).is_ok());
        for (what, edit) in cases {
            let err = Manifest::decode(&resealed(&m, edit)).unwrap_err();
            assert!(
                matches!(err, ManifestError::BadIndex { .. }),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn a_huge_claimed_disk_is_refused_before_any_index_is_built() {
        let mut m = sample(&[65536]);
        m.meta.disks[0].virtual_size = u64::MAX / 2;
        m.indexes = vec![Vec::new()];
        let meta = serde_json::to_vec(&m.meta).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MANIFEST_MAGIC);
        bytes.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&meta);
        bytes.push(RUN_ZERO);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::TooManyChunks(_))
        ));
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
