//! Harness of the live-VM tests: real libvirt domains with no guest OS, their disk images,
//! writes into the live disks through QEMU's `qemu-io` monitor command, and the per-test
//! Ferry world (repository, `FERRY_STATE_DIR`, hooks) the domain backups run in.
//!
//! Every domain is named `ferry-test-<test>-<pid>-<n>` and lives in its own 0700 directory
//! under [`VM_ROOT`]; dropping the [`TestVm`] destroys and undefines it and removes the
//! directory. Nothing here touches domains or files of other tests, so tests run in parallel.
//! virsh is always called with `-c qemu:///system`, ferry with `--connect qemu:///system` and
//! a per-test `FERRY_STATE_DIR`; a ferry run that outlives [`FERRY_TIMEOUT`] is killed and fails
//! its test (a hang must not stall the suite, and the VM's Drop then cleans up).

use std::ffi::OsStr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::{Fixture, Run, ferry, random_bytes, text, text_bytes};

/// The libvirt connection of every test (virsh `-c` and ferry `--connect`).
pub const URI: &str = "qemu:///system";
/// Parent of every test VM's directory.
pub const VM_ROOT: &str = "/var/tmp/ferry-vm-tests";
/// Marks in the file names of Ferry's temporary overlays and push-mode scratch files.
pub const OVERLAY_MARK: &str = ".ferry-overlay-";
pub const SCRATCH_MARK: &str = ".ferry-scratch-";
/// Longest a `ferry` run of these tests may take (each takes seconds): a hung run is killed
/// and fails its test.
pub const FERRY_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (where `scripts/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate is inside the workspace")
        .to_path_buf()
}

/// Runs `bash scripts/services/libvirt.sh ensure` once per process and panics (in every test
/// that asks) when it failed: a machine without libvirt fails these tests, it never skips them.
pub fn ensure_libvirt() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let root = repo_root();
        let out = Command::new("bash")
            .arg("scripts/services/libvirt.sh")
            .arg("ensure")
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash scripts/services/libvirt.sh ensure: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`bash scripts/services/libvirt.sh ensure` (in {}) failed with {}\n--- stdout\n{}--- stderr\n{}",
                root.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = ready {
        panic!("libvirt is not available: {e}");
    }
}

/// `virsh -c qemu:///system ARGS`, whatever its outcome.
pub fn virsh<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run virsh")
}

/// `virsh -c qemu:///system ARGS`, which must succeed; its stdout.
#[track_caller]
pub fn virsh_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = virsh(args);
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(
        out.status.success(),
        "virsh {} failed ({})\n--- stdout\n{}--- stderr\n{}",
        shown.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must succeed; its stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parses `virsh domblklist --details` output into `(target, source)` of each disk device.
pub fn parse_domblklist(details: &str) -> Vec<(String, String)> {
    details
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() >= 4 && fields[1] == "disk")
                .then(|| (fields[2].to_owned(), fields[3..].join(" ")))
        })
        .collect()
}

/// Quotes `s` for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Creates `dir` (and its parents) with mode 0700 when missing.
pub fn private_dir(dir: &Path) {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
}

/// A fresh, unique 0700 directory under [`VM_ROOT`].
pub fn vm_root_tempdir(prefix: &str) -> TempDir {
    private_dir(Path::new(VM_ROOT));
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(VM_ROOT)
        .expect("create a directory under /var/tmp/ferry-vm-tests")
}

// ---------------------------------------------------------------------------------------------
// Images and content checks

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// What an initial region of a disk holds.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    Byte(u8),
    /// Incompressible bytes from a seed.
    Random(u64),
    /// Compressible log-like text from a seed.
    Text(u64),
}

impl Fill {
    pub fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Fill::Byte(b) => vec![b; len],
            Fill::Random(seed) => random_bytes(seed, len),
            Fill::Text(seed) => text_bytes(seed, len),
        }
    }
}

