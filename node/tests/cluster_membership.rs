//! Membership changes of a running cluster (spec/membership.md, issue 13): a three-member
//! cluster grows to five and shrinks back to three while a writer keeps appending, a wiped
//! member comes back as a learner, and the configuration each member counts votes in
//! follows the log. Real members on loopback (QUIC, mutual TLS, real directories).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walship_node::election::Role;
use walship_node::membership::MemberChange;
use walship_node::replica::{Applier, ApplyError};
use walship_node::{MemberAddr, Node, NodeConfig, NodeError};
use walship_wal::control::ConfigMember;
use walship_wal::Lsn;
use walship_wire::{TlsFiles, TransportOptions};

/// Bound on any wait: only a hang reaches it; conditions decide.
const WAIT: Duration = Duration::from_secs(60);
const ELECTION_TIMEOUT_MS: u64 = 300;

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
    fn apply_control(
        &mut self,
        lsn: Lsn,
        _control: &walship_wal::control::ControlRecord,
    ) -> Result<(), ApplyError> {
        self.0.store(lsn, Ordering::Release);
        Ok(())
    }
}

fn free_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("local addr")
}

/// Five possible members n1..n5; n1..n3 form the cluster (their node.toml lists them
/// only); n4 and n5 list n1..n3 and themselves as learners.
struct World {
    root: PathBuf,
    addrs: Vec<MemberAddr>,
    deregistration_timeout_ms: u64,
}

impl World {
    fn new(root: &Path) -> World {
        let ids: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        walship_wire::generate(&root.join("certs"), &ids).expect("certs");
        let addrs = ids
            .iter()
            .map(|id| MemberAddr {
                node_id: id.clone(),
                addr: free_addr(),
                http_addr: None,
            })
            .collect();
        World {
            root: root.to_path_buf(),
            addrs,
            deregistration_timeout_ms: 0,
        }
    }

    fn config(&self, i: usize) -> NodeConfig {
        let id = format!("n{}", i + 1);
        let mut members: Vec<MemberAddr> = self.addrs[..3].to_vec();
        let mut learners = Vec::new();
        if i >= 3 {
            members.push(self.addrs[i].clone());
            learners.push(id.clone());
        }
        let mut c = NodeConfig::new(
            id.as_str(),
            "c1",
            self.root.join(&id),
            members,
            TlsFiles::for_node(&self.root.join("certs"), &id),
        );
        c.learners = learners;
        c.deregistration_timeout_ms = self.deregistration_timeout_ms;
        c.election_timeout_ms = ELECTION_TIMEOUT_MS;
        c.lease_ms = ELECTION_TIMEOUT_MS;
        c.commit_timeout_ms = 10_000;
        c.transport = TransportOptions {
            keep_alive_ms: 100,
            idle_timeout_ms: 2_000,
            ..TransportOptions::default()
        };
        c
    }

    async fn open(&self, i: usize) -> Arc<Node> {
        let c = self.config(i);
        let deadline = Instant::now() + WAIT;
        loop {
            match Node::open(c.clone(), Counter::default()).await {
                Ok(n) => return Arc::new(n),
                Err(NodeError::Endpoint(e)) if Instant::now() < deadline => {
                    eprintln!("{}: {e}; retrying", c.node_id);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open {}: {e}", c.node_id),
            }
        }
    }
}

fn primary_of(nodes: &[Option<Arc<Node>>]) -> Option<usize> {
    let p: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            nodes[i]
                .as_ref()
                .is_some_and(|n| n.status().state.role == Role::Primary)
        })
        .collect();
    (p.len() == 1).then(|| p[0])
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    eprintln!("waiting: {what}");
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The primary's handle (retrying while an election runs).
async fn primary(nodes: &[Option<Arc<Node>>]) -> Arc<Node> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(i) = primary_of(nodes) {
            return nodes[i].clone().expect("open");
        }
        assert!(Instant::now() < deadline, "no primary");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A membership change on whichever member leads, retried while leadership moves.
async fn change(
    nodes: &[Option<Arc<Node>>],
    c: MemberChange,
) -> walship_wal::control::Configuration {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = primary(nodes).await;
        eprintln!("{}: {c:?}", p.node_id());
        match p.change_membership(c.clone()).await {
            Ok(done) => return done.config,
            Err(e @ NodeError::NotPrimary { .. }) if Instant::now() < deadline => {
                eprintln!("{c:?}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{c:?}: {e}"),
        }
    }
}

fn voters(c: &walship_wal::control::Configuration) -> Vec<&str> {
    c.voters().collect()
}

