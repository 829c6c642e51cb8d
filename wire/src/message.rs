//! The messages exchanged by primary and replica, and their bincode 2 body encoding.
//!
//! A message travels as the body of one frame ([`crate::frame`]). The body is
//! `bincode::serde` with [`bincode::config::standard()`] (varint integers, little-endian).
//! Decoding borrows strings and byte strings from the body (their length is checked against
//! the bytes received before anything is allocated) under a bincode limit derived from the
//! body length ([`decode_limit_for`], at most [`MAX_DECODED_BYTES`]). The enum variant index is the wire tag:
//! **new variants are appended at the end, never inserted or reordered**, and every layout change
//! bumps [`PROTOCOL_VERSION`]. `Hello` is variant 0 and its first field is `protocol_version`
//! in every version, so any primary can read the version of any replica (see
//! [`peek_hello_version`]).

use serde::{Deserialize, Serialize};

pub use walship_wal::record::{Lsn, Position};
pub use walship_wal::state::EpochEntry;

/// Version of the walship replication protocol spoken by this build. A primary refuses a
/// replica whose `Hello.protocol_version` differs ([`RefuseReason::UnsupportedVersion`]).
///
/// Version 2 (automatic failover) appended [`RefuseReason::NotPrimary`] and
/// [`RefuseReason::StalePrimary`] at tags 4 and 5, which version-1 builds decode as
/// retired reasons.
///
/// Version 3 (membership) added [`Hello::incarnation`] after `node_id`: the primary counts a
/// replica's receipts only for the incarnation of its data directory it expects.
pub const PROTOCOL_VERSION: u32 = 4;

/// TLS ALPN protocol id (carries [`PROTOCOL_VERSION`]); a peer that does not offer it fails
/// the TLS handshake.
pub const ALPN: &[u8] = b"walship/4";

/// Wire tag (bincode variant index) of [`Message::Hello`]; fixed forever.
pub const HELLO_TAG: u32 = 0;

/// One protocol message. Direction and meaning of each variant are in spec/protocol.md.
///
/// `#[non_exhaustive]`: other crates must keep a wildcard arm, so appending a variant (snapshot
/// transfer messages will be added) does not break them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Replica -> primary, first message of a session.
    Hello(Hello),
    /// Primary -> replica: the session is accepted; carries what the prefix proof needs.
    Welcome(Welcome),
    /// Either side, during the handshake: the session is refused; the sender closes the
    /// connection after it. Primary -> replica for most reasons; a node that is not the
    /// primary answers a `Hello` with [`RefuseReason::NotPrimary`]; replica -> primary
    /// [`RefuseReason::StalePrimary`] answers the `Welcome` of a primary below its epoch.
    Refuse(Refuse),
    /// Replica -> primary, during the divergence search: "what is your record at `lsn`?"
    Probe {
        /// The lsn asked about.
        lsn: Lsn,
    },
    /// Primary -> replica: answer to [`Message::Probe`].
    ProbeReply {
        /// The lsn asked about.
        lsn: Lsn,
        /// The primary's record identity at `lsn`; `None` if not retained or beyond its end.
        position: Option<Position>,
    },
    /// Primary -> replica: consecutive stored records, bytes unchanged.
    Records(RecordBatch),
    /// Replica -> primary: everything up to `durable_lsn` is fsynced on the replica.
    Receipt {
        /// The replica's durable lsn.
        durable_lsn: Lsn,
    },
    /// Primary -> replica: the commit watermark advanced.
    Commit {
        /// Highest quorum-committed lsn.
        commit_lsn: Lsn,
    },
    /// Primary -> replica: a snapshot follows (spec/snapshot-format.md §5).
    SnapshotOffer(walship_snapshot::SnapshotOffer),
    /// Primary -> replica: chunk `index` of the offered snapshot (indexes `0..` in order).
    SnapshotChunk(walship_snapshot::SnapshotChunk),
    /// Primary -> replica: the offered snapshot is complete (the primary's stored trailer).
    SnapshotEnd(walship_snapshot::SnapshotEnd),
}

impl Message {
    /// Short name of the variant, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::Refuse(_) => "refuse",
            Message::Probe { .. } => "probe",
            Message::ProbeReply { .. } => "probe-reply",
            Message::Records(_) => "records",
            Message::Receipt { .. } => "receipt",
            Message::Commit { .. } => "commit",
            Message::SnapshotOffer(_) => "snapshot-offer",
            Message::SnapshotChunk(_) => "snapshot-chunk",
            Message::SnapshotEnd(_) => "snapshot-end",
        }
    }
}

