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
    // Before the repository is opened: a signal also ends the retries of a repository that
    // is away (see `signals`).
    let cancel = crate::signals::cancel_on_signal()?;
    let repo = open_repo(&args.repo)?;
    let id = repo.resolve_snapshot(&args.snapshot)?;
    let snapshot = repo.load_snapshot(&id)?;
    let options = RestoreOptions {
        threads: args.threads,
        overwrite: args.force,
        cancel: Some(cancel),
    };
    let bar = Bar::new(args.json);
    // Without --disk, a domain snapshot (or any of several disks) restores into a directory.
    let meta = &snapshot.manifest.meta;
    let into_dir = args.disk.is_none() && (meta.domain_xml.is_some() || meta.disks.len() > 1);
    if into_dir && meta.domain_xml.is_some() {
        check_domain_xml_target(&args.to, args.force)?;
    }
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
    let domain_xml = match (&meta.domain_xml, into_dir) {
        (Some(xml), true) => Some(write_domain_xml(&args.to, xml, args.force)?),
        _ => None,
    };
    if args.json {
        match reports.as_slice() {
            [one] if !into_dir => print_json(one)?,
            _ => print_json(&serde_json::json!({
                "snapshot": id,
                "disks": reports,
                "domain_xml": domain_xml,
            }))?,
        }
    } else {
        for report in &reports {
            outln!(
                "restored snapshot {} disk {} to {}: {} {} image ({} data) in {:.1} s, every chunk verified; image digest {}",
                report.snapshot,
                report.disk,
                report.target,
                human(report.virtual_size),
                report.format,
                human(report.bytes_written),
                report.seconds,
                report.image_digest
            )?;
        }
        if let Some(path) = &domain_xml {
            outln!(
                "the domain's XML at backup time is in {}: its disk paths still name the \
                 original images",
                path.display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses, before any disk is restored, a `dir/domain.xml` that exists unless `force` (and
/// then only a regular file: never a link or device).
fn check_domain_xml_target(dir: &Path, force: bool) -> Result<()> {
    let path = dir.join("domain.xml");
    match std::fs::symlink_metadata(&path) {
        Err(_) => Ok(()),
        Ok(meta) if force && meta.is_file() => Ok(()),
        Ok(meta) if meta.is_file() => {
            anyhow::bail!(
                "{} already exists (pass --force to replace it)",
                path.display()
            )
        }
        Ok(_) => anyhow::bail!("{} exists and is not a regular file", path.display()),
    }
}

/// Writes a domain snapshot's XML as `dir/domain.xml` (0600; replacing a regular file only
/// with `force`, never following a link), after its disks were restored there.
fn write_domain_xml(dir: &Path, xml: &str, force: bool) -> Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("domain.xml");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .create_new(!force)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot write {} (pass --force to replace it)",
                path.display()
            )
        })?;
    file.write_all(xml.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
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
