//! The replica role: the embedding API [`Replica`] and its tokio/quinn driver.
//!
//! Owns the sans-IO verifier state machine ([`core`]), the durable halt
//! ([`halt`]: `state/halt`), the tokio/quinn driver that connects to the
//! configured primary over mutual TLS and performs the core's actions, and the
//! embedding API a storage engine uses: [`Replica::open`] with an [`Applier`]
//! that receives committed records in lsn order, [`Replica::status`], the read
//! gate ([`Replica::check_readable`] / [`Replica::with_reads`]) and
//! [`Replica::shutdown`].
//!
//! It does not own the WAL format (walship-wal), the messages and TLS rules
//! (walship-wire) or the operator's way out of a halt (walship-recover).
//!
//! A replica verifies every record it receives (crc, lsn continuity, the
//! `prev_crc` chain, epochs) and, on anything it cannot prove correct, writes
//! and fsyncs `state/halt` before doing anything else, then stops streaming
//! and applying; it refuses reads while halted and stays halted across
//! restarts. A session ending (connection lost, idle timeout, a frame cut
//! short) is never a halt: it reconnects with backoff and resumes from its
//! durable lsn + 1.
//!
//! ```no_run
//! use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig};
//! use walship_wal::Lsn;
//!
//! struct Kv { applied: Lsn }
//! impl Applier for Kv {
//!     fn applied_lsn(&self) -> Lsn { self.applied }
//!     fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
//!         self.applied = lsn;
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), walship_node::replica::ReplicaError> {
//! let tls = walship_wire::TlsFiles::for_node(std::path::Path::new("certs"), "n2");
//! let config = ReplicaConfig::new("n2", "cluster-1", "data/n2", "127.0.0.1:7000".parse().unwrap(), "n1", tls);
//! let replica = Replica::open(config, Kv { applied: 0 })?;
//! replica.check_readable()?; // Err(ReplicaError::Halted { .. }) while halted
//! println!("{:?}", replica.status());
//! replica.shutdown().await?;
//! # Ok(()) }
//! ```

mod driver;
pub mod exec;
pub use exec::apply_record;
pub use walship_replica::{core, halt};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use walship_wal::state::{DirLock, StateError};
use walship_wal::{FsStorage, Lsn, Position, Storage, WalError, WalOptions};
use walship_wire::{EndpointError, TlsFiles, TransportOptions};

pub use walship_replica::core::{
    Action, CoreConfig, DurableState, Event, LocalLog, Phase, ReplicaCore, SessionEnd,
    VerifiedBatch,
};
pub use walship_replica::halt::{
    clear_halt, read_halt, write_halt, HaltError, HaltReason, HaltRecord,
};

/// The error an [`Applier`] returns; it stops the replica (a node stop, not a halt).
pub type ApplyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The embedder's side: receives committed records in lsn order, each once.
///
/// Called from the replica's own thread. Records are whole, verified, durable
/// on this replica and at or below the commit watermark.
pub trait Applier: Send + 'static {
    /// The embedder's durable apply point: every lsn up to it has been applied
    /// and survives a crash of the embedder. On open, committed records in the
    /// local WAL above it are replayed first (FM-4.2).
    fn applied_lsn(&self) -> Lsn;
    /// Applies record `lsn` (always `previous + 1`, counting the control
    /// records passed to [`Applier::apply_control`]).
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError>;
    /// A committed control record at `lsn` (the node's own record, e.g. the
    /// first record of a new primary's epoch; `spec/wal-format.md`, "Control
    /// records"): never a payload of the embedder's. The default does nothing;
    /// an embedder that persists its apply point may record `lsn` here, else a
    /// replay after a restart passes the record again.
    fn apply_control(
        &mut self,
        lsn: Lsn,
        control: &walship_wal::control::ControlRecord,
    ) -> Result<(), ApplyError> {
        let _ = (lsn, control);
        Ok(())
    }
    /// The embedder's snapshot restore, if it has one (default: none).
    ///
    /// With a sink, a replica whose next record the primary no longer retains
    /// receives the primary's snapshot, installs it atomically
    /// (`spec/snapshot-format.md` §2.2) and restores it through the sink (the
    /// applied lsn then equals the boundary lsn); on open, an applier behind the
    /// newest installed snapshot is restored from it before the WAL is replayed.
    /// Without one, such a replica ends each session with
    /// [`SessionEnd::SnapshotRequired`] and needs an operator.
    fn snapshot_sink(&mut self) -> Option<&mut dyn walship_snapshot::SnapshotSink> {
        None
    }
}