/// A disk of a test VM: its format, virtual size, and what is written into it before start.
#[derive(Clone, Debug)]
pub struct DiskSpec {
    pub format: Format,
    pub size: u64,
    pub regions: Vec<(u64, u64, Fill)>,
    /// qcow2 only: `regions` go into a raw backing image, `top` into the qcow2 on top of it.
    pub backing: bool,
    /// Byte fills written into the qcow2 layer over the backing image.
    pub top: Vec<(u64, u64, u8)>,
    /// qcow2 only: the guest data lives in an external raw data file (`vdX.data`).
    pub data_file: bool,
    /// raw only: the disk is a block device (a loop device over the raw file), a
    /// `type='block'` disk as LVM volumes are.
    pub block: bool,
}

impl DiskSpec {
    pub fn raw(size: u64) -> DiskSpec {
        DiskSpec {
            format: Format::Raw,
            size,
            regions: Vec::new(),
            backing: false,
            top: Vec::new(),
            data_file: false,
            block: false,
        }
    }

    pub fn qcow2(size: u64) -> DiskSpec {
        DiskSpec {
            format: Format::Qcow2,
            ..DiskSpec::raw(size)
        }
    }

    /// A qcow2 disk over a raw backing image (a VM made from a template).
    pub fn qcow2_on_backing(size: u64) -> DiskSpec {
        DiskSpec {
            backing: true,
            ..DiskSpec::qcow2(size)
        }
    }

    /// Fills `len` bytes at `offset` with `byte` in the qcow2 layer over the backing image.
    pub fn with_top(mut self, offset: u64, len: u64, byte: u8) -> DiskSpec {
        assert!(self.backing && offset + len <= self.size);
        self.top.push((offset, len, byte));
        self
    }

    /// Adds `len` bytes of `fill` at `offset` (later regions overwrite earlier ones).
    pub fn with(mut self, offset: u64, len: u64, fill: Fill) -> DiskSpec {
        assert!(offset + len <= self.size, "region past the end of the disk");
        self.regions.push((offset, len, fill));
        self
    }

    /// The disk's guest-visible content.
    pub fn content(&self) -> Vec<u8> {
        let mut data = vec![0u8; self.size as usize];
        for &(offset, len, fill) in &self.regions {
            data[offset as usize..(offset + len) as usize]
                .copy_from_slice(&fill.bytes(len as usize));
        }
        for &(offset, len, byte) in &self.top {
            fill(&mut data, byte, offset, len);
        }
        data
    }
}

/// Sets `len` bytes at `offset` of an in-memory image to `byte` (the model of a qemu-io write).
pub fn fill(image: &mut [u8], byte: u8, offset: u64, len: u64) {
    image[offset as usize..(offset + len) as usize].fill(byte);
}

/// BLAKE3 of `bytes`, hex.
pub fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// `qemu-img info` of an image not in use: its format ("raw", "qcow2").
pub fn qemu_img_format(path: &Path) -> String {
    let out = run_ok(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(path),
    );
    let info: Value = serde_json::from_str(&out).expect("qemu-img info prints JSON");
    text(&info, "format").to_owned()
}

/// The guest-visible bytes of an image of known format (a qcow2 is converted with
/// `qemu-img convert -O raw`). The image must not be in use.
pub fn image_bytes(path: &Path, format: Format) -> Vec<u8> {
    match format {
        Format::Raw => {
            std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        }
        Format::Qcow2 => {
            let tmp = vm_root_tempdir("convert-");
            let raw = tmp.path().join("image.raw");
            convert_to_raw(path, &raw);
            std::fs::read(&raw).expect("read the converted image")
        }
    }
}

/// `qemu-img convert -f qcow2 -O raw SRC DST`.
pub fn convert_to_raw(src: &Path, dst: &Path) {
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
            .arg(src)
            .arg(dst),
    );
}

