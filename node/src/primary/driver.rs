//! The tokio/quinn glue around the primary executor ([`super::exec`]): it only moves
//! bytes and time; every decision is the executor's.
//!
//! Threads and tasks:
//! - the **executor thread** (one std thread, the blocking thread) runs [`PrimaryExec`]:
//!   it blocks for the first input or the executor's next deadline, drains every queued
//!   input (appends, frames, connection events), lets the executor write the appends and
//!   fdatasync once (group commit, inline), fire its timers (tick, persist of
//!   `state/commit`, commit timeouts), and delivers the outputs: frames to the connection's
//!   writer task, results to the appenders' oneshots. The core reads batches from the mmap'd
//!   WAL there, so page faults of a catch-up never block the async runtime;
//! - the **accept task** and one **connection task** per replica (quinn): mutual TLS already
//!   refused unknown CAs and unlisted names; the task reads frames from the bi stream the
//!   replica opened and forwards them to the executor, and a writer task writes its frames.
//!   A malformed or oversized frame or a connection error closes THAT connection with a
//!   logged reason; nothing else is affected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tmpsc, oneshot, watch};
use tracing::{debug, error, info, warn, Instrument};
use walship_primary::core::{CloseReason, ConnId, CoreStatus, Event};
use walship_snapshot::{SnapshotStore, TransferItem};
use walship_wal::{FsStorage, Lsn, Position, SharedWal};
use walship_wire::{
    encode_frame, read_frame, CloseCode, FrameError, FrameWriter, Message, MAX_FRAME_BYTES,
};

use super::exec::{Output, PrimaryExec};
use super::{PrimaryError, PrimaryStop};

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

/// How long a refused replica gets to read the `Refuse` frame before the connection closes.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// How long a connected replica may take to open its stream.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer coalesces queued frames into one write up to this size.
const WRITE_COALESCE_BYTES: usize = 1024 * 1024;

/// The waiter token of one append in production: the executor answers it once.
pub(crate) type Token = oneshot::Sender<Result<Lsn, PrimaryError>>;
/// The executor as production runs it.
pub(crate) type NodeExec = PrimaryExec<NodeStorage, Token>;

/// What the executor thread receives.
pub(crate) enum Input {
    /// `Primary::append`: a payload and its waiter.
    Append { payload: Vec<u8>, tx: Token },
    /// `Primary::propose_configuration`: a configuration record and its waiter.
    Propose {
        config: walship_wal::control::Configuration,
        tx: Token,
    },
    /// A connection passed TLS and opened its stream; frames for it go to `tx`.
    Register {
        conn: ConnId,
        node_id: String,
        tx: tmpsc::UnboundedSender<Outgoing>,
    },
    /// A frame, a frame of another protocol version, or the end of a connection.
    Event(Event),
    /// Deliver what another thread made the executor emit (a stop by maintenance).
    Wake,
    /// Shut down: persist the final watermark, fail what waits, end the thread.
    Shutdown,
}

/// What a connection's writer task receives.
pub(crate) enum Outgoing {
    Frame(Message),
    /// Send the newest snapshot (offer, chunks, end) on this stream.
    Snapshot(Position),
    Close(CloseReason),
}

/// State shared by the embedding API, the executor thread and the connection tasks.
pub(crate) struct Shared {
    pub(crate) node_id: String,
    pub(crate) members: Vec<String>,
    pub(crate) wal: Arc<SharedWal<NodeStorage>>,
    /// The executor; the executor thread holds it while it handles a batch of inputs
    /// (`status()`, fault injection and maintenance take it briefly).
    pub(crate) exec: Mutex<NodeExec>,
    pub(crate) tx: mpsc::Sender<Input>,
    /// The commit watermark the executor announced.
    pub(crate) commit_lsn: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
    /// Set to `true` when the primary stops: every session's reader ends and closes its
    /// connection (needed when the endpoint belongs to a `Node` and stays open).
    pub(crate) closing: watch::Sender<bool>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) started: Instant,
    /// `DIR/snapshots`.
    pub(crate) snapshots: SnapshotStore<NodeStorage>,
    /// The node's fsync/commit histograms and snapshot counter, if it has any.
    pub(crate) metrics: Option<crate::metrics::RoleMetrics>,
    /// Set once, when a fatal failure of this node's own storage stopped it (never cleared).
    pub(crate) stopped: watch::Sender<Option<PrimaryStop>>,
    /// Armed snapshot faults per replica (demo/test use only).
    #[cfg(feature = "fault-injection")]
    pub(crate) snapshot_faults: Mutex<HashMap<String, super::SnapshotFault>>,
}