/// The replica's opening message: who it is and what its log looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version of the replica; MUST stay the first field in every version.
    pub protocol_version: u32,
    /// Cluster id from the replica's configuration; must equal the primary's.
    #[serde(deserialize_with = "bounded_de::string")]
    pub cluster_id: String,
    /// The replica's node id; must equal the name its TLS certificate proved.
    #[serde(deserialize_with = "bounded_de::string")]
    pub node_id: String,
    /// The incarnation id of the replica's data directory (`state/identity`,
    /// spec/membership.md §1); 0 = unknown (a replica without an identity file, e.g. a
    /// library user outside a cluster). The primary counts receipts of a session only for
    /// the incarnation it expects of that member (spec/protocol.md §12.1).
    pub incarnation: u64,
    /// Identity of the replica's last durable record (`Position::ZERO` for an empty log).
    pub last: Position,
    /// The replica's commit watermark.
    pub commit_lsn: Lsn,
    /// The replica's epoch history, ascending by epoch.
    #[serde(deserialize_with = "bounded_de::vec")]
    pub epoch_history: Vec<EpochEntry>,
    /// The highest epoch this replica has ever seen (fencing: a primary below it is refused).
    pub highest_epoch_seen: u64,
}

/// The primary's acceptance of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version of the primary.
    pub protocol_version: u32,
    /// The primary's node id.
    #[serde(deserialize_with = "bounded_de::string")]
    pub primary_id: String,
    /// The primary's current epoch.
    pub epoch: u64,
    /// The primary's record identity at `hello.last.lsn`; `None` if beyond the primary's end or
    /// not retained. For an empty replica log (`last.lsn == 0`) it is `Some(Position::ZERO)`.
    pub at_replica_last: Option<Position>,
    /// Identity of the primary's last record.
    pub primary_last: Position,
    /// The primary's commit watermark.
    pub commit_lsn: Lsn,
    /// The primary's epoch history, ascending by epoch.
    #[serde(deserialize_with = "bounded_de::vec")]
    pub epoch_history: Vec<EpochEntry>,
}

/// A refusal: the session ends without records flowing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refuse {
    /// Why.
    pub reason: RefuseReason,
}

/// Why a session was refused, during the handshake (spec/protocol.md §5.1, §12.1). The wire
/// tag is the variant index. In version 1 tags 4..=8 named reasons no build ever sent
/// (earlier builds of version 1 still decode them as those reasons); version 2 appended
/// `NotPrimary` (tag 4) and `StalePrimary` (tag 5), which is why it is a new
/// [`PROTOCOL_VERSION`]. Tags 6..=8 do not decode. Every string is decoded bounded by the
/// body received (`bounded_de`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {theirs} (this node speaks {ours})")]
    UnsupportedVersion {
        /// The refusing side's version.
        ours: u32,
        /// The version the peer announced.
        theirs: u32,
    },
    /// The peer belongs to another cluster.
    #[error("cluster id mismatch: ours {ours:?}, theirs {theirs:?}")]
    ClusterMismatch {
        /// The refusing side's cluster id.
        #[serde(deserialize_with = "bounded_de::string")]
        ours: String,
        /// The cluster id the peer announced.
        #[serde(deserialize_with = "bounded_de::string")]
        theirs: String,
    },
    /// The node id is not in the member list.
    #[error("node {node_id:?} is not a member")]
    NotAMember {
        /// The announced node id.
        #[serde(deserialize_with = "bounded_de::string")]
        node_id: String,
    },
    /// The node id in `Hello` differs from the name the peer's certificate proved.
    #[error("node id {claimed:?} does not match the certificate name {certified:?}")]
    NodeIdMismatch {
        /// The node id in `Hello`.
        #[serde(deserialize_with = "bounded_de::string")]
        claimed: String,
        /// The name the TLS certificate proved.
        #[serde(deserialize_with = "bounded_de::string")]
        certified: String,
    },
    /// Not-primary -> replica: the node the replica connected to is not the primary (of
    /// `epoch`, the highest epoch it knows); `primary_hint` names the primary it follows,
    /// if it knows one. The replica ends the session (no halt) and may try the hint.
    #[error("not the primary (epoch {epoch}; primary hint {primary_hint:?})")]
    NotPrimary {
        /// The refusing node's current epoch.
        epoch: u64,
        /// The node id of the primary it knows in that epoch, if any.
        #[serde(deserialize_with = "bounded_de::opt_string")]
        primary_hint: Option<String>,
    },
    /// Replica -> primary: the primary's epoch is below the replica's fence (it has seen,
    /// or voted in, a higher epoch). The replica stores nothing from it and ends the session
    /// (no halt); the primary learns it is stale and acknowledges nothing more.
    #[error(
        "stale primary: primary epoch {primary_epoch} is below the current epoch {current_epoch}"
    )]
    StalePrimary {
        /// The refused primary's epoch (`Welcome.epoch`).
        primary_epoch: u64,
        /// The refusing replica's fence: the highest epoch it has seen or voted in.
        current_epoch: u64,
    },
}

