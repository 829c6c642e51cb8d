//! Snapshot transfer over real QUIC on loopback: a real primary whose WAL was truncated
//! behind a snapshot, and real walship-replica replicas with a key-value applier that can
//! restore snapshots (issue 4; spec/snapshot-format.md §2.2, §5, §6).

mod support;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use support::*;
use walship_node::primary::{Primary, PrimaryConfig, Quorum};
use walship_node::replica::{Applier, ApplyError, HaltReason, Replica, ReplicaConfig};
use walship_snapshot::{BoundaryMembership, SnapshotSink, SnapshotSource};
use walship_wal::control::{ConfigMember, Configuration};
use walship_wal::segment::segment_file_name;
use walship_wal::state::{EpochHistory, NodeDir};
use walship_wal::{FsStorage, Lsn, Position, Wal, WalOptions};

const MEMBERS: &[&str] = &["p", "r1"];
/// Records before the snapshot, and after it.
const BEFORE: u64 = 300;
const AFTER: u64 = 50;

/// A tiny key-value store: `key=value` records; its snapshot is the map as lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KvState {
    map: BTreeMap<String, String>,
    applied: Lsn,
}

#[derive(Clone, Default)]
struct Kv(Arc<Mutex<KvState>>);

impl Kv {
    fn state(&self) -> KvState {
        self.0.lock().expect("lock").clone()
    }

    fn apply_op(&self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        let text = std::str::from_utf8(payload)?;
        let (k, v) = text.split_once('=').ok_or("not a kv record")?;
        let mut s = self.0.lock().map_err(|_| "lock poisoned")?;
        assert_eq!(lsn, s.applied + 1, "records applied in order, each once");
        s.map.insert(k.to_string(), v.to_string());
        s.applied = lsn;
        Ok(())
    }
}

impl Applier for Kv {
    fn applied_lsn(&self) -> Lsn {
        self.0.lock().expect("lock").applied
    }
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        self.apply_op(lsn, payload)
    }
    fn apply_control(
        &mut self,
        lsn: Lsn,
        _: &walship_wal::control::ControlRecord,
    ) -> Result<(), ApplyError> {
        self.control_applied(lsn);
        Ok(())
    }
    fn snapshot_sink(&mut self) -> Option<&mut dyn SnapshotSink> {
        Some(self)
    }
}

impl Kv {
    /// A control record (the node's own) at `lsn` was applied: the next record is `lsn + 1`.
    fn control_applied(&self, lsn: Lsn) {
        let mut s = self.0.lock().expect("lock");
        assert_eq!(lsn, s.applied + 1, "records applied in order, each once");
        s.applied = lsn;
    }
}

impl SnapshotSource for Kv {
    fn write_snapshot(&mut self, w: &mut dyn Write) -> io::Result<Lsn> {
        let s = self.state();
        for (k, v) in &s.map {
            writeln!(w, "{k}={v}")?;
        }
        Ok(s.applied)
    }
}

impl SnapshotSink for Kv {
    fn restore_snapshot(&mut self, boundary: Position, r: &mut dyn Read) -> io::Result<()> {
        let mut text = String::new();
        r.read_to_string(&mut text)?;
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad line"))?;
            map.insert(k.to_string(), v.to_string());
        }
        *self.0.lock().expect("lock") = KvState {
            map,
            applied: boundary.lsn,
        };
        Ok(())
    }
}

fn primary_config(cluster: &Cluster) -> PrimaryConfig {
    let mut c = cluster.primary_config(MEMBERS, Quorum::LocalOnly);
    c.segment_size_bytes = 8 * 1024;
    // Small chunks: a snapshot of this store is several chunks.
    c.snapshot_chunk_size_bytes = 64;
    // Every replica behind the snapshot is switched to it: the WAL keeps only what follows.
    c.max_retained_wal_bytes = 0;
    c
}

fn replica_config(cluster: &Cluster, node: &str, primary: &Primary) -> ReplicaConfig {
    let mut c = ReplicaConfig::new(
        node,
        CLUSTER,
        cluster.data_dir(node),
        primary.local_addr().expect("addr"),
        "p",
        cluster.tls(node),
    );
    c.bind_addr = "127.0.0.1:0".parse().expect("addr");
    c.wal.segment_size_bytes = 8 * 1024;
    c.backoff_initial_ms = 20;
    c.backoff_max_ms = 200;
    c
}

