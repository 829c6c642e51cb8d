//! The tokio/quinn driver around [`PrimaryCore`].
//!
//! Threads and tasks:
//! - the **core thread** (a std thread) owns the event loop: it receives events from the
//!   connection tasks and the WAL's durable listener, feeds them to the core under the state
//!   lock (the core reads batches from the mmap'd WAL, so page faults of a catch-up never
//!   block the async runtime) and performs the actions: frames go to the connection's writer
//!   task, closes are logged with the node id, commit advances wake appenders through a
//!   `watch` channel and are handed to the persister;
//! - the **persister thread** writes `state/commit`, coalescing advances (the watermark file
//!   is a recovery hint; acknowledging an append does not wait for it, see
//!   `spec/protocol.md`, "Commit watermark"); a failed write stops the node
//!   ([`Shared::stop_node`]), like every other failed fsync;
//! - the **accept task** and one **connection task** per replica (quinn): mutual TLS already
//!   refused unknown CAs and unlisted names; the task reads frames from the bi stream the
//!   replica opened and forwards them to the core, and a writer task writes the core's frames.
//!   A malformed or oversized frame or a connection error closes THAT connection with a
//!   logged reason; nothing else is affected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tmpsc, watch};
use tracing::{debug, error, info, warn, Instrument};
use walship_snapshot::{SnapshotSender, SnapshotStore, TransferItem};
use walship_wal::state::NodeDir;
use walship_wal::{FsStorage, Lsn, Position, SharedWal, Storage};
use walship_wire::{
    encode_frame, read_frame, CloseCode, FrameError, FrameWriter, Message, MAX_FRAME_BYTES,
};

use super::PrimaryStop;
use walship_primary::core::{Action, CloseReason, ConnId, CoreStatus, Event, PrimaryCore};
use walship_primary::log::WalLog;

/// The storage a primary runs on: the real file system. With the `fault-injection`
/// feature it is wrapped so that tests and the demo can make its syncs fail
/// (`Primary::storage_faults`); without it nothing can.
#[cfg(not(feature = "fault-injection"))]
pub(crate) type NodeStorage = FsStorage;
/// The storage a primary runs on (see the non-`fault-injection` definition).
#[cfg(feature = "fault-injection")]
pub(crate) type NodeStorage = walship_wal::fault::FaultyStorage<FsStorage>;

/// A new [`NodeStorage`].
pub(crate) fn node_storage() -> NodeStorage {
    #[cfg(not(feature = "fault-injection"))]
    return FsStorage;
    #[cfg(feature = "fault-injection")]
    return walship_wal::fault::FaultyStorage::new(FsStorage);
}

/// Period of the core's Tick (re-evaluates windows; keeps status fresh).
const TICK: Duration = Duration::from_millis(100);
/// Minimum interval between two writes of `state/commit`.
const PERSIST_INTERVAL: Duration = Duration::from_millis(20);
/// How long a refused replica gets to read the `Refuse` frame before the connection closes.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// How long a connected replica may take to open its stream.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer coalesces queued frames into one write up to this size.
const WRITE_COALESCE_BYTES: usize = 1024 * 1024;

/// What the core thread receives.
pub(crate) enum CoreMsg {
    /// A connection passed TLS and opened its stream; frames for it go to `tx`.
    Register {
        conn: ConnId,
        node_id: String,
        tx: tmpsc::UnboundedSender<Outgoing>,
    },
    /// An event for the core.
    Event(Event),
    /// The WAL's durable lsn advanced.
    Durable,
    /// Stop the loop.
    Shutdown,
}

/// What a connection's writer task receives.
pub(crate) enum Outgoing {
    Frame(Message),
    /// Send the newest snapshot (offer, chunks, end) on this stream.
    Snapshot(Position),
    Close(CloseReason),
}

/// The core and the log it reads, under one lock (the core thread and `status()` take it).
pub(crate) struct CoreState {
    pub(crate) core: PrimaryCore,
    pub(crate) log: WalLog<NodeStorage>,
}

