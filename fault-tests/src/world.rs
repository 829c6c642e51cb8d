//! The simulated cluster: one primary and N replicas, each the real sans-IO
//! core over the real WAL on its own [`SimStorage`], connected by [`SimNet`]
//! and driven by [`SimClock`]. This module is the simulator's *driver*: it
//! performs the primary core's actions the way the tokio driver does (append,
//! sync, persist state, send frames), and records every event in the trace.
//! Each replica is the production replica executor
//! (`walship_node::replica::exec`, see [`replica`]): the world only moves its
//! frames and time, crashes and restarts it, and records its outputs.
//!
//! It also keeps the [`Oracle`]: the facts the invariant checkers judge the
//! run against (the primary's history, what was acknowledged to clients,
//! which faults were injected where).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use walship_primary::core::{
    self as pcore, Action as PAction, Event as PEvent, LogSource, PrimaryCore, Quorum, Window,
};
use walship_replica::halt::HaltReason;
use walship_snapshot::{Limits, SnapshotSource, SnapshotStore};
use walship_wal::record::{decode_record, encode_record, RECORD_HEADER_LEN};
use walship_wal::sim::{SimConfig, SimStorage};
use walship_wal::state::{read_state_file, write_state_file, EpochEntry, EpochHistory};
use walship_wal::{Lsn, Position, Wal, WalError, WalOptions};
use walship_wire::frame::{encode_frame, FrameDecoder, FrameError};
use walship_wire::message::{Message, RecordBatch, Welcome};

use crate::clock::SimClock;
use crate::net::{ConnId, NetConfig, NetEvent, NodeId, SimNet};
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
    /// history cut to the entries below that. FM-X.2: the replica halts
    /// `stale-primary` and appends nothing. (Armed, it waits for a replica
    /// that has seen an epoch above 0.)
    StaleWelcome,
}

impl FrameFault {
    /// The halt reason the replica must report for this fault.
    pub fn expected_halt(self) -> HaltReason {
        match self {
            FrameFault::Corrupt => HaltReason::Checksum,
            FrameFault::Skip => HaltReason::Gap,
            FrameFault::Duplicate => HaltReason::Duplicate,
            FrameFault::Reorder => HaltReason::Reorder,
            FrameFault::EpochRegress | FrameFault::EpochBelowHistory => HaltReason::EpochRegression,
            FrameFault::Malformed => HaltReason::MalformedBatch,
            FrameFault::WrongPrevCrc => HaltReason::Divergence,
            FrameFault::CorruptChunk => HaltReason::SnapshotInvalid,
            FrameFault::StaleWelcome => HaltReason::StalePrimary,
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
    /// Appends waiting for their commit acknowledgement.
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

struct PrimaryConn {
    decoder: FrameDecoder,
    peer: NodeId,
}

/// A running primary.
pub struct PrimaryUp {
    /// Its WAL.
    pub wal: Wal<SimStorage>,
    /// Its core.
    pub core: PrimaryCore,
    /// Its snapshot directory.
    pub snapshots: SnapshotStore<SimStorage>,
    conns: BTreeMap<ConnId, PrimaryConn>,
    sync_at: Option<u64>,
}

/// The primary node: its disk, and its process when running.
pub struct PrimaryNode {
    /// The node's disk.
    pub storage: SimStorage,
    /// The process, while running.
    pub up: Option<PrimaryUp>,
    /// Why the node is down, if it refused to start.
    pub refused: Option<String>,
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
    next_tick: u64,
}

fn root() -> PathBuf {
    PathBuf::from(NODE_ROOT)
}
fn wal_dir() -> PathBuf {
    root().join("wal")
}
/// The state directory (`state/`) of every simulated node, inside its storage.
pub fn state_dir() -> PathBuf {
    root().join("state")
}

/// The WAL as the primary core sees it.
struct WalLog<'a> {
    wal: &'a mut Wal<SimStorage>,
    newest: Option<Position>,
}

impl LogSource for WalLog<'_> {
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        self.wal.position_at(lsn)
    }
    fn durable(&self) -> Position {
        let d = self.wal.durable_lsn();
        match self.wal.position_at(d) {
            Ok(Some(p)) => p,
            _ => self.wal.base(),
        }
    }
    fn first_lsn(&self) -> Lsn {
        self.wal.first_lsn()
    }
    fn newest_snapshot(&self) -> Option<Position> {
        self.newest
    }
    fn read_batch(
        &mut self,
        from_lsn: Lsn,
        max_bytes: usize,
    ) -> Result<Option<(Lsn, u32, Position, Vec<u8>)>, WalError> {
        let durable = self.wal.durable_lsn();
        if from_lsn > durable {
            return Ok(None);
        }
        let mut reader = self.wal.reader(from_lsn)?;
        let mut bytes = Vec::new();
        let mut count = 0u32;
        let mut last = None;
        while let Some(r) = reader.next_record() {
            let r = r?;
            if r.lsn() > durable || (count > 0 && bytes.len() + r.bytes().len() > max_bytes) {
                break;
            }
            bytes.extend_from_slice(r.bytes());
            count += 1;
            last = Some(r.position());
        }
        Ok(last.map(|l| (from_lsn, count, l, bytes)))
    }
}