/// Appends records `from..to` one at a time, applying each to `kv` (the primary's state).
async fn append_kv(primary: &Primary, kv: &Kv, from: u64, to: u64) {
    for i in from..to {
        let payload = format!("k{}=v{i}", i % 37);
        let lsn = primary
            .append(payload.clone().into_bytes())
            .await
            .expect("committed");
        kv.apply_op(lsn, payload.as_bytes()).expect("apply");
    }
}

/// A primary with `BEFORE` records, a snapshot at lsn `BEFORE` and its WAL truncated
/// behind it, then `AFTER` more records. Returns the primary's state and the snapshot boundary.
async fn primary_with_truncated_wal(primary: &Primary) -> (Kv, Position) {
    let kv = Kv::default();
    append_kv(primary, &kv, 0, BEFORE).await;
    let snap = primary.create_snapshot(&mut kv.clone()).expect("snapshot");
    assert_eq!(snap.boundary.lsn, BEFORE);
    let first = primary.enforce_retention().expect("retention").first_lsn;
    assert!(
        first > 1 && first <= BEFORE + 1,
        "the WAL is truncated behind the snapshot (first lsn {first})"
    );
    append_kv(primary, &kv, BEFORE, BEFORE + AFTER).await;
    (kv, snap.boundary)
}

