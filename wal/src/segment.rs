//! Segment files: the 64-byte segment header, file naming, and the in-memory
//! bookkeeping of each segment (see `spec/wal-format.md`, "Segment file").
//!
//! ```text
//! offset size field
//! 0      8    magic          "WSWALSEG"
//! 8      2    format_version u16 = 3 (2 still read: no control records; 1: not preallocated either)
//! 10     2    header_len     u16 = 64
//! 12     4    flags          u32 = 0
//! 16     8    first_lsn      u64, lsn of the first record this segment holds (== file name)
//! 24     8    generation     u64, bumped by reset_to; lower generations are superseded leftovers
//! 32     8    created_epoch  u64, the WAL's epoch when the segment was created
//! 40     8    prev_lsn       u64 = first_lsn - 1
//! 48     8    prev_epoch     u64, epoch of record prev_lsn (0 if none)
//! 56     4    prev_crc       u32, crc of record prev_lsn (0 if none)
//! 60     4    header_crc     u32, crc32c over bytes [0 .. 60)
//! 64     ..   records, back to back, no padding
//! ```

use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, CorruptionReport};
use crate::record::{Lsn, Position};

/// Segment file magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WSWALSEG";
/// Segment format version written by this build: version 3 is version 2
/// (preallocated) whose records may be control records ([`crate::control`]).
pub const SEGMENT_FORMAT_VERSION: u16 = 3;
/// Preallocated segments (zeros written and synced up to `segment_size_bytes`
/// at creation; an all-zero region after the last record is the unwritten
/// tail) without control records; still opened, read and appended to.
pub const SEGMENT_FORMAT_VERSION_2: u16 = 2;
/// The original format: segments grow with every append (no preallocation);
/// still opened, read and appended to exactly as before.
pub const SEGMENT_FORMAT_VERSION_1: u16 = 1;
/// Unit in which a new segment's preallocated region is zero-filled (one
/// `write_at` each).
pub(crate) const PREALLOC_CHUNK_BYTES: usize = 1024 * 1024;
/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Offset of `format_version`.
pub const SEG_OFF_VERSION: usize = 8;
/// Offset of `header_len`.
pub const SEG_OFF_HEADER_LEN: usize = 10;
/// Offset of `flags`.
pub const SEG_OFF_FLAGS: usize = 12;
/// Offset of `first_lsn`.
pub const SEG_OFF_FIRST_LSN: usize = 16;
/// Offset of `generation`.
pub const SEG_OFF_GENERATION: usize = 24;
/// Offset of `created_epoch`.
pub const SEG_OFF_CREATED_EPOCH: usize = 32;
/// Offset of `prev_lsn`.
pub const SEG_OFF_PREV_LSN: usize = 40;
/// Offset of `prev_epoch`.
pub const SEG_OFF_PREV_EPOCH: usize = 48;
/// Offset of `prev_crc`.
pub const SEG_OFF_PREV_CRC: usize = 56;
/// Offset of `header_crc` (covers bytes `[0 .. 60)`).
pub const SEG_OFF_HEADER_CRC: usize = 60;
/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created (written, synced, then renamed).
pub const TMP_SUFFIX: &str = ".tmp";
/// Digits of the zero-padded decimal first_lsn in a segment file name.
pub const SEGMENT_NAME_DIGITS: usize = 20;
/// A sparse index entry is added to a segment every this many bytes.
pub(crate) const INDEX_STRIDE_BYTES: u64 = 64 * 1024;

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// lsn of the first record the segment holds.
    pub first_lsn: Lsn,
    /// Log generation (bumped by `reset_to`).
    pub generation: u64,
    /// The WAL's epoch when the segment was created.
    pub created_epoch: u64,
    /// Identity of the record before `first_lsn` (lsn = first_lsn - 1), so the
    /// chain verifies across front truncation.
    pub prev: Position,
}

