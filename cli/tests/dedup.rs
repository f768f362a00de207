//! Deduplication: unchanged data is never written twice, changed data costs one chunk per
//! changed chunk, and equal chunks inside one image are stored once.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// 1 MiB + a short tail of random data (17 chunks of 64 KiB, all different).
fn random_image(fx: &Fixture, name: &str, seed: u64) -> std::path::PathBuf {
    let image = fx.path(name);
    let size = MIB + 1000;
    write_image(&image, size, &[(0, &random_bytes(seed, size as usize))]);
    image
}

#[track_caller]
fn counts(report: &Value) -> [u64; 4] {
    [
        num(report, "chunks_total"),
        num(report, "chunks_new"),
        num(report, "chunks_reused"),
        num(report, "chunks_zero"),
    ]
}

#[test]
fn second_backup_of_the_same_image_writes_only_the_manifest() {
    let fx = Fixture::new();
    let image = random_image(&fx, "disk.img", 1);
    let first = fx.backup(&image, &[]);
    assert_eq!(counts(&first), [17, 17, 0, 0], "{first:#}");
    let chunks = fx.chunk_ids();
    assert_eq!(chunks.len(), 17);

    // The same file through a second hard link: same disk and snapshot name (so the first
    // snapshot is the dedup base), but a different recorded source path, so the manifest
    // differs from the first even when both backups finish within the same second (manifests
    // record whole seconds; identical manifests would be one and the same snapshot).
    let again = fx.dir("again").join("disk.img");
    std::fs::hard_link(&image, &again).unwrap();
    let second = fx.backup(&again, &[]);
    assert_eq!(counts(&second), [17, 0, 17, 0], "{second:#}");
    assert_eq!(text(&second, "name"), text(&first, "name"));
    let sid = text(&second, "snapshot");
    assert_ne!(sid, text(&first, "snapshot"));
    // Only the manifest was written: no chunk bytes, no new chunk object.
    assert_eq!(num(&second["disks"][0], "bytes_written"), 0, "{second:#}");
    assert_eq!(
        num(&second, "bytes_written"),
        file_len(&fx.snapshot_path(sid)),
        "{second:#}"
    );
    assert_eq!(fx.chunk_ids(), chunks);
    assert_eq!(fx.snapshot_ids().len(), 2);
    // Both snapshots restore the image.
    let out = fx.dir("out");
    for snapshot in [text(&first, "snapshot"), sid] {
        let target = out.join(snapshot);
        fx.restore_ok(snapshot, &target);
        assert_same_file(&image, &target);
    }
}

#[test]
fn backup_under_another_name_reuses_stored_chunks() {
    let fx = Fixture::new();
    let image = random_image(&fx, "disk.img", 2);
    fx.backup(&image, &[]);
    let chunks = fx.chunk_ids();
    // Another snapshot name: no previous snapshot to trust, so every chunk is offered to the
    // repository, which already holds it (put-if-absent).
    let other = fx.backup(&image, &["--name", "other"]);
    assert_eq!(text(&other, "name"), "other");
    assert_eq!(counts(&other), [17, 0, 17, 0], "{other:#}");
    assert_eq!(num(&other["disks"][0], "bytes_written"), 0, "{other:#}");
    assert_eq!(fx.chunk_ids(), chunks);
}

#[test]
fn changing_one_aligned_chunk_stores_exactly_one_new_chunk() {
    let fx = Fixture::new();
    let image = random_image(&fx, "disk.img", 3);
    let original = fx.path("original.img");
    std::fs::copy(&image, &original).unwrap();
    let first = fx.backup(&image, &[]);
    let before = fx.chunk_ids();

    // Rewrite chunk 5 entirely with new non-zero content.
    let new_chunk = random_bytes(99, CHUNK as usize);
    overwrite(&image, 5 * CHUNK, &new_chunk);
    let second = fx.backup(&image, &[]);
    assert_eq!(counts(&second), [17, 1, 16, 0], "{second:#}");
    let after = fx.chunk_ids();
    let added: BTreeSet<String> = after.difference(&before).cloned().collect();
    assert_eq!(added, BTreeSet::from([chunk_id(&new_chunk)]));
    assert!(before.is_subset(&after), "stored chunks are never removed");
    let new_id = chunk_id(&new_chunk);
    let sid = text(&second, "snapshot");
    assert_eq!(
        num(&second, "bytes_written"),
        file_len(&fx.chunk_path(&new_id)) + file_len(&fx.snapshot_path(sid)),
        "{second:#}"
    );

    // Each snapshot restores its own version.
    let out = fx.dir("out");
    fx.restore_ok(text(&first, "snapshot"), &out.join("old.img"));
    assert_same_file(&original, &out.join("old.img"));
    fx.restore_ok(sid, &out.join("new.img"));
    assert_same_file(&image, &out.join("new.img"));
}

#[test]
fn identical_chunks_inside_one_image_are_stored_once() {
    let fx = Fixture::new();
    let image = fx.path("twins.img");
    let a = random_bytes(4, CHUNK as usize);
    let b = random_bytes(5, CHUNK as usize);
    // Chunks: A, B, A, hole, A, and a short tail.
    write_image(
        &image,
        5 * CHUNK + 10,
        &[
            (0, &a),
            (CHUNK, &b),
            (2 * CHUNK, &a),
            (4 * CHUNK, &a),
            (5 * CHUNK, b"tail-bytes"),
        ],
    );
    let report = fx.backup(&image, &[]);
    // A is new once and reused twice; B and the tail are new; the hole is zero.
    assert_eq!(counts(&report), [6, 3, 2, 1], "{report:#}");
    assert_eq!(
        fx.chunk_ids(),
        BTreeSet::from([chunk_id(&a), chunk_id(&b), chunk_id(b"tail-bytes")])
    );
    let target = fx.dir("out").join("twins.img");
    fx.restore_ok(text(&report, "snapshot"), &target);
    assert_same_file(&image, &target);
}

#[test]
fn concurrent_backups_store_each_chunk_once() {
    let fx = Fixture::new();
    let image = random_image(&fx, "disk.img", 6);
    // Two paths to the same file, so the two manifests differ (see above).
    let other = fx.dir("other").join("disk.img");
    std::fs::hard_link(&image, &other).unwrap();
    let spawn = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("backup")
            .arg("--json")
            .arg("--repo")
            .arg(&fx.repo)
            .arg("--image")
            .arg(path)
            .env_remove("FERRY_REPO")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ferry")
    };
    let children = [spawn(&image), spawn(&other)];
    let reports: Vec<Value> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let new: u64 = reports.iter().map(|r| num(r, "chunks_new")).sum();
    let reused: u64 = reports.iter().map(|r| num(r, "chunks_reused")).sum();
    assert_eq!((new, reused), (17, 17), "{reports:#?}");
    assert_eq!(fx.chunk_ids().len(), 17);
    assert_eq!(fx.snapshot_ids().len(), 2);
    let verify = fx.verify(&["--read-data"]).success().json();
    assert_eq!(num(&verify, "snapshots_checked"), 2, "{verify:#}");
    // No temporary files of the racing puts are left in the repository.
    for id in fx.chunk_ids() {
        let dir = fx.chunk_path(&id);
        let names = dir_names(dir.parent().unwrap());
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
}
