//! Repository locations: `PATH` or `file://PATH` (a local directory), `s3://BUCKET[/PREFIX]`
//! (S3 or an S3-compatible store; endpoint, region and credentials from the AWS environment
//! variables), `nfs://HOST[:PORT]/PATH` (a directory on an NFS export, over NFSv3 from user
//! space; `PATH` is the export's path followed by the directory inside it).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use ferry_sinks::Sink;
use ferry_sinks::local::LocalSink;
use ferry_sinks::nfs::{NfsConfig, NfsSink};
use ferry_sinks::s3::{S3Config, S3Sink};

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
    Nfs(NfsConfig),
}

impl RepoUrl {
    pub fn parse(url: &str) -> Result<RepoUrl> {
        if url.is_empty() {
            bail!("empty repository location");
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("file:// repository URLs need an absolute path: {url}");
            }
            return Ok(RepoUrl::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                bail!("{url}: {bucket:?} is not a valid S3 bucket name");
            }
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty() {
                ferry_sinks::ObjectKey::new(prefix)
                    .map_err(|e| anyhow::anyhow!("{url}: invalid prefix: {}", e.reason))?;
            }
            return Ok(RepoUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("nfs://") {
            return parse_nfs(url, rest).map(RepoUrl::Nfs);
        }
        if let Some((scheme, _)) = url.split_once("://") {
            bail!(
                "unknown repository scheme {scheme}:// (use a path, file://PATH, s3://BUCKET/PREFIX or nfs://HOST/PATH)"
            );
        }
        Ok(RepoUrl::Local(PathBuf::from(url)))
    }

    /// The sink of an existing location.
    pub fn open(&self) -> Result<Arc<dyn Sink>> {
        match self {
            RepoUrl::Local(path) => {
                if let Err(e) = std::fs::metadata(path)
                    && e.kind() == std::io::ErrorKind::NotFound
                {
                    bail!(
                        "{} does not exist; create a repository there with `ferry init` first",
                        path.display()
                    );
                }
                Ok(Arc::new(LocalSink::open(path)?))
            }
            RepoUrl::S3 { bucket, prefix } => Ok(Arc::new(S3Sink::open(&S3Config::from_env(
                bucket, prefix,
            )?)?)),
            RepoUrl::Nfs(config) => Ok(Arc::new(NfsSink::open(config)?)),
        }
    }

    /// The sink of a location for a new repository, created if missing. A local directory must
    /// be missing or empty, so `init` never mixes a repository into unrelated files.
    pub fn create(&self) -> Result<Arc<dyn Sink>> {
        match self {
            RepoUrl::Local(path) => {
                if let Ok(mut entries) = std::fs::read_dir(path)
                    && entries.next().is_some()
                    && !path.join("config").exists()
                {
                    bail!(
                        "{} is not empty; a new repository needs an empty or missing directory",
                        path.display()
                    );
                }
                Ok(Arc::new(LocalSink::create(path)?))
            }
            // Init's put-if-absent of the config refuses a prefix that holds a repository.
            RepoUrl::S3 { .. } => self.open(),
            RepoUrl::Nfs(config) => Ok(Arc::new(NfsSink::create(config)?)),
        }
    }
}

/// `HOST[:PORT]/PATH` of an `nfs://` URL: a host name or IPv4 address, an optional NFS port
/// (default: ask the portmapper), and an absolute path of plain segments.
fn parse_nfs(url: &str, rest: &str) -> Result<NfsConfig> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| anyhow::anyhow!("{url}: {port:?} is not a port number"))?;
            (host, Some(port))
        }
        None => (authority, None),
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid_host {
        bail!("{url}: {host:?} is not a host name or IPv4 address");
    }
    let path: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    if path
        .iter()
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\0'))
    {
        bail!("{url}: the path must be /EXPORT[/DIR...] without empty, '.' or '..' segments");
    }
    Ok(NfsConfig {
        host: host.to_owned(),
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            RepoUrl::parse("/srv/repo").unwrap(),
            RepoUrl::Local("/srv/repo".into())
        );
        assert_eq!(
            RepoUrl::parse("file:///srv/repo").unwrap(),
            RepoUrl::Local("/srv/repo".into())
        );
        assert_eq!(
            RepoUrl::parse("rel/dir").unwrap(),
            RepoUrl::Local("rel/dir".into())
        );
        assert!(RepoUrl::parse("file://rel").is_err());
        assert_eq!(
            RepoUrl::parse("s3://bucket-1/a/b/").unwrap(),
            RepoUrl::S3 {
                bucket: "bucket-1".into(),
                prefix: "a/b".into()
            }
        );
        assert!(RepoUrl::parse("s3://B/x").is_err());
        assert!(RepoUrl::parse("s3://bucket/../x").is_err());
        assert_eq!(
            RepoUrl::parse("nfs://filer.lan:2049/srv/nfs/backups/").unwrap(),
            RepoUrl::Nfs(NfsConfig {
                host: "filer.lan".into(),
                port: Some(2049),
                path: vec!["srv".into(), "nfs".into(), "backups".into()],
            })
        );
        assert_eq!(
            RepoUrl::parse("nfs://10.0.0.5/export").unwrap(),
            RepoUrl::Nfs(NfsConfig {
                host: "10.0.0.5".into(),
                port: None,
                path: vec!["export".into()],
            })
        );
        for bad in [
            "nfs://",
            "nfs://host",
            "nfs://host/",
            "nfs://host:0/x",
            "nfs://host:nfs/x",
            "nfs://ho st/x",
            "nfs://host/a//b",
            "nfs://host/a/../b",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(RepoUrl::parse("ftp://x").is_err());
        assert!(RepoUrl::parse("").is_err());
    }
}
