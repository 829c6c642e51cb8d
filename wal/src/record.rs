//! The record layout: the bytes a primary stores are the bytes it ships, and
//! a replica verifies the primary's own checksum.
//!
//! Little-endian, no padding (see `spec/wal-format.md`, "Record"):
//!
//! ```text
//! offset size field
//! 0      4    crc         crc32c over bytes [4 .. 32 + payload_len) (rest of header + payload)
//! 4      4    payload_len u32, must be <= max_record_bytes
//! 8      8    lsn         u64, dense, first record is 1
//! 16     8    epoch       u64, term of the primary that wrote it
//! 24     4    prev_crc    crc of record lsn-1 (0 for lsn 1)
//! 28     4    flags       u32: bit 0 = control record (segment format 3+); other bits must be 0
//! 32     ..   payload
//! ```

use std::fmt;

use crate::control::{ControlError, ControlRecord};

/// Log sequence number: dense, the first record of a log is 1, 0 means "none".
pub type Lsn = u64;

/// Size of the fixed record header in bytes.
pub const RECORD_HEADER_LEN: usize = 32;
/// Offset of the `crc` field.
pub const OFF_CRC: usize = 0;
/// Offset of the `payload_len` field.
pub const OFF_PAYLOAD_LEN: usize = 4;
/// Offset of the `lsn` field.
pub const OFF_LSN: usize = 8;
/// Offset of the `epoch` field.
pub const OFF_EPOCH: usize = 16;
/// Offset of the `prev_crc` field.
pub const OFF_PREV_CRC: usize = 24;
/// Offset of the `flags` field.
pub const OFF_FLAGS: usize = 28;
/// `flags` bit of a control record ([`crate::control`]): written by the node
/// for itself, never handed to an applier; allowed only in segments of format
/// version 3 or later.
pub const FLAG_CONTROL: u32 = 0x1;
/// Every `flags` bit this build defines; a record with any other bit set is
/// refused ([`RecordError::BadFlags`]).
pub const KNOWN_RECORD_FLAGS: u32 = FLAG_CONTROL;
/// First byte covered by the record crc.
pub const CRC_COVERAGE_START: usize = 4;
/// Default bound on a record's payload length (4 MiB).
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 4 * 1024 * 1024;

/// The identity of a record: what a replica's prefix proof compares.
/// The empty log is [`Position::ZERO`] `{0, 0, 0}`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    /// Log sequence number of the record (0 for the empty log).
    pub lsn: Lsn,
    /// Epoch of the primary that wrote the record.
    pub epoch: u64,
    /// The record's crc (what the next record stores as `prev_crc`).
    pub crc: u32,
}

impl Position {
    /// The position of the empty log: the record before lsn 1.
    pub const ZERO: Position = Position {
        lsn: 0,
        epoch: 0,
        crc: 0,
    };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lsn {} epoch {} crc {:#010x}",
            self.lsn, self.epoch, self.crc
        )
    }
}

/// The decoded fixed header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// crc32c over bytes `[4 .. 32 + payload_len)`.
    pub crc: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Log sequence number.
    pub lsn: Lsn,
    /// Epoch of the writer.
    pub epoch: u64,
    /// crc of record `lsn - 1` (0 for lsn 1).
    pub prev_crc: u32,
    /// Record flags: [`FLAG_CONTROL`] or 0.
    pub flags: u32,
}

impl RecordHeader {
    /// Parses the header fields of the first [`RECORD_HEADER_LEN`] bytes of `buf`
    /// WITHOUT verifying anything. `None` if `buf` is shorter than a header.
    pub fn parse(buf: &[u8]) -> Option<RecordHeader> {
        if buf.len() < RECORD_HEADER_LEN {
            return None;
        }
        Some(RecordHeader {
            crc: read_u32(buf, OFF_CRC),
            payload_len: read_u32(buf, OFF_PAYLOAD_LEN),
            lsn: read_u64(buf, OFF_LSN),
            epoch: read_u64(buf, OFF_EPOCH),
            prev_crc: read_u32(buf, OFF_PREV_CRC),
            flags: read_u32(buf, OFF_FLAGS),
        })
    }