/// Configuration of a replica node.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This node's id (its certificate's DNS name).
    pub node_id: String,
    /// The cluster id (must equal the primary's).
    pub cluster_id: String,
    /// The node's data directory (`LOCK`, `wal/`, `state/`, `snapshots/`).
    pub data_dir: PathBuf,
    /// Where the primary listens.
    pub primary_addr: SocketAddr,
    /// The primary's node id: its certificate must be valid for this name.
    pub primary_name: String,
    /// CA, certificate and key files of this node.
    pub tls: TlsFiles,
    /// Local address of the client endpoint (default `0.0.0.0:0`; use `127.0.0.1:0` on loopback).
    pub bind_addr: SocketAddr,
    /// QUIC keep-alive, idle timeout and flow-control windows.
    pub transport: TransportOptions,
    /// First reconnect delay after a session ends.
    pub backoff_initial_ms: u64,
    /// Ceiling of the exponential reconnect delay.
    pub backoff_max_ms: u64,
    /// WAL options (segment size, max record bytes).
    pub wal: WalOptions,
    /// Group sync: at most this many bytes are appended between two syncs
    /// while records keep arriving (a sync also happens whenever the input is idle).
    pub sync_every_bytes: usize,
    /// The lowest primary epoch accepted besides the replica's own history (default 0):
    /// the node sets it to its election epoch. A primary below
    /// `max(highest epoch seen, min_primary_epoch)` is refused (`Refuse{StalePrimary}`,
    /// a session end, not a halt; FM-X.2).
    pub min_primary_epoch: u64,
    /// The static base configuration of a cluster member (spec/membership.md): with it
    /// the replica tracks the configuration records of its log and reports the newest
    /// ([`ReplicaStatus::membership`]). `None` (default): it does not look at them.
    pub base_config: Option<walship_wal::control::Configuration>,
    /// The incarnation id of the data directory (`state/identity`), announced in `Hello`
    /// (default 0 = unknown): a cluster node sets it; a primary counts this replica's
    /// receipts only while it expects this incarnation (spec/protocol.md §12.1).
    pub incarnation: u64,
    /// Where the fsync latency histogram and the snapshot counter go (a node's
    /// [`crate::metrics::NodeMetrics`]); `None`: nowhere.
    pub metrics: Option<crate::metrics::RoleMetrics>,
}

impl ReplicaConfig {
    /// A configuration with defaults: bind `0.0.0.0:0`, default transport
    /// options, backoff 50 ms doubling to 2 s, default WAL options, group sync every 8 MiB.
    pub fn new(
        node_id: impl Into<String>,
        cluster_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        primary_addr: SocketAddr,
        primary_name: impl Into<String>,
        tls: TlsFiles,
    ) -> ReplicaConfig {
        ReplicaConfig {
            node_id: node_id.into(),
            cluster_id: cluster_id.into(),
            data_dir: data_dir.into(),
            primary_addr,
            primary_name: primary_name.into(),
            tls,
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            transport: TransportOptions::default(),
            backoff_initial_ms: 50,
            backoff_max_ms: 2_000,
            wal: WalOptions::default(),
            sync_every_bytes: 8 * 1024 * 1024,
            min_primary_epoch: 0,
            base_config: None,
            incarnation: 0,
            metrics: None,
        }
    }

