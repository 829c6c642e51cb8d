//! walship: WAL-shipping replication with strict halting.
//!
//! This facade crate re-exports the public API of the workspace crates and
//! holds the `walship` binary (`node`, `demo`, `certs`). It owns the node
//! configuration file format ([`config`]); the log, the protocol, the
//! primary and the replica live in their own crates.

pub mod config;
