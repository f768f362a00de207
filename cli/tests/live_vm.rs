//! `ferry backup --domain` and `ferry recover` against a real libvirtd and real QEMU domains
//! with no guest OS (scripts/vm/domain.sh). Writes go into the live disks through QEMU's
//! `qemu-io` monitor command, so each test knows where every byte must land:
//!
//! - a pattern written before the backup is in the backup;
//! - a pattern written while the base is frozen (from the `--hook` at phase `frozen`) is NOT in
//!   the backup, and is in the base image once the VM is back on it;
//! - after every backup, successful or not, the domain is on its base images, no
//!   `*.ferry-overlay-*` / `*.ferry-scratch-*` file remains and the journal is empty.
//!
//! Each test has its own domain, VM directory, repository and `FERRY_STATE_DIR`, so the tests
//! run in parallel. They need root and libvirt (`scripts/services/libvirt.sh ensure`, run once
//! per process): without them they fail, they never skip.

mod common;

use std::path::{Path, PathBuf};

use common::vm::*;
use common::*;
use serde_json::Value;

/// Virtual size of the test disks.
const DISK: u64 = 32 * MIB;

/// Pattern written into the live disk before the backup: must be in the backup.
const A: (u8, u64, u64) = (0xa1, 0, MIB);
/// Pattern written while the base is frozen: must be in the base afterwards, not in the backup.
const B: (u8, u64, u64) = (0xb2, 4 * MIB, MIB);
/// Pattern written while a crashed backup left the domain on its overlay.
const C: (u8, u64, u64) = (0xc3, 8 * MIB + 64 * KIB, MIB);

/// A disk with some text and random content: zeros (a hole) under A, random data under B
/// (so "B absent" means "the old data is still there"), text under C, random at the end.
fn standard_disk(format: Format, seed: u64) -> DiskSpec {
    let spec = match format {
        Format::Raw => DiskSpec::raw(DISK),
        Format::Qcow2 => DiskSpec::qcow2(DISK),
    };
    spec.with(2 * MIB, MIB, Fill::Text(seed))
        .with(3 * MIB + 512 * KIB, 2 * MIB, Fill::Random(seed + 1))
        .with(7 * MIB + 512 * KIB, 3 * MIB, Fill::Text(seed + 2))
        .with(DISK - 2 * MIB, 2 * MIB, Fill::Random(seed + 3))
}

fn write(vm: &TestVm, disk: usize, (byte, offset, len): (u8, u64, u64)) {
    vm.write(disk, byte, offset, len);
}

fn write_cmd(vm: &TestVm, disk: usize, (byte, offset, len): (u8, u64, u64)) -> String {
    vm.write_command(disk, byte, offset, len)
}

fn apply(image: &mut [u8], (byte, offset, len): (u8, u64, u64)) {
    fill(image, byte, offset, len);
}

#[track_caller]
fn assert_has(image: &[u8], (byte, offset, len): (u8, u64, u64), what: &str) {
    assert_filled(image, byte, offset, len, what);
}

#[track_caller]
fn assert_lacks(image: &[u8], reference: &[u8], (byte, offset, len): (u8, u64, u64), what: &str) {
    assert_absent(image, reference, byte, offset, len, what);
}

/// The single snapshot id of a backup report, with its disks checked against `expected`
/// `(target, base path)`.
#[track_caller]
fn snapshot_of(report: &Value, expected: &[(String, String)]) -> String {
    assert_eq!(
        disk_sources(report),
        expected,
        "disks of the report\n{report:#}"
    );
    text(report, "snapshot").to_owned()
}

/// Asserts that `list` (domblklist) shows disk `index` of `vm` on a Ferry overlay in `dir`,
/// named `<base file name>.ferry-overlay-<something>.qcow2`; returns the overlay's path.
#[track_caller]
fn assert_on_overlay(list: &[(String, String)], vm: &TestVm, index: usize, dir: &Path) -> PathBuf {
    let disk = vm.disk(index);
    let (_, source) = list
        .iter()
        .find(|(t, _)| *t == disk.target)
        .unwrap_or_else(|| panic!("{} is not in domblklist {list:?}", disk.target));
    let path = PathBuf::from(source);
    let base_name = disk.path.file_name().unwrap().to_string_lossy();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("{base_name}{OVERLAY_MARK}")) && name.ends_with(".qcow2"),
        "{} is not on a Ferry overlay of {base_name}: {list:?}",
        disk.target
    );
    assert_eq!(path.parent(), Some(dir), "overlay directory: {list:?}");
    path
}

/// Reads a domblklist that a hook recorded.
fn recorded_domblklist(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("the hook recorded no domblklist in {}: {e}", file.display()));
    parse_domblklist(&text)
}

// ---------------------------------------------------------------------------------------------
// The harness itself (passes without the domain backup implementation)

#[test]
fn domblklist_parsing() {
    let details = " Type   Device   Target   Source\n\
                   ------------------------------------------------\n \
                   file   disk     vda      /var/tmp/x/vda.raw\n \
                   file   cdrom    sda      -\n \
                   file   disk     vdb      /var/tmp/x/vdb.qcow2.ferry-overlay-1.qcow2\n\n";
    assert_eq!(
        parse_domblklist(details),
        [
            ("vda".to_owned(), "/var/tmp/x/vda.raw".to_owned()),
            (
                "vdb".to_owned(),
                "/var/tmp/x/vdb.qcow2.ferry-overlay-1.qcow2".to_owned()
            ),
        ]
    );
    assert_eq!(sh_quote("a'b c"), r"'a'\''b c'");
}

