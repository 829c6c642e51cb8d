//! walship-snapshot: snapshots of the embedder's state at a WAL boundary.
//!
//! Owns the snapshot file format ([`mod@format`], specified byte by byte in
//! `spec/snapshot-format.md`), the streaming [`SnapshotWriter`] and the
//! verifying [`SnapshotReader`], the `DIR/snapshots/` directory
//! ([`SnapshotStore`]: creation on the primary, discarding of interrupted
//! installs, recovery after a crash), the atomic install of a received
//! snapshot on a replica ([`install`]: verify, fsync, rename, fsync,
//! `Wal::reset_to`), the boundary check of FM-7.2, the transfer message
//! payloads ([`transfer`]), the primary's retention arithmetic
//! ([`retention`]) and the embedder traits ([`SnapshotSource`],
//! [`SnapshotSink`]).
//!
//! It does not own the network (the primary/replica drivers carry the
//! transfer messages inside `walship_wire::Message`), the halt file (the
//! replica maps [`SnapshotError::class`] to a halt reason) or the WAL.
//!
//! ```
//! use std::path::Path;
//! use walship_snapshot::{Limits, SnapshotStore, SnapshotSource};
//! use walship_wal::{sim::SimStorage, Position};
//!
//! struct State(Vec<u8>);
//! impl SnapshotSource for State {
//!     fn write_snapshot(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
//!         w.write_all(&self.0)?;
//!         Ok(7) // applied lsn
//!     }
//! }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = SimStorage::new(1);
//! let (store, _) = SnapshotStore::open(storage, Path::new("/node/snapshots"), Limits::default())?;
//! let boundary = Position { lsn: 7, epoch: 1, crc: 0xabcd };
//! let snap = store.create(4096, &mut State(vec![1; 10_000]), &mut |_lsn| Ok(boundary))?;
//! assert_eq!(snap.boundary, boundary);
//! store.verify(&snap)?;
//! # Ok(()) }
//! ```

mod embedder;
pub mod error;
pub mod format;
pub mod install;
pub mod membership;
mod reader;
pub mod retention;
mod store;
pub mod transfer;
mod writer;

pub use embedder::{SnapshotSink, SnapshotSource};
pub use error::{BoundaryConflict, FailureClass, InvalidSnapshot, SnapshotError};
pub use format::{Limits, SnapshotHeader, SnapshotTrailer, MAX_CHUNK_SIZE_BYTES};
pub use install::{
    check_boundary, check_first_after, BoundaryVerdict, EpochCheck, Install, InstallOutcome,
    ReceiveProgress, SnapshotReceiver, VerifiedSnapshot, WalTarget,
};
pub use membership::{BoundaryMembership, CONFIG_FILE};
pub use reader::{PayloadReader, SnapshotReader};
pub use store::{
    parse_snapshot_dir_name, read_newest_membership, snapshot_dir_name, InstalledSnapshot,
    RecoveryReport, SnapshotStore, StoreOpenReport, DEFAULT_INSTALL_SYNC_EVERY_BYTES,
    SNAPSHOT_FILE, TMP_PREFIX,
};
pub use transfer::{SnapshotChunk, SnapshotEnd, SnapshotOffer, SnapshotSender, TransferItem};
pub use writer::{SnapshotMeta, SnapshotWriter};
