//! `walship node --config node.toml`: one primary or replica until SIGINT/SIGTERM, or until
//! the node stops by itself (a failed fsync, ENOSPC, any fatal failure of its own storage):
//! then the process exits non-zero with the reason, so a supervisor sees it and restarts
//! it (recovery starts from what the disk holds). A halted replica keeps running: it waits
//! for an operator (`walship-recover`), and a restart would not change anything.
//!
//! With the `fault-injection` feature (demo and tests only), the environment variable
//! `WALSHIP_FAULT_FAIL_SYNCS=<path>` makes every fsync of `<path>` or anything below it fail
//! with EIO once the node has opened (`walship_wal::fault::FaultyStorage`).

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use walship::config::{NodeConfig, RoleConfig};
use walship_node::primary::{Primary, PrimaryConfig, Quorum};
use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaState};
use walship_wal::record::Lsn;
use walship_wal::WalOptions;
use walship_wire::{TlsFiles, TransportOptions};

use crate::http_views;

/// Logs go to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn tls(cfg: &NodeConfig) -> TlsFiles {
    TlsFiles {
        ca: cfg.tls.ca.clone(),
        cert: cfg.tls.cert.clone(),
        key: cfg.tls.key.clone(),
    }
}

fn transport(cfg: &NodeConfig) -> TransportOptions {
    TransportOptions {
        keep_alive_ms: cfg.transport.keep_alive_ms,
        idle_timeout_ms: cfg.transport.idle_timeout_ms,
        ..TransportOptions::default()
    }
}

/// Maps a validated primary config onto the library's [`PrimaryConfig`].
pub fn primary_config(cfg: &NodeConfig) -> Result<PrimaryConfig, String> {
    let RoleConfig::Primary {
        listen_addr,
        members,
        quorum,
        commit_timeout_ms,
    } = &cfg.role
    else {
        return Err(format!(
            "node {} is not configured as a primary",
            cfg.node_id
        ));
    };
    let mut p = PrimaryConfig::new(
        cfg.node_id.clone(),
        cfg.cluster_id.clone(),
        cfg.data_dir.clone(),
        *listen_addr,
        members.clone(),
        tls(cfg),
    );
    p.quorum = Quorum::from_setting(*quorum).map_err(|e| format!("quorum: {e}"))?;
    p.commit_timeout_ms = *commit_timeout_ms;
    p.transport = transport(cfg);
    p.segment_size_bytes = cfg.wal.segment_size_bytes;
    p.max_record_bytes = cfg.wal.max_record_bytes;
    Ok(p)
}

/// Maps a validated replica config onto the library's [`ReplicaConfig`].
pub fn replica_config(cfg: &NodeConfig) -> Result<ReplicaConfig, String> {
    let RoleConfig::Replica {
        primary_addr,
        primary_name,
        ..
    } = &cfg.role
    else {
        return Err(format!(
            "node {} is not configured as a replica",
            cfg.node_id
        ));
    };
    let mut r = ReplicaConfig::new(
        cfg.node_id.clone(),
        cfg.cluster_id.clone(),
        cfg.data_dir.clone(),
        *primary_addr,
        primary_name.clone(),
        tls(cfg),
    );
    if primary_addr.ip().is_loopback() {
        r.bind_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    }
    r.transport = transport(cfg);
    r.wal = WalOptions {
        segment_size_bytes: cfg.wal.segment_size_bytes,
        max_record_bytes: cfg.wal.max_record_bytes,
        ..WalOptions::default()
    };
    Ok(r)
}

