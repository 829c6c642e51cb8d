//! The primary executor: everything the primary node DECIDES, over any [`Storage`], with no
//! thread, task, channel, condvar or clock inside. Production (`Primary`, over `FsStorage`)
//! and the simulator (`walship-fault`, over `SimStorage`) run this same code.
//!
//! It owns the sans-IO [`PrimaryCore`], the WAL, the state directory and the snapshot store,
//! and performs every core action:
//! - **append**: records are written, not durable ([`PrimaryExec::append`]);
//! - **group commit**: [`PrimaryExec::sync_needed`] / [`PrimaryExec::sync`] — ONE fdatasync
//!   covers every append written before it; the core then learns the new local durable lsn
//!   (it ships only records synced here, FM-3.1) and recomputes the commit;
//! - **who is woken**: an append's token is acknowledged ([`Output::Ack`], in lsn order) only
//!   once the commit watermark covers its lsn — local durability AND the quorum's receipts
//!   (under quorum 0 local durability is the commit); tokens waiting longer than the commit
//!   timeout get [`PrimaryError::CommitTimeout`];
//! - **the commit watermark file** (`state/commit`): written, fsynced, renamed, directory
//!   fsynced, at most once per persist interval (a deadline from `now_ms`), never above the
//!   watermark announced with the acknowledgements;
//! - **stopping the node**: a failed fsync, ENOSPC or any other I/O error of the WAL or of
//!   the commit watermark file stops it ([`PrimaryExec::stop`]): every pending token fails
//!   with [`PrimaryError::Stopped`], later appends are refused, nothing is ever retried;
//! - **timers**: the core's tick, the persist deadline and commit timeouts, as
//!   [`PrimaryExec::next_deadline`] and [`PrimaryExec::on_timer`].
//!
//! Inputs carry `now_ms`; outputs are drained with [`PrimaryExec::poll_output`], in order.
//! The world around it (tokio/quinn glue, or the simulator) only moves frames and time:
//! it delivers frames ([`PrimaryExec::on_frame`]), sends what [`Output::Send`] says, streams
//! snapshots ([`Output::SendSnapshot`]), wakes the tokens and fires deadlines.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

use tracing::{debug, error, info, warn};
use walship_primary::core::{
    Action, CloseReason, ConnId, CoreConfig, CoreStatus, Event, PrimaryCore, Quorum, Window,
};
use walship_primary::log::WalLog;
use walship_snapshot::{BoundaryMembership, Limits, SnapshotStore};
use walship_wal::control::{ConfigMember, Configuration, ControlRecord};

use crate::membership::{classify_change, ConfigLog, MembershipView};
use walship_wal::state::{EpochHistory, NodeDir};
use walship_wal::{Lsn, OpenReport, Position, SharedWal, Storage, Wal, WalError, WalOptions};
use walship_wire::Message;

use super::{PrimaryError, PrimaryStop};

/// The `tracing` target of the commit-path stage events (see the driver's `STAGE_TARGET`).
const STAGE_TARGET: &str = "walship::stage";

/// What the executor is built from (the parts of `PrimaryConfig` it decides with, plus its
/// timers).
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// This node's id; must be in `members`.
    pub node_id: String,
    /// Cluster id; replicas with another are refused.
    pub cluster_id: String,
    /// Every member's node id, this primary's own included.
    pub members: Vec<String>,
    /// Quorum policy.
    pub quorum: Quorum,
    /// Per-replica shipping window.
    pub window: Window,
    /// WAL segment size.
    pub segment_size_bytes: u64,
    /// Largest record payload accepted.
    pub max_record_bytes: u32,
    /// How long an append's token waits for the commit once its record is durable here
    /// before it fails with [`PrimaryError::CommitTimeout`]; `None`: it waits as long as
    /// the node runs.
    pub commit_timeout_ms: Option<u64>,
    /// Period of the core's tick (re-evaluates windows).
    pub tick_ms: u64,
    /// Minimum interval between two writes of `state/commit`.
    pub persist_interval_ms: u64,
    /// The static base configuration (spec/membership.md: generation 0, the
    /// member list of `node.toml` with addresses and voter flags) in effect
    /// until the log holds a configuration record. `None`: every id of
    /// `members` votes, with no addresses (library users and the simulator).
    pub base_config: Option<Configuration>,
    /// With [`ExecConfig::new_epoch`]: a forced configuration (`walship ctl force-quorum`,
    /// spec/membership.md §3) written and synced right after the epoch's control record,
    /// before the core exists, so it is the configuration this primary commits under from
    /// its first record on. Must be `forced` and follow the newest configuration in the
    /// log by one generation ([`PrimaryError::Membership`] otherwise, nothing written
    /// after the epoch's record).
    pub forced_config: Option<Configuration>,
    /// `Some(E)`: start epoch `E` (this node won its election). `E` must be above the
    /// epoch history's last epoch ([`PrimaryError::EpochNotNew`]). `open` records
    /// `{E, log end + 1}` in the epoch history (persisted), sets the WAL's epoch to `E`
    /// and appends and syncs the control record `EpochStart{E, node_id}` as the epoch's
    /// first record before the core exists (so it ships only once durable, FM-3.1). The
    /// commit watermark then advances only when that record reaches the quorum. `None`:
    /// continue the history's last epoch (an empty directory starts epoch 1 at lsn 1).
    pub new_epoch: Option<u64>,
}