/// State shared by the embedding API and the driver.
pub(crate) struct Shared {
    pub(crate) node_id: String,
    pub(crate) members: Vec<String>,
    pub(crate) wal: Arc<SharedWal<NodeStorage>>,
    pub(crate) state: Mutex<CoreState>,
    pub(crate) core_tx: mpsc::Sender<CoreMsg>,
    pub(crate) commit_rx: watch::Receiver<Lsn>,
    pub(crate) shutting_down: AtomicBool,
    /// Appends between their shutdown check and the end of their WAL write.
    pub(crate) appends_in_flight: AtomicU64,
    pub(crate) next_conn: AtomicU64,
    pub(crate) started: Instant,
    /// `DIR/snapshots`.
    pub(crate) snapshots: SnapshotStore<NodeStorage>,
    /// Set once, when a fatal failure of this node's own storage stopped it (never cleared).
    pub(crate) stopped: watch::Sender<Option<PrimaryStop>>,
    /// Armed snapshot faults per replica (demo/test use only).
    #[cfg(feature = "fault-injection")]
    pub(crate) snapshot_faults: Mutex<HashMap<String, super::SnapshotFault>>,
}

impl Shared {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, CoreState> {
        // A panic under the lock is a broken invariant that already took its thread down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the node after a fatal failure of its own storage (a failed fsync, ENOSPC,
    /// any I/O error of the WAL, the commit watermark file or the snapshot store): appends
    /// fail with `PrimaryError::Stopped` from now on, the core thread ends (no more
    /// shipping or commit advances), and `Primary::wait_stopped` resolves. Nothing is
    /// retried; a restart recovers from what the disk holds. The first reason wins.
    pub(crate) fn stop_node(&self, reason: PrimaryStop) {
        let first = self.stopped.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            *s = Some(reason.clone());
            true
        });
        if first {
            error!(node = %self.node_id, %reason, "primary stopped: its own storage failed (never retried); restart it to recover from disk");
            self.shutting_down.store(true, Ordering::Release);
            // The core thread is gone only if the primary is shutting down anyway.
            let _ = self.core_tx.send(CoreMsg::Shutdown);
        }
    }

    /// Why the node stopped, if it did.
    pub(crate) fn stop_reason(&self) -> Option<PrimaryStop> {
        self.stopped.borrow().clone()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn status(&self) -> CoreStatus {
        let now = self.now_ms();
        let mut st = self.lock_state();
        let CoreState { core, log } = &mut *st;
        log.refresh();
        core.status(log, now)
    }
}

/// The `tracing` target of the commit-path stage events (TRACE level, fields `stage` and
/// `lsn`: the stage reached every lsn up to `lsn`). Nothing records them unless a subscriber
/// enables this target (the replication bench's `WALSHIP_BENCH_STAGES=1`); disabled, each
/// costs one level check. See BENCHMARKS.md, "Where the time goes".
pub(crate) const STAGE_TARGET: &str = "walship::stage";

/// Registers the WAL durable listener: it wakes the core thread, with at most one wake-up
/// queued (`pending` is cleared by the core thread when it takes the wake-up).
pub(crate) fn install_durable_listener(
    wal: &SharedWal<NodeStorage>,
    tx: mpsc::Sender<CoreMsg>,
    pending: Arc<AtomicBool>,
) {
    wal.set_durable_listener(Box::new(move |lsn| {
        tracing::trace!(target: STAGE_TARGET, stage = "primary_fsync", lsn);
        if !pending.swap(true, Ordering::AcqRel) {
            // The core thread is gone only during shutdown: nothing left to wake.
            let _ = tx.send(CoreMsg::Durable);
        }
    }));
}

