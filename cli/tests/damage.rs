//! Damage in the repository (done to its files directly) is found by `ferry verify`, named
//! exactly, and never restored: `ferry restore` refuses and leaves nothing at the target.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

/// A repository holding one snapshot of a 5-chunk image: random chunks 0 to 2, a hole
/// (chunk 3) and a short random tail (chunk 4). Chunk 2 is the one the tests damage.
struct Damaged {
    fx: Fixture,
    image: PathBuf,
    sid: String,
    /// Id and offset of chunk 2.
    victim: String,
    victim_offset: u64,
}

const DISK: &str = "disk.img";

fn setup() -> Damaged {
    let fx = Fixture::new();
    let image = fx.path(DISK);
    let size = 4 * CHUNK + 5000;
    let head = random_bytes(21, 3 * CHUNK as usize);
    let tail = random_bytes(22, 5000);
    write_image(&image, size, &[(0, &head), (4 * CHUNK, &tail)]);
    let report = fx.backup(&image, &[]);
    assert_eq!(num(&report, "chunks_new"), 4, "{report:#}");
    let victim_offset = 2 * CHUNK;
    let victim = chunk_id(&head[victim_offset as usize..]);
    assert!(fx.chunk_path(&victim).is_file());
    Damaged {
        sid: text(&report, "snapshot").to_owned(),
        fx,
        image,
        victim,
        victim_offset,
    }
}

impl Damaged {
    fn victim_path(&self) -> PathBuf {
        self.fx.chunk_path(&self.victim)
    }

    fn manifest_path(&self) -> PathBuf {
        self.fx.snapshot_path(&self.sid)
    }

    /// `verify ARGS --json`, which must exit with `code`; its report.
    #[track_caller]
    fn verify(&self, args: &[&str], code: i32) -> Value {
        let report = self.fx.verify(args).code(code).json();
        assert_eq!(report["clean"], code == 0, "{report:#}");
        report
    }

    /// The one problem a damaged verify found.
    #[track_caller]
    fn only_problem(&self, args: &[&str]) -> Value {
        let report = self.verify(args, EXIT_DAMAGED);
        let problems = report["problems"].as_array().unwrap();
        assert_eq!(
            problems.len(),
            1,
            "exactly one problem expected: {report:#}"
        );
        problems[0].clone()
    }

    /// Asserts a chunk problem names the victim chunk exactly.
    #[track_caller]
    fn assert_victim(&self, problem: &Value, kind: &str) {
        assert_eq!(problem["kind"], kind, "{problem:#}");
        assert_eq!(problem["chunk"], self.victim.as_str(), "{problem:#}");
        assert_eq!(problem["snapshot"], self.sid.as_str(), "{problem:#}");
        assert_eq!(problem["disk"], DISK, "{problem:#}");
        assert_eq!(num(problem, "offset"), self.victim_offset, "{problem:#}");
        assert_eq!(num(problem, "references"), 1, "{problem:#}");
    }

    /// `restore SNAPSHOT` into a fresh directory must fail with an error line holding every
    /// needle, and leave nothing behind.
    #[track_caller]
    fn restore_refused(&self, snapshot: &str, needles: &[&str]) -> String {
        let out = self.fx.path(&format!(
            "out-{}",
            self.fx.tmp.path().read_dir().unwrap().count()
        ));
        std::fs::create_dir(&out).unwrap();
        let target = out.join("restored.img");
        let run = self.fx.restore(snapshot, &target, &[]);
        let line = run.error_line(needles);
        run.assert_only_error_document();
        assert_no_restore_leftovers(&target);
        assert!(dir_names(&out).is_empty(), "{:?}", dir_names(&out));
        line
    }

    /// The victim chunk's damage as restore must report it.
    #[track_caller]
    fn restore_refused_for_victim(&self, what: &str) {
        let offset = format!("offset {}", self.victim_offset);
        self.restore_refused(&self.sid, &[&self.victim, &offset, what]);
        self.restore_refused("latest", &[&self.victim, &offset, what]);
    }
}

#[test]
fn clean_repository_verifies_with_exit_0() {
    let d = setup();
    for args in [&[][..], &["--read-data"][..]] {
        let report = d.verify(args, 0);
        assert_eq!(report["problems"], json!([]));
        assert_eq!(num(&report, "snapshots_checked"), 1);
        assert_eq!(num(&report, "chunks_referenced"), 4);
    }
    let target = d.fx.dir("out").join("ok.img");
    d.fx.restore_ok(&d.sid, &target);
    assert_same_file(&d.image, &target);
}