/// Default period of the core's tick.
pub const DEFAULT_TICK_MS: u64 = 100;
/// Default minimum interval between two writes of `state/commit`.
pub const DEFAULT_PERSIST_INTERVAL_MS: u64 = 20;

/// An output of the executor, for the world around it to perform, in order.
pub enum Output<W> {
    /// Write `msg` as one frame on the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// Close the connection (after writing what was queued before).
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Stream the newest snapshot on the connection (offer, chunks, end).
    SendSnapshot {
        /// The connection.
        conn: ConnId,
        /// The boundary of the snapshot to send.
        boundary: Position,
    },
    /// The append of `token` is committed at `lsn`: wake it with success.
    Ack {
        /// The waiter.
        token: W,
        /// Its record's lsn.
        lsn: Lsn,
    },
    /// The append of `token` failed (stopped, shutting down, too large, commit timeout).
    Fail {
        /// The waiter.
        token: W,
        /// Why.
        error: PrimaryError,
    },
    /// A sync made every record up to `lsn` durable here.
    Durable(Lsn),
    /// The commit watermark advanced to `lsn` (announced before the acks it covers).
    Committed(Lsn),
    /// `state/commit` now durably holds `lsn`.
    CommitPersisted(Lsn),
    /// The node stopped after a fatal failure of its own storage (emitted once, last).
    Stopped(PrimaryStop),
}

impl<W> std::fmt::Debug for Output<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Send { conn, msg } => write!(f, "Send({conn}, {})", msg.kind()),
            Output::Close { conn, reason } => write!(f, "Close({conn}, {reason})"),
            Output::SendSnapshot { conn, boundary } => {
                write!(f, "SendSnapshot({conn}, {boundary})")
            }
            Output::Ack { lsn, .. } => write!(f, "Ack({lsn})"),
            Output::Fail { error, .. } => write!(f, "Fail({error})"),
            Output::Durable(l) => write!(f, "Durable({l})"),
            Output::Committed(l) => write!(f, "Committed({l})"),
            Output::CommitPersisted(l) => write!(f, "CommitPersisted({l})"),
            Output::Stopped(r) => write!(f, "Stopped({r})"),
        }
    }
}

/// An append waiting for its commit.
struct Waiter<W> {
    lsn: Lsn,
    /// When its commit times out (set once the record is durable here).
    deadline: Option<u64>,
    token: W,
}

/// What [`PrimaryExec::open`] recovered, for the world's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFacts {
    /// The WAL's open report.
    pub report: OpenReport,
    /// The persisted commit watermark read at open.
    pub persisted_commit_lsn: Lsn,
    /// This primary's epoch.
    pub epoch: u64,
}

/// The primary executor. See the module documentation.
pub struct PrimaryExec<S: Storage, W> {
    node_id: String,
    node_dir: NodeDir<S>,
    wal: Arc<SharedWal<S>>,
    log: WalLog<S>,
    core: PrimaryCore,
    snapshots: SnapshotStore<S>,
    max_record_bytes: u32,
    commit_timeout_ms: Option<u64>,
    tick_ms: u64,
    persist_interval_ms: u64,
    /// The last lsn written to the WAL.
    written: Lsn,
    /// The last lsn a sync of this executor made durable.
    durable: Lsn,
    /// The commit watermark announced ([`Output::Committed`]).
    commit: Lsn,
    /// The commit watermark `state/commit` durably holds.
    persisted: Lsn,
    persist_at: Option<u64>,
    next_tick: u64,
    /// Appends waiting for their commit, in lsn order.
    waiting: VecDeque<Waiter<W>>,
    out: VecDeque<Output<W>>,
    stopped: Option<PrimaryStop>,
    shutting_down: bool,
    /// A replica knows a higher epoch than ours ([`PrimaryExec::fenced`]).
    fenced: Option<u64>,
    facts: OpenFacts,
    /// The configurations of the log (spec/membership.md): which voters a record is
    /// committed under, whom to ship to.
    configs: ConfigLog,
    /// A configuration committed inside a core event: the core gets it after.
    pending_membership: bool,
}

