//! `ferry gen-image`: a reproducible sample image.

use std::process::ExitCode;

use anyhow::Result;
use ferry_engine::sample::generate;

use crate::args::GenImageArgs;
use crate::commands::print_json;
use crate::size::human;

pub fn run(args: GenImageArgs) -> Result<ExitCode> {
    let summary = generate(&args.out, args.size, args.seed)?;
    if args.json {
        print_json(&summary)?;
    } else {
        outln!(
            "wrote {} ({}): {} holes, {} zeros, {} text-like, {} random",
            args.out.display(),
            human(summary.size),
            human(summary.hole_bytes),
            human(summary.zero_bytes),
            human(summary.text_bytes),
            human(summary.random_bytes)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
