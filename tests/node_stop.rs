//! A node that stops must not keep running: `walship node` exits non-zero with the reason
//! when its own storage fails (FM-X.5 on a primary, FM-X.4 on a replica), instead of
//! staying up as a zombie no supervisor restarts. The fsync failures are injected with the
//! `fault-injection` build's `WALSHIP_FAULT_FAIL_SYNCS` variable.
#![cfg(feature = "fault-injection")]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Generous bound that turns a node that never exits (the bug) into a test failure
/// instead of a hang; the test never asserts on timing.
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills the child if the test ends early.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Node {
    /// Waits for the process to exit on its own.
    fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: the node is still running (a zombie)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }
}

fn free_udp_port() -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("addr").port()
}

fn write_config(dir: &Path, node: &str, role: &str) -> std::path::PathBuf {
    let text = format!(
        "node_id = \"{node}\"\ncluster_id = \"t\"\ndata_dir = \"{data}\"\n{role}\n[tls]\nca = \"{certs}/ca.pem\"\ncert = \"{certs}/{node}.pem\"\nkey = \"{certs}/{node}.key\"\n",
        data = dir.join(node).display(),
        certs = dir.join("certs").display(),
    );
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn(config: &Path, append_stdin: bool, fail_syncs: Option<&Path>) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walship"));
    cmd.arg("node").arg("--config").arg(config);
    if append_stdin {
        cmd.arg("--append-stdin");
    }
    if let Some(p) = fail_syncs {
        cmd.env("WALSHIP_FAULT_FAIL_SYNCS", p);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn walship node");
    Node(child)
}

#[test]
fn fm_x_5_primary_whose_wal_fsync_fails_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    walship::wire::certs::generate(&dir.path().join("certs"), &["n1".to_string()]).expect("certs");
    let port = free_udp_port();
    let config = write_config(
        dir.path(),
        "n1",
        &format!("role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\"]\nquorum = 0\n"),
    );
    let wal = dir.path().join("n1").join("wal");
    let mut node = spawn(&config, true, Some(&wal));
    // stdin stays open: the process must exit because it stopped, not because input ended.
    let mut stdin = node.0.stdin.take().expect("stdin");
    stdin.write_all(b"first record\n").expect("write stdin");
    stdin.flush().expect("flush");
    let status = node.wait_exit("primary after a failed fsync");
    drop(stdin);
    assert!(!status.success(), "exit status {status}");
    let mut stdout = String::new();
    if let Some(mut o) = node.0.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut stdout).expect("stdout");
    }
    assert!(
        stdout.contains("error") && !stdout.contains("committed"),
        "the append is refused, never acknowledged: {stdout}"
    );
    let stderr = node.stderr();
    assert!(
        stderr.contains("walship: primary n1 stopped: the WAL failed"),
        "{stderr}"
    );
    assert!(stderr.contains("sync_data"), "{stderr}");
    assert!(
        !stderr.contains("exiting without waiting"),
        "the stopped primary is shut down before the process exits: {stderr}"
    );
}

#[test]
fn fm_x_4_replica_whose_wal_fsync_fails_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    walship::wire::certs::generate(
        &dir.path().join("certs"),
        &["n1".to_string(), "n2".to_string()],
    )
    .expect("certs");
    let port = free_udp_port();
    let primary_config = write_config(
        dir.path(),
        "n1",
        &format!("role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\", \"n2\"]\nquorum = 0\n"),
    );
    let replica_config = write_config(
        dir.path(),
        "n2",
        &format!(
            "role = \"replica\"\nprimary_addr = \"127.0.0.1:{port}\"\nprimary_name = \"n1\"\n"
        ),
    );
    let mut primary = spawn(&primary_config, true, None);
    let mut stdin = primary.0.stdin.take().expect("stdin");
    stdin.write_all(b"one\ntwo\nthree\n").expect("write stdin");
    stdin.flush().expect("flush");
    let wal = dir.path().join("n2").join("wal");
    let mut replica = spawn(&replica_config, false, Some(&wal));
    let status = replica.wait_exit("replica after a failed fsync");
    assert!(!status.success(), "exit status {status}");
    let stderr = replica.stderr();
    assert!(stderr.contains("walship: replica n2 stopped"), "{stderr}");
    assert!(stderr.contains("sync_data"), "{stderr}");
    // The primary is unaffected and still running.
    assert!(primary.0.try_wait().expect("try_wait").is_none());
    drop(stdin);
}