fn wal_options(cfg: &WorldConfig, epoch: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes: cfg.segment_size_bytes,
        max_record_bytes: cfg.max_record_bytes,
        epoch,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    s: &SimStorage,
    name: &str,
) -> Result<Option<T>, String> {
    match read_state_file(s, &state_dir(), name) {
        Ok(None) => Ok(None),
        Ok(Some(body)) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| format!("state/{name}: {e}")),
        Err(e) => Err(format!("state/{name}: {e}")),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CommitBody {
    commit_lsn: Lsn,
}

fn write_commit(s: &SimStorage, lsn: Lsn) -> Result<(), String> {
    let body = serde_json::to_vec(&CommitBody { commit_lsn: lsn }).map_err(|e| e.to_string())?;
    write_state_file(s, &state_dir(), "commit", &body).map_err(|e| e.to_string())
}

fn make_dirs(s: &SimStorage) -> std::io::Result<()> {
    use walship_wal::Storage;
    for d in [root(), wal_dir(), state_dir(), root().join("snapshots")] {
        s.create_dir_all(&d)?;
    }
    s.sync_dir(Path::new("/"))?;
    s.sync_dir(&root())?;
    Ok(())
}

/// Splits a records byte string into whole records (verified by crc).
fn split_records(bytes: &[u8], max: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        match decode_record(&bytes[off..], max) {
            Ok(v) => {
                out.push(v.bytes().to_vec());
                off += v.bytes().len();
            }
            Err(_) => {
                out.push(bytes[off..].to_vec());
                break;
            }
        }
    }
    out
}