impl SegmentHeader {
    /// Encodes the 64-byte header in the current format version ([`SEGMENT_FORMAT_VERSION`]).
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        self.encode_version(SEGMENT_FORMAT_VERSION)
    }

    /// Encodes the 64-byte header with `format_version` `version` (1 to 3;
    /// versions 1 and 2 are written only by tests and tools that build old logs).
    pub fn encode_version(&self, version: u16) -> [u8; SEGMENT_HEADER_LEN] {
        assert!(
            (SEGMENT_FORMAT_VERSION_1..=SEGMENT_FORMAT_VERSION).contains(&version),
            "segment header invariant: format_version is 1 to 3, got {version}"
        );
        assert_eq!(
            self.prev.lsn.checked_add(1),
            Some(self.first_lsn),
            "segment header invariant: prev.lsn + 1 == first_lsn (no wrap)"
        );
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[SEG_OFF_VERSION..SEG_OFF_VERSION + 2].copy_from_slice(&version.to_le_bytes());
        b[SEG_OFF_HEADER_LEN..SEG_OFF_HEADER_LEN + 2]
            .copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        b[SEG_OFF_FIRST_LSN..SEG_OFF_FIRST_LSN + 8].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[SEG_OFF_GENERATION..SEG_OFF_GENERATION + 8]
            .copy_from_slice(&self.generation.to_le_bytes());
        b[SEG_OFF_CREATED_EPOCH..SEG_OFF_CREATED_EPOCH + 8]
            .copy_from_slice(&self.created_epoch.to_le_bytes());
        b[SEG_OFF_PREV_LSN..SEG_OFF_PREV_LSN + 8].copy_from_slice(&self.prev.lsn.to_le_bytes());
        b[SEG_OFF_PREV_EPOCH..SEG_OFF_PREV_EPOCH + 8]
            .copy_from_slice(&self.prev.epoch.to_le_bytes());
        b[SEG_OFF_PREV_CRC..SEG_OFF_PREV_CRC + 4].copy_from_slice(&self.prev.crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..SEG_OFF_HEADER_CRC]);
        b[SEG_OFF_HEADER_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header read from `segment` (the file bytes from offset 0).
    pub fn decode(segment: &Path, bytes: &[u8]) -> Result<SegmentHeader, CorruptionReport> {
        Self::decode_versioned(segment, bytes).map(|(h, _)| h)
    }

    /// Like [`SegmentHeader::decode`], also returning the header's
    /// `format_version` (1 to 3), which decides how the segment's tail is read
    /// and whether it may hold control records.
    pub fn decode_versioned(
        segment: &Path,
        bytes: &[u8],
    ) -> Result<(SegmentHeader, u16), CorruptionReport> {
        let report = |kind, expected: String, found: String| CorruptionReport {
            segment: segment.to_path_buf(),
            offset: 0,
            lsn: None,
            kind,
            expected,
            found,
        };
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(report(
                CorruptionKind::SegmentHeaderTruncated,
                format!("{SEGMENT_HEADER_LEN} header bytes"),
                format!("{} bytes", bytes.len()),
            ));
        }
        let b = &bytes[..SEGMENT_HEADER_LEN];
        if b[0..8] != SEGMENT_MAGIC {
            return Err(report(
                CorruptionKind::SegmentBadMagic,
                format!("{:?}", String::from_utf8_lossy(&SEGMENT_MAGIC)),
                format!("{:?}", String::from_utf8_lossy(&b[0..8])),
            ));
        }
        let stored = u32_at(b, SEG_OFF_HEADER_CRC);
        let computed = crc32c::crc32c(&b[..SEG_OFF_HEADER_CRC]);
        if stored != computed {
            return Err(report(
                CorruptionKind::SegmentHeaderChecksum,
                format!("header_crc {computed:#010x}"),
                format!("header_crc {stored:#010x}"),
            ));
        }
        let version = u16_at(b, SEG_OFF_VERSION);
        if !(SEGMENT_FORMAT_VERSION_1..=SEGMENT_FORMAT_VERSION).contains(&version) {
            return Err(report(
                CorruptionKind::SegmentBadVersion,
                format!("format_version {SEGMENT_FORMAT_VERSION_1} to {SEGMENT_FORMAT_VERSION}"),
                format!("format_version {version}"),
            ));
        }
        let header_len = u16_at(b, SEG_OFF_HEADER_LEN);
        let flags = u32_at(b, SEG_OFF_FLAGS);
        if header_len as usize != SEGMENT_HEADER_LEN || flags != 0 {
            return Err(report(
                CorruptionKind::SegmentHeaderField,
                format!("header_len {SEGMENT_HEADER_LEN}, flags 0"),
                format!("header_len {header_len}, flags {flags:#x}"),
            ));
        }
        let first_lsn = u64_at(b, SEG_OFF_FIRST_LSN);
        let prev = Position {
            lsn: u64_at(b, SEG_OFF_PREV_LSN),
            epoch: u64_at(b, SEG_OFF_PREV_EPOCH),
            crc: u32_at(b, SEG_OFF_PREV_CRC),
        };
        if first_lsn == 0 || prev.lsn != first_lsn - 1 {
            return Err(report(
                CorruptionKind::SegmentHeaderField,
                "first_lsn >= 1 and prev_lsn == first_lsn - 1".to_string(),
                format!("first_lsn {first_lsn}, prev_lsn {}", prev.lsn),
            ));
        }
        Ok((
            SegmentHeader {
                first_lsn,
                generation: u64_at(b, SEG_OFF_GENERATION),
                created_epoch: u64_at(b, SEG_OFF_CREATED_EPOCH),
                prev,
            },
            version,
        ))
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// The file name of the segment whose first record is `first_lsn`.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// What a directory entry of the WAL directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirEntryKind {
    /// A segment file with this first_lsn.
    Segment(Lsn),
    /// Ends in `.wal` but is not `<20 digits>.wal`: corruption.
    BadSegmentName,
    /// Anything else (e.g. a `*.tmp` leftover of an interrupted segment creation): ignored and reported.
    Other,
}

