//! The primary role: the embedding API [`Primary`] and its tokio/quinn driver.
//!
//! Owns the sans-IO primary core ([`core`]: handshake checks, pipelined shipping with a
//! bounded window per replica, receipts, quorum commit arithmetic), the [`LogSource`]
//! adapters over the WAL ([`log`]), the tokio/quinn driver ([`driver`]) and the embedding
//! API [`Primary`]. It does not verify or apply records (walship-replica), define the wire
//! format (walship-wire) or the record layout (walship-wal).
//!
//! ```no_run
//! # async fn demo() -> Result<(), walship_node::primary::PrimaryError> {
//! use walship_node::primary::{Primary, PrimaryConfig};
//! use walship_wire::TlsFiles;
//! let certs = std::path::Path::new("certs");
//! let config = PrimaryConfig::new(
//!     "n1",
//!     "cluster-a",
//!     "/var/lib/walship/n1",
//!     "127.0.0.1:7000".parse().expect("address"),
//!     vec!["n1".into(), "n2".into(), "n3".into()],
//!     TlsFiles::for_node(certs, "n1"),
//! );
//! let primary = Primary::open(config)?;          // inside a tokio runtime
//! let lsn = primary.append(b"hello".as_slice()).await?; // committed by a majority
//! assert!(primary.commit_lsn() >= lsn);
//! primary.shutdown().await;
//! # Ok(()) }
//! ```

pub mod driver;
pub mod exec;
mod maintain;
pub use maintain::snapshot_error_stops_the_node;
pub use walship_primary::{core, log, proto};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info};
pub use walship_snapshot::retention::SnapshotPolicy;
use walship_snapshot::{InstalledSnapshot, SnapshotError, SnapshotSource};
use walship_wal::state::{DirLock, StateError};
use walship_wal::RECORD_HEADER_LEN;
use walship_wal::{Lsn, WalError, WalOptions};
use walship_wire::{CloseCode, EndpointError, TlsFiles, TransportOptions, MAX_BATCH_BYTES};

use self::driver::{Input, Shared};
use self::exec::{ExecConfig, PrimaryExec};
pub use self::maintain::BoxedSnapshotSource;
use self::maintain::Maintenance;
#[cfg(feature = "fault-injection")]
pub use walship_primary::core::ShipFault;
pub use walship_primary::core::{
    CoreError, CoreStatus, LogSource, Quorum, QuorumError, ReplicaProgress, Window,
};

/// Configuration of a primary node.
#[derive(Clone, Debug)]
pub struct PrimaryConfig {
    /// This node's id (its certificate's DNS name); must be in `members`.
    pub node_id: String,
    /// Cluster id; replicas with another are refused.
    pub cluster_id: String,
    /// The node's data directory (`LOCK`, `wal/`, `state/`, `snapshots/`).
    pub data_dir: PathBuf,
    /// UDP address the QUIC server binds (port 0 picks one; see [`Primary::local_addr`]).
    pub listen_addr: SocketAddr,
    /// Every member's node id, this primary's own included (N of the quorum rule).
    pub members: Vec<String>,
    /// Quorum policy (default majority).
    pub quorum: Quorum,
    /// How long `append` waits for the quorum before [`PrimaryError::CommitTimeout`].
    pub commit_timeout_ms: u64,
    /// CA, certificate and key files of this node.
    pub tls: TlsFiles,
    /// QUIC keep-alive, idle timeout and flow-control windows.
    pub transport: TransportOptions,
    /// WAL segment size.
    pub segment_size_bytes: u64,
    /// Largest record payload accepted by `append`.
    pub max_record_bytes: u32,
    /// Per-replica shipping window.
    pub window: Window,
    /// Retention cap: WAL segments are kept for a lagging (or absent) replica only while
    /// they hold at most this many bytes; past it, a replica the newest snapshot covers
    /// is switched to that snapshot (`spec/snapshot-format.md` §6). Records after the
    /// newest snapshot are always kept; without a snapshot nothing is truncated.
    pub max_retained_wal_bytes: u64,
    /// Payload bytes per chunk of the snapshots this primary creates (≤ 4 MiB).
    pub snapshot_chunk_size_bytes: u32,
    /// When the maintenance task creates a snapshot by itself (every N records or bytes
    /// since the newest one), once the embedder registered a source
    /// ([`Primary::set_snapshot_source`]). Default: never.
    pub snapshot_policy: SnapshotPolicy,
    /// Period of the maintenance task (snapshot by policy, then retention).
    pub maintenance_interval_ms: u64,
    /// `Some(E)`: this node won the election of epoch `E` and starts it (a failover): `E`
    /// must be above the epoch history's last epoch; `{E, log end + 1}` is added to the
    /// history and the control record of `E` is the epoch's first record. `None` (default):
    /// the history's last epoch continues (epoch 1 at lsn 1 on an empty directory).
    pub new_epoch: Option<u64>,
    /// The static base configuration (spec/membership.md), in effect until the log holds a
    /// configuration record. `None` (default): every id of `members` votes.
    pub base_config: Option<walship_wal::control::Configuration>,
    /// With `new_epoch`: a forced configuration written right after the epoch's control
    /// record (`walship ctl force-quorum`; see `ExecConfig::forced_config`).
    pub forced_config: Option<walship_wal::control::Configuration>,
    /// Where the commit and fsync latency histograms and the snapshot counter go (a
    /// node's [`crate::metrics::NodeMetrics`]); `None`: nowhere.
    pub metrics: Option<crate::metrics::RoleMetrics>,
}

