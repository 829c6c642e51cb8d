//! walship-wal: the append-only, crc32c-chained write-ahead log of walship.
//!
//! Owns the record layout ([`record`]), the [`storage::Storage`] trait through
//! which every byte of WAL, snapshot and state-file I/O flows, segment files,
//! appends with group commit, zero-copy mmap readers and the local recovery
//! scan. It does not ship records, decide quorum or install snapshots.
//!
//! ```
//! use walship_wal::record::{decode_record, encode_record, Position};
//! let mut buf = Vec::new();
//! let pos = encode_record(1, 1, Position::ZERO.crc, b"hello", &mut buf);
//! let view = decode_record(&buf, 1024).expect("valid record");
//! assert_eq!(view.position(), pos);
//! assert_eq!(view.payload(), b"hello");
//! ```

pub mod record;
pub mod sim;
pub mod state;
pub mod storage;

pub use record::{
    check_successor, decode_record, encode_record, ChainError, Lsn, Position, RecordError,
    RecordHeader, RecordView, RECORD_HEADER_LEN,
};
pub use storage::{FsStorage, Mapping, Storage, StorageFile};
