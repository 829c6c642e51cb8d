//! The `--json` schema is a stable interface (spec/recovery-tool.md §3): the
//! set of field paths of every command's document is pinned here, so a rename
//! or removal fails this test (additions must be added here and to the spec).

mod common;

use std::collections::BTreeSet;

use common::{paths, recover_json, s, Node};
use walship_replica::halt::HaltReason;

fn schema(args: &[&str]) -> BTreeSet<String> {
    let (_, v, _) = recover_json(args);
    let mut out = BTreeSet::new();
    paths(&v, "", &mut out);
    out
}

const ENVELOPE: [&str; 3] = ["schema_version", "command", "exit_code"];
const SNAPSHOT_WAL: [&str; 5] = [
    "snapshot_wal",
    "snapshot_wal.state",
    "snapshot_wal.boundary",
    "snapshot_wal.wal_at_boundary",
    "snapshot_wal.detail",
];
const POSITION: [&str; 3] = ["lsn", "epoch", "crc"];
const HALT: [&str; 8] = [
    "reason",
    "lsn",
    "epoch",
    "expected",
    "found",
    "peer",
    "at_unix_ms",
    "detail",
];

fn with(base: &[&str], prefix: &str, fields: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base.iter().map(|x| x.to_string()).collect();
    v.push(prefix.to_string());
    v.extend(fields.iter().map(|f| format!("{prefix}.{f}")));
    v
}

fn wal_summary(prefix: &str) -> Vec<String> {
    let mut v = vec![prefix.to_string()];
    for f in [
        "wal_dir",
        "segments",
        "first_lsn",
        "base",
        "last",
        "records",
        "state",
        "state.state",
        "ignored_files",
        "superseded_segments",
    ] {
        v.push(format!("{prefix}.{f}"));
    }
    for f in [
        "name",
        "first_lsn",
        "last_lsn",
        "records",
        "bytes",
        "valid_bytes",
        "generation",
        "created_epoch",
    ] {
        v.push(format!("{prefix}.segments[].{f}"));
    }
    for p in POSITION {
        v.push(format!("{prefix}.base.{p}"));
        v.push(format!("{prefix}.last.{p}"));
    }
    v
}

#[test]
fn verify_inspect_status_json_field_paths_are_stable() {
    let n = Node::new();
    n.append_n(1, 4, "a");
    n.append_n(2, 4, "b");
    n.set_commit(6);
    n.set_epochs(&[(1, 1), (2, 5)]);
    n.halt(HaltReason::Divergence, 7, 2);

    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(
        [
            "dir",
            "state_files",
            "snapshots",
            "acknowledged_records_lost",
        ]
        .map(String::from),
    );
    want.extend(SNAPSHOT_WAL.map(String::from));
    want.extend(wal_summary("wal"));
    want.extend(["name", "present", "ok", "error"].map(|f| format!("state_files[].{f}")));
    assert_eq!(schema(&["verify", s(&n.root)]), want.into_iter().collect());

    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(
        [
            "dir",
            "epochs_in_log",
            "epoch_history",
            "watermarks",
            "watermarks.durable_lsn",
            "watermarks.commit_lsn",
            "watermarks.tentative_records",
            "acknowledged_records_lost",
            "snapshots",
            "halted",
            "snapshot_wal",
            "snapshot_wal.state",
            "snapshot_wal.boundary",
            "snapshot_wal.wal_at_boundary",
            "snapshot_wal.detail",
            "audit_entries",
        ]
        .map(String::from),
    );
    want.extend(wal_summary("wal"));
    want.extend(
        ["epoch", "first_lsn", "last_lsn", "records"].map(|f| format!("epochs_in_log[].{f}")),
    );
    want.extend(["epoch", "start_lsn"].map(|f| format!("epoch_history[].{f}")));
    want.extend(with(&[], "halt", &HALT));
    assert_eq!(schema(&["inspect", s(&n.root)]), want.into_iter().collect());

    let mut want = with(&ENVELOPE, "halt", &HALT);
    want.extend(["dir", "halted", "acknowledged_records_lost"].map(String::from));
    assert_eq!(schema(&["status", s(&n.root)]), want.into_iter().collect());
}

