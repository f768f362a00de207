//! `ferry init` creates a repository only in an empty location, on every backend: a location
//! that holds other objects (files, another repository under a prefix) is refused, naming how
//! many objects it holds and one of them, and is left as it was; one that holds a repository
//! is refused as such.

mod common;
#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;
#[path = "../../sinks/tests/support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

use std::ffi::OsStr;
use std::path::Path;

use common::{Run, dir_names, ferry, ferry_with_env};
use s3_server::{S3Server, server};

/// Runs ferry with the S3 server's AWS variables.
fn s3_ferry(s3: &S3Server, args: &[&str]) -> Run {
    let env = s3.env();
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
    ferry_with_env(args, &env)
}

/// Every file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn init_at_an_s3_bucket_root_holding_another_repository_is_refused() {
    let s3 = server();
    let bucket = s3.bucket("init-nonempty");
    s3_ferry(
        s3,
        &["init", "--repo", &format!("s3://{bucket}/otherprefix")],
    )
    .success();
    let root = s3.root.join(&bucket);
    std::fs::write(root.join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir_all(root.join("photos")).unwrap();
    std::fs::write(root.join("photos/cat.jpg"), b"meow").unwrap();
    let before = files(&root);

    let repo = format!("s3://{bucket}");
    let run = s3_ferry(s3, &["init", "--repo", &repo]);
    run.error_line(&[&repo, "not empty", "holds 3 objects", "e.g. notes.txt"]);
    assert_eq!(files(&root), before);
    // A prefix that holds only another repository's prefix below it is not empty either.
    let run = s3_ferry(s3, &["init", "--repo", &format!("s3://{bucket}/photos")]);
    run.error_line(&["holds 1 object", "e.g. cat.jpg"]);

    // A repository is refused as one; a fresh prefix beside the others works.
    let run = s3_ferry(
        s3,
        &["init", "--repo", &format!("s3://{bucket}/otherprefix")],
    );
    run.error_line(&["already holds a Ferry repository"]);
    s3_ferry(s3, &["init", "--repo", &format!("s3://{bucket}/new")]).success();
    assert_eq!(files(&root.join("new")), ["config"]);
    s3_ferry(
        s3,
        &["list", "--repo", &format!("s3://{bucket}/otherprefix")],
    )
    .success();
}

#[test]
fn init_in_a_local_directory_holding_another_repository_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("top");
    let other = top.join("otherprefix");
    ferry(&[OsStr::new("init"), OsStr::new("--repo"), other.as_os_str()]).success();
    let run = ferry(&[OsStr::new("init"), OsStr::new("--repo"), top.as_os_str()]);
    run.error_line(&[
        top.to_str().unwrap(),
        "not empty",
        "holds 1 entry",
        "e.g. otherprefix",
    ]);
    assert_eq!(dir_names(&top), ["otherprefix"]);
    assert_eq!(dir_names(&other), ["config"]);
    // A dot-file is never an object, but still not an empty directory.
    let hidden = tmp.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::write(hidden.join(".keep"), b"").unwrap();
    let run = ferry(&[OsStr::new("init"), OsStr::new("--repo"), hidden.as_os_str()]);
    run.error_line(&["holds 1 entry", "e.g. .keep"]);
    assert_eq!(dir_names(&hidden), [".keep"]);
}

#[test]
fn init_in_an_nfs_directory_holding_files_is_refused() {
    let scratch = nfs_server::Scratch::new("init-nonempty");
    std::fs::create_dir_all(scratch.local.join("otherprefix")).unwrap();
    std::fs::write(scratch.local.join("otherprefix/config"), b"{}").unwrap();
    std::fs::write(scratch.local.join("zz.txt"), b"x").unwrap();
    let run = ferry(&["init", "--repo", &scratch.url]);
    run.error_line(&["not empty", "holds 2 objects", "e.g. otherprefix/config"]);
    assert_eq!(dir_names(&scratch.local), ["otherprefix", "zz.txt"]);
    let fresh = format!("{}/fresh", scratch.url);
    ferry(&["init", "--repo", &fresh]).success();
    assert_eq!(dir_names(&scratch.local.join("fresh")), ["config"]);
}
