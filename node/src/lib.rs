//! walship-node: a cluster member whose role (follower or primary) comes from an election; this crate holds the sans-IO election core ([`election`]).
pub mod election;
