//! Reproducible sample images for demos, tests and benchmarks (`ferry gen-image`).
//!
//! The image is a sequence of runs of 1 to 16 MiB, each of one kind, drawn from a seeded
//! SplitMix64 generator (so a seed and size give the same bytes on every machine). Images under
//! 256 MiB use smaller runs (1 to 16 units of a power of two down to 64 KiB) so that they are
//! mixed too; since 2026-12-02, they differ from what earlier versions generated. The kinds:
//! about 25% holes, 15% written zeros, 30% compressible text-like data (log lines, roughly
//! 3-4x with zstd) and 30% random data. No two MiB of data repeat, so dedup cannot flatter a
//! benchmark.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use serde::Serialize;

use crate::error::EngineError;

const MIB: u64 = 1 << 20;

/// What [`generate`] wrote, in bytes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SampleSummary {
    pub size: u64,
    pub hole_bytes: u64,
    pub zero_bytes: u64,
    pub text_bytes: u64,
    pub random_bytes: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Hole,
    Zero,
    Text,
    Random,
}

/// SplitMix64: tiny, fast, and fixed forever (unlike library generators).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }
}

const WORDS: [&str; 16] = [
    "kernel",
    "systemd",
    "sshd",
    "nginx",
    "postgres",
    "eth0",
    "link",
    "up",
    "down",
    "accepted",
    "connection",
    "from",
    "request",
    "GET",
    "/api/v1/items",
    "completed",
];

/// Writes one MiB of log-like text for MiB number `mib`.
fn text_mib(rng: &mut SplitMix64, mib: u64, out: &mut Vec<u8>) {
    out.clear();
    let mut line = 0u64;
    while out.len() < MIB as usize {
        let t = rng.below(86_400_000);
        let _ = writeln!(
            out,
            "2026-11-25T{:02}:{:02}:{:02}.{:03}Z host{} {}[{}]: {} {} {} {} seq={}:{}",
            t / 3_600_000,
            t / 60_000 % 60,
            t / 1000 % 60,
            t % 1000,
            rng.below(4),
            WORDS[rng.below(16) as usize],
            rng.below(65536),
            WORDS[rng.below(16) as usize],
            WORDS[rng.below(16) as usize],
            WORDS[rng.below(16) as usize],
            rng.below(1000),
            mib,
            line
        );
        line += 1;
    }
    out.truncate(MIB as usize);
}

/// The largest power of two not above `n` (1 for 0).
fn prev_power_of_two(n: u64) -> u64 {
    1 << n.max(1).ilog2()
}

/// Creates `path` (mode 0600, must not exist) as a sample image of `size` bytes from `seed`.
/// On failure (no space, a size the filesystem refuses) the partial file is removed.
pub fn generate(path: &Path, size: u64, seed: u64) -> Result<SampleSummary, EngineError> {
    let file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            EngineError::io(format!("cannot create sample image {}", path.display()), e)
        })?;
    write_sample(&file, path, size, seed).inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })
}

/// Writes the sample into `file` (created empty at `path`).
fn write_sample(
    file: &File,
    path: &Path,
    size: u64,
    seed: u64,
) -> Result<SampleSummary, EngineError> {
    let io = |e| EngineError::io(format!("writing sample image {}", path.display()), e);
    file.set_len(size).map_err(io)?;
    let mut rng = SplitMix64(seed);
    let mut summary = SampleSummary {
        size,
        ..SampleSummary::default()
    };
    let mut buf = vec![0u8; MIB as usize];
    let mut text = Vec::with_capacity(MIB as usize + 256);
    // Runs are 1 to 16 units long: 1 MiB from 256 MiB up (so large samples stay as they
    // always were), a smaller power of two for small images (down to 64 KiB), so every size
    // gets a mix and runs still start and end on chunk boundaries of chunks up to the unit.
    let unit = prev_power_of_two(size / 256).clamp(64 << 10, MIB);
    let mut offset = 0u64;
    while offset < size {
        let run = (1 + rng.below(16)) * unit;
        let kind = match rng.below(100) {
            0..25 => Kind::Hole,
            25..40 => Kind::Zero,
            40..70 => Kind::Text,
            _ => Kind::Random,
        };
        let end = (offset + run).min(size);
        while offset < end {
            let len = (end - offset).min(MIB) as usize;
            let bytes: &[u8] = match kind {
                Kind::Hole => &[],
                Kind::Zero => {
                    buf.fill(0);
                    &buf[..len]
                }
                Kind::Text => {
                    text_mib(&mut rng, offset / MIB, &mut text);
                    &text[..len]
                }
                Kind::Random => {
                    rng.fill(&mut buf[..len]);
                    &buf[..len]
                }
            };
            if !bytes.is_empty() {
                file.write_all_at(bytes, offset).map_err(io)?;
            }
            let counter = match kind {
                Kind::Hole => &mut summary.hole_bytes,
                Kind::Zero => &mut summary.zero_bytes,
                Kind::Text => &mut summary.text_bytes,
                Kind::Random => &mut summary.random_bytes,
            };
            *counter += len as u64;
            offset += len as u64;
        }
    }
    file.sync_all().map_err(io)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_mixed_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let sa = generate(&a, 256 * MIB + 12345, 7).unwrap();
        generate(&b, 256 * MIB + 12345, 7).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(
            sa.hole_bytes + sa.zero_bytes + sa.text_bytes + sa.random_bytes,
            sa.size
        );
        assert!(sa.text_bytes > 0 && sa.random_bytes > 0, "{sa:?}");
        // Small samples are mixed too (runs shrink with the size).
        for seed in [1, 7] {
            let small = dir.path().join(format!("small-{seed}"));
            let summary = generate(&small, 16 * MIB, seed).unwrap();
            let kinds = [
                summary.hole_bytes,
                summary.zero_bytes,
                summary.text_bytes,
                summary.random_bytes,
            ];
            assert!(kinds.iter().all(|&k| k > 0), "seed {seed}: {summary:?}");
        }
        assert!(
            generate(&a, MIB, 7).is_err(),
            "existing files are never overwritten"
        );
    }
}