/// Maps a validated member config onto the library's [`walship_node::NodeConfig`].
pub fn member_config(cfg: &NodeConfig) -> Result<walship_node::NodeConfig, String> {
    let RoleConfig::Member {
        members,
        quorum,
        commit_timeout_ms,
        election_timeout_ms,
        lease_ms,
        deregistration_timeout_ms,
        auto_promote_learners,
    } = &cfg.role
    else {
        return Err(format!(
            "node {} is not configured as a member",
            cfg.node_id
        ));
    };
    let learners = members
        .iter()
        .filter(|m| m.learner)
        .map(|m| m.id.clone())
        .collect();
    let members = members
        .iter()
        .map(|m| walship_node::MemberAddr {
            node_id: m.id.clone(),
            addr: m.addr,
            http_addr: m.http_addr,
        })
        .collect();
    let mut n = walship_node::NodeConfig::new(
        cfg.node_id.clone(),
        cfg.cluster_id.clone(),
        cfg.data_dir.clone(),
        members,
        tls(cfg),
    );
    n.learners = learners;
    n.deregistration_timeout_ms = *deregistration_timeout_ms;
    n.auto_promote_learners = *auto_promote_learners;
    n.quorum = *quorum;
    n.commit_timeout_ms = *commit_timeout_ms;
    n.election_timeout_ms = *election_timeout_ms;
    n.lease_ms = *lease_ms;
    n.transport = transport(cfg);
    n.wal = WalOptions {
        segment_size_bytes: cfg.wal.segment_size_bytes,
        max_record_bytes: cfg.wal.max_record_bytes,
        ..WalOptions::default()
    };
    Ok(n)
}

/// A cluster member: leads or follows as elected, until SIGINT/SIGTERM or until it stops
/// by itself (a failed fsync of its own storage: exit non-zero with the reason). A halted
/// member keeps running and waits for an operator (`walship-recover`).
async fn run_member(cfg: &NodeConfig) -> Result<(), String> {
    let config = member_config(cfg)?;
    let http = http_views::bind(cfg).await?;
    let commit_timeout = Duration::from_millis(config.commit_timeout_ms);
    let node = Arc::new(
        walship_node::Node::open(config, LogOnlyApplier { applied: 0 })
            .await
            .map_err(|e| format!("open node: {e}"))?,
    );
    let http = http.map(|l| {
        l.serve(Arc::new(walship_node::cluster::NodeHttpView::new(
            Arc::clone(&node),
        )))
    });
    let mut roles = node.subscribe();
    let stopped = node.wait_stopped();
    tokio::pin!(stopped);
    let reason = loop {
        tokio::select! {
            _ = wait_for_shutdown_signal() => break None,
            why = &mut stopped => break Some(why),
            changed = roles.changed() => {
                if changed.is_err() {
                    break None;
                }
                let s = roles.borrow_and_update().clone();
                info!(node = %cfg.node_id, role = s.role.as_str(), epoch = s.epoch, primary = ?s.primary, reason = ?s.reason, "role changed");
            }
        }
    };
    info!(node = %cfg.node_id, "shutting down");
    http_views::stop(http, commit_timeout + Duration::from_secs(1)).await;
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown().await,
        Err(_) => warn!("the node is still referenced at shutdown; exiting without waiting"),
    }
    match reason {
        Some(why) => Err(format!("node {} stopped: {why}", cfg.node_id)),
        None => Ok(()),
    }
}

/// A standalone replica node keeps the log only: its applier accepts every
/// committed record and has no state of its own to make durable, so a replay
/// from the start on restart is a no-op.
struct LogOnlyApplier {
    applied: Lsn,
}

impl Applier for LogOnlyApplier {
    fn applied_lsn(&self) -> Lsn {
        self.applied
    }

    fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        self.applied = lsn;
        Ok(())
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the only way out is ctrl-c.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `walship node`.
pub fn run(config: &Path, append_stdin: bool) -> Result<(), String> {
    init_logging();
    let cfg = NodeConfig::load(config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        match cfg.role {
            RoleConfig::Primary { .. } => run_primary(&cfg, append_stdin).await,
            RoleConfig::Member { .. } => {
                if append_stdin {
                    return Err(
                        "--append-stdin needs a primary config; a member takes POST /append".into(),
                    );
                }
                run_member(&cfg).await
            }
            RoleConfig::Replica { .. } => {
                if append_stdin {
                    return Err("--append-stdin needs a primary config".into());
                }
                run_replica(&cfg).await
            }
        }
    })
}

