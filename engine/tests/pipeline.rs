//! Engine-level tests of backup, restore and verify over in-memory and faulty sinks.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::backup::{BackupOptions, BackupReport, DiskSource, backup};
use ferry_engine::gc::gc;
use ferry_engine::reader::ReaderMode;
use ferry_engine::repository::{CHUNKS_PREFIX, SNAPSHOTS_PREFIX};
use ferry_engine::restore::{RestoreOptions, restore_disk};
use ferry_engine::verify::{Problem, QUARANTINE_PREFIX, ReadData, verify};
use ferry_engine::{EngineError, NoProgress, Repository};
use ferry_sinks::fault::{FailAfter, FlipBitOnRead, StallPuts};
use ferry_sinks::local::LocalSink;
use ferry_sinks::memory::MemorySink;
use ferry_sinks::{ObjectKey, Sink};

const CHUNK: u32 = 64 << 10;

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// An image with random data, a hole, written zeros and a short tail.
fn write_image(dir: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&noise(seed, 5 * CHUNK as usize)).unwrap();
    file.write_all(&vec![0u8; 3 * CHUNK as usize]).unwrap();
    file.set_len(20 * u64::from(CHUNK)).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&noise(seed + 1, 777), 20 * u64::from(CHUNK))
        .unwrap();
    path
}

fn options(mode: ReaderMode) -> BackupOptions {
    let mut o = BackupOptions::new("test");
    o.chunk_size = CHUNK;
    o.reader_mode = mode;
    o.uploaders = 3;
    o
}

/// Restores the first disk of `snapshot` next to `image` and checks it is byte-identical.
fn assert_restores_to(repo: &Repository, snapshot: &str, image: &Path) {
    let snapshot = repo.load_snapshot(snapshot).unwrap();
    let target = image.with_extension("restored");
    restore_disk(
        repo,
        &snapshot,
        0,
        &target,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(image).unwrap()
    );
}

/// Reads and re-hashes every chunk of every snapshot: no problem allowed.
fn assert_verifies_clean(repo: &Repository) {
    let report = verify(repo, None, true, 2, &NoProgress).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// The key of some stored chunk object.
fn first_chunk(sink: &dyn Sink) -> ObjectKey {
    sink.list(CHUNKS_PREFIX)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .key
}

/// Backs up `image` as disk `name` with the default test options; must succeed.
fn back_up(repo: &Repository, name: &str, image: std::path::PathBuf) -> BackupReport {
    backup(
        repo,
        &[DiskSource::new(name, image)],
        &options(ReaderMode::Auto),
        &NoProgress,
    )
    .unwrap()
}

fn new_repo(sink: Arc<dyn Sink>) -> Repository {
    Repository::init(sink, CHUNK).unwrap()
}

#[test]
fn both_readers_back_up_identically_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let image = write_image(dir.path(), "a.img", 1);
    let repo = new_repo(Arc::new(MemorySink::new()));
    let disk = [DiskSource::new("a", image.clone())];
    let uring = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    let pread = backup(&repo, &disk, &options(ReaderMode::Pread), &NoProgress).unwrap();
    assert_eq!(uring.disks[0].image_digest, pread.disks[0].image_digest);
    assert_eq!(uring.counts.chunks_total, 21);
    assert_eq!(uring.counts.chunks_zero, 3 + 12);
    assert_eq!(uring.counts.chunks_new, 6);
    assert_eq!(pread.counts.chunks_new, 0);
    assert_eq!(pread.counts.chunks_reused, 6);

    assert_restores_to(&repo, &pread.snapshot, &image);
}

/// A backup of an unchanged image asks the sink to store nothing but its manifest: known chunk
/// ids come from the last snapshot's index, so no chunk is put (or checked) again.
#[test]
fn unchanged_image_sends_no_chunk_request() {
    let dir = tempfile::tempdir().unwrap();
    let image = write_image(dir.path(), "a.img", 3);
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = new_repo(Arc::clone(&memory));
    let disk = [DiskSource::new("a", image.clone())];
    let first = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    assert_eq!(first.counts.chunks_new, 6);

    let counting = Arc::new(FailAfter::new(Arc::clone(&memory), u64::MAX));
    let repo = Repository::open(Arc::clone(&counting) as Arc<dyn Sink>).unwrap();
    let second = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    assert_eq!(second.counts.chunks_reused, 6);
    assert_eq!(
        counting.attempts(),
        3,
        "only the lock (put, delete) and the manifest are written"
    );
    assert_restores_to(&repo, &second.snapshot, &image);
}

