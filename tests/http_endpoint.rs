//! The per-node HTTP endpoint (`spec/http.md`) on real `walship node` processes over
//! loopback: `/status`, the `/primary` and `/replica` health checks on both roles, `POST
//! /append` (200 committed, 413 above the record limit, 503 not-primary with the hint on a
//! replica, 504 commit timeout), `/metrics` line by line, a halted replica (the demo's
//! corrupted record) reporting `halted`, and a busy `http_addr` failing the start.
//!
//! The client is a few lines of HTTP/1.1 over `TcpStream` (`Connection: close`), so the
//! tests see exactly the status line, headers and body the endpoint sends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous bound that turns a node that never gets there into a test failure instead of a
/// hang; nothing is asserted on timing.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `walship` child process whose stderr is collected by a thread; killed if the test ends early.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(args: &[&str], log: &str) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walship"));
        cmd.args(args);
        Proc::spawn_command(cmd, log)
    }

    fn spawn_command(mut cmd: Command, log: &str) -> Proc {
        let mut child = cmd
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn walship");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let mut s = sink.lock().expect("stderr lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc { child, stderr }
    }

    fn node(config: &Path) -> Proc {
        let config = config.to_str().expect("utf-8 path");
        Proc::spawn(&["node", "--config", config], "info")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The address the node's log says its endpoint is bound to.
    fn http_addr(&mut self) -> String {
        let start = Instant::now();
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|l| l.contains("http endpoint listening")) {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .expect("the log line names addr=");
                return addr.to_string();
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the node exited ({status}) before its endpoint listened:\n{log}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no endpoint after {DEADLINE:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "still running after SIGTERM:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_udp_port() -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("addr").port()
}

/// Writes `DIR/NODE.toml`: the common keys, `role_lines` (top-level), then the tables.
fn write_config(dir: &Path, node: &str, role_lines: &str, tables: &str) -> PathBuf {
    let text = format!(
        "node_id = \"{node}\"\ncluster_id = \"t\"\ndata_dir = \"{data}\"\n{role_lines}\n[tls]\nca = \"{certs}/ca.pem\"\ncert = \"{certs}/{node}.pem\"\nkey = \"{certs}/{node}.key\"\n{tables}",
        data = dir.join(node).display(),
        certs = dir.join("certs").display(),
    );
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn certs(dir: &Path, nodes: &[&str]) {
    let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    walship::wire::certs::generate(&dir.join("certs"), &nodes).expect("certs");
}

/// One HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body`, reads the
/// whole response (`Connection: close`).
fn exchange(addr: &str, head: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    s.write_all(format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("write head");
    // The server may answer (and close) before it read the body: a refused write is fine.
    let _ = s.write_all(body);
    read_reply(&mut s)
}

fn read_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line}"));
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).expect("hex"), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

fn get(addr: &str, path: &str) -> Reply {
    exchange(addr, &format!("GET {path} HTTP/1.1"), b"")
}

fn append(addr: &str, body: &[u8]) -> Reply {
    exchange(
        addr,
        &format!("POST /append HTTP/1.1\r\nContent-Length: {}", body.len()),
        body,
    )
}

/// Polls `GET path` until `ok` holds for the reply.
fn wait_for(addr: &str, path: &str, what: &str, ok: impl Fn(&Reply) -> bool) -> Reply {
    let start = Instant::now();
    loop {
        let r = get(addr, path);
        if ok(&r) {
            return r;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: last {path} answer {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses a Prometheus text exposition line by line: every line is `# HELP name text`,
/// `# TYPE name gauge|counter|histogram`, or `name{label="value",...} value` / `name value`
/// of a family typed before it (a histogram's `name_bucket`, `name_sum`, `name_count`).
/// Returns each series (`name{labels}` as written) with its value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut typed = std::collections::HashSet::new();
    let mut histograms = std::collections::HashSet::new();
    let mut helped = std::collections::HashSet::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name) && !help.is_empty(), "bad HELP line {line:?}");
            assert!(helped.insert(name.to_string()), "{name} has two HELP lines");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "bad TYPE line {line:?}");
            assert!(
                ["gauge", "counter", "histogram"].contains(&kind),
                "{line:?}"
            );
            if kind == "histogram" {
                histograms.insert(name.to_string());
            }
            assert!(typed.insert(name.to_string()), "{name} has two TYPE lines");
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "bad line {line:?}"
        );
        let (key, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let name = match key.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(is_name(k), "label name {k:?} in {line:?}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "label value {v:?} in {line:?}"
                    );
                }
                name
            }
            None => key,
        };
        assert!(is_name(name), "metric name {name:?}");
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| histograms.contains(*f))
            })
            .unwrap_or(name);
        assert!(typed.contains(name), "{name} sampled before its TYPE line");
        assert!(helped.contains(name), "{name} sampled without a HELP line");
        assert!(
            series.insert(key.to_string(), value).is_none(),
            "{key} twice"
        );
    }
    series
}

