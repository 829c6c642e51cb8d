//! walship-wal: the append-only, crc32c-chained write-ahead log of walship.
//!
//! Owns the record layout ([`record`]), the [`Storage`] trait through which
//! every byte of WAL, snapshot and state-file I/O flows ([`storage`], with the
//! simulated [`sim::SimStorage`] and the sync-failing wrapper
//! [`fault::FaultyStorage`]), segment files, appends with group commit
//! ([`SharedWal`]), zero-copy mmap readers ([`WalReader`]) and the local
//! recovery scan run by [`Wal::open`]. It does not ship records, decide
//! quorum or install snapshots. The on-disk format is specified byte by byte
//! in `spec/wal-format.md`.
//!
//! ```
//! use walship_wal::{FsStorage, OpenReport, Wal, WalOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (mut wal, report) = Wal::open(FsStorage, dir.path(), WalOptions::default())?;
//! assert_eq!(report, OpenReport::Empty);
//! let lsn = wal.append(b"hello")?;
//! assert_eq!(wal.sync()?, lsn);
//! let mut reader = wal.reader(1)?;
//! let rec = reader.next_record().expect("one record")?;
//! assert_eq!(rec.payload(), b"hello");
//! # Ok(()) }
//! ```

mod append;
pub mod control;
pub mod error;
pub mod fault;
mod reader;
pub mod record;
mod scan;
pub mod segment;
pub mod sim;
pub mod state;
pub mod storage;
mod tail;
mod wal;

pub use append::SharedWal;
pub use error::{CorruptionKind, CorruptionReport, RefusedCut, WalError};
pub use reader::{OwnedRecord, RecordBatchView, WalReader};
pub use record::{
    check_successor, decode_record, encode_record, ChainError, Lsn, Position, RecordError,
    RecordHeader, RecordView, RECORD_HEADER_LEN,
};
pub use scan::{inspect, read_only_reader, Inspection, OpenReport};
pub use segment::SegmentInfo;
pub use storage::{FsStorage, Mapping, Storage, StorageFile};
pub use tail::TailBatch;
pub use wal::{OpenOptions, Wal, WalOptions, DEFAULT_SEGMENT_SIZE_BYTES};
