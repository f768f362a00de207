//! A minimal stderr logger: `ferry: warning: …`.
//!
//! Every write to stderr goes through [`write_stderr`], which never panics: a stderr that is
//! full (`2>/dev/full`) or closed (`2>&1 | head -1`) loses the line, and the command goes on
//! and exits with its own status (not 101, the status of a panic).

use std::io::Write as _;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug | Level::Trace => "debug",
            };
            write_stderr(format_args!("ferry: {level}: {}", record.args()));
        }
    }

    fn flush(&self) {}
}

/// Warnings by default; `-v` adds info, `-vv` debug.
pub fn init(verbose: u8) {
    static LOGGER: StderrLogger = StderrLogger;
    let level = match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        _ => LevelFilter::Debug,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Writes `line` and a newline to stderr in one write; a failed write is ignored (there is
/// nowhere left to report it).
pub fn write_stderr(line: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}