    fn validate(&self) -> Result<(), ReplicaError> {
        let bad = |what: &str| Err(ReplicaError::Config(what.to_string()));
        if self.node_id.is_empty() {
            return bad("node_id is empty");
        }
        if self.cluster_id.is_empty() {
            return bad("cluster_id is empty");
        }
        if self.primary_name.is_empty() {
            return bad("primary_name is empty");
        }
        if self.node_id == self.primary_name {
            return bad("node_id equals primary_name: a replica cannot follow itself");
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return bad("backoff_initial_ms must be > 0 and <= backoff_max_ms");
        }
        if self.sync_every_bytes == 0 {
            return bad("sync_every_bytes must be > 0");
        }
        Ok(())
    }
}

/// Errors of the embedding API.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The configuration is invalid.
    #[error("invalid replica configuration: {0}")]
    Config(String),
    /// A state file or the directory lock failed (includes `Locked`: another process holds `DIR/LOCK`).
    #[error(transparent)]
    State(#[from] StateError),
    /// The local WAL failed (I/O, poisoned after a failed fsync). A node stop, not a halt.
    #[error("wal: {0}")]
    Wal(#[from] WalError),
    /// Reading or writing the halt file failed.
    #[error(transparent)]
    Halt(#[from] HaltError),
    /// The snapshot store failed locally (I/O, a failed fsync, the embedder's
    /// restore): a node stop, not a halt. Restart recovers (FM-4.3, FM-10.5).
    #[error("snapshot: {0}")]
    Snapshot(#[from] walship_snapshot::SnapshotError),
    /// TLS files or the QUIC endpoint could not be set up.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The replica is halted: reads are refused until an operator clears the halt.
    #[error("replica is {record}")]
    Halted {
        /// The halt record.
        record: Box<HaltRecord>,
    },
    /// The applier claims to have applied records this replica does not hold
    /// committed and durable.
    #[error("applier's applied lsn {applied_lsn} is above the replica's committed durable lsn {available_lsn}")]
    ApplierAhead {
        /// `Applier::applied_lsn()`.
        applied_lsn: Lsn,
        /// `min(commit_lsn, durable lsn)` of the local WAL.
        available_lsn: Lsn,
    },
    /// The applier failed on a record: the replica stopped (not a halt).
    #[error("applier failed at lsn {lsn}: {source}")]
    Apply {
        /// The record's lsn.
        lsn: Lsn,
        /// The applier's error.
        source: ApplyError,
    },
    /// A file system operation outside the WAL and state files failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The driver thread or its runtime could not be started, or stopped unexpectedly.
    #[error("replica runtime: {0}")]
    Runtime(String),
}

/// What the replica is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    /// Waiting to (re)connect, or connecting.
    Connecting,
    /// Connected, proving the prefix (Hello / Welcome / Probe).
    Handshaking,
    /// Prefix proven, records streaming.
    Streaming,
    /// The primary no longer retains this replica's next record: receiving
    /// and installing its snapshot.
    ReceivingSnapshot,
    /// Halted with this record: applies and streams nothing, refuses reads.
    Halted(HaltRecord),
    /// The node stopped on a local error (I/O, applier) or after `shutdown`; not a halt.
    Stopped(String),
}

/// A snapshot of the replica's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// This node's id.
    pub node_id: String,
    /// What the replica is doing (or the halt).
    pub state: ReplicaState,
    /// True while a QUIC connection to the primary is open.
    pub connected: bool,
    /// The authenticated primary of the current session, once it said `Welcome`.
    pub primary_id: Option<String>,
    /// The current primary's epoch, else the highest epoch seen.
    pub epoch: u64,
    /// The highest epoch this replica has seen (fencing bound).
    pub highest_epoch_seen: u64,
    /// Identity of the last record in the local WAL (`None` while halted at
    /// open: a halted replica does not open its WAL; use `walship-recover inspect`).
    pub last: Option<Position>,
    /// Highest lsn fsynced in the local WAL (`None` as for `last`).
    pub durable_lsn: Option<Lsn>,
    /// The commit watermark received from the primary.
    pub commit_lsn: Lsn,
    /// Highest lsn delivered to the applier.
    pub applied_lsn: Lsn,
    /// The primary's last lsn as last announced (0 before the first `Welcome`).
    pub primary_last_lsn: Lsn,
    /// `primary_last_lsn - durable_lsn` (records this replica lacks), 0 if unknown.
    pub lag_records: u64,
    /// Number of sessions that reached the primary (connections opened).
    pub sessions: u64,
    /// Why the last session ended (or the last connection attempt failed), if one did.
    pub last_session_end: Option<String>,
    /// The newest configuration in the log (with [`ReplicaConfig::base_config`] only).
    pub membership: Option<crate::membership::MembershipView>,
}

impl ReplicaStatus {
    /// The halt record, if halted.
    pub fn halt(&self) -> Option<&HaltRecord> {
        match &self.state {
            ReplicaState::Halted(h) => Some(h),
            _ => None,
        }
    }
}

/// State shared between the handle and the driver thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The read gate: `Some` while halted. A halt takes the write lock before
    /// the halt file is written, so a read either completed before the halt or is refused.
    pub(crate) gate: RwLock<Option<HaltRecord>>,
    pub(crate) status: Mutex<ReplicaStatus>,
    /// Why the node stopped ([`ReplicaState::Stopped`]), once it did; never cleared.
    pub(crate) stopped: tokio::sync::watch::Sender<Option<String>>,
    /// The applier, handed back once the executor ended ([`Replica::take_applier`]).
    pub(crate) returned_applier: ReturnedApplier,
}