#[test]
fn xored_byte_in_a_chunk_is_found_by_read_data_and_never_restored() {
    let d = setup();
    let path = d.victim_path();
    let len = file_len(&path);
    // Header fields (magic, version, codec, reserved, raw length) and the payload.
    for at in [0, 4, 5, 6, 8, 11, 12, len / 2, len - 1] {
        xor_byte(&path, at, 0x5a);
        // Presence-only verify lists chunk names, never reads them: it cannot see this.
        let presence = d.verify(&[], 0);
        assert_eq!(presence["problems"], json!([]), "byte {at}: {presence:#}");
        assert_eq!(num(&presence, "chunks_read"), 0);

        let problem = d.only_problem(&["--read-data"]);
        d.assert_victim(&problem, "chunk_corrupt");
        assert!(
            !text(&problem, "reason").is_empty(),
            "byte {at}: {problem:#}"
        );
        d.restore_refused_for_victim("corrupt");
        xor_byte(&path, at, 0x5a);
    }
    d.verify(&["--read-data"], 0);
}

#[test]
fn failed_restore_with_force_keeps_the_existing_file() {
    let d = setup();
    xor_byte(&d.victim_path(), 100, 1);
    let out = d.fx.dir("out");
    let target = out.join("existing.img");
    std::fs::write(&target, b"precious").unwrap();
    let run = d.fx.restore(&d.sid, &target, &["--force"]);
    run.error_line(&[&d.victim, "corrupt"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert_eq!(dir_names(&out), ["existing.img"]);
}

#[test]
fn truncated_chunk_is_found_by_read_data_and_never_restored() {
    let d = setup();
    let path = d.victim_path();
    let original = std::fs::read(&path).unwrap();
    for len in [original.len() as u64 - 1, original.len() as u64 / 2, 5, 0] {
        truncate(&path, len);
        // Still present under its name: presence-only verify cannot see a truncation.
        let presence = d.verify(&[], 0);
        assert_eq!(
            presence["problems"],
            json!([]),
            "length {len}: {presence:#}"
        );

        let problem = d.only_problem(&["--read-data"]);
        d.assert_victim(&problem, "chunk_corrupt");
        d.restore_refused_for_victim("corrupt");
        std::fs::write(&path, &original).unwrap();
    }
    d.verify(&["--read-data"], 0);
}

#[test]
fn missing_chunk_is_found_by_both_verifies_and_never_restored() {
    let d = setup();
    std::fs::remove_file(d.victim_path()).unwrap();
    for args in [&[][..], &["--read-data"][..]] {
        let problem = d.only_problem(args);
        d.assert_victim(&problem, "chunk_missing");
    }
    d.restore_refused_for_victim("missing");
}

#[test]
fn missing_chunk_shared_by_two_snapshots_is_reported_once() {
    let d = setup();
    let other = d.fx.backup(&d.image, &["--name", "other"]);
    let other_sid = text(&other, "snapshot");
    std::fs::remove_file(d.victim_path()).unwrap();

    let report = d.verify(&["--read-data"], EXIT_DAMAGED);
    assert_eq!(num(&report, "snapshots_checked"), 2);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report:#}");
    let problem = &problems[0];
    assert_eq!(problem["kind"], "chunk_missing");
    assert_eq!(problem["chunk"], d.victim.as_str());
    assert_eq!(num(problem, "references"), 2, "{problem:#}");
    assert_eq!(num(problem, "offset"), d.victim_offset);
    let first_use = text(problem, "snapshot");
    assert!(first_use == d.sid || first_use == other_sid, "{problem:#}");

    // Verifying one snapshot names that snapshot.
    let report = d.verify(&[other_sid], EXIT_DAMAGED);
    assert_eq!(num(&report, "snapshots_checked"), 1);
    assert_eq!(report["problems"][0]["snapshot"], other_sid, "{report:#}");
    assert_eq!(num(&report["problems"][0], "references"), 1, "{report:#}");
    d.restore_refused(other_sid, &[&d.victim, "missing"]);
}

/// Checks that a damaged manifest is reported by every verify, refused by restore and
/// marked damaged by list.
#[track_caller]
fn assert_manifest_refused(d: &Damaged) {
    for args in [
        &[][..],
        &["--read-data"][..],
        &[d.sid.as_str()][..],
        &[&d.sid[..5]][..],
        &["latest"][..],
    ] {
        let problem = d.only_problem(args);
        assert_eq!(problem["kind"], "manifest_damaged", "{problem:#}");
        assert_eq!(problem["snapshot"], d.sid.as_str(), "{problem:#}");
        assert!(!text(&problem, "reason").is_empty());
    }
    d.restore_refused(&d.sid, &[&d.sid, "snapshot"]);
    d.restore_refused(&d.sid[..6], &[&d.sid]);
    // `latest` must not pretend there is no snapshot: it names the damaged one.
    d.restore_refused("latest", &[&d.sid]);
    // `list` checks each manifest as restore does: damage anywhere in it (metadata, index,
    // checksum) makes the snapshot a damaged entry naming it, never a listed one.
    let run = d.fx.run("list", &["--json"]).success();
    let list = run.json();
    assert_eq!(list["snapshots"], json!([]), "{list:#}");
    let damaged = list["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{list:#}");
    assert_eq!(damaged[0]["snapshot"], d.sid.as_str(), "{list:#}");
    assert!(!text(&damaged[0], "error").is_empty());
    assert!(run.stderr.contains("damaged manifest"), "{run}");
    let human = d.fx.run::<&str>("list", &[]).success();
    let row = format!("{}  DAMAGED: ", d.sid);
    assert!(human.stdout.contains(&row), "{human}");
}

/// Length of a manifest's fixed head plus its metadata.
fn head_and_meta_len(manifest: &[u8]) -> u64 {
    16 + u64::from(u32::from_le_bytes(manifest[12..16].try_into().unwrap()))
}

#[test]
fn truncated_manifest_is_found_and_refused() {
    let d = setup();
    let path = d.manifest_path();
    let original = std::fs::read(&path).unwrap();
    let head = head_and_meta_len(&original);
    for len in [
        original.len() as u64 - 1,
        original.len() as u64 / 2,
        head - 1,
        20,
        0,
    ] {
        truncate(&path, len);
        assert_manifest_refused(&d);
        std::fs::write(&path, &original).unwrap();
    }
    d.verify(&[], 0);
}

#[test]
fn garbled_manifest_is_found_and_refused() {
    let d = setup();
    let path = d.manifest_path();
    let len = file_len(&path);
    // Magic, version, metadata length, metadata, index, checksum.
    for at in [0, 8, 13, 40, len - 32 - 10, len - 1] {
        xor_byte(&path, at, 0x01);
        assert_manifest_refused(&d);
        xor_byte(&path, at, 0x01);
    }
    d.verify(&[], 0);
}

/// A manifest whose metadata still parses but whose index bytes were flipped: list names it
/// damaged and still lists the intact snapshot beside it.
#[test]
fn list_marks_a_manifest_with_flipped_bytes_damaged_and_lists_the_others() {
    let d = setup();
    let other_image = d.fx.path("other.img");
    write_image(&other_image, 2 * CHUNK, &[(0, &random_bytes(23, 3000))]);
    let other = d.fx.backup(&other_image, &[]);
    let other_sid = text(&other, "snapshot");
    let path = d.manifest_path();
    // In the index, after the metadata: the head and metadata still read.
    xor_byte(&path, file_len(&path) - 32 - 10, 0xff);

    let run = d.fx.run("list", &["--json"]).success();
    let list = run.json();
    let listed: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| text(s, "snapshot"))
        .collect();
    assert_eq!(listed, [other_sid], "{list:#}");
    let damaged = list["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{list:#}");
    assert_eq!(damaged[0]["snapshot"], d.sid.as_str(), "{list:#}");
    assert!(text(&damaged[0], "error").contains("checksum"), "{list:#}");
    assert!(
        run.stderr.contains("1 snapshot(s) have a damaged manifest"),
        "{run}"
    );
}

#[test]
fn config_of_another_version_is_refused_by_every_command() {
    let d = setup();
    let config = d.fx.repo.join("config");
    let mut value: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(value["version"], 1);
    value["version"] = json!(2);
    std::fs::write(&config, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    let chunks = d.fx.chunk_ids();

    let needles = ["version 2", "not supported"];
    d.fx.verify(&[]).error_line(&needles);
    d.fx.verify(&["--read-data"]).error_line(&needles);
    d.fx.run("list", &["--json"]).error_line(&needles);
    d.restore_refused(&d.sid, &needles);
    let image = d.image.to_str().unwrap();
    d.fx.run("backup", &["--image", image, "--name", "new"])
        .error_line(&needles);
    assert_eq!(d.fx.snapshot_ids(), [d.sid.as_str()], "nothing was written");
    assert_eq!(d.fx.chunk_ids(), chunks);
}

#[test]
fn unreadable_config_is_refused_with_exit_1() {
    let d = setup();
    let config = d.fx.repo.join("config");
    let original = std::fs::read(&config).unwrap();
    std::fs::write(&config, &original[..original.len() / 2]).unwrap();
    d.fx.verify(&[]).error_line(&["config"]);
    d.restore_refused(&d.sid, &["config"]);
    std::fs::remove_file(&config).unwrap();
    d.fx.verify(&[])
        .error_line(&["not a Ferry repository", "ferry init"]);
}

#[test]
fn repository_files_are_private() {
    let d = setup();
    let repo = &d.fx.repo;
    assert_eq!(mode(repo), 0o700);
    assert_eq!(mode(&repo.join("config")), 0o600);
    assert_eq!(mode(&repo.join("chunks")), 0o700);
    assert_eq!(mode(&repo.join("snapshots")), 0o700);
    assert_eq!(mode(&d.victim_path()), 0o600);
    assert_eq!(mode(d.victim_path().parent().unwrap()), 0o700);
    assert_eq!(mode(&d.manifest_path()), 0o600);
    // Nothing else, and no temporary files, in the repository; the backup's lock is gone.
    assert_eq!(dir_names(repo), ["chunks", "config", "locks", "snapshots"]);
    assert_eq!(mode(&repo.join("locks")), 0o700);
    assert!(dir_names(&repo.join("locks")).is_empty(), "a lock was left");
    assert_eq!(dir_names(&repo.join("snapshots")), [d.sid.as_str()]);
    for id in d.fx.chunk_ids() {
        let path = d.fx.chunk_path(&id);
        assert_eq!(mode(&path), 0o600, "{id}");
        for name in dir_names(path.parent().unwrap()) {
            assert!(name.len() == 64 && name.starts_with(&id[..2]), "{name}");
        }
    }
}

#[test]
fn backup_under_a_new_name_stores_a_missing_chunk_again() {
    let d = setup();
    std::fs::remove_file(d.victim_path()).unwrap();
    // A new snapshot name has no previous snapshot to trust, so every chunk is offered with
    // put-if-absent, and the missing one is written again.
    let repair = d.fx.backup(&d.image, &["--name", "repair"]);
    assert_eq!(num(&repair, "chunks_new"), 1, "{repair:#}");
    assert_eq!(num(&repair, "chunks_reused"), 3, "{repair:#}");
    assert!(d.victim_path().is_file());
    d.verify(&["--read-data"], 0);
    let target = d.fx.dir("out").join("restored.img");
    d.fx.restore_ok(&d.sid, &target);
    assert_same_file(&d.image, &target);
}

#[test]
fn quarantine_moves_a_corrupt_chunk_aside_and_the_next_backup_heals_it() {
    let d = setup();
    xor_byte(&d.victim_path(), 40, 0x10);
    let damaged = std::fs::read(d.victim_path()).unwrap();
    let report = d.verify(&["--read-data", "--quarantine"], EXIT_DAMAGED);
    assert_eq!(
        report["quarantined"],
        json!([d.victim.as_str()]),
        "{report:#}"
    );
    d.assert_victim(&report["problems"][0], "chunk_corrupt");
    let kept = d.fx.repo.join("quarantine").join(&d.victim);
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        damaged,
        "the damaged bytes are kept"
    );
    assert_eq!(mode(&kept), 0o600);
    assert!(!d.victim_path().exists());
    // Now missing: presence-only verify sees it, restore refuses it.
    d.assert_victim(&d.only_problem(&[]), "chunk_missing");
    d.restore_refused_for_victim("missing");

    let healed = d.fx.backup(&d.image, &[]);
    assert_eq!(num(&healed, "chunks_new"), 1, "{healed:#}");
    d.verify(&["--read-data"], 0);
    let target = d.fx.dir("out").join("healed.img");
    d.fx.restore_ok(&d.sid, &target);
    assert_same_file(&d.image, &target);
}

#[test]
fn sampled_verify_reads_part_of_the_chunks_and_says_how_to_repeat() {
    let d = setup();
    let all = d.verify(&["--read-data", "--sample", "100"], 0);
    assert_eq!(num(&all, "chunks_read"), 4);
    assert_eq!(all["sample_percent"], 100.0);
    let seed = num(&all, "sample_seed").to_string();
    let again = d.verify(
        &["--read-data", "--sample", "30", "--sample-seed", &seed],
        0,
    );
    let repeat = d.verify(
        &["--read-data", "--sample", "30", "--sample-seed", &seed],
        0,
    );
    assert_eq!(again["chunks_read"], repeat["chunks_read"]);
    d.fx.verify(&["--read-data", "--sample", "0"])
        .error_line(&["sample percentage 0"]);
    d.fx.verify(&["--sample", "10"]).code(2);
    // Quarantine on a clean repository changes nothing.
    let clean = d.verify(&["--quarantine"], 0);
    assert_eq!(clean["quarantined"], json!([]));
}

/// Bit rot across a local repository (the S3 and NFS tests run the same scenario).
#[test]
fn bit_rot_is_named_exactly_refused_and_healed_by_the_next_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    exercise_bit_rot(repo.to_str().unwrap(), &repo, dir.path(), |args| {
        ferry(args)
    });
}
