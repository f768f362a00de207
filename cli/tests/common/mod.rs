//! Shared helpers of the `ferry` CLI integration tests: running the binary, a repository per
//! test in its own temporary directory, deterministic image builders and repository file
//! access (`REPO/config`, `REPO/chunks/<hh>/<id>`, `REPO/snapshots/<sid>`).
//!
//! Every test crate uses a different subset of these helpers.
#![allow(dead_code)]

/// The live-VM harness (libvirt domains, qemu-io writes); used by `live_vm.rs`.
pub mod vm;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// The chunk size most tests use (`--chunk-size 64K`), the smallest the format allows.
pub const CHUNK: u64 = 64 * KIB;

/// Exit status of `ferry verify` when it finds damage.
pub const EXIT_DAMAGED: i32 = 3;

/// The outcome of one `ferry` invocation.
#[derive(Debug)]
pub struct Run {
    pub cmdline: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The result of `ferry ARGS` that produced `output`.
    pub fn of<S: AsRef<OsStr>>(args: &[S], output: &std::process::Output) -> Run {
        let cmdline = std::iter::once("ferry".to_owned())
            .chain(
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned()),
            )
            .collect::<Vec<_>>()
            .join(" ");
        Run {
            cmdline,
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit status 0 and returns the run.
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "expected success\n{self}");
        self
    }

    /// Asserts exit status `code` and returns the run.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit status\n{self}");
        self
    }

    /// Asserts a failure (exit status 1, the status of every ordinary error) whose stderr has
    /// an error line containing each of `needles`; returns that line.
    #[track_caller]
    pub fn error_line(&self, needles: &[&str]) -> String {
        assert_eq!(self.code, 1, "expected exit status 1\n{self}");
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("ferry: error: "))
            .unwrap_or_else(|| panic!("no `ferry: error:` line on stderr\n{self}"));
        for needle in needles {
            assert!(
                line.contains(needle),
                "error line does not mention {needle:?}\n{self}"
            );
        }
        line.to_owned()
    }

    /// Asserts that a signal stopped the command after its cleanup: exit status 128 + the
    /// signal's number, and an error line saying which signal (`name`, e.g. `SIGINT`).
    #[track_caller]
    pub fn interrupted_by(&self, name: &str, code: i32) -> String {
        assert_eq!(self.code, code, "expected exit status {code}\n{self}");
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("ferry: error: "))
            .unwrap_or_else(|| panic!("no `ferry: error:` line on stderr\n{self}"));
        assert!(
            line.contains(&format!("interrupted by {name}")),
            "the error line does not name {name}\n{self}"
        );
        line.to_owned()
    }

    /// For a failed `--json` run: stdout holds only the error document, no report.
    #[track_caller]
    pub fn assert_only_error_document(&self) {
        let document = self.json();
        let keys: Vec<&String> = document.as_object().expect("an object").keys().collect();
        assert_eq!(
            keys,
            ["error", "exit_status"],
            "a report was printed\n{self}"
        );
        assert_eq!(document["exit_status"], self.code, "{self}");
    }

    /// The JSON object printed on stdout (`--json`).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e})\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit status: {}\n--- stdout\n{}--- stderr\n{}---",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `ferry ARGS` with `FERRY_REPO` unset (so the caller's environment cannot leak in).
#[track_caller]
pub fn ferry<S: AsRef<OsStr>>(args: &[S]) -> Run {
    ferry_with_env(args, &[])
}

/// The command `ferry ARGS` with `FERRY_REPO` unset, `env` set, no stdin and piped output.
fn ferry_command<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env_remove("FERRY_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// Runs `ferry ARGS` with extra environment variables. Checks what must hold for every run:
/// the process exited (no signal) and nothing panicked.
#[track_caller]
pub fn ferry_with_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)]) -> Run {
    let output = ferry_command(args, env)
        .output()
        .expect("run the ferry binary");
    exited(args, &output, "ferry was killed by a signal")
}

