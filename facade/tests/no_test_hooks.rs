//! The facade is what embedders depend on: its dependency graph must never turn on a
//! demo/test-only hook (walship-primary's `fault-injection`, which adds `inject_fault` to
//! `Primary`). Checked with cargo's own resolver on this package alone, as an embedder's
//! build would resolve it.

use std::process::Command;

/// walship-primary's features when `package` alone is built (normal dependencies only).
fn primary_features_when_building(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "-f",
            "{p} [{f}]",
        ])
        .args([
            "--manifest-path",
            manifest,
            "-p",
            package,
            "-i",
            "walship-primary",
        ])
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cargo tree failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with("walship-primary "), "{stdout}");
    first
}

#[test]
fn facade_never_enables_the_fault_injection_hook_only_the_walship_binary_does() {
    let facade = primary_features_when_building("walship");
    assert!(!facade.contains("fault-injection"), "{facade}");
    // The demo binary needs it (it arms `inject_fault`), and only it.
    let binary = primary_features_when_building("walship-cli");
    assert!(binary.contains("fault-injection"), "{binary}");
}