/// The writer: appends through whichever member leads, retrying refusals; counts and
/// remembers the highest acknowledged lsn.
fn writer(
    nodes: Arc<std::sync::Mutex<Vec<Option<Arc<Node>>>>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Acquire) {
            let p = {
                let g = nodes.lock().expect("nodes");
                primary_of(&g).and_then(|i| g[i].clone())
            };
            let Some(p) = p else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            match p.append(format!("w{i}").into_bytes()).await {
                Ok(lsn) => {
                    acked.fetch_max(lsn, Ordering::AcqRel);
                    count.fetch_add(1, Ordering::AcqRel);
                    i += 1;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}

/// The shared member handles of a test (n1..n5; `None` while not running).
type Nodes = Arc<std::sync::Mutex<Vec<Option<Arc<Node>>>>>;

/// Starts n1..n3 and waits until their primary committed the bootstrap configuration
/// (generation 1, every member's incarnation); returns the handles and the primary.
async fn form(w: &World) -> (Nodes, Arc<Node>) {
    let nodes: Nodes = Arc::new(std::sync::Mutex::new(vec![None, None, None, None, None]));
    for i in 0..3 {
        let n = w.open(i).await;
        nodes.lock().expect("nodes")[i] = Some(n);
    }
    let p = primary(&snapshot(&nodes)).await;
    wait_until("bootstrap configuration", || {
        let m = p.membership();
        m.committed
            && m.config.generation >= 1
            && m.config.members.iter().all(|x| x.incarnation != 0)
    })
    .await;
    (nodes, p)
}

fn snapshot(nodes: &Arc<std::sync::Mutex<Vec<Option<Arc<Node>>>>>) -> Vec<Option<Arc<Node>>> {
    nodes.lock().expect("nodes").clone()
}

async fn shutdown(nodes: &Arc<std::sync::Mutex<Vec<Option<Arc<Node>>>>>, i: usize) {
    let n = nodes.lock().expect("nodes")[i].take();
    if let Some(n) = n {
        // The writer may hold a clone for an append in flight: wait for it to let go.
        let mut n = n;
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "a handle of {} is still held",
                n.node_id()
            );
            match Arc::try_unwrap(n) {
                Ok(node) => {
                    node.shutdown().await;
                    return;
                }
                Err(back) => {
                    n = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_grow_to_five_and_shrink_to_three_while_a_writer_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = World::new(dir.path());
    let nodes: Arc<std::sync::Mutex<Vec<Option<Arc<Node>>>>> =
        Arc::new(std::sync::Mutex::new(vec![None, None, None, None, None]));
    for i in 0..3 {
        let n = w.open(i).await;
        nodes.lock().expect("nodes")[i] = Some(n);
    }
    primary(&snapshot(&nodes)).await;
    // The primary records every member's incarnation by itself once all connected.
    wait_until(
        "the bootstrap configuration (generation 1) committed everywhere",
        || {
            snapshot(&nodes)[..3].iter().all(|n| {
                n.as_ref().is_some_and(|n| {
                    let m = n.membership();
                    m.config.generation >= 1 && m.config.members.iter().all(|x| x.incarnation != 0)
                })
            })
        },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let count = Arc::new(AtomicU64::new(0));
    let writing = writer(nodes.clone(), stop.clone(), acked.clone(), count.clone());

    // Grow: each new member starts as a learner, catches up, becomes a voter.
    for i in 3..5 {
        let n = w.open(i).await;
        let id = n.node_id().to_owned();
        let incarnation = n.status().incarnation;
        assert_eq!(
            n.membership().config.member(&id).map(|m| m.voter),
            Some(false),
            "{id} starts as a learner of its own base configuration"
        );
        nodes.lock().expect("nodes")[i] = Some(n.clone());
        let cfg = change(
            &snapshot(&nodes),
            MemberChange::Add(ConfigMember {
                id: id.clone(),
                incarnation,
                voter: false,
                addr: w.addrs[i].addr.to_string(),
                http_addr: None,
            }),
        )
        .await;
        assert_eq!(cfg.member(&id).map(|m| m.voter), Some(false));
        // It receives the log as a learner, and never campaigns meanwhile.
        wait_until(
            &format!("{id} holds the configuration that adds it"),
            || n.membership().config.generation >= cfg.generation,
        )
        .await;
        assert_ne!(n.status().state.role, Role::Primary);
        let cfg = change(&snapshot(&nodes), MemberChange::Promote(id.clone())).await;
        assert!(cfg.is_voter(&id));
    }
    let count_at_five = count.load(Ordering::Acquire);
    // `Node::membership` is what the election core counts in: it follows the role's log
    // within a driver poll.
    wait_until("every member counts votes among n1..n5", || {
        snapshot(&nodes).iter().all(|n| {
            n.as_ref().is_some_and(|n| {
                voters(&n.membership().config) == vec!["n1", "n2", "n3", "n4", "n5"]
            })
        })
    })
    .await;

    // Shrink: n4 and n5 leave (if one of them leads, it hands over first).
    for id in ["n5", "n4"] {
        let p = primary(&snapshot(&nodes)).await;
        if p.node_id() == id {
            p.switchover("n1", Duration::from_secs(10))
                .await
                .expect("switchover away from a member about to leave");
        }
        let cfg = change(&snapshot(&nodes), MemberChange::Remove(id.into())).await;
        assert!(cfg.member(id).is_none());
    }
    {
        let p = primary(&snapshot(&nodes)).await;
        wait_until("the primary counts n1..n3", || {
            voters(&p.membership().config) == vec!["n1", "n2", "n3"]
        })
        .await;
    }
    shutdown(&nodes, 3).await;
    shutdown(&nodes, 4).await;
    // Three voters again: with one of them stopped too, the other two still commit (a
    // five-voter count would need three).
    let leader = primary(&snapshot(&nodes)).await.node_id().to_owned();
    let victim = ["n1", "n2", "n3"]
        .iter()
        .position(|id| *id != leader)
        .expect("a follower");
    shutdown(&nodes, victim).await;
    let before = count.load(Ordering::Acquire);
    wait_until("appends commit with two of three voters", || {
        count.load(Ordering::Acquire) > before + 20
    })
    .await;
    stop.store(true, Ordering::Release);
    writing.await.expect("writer");
    assert!(
        count_at_five > 0,
        "the writer appended while the cluster grew"
    );
    // Everything acknowledged is in the primary's committed log.
    let p = primary(&snapshot(&nodes)).await;
    let commit = p.status().primary.map(|s| s.commit_lsn).unwrap_or(0);
    assert!(
        commit >= acked.load(Ordering::Acquire),
        "commit {commit} below an acknowledged lsn {}",
        acked.load(Ordering::Acquire)
    );
    drop(p);
    for i in 0..5 {
        shutdown(&nodes, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fm_x_15_a_wiped_member_comes_back_as_a_learner_until_promoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = World::new(dir.path());
    let (nodes, p) = form(&w).await;
    for i in 0..20u32 {
        p.append(format!("r{i}").into_bytes())
            .await
            .expect("append");
    }
    // A follower loses its disk and comes back empty: a new incarnation.
    let victim = (0..3)
        .find(|&i| {
            snapshot(&nodes)[i]
                .as_ref()
                .is_some_and(|n| n.node_id() != p.node_id())
        })
        .expect("a follower");
    let id = format!("n{}", victim + 1);
    let old_incarnation = snapshot(&nodes)[victim]
        .as_ref()
        .map(|n| n.status().incarnation)
        .expect("open");
    shutdown(&nodes, victim).await;
    std::fs::remove_dir_all(dir.path().join(&id)).expect("wipe");
    let n = w.open(victim).await;
    let new_incarnation = n.status().incarnation;
    assert_ne!(
        new_incarnation, old_incarnation,
        "a new directory, a new incarnation"
    );
    nodes.lock().expect("nodes")[victim] = Some(n.clone());
    // The primary sees the new incarnation and demotes it: its votes and receipts no
    // longer count for the member that held the data.
    wait_until(
        &format!("{id} demoted to a learner under its new incarnation"),
        || {
            let m = p.membership();
            m.committed
                && m.config
                    .member(&id)
                    .is_some_and(|x| !x.voter && x.incarnation == new_incarnation)
        },
    )
    .await;
    // It catches up as a learner; then an operator makes it a voter again.
    wait_until(&format!("{id} caught up"), || {
        n.status()
            .replica
            .and_then(|r| r.durable_lsn)
            .is_some_and(|d| d >= p.status().primary.map(|s| s.commit_lsn).unwrap_or(u64::MAX))
    })
    .await;
    let cfg = change(&snapshot(&nodes), MemberChange::Promote(id.clone())).await;
    let m = cfg.member(&id).expect("member");
    assert!(m.voter);
    assert_eq!(m.incarnation, new_incarnation);
    drop((p, n));
    for i in 0..5 {
        shutdown(&nodes, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_quorum_makes_the_lone_survivor_lead_a_forced_configuration_with_its_loss_stated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = World::new(dir.path());
    let (nodes, leader) = form(&w).await;
    let mut last = 0;
    for i in 0..10u32 {
        last = leader
            .append(format!("r{i}").into_bytes())
            .await
            .expect("append");
    }
    let leader_id = leader.node_id().to_owned();
    drop(leader);
    // The primary and one follower are lost: the survivor cannot elect alone.
    let survivor = (0..3)
        .find(|&i| {
            snapshot(&nodes)[i]
                .as_ref()
                .is_some_and(|n| n.node_id() != leader_id)
        })
        .expect("a follower");
    let s = snapshot(&nodes)[survivor].clone().expect("open");
    wait_until("the survivor holds every acknowledged record", || {
        s.status()
            .replica
            .and_then(|r| r.durable_lsn)
            .is_some_and(|d| d >= last)
    })
    .await;
    for i in 0..3 {
        if i != survivor {
            shutdown(&nodes, i).await;
        }
    }
    let me = s.node_id().to_owned();
    let e = s
        .force_quorum(vec![me.clone()], false)
        .await
        .expect_err("two of three voters lost: a commit quorum may be among them");
    assert!(e.to_string().contains("accept_data_loss"), "{e}");
    let plan = s
        .force_quorum(vec![me.clone()], true)
        .await
        .expect("forced");
    assert!(plan.may_lose);
    assert_eq!(plan.lost.len(), 2);
    wait_until("the survivor leads the forced configuration", || {
        s.status().state.role == Role::Primary
            && s.membership().config.forced
            && s.membership().config.voters().collect::<Vec<_>>() == vec![me.as_str()]
    })
    .await;
    let lsn = s.append(b"after".to_vec()).await.expect("commits alone");
    assert!(lsn > last, "nothing it held was cut: {lsn} > {last}");
    drop(s);
    for i in 0..5 {
        shutdown(&nodes, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_000_scenario_6_a_silent_member_is_deregistered_and_two_voters_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = World::new(dir.path());
    w.deregistration_timeout_ms = 1_500;
    let (nodes, leader) = form(&w).await;
    // A follower is terminated without a graceful leave.
    let gone = (0..3)
        .find(|&i| {
            snapshot(&nodes)[i]
                .as_ref()
                .is_some_and(|n| n.node_id() != leader.node_id())
        })
        .expect("a follower");
    let gone_id = format!("n{}", gone + 1);
    shutdown(&nodes, gone).await;
    wait_until("the silent member removed by the primary", || {
        let m = leader.membership();
        m.committed && m.config.member(&gone_id).is_none()
    })
    .await;
    assert_eq!(leader.membership().config.voters().count(), 2);
    let lsn = leader
        .append(b"after".to_vec())
        .await
        .expect("two voters commit");
    assert!(lsn > 0);
    drop(leader);
    for i in 0..5 {
        shutdown(&nodes, i).await;
    }
}

/// A member that was down while n4 was added and promoted, and n4 then took over as
/// primary: its node.toml and its log name no n4. n4's heartbeats carry n4's address
/// (election envelope v3), so it follows n4 and catches up, instead of staying without a
/// role until an operator edits its node.toml.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_missed_the_addition_of_its_new_primary_follows_it_from_its_heartbeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = World::new(dir.path());
    let (nodes, p) = form(&w).await;
    let pi: usize = p.node_id()[1..].parse::<usize>().expect("n<i>") - 1;
    let f = (0..3).find(|&i| i != pi).expect("a follower");
    drop(p);
    shutdown(&nodes, f).await;

    let n4 = w.open(3).await;
    let incarnation = n4.status().incarnation;
    nodes.lock().expect("nodes")[3] = Some(n4.clone());
    let cfg = change(
        &snapshot(&nodes),
        MemberChange::Add(ConfigMember {
            id: "n4".into(),
            incarnation,
            voter: false,
            addr: w.addrs[3].addr.to_string(),
            http_addr: None,
        }),
    )
    .await;
    wait_until("n4 holds the configuration that adds it", || {
        n4.membership().config.generation >= cfg.generation
    })
    .await;
    change(&snapshot(&nodes), MemberChange::Promote("n4".into())).await;
    let p = primary(&snapshot(&nodes)).await;
    p.switchover("n4", Duration::from_secs(10))
        .await
        .expect("switchover to n4");
    drop(p);
    wait_until("n4 leads", || n4.status().state.role == Role::Primary).await;
    // Its primary role opens right after it won.
    let deadline = Instant::now() + WAIT;
    let lsn = loop {
        match n4.append(b"after the switchover".to_vec()).await {
            Ok(lsn) => break lsn,
            Err(e) => {
                assert!(Instant::now() < deadline, "n4 takes no append: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // The member comes back with the node.toml and the log of before.
    let back = w.open(f).await;
    assert!(back.membership().config.member("n4").is_none());
    nodes.lock().expect("nodes")[f] = Some(back.clone());
    wait_until("it follows n4 and holds what n4 committed", || {
        let st = back.status();
        st.state.role == Role::Follower
            && st.state.primary.as_deref() == Some("n4")
            && st.replica.is_some()
            && st.log_head.lsn >= lsn
    })
    .await;
    wait_until("it counts votes in the configuration with n4", || {
        back.membership().config.is_voter("n4")
    })
    .await;
    drop((back, n4));
    for i in 0..4 {
        shutdown(&nodes, i).await;
    }
}