/// Why `actual` differs from `expected` (compared by digest; the first differing offset is
/// named instead of dumping the images), or None when they are equal.
pub fn image_mismatch(actual: &[u8], expected: &[u8]) -> Option<String> {
    if actual.len() != expected.len() {
        return Some(format!(
            "length {} instead of {}",
            actual.len(),
            expected.len()
        ));
    }
    let (a, e) = (digest(actual), digest(expected));
    if a == e {
        return None;
    }
    let at = (0..actual.len())
        .find(|&i| actual[i] != expected[i])
        .unwrap_or(0);
    Some(format!(
        "digest {a} instead of {e}; first difference at offset {at} (0x{:02x} instead of 0x{:02x})",
        actual[at], expected[at]
    ))
}

/// Asserts that `actual` equals `expected` (see [`image_mismatch`]).
#[track_caller]
pub fn assert_image_eq(actual: &[u8], expected: &[u8], what: &str) {
    if let Some(why) = image_mismatch(actual, expected) {
        panic!("{what}: {why}");
    }
}

/// Asserts that `len` bytes at `offset` of `image` are all `byte`.
#[track_caller]
pub fn assert_filled(image: &[u8], byte: u8, offset: u64, len: u64, what: &str) {
    let region = &image[offset as usize..(offset + len) as usize];
    if let Some(i) = region.iter().position(|&b| b != byte) {
        panic!(
            "{what}: byte at offset {} is 0x{:02x}, not 0x{byte:02x}",
            offset + i as u64,
            region[i]
        );
    }
}

/// Asserts that `len` bytes at `offset` of `image` equal those of `reference` and are not all
/// `byte` (a pattern that must NOT be there).
#[track_caller]
pub fn assert_absent(image: &[u8], reference: &[u8], byte: u8, offset: u64, len: u64, what: &str) {
    let range = offset as usize..(offset + len) as usize;
    assert!(
        image[range.clone()].iter().any(|&b| b != byte),
        "{what}: pattern 0x{byte:02x} at {offset}..{} is present",
        offset + len
    );
    if let Some(i) = (range.clone()).find(|&i| image[i] != reference[i]) {
        panic!(
            "{what}: byte at offset {i} is 0x{:02x}, expected 0x{:02x} (the content before pattern 0x{byte:02x})",
            image[i], reference[i]
        );
    }
}

/// Paths under `dirs` (recursively) whose names mark a Ferry overlay or scratch file.
pub fn leftovers(dirs: &[&Path]) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(OVERLAY_MARK) || name.contains(SCRATCH_MARK) {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    for dir in dirs {
        walk(dir, &mut found);
    }
    found.sort();
    found
}

/// Regular files under `dir`, recursively (none when `dir` is missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                _ => found.push(entry.path()),
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------------
// Test VMs

/// One disk of a [`TestVm`].
#[derive(Debug)]
pub struct VmDisk {
    /// vda, vdb, ...
    pub target: String,
    /// The base image.
    pub path: PathBuf,
    pub format: Format,
    pub size: u64,
    /// Guest-visible content written before the domain was defined.
    pub initial: Vec<u8>,
}

/// A libvirt domain with no guest OS (scripts/vm/domain.sh) and its disk images.
pub struct TestVm {
    pub name: String,
    pub disks: Vec<VmDisk>,
    /// Loop devices of block disks: dropped (detached) after the domain is destroyed.
    loops: Vec<super::LoopDevice>,
    /// Writes into a live disk and checks the result (see [`TestVm::io_command`]).
    io_script: PathBuf,
    dir: TempDir,
}

impl TestVm {
    /// Creates the images of `disks`, then defines and starts the domain.
    pub fn start(test: &str, disks: &[DiskSpec]) -> TestVm {
        let vm = TestVm::define(test, disks);
        virsh_ok(&["start", &vm.name]);
        vm
    }

    /// As [`TestVm::start`], with a writable floppy drive (`fda`, image `fda.img` in the VM's
    /// directory) and an empty CD-ROM drive (`sda`) beside the disks.
    pub fn start_with_removable_drives(test: &str, disks: &[DiskSpec]) -> TestVm {
        let vm = TestVm::define_with(test, disks, true);
        virsh_ok(&["start", &vm.name]);
        vm
    }

    /// Creates the images of `disks` and defines the domain without starting it.
    pub fn define(test: &str, specs: &[DiskSpec]) -> TestVm {
        TestVm::define_with(test, specs, false)
    }