#[test]
fn failed_upload_publishes_nothing_and_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let image = write_image(dir.path(), "a.img", 2);
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    new_repo(Arc::clone(&memory));
    // The config is written; allow two chunk puts, then fail.
    let faulty = Repository::open(Arc::new(FailAfter::new(Arc::clone(&memory), 2))).unwrap();
    let disk = [DiskSource::new("a", image)];
    let err = backup(&faulty, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap_err();
    assert!(matches!(err, EngineError::Sink(_)), "{err}");
    let repo = Repository::open(memory).unwrap();
    assert!(
        repo.snapshot_ids().unwrap().is_empty(),
        "no manifest after a failed upload"
    );

    // The next run stores the rest and publishes a snapshot that verifies.
    let report = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    assert_eq!(report.counts.chunks_new + report.counts.chunks_reused, 6);
    assert!(
        report.counts.chunks_reused >= 1,
        "stored chunks are not uploaded twice"
    );
    assert_verifies_clean(&repo);
}

#[test]
fn flipped_bit_on_read_is_caught_by_restore_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let image = write_image(dir.path(), "a.img", 3);
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = new_repo(Arc::clone(&memory));
    let disk = [DiskSource::new("a", image)];
    let report = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    let bad = Repository::open(Arc::new(FlipBitOnRead::matching(
        memory,
        100,
        3,
        |k: &ObjectKey| k.as_str().starts_with("chunks/"),
    )))
    .unwrap();
    let snapshot = bad.load_snapshot(&report.snapshot).unwrap();
    let target = dir.path().join("out.img");
    let err = restore_disk(
        &bad,
        &snapshot,
        0,
        &target,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::ChunkCorrupt { .. }), "{err}");
    assert!(
        !target.exists(),
        "no partial image is left under the target name"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("ferry-restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let found = verify(&bad, None, true, 2, &NoProgress).unwrap();
    let corrupt = found
        .problems
        .iter()
        .filter(|p| matches!(p, Problem::ChunkCorrupt { .. }))
        .count();
    assert_eq!(corrupt, 6, "{:?}", found.problems);
    assert!(
        verify(&bad, None, false, 2, &NoProgress)
            .unwrap()
            .is_clean()
    );
}

#[test]
fn many_disks_in_one_snapshot_share_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_image(dir.path(), "a.img", 4);
    let b = dir.path().join("b.img");
    std::fs::copy(&a, &b).unwrap();
    let repo = new_repo(Arc::new(MemorySink::new()));
    let disks = [DiskSource::new("vda", a), DiskSource::new("vdb", b)];
    let report = backup(&repo, &disks, &options(ReaderMode::Auto), &NoProgress).unwrap();
    assert_eq!(report.disks.len(), 2);
    assert_eq!(
        report.counts.chunks_new, 6,
        "the copy is deduplicated within the run"
    );
    assert_eq!(report.disks[1].counts.chunks_reused, 6);
    let snapshot = repo.load_snapshot(&report.snapshot).unwrap();
    assert_eq!(snapshot.manifest.meta.disks[1].name, "vdb");
}

#[test]
fn invalid_options_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let image = write_image(dir.path(), "a.img", 5);
    let repo = new_repo(Arc::new(MemorySink::new()));
    let disk = |name: &str| DiskSource::new(name, image.clone());
    let mut bad_level = options(ReaderMode::Auto);
    bad_level.zstd_level = 99;
    let cases = [
        (vec![disk("../x")], options(ReaderMode::Auto)),
        (vec![disk("a"), disk("a")], options(ReaderMode::Auto)),
        (vec![], options(ReaderMode::Auto)),
        (vec![disk("a")], bad_level),
    ];
    for (disks, opts) in cases {
        let err = backup(&repo, &disks, &opts, &NoProgress).unwrap_err();
        assert!(matches!(err, EngineError::InvalidOption(_)), "{err}");
    }
    assert!(repo.snapshot_ids().unwrap().is_empty());
}

