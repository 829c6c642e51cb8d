//! `Node`: a cluster of members on loopback elects a primary, survives the loss of it
//! (every acknowledged record is on the new primary and applied there), and takes the old
//! primary back as a follower. Real QUIC with mutual TLS, real directories.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walship_node::election::Role;
use walship_node::replica::{Applier, ApplyError};
use walship_node::{MemberAddr, Node, NodeConfig, NodeError};
use walship_wal::control::ControlRecord;
use walship_wal::Lsn;
use walship_wire::{TlsFiles, TransportOptions};

/// Bound on any wait: only a hang reaches it; conditions decide.
const WAIT: Duration = Duration::from_secs(30);

/// One applied record: its lsn and payload (`None` for a control record).
type Applied = (Lsn, Option<Vec<u8>>);

/// Records every committed record (control records included), in lsn order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Applied>>>);

impl Recorder {
    fn payloads(&self) -> Vec<(Lsn, Vec<u8>)> {
        let g = self.0.lock().expect("lock");
        g.iter()
            .filter_map(|(l, p)| p.clone().map(|p| (*l, p)))
            .collect()
    }
    fn applied(&self) -> Lsn {
        self.0.lock().expect("lock").last().map_or(0, |r| r.0)
    }
    fn push(&self, lsn: Lsn, payload: Option<Vec<u8>>) -> Result<(), ApplyError> {
        let mut g = self.0.lock().expect("lock");
        let prev = g.last().map_or(0, |r| r.0);
        if lsn != prev + 1 {
            return Err(format!("applied lsn {lsn} after {prev}: out of order or twice").into());
        }
        g.push((lsn, payload));
        Ok(())
    }
}

impl Applier for Recorder {
    fn applied_lsn(&self) -> Lsn {
        self.applied()
    }
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        self.push(lsn, Some(payload.to_vec()))
    }
    fn apply_control(&mut self, lsn: Lsn, _control: &ControlRecord) -> Result<(), ApplyError> {
        self.push(lsn, None)
    }
}

fn free_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("local addr")
}

struct Cluster {
    root: PathBuf,
    members: Vec<MemberAddr>,
}

impl Cluster {
    fn new(root: &Path, n: usize) -> Cluster {
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
        }
    }

    fn config(&self, id: &str, quorum: i64) -> NodeConfig {
        let mut c = NodeConfig::new(
            id,
            "c1",
            self.root.join(id),
            self.members.clone(),
            TlsFiles::for_node(&self.root.join("certs"), id),
        );
        c.quorum = quorum;
        c.election_timeout_ms = 300;
        c.lease_ms = 300;
        c.commit_timeout_ms = 5_000;
        c.transport = TransportOptions {
            keep_alive_ms: 200,
            idle_timeout_ms: 3_000,
            ..TransportOptions::default()
        };
        c
    }

    /// Opens members n1..=nN (majority quorum), member i with `appliers[i]`.
    async fn open_all(&self, appliers: &[Recorder]) -> Vec<Option<Node>> {
        let mut nodes = Vec::new();
        for (i, a) in appliers.iter().enumerate() {
            nodes.push(Some(self.open(&format!("n{}", i + 1), -1, a.clone()).await));
        }
        nodes
    }

    async fn open(&self, id: &str, quorum: i64, applier: Recorder) -> Node {
        // A node just shut down may hold its UDP port for a moment longer (tasks holding
        // endpoint clones end after `shutdown` returns): retry the bind, bounded.
        let deadline = Instant::now() + WAIT;
        loop {
            match Node::open(self.config(id, quorum), applier.clone()).await {
                Ok(n) => return n,
                Err(NodeError::Endpoint(e)) if Instant::now() < deadline => {
                    eprintln!("{id}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open node {id}: {e}"),
            }
        }
    }
}

