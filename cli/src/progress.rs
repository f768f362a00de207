//! A progress bar on stderr (only on a terminal, never with --json).

use std::io::IsTerminal;

use ferry_engine::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Engine progress shown as bytes, MiB/s and ETA.
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar when stderr is a terminal and `quiet` is false; otherwise nothing.
    pub fn new(quiet: bool) -> Bar {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>8} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Bar { bar }
    }
}

impl Progress for Bar {
    fn start_disk(&self, name: &str, size: u64) {
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(size);
            bar.set_message(name.to_owned());
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn set_total(&self, size: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(size);
        }
    }

    fn finish_disk(&self, _name: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
