//! `ferry bench`: throughput of each pipeline stage alone and of the whole pipeline, measured
//! in one run on one image, so the ratios between them are meaningful on any machine.
//!
//! Stages, each in MiB/s of the data it handles:
//! - `read`: the reader alone over the whole image (holes skipped, as in a backup);
//! - `hash`: BLAKE3 of the sampled data chunks, on every worker thread;
//! - `compress`: zstd of the sampled data chunks at the chosen level, on every worker thread;
//! - `sink_write`: put-if-absent of the encoded sample objects into the sink, with the
//!   backup's number of concurrent uploaders (as image data per second; `sink_put_stored` is
//!   the same run in bytes stored);
//! - `pipeline`: a real backup of the image into a fresh repository in the same sink.
//!
//! The slowest single stage is named as the bottleneck; `pipeline / bottleneck` shows how much
//! of the best possible overlap the pipeline achieves; all stages count bytes of image data.
//! `pipeline_stored / sink_put_stored` compares, in bytes stored, the pipeline's write rate
//! with the sink's raw PUT rate.
//!
//! # Inside a repository
//! Into an existing location, a benchmark writes only under its own throwaway prefix
//! [`new_prefix`] (`ferry-bench-<8 hex>/`), a name no repository object takes, and removes it
//! at its end. Into a repository it holds a shared lock (operation `bench`) the whole time, so
//! gc, which runs under the exclusive lock, never sweeps a running benchmark's objects; and
//! every object under a benchmark prefix that gc finds ([`is_bench_key`]) was left by a
//! benchmark that died without cleaning up (SIGKILL, a crash), which gc removes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::bounded;
use ferry_sinks::{ObjectKey, PutMode, Sink};
use serde::Serialize;

use crate::backup::{BackupOptions, DiskSource, Sizing, backup};
use crate::chunk_codec::ChunkEncoder;
use crate::chunk_id::{ChunkId, is_all_zero};
use crate::error::EngineError;
use crate::progress::NoProgress;
use crate::reader::{BufferPool, ImageSource, ReaderOptions, ReaderOutput, run_reader};
use crate::repository::Repository;

/// How the throwaway prefix of every benchmark run starts.
pub const BENCH_PREFIX: &str = "ferry-bench-";

/// A fresh throwaway prefix for one benchmark run: [`BENCH_PREFIX`] and 8 random hex digits
/// (a valid key, without a trailing `/`).
pub fn new_prefix() -> String {
    format!("{BENCH_PREFIX}{:08x}", rand::random::<u32>())
}

/// The benchmark prefix `key` lies under (`ferry-bench-0123abcd`), if it lies under one made
/// by [`new_prefix`].
pub fn bench_prefix_of(key: &str) -> Option<&str> {
    let (prefix, rest) = key.split_once('/')?;
    let hex = prefix.strip_prefix(BENCH_PREFIX)?;
    let ours = hex.len() == 8
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && !rest.is_empty();
    ours.then_some(prefix)
}

/// Whether `key` is an object of a benchmark run (see [`bench_prefix_of`]).
pub fn is_bench_key(key: &str) -> bool {
    bench_prefix_of(key).is_some()
}

/// Throughput of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    pub stage: String,
    pub bytes: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
}

/// Everything `ferry bench` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub image: String,
    pub virtual_size: u64,
    /// Bytes of data chunks sampled for the hash, compress and write stages.
    pub sample_bytes: u64,
    pub reader: String,
    pub stages: Vec<StageResult>,
    pub pipeline: StageResult,
    /// The slowest of the single stages.
    pub bottleneck: String,
    /// Pipeline throughput divided by the bottleneck stage's.
    pub pipeline_vs_bottleneck: f64,
    /// The pipeline's rate of bytes stored into the sink (new chunk objects and manifest).
    pub pipeline_stored: StageResult,
    /// The sink's raw PUT rate of the encoded sample objects, in bytes stored.
    pub sink_put_stored: StageResult,
    /// `pipeline_stored` divided by `sink_put_stored` (same unit: stored bytes per second):
    /// how close the pipeline comes to the sink's raw PUT rate.
    pub pipeline_vs_sink_write: f64,
}

