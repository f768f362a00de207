//! End to end against a real NFS server (nfs-ganesha on 127.0.0.1): every command on an
//! `nfs://` repository, with no kernel mount.

mod common;
#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;

use common::{exercise_bit_rot, exercise_repository, ferry, ferry_with_env, mode};
use nfs_server::{Scratch, closing_server};

#[test]
fn backup_list_verify_restore_and_dedup_on_nfs() {
    let scratch = Scratch::new("e2e");
    let repo = format!("{}/vm-backups", scratch.url);
    let dir = tempfile::tempdir().unwrap();
    exercise_repository(&repo, dir.path(), |args| ferry(args));

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

#[test]
fn bit_rot_on_nfs_is_named_refused_and_healed() {
    let scratch = Scratch::new("bit-rot");
    let dir = tempfile::tempdir().unwrap();
    exercise_bit_rot(&scratch.url, &scratch.local, dir.path(), |args| ferry(args));
}

/// `list` and `verify` against an NFS port whose server reads each request and closes the
/// connection: a clear error line and exit 1. Neither may die silently of SIGPIPE on the
/// socket (they restore the default SIGPIPE for their stdout, only once their work is done),
/// nor hang.
#[test]
fn list_and_verify_against_a_closing_server_fail_clearly() {
    let port = closing_server();
    let scratch = Scratch::new("closing");
    let url = scratch
        .url
        .replacen("nfs://127.0.0.1/", &format!("nfs://127.0.0.1:{port}/"), 1);
    let short_wait = [("FERRY_RETRY_TIMEOUT", std::ffi::OsStr::new("1"))];
    for command in ["list", "verify"] {
        ferry_with_env(&[command, "--repo", &url], &short_wait)
            .error_line(&["closed the connection", "gave up after"]);
    }
}
