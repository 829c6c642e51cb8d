//! The WAL's error type and the corruption report an operator reads.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::record::{ChainError, Lsn, RecordError};

/// What kind of damage the recovery scan or a reader found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CorruptionKind {
    /// The segment file is shorter than its 64-byte header.
    SegmentHeaderTruncated,
    /// The segment header does not start with the segment magic.
    SegmentBadMagic,
    /// The segment header names a format version this build does not read.
    SegmentBadVersion,
    /// The segment header's own crc does not match.
    SegmentHeaderChecksum,
    /// A reserved header field (flags, header_len, prev_lsn) holds an unexpected value.
    SegmentHeaderField,
    /// The first_lsn in the header disagrees with the file name.
    SegmentNameMismatch,
    /// A file in the WAL directory ends in `.wal` but is not a valid segment name.
    SegmentBadName,
    /// A segment is missing: the next segment starts after the lsn that should follow.
    SegmentMissing,
    /// The next segment starts at or before an lsn already present (overlap).
    SegmentOverlap,
    /// The next segment's header `prev` does not match the last record before it.
    SegmentPrevMismatch,
    /// A record's length field is above `max_record_bytes`.
    RecordTooLarge,
    /// A record runs past the end of a sealed segment, or past the end of the last
    /// segment while crc-valid records follow it.
    RecordTruncated,
    /// A record's crc does not match, and the damage cannot be a torn tail.
    RecordChecksum,
    /// A crc-valid record carries flags this format version does not define, or
    /// is a control record in a segment of format version 1 or 2.
    RecordBadFlags,
    /// A crc-valid control record whose body does not decode (or names another
    /// epoch than its header).
    RecordBadControl,
    /// A crc-valid record whose lsn is beyond the expected one.
    ChainGap,
    /// A crc-valid record whose lsn is at or below the previous one.
    ChainDuplicate,
    /// A crc-valid record whose prev_crc is not the previous record's crc.
    ChainBreak,
    /// A crc-valid record whose epoch is below the previous record's.
    ChainEpochRegression,
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            CorruptionKind::SegmentHeaderTruncated => "segment header truncated",
            CorruptionKind::SegmentBadMagic => "segment header bad magic",
            CorruptionKind::SegmentBadVersion => "segment header unsupported format version",
            CorruptionKind::SegmentHeaderChecksum => "segment header checksum mismatch",
            CorruptionKind::SegmentHeaderField => "segment header field invalid",
            CorruptionKind::SegmentNameMismatch => {
                "segment header first_lsn disagrees with file name"
            }
            CorruptionKind::SegmentBadName => "unparseable segment file name",
            CorruptionKind::SegmentMissing => "missing segment (gap in first_lsn chain)",
            CorruptionKind::SegmentOverlap => "overlapping segment",
            CorruptionKind::SegmentPrevMismatch => {
                "segment header prev position disagrees with previous segment"
            }
            CorruptionKind::RecordTooLarge => "record length above max_record_bytes",
            CorruptionKind::RecordTruncated => "record truncated",
            CorruptionKind::RecordChecksum => "record checksum mismatch",
            CorruptionKind::RecordBadFlags => "record flags invalid",
            CorruptionKind::RecordBadControl => "control record body invalid",
            CorruptionKind::ChainGap => "record lsn gap",
            CorruptionKind::ChainDuplicate => "record lsn duplicate",
            CorruptionKind::ChainBreak => "record prev_crc chain break",
            CorruptionKind::ChainEpochRegression => "record epoch regression",
        };
        f.write_str(s)
    }
}

/// Where and what: the facts an operator needs to find damaged bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptionReport {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset inside the segment file (0 for header/name problems).
    pub offset: u64,
    /// The lsn expected at that place, when known.
    pub lsn: Option<Lsn>,
    /// What is wrong.
    pub kind: CorruptionKind,
    /// What the format requires there.
    pub expected: String,
    /// What is on disk.
    pub found: String,
}

impl fmt::Display for CorruptionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL corruption in {} at offset {}",
            self.segment.display(),
            self.offset
        )?;
        if let Some(lsn) = self.lsn {
            write!(f, " (lsn {lsn})")?;
        }
        write!(
            f,
            ": {}: expected {}, found {}",
            self.kind, self.expected, self.found
        )
    }
}

