//! Three real nodes over QUIC on loopback: this primary and two walship-replica replicas.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use walship_node::primary::{Primary, Quorum};
use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaStatus};
use walship_wal::Lsn;

const MEMBERS: &[&str] = &["p", "r1", "r2"];

/// Records every apply; survives replica restarts (the embedder's own durable state).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Applied>>>);

/// One apply: lsn and payload.
type Applied = (Lsn, Vec<u8>);

impl Recorder {
    fn lsns(&self) -> Vec<Lsn> {
        self.0.lock().expect("lock").iter().map(|r| r.0).collect()
    }
}

impl Applier for Recorder {
    fn applied_lsn(&self) -> Lsn {
        self.0.lock().expect("lock").last().map_or(0, |r| r.0)
    }
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        self.0.lock().expect("lock").push((lsn, payload.to_vec()));
        Ok(())
    }
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
    c.wal.segment_size_bytes = 256 * 1024;
    c.backoff_initial_ms = 20;
    c.backoff_max_ms = 200;
    c
}

async fn wait_status(replica: &Replica, what: &str, f: impl Fn(&ReplicaStatus) -> bool) {
    eventually(what, || f(&replica.status())).await;
}

fn records_from_env() -> u64 {
    std::env::var("WALSHIP_REPL_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Starts `writers` concurrent writers appending records `from..to` (`record {i} xxx...`);
/// the handle resolves when all committed.
fn spawn_appends(
    primary: &Primary,
    from: u64,
    to: u64,
    writers: u64,
) -> tokio::task::JoinHandle<()> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let appends: Vec<_> = (from..to)
            .filter(|i| i % writers == w)
            .map(|i| primary.append(format!("record {i} {}", "x".repeat(64))))
            .collect();
        tasks.push(tokio::spawn(async move {
            for a in appends {
                a.await.expect("committed");
            }
        }));
    }
    tokio::spawn(async move {
        for t in tasks {
            t.await.expect("writer");
        }
    })
}

async fn append_all(primary: &Primary, n: u64, writers: u64) {
    spawn_appends(primary, 0, n, writers)
        .await
        .expect("writers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_replica_wal_files_are_byte_identical() {
    let n = records_from_env();
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let a1 = Recorder::default();
    let a2 = Recorder::default();
    let r1 = Replica::open(replica_config(&cluster, "r1", &primary), a1.clone()).expect("r1");
    let r2 = Replica::open(replica_config(&cluster, "r2", &primary), a2.clone()).expect("r2");

    append_all(&primary, n, 16).await;
    assert_eq!(primary.commit_lsn(), n);
    for r in [&r1, &r2] {
        wait_status(r, "replica applied everything", |s| s.applied_lsn == n).await;
        assert!(r.halt().is_none());
    }
    assert_eq!(a1.lsns(), (1..=n).collect::<Vec<_>>());
    assert_eq!(a2.lsns(), (1..=n).collect::<Vec<_>>());
    let status = primary.status();
    assert!(status
        .replicas
        .iter()
        .all(|r| r.durable_lsn == n && r.lag_records == 0));
    r1.shutdown().await.expect("r1 shutdown");
    r2.shutdown().await.expect("r2 shutdown");
    primary.shutdown().await;

    let ours = wal_files(&cluster.data_dir("p"));
    assert!(ours.len() > 1, "several segments");
    for node in ["r1", "r2"] {
        let theirs = wal_files(&cluster.data_dir(node));
        assert_eq!(
            ours.iter().map(|f| &f.0).collect::<Vec<_>>(),
            theirs.iter().map(|f| &f.0).collect::<Vec<_>>(),
            "{node}: same segment names"
        );
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(a.1 == b.1, "{node}: segment {} differs", a.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_dropped_and_restarted_mid_stream_resumes_without_gaps_or_double_apply() {
    let n: u64 = 4_000;
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let a1 = Recorder::default();
    let r1 = Replica::open(replica_config(&cluster, "r1", &primary), a1.clone()).expect("r1");
    let r2 = Replica::open(
        replica_config(&cluster, "r2", &primary),
        Recorder::default(),
    )
    .expect("r2");

    append_all(&primary, n / 2, 8).await;
    // Kill r1 (dropped, no orderly shutdown) while records keep coming; r2 keeps the majority.
    drop(r1);
    let second = spawn_appends(&primary, n / 2, n, 8);
    // Restart as soon as the directory lock is free (the killed driver exits on its own).
    let r1 = loop {
        match Replica::open(replica_config(&cluster, "r1", &primary), a1.clone()) {
            Ok(r) => break r,
            Err(walship_node::replica::ReplicaError::State(
                walship_wal::state::StateError::Locked { .. },
            )) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(e) => panic!("reopen r1: {e}"),
        }
    };
    second.await.expect("writer");
    wait_status(&r1, "r1 applied everything", |s| s.applied_lsn == n).await;
    assert!(r1.halt().is_none());
    // Every lsn applied exactly once, in order.
    assert_eq!(a1.lsns(), (1..=n).collect::<Vec<_>>());
    r1.shutdown().await.expect("r1");
    r2.shutdown().await.expect("r2");
    primary.shutdown().await;
}

/// Arms `fault` for r1 after 100 committed records, appends 100 more; r1 must halt with
/// `reason` at lsn 101 while r2 applies everything and commit (majority via r2) continues.
#[cfg(feature = "fault-injection")]
async fn fault_halts_one_replica_while_the_other_streams(
    fault: walship_node::primary::ShipFault,
    reason: walship_node::replica::HaltReason,
) {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let r1 = Replica::open(
        replica_config(&cluster, "r1", &primary),
        Recorder::default(),
    )
    .expect("r1");
    let a2 = Recorder::default();
    let r2 = Replica::open(replica_config(&cluster, "r2", &primary), a2.clone()).expect("r2");
    append_all(&primary, 100, 4).await;
    wait_status(&r1, "r1 caught up", |s| s.durable_lsn == Some(100)).await;

    primary.inject_fault("r1", fault).expect("inject");
    append_all(&primary, 100, 4).await;
    wait_status(&r1, "r1 halted", |s| s.halt().is_some()).await;
    let halt = r1.halt().expect("halt record");
    assert_eq!((halt.reason, halt.lsn), (reason, 101), "{halt:?}");
    assert_eq!(halt.peer, "p");
    wait_status(&r2, "r2 applied everything", |s| s.applied_lsn == 200).await;
    assert_eq!(a2.lsns(), (1..=200).collect::<Vec<_>>());
    assert_eq!(primary.commit_lsn(), 200);
    r1.shutdown().await.expect("r1");
    r2.shutdown().await.expect("r2");
    primary.shutdown().await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_6_1_corrupt_shipped_record_halts_that_replica_with_checksum_and_the_other_streams() {
    fault_halts_one_replica_while_the_other_streams(
        walship_node::primary::ShipFault::CorruptNextRecord,
        walship_node::replica::HaltReason::Checksum,
    )
    .await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_6_2_skipped_record_halts_that_replica_with_gap_and_the_other_streams() {
    fault_halts_one_replica_while_the_other_streams(
        walship_node::primary::ShipFault::SkipNextRecord,
        walship_node::replica::HaltReason::Gap,
    )
    .await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_5_2_duplicated_record_halts_that_replica_with_duplicate_and_the_other_streams() {
    fault_halts_one_replica_while_the_other_streams(
        walship_node::primary::ShipFault::DuplicateNextRecord,
        walship_node::replica::HaltReason::Duplicate,
    )
    .await;
}
