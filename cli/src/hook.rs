//! `--hook CMD`: a user command run at the phases of a domain backup.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use crossbeam_channel::{Receiver, bounded, select};

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

/// How long a hook stopped by a signal gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Runs `command` with `sh -c`, with FERRY_HOOK_PHASE, FERRY_DOMAIN and FERRY_PID set. A
/// non-zero exit is an error that aborts the backup.
///
/// The hook runs in its own process group. When `cancel` disconnects (ferry got SIGINT,
/// SIGTERM or SIGHUP) while it runs, the whole group gets SIGTERM, then SIGKILL after
/// [`TERM_GRACE`], and the hook counts as failed: a hook that never returns cannot keep ferry
/// from merging the domain back and exiting.
pub fn run(command: Option<&str>, phase: Phase, domain: &str, cancel: &Receiver<()>) -> Result<()> {
    let Some(command) = command else {
        return Ok(());
    };
    // The hook's output goes to stderr: stdout carries `--json`.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdout(Stdio::from(stderr))
        .env("FERRY_HOOK_PHASE", phase.name())
        .env("FERRY_DOMAIN", domain)
        .env("FERRY_PID", std::process::id().to_string())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run the {} hook", phase.name()))?;
    let group = child.id() as libc::pid_t;
    let (done_tx, done_rx) = bounded(1);
    let waiter = std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = select! {
        recv(done_rx) -> status => status.expect("the waiter sends once"),
        recv(cancel) -> _ => {
            stop_group(group, &done_rx);
            let _ = waiter.join();
            bail!("the {} hook was stopped (ferry is stopping)", phase.name());
        }
    }
    .with_context(|| format!("cannot wait for the {} hook", phase.name()))?;
    let _ = waiter.join();
    if !status.success() {
        bail!("the {} hook failed ({status})", phase.name());
    }
    Ok(())
}

/// Ends the hook's process group: SIGTERM, then SIGKILL if the hook has not exited within
/// [`TERM_GRACE`]; returns once it has exited (`exited` receives its wait result).
fn stop_group(group: libc::pid_t, exited: &Receiver<std::io::Result<ExitStatus>>) {
    signal_group(group, libc::SIGTERM);
    if exited.recv_timeout(TERM_GRACE).is_err() {
        signal_group(group, libc::SIGKILL);
        let _ = exited.recv();
    }
}

/// Sends `signal` to every process of the hook's group (gone already is fine).
fn signal_group(group: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-group, signal);
    }
}
