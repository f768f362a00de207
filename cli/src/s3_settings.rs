//! Where an `s3://` repository's endpoint, region and credentials come from: a command-line
//! flag when given, else its AWS environment variable.
//!
//! | setting       | flag                          | environment variable                      |
//! |---------------|-------------------------------|-------------------------------------------|
//! | endpoint      | `--s3-endpoint URL`           | `AWS_ENDPOINT_URL` (none: AWS itself)      |
//! | region        | `--s3-region NAME`            | `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1` |
//! | access key id | `--s3-access-key-id ID`       | `AWS_ACCESS_KEY_ID`                        |
//! | secret key    | `--s3-secret-access-key-file PATH` | `AWS_SECRET_ACCESS_KEY`               |
//! | plain HTTP    | `--s3-allow-http`             | `AWS_ALLOW_HTTP=true` (or `1`)             |
//!
//! The secret key is never a flag value (it would show in `ps` and shell history): the flag
//! names a file holding it. The file's contents never appear in a message.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use ferry_sinks::s3::{S3Config, Secret};

use crate::args::S3Args;

/// The flags of this run, set once by `main`.
static FLAGS: OnceLock<S3Args> = OnceLock::new();

/// Records this run's S3 flags (the first call wins).
pub fn set_flags(flags: S3Args) {
    let _ = FLAGS.set(flags);
}

/// The configuration of `s3://BUCKET/PREFIX` from this run's flags and the environment.
pub fn config(bucket: &str, prefix: &str) -> Result<S3Config> {
    let flags = FLAGS.get().cloned().unwrap_or_default();
    check_flags(&flags)?;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let access_key_id = flags
        .s3_access_key_id
        .or_else(|| var("AWS_ACCESS_KEY_ID"))
        .context("no access key id: set AWS_ACCESS_KEY_ID or give --s3-access-key-id ID")?;
    let secret = match &flags.s3_secret_access_key_file {
        Some(path) => read_secret(path)?,
        None => Secret::new(var("AWS_SECRET_ACCESS_KEY").context(
            "no secret key: set AWS_SECRET_ACCESS_KEY or give --s3-secret-access-key-file PATH",
        )?),
    };
    let endpoint = match flags.s3_endpoint {
        Some(endpoint) => Some(endpoint),
        None => endpoint_from_env(std::env::var_os("AWS_ENDPOINT_URL"))?,
    };
    Ok(S3Config {
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
        endpoint,
        region: flags
            .s3_region
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned()),
        access_key_id,
        secret_access_key: secret,
        allow_http: flags.s3_allow_http
            || var("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
    })
}

/// Refuses a flag given with an empty or blank value (`--s3-access-key-id ''`, often an unset
/// shell variable): sent as it is, it would come back from the server as access denied, or
/// take the place of the AWS variable. The error names the flag.
fn check_flags(flags: &S3Args) -> Result<()> {
    for (flag, value) in [
        ("--s3-endpoint", &flags.s3_endpoint),
        ("--s3-region", &flags.s3_region),
        ("--s3-access-key-id", &flags.s3_access_key_id),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            bail!("{flag} is empty: give a value, or leave the flag out to use the AWS variable");
        }
    }
    if flags
        .s3_secret_access_key_file
        .as_deref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        bail!("--s3-secret-access-key-file is empty: give the path of the file holding the key");
    }
    Ok(())
}

/// The endpoint `AWS_ENDPOINT_URL` names. Set but blank is refused: silently falling back to
/// AWS itself would send signed requests somewhere the user did not ask for.
fn endpoint_from_env(value: Option<std::ffi::OsString>) -> Result<Option<String>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value
        .into_string()
        .map_err(|_| anyhow::anyhow!("AWS_ENDPOINT_URL is not UTF-8"))?;
    if value.trim().is_empty() {
        bail!(
            "AWS_ENDPOINT_URL is set but empty: unset it to use AWS itself, or set it (or \
             --s3-endpoint) to the store's URL"
        );
    }
    Ok(Some(value))
}

/// The secret key in `path`: its first line, without the line end.
fn read_secret(path: &Path) -> Result<Secret> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--s3-secret-access-key-file {shown}: cannot read it"))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        bail!("--s3-secret-access-key-file {shown}: the file holds no key");
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "{shown} holds a secret key but other users may read it (mode {:o}); `chmod 600` it",
            meta.permissions().mode() & 0o777
        );
    }
    Ok(Secret::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change that makes one flag of a good set empty.
    type Spoil = fn(&mut S3Args);

    #[test]
    fn empty_or_blank_flags_are_refused_by_name() {
        assert!(check_flags(&S3Args::default()).is_ok());
        let good = S3Args {
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            s3_region: Some("eu-west-1".into()),
            s3_access_key_id: Some("AKID".into()),
            s3_secret_access_key_file: Some("/run/key".into()),
            s3_allow_http: true,
        };
        assert!(check_flags(&good).is_ok());
        let cases: [(&str, Spoil); 6] = [
            ("--s3-access-key-id", |a| {
                a.s3_access_key_id = Some(String::new())
            }),
            ("--s3-access-key-id", |a| {
                a.s3_access_key_id = Some(" \t".into())
            }),
            ("--s3-endpoint", |a| a.s3_endpoint = Some(String::new())),
            ("--s3-endpoint", |a| a.s3_endpoint = Some("  ".into())),
            ("--s3-region", |a| a.s3_region = Some(String::new())),
            ("--s3-secret-access-key-file", |a| {
                a.s3_secret_access_key_file = Some("".into())
            }),
        ];
        for (flag, spoil) in cases {
            let mut args = good.clone();
            spoil(&mut args);
            let err = check_flags(&args).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{flag} is empty")),
                "{flag}: {err}"
            );
        }
    }

    #[test]
    fn a_blank_endpoint_variable_is_refused_not_taken_for_aws() {
        assert_eq!(endpoint_from_env(None).unwrap(), None);
        assert_eq!(
            endpoint_from_env(Some("http://h:9000".into())).unwrap(),
            Some("http://h:9000".to_owned())
        );
        for blank in ["", " ", "\t"] {
            let err = endpoint_from_env(Some(blank.into()))
                .unwrap_err()
                .to_string();
            assert!(err.contains("AWS_ENDPOINT_URL is set but empty"), "{err}");
        }
    }
}
