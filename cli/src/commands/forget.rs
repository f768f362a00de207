//! `ferry forget`: removes snapshot manifests, named ones or those a retention policy does not
//! keep. Chunks are not touched: other snapshots may share them.

use std::process::ExitCode;

use anyhow::{Result, bail};
use ferry_engine::Repository;
use ferry_engine::retention::{self, Candidate, Policy, Reason};
use serde::Serialize;

use crate::args::ForgetArgs;
use crate::commands::{open_repo, print_json};
use ferry_engine::calendar::utc;

#[derive(Serialize)]
struct Row {
    snapshot: String,
    name: String,
    time: String,
    keep: bool,
    reasons: Vec<Reason>,
}

#[derive(Serialize)]
struct Report {
    dry_run: bool,
    removed: usize,
    /// Of the snapshots considered (named, or under the policy), those kept.
    kept: usize,
    /// Snapshots the repository holds afterwards (with `dry_run`: would hold).
    remaining: usize,
    snapshots: Vec<Row>,
}

pub fn run(args: ForgetArgs) -> Result<ExitCode> {
    let policy = Policy {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
    };
    match (args.snapshots.is_empty(), policy.is_empty()) {
        (true, true) => bail!(
            "nothing to forget: name snapshots, or give a policy with --keep-last, --keep-daily, \
             --keep-weekly or --keep-monthly (a policy that keeps nothing is refused)"
        ),
        (false, false) => bail!("name snapshots or give a --keep-* policy, not both"),
        _ => {}
    }
    let repo = open_repo(&args.repo)?;
    let rows = if policy.is_empty() {
        named(&repo, &args.snapshots)?
    } else {
        by_policy(&repo, &policy, args.domain.as_deref())?
    };
    let before = repo.snapshot_ids()?.len();
    if !args.dry_run {
        for row in rows.iter().filter(|r| !r.keep) {
            repo.remove_snapshot(&row.snapshot)?;
        }
    }
    let removed = rows.iter().filter(|r| !r.keep).count();
    let report = Report {
        dry_run: args.dry_run,
        removed,
        kept: rows.len() - removed,
        remaining: before - removed,
        snapshots: rows,
    };
    if args.json {
        print_json(&report)?;
    } else {
        print_human(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The snapshots the user named, each resolved (a damaged manifest can still be named by id).
fn named(repo: &Repository, args: &[String]) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    for arg in args {
        let id = repo.resolve_snapshot(arg)?;
        if rows.iter().any(|r| r.snapshot == id) {
            continue;
        }
        let (name, time) = match repo.load_meta(&id) {
            Ok(meta) => (meta.name, utc(meta.finished_unix)),
            Err(_) => ("(damaged)".to_owned(), String::new()),
        };
        rows.push(Row {
            snapshot: id,
            name,
            time,
            keep: false,
            reasons: Vec::new(),
        });
    }
    Ok(rows)
}

/// Every readable snapshot (of `only` when given), decided by the policy. Snapshots whose
/// metadata does not read are left alone, with a warning: the policy cannot place them.
fn by_policy(repo: &Repository, policy: &Policy, only: Option<&str>) -> Result<Vec<Row>> {
    let mut candidates = Vec::new();
    for id in repo.snapshot_ids()? {
        match repo.load_meta(&id) {
            Ok(meta) if only.is_none_or(|name| name == meta.name) => candidates.push(Candidate {
                finished_at: meta.finished_at(),
                name: meta.name,
                id,
            }),
            Ok(_) => {}
            Err(e) => log::warn!("forget leaves snapshot {id} alone: {e}"),
        }
    }
    if let Some(name) = only
        && candidates.is_empty()
    {
        bail!("no snapshot is named {name}");
    }
    Ok(retention::apply(policy, &candidates)
        .into_iter()
        .map(|d| Row {
            keep: d.keep(),
            time: utc(d.candidate.finished_at.0),
            snapshot: d.candidate.id,
            name: d.candidate.name,
            reasons: d.reasons,
        })
        .collect())
}

fn print_human(report: &Report) -> Result<()> {
    for row in &report.snapshots {
        let action = if row.keep { "keep  " } else { "remove" };
        let reasons: Vec<String> = row
            .reasons
            .iter()
            .map(|r| format!("{r:?}").to_lowercase())
            .collect();
        let why = if reasons.is_empty() {
            String::new()
        } else {
            format!("  ({})", reasons.join(", "))
        };
        outln!(
            "{action}  {}  {}  {}{why}",
            row.snapshot,
            row.time,
            row.name
        )?;
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    outln!(
        "{verb} {} snapshot(s); {} remain in the repository. Chunks stay until `ferry gc` \
         deletes those no snapshot uses.",
        report.removed,
        report.remaining
    )?;
    Ok(())
}
