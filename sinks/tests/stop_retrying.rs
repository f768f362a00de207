//! A process that is stopping ends its sinks' retries at once (its own test binary: the stop is
//! process-wide). An outage must not hold an orderly stop (SIGINT) for the retry deadline.

#[path = "support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;
#[path = "support/tcp_proxy.rs"]
#[allow(dead_code)]
mod tcp_proxy;

use ferry_sinks::retry::{RetryPolicy, stop_retrying};
use ferry_sinks::s3::S3Sink;
use ferry_sinks::{ObjectKey, PutMode, Retry, Sink};
use tcp_proxy::TcpProxy;

#[test]
fn a_stop_ends_a_retrying_operation_with_its_last_error() {
    let server = s3_server::server();
    let proxy = TcpProxy::start(server.address());
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let config = server.config_at(&endpoint, &server.bucket("stop"), "");
    // The default deadline: without the stop, the put below would retry for 120 s.
    let sink = S3Sink::open_with(&config, RetryPolicy::default()).unwrap();
    let key = ObjectKey::new("chunks/ab/x").unwrap();
    proxy.go_down();
    std::thread::scope(|scope| {
        let put = scope.spawn(|| sink.put(&key, b"data", PutMode::Create));
        proxy.wait_for_refused(2);
        stop_retrying();
        let err = put.join().unwrap().unwrap_err();
        assert_eq!(err.retry(), Retry::Transient, "{err}");
        assert!(err.to_string().contains("stopping"), "{err}");
    });
    // From now on nothing retries: one try, then the error.
    proxy.wait_for_refused(2);
    let refused_before = proxy.refused();
    let err = sink.get(&key).unwrap_err();
    assert_eq!(proxy.refused() - refused_before, 1, "{err}");
}