#[test]
fn image_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(Arc::new(MemorySink::new()));
    let disks = [DiskSource::new("d", dir.path().to_owned())];
    let err = backup(&repo, &disks, &options(ReaderMode::Auto), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// A sink failure while many reads are in flight must end the backup with an error, on both
/// readers (a reaped-but-unprocessed io_uring completion once made the reader wait forever).
#[test]
fn sink_failure_with_reads_in_flight_ends_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.img");
    std::fs::write(&path, noise(9, 400 * CHUNK as usize)).unwrap();
    for mode in [ReaderMode::Auto, ReaderMode::Pread] {
        for allowed in [0, 1, 7] {
            let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
            new_repo(Arc::clone(&memory));
            let faulty =
                Repository::open(Arc::new(FailAfter::new(Arc::clone(&memory), allowed))).unwrap();
            let disk = [DiskSource::new("big", path.clone())];
            let err = backup(&faulty, &disk, &options(mode), &NoProgress).unwrap_err();
            assert!(matches!(err, EngineError::Sink(_)), "{err}");
        }
    }
}

/// A cancelled backup stops with `Cancelled` and publishes nothing.
#[test]
fn cancel_stops_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.img");
    std::fs::write(&path, noise(10, 200 * CHUNK as usize)).unwrap();
    let repo = new_repo(Arc::new(MemorySink::new()));
    let (cancel_tx, cancel_rx) = crossbeam_channel::bounded::<()>(0);
    drop(cancel_tx);
    let mut opts = options(ReaderMode::Auto);
    opts.cancel = Some(cancel_rx);
    let err = backup(&repo, &[DiskSource::new("big", path)], &opts, &NoProgress).unwrap_err();
    assert!(matches!(err, EngineError::Cancelled), "{err}");
    assert!(repo.snapshot_ids().unwrap().is_empty());
}

/// The pipeline keeps exactly `uploaders` chunk puts in flight against a slow sink: all of them
/// (so uploads overlap), and never more (so encoded chunks waiting on the sink stay bounded), and
/// nothing is published while chunks are still unwritten.
#[test]
fn stalled_sink_holds_exactly_the_configured_uploads_in_flight() {
    const UPLOADERS: usize = 4;
    const CHUNKS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("distinct.img");
    std::fs::write(&path, noise(11, CHUNKS * CHUNK as usize)).unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    new_repo(Arc::clone(&memory)); // the config put bypasses the gate
    // Only chunk puts stall: the backup's lock is taken before the first chunk.
    let stall = Arc::new(StallPuts::matching(Arc::clone(&memory), |k| {
        k.as_str().starts_with(CHUNKS_PREFIX)
    }));
    let repo = Repository::open(Arc::clone(&stall) as Arc<dyn Sink>).unwrap();

    // A detached thread: if an assertion below fails, the test fails instead of hanging on a
    // backup stuck at the closed gate.
    let running = std::thread::spawn({
        let (repo, path) = (repo.clone(), path.clone());
        move || {
            let mut opts = options(ReaderMode::Auto);
            opts.uploaders = UPLOADERS;
            backup(&repo, &[DiskSource::new("d", path)], &opts, &NoProgress)
        }
    });

    assert!(
        stall.wait_for_in_flight(UPLOADERS, Duration::from_secs(60)),
        "only {} of {UPLOADERS} uploads in flight",
        stall.in_flight()
    );
    // The absence of one more upload cannot be awaited, only given a chance to show: a correct
    // pipeline never reaches UPLOADERS + 1, so this wait always returns false for it, whatever
    // the timing; the grace only sets how surely an extra uploader reaches the closed gate (and
    // so `max_in_flight` below) before the gate opens.
    assert!(
        !stall.wait_for_in_flight(UPLOADERS + 1, Duration::from_millis(200)),
        "more puts in flight than uploaders"
    );
    assert_eq!(
        memory.list(CHUNKS_PREFIX).unwrap().count(),
        0,
        "a chunk passed the closed gate"
    );
    assert_eq!(
        memory.list(SNAPSHOTS_PREFIX).unwrap().count(),
        0,
        "a manifest was published while its chunks were stalled"
    );

    stall.open();
    let report = running.join().expect("backup thread panicked").unwrap();
    assert_eq!(
        stall.max_in_flight(),
        UPLOADERS,
        "more puts in flight than uploaders"
    );
    assert_eq!(report.counts.chunks_new, CHUNKS as u64);
    assert_eq!(memory.list(CHUNKS_PREFIX).unwrap().count(), CHUNKS);
    assert_eq!(
        repo.snapshot_ids().unwrap(),
        std::slice::from_ref(&report.snapshot)
    );

    assert_verifies_clean(&repo);
    assert_restores_to(&repo, &report.snapshot, &path);
}