fn metrics(addr: &str) -> BTreeMap<String, f64> {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_metrics(&r.text())
}

#[test]
fn primary_and_replica_serve_status_health_checks_append_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &["n1", "n2"]);
    let port = free_udp_port();
    let wal = "[wal]\nmax_record_bytes = 1024\n";
    let n1 = write_config(
        dir.path(),
        "n1",
        &format!("role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\", \"n2\"]\nquorum = -1\nhttp_addr = \"127.0.0.1:0\""),
        wal,
    );
    let mut primary = Proc::node(&n1);
    let p = primary.http_addr();
    let n2 = write_config(
        dir.path(),
        "n2",
        &format!("role = \"replica\"\nprimary_addr = \"127.0.0.1:{port}\"\nprimary_name = \"n1\"\nhttp_addr = \"127.0.0.1:0\"\nprimary_http = \"{p}\""),
        wal,
    );
    let mut replica = Proc::node(&n2);
    let r = replica.http_addr();

    // The replica's health check turns 200 once it follows its primary over a live connection.
    let health = wait_for(&r, "/replica", "replica connected", |x| x.status == 200);
    assert_eq!(health.json()["role"], "follower");
    let status = wait_for(&p, "/status", "primary sees n2", |x| {
        x.json()["members"][0]["connected"] == true
    });
    assert_eq!(status.status, 200);
    assert_eq!(
        status.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let s = status.json();
    assert_eq!(s["node_id"], "n1");
    assert_eq!(s["role"], "primary");
    assert_eq!(s["epoch"], 1);
    assert_eq!(s["durable_lsn"], 0);
    assert_eq!(s["commit_lsn"], 0);
    assert_eq!(s["primary"], "n1");
    assert_eq!(s["primary_http"], format!("http://{p}"));
    assert_eq!(s["halt"], serde_json::Value::Null);
    assert_eq!(s["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["members"][0]["node_id"], "n2");

    // Health checks on both roles.
    assert_eq!(get(&p, "/primary").status, 200);
    assert_eq!(get(&p, "/replica").status, 503);
    let not_primary = get(&r, "/primary");
    assert_eq!(not_primary.status, 503);
    assert_eq!(not_primary.json()["role"], "follower");
    assert_eq!(get(&r, "/replica").status, 200);
    // Load balancers may probe with HEAD: same code, no body.
    let head = exchange(&p, "HEAD /primary HTTP/1.1", b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(exchange(&r, "HEAD /primary HTTP/1.1", b"").status, 503);

    // Appends on the primary answer once committed (majority: n2's receipt), in lsn order.
    let a = append(&p, b"hello");
    assert_eq!((a.status, a.json()), (200, serde_json::json!({"lsn": 1})));
    let a = append(&p, b"world");
    assert_eq!((a.status, a.json()), (200, serde_json::json!({"lsn": 2})));
    let full = vec![b'x'; 1024];
    let a = append(&p, &full);
    assert_eq!((a.status, a.json()), (200, serde_json::json!({"lsn": 3})));

    // Above max_record_bytes: 413 by Content-Length, ...
    let big = vec![b'y'; 1025];
    let a = append(&p, &big);
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["error"], "too-large");
    assert_eq!(a.json()["max_record_bytes"], 1024);
    // ... before reading the body: a client announcing 100 MB that sends nothing is answered
    // (the exchange would otherwise wait for the body until the read timeout fails it) ...
    let a = exchange(
        &p,
        "POST /append HTTP/1.1\r\nContent-Length: 100000000",
        b"",
    );
    assert_eq!(a.status, 413);
    // ... and without a length, at the limit of what is read.
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let a = exchange(
        &p,
        "POST /append HTTP/1.1\r\nTransfer-Encoding: chunked",
        &chunked,
    );
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["error"], "too-large");

    // The replica refuses appends and points at the primary.
    let a = append(&r, b"to the replica");
    assert_eq!(a.status, 503);
    assert_eq!(
        a.json(),
        serde_json::json!({"error": "not-primary", "primary": "n1", "primary_http": format!("http://{p}")})
    );

    // Nothing refused was written: the replica ends at lsn 3, and the primary sees it there.
    let rs = wait_for(&r, "/status", "replica at lsn 3", |x| {
        x.json()["durable_lsn"] == 3 && x.json()["commit_lsn"] == 3
    })
    .json();
    assert_eq!(rs["role"], "follower");
    assert_eq!(rs["primary"], "n1");
    assert_eq!(rs["primary_http"], format!("http://{p}"));
    assert_eq!(rs["connected"], true);
    assert_eq!(rs["members"], serde_json::Value::Null);
    let ps = wait_for(&p, "/status", "primary sees n2 at lsn 3", |x| {
        x.json()["members"][0]["durable_lsn"] == 3
    })
    .json();
    assert_eq!(ps["durable_lsn"], 3);
    assert_eq!(ps["commit_lsn"], 3);
    assert_eq!(ps["members"][0]["lag_records"], 0);
    // A standalone replica has no state/identity: it announces incarnation 0, and a
    // standalone primary expects any.
    assert_eq!(ps["members"][0]["incarnation"], 0);
    assert_eq!(ps["members"][0]["expected_incarnation"], 0);

    // Metrics, line by line.
    let pm = metrics(&p);
    for (series, value) in [
        ("walship_role{role=\"primary\"}", 1.0),
        ("walship_role{role=\"follower\"}", 0.0),
        ("walship_role{role=\"halted\"}", 0.0),
        ("walship_epoch", 1.0),
        ("walship_durable_lsn", 3.0),
        ("walship_commit_lsn", 3.0),
        ("walship_halted", 0.0),
        ("walship_member_connected{member=\"n2\"}", 1.0),
        ("walship_member_durable_lsn{member=\"n2\"}", 3.0),
        ("walship_member_lag_records{member=\"n2\"}", 0.0),
        ("walship_member_lag_seconds{member=\"n2\"}", 0.0),
        ("walship_paused", 0.0),
    ] {
        assert_eq!(pm.get(series), Some(&value), "{series} in {pm:?}");
    }
    // The appends above were timed, and so were the group syncs that made them durable.
    for series in [
        "walship_commit_latency_seconds_count",
        "walship_fsync_latency_seconds_count",
    ] {
        assert!(
            pm.get(series).is_some_and(|c| *c >= 1.0),
            "{series} in {pm:?}"
        );
    }
    let rm = metrics(&r);
    for (series, value) in [
        ("walship_role{role=\"follower\"}", 1.0),
        ("walship_role{role=\"primary\"}", 0.0),
        ("walship_epoch", 1.0),
        ("walship_durable_lsn", 3.0),
        ("walship_commit_lsn", 3.0),
        ("walship_halted", 0.0),
        ("walship_follower_connected", 1.0),
    ] {
        assert_eq!(rm.get(series), Some(&value), "{series} in {rm:?}");
    }
    assert!(
        rm.get("walship_fsync_latency_seconds_count")
            .is_some_and(|c| *c >= 1.0),
        "the replica synced what it stored: {rm:?}"
    );
    assert!(
        !rm.keys().any(|k| k.starts_with("walship_member_")),
        "{rm:?}"
    );

    // Unknown paths and methods.
    assert_eq!(get(&p, "/nope").status, 404);
    assert_eq!(get(&p, "/append").status, 405);

    // Both stop cleanly with their endpoints up (the endpoint gives the node back first).
    let rs = replica.terminate();
    assert!(rs.success(), "replica: {rs}\n{}", replica.stderr());
    let ps = primary.terminate();
    let log = primary.stderr();
    assert!(ps.success(), "primary: {ps}\n{log}");
    assert!(!log.contains("exiting without waiting"), "{log}");
}

#[test]
fn append_without_the_commit_quorum_answers_504_commit_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &["n1"]);
    let port = free_udp_port();
    // Majority of two members: n2's receipt is needed, and n2 never runs.
    let n1 = write_config(
        dir.path(),
        "n1",
        &format!("role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\", \"n2\"]\nquorum = -1\ncommit_timeout_ms = 200\nhttp_addr = \"127.0.0.1:0\""),
        "",
    );
    let mut primary = Proc::node(&n1);
    let p = primary.http_addr();
    let a = append(&p, b"tentative");
    assert_eq!(a.status, 504, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["error"], "commit-timeout");
    assert_eq!(a.json()["lsn"], 1);
    // Durable locally, not committed: it stays tentative above the watermark.
    let s = get(&p, "/status").json();
    assert_eq!(
        (s["durable_lsn"].clone(), s["commit_lsn"].clone()),
        (1.into(), 0.into())
    );
    assert_eq!(s["members"][0]["connected"], false);
    // Still a serving primary.
    assert_eq!(get(&p, "/primary").status, 200);
}