    /// [`TestVm::define`], with a floppy and a CD-ROM drive when `removable`.
    fn define_with(test: &str, specs: &[DiskSpec], removable: bool) -> TestVm {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        ensure_libvirt();
        assert!(!specs.is_empty() && specs.len() <= 26);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("ferry-test-{test}-{}-{n}", std::process::id());
        let dir = vm_root_tempdir(&format!("{name}."));
        let base = dir.path().canonicalize().expect("canonical VM directory");
        let mut disks = Vec::new();
        let mut loops = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let target = format!("vd{}", (b'a' + i as u8) as char);
            let path = base.join(format!("{target}.{}", spec.format.as_str()));
            let initial = spec.content();
            let raw_path = match (spec.format, spec.backing) {
                (Format::Raw, _) => path.clone(),
                (Format::Qcow2, false) => base.join(format!("{target}.initial.raw")),
                (Format::Qcow2, true) => base.join(format!("{target}.backing.raw")),
            };
            // A sparse raw file holding only the initial regions.
            let file = std::fs::File::create(&raw_path).expect("create a disk image");
            file.set_len(spec.size).expect("size a disk image");
            for &(offset, len, _) in &spec.regions {
                use std::os::unix::fs::FileExt;
                file.write_all_at(&initial[offset as usize..(offset + len) as usize], offset)
                    .expect("write a disk image");
            }
            file.sync_all().expect("sync a disk image");
            drop(file);
            if spec.backing {
                run_ok(
                    Command::new("qemu-img")
                        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                        .arg(&raw_path)
                        .arg(&path),
                );
                for &(offset, len, byte) in &spec.top {
                    run_ok(
                        Command::new("qemu-io")
                            .args(["-f", "qcow2", "-c"])
                            .arg(format!("write -P {byte:#04x} {offset} {len}"))
                            .arg(&path),
                    );
                }
            } else if spec.format == Format::Qcow2 {
                let mut convert = Command::new("qemu-img");
                convert.args(["convert", "-q", "-f", "raw", "-O", "qcow2"]);
                if spec.data_file {
                    let data = base.join(format!("{target}.data"));
                    convert
                        .arg("-o")
                        .arg(format!("data_file={},data_file_raw=on", data.display()));
                }
                run_ok(convert.arg(&raw_path).arg(&path));
                std::fs::remove_file(&raw_path).expect("remove the initial raw image");
            }
            let path = if spec.block {
                assert_eq!(spec.format, Format::Raw, "block disks are raw");
                let device = super::LoopDevice::attach(&path);
                let device_path = device.device.clone();
                loops.push(device);
                device_path
            } else {
                path
            };
            disks.push(VmDisk {
                target,
                path,
                format: spec.format,
                size: spec.size,
                initial,
            });
        }

        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/vm/domain.sh"))
            .args(["--uri", URI]);
        if removable {
            let floppy = base.join("fda.img");
            let file = std::fs::File::create(&floppy).expect("create a floppy image");
            file.set_len(1440 * 1024).expect("size a floppy image");
            cmd.arg("--cdrom").arg("--floppy").arg(&floppy);
        }
        cmd.arg(&name).arg(&base);
        for disk in &disks {
            cmd.arg(format!(
                "{},format={}",
                disk.path.display(),
                disk.format.as_str()
            ));
        }
        let xml = run_ok(&mut cmd).trim().to_owned();

        let io_script = base.join("qemu-io.sh");
        std::fs::write(&io_script, io_script_text(&name)).expect("write qemu-io.sh");

