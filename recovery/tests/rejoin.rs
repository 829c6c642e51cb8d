//! `walship-recover rejoin DIR --from PRIMARY_DIR` (the directory form; the address form
//! is tests/rejoin_remote.rs) on data directories built
//! with the WAL's own API (spec/recovery-tool.md §11).

mod common;

use common::{recover, recover_json, s, Node};
use walship_replica::halt::HaltReason;
use walship_wal::state::DirLock;

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

fn json_bool(v: &serde_json::Value, ptr: &str) -> bool {
    v.pointer(ptr)
        .and_then(|x| x.as_bool())
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
}

/// (action, phase) of every entry of `n`'s audit log, in order.
fn audit_steps(n: &Node) -> Vec<(String, String)> {
    let path = n.state_dir().join("audit.log");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).expect("audit line is JSON");
            (
                json_str(&e, "/action").to_string(),
                json_str(&e, "/phase").to_string(),
            )
        })
        .collect()
}

fn steps(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, p)| (a.to_string(), p.to_string()))
        .collect()
}

/// A primary with `common` records of epoch 1 then `primary_extra` of epoch 3, and a
/// replica with the same `common` records then `replica_extra` tentative ones of epoch 2.
fn diverged(common: u64, primary_extra: u64, replica_extra: u64) -> (Node, Node) {
    let primary = Node::new();
    let replica = Node::new();
    primary.append_n(1, common, "same");
    replica.append_n(1, common, "same");
    if primary_extra > 0 {
        primary.append_n(3, primary_extra, "new-primary");
    }
    if replica_extra > 0 {
        replica.append_n(2, replica_extra, "tentative");
    }
    (primary, replica)
}

fn rejoin(replica: &Node, primary: &Node, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["rejoin", s(&replica.root), "--from", s(&primary.root)];
    args.extend_from_slice(extra);
    recover_json(&args)
}

#[test]
fn fm_8_1_rejoin_cuts_a_diverged_replica_to_the_common_prefix_and_clears_its_divergence_halt() {
    let (primary, replica) = diverged(10, 5, 4);
    replica.set_commit(10);
    replica.halt(HaltReason::Divergence, 11, 3);
    let primary_before = primary.snapshot_files();

    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/command"), "rejoin");
    assert_eq!(json_str(&v, "/diff/relation"), "diverged");
    assert_eq!(json_u64(&v, "/diff/first_divergence/lsn"), 11);
    assert_eq!(json_u64(&v, "/diff/first_divergence/a/epoch"), 2);
    assert_eq!(json_u64(&v, "/diff/first_divergence/b/epoch"), 3);
    assert_eq!(json_u64(&v, "/diff/common_prefix/lsn"), 10);
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert!(json_bool(&v, "/rewind/performed"));
    assert_eq!(json_u64(&v, "/rewind/cut/first_lsn"), 11);
    assert_eq!(json_u64(&v, "/rewind/cut/last_lsn"), 14);
    assert_eq!(json_u64(&v, "/rewind/cut/records"), 4);
    assert_eq!(json_u64(&v, "/rewind/cut/committed_records"), 0);
    assert_eq!(json_u64(&v, "/rewind/after/lsn"), 10);
    assert!(json_bool(&v, "/halt_cleared"));
    assert_eq!(json_str(&v, "/halt/reason"), "divergence");
    assert!(v["halt_checks"]
        .as_array()
        .expect("checks")
        .iter()
        .all(|c| c["passed"] == true));
    assert_eq!(json_str(&v, "/verify/wal/state/state"), "clean");
    assert!(v["refused"].is_null(), "{v}");
    assert!(json_str(&v, "/audit_log").ends_with("audit.log"));

    assert_eq!(replica.last().lsn, 10);
    assert_eq!(
        audit_steps(&replica),
        steps(&[
            ("rejoin", "intent"),
            ("rewind", "intent"),
            ("rewind", "done"),
            ("clear-halt", "intent"),
            ("clear-halt", "done"),
            ("rejoin", "done"),
        ])
    );
    recover(&["verify", s(&replica.root)]).assert().success();
    recover(&["status", s(&replica.root)])
        .assert()
        .success()
        .stdout("not halted\n");
    let (code, d, _) = recover_json(&["diff", s(&replica.root), s(&primary.root)]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(json_str(&d, "/relation"), "a-prefix-of-b");
    assert_eq!(json_u64(&d, "/common_prefix/lsn"), 10);
    assert_eq!(
        primary.snapshot_files(),
        primary_before,
        "nothing was written in PRIMARY_DIR"
    );
}

#[test]
fn rejoin_of_a_replica_longer_than_the_primary_cuts_what_the_primary_lacks() {
    let (primary, replica) = diverged(10, 0, 3);
    replica.set_commit(10);
    replica.halt(HaltReason::Divergence, 11, 3);
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "b-prefix-of-a");
    assert!(json_bool(&v, "/primary_read_complete"));
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert_eq!(json_u64(&v, "/rewind/cut/records"), 3);
    assert!(json_bool(&v, "/halt_cleared"));
    assert_eq!(replica.last().lsn, 10);
}