fn chunk_count(sink: &dyn Sink) -> usize {
    sink.list(CHUNKS_PREFIX).unwrap().count()
}

/// After a snapshot is removed, gc deletes exactly the chunks no remaining snapshot names, and
/// everything left verifies and restores. A dry run deletes nothing.
#[test]
fn gc_after_forget_frees_exactly_the_unreferenced_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = new_repo(Arc::clone(&memory));
    let a = write_image(dir.path(), "a.img", 10);
    let b = write_image(dir.path(), "b.img", 20);
    let first = back_up(&repo, "a", a.clone());
    // Change one chunk of a: the second snapshot shares 5 of the first's 6 chunks.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
        file.write_all_at(&noise(99, CHUNK as usize), 0).unwrap();
    }
    let second = back_up(&repo, "a", a.clone());
    assert_eq!(second.counts.chunks_new, 1);
    let other = back_up(&repo, "b", b.clone());
    assert_eq!(chunk_count(&*memory), 6 + 1 + 6);

    // Every chunk is named by some snapshot: nothing to collect.
    let report = gc(&repo, false).unwrap();
    assert_eq!(
        (report.chunks_total, report.chunks_deleted),
        (13, 0),
        "{report:?}"
    );

    repo.remove_snapshot(&first.snapshot).unwrap();
    let dry = gc(&repo, true).unwrap();
    assert_eq!(dry.chunks_deleted, 1);
    assert_eq!(chunk_count(&*memory), 13, "a dry run deleted something");
    let swept = gc(&repo, false).unwrap();
    assert_eq!(
        (swept.snapshots, swept.chunks_total, swept.chunks_deleted),
        (2, 13, 1)
    );
    assert_eq!(swept.bytes_freed, dry.bytes_freed);
    assert_eq!(chunk_count(&*memory), 12);
    assert_verifies_clean(&repo);
    assert_restores_to(&repo, &second.snapshot, &a);
    assert_restores_to(&repo, &other.snapshot, &b);
    assert!(
        memory.list("locks/").unwrap().next().is_none(),
        "gc left its lock"
    );
}

/// A manifest that does not read stops gc before it deletes anything.
#[test]
fn gc_refuses_while_a_manifest_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = new_repo(Arc::clone(&memory));
    let image = write_image(dir.path(), "a.img", 40);
    let first = back_up(&repo, "a", image);
    let key = ObjectKey::new(format!("{SNAPSHOTS_PREFIX}{}", first.snapshot)).unwrap();
    let mut bytes = memory.get(&key).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    memory
        .put(&key, &bytes, ferry_sinks::PutMode::Overwrite)
        .unwrap();
    let before = chunk_count(&*memory);
    let err = gc(&repo, false).unwrap_err();
    assert!(
        matches!(&err, EngineError::UnreadableSnapshot { snapshot, .. } if *snapshot == first.snapshot),
        "{err}"
    );
    assert_eq!(chunk_count(&*memory), before);
}

