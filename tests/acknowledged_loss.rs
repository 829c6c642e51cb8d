//! The scenario with the real binaries (FM-X.6): a single-node primary
//! (`members = ["n1"]`, `quorum = 0`) acknowledges 10 records, then the last record is
//! damaged on disk; the restart must refuse (never hand out lsn 10 again), and
//! `walship-recover verify` must report it (exit 3).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use walship_recovery::cli::{Command as RecoverCommand, Common};
use walship_recovery::exit::Exit;
use walship_recovery::{run, Env};

fn walship() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walship"))
}

/// `walship node --config CONFIG --append-stdin` with piped stdin, stdout and stderr.
fn spawn_appending_node(config: &Path) -> Child {
    walship()
        .arg("node")
        .arg("--config")
        .arg(config)
        .arg("--append-stdin")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn walship node")
}

/// `walship node --config CONFIG --append-stdin` fed `lines`, then stdin closes (the node
/// shuts down cleanly once every line was answered).
fn node_append(config: &Path, lines: &[&str]) -> Output {
    let mut child = spawn_appending_node(config);
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for l in lines {
            // The node may already have exited (a refused open): a broken pipe is its answer.
            if writeln!(stdin, "{l}").is_err() {
                break;
            }
        }
    }
    child.wait_with_output().expect("wait for walship node")
}

/// A single-node quorum-0 primary's config (and its certificates) in `root`.
fn single_node_config(root: &Path) -> PathBuf {
    let certs = walship()
        .args(["certs", "--nodes", "n1", "--out"])
        .arg(root.join("certs"))
        .output()
        .expect("run walship certs");
    assert!(
        certs.status.success(),
        "{}",
        String::from_utf8_lossy(&certs.stderr)
    );
    let config = root.join("n1.toml");
    std::fs::write(
        &config,
        "node_id = \"n1\"\ncluster_id = \"c\"\nrole = \"primary\"\ndata_dir = \"data/n1\"\n\
         listen_addr = \"127.0.0.1:0\"\nmembers = [\"n1\"]\nquorum = 0\n\
         [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/n1.pem\"\nkey = \"certs/n1.key\"\n",
    )
    .expect("write config");
    config
}