    /// The identity of the record this header belongs to.
    pub fn position(&self) -> Position {
        Position {
            lsn: self.lsn,
            epoch: self.epoch,
            crc: self.crc,
        }
    }

    /// Total stored length of the record (header + payload).
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload_len as usize
    }

    /// Whether this is a control record ([`FLAG_CONTROL`]).
    pub fn is_control(&self) -> bool {
        self.flags & FLAG_CONTROL != 0
    }
}

fn read_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(b)
}

/// Zero-copy view of one whole verified record (header + payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Wraps bytes already verified by [`decode_record`] (crate-internal: readers
    /// that verified once must not pay for a second crc pass).
    pub(crate) fn from_verified(bytes: &'a [u8]) -> RecordView<'a> {
        debug_assert!(
            bytes.len() >= RECORD_HEADER_LEN,
            "verified record shorter than a header"
        );
        RecordView { bytes }
    }
    /// The decoded header.
    pub fn header(&self) -> RecordHeader {
        // Invariant: a RecordView only exists over a verified record, which is at least a header long.
        match RecordHeader::parse(self.bytes) {
            Some(h) => h,
            None => unreachable!("RecordView shorter than a record header"),
        }
    }
    /// The payload bytes.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[RECORD_HEADER_LEN..]
    }
    /// The whole stored record (header + payload), exactly as on disk and on the wire.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Log sequence number.
    pub fn lsn(&self) -> Lsn {
        read_u64(self.bytes, OFF_LSN)
    }
    /// Epoch of the writer.
    pub fn epoch(&self) -> u64 {
        read_u64(self.bytes, OFF_EPOCH)
    }
    /// The record's crc.
    pub fn crc(&self) -> u32 {
        read_u32(self.bytes, OFF_CRC)
    }
    /// crc of the previous record.
    pub fn prev_crc(&self) -> u32 {
        read_u32(self.bytes, OFF_PREV_CRC)
    }

    /// Whether the record is a control record ([`FLAG_CONTROL`]).
    pub fn is_control(&self) -> bool {
        read_u32(self.bytes, OFF_FLAGS) & FLAG_CONTROL != 0
    }
    /// The record's identity.
    pub fn position(&self) -> Position {
        Position {
            lsn: self.lsn(),
            epoch: self.epoch(),
            crc: self.crc(),
        }
    }
}

/// Why bytes are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The buffer ends before the header, or before the payload the header announces.
    #[error("record truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The payload length field is above the configured maximum.
    #[error("record payload length {len} exceeds the maximum {max}")]
    TooLarge {
        /// Length found.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// The stored crc does not match the bytes.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// crc stored in the header.
        stored: u32,
        /// crc computed over the bytes.
        computed: u32,
    },
    /// The flags field has a bit this build does not define (only
    /// [`FLAG_CONTROL`] is), or a control record sits where none is allowed
    /// (a segment of format version 1 or 2).
    #[error("record flags {found:#x} not allowed here (defined: {KNOWN_RECORD_FLAGS:#x}, control records only in segment format 3+)")]
    BadFlags {
        /// Flags found.
        found: u32,
    },
    /// A crc-valid control record whose body is malformed or names another
    /// epoch than the record header ([`crate::control`]).
    #[error("control record: {error}")]
    BadControl {
        /// What is wrong with the body.
        error: ControlError,
    },
}

