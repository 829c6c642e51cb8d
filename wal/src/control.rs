//! Control records: records the node writes for itself, not for the embedder
//! (`spec/wal-format.md`, "Control records"). A control record is an ordinary
//! record (same header, crc chain, lsn, epoch) whose `flags` has
//! [`FLAG_CONTROL`](crate::record::FLAG_CONTROL) set and whose payload is a
//! [`ControlRecord`] encoded as below. Control records are allowed only in
//! segments of format version 3 or later; appliers never see them.
//!
//! ```text
//! offset size field
//! 0      1    kind          u8: 1 = epoch start
//! 1      1    body_version  u8 = 1
//! 2      2    reserved      u16 = 0
//! 4      8    epoch         u64, must equal the record header's epoch
//! 12     1    primary_len   u8, 1..=255 bytes of node id
//! 13     ..   primary       UTF-8 node id of the primary that opened the epoch
//! ```
//!
//! The payload is exactly `13 + primary_len` bytes; anything else is refused.

use crate::record::Lsn;

/// `kind` of an epoch-start control record.
pub const CONTROL_KIND_EPOCH_START: u8 = 1;
/// The body version this build writes and reads.
pub const CONTROL_BODY_VERSION: u8 = 1;
/// Fixed part of an epoch-start body, before the node id.
pub const EPOCH_START_FIXED_LEN: usize = 13;
/// Longest node id an epoch-start record carries.
pub const MAX_CONTROL_NODE_ID_BYTES: usize = 255;

/// What a control record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlRecord {
    /// The first record a new primary writes in its epoch: every record of an
    /// older epoch before it is committed together with it (DESIGN.md,
    /// "Failover"; `spec/election.md`).
    EpochStart {
        /// The epoch the primary won; equals the record header's epoch.
        epoch: u64,
        /// The node id of that primary.
        primary: String,
    },
}

/// Why a control record's payload was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The payload is shorter than its fixed part or than its declared length.
    #[error("control record payload truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// Bytes after the declared end.
    #[error("control record payload has {extra} bytes after its end")]
    TrailingBytes {
        /// Bytes after the end.
        extra: usize,
    },
    /// A kind this build does not know.
    #[error("unknown control record kind {kind}")]
    UnknownKind {
        /// The kind found.
        kind: u8,
    },
    /// A body version this build does not know.
    #[error("control record body version {found} (this build reads {CONTROL_BODY_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// The reserved field is not zero.
    #[error("control record reserved field is {found:#06x}, must be 0")]
    Reserved {
        /// The value found.
        found: u16,
    },
    /// The node id is empty, too long or not UTF-8.
    #[error("control record node id is invalid: {why}")]
    BadNodeId {
        /// What is wrong with it.
        why: &'static str,
    },
    /// The body's epoch is not the record header's.
    #[error("control record at lsn {lsn} says epoch {body} but its header says {header}")]
    EpochMismatch {
        /// The record's lsn.
        lsn: Lsn,
        /// Epoch in the body.
        body: u64,
        /// Epoch in the header.
        header: u64,
    },
}

impl ControlRecord {
    /// The epoch the record belongs to (its header's epoch).
    pub fn epoch(&self) -> u64 {
        match self {
            ControlRecord::EpochStart { epoch, .. } => *epoch,
        }
    }

