//! `ferry restore`: one disk into a file, or every disk of a snapshot into a directory.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_engine::restore::{RestoreOptions, RestoreReport, restore_disk, select_disk};
use ferry_engine::{Repository, Snapshot};

use crate::args::RestoreArgs;
use crate::commands::{open_repo, print_json};
use crate::progress::Bar;
use crate::size::human;

pub fn run(args: RestoreArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let id = repo.resolve_snapshot(&args.snapshot)?;
    let snapshot = repo.load_snapshot(&id)?;
    let options = RestoreOptions {
        threads: args.threads,
        overwrite: args.force,
        cancel: Some(crate::signals::cancel_on_signal()?),
    };
    let bar = Bar::new(args.json);
    // Without --disk, a domain snapshot (or any of several disks) restores into a directory.
    let meta = &snapshot.manifest.meta;
    let into_dir = args.disk.is_none() && (meta.domain_xml.is_some() || meta.disks.len() > 1);
    let reports = if into_dir {
        restore_all(&repo, &snapshot, &args.to, &options, &bar)?
    } else {
        let (disk_index, _) = select_disk(&snapshot, args.disk.as_deref())?;
        vec![
            restore_disk(&repo, &snapshot, disk_index, &args.to, &options, &bar).with_context(
                || format!("restore of snapshot {id} to {} failed", args.to.display()),
            )?,
        ]
    };
    if args.json {
        match reports.as_slice() {
            [one] if !into_dir => print_json(one)?,
            _ => print_json(&serde_json::json!({ "snapshot": id, "disks": reports }))?,
        }
    } else {
        for report in &reports {
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
    }
    Ok(ExitCode::SUCCESS)
}

/// Restores every disk into `dir/<disk name>` (disk names are validated file names).
fn restore_all(
    repo: &Repository,
    snapshot: &Snapshot,
    dir: &Path,
    options: &RestoreOptions,
    bar: &Bar,
) -> Result<Vec<RestoreReport>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut reports: Vec<RestoreReport> = Vec::new();
    for (index, disk) in snapshot.manifest.meta.disks.iter().enumerate() {
        let target = dir.join(&disk.name);
        match restore_disk(repo, snapshot, index, &target, options, bar) {
            Ok(report) => reports.push(report),
            Err(e) => {
                // All or nothing: the disks restored so far by this run are removed again.
                for done in &reports {
                    let _ = std::fs::remove_file(&done.target);
                }
                return Err(e).with_context(|| {
                    format!(
                        "restore of snapshot {} disk {} failed",
                        snapshot.id, disk.name
                    )
                });
            }
        }
    }
    Ok(reports)
}
