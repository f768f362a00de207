//! User errors: each fails with a non-zero exit, one clear `ferry: error:` line naming the
//! problem, and no damage to anything that was there before.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::process::{Command, Stdio};

use common::*;

fn small_image(fx: &Fixture) -> std::path::PathBuf {
    let image = fx.path("disk.img");
    write_image(&image, 3 * CHUNK, &[(CHUNK, &random_bytes(31, 1000))]);
    image
}

#[test]
fn missing_image_is_named() {
    let fx = Fixture::new();
    let missing = fx.path("no-such.img");
    let run = fx.run("backup", &[OsStr::new("--image"), missing.as_os_str()]);
    run.error_line(&[missing.to_str().unwrap(), "No such file"]);
    assert!(fx.snapshot_ids().is_empty());
    assert!(fx.chunk_ids().is_empty());
}

/// A directory, or a FIFO (which must not block waiting for a writer while the repository
/// lock is held), is not an image.
#[test]
fn directory_or_fifo_as_image_is_refused() {
    let fx = Fixture::new();
    let dir = fx.dir("images");
    let fifo = fx.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    for image in [&dir, &fifo] {
        let run = fx.run("backup", &[OsStr::new("--image"), image.as_os_str()]);
        run.error_line(&[image.to_str().unwrap(), "not a regular file"]);
    }
    assert!(fx.snapshot_ids().is_empty());
}

#[test]
fn restore_refuses_to_replace_an_existing_file_without_force() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let sid = text(&fx.backup(&image, &[]), "snapshot").to_owned();
    let out = fx.dir("out");
    let target = out.join("existing.img");
    std::fs::write(&target, b"do not touch").unwrap();

    let run = fx.restore(&sid, &target, &[]);
    run.error_line(&[target.to_str().unwrap(), "already exists", "--force"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"do not touch");
    assert_eq!(dir_names(&out), ["existing.img"], "no temporary file left");

    // A directory is never a target, even with --force.
    let run = fx.restore(&sid, &out, &["--force"]);
    run.error_line(&["is a directory"]);
    assert_eq!(dir_names(&out), ["existing.img"]);

    // With --force the file is replaced by the image.
    fx.restore(&sid, &target, &["--force"]).success();
    assert_same_file(&image, &target);
    assert_eq!(dir_names(&out), ["existing.img"]);
}

/// Character devices, FIFOs, sockets and symbolic links (except to a block device) are
/// refused as restore targets even with --force, and left exactly as they were: a restore
/// must never replace /dev/null with a file or block on a FIFO.
#[test]
fn restore_refuses_special_files_and_links_even_with_force() {
    use std::os::unix::fs::FileTypeExt;
    let fx = Fixture::new();
    let image = small_image(&fx);
    let sid = text(&fx.backup(&image, &[]), "snapshot").to_owned();
    let out = fx.dir("out");
    let null = out.join("null");
    let fifo = out.join("fifo");
    let file = out.join("file.img");
    let link = out.join("link");
    let dangling = out.join("dangling");
    for (what, cmd) in [
        (
            "mknod",
            vec![
                "mknod".into(),
                null.display().to_string(),
                "c".into(),
                "1".into(),
                "3".into(),
            ],
        ),
        ("mkfifo", vec!["mkfifo".into(), fifo.display().to_string()]),
    ] {
        let status = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .status()
            .unwrap();
        assert!(status.success(), "{what} failed");
    }
    std::fs::write(&file, b"pointed to").unwrap();
    std::os::unix::fs::symlink(&file, &link).unwrap();
    std::os::unix::fs::symlink(out.join("nowhere"), &dangling).unwrap();
    let before = dir_names(&out);

    for (target, words) in [
        (&null, "a character device"),
        (&fifo, "a FIFO"),
        (&link, "a symbolic link"),
        (&dangling, "a symbolic link"),
    ] {
        for flags in [&[][..], &["--force"][..]] {
            fx.restore(&sid, target, flags)
                .error_line(&[target.to_str().unwrap(), words]);
        }
    }
    assert!(
        std::fs::metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(link.is_symlink() && dangling.is_symlink());
    assert_eq!(std::fs::read(&file).unwrap(), b"pointed to");

    // A path ending in '/' that is no directory is refused before any work.
    let slash = format!("{}/", out.join("newdir").display());
    fx.restore(&sid, std::path::Path::new(&slash), &[])
        .error_line(&["newdir/", "ends with '/'"]);
    assert_eq!(dir_names(&out), before, "something was created or left");
}

#[test]
fn restore_into_a_missing_directory_fails_cleanly() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let sid = text(&fx.backup(&image, &[]), "snapshot").to_owned();
    let target = fx.path("no-such-dir").join("x.img");
    fx.restore(&sid, &target, &[]).error_line(&["no-such-dir"]);
    assert!(!fx.path("no-such-dir").exists());
}

