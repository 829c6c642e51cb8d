//! walship-replica: the receiving side of walship replication, sans-IO.
//!
//! Owns the verifier state machine ([`core`]) and the durable halt ([`halt`]:
//! `state/halt`). A replica verifies every record it receives (crc, lsn continuity, the
//! `prev_crc` chain, epochs) and, on anything it cannot prove correct, the core emits a
//! halt that the node executor (walship-node) writes and fsyncs before doing anything
//! else. It performs no I/O of its own except the halt file helpers, which take a
//! `Storage`. It does not own the WAL format (walship-wal), the messages and TLS rules
//! (walship-wire) or the operator's way out of a halt (walship-recover).

#![warn(missing_docs)]

pub mod core;
pub mod halt;

pub use crate::core::{
    Action, CoreConfig, DurableState, Event, LocalLog, Phase, ReplicaCore, SessionEnd,
    VerifiedBatch,
};
pub use crate::halt::{clear_halt, read_halt, write_halt, HaltError, HaltReason, HaltRecord};