impl RefuseReason {
    /// Checks a peer's protocol version against [`PROTOCOL_VERSION`].
    pub fn check_version(theirs: u32) -> Result<(), RefuseReason> {
        if theirs == PROTOCOL_VERSION {
            Ok(())
        } else {
            Err(RefuseReason::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs,
            })
        }
    }
}

/// Consecutive records exactly as stored in the primary's WAL (header + payload each,
/// concatenated). The replica verifies every record's crc and chain itself; `first_lsn` and
/// `count` are hints that must agree with the records (a mismatch is a protocol error).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// Lsn of the first record in `bytes`.
    pub first_lsn: Lsn,
    /// Number of records in `bytes`.
    pub count: u32,
    /// The records' stored bytes.
    #[serde(with = "serde_bytes_vec")]
    pub bytes: Vec<u8>,
    /// The primary's commit watermark when the batch was sent.
    pub commit_lsn: Lsn,
}

/// Serialises `Vec<u8>` as one byte string (length + memcpy) instead of a sequence of u8s,
/// which bincode would encode element by element. Deserialises it borrowed
/// ([`bounded_de`]'s rule): the bytes are copied only once the body is known to hold them.
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
        // Borrowed, not `deserialize_byte_buf`: bincode's owned form allocates the claimed
        // length before it checks the body holds it.
        d.deserialize_bytes(V)
    }
}

/// Deserialisers that allocate only for what the body actually holds (STYLE: check every
/// length before allocating). Same encoding as serde's defaults; only decoding differs:
/// - strings are taken borrowed (`deserialize_str`): bincode checks the claimed length against
///   the rest of the body before the string is copied, where the owned form
///   (`deserialize_string`) allocates the claimed length first;
/// - sequences pre-allocate at most [`bounded_de::PREALLOC_MAX`] elements whatever length
///   they claim (serde's own cap is 1 MiB), and grow only as elements are decoded.
mod bounded_de {
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

    /// Most elements a sequence reserves room for before any is decoded.
    pub const PREALLOC_MAX: usize = 64;

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
        }
        d.deserialize_str(V)
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an optional string")
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Option<String>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
                string(d).map(Some)
            }
        }
        d.deserialize_option(V)
    }

    pub fn vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC_MAX));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Largest decode limit handed to bincode: the in-memory bytes a decoded body may claim.
/// bincode counts every integer at its in-memory size (a varint u64 of 1 wire byte claims 8),
/// so this is a multiple of the frame limit; it bounds what a frame of at most
/// [`crate::frame::MAX_FRAME_BYTES`] can make the decoder allocate, as defence in depth behind
/// the frame length check. Smaller bodies get smaller limits ([`decode_limit_for`]).
pub const MAX_DECODED_BYTES: usize = 4 * crate::frame::MAX_FRAME_BYTES as usize;

/// The most in-memory bytes bincode can claim per body byte of a valid body: 8, a u64 varint
/// of one byte (every claim is an integer at its in-memory size, at most 8 bytes for at least
/// one body byte, or a string / byte string length, one claimed byte per body byte).
const MAX_CLAIM_PER_BODY_BYTE: usize = 8;

/// Margin over [`MAX_CLAIM_PER_BODY_BYTE`] before a body moves to a larger limit.
const CLAIM_MARGIN: usize = 2;