/// A fault in the next snapshot transfer to one replica (demo/test use only).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotFault {
    /// Flip the first byte of chunk `index` as shipped (its stored crc no longer matches).
    CorruptChunk {
        /// The chunk.
        index: u64,
    },
    /// Close the connection right after chunk `index` was sent.
    CloseAfterChunk {
        /// The last chunk sent.
        index: u64,
    },
}

/// What [`Primary::enforce_retention`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionReport {
    /// The first retained lsn afterwards.
    pub first_lsn: Lsn,
    /// Replicas that will get the newest snapshot instead of the log.
    pub switched_to_snapshot: Vec<String>,
    /// Bytes of WAL segments kept.
    pub retained_bytes: u64,
    /// A replica is over the cap and no snapshot covers it: create one.
    pub snapshot_needed: bool,
}

impl PrimaryConfig {
    /// A configuration with defaults: majority quorum, 10 s commit timeout, default transport
    /// options, 64 MiB segments, 4 MiB max record, default window (1 MiB batches, 32 MiB /
    /// 256 Ki records in flight per replica).
    pub fn new(
        node_id: impl Into<String>,
        cluster_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        listen_addr: SocketAddr,
        members: Vec<String>,
        tls: TlsFiles,
    ) -> PrimaryConfig {
        let wal = WalOptions::default();
        PrimaryConfig {
            node_id: node_id.into(),
            cluster_id: cluster_id.into(),
            data_dir: data_dir.into(),
            listen_addr,
            members,
            quorum: Quorum::Majority,
            commit_timeout_ms: 10_000,
            tls,
            transport: TransportOptions::default(),
            segment_size_bytes: wal.segment_size_bytes,
            max_record_bytes: wal.max_record_bytes,
            window: Window::default(),
            max_retained_wal_bytes: 1024 * 1024 * 1024,
            snapshot_chunk_size_bytes: 1024 * 1024,
            snapshot_policy: SnapshotPolicy::default(),
            maintenance_interval_ms: 1_000,
            new_epoch: None,
            base_config: None,
            forced_config: None,
            metrics: None,
        }
    }

    fn validate(&self) -> Result<(), PrimaryError> {
        let bad = |field: &'static str, reason: String| {
            Err(PrimaryError::InvalidConfig { field, reason })
        };
        if self.node_id.is_empty() {
            return bad("node_id", "is empty".into());
        }
        if self.cluster_id.is_empty() {
            return bad("cluster_id", "is empty".into());
        }
        if self.commit_timeout_ms == 0 {
            return bad("commit_timeout_ms", "must be > 0".into());
        }
        let frame_room = MAX_BATCH_BYTES;
        if self.max_record_bytes as usize + RECORD_HEADER_LEN > frame_room {
            return bad(
                "max_record_bytes",
                format!(
                    "a record must fit a frame: at most {} bytes",
                    frame_room - RECORD_HEADER_LEN
                ),
            );
        }
        if self.maintenance_interval_ms == 0 {
            return bad("maintenance_interval_ms", "must be > 0".into());
        }
        if self.snapshot_chunk_size_bytes == 0
            || self.snapshot_chunk_size_bytes > walship_snapshot::MAX_CHUNK_SIZE_BYTES
        {
            return bad(
                "snapshot_chunk_size_bytes",
                format!(
                    "must be 1 ..= {} bytes",
                    walship_snapshot::MAX_CHUNK_SIZE_BYTES
                ),
            );
        }
        if self.window.max_batch_bytes > MAX_BATCH_BYTES {
            return bad(
                "window.max_batch_bytes",
                format!("a batch must fit a frame: at most {MAX_BATCH_BYTES} bytes"),
            );
        }
        Ok(())
    }
}