#[test]
fn rejoin_of_a_prefix_cuts_nothing_and_clears_a_divergence_halt_above_its_end() {
    let (primary, replica) = diverged(10, 5, 0);
    replica.set_commit(10);
    replica.halt(HaltReason::Divergence, 11, 3);
    let wal_before: Vec<_> = replica
        .snapshot_files()
        .into_iter()
        .filter(|(p, _)| p.starts_with(replica.wal_dir()))
        .collect();
    let (code, v, err) = rejoin(&replica, &primary, &[]);
    assert_eq!(
        code, 0,
        "no confirmation is needed to cut nothing: {v}\n{err}"
    );
    assert_eq!(json_str(&v, "/diff/relation"), "a-prefix-of-b");
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert!(!json_bool(&v, "/rewind/performed"));
    assert!(v["rewind"]["cut"].is_null(), "{v}");
    assert!(json_bool(&v, "/halt_cleared"));
    let tail = v["halt_checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "tail-below-halt-lsn")
        .cloned()
        .expect("tail check");
    assert_eq!(tail["passed"], true, "{tail}");
    let wal_after: Vec<_> = replica
        .snapshot_files()
        .into_iter()
        .filter(|(p, _)| p.starts_with(replica.wal_dir()))
        .collect();
    assert_eq!(wal_after, wal_before, "nothing cut");
    assert_eq!(
        audit_steps(&replica),
        steps(&[
            ("rejoin", "intent"),
            ("clear-halt", "intent"),
            ("clear-halt", "done"),
            ("rejoin", "done"),
        ])
    );
}

#[test]
fn rejoin_of_a_prefix_refuses_a_divergence_halt_the_primary_log_does_not_explain() {
    // The node halted for a divergence at lsn 8, but its log agrees with this
    // primary's through lsn 10: PRIMARY_DIR is not the history the node saw.
    let (primary, replica) = diverged(10, 5, 0);
    replica.halt(HaltReason::Divergence, 8, 3);
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 6, "{v}");
    assert!(
        json_str(&v, "/refused").contains("agrees with"),
        "{}",
        v["refused"]
    );
    assert!(!json_bool(&v, "/halt_cleared"));
    assert!(err.contains("refused") && err.contains("lsn 8"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(replica.snapshot_files(), before, "nothing changed");
}

#[test]
fn fm_x_10_rejoin_below_the_commit_watermark_is_refused_then_done_with_accept_data_loss() {
    let (primary, replica) = diverged(8, 5, 6);
    replica.set_commit(10); // lsn 9 and 10 are committed on this node, and the primary lacks them
    replica.halt(HaltReason::Divergence, 9, 3);
    let before = replica.snapshot_files();
    let primary_before = primary.snapshot_files();

    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 6, "{v}\n{err}");
    assert_eq!(json_u64(&v, "/to_lsn"), 8);
    assert_eq!(json_u64(&v, "/rewind/cut/committed_records"), 2);
    assert!(!json_bool(&v, "/rewind/performed"));
    assert!(
        json_str(&v, "/refused").contains("2 committed records"),
        "{}",
        v["refused"]
    );
    assert!(err.contains("--accept-data-loss"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        replica.snapshot_files(),
        before,
        "nothing changed, byte for byte, no audit entry"
    );

    let (code, v, err) = rejoin(&replica, &primary, &["--yes", "--accept-data-loss"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_u64(&v, "/rewind/commit_lsn_after"), 8);
    assert!(json_bool(&v, "/halt_cleared"));
    assert_eq!(replica.node_dir().commit_lsn().expect("commit"), 8);
    assert_eq!(replica.last().lsn, 8);
    recover(&["verify", s(&replica.root)]).assert().success();
    assert_eq!(primary.snapshot_files(), primary_before);
}

#[test]
fn rejoin_reads_a_primary_whose_lock_is_held_by_a_running_node() {
    let (primary, replica) = diverged(10, 5, 4);
    replica.halt(HaltReason::Divergence, 11, 3);
    let _running = DirLock::acquire(&primary.root).expect("primary's lock");
    let primary_before = primary.snapshot_files();
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(json_bool(&v, "/halt_cleared"));
    assert_eq!(replica.last().lsn, 10);
    assert_eq!(primary.snapshot_files(), primary_before);
}

#[test]
fn rejoin_refuses_while_the_rejoining_node_runs() {
    let (primary, replica) = diverged(10, 5, 4);
    let _running = DirLock::acquire(&replica.root).expect("replica's lock");
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 5, "{v}");
    assert_eq!(json_str(&v, "/error/kind"), "node-running");
    assert!(err.contains("stop the node first"), "{err}");
    assert_eq!(replica.snapshot_files(), before);
}

#[test]
fn rejoin_reads_the_primary_only_as_far_as_the_comparison_needs() {
    let (primary, replica) = diverged(10, 200, 0);
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(err.contains("nothing to do"), "{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "a-prefix-of-b");
    assert!(!json_bool(&v, "/primary_read_complete"));
    assert_eq!(
        json_u64(&v, "/diff/b/last/lsn"),
        11,
        "the read stops at the first record beyond the replica's last"
    );
    assert!(v["audit_log"].is_null(), "nothing changed, nothing audited");
    assert!(audit_steps(&replica).is_empty());
}

#[test]
fn a_torn_tail_in_the_primary_log_is_its_end() {
    let (primary, replica) = diverged(10, 0, 2);
    replica.halt(HaltReason::Divergence, 11, 3);
    // A write in flight at the end of the primary's (preallocated) last segment.
    let last_seg = primary.segments().last().cloned().expect("segment");
    let bytes = std::fs::read(&last_seg).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).expect("records") as u64 + 1;
    let mut torn = vec![0xab; 20];
    torn[4..8].copy_from_slice(&10u32.to_le_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last_seg)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, &torn, end).expect("write torn header");
    drop(f);
    let primary_before = primary.snapshot_files();

    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/b/state/state"), "torn-tail");
    assert_eq!(json_str(&v, "/diff/relation"), "b-prefix-of-a");
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert_eq!(replica.last().lsn, 10);
    assert_eq!(
        primary.snapshot_files(),
        primary_before,
        "the torn tail is left in place"
    );
}

#[test]
fn rejoin_does_not_clear_a_checksum_halt() {
    let (primary, replica) = diverged(10, 5, 4);
    replica.halt(HaltReason::Checksum, 11, 3);
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 6, "{v}");
    assert_eq!(json_str(&v, "/halt/reason"), "checksum");
    assert!(!json_bool(&v, "/halt_cleared"));
    assert!(
        json_str(&v, "/refused").contains("halted for checksum at lsn 11"),
        "{}",
        v["refused"]
    );
    assert!(err.contains("clear-halt"), "{err}");
    assert_eq!(replica.snapshot_files(), before, "nothing changed");
    let (code, _, _) = recover_json(&["status", s(&replica.root)]);
    assert_eq!(code, 4, "still halted");
}

