//! quinn endpoints for walship: transport settings and the mutual-TLS configurations of
//! [`crate::tls`], with helpers for the primary (server) and replica (client) side.
//!
//! Must be called inside a tokio runtime (quinn binds its UDP socket to the current runtime).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::certs::{CertError, TlsFiles, TlsMaterial};
use crate::tls::{self, TlsError};

/// Default QUIC keep-alive interval.
pub const DEFAULT_KEEP_ALIVE_MS: u64 = 1_000;
/// Default QUIC idle timeout: a silent peer is declared gone after this long.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;
/// Default per-stream receive window (flow control), sized for catch-up throughput.
pub const DEFAULT_STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Default per-connection receive window and send window.
pub const DEFAULT_CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// QUIC transport settings shared by both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// Interval between keep-alive packets; must be below `idle_timeout_ms`.
    pub keep_alive_ms: u64,
    /// A connection with no packet from the peer for this long is closed (dead-peer detection).
    pub idle_timeout_ms: u64,
    /// Receive window of one stream.
    pub stream_window_bytes: u32,
    /// Receive window of the whole connection, also used as the send window.
    pub connection_window_bytes: u32,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            keep_alive_ms: DEFAULT_KEEP_ALIVE_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            stream_window_bytes: DEFAULT_STREAM_WINDOW_BYTES,
            connection_window_bytes: DEFAULT_CONNECTION_WINDOW_BYTES,
        }
    }
}

/// Errors setting up endpoints or connections.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The TLS files could not be loaded.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The transport options are inconsistent.
    #[error("invalid transport options: {0}")]
    Transport(&'static str),
    /// The UDP socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The connection attempt could not be started (e.g. invalid server name).
    #[error("connect to {addr} as {server_name:?}: {source}")]
    Connect {
        /// The peer address.
        addr: SocketAddr,
        /// The name the peer's certificate must be valid for.
        server_name: String,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The handshake failed or the connection was lost during it (includes TLS refusals).
    #[error("connection to {addr} as {server_name:?} failed: {source}")]
    Connection {
        /// The peer address.
        addr: SocketAddr,
        /// The name the peer's certificate must be valid for.
        server_name: String,
        /// quinn's reason.
        source: quinn::ConnectionError,
    },
}

/// Builds the quinn transport configuration for `opts`.
pub fn transport_config(opts: &TransportOptions) -> Result<TransportConfig, EndpointError> {
    if opts.idle_timeout_ms == 0 {
        return Err(EndpointError::Transport("idle_timeout_ms must be > 0"));
    }
    if opts.keep_alive_ms == 0 || opts.keep_alive_ms >= opts.idle_timeout_ms {
        return Err(EndpointError::Transport(
            "keep_alive_ms must be > 0 and below idle_timeout_ms",
        ));
    }
    if opts.stream_window_bytes == 0 || opts.connection_window_bytes < opts.stream_window_bytes {
        return Err(EndpointError::Transport(
            "windows must be > 0 and connection_window_bytes >= stream_window_bytes",
        ));
    }
    let idle = IdleTimeout::try_from(Duration::from_millis(opts.idle_timeout_ms))
        .map_err(|_| EndpointError::Transport("idle_timeout_ms too large"))?;
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(Duration::from_millis(opts.keep_alive_ms)))
        .stream_receive_window(VarInt::from_u32(opts.stream_window_bytes))
        .receive_window(VarInt::from_u32(opts.connection_window_bytes))
        .send_window(u64::from(opts.connection_window_bytes));
    Ok(t)
}

/// quinn server configuration for a primary accepting `members`.
pub fn quinn_server_config(
    material: &TlsMaterial,
    members: &[String],
    opts: &TransportOptions,
) -> Result<quinn::ServerConfig, EndpointError> {
    let tls = QuicServerConfig::try_from(tls::server_config(material, members)?)
        .map_err(TlsError::from)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(tls));
    config.transport_config(Arc::new(transport_config(opts)?));
    Ok(config)
}

/// quinn client configuration for a replica.
pub fn quinn_client_config(
    material: &TlsMaterial,
    opts: &TransportOptions,
) -> Result<quinn::ClientConfig, EndpointError> {
    let tls = QuicClientConfig::try_from(tls::client_config(material)?).map_err(TlsError::from)?;
    let mut config = quinn::ClientConfig::new(Arc::new(tls));
    config.transport_config(Arc::new(transport_config(opts)?));
    Ok(config)
}

/// A server endpoint (primary) bound to `addr`, loading its TLS files.
pub fn server_endpoint(
    addr: SocketAddr,
    files: &TlsFiles,
    members: &[String],
    opts: &TransportOptions,
) -> Result<quinn::Endpoint, EndpointError> {
    server_endpoint_with(addr, &files.load()?, members, opts)
}

/// Like [`server_endpoint`] with already loaded material.
pub fn server_endpoint_with(
    addr: SocketAddr,
    material: &TlsMaterial,
    members: &[String],
    opts: &TransportOptions,
) -> Result<quinn::Endpoint, EndpointError> {
    let config = quinn_server_config(material, members, opts)?;
    let endpoint = quinn::Endpoint::server(config, addr)
        .map_err(|source| EndpointError::Bind { addr, source })?;
    tracing::info!(%addr, members = ?members, "walship server endpoint listening");
    Ok(endpoint)
}

/// A client endpoint (replica) bound to `bind` (e.g. `0.0.0.0:0`), loading its TLS files.
pub fn client_endpoint(
    bind: SocketAddr,
    files: &TlsFiles,
    opts: &TransportOptions,
) -> Result<quinn::Endpoint, EndpointError> {
    client_endpoint_with(bind, &files.load()?, opts)
}

/// Like [`client_endpoint`] with already loaded material.
pub fn client_endpoint_with(
    bind: SocketAddr,
    material: &TlsMaterial,
    opts: &TransportOptions,
) -> Result<quinn::Endpoint, EndpointError> {
    let config = quinn_client_config(material, opts)?;
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|source| EndpointError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects to the primary at `addr`, whose certificate must be valid for `server_name`
/// (the configured primary node id), and completes the mutual-TLS handshake.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
) -> Result<quinn::Connection, EndpointError> {
    let connecting =
        endpoint
            .connect(addr, server_name)
            .map_err(|source| EndpointError::Connect {
                addr,
                server_name: server_name.to_string(),
                source,
            })?;
    connecting
        .await
        .map_err(|source| EndpointError::Connection {
            addr,
            server_name: server_name.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_options_reject_keep_alive_not_below_idle_timeout() {
        let opts = TransportOptions {
            keep_alive_ms: 5_000,
            ..TransportOptions::default()
        };
        assert!(matches!(
            transport_config(&opts),
            Err(EndpointError::Transport(_))
        ));
        assert!(transport_config(&TransportOptions::default()).is_ok());
    }
}
