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
    if args.json {
        print_json(&serde_json::json!({ "recovered": recovered }))?;
    } else if recovered.is_empty() {
        println!("nothing to recover");
    } else {
        for r in &recovered {
            println!(
                "domain {}: merged {} back; removed {} temporary files",
                r.domain,
                if r.merged.is_empty() {
                    "nothing".to_owned()
                } else {
                    r.merged.join(", ")
                },
                r.removed.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