        // From here on Drop undefines the domain.
        let vm = TestVm {
            name,
            disks,
            loops,
            io_script,
            dir,
        };
        virsh_ok(&["define", &xml]);
        vm
    }

    /// The VM's directory (canonical), which holds its images.
    pub fn dir(&self) -> PathBuf {
        self.dir
            .path()
            .canonicalize()
            .expect("canonical VM directory")
    }

    /// A new 0700 directory inside the VM's directory (overlay or scratch directories: on the
    /// same filesystem as the images, which supports O_DIRECT).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.dir().join(name);
        private_dir(&dir);
        dir
    }

    pub fn disk(&self, index: usize) -> &VmDisk {
        &self.disks[index]
    }

    /// `(target, base image path)` of every disk: what domblklist shows when no overlay is in place.
    pub fn bases(&self) -> Vec<(String, String)> {
        self.disks
            .iter()
            .map(|d| (d.target.clone(), d.path.display().to_string()))
            .collect()
    }

    /// `(target, source)` of each disk from `virsh domblklist --details`.
    pub fn domblklist(&self) -> Vec<(String, String)> {
        parse_domblklist(&virsh_ok(&["domblklist", &self.name, "--details"]))
    }

    /// The command that records `virsh domblklist --details` into `file` (for hooks).
    pub fn domblklist_command(&self, file: &Path) -> String {
        format!(
            "virsh -c {URI} domblklist {} --details > {}",
            sh_quote(&self.name),
            sh_quote(&file.display().to_string())
        )
    }

    /// `virsh domstate`: "running", "shut off", ...
    pub fn state(&self) -> String {
        virsh_ok(&["domstate", &self.name]).trim().to_owned()
    }

    /// `virsh destroy`: the base images can then be read consistently.
    pub fn shutdown_hard(&self) {
        virsh_ok(&["destroy", &self.name]);
        assert_eq!(self.state(), "shut off");
    }

    /// The shell command that runs qemu-io `OP -P BYTE OFFSET LEN` (OP write or read) on the
    /// live disk `disk` (0 = vda) through the monitor and exits non-zero unless QEMU reported
    /// it done (for read: with the pattern verified). Usable in hooks.
    pub fn io_command(&self, op: &str, disk: usize, byte: u8, offset: u64, len: u64) -> String {
        assert!(op == "write" || op == "read");
        assert!(disk < self.disks.len(), "no disk {disk}");
        format!(
            "sh {} {op} {disk} 0x{byte:02x} {offset} {len}",
            sh_quote(&self.io_script.display().to_string())
        )
    }

    /// Shell command writing `len` bytes of `byte` at `offset` into the live disk `disk`.
    pub fn write_command(&self, disk: usize, byte: u8, offset: u64, len: u64) -> String {
        self.io_command("write", disk, byte, offset, len)
    }

    fn io(&self, op: &str, disk: usize, byte: u8, offset: u64, len: u64) -> Result<(), String> {
        let cmd = self.io_command(op, disk, byte, offset, len);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run sh");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Writes `len` bytes of `byte` at `offset` into the live disk `disk` (0 = vda).
    pub fn try_write(&self, disk: usize, byte: u8, offset: u64, len: u64) -> Result<(), String> {
        self.io("write", disk, byte, offset, len)
    }

    #[track_caller]
    pub fn write(&self, disk: usize, byte: u8, offset: u64, len: u64) {
        if let Err(e) = self.try_write(disk, byte, offset, len) {
            panic!("qemu-io write into {} disk {disk}: {e}", self.name);
        }
    }

    /// Checks through qemu-io that the guest reads `byte` at `offset..offset+len` of disk `disk`.
    pub fn try_check(&self, disk: usize, byte: u8, offset: u64, len: u64) -> Result<(), String> {
        self.io("read", disk, byte, offset, len)
    }

    #[track_caller]
    pub fn check(&self, disk: usize, byte: u8, offset: u64, len: u64) {
        if let Err(e) = self.try_check(disk, byte, offset, len) {
            panic!("qemu-io read check of {} disk {disk}: {e}", self.name);
        }
    }

    /// The guest-visible bytes of the base image of disk `index` (shut the VM off first).
    pub fn base_bytes(&self, index: usize) -> Vec<u8> {
        let disk = &self.disks[index];
        image_bytes(&disk.path, disk.format)
    }

    /// The QEMU log of the domain.
    pub fn log_path(&self) -> PathBuf {
        PathBuf::from(format!("/var/log/libvirt/qemu/{}.log", self.name))
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&[
            "undefine",
            &self.name,
            "--snapshots-metadata",
            "--checkpoints-metadata",
        ]);
        // Keep the QEMU log of a failed test; the directory goes with `self.dir`.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(self.log_path());
        }
    }
}

