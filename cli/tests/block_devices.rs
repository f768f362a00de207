//! Block devices (loop devices over files in the test's directory) as backup sources and
//! restore targets: every byte is read (a device has no holes) and zero chunks are recorded,
//! not stored; a restore refuses a device without --force and one too small, and with --force
//! writes every byte, zeros included, over what the device held.

mod common;

use common::*;

const MIB: u64 = 1 << 20;

/// An 8 MiB disk: random, a written-zero chunk, text, and random up to the end.
fn disk_bytes() -> Vec<u8> {
    let mut data = random_bytes(31, (8 * MIB) as usize);
    data[MIB as usize..2 * MIB as usize].fill(0);
    data[3 * MIB as usize..5 * MIB as usize].copy_from_slice(&text_bytes(32, 2 * MIB as usize));
    data
}

#[test]
fn a_loop_device_backs_up_and_restores_onto_another() {
    let fx = Fixture::with_chunk_size("1M");
    let data = disk_bytes();
    let source_file = fx.path("source.img");
    write_image(&source_file, 8 * MIB, &[(0, &data)]);
    let source = LoopDevice::attach(&source_file);

    let report = fx.backup(&source.device, &["--name", "loopdisk"]);
    assert_eq!(num(&report, "bytes_read"), 8 * MIB, "{report:#}");
    assert_eq!(num(&report, "chunks_total"), 8, "{report:#}");
    assert_eq!(num(&report, "chunks_zero"), 1, "{report:#}");
    assert_eq!(num(&report, "chunks_new"), 7, "{report:#}");
    assert_eq!(report["disks"][0]["source"], source.arg(), "{report:#}");
    let sid = text(&report, "snapshot").to_owned();
    fx.verify(&["--read-data"]).success();

    // A device that holds something else: 0xff everywhere, so zeros must really be written.
    let target_file = fx.path("target.img");
    write_image(
        &target_file,
        8 * MIB,
        &[(0, &vec![0xff; (8 * MIB) as usize])],
    );
    let target = LoopDevice::attach(&target_file);
    fx.restore(&sid, &target.device, &[])
        .error_line(&[target.arg(), "block device", "--force"]);
    assert_eq!(
        std::fs::read(&target_file).unwrap(),
        vec![0xff; (8 * MIB) as usize]
    );

    // Through a symbolic link, as /dev/disk/by-id/… and /dev/VG/LV name devices.
    let link = fx.path("target-link");
    std::os::unix::fs::symlink(&target.device, &link).unwrap();
    let restored = fx.restore(&sid, &link, &["--force"]).success().json();
    assert!(link.is_symlink(), "the link was replaced");
    assert_eq!(num(&restored, "virtual_size"), 8 * MIB, "{restored:#}");
    let written = std::fs::read(&target.device).unwrap();
    assert!(
        written == data,
        "the device does not hold the image's bytes"
    );
    // Nothing was left beside the device (no temporary file in /dev).
    assert!(
        !std::fs::read_dir("/dev").unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("ferry-restore")),
        "a temporary file was left in /dev"
    );

    // A device smaller than the disk is refused before anything is written.
    let small_file = fx.path("small.img");
    write_image(
        &small_file,
        4 * MIB,
        &[(0, &vec![0x11; (4 * MIB) as usize])],
    );
    let small = LoopDevice::attach(&small_file);
    fx.restore(&sid, &small.device, &["--force"])
        .error_line(&[small.arg(), "holds 4194304 bytes"]);
    assert_eq!(
        std::fs::read(&small_file).unwrap(),
        vec![0x11; (4 * MIB) as usize]
    );
}
