//! The snapshot file layout (`spec/snapshot-format.md`), byte by byte.
//!
//! ```text
//! header   64 bytes   magic, version, boundary (lsn, epoch, crc), chunk size,
//!                     total payload length, chunk count, header crc
//! chunk i  16 bytes + len   index u64 | len u32 | crc u32 | payload bytes
//!          (chunk_count of them; every chunk holds chunk_size_bytes except
//!           the last, which holds the remainder)
//! trailer  32 bytes   magic, header crc, chunk count, total length,
//!                     crc32c of the whole payload, trailer crc
//! ```
//!
//! Every integer is little-endian. Every byte of the file is covered by a
//! checksum or compared with a value derived from the header (reserved
//! bytes must be zero and are inside the header crc), so a single flipped
//! bit anywhere is detected. Every length is checked against [`Limits`]
//! before anything is allocated.

use walship_wal::Position;

use crate::error::InvalidSnapshot;

/// Magic of the snapshot header: `"WSSN"`.
pub const HEADER_MAGIC: [u8; 4] = *b"WSSN";
/// Magic of the snapshot trailer: `"WSTR"`.
pub const TRAILER_MAGIC: [u8; 4] = *b"WSTR";
/// Format version written by this build; the only one it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Length of the header.
pub const HEADER_LEN: usize = 64;
/// Header: magic (4 bytes).
pub const H_MAGIC: usize = 0;
/// Header: format version (u16).
pub const H_VERSION: usize = 4;
/// Header: flags (u16), must be 0 in version 1.
pub const H_FLAGS: usize = 6;
/// Header: boundary lsn (u64).
pub const H_BOUNDARY_LSN: usize = 8;
/// Header: boundary epoch (u64).
pub const H_BOUNDARY_EPOCH: usize = 16;
/// Header: boundary crc (u32).
pub const H_BOUNDARY_CRC: usize = 24;
/// Header: chunk size in bytes (u32).
pub const H_CHUNK_SIZE: usize = 28;
/// Header: total payload length in bytes (u64).
pub const H_TOTAL_LEN: usize = 32;
/// Header: number of chunks (u64).
pub const H_CHUNK_COUNT: usize = 40;
/// Header: reserved, 12 zero bytes.
pub const H_RESERVED: usize = 48;
/// Header: crc32c over bytes `[0, 60)`.
pub const H_CRC: usize = 60;

/// Length of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 16;
/// Chunk header: chunk index (u64), 0-based.
pub const C_INDEX: usize = 0;
/// Chunk header: payload bytes in this chunk (u32).
pub const C_LEN: usize = 8;
/// Chunk header: crc32c over the index, the length and the payload bytes.
pub const C_CRC: usize = 12;

/// Length of the trailer.
pub const TRAILER_LEN: usize = 32;
/// Trailer: magic (4 bytes).
pub const T_MAGIC: usize = 0;
/// Trailer: copy of the header crc (binds trailer to header).
pub const T_HEADER_CRC: usize = 4;
/// Trailer: number of chunks (u64).
pub const T_CHUNK_COUNT: usize = 8;
/// Trailer: total payload length (u64).
pub const T_TOTAL_LEN: usize = 16;
/// Trailer: crc32c of the whole payload, in order (u32).
pub const T_PAYLOAD_CRC: usize = 24;
/// Trailer: crc32c over bytes `[0, 28)`.
pub const T_CRC: usize = 28;

/// Hard upper bound of a chunk's size (4 MiB): one chunk travels in one
/// wire frame and is the largest buffer a reader allocates.
pub const MAX_CHUNK_SIZE_BYTES: u32 = 4 * 1024 * 1024;
/// Default chunk size (1 MiB).
pub const DEFAULT_CHUNK_SIZE_BYTES: u32 = 1024 * 1024;
/// Default bound of a snapshot's payload (64 GiB).
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Bounds every length read from a snapshot (file or transfer) is checked
/// against before anything is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted total payload length.
    pub max_total_bytes: u64,
    /// Largest accepted chunk size; never above [`MAX_CHUNK_SIZE_BYTES`].
    pub max_chunk_size_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_chunk_size_bytes: MAX_CHUNK_SIZE_BYTES,
        }
    }
}

impl Limits {
    /// The chunk size bound actually enforced (the configured one, capped at
    /// [`MAX_CHUNK_SIZE_BYTES`]).
    pub fn chunk_size_bound(&self) -> u32 {
        self.max_chunk_size_bytes.min(MAX_CHUNK_SIZE_BYTES)
    }

