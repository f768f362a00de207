//! `ferry list`: snapshots with time, name, disks and sizes.
//!
//! Every manifest is read whole and checked (checksum, and the id it is stored under) as
//! restore checks it, so a snapshot that restore would refuse is never listed as good: it is
//! a `DAMAGED` row (`damaged` in `--json`) naming the reason, a warning on stderr, and the
//! other snapshots are listed as usual; the exit status stays 0 (`ferry verify` is the check
//! whose exit status reports damage).

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::args::ListArgs;
use crate::commands::{open_repo, print_json};
use crate::size::human;
use ferry_engine::calendar::utc;

#[derive(Serialize)]
struct Listed {
    #[serde(skip)]
    finished_at: (u64, u32),
    snapshot: String,
    name: String,
    time: String,
    time_unix: u64,
    hostname: String,
    disks: Vec<ListedDisk>,
}

#[derive(Serialize)]
struct ListedDisk {
    name: String,
    virtual_size: u64,
    data_bytes: u64,
    source: String,
}

#[derive(Serialize)]
struct Damaged {
    snapshot: String,
    error: String,
}

pub fn run(args: ListArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let mut listed = Vec::new();
    let mut damaged = Vec::new();
    for id in repo.snapshot_ids()? {
        // The whole manifest, checksum and id checked: a manifest whose head and metadata
        // still read but whose bytes changed is damaged, and restore would refuse it.
        match repo.load_snapshot(&id).map(|s| s.manifest.meta) {
            Ok(meta) => listed.push(Listed {
                finished_at: meta.finished_at(),
                snapshot: id,
                name: meta.name,
                time: utc(meta.finished_unix),
                time_unix: meta.finished_unix,
                hostname: meta.hostname,
                disks: meta
                    .disks
                    .into_iter()
                    .map(|d| ListedDisk {
                        name: d.name,
                        virtual_size: d.virtual_size,
                        data_bytes: d.data_bytes,
                        source: d.source,
                    })
                    .collect(),
            }),
            Err(e) => damaged.push(Damaged {
                snapshot: id,
                error: e.to_string(),
            }),
        }
    }
    if !damaged.is_empty() {
        log::warn!(
            "{} snapshot(s) have a damaged manifest and cannot be restored (marked DAMAGED); \
             `ferry verify` names all damage",
            damaged.len()
        );
    }
    // Oldest first, as `latest` counts.
    listed.sort_by(|a, b| (a.finished_at, &a.snapshot).cmp(&(b.finished_at, &b.snapshot)));
    // Only printing is left: no socket write can raise SIGPIPE from here on.
    crate::signals::quiet_on_broken_pipe();
    if args.json {
        print_json(&serde_json::json!({ "snapshots": listed, "damaged": damaged }))?;
    } else {
        outln!("{:<16}  {:<20}  {:<24}  disks", "snapshot", "time", "name")?;
        for s in &listed {
            let disks: Vec<String> = s
                .disks
                .iter()
                .map(|d| {
                    format!(
                        "{} {} ({} data)",
                        d.name,
                        human(d.virtual_size),
                        human(d.data_bytes)
                    )
                })
                .collect();
            outln!(
                "{:<16}  {:<20}  {:<24}  {}",
                s.snapshot,
                s.time,
                s.name,
                disks.join(", ")
            )?;
        }
        for d in &damaged {
            outln!("{:<16}  DAMAGED: {}", d.snapshot, d.error)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
