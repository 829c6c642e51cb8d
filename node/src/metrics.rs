//! The metrics a node exports on `GET /metrics` (`spec/http.md` §5 lists every family):
//! one [`NodeMetrics`] per node, with its own [`prometheus::Registry`].
//!
//! Why a registry per node and not the `metrics` facade: the facade has one global
//! recorder per process, and tests and `examples/kv.rs` run several nodes in one process;
//! their counters would mix. Each node owns its registry and `/metrics` renders only it.
//!
//! Two kinds of families:
//! - **events**, counted or timed where they happen: commit and fsync latency histograms
//!   (observed by the primary's and the replica's executor once per append / per group
//!   sync, through the cheap clones in [`RoleMetrics`]: an atomic add, no lock, no thread
//!   hop), elections started and won, step-downs and halts by reason (the cluster driver,
//!   from the election actions it performs), snapshot transfers;
//! - **state**, set from the node's [`NodeStatus`] at each scrape (role, epoch, lsns, lag
//!   per member). A family that does not apply to the node's role is left out (a primary
//!   has no `walship_follower_*` series).
//!
//! ```
//! use walship_node::metrics::NodeMetrics;
//! let m = NodeMetrics::new();
//! m.role().commit_seconds.observe(0.002);
//! # let status = walship_node::http::NodeStatus::empty("n1");
//! let text = m.render(&status);
//! assert!(text.contains("walship_commit_latency_seconds_count 1"));
//! ```

use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::http::{NodeRole, NodeStatus};

/// The label values of a family without labels.
const NO_LABELS: &[&str] = &[];