/// Runs every stage on `image`, writing into `sink` (which must be empty or a throwaway prefix:
/// the pipeline stage creates a repository in it). `options.cancel` stops any stage with
/// [`EngineError::Cancelled`]; what was written stays for the caller to remove.
pub fn run_bench(
    image: &std::path::Path,
    sink: Arc<dyn Sink>,
    options: &BackupOptions,
    sample_limit: usize,
) -> Result<BenchReport, EngineError> {
    let source = ImageSource::open(image, true)?;
    let (read, sample, reader) = read_stage(&source, options, sample_limit)?;
    if sample.is_empty() {
        return Err(EngineError::InvalidOption(format!(
            "image {} holds no data (only holes and zeros): the hash, compress and write stages \
             have nothing to measure",
            image.display()
        )));
    }
    let workers = options.workers.max(1);
    let sample_bytes: u64 = sample.iter().map(|c| c.len() as u64).sum();

    let hash = timed("hash", sample_bytes, || {
        parallel(&sample, workers, options, |_: &mut (), chunk| {
            std::hint::black_box(ChunkId::of(chunk));
            Ok(())
        })
    })?;
    let encoded = std::sync::Mutex::new(Vec::with_capacity(sample.len()));
    let level = options.zstd_level;
    let compress = timed("compress", sample_bytes, || {
        parallel(
            &sample,
            workers,
            options,
            |encoder: &mut Option<ChunkEncoder>, chunk| {
                let encoder = match encoder {
                    Some(e) => e,
                    None => encoder
                        .insert(ChunkEncoder::new(level).map_err(|e| EngineError::io("zstd", e))?),
                };
                let object = encoder
                    .encode(chunk)
                    .map_err(|e| EngineError::io("zstd", e))?;
                encoded
                    .lock()
                    .expect("encoded lock")
                    .push((ChunkId::of(chunk), object));
                Ok(())
            },
        )
    })?;
    let encoded = encoded.into_inner().expect("encoded lock");
    let encoded_bytes: u64 = encoded.iter().map(|(_, o)| o.len() as u64).sum();
    let put = timed("sink_put_stored", encoded_bytes, || {
        parallel(
            &encoded,
            options.uploaders,
            options,
            |_: &mut Option<()>, (id, object)| {
                let key = ObjectKey::new(format!("bench-objects/{id}")).expect("valid key");
                sink.put(&key, object, PutMode::Create)?;
                Ok(())
            },
        )
    })?;
    for (id, _) in &encoded {
        let key = ObjectKey::new(format!("bench-objects/{id}")).expect("valid key");
        sink.delete(&key)?;
    }

    let repo = Repository::init(Arc::clone(&sink), options.chunk_size)?;
    let disk = DiskSource::new("bench", image.to_owned());
    let started = Instant::now();
    let report = backup(&repo, &[disk], options, &NoProgress)?;
    let elapsed = started.elapsed().as_secs_f64();
    let pipeline = stage("pipeline", report.counts.bytes_read, elapsed);
    let pipeline_stored = stage("pipeline_stored", report.counts.bytes_written, elapsed);

    // In image-data units, the sink absorbs the sample's raw bytes in the time of its puts.
    let write = stage("sink_write", sample_bytes, put.seconds);
    let stages = vec![read, hash, compress, write];
    let bottleneck = stages
        .iter()
        .min_by(|a, b| a.mib_per_s.total_cmp(&b.mib_per_s))
        .expect("four stages");
    Ok(BenchReport {
        image: image.display().to_string(),
        virtual_size: source.size,
        sample_bytes,
        reader,
        pipeline_vs_bottleneck: pipeline.mib_per_s / bottleneck.mib_per_s,
        pipeline_vs_sink_write: pipeline_stored.mib_per_s / put.mib_per_s,
        pipeline_stored,
        sink_put_stored: put,
        bottleneck: bottleneck.stage.clone(),
        pipeline,
        stages,
    })
}

