//! S3 (and S3-compatible) object storage through the `object_store` crate.
//!
//! How each part of the [`Sink`](crate::Sink) contract is met:
//! - **Atomic put**: a single S3 PUT is atomic (readers see the old object, none, or the new
//!   one); an interrupted PUT creates nothing.
//! - **Durable on return**: S3 acknowledges a PUT once it is stored.
//! - **Put-if-absent**: `PutMode::Create` sends `If-None-Match: *`; the store answers 412 for an
//!   existing key, reported as [`PutOutcome::AlreadyExists`]. Needs a store that honours
//!   conditional writes (AWS S3 since 2024, MinIO, R2, s3s).
//! - **list**: paginated by `object_store`; a prefix ending mid-segment lists the enclosing
//!   "directory" and filters, since S3 prefixes are segment-aligned in `object_store`.
//! - **Retries**: every operation is retried by Ferry's [`RetryPolicy`](crate::retry) (120 s
//!   by default) when it fails transiently: the connection is refused, dropped or times out
//!   (PUTs included: every Ferry put may be repeated, see below), or the server answers 5xx,
//!   429 or 408. `object_store`'s own retries are off, so one policy, with one deadline and
//!   one warning line, governs all of it. Everything else (no such bucket, access denied, a
//!   malformed request) fails at once and says so. What fails after the deadline reports
//!   [`Retry::Transient`], and says how often it was tried.
//! - **Repeated puts**: a put whose reply was lost may have stored the object. A repeated
//!   [`PutMode::Overwrite`] stores the same bytes again. A repeated [`PutMode::Create`] that
//!   finds the object compares it with its own bytes: equal means this put wrote it
//!   ([`PutOutcome::Written`]), different means another writer did.
//! - **Listing** resumes after the last key it returned when a page request fails (S3 lists in
//!   key order), so a retried page neither repeats nor skips keys.
//! - **Endpoint**: the endpoint URL is checked before any request: an `http://` or `https://`
//!   URL with a host, and no user name or password in it (credentials belong in the
//!   credential variables, and a URL is printed in messages).
//!
//! Blocking: the sink owns a small tokio runtime and each call blocks its (uploader) thread on
//! one request, so concurrency is the number of uploader threads and memory stays bounded.
//!
//! Secrets: the secret key lives only inside the `object_store` client. [`S3Config`]'s `Debug`
//! redacts it, [`S3Sink`]'s `Debug` and [`Sink::location`] show bucket, prefix and endpoint
//! only, and errors are built from the store's messages, which never include credentials
//! (requests are signed in headers).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as StorePath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode as StorePutMode, PutOptions, PutPayload,
    RetryConfig,
};

use crate::leftover::{self, Leftover};
use crate::retry::{GaveUp, Retrier, RetryPolicy};
use crate::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Retry, Sink, SinkError};

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where and how to reach a bucket. The `ferry` binary fills it from its flags and the AWS
/// environment variables (`cli/src/s3_settings.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; empty for the bucket root).
    pub prefix: String,
    /// e.g. `http://127.0.0.1:9000`; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Allow plain-HTTP endpoints.
    pub allow_http: bool,
}

/// A bucket (and prefix) as a [`Sink`].
pub struct S3Sink {
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    prefix: String,
    location: String,
    retrier: Retrier,
}

impl fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Sink")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Longest time one request may take, body included: a 4 MiB chunk needs at least 35 KiB/s
/// per upload in flight (object_store's default, 30 s, failed every chunk put on a link of a
/// few Mbit/s shared by 8 uploads).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest time a request may wait for its reply, whatever is left of the retry deadline.
pub const MIN_REQUEST_TIME: Duration = Duration::from_secs(15);
/// A request without a reply for this long is reported (once, throttled per sink).
pub const NO_REPLY_WARNING: Duration = Duration::from_secs(15);
/// Longest wait for a request made while the process is stopping (releasing a lock).
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the check whether a put whose connection broke off stored its object.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The name errors about the endpoint URL give it (it comes from `AWS_ENDPOINT_URL` or a flag).
pub const ENDPOINT_SETTING: &str = "S3 endpoint";