/// Waits until exactly one of `nodes` is primary, in an epoch above `above`; returns its index.
async fn wait_primary(nodes: &[Option<Node>], above: u64) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let primaries: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let s = n.as_ref()?.status().state;
                (s.role == Role::Primary && s.epoch > above).then_some(i)
            })
            .collect();
        if primaries.len() == 1 {
            return primaries[0];
        }
        assert!(primaries.len() <= 1, "two primaries at once: {primaries:?}");
        assert!(
            Instant::now() < deadline,
            "no primary elected within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends `payload` through `node`, retrying while it is not (yet) able to commit.
async fn append(node: &Node, payload: Vec<u8>) -> Lsn {
    let deadline = Instant::now() + WAIT;
    loop {
        match node.append(payload.clone()).await {
            Ok(lsn) => return lsn,
            Err(e @ NodeError::NotPrimary { .. }) => {
                assert!(Instant::now() < deadline, "append kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
}

async fn wait_applied(r: &Recorder, lsn: Lsn, what: &str) {
    let deadline = Instant::now() + WAIT;
    while r.applied() < lsn {
        assert!(
            Instant::now() < deadline,
            "{what}: applied {} of {lsn}",
            r.applied()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_elect_fail_over_and_take_the_old_primary_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3);
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let mut nodes = cluster.open_all(&appliers).await;
    let p = wait_primary(&nodes, 0).await;
    let first_epoch = nodes[p].as_ref().expect("node").status().state.epoch;
    let mut acked = Vec::new();
    for i in 0..20u32 {
        let payload = format!("first-{i}").into_bytes();
        let lsn = append(nodes[p].as_ref().expect("primary"), payload.clone()).await;
        acked.push((lsn, payload));
    }
    // The primary applies what it committed; lsn 1 is the epoch's control record.
    wait_applied(&appliers[p], acked[acked.len() - 1].0, "first primary").await;
    assert!(acked[0].0 >= 2, "the epoch's control record comes first");

    // Lose the primary: its handle goes away without a shutdown (its endpoint and tasks
    // are dropped; the others hear nothing more from it).
    let old = nodes[p].take().expect("primary");
    drop(old);
    let q = wait_primary(&nodes, first_epoch).await;
    assert_ne!(q, p);
    for i in 0..20u32 {
        let payload = format!("second-{i}").into_bytes();
        let lsn = append(nodes[q].as_ref().expect("primary"), payload.clone()).await;
        acked.push((lsn, payload));
    }
    let last = acked[acked.len() - 1].0;
    wait_applied(&appliers[q], last, "new primary").await;
    let applied = appliers[q].payloads();
    for (lsn, payload) in &acked {
        assert!(
            applied.contains(&(*lsn, payload.clone())),
            "acknowledged lsn {lsn} missing on the new primary"
        );
    }

    // The old primary comes back as a follower and catches up (its applier starts empty:
    // the replay and the stream give it everything).
    let back = Recorder::default();
    let id = format!("n{}", p + 1);
    nodes[p] = Some(cluster.open(&id, -1, back.clone()).await);
    wait_applied(&back, last, "the old primary, rejoined").await;
    assert_eq!(back.payloads(), applied, "same records, same lsns");
    let s = nodes[p].as_ref().expect("node").status();
    assert_eq!(s.state.role, Role::Follower, "{s:?}");
    assert_eq!(
        wait_primary(&nodes, first_epoch).await,
        q,
        "the rejoin did not disturb the primary"
    );
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_hands_over_to_the_named_member_without_losing_an_append() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3);
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let nodes = cluster.open_all(&appliers).await;
    let p = wait_primary(&nodes, 0).await;
    let epoch = nodes[p].as_ref().expect("node").status().state.epoch;
    let mut acked = Vec::new();
    for i in 0..30u32 {
        let payload = format!("before-{i}").into_bytes();
        acked.push((
            append(nodes[p].as_ref().expect("primary"), payload.clone()).await,
            payload,
        ));
    }
    let t = (p + 1) % 3;
    let target = format!("n{}", t + 1);
    let primary = nodes[p].as_ref().expect("primary");
    // Not to itself, not to a stranger.
    assert!(matches!(
        primary.switchover(&format!("n{}", p + 1), WAIT).await,
        Err(NodeError::Switchover { .. })
    ));
    let pause = primary
        .switchover(&target, WAIT)
        .await
        .expect("switchover completes");
    eprintln!("switchover write pause: {} ms", pause.as_millis());
    assert_eq!(
        wait_primary(&nodes, epoch).await,
        t,
        "the named member leads"
    );
    // The old primary refuses appends and points at the new one.
    match nodes[p]
        .as_ref()
        .expect("node")
        .append(b"late".to_vec())
        .await
    {
        Err(NodeError::NotPrimary { primary_hint, .. }) => {
            assert_eq!(primary_hint.as_deref(), Some(target.as_str()))
        }
        other => panic!("the old primary must refuse: {other:?}"),
    }
    for i in 0..30u32 {
        let payload = format!("after-{i}").into_bytes();
        acked.push((
            append(nodes[t].as_ref().expect("primary"), payload.clone()).await,
            payload,
        ));
    }
    let last = acked[acked.len() - 1].0;
    for (i, a) in appliers.iter().enumerate() {
        wait_applied(a, last, &format!("n{}", i + 1)).await;
        let applied = a.payloads();
        for rec in &acked {
            assert!(
                applied.contains(rec),
                "n{}: acknowledged {rec:?} missing",
                i + 1
            );
        }
    }
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

/// `state/identity` (spec/state-files.md §3.5): a member keeps its
/// incarnation across restarts, refuses another cluster's directory and
/// another member's, and a new cluster forms only with every member up
/// (spec/election.md §2.10: two of three empty members elect no one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fm_f_5_identity_is_kept_other_clusters_refused_and_a_new_cluster_needs_every_member() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::new(tmp.path(), 3);
    let mut nodes = vec![
        Some(c.open("n1", -1, Recorder::default()).await),
        Some(c.open("n2", -1, Recorder::default()).await),
        None,
    ];
    // Three election timeouts (300 ms) and more: n1 and n2 alone form nothing.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for n in nodes.iter().flatten() {
        let s = n.status();
        assert_ne!(
            s.state.role,
            Role::Primary,
            "{} leads a cluster n3 never joined",
            s.node_id
        );
    }
    nodes[2] = Some(c.open("n3", -1, Recorder::default()).await);
    let p = wait_primary(&nodes, 0).await;
    let lsn = append(nodes[p].as_ref().expect("primary"), b"x".to_vec()).await;
    assert!(lsn >= 2, "the epoch-start record is lsn 1");
    // Each replica role announces its directory's incarnation in its Hello (protocol
    // version 3); the commit needed one receipt, so at least one replica is known.
    let primary = nodes[p].as_ref().expect("primary").status().primary;
    let seen = primary.expect("primary status").replicas;
    assert!(seen.iter().any(|r| r.incarnation.is_some()), "{seen:?}");
    for r in seen {
        let own = nodes
            .iter()
            .flatten()
            .map(|n| n.status())
            .find(|s| s.node_id == r.node_id);
        let own = own.expect("a member").incarnation;
        assert!(
            r.incarnation.is_none_or(|i| i == own),
            "{}: {r:?}, own {own:016x}",
            r.node_id
        );
    }

    let n2 = nodes[1].take().expect("n2");
    let incarnation = n2.status().incarnation;
    assert_ne!(incarnation, 0);
    n2.shutdown().await;

    let mut other = c.config("n2", -1);
    other.cluster_id = "c2".into();
    match Node::open(other, Recorder::default()).await {
        Err(NodeError::Identity(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("\"c1\"") && msg.contains("\"c2\""), "{msg}");
        }
        Err(e) => panic!("another cluster's directory refused for the wrong reason: {e}"),
        Ok(_) => panic!("a member opened another cluster's directory"),
    }
    let mut swapped = c.config("n2", -1);
    swapped.data_dir = tmp.path().join("n1-copy");
    std::fs::create_dir_all(swapped.data_dir.join("state")).expect("mkdir");
    std::fs::copy(
        tmp.path().join("n1/state/identity"),
        swapped.data_dir.join("state/identity"),
    )
    .expect("copy n1's identity");
    assert!(
        matches!(
            Node::open(swapped, Recorder::default()).await,
            Err(NodeError::Identity(_))
        ),
        "n2 opened n1's directory"
    );

    let n2 = c.open("n2", -1, Recorder::default()).await;
    assert_eq!(
        n2.status().incarnation,
        incarnation,
        "kept across a restart"
    );
    n2.shutdown().await;
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

/// FM-F.4 in production: a replica persists its acknowledged mark (`state/acked`, at most
/// once per heartbeat interval and at a clean shutdown); restarted with a log cut below the
/// mark (a disk that lost synced records), it reports the mark as `required_lsn`, is
/// ineligible (it neither votes nor leads, a promotion is refused) until its replica role
/// re-fetched past the mark, and then eligible again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fm_f_4_a_member_restarted_below_its_acknowledged_mark_is_ineligible_until_it_refetched() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3);
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Some(
            cluster
                .open(&format!("n{}", i + 1), -1, Recorder::default())
                .await,
        ));
    }
    let p = wait_primary(&nodes, 0).await;
    let r = (p + 1) % 3;
    let mut last = 0;
    for i in 0..30u32 {
        last = append(
            nodes[p].as_ref().expect("primary"),
            format!("rec-{i}").into_bytes(),
        )
        .await;
    }
    // The mark follows the receipts (persisted within a heartbeat interval).
    let deadline = Instant::now() + WAIT;
    loop {
        let s = nodes[r].as_ref().expect("replica").status();
        if s.acked_lsn >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mark never reached {last}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = format!("n{}", r + 1);
    nodes[r].take().expect("replica").shutdown().await;
    let dir = tmp.path().join(&id);
    let state = dir.join(walship_wal::state::STATE_DIR);
    let mark = walship_wal::state::read_acked_lsn(&walship_wal::FsStorage, &state).expect("mark");
    assert!(mark >= last, "mark {mark} covers every receipt ({last})");
    // A power loss: the persisted commit watermark lags (it was last written at lsn
    // `keep`), and the disk, which lied about fsync, lost the ten records above it that it
    // had synced and acknowledged. The commit watermark alone does not notice (a replica
    // whose log ends below it halts `local-corruption`, FM-X.6); the mark does.
    let keep = mark - 10;
    walship_wal::state::NodeDir::open(walship_wal::FsStorage, &dir)
        .expect("node dir")
        .set_commit_lsn(keep)
        .expect("commit");
    {
        let (mut wal, _) = walship_wal::Wal::open(
            walship_wal::FsStorage,
            &dir.join(walship_wal::state::WAL_DIR),
            walship_wal::WalOptions::default(),
        )
        .expect("wal");
        wal.truncate_tail(keep).expect("cut");
    }
    let back = cluster.open(&id, -1, Recorder::default()).await;
    let s = back.status();
    assert_eq!(s.acked_lsn, mark);
    assert!(s.required_lsn >= mark, "{s:?}");
    // Ineligible from the start, before the replica role got anything.
    assert!(
        matches!(
            back.promote(true).await,
            Err(NodeError::Promote(
                walship_node::election::PromoteError::Ineligible
            ))
        ),
        "a member below its mark may not be promoted"
    );
    nodes[r] = Some(back);
    // It re-fetches from the primary and becomes eligible once its log reaches the mark.
    let deadline = Instant::now() + WAIT;
    let mut seen_ineligible = false;
    loop {
        let s = nodes[r].as_ref().expect("member").status();
        let durable = s.replica.as_ref().and_then(|x| x.durable_lsn).unwrap_or(0);
        let ineligible = s
            .election_blocked_on
            .as_deref()
            .is_some_and(|b| b.starts_with("ineligible"));
        seen_ineligible |= ineligible;
        if !ineligible && seen_ineligible {
            // (Before the driver's first publish the status says nothing yet.)
            assert!(
                durable >= mark,
                "eligible at durable {durable} below the mark {mark}: {s:?}"
            );
        }
        if !ineligible && durable >= mark {
            break;
        }
        assert!(Instant::now() < deadline, "never eligible again: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

/// A switchover drains the primary and waits until the target holds its whole log; a
/// configuration record written in that window would leave the target behind the voters
/// it then asks for votes, and it would lose (seen in CI: the primary's own bootstrap
/// record, proposed as the target reconnected). While the drain lasts the primary refuses
/// membership changes, pointing at the target, and the hand-over then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_refuses_membership_changes_while_it_drains_and_the_target_still_leads() {
    use walship_node::membership::MemberChange;
    use walship_wal::control::ConfigMember;

    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::new(tmp.path(), 3);
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let mut nodes = cluster.open_all(&appliers).await;
    let p = wait_primary(&nodes, 0).await;
    let epoch = nodes[p].as_ref().expect("node").status().state.epoch;
    // The primary writes the first configuration record by itself once all connected.
    let deadline = Instant::now() + WAIT;
    while nodes[p]
        .as_ref()
        .expect("primary")
        .membership()
        .config
        .generation
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "no bootstrap configuration record"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..10u32 {
        append(
            nodes[p].as_ref().expect("primary"),
            format!("a-{i}").into_bytes(),
        )
        .await;
    }
    // The target goes down, so the drain lasts until it is back and caught up.
    let t = (p + 1) % 3;
    let target = format!("n{}", t + 1);
    nodes[t].take().expect("target").shutdown().await;
    for i in 0..10u32 {
        append(
            nodes[p].as_ref().expect("primary"),
            format!("b-{i}").into_bytes(),
        )
        .await;
    }
    let generation = nodes[p]
        .as_ref()
        .expect("primary")
        .membership()
        .config
        .generation;
    let primary = nodes[p].as_ref().expect("primary");
    let probe = async {
        // The drain shows: appends are refused and pointed at the target.
        let deadline = Instant::now() + WAIT;
        loop {
            match primary.append(b"probe".to_vec()).await {
                Err(NodeError::NotPrimary { primary_hint, .. })
                    if primary_hint.as_deref() == Some(target.as_str()) =>
                {
                    break
                }
                _ => {}
            }
            assert!(Instant::now() < deadline, "the drain never showed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A learner would be added at once outside a switchover (n1 and n2 commit it).
        let change = primary
            .change_membership(MemberChange::Add(ConfigMember {
                id: "n9".into(),
                incarnation: 9,
                voter: false,
                addr: "127.0.0.1:9".into(),
                http_addr: None,
            }))
            .await;
        match change {
            Err(NodeError::NotPrimary { primary_hint, .. }) => {
                assert_eq!(primary_hint.as_deref(), Some(target.as_str()))
            }
            other => panic!("a membership change during the drain must be refused: {other:?}"),
        }
        // The target comes back, catches up, and the hand-over goes on.
        cluster.open(&target, -1, appliers[t].clone()).await
    };
    let (switched, revived) = tokio::join!(primary.switchover(&target, WAIT), probe);
    nodes[t] = Some(revived);
    switched.expect("switchover completes");
    assert_eq!(wait_primary(&nodes, epoch).await, t, "the target leads");
    let new = nodes[t].as_ref().expect("new primary");
    assert!(
        new.membership().config.member("n9").is_none(),
        "the refused change was not written"
    );
    assert_eq!(new.membership().config.generation, generation);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}
