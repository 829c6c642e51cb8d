//! The simulated primary: the production executor (`walship_node::primary::exec`) over the
//! node's `SimStorage`. The world only delivers `SimNet` frames to it, sends what it emits
//! (applying armed sender faults to the outgoing frames: fault placement stays here), fires
//! its deadlines and the group sync, crashes and restarts it, and records the oracle's facts
//! (appended positions, durable lsn, commits, acknowledgements) from its outputs. Every
//! protocol and durability decision is the executor's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use walship_node::primary::exec::{ExecConfig, Output, PrimaryExec};
use walship_node::primary::{PrimaryError, PrimaryStop};
use walship_primary::core::{
    apply_ship_fault, LogSource, PrimaryCore, Quorum, ReplicaProgress, ShipFault,
};
use walship_snapshot::{SnapshotSource, SnapshotStore, TransferItem};
use walship_wal::record::{decode_record, encode_record};
use walship_wal::sim::SimStorage;
use walship_wal::state::{EpochEntry, EpochHistory, NodeDir};
use walship_wal::{Lsn, Position, SharedWal, WalError};
use walship_wire::frame::{encode_frame, FrameDecoder};
use walship_wire::message::{Message, RecordBatch};

use super::{describe, node_name, FrameFault, World, CLUSTER_ID, NODE_ROOT, PRIMARY};
use crate::net::{ConnId, NodeId};

/// One accepted connection of the primary: its frame decoder and peer.
pub(super) struct PrimaryConn {
    decoder: FrameDecoder,
    peer: NodeId,
}

/// A running primary process.
pub struct PrimaryUp {
    /// The executor (the same code `walship node` runs).
    pub exec: PrimaryExec<SimStorage, u64>,
    /// Its WAL (the executor's, shared for the checkers and scenarios).
    pub wal: Arc<SharedWal<SimStorage>>,
    conns: BTreeMap<ConnId, PrimaryConn>,
    /// When the world lets the executor's group sync run (models the executor thread's
    /// latency: appends arriving meanwhile join the same sync).
    sync_at: Option<u64>,
    next_token: u64,
    /// The disk's failed syncs when this process started.
    failed_syncs_at_start: u64,
}

impl PrimaryUp {
    /// A running primary process around `exec`, opened on `storage` (its
    /// failed-fsync count now is the baseline of FM-X.5's check). The
    /// transport half below (connections, frames, client tokens, group sync
    /// latency) is shared by [`World`] and the failover world
    /// (`crate::failover`), where any node may run it.
    pub(crate) fn new(exec: PrimaryExec<SimStorage, u64>, storage: &SimStorage) -> PrimaryUp {
        let wal = exec.wal().clone();
        PrimaryUp {
            exec,
            wal,
            conns: BTreeMap::new(),
            sync_at: None,
            next_token: 0,
            failed_syncs_at_start: storage.counters().failed_syncs,
        }
    }

    /// The transport accepted `conn` from node `peer`: its decoder is set up.
    /// The caller then tells the executor ([`PrimaryUp::connected`]).
    pub(crate) fn accept(&mut self, conn: ConnId, peer: NodeId) {
        self.conns.insert(
            conn,
            PrimaryConn {
                decoder: FrameDecoder::default(),
                peer,
            },
        );
    }

    /// Tells the executor that `conn` from the member named `peer_name` is open.
    pub(crate) fn connected(&mut self, conn: ConnId, peer_name: String, now: u64) {
        self.exec.on_connected(conn.0, peer_name, now);
    }

    /// The peer of an open connection.
    pub(crate) fn peer(&self, conn: ConnId) -> Option<NodeId> {
        self.conns.get(&conn).map(|c| c.peer)
    }

    /// Every open connection.
    pub(crate) fn conn_ids(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }

    /// Decodes bytes that arrived on `conn` into whole messages (`None`: not
    /// an open connection; `Some(Some(e))`: the first framing error).
    pub(crate) fn decode(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        msgs: &mut Vec<Message>,
    ) -> Option<Option<walship_wire::frame::FrameError>> {
        let c = self.conns.get_mut(&conn)?;
        Some(super::decode_frames(&mut c.decoder, bytes, msgs))
    }

