//! One module per subcommand; each returns the process exit code.
//!
//! Commands print on stdout with [`outln!`], never `println!`: a stdout that cannot be written
//! (a full disk, `>/dev/full`) is then an error of the command (exit status 1, one error line)
//! instead of a panic (exit status 101). A closed pipe behind `list` and `verify` still ends
//! them quietly ([`crate::signals::quiet_on_broken_pipe`]).

/// `println!` that returns a `Result` instead of panicking when stdout cannot be written: use
/// as `outln!("...", args)?`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::commands::stdout_error)
    }};
}

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

/// Test hook: `FERRY_TEST_KILL_AFTER_MUTATIONS=N` makes the process die by SIGKILL right
/// after its Nth put or delete on the repository, so crash-safety tests can stop a backup or a
/// gc at an exact point. Unset (always, outside tests), the sink is used as it is.
const KILL_AFTER_VAR: &str = "FERRY_TEST_KILL_AFTER_MUTATIONS";

/// Opens the repository named by `--repo`/`FERRY_REPO`.
pub fn open_repo(arg: &RepoArg) -> Result<Repository> {
    let context = || format!("cannot open repository {}", arg.repo);
    let url = RepoUrl::parse(&arg.repo)?;
    let mut sink = url.open().with_context(context)?;
    if let Some(n) = std::env::var(KILL_AFTER_VAR).ok().filter(|v| !v.is_empty()) {
        let n = n
            .parse()
            .with_context(|| format!("{KILL_AFTER_VAR}={n} is not a count"))?;
        sink = std::sync::Arc::new(ferry_sinks::fault::KillAfter::new(sink, n));
    }
    Repository::open(sink).with_context(context)
}

/// Prints `value` as one JSON object on stdout; an error when stdout cannot be written.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// The error of a failed write to stdout, naming it.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("cannot write the output to stdout")
}
