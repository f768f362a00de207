//! End to end against a real S3-compatible server: every command on an `s3://` repository.

mod common;
#[path = "../../sinks/tests/support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;
#[path = "../../sinks/tests/support/tcp_proxy.rs"]
#[allow(dead_code)]
mod tcp_proxy;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Run, exercise_bit_rot, exercise_repository, ferry_with_env};
use s3_server::{S3Server, SECRET_KEY, server};
use tcp_proxy::TcpProxy;

/// Runs ferry with the server's AWS variables.
fn s3_ferry(s3: &S3Server, args: &[&str]) -> Run {
    let env = s3.env();
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
    ferry_with_env(args, &env)
}

#[test]
fn backup_list_verify_restore_and_dedup_on_s3() {
    let s3 = server();
    let bucket = s3.bucket("e2e");
    let repo = format!("s3://{bucket}/team/vm-backups");
    let dir = tempfile::tempdir().unwrap();
    exercise_repository(&repo, dir.path(), |args| s3_ferry(s3, args));

    // The objects really are in the bucket, under the prefix.
    let chunks = s3.root.join(&bucket).join("team/vm-backups/chunks");
    assert!(chunks.is_dir(), "no chunks under {}", chunks.display());
}

#[test]
fn wrong_credentials_and_missing_bucket_are_clear_errors() {
    let s3 = server();
    let bucket = s3.bucket("errs");
    let mut env = s3.env();
    for (k, v) in env.iter_mut() {
        if *k == "AWS_SECRET_ACCESS_KEY" {
            *v = "wrong-secret-never-printed".into();
        }
    }
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
    let repo = format!("s3://{bucket}/x");
    let run = ferry_with_env(&["init", "--repo", &repo], &env);
    let line = run.error_line(&["access denied"]);
    assert!(
        !line.contains("wrong-secret") && !run.stderr.contains(SECRET_KEY),
        "{run}"
    );

    let run = s3_ferry(s3, &["list", "--repo", "s3://no-such-bucket/x"]);
    run.error_line(&["no-such-bucket", "does not exist"]);

    let run = ferry_with_env(
        &["list", "--repo", &repo],
        &[("AWS_ACCESS_KEY_ID", OsStr::new(""))],
    );
    run.error_line(&["AWS_ACCESS_KEY_ID"]);
}

#[test]
fn an_s3_repository_holds_no_local_state() {
    let s3 = server();
    let bucket = s3.bucket("nolocal");
    let repo = format!("s3://{bucket}");
    s3_ferry(s3, &["init", "--repo", &repo]).success();
    let again = s3_ferry(s3, &["init", "--repo", &repo]);
    again.error_line(&["already holds a Ferry repository"]);
    assert!(Path::new(&s3.root.join(&bucket).join("config")).exists());
}

#[test]
fn bit_rot_on_s3_is_named_refused_and_healed() {
    let s3 = server();
    let bucket = s3.bucket("bitrot");
    let dir = tempfile::tempdir().unwrap();
    let local = s3.root.join(&bucket).join("repo");
    exercise_bit_rot(&format!("s3://{bucket}/repo"), &local, dir.path(), |args| {
        s3_ferry(s3, args)
    });
}

/// Settings that cannot work are refused by name with exit 1, before any request: a malformed
/// endpoint used to panic inside object_store (exit 101), a plain-HTTP one without
/// AWS_ALLOW_HTTP said only "builder error".
#[test]
fn unusable_settings_are_named() {
    let s3 = server();
    let bucket = s3.bucket("settings");
    let repo = format!("s3://{bucket}/x");
    let with = |name: &'static str, value: &str| {
        let mut env = s3.env();
        env.retain(|(k, _)| *k != name);
        env.push((name, value.to_owned()));
        let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
        ferry_with_env(&["list", "--repo", &repo], &env)
    };
    with("AWS_ENDPOINT_URL", "127.0.0.1:9000").error_line(&["S3 endpoint", "not a valid URL"]);
    with("AWS_ENDPOINT_URL", "http://[::1").error_line(&["S3 endpoint", "not a valid URL"]);
    with("AWS_ALLOW_HTTP", "").error_line(&["AWS_ALLOW_HTTP=true", "--s3-allow-http"]);
    let run = with("AWS_ENDPOINT_URL", "http://key:pass-in-url@127.0.0.1:9000");
    let line = run.error_line(&["user name or password"]);
    assert!(!run.stderr.contains("pass-in-url"), "{line}");
    with("FERRY_RETRY_TIMEOUT", "2m")
        .error_line(&["FERRY_RETRY_TIMEOUT", "whole number of seconds"]);
}

