//! End to end against a real NFS server (nfs-ganesha on 127.0.0.1): every command on an
//! `nfs://` repository, with no kernel mount.

mod common;
#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;

use common::{
    assert_same_file, ferry, mode, num, overwrite, random_bytes, text, text_bytes, write_image,
};
use nfs_server::Scratch;

#[test]
fn backup_list_verify_restore_and_dedup_on_nfs() {
    let scratch = Scratch::new("e2e");
    let repo = format!("{}/vm-backups", scratch.url);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let data = [random_bytes(1, 3 << 20), text_bytes(2, 2 << 20)].concat();
    write_image(&image, 24 << 20, &[(0, &data), (20 << 20, b"tail")]);
    let image_arg = image.to_str().unwrap();

    ferry(&["init", "--repo", &repo, "--chunk-size", "1M"]).success();
    let first = ferry(&["backup", "--image", image_arg, "--repo", &repo, "--json"])
        .success()
        .json();
    assert!(num(&first, "chunks_new") >= 5, "{first}");
    let second = ferry(&["backup", "--image", image_arg, "--repo", &repo, "--json"])
        .success()
        .json();
    assert_eq!(
        num(&second, "chunks_new"),
        0,
        "an unchanged image writes no chunk"
    );

    // One changed chunk-sized region: exactly one new chunk.
    overwrite(&image, 1 << 20, &random_bytes(3, 1 << 20));
    let third = ferry(&["backup", "--image", image_arg, "--repo", &repo, "--json"])
        .success()
        .json();
    assert_eq!(num(&third, "chunks_new"), 1, "{third}");

    let listed = ferry(&["list", "--repo", &repo, "--json"]).success().json();
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 3);
    ferry(&["verify", "--repo", &repo, "--read-data"]).success();

    let target = dir.path().join("restored.img");
    let sid = text(&third, "snapshot").to_owned();
    ferry(&[
        "restore",
        "--repo",
        &repo,
        &sid,
        "--to",
        target.to_str().unwrap(),
    ])
    .success();
    assert_same_file(&image, &target);

    // The objects really are on the export, private to their owner.
    let local = scratch.local.join("vm-backups");
    assert_eq!(mode(&local) & 0o777, 0o700);
    assert_eq!(mode(&local.join("config")) & 0o777, 0o600);
    assert!(local.join("chunks").is_dir());
}

#[test]
fn nfs_errors_name_the_problem() {
    let scratch = Scratch::new("errors");
    // A repository directory that does not exist yet: every command but init refuses it.
    ferry(&["list", "--repo", &scratch.url]).error_line(&["does not exist"]);
    let run = ferry(&["list", "--repo", "nfs://127.0.0.1/no/such/export"]);
    run.error_line(&["no export of 127.0.0.1", "/no/such/export"]);
    ferry(&["init", "--repo", "nfs://127.0.0.1:0/x"]).error_line(&["not a port number"]);
    ferry(&["init", "--repo", &scratch.url]).success();
    ferry(&["init", "--repo", &scratch.url]).error_line(&["already holds a Ferry repository"]);
}
