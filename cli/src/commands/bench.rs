//! `ferry bench`: stage-by-stage throughput and the bottleneck.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use crossbeam_channel::TryRecvError;
use ferry_engine::backup::BackupOptions;
use ferry_engine::bench::{new_prefix, run_bench};
use ferry_engine::config::check_chunk_size;
use ferry_engine::lock::{LockKind, RepoLock};
use ferry_engine::sample::generate;
use ferry_engine::{EngineError, Repository};
use ferry_sinks::Sink;
use ferry_sinks::local::LocalSink;
use ferry_sinks::nfs::NfsSink;
use ferry_sinks::prefixed::Prefixed;

use crate::args::BenchArgs;
use crate::commands::print_json;
use crate::repo_url::RepoUrl;

/// Bytes of data chunks kept in memory for the hash, compress and write stages.
const SAMPLE_LIMIT: usize = 512 << 20;
/// Smallest generated sample: from here up a sample holds holes, zeros, text and random data.
const MIN_SAMPLE: u64 = 4 << 20;

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    // Before anything is created: an interrupted benchmark removes what it made.
    let cancel = crate::signals::cancel_on_signal()?;
    let temp_dir = std::env::temp_dir();
    remove_dead_scratch(&temp_dir);
    let scratch = Scratch::create(&temp_dir)?;
    // The repository first: one that is refused costs no sample image.
    let prefix = new_prefix();
    let mut nfs_dirs = None;
    let mut cleanup_dir = None;
    let mut lock = None;
    let remote: Option<Arc<dyn Sink>> = match &args.repo {
        None => None,
        Some(url) => {
            let outer: Arc<dyn Sink> = match RepoUrl::parse(url)? {
                RepoUrl::Nfs(config) => {
                    let nfs = Arc::new(NfsSink::open(&config)?);
                    nfs_dirs = Some(Arc::clone(&nfs));
                    nfs
                }
                repo @ RepoUrl::S3 { .. } => repo.open()?,
                RepoUrl::Local(path) => {
                    ensure!(
                        path.is_dir(),
                        "{} is not a directory: bench writes its objects under a throwaway \
                         prefix of an existing repository, and creates none",
                        path.display()
                    );
                    cleanup_dir = Some(path.join(&prefix));
                    Arc::new(LocalSink::open(&path)?)
                }
            };
            // Before anything is written: gc must not sweep this run's objects.
            lock = Some(lock_repository(&outer, url)?);
            Some(Arc::new(Prefixed::new(outer, &prefix)?))
        }
    };
    let image = match &args.image {
        Some(image) => image.clone(),
        None => {
            ensure!(
                args.size >= MIN_SAMPLE,
                "--size {} is too small: a generated sample needs at least 4M to hold every kind \
                 of data the stages measure",
                args.size
            );
            let path = scratch.0.join("sample.img");
            generate(&path, args.size, 1)?;
            ensure!(
                !matches!(cancel.try_recv(), Err(TryRecvError::Disconnected)),
                "stopped while generating the sample image"
            );
            path
        }
    };
    if args.cold {
        drop_page_cache()?;
    }
    let sink = match remote {
        Some(sink) => sink,
        None => Arc::new(LocalSink::create(scratch.0.join("repo"))?),
    };
    let mut options = BackupOptions::new("bench");
    options.chunk_size = check_chunk_size(args.chunk_size)?;
    options.zstd_level = args.zstd_level;
    options.cancel = Some(cancel);
    let result = run_bench(&image, Arc::clone(&sink), &options, SAMPLE_LIMIT);
    // Everything the benchmark wrote is under its own prefix or directory: remove it all.
    let keys: Vec<_> = sink
        .list("")
        .map(|objects| objects.filter_map(Result::ok).map(|m| m.key).collect())
        .unwrap_or_default();
    for key in keys {
        let _ = sink.delete(&key);
    }
    if let Some(dir) = cleanup_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    // On NFS the prefix's directories outlive its objects.
    if let Some(nfs) = nfs_dirs
        && let Err(e) = nfs.remove_empty_dirs(&format!("{prefix}/"))
    {
        log::warn!("cannot remove the benchmark's directories {prefix}/: {e}");
    }
    drop(lock);
    drop(scratch);
    let report = result.context("benchmark failed")?;
    if args.json {
        print_json(&report)?;
    } else {
        outln!(
            "image {} ({} MiB virtual), reader {}",
            report.image,
            report.virtual_size >> 20,
            report.reader
        )?;
        for s in report.stages.iter().chain([
            &report.pipeline,
            &report.sink_put_stored,
            &report.pipeline_stored,
        ]) {
            outln!(
                "{:<16} {:>8.0} MiB/s  ({} MiB in {:.2} s)",
                s.stage,
                s.mib_per_s,
                s.bytes >> 20,
                s.seconds
            )?;
        }
        outln!(
            "bottleneck: {}; pipeline = {:.2}x the bottleneck stage; it stores at {:.2}x the raw PUT rate",
            report.bottleneck,
            report.pipeline_vs_bottleneck,
            report.pipeline_vs_sink_write
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A shared lock on the repository at `outer`, held while the benchmark writes under its
/// prefix there, so that gc neither sweeps its objects nor removes its temp files meanwhile.
/// A location that holds no Ferry repository is refused: there no gc could remove what a
/// killed benchmark leaves, and `init` would refuse the location because of it.
fn lock_repository(outer: &Arc<dyn Sink>, url: &str) -> Result<RepoLock> {
    match Repository::open(Arc::clone(outer)) {
        Ok(repo) => RepoLock::acquire(&repo, LockKind::Shared, "bench")
            .with_context(|| format!("cannot lock repository {url}")),
        Err(EngineError::NotARepository { .. }) => bail!(
            "{url} holds no Ferry repository: bench writes under a throwaway prefix of an \
             existing repository, so that `ferry gc` can remove what a killed benchmark leaves; \
             run `ferry init --repo {url}` first"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open repository {url}")),
    }
}

/// The start of the names of benchmark scratch directories: `ferry-bench-<pid>-<8 hex>`.
const SCRATCH_PREFIX: &str = "ferry-bench-";

/// A private scratch directory (0700) in the temporary directory, named
/// `ferry-bench-<pid>-<8 hex>`, removed with everything in it when dropped, however the
/// benchmark ends. One that a benchmark killed by SIGKILL left (with a sample image of up to
/// `--size`) is removed by the next benchmark: [`remove_dead_scratch`].
struct Scratch(PathBuf);

impl Scratch {
    fn create(base: &std::path::Path) -> Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = base.join(format!(
            "{SCRATCH_PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the scratch directories in `base` that benchmarks killed before their cleanup left:
/// those named `ferry-bench-<pid>-…` whose process no longer runs on this host, and that are
/// directories (not links) of this user. Others' directories, those of running benchmarks and
/// names of any other form are left alone; a failure is a warning, not an error.
fn remove_dead_scratch(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| ferry_engine::lock::pid_of_dead_owner(n, SCRATCH_PREFIX))
        else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if !ours {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => log::info!(
                "removed {}, left by a benchmark that was killed (pid {pid})",
                path.display()
            ),
            Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
        }
    }
}

fn drop_page_cache() -> Result<()> {
    rustix::fs::sync();
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        bail!("--cold needs root to drop the page cache: {e}");
    }
    Ok(())
}
