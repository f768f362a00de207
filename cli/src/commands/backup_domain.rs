//! `ferry backup --domain`: a live (or shut-off) libvirt domain into one snapshot.

use std::panic::{AssertUnwindSafe, catch_unwind};

use anyhow::{Context, Result, anyhow, bail};
use crossbeam_channel::Receiver;
use ferry_engine::Repository;
use ferry_engine::backup::{BackupReport, DiskSource, copy};

use crate::args::{BackupArgs, ModeChoice, QuiesceChoice};
use crate::commands::backup::engine_options;
use crate::hook::{self, Phase};
use crate::libvirt::journal::Journal;
use crate::libvirt::overlay::{self, DomainTarget};
use crate::libvirt::quiesce::Quiesce;
use crate::libvirt::recover::recover;
use crate::libvirt::{
    FileCopy, Hypervisor, domain_xml, ffi, is_running, push, require_single_images, select_disks,
};
use crate::progress::Bar;

/// `cancel` disconnects on the first SIGINT, SIGTERM or SIGHUP.
pub fn run(
    args: &BackupArgs,
    repo: &Repository,
    name: &str,
    cancel: Receiver<()>,
) -> Result<BackupReport> {
    let hv = Hypervisor::open(&args.connect.connect)?;
    let domain = hv.domain(name)?;
    let uuid = domain.uuid_string().map_err(ffi::LibvirtError::from)?;
    let journal = Journal::from_env();
    // One backup per domain at a time; `recover` leaves a locked domain alone.
    let lock = journal.lock(&uuid, name)?;
    // Anything an earlier, interrupted backup of this domain left is undone first.
    let recovered = recover(&hv, &journal, Some(name), Some(&lock))
        .context("cannot recover an earlier backup of this domain")?;
    for r in recovered {
        log::warn!("recovered an interrupted backup: {r}");
    }
    let xml = domain_xml(&domain)?;
    let all_disks = crate::libvirt::domain_xml::disks(&xml)?;
    let disks = select_disks(&xml, &args.disks)?;
    let running = is_running(&domain)?;
    match (running, args.mode) {
        (false, _) => require_single_images(&disks, FileCopy::Offline)?,
        (true, ModeChoice::Overlay) => require_single_images(&disks, FileCopy::Overlay)?,
        (true, ModeChoice::Push) => {}
    }
    let mut options = engine_options(args, repo, name)?;
    options.domain_xml = Some(xml);
    options.cancel = Some(cancel.clone());
    let bar = Bar::new(args.json);
    let hook_cmd = args.hook.as_deref();
    let base_sources: Vec<DiskSource> = disks
        .iter()
        .map(|d| {
            DiskSource::new(
                d.target.clone(),
                d.source.clone().expect("selected disks have images"),
            )
        })
        .collect();
    let target = DomainTarget {
        domain: &domain,
        name,
        connect: hv.uri(),
        journal: &journal,
    };

    if !running {
        if args.mode == ModeChoice::Push {
            log::warn!(
                "domain {name} is shut off: --mode push needs a running domain (QEMU makes the \
                 copy); backing up its image files offline instead"
            );
        }
        log::info!("domain {name} is shut off: backing up its images offline");
        let pending = copy(repo, &base_sources, &options, &bar)
            .with_context(|| format!("offline backup of domain {name} failed"))?;
        if is_running(&domain)? {
            bail!("domain {name} was started during the offline backup; nothing was published");
        }
        return Ok(pending.publish(repo)?);
    }

    let quiesce = match args.quiesce {
        QuiesceChoice::Auto => Quiesce::Auto,
        QuiesceChoice::On => Quiesce::On,
        QuiesceChoice::Off => Quiesce::Off,
    };
    match args.mode {
        ModeChoice::Overlay => {
            let frozen = overlay::freeze(
                &target,
                &all_disks,
                &disks,
                args.overlay_dir.as_deref(),
                quiesce,
            )?;
            let copied = guarded(|| {
                hook::run(hook_cmd, Phase::Frozen, name, &cancel)?;
                let pending = copy(repo, &base_sources, &options, &bar)?;
                hook::run(hook_cmd, Phase::Copied, name, &cancel)?;
                Ok(pending.publish(repo)?)
            });
            let thawed = overlay::thaw(&domain, &frozen, &journal, &bar);
            combine(copied, thawed, name)
        }
        ModeChoice::Push => {
            let scratches = push::begin(
                &target,
                &all_disks,
                &disks,
                args.scratch_dir.as_deref(),
                quiesce,
            )?;
            let copied = guarded(|| {
                hook::run(hook_cmd, Phase::Frozen, name, &cancel)?;
                push::wait(&domain, &cancel, &bar)?;
                push::check_complete(&scratches)?;
                let sources: Vec<DiskSource> = scratches
                    .iter()
                    .map(|s| DiskSource {
                        name: s.target.clone(),
                        path: s.scratch.clone(),
                        recorded_source: Some(s.base.display().to_string()),
                    })
                    .collect();
                let pending = copy(repo, &sources, &options, &bar)?;
                hook::run(hook_cmd, Phase::Copied, name, &cancel)?;
                Ok(pending.publish(repo)?)
            });
            let ended = push::end(&domain, &scratches, &journal);
            combine(copied, ended, name)
        }
    }
}

/// Runs the copy step, turning a panic into an error so cleanup always runs.
fn guarded(step: impl FnOnce() -> Result<BackupReport>) -> Result<BackupReport> {
    catch_unwind(AssertUnwindSafe(step))
        .unwrap_or_else(|_| Err(anyhow!("internal error (panic) during the copy")))
}

/// The copy's result, unless cleanup failed too: then both are reported.
fn combine(copied: Result<BackupReport>, cleanup: Result<()>, name: &str) -> Result<BackupReport> {
    match (copied, cleanup) {
        (Ok(report), Ok(())) => Ok(report),
        (Err(e), Ok(())) => Err(e.context(format!(
            "backup of domain {name} failed (the domain is back on its disks)"
        ))),
        (Ok(report), Err(c)) => Err(c.context(format!(
            "snapshot {} was stored, but cleaning up domain {name} failed",
            report.snapshot
        ))),
        (Err(e), Err(c)) => Err(e.context(format!(
            "backup of domain {name} failed, and so did cleaning up: {c:#}"
        ))),
    }
}