impl Shared {
    pub(crate) fn lock_exec(&self) -> MutexGuard<'_, NodeExec> {
        // A panic under the lock is a broken invariant that already took its thread down.
        self.exec.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the node after a fatal failure of its own storage found outside the executor
    /// thread (snapshot maintenance): the executor fails every pending append and refuses
    /// later ones; its thread then delivers that and ends.
    pub(crate) fn stop_node(&self, reason: PrimaryStop) {
        let now = {
            let mut ex = self.lock_exec();
            ex.stop(reason);
            ex.stopped().cloned()
        };
        if let Some(reason) = now {
            self.publish_stop(reason);
        }
        // The thread is gone only if the primary is shutting down anyway.
        let _ = self.tx.send(Input::Wake);
    }

    /// Makes a stop visible to the embedder (`stopped`, `wait_stopped`). The first wins.
    fn publish_stop(&self, reason: PrimaryStop) {
        self.stopped.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            *s = Some(reason);
            true
        });
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Why the node stopped, if it did.
    pub(crate) fn stop_reason(&self) -> Option<PrimaryStop> {
        self.stopped.borrow().clone()
    }

    /// Why an append cannot be handed to the executor any more.
    pub(crate) fn gone_error(&self) -> PrimaryError {
        match self.stop_reason() {
            Some(reason) => PrimaryError::Stopped(reason),
            None => PrimaryError::ShuttingDown,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn status(&self) -> CoreStatus {
        let now = self.now_ms();
        self.lock_exec().status(now)
    }
}

/// The `tracing` target of the commit-path stage events (TRACE level, fields `stage` and
/// `lsn`: the stage reached every lsn up to `lsn`). Nothing records them unless a subscriber
/// enables this target (the replication bench's `WALSHIP_BENCH_STAGES=1`); disabled, each
/// costs one level check. See BENCHMARKS.md, "Where the time goes".
pub(crate) const STAGE_TARGET: &str = "walship::stage";

/// The executor thread: blocks for the first input (or the executor's next deadline),
/// drains every input already queued (appends are written in one batch, not synced), syncs
/// once if anything was written — that is the group commit: one fdatasync per round, no
/// thread hop per record — delivers what the round released (frames to the connections'
/// writer tasks, results to the appenders), fires due timers, then delivers the rest.
/// Ends on shutdown, when every sender is gone, or once the node stopped.
pub(crate) fn run_exec(shared: Arc<Shared>, rx: mpsc::Receiver<Input>) {
    let span = tracing::info_span!("primary_exec", node = %shared.node_id);
    let _g = span.enter();
    let mut conns: HashMap<ConnId, (String, tmpsc::UnboundedSender<Outgoing>)> = HashMap::new();
    let mut inputs: Vec<Input> = Vec::new();
    let mut appends: Vec<(Vec<u8>, Token)> = Vec::new();
    let mut outputs: Vec<Output<Token>> = Vec::new();
    let mut disconnected: Vec<ConnId> = Vec::new();
    // Appenders woken (acked) since the last round that wrote, and the last sync's length:
    // the next round gathers their appends (see `gather`).
    let mut woken: usize = 0;
    let mut last_sync = Duration::ZERO;
    let mut done = false;
    // Set once a delivered output said the node stopped (ends the loop like a shutdown).
    let mut stopped = false;
    loop {
        let deadline = {
            let mut ex = shared.lock_exec();
            outputs.extend(std::iter::from_fn(|| ex.poll_output()));
            if let Some(reason) = ex.stopped() {
                // Visible before any appender is woken with the failure.
                shared.publish_stop(reason.clone());
            }
            ex.next_deadline()
        };
        woken += count_acks(&outputs);
        for o in outputs.drain(..) {
            stopped |= deliver(&shared, &mut conns, o);
        }
        done |= stopped;
        // A connection's writer is dropped only after the outputs of the round that saw it
        // close were delivered: a Refuse answered to its last frame still goes out.
        for conn in disconnected.drain(..) {
            conns.remove(&conn);
        }
        if done {
            break;
        }
        let first = match deadline {
            Some(at) => {
                let wait = at.saturating_sub(shared.now_ms());
                match rx.recv_timeout(Duration::from_millis(wait)) {
                    Ok(i) => Some(i),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Input::Shutdown),
                }
            }
            None => Some(rx.recv().unwrap_or(Input::Shutdown)),
        };
        inputs.extend(first);
        inputs.extend(std::iter::from_fn(|| rx.try_recv().ok()));
        gather(&rx, &mut inputs, &mut woken, last_sync);
        let mut ex = shared.lock_exec();
        let now = shared.now_ms();
        for input in inputs.drain(..) {
            match input {
                Input::Append { payload, tx } => appends.push((payload, tx)),
                Input::Propose { config, tx } => {
                    // Appends queued before it are written first (lsn order = arrival order).
                    if !appends.is_empty() {
                        ex.append(std::mem::take(&mut appends), now);
                    }
                    // A refusal fails the token (the proposer reads it there).
                    let _ = ex.propose_configuration(config, tx, now);
                }
                Input::Register { conn, node_id, tx } => {
                    conns.insert(conn, (node_id.clone(), tx));
                    ex.on_connected(conn, node_id, now);
                }
                Input::Event(Event::Received { conn, msg }) => {
                    if let Message::Receipt { durable_lsn } = &msg {
                        tracing::trace!(target: STAGE_TARGET, stage = "receipt_exec", lsn = *durable_lsn);
                    }
                    ex.on_frame(conn, msg, now)
                }
                Input::Event(Event::HelloOfOtherVersion {
                    conn,
                    protocol_version,
                }) => ex.on_hello_of_other_version(conn, protocol_version, now),
                Input::Event(Event::Disconnected { conn }) => {
                    ex.on_closed(conn, now);
                    if let Some((node_id, _)) = conns.get(&conn) {
                        info!(replica = %node_id, conn, "replica disconnected");
                    }
                    disconnected.push(conn);
                }
                // The executor makes its own durable and tick events.
                Input::Event(_) | Input::Wake => {}
                Input::Shutdown => done = true,
            }
        }
        if !appends.is_empty() {
            ex.append(std::mem::take(&mut appends), now);
        }
        if ex.sync_needed() {
            // One histogram observe per group sync (an atomic add), never per record.
            let syncing = Instant::now();
            ex.sync(now);
            last_sync = syncing.elapsed();
            if let Some(m) = &shared.metrics {
                m.fsync_seconds.observe(last_sync.as_secs_f64());
            }
        }
        // What this round released (the frames of the records the sync made durable, the
        // acks of the commits that sync or a receipt advanced) goes out now, before the
        // timers: a due write of `state/commit` (two fsyncs and a rename) must not hold back
        // the commit path. Safe: the executor announced the watermark with these outputs;
        // the persisted watermark only ever lags it.
        outputs.extend(std::iter::from_fn(|| ex.poll_output()));
        if !outputs.is_empty() {
            if let Some(reason) = ex.stopped() {
                shared.publish_stop(reason.clone());
            }
            drop(ex);
            woken += count_acks(&outputs);
            for o in outputs.drain(..) {
                stopped |= deliver(&shared, &mut conns, o);
            }
            ex = shared.lock_exec();
        }
        ex.on_timer(shared.now_ms());
        if done {
            ex.shutdown(shared.now_ms());
        }
    }
    // Dropping the writers' senders ends their tasks; the endpoint close ends the connections.
    debug!("executor thread stopped");
}