/// The script behind [`TestVm::io_command`]. virsh exits 0 even when qemu-io fails (the error
/// comes back as reply text) and qemu-io's own report goes to QEMU's stdout, which virtlogd
/// appends to the domain log: so the reply must be empty and the log must gain the line of
/// success ("wrote LEN/LEN bytes at offset OFF", "read ..." with no "Pattern verification
/// failed" before it). virtlogd writes the log asynchronously: poll it, 10 s at most.
fn io_script_text(domain: &str) -> String {
    format!(
        r#"#!/bin/sh
# qemu-io.sh write|read DISK BYTE OFFSET LEN (written by the live-VM tests)
set -eu
op=$1 disk=$2 byte=$3 offset=$4 len=$5
dom={dom}
log=/var/log/libvirt/qemu/$dom.log
before=$(stat -c %s "$log")
reply=$(virsh -c {URI} qemu-monitor-command "$dom" --hmp \
    "qemu-io -d /machine/peripheral/virtio-disk$disk/virtio-backend \"$op -P $byte $offset $len\"")
if [ -n "$reply" ]; then
    echo "qemu-io.sh: $op $byte $offset $len on $dom disk $disk: $reply" >&2
    exit 1
fi
if [ "$op" = write ]; then want="wrote $len/$len bytes at offset $offset"; else want="read $len/$len bytes at offset $offset"; fi
i=0
while :; do
    new=$(tail -c +"$((before + 1))" "$log")
    case $new in
        *"Pattern verification failed"*)
            echo "qemu-io.sh: $dom disk $disk does not hold $byte at $offset+$len: $new" >&2
            exit 1 ;;
        *"$want"*) exit 0 ;;
        *failed* | *rror*)
            echo "qemu-io.sh: $op $byte $offset $len on $dom disk $disk failed: $new" >&2
            exit 1 ;;
    esac
    i=$((i + 1))
    if [ "$i" -ge 1000 ]; then
        echo "qemu-io.sh: no result of $op $byte $offset $len in $log after 10 s: $new" >&2
        exit 1
    fi
    sleep 0.01
done
"#,
        dom = sh_quote(domain)
    )
}

// ---------------------------------------------------------------------------------------------
// tmpfs

/// A tmpfs of a given size mounted on a fresh directory under [`VM_ROOT`]; unmounted on drop.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = vm_root_tempdir("tmpfs.");
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir.path()),
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
        // The empty mount point goes with `self.dir`.
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks

/// A `--hook` script: records every call (`PHASE DOMAIN PID` lines) and runs the commands
/// given for its phase, stopping at the first that fails (which fails the hook).
pub struct Hook {
    pub script: PathBuf,
    pub log: PathBuf,
}

impl Hook {
    pub fn new(dir: &Path, name: &str, frozen: &[String], copied: &[String]) -> Hook {
        let script = dir.join(format!("{name}.sh"));
        let log = dir.join(format!("{name}.log"));
        let body =
            |cmds: &[String]| -> String { cmds.iter().map(|c| format!("        {c}\n")).collect() };
        let text = format!(
            "#!/bin/sh\n# --hook of a live-VM test\nset -eu\n\
             printf '%s %s %s\\n' \"${{FERRY_HOOK_PHASE:-}}\" \"${{FERRY_DOMAIN:-}}\" \"${{FERRY_PID:-}}\" >> {log}\n\
             case \"${{FERRY_HOOK_PHASE:-}}\" in\n    frozen)\n{}        ;;\n    copied)\n{}        ;;\nesac\n",
            body(frozen),
            body(copied),
            log = sh_quote(&log.display().to_string()),
        );
        std::fs::write(&script, text).expect("write the hook script");
        Hook { script, log }
    }

