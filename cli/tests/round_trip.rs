//! Backup then restore gives back the image byte for byte, sparse where the image had holes
//! or zeros, for every kind of content and size, through both readers.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Readers a default (`--reader auto`) backup may report, depending on what the kernel and
/// filesystem allow.
const AUTO_READERS: [&str; 4] = ["io_uring+O_DIRECT", "io_uring", "pread+O_DIRECT", "pread"];

/// What a round trip produced.
struct RoundTrip {
    backup: Value,
    restore: Value,
    restored: std::path::PathBuf,
}

/// Backs `image` up with `backup_args`, restores the snapshot into a fresh directory, checks
/// the restored bytes and the reports' agreement, and that `verify --read-data` is clean.
#[track_caller]
fn round_trip(fx: &Fixture, image: &Path, backup_args: &[&str]) -> RoundTrip {
    let size = file_len(image);
    let backup = fx.backup(image, backup_args);
    let sid = text(&backup, "snapshot").to_owned();
    let disk = &backup["disks"][0];
    assert_eq!(backup["disks"].as_array().unwrap().len(), 1, "{backup:#}");
    assert_eq!(num(disk, "virtual_size"), size, "{backup:#}");
    // Every chunk is accounted for exactly once.
    assert_eq!(
        num(&backup, "chunks_total"),
        num(&backup, "chunks_new") + num(&backup, "chunks_reused") + num(&backup, "chunks_zero"),
        "{backup:#}"
    );
    // bytes_written is the new chunk objects plus the manifest.
    assert_eq!(
        num(&backup, "bytes_written"),
        num(disk, "bytes_written") + file_len(&fx.snapshot_path(&sid)),
        "{backup:#}"
    );

    let out = fx.dir("out");
    let restored = out.join("restored.img");
    let restore = fx.restore_ok(&sid, &restored);
    assert_same_file(image, &restored);
    assert_eq!(text(&restore, "snapshot"), sid);
    assert_eq!(num(&restore, "virtual_size"), size);
    assert_eq!(num(&restore, "chunks_total"), num(&backup, "chunks_total"));
    assert_eq!(num(&restore, "chunks_zero"), num(&backup, "chunks_zero"));
    assert_eq!(text(&restore, "image_digest"), text(disk, "image_digest"));
    assert_eq!(
        dir_names(&out),
        ["restored.img"],
        "restore leaves only the target behind"
    );
    assert_eq!(mode(&restored) & 0o077, 0, "restored images are private");

    let verify = fx.verify(&["--read-data"]).success().json();
    assert_eq!(verify["clean"], true, "{verify:#}");
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify:#}");
    assert_eq!(
        num(&verify, "chunks_read"),
        num(&verify, "chunks_referenced"),
        "{verify:#}"
    );
    RoundTrip {
        backup,
        restore,
        restored,
    }
}

/// Indexes of the `chunk`-sized chunks that `(offset, len)` regions touch.
fn touched_chunks(regions: &[(u64, u64)], chunk: u64) -> BTreeSet<u64> {
    regions
        .iter()
        .flat_map(|&(offset, len)| offset / chunk..=(offset + len - 1) / chunk)
        .collect()
}

/// Sum of the lengths of chunks `indexes` of an image of `size` bytes.
fn chunk_bytes_of(indexes: &BTreeSet<u64>, chunk: u64, size: u64) -> u64 {
    indexes.iter().map(|i| (size - i * chunk).min(chunk)).sum()
}

