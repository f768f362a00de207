//! Repository locations: `PATH` or `file://PATH` (a local directory). `s3://` and `nfs://`
//! are recognised and refused by name until their sinks land.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use ferry_sinks::Sink;
use ferry_sinks::local::LocalSink;

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    Local(PathBuf),
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
        if let Some((scheme, _)) = url.split_once("://") {
            match scheme {
                "s3" | "nfs" => bail!(
                    "{scheme}:// repositories are not supported by this build yet; use a local directory"
                ),
                _ => bail!("unknown repository scheme {scheme}:// (use a path or file://PATH)"),
            }
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
        }
    }
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
        assert!(RepoUrl::parse("ftp://x").is_err());
        assert!(RepoUrl::parse("").is_err());
    }
}
