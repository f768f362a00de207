//! `ferry recover`: merge back what interrupted domain backups left.

use std::process::ExitCode;

use anyhow::Result;

use crate::args::RecoverArgs;
use crate::commands::print_json;
use crate::libvirt::Hypervisor;
use crate::libvirt::journal::Journal;
use crate::libvirt::recover::recover;

pub fn run(args: RecoverArgs) -> Result<ExitCode> {
    let hv = Hypervisor::open(&args.connect.connect)?;
    let journal = Journal::from_env();
    let recovered = recover(&hv, &journal, args.domain.as_deref(), None)?;
    // A name that matched nothing is a typo until shown otherwise (a journal entry of a
    // domain since undefined is recovered above, and then `recovered` is not empty).
    if let Some(name) = &args.domain
        && recovered.is_empty()
    {
        hv.domain(name)?;
    }
    if args.json {
        print_json(&serde_json::json!({ "recovered": recovered }))?;
    } else if recovered.is_empty() {
        outln!("nothing to recover")?;
    } else {
        for r in &recovered {
            outln!("{r}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