/// The core thread's loop. Returns when told to shut down or when every sender is gone.
pub(crate) fn run_core(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<CoreMsg>,
    commit_tx: watch::Sender<Lsn>,
    persist_tx: mpsc::Sender<Lsn>,
    durable_pending: Arc<AtomicBool>,
) {
    let span = tracing::info_span!("primary_core", node = %shared.node_id);
    let _g = span.enter();
    let mut conns: HashMap<ConnId, (String, tmpsc::UnboundedSender<Outgoing>)> = HashMap::new();
    loop {
        let event = match rx.recv_timeout(TICK) {
            Ok(CoreMsg::Register { conn, node_id, tx }) => {
                info!(replica = %node_id, conn, "replica connected");
                conns.insert(conn, (node_id.clone(), tx));
                Event::Connected { conn, node_id }
            }
            Ok(CoreMsg::Event(e)) => e,
            Ok(CoreMsg::Durable) => {
                // Cleared before the durable lsn is read: a later advance queues a new wake-up.
                durable_pending.store(false, Ordering::Release);
                Event::LocalDurable
            }
            Ok(CoreMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => Event::Tick,
        };
        let disconnected = match &event {
            Event::Disconnected { conn } => Some(*conn),
            _ => None,
        };
        let actions = {
            let now = shared.now_ms();
            let mut st = shared.lock_state();
            let CoreState { core, log } = &mut *st;
            log.refresh();
            core.handle(event, log, now)
        };
        for action in actions {
            match action {
                Action::Send { conn, msg } => {
                    if let Some((_, tx)) = conns.get(&conn) {
                        // The writer is gone only if the connection already ended.
                        let _ = tx.send(Outgoing::Frame(msg));
                    }
                }
                Action::Close { conn, reason } => {
                    if let Some((node_id, tx)) = conns.remove(&conn) {
                        warn!(replica = %node_id, conn, %reason, "closing replica connection");
                        let _ = tx.send(Outgoing::Close(reason));
                    }
                }
                Action::SendSnapshot { conn, boundary } => {
                    if let Some((node_id, tx)) = conns.get(&conn) {
                        info!(replica = %node_id, conn, lsn = boundary.lsn, epoch = boundary.epoch, "sending snapshot");
                        let _ = tx.send(Outgoing::Snapshot(boundary));
                    }
                }
                Action::CommitAdvanced { commit_lsn } => {
                    debug!(commit_lsn, "commit advanced");
                    tracing::trace!(target: STAGE_TARGET, stage = "commit_advanced", lsn = commit_lsn);
                    commit_tx.send_if_modified(|c| {
                        let advanced = commit_lsn > *c;
                        *c = (*c).max(commit_lsn);
                        advanced
                    });
                    let _ = persist_tx.send(commit_lsn);
                }
            }
        }
        if let Some(conn) = disconnected {
            if let Some((node_id, _)) = conns.remove(&conn) {
                info!(replica = %node_id, conn, "replica disconnected");
            }
        }
    }
    // Dropping the writers' senders ends their tasks; the endpoint close ends the connections.
    debug!("core thread stopped");
}

/// The persister's loop: writes the newest commit watermark, at most every PERSIST_INTERVAL.
/// Ends when the core thread (the only sender) is gone, after writing the last value, or
/// after the first failed write: `state/commit` is written, fsynced, renamed and its
/// directory fsynced, and a failed fsync is fatal, never retried (the page cache may have
/// dropped what it was to write, so a later write could falsely succeed). `on_fatal`
/// then stops the node.
pub(crate) fn run_persister<S: Storage>(
    node_dir: NodeDir<S>,
    rx: mpsc::Receiver<Lsn>,
    node_id: String,
    on_fatal: impl FnOnce(PrimaryStop),
) {
    let span = tracing::info_span!("primary_persist", node = %node_id);
    let _g = span.enter();
    let mut written: Lsn = 0;
    while let Ok(mut lsn) = rx.recv() {
        std::thread::sleep(PERSIST_INTERVAL);
        while let Ok(l) = rx.try_recv() {
            lsn = lsn.max(l);
        }
        if lsn <= written {
            continue;
        }
        match node_dir.set_commit_lsn(lsn) {
            Ok(()) => written = lsn,
            Err(e) => {
                error!(commit_lsn = lsn, error = %e, "cannot persist the commit watermark: the node stops");
                on_fatal(PrimaryStop::CommitWatermark {
                    commit_lsn: lsn,
                    error: e.to_string(),
                });
                return;
            }
        }
    }
}

/// Accepts replica connections until the endpoint closes.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.shutting_down.load(Ordering::Acquire) {
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    // Certificates from another CA and names outside the member list end here.
                    warn!(%remote, error = %e, "replica connection refused during the mutual-TLS handshake");
                    return;
                }
            };
            let node_id = match walship_wire::peer_node_id(&conn, &shared.members) {
                Ok(node_id) => node_id,
                Err(e) => {
                    // The handshake applied the same rule: only a broken TLS setup gets here.
                    warn!(%remote, error = %e, "peer certificate does not name exactly one member: closing");
                    CloseCode::Refused.close(&conn, "not a member");
                    return;
                }
            };
            let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("replica_conn", replica = %node_id, conn = id, %remote);
            serve_connection(conn, id, node_id, shared)
                .instrument(span)
                .await;
        });
    }
    debug!("accept loop ended");
}

