//! Failover under a real network partition (issue 12): `walship partition-drill` runs three
//! `walship node` members on 127.0.0.1, 127.0.0.2 and 127.0.0.3 under continuous
//! `POST /append`, cuts the primary off from the other two with iptables rules that drop
//! UDP between their addresses (HTTP stays reachable), and deletes the rules again. The
//! drill checks, and this test checks its report: the old primary steps down (its lease
//! lapses) and acknowledges nothing sent to it during the partition nor anything after it
//! stepped down; the majority elects a new primary in a higher epoch and acknowledges
//! appends; after the heal the old primary follows the new one (by itself, or after
//! halting `divergence` on a tentative tail and `walship-recover rejoin`), nobody else
//! halts; every acknowledged append is in every member's log and `walship-recover diff`
//! finds the logs identical.
//!
//! Needs root and a working iptables (with the `comment` match); otherwise the test prints
//! why it skips and passes, as fault-tests/tests/real_partition.rs does. The drill deletes
//! its rules when it ends, also on failure; each run's rules carry a comment of their own.

use std::process::Command;

/// Runs a command; Err carries its stderr.
fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Root, iptables that can add and delete a rule like the drill's, and the loopback
/// addresses the members bind; or why not.
fn preconditions() -> Result<(), String> {
    let uid = sh(&["id", "-u"]).map_err(|e| format!("cannot tell the user id: {e}"))?;
    if uid.trim() != "0" {
        return Err(format!("needs root for iptables (uid {})", uid.trim()));
    }
    let comment = format!("walship-partition-probe-{}", std::process::id());
    // Matches nothing anyone sends: UDP from and to 127.0.0.254, port 9.
    let rule = [
        "-p",
        "udp",
        "-s",
        "127.0.0.254",
        "-d",
        "127.0.0.254",
        "--dport",
        "9",
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "DROP",
    ];
    let with = |op: &'static str| {
        let mut args = vec!["iptables", "-w", "5", op, "INPUT"];
        args.extend_from_slice(&rule);
        sh(&args)
    };
    with("-I").map_err(|e| format!("iptables cannot add a rule here: {e}"))?;
    with("-D").map_err(|e| format!("iptables cannot delete its probe rule: {e}"))?;
    for ip in ["127.0.0.2", "127.0.0.3"] {
        std::net::UdpSocket::bind((ip, 0))
            .map_err(|e| format!("cannot bind loopback address {ip}: {e}"))?;
    }
    Ok(())
}

#[test]
fn partition_of_the_primary_elects_a_new_one_the_old_one_acknowledges_nothing_and_rejoins_after_heal(
) {
    if let Err(why) = preconditions() {
        println!("partition_processes: skipped: {why}");
        eprintln!("partition_processes: skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["partition-drill", "--dir"])
        .arg(tmp.path())
        .args(["--appends", "200", "--election-timeout-ms", "500"])
        .output()
        .expect("run walship partition-drill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let kept = tmp.keep();
        panic!(
            "partition drill failed ({}): {stderr}\nmember logs are in {}",
            out.status,
            kept.display()
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stderr}"));
    eprintln!("{stderr}");
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report:#}"))
    };
    // The old primary acknowledged nothing from the partition on.
    assert_eq!(n("old_primary_acks_sent_in_partition"), 0, "{report:#}");
    assert_eq!(n("old_primary_acks_after_step_down"), 0, "{report:#}");
    // It stepped down (a generous bound: the lease is 500 ms).
    assert!(n("step_down_ms") < 10_000, "{report:#}");
    // A new primary in a higher epoch, and appends through it.
    assert_ne!(report["new_primary"], report["old_primary"], "{report:#}");
    assert!(n("new_epoch") > n("old_epoch"), "{report:#}");
    assert!(n("new_primary_acks_in_partition") >= 200, "{report:#}");
    // Back after the heal, one way or the other; nothing lost.
    let heal = report["heal"].as_str().unwrap_or_default();
    assert!(heal == "follower" || heal == "rejoined", "{report:#}");
    assert_eq!(n("missing"), 0, "acknowledged appends lost: {report:#}");
    assert!(n("acknowledged") >= 600, "{report:#}");
    let ends: Vec<u64> = report["log_ends"]
        .as_object()
        .expect("log ends")
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect();
    assert!(
        ends.len() == 3 && ends.windows(2).all(|w| w[0] == w[1]),
        "members converged: {ends:?}"
    );
    // The drill also ran `walship-recover diff` over every pair of logs (it fails otherwise).
    println!(
        "partition_processes: {} cut off in epoch {}: stepped down after {} ms (lease {} ms); {} primary of epoch {} after {} ms, first append acknowledged after {} ms; heal: {} ({} ms); {} appends acknowledged, none lost",
        report["old_primary"],
        n("old_epoch"),
        n("step_down_ms"),
        n("lease_ms"),
        report["new_primary"],
        n("new_epoch"),
        n("election_ms"),
        n("first_ack_new_primary_ms"),
        heal,
        n("back_ms"),
        n("acknowledged")
    );
}
