//! walship-primary: the shipping side of walship, sans-IO.
//!
//! Owns the primary core ([`core`]: handshake checks, pipelined shipping with a bounded
//! window per replica, receipts, quorum commit arithmetic) and the [`LogSource`] adapters
//! over the WAL ([`log`]). It performs no I/O of its own: the node executor in
//! walship-node feeds it events and performs its actions, in production (tokio/quinn) and
//! in the simulator alike. It does not verify or apply records (walship-replica), define
//! the wire format (walship-wire) or the record layout (walship-wal).
#![warn(missing_docs)]

pub mod core;
pub mod log;

#[cfg(feature = "fault-injection")]
pub use crate::core::ShipFault;
pub use crate::core::{
    CoreError, CoreStatus, LogSource, Quorum, QuorumError, ReplicaProgress, Window,
};

/// Protocol and WAL types the core speaks (re-exported from walship-wire / walship-wal).
pub mod proto {
    pub use walship_wal::WalError;
    pub use walship_wire::message::EpochEntry;
    pub use walship_wire::{
        Hello, Message, RecordBatch, Refuse, RefuseReason, Welcome, PROTOCOL_VERSION,
    };
}
