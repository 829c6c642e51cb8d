//! The configuration file of a snapshot (`spec/snapshot-format.md` §1.5).
//!
//! A snapshot replaces every record up to its boundary, and with them the
//! configuration records among them (`spec/membership.md`): a node whose log
//! starts after a snapshot boundary would otherwise no longer know which
//! members vote. So each snapshot directory carries, beside the snapshot
//! file, the newest configuration record at or below the boundary (or the
//! statement that there is none), written into the temporary directory before
//! it is published and shipped in the offer: it becomes visible with the
//! snapshot, atomically, and never without it.
//!
//! The file is bound to its snapshot (boundary lsn and header crc), checked
//! by its own crc, and bounded before anything is allocated:
//! [`MAX_CONFIG_BODY_BYTES`] (64 members of three 255-byte strings fit).

use walship_wal::control::{Configuration, ControlRecord};
use walship_wal::Lsn;

use crate::error::InvalidSnapshot;

/// Name of the configuration file inside a snapshot directory.
pub const CONFIG_FILE: &str = "configuration";
/// Magic bytes at offset 0: ASCII `WSCF`.
pub const CONFIG_MAGIC: [u8; 4] = *b"WSCF";
/// The one version this build writes and reads.
pub const CONFIG_VERSION: u16 = 1;
/// Bytes before the body.
pub const CONFIG_HEADER_LEN: usize = 32;
/// Bytes after the body (the crc).
pub const CONFIG_CRC_LEN: usize = 4;
/// Upper bound of a body: a configuration record's payload (21 fixed bytes
/// plus at most 64 members of 777 bytes is 49,749; rounded up).
pub const MAX_CONFIG_BODY_BYTES: usize = 64 * 1024;
/// Upper bound of the whole file.
pub const MAX_CONFIG_FILE_BYTES: usize = CONFIG_HEADER_LEN + MAX_CONFIG_BODY_BYTES + CONFIG_CRC_LEN;

/// Which cluster configuration was in force at a snapshot's boundary.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum BoundaryMembership {
    /// The snapshot has no configuration file: it was written by a build (or
    /// an embedder) that does not record membership. Unknown.
    #[default]
    Unrecorded,
    /// No configuration record at or below the boundary: the static member
    /// list (generation 0) is in force.
    Static,
    /// The newest configuration record at or below the boundary.
    Record {
        /// Its lsn (≥ 1, ≤ the boundary lsn).
        lsn: Lsn,
        /// The configuration it holds.
        config: Configuration,
    },
}

fn bad(detail: impl Into<String>) -> InvalidSnapshot {
    InvalidSnapshot::Configuration {
        detail: detail.into(),
    }
}

impl BoundaryMembership {
    /// The file's bytes for the snapshot with boundary lsn `boundary_lsn` and
    /// header crc `header_crc` (`None` for [`BoundaryMembership::Unrecorded`]:
    /// no file). Refuses a record above the boundary or one that does not
    /// encode.
    pub fn encode(
        &self,
        boundary_lsn: Lsn,
        header_crc: u32,
    ) -> Result<Option<Vec<u8>>, InvalidSnapshot> {
        let (lsn, body) = match self {
            BoundaryMembership::Unrecorded => return Ok(None),
            BoundaryMembership::Static => (0, Vec::new()),
            BoundaryMembership::Record { lsn, config } => {
                if *lsn == 0 || *lsn > boundary_lsn {
                    return Err(bad(format!(
                        "configuration record lsn {lsn} is not in 1..={boundary_lsn}"
                    )));
                }
                let body = ControlRecord::Configuration {
                    epoch: 0,
                    config: config.clone(),
                }
                .encode()
                .map_err(|e| bad(e.to_string()))?;
                (*lsn, body)
            }
        };
        if body.len() > MAX_CONFIG_BODY_BYTES {
            return Err(bad(format!(
                "body of {} bytes exceeds {MAX_CONFIG_BODY_BYTES}",
                body.len()
            )));
        }
        let mut out = Vec::with_capacity(CONFIG_HEADER_LEN + body.len() + CONFIG_CRC_LEN);
        out.extend_from_slice(&CONFIG_MAGIC);
        out.extend_from_slice(&CONFIG_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&boundary_lsn.to_le_bytes());
        out.extend_from_slice(&header_crc.to_le_bytes());
        out.extend_from_slice(&lsn.to_le_bytes());
        // Bounded above by MAX_CONFIG_BODY_BYTES: fits a u32.
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(Some(out))
    }