    /// Hands one decoded message to the executor, if `conn` is still open
    /// (the executor may have closed it while handling an earlier frame).
    pub(crate) fn deliver(&mut self, conn: ConnId, msg: Message, now: u64) -> bool {
        if !self.conns.contains_key(&conn) {
            return false;
        }
        self.exec.on_frame(conn.0, msg, now);
        true
    }

    /// `conn` ended (the peer or the network closed it, or a bad frame):
    /// forgotten and reported to the executor. False if it was not open.
    pub(crate) fn conn_closed(&mut self, conn: ConnId, now: u64) -> bool {
        if self.conns.remove(&conn).is_none() {
            return false;
        }
        self.exec.on_closed(conn.0, now);
        true
    }

    /// The executor closed `conn` ([`Output::Close`]) or gave it up.
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Client appends, each with a fresh token; returns the lsns written.
    /// The group sync they need runs `sync_delay_ms` later
    /// ([`PrimaryUp::schedule_sync`]).
    pub(crate) fn append(&mut self, payloads: &[Vec<u8>], now: u64) -> Vec<Lsn> {
        let batch: Vec<(&[u8], u64)> = payloads
            .iter()
            .map(|pl| {
                self.next_token += 1;
                (pl.as_slice(), self.next_token)
            })
            .collect();
        let written = self.exec.append(batch, now);
        written.map(|r| r.collect()).unwrap_or_default()
    }

    /// If the executor needs a group sync and none is scheduled, it runs
    /// `sync_delay_ms` from now (the executor thread's latency: appends
    /// arriving meanwhile join it).
    pub(crate) fn schedule_sync(&mut self, now: u64, sync_delay_ms: u64) {
        if self.exec.sync_needed() && self.sync_at.is_none() {
            self.sync_at = Some(now + sync_delay_ms);
        }
    }