#[test]
fn non_repository_directory_suggests_init() {
    let fx = Fixture::new();
    let plain = fx.dir("plain");
    std::fs::write(plain.join("notes.txt"), b"hello").unwrap();
    for sub in ["list", "verify"] {
        let run = ferry(&[OsStr::new(sub), OsStr::new("--repo"), plain.as_os_str()]);
        run.error_line(&[
            plain.to_str().unwrap(),
            "not a Ferry repository",
            "ferry init",
        ]);
    }
    let image = small_image(&fx);
    let run = ferry(&[
        OsStr::new("backup"),
        OsStr::new("--repo"),
        plain.as_os_str(),
        OsStr::new("--image"),
        image.as_os_str(),
    ]);
    run.error_line(&["ferry init"]);
    assert_eq!(dir_names(&plain), ["notes.txt"], "nothing written into it");
}

#[test]
fn missing_repository_directory_is_named_and_suggests_init() {
    let fx = Fixture::new();
    let missing = fx.path("no-repo-here");
    let run = ferry(&[
        OsStr::new("list"),
        OsStr::new("--repo"),
        missing.as_os_str(),
    ]);
    run.error_line(&[missing.to_str().unwrap(), "ferry init"]);
    assert!(!missing.exists(), "list must not create the repository");
}

#[test]
fn init_twice_fails_and_keeps_the_config() {
    let fx = Fixture::new();
    let config = fx.repo.join("config");
    let before = std::fs::read(&config).unwrap();
    let run = ferry(&[
        OsStr::new("init"),
        OsStr::new("--repo"),
        fx.repo.as_os_str(),
        OsStr::new("--chunk-size"),
        OsStr::new("1M"),
    ]);
    run.error_line(&[fx.repo.to_str().unwrap(), "already"]);
    assert_eq!(std::fs::read(&config).unwrap(), before);
    assert_eq!(dir_names(&fx.repo), ["config"]);
}

#[test]
fn init_refuses_a_non_empty_unrelated_directory() {
    let fx = Fixture::new();
    let dir = fx.dir("photos");
    std::fs::write(dir.join("cat.jpg"), b"meow").unwrap();
    let run = ferry(&[OsStr::new("init"), OsStr::new("--repo"), dir.as_os_str()]);
    run.error_line(&[dir.to_str().unwrap(), "not empty"]);
    assert_eq!(dir_names(&dir), ["cat.jpg"]);
    assert_eq!(std::fs::read(dir.join("cat.jpg")).unwrap(), b"meow");
}

#[test]
fn init_into_an_empty_or_missing_directory_works() {
    let fx = Fixture::new();
    let empty = fx.dir("empty");
    let nested = fx.path("a/b/repo");
    for repo in [&empty, &nested] {
        let init = ferry(&[
            OsStr::new("init"),
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("--json"),
        ])
        .success()
        .json();
        assert_eq!(num(&init, "chunk_size"), 4 * MIB, "default chunk size");
        assert_eq!(num(&init, "version"), 1);
        assert_eq!(text(&init, "repository_id").len(), 16);
        assert_eq!(dir_names(repo), ["config"]);
    }
}

