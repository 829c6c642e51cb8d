//! `walship node --config node.toml`: one primary or replica until SIGINT/SIGTERM.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use walship::config::{NodeConfig, RoleConfig};
use walship_primary::{Primary, PrimaryConfig, Quorum};
use walship_replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaState};
use walship_wal::record::Lsn;
use walship_wal::WalOptions;
use walship_wire::{TlsFiles, TransportOptions};

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
            RoleConfig::Replica { .. } => {
                if append_stdin {
                    return Err("--append-stdin needs a primary config".into());
                }
                run_replica(&cfg).await
            }
        }
    })
}

async fn run_primary(cfg: &NodeConfig, append_stdin: bool) -> Result<(), String> {
    let primary =
        Arc::new(Primary::open(primary_config(cfg)?).map_err(|e| format!("open primary: {e}"))?);
    info!(node = %cfg.node_id, addr = ?primary.local_addr().ok(), "primary serving");
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
        let mut feeder = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
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
            // clean one that persists the final commit watermark (spec/state-files.md §3.1).
            feeder.abort();
            let _ = feeder.await;
        }
    } else {
        wait_for_shutdown_signal().await;
    }
    info!(node = %cfg.node_id, "shutting down");
    match Arc::try_unwrap(primary) {
        Ok(p) => p.shutdown().await,
        Err(_) => warn!("appends still in flight at shutdown; exiting without waiting"),
    }
    Ok(())
}

async fn run_replica(cfg: &NodeConfig) -> Result<(), String> {
    let replica = Replica::open(replica_config(cfg)?, LogOnlyApplier { applied: 0 })
        .map_err(|e| format!("open replica: {e}"))?;
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    let mut reported_halt = false;
    loop {
        tokio::select! {
            _ = wait_for_shutdown_signal() => break,
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
    replica
        .shutdown()
        .await
        .map_err(|e| format!("replica stopped with an error: {e}"))
}
