//! `ferry bench`: every stage is measured and named, the JSON report is whole, and the
//! benchmark leaves nothing behind: not its sample image, not its objects, and (on NFS) not
//! its directories, in a temporary directory, a local repository or an NFS repository.

mod common;
#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;

use std::ffi::OsStr;
use std::path::Path;

use common::{Run, ferry, ferry_with_env, num, text};
use nfs_server::Scratch;
use serde_json::Value;

/// `ferry bench --chunk-size 1M --json ARGS` with its temporary directory in `tmp`.
fn bench(tmp: &Path, args: &[&str]) -> Run {
    let mut all = vec!["bench", "--chunk-size", "1M", "--json"];
    all.extend_from_slice(args);
    ferry_with_env(&all, &[("TMPDIR", OsStr::new(tmp))])
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn assert_complete(report: &Value) {
    assert_eq!(num(report, "virtual_size"), 16 << 20, "{report:#}");
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stages in {report:#}"))
        .iter()
        .map(|s| text(s, "stage"))
        .collect();
    assert_eq!(
        stages,
        ["read", "hash", "compress", "sink_write"],
        "{report:#}"
    );
    for stage in report["stages"].as_array().unwrap().iter().chain([
        &report["pipeline"],
        &report["sink_put_stored"],
        &report["pipeline_stored"],
    ]) {
        let rate = stage["mib_per_s"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "no rate for {stage:#}");
        assert!(num(stage, "bytes") > 0, "{stage:#}");
    }
    assert!(stages.contains(&text(report, "bottleneck")), "{report:#}");
    assert!(report["pipeline_vs_sink_write"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_on_a_generated_image_reports_every_stage_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let report = bench(tmp.path(), &["--size", "16M"]).success().json();
    assert_complete(&report);
    assert!(
        names(tmp.path()).is_empty(),
        "left in TMPDIR: {:?}",
        names(tmp.path())
    );
}

#[test]
fn bench_of_an_image_without_data_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("zeros.img");
    common::write_image(&image, 8 << 20, &[(1 << 20, &[0u8; 4096])]);
    let image_arg = image.to_str().unwrap();
    bench(tmp.path(), &["--image", image_arg]).error_line(&[image_arg, "holds no data"]);
    assert_eq!(names(tmp.path()), ["zeros.img"]);
}

#[test]
fn bench_into_a_local_repository_leaves_it_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let repo_arg = repo.to_str().unwrap();
    ferry(&["init", "--repo", repo_arg]).success();
    let before = names(&repo);
    let report = bench(tmp.path(), &["--size", "16M", "--repo", repo_arg])
        .success()
        .json();
    assert_complete(&report);
    assert_eq!(names(&repo), before);
    assert_eq!(names(tmp.path()), ["repo"]);
}

#[test]
fn bench_of_a_too_small_sample_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    bench(tmp.path(), &["--size", "1M"]).error_line(&["--size", "at least 4M"]);
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn bench_into_a_missing_local_directory_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-repo");
    let missing_arg = missing.to_str().unwrap();
    bench(tmp.path(), &["--size", "16M", "--repo", missing_arg])
        .error_line(&[missing_arg, "not a directory"]);
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn bench_into_an_nfs_repository_removes_its_objects_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = Scratch::new("bench");
    let repo = format!("{}/repo", scratch.url);
    ferry(&["init", "--repo", &repo]).success();
    let local = scratch.local.join("repo");
    let before = names(&local);
    let report = bench(tmp.path(), &["--size", "16M", "--repo", &repo])
        .success()
        .json();
    assert_complete(&report);
    assert_eq!(
        names(&local),
        before,
        "the benchmark left something in the repository"
    );
    ferry(&["verify", "--repo", &repo]).success();
}