#[test]
fn bad_chunk_size_is_refused_clearly() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let image = image.to_str().unwrap();
    for size in ["3M", "32K", "128M"] {
        let run = fx.run("backup", &["--image", image, "--chunk-size", size]);
        run.error_line(&["chunk size", "power of two from 64 KiB to 64 MiB"]);
        let repo = fx.path(&format!("repo-{size}"));
        let run = ferry(&[
            "init",
            "--repo",
            repo.to_str().unwrap(),
            "--chunk-size",
            size,
        ]);
        run.error_line(&["chunk size", "power of two"]);
        assert!(!repo.join("config").exists(), "no repository for {size}");
    }
    // Not a size at all: a usage error (exit 2) naming the value.
    let run = fx.run("backup", &["--image", image, "--chunk-size", "4X"]);
    let run = run.code(2);
    assert!(run.stderr.contains("4X"), "{run}");
    assert!(fx.snapshot_ids().is_empty());
}

#[test]
fn unknown_snapshot_is_refused_clearly() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let sid = text(&fx.backup(&image, &[]), "snapshot").to_owned();
    // A valid-looking id that differs from the real one in its first digit.
    let first = if sid.starts_with('0') { "1" } else { "0" };
    let unknown = format!("{first}{}", &sid[1..]);
    let target = fx.dir("out").join("x.img");
    fx.restore(&unknown, &target, &[])
        .error_line(&["no snapshot matches", &unknown]);
    assert_no_restore_leftovers(&target);
    fx.verify(&[&unknown])
        .error_line(&["no snapshot matches", &unknown]);
    fx.verify(&["not-hex"]).error_line(&["not-hex"]);

    // An empty repository has no `latest`.
    let empty = Fixture::new();
    empty
        .restore("latest", &target, &[])
        .error_line(&["no snapshot matches", "latest"]);
    assert_no_restore_leftovers(&target);
}

#[test]
fn unknown_disk_is_refused_clearly() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let sid = text(&fx.backup(&image, &[]), "snapshot").to_owned();
    let target = fx.dir("out").join("x.img");
    fx.restore(&sid, &target, &["--disk", "vdz"])
        .error_line(&["vdz", "disk.img"]);
    assert_no_restore_leftovers(&target);
}

#[test]
fn unreachable_unknown_and_unconfigured_urls_are_refused_by_name() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let image = image.to_str().unwrap();
    // No NFS service listens on 127.0.0.3 (the test server binds 127.0.0.1 only).
    let repo = "nfs://127.0.0.3/export/ferry";
    let cases: [&[&str]; 4] = [
        &["init", "--repo", repo],
        &["list", "--repo", repo],
        &["verify", "--repo", repo],
        &["backup", "--repo", repo, "--image", image],
    ];
    // A filer that does not answer is waited for (FERRY_RETRY_TIMEOUT), then named.
    let short_wait = [("FERRY_RETRY_TIMEOUT", OsStr::new("1"))];
    for args in cases {
        ferry_with_env(args, &short_wait).error_line(&[
            repo,
            "127.0.0.3",
            "does not answer",
            "gave up after",
        ]);
    }
    // An S3 repository without credentials names the missing variable.
    let no_keys = [
        ("AWS_ACCESS_KEY_ID", std::ffi::OsStr::new("")),
        ("AWS_SECRET_ACCESS_KEY", std::ffi::OsStr::new("")),
    ];
    ferry_with_env(&["list", "--repo", "s3://bucket/ferry"], &no_keys)
        .error_line(&["s3://bucket/ferry", "AWS_ACCESS_KEY_ID"]);
    ferry(&["list", "--repo", "s3://Not_A_Bucket/x"]).error_line(&["bucket name"]);
    ferry(&["list", "--repo", "ftp://host/x"]).error_line(&["ftp://"]);
    ferry(&["list", "--repo", "file://relative/x"]).error_line(&["absolute"]);
    // A scheme with one colon would be a local directory named `nfs:127.0.0.1`: refused,
    // naming the right form, and nothing is created.
    let cwd = fx.dir("cwd");
    for (typo, form) in [
        ("nfs:127.0.0.1/export/x", "nfs://HOST"),
        ("s3:bucket/x", "s3://BUCKET"),
        ("file:/srv/x", "file:///"),
    ] {
        let run = Run::of(
            &["init", "--repo", typo],
            &std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["init", "--repo", typo])
                .current_dir(&cwd)
                .env_remove("FERRY_REPO")
                .output()
                .unwrap(),
        );
        run.code(1).error_line(&[typo, "misspelt", form]);
        assert!(dir_names(&cwd).is_empty(), "{:?}", dir_names(&cwd));
    }
    // file:// with an absolute path is the same repository as the plain path.
    let url = format!("file://{}", fx.repo.display());
    let list = ferry(&["list", "--json", "--repo", &url]).success().json();
    assert_eq!(list["snapshots"], serde_json::json!([]));
}