#[test]
fn harness_self_test() {
    let vm = TestVm::start(
        "harness",
        &[
            standard_disk(Format::Raw, 10),
            DiskSpec::qcow2(DISK).with(MIB, 3 * MIB, Fill::Random(20)),
        ],
    );
    let dir = vm.dir();
    assert!(dir.starts_with(VM_ROOT), "{}", dir.display());
    assert_eq!(mode(&dir) & 0o077, 0, "the VM directory is private");
    assert_eq!(vm.state(), "running");
    assert_eq!(vm.domblklist(), vm.bases());
    assert_eq!(
        vm.bases(),
        [
            ("vda".to_owned(), dir.join("vda.raw").display().to_string()),
            (
                "vdb".to_owned(),
                dir.join("vdb.qcow2").display().to_string()
            ),
        ]
    );
    assert!(vm.name.starts_with("ferry-test-harness-"));

    // Writes land, reads check them; the helpers catch what virsh reports as success.
    let mut expected = [vm.disk(0).initial.clone(), vm.disk(1).initial.clone()];
    vm.write(0, 0x5a, MIB, 64 * KIB);
    vm.write(1, 0x6b, 2 * MIB + 4096, 8192);
    vm.write(1, 0x7c, DISK - 512, 512);
    fill(&mut expected[0], 0x5a, MIB, 64 * KIB);
    fill(&mut expected[1], 0x6b, 2 * MIB + 4096, 8192);
    fill(&mut expected[1], 0x7c, DISK - 512, 512);
    vm.check(0, 0x5a, MIB, 64 * KIB);
    vm.check(1, 0x6b, 2 * MIB + 4096, 8192);
    vm.check(1, 0x7c, DISK - 512, 512);
    vm.check(0, 0, 0, MIB); // a hole reads as zeros
    let wrong = vm.try_check(0, 0x5b, MIB, 64 * KIB);
    assert!(wrong.is_err(), "a wrong pattern passed the check");
    assert!(
        wrong.unwrap_err().contains("does not hold"),
        "the failed check says why"
    );
    let past_end = vm.try_write(0, 0x01, DISK, 64 * KIB);
    assert!(past_end.is_err(), "a write past the end passed");
    let no_device = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            vm.write_command(0, 0x01, 0, 512)
                .replace(" write 0 ", " write 7 "),
        )
        .output()
        .unwrap();
    assert!(
        !no_device.status.success(),
        "a write to a missing disk passed"
    );
    assert!(String::from_utf8_lossy(&no_device.stderr).contains("not found"));

    // A hook script: records its calls and fails when a command fails.
    let fx = Fixture::new();
    let hook = Hook::new(
        fx.tmp.path(),
        "hook",
        &[write_cmd(&vm, 0, (0x3c, 5 * MIB, 4096))],
        &["false".to_owned()],
    );
    let run_hook = |phase: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(hook.arg())
            .env("FERRY_HOOK_PHASE", phase)
            .env("FERRY_DOMAIN", &vm.name)
            .env("FERRY_PID", std::process::id().to_string())
            .status()
            .unwrap()
    };
    assert!(run_hook("frozen").success());
    assert!(!run_hook("copied").success());
    hook.assert_calls(&vm, &["frozen", "copied"]);
    fill(&mut expected[0], 0x3c, 5 * MIB, 4096);

    // A domblklist recorded the way hooks do it.
    let recorded = fx.path("blk.txt");
    run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(vm.domblklist_command(&recorded)),
    );
    assert_eq!(recorded_domblklist(&recorded), vm.bases());

    // Off: the bases hold exactly the initial content plus the writes.
    vm.shutdown_hard();
    assert_eq!(qemu_img_format(&vm.disk(0).path), "raw");
    assert_eq!(qemu_img_format(&vm.disk(1).path), "qcow2");
    assert_eq!(
        read_at(&vm.disk(0).path, MIB, 64 * KIB as usize),
        vec![0x5a; 64 * KIB as usize]
    );
    for (i, want) in expected.iter().enumerate() {
        let got = vm.base_bytes(i);
        assert_image_eq(&got, want, &format!("base of disk {i}"));
    }
    let mut other = expected[0].clone();
    other[12345] ^= 1;
    let why = image_mismatch(&other, &expected[0]).expect("a difference is found");
    assert!(why.contains("offset 12345"), "{why}");
    assert!(leftovers(&[&dir]).is_empty());

    // State and journal helpers.
    let live = Live::new();
    live.assert_journal_empty(); // missing
    std::fs::create_dir_all(live.journal().join("sub")).unwrap();
    live.assert_journal_empty(); // empty directories only
    std::fs::write(live.journal().join("sub/entry"), b"x").unwrap();
    assert_eq!(live.journal_files().len(), 1);

    // Drop: the domain is gone with its directory and log.
    let name = vm.name.clone();
    let log = vm.log_path();
    assert!(log.is_file());
    drop(vm);
    assert!(
        !virsh(&["dominfo", &name]).status.success(),
        "{name} still defined"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!log.exists(), "{} still exists", log.display());

    // A small tmpfs fills up, and is unmounted on drop.
    let tmpfs = Tmpfs::mount("1m");
    let mount_point = tmpfs.path().to_path_buf();
    assert_eq!(mode(&mount_point), 0o700);
    let full = std::fs::write(mount_point.join("big"), vec![1u8; 2 * MIB as usize]);
    assert_eq!(full.unwrap_err().raw_os_error(), Some(28), "ENOSPC");
    drop(tmpfs);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(mount_point.to_str().unwrap()));
    assert!(!mount_point.exists());
}