    /// Checks a (chunk size, total length) pair from outside against the bounds.
    pub fn check(&self, chunk_size_bytes: u32, total_len: u64) -> Result<(), InvalidSnapshot> {
        let max = self.chunk_size_bound();
        if chunk_size_bytes == 0 || chunk_size_bytes > max {
            return Err(InvalidSnapshot::ChunkSizeOutOfBounds {
                found: chunk_size_bytes,
                max,
            });
        }
        if total_len > self.max_total_bytes {
            return Err(InvalidSnapshot::TotalTooLarge {
                found: total_len,
                max: self.max_total_bytes,
            });
        }
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Number of chunks a payload of `total_len` bytes is cut into.
pub fn chunk_count_for(total_len: u64, chunk_size_bytes: u32) -> u64 {
    assert!(chunk_size_bytes > 0, "chunk size must be > 0");
    total_len.div_ceil(u64::from(chunk_size_bytes))
}

/// The decoded snapshot header: what the snapshot is and how it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    /// The WAL position the snapshot state corresponds to: every record up to
    /// and including `boundary.lsn` is in it, none after.
    pub boundary: Position,
    /// Payload bytes per chunk (the last chunk may hold fewer).
    pub chunk_size_bytes: u32,
    /// Total payload length.
    pub total_len: u64,
}

impl SnapshotHeader {
    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        chunk_count_for(self.total_len, self.chunk_size_bytes)
    }

    /// Payload bytes of chunk `index` (`index < chunk_count()`).
    pub fn chunk_len(&self, index: u64) -> u32 {
        let count = self.chunk_count();
        assert!(index < count, "chunk {index} out of range 0..{count}");
        let cs = u64::from(self.chunk_size_bytes);
        let len = (self.total_len - index * cs).min(cs);
        // len <= chunk_size_bytes, a u32.
        len as u32
    }

    /// File offset of chunk `index`'s header (`index <= chunk_count()`; the
    /// value for `chunk_count()` is the trailer's offset).
    pub fn chunk_offset(&self, index: u64) -> u64 {
        let cs = u64::from(self.chunk_size_bytes);
        let count = self.chunk_count();
        assert!(index <= count, "chunk {index} out of range 0..={count}");
        let full = index.min(count);
        let payload_before = (full * cs).min(self.total_len);
        HEADER_LEN as u64 + full * CHUNK_HEADER_LEN as u64 + payload_before
    }

    /// File offset of the trailer.
    pub fn trailer_offset(&self) -> u64 {
        self.chunk_offset(self.chunk_count())
    }

    /// Exact length of the whole snapshot file.
    pub fn file_len(&self) -> u64 {
        self.trailer_offset() + TRAILER_LEN as u64
    }

    /// The 64 header bytes (with their crc).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[H_MAGIC..H_MAGIC + 4].copy_from_slice(&HEADER_MAGIC);
        b[H_VERSION..H_VERSION + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[H_FLAGS..H_FLAGS + 2].copy_from_slice(&0u16.to_le_bytes());
        b[H_BOUNDARY_LSN..H_BOUNDARY_LSN + 8].copy_from_slice(&self.boundary.lsn.to_le_bytes());
        b[H_BOUNDARY_EPOCH..H_BOUNDARY_EPOCH + 8]
            .copy_from_slice(&self.boundary.epoch.to_le_bytes());
        b[H_BOUNDARY_CRC..H_BOUNDARY_CRC + 4].copy_from_slice(&self.boundary.crc.to_le_bytes());
        b[H_CHUNK_SIZE..H_CHUNK_SIZE + 4].copy_from_slice(&self.chunk_size_bytes.to_le_bytes());
        b[H_TOTAL_LEN..H_TOTAL_LEN + 8].copy_from_slice(&self.total_len.to_le_bytes());
        b[H_CHUNK_COUNT..H_CHUNK_COUNT + 8].copy_from_slice(&self.chunk_count().to_le_bytes());
        let crc = crc32c::crc32c(&b[..H_CRC]);
        b[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The header crc (bytes `[60, 64)` of [`SnapshotHeader::encode`]).
    pub fn crc(&self) -> u32 {
        u32_at(&self.encode(), H_CRC)
    }

    /// Parses and verifies a header: length, magic, version, crc, flags,
    /// reserved bytes, then the bounds of `limits`, then the chunk count.
    pub fn decode(b: &[u8], limits: &Limits) -> Result<SnapshotHeader, InvalidSnapshot> {
        if b.len() < HEADER_LEN {
            return Err(InvalidSnapshot::Truncated {
                what: "header",
                need: HEADER_LEN as u64,
                have: b.len() as u64,
            });
        }
        let b = &b[..HEADER_LEN];
        if b[H_MAGIC..H_MAGIC + 4] != HEADER_MAGIC {
            return Err(InvalidSnapshot::BadMagic {
                what: "header",
                found: u32_at(b, H_MAGIC),
            });
        }
        let version = u16_at(b, H_VERSION);
        if version != FORMAT_VERSION {
            return Err(InvalidSnapshot::UnsupportedVersion { found: version });
        }
        let stored = u32_at(b, H_CRC);
        let computed = crc32c::crc32c(&b[..H_CRC]);
        if stored != computed {
            return Err(InvalidSnapshot::HeaderChecksum { stored, computed });
        }
        let flags = u16_at(b, H_FLAGS);
        if flags != 0 || b[H_RESERVED..H_CRC].iter().any(|&x| x != 0) {
            return Err(InvalidSnapshot::ReservedNotZero { what: "header" });
        }
        let header = SnapshotHeader {
            boundary: Position {
                lsn: u64_at(b, H_BOUNDARY_LSN),
                epoch: u64_at(b, H_BOUNDARY_EPOCH),
                crc: u32_at(b, H_BOUNDARY_CRC),
            },
            chunk_size_bytes: u32_at(b, H_CHUNK_SIZE),
            total_len: u64_at(b, H_TOTAL_LEN),
        };
        limits.check(header.chunk_size_bytes, header.total_len)?;
        let count = u64_at(b, H_CHUNK_COUNT);
        if count != header.chunk_count() {
            return Err(InvalidSnapshot::ChunkCountMismatch {
                what: "header",
                expected: header.chunk_count(),
                found: count,
            });
        }
        Ok(header)
    }
}

/// crc32c of chunk `index` holding `bytes`: over the index (u64 LE), the
/// length (u32 LE) and the bytes, so a chunk stored or sent at the wrong
/// index fails its own check.
pub fn chunk_crc(index: u64, bytes: &[u8]) -> u32 {
    let mut h = [0u8; 12];
    h[..8].copy_from_slice(&index.to_le_bytes());
    // Callers bound bytes.len() by the chunk size (<= 4 MiB) first.
    h[8..].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&h), bytes)
}

