//! The operator's view of a `Node` through its HTTP endpoint (`spec/http.md`): maintenance
//! mode (`POST /pause`, `POST /resume`, persisted across a restart), the election blocker
//! in `/status`, and the `/metrics` families operators alert on. Real members on
//! loopback (QUIC, mutual TLS, real directories); the endpoint is the production router.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use walship_node::cluster::NodeHttpView;
use walship_node::election::Role;
use walship_node::http::{router, NodeView};
use walship_node::replica::{Applier, ApplyError};
use walship_node::{MemberAddr, Node, NodeConfig};
use walship_wal::Lsn;
use walship_wire::{TlsFiles, TransportOptions};

/// Bound on any wait: only a hang reaches it; conditions decide.
const WAIT: Duration = Duration::from_secs(30);
const ELECTION_TIMEOUT_MS: u64 = 200;

/// Takes every committed record.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl Applier for Counter {
    fn applied_lsn(&self) -> Lsn {
        self.0.load(Ordering::Acquire)
    }
    fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        self.0.store(lsn, Ordering::Release);
        Ok(())
    }
}

fn free_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("local addr")
}

struct Cluster {
    root: PathBuf,
    members: Vec<MemberAddr>,
    quorum: i64,
}

impl Cluster {
    fn new(root: &Path, n: usize, quorum: i64) -> Cluster {
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        walship_wire::generate(&root.join("certs"), &ids).expect("certs");
        let members = ids
            .iter()
            .map(|id| MemberAddr {
                node_id: id.clone(),
                addr: free_addr(),
                http_addr: None,
            })
            .collect();
        Cluster {
            root: root.to_path_buf(),
            members,
            quorum,
        }
    }

    async fn open(&self, i: usize) -> Arc<Node> {
        let id = format!("n{}", i + 1);
        let mut c = NodeConfig::new(
            id.as_str(),
            "c1",
            self.root.join(&id),
            self.members.clone(),
            TlsFiles::for_node(&self.root.join("certs"), &id),
        );
        c.quorum = self.quorum;
        c.election_timeout_ms = ELECTION_TIMEOUT_MS;
        c.lease_ms = ELECTION_TIMEOUT_MS;
        c.commit_timeout_ms = 5_000;
        c.transport = TransportOptions {
            keep_alive_ms: 100,
            idle_timeout_ms: 2_000,
            ..TransportOptions::default()
        };
        // A node just shut down may still hold its UDP port for a moment (its role task
        // drops the endpoint last): retry the bind, bounded.
        let deadline = Instant::now() + WAIT;
        loop {
            match Node::open(c.clone(), Counter::default()).await {
                Ok(n) => return Arc::new(n),
                Err(walship_node::NodeError::Endpoint(e)) if Instant::now() < deadline => {
                    eprintln!("{id}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open {id}: {e}"),
            }
        }
    }

    async fn open_all(&self) -> Vec<Arc<Node>> {
        let mut nodes = Vec::new();
        for i in 0..self.members.len() {
            nodes.push(self.open(i).await);
        }
        nodes
    }
}

/// One request to `node`'s endpoint: status code and body.
async fn call(node: &Arc<Node>, method: &str, path: &str, body: &[u8]) -> (StatusCode, String) {
    let view: Arc<dyn NodeView> = Arc::new(NodeHttpView::new(node.clone()));
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_vec()))
        .expect("request");
    let res = router(view).oneshot(req).await.expect("infallible");
    let code = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .expect("body");
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

