//! `ferry init`: create a repository.

use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_engine::Repository;
use ferry_engine::config::check_chunk_size;

use crate::args::InitArgs;
use crate::commands::print_json;
use crate::repo_url::RepoUrl;

pub fn run(args: InitArgs) -> Result<ExitCode> {
    let chunk_size = check_chunk_size(args.chunk_size)?;
    let url = RepoUrl::parse(&args.repo.repo)?;
    let sink = url.create()?;
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
        println!(
            "created repository {} (id {}, chunk size {})",
            args.repo.repo,
            repo.config().repository_id,
            crate::size::human(u64::from(repo.config().chunk_size))
        );
    }
    Ok(ExitCode::SUCCESS)
}