    /// Encodes the payload. Refuses a node id that is empty or longer than
    /// [`MAX_CONTROL_NODE_ID_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, ControlError> {
        match self {
            ControlRecord::EpochStart { epoch, primary } => {
                let id = primary.as_bytes();
                if id.is_empty() {
                    return Err(ControlError::BadNodeId { why: "empty" });
                }
                if id.len() > MAX_CONTROL_NODE_ID_BYTES {
                    return Err(ControlError::BadNodeId {
                        why: "longer than 255 bytes",
                    });
                }
                let mut out = Vec::with_capacity(EPOCH_START_FIXED_LEN + id.len());
                out.push(CONTROL_KIND_EPOCH_START);
                out.push(CONTROL_BODY_VERSION);
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
                // Bounded above: fits a u8.
                out.push(id.len() as u8);
                out.extend_from_slice(id);
                Ok(out)
            }
        }
    }

    /// Decodes a payload, bounded by its own length fields (nothing is
    /// allocated beyond the node id, at most 255 bytes).
    pub fn decode(payload: &[u8]) -> Result<ControlRecord, ControlError> {
        let (epoch, primary) = Self::check(payload)?;
        Ok(ControlRecord::EpochStart {
            epoch,
            primary: primary.to_string(),
        })
    }

    /// Verifies a payload without allocating: its epoch and node id.
    pub fn check(payload: &[u8]) -> Result<(u64, &str), ControlError> {
        if payload.len() < 2 {
            return Err(ControlError::Truncated {
                need: 2,
                have: payload.len(),
            });
        }
        let (kind, version) = (payload[0], payload[1]);
        if kind != CONTROL_KIND_EPOCH_START {
            return Err(ControlError::UnknownKind { kind });
        }
        if version != CONTROL_BODY_VERSION {
            return Err(ControlError::UnsupportedVersion { found: version });
        }
        if payload.len() < EPOCH_START_FIXED_LEN {
            return Err(ControlError::Truncated {
                need: EPOCH_START_FIXED_LEN,
                have: payload.len(),
            });
        }
        let reserved = u16::from_le_bytes([payload[2], payload[3]]);
        if reserved != 0 {
            return Err(ControlError::Reserved { found: reserved });
        }
        let mut e = [0u8; 8];
        e.copy_from_slice(&payload[4..12]);
        let epoch = u64::from_le_bytes(e);
        let id_len = payload[12] as usize;
        if id_len == 0 {
            return Err(ControlError::BadNodeId { why: "empty" });
        }
        let end = EPOCH_START_FIXED_LEN + id_len;
        if payload.len() < end {
            return Err(ControlError::Truncated {
                need: end,
                have: payload.len(),
            });
        }
        if payload.len() > end {
            return Err(ControlError::TrailingBytes {
                extra: payload.len() - end,
            });
        }
        let primary = std::str::from_utf8(&payload[EPOCH_START_FIXED_LEN..end])
            .map_err(|_| ControlError::BadNodeId { why: "not UTF-8" })?;
        Ok((epoch, primary))
    }

    /// Verifies the payload of a record at `lsn` without allocating, and its
    /// epoch against the record header's.
    pub fn check_at(lsn: Lsn, header_epoch: u64, payload: &[u8]) -> Result<(), ControlError> {
        let (epoch, _) = Self::check(payload)?;
        if epoch != header_epoch {
            return Err(ControlError::EpochMismatch {
                lsn,
                body: epoch,
                header: header_epoch,
            });
        }
        Ok(())
    }

    /// Decodes the payload of a record and checks the body's epoch against
    /// the record header's.
    pub fn decode_at(
        lsn: Lsn,
        header_epoch: u64,
        payload: &[u8],
    ) -> Result<ControlRecord, ControlError> {
        let c = ControlRecord::decode(payload)?;
        if c.epoch() != header_epoch {
            return Err(ControlError::EpochMismatch {
                lsn,
                body: c.epoch(),
                header: header_epoch,
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn start(epoch: u64, primary: &str) -> ControlRecord {
        ControlRecord::EpochStart {
            epoch,
            primary: primary.to_string(),
        }
    }

    #[test]
    fn epoch_start_layout_is_byte_for_byte_the_spec() {
        let b = start(0x0102_0304_0506_0708, "n2").encode().expect("encode");
        assert_eq!(
            b,
            [1, 1, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 2, b'n', b'2'],
            "kind, body_version, reserved, epoch LE, primary_len, primary"
        );
        assert_eq!(
            ControlRecord::decode(&b),
            Ok(start(0x0102_0304_0506_0708, "n2"))
        );
    }

    #[test]
    fn malformed_payloads_are_refused_with_their_reason() {
        let good = start(7, "n1").encode().expect("encode");
        assert_eq!(
            ControlRecord::decode(&good[..1]),
            Err(ControlError::Truncated { need: 2, have: 1 })
        );
        let mut b = good.clone();
        b[0] = 9;
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::UnknownKind { kind: 9 })
        );
        let mut b = good.clone();
        b[1] = 2;
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::UnsupportedVersion { found: 2 })
        );
        let mut b = good.clone();
        b[2] = 1;
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::Reserved { found: 1 })
        );
        assert_eq!(
            ControlRecord::decode(&good[..12]),
            Err(ControlError::Truncated { need: 13, have: 12 })
        );
        assert_eq!(
            ControlRecord::decode(&good[..14]),
            Err(ControlError::Truncated { need: 15, have: 14 })
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::TrailingBytes { extra: 1 })
        );
        let mut b = good.clone();
        b[12] = 0;
        b.truncate(13);
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::BadNodeId { why: "empty" })
        );
        let mut b = good;
        b[13] = 0xff;
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::BadNodeId { why: "not UTF-8" })
        );
        assert!(start(1, "").encode().is_err());
        assert!(start(1, &"x".repeat(256)).encode().is_err());
        assert!(start(1, &"x".repeat(255)).encode().is_ok());
    }

    #[test]
    fn body_epoch_must_be_the_headers() {
        let b = start(4, "n1").encode().expect("encode");
        assert_eq!(
            ControlRecord::decode_at(9, 5, &b),
            Err(ControlError::EpochMismatch {
                lsn: 9,
                body: 4,
                header: 5
            })
        );
        assert_eq!(ControlRecord::decode_at(9, 4, &b), Ok(start(4, "n1")));
    }

    proptest! {
        #[test]
        fn epoch_start_round_trips(epoch in any::<u64>(), id in "[a-z0-9-]{1,64}") {
            let c = start(epoch, &id);
            let b = c.encode().expect("encode");
            prop_assert_eq!(b.len(), EPOCH_START_FIXED_LEN + id.len());
            prop_assert_eq!(ControlRecord::decode(&b), Ok(c));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_decode_only_to_a_re_encodable_record(
            bytes in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            if let Ok(c) = ControlRecord::decode(&bytes) {
                prop_assert_eq!(c.encode().expect("re-encode"), bytes);
            }
        }
    }
}
