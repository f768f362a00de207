//! Memory stays bounded by the pipeline's buffers, whatever the image size: the peak resident
//! size of a backup, and of a restore, of an image five times larger than the backup's buffer
//! pool stays under the bound the README documents (pool plus in-flight objects, about 310 MiB
//! for a backup with 4 MiB chunks). A pipeline that queued or kept chunks without bound would
//! grow past it with the image.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use common::{Fixture, assert_same_file, text};

const MIB: u64 = 1 << 20;
/// Dense random data: every chunk is read, hashed, compressed and stored.
const IMAGE: u64 = 1024 * MIB;
/// Peak resident size allowed for a backup: the 192 MiB buffer pool, the objects being
/// compressed or uploaded, the index and the process itself.
const BACKUP_BOUND: u64 = 384 * MIB;
/// Peak resident size allowed for a restore: one chunk buffer per fetch thread (8) and the
/// objects being decoded.
const RESTORE_BOUND: u64 = 160 * MIB;

/// Runs `ferry ARGS` to its end; its exit status, stderr and peak resident size in bytes.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also returns its resource usage"
)]
fn peak_rss<S: AsRef<OsStr>>(args: &[S]) -> (ExitStatus, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the ferry binary");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data the kernel fills in; `pid` is our unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    // `child` is reaped: dropping it does not wait again.
    (
        ExitStatus::from_raw(status),
        stderr,
        usage.ru_maxrss as u64 * 1024,
    )
}

#[test]
fn backup_and_restore_of_a_dense_image_stay_within_the_memory_bound() {
    let fx = Fixture::with_chunk_size("4M");
    let image = fx.path("dense.img");
    let copied = std::io::copy(
        &mut File::open("/dev/urandom").unwrap().take(IMAGE),
        &mut File::create(&image).unwrap(),
    )
    .unwrap();
    assert_eq!(copied, IMAGE);

    let rest = [OsStr::new("--image"), image.as_os_str()];
    let args = fx.args("backup", &rest);
    let (status, stderr, peak) = peak_rss(&args);
    assert!(status.success(), "backup failed: {status:?}\n{stderr}");
    assert!(
        peak <= BACKUP_BOUND,
        "backup of {} MiB peaked at {} MiB resident (bound {} MiB)",
        IMAGE / MIB,
        peak / MIB,
        BACKUP_BOUND / MIB
    );

    let listed = fx.run("list", &["--json"]).success().json();
    let sid = text(&listed["snapshots"][0], "snapshot").to_owned();
    let target = fx.path("restored.img");
    let rest = [OsStr::new(&sid), OsStr::new("--to"), target.as_os_str()];
    let args = fx.args("restore", &rest);
    let (status, stderr, peak) = peak_rss(&args);
    assert!(status.success(), "restore failed: {status:?}\n{stderr}");
    assert!(
        peak <= RESTORE_BOUND,
        "restore of {} MiB peaked at {} MiB resident (bound {} MiB)",
        IMAGE / MIB,
        peak / MIB,
        RESTORE_BOUND / MIB
    );
    assert_same_file(&image, &target);
}
