//! The S3 sink against a real S3-compatible server (s3s-fs on 127.0.0.1).

#[path = "support/outage.rs"]
mod outage;
#[path = "support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;
#[path = "support/tcp_proxy.rs"]
#[allow(dead_code)]
mod tcp_proxy;

use std::time::Duration;

use ferry_sinks::retry::RetryPolicy;
use ferry_sinks::s3::{ENDPOINT_SETTING, S3Config, S3Sink, Secret};
use ferry_sinks::{ObjectKey, PutMode, Retry, Sink, SinkError, conformance};
use s3_server::{SECRET_KEY, server};
use tcp_proxy::TcpProxy;

fn config(bucket: &str, prefix: &str, secret: &str) -> S3Config {
    S3Config {
        secret_access_key: Secret::new(secret),
        ..server().config(bucket, prefix)
    }
}

#[test]
fn conformance_at_bucket_root_and_under_a_prefix() {
    let bucket = server().bucket("conformance");
    let root = S3Sink::open(&config(&bucket, "", SECRET_KEY)).unwrap();
    conformance::run_all(&root);
    let prefixed = S3Sink::open(&config(&bucket, "some/prefix", SECRET_KEY)).unwrap();
    conformance::run_all(&prefixed);
}

#[test]
fn wrong_credentials_are_refused_by_name_without_the_secret() {
    let bucket = server().bucket("creds");
    let wrong = "wrong-secret-must-not-appear-anywhere";
    let err = S3Sink::open(&config(&bucket, "", wrong)).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, SinkError::AccessDenied { .. }), "{shown}");
    assert!(!shown.contains(wrong), "the secret leaked: {shown}");
    assert!(!shown.contains(SECRET_KEY), "the secret leaked: {shown}");
}

#[test]
fn missing_bucket_is_named() {
    let err = S3Sink::open(&config("no-such-bucket", "", SECRET_KEY)).unwrap_err();
    assert!(
        matches!(&err, SinkError::Location { reason, .. } if reason.contains("does not exist")),
        "{err}"
    );
}

#[test]
fn debug_and_location_never_show_the_secret() {
    let bucket = server().bucket("debug");
    let sink = S3Sink::open(&config(&bucket, "p", SECRET_KEY)).unwrap();
    let shown = format!(
        "{sink:?} {} {:?}",
        sink.location(),
        config(&bucket, "p", SECRET_KEY)
    );
    assert!(!shown.contains(SECRET_KEY), "{shown}");
    assert!(sink.location().starts_with("s3://debug/p"));
}

/// A proxy in front of the test server, and a sink that reaches the server through it.
fn behind_proxy(bucket: &str, retry: RetryPolicy) -> (TcpProxy, S3Sink) {
    let proxy = TcpProxy::start(server().address());
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let config = server().config_at(&endpoint, bucket, "");
    let sink = S3Sink::open_with(&config, retry).unwrap();
    (proxy, sink)
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

/// A server that goes away for a while (restart, network blip): each operation keeps trying
/// until it is back, so a put started during the outage stores its object.
#[test]
fn an_outage_shorter_than_the_deadline_is_ridden_out() {
    let bucket = server().bucket("outage");
    let (proxy, sink) = behind_proxy(&bucket, RetryPolicy::default());
    outage::a_put_rides_out_an_outage(&sink, &proxy);
}

/// A listing whose next page fails resumes after the last key it returned: every key once.
#[test]
fn a_listing_interrupted_by_an_outage_resumes_without_repeats_or_gaps() {
    let bucket = server().bucket("outage-list");
    let (proxy, sink) = behind_proxy(&bucket, RetryPolicy::default());
    let count = 1500; // more than one page (1000 keys)
    for i in 0..count {
        sink.put(&key(&format!("chunks/{i:05}")), b"x", PutMode::Create)
            .unwrap();
    }
    let mut listed = Vec::new();
    std::thread::scope(|scope| {
        let mut list = sink.list("chunks/").unwrap();
        listed.push(list.next().unwrap().unwrap().key);
        // The first page is in memory; the second is fetched during the outage.
        proxy.go_down();
        scope.spawn(|| {
            proxy.wait_for_refused(2);
            proxy.come_up();
        });
        listed.extend(list.map(|meta| meta.unwrap().key));
    });
    let mut expected: Vec<ObjectKey> = (0..count).map(|i| key(&format!("chunks/{i:05}"))).collect();
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected);
}