/// Upper bounds (seconds) of the latency histograms: 100 µs to 10 s.
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What a running role (primary or replica) observes; cheap to clone (every field is an
/// `Arc` inside), handed to the role when it opens, so one node's histograms keep
/// counting across role changes.
#[derive(Clone, Debug)]
pub struct RoleMetrics {
    /// Seconds from `append` to its acknowledgement (committed under the quorum policy).
    pub commit_seconds: Histogram,
    /// Seconds one group fdatasync of the WAL took (primary and replica).
    pub fsync_seconds: Histogram,
    /// Snapshots sent to a replica (primary).
    pub snapshots_sent: IntCounter,
    /// Snapshots received and installed (replica).
    pub snapshots_installed: IntCounter,
}

/// Counters of the cluster driver: what the election did on this node.
#[derive(Clone, Debug)]
pub struct ElectionMetrics {
    /// Pre-vote rounds this node started (an election timeout fired).
    pub pre_votes_started: IntCounter,
    /// Candidacies (this node voted for itself in a new epoch).
    pub elections_started: IntCounter,
    /// Elections this node won.
    pub elections_won: IntCounter,
    /// Step-downs of this node as primary, by reason.
    pub step_downs: IntCounterVec,
    /// Halts of this node, by halt reason.
    pub halts: IntCounterVec,
}

/// One node's metrics. See the module documentation.
pub struct NodeMetrics {
    registry: Registry,
    role_metrics: RoleMetrics,
    election: ElectionMetrics,
    state: StateGauges,
    /// A scrape resets and sets the state gauges, then gathers: one scrape at a time.
    render_lock: Mutex<()>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

/// The gauges set from a status at each scrape. Each is a vector, so that a family can be
/// left out (no children) when it does not apply.
struct StateGauges {
    role: IntGaugeVec,
    epoch: IntGaugeVec,
    durable_lsn: IntGaugeVec,
    commit_lsn: IntGaugeVec,
    halted: IntGaugeVec,
    paused: IntGaugeVec,
    follower_connected: IntGaugeVec,
    follower_lag_records: IntGaugeVec,
    member_connected: IntGaugeVec,
    member_durable_lsn: IntGaugeVec,
    member_lag_records: IntGaugeVec,
    member_lag_bytes: IntGaugeVec,
    member_lag_seconds: GaugeVec,
}

impl StateGauges {
    fn all(&self) -> [&IntGaugeVec; 12] {
        [
            &self.role,
            &self.epoch,
            &self.durable_lsn,
            &self.commit_lsn,
            &self.halted,
            &self.paused,
            &self.follower_connected,
            &self.follower_lag_records,
            &self.member_connected,
            &self.member_durable_lsn,
            &self.member_lag_records,
            &self.member_lag_bytes,
        ]
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

/// Builds and registers a collector. The names, labels and buckets are constants of this
/// file, and each name is registered once on a fresh registry: a failure is a bug here.
fn register<C: Collector + Clone + 'static>(registry: &Registry, made: prometheus::Result<C>) -> C {
    let c = made.unwrap_or_else(|e| panic!("invariant: a valid metric definition: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("invariant: each metric is registered once: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    register(
        registry,
        Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
        ),
    )
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

impl NodeMetrics {
    /// A node's metrics on a registry of its own.
    pub fn new() -> NodeMetrics {
        let r = Registry::new();
        let role_metrics = RoleMetrics {
            commit_seconds: histogram(
                &r,
                "walship_commit_latency_seconds",
                "Primary: seconds from append to its acknowledgement (committed under the quorum policy).",
            ),
            fsync_seconds: histogram(
                &r,
                "walship_fsync_latency_seconds",
                "Seconds one group fdatasync of the local WAL took (primary and replica).",
            ),
            snapshots_sent: counter(
                &r,
                "walship_snapshot_transfers_sent_total",
                "Primary: snapshot transfers started to a replica that the retained WAL no longer covers.",
            ),
            snapshots_installed: counter(
                &r,
                "walship_snapshot_transfers_installed_total",
                "Replica: snapshots received and installed.",
            ),
        };
        let election = ElectionMetrics {
            pre_votes_started: counter(
                &r,
                "walship_pre_votes_started_total",
                "Pre-vote rounds this node started (no primary heard for an election timeout).",
            ),
            elections_started: counter(
                &r,
                "walship_elections_started_total",
                "Candidacies of this node: it voted for itself in a new epoch (pre-vote won, switchover or operator promotion).",
            ),
            elections_won: counter(
                &r,
                "walship_elections_won_total",
                "Elections this node won (it became primary).",
            ),
            step_downs: counter_vec(
                &r,
                "walship_step_downs_total",
                "Step-downs of this node as primary, by reason (lease-expired, higher-epoch, ineligible, halted, stopped).",
                &["reason"],
            ),
            halts: counter_vec(
                &r,
                "walship_halts_total",
                "Halts of this node since it started, by halt reason (checksum, divergence, ...).",
                &["reason"],
            ),
        };
        let state = StateGauges {
            role: gauge(
                &r,
                "walship_role",
                "The node's role: 1 for the role it has, 0 for the others.",
                &["role"],
            ),
            epoch: gauge(&r, "walship_epoch", "The node's current epoch.", &[]),
            durable_lsn: gauge(
                &r,
                "walship_durable_lsn",
                "Highest lsn fsynced in the local WAL.",
                &[],
            ),
            commit_lsn: gauge(
                &r,
                "walship_commit_lsn",
                "The commit watermark this node knows.",
                &[],
            ),
            halted: gauge(
                &r,
                "walship_halted",
                "1 while the node is halted (it waits for an operator), else 0.",
                &[],
            ),
            paused: gauge(
                &r,
                "walship_paused",
                "1 while automatic failover is paused on this node (walship ctl pause), else 0.",
                &[],
            ),
            follower_connected: gauge(
                &r,
                "walship_follower_connected",
                "1 while this follower's connection to its primary is open, else 0.",
                &[],
            ),
            follower_lag_records: gauge(
                &r,
                "walship_follower_lag_records",
                "Records this follower lacks behind its primary's last announced lsn.",
                &[],
            ),
            member_connected: gauge(
                &r,
                "walship_member_connected",
                "Primary: 1 while the member's connection is open, else 0.",
                &["member"],
            ),
            member_durable_lsn: gauge(
                &r,
                "walship_member_durable_lsn",
                "Primary: the highest lsn the member reported durable.",
                &["member"],
            ),
            member_lag_records: gauge(
                &r,
                "walship_member_lag_records",
                "Primary: its durable lsn minus the member's, in records.",
                &["member"],
            ),
            member_lag_bytes: gauge(
                &r,
                "walship_member_lag_bytes",
                "Primary: the member's lag in bytes (exact in flight, estimated beyond).",
                &["member"],
            ),
            member_lag_seconds: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "walship_member_lag_seconds",
                "Primary: seconds the member has been behind (0 when it holds everything durable here, else since the first record it lacks became durable on the primary).",
                    ),
                    &["member"],
                ),
            ),
        };
        NodeMetrics {
            registry: r,
            role_metrics,
            election,
            state,
            render_lock: Mutex::new(()),
        }
    }

    /// The handles a role observes with.
    pub fn role(&self) -> &RoleMetrics {
        &self.role_metrics
    }

    /// The election counters.
    pub fn election(&self) -> &ElectionMetrics {
        &self.election
    }

    /// The registry (to add an embedder's own collectors).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets the state gauges from `s` and renders every family in the Prometheus text
    /// exposition format (0.0.4).
    pub fn render(&self, s: &NodeStatus) -> String {
        let _one_scrape = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.set_state(s);
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }

    fn set_state(&self, s: &NodeStatus) {
        let g = &self.state;
        for v in g.all() {
            v.reset();
        }
        g.member_lag_seconds.reset();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for r in NodeRole::ALL {
            g.role
                .with_label_values(&[r.as_str()])
                .set(i64::from(r == s.role));
        }
        g.epoch.with_label_values(NO_LABELS).set(int(s.epoch));
        if let Some(d) = s.durable_lsn {
            g.durable_lsn.with_label_values(NO_LABELS).set(int(d));
        }
        g.commit_lsn
            .with_label_values(NO_LABELS)
            .set(int(s.commit_lsn));
        g.halted
            .with_label_values(NO_LABELS)
            .set(i64::from(s.role == NodeRole::Halted));
        g.paused
            .with_label_values(NO_LABELS)
            .set(i64::from(s.paused));
        if let Some(c) = s.connected {
            g.follower_connected
                .with_label_values(NO_LABELS)
                .set(i64::from(c));
        }
        if let Some(l) = s.lag_records {
            g.follower_lag_records
                .with_label_values(NO_LABELS)
                .set(int(l));
        }
        for m in s.members.iter().flatten() {
            let id = [m.node_id.as_str()];
            g.member_connected
                .with_label_values(&id)
                .set(i64::from(m.connected));
            g.member_durable_lsn
                .with_label_values(&id)
                .set(int(m.durable_lsn));
            g.member_lag_records
                .with_label_values(&id)
                .set(int(m.lag_records));
            g.member_lag_bytes
                .with_label_values(&id)
                .set(int(m.lag_bytes));
            g.member_lag_seconds
                .with_label_values(&id)
                .set(m.lag_ms as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::MemberStatus;

    fn primary() -> NodeStatus {
        let mut s = NodeStatus::empty("n1");
        s.role = NodeRole::Primary;
        s.epoch = 3;
        s.durable_lsn = Some(12);
        s.commit_lsn = 11;
        s.members = Some(vec![MemberStatus {
            node_id: "n2".into(),
            connected: true,
            durable_lsn: 10,
            lag_records: 2,
            lag_bytes: 64,
            last_receipt_age_ms: Some(5),
            lag_ms: 5,
            incarnation: Some(7),
            expected_incarnation: 0,
        }]);
        s
    }

    #[test]
    fn state_families_follow_the_status_and_leave_out_what_does_not_apply() {
        let m = NodeMetrics::new();
        let text = m.render(&primary());
        for line in [
            "walship_role{role=\"primary\"} 1\n",
            "walship_role{role=\"follower\"} 0\n",
            "walship_epoch 3\n",
            "walship_durable_lsn 12\n",
            "walship_commit_lsn 11\n",
            "walship_halted 0\n",
            "walship_paused 0\n",
            "walship_member_lag_records{member=\"n2\"} 2\n",
            "walship_member_lag_bytes{member=\"n2\"} 64\n",
            "walship_member_lag_seconds{member=\"n2\"} 0.005\n",
            "walship_member_connected{member=\"n2\"} 1\n",
            "# TYPE walship_commit_latency_seconds histogram\n",
            "# TYPE walship_fsync_latency_seconds histogram\n",
            "walship_commit_latency_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("walship_follower_"), "{text}");
        // A follower next: the member families go, the follower's come.
        let mut f = primary();
        f.role = NodeRole::Follower;
        f.members = None;
        f.connected = Some(true);
        f.lag_records = Some(4);
        let text = m.render(&f);
        assert!(text.contains("walship_follower_lag_records 4\n"), "{text}");
        assert!(!text.contains("walship_member_"), "{text}");
    }

    #[test]
    fn observations_and_counters_show_in_the_text() {
        let m = NodeMetrics::new();
        m.role().commit_seconds.observe(0.003);
        m.role().fsync_seconds.observe(0.0002);
        m.role().fsync_seconds.observe(0.0004);
        m.election().elections_won.inc();
        m.election()
            .step_downs
            .with_label_values(&["lease-expired"])
            .inc();
        m.election().halts.with_label_values(&["checksum"]).inc();
        let text = m.render(&primary());
        for line in [
            "walship_commit_latency_seconds_count 1\n",
            "walship_commit_latency_seconds_bucket{le=\"0.005\"} 1\n",
            "walship_commit_latency_seconds_bucket{le=\"0.0025\"} 0\n",
            "walship_fsync_latency_seconds_count 2\n",
            "walship_elections_won_total 1\n",
            "walship_step_downs_total{reason=\"lease-expired\"} 1\n",
            "walship_halts_total{reason=\"checksum\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn two_nodes_in_one_process_count_apart() {
        let (a, b) = (NodeMetrics::new(), NodeMetrics::new());
        a.role().commit_seconds.observe(0.001);
        assert!(a
            .render(&primary())
            .contains("walship_commit_latency_seconds_count 1\n"));
        assert!(b
            .render(&primary())
            .contains("walship_commit_latency_seconds_count 0\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = primary();
        if let Some(m) = s.members.as_mut() {
            m[0].node_id = "a\"b\\c\nd".into();
        }
        let text = NodeMetrics::new().render(&s);
        assert!(
            text.contains("walship_member_lag_records{member=\"a\\\"b\\\\c\\nd\"} 2\n"),
            "{text}"
        );
    }
}
