//! Repository locations: `PATH` or `file://PATH` (a local directory), `s3://BUCKET[/PREFIX]`
//! (S3 or an S3-compatible store; endpoint, region and credentials from flags or the AWS
//! environment variables, see [`crate::s3_settings`]), `nfs://HOST[:PORT]/PATH` (a directory on an NFS export, over NFSv3 from user
//! space; `PATH` is the export's path followed by the directory inside it; `HOST` is a name, an
//! IPv4 address or an IPv6 address in brackets, `nfs://[::1]:2049/export`).
//!
//! A location that starts with a scheme Ferry knows (`file`, `s3`, `nfs`, in any case) but not
//! with its `://` form (`nfs:filer/x`, `s3:bucket/x`, `file:/srv/repo`, `S3://b/x`) is refused
//! with the right form: taken as a path it would silently become a local directory named
//! `nfs:filer`. Any other path is a local directory, colons included (`backups:2024`); a local
//! directory whose name does start with a scheme and a colon is written `./nfs:filer`.
//!
//! User information (`USER[:PASSWORD]@`) in an `s3://` or `nfs://` URL is refused before
//! anything else is parsed, and no message of [`RepoUrl::parse`] shows it: credentials of S3
//! come from [`crate::s3_settings`], and NFS has none but the caller's uid and gid.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use ferry_sinks::Sink;
use ferry_sinks::local::LocalSink;
use ferry_sinks::nfs::{NfsConfig, NfsSink};
use ferry_sinks::s3::S3Sink;

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
        refuse_misspelt_scheme(url)?;
        refuse_credentials(url)?;
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!(
                    "file:// repository URLs need an absolute path: {}",
                    redact_userinfo(url)
                );
            }
            return Ok(RepoUrl::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if let Err(rule) = check_bucket(bucket) {
                bail!("{url}: {bucket:?} is not a valid S3 bucket name: {rule}");
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
            RepoUrl::S3 { bucket, prefix } => Ok(Arc::new(S3Sink::open(
                &crate::s3_settings::config(bucket, prefix)?,
            )?)),
            RepoUrl::Nfs(config) => Ok(Arc::new(NfsSink::open(config)?)),
        }
    }

    /// The sink of a location for a new repository, created if missing (`init` checks that
    /// it is empty).
    pub fn create(&self) -> Result<Arc<dyn Sink>> {
        match self {
            RepoUrl::Local(path) => Ok(Arc::new(LocalSink::create(path)?)),
            // Init's put-if-absent of the config refuses a prefix that holds a repository.
            RepoUrl::S3 { .. } => self.open(),
            RepoUrl::Nfs(config) => Ok(Arc::new(NfsSink::create(config)?)),
        }
    }
}

/// The schemes of [`RepoUrl::parse`], each with the form it takes.
const SCHEMES: [(&str, &str); 3] = [
    ("file", "file:///ABSOLUTE/PATH"),
    ("s3", "s3://BUCKET/PREFIX"),
    ("nfs", "nfs://HOST[:PORT]/EXPORT/DIR"),
];

/// Refuses a location that names a known scheme in a form [`RepoUrl::parse`] does not take:
/// `nfs:host/x` (one colon, or `nfs:/host/x`), or the scheme not in lower case (`S3://b/x`).
fn refuse_misspelt_scheme(url: &str) -> Result<()> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Ok(());
    };
    let Some((known, form)) = SCHEMES
        .iter()
        .find(|(known, _)| scheme.eq_ignore_ascii_case(known))
    else {
        return Ok(());
    };
    if scheme == *known && rest.starts_with("//") {
        return Ok(());
    }
    let url = redact_userinfo(url);
    bail!(
        "repository location {url:?} looks like a misspelt {known}:// URL: write {form} \
         (for a local directory of that name, write ./{url})"
    );
}

/// Refuses user information (`USER[:PASSWORD]@` before the host or bucket) in an `s3://` or
/// `nfs://` URL, without echoing it, and says where credentials go instead. Checked before
/// anything else of the URL, so no other message of [`RepoUrl::parse`] can show it.
fn refuse_credentials(url: &str) -> Result<()> {
    let Some((known, authority)) = ["s3://", "nfs://"].iter().find_map(|scheme| {
        let rest = url.strip_prefix(scheme)?;
        Some((*scheme, rest.split('/').next().unwrap_or("")))
    }) else {
        return Ok(());
    };
    if !authority.contains('@') {
        return Ok(());
    }
    let shown = redact_userinfo(url);
    if known == "s3://" {
        bail!(
            "{shown}: an s3:// URL holds no credentials (the part before '@' was not used); \
             give them with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or with \
             --s3-access-key-id ID and --s3-secret-access-key-file PATH"
        );
    }
    bail!(
        "{shown}: an nfs:// URL holds no user name or password (the part before '@' was not \
         used): NFS requests carry the calling user's uid and gid (AUTH_SYS), with no password; \
         write nfs://HOST[:PORT]/EXPORT/DIR and run ferry as the user the export expects"
    );
}