/// A server that stays away: the operation fails after the deadline as a transient failure
/// that says what happened, never as a missing object or denied access (the bucket name
/// holds "403", which once read as an HTTP status).
#[test]
fn a_lasting_outage_is_a_transient_error_naming_the_connection() {
    let bucket = server().bucket("b403x");
    let (proxy, sink) = behind_proxy(&bucket, RetryPolicy::with_deadline(Duration::from_secs(1)));
    let shown = outage::a_lasting_outage_fails_transiently(&sink, &proxy);
    assert!(
        shown.contains("no usable connection to the S3 server"),
        "{shown}"
    );
    // The sink gave up at the deadline, so it is away: every operation now fails after one
    // try (no new deadline each), until one succeeds.
    for err in [
        sink.head(&key("kept")).unwrap_err(),
        sink.put(&key("new"), b"y", PutMode::Create).unwrap_err(),
        sink.list("").unwrap().next().unwrap().unwrap_err(),
    ] {
        assert_eq!(err.retry(), Retry::Transient, "{err}");
        assert!(matches!(err, SinkError::Io { .. }), "{err}");
        let shown = err.to_string();
        assert!(
            shown.contains("no usable connection to the S3 server"),
            "{shown}"
        );
        assert!(shown.contains("gave up after 1 try"), "tried once: {shown}");
    }
    proxy.come_up();
    sink.head(&key("kept")).unwrap();
    proxy.go_down();
    let retried = sink.head(&key("kept")).unwrap_err().to_string();
    assert!(
        retried.contains("gave up after"),
        "back, then away again: {retried}"
    );
}

/// A malformed endpoint is refused by name before any request (object_store panicked on some),
/// and credentials written into the URL are never echoed.
#[test]
fn malformed_endpoints_are_refused_by_name() {
    let bucket = server().bucket("endpoints");
    for (endpoint, allow_http, expected) in [
        ("127.0.0.1:9000", true, "not a valid URL"),
        ("localhost:9000", true, "not http or https"),
        ("http://127.0.0.1:99999", true, "not a valid URL"),
        ("http://[::1", true, "not a valid URL"),
        ("ftp://127.0.0.1:9000", true, "not http or https"),
        ("http://127.0.0.1:9000", false, "AWS_ALLOW_HTTP"),
        ("http://127.0.0.1:9000/?x=1", true, "query"),
        (
            "http://AKID:hunter2secret@127.0.0.1:9000",
            true,
            "user name or password",
        ),
    ] {
        let config = S3Config {
            endpoint: Some(endpoint.to_owned()),
            allow_http,
            ..config(&bucket, "", SECRET_KEY)
        };
        let err = S3Sink::open(&config).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            matches!(
                &err,
                SinkError::Setting {
                    name: ENDPOINT_SETTING,
                    ..
                }
            ),
            "{endpoint}: {shown}"
        );
        assert!(shown.contains(expected), "{endpoint}: {shown}");
        assert!(!shown.contains("hunter2secret"), "{endpoint}: {shown}");
    }
}

/// https:// to a plain-HTTP server fails the same way every time (the TLS handshake meets a
/// reply that is not TLS): reported at once, with its cause, not retried for the deadline.
#[test]
fn tls_to_a_plain_http_server_is_a_permanent_error() {
    let bucket = server().bucket("tls");
    let endpoint = format!("https://{}", server().address());
    let config = server().config_at(&endpoint, &bucket, "");
    let err = S3Sink::open_with(&config, RetryPolicy::default()).unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.retry(), Retry::Permanent, "{shown}");
    assert!(!shown.contains("gave up after"), "retried: {shown}");
}

/// A server that accepts requests and never answers: a try waits only what is left of the
/// retry deadline (at least 15 s), not the 120 s request timeout, and the failure says so.
#[test]
fn a_silent_server_is_given_up_at_the_deadline_not_the_request_timeout() {
    let bucket = server().bucket("silent");
    let (proxy, sink) = behind_proxy(&bucket, RetryPolicy::with_deadline(Duration::from_secs(1)));
    sink.put(&key("kept"), b"x", PutMode::Create).unwrap();
    proxy.go_silent();
    let err = sink.get(&key("kept")).unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.retry(), Retry::Transient, "{shown}");
    assert!(
        shown.contains("no reply from the S3 server within 15 s"),
        "{shown}"
    );
    assert!(shown.contains("gave up after 1 try"), "{shown}");
}
