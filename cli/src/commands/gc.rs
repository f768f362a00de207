//! `ferry gc`: deletes the chunk objects no snapshot names, under the exclusive repository lock,
//! and what interrupted writes and dead benchmarks left behind.

use std::process::ExitCode;

use std::path::Path;

use anyhow::{Context, Result};
use ferry_engine::EngineError;
use ferry_engine::gc::gc;
use ferry_sinks::SinkError;
use ferry_sinks::nfs::NfsSink;

use crate::args::GcArgs;
use crate::commands::{open_repo, print_json};
use crate::repo_url::RepoUrl;
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
    if !report.dry_run {
        for prefix in &report.bench_prefixes {
            if let Err(e) = remove_bench_dirs(&args.repo.repo, prefix) {
                log::warn!("cannot remove the directories of {prefix}/: {e:#}");
            }
        }
    }
    if args.json {
        print_json(&report)?;
    } else {
        let verb = if report.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        outln!(
            "{} snapshot(s) name {} of {} chunk(s); {verb} {} unreferenced chunk(s), {}.",
            report.snapshots,
            report.chunks_referenced,
            report.chunks_total,
            report.chunks_deleted,
            human(report.bytes_freed)
        )?;
        if report.leftovers_removed > 0 {
            let verb = if report.dry_run {
                "would remove"
            } else {
                "removed"
            };
            outln!(
                "{verb} {} temp file(s) of interrupted writes, {}.",
                report.leftovers_removed,
                human(report.leftover_bytes)
            )?;
        }
        if report.bench_objects_removed > 0 {
            let verb = if report.dry_run {
                "would remove"
            } else {
                "removed"
            };
            outln!(
                "{verb} {} object(s) of {} benchmark run(s) that did not clean up ({}), {}.",
                report.bench_objects_removed,
                report.bench_prefixes.len(),
                report.bench_prefixes.join(", "),
                human(report.bench_bytes)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes the empty directory tree a dead benchmark's prefix leaves on a local directory or
/// NFS export once gc deleted its objects (S3 has no directories). A directory that still
/// holds anything stays. This runs after gc released its lock; a new benchmark uses a fresh
/// random prefix, never this one.
fn remove_bench_dirs(url: &str, prefix: &str) -> Result<()> {
    match RepoUrl::parse(url)? {
        RepoUrl::Local(root) => remove_empty_tree(&root.join(prefix)),
        RepoUrl::Nfs(config) => {
            Ok(NfsSink::open(&config)?.remove_empty_dirs(&format!("{prefix}/"))?)
        }
        RepoUrl::S3 { .. } => Ok(()),
    }
}

/// Removes `dir` and every directory below it that is empty once its children are removed;
/// a missing `dir` is fine.
fn remove_empty_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry.file_type()?.is_dir() {
            remove_empty_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}
