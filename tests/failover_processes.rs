//! Failover with real processes (issue 12): `walship failover-drill` runs three and five
//! `walship node` members on loopback under continuous `POST /append`, kills the primary
//! with SIGKILL `WALSHIP_FAILOVER_KILLS` times (default 2; raise it for hundreds), and
//! restarts it each time (with `walship-recover rejoin` when it halts `divergence` on a
//! tentative tail). Afterwards every acknowledged append is in every member's log, each
//! epoch had one primary, and `walship-recover diff` finds the members' logs identical (the
//! drill runs it and fails otherwise).

use std::path::Path;
use std::process::Command;

fn kills() -> usize {
    std::env::var("WALSHIP_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn drill(dir: &Path, nodes: usize, kills: usize) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["failover-drill", "--dir"])
        .arg(dir)
        .args([
            "--nodes",
            &nodes.to_string(),
            "--kills",
            &kills.to_string(),
            "--appends-between",
            "100",
        ])
        .output()
        .expect("run walship failover-drill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "drill failed ({}): {stderr}\nmember logs are in {}",
        out.status,
        dir.display()
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stderr}"))
}

fn check(nodes: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let kills = kills();
    let report = drill(tmp.path(), nodes, kills);
    assert_eq!(
        report["missing"], 0,
        "acknowledged appends lost: {report:#}"
    );
    let done = report["kills"].as_array().expect("kills").len();
    assert_eq!(done, kills, "{report:#}");
    assert!(
        report["acknowledged"].as_u64().unwrap_or(0) >= 100 * (kills as u64 + 1),
        "{report:#}"
    );
    // One primary per epoch (the drill refuses two), and one new epoch per kill at least.
    let epochs = report["epochs"].as_object().expect("epochs");
    assert!(epochs.len() > kills, "{report:#}");
    let ends: Vec<u64> = report["log_ends"]
        .as_object()
        .expect("log ends")
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0] == w[1]),
        "members converged: {ends:?}"
    );
}

#[test]
fn three_members_survive_repeated_kill_9_of_the_primary_without_losing_an_acknowledged_append() {
    check(3);
}

#[test]
fn five_members_survive_repeated_kill_9_of_the_primary_without_losing_an_acknowledged_append() {
    check(5);
}
