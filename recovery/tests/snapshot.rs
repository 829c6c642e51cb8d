//! `snapshot create|verify`, and snapshots in `verify`/`inspect`.

mod common;

use common::{recover_json, s, Node};

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

/// A node with 20 records (commit 15) and an embedder state file of 1000 bytes.
fn node_with_state() -> (Node, std::path::PathBuf) {
    let n = Node::new();
    n.append_n(1, 10, "a");
    n.append_n(2, 10, "b");
    n.set_commit(15);
    let state = n.tmp.path().join("state.bin");
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&state, bytes).expect("state file");
    (n, state)
}

fn create(n: &Node, state: &std::path::Path, lsn: &str) -> (i32, serde_json::Value, String) {
    recover_json(&[
        "snapshot",
        "create",
        s(&n.root),
        "--state",
        s(state),
        "--lsn",
        lsn,
        "--chunk-size-bytes",
        "128",
    ])
}

#[test]
fn snapshot_create_installs_a_verified_snapshot_at_the_wal_position() {
    let (n, state) = node_with_state();
    let (code, v, err) = create(&n, &state, "12");
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(json_str(&v, "/command"), "snapshot-create");
    let (_, dump, _) = recover_json(&["dump", s(&n.root), "--from", "12", "--to", "12"]);
    assert_eq!(json_u64(&v, "/boundary/lsn"), 12);
    assert_eq!(json_u64(&v, "/boundary/epoch"), 2);
    assert_eq!(
        json_u64(&v, "/boundary/crc"),
        json_u64(&dump, "/records/0/crc")
    );
    assert_eq!(json_str(&v, "/snapshot/verified"), "full");
    assert_eq!(json_u64(&v, "/snapshot/payload_bytes"), 1000);
    assert_eq!(v["snapshot"]["ok"], true);

    let (code, v, _) = recover_json(&["snapshot", "verify", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/snapshot_wal/state"), "consistent");
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/snapshots/0/kind"), "installed");
    assert_eq!(json_str(&v, "/snapshots/0/verified"), "full");
    let (code, v, _) = recover_json(&["inspect", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/snapshots/0/verified"), "header");
    assert_eq!(json_u64(&v, "/snapshot_wal/boundary/lsn"), 12);

    let audit = std::fs::read_to_string(n.state_dir().join("audit.log")).expect("audit");
    let phases: Vec<String> = audit
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).expect("json");
            format!("{}:{}", json_str(&e, "/action"), json_str(&e, "/phase"))
        })
        .collect();
    assert_eq!(
        phases,
        vec!["snapshot-create:intent", "snapshot-create:done"]
    );

    // A newer snapshot replaces it; an older one is refused.
    let (code, v, _) = create(&n, &state, "14");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["removed_older"][0], "00000000000000000012");
    let (code, _, err) = create(&n, &state, "13");
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("newer snapshot"), "{err}");
}

#[test]
fn snapshot_create_above_the_commit_watermark_or_outside_the_wal_is_refused() {
    let (n, state) = node_with_state();
    let before = n.snapshot_files();
    let (code, v, err) = create(&n, &state, "16");
    assert_eq!(code, 6, "{v}");
    assert!(err.contains("commit watermark"), "{err}");
    let (code, _, err) = create(&n, &state, "40");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not in the WAL"), "{err}");
    let missing = n.tmp.path().join("missing.bin");
    let (code, _, err) = create(&n, &missing, "10");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the state file"), "{err}");
    assert_eq!(n.snapshot_files(), before, "refusals change nothing");
}

#[test]
fn a_damaged_snapshot_payload_is_found_by_verify_and_snapshot_verify() {
    let (n, state) = node_with_state();
    let (code, _, err) = create(&n, &state, "12");
    assert_eq!(code, 0, "{err}");
    let file = n.root.join("snapshots/00000000000000000012/snapshot");
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&file, &bytes).expect("write");
    let before = n.snapshot_files();
    for args in [
        vec!["snapshot", "verify", s(&n.root)],
        vec!["verify", s(&n.root)],
    ] {
        let (code, v, _) = recover_json(&args);
        assert_eq!(code, 3, "{args:?} {v}");
        assert_eq!(v["snapshots"][0]["ok"], false, "{v}");
        assert!(
            json_str(&v, "/snapshots/0/error").contains("snapshot"),
            "{v}"
        );
    }
    assert_eq!(n.snapshot_files(), before, "verification changed nothing");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

