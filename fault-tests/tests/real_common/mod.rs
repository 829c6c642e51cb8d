//! Shared code of the real-process tests (`tests/real_*.rs`): node processes,
//! their line protocol, and the on-disk checks through walship-recover's library.
//!
//! A test executable re-executes itself as a node: `current_exe() --walship-node
//! <json NodeSpec>` runs one primary or replica (the libraries embedded directly,
//! as the `walship node` binary does) until `quit` on stdin, stdin EOF, or
//! SIGKILL. This works from a clean clone under `cargo test -p walship-fault` as
//! well as `cargo test --workspace`: the only binary needed is the test itself.
//!
//! Line protocol of a node process (stdout, one event per line):
//! - both roles: `ready <addr>` once serving, `exit` after a graceful shutdown,
//!   `error <text>` when the node could not start or stopped on an error;
//! - primary: stdin `append <payload>` (payload without spaces) answers
//!   `committed <lsn> <payload>` once the quorum committed it, or
//!   `failed <payload> <error>`; `pstatus <durable> <commit>` on every change;
//! - replica: `rstatus <durable> <applied> <commit> <connected 0|1>` on every
//!   change, `halted <record>` if it halts, `violation <text>` if it ever applies
//!   past its commit watermark or out of order (FM-5.1, FM-4.2), `stopped <why>`
//!   if the node stops on its own.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use walship_node::primary::{Primary, PrimaryConfig, PrimaryError, Quorum};
use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaState};
use walship_recovery::cli::Common;
use walship_recovery::datadir::DataDir;
use walship_recovery::report::{DiffReport, WalState};
use walship_recovery::scan::ScanOptions;
use walship_wal::{Lsn, Position, WalOptions};
use walship_wire::{TlsFiles, TransportOptions};

/// First argument that turns a test executable into a node process.
pub const NODE_FLAG: &str = "--walship-node";

/// Segment size of every node in these tests: small, so that runs roll segments.
pub const SEGMENT_SIZE_BYTES: u64 = 128 * 1024;

/// What a node process runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node id (certificate name).
    pub node_id: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Directory of `ca.pem` and `<node>.pem/.key`.
    pub certs_dir: PathBuf,
    /// QUIC keep-alive interval.
    pub keep_alive_ms: u64,
    /// QUIC idle timeout (dead-peer detection).
    pub idle_timeout_ms: u64,
    /// Primary or replica.
    pub role: RoleSpec,
}

/// The role of a node process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RoleSpec {
    /// A primary serving `members` on `listen`.
    Primary {
        /// QUIC server address.
        listen: SocketAddr,
        /// Every member id, the primary's own included.
        members: Vec<String>,
        /// Quorum setting (0, -1, k).
        quorum: i64,
        /// How long an append waits for its quorum.
        commit_timeout_ms: u64,
    },
    /// A replica following `primary_name` at `primary_addr`.
    Replica {
        /// The primary's address.
        primary_addr: SocketAddr,
        /// The primary's id.
        primary_name: String,
        /// Local bind address of the client endpoint.
        bind: SocketAddr,
    },
}

impl NodeSpec {
    fn transport(&self) -> TransportOptions {
        TransportOptions {
            keep_alive_ms: self.keep_alive_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            ..TransportOptions::default()
        }
    }

    fn tls(&self) -> TlsFiles {
        TlsFiles::for_node(&self.certs_dir, &self.node_id)
    }
}

/// If this process was started as a node (`NODE_FLAG <json>`), runs it and exits.
/// Call first thing in `main` of a `harness = false` test.
pub fn run_node_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(NODE_FLAG) {
        return;
    }
    let code = match args.get(2).map(|j| serde_json::from_str::<NodeSpec>(j)) {
        Some(Ok(spec)) => {
            init_node_logging();
            match run_node(spec) {
                Ok(()) => 0,
                Err(e) => {
                    say(&format!("error {e}"));
                    1
                }
            }
        }
        Some(Err(e)) => {
            say(&format!("error bad node spec: {e}"));
            2
        }
        None => {
            say("error missing node spec");
            2
        }
    };
    std::process::exit(code);
}

