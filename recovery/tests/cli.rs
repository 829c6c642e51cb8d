//! CLI tests of `walship-recover` on data directories built with the WAL API.

mod common;

use common::{recover, recover_json, s, Node};
use walship_replica::halt::HaltReason;
use walship_wal::state::DirLock;

/// Runs `walship-recover args` (text output), asserts the exit code, returns (stdout, stderr).
fn run_text(args: &[&str], code: i32) -> (String, String) {
    let out = recover(args).output().expect("run");
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}\nstdout: {so}\nstderr: {se}"
    );
    (so, se)
}

fn json_u64(v: &serde_json::Value, ptr: &str) -> u64 {
    v.pointer(ptr)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
}

fn json_str<'a>(v: &'a serde_json::Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
}

#[test]
fn verify_clean_wal_reports_clean_and_exits_0() {
    let n = Node::new();
    n.append_n(1, 40, "r");
    let before = n.snapshot_files();
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/command"), "verify");
    assert_eq!(json_u64(&v, "/schema_version"), 1);
    assert_eq!(json_u64(&v, "/exit_code"), 0);
    assert_eq!(json_str(&v, "/wal/state/state"), "clean");
    assert_eq!(json_u64(&v, "/wal/records"), 40);
    assert_eq!(json_u64(&v, "/wal/last/lsn"), 40);
    assert_eq!(json_u64(&v, "/wal/first_lsn"), 1);
    let segs = v
        .pointer("/wal/segments")
        .and_then(|x| x.as_array())
        .expect("segments");
    assert!(segs.len() >= 3, "small segments: {}", segs.len());
    assert_eq!(segs.len(), n.segments().len());
    assert_eq!(n.snapshot_files(), before, "verify changed nothing");
    assert!(run_text(&["verify", s(&n.root)], 0)
        .0
        .contains("state: clean"));
}

#[test]
fn verify_bit_flip_mid_sealed_segment_reports_segment_offset_and_lsn() {
    let n = Node::new();
    n.append_n(1, 40, "r");
    // Find a record in the middle of the first (sealed) segment.
    let (_, dump, _) = recover_json(&["dump", s(&n.root), "--from", "3", "--to", "3"]);
    let seg = json_str(&dump, "/records/0/segment").to_string();
    let offset = json_u64(&dump, "/records/0/offset");
    assert_eq!(
        seg,
        n.segments()[0]
            .file_name()
            .and_then(|f| f.to_str())
            .expect("name")
    );
    let path = n.wal_dir().join(&seg);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[offset as usize + 34] ^= 0x10; // a payload byte of lsn 3
    std::fs::write(&path, &bytes).expect("write");
    let before = n.snapshot_files();

    let (code, v, err) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(json_str(&v, "/wal/state/state"), "corrupt");
    assert_eq!(
        json_str(&v, "/wal/state/corruption/kind"),
        "record-checksum"
    );
    assert_eq!(json_u64(&v, "/wal/state/corruption/offset"), offset);
    assert_eq!(json_u64(&v, "/wal/state/corruption/lsn"), 3);
    assert!(json_str(&v, "/wal/state/corruption/segment").ends_with(&seg));
    assert!(json_str(&v, "/wal/state/corruption/expected").starts_with("crc "));
    assert!(json_str(&v, "/wal/state/corruption/found").starts_with("crc "));
    assert_eq!(
        json_u64(&v, "/wal/last/lsn"),
        2,
        "verified prefix ends before the damage"
    );
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert_eq!(n.snapshot_files(), before, "verify changed nothing");
    let (code, v, _) = recover_json(&["inspect", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
}

#[test]
fn verify_torn_tail_is_reported_and_left_in_place() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    let last_seg = n.segments().last().cloned().expect("segment");
    // Segments are preallocated (format version 2): the records end where the
    // zero-filled tail starts, and a torn append is written there.
    let bytes = std::fs::read(&last_seg).expect("read");
    let file_len = bytes.len() as u64;
    let len = bytes.iter().rposition(|&b| b != 0).expect("records") as u64 + 1;
    // 20 bytes of a record header (payload_len 10), the rest never written.
    let mut torn = vec![0xab; 20];
    torn[4..8].copy_from_slice(&10u32.to_le_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last_seg)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, &torn, len).expect("write torn header");
    drop(f);
    let before = n.snapshot_files();

    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "a torn tail is not corruption: {v}");
    assert_eq!(json_str(&v, "/wal/state/state"), "torn-tail");
    assert_eq!(json_u64(&v, "/wal/state/offset"), len);
    assert_eq!(json_u64(&v, "/wal/state/bytes"), 20);
    assert_eq!(json_u64(&v, "/wal/state/lsn"), 11);
    assert_eq!(json_u64(&v, "/wal/last/lsn"), 10);
    assert_eq!(
        std::fs::read(&last_seg).expect("read")[len as usize..len as usize + 20],
        torn[..],
        "not cut"
    );
    assert_eq!(
        std::fs::metadata(&last_seg).expect("stat").len(),
        file_len,
        "not cut"
    );
    assert_eq!(n.snapshot_files(), before, "verify changed nothing");
    for cmd in ["inspect", "dump", "status"] {
        recover(&[cmd, s(&n.root)]).assert().success();
    }
    assert_eq!(
        n.snapshot_files(),
        before,
        "read-only commands changed nothing"
    );
}