fn snapshot_dirs(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("snapshots"))
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_x_13_empty_replica_catches_up_through_a_snapshot_over_quic_and_matches_the_primary() {
    let cluster = Cluster::new(MEMBERS);
    // Each side counts the transfer in its own metrics (`walship_snapshot_transfers_*`).
    let (pm, rm) = (
        walship_node::metrics::NodeMetrics::new(),
        walship_node::metrics::NodeMetrics::new(),
    );
    let mut pc = primary_config(&cluster);
    pc.metrics = Some(pm.role().clone());
    let primary = open_primary(pc);
    let (kv, boundary) = primary_with_truncated_wal(&primary).await;

    let applier = Kv::default();
    let mut rc = replica_config(&cluster, "r1", &primary);
    rc.metrics = Some(rm.role().clone());
    let replica = Replica::open(rc, applier.clone()).expect("open");
    let total = BEFORE + AFTER;
    eventually("replica applies everything", || {
        applier.state().applied == total
    })
    .await;
    assert_eq!(
        applier.state(),
        kv.state(),
        "applied state identical to the primary's"
    );
    let st = replica.status();
    assert!(st.halt().is_none(), "no halt: {st:?}");
    assert!(st.sessions >= 2, "reconnected after the install: {st:?}");
    assert!(
        pm.role().snapshots_sent.get() >= 1,
        "the primary counted the transfer"
    );
    assert_eq!(
        rm.role().snapshots_installed.get(),
        1,
        "the replica counted its one install"
    );
    assert_eq!(
        snapshot_dirs(&cluster.data_dir("r1")),
        vec![format!("{:020}", boundary.lsn)],
        "exactly the installed snapshot, no tmp left"
    );
    // The replica keeps streaming after the snapshot.
    append_kv(&primary, &kv, total, total + 10).await;
    eventually("replica applies the new records", || {
        applier.state().applied == total + 10
    })
    .await;
    assert_eq!(applier.state(), kv.state());
    replica.shutdown().await.expect("shutdown");

    // FM-10.5 on restart: an in-memory applier starts empty; it is restored from the
    // installed snapshot and the WAL after it is replayed.
    let fresh = Kv::default();
    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), fresh.clone()).expect("reopen");
    assert_eq!(
        fresh.state(),
        kv.state(),
        "restored from the snapshot and replayed before open returned"
    );
    replica.shutdown().await.expect("shutdown");
    primary.shutdown().await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_7_1_corrupt_snapshot_chunk_over_quic_halts_snapshot_invalid_and_leaves_replica_unchanged(
) {
    use walship_node::primary::SnapshotFault;
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(primary_config(&cluster));
    let (_kv, boundary) = primary_with_truncated_wal(&primary).await;
    primary.inject_snapshot_fault("r1", SnapshotFault::CorruptChunk { index: 1 });

    let applier = Kv::default();
    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), applier.clone()).expect("open");
    eventually("replica halts", || replica.status().halt().is_some()).await;
    let st = replica.status();
    let halt = st.halt().expect("halted").clone();
    assert_eq!(halt.reason, HaltReason::SnapshotInvalid, "{halt:?}");
    assert_eq!(halt.lsn, boundary.lsn);
    assert!(halt.found.contains("chunk"), "names the chunk: {halt:?}");
    assert!(
        replica.check_readable().is_err(),
        "reads refused while halted"
    );
    assert_eq!(applier.state(), KvState::default(), "nothing applied");
    replica.shutdown().await.expect("shutdown");
    // Unchanged: no snapshot installed, no tmp left, WAL empty, no commit watermark.
    let dir = cluster.data_dir("r1");
    assert!(snapshot_dirs(&dir).is_empty(), "{:?}", snapshot_dirs(&dir));
    let node = NodeDir::open(FsStorage, &dir).expect("node dir");
    assert_eq!(node.commit_lsn().expect("commit"), 0);
    let (wal, _) = Wal::open(FsStorage, node.wal_dir(), WalOptions::default()).expect("wal");
    assert_eq!(wal.last(), Position::ZERO);
    // Halted across restarts.
    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), Kv::default()).expect("reopen");
    assert_eq!(
        replica.status().halt().map(|h| h.reason),
        Some(HaltReason::SnapshotInvalid)
    );
    replica.shutdown().await.expect("shutdown");
    primary.shutdown().await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_x_8_connection_dropped_mid_snapshot_transfer_is_no_halt_and_the_retry_installs() {
    use walship_node::primary::SnapshotFault;
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(primary_config(&cluster));
    let (kv, boundary) = primary_with_truncated_wal(&primary).await;
    primary.inject_snapshot_fault("r1", SnapshotFault::CloseAfterChunk { index: 2 });

    let applier = Kv::default();
    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), applier.clone()).expect("open");
    let total = BEFORE + AFTER;
    eventually("replica applies everything after a retry", || {
        applier.state().applied == total || replica.status().halt().is_some()
    })
    .await;
    let st = replica.status();
    assert!(st.halt().is_none(), "a cut transfer is not a halt: {st:?}");
    assert_eq!(applier.state(), kv.state());
    assert!(
        st.sessions >= 3,
        "cut transfer, retried transfer, streaming: {st:?}"
    );
    assert_eq!(
        snapshot_dirs(&cluster.data_dir("r1")),
        vec![format!("{:020}", boundary.lsn)],
        "the partial snapshot was discarded"
    );
    replica.shutdown().await.expect("shutdown");
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_7_2_snapshot_boundary_conflicting_with_replica_wal_halts_snapshot_boundary() {
    let cluster = Cluster::new(MEMBERS);
    // The primary: epoch 1 up to the snapshot, then promoted to epoch 3.
    let primary = open_primary(primary_config(&cluster));
    let (_kv, boundary) = primary_with_truncated_wal(&primary).await;
    assert_eq!(boundary.epoch, 1);
    let last = primary.durable_lsn();
    primary.shutdown().await;
    {
        let node = NodeDir::open(FsStorage, &cluster.data_dir("p")).expect("node dir");
        let mut h = node.epochs().expect("epochs");
        h.push(3, last + 1).expect("push epoch");
        node.set_epochs(&h).expect("set epochs");
    }
    let primary = open_primary(primary_config(&cluster));

    // The replica holds records of epoch 2 (a deposed primary's history) at lsns 1..=5:
    // the epoch-1 boundary at lsn 300 cannot follow them.
    let rdir = cluster.data_dir("r1");
    let replica_last = {
        let node = NodeDir::open(FsStorage, &rdir).expect("node dir");
        let mut h = EpochHistory::new();
        h.push(2, 1).expect("push epoch");
        node.set_epochs(&h).expect("set epochs");
        let opts = WalOptions {
            epoch: 2,
            segment_size_bytes: 8 * 1024,
            ..WalOptions::default()
        };
        let (mut wal, _) = Wal::open(FsStorage, node.wal_dir(), opts).expect("wal");
        for i in 0..5 {
            wal.append(format!("old{i}=x").as_bytes()).expect("append");
        }
        wal.sync().expect("sync");
        wal.last()
    };

    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), Kv::default()).expect("open");
    eventually("replica halts", || replica.status().halt().is_some()).await;
    let halt = replica.status().halt().expect("halted").clone();
    assert_eq!(halt.reason, HaltReason::SnapshotBoundary, "{halt:?}");
    assert_eq!(halt.lsn, boundary.lsn);
    replica.shutdown().await.expect("shutdown");
    // Not installed: no snapshot, the WAL exactly as it was.
    assert!(
        snapshot_dirs(&rdir).is_empty(),
        "{:?}",
        snapshot_dirs(&rdir)
    );
    let node = NodeDir::open(FsStorage, &rdir).expect("node dir");
    let opts = WalOptions {
        epoch: 2,
        segment_size_bytes: 8 * 1024,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(FsStorage, node.wal_dir(), opts).expect("wal");
    assert_eq!(wal.last(), replica_last);
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_4_3_replica_restarting_after_a_crash_mid_install_discards_the_partial_snapshot_and_catches_up(
) {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(primary_config(&cluster));
    let (kv, _boundary) = primary_with_truncated_wal(&primary).await;
    // What a crash during an install leaves: a partial snapshot in a tmp directory.
    let rdir = cluster.data_dir("r1");
    let tmp = rdir.join("snapshots").join(format!("tmp-{:020}-0", BEFORE));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    std::fs::write(tmp.join("snapshot"), b"WSSN partial").expect("partial file");

    let applier = Kv::default();
    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), applier.clone()).expect("open");
    assert!(!tmp.exists(), "the partial snapshot is discarded at open");
    eventually("replica catches up", || {
        applier.state().applied == BEFORE + AFTER || replica.status().halt().is_some()
    })
    .await;
    assert!(replica.status().halt().is_none(), "no halt");
    assert_eq!(applier.state(), kv.state());
    replica.shutdown().await.expect("shutdown");
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_10_5_replica_restarting_after_the_install_commit_point_resets_its_wal_to_the_boundary()
{
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(primary_config(&cluster));
    let (kv, boundary) = primary_with_truncated_wal(&primary).await;
    // What a crash right after the install's commit point leaves: the snapshot published
    // (renamed into place) and the old WAL (here empty) not yet reset.
    let name = format!("{:020}", boundary.lsn);
    let src = cluster.data_dir("p").join("snapshots").join(&name);
    let dst = cluster.data_dir("r1").join("snapshots").join(&name);
    std::fs::create_dir_all(&dst).expect("snapshot dir");
    std::fs::copy(src.join("snapshot"), dst.join("snapshot")).expect("copy snapshot");

    let applier = Kv::default();
    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), applier.clone()).expect("open");
    // Before anything streamed: the applier was restored from the snapshot, never mixed
    // with the old WAL.
    assert!(applier.state().applied >= boundary.lsn);
    eventually("replica catches up from the boundary", || {
        applier.state().applied == BEFORE + AFTER || replica.status().halt().is_some()
    })
    .await;
    let st = replica.status();
    assert!(st.halt().is_none(), "no halt: {st:?}");
    assert_eq!(applier.state(), kv.state());
    replica.shutdown().await.expect("shutdown");
    let node = NodeDir::open(FsStorage, &cluster.data_dir("r1")).expect("node dir");
    let (wal, _) = Wal::open(FsStorage, node.wal_dir(), WalOptions::default()).expect("wal");
    assert_eq!(
        wal.first_lsn(),
        boundary.lsn + 1,
        "the WAL restarts after the boundary"
    );
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_policy_creates_a_snapshot_and_truncates_so_an_empty_replica_catches_up_through_it(
) {
    let cluster = Cluster::new(MEMBERS);
    let mut config = primary_config(&cluster);
    config.snapshot_policy = walship_node::primary::SnapshotPolicy {
        every_records: Some(100),
        every_bytes: None,
    };
    config.maintenance_interval_ms = 20;
    let primary = open_primary(config);
    let kv = Kv::default();
    append_kv(&primary, &kv, 0, BEFORE).await;
    // Registered once every record is committed and applied, so the policy's snapshot is
    // at lsn BEFORE. Registered earlier, a maintenance round in the middle of the appends
    // takes a snapshot inside the first segment, which retention cannot truncate (whole
    // segments only), and the replica then rightly catches up through the WAL.
    primary.set_snapshot_source(Box::new(kv.clone()));
    let pdir = cluster.data_dir("p");
    let first_segment = pdir.join("wal").join(segment_file_name(1));
    // The snapshot is published (renamed into place) before retention truncates behind it:
    // wait for both, or the replica may connect in between and stream from lsn 1.
    eventually(
        "the policy's snapshot is published and the WAL truncated behind it",
        || snapshot_dirs(&pdir) == [format!("{BEFORE:020}")] && !first_segment.exists(),
    )
    .await;

    let applier = Kv::default();
    let replica =
        Replica::open(replica_config(&cluster, "r1", &primary), applier.clone()).expect("open");
    eventually("replica catches up", || {
        applier.state().applied == BEFORE || replica.status().halt().is_some()
    })
    .await;
    assert!(replica.status().halt().is_none());
    assert_eq!(applier.state(), kv.state());
    assert_eq!(
        snapshot_dirs(&cluster.data_dir("r1")).len(),
        1,
        "the replica caught up through the policy's snapshot (the WAL behind it was truncated)"
    );
    replica.shutdown().await.expect("shutdown");
    primary.shutdown().await;
}

