//! One module per subcommand; each returns the process exit code.

pub mod backup;
pub mod backup_domain;
pub mod bench;
pub mod forget;
pub mod gc;
pub mod gen_image;
pub mod init;
pub mod list;
pub mod recover;
pub mod restore;
pub mod verify;

use anyhow::{Context, Result};
use ferry_engine::Repository;
use serde::Serialize;

use crate::args::RepoArg;
use crate::repo_url::RepoUrl;

/// Opens the repository named by `--repo`/`FERRY_REPO`.
pub fn open_repo(arg: &RepoArg) -> Result<Repository> {
    let context = || format!("cannot open repository {}", arg.repo);
    let url = RepoUrl::parse(&arg.repo)?;
    let sink = url.open().with_context(context)?;
    Repository::open(sink).with_context(context)
}

/// Prints `value` as one JSON object on stdout.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