/// Why a record does not follow the previous one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The record's lsn is beyond the next expected one.
    #[error("gap: expected lsn {expected_lsn}, found lsn {found_lsn}")]
    Gap {
        /// The lsn that should come next.
        expected_lsn: Lsn,
        /// The lsn found.
        found_lsn: Lsn,
    },
    /// The record's lsn is at or below the last one. After a record with lsn `u64::MAX` every
    /// record is one (no lsn follows it: lsns never wrap); `expected_lsn` then saturates at
    /// `u64::MAX`.
    #[error("duplicate: expected lsn {expected_lsn}, found lsn {found_lsn}")]
    Duplicate {
        /// The lsn that should come next (`u64::MAX` also after a record with lsn `u64::MAX`).
        expected_lsn: Lsn,
        /// The lsn found.
        found_lsn: Lsn,
    },
    /// The record's prev_crc is not the crc of the previous record (divergent history).
    #[error("chain break at lsn {lsn}: expected prev_crc {expected_prev_crc:#010x}, found {found_prev_crc:#010x}")]
    ChainBreak {
        /// The record's lsn.
        lsn: Lsn,
        /// crc of the previous record.
        expected_prev_crc: u32,
        /// prev_crc stored in the record.
        found_prev_crc: u32,
    },
    /// The record's epoch is below the previous record's.
    #[error("epoch regression at lsn {lsn}: last epoch {last_epoch}, found epoch {found_epoch}")]
    EpochRegression {
        /// The record's lsn.
        lsn: Lsn,
        /// Epoch of the previous record.
        last_epoch: u64,
        /// Epoch stored in the record.
        found_epoch: u64,
    },
}

/// Stored length of a record with `payload_len` payload bytes.
pub fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

/// Appends the encoding of one record to `out` and returns its position.
///
/// The caller guarantees `payload.len() <= u32::MAX` (the WAL checks its
/// configured maximum before calling this).
pub fn encode_record(
    lsn: Lsn,
    epoch: u64,
    prev_crc: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Position {
    encode_record_with_flags(lsn, epoch, prev_crc, 0, payload, out)
}

/// [`encode_record`] with a `flags` field (0 or [`FLAG_CONTROL`]).
pub fn encode_record_with_flags(
    lsn: Lsn,
    epoch: u64,
    prev_crc: u32,
    flags: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Position {
    assert!(
        payload.len() <= u32::MAX as usize,
        "encode_record: payload length {} does not fit the u32 length field",
        payload.len()
    );
    assert!(
        flags & !KNOWN_RECORD_FLAGS == 0,
        "encode_record: flags {flags:#x} has bits this format does not define"
    );
    let start = out.len();
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 4]
        .copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[OFF_LSN..OFF_LSN + 8].copy_from_slice(&lsn.to_le_bytes());
    header[OFF_EPOCH..OFF_EPOCH + 8].copy_from_slice(&epoch.to_le_bytes());
    header[OFF_PREV_CRC..OFF_PREV_CRC + 4].copy_from_slice(&prev_crc.to_le_bytes());
    header[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[CRC_COVERAGE_START..]), payload);
    header[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - start, record_len(payload.len()));
    Position { lsn, epoch, crc }
}

/// Computes the crc a record's bytes should carry (`bytes` is the whole record).
pub fn compute_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(&bytes[CRC_COVERAGE_START..])
}

/// Parses and verifies ONE record at the start of `buf`.
///
/// Order of checks: header present, `payload_len <= max_record_bytes` (before
/// anything touches the payload), payload present, crc, flags, and for a
/// control record its body ([`crate::control`]). Trailing bytes
/// after the record are ignored.
pub fn decode_record(buf: &[u8], max_record_bytes: u32) -> Result<RecordView<'_>, RecordError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated {
            need: RECORD_HEADER_LEN,
            have: buf.len(),
        });
    }
    let len = read_u32(buf, OFF_PAYLOAD_LEN);
    if len > max_record_bytes {
        return Err(RecordError::TooLarge {
            len,
            max: max_record_bytes,
        });
    }
    let total = RECORD_HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(RecordError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    let bytes = &buf[..total];
    let stored = read_u32(bytes, OFF_CRC);
    let computed = compute_crc(bytes);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let flags = read_u32(bytes, OFF_FLAGS);
    if flags & !KNOWN_RECORD_FLAGS != 0 {
        return Err(RecordError::BadFlags { found: flags });
    }
    if flags & FLAG_CONTROL != 0 {
        ControlRecord::check_at(
            read_u64(bytes, OFF_LSN),
            read_u64(bytes, OFF_EPOCH),
            &bytes[RECORD_HEADER_LEN..],
        )
        .map_err(|error| RecordError::BadControl { error })?;
    }
    Ok(RecordView { bytes })
}

