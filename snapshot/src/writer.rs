//! [`SnapshotWriter`]: streams the embedder's bytes into a snapshot file.

use std::io;
use std::path::{Path, PathBuf};

use walship_wal::{Position, StorageFile};

use crate::error::{io_err, SnapshotError};
use crate::format::{
    chunk_crc, ChunkHeader, Limits, SnapshotHeader, SnapshotTrailer, CHUNK_HEADER_LEN, HEADER_LEN,
};

/// What a finished snapshot file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The header written.
    pub header: SnapshotHeader,
    /// The trailer written.
    pub trailer: SnapshotTrailer,
}

impl SnapshotMeta {
    /// The snapshot's boundary.
    pub fn boundary(&self) -> Position {
        self.header.boundary
    }

    /// Length of the snapshot file.
    pub fn file_len(&self) -> u64 {
        self.header.file_len()
    }
}

/// Writes a snapshot file chunk by chunk as the embedder produces bytes
/// (through [`io::Write`] or [`SnapshotWriter::write_payload`]); memory use
/// is one chunk. The header goes in last (positional writes), so neither the
/// total length nor the boundary must be known up front.
///
/// Nothing is durable until [`SnapshotWriter::finish`] returns; the caller
/// makes the file's directory entry durable (see `store.rs`).
pub struct SnapshotWriter<F: StorageFile> {
    file: F,
    path: PathBuf,
    chunk_size_bytes: u32,
    max_total_bytes: u64,
    /// Chunk header space followed by up to `chunk_size_bytes` payload bytes.
    buf: Vec<u8>,
    next_index: u64,
    total_len: u64,
    payload_crc: u32,
    offset: u64,
}

impl<F: StorageFile> SnapshotWriter<F> {
    /// Starts a snapshot in `file` (truncated to 0), cut into chunks of
    /// `chunk_size_bytes`, its payload bounded by `limits.max_total_bytes`.
    pub fn new(
        file: F,
        path: &Path,
        chunk_size_bytes: u32,
        limits: &Limits,
    ) -> Result<Self, SnapshotError> {
        limits.check(chunk_size_bytes, 0)?;
        file.set_len(0).map_err(io_err("set_len", path))?;
        let mut buf = Vec::with_capacity(CHUNK_HEADER_LEN + chunk_size_bytes as usize);
        buf.resize(CHUNK_HEADER_LEN, 0);
        Ok(SnapshotWriter {
            file,
            path: path.to_path_buf(),
            chunk_size_bytes,
            max_total_bytes: limits.max_total_bytes,
            buf,
            next_index: 0,
            total_len: 0,
            payload_crc: 0,
            offset: HEADER_LEN as u64,
        })
    }

    /// Payload bytes accepted so far.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Appends payload bytes; writes every chunk that fills up.
    pub fn write_payload(&mut self, mut bytes: &[u8]) -> Result<(), SnapshotError> {
        let new_total = self.total_len.saturating_add(bytes.len() as u64);
        if new_total > self.max_total_bytes {
            return Err(SnapshotError::PayloadTooLarge {
                max: self.max_total_bytes,
            });
        }
        self.total_len = new_total;
        self.payload_crc = crc32c::crc32c_append(self.payload_crc, bytes);
        let cs = self.chunk_size_bytes as usize;
        while !bytes.is_empty() {
            let room = cs - (self.buf.len() - CHUNK_HEADER_LEN);
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() - CHUNK_HEADER_LEN == cs {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), SnapshotError> {
        let len = self.buf.len() - CHUNK_HEADER_LEN;
        debug_assert!(len > 0 && len <= self.chunk_size_bytes as usize);
        let index = self.next_index;
        let ch = ChunkHeader {
            index,
            len: len as u32,
            crc: chunk_crc(index, &self.buf[CHUNK_HEADER_LEN..]),
        };
        self.buf[..CHUNK_HEADER_LEN].copy_from_slice(&ch.encode());
        self.file
            .write_at(self.offset, &self.buf)
            .map_err(io_err("write_at", &self.path))?;
        self.offset += self.buf.len() as u64;
        self.next_index += 1;
        self.buf.truncate(CHUNK_HEADER_LEN);
        Ok(())
    }

    /// Writes the last chunk, the trailer and the header (naming `boundary`),
    /// then fsyncs the file. After it returns the file's bytes are durable
    /// (its directory entry is the caller's business).
    pub fn finish(mut self, boundary: Position) -> Result<SnapshotMeta, SnapshotError> {
        if self.buf.len() > CHUNK_HEADER_LEN {
            self.flush_chunk()?;
        }
        let header = SnapshotHeader {
            boundary,
            chunk_size_bytes: self.chunk_size_bytes,
            total_len: self.total_len,
        };
        assert_eq!(
            header.chunk_count(),
            self.next_index,
            "writer invariant: chunks written match the header's chunk count"
        );
        assert_eq!(
            header.trailer_offset(),
            self.offset,
            "writer invariant: chunk offsets match the layout"
        );
        let trailer = SnapshotTrailer {
            header_crc: header.crc(),
            chunk_count: header.chunk_count(),
            total_len: self.total_len,
            payload_crc: self.payload_crc,
        };
        self.file
            .write_at(self.offset, &trailer.encode())
            .map_err(io_err("write_at", &self.path))?;
        self.file
            .write_at(0, &header.encode())
            .map_err(io_err("write_at", &self.path))?;
        // The file's bytes must be on disk before the rename that publishes it.
        self.file
            .sync_data()
            .map_err(io_err("sync_data", &self.path))?;
        tracing::debug!(
            path = %self.path.display(),
            lsn = boundary.lsn,
            epoch = boundary.epoch,
            total_len = self.total_len,
            chunks = header.chunk_count(),
            "snapshot file written"
        );
        Ok(SnapshotMeta { header, trailer })
    }
}

impl<F: StorageFile> io::Write for SnapshotWriter<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_payload(buf).map_err(|e| match e {
            SnapshotError::Io { source, .. } => source,
            other => io::Error::other(other),
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
