//! Turning SIGINT, SIGTERM and SIGHUP into an orderly stop.
//!
//! The first signal disconnects the cancel channel: every holder of the receiver (the engine's
//! pipeline, the push job's wait loop) sees it at once and stops, so the domain is merged back
//! and temporary files removed before ferry exits. Later signals are reported and otherwise
//! ignored: cleanup is never interrupted halfway.

use crossbeam_channel::{Receiver, bounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Installs the handlers; the returned receiver disconnects on the first signal.
pub fn cancel_on_signal() -> anyhow::Result<Receiver<()>> {
    let (tx, rx) = bounded::<()>(0);
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sender = Some(tx);
            for signal in signals.forever() {
                if sender.take().is_some() {
                    log::warn!("signal {signal}: stopping; cleaning up first");
                } else {
                    log::warn!("signal {signal}: still cleaning up, please wait");
                }
            }
        })?;
    Ok(rx)
}
