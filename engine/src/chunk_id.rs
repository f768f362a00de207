//! Chunk ids: the BLAKE3 hash of a chunk's raw (uncompressed) bytes.

use std::fmt;

/// The id of a chunk: BLAKE3-256 of its raw bytes. Ids are the chunk objects' names, so equal
/// content is stored once, and every read re-checks the content against its name.
///
/// The all-zero id is reserved: in a snapshot index it marks an all-zero chunk, which is never
/// stored (a real BLAKE3 output of 32 zero bytes has probability 2^-256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

/// A string that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a chunk id (64 hex digits)")]
pub struct InvalidChunkId(pub String);

impl ChunkId {
    /// The reserved mark for an all-zero chunk in an index.
    pub const ZERO_MARK: ChunkId = ChunkId([0; 32]);

    /// Hashes raw chunk bytes.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> ChunkId {
        ChunkId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn is_zero_mark(&self) -> bool {
        *self == Self::ZERO_MARK
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Result<ChunkId, InvalidChunkId> {
        let bad = || InvalidChunkId(s.to_owned());
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(ChunkId(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

/// True when every byte of `data` is zero. Checks 4 KiB blocks at a time so that ordinary
/// data is rejected after its first block, while all-zero chunks are scanned at memory speed.
pub fn is_all_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors: BLAKE3 is the repository's hash; these must never change.
    #[test]
    fn golden_blake3_ids() {
        assert_eq!(
            ChunkId::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            ChunkId::of(&[0u8; 4 << 20]).to_hex(),
            ChunkId::of(&vec![0u8; 4 << 20]).to_hex()
        );
        assert_eq!(
            ChunkId::of(b"ferry").to_hex(),
            blake3::hash(b"ferry").to_hex().as_str()
        );
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let id = ChunkId::of(b"abc");
        assert_eq!(ChunkId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ChunkId::from_hex("zz").is_err());
        assert!(ChunkId::from_hex(&"A".repeat(64)).is_err());
    }

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 3 * 4096 + 17];
        assert!(is_all_zero(&v));
        *v.last_mut().unwrap() = 1;
        assert!(!is_all_zero(&v));
        assert!(is_all_zero(&[]));
    }
}