/// Applies a sender fault to a batch; `None` if the fault could not apply
/// (e.g. reorder of a one-record batch) and the batch is sent unchanged.
fn apply_frame_fault(f: FrameFault, b: &RecordBatch, max: u32) -> Option<RecordBatch> {
    let recs = split_records(&b.bytes, max);
    let mut out = b.clone();
    match f {
        FrameFault::Corrupt => {
            let first = recs.first()?;
            let at = if first.len() > RECORD_HEADER_LEN {
                RECORD_HEADER_LEN
            } else {
                16
            };
            out.bytes[at] ^= 0x01;
        }
        FrameFault::Skip => {
            if recs.len() < 2 {
                return None;
            }
            out.bytes = recs[1..].concat();
            out.first_lsn += 1;
            out.count -= 1;
        }
        FrameFault::Duplicate => {
            let first = recs.first()?;
            let mut bytes = first.clone();
            bytes.extend_from_slice(&b.bytes);
            out.bytes = bytes;
            out.count += 1;
        }
        FrameFault::Reorder => {
            if recs.len() < 2 {
                return None;
            }
            // A sender that reorders records but writes a header that agrees
            // with what it sends (first_lsn = the lsn of the first record).
            let mut r = recs.clone();
            r.swap(0, 1);
            out.first_lsn = decode_record(&r[0], max).ok()?.lsn();
            out.bytes = r.concat();
        }
        FrameFault::EpochRegress | FrameFault::EpochBelowHistory => {
            let first = recs.first()?;
            let v = decode_record(first, max).ok()?;
            // At lsn 1 there is no earlier record to regress from: only the
            // announced epoch history shows that epoch 0 is wrong there (the
            // replica checks it since finding 4 was fixed).
            if v.epoch() == 0 {
                return None;
            }
            let mut bytes = Vec::new();
            encode_record(v.lsn(), 0, v.prev_crc(), v.payload(), &mut bytes);
            out.bytes = bytes;
            out.count = 1;
        }
        FrameFault::Malformed => {
            out.count += 7;
        }
        FrameFault::WrongPrevCrc => {
            let first = recs.first()?;
            let v = decode_record(first, max).ok()?;
            let mut bytes = Vec::new();
            encode_record(
                v.lsn(),
                v.epoch(),
                v.prev_crc() ^ 0x5a5a_0001,
                v.payload(),
                &mut bytes,
            );
            for r in &recs[1..] {
                bytes.extend_from_slice(r);
            }
            out.bytes = bytes;
        }
        FrameFault::CorruptChunk | FrameFault::StaleWelcome => return None,
    }
    Some(out)
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
            next_tick: 0,
        };
        make_dirs(&w.primary.storage).map_err(|e| format!("p0 mkdir: {e}"))?;
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
        self.primary.up.as_ref().map_or(0, |p| p.core.commit_lsn())
    }

    /// Arms a sender fault for the next `Records` frame sent to replica `n`.
    pub fn arm_frame_fault(&mut self, n: NodeId, f: FrameFault) {
        self.log(format!("arm frame fault {f:?} for {}", node_name(n)));
        self.taps.insert(n, f);
    }

    // ------------------------------------------------------------------ primary

    /// Starts (or restarts) the primary from its disk.
    pub fn start_primary(&mut self) {
        assert!(self.primary.up.is_none(), "primary already running");
        let s = self.primary.storage.clone();
        let opened = Wal::open(
            s.clone(),
            &wal_dir(),
            wal_options(&self.cfg, self.cfg.epoch),
        );
        let (wal, report) = match opened {
            Ok(x) => x,
            Err(e) => {
                // Refusing is safe; but a record that was synced before the
                // crash must never be the one reported corrupt (SimStorage
                // never damages synced bytes unless told to).
                if let Some(lsn) = e.corruption().and_then(|c| c.lsn) {
                    if lsn <= self.oracle.primary_durable
                        && !self.oracle.disk_damaged.contains(&PRIMARY)
                    {
                        self.oracle.action_violations.push((
                            "local recovery never reports a synced record corrupt",
                            format!(
                                "p0 reports lsn {lsn} corrupt but it was durable (durable lsn {}) before the crash: {e}",
                                self.oracle.primary_durable
                            ),
                        ));
                    }
                }
                let msg = format!("p0 refuses to start: {e}");
                self.log(msg.clone());
                self.primary.refused = Some(msg);
                return;
            }
        };
        let commit = match read_json::<CommitBody>(&s, "commit") {
            Ok(c) => c.map_or(0, |c| c.commit_lsn),
            Err(e) => {
                let msg = format!("p0 refuses to start: {e}");
                self.log(msg.clone());
                self.primary.refused = Some(msg);
                return;
            }
        };
        let history = EpochHistory {
            entries: self.cfg.epoch_history.clone().unwrap_or_else(|| {
                vec![EpochEntry {
                    epoch: self.cfg.epoch,
                    start_lsn: 1,
                }]
            }),
        };
        let quorum = match Quorum::from_setting(self.cfg.quorum) {
            Ok(q) => q,
            Err(e) => panic!("world config: bad quorum {}: {e}", self.cfg.quorum),
        };
        let members = (0..=self.cfg.replicas).map(node_name).collect();
        let core = PrimaryCore::new(pcore::CoreConfig {
            node_id: node_name(PRIMARY),
            cluster_id: CLUSTER_ID.to_string(),
            members,
            quorum,
            epoch: self.cfg.epoch,
            epoch_history: history.entries.clone(),
            commit_lsn: commit,
            window: self.cfg.window,
        });
        let core = match core {
            Ok(c) => c,
            Err(e) => panic!("world config: primary core refused: {e}"),
        };
        if wal.durable_lsn() < self.oracle.primary_durable
            && !self.oracle.disk_damaged.contains(&PRIMARY)
        {
            self.oracle.action_violations.push((
                "never cut what was made durable (DESIGN: never cut what was acknowledged)",
                format!(
                    "p0: WAL reopened at durable lsn {} below the {} it had made durable",
                    wal.durable_lsn(),
                    self.oracle.primary_durable
                ),
            ));
        }
        // The oracle's history: what survived on disk.
        let last = wal.last();
        self.oracle.primary_history.truncate(last.lsn as usize);
        self.oracle.primary_durable = wal.durable_lsn();
        self.oracle.pending_acks.retain(|l| *l <= last.lsn);
        self.log(format!(
            "p0 start: last {} durable {} commit {commit} ({report:?})",
            last.lsn,
            wal.durable_lsn()
        ));
        self.primary.refused = None;
        let snapshots =
            match SnapshotStore::open(s.clone(), &root().join("snapshots"), Limits::default()) {
                Ok((st, _)) => st,
                Err(e) => {
                    let msg = format!("p0 refuses to start: snapshot store: {e}");
                    self.log(msg.clone());
                    self.primary.refused = Some(msg);
                    return;
                }
            };
        self.primary.up = Some(PrimaryUp {
            wal,
            core,
            snapshots,
            conns: BTreeMap::new(),
            sync_at: None,
        });
        self.net.restart_node(PRIMARY, self.now());
        self.next_tick = self.now() + self.cfg.tick_ms;
        self.primary_event(PEvent::LocalDurable);
    }

    /// Appends client payloads on the primary (not durable until the group sync).
    pub fn client_append(&mut self, payloads: &[Vec<u8>]) -> Vec<Lsn> {
        let now = self.now();
        let delay = self
            .rng
            .range(self.cfg.sync_delay_ms.0, self.cfg.sync_delay_ms.1);
        let Some(p) = self.primary.up.as_mut() else {
            return Vec::new();
        };
        let mut lsns = Vec::new();
        let mut fatal = None;
        for pl in payloads {
            match p.wal.append(pl) {
                Ok(lsn) => {
                    let pos = p.wal.last();
                    assert_eq!(pos.lsn, lsn);
                    lsns.push(lsn);
                    self.oracle.primary_history.push(pos);
                    assert_eq!(self.oracle.primary_history.len() as u64, lsn);
                    self.oracle.pending_acks.push(lsn);
                }
                Err(e) => {
                    self.trace
                        .record(now, self.step, format!("p0 append failed: {e}"));
                    // Like the driver (FM-X.5): any append error but a too-large
                    // record (a failed fsync while rolling a segment poisons the
                    // WAL, ENOSPC, ...) stops the node before it handles anything
                    // else; it never ships from a WAL it cannot trust.
                    if !matches!(e, WalError::RecordTooLarge { .. }) {
                        fatal = Some(e);
                    }
                    break;
                }
            }
        }
        if let Some(e) = fatal {
            if let (Some(a), Some(b)) = (lsns.first(), lsns.last()) {
                self.log(format!("p0 append lsn {a}..={b}"));
            }
            self.log(format!("p0 append failed, node stops: {e}"));
            self.crash(PRIMARY);
            return lsns;
        }
        if p.sync_at.is_none() {
            p.sync_at = Some(now + delay);
        }
        if let (Some(a), Some(b)) = (lsns.first(), lsns.last()) {
            self.log(format!("p0 append lsn {a}..={b}"));
        }
        lsns
    }

    fn primary_sync(&mut self) {
        let Some(p) = self.primary.up.as_mut() else {
            return;
        };
        p.sync_at = None;
        match p.wal.sync() {
            Ok(d) => {
                self.oracle.primary_durable = d;
                self.log(format!("p0 sync -> durable {d}"));
                self.primary_event(PEvent::LocalDurable);
            }
            Err(e) => {
                // FM-X.5: never retried; the node stops and restarts from its disk.
                self.log(format!("p0 sync failed, node stops: {e}"));
                self.crash(PRIMARY);
            }
        }
    }

    fn primary_event(&mut self, ev: PEvent) {
        let now = self.now();
        let Some(p) = self.primary.up.as_mut() else {
            return;
        };
        let actions = {
            let newest = p.snapshots.newest().ok().flatten().map(|s| s.boundary);
            let mut log = WalLog {
                wal: &mut p.wal,
                newest,
            };
            p.core.handle(ev, &mut log, now)
        };
        for a in actions {
            self.primary_action(a);
        }
    }

    fn primary_action(&mut self, a: PAction) {
        let now = self.now();
        match a {
            PAction::Send { conn, msg } => {
                let net_conn = ConnId(conn);
                let Some(p) = self.primary.up.as_mut() else {
                    return;
                };
                let Some(peer) = p.conns.get(&net_conn).map(|c| c.peer) else {
                    return;
                };
                let mut msg = msg;
                if let Message::SnapshotChunk(c) = &mut msg {
                    if self.taps.get(&peer) == Some(&FrameFault::CorruptChunk)
                        && !c.bytes.is_empty()
                    {
                        self.taps.remove(&peer);
                        c.bytes[0] ^= 0x01;
                        self.oracle
                            .injected
                            .entry(peer)
                            .or_default()
                            .push(FrameFault::CorruptChunk);
                        self.trace.record(
                            now,
                            self.step,
                            format!(
                                "inject CorruptChunk into snapshot chunk {} to {}",
                                c.index,
                                node_name(peer)
                            ),
                        );
                    }
                }
                if let Message::Welcome(wm) = &mut msg {
                    if self.taps.get(&peer) == Some(&FrameFault::StaleWelcome) {
                        let seen = self
                            .replicas
                            .get(peer.wrapping_sub(1))
                            .and_then(|r| r.up.as_ref())
                            .map_or(0, |u| u.core().highest_epoch_seen());
                        if seen > 0 {
                            self.taps.remove(&peer);
                            wm.epoch = seen - 1;
                            wm.epoch_history.retain(|e| e.epoch < seen);
                            self.oracle
                                .injected
                                .entry(peer)
                                .or_default()
                                .push(FrameFault::StaleWelcome);
                            self.trace.record(
                                now,
                                self.step,
                                format!(
                                    "inject StaleWelcome (epoch {} below the {seen} seen) to {}",
                                    wm.epoch,
                                    node_name(peer)
                                ),
                            );
                            self.faulty_welcomes.insert(peer, wm.clone());
                        }
                    }
                }
                if let Message::Records(b) = &msg {
                    let last_lsn = b.first_lsn + u64::from(b.count).saturating_sub(1);
                    if b.count > 0 && last_lsn > p.wal.durable_lsn() {
                        self.oracle.shipped_above_durable += 1;
                        self.oracle.action_violations.push((
                            "primary ships only durable records (FM-3.1)",
                            format!(
                                "Records up to lsn {last_lsn} sent to {} while durable lsn is {}",
                                node_name(peer),
                                p.wal.durable_lsn()
                            ),
                        ));
                    }
                    if b.count > 0 {
                        if let Some(f) = self.taps.get(&peer).copied() {
                            if let Some(bad) = apply_frame_fault(f, b, self.cfg.max_record_bytes) {
                                self.taps.remove(&peer);
                                self.oracle.injected.entry(peer).or_default().push(f);
                                self.trace.record(
                                    now,
                                    self.step,
                                    format!(
                                        "inject {f:?} into Records lsn {} to {}",
                                        b.first_lsn,
                                        node_name(peer)
                                    ),
                                );
                                self.faulty_frames.insert(peer, bad.clone());
                                msg = Message::Records(bad);
                            }
                        }
                    }
                }
                let mut buf = Vec::new();
                if let Err(e) = encode_frame(&msg, &mut buf) {
                    panic!("p0: encoding {} failed: {e}", msg.kind());
                }
                self.trace.record(
                    now,
                    self.step,
                    format!("p0 -> {} {}", node_name(peer), describe(&msg)),
                );
                self.net.send(net_conn, PRIMARY, &buf, now);
            }
            PAction::Close { conn, reason } => {
                let net_conn = ConnId(conn);
                self.log(format!("p0 closes conn {conn}: {reason}"));
                if let Some(p) = self.primary.up.as_mut() {
                    p.conns.remove(&net_conn);
                }
                self.net.close(net_conn, PRIMARY, now);
            }
            PAction::CommitAdvanced { commit_lsn } => {
                // Quorum at the moment of acknowledgement (FM-X.11): enough
                // replica disks hold everything up to the new watermark.
                let needed = self.receipts_needed();
                // A replica whose disk was replaced counts with what its lost
                // disks had until the primary receives a Hello from the new
                // disk (it cannot know earlier: a receipt is a past fact, and
                // the lost disk counts against the fault budget, see
                // spec/failure-matrix.md FM-X.11); from then on only with its
                // new log.
                let holders = self
                    .replicas
                    .iter()
                    .filter(|r| r.unannounced_wipe.unwrap_or(0).max(r.known_durable) >= commit_lsn)
                    .count();
                if holders < needed {
                    self.oracle.action_violations.push((
                        "a commit is acknowledged only with its quorum (FM-X.11)",
                        format!(
                            "commit advanced to {commit_lsn} with {holders} replicas durable there, quorum {} needs {needed}",
                            self.cfg.quorum
                        ),
                    ));
                }
                self.oracle.max_commit = self.oracle.max_commit.max(commit_lsn);
                let hist = &self.oracle.primary_history;
                let mut newly = 0;
                self.oracle.pending_acks.retain(|&l| {
                    if l <= commit_lsn {
                        if let Some(pos) = hist.get(l as usize - 1) {
                            self.oracle.acked.insert(l, *pos);
                            newly += 1;
                        }
                        false
                    } else {
                        true
                    }
                });
                self.log(format!("p0 commit -> {commit_lsn} ({newly} acked)"));
                if let Err(e) = write_commit(&self.primary.storage, commit_lsn) {
                    self.log(format!("p0 persisting commit failed, node stops: {e}"));
                    self.crash(PRIMARY);
                }
            }
            PAction::SendSnapshot { conn, boundary } => {
                let msgs = self
                    .primary
                    .up
                    .as_ref()
                    .map(|p| snapshot_messages(&p.snapshots, boundary));
                match msgs {
                    Some(Ok(msgs)) => {
                        self.log(format!(
                            "p0 sends snapshot {boundary} ({} messages) on conn {conn}",
                            msgs.len()
                        ));
                        for msg in msgs {
                            self.primary_action(PAction::Send { conn, msg });
                        }
                    }
                    Some(Err(e)) => {
                        self.log(format!(
                            "p0 cannot send snapshot {boundary}: {e}; closing conn {conn}"
                        ));
                        if let Some(p) = self.primary.up.as_mut() {
                            p.conns.remove(&ConnId(conn));
                        }
                        self.net.close(ConnId(conn), PRIMARY, now);
                        self.primary_event(PEvent::Disconnected { conn });
                    }
                    None => {}
                }
            }
            #[allow(unreachable_patterns)]
            other => self.log(format!("p0 action ignored: {other:?}")),
        }
    }

    /// The primary takes a snapshot at its commit watermark and drops the
    /// WAL segments wholly below it. Returns the boundary.
    pub fn primary_snapshot(&mut self) -> Result<Position, String> {
        let Some(p) = self.primary.up.as_mut() else {
            return Err("primary is down".into());
        };
        let commit = p.core.commit_lsn().min(p.wal.durable_lsn());
        if commit == 0 {
            return Err("nothing committed yet".into());
        }
        let image: Vec<u8> = self.oracle.primary_history[..commit as usize]
            .iter()
            .flat_map(|pos| pos.crc.to_le_bytes())
            .collect();
        let wal = &p.wal;
        let created = p.snapshots.create(
            4096,
            &mut Image {
                bytes: image,
                lsn: commit,
            },
            &mut |lsn| {
                wal.position_at(lsn)
                    .map_err(walship_snapshot::SnapshotError::from)?
                    .ok_or_else(|| {
                        walship_snapshot::SnapshotError::from(WalError::NotRetained {
                            lsn,
                            first_lsn: wal.first_lsn(),
                        })
                    })
            },
        );
        // A failure of the node's own storage stops the primary, as production's
        // maintenance does (FM-X.5; the same decision: snapshot_error_stops_the_node).
        let snap = match created {
            Ok(snap) => snap,
            Err(e) => {
                if walship_node::primary::snapshot_error_stops_the_node(&e) {
                    self.log(format!("p0 snapshot failed, node stops: {e}"));
                    self.crash(PRIMARY);
                }
                return Err(e.to_string());
            }
        };
        if let Err(e) = p.wal.truncate_front(snap.boundary.lsn + 1) {
            self.log(format!("p0 WAL truncation failed, node stops: {e}"));
            self.crash(PRIMARY);
            return Err(e.to_string());
        }
        let first = p.wal.first_lsn();
        self.log(format!(
            "p0 snapshot at {} (WAL now starts at lsn {first})",
            snap.boundary
        ));
        Ok(snap.boundary)
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
            self.primary.up = None;
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
        if let Some(p) = &self.primary.up {
            take(p.sync_at);
            take(Some(self.next_tick));
        }
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
        if self
            .primary
            .up
            .as_ref()
            .and_then(|p| p.sync_at)
            .is_some_and(|t| t <= now)
        {
            self.primary_sync();
        }
        if self.primary.up.is_some() && self.next_tick <= now {
            self.next_tick = now + self.cfg.tick_ms;
            self.primary_event(PEvent::Tick);
        }
        for n in 1..=self.cfg.replicas {
            self.replica_fire_due(n);
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Accepted { conn, to, from } => {
                assert_eq!(to, PRIMARY, "only the primary accepts connections");
                let Some(p) = self.primary.up.as_mut() else {
                    return;
                };
                p.conns.insert(
                    conn,
                    PrimaryConn {
                        decoder: FrameDecoder::default(),
                        peer: from,
                    },
                );
                self.log(format!(
                    "p0 accepted conn {} from {}",
                    conn.0,
                    node_name(from)
                ));
                self.primary_event(PEvent::Connected {
                    conn: conn.0,
                    node_id: node_name(from),
                });
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
                    let known = self
                        .primary
                        .up
                        .as_mut()
                        .and_then(|p| p.conns.remove(&conn))
                        .is_some();
                    if known {
                        self.log(format!("p0 conn {} closed ({reason:?})", conn.0));
                        self.primary_event(PEvent::Disconnected { conn: conn.0 });
                    }
                } else {
                    self.replica_closed(at, conn, reason);
                }
            }
        }
    }

    fn primary_data(&mut self, conn: ConnId, bytes: &[u8]) {
        let mut msgs = Vec::new();
        let mut bad: Option<FrameError> = None;
        {
            let Some(p) = self.primary.up.as_mut() else {
                return;
            };
            let Some(c) = p.conns.get_mut(&conn) else {
                return;
            };
            match c.decoder.push(bytes) {
                Ok(()) => loop {
                    match c.decoder.next_message() {
                        Ok(Some(m)) => msgs.push(m),
                        Ok(None) => break,
                        Err(e) => {
                            bad = Some(e);
                            break;
                        }
                    }
                },
                Err(e) => bad = Some(e),
            }
        }
        for m in msgs {
            if matches!(m, Message::Hello(_)) {
                // The primary now learns of a replaced disk (if the Hello
                // comes from the new disk).
                if let Some(r) = self
                    .replicas
                    .iter_mut()
                    .find(|r| r.announcing_conn == Some(conn))
                {
                    r.announcing_conn = None;
                    r.unannounced_wipe = None;
                }
            }
            self.primary_event(PEvent::Received {
                conn: conn.0,
                msg: m,
            });
        }
        if let Some(e) = bad {
            let now = self.now();
            self.log(format!("p0 bad frame on conn {}: {e}; closing", conn.0));
            if let Some(p) = self.primary.up.as_mut() {
                p.conns.remove(&conn);
            }
            self.net.close(conn, PRIMARY, now);
            self.primary_event(PEvent::Disconnected { conn: conn.0 });
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
        if p.sync_at.is_some() {
            return false;
        }
        let durable = p.wal.durable_lsn();
        let commit = p.core.commit_lsn();
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

/// The embedder state a primary snapshots: the crcs of its records.
struct Image {
    bytes: Vec<u8>,
    lsn: Lsn,
}

impl SnapshotSource for Image {
    fn write_snapshot(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
        w.write_all(&self.bytes)?;
        Ok(self.lsn)
    }
}

/// The messages that carry a stored snapshot: offer, every chunk, end.
fn snapshot_messages(
    store: &SnapshotStore<SimStorage>,
    boundary: Position,
) -> Result<Vec<Message>, String> {
    let snap = store
        .installed()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.boundary == boundary)
        .ok_or_else(|| format!("no snapshot at {boundary}"))?;
    let reader = store.reader(&snap).map_err(|e| e.to_string())?;
    let offer = reader.offer();
    let mut out = vec![Message::SnapshotOffer(offer)];
    for i in 0..offer.chunk_count {
        out.push(Message::SnapshotChunk(
            reader.chunk_message(i).map_err(|e| e.to_string())?,
        ));
    }
    out.push(Message::SnapshotEnd(reader.end_message()));
    Ok(out)
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
