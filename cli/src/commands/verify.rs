//! `ferry verify`: exit 0 only when every checked snapshot is restorable.

use std::process::ExitCode;

use anyhow::Result;
use ferry_engine::verify::ReadData;
use ferry_engine::{EngineError, verify};

use crate::EXIT_DAMAGED;
use crate::args::VerifyArgs;
use crate::commands::{open_repo, print_json};
use crate::progress::Bar;

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let snapshot = match args.snapshot.as_deref().map(|s| repo.resolve_snapshot(s)) {
        None => None,
        Some(Ok(id)) => Some(id),
        // `latest` when only damaged manifests exist: verify reports that damage (exit 3).
        Some(Err(EngineError::Manifest { snapshot, .. })) => Some(snapshot),
        Some(Err(e)) => return Err(e.into()),
    };
    let read = ReadData {
        enabled: args.read_data,
        sample_percent: args.sample,
        seed: args.sample_seed.unwrap_or_else(rand::random),
        quarantine: args.quarantine,
    };
    let report = verify(
        &repo,
        snapshot.as_deref(),
        read,
        args.threads,
        &Bar::new(args.json),
    )?;
    // Only printing is left (the repository is not written again): a closed stdout may end
    // the process, and no socket write can raise SIGPIPE from here on.
    crate::signals::quiet_on_broken_pipe();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["clean"] = report.is_clean().into();
        print_json(&value)?;
    } else {
        for problem in &report.problems {
            outln!("{problem}")?;
        }
        for id in &report.quarantined {
            outln!(
                "quarantined chunk {id} (kept as quarantine/{id}; the next backup of its data stores it again)"
            )?;
        }
        if let (Some(percent), Some(seed)) = (report.sample_percent, report.sample_seed) {
            outln!("sampled {percent} % of the chunks (--sample-seed {seed} repeats this sample)")?;
        }
        outln!(
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
        )?;
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    })
}
