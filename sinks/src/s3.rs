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
//! - **Retries**: `object_store` retries transient failures (timeouts, 5xx, throttling) with
//!   bounded exponential backoff (at most [`MAX_RETRIES`] tries within [`RETRY_TIMEOUT`]); what
//!   reaches Ferry after that is reported as permanent.
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
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode as StorePutMode, PutOptions, PutPayload,
    RetryConfig,
};

use crate::leftover::{self, Leftover};
use crate::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Retry, Sink, SinkError};

/// Most tries of one request (object_store's retry policy).
pub const MAX_RETRIES: usize = 6;
/// Longest time spent retrying one request.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Where and how to reach a bucket.
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

impl S3Config {
    /// Reads endpoint, region and credentials from the usual AWS variables: `AWS_ENDPOINT_URL`,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`, default `us-east-1`), `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP` (`true`/`1`).
    pub fn from_env(bucket: &str, prefix: &str) -> Result<S3Config, SinkError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing = |name: &str| SinkError::Location {
            location: format!("s3://{bucket}/{prefix}"),
            reason: format!("{name} is not set"),
        };
        Ok(S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: var("AWS_ENDPOINT_URL"),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id: var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            secret_access_key: Secret::new(
                var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
            ),
            allow_http: var("AWS_ALLOW_HTTP").is_some_and(|v| v == "true" || v == "1"),
        })
    }
}

/// A bucket (and prefix) as a [`Sink`].
pub struct S3Sink {
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    prefix: String,
    location: String,
}

impl fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Sink")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl S3Sink {
    /// Connects to the bucket and checks that it is reachable with these credentials (one
    /// listing request), so a wrong key or a missing bucket is reported here, by name.
    pub fn open(config: &S3Config) -> Result<S3Sink, SinkError> {
        let location = match &config.endpoint {
            Some(endpoint) => format!("s3://{}/{} at {endpoint}", config.bucket, config.prefix),
            None => format!("s3://{}/{}", config.bucket, config.prefix),
        };
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(config.secret_access_key.expose())
            .with_allow_http(config.allow_http)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
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
            location,
        };
        sink.probe()?;
        Ok(sink)
    }

    /// One listing request: fails with a clear error for a missing bucket or bad credentials.
    fn probe(&self) -> Result<(), SinkError> {
        let store = Arc::clone(&self.store);
        let prefix = self.store_path_str("");
        let first = self.runtime.block_on(async move {
            let prefix = (!prefix.is_empty()).then(|| StorePath::from(prefix));
            store.list(prefix.as_ref()).next().await
        });
        match first {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.error("list", "", e)),
        }
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
    fn error(&self, op: &'static str, key: &str, e: object_store::Error) -> SinkError {
        let message = e.to_string();
        match e {
            object_store::Error::NotFound { .. } => SinkError::NotFound {
                key: key.to_owned(),
            },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => SinkError::AccessDenied {
                location: self.location.clone(),
                reason: message,
            },
            _ if message.contains("NoSuchBucket") => SinkError::Location {
                location: self.location.clone(),
                reason: "the bucket does not exist".to_owned(),
            },
            _ if message.contains("InvalidAccessKeyId")
                || message.contains("SignatureDoesNotMatch")
                || message.contains("AccessDenied")
                || message.contains("403") =>
            {
                SinkError::AccessDenied {
                    location: self.location.clone(),
                    reason: message,
                }
            }
            _ => SinkError::Io {
                op,
                key: key.to_owned(),
                retry: Retry::Permanent,
                source: std::io::Error::other(message),
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
}

impl Sink for S3Sink {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        let path = self.path(key);
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        let options = PutOptions {
            mode: match mode {
                PutMode::Overwrite => StorePutMode::Overwrite,
                PutMode::Create => StorePutMode::Create,
            },
            ..PutOptions::default()
        };
        let store = Arc::clone(&self.store);
        let result = self
            .runtime
            .block_on(async move { store.put_opts(&path, payload, options).await });
        match result {
            Ok(_) => Ok(PutOutcome::Written),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
                if mode == PutMode::Create =>
            {
                Ok(PutOutcome::AlreadyExists)
            }
            // A server may answer a conditional put of an existing object with 412 before it
            // reads the body and close the connection (s3s-fs does, for a 4 MiB chunk): the
            // client sees only a failed send. An object now under the key means put-if-absent
            // found it there (a put is atomic, so it is whole).
            Err(e) if mode == PutMode::Create && self.head(key).is_ok() => {
                log::debug!("put {key} failed ({e}) but the object exists: already stored");
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(self.error("put", key.as_str(), e)),
        }
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        let path = self.path(key);
        let store = Arc::clone(&self.store);
        self.runtime
            .block_on(async move { store.get(&path).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.error("get", key.as_str(), e))
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        SinkError::check_range(key, start, end, self.head(key)?.size)?;
        if start == end {
            return Ok(Vec::new());
        }
        let path = self.path(key);
        let store = Arc::clone(&self.store);
        let range: Range<u64> = start..end;
        self.runtime
            .block_on(async move { store.get_range(&path, range).await })
            .map(|b| b.to_vec())
            .map_err(|e| self.error("get", key.as_str(), e))
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        let path = self.path(key);
        let store = Arc::clone(&self.store);
        let meta = self
            .runtime
            .block_on(async move { store.head(&path).await })
            .map_err(|e| self.error("head", key.as_str(), e))?;
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
        let store = Arc::clone(&self.store);
        let stream = {
            let _guard = self.runtime.enter();
            let directory = (!directory.is_empty()).then(|| StorePath::from(directory));
            store.list(directory.as_ref())
        };
        Ok(Box::new(S3List {
            sink: self,
            stream,
            prefix: prefix.to_owned(),
        }))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        let path = self.path(key);
        let store = Arc::clone(&self.store);
        match self
            .runtime
            .block_on(async move { store.delete(&path).await })
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key.as_str(), e)),
        }
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

/// A listing, fetched page by page as it is iterated.
struct S3List<'a> {
    sink: &'a S3Sink,
    stream: BoxStream<'static, object_store::Result<object_store::ObjectMeta>>,
    prefix: String,
}

impl Iterator for S3List<'_> {
    type Item = Result<ObjectMeta, SinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = self.sink.runtime.block_on(self.stream.next())?;
            match item {
                Err(e) => return Some(Err(self.sink.error("list", &self.prefix, e))),
                Ok(meta) => {
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
}