    /// The `--hook` argument.
    pub fn arg(&self) -> String {
        format!("sh {}", sh_quote(&self.script.display().to_string()))
    }

    /// `(phase, domain)` of each call so far; every call had a numeric FERRY_PID.
    #[track_caller]
    pub fn calls(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert!(
                    f.len() == 3 && f[2].parse::<u32>().is_ok_and(|p| p > 1),
                    "hook call without FERRY_HOOK_PHASE, FERRY_DOMAIN or a FERRY_PID: {l:?}"
                );
                (f[0].to_owned(), f[1].to_owned())
            })
            .collect()
    }

    /// Asserts the hook ran at exactly `phases`, in order, for `vm`.
    #[track_caller]
    pub fn assert_calls(&self, vm: &TestVm, phases: &[&str]) {
        let expected: Vec<(String, String)> = phases
            .iter()
            .map(|p| (p.to_string(), vm.name.clone()))
            .collect();
        assert_eq!(self.calls(), expected, "hook calls (phase, domain)");
    }
}

// ---------------------------------------------------------------------------------------------
// The Ferry side

/// One live test's Ferry world: a repository (through [`Fixture`]) and a private
/// `FERRY_STATE_DIR` (never the default /var/lib/ferry) holding the journal.
pub struct Live {
    pub fx: Fixture,
    pub state: PathBuf,
}

impl Live {
    /// A fresh repository with 64 KiB chunks.
    pub fn new() -> Live {
        let fx = Fixture::new();
        let state = fx.dir("state");
        Live { fx, state }
    }

    /// A repository at `repo` (initialised here, e.g. on a small tmpfs).
    pub fn with_repo(repo: &Path) -> Live {
        ferry(&[
            OsStr::new("init"),
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("--chunk-size"),
            OsStr::new("64K"),
        ])
        .success();
        let fx = Fixture {
            tmp: TempDir::new().expect("create a temporary directory"),
            repo: repo.to_path_buf(),
        };
        let state = fx.dir("state");
        Live { fx, state }
    }

    pub fn journal(&self) -> PathBuf {
        self.state.join("journal")
    }

    /// Files in the journal (none when it is missing).
    pub fn journal_files(&self) -> Vec<PathBuf> {
        files_under(&self.journal())
    }

    #[track_caller]
    pub fn assert_journal_empty(&self) {
        let files = self.journal_files();
        assert!(files.is_empty(), "the journal is not empty: {files:?}");
    }