/// A torn-tail cut that [`crate::Wal::open_with`] refused because it would leave the log
/// below [`crate::OpenOptions::protected_lsn`]: the damaged bytes may hold an acknowledged
/// record. Nothing was cut or removed; every file of the WAL is as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedCut {
    /// The last segment, whose tail would have been cut.
    pub segment: PathBuf,
    /// Offset of the first damaged byte (where the cut would have started).
    pub offset: u64,
    /// Bytes the cut would have removed (version 1) or zeroed (version 2).
    pub bytes_cut: u64,
    /// The last lsn the log would hold after the cut (the would-be log end).
    pub log_end: Lsn,
    /// The protected lsn the caller passed (its commit watermark).
    pub protected_lsn: Lsn,
}

impl fmt::Display for RefusedCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL open refused to cut the damaged tail of {} at offset {} ({} bytes): the log would end at lsn {}, below the protected (acknowledged) lsn {}; nothing was cut",
            self.segment.display(),
            self.offset,
            self.bytes_cut,
            self.log_end,
            self.protected_lsn
        )
    }
}

/// Everything a WAL operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A control record handed to `append_control` is invalid (nothing written).
    #[error("invalid control record: {0}")]
    InvalidControl(crate::control::ControlError),
    /// An I/O call failed.
    #[error("WAL I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// The storage operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored bytes are damaged: the WAL refuses to open or to read past them.
    #[error("{0}")]
    Corruption(CorruptionReport),
    /// The last record is damaged in a way the scan would cut as a torn tail, but the
    /// cut would leave the log below the protected (acknowledged) lsn: refused, nothing cut.
    #[error("{0}")]
    CutRefused(RefusedCut),
    /// An append's payload is above `max_record_bytes` (nothing was written).
    #[error("record payload of {len} bytes exceeds max_record_bytes {max}")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// Configured maximum.
        max: u32,
    },
    /// A shipped record is not a valid record (append_verified).
    #[error("invalid shipped record: {0}")]
    Record(RecordError),
    /// A shipped record does not follow the log (append_verified).
    #[error("shipped record does not follow the log: {0}")]
    Chain(ChainError),
    /// Bytes follow the record(s) given to append_verified.
    #[error("shipped record has {found} bytes, its header announces {expected}")]
    TrailingBytes {
        /// Bytes the header(s) announce.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The WAL's epoch is below the epoch of its last record: appending would regress.
    #[error("WAL epoch {epoch} is below the last record's epoch {last_epoch}")]
    EpochBehindLog {
        /// The WAL's current epoch.
        epoch: u64,
        /// Epoch of the last record.
        last_epoch: u64,
    },
    /// The lsn is before the first retained record (truncated away). When a
    /// reader finds its next segment removed under it, `first_lsn` is only a
    /// lower bound of the first retained lsn.
    #[error("lsn {lsn} is not retained (first retained lsn {first_lsn})")]
    NotRetained {
        /// The lsn asked for.
        lsn: Lsn,
        /// The first retained lsn.
        first_lsn: Lsn,
    },
    /// An lsn argument is outside what the operation allows.
    #[error("lsn {lsn} out of range: allowed {min} ..= {max}")]
    OutOfRange {
        /// The lsn given.
        lsn: Lsn,
        /// Smallest allowed.
        min: Lsn,
        /// Largest allowed.
        max: Lsn,
    },
    /// Appending `records` records after `last_lsn` would pass lsn `u64::MAX`: lsns never wrap,
    /// so the log can take no more (nothing was written).
    #[error("lsn space exhausted: {records} record(s) cannot follow lsn {last_lsn}")]
    LsnExhausted {
        /// The log's last lsn.
        last_lsn: Lsn,
        /// Records the call would have appended.
        records: u64,
    },
    /// The options cannot work (e.g. a segment size not larger than the segment header).
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// A sync failed earlier: the WAL refuses everything, for good (fsync errors are never retried).
    #[error("WAL poisoned: an earlier sync failed; restart and recover from disk")]
    Poisoned,
}

impl WalError {
    /// Builds an [`WalError::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The corruption report, if this is a corruption error.
    pub fn corruption(&self) -> Option<&CorruptionReport> {
        match self {
            WalError::Corruption(r) => Some(r),
            _ => None,
        }
    }
}