fn init_node_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// One protocol line on stdout (stdout is line-buffered: each line is flushed whole).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run_node(spec: NodeSpec) -> Result<(), String> {
    match spec.role.clone() {
        RoleSpec::Primary {
            listen,
            members,
            quorum,
            commit_timeout_ms,
        } => run_primary(&spec, listen, members, quorum, commit_timeout_ms),
        RoleSpec::Replica {
            primary_addr,
            primary_name,
            bind,
        } => run_replica(&spec, primary_addr, primary_name, bind),
    }
}

enum Input {
    Append(String),
    Quit,
}

/// Reads stdin lines on a thread; EOF (the test process died or closed it) means quit.
fn spawn_stdin_reader(tx: tokio::sync::mpsc::UnboundedSender<Input>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if let Some(p) = line.strip_prefix("append ") {
                if tx.send(Input::Append(p.to_string())).is_err() {
                    return;
                }
            } else if line == "quit" {
                break;
            }
        }
        let _ = tx.send(Input::Quit);
    });
}

fn run_primary(
    spec: &NodeSpec,
    listen: SocketAddr,
    members: Vec<String>,
    quorum: i64,
    commit_timeout_ms: u64,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let mut cfg = PrimaryConfig::new(
            spec.node_id.clone(),
            spec.cluster_id.clone(),
            spec.data_dir.clone(),
            listen,
            members,
            spec.tls(),
        );
        cfg.quorum = Quorum::from_setting(quorum).map_err(|e| e.to_string())?;
        cfg.commit_timeout_ms = commit_timeout_ms;
        cfg.transport = spec.transport();
        cfg.segment_size_bytes = SEGMENT_SIZE_BYTES;
        let primary = Primary::open(cfg).map_err(|e| format!("open primary: {e}"))?;
        let addr = primary.local_addr().map_err(|e| e.to_string())?;
        say(&format!("ready {addr}"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        spawn_stdin_reader(tx);
        let stop = Arc::new(AtomicBool::new(false));
        // lsns whose append returned (committed, or durable but timed out): the
        // status task checks the durable lsn covers them.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Lsn>();
        let status_task = {
            let stop = stop.clone();
            let durable_commit = {
                // The status task only reads; the handle stays with the append loop.
                let p = &primary;
                move || (p.durable_lsn(), p.commit_lsn())
            };
            let mut last = (u64::MAX, u64::MAX);
            let mut highest_durable = 0;
            // Polled on this task's own schedule; prints changes only.
            async move {
                while !stop.load(Ordering::Acquire) {
                    let now = durable_commit();
                    if now.0 < highest_durable {
                        say(&format!(
                            "violation primary durable lsn went back from {highest_durable} to {}",
                            now.0
                        ));
                    }
                    highest_durable = highest_durable.max(now.0);
                    while let Ok(lsn) = done_rx.try_recv() {
                        let durable = durable_commit().0;
                        if durable < lsn {
                            say(&format!(
                                "violation primary durable lsn {durable} below lsn {lsn} whose append returned"
                            ));
                        }
                    }
                    if now != last {
                        say(&format!("pstatus {} {}", now.0, now.1));
                        last = now;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let append_loop = async {
            while let Some(input) = rx.recv().await {
                match input {
                    Input::Append(payload) => {
                        let fut = primary.append(payload.clone().into_bytes());
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            match fut.await {
                                Ok(lsn) => {
                                    let _ = done.send(lsn);
                                    say(&format!("committed {lsn} {payload}"));
                                }
                                Err(e) => {
                                    if let PrimaryError::CommitTimeout { lsn } = &e {
                                        let _ = done.send(*lsn);
                                    }
                                    say(&format!("failed {payload} {e}"));
                                }
                            }
                        });
                    }
                    Input::Quit => break,
                }
            }
            stop.store(true, Ordering::Release);
        };
        tokio::join!(status_task, append_loop);
        let final_status = (primary.durable_lsn(), primary.commit_lsn());
        primary.shutdown().await;
        say(&format!("pstatus {} {}", final_status.0, final_status.1));
        say("exit");
        Ok(())
    })
}

/// The replica's embedder: a log-only applier that checks the order it is fed in.
struct CheckingApplier {
    applied: Arc<AtomicU64>,
}

impl Applier for CheckingApplier {
    fn applied_lsn(&self) -> Lsn {
        // Nothing is made durable by this embedder: every start replays from the
        // first committed record (FM-4.2 re-delivery), starting at 0.
        self.applied.load(Ordering::Acquire)
    }

    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        let prev = self.applied.load(Ordering::Acquire);
        if lsn != prev + 1 {
            say(&format!("violation applied lsn {lsn} after {prev}"));
            return Err(format!("applied lsn {lsn} after {prev}").into());
        }
        if payload.is_empty() {
            say(&format!("violation empty payload at lsn {lsn}"));
        }
        self.applied.store(lsn, Ordering::Release);
        Ok(())
    }
}

fn run_replica(
    spec: &NodeSpec,
    primary_addr: SocketAddr,
    primary_name: String,
    bind: SocketAddr,
) -> Result<(), String> {
    let mut cfg = ReplicaConfig::new(
        spec.node_id.clone(),
        spec.cluster_id.clone(),
        spec.data_dir.clone(),
        primary_addr,
        primary_name,
        spec.tls(),
    );
    cfg.bind_addr = bind;
    cfg.transport = spec.transport();
    cfg.backoff_initial_ms = 20;
    cfg.backoff_max_ms = 300;
    cfg.wal = WalOptions {
        segment_size_bytes: SEGMENT_SIZE_BYTES,
        ..WalOptions::default()
    };
    let applied = Arc::new(AtomicU64::new(0));
    let replica = Replica::open(
        cfg,
        CheckingApplier {
            applied: applied.clone(),
        },
    )
    .map_err(|e| format!("open replica: {e}"))?;
    say(&format!("ready {bind}"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    spawn_stdin_reader(tx);
    let mut last = None;
    let mut reported_halt = false;
    let mut reported_stop = false;
    loop {
        let s = replica.status();
        let now = (
            s.durable_lsn.unwrap_or(0),
            s.applied_lsn,
            s.commit_lsn,
            s.connected,
        );
        if s.applied_lsn > s.commit_lsn {
            say(&format!(
                "violation applied {} above commit {}",
                s.applied_lsn, s.commit_lsn
            ));
        }
        if Some(now) != last {
            say(&format!(
                "rstatus {} {} {} {}",
                now.0,
                now.1,
                now.2,
                u8::from(now.3)
            ));
            last = Some(now);
        }
        // FM-5.1: a replica that is not halted keeps serving reads of what it
        // applied, connected or not.
        if s.halt().is_none() && replica.check_readable().is_err() && replica.halt().is_none() {
            say("violation reads refused while not halted");
        }
        match &s.state {
            ReplicaState::Halted(h) if !reported_halt => {
                say(&format!("halted {h}"));
                reported_halt = true;
            }
            ReplicaState::Stopped(why) if !reported_stop => {
                say(&format!("stopped {why}"));
                reported_stop = true;
            }
            _ => {}
        }
        match rx.try_recv() {
            Ok(Input::Quit) | Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
            Ok(Input::Append(_)) | Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let result = rt.block_on(replica.shutdown());
    result.map_err(|e| format!("replica shutdown: {e}"))?;
    say("exit");
    Ok(())
}

// ---------------------------------------------------------------------------
// The test side: node processes and what they reported.
// ---------------------------------------------------------------------------

/// Everything a node process reported, updated by its stdout reader thread.
#[derive(Debug, Default, Clone)]
pub struct Reported {
    /// `ready <addr>` seen.
    pub ready: bool,
    /// `committed` lines in arrival order: (lsn, payload).
    pub acks: Vec<(Lsn, String)>,
    /// `failed` lines.
    pub failed: u64,
    /// Primary: last `pstatus`; replica: last `rstatus`.
    pub durable: Lsn,
    /// Commit watermark last reported.
    pub commit: Lsn,
    /// Replica: applied lsn last reported.
    pub applied: Lsn,
    /// Replica: connected to its primary.
    pub connected: bool,
    /// `halted` lines.
    pub halted: Vec<String>,
    /// `violation` lines.
    pub violations: Vec<String>,
    /// `stopped` / `error` lines.
    pub errors: Vec<String>,
    /// `exit` seen (graceful end).
    pub exited: bool,
    /// stdout closed (the process is gone).
    pub eof: bool,
}

/// Shared between a node's reader thread and the test.
#[derive(Debug, Default)]
pub struct Events {
    state: Mutex<Reported>,
    changed: Condvar,
}

impl Events {
    /// A copy of what was reported so far.
    pub fn snapshot(&self) -> Reported {
        lock(&self.state).clone()
    }

    /// Waits until `pred` holds, or fails after `limit` (a liveness bound, far above
    /// what the step needs: it turns a hang into a failure, it never decides an outcome).
    /// A halt or a violation reported meanwhile fails the wait at once.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl FnMut(&Reported) -> bool,
    ) -> Result<Reported, String> {
        self.wait(what, limit, true, pred)
    }

    /// Like [`Events::wait_for`], for a node that is expected to halt.
    pub fn wait_for_halt_allowed(
        &self,
        what: &str,
        limit: Duration,
        pred: impl FnMut(&Reported) -> bool,
    ) -> Result<Reported, String> {
        self.wait(what, limit, false, pred)
    }

    fn wait(
        &self,
        what: &str,
        limit: Duration,
        halt_fails: bool,
        mut pred: impl FnMut(&Reported) -> bool,
    ) -> Result<Reported, String> {
        let deadline = Instant::now() + limit;
        let mut g = lock(&self.state);
        loop {
            // A halt or a violation is a failure whatever is being waited for.
            if !g.violations.is_empty() || (halt_fails && !g.halted.is_empty()) {
                return Err(format!(
                    "while waiting for {what}: halted {:?}, violations {:?}",
                    g.halted, g.violations
                ));
            }
            if pred(&g) {
                return Ok(g.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "timed out after {limit:?} waiting for {what}; last: {:?}",
                    Brief(&g)
                ));
            }
            g = match self.changed.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    fn update(&self, f: impl FnOnce(&mut Reported)) {
        f(&mut lock(&self.state));
        self.changed.notify_all();
    }
}

/// Debug without the (long) ack list.
struct Brief<'a>(&'a Reported);

impl std::fmt::Debug for Brief<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.0;
        write!(
            f,
            "ready={} acks={} failed={} durable={} commit={} applied={} connected={} halted={:?} violations={:?} errors={:?} exited={} eof={}",
            r.ready,
            r.acks.len(),
            r.failed,
            r.durable,
            r.commit,
            r.applied,
            r.connected,
            r.halted,
            r.violations,
            r.errors,
            r.exited,
            r.eof
        )
    }
}

impl Reported {
    /// Highest lsn acknowledged as committed.
    pub fn max_acked(&self) -> Lsn {
        self.acks.iter().map(|(l, _)| *l).max().unwrap_or(0)
    }

    /// A primary that answered all `sent` appends and whose last status covers
    /// them: durable at or above every acknowledged lsn (the status line is
    /// sampled, so it may lag the last acknowledgement) and committed up to it.
    pub fn settled(&self, sent: u64) -> bool {
        self.acks.len() as u64 + self.failed == sent
            && self.durable >= self.max_acked()
            && self.commit == self.durable
    }
}

/// Locks a mutex, ignoring poisoning (a panicking reader must not hide the state).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn parse_line(line: &str, r: &mut Reported) {
    let mut it = line.split(' ');
    let word = it.next().unwrap_or("");
    let mut num = || it.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    match word {
        "ready" => r.ready = true,
        "committed" => {
            let lsn = num();
            let payload = line.splitn(3, ' ').nth(2).unwrap_or("").to_string();
            r.acks.push((lsn, payload));
        }
        "failed" => r.failed += 1,
        "pstatus" => {
            r.durable = num();
            r.commit = num();
        }
        "rstatus" => {
            r.durable = num();
            r.applied = num();
            r.commit = num();
            r.connected = num() == 1;
        }
        "halted" => r.halted.push(line.to_string()),
        "violation" => r.violations.push(line.to_string()),
        "stopped" | "error" => r.errors.push(line.to_string()),
        "exit" => r.exited = true,
        _ => {}
    }
}

/// A running node process (a re-executed copy of the test executable).
pub struct NodeProc {
    /// Node id.
    pub name: String,
    child: Child,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    /// What the node reported.
    pub events: Arc<Events>,
    reader: Option<JoinHandle<()>>,
    /// Where its stderr (tracing logs) goes.
    pub log: PathBuf,
}

impl NodeProc {
    /// Starts `spec` as a process, prefixed by `wrapper` (e.g. `ip netns exec NS`).
    /// stderr is appended to `log`.
    pub fn spawn(spec: &NodeSpec, wrapper: &[String], log: &Path) -> Result<NodeProc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let json = serde_json::to_string(spec).map_err(|e| format!("spec: {e}"))?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        cmd.arg(NODE_FLAG)
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,quinn=warn,quinn_proto=warn");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn node {}: {e}", spec.node_id))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take();
        let events = Arc::new(Events::default());
        let reader = {
            let events = events.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    events.update(|r| parse_line(&line, r));
                }
                events.update(|r| r.eof = true);
            })
        };
        Ok(NodeProc {
            name: spec.node_id.clone(),
            child,
            stdin: Arc::new(Mutex::new(stdin)),
            events,
            reader: Some(reader),
            log: log.to_path_buf(),
        })
    }

    /// Waits for `ready` (or fails with what the node said).
    pub fn wait_ready(&self) -> Result<(), String> {
        // A replica that halts at open (FM-X.6) is ready too: its halt is judged
        // by the caller.
        let r = self.events.wait_for_halt_allowed(
            &format!("{} ready", self.name),
            Duration::from_secs(60),
            |r| r.ready || r.eof,
        )?;
        if !r.ready {
            return Err(format!("{} exited before ready: {:?}", self.name, r.errors));
        }
        Ok(())
    }

    /// Writes one line to the node's stdin; false if the node is gone.
    pub fn send(&self, line: &str) -> bool {
        let mut g = lock(&self.stdin);
        match g.as_mut() {
            Some(s) => s.write_all(format!("{line}\n").as_bytes()).is_ok() && s.flush().is_ok(),
            None => false,
        }
    }

    /// SIGKILL, then reaps the process and waits for its stdout to close.
    /// Everything it had written (also unsynced, in the page cache) stays on disk:
    /// kill -9 does not test fsync (the simulator's page-cache model does).
    pub fn kill9(mut self) -> Reported {
        let _ = self.child.kill();
        let _ = self.child.wait();
        lock(&self.stdin).take();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.events.snapshot()
    }

    /// Asks for a graceful stop (`quit`), waits for the exit and requires status 0.
    pub fn quit(mut self) -> Result<Reported, String> {
        self.send("quit");
        lock(&self.stdin).take();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return Err(format!("{} did not exit within 60 s of quit", self.name)),
                Err(e) => return Err(format!("wait {}: {e}", self.name)),
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let rep = self.events.snapshot();
        if !status.success() || !rep.exited {
            return Err(format!(
                "{} ended with {status} (exit line seen: {}), errors {:?}",
                self.name, rep.exited, rep.errors
            ));
        }
        Ok(rep)
    }

    /// The stdin handle (for a load thread).
    pub fn stdin_handle(&self) -> Arc<Mutex<Option<ChildStdin>>> {
        self.stdin.clone()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // Never leave a node running behind a failed test.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Appends from a background thread with at most `max_in_flight` unanswered appends.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    /// Starts sending `append <prefix>-<k>` lines to `node` (k from 0).
    pub fn start(node: &NodeProc, prefix: String, max_in_flight: u64, pause: Duration) -> Load {
        Load::start_padded(node, prefix, max_in_flight, pause, 0)
    }

    /// Like [`Load::start`], each payload padded with `.` to `pad_to` bytes.
    pub fn start_padded(
        node: &NodeProc,
        prefix: String,
        max_in_flight: u64,
        pause: Duration,
        pad_to: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let stdin = node.stdin_handle();
        let events = node.events.clone();
        let handle = {
            let stop = stop.clone();
            let sent = sent.clone();
            // Answers to earlier loads on the same node do not count for this one.
            let baseline = {
                let r = lock(&events.state);
                r.acks.len() as u64 + r.failed
            };
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let answered = {
                        let r = lock(&events.state);
                        if r.eof {
                            return;
                        }
                        r.acks.len() as u64 + r.failed - baseline
                    };
                    if k - answered.min(k) >= max_in_flight {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let ok = {
                        let mut g = lock(&stdin);
                        match g.as_mut() {
                            Some(s) => s
                                .write_all(
                                    format!("append {:.<pad_to$}\n", format!("{prefix}-{k}"))
                                        .as_bytes(),
                                )
                                .and_then(|()| s.flush())
                                .is_ok(),
                            None => false,
                        }
                    };
                    if !ok {
                        return;
                    }
                    k += 1;
                    sent.store(k, Ordering::Release);
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
            })
        };
        Load {
            stop,
            sent,
            handle: Some(handle),
        }
    }

    /// Stops sending; returns how many appends were sent.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.sent.load(Ordering::Acquire)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A UDP port that was free a moment ago on `ip` (the primary binds it on every restart).