async fn status(node: &Arc<Node>) -> serde_json::Value {
    let (code, body) = call(node, "GET", "/status", b"").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// The value of the sample `series` (exact name and labels) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_primary(nodes: &[Arc<Node>]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let p: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].status().state.role == Role::Primary)
            .collect();
        if p.len() == 1 {
            return p[0];
        }
        assert!(Instant::now() < deadline, "no single primary: {p:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown(nodes: Vec<Arc<Node>>) {
    for n in nodes {
        match Arc::try_unwrap(n) {
            Ok(n) => n.shutdown().await,
            Err(_) => panic!("a node handle is still shared"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_is_persisted_across_a_restart_and_resume_lets_the_cluster_elect() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3, -1);
    let nodes = cluster.open_all().await;
    wait_primary(&nodes).await;
    for n in &nodes {
        let (code, body) = call(n, "POST", "/pause", b"").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            (v["paused"].as_bool(), v["changed"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(status(n).await["paused"], true);
        assert!(tmp.path().join(n.node_id()).join("state/paused").exists());
    }
    // Pausing twice changes nothing.
    let (_, body) = call(&nodes[0], "POST", "/pause", b"").await;
    assert!(body.contains("\"changed\":false"), "{body}");
    shutdown(nodes).await;

    // Restarted: still paused, and with nobody leading nobody starts an election.
    let nodes = cluster.open_all().await;
    for n in &nodes {
        let s = status(n).await;
        assert_eq!(s["paused"], true, "{s}");
        assert_eq!(s["blocked_on"]["kind"], "paused", "{s}");
        assert!(
            s["blocked_on"]["hint"]
                .as_str()
                .is_some_and(|h| h.contains("walship ctl resume")),
            "{s}"
        );
    }
    // Several election timeouts pass: no pre-vote round starts (a broken pause fails here;
    // a slow machine only waits longer).
    tokio::time::sleep(Duration::from_millis(6 * ELECTION_TIMEOUT_MS)).await;
    for n in &nodes {
        let (_, text) = call(n, "GET", "/metrics", b"").await;
        assert_eq!(
            sample(&text, "walship_pre_votes_started_total"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(sample(&text, "walship_paused"), Some(1.0));
        assert_ne!(n.status().state.role, Role::Primary);
    }
    // Resumed: an election happens, and /metrics counts it.
    for n in &nodes {
        let (code, body) = call(n, "POST", "/resume", b"").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(status(n).await["paused"], false);
    }
    let p = wait_primary(&nodes).await;
    let (_, text) = call(&nodes[p], "GET", "/metrics", b"").await;
    assert_eq!(
        sample(&text, "walship_elections_won_total"),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "walship_elections_started_total").is_some_and(|v| v >= 1.0));
    assert_eq!(sample(&text, "walship_role{role=\"primary\"}"), Some(1.0));
    shutdown(nodes).await;
    // The resume was persisted too: a restarted node is not paused.
    let n = cluster.open(0).await;
    assert_eq!(status(&n).await["paused"], false);
    shutdown(vec![n]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_histograms_count_appends_and_syncs_on_primary_and_follower() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3, -1);
    let nodes = cluster.open_all().await;
    let p = wait_primary(&nodes).await;
    let (_, before) = call(&nodes[p], "GET", "/metrics", b"").await;
    let commits_before = sample(&before, "walship_commit_latency_seconds_count").expect("family");
    for i in 0..10 {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, body) = call(&nodes[p], "POST", "/append", format!("r{i}").as_bytes()).await;
            if code == StatusCode::OK {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "append kept failing: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (_, text) = call(&nodes[p], "GET", "/metrics", b"").await;
    for family in [
        "# TYPE walship_commit_latency_seconds histogram",
        "# TYPE walship_fsync_latency_seconds histogram",
        "# TYPE walship_elections_won_total counter",
        "# TYPE walship_role gauge",
        "# TYPE walship_epoch gauge",
        "# TYPE walship_member_lag_records gauge",
        "# TYPE walship_member_lag_bytes gauge",
        "# TYPE walship_member_lag_seconds gauge",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let commits = sample(&text, "walship_commit_latency_seconds_count").expect("count");
    assert_eq!(commits - commits_before, 10.0, "{text}");
    assert!(sample(&text, "walship_fsync_latency_seconds_count").is_some_and(|c| c >= 1.0));
    // A follower fsyncs what it receives: its histogram moves too.
    let f = (p + 1) % 3;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = call(&nodes[f], "GET", "/metrics", b"").await;
        if sample(&text, "walship_fsync_latency_seconds_count").is_some_and(|c| c >= 1.0) {
            assert!(text.contains("walship_follower_lag_records"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never synced:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_names_the_votes_missing_when_the_majority_is_gone() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3, -1);
    let nodes = cluster.open_all().await;
    let p = wait_primary(&nodes).await;
    // Keep one follower; stop the other follower, then the primary (so no round of the
    // survivor's can meet a live member).
    let keep = (p + 1) % 3;
    let other = (p + 2) % 3;
    let mut taken: Vec<Option<Arc<Node>>> = nodes.into_iter().map(Some).collect();
    let survivor = taken[keep].take().expect("survivor");
    // The survivor holds the primary's first record (a member whose log is still empty
    // would campaign only with every voter: spec/election.md §2.10).
    let deadline = Instant::now() + WAIT;
    while survivor
        .status()
        .replica
        .and_then(|r| r.durable_lsn)
        .unwrap_or(0)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the survivor never received a record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = taken[other].take().expect("other follower");
    let primary = taken[p].take().expect("primary");
    shutdown(vec![other, primary]).await;
    let gone: Vec<String> = (0..3)
        .filter(|&i| i != keep)
        .map(|i| format!("n{}", i + 1))
        .collect();
    let deadline = Instant::now() + WAIT;
    let b = loop {
        let s = status(&survivor).await;
        if s["blocked_on"]["kind"] == "campaign"
            && s["blocked_on"]["waiting_for"].as_array().map(Vec::len) == Some(2)
        {
            break s["blocked_on"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "never blocked on a campaign: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (b["need"].as_u64(), b["have"].as_u64(), b["voters"].as_u64()),
        (Some(2), Some(1), Some(3)),
        "{b}"
    );
    let waiting: Vec<String> = b["waiting_for"]
        .as_array()
        .expect("waiting_for")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(waiting, gone, "{b}");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("need 2 of 3 ")),
        "{b}"
    );
    shutdown(vec![survivor]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_0_status_says_no_automatic_failover_and_names_the_promotion() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3, 0);
    let nodes = cluster.open_all().await;
    for n in &nodes {
        let s = status(n).await;
        assert_eq!(s["blocked_on"]["kind"], "quorum-0", "{s}");
        assert!(
            s["blocked_on"]["hint"]
                .as_str()
                .is_some_and(|h| h.contains("walship ctl promote N --accept-data-loss")),
            "{s}"
        );
    }
    shutdown(nodes).await;
}
