//! FM-X.6 in the recovery tool: a log that ends below `state/commit` lost acknowledged
//! records; `verify`, `inspect` and `status` report it as corruption (exit 3), while a torn
//! tail strictly above the watermark stays a torn tail (exit 0).

mod common;

use common::{recover, recover_json, s, Node};
use walship_wal::{FsStorage, Position, Wal, WalOptions};

/// Zeroes the last written (non-zero) byte of the newest segment: damage to the synced last
/// record that the scan cannot tell from a torn write into the preallocated zero tail
/// (spec/wal-format.md, "What the scan cannot see"), so it is cut like one.
fn zero_last_written_byte(n: &Node) {
    let seg = n.segments().last().cloned().expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let last = bytes.iter().rposition(|&b| b != 0).expect("a written byte");
    bytes[last] = 0;
    std::fs::write(&seg, bytes).expect("write");
}

fn text(args: &[&str]) -> (i32, String, String) {
    let out = recover(args).output().expect("run");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LOST_9_10: &str = "acknowledged records lost: log ends at lsn 9, commit watermark 10";

#[test]
fn fm_x_6_verify_inspect_status_report_acknowledged_records_lost_and_exit_3() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    n.set_commit(10);
    zero_last_written_byte(&n);
    let before = n.snapshot_files();

    let (code, v, err) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
    // The WAL alone cannot tell: its verdict stays a torn tail at lsn 10.
    assert_eq!(
        v.pointer("/wal/state/state").and_then(|x| x.as_str()),
        Some("torn-tail")
    );
    assert_eq!(
        v.pointer("/wal/state/lsn").and_then(|x| x.as_u64()),
        Some(10)
    );
    assert_eq!(
        v.pointer("/acknowledged_records_lost"),
        Some(&serde_json::json!({"log_end": 9, "commit_lsn": 10})),
        "{v}"
    );
    assert!(err.contains(LOST_9_10), "{err}");

    for cmd in ["verify", "inspect", "status"] {
        let (code, out, err) = text(&[cmd, s(&n.root)]);
        assert_eq!(code, 3, "{cmd}: {out}{err}");
        assert!(
            out.contains(&format!("CORRUPT: {LOST_9_10}")),
            "{cmd}: {out}"
        );
        assert!(err.contains(LOST_9_10), "{cmd}: {err}");
        let (code, v, _) = recover_json(&[cmd, s(&n.root)]);
        assert_eq!(code, 3, "{cmd}: {v}");
        assert_eq!(
            v.pointer("/acknowledged_records_lost/log_end")
                .and_then(|x| x.as_u64()),
            Some(9),
            "{cmd}: {v}"
        );
    }
    assert_eq!(
        n.snapshot_files(),
        before,
        "read-only commands changed nothing"
    );
}

#[test]
fn fm_x_6_log_already_cut_below_the_commit_watermark_is_corruption() {
    // What a node leaves after its WAL open cut the damaged record 10: a clean log of 9.
    let n = Node::new();
    n.append_n(1, 9, "r");
    n.set_commit(10);
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        v.pointer("/wal/state/state").and_then(|x| x.as_str()),
        Some("clean")
    );
    assert_eq!(
        v.pointer("/acknowledged_records_lost"),
        Some(&serde_json::json!({"log_end": 9, "commit_lsn": 10}))
    );
}

#[test]
fn torn_tail_strictly_above_the_commit_watermark_stays_a_torn_tail_and_exits_0() {
    let n = Node::new();
    n.append_n(1, 10, "r");
    n.set_commit(9);
    zero_last_written_byte(&n);
    for cmd in ["verify", "inspect", "status"] {
        let (code, v, _) = recover_json(&[cmd, s(&n.root)]);
        assert_eq!(code, 0, "{cmd}: {v}");
        assert_eq!(
            v.pointer("/acknowledged_records_lost"),
            Some(&serde_json::Value::Null),
            "{cmd}: {v}"
        );
    }
}

#[test]
fn log_reset_to_a_boundary_at_the_commit_watermark_is_no_loss() {
    let n = Node::new();
    let (mut wal, _) = Wal::open(FsStorage, &n.wal_dir(), WalOptions::default()).expect("wal");
    wal.reset_to(Position {
        lsn: 10,
        epoch: 1,
        crc: 0x1234_5678,
    })
    .expect("reset");
    drop(wal);
    n.set_commit(10);
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    n.set_commit(11);
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        v.pointer("/acknowledged_records_lost"),
        Some(&serde_json::json!({"log_end": 10, "commit_lsn": 11}))
    );
}

#[test]
fn fm_x_6_clear_halt_is_refused_while_the_log_ends_below_the_commit_watermark() {
    let n = Node::new();
    n.append_n(1, 9, "r");
    n.set_commit(10);
    n.halt(walship_replica::halt::HaltReason::LocalCorruption, 10, 1);
    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&["clear-halt", s(&n.root)]);
    assert_eq!(code, 6, "{v}");
    assert!(err.contains(LOST_9_10), "{err}");
    let check = v
        .pointer("/checks")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().find(|x| x["name"] == "log-verifies"))
        .expect("log-verifies check");
    assert_eq!(check["passed"], serde_json::Value::Bool(false), "{v}");
    assert_eq!(check["detail"].as_str(), Some(LOST_9_10));
    assert_eq!(n.snapshot_files(), before, "nothing changed");
}

#[test]
fn rewind_to_the_log_end_lowers_the_commit_watermark_only_with_accept_data_loss() {
    let n = Node::new();
    n.append_n(1, 9, "r");
    n.set_commit(10);
    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&["rewind", s(&n.root), "--to", "9", "--yes"]);
    assert_eq!(code, 6, "{v}");
    assert!(err.contains(LOST_9_10), "{err}");
    assert!(err.contains("--accept-data-loss"), "{err}");
    assert_eq!(n.snapshot_files(), before, "nothing changed");

    let (code, v, _) = recover_json(&[
        "rewind",
        s(&n.root),
        "--to",
        "9",
        "--yes",
        "--accept-data-loss",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v.pointer("/performed"),
        Some(&serde_json::Value::Bool(true))
    );
    assert_eq!(v.pointer("/cut/records").and_then(|x| x.as_u64()), Some(0));
    assert_eq!(
        v.pointer("/commit_lsn_after").and_then(|x| x.as_u64()),
        Some(9)
    );
    assert_eq!(v.pointer("/after/lsn").and_then(|x| x.as_u64()), Some(9));
    assert_eq!(n.node_dir().commit_lsn().expect("commit"), 9);
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "the operator accepted the loss: {v}");
}
