//! `ferry bench`: every stage is measured and named, the JSON report is whole, and the
//! benchmark leaves nothing behind: not its sample image, not its objects, and (on NFS) not
//! its directories, in a temporary directory, a local repository or an NFS repository. Into a
//! repository it holds a shared lock, so gc never sweeps a running benchmark; what a
//! benchmark killed by SIGKILL leaves, the next gc removes.

mod common;
#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;

use std::ffi::OsStr;
use std::path::Path;

use common::{Run, ferry, ferry_interrupted, ferry_killed, ferry_with_env, num, text};
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

/// Names in a repository directory `dir`, sorted, without `locks` when it is empty (a
/// benchmark, like a backup, leaves the directory its lock was in).
fn repo_names(dir: &Path) -> Vec<String> {
    let mut names = names(dir);
    names.retain(|n| n != "locks" || !self::names(&dir.join(n)).is_empty());
    names
}

/// Paths of the files (objects and temp files) under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue; // removed meanwhile by the running benchmark
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                Ok(_) => files.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    files.sort();
    files
}

/// The benchmark prefixes (`ferry-bench-…` directories) in repository directory `repo`.
fn bench_dirs(repo: &Path) -> Vec<String> {
    names(repo)
        .into_iter()
        .filter(|n| n.starts_with("ferry-bench-"))
        .collect()
}

/// Objects (not temp files) a benchmark has stored under its prefix in `repo`.
fn bench_objects(repo: &Path) -> usize {
    bench_dirs(repo)
        .iter()
        .flat_map(|d| files_under(&repo.join(d)))
        .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'))
        .count()
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
    let before = repo_names(&repo);
    let report = bench(tmp.path(), &["--size", "16M", "--repo", repo_arg])
        .success()
        .json();
    assert_complete(&report);
    assert_eq!(repo_names(&repo), before);
    assert_eq!(names(tmp.path()), ["repo"]);
}

/// A directory that holds no Ferry repository is refused, naming `ferry init`, and nothing is
/// created there or in the temporary directory: there no gc could remove what a killed
/// benchmark leaves.
#[test]
fn bench_into_an_empty_directory_that_is_no_repository_is_refused_and_left_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let run = bench(tmp.path(), &["--size", "16M", "--repo", dir_arg]);
    run.error_line(&[dir_arg, "no Ferry repository", "ferry init"]);
    run.assert_only_error_document();
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    assert_eq!(names(tmp.path()), ["empty"]);
    // So init still takes it.
    ferry(&["init", "--repo", dir_arg]).success();
}

/// `bench --repo` killed by SIGKILL mid-run leaves its objects, temp files and lock; a dry-run
/// gc counts the objects and removes nothing, gc removes all of it, directories included.
#[test]
fn gc_removes_everything_a_benchmark_killed_by_sigkill_left() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let repo = tmp.path().join("repo");
    let repo_arg = repo.to_str().unwrap();
    ferry(&["init", "--repo", repo_arg]).success();
    let before = repo_names(&repo);
    let args = [
        "bench",
        "--size",
        "256M",
        "--chunk-size",
        "1M",
        "--json",
        "--repo",
        repo_arg,
    ];
    ferry_killed(&args, &[("TMPDIR", scratch.as_os_str())], || {
        bench_objects(&repo) >= 4
    });
    let left = bench_objects(&repo);
    assert_eq!(bench_dirs(&repo).len(), 1, "{:?}", names(&repo));
    assert!(left >= 4, "{left}");
    assert_eq!(
        names(&repo.join("locks")).len(),
        1,
        "the dead benchmark's lock"
    );

    let dry = ferry(&["gc", "--dry-run", "--json", "--repo", repo_arg])
        .success()
        .json();
    assert_eq!(num(&dry, "bench_objects_removed"), left as u64, "{dry:#}");
    assert!(num(&dry, "bench_bytes") > 0, "{dry:#}");
    assert_eq!(dry["bench_prefixes"], serde_json::json!(bench_dirs(&repo)));
    assert_eq!(bench_objects(&repo), left, "a dry run removed something");

    let gc = ferry(&["gc", "--json", "--repo", repo_arg])
        .success()
        .json();
    assert_eq!(num(&gc, "bench_objects_removed"), left as u64, "{gc:#}");
    assert!(bench_dirs(&repo).is_empty(), "{:?}", names(&repo));
    assert_eq!(
        repo_names(&repo),
        before,
        "gc left something of the benchmark"
    );
    assert_eq!(
        files_under(&repo),
        [repo.join("config")],
        "only the config is left"
    );
    ferry(&["verify", "--repo", repo_arg]).success();
    let again = ferry(&["gc", "--json", "--repo", repo_arg])
        .success()
        .json();
    assert_eq!(num(&again, "bench_objects_removed"), 0, "{again:#}");
}

