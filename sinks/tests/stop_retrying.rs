//! A process that is stopping abandons its sinks' requests and retries at once (its own test
//! binary, one test: the stop is process-wide). A server that stopped answering must not hold
//! an orderly stop (SIGINT) for the request timeout, nor an outage for the retry deadline
//! (the CLI test of SIGINT during an outage covers the wait between tries).

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
fn a_stop_abandons_a_request_awaiting_its_reply_and_ends_retries() {
    let server = s3_server::server();
    let proxy = TcpProxy::start(server.address());
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let config = server.config_at(&endpoint, &server.bucket("stop"), "");
    // The default deadline and request timeout: without the stop, the put below would wait
    // 120 s for a reply that never comes.
    let sink = S3Sink::open_with(&config, RetryPolicy::default()).unwrap();
    let key = ObjectKey::new("chunks/ab/x").unwrap();
    proxy.go_silent();
    std::thread::scope(|scope| {
        let put = scope.spawn(|| sink.put(&key, b"data", PutMode::Create));
        proxy.wait_for_held(1);
        stop_retrying();
        let err = put.join().unwrap().unwrap_err();
        assert_eq!(err.retry(), Retry::Transient, "{err}");
        assert!(err.to_string().contains("stopping"), "{err}");
    });
    // From now on nothing retries: one try, then the error.
    proxy.go_down();
    let refused_before = proxy.refused();
    let err = sink.get(&key).unwrap_err();
    assert_eq!(proxy.refused() - refused_before, 1, "{err}");
}