/// Runs `ferry ARGS` (environment as [`ferry_with_env`]), sends it `signal` (a `kill -s`
/// name such as `INT`) as soon as `ready()` holds, and returns the run once ferry has exited.
/// Panics if ferry ends before `ready()` held, or is ended by the signal itself instead of
/// handling it (or panics).
#[track_caller]
pub fn ferry_interrupted<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &OsStr)],
    signal: &str,
    ready: impl Fn() -> bool,
) -> Run {
    let child = spawn_until(args, env, ready, "signal");
    let kill = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -s {signal} failed");
    let output = child.wait_with_output().expect("collect ferry's output");
    exited(
        args,
        &output,
        "ferry was ended by the signal instead of handling it",
    )
}

/// Runs `ferry ARGS` (environment as [`ferry_with_env`]) and kills it with SIGKILL as soon as
/// `ready()` holds, as a crash or `kill -9` would end it: nothing of its own cleanup runs.
/// Panics if ferry ends before `ready()` held.
#[track_caller]
pub fn ferry_killed<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)], ready: impl Fn() -> bool) {
    let mut child = spawn_until(args, env, ready, "kill");
    child.kill().expect("SIGKILL ferry");
    let status = child.wait().expect("reap ferry");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "ferry was not killed: {status:?}"
    );
}

