//! The chunk object format (v1): how one chunk's bytes are stored in a sink.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FRYC"
//! 4       1     format version = 1
//! 5       1     codec: 0 = stored as is, 1 = zstd frame
//! 6       2     reserved, zero
//! 8       4     raw length (u32, little endian)
//! 12      ...   payload
//! ```
//!
//! The object's name is the BLAKE3 of the raw bytes ([`ChunkId`]); [`decode_chunk`] re-checks
//! it on every read, and never produces more than the caller's maximum chunk size, so neither a
//! flipped bit nor a hostile object can be restored silently or exhaust memory.

use crate::chunk_id::ChunkId;

/// First bytes of every chunk object.
pub const CHUNK_MAGIC: [u8; 4] = *b"FRYC";
/// The only chunk object version this build reads and writes.
pub const CHUNK_VERSION: u8 = 1;
/// Bytes before the payload.
pub const CHUNK_HEADER_LEN: usize = 12;

const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// Why a chunk object could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkDecodeError {
    #[error("object is {0} bytes, shorter than a chunk header")]
    Truncated(usize),
    #[error("bad magic (not a Ferry chunk object)")]
    BadMagic,
    #[error("chunk format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("raw length {raw} exceeds the maximum chunk size {max}")]
    TooLarge { raw: u64, max: usize },
    #[error("stored payload is {payload} bytes but the header says {raw}")]
    LengthMismatch { payload: usize, raw: usize },
    #[error("zstd payload does not decompress: {0}")]
    Decompress(String),
    #[error("content hashes to {actual}, not to its id")]
    IdMismatch { actual: ChunkId },
}

/// Compresses chunks into chunk objects. One per worker thread: it owns a zstd context and a
/// scratch buffer, so steady-state encoding allocates nothing.
pub struct ChunkEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl ChunkEncoder {
    /// An encoder at zstd `level` (1..=19 are sensible; negative levels are zstd's fast modes).
    pub fn new(level: i32) -> std::io::Result<ChunkEncoder> {
        Ok(ChunkEncoder {
            compressor: zstd::bulk::Compressor::new(level)?,
            scratch: Vec::new(),
        })
    }

    /// Encodes `raw` into a new chunk object.
    pub fn encode(&mut self, raw: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut object = Vec::new();
        self.encode_into(raw, &mut object)?;
        Ok(object)
    }

    /// Encodes `raw` into `object` (cleared first; its capacity is reused). Data that zstd
    /// cannot shrink is stored as is, so random data costs one compression attempt and no
    /// expansion.
    pub fn encode_into(&mut self, raw: &[u8], object: &mut Vec<u8>) -> std::io::Result<()> {
        let raw_len = u32::try_from(raw.len())
            .map_err(|_| std::io::Error::other("chunk larger than 4 GiB"))?;
        self.scratch.clear();
        let compressible = self.samples_compress(raw)?;
        if compressible {
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(raw.len()));
            self.compressor.compress_to_buffer(raw, &mut self.scratch)?;
        }
        let (codec, payload) = if compressible && self.scratch.len() < raw.len() {
            (CODEC_ZSTD, self.scratch.as_slice())
        } else {
            (CODEC_STORED, raw)
        };
        object.clear();
        object.reserve(CHUNK_HEADER_LEN + payload.len());
        object.extend_from_slice(&header(codec, raw_len));
        object.extend_from_slice(payload);
        Ok(())
    }
}

impl ChunkEncoder {
    /// For large chunks, compresses two 64 KiB samples (start and middle) first; when neither
    /// shrinks by 2%, the chunk is taken as incompressible (random or already compressed data)
    /// and stored as is without compressing it whole. Small chunks are always tried.
    fn samples_compress(&mut self, raw: &[u8]) -> std::io::Result<bool> {
        const SAMPLE: usize = 64 << 10;
        if raw.len() < 16 * SAMPLE {
            return Ok(true);
        }
        let middle = raw.len() / 2;
        for sample in [&raw[..SAMPLE], &raw[middle..middle + SAMPLE]] {
            self.scratch.clear();
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(SAMPLE));
            self.compressor
                .compress_to_buffer(sample, &mut self.scratch)?;
            if self.scratch.len() < SAMPLE - SAMPLE / 50 {
                self.scratch.clear();
                return Ok(true);
            }
        }
        self.scratch.clear();
        Ok(false)
    }
}

fn header(codec: u8, raw_len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    h[..4].copy_from_slice(&CHUNK_MAGIC);
    h[4] = CHUNK_VERSION;
    h[5] = codec;
    h[8..12].copy_from_slice(&raw_len.to_le_bytes());
    h
}