/// Checks an endpoint URL before `object_store` sees it (it panics on some malformed ones)
/// and returns it as it will be shown in messages.
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<String, SinkError> {
    let invalid = |reason: String| SinkError::Setting {
        name: ENDPOINT_SETTING,
        reason,
    };
    // What messages may show of it: no user information, query or fragment, which could hold
    // credentials.
    let shown = shown_endpoint(endpoint);
    // The URL parser would trim or escape these; the HTTP client refuses them (it panicked).
    if let Some(c) = endpoint
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(invalid(format!(
            "{shown:?} holds the character {c:?}, which a URL cannot hold"
        )));
    }
    let url = url::Url::parse(endpoint).map_err(|e| {
        invalid(format!(
            "{shown:?} is not a valid URL ({e}); expected e.g. http://127.0.0.1:9000 or \
             https://s3.example.com"
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "the URL holds a user name or password; give credentials in AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY instead"
                .to_owned(),
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(invalid(format!(
                "{shown} is plain HTTP; allow it with AWS_ALLOW_HTTP=true or --s3-allow-http"
            )));
        }
        scheme => {
            return Err(invalid(format!(
                "{shown:?}: scheme {scheme:?} is not http or https; expected e.g. \
                 http://127.0.0.1:9000"
            )));
        }
    }
    // `http://host:` parses as the scheme's default port; the user meant to give one.
    if url.port() == Some(0) || authority(endpoint).ends_with(':') {
        return Err(invalid(format!("{shown:?}: no port to connect to")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{shown:?} names no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "{shown:?}: an endpoint cannot have a query or fragment (not shown)"
        )));
    }
    Ok(endpoint.to_owned())
}

/// The authority part of `scheme://authority/path?query` (all of it after `://` when there
/// is no path).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// `endpoint` as messages may show it: user information replaced by `***`, query and
/// fragment cut off.
fn shown_endpoint(endpoint: &str) -> String {
    let without_query = endpoint.split(['?', '#']).next().unwrap_or("");
    let host_part = authority(without_query);
    match host_part.rsplit_once('@') {
        Some((_, host)) => without_query.replacen(host_part, &format!("***@{host}"), 1),
        None => without_query.to_owned(),
    }
}

/// How a failed request should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The server was not reached, or the exchange broke off (`Request`, `Interrupted`), or
    /// it timed out.
    Transport(HttpErrorKind),
    /// The server answered with this HTTP status.
    Status(u16),
    /// The process is stopping: the request was abandoned ([`Stopped`]).
    Stopped,
    /// The connection worked but the other end does not speak the protocol (TLS to a
    /// plain-HTTP server): the same every time.
    Protocol,
    /// Anything else (a malformed request, an unexpected reply, a TLS or protocol mismatch).
    Other,
}

impl Failure {
    /// Finds the failure in an error's source chain.
    fn of(error: &object_store::Error) -> Failure {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            if e.downcast_ref::<Stopped>().is_some() {
                return Failure::Stopped;
            }
            if e.downcast_ref::<NoReply>().is_some() {
                return Failure::Transport(HttpErrorKind::Timeout);
            }
            if let Some(http) = e.downcast_ref::<HttpError>() {
                return Failure::of_transport(http);
            }
            // object_store's status errors are not public types; their message is.
            if let Some(status) = e
                .to_string()
                .strip_prefix("Server returned non-2xx status code: ")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok())
            {
                return Failure::Status(status);
            }
            current = e.source();
        }
        Failure::Other
    }

    fn of_transport(http: &HttpError) -> Failure {
        // A TLS handshake with a plain-HTTP server, or any reply that is not HTTP, fails the
        // same way every time: the connection worked, the protocol did not.
        let mut cause = std::error::Error::source(http);
        while let Some(e) = cause {
            if is_invalid_data(e) {
                return Failure::Protocol;
            }
            cause = e.source();
        }
        match http.kind() {
            kind @ (HttpErrorKind::Connect
            | HttpErrorKind::Request
            | HttpErrorKind::Timeout
            | HttpErrorKind::Interrupted
            | HttpErrorKind::Decode) => Failure::Transport(kind),
            // object_store leaves some lost connections unclassified ("error sending request"
            // when the pooled connection was cut): reqwest knows.
            _ => match std::error::Error::source(http)
                .and_then(|e| e.downcast_ref::<reqwest::Error>())
            {
                Some(e) if e.is_request() || e.is_body() => {
                    Failure::Transport(HttpErrorKind::Request)
                }
                Some(e) if e.is_connect() => Failure::Transport(HttpErrorKind::Connect),
                Some(e) if e.is_timeout() => Failure::Transport(HttpErrorKind::Timeout),
                _ => Failure::Other,
            },
        }
    }

    fn is_transient(self) -> bool {
        match self {
            Failure::Transport(_) => true,
            // 507: the store is full (MinIO answers it), which waiting does not fix.
            Failure::Status(507) => false,
            Failure::Status(status) => status >= 500 || status == 429 || status == 408,
            Failure::Stopped | Failure::Protocol | Failure::Other => false,
        }
    }

    /// The connection broke off before a reply: the request may or may not have been carried
    /// out (a timeout is not this: a server that stopped answering would not answer a check).
    fn is_broken_exchange(self) -> bool {
        matches!(
            self,
            Failure::Transport(HttpErrorKind::Request | HttpErrorKind::Interrupted)
        )
    }
}

