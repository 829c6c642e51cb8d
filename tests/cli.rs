//! `walship node` and `walship certs` on bad input: one clear line, non-zero exit.

use std::process::Command;

fn walship() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walship"))
}

#[test]
fn node_with_a_missing_config_fails_with_one_line() {
    let out = walship()
        .args(["node", "--config", "/nonexistent/node.toml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read config /nonexistent/node.toml"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn node_with_an_invalid_config_names_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "node_id = \"n1\"\ncluster_id = \"c\"\nrole = \"primary\"\ndata_dir = \"d\"\nlisten_addr = \"127.0.0.1:1\"\nmembers = [\"n1\", \"n2\"]\nquorum = 5\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
    )
    .expect("write");
    let out = walship()
        .arg("node")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("field `quorum`"), "{stderr}");
    // Nothing was created: the data directory is opened only after validation.
    assert!(!dir.path().join("d").exists());
}

#[test]
fn node_with_garbage_config_fails_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, [0xff, 0x00, 0x13, 0x37]).expect("write");
    let out = walship()
        .arg("node")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn certs_writes_a_ca_and_node_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = walship()
        .args(["certs", "--nodes", "n1,n2", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.pem", "ca.key", "n1.pem", "n1.key", "n2.pem", "n2.key"] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let again = walship()
        .args(["certs", "--nodes", "n1", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!again.status.success(), "overwrote existing certificates");
}