#[test]
fn image_with_holes_round_trips_sparse() {
    let fx = Fixture::new();
    let image = fx.path("holes.img");
    let size = 8 * MIB;
    let a = random_bytes(1, 100 * KIB as usize);
    let b = random_bytes(2, 9000);
    let c = random_bytes(3, 1000);
    let regions: [(u64, &[u8]); 3] = [(MIB + 300, &a), (5 * MIB + 60_000, &b), (size - 1000, &c)];
    write_image(&image, size, &regions);
    assert!(
        allocated(&image) < MIB,
        "precondition: the temp filesystem keeps holes"
    );
    let spans: Vec<(u64, u64)> = regions.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
    let data_chunks = touched_chunks(&spans, CHUNK);
    assert_eq!(data_chunks.len(), 5);
    let data_bytes = chunk_bytes_of(&data_chunks, CHUNK, size);

    let rt = round_trip(&fx, &image, &[]);
    let b = &rt.backup;
    assert_eq!(num(b, "chunks_total"), 128, "{b:#}");
    assert_eq!(num(b, "chunks_new"), 5, "{b:#}");
    assert_eq!(num(b, "chunks_reused"), 0, "{b:#}");
    assert_eq!(num(b, "chunks_zero"), 123, "{b:#}");
    assert!(
        AUTO_READERS.contains(&text(&b["disks"][0], "reader")),
        "{b:#}"
    );
    // Holes are not read: only the chunks holding data (at the filesystem's granularity).
    assert!(num(b, "bytes_read") >= data_bytes, "{b:#}");
    assert!(num(b, "bytes_read") < size / 4, "holes were read: {b:#}");
    assert_eq!(fx.chunk_ids().len(), 5);
    for (offset, bytes) in &regions {
        // A stored chunk named by the BLAKE3 of the raw chunk holding each region's start.
        let start = offset / CHUNK * CHUNK;
        let raw = read_at(&image, start, (size - start).min(CHUNK) as usize);
        assert!(
            fx.chunk_ids().contains(&chunk_id(&raw)),
            "chunk at {start} ({} bytes of data)",
            bytes.len()
        );
    }

    assert_eq!(num(&rt.restore, "bytes_written"), data_bytes);
    let restored_alloc = allocated(&rt.restored);
    assert!(
        restored_alloc <= data_bytes + CHUNK,
        "restored image is not sparse: {restored_alloc} bytes allocated for {data_bytes} of data"
    );
}

#[test]
fn written_zeros_round_trip_and_restore_as_holes() {
    let fx = Fixture::new();
    let image = fx.path("zeros.img");
    let size = 2 * MIB;
    let zeros = vec![0u8; size as usize];
    let data = random_bytes(4, CHUNK as usize);
    write_image(&image, size, &[(0, &zeros), (MIB, &data)]);

    let rt = round_trip(&fx, &image, &[]);
    let b = &rt.backup;
    assert_eq!(num(b, "chunks_total"), 32, "{b:#}");
    assert_eq!(num(b, "chunks_zero"), 31, "{b:#}");
    assert_eq!(num(b, "chunks_new"), 1, "{b:#}");
    if allocated(&image) >= size {
        // Written zeros are data to the filesystem: they are read, found zero, not stored.
        assert_eq!(num(b, "bytes_read"), size, "{b:#}");
    }
    assert_eq!(fx.chunk_ids(), BTreeSet::from([chunk_id(&data)]));
    assert_eq!(num(&rt.restore, "bytes_written"), CHUNK);
    assert!(
        allocated(&rt.restored) <= 2 * CHUNK,
        "zero chunks must restore as holes ({} bytes allocated)",
        allocated(&rt.restored)
    );
}

#[test]
fn compressible_data_round_trips_compressed() {
    let fx = Fixture::new();
    let image = fx.path("text.img");
    let size = MIB + 12_345;
    write_image(&image, size, &[(0, &text_bytes(5, size as usize))]);

    let rt = round_trip(&fx, &image, &[]);
    let b = &rt.backup;
    assert_eq!(num(b, "chunks_total"), 17, "{b:#}");
    assert_eq!(num(b, "chunks_new"), 17, "{b:#}");
    assert_eq!(num(b, "bytes_read"), size, "{b:#}");
    let stored = fx.chunk_bytes();
    assert_eq!(num(&b["disks"][0], "bytes_written"), stored, "{b:#}");
    assert!(
        stored < size / 2,
        "text should compress: {stored} bytes stored for {size}"
    );
    assert_eq!(num(&rt.restore, "bytes_written"), size);
}

#[test]
fn random_data_round_trips_without_expansion() {
    let fx = Fixture::new();
    let image = fx.path("random.img");
    let size = MIB;
    write_image(&image, size, &[(0, &random_bytes(6, size as usize))]);

    let rt = round_trip(&fx, &image, &[]);
    let b = &rt.backup;
    assert_eq!(num(b, "chunks_total"), 16, "{b:#}");
    assert_eq!(num(b, "chunks_new"), 16, "{b:#}");
    assert_eq!(num(b, "chunks_zero"), 0, "{b:#}");
    // Incompressible chunks are stored as is: at most the 12-byte header more than raw.
    let stored = fx.chunk_bytes();
    assert!(stored <= size + 16 * 12, "{stored} bytes stored for {size}");
    for id in fx.chunk_ids() {
        assert!(file_len(&fx.chunk_path(&id)) <= CHUNK + 12);
    }
}