pub fn free_udp_port(ip: &str) -> Result<u16, String> {
    let s = UdpSocket::bind((ip, 0)).map_err(|e| format!("bind {ip}:0: {e}"))?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.port())
}

/// Seed from `var` if set, else from the clock; printed by the caller.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var).ok().and_then(|s| s.parse().ok()) {
        Some(s) => s,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    }
}

/// A count from `var`, else `default`.
pub fn count_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Last `n` lines of a log file (for failure reports).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(no log {}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------
// On-disk checks through walship-recover's library (read-only scans).
// ---------------------------------------------------------------------------

/// What `walship-recover verify` and a payload scan found in a stopped node's directory.
#[derive(Debug)]
pub struct DirState {
    /// The directory.
    pub dir: PathBuf,
    /// Last verified record.
    pub last: Position,
    /// `clean`, or a torn unsynced tail (both fine after a crash; corruption is an error).
    pub wal_state: WalState,
    /// Every record's payload by lsn.
    pub payloads: BTreeMap<Lsn, String>,
    /// `state/halt`, if any.
    pub halt: Option<String>,
}

fn common() -> Common {
    Common {
        json: false,
        max_record_bytes: WalOptions::default().max_record_bytes,
    }
}

/// `verify` plus a read-only scan of every payload; fails on corruption or bad state files.
pub fn check_dir(dir: &Path) -> Result<DirState, String> {
    let verified = walship_recovery::cmd::verify::verify(dir, &common(), false)
        .map_err(|e| format!("verify {}: {e}", dir.display()))?;
    let report = verified.report;
    if report.wal.state.is_corrupt() {
        return Err(format!(
            "verify {}: WAL corrupt: {:?}",
            dir.display(),
            report.wal.state
        ));
    }
    if let Some(bad) = report.state_files.iter().find(|c| !c.ok) {
        return Err(format!("verify {}: state file {bad:?}", dir.display()));
    }
    let d = DataDir::open_locked(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let mut payloads = BTreeMap::new();
    let opts = ScanOptions {
        max_record_bytes: WalOptions::default().max_record_bytes,
    };
    d.scan(opts, None, &mut |_, _, v| {
        payloads.insert(v.lsn(), String::from_utf8_lossy(v.payload()).into_owned());
        ControlFlow::Continue(())
    })
    .map_err(|e| format!("scan {}: {e}", dir.display()))?;
    let halt = d
        .halt()
        .map_err(|e| format!("halt file of {}: {e}", dir.display()))?
        .map(|h| h.to_string());
    Ok(DirState {
        dir: dir.to_path_buf(),
        last: report.wal.last,
        wal_state: report.wal.state,
        payloads,
        halt,
    })
}

/// `walship-recover diff A B`.
pub fn diff_dirs(a: &Path, b: &Path) -> Result<DiffReport, String> {
    walship_recovery::cmd::diff::diff(a, b, &common(), false)
        .map(|o| o.report)
        .map_err(|e| format!("diff {} {}: {e}", a.display(), b.display()))
}

/// Makes the cluster's certificates.
pub fn make_certs(dir: &Path, nodes: &[&str]) -> Result<(), String> {
    walship_wire::certs::generate(dir, nodes)
        .map(|_| ())
        .map_err(|e| format!("certs: {e}"))
}

/// `diff PRIMARY REPLICA` must say the replica's log is a prefix of the primary's
/// (`identical` required when the cluster converged).
pub fn check_diff_prefix(primary: &Path, replica: &Path, identical: bool) -> Result<(), String> {
    use walship_recovery::report::Relation;
    let d = diff_dirs(primary, replica)?;
    let ok = match d.relation {
        Relation::Identical => true,
        Relation::BPrefixOfA => !identical,
        Relation::APrefixOfB | Relation::Diverged | Relation::Disjoint => false,
    };
    if !ok {
        return Err(format!(
            "{} is not {} of {}: relation {:?}, common prefix {}, first divergence {:?}, primary last {}, replica last {}",
            replica.display(),
            if identical { "identical to" } else { "a prefix" },
            primary.display(),
            d.relation,
            d.common_prefix,
            d.first_divergence,
            d.a.last,
            d.b.last
        ));
    }
    Ok(())
}

/// What a `harness = false` test concluded.
pub enum Verdict {
    /// Passed, with the figures to print.
    Passed(String),
    /// Could not run here (why); counts as ignored, exit status 0.
    Skipped(String),
    /// Failed (what and where).
    Failed(String),
}

/// A test of a `harness = false` executable: its name and body.
pub type NamedTest<'a> = (&'a str, &'a dyn Fn() -> Verdict);

/// `main` of a `harness = false` test executable: runs the node when re-executed
/// as one; otherwise runs `tests` one after the other, honouring libtest's
/// `--list`, name filters (`--exact`), `--skip` and `--ignored`, and prints
/// libtest's lines so that `cargo test` output reads as for harnessed tests.
/// Exits 101 if any test failed.
pub fn harness_main(tests: &[NamedTest<'_>]) {
    run_node_if_asked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        if !has("--ignored") {
            for (name, _) in tests {
                println!("{name}: test");
            }
        }
        return;
    }
    // libtest options that take a value (`--skip X`, `--test-threads N`, ...): the
    // value is not a name filter.
    const WITH_VALUE: [&str; 7] = [
        "--skip",
        "--test-threads",
        "--format",
        "--color",
        "--logfile",
        "--shuffle-seed",
        "-Z",
    ];
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            if let Some(v) = it.next() {
                if a == "--skip" {
                    skips.push(v.as_str());
                }
            }
        } else if !a.starts_with('-') {
            filters.push(a.as_str());
        }
    }
    let matches = |name: &str, f: &str| {
        if has("--exact") {
            name == f
        } else {
            name.contains(f)
        }
    };
    let selected: Vec<&NamedTest<'_>> = tests
        .iter()
        .filter(|(name, _)| {
            (filters.is_empty() || filters.iter().any(|f| matches(name, f)))
                && !skips.iter().any(|s| matches(name, s))
                && !has("--ignored")
        })
        .collect();
    let filtered = tests.len() - selected.len();
    let started = Instant::now();
    println!(
        "\nrunning {} test{}",
        selected.len(),
        if selected.len() == 1 { "" } else { "s" }
    );
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, test) in selected {
        match test() {
            Verdict::Passed(figures) => {
                println!("{figures}");
                println!("test {name} ... ok");
                passed += 1;
            }
            Verdict::Skipped(why) => {
                println!("SKIP {name}: {why}");
                println!("test {name} ... ignored, {why}");
                ignored += 1;
            }
            Verdict::Failed(e) => {
                println!("test {name} ... FAILED");
                failures.push(format!("---- {name} ----\n{e}"));
                failed += 1;
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n\n{}", failures.join("\n\n"));
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {filtered} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(101);
    }
}
