//! The tokio/quinn driver: connects to the configured primary over mutual
//! TLS, feeds the [`ReplicaCore`] and performs its actions on the real WAL,
//! the node's state files and the embedder's [`Applier`].
//!
//! The driver runs on its own thread (inside `block_on` of a private tokio
//! runtime whose single worker runs quinn and the frame reader), so its
//! blocking file I/O (appends, fdatasync, state files) stalls neither the
//! embedder's runtime nor QUIC packet processing. Per step it handles one received frame, then drains
//! the frames already waiting (up to `sync_every_bytes` appended), then does
//! the deferred work of the step in this order: one WAL sync (group sync),
//! the receipt for it, the commit watermark file, the applier. A halt is
//! performed the moment the core emits it: the read gate closes, the halt
//! file is written and fsynced, and the driver stops streaming and applying.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use walship_snapshot::{
    EpochCheck, FailureClass, Install, Limits, RecoveryReport, SnapshotEnd, SnapshotError,
    SnapshotStore,
};
use walship_wal::state::{EpochHistory, NodeDir};
use walship_wal::OpenReport;
use walship_wal::{Lsn, Position, SharedWal, Storage, Wal, WalError};
use walship_wire::message::Message;
use walship_wire::CloseCode;
use walship_wire::{read_frame, FrameError, FrameWriter, MAX_FRAME_BYTES};

use super::{Applier, ReplicaConfig, ReplicaError, ReplicaState, ReplicaStatus, Role, Shared};
use walship_replica::core::{
    Action, CoreConfig, DurableState, Event, LocalLog, Phase, ReplicaCore, SessionEnd,
};
use walship_replica::halt::{start_mode, write_halt, HaltReason, HaltRecord, StartMode};

/// Frames buffered between the stream reader task and the driver.
const FRAME_QUEUE: usize = 8;
/// Most frames handled in one step before the deferred work is done.
const MAX_FRAMES_PER_STEP: usize = 64;
/// Most consecutive busy steps whose commit-file write and apply are deferred.
const MAX_DEFERRED_STEPS: u32 = 8;

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The handle side of the driver thread.
pub(crate) struct DriverHandle {
    stop_tx: watch::Sender<bool>,
    done_rx: oneshot::Receiver<Result<(), ReplicaError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DriverHandle {
    /// Tells the driver to stop and waits for its result.
    pub(crate) async fn stop(mut self) -> Result<(), ReplicaError> {
        let _ = self.stop_tx.send(true);
        let result = match (&mut self.done_rx).await {
            Ok(r) => r,
            Err(_) => Err(ReplicaError::Runtime(
                "driver thread ended without a result".into(),
            )),
        };
        self.join();
        result
    }

    /// Tells the driver to stop and waits for its thread (used by `Drop`).
    pub(crate) fn signal_stop(mut self) {
        let _ = self.stop_tx.send(true);
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("replica driver thread panicked");
            }
        }
    }
}

fn status_for(config: &ReplicaConfig, state: ReplicaState) -> ReplicaStatus {
    ReplicaStatus {
        node_id: config.node_id.clone(),
        role: Role::Replica,
        state,
        connected: false,
        primary_id: None,
        epoch: 0,
        highest_epoch_seen: 0,
        last: None,
        durable_lsn: None,
        commit_lsn: 0,
        applied_lsn: 0,
        primary_last_lsn: 0,
        lag_records: 0,
        sessions: 0,
        last_session_end: None,
    }
}

fn halted_shared(
    config: &ReplicaConfig,
    record: HaltRecord,
    commit_lsn: Lsn,
    applied_lsn: Lsn,
    highest_epoch: u64,
) -> Arc<Shared> {
    let mut status = status_for(config, ReplicaState::Halted(record.clone()));
    status.commit_lsn = commit_lsn;
    status.applied_lsn = applied_lsn;
    status.epoch = highest_epoch;
    status.highest_epoch_seen = highest_epoch;
    Arc::new(Shared {
        gate: RwLock::new(Some(record)),
        status: Mutex::new(status),
        stopped: watch::channel(None).0,
    })
}

/// The `local-corruption` halt of a log that ends (or would end, after a refused cut) at
/// `log_end`, below the persisted commit watermark (FM-X.6).
fn lost_records_halt(log_end: Lsn, commit_lsn: Lsn, epoch: u64, context: &str) -> HaltRecord {
    HaltRecord {
        reason: HaltReason::LocalCorruption,
        lsn: log_end + 1,
        epoch,
        expected: format!(
            "the log holds every record up to the persisted commit watermark {commit_lsn}"
        ),
        found: format!("the log ends at lsn {log_end}"),
        peer: "local".into(),
        at_unix_ms: now_unix_ms(),
        detail: format!(
            "acknowledged records lost: log ends at lsn {log_end}, commit watermark {commit_lsn} ({context}); \
             restore the records (resync), or accept their loss: walship-recover rewind DIR --to {log_end} --accept-data-loss, then walship-recover clear-halt DIR"
        ),
    }
}

