//! The embedder's side of snapshots: the storage engine writes its state
//! ([`SnapshotSource`], on the primary) and restores from one
//! ([`SnapshotSink`], on a replica). The replica's `Applier` can require both.

use std::io;

use walship_wal::{Lsn, Position};

/// An embedder that can write a point-in-time image of its applied state.
pub trait SnapshotSource {
    /// Writes the embedder's whole state, as of the lsn it has applied, to
    /// `w` and returns that lsn (the snapshot's boundary lsn). The image must
    /// be consistent: exactly the records `1..=lsn` applied, none after. The
    /// caller resolves the lsn to the WAL position (epoch, crc); it must be a
    /// committed, durable record.
    fn write_snapshot(&mut self, w: &mut dyn io::Write) -> io::Result<Lsn>;
}

/// An embedder that can replace its state with a snapshot.
pub trait SnapshotSink {
    /// Replaces the embedder's whole state with the image read from `r`, the
    /// state as of `boundary`. Afterwards the embedder's applied lsn is
    /// `boundary.lsn` and the next record it is given is `boundary.lsn + 1`.
    ///
    /// `r` verifies every chunk before handing out its bytes and the whole
    /// snapshot checksum at its end; if it returns an error (kind
    /// `InvalidData`), the embedder must discard what it read and return the
    /// error. It is called only with an installed (durable, verified)
    /// snapshot, and again after a restart if the embedder's applied lsn is
    /// below the newest installed snapshot's boundary.
    fn restore_snapshot(&mut self, boundary: Position, r: &mut dyn io::Read) -> io::Result<()>;
}
