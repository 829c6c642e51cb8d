//! The simulated cluster: one primary and N replicas, each on its own
//! [`SimStorage`], connected by [`SimNet`] and driven by [`SimClock`]. The
//! primary is the production executor (`walship_node::primary::exec`, see
//! [`primary`]): the world only delivers its frames, fires its deadlines,
//! crashes and restarts it. Each replica is the production replica executor
//! (`walship_node::replica::exec`, see [`replica`]): the world only moves its
//! frames and time, crashes and restarts it, and records its outputs. Neither
//! half performs a protocol action itself; every event is recorded in the
//! trace.
//!
//! It also keeps the [`Oracle`]: the facts the invariant checkers judge the
//! run against (the primary's history, what was acknowledged to clients,
//! which faults were injected where).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use walship_primary::core::Window;
use walship_replica::halt::HaltReason;
use walship_wal::sim::{SimConfig, SimStorage};
use walship_wal::state::EpochEntry;
use walship_wal::{Lsn, Position, WalOptions};
use walship_wire::frame::{FrameDecoder, FrameError};
use walship_wire::message::{Message, RecordBatch, Welcome};

mod primary;
pub use primary::{PrimaryNode, PrimaryUp};

use crate::clock::SimClock;
use crate::net::{NetConfig, NetEvent, NodeId, SimNet};
use crate::rng::SimRng;
use crate::trace::Trace;

mod replica;
pub use replica::{Applied, HaltSnapshot, ReplicaNode, ReplicaUp, SimApplier};

/// The primary's node index.
pub const PRIMARY: NodeId = 0;
/// Node indices from here up are never members (used for FM-X.9).
pub const INTRUDER_BASE: NodeId = 100;
/// Cluster id used by every simulated node.
pub const CLUSTER_ID: &str = "walship-sim";
/// Root directory of every node inside its own SimStorage.
pub const NODE_ROOT: &str = "/node";

/// The node id (certificate name) of node `n`.
pub fn node_name(n: NodeId) -> String {
    if n >= INTRUDER_BASE {
        format!("intruder{n}")
    } else if n == PRIMARY {
        "p0".to_string()
    } else {
        format!("r{n}")
    }
}

/// Static parameters of a simulated cluster.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// Number of replicas (nodes 1..=replicas).
    pub replicas: usize,
    /// Quorum setting (0, -1 or k).
    pub quorum: i64,
    /// The primary's epoch.
    pub epoch: u64,
    /// Network model.
    pub net: NetConfig,
    /// WAL segment size (small, so rolls happen).
    pub segment_size_bytes: u64,
    /// Record size bound.
    pub max_record_bytes: u32,
    /// Delay between an append and the group sync that makes it durable.
    pub sync_delay_ms: (u64, u64),
    /// Primary tick period.
    pub tick_ms: u64,
    /// Minimum interval between two writes of the primary's `state/commit`.
    pub persist_interval_ms: u64,
    /// Probability that a crash tears unsynced writes.
    pub torn_crash_probability: f64,
    /// Shipping window of the primary.
    pub window: Window,
    /// The primary's epoch history (default: `[{epoch, start_lsn: 1}]`).
    pub epoch_history: Option<Vec<EpochEntry>>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            replicas: 2,
            quorum: -1,
            epoch: 1,
            net: NetConfig::default(),
            segment_size_bytes: 16 * 1024,
            max_record_bytes: 64 * 1024,
            sync_delay_ms: (1, 3),
            tick_ms: 50,
            persist_interval_ms: walship_node::primary::exec::DEFAULT_PERSIST_INTERVAL_MS,
            torn_crash_probability: 0.0,
            window: Window {
                max_batch_bytes: 8 * 1024,
                max_inflight_bytes: 64 * 1024,
                max_inflight_records: 256,
            },
            epoch_history: None,
        }
    }
}