#[test]
fn ferry_repo_environment_variable_replaces_the_flag() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let env = [("FERRY_REPO", fx.repo.as_os_str())];
    let backup = ferry_with_env(
        &["backup", "--json", "--image", image.to_str().unwrap()],
        &env,
    )
    .success()
    .json();
    let sid = text(&backup, "snapshot");
    let list = ferry_with_env(&["list", "--json"], &env).success().json();
    assert_eq!(list["snapshots"][0]["snapshot"], sid, "{list:#}");
    let verify = ferry_with_env(&["verify", "--json", "--read-data"], &env)
        .success()
        .json();
    assert_eq!(verify["clean"], true);
    let target = fx.dir("out").join("x.img");
    ferry_with_env(
        &["restore", "latest", "--to", target.to_str().unwrap()],
        &env,
    )
    .success();
    assert_same_file(&image, &target);

    // --repo wins over the environment.
    let other = Fixture::new();
    let list = ferry_with_env(
        &["list", "--json", "--repo", other.repo.to_str().unwrap()],
        &env,
    )
    .success()
    .json();
    assert_eq!(list["snapshots"], serde_json::json!([]));

    // Without either, a usage error names the flag; the help names the variable.
    let run = ferry(&["list"]).code(2);
    assert!(run.stderr.contains("--repo"), "{run}");
    let help = ferry(&["list", "--help"]).success();
    assert!(help.stdout.contains("FERRY_REPO"), "{help}");
}

#[test]
fn usage_errors_exit_2() {
    ferry(&["backup"]).code(2);
    ferry(&["no-such-command"]).code(2);
    ferry(&["verify", "--repo", "/nonexistent", "--threads", "many"]).code(2);
    // Flags of domain backups are refused with --image rather than ignored (a hook that
    // silently never runs).
    for flag in [
        &["--hook", "true"][..],
        &["--mode", "push"],
        &["--quiesce", "on"],
        &["--disk", "vda"],
        &["--overlay-dir", "/tmp"],
        &["--scratch-dir", "/tmp"],
    ] {
        let mut args = vec![
            "backup",
            "--repo",
            "/nonexistent",
            "--image",
            "/etc/hostname",
        ];
        args.extend_from_slice(flag);
        let run = ferry(&args).code(2);
        assert!(run.stderr.contains(flag[0]), "{run}");
    }
    for threads in ["0", "100000"] {
        ferry(&[
            "restore",
            "--repo",
            "/x",
            "latest",
            "--to",
            "/x/y",
            "--threads",
            threads,
        ])
        .code(2);
    }
    let help = ferry(&["--help"]).success();
    for sub in ["init", "backup", "list", "restore", "verify", "gen-image"] {
        assert!(help.stdout.contains(sub), "{help}");
    }
}

/// Snapshot names end up in `list` tables and terminals: empty, over-long and control
/// characters (a newline would forge a row, an escape would drive the terminal) are refused.
#[test]
fn snapshot_names_with_control_characters_are_refused() {
    let fx = Fixture::new();
    let image = small_image(&fx);
    let long = "n".repeat(256);
    for name in [
        "",
        "two\nlines",
        "esc\u{1b}[31m",
        "tab\there",
        long.as_str(),
    ] {
        let run = fx.run(
            "backup",
            &[
                OsStr::new("--image"),
                image.as_os_str(),
                OsStr::new("--name"),
                OsStr::new(name),
            ],
        );
        run.error_line(&["snapshot name"]);
    }
    assert!(fx.snapshot_ids().is_empty());
    assert!(
        fx.chunk_ids().is_empty(),
        "chunks stored before the name was checked"
    );
    fx.backup(&image, &["--name", "Ωmega ☃ web-01"]);
}

