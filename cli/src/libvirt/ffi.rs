//! The libvirt calls the `virt` crate does not wrap, made safe.
//!
//! This is the only module with `unsafe` code in the binary. Each function passes a live
//! `virDomainPtr` borrowed from a [`virt::domain::Domain`] (valid for the duration of the call)
//! and NUL-terminated strings that outlive the call, and turns libvirt's `-1` into the last
//! libvirt error of this thread.

use std::ffi::CString;

use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

/// A libvirt failure, with its error number kept for decisions (e.g. "not ready for pivot").
#[derive(Debug, Clone)]
pub struct LibvirtError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for LibvirtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LibvirtError {}

impl From<VirtError> for LibvirtError {
    fn from(e: VirtError) -> Self {
        LibvirtError {
            code: e.code().to_raw() as i32,
            message: e.message().to_owned(),
        }
    }
}

/// libvirt error numbers Ferry reacts to.
pub mod codes {
    /// `VIR_ERR_ARGUMENT_UNSUPPORTED`, e.g. "QEMU guest agent is not configured".
    pub const ARGUMENT_UNSUPPORTED: i32 = 74;
    /// `VIR_ERR_BLOCK_COPY_ACTIVE`, e.g. "not ready for pivot yet".
    pub const BLOCK_COPY_ACTIVE: i32 = 83;
    /// `VIR_ERR_AGENT_UNRESPONSIVE`.
    pub const AGENT_UNRESPONSIVE: i32 = 86;
}

fn last_error() -> LibvirtError {
    VirtError::last_error().into()
}

fn c_string(s: &str) -> Result<CString, LibvirtError> {
    CString::new(s).map_err(|_| LibvirtError {
        code: -1,
        message: format!("{s:?} contains a NUL byte"),
    })
}

/// The block job running on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockJob {
    /// `virDomainBlockJobType`: 4 is an active commit.
    pub kind: i32,
    pub cur: u64,
    pub end: u64,
}

/// `virDomainBlockJobType` of an active commit.
pub const BLOCK_JOB_ACTIVE_COMMIT: i32 = sys::VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT as i32;

impl BlockJob {
    /// An active commit whose two images are in sync: pivoting is possible now.
    pub fn ready_to_pivot(&self) -> bool {
        self.kind == BLOCK_JOB_ACTIVE_COMMIT && self.end > 0 && self.cur == self.end
    }
}