/// A fault injected into the next `Records` frame sent to one replica: a
/// faulty *sender* (the network cannot produce these past packet protection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFault {
    /// Flip a payload bit of the first record (its crc no longer matches): FM-6.1.
    Corrupt,
    /// Leave the first record out: FM-6.2.
    Skip,
    /// Send the first record twice: FM-5.2.
    Duplicate,
    /// Swap the first two records (header `first_lsn` follows the first record): FM-5.2.
    Reorder,
    /// Re-encode the first record with epoch 0 (valid crc, chain intact): FM-X.3.
    EpochRegress,
    /// Rewrite `first_lsn`/`count` so they disagree with the records.
    Malformed,
    /// Re-encode the first record with a wrong `prev_crc` and a crc computed
    /// over the changed record (crc-valid, lsn and epoch right, the chain
    /// broken): what an authenticated primary with a bad log or disk would
    /// send. FM-8.1: the replica halts `divergence` and stores nothing of it.
    WrongPrevCrc,
    /// Like `EpochRegress`; kept as the name of finding 4's reproducer
    /// (a record at lsn 1 below the announced epoch history).
    EpochBelowHistory,
    /// Flip a byte of the next snapshot chunk (its crc no longer matches): FM-7.1.
    CorruptChunk,
    /// Rewrite the next `Welcome` to one replica as an older primary's (one
    /// come back from a saved copy of its disk after a newer epoch began):
    /// its epoch one below the highest epoch the replica has seen, its epoch
    /// history cut to the entries below that. FM-X.2: the replica refuses it
    /// (`Refuse{StalePrimary}`), stores nothing of it and ends the session —
    /// no halt (the replica is healthy; the stale primary is the one fenced).
    /// The refusal names no epoch above the real primary's, so the real
    /// primary is not fenced by it. (Armed, it waits for a replica that has
    /// seen an epoch above 0.)
    StaleWelcome,
}

impl FrameFault {
    /// The halt reason the replica must report for this fault; `None` for a fault the
    /// replica must refuse without halting (`StaleWelcome`, FM-X.2).
    pub fn expected_halt(self) -> Option<HaltReason> {
        match self {
            FrameFault::Corrupt => Some(HaltReason::Checksum),
            FrameFault::Skip => Some(HaltReason::Gap),
            FrameFault::Duplicate => Some(HaltReason::Duplicate),
            FrameFault::Reorder => Some(HaltReason::Reorder),
            FrameFault::EpochRegress | FrameFault::EpochBelowHistory => {
                Some(HaltReason::EpochRegression)
            }
            FrameFault::Malformed => Some(HaltReason::MalformedBatch),
            FrameFault::WrongPrevCrc => Some(HaltReason::Divergence),
            FrameFault::CorruptChunk => Some(HaltReason::SnapshotInvalid),
            FrameFault::StaleWelcome => None,
        }
    }
}