/// verify --quarantine moves a corrupt chunk aside (keeping its bytes); the next backup of the
/// same data stores a good copy, and the repository verifies clean again.
#[test]
fn quarantined_chunk_is_stored_again_by_the_next_backup() {
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = new_repo(Arc::clone(&memory));
    let image = write_image(dir.path(), "a.img", 50);
    let disk = [DiskSource::new("a", image.clone())];
    backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    // Rot one stored chunk.
    let victim = first_chunk(&*memory);
    let mut bytes = memory.get(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    memory
        .put(&victim, &bytes, ferry_sinks::PutMode::Overwrite)
        .unwrap();

    let quarantine = ReadData {
        quarantine: true,
        ..ReadData::from(true)
    };
    let found = verify(&repo, None, quarantine, 2, &NoProgress).unwrap();
    assert!(
        matches!(found.problems.as_slice(), [Problem::ChunkCorrupt { .. }]),
        "{found:?}"
    );
    assert_eq!(found.quarantined.len(), 1);
    let kept = ObjectKey::new(format!("{QUARANTINE_PREFIX}{}", found.quarantined[0])).unwrap();
    assert_eq!(
        memory.get(&kept).unwrap(),
        bytes,
        "the damaged bytes are kept"
    );
    assert!(
        memory.head(&victim).is_err(),
        "the corrupt chunk is still in chunks/"
    );
    // Now it is missing, which even a presence check sees.
    let missing = verify(&repo, None, false, 2, &NoProgress).unwrap();
    assert!(matches!(
        missing.problems.as_slice(),
        [Problem::ChunkMissing { .. }]
    ));

    let healed = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    assert_eq!(
        healed.counts.chunks_new, 1,
        "the quarantined chunk is stored again"
    );
    // The older snapshot names the same id, so it is whole again too.
    assert_verifies_clean(&repo);
    assert_restores_to(&repo, &healed.snapshot, &image);
    // Healed: gc clears the quarantine entry.
    let swept = gc(&repo, false).unwrap();
    assert_eq!((swept.chunks_deleted, swept.quarantine_cleared), (0, 1));
    assert!(memory.list(QUARANTINE_PREFIX).unwrap().next().is_none());
}

/// A referenced chunk that vanished is marked in the quarantine by verify --quarantine, so the
/// next backup stores it again even though the last snapshot names it.
#[test]
fn quarantined_missing_chunk_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = new_repo(Arc::clone(&memory));
    let image = write_image(dir.path(), "a.img", 60);
    let disk = [DiskSource::new("a", image.clone())];
    backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    let victim = first_chunk(&*memory);
    memory.delete(&victim).unwrap();
    let quarantine = ReadData {
        quarantine: true,
        ..ReadData::from(false)
    };
    let found = verify(&repo, None, quarantine, 2, &NoProgress).unwrap();
    assert!(matches!(
        found.problems.as_slice(),
        [Problem::ChunkMissing { .. }]
    ));
    assert_eq!(found.quarantined.len(), 1);
    // Without the mark the next backup would trust the last snapshot and store nothing.
    let healed = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    assert_eq!(healed.counts.chunks_new, 1);
    assert_verifies_clean(&repo);
    assert_eq!(gc(&repo, false).unwrap().quarantine_cleared, 1);
}

/// A sample reads a seed-determined subset; 100 % reads everything; bad percentages are refused.
#[test]
fn sampled_verify_reads_a_repeatable_subset() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(Arc::new(MemorySink::new()));
    let path = dir.path().join("many.img");
    std::fs::write(&path, noise(7, 200 * CHUNK as usize)).unwrap();
    back_up(&repo, "m", path);
    let sample = |percent: f64, seed: u64| ReadData {
        sample_percent: Some(percent),
        seed,
        ..ReadData::from(true)
    };
    let read = |plan: ReadData| verify(&repo, None, plan, 2, &NoProgress).unwrap();
    let all = read(sample(100.0, 1));
    assert_eq!((all.chunks_referenced, all.chunks_read), (200, 200));
    let ten = read(sample(10.0, 1));
    assert!(
        (5..=40).contains(&ten.chunks_read),
        "{} of 200 read",
        ten.chunks_read
    );
    assert_eq!(
        read(sample(10.0, 1)).chunks_read,
        ten.chunks_read,
        "same seed, same sample"
    );
    assert_eq!((ten.sample_percent, ten.sample_seed), (Some(10.0), Some(1)));
    // A percentage too small to pick any of 200 chunks still reads one: a "clean" sample of
    // nothing would prove nothing.
    for seed in 0..5 {
        assert_eq!(read(sample(0.0001, seed)).chunks_read, 1, "seed {seed}");
    }
    for bad in [0.0, -1.0, 100.5, f64::NAN] {
        assert!(
            verify(&repo, None, sample(bad, 1), 2, &NoProgress).is_err(),
            "{bad}"
        );
    }
}

