//! gc beside a running backup, on every backend (in memory, a real NFS export, a real S3
//! bucket): while a backup is between reading its known chunks and publishing its manifest,
//! every gc attempt is refused, and the manifest it then publishes names only stored chunks,
//! including orphans of a forgotten snapshot that the backup found and reused.

#[path = "support/image.rs"]
mod image;
#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;
#[path = "../../sinks/tests/support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

use std::sync::Arc;
use std::time::Duration;

use ferry_engine::backup::{BackupOptions, DiskSource, backup};
use ferry_engine::gc::gc;
use ferry_engine::repository::CHUNKS_PREFIX;
use ferry_engine::{EngineError, NoProgress, Repository, verify};
use ferry_sinks::fault::StallPuts;
use ferry_sinks::memory::MemorySink;
use ferry_sinks::nfs::NfsSink;
use ferry_sinks::s3::S3Sink;
use ferry_sinks::{PutMode, PutOutcome, Sink};

/// gc attempts while the backup is stalled.
const ROUNDS: usize = 20;
const CHUNK: u32 = 64 << 10;

fn options() -> BackupOptions {
    let mut o = BackupOptions::new("vm");
    o.chunk_size = CHUNK;
    o.uploaders = 2;
    o
}

fn gc_never_runs_beside_a_backup(sink: Arc<dyn Sink>) {
    let dir = tempfile::tempdir().unwrap();
    let image = image::noise_image(dir.path(), 8 * CHUNK);
    let disk = [DiskSource::new("vda", image.clone())];
    let repo = Repository::init(Arc::clone(&sink), CHUNK).unwrap();
    // A snapshot, then forgotten: its chunks are orphans that the next backup will reuse
    // (put-if-absent finds them), with no manifest protecting them while it runs.
    let first = backup(&repo, &disk, &options(), &NoProgress).unwrap();
    repo.remove_snapshot(&first.snapshot).unwrap();

    let stall = Arc::new(StallPuts::matching(Arc::clone(&sink), |k| {
        k.as_str().starts_with(CHUNKS_PREFIX)
    }));
    let stalled = Repository::open(Arc::clone(&stall) as Arc<dyn Sink>).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(backup(&stalled, &disk, &options(), &NoProgress));
    });
    assert!(
        stall.wait_for_in_flight(1, Duration::from_secs(60)),
        "the backup never reached its first chunk"
    );
    for round in 0..ROUNDS {
        match gc(&repo, false) {
            Err(EngineError::Locked { holder }) => assert!(holder.contains("backup"), "{holder}"),
            other => panic!("round {round}: gc beside a running backup: {other:?}"),
        }
    }
    stall.open();
    let report = done_rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap()
        .unwrap();
    assert_eq!(report.counts.chunks_new, 0, "the orphans were reused");
    let swept = gc(&repo, false).unwrap();
    assert_eq!(swept.chunks_deleted, 0, "{swept:?}");
    assert!(
        verify(&repo, None, true, 2, &NoProgress)
            .unwrap()
            .is_clean()
    );
    // A put-if-absent of a chunk the snapshot names finds it: it really is stored.
    let any = sink
        .list(CHUNKS_PREFIX)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .key;
    assert_eq!(
        sink.put(&any, b"x", PutMode::Create).unwrap(),
        PutOutcome::AlreadyExists
    );
}

#[test]
fn in_memory() {
    gc_never_runs_beside_a_backup(Arc::new(MemorySink::new()));
}

#[test]
fn on_an_nfs_export() {
    let scratch = nfs_server::Scratch::new("gc-beside-backup");
    gc_never_runs_beside_a_backup(Arc::new(NfsSink::create(&scratch.config()).unwrap()));
}

#[test]
fn in_an_s3_bucket() {
    let server = s3_server::server();
    let config = server.config(&server.bucket("gc-beside-backup"), "repo");
    gc_never_runs_beside_a_backup(Arc::new(S3Sink::open(&config).unwrap()));
}
