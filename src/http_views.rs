//! `walship node`'s HTTP endpoint (`http_addr`, `spec/http.md`): the [`NodeView`]s over
//! today's [`Primary`] and [`Replica`]. The endpoint itself is `walship_node::http`; the
//! unified node of issue 12 implements the same trait and these two adapters go.

use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use walship::config::NodeConfig;
use walship_node::http::{
    AppendError, AppendFuture, HttpListener, HttpServer, NodeStatus, NodeView,
};
use walship_node::primary::{Primary, PrimaryError};
use walship_node::replica::Replica;
use walship_wal::WalError;

/// `http://ip:port`, as `/status` and a refused append name an endpoint.
pub fn url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

/// Binds the configured `http_addr`, if any, before the node opens: a busy or invalid
/// address fails the start with the address named, before the data directory is touched.
pub async fn bind(cfg: &NodeConfig) -> Result<Option<HttpListener>, String> {
    let Some(addr) = cfg.http_addr else {
        return Ok(None);
    };
    let listener = HttpListener::bind(addr).await.map_err(|e| e.to_string())?;
    info!(node = %cfg.node_id, addr = %listener.local_addr(), "http endpoint listening");
    Ok(Some(listener))
}

/// Stops the endpoint (if any) before the node shuts down, so the node's handle is its
/// own again; requests still running after `grace` are cut.
pub async fn stop(server: Option<HttpServer>, grace: Duration) {
    if let Some(server) = server {
        let addr = server.local_addr();
        if !server.shutdown(grace).await {
            warn!(%addr, "http endpoint: requests still running at shutdown were cut");
        }
    }
}

/// A primary: serves appends; its members come from `Primary::status()`.
pub struct PrimaryView {
    /// The primary.
    pub primary: Arc<Primary>,
    /// Its own endpoint's URL.
    pub http: Option<String>,
    /// `wal.max_record_bytes`.
    pub max_record_bytes: u32,
    /// Its metrics (the role observes into them).
    pub metrics: Arc<walship_node::metrics::NodeMetrics>,
}

impl NodeView for PrimaryView {
    fn status(&self) -> NodeStatus {
        NodeStatus::from_primary(&self.primary.status(), self.http.clone())
    }

    fn max_record_bytes(&self) -> u32 {
        self.max_record_bytes
    }

    fn log_ids(
        &self,
        req: walship_node::http::LogIdsRequest,
    ) -> Result<walship_node::http::LogIds, walship_node::http::LogIdsError> {
        walship_node::http::primary_log_ids(&self.primary, &self.status(), req)
    }

    fn metrics(&self) -> Option<&walship_node::metrics::NodeMetrics> {
        Some(&self.metrics)
    }

    fn append(&self, payload: Vec<u8>) -> AppendFuture {
        let primary = Arc::clone(&self.primary);
        let append = self.primary.append(payload);
        Box::pin(async move {
            append.await.map_err(|e| match e {
                PrimaryError::CommitTimeout { lsn } => AppendError::CommitTimeout { lsn },
                PrimaryError::Wal(WalError::RecordTooLarge { len, max }) => {
                    AppendError::TooLarge { len, max }
                }
                PrimaryError::Stopped(reason) => AppendError::Stopped {
                    reason: reason.to_string(),
                },
                PrimaryError::ShuttingDown => AppendError::Stopped {
                    reason: e.to_string(),
                },
                // The append that stopped the node (a failed fsync, ENOSPC): it was not
                // acknowledged, and the node takes no more.
                other => match primary.stopped() {
                    Some(reason) => AppendError::Stopped {
                        reason: reason.to_string(),
                    },
                    None => AppendError::Failed {
                        message: other.to_string(),
                    },
                },
            })
        })
    }
}

/// A replica: follows its configured primary and points appends there.
pub struct ReplicaView {
    /// The replica.
    pub replica: Arc<Replica>,
    /// The configured primary's node id (`primary_name`).
    pub primary: String,
    /// The configured primary's endpoint URL (`primary_http`).
    pub primary_http: Option<String>,
    /// `wal.max_record_bytes`.
    pub max_record_bytes: u32,
    /// Its metrics (the role observes into them).
    pub metrics: Arc<walship_node::metrics::NodeMetrics>,
}

impl NodeView for ReplicaView {
    fn status(&self) -> NodeStatus {
        NodeStatus::from_replica(
            &self.replica.status(),
            &self.primary,
            self.primary_http.clone(),
        )
    }

    fn max_record_bytes(&self) -> u32 {
        self.max_record_bytes
    }

    fn metrics(&self) -> Option<&walship_node::metrics::NodeMetrics> {
        Some(&self.metrics)
    }

    fn append(&self, _payload: Vec<u8>) -> AppendFuture {
        let s = self.status();
        let refusal = match s.stopped {
            Some(reason) => AppendError::Stopped { reason },
            None => AppendError::NotPrimary {
                primary: s.primary,
                primary_http: s.primary_http,
            },
        };
        Box::pin(async move { Err(refusal) })
    }
}
