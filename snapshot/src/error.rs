//! Errors of the snapshot crate, one variant per distinct situation.
//!
//! Three classes matter to the replica ([`SnapshotError::class`]):
//! * [`InvalidSnapshot`] — a snapshot (received or stored) fails an integrity
//!   check: FM-7.1, halt `snapshot-invalid` when it was received complete.
//! * [`BoundaryConflict`] — a verified snapshot's boundary cannot be
//!   reconciled with the local WAL history: FM-7.2, halt `snapshot-boundary`.
//! * I/O — the node's own disk failed: the node stops (never a halt).

use std::io;
use std::path::PathBuf;

use walship_wal::{Lsn, Position, WalError};

/// Why a snapshot's bytes are not a valid snapshot (FM-7.1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSnapshot {
    /// Fewer bytes than the structure needs.
    #[error("snapshot {what} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// Magic bytes are wrong.
    #[error("snapshot {what} has bad magic {found:#010x}")]
    BadMagic {
        /// "header" or "trailer".
        what: &'static str,
        /// The four bytes found, as a little-endian u32.
        found: u32,
    },
    /// A format version this build does not read.
    #[error("unsupported snapshot format version {found}")]
    UnsupportedVersion {
        /// Version found.
        found: u16,
    },
    /// The header crc does not match.
    #[error("snapshot header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// Stored crc.
        stored: u32,
        /// Computed crc.
        computed: u32,
    },
    /// Flags or reserved bytes are not zero.
    #[error("snapshot {what} has non-zero flags or reserved bytes")]
    ReservedNotZero {
        /// Which structure.
        what: &'static str,
    },
    /// Chunk size is 0 or above the bound.
    #[error("snapshot chunk size {found} out of bounds 1..={max}")]
    ChunkSizeOutOfBounds {
        /// Chunk size found.
        found: u32,
        /// Bound.
        max: u32,
    },
    /// Total payload length above the configured maximum.
    #[error("snapshot total length {found} exceeds the maximum {max}")]
    TotalTooLarge {
        /// Length found.
        found: u64,
        /// Bound.
        max: u64,
    },
    /// A chunk count disagrees with the header's total length and chunk size.
    #[error("snapshot {what} chunk count {found}, expected {expected}")]
    ChunkCountMismatch {
        /// Where the count was found.
        what: &'static str,
        /// Count implied by the header.
        expected: u64,
        /// Count found.
        found: u64,
    },
    /// A chunk arrived (or is stored) with the wrong index.
    #[error("snapshot chunk out of order: expected index {expected}, found {found}")]
    ChunkOutOfOrder {
        /// Index expected next.
        expected: u64,
        /// Index found.
        found: u64,
    },
    /// A chunk's length differs from the one the header implies.
    #[error("snapshot chunk {index} has {found} bytes, expected {expected}")]
    ChunkLength {
        /// Chunk index.
        index: u64,
        /// Length implied by the header.
        expected: u32,
        /// Length found.
        found: u32,
    },
    /// A chunk's crc does not match its bytes.
    #[error("snapshot chunk {index} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChunkChecksum {
        /// Chunk index.
        index: u64,
        /// Stored crc.
        stored: u32,
        /// Computed crc.
        computed: u32,
    },
    /// The trailer's own crc does not match.
    #[error(
        "snapshot trailer checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
    )]
    TrailerChecksum {
        /// Stored crc.
        stored: u32,
        /// Computed crc.
        computed: u32,
    },
    /// A trailer field disagrees with the header.
    #[error("snapshot trailer {field} is {found}, expected {expected}")]
    TrailerMismatch {
        /// The field.
        field: &'static str,
        /// Value implied by the header.
        expected: u64,
        /// Value found.
        found: u64,
    },
    /// The whole-payload crc does not match.
    #[error(
        "snapshot payload checksum mismatch: trailer {stored:#010x}, computed {computed:#010x}"
    )]
    PayloadChecksum {
        /// crc in the trailer.
        stored: u32,
        /// crc computed over the payload.
        computed: u32,
    },
    /// The file is longer or shorter than its header says.
    #[error("snapshot file is {found} bytes, its header implies {expected}")]
    FileLength {
        /// Length implied by the header.
        expected: u64,
        /// Actual length.
        found: u64,
    },
    /// The snapshot's boundary is not the one announced (offer, directory name).
    #[error("snapshot boundary {found:?} differs from the announced {expected:?}")]
    BoundaryMismatch {
        /// Announced boundary.
        expected: Position,
        /// Boundary in the snapshot header.
        found: Position,
    },
    /// The transfer sent something out of sequence (a chunk after the last, the
    /// end before the last chunk).
    #[error("snapshot transfer out of sequence: {detail}")]
    Sequence {
        /// What happened.
        detail: String,
    },
    /// The snapshot's configuration file (`spec/snapshot-format.md` §1.5) fails
    /// a check.
    #[error("snapshot configuration file: {detail}")]
    Configuration {
        /// What is wrong.
        detail: String,
    },
}