/// Whether `error` is, or wraps (as the TLS layer does, inside an `io::Error` of another
/// kind), an `io::Error` of kind `InvalidData`.
fn is_invalid_data(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(io) = current.and_then(|e| e.downcast_ref::<std::io::Error>()) {
        if io.kind() == std::io::ErrorKind::InvalidData {
            return true;
        }
        // `io::Error::source` skips the wrapped error itself; `get_ref` gives it.
        current = io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static));
    }
    false
}

/// A request that had no reply within its limit ([`S3Sink::request_limit`]): a timeout.
#[derive(Debug)]
struct NoReply(Duration);

impl fmt::Display for NoReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no reply from the S3 server within {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for NoReply {}

thread_local! {
    /// When the operation this thread is running ([`S3Sink::call`]) started: its requests
    /// share its retry deadline.
    static OPERATION_STARTED: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// A request abandoned because the process is stopping ([`crate::retry::stopping`]).
#[derive(Debug)]
struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("abandoned: ferry is stopping")
    }
}

impl std::error::Error for Stopped {}

/// The message of a store error, with the innermost cause when the message lacks it
/// (object_store stops at "error sending request"; the cause says "Connection refused").
fn describe(error: &object_store::Error) -> String {
    let message = error.to_string();
    match root_cause(error) {
        Some(cause) if !message.contains(cause.as_str()) => format!("{message} ({cause})"),
        _ => message,
    }
}

/// The innermost error of a chain, when there is more than one.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = error.source()?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

/// The S3 error code of a reply (`<Code>NoSuchBucket</Code>`), if the message carries one.
fn s3_error_code(message: &str) -> Option<&str> {
    let start = message.find("<Code>")? + "<Code>".len();
    let len = message[start..].find("</Code>")?;
    Some(&message[start..start + len])
}

impl S3Sink {
    /// Connects to the bucket and checks that it is reachable with these credentials (one
    /// listing request), so a wrong key or a missing bucket is reported here, by name.
    /// Transient failures are retried as [`RetryPolicy::from_env`] says.
    pub fn open(config: &S3Config) -> Result<S3Sink, SinkError> {
        S3Sink::open_with(config, RetryPolicy::from_env()?)
    }

