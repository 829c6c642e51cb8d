//! `walship-recover rejoin DIR --from ADDR` (spec/recovery-tool.md §11): the primary's log
//! read over its HTTP endpoint (`GET /status`, `GET /log/ids`, spec/http.md §7). The
//! primary is a real `walship_node::primary::Primary` opened on a directory built with the
//! WAL's API and served in-process by the node's own HTTP endpoint; the bad-answer cases
//! use a hand-written server that answers what the test says.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use common::{recover_json, s, Node};
use walship_node::http::{
    primary_log_ids, AppendError, AppendFuture, HttpListener, HttpServer, LogIds, LogIdsError,
    LogIdsRequest, NodeRole, NodeStatus, NodeView,
};
use walship_node::primary::{Primary, PrimaryConfig, Quorum};
use walship_replica::halt::HaltReason;

/// The primary role as a node's endpoint sees it (what `walship node`'s `PrimaryView`
/// and a member's `NodeHttpView` do for `/status` and `/log/ids`).
struct PrimaryView(Arc<Primary>);

impl NodeView for PrimaryView {
    fn status(&self) -> NodeStatus {
        NodeStatus::from_primary(&self.0.status(), None)
    }
    fn max_record_bytes(&self) -> u32 {
        4 * 1024 * 1024
    }
    fn append(&self, _payload: Vec<u8>) -> AppendFuture {
        Box::pin(async {
            Err(AppendError::Failed {
                message: "not in this test".into(),
            })
        })
    }
    fn log_ids(&self, req: LogIdsRequest) -> Result<LogIds, LogIdsError> {
        primary_log_ids(&self.0, &self.status(), req)
    }
}

/// A follower's endpoint: `/status` names another node as the primary.
struct FollowerView;

impl NodeView for FollowerView {
    fn status(&self) -> NodeStatus {
        NodeStatus {
            node_id: "n2".into(),
            role: NodeRole::Follower,
            epoch: 3,
            durable_lsn: Some(10),
            commit_lsn: 10,
            primary: Some("n1".into()),
            primary_http: Some("http://127.0.0.1:7001".into()),
            connected: Some(true),
            lag_records: Some(0),
            halt: None,
            stopped: None,
            members: None,
            acked_lsn: None,
            required_lsn: None,
            incarnation: None,
            paused: false,
            blocked_on: None,
            configuration: None,
            log_head: None,
        }
    }
    fn max_record_bytes(&self) -> u32 {
        16
    }
    fn append(&self, _payload: Vec<u8>) -> AppendFuture {
        Box::pin(async {
            Err(AppendError::Failed {
                message: "follower".into(),
            })
        })
    }
}

/// A runtime serving one endpoint (and holding the primary it serves, if any).
struct Served {
    rt: tokio::runtime::Runtime,
    server: Option<HttpServer>,
    primary: Option<Arc<Primary>>,
    addr: SocketAddr,
    _certs: tempfile::TempDir,
}

impl Served {
    fn view(
        make: impl FnOnce(&tokio::runtime::Runtime) -> (Arc<dyn NodeView>, Option<Arc<Primary>>),
    ) -> Served {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (view, primary) = make(&rt);
        let (server, addr) = rt.block_on(async {
            let l = HttpListener::bind("127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("bind");
            let addr = l.local_addr();
            (l.serve(view), addr)
        });
        Served {
            rt,
            server: Some(server),
            primary,
            addr,
            _certs: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A single-member primary (quorum 0) opened on `dir`'s directory (its records, its
    /// epochs), serving its endpoint.
    fn primary(dir: &Node) -> Served {
        let certs = tempfile::tempdir().expect("tempdir");
        walship_wire::generate(certs.path(), &["p"]).expect("certs");
        let mut config = PrimaryConfig::new(
            "p",
            "test-cluster",
            dir.root.clone(),
            "127.0.0.1:0".parse().expect("addr"),
            vec!["p".to_string()],
            walship_wire::TlsFiles::for_node(certs.path(), "p"),
        );
        config.quorum = Quorum::LocalOnly;
        config.segment_size_bytes = common::SMALL_SEGMENT_BYTES;
        let mut served = Served::view(|rt| {
            let _g = rt.enter();
            let p = Arc::new(Primary::open(config).expect("open primary"));
            (Arc::new(PrimaryView(p.clone())), Some(p))
        });
        served._certs = certs;
        served
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt
                .block_on(s.shutdown(std::time::Duration::from_secs(2)));
        }
        if let Some(p) = self.primary.take() {
            if let Ok(p) = Arc::try_unwrap(p) {
                self.rt.block_on(p.shutdown());
            }
        }
    }
}

fn json_u64(v: &serde_json::Value, ptr: &str) -> u64 {
    v.pointer(ptr)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
}

fn json_str<'a>(v: &'a serde_json::Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
}

/// The primary's directory: `common` records of epoch 1 then `extra` of epoch 3 (with
/// its epoch history); the replica's: the same `common` records then `tentative` ones of
/// epoch 2.
fn logs(common: u64, extra: u64, tentative: u64) -> (Node, Node) {
    let primary = Node::new();
    let replica = Node::new();
    primary.append_n(1, common, "same");
    replica.append_n(1, common, "same");
    if extra > 0 {
        primary.append_n(3, extra, "new-primary");
        primary.set_epochs(&[(1, 1), (3, common + 1)]);
    } else {
        primary.set_epochs(&[(1, 1)]);
    }
    if tentative > 0 {
        replica.append_n(2, tentative, "tentative");
    }
    (primary, replica)
}

fn rejoin(replica: &Node, from: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["rejoin", s(&replica.root), "--from", from];
    args.extend_from_slice(extra);
    recover_json(&args)
}

#[test]
fn rejoin_from_addr_of_an_identical_log_does_nothing() {
    let (primary, replica) = logs(10, 0, 0);
    let served = Served::primary(&primary);
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &served.addr(), &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "identical");
    assert_eq!(
        json_str(&v, "/primary_addr"),
        format!("http://{}", served.addr)
    );
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert!(
        v["audit_log"].is_null(),
        "nothing done, nothing audited: {v}"
    );
    assert_eq!(replica.snapshot_files(), before);
}