/// Starts `ferry ARGS` and returns it once `ready()` holds. Panics if ferry ends before, naming
/// what the moment was for (`"signal"`, `"kill"`).
#[track_caller]
fn spawn_until<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &OsStr)],
    ready: impl Fn() -> bool,
    moment: &str,
) -> std::process::Child {
    let mut child = ferry_command(args, env)
        .spawn()
        .expect("run the ferry binary");
    // Waits for a condition, not for time: the pause only keeps the poll from spinning.
    while !ready() {
        if child.try_wait().expect("poll ferry").is_some() {
            let output = child.wait_with_output().expect("collect ferry's output");
            panic!(
                "ferry ended before the moment to {moment} it\n{}",
                Run::of(args, &output)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child
}

/// The run of `ferry ARGS` that produced `output`, after checking that ferry exited (else
/// panics with `killed`) and did not panic.
#[track_caller]
fn exited<S: AsRef<OsStr>>(args: &[S], output: &std::process::Output, killed: &str) -> Run {
    let run = Run::of(args, output);
    assert!(
        output.status.code().is_some(),
        "{killed} ({:?})\n{run}",
        output.status
    );
    assert!(!run.stderr.contains("panicked"), "ferry panicked\n{run}");
    run
}

/// A loop device over a file, detached on drop.
pub struct LoopDevice {
    pub device: PathBuf,
}

impl LoopDevice {
    /// Attaches `file` (which must exist) as a new loop device.
    pub fn attach(file: &Path) -> LoopDevice {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("run losetup");
        assert!(
            output.status.success(),
            "losetup --find --show {}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let device = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        LoopDevice {
            device: PathBuf::from(device),
        }
    }

    pub fn arg(&self) -> &str {
        self.device.to_str().unwrap()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// A JSON field as u64.
#[track_caller]
pub fn num(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key:?} is not a number in {value:#}"))
}

/// A JSON field as a string.
#[track_caller]
pub fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {value:#}"))
}

/// One test's world: a temporary directory holding a fresh repository (`REPO = tmp/repo`)
/// and whatever images and restore targets the test creates.
pub struct Fixture {
    pub tmp: TempDir,
    pub repo: PathBuf,
}

impl Fixture {
    /// A repository with 64 KiB chunks.
    pub fn new() -> Fixture {
        Fixture::with_chunk_size("64K")
    }

    /// A repository whose default chunk size is `size` (`ferry init --chunk-size`).
    pub fn with_chunk_size(size: &str) -> Fixture {
        let tmp = TempDir::new().expect("create a temporary directory");
        let repo = tmp.path().join("repo");
        let init = ferry(&[
            OsStr::new("init"),
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("--chunk-size"),
            OsStr::new(size),
            OsStr::new("--json"),
        ])
        .success()
        .json();
        assert_eq!(init["version"], 1, "{init:#}");
        Fixture { tmp, repo }
    }

    /// A path inside the test's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A new, empty directory inside the temporary directory (restore targets go there, so a
    /// test can check that nothing else was left in it).
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir(&dir).expect("create a directory");
        dir
    }

    /// The arguments `SUBCOMMAND --repo REPO ARGS`.
    pub fn args<'a, S: AsRef<OsStr>>(
        &'a self,
        subcommand: &'a str,
        args: &'a [S],
    ) -> Vec<&'a OsStr> {
        let mut all: Vec<&OsStr> = vec![
            OsStr::new(subcommand),
            OsStr::new("--repo"),
            self.repo.as_os_str(),
        ];
        all.extend(args.iter().map(AsRef::as_ref));
        all
    }

    /// `ferry SUBCOMMAND --repo REPO ARGS`.
    #[track_caller]
    pub fn run<S: AsRef<OsStr>>(&self, subcommand: &str, args: &[S]) -> Run {
        ferry(&self.args(subcommand, args))
    }

    /// `ferry backup --image IMAGE --json EXTRA`, which must succeed; its JSON report.
    #[track_caller]
    pub fn backup(&self, image: &Path, extra: &[&str]) -> Value {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--image"),
            image.as_os_str(),
            OsStr::new("--json"),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let report = self.run("backup", &args).success().json();
        let sid = text(&report, "snapshot");
        assert!(
            self.snapshot_path(sid).is_file(),
            "snapshot {sid} has no manifest file\n{report:#}"
        );
        report
    }

    /// `ferry restore SNAPSHOT --to TARGET EXTRA --json`.
    #[track_caller]
    pub fn restore(&self, snapshot: &str, target: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new(snapshot),
            OsStr::new("--to"),
            target.as_os_str(),
            OsStr::new("--json"),
        ];
        args.extend(extra.iter().map(OsStr::new));
        self.run("restore", &args)
    }

    /// A restore that must succeed; its JSON report.
    #[track_caller]
    pub fn restore_ok(&self, snapshot: &str, target: &Path) -> Value {
        let report = self.restore(snapshot, target, &[]).success().json();
        assert_eq!(text(&report, "snapshot").len(), 16, "{report:#}");
        report
    }

    /// `ferry verify --json ARGS`.
    #[track_caller]
    pub fn verify(&self, args: &[&str]) -> Run {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run("verify", &all)
    }

    /// Ids of the stored chunk objects (from the file names under `REPO/chunks`).
    pub fn chunk_ids(&self) -> BTreeSet<String> {
        chunk_ids_in(&self.repo)
    }

    /// Total size of the stored chunk objects.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_ids()
            .iter()
            .map(|id| file_len(&self.chunk_path(id)))
            .sum()
    }

    /// `REPO/chunks/<hh>/<id>`.
    pub fn chunk_path(&self, id: &str) -> PathBuf {
        chunk_path_in(&self.repo, id)
    }

    /// `REPO/snapshots/<sid>`.
    pub fn snapshot_path(&self, sid: &str) -> PathBuf {
        self.repo.join("snapshots").join(sid)
    }

    /// Ids of the manifests under `REPO/snapshots`, sorted.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.repo.join("snapshots"))
            .map(|entries| {
                entries
                    .map(|e| e.expect("read snapshots/").file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// SplitMix64: a tiny seeded generator, so every test image is the same on every run.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }
}

/// `len` pseudo-random (incompressible, never all-zero in practice) bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    SplitMix64(seed).fill(&mut buf);
    buf
}

/// `len` bytes of log-like text: compresses well, and no 64 KiB chunk of it repeats.
pub fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    use std::fmt::Write;
    let mut rng = SplitMix64(seed);
    let words = [
        "kernel",
        "sshd",
        "accepted",
        "from",
        "GET",
        "/api/items",
        "done",
    ];
    let mut s = String::with_capacity(len + 128);
    let mut line = 0u64;
    while s.len() < len {
        let r = rng.next_u64();
        let _ = writeln!(
            s,
            "2026-01-01T00:00:{:02}Z host{} {}: {} {} seq={line}",
            r % 60,
            (r >> 8) % 4,
            words[(r >> 16) as usize % words.len()],
            words[(r >> 24) as usize % words.len()],
            words[(r >> 32) as usize % words.len()],
        );
        line += 1;
    }
    s.truncate(len);
    s.into_bytes()
}

/// Creates `path` as a file of `size` bytes (a hole wherever nothing is written) and writes
/// each `(offset, bytes)` region into it.
pub fn write_image(path: &Path, size: u64, regions: &[(u64, &[u8])]) {
    let file = File::create(path).expect("create an image");
    file.set_len(size).expect("size the image");
    for (offset, bytes) in regions {
        assert!(offset + bytes.len() as u64 <= size, "region past the end");
        file.write_all_at(bytes, *offset).expect("write the image");
    }
    file.sync_all().expect("sync the image");
}

/// Overwrites `bytes` at `offset` of an existing file.
pub fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    file.write_all_at(bytes, offset).expect("overwrite");
}