/// A backup interrupted after storing some chunks (its lock left behind, as after SIGKILL) is
/// resumed by the next backup of the same name without sending those chunks again.
#[test]
fn resumed_backup_does_not_upload_stored_chunks_again() {
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    new_repo(Arc::clone(&memory));
    let image = write_image(dir.path(), "a.img", 70);
    let disk = [DiskSource::new("a", image.clone())];
    // Two mutations pass: the lock put and one chunk put. The lock's delete then fails too, so
    // the lock stays behind like a killed process's.
    let interrupted = Repository::open(Arc::new(FailAfter::new(Arc::clone(&memory), 2))).unwrap();
    backup(&interrupted, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap_err();
    assert_eq!(chunk_count(&*memory), 1);
    assert_eq!(memory.list("locks/").unwrap().count(), 1);

    let counting = Arc::new(FailAfter::new(Arc::clone(&memory), u64::MAX));
    let repo = Repository::open(Arc::clone(&counting) as Arc<dyn Sink>).unwrap();
    let resumed = backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    assert_eq!(
        (resumed.counts.chunks_new, resumed.counts.chunks_reused),
        (5, 1)
    );
    // Lock put, 5 chunk puts, manifest put, lock delete: the stored chunk is not sent again.
    assert_eq!(counting.attempts(), 8);
    assert_restores_to(&repo, &resumed.snapshot, &image);
}

/// What a backup killed mid-put leaves on a local repository (temp files next to the chunks
/// and at the top) is reported by a dry-run gc, removed by gc, and nothing else is touched.
#[test]
fn gc_removes_temp_files_of_interrupted_puts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir(&root).unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::open(&root).unwrap());
    let repo = new_repo(Arc::clone(&local));
    let image = write_image(dir.path(), "a.img", 60);
    let done = back_up(&repo, "a", image.clone());
    let chunk_dir = root
        .join(first_chunk(&*local).as_str())
        .parent()
        .unwrap()
        .to_owned();
    let planted = [
        (chunk_dir.join(".tmp-00000000000000c1"), 1000),
        (root.join(".tmp-00000000000000c2"), 24),
    ];
    for (path, len) in &planted {
        std::fs::write(path, vec![7u8; *len]).unwrap();
    }
    let chunks_before = chunk_count(&*local);

    let dry = gc(&repo, true).unwrap();
    assert_eq!((dry.leftovers_removed, dry.leftover_bytes), (2, 1024));
    assert!(
        planted.iter().all(|(path, _)| path.exists()),
        "a dry run removed a temp file"
    );
    let swept = gc(&repo, false).unwrap();
    assert_eq!((swept.leftovers_removed, swept.leftover_bytes), (2, 1024));
    assert_eq!(swept.chunks_deleted, 0);
    assert!(
        planted.iter().all(|(path, _)| !path.exists()),
        "gc kept a temp file"
    );
    assert_eq!(chunk_count(&*local), chunks_before);
    assert_verifies_clean(&repo);
    assert_restores_to(&repo, &done.snapshot, &image);
    assert_eq!(gc(&repo, false).unwrap().leftovers_removed, 0);
}

/// Objects under a benchmark's throwaway prefix (as a benchmark killed by SIGKILL leaves
/// them) are counted by a dry-run gc and deleted by gc; look-alike keys, snapshots and chunks
/// are left alone. While a benchmark holds its shared lock, gc is refused and deletes nothing.
#[test]
fn gc_removes_what_an_abandoned_benchmark_left_and_nothing_while_one_runs() {
    use ferry_engine::bench::new_prefix;
    use ferry_engine::lock::{LockKind, RepoLock};
    use ferry_sinks::PutMode;
    use ferry_sinks::prefixed::Prefixed;

    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = new_repo(Arc::clone(&memory));
    let image = write_image(dir.path(), "a.img", 80);
    let done = back_up(&repo, "a", image.clone());
    let chunks_before = chunk_count(&*memory);
    let prefixes = [new_prefix(), new_prefix()];
    for prefix in &prefixes {
        // What a benchmark writes: its own repository, a chunk, a raw sample object.
        let bench = Prefixed::new(Arc::clone(&memory), prefix).unwrap();
        let inner = Repository::init(Arc::new(bench), CHUNK).unwrap();
        for (key, len) in [("bench-objects/ab", 100), ("chunks/00/11", 30)] {
            let key = ObjectKey::new(key).unwrap();
            inner
                .sink()
                .put(&key, &vec![1; len], PutMode::Create)
                .unwrap();
        }
    }
    let look_alike = ObjectKey::new("ferry-bench-notes/readme").unwrap();
    memory.put(&look_alike, b"mine", PutMode::Create).unwrap();
    let bench_metas = || -> Vec<_> {
        memory
            .list("ferry-bench-")
            .unwrap()
            .map(Result::unwrap)
            .filter(|m| m.key != look_alike)
            .collect()
    };
    let bench_objects = || bench_metas().len();
    assert_eq!(bench_objects(), 6);
    let bytes: u64 = bench_metas().iter().map(|m| m.size).sum();

    let running = RepoLock::acquire(&repo, LockKind::Shared, "bench").unwrap();
    let err = gc(&repo, false).unwrap_err();
    assert!(
        matches!(&err, EngineError::Locked { holder } if holder.starts_with("bench")),
        "{err}"
    );
    assert_eq!(
        bench_objects(),
        6,
        "gc deleted a running benchmark's objects"
    );
    drop(running);

    let dry = gc(&repo, true).unwrap();
    let mut expected = prefixes.to_vec();
    expected.sort();
    assert_eq!(dry.bench_prefixes, expected);
    assert_eq!(dry.bench_objects_removed, 6);
    assert_eq!(dry.bench_bytes, bytes);
    assert_eq!(bench_objects(), 6, "a dry run deleted something");

    let swept = gc(&repo, false).unwrap();
    assert_eq!(swept.bench_prefixes, expected);
    assert_eq!(swept.bench_objects_removed, 6);
    assert_eq!(swept.chunks_deleted, 0);
    assert_eq!(bench_objects(), 0);
    assert_eq!(memory.get(&look_alike).unwrap(), b"mine");
    assert_eq!(chunk_count(&*memory), chunks_before);
    assert_verifies_clean(&repo);
    assert_restores_to(&repo, &done.snapshot, &image);
    assert_eq!(gc(&repo, false).unwrap().bench_objects_removed, 0);
}