/// The longest the executor thread waits, before a group sync, for appends of writers it
/// just woke.
const GATHER_CAP_MAX: Duration = Duration::from_micros(200);

/// How many appenders these outputs wake.
fn count_acks(outputs: &[Output<Token>]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Ack { .. }))
        .count()
}

/// Group-commit gathering (the same rule as `SharedWal`'s): the acks delivered since the
/// last round that wrote woke `woken` appenders, which in a busy primary append again at
/// once, one channel message each. When this round's inputs hold some of those appends
/// but not all, the thread waits for the rest (or any other input) for at most a quarter
/// of the last sync, capped at [`GATHER_CAP_MAX`], so one fdatasync covers them all
/// instead of two. Rounds without appends, and a lone writer (its one append is here),
/// never wait. Only the batching changes: what is synced, shipped and acknowledged is
/// decided by the executor as before.
fn gather(
    rx: &mpsc::Receiver<Input>,
    inputs: &mut Vec<Input>,
    woken: &mut usize,
    last_sync: Duration,
) {
    let appends = |inputs: &[Input]| {
        inputs
            .iter()
            .filter(|i| matches!(i, Input::Append { .. }))
            .count()
    };
    let mut got = appends(inputs);
    if got == 0 {
        return;
    }
    let expected = std::mem::take(woken);
    let until = Instant::now() + (last_sync / 4).min(GATHER_CAP_MAX);
    while got < expected {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match rx.recv_timeout(left) {
            Ok(input) => {
                inputs.push(input);
                inputs.extend(std::iter::from_fn(|| rx.try_recv().ok()));
                got = appends(inputs);
            }
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                inputs.push(Input::Shutdown);
                return;
            }
        }
    }
}

