//! A remote repository that goes away during `verify --read-data` (the S3 server or the NFS
//! filer stops answering): verify stops with an error that says so, and never reports the
//! chunks it could not read as damaged. Real servers, reached through a proxy the test takes
//! down.

#[path = "support/image.rs"]
mod image;
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
use ferry_sinks::Sink;
use ferry_sinks::fault::BeforeRead;
use ferry_sinks::nfs::{NfsConfig, NfsSink};
use ferry_sinks::retry::RetryPolicy;
use ferry_sinks::s3::S3Sink;
use tcp_proxy::TcpProxy;

const CHUNK: u32 = 64 << 10;

/// Short, so a lasting outage fails the test's operations quickly.
fn retry() -> RetryPolicy {
    RetryPolicy::with_deadline(Duration::from_secs(1))
}

/// Backs up a small image into `sink`, then verifies with data reads while the proxy goes
/// down at the first chunk read.
fn verify_during_an_outage(sink: Arc<dyn Sink>, proxy: &TcpProxy) {
    let dir = tempfile::tempdir().unwrap();
    let image = image::noise_image(dir.path(), 8 * CHUNK);
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

    // The outage begins once verify has read the manifests and listed the chunks.
    let proxy = proxy.clone();
    let failing = BeforeRead::matching(
        sink,
        |key| key.as_str().starts_with(CHUNKS_PREFIX),
        move || proxy.go_down(),
    );
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
    let proxy = TcpProxy::start(server.address());
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let config = server.config_at(&endpoint, &server.bucket("verify-outage"), "repo");
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