#[test]
fn a_snapshot_the_wal_disagrees_with_is_a_mismatch() {
    let (n, state) = node_with_state();
    let (code, _, err) = create(&n, &state, "12");
    assert_eq!(code, 0, "{err}");
    let snap = n.root.join("snapshots/00000000000000000012");

    // A node whose WAL ends below the boundary: an interrupted install, which the node completes.
    let short = Node::new();
    short.append_n(1, 10, "a");
    copy_dir(&snap, &short.root.join("snapshots/00000000000000000012"));
    let (code, v, _) = recover_json(&["snapshot", "verify", s(&short.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/snapshot_wal/state"), "install-interrupted");

    // A node with a different history through the boundary lsn: the snapshot does not match.
    let other = Node::new();
    other.append_n(1, 10, "a");
    other.append_n(3, 5, "other");
    copy_dir(&snap, &other.root.join("snapshots/00000000000000000012"));
    let (code, v, _) = recover_json(&["snapshot", "verify", s(&other.root)]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(json_str(&v, "/snapshot_wal/state"), "mismatch");
    assert_eq!(json_u64(&v, "/snapshot_wal/wal_at_boundary/epoch"), 3);
    let (code, _, _) = recover_json(&["inspect", s(&other.root)]);
    assert_eq!(code, 3);
}

#[test]
fn rewind_below_an_installed_snapshot_is_refused() {
    let (n, state) = node_with_state();
    let (code, _, err) = create(&n, &state, "12");
    assert_eq!(code, 0, "{err}");
    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&[
        "rewind",
        s(&n.root),
        "--to",
        "11",
        "--yes",
        "--accept-data-loss",
    ]);
    assert_eq!(code, 6, "{v}");
    assert!(err.contains("snapshot"), "{err}");
    assert_eq!(n.snapshot_files(), before);
    let (code, v, _) = recover_json(&["rewind", s(&n.root), "--to", "15", "--yes"]);
    assert_eq!(code, 0, "at or above the boundary is fine: {v}");
}

#[test]
fn temporary_snapshot_directories_are_listed_and_left_alone_by_read_only_commands() {
    let (n, _) = node_with_state();
    let tmp = n.root.join("snapshots/tmp-00000000000000000000-7");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    std::fs::write(tmp.join("snapshot"), b"partial").expect("partial");
    let (code, v, _) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(json_str(&v, "/snapshots/0/kind"), "temporary");
    let (code, _, _) = recover_json(&["snapshot", "verify", s(&n.root)]);
    assert_eq!(code, 0);
    assert!(
        tmp.join("snapshot").exists(),
        "not discarded by a read-only command"
    );
}

#[test]
fn clear_halt_is_refused_while_an_installed_snapshot_is_damaged() {
    let (n, state) = node_with_state();
    let (code, _, err) = create(&n, &state, "12");
    assert_eq!(code, 0, "{err}");
    let rec = walship_replica::halt::HaltRecord {
        reason: walship_replica::halt::HaltReason::SnapshotInvalid,
        lsn: 12,
        epoch: 2,
        expected: "payload crc".into(),
        found: "other".into(),
        peer: "n1".into(),
        at_unix_ms: 1,
        detail: String::new(),
    };
    walship_replica::halt::write_halt(&walship_wal::FsStorage, &n.state_dir(), &rec).expect("halt");
    let file = n.root.join("snapshots/00000000000000000012/snapshot");
    let mut bytes = std::fs::read(&file).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&file, &bytes).expect("write");
    let (code, v, _) = recover_json(&["clear-halt", s(&n.root)]);
    assert_eq!(code, 6, "{v}");
    let snap_check = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "snapshots-verify")
        .expect("snapshot check");
    assert_eq!(snap_check["passed"], false, "{v}");
    assert!(n.state_dir().join("halt").exists());
}
