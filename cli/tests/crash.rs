//! Crash points: `ferry backup` and `ferry gc` killed with SIGKILL after each of their first 20
//! repository mutations (the `FERRY_TEST_KILL_AFTER_MUTATIONS` hook: after a chunk put, before
//! and after the manifest put, between lock and work, in the middle of gc's deletes). After every
//! kill the repository verifies clean with --read-data, the next run succeeds, and a gc leaves
//! no temp file of an interrupted put. On a local directory, an NFS export and an S3 bucket.

mod common;
#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;
#[path = "../../sinks/tests/support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    Run, assert_same_file, ferry, ferry_with_env, num, overwrite, random_bytes, text, write_image,
};
use nfs_server::Scratch;

const POINTS: u64 = 20;
/// Chunks the second backup changes: with the lock and manifest, more mutations than POINTS.
const CHANGED: u64 = 16;
const CHUNK: u64 = 64 << 10;

/// `ferry ARGS` killed after `n` mutations; returns whether it died by SIGKILL (else it must
/// have finished successfully: `n` was past its last mutation).
fn killed_after(place: &Place, n: u64, args: &[&str]) -> bool {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .envs(place.env.iter().map(|(k, v)| (k, v)))
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

fn verify_clean(place: &Place, repo: &str) -> serde_json::Value {
    place
        .ferry(&["verify", "--repo", repo, "--read-data", "--json"])
        .success()
        .json()
}

/// Where the test's repositories live: a local directory, served as `url_root` (the same path,
/// or an NFS export of it), so a repository can be copied on disk and used through the URL.
struct Place {
    local_root: PathBuf,
    url_root: String,
    /// Environment the backend needs (S3 credentials).
    env: Vec<(&'static str, String)>,
    /// Whether Ferry's puts use temp files under `local_root` (local directory, NFS), which a
    /// kill can leave behind for gc to remove. (s3s-fs keeps its own temp files.)
    puts_use_temp_files: bool,
}

impl Place {
    fn local(dir: &Path) -> Place {
        let root = dir.join("repos");
        std::fs::create_dir(&root).unwrap();
        Place {
            url_root: root.to_str().unwrap().to_owned(),
            local_root: root,
            env: Vec::new(),
            puts_use_temp_files: true,
        }
    }

    fn nfs(scratch: &Scratch) -> Place {
        Place {
            local_root: scratch.local.clone(),
            url_root: scratch.url.clone(),
            env: Vec::new(),
            puts_use_temp_files: true,
        }
    }

    /// A bucket of the test S3 server (s3s-fs keeps each object as a file under its root).
    fn s3(bucket: &str) -> Place {
        let server = s3_server::server();
        Place {
            local_root: server.root.join(server.bucket(bucket)),
            url_root: format!("s3://{bucket}"),
            env: server.env(),
            puts_use_temp_files: false,
        }
    }

    fn ferry(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &OsStr)> = self.env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
        ferry_with_env(args, &env)
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.url_root)
    }

    /// Restores `snapshot` of `repo` to `target` and checks it equals `image`.
    fn assert_restores(&self, repo: &str, snapshot: &str, image: &Path, target: &Path) {
        let target_arg = target.to_str().unwrap();
        self.ferry(&["restore", "--repo", repo, snapshot, "--to", target_arg])
            .success();
        assert_same_file(image, target);
    }

    /// After a gc, no temp file of an interrupted put is left in repository `name`.
    fn assert_no_leftovers_after_gc(&self, name: &str) {
        self.ferry(&["gc", "--repo", &self.url(name)]).success();
        if !self.puts_use_temp_files {
            return;
        }
        let mut pending = vec![self.local_root.join(name)];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                assert!(
                    !entry.file_name().to_string_lossy().starts_with(".tmp-"),
                    "gc left {}",
                    entry.path().display()
                );
                if entry.file_type().unwrap().is_dir() {
                    pending.push(entry.path());
                }
            }
        }
    }

    /// A copy of repository `from` named `to`; its URL.
    fn copy(&self, from: &str, to: &str) -> String {
        copy_dir(&self.local_root.join(from), &self.local_root.join(to));
        self.url(to)
    }
}

/// Repository `base` with one snapshot of `image`; `image` is then changed in CHANGED chunks.
fn baseline(place: &Place, image: &Path) {
    let base = place.url("base");
    place
        .ferry(&["init", "--repo", &base, "--chunk-size", "64K"])
        .success();
    write_image(
        image,
        24 * CHUNK,
        &[(0, &random_bytes(1, 20 * CHUNK as usize))],
    );
    place
        .ferry(&[
            "backup",
            "--image",
            image.to_str().unwrap(),
            "--repo",
            &base,
        ])
        .success();
    overwrite(image, 0, &random_bytes(2, (CHANGED * CHUNK) as usize));
}