#[test]
fn rejoin_from_addr_of_a_node_behind_the_primary_cuts_nothing() {
    let (primary, replica) = logs(10, 5, 0);
    let served = Served::primary(&primary);
    let (code, v, err) = rejoin(&replica, &format!("http://{}", served.addr), &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "a-prefix-of-b");
    assert_eq!(json_u64(&v, "/diff/common_prefix/lsn"), 10);
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert_eq!(replica.last().lsn, 10);
}

#[test]
fn fm_8_1_rejoin_from_addr_cuts_a_diverged_node_to_the_common_prefix_and_clears_its_halt() {
    // 10 common records; the primary then wrote 5 of epoch 3, the node 4 tentative ones of
    // epoch 2 (more pages than one: the page size is 4096, so ask with a long log too).
    let (primary, replica) = logs(10, 5, 4);
    replica.set_commit(10);
    replica.halt(HaltReason::Divergence, 11, 3);
    let served = Served::primary(&primary);
    let (code, v, err) = rejoin(&replica, &served.addr(), &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "diverged");
    assert_eq!(json_u64(&v, "/diff/first_divergence/lsn"), 11);
    assert_eq!(json_u64(&v, "/diff/first_divergence/b/epoch"), 3);
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert_eq!(json_u64(&v, "/rewind/cut/records"), 4);
    assert_eq!(v["halt_cleared"], true, "{v}");
    assert_eq!(json_str(&v, "/verify/wal/state/state"), "clean");
    assert_eq!(replica.last().lsn, 10);
    // The audit log names the address.
    let audit = std::fs::read_to_string(replica.state_dir().join("audit.log")).expect("audit");
    let first: serde_json::Value =
        serde_json::from_str(audit.lines().next().expect("an entry")).expect("json");
    assert_eq!(
        json_str(&first, "/details/primary_addr"),
        format!("http://{}", served.addr),
        "{first}"
    );
}

#[test]
fn rejoin_from_addr_of_a_node_longer_than_the_primary_cuts_what_the_primary_lacks() {
    let (primary, replica) = logs(10, 0, 3);
    replica.set_commit(10);
    replica.halt(HaltReason::Divergence, 11, 3);
    let served = Served::primary(&primary);
    let (code, v, err) = rejoin(&replica, &served.addr(), &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_str(&v, "/diff/relation"), "b-prefix-of-a");
    assert_eq!(json_u64(&v, "/to_lsn"), 10);
    assert_eq!(v["halt_cleared"], true, "{v}");
    assert_eq!(replica.last().lsn, 10);
}

#[test]
fn rejoin_from_addr_over_many_pages_finds_the_divergence() {
    // 9000 common records: three pages of /log/ids.
    let (primary, replica) = logs(9000, 2, 2);
    replica.set_commit(9000);
    replica.halt(HaltReason::Divergence, 9001, 3);
    let served = Served::primary(&primary);
    let (code, v, err) = rejoin(&replica, &served.addr(), &["--yes"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(json_u64(&v, "/diff/first_divergence/lsn"), 9001);
    assert_eq!(json_u64(&v, "/to_lsn"), 9000);
    assert_eq!(replica.last().lsn, 9000);
}

#[test]
fn rejoin_from_addr_refuses_a_cut_at_or_below_the_commit_watermark() {
    let (primary, replica) = logs(10, 5, 4);
    replica.set_commit(12);
    replica.halt(HaltReason::Divergence, 11, 3);
    let served = Served::primary(&primary);
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &served.addr(), &["--yes"]);
    assert_eq!(code, 6, "refused: {v}\n{err}");
    assert!(
        v["refused"].as_str().is_some_and(|r| r.contains("commit")),
        "{v}"
    );
    assert_eq!(replica.last().lsn, 14);
    assert_eq!(replica.snapshot_files(), before, "nothing was changed");
}

#[test]
fn rejoin_from_addr_refuses_a_node_that_is_not_the_primary_and_names_the_primary() {
    let (_primary, replica) = logs(10, 0, 2);
    replica.halt(HaltReason::Divergence, 11, 3);
    let served = Served::view(|_| (Arc::new(FollowerView), None));
    let before = replica.snapshot_files();
    let (code, v, err) = rejoin(&replica, &served.addr(), &["--yes"]);
    assert_eq!(code, 6, "{v}\n{err}");
    assert_eq!(json_str(&v, "/error/kind"), "refused");
    let msg = json_str(&v, "/error/message");
    assert!(
        msg.contains("is not the primary") && msg.contains("n1") && msg.contains("7001"),
        "{msg}"
    );
    assert_eq!(replica.snapshot_files(), before);
}

/// A server answering `/status` as primary `p` (epoch 1) and `/log/ids` with `body`
/// (status 200), one connection at a time, until the test ends.
fn bad_server(ids_body: Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = if req.starts_with("GET /status") {
                br#"{"node_id":"p","role":"primary","epoch":1,"primary":"p","primary_http":null,"commit_lsn":0}"#.to_vec()
            } else {
                ids_body.clone()
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
        }
    });
    addr
}