/// While a benchmark runs in a repository it holds a shared lock: gc is refused, naming it,
/// and deletes nothing; the benchmark, stopped, removes its objects itself.
#[test]
fn gc_is_refused_while_a_benchmark_runs_in_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let repo = tmp.path().join("repo");
    let repo_arg = repo.to_str().unwrap();
    ferry(&["init", "--repo", repo_arg]).success();
    let args = [
        "bench",
        "--size",
        "256M",
        "--chunk-size",
        "1M",
        "--json",
        "--repo",
        repo_arg,
    ];
    let refused = std::cell::RefCell::new(None);
    let run = ferry_interrupted(&args, &[("TMPDIR", scratch.as_os_str())], "INT", || {
        if bench_objects(&repo) == 0 {
            return false;
        }
        let gc = ferry(&["gc", "--json", "--repo", repo_arg]);
        *refused.borrow_mut() = Some((gc, bench_objects(&repo)));
        true
    });
    run.interrupted_by("SIGINT", 130);
    let (gc, objects_after_gc) = refused.into_inner().unwrap();
    gc.error_line(&["bench (shared lock"]);
    gc.assert_only_error_document();
    assert!(objects_after_gc > 0, "the benchmark's objects vanished");
    assert!(bench_dirs(&repo).is_empty(), "{:?}", names(&repo));
    let gc = ferry(&["gc", "--json", "--repo", repo_arg])
        .success()
        .json();
    assert_eq!(num(&gc, "bench_objects_removed"), 0, "{gc:#}");
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
    let before = repo_names(&local);
    let report = bench(tmp.path(), &["--size", "16M", "--repo", &repo])
        .success()
        .json();
    assert_complete(&report);
    assert_eq!(
        repo_names(&local),
        before,
        "the benchmark left something in the repository"
    );
    ferry(&["verify", "--repo", &repo]).success();
}

/// A benchmark killed by SIGKILL while generating its sample leaves its scratch directory
/// `ferry-bench-<pid>-<hex>` (sample image included) in the temporary directory; the next
/// benchmark removes it, and leaves alone the directory of a process that runs and names of
/// another form.
#[test]
fn the_next_bench_removes_the_scratch_directory_a_killed_bench_left() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let sample_exists = || {
        names(&scratch)
            .iter()
            .any(|d| scratch.join(d).join("sample.img").exists())
    };
    ferry_killed(
        &["bench", "--size", "1G", "--json"],
        &[("TMPDIR", scratch.as_os_str())],
        sample_exists,
    );
    let left = names(&scratch);
    assert_eq!(left.len(), 1, "{left:?}");
    let parts: Vec<&str> = left[0].splitn(4, '-').collect();
    assert!(
        parts.len() == 4
            && parts[..2] == ["ferry", "bench"]
            && parts[2].parse::<u32>().is_ok()
            && parts[3].len() == 8,
        "not ferry-bench-<pid>-<hex>: {left:?}"
    );
    assert!(sample_exists(), "the killed benchmark's sample is gone");

    // Not a benchmark's leftover: a running process's directory, other name forms.
    let keep = [
        format!("ferry-bench-{}-0123abcd", std::process::id()),
        "ferry-bench-0123abcd".to_owned(),
        "ferry-bench-notapid-0123abcd".to_owned(),
    ];
    for name in &keep {
        std::fs::create_dir(scratch.join(name)).unwrap();
        std::fs::write(scratch.join(name).join("sample.img"), b"keep").unwrap();
    }
    let report = bench(&scratch, &["--size", "16M"]).success().json();
    assert_complete(&report);
    let mut expected = keep.to_vec();
    expected.sort();
    assert_eq!(names(&scratch), expected, "the leftover was not removed");
}