/// An image of 1_000_003 bytes (not a multiple of the chunk size, 4096 or 512): data, a hole
/// of four whole chunks, data up to the odd end.
fn odd_size_image(fx: &Fixture) -> std::path::PathBuf {
    let image = fx.path("odd.img");
    let size = 1_000_003u64;
    let head = random_bytes(7, 300_000);
    let tail = random_bytes(8, (size - 600_000) as usize);
    write_image(&image, size, &[(0, &head), (600_000, &tail)]);
    image
}

#[track_caller]
fn check_odd_size(rt: &RoundTrip) {
    let b = &rt.backup;
    assert_eq!(num(b, "chunks_total"), 16, "{b:#}");
    assert_eq!(num(b, "chunks_zero"), 4, "{b:#}");
    assert_eq!(num(b, "chunks_new"), 12, "{b:#}");
    assert_eq!(num(&rt.restore, "bytes_written"), 1_000_003 - 4 * CHUNK);
    assert_eq!(file_len(&rt.restored), 1_000_003);
}

#[test]
fn odd_size_round_trips_with_default_reader() {
    let fx = Fixture::new();
    let image = odd_size_image(&fx);
    let rt = round_trip(&fx, &image, &[]);
    check_odd_size(&rt);
    let reader = text(&rt.backup["disks"][0], "reader");
    assert!(AUTO_READERS.contains(&reader), "{reader}");
}

#[test]
fn odd_size_round_trips_with_pread_reader() {
    let fx = Fixture::new();
    let image = odd_size_image(&fx);
    let rt = round_trip(&fx, &image, &["--reader", "pread"]);
    check_odd_size(&rt);
    assert_eq!(text(&rt.backup["disks"][0], "reader"), "pread");
}

#[test]
fn holes_round_trip_with_pread_reader() {
    let fx = Fixture::new();
    let image = fx.path("holes.img");
    let size = 4 * MIB + 5;
    let data = random_bytes(9, 70_000);
    write_image(
        &image,
        size,
        &[(2 * MIB - 100, &data), (size - 5, b"tail!")],
    );
    let rt = round_trip(&fx, &image, &["--reader", "pread", "--threads", "1"]);
    let b = &rt.backup;
    assert_eq!(text(&b["disks"][0], "reader"), "pread");
    assert_eq!(num(b, "chunks_total"), 65, "{b:#}");
    assert_eq!(num(b, "chunks_new"), 4, "{b:#}");
    assert!(num(b, "bytes_read") < MIB, "holes were read: {b:#}");
    assert!(allocated(&rt.restored) <= 5 * CHUNK);
}

#[test]
fn empty_image_round_trips() {
    let fx = Fixture::new();
    let image = fx.path("empty.img");
    write_image(&image, 0, &[]);
    let rt = round_trip(&fx, &image, &[]);
    let b = &rt.backup;
    for key in [
        "chunks_total",
        "chunks_new",
        "chunks_reused",
        "chunks_zero",
        "bytes_read",
    ] {
        assert_eq!(num(b, key), 0, "{key}: {b:#}");
    }
    assert!(fx.chunk_ids().is_empty());
    assert_eq!(file_len(&rt.restored), 0);
    assert_eq!(num(&rt.restore, "bytes_written"), 0);
}