fn page(ids: &[(u64, u32, u32)]) -> Vec<u8> {
    let ids: Vec<serde_json::Value> = ids
        .iter()
        .map(|(lsn, crc, prev_crc)| {
            serde_json::json!({"lsn": lsn, "epoch": 1, "crc": crc, "prev_crc": prev_crc, "len": 3})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "node_id": "p", "role": "primary", "epoch": 1,
        "base": {"lsn": 0, "epoch": 0, "crc": 0}, "first_lsn": 1, "last_lsn": ids.len(),
        "commit_lsn": 0, "prev": {"lsn": 0, "epoch": 0, "crc": 0}, "ids": ids,
    }))
    .expect("json")
}

#[test]
fn rejoin_from_addr_rejects_bad_answers_and_changes_nothing() {
    let (_primary, replica) = logs(3, 0, 2);
    replica.halt(HaltReason::Divergence, 4, 3);
    let before = replica.snapshot_files();
    let oversized = {
        let mut b = br#"{"node_id":"p","pad":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', 5 * 1024 * 1024));
        b.extend_from_slice(b"\"}");
        b
    };
    let too_many: Vec<(u64, u32, u32)> =
        (1..=4097u64).map(|l| (l, l as u32, l as u32 - 1)).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not json",
            b"<html>hello</html>".to_vec(),
            "not the expected JSON",
        ),
        ("oversized", oversized, "longer than"),
        ("more ids than asked", page(&too_many), "identities"),
        (
            "broken chain",
            page(&[(1, 10, 0), (2, 20, 99)]),
            "does not follow",
        ),
        ("gap", page(&[(1, 10, 0), (3, 30, 10)]), "does not follow"),
    ];
    for (what, body, needle) in cases {
        let addr = bad_server(body);
        let (code, v, err) = rejoin(&replica, &addr.to_string(), &["--yes"]);
        assert_eq!(code, 1, "{what}: {v}\n{err}");
        let msg = json_str(&v, "/error/message");
        assert!(msg.contains(needle), "{what}: {msg}");
        assert!(msg.contains("nothing was changed"), "{what}: {msg}");
        assert_eq!(
            replica.snapshot_files(),
            before,
            "{what}: nothing was changed"
        );
    }
}

#[test]
fn log_ids_validates_its_query() {
    let (primary, _replica) = logs(5, 0, 0);
    let served = Served::primary(&primary);
    let get = |path: &str| {
        walship::http_client::get(served.addr, path, std::time::Duration::from_secs(5))
            .expect("answer")
    };
    for bad in [
        "/log/ids?count=0",
        "/log/ids?count=4097",
        "/log/ids?from=x",
        "/log/ids?from=-1",
        "/log/ids?bogus=1",
    ] {
        assert_eq!(get(bad).status, 400, "{bad}");
    }
    let r = get("/log/ids?from=2&count=2");
    assert_eq!(r.status, 200);
    let v = r.json().expect("json");
    assert_eq!(json_u64(&v, "/prev/lsn"), 1);
    assert_eq!(v["ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(json_u64(&v, "/ids/0/lsn"), 2);
    assert_eq!(json_u64(&v, "/ids/1/lsn"), 3);
    assert_eq!(json_u64(&v, "/last_lsn"), 5);
    assert_eq!(json_u64(&v, "/first_lsn"), 1);
    let all = get("/log/ids").json().expect("json");
    assert_eq!(all["ids"].as_array().map(Vec::len), Some(5));
    let beyond = get("/log/ids?from=99").json().expect("json");
    assert_eq!(beyond["ids"].as_array().map(Vec::len), Some(0));
    // A follower does not serve its log.
    let follower = Served::view(|_| (Arc::new(FollowerView), None));
    let r = walship::http_client::get(follower.addr, "/log/ids", std::time::Duration::from_secs(5))
        .expect("answer");
    assert_eq!(r.status, 503);
}