/// The path of `WALSHIP_FAULT_FAIL_SYNCS`, if set (fault-injection builds only).
#[cfg(feature = "fault-injection")]
fn fault_fail_syncs() -> Option<std::path::PathBuf> {
    std::env::var_os("WALSHIP_FAULT_FAIL_SYNCS").map(std::path::PathBuf::from)
}

async fn run_primary(cfg: &NodeConfig, append_stdin: bool) -> Result<(), String> {
    let mut config = primary_config(cfg)?;
    let metrics = Arc::new(walship_node::metrics::NodeMetrics::new());
    config.metrics = Some(metrics.role().clone());
    let http = http_views::bind(cfg).await?;
    let (max_record_bytes, http_grace) = (
        config.max_record_bytes,
        Duration::from_millis(config.commit_timeout_ms) + Duration::from_secs(1),
    );
    let primary = Arc::new(Primary::open(config).map_err(|e| format!("open primary: {e}"))?);
    info!(node = %cfg.node_id, addr = ?primary.local_addr().ok(), "primary serving");
    // Armed before the HTTP endpoint serves: no append can be acknowledged before the fault.
    #[cfg(feature = "fault-injection")]
    if let Some(path) = fault_fail_syncs() {
        warn!(path = %path.display(), "fault injection: every fsync under this path fails from now on");
        primary.storage_faults().fail_syncs_under(path);
    }
    let http = http.map(|l| {
        let url = Some(http_views::url(l.local_addr()));
        l.serve(Arc::new(http_views::PrimaryView {
            primary: Arc::clone(&primary),
            http: url,
            max_record_bytes,
            metrics,
        }))
    });
    let stopped = primary.wait_stopped();
    if append_stdin {
        let p = Arc::clone(&primary);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        // stdin is blocking: read it on its own thread.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().split(b'\n') {
                match line {
                    Ok(bytes) => {
                        if tx.blocking_send(bytes).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        // The feeder ends when stdin ends or the node stopped, after reporting the append
        // in flight (the stop is visible before an append fails with it).
        let mut feeder = tokio::spawn(async move {
            tokio::pin!(stopped);
            loop {
                let bytes = tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    b = rx.recv() => match b {
                        Some(b) => b,
                        None => break,
                    },
                };
                match p.append(bytes).await {
                    Ok(lsn) => println!("committed {lsn}"),
                    Err(e) => println!("error {e}"),
                }
            }
        });
        let signalled = tokio::select! {
            _ = wait_for_shutdown_signal() => true,
            _ = &mut feeder => false,
        };
        if signalled {
            // The feeder holds a handle to the primary: end it, so the shutdown below is the
            // clean one that persists the final commit watermark (spec/state-files.md §3.1);
            // a stopped primary takes no append anyway.
            feeder.abort();
            let _ = feeder.await;
        }
    } else {
        tokio::select! {
            _ = wait_for_shutdown_signal() => {}
            _ = stopped => {}
        }
    }
    // Read after the wait: an append that stopped the node recorded the reason before it
    // returned, so a feeder that ended after a failed append sees it here too.
    let reason = primary.stopped();
    info!(node = %cfg.node_id, "shutting down");
    // The endpoint holds a handle to the primary: stop it first (in-flight appends finish).
    http_views::stop(http, http_grace).await;
    // A failure during the shutdown itself (the final state/commit fsync) is fatal too.
    let reason = match Arc::try_unwrap(primary) {
        Ok(p) => reason.or(p.shutdown().await),
        Err(_) => {
            warn!("appends still in flight at shutdown; exiting without waiting");
            reason
        }
    };
    match reason {
        Some(reason) => Err(format!("primary {} stopped: {reason}", cfg.node_id)),
        None => Ok(()),
    }
}

/// Opens the replica; with `WALSHIP_FAULT_FAIL_SYNCS` (fault-injection builds only) on a
/// storage whose fsyncs under that path fail once it is open. The returned lock (if any)
/// must live as long as the replica.
fn open_replica(
    cfg: &NodeConfig,
    metrics: &walship_node::metrics::NodeMetrics,
) -> Result<(Replica, Option<walship_wal::state::DirLock>), String> {
    let mut config = replica_config(cfg)?;
    config.metrics = Some(metrics.role().clone());
    let applier = LogOnlyApplier { applied: 0 };
    #[cfg(feature = "fault-injection")]
    if let Some(path) = fault_fail_syncs() {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("open replica: create {}: {e}", config.data_dir.display()))?;
        let lock = walship_wal::state::DirLock::acquire(&config.data_dir)
            .map_err(|e| format!("open replica: {e}"))?;
        let storage = walship_wal::fault::FaultyStorage::new(walship_wal::FsStorage);
        let replica = Replica::open_with_storage(storage.clone(), config, applier)
            .map_err(|e| format!("open replica: {e}"))?;
        warn!(path = %path.display(), "fault injection: every fsync under this path fails from now on");
        storage.faults().fail_syncs_under(path);
        return Ok((replica, Some(lock)));
    }
    let replica = Replica::open(config, applier).map_err(|e| format!("open replica: {e}"))?;
    Ok((replica, None))
}

