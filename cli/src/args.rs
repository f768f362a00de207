//! Command-line arguments. Names are a contract: scripts depend on them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::size::parse_size;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Fast, deduplicated, verified backups of disk images"
)]
pub struct Cli {
    /// More log output on stderr (repeat for debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings of `s3://` repositories; each wins over its AWS environment variable.
#[derive(Args, Clone, Default)]
pub struct S3Args {
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 (default: $AWS_ENDPOINT_URL, else AWS).
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long, global = true, value_name = "NAME")]
    pub s3_region: Option<String>,
    /// S3 access key id (default: $AWS_ACCESS_KEY_ID).
    #[arg(long, global = true, value_name = "ID")]
    pub s3_access_key_id: Option<String>,
    /// File holding the S3 secret access key, on its first line (default: $AWS_SECRET_ACCESS_KEY).
    /// The key itself is never a flag: it would show in `ps`.
    #[arg(long, global = true, value_name = "PATH")]
    pub s3_secret_access_key_file: Option<std::path::PathBuf>,
    /// Allow a plain-HTTP S3 endpoint (default: $AWS_ALLOW_HTTP=true).
    #[arg(long, global = true)]
    pub s3_allow_http: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a repository.
    Init(InitArgs),
    /// Back up a disk image (file or block device) into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    List(ListArgs),
    /// Remove snapshots: the ones named, or those a --keep-* policy does not keep.
    Forget(ForgetArgs),
    /// Delete the chunks no snapshot uses (refused while a backup holds the repository).
    Gc(GcArgs),
    /// Restore a disk of a snapshot into a sparse file (or onto a block device with --force).
    Restore(RestoreArgs),
    /// Check that snapshots are complete and (with --read-data) that their data is intact.
    Verify(VerifyArgs),
    /// Measure each pipeline stage and the whole pipeline on one image.
    Bench(BenchArgs),
    /// Write a reproducible sample image (holes, zeros, text-like and random data).
    GenImage(GenImageArgs),
    /// Merge back every temporary overlay a Ferry backup left a running domain on.
    Recover(RecoverArgs),
}

impl Command {
    /// Whether the command was asked for JSON output (`--json`).
    pub fn json(&self) -> bool {
        match self {
            Command::Init(a) => a.json,
            Command::Backup(a) => a.json,
            Command::List(a) => a.json,
            Command::Forget(a) => a.json,
            Command::Gc(a) => a.json,
            Command::Restore(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Bench(a) => a.json,
            Command::GenImage(a) => a.json,
            Command::Recover(a) => a.json,
        }
    }
}

/// Where the repository is.
#[derive(Args, Clone)]
pub struct RepoArg {
    /// Repository: a directory path, file://PATH, s3://BUCKET/PREFIX or nfs://HOST[:PORT]/PATH.
    #[arg(long, env = "FERRY_REPO", value_name = "URL")]
    pub repo: String,
}

#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Default chunk size of backups into this repository (power of two, 64K to 64M).
    #[arg(long, value_parser = parse_size, default_value = "4M", value_name = "SIZE")]
    pub chunk_size: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ReaderChoice {
    /// io_uring when available, else positioned reads.
    Auto,
    /// Positioned reads only.
    Pread,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeChoice {
    /// Freeze each disk behind a temporary QCOW2 overlay, copy the frozen base, commit and pivot.
    Overlay,
    /// Have QEMU write a point-in-time copy (virDomainBackupBegin), then copy that.
    Push,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuiesceChoice {
    /// Quiesce when the guest agent answers, else take a crash-consistent snapshot.
    Auto,
    /// Require the guest agent; fail (changing nothing) when it does not answer.
    On,
    /// Never quiesce.
    Off,
}

/// Where libvirt is.
#[derive(Args, Clone)]
pub struct ConnectArg {
    /// libvirt connection URI.
    #[arg(
        long,
        env = "LIBVIRT_DEFAULT_URI",
        default_value = "qemu:///system",
        value_name = "URI"
    )]
    pub connect: String,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["image", "domain"])))]