#[test]
fn rejoin_clears_a_stale_primary_halt_of_a_node_identical_to_the_primary() {
    let (primary, replica) = diverged(10, 0, 0);
    replica.halt(HaltReason::StalePrimary, 11, 2);
    let (code, v, err) = rejoin(&replica, &primary, &[]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "identical");
    assert!(json_bool(&v, "/halt_cleared"));
}

#[test]
fn a_corrupt_primary_log_is_exit_3_and_nothing_changes() {
    let (primary, replica) = diverged(10, 5, 4);
    replica.halt(HaltReason::Divergence, 11, 3);
    let (_, dump, _) = recover_json(&["dump", s(&primary.root), "--from", "3", "--to", "3"]);
    let seg = primary
        .wal_dir()
        .join(json_str(&dump, "/records/0/segment"));
    let offset = json_u64(&dump, "/records/0/offset") as usize;
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[offset + 34] ^= 0x10; // a payload byte of lsn 3, in a sealed segment
    std::fs::write(&seg, &bytes).expect("write");
    let before = replica.snapshot_files();
    let primary_before = primary.snapshot_files();

    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 3, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/b/state/state"), "corrupt");
    assert_eq!(
        json_str(&v, "/diff/b/state/corruption/kind"),
        "record-checksum"
    );
    assert_eq!(json_u64(&v, "/diff/b/state/corruption/lsn"), 3);
    assert!(v["to_lsn"].is_null(), "{v}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(replica.snapshot_files(), before);
    assert_eq!(primary.snapshot_files(), primary_before);
}

#[test]
fn a_corrupt_rejoining_log_is_exit_3_and_nothing_changes() {
    let (primary, replica) = diverged(10, 5, 4);
    let (_, dump, _) = recover_json(&["dump", s(&replica.root), "--from", "3", "--to", "3"]);
    let seg = replica
        .wal_dir()
        .join(json_str(&dump, "/records/0/segment"));
    let offset = json_u64(&dump, "/records/0/offset") as usize;
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[offset + 34] ^= 0x10;
    std::fs::write(&seg, &bytes).expect("write");
    let before = replica.snapshot_files();
    let (code, v, _) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(json_str(&v, "/diff/a/state/state"), "corrupt");
    assert_eq!(replica.snapshot_files(), before);
}

#[test]
fn rejoin_without_a_provable_common_prefix_is_refused() {
    // The primary no longer retains the replica's range (front-truncated past it).
    let primary = Node::new();
    let replica = Node::new();
    primary.append_n(1, 60, "same");
    replica.append_n(1, 5, "same");
    let first = primary.truncate_front(40);
    assert!(
        first > 6,
        "the primary's base {first} is above the replica's last"
    );
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 6, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "disjoint");
    assert!(json_str(&v, "/refused").contains("resync"), "{v}");
    assert_eq!(replica.snapshot_files(), before);
}