/// Why a verified snapshot cannot be installed over this node's WAL (FM-7.2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BoundaryConflict {
    /// The local WAL holds a record at the boundary lsn with another identity.
    #[error("the local record at lsn {lsn} is {local:?}, the snapshot boundary says {boundary:?}")]
    PositionMismatch {
        /// The boundary lsn.
        lsn: Lsn,
        /// The local record's identity.
        local: Position,
        /// The boundary.
        boundary: Position,
    },
    /// The boundary is below the local WAL's last record: installing would cut
    /// records this node has made durable (and may have receipted).
    #[error("snapshot boundary lsn {boundary_lsn} is below the local last lsn {local_last_lsn}")]
    BelowLocalLast {
        /// The boundary lsn.
        boundary_lsn: Lsn,
        /// The local WAL's last lsn.
        local_last_lsn: Lsn,
    },
    /// The boundary is below what this node already holds as a snapshot or
    /// WAL base: it would move the node's history backwards.
    #[error("snapshot boundary lsn {boundary_lsn} is below the local base lsn {local_base_lsn}")]
    BelowLocalBase {
        /// The boundary lsn.
        boundary_lsn: Lsn,
        /// The local WAL's base lsn (the position before its first record).
        local_base_lsn: Lsn,
    },
    /// The boundary's epoch is below the epoch of the local last record.
    #[error("snapshot boundary epoch {boundary_epoch} is below the local last record's epoch {local_epoch}")]
    EpochRegression {
        /// The boundary epoch.
        boundary_epoch: u64,
        /// The local last record's epoch.
        local_epoch: u64,
    },
    /// The local epoch history disagrees with the primary's on an lsn the
    /// local WAL holds: the local records are not the primary's history.
    #[error("local epoch history disagrees with the primary's at lsn {lsn}")]
    EpochHistory {
        /// First lsn the histories disagree on.
        lsn: Lsn,
    },
    /// The primary's epoch history does not give the boundary lsn the boundary's epoch.
    #[error("snapshot boundary epoch {boundary_epoch} at lsn {lsn}, the primary's epoch history says {history_epoch:?}")]
    EpochNotInHistory {
        /// The boundary lsn.
        lsn: Lsn,
        /// The boundary epoch.
        boundary_epoch: u64,
        /// The epoch the primary's history gives that lsn.
        history_epoch: Option<u64>,
    },
    /// The first record after an installed snapshot does not follow the boundary.
    #[error("the first record after snapshot boundary {boundary:?} (lsn {found_lsn}, prev_crc {found_prev_crc:#010x}, epoch {found_epoch}) does not follow it: {detail}")]
    FirstRecordBreaksChain {
        /// The installed boundary.
        boundary: Position,
        /// The record's lsn.
        found_lsn: Lsn,
        /// The record's prev_crc.
        found_prev_crc: u32,
        /// The record's epoch.
        found_epoch: u64,
        /// The chain rule that failed.
        detail: String,
    },
    /// A snapshot with the same boundary lsn is installed with another identity.
    #[error(
        "an installed snapshot at lsn {lsn} has boundary {installed:?}, the new one {boundary:?}"
    )]
    InstalledDiffers {
        /// The boundary lsn.
        lsn: Lsn,
        /// The installed snapshot's boundary.
        installed: Position,
        /// The new boundary.
        boundary: Position,
    },
}

