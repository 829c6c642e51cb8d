//! The `walship-fault` binary: exit codes and output of `matrix` and `sim`.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walship-fault"))
}

#[test]
fn matrix_fails_when_a_spec_id_has_no_scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("failure-matrix.md");
    std::fs::write(
        &spec,
        "| ID | Failure | State | Required | Test |\n|---|---|---|---|---|\n\
         | FM-6.2 | gap | history incomplete | halt gap | x |\n\
         | FM-99.1 | a failure nobody wrote a scenario for | any | halt | untested |\n",
    )
    .expect("write spec");
    let out = bin()
        .args(["matrix", "--spec"])
        .arg(&spec)
        .output()
        .expect("run walship-fault");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FM-99.1 |") && stdout.contains("NO SCENARIO"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FM-6.2 |") && stdout.contains("| pass"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "1/2 IDs pass (1 fail, 0 of them for a missing feature, 1 without a scenario)"
        ),
        "{stdout}"
    );
}

#[test]
fn sim_prints_seed_summary_and_totals_and_rejects_bad_ranges() {
    let out = bin()
        .args(["sim", "--seeds", "5..7", "--steps", "40"])
        .output()
        .expect("run walship-fault");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("seed      5: ok") && stdout.contains("seed      6: ok"),
        "{stdout}"
    );
    assert!(stdout.contains("2 seeds, 0 failed"), "{stdout}");
    let bad = bin()
        .args(["sim", "--seeds", "9..3"])
        .output()
        .expect("run walship-fault");
    assert_eq!(bad.status.code(), Some(2));
}