#[test]
fn rejoin_without_yes_on_a_non_terminal_stdin_is_refused() {
    let (primary, replica) = diverged(10, 5, 4);
    replica.halt(HaltReason::Divergence, 11, 3);
    let before = replica.snapshot_files();
    let out = recover(&["rejoin", s(&replica.root), "--from", s(&primary.root)])
        .write_stdin("y\n")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cut lsn 11..=14 (4 records"), "{text}");
    assert!(text.contains("REFUSED"), "{text}");
    assert_eq!(replica.snapshot_files(), before);
}

#[test]
fn rejoin_of_a_directory_with_itself_is_a_usage_error() {
    let (_, replica) = diverged(3, 0, 0);
    let (code, v, _) = recover_json(&["rejoin", s(&replica.root), "--from", s(&replica.root)]);
    assert_eq!(code, 2, "{v}");
}

#[test]
fn rejoin_text_output_lists_the_steps_and_the_loss() {
    let (primary, replica) = diverged(8, 5, 6);
    replica.set_commit(10);
    replica.halt(HaltReason::Divergence, 9, 3);
    let out = recover(&[
        "rejoin",
        s(&replica.root),
        "--from",
        s(&primary.root),
        "--yes",
        "--accept-data-loss",
    ])
    .output()
    .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "1. diff: DIVERGED at lsn 9",
        "2. rewind: keep up to lsn 8; cut lsn 9..=14 (6 records",
        "DATA LOSS: 2 of these records are committed",
        "done, last record is now lsn 8",
        "DATA LOSS: commit watermark lowered from 10 to 8",
        "3. halt: divergence at lsn 9 (epoch 3, peer n1) — cleared",
        "4. verify: clean",
        "audit entries written to",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn rejoin_below_an_installed_snapshot_is_refused_even_with_accept_data_loss() {
    let (primary, replica) = diverged(10, 5, 4);
    replica.set_commit(12);
    let state = replica.tmp.path().join("state.bin");
    std::fs::write(&state, vec![7u8; 100]).expect("state");
    let (code, v, _) = recover_json(&[
        "snapshot",
        "create",
        s(&replica.root),
        "--state",
        s(&state),
        "--lsn",
        "12",
    ]);
    assert_eq!(code, 0, "{v}");
    replica.halt(HaltReason::Divergence, 11, 3);
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &primary, &["--yes", "--accept-data-loss"]);
    assert_eq!(code, 6, "{v}\n{err}");
    assert!(
        json_str(&v, "/refused").contains("snapshot's boundary (lsn 12) is above lsn 10"),
        "{}",
        v["refused"]
    );
    assert_eq!(replica.snapshot_files(), before, "nothing changed");
}

/// The primary keeps appending (epoch 3 records `w-LSN`, segment files rolling
/// every few records) while replicas rejoin from it whose logs run `AHEAD`
/// records past what the primary had published when they were built — records
/// the primary is about to write, byte for byte. The read of the live log then
/// reaches the primary's moving end (a record in flight is its end), and the
/// outcome may not depend on how the two interleave: never corruption, never a
/// divergence, the cut exactly at the primary's end as read (or nothing to cut
/// once the primary has caught up), the halt cleared.
#[test]
fn rejoin_from_a_primary_appending_meanwhile_cuts_exactly_to_its_end_as_read() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use walship_wal::{FsStorage, Wal, WalOptions};

    const WRITER_RECORDS: u64 = 2000;
    const ROUNDS: usize = 6;
    const AHEAD: u64 = 150;
    let primary = Node::new();
    primary.append_n(1, 10, "same");
    let published = AtomicU64::new(10);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let _running = DirLock::acquire(&primary.root).expect("primary's lock");
            let opts = WalOptions {
                segment_size_bytes: 1024,
                ..WalOptions::default()
            };
            let (mut wal, _) = Wal::open(FsStorage, &primary.wal_dir(), opts).expect("open");
            wal.set_epoch(3);
            for _ in 0..WRITER_RECORDS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let lsn = wal.last().lsn + 1;
                wal.append(format!("w-{lsn}").as_bytes()).expect("append");
                wal.sync().expect("sync");
                published.store(lsn, Ordering::SeqCst);
            }
        });
        for round in 0..ROUNDS {
            let m = published.load(Ordering::SeqCst);
            let replica = Node::new();
            replica.append_n(1, 10, "same");
            let recs: Vec<(u64, Vec<u8>)> = (11..=m + AHEAD)
                .map(|l| (3, format!("w-{l}").into_bytes()))
                .collect();
            replica.append_with_segment_bytes(1 << 16, &recs);
            replica.halt(HaltReason::Divergence, m + AHEAD + 1, 4);
            let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
            assert_eq!(code, 0, "round {round}, published {m}: {v}\n{err}");
            let relation = json_str(&v, "/diff/relation");
            let read_to = json_u64(&v, "/diff/b/last/lsn");
            let keep = json_u64(&v, "/to_lsn");
            assert!(read_to >= m, "round {round}: published records are read");
            match relation {
                "b-prefix-of-a" => {
                    assert_eq!(keep, read_to, "round {round}: cut at the primary's end");
                    assert!(json_bool(&v, "/primary_read_complete"), "round {round}");
                }
                "identical" | "a-prefix-of-b" => assert_eq!(keep, m + AHEAD, "round {round}"),
                other => panic!("round {round}: relation {other}: {v}"),
            }
            assert!(json_bool(&v, "/halt_cleared"), "round {round}");
            assert_eq!(replica.last().lsn, keep, "round {round}");
        }
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer");
    });
    recover(&["verify", s(&primary.root)]).assert().success();
}