async fn serve_connection(
    conn: quinn::Connection,
    id: ConnId,
    node_id: String,
    shared: Arc<Shared>,
) {
    let (send, mut recv) = match tokio::time::timeout(STREAM_OPEN_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!(error = %e, "connection ended before the replica opened its stream");
            return;
        }
        Err(_) => {
            warn!("replica opened no stream in time: closing");
            CloseCode::ProtocolViolation.close(&conn, "no stream opened");
            return;
        }
    };
    let (tx, rx) = tmpsc::unbounded_channel();
    if shared
        .core_tx
        .send(CoreMsg::Register {
            conn: id,
            node_id: node_id.clone(),
            tx,
        })
        .is_err()
    {
        CloseCode::ShuttingDown.close(&conn, "primary shutting down");
        return;
    }
    let writer = tokio::spawn(
        write_frames(conn.clone(), send, rx, shared.clone(), node_id.clone())
            .instrument(tracing::Span::current()),
    );
    loop {
        match read_frame(&mut recv, MAX_FRAME_BYTES).await {
            Ok(Some(msg)) => {
                if let Message::Receipt { durable_lsn } = &msg {
                    tracing::trace!(target: STAGE_TARGET, stage = "receipt_received", lsn = *durable_lsn);
                }
                let event = Event::Received { conn: id, msg };
                if shared.core_tx.send(CoreMsg::Event(event)).is_err() {
                    break;
                }
            }
            Ok(None) => {
                info!("replica finished its stream");
                break;
            }
            Err(e) if e.is_session_end() => {
                info!(error = %e, "replica session ended");
                break;
            }
            Err(FrameError::UnsupportedVersion { theirs }) => {
                // The core answers Refuse{UnsupportedVersion} (spec/protocol.md §7); the
                // writer sends it and closes with Refused. Nothing more is read.
                warn!(replica = %node_id, theirs, "replica speaks another protocol version");
                let event = Event::HelloOfOtherVersion {
                    conn: id,
                    protocol_version: theirs,
                };
                let _ = shared.core_tx.send(CoreMsg::Event(event));
                break;
            }
            Err(e) => {
                warn!(replica = %node_id, error = %e, "closing replica connection: bad frame");
                CloseCode::ProtocolViolation.close(&conn, &e.to_string());
                break;
            }
        }
    }
    let _ = shared
        .core_tx
        .send(CoreMsg::Event(Event::Disconnected { conn: id }));
    // The core drops the writer's sender on Disconnected; the writer then ends.
    let _ = writer.await;
    CloseCode::Normal.close(&conn, "session over");
}