/// Decodes a chunk object whose name is `id`, producing at most `max_raw_len` bytes, and
/// checks that the result hashes to `id`.
pub fn decode_chunk(
    object: &[u8],
    id: &ChunkId,
    max_raw_len: usize,
) -> Result<Vec<u8>, ChunkDecodeError> {
    ChunkDecoder::new().decode(object, id, max_raw_len)
}

/// Reusable decoder (one zstd context per thread).
pub struct ChunkDecoder {
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkDecoder {
    pub fn new() -> ChunkDecoder {
        ChunkDecoder { decompressor: None }
    }

    /// See [`decode_chunk`].
    pub fn decode(
        &mut self,
        object: &[u8],
        id: &ChunkId,
        max_raw_len: usize,
    ) -> Result<Vec<u8>, ChunkDecodeError> {
        let parsed = Parsed::of(object, max_raw_len)?;
        let mut raw = vec![0; parsed.raw_len];
        self.decode_parsed(&parsed, id, &mut raw)?;
        Ok(raw)
    }

    /// Like [`decode`](Self::decode), into `out` (whose length is the largest raw length
    /// accepted) instead of a new vector: returns the raw length, the bytes being
    /// `out[..len]`. Restore decodes into page-aligned buffers this way.
    pub fn decode_into(
        &mut self,
        object: &[u8],
        id: &ChunkId,
        out: &mut [u8],
    ) -> Result<usize, ChunkDecodeError> {
        let parsed = Parsed::of(object, out.len())?;
        self.decode_parsed(&parsed, id, &mut out[..parsed.raw_len])?;
        Ok(parsed.raw_len)
    }

    /// Fills `raw` (exactly the header's raw length) from the payload and checks the id.
    fn decode_parsed(
        &mut self,
        parsed: &Parsed<'_>,
        id: &ChunkId,
        raw: &mut [u8],
    ) -> Result<(), ChunkDecodeError> {
        let raw_len = raw.len();
        let mismatch = |payload| ChunkDecodeError::LengthMismatch {
            payload,
            raw: raw_len,
        };
        match parsed.codec {
            CODEC_STORED => {
                if parsed.payload.len() != raw.len() {
                    return Err(mismatch(parsed.payload.len()));
                }
                raw.copy_from_slice(parsed.payload);
            }
            CODEC_ZSTD => {
                let decompressor = match &mut self.decompressor {
                    Some(d) => d,
                    None => self.decompressor.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| ChunkDecodeError::Decompress(e.to_string()))?,
                    ),
                };
                let n = decompressor
                    .decompress_to_buffer(parsed.payload, &mut *raw)
                    .map_err(|e| ChunkDecodeError::Decompress(e.to_string()))?;
                if n != raw.len() {
                    return Err(mismatch(n));
                }
            }
            other => return Err(ChunkDecodeError::UnknownCodec(other)),
        }
        let actual = ChunkId::of(raw);
        if actual != *id {
            return Err(ChunkDecodeError::IdMismatch { actual });
        }
        Ok(())
    }
}

/// A chunk object's checked header and its payload.
struct Parsed<'a> {
    codec: u8,
    raw_len: usize,
    payload: &'a [u8],
}

