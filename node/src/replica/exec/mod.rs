//! The replica executor: everything the replica DECIDES, sans-IO and deterministic.
//!
//! [`ReplicaExec`] owns the sans-IO verifier ([`ReplicaCore`]), the local WAL, the node's
//! state files, the snapshot store and the embedder's [`Applier`], and performs every
//! action of the core: it appends verified batches, syncs the WAL (group sync: one sync
//! covers everything appended since the last one) and sends the receipt right after each
//! successful sync, persists the commit watermark (only up to the durable lsn, coalesced
//! to at most one write per [`ExecConfig::commit_interval_ms`]) and the epoch history,
//! applies committed records in lsn order, writes and fsyncs the halt before anything
//! else, installs snapshots, and turns the core's reconnect backoff into a deadline and a
//! [`Output::Connect`]. A failed fsync, ENOSPC or any other local I/O failure stops the
//! node ([`Output::Stopped`]); nothing is retried.
//!
//! It owns no thread, task, channel, socket or clock: time comes in as `now_ms`
//! arguments (milliseconds since the Unix epoch in production, simulated time in the
//! simulator), deadlines go out through [`ReplicaExec::next_deadline`], and everything
//! the world must do goes out through [`ReplicaExec::poll_output`], in order. Production
//! (`Replica`, over `FsStorage`, quinn and tokio) and the fault simulator
//! (`walship-fault`, over `SimStorage`, `SimNet` and `SimClock`) run this same code.
//!
//! The world's loop: hand the executor its inputs ([`ReplicaExec::on_connected`],
//! [`ReplicaExec::on_frame`], [`ReplicaExec::on_closed`], ...), then
//! `if exec.sync_needed() { exec.sync(now) }` (production does it once after draining
//! every queued frame, the simulator after a simulated fsync latency), call
//! [`ReplicaExec::on_timer`] when [`ReplicaExec::next_deadline`] passes, and perform the
//! outputs.

mod open;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::PathBuf;

use walship_snapshot::{
    EpochCheck, FailureClass, Install, SnapshotEnd, SnapshotError, SnapshotStore,
};
use walship_wal::state::{EpochHistory, NodeDir};
use walship_wal::{Lsn, Position, Storage, Wal, WalError, WalOptions};
use walship_wire::message::Message;
use walship_wire::CloseCode;

use walship_wal::control::ControlRecord;

use super::{Applier, ReplicaConfig, ReplicaError, ReplicaState, ReplicaStatus};
use walship_replica::core::{Action, Event, LocalLog, Phase, ReplicaCore, SessionEnd};
use walship_replica::halt::{write_halt, HaltRecord};

/// The `tracing` target of the commit-path stage events (TRACE level, fields `stage` and
/// `lsn`), the replica's half of the primary's `walship::stage` events: nothing records them
/// unless a subscriber enables this target (the replication bench's `WALSHIP_BENCH_STAGES=1`).
pub const STAGE_TARGET: &str = "walship::stage";

/// A connection to the primary, as numbered by the world (production: a counter; the
/// simulator: its `SimNet` connection id).
pub type ConnId = u64;

/// What the executor needs to know (the transport's part of [`ReplicaConfig`] stays outside).
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// This node's id (sent in `Hello`).
    pub node_id: String,
    /// The cluster id.
    pub cluster_id: String,
    /// The configured primary's node id.
    pub primary_name: String,
    /// The node's data directory (`wal/`, `state/`, `snapshots/`).
    pub data_dir: PathBuf,
    /// WAL options.
    pub wal: WalOptions,
    /// First reconnect delay after a session ends.
    pub backoff_initial_ms: u64,
    /// Ceiling of the exponential reconnect delay.
    pub backoff_max_ms: u64,
    /// [`ReplicaExec::sync_urgent`] once this many bytes are appended and not synced.
    pub sync_every_bytes: usize,
    /// At most one `state/commit` write per this many ms while the watermark keeps moving
    /// (each write costs two fsyncs); the next one is a deadline. 0: write at once.
    pub commit_interval_ms: u64,
    /// Report the identity of every applied record in [`Output::Applied`] (the
    /// simulator's oracle; production leaves it off).
    pub report_applied: bool,
    /// The lowest primary epoch accepted besides the replica's own history (the node's
    /// election epoch; 0 without elections). Raise it at run time with
    /// [`ReplicaExec::set_min_primary_epoch`].
    pub min_primary_epoch: u64,
    /// [`ReplicaConfig::base_config`]: track the log's configuration records.
    pub base_config: Option<walship_wal::control::Configuration>,
    /// The incarnation id of the data directory, announced in `Hello` (0 = unknown).
    pub incarnation: u64,
}

