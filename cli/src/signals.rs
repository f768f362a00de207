//! Turning SIGINT, SIGTERM and SIGHUP into an orderly stop.
//!
//! The first signal disconnects the cancel channel: every holder of the receiver (the engine's
//! pipeline, the restore, the benchmark, the push job's wait loop) sees it at once and stops,
//! so the domain is merged back and temporary files removed before ferry exits. Later signals
//! are reported and otherwise ignored: cleanup is never interrupted halfway. The first signal
//! also ends the retries of remote repositories ([`ferry_sinks::retry::stop_retrying`]): an
//! S3 server or NFS filer that is away must not hold the stop for a retry deadline. Commands
//! install the handlers before they open the repository, so this holds while opening too. A command that
//! failed after a signal exits with status 128 + the signal's number (130 for SIGINT), as
//! shells do.

use std::sync::atomic::{AtomicI32, Ordering};

use crossbeam_channel::{Receiver, bounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Installs the handlers; the returned receiver disconnects on the first signal.
pub fn cancel_on_signal() -> anyhow::Result<Receiver<()>> {
    let (tx, rx) = bounded::<()>(0);
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sender = Some(tx);
            for signal in signals.forever() {
                let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
                if let Some(tx) = sender.take() {
                    log::warn!("{}: stopping; cleaning up first", name(signal));
                    // A repository that is away must not hold the stop for a retry deadline.
                    ferry_sinks::retry::stop_retrying();
                    drop(tx);
                } else {
                    log::warn!("{}: still cleaning up, please wait", name(signal));
                }
            }
        })?;
    Ok(rx)
}

/// The signal that interrupted this run, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// A handled signal's name.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// For commands that only report (`list`, `verify`), once their work is done and only their
/// output is left: a closed stdout (`ferry list | head -1`) ends the process quietly, as it
/// ends `cat`, instead of a panic on EPIPE. Never earlier: the default SIGPIPE would also kill
/// the process on a write to a socket the server closed (an S3 or NFS connection), silently.
pub fn quiet_on_broken_pipe() {
    // SAFETY: restores the default disposition of SIGPIPE; no handler code is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