impl Parsed<'_> {
    /// Checks magic, version, reserved bytes and that the raw length is at most `max_raw_len`.
    fn of(object: &[u8], max_raw_len: usize) -> Result<Parsed<'_>, ChunkDecodeError> {
        if object.len() < CHUNK_HEADER_LEN {
            return Err(ChunkDecodeError::Truncated(object.len()));
        }
        let (head, payload) = object.split_at(CHUNK_HEADER_LEN);
        if head[..4] != CHUNK_MAGIC {
            return Err(ChunkDecodeError::BadMagic);
        }
        if head[4] != CHUNK_VERSION {
            return Err(ChunkDecodeError::UnsupportedVersion(head[4]));
        }
        if head[6] != 0 || head[7] != 0 {
            return Err(ChunkDecodeError::ReservedNotZero);
        }
        let raw_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let raw_len_usize = usize::try_from(raw_len).unwrap_or(usize::MAX);
        if raw_len_usize > max_raw_len {
            return Err(ChunkDecodeError::TooLarge {
                raw: u64::from(raw_len),
                max: max_raw_len,
            });
        }
        Ok(Parsed {
            codec: head[5],
            raw_len: raw_len_usize,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(raw: &[u8]) -> Vec<u8> {
        ChunkEncoder::new(1).unwrap().encode(raw).unwrap()
    }

    /// Golden v1 objects: readers of every later version must still decode these bytes.
    #[test]
    fn golden_v1_objects() {
        let stored = [
            0x46, 0x52, 0x59, 0x43, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, b'a', b'b',
            b'c',
        ];
        assert_eq!(
            decode_chunk(&stored, &ChunkId::of(b"abc"), 16).unwrap(),
            b"abc"
        );
        assert_eq!(encode(b"abc"), stored, "tiny data is stored as is");

        let raw = vec![b'x'; 1000];
        let object = encode(&raw);
        assert_eq!(
            &object[..12],
            &[0x46, 0x52, 0x59, 0x43, 1, 1, 0, 0, 0xe8, 3, 0, 0]
        );
        let golden_zstd: &[u8] = &[
            0x46, 0x52, 0x59, 0x43, 0x01, 0x01, 0x00, 0x00, 0xe8, 0x03, 0x00, 0x00, 0x28, 0xb5,
            0x2f, 0xfd, 0x60, 0xe8, 0x02, 0x4d, 0x00, 0x00, 0x10, 0x78, 0x78, 0x01, 0x00, 0xe3,
            0x2b, 0x80, 0x05,
        ];
        assert_eq!(
            decode_chunk(golden_zstd, &ChunkId::of(&raw), 1000).unwrap(),
            raw
        );
    }

    #[test]
    fn detects_damage() {
        let raw: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let id = ChunkId::of(&raw);
        let object = encode(&raw);
        for i in 0..object.len() {
            let mut bad = object.clone();
            bad[i] ^= 0x40;
            assert!(
                decode_chunk(&bad, &id, 1 << 20).is_err(),
                "flip at {i} missed"
            );
        }
        for len in 0..object.len() {
            assert!(decode_chunk(&object[..len], &id, 1 << 20).is_err());
        }
        assert_eq!(
            decode_chunk(&object, &id, 100),
            Err(ChunkDecodeError::TooLarge {
                raw: 5000,
                max: 100
            })
        );
        assert!(matches!(
            decode_chunk(&object, &ChunkId::of(b"other"), 1 << 20),
            Err(ChunkDecodeError::IdMismatch { .. })
        ));
    }

    #[test]
    fn incompressible_chunks_are_stored_and_others_compressed() {
        let mut state = 7u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 56) as u8
            })
            .collect();
        let object = encode(&random);
        assert_eq!(object[5], CODEC_STORED);
        assert_eq!(
            decode_chunk(&object, &ChunkId::of(&random), 1 << 20).unwrap(),
            random
        );
        // Random start and middle samples, compressible elsewhere: still stored (a trade-off).
        let mut mixed = vec![b'z'; 1 << 20];
        mixed[..64 << 10].copy_from_slice(&random[..64 << 10]);
        mixed[512 << 10..576 << 10].copy_from_slice(&random[..64 << 10]);
        assert_eq!(encode(&mixed)[5], CODEC_STORED);
        // One compressible sample is enough to compress the whole chunk.
        mixed[..64 << 10].fill(b'y');
        let object = encode(&mixed);
        assert_eq!(object[5], CODEC_ZSTD);
        assert!(object.len() < 200 << 10);
        assert_eq!(
            decode_chunk(&object, &ChunkId::of(&mixed), 1 << 20).unwrap(),
            mixed
        );
    }

    #[test]
    fn lying_raw_length_is_capped() {
        // A zstd frame of 1 MiB of zeros whose header claims 10 bytes must not expand.
        let mut object = encode(&vec![0u8; 1 << 20]);
        object[8..12].copy_from_slice(&10u32.to_le_bytes());
        assert!(decode_chunk(&object, &ChunkId::of(&[0; 10]), 1 << 20).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec(any::<u8>(), 0..20_000), level in 1i32..6) {
            let object = ChunkEncoder::new(level).unwrap().encode(&raw).unwrap();
            prop_assert!(object.len() <= raw.len() + CHUNK_HEADER_LEN);
            prop_assert_eq!(decode_chunk(&object, &ChunkId::of(&raw), raw.len()).unwrap(), raw);
        }

        #[test]
        fn compressible_round_trip(byte in any::<u8>(), len in 0usize..100_000) {
            let raw = vec![byte; len];
            let object = encode(&raw);
            prop_assert_eq!(decode_chunk(&object, &ChunkId::of(&raw), len).unwrap(), raw);
        }

        #[test]
        fn decode_into_matches_decode(raw in proptest::collection::vec(0u8..4, 0..20_000), spare in 0usize..64) {
            let object = encode(&raw);
            let id = ChunkId::of(&raw);
            let mut out = vec![0xee; raw.len() + spare];
            let n = ChunkDecoder::new().decode_into(&object, &id, &mut out).unwrap();
            prop_assert_eq!(&out[..n], &raw[..]);
            if !raw.is_empty() {
                let short = ChunkDecoder::new().decode_into(&object, &id, &mut out[..raw.len() - 1]);
                let too_large = matches!(short, Err(ChunkDecodeError::TooLarge { .. }));
                prop_assert!(too_large);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(object in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_chunk(&object, &ChunkId::ZERO_MARK, 4096);
        }
    }
}