/// What the replica must do about a [`SnapshotError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// FM-7.1: the received snapshot is invalid; halt `snapshot-invalid`.
    Invalid,
    /// FM-7.2: boundary conflict; halt `snapshot-boundary`.
    Boundary,
    /// The local snapshot store disagrees with itself or the WAL (bit rot, a
    /// lost file): halt `local-corruption` / refuse to start.
    LocalCorruption,
    /// The node's own disk or the embedder failed: the node stops (no halt).
    NodeStop,
}

impl FailureClass {
    /// The kebab-case halt reason (`HaltReason`, spec/protocol.md §11), if this class halts.
    pub fn halt_reason(self) -> Option<&'static str> {
        match self {
            FailureClass::Invalid => Some("snapshot-invalid"),
            FailureClass::Boundary => Some("snapshot-boundary"),
            FailureClass::LocalCorruption => Some("local-corruption"),
            FailureClass::NodeStop => None,
        }
    }
}

/// Everything a snapshot operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A storage call failed (a failed sync is fatal: never retried).
    #[error("snapshot I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// The storage operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier fsync of this snapshot store failed (`op` on `path`): the
    /// store refuses every call until the node restarts and recovers from
    /// disk. Never retried: after a failed fsync the page cache may have
    /// dropped what it was to write, and may show a renamed snapshot the disk
    /// does not hold.
    #[error("snapshot store poisoned: an earlier {op} of {} failed ({error}); restart and recover from disk", path.display())]
    Poisoned {
        /// The fsync that failed (`sync_data` or `sync_dir`).
        op: &'static str,
        /// The file or directory it was for.
        path: PathBuf,
        /// The error it returned.
        error: String,
    },
    /// The snapshot being received or read is invalid (FM-7.1).
    #[error("invalid snapshot: {0}")]
    Invalid(#[from] InvalidSnapshot),
    /// The boundary conflicts with the local WAL history (FM-7.2).
    #[error("snapshot boundary conflict: {0}")]
    Boundary(#[from] BoundaryConflict),
    /// An installed snapshot is damaged.
    #[error("installed snapshot {} is damaged: {error}", path.display())]
    InstalledDamaged {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        error: InvalidSnapshot,
    },
    /// The newest installed snapshot and the WAL disagree (found on open).
    #[error("installed snapshot {snapshot:?} and the WAL disagree: {detail}")]
    StoreWalMismatch {
        /// The newest installed snapshot's boundary.
        snapshot: Position,
        /// The WAL's base (position before its first record).
        wal_base: Position,
        /// The WAL's record at the boundary lsn, if retained.
        wal_at_boundary: Option<Position>,
        /// What disagrees.
        detail: String,
    },
    /// A WAL operation failed.
    #[error("WAL error during snapshot operation: {0}")]
    Wal(#[from] WalError),
    /// The embedder's snapshot source or sink failed.
    #[error("embedder snapshot {op} failed: {source}")]
    Embedder {
        /// "write_snapshot" or "restore_snapshot".
        op: &'static str,
        /// The embedder's error.
        #[source]
        source: io::Error,
    },
    /// The snapshot the embedder produced is larger than the configured maximum.
    #[error("snapshot payload exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Bound.
        max: u64,
    },
    /// A locally created snapshot's boundary is not usable (beyond the WAL).
    #[error("cannot resolve snapshot boundary lsn {lsn}: {detail}")]
    UnresolvedBoundary {
        /// The embedder's applied lsn.
        lsn: Lsn,
        /// Why.
        detail: String,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// What the replica must do about this error.
    pub fn class(&self) -> FailureClass {
        match self {
            SnapshotError::Invalid(_) => FailureClass::Invalid,
            SnapshotError::Boundary(_) => FailureClass::Boundary,
            SnapshotError::InstalledDamaged { .. } | SnapshotError::StoreWalMismatch { .. } => {
                FailureClass::LocalCorruption
            }
            SnapshotError::Wal(WalError::Corruption(_)) => FailureClass::LocalCorruption,
            SnapshotError::Io { .. }
            | SnapshotError::Poisoned { .. }
            | SnapshotError::Wal(_)
            | SnapshotError::Embedder { .. }
            | SnapshotError::PayloadTooLarge { .. }
            | SnapshotError::UnresolvedBoundary { .. } => FailureClass::NodeStop,
        }
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |e| SnapshotError::io(op, path, e)
}