/// XORs the byte at `offset` of `path` with `mask`.
pub fn xor_byte(path: &Path, offset: u64, mask: u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for xor");
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).expect("read a byte");
    b[0] ^= mask;
    file.write_all_at(&b, offset).expect("write a byte");
}

/// Truncates `path` to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncate")
        .set_len(len)
        .expect("truncate");
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len()
}

/// Bytes allocated on disk for `path` (st_blocks * 512).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .blocks()
        * 512
}

/// Permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// The hex chunk id of raw chunk bytes: BLAKE3, as the repository format defines it.
pub fn chunk_id(raw: &[u8]) -> String {
    blake3::hash(raw).to_hex().to_string()
}

/// Reads `len` bytes at `offset`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read {} at {offset}: {e}", path.display()));
    buf
}

/// Asserts that two files have the same length and bytes (read 1 MiB at a time, so a failure
/// names the first differing offset instead of dumping the files).
#[track_caller]
pub fn assert_same_file(expected: &Path, actual: &Path) {
    let len = file_len(expected);
    assert_eq!(
        file_len(actual),
        len,
        "{} and {} differ in length",
        expected.display(),
        actual.display()
    );
    assert_same_regions(expected, actual, &[(0, len)]);
}

/// Asserts that `(offset, len)` regions of two files hold the same bytes.
#[track_caller]
pub fn assert_same_regions(expected: &Path, actual: &Path, regions: &[(u64, u64)]) {
    let (a, b) = (File::open(expected).unwrap(), File::open(actual).unwrap());
    let mut buf_a = vec![0u8; MIB as usize];
    let mut buf_b = vec![0u8; MIB as usize];
    for &(start, len) in regions {
        let mut offset = start;
        while offset < start + len {
            let n = (start + len - offset).min(MIB) as usize;
            a.read_exact_at(&mut buf_a[..n], offset).unwrap();
            b.read_exact_at(&mut buf_b[..n], offset).unwrap();
            if buf_a[..n] != buf_b[..n] {
                let at = (0..n).find(|&i| buf_a[i] != buf_b[i]).unwrap() as u64 + offset;
                panic!(
                    "{} and {} differ at offset {at}",
                    expected.display(),
                    actual.display()
                );
            }
            offset += n as u64;
        }
    }
}

/// Names in `dir`, sorted (hidden ones included).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts that a failed restore to `target` left nothing behind: no file under the target's
/// name and no `.NAME.ferry-restore-*` temporary file beside it.
#[track_caller]
pub fn assert_no_restore_leftovers(target: &Path) {
    assert!(
        !target.exists(),
        "a failed restore left {}",
        target.display()
    );
    let name = target.file_name().unwrap().to_string_lossy();
    let temp_prefix = format!(".{name}.ferry-restore-");
    let dir = target.parent().unwrap();
    let leftovers: Vec<String> = dir_names(dir)
        .into_iter()
        .filter(|n| n.starts_with(&temp_prefix))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a failed restore left temporary files in {}: {leftovers:?}",
        dir.display()
    );
}