impl<S: Storage, W> std::fmt::Debug for PrimaryExec<S, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryExec")
            .field("node_id", &self.node_id)
            .field("written", &self.written)
            .field("durable", &self.durable)
            .field("commit", &self.commit)
            .field("persisted", &self.persisted)
            .field("waiting", &self.waiting.len())
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl<S: Storage + Clone, W> PrimaryExec<S, W> {
    /// Opens the node directory `dir` on `storage`: epoch history (the first start of an
    /// empty directory creates epoch 1 at lsn 1; [`ExecConfig::new_epoch`] starts a new
    /// epoch with its durable control record), snapshot store, WAL recovery protecting
    /// the persisted commit watermark (FM-X.6), snapshot/WAL agreement (FM-10.5), and
    /// builds the core. The commit the core can already compute (quorum 0, or a persisted
    /// watermark below the durable end) is announced at once. Blocking file I/O.
    pub fn open(
        storage: S,
        dir: &Path,
        config: ExecConfig,
        now_ms: u64,
    ) -> Result<PrimaryExec<S, W>, PrimaryError> {
        let node_dir = NodeDir::open(storage.clone(), dir)?;
        let mut epochs = node_dir.epochs()?;
        let history_epoch = if epochs.is_empty() {
            1
        } else {
            epochs.last_epoch()
        };
        // A new epoch must be above every epoch this directory has seen; checked before
        // anything on disk changes.
        if let Some(requested) = config.new_epoch {
            let last = if epochs.is_empty() { 0 } else { history_epoch };
            if requested <= last {
                error!(node = %config.node_id, requested, last, "refusing to start an epoch that is not new");
                return Err(PrimaryError::EpochNotNew { requested, last });
            }
        }
        let opts = WalOptions {
            segment_size_bytes: config.segment_size_bytes,
            max_record_bytes: config.max_record_bytes,
            epoch: history_epoch,
        };
        // Discards interrupted creations (tmp-*); opened before the WAL because the log's
        // end after recovery may be the newest snapshot's boundary (FM-10.5, below).
        let (snapshots, _) =
            SnapshotStore::open(storage.clone(), node_dir.snapshot_dir(), Limits::default())?;
        let commit_lsn = node_dir.commit_lsn()?;
        // FM-X.6: a torn-tail cut that would leave the log below the watermark is refused
        // before anything is cut, so the damaged bytes stay for the operator. A snapshot at
        // or above the watermark makes any cut harmless: recovery then ends the log at its
        // boundary at least.
        let snapshot_lsn = snapshots.newest()?.map_or(0, |s| s.boundary.lsn);
        let open = walship_wal::OpenOptions::protecting_commit(commit_lsn, snapshot_lsn);
        let (mut wal, report) = match Wal::open_with(
            storage.clone(),
            node_dir.wal_dir(),
            opts,
            open,
        ) {
            Ok(x) => x,
            Err(WalError::CutRefused(r)) => {
                error!(segment = %r.segment.display(), offset = r.offset, bytes_cut = r.bytes_cut,
                        log_end = r.log_end, commit_lsn,
                        "acknowledged records lost: the WAL's damaged tail would leave the log below the persisted commit watermark; refusing to start, nothing was cut");
                return Err(PrimaryError::AcknowledgedRecordsLost {
                    dir: dir.to_path_buf(),
                    log_end: r.log_end,
                    commit_lsn,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if epochs.is_empty() {
            if wal.last().lsn != 0 {
                return Err(PrimaryError::NoEpochHistory {
                    dir: dir.to_path_buf(),
                    last_lsn: wal.last().lsn,
                });
            }
            if config.new_epoch.is_none() {
                epochs = EpochHistory::new();
                epochs
                    .push(1, 1)
                    .map_err(|e| PrimaryError::Task(format!("epoch history: {e}")))?;
                node_dir.set_epochs(&epochs)?;
                info!("first start: epoch 1 begins at lsn 1");
            }
        }
        let history_last = if epochs.is_empty() {
            0
        } else {
            epochs.last_epoch()
        };
        if wal.epoch() > history_last.max(1) {
            return Err(PrimaryError::EpochBehindLog {
                dir: dir.to_path_buf(),
                wal_epoch: wal.epoch(),
                history_epoch: history_last,
            });
        }
        // Makes the newest snapshot and the WAL agree (FM-10.5); a mismatch is local
        // corruption: refuse to start.
        let recovered = snapshots.recover(&mut wal)?;
        debug!(?recovered, "snapshot store opened");
        let newest = snapshots.newest()?;
        // The configuration records the newest snapshot replaced (spec/membership.md,
        // spec/snapshot-format.md §1.5): what its configuration file records.
        let static_base = config.base_config.clone().unwrap_or_else(|| {
            crate::membership::base_configuration(config.members.iter().map(|id| ConfigMember {
                id: id.clone(),
                incarnation: 0,
                voter: true,
                addr: id.clone(),
                http_addr: None,
            }))
        });
        let start_configs = match &newest {
            Some(snap) => {
                if snap.membership == BoundaryMembership::Unrecorded && wal.base().lsn > 0 {
                    warn!(lsn = snap.boundary.lsn, "the newest snapshot records no configuration and the WAL starts after it: the static member list is assumed for the records it replaced");
                }
                ConfigLog::at_snapshot(static_base, &snap.membership)
            }
            None => ConfigLog::new(static_base),
        };
        if let Some(new_epoch) = config.new_epoch {
            start_epoch(&node_dir, &mut wal, &mut epochs, new_epoch, &config.node_id)?;
            if let Some(forced) = &config.forced_config {
                write_forced(&mut wal, start_configs.clone(), forced, new_epoch)?;
            }
        }
        let epoch = epochs.last_epoch();
        let newest_snapshot = newest.map(|s| s.boundary);
        // FM-X.6: the persisted watermark only ever lags what was committed, so a log (its
        // last record, or the snapshot boundary it was reset to) ending below it lost records
        // that were acknowledged. Refuse to start rather than hand out their lsns again.
        let log_end = wal.last().lsn;
        if log_end < commit_lsn {
            error!(log_end, commit_lsn, ?report,
                "acknowledged records lost: the log ends below the persisted commit watermark; refusing to start");
            return Err(PrimaryError::AcknowledgedRecordsLost {
                dir: dir.to_path_buf(),
                log_end,
                commit_lsn,
            });
        }
        match &report {
            OpenReport::TornTailCut {
                segment,
                offset,
                bytes_cut,
                last,
            } => warn!(segment = %segment.display(), offset, bytes_cut, last = %last, commit_lsn,
                "WAL open cut a torn tail above the persisted commit watermark {commit_lsn}"),
            other => info!(report = ?other, "WAL opened"),
        }
        let configs = start_configs
            .extended_by(wal.reader(0)?, commit_lsn)
            .map_err(|e| PrimaryError::Task(format!("configuration records: {e}")))?;
        let core = PrimaryCore::new(CoreConfig {
            node_id: config.node_id.clone(),
            cluster_id: config.cluster_id.clone(),
            members: config.members.clone(),
            quorum: config.quorum,
            epoch,
            epoch_history: epochs.entries.clone(),
            commit_lsn,
            window: config.window,
        })?;
        let written = wal.last().lsn;
        let durable = wal.durable_lsn();
        let wal = SharedWal::new(wal);
        let mut log = WalLog::new(wal.clone())?;
        log.set_newest_snapshot(newest_snapshot);
        let mut exec = PrimaryExec {
            node_id: config.node_id,
            node_dir,
            wal,
            log,
            core,
            snapshots,
            max_record_bytes: config.max_record_bytes,
            commit_timeout_ms: config.commit_timeout_ms,
            tick_ms: config.tick_ms.max(1),
            persist_interval_ms: config.persist_interval_ms,
            written,
            durable,
            // The core starts from the persisted watermark, capped at the durable end.
            commit: commit_lsn.min(durable),
            persisted: commit_lsn,
            persist_at: None,
            next_tick: now_ms.saturating_add(config.tick_ms.max(1)),
            waiting: VecDeque::new(),
            out: VecDeque::new(),
            stopped: None,
            shutting_down: false,
            fenced: None,
            facts: OpenFacts {
                report,
                persisted_commit_lsn: commit_lsn,
                epoch,
            },
            configs,
            pending_membership: false,
        };
        exec.apply_membership(now_ms);
        // Commit may already be reachable (quorum 0, or a persisted watermark below durable).
        exec.core_event(Event::LocalDurable, now_ms);
        Ok(exec)
    }
}

impl<S: Storage, W> PrimaryExec<S, W> {
    /// Appends records (one write for the batch): written, NOT durable; each token waits
    /// for its commit. A payload above the record limit fails its own token only. While
    /// the node is stopped or shutting down every token fails at once. A WAL error here
    /// (ENOSPC, a failed fsync while sealing a segment, any I/O error) stops the node.
    /// Returns the lsns written.
    pub fn append<P: AsRef<[u8]>>(
        &mut self,
        appends: Vec<(P, W)>,
        now_ms: u64,
    ) -> Option<RangeInclusive<Lsn>> {
        let _ = now_ms;
        let mut payloads: Vec<P> = Vec::with_capacity(appends.len());
        let mut tokens: Vec<W> = Vec::with_capacity(appends.len());
        for (payload, token) in appends {
            if let Some(error) = self.refusal() {
                self.out.push_back(Output::Fail { token, error });
                continue;
            }
            let len = payload.as_ref().len();
            if len > self.max_record_bytes as usize {
                let error = PrimaryError::Wal(WalError::RecordTooLarge {
                    len,
                    max: self.max_record_bytes,
                });
                self.out.push_back(Output::Fail { token, error });
                continue;
            }
            payloads.push(payload);
            tokens.push(token);
        }
        if payloads.is_empty() {
            return None;
        }
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_ref()).collect();
        match self.wal.append_batch(&refs) {
            Ok(lsns) => {
                self.written = *lsns.end();
                tracing::trace!(target: STAGE_TARGET, stage = "primary_written", lsn = self.written);
                for (lsn, token) in lsns.clone().zip(tokens) {
                    self.waiting.push_back(Waiter {
                        lsn,
                        deadline: None,
                        token,
                    });
                }
                Some(lsns)
            }
            Err(e) => {
                // ENOSPC, a failed fsync while sealing a segment (the WAL is poisoned), any
                // I/O error: the log can promise nothing more. Never retried.
                error!(error = %e, "append failed: the node stops");
                for token in tokens {
                    self.out.push_back(Output::Fail {
                        token,
                        error: PrimaryError::Wal(copy_wal_error(&e)),
                    });
                }
                self.stop(PrimaryStop::Wal {
                    error: e.to_string(),
                });
                None
            }
        }
    }

    /// Why an append is refused now, if it is.
    fn refusal(&self) -> Option<PrimaryError> {
        if let Some(reason) = &self.stopped {
            return Some(PrimaryError::Stopped(reason.clone()));
        }
        if let Some(epoch) = self.fenced {
            return Some(PrimaryError::Fenced { epoch });
        }
        if self.shutting_down {
            return Some(PrimaryError::ShuttingDown);
        }
        None
    }

    /// Whether records were written that no sync covers yet (and the node runs).
    pub fn sync_needed(&self) -> bool {
        self.stopped.is_none() && self.written > self.durable
    }

    /// The group sync: ONE fdatasync covering every record written so far. On success the
    /// core learns the new durable lsn (ships it, recomputes the commit, acks follow); a
    /// failure stops the node and is never retried (the page cache may have dropped what
    /// the failed fsync was to write; a retry could falsely succeed, FM-X.5).
    pub fn sync(&mut self, now_ms: u64) {
        if !self.sync_needed() {
            return;
        }
        match self.wal.with(|w| w.sync()) {
            Ok(durable) => {
                tracing::trace!(target: STAGE_TARGET, stage = "primary_fsync", lsn = durable);
                self.learn_durable(durable, now_ms);
                self.out.push_back(Output::Durable(durable));
                self.core_event(Event::LocalDurable, now_ms);
            }
            Err(e) => {
                error!(error = %e, "WAL sync failed: the node stops (never retried)");
                // The appends this sync was to make durable get its error; those durable
                // and waiting for the quorum get `Stopped` (below).
                let durable = self.durable;
                let first_unsynced = self.waiting.partition_point(|w| w.lsn <= durable);
                for w in self.waiting.split_off(first_unsynced) {
                    self.out.push_back(Output::Fail {
                        token: w.token,
                        error: PrimaryError::Wal(copy_wal_error(&e)),
                    });
                }
                self.stop(PrimaryStop::Wal {
                    error: e.to_string(),
                });
            }
        }
    }

    /// A replica connection passed mutual TLS; `node_id` is the member its certificate names.
    pub fn on_connected(&mut self, conn: ConnId, node_id: String, now_ms: u64) {
        info!(replica = %node_id, conn, "replica connected");
        self.core_event(Event::Connected { conn, node_id }, now_ms);
    }

    /// A complete frame arrived on the connection.
    pub fn on_frame(&mut self, conn: ConnId, msg: Message, now_ms: u64) {
        self.core_event(Event::Received { conn, msg }, now_ms);
    }

    /// A frame arrived holding a `Hello` of another protocol version.
    pub fn on_hello_of_other_version(&mut self, conn: ConnId, protocol_version: u32, now_ms: u64) {
        let ev = Event::HelloOfOtherVersion {
            conn,
            protocol_version,
        };
        self.core_event(ev, now_ms);
    }

    /// The connection ended (either side, any reason).
    pub fn on_closed(&mut self, conn: ConnId, now_ms: u64) {
        self.core_event(Event::Disconnected { conn }, now_ms);
    }

    /// The earliest time [`PrimaryExec::on_timer`] has something to do (`None` once stopped).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.stopped.is_some() {
            return None;
        }
        let mut t = self.next_tick;
        if let Some(p) = self.persist_at {
            t = t.min(p);
        }
        if let Some(d) = self.waiting.front().and_then(|w| w.deadline) {
            t = t.min(d);
        }
        Some(t)
    }

    /// Fires what is due at `now_ms`: commit timeouts, the persist of `state/commit`, the
    /// core's tick.
    pub fn on_timer(&mut self, now_ms: u64) {
        if self.stopped.is_some() {
            return;
        }
        while let Some(w) = self.waiting.front() {
            if w.deadline.is_none_or(|d| d > now_ms) {
                break;
            }
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            warn!(
                lsn = w.lsn,
                commit_lsn = self.commit,
                "commit timed out: record stays tentative"
            );
            self.out.push_back(Output::Fail {
                token: w.token,
                error: PrimaryError::CommitTimeout { lsn: w.lsn },
            });
        }
        if self.persist_at.is_some_and(|t| t <= now_ms) {
            self.persist_commit();
        }
        if self.stopped.is_none() && self.next_tick <= now_ms {
            self.next_tick = now_ms.saturating_add(self.tick_ms);
            self.core_event(Event::Tick, now_ms);
        }
    }

    /// Stops the node after a fatal failure of its own storage: every pending token fails
    /// with [`PrimaryError::Stopped`], later appends are refused, nothing more is synced,
    /// shipped or persisted. The first reason wins; [`Output::Stopped`] is emitted once.
    pub fn stop(&mut self, reason: PrimaryStop) {
        if self.stopped.is_some() {
            return;
        }
        error!(node = %self.node_id, %reason, "primary stopped: its own storage failed (never retried); restart it to recover from disk");
        self.stopped = Some(reason.clone());
        self.persist_at = None;
        for w in std::mem::take(&mut self.waiting) {
            self.out.push_back(Output::Fail {
                token: w.token,
                error: PrimaryError::Stopped(reason.clone()),
            });
        }
        self.out.push_back(Output::Stopped(reason));
    }

    /// A clean stop: writes the final commit watermark (a failure stops the node), fails
    /// every pending token with [`PrimaryError::ShuttingDown`] and refuses later appends.
    pub fn shutdown(&mut self, now_ms: u64) {
        let _ = now_ms;
        if self.stopped.is_none() {
            self.persist_commit();
        }
        self.shutting_down = true;
        for w in std::mem::take(&mut self.waiting) {
            let error = self.refusal().unwrap_or(PrimaryError::ShuttingDown);
            self.out.push_back(Output::Fail {
                token: w.token,
                error,
            });
        }
    }

    /// The next output to perform, in order.
    pub fn poll_output(&mut self) -> Option<Output<W>> {
        self.out.pop_front()
    }

    /// Why the node stopped, once it did.
    pub fn stopped(&self) -> Option<&PrimaryStop> {
        self.stopped.as_ref()
    }

    /// The higher epoch a replica told this primary of (its `Hello.highest_epoch_seen`
    /// or a `Refuse{StalePrimary}`), once it did: the primary is stale. From then on it
    /// acknowledges no append (pending and later ones fail with
    /// [`PrimaryError::Fenced`]), never advances its commit watermark and ships nothing;
    /// the node must step down. Records already written stay in the log, tentative.
    pub fn fenced(&self) -> Option<u64> {
        self.fenced
    }

    /// The commit watermark announced so far.
    pub fn commit_lsn(&self) -> Lsn {
        self.commit
    }

    /// The last lsn this executor's syncs made durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// The last lsn written (durable or not).
    pub fn written_lsn(&self) -> Lsn {
        self.written
    }

    /// The commit watermark `state/commit` durably holds (as written by this executor, or
    /// read at open).
    pub fn persisted_commit_lsn(&self) -> Lsn {
        self.persisted
    }

    /// What open recovered.
    pub fn open_facts(&self) -> &OpenFacts {
        &self.facts
    }

    /// The WAL (shared with snapshot maintenance and status readers).
    pub fn wal(&self) -> &Arc<SharedWal<S>> {
        &self.wal
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &SnapshotStore<S> {
        &self.snapshots
    }

    /// The node directory (state files).
    pub fn node_dir(&self) -> &NodeDir<S> {
        &self.node_dir
    }

    /// The core (read-only: status, epoch, quorum).
    pub fn core(&self) -> &PrimaryCore {
        &self.core
    }

    /// The boundary of the newest snapshot changed (created by maintenance): replicas whose
    /// next record is no longer retained get it.
    pub fn set_newest_snapshot(&mut self, boundary: Option<Position>) {
        self.log.set_newest_snapshot(boundary);
    }

    /// Epoch, durable/commit lsn and per-replica progress.
    pub fn status(&mut self, now_ms: u64) -> CoreStatus {
        self.log.refresh();
        self.core.status(&self.log, now_ms)
    }

    /// Arms a fault for the next record shipped to `replica_id` (demo/test use only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(
        &mut self,
        replica_id: &str,
        fault: walship_primary::core::ShipFault,
    ) -> Result<(), walship_primary::core::CoreError> {
        self.core.inject_fault(replica_id, fault)
    }

    /// The configuration in force at `boundary` (a snapshot's configuration file,
    /// spec/snapshot-format.md §1.5); `None` when the log no longer knows it.
    pub fn membership_at(&self, boundary: Lsn) -> Option<BoundaryMembership> {
        self.configs.at_or_below(boundary)
    }

    /// The newest configuration of the log and whether it is committed.
    pub fn membership(&self) -> MembershipView {
        self.configs.view(self.commit)
    }

    /// The configurations a record is committed under now (rule 2).
    pub fn commit_configurations(&self) -> Vec<Configuration> {
        self.configs
            .commit_configs(self.commit)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Proposes configuration `config` (spec/membership.md rule 3: the newest one in the
    /// log is committed, and `config` changes one member at generation + 1 — or is the
    /// first record of a log, listing exactly the base's members). Appends it as a control
    /// record (written, not durable: the next group sync covers it); from then on every
    /// record commits under the old and the new voters until it commits. `token` is acked
    /// when it commits, like an append's. Refusals fail the token and change nothing:
    /// a pending change, a change the rules refuse, a change that removes or demotes this
    /// primary (hand over first), a static quorum the new voters cannot meet.
    pub fn propose_configuration(
        &mut self,
        config: Configuration,
        token: W,
        now_ms: u64,
    ) -> Result<Lsn, PrimaryError> {
        let refused = |reason: String| PrimaryError::Membership(reason);
        let result = (|| {
            if let Some(e) = self.refusal() {
                return Err(e);
            }
            self.configs
                .may_propose(self.commit)
                .map_err(|e| refused(e.to_string()))?;
            let change = classify_change(self.configs.newest(), &config)
                .map_err(|e| refused(e.to_string()))?;
            if !config.is_voter(&self.node_id) {
                return Err(refused(format!(
                    "the change ({change:?}) removes or demotes the primary {}: switch over to another voter first",
                    self.node_id
                )));
            }
            let voters = config.voters().count();
            let needed = self.core.quorum().receipts_needed(voters);
            if needed + 1 > voters {
                return Err(refused(format!(
                    "quorum {} needs {needed} receipts but the new configuration has {voters} voters",
                    self.core.quorum()
                )));
            }
            let epoch = self.core.epoch();
            let control = ControlRecord::Configuration {
                epoch,
                config: config.clone(),
            };
            let position = self.wal.with(|w| w.append_control(&control)).map_err(|e| {
                error!(error = %e, "appending a configuration record failed: the node stops");
                self.stop(PrimaryStop::Wal {
                    error: e.to_string(),
                });
                PrimaryError::Wal(copy_wal_error(&e))
            })?;
            let lsn = position.lsn;
            if let Err(e) = self.configs.observe(lsn, config.clone()) {
                panic!("a configuration checked by classify_change was refused by the log at lsn {lsn}: {e}");
            }
            info!(node = %self.node_id, epoch, lsn, generation = config.generation, ?change, "configuration proposed: records commit under the old and the new voters until it commits");
            Ok(lsn)
        })();
        match result {
            Ok(lsn) => {
                self.written = lsn;
                self.waiting.push_back(Waiter {
                    lsn,
                    deadline: None,
                    token,
                });
                self.apply_membership(now_ms);
                Ok(lsn)
            }
            Err(e) => {
                let copy = match &e {
                    PrimaryError::Membership(r) => PrimaryError::Membership(r.clone()),
                    other => PrimaryError::Task(other.to_string()),
                };
                self.out.push_back(Output::Fail { token, error: copy });
                Err(e)
            }
        }
    }

    /// Hands the core the members and voter sets of the configurations in effect.
    fn apply_membership(&mut self, now_ms: u64) {
        let configs = self.configs.commit_configs(self.commit);
        let mut members: Vec<String> = Vec::new();
        for c in &configs {
            for m in &c.members {
                if !members.contains(&m.id) {
                    members.push(m.id.clone());
                }
            }
        }
        let sets: Vec<Vec<String>> = configs
            .iter()
            .map(|c| c.voters().map(str::to_owned).collect())
            .collect();
        // The incarnation whose receipts count: the one the newest configuration names
        // where the member votes there, else the older one's (a voter demoted with a new
        // incarnation counts in the old voter set only as the incarnation that held the
        // data: its new one counts nowhere until it is a voter again).
        let expected: Vec<(String, u64)> = members
            .iter()
            .map(|id| {
                let voting = configs
                    .iter()
                    .rev()
                    .filter_map(|c| c.member(id))
                    .find(|m| m.voter)
                    .or_else(|| configs.iter().rev().find_map(|c| c.member(id)));
                (id.clone(), voting.map_or(0, |m| m.incarnation))
            })
            .collect();
        if sets.as_slice() != self.core.voter_sets() || !self.core.members_match(&members) {
            match self.core.set_membership(&members, sets) {
                Ok(actions) => {
                    for action in actions {
                        if let Action::Close { conn, reason } = action {
                            self.out.push_back(Output::Close { conn, reason });
                        } else if let Action::Send { conn, msg } = action {
                            self.out.push_back(Output::Send { conn, msg });
                        }
                    }
                }
                Err(e) => panic!("a configuration in the log has no voters: {e}"),
            }
        }
        self.core.set_expected_incarnations(&expected);
        self.core_event(Event::Tick, now_ms);
    }

    /// Feeds one event to the core and performs its actions.
    fn core_event(&mut self, event: Event, now_ms: u64) {
        if self.stopped.is_some() {
            return;
        }
        self.log.refresh();
        let actions = self.core.handle(event, &mut self.log, now_ms);
        for action in actions {
            match action {
                Action::Send { conn, msg } => self.out.push_back(Output::Send { conn, msg }),
                Action::Close { conn, reason } => {
                    warn!(replica = ?self.core.conn_node_id(conn), conn, %reason, "closing replica connection");
                    self.out.push_back(Output::Close { conn, reason });
                }
                Action::SendSnapshot { conn, boundary } => {
                    info!(
                        conn,
                        lsn = boundary.lsn,
                        epoch = boundary.epoch,
                        "sending snapshot"
                    );
                    self.out.push_back(Output::SendSnapshot { conn, boundary });
                }
                Action::CommitAdvanced { commit_lsn } => self.on_commit(commit_lsn, now_ms),
                Action::Fenced { epoch } => self.on_fenced(epoch),
            }
        }
        if std::mem::take(&mut self.pending_membership) {
            self.apply_membership(now_ms);
        }
    }

    /// A replica knows `epoch`, above ours: acknowledge nothing more. Every waiting append
    /// fails with [`PrimaryError::Fenced`] (its record stays in the log, tentative: the
    /// new primary decides its fate); later appends are refused by [`Self::refusal`].
    fn on_fenced(&mut self, epoch: u64) {
        if self.fenced.is_some_and(|f| f >= epoch) {
            return;
        }
        warn!(node = %self.node_id, epoch = self.core.epoch(), higher = epoch, commit_lsn = self.commit,
            waiting = self.waiting.len(), "fenced by a higher epoch: acknowledging nothing more; the node must step down");
        self.fenced = Some(epoch);
        for w in std::mem::take(&mut self.waiting) {
            self.out.push_back(Output::Fail {
                token: w.token,
                error: PrimaryError::Fenced { epoch },
            });
        }
    }

    /// Records up to `durable` are on disk here: their tokens' commit timeouts start.
    fn learn_durable(&mut self, durable: Lsn, now_ms: u64) {
        if durable <= self.durable {
            return;
        }
        self.durable = durable;
        if let Some(t) = self.commit_timeout_ms {
            let deadline = now_ms.saturating_add(t);
            for w in self.waiting.iter_mut().filter(|w| w.deadline.is_none()) {
                if w.lsn > durable {
                    break;
                }
                w.deadline = Some(deadline);
            }
        }
    }

    /// The commit watermark advanced: announce it, wake the tokens it covers (lsn order),
    /// and schedule its persist.
    fn on_commit(&mut self, commit_lsn: Lsn, now_ms: u64) {
        if self.fenced.is_some() {
            // The core advances nothing once fenced; never acknowledge after it either.
            return;
        }
        // A segment roll fsyncs the completed segment inside an append, so the WAL's durable
        // lsn (which the core reads) can run ahead of this executor's last group sync.
        let wal_durable = self.wal.durable_lsn();
        self.learn_durable(wal_durable, now_ms);
        assert!(
            commit_lsn <= self.durable,
            "the commit watermark {commit_lsn} never exceeds the local durable lsn {}",
            self.durable
        );
        if commit_lsn <= self.commit {
            return;
        }
        self.commit = commit_lsn;
        debug!(commit_lsn, "commit advanced");
        if self.configs.newest_lsn() > 0 && self.configs.commit_configs(commit_lsn).len() == 1 {
            let before = self.configs.clone();
            self.configs.committed(commit_lsn);
            if before != self.configs {
                info!(node = %self.node_id, lsn = self.configs.newest_lsn(), generation = self.configs.newest().generation, "configuration committed: records commit under its voters alone");
                self.pending_membership = true;
            }
        }
        tracing::trace!(target: STAGE_TARGET, stage = "commit_advanced", lsn = commit_lsn);
        self.out.push_back(Output::Committed(commit_lsn));
        while self.waiting.front().is_some_and(|w| w.lsn <= commit_lsn) {
            if let Some(w) = self.waiting.pop_front() {
                self.out.push_back(Output::Ack {
                    token: w.token,
                    lsn: w.lsn,
                });
            }
        }
        if commit_lsn > self.persisted && self.persist_at.is_none() {
            self.persist_at = Some(now_ms.saturating_add(self.persist_interval_ms));
        }
    }

    /// Writes the announced commit watermark to `state/commit` (write, fsync, rename,
    /// fsync of `state/`). A failure stops the node; it is never retried.
    fn persist_commit(&mut self) {
        self.persist_at = None;
        let lsn = self.commit;
        if lsn <= self.persisted {
            return;
        }
        match self.node_dir.set_commit_lsn(lsn) {
            Ok(()) => {
                self.persisted = lsn;
                self.out.push_back(Output::CommitPersisted(lsn));
            }
            Err(e) => {
                error!(commit_lsn = lsn, error = %e, "cannot persist the commit watermark: the node stops");
                self.stop(PrimaryStop::CommitWatermark {
                    commit_lsn: lsn,
                    error: e.to_string(),
                });
            }
        }
    }
}

/// Appends and syncs a forced configuration at the start of epoch `epoch` (after its
/// control record): checked first against the newest configuration in the log.
fn write_forced<S: Storage>(
    wal: &mut Wal<S>,
    start: ConfigLog,
    forced: &Configuration,
    epoch: u64,
) -> Result<(), PrimaryError> {
    let refused = |r: String| PrimaryError::Membership(format!("forced configuration: {r}"));
    if !forced.forced {
        return Err(refused("not marked forced".into()));
    }
    let log = start
        .extended_by(wal.reader(0)?, 0)
        .map_err(|e| refused(e.to_string()))?;
    classify_change(log.newest(), forced).map_err(|e| refused(e.to_string()))?;
    let control = ControlRecord::Configuration {
        epoch,
        config: forced.clone(),
    };
    let at = wal.append_control(&control)?;
    wal.sync()?;
    warn!(epoch, lsn = at.lsn, generation = forced.generation, voters = ?forced.voters().collect::<Vec<_>>(),
        "forced configuration written (walship ctl force-quorum): the voters it removed no longer count");
    Ok(())
}

/// Starts epoch `epoch` on an open WAL whose log (after recovery) ends at `wal.last()`:
/// records `{epoch, last + 1}` in the epoch history and persists it (`state/epochs`:
/// write, fsync, rename, fsync of `state/`), sets the WAL's epoch, appends the control
/// record `EpochStart{epoch, primary}` (the epoch's first record) and syncs it. The caller
/// checked that `epoch` is above the history's last epoch.
///
/// The history is persisted first: a crash before the control record is durable leaves
/// a history naming an epoch with no record yet, which reopens as that epoch (its first
/// record then is whatever is appended next, at the recorded start lsn; the commit rule
/// is the same). The other order could leave a record of an epoch the history does not
/// know, which the next open refuses ([`PrimaryError::EpochBehindLog`]).
fn start_epoch<S: Storage>(
    node_dir: &NodeDir<S>,
    wal: &mut Wal<S>,
    epochs: &mut EpochHistory,
    epoch: u64,
    node_id: &str,
) -> Result<(), PrimaryError> {
    let last = wal.last();
    let start_lsn = last.lsn + 1;
    let mut next = epochs.clone();
    next.push(epoch, start_lsn)
        .map_err(|e| PrimaryError::Task(format!("epoch history: {e}")))?;
    node_dir.set_epochs(&next)?;
    *epochs = next;
    if wal.epoch() > epoch {
        // Unreachable after the caller's checks (the WAL's epoch is at most the history's
        // last, below `epoch`); never write backwards.
        return Err(PrimaryError::EpochBehindLog {
            dir: node_dir.wal_dir().to_path_buf(),
            wal_epoch: wal.epoch(),
            history_epoch: epoch,
        });
    }
    wal.set_epoch(epoch);
    let control = ControlRecord::EpochStart {
        epoch,
        primary: node_id.to_string(),
    };
    let pos = wal.append_control(&control)?;
    debug_assert_eq!(
        pos.lsn, start_lsn,
        "the control record is the epoch's first"
    );
    let durable = wal.sync()?;
    info!(node = %node_id, epoch, start_lsn, durable_lsn = durable, prev_last = %last,
        "new epoch started: control record durable");
    Ok(())
}

/// A copy of a WAL error for each appender it fails (an I/O error keeps its kind and text).
fn copy_wal_error(e: &WalError) -> WalError {
    match e {
        WalError::Io { op, path, source } => WalError::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        _ => WalError::Poisoned,
    }
}

#[cfg(test)]
mod tests;