fn last_segment(data_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

fn recover_verify(dir: &Path) -> (Exit, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = {
        let mut env = Env::non_interactive(&mut out, &mut err);
        run(
            RecoverCommand::Verify {
                dir: dir.to_path_buf(),
                common: Common {
                    json: false,
                    max_record_bytes: walship_wal::record::DEFAULT_MAX_RECORD_BYTES,
                },
            },
            &mut env,
        )
    };
    (
        exit,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// A single-node quorum-0 primary that acknowledged records 1..=10 and shut down cleanly
/// (`state/commit` = 10, `verify` clean); returns its config and data directory.
fn acknowledged_ten(root: &Path) -> (PathBuf, PathBuf) {
    let config = single_node_config(root);
    let data_dir = root.join("data/n1");
    let lines: Vec<String> = (1..=10).map(|i| format!("record {i}")).collect();
    let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let first = node_append(&config, &line_refs);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("committed 10"), "{stdout}");
    let (exit, out, err) = recover_verify(&data_dir);
    assert_eq!(exit, Exit::Ok, "healthy after a clean shutdown: {out}{err}");
    (config, data_dir)
}

/// Applies `damage` to the last written (non-zero) byte of the newest segment: record 10's
/// last payload byte (the rest of the preallocated segment is zeros).
fn damage_last_written_byte(data_dir: &Path, damage: impl FnOnce(u8) -> u8) {
    let seg = last_segment(data_dir);
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let last = bytes.iter().rposition(|&b| b != 0).expect("a written byte");
    bytes[last] = damage(bytes[last]);
    std::fs::write(&seg, &bytes).expect("write segment");
}

/// The restart is refused (non-zero exit, no lsn handed out); returns its stderr.
fn restart_is_refused(config: &Path) -> String {
    let second = node_append(config, &["must not become lsn 10"]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(
        !second.status.success(),
        "restart must be refused: {stdout}{stderr}"
    );
    assert!(
        !stdout.contains("committed"),
        "an lsn was handed out: {stdout}"
    );
    stderr
}

/// The exact scenario: one bit of the synced, acknowledged record 10 flips. In a
/// preallocated (version 2) segment no torn write into zeros can leave a set bit that one
/// flip explains, so the WAL scan itself reports corruption at lsn 10 (row 3c of
/// spec/wal-format.md) and the node refuses to start with every byte kept.
#[test]
fn fm_x_6_single_node_primary_with_a_flipped_bit_in_its_last_record_refuses_to_restart() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (config, data_dir) = acknowledged_ten(tmp.path());
    damage_last_written_byte(&data_dir, |b| b ^ 0x01);
    let before = std::fs::read(last_segment(&data_dir)).expect("read segment");

    let stderr = restart_is_refused(&config);
    assert!(
        stderr.contains("corruption") && stderr.contains("(lsn 10)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(last_segment(&data_dir)).expect("read segment"),
        before,
        "the refused open changed the segment"
    );

    let (exit, out, err) = recover_verify(&data_dir);
    assert_eq!(exit, Exit::Corruption, "{out}{err}");
    assert_eq!(exit.code(), 3);
}

/// Damage the scan cannot tell from a torn write (record 10's last byte zeroed, as if its
/// last sector never reached the disk): the WAL would cut it, and the node refuses because
/// the log would end below the persisted commit watermark, naming both lsns.
#[test]
fn fm_x_6_single_node_primary_whose_last_record_reads_as_torn_refuses_to_restart_naming_both_lsns()
{
    let tmp = tempfile::tempdir().expect("temp dir");
    let (config, data_dir) = acknowledged_ten(tmp.path());
    damage_last_written_byte(&data_dir, |_| 0);
    let damaged = std::fs::read(last_segment(&data_dir)).expect("read segment");

    let stderr = restart_is_refused(&config);
    assert!(
        stderr.contains("acknowledged records lost: log ends at lsn 9, commit watermark 10"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--to 9 --accept-data-loss"),
        "the error names the way out: {stderr}"
    );
    assert!(
        std::fs::read(last_segment(&data_dir)).expect("read segment") == damaged,
        "the refused start must keep every byte of the damaged record"
    );

    let (exit, out, err) = recover_verify(&data_dir);
    assert_eq!(exit, Exit::Corruption, "{out}{err}");
    assert_eq!(exit.code(), 3);
    assert!(
        out.contains("CORRUPT: acknowledged records lost: log ends at lsn 9, commit watermark 10"),
        "{out}"
    );

    // The operator's way out: accept the loss, then the node starts and lsn 10 is new.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = {
        let mut env = Env::non_interactive(&mut out, &mut err);
        run(
            RecoverCommand::Rewind {
                dir: data_dir.clone(),
                to: 9,
                accept_data_loss: true,
                yes: true,
                common: Common {
                    json: false,
                    max_record_bytes: walship_wal::record::DEFAULT_MAX_RECORD_BYTES,
                },
            },
            &mut env,
        )
    };
    assert_eq!(
        exit,
        Exit::Ok,
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    let (exit, out, err) = recover_verify(&data_dir);
    assert_eq!(exit, Exit::Ok, "after the rewind: {out}{err}");
    let third = node_append(&config, &["after the rewind"]);
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(
        third.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert!(stdout.contains("committed 10"), "{stdout}");
}

#[test]
fn sigterm_while_appending_from_stdin_shuts_down_cleanly_and_persists_the_commit_watermark() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = single_node_config(tmp.path());
    let mut child = spawn_appending_node(&config);
    // stdin stays open: the node is stopped by the signal, not by end of input.
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 1..=5 {
        writeln!(stdin, "record {i}").expect("write stdin");
    }
    stdin.flush().expect("flush stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("read stdout");
        assert!(n > 0, "the node exited before committing 5: {seen}");
        seen.push_str(&line);
        if line.trim() == "committed 5" {
            break;
        }
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) with a pid this test spawned and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");
    let out = child.wait_with_output().expect("wait for walship node");
    drop(stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commit =
        walship_wal::state::NodeDir::open(walship_wal::FsStorage, &tmp.path().join("data/n1"))
            .expect("node dir")
            .commit_lsn()
            .expect("state/commit");
    assert_eq!(
        commit, 5,
        "a clean shutdown persists the final commit watermark"
    );
}
