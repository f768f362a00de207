//! `--hook CMD`: a user command run at the phases of a domain backup.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Phases at which the hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The point in time is fixed (overlays in place, or the push job started); the copy has
    /// not begun.
    Frozen,
    /// The copy is complete; commit or cleanup comes next.
    Copied,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Frozen => "frozen",
            Phase::Copied => "copied",
        }
    }
}

/// Runs `command` with `sh -c`, with FERRY_HOOK_PHASE, FERRY_DOMAIN and FERRY_PID set. A
/// non-zero exit is an error that aborts the backup.
pub fn run(command: Option<&str>, phase: Phase, domain: &str) -> Result<()> {
    let Some(command) = command else {
        return Ok(());
    };
    // The hook's output goes to stderr: stdout carries `--json`.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdout(Stdio::from(stderr))
        .env("FERRY_HOOK_PHASE", phase.name())
        .env("FERRY_DOMAIN", domain)
        .env("FERRY_PID", std::process::id().to_string())
        .status()
        .with_context(|| format!("cannot run the {} hook", phase.name()))?;
    if !status.success() {
        bail!("the {} hook failed ({status})", phase.name());
    }
    Ok(())
}
