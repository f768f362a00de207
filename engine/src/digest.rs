//! The image digest: one hash that stands for a whole disk image's content.

use crate::chunk_id::ChunkId;

/// BLAKE3 (derive-key mode, context `"ferry image digest v1"`) over the image's virtual size
/// and chunk size (u64 LE each) followed by the chunk ids of every chunk in order, where an
/// all-zero chunk contributes the id of its actual zero bytes (not the zero mark).
///
/// Since each id is the BLAKE3 of its chunk, two images with equal digests (at one chunk size)
/// are equal byte for byte. Unlike a hash of the raw stream, it costs nothing for holes, so a
/// 64 GiB sparse disk is digested at the speed of its data.
pub struct ImageDigest {
    hasher: blake3::Hasher,
    virtual_size: u64,
    chunk_size: u64,
    full_zero_id: ChunkId,
}

impl ImageDigest {
    pub fn new(virtual_size: u64, chunk_size: u32) -> ImageDigest {
        let mut hasher = blake3::Hasher::new_derive_key("ferry image digest v1");
        hasher.update(&virtual_size.to_le_bytes());
        hasher.update(&u64::from(chunk_size).to_le_bytes());
        ImageDigest {
            hasher,
            virtual_size,
            chunk_size: u64::from(chunk_size),
            full_zero_id: zero_chunk_id(chunk_size as usize),
        }
    }

    /// Adds chunk `index` (entries must be added in order, all of them).
    pub fn add(&mut self, index: u64, entry: &ChunkId) {
        if entry.is_zero_mark() {
            let len = (self.virtual_size - index * self.chunk_size).min(self.chunk_size);
            if len == self.chunk_size {
                self.hasher.update(self.full_zero_id.as_bytes());
            } else {
                self.hasher.update(zero_chunk_id(len as usize).as_bytes());
            }
        } else {
            self.hasher.update(entry.as_bytes());
        }
    }

    /// The digest as 64 hex digits.
    pub fn finish_hex(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    /// Digest of a complete index.
    pub fn of_index(virtual_size: u64, chunk_size: u32, index: &[ChunkId]) -> String {
        let mut digest = ImageDigest::new(virtual_size, chunk_size);
        for (i, id) in index.iter().enumerate() {
            digest.add(i as u64, id);
        }
        digest.finish_hex()
    }
}

/// The id of `len` zero bytes.
pub fn zero_chunk_id(len: usize) -> ChunkId {
    let mut hasher = blake3::Hasher::new();
    let zeros = [0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len());
        hasher.update(&zeros[..n]);
        left -= n;
    }
    ChunkId::from_bytes(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_mark_and_real_zero_id_give_one_digest() {
        let size = 3 * 65536 + 100;
        let zero_full = zero_chunk_id(65536);
        let zero_tail = zero_chunk_id(100);
        let marks = [ChunkId::ZERO_MARK; 4];
        let real = [zero_full, zero_full, zero_full, zero_tail];
        assert_eq!(
            ImageDigest::of_index(size, 65536, &marks),
            ImageDigest::of_index(size, 65536, &real)
        );
        assert_eq!(zero_chunk_id(100), ChunkId::of(&[0u8; 100]));
        assert_ne!(
            ImageDigest::of_index(size, 65536, &marks),
            ImageDigest::of_index(size + 1, 65536, &marks)
        );
    }
}