/// Classifies a file name found in the WAL directory.
pub fn classify_name(name: &str) -> DirEntryKind {
    let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
        return DirEntryKind::Other;
    };
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return DirEntryKind::BadSegmentName;
    }
    match stem.parse::<u64>() {
        Ok(lsn) if lsn >= 1 => DirEntryKind::Segment(lsn),
        _ => DirEntryKind::BadSegmentName,
    }
}

/// A sparse index point: the record `lsn` starts at `offset`, and `prev` is
/// the record before it (so a reader can verify the chain from there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) lsn: Lsn,
    pub(crate) offset: u64,
    pub(crate) prev: Position,
}

/// In-memory bookkeeping of one segment.
#[derive(Clone, Debug)]
pub(crate) struct SegmentMeta {
    pub(crate) path: PathBuf,
    pub(crate) header: SegmentHeader,
    /// `format_version` of the header: 3 = preallocated, control records allowed;
    /// 2 = preallocated (the bytes after the
    /// last record are zeros up to the file's end), 1 = grows with appends.
    pub(crate) version: u16,
    /// Last record in the segment (== header.prev when the segment holds none).
    pub(crate) last: Position,
    /// Offset just past the last record.
    pub(crate) end_offset: u64,
    /// Sparse index, ascending; the first entry (if any) is the first record.
    pub(crate) index: Vec<IndexEntry>,
}

impl SegmentMeta {
    pub(crate) fn new(path: PathBuf, header: SegmentHeader, version: u16) -> SegmentMeta {
        SegmentMeta {
            path,
            header,
            version,
            last: header.prev,
            end_offset: SEGMENT_HEADER_LEN as u64,
            index: Vec::new(),
        }
    }

