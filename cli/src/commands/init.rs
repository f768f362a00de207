//! `ferry init`: create a repository.
//!
//! A new repository goes only into an empty location: a missing or empty directory, a bucket
//! or prefix holding no object. A location that holds a repository is refused as such (its
//! config stays untouched); one that holds anything else (files, another repository under a
//! prefix of it) is refused naming how many objects it holds and one of them, whatever the
//! backend. The check is one listing, cut short after [`SHOWN`] objects (S3 returns up to
//! 1000 keys per request), and a head of `config` only when the location is not empty.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferry_engine::Repository;
use ferry_engine::config::check_chunk_size;
use ferry_sinks::{ObjectKey, Sink, SinkError};

use crate::args::InitArgs;
use crate::commands::print_json;
use crate::repo_url::RepoUrl;

/// Objects of a non-empty location counted before the listing stops.
const SHOWN: usize = 100;

pub fn run(args: InitArgs) -> Result<ExitCode> {
    let chunk_size = check_chunk_size(args.chunk_size)?;
    let url = RepoUrl::parse(&args.repo.repo)?;
    let sink = url.create()?;
    refuse_non_empty(&url, sink.as_ref(), &args.repo.repo)?;
    let repo = Repository::init(sink, chunk_size)
        .with_context(|| format!("cannot create repository {}", args.repo.repo))?;
    if args.json {
        print_json(&serde_json::json!({
            "repository": args.repo.repo,
            "repository_id": repo.config().repository_id,
            "chunk_size": repo.config().chunk_size,
            "version": repo.config().version,
        }))?;
    } else {
        outln!(
            "created repository {} (id {}, chunk size {})",
            args.repo.repo,
            repo.config().repository_id,
            crate::size::human(u64::from(repo.config().chunk_size))
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails unless `sink` holds no object, or holds a repository (which [`Repository::init`]
/// then refuses by name, leaving it untouched). A local directory must hold no entry at all,
/// dot-files (which are never objects) included.
fn refuse_non_empty(url: &RepoUrl, sink: &dyn Sink, location: &str) -> Result<()> {
    let cannot_list = || format!("cannot list {location} to check that it is empty");
    let names: Vec<String> = match url {
        RepoUrl::Local(path) => match std::fs::read_dir(path) {
            Ok(entries) => entries
                .take(SHOWN)
                .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()
                .with_context(cannot_list)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(cannot_list),
        },
        _ => sink
            .list("")
            .with_context(cannot_list)?
            .take(SHOWN)
            .map(|meta| Ok(meta?.key.to_string()))
            .collect::<Result<_, SinkError>>()
            .with_context(cannot_list)?,
    };
    let Some(first) = names.iter().min() else {
        return Ok(());
    };
    let config = ObjectKey::new(ferry_engine::repository::CONFIG_KEY).expect("a valid key");
    match sink.head(&config) {
        Ok(_) => return Ok(()), // a repository: init's put-if-absent names it
        Err(SinkError::NotFound { .. }) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {location}")),
    }
    let (one, many) = match url {
        RepoUrl::Local(_) => ("entry", "entries"),
        _ => ("object", "objects"),
    };
    let count = match names.len() {
        SHOWN => format!("{SHOWN} or more {many}"),
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    };
    bail!(
        "{location} is not empty: it holds {count}, e.g. {first}, and no repository; a new \
         repository needs an empty location (for another repository beside them, use a prefix \
         or directory of its own)"
    );
}