#[test]
fn verify_missing_middle_segment_reports_segment_missing() {
    let n = Node::new();
    n.append_n(1, 40, "r");
    let segs = n.segments();
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).expect("remove middle segment");
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        json_str(&v, "/wal/state/corruption/kind"),
        "segment-missing"
    );
    let first_of_third: u64 = segs[2]
        .file_stem()
        .and_then(|x| x.to_str())
        .and_then(|x| x.parse().ok())
        .expect("segment name");
    let first_of_second: u64 = segs[1]
        .file_stem()
        .and_then(|x| x.to_str())
        .and_then(|x| x.parse().ok())
        .expect("segment name");
    assert_eq!(json_u64(&v, "/wal/state/corruption/lsn"), first_of_second);
    assert!(json_str(&v, "/wal/state/corruption/found").contains(&first_of_third.to_string()));
    assert!(json_str(&v, "/wal/state/corruption/segment")
        .ends_with(segs[2].file_name().and_then(|f| f.to_str()).expect("name")));
}

#[test]
fn diff_of_diverged_directories_finds_the_exact_lsn() {
    let a = Node::new();
    let b = Node::new();
    a.append_n(1, 20, "same");
    b.append_n(1, 12, "same");
    b.append_n(2, 5, "other");
    let (code, v, _) = recover_json(&["diff", s(&a.root), s(&b.root)]);
    assert_eq!(code, 7, "{v}");
    assert_eq!(json_str(&v, "/relation"), "diverged");
    assert_eq!(json_u64(&v, "/first_divergence/lsn"), 13);
    assert_eq!(json_u64(&v, "/first_divergence/a/epoch"), 1);
    assert_eq!(json_u64(&v, "/first_divergence/b/epoch"), 2);
    assert_ne!(
        json_u64(&v, "/first_divergence/a/crc"),
        json_u64(&v, "/first_divergence/b/crc")
    );
    assert_eq!(json_u64(&v, "/common_prefix/lsn"), 12);
    assert_eq!(json_u64(&v, "/a/last/lsn"), 20);
    assert_eq!(json_u64(&v, "/b/last/lsn"), 17);
}

