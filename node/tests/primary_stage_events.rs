//! The commit-path stage events (`walship::stage`, TRACE; spec/protocol.md §12.4) that the
//! replication bench's "where the time goes" breakdown reads: one majority commit over real
//! QUIC with two real replicas emits every stage, each covering the committed lsn.
//! One test per file: it installs the process-wide `tracing` subscriber.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use walship_node::primary::Quorum;
use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig};
use walship_wal::Lsn;

const STAGES: [&str; 7] = [
    "primary_fsync",
    "frame_sent",
    "replica_receive",
    "replica_fsync",
    "receipt_sent",
    "receipt_received",
    "commit_advanced",
];

/// (stage, lsn) of every `walship::stage` event.
#[derive(Clone, Default)]
struct Stages(Arc<Mutex<Vec<(String, u64)>>>);

#[derive(Default)]
struct Fields {
    stage: Option<String>,
    lsn: Option<u64>,
}
impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "stage" {
            self.stage = Some(value.to_string());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "lsn" {
            self.lsn = Some(value);
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for Stages {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "walship::stage" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let (Some(stage), Some(lsn)) = (f.stage, f.lsn) else {
            panic!("a walship::stage event lacks its stage or lsn field");
        };
        self.0.lock().expect("stage log lock").push((stage, lsn));
    }
}

impl Stages {
    /// The stages that reached `lsn` so far.
    fn reached(&self, lsn: Lsn) -> Vec<String> {
        let log = self.0.lock().expect("stage log lock");
        STAGES
            .iter()
            .filter(|s| log.iter().any(|(st, l)| st == *s && *l >= lsn))
            .map(|s| s.to_string())
            .collect()
    }
}

struct Nothing;
impl Applier for Nothing {
    fn applied_lsn(&self) -> Lsn {
        0
    }
    fn apply(&mut self, _lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_commit_emits_every_stage_event_up_to_its_lsn() {
    let stages = Stages::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(stages.clone()))
        .expect("the only subscriber of this test binary");
    let cluster = Cluster::new(&["p", "r1", "r2"]);
    let primary = open_primary(cluster.primary_config(&["p", "r1", "r2"], Quorum::Majority));
    let mut replicas = Vec::new();
    for node in ["r1", "r2"] {
        let mut c = ReplicaConfig::new(
            node,
            CLUSTER,
            cluster.data_dir(node),
            primary.local_addr().expect("addr"),
            "p",
            cluster.tls(node),
        );
        c.bind_addr = "127.0.0.1:0".parse().expect("addr");
        c.backoff_initial_ms = 20;
        replicas.push(Replica::open(c, Nothing).expect("replica opens"));
    }
    eventually("both replicas streaming", || {
        primary.status().replicas.iter().all(|r| r.shipping)
    })
    .await;

    let lsn = primary.append(vec![7u8; 1024]).await.expect("committed");
    let all: Vec<String> = STAGES.iter().map(|s| s.to_string()).collect();
    // The events precede the commit causally, except that the WAL may call its durable
    // listener (primary_fsync) after the core already saw the durable lsn: poll.
    eventually("every stage reached the committed lsn", || {
        stages.reached(lsn) == all
    })
    .await;
    assert_eq!(stages.reached(lsn), all);

    for r in replicas {
        r.shutdown().await.expect("replica shutdown");
    }
    primary.shutdown().await;
}
