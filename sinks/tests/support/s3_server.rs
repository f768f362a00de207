//! A real S3-compatible server (s3s-fs) on 127.0.0.1 for tests, one per test process.
//!
//! `scripts/services/s3.sh ensure` installs the `s3s-fs` binary (the test command runs it);
//! a test fails, rather than skips, when the binary is missing.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry_sinks::s3::{S3Config, Secret};

/// Credentials the test server checks (SigV4); never real secrets.
pub const ACCESS_KEY: &str = "ferrytestkey";
pub const SECRET_KEY: &str = "ferry-test-secret-do-not-log-5d1c";

/// A running s3s-fs serving buckets from a temporary directory.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Creates bucket `name` (a directory under the server root) and returns it.
    pub fn bucket(&self, name: &str) -> String {
        std::fs::create_dir_all(self.root.join(name)).expect("create bucket directory");
        name.to_owned()
    }

    /// The address the server listens on (for a proxy in front of it).
    pub fn address(&self) -> SocketAddr {
        self.endpoint
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("the endpoint is http://ADDRESS")
    }

    /// A sink configuration for `bucket`/`prefix` of this server.
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        self.config_at(&self.endpoint, bucket, prefix)
    }

    /// Like [`config`](Self::config), reaching the server at `endpoint` (a proxy's).
    pub fn config_at(&self, endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(endpoint.to_owned()),
            region: "us-east-1".into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: Secret::new(SECRET_KEY),
            allow_http: true,
        }
    }

    /// The AWS environment variables for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("S3S_FS") {
        return path.into();
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin/s3s-fs"));
    match cargo_bin {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("s3s-fs"),
    }
}

/// The process-wide server, started on first use.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// Runs the server (`$0 "$@"`) until stdin reaches its end, then stops it and removes
/// `$FERRY_S3_TEST_DIR`.
const WATCHDOG: &str = r#""$0" "$@" & server=$!
read -r _ || true
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null
rm -rf -- "$FERRY_S3_TEST_DIR""#;

fn start() -> S3Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("server root");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // The server lives in a process-wide static, which is never dropped: a small shell keeps
    // it, and stops it and removes its data once this test process is gone (its end of the
    // stdin pipe closes then, however the process ended).
    let child = Command::new("bash")
        .arg("-c")
        .arg(WATCHDOG)
        .arg(binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(&root)
        .env("FERRY_S3_TEST_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start s3s-fs ({e}); run `bash scripts/services/s3.sh ensure`")
        });
    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        root,
        child,
        _dir: dir,
    };
    // The server is ready when it accepts connections (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}
