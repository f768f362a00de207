//! Crash points: `ferry backup` and `ferry gc` killed with SIGKILL after each of their first 20
//! repository mutations (the `FERRY_TEST_KILL_AFTER_MUTATIONS` hook: after a chunk put, before
//! and after the manifest put, between lock and work, in the middle of gc's deletes). After every
//! kill the repository verifies clean with --read-data, and the next run succeeds.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Fixture, assert_same_file, ferry, num, overwrite, random_bytes, text, write_image};

const POINTS: u64 = 20;
/// Chunks the second backup changes: with the lock and manifest, more mutations than POINTS.
const CHANGED: u64 = 16;
const CHUNK: u64 = 64 << 10;

/// `ferry ARGS` killed after `n` mutations; returns whether it died by SIGKILL (else it must
/// have finished successfully: `n` was past its last mutation).
fn killed_after(n: u64, args: &[&str]) -> bool {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_TEST_KILL_AFTER_MUTATIONS", n.to_string())
        .env_remove("FERRY_REPO")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    match output.status.signal() {
        Some(9) => true,
        other => {
            assert!(
                output.status.success(),
                "point {n}: {args:?} neither died by SIGKILL nor succeeded ({other:?}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
            false
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn verify_clean(repo: &str) -> serde_json::Value {
    ferry(&["verify", "--repo", repo, "--read-data", "--json"])
        .success()
        .json()
}

/// A repository with one snapshot of `image`, and `image` then changed in CHANGED chunks.
fn baseline(fx: &Fixture) -> std::path::PathBuf {
    let image = fx.path("disk.img");
    write_image(
        &image,
        24 * CHUNK,
        &[(0, &random_bytes(1, 20 * CHUNK as usize))],
    );
    fx.backup(&image, &[]);
    overwrite(&image, 0, &random_bytes(2, (CHANGED * CHUNK) as usize));
    image
}

#[test]
fn sigkill_of_backup_at_20_points_never_damages_the_repository() {
    let fx = Fixture::new();
    let image = baseline(&fx);
    let image_arg = image.to_str().unwrap();
    let mut kills = 0;
    for n in 1..=POINTS {
        let repo = fx.path(&format!("repo-{n}"));
        copy_dir(&fx.repo, &repo);
        let repo = repo.to_str().unwrap();
        kills += u64::from(killed_after(
            n,
            &["backup", "--image", image_arg, "--repo", repo],
        ));
        let report = verify_clean(repo);
        let snapshots = num(&report, "snapshots_checked");
        assert!((1..=2).contains(&snapshots), "point {n}: {report:#}");
        // The next run succeeds and restores the image.
        let done = ferry(&["backup", "--image", image_arg, "--repo", repo, "--json"])
            .success()
            .json();
        verify_clean(repo);
        let target = fx.path(&format!("restored-{n}.img"));
        ferry(&[
            "restore",
            "--repo",
            repo,
            text(&done, "snapshot"),
            "--to",
            target.to_str().unwrap(),
        ])
        .success();
        assert_same_file(&image, &target);
    }
    // Lock put, CHANGED chunk puts, manifest put, lock delete: every point but the last kills.
    assert_eq!(kills, POINTS - 1);
}

#[test]
fn sigkill_of_gc_at_20_points_never_damages_the_repository() {
    let fx = Fixture::new();
    let image = baseline(&fx);
    let second = fx.backup(&image, &[]);
    let newest = text(&second, "snapshot").to_owned();
    // Forget the first snapshot: CHANGED chunks become garbage.
    let forgotten = fx
        .run("forget", &["--keep-last", "1", "--json"])
        .success()
        .json();
    assert_eq!(num(&forgotten, "removed"), 1);
    let mut kills = 0;
    for n in 1..=POINTS {
        let repo = fx.path(&format!("gc-{n}"));
        copy_dir(&fx.repo, &repo);
        let repo = repo.to_str().unwrap();
        kills += u64::from(killed_after(n, &["gc", "--repo", repo]));
        verify_clean(repo);
        // The dead gc's lock is stale (its pid is gone): the next gc runs and finishes.
        let swept = ferry(&["gc", "--repo", repo, "--json"]).success().json();
        let again = ferry(&["gc", "--repo", repo, "--json"]).success().json();
        assert_eq!(num(&again, "chunks_deleted"), 0, "point {n}: {swept:#}");
        assert_eq!(num(&again, "chunks_total"), 20, "point {n}");
        let target = fx.path(&format!("gc-restored-{n}.img"));
        ferry(&[
            "restore",
            "--repo",
            repo,
            &newest,
            "--to",
            target.to_str().unwrap(),
        ])
        .success();
        assert_same_file(&image, &target);
    }
    // Lock put, CHANGED deletes, lock delete: points 1 to CHANGED + 2 kill.
    assert_eq!(kills, CHANGED + 2);
}

/// A repository on a small filesystem that fills up during a backup: a clear error naming the
/// lack of space, nothing published, the repository verifies, and gc frees the chunks the
/// failed backup left so a smaller backup fits again.
#[test]
fn a_full_filesystem_fails_the_backup_cleanly() {
    let tmpfs = common::vm::Tmpfs::mount("3m");
    let repo = tmpfs.path().join("repo");
    let repo = repo.to_str().unwrap();
    ferry(&["init", "--repo", repo, "--chunk-size", "64K"]).success();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.img");
    write_image(&big, 8 << 20, &[(0, &random_bytes(5, 8 << 20))]);
    let run = ferry(&["backup", "--image", big.to_str().unwrap(), "--repo", repo]);
    run.error_line(&["no space left"]);
    let report = verify_clean(repo);
    assert_eq!(num(&report, "snapshots_checked"), 0, "{report:#}");
    let swept = ferry(&["gc", "--repo", repo, "--json"]).success().json();
    assert!(num(&swept, "chunks_deleted") > 0, "{swept:#}");

    let small = dir.path().join("small.img");
    write_image(&small, 1 << 20, &[(0, &random_bytes(6, 1 << 20))]);
    let done = ferry(&[
        "backup",
        "--image",
        small.to_str().unwrap(),
        "--repo",
        repo,
        "--json",
    ])
    .success()
    .json();
    verify_clean(repo);
    let target = dir.path().join("small.restored");
    ferry(&[
        "restore",
        "--repo",
        repo,
        text(&done, "snapshot"),
        "--to",
        target.to_str().unwrap(),
    ])
    .success();
    assert_same_file(&small, &target);
}
