//! [`SnapshotReader`]: verifies a snapshot file and reads its payload.

use std::io;

use walship_wal::{Mapping, Position};

use crate::error::InvalidSnapshot;
use crate::format::{
    ChunkHeader, Limits, SnapshotHeader, SnapshotTrailer, CHUNK_HEADER_LEN, HEADER_LEN,
};
use crate::transfer::{SnapshotChunk, SnapshotEnd, SnapshotOffer};

/// A snapshot file whose header, length and trailer are verified; chunks are
/// verified as they are read ([`SnapshotReader::chunk`]), or all at once
/// ([`SnapshotReader::verify`]).
#[derive(Clone, Debug)]
pub struct SnapshotReader {
    map: Mapping,
    header: SnapshotHeader,
    trailer: SnapshotTrailer,
}

impl SnapshotReader {
    /// Checks, in order: the header (magic, version, crc, reserved bytes,
    /// bounds of `limits`, chunk count), the boundary against `expected`, the
    /// exact file length, then the trailer (magic, crc, header crc, chunk
    /// count, total length). The payload crc is checked by
    /// [`SnapshotReader::verify`] / the payload reader.
    pub fn open(
        map: Mapping,
        limits: &Limits,
        expected: Option<Position>,
    ) -> Result<SnapshotReader, InvalidSnapshot> {
        let header = SnapshotHeader::decode(&map, limits)?;
        if let Some(expected) = expected {
            if header.boundary != expected {
                return Err(InvalidSnapshot::BoundaryMismatch {
                    expected,
                    found: header.boundary,
                });
            }
        }
        let file_len = header.file_len();
        if map.len() as u64 != file_len {
            return Err(InvalidSnapshot::FileLength {
                expected: file_len,
                found: map.len() as u64,
            });
        }
        // file_len == map.len() fits in usize from here on.
        let at = header.trailer_offset() as usize;
        let trailer = SnapshotTrailer::decode(&map[at..])?;
        let header_crc = header.crc();
        if trailer.header_crc != header_crc {
            return Err(InvalidSnapshot::TrailerMismatch {
                field: "header_crc",
                expected: u64::from(header_crc),
                found: u64::from(trailer.header_crc),
            });
        }
        if trailer.chunk_count != header.chunk_count() {
            return Err(InvalidSnapshot::ChunkCountMismatch {
                what: "trailer",
                expected: header.chunk_count(),
                found: trailer.chunk_count,
            });
        }
        if trailer.total_len != header.total_len {
            return Err(InvalidSnapshot::TrailerMismatch {
                field: "total_len",
                expected: header.total_len,
                found: trailer.total_len,
            });
        }
        Ok(SnapshotReader {
            map,
            header,
            trailer,
        })
    }

    /// The verified header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The verified trailer.
    pub fn trailer(&self) -> &SnapshotTrailer {
        &self.trailer
    }

    /// The snapshot's boundary.
    pub fn boundary(&self) -> Position {
        self.header.boundary
    }

    /// Chunk `index` (`< chunk_count`), verified (index, length, crc); the
    /// bytes are a zero-copy view of the file.
    pub fn chunk(&self, index: u64) -> Result<(ChunkHeader, Mapping), InvalidSnapshot> {
        let at = self.header.chunk_offset(index) as usize;
        let ch = ChunkHeader::decode(&self.map[at..])?;
        ch.check_against(&self.header, index)?;
        let start = at + CHUNK_HEADER_LEN;
        let bytes = self.map.slice(start..start + ch.len as usize);
        ch.verify_bytes(&bytes)?;
        Ok((ch, bytes))
    }

    /// Verifies every chunk and the whole-payload crc.
    pub fn verify(&self) -> Result<(), InvalidSnapshot> {
        let mut crc = 0u32;
        for i in 0..self.header.chunk_count() {
            let (_, bytes) = self.chunk(i)?;
            crc = crc32c::crc32c_append(crc, &bytes);
        }
        self.trailer.check_against(&self.header, crc)
    }

    /// A reader of the payload that verifies each chunk before handing out
    /// any of its bytes, and the whole-payload crc at the end (an
    /// `InvalidData` error wrapping [`InvalidSnapshot`] on failure).
    pub fn payload_reader(&self) -> PayloadReader<'_> {
        PayloadReader {
            snap: self,
            next_index: 0,
            current: None,
            pos: 0,
            crc: 0,
            finished: false,
        }
    }

    /// The transfer offer announcing this snapshot.
    /// The offer of this snapshot without its configuration file (see
    /// [`crate::SnapshotStore::sender`], which adds it).
    pub fn offer(&self) -> SnapshotOffer {
        SnapshotOffer {
            boundary: self.header.boundary,
            total_len: self.header.total_len,
            chunk_size_bytes: self.header.chunk_size_bytes,
            chunk_count: self.header.chunk_count(),
            header_crc: self.header.crc(),
            configuration: Vec::new(),
        }
    }

    /// Transfer message of chunk `index`, verified first: a primary never
    /// ships a chunk its own disk damaged.
    pub fn chunk_message(&self, index: u64) -> Result<SnapshotChunk, InvalidSnapshot> {
        let (ch, bytes) = self.chunk(index)?;
        Ok(SnapshotChunk {
            index,
            crc: ch.crc,
            bytes: bytes.to_vec(),
        })
    }

    /// Transfer message ending the snapshot (the stored trailer).
    pub fn end_message(&self) -> SnapshotEnd {
        SnapshotEnd {
            trailer: self.trailer,
        }
    }

    /// Offset of the first chunk (for tests and tools).
    pub fn payload_start() -> u64 {
        HEADER_LEN as u64
    }
}

/// Verified payload bytes of a [`SnapshotReader`], chunk by chunk.
pub struct PayloadReader<'a> {
    snap: &'a SnapshotReader,
    next_index: u64,
    current: Option<Mapping>,
    pos: usize,
    crc: u32,
    finished: bool,
}

fn invalid(e: InvalidSnapshot) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl io::Read for PayloadReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(cur) = &self.current {
                if self.pos < cur.len() {
                    let n = (cur.len() - self.pos).min(out.len());
                    out[..n].copy_from_slice(&cur[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if self.finished {
                return Ok(0);
            }
            if self.next_index == self.snap.header.chunk_count() {
                self.snap
                    .trailer
                    .check_against(&self.snap.header, self.crc)
                    .map_err(invalid)?;
                self.finished = true;
                self.current = None;
                return Ok(0);
            }
            let (_, bytes) = self.snap.chunk(self.next_index).map_err(invalid)?;
            self.crc = crc32c::crc32c_append(self.crc, &bytes);
            self.next_index += 1;
            self.current = Some(bytes);
            self.pos = 0;
        }
    }
}