/// On a full filesystem gc cannot write its lock: it says so and what to do, deletes nothing,
/// and works once a little space is free.
#[test]
fn gc_on_a_full_filesystem_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = common::vm::Tmpfs::mount("1m");
    let repo = fs.path().join("repo");
    let repo_arg = repo.to_str().unwrap();
    ferry(&["init", "--repo", repo_arg, "--chunk-size", "64K"]).success();
    let image = tmp.path().join("disk.img");
    write_image(
        &image,
        2 * CHUNK,
        &[(0, &random_bytes(8, 2 * CHUNK as usize))],
    );
    let image_arg = image.to_str().unwrap();
    ferry(&["backup", "--repo", repo_arg, "--image", image_arg]).success();
    ferry(&["forget", "--repo", repo_arg, "latest"]).success();
    // Fill the filesystem (outside the repository) to the last byte.
    let filler = fs.path().join("filler");
    let mut file = File::create(&filler).unwrap();
    let block = vec![0x5au8; 4096];
    while std::io::Write::write(&mut file, &block).is_ok_and(|n| n > 0) {}
    drop(file);
    let chunks = chunk_ids_in(&repo);
    assert_eq!(chunks.len(), 2);

    ferry(&["gc", "--repo", repo_arg]).error_line(&["filesystem is full", "free a few KiB"]);
    assert_eq!(
        chunk_ids_in(&repo),
        chunks,
        "gc deleted chunks without its lock"
    );

    std::fs::remove_file(&filler).unwrap();
    let report = ferry(&["gc", "--repo", repo_arg, "--json"])
        .success()
        .json();
    assert_eq!(num(&report, "chunks_deleted"), 2, "{report:#}");
}

/// A snapshot names at most 16 Mi chunks: a disk that would need more at the chosen chunk size
/// is refused up front with the way out (a larger chunk size), and stores nothing.
#[test]
fn a_disk_too_large_for_its_chunk_size_is_refused() {
    let fx = Fixture::new();
    let image = fx.path("huge.img");
    // Sparse: 1 TiB + 64 KiB, 2^24 + 1 chunks of 64 KiB.
    File::create(&image)
        .unwrap()
        .set_len((1 << 40) + CHUNK)
        .unwrap();
    let run = fx.run("backup", &[OsStr::new("--image"), image.as_os_str()]);
    run.error_line(&["16777217 chunks", "--chunk-size"]);
    assert!(fx.snapshot_ids().is_empty());
    assert!(fx.chunk_ids().is_empty());
}

/// `init` on a path through a regular file names that file; `gen-image` refuses an existing
/// file without touching it, and removes its partial output when the filesystem fills up.
#[test]
fn init_and_gen_image_name_what_is_in_the_way() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("afile");
    std::fs::write(&file, b"keep").unwrap();
    let file_arg = file.to_str().unwrap();
    for repo in [file.clone(), file.join("sub")] {
        ferry(&["init", "--repo", repo.to_str().unwrap()])
            .error_line(&[file_arg, "exists and is not a directory"]);
    }
    ferry(&["gen-image", "--size", "4M", "--out", file_arg]).error_line(&[
        "cannot create sample image",
        file_arg,
        "File exists",
    ]);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    let fs = common::vm::Tmpfs::mount("1m");
    let out = fs.path().join("sample.img");
    ferry(&["gen-image", "--size", "8M", "--out", out.to_str().unwrap()])
        .error_line(&["writing sample image", "No space"]);
    assert!(!out.exists(), "a partial sample image was left");
}

/// With --json a failure is a JSON document on stdout too, naming the error and the exit
/// status, besides the error line on stderr.
#[test]
fn json_runs_print_a_document_for_an_error() {
    let fx = Fixture::new();
    let missing = fx.path("no-repo-here");
    let run = ferry(&["list", "--json", "--repo", missing.to_str().unwrap()]);
    let line = run.error_line(&["does not exist"]);
    let document = run.json();
    assert_eq!(document["exit_status"], 1, "{run}");
    assert_eq!(
        format!("ferry: error: {}", document["error"].as_str().unwrap()),
        line,
        "{run}"
    );
}