/// Writes the core's frames: small messages queued together are coalesced into one stream
/// write; `Records` go out through the wire's zero-copy path.
async fn write_frames(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut rx: tmpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
    node_id: String,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut writer = FrameWriter::default();
    let mut close = None;
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(Message::Records(b)) => {
                    if !buf.is_empty() {
                        if let Err(e) = send.write_all(&buf).await {
                            debug!(error = %e, "stream write failed: the session ended");
                            return;
                        }
                        buf.clear();
                    }
                    let written = writer
                        .write_records(&mut send, b.first_lsn, b.count, &b.bytes, b.commit_lsn)
                        .await;
                    if let Err(e) = written {
                        debug!(error = %e, "stream write failed: the session ended");
                        return;
                    }
                    tracing::trace!(
                        target: STAGE_TARGET,
                        stage = "frame_sent",
                        lsn = (b.first_lsn + u64::from(b.count)).saturating_sub(1)
                    );
                }
                Outgoing::Frame(msg) => {
                    if let Err(e) = encode_frame(&msg, &mut buf) {
                        // Only a broken invariant gets here (small messages always encode).
                        error!(error = %e, kind = msg.kind(), "cannot encode a frame: closing");
                        close = Some(CloseReason::LogRead {
                            lsn: 0,
                            error: e.to_string(),
                        });
                        break;
                    }
                }
                Outgoing::Snapshot(boundary) => {
                    if !buf.is_empty() {
                        if let Err(e) = send.write_all(&buf).await {
                            debug!(error = %e, "stream write failed: the session ended");
                            return;
                        }
                        buf.clear();
                    }
                    match send_snapshot(&shared, &node_id, boundary, &mut send, &mut buf).await {
                        Ok(()) => buf.clear(),
                        Err(SendSnapshotError::SessionEnded) => return,
                        Err(SendSnapshotError::Close(reason)) => {
                            buf.clear();
                            close = Some(reason);
                            break;
                        }
                    }
                }
                Outgoing::Close(reason) => {
                    close = Some(reason);
                    break;
                }
            }
            if buf.len() < WRITE_COALESCE_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if let Err(e) = send.write_all(&buf).await {
                debug!(error = %e, "stream write failed: the session ended");
                return;
            }
        }
        if let Some(reason) = close.take() {
            let code = match reason {
                CloseReason::Refused(_) => CloseCode::Refused,
                CloseReason::UnexpectedMessage { .. }
                | CloseReason::ReceiptBeyondShipped { .. } => CloseCode::ProtocolViolation,
                // Not the replica's fault: the session ends, the replica reconnects.
                CloseReason::Superseded { .. }
                | CloseReason::LogRead { .. }
                | CloseReason::NotRetained { .. } => CloseCode::Normal,
            };
            if code == CloseCode::Refused {
                // Let the replica read the Refuse frame before the connection goes.
                let _ = send.finish();
                let _ = tokio::time::timeout(REFUSE_LINGER, send.stopped()).await;
            }
            code.close(&conn, &reason.to_string());
            return;
        }
    }
    let _ = send.finish();
}

/// Why a snapshot transfer stopped early.
enum SendSnapshotError {
    /// The stream or connection is gone.
    SessionEnded,
    /// The snapshot cannot be sent (missing, or damaged on this primary's disk): close.
    Close(CloseReason),
}

