//! `ferry forget` and `ferry gc` on local repositories: named snapshots, policies per name, dry
//! runs, errors, locks. (The S3 and NFS end-to-end tests run both through
//! `common::exercise_repository` too.)

mod common;

use common::{Fixture, exercise_repository, ferry, num, random_bytes, text, write_image};

#[test]
fn repository_life_cycle_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    exercise_repository(repo.to_str().unwrap(), dir.path(), |args| ferry(args));
}

/// Two images (two names), three backups each.
fn two_names(fx: &Fixture) -> (Vec<String>, Vec<String>) {
    let mut ids = (Vec::new(), Vec::new());
    for (seed, list) in [(1, &mut ids.0), (2, &mut ids.1)] {
        let image = fx.path(&format!("img{seed}.img"));
        for round in 0..3u64 {
            write_image(
                &image,
                1 << 20,
                &[(0, &random_bytes(seed * 10 + round, 4096))],
            );
            let report = fx.backup(&image, &[]);
            list.push(text(&report, "snapshot").to_owned());
        }
    }
    ids
}

fn snapshot_ids(fx: &Fixture) -> Vec<String> {
    let mut ids = fx.snapshot_ids();
    ids.sort();
    ids
}

#[test]
fn keep_last_applies_per_name_and_domain_filter_narrows_it() {
    let fx = Fixture::new();
    let (a, b) = two_names(&fx);
    // Only img1's snapshots are considered: its oldest two go, img2 keeps all three.
    let report = fx
        .run(
            "forget",
            &["--keep-last", "1", "--domain", "img1.img", "--json"],
        )
        .success()
        .json();
    assert_eq!(num(&report, "removed"), 2);
    assert_eq!(num(&report, "kept"), 1, "of img1's three");
    assert_eq!(
        num(&report, "remaining"),
        4,
        "img1's newest and img2's three"
    );
    let mut expected = vec![a[2].clone(), b[0].clone(), b[1].clone(), b[2].clone()];
    expected.sort();
    assert_eq!(snapshot_ids(&fx), expected);

    // Without the filter every name keeps its newest.
    let report = fx
        .run("forget", &["--keep-last", "1", "--json"])
        .success()
        .json();
    assert_eq!(num(&report, "removed"), 2);
    assert_eq!(num(&report, "kept"), 2);
    let kept: Vec<_> = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["keep"] == true)
        .map(|r| (text(r, "snapshot").to_owned(), r["reasons"].clone()))
        .collect();
    assert_eq!(kept.len(), 2);
    assert!(
        kept.iter()
            .all(|(_, why)| why == &serde_json::json!(["last"]))
    );
    let mut expected = vec![a[2].clone(), b[2].clone()];
    expected.sort();
    assert_eq!(snapshot_ids(&fx), expected);
    fx.verify(&["--read-data"]).success();
}

#[test]
fn named_snapshots_are_removed_and_nothing_else() {
    let fx = Fixture::new();
    let (a, b) = two_names(&fx);
    let chunks_before = fx.chunk_ids();
    fx.run("forget", &[&a[0][..8], &b[1]]).success();
    let mut expected = vec![a[1].clone(), a[2].clone(), b[0].clone(), b[2].clone()];
    expected.sort();
    assert_eq!(snapshot_ids(&fx), expected);
    assert_eq!(fx.chunk_ids(), chunks_before, "forget never deletes chunks");
    fx.verify(&["--read-data"]).success();
}

#[test]
fn dry_run_removes_nothing() {
    let fx = Fixture::new();
    two_names(&fx);
    let before = snapshot_ids(&fx);
    let report = fx
        .run("forget", &["--keep-last", "1", "--dry-run", "--json"])
        .success()
        .json();
    assert_eq!(num(&report, "removed"), 4);
    assert_eq!(report["dry_run"], true);
    assert_eq!(snapshot_ids(&fx), before);
}

#[test]
fn forget_refuses_unclear_requests_and_keeps_everything() {
    let fx = Fixture::new();
    let (a, _) = two_names(&fx);
    let before = snapshot_ids(&fx);
    fx.run("forget", &[] as &[&str])
        .error_line(&["nothing to forget"]);
    fx.run("forget", &["--keep-last", "0"])
        .error_line(&["nothing to forget"]);
    fx.run("forget", &[a[0].as_str(), "--keep-last", "1"])
        .error_line(&["not both"]);
    fx.run("forget", &["0000000000000000"])
        .error_line(&["no snapshot matches", "0000000000000000"]);
    fx.run("forget", &["--keep-last", "1", "--domain", "nosuch"])
        .error_line(&["no snapshot is named nosuch"]);
    assert_eq!(snapshot_ids(&fx), before);
}

#[test]
fn gc_is_refused_while_another_host_backs_up() {
    let fx = Fixture::new();
    let (a, _) = two_names(&fx);
    fx.run("forget", &[a[0].as_str()]).success();
    let chunks = fx.chunk_ids();
    // A backup on another hypervisor holds a shared lock.
    let locks = fx.repo.join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = locks.join("0123456789abcdef0123456789abcdef");
    std::fs::write(
        &lock,
        r#"{"kind":"shared","operation":"backup","hostname":"hv-2","pid":4242,"created_unix":0}"#,
    )
    .unwrap();
    fx.run("gc", &[] as &[&str])
        .error_line(&["locked by backup", "hv-2", "4242"]);
    assert_eq!(fx.chunk_ids(), chunks, "a refused gc deleted chunks");
    // A dry run takes no lock: it reports, and leaves the backup's lock and the chunks alone.
    let dry = fx.run("gc", &["--dry-run", "--json"]).success().json();
    assert_eq!(num(&dry, "chunks_deleted"), 1, "{dry:#}");
    assert!(lock.is_file(), "a dry run removed a lock");
    assert_eq!(fx.chunk_ids(), chunks, "a dry run deleted chunks");
    std::fs::remove_file(&lock).unwrap();
    let report = fx.run("gc", &["--json"]).success().json();
    assert_eq!(num(&report, "chunks_deleted"), 1);
    fx.verify(&["--read-data"]).success();
}
