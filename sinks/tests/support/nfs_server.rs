//! The real NFS server the tests use: nfs-ganesha on 127.0.0.1, installed and started by
//! `bash scripts/services/nfs.sh ensure` (which the test command runs, and which this module
//! runs once per test process, so `cargo test` alone works too). A machine where it cannot be
//! started fails these tests; they never skip.
//!
//! Tests share the server: each works in a fresh random directory of the read-write export.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use ferry_sinks::nfs::NfsConfig;

/// The directory the exports live in (see scripts/services/nfs.sh).
pub fn nfs_root() -> PathBuf {
    std::env::var_os("FERRY_NFS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ferry/nfs-test"))
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates live in the workspace")
}

/// Runs `nfs.sh ensure` once per process; panics with its output when it fails.
pub fn ensure_server() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let out = Command::new("bash")
            .args(["scripts/services/nfs.sh", "ensure"])
            .current_dir(workspace())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/services/nfs.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`bash scripts/services/nfs.sh ensure` failed with {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = ready {
        panic!("the NFS test server is not available: {e}");
    }
}

/// A fresh directory on the read-write export: its path on this machine (the export is a local
/// directory served by ganesha) and its `nfs://` URL. The directory itself does not exist yet.
pub struct Scratch {
    pub local: PathBuf,
    pub url: String,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        ensure_server();
        let name = format!("{tag}-{:016x}", rand::random::<u64>());
        let export = nfs_root().join("export");
        Scratch {
            local: export.join(&name),
            url: format!("nfs://127.0.0.1{}/{name}", export.display()),
        }
    }

    pub fn config(&self) -> NfsConfig {
        config_of(&self.url)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.local);
    }
}

/// The config of an `nfs://127.0.0.1/...` URL (tests build only such URLs).
pub fn config_of(url: &str) -> NfsConfig {
    let rest = url.strip_prefix("nfs://127.0.0.1/").expect("a test URL");
    NfsConfig {
        host: "127.0.0.1".into(),
        port: None,
        path: rest.split('/').map(str::to_owned).collect(),
    }
}

/// A port on 127.0.0.1 whose server reads each request and then closes the connection
/// cleanly (FIN, no reset), for as long as the test process runs.
pub fn closing_server() -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    port
}

/// A port on 127.0.0.1 whose server accepts connections and reads requests but never answers:
/// a stalled server.
pub fn silent_server() -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                while matches!(stream.read(&mut request), Ok(n) if n > 0) {}
            });
        }
    });
    port
}
