//! walship-node: the node that runs the primary and replica cores.
//!
//! The cores (walship-primary, walship-replica) decide what the protocol does; this crate
//! performs their decisions on a node's disk and connections: appends, group sync,
//! receipts, applying committed records, persisting the commit watermark, writing the
//! halt, stopping the node on a failed fsync. It holds the embedding API ([`primary`]:
//! [`Primary`]; [`replica`]: [`Replica`] with its [`Applier`]).
//!
//! [`election`] is the sans-IO election core (PreVote, votes persisted in `state/vote`
//! before they are granted, the up-to-date rule, election quorums, the primary's lease);
//! [`cluster`] holds [`Node`], the member that leads or follows as elected.
#![warn(missing_docs)]

pub mod cluster;
pub mod election;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod primary;
pub mod replica;

pub use cluster::{MemberAddr, Node, NodeConfig, NodeError, NodeStatus, RoleState};
pub use primary::{Primary, PrimaryConfig, PrimaryError, PrimaryStatus, PrimaryStop};
pub use replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaError, ReplicaStatus};