/// The unit a torn write is assumed to respect at least: the smallest disk
/// sector. A write torn at byte `t` leaves the bytes from `t` to the end of
/// its 512-byte sector (or the end of the write) unwritten — zeros in a
/// preallocated segment (`spec/wal-format.md`, "Bit flip or torn write").
pub const TORN_WRITE_UNIT_BYTES: u64 = 512;

/// A single flipped bit that explains a record's crc mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitFlip {
    /// Byte index within the record (0 = first byte of the `crc` field).
    pub byte: usize,
    /// Bit within that byte (0 = least significant).
    pub bit: u8,
    /// The bit's value on disk (the crc-valid record has the other value).
    pub on_disk: bool,
}

/// Reflected CRC-32C (Castagnoli) polynomial.
const CRC32C_POLY_REFLECTED: u32 = 0x82F6_3B78;

/// Byte table of the reflected crc32c (built at compile time).
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = i as u32;
        let mut k = 0;
        while k < 8 {
            v = if v & 1 == 1 {
                (v >> 1) ^ CRC32C_POLY_REFLECTED
            } else {
                v >> 1
            };
            k += 1;
        }
        t[i] = v;
        i += 1;
    }
    t
};

/// One step of the raw (init 0, no final xor) reflected crc32c over a zero byte.
fn crc_raw_zero_byte(v: u32) -> u32 {
    (v >> 8) ^ CRC32C_TABLE[(v & 0xff) as usize]
}

/// For a whole record (`32 + payload_len` bytes present) whose crc does not
/// match: the one bit whose flip would make it crc-valid, if there is one.
///
/// crc32c is linear: flipping bit `j` of byte `i` of the covered bytes changes
/// the crc by a value that depends only on `(i, j)` and the length, and within
/// a record (< 2^31 bits) distinct single bits give distinct changes, so at
/// most one single bit explains a given mismatch. Cost: 8 table steps per
/// covered byte (only run on the one damaged record at the end of a log).
pub fn single_bit_error(record: &[u8]) -> Option<BitFlip> {
    let h = RecordHeader::parse(record)?;
    if h.record_len() != record.len() {
        return None;
    }
    let stored = read_u32(record, OFF_CRC);
    let computed = compute_crc(record);
    let syndrome = stored ^ computed;
    if syndrome == 0 {
        return None;
    }
    let flip = |byte: usize, bit: u8| BitFlip {
        byte,
        bit,
        on_disk: record[byte] >> bit & 1 == 1,
    };
    if syndrome.count_ones() == 1 {
        // The stored crc itself differs in one bit (little-endian field at offset 0).
        let b = syndrome.trailing_zeros() as usize;
        return Some(flip(OFF_CRC + b / 8, (b % 8) as u8));
    }
    // v[j] = crc_raw of a message whose only set bit is bit j of the byte that
    // is `k` bytes before the end; walk k from 0 (last byte) backwards.
    let covered = record.len() - CRC_COVERAGE_START;
    let mut v = [0u32; 8];
    for (j, vj) in v.iter_mut().enumerate() {
        // A single byte (1 << j) fed into the raw crc from state 0.
        *vj = crc_raw_zero_byte(1u32 << j);
    }
    for k in 0..covered {
        for (j, vj) in v.iter_mut().enumerate() {
            if *vj == syndrome {
                return Some(flip(record.len() - 1 - k, j as u8));
            }
            *vj = crc_raw_zero_byte(*vj);
        }
    }
    None
}

