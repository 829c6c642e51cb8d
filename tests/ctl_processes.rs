//! `walship ctl` against three real `walship node` member processes on loopback: `list
//! --json` (one member killed: shown unreachable, the command still succeeds), maintenance
//! mode (`pause`: a killed primary is not replaced; `resume`: it is, and `resume` says
//! which member it could not reach), a restarted member that comes back still paused, and
//! `switchover` with its measured write pause.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Bound on any wait: only a hang reaches it; conditions decide.
const WAIT: Duration = Duration::from_secs(60);
const ELECTION_TIMEOUT_MS: u64 = 300;

struct Member {
    id: String,
    config: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn spawn(&mut self, logs: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", self.id)))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(["node", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn walship node");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The members, killed on drop.
struct Members(Vec<Member>);

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.0 {
            m.kill9();
        }
    }
}

fn members(dir: &Path) -> Members {
    members_with_joiners(dir, 3, 0).0
}

/// `n` members m1..mn that form the cluster, plus `joiners` more (m(n+1)..) whose
/// node.toml lists the `n` and itself as a learner (`learner = true`): a member added to a
/// running cluster. Returns the members and each one's (peer, HTTP) address.
fn members_with_joiners(
    dir: &Path,
    n: usize,
    joiners: usize,
) -> (Members, Vec<(SocketAddr, SocketAddr)>) {
    let ids: Vec<String> = (1..=n + joiners).map(|i| format!("m{i}")).collect();
    walship_wire::certs::generate(&dir.join("certs"), &ids).expect("certs");
    let mut table = String::new();
    let mut addrs = Vec::new();
    let mut entries = Vec::new();
    for id in &ids {
        let quic: SocketAddr = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("udp port");
        let http: SocketAddr = TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("tcp port");
        addrs.push((quic, http));
        entries.push(format!(
            "[[member]]\nid = \"{id}\"\naddr = \"{quic}\"\nhttp_addr = \"{http}\"\n"
        ));
    }
    for e in &entries[..n] {
        table.push_str(e);
    }
    let members = Members(
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let table = if i < n {
                    table.clone()
                } else {
                    format!("{table}{}learner = true\n", entries[i])
                };
                let config = dir.join(format!("{id}.toml"));
                let text = format!(
                    "node_id = \"{id}\"\ncluster_id = \"ctl\"\nrole = \"member\"\ndata_dir = \"data/{id}\"\n\
                     quorum = -1\nelection_timeout_ms = {t}\nlease_ms = {t}\ncommit_timeout_ms = 5000\n\
                     {table}[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{id}.pem\"\nkey = \"certs/{id}.key\"\n\
                     [transport]\nkeep_alive_ms = 200\nidle_timeout_ms = 2000\n",
                    t = ELECTION_TIMEOUT_MS,
                );
                std::fs::write(&config, text).expect("write config");
                Member {
                    id: id.clone(),
                    config,
                    child: None,
                }
            })
            .collect(),
    );
    (members, addrs)
}