/// The members of this file's cluster with incarnations, at `generation`; `r2` joins as a
/// learner from generation 2 on.
fn configuration(generation: u64) -> Configuration {
    let mut members: Vec<ConfigMember> = ["p", "r1"]
        .iter()
        .enumerate()
        .map(|(i, id)| ConfigMember {
            id: (*id).to_string(),
            incarnation: 11 + i as u64,
            voter: true,
            addr: format!("{id}.example:7000"),
            http_addr: None,
        })
        .collect();
    if generation >= 2 {
        members.push(ConfigMember {
            id: "r2".into(),
            incarnation: 13,
            voter: false,
            addr: "r2.example:7000".into(),
            http_addr: None,
        });
    }
    Configuration {
        generation,
        forced: false,
        members,
    }
}

/// Configuration records before a snapshot's boundary are gone from a WAL truncated behind
/// it and from a replica's WAL reset to it; the snapshot's configuration file carries the
/// configuration in force there (spec/snapshot-format.md §1.5). Without it, the primary
/// reopened on its truncated WAL and the replica that installed the snapshot would both
/// count votes in the static member list (generation 0) again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_before_the_snapshot_boundary_survives_truncation_install_and_restart() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(primary_config(&cluster));
    let kv = Kv::default();
    append_kv(&primary, &kv, 0, 100).await;
    for generation in [1, 2] {
        let lsn = primary
            .propose_configuration(configuration(generation))
            .await
            .expect("configuration committed");
        kv.control_applied(lsn);
    }
    let config_lsn = primary.membership().lsn;
    assert_eq!(primary.membership().config, configuration(2));
    append_kv(&primary, &kv, 102, BEFORE).await;
    let snap = primary.create_snapshot(&mut kv.clone()).expect("snapshot");
    assert_eq!(snap.boundary.lsn, BEFORE);
    assert_eq!(
        snap.membership,
        BoundaryMembership::Record {
            lsn: config_lsn,
            config: configuration(2)
        }
    );
    let first = primary.enforce_retention().expect("retention").first_lsn;
    assert!(
        first > config_lsn + 1,
        "the WAL no longer holds the configuration records (first lsn {first})"
    );
    append_kv(&primary, &kv, BEFORE, BEFORE + AFTER).await;

    // A replica that starts empty installs the snapshot and knows generation 2.
    let mut rc = replica_config(&cluster, "r1", &primary);
    rc.base_config = Some(walship_node::membership::base_configuration(
        configuration(1).members.into_iter().map(|mut m| {
            m.incarnation = 0;
            m
        }),
    ));
    let applier = Kv::default();
    let replica = Replica::open(rc.clone(), applier.clone()).expect("open");
    eventually("the replica catches up through the snapshot", || {
        applier.state().applied == BEFORE + AFTER || replica.status().halt().is_some()
    })
    .await;
    assert!(replica.status().halt().is_none());
    assert_eq!(
        snapshot_dirs(&cluster.data_dir("r1")),
        vec![format!("{BEFORE:020}")]
    );
    let m = replica.status().membership.expect("tracked");
    assert_eq!((m.lsn, &m.config), (config_lsn, &configuration(2)));
    replica.shutdown().await.expect("shutdown");
    // Restarted on its WAL that starts after the boundary: still generation 2.
    let replica = Replica::open(rc, Kv::default()).expect("reopen");
    let m = replica.status().membership.expect("tracked");
    assert_eq!((m.lsn, &m.config), (config_lsn, &configuration(2)));
    replica.shutdown().await.expect("shutdown");

    // The primary reopened on its truncated WAL: still generation 2.
    primary.shutdown().await;
    let primary = open_primary(primary_config(&cluster));
    assert_eq!(primary.membership().lsn, config_lsn);
    assert_eq!(primary.membership().config, configuration(2));
    primary.shutdown().await;
}
