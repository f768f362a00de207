//! `ferry list` and `ferry verify` on healthy repositories, and how snapshot arguments
//! (full id, unique prefix, `latest`) resolve.

mod common;

use common::*;
use serde_json::{Value, json};

/// The listed snapshot with id `sid`.
#[track_caller]
fn listed<'a>(list: &'a Value, sid: &str) -> &'a Value {
    list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot"] == sid)
        .unwrap_or_else(|| panic!("{sid} not listed: {list:#}"))
}

/// Shortest prefixes of `a` and `b` that tell them apart.
fn unique_prefix_len(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count() + 1
}

#[test]
fn list_json_shows_snapshots_with_name_disks_and_sizes() {
    let fx = Fixture::new();
    let empty = fx.run("list", &["--json"]).success().json();
    assert_eq!(empty, json!({ "snapshots": [], "damaged": [] }));

    let vm1 = fx.path("vm1.img");
    write_image(&vm1, 10 * CHUNK + 7, &[(CHUNK, &random_bytes(41, 1000))]);
    let vm2 = fx.path("vm2.raw");
    write_image(&vm2, MIB, &[(0, &random_bytes(42, MIB as usize))]);
    let b1 = fx.backup(&vm1, &[]);
    let b2 = fx.backup(&vm2, &["--name", "web server"]);

    let list = fx.run("list", &["--json"]).success().json();
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2, "{list:#}");
    assert_eq!(list["damaged"], json!([]));
    let s1 = listed(&list, text(&b1, "snapshot"));
    assert_eq!(s1["name"], "vm1.img");
    assert_eq!(s1["disks"].as_array().unwrap().len(), 1);
    assert_eq!(s1["disks"][0]["name"], "vm1.img");
    assert_eq!(num(&s1["disks"][0], "virtual_size"), 10 * CHUNK + 7);
    assert_eq!(num(&s1["disks"][0], "data_bytes"), CHUNK, "one data chunk");
    assert_eq!(s1["disks"][0]["source"], vm1.to_str().unwrap());
    let s2 = listed(&list, text(&b2, "snapshot"));
    assert_eq!(s2["name"], "web server");
    assert_eq!(s2["disks"][0]["name"], "vm2.raw");
    assert_eq!(num(&s2["disks"][0], "virtual_size"), MIB);
    assert_eq!(num(&s2["disks"][0], "data_bytes"), MIB);
    for s in [s1, s2] {
        assert!(num(s, "time_unix") > 1_600_000_000, "{s:#}");
        assert!(text(s, "time").ends_with('Z'), "{s:#}");
        assert!(!text(s, "hostname").is_empty());
    }
    // Oldest first (also when both finished within the same second).
    assert_eq!(list["snapshots"][0]["snapshot"], b1["snapshot"], "{list:#}");
    assert_eq!(list["snapshots"][1]["snapshot"], b2["snapshot"], "{list:#}");

    // The human listing names both.
    let human = fx.run::<&str>("list", &[]).success();
    for needle in [
        text(&b1, "snapshot"),
        text(&b2, "snapshot"),
        "vm1.img",
        "web server",
    ] {
        assert!(human.stdout.contains(needle), "{human}");
    }
}

#[test]
fn disk_names_are_sanitised_file_names() {
    let fx = Fixture::new();
    let image = fx.path(".my disk (1).img");
    write_image(&image, CHUNK, &[(0, b"data")]);
    let report = fx.backup(&image, &[]);
    assert_eq!(report["disks"][0]["name"], "_my_disk__1_.img", "{report:#}");
    assert_eq!(report["name"], "_my_disk__1_.img");
    let target = fx.dir("out").join("x");
    let restore = fx.restore_ok("latest", &target);
    assert_eq!(restore["disk"], "_my_disk__1_.img");
    assert_same_file(&image, &target);
    fx.restore("latest", &fx.path("out/y"), &["--disk", "_my_disk__1_.img"])
        .success();
}

#[test]
fn verify_of_a_clean_repository_exits_0() {
    let fx = Fixture::new();
    // An empty repository is clean too.
    let report = fx.verify(&[]).success().json();
    assert_eq!(num(&report, "snapshots_checked"), 0);
    assert_eq!(report["clean"], true);

    let image = fx.path("disk.img");
    write_image(
        &image,
        9 * CHUNK,
        &[(0, &random_bytes(43, 5 * CHUNK as usize))],
    );
    fx.backup(&image, &[]);
    fx.backup(&image, &["--name", "copy"]);
    let report = fx.verify(&[]).success().json();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(report["read_data"], false);
    assert_eq!(num(&report, "snapshots_checked"), 2);
    assert_eq!(num(&report, "chunks_referenced"), 5, "distinct chunks");
    assert_eq!(num(&report, "chunks_read"), 0);

    let report = fx
        .verify(&["--read-data", "--threads", "3"])
        .success()
        .json();
    assert_eq!(report["read_data"], true);
    assert_eq!(num(&report, "chunks_read"), 5, "{report:#}");
    assert_eq!(report["problems"], json!([]));

    let human = fx.run("verify", &["--read-data"]).success();
    assert!(human.stdout.starts_with("clean"), "{human}");
}