/// Starts an active commit of the active layer of `disk` into its immediate backing image
/// only (`virDomainBlockCommit` with `VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | _SHALLOW`).
pub fn block_commit_active(domain: &Domain, disk: &str) -> Result<(), LibvirtError> {
    let disk = c_string(disk)?;
    // SAFETY: a live domain pointer and a valid C string; NULL top is the active layer and,
    // with SHALLOW, NULL base is its immediate backing image.
    let rc = unsafe {
        sys::virDomainBlockCommit(
            domain.as_ptr(),
            disk.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            sys::VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | sys::VIR_DOMAIN_BLOCK_COMMIT_SHALLOW,
        )
    };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// The block job on `disk`, if any (`virDomainGetBlockJobInfo`).
pub fn block_job(domain: &Domain, disk: &str) -> Result<Option<BlockJob>, LibvirtError> {
    let disk = c_string(disk)?;
    let mut info = sys::virDomainBlockJobInfo {
        type_: 0,
        bandwidth: 0,
        cur: 0,
        end: 0,
    };
    // SAFETY: a live domain pointer, a valid C string and a writable info struct.
    let rc = unsafe { sys::virDomainGetBlockJobInfo(domain.as_ptr(), disk.as_ptr(), &mut info, 0) };
    match rc {
        r if r < 0 => Err(last_error()),
        0 => Ok(None),
        _ => Ok(Some(BlockJob {
            kind: info.type_,
            cur: info.cur,
            end: info.end,
        })),
    }
}

/// Ends the block job on `disk`: with `pivot`, switches the disk to the commit's base
/// (`VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT`); without, cancels the job. Waits for completion.
pub fn block_job_abort(domain: &Domain, disk: &str, pivot: bool) -> Result<(), LibvirtError> {
    let disk = c_string(disk)?;
    let flags = if pivot {
        sys::VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT
    } else {
        0
    };
    // SAFETY: a live domain pointer and a valid C string.
    let rc = unsafe { sys::virDomainBlockJobAbort(domain.as_ptr(), disk.as_ptr(), flags) };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// Starts a push-mode backup job described by `backup_xml` (`virDomainBackupBegin`).
pub fn backup_begin(domain: &Domain, backup_xml: &str) -> Result<(), LibvirtError> {
    let xml = c_string(backup_xml)?;
    // SAFETY: a live domain pointer, a valid C string, no checkpoint XML.
    let rc =
        unsafe { sys::virDomainBackupBegin(domain.as_ptr(), xml.as_ptr(), std::ptr::null(), 0) };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// Freezes every guest filesystem through the guest agent (`virDomainFSFreeze`).
pub fn fs_freeze(domain: &Domain) -> Result<(), LibvirtError> {
    // SAFETY: a live domain pointer; no mount point list (all filesystems).
    let rc = unsafe { sys::virDomainFSFreeze(domain.as_ptr(), std::ptr::null_mut(), 0, 0) };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// Thaws every guest filesystem through the guest agent (`virDomainFSThaw`).
pub fn fs_thaw(domain: &Domain) -> Result<(), LibvirtError> {
    // SAFETY: a live domain pointer; no mount point list (all filesystems).
    let rc = unsafe { sys::virDomainFSThaw(domain.as_ptr(), std::ptr::null_mut(), 0, 0) };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// Aborts the domain's current job (`virDomainAbortJob`).
pub fn abort_job(domain: &Domain) -> Result<(), LibvirtError> {
    // SAFETY: a live domain pointer.
    let rc = unsafe { sys::virDomainAbortJob(domain.as_ptr()) };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// Progress of the domain's current job (`virDomainGetJobInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress {
    /// `virDomainJobType`: 0 none, 1 bounded, 2 unbounded (running).
    pub kind: i32,
    pub data_total: u64,
    pub data_processed: u64,
}

impl JobProgress {
    pub fn running(&self) -> bool {
        self.kind == sys::VIR_DOMAIN_JOB_BOUNDED as i32
            || self.kind == sys::VIR_DOMAIN_JOB_UNBOUNDED as i32
    }
}

pub fn job_progress(domain: &Domain) -> Result<JobProgress, LibvirtError> {
    // SAFETY: virDomainJobInfo is plain data; all-zero is a valid value.
    let mut info: sys::virDomainJobInfo = unsafe { std::mem::zeroed() };
    // SAFETY: a live domain pointer and a writable info struct.
    let rc = unsafe { sys::virDomainGetJobInfo(domain.as_ptr(), &mut info) };
    if rc < 0 {
        return Err(last_error());
    }
    Ok(JobProgress {
        kind: info.type_,
        data_total: info.dataTotal,
        data_processed: info.dataProcessed,
    })
}

/// How the domain's last job ended, if libvirt still knows (`virDomainGetJobStats` with
/// `VIR_DOMAIN_JOB_STATS_COMPLETED`, keeping the record for other readers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Completed,
    Failed(String),
    Cancelled,
    Unknown,
}

pub fn completed_job(domain: &Domain) -> Result<JobEnd, LibvirtError> {
    let mut kind: std::os::raw::c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut nparams: std::os::raw::c_int = 0;
    // SAFETY: a live domain pointer and writable out-parameters; libvirt allocates `params`.
    let rc = unsafe {
        sys::virDomainGetJobStats(
            domain.as_ptr(),
            &mut kind,
            &mut params,
            &mut nparams,
            sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED,
        )
    };
    if rc < 0 {
        return Err(last_error());
    }
    let mut message = None;
    if !params.is_null() {
        let mut value: *const std::os::raw::c_char = std::ptr::null();
        // SAFETY: params/nparams come from libvirt; the key is a valid C string; `value`
        // points into `params`, so it is copied before the array is freed.
        unsafe {
            if sys::virTypedParamsGetString(
                params,
                nparams,
                sys::VIR_DOMAIN_JOB_ERRMSG.as_ptr(),
                &mut value,
            ) == 1
                && !value.is_null()
            {
                message = Some(
                    std::ffi::CStr::from_ptr(value)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            sys::virTypedParamsFree(params, nparams);
        }
    }
    Ok(match kind as u32 {
        sys::VIR_DOMAIN_JOB_COMPLETED => JobEnd::Completed,
        sys::VIR_DOMAIN_JOB_FAILED => {
            JobEnd::Failed(message.unwrap_or_else(|| "job failed".into()))
        }
        sys::VIR_DOMAIN_JOB_CANCELLED => JobEnd::Cancelled,
        _ => JobEnd::Unknown,
    })
}