    /// The next deadline: the group sync or the executor's timers.
    pub(crate) fn next_timer(&self) -> Option<u64> {
        match (self.sync_at, self.exec.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True while a group sync is scheduled.
    pub(crate) fn sync_pending(&self) -> bool {
        self.sync_at.is_some()
    }

    /// True if the group sync is due.
    pub(crate) fn sync_due(&self, now: u64) -> bool {
        self.sync_at.is_some_and(|t| t <= now)
    }

    /// Runs the group sync.
    pub(crate) fn sync(&mut self, now: u64) {
        self.sync_at = None;
        self.exec.sync(now);
    }

    /// True if an executor deadline is due.
    pub(crate) fn timer_due(&self, now: u64) -> bool {
        self.exec.next_deadline().is_some_and(|t| t <= now)
    }

    /// The disk's failed fsyncs since this process started (FM-X.5).
    pub(crate) fn failed_syncs_since_start(&self, storage: &SimStorage) -> u64 {
        storage
            .counters()
            .failed_syncs
            .saturating_sub(self.failed_syncs_at_start)
    }

    /// The primary core (read-only).
    pub fn core(&self) -> &PrimaryCore {
        self.exec.core()
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &SnapshotStore<SimStorage> {
        self.exec.snapshots()
    }

    /// What the core counts for each replica member (receipts, lag), read-only.
    pub fn replica_progress(&self, now_ms: u64) -> Vec<ReplicaProgress> {
        self.exec.core().status(&NoLog, now_ms).replicas
    }
}

/// The core's `status` needs a log only for the local durable position (lag figures);
/// the scenarios and checkers read receipts through it.
struct NoLog;
impl LogSource for NoLog {
    fn position_at(&mut self, _: Lsn) -> Result<Option<Position>, WalError> {
        Ok(None)
    }
    fn durable(&self) -> Position {
        Position::default()
    }
    fn first_lsn(&self) -> Lsn {
        1
    }
    fn read_batch(
        &mut self,
        _: Lsn,
        _: usize,
    ) -> Result<Option<(Lsn, u32, Position, Vec<u8>)>, WalError> {
        Ok(None)
    }
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

/// The primary's epoch history as provisioned on its disk before its first start (what
/// promotion or the first start wrote): from the world's configuration.
pub(super) fn provision_primary_disk(
    s: &SimStorage,
    cfg: &super::WorldConfig,
) -> Result<(), String> {
    let entries = cfg.epoch_history.clone().unwrap_or_else(|| {
        vec![EpochEntry {
            epoch: cfg.epoch,
            start_lsn: 1,
        }]
    });
    let dir = NodeDir::open(s.clone(), Path::new(NODE_ROOT)).map_err(|e| e.to_string())?;
    dir.set_epochs(&EpochHistory { entries })
        .map_err(|e| e.to_string())
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
        FrameFault::Corrupt | FrameFault::Skip | FrameFault::Duplicate => {
            let fault = match f {
                FrameFault::Corrupt => ShipFault::CorruptNextRecord,
                FrameFault::Skip => ShipFault::SkipNextRecord,
                _ => ShipFault::DuplicateNextRecord,
            };
            // A skip needs a record left to send (else the batch goes out unchanged).
            if recs.is_empty() || (fault == ShipFault::SkipNextRecord && recs.len() < 2) {
                return None;
            }
            let (first_lsn, count, bytes) =
                apply_ship_fault(Some(fault), b.first_lsn, b.count, b.bytes.clone())?;
            out.first_lsn = first_lsn;
            out.count = count;
            out.bytes = bytes;
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
    /// Starts (or restarts) the primary from its disk: the executor's own open (recovery,
    /// state files, epoch history, snapshot/WAL agreement).
    pub fn start_primary(&mut self) {
        assert!(self.primary.up.is_none(), "primary already running");
        let s = self.primary.storage.clone();
        let quorum = match Quorum::from_setting(self.cfg.quorum) {
            Ok(q) => q,
            Err(e) => panic!("world config: bad quorum {}: {e}", self.cfg.quorum),
        };
        let config = ExecConfig {
            node_id: node_name(PRIMARY),
            cluster_id: CLUSTER_ID.to_string(),
            members: (0..=self.cfg.replicas).map(node_name).collect(),
            quorum,
            window: self.cfg.window,
            segment_size_bytes: self.cfg.segment_size_bytes,
            max_record_bytes: self.cfg.max_record_bytes,
            // A simulated client waits as long as the process lives.
            commit_timeout_ms: None,
            tick_ms: self.cfg.tick_ms,
            persist_interval_ms: self.cfg.persist_interval_ms,
            new_epoch: None,
            base_config: None,
            forced_config: None,
        };
        let now = self.now();
        let exec = match PrimaryExec::<SimStorage, u64>::open(
            s.clone(),
            Path::new(NODE_ROOT),
            config,
            now,
        ) {
            Ok(exec) => exec,
            Err(e) => {
                // Refusing is safe; but a record that was synced before the
                // crash must never be the one reported corrupt (SimStorage
                // never damages synced bytes unless told to).
                let corrupt = match &e {
                    PrimaryError::Wal(we) => we.corruption().and_then(|c| c.lsn),
                    _ => None,
                };
                if let Some(lsn) = corrupt {
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
        let wal = exec.wal().clone();
        let durable = wal.durable_lsn();
        if durable < self.oracle.primary_durable && !self.oracle.disk_damaged.contains(&PRIMARY) {
            self.oracle.action_violations.push((
                "never cut what was made durable (DESIGN: never cut what was acknowledged)",
                format!(
                    "p0: WAL reopened at durable lsn {durable} below the {} it had made durable",
                    self.oracle.primary_durable
                ),
            ));
        }
        // The oracle's history: what survived on disk.
        let last = wal.last();
        self.oracle.primary_history.truncate(last.lsn as usize);
        self.oracle.primary_durable = durable;
        self.oracle.pending_acks.clear();
        let facts = exec.open_facts().clone();
        self.oracle.primary_commit_at_start = self
            .oracle
            .primary_commit_at_start
            .max(facts.persisted_commit_lsn);
        self.log(format!(
            "p0 start: last {} durable {durable} commit {} ({:?})",
            last.lsn, facts.persisted_commit_lsn, facts.report
        ));
        self.primary.refused = None;
        self.primary.up = Some(PrimaryUp::new(exec, &s));
        self.net.restart_node(PRIMARY, now);
        self.primary_outputs();
    }

    /// Client appends on the primary: written by the executor, not durable until its
    /// group sync (which the world lets run after the configured delay).
    pub fn client_append(&mut self, payloads: &[Vec<u8>]) -> Vec<Lsn> {
        let now = self.now();
        let delay = self
            .rng
            .range(self.cfg.sync_delay_ms.0, self.cfg.sync_delay_ms.1);
        let Some(p) = self.primary.up.as_mut() else {
            return Vec::new();
        };
        let lsns = p.append(payloads, now);
        // The history is what the WAL holds: a batch that failed part way (ENOSPC on a
        // segment roll) may have written its first records, whose appends still failed.
        // The WAL is poisoned then and reads nothing: the positions are computed from the
        // payloads (the batch's records are its first ones, in order) and checked against
        // the WAL's last position.
        let last = p.wal.last();
        let from = self.oracle.primary_history.len() as u64 + 1;
        let mut prev_crc = self.oracle.primary_history.last().map_or(0, |p| p.crc);
        let mut scratch = Vec::new();
        for (lsn, payload) in (from..=last.lsn).zip(payloads) {
            scratch.clear();
            let pos = encode_record(lsn, last.epoch, prev_crc, payload, &mut scratch);
            prev_crc = pos.crc;
            self.oracle.primary_history.push(pos);
        }
        assert_eq!(
            self.oracle.primary_history.last().copied(),
            (last.lsn > 0).then_some(last),
            "p0: the oracle's history ends where the WAL does after an append"
        );
        assert!(
            lsns.last().is_none_or(|&l| l <= last.lsn),
            "an append's lsn is in the WAL"
        );
        self.oracle.pending_acks.extend(&lsns);
        p.schedule_sync(now, delay);
        if let (Some(a), Some(b)) = (lsns.first(), lsns.last()) {
            self.log(format!("p0 append lsn {a}..={b}"));
        }
        self.primary_outputs();
        lsns
    }

    /// The executor's group sync, when the world lets it run.
    pub(super) fn primary_sync(&mut self) {
        let now = self.now();
        let Some(p) = self.primary.up.as_mut() else {
            return;
        };
        p.sync(now);
        self.primary_outputs();
    }

    /// Fires the executor's due deadlines (tick, persist of `state/commit`).
    pub(super) fn primary_timer(&mut self) {
        let now = self.now();
        let Some(p) = self.primary.up.as_mut() else {
            return;
        };
        p.exec.on_timer(now);
        self.primary_outputs();
    }

    /// The primary's next deadline: its group sync or the executor's timers.
    pub(super) fn primary_next_timer(&self) -> Option<u64> {
        self.primary.up.as_ref()?.next_timer()
    }

    /// The connection from `from` was accepted by the primary.
    pub(super) fn primary_accepted(&mut self, conn: ConnId, from: NodeId) {
        let now = self.now();
        let Some(p) = self.primary.up.as_mut() else {
            return;
        };
        p.accept(conn, from);
        self.log(format!(
            "p0 accepted conn {} from {}",
            conn.0,
            node_name(from)
        ));
        if let Some(p) = self.primary.up.as_mut() {
            p.connected(conn, node_name(from), now);
        }
        self.primary_outputs();
    }

    /// A connection of the primary was closed (by the peer or the network).
    pub(super) fn primary_closed(&mut self, conn: ConnId, reason: crate::net::CloseReason) {
        let now = self.now();
        let Some(p) = self.primary.up.as_mut() else {
            return;
        };
        if !p.conn_closed(conn, now) {
            return;
        }
        self.log(format!("p0 conn {} closed ({reason:?})", conn.0));
        self.primary_outputs();
    }

    /// Bytes arrived on a primary connection: decoded into frames for the executor.
    pub(super) fn primary_data(&mut self, conn: ConnId, bytes: &[u8]) {
        let mut msgs = Vec::new();
        let bad = {
            let Some(p) = self.primary.up.as_mut() else {
                return;
            };
            let Some(bad) = p.decode(conn, bytes, &mut msgs) else {
                return;
            };
            bad
        };
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
            let now = self.now();
            let Some(p) = self.primary.up.as_mut() else {
                return;
            };
            if !p.deliver(conn, m, now) {
                // The executor closed it while handling an earlier frame.
                return;
            }
            self.primary_outputs();
        }
        if let Some(e) = bad {
            let now = self.now();
            self.log(format!("p0 bad frame on conn {}: {e}; closing", conn.0));
            if let Some(p) = self.primary.up.as_mut() {
                p.conn_closed(conn, now);
            }
            self.net.close(conn, PRIMARY, now);
            self.primary_outputs();
        }
    }

    /// Performs the executor's outputs and records the oracle's facts from them.
    fn primary_outputs(&mut self) {
        let mut acked: Option<(Lsn, Lsn)> = None;
        while let Some(p) = self.primary.up.as_mut() {
            let Some(o) = p.exec.poll_output() else {
                break;
            };
            match o {
                Output::Send { conn, msg } => self.primary_send(ConnId(conn), msg),
                Output::Close { conn, reason } => {
                    let now = self.now();
                    self.log(format!("p0 closes conn {conn}: {reason}"));
                    if let Some(p) = self.primary.up.as_mut() {
                        p.forget(ConnId(conn));
                    }
                    self.net.close(ConnId(conn), PRIMARY, now);
                }
                Output::SendSnapshot { conn, boundary } => {
                    self.primary_send_snapshot(conn, boundary)
                }
                Output::Ack { token: _, lsn } => {
                    let pos = self.oracle.primary_history.get(lsn as usize - 1).copied();
                    let Some(pos) = pos else {
                        panic!("p0 acknowledged lsn {lsn}, which it never appended");
                    };
                    self.oracle.acked.insert(lsn, pos);
                    self.oracle.pending_acks.retain(|&l| l != lsn);
                    acked = Some(acked.map_or((lsn, lsn), |(a, _)| (a, lsn)));
                }
                Output::Fail { token: _, error } => {
                    self.log(format!("p0 append failed: {error}"));
                }
                Output::Durable(d) => {
                    self.oracle.primary_durable = d;
                    self.log(format!("p0 sync -> durable {d}"));
                }
                Output::Committed(commit_lsn) => self.primary_committed(commit_lsn),
                Output::CommitPersisted(lsn) => {
                    self.log(format!("p0 state/commit <- {lsn}"));
                }
                Output::Stopped(reason) => {
                    self.log(format!("p0 stops: {reason}"));
                    self.crash(PRIMARY);
                }
            }
        }
        if let Some((a, b)) = acked {
            self.log(format!("p0 acked lsn {a}..={b}"));
        }
        self.primary_stops_on_failed_sync();
    }

    /// FM-X.5 as the oracle sees it: a primary whose own disk failed an fsync since it
    /// started is stopped (the executor must stop it; a process that runs on is a
    /// violation, whatever it does next).
    fn primary_stops_on_failed_sync(&mut self) {
        let Some(p) = &self.primary.up else {
            return;
        };
        let failed = p.failed_syncs_since_start(&self.primary.storage);
        if failed > 0 && p.exec.stopped().is_none() {
            self.oracle.action_violations.push((
                "a failed fsync of the primary's own storage stops it, never retried (FM-X.5)",
                format!("p0 still runs after {} failed fsync(s) of its disk", failed),
            ));
        }
    }

    /// The commit watermark advanced: the quorum check at the moment of acknowledgement.
    fn primary_committed(&mut self, commit_lsn: Lsn) {
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
        self.log(format!("p0 commit -> {commit_lsn}"));
    }

    /// Sends one frame the executor emitted, applying an armed sender fault to it.
    fn primary_send(&mut self, net_conn: ConnId, msg: Message) {
        let now = self.now();
        let Some(p) = self.primary.up.as_ref() else {
            return;
        };
        let Some(peer) = p.peer(net_conn) else {
            return;
        };
        let wal_durable = p.wal.durable_lsn();
        let mut msg = msg;
        if let Message::SnapshotChunk(c) = &mut msg {
            if self.taps.get(&peer) == Some(&FrameFault::CorruptChunk) && !c.bytes.is_empty() {
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
            // Judged against the WAL's own durable lsn, not the executor's view of it.
            if b.count > 0 && last_lsn > wal_durable {
                self.oracle.shipped_above_durable += 1;
                self.oracle.action_violations.push((
                    "primary ships only durable records (FM-3.1)",
                    format!(
                        "Records up to lsn {last_lsn} sent to {} while durable lsn is {wal_durable}",
                        node_name(peer),
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

    /// Streams the newest snapshot on `conn` (offer, chunks, end), as production's writer
    /// task does; a snapshot that cannot be read closes the connection.
    fn primary_send_snapshot(&mut self, conn: u64, boundary: Position) {
        let now = self.now();
        let Some(p) = self.primary.up.as_ref() else {
            return;
        };
        match snapshot_messages(p.exec.snapshots(), boundary) {
            Ok(msgs) => {
                self.log(format!(
                    "p0 sends snapshot {boundary} ({} messages) on conn {conn}",
                    msgs.len()
                ));
                for msg in msgs {
                    self.primary_send(ConnId(conn), msg);
                }
            }
            Err(e) => {
                self.log(format!(
                    "p0 cannot send snapshot {boundary}: {e}; closing conn {conn}"
                ));
                if let Some(p) = self.primary.up.as_mut() {
                    p.conn_closed(ConnId(conn), now);
                }
                self.net.close(ConnId(conn), PRIMARY, now);
            }
        }
    }

    /// The primary takes a snapshot at its commit watermark and drops the
    /// WAL segments wholly below it. Returns the boundary. A failure of the node's
    /// own storage stops it, as production's maintenance does (FM-X.5; the same
    /// decision: `snapshot_error_stops_the_node`).
    pub fn primary_snapshot(&mut self) -> Result<Position, String> {
        let Some(p) = self.primary.up.as_mut() else {
            return Err("primary is down".into());
        };
        let commit = p.exec.commit_lsn().min(p.exec.durable_lsn());
        if commit == 0 {
            return Err("nothing committed yet".into());
        }
        let image: Vec<u8> = self.oracle.primary_history[..commit as usize]
            .iter()
            .flat_map(|pos| pos.crc.to_le_bytes())
            .collect();
        let wal = p.wal.clone();
        let created = p.exec.snapshots().create(
            4096,
            &mut Image {
                bytes: image,
                lsn: commit,
            },
            &mut |lsn| {
                wal.with(|w| {
                    w.position_at(lsn)
                        .map_err(walship_snapshot::SnapshotError::from)?
                        .ok_or_else(|| {
                            walship_snapshot::SnapshotError::from(WalError::NotRetained {
                                lsn,
                                first_lsn: w.first_lsn(),
                            })
                        })
                })
            },
        );
        let snap = match created {
            Ok(snap) => snap,
            Err(e) => {
                if walship_node::primary::snapshot_error_stops_the_node(&e) {
                    p.exec.stop(PrimaryStop::Maintenance {
                        error: e.to_string(),
                    });
                    self.log(format!("p0 snapshot failed: {e}"));
                    self.primary_outputs();
                }
                return Err(e.to_string());
            }
        };
        p.exec.set_newest_snapshot(Some(snap.boundary));
        if let Err(e) = p.wal.with(|w| w.truncate_front(snap.boundary.lsn + 1)) {
            p.exec.stop(PrimaryStop::Maintenance {
                error: e.to_string(),
            });
            self.log(format!("p0 WAL truncation failed: {e}"));
            self.primary_outputs();
            return Err(e.to_string());
        }
        let first = p.wal.with(|w| w.first_lsn());
        self.log(format!(
            "p0 snapshot at {} (WAL now starts at lsn {first})",
            snap.boundary
        ));
        self.primary_outputs();
        Ok(snap.boundary)
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
    // As the production driver: offer (with the configuration file), chunks, end.
    let sender = store.sender(&snap).map_err(|e| e.to_string())?;
    sender
        .map(|item| match item.map_err(|e| e.to_string())? {
            TransferItem::Offer(o) => Ok(Message::SnapshotOffer(o)),
            TransferItem::Chunk(c) => Ok(Message::SnapshotChunk(c)),
            TransferItem::End(e) => Ok(Message::SnapshotEnd(e)),
        })
        .collect()
}