/// `ferry ARGS` with stdout and stderr as given (e.g. `/dev/full`): its exit status, and its
/// stderr when that was piped.
fn ferry_with_outputs(args: &[&str], stdout: Stdio, stderr: Stdio) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_REPO")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .output()
        .expect("run the ferry binary");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

fn dev_full() -> Stdio {
    Stdio::from(File::options().write(true).open("/dev/full").unwrap())
}

/// An error line (and a --json error document) that cannot be written to a full stderr and
/// stdout is lost, but the exit status is still the error's 1, not a panic's 101.
#[test]
fn a_failing_command_with_a_full_stderr_exits_1() {
    let fx = Fixture::new();
    let missing = fx.path("no-repo-here");
    for args in [
        vec!["list", "--repo", missing.to_str().unwrap()],
        vec!["list", "--json", "--repo", missing.to_str().unwrap()],
    ] {
        let (code, _) = ferry_with_outputs(&args, dev_full(), dev_full());
        assert_eq!(code, Some(1), "ferry {args:?} with stdout and stderr full");
        let (code, _) = ferry_with_outputs(&args, Stdio::null(), dev_full());
        assert_eq!(code, Some(1), "ferry {args:?} with stderr full");
    }
}

/// A report that cannot be written to a full stdout is an error (exit status 1, naming
/// stdout), not a panic and not a success.
#[test]
fn a_report_that_cannot_be_written_to_stdout_is_an_error() {
    let fx = Fixture::new();
    let out = fx.path("sample.img");
    for json in [false, true] {
        let _ = std::fs::remove_file(&out);
        let mut args = vec!["gen-image", "--size", "4M", "--out", out.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let (code, stderr) = ferry_with_outputs(&args, dev_full(), Stdio::piped());
        assert_eq!(code, Some(1), "ferry {args:?} >/dev/full\n{stderr}");
        assert!(
            stderr.contains("ferry: error: cannot write the output to stdout"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Arguments clap refuses (exit status 2) with --json among them: clap's message on stderr as
/// usual, and on stdout an error document holding its first line. Help is still help.
#[test]
fn json_usage_errors_print_a_document() {
    for (args, needle) in [
        (&["list", "--bogus", "--json"][..], "--bogus"),
        (
            &[
                "backup",
                "--threads",
                "0",
                "--json",
                "--image",
                "/x",
                "--repo",
                "/y",
            ],
            "--threads",
        ),
        (&["no-such-command", "--json"], "no-such-command"),
    ] {
        let run = ferry(args).code(2);
        assert!(run.stderr.contains("error:"), "{run}");
        assert!(run.stderr.contains(needle), "{run}");
        run.assert_only_error_document();
        let error = run.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{run}");
        assert!(
            !error.contains('\n') && !error.starts_with("error:"),
            "{run}"
        );
    }
    // Without --json stdout stays empty; --help with --json is help, not an error document.
    let run = ferry(&["list", "--bogus"]).code(2);
    assert_eq!(run.stdout, "", "{run}");
    let run = ferry(&["list", "--help", "--json"]).success();
    assert!(run.stdout.contains("Usage:"), "{run}");
    assert!(serde_json::from_str::<serde_json::Value>(&run.stdout).is_err());
}

/// An empty S3 flag (often an unset shell variable) is refused by name before any request,
/// instead of being sent and coming back as access denied.
#[test]
fn empty_s3_flags_are_refused_by_name() {
    for (flag, value) in [
        ("--s3-access-key-id", ""),
        ("--s3-endpoint", ""),
        ("--s3-endpoint", " "),
    ] {
        let args = ["list", "--repo", "s3://bucket/r", flag, value];
        let env = [
            ("AWS_ACCESS_KEY_ID", OsStr::new("AKID")),
            ("AWS_SECRET_ACCESS_KEY", OsStr::new("secret")),
        ];
        ferry_with_env(&args, &env).error_line(&[&format!("{flag} is empty")]);
    }
}
