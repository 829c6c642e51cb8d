//! The production glue around the [`ReplicaExec`]: it moves bytes and time, and decides
//! nothing.
//!
//! One dedicated std thread owns the executor and runs its loop: block until the first
//! input (a frame, a session end, a connection) or the executor's next deadline, drain
//! the inputs already queued (until `sync_urgent`), then `sync` inline if needed (the
//! fdatasync blocks this thread only), fire the timers, and deliver the outputs. A private
//! tokio runtime with one worker runs quinn and, per connection, a frame reader and a
//! frame writer task that only move frames between the stream and the executor thread;
//! a connect task opens the connections the executor asks for. A stop request closes
//! every connection at once (even while the executor thread is inside a sync), then the
//! executor's final flush runs on its thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use walship_wal::Storage;
use walship_wire::message::Message;
use walship_wire::CloseCode;
use walship_wire::{read_frame, FrameError, FrameWriter, MAX_FRAME_BYTES};

use super::exec::{ConnId, ExecConfig, Output, ReplicaExec, STAGE_TARGET};
use super::{Applier, ReplicaConfig, ReplicaError, ReplicaState, Shared};
use walship_replica::core::SessionEnd;

/// Inputs buffered between the tokio tasks and the executor thread.
const INPUT_QUEUE: usize = 64;
/// Most inputs handled before the executor syncs, whatever `sync_urgent` says.
const MAX_INPUTS_PER_STEP: usize = 256;

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The handle side of the executor thread.
pub(crate) struct DriverHandle {
    stop_tx: watch::Sender<bool>,
    done_rx: oneshot::Receiver<Result<(), ReplicaError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DriverHandle {
    /// Tells the executor thread to stop and waits for its result.
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

    /// Tells the executor thread to stop and waits for it (used by `Drop`).
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

/// Opens the executor (local recovery and the replay to the applier happen here) and
/// starts its thread. Returns no driver for a replica halted at open.
pub(crate) fn start<S: Storage>(
    storage: S,
    config: ReplicaConfig,
    applier: Box<dyn Applier>,
) -> Result<(Arc<Shared>, Option<DriverHandle>), ReplicaError> {
    let span = tracing::info_span!("replica", node = %config.node_id);
    let _enter = span.enter();
    let mut exec = ReplicaExec::open(
        storage,
        ExecConfig::from_replica_config(&config),
        applier,
        now_unix_ms(),
    )?;
    let shared = Arc::new(Shared {
        gate: RwLock::new(exec.halt().cloned()),
        status: Mutex::new(exec.status()),
        stopped: watch::channel(None).0,
        returned_applier: Default::default(),
    });
    if exec.is_halted() {
        shared.returned_applier.put(exec.into_applier());
        return Ok((shared, None));
    }
    let material = config
        .tls
        .load()
        .map_err(walship_wire::EndpointError::from)?;
    let gate = Arc::clone(&shared);
    exec.set_before_halt(Box::new(move |record| {
        // Closing the gate first: a read in progress completes, later reads are refused.
        let mut g = match gate.gate.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *g = Some(record.clone());
    }));
    drop(_enter);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = oneshot::channel();
    let thread_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name(format!("walship-replica-{}", config.node_id))
        .spawn(move || {
            let _enter = span.enter();
            let mut exec = exec;
            // Linux keeps 15 bytes of a thread's name: this one stays apart from the
            // executor thread's in `top` and per-thread CPU figures.
            let result = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("walship-rio-{}", config.node_id))
                .enable_all()
                .build()
            {
                Ok(rt) => run(&rt, &mut exec, &config, &material, &thread_shared, stop_rx),
                Err(e) => Err(ReplicaError::Runtime(format!("tokio runtime: {e}"))),
            };
            thread_shared.returned_applier.put(exec.into_applier());
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

/// What the tokio side hands the executor thread.
enum Input {
    Connected {
        conn: ConnId,
        quic: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    ConnectFailed(String),
    Frame(ConnId, Message),
    Ended(ConnId, SessionEnd),
}

/// One open connection: the quinn handle, the writer's queue, the reader task.
struct Session {
    quic: quinn::Connection,
    writer: mpsc::UnboundedSender<Outgoing>,
    reader: tokio::task::JoinHandle<()>,
}

/// What the writer task does next, in order.
enum Outgoing {
    /// Write one frame.
    Frame(Message),
    /// A refusal was queued before: finish the stream, let the primary read it (at most
    /// [`REFUSE_LINGER`]), then close the connection with `Refused` and `reason`.
    CloseRefused(quinn::Connection, String),
}

/// How long a refusing replica waits for the primary to read its `Refuse` frame.
const REFUSE_LINGER: Duration = Duration::from_millis(500);

/// The transport side of the executor thread.
struct Glue {
    rt: tokio::runtime::Handle,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    primary_name: String,
    tx: mpsc::Sender<Input>,
    sessions: HashMap<ConnId, Session>,
    next_conn: ConnId,
    /// The node's fsync histogram and snapshot counter, if it has any.
    metrics: Option<crate::metrics::RoleMetrics>,
}

impl Glue {
    /// Performs one output; a stop is kept for the loop.
    fn perform(&mut self, out: Output, stop: &mut Option<ReplicaError>) {
        match out {
            Output::Connect => {
                let conn = self.next_conn;
                self.next_conn += 1;
                self.rt.spawn(connect(
                    self.endpoint.clone(),
                    self.addr,
                    self.primary_name.clone(),
                    self.tx.clone(),
                    conn,
                ));
            }
            Output::Send { conn, msg } => {
                if let Some(s) = self.sessions.get(&conn) {
                    // A closed writer reports the end itself.
                    let _ = s.writer.send(Outgoing::Frame(msg));
                }
            }
            Output::Close { conn, code, reason } => {
                if let Some(s) = self.sessions.remove(&conn) {
                    s.reader.abort();
                    // A `Refuse` frame (FM-X.2: `StalePrimary`) was queued just before:
                    // the writer closes after it, so the primary learns it is stale.
                    let closed_by_writer = code == CloseCode::Refused
                        && s.writer
                            .send(Outgoing::CloseRefused(s.quic.clone(), reason.clone()))
                            .is_ok();
                    if !closed_by_writer {
                        code.close(&s.quic, &reason);
                    }
                }
            }
            Output::Stopped(e) => {
                if stop.is_none() {
                    *stop = Some(e);
                }
            }
            Output::SnapshotInstalled(_) => {
                if let Some(m) = &self.metrics {
                    m.snapshots_installed.inc();
                }
            }
            Output::SessionEnded { .. }
            | Output::Durable(_)
            | Output::CommitPersisted(_)
            | Output::Applied { .. }
            | Output::Restored(_)
            | Output::Halted(_) => {}
        }
    }

    /// Hands one input to the executor.
    fn input<S: Storage>(&mut self, exec: &mut ReplicaExec<S>, input: Input) {
        let now = now_unix_ms();
        match input {
            Input::Connected {
                conn,
                quic,
                send,
                recv,
            } => {
                let reader = self.rt.spawn(read_loop(recv, self.tx.clone(), conn));
                let (writer, queue) = mpsc::unbounded_channel();
                self.rt
                    .spawn(write_loop(send, queue, self.tx.clone(), conn));
                self.sessions.insert(
                    conn,
                    Session {
                        quic,
                        writer,
                        reader,
                    },
                );
                exec.on_connected(conn, now);
            }
            Input::ConnectFailed(detail) => exec.on_connect_failed(detail, now),
            Input::Frame(conn, msg) => {
                if let Message::Records(b) = &msg {
                    tracing::trace!(target: STAGE_TARGET, stage = "replica_exec_frame", lsn = (b.first_lsn + u64::from(b.count)).saturating_sub(1));
                }
                exec.on_frame(conn, msg, now)
            }
            Input::Ended(conn, end) => exec.on_closed(conn, end, now),
        }
    }
}

fn publish(shared: &Shared, exec_status: super::ReplicaStatus) {
    shared.update_status(|s| *s = exec_status);
}

/// The executor thread's life: until stopped, halted and told to stop, or a node stop.
fn run<S: Storage>(
    rt: &tokio::runtime::Runtime,
    exec: &mut ReplicaExec<S>,
    config: &ReplicaConfig,
    material: &walship_wire::TlsMaterial,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ReplicaError> {
    // quinn's endpoint and connections need the runtime's context on this thread too.
    let _context = rt.enter();
    let endpoint =
        walship_wire::endpoint::client_endpoint_with(config.bind_addr, material, &config.transport);
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => {
            let e = ReplicaError::from(e);
            tracing::error!(error = %e, "replica stopped: no QUIC endpoint");
            stopped(shared, e.to_string());
            return Err(e);
        }
    };
    // A stop request ends every session at once, even while the executor is in a sync.
    let closer = endpoint.clone();
    let mut stop_watch = stop.clone();
    rt.spawn(async move {
        while !*stop_watch.borrow_and_update() {
            if stop_watch.changed().await.is_err() {
                return;
            }
        }
        closer.close(CloseCode::ShuttingDown.code(), b"replica stopping");
    });
    let (tx, mut rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let mut glue = Glue {
        rt: rt.handle().clone(),
        endpoint: endpoint.clone(),
        addr: config.primary_addr,
        primary_name: config.primary_name.clone(),
        tx,
        sessions: HashMap::new(),
        next_conn: 1,
        metrics: config.metrics.clone(),
    };
    let mut node_stop: Option<ReplicaError> = None;
    let result = loop {
        while let Some(out) = exec.poll_output() {
            glue.perform(out, &mut node_stop);
        }
        publish(shared, exec.status());
        if let Some(e) = node_stop.take() {
            break Err(e);
        }
        if *stop.borrow() {
            break finish(exec, &mut glue, shared);
        }
        enum Woke {
            Input(Option<Input>),
            Timer,
            Stop,
        }
        let deadline = exec.next_deadline();
        let woke = rt.block_on(async {
            let timer = async {
                match deadline {
                    Some(t) => {
                        let wait = t.saturating_sub(now_unix_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                i = rx.recv() => Woke::Input(i),
                _ = timer => Woke::Timer,
                _ = stop.changed() => Woke::Stop,
            }
        });
        match woke {
            Woke::Stop => continue,
            Woke::Timer => {}
            Woke::Input(None) => {
                break Err(ReplicaError::Runtime("the input channel closed".into()));
            }
            Woke::Input(Some(first)) => {
                glue.input(exec, first);
                let mut handled = 1;
                while handled < MAX_INPUTS_PER_STEP && !exec.sync_urgent() {
                    match rx.try_recv() {
                        Ok(i) => {
                            glue.input(exec, i);
                            handled += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        if exec.sync_needed() {
            // The receipt goes to the writer task right after the fdatasync, not after a
            // due write of `state/commit` and the applies that follow it in `settle`.
            // One histogram observe per group sync (an atomic add), never per record.
            let syncing = std::time::Instant::now();
            exec.sync_with(now_unix_ms(), |out| glue.perform(out, &mut node_stop));
            if let Some(m) = &config.metrics {
                m.fsync_seconds.observe(syncing.elapsed().as_secs_f64());
            }
        }
        exec.on_timer(now_unix_ms());
    };
    if let Err(e) = &result {
        // The status already says Stopped (the executor's reason); this is the log line.
        tracing::error!(error = %e, "replica stopped on a local error (not a halt)");
        stopped(shared, e.to_string());
    }
    endpoint.close(CloseCode::ShuttingDown.code(), b"replica stopping");
    // Let quinn send the CONNECTION_CLOSE before the runtime goes away, so the primary
    // learns at once instead of after its idle timeout.
    let _ = rt.block_on(tokio::time::timeout(
        Duration::from_millis(500),
        endpoint.wait_idle(),
    ));
    result
}

/// Orderly stop: the executor's final flush (sync, commit watermark, apply).
fn finish<S: Storage>(
    exec: &mut ReplicaExec<S>,
    glue: &mut Glue,
    shared: &Shared,
) -> Result<(), ReplicaError> {
    exec.shutdown(now_unix_ms());
    let mut node_stop = None;
    while let Some(out) = exec.poll_output() {
        glue.perform(out, &mut node_stop);
    }
    publish(shared, exec.status());
    match node_stop {
        None => {
            stopped(shared, "shut down".into());
            Ok(())
        }
        Some(e) => {
            // A failed fsync is fatal (FM-X.4): the shutdown reports it, so the process
            // exits non-zero instead of claiming a clean stop.
            tracing::error!(error = %e, "final sync/apply at shutdown failed");
            stopped(shared, format!("final sync/apply at shutdown failed: {e}"));
            Err(e)
        }
    }
}

fn stopped(shared: &Shared, why: String) {
    shared.update_status(|s| {
        if !matches!(s.state, ReplicaState::Halted(_))
            && !matches!(s.state, ReplicaState::Stopped(_))
        {
            s.state = ReplicaState::Stopped(why);
        }
        s.connected = false;
    });
}

/// Opens a connection to the primary: TLS verified its name; its certificate must name
/// nothing else; then its stream.
async fn connect(
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    name: String,
    tx: mpsc::Sender<Input>,
    conn: ConnId,
) {
    let input = match walship_wire::connect(&endpoint, addr, &name).await {
        Err(e) => Input::ConnectFailed(e.to_string()),
        Ok(quic) => match walship_wire::peer_node_id(&quic, std::slice::from_ref(&name)) {
            Err(e) => {
                tracing::warn!(error = %e, primary = %name, "primary's certificate does not name exactly the configured primary");
                CloseCode::ProtocolViolation.close(&quic, "not the configured primary");
                Input::ConnectFailed(format!(
                    "peer certificate does not name exactly {name}: {e}"
                ))
            }
            Ok(_) => match quic.open_bi().await {
                Ok((send, recv)) => Input::Connected {
                    conn,
                    quic,
                    send,
                    recv,
                },
                Err(e) => Input::ConnectFailed(format!("open stream: {e}")),
            },
        },
    };
    let _ = tx.send(input).await;
}

/// Reads frames from the primary's stream until it ends.
async fn read_loop(mut recv: quinn::RecvStream, tx: mpsc::Sender<Input>, conn: ConnId) {
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
        let (input, end) = match item {
            Ok(msg) => (Input::Frame(conn, msg), false),
            Err(e) => (Input::Ended(conn, e), true),
        };
        if tx.send(input).await.is_err() || end {
            return;
        }
    }
}

/// Writes the executor's messages to the primary's stream.
async fn write_loop(
    mut send: quinn::SendStream,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    tx: mpsc::Sender<Input>,
    conn: ConnId,
) {
    let mut writer = FrameWriter::default();
    while let Some(out) = queue.recv().await {
        let msg = match out {
            Outgoing::Frame(msg) => msg,
            Outgoing::CloseRefused(quic, reason) => {
                let _ = send.finish();
                let _ = tokio::time::timeout(REFUSE_LINGER, send.stopped()).await;
                CloseCode::Refused.close(&quic, &reason);
                return;
            }
        };
        if let Message::Receipt { durable_lsn } = &msg {
            tracing::trace!(target: STAGE_TARGET, stage = "receipt_dequeued", lsn = *durable_lsn);
        }
        if let Err(e) = writer.write(&mut send, &msg).await {
            let end = SessionEnd::ConnectionLost {
                detail: e.to_string(),
            };
            let _ = tx.send(Input::Ended(conn, end)).await;
            return;
        }
    }
}