/// The applier a finished executor handed back.
#[derive(Default)]
pub(crate) struct ReturnedApplier(Mutex<Option<Box<dyn Applier>>>);

impl std::fmt::Debug for ReturnedApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReturnedApplier")
    }
}

impl ReturnedApplier {
    pub(crate) fn put(&self, applier: Box<dyn Applier>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(applier);
    }

    fn take(&self) -> Option<Box<dyn Applier>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Shared {
    pub(crate) fn update_status(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        let mut guard = match self.status.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard);
        if let ReplicaState::Stopped(why) = &guard.state {
            // The first stop wins; `wait_stopped` resolves with it.
            self.stopped.send_if_modified(|s| {
                if s.is_some() {
                    return false;
                }
                *s = Some(why.clone());
                true
            });
        }
    }
}

/// A running (or halted) replica. See the crate documentation.
pub struct Replica {
    node_id: String,
    shared: Arc<Shared>,
    driver: Option<driver::DriverHandle>,
    /// Held for the life of the handle (also while halted): `walship-recover`
    /// cannot work on the directory while the node runs.
    lock: Option<DirLock>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("node_id", &self.node_id)
            .field("running", &self.driver.is_some())
            .finish()
    }
}

impl Replica {
    /// Opens the replica: takes `DIR/LOCK`, reads `state/halt`, and
    ///
    /// - if halted: returns a replica in [`ReplicaState::Halted`] that never
    ///   opens its WAL, connects or applies anything (the directory stays
    ///   exactly as it was; FM-10.3, FM-11.3);
    /// - else opens the node directory and the WAL (recovery scan: a torn
    ///   tail is cut, FM-X.7). Local corruption (FM-X.6) writes a
    ///   `local-corruption` halt naming segment, offset and lsn, and returns a
    ///   halted replica; so does a log that ends below the persisted commit
    ///   watermark (a damaged synced last record was cut: `lsn` = log end + 1,
    ///   expected/found name both lsns); other I/O errors are returned;
    /// - replays the committed records above `applier.applied_lsn()` to the
    ///   applier before returning (FM-4.2);
    /// - starts the driver thread, which connects to the primary.
    ///
    /// The scan and the replay are blocking file I/O: called on a multi-thread tokio
    /// runtime they run with the calling worker handed off
    /// (`walship_wire::blocking::run_off_worker`), so the runtime's other tasks keep running.
    pub fn open(config: ReplicaConfig, applier: impl Applier) -> Result<Replica, ReplicaError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ReplicaError::Io {
            op: "create data directory",
            path: config.data_dir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(&config.data_dir)?;
        let mut replica = Replica::open_with_storage(FsStorage, config, applier)?;
        replica.lock = Some(lock);
        Ok(replica)
    }

