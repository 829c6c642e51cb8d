//! The replicas of the simulated cluster: each one the production replica executor
//! (`walship_node::replica::exec::ReplicaExec`) over its own [`SimStorage`].
//!
//! The world decides nothing here: it delivers the `SimNet` frames addressed to a replica
//! to its executor (decoding frames is the transport's part, as quinn's stream reader is
//! production's), opens the connections the executor asks for, sends and closes what it
//! emits, completes its group sync after a simulated fsync latency, fires its deadlines,
//! crashes it (drop + `SimStorage` crash) and restarts it through `ReplicaExec::open`, and
//! records the oracle's facts from the executor's outputs.

use std::sync::{Arc, Mutex};

use walship_node::replica::exec::{ExecConfig, Output, ReplicaExec, Start};
use walship_node::replica::{Applier, ApplyError, ReplicaError};
use walship_replica::core::{ReplicaCore, SessionEnd};
use walship_replica::halt::HaltRecord;
use walship_snapshot::SnapshotSink;
use walship_wal::sim::SimStorage;
use walship_wal::{Lsn, Position, Wal, WalError};
use walship_wire::frame::{encode_frame, FrameDecoder, FrameError};
use walship_wire::message::{EpochEntry, Message};

use super::{describe, node_name, root, wal_dir, wal_options, World, CLUSTER_ID, PRIMARY};
use crate::net::{CloseReason, ConnId, NodeId};

/// What one replica's applier (the embedder) has seen, as the executor reported it
/// ([`Output::Applied`], [`Output::Restored`], [`Output::SnapshotInstalled`]). It lives
/// outside the node's storage: it models an embedder that persists each apply itself.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// The snapshot the embedder restored, if any (its state as of that boundary).
    pub base: Option<Position>,
    /// Applied records after `base`, in apply order.
    pub records: Vec<Position>,
}

impl Applied {
    /// The last applied lsn (0 if none).
    pub fn last_lsn(&self) -> Lsn {
        self.records
            .last()
            .map(|p| p.lsn)
            .or(self.base.map(|b| b.lsn))
            .unwrap_or(0)
    }
}

/// The embedder a simulated replica's executor applies to: it keeps its applied lsn
/// (outside the node's disk, so it survives crashes) and restores snapshots.
#[derive(Debug, Default, Clone)]
pub struct SimApplier {
    applied: Arc<Mutex<Lsn>>,
}

impl SimApplier {
    fn lsn(&self) -> Lsn {
        match self.applied.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }
    fn set(&self, lsn: Lsn) {
        match self.applied.lock() {
            Ok(mut g) => *g = lsn,
            Err(p) => *p.into_inner() = lsn,
        }
    }
}

impl Applier for SimApplier {
    fn applied_lsn(&self) -> Lsn {
        self.lsn()
    }
    fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        self.set(lsn);
        Ok(())
    }
    fn apply_control(
        &mut self,
        lsn: Lsn,
        _control: &walship_wal::control::ControlRecord,
    ) -> Result<(), ApplyError> {
        // The embedder persists its apply point, control records included
        // (a new epoch's `EpochStart`): a restart does not pass them again.
        self.set(lsn);
        Ok(())
    }
    fn snapshot_sink(&mut self) -> Option<&mut dyn SnapshotSink> {
        Some(self)
    }
}

impl SnapshotSink for SimApplier {
    fn restore_snapshot(
        &mut self,
        boundary: Position,
        r: &mut dyn std::io::Read,
    ) -> std::io::Result<()> {
        // Reading it all verifies every chunk and the whole snapshot's checksum.
        std::io::copy(r, &mut std::io::sink())?;
        self.set(boundary.lsn);
        Ok(())
    }
}

/// State of a node captured when it halted (FM-10.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaltSnapshot {
    /// The halt record.
    pub record: HaltRecord,
    /// WAL last position at the halt (0 for a halt decided at open: the WAL stays closed).
    pub last: Position,
    /// Durable lsn at the halt.
    pub durable_lsn: Lsn,
    /// Applied lsn at the halt.
    pub applied_lsn: Lsn,
    /// Step of the halt.
    pub step: u64,
}