/// Sends the newest snapshot as offer, chunks, end on `send`. Each frame is written
/// (and so flow-controlled by QUIC on this replica's own connection) before the next
/// chunk is read, so a transfer holds one chunk in memory and never delays the other
/// replicas' writer tasks. Every chunk is re-verified from the stored file before it
/// is sent: a damaged chunk is local corruption here and is never shipped. The file
/// reads and checksums run on tokio's blocking threads, one step at a time, never on
/// a runtime worker.
async fn send_snapshot(
    shared: &Arc<Shared>,
    node_id: &str,
    boundary: Position,
    send: &mut quinn::SendStream,
    buf: &mut Vec<u8>,
) -> Result<(), SendSnapshotError> {
    let fail = |what: String| {
        error!(replica = %node_id, lsn = boundary.lsn, error = %what, "cannot send the snapshot: closing the connection");
        SendSnapshotError::Close(CloseReason::LogRead {
            lsn: boundary.lsn,
            error: what,
        })
    };
    let snapshots = shared.snapshots.clone();
    let opened = off_worker(move || {
        let snap = match snapshots.newest() {
            Ok(Some(s)) if s.boundary.lsn >= boundary.lsn => s,
            Ok(_) => return Err(format!("snapshot at lsn {} is gone", boundary.lsn)),
            Err(e) => return Err(e.to_string()),
        };
        let reader = snapshots.reader(&snap).map_err(|e| e.to_string())?;
        Ok((snap, SnapshotSender::new(reader)))
    })
    .await?;
    let (snap, mut sender) = opened.map_err(fail)?;
    #[cfg(feature = "fault-injection")]
    let fault = shared
        .snapshot_faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(node_id);
    let started = Instant::now();
    let mut sent_bytes = 0u64;
    loop {
        let (back, item) = off_worker(move || {
            let item = sender.next();
            (sender, item)
        })
        .await?;
        sender = back;
        let Some(item) = item else { break };
        let msg = match item {
            Ok(TransferItem::Offer(o)) => Message::SnapshotOffer(o),
            Ok(TransferItem::Chunk(c)) => {
                sent_bytes += c.bytes.len() as u64;
                #[cfg(feature = "fault-injection")]
                let c = match fault {
                    Some(super::SnapshotFault::CorruptChunk { index }) if c.index == index => {
                        warn!(replica = %node_id, index, "fault injection: corrupting a shipped snapshot chunk");
                        let mut c = c;
                        if let Some(b) = c.bytes.first_mut() {
                            *b ^= 0xFF;
                        }
                        c
                    }
                    Some(super::SnapshotFault::CloseAfterChunk { index }) if c.index > index => {
                        warn!(replica = %node_id, index, "fault injection: dropping the connection mid-transfer");
                        return Err(SendSnapshotError::Close(CloseReason::LogRead {
                            lsn: boundary.lsn,
                            error: "fault injection: connection dropped mid-transfer".into(),
                        }));
                    }
                    _ => c,
                };
                Message::SnapshotChunk(c)
            }
            Ok(TransferItem::End(e)) => Message::SnapshotEnd(e),
            Err(e) => {
                return Err(fail(format!(
                    "snapshot chunk damaged on this primary's disk (local corruption): {e}"
                )))
            }
        };
        buf.clear();
        if let Err(e) = encode_frame(&msg, buf) {
            return Err(fail(format!("cannot encode a {} frame: {e}", msg.kind())));
        }
        if let Err(e) = send.write_all(buf).await {
            debug!(error = %e, "stream write failed during a snapshot transfer: the session ended");
            return Err(SendSnapshotError::SessionEnded);
        }
    }
    info!(replica = %node_id, lsn = snap.boundary.lsn, epoch = snap.boundary.epoch, bytes = sent_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64, "snapshot sent");
    Ok(())
}

/// Runs `f` (snapshot file reads) on tokio's blocking threads. A panic there is re-raised
/// here, as if `f` had run in this task; a task cancelled by the runtime shutting down ends
/// the session.
async fn off_worker<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, SendSnapshotError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            debug!(error = %e, "snapshot read task cancelled: the session ended");
            Err(SendSnapshotError::SessionEnded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::sim::{SimCounters, SimStorage};

    /// FM-X.5: `state/commit` is written, fsynced, renamed and `state/` fsynced; when that
    /// fsync fails the persister stops the node and never writes again — a retry could
    /// falsely succeed after the page cache dropped what the failed fsync was to write.
    #[test]
    fn fm_x_5_failed_fsync_of_the_commit_watermark_stops_the_node_and_is_never_retried() {
        let sim = SimStorage::new(7);
        let node_dir = NodeDir::open(sim.clone(), std::path::Path::new("/p")).expect("node dir");
        node_dir.set_commit_lsn(3).expect("a first watermark");
        // One failure only: a retry would succeed, so only not retrying passes.
        sim.fail_next_sync(node_dir.state_dir()).expect("arm");
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<(PrimaryStop, SimCounters)>();
        tx.send(5).expect("send");
        let persister = {
            let sim = sim.clone();
            std::thread::spawn(move || {
                run_persister(node_dir, rx, "p".into(), move |reason| {
                    let _ = stop_tx.send((reason, sim.counters()));
                })
            })
        };
        let (reason, at_stop) = stop_rx.recv().expect("the failure stops the node");
        assert!(
            matches!(reason, PrimaryStop::CommitWatermark { commit_lsn: 5, .. }),
            "{reason:?}"
        );
        assert_eq!(at_stop.failed_syncs, 1);
        // Newer watermarks keep coming from the core.
        let _ = tx.send(6);
        let _ = tx.send(7);
        drop(tx);
        persister.join().expect("persister thread");
        assert_eq!(
            sim.counters(),
            at_stop,
            "nothing written or synced after the failed fsync"
        );
    }
}
