//! `ferry backup`: an image (`--image`) or a libvirt domain (`--domain`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferry_engine::Repository;
use ferry_engine::backup::{BackupOptions, BackupReport, DiskSource, backup};
use ferry_engine::config::check_chunk_size;
use ferry_engine::reader::ReaderMode;

use crate::args::{BackupArgs, ReaderChoice};
use crate::commands::{backup_domain, open_repo, print_json};
use crate::progress::Bar;
use crate::size::human;

pub fn run(args: BackupArgs) -> Result<ExitCode> {
    // Before the repository is opened: a signal also ends the retries of a repository that
    // is away (see `signals`).
    let cancel = crate::signals::cancel_on_signal()?;
    let repo = open_repo(&args.repo)?;
    let report = match (&args.image, &args.domain) {
        (Some(image), None) => {
            let disk_name = disk_name_of(image)?;
            let mut options = engine_options(&args, &repo, &disk_name)?;
            options.cancel = Some(cancel);
            let disks = [DiskSource::new(disk_name, image.clone())];
            backup(&repo, &disks, &options, &Bar::new(args.json))
                .with_context(|| format!("backup of {} failed", image.display()))?
        }
        (None, Some(domain)) => backup_domain::run(&args, &repo, domain, cancel)?,
        _ => bail!("give exactly one of --image and --domain"),
    };
    print_report(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Engine options from the command line, named `name`.
pub fn engine_options(args: &BackupArgs, repo: &Repository, name: &str) -> Result<BackupOptions> {
    let mut options = BackupOptions::new(args.name.clone().unwrap_or_else(|| name.to_owned()));
    options.chunk_size = match args.chunk_size {
        Some(size) => check_chunk_size(size)?,
        None => repo.config().chunk_size,
    };
    options.zstd_level = args.zstd_level;
    if let Some(threads) = args.threads {
        options.workers = threads;
    }
    options.uploaders = args.uploads;
    options.reader_mode = match args.reader {
        ReaderChoice::Auto => ReaderMode::Auto,
        ReaderChoice::Pread => ReaderMode::Pread,
    };
    Ok(options)
}

fn print_report(report: &BackupReport, json: bool) -> Result<()> {
    if json {
        return print_json(report);
    }
    let c = &report.counts;
    let virtual_size: u64 = report.disks.iter().map(|d| d.virtual_size).sum();
    let disks: Vec<&str> = report.disks.iter().map(|d| d.name.as_str()).collect();
    outln!(
        "snapshot {} ({}; disks {}): {} virtual, {} read in {:.1} s ({:.0} MiB/s of image); \
         {} chunks: {} new ({} written), {} reused, {} zero; reader {}",
        report.snapshot,
        report.name,
        disks.join(", "),
        human(virtual_size),
        human(c.bytes_read),
        report.seconds,
        virtual_size as f64 / f64::from(1 << 20) / report.seconds.max(1e-9),
        c.chunks_total,
        c.chunks_new,
        human(c.bytes_written),
        c.chunks_reused,
        c.chunks_zero,
        report.disks.first().map_or("-", |d| d.reader.as_str()),
    )?;
    Ok(())
}

/// The disk's name in the snapshot: the image's file name with anything outside
/// `[A-Za-z0-9._-]` replaced by `_`.
fn disk_name_of(image: &Path) -> Result<String> {
    let Some(name) = image.file_name() else {
        bail!("image path {} has no file name", image.display());
    };
    let mut name: String = name
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    name.truncate(255);
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_are_safe() {
        assert_eq!(
            disk_name_of(Path::new("/x/vm disk.img")).unwrap(),
            "vm_disk.img"
        );
        assert_eq!(disk_name_of(Path::new(".hidden")).unwrap(), "_hidden");
        assert_eq!(disk_name_of(Path::new("/dev/sda")).unwrap(), "sda");
        assert!(disk_name_of(Path::new("/")).is_err());
    }
}