/// A decoded chunk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// 0-based chunk index.
    pub index: u64,
    /// Payload bytes in the chunk.
    pub len: u32,
    /// [`chunk_crc`] of the chunk.
    pub crc: u32,
}

impl ChunkHeader {
    /// The 16 chunk-header bytes.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[C_INDEX..C_INDEX + 8].copy_from_slice(&self.index.to_le_bytes());
        b[C_LEN..C_LEN + 4].copy_from_slice(&self.len.to_le_bytes());
        b[C_CRC..C_CRC + 4].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    /// Parses a chunk header (no checks beyond the length of `b`; the
    /// caller compares index and len with the values the header implies
    /// before reading the payload).
    pub fn decode(b: &[u8]) -> Result<ChunkHeader, InvalidSnapshot> {
        if b.len() < CHUNK_HEADER_LEN {
            return Err(InvalidSnapshot::Truncated {
                what: "chunk header",
                need: CHUNK_HEADER_LEN as u64,
                have: b.len() as u64,
            });
        }
        Ok(ChunkHeader {
            index: u64_at(b, C_INDEX),
            len: u32_at(b, C_LEN),
            crc: u32_at(b, C_CRC),
        })
    }

    /// Checks this chunk header against what `header` says chunk
    /// `expected_index` must be: index first, then length.
    pub fn check_against(
        &self,
        header: &SnapshotHeader,
        expected_index: u64,
    ) -> Result<(), InvalidSnapshot> {
        if self.index != expected_index {
            return Err(InvalidSnapshot::ChunkOutOfOrder {
                expected: expected_index,
                found: self.index,
            });
        }
        let expected = header.chunk_len(expected_index);
        if self.len != expected {
            return Err(InvalidSnapshot::ChunkLength {
                index: expected_index,
                expected,
                found: self.len,
            });
        }
        Ok(())
    }

    /// Verifies `bytes` against this header's crc.
    pub fn verify_bytes(&self, bytes: &[u8]) -> Result<(), InvalidSnapshot> {
        let computed = chunk_crc(self.index, bytes);
        if computed != self.crc {
            return Err(InvalidSnapshot::ChunkChecksum {
                index: self.index,
                stored: self.crc,
                computed,
            });
        }
        Ok(())
    }
}

/// The decoded trailer: the whole-snapshot check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotTrailer {
    /// The header's crc (binds this trailer to its header).
    pub header_crc: u32,
    /// Number of chunks.
    pub chunk_count: u64,
    /// Total payload length.
    pub total_len: u64,
    /// crc32c of the whole payload, all chunks concatenated in order.
    pub payload_crc: u32,
}