    /// [`open`](Self::open) with an explicit retry policy.
    pub fn open_with(config: &S3Config, retry: RetryPolicy) -> Result<S3Sink, SinkError> {
        let endpoint = config
            .endpoint
            .as_deref()
            .map(|e| check_endpoint(e, config.allow_http))
            .transpose()?;
        let location = match &endpoint {
            Some(endpoint) => format!("s3://{}/{} at {endpoint}", config.bucket, config.prefix),
            None => format!("s3://{}/{}", config.bucket, config.prefix),
        };
        // Ferry retries (see the module docs); object_store tries each request once.
        let single_try = RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        };
        let client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        let mut builder = AmazonS3Builder::new()
            .with_client_options(client)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(config.secret_access_key.expose())
            .with_allow_http(config.allow_http)
            .with_retry(single_try);
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| SinkError::Location {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("ferry-s3")
            .build()
            .map_err(|e| SinkError::Location {
                location: location.clone(),
                reason: format!("cannot start the I/O runtime: {e}"),
            })?;
        let sink = S3Sink {
            store: Arc::new(store),
            runtime,
            prefix: config.prefix.clone(),
            retrier: Retrier::new(retry, location.clone()),
            location,
        };
        sink.probe()?;
        Ok(sink)
    }

    /// One listing request: fails with a clear error for a missing bucket or bad credentials.
    fn probe(&self) -> Result<(), SinkError> {
        let prefix = self.store_path_str("");
        let key = format!("{prefix}/");
        self.call("list", &key, |_| {
            let store = Arc::clone(&self.store);
            let prefix = prefix.clone();
            self.await_reply("list", &key, async move {
                let prefix = (!prefix.is_empty()).then(|| StorePath::from(prefix));
                store.list(prefix.as_ref()).next().await.transpose()
            })
        })
        .map(drop)
    }

    /// Runs one request (given the 1-based try number) under the retry policy.
    fn call<T>(
        &self,
        op: &'static str,
        key: &str,
        attempt: impl FnMut(u32) -> Result<T, object_store::Error>,
    ) -> Result<T, SinkError> {
        let outer = OPERATION_STARTED.replace(Some(Instant::now()));
        let result = self
            .retrier
            .run(
                op,
                key,
                |e: &object_store::Error| Failure::of(e).is_transient(),
                describe,
                attempt,
            )
            .map_err(|gave_up| self.error(op, key, gave_up));
        OPERATION_STARTED.set(outer);
        result
    }

    /// How long the next request may wait for its reply: what is left of the operation's
    /// retry deadline (at least [`MIN_REQUEST_TIME`], at most [`REQUEST_TIMEOUT`]), or
    /// [`MIN_REQUEST_TIME`] while the sink is away, so a server that stopped answering cannot
    /// hold one try for much longer than the deadline asked for.
    fn request_limit(&self) -> Duration {
        if self.retrier.is_away() {
            return MIN_REQUEST_TIME;
        }
        match OPERATION_STARTED.get() {
            Some(started) => self
                .retrier
                .deadline()
                .saturating_sub(started.elapsed())
                .clamp(MIN_REQUEST_TIME, REQUEST_TIMEOUT),
            None => REQUEST_TIMEOUT,
        }
    }