    /// Reads a configuration file's bytes; `boundary_lsn` and `header_crc` are
    /// the snapshot's it must belong to. Every check of
    /// `spec/snapshot-format.md` §1.5, in order; nothing is allocated before
    /// the length is known to be within bounds.
    pub fn decode(
        bytes: &[u8],
        boundary_lsn: Lsn,
        header_crc: u32,
    ) -> Result<BoundaryMembership, InvalidSnapshot> {
        if bytes.len() < CONFIG_HEADER_LEN + CONFIG_CRC_LEN {
            return Err(InvalidSnapshot::Truncated {
                what: "configuration file",
                need: (CONFIG_HEADER_LEN + CONFIG_CRC_LEN) as u64,
                have: bytes.len() as u64,
            });
        }
        if bytes.len() > MAX_CONFIG_FILE_BYTES {
            return Err(bad(format!(
                "file of {} bytes exceeds {MAX_CONFIG_FILE_BYTES}",
                bytes.len()
            )));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if bytes[0..4] != CONFIG_MAGIC {
            return Err(InvalidSnapshot::BadMagic {
                what: "configuration file",
                found: u32_at(0),
            });
        }
        let version = u16_at(4);
        if version != CONFIG_VERSION {
            return Err(InvalidSnapshot::UnsupportedVersion { found: version });
        }
        let end = bytes.len() - CONFIG_CRC_LEN;
        let stored = u32_at(end);
        let computed = crc32c::crc32c(&bytes[..end]);
        if stored != computed {
            return Err(bad(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        if u16_at(6) != 0 {
            return Err(bad(format!("flags {:#06x} are not 0", u16_at(6))));
        }
        if u64_at(8) != boundary_lsn || u32_at(16) != header_crc {
            return Err(bad(format!(
                "belongs to the snapshot at lsn {} with header crc {:#010x}, not to lsn {boundary_lsn} with {header_crc:#010x}",
                u64_at(8),
                u32_at(16)
            )));
        }
        let lsn = u64_at(20);
        let body_len = u32_at(28) as usize;
        if CONFIG_HEADER_LEN + body_len != end {
            return Err(bad(format!(
                "body length {body_len} disagrees with the file length {}",
                bytes.len()
            )));
        }
        let body = &bytes[CONFIG_HEADER_LEN..end];
        if lsn == 0 {
            if body_len != 0 {
                return Err(bad("a static configuration (lsn 0) with a body"));
            }
            return Ok(BoundaryMembership::Static);
        }
        if lsn > boundary_lsn {
            return Err(bad(format!(
                "configuration record lsn {lsn} is above the boundary {boundary_lsn}"
            )));
        }
        match ControlRecord::decode(body).map_err(|e| bad(e.to_string()))? {
            ControlRecord::Configuration { config, .. } => {
                Ok(BoundaryMembership::Record { lsn, config })
            }
            other => Err(bad(format!("body is not a configuration: {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::control::ConfigMember;

    fn config() -> Configuration {
        Configuration {
            generation: 3,
            forced: false,
            members: ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, id)| ConfigMember {
                    id: (*id).into(),
                    incarnation: 10 + i as u64,
                    voter: i < 2,
                    addr: format!("127.0.0.1:{}", 7000 + i),
                    http_addr: (i == 0).then(|| "127.0.0.1:8000".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn every_form_round_trips_and_unrecorded_writes_no_file() {
        assert_eq!(BoundaryMembership::Unrecorded.encode(9, 1), Ok(None));
        for m in [
            BoundaryMembership::Static,
            BoundaryMembership::Record {
                lsn: 9,
                config: config(),
            },
            BoundaryMembership::Record {
                lsn: 1,
                config: config(),
            },
        ] {
            let Ok(Some(bytes)) = m.encode(9, 0xfeed) else {
                panic!("encodes");
            };
            assert_eq!(BoundaryMembership::decode(&bytes, 9, 0xfeed), Ok(m));
        }
    }

    #[test]
    fn a_record_above_the_boundary_is_refused_both_ways() {
        let m = BoundaryMembership::Record {
            lsn: 10,
            config: config(),
        };
        assert!(m.encode(9, 1).is_err());
        let Ok(Some(bytes)) = m.encode(10, 1) else {
            panic!("encodes at its own lsn");
        };
        // Bound to the boundary: read as the file of a snapshot at 9, refused.
        assert!(BoundaryMembership::decode(&bytes, 9, 1).is_err());
    }

    #[test]
    fn a_file_of_another_snapshot_is_refused() {
        let bytes = BoundaryMembership::Static
            .encode(9, 0xaaaa)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert!(BoundaryMembership::decode(&bytes, 9, 0xaaaa).is_ok());
        assert!(BoundaryMembership::decode(&bytes, 8, 0xaaaa).is_err());
        assert!(BoundaryMembership::decode(&bytes, 9, 0xaaab).is_err());
    }

    #[test]
    fn every_single_bit_flip_and_every_truncation_is_detected() {
        let m = BoundaryMembership::Record {
            lsn: 5,
            config: config(),
        };
        let Ok(Some(bytes)) = m.encode(9, 0x1234) else {
            panic!("encodes");
        };
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                BoundaryMembership::decode(&b, 9, 0x1234).is_err(),
                "flip of bit {i} not detected"
            );
        }
        for len in 0..bytes.len() {
            assert!(BoundaryMembership::decode(&bytes[..len], 9, 0x1234).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(BoundaryMembership::decode(&longer, 9, 0x1234).is_err());
    }

    #[test]
    fn layout_is_byte_for_byte_the_spec() {
        let Ok(Some(b)) = BoundaryMembership::Static.encode(0x0102, 0x0a0b0c0d) else {
            panic!("encodes");
        };
        assert_eq!(b.len(), 36);
        assert_eq!(&b[0..4], b"WSCF");
        assert_eq!(&b[4..6], &[1, 0]);
        assert_eq!(&b[6..8], &[0, 0]);
        assert_eq!(&b[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(&b[16..20], &0x0a0b0c0du32.to_le_bytes());
        assert_eq!(&b[20..28], &[0; 8]);
        assert_eq!(&b[28..32], &[0; 4]);
        assert_eq!(&b[32..36], &crc32c::crc32c(&b[..32]).to_le_bytes());
    }
}