#[test]
fn rejoin_diverged_at_the_first_lsn_both_retain_is_refused() {
    // The primary's retained log starts after lsn B (its base); the replica's
    // record B already differs: everything before it is unprovable.
    let primary = Node::new();
    primary.append_n(1, 60, "same");
    let base = primary.truncate_front(40) - 1;
    let replica = Node::new();
    replica.append_n(1, base - 1, "same");
    replica.append_n(2, 5, "tentative");
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 6, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "diverged");
    assert_eq!(json_u64(&v, "/diff/first_divergence/lsn"), base);
    assert!(
        json_str(&v, "/refused")
            .contains(&format!("differ at lsn {base}, the first lsn both retain")),
        "{}",
        v["refused"]
    );
    assert_eq!(replica.snapshot_files(), before);
}

#[test]
fn rejoin_of_a_diverged_node_that_is_not_halted_rewinds_and_verifies() {
    let (primary, replica) = diverged(10, 5, 4);
    let (code, v, err) = rejoin(&replica, &primary, &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(v["halt"].is_null());
    assert!(!json_bool(&v, "/halt_cleared"));
    assert!(json_bool(&v, "/rewind/performed"));
    assert_eq!(replica.last().lsn, 10);
    assert_eq!(
        audit_steps(&replica),
        steps(&[
            ("rejoin", "intent"),
            ("rewind", "intent"),
            ("rewind", "done"),
            ("rejoin", "done"),
        ])
    );
}