#[test]
fn dump_diff_rewind_clear_halt_json_field_paths_are_stable() {
    let a = Node::new();
    let b = Node::new();
    a.append_n(1, 4, "same");
    b.append_n(1, 2, "same");
    b.append_n(2, 2, "other");

    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(
        [
            "dir",
            "from_lsn",
            "to_lsn",
            "records",
            "state",
            "state.state",
        ]
        .map(String::from),
    );
    want.extend(
        [
            "lsn",
            "epoch",
            "crc",
            "prev_crc",
            "payload_len",
            "segment",
            "offset",
            "payload_hex",
        ]
        .map(|f| format!("records[].{f}")),
    );
    assert_eq!(
        schema(&["dump", s(&a.root), "--payload", "hex"]),
        want.into_iter().collect()
    );

    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(
        [
            "relation",
            "common_prefix",
            "first_divergence",
            "first_divergence.lsn",
        ]
        .map(String::from),
    );
    for side in ["a", "b"] {
        want.extend(
            ["", ".dir", ".base", ".last", ".state", ".state.state"].map(|f| format!("{side}{f}")),
        );
        for p in POSITION {
            want.push(format!("{side}.base.{p}"));
            want.push(format!("{side}.last.{p}"));
            want.push(format!("first_divergence.{side}.{p}"));
        }
        want.push(format!("first_divergence.{side}"));
    }
    want.extend(POSITION.map(|p| format!("common_prefix.{p}")));
    assert_eq!(
        schema(&["diff", s(&a.root), s(&b.root)]),
        want.into_iter().collect()
    );

    b.set_commit(2);
    b.halt(HaltReason::Divergence, 3, 2);
    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(
        [
            "dir",
            "to_lsn",
            "commit_lsn",
            "before",
            "cut",
            "performed",
            "refused",
            "after",
            "commit_lsn_after",
            "verify",
            "verify.state",
            "audit_log",
        ]
        .map(String::from),
    );
    want.extend(POSITION.map(|p| format!("before.{p}")));
    want.extend(POSITION.map(|p| format!("after.{p}")));
    want.extend(
        [
            "first_lsn",
            "last_lsn",
            "records",
            "bytes",
            "epochs",
            "committed_records",
        ]
        .map(|f| format!("cut.{f}")),
    );
    want.extend(["epoch", "first_lsn", "last_lsn", "records"].map(|f| format!("cut.epochs[].{f}")));
    assert_eq!(
        schema(&["rewind", s(&b.root), "--to", "2", "--yes"]),
        want.into_iter().collect()
    );

    let mut want = with(&ENVELOPE, "halt", &HALT);
    want.extend(["dir", "checks", "cleared", "audit_log"].map(String::from));
    want.extend(["name", "passed", "detail"].map(|f| format!("checks[].{f}")));
    assert_eq!(
        schema(&["clear-halt", s(&b.root)]),
        want.into_iter().collect()
    );
}

const SNAPSHOT_INFO: [&str; 8] = [
    "name",
    "kind",
    "boundary",
    "file_bytes",
    "payload_bytes",
    "verified",
    "ok",
    "error",
];

