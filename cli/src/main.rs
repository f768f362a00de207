//! `ferry`: live, deduplicated, verified backups of disk images into a repository.
//!
//! Exit status: 0 on success, 1 on any error (one line on stderr naming the problem), 2 on a
//! usage error, 3 when `verify` finds damage, 128 + the signal's number when SIGINT, SIGTERM or
//! SIGHUP stopped the command (after its cleanup).

mod args;
mod commands;
mod hook;
mod libvirt;
mod logger;
mod progress;
mod repo_url;
mod s3_settings;
mod signals;
mod size;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, Command};

/// Exit status when `ferry verify` finds problems.
pub const EXIT_DAMAGED: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    logger::init(cli.verbose);
    s3_settings::set_flags(cli.s3);
    let json = cli.command.json();
    let result = match cli.command {
        Command::Init(a) => commands::init::run(a),
        Command::Backup(a) => commands::backup::run(a),
        Command::List(a) => commands::list::run(a),
        Command::Forget(a) => commands::forget::run(a),
        Command::Gc(a) => commands::gc::run(a),
        Command::Restore(a) => commands::restore::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::GenImage(a) => commands::gen_image::run(a),
        Command::Recover(a) => commands::recover::run(a),
    };
    let e = match result {
        Ok(code) => return code,
        Err(e) => e,
    };
    let (message, status) = match signals::received() {
        Some(signal) => (
            format!(
                "interrupted by {}: {}",
                signals::name(signal),
                error_line(&e)
            ),
            128 + signal as u8,
        ),
        None => (error_line(&e), 1),
    };
    logger::write_stderr(format_args!("ferry: error: {message}"));
    if json {
        // A script reading --json output gets a document for a failure too. Nothing more can
        // be done when stdout cannot take it: the exit status still tells the failure.
        let document = serde_json::json!({ "error": message, "exit_status": status });
        let _ = writeln!(std::io::stdout(), "{document}");
    }
    ExitCode::from(status)
}

/// The error and its causes on one line, without repeating a cause the message already holds.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

/// Reports arguments clap refused (exit status 2) with clap's own message on stderr, or prints
/// the help or version clap was asked for (exit status 0). A refused run whose arguments hold
/// `--json` also gets `{"error": …, "exit_status": 2}` on stdout, the first line of clap's
/// message, so a script always gets a document. No write here may panic.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    let status = e.exit_code();
    if e.use_stderr() && json_requested(std::env::args_os().skip(1)) {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or("invalid arguments");
        let message = first.strip_prefix("error: ").unwrap_or(first).trim();
        let document = serde_json::json!({ "error": message, "exit_status": status });
        let _ = writeln!(std::io::stdout(), "{document}");
    }
    ExitCode::from(u8::try_from(status).unwrap_or(2))
}

/// Whether raw arguments ask for JSON output: `--json` before any `--`.
fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_requested_by_a_json_flag_before_double_dash() {
        let args =
            |list: &[&str]| -> Vec<std::ffi::OsString> { list.iter().map(Into::into).collect() };
        assert!(json_requested(args(&["list", "--bogus", "--json"])));
        assert!(!json_requested(args(&["list", "--bogus"])));
        assert!(!json_requested(args(&["restore", "--", "--json"])));
        assert!(!json_requested(args(&["list", "--jsonx"])));
    }
}