    /// Runs one request to its reply, on the sink's runtime. Gives it up when the process
    /// starts stopping ([`Stopped`]), and warns (throttled) when no reply came within
    /// [`NO_REPLY_WARNING`]: the request timeout alone would leave the user in silence. A
    /// request made once the process is stopping (cleanup) has [`CLEANUP_TIMEOUT`]; any other
    /// has [`request_limit`](Self::request_limit), after which it fails as a timeout
    /// ([`NoReply`]).
    fn await_reply<T>(
        &self,
        op: &str,
        key: &str,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        self.runtime.block_on(async {
            if crate::retry::is_stopping() {
                // Cleanup after the stop (releasing a lock): one try, bounded.
                return match tokio::time::timeout(CLEANUP_TIMEOUT, request).await {
                    Ok(reply) => reply,
                    Err(elapsed) => Err(object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(elapsed),
                    }),
                };
            }
            let limit = self.request_limit();
            tokio::pin!(request);
            let no_reply = tokio::time::sleep(NO_REPLY_WARNING);
            tokio::pin!(no_reply);
            let gone = tokio::time::sleep(limit);
            tokio::pin!(gone);
            let mut warned = false;
            loop {
                tokio::select! {
                    reply = &mut request => return reply,
                    () = crate::retry::stopping() => {
                        return Err(object_store::Error::Generic {
                            store: "S3",
                            source: Box::new(Stopped),
                        });
                    }
                    () = &mut gone => {
                        return Err(object_store::Error::Generic {
                            store: "S3",
                            source: Box::new(NoReply(limit)),
                        });
                    }
                    () = &mut no_reply, if !warned && limit > NO_REPLY_WARNING => {
                        warned = true;
                        self.retrier.warn_no_reply(op, key, NO_REPLY_WARNING, limit);
                    }
                }
            }
        })
    }

    fn store_path_str(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        }
    }

    fn path(&self, key: &ObjectKey) -> StorePath {
        StorePath::from(self.store_path_str(key.as_str()))
    }

    /// Maps a store error to a [`SinkError`] naming the operation and key.
    fn error(
        &self,
        op: &'static str,
        key: &str,
        gave_up: GaveUp<object_store::Error>,
    ) -> SinkError {
        let retried = gave_up.retried_suffix();
        let e = gave_up.error;
        let failure = Failure::of(&e);
        let message = e.to_string();
        let access_denied = |reason: String| SinkError::AccessDenied {
            location: self.location.clone(),
            reason,
        };
        match e {
            object_store::Error::NotFound { .. } => SinkError::NotFound {
                key: key.to_owned(),
            },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => access_denied(message),
            _ => match s3_error_code(&message) {
                Some("NoSuchBucket") => SinkError::Location {
                    location: self.location.clone(),
                    reason: "the bucket does not exist".to_owned(),
                },
                Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => {
                    access_denied(message)
                }
                _ if matches!(failure, Failure::Status(401 | 403)) => access_denied(message),
                _ if failure == Failure::Status(507) => SinkError::NoSpace {
                    location: self.location.clone(),
                    key: key.to_owned(),
                },
                _ => {
                    let (retry, what) = match failure {
                        Failure::Transport(_) => {
                            (Retry::Transient, "no usable connection to the S3 server: ")
                        }
                        Failure::Stopped => (Retry::Transient, ""),
                        Failure::Protocol => (
                            Retry::Permanent,
                            "the S3 endpoint does not speak the expected protocol (an https:// \
                             URL for a plain-HTTP server? then use http:// and \
                             AWS_ALLOW_HTTP=true): ",
                        ),
                        _ if failure.is_transient() => (Retry::Transient, ""),
                        _ => (Retry::Permanent, ""),
                    };
                    SinkError::Io {
                        op,
                        key: key.to_owned(),
                        retry,
                        source: std::io::Error::other(format!("{what}{}{retried}", describe(&e))),
                    }
                }
            },
        }
    }

    fn meta(&self, meta: object_store::ObjectMeta) -> Option<ObjectMeta> {
        let full = meta.location.as_ref();
        let key = if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)?.strip_prefix('/')?
        };
        Some(ObjectMeta {
            key: ObjectKey::new(key).ok()?,
            size: meta.size,
            modified: SystemTime::from(meta.last_modified),
        })
    }

    /// One PUT request, with put-if-absent's answers mapped to [`PutOutcome`].
    fn put_once(
        &self,
        key: &str,
        path: &StorePath,
        data: &bytes::Bytes,
        mode: PutMode,
        retry: bool,
    ) -> Result<PutOutcome, object_store::Error> {
        let options = PutOptions {
            mode: match mode {
                PutMode::Overwrite => StorePutMode::Overwrite,
                PutMode::Create => StorePutMode::Create,
            },
            ..PutOptions::default()
        };
        let store = Arc::clone(&self.store);
        let (target, payload) = (path.clone(), PutPayload::from(data.clone()));
        let result = self.await_reply("put", key, async move {
            store.put_opts(&target, payload, options).await
        });
        match result {
            Ok(_) => return Ok(PutOutcome::Written),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
                if mode == PutMode::Create => {}
            // A server may answer a conditional put of an existing object with 412 before it
            // reads the body and close the connection (s3s-fs does, for a 4 MiB chunk): the
            // client sees only a broken exchange. An object now under the key means
            // put-if-absent found it there (a put is atomic, so it is whole). Not after a
            // timeout: a server that stopped answering would not answer the check either.
            Err(e) if mode == PutMode::Create && Failure::of(&e).is_broken_exchange() => {
                if !self.exists_within(key, path, CHECK_TIMEOUT) {
                    return Err(e);
                }
                log::debug!("put {path} failed ({e}) but the object exists");
            }
            Err(e) => return Err(e),
        }
        // On a repeated put, the object found may be the one an earlier try stored before its
        // reply was lost.
        if retry && self.stored_bytes_equal(key, path, data) {
            return Ok(PutOutcome::Written);
        }
        Ok(PutOutcome::AlreadyExists)
    }

    /// Whether an object is at `path`, asked once and answered within `limit` (false when
    /// not, or not known).
    fn exists_within(&self, key: &str, path: &StorePath, limit: Duration) -> bool {
        let store = Arc::clone(&self.store);
        let target = path.clone();
        self.await_reply("head", key, async move {
            match tokio::time::timeout(limit, store.head(&target)).await {
                Ok(reply) => reply.map(drop),
                Err(elapsed) => Err(object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(elapsed),
                }),
            }
        })
        .is_ok()
    }

    /// Whether the object at `path` holds exactly `data` (false when it cannot be read).
    fn stored_bytes_equal(&self, key: &str, path: &StorePath, data: &[u8]) -> bool {
        let store = Arc::clone(&self.store);
        let target = path.clone();
        self.await_reply("get", key, async move {
            store.get(&target).await?.bytes().await
        })
        .is_ok_and(|stored| stored.as_ref() == data)
    }
}

