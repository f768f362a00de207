//! SIGINT, SIGTERM and SIGHUP stop a command in order: it removes what it made, publishes
//! nothing, exits with 128 + the signal's number and says which signal on its error line; the
//! repository stays whole and usable. (Live domain backups are covered in `live_vm.rs`.)

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::{
    Fixture, assert_no_restore_leftovers, assert_same_file, chunk_ids_in, dir_names, ferry,
    ferry_interrupted, num, text,
};

/// `ferry gen-image --size SIZE --out PATH`.
fn gen_image(path: &Path, size: &str) {
    ferry(&[
        OsStr::new("gen-image"),
        OsStr::new("--size"),
        OsStr::new(size),
        OsStr::new("--out"),
        path.as_os_str(),
    ])
    .success();
}

#[test]
fn interrupted_backup_publishes_nothing_and_the_repository_stays_usable() {
    let fx = Fixture::with_chunk_size("1M");
    let image = fx.path("disk.img");
    gen_image(&image, "512M");
    let rest = [
        OsStr::new("--image"),
        image.as_os_str(),
        OsStr::new("--json"),
    ];
    let args = fx.args("backup", &rest);
    // Mid-copy: once the first chunk is stored.
    let run = ferry_interrupted(&args, &[], "INT", || !chunk_ids_in(&fx.repo).is_empty());
    run.interrupted_by("SIGINT", 130);
    run.assert_only_error_document();
    assert!(fx.snapshot_ids().is_empty(), "a snapshot was published");
    fx.verify(&["--read-data"]).success();

    // gc deletes the interrupted backup's chunks and any temp file it left.
    let gc = fx.run("gc", &["--json"]).success().json();
    assert_eq!(
        num(&gc, "chunks_total"),
        num(&gc, "chunks_deleted"),
        "{gc:#}"
    );
    assert!(fx.chunk_ids().is_empty(), "chunks left after gc");

    // The repository takes the next backup, which restores byte-identical.
    let report = fx.backup(&image, &[]);
    let restored = fx.path("restored.img");
    fx.restore_ok(text(&report, "snapshot"), &restored);
    assert_same_file(&image, &restored);
}

#[test]
fn interrupted_restore_leaves_no_partial_image() {
    let fx = Fixture::with_chunk_size("1M");
    let image = fx.path("disk.img");
    gen_image(&image, "512M");
    let report = fx.backup(&image, &[]);
    let sid = text(&report, "snapshot");
    let out = fx.dir("out");
    let target = out.join("disk.img");
    let rest = [OsStr::new(sid), OsStr::new("--to"), target.as_os_str()];
    let args = fx.args("restore", &rest);
    // Mid-write: once the temporary file exists.
    let run = ferry_interrupted(&args, &[], "TERM", || !dir_names(&out).is_empty());
    run.interrupted_by("SIGTERM", 143);
    assert_no_restore_leftovers(&target);
    assert!(dir_names(&out).is_empty(), "{:?}", dir_names(&out));

    fx.restore_ok(sid, &target);
    assert_same_file(&image, &target);
}

/// `ferry bench --size 512M` with its temporary directory in `tmp`, signalled with `signal`
/// once `ready()` holds: it must stop, naming the signal, and leave `tmp` empty.
fn interrupt_bench(tmp: &Path, signal: &str, code: i32, ready: impl Fn() -> bool) {
    let args = ["bench", "--size", "512M", "--chunk-size", "1M", "--json"];
    let run = ferry_interrupted(&args, &[("TMPDIR", tmp.as_os_str())], signal, ready);
    run.interrupted_by(&format!("SIG{signal}"), code);
    assert!(
        dir_names(tmp).is_empty(),
        "left in TMPDIR: {:?}",
        dir_names(tmp)
    );
}

#[test]
fn interrupted_bench_removes_its_sample_and_repository() {
    let tmp = tempfile::tempdir().unwrap();
    // While the sample image is generated: its scratch directory exists.
    interrupt_bench(tmp.path(), "INT", 130, || !dir_names(tmp.path()).is_empty());
    // While the stages run: the scratch repository exists.
    let scratch_repo = || {
        dir_names(tmp.path())
            .iter()
            .any(|d| tmp.path().join(d).join("repo").exists())
    };
    interrupt_bench(tmp.path(), "HUP", 129, scratch_repo);
}

/// A restore killed by SIGKILL cannot remove its temporary file; the next restore to the same
/// target removes it (its process no longer runs) and leaves alone the file of a restore that
/// still runs, and any name it cannot attribute.
#[test]
fn the_next_restore_removes_what_a_killed_restore_left() {
    let fx = Fixture::new();
    let image = fx.path("disk.img");
    common::write_image(
        &image,
        4 * common::CHUNK,
        &[(0, &common::random_bytes(3, 9000))],
    );
    let sid = text(&fx.backup(&image, &[]), "snapshot").to_owned();
    let out = fx.dir("out");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let left_by_killed = format!(".disk.img.ferry-restore-{dead}-0badc0de");
    let running = format!(".disk.img.ferry-restore-{}-0badc0de", std::process::id());
    let unattributed = ".disk.img.ferry-restore-0badc0de".to_owned();
    for name in [&left_by_killed, &running, &unattributed] {
        std::fs::write(out.join(name), b"partial image").unwrap();
    }

    let target = out.join("disk.img");
    fx.restore_ok(&sid, &target);
    assert_same_file(&image, &target);
    let mut expected = vec![running, unattributed, "disk.img".to_owned()];
    expected.sort();
    assert_eq!(dir_names(&out), expected);
}
