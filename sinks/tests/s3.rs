//! The S3 sink against a real S3-compatible server (s3s-fs on 127.0.0.1).

#[path = "support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

use ferry_sinks::s3::{S3Config, S3Sink, Secret};
use ferry_sinks::{Sink, SinkError, conformance};
use s3_server::{ACCESS_KEY, SECRET_KEY, server};

fn config(bucket: &str, prefix: &str, secret: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: Some(server().endpoint.clone()),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: Secret::new(secret),
        allow_http: true,
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