impl Sink for S3Sink {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        let path = self.path(key);
        let data = bytes::Bytes::copy_from_slice(data);
        self.call("put", key.as_str(), |tries| {
            self.put_once(key.as_str(), &path, &data, mode, tries > 1)
        })
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        let path = self.path(key);
        self.call("get", key.as_str(), |_| {
            let store = Arc::clone(&self.store);
            let path = path.clone();
            self.await_reply("get", key.as_str(), async move {
                store.get(&path).await?.bytes().await
            })
            .map(|b| b.to_vec())
        })
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        SinkError::check_range(key, start, end, self.head(key)?.size)?;
        if start == end {
            return Ok(Vec::new());
        }
        let path = self.path(key);
        self.call("get", key.as_str(), |_| {
            let store = Arc::clone(&self.store);
            let path = path.clone();
            let range: Range<u64> = start..end;
            self.await_reply("get", key.as_str(), async move {
                store.get_range(&path, range).await
            })
            .map(|b| b.to_vec())
        })
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        let path = self.path(key);
        let meta = self.call("head", key.as_str(), |_| {
            let store = Arc::clone(&self.store);
            let path = path.clone();
            self.await_reply("head", key.as_str(), async move { store.head(&path).await })
        })?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: meta.size,
            modified: SystemTime::from(meta.last_modified),
        })
    }

    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>
    {
        // object_store lists whole path segments: list the enclosing directory, then filter.
        let full_prefix = self.store_path_str(prefix);
        let directory = match full_prefix.rfind('/') {
            Some(i) => full_prefix[..i].to_owned(),
            None if prefix.is_empty() => full_prefix.clone(),
            None => String::new(),
        };
        let directory = (!directory.is_empty()).then(|| StorePath::from(directory));
        let stream = self.list_stream(directory.as_ref(), None);
        Ok(Box::new(S3List {
            sink: self,
            stream,
            directory,
            last: None,
            prefix: prefix.to_owned(),
        }))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        let path = self.path(key);
        self.call("delete", key.as_str(), |_| {
            let store = Arc::clone(&self.store);
            let path = path.clone();
            match self.await_reply(
                "delete",
                key.as_str(),
                async move { store.delete(&path).await },
            ) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// A put is one PutObject request (never a multipart upload): an interrupted one stores
    /// nothing, so there are never leftovers.
    fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
        leftover::parse_dir(dir)?;
        Ok(Vec::new())
    }

    fn remove_leftover(&self, _leftover: &Leftover) -> Result<(), SinkError> {
        Ok(())
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

type MetaStream = BoxStream<'static, object_store::Result<object_store::ObjectMeta>>;

impl S3Sink {
    /// The listing of `directory`, from the key after `after` when given.
    fn list_stream(&self, directory: Option<&StorePath>, after: Option<&StorePath>) -> MetaStream {
        let _guard = self.runtime.enter();
        match after {
            Some(after) => self.store.list_with_offset(directory, after),
            None => self.store.list(directory),
        }
    }
}

/// A listing, fetched page by page as it is iterated; a failed page is fetched again after
/// the last key returned.
struct S3List<'a> {
    sink: &'a S3Sink,
    stream: MetaStream,
    directory: Option<StorePath>,
    /// The last key the stream yielded.
    last: Option<StorePath>,
    prefix: String,
}

impl S3List<'_> {
    /// The next entry of the store's listing, retried under the sink's policy.
    fn next_entry(&mut self) -> Result<Option<object_store::ObjectMeta>, SinkError> {
        let S3List {
            sink,
            stream,
            directory,
            last,
            prefix,
        } = self;
        sink.call("list", prefix, |tries| {
            if tries > 1 {
                *stream = sink.list_stream(directory.as_ref(), last.as_ref());
            }
            let entry =
                sink.await_reply("list", prefix, async { stream.next().await.transpose() })?;
            if let Some(entry) = &entry {
                *last = Some(entry.location.clone());
            }
            Ok(entry)
        })
    }
}

impl Iterator for S3List<'_> {
    type Item = Result<ObjectMeta, SinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_entry() {
                Err(e) => return Some(Err(e)),
                Ok(None) => return None,
                Ok(Some(meta)) => {
                    if let Some(meta) = self.sink.meta(meta)
                        && meta.key.as_str().starts_with(&self.prefix)
                    {
                        return Some(Ok(meta));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let config = S3Config {
            bucket: "b".into(),
            prefix: "p".into(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI-very-secret"),
            allow_http: false,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn error_codes_are_read_from_the_reply_not_guessed_from_substrings() {
        let reply = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\
                     <Error><Code>NoSuchBucket</Code><Resource>/b403</Resource></Error>";
        assert_eq!(s3_error_code(reply), Some("NoSuchBucket"));
        assert_eq!(
            s3_error_code("GET http://h:9403/b403 - error sending request"),
            None
        );
        assert_eq!(s3_error_code("<Code>unterminated"), None);
    }

    #[test]
    fn endpoints_are_checked_before_use() {
        assert!(check_endpoint("https://s3.example.com", false).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000", true).is_ok());
        assert!(check_endpoint("http://[::1]:9000", true).is_ok());
        for (endpoint, allow_http) in [
            ("127.0.0.1:9000", true),
            ("http://127.0.0.1:9000", false),
            ("http://127.0.0.1:65536", true),
            ("s3://bucket", true),
            ("http://u:p@host", true),
            ("http://host/#frag", true),
            (" http://127.0.0.1:9000", true),
            ("http://127.0.0.1:9000 ", true),
            ("http://127.0.0.1:9000/a b", true),
            ("http://127.0.0.1:0", true),
            ("http://127.0.0.1:", true),
        ] {
            let err = check_endpoint(endpoint, allow_http).unwrap_err();
            assert!(
                matches!(
                    err,
                    SinkError::Setting {
                        name: ENDPOINT_SETTING,
                        ..
                    }
                ),
                "{endpoint}: {err}"
            );
        }
    }

    #[test]
    fn messages_never_show_credentials_or_queries_of_an_endpoint() {
        for (endpoint, allow_http) in [
            ("http://AKID:hunter2@[::1", true),
            ("http://AKID:hunter2@127.0.0.1:9000", true),
            ("http://127.0.0.1:9000/?X-Amz-Signature=hunter2", true),
            ("http://127.0.0.1:9000/#hunter2", true),
            ("http://AKID:hunter2@127.0.0.1:9000", false),
            ("ftp://u:hunter2@h/?k=hunter2", true),
        ] {
            let err = check_endpoint(endpoint, allow_http).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("hunter2"), "{endpoint}: {shown}");
        }
        assert_eq!(shown_endpoint("http://a:b@h:1/p?q#f"), "http://***@h:1/p");
        assert_eq!(shown_endpoint("https://h"), "https://h");
    }
}
