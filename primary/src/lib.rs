//! walship-primary: the shipping side of walship.
//!
//! Owns the sans-IO primary core ([`core`]): handshake checks, pipelined shipping with a
//! bounded window per replica, receipts and quorum commit arithmetic.
#![warn(missing_docs)]

pub mod core;

/// Protocol and WAL types the core speaks (re-exported from walship-wire / walship-wal).
pub mod proto {
    pub use walship_wal::WalError;
    pub use walship_wire::message::EpochEntry;
    pub use walship_wire::{
        Hello, Message, RecordBatch, Refuse, RefuseReason, Welcome, PROTOCOL_VERSION,
    };
}