async fn run_replica(cfg: &NodeConfig) -> Result<(), String> {
    let http = http_views::bind(cfg).await?;
    let metrics = Arc::new(walship_node::metrics::NodeMetrics::new());
    let (replica, lock) = open_replica(cfg, &metrics)?;
    let replica = Arc::new(replica);
    let http = http.map(|l| {
        let (primary, primary_http) = match &cfg.role {
            RoleConfig::Replica {
                primary_name,
                primary_http,
                ..
            } => (primary_name.clone(), primary_http.map(http_views::url)),
            RoleConfig::Primary { .. } | RoleConfig::Member { .. } => (String::new(), None),
        };
        l.serve(Arc::new(http_views::ReplicaView {
            replica: Arc::clone(&replica),
            primary,
            primary_http,
            max_record_bytes: cfg.wal.max_record_bytes,
            metrics,
        }))
    });
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    let mut reported_halt = false;
    let mut stopped = None;
    loop {
        tokio::select! {
            _ = wait_for_shutdown_signal() => break,
            why = replica.wait_stopped() => {
                stopped = Some(why);
                break;
            }
            _ = ticker.tick() => {
                let s = replica.status();
                if let ReplicaState::Halted(_) = s.state {
                    if !reported_halt {
                        if let Some(h) = s.halt() {
                            warn!(node = %cfg.node_id, reason = %h.reason, lsn = h.lsn, "replica is HALTED; run walship-recover status on its data directory");
                        }
                        reported_halt = true;
                    }
                } else {
                    info!(node = %cfg.node_id, connected = s.connected, epoch = s.epoch, durable_lsn = ?s.durable_lsn, commit_lsn = s.commit_lsn, lag_records = s.lag_records, "status");
                }
            }
        }
    }
    info!(node = %cfg.node_id, "shutting down");
    http_views::stop(http, Duration::from_secs(1)).await;
    let result = match Arc::try_unwrap(replica) {
        Ok(replica) => replica.shutdown().await,
        Err(_) => {
            warn!("the replica is still referenced at shutdown; exiting without waiting");
            Ok(())
        }
    };
    drop(lock);
    match (stopped, result) {
        // The error that stopped it says more than the status line.
        (Some(_), Err(e)) => Err(format!("replica {} stopped: {e}", cfg.node_id)),
        (Some(why), Ok(())) => Err(format!("replica {} stopped: {why}", cfg.node_id)),
        (None, r) => r.map_err(|e| format!("replica stopped with an error: {e}")),
    }
}