/// Facts about the run, independent of the nodes' own view, for the checkers.
#[derive(Debug, Default, Clone)]
pub struct Oracle {
    /// The primary's current log, index `lsn - 1` (appended, synced or not).
    pub primary_history: Vec<Position>,
    /// Durable lsn of the primary as last observed.
    pub primary_durable: Lsn,
    /// Records acknowledged to clients (committed under the quorum): lsn -> identity.
    pub acked: BTreeMap<Lsn, Position>,
    /// Highest commit watermark the primary ever announced.
    pub max_commit: Lsn,
    /// The highest commit watermark the primary's disk held when a primary process started
    /// (written by an earlier life, or by a scenario).
    pub primary_commit_at_start: Lsn,
    /// Appends of the running primary process waiting for their commit acknowledgement.
    pub pending_acks: Vec<Lsn>,
    /// Frame faults injected per replica (node index), in order.
    pub injected: BTreeMap<NodeId, Vec<FrameFault>>,
    /// Violations found while performing actions (e.g. an undurable record shipped).
    pub action_violations: Vec<(&'static str, String)>,
    /// Receipts a replica sent above the lsn its WAL had synced when it sent them (must
    /// stay empty; judged by `check::ReceiptNeverAboveSynced`).
    pub unsynced_receipts: Vec<String>,
    /// Primary lsns shipped to each replica above the primary's durable lsn (must stay empty).
    pub shipped_above_durable: u64,
    /// Nodes that went through a torn crash (unsynced writes partly persisted,
    /// possibly out of order). A WAL that then refuses to open (corruption
    /// report) is a safe, explained outcome for them.
    pub torn_crashed: std::collections::BTreeSet<NodeId>,
    /// The primary's history before its disk was replaced (FM-X.16).
    pub lost_primary_history: Vec<Position>,
    /// Replicas whose disk was replaced by an empty one, with the highest
    /// lsn acknowledged (or committed) at that moment: their copies of those
    /// records are gone by design.
    pub wiped: BTreeMap<NodeId, Lsn>,
    /// Nodes whose disk a scenario damaged on purpose (bit flips).
    pub disk_damaged: std::collections::BTreeSet<NodeId>,
    /// Set when the scenario deliberately gives a replica a history that is not
    /// the primary's (the prefix checker then skips that replica).
    pub foreign_history: Vec<NodeId>,
}

/// The simulated cluster.
pub struct World {
    /// Parameters.
    pub cfg: WorldConfig,
    /// Simulated time.
    pub clock: SimClock,
    /// Randomness for the world's own decisions (sync delays, payloads).
    pub rng: SimRng,
    /// The network.
    pub net: SimNet,
    /// The trace.
    pub trace: Trace,
    /// Current step (set by the driver of the run).
    pub step: u64,
    /// The primary.
    pub primary: PrimaryNode,
    /// Replicas, index 0 is node 1.
    pub replicas: Vec<ReplicaNode>,
    /// The facts for the checkers.
    pub oracle: Oracle,
    taps: BTreeMap<NodeId, FrameFault>,
    /// The last faulty frame sent to each replica: when it is delivered the
    /// replica must halt on it.
    faulty_frames: BTreeMap<NodeId, RecordBatch>,
    /// The last stale `Welcome` sent to each replica (same rule).
    faulty_welcomes: BTreeMap<NodeId, Welcome>,
}

pub(crate) fn root() -> PathBuf {
    PathBuf::from(NODE_ROOT)
}
pub(crate) fn wal_dir() -> PathBuf {
    root().join("wal")
}
/// The state directory (`state/`) of every simulated node, inside its storage.
pub fn state_dir() -> PathBuf {
    root().join("state")
}

fn wal_options(cfg: &WorldConfig, epoch: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes: cfg.segment_size_bytes,
        max_record_bytes: cfg.max_record_bytes,
        epoch,
    }
}