    /// Records that a record `pos` of `len` bytes was stored at `offset` (right at end_offset).
    pub(crate) fn note_record(&mut self, pos: Position, offset: u64, len: u64) {
        assert_eq!(offset, self.end_offset, "segment records are contiguous");
        assert_eq!(
            Some(pos.lsn),
            self.last.lsn.checked_add(1),
            "segment records are dense (no wrap)"
        );
        let due = match self.index.last() {
            None => true,
            Some(e) => offset >= e.offset + INDEX_STRIDE_BYTES,
        };
        if due {
            self.index.push(IndexEntry {
                lsn: pos.lsn,
                offset,
                prev: self.last,
            });
        }
        self.last = pos;
        self.end_offset = offset + len;
    }

    /// Whether the segment is preallocated (format version 2 or later).
    pub(crate) fn preallocated(&self) -> bool {
        self.version >= SEGMENT_FORMAT_VERSION_2
    }

    /// Whether the segment may hold control records (format version 3 or later).
    pub(crate) fn allows_control(&self) -> bool {
        self.version >= SEGMENT_FORMAT_VERSION
    }

    /// Whether the segment holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.last.lsn < self.header.first_lsn
    }

    /// The index point at or before `lsn` (which must be held by this segment).
    pub(crate) fn seek(&self, lsn: Lsn) -> IndexEntry {
        assert!(
            lsn >= self.header.first_lsn && lsn <= self.last.lsn,
            "seek({lsn}) outside segment {}..={}",
            self.header.first_lsn,
            self.last.lsn
        );
        let i = self.index.partition_point(|e| e.lsn <= lsn);
        assert!(i > 0, "a non-empty segment indexes its first record");
        self.index[i - 1]
    }
}

/// Public description of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Path of the segment file.
    pub path: PathBuf,
    /// lsn of the first record (from header and name).
    pub first_lsn: Lsn,
    /// Last record held (`prev` when the segment holds none).
    pub last: Position,
    /// The record before first_lsn.
    pub prev: Position,
    /// Bytes of valid segment content (header + records).
    pub len_bytes: u64,
    /// Epoch of the WAL when the segment was created.
    pub created_epoch: u64,
    /// Log generation.
    pub generation: u64,
    /// Header `format_version`: 3 = preallocated, control records allowed;
    /// 2 = preallocated; 1 = grows with appends.
    pub format_version: u16,
}

