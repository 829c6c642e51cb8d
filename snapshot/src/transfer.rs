//! Payloads of the snapshot transfer messages (primary -> replica), carried
//! inside `walship_wire::Message` variants.
//!
//! A transfer is `SnapshotOffer`, then `chunk_count` `SnapshotChunk`s with
//! indexes `0, 1, ..` in order, then `SnapshotEnd`. The chunk bytes and crcs
//! are the primary's stored ones, unchanged: the replica rebuilds a file
//! byte-identical to the primary's and verifies the primary's own
//! checksums. A session that ends before `SnapshotEnd` discards the partial
//! snapshot (FM-X.8); a complete transfer that fails a check is FM-7.1.

use serde::{Deserialize, Serialize};
use walship_wal::Position;

use crate::error::InvalidSnapshot;
use crate::format::{chunk_count_for, Limits, SnapshotHeader, SnapshotTrailer};
use crate::membership::BoundaryMembership;

/// Announces a snapshot: what it is and how it is cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffer {
    /// The snapshot's boundary (epoch, lsn, crc).
    pub boundary: Position,
    /// Total payload length.
    pub total_len: u64,
    /// Payload bytes per chunk (the last may hold fewer).
    pub chunk_size_bytes: u32,
    /// Number of chunks that follow.
    pub chunk_count: u64,
    /// crc of the header stored on the primary; the replica's rebuilt
    /// header must have the same crc.
    pub header_crc: u32,
    /// The snapshot's configuration file, byte for byte
    /// (`spec/snapshot-format.md` §1.5; empty: the snapshot has none).
    #[serde(with = "serde_bytes_vec")]
    pub configuration: Vec<u8>,
}

impl SnapshotOffer {
    /// Checks the offer against `limits` (before anything is allocated or
    /// created) and against itself; returns the header it describes.
    pub fn validate(&self, limits: &Limits) -> Result<SnapshotHeader, InvalidSnapshot> {
        limits.check(self.chunk_size_bytes, self.total_len)?;
        let expected = chunk_count_for(self.total_len, self.chunk_size_bytes);
        if self.chunk_count != expected {
            return Err(InvalidSnapshot::ChunkCountMismatch {
                what: "offer",
                expected,
                found: self.chunk_count,
            });
        }
        let header = SnapshotHeader {
            boundary: self.boundary,
            chunk_size_bytes: self.chunk_size_bytes,
            total_len: self.total_len,
        };
        let computed = header.crc();
        if computed != self.header_crc {
            return Err(InvalidSnapshot::HeaderChecksum {
                stored: self.header_crc,
                computed,
            });
        }
        Ok(header)
    }

    /// The configuration in force at the boundary, from the offer's
    /// configuration file (checked against the offer's boundary and header
    /// crc; bounded before anything is allocated).
    pub fn membership(&self) -> Result<BoundaryMembership, InvalidSnapshot> {
        if self.configuration.is_empty() {
            return Ok(BoundaryMembership::Unrecorded);
        }
        BoundaryMembership::decode(&self.configuration, self.boundary.lsn, self.header_crc)
    }
}

/// One chunk of the payload, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// 0-based chunk index.
    pub index: u64,
    /// The stored chunk crc (`format::chunk_crc(index, bytes)`).
    pub crc: u32,
    /// The chunk's payload bytes.
    #[serde(with = "serde_bytes_vec")]
    pub bytes: Vec<u8>,
}

/// Ends a snapshot transfer: the stored trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEnd {
    /// The primary's trailer.
    pub trailer: SnapshotTrailer,
}

/// Serialises `Vec<u8>` as one byte string (length + memcpy) rather than a
/// sequence of u8s (bincode would encode it element by element).
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// One message of a snapshot transfer, in the order they travel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferItem {
    /// First: what follows.
    Offer(SnapshotOffer),
    /// Then every chunk, index 0 up.
    Chunk(SnapshotChunk),
    /// Last: the trailer.
    End(SnapshotEnd),
}

/// The primary's side of a transfer, sans-IO: yields the offer, every chunk
/// (each re-verified from the stored file before it is handed out, so a
/// primary never ships bytes its own disk damaged) and the end.
#[derive(Debug)]
pub struct SnapshotSender {
    reader: crate::reader::SnapshotReader,
    configuration: Vec<u8>,
    offered: bool,
    next_index: u64,
    ended: bool,
}

impl SnapshotSender {
    /// A sender of the snapshot `reader` reads, whose configuration file holds
    /// `membership` ([`crate::SnapshotStore::sender`] reads both).
    pub fn new(
        reader: crate::reader::SnapshotReader,
        membership: &BoundaryMembership,
    ) -> Result<SnapshotSender, InvalidSnapshot> {
        let configuration = membership
            .encode(reader.boundary().lsn, reader.header().crc())?
            .unwrap_or_default();
        Ok(SnapshotSender {
            reader,
            configuration,
            offered: false,
            next_index: 0,
            ended: false,
        })
    }

    /// The snapshot's boundary.
    pub fn boundary(&self) -> Position {
        self.reader.boundary()
    }

    /// Payload bytes not yet handed out.
    pub fn bytes_remaining(&self) -> u64 {
        let h = self.reader.header();
        let sent = (self.next_index * u64::from(h.chunk_size_bytes)).min(h.total_len);
        h.total_len - sent
    }
}

impl Iterator for SnapshotSender {
    type Item = Result<TransferItem, InvalidSnapshot>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.offered {
            self.offered = true;
            let mut offer = self.reader.offer();
            offer.configuration = self.configuration.clone();
            return Some(Ok(TransferItem::Offer(offer)));
        }
        if self.next_index < self.reader.header().chunk_count() {
            let r = self.reader.chunk_message(self.next_index);
            self.next_index += 1;
            return Some(r.map(TransferItem::Chunk));
        }
        if !self.ended {
            self.ended = true;
            return Some(Ok(TransferItem::End(self.reader.end_message())));
        }
        None
    }
}