pub struct BackupArgs {
    /// Disk image to back up: a regular file or a block device.
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// libvirt domain to back up, live when running, offline when shut off.
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// Live backup method for a running domain.
    #[arg(long, value_enum, default_value = "overlay", conflicts_with = "image")]
    pub mode: ModeChoice,
    /// Disk targets to back up (repeatable; default: every disk on a file or block device).
    #[arg(long = "disk", value_name = "TARGET", conflicts_with = "image")]
    pub disks: Vec<String>,
    /// Quiesce guest filesystems through the QEMU guest agent.
    #[arg(long, value_enum, default_value = "auto", conflicts_with = "image")]
    pub quiesce: QuiesceChoice,
    /// Directory for the temporary overlays (default: beside each disk image).
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    pub overlay_dir: Option<PathBuf>,
    /// Directory for push mode's scratch copies (default: beside each disk image).
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    pub scratch_dir: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArg,
    /// Command run (by `sh -c`) at each phase of a domain backup, with FERRY_HOOK_PHASE set to
    /// `frozen` (the point in time is fixed, the copy has not started) or `copied` (every chunk
    /// is stored; the snapshot is not yet published, the domain not yet merged back), and
    /// FERRY_DOMAIN, FERRY_PID set. A failing hook aborts the backup: nothing is published, and
    /// the domain is still merged back.
    #[arg(long, value_name = "CMD", conflicts_with = "image")]
    pub hook: Option<String>,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot name (default: the image's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Chunk size (power of two, 64K to 64M; default: the repository's).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub chunk_size: Option<u64>,
    /// zstd compression level (1 is fastest; 3 smaller and slower).
    #[arg(
        long,
        default_value_t = 1,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub zstd_level: i32,
    /// Compression threads (default: every core).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Concurrent writes to the repository.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub uploads: usize,
    /// Read path.
    #[arg(long, value_enum, default_value = "auto")]
    pub reader: ReaderChoice,
    /// Print one JSON object on stdout at the end instead of progress and a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshots to remove (id, unique prefix or `latest`); not with a --keep-* policy.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots of each name.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: usize,
    /// Keep the newest snapshot of each of the N most recent days (UTC) that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: usize,
    /// Keep the newest snapshot of each of the N most recent weeks (Monday to Sunday, UTC).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: usize,
    /// Keep the newest snapshot of each of the N most recent months (UTC).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: usize,
    /// Apply the policy only to snapshots of this domain (or image) name.
    #[arg(long, alias = "name", value_name = "NAME")]
    pub domain: Option<String>,
    /// Show what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, a unique prefix of one, or `latest`.
    pub snapshot: String,
    /// Target file for one disk; without --disk, for a domain snapshot (or any snapshot of
    /// several disks), a directory (created if missing) that receives one file per disk, named
    /// by its target (vda, vdb).
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,
    /// Disk to restore (a target such as vda, or an image backup's disk name).
    #[arg(long)]
    pub disk: Option<String>,
    /// Replace an existing file, or write onto a block device.
    #[arg(long)]
    pub force: bool,
    /// Concurrent chunk fetches (each holds one chunk buffer).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = parse_threads)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot to check (id, prefix or `latest`); default: all.
    pub snapshot: Option<String>,
    /// Read, decode and re-hash every referenced chunk (default: check presence only).
    #[arg(long)]
    pub read_data: bool,
    /// With --read-data: read only about PERCENT % of the referenced chunks (0 < PERCENT <= 100),
    /// a different random sample each run unless --sample-seed repeats one.
    #[arg(long, requires = "read_data", value_name = "PERCENT")]
    pub sample: Option<f64>,
    /// The seed that picks the sample (printed by every sampled run).
    #[arg(long, requires = "sample", value_name = "N")]
    pub sample_seed: Option<u64>,
    /// Move each corrupt chunk (found with --read-data) to quarantine/, keeping its bytes, and
    /// mark each missing one there, so the next backup of the same data stores it again.
    #[arg(long)]
    pub quarantine: bool,
    /// Concurrent chunk reads with --read-data.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = parse_threads)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Image to measure on (default: a generated sample image of --size).
    #[arg(long, value_name = "PATH", conflicts_with = "size")]
    pub image: Option<PathBuf>,
    /// Size of the generated sample image.
    #[arg(long, value_parser = parse_size, default_value = "1G", value_name = "SIZE")]
    pub size: u64,
    /// Repository location to measure writes into; a throwaway prefix or directory inside it
    /// is used and removed (default: a temporary directory).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    #[arg(long, value_parser = parse_size, default_value = "4M", value_name = "SIZE")]
    pub chunk_size: u64,
    #[arg(
        long,
        default_value_t = 1,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub zstd_level: i32,
    /// Drop the page cache before reading (root only), for cold-cache numbers.
    #[arg(long)]
    pub cold: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GenImageArgs {
    /// Size of the image (e.g. 512M, 4G).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: u64,
    /// File to create (must not exist).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Generator seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RecoverArgs {
    /// Only this domain (default: every domain with a journal entry or a Ferry overlay).
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArg,
    #[arg(long)]
    pub json: bool,
}

/// Most threads a `--threads` may ask for: each may hold a chunk buffer (up to 64 MiB).
const MAX_THREADS: usize = 256;

/// A `--threads` value: 1 to [`MAX_THREADS`].
fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be between 1 and {MAX_THREADS}")),
        Err(e) => Err(e.to_string()),
    }
}
