//! A chunk object read from a repository is untrusted. The input is an expected chunk id
//! (the first 32 bytes) followed by the stored object. Decoding must never panic, must never
//! produce more than the given maximum length (decompression bombs), and must re-check the
//! BLAKE3 id of whatever it returns.
//!
//! A random id never matches, so the input is also used as raw chunk data: encoded at a level
//! taken from its first byte, it must decode back to itself under its own id, also into a
//! caller's buffer (`decode_into`, as restore does), which a longer raw length must not overrun.
#![no_main]

use ferry_engine::chunk_codec::{ChunkDecoder, ChunkEncoder, decode_chunk};
use ferry_engine::chunk_id::ChunkId;
use libfuzzer_sys::fuzz_target;

const MAX_LEN: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 32 {
        let id = ChunkId::from_bytes(data[..32].try_into().unwrap());
        if let Ok(raw) = decode_chunk(&data[32..], &id, MAX_LEN) {
            assert!(
                raw.len() <= MAX_LEN,
                "decoded {} bytes, cap {MAX_LEN}",
                raw.len()
            );
            assert!(
                ChunkId::of(&raw) == id,
                "decoded bytes do not hash to the id"
            );
        }
    }
    let level = data.first().map_or(1, |b| i32::from(b % 6) + 1);
    let object = ChunkEncoder::new(level).unwrap().encode(data).unwrap();
    let id = ChunkId::of(data);
    let back = decode_chunk(&object, &id, data.len()).expect("round trip");
    assert!(back == data, "round trip changed the data");
    let mut out = vec![0u8; data.len()];
    let n = ChunkDecoder::new()
        .decode_into(&object, &id, &mut out)
        .expect("round trip into a buffer");
    assert!(out[..n] == *data, "decode_into changed the data");
    if let Some(short) = data.len().checked_sub(1) {
        assert!(
            ChunkDecoder::new()
                .decode_into(&object, &id, &mut out[..short])
                .is_err(),
            "decode_into accepted a buffer shorter than the chunk"
        );
    }
});