#[test]
fn halted_replica_reports_halted_on_status_health_checks_append_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &["n1", "n2", "n3"]);
    let port = free_udp_port();
    let n1 = write_config(
        dir.path(),
        "n1",
        &format!("role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\", \"n2\", \"n3\"]\nquorum = -1"),
        "",
    );
    // The demo's primary does not serve HTTP: the hint is only what n2/n3 are configured with.
    let hint = "127.0.0.1:9";
    let replica = |node: &str| {
        let cfg = write_config(
            dir.path(),
            node,
            &format!("role = \"replica\"\nprimary_addr = \"127.0.0.1:{port}\"\nprimary_name = \"n1\"\nhttp_addr = \"127.0.0.1:0\"\nprimary_http = \"{hint}\""),
            "",
        );
        Proc::node(&cfg)
    };
    let mut healthy = replica("n2");
    let mut victim = replica("n3");
    let (h, v) = (healthy.http_addr(), victim.http_addr());
    // The demo's primary writes 10 records, then ships a corrupted record 11 to n3 only.
    let n1 = n1.to_str().expect("utf-8 path").to_string();
    let _primary = Proc::spawn(
        &[
            "demo-primary",
            "--config",
            &n1,
            "--records",
            "10",
            "--corrupt-replica",
            "n3",
        ],
        "warn",
    );

    let s = wait_for(&v, "/status", "n3 halts", |x| x.json()["role"] == "halted").json();
    assert_eq!(s["node_id"], "n3");
    assert_eq!(s["halt"]["reason"], "checksum");
    assert_eq!(s["halt"]["lsn"], 11);
    assert_eq!(s["halt"]["peer"], "n1");
    assert_eq!(s["durable_lsn"], 10, "it keeps every record it had");
    assert_eq!(s["primary"], "n1");
    assert_eq!(
        get(&v, "/replica").status,
        503,
        "a halted replica is not healthy"
    );
    assert_eq!(get(&v, "/primary").status, 503);
    let a = append(&v, b"x");
    assert_eq!(a.status, 503);
    assert_eq!(
        a.json(),
        serde_json::json!({"error": "not-primary", "primary": "n1", "primary_http": format!("http://{hint}")})
    );
    let m = metrics(&v);
    assert_eq!(m.get("walship_halted"), Some(&1.0), "{m:?}");
    assert_eq!(m.get("walship_role{role=\"halted\"}"), Some(&1.0), "{m:?}");
    assert_eq!(
        m.get("walship_role{role=\"follower\"}"),
        Some(&0.0),
        "{m:?}"
    );
    assert_eq!(m.get("walship_durable_lsn"), Some(&10.0), "{m:?}");

    // The other replica keeps streaming past the fault and stays healthy.
    wait_for(&h, "/status", "n2 past the fault", |x| {
        x.json()["durable_lsn"].as_u64() > Some(11)
    });
    assert_eq!(get(&h, "/replica").status, 200);
    assert_eq!(metrics(&h).get("walship_halted"), Some(&0.0));

    // A halted replica keeps running (it waits for an operator) and stops cleanly.
    let status = victim.terminate();
    assert!(status.success(), "{status}\n{}", victim.stderr());
    drop(healthy);
}