#[test]
fn sparse_64_gib_image_reads_and_restores_only_its_data() {
    let fx = Fixture::with_chunk_size("4M");
    let chunk = 4 * MIB;
    let size = 64 * GIB;
    let image = fx.path("big.img");
    let a = random_bytes(10, MIB as usize);
    let b = text_bytes(11, 2 * MIB as usize);
    let c = random_bytes(12, MIB as usize);
    // At the start, straddling two chunks at 17 GiB + 3 MiB, and ending at the very end.
    let regions: [(u64, &[u8]); 3] = [(0, &a), (17 * GIB + 3 * MIB, &b), (size - MIB, &c)];
    write_image(&image, size, &regions);
    assert!(
        allocated(&image) < 64 * MIB,
        "precondition: the temp filesystem keeps holes"
    );
    let spans: Vec<(u64, u64)> = regions.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
    let data_chunks = touched_chunks(&spans, chunk);
    assert_eq!(data_chunks.len(), 4);

    let backup = fx.backup(&image, &[]);
    assert_eq!(num(&backup, "chunks_total"), 16_384, "{backup:#}");
    assert_eq!(num(&backup, "chunks_new"), 4, "{backup:#}");
    assert_eq!(num(&backup, "chunks_zero"), 16_380, "{backup:#}");
    let read = num(&backup, "bytes_read");
    assert!(
        (4 * MIB..64 * MIB).contains(&read),
        "a 64 GiB image holding 4 MiB must be read sparsely: {read} bytes read"
    );
    assert_eq!(num(&backup["disks"][0], "virtual_size"), size);

    let out = fx.dir("out");
    let restored = out.join("big.img");
    let sid = text(&backup, "snapshot");
    let restore = fx.restore_ok(sid, &restored);
    assert_eq!(num(&restore, "virtual_size"), size);
    assert_eq!(num(&restore, "bytes_written"), 4 * chunk);
    assert_eq!(file_len(&restored), size);
    assert!(
        allocated(&restored) < 64 * MIB,
        "the restored 64 GiB image is not sparse: {} bytes allocated",
        allocated(&restored)
    );
    // The written regions and a margin of hole around each, plus a few spots deep in holes.
    let mut compare = vec![
        (0, MIB + 8192),
        (17 * GIB + 3 * MIB - 8192, 2 * MIB + 16_384),
    ];
    compare.push((size - MIB - 8192, MIB + 8192));
    compare.extend([
        (4 * MIB, 4096),
        (40 * GIB + 12_345, 4096),
        (size - 5 * MIB, 4096),
    ]);
    assert_same_regions(&image, &restored, &compare);
    assert_eq!(read_at(&restored, 40 * GIB, 4096), vec![0u8; 4096]);
    assert_eq!(read_at(&restored, size - MIB, MIB as usize), c);
    assert_eq!(dir_names(&out), ["big.img"]);
}

#[test]
fn gen_image_output_round_trips() {
    let fx = Fixture::new();
    let image = fx.path("sample.img");
    let size = 40 * MIB;
    let summary = ferry(&[
        "gen-image",
        "--size",
        "40M",
        "--seed",
        "3",
        "--json",
        "--out",
        image.to_str().unwrap(),
    ])
    .success()
    .json();
    assert_eq!(num(&summary, "size"), size, "{summary:#}");
    assert_eq!(file_len(&image), size);
    let (holes, zeros) = (num(&summary, "hole_bytes"), num(&summary, "zero_bytes"));
    let (texts, randoms) = (num(&summary, "text_bytes"), num(&summary, "random_bytes"));
    assert_eq!(holes + zeros + texts + randoms, size, "{summary:#}");
    assert!(texts > 0 && randoms > 0 && holes + zeros > 0, "{summary:#}");

    let rt = round_trip(&fx, &image, &[]);
    let b = &rt.backup;
    // Runs are whole 128 KiB units at this size (64 KiB chunks), so holes and zero runs are
    // exactly the zero chunks.
    assert_eq!(num(b, "chunks_zero") * CHUNK, holes + zeros, "{b:#}");
    assert_eq!(num(b, "chunks_new") * CHUNK, texts + randoms, "{b:#}");
    assert!(num(b, "bytes_read") >= size - holes, "{b:#}");
    assert_eq!(num(&rt.restore, "bytes_written"), texts + randoms);
    assert!(allocated(&rt.restored) <= texts + randoms + MIB);

    // The same seed gives the same bytes; an existing file is never overwritten.
    let again = fx.path("again.img");
    ferry(&[
        "gen-image",
        "--size",
        "40M",
        "--seed",
        "3",
        "--out",
        again.to_str().unwrap(),
    ])
    .success();
    assert_same_file(&image, &again);
    ferry(&[
        "gen-image",
        "--size",
        "1M",
        "--out",
        image.to_str().unwrap(),
    ])
    .error_line(&[image.to_str().unwrap()]);
    assert_same_file(&again, &image);
}