/// `url` for messages: when it starts with a scheme Ferry knows (in any spelling), the user
/// information of its authority (`USER:PASSWORD@`) replaced by `***@`; any other location as
/// it is (a local path may hold an `@`).
fn redact_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return url.into();
    };
    if !SCHEMES
        .iter()
        .any(|(known, _)| scheme.eq_ignore_ascii_case(known))
    {
        return url.into();
    }
    let after_slashes = rest.trim_start_matches('/');
    let start = url.len() - after_slashes.len();
    let authority = after_slashes.split('/').next().unwrap_or("");
    match authority.rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

/// Checks an S3 bucket name against the naming rules of AWS (general purpose buckets), which
/// S3-compatible stores follow too; the error is the rule `bucket` breaks.
fn check_bucket(bucket: &str) -> Result<(), &'static str> {
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&bucket.len()) {
        return Err("it must be 3 to 63 characters long");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("only lower-case letters, digits, '-' and '.' are allowed");
    }
    if !alnum(bucket.as_bytes().first()) || !alnum(bucket.as_bytes().last()) {
        return Err("it must start and end with a letter or digit");
    }
    if bucket.contains("..") {
        return Err("it must not hold two adjacent periods");
    }
    let parts: Vec<&str> = bucket.split('.').collect();
    if parts.len() == 4 && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return Err("it must not be formatted as an IP address");
    }
    if ["xn--", "sthree-"].iter().any(|p| bucket.starts_with(p)) {
        return Err("the prefixes 'xn--' and 'sthree-' are reserved");
    }
    if ["-s3alias", "--ol-s3"].iter().any(|s| bucket.ends_with(s)) {
        return Err("the suffixes '-s3alias' and '--ol-s3' are reserved");
    }
    Ok(())
}

