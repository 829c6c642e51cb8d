//! walship: WAL-shipping replication with strict halting.
//!
//! This facade re-exports the public API of the workspace crates. It owns the
//! node configuration file format ([`config`]); the log, the protocol, the
//! primary and the replica live in their own crates, re-exported here (the
//! `walship` binary — `node`, `demo`, `certs` — is the workspace's root
//! package, `walship-cli`; only it enables walship-primary's demo/test-only
//! `fault-injection` hook, so nothing here exposes it):
//!
//! - [`Node`]: a cluster member that leads or follows as elected
//!   (`walship_node::cluster`; configured by [`MemberConfig`]): `open(config,
//!   applier)`, `append(bytes).await` (returns once committed, or
//!   [`NodeError::NotPrimary`] with the primary it knows), `status`, `subscribe`,
//!   `switchover`, `shutdown`. This is how an application embeds walship;
//!   `examples/kv.rs` is a key-value store on three members that survives a
//!   failover and a switchover;
//! - [`Applier`]: the embedder's side of a node, which receives committed records in
//!   lsn order in every role (control records through `apply_control`);
//! - [`wal`]: the crc32c-chained write-ahead log and the `Storage` trait;
//! - [`wire`]: messages, framing, QUIC/TLS endpoints, development certificates;
//! - [`primary`] and [`replica`]: the single-role building blocks a [`Node`] runs,
//!   usable on their own for a fixed topology: [`Primary`] — `open`,
//!   `append(bytes).await` (returns once committed under the quorum policy),
//!   `commit_lsn`, `status`; [`Replica`] — `open(config, applier)`, `status`, the
//!   read gate that refuses reads while halted, and the durable halt record;
//! - [`snapshot`]: snapshot format and atomic install;
//! - [`http_client`]: a minimal blocking client for a node's HTTP endpoint.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use walship::replica::ApplyError;
//! use walship::wal::{control::ControlRecord, Lsn};
//! use walship::{Applier, MemberAddr, MemberConfig, Node, NodeError};
//!
//! /// Committed records arrive here in lsn order, each once, in every role.
//! struct Counter {
//!     applied: Lsn,
//! }
//! impl Applier for Counter {
//!     fn applied_lsn(&self) -> Lsn {
//!         self.applied
//!     }
//!     fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
//!         self.applied = lsn;
//!         Ok(())
//!     }
//!     // A node's own control records (a new primary's first record) count in the lsns.
//!     fn apply_control(&mut self, lsn: Lsn, _: &ControlRecord) -> Result<(), ApplyError> {
//!         self.applied = lsn;
//!         Ok(())
//!     }
//! }
//!
//! let mut members = Vec::new();
//! for (id, addr) in [("n1", "10.0.0.1:7001"), ("n2", "10.0.0.2:7001"), ("n3", "10.0.0.3:7001")] {
//!     members.push(MemberAddr { node_id: id.into(), addr: addr.parse()?, http_addr: None });
//! }
//! let tls = walship::wire::TlsFiles::for_node("certs".as_ref(), "n1");
//! let config = MemberConfig::new("n1", "cluster", "/var/lib/walship/n1", members, tls);
//! let node = Node::open(config, Counter { applied: 0 }).await?;
//! match node.append(b"hello".to_vec()).await {
//!     Ok(lsn) => println!("committed by a majority at lsn {lsn}"),
//!     Err(NodeError::NotPrimary { primary_hint, .. }) => println!("ask {primary_hint:?}"),
//!     Err(e) => return Err(e.into()),
//! }
//! node.shutdown().await;
//! # Ok(()) }
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
