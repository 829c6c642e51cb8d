//! walship: WAL-shipping replication with strict halting.
//!
//! This facade re-exports the public API of the workspace crates. It owns the
//! node configuration file format ([`config`]); the log, the protocol, the
//! primary and the replica live in their own crates, re-exported here (the
//! `walship` binary — `node`, `demo`, `certs` — is the workspace's root
//! package, `walship-cli`; only it enables walship-primary's demo/test-only
//! `fault-injection` hook, so nothing here exposes it):
//!
//! - [`wal`]: the crc32c-chained write-ahead log and the `Storage` trait;
//! - [`wire`]: messages, framing, QUIC/TLS endpoints, development certificates;
//! - [`primary`]: [`Primary`] — `open`, `append(bytes).await` (returns once
//!   committed under the quorum policy), `commit_lsn`, `status`;
//! - [`replica`]: [`Replica`] — `open(config, applier)`, `status`, the read
//!   gate that refuses reads while halted, and the durable halt record;
//! - [`snapshot`]: snapshot format and atomic install;
//! - [`Node`]: a cluster member that leads or follows as elected (`walship_node::cluster`);
//! - [`http_client`]: a minimal blocking client for a node's HTTP endpoint.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use walship::{Primary, PrimaryConfig};
//! let tls = walship::wire::TlsFiles::for_node("certs".as_ref(), "n1");
//! let members = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
//! let config = PrimaryConfig::new("n1", "cluster", "/var/lib/walship/n1",
//!     "0.0.0.0:7001".parse()?, members, tls);
//! let primary = Primary::open(config)?;
//! let lsn = primary.append(b"hello".to_vec()).await?; // committed by a majority
//! # let _ = lsn; Ok(()) }
//! ```

pub mod config;
pub mod http_client;

pub use walship_node as node;
pub use walship_node::primary;
pub use walship_node::replica;
pub use walship_snapshot as snapshot;
pub use walship_wal as wal;
pub use walship_wire as wire;

pub use walship_node::primary::{Primary, PrimaryConfig, PrimaryError, PrimaryStatus, Quorum};
pub use walship_node::replica::{
    Applier, HaltReason, HaltRecord, Replica, ReplicaConfig, ReplicaError, ReplicaStatus,
};
pub use walship_node::{MemberAddr, Node, NodeConfig as MemberConfig, NodeError, RoleState};