/// The decode limits below [`MAX_DECODED_BYTES`], ascending (factor 4 apart, so a few
/// instances of the decoder cover every size).
const DECODE_LIMITS: [usize; 5] = [
    64 * 1024,
    256 * 1024,
    1024 * 1024,
    4 * 1024 * 1024,
    16 * 1024 * 1024,
];

/// The bincode decode limit used for a body of `body_len` bytes: the smallest of 64 KiB,
/// 256 KiB, 1 MiB, 4 MiB, 16 MiB that is at least `16 * body_len` (twice what a valid body can
/// claim), else [`MAX_DECODED_BYTES`].
///
/// bincode allocates what an owned string or byte string claims before checking that the body
/// holds it; this limit bounds such an allocation by the body received (at most
/// `max(64 KiB, 64 * body_len)`), where one limit for every body let a 13-byte body allocate
/// 30 MB. A valid body never reaches its limit (it claims at most 8 bytes per body byte), so the
/// limit changes which frames are accepted not at all.
pub fn decode_limit_for(body_len: usize) -> usize {
    let needed = body_len.saturating_mul(MAX_CLAIM_PER_BODY_BYTE * CLAIM_MARGIN);
    DECODE_LIMITS
        .into_iter()
        .find(|&limit| limit >= needed)
        .unwrap_or(MAX_DECODED_BYTES)
}

/// bincode configuration of message bodies: standard (varint, little-endian) with a decode limit.
pub(crate) fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODED_BYTES>()
}

/// Decodes `body` with bincode's limit set to `LIMIT`, strings and byte strings borrowed.
fn decode_with_limit<const LIMIT: usize>(
    body: &[u8],
) -> Result<(Message, usize), bincode::error::DecodeError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    bincode::serde::borrow_decode_from_slice(body, config)
}

/// Errors of [`decode_body`].
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// bincode rejected the body.
    #[error("{0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A valid message was followed by extra bytes.
    #[error("{trailing} trailing bytes after a {kind} message")]
    TrailingBytes {
        /// The message kind that was decoded.
        kind: &'static str,
        /// How many bytes followed it.
        trailing: usize,
    },
}

/// Encodes `msg` as a frame body, appending to `out`; returns the number of bytes appended.
pub fn encode_body(msg: &Message, out: &mut Vec<u8>) -> Result<usize, bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(msg, out, bincode_config())
}

/// Decodes one frame body; the whole body must be consumed.
///
/// Allocates only for what `body` holds: this crate's strings and byte strings are checked
/// against the remaining body before they are copied, and anything bincode allocates up front
/// (owned strings or byte strings of other crates' types, e.g. snapshot chunks) is bounded by
/// [`decode_limit_for`]`(body.len())`.
pub fn decode_body(body: &[u8]) -> Result<Message, BodyError> {
    // bincode's limit is a const generic: one decoder instance per limit (a limit without an
    // arm would fall to the largest, which only loosens the bound).
    let (msg, used) = match decode_limit_for(body.len()) {
        l if l == DECODE_LIMITS[0] => decode_with_limit::<{ DECODE_LIMITS[0] }>(body)?,
        l if l == DECODE_LIMITS[1] => decode_with_limit::<{ DECODE_LIMITS[1] }>(body)?,
        l if l == DECODE_LIMITS[2] => decode_with_limit::<{ DECODE_LIMITS[2] }>(body)?,
        l if l == DECODE_LIMITS[3] => decode_with_limit::<{ DECODE_LIMITS[3] }>(body)?,
        l if l == DECODE_LIMITS[4] => decode_with_limit::<{ DECODE_LIMITS[4] }>(body)?,
        _ => decode_with_limit::<MAX_DECODED_BYTES>(body)?,
    };
    if used != body.len() {
        return Err(BodyError::TrailingBytes {
            kind: msg.kind(),
            trailing: body.len() - used,
        });
    }
    Ok(msg)
}