impl From<&SegmentMeta> for SegmentInfo {
    fn from(m: &SegmentMeta) -> SegmentInfo {
        SegmentInfo {
            path: m.path.clone(),
            first_lsn: m.header.first_lsn,
            last: m.last,
            prev: m.header.prev,
            len_bytes: m.end_offset,
            created_epoch: m.header.created_epoch,
            generation: m.header.generation,
            format_version: m.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> SegmentHeader {
        SegmentHeader {
            first_lsn: 11,
            generation: 2,
            created_epoch: 5,
            prev: Position {
                lsn: 10,
                epoch: 4,
                crc: 0xabcd,
            },
        }
    }

    #[test]
    fn header_round_trips_at_documented_offsets() {
        let b = hdr().encode();
        assert_eq!(&b[0..8], b"WSWALSEG");
        assert_eq!(&b[8..10], &3u16.to_le_bytes());
        assert_eq!(&b[10..12], &64u16.to_le_bytes());
        assert_eq!(&b[16..24], &11u64.to_le_bytes());
        assert_eq!(&b[40..48], &10u64.to_le_bytes());
        assert_eq!(&b[60..64], &crc32c::crc32c(&b[..60]).to_le_bytes());
        assert_eq!(SegmentHeader::decode(Path::new("x"), &b), Ok(hdr()));
    }

    #[test]
    fn version_1_and_2_headers_still_decode_and_unknown_versions_are_refused() {
        let b = hdr().encode_version(SEGMENT_FORMAT_VERSION_1);
        assert_eq!(&b[8..10], &1u16.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode_versioned(Path::new("x"), &b),
            Ok((hdr(), 1))
        );
        let b = hdr().encode_version(SEGMENT_FORMAT_VERSION_2);
        assert_eq!(
            SegmentHeader::decode_versioned(Path::new("x"), &b),
            Ok((hdr(), 2))
        );
        assert_eq!(
            SegmentHeader::decode_versioned(Path::new("x"), &hdr().encode()),
            Ok((hdr(), 3))
        );
        for bad in [0u16, 4] {
            let mut c = hdr().encode();
            c[8..10].copy_from_slice(&bad.to_le_bytes());
            let crc = crc32c::crc32c(&c[..60]);
            c[60..64].copy_from_slice(&crc.to_le_bytes());
            let e = SegmentHeader::decode(Path::new("x"), &c).expect_err("unknown version");
            assert_eq!(e.kind, CorruptionKind::SegmentBadVersion);
        }
    }

    #[test]
    fn every_header_bit_flip_is_detected() {
        let b = hdr().encode();
        for i in 0..SEGMENT_HEADER_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            let e = SegmentHeader::decode(Path::new("x"), &c).expect_err("flip detected");
            if i / 8 < 8 {
                assert_eq!(e.kind, CorruptionKind::SegmentBadMagic);
            } else {
                assert_eq!(e.kind, CorruptionKind::SegmentHeaderChecksum, "bit {i}");
            }
        }
    }

    #[test]
    fn short_header_is_truncated() {
        let b = hdr().encode();
        let e = SegmentHeader::decode(Path::new("x"), &b[..63]).expect_err("short");
        assert_eq!(e.kind, CorruptionKind::SegmentHeaderTruncated);
    }

    proptest::proptest! {
        #[test]
        fn header_decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            if let Ok(h) = SegmentHeader::decode(Path::new("x"), &bytes) {
                proptest::prop_assert_eq!(h.prev.lsn + 1, h.first_lsn);
                proptest::prop_assert_eq!(&h.encode()[..], &bytes[..SEGMENT_HEADER_LEN]);
            }
        }
    }

    #[test]
    fn names_classify() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(
            classify_name(&segment_file_name(12345)),
            DirEntryKind::Segment(12345)
        );
        assert_eq!(
            classify_name(&segment_file_name(u64::MAX)),
            DirEntryKind::Segment(u64::MAX)
        );
        assert_eq!(
            classify_name("00000000000000000000.wal"),
            DirEntryKind::BadSegmentName
        );
        assert_eq!(classify_name("0001.wal"), DirEntryKind::BadSegmentName);
        assert_eq!(
            classify_name("9999999999999999999x.wal"),
            DirEntryKind::BadSegmentName
        );
        assert_eq!(
            classify_name("99999999999999999999.wal"),
            DirEntryKind::BadSegmentName
        );
        assert_eq!(
            classify_name("00000000000000000001.wal.tmp"),
            DirEntryKind::Other
        );
        assert_eq!(classify_name("notes.txt"), DirEntryKind::Other);
    }

    #[test]
    fn sparse_index_seeks_to_entry_at_or_before() {
        let mut m = SegmentMeta::new(PathBuf::from("s"), hdr(), SEGMENT_FORMAT_VERSION);
        let mut off = SEGMENT_HEADER_LEN as u64;
        for lsn in 11..=30u64 {
            m.note_record(
                Position {
                    lsn,
                    epoch: 5,
                    crc: lsn as u32,
                },
                off,
                20_000,
            );
            off += 20_000;
        }
        assert_eq!(m.seek(11).lsn, 11);
        assert_eq!(m.seek(11).prev, hdr().prev);
        let e = m.seek(20);
        assert!(e.lsn <= 20 && e.lsn + 4 > 20, "{e:?}");
        assert_eq!(e.prev.lsn, e.lsn - 1);
        assert_eq!(m.last.lsn, 30);
        assert!(!m.is_empty());
    }
}