/// A quarantining verify writes to the repository, so it holds a shared lock: gc is refused
/// while it runs (here: while its quarantine put is held at a gate) and runs after it.
#[test]
fn gc_is_refused_while_verify_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let stall = Arc::new(StallPuts::matching(Arc::clone(&memory), |k| {
        k.as_str().starts_with(QUARANTINE_PREFIX)
    }));
    let repo = new_repo(Arc::clone(&stall) as Arc<dyn Sink>);
    let image = write_image(dir.path(), "a.img", 70);
    let disk = [DiskSource::new("a", image)];
    backup(&repo, &disk, &options(ReaderMode::Auto), &NoProgress).unwrap();
    let victim = first_chunk(&*memory);
    let mut bytes = memory.get(&victim).unwrap();
    bytes[20] ^= 1;
    memory
        .put(&victim, &bytes, ferry_sinks::PutMode::Overwrite)
        .unwrap();

    std::thread::scope(|scope| {
        let verifying = scope.spawn(|| {
            let quarantine = ReadData {
                quarantine: true,
                ..ReadData::from(true)
            };
            verify(&repo, None, quarantine, 2, &NoProgress).unwrap()
        });
        assert!(stall.wait_for_in_flight(1, Duration::from_secs(60)));
        let err = gc(&repo, false).unwrap_err();
        assert!(
            matches!(&err, EngineError::Locked { holder } if holder.contains("verify --quarantine")),
            "{err}"
        );
        stall.open();
        let found = verifying.join().unwrap();
        assert_eq!(found.quarantined.len(), 1);
    });
    let swept = gc(&repo, false).unwrap();
    assert_eq!(swept.chunks_deleted, 0);
}

/// A restored file has holes for zero chunks and for runs of zero 4 KiB blocks inside data
/// chunks, and the same bytes as the image (with and without a short tail).
#[test]
fn restore_leaves_holes_for_zero_blocks_inside_chunks() {
    use rustix::fs::{SeekFrom, seek};
    let dir = tempfile::tempdir().unwrap();
    let chunk = CHUNK as usize;
    for tail in [0usize, 1000] {
        let mut data = noise(80, 3 * chunk + tail);
        data[16 << 10..48 << 10].fill(0); // zero blocks inside chunk 0
        data[chunk..2 * chunk].fill(0); // a written zero chunk
        let image = dir.path().join(format!("sparse-{tail}.img"));
        std::fs::write(&image, &data).unwrap();
        let repo = new_repo(Arc::new(MemorySink::new()));
        let done = back_up(&repo, "a", image.clone());
        assert_restores_to(&repo, &done.snapshot, &image);
        let restored = std::fs::File::open(image.with_extension("restored")).unwrap();
        let hole = |from: u64| seek(&restored, SeekFrom::Hole(from)).unwrap();
        let data_at = |from: u64| seek(&restored, SeekFrom::Data(from)).unwrap();
        assert_eq!(hole(0), 16 << 10, "tail {tail}: no hole inside chunk 0");
        assert_eq!(
            data_at(16 << 10),
            48 << 10,
            "tail {tail}: zero blocks were written"
        );
        assert_eq!(hole(48 << 10), u64::from(CHUNK), "tail {tail}");
        assert_eq!(
            data_at(u64::from(CHUNK)),
            2 * u64::from(CHUNK),
            "tail {tail}"
        );
    }
}