/// If `body` is a `Hello` of any protocol version, its `protocol_version`.
///
/// Lets a primary answer a replica of another version with
/// [`RefuseReason::UnsupportedVersion`] even when the rest of that `Hello` does not decode.
pub fn peek_hello_version(body: &[u8]) -> Option<u32> {
    let config = bincode::config::standard();
    let (tag, used): (u32, usize) = bincode::decode_from_slice(body, config).ok()?;
    if tag != HELLO_TAG {
        return None;
    }
    let (version, _): (u32, usize) = bincode::decode_from_slice(body.get(used..)?, config).ok()?;
    Some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u32) -> Message {
        Message::Hello(Hello {
            protocol_version: version,
            cluster_id: "c".into(),
            node_id: "n2".into(),
            incarnation: 0,
            last: Position::default(),
            commit_lsn: 0,
            epoch_history: vec![],
            highest_epoch_seen: 1,
        })
    }

    #[test]
    fn failover_refusals_round_trip() {
        let reasons = [
            RefuseReason::NotPrimary {
                epoch: 7,
                primary_hint: Some("n3".into()),
            },
            RefuseReason::NotPrimary {
                epoch: 0,
                primary_hint: None,
            },
            RefuseReason::StalePrimary {
                primary_epoch: 2,
                current_epoch: 3,
            },
        ];
        for reason in reasons {
            let msg = Message::Refuse(Refuse { reason });
            let mut body = Vec::new();
            encode_body(&msg, &mut body).expect("encode");
            assert_eq!(decode_body(&body).expect("decode"), msg);
        }
    }

    #[test]
    fn peek_hello_version_reads_version_of_any_hello() {
        let mut body = Vec::new();
        encode_body(&hello(7_000_000), &mut body).expect("encode");
        assert_eq!(peek_hello_version(&body), Some(7_000_000));
        body.clear();
        encode_body(&Message::Commit { commit_lsn: 3 }, &mut body).expect("encode");
        assert_eq!(peek_hello_version(&body), None);
    }

    #[test]
    fn record_batch_bytes_encode_as_one_byte_string() {
        let msg = Message::Records(RecordBatch {
            first_lsn: 1,
            count: 1,
            bytes: vec![0xAB; 1000],
            commit_lsn: 0,
        });
        let mut body = Vec::new();
        encode_body(&msg, &mut body).expect("encode");
        // tag(1) + first_lsn(1) + count(1) + len varint(3) + 1000 bytes + commit_lsn(1)
        assert_eq!(body.len(), 1007);
        assert_eq!(decode_body(&body).expect("decode"), msg);
    }

    #[test]
    fn snapshot_messages_round_trip_and_chunk_bytes_encode_as_one_byte_string() {
        let offer = walship_snapshot::SnapshotOffer {
            boundary: Position {
                lsn: 7,
                epoch: 2,
                crc: 9,
            },
            total_len: 1000,
            chunk_size_bytes: 1000,
            chunk_count: 1,
            header_crc: 5,
            configuration: vec![0x57, 0x53, 0x43, 0x46],
        };
        let chunk = Message::SnapshotChunk(walship_snapshot::SnapshotChunk {
            index: 0,
            crc: 1,
            bytes: vec![0xCD; 1000],
        });
        let end = Message::SnapshotEnd(walship_snapshot::SnapshotEnd {
            trailer: walship_snapshot::SnapshotTrailer {
                header_crc: 5,
                chunk_count: 1,
                total_len: 1000,
                payload_crc: 3,
            },
        });
        for msg in [Message::SnapshotOffer(offer), chunk.clone(), end] {
            let mut body = Vec::new();
            encode_body(&msg, &mut body).expect("encode");
            assert_eq!(decode_body(&body).expect("decode"), msg);
        }
        let mut body = Vec::new();
        encode_body(&chunk, &mut body).expect("encode");
        // tag(1) + index(1) + crc(1) + len varint(3) + 1000 bytes
        assert_eq!(body.len(), 1006);
    }

    #[test]
    fn trailing_bytes_after_a_message_are_rejected() {
        let mut body = Vec::new();
        encode_body(&Message::Receipt { durable_lsn: 9 }, &mut body).expect("encode");
        body.push(0);
        assert!(matches!(
            decode_body(&body),
            Err(BodyError::TrailingBytes {
                kind: "receipt",
                trailing: 1
            })
        ));
    }

    #[test]
    fn version_check_refuses_other_versions() {
        assert!(RefuseReason::check_version(PROTOCOL_VERSION).is_ok());
        // Version 1 (before failover), version 2 (before incarnations), version 3
        // (before snapshot configurations) and a future version 5 are all refused.
        for theirs in [1, 2, 3, 5] {
            assert_eq!(
                RefuseReason::check_version(theirs),
                Err(RefuseReason::UnsupportedVersion { ours: 4, theirs })
            );
        }
    }
}
