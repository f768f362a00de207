//! `ferry restore`: one disk of a snapshot into a file.

use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_engine::restore::{RestoreOptions, restore_disk, select_disk};

use crate::args::RestoreArgs;
use crate::commands::{open_repo, print_json};
use crate::progress::Bar;
use crate::size::human;

pub fn run(args: RestoreArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let id = repo.resolve_snapshot(&args.snapshot)?;
    let snapshot = repo.load_snapshot(&id)?;
    let (disk_index, _) = select_disk(&snapshot, args.disk.as_deref())?;
    let options = RestoreOptions {
        threads: args.threads.max(1),
        overwrite: args.force,
    };
    let report = restore_disk(
        &repo,
        &snapshot,
        disk_index,
        &args.to,
        &options,
        &Bar::new(args.json),
    )
    .with_context(|| format!("restore of snapshot {id} to {} failed", args.to.display()))?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "restored snapshot {} disk {} to {}: {} ({} data) in {:.1} s, every chunk verified; image digest {}",
            report.snapshot,
            report.disk,
            report.target,
            human(report.virtual_size),
            human(report.bytes_written),
            report.seconds,
            report.image_digest
        );
    }
    Ok(ExitCode::SUCCESS)
}
