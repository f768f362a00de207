//! `ferry gc`: deletes the chunk objects no snapshot names, under the exclusive repository lock.

use std::process::ExitCode;

use anyhow::Result;
use ferry_engine::EngineError;
use ferry_engine::gc::gc;
use ferry_sinks::SinkError;

use crate::args::GcArgs;
use crate::commands::{open_repo, print_json};
use crate::size::human;

pub fn run(args: GcArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let report = gc(&repo, args.dry_run).map_err(|e| {
        let full = matches!(&e, EngineError::Sink(SinkError::NoSpace { .. }));
        let e = anyhow::Error::new(e);
        match full {
            // Before it deletes anything gc writes its lock, a few hundred bytes.
            true => e.context(
                "the repository's filesystem is full: gc must write its small lock file before \
                 it can free space; free a few KiB on that filesystem (outside the repository) \
                 and run gc again",
            ),
            false => e,
        }
    })?;
    if args.json {
        print_json(&report)?;
    } else {
        let verb = if report.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        println!(
            "{} snapshot(s) name {} of {} chunk(s); {verb} {} unreferenced chunk(s), {}.",
            report.snapshots,
            report.chunks_referenced,
            report.chunks_total,
            report.chunks_deleted,
            human(report.bytes_freed)
        );
        if report.leftovers_removed > 0 {
            let verb = if report.dry_run {
                "would remove"
            } else {
                "removed"
            };
            println!(
                "{verb} {} temp file(s) of interrupted writes, {}.",
                report.leftovers_removed,
                human(report.leftover_bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
