//! The README's main job: `walship demo` end to end, as a newcomer runs it.

use std::process::Command;

fn walship() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walship"))
}

#[test]
fn demo_replicates_halts_the_corrupted_replica_keeps_the_other_streaming_and_fails_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let out = walship()
        .args(["demo", "--records", "1500", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run walship demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // 1500 records before the fault plus 200 after it.
    assert!(stdout.contains("records committed     1700"), "{stdout}");
    assert!(stdout.contains("streaming, caught up"), "{stdout}");
    assert!(
        stdout.contains("n3 halted: reason checksum, at lsn 1501"),
        "{stdout}"
    );
    // Act 3: the elected primary is killed, another member is elected, nothing is lost.
    assert!(stdout.contains("was killed with SIGKILL"), "{stdout}");
    assert!(stdout.contains("won epoch"), "{stdout}");
    assert!(
        stdout.contains(", 0 missing from any member's log"),
        "{stdout}"
    );
    // The data directories stay behind, with the victim's durable halt record.
    for node in ["n1", "n2", "n3"] {
        assert!(data.join(node).join("wal").is_dir(), "{node} has no wal/");
    }
    let halt = walship_node::replica::halt::read_halt(
        &walship_wal::storage::FsStorage,
        &data.join("n3").join("state"),
    )
    .expect("read halt file")
    .expect("n3 is halted");
    assert_eq!(halt.reason, walship_node::replica::HaltReason::Checksum);
    assert_eq!(halt.lsn, 1501);
    assert_eq!(halt.peer, "n1");
    assert!(
        walship_node::replica::halt::read_halt(
            &walship_wal::storage::FsStorage,
            &data.join("n2").join("state")
        )
        .expect("read n2 halt file")
        .is_none(),
        "n2 must not halt"
    );
}

#[test]
fn demo_refuses_a_non_empty_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("something"), b"x").expect("write");
    let out = walship()
        .args(["demo", "--records", "10", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run walship demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
}