/// Errors of the embedding API.
#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    /// A configuration value is unusable.
    #[error("invalid primary config: {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Membership, quorum or window rejected by the core.
    #[error("invalid primary config: {0}")]
    Core(#[from] CoreError),
    /// The data directory's lock or state files (locked by another process, bad state file).
    #[error(transparent)]
    State(#[from] StateError),
    /// The WAL failed (I/O, corruption found on open, poisoned after a failed sync, too large).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The data directory holds records but no epoch history: it was not a primary's.
    #[error("{dir}: the WAL holds records up to lsn {last_lsn} but state/epochs is missing (promote it with walship-recover first)")]
    NoEpochHistory {
        /// The data directory.
        dir: PathBuf,
        /// The WAL's last lsn.
        last_lsn: Lsn,
    },
    /// The WAL holds records of a higher epoch than the epoch history's last.
    #[error("{dir}: the WAL has records of epoch {wal_epoch}, above the epoch history's last epoch {history_epoch}")]
    EpochBehindLog {
        /// The data directory.
        dir: PathBuf,
        /// Epoch of the WAL's last record.
        wal_epoch: u64,
        /// The epoch history's last epoch.
        history_epoch: u64,
    },
    /// Local corruption (FM-X.6): the recovered log (after any torn-tail cut; its last record
    /// or the snapshot boundary it starts after) ends below the persisted commit watermark, so
    /// records that were acknowledged are gone. The node refuses to start instead of reusing
    /// their lsns. A torn-tail cut that would end the log below the watermark is not made
    /// (`log_end` is where the log would end after it): the WAL's files stay byte for byte as
    /// they were. The operator restores the records from a replica (or resyncs), or accepts
    /// the loss with `walship-recover rewind DIR --to LOG_END --accept-data-loss`.
    #[error("{dir}: acknowledged records lost: log ends at lsn {log_end}, commit watermark {commit_lsn} (local corruption, FM-X.6); refusing to start. Restore the records (e.g. from a replica that holds them), or accept their loss: walship-recover rewind {dir} --to {log_end} --accept-data-loss")]
    AcknowledgedRecordsLost {
        /// The data directory.
        dir: PathBuf,
        /// The last lsn of the recovered log.
        log_end: Lsn,
        /// The persisted commit watermark (`state/commit`).
        commit_lsn: Lsn,
    },
    /// The QUIC/TLS endpoint could not be set up.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The record is durable locally but the quorum did not confirm it within the commit
    /// timeout; it stays tentative above the commit watermark (it may still commit later).
    #[error(
        "commit of lsn {lsn} timed out: the record stays tentative above the commit watermark"
    )]
    CommitTimeout {
        /// The record's lsn.
        lsn: Lsn,
    },
    /// The primary is shutting down.
    #[error("the primary is shutting down")]
    ShuttingDown,
    /// A background thread or task failed.
    #[error("primary task failed: {0}")]
    Task(String),
    /// A configuration change was refused (spec/membership.md rule 3, or it would remove
    /// the primary, or the quorum could not be met); nothing was written.
    #[error("configuration change refused: {0}")]
    Membership(String),
    /// Creating, reading or recovering a snapshot failed.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The primary stopped after a fatal failure of its own storage: it accepts no append,
    /// ships nothing and must be restarted (recovery starts from what the disk holds).
    #[error("the primary stopped: {0}")]
    Stopped(PrimaryStop),
    /// `new_epoch` asked to start an epoch that is not above the epoch history's last.
    #[error("cannot start epoch {requested}: the epoch history already reaches epoch {last}")]
    EpochNotNew {
        /// The epoch asked for.
        requested: u64,
        /// The epoch history's last epoch.
        last: u64,
    },
    /// This primary learned of a higher epoch (a replica's `Hello` or its
    /// `Refuse{StalePrimary}`): another primary may exist. It acknowledges no append
    /// and never advances its commit watermark again; the node steps down.
    #[error("fenced: a member has seen epoch {epoch}, above this primary's")]
    Fenced {
        /// The higher epoch learned.
        epoch: u64,
    },
}