/// Opens the node's state and WAL, replays committed records to the applier,
/// and starts the driver thread. Returns no driver for a halted replica.
pub(crate) fn start<S: Storage>(
    storage: S,
    config: ReplicaConfig,
    mut applier: Box<dyn Applier>,
) -> Result<(Arc<Shared>, Option<DriverHandle>), ReplicaError> {
    let span = tracing::info_span!("replica", node = %config.node_id);
    let _enter = span.enter();
    let node_dir = NodeDir::open(storage.clone(), &config.data_dir)?;
    let state_dir = node_dir.state_dir().to_path_buf();
    let mut commit_lsn = node_dir.commit_lsn()?;
    let epoch_history = node_dir.epochs()?;
    let highest_epoch = epoch_history
        .entries
        .iter()
        .map(|e| e.epoch)
        .max()
        .unwrap_or(0);
    let mut applied_lsn = applier.applied_lsn();

    if let StartMode::Halted(record) = start_mode(&storage, &state_dir)? {
        tracing::warn!(reason = %record.reason, lsn = record.lsn, epoch = record.epoch, "replica is halted: not opening the WAL, not connecting");
        return Ok((
            halted_shared(&config, record, commit_lsn, applied_lsn, highest_epoch),
            None,
        ));
    }
    // TLS files are checked before anything else starts.
    let material = config
        .tls
        .load()
        .map_err(walship_wire::EndpointError::from)?;

    // Discards every tmp-* directory: an install interrupted before its commit
    // point leaves the replica exactly in its previous state (FM-4.3, FM-X.8).
    let (snapshots, store_report) =
        SnapshotStore::open(storage.clone(), node_dir.snapshot_dir(), Limits::default())?;
    if !store_report.discarded_tmp.is_empty() {
        tracing::warn!(discarded = ?store_report.discarded_tmp, "discarded interrupted snapshot transfers");
    }
    // FM-X.6: a torn-tail cut that would leave the log below the watermark is refused
    // before anything is cut (the bytes stay for the operator) and halts below. A snapshot
    // at or above the watermark makes any cut harmless: the log then ends at its boundary
    // at least.
    let snapshot_lsn = snapshots.newest()?.map_or(0, |s| s.boundary.lsn);
    let open = walship_wal::OpenOptions::protecting_commit(commit_lsn, snapshot_lsn);
    let (mut wal, report) = match Wal::open_with(
        storage.clone(),
        node_dir.wal_dir(),
        config.wal,
        open,
    ) {
        Ok(x) => x,
        Err(WalError::CutRefused(r)) => {
            let record = lost_records_halt(r.log_end, commit_lsn, highest_epoch, &r.to_string());
            tracing::error!(refused = %r, "acknowledged records lost: the WAL's damaged tail would leave the log below the persisted commit watermark; halting, nothing was cut");
            write_halt(&storage, &state_dir, &record)?;
            return Ok((
                halted_shared(&config, record, commit_lsn, applied_lsn, highest_epoch),
                None,
            ));
        }
        Err(WalError::Corruption(report)) => {
            // FM-X.6: the replica refuses to start; the halt names where. Nothing is cut.
            let record = HaltRecord {
                reason: HaltReason::LocalCorruption,
                lsn: report.lsn.unwrap_or(0),
                epoch: highest_epoch,
                expected: report.expected.clone(),
                found: report.found.clone(),
                peer: "local".into(),
                at_unix_ms: now_unix_ms(),
                detail: report.to_string(),
            };
            tracing::error!(%report, "local WAL corruption at open: halting");
            write_halt(&storage, &state_dir, &record)?;
            return Ok((
                halted_shared(&config, record, commit_lsn, applied_lsn, highest_epoch),
                None,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if let OpenReport::TornTailCut {
        segment,
        offset,
        bytes_cut,
        last,
    } = &report
    {
        if last.lsn >= commit_lsn {
            tracing::warn!(segment = %segment.display(), offset, bytes_cut, lsn = last.lsn, commit_lsn,
                "cut a torn WAL tail at open, above the persisted commit watermark {commit_lsn}");
        } else {
            // Judged below, once an interrupted snapshot install is completed.
            tracing::warn!(segment = %segment.display(), offset, bytes_cut, lsn = last.lsn, commit_lsn,
                "cut a damaged WAL tail at open, at or below the persisted commit watermark {commit_lsn}");
        }
    }
    // FM-10.5: an install interrupted after its commit point is completed (the
    // WAL reset to the boundary) before anything reads the WAL; a snapshot and a
    // WAL that disagree are local corruption.
    let installed_boundary = match snapshots.recover(&mut wal) {
        Ok(RecoveryReport::NoSnapshot) => None,
        Ok(RecoveryReport::Consistent { boundary }) => Some(boundary),
        Ok(RecoveryReport::RolledForward {
            boundary,
            old_wal_last,
        }) => {
            tracing::warn!(
                lsn = boundary.lsn,
                epoch = boundary.epoch,
                old_last_lsn = old_wal_last.lsn,
                "completed a snapshot install interrupted after its commit point"
            );
            Some(boundary)
        }
        Err(e) if e.class() == FailureClass::LocalCorruption => {
            let record = HaltRecord {
                reason: HaltReason::LocalCorruption,
                lsn: wal.last().lsn,
                epoch: highest_epoch,
                expected: "the newest snapshot's boundary record in the WAL".into(),
                found: e.to_string(),
                peer: "local".into(),
                at_unix_ms: now_unix_ms(),
                detail: format!("snapshot store and WAL disagree at open: {e}"),
            };
            tracing::error!(error = %e, "snapshot store and WAL disagree at open: halting");
            write_halt(&storage, &state_dir, &record)?;
            return Ok((
                halted_shared(&config, record, commit_lsn, applied_lsn, highest_epoch),
                None,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // FM-X.6: `state/commit` is written only at or below the durable lsn (see
    // `commit_and_apply`), so a log (its last record or the snapshot boundary it was reset
    // to) ending below it lost synced records: typically a damaged last record that the WAL
    // scan cut as a torn tail. Halt; the records must be re-fetched (operator resync).
    let log_end = wal.last().lsn;
    if log_end < commit_lsn {
        let record = lost_records_halt(
            log_end,
            commit_lsn,
            highest_epoch,
            &format!("open report: {report:?}"),
        );
        tracing::error!(
            log_end,
            commit_lsn,
            ?report,
            "acknowledged records lost: the log ends below the persisted commit watermark; halting"
        );
        write_halt(&storage, &state_dir, &record)?;
        return Ok((
            halted_shared(&config, record, commit_lsn, applied_lsn, highest_epoch),
            None,
        ));
    }
    if let Some(b) = installed_boundary {
        // Snapshot content is committed by construction: a crash between an
        // install and its `state/commit` write must not leave the watermark below it.
        commit_lsn = commit_lsn.max(b.lsn);
        if applied_lsn < b.lsn {
            // The embedder is behind the installed snapshot (in-memory state, or a
            // crash between install and restore): restore it before replaying the WAL.
            let Some(sink) = applier.snapshot_sink() else {
                return Err(ReplicaError::Config(format!(
                    "the applier's applied lsn {applied_lsn} is below the installed snapshot's boundary {b} and it has no snapshot sink"
                )));
            };
            let snap = snapshots.newest()?.ok_or_else(|| {
                ReplicaError::Runtime("the recovered snapshot disappeared".into())
            })?;
            snapshots.restore(&snap, sink)?;
            applied_lsn = b.lsn;
            tracing::info!(
                lsn = b.lsn,
                epoch = b.epoch,
                "restored the applier from the installed snapshot"
            );
        }
    }
    let last = wal.last();
    let durable = wal.durable_lsn();
    let available = commit_lsn.min(durable);
    if applied_lsn > available {
        return Err(ReplicaError::ApplierAhead {
            applied_lsn,
            available_lsn: available,
        });
    }
    let mut core = ReplicaCore::new(
        CoreConfig {
            node_id: config.node_id.clone(),
            cluster_id: config.cluster_id.clone(),
            primary_name: config.primary_name.clone(),
            max_record_bytes: config.wal.max_record_bytes,
            backoff_initial_ms: config.backoff_initial_ms,
            backoff_max_ms: config.backoff_max_ms,
        },
        DurableState {
            last,
            commit_lsn,
            applied_lsn,
            epoch_history,
            halt: None,
        },
    );
    core.set_snapshot_install(applier.snapshot_sink().is_some());
    core.set_installed_boundary(installed_boundary);
    let shared = Arc::new(Shared {
        gate: RwLock::new(None),
        status: Mutex::new(status_for(&config, ReplicaState::Connecting)),
        stopped: watch::channel(None).0,
    });
    // Replaying committed records happens here, before open returns (FM-4.2).
    let (sync_tx, sync_rx) = mpsc::unbounded_channel();
    let mut driver = Driver {
        config,
        core,
        wal: SharedWal::new(wal),
        sync_in_flight: false,
        sync_tx,
        sync_rx,
        node_dir,
        state_dir,
        snapshots,
        install: None,
        applier,
        shared: Arc::clone(&shared),
        sync_pending: false,
        unsynced_bytes: 0,
        commit_pending: None,
        persisted_commit: commit_lsn,
        apply_pending: None,
        applied: applied_lsn,
        reconnect: None,
        halted: false,
        deferred_steps: 0,
        last_session_end: None,
        outbox: Vec::new(),
        sessions: 0,
        connected: false,
    };
    driver.feed(Event::Start)?;
    driver.flush_blocking()?;
    // The first connection is not the end of a session.
    driver.last_session_end = None;
    driver.publish_status();
    drop(_enter);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = oneshot::channel();
    let thread_span = span.clone();
    let thread = std::thread::Builder::new()
        .name(format!("walship-replica-{}", driver.config.node_id))
        .spawn(move || {
            // quinn's connection driver and the frame reader run on the runtime's worker;
            // the driver future runs here (block_on), so its blocking fdatasync and
            // state-file writes never stall packet processing.
            let result = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("walship-replica-io")
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(driver.run(material, stop_rx).instrument(thread_span)),
                Err(e) => Err(ReplicaError::Runtime(format!("tokio runtime: {e}"))),
            };
            let _ = done_tx.send(result);
        })
        .map_err(|e| ReplicaError::Runtime(format!("spawn driver thread: {e}")))?;
    Ok((
        shared,
        Some(DriverHandle {
            stop_tx,
            done_rx,
            thread: Some(thread),
        }),
    ))
}

/// The `tracing` target of the commit-path stage events (TRACE level, fields `stage` and
/// `lsn`), the replica's half of the primary's `walship::stage` events: nothing records them
/// unless a subscriber enables this target (the replication bench's `WALSHIP_BENCH_STAGES=1`).
const STAGE_TARGET: &str = "walship::stage";

/// What one received item is: a message, or the end of the session.
type Inbound = Result<Message, SessionEnd>;

/// Reads frames from the primary's stream into `tx` until the stream ends.
async fn read_loop(mut recv: quinn::RecvStream, tx: mpsc::Sender<Inbound>) {
    loop {
        let item = match read_frame(&mut recv, MAX_FRAME_BYTES).await {
            Ok(Some(msg)) => {
                if let Message::Records(b) = &msg {
                    tracing::trace!(
                        target: STAGE_TARGET,
                        stage = "replica_receive",
                        lsn = (b.first_lsn + u64::from(b.count)).saturating_sub(1)
                    );
                }
                Ok(msg)
            }
            Ok(None) => Err(SessionEnd::ConnectionLost {
                detail: "the primary finished the stream".into(),
            }),
            Err(FrameError::Truncated { received, expected }) => {
                Err(SessionEnd::FrameTruncated { received, expected })
            }
            Err(e) if e.is_session_end() => Err(SessionEnd::ConnectionLost {
                detail: e.to_string(),
            }),
            Err(e) => Err(SessionEnd::Malformed {
                detail: e.to_string(),
            }),
        };
        let end = item.is_err();
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}

/// The core's view of the shared WAL.
struct SharedLog<'a, S: Storage>(&'a SharedWal<S>);

impl<S: Storage> LocalLog for SharedLog<'_, S> {
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        self.0.with(|w| w.position_at(lsn))
    }
}

/// Result of a background group sync: the lsn made durable, or the fatal error.
type SyncResult = Result<Lsn, WalError>;

struct Driver<S: Storage> {
    config: ReplicaConfig,
    core: ReplicaCore,
    /// Appends go through `with` (short lock); group syncs run on a blocking
    /// thread outside the append lock, so receiving and appending continue
    /// while the previous records are fsynced.
    wal: Arc<SharedWal<S>>,
    sync_in_flight: bool,
    sync_tx: mpsc::UnboundedSender<SyncResult>,
    sync_rx: mpsc::UnboundedReceiver<SyncResult>,
    node_dir: NodeDir<S>,
    state_dir: PathBuf,
    /// `DIR/snapshots`.
    snapshots: SnapshotStore<S>,
    /// The snapshot being received (between `SnapshotBegin` and its end).
    install: Option<Install<S>>,
    applier: Box<dyn Applier>,
    shared: Arc<Shared>,
    sync_pending: bool,
    unsynced_bytes: usize,
    commit_pending: Option<Lsn>,
    persisted_commit: Lsn,
    apply_pending: Option<Lsn>,
    applied: Lsn,
    reconnect: Option<(u64, SessionEnd)>,
    halted: bool,
    deferred_steps: u32,
    last_session_end: Option<String>,
    outbox: Vec<Message>,
    sessions: u64,
    connected: bool,
}

impl<S: Storage> Driver<S> {
    /// Feeds one event to the core and performs the resulting actions.
    fn feed(&mut self, event: Event) -> Result<(), ReplicaError> {
        let actions = self
            .core
            .handle(event, now_unix_ms(), &mut SharedLog(&self.wal))?;
        self.perform(actions)
    }

    fn perform(&mut self, actions: Vec<Action>) -> Result<(), ReplicaError> {
        for action in actions {
            if self.halted {
                // The core emits nothing after a halt; nothing queued before it runs either.
                break;
            }
            match action {
                Action::Send(msg) => self.outbox.push(msg),
                Action::AppendVerified(batch) => {
                    let pos = self.wal.with(|w| w.append_verified_batch(&batch.bytes))?;
                    assert_eq!(
                        pos, batch.last,
                        "the WAL's last position after append must be the core's"
                    );
                    self.unsynced_bytes += batch.bytes.len();
                    tracing::trace!(
                        first_lsn = batch.first_lsn,
                        count = batch.count,
                        lsn = pos.lsn,
                        epoch = pos.epoch,
                        "appended verified batch"
                    );
                }
                Action::Sync => self.sync_pending = true,
                Action::PersistCommit(lsn) => self.commit_pending = Some(lsn),
                Action::PersistEpochs(history) => {
                    // Durable before anything of this primary is appended (fencing bound).
                    self.node_dir.set_epochs(&history)?;
                    tracing::info!(entries = ?history.entries, "persisted epoch history");
                }
                Action::Apply { up_to } => self.apply_pending = Some(up_to),
                Action::Halt(record) => self.halt(record)?,
                Action::SnapshotBegin(offer) => {
                    if let Some(old) = self.install.take() {
                        self.discard_install(old)?;
                    }
                    match self.snapshots.begin_install(&offer) {
                        Ok(install) => self.install = Some(install),
                        Err(e) => self.snapshot_failed(e)?,
                    }
                }
                Action::SnapshotChunk(chunk) => {
                    let Some(install) = self.install.as_mut() else {
                        return Err(ReplicaError::Runtime(
                            "snapshot chunk without an install in progress".into(),
                        ));
                    };
                    if let Err(e) = install.push_chunk(&chunk) {
                        let failed = self.install.take();
                        // The halt (if any) is durable before the partial snapshot goes.
                        let r = self.snapshot_failed(e);
                        let discarded = failed.map(|i| self.discard_install(i));
                        r?;
                        discarded.transpose()?;
                    }
                }
                Action::SnapshotFinish {
                    end,
                    primary_epochs,
                } => self.finish_snapshot(&end, &primary_epochs)?,
                Action::SnapshotAbort => {
                    if let Some(i) = self.install.take() {
                        tracing::info!(
                            lsn = i.header().boundary.lsn,
                            chunks = i.next_index(),
                            "session ended mid-transfer: partial snapshot discarded (FM-X.8)"
                        );
                        self.discard_install(i)?;
                    }
                }
                Action::Reconnect { after_ms, reason } => {
                    self.last_session_end = Some(reason.to_string());
                    self.reconnect = Some((after_ms, reason));
                }
            }
        }
        Ok(())
    }

    /// Discards a partial snapshot; a leftover `tmp-*` is removed by the next open anyway.
    /// A failed fsync while discarding poisons the snapshot store: that stops the node
    /// (never retried), like every failed fsync.
    fn discard_install(&mut self, install: Install<S>) -> Result<(), ReplicaError> {
        match install.abort() {
            Ok(()) => Ok(()),
            Err(e) if self.snapshots.is_poisoned() => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "could not discard a partial snapshot (the next open removes it)");
                Ok(())
            }
        }
    }

    /// A snapshot failure: halts through the core (invalid, boundary, local
    /// corruption) or stops the node (I/O, embedder: `NodeStop`).
    fn snapshot_failed(&mut self, e: SnapshotError) -> Result<(), ReplicaError> {
        match e.class() {
            FailureClass::NodeStop => Err(e.into()),
            class => {
                tracing::error!(error = %e, ?class, "snapshot rejected");
                self.feed(Event::SnapshotFailed {
                    class,
                    detail: e.to_string(),
                })
            }
        }
    }

    /// Completes a received snapshot: verify, boundary check, publish, WAL reset
    /// (`VerifiedSnapshot::commit`), commit watermark, restore into the applier.
    fn finish_snapshot(
        &mut self,
        end: &SnapshotEnd,
        primary_epochs: &EpochHistory,
    ) -> Result<(), ReplicaError> {
        let Some(install) = self.install.take() else {
            return Err(ReplicaError::Runtime(
                "snapshot end without an install in progress".into(),
            ));
        };
        // Removes the tmp directory itself on failure.
        let verified = match install.finish(end) {
            Ok(v) => v,
            Err(e) => return self.snapshot_failed(e),
        };
        // Nothing may be appending or syncing while the WAL is reset.
        let last = self.wal.last().lsn;
        if self.durable_lsn() < last {
            self.wal.wait_durable(last)?;
        }
        let local = self.core.epoch_history().clone();
        let committed = self.wal.with(|w| {
            verified.commit(
                w,
                Some(EpochCheck {
                    local: &local,
                    primary: primary_epochs,
                }),
            )
        });
        let outcome = match committed {
            Ok(o) => o,
            Err(e) => return self.snapshot_failed(e),
        };
        let boundary = outcome.installed.boundary;
        // Published and the WAL reset: persist the watermark before the restore, so
        // a crash here never leaves the commit below the snapshot (FM-10.5).
        let commit = self.persisted_commit.max(boundary.lsn);
        self.node_dir.set_commit_lsn(commit)?;
        self.persisted_commit = commit;
        // A watermark above the boundary stays pending: it is persisted as records arrive.
        self.apply_pending = None;
        let Some(sink) = self.applier.snapshot_sink() else {
            return Err(ReplicaError::Runtime(
                "snapshot installed but the applier has no snapshot sink".into(),
            ));
        };
        if let Err(e) = self.snapshots.restore(&outcome.installed, sink) {
            return self.snapshot_failed(e);
        }
        self.applied = boundary.lsn;
        tracing::info!(lsn = boundary.lsn, epoch = boundary.epoch, verdict = ?outcome.verdict,
            "snapshot installed and restored into the applier");
        self.feed(Event::SnapshotInstalled { boundary })
    }

    /// Performs a halt: read gate closed, halt file written and fsynced, then nothing more.
    fn halt(&mut self, record: HaltRecord) -> Result<(), ReplicaError> {
        tracing::error!(
            reason = %record.reason, lsn = record.lsn, epoch = record.epoch,
            expected = %record.expected, found = %record.found, peer = %record.peer,
            detail = %record.detail, "replication halted"
        );
        self.halted = true;
        {
            // Closing the gate first: a read in progress completes, later reads are refused.
            let mut gate = match self.shared.gate.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *gate = Some(record.clone());
            let storage = self.wal.with(|w| w.storage().clone());
            write_halt(&storage, &self.state_dir, &record)?;
        }
        self.apply_pending = None;
        self.commit_pending = None;
        self.outbox.clear();
        // Verified records appended before the failing batch stay; make them durable
        // so the directory is exactly what it was at the halt. A failure here is logged:
        // the halt is already durable; the poisoned WAL makes the shutdown report it.
        let last = self.wal.last().lsn;
        if self.durable_lsn() < last {
            if let Err(e) = self.wal.wait_durable(last) {
                tracing::error!(error = %e, "sync after halt failed");
            }
        }
        self.sync_pending = false;
        self.shared.update_status(|s| {
            s.state = ReplicaState::Halted(record.clone());
        });
        Ok(())
    }

    /// The deferred work of a step while streaming: start a background group
    /// sync (if one is requested and none runs), then the commit file and the applier.
    ///
    /// `busy`: more frames are already waiting. Then the commit file and the
    /// applier are deferred for up to [`MAX_DEFERRED_STEPS`] steps, so a catch-up
    /// pays WAL fdatasyncs only. Receipts are never deferred (they follow each sync).
    fn flush(&mut self, busy: bool) -> Result<(), ReplicaError> {
        if self.halted {
            return Ok(());
        }
        self.start_sync();
        if busy && self.deferred_steps < MAX_DEFERRED_STEPS {
            self.deferred_steps += 1;
            return Ok(());
        }
        self.commit_and_apply()
    }

    /// Like [`Driver::flush`] but synchronous and complete: everything appended is
    /// durable (receipt queued), the commit file written, the applier caught up.
    /// Used outside streaming: at open, when a session ends, at shutdown.
    fn flush_blocking(&mut self) -> Result<(), ReplicaError> {
        if self.halted {
            return Ok(());
        }
        let target = self.wal.last().lsn;
        if self.sync_pending || self.durable_lsn() < target {
            // Waits for a running background sync, then leads one for the rest.
            self.wal.wait_durable(target)?;
        }
        self.sync_pending = false;
        self.unsynced_bytes = 0;
        let lsn = self.durable_lsn();
        self.feed(Event::Durable { lsn })?;
        if self.halted {
            return Ok(());
        }
        self.commit_and_apply()
    }

    /// The WAL's durable lsn read under its lock. (`SharedWal::durable_lsn()`, the
    /// published value, once went backwards when `with` raced a group-commit leader —
    /// fixed, see `durable_lsn_never_decreases_under_concurrent_with_and_appends` in
    /// wal/tests/wal_group_commit.rs; the driver reads the exact value under the lock.)
    fn durable_lsn(&self) -> Lsn {
        self.wal.with(|w| w.durable_lsn())
    }

    /// Starts a group sync of everything appended so far on a blocking thread;
    /// its result arrives on `sync_rx` ([`Driver::sync_done`]).
    fn start_sync(&mut self) {
        if !self.sync_pending || self.sync_in_flight {
            return;
        }
        self.sync_pending = false;
        self.unsynced_bytes = 0;
        self.sync_in_flight = true;
        let wal = Arc::clone(&self.wal);
        let tx = self.sync_tx.clone();
        let target = wal.last().lsn;
        tokio::task::spawn_blocking(move || {
            let synced = wal.wait_durable(target).map(|()| target);
            if synced.is_ok() {
                tracing::trace!(target: STAGE_TARGET, stage = "replica_fsync", lsn = target);
            }
            let _ = tx.send(synced);
        });
    }

    /// A background sync finished: report durability to the core (receipt,
    /// apply). A sync error is fatal: the node stops, never retries (FM-X.4).
    fn sync_done(&mut self, result: SyncResult) -> Result<(), ReplicaError> {
        self.sync_in_flight = false;
        let lsn = result?;
        if self.halted {
            return Ok(());
        }
        self.feed(Event::Durable { lsn })
    }

    fn commit_and_apply(&mut self) -> Result<(), ReplicaError> {
        self.deferred_steps = 0;
        if let Some(c) = self.commit_pending {
            // `state/commit` never names a record this replica does not hold durably (the
            // primary's watermark may be ahead of a lagging replica): then a log ending below
            // it at open proves synced records were lost (FM-X.6). The rest stays pending
            // and is persisted as the durable lsn rises.
            let persist = c.min(self.durable_lsn());
            if persist > self.persisted_commit {
                self.node_dir.set_commit_lsn(persist)?;
                self.persisted_commit = persist;
            }
            if self.persisted_commit >= c {
                self.commit_pending = None;
            }
        }
        if let Some(up_to) = self.apply_pending.take() {
            self.apply_up_to(up_to)?;
        }
        Ok(())
    }

    fn apply_up_to(&mut self, up_to: Lsn) -> Result<(), ReplicaError> {
        assert!(
            up_to <= self.persisted_commit && up_to <= self.durable_lsn(),
            "apply up to {up_to} beyond the persisted commit {} or the durable lsn {}",
            self.persisted_commit,
            self.durable_lsn()
        );
        if up_to <= self.applied {
            return Ok(());
        }
        let mut reader = self.wal.reader(self.applied + 1)?;
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
            self.applier
                .apply(lsn, record.payload())
                .map_err(|source| ReplicaError::Apply { lsn, source })?;
            self.applied = lsn;
        }
        tracing::debug!(lsn = up_to, "applied");
        Ok(())
    }

    fn publish_status(&self) {
        let core = &self.core;
        let state = match core.phase() {
            Phase::Halted => match core.halt() {
                Some(h) => ReplicaState::Halted(h.clone()),
                None => ReplicaState::Stopped("halted".into()),
            },
            Phase::Idle | Phase::Disconnected => ReplicaState::Connecting,
            Phase::AwaitWelcome | Phase::Probing => ReplicaState::Handshaking,
            Phase::Streaming => ReplicaState::Streaming,
            Phase::ReceivingSnapshot => ReplicaState::ReceivingSnapshot,
        };
        let durable = self.durable_lsn();
        let primary = core.primary();
        let primary_last = core.primary_last_lsn();
        let status = ReplicaStatus {
            node_id: self.config.node_id.clone(),
            role: Role::Replica,
            state,
            connected: self.connected,
            primary_id: primary.map(|(id, _)| id.to_string()),
            epoch: primary.map_or(core.highest_epoch_seen(), |(_, e)| e),
            highest_epoch_seen: core.highest_epoch_seen(),
            last: Some(self.wal.last()),
            durable_lsn: Some(durable),
            commit_lsn: core.commit_lsn(),
            applied_lsn: self.applied,
            primary_last_lsn: primary_last,
            lag_records: primary_last.saturating_sub(durable),
            sessions: self.sessions,
            last_session_end: self.last_session_end.clone(),
        };
        self.shared.update_status(|s| *s = status);
    }

    fn stopped(&self, why: String) {
        self.shared.update_status(|s| {
            if !matches!(s.state, ReplicaState::Halted(_)) {
                s.state = ReplicaState::Stopped(why);
            }
            s.connected = false;
        });
    }

    /// The driver's life: connect, stream, reconnect, until stopped or halted.
    async fn run(
        mut self,
        material: walship_wire::TlsMaterial,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ReplicaError> {
        let result = self.run_inner(&material, &mut stop).await;
        match result {
            Ok(()) => {
                let last = if self.wal.with(|w| w.is_poisoned()) {
                    // A sync failed without stopping the node (after a halt, whose halt file
                    // is durable): a failed fsync is fatal all the same, never swallowed.
                    Err(ReplicaError::Wal(WalError::Poisoned))
                } else if self.halted {
                    Ok(())
                } else {
                    // Make appended records durable and finish deferred work on the way out.
                    self.flush_blocking()
                };
                self.publish_status();
                match last {
                    Ok(()) => {
                        self.stopped("shut down".into());
                        Ok(())
                    }
                    Err(e) => {
                        // A failed fsync is fatal (FM-X.4): the shutdown reports it, so the
                        // process exits non-zero instead of claiming a clean stop.
                        tracing::error!(error = %e, "final sync/apply at shutdown failed");
                        self.stopped(format!("final sync/apply at shutdown failed: {e}"));
                        Err(e)
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "replica stopped on a local error (not a halt)");
                self.publish_status();
                self.stopped(e.to_string());
                Err(e)
            }
        }
    }

    async fn run_inner(
        &mut self,
        material: &walship_wire::TlsMaterial,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ReplicaError> {
        let endpoint = walship_wire::endpoint::client_endpoint_with(
            self.config.bind_addr,
            material,
            &self.config.transport,
        )?;
        let result = self.sessions_loop(&endpoint, stop).await;
        endpoint.close(CloseCode::ShuttingDown.code(), b"replica stopping");
        // Let quinn send the CONNECTION_CLOSE before the runtime goes away, so the
        // primary learns at once instead of after its idle timeout.
        let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
        result
    }

    async fn sessions_loop(
        &mut self,
        endpoint: &quinn::Endpoint,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ReplicaError> {
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if self.halted {
                // Halted: stream nothing, apply nothing; wait for shutdown.
                let _ = stop.changed().await;
                return Ok(());
            }
            let Some((after_ms, reason)) = self.reconnect.take() else {
                return Err(ReplicaError::Runtime(
                    "driver has no session and no reconnect request".into(),
                ));
            };
            if after_ms > 0 {
                tracing::info!(after_ms, %reason, "session ended; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(after_ms)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            let addr = self.config.primary_addr;
            let name = self.config.primary_name.clone();
            let connected = tokio::select! {
                r = walship_wire::connect(endpoint, addr, &name) => r,
                _ = stop.changed() => return Ok(()),
            };
            let conn = match connected {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "connect to primary failed");
                    self.feed(Event::SessionEnded(SessionEnd::ConnectFailed {
                        detail: e.to_string(),
                    }))?;
                    self.flush_blocking()?;
                    self.publish_status();
                    continue;
                }
            };
            // The TLS handshake verified the name; the certificate must also name nothing else.
            if let Err(e) = walship_wire::peer_node_id(&conn, std::slice::from_ref(&name)) {
                tracing::warn!(error = %e, primary = %name, "primary's certificate does not name exactly the configured primary");
                CloseCode::ProtocolViolation.close(&conn, "not the configured primary");
                self.feed(Event::SessionEnded(SessionEnd::ConnectFailed {
                    detail: format!("peer certificate does not name exactly {name}: {e}"),
                }))?;
                continue;
            }
            self.session(&conn, stop).await?;
            if *stop.borrow() {
                CloseCode::ShuttingDown.close(&conn, "replica stopping");
                return Ok(());
            }
        }
    }

    /// One session on an open connection. Returns when it ended (a reconnect or
    /// a halt is then pending) or on stop; errors are node stops.
    async fn session(
        &mut self,
        conn: &quinn::Connection,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ReplicaError> {
        let (mut send, recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => {
                self.feed(Event::SessionEnded(SessionEnd::ConnectionLost {
                    detail: e.to_string(),
                }))?;
                self.flush_blocking()?;
                return Ok(());
            }
        };
        self.sessions += 1;
        self.connected = true;
        tracing::info!(peer = %self.config.primary_name, lsn = self.core.last().lsn, epoch = self.core.last().epoch, "session started");
        let (tx, mut rx) = mpsc::channel::<Inbound>(FRAME_QUEUE);
        let reader = tokio::spawn(read_loop(recv, tx));
        let mut writer = FrameWriter::default();
        self.feed(Event::SessionStarted)?;
        let span = tracing::info_span!(
            "session",
            n = self.sessions,
            primary = %self.config.primary_name,
            epoch = tracing::field::Empty
        );
        let result = self
            .session_steps(&mut send, &mut writer, &mut rx, stop, &span)
            .instrument(span.clone())
            .await;
        reader.abort();
        self.connected = false;
        let (code, why) = if let Err(e) = &result {
            (CloseCode::ShuttingDown, format!("node stopped: {e}"))
        } else if let Some(h) = self.core.halt().filter(|_| self.halted) {
            let why = format!("replica halted: {} at lsn {}", h.reason, h.lsn);
            (CloseCode::Halted, why)
        } else if let Some((_, reason)) = &self.reconnect {
            let code = match reason {
                SessionEnd::Malformed { .. } | SessionEnd::Protocol { .. } => {
                    CloseCode::ProtocolViolation
                }
                _ => CloseCode::Normal,
            };
            (code, reason.to_string())
        } else {
            (CloseCode::ShuttingDown, "replica stopping".to_string())
        };
        code.close(conn, &why);
        self.publish_status();
        result
    }

    async fn session_steps(
        &mut self,
        send: &mut quinn::SendStream,
        writer: &mut FrameWriter,
        rx: &mut mpsc::Receiver<Inbound>,
        stop: &mut watch::Receiver<bool>,
        span: &tracing::Span,
    ) -> Result<(), ReplicaError> {
        let mut streaming = false;
        loop {
            if !streaming && *self.core.phase() == Phase::Streaming {
                streaming = true;
                let epoch = self.core.primary().map_or(0, |(_, e)| e);
                span.record("epoch", epoch);
                tracing::info!(
                    lsn = self.core.last().lsn,
                    epoch,
                    commit_lsn = self.core.commit_lsn(),
                    "prefix proven: streaming"
                );
            }
            // Send what the core asked for (Hello, receipts, probes).
            if !self.halted && self.reconnect.is_none() {
                for msg in std::mem::take(&mut self.outbox) {
                    if let Err(e) = writer.write(send, &msg).await {
                        self.feed(Event::SessionEnded(SessionEnd::ConnectionLost {
                            detail: e.to_string(),
                        }))?;
                        break;
                    }
                    if let Message::Receipt { durable_lsn } = msg {
                        tracing::trace!(target: STAGE_TARGET, stage = "receipt_sent", lsn = durable_lsn);
                    }
                }
            }
            self.publish_status();
            if self.halted || self.reconnect.is_some() {
                self.flush_blocking()?;
                return Ok(());
            }
            enum Woke {
                Frame(Option<Inbound>),
                Synced(Option<SyncResult>),
                Stop,
            }
            let in_flight = self.sync_in_flight;
            let woke = tokio::select! {
                m = rx.recv() => Woke::Frame(m),
                r = self.sync_rx.recv(), if in_flight => Woke::Synced(r),
                _ = stop.changed() => Woke::Stop,
            };
            let first = match woke {
                Woke::Stop => return Ok(()),
                Woke::Synced(r) => {
                    let r = r.ok_or_else(|| {
                        ReplicaError::Runtime("sync result channel closed".into())
                    })?;
                    self.sync_done(r)?;
                    let busy = !rx.is_empty();
                    self.flush(busy)?;
                    continue;
                }
                Woke::Frame(m) => m,
            };
            let Some(first) = first else {
                self.feed(Event::SessionEnded(SessionEnd::ConnectionLost {
                    detail: "frame reader ended".into(),
                }))?;
                continue;
            };
            self.inbound(first)?;
            let mut handled = 1;
            while !self.halted
                && self.reconnect.is_none()
                && handled < MAX_FRAMES_PER_STEP
                && self.unsynced_bytes < self.config.sync_every_bytes
            {
                match rx.try_recv() {
                    Ok(item) => {
                        self.inbound(item)?;
                        handled += 1;
                    }
                    Err(_) => break,
                }
            }
            let busy = !self.halted && self.reconnect.is_none() && !rx.is_empty();
            self.flush(busy)?;
        }
    }

    fn inbound(&mut self, item: Inbound) -> Result<(), ReplicaError> {
        match item {
            Ok(msg) => self.feed(Event::Received(msg)),
            Err(end) => self.feed(Event::SessionEnded(end)),
        }
    }
}