/// Performs one output of the executor. Returns true once the node stopped.
fn deliver(
    shared: &Shared,
    conns: &mut HashMap<ConnId, (String, tmpsc::UnboundedSender<Outgoing>)>,
    output: Output<Token>,
) -> bool {
    match output {
        Output::Send { conn, msg } => {
            if let Some((_, tx)) = conns.get(&conn) {
                // The writer is gone only if the connection already ended.
                let _ = tx.send(Outgoing::Frame(msg));
            }
        }
        Output::Close { conn, reason } => {
            if let Some((_, tx)) = conns.remove(&conn) {
                let _ = tx.send(Outgoing::Close(reason));
            }
        }
        Output::SendSnapshot { conn, boundary } => {
            if let Some((_, tx)) = conns.get(&conn) {
                if let Some(m) = &shared.metrics {
                    m.snapshots_sent.inc();
                }
                let _ = tx.send(Outgoing::Snapshot(boundary));
            }
        }
        Output::Committed(lsn) => {
            shared.commit_lsn.fetch_max(lsn, Ordering::AcqRel);
        }
        // The appender may have given up waiting (its future dropped): nothing to wake.
        Output::Ack { token, lsn } => {
            let _ = token.send(Ok(lsn));
        }
        Output::Fail { token, error } => {
            let _ = token.send(Err(error));
        }
        Output::Durable(_) | Output::CommitPersisted(_) => {}
        Output::Stopped(reason) => {
            shared.publish_stop(reason);
            return true;
        }
    }
    false
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
    let (send, recv) = match tokio::time::timeout(STREAM_OPEN_TIMEOUT, conn.accept_bi()).await {
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
    serve_session(conn, id, node_id, send, recv, shared).await
}

/// One replica session on the stream the replica opened: registers it with the executor,
/// feeds it the replica's frames and writes the executor's, until either side ends it or
/// the primary stops.
pub(crate) async fn serve_session(
    conn: quinn::Connection,
    id: ConnId,
    node_id: String,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
) {
    let mut closing = shared.closing.subscribe();
    if *closing.borrow_and_update() {
        CloseCode::ShuttingDown.close(&conn, "primary shutting down");
        return;
    }
    let (tx, rx) = tmpsc::unbounded_channel();
    if shared
        .tx
        .send(Input::Register {
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
        let frame = tokio::select! {
            f = read_frame(&mut recv, MAX_FRAME_BYTES) => f,
            _ = closing.changed() => {
                info!("primary stopping: closing the replica session");
                CloseCode::ShuttingDown.close(&conn, "primary stopping");
                break;
            }
        };
        match frame {
            Ok(Some(msg)) => {
                if let Message::Receipt { durable_lsn } = &msg {
                    tracing::trace!(target: STAGE_TARGET, stage = "receipt_received", lsn = *durable_lsn);
                }
                let event = Event::Received { conn: id, msg };
                if shared.tx.send(Input::Event(event)).is_err() {
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
                let _ = shared.tx.send(Input::Event(event));
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
        .tx
        .send(Input::Event(Event::Disconnected { conn: id }));
    // The executor drops the writer's sender on Disconnected; the writer then ends.
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
                    let last_lsn = (b.first_lsn + u64::from(b.count)).saturating_sub(1);
                    tracing::trace!(target: STAGE_TARGET, stage = "frame_dequeued", lsn = last_lsn);
                    if !buf.is_empty() {
                        if let Err(e) = send.write_all(&buf).await {
                            debug!(error = %e, "stream write failed: the session ended");
                            return;
                        }
                        buf.clear();
                    }
                    // The batch's bytes go to quinn without another copy.
                    let written = writer
                        .write_records_owned(
                            &mut send,
                            b.first_lsn,
                            b.count,
                            bytes::Bytes::from(b.bytes),
                            b.commit_lsn,
                        )
                        .await;
                    if let Err(e) = written {
                        debug!(error = %e, "stream write failed: the session ended");
                        return;
                    }
                    tracing::trace!(target: STAGE_TARGET, stage = "frame_sent", lsn = last_lsn);
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
        let sender = snapshots.sender(&snap).map_err(|e| e.to_string())?;
        Ok((snap, sender))
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