#[test]
fn busy_http_addr_fails_the_start_naming_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &["n1"]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr");
    let port = free_udp_port();
    let n1 = write_config(
        dir.path(),
        "n1",
        &format!("role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\"]\nquorum = 0\nhttp_addr = \"{addr}\""),
        "",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_walship"))
        .arg("node")
        .arg("--config")
        .arg(&n1)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run walship node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("walship: http endpoint: cannot bind {addr}: ")),
        "{stderr}"
    );
    // Bound before the node opens: the data directory was never touched.
    assert!(!dir.path().join("n1").exists());
    drop(busy);
}

/// FM-X.5 through the endpoint: the append whose fsync fails is answered 503 `stopped` with
/// the reason (never 200), the answer goes out before the process exits non-zero, and the
/// endpoint hands the primary back for its shutdown.
#[cfg(feature = "fault-injection")]
#[test]
fn fm_x_5_append_whose_fsync_fails_answers_503_stopped_and_the_node_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &["n1"]);
    let port = free_udp_port();
    let n1 = write_config(
        dir.path(),
        "n1",
        &format!("role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\"]\nquorum = 0\nhttp_addr = \"127.0.0.1:0\""),
        "",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_walship"));
    child.arg("node").arg("--config").arg(&n1).env(
        "WALSHIP_FAULT_FAIL_SYNCS",
        dir.path().join("n1").join("wal"),
    );
    let mut primary = Proc::spawn_command(child, "info");
    let p = primary.http_addr();
    let a = append(&p, b"never acknowledged");
    assert_eq!(a.status, 503, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["error"], "stopped");
    let reason = a.json()["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("the WAL failed: "), "{reason}");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = primary.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the stopped primary keeps running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status}");
    let log = primary.stderr();
    assert!(
        log.contains("walship: primary n1 stopped: the WAL failed"),
        "{log}"
    );
    assert!(!log.contains("exiting without waiting"), "{log}");
}