impl ExecConfig {
    /// The executor's part of a replica configuration.
    pub fn from_replica_config(c: &ReplicaConfig) -> ExecConfig {
        ExecConfig {
            node_id: c.node_id.clone(),
            cluster_id: c.cluster_id.clone(),
            primary_name: c.primary_name.clone(),
            data_dir: c.data_dir.clone(),
            wal: c.wal,
            backoff_initial_ms: c.backoff_initial_ms,
            backoff_max_ms: c.backoff_max_ms,
            sync_every_bytes: c.sync_every_bytes,
            commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS,
            report_applied: false,
            min_primary_epoch: c.min_primary_epoch,
            base_config: c.base_config.clone(),
            incarnation: c.incarnation,
        }
    }
}

/// Default of [`ExecConfig::commit_interval_ms`].
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 10;

/// What the world must do, or an observable fact, in the order the executor decided it.
#[derive(Debug)]
pub enum Output {
    /// Open a connection to the configured primary (authenticated as it), then call
    /// [`ReplicaExec::on_connected`] or [`ReplicaExec::on_connect_failed`].
    Connect,
    /// Send `msg` on connection `conn`.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// Close connection `conn` (the session is over for the executor).
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: CloseCode,
        /// Why, for the peer.
        reason: String,
    },
    /// The session ended (or could not start); the next [`Output::Connect`] comes after the backoff.
    SessionEnded {
        /// Why.
        reason: SessionEnd,
        /// The backoff before the next connection attempt.
        reconnect_after_ms: u64,
    },
    /// The local WAL is durable up to this lsn (after a successful sync).
    Durable(Lsn),
    /// `state/commit` now holds this watermark (written and fsynced).
    CommitPersisted(Lsn),
    /// Records up to `up_to` were delivered to the applier.
    Applied {
        /// The highest applied lsn.
        up_to: Lsn,
        /// The identity of each applied record, in order (only with [`ExecConfig::report_applied`]).
        records: Vec<Position>,
    },
    /// At open, the applier was behind the installed snapshot and was restored from it.
    Restored(Position),
    /// A snapshot received from the primary was installed (the WAL now starts after its
    /// boundary, durable up to it) and restored into the applier.
    SnapshotInstalled(Position),
    /// The replica halted with this record: the halt file is durable, nothing is streamed
    /// or applied any more. Also emitted at open for a halt decided or read back there.
    Halted(HaltRecord),
    /// The node stopped on a local error (a failed fsync, ENOSPC, I/O, the applier); not a
    /// halt. Nothing is retried; the executor ignores every later input.
    Stopped(ReplicaError),
}

/// How the executor started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Replicating (the WAL is open).
    Replicating,
    /// `state/halt` existed: halted, the WAL is not opened.
    HaltFileFound,
    /// Local recovery found a reason to halt (corruption, lost acknowledged records): the
    /// halt was written, the WAL is not open.
    HaltedAtOpen,
}

/// The local state that exists only while the WAL is open (not for a replica halted at open).
struct Local<S: Storage> {
    wal: Wal<S>,
    snapshots: SnapshotStore<S>,
    /// The snapshot being received (between `SnapshotBegin` and its end).
    install: Option<Install<S>>,
}

/// The core's view of "no local log" (a replica halted at open: the core is halted and never asks).
struct NoLog;

impl LocalLog for NoLog {
    fn position_at(&mut self, _lsn: Lsn) -> Result<Option<Position>, WalError> {
        Ok(None)
    }
}

/// Called with the halt record before the halt file is written (production closes its read gate).
pub type BeforeHalt = Box<dyn FnMut(&HaltRecord) + Send>;

/// The replica executor. See the module documentation.
pub struct ReplicaExec<S: Storage> {
    config: ExecConfig,
    storage: S,
    node_dir: NodeDir<S>,
    start: Start,
    core: ReplicaCore,
    local: Option<Local<S>>,
    applier: Box<dyn Applier>,
    before_halt: Option<BeforeHalt>,
    outputs: VecDeque<Output>,
    /// The current session's connection.
    conn: Option<ConnId>,
    /// A `Connect` was emitted and not answered yet.
    connecting: bool,
    /// When to emit the next `Connect`.
    connect_at: Option<u64>,
    /// When the pending commit watermark may be written.
    commit_at: Option<u64>,
    last_commit_write_ms: Option<u64>,
    unsynced_bytes: usize,
    /// The watermark the core asked to persist and not yet written.
    commit_pending: Option<Lsn>,
    persisted_commit: Lsn,
    /// The apply target the core asked for and not yet reached.
    apply_pending: Option<Lsn>,
    applied: Lsn,
    last_receipt: Option<Lsn>,
    halted: bool,
    stopped: Option<String>,
    sessions: u64,
    last_session_end: Option<String>,
    /// The configurations of the log (spec/membership.md), when tracked.
    configs: Option<crate::membership::ConfigLog>,
    /// The static member list (`ExecConfig::base_config`) configurations start from.
    base_config: Option<walship_wal::control::Configuration>,
}