/// Whether the crc mismatch of a whole record stored at `file_offset` of a
/// preallocated (zero-filled) segment is a flipped bit that **no torn write
/// can have produced**: `Some(flip)` if exactly one bit explains the mismatch
/// and either that bit is 1 on disk (a torn write into zeros only leaves
/// zeros), or its byte is not zero, or a non-zero byte follows it before the
/// end of its 512-byte sector or of the record (a write torn at a byte leaves
/// everything after it, to at least the end of that sector, unwritten).
/// `None`: a torn write could explain the damage (or no single bit does).
pub fn bit_flip_not_torn(record: &[u8], file_offset: u64) -> Option<BitFlip> {
    let f = single_bit_error(record)?;
    if f.on_disk || record[f.byte] != 0 {
        return Some(f);
    }
    let abs = file_offset + f.byte as u64;
    let sector_end = (abs / TORN_WRITE_UNIT_BYTES + 1) * TORN_WRITE_UNIT_BYTES;
    let run_end = ((sector_end - file_offset) as usize).min(record.len());
    record[f.byte + 1..run_end]
        .iter()
        .any(|&b| b != 0)
        .then_some(f)
}

/// Chain rule: `lsn == prev.lsn + 1`, `prev_crc == prev.crc`, `epoch >= prev.epoch`,
/// checked in that order. Nothing follows `prev.lsn == u64::MAX`: lsns never wrap, so any
/// record after it is a [`ChainError::Duplicate`].
pub fn check_successor(prev: Position, h: &RecordHeader) -> Result<(), ChainError> {
    let Some(expected_lsn) = prev.lsn.checked_add(1) else {
        return Err(ChainError::Duplicate {
            expected_lsn: Lsn::MAX,
            found_lsn: h.lsn,
        });
    };
    if h.lsn > expected_lsn {
        return Err(ChainError::Gap {
            expected_lsn,
            found_lsn: h.lsn,
        });
    }
    if h.lsn < expected_lsn {
        return Err(ChainError::Duplicate {
            expected_lsn,
            found_lsn: h.lsn,
        });
    }
    if h.prev_crc != prev.crc {
        return Err(ChainError::ChainBreak {
            lsn: h.lsn,
            expected_prev_crc: prev.crc,
            found_prev_crc: h.prev_crc,
        });
    }
    if h.epoch < prev.epoch {
        return Err(ChainError::EpochRegression {
            lsn: h.lsn,
            last_epoch: prev.epoch,
            found_epoch: h.epoch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn single_bit_error_finds_every_flipped_bit_of_a_record() {
        let mut v = Vec::new();
        encode_record(7, 3, 0xdead_beef, &[0xa5; 40], &mut v);
        for i in 0..v.len() * 8 {
            let mut c = v.clone();
            c[i / 8] ^= 1 << (i % 8);
            if i / 8 >= OFF_PAYLOAD_LEN && i / 8 < OFF_PAYLOAD_LEN + 4 {
                continue; // the length changes: not the same record extent
            }
            let f = single_bit_error(&c).expect("one bit explains it");
            assert_eq!((f.byte, f.bit), (i / 8, (i % 8) as u8), "bit {i}");
            assert_eq!(f.on_disk, c[i / 8] >> (i % 8) & 1 == 1);
        }
        assert_eq!(single_bit_error(&v), None, "a valid record has no error");
    }

    #[test]
    fn a_zeroed_record_tail_could_be_torn_but_a_set_bit_cannot() {
        let mut v = Vec::new();
        encode_record(7, 3, 0xdead_beef, &[0xa5; 40], &mut v);
        // Torn at the last byte: that byte reads as zero.
        let mut torn = v.clone();
        let last = torn.len() - 1;
        torn[last] = 0;
        assert_eq!(bit_flip_not_torn(&torn, 4096), None);
        // A bit set that the record does not have: no torn write sets bits.
        let mut set1 = v.clone();
        let (b, bit) = (0..set1.len() * 8)
            .map(|i| (i / 8, i % 8))
            .find(|&(b, bit)| b >= 8 && v[b] >> bit & 1 == 0)
            .expect("a zero bit");
        set1[b] |= 1 << bit;
        let f = bit_flip_not_torn(&set1, 4096).expect("not a torn write");
        assert!(f.on_disk);
        // A bit cleared in the middle of non-zero bytes: a tear there would
        // have left the rest of the sector zero too.
        let mut cleared = v.clone();
        cleared[50] &= !0x01;
        assert_eq!(bit_flip_not_torn(&cleared, 4096).map(|f| f.byte), Some(50));
    }
    use super::*;
    use proptest::prelude::*;

    fn one(lsn: Lsn, epoch: u64, prev_crc: u32, payload: &[u8]) -> (Vec<u8>, Position) {
        let mut out = Vec::new();
        let pos = encode_record(lsn, epoch, prev_crc, payload, &mut out);
        (out, pos)
    }

    #[test]
    fn encode_writes_fields_at_documented_offsets() {
        let (buf, pos) = one(7, 3, 0xdead_beef, b"hello");
        assert_eq!(buf.len(), RECORD_HEADER_LEN + 5);
        assert_eq!(&buf[4..8], &5u32.to_le_bytes());
        assert_eq!(&buf[8..16], &7u64.to_le_bytes());
        assert_eq!(&buf[16..24], &3u64.to_le_bytes());
        assert_eq!(&buf[24..28], &0xdead_beefu32.to_le_bytes());
        assert_eq!(&buf[28..32], &0u32.to_le_bytes());
        assert_eq!(&buf[32..], b"hello");
        assert_eq!(&buf[0..4], &pos.crc.to_le_bytes());
        assert_eq!(pos.crc, crc32c::crc32c(&buf[4..]));
        assert_eq!(
            pos,
            Position {
                lsn: 7,
                epoch: 3,
                crc: pos.crc
            }
        );
    }

    #[test]
    fn decode_round_trips_and_ignores_trailing_bytes() {
        let (mut buf, pos) = one(1, 1, 0, b"abc");
        buf.extend_from_slice(b"trailing");
        let v = decode_record(&buf, 1024).expect("valid record");
        assert_eq!(v.payload(), b"abc");
        assert_eq!(v.position(), pos);
        assert_eq!(v.bytes().len(), RECORD_HEADER_LEN + 3);
        assert_eq!(v.header().payload_len, 3);
        assert_eq!(v.prev_crc(), 0);
    }

    #[test]
    fn decode_short_header_is_truncated() {
        let (buf, _) = one(1, 1, 0, b"abc");
        assert_eq!(
            decode_record(&buf[..10], 1024),
            Err(RecordError::Truncated { need: 32, have: 10 })
        );
    }

    #[test]
    fn decode_short_payload_is_truncated() {
        let (buf, _) = one(1, 1, 0, b"abcdef");
        assert_eq!(
            decode_record(&buf[..35], 1024),
            Err(RecordError::Truncated { need: 38, have: 35 })
        );
    }

    #[test]
    fn decode_length_above_max_is_too_large_before_payload_check() {
        let (buf, _) = one(1, 1, 0, &[0u8; 100]);
        // Only the header is given: the length check must come first.
        assert_eq!(
            decode_record(&buf[..32], 99),
            Err(RecordError::TooLarge { len: 100, max: 99 })
        );
    }

    #[test]
    fn decode_undefined_flag_bits_with_valid_crc_is_bad_flags() {
        for found in [0x2u32, 0x3, 0x8000_0000] {
            let (mut buf, _) = one(1, 1, 0, b"x");
            buf[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&found.to_le_bytes());
            let crc = compute_crc(&buf);
            buf[0..4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                decode_record(&buf, 1024),
                Err(RecordError::BadFlags { found })
            );
        }
    }

    #[test]
    fn control_flag_is_encoded_covered_by_the_crc_and_decoded() {
        let body = ControlRecord::EpochStart {
            epoch: 2,
            primary: "n1".into(),
        }
        .encode()
        .expect("body");
        let mut buf = Vec::new();
        let pos = encode_record_with_flags(3, 2, 0x77, FLAG_CONTROL, &body, &mut buf);
        assert_eq!(&buf[OFF_FLAGS..OFF_FLAGS + 4], &[1, 0, 0, 0]);
        let v = decode_record(&buf, 1024).expect("decodes");
        assert!(v.is_control());
        assert_eq!(v.header().flags, FLAG_CONTROL);
        assert_eq!(v.position(), pos);
        // The same record without the flag is another record (different crc).
        let mut plain = Vec::new();
        let p2 = encode_record(3, 2, 0x77, &body, &mut plain);
        assert_ne!(p2.crc, pos.crc);
        assert!(!decode_record(&plain, 1024).expect("decodes").is_control());
        // Clearing the flag without fixing the crc is a checksum error.
        buf[OFF_FLAGS] = 0;
        assert!(matches!(
            decode_record(&buf, 1024),
            Err(RecordError::Checksum { .. })
        ));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (buf, _) = one(42, 9, 0x1234_5678, b"some payload bytes");
        for i in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            let r = decode_record(&b, 1 << 20);
            let byte = i / 8;
            if (OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 4).contains(&byte) {
                // A length flip announces more or fewer bytes: truncated, too large or checksum.
                assert!(r.is_err(), "bit {i} not detected");
            } else {
                assert!(
                    matches!(r, Err(RecordError::Checksum { .. })),
                    "bit {i}: {r:?}"
                );
            }
        }
    }

    fn h(lsn: Lsn, epoch: u64, prev_crc: u32) -> RecordHeader {
        RecordHeader {
            crc: 0,
            payload_len: 0,
            lsn,
            epoch,
            prev_crc,
            flags: 0,
        }
    }

    #[test]
    fn successor_accepts_next_record() {
        let prev = Position {
            lsn: 4,
            epoch: 2,
            crc: 77,
        };
        assert_eq!(check_successor(prev, &h(5, 2, 77)), Ok(()));
        assert_eq!(check_successor(prev, &h(5, 3, 77)), Ok(()));
        assert_eq!(check_successor(Position::ZERO, &h(1, 1, 0)), Ok(()));
    }

    #[test]
    fn successor_errors_are_distinct_and_ordered() {
        let prev = Position {
            lsn: 4,
            epoch: 2,
            crc: 77,
        };
        assert_eq!(
            check_successor(prev, &h(6, 1, 1)),
            Err(ChainError::Gap {
                expected_lsn: 5,
                found_lsn: 6
            })
        );
        assert_eq!(
            check_successor(prev, &h(4, 1, 1)),
            Err(ChainError::Duplicate {
                expected_lsn: 5,
                found_lsn: 4
            })
        );
        assert_eq!(
            check_successor(prev, &h(5, 1, 1)),
            Err(ChainError::ChainBreak {
                lsn: 5,
                expected_prev_crc: 77,
                found_prev_crc: 1
            })
        );
        assert_eq!(
            check_successor(prev, &h(5, 1, 77)),
            Err(ChainError::EpochRegression {
                lsn: 5,
                last_epoch: 2,
                found_epoch: 1
            })
        );
    }

    #[test]
    fn nothing_follows_lsn_u64_max_the_lsn_never_wraps() {
        let prev = Position {
            lsn: u64::MAX,
            epoch: 2,
            crc: 77,
        };
        // lsn 0 chaining by crc was accepted (expected lsn wrapped to 0).
        for found_lsn in [0, 1, u64::MAX - 1, u64::MAX] {
            assert_eq!(
                check_successor(prev, &h(found_lsn, 2, 77)),
                Err(ChainError::Duplicate {
                    expected_lsn: u64::MAX,
                    found_lsn
                })
            );
        }
        let before_max = Position {
            lsn: u64::MAX - 1,
            ..prev
        };
        assert_eq!(check_successor(before_max, &h(u64::MAX, 2, 77)), Ok(()));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(lsn in 1u64.., epoch: u64, prev: u32, payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let (buf, pos) = one(lsn, epoch, prev, &payload);
            let v = decode_record(&buf, 4096).expect("round trip");
            prop_assert_eq!(v.payload(), &payload[..]);
            prop_assert_eq!(v.position(), pos);
            prop_assert_eq!(v.prev_crc(), prev);
            prop_assert_eq!(v.header().flags, 0);
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0u32..512) {
            if let Ok(v) = decode_record(&bytes, max) {
                prop_assert!(v.bytes().len() <= bytes.len());
                prop_assert!(v.payload().len() as u32 <= max);
            }
        }
    }
}
