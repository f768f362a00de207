//! `ferry verify`: exit 0 only when every checked snapshot is restorable.

use std::process::ExitCode;

use anyhow::Result;
use ferry_engine::verify;

use crate::EXIT_DAMAGED;
use crate::args::VerifyArgs;
use crate::commands::{open_repo, print_json};
use crate::progress::Bar;

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let snapshot = args
        .snapshot
        .as_deref()
        .map(|s| repo.resolve_snapshot(s))
        .transpose()?;
    let report = verify(
        &repo,
        snapshot.as_deref(),
        args.read_data,
        args.threads.max(1),
        &Bar::new(args.json),
    )?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["clean"] = report.is_clean().into();
        print_json(&value)?;
    } else {
        for problem in &report.problems {
            println!("{problem}");
        }
        println!(
            "{}: {} snapshots, {} chunks referenced, {} read and re-hashed, {} problems",
            if report.is_clean() {
                "clean"
            } else {
                "DAMAGED"
            },
            report.snapshots_checked,
            report.chunks_referenced,
            report.chunks_read,
            report.problems.len()
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    })
}