/// Feeds `bytes` to a connection's frame decoder and moves every whole message into
/// `msgs`; the first framing error, if any (nothing after it is decoded).
pub(crate) fn decode_frames(
    dec: &mut FrameDecoder,
    bytes: &[u8],
    msgs: &mut Vec<Message>,
) -> Option<FrameError> {
    if let Err(e) = dec.push(bytes) {
        return Some(e);
    }
    loop {
        match dec.next_message() {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

pub(crate) fn make_dirs(s: &SimStorage) -> std::io::Result<()> {
    use walship_wal::Storage;
    for d in [root(), wal_dir(), state_dir(), root().join("snapshots")] {
        s.create_dir_all(&d)?;
    }
    s.sync_dir(Path::new("/"))?;
    s.sync_dir(&root())?;
    Ok(())
}

impl World {
    /// Builds a cluster with fresh disks and starts every node.
    pub fn new(cfg: WorldConfig, seed: u64) -> Result<World, String> {
        let mut rng = SimRng::new(seed);
        let net = SimNet::new(cfg.net.clone(), rng.fork("net"));
        let disk_cfg = SimConfig {
            torn_crash_probability: cfg.torn_crash_probability,
            ..SimConfig::default()
        };
        let primary = PrimaryNode {
            storage: SimStorage::with_config(rng.fork("disk-p0").next_u64(), disk_cfg.clone()),
            up: None,
            refused: None,
        };
        let replicas = (1..=cfg.replicas)
            .map(|id| {
                let disk = SimStorage::with_config(
                    rng.fork(&format!("disk-r{id}")).next_u64(),
                    disk_cfg.clone(),
                );
                ReplicaNode::new(id, disk)
            })
            .collect();
        let world_rng = rng.fork("world");
        let w = World {
            cfg,
            clock: SimClock::new(),
            rng: world_rng,
            net,
            trace: Trace::new(),
            step: 0,
            primary,
            replicas,
            oracle: Oracle::default(),
            taps: BTreeMap::new(),
            faulty_frames: BTreeMap::new(),
            faulty_welcomes: BTreeMap::new(),
        };
        make_dirs(&w.primary.storage).map_err(|e| format!("p0 mkdir: {e}"))?;
        primary::provision_primary_disk(&w.primary.storage, &w.cfg)
            .map_err(|e| format!("p0 epochs: {e}"))?;
        for r in &w.replicas {
            make_dirs(&r.storage).map_err(|e| format!("{} mkdir: {e}", node_name(r.id)))?;
        }
        Ok(w)
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) {
        if self.primary.up.is_none() {
            self.start_primary();
        }
        for i in 1..=self.cfg.replicas {
            if self.replica(i).up.is_none() {
                self.start_replica(i);
            }
        }
    }

    /// Records a trace event.
    pub fn log(&mut self, what: String) {
        self.trace.record(self.clock.now_ms(), self.step, what);
    }

    /// The current simulated time.
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Replica node `n` (1-based).
    pub fn replica(&self, n: NodeId) -> &ReplicaNode {
        &self.replicas[n - 1]
    }

    fn replica_mut(&mut self, n: NodeId) -> &mut ReplicaNode {
        &mut self.replicas[n - 1]
    }

    /// Receipts the quorum policy needs (the primary's own copy counts as one).
    pub fn receipts_needed(&self) -> usize {
        let members = self.cfg.replicas + 1;
        match self.cfg.quorum {
            0 => 0,
            q if q < 0 => members / 2,
            k => usize::try_from(k).unwrap_or(usize::MAX),
        }
    }

    /// The primary's commit watermark (0 while down).
    pub fn primary_commit(&self) -> Lsn {
        self.primary.up.as_ref().map_or(0, |p| p.exec.commit_lsn())
    }

    /// Arms a sender fault for the next `Records` frame sent to replica `n`.
    pub fn arm_frame_fault(&mut self, n: NodeId, f: FrameFault) {
        self.log(format!("arm frame fault {f:?} for {}", node_name(n)));
        self.taps.insert(n, f);
    }

    // ------------------------------------------------------------------ faults

    /// Power loss / kill -9 of node `n`: unsynced data is lost (or torn), the
    /// process and its connections vanish.
    pub fn crash(&mut self, n: NodeId) {
        self.crash_with(n, false);
    }

    /// Like [`World::crash`]; with `torn`, a random part of the unsynced
    /// writes reaches the disk (power cut in the middle of write-back).
    pub fn crash_with(&mut self, n: NodeId, torn: bool) {
        let now = self.now();
        self.net.crash_node(n, now);
        let storage = if n == PRIMARY {
            // The clients waiting on the process are gone with it.
            self.primary.up = None;
            self.oracle.pending_acks.clear();
            self.primary.storage.clone()
        } else {
            let r = self.replica_mut(n);
            r.up = None;
            r.storage.clone()
        };
        let report = if torn {
            storage.crash_with_torn_write()
        } else {
            storage.crash()
        };
        if report.torn {
            self.oracle.torn_crashed.insert(n);
        }
        self.log(format!("CRASH {} ({report:?})", node_name(n)));
    }

    /// The disk of node `n`.
    pub fn storage(&self, n: NodeId) -> SimStorage {
        if n == PRIMARY {
            self.primary.storage.clone()
        } else {
            self.replica(n).storage.clone()
        }
    }

    /// Forgets every armed, not yet used frame fault.
    pub fn disarm_frame_faults(&mut self) {
        self.taps.clear();
    }

    /// Replica `n` loses its disk (a replaced machine): it crashes and comes
    /// back, when restarted, with an empty disk and an empty embedder. Records
    /// acknowledged before are excused from its copy count (the fault budget:
    /// they must survive on the other disks).
    pub fn wipe_replica_disk(&mut self, n: NodeId) -> Result<(), String> {
        assert!(
            n != PRIMARY && n <= self.cfg.replicas,
            "only replica disks are wiped"
        );
        if self.is_up(n) {
            self.crash(n);
        }
        let seed = self.rng.next_u64();
        let cfg = SimConfig {
            torn_crash_probability: self.cfg.torn_crash_probability,
            ..SimConfig::default()
        };
        let fresh = SimStorage::with_config(seed, cfg);
        make_dirs(&fresh).map_err(|e| format!("{} mkdir: {e}", node_name(n)))?;
        // Excused: everything the lost disk held (the primary may still
        // count those receipts until the replica's next Hello) and
        // everything acknowledged so far.
        let max_acked = self.oracle.acked.keys().next_back().copied().unwrap_or(0);
        let held = self.replica(n).known_durable;
        let excused = max_acked.max(self.oracle.max_commit).max(held);
        let e = self.oracle.wiped.entry(n).or_insert(0);
        *e = (*e).max(excused);
        let r = self.replica_mut(n);
        r.storage = fresh;
        r.reset_embedder();
        r.unannounced_wipe = Some(r.unannounced_wipe.unwrap_or(0).max(r.known_durable));
        r.announcing_conn = None;
        r.known_durable = 0;
        r.halted = None;
        r.stopped = None;
        self.oracle.torn_crashed.remove(&n);
        self.oracle.injected.remove(&n);
        self.log(format!(
            "WIPE {}: disk replaced by an empty one",
            node_name(n)
        ));
        Ok(())
    }

    /// The primary loses its disk: it crashes and, when restarted, starts
    /// from an empty disk (same node id and epoch: nobody told it). Its old
    /// history stays in the oracle's `lost_primary_history`; replicas that
    /// hold it are marked as holding a foreign history for the prefix check.
    pub fn wipe_primary_disk(&mut self) -> Result<(), String> {
        if self.is_up(PRIMARY) {
            self.crash(PRIMARY);
        }
        let seed = self.rng.next_u64();
        let fresh = SimStorage::with_config(
            seed,
            SimConfig {
                torn_crash_probability: self.cfg.torn_crash_probability,
                ..SimConfig::default()
            },
        );
        make_dirs(&fresh).map_err(|e| format!("p0 mkdir: {e}"))?;
        primary::provision_primary_disk(&fresh, &self.cfg)
            .map_err(|e| format!("p0 epochs: {e}"))?;
        self.primary.storage = fresh;
        self.oracle.lost_primary_history = std::mem::take(&mut self.oracle.primary_history);
        self.oracle.primary_durable = 0;
        self.oracle.pending_acks.clear();
        for r in &self.replicas {
            if r.known_durable > 0
                || r.up
                    .as_ref()
                    .and_then(|u| u.wal())
                    .is_some_and(|w| w.last().lsn > 0)
            {
                self.oracle.foreign_history.push(r.id);
            }
        }
        self.log("WIPE p0: disk replaced by an empty one".into());
        Ok(())
    }

    /// Restarts node `n` if it is down.
    pub fn restart(&mut self, n: NodeId) {
        if n == PRIMARY {
            if self.primary.up.is_none() {
                self.start_primary();
            }
        } else if self.replica(n).up.is_none() {
            self.start_replica(n);
        }
    }

    /// A node that is not a member (`intruder`, a node index above the
    /// replicas) connects to the primary and writes `bytes`. Returns whether
    /// the connection was accepted by the network.
    pub fn intruder_send(&mut self, intruder: NodeId, bytes: &[u8]) -> bool {
        assert!(intruder >= INTRUDER_BASE, "intruder must not be a member");
        let now = self.now();
        match self.net.connect(intruder, PRIMARY, now) {
            Some(c) => {
                self.log(format!(
                    "intruder n{intruder} connects (conn {}) and sends {} bytes",
                    c.0,
                    bytes.len()
                ));
                self.net.send(c, intruder, bytes, now)
            }
            None => false,
        }
    }

    /// True if node `n` is running.
    pub fn is_up(&self, n: NodeId) -> bool {
        if n == PRIMARY {
            self.primary.up.is_some()
        } else {
            self.replica(n).up.is_some()
        }
    }

    // ------------------------------------------------------------------ event loop

    fn next_timer(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut take = |x: Option<u64>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        take(self.primary_next_timer());
        for n in 1..=self.cfg.replicas {
            take(self.replica_next_timer(n));
        }
        take(self.net.next_event_ms());
        t
    }

    /// Processes everything due up to `until_ms`, in time order, then sets
    /// the clock to `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        let mut guard = 0u64;
        while let Some(t) = self.next_timer() {
            let t = t.max(self.now());
            if t > until_ms {
                break;
            }
            guard += 1;
            assert!(guard < 10_000_000, "world: event loop does not settle");
            self.clock.advance_to(t);
            self.fire_due();
        }
        self.clock.advance_to(until_ms.max(self.now()));
    }

    fn fire_due(&mut self) {
        let now = self.now();
        for ev in self.net.poll(now) {
            self.on_net(ev);
        }
        if self.primary.up.as_ref().is_some_and(|p| p.sync_due(now)) {
            self.primary_sync();
        }
        if self.primary.up.as_ref().is_some_and(|p| p.timer_due(now)) {
            self.primary_timer();
        }
        for n in 1..=self.cfg.replicas {
            self.replica_fire_due(n);
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Accepted { conn, to, from } => {
                assert_eq!(to, PRIMARY, "only the primary accepts connections");
                self.primary_accepted(conn, from);
            }
            NetEvent::Data { to, .. } | NetEvent::Closed { at: to, .. }
                if to != PRIMARY && to > self.cfg.replicas =>
            {
                // Addressed to a non-member (FM-X.9's intruder): nobody runs there.
            }
            NetEvent::Data {
                conn, to, bytes, ..
            } => {
                if to == PRIMARY {
                    self.primary_data(conn, &bytes);
                } else {
                    self.replica_data(to, conn, &bytes);
                }
            }
            NetEvent::Closed {
                conn, at, reason, ..
            } => {
                if at == PRIMARY {
                    self.primary_closed(conn, reason);
                } else {
                    self.replica_closed(at, conn, reason);
                }
            }
        }
    }

    /// Runs until every running, non-halted replica has durably stored and
    /// applied the primary's commit watermark and the primary has committed
    /// everything durable, or `budget_ms` of simulated time passed. Returns
    /// whether it converged.
    pub fn run_until_converged(&mut self, budget_ms: u64) -> bool {
        let deadline = self.now() + budget_ms;
        loop {
            if self.converged() {
                return true;
            }
            if self.now() >= deadline {
                return false;
            }
            let t = (self.now() + 10).min(deadline);
            self.run_until(t);
        }
    }

    /// True if the cluster is quiescent and caught up (see [`World::run_until_converged`]).
    pub fn converged(&self) -> bool {
        let Some(p) = &self.primary.up else {
            return false;
        };
        if p.sync_pending() || p.exec.sync_needed() {
            return false;
        }
        let durable = p.exec.durable_lsn();
        let commit = p.exec.commit_lsn();
        // With too many replicas halted the quorum cannot be met: then the
        // watermark staying put is the required outcome, not a liveness bug.
        let healthy = self.replicas.iter().filter(|r| r.halted.is_none()).count();
        if commit < durable && healthy >= self.receipts_needed() {
            return false;
        }
        self.replicas.iter().all(|r| {
            if r.halted.is_some() {
                return true;
            }
            match &r.up {
                None => false,
                Some(u) => {
                    u.wal().is_some_and(|w| w.durable_lsn() >= durable)
                        && u.core().commit_lsn() >= commit
                        && r.applied.last_lsn() >= commit
                }
            }
        })
    }
}

/// Short description of a message for the trace.
pub fn describe(m: &Message) -> String {
    match m {
        Message::Hello(h) => format!("Hello(last {} commit {})", h.last.lsn, h.commit_lsn),
        Message::Welcome(w) => format!(
            "Welcome(epoch {} primary_last {} commit {} at_replica_last {:?})",
            w.epoch,
            w.primary_last.lsn,
            w.commit_lsn,
            w.at_replica_last.map(|p| p.lsn)
        ),
        Message::Refuse(r) => format!("Refuse({:?})", r.reason),
        Message::Probe { lsn } => format!("Probe({lsn})"),
        Message::ProbeReply { lsn, position } => {
            format!(
                "ProbeReply({lsn}, {:?})",
                position.map(|p| (p.epoch, p.crc))
            )
        }
        Message::Records(b) => format!(
            "Records(first {} count {} bytes {} commit {})",
            b.first_lsn,
            b.count,
            b.bytes.len(),
            b.commit_lsn
        ),
        Message::Receipt { durable_lsn } => format!("Receipt({durable_lsn})"),
        Message::Commit { commit_lsn } => format!("Commit({commit_lsn})"),
        #[allow(unreachable_patterns)]
        other => other.kind().to_string(),
    }
}