/// SIGINT while the S3 server is away (connections refused: ferry waits between retries) or
/// silent (connections accepted, no reply: ferry awaits a reply): the stop ends the waiting at
/// once (exit 130), instead of after the 120 s retry deadline or request timeout.
#[test]
fn an_interrupt_during_an_outage_ends_the_retries() {
    let s3 = server();
    let bucket = s3.bucket("outage-interrupt");
    let repo = format!("s3://{bucket}/r");
    s3_ferry(s3, &["init", "--repo", &repo]).success();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();

    let proxy = TcpProxy::start(s3.address());
    let mut env = s3.env();
    for (k, v) in env.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{}", proxy.port);
        }
    }
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
    let args = [
        "backup",
        "--repo",
        &repo,
        "--image",
        image.to_str().unwrap(),
    ];

    proxy.go_down();
    let run = common::ferry_interrupted(&args, &env, "INT", || proxy.refused() >= 2);
    let line = run.interrupted_by("SIGINT", 130);
    assert!(line.contains("stopping"), "{run}");
    assert!(run.stderr.contains("retrying for up to 120 s"), "{run}");

    proxy.go_silent();
    let run = common::ferry_interrupted(&args, &env, "INT", || proxy.held() >= 1);
    let line = run.interrupted_by("SIGINT", 130);
    assert!(line.contains("stopping"), "{run}");
}

/// Every setting can be a flag instead of its AWS variable, and a flag wins over the variable;
/// the secret key comes from a file, whose contents never show.
#[test]
fn settings_can_be_given_as_flags() {
    let s3 = server();
    let bucket = s3.bucket("flags");
    let repo = format!("s3://{bucket}/by-flags");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET_KEY}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![3u8; 1 << 20]).unwrap();
    // No usable variable: an endpoint that answers nothing, nothing else.
    let env: Vec<(&str, &OsStr)> = vec![
        ("AWS_ENDPOINT_URL", OsStr::new("http://127.0.0.1:9")),
        ("AWS_ACCESS_KEY_ID", OsStr::new("")),
        ("AWS_SECRET_ACCESS_KEY", OsStr::new("")),
        ("AWS_ALLOW_HTTP", OsStr::new("")),
        ("FERRY_RETRY_TIMEOUT", OsStr::new("0")),
    ];
    let flags = [
        "--s3-endpoint",
        &s3.endpoint,
        "--s3-region",
        "us-east-1",
        "--s3-access-key-id",
        s3_server::ACCESS_KEY,
        "--s3-secret-access-key-file",
        secret_file.to_str().unwrap(),
        "--s3-allow-http",
    ];
    let run = |args: &[&str]| {
        let all: Vec<&str> = args.iter().chain(flags.iter()).copied().collect();
        ferry_with_env(&all, &env)
    };
    run(&["init", "--repo", &repo]).success();
    let backup = run(&[
        "backup",
        "-vv",
        "--repo",
        &repo,
        "--image",
        image.to_str().unwrap(),
    ]);
    assert!(!backup.stderr.contains(SECRET_KEY), "{backup}");
    backup.success();
    let listed = run(&["list", "--repo", &repo]).success();
    assert!(listed.stdout.contains("disk.img"), "{listed}");

    // Without the secret file: the error names both ways to give the key.
    let without: Vec<&str> = ["list", "--repo", &repo]
        .into_iter()
        .chain(flags[..6].iter().copied())
        .chain(["--s3-allow-http"])
        .collect();
    ferry_with_env(&without, &env)
        .error_line(&["AWS_SECRET_ACCESS_KEY", "--s3-secret-access-key-file"]);
    // An empty key file is refused by name.
    std::fs::write(&secret_file, "\n").unwrap();
    let run_empty = run(&["list", "--repo", &repo]);
    run_empty.error_line(&["--s3-secret-access-key-file", "holds no key"]);
}
