//! The per-chunk stage of the pipeline (zero check, BLAKE3, zstd encode, decode) on 4 MiB
//! chunks of three kinds of data. `memcpy` of the same chunk is the baseline measured in the
//! same run: compare each stage's throughput to it rather than to absolute numbers.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_engine::chunk_codec::{ChunkDecoder, ChunkEncoder};
use ferry_engine::chunk_id::{ChunkId, is_all_zero};

const CHUNK: usize = 4 << 20;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_chunk() -> Vec<u8> {
    let mut state = 1;
    (0..CHUNK / 8)
        .flat_map(|_| splitmix(&mut state).to_le_bytes())
        .collect()
}

/// Log-like text: compresses about 3-4x with zstd level 1.
fn text_chunk() -> Vec<u8> {
    let mut state = 2;
    let mut out = Vec::with_capacity(CHUNK + 128);
    let words = [
        "kernel", "eth0", "link", "up", "GET", "/api/v1", "sshd", "accepted",
    ];
    while out.len() < CHUNK {
        let r = splitmix(&mut state);
        let line = format!(
            "2026-11-25T{:02}:{:02}:{:02}Z host {}[{}]: {} {} seq={}\n",
            r % 24,
            (r >> 8) % 60,
            (r >> 16) % 60,
            words[(r >> 24) as usize % 8],
            (r >> 32) % 65536,
            words[(r >> 40) as usize % 8],
            words[(r >> 48) as usize % 8],
            r >> 52
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(CHUNK);
    out
}

fn chunk_stage(c: &mut Criterion) {
    let inputs = [
        ("zero", vec![0u8; CHUNK]),
        ("text", text_chunk()),
        ("random", random_chunk()),
    ];
    let mut group = c.benchmark_group("chunk_stage");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.sample_size(20);
    for (kind, data) in &inputs {
        let mut copy = vec![0u8; CHUNK];
        group.bench_with_input(BenchmarkId::new("baseline_memcpy", kind), data, |b, d| {
            b.iter(|| copy.copy_from_slice(black_box(d)))
        });
        group.bench_with_input(BenchmarkId::new("zero_check", kind), data, |b, d| {
            b.iter(|| is_all_zero(black_box(d)))
        });
        group.bench_with_input(BenchmarkId::new("blake3", kind), data, |b, d| {
            b.iter(|| ChunkId::of(black_box(d)))
        });
        for level in [1, 3] {
            let mut encoder = ChunkEncoder::new(level).expect("zstd");
            let mut object = Vec::new();
            group.bench_with_input(
                BenchmarkId::new(format!("encode_zstd{level}"), kind),
                data,
                |b, d| {
                    b.iter(|| {
                        encoder
                            .encode_into(black_box(d), &mut object)
                            .expect("encode")
                    })
                },
            );
        }
        let object = ChunkEncoder::new(1)
            .expect("zstd")
            .encode(data)
            .expect("encode");
        let id = ChunkId::of(data);
        let mut decoder = ChunkDecoder::new();
        group.bench_with_input(BenchmarkId::new("decode_verify", kind), &object, |b, o| {
            b.iter(|| decoder.decode(black_box(o), &id, CHUNK).expect("decode"))
        });
    }
    group.finish();
}

criterion_group!(benches, chunk_stage);
criterion_main!(benches);