    /// `ferry ARGS` with `FERRY_STATE_DIR` set to this test's state directory, killed after
    /// [`FERRY_TIMEOUT`]. Checks what must hold for every run: the process exited (no signal,
    /// no timeout) and nothing panicked.
    #[track_caller]
    pub fn ferry<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let (status, run) = self.ferry_unchecked(args);
        assert!(
            status.code().is_some(),
            "ferry was killed by a signal ({status:?})\n{run}"
        );
        assert!(!run.stderr.contains("panicked"), "ferry panicked\n{run}");
        run
    }

    /// `ferry ARGS` (as [`Live::ferry`]) that may die by a signal: its exit status and output.
    /// Only a run that outlives [`FERRY_TIMEOUT`] fails here (it is killed first, so that a hang
    /// fails the test instead of stalling it).
    #[track_caller]
    pub fn ferry_unchecked<S: AsRef<OsStr>>(&self, args: &[S]) -> (ExitStatus, Run) {
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env_remove("FERRY_REPO")
            .env("FERRY_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the ferry binary");
        let pid = child.id();
        let (done, finished) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let expired = finished.recv_timeout(FERRY_TIMEOUT) == Err(RecvTimeoutError::Timeout);
            if expired {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            expired
        });
        let output = child.wait_with_output().expect("wait for ferry");
        let _ = done.send(());
        let expired = watchdog.join().expect("the watchdog thread");
        let run = Run::of(args, &output);
        assert!(
            !expired,
            "ferry did not finish within {} s and was killed\n{run}",
            FERRY_TIMEOUT.as_secs()
        );
        (output.status, run)
    }

    /// The arguments of `ferry backup --domain VM --repo REPO --connect URI --chunk-size 64K
    /// --json EXTRA`.
    pub fn backup_args(&self, vm: &TestVm, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "backup",
            "--domain",
            &vm.name,
            "--repo",
            &self.fx.repo.display().to_string(),
            "--connect",
            URI,
            "--chunk-size",
            "64K",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `ferry backup --domain ...`, whatever its outcome.
    #[track_caller]
    pub fn backup(&self, vm: &TestVm, extra: &[&str]) -> Run {
        self.ferry(&self.backup_args(vm, extra))
    }

    /// A domain backup that must succeed and publish its manifest; its JSON report.
    #[track_caller]
    pub fn backup_ok(&self, vm: &TestVm, extra: &[&str]) -> Value {
        let report = self.backup(vm, extra).success().json();
        let sid = text(&report, "snapshot");
        assert!(
            self.fx.snapshot_path(sid).is_file(),
            "snapshot {sid} has no manifest file\n{report:#}"
        );
        report
    }

    /// A domain backup run that may die by a signal: its exit status and output.
    #[track_caller]
    pub fn backup_unchecked(&self, vm: &TestVm, extra: &[&str]) -> (ExitStatus, Run) {
        self.ferry_unchecked(&self.backup_args(vm, extra))
    }

    /// `ferry recover --domain VM --connect URI`.
    #[track_caller]
    pub fn recover(&self, vm: &TestVm) -> Run {
        self.ferry(&["recover", "--domain", &vm.name, "--connect", URI])
    }

    /// `ferry list --json`.
    #[track_caller]
    pub fn list(&self) -> Value {
        let repo = self.fx.repo.display().to_string();
        self.ferry(&["list", "--repo", &repo, "--json"])
            .success()
            .json()
    }

    /// Snapshot ids `ferry list --json` shows.
    #[track_caller]
    pub fn listed_snapshots(&self) -> Vec<String> {
        let list = self.list();
        list["snapshots"]
            .as_array()
            .unwrap_or_else(|| panic!("no snapshots array in {list:#}"))
            .iter()
            .map(|s| text(s, "snapshot").to_owned())
            .collect()
    }

    /// Restores disk `target` of `sid` into `file`; the restored bytes.
    #[track_caller]
    pub fn restore_disk(&self, sid: &str, target: &str, file: &Path) -> Value {
        self.fx
            .restore(sid, file, &["--disk", target])
            .success()
            .json()
    }

    /// What must hold after every domain backup, successful or not: the domain is on its base
    /// images, no overlay or scratch file is left in the VM's directory or `dirs`, and the
    /// journal is empty.
    #[track_caller]
    pub fn assert_clean(&self, vm: &TestVm, dirs: &[&Path]) {
        assert_eq!(vm.domblklist(), vm.bases(), "domblklist of {}", vm.name);
        let vm_dir = vm.dir();
        let mut all = vec![vm_dir.as_path()];
        all.extend_from_slice(dirs);
        let left = leftovers(&all);
        assert!(left.is_empty(), "overlay or scratch files left: {left:?}");
        self.assert_journal_empty();
    }
}

/// Signal that ended a process, if any.
pub fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// The names (`name`) of the `disks` of a backup report or listed snapshot.
#[track_caller]
pub fn disk_names(snapshot: &Value) -> Vec<String> {
    snapshot["disks"]
        .as_array()
        .unwrap_or_else(|| panic!("no disks array in {snapshot:#}"))
        .iter()
        .map(|d| text(d, "name").to_owned())
        .collect()
}

/// `(name, source)` of the `disks` of a backup report or listed snapshot.
#[track_caller]
pub fn disk_sources(snapshot: &Value) -> Vec<(String, String)> {
    snapshot["disks"]
        .as_array()
        .unwrap_or_else(|| panic!("no disks array in {snapshot:#}"))
        .iter()
        .map(|d| (text(d, "name").to_owned(), text(d, "source").to_owned()))
        .collect()
}