/// The whole life of a repository at `repo` (any URL), through `run` (which adds what the
/// backend needs, e.g. credentials): init, a backup, an unchanged backup that writes no chunk, a
/// backup after one 1 MiB region changed that writes exactly one, list, verify with data,
/// and a byte-identical restore. `dir` holds the images.
pub fn exercise_repository(repo: &str, dir: &Path, run: impl Fn(&[&str]) -> Run) {
    let image = dir.join("disk.img");
    let data = [random_bytes(1, 3 << 20), text_bytes(2, 2 << 20)].concat();
    write_image(&image, 24 << 20, &[(0, &data), (20 << 20, b"tail")]);
    let image_arg = image.to_str().unwrap();
    let backup = || {
        run(&["backup", "--image", image_arg, "--repo", repo, "--json"])
            .success()
            .json()
    };

    run(&["init", "--repo", repo, "--chunk-size", "1M"]).success();
    let first = backup();
    assert!(num(&first, "chunks_new") >= 5, "{first}");
    let second = backup();
    assert_eq!(
        num(&second, "chunks_new"),
        0,
        "an unchanged image writes no chunk"
    );
    overwrite(&image, MIB, &random_bytes(3, MIB as usize));
    let third = backup();
    assert_eq!(num(&third, "chunks_new"), 1, "one changed chunk: {third}");

    let listed = run(&["list", "--repo", repo, "--json"]).success().json();
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 3);
    run(&["verify", "--repo", repo, "--read-data"]).success();

    let target = dir.join("restored.img");
    let sid = text(&third, "snapshot");
    run(&[
        "restore",
        "--repo",
        repo,
        sid,
        "--to",
        target.to_str().unwrap(),
    ])
    .success();
    assert_same_file(&image, &target);

    // Retention: a dry run changes nothing, then the two older snapshots go and the newest
    // still verifies and restores.
    let forget = |extra: &[&str]| {
        let mut args = vec!["forget", "--repo", repo, "--keep-last", "1", "--json"];
        args.extend_from_slice(extra);
        run(&args).success().json()
    };
    assert_eq!(num(&forget(&["--dry-run"]), "removed"), 2);
    let listed = run(&["list", "--repo", repo, "--json"]).success().json();
    assert_eq!(
        listed["snapshots"].as_array().unwrap().len(),
        3,
        "dry run removed something"
    );
    assert_eq!(num(&forget(&[]), "removed"), 2);
    let listed = run(&["list", "--repo", repo, "--json"]).success().json();
    let left: Vec<&str> = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| text(s, "snapshot"))
        .collect();
    assert_eq!(left, [sid]);
    run(&["verify", "--repo", repo, "--read-data"]).success();

    // Garbage collection: only the chunk the change replaced is unreferenced now.
    let dry = run(&["gc", "--repo", repo, "--dry-run", "--json"])
        .success()
        .json();
    assert_eq!(num(&dry, "chunks_deleted"), 1, "{dry}");
    let swept = run(&["gc", "--repo", repo, "--json"]).success().json();
    assert_eq!(num(&swept, "chunks_deleted"), 1, "{swept}");
    assert_eq!(num(&swept, "bytes_freed"), num(&dry, "bytes_freed"));
    let again = run(&["gc", "--repo", repo, "--json"]).success().json();
    assert_eq!(num(&again, "chunks_deleted"), 0);
    run(&["verify", "--repo", repo, "--read-data"]).success();
    std::fs::remove_file(&target).unwrap();
    run(&[
        "restore",
        "--repo",
        repo,
        "latest",
        "--to",
        target.to_str().unwrap(),
    ])
    .success();
    assert_same_file(&image, &target);
}