// ---------------------------------------------------------------------------------------------
// Overlay mode

/// A written before the backup, B from the `frozen` hook; the backup holds A and not B, the
/// base afterwards holds both. With `overlay_dir`, the overlay goes there instead of beside
/// the base.
fn overlay_point_in_time(test: &str, format: Format, overlay_dir: bool) {
    let vm = TestVm::start(test, &[standard_disk(format, 100)]);
    let live = Live::new();
    let overlays = overlay_dir.then(|| vm.subdir("overlays"));
    let overlays_at = overlays.clone().unwrap_or_else(|| vm.dir());

    write(&vm, 0, A);
    let blk = live.fx.path("frozen-domblklist.txt");
    let hook = Hook::new(
        live.fx.tmp.path(),
        "hook",
        &[vm.domblklist_command(&blk), write_cmd(&vm, 0, B)],
        &[],
    );
    let mut extra = vec!["--hook".to_owned(), hook.arg()];
    if let Some(dir) = &overlays {
        extra.extend(["--overlay-dir".to_owned(), dir.display().to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let report = live.backup_ok(&vm, &extra);

    let extra_dirs: Vec<&Path> = overlays.iter().map(PathBuf::as_path).collect();
    live.assert_clean(&vm, &extra_dirs);
    assert_eq!(vm.state(), "running");
    hook.assert_calls(&vm, &["frozen", "copied"]);
    // While the copy ran, the guest wrote into an overlay.
    assert_on_overlay(&recorded_domblklist(&blk), &vm, 0, &overlays_at);

    let sid = snapshot_of(&report, &vm.bases());
    if format == Format::Raw {
        assert_eq!(num(&report["disks"][0], "virtual_size"), DISK, "{report:#}");
    }
    assert_eq!(live.listed_snapshots(), std::slice::from_ref(&sid));

    // The backup is the disk as it was when frozen: A, not B.
    let restored = live.fx.path("restored");
    let restore = live.restore_disk(&sid, "vda", &restored);
    assert_eq!(
        text(&restore, "image_digest"),
        text(&report["disks"][0], "image_digest"),
        "{restore:#}"
    );
    assert_eq!(qemu_img_format(&restored), format.as_str());
    let got = image_bytes(&restored, format);
    let mut expected = assert_a_not_b(&vm, &got);
    let verify = live.fx.verify(&["--read-data"]).success().json();
    assert_eq!(verify["clean"], true, "{verify:#}");

    // B went to the overlay and was committed into the base by the pivot.
    vm.check(0, B.0, B.1, B.2);
    vm.shutdown_hard();
    let base = vm.base_bytes(0);
    apply(&mut expected, B);
    assert_has(&base, A, "base: pattern A");
    assert_has(&base, B, "base: pattern B");
    assert_image_eq(&base, &expected, "base after the pivot");
}

#[test]
fn overlay_raw_point_in_time() {
    overlay_point_in_time("overlay_raw", Format::Raw, false);
}

#[test]
fn overlay_qcow2_point_in_time() {
    overlay_point_in_time("overlay_qcow2", Format::Qcow2, true);
}

#[test]
fn two_disks_one_snapshot() {
    let vm = TestVm::start(
        "two_disks",
        &[
            standard_disk(Format::Raw, 200),
            standard_disk(Format::Qcow2, 300),
        ],
    );
    let live = Live::new();
    let initial = [vm.disk(0).initial.clone(), vm.disk(1).initial.clone()];
    write(&vm, 0, A);
    write(&vm, 1, A);
    let blk = live.fx.path("frozen-domblklist.txt");
    let hook = Hook::new(
        live.fx.tmp.path(),
        "hook",
        &[
            vm.domblklist_command(&blk),
            write_cmd(&vm, 0, B),
            write_cmd(&vm, 1, B),
        ],
        &[],
    );
    let report = live.backup_ok(&vm, &["--hook", &hook.arg()]);
    live.assert_clean(&vm, &[]);
    hook.assert_calls(&vm, &["frozen", "copied"]);
    // Both disks were frozen at once.
    let frozen = recorded_domblklist(&blk);
    assert_on_overlay(&frozen, &vm, 0, &vm.dir());
    assert_on_overlay(&frozen, &vm, 1, &vm.dir());

    // One snapshot holding both disks, named by target.
    let sid = snapshot_of(&report, &vm.bases());
    let list = live.list();
    let snapshots = list["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 1, "{list:#}");
    assert_eq!(text(&snapshots[0], "snapshot"), sid);
    assert_eq!(disk_sources(&snapshots[0]), vm.bases(), "{list:#}");

    // Restore without --disk: one file per disk in a new directory.
    let out = live.fx.path("restored");
    let restored = live.fx.restore(&sid, &out, &[]).success().json();
    assert_eq!(dir_names(&out), ["domain.xml", "vda", "vdb"]);
    let formats: Vec<&str> = restored["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| text(d, "format"))
        .collect();
    assert_eq!(formats, ["raw", "qcow2"], "{restored:#}");
    // The domain XML at backup time, beside the disks, naming the domain.
    let xml = std::fs::read_to_string(out.join("domain.xml")).unwrap();
    assert!(xml.contains(&format!("<name>{}</name>", vm.name)), "{xml}");
    assert_eq!(mode(&out.join("domain.xml")) & 0o777, 0o600);
    assert_eq!(
        restored["domain_xml"],
        out.join("domain.xml").display().to_string()
    );
    assert_eq!(qemu_img_format(&out.join("vda")), "raw");
    assert_eq!(qemu_img_format(&out.join("vdb")), "qcow2");
    let got = [
        image_bytes(&out.join("vda"), Format::Raw),
        image_bytes(&out.join("vdb"), Format::Qcow2),
    ];
    let mut expected = initial.clone();
    for i in 0..2 {
        apply(&mut expected[i], A);
        assert_lacks(&got[i], &initial[i], B, &format!("restored disk {i}: B"));
        assert_image_eq(&got[i], &expected[i], &format!("restored disk {i}"));
        apply(&mut expected[i], B);
    }

    // --disk vdb: a snapshot of vdb alone, which now holds B.
    let report = live.backup_ok(&vm, &["--disk", "vdb"]);
    live.assert_clean(&vm, &[]);
    let vdb_only = snapshot_of(&report, &vm.bases()[1..]);
    assert_eq!(live.listed_snapshots().len(), 2);
    assert!(live.listed_snapshots().contains(&vdb_only));
    let restored = live.fx.path("vdb-only");
    live.restore_disk(&vdb_only, "vdb", &restored);
    assert_image_eq(
        &image_bytes(&restored, Format::Qcow2),
        &expected[1],
        "vdb of the --disk vdb snapshot",
    );

    vm.shutdown_hard();
    for (i, want) in expected.iter().enumerate() {
        assert_image_eq(&vm.base_bytes(i), want, &format!("base of disk {i}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Faults

#[test]
fn sink_failure_mid_copy() {
    let tmpfs = Tmpfs::mount("4m");
    let live = Live::with_repo(&tmpfs.path().join("repo"));
    // 32 MiB of incompressible data for a 4 MiB filesystem.
    let vm = TestVm::start(
        "sink_failure",
        &[DiskSpec::raw(DISK).with(0, DISK, Fill::Random(400))],
    );
    let hook = Hook::new(live.fx.tmp.path(), "hook", &[write_cmd(&vm, 0, B)], &[]);
    let run = live.backup(&vm, &["--hook", &hook.arg()]);
    let line = run.error_line(&[]);
    assert!(
        line.to_lowercase().contains("no space"),
        "the error does not say the repository is full\n{run}"
    );
    live.assert_clean(&vm, &[]);
    assert_eq!(vm.state(), "running");
    hook.assert_calls(&vm, &["frozen"]);
    assert!(
        live.listed_snapshots().is_empty(),
        "a snapshot was published"
    );
    assert!(live.fx.snapshot_ids().is_empty(), "a manifest was written");

    // The write made while frozen is in the base.
    vm.shutdown_hard();
    let mut expected = vm.disk(0).initial.clone();
    apply(&mut expected, B);
    assert_image_eq(&vm.base_bytes(0), &expected, "base after the failed backup");
}

/// `ferry backup` killed by SIGKILL while frozen leaves the domain on its overlay with a
/// journal entry; `ferry recover` merges it back keeping every guest write, with or without
/// the journal (then from the live chain alone).
fn sigkill_then_recover(test: &str, delete_journal: bool) {
    let vm = TestVm::start(test, &[standard_disk(Format::Raw, 500)]);
    let live = Live::new();
    let overlays = delete_journal.then(|| vm.subdir("overlays"));
    let overlays_at = overlays.clone().unwrap_or_else(|| vm.dir());
    let extra_dirs: Vec<&Path> = overlays.iter().map(PathBuf::as_path).collect();

    write(&vm, 0, A);
    let hook = Hook::new(
        live.fx.tmp.path(),
        "hook",
        &[r#"kill -9 "$FERRY_PID""#.to_owned()],
        &[],
    );
    let mut extra = vec!["--hook".to_owned(), hook.arg()];
    if let Some(dir) = &overlays {
        extra.extend(["--overlay-dir".to_owned(), dir.display().to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (status, run) = live.backup_unchecked(&vm, &extra);
    assert_eq!(signal_of(&status), Some(9), "ferry was not killed\n{run}");
    hook.assert_calls(&vm, &["frozen"]);

    // Left behind: the domain on its overlay, and the journal entry.
    let list = vm.domblklist();
    let overlay = assert_on_overlay(&list, &vm, 0, &overlays_at);
    assert!(overlay.is_file(), "{} is missing", overlay.display());
    let journal = live.journal_files();
    assert!(!journal.is_empty(), "the journal is empty after the crash");
    assert!(live.listed_snapshots().is_empty());
    if delete_journal {
        std::fs::remove_dir_all(live.journal()).expect("delete the journal");
    }

    // The guest keeps writing, into the overlay: the (raw) base does not change.
    write(&vm, 0, C);
    vm.check(0, C.0, C.1, C.2);
    let (_, c_offset, c_len) = C;
    assert_eq!(
        read_at(&vm.disk(0).path, c_offset, c_len as usize),
        vm.disk(0).initial[c_offset as usize..(c_offset + c_len) as usize],
        "a write made on the overlay reached the base"
    );

    let run = live.recover(&vm).success();
    assert!(
        run.stdout
            .contains(&format!("domain {}: merged vda back", vm.name)),
        "{run}"
    );
    live.assert_clean(&vm, &extra_dirs);
    assert!(!overlay.exists(), "{} was not deleted", overlay.display());
    assert_eq!(vm.state(), "running");
    vm.check(0, A.0, A.1, A.2);
    vm.check(0, C.0, C.1, C.2);
    // Nothing left to do: recover succeeds again. A domain that does not exist is an error.
    live.recover(&vm).success();
    live.ferry(&[
        "recover",
        "--domain",
        "ferry-test-no-such-domain",
        "--connect",
        URI,
    ])
    .error_line(&["ferry-test-no-such-domain", "not found"]);

    let initial = &vm.disk(0).initial;
    let mut expected = initial.clone();
    apply(&mut expected, A);
    apply(&mut expected, C);

    // A new backup works and holds every write.
    let report = live.backup_ok(&vm, &[]);
    live.assert_clean(&vm, &extra_dirs);
    let sid = snapshot_of(&report, &vm.bases());
    let restored = live.fx.path("restored");
    live.restore_disk(&sid, "vda", &restored);
    assert_image_eq(
        &image_bytes(&restored, Format::Raw),
        &expected,
        "backup after recover",
    );

    vm.shutdown_hard();
    let base = vm.base_bytes(0);
    assert_has(&base, C, "base: pattern C");
    assert_image_eq(&base, &expected, "base after recover");
}

#[test]
fn sigkill_mid_copy_then_recover() {
    sigkill_then_recover("sigkill_recover", false);
}

#[test]
fn recover_without_journal() {
    sigkill_then_recover("recover_no_journal", true);
}

/// `--quiesce on` without a guest agent fails before the point in time is fixed, in overlay
/// mode (no overlay) and push mode (no job, no scratch file), and changes nothing.
#[test]
fn quiesce_on_without_agent_fails_cleanly() {
    let vm = TestVm::start("quiesce_on", &[standard_disk(Format::Raw, 600)]);
    let live = Live::new();
    let scratch = vm.subdir("scratch");
    let scratch_arg = scratch.display().to_string();
    for extra in [
        &[][..],
        &["--mode", "push", "--scratch-dir", &scratch_arg][..],
    ] {
        let mut args = vec!["--quiesce", "on"];
        args.extend_from_slice(extra);
        live.backup(&vm, &args)
            .error_line(&["--quiesce on", "agent"]);
        live.assert_clean(&vm, &[&scratch]);
        assert!(dir_names(&scratch).is_empty(), "scratch files left");
        assert_no_job(&vm);
        assert_eq!(vm.state(), "running");
    }
    assert!(live.listed_snapshots().is_empty());
    assert!(live.fx.snapshot_ids().is_empty());
    assert!(live.fx.chunk_ids().is_empty(), "chunks were stored");
}

/// Whether process `pid` is gone (or a zombie) within `limit`: a process sent SIGTERM ends
/// when the kernel next schedules it, so the check waits for that condition, polling.
fn ends_within(pid: &str, limit: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        // The state is the field after the parenthesised command name.
        let ended = state.map_or(true, |s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        });
        if ended || started.elapsed() > limit {
            return ended;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Asserts that libvirt runs no job (backup, block job) on the domain.
#[track_caller]
fn assert_no_job(vm: &TestVm) {
    let job = virsh_ok(&["domjobinfo", &vm.name]);
    let job_type = job
        .lines()
        .find_map(|l| l.strip_prefix("Job type:"))
        .map(str::trim);
    assert_eq!(
        job_type,
        Some("None"),
        "a libvirt job is still active:\n{job}"
    );
}

#[test]
fn failing_hook_aborts_and_merges_back() {
    let vm = TestVm::start("failing_hook", &[standard_disk(Format::Raw, 700)]);
    let live = Live::new();
    let scratch = vm.subdir("scratch");
    let failing = |name: &str, frozen: &[String], copied: &[String]| {
        Hook::new(live.fx.tmp.path(), name, frozen, copied)
    };

    // Overlay mode, the hook fails while frozen (after writing B): no copy, no snapshot.
    let hook = failing(
        "frozen-fails",
        &[write_cmd(&vm, 0, B), "exit 3".to_owned()],
        &[],
    );
    live.backup(&vm, &["--hook", &hook.arg()]).error_line(&[]);
    hook.assert_calls(&vm, &["frozen"]);
    live.assert_clean(&vm, &[]);
    assert!(
        live.listed_snapshots().is_empty(),
        "an aborted backup was published"
    );
    assert!(
        live.fx.chunk_ids().is_empty(),
        "the copy ran after the hook failed"
    );

    // Overlay mode, the hook fails after the copy: nothing is published (the chunks stay for a
    // later backup to reuse), and the domain is merged back all the same.
    let hook = failing("copied-fails", &[], &["exit 5".to_owned()]);
    live.backup(&vm, &["--hook", &hook.arg()]).error_line(&[]);
    hook.assert_calls(&vm, &["frozen", "copied"]);
    live.assert_clean(&vm, &[]);
    let published = live.listed_snapshots().len();
    assert_eq!(
        published, 0,
        "a backup whose copied hook failed was published"
    );

    // Push mode, the hook fails while frozen: the job is ended and its scratch file removed.
    let hook = failing("push-frozen-fails", &["exit 4".to_owned()], &[]);
    with_push_args(&scratch, &hook, |args| live.backup(&vm, args)).error_line(&[]);
    hook.assert_calls(&vm, &["frozen"]);
    live.assert_clean(&vm, &[&scratch]);
    assert!(dir_names(&scratch).is_empty(), "scratch files left");
    assert_eq!(
        live.listed_snapshots().len(),
        published,
        "an aborted push backup was published"
    );
    assert_no_job(&vm);

    vm.shutdown_hard();
    let mut expected = vm.disk(0).initial.clone();
    apply(&mut expected, B);
    assert_image_eq(&vm.base_bytes(0), &expected, "base after aborted backups");
}

/// SIGINT, SIGHUP or SIGTERM while frozen (sent by the `frozen` hook): ferry stops before
/// publishing, ends a hook still running, merges the domain back (overlay mode) or ends the
/// job and removes its scratch file (push mode), exits with 128 + the signal's number naming
/// it, and the next backup works.
#[test]
fn signal_while_frozen_stops_cleanly() {
    let vm = TestVm::start("signal_frozen", &[standard_disk(Format::Raw, 900)]);
    let live = Live::new();
    let scratch = vm.subdir("scratch");
    let signalling = |signal: &str| {
        Hook::new(
            live.fx.tmp.path(),
            &format!("sig{signal}"),
            &[format!(r#"kill -{signal} "$FERRY_PID""#)],
            &[],
        )
    };

    let hook = signalling("INT");
    live.backup(&vm, &["--hook", &hook.arg()])
        .interrupted_by("SIGINT", 130);
    hook.assert_calls(&vm, &["frozen"]);
    live.assert_clean(&vm, &[]);

    // A hook that would run for minutes: ferry ends its whole process group and stops.
    let sleeper = live.fx.path("sleeper.pid");
    let hook = Hook::new(
        live.fx.tmp.path(),
        "sigHUP-sleeping",
        &[
            format!(
                "sleep 300 & echo $! > {}",
                sh_quote(&sleeper.display().to_string())
            ),
            r#"kill -HUP "$FERRY_PID""#.to_owned(),
            "wait".to_owned(),
        ],
        &[],
    );
    live.backup(&vm, &["--hook", &hook.arg()])
        .interrupted_by("SIGHUP", 129);
    live.assert_clean(&vm, &[]);
    let pid = std::fs::read_to_string(&sleeper).unwrap();
    assert!(
        ends_within(pid.trim(), std::time::Duration::from_secs(10)),
        "the hook's child {} outlived ferry",
        pid.trim()
    );

    let hook = signalling("TERM");
    with_push_args(&scratch, &hook, |args| live.backup(&vm, args)).interrupted_by("SIGTERM", 143);
    hook.assert_calls(&vm, &["frozen"]);
    live.assert_clean(&vm, &[&scratch]);
    assert!(dir_names(&scratch).is_empty(), "scratch files left");
    assert_no_job(&vm);

    assert!(
        live.listed_snapshots().is_empty(),
        "an interrupted backup was published"
    );
    assert_eq!(vm.state(), "running");
    write(&vm, 0, A);
    let report = live.backup_ok(&vm, &[]);
    live.assert_clean(&vm, &[]);
    let restored = live.fx.path("restored");
    live.restore_disk(&snapshot_of(&report, &vm.bases()), "vda", &restored);
    let mut expected = vm.disk(0).initial.clone();
    apply(&mut expected, A);
    assert_image_eq(
        &image_bytes(&restored, Format::Raw),
        &expected,
        "restored vda",
    );
}

// ---------------------------------------------------------------------------------------------
// Push mode, offline, selection

/// `f` given the push-mode arguments: scratch files in `scratch`, `hook` at each phase.
fn with_push_args<T>(scratch: &Path, hook: &Hook, f: impl FnOnce(&[&str]) -> T) -> T {
    let scratch_arg = scratch.display().to_string();
    let hook_arg = hook.arg();
    f(&[
        "--mode",
        "push",
        "--scratch-dir",
        &scratch_arg,
        "--hook",
        &hook_arg,
    ])
}

/// A push-mode backup with scratch files in `scratch` and `hook`, which must succeed and leave
/// the domain on its own disks with no scratch file; its report.
fn push_backup(live: &Live, vm: &TestVm, scratch: &Path, hook: &Hook) -> Value {
    let report = with_push_args(scratch, hook, |args| live.backup_ok(vm, args));
    live.assert_clean(vm, &[scratch]);
    report
}

/// Restores disk vda of the snapshot `report` names (of the VM's own disks, as a raw image)
/// and checks it with [`assert_a_not_b`]; returns the restored bytes and the expected content.
fn assert_point_in_time(live: &Live, vm: &TestVm, report: &Value) -> (Vec<u8>, Vec<u8>) {
    let sid = snapshot_of(report, &vm.bases());
    let restored = live.fx.path("restored");
    live.restore_disk(&sid, "vda", &restored);
    let got = image_bytes(&restored, Format::Raw);
    let expected = assert_a_not_b(vm, &got);
    (got, expected)
}

/// Checks that `got`, disk vda as restored, is its initial content with pattern A (written
/// before the backup) and without pattern B (written while frozen); returns that content.
#[track_caller]
fn assert_a_not_b(vm: &TestVm, got: &[u8]) -> Vec<u8> {
    let initial = &vm.disk(0).initial;
    let mut expected = initial.clone();
    apply(&mut expected, A);
    assert_has(got, A, "restored: pattern A");
    assert_lacks(got, initial, B, "restored: pattern B");
    assert_image_eq(got, &expected, "restored vda");
    expected
}

#[test]
fn push_mode_point_in_time() {
    let vm = TestVm::start("push", &[standard_disk(Format::Raw, 800)]);
    let live = Live::new();
    let scratch = vm.subdir("scratch");
    write(&vm, 0, A);
    let blk = live.fx.path("frozen-domblklist.txt");
    let listing = live.fx.path("frozen-scratch.txt");
    let hook = Hook::new(
        live.fx.tmp.path(),
        "hook",
        &[
            vm.domblklist_command(&blk),
            format!(
                "ls -A {} > {}",
                sh_quote(&scratch.display().to_string()),
                sh_quote(&listing.display().to_string())
            ),
            write_cmd(&vm, 0, B),
        ],
        &[],
    );
    let report = push_backup(&live, &vm, &scratch, &hook);
    assert!(dir_names(&scratch).is_empty(), "scratch files left");
    hook.assert_calls(&vm, &["frozen", "copied"]);
    // While frozen: no overlay, and the scratch file in --scratch-dir.
    assert_eq!(recorded_domblklist(&blk), vm.bases());
    let listed = std::fs::read_to_string(&listing).unwrap();
    assert!(
        listed
            .lines()
            .any(|n| n.starts_with(&format!("vda.raw{SCRATCH_MARK}"))),
        "no vda.raw{SCRATCH_MARK}* file in the scratch directory while frozen: {listed:?}"
    );

    assert_eq!(num(&report["disks"][0], "virtual_size"), DISK, "{report:#}");
    let (_, mut expected) = assert_point_in_time(&live, &vm, &report);

    vm.shutdown_hard();
    apply(&mut expected, B);
    assert_image_eq(&vm.base_bytes(0), &expected, "base after a push backup");
}

/// A disk whose image file is not the whole disk (its `dependency`, `what` in the error):
/// overlay mode and an offline backup refuse it, naming the dependency and pointing to push
/// mode, and leave the domain as it was; push mode backs up what the guest sees at the point
/// in time. Returns the restored content.
fn dependency_refused_by_overlay_and_backed_up_by_push(
    test: &str,
    spec: DiskSpec,
    dependency: &str,
    what: &str,
) -> Vec<u8> {
    let vm = TestVm::start(test, &[spec]);
    let live = Live::new();
    let dependency = vm.dir().join(dependency).display().to_string();
    let line = live
        .backup(&vm, &[])
        .error_line(&["vda", &dependency, "--mode push"]);
    assert!(line.contains(what), "{line}");
    live.assert_clean(&vm, &[]);
    assert_eq!(vm.state(), "running");
    assert!(live.listed_snapshots().is_empty());

    write(&vm, 0, A);
    let hook = Hook::new(live.fx.tmp.path(), "hook", &[write_cmd(&vm, 0, B)], &[]);
    let scratch = vm.subdir("scratch");
    let report = push_backup(&live, &vm, &scratch, &hook);
    let (got, _) = assert_point_in_time(&live, &vm, &report);

    vm.shutdown_hard();
    let line = live
        .backup(&vm, &[])
        .error_line(&["vda", &dependency, "shut off"]);
    assert!(
        line.contains("--mode push") && line.contains(what),
        "{line}"
    );
    got
}

/// A disk made from a template: a qcow2 over a raw backing image.
#[test]
fn backing_chain_refused_by_overlay_mode_and_backed_up_by_push_mode() {
    const TOP: (u8, u64, u64) = (0x5c, 3 * MIB, 2 * MIB);
    let spec = DiskSpec {
        format: Format::Qcow2,
        backing: true,
        ..standard_disk(Format::Raw, 1200)
    }
    .with_top(TOP.1, TOP.2, TOP.0);
    let got = dependency_refused_by_overlay_and_backed_up_by_push(
        "backing_chain",
        spec,
        "vda.backing.raw",
        "backing image",
    );
    assert_has(&got, TOP, "restored: the qcow2 layer");
}

/// A qcow2 whose guest data lives in an external data file: copying the qcow2 file alone
/// would store only its metadata.
#[test]
fn external_data_file_refused_by_overlay_mode_and_backed_up_by_push_mode() {
    let spec = DiskSpec {
        format: Format::Qcow2,
        data_file: true,
        ..standard_disk(Format::Raw, 1300)
    };
    dependency_refused_by_overlay_and_backed_up_by_push(
        "data_file",
        spec,
        "vda.data",
        "external data file",
    );
}

/// A floppy and an empty CD-ROM drive beside the disk are neither backed up nor touched, in
/// overlay and push mode: libvirt gives every writable device left out of a snapshot's XML
/// an external overlay of its own, which nothing would ever merge back.
#[test]
fn removable_drives_are_left_alone() {
    let vm = TestVm::start_with_removable_drives("removable", &[standard_disk(Format::Raw, 1400)]);
    let live = Live::new();
    let scratch = vm.subdir("scratch");
    let floppy = vm.dir().join("fda.img").display().to_string();
    let drives = || virsh_ok(&["domblklist", &vm.name, "--details"]);
    let inactive = || virsh_ok(&["dumpxml", "--inactive", &vm.name]);
    let (drives_before, inactive_before) = (drives(), inactive());
    assert!(drives_before.contains(&floppy), "{drives_before}");
    let files_before = dir_names(&vm.dir());

    let hook = Hook::new(live.fx.tmp.path(), "hook", &[], &[]);
    for report in [
        live.backup_ok(&vm, &[]),
        push_backup(&live, &vm, &scratch, &hook),
    ] {
        assert_eq!(disk_names(&report), ["vda"], "{report:#}");
        live.assert_clean(&vm, &[]);
        assert_eq!(drives(), drives_before, "the drives changed");
        assert_eq!(inactive(), inactive_before, "the inactive XML changed");
        assert_eq!(dir_names(&vm.dir()), files_before, "files appeared");
    }
}

/// A block disk (a loop device here, an LVM volume in production). Beside a device is /dev, so
/// overlay mode needs --overlay-dir and push mode --scratch-dir: without them each is refused,
/// naming the flag and changing nothing. With them both back up the point in time and the
/// domain returns to its device. Shut off, the device is read offline.
#[test]
fn block_disk_in_overlay_and_push_mode() {
    let spec = DiskSpec {
        block: true,
        ..standard_disk(Format::Raw, 1500)
    };
    let vm = TestVm::start("block_disk", &[spec]);
    let live = Live::new();
    let device = vm.disk(0).path.display().to_string();
    let overlays = vm.subdir("overlays");
    let scratch = vm.subdir("scratch");
    for (args, flag) in [
        (&[][..], "--overlay-dir"),
        (&["--mode", "push"][..], "--scratch-dir"),
    ] {
        live.backup(&vm, args).error_line(&[&device, flag]);
        live.assert_clean(&vm, &[]);
        assert_no_job(&vm);
    }
    let restored = |report: &Value, name: &str| {
        let file = live.fx.path(name);
        live.restore_disk(&snapshot_of(report, &vm.bases()), "vda", &file);
        image_bytes(&file, Format::Raw)
    };

    // Overlay mode: A before the backup is in it, B written while frozen is not.
    write(&vm, 0, A);
    let overlays_arg = overlays.display().to_string();
    let hook = Hook::new(live.fx.tmp.path(), "b", &[write_cmd(&vm, 0, B)], &[]);
    let report = live.backup_ok(
        &vm,
        &["--overlay-dir", &overlays_arg, "--hook", &hook.arg()],
    );
    live.assert_clean(&vm, &[&overlays]);
    let mut expected = vm.disk(0).initial.clone();
    apply(&mut expected, A);
    assert_image_eq(&restored(&report, "overlay.raw"), &expected, "overlay mode");

    // Push mode: B (merged back from the overlay) is in it, C written while frozen is not.
    let hook = Hook::new(live.fx.tmp.path(), "c", &[write_cmd(&vm, 0, C)], &[]);
    let report = push_backup(&live, &vm, &scratch, &hook);
    apply(&mut expected, B);
    assert_image_eq(&restored(&report, "push.raw"), &expected, "push mode");

    // Offline: the device as it is.
    vm.shutdown_hard();
    apply(&mut expected, C);
    assert_image_eq(
        &vm.base_bytes(0),
        &expected,
        "the device after both backups",
    );
    let report = live.backup_ok(&vm, &[]);
    assert_image_eq(&restored(&report, "offline.raw"), &expected, "offline");
}

#[test]
fn shut_off_domain_backs_up_offline() {
    let vm = TestVm::define(
        "shut_off",
        &[
            standard_disk(Format::Raw, 900),
            standard_disk(Format::Qcow2, 1000),
        ],
    );
    assert_eq!(vm.state(), "shut off");
    let live = Live::new();
    let report = live.backup_ok(&vm, &[]);
    live.assert_clean(&vm, &[]);
    assert_eq!(vm.state(), "shut off", "the backup started the domain");
    let sid = snapshot_of(&report, &vm.bases());

    // Each disk is its image file, byte for byte.
    let out = live.fx.path("restored");
    live.fx.restore(&sid, &out, &[]).success();
    assert_eq!(dir_names(&out), ["domain.xml", "vda", "vdb"]);
    assert_same_file(&vm.disk(0).path, &out.join("vda"));
    assert_same_file(&vm.disk(1).path, &out.join("vdb"));
    assert_image_eq(
        &image_bytes(&out.join("vdb"), Format::Qcow2),
        &vm.disk(1).initial,
        "restored vdb",
    );
}

#[test]
fn disk_selection_errors() {
    let vm = TestVm::start("disk_selection", &[standard_disk(Format::Raw, 1100)]);
    let live = Live::new();
    for extra in [&["--disk", "vdz"][..], &["--disk", "vda", "--disk", "vdz"]] {
        live.backup(&vm, extra).error_line(&["vdz"]);
        live.assert_clean(&vm, &[]);
        assert_eq!(vm.state(), "running");
        assert!(live.listed_snapshots().is_empty());
        assert!(live.fx.chunk_ids().is_empty(), "chunks were stored");
    }
}