#[test]
fn diff_of_a_prefix_exits_0_and_names_the_relation() {
    let a = Node::new();
    let b = Node::new();
    a.append_n(1, 8, "same");
    b.append_n(1, 15, "same");
    let (code, v, _) = recover_json(&["diff", s(&a.root), s(&b.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/relation"), "a-prefix-of-b");
    assert_eq!(json_u64(&v, "/common_prefix/lsn"), 8);
    assert!(v.pointer("/first_divergence").is_some_and(|x| x.is_null()));
    let (code, v, _) = recover_json(&["diff", s(&b.root), s(&a.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/relation"), "b-prefix-of-a");
    let c = Node::new();
    c.append_n(1, 8, "same");
    let (code, v, _) = recover_json(&["diff", s(&a.root), s(&c.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/relation"), "identical");
}

#[test]
fn diff_divergence_at_lsn_1_has_an_empty_common_prefix() {
    let a = Node::new();
    let b = Node::new();
    a.append_n(1, 3, "x");
    b.append_n(1, 3, "y");
    let (code, v, _) = recover_json(&["diff", s(&a.root), s(&b.root)]);
    assert_eq!(code, 7, "{v}");
    assert_eq!(json_u64(&v, "/first_divergence/lsn"), 1);
    assert_eq!(json_u64(&v, "/common_prefix/lsn"), 0);
}

#[test]
fn diff_compares_front_truncated_logs_from_the_later_base() {
    let a = Node::new();
    let b = Node::new();
    a.append_n(1, 40, "same");
    b.append_n(1, 40, "same");
    let first = a.truncate_front(25);
    assert!(first > 1, "segments were removed");
    let (code, v, _) = recover_json(&["diff", s(&a.root), s(&b.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/relation"), "identical");
    assert_eq!(json_u64(&v, "/a/base/lsn"), first - 1);
    assert_eq!(json_u64(&v, "/common_prefix/lsn"), 40);

    // B diverges after A's base: found at the exact lsn.
    let c = Node::new();
    c.append_n(1, 30, "same");
    c.append_n(2, 5, "other");
    let (code, v, _) = recover_json(&["diff", s(&a.root), s(&c.root)]);
    assert_eq!(code, 7, "{v}");
    assert_eq!(json_u64(&v, "/first_divergence/lsn"), 31);

    // Nothing in common to compare: disjoint, exit 7.
    let d = Node::new();
    d.append_n(1, first - 2, "same");
    let (code, v, _) = recover_json(&["diff", s(&a.root), s(&d.root)]);
    assert_eq!(code, 7, "{v}");
    assert_eq!(json_str(&v, "/relation"), "disjoint");
}

/// First lsn of each segment file of `n`, from the names (`<first_lsn>.wal`).
fn segment_first_lsns(n: &Node) -> Vec<u64> {
    n.segments()
        .iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|x| x.to_str())
                .expect("segment name");
            stem.parse().expect("segment name is an lsn")
        })
        .collect()
}

#[test]
fn diff_of_logs_differing_by_far_more_than_the_merge_channel_ends_in_both_orders() {
    // A holds 20,000 records; B is A's log cut after lsn 150, in the middle
    // of a segment. A's scan thread streams positions through a bounded
    // channel (4096); once B ends, those left in flight must not block A's
    // scan forever (the hang was at 0% CPU: A blocked in `send`, main in `join`).
    const SEGMENT_BYTES: u64 = 64 * 1024;
    const RECORDS: u64 = 20_000;
    const CUT: u64 = 150;
    let a = Node::new();
    let recs: Vec<(u64, Vec<u8>)> = (1..=RECORDS)
        .map(|l| (1, format!("same-{l}").into_bytes()))
        .collect();
    a.append_with_segment_bytes(SEGMENT_BYTES, &recs);
    let b = Node::new();
    b.copy_wal_from(&a);
    b.truncate_tail(CUT);
    assert_eq!(b.last().lsn, CUT);
    let a_firsts = segment_first_lsns(&a);
    let holding = a_firsts
        .iter()
        .rposition(|f| *f <= CUT)
        .expect("a segment holds the cut");
    assert!(
        a_firsts[holding] < CUT
            && a_firsts
                .get(holding + 1)
                .is_some_and(|next| *next > CUT + 1),
        "lsn {CUT} is in the middle of a segment of A: {a_firsts:?}"
    );
    assert!(
        a_firsts.len() > holding + 1,
        "A goes on for more segments past the cut"
    );

    for (first, second, relation) in [(&a, &b, "b-prefix-of-a"), (&b, &a, "a-prefix-of-b")] {
        let args = ["diff", s(&first.root), s(&second.root), "--json"];
        // A hang detector, not a timed assertion: the diff takes well under a
        // second; a regression is killed and fails instead of stalling CI.
        const HANG_SECS: u64 = 120;
        let out = recover(&args)
            .timeout(std::time::Duration::from_secs(HANG_SECS))
            .output()
            .expect("run");
        let code = out.status.code().unwrap_or_else(|| {
            panic!(
                "{args:?} did not exit: killed after {HANG_SECS} s ({})",
                out.status
            )
        });
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(code, 0, "{args:?}: {v}");
        assert_eq!(json_str(&v, "/relation"), relation, "{args:?}");
        assert_eq!(json_u64(&v, "/common_prefix/lsn"), CUT, "{args:?}");
        let (long, short) = if relation == "b-prefix-of-a" {
            ("a", "b")
        } else {
            ("b", "a")
        };
        assert_eq!(
            json_u64(&v, &format!("/{long}/last/lsn")),
            RECORDS,
            "{args:?}"
        );
        assert_eq!(json_u64(&v, &format!("/{short}/last/lsn")), CUT, "{args:?}");
        assert_eq!(
            json_str(&v, &format!("/{long}/state/state")),
            "clean",
            "{v}"
        );
    }
}

#[test]
fn status_of_a_halted_replica_prints_the_record_and_exits_4() {
    let n = Node::new();
    n.append_n(1, 5, "r");
    let rec = n.halt(HaltReason::Divergence, 4, 2);
    let (code, v, _) = recover_json(&["status", s(&n.root)]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v.pointer("/halted"), Some(&serde_json::Value::Bool(true)));
    let got: walship_replica::halt::HaltRecord =
        serde_json::from_value(v.pointer("/halt").cloned().expect("halt")).expect("halt record");
    assert_eq!(got, rec);
    assert!(run_text(&["status", s(&n.root)], 4)
        .0
        .contains("reason:   divergence"));
    let (code, v, _) = recover_json(&["inspect", s(&n.root)]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(json_str(&v, "/halt/reason"), "divergence");
}

#[test]
fn status_of_a_running_replica_says_not_halted() {
    let n = Node::new();
    recover(&["status", s(&n.root)])
        .assert()
        .success()
        .stdout("not halted\n");
}

#[test]
fn fm_x_10_rewind_below_the_commit_watermark_is_refused_and_changes_nothing() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    n.set_commit(8);
    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&["rewind", s(&n.root), "--to", "7", "--yes"]);
    assert_eq!(code, 6, "{v}");
    assert!(json_str(&v, "/refused").contains("committed"), "{v}");
    assert_eq!(
        v.pointer("/performed"),
        Some(&serde_json::Value::Bool(false))
    );
    assert_eq!(json_u64(&v, "/cut/committed_records"), 1);
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        n.snapshot_files(),
        before,
        "nothing changed, no audit entry"
    );
}

#[test]
fn rewind_without_yes_on_a_non_terminal_stdin_is_refused() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    n.set_commit(5);
    let before = n.snapshot_files();
    let out = recover(&["rewind", s(&n.root), "--to", "7"])
        .write_stdin("y\n")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(n.snapshot_files(), before);
}

#[test]
fn rewind_with_yes_cuts_the_tail_writes_audit_and_verifies() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    n.append_n(2, 10, "t");
    n.set_commit(12);
    let (code, v, _) = recover_json(&["rewind", s(&n.root), "--to", "14", "--yes"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v.pointer("/performed"),
        Some(&serde_json::Value::Bool(true))
    );
    assert_eq!(json_u64(&v, "/after/lsn"), 14);
    assert_eq!(json_u64(&v, "/cut/records"), 6);
    assert_eq!(json_u64(&v, "/cut/first_lsn"), 15);
    assert_eq!(json_u64(&v, "/cut/last_lsn"), 20);
    assert_eq!(json_u64(&v, "/commit_lsn_after"), 12);
    assert_eq!(json_str(&v, "/verify/state"), "clean");
    assert_eq!(n.last().lsn, 14);
    let audit = std::fs::read_to_string(n.state_dir().join("audit.log")).expect("audit log");
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(json_str(&entries[0], "/phase"), "intent");
    assert_eq!(json_str(&entries[1], "/phase"), "done");
    for e in &entries {
        assert_eq!(json_str(e, "/action"), "rewind");
        assert_eq!(json_u64(e, "/details/to_lsn"), 14);
        assert_eq!(json_u64(e, "/details/before/lsn"), 20);
        assert!(e.pointer("/operator/uid").is_some());
        assert!(e
            .pointer("/at_unix_ms")
            .and_then(|x| x.as_u64())
            .is_some_and(|t| t > 0));
        let cl = e
            .pointer("/command_line")
            .and_then(|x| x.as_array())
            .expect("command line");
        assert!(cl.iter().any(|a| a == "--to"), "{e}");
    }
    assert_eq!(json_u64(&entries[1], "/details/after/lsn"), 14);
    assert_eq!(json_str(&entries[1], "/details/verify/state"), "clean");
    recover(&["verify", s(&n.root)]).assert().success();
}

#[test]
fn rewind_with_accept_data_loss_lowers_the_commit_watermark() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    n.set_commit(9);
    let (code, v, _) = recover_json(&[
        "rewind",
        s(&n.root),
        "--to",
        "4",
        "--yes",
        "--accept-data-loss",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_u64(&v, "/cut/committed_records"), 5);
    assert_eq!(json_u64(&v, "/commit_lsn_after"), 4);
    assert_eq!(n.node_dir().commit_lsn().expect("commit"), 4);
    assert_eq!(n.last().lsn, 4);
}

#[test]
fn rewind_beyond_the_end_is_bad_input() {
    let n = Node::new();
    n.append_n(1, 3, "r");
    assert!(run_text(&["rewind", s(&n.root), "--to", "9", "--yes"], 2)
        .1
        .contains("beyond the last record"));
}

#[test]
fn fm_8_1_clear_halt_is_refused_while_the_divergent_tail_remains_then_succeeds_after_rewind() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    n.append_n(2, 4, "tentative");
    n.set_commit(10);
    n.halt(HaltReason::Divergence, 11, 3);

    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&["clear-halt", s(&n.root)]);
    assert_eq!(code, 6, "{v}");
    assert_eq!(v.pointer("/cleared"), Some(&serde_json::Value::Bool(false)));
    let checks = v
        .pointer("/checks")
        .and_then(|x| x.as_array())
        .expect("checks");
    let tail = checks
        .iter()
        .find(|c| c["name"] == "tail-below-halt-lsn")
        .expect("tail check");
    assert_eq!(tail["passed"], false);
    assert!(err.contains("rewind --to 10"), "{err}");
    assert_eq!(
        n.snapshot_files(),
        before,
        "refused clear-halt changed nothing"
    );

    recover(&["rewind", s(&n.root), "--to", "10", "--yes"])
        .assert()
        .success();
    let (code, v, _) = recover_json(&["clear-halt", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v.pointer("/cleared"), Some(&serde_json::Value::Bool(true)));
    recover(&["status", s(&n.root)])
        .assert()
        .success()
        .stdout("not halted\n");
    let audit = std::fs::read_to_string(n.state_dir().join("audit.log")).expect("audit");
    let actions: Vec<(String, String)> = audit
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                json_str(&e, "/action").to_string(),
                json_str(&e, "/phase").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("rewind", "intent"),
        ("rewind", "done"),
        ("clear-halt", "intent"),
        ("clear-halt", "done"),
    ]
    .iter()
    .map(|(a, p)| (a.to_string(), p.to_string()))
    .collect();
    assert_eq!(actions, want);
}

#[test]
fn fm_x_6_clear_halt_for_local_corruption_is_refused_while_the_log_is_corrupt() {
    let n = Node::new();
    n.append_n(1, 40, "r");
    n.halt(HaltReason::LocalCorruption, 3, 1);
    let seg = n.segments()[0].clone();
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[64 + 40] ^= 1;
    std::fs::write(&seg, &bytes).expect("write");
    let (code, v, _) = recover_json(&["clear-halt", s(&n.root)]);
    assert_eq!(code, 6, "{v}");
    let checks = v
        .pointer("/checks")
        .and_then(|x| x.as_array())
        .expect("checks");
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["log-verifies", "snapshots-verify"]);
    assert_eq!(checks[0]["passed"], false);
    assert_eq!(checks[1]["passed"], true);
    assert!(n.state_dir().join("halt").exists());
}

#[test]
fn clear_halt_on_a_node_that_is_not_halted_does_nothing() {
    let n = Node::new();
    n.append_n(1, 3, "r");
    let before = n.snapshot_files();
    let (code, v, _) = recover_json(&["clear-halt", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert!(v.pointer("/halt").is_some_and(|h| h.is_null()));
    assert_eq!(n.snapshot_files(), before);
}

#[test]
fn every_subcommand_exits_5_while_the_directory_lock_is_held() {
    let n = Node::new();
    n.append_n(1, 5, "r");
    n.set_commit(2);
    n.halt(HaltReason::Gap, 6, 1);
    let other = Node::new();
    let before = n.snapshot_files();
    let _lock = DirLock::acquire(&n.root).expect("lock");
    let root = s(&n.root);
    let cmds: Vec<Vec<&str>> = vec![
        vec!["inspect", root],
        vec!["verify", root],
        vec!["dump", root],
        vec!["status", root],
        vec!["diff", root, s(&other.root)],
        vec!["diff", s(&other.root), root],
        vec!["rewind", root, "--to", "3", "--yes"],
        vec!["clear-halt", root],
        vec!["snapshot", "verify", root],
        vec![
            "snapshot",
            "create",
            root,
            "--state",
            "/dev/null",
            "--lsn",
            "1",
        ],
    ];
    for c in cmds {
        let out = recover(&c).output().expect("run");
        assert_eq!(out.status.code(), Some(5), "{c:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("node is running"), "{c:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{c:?}: {err}");
        let (code, v, _) = recover_json(&c);
        assert_eq!(code, 5);
        assert_eq!(json_str(&v, "/error/kind"), "node-running");
        assert_eq!(json_u64(&v, "/exit_code"), 5);
    }
    assert_eq!(n.snapshot_files(), before);
}

#[test]
fn a_path_that_is_not_a_data_directory_is_bad_input_and_nothing_is_created() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).expect("mkdir");
    for args in [
        vec!["verify", s(&plain)],
        vec!["inspect", "/nonexistent/walship"],
        vec!["rewind", s(&plain), "--to", "1", "--yes"],
        vec!["clear-halt", s(&plain)],
    ] {
        let out = recover(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a walship data directory"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(
        std::fs::read_dir(&plain).expect("read").count(),
        0,
        "nothing created"
    );
}

#[test]
fn garbage_files_are_reported_in_one_line_never_a_panic() {
    // Garbage state file.
    let n = Node::new();
    n.append_n(1, 5, "r");
    std::fs::write(n.state_dir().join("commit"), b"not a state file at all").expect("write");
    let out = recover(&["inspect", s(&n.root)]).output().expect("run");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("commit"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["state_files"][0]["ok"], false);

    // A truncated segment header and a garbage segment.
    let m = Node::new();
    m.append_n(1, 5, "r");
    let seg = m.segments()[0].clone();
    let bytes = std::fs::read(&seg).expect("read");
    std::fs::write(&seg, &bytes[..40]).expect("truncate");
    let (code, v, _) = recover_json(&["verify", s(&m.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        json_str(&v, "/wal/state/corruption/kind"),
        "segment-header-truncated"
    );
    std::fs::write(&seg, vec![0x5a; 4096]).expect("garbage");
    let (code, v, _) = recover_json(&["verify", s(&m.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        json_str(&v, "/wal/state/corruption/kind"),
        "segment-bad-magic"
    );
    recover(&["dump", s(&m.root)]).assert().code(3);
    recover(&["rewind", s(&m.root), "--to", "1", "--yes"])
        .assert()
        .code(3);
}

#[test]
fn usage_errors_exit_2() {
    recover(&[]).assert().code(2);
    recover(&["frobnicate"]).assert().code(2);
    recover(&["rewind", "/tmp"]).assert().code(2);
    recover(&["dump", "/tmp", "--from", "x"]).assert().code(2);
    let n = Node::new();
    n.append_n(1, 3, "r");
    recover(&["dump", s(&n.root), "--from", "3", "--to", "2"])
        .assert()
        .code(2);
    recover(&["diff", s(&n.root), s(&n.root)]).assert().code(2);
}

#[test]
fn dump_prints_the_requested_range_with_hex_payloads() {
    let n = Node::new();
    n.append_n(1, 5, "p");
    n.append_n(3, 5, "q");
    let (code, v, _) = recover_json(&[
        "dump",
        s(&n.root),
        "--from",
        "4",
        "--to",
        "7",
        "--payload",
        "hex",
    ]);
    assert_eq!(code, 0, "{v}");
    let recs = v["records"].as_array().expect("records");
    let lsns: Vec<u64> = recs
        .iter()
        .map(|r| r["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(lsns, vec![4, 5, 6, 7]);
    assert_eq!(recs[0]["payload_hex"], hex::encode("p-4"));
    assert_eq!(recs[2]["epoch"], 3);
    assert_eq!(recs[1]["crc"], recs[2]["prev_crc"], "the chain is visible");
    assert_eq!(json_str(&v, "/state/state"), "clean");
    let (_, v, _) = recover_json(&["dump", s(&n.root)]);
    let recs = v["records"].as_array().expect("records");
    assert_eq!(recs.len(), 10);
    assert!(
        recs[0].get("payload_hex").is_none(),
        "--payload len omits payloads"
    );
    assert_eq!(recs[0]["payload_len"], 3);
    let (out, _) = run_text(
        &[
            "dump",
            s(&n.root),
            "--from",
            "2",
            "--to",
            "2",
            "--payload",
            "hex",
        ],
        0,
    );
    assert!(out.contains("lsn=2 epoch=1 "), "{out}");
    assert!(
        out.contains(&format!("payload={}", hex::encode("p-2"))),
        "{out}"
    );
}

#[test]
fn inspect_reports_watermarks_epochs_and_segments() {
    let n = Node::new();
    n.append_n(1, 6, "a");
    n.append_n(4, 6, "b");
    n.set_commit(9);
    n.set_epochs(&[(1, 1), (4, 7)]);
    let (code, v, _) = recover_json(&["inspect", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_u64(&v, "/watermarks/durable_lsn"), 12);
    assert_eq!(json_u64(&v, "/watermarks/commit_lsn"), 9);
    assert_eq!(json_u64(&v, "/watermarks/tentative_records"), 3);
    let spans = v["epochs_in_log"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1]["epoch"], 4);
    assert_eq!(spans[1]["first_lsn"], 7);
    assert_eq!(spans[1]["last_lsn"], 12);
    assert_eq!(v["epoch_history"][1]["start_lsn"], 7);
    assert_eq!(v["halted"], false);
    assert!(!v["wal"]["segments"]
        .as_array()
        .expect("segments")
        .is_empty());
}

#[test]
fn dump_shows_a_control_record_as_what_it_says_in_json_and_text() {
    use walship_wal::control::ControlRecord;
    use walship_wal::{FsStorage, Wal, WalOptions};
    let n = Node::new();
    n.append_n(1, 2, "data");
    {
        let (mut wal, _) = Wal::open(FsStorage, &n.wal_dir(), WalOptions::default()).expect("open");
        wal.set_epoch(2);
        wal.append_control(&ControlRecord::EpochStart {
            epoch: 2,
            primary: "n2".into(),
        })
        .expect("control");
        wal.append(b"after").expect("append");
        wal.sync().expect("sync");
    }
    let (code, v, _) = recover_json(&["dump", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    let recs = v["records"].as_array().expect("records");
    assert_eq!(recs.len(), 4);
    assert!(
        recs[1].get("control").is_none(),
        "a data record has no control field"
    );
    assert_eq!(
        recs[2]["control"],
        serde_json::json!({"kind": "epoch-start", "epoch": 2, "primary": "n2"})
    );
    let out = recover(&["dump", s(&n.root)]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .find(|l| l.starts_with("lsn=3 "))
            .is_some_and(|l| l.starts_with("lsn=3 epoch=2")
                && l.contains("control=epoch-start(epoch=2 primary=n2)")),
        "{text}"
    );
}