fn backup_crash_points(place: &Place, dir: &Path) {
    let image = dir.join("disk.img");
    baseline(place, &image);
    let image_arg = image.to_str().unwrap();
    let mut kills = 0;
    for n in 1..=POINTS {
        let repo = place.copy("base", &format!("repo-{n}"));
        let repo = repo.as_str();
        kills += u64::from(killed_after(
            place,
            n,
            &["backup", "--image", image_arg, "--repo", repo],
        ));
        let report = verify_clean(place, repo);
        let snapshots = num(&report, "snapshots_checked");
        assert!((1..=2).contains(&snapshots), "point {n}: {report:#}");
        // The next run succeeds and restores the image.
        let done = place
            .ferry(&["backup", "--image", image_arg, "--repo", repo, "--json"])
            .success()
            .json();
        verify_clean(place, repo);
        let target = dir.join(format!("restored-{n}.img"));
        place.assert_restores(repo, text(&done, "snapshot"), &image, &target);
        place.assert_no_leftovers_after_gc(&format!("repo-{n}"));
    }
    // Lock put, CHANGED chunk puts, manifest put, lock delete: every point but the last kills.
    assert_eq!(kills, POINTS - 1);
}

fn gc_crash_points(place: &Place, dir: &Path) {
    let image = dir.join("disk.img");
    baseline(place, &image);
    let base = place.url("base");
    let second = place
        .ferry(&[
            "backup",
            "--image",
            image.to_str().unwrap(),
            "--repo",
            &base,
            "--json",
        ])
        .success()
        .json();
    let newest = text(&second, "snapshot").to_owned();
    // Forget the first snapshot: CHANGED chunks become garbage.
    let forgotten = place
        .ferry(&["forget", "--repo", &base, "--keep-last", "1", "--json"])
        .success()
        .json();
    assert_eq!(num(&forgotten, "removed"), 1);
    let mut kills = 0;
    for n in 1..=POINTS {
        let repo = place.copy("base", &format!("gc-{n}"));
        let repo = repo.as_str();
        kills += u64::from(killed_after(place, n, &["gc", "--repo", repo]));
        verify_clean(place, repo);
        // The dead gc's lock is stale (its pid is gone): the next gc runs and finishes.
        let swept = place
            .ferry(&["gc", "--repo", repo, "--json"])
            .success()
            .json();
        let again = place
            .ferry(&["gc", "--repo", repo, "--json"])
            .success()
            .json();
        assert_eq!(num(&again, "chunks_deleted"), 0, "point {n}: {swept:#}");
        assert_eq!(num(&again, "chunks_total"), 20, "point {n}");
        let target = dir.join(format!("gc-restored-{n}.img"));
        place.assert_restores(repo, &newest, &image, &target);
    }
    // Lock put, CHANGED deletes, lock delete: points 1 to CHANGED + 2 kill.
    assert_eq!(kills, CHANGED + 2);
}

#[test]
fn sigkill_of_backup_at_20_points_never_damages_a_local_repository() {
    let dir = tempfile::tempdir().unwrap();
    backup_crash_points(&Place::local(dir.path()), dir.path());
}

#[test]
fn sigkill_of_gc_at_20_points_never_damages_a_local_repository() {
    let dir = tempfile::tempdir().unwrap();
    gc_crash_points(&Place::local(dir.path()), dir.path());
}

#[test]
fn sigkill_of_backup_at_20_points_never_damages_an_nfs_repository() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = Scratch::new("crash-backup");
    backup_crash_points(&Place::nfs(&scratch), dir.path());
}

#[test]
fn sigkill_of_backup_at_20_points_never_damages_an_s3_repository() {
    let dir = tempfile::tempdir().unwrap();
    backup_crash_points(&Place::s3("crash-backup"), dir.path());
}

#[test]
fn sigkill_of_gc_at_20_points_never_damages_an_s3_repository() {
    let dir = tempfile::tempdir().unwrap();
    gc_crash_points(&Place::s3("crash-gc"), dir.path());
}

#[test]
fn sigkill_of_gc_at_20_points_never_damages_an_nfs_repository() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = Scratch::new("crash-gc");
    gc_crash_points(&Place::nfs(&scratch), dir.path());
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
    let local = Place::local(dir.path());
    let report = verify_clean(&local, repo);
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
    verify_clean(&local, repo);
    let target = dir.path().join("small.restored");
    local.assert_restores(repo, text(&done, "snapshot"), &small, &target);
}
