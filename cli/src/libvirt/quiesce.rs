//! Quiescing guest filesystems (through the QEMU guest agent) at the moment a backup fixes
//! its point in time: the overlay snapshot in overlay mode, the start of the job in push mode.
//!
//! The policy is the same in both modes: `on` fails, changing nothing, when the agent does not
//! answer; `auto` quiesces when the domain has an agent channel and the agent answers, and
//! otherwise says so and takes a crash-consistent point in time; `off` never asks the agent.

use anyhow::{Result, anyhow};
use virt::domain::Domain;

use crate::libvirt::domain_xml;
use crate::libvirt::ffi::{self, LibvirtError, codes};

/// Whether to quiesce guest filesystems for the point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiesce {
    Auto,
    On,
    Off,
}

/// Runs `fix(quiesced)`, which fixes the backup's point in time (quiescing the guest when
/// `quiesced`), according to `policy`. `fix` must change nothing when it fails.
pub fn at_point_in_time<T>(
    domain: &Domain,
    policy: Quiesce,
    mut fix: impl FnMut(bool) -> Result<T, LibvirtError>,
) -> Result<T> {
    let has_channel =
        || crate::libvirt::domain_xml(domain).is_ok_and(|xml| domain_xml::has_agent_channel(&xml));
    match policy {
        Quiesce::Off => fix(false).map_err(|e| anyhow!(e)),
        Quiesce::On => fix(true).map_err(|e| {
            if is_agent_error(&e) {
                anyhow!("--quiesce on needs the QEMU guest agent, which does not answer: {e}")
            } else {
                anyhow!(e)
            }
        }),
        Quiesce::Auto if has_channel() => match fix(true) {
            Err(e) if is_agent_error(&e) => {
                log::warn!("guest agent does not answer ({e}); taking a crash-consistent backup");
                fix(false).map_err(|e| anyhow!(e))
            }
            other => other.map_err(|e| anyhow!(e)),
        },
        Quiesce::Auto => fix(false).map_err(|e| anyhow!(e)),
    }
}

/// Runs `f` with the guest's filesystems frozen through the agent (for push mode, where
/// libvirt has no quiesce flag): freeze, `f`, thaw. A failed freeze is returned as is (an
/// agent error when the agent does not answer) and `f` does not run; a failed thaw after
/// `f` succeeded is reported loudly but does not undo `f`.
pub fn with_frozen_filesystems<T>(
    domain: &Domain,
    f: impl FnOnce() -> Result<T, LibvirtError>,
) -> Result<T, LibvirtError> {
    ffi::fs_freeze(domain)?;
    let result = f();
    if let Err(e) = ffi::fs_thaw(domain) {
        log::error!(
            "cannot thaw the guest's filesystems ({e}); they may still be frozen: run \
             `virsh domfsthaw` on the domain"
        );
    }
    result
}

fn is_agent_error(e: &LibvirtError) -> bool {
    e.code == codes::AGENT_UNRESPONSIVE
        || (e.code == codes::ARGUMENT_UNSUPPORTED && e.message.contains("agent"))
}