/// Ids of the chunk objects stored in the repository whose files are under `repo` (a local
/// repository, or the directory behind an NFS export or an S3 test bucket).
pub fn chunk_ids_in(repo: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let Ok(dirs) = std::fs::read_dir(repo.join("chunks")) else {
        return ids;
    };
    for dir in dirs {
        let dir = dir.expect("read chunks/").path();
        for file in std::fs::read_dir(&dir).expect("read a chunk directory") {
            let name = file.expect("read a chunk directory").file_name();
            let name = name.to_string_lossy().into_owned();
            if !name.starts_with('.') {
                ids.insert(name);
            }
        }
    }
    ids
}

/// `REPO/chunks/<hh>/<id>` under the directory `repo`.
pub fn chunk_path_in(repo: &Path, id: &str) -> PathBuf {
    repo.join("chunks").join(&id[..2]).join(id)
}

/// Bit rot in the repository at `url`, whose files are under `local`: one byte flipped in 5 %
/// of its 100 chunks, two truncated, two deleted. verify names exactly those, restore refuses,
/// and after `verify --quarantine` and a new backup of the same source everything verifies and
/// restores again, and gc clears the quarantine.
pub fn exercise_bit_rot(url: &str, local: &Path, dir: &Path, run: impl Fn(&[&str]) -> Run) {
    let image = dir.join("big.img");
    write_image(
        &image,
        100 * CHUNK,
        &[(0, &random_bytes(77, 100 * CHUNK as usize))],
    );
    let image_arg = image.to_str().unwrap();
    run(&["init", "--repo", url, "--chunk-size", "64K"]).success();
    let first = run(&["backup", "--image", image_arg, "--repo", url, "--json"])
        .success()
        .json();
    let sid = text(&first, "snapshot").to_owned();
    let ids: Vec<String> = chunk_ids_in(local).into_iter().collect();
    assert_eq!(ids.len(), 100);
    let (flipped, rest) = ids.split_at(5);
    let (truncated, rest) = rest.split_at(2);
    let (deleted, _) = rest.split_at(2);
    for id in flipped {
        let path = chunk_path_in(local, id);
        xor_byte(&path, file_len(&path) / 2, 0x01);
    }
    for id in truncated {
        truncate(&chunk_path_in(local, id), 100);
    }
    for id in deleted {
        std::fs::remove_file(chunk_path_in(local, id)).unwrap();
    }
    let named = |report: &Value, kind: &str| -> BTreeSet<String> {
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == kind)
            .map(|p| text(p, "chunk").to_owned())
            .collect()
    };
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--repo", url, "--json"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let report = verify(&["--read-data"]).code(EXIT_DAMAGED).json();
    let corrupt: BTreeSet<String> = flipped.iter().chain(truncated).cloned().collect();
    assert_eq!(named(&report, "chunk_corrupt"), corrupt);
    assert_eq!(
        named(&report, "chunk_missing"),
        deleted.iter().cloned().collect()
    );
    let target = dir.join("big.restored");
    let target_arg = target.to_str().unwrap();
    run(&["restore", "--repo", url, &sid, "--to", target_arg]).error_line(&["chunk"]);
    assert!(!target.exists());

    let quarantined = verify(&["--read-data", "--quarantine"])
        .code(EXIT_DAMAGED)
        .json();
    assert_eq!(quarantined["quarantined"].as_array().unwrap().len(), 9);
    let healed = run(&["backup", "--image", image_arg, "--repo", url, "--json"])
        .success()
        .json();
    assert_eq!(num(&healed, "chunks_new"), 9, "{healed:#}");
    verify(&["--read-data"]).success();
    run(&["restore", "--repo", url, &sid, "--to", target_arg]).success();
    assert_same_file(&image, &target);
    let swept = run(&["gc", "--repo", url, "--json"]).success().json();
    assert_eq!(num(&swept, "quarantine_cleared"), 9);
    assert_eq!(num(&swept, "chunks_deleted"), 0);
}