/// Why a primary stopped by itself: its own storage failed. Nothing is retried — after a
/// failed fsync the page cache may have dropped what it was to write, and a retry could
/// falsely succeed (`spec/failure-matrix.md` FM-X.5).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrimaryStop {
    /// An append failed in the WAL: a failed fsync (the WAL is poisoned), ENOSPC or
    /// another I/O error of the write path.
    #[error("the WAL failed: {error}")]
    Wal {
        /// The WAL error.
        error: String,
    },
    /// Persisting the commit watermark (`state/commit`: write, fsync, rename, fsync of
    /// `state/`) failed.
    #[error("persisting the commit watermark {commit_lsn} failed: {error}")]
    CommitWatermark {
        /// The watermark being written.
        commit_lsn: Lsn,
        /// The error.
        error: String,
    },
    /// Snapshot creation or WAL retention failed on this node's storage (a failed fsync
    /// poisons the snapshot store; the WAL is never truncated behind an unsynced snapshot).
    #[error("snapshot maintenance failed: {error}")]
    Maintenance {
        /// The error.
        error: String,
    },
}

/// What `status()` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryStatus {
    /// This node's id.
    pub node_id: String,
    /// Current epoch.
    pub epoch: u64,
    /// Quorum policy.
    pub quorum: Quorum,
    /// Local durable lsn.
    pub durable_lsn: Lsn,
    /// Commit watermark.
    pub commit_lsn: Lsn,
    /// Per replica member: connected, durable lsn, lag (records, bytes), last receipt age.
    pub replicas: Vec<ReplicaProgress>,
    /// Why the primary stopped, once a fatal storage failure stopped it.
    pub stopped: Option<PrimaryStop>,
}

/// A running primary: appends, ships to replicas over QUIC, commits by quorum.
pub struct Primary {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    maintenance: Arc<Maintenance>,
    maintenance_task: Option<tokio::task::JoinHandle<()>>,
    max_record_bytes: u32,
    data_dir: PathBuf,
    exec_thread: Option<std::thread::JoinHandle<()>>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    /// False when opened with [`Primary::open_on_endpoint`]: the endpoint is the caller's.
    owns_endpoint: bool,
    lock: Option<DirLock>,
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary")
            .field("node_id", &self.shared.node_id)
            .field("data_dir", &self.data_dir)
            .field("commit_lsn", &self.commit_lsn())
            .finish()
    }
}

impl PrimaryConfig {
    /// The executor's part of this configuration.
    pub fn exec_config(&self) -> ExecConfig {
        ExecConfig {
            node_id: self.node_id.clone(),
            cluster_id: self.cluster_id.clone(),
            members: self.members.clone(),
            quorum: self.quorum,
            window: self.window,
            segment_size_bytes: self.segment_size_bytes,
            max_record_bytes: self.max_record_bytes,
            commit_timeout_ms: Some(self.commit_timeout_ms),
            tick_ms: exec::DEFAULT_TICK_MS,
            persist_interval_ms: exec::DEFAULT_PERSIST_INTERVAL_MS,
            new_epoch: self.new_epoch,
            base_config: self.base_config.clone(),
            forced_config: self.forced_config.clone(),
        }
    }
}

impl Primary {
    /// Opens the data directory (exclusive lock, WAL recovery scan, epoch history, persisted
    /// commit watermark) and starts serving replicas. A recovered log ending below the
    /// persisted commit watermark is [`PrimaryError::AcknowledgedRecordsLost`] (FM-X.6). The
    /// first start of an empty directory creates epoch 1 starting at lsn 1. Must be called
    /// inside a tokio runtime (quinn binds its socket to it). The recovery scan is blocking
    /// file I/O: on a multi-thread runtime it runs with the calling worker handed off
    /// (`walship_wire::blocking::run_off_worker`), so the runtime's other tasks keep running.
    pub fn open(config: PrimaryConfig) -> Result<Primary, PrimaryError> {
        walship_wire::blocking::run_off_worker(move || Primary::open_blocking(config, None))
    }