impl<S: Storage> std::fmt::Debug for ReplicaExec<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaExec")
            .field("node_id", &self.config.node_id)
            .field("phase", self.core.phase())
            .field("applied", &self.applied)
            .field("halted", &self.halted)
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl<S: Storage> ReplicaExec<S> {
    /// Sets the hook called with the halt record before the halt file is written.
    pub fn set_before_halt(&mut self, hook: BeforeHalt) {
        self.before_halt = Some(hook);
    }

    // ---------------------------------------------------------------- inputs

    /// Fires what is due at `now_ms`: the next connection attempt (after the backoff; the
    /// appended records are made durable first, so a `Hello` names a durable position) and
    /// a coalesced commit-watermark write.
    pub fn on_timer(&mut self, now_ms: u64) {
        if !self.running() {
            return;
        }
        if self.connect_at.is_some_and(|t| t <= now_ms) {
            self.connect_at = None;
            if self.sync_needed() {
                self.sync(now_ms);
            }
            if self.running() && self.conn.is_none() && !self.connecting {
                self.connecting = true;
                self.outputs.push_back(Output::Connect);
            }
        }
        if self.commit_at.is_some_and(|t| t <= now_ms) {
            self.commit_at = None;
            self.settle(now_ms);
        }
    }

    /// The connection asked for by [`Output::Connect`] is open (mutually authenticated as
    /// the configured primary, its stream open).
    pub fn on_connected(&mut self, conn: ConnId, now_ms: u64) {
        self.connecting = false;
        if !self.running() || self.conn.is_some() || *self.core.phase() != Phase::Disconnected {
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::ShuttingDown,
                reason: "replica not connecting".into(),
            });
            return;
        }
        self.conn = Some(conn);
        self.sessions += 1;
        tracing::info!(peer = %self.config.primary_name, conn, lsn = self.core.last().lsn,
            epoch = self.core.last().epoch, "session started");
        self.feed(Event::SessionStarted, now_ms);
        self.settle(now_ms);
    }

    /// The connection asked for by [`Output::Connect`] could not be opened.
    pub fn on_connect_failed(&mut self, detail: String, now_ms: u64) {
        self.connecting = false;
        if !self.running() {
            return;
        }
        tracing::warn!(%detail, "connect to primary failed");
        self.feed(
            Event::SessionEnded(SessionEnd::ConnectFailed { detail }),
            now_ms,
        );
        self.settle(now_ms);
    }

    /// A whole frame from the primary on `conn`, decoded. Frames of any other than the
    /// current session's connection are ignored.
    pub fn on_frame(&mut self, conn: ConnId, msg: Message, now_ms: u64) {
        if !self.running() || self.conn != Some(conn) {
            return;
        }
        self.feed(Event::Received(msg), now_ms);
        if self.sync_needed() {
            // Records were appended and the world syncs next (it syncs whenever
            // `sync_needed`): the sync settles after its receipt. Settling here would put a
            // due `state/commit` write (two fsyncs and a rename) and the applies between
            // the records' arrival and their fdatasync, i.e. in front of the receipt.
            return;
        }
        self.settle(now_ms);
    }

    /// The node's election epoch rose to `epoch`: a primary below it is refused from now on
    /// (`Refuse{StalePrimary}`), and a session with one ends at once; nothing more of it
    /// is stored (FM-X.2). Never lowers the bound.
    pub fn set_min_primary_epoch(&mut self, epoch: u64, now_ms: u64) {
        if !self.running() {
            return;
        }
        self.feed(Event::MinPrimaryEpoch(epoch), now_ms);
        self.settle(now_ms);
    }

    /// The session on `conn` ended: the connection closed or timed out, the stream ended
    /// (inside a frame or not), or a frame could not be decoded. Never a halt.
    pub fn on_closed(&mut self, conn: ConnId, end: SessionEnd, now_ms: u64) {
        if !self.running() || self.conn != Some(conn) {
            return;
        }
        // The core's reconnect closes the connection with the code the end calls for.
        self.feed(Event::SessionEnded(end), now_ms);
        if self.conn == Some(conn) {
            self.conn = None;
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::Normal,
                reason: "session ended".into(),
            });
        }
        self.settle(now_ms);
    }

    /// True if records are appended and not yet durable: the world should call
    /// [`ReplicaExec::sync`] (production: once its queued frames are drained).
    pub fn sync_needed(&self) -> bool {
        self.running()
            && self
                .local
                .as_ref()
                .is_some_and(|l| l.wal.last().lsn > l.wal.durable_lsn())
    }

    /// True once [`ExecConfig::sync_every_bytes`] are appended and not synced: stop draining, sync.
    pub fn sync_urgent(&self) -> bool {
        self.sync_needed() && self.unsynced_bytes >= self.config.sync_every_bytes
    }

    /// One group sync: everything appended so far becomes durable, then the receipt goes
    /// out, the commit watermark and the applier follow. A failed sync stops the node; it
    /// is never retried (the failed fdatasync may have dropped the dirty pages).
    pub fn sync(&mut self, now_ms: u64) {
        self.sync_inner(now_ms, None);
    }

    /// [`ReplicaExec::sync`], handing `early` (in order) every output queued up to and
    /// including the sync's receipt, before the commit watermark write and the applies
    /// run: production sends the receipt at once instead of after a due `state/commit`
    /// write (two fsyncs and a rename) and the applier. `early` must perform each output
    /// as if it came from [`ReplicaExec::poll_output`]; the later ones are polled as usual.
    /// Same decisions as `sync`; only when the world sees them differs.
    pub fn sync_with(&mut self, now_ms: u64, mut early: impl FnMut(Output)) {
        self.sync_inner(now_ms, Some(&mut early));
    }

    fn sync_inner(&mut self, now_ms: u64, early: Option<&mut dyn FnMut(Output)>) {
        if !self.sync_needed() {
            return;
        }
        let Some(local) = self.local.as_mut() else {
            return;
        };
        match local.wal.sync() {
            Ok(lsn) => {
                self.unsynced_bytes = 0;
                tracing::trace!(target: STAGE_TARGET, stage = "replica_fsync", lsn);
                self.outputs.push_back(Output::Durable(lsn));
                self.feed(Event::Durable { lsn }, now_ms);
                if let Some(early) = early {
                    for o in self.outputs.drain(..) {
                        early(o);
                    }
                }
                self.settle(now_ms);
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL sync failed: the node stops (FM-X.4, never retried)");
                self.stop(e.into());
            }
        }
    }

    /// Orderly stop: ends the session, makes every appended record durable, writes the
    /// commit watermark and applies up to it. A failure is a node stop ([`Output::Stopped`]).
    pub fn shutdown(&mut self, now_ms: u64) {
        if let Some(conn) = self.conn.take() {
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::ShuttingDown,
                reason: "replica stopping".into(),
            });
        }
        self.connect_at = None;
        if !self.running() {
            return;
        }
        if self.sync_needed() {
            self.sync(now_ms);
        }
        // The interval does not hold back the last write.
        self.last_commit_write_ms = None;
        self.settle(now_ms);
        self.commit_at = None;
    }

    // ---------------------------------------------------------------- outputs and state

    /// The next output, in decision order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`ReplicaExec::on_timer`] must be called next, if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.running() {
            return None;
        }
        match (self.connect_at, self.commit_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How the executor started.
    pub fn start(&self) -> &Start {
        &self.start
    }
    /// The verifier state machine.
    pub fn core(&self) -> &ReplicaCore {
        &self.core
    }
    /// The local WAL (`None` for a replica halted at open: it never opens it).
    pub fn wal(&self) -> Option<&Wal<S>> {
        self.local.as_ref().map(|l| &l.wal)
    }
    /// The snapshot store (`None` for a replica halted at open).
    pub fn snapshots(&self) -> Option<&SnapshotStore<S>> {
        self.local.as_ref().map(|l| &l.snapshots)
    }
    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }
    /// The halt record, if halted.
    pub fn halt(&self) -> Option<&HaltRecord> {
        self.core.halt()
    }
    /// True once halted.
    pub fn is_halted(&self) -> bool {
        self.halted
    }
    /// Why the node stopped, once it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }
    /// Ends the executor and hands its applier back (a node switching roles gives the
    /// same applier to its next role).
    pub fn into_applier(self) -> Box<dyn Applier> {
        self.applier
    }

    /// Highest lsn delivered to the applier.
    pub fn applied_lsn(&self) -> Lsn {
        self.applied
    }
    /// The commit watermark `state/commit` holds.
    pub fn persisted_commit(&self) -> Lsn {
        self.persisted_commit
    }
    /// The highest lsn the last receipt sent carried, if one was sent since open.
    pub fn last_receipt(&self) -> Option<Lsn> {
        self.last_receipt
    }
    /// True while a snapshot install is in progress.
    pub fn installing(&self) -> bool {
        self.local.as_ref().is_some_and(|l| l.install.is_some())
    }
    /// The current session's connection.
    pub fn conn(&self) -> Option<ConnId> {
        self.conn
    }

    /// The replica's status as the embedding API reports it.
    pub fn status(&self) -> ReplicaStatus {
        let core = &self.core;
        let state = match (&self.stopped, core.phase()) {
            (_, Phase::Halted) => match core.halt() {
                Some(h) => ReplicaState::Halted(h.clone()),
                None => ReplicaState::Stopped("halted".into()),
            },
            (Some(why), _) => ReplicaState::Stopped(why.clone()),
            (None, Phase::Idle | Phase::Disconnected) => ReplicaState::Connecting,
            (None, Phase::AwaitWelcome | Phase::Probing) => ReplicaState::Handshaking,
            (None, Phase::Streaming) => ReplicaState::Streaming,
            (None, Phase::ReceivingSnapshot) => ReplicaState::ReceivingSnapshot,
        };
        let wal = self.wal();
        let durable = wal.map(|w| w.durable_lsn());
        let primary = core.primary();
        let primary_last = core.primary_last_lsn();
        ReplicaStatus {
            node_id: self.config.node_id.clone(),
            state,
            connected: self.conn.is_some(),
            primary_id: primary.map(|(id, _)| id.to_string()),
            epoch: primary.map_or(core.highest_epoch_seen(), |(_, e)| e),
            highest_epoch_seen: core.highest_epoch_seen(),
            last: wal.map(|w| w.last()),
            durable_lsn: durable,
            commit_lsn: core.commit_lsn(),
            applied_lsn: self.applied,
            primary_last_lsn: primary_last,
            lag_records: durable.map_or(0, |d| primary_last.saturating_sub(d)),
            sessions: self.sessions,
            last_session_end: self.last_session_end.clone(),
            membership: self.configs.as_ref().map(|c| c.view(core.commit_lsn())),
        }
    }

    /// The configurations of the log, if tracked ([`ExecConfig::base_config`]).
    pub fn configs(&self) -> Option<&crate::membership::ConfigLog> {
        self.configs.as_ref()
    }

    // ---------------------------------------------------------------- performing the core

    fn running(&self) -> bool {
        !self.halted && self.stopped.is_none()
    }

    /// Feeds one event to the core and performs the resulting actions.
    fn feed(&mut self, event: Event, now_ms: u64) {
        if self.stopped.is_some() {
            return;
        }
        let log: &mut dyn LocalLog = match self.local.as_mut() {
            Some(l) => &mut l.wal,
            None => &mut NoLog,
        };
        match self.core.handle(event, now_ms, log) {
            Ok(actions) => self.perform(actions, now_ms),
            // Reading the local log failed: a local I/O failure, not a halt.
            Err(e) => self.stop(e.into()),
        }
    }

    fn perform(&mut self, actions: Vec<Action>, now_ms: u64) {
        for action in actions {
            if !self.running() {
                // Nothing queued behind a halt or a stop runs.
                return;
            }
            match action {
                Action::Send(msg) => self.send(msg),
                Action::AppendVerified(batch) => {
                    let Some(local) = self.local.as_mut() else {
                        unreachable!("the core appends only after a session on an open WAL")
                    };
                    match local.wal.append_verified_batch(&batch.bytes) {
                        Ok(pos) => {
                            assert_eq!(
                                pos, batch.last,
                                "the WAL's last position after append must be the core's"
                            );
                            self.unsynced_bytes += batch.bytes.len();
                            self.observe_configurations(&batch.bytes);
                            tracing::trace!(target: STAGE_TARGET, stage = "replica_written", lsn = pos.lsn);
                            tracing::trace!(
                                first_lsn = batch.first_lsn,
                                count = batch.count,
                                lsn = pos.lsn,
                                epoch = pos.epoch,
                                "appended verified batch"
                            );
                        }
                        Err(e) => {
                            tracing::error!(error = %e, first_lsn = batch.first_lsn, "append failed: the node stops");
                            self.stop(e.into());
                        }
                    }
                }
                // The world syncs when `sync_needed()`: right after its queued input.
                Action::Sync => {}
                Action::PersistCommit(lsn) => {
                    if let Some(c) = self.configs.as_mut() {
                        c.committed(lsn);
                    }
                    self.commit_pending = Some(self.commit_pending.map_or(lsn, |c| c.max(lsn)));
                }
                Action::PersistEpochs(history) => {
                    // Durable before anything of this primary is appended (fencing bound).
                    match self.node_dir.set_epochs(&history) {
                        Ok(()) => {
                            tracing::info!(entries = ?history.entries, "persisted epoch history")
                        }
                        Err(e) => self.stop(e.into()),
                    }
                }
                Action::Apply { up_to } => {
                    self.apply_pending = Some(self.apply_pending.map_or(up_to, |a| a.max(up_to)));
                }
                Action::Halt(record) => self.do_halt(record),
                Action::SnapshotBegin(offer) => {
                    let Some(local) = self.local.as_mut() else {
                        unreachable!("the core receives snapshots only on an open WAL")
                    };
                    if let Some(old) = local.install.take() {
                        self.discard_install(old);
                    }
                    let Some(local) = self.local.as_mut() else {
                        return;
                    };
                    match local.snapshots.begin_install(&offer) {
                        Ok(install) => local.install = Some(install),
                        Err(e) => self.snapshot_failed(e, now_ms),
                    }
                }
                Action::SnapshotChunk(chunk) => {
                    let Some(install) = self.local.as_mut().and_then(|l| l.install.as_mut()) else {
                        self.stop(ReplicaError::Runtime(
                            "snapshot chunk without an install in progress".into(),
                        ));
                        return;
                    };
                    if let Err(e) = install.push_chunk(&chunk) {
                        let failed = self.local.as_mut().and_then(|l| l.install.take());
                        // The halt (if any) is durable before the partial snapshot goes.
                        self.snapshot_failed(e, now_ms);
                        if let Some(i) = failed {
                            self.discard_install(i);
                        }
                    }
                }
                Action::SnapshotFinish {
                    end,
                    primary_epochs,
                } => self.finish_snapshot(&end, &primary_epochs, now_ms),
                Action::SnapshotAbort => {
                    if let Some(i) = self.local.as_mut().and_then(|l| l.install.take()) {
                        tracing::info!(
                            lsn = i.header().boundary.lsn,
                            chunks = i.next_index(),
                            "session ended mid-transfer: partial snapshot discarded (FM-X.8)"
                        );
                        self.discard_install(i);
                    }
                }
                Action::Reconnect { after_ms, reason } => {
                    if let Some(conn) = self.conn.take() {
                        let code = match reason {
                            SessionEnd::Malformed { .. } | SessionEnd::Protocol { .. } => {
                                CloseCode::ProtocolViolation
                            }
                            // `Refuse{StalePrimary}` was sent first (§5.1).
                            SessionEnd::StalePrimary { .. } => CloseCode::Refused,
                            _ => CloseCode::Normal,
                        };
                        self.outputs.push_back(Output::Close {
                            conn,
                            code,
                            reason: reason.to_string(),
                        });
                    }
                    if after_ms > 0 {
                        tracing::info!(after_ms, %reason, "session ended; reconnecting");
                    }
                    self.connect_at = Some(now_ms + after_ms);
                    self.last_session_end = Some(reason.to_string());
                    self.outputs.push_back(Output::SessionEnded {
                        reason,
                        reconnect_after_ms: after_ms,
                    });
                }
            }
        }
    }

    /// Notes the configuration records of a batch just appended (verified by the core:
    /// crc, chain, control bodies). One that does not follow the newest is a primary that
    /// broke spec/membership.md rule 3: the replica stops rather than elect with it.
    fn observe_configurations(&mut self, bytes: &[u8]) {
        let Some(configs) = self.configs.as_mut() else {
            return;
        };
        let found = match crate::membership::configurations_in_bytes(bytes) {
            Ok(f) => f,
            Err(e) => {
                return self.stop(ReplicaError::Runtime(format!(
                    "configuration records of a verified batch: {e}"
                )))
            }
        };
        for (lsn, config) in found {
            let generation = config.generation;
            if let Err(e) = configs.observe(lsn, config) {
                return self.stop(ReplicaError::Runtime(format!(
                    "configuration record at lsn {lsn}: {e}"
                )));
            }
            tracing::info!(lsn, generation, "configuration record received");
        }
    }

    fn send(&mut self, msg: Message) {
        let Some(conn) = self.conn else {
            return;
        };
        if let Message::Receipt { durable_lsn } = msg {
            tracing::trace!(target: STAGE_TARGET, stage = "receipt_sent", lsn = durable_lsn);
            self.last_receipt = Some(durable_lsn);
        }
        self.outputs.push_back(Output::Send { conn, msg });
    }

    /// The deferred work: the commit watermark (only up to the durable lsn, at most one
    /// write per interval) and the applier (only up to the persisted watermark).
    fn settle(&mut self, now_ms: u64) {
        if !self.running() {
            return;
        }
        let Some(durable) = self.wal().map(|w| w.durable_lsn()) else {
            return;
        };
        if let Some(c) = self.commit_pending {
            // `state/commit` never names a record this replica does not hold durably (the
            // primary's watermark may be ahead of a lagging replica): then a log ending
            // below it at open proves synced records were lost (FM-X.6). The rest stays
            // pending and is persisted as the durable lsn rises.
            let persist = c.min(durable);
            if persist > self.persisted_commit {
                let due = self
                    .last_commit_write_ms
                    .map_or(now_ms, |t| t + self.config.commit_interval_ms);
                if due <= now_ms {
                    if let Err(e) = self.node_dir.set_commit_lsn(persist) {
                        self.stop(e.into());
                        return;
                    }
                    self.persisted_commit = persist;
                    self.last_commit_write_ms = Some(now_ms);
                    self.outputs.push_back(Output::CommitPersisted(persist));
                } else {
                    self.commit_at = Some(due);
                }
            }
            if self.persisted_commit >= c {
                self.commit_pending = None;
            }
        }
        if let Some(up_to) = self.apply_pending {
            let target = up_to.min(self.persisted_commit).min(durable);
            self.apply_up_to(target);
            if self.applied >= up_to {
                self.apply_pending = None;
            }
        }
    }

    fn apply_up_to(&mut self, up_to: Lsn) {
        if up_to <= self.applied || !self.running() {
            return;
        }
        let Some(local) = self.local.as_ref() else {
            return;
        };
        assert!(
            up_to <= self.persisted_commit && up_to <= local.wal.durable_lsn(),
            "apply up to {up_to} beyond the persisted commit {} or the durable lsn {}",
            self.persisted_commit,
            local.wal.durable_lsn()
        );
        let mut records = Vec::new();
        let result = (|| -> Result<(), ReplicaError> {
            let mut reader = local.wal.reader(self.applied + 1)?;
            while self.applied < up_to {
                let record = match reader.next_record() {
                    Some(r) => r?,
                    None => {
                        return Err(ReplicaError::Runtime(format!(
                            "WAL ended at lsn {} before the apply target {up_to}",
                            self.applied
                        )))
                    }
                };
                let lsn = record.lsn();
                assert_eq!(
                    lsn,
                    self.applied + 1,
                    "records are applied in lsn order, each once"
                );
                apply_record(self.applier.as_mut(), &record)?;
                self.applied = lsn;
                if self.config.report_applied {
                    records.push(record.position());
                }
            }
            Ok(())
        })();
        if !records.is_empty() || result.is_ok() {
            tracing::debug!(lsn = self.applied, "applied");
            self.outputs.push_back(Output::Applied {
                up_to: self.applied,
                records,
            });
        }
        if let Err(e) = result {
            self.stop(e);
        }
    }

    /// Performs a halt: the hook (read gate) first, then the halt file written and
    /// fsynced, then the session closed; nothing is streamed or applied afterwards.
    fn do_halt(&mut self, record: HaltRecord) {
        tracing::error!(
            reason = %record.reason, lsn = record.lsn, epoch = record.epoch,
            expected = %record.expected, found = %record.found, peer = %record.peer,
            detail = %record.detail, "replication halted"
        );
        if let Some(hook) = self.before_halt.as_mut() {
            hook(&record);
        }
        if let Err(e) = write_halt(&self.storage, self.node_dir.state_dir(), &record) {
            // Not halted: the halt is not durable. The node stops.
            self.stop(e.into());
            return;
        }
        self.halted = true;
        self.apply_pending = None;
        self.commit_pending = None;
        self.commit_at = None;
        self.connect_at = None;
        if let Some(conn) = self.conn.take() {
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::Halted,
                reason: format!("replica halted: {} at lsn {}", record.reason, record.lsn),
            });
        }
        // Verified records appended before the failing batch stay; make them durable so
        // the directory is exactly what it was at the halt. A failed sync is fatal all the
        // same: the node stops after the (durable) halt.
        let synced = match self.local.as_mut() {
            Some(l) if l.wal.last().lsn > l.wal.durable_lsn() => Some(l.wal.sync()),
            _ => None,
        };
        self.outputs.push_back(Output::Halted(record));
        match synced {
            Some(Ok(lsn)) => self.outputs.push_back(Output::Durable(lsn)),
            Some(Err(e)) => self.stop(e.into()),
            None => {}
        }
    }

    /// Stops the node on a local error: never retried, every later input is ignored.
    fn stop(&mut self, e: ReplicaError) {
        if self.stopped.is_some() {
            return;
        }
        tracing::error!(error = %e, "replica stopped on a local error (not a halt)");
        self.stopped = Some(e.to_string());
        self.connect_at = None;
        self.commit_at = None;
        if let Some(conn) = self.conn.take() {
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::ShuttingDown,
                reason: format!("node stopped: {e}"),
            });
        }
        self.outputs.push_back(Output::Stopped(e));
    }

    /// Discards a partial snapshot; a leftover `tmp-*` is removed by the next open anyway.
    /// A failed fsync while discarding poisons the snapshot store: that stops the node.
    fn discard_install(&mut self, install: Install<S>) {
        match install.abort() {
            Ok(()) => {}
            Err(e)
                if self
                    .local
                    .as_ref()
                    .is_some_and(|l| l.snapshots.is_poisoned()) =>
            {
                self.stop(e.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not discard a partial snapshot (the next open removes it)")
            }
        }
    }

    /// A snapshot failure: halts through the core (invalid, boundary, local corruption) or
    /// stops the node (I/O, embedder: `NodeStop`).
    fn snapshot_failed(&mut self, e: SnapshotError, now_ms: u64) {
        match e.class() {
            FailureClass::NodeStop => self.stop(e.into()),
            class => {
                tracing::error!(error = %e, ?class, "snapshot rejected");
                self.feed(
                    Event::SnapshotFailed {
                        class,
                        detail: e.to_string(),
                    },
                    now_ms,
                );
            }
        }
    }

    /// Completes a received snapshot: verify, boundary check, publish, WAL reset
    /// (`VerifiedSnapshot::commit`), commit watermark, restore into the applier.
    fn finish_snapshot(&mut self, end: &SnapshotEnd, primary_epochs: &EpochHistory, now_ms: u64) {
        let Some(install) = self.local.as_mut().and_then(|l| l.install.take()) else {
            self.stop(ReplicaError::Runtime(
                "snapshot end without an install in progress".into(),
            ));
            return;
        };
        // Removes the tmp directory itself on failure.
        let verified = match install.finish(end) {
            Ok(v) => v,
            Err(e) => return self.snapshot_failed(e, now_ms),
        };
        // Nothing appended may be left unsynced while the WAL is reset.
        if self.sync_needed() {
            self.sync(now_ms);
            if !self.running() {
                return;
            }
        }
        let local_epochs = self.core.epoch_history().clone();
        let Some(local) = self.local.as_mut() else {
            return;
        };
        let committed = verified.commit(
            &mut local.wal,
            Some(EpochCheck {
                local: &local_epochs,
                primary: primary_epochs,
            }),
        );
        let outcome = match committed {
            Ok(o) => o,
            Err(e) => return self.snapshot_failed(e, now_ms),
        };
        let boundary = outcome.installed.boundary;
        // The WAL starts after the boundary now: the configurations it held up to there are
        // replaced by what the snapshot records (spec/snapshot-format.md §1.5).
        if let Some(base) = self.base_config.clone() {
            let log =
                crate::membership::ConfigLog::at_snapshot(base, &outcome.installed.membership);
            tracing::info!(lsn = boundary.lsn, configuration = ?log.view(boundary.lsn), "configuration at the snapshot's boundary");
            self.configs = Some(log);
        }
        // Published and the WAL reset: persist the watermark before the restore, so a
        // crash here never leaves the commit below the snapshot (FM-10.5).
        let commit = self.persisted_commit.max(boundary.lsn);
        if let Err(e) = self.node_dir.set_commit_lsn(commit) {
            return self.stop(e.into());
        }
        self.persisted_commit = commit;
        self.last_commit_write_ms = Some(now_ms);
        // A watermark above the boundary stays pending: it is persisted as records arrive.
        self.apply_pending = None;
        self.unsynced_bytes = 0;
        let Some(sink) = self.applier.snapshot_sink() else {
            return self.stop(ReplicaError::Runtime(
                "snapshot installed but the applier has no snapshot sink".into(),
            ));
        };
        if let Err(e) = local.snapshots.restore(&outcome.installed, sink) {
            return self.snapshot_failed(e, now_ms);
        }
        self.applied = boundary.lsn;
        tracing::info!(lsn = boundary.lsn, epoch = boundary.epoch, verdict = ?outcome.verdict,
            "snapshot installed and restored into the applier");
        self.outputs.push_back(Output::SnapshotInstalled(boundary));
        self.feed(Event::SnapshotInstalled { boundary }, now_ms);
    }
}

/// Passes one committed record to `applier`: a control record to
/// [`Applier::apply_control`], any other to [`Applier::apply`]. Whoever applies (the
/// replica executor, a node's primary role) calls this, in lsn order.
pub fn apply_record(
    applier: &mut dyn Applier,
    record: &walship_wal::OwnedRecord,
) -> Result<(), ReplicaError> {
    let lsn = record.lsn();
    if record.view().is_control() {
        // decode_record verified the body when the record was read.
        let control = ControlRecord::decode(record.payload())
            .map_err(|e| ReplicaError::Runtime(format!("control record at lsn {lsn}: {e}")))?;
        applier
            .apply_control(lsn, &control)
            .map_err(|source| ReplicaError::Apply { lsn, source })
    } else {
        applier
            .apply(lsn, record.payload())
            .map_err(|source| ReplicaError::Apply { lsn, source })
    }
}