#[test]
fn snapshot_create_and_verify_json_field_paths_are_stable() {
    let n = Node::new();
    n.append_n(1, 6, "a");
    n.set_commit(5);
    let state = n.tmp.path().join("state.bin");
    std::fs::write(&state, vec![7u8; 300]).expect("state");
    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(
        [
            "dir",
            "state_file",
            "boundary",
            "commit_lsn",
            "snapshot",
            "discarded_tmp",
            "removed_older",
            "audit_log",
        ]
        .map(String::from),
    );
    want.extend(POSITION.map(|p| format!("boundary.{p}")));
    want.extend(SNAPSHOT_INFO.map(|f| format!("snapshot.{f}")));
    want.extend(POSITION.map(|p| format!("snapshot.boundary.{p}")));
    assert_eq!(
        schema(&[
            "snapshot",
            "create",
            s(&n.root),
            "--state",
            s(&state),
            "--lsn",
            "5"
        ]),
        want.into_iter().collect()
    );

    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(["dir", "snapshots", "wal_state", "wal_state.state"].map(String::from));
    want.extend(SNAPSHOT_WAL.map(String::from));
    want.extend(SNAPSHOT_INFO.map(|f| format!("snapshots[].{f}")));
    want.extend(POSITION.map(|p| format!("snapshots[].boundary.{p}")));
    want.extend(POSITION.map(|p| format!("snapshot_wal.boundary.{p}")));
    want.extend(POSITION.map(|p| format!("snapshot_wal.wal_at_boundary.{p}")));
    assert_eq!(
        schema(&["snapshot", "verify", s(&n.root)]),
        want.into_iter().collect()
    );
}

#[test]
fn rejoin_json_field_paths_are_stable() {
    let primary = Node::new();
    let replica = Node::new();
    primary.append_n(1, 4, "same");
    replica.append_n(1, 4, "same");
    primary.append_n(3, 2, "new");
    replica.append_n(2, 2, "tentative");
    replica.set_commit(4);
    replica.halt(HaltReason::Divergence, 5, 3);

    let mut want: Vec<String> = ENVELOPE.iter().map(|x| x.to_string()).collect();
    want.extend(
        [
            "dir",
            "primary_dir",
            "primary_addr",
            "diff",
            "primary_read_complete",
            "to_lsn",
            "rewind",
            "halt_checks",
            "halt_cleared",
            "verify",
            "refused",
            "audit_log",
        ]
        .map(String::from),
    );
    want.extend(with(&[], "halt", &HALT));
    want.extend(["name", "passed", "detail"].map(|f| format!("halt_checks[].{f}")));
    // diff: the diff command's document (a = the node, b = the primary).
    want.extend(
        [
            "relation",
            "common_prefix",
            "first_divergence",
            "first_divergence.lsn",
        ]
        .map(|f| format!("diff.{f}")),
    );
    for side in ["a", "b"] {
        want.extend(
            ["", ".dir", ".base", ".last", ".state", ".state.state"]
                .map(|f| format!("diff.{side}{f}")),
        );
        for p in POSITION {
            want.push(format!("diff.{side}.base.{p}"));
            want.push(format!("diff.{side}.last.{p}"));
            want.push(format!("diff.first_divergence.{side}.{p}"));
        }
        want.push(format!("diff.first_divergence.{side}"));
    }
    want.extend(POSITION.map(|p| format!("diff.common_prefix.{p}")));
    // rewind: the rewind command's document.
    want.extend(
        [
            "dir",
            "to_lsn",
            "commit_lsn",
            "before",
            "cut",
            "performed",
            "refused",
            "after",
            "commit_lsn_after",
            "verify",
            "verify.state",
            "audit_log",
        ]
        .map(|f| format!("rewind.{f}")),
    );
    want.extend(POSITION.map(|p| format!("rewind.before.{p}")));
    want.extend(POSITION.map(|p| format!("rewind.after.{p}")));
    want.extend(
        [
            "first_lsn",
            "last_lsn",
            "records",
            "bytes",
            "epochs",
            "committed_records",
        ]
        .map(|f| format!("rewind.cut.{f}")),
    );
    want.extend(
        ["epoch", "first_lsn", "last_lsn", "records"].map(|f| format!("rewind.cut.epochs[].{f}")),
    );
    let got = schema(&[
        "rejoin",
        s(&replica.root),
        "--from",
        s(&primary.root),
        "--yes",
    ]);
    // verify: the verify command's document, run on the same directory afterwards.
    want.extend(
        schema(&["verify", s(&replica.root)])
            .into_iter()
            .filter(|p| !ENVELOPE.contains(&p.as_str()))
            .map(|p| format!("verify.{p}")),
    );
    assert_eq!(got, want.into_iter().collect());
}