/// A running replica: the production executor, plus the transport's state.
pub struct ReplicaUp {
    /// The executor.
    pub exec: ReplicaExec<SimStorage>,
    /// The current connection and its frame decoder (the transport's part).
    conn: Option<(ConnId, FrameDecoder)>,
    /// When the group sync the executor needs completes (simulated fsync latency).
    sync_at: Option<u64>,
    /// The disk's failed-fsync count when this process started.
    failed_syncs_at_start: u64,
}

impl ReplicaUp {
    /// A running replica process around `exec`, opened on `storage` (its
    /// failed-fsync count now is the baseline of FM-X.4's check). The
    /// transport half below (the connection to the primary, frames, group
    /// sync latency) is shared by [`World`] and the failover world
    /// (`crate::failover`), where any node may run it.
    pub(crate) fn new(exec: ReplicaExec<SimStorage>, storage: &SimStorage) -> ReplicaUp {
        ReplicaUp {
            exec,
            conn: None,
            sync_at: None,
            failed_syncs_at_start: storage.counters().failed_syncs,
        }
    }

    /// The current connection to the primary.
    pub(crate) fn conn_id(&self) -> Option<ConnId> {
        self.conn.as_ref().map(|(c, _)| *c)
    }

    /// The transport's answer to [`Output::Connect`]: a connection, or none
    /// (unreachable).
    pub(crate) fn connect_result(&mut self, conn: Option<ConnId>, now: u64) {
        match conn {
            Some(conn) => {
                self.conn = Some((conn, FrameDecoder::default()));
                self.exec.on_connected(conn.0, now);
            }
            None => self.exec.on_connect_failed("unreachable".into(), now),
        }
    }

    /// Decodes bytes that arrived on `conn` into whole messages (`None`: not
    /// the current connection; `Some(Some(e))`: the first framing error).
    pub(crate) fn decode(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        msgs: &mut Vec<Message>,
    ) -> Option<Option<FrameError>> {
        match self.conn.as_mut() {
            Some((c, dec)) if *c == conn => Some(super::decode_frames(dec, bytes, msgs)),
            _ => None,
        }
    }

    /// Hands one decoded message to the executor.
    pub(crate) fn deliver(&mut self, conn: ConnId, msg: Message, now: u64) {
        self.exec.on_frame(conn.0, msg, now);
    }

    /// A framing error on `conn`: the session ends as malformed.
    pub(crate) fn bad_frame(&mut self, conn: ConnId, e: &FrameError, now: u64) {
        let end = SessionEnd::Malformed {
            detail: e.to_string(),
        };
        self.exec.on_closed(conn.0, end, now);
    }

    /// `conn` was closed by the peer or the network: a frame cut short is
    /// reported as such. False if it was not the current connection.
    pub(crate) fn conn_closed(&mut self, conn: ConnId, reason: CloseReason, now: u64) -> bool {
        let Some((c, dec)) = self.conn.take() else {
            return false;
        };
        if c != conn {
            self.conn = Some((c, dec));
            return false;
        }
        let end = match dec.finish() {
            Err(FrameError::Truncated { received, expected }) => {
                SessionEnd::FrameTruncated { received, expected }
            }
            _ => SessionEnd::ConnectionLost {
                detail: format!("{reason:?}"),
            },
        };
        self.exec.on_closed(conn.0, end, now);
        true
    }

    /// The executor closed `conn` ([`Output::Close`]).
    pub(crate) fn forget(&mut self, conn: ConnId) {
        if self.conn.as_ref().is_some_and(|(c, _)| *c == conn) {
            self.conn = None;
        }
    }

    /// If the executor needs a group sync and none is scheduled, it completes
    /// `sync_delay_ms` from now (simulated fsync latency).
    pub(crate) fn schedule_sync(&mut self, now: u64, sync_delay_ms: u64) {
        if self.exec.sync_needed() && self.sync_at.is_none() {
            self.sync_at = Some(now + sync_delay_ms);
        }
    }