/// Reads the whole image as a backup would, keeping up to `sample_limit` bytes of non-zero
/// chunks for the CPU and sink stages.
fn read_stage(
    source: &ImageSource,
    options: &BackupOptions,
    sample_limit: usize,
) -> Result<(StageResult, Vec<Vec<u8>>, String), EngineError> {
    let sizing = Sizing::of(options);
    let buffers = sizing.read_buffers;
    let pool = BufferPool::new(buffers, options.chunk_size as usize);
    let reader_options = ReaderOptions {
        chunk_size: options.chunk_size,
        queue_depth: sizing.queue_depth,
        mode: options.reader_mode,
    };
    let (tx, rx) = bounded(buffers);
    let (cancel_tx, cancel_rx) = bounded::<()>(0);
    let started = Instant::now();
    let (kind, sample, bytes) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let output = ReaderOutput {
                chunks: &tx,
                cancel: &cancel_rx,
            };
            run_reader(source, &reader_options, &pool, &output)
        });
        let mut sample = Vec::new();
        let mut kept = 0usize;
        let mut bytes = 0u64;
        let mut failure = None;
        for chunk in rx {
            match chunk {
                Ok(_) if options.check_cancel().is_err() => {
                    failure = Some(EngineError::Cancelled);
                    break;
                }
                Ok(chunk) => {
                    if let Some(data) = chunk.data {
                        bytes += data.len() as u64;
                        if kept < sample_limit && !is_all_zero(&data) {
                            kept += data.len();
                            sample.push(data.to_vec());
                        }
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(cancel_tx);
        let kind = reader.join().expect("reader thread panicked");
        match failure {
            Some(e) => Err(e),
            None => Ok((kind, sample, bytes)),
        }
    })?;
    let read = stage("read", bytes, started.elapsed().as_secs_f64());
    Ok((
        read,
        sample,
        kind.describe(source.direct.is_some()).to_owned(),
    ))
}

fn stage(name: &str, bytes: u64, seconds: f64) -> StageResult {
    StageResult {
        stage: name.to_owned(),
        bytes,
        seconds,
        mib_per_s: bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9),
    }
}

fn timed(
    name: &str,
    bytes: u64,
    f: impl FnOnce() -> Result<(), EngineError>,
) -> Result<StageResult, EngineError> {
    let started = Instant::now();
    f()?;
    Ok(stage(name, bytes, started.elapsed().as_secs_f64()))
}

/// Runs `f` over `items` on `threads` threads, each with its own state, until done, failed or
/// cancelled.
fn parallel<T: Sync, S: Default>(
    items: &[T],
    threads: usize,
    options: &BackupOptions,
    f: impl Fn(&mut S, &T) -> Result<(), EngineError> + Sync,
) -> Result<(), EngineError> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut state = S::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(());
                        };
                        options.check_cancel()?;
                        f(&mut state, item)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("bench thread panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_keys_are_only_those_under_a_made_prefix() {
        let prefix = new_prefix();
        let key = format!("{prefix}/chunks/ab/cd");
        assert_eq!(bench_prefix_of(&key), Some(prefix.as_str()));
        assert!(ferry_sinks::ObjectKey::new(&prefix).is_ok());
        assert!(is_bench_key("ferry-bench-0123abcd/config"));
        for other in [
            "ferry-bench-0123abcd",
            "ferry-bench-0123abcd/",
            "ferry-bench-0123ABCD/config",
            "ferry-bench-0123abc/config",
            "ferry-bench-0123abcde/config",
            "ferry-bench-notes/config",
            "ferry-benchmark/x",
            "chunks/ab/ferry-bench-0123abcd/x",
            "config",
        ] {
            assert!(!is_bench_key(other), "{other}");
        }
    }
}
