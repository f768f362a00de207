//! A remote repository that goes away during `verify --read-data` (the S3 server or the NFS
//! filer stops answering): verify stops with an error that says so, and never reports the
//! chunks it could not read as damaged. Real servers, reached through a proxy the test takes
//! down.

#[path = "../../sinks/tests/support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;
#[path = "../../sinks/tests/support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;
#[path = "../../sinks/tests/support/tcp_proxy.rs"]
#[allow(dead_code)]
mod tcp_proxy;

use std::sync::Arc;
use std::time::Duration;

use ferry_engine::backup::{BackupOptions, DiskSource, backup};
use ferry_engine::repository::CHUNKS_PREFIX;
use ferry_engine::{NoProgress, Repository, verify};
use ferry_sinks::nfs::{NfsConfig, NfsSink};
use ferry_sinks::retry::RetryPolicy;
use ferry_sinks::s3::{S3Config, S3Sink, Secret};
use ferry_sinks::{Leftover, ObjectKey, ObjectMeta, PutMode, PutOutcome, Sink, SinkError};
use tcp_proxy::TcpProxy;

const CHUNK: u32 = 64 << 10;

/// Short, so a lasting outage fails the test's operations quickly.
fn retry() -> RetryPolicy {
    RetryPolicy::with_deadline(Duration::from_secs(1))
}

/// Passes every call through, and takes the proxy down just before the first chunk read:
/// the outage begins once verify has read the manifests and listed the chunks.
#[derive(Debug)]
struct DownOnFirstChunkRead {
    inner: Arc<dyn Sink>,
    proxy: TcpProxy,
}

impl Sink for DownOnFirstChunkRead {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        self.inner.put(key, data, mode)
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        if key.as_str().starts_with(CHUNKS_PREFIX) {
            self.proxy.go_down();
        }
        self.inner.get(key)
    }
    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        self.inner.get_range(key, start, end)
    }
    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        self.inner.head(key)
    }
    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>
    {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.inner.delete(key)
    }
    fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
        self.inner.leftovers(dir)
    }
    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), SinkError> {
        self.inner.remove_leftover(leftover)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// Backs up a small image into `sink`, then verifies with data reads while the proxy goes
/// down at the first chunk read.
fn verify_during_an_outage(sink: Arc<dyn Sink>, proxy: &TcpProxy) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let data: Vec<u8> = (0..8 * CHUNK)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&image, &data).unwrap();
    let repo = Repository::init(Arc::clone(&sink), CHUNK).unwrap();
    let mut options = BackupOptions::new("vm");
    options.chunk_size = CHUNK;
    backup(
        &repo,
        &[DiskSource::new("vda", image)],
        &options,
        &NoProgress,
    )
    .unwrap();
    let clean = verify(&repo, None, true, 2, &NoProgress).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);

    let failing = DownOnFirstChunkRead {
        inner: sink,
        proxy: proxy.clone(),
    };
    let repo = Repository::open(Arc::new(failing)).unwrap();
    match verify(&repo, None, true, 2, &NoProgress) {
        Ok(report) => panic!(
            "verify reported {} problem(s) for a repository it could not reach: {:?}",
            report.problems.len(),
            report.problems
        ),
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("gave up after"), "{shown}");
            assert!(!shown.contains("corrupt"), "{shown}");
        }
    }
}

#[test]
fn on_s3() {
    let server = s3_server::server();
    let proxy = TcpProxy::start(
        server
            .endpoint
            .strip_prefix("http://")
            .unwrap()
            .parse()
            .unwrap(),
    );
    let config = S3Config {
        bucket: server.bucket("verify-outage"),
        prefix: "repo".into(),
        endpoint: Some(format!("http://127.0.0.1:{}", proxy.port)),
        region: "us-east-1".into(),
        access_key_id: s3_server::ACCESS_KEY.into(),
        secret_access_key: Secret::new(s3_server::SECRET_KEY),
        allow_http: true,
    };
    let sink = S3Sink::open_with(&config, retry()).unwrap();
    verify_during_an_outage(Arc::new(sink), &proxy);
}

#[test]
fn on_nfs() {
    let scratch = nfs_server::Scratch::new("verify-outage");
    NfsSink::create(&scratch.config()).unwrap();
    let proxy = TcpProxy::start("127.0.0.1:2049".parse().unwrap());
    let config = NfsConfig {
        port: Some(proxy.port),
        ..scratch.config()
    };
    let sink = NfsSink::open_with(&config, retry()).unwrap();
    verify_during_an_outage(Arc::new(sink), &proxy);
}