    /// The next deadline: the group sync or the executor's.
    pub(crate) fn next_timer(&self) -> Option<u64> {
        match (self.sync_at, self.exec.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// (group sync due, executor deadline due).
    pub(crate) fn due(&self, now: u64) -> (bool, bool) {
        (
            self.sync_at.is_some_and(|t| t <= now),
            self.exec.next_deadline().is_some_and(|t| t <= now),
        )
    }

    /// Runs the group sync.
    pub(crate) fn sync(&mut self, now: u64) {
        self.sync_at = None;
        self.exec.sync(now);
    }

    /// The disk's failed fsyncs since this process started (FM-X.4).
    pub(crate) fn failed_syncs_since_start(&self, storage: &SimStorage) -> u64 {
        storage
            .counters()
            .failed_syncs
            .saturating_sub(self.failed_syncs_at_start)
    }

    /// The replica's WAL (`None` for a replica halted at open: it never opens it).
    pub fn wal(&self) -> Option<&Wal<SimStorage>> {
        self.exec.wal()
    }
    /// The replica's verifier core.
    pub fn core(&self) -> &ReplicaCore {
        self.exec.core()
    }
}

/// A replica node.
pub struct ReplicaNode {
    /// Node index.
    pub id: NodeId,
    /// The node's disk.
    pub storage: SimStorage,
    /// The process, while running.
    pub up: Option<ReplicaUp>,
    /// The embedder's applied records.
    pub applied: Applied,
    /// The embedder the executor applies to (survives crashes, replaced with the disk).
    pub applier: SimApplier,
    /// Set once the replica halted (first halt).
    pub halted: Option<HaltSnapshot>,
    /// Why the node is down, if it stopped on a local error.
    pub stopped: Option<String>,
    /// Session ends observed (reason text), for scenarios.
    pub session_ends: Vec<String>,
    /// The replica's durable lsn as last observed (kept while it is down:
    /// a crash never loses durable records).
    pub known_durable: Lsn,
    /// After a disk replacement, until the primary has received a `Hello`
    /// from the new disk: the highest durable lsn any lost disk of this
    /// replica had (so receipted at most), which the primary may still rightly
    /// believe (FM-X.11, FM-X.15). Several replacements before one `Hello`
    /// gets through keep the highest.
    pub unannounced_wipe: Option<Lsn>,
    /// The connection on which the replica, since its last disk replacement,
    /// sent its `Hello`: the primary learns of the replacement only when it
    /// receives that `Hello`, not when it is sent.
    pub announcing_conn: Option<ConnId>,
}

impl ReplicaNode {
    /// A replica node that never ran, on `storage`.
    pub fn new(id: NodeId, storage: SimStorage) -> ReplicaNode {
        ReplicaNode {
            id,
            storage,
            up: None,
            applied: Applied::default(),
            applier: SimApplier::default(),
            halted: None,
            stopped: None,
            session_ends: Vec::new(),
            known_durable: 0,
            unannounced_wipe: None,
            announcing_conn: None,
        }
    }

    /// The embedder lost its state with the disk (a replaced machine).
    pub(super) fn reset_embedder(&mut self) {
        self.applied = Applied::default();
        self.applier = SimApplier::default();
    }
}

impl World {
    /// Starts (or restarts) replica `n` from its disk: `ReplicaExec::open`, as production.
    pub fn start_replica(&mut self, n: NodeId) {
        assert!(self.replica(n).up.is_none(), "replica {n} already running");
        let s = self.replica(n).storage.clone();
        let name = node_name(n);
        let config = ExecConfig {
            node_id: name.clone(),
            cluster_id: CLUSTER_ID.to_string(),
            primary_name: node_name(PRIMARY),
            data_dir: root(),
            wal: wal_options(&self.cfg, 0),
            backoff_initial_ms: 20,
            backoff_max_ms: 500,
            sync_every_bytes: 8 * 1024 * 1024,
            commit_interval_ms: walship_node::replica::exec::DEFAULT_COMMIT_INTERVAL_MS,
            report_applied: true,
            min_primary_epoch: 0,
            base_config: None,
            incarnation: 0,
        };
        let applier = self.replica(n).applier.clone();
        let exec = match ReplicaExec::open(s, config, Box::new(applier), self.now()) {
            Ok(e) => e,
            Err(e) => {
                let msg = format!("{name} refuses to start: {e}");
                self.log(msg.clone());
                self.replica_mut(n).stopped = Some(msg);
                return;
            }
        };
        let known = self.replica(n).known_durable;
        let damaged = self.oracle.disk_damaged.contains(&n);
        if *exec.start() == Start::HaltedAtOpen {
            // Refusing is safe; but a record synced before the crash must never be the
            // one reported corrupt or lost (SimStorage never damages synced bytes unless told to).
            if let Some(h) = exec.halt() {
                if h.lsn <= known && !damaged {
                    self.oracle.action_violations.push((
                        "local recovery never reports a synced record corrupt",
                        format!(
                            "{name} halts {} at lsn {} but it was durable (durable lsn {known}): {}",
                            h.reason.as_str(),
                            h.lsn,
                            h.detail
                        ),
                    ));
                }
            }
        }
        if let Some(wal) = exec.wal() {
            if wal.durable_lsn() < known {
                self.oracle.action_violations.push((
                    "never cut what was made durable (DESIGN: never cut what was acknowledged)",
                    format!(
                        "{name}: WAL reopened at durable lsn {} below the {known} it had made durable",
                        wal.durable_lsn()
                    ),
                ));
            }
        }
        self.log(format!(
            "{name} start ({:?}): last {:?} commit {} applied {}",
            exec.start(),
            exec.wal().map(|w| w.last().lsn),
            exec.persisted_commit(),
            exec.applied_lsn(),
        ));
        // A halt the node failed to make durable (`write_halt` failed on the directory
        // fsync: the node stopped, unrecorded) can still be on disk if the crash kept the
        // renamed file's entry. The replica then comes back halted with that record, a
        // halt like any other: recorded (from its `Halted` output) so the checkers hold it
        // frozen and to its cause (FM-10.3, FM-11.3).
        if *exec.start() == Start::HaltFileFound && self.replica(n).halted.is_none() {
            self.log(format!(
                "{name} halted by a halt file its last run failed to sync"
            ));
        }
        let r = self.replica_mut(n);
        r.stopped = None;
        if let Some(wal) = exec.wal() {
            r.known_durable = wal.durable_lsn();
        }
        r.up = Some(ReplicaUp::new(exec, &r.storage));
        self.net.restart_node(n, self.now());
        self.replica_outputs(n);
    }

    /// Performs every output replica `n`'s executor has queued, then schedules the group
    /// sync it needs (after a simulated fsync latency).
    fn replica_outputs(&mut self, n: NodeId) {
        while let Some(out) = self.replicas[n - 1]
            .up
            .as_mut()
            .and_then(|u| u.exec.poll_output())
        {
            self.replica_output(n, out);
        }
        self.replica_stops_on_failed_sync(n);
        // A segment roll fsyncs the sealed segment inside an append: the WAL's durable lsn
        // can run ahead of the last `Durable` output (the next sync reports it).
        let r = &mut self.replicas[n - 1];
        if let Some(d) = r.up.as_ref().and_then(|u| u.wal()).map(|w| w.durable_lsn()) {
            r.known_durable = r.known_durable.max(d);
        }
        let delay = self
            .rng
            .range(self.cfg.sync_delay_ms.0, self.cfg.sync_delay_ms.1);
        let now = self.now();
        if let Some(u) = self.replicas[n - 1].up.as_mut() {
            u.schedule_sync(now, delay);
        }
    }

    fn replica_output(&mut self, n: NodeId, out: Output) {
        let now = self.now();
        let name = node_name(n);
        match out {
            Output::Connect => self.replica_connect(n),
            Output::Send { conn, msg } => {
                let conn = ConnId(conn);
                if matches!(msg, Message::Hello(_))
                    && self.replicas[n - 1].unannounced_wipe.is_some()
                {
                    self.replicas[n - 1].announcing_conn = Some(conn);
                }
                if let Message::Receipt { durable_lsn } = &msg {
                    // A replica never sends a receipt above its synced lsn (FM-4.1, FM-X.4).
                    let synced = self.replicas[n - 1]
                        .up
                        .as_ref()
                        .and_then(|u| u.wal())
                        .map_or(0, |w| w.durable_lsn());
                    if *durable_lsn > synced {
                        self.oracle.unsynced_receipts.push(format!(
                            "{name} sent Receipt({durable_lsn}) at step {} with its WAL synced up to {synced}",
                            self.step
                        ));
                    }
                }
                let mut buf = Vec::new();
                if let Err(e) = encode_frame(&msg, &mut buf) {
                    panic!("{name}: encoding {} failed: {e}", msg.kind());
                }
                self.trace
                    .record(now, self.step, format!("{name} -> p0 {}", describe(&msg)));
                self.net.send(conn, n, &buf, now);
            }
            Output::Close { conn, .. } => {
                if let Some(u) = self.replicas[n - 1].up.as_mut() {
                    u.forget(ConnId(conn));
                }
                self.net.close(ConnId(conn), n, now);
            }
            Output::SessionEnded {
                reason,
                reconnect_after_ms,
            } => {
                let text = reason.to_string();
                self.trace.record(
                    now,
                    self.step,
                    format!("{name} session ends ({text}), reconnect in {reconnect_after_ms}ms"),
                );
                self.replicas[n - 1].session_ends.push(text);
            }
            Output::Durable(d) => {
                self.replicas[n - 1].known_durable = d;
                self.log(format!("{name} sync -> durable {d}"));
            }
            Output::CommitPersisted(c) => self.log(format!("{name} state/commit {c}")),
            Output::Applied { up_to, records } => {
                let from = self.replica(n).applied.last_lsn() + 1;
                self.trace
                    .record(now, self.step, format!("{name} apply {from}..={up_to}"));
                self.replicas[n - 1].applied.records.extend(records);
            }
            Output::Restored(b) => {
                self.log(format!("{name} embedder restored from the snapshot at {b}"));
                self.replicas[n - 1].applied = Applied {
                    base: Some(b),
                    records: Vec::new(),
                };
            }
            Output::SnapshotInstalled(b) => {
                self.log(format!("{name} snapshot installed at {b}"));
                let r = &mut self.replicas[n - 1];
                r.known_durable = b.lsn;
                r.applied = Applied {
                    base: Some(b),
                    records: Vec::new(),
                };
            }
            Output::Halted(record) => {
                let (last, durable) = match self.replicas[n - 1].up.as_ref().and_then(|u| u.wal()) {
                    Some(w) => (w.last(), w.durable_lsn()),
                    // Halted at open: what its disk holds (all of it durable: it was just opened).
                    None => {
                        let last = self.replica_disk_last(n).unwrap_or_default();
                        (last, last.lsn)
                    }
                };
                self.log(format!(
                    "{name} HALT {} lsn {} expected {} found {}",
                    record.reason.as_str(),
                    record.lsn,
                    record.expected,
                    record.found
                ));
                self.note_halt(n, record, last, durable);
            }
            Output::Stopped(e) => {
                // The core verified every batch it asked to append; the WAL refusing one's
                // content (a record or chain error) means the verification let a bad batch
                // through: it must have halted (FM-5.2, FM-6.1, FM-6.2, FM-8.1, FM-X.3).
                if let ReplicaError::Wal(
                    we
                    @ (WalError::Chain(_) | WalError::Record(_) | WalError::TrailingBytes { .. }),
                ) = &e
                {
                    if !self.oracle.disk_damaged.contains(&n) {
                        self.oracle.action_violations.push((
                            "the replica core verifies what it appends (a shipped record that does not chain halts)",
                            format!("{name}: the WAL refused what the core verified: {we}"),
                        ));
                    }
                }
                self.log(format!("{name} stops: {e}"));
                self.crash(n);
            }
        }
    }

    /// FM-X.4 as the oracle sees it: a replica whose disk failed an fsync since the process
    /// started has stopped (the executor stops it and the world takes it down); a process
    /// that runs on is a violation, whatever it does next (a retried sync may "succeed"
    /// without the pages the failed one dropped).
    fn replica_stops_on_failed_sync(&mut self, n: NodeId) {
        let r = self.replica(n);
        let Some(u) = &r.up else {
            return;
        };
        let failed = u.failed_syncs_since_start(&r.storage);
        if failed > 0 && u.exec.stopped().is_none() {
            self.oracle.action_violations.push((
                "a failed fsync of a replica's own storage stops it, never retried (FM-X.4)",
                format!(
                    "{} still runs after {} failed fsync(s) of its disk",
                    node_name(n),
                    failed
                ),
            ));
        }
    }

    pub(super) fn note_halt(
        &mut self,
        n: NodeId,
        record: HaltRecord,
        last: Position,
        durable: Lsn,
    ) {
        let applied_lsn = self.replica(n).applied.last_lsn();
        let step = self.step;
        let r = self.replica_mut(n);
        if r.halted.is_none() {
            r.halted = Some(HaltSnapshot {
                record,
                last,
                durable_lsn: durable,
                applied_lsn,
                step,
            });
        }
    }

    /// The executor asked for a connection to the primary.
    fn replica_connect(&mut self, n: NodeId) {
        let now = self.now();
        let primary_up = self.primary.up.is_some();
        let connected = self.net.connect(n, PRIMARY, now);
        let Some(u) = self.replicas[n - 1].up.as_mut() else {
            return;
        };
        match connected {
            Some(conn) if primary_up => {
                u.connect_result(Some(conn), now);
                self.log(format!("{} connected (conn {})", node_name(n), conn.0));
            }
            other => {
                u.connect_result(None, now);
                if let Some(c) = other {
                    self.net.close(c, n, now);
                }
            }
        }
    }

    /// Replica `n`'s simulated fsync latency is over: the executor's group sync.
    fn replica_sync(&mut self, n: NodeId) {
        let now = self.now();
        let Some(u) = self.replicas[n - 1].up.as_mut() else {
            return;
        };
        u.sync(now);
        self.replica_outputs(n);
    }

    /// Fires replica `n`'s due sync and deadlines.
    pub(super) fn replica_fire_due(&mut self, n: NodeId) {
        let now = self.now();
        let (sync_due, timer_due) = match &self.replica(n).up {
            Some(u) => u.due(now),
            None => (false, false),
        };
        if sync_due {
            self.replica_sync(n);
        }
        if timer_due {
            if let Some(u) = self.replicas[n - 1].up.as_mut() {
                u.exec.on_timer(now);
            }
            self.replica_outputs(n);
        }
    }

    /// Replica `n`'s next timer: its sync completion or its executor's deadline.
    pub(super) fn replica_next_timer(&self, n: NodeId) -> Option<u64> {
        self.replica(n).up.as_ref()?.next_timer()
    }

    pub(super) fn replica_data(&mut self, n: NodeId, conn: ConnId, bytes: &[u8]) {
        let mut msgs = Vec::new();
        let bad = {
            let Some(r) = self.replicas[n - 1].up.as_mut() else {
                return;
            };
            let Some(bad) = r.decode(conn, bytes, &mut msgs) else {
                return;
            };
            bad
        };
        for m in msgs {
            // The session may have ended (or the node halted) while handling earlier messages.
            let still = self.replicas[n - 1]
                .up
                .as_ref()
                .and_then(|u| u.conn_id())
                .is_some_and(|c| c == conn);
            if !still {
                return;
            }
            self.trace.record(
                self.clock.now_ms(),
                self.step,
                format!("{} <- p0 {}", node_name(n), describe(&m)),
            );
            let faulty_records =
                matches!(&m, Message::Records(b) if self.faulty_frames.get(&n) == Some(b));
            let faulty_welcome =
                matches!(&m, Message::Welcome(wm) if self.faulty_welcomes.get(&n) == Some(wm));
            let kind = m.kind();
            let now = self.now();
            // What the replica stores, before a stale Welcome (FM-X.2: nothing of it may be
            // stored: not a record, not its epoch history, not its commit watermark).
            let stored_before = faulty_welcome
                .then(|| self.replica(n).up.as_ref().map(replica_stored))
                .flatten();
            if let Some(u) = self.replicas[n - 1].up.as_mut() {
                u.deliver(conn, m, now);
            }
            self.replica_outputs(n);
            if faulty_records {
                self.faulty_frames.remove(&n);
                // Damage must never be accepted as valid: the frame halts.
                let halted = self.replica(n).halted.is_some() || self.replica(n).up.is_none();
                if !halted {
                    self.oracle.action_violations.push((
                        "a faulty frame is never accepted (FM-5.2, FM-6.1, FM-6.2, FM-8.1, FM-X.3)",
                        format!(
                            "{} accepted a faulty {kind} frame without halting",
                            node_name(n)
                        ),
                    ));
                }
            }
            if faulty_welcome {
                self.faulty_welcomes.remove(&n);
                self.check_stale_welcome_refused(n, conn, stored_before);
            }
        }
        if let Some(e) = bad {
            let now = self.now();
            if let Some(u) = self.replicas[n - 1].up.as_mut() {
                u.bad_frame(conn, &e, now);
            }
            self.replica_outputs(n);
        }
    }

    /// FM-X.2: a replica given a stale primary's `Welcome` refuses it without a halt: the
    /// session on `conn` is over (it said `Refuse{StalePrimary}`, which its last session
    /// end names) and nothing of that primary was stored (`before`: what it stored before
    /// the Welcome). A replica stopped by its own disk meanwhile is judged elsewhere.
    fn check_stale_welcome_refused(
        &mut self,
        n: NodeId,
        conn: ConnId,
        before: Option<(Position, Vec<EpochEntry>, Lsn)>,
    ) {
        const RULE: &str =
            "a stale primary is refused: no halt, nothing of it stored, the session ends (FM-X.2)";
        let Some(u) = self.replica(n).up.as_ref() else {
            return;
        };
        let mut wrong = Vec::new();
        if self.replica(n).halted.is_some() {
            wrong.push("halted".to_string());
        }
        if u.conn.as_ref().is_some_and(|(c, _)| *c == conn) {
            wrong.push("kept the session".to_string());
        }
        let end = u.exec.status().last_session_end.unwrap_or_default();
        if !end.starts_with("refused stale primary") {
            wrong.push(format!("its last session end is {end:?}"));
        }
        let after = replica_stored(u);
        if before.as_ref().is_some_and(|b| *b != after) {
            wrong.push(format!("stored something: {before:?} -> {after:?}"));
        }
        if !wrong.is_empty() {
            let detail = format!(
                "{} given a stale Welcome: {}",
                node_name(n),
                wrong.join("; ")
            );
            self.oracle.action_violations.push((RULE, detail));
        }
    }

    pub(super) fn replica_closed(&mut self, n: NodeId, conn: ConnId, reason: CloseReason) {
        let now = self.now();
        let Some(u) = self.replicas[n - 1].up.as_mut() else {
            return;
        };
        if !u.conn_closed(conn, reason, now) {
            return;
        }
        self.replica_outputs(n);
    }

    /// The last record of running replica `n`'s log: its open WAL's, or, for a replica
    /// that runs without its WAL (halted at open), what a read-only recovery scan of its
    /// disk finds (`walship_wal::inspect`: nothing is changed).
    pub fn replica_last(&self, n: NodeId) -> Option<Position> {
        let u = self.replica(n).up.as_ref()?;
        match u.wal() {
            Some(w) => Some(w.last()),
            None => self.replica_disk_last(n),
        }
    }

    fn replica_disk_last(&self, n: NodeId) -> Option<Position> {
        walship_wal::inspect(
            &self.replica(n).storage,
            &wal_dir(),
            self.cfg.max_record_bytes,
        )
        .ok()
        .map(|i| i.last)
    }

    /// True while replica `n` has a snapshot install in progress.
    pub fn replica_installing(&self, n: NodeId) -> bool {
        self.replica(n)
            .up
            .as_ref()
            .is_some_and(|u| u.exec.installing())
    }

    /// Bytes of an incomplete frame buffered by replica `n`'s current session.
    pub fn replica_buffered_bytes(&self, n: NodeId) -> usize {
        self.replica(n)
            .up
            .as_ref()
            .and_then(|u| u.conn.as_ref())
            .map_or(0, |(_, d)| d.buffered_bytes())
    }

    /// True if replica `n` has a session open.
    pub fn replica_connected(&self, n: NodeId) -> bool {
        self.replica(n)
            .up
            .as_ref()
            .is_some_and(|u| u.conn.is_some())
    }
}

/// What a running replica stores that a primary's session could change: its last record,
/// its epoch history and its commit watermark.
fn replica_stored(u: &ReplicaUp) -> (Position, Vec<EpochEntry>, Lsn) {
    let core = u.exec.core();
    (
        core.last(),
        core.epoch_history().entries.clone(),
        core.commit_lsn(),
    )
}