impl SnapshotTrailer {
    /// The 32 trailer bytes (with their crc).
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[T_MAGIC..T_MAGIC + 4].copy_from_slice(&TRAILER_MAGIC);
        b[T_HEADER_CRC..T_HEADER_CRC + 4].copy_from_slice(&self.header_crc.to_le_bytes());
        b[T_CHUNK_COUNT..T_CHUNK_COUNT + 8].copy_from_slice(&self.chunk_count.to_le_bytes());
        b[T_TOTAL_LEN..T_TOTAL_LEN + 8].copy_from_slice(&self.total_len.to_le_bytes());
        b[T_PAYLOAD_CRC..T_PAYLOAD_CRC + 4].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..T_CRC]);
        b[T_CRC..T_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and verifies a trailer's own integrity (length, magic, crc).
    pub fn decode(b: &[u8]) -> Result<SnapshotTrailer, InvalidSnapshot> {
        if b.len() < TRAILER_LEN {
            return Err(InvalidSnapshot::Truncated {
                what: "trailer",
                need: TRAILER_LEN as u64,
                have: b.len() as u64,
            });
        }
        let b = &b[..TRAILER_LEN];
        if b[T_MAGIC..T_MAGIC + 4] != TRAILER_MAGIC {
            return Err(InvalidSnapshot::BadMagic {
                what: "trailer",
                found: u32_at(b, T_MAGIC),
            });
        }
        let stored = u32_at(b, T_CRC);
        let computed = crc32c::crc32c(&b[..T_CRC]);
        if stored != computed {
            return Err(InvalidSnapshot::TrailerChecksum { stored, computed });
        }
        Ok(SnapshotTrailer {
            header_crc: u32_at(b, T_HEADER_CRC),
            chunk_count: u64_at(b, T_CHUNK_COUNT),
            total_len: u64_at(b, T_TOTAL_LEN),
            payload_crc: u32_at(b, T_PAYLOAD_CRC),
        })
    }

    /// Checks this trailer against the header and the payload crc computed
    /// while reading the chunks: header crc, chunk count, total length, then
    /// the whole-payload crc.
    pub fn check_against(
        &self,
        header: &SnapshotHeader,
        computed_payload_crc: u32,
    ) -> Result<(), InvalidSnapshot> {
        let header_crc = header.crc();
        if self.header_crc != header_crc {
            return Err(InvalidSnapshot::TrailerMismatch {
                field: "header_crc",
                expected: u64::from(header_crc),
                found: u64::from(self.header_crc),
            });
        }
        if self.chunk_count != header.chunk_count() {
            return Err(InvalidSnapshot::ChunkCountMismatch {
                what: "trailer",
                expected: header.chunk_count(),
                found: self.chunk_count,
            });
        }
        if self.total_len != header.total_len {
            return Err(InvalidSnapshot::TrailerMismatch {
                field: "total_len",
                expected: header.total_len,
                found: self.total_len,
            });
        }
        if self.payload_crc != computed_payload_crc {
            return Err(InvalidSnapshot::PayloadChecksum {
                stored: self.payload_crc,
                computed: computed_payload_crc,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(total: u64, cs: u32) -> SnapshotHeader {
        SnapshotHeader {
            boundary: Position {
                lsn: 42,
                epoch: 3,
                crc: 0xdead_beef,
            },
            chunk_size_bytes: cs,
            total_len: total,
        }
    }

    #[test]
    fn header_round_trips_and_offsets_add_up() {
        let h = header(10, 4);
        assert_eq!(h.chunk_count(), 3);
        assert_eq!([h.chunk_len(0), h.chunk_len(1), h.chunk_len(2)], [4, 4, 2]);
        assert_eq!(h.chunk_offset(0), 64);
        assert_eq!(h.chunk_offset(1), 64 + 16 + 4);
        assert_eq!(h.trailer_offset(), 64 + 3 * 16 + 10);
        assert_eq!(h.file_len(), 64 + 3 * 16 + 10 + 32);
        let d = SnapshotHeader::decode(&h.encode(), &Limits::default()).expect("valid header");
        assert_eq!(d, h);
    }

    #[test]
    fn empty_payload_has_no_chunks() {
        let h = header(0, 4);
        assert_eq!(h.chunk_count(), 0);
        assert_eq!(h.file_len(), 64 + 32);
    }

    #[test]
    fn chunk_size_above_bound_is_rejected() {
        let mut h = header(10, 4);
        h.chunk_size_bytes = MAX_CHUNK_SIZE_BYTES + 1;
        assert_eq!(
            SnapshotHeader::decode(&h.encode(), &Limits::default()),
            Err(InvalidSnapshot::ChunkSizeOutOfBounds {
                found: MAX_CHUNK_SIZE_BYTES + 1,
                max: MAX_CHUNK_SIZE_BYTES
            })
        );
    }

    #[test]
    fn chunk_crc_depends_on_index() {
        assert_ne!(chunk_crc(0, b"abc"), chunk_crc(1, b"abc"));
    }

    #[test]
    fn trailer_round_trips() {
        let t = SnapshotTrailer {
            header_crc: 1,
            chunk_count: 2,
            total_len: 3,
            payload_crc: 4,
        };
        assert_eq!(SnapshotTrailer::decode(&t.encode()), Ok(t));
    }
}