/// `HOST[:PORT]/PATH` of an `nfs://` URL: a host name, an IPv4 address or an IPv6 address in
/// brackets (stored without them), an optional NFS port (default: ask the portmapper), and an
/// absolute path of plain segments.
fn parse_nfs(url: &str, rest: &str) -> Result<NfsConfig> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or_else(|| anyhow::anyhow!("{url}: '[' without ']' around an IPv6 address"))?;
            if address.parse::<Ipv6Addr>().is_err() {
                bail!("{url}: {address:?} in brackets is not an IPv6 address");
            }
            match after {
                "" => (address, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (address, Some(parse_port(url, port)?)),
                    None => bail!("{url}: {after:?} after ']' is not ':PORT'"),
                },
            }
        }
        None if authority.matches(':').count() > 1 => {
            bail!("{url}: an IPv6 address goes in brackets: nfs://[ADDRESS]:PORT/PATH")
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(parse_port(url, port)?)),
            None => (authority, None),
        },
    };
    let valid_host = !host.is_empty()
        && (host.contains(':')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !valid_host {
        bail!("{url}: {host:?} is not a host name, IPv4 address or [IPv6 address]");
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

/// An NFS port: 1 to 65535.
fn parse_port(url: &str, port: &str) -> Result<u16> {
    port.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| anyhow::anyhow!("{url}: {port:?} is not a port number"))
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

    #[test]
    fn ipv6_hosts_go_in_brackets() {
        let nfs = |host: &str, port, path: &[&str]| {
            RepoUrl::Nfs(NfsConfig {
                host: host.into(),
                port,
                path: path.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert_eq!(
            RepoUrl::parse("nfs://[::1]/export/path").unwrap(),
            nfs("::1", None, &["export", "path"])
        );
        assert_eq!(
            RepoUrl::parse("nfs://[::1]:2049/export").unwrap(),
            nfs("::1", Some(2049), &["export"])
        );
        assert_eq!(
            RepoUrl::parse("nfs://[fd00::5:1]:20049/srv/nfs/").unwrap(),
            nfs("fd00::5:1", Some(20049), &["srv", "nfs"])
        );
        for (bad, needle) in [
            ("nfs://::1/export", "in brackets"),
            ("nfs://fd00::1:2049/export", "in brackets"),
            ("nfs://[::1/export", "without ']'"),
            ("nfs://[filer]/export", "not an IPv6 address"),
            ("nfs://[10.0.0.1]/export", "not an IPv6 address"),
            ("nfs://[::1]2049/export", "':PORT'"),
            ("nfs://[::1]:/export", "not a port"),
            ("nfs://[::1]:0/export", "not a port"),
            ("nfs://[::1]:x/export", "not a port"),
            ("nfs://[]/export", "not an IPv6 address"),
            ("nfs://[::1]", "the path must be"),
        ] {
            let err = RepoUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    /// Bucket names follow S3's rules; a refusal names the rule broken.
    #[test]
    fn bucket_names_follow_the_s3_rules() {
        for good in [
            "abc",
            "my-bucket.2",
            "a.b-c",
            "1bucket",
            "bucket--x-s3",
            "192.168.1",
        ] {
            assert!(RepoUrl::parse(&format!("s3://{good}/r")).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for (bad, rule) in [
            ("ab", "3 to 63"),
            (long.as_str(), "3 to 63"),
            ("Bucket", "lower-case"),
            ("buck_et", "lower-case"),
            ("-abc", "start and end"),
            ("abc-", "start and end"),
            (".abc", "start and end"),
            ("abc.", "start and end"),
            ("a..b", "adjacent periods"),
            ("192.168.1.1", "IP address"),
            ("10.0.0.255", "IP address"),
            ("xn--bucket", "'xn--'"),
            ("sthree-bucket", "'sthree-'"),
            ("bucket-s3alias", "'-s3alias'"),
            ("bucket--ol-s3", "'--ol-s3'"),
        ] {
            let err = RepoUrl::parse(&format!("s3://{bad}/r"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a valid S3 bucket name"), "{bad}: {err}");
            assert!(err.contains(rule), "{bad}: {err}");
        }
    }

    /// A user name or password in an `s3://` or `nfs://` URL is refused as such, never
    /// misread as a bucket, host or port, and no message shows it, whatever the spelling.
    #[test]
    fn credentials_in_urls_are_refused_without_echoing_them() {
        for (url, secrets, needles) in [
            (
                "s3://AKID:SECRET@bkt/r1",
                // (AWS_SECRET_ACCESS_KEY, which the message names, holds "SECRET")
                &["AKID", ":SECRET", "SECRET@"][..],
                &["s3://***@bkt/r1", "AWS_ACCESS_KEY_ID", "--s3-access-key-id"][..],
            ),
            ("s3://SECRET@bkt", &["SECRET@"], &["holds no credentials"]),
            (
                "nfs://root:hunter2@host:2049/x",
                &["root", "hunter2"],
                &["nfs://***@host:2049/x", "AUTH_SYS", "no password"],
            ),
            (
                "nfs://user:pw@host/x",
                &["user:", ":pw", "pw@"],
                &["AUTH_SYS"],
            ),
            ("nfs://user@[::1]/x", &["user@"], &["AUTH_SYS"]),
            ("nfs://a@b:c@host/x", &["a@", "b:c"], &["AUTH_SYS"]),
            (
                "S3://AKID:SECRET@bkt/r1",
                &["AKID", "SECRET"],
                &["misspelt"],
            ),
            ("s3:AKID:SECRET@bkt/r1", &["AKID", "SECRET"], &["misspelt"]),
            (
                "s3://AKID:SECRET@B/x",
                &["AKID", ":SECRET"],
                &["holds no credentials"],
            ),
            ("nfs:/root:hunter2@host/x", &["hunter2"], &["misspelt"]),
            (
                "file://root:hunter2@/srv/x",
                &["hunter2"],
                &["absolute path"],
            ),
        ] {
            let err = format!("{:#}", RepoUrl::parse(url).unwrap_err());
            for secret in secrets {
                assert!(!err.contains(secret), "{url}: {err}");
            }
            for needle in needles {
                assert!(err.contains(needle), "{url}: {err}");
            }
        }
        // An '@' after the host or in a local path is not user information.
        assert_eq!(
            RepoUrl::parse("nfs://host/export/a@b").unwrap(),
            RepoUrl::Nfs(NfsConfig {
                host: "host".into(),
                port: None,
                path: vec!["export".into(), "a@b".into()],
            })
        );
        assert_eq!(
            RepoUrl::parse("/srv/user@host").unwrap(),
            RepoUrl::Local("/srv/user@host".into())
        );
    }

    #[test]
    fn misspelt_schemes_are_refused_with_the_right_form() {
        for (bad, form) in [
            ("nfs:filer/srv/x", "nfs://HOST"),
            ("nfs:/filer/srv/x", "nfs://HOST"),
            ("nfs:", "nfs://HOST"),
            ("NFS://filer/x", "nfs://HOST"),
            ("s3:bucket/x", "s3://BUCKET"),
            ("S3://bucket/x", "s3://BUCKET"),
            ("s3:/bucket", "s3://BUCKET"),
            ("file:/srv/repo", "file:///ABSOLUTE"),
            ("File:///srv/repo", "file:///ABSOLUTE"),
        ] {
            let err = RepoUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("misspelt"), "{bad}: {err}");
            assert!(err.contains(form), "{bad}: {err}");
            assert!(err.contains(&format!("./{bad}")), "{bad}: {err}");
        }
        // Other colons are part of a local path, and `./` takes any name literally.
        for path in [
            "backups:2024",
            "./backups:2024",
            "/srv/nfs:filer",
            "./nfs:filer/x",
            "s3x:y",
            "nfsroot:1",
            "c:",
        ] {
            assert_eq!(
                RepoUrl::parse(path).unwrap(),
                RepoUrl::Local(path.into()),
                "{path}"
            );
        }
    }
}