    /// Like [`Primary::open`], serving on `endpoint`, which the caller owns and keeps
    /// accepting on: `config.listen_addr` is not bound, and the caller hands each replica
    /// session to [`Primary::serve_session`]. Shutting the primary down closes its
    /// sessions, not the endpoint. A [`crate::Node`] serves its primary role this way, on
    /// the endpoint that also carries its election messages.
    pub fn open_on_endpoint(
        config: PrimaryConfig,
        endpoint: quinn::Endpoint,
    ) -> Result<Primary, PrimaryError> {
        walship_wire::blocking::run_off_worker(move || {
            Primary::open_blocking(config, Some(endpoint))
        })
    }

    /// Serves one replica session (a primary opened with [`Primary::open_on_endpoint`]):
    /// `node_id` is the member the connection's certificate proved, `send`/`recv` the
    /// stream the replica opened. Returns at once; the session runs on a task.
    pub fn serve_session(
        &self,
        conn: quinn::Connection,
        node_id: String,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        use tracing::Instrument;
        let shared = self.shared.clone();
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("replica_conn", replica = %node_id, conn = id, remote = %conn.remote_address());
        tokio::spawn(driver::serve_session(conn, id, node_id, send, recv, shared).instrument(span));
    }

    /// [`Primary::open`]'s work, on a thread that may block.
    fn open_blocking(
        config: PrimaryConfig,
        endpoint: Option<quinn::Endpoint>,
    ) -> Result<Primary, PrimaryError> {
        config.validate()?;
        let span = tracing::info_span!("primary_open", node = %config.node_id, dir = %config.data_dir.display());
        let _g = span.enter();
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| {
            PrimaryError::Wal(WalError::Io {
                op: "create_dir_all",
                path: dir.clone(),
                source,
            })
        })?;
        let lock = DirLock::acquire(dir)?;
        let started = Instant::now();
        // Recovery, state files and the core: the executor's open, the simulator's too.
        let exec: driver::NodeExec =
            PrimaryExec::open(driver::node_storage(), dir, config.exec_config(), 0)?;
        let (epoch, durable, commit_lsn) =
            (exec.core().epoch(), exec.durable_lsn(), exec.commit_lsn());
        let wal = exec.wal().clone();
        let snapshots = exec.snapshots().clone();
        let owns_endpoint = endpoint.is_none();
        let endpoint = match endpoint {
            Some(e) => e,
            None => walship_wire::server_endpoint(
                config.listen_addr,
                &config.tls,
                &config.members,
                &config.transport,
            )?,
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            node_id: config.node_id.clone(),
            members: config.members.clone(),
            wal,
            exec: Mutex::new(exec),
            tx,
            commit_lsn: AtomicU64::new(commit_lsn),
            shutting_down: AtomicBool::new(false),
            closing: watch::channel(false).0,
            next_conn: AtomicU64::new(1),
            started,
            snapshots,
            metrics: config.metrics.clone(),
            stopped: watch::channel(None).0,
            #[cfg(feature = "fault-injection")]
            snapshot_faults: Mutex::new(std::collections::HashMap::new()),
        });
        let exec_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("walship-exec-{}", config.node_id))
                .spawn(move || driver::run_exec(shared, rx))
                .map_err(|e| PrimaryError::Task(format!("spawn thread: {e}")))?
        };
        let accept_task = owns_endpoint
            .then(|| tokio::spawn(driver::accept_loop(endpoint.clone(), shared.clone())));
        let maintenance = Arc::new(Maintenance {
            shared: shared.clone(),
            max_retained_wal_bytes: config.max_retained_wal_bytes,
            chunk_size_bytes: config.snapshot_chunk_size_bytes,
            policy: config.snapshot_policy,
            lock: Mutex::new(()),
            source: Mutex::new(None),
        });
        let maintenance_task = tokio::spawn(maintain::run(
            maintenance.clone(),
            Duration::from_millis(config.maintenance_interval_ms),
        ));
        info!(epoch, durable, commit_lsn, quorum = %config.quorum, addr = ?endpoint.local_addr().ok(), "primary serving");
        Ok(Primary {
            shared,
            endpoint,
            maintenance,
            maintenance_task: Some(maintenance_task),
            max_record_bytes: config.max_record_bytes,
            data_dir: config.data_dir,
            exec_thread: Some(exec_thread),
            accept_task,
            owns_endpoint,
            lock: Some(lock),
        })
    }

    /// Appends one record and resolves once it is committed under the quorum policy: durable
    /// locally (the executor thread's group commit, never on the runtime) and covered by the
    /// quorum's receipts. After `commit_timeout_ms` without the quorum it fails with
    /// [`PrimaryError::CommitTimeout`]; the record then stays tentative above the watermark.
    pub fn append(
        &self,
        payload: impl Into<Vec<u8>>,
    ) -> impl Future<Output = Result<Lsn, PrimaryError>> + Send + 'static {
        let payload: Vec<u8> = payload.into();
        let shared = self.shared.clone();
        let max = self.max_record_bytes;
        async move {
            if let Some(reason) = shared.stop_reason() {
                return Err(PrimaryError::Stopped(reason));
            }
            if shared.shutting_down.load(Ordering::Acquire) {
                return Err(PrimaryError::ShuttingDown);
            }
            if payload.len() > max as usize {
                return Err(PrimaryError::Wal(WalError::RecordTooLarge {
                    len: payload.len(),
                    max,
                }));
            }
            // One channel send; the executor decides when it is written, synced and acked.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let asked = Instant::now();
            if shared.tx.send(Input::Append { payload, tx }).is_err() {
                return Err(shared.gone_error());
            }
            match rx.await {
                Ok(result) => {
                    // Observed on the appender's task: an atomic add, off the executor thread.
                    if let (Ok(_), Some(m)) = (&result, &shared.metrics) {
                        m.commit_seconds.observe(asked.elapsed().as_secs_f64());
                    }
                    result
                }
                // The executor thread ended without answering (stopped or shut down).
                Err(_) => Err(shared.gone_error()),
            }
        }
    }

    /// Proposes a configuration (spec/membership.md): resolves with its lsn once it is
    /// committed under the old and the new voters, or with the refusal
    /// ([`PrimaryError::Membership`]: a change is pending, the change breaks the rules,
    /// it removes or demotes this primary, the quorum cannot be met) or the error that
    /// stopped the node. Like [`Primary::append`] it may time out after
    /// `commit_timeout_ms`; the record then stays in the log and may still commit.
    pub fn propose_configuration(
        &self,
        config: walship_wal::control::Configuration,
    ) -> impl Future<Output = Result<Lsn, PrimaryError>> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            if let Some(reason) = shared.stop_reason() {
                return Err(PrimaryError::Stopped(reason));
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if shared.tx.send(Input::Propose { config, tx }).is_err() {
                return Err(shared.gone_error());
            }
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(shared.gone_error()),
            }
        }
    }

    /// Milliseconds since this primary started.
    pub fn uptime_ms(&self) -> u64 {
        self.shared.now_ms()
    }

    /// The newest configuration of the log and whether it is committed.
    pub fn membership(&self) -> crate::membership::MembershipView {
        self.shared.lock_exec().membership()
    }

    /// The commit watermark: every lsn up to it is committed under the quorum policy.
    pub fn commit_lsn(&self) -> Lsn {
        self.shared.commit_lsn.load(Ordering::Acquire)
    }

    /// The local durable lsn.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.wal.durable_lsn()
    }

    /// Epoch, durable/commit lsn and per-replica progress.
    pub fn status(&self) -> PrimaryStatus {
        let s = self.shared.status();
        PrimaryStatus {
            node_id: self.shared.node_id.clone(),
            epoch: s.epoch,
            quorum: self.shared.lock_exec().core().quorum(),
            durable_lsn: s.durable_lsn,
            commit_lsn: self.commit_lsn().max(s.commit_lsn),
            replicas: s.replicas,
            stopped: self.shared.stop_reason(),
        }
    }

    /// Why the primary stopped, once a fatal failure of its own storage stopped it (a
    /// failed fsync of the WAL, the commit watermark or the snapshot store, ENOSPC, any WAL
    /// I/O error on append). A stopped primary refuses appends with
    /// [`PrimaryError::Stopped`], ships nothing more and must be shut down and restarted.
    pub fn stopped(&self) -> Option<PrimaryStop> {
        self.shared.stop_reason()
    }

    /// Resolves with the reason once the primary stopped (see [`Primary::stopped`]); a
    /// process embedding the primary waits on it to exit instead of running on as a
    /// zombie. Never resolves for a primary that keeps running.
    pub fn wait_stopped(&self) -> impl Future<Output = PrimaryStop> + Send + 'static {
        let mut rx = self.shared.stopped.subscribe();
        async move {
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    // The primary (and its sender) is gone without a stop: nothing will come.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// The storage faults of this primary (demo/test use only): arm them to make its
    /// WAL, state-file or snapshot syncs fail with EIO while it runs.
    #[cfg(feature = "fault-injection")]
    pub fn storage_faults(&self) -> walship_wal::fault::StorageFaults {
        self.shared.wal.with(|w| w.storage().faults().clone())
    }

    /// Committed records from `from_lsn` on, in lsn order: at most `max` of them and
    /// none above the commit watermark (a node's primary role applies them). Control
    /// records are included (`OwnedRecord::view().is_control()`).
    pub fn committed_records(
        &self,
        from_lsn: Lsn,
        max: usize,
    ) -> Result<Vec<walship_wal::OwnedRecord>, PrimaryError> {
        let commit = self.commit_lsn();
        let mut out = Vec::new();
        if from_lsn == 0 || from_lsn > commit {
            return Ok(out);
        }
        let mut reader = self.shared.wal.reader(from_lsn)?;
        while out.len() < max {
            match reader.next_record() {
                Some(Ok(r)) if r.lsn() <= commit => out.push(r),
                Some(Ok(_)) | None => break,
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Identities of at most `count` durable records from `from_lsn` (0: the first
    /// retained), for `GET /log/ids`: `(base, prev, durable_lsn, ids)` where `base` is the
    /// record before the first retained one and `prev` the record before `ids[0]`. Read
    /// through the shared WAL's reader (as records are shipped: concurrent with appends,
    /// never writing); nothing above the durable lsn read first is returned.
    pub fn record_ids(
        &self,
        from_lsn: Lsn,
        count: usize,
    ) -> Result<
        (
            walship_wal::Position,
            walship_wal::Position,
            Lsn,
            Vec<crate::http::RecordId>,
        ),
        PrimaryError,
    > {
        let durable = self.shared.wal.durable_lsn();
        let base = self.shared.wal.reader(0)?.position();
        let mut reader = self.shared.wal.reader(from_lsn)?;
        let prev = reader.position();
        let mut ids = Vec::with_capacity(count.min(4096));
        while ids.len() < count {
            match reader.next_record() {
                Some(Ok(r)) if r.lsn() <= durable => {
                    let h = r.view().header();
                    ids.push(crate::http::RecordId {
                        lsn: h.lsn,
                        epoch: h.epoch,
                        crc: h.crc,
                        prev_crc: h.prev_crc,
                        len: h.payload_len,
                    });
                }
                Some(Ok(_)) | None => break,
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Ok((base, prev, durable, ids))
    }

    /// The address the QUIC server is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, PrimaryError> {
        self.endpoint.local_addr().map_err(|source| {
            PrimaryError::Endpoint(EndpointError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Arms a fault for the next record shipped to `replica_id` (demo/test use only; the
    /// stored bytes stay intact, only the shipped copy is altered).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, replica_id: &str, fault: ShipFault) -> Result<(), PrimaryError> {
        self.shared.lock_exec().inject_fault(replica_id, fault)?;
        tracing::warn!(replica = replica_id, ?fault, "fault injection armed");
        Ok(())
    }

    /// Creates a snapshot of the embedder's state (`source` writes it and returns the lsn it
    /// corresponds to, which must be committed and durable here), publishes it atomically
    /// in `DIR/snapshots` (`spec/snapshot-format.md` §2.1), then applies retention
    /// ([`Primary::enforce_retention`]). Blocking file I/O: call it from a blocking context
    /// (e.g. `tokio::task::spawn_blocking`). Replicas whose next record is no longer
    /// retained get this snapshot on their next connection.
    pub fn create_snapshot(
        &self,
        source: &mut dyn SnapshotSource,
    ) -> Result<InstalledSnapshot, PrimaryError> {
        self.maintenance.create_snapshot(source)
    }

    /// Registers the embedder's snapshot source for the policy
    /// ([`PrimaryConfig::snapshot_policy`]): the maintenance task calls it from a blocking
    /// thread when a snapshot is due. Replaces a previous source.
    pub fn set_snapshot_source(&self, source: BoxedSnapshotSource) {
        *self
            .maintenance
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Truncates the WAL from the front behind the newest snapshot and behind what every
    /// replica still needs (its durable lsn + 1), except that a replica needing more than
    /// `max_retained_wal_bytes` of segments, and covered by the newest snapshot, is switched
    /// to the snapshot (`spec/snapshot-format.md` §6). Whole segments only. A replica whose
    /// session still streams below the new front is closed by the core (its next read is
    /// not retained) and gets the snapshot when it reconnects. The maintenance task runs it
    /// every `maintenance_interval_ms`; blocking file I/O.
    pub fn enforce_retention(&self) -> Result<RetentionReport, PrimaryError> {
        self.maintenance.enforce_retention()
    }

    /// Arms a fault for the next snapshot transfer to `replica_id` (demo/test use only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_snapshot_fault(&self, replica_id: &str, fault: SnapshotFault) {
        tracing::warn!(
            replica = replica_id,
            ?fault,
            "snapshot fault injection armed"
        );
        self.shared
            .snapshot_faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(replica_id.to_string(), fault);
    }

    /// Stops serving: closes every replica connection, stops the executor, writes the final
    /// commit watermark and releases the data directory lock. Appends in flight fail with
    /// [`PrimaryError::ShuttingDown`] or complete.
    ///
    /// Returns why the node stopped ([`Primary::stopped`]), read after the executor thread
    /// ended: `None` is a clean stop; a failure during the shutdown itself (the final write
    /// of `state/commit` failing its fsync, a WAL sync of an append in flight) is returned
    /// too, since a failed fsync is fatal and must not end as a clean exit.
    pub async fn shutdown(mut self) -> Option<PrimaryStop> {
        self.stop();
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        // The executor thread writes nothing after it ended: then the lock may go.
        if let Some(t) = self.exec_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if self.owns_endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        }
        self.lock.take();
        let stopped = self.shared.stop_reason();
        match &stopped {
            None => info!(node = %self.shared.node_id, "primary stopped"),
            Some(reason) => {
                error!(node = %self.shared.node_id, %reason, "primary stopped after a failure of its own storage")
            }
        }
        stopped
    }

    fn stop(&mut self) {
        if let Some(task) = self.maintenance_task.take() {
            task.abort();
        }
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.closing.send_replace(true);
        if self.owns_endpoint {
            self.endpoint
                .close(CloseCode::ShuttingDown.code(), b"primary shutting down");
        }
        let _ = self.shared.tx.send(Input::Shutdown);
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        if self.exec_thread.is_some() {
            // Dropped without shutdown(): stop the background work, do not wait for it.
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PrimaryConfig {
        PrimaryConfig::new(
            "p",
            "c",
            "/nonexistent/p",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            vec!["p".into(), "r1".into()],
            TlsFiles::for_node(Path::new("/nonexistent"), "p"),
        )
    }

    #[test]
    fn config_with_record_or_batch_above_the_frame_limit_is_rejected_naming_the_field() {
        let mut c = config();
        c.max_record_bytes = MAX_BATCH_BYTES as u32;
        assert!(matches!(
            c.validate(),
            Err(PrimaryError::InvalidConfig {
                field: "max_record_bytes",
                ..
            })
        ));
        let mut c = config();
        c.window.max_batch_bytes = MAX_BATCH_BYTES + 1;
        assert!(matches!(
            c.validate(),
            Err(PrimaryError::InvalidConfig {
                field: "window.max_batch_bytes",
                ..
            })
        ));
        let mut c = config();
        c.commit_timeout_ms = 0;
        assert!(matches!(
            c.validate(),
            Err(PrimaryError::InvalidConfig {
                field: "commit_timeout_ms",
                ..
            })
        ));
        assert!(config().validate().is_ok());
    }
}