#[test]
fn verify_snapshot_accepts_full_ids_unique_prefixes_and_latest() {
    let fx = Fixture::new();
    let a_img = fx.path("a.img");
    write_image(
        &a_img,
        4 * CHUNK,
        &[(0, &random_bytes(44, 4 * CHUNK as usize))],
    );
    let b_img = fx.path("b.img");
    write_image(
        &b_img,
        2 * CHUNK,
        &[(0, &random_bytes(45, 2 * CHUNK as usize))],
    );
    let a = text(&fx.backup(&a_img, &[]), "snapshot").to_owned();
    let b = text(&fx.backup(&b_img, &[]), "snapshot").to_owned();
    let n = unique_prefix_len(&a, &b);

    // Ids are lowercase hex; a prefix typed in capitals finds them too.
    let b_upper = b[..n].to_ascii_uppercase();
    for (arg, chunks) in [
        (&a[..], 4),
        (&a[..n], 4),
        (&b[..], 2),
        (&b[..n], 2),
        (&b_upper[..], 2),
    ] {
        let report = fx.verify(&[arg]).success().json();
        assert_eq!(num(&report, "snapshots_checked"), 1, "{arg}: {report:#}");
        assert_eq!(
            num(&report, "chunks_referenced"),
            chunks,
            "{arg}: {report:#}"
        );
    }
    let report = fx.verify(&["latest"]).success().json();
    assert_eq!(num(&report, "snapshots_checked"), 1);
    assert_eq!(
        num(&report, "chunks_referenced"),
        2,
        "latest is b: {report:#}"
    );

    // Damage a chunk only b uses: the prefix picks which snapshot is checked.
    let b_chunk = chunk_id(&read_at(&b_img, CHUNK, CHUNK as usize));
    std::fs::remove_file(fx.chunk_path(&b_chunk)).unwrap();
    fx.verify(&[&a[..n]]).success();
    let report = fx.verify(&[&b[..n]]).code(EXIT_DAMAGED).json();
    assert_eq!(
        report["problems"][0]["chunk"],
        b_chunk.as_str(),
        "{report:#}"
    );
    assert_eq!(report["problems"][0]["snapshot"], b.as_str());
    fx.verify(&["latest"]).code(EXIT_DAMAGED);
    fx.verify(&[]).code(EXIT_DAMAGED);
    let human = fx.run("verify", &[&b]).code(EXIT_DAMAGED);
    assert!(
        human.stdout.contains(&b_chunk) && human.stdout.contains("DAMAGED"),
        "{human}"
    );
}

#[test]
fn ambiguous_prefix_is_refused() {
    let fx = Fixture::new();
    let image = fx.path("disk.img");
    write_image(&image, CHUNK, &[(0, b"x")]);
    let sid = text(&fx.backup(&image, &[]), "snapshot").to_owned();
    // A second manifest name sharing 15 digits (a copy: list sees a snapshot id).
    let last = if sid.ends_with('0') { "1" } else { "0" };
    let twin = format!("{}{last}", &sid[..15]);
    std::fs::copy(fx.snapshot_path(&sid), fx.snapshot_path(&twin)).unwrap();
    fx.verify(&[&sid[..15]])
        .error_line(&["ambiguous", &sid[..15]]);
    let target = fx.dir("out").join("x");
    fx.restore(&sid[..15], &target, &[])
        .error_line(&["ambiguous"]);
    assert_no_restore_leftovers(&target);
    // The full id still resolves; the copy is found out by its content not matching its id.
    fx.verify(&[&sid]).success();
    let report = fx.verify(&[&twin]).code(EXIT_DAMAGED).json();
    assert_eq!(report["problems"][0]["kind"], "manifest_damaged");
    assert_eq!(report["problems"][0]["snapshot"], twin.as_str());
}

#[test]
fn latest_is_the_most_recent_backup_even_within_one_second() {
    let fx = Fixture::new();
    let out = fx.dir("out");
    // Back-to-back backups of the same name (as a script would run them) usually finish
    // within the same second, the resolution of the manifests' timestamps.
    for i in 0..4u64 {
        let image = fx.path(&format!("v{i}.img"));
        write_image(&image, CHUNK, &[(0, &random_bytes(50 + i, 1000))]);
        let sid = text(&fx.backup(&image, &["--name", "vm"]), "snapshot").to_owned();
        let target = out.join(format!("latest-{i}.img"));
        let report = fx.restore_ok("latest", &target);
        assert_eq!(
            text(&report, "snapshot"),
            sid,
            "after backup {i}, latest is not the backup just made"
        );
        assert_same_file(&image, &target);
    }
}

/// `ferry list | head -1` and `ferry verify | head -1`: a reader that has gone away ends
/// ferry quietly (SIGPIPE, as for `cat`), never with a panic.
#[test]
fn list_and_verify_into_a_closed_pipe_end_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let fx = Fixture::new();
    let image = fx.path("disk.img");
    write_image(&image, 2 * CHUNK, &[(0, &random_bytes(5, 1000))]);
    fx.backup(&image, &[]);
    for command in ["list", "verify"] {
        // The read end is closed before ferry starts: its first write fails, every time.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([command, "--repo"])
            .arg(&fx.repo)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked"),
            "ferry {command} panicked:\n{stderr}"
        );
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGPIPE),
            "ferry {command}: {:?}\n{stderr}",
            output.status
        );
    }
}