    /// Like [`Replica::open`] over any [`Storage`] (e.g. `walship_wal::sim::SimStorage`
    /// for fault-injection tests), without `DIR/LOCK` (an flock needs the real file
    /// system): the caller guarantees that nothing else uses the directory.
    pub fn open_with_storage<S: Storage>(
        storage: S,
        config: ReplicaConfig,
        applier: impl Applier,
    ) -> Result<Replica, ReplicaError> {
        config.validate()?;
        let node_id = config.node_id.clone();
        // The recovery scan and the replay to the applier block on file I/O.
        let (shared, driver) = walship_wire::blocking::run_off_worker(move || {
            driver::start(storage, config, Box::new(applier))
        })?;
        Ok(Replica {
            node_id,
            shared,
            driver,
            lock: None,
        })
    }

    /// A snapshot of the replica's state.
    pub fn status(&self) -> ReplicaStatus {
        match self.shared.status.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `Err(ReplicaError::Halted)` while halted, else `Ok(())`.
    pub fn check_readable(&self) -> Result<(), ReplicaError> {
        self.with_reads(|| ())
    }

    /// Runs `f` (a read of the embedder's applied state) unless the replica is
    /// halted. A halt decided while `f` runs waits for `f` to finish before the
    /// halt file is written, so every read either precedes the halt or is refused.
    /// `f` must be short and must not call `with_reads`/`check_readable` itself
    /// (the gate is a read lock that a pending halt would block).
    pub fn with_reads<R>(&self, f: impl FnOnce() -> R) -> Result<R, ReplicaError> {
        let gate = match self.shared.gate.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(record) = gate.as_ref() {
            return Err(ReplicaError::Halted {
                record: Box::new(record.clone()),
            });
        }
        Ok(f())
    }

    /// Resolves with the reason once the node stopped ([`ReplicaState::Stopped`]: a local
    /// I/O error — a failed fsync, ENOSPC —, the applier's error, or a shutdown). A process
    /// embedding the replica waits on it to exit instead of running on as a zombie. It
    /// does not resolve for a halt: a halted replica keeps its state and waits for an
    /// operator ([`Replica::halt`]).
    pub fn wait_stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.shared.stopped.subscribe();
        async move {
            loop {
                if let Some(why) = rx.borrow_and_update().clone() {
                    return why;
                }
                if rx.changed().await.is_err() {
                    // The replica is gone without a stop: nothing will come.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// The halt record, if halted.
    pub fn halt(&self) -> Option<HaltRecord> {
        match self.shared.gate.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stops streaming, makes appended records durable, stops the driver
    /// thread and releases `DIR/LOCK`. Returns the error that stopped the
    /// node earlier, if any (a halt is not an error here).
    pub async fn shutdown(self) -> Result<(), ReplicaError> {
        self.shutdown_returning_applier().await.0
    }

    /// [`Replica::shutdown`], then hands back the applier given to [`Replica::open`] (a
    /// node switching roles passes it on). `None` only if the executor thread died
    /// without ending (a panic: a broken invariant).
    pub async fn shutdown_returning_applier(
        mut self,
    ) -> (Result<(), ReplicaError>, Option<Box<dyn Applier>>) {
        let result = match self.driver.take() {
            Some(d) => d.stop().await,
            None => Ok(()),
        };
        self.lock.take();
        (result, self.shared.returned_applier.take())
    }
}

/// Dropping a running replica stops its driver and waits for its thread (a
/// short blocking wait: the current step, then at most 500 ms to flush the QUIC
/// close); prefer [`Replica::shutdown`] in async code.
impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            // Without an await the thread is only told to stop; it exits on its own.
            d.signal_stop();
        }
    }
}