fn ctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walship"))
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run walship ctl")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ctl list --json`: it always succeeds; its rows.
fn list(config: &Path) -> Vec<serde_json::Value> {
    let o = ctl(config, &["list", "--json", "--timeout-ms", "1000"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON array");
    rows.as_array().expect("array").clone()
}

fn primary_of(rows: &[serde_json::Value]) -> Option<String> {
    let p: Vec<&serde_json::Value> = rows.iter().filter(|r| r["role"] == "primary").collect();
    (p.len() == 1).then(|| p[0]["member"].as_str().unwrap_or("").to_owned())
}

fn wait_rows(
    config: &Path,
    what: &str,
    ok: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = list(config);
        if ok(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: {rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn index(id: &str) -> usize {
    id.trim_start_matches('m').parse::<usize>().expect("m<i>") - 1
}

#[test]
fn ctl_lists_members_pause_holds_off_failover_and_resume_and_switchover_act() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let mut ms = members(dir);
    for m in &mut ms.0 {
        m.spawn(&logs);
    }
    let cfg = ms.0[0].config.clone();

    // A cluster view: every member running, one primary, lag from the primary's view.
    let rows = wait_rows(&cfg, "a primary and three running members", |r| {
        primary_of(r).is_some()
            && r.iter()
                .all(|x| x["state"] == "running" && x["lag_records"].is_u64())
    });
    assert_eq!(rows.len(), 3);
    let p = primary_of(&rows).expect("primary");
    for r in &rows {
        for key in [
            "member",
            "peer_addr",
            "http_addr",
            "role",
            "state",
            "epoch",
            "durable_lsn",
            "commit_lsn",
            "lag_records",
            "lag_bytes",
            "lag_ms",
            "paused",
            "halt_reason",
            "blocked_on",
            "incarnation",
            "error",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert_eq!(r["paused"], false);
        assert!(
            r["incarnation"].as_u64().is_some_and(|i| i != 0),
            "a running member names its incarnation: {r}"
        );
        assert!(r["lag_records"].is_u64(), "{r}");
    }

    // The same view from the HTTP endpoints alone (`--members`): ids come from /status.
    let https: Vec<String> = rows
        .iter()
        .map(|r| r["http_addr"].as_str().expect("http_addr").to_owned())
        .collect();
    let o = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["ctl", "--members", &https.join(","), "list", "--json"])
        .output()
        .expect("run walship ctl --members");
    assert!(o.status.success(), "{}", text(&o));
    let by_http: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON array");
    for (a, b) in rows.iter().zip(by_http.as_array().expect("array")) {
        assert_eq!(a["member"], b["member"], "{b}");
        assert_eq!(b["peer_addr"], serde_json::Value::Null, "{b}");
    }

    // A follower down: a row that says unreachable; the command still succeeds.
    let f = (index(&p) + 1) % 3;
    ms.0[f].kill9();
    let rows = wait_rows(&cfg, "the killed follower shown unreachable", |r| {
        r[f]["state"] == "unreachable"
    });
    assert!(rows[f]["error"].is_string(), "{:?}", rows[f]);
    assert_eq!(primary_of(&rows).as_deref(), Some(p.as_str()));
    let o = ctl(&cfg, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("unreachable"),
        "{}",
        text(&o)
    );
    ms.0[f].spawn(&logs);
    wait_rows(&cfg, "the follower back", |r| {
        r.iter().all(|x| x["state"] == "running")
    });

    // Maintenance mode on every member: the table says so.
    let o = ctl(&cfg, &["pause"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ctl(&cfg, &["list"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("maintenance mode: automatic failover is paused on every member"),
        "{out}"
    );

    // Paused: the primary killed is not replaced (several election timeouts pass; a broken
    // pause fails here, a slow machine only waits longer).
    let pi = index(&p);
    ms.0[pi].kill9();
    wait_rows(&cfg, "the primary shown unreachable", |r| {
        r[pi]["state"] == "unreachable"
    });
    std::thread::sleep(Duration::from_millis(10 * ELECTION_TIMEOUT_MS));
    let rows = list(&cfg);
    assert_eq!(
        primary_of(&rows),
        None,
        "a paused cluster failed over: {rows:#?}"
    );
    for (i, r) in rows.iter().enumerate() {
        if i != pi {
            assert_eq!(r["paused"], true, "{r}");
            assert_eq!(r["role"], "follower", "{r}");
        }
    }
    let o = ctl(&cfg, &["list"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("no primary among the 2 reachable of 3 members"),
        "{out}"
    );

    // Resume: the member that is down is named and the exit is non-zero; the two others
    // elect a primary.
    let o = ctl(&cfg, &["resume"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{p}: NOT reached")),
        "{}",
        text(&o)
    );
    let rows = wait_rows(&cfg, "a new primary after resume", |r| {
        primary_of(r).is_some_and(|q| q != p)
    });
    let q = primary_of(&rows).expect("new primary");

    // The old primary restarts still paused (state/paused): the footer says the cluster is
    // partly paused, until `resume` reaches it.
    ms.0[pi].spawn(&logs);
    wait_rows(&cfg, "the old primary back, paused", |r| {
        r[pi]["state"] == "running" && r[pi]["paused"] == true
    });
    let o = ctl(&cfg, &["list"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains(&format!("maintenance mode on {p} only")),
        "{out}"
    );
    let o = ctl(&cfg, &["resume"]);
    assert!(o.status.success(), "{}", text(&o));

    // Switchover back to the old primary once it caught up, in maintenance mode (a
    // hand-over is an operator act, taken while paused): the write pause is printed.
    wait_rows(&cfg, "the old primary caught up", |r| {
        r[pi]["lag_records"] == 0 && r[pi]["role"] == "follower"
    });
    let o = ctl(&cfg, &["pause"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ctl(&cfg, &["switchover", "--to", &p, "--timeout-ms", "20000"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(&format!("switchover: {q} -> {p}")), "{out}");
    assert!(out.contains("write pause"), "{out}");
    wait_rows(&cfg, "the old primary leads again", |r| {
        primary_of(r).as_deref() == Some(p.as_str())
    });
    let o = ctl(&cfg, &["resume"]);
    assert!(o.status.success(), "{}", text(&o));

    // --watch redraws until stopped: two JSON arrays, one per line.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_walship"))
        .arg("ctl")
        .arg("--config")
        .arg(&cfg)
        .args(["list", "--json", "--watch", "--interval-ms", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ctl list --watch");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        watch.stdout.take().expect("stdout"),
    ));
    for _ in 0..2 {
        let line = lines.next().expect("a line").expect("read");
        let rows: serde_json::Value = serde_json::from_str(&line).expect("JSON array per line");
        assert_eq!(rows.as_array().map(Vec::len), Some(3), "{line}");
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

/// Reads the newest configuration the members report: (generation, voters, learners).
fn configuration(rows: &[serde_json::Value]) -> (u64, Vec<String>, Vec<String>) {
    let generation = rows
        .iter()
        .filter_map(|r| r["generation"].as_u64())
        .max()
        .unwrap_or(0);
    let of = |kind: &str| {
        rows.iter()
            .filter(|r| r["membership"] == kind)
            .filter_map(|r| r["member"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    (generation, of("voter"), of("learner"))
}

#[test]
fn ctl_adds_a_fourth_member_as_learner_then_voter_removes_it_and_forces_a_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ms, addrs) = members_with_joiners(dir.path(), 3, 1);
    let logs = dir.path().to_path_buf();
    for m in &mut ms.0[..3] {
        m.spawn(&logs);
    }
    let config = ms.0[0].config.clone();
    // The primary writes the bootstrap configuration (every member's incarnation) itself.
    wait_rows(
        &config,
        "a primary and the bootstrap configuration",
        |rows| primary_of(rows).is_some() && configuration(rows).0 >= 1,
    );
    ms.0[3].spawn(&logs);
    let (quic, http) = addrs[3];
    // m4 must be up (its /status names its incarnation) before it is added.
    let deadline = Instant::now() + WAIT;
    let add = loop {
        let o = ctl(
            &config,
            &[
                "add",
                "m4",
                "--addr",
                &quic.to_string(),
                "--http",
                &http.to_string(),
            ],
        );
        if o.status.success() || Instant::now() >= deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = text(&add);
    assert!(add.status.success(), "{out}");
    assert!(out.contains("as a learner"), "{out}");
    assert!(out.contains("caught up"), "{out}");
    let rows = wait_rows(&config, "m4 a voter in ctl list", |rows| {
        configuration(rows).1.contains(&"m4".to_string())
    });
    let (generation, voters, _) = configuration(&rows);
    assert_eq!(voters.len(), 4, "{rows:#?}");
    assert!(generation >= 3, "bootstrap, add, promote: {rows:#?}");
    // ctl list asked m4 although m1's node.toml does not name it.
    assert!(
        rows.iter()
            .any(|r| r["member"] == "m4" && r["state"] == "running"),
        "{rows:#?}"
    );
    let o = ctl(&config, &["remove", "m4"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = wait_rows(&config, "m4 removed", |rows| {
        let (_, voters, learners) = configuration(rows);
        voters.len() == 3 && !learners.contains(&"m4".to_string())
    });
    assert!(!configuration(&rows).1.contains(&"m4".to_string()));
    ms.0[3].kill9();

    // The primary and one follower are lost for good: the survivor cannot elect alone.
    let primary = primary_of(&rows).expect("primary");
    let lost_follower = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != primary)
        .expect("a follower");
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != primary && *m != lost_follower)
        .expect("the survivor");
    ms.0[index(&primary)].kill9();
    ms.0[index(lost_follower)].kill9();
    let o = ctl(&config, &["force-quorum"]);
    let out = text(&o);
    assert!(!o.status.success(), "a loss is possible: {out}");
    assert!(out.contains("may be lost"), "{out}");
    assert!(
        out.contains(&format!("most up to date: {survivor}")),
        "{out}"
    );
    let o = ctl(&config, &["force-quorum", "--accept-data-loss"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("{survivor} leads epoch")), "{out}");
    let rows = wait_rows(&config, "the survivor leads alone", |rows| {
        primary_of(rows).as_deref() == Some(survivor) && configuration(rows).1 == vec![survivor]
    });
    assert_eq!(configuration(&rows).1, vec![survivor.to_string()]);
}
