//! Control records: records the node writes for itself, not for the embedder
//! (`spec/wal-format.md`, "Control records"). A control record is an ordinary
//! record (same header, crc chain, lsn, epoch) whose `flags` has
//! [`FLAG_CONTROL`](crate::record::FLAG_CONTROL) set and whose payload is a
//! [`ControlRecord`] encoded as below. Control records are allowed only in
//! segments of format version 3 or later; appliers never see them.
//!
//! ```text
//! offset size field
//! 0      1    kind          u8: 1 = epoch start, 2 = configuration
//! 1      1    body_version  u8 = 1
//! 2      2    reserved      u16 = 0 (kind 1); config_flags (kind 2, below)
//! 4      8    epoch         u64, must equal the record header's epoch
//! -- kind 1 (epoch start):
//! 12     1    primary_len   u8, 1..=255 bytes of node id
//! 13     ..   primary       UTF-8 node id of the primary that opened the epoch
//! -- kind 2 (configuration, spec/membership.md):
//! 2      2    config_flags  u16: bit 0 = forced (CONFIG_FLAG_FORCED); other bits 0
//! 12     8    generation    u64 >= 1
//! 20     1    member_count  u8, 1..=MAX_CONFIG_MEMBERS
//! 21     ..   members, each:
//!             1  id_len        u8, 1..=255; then id (UTF-8)
//!             8  incarnation   u64 != 0
//!             1  member_flags  u8: bit 0 = voter; other bits 0
//!             1  addr_len      u8, 1..=255; then addr (UTF-8)
//!             1  http_len      u8, 0..=255; then http addr (UTF-8; 0 = none)
//! ```
//!
//! The payload is exactly as long as its fields say; anything else is refused.
//! A configuration has at least one voter and no member id twice.

use crate::record::Lsn;

/// `kind` of an epoch-start control record.
pub const CONTROL_KIND_EPOCH_START: u8 = 1;
/// The body version this build writes and reads.
pub const CONTROL_BODY_VERSION: u8 = 1;
/// Fixed part of an epoch-start body, before the node id.
pub const EPOCH_START_FIXED_LEN: usize = 13;
/// Longest node id an epoch-start record carries.
pub const MAX_CONTROL_NODE_ID_BYTES: usize = 255;
/// `kind` of a configuration control record.
pub const CONTROL_KIND_CONFIGURATION: u8 = 2;
/// Fixed part of a configuration body, before the members.
pub const CONFIGURATION_FIXED_LEN: usize = 21;
/// Most members a configuration lists (voters and learners).
pub const MAX_CONFIG_MEMBERS: usize = 64;
/// Longest address (peer or HTTP) a configuration carries.
pub const MAX_CONFIG_ADDR_BYTES: usize = 255;
/// `member_flags` bit: the member votes and counts towards commits.
pub const MEMBER_FLAG_VOTER: u8 = 0x1;
/// Offset of the u16 that is `reserved` in an epoch-start body and
/// `config_flags` in a configuration body.
pub const CONTROL_FLAGS_OFFSET: usize = 2;
/// `config_flags` bit: a forced configuration, written by an operator
/// (`walship-recover promote`, `walship ctl force-quorum`) without the old
/// voters' consent (spec/membership.md §3, "Forced configurations").
pub const CONFIG_FLAG_FORCED: u16 = 0x1;

/// One member of a [`Configuration`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigMember {
    /// Node id (1..=255 bytes of UTF-8).
    pub id: String,
    /// Incarnation id of the member's data directory: a new one whenever the
    /// directory is created empty (never 0).
    pub incarnation: u64,
    /// A voter votes in elections and its receipts count towards commits; a
    /// learner (non-voter) only receives the log.
    pub voter: bool,
    /// Peer (QUIC) address, as configured (`host:port`).
    pub addr: String,
    /// HTTP address, if the member serves one.
    pub http_addr: Option<String>,
}

/// A cluster configuration: who the members are. Stored in the log as a
/// control record (kind 2) and committed like any other record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Configuration {
    /// Generation: 1 for the first configuration in a log, one more for each
    /// change after it.
    pub generation: u64,
    /// Written by an operator without the old voters' consent (a forced
    /// recovery after the old voters were lost): it may change any number of
    /// members, and it commits under itself alone (spec/membership.md §3).
    pub forced: bool,
    /// The members, in the order written.
    pub members: Vec<ConfigMember>,
}

impl Configuration {
    /// The voting members' ids.
    pub fn voters(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id.as_str())
    }

    /// The member named `id`.
    pub fn member(&self, id: &str) -> Option<&ConfigMember> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Whether `id` is a voting member.
    pub fn is_voter(&self, id: &str) -> bool {
        self.member(id).is_some_and(|m| m.voter)
    }
}

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
    /// The cluster's configuration from this record on (spec/membership.md).
    Configuration {
        /// The epoch of the primary that wrote it; equals the header's epoch.
        epoch: u64,
        /// The configuration.
        config: Configuration,
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
    /// A configuration's `config_flags` has a bit other than forced set.
    #[error("configuration record flags {found:#06x} set a bit other than forced (0x0001)")]
    UnknownConfigFlags {
        /// The flags found.
        found: u16,
    },
    /// The node id is empty, too long or not UTF-8.
    #[error("control record node id is invalid: {why}")]
    BadNodeId {
        /// What is wrong with it.
        why: &'static str,
    },
    /// A configuration's member list is malformed.
    #[error("configuration record is invalid: {why}")]
    BadConfiguration {
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

/// A member as it sits in a payload (borrowed, nothing allocated).
#[derive(Clone, Copy, Debug)]
struct MemberRef<'a> {
    id: &'a str,
    incarnation: u64,
    voter: bool,
    addr: &'a str,
    http_addr: &'a str,
}

/// A payload checked field by field, borrowing its strings.
enum Parsed<'a> {
    EpochStart {
        epoch: u64,
        primary: &'a str,
    },
    Configuration {
        epoch: u64,
        generation: u64,
        forced: bool,
        count: usize,
        members: &'a [u8],
    },
}

/// Reads fields off a payload, each bounded by what is left of it.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(ControlError::Truncated {
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            })?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, ControlError> {
        let mut e = [0u8; 8];
        e.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(e))
    }

    /// A length-prefixed (u8) UTF-8 string; `what` names it in errors.
    fn str8(&mut self, allow_empty: bool, what: Invalid) -> Result<&'a str, ControlError> {
        let len = self.u8()? as usize;
        if len == 0 && !allow_empty {
            return Err(what.error("empty"));
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| what.error("not UTF-8"))
    }
}

/// Which string field a refusal is about.
#[derive(Clone, Copy)]
enum Invalid {
    NodeId,
    Addr,
}

impl Invalid {
    fn error(self, why: &'static str) -> ControlError {
        match self {
            Invalid::NodeId => ControlError::BadNodeId { why },
            Invalid::Addr => ControlError::BadConfiguration {
                why: match why {
                    "empty" => "empty peer address",
                    _ => "address not UTF-8",
                },
            },
        }
    }
}

fn next_member<'a>(c: &mut Cursor<'a>) -> Result<MemberRef<'a>, ControlError> {
    let id = c.str8(false, Invalid::NodeId)?;
    let incarnation = c.u64()?;
    if incarnation == 0 {
        return Err(ControlError::BadConfiguration {
            why: "incarnation 0",
        });
    }
    let flags = c.u8()?;
    if flags & !MEMBER_FLAG_VOTER != 0 {
        return Err(ControlError::BadConfiguration {
            why: "unknown member flag bits",
        });
    }
    let addr = c.str8(false, Invalid::Addr)?;
    let http_addr = c.str8(true, Invalid::Addr)?;
    Ok(MemberRef {
        id,
        incarnation,
        voter: flags & MEMBER_FLAG_VOTER != 0,
        addr,
        http_addr,
    })
}

/// Checks the member list (`count` members in `bytes`, nothing after them):
/// at least one voter, no id twice. Allocates nothing.
fn check_members(count: usize, bytes: &[u8]) -> Result<(), ControlError> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let mut voters = 0usize;
    for i in 0..count {
        let m = next_member(&mut c)?;
        voters += usize::from(m.voter);
        // At most MAX_CONFIG_MEMBERS: a quadratic scan over what is already read.
        let mut earlier = Cursor { buf: bytes, pos: 0 };
        for _ in 0..i {
            if next_member(&mut earlier)?.id == m.id {
                return Err(ControlError::BadConfiguration {
                    why: "a member id appears twice",
                });
            }
        }
    }
    if c.pos != bytes.len() {
        return Err(ControlError::TrailingBytes {
            extra: bytes.len() - c.pos,
        });
    }
    if voters == 0 {
        return Err(ControlError::BadConfiguration { why: "no voter" });
    }
    Ok(())
}

fn parse(payload: &[u8]) -> Result<Parsed<'_>, ControlError> {
    if payload.len() < 2 {
        return Err(ControlError::Truncated {
            need: 2,
            have: payload.len(),
        });
    }
    let (kind, version) = (payload[0], payload[1]);
    let fixed = match kind {
        CONTROL_KIND_EPOCH_START => EPOCH_START_FIXED_LEN,
        CONTROL_KIND_CONFIGURATION => CONFIGURATION_FIXED_LEN,
        _ => return Err(ControlError::UnknownKind { kind }),
    };
    if version != CONTROL_BODY_VERSION {
        return Err(ControlError::UnsupportedVersion { found: version });
    }
    if payload.len() < fixed {
        return Err(ControlError::Truncated {
            need: fixed,
            have: payload.len(),
        });
    }
    let flags = u16::from_le_bytes([
        payload[CONTROL_FLAGS_OFFSET],
        payload[CONTROL_FLAGS_OFFSET + 1],
    ]);
    if kind == CONTROL_KIND_EPOCH_START && flags != 0 {
        return Err(ControlError::Reserved { found: flags });
    }
    if kind == CONTROL_KIND_CONFIGURATION && flags & !CONFIG_FLAG_FORCED != 0 {
        return Err(ControlError::UnknownConfigFlags { found: flags });
    }
    let mut c = Cursor {
        buf: payload,
        pos: 4,
    };
    let epoch = c.u64()?;
    let parsed = if kind == CONTROL_KIND_EPOCH_START {
        let primary = c.str8(false, Invalid::NodeId)?;
        Parsed::EpochStart { epoch, primary }
    } else {
        let generation = c.u64()?;
        if generation == 0 {
            return Err(ControlError::BadConfiguration {
                why: "generation 0",
            });
        }
        let count = c.u8()? as usize;
        if count == 0 || count > MAX_CONFIG_MEMBERS {
            return Err(ControlError::BadConfiguration {
                why: "member count outside 1..=64",
            });
        }
        let members = &payload[c.pos..];
        check_members(count, members)?;
        c.pos = payload.len();
        Parsed::Configuration {
            epoch,
            generation,
            forced: flags & CONFIG_FLAG_FORCED != 0,
            count,
            members,
        }
    };
    if c.pos < payload.len() {
        return Err(ControlError::TrailingBytes {
            extra: payload.len() - c.pos,
        });
    }
    Ok(parsed)
}

fn push_str8(
    out: &mut Vec<u8>,
    s: &str,
    what: Invalid,
    allow_empty: bool,
) -> Result<(), ControlError> {
    let b = s.as_bytes();
    if b.is_empty() && !allow_empty {
        return Err(what.error("empty"));
    }
    if b.len() > 255 {
        return Err(match what {
            Invalid::NodeId => ControlError::BadNodeId {
                why: "longer than 255 bytes",
            },
            Invalid::Addr => ControlError::BadConfiguration {
                why: "address longer than 255 bytes",
            },
        });
    }
    // Bounded above: fits a u8.
    out.push(b.len() as u8);
    out.extend_from_slice(b);
    Ok(())
}

impl ControlRecord {
    /// The epoch the record belongs to (its header's epoch).
    pub fn epoch(&self) -> u64 {
        match self {
            ControlRecord::EpochStart { epoch, .. }
            | ControlRecord::Configuration { epoch, .. } => *epoch,
        }
    }

    /// Encodes the payload. Refuses what [`ControlRecord::decode`] would
    /// refuse (an empty or over-long node id or address, no voter, an id
    /// twice, more than [`MAX_CONFIG_MEMBERS`] members, generation or
    /// incarnation 0).
    pub fn encode(&self) -> Result<Vec<u8>, ControlError> {
        let mut out = Vec::with_capacity(64);
        let (kind, epoch, flags) = match self {
            ControlRecord::EpochStart { epoch, .. } => (CONTROL_KIND_EPOCH_START, *epoch, 0u16),
            ControlRecord::Configuration { epoch, config } => (
                CONTROL_KIND_CONFIGURATION,
                *epoch,
                if config.forced { CONFIG_FLAG_FORCED } else { 0 },
            ),
        };
        out.push(kind);
        out.push(CONTROL_BODY_VERSION);
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&epoch.to_le_bytes());
        match self {
            ControlRecord::EpochStart { primary, .. } => {
                push_str8(&mut out, primary, Invalid::NodeId, false)?;
            }
            ControlRecord::Configuration { config, .. } => {
                out.extend_from_slice(&config.generation.to_le_bytes());
                let n = config.members.len();
                if n == 0 || n > MAX_CONFIG_MEMBERS {
                    return Err(ControlError::BadConfiguration {
                        why: "member count outside 1..=64",
                    });
                }
                // Bounded above: fits a u8.
                out.push(n as u8);
                for m in &config.members {
                    push_str8(&mut out, &m.id, Invalid::NodeId, false)?;
                    out.extend_from_slice(&m.incarnation.to_le_bytes());
                    out.push(if m.voter { MEMBER_FLAG_VOTER } else { 0 });
                    push_str8(&mut out, &m.addr, Invalid::Addr, false)?;
                    push_str8(
                        &mut out,
                        m.http_addr.as_deref().unwrap_or(""),
                        Invalid::Addr,
                        true,
                    )?;
                }
            }
        }
        // One rule for both directions: what does not decode is not written.
        parse(&out)?;
        Ok(out)
    }

    /// Decodes a payload, bounded by its own length fields (nothing is
    /// allocated beyond the strings it holds: at most 64 members of three
    /// strings of at most 255 bytes).
    pub fn decode(payload: &[u8]) -> Result<ControlRecord, ControlError> {
        Ok(match parse(payload)? {
            Parsed::EpochStart { epoch, primary } => ControlRecord::EpochStart {
                epoch,
                primary: primary.to_string(),
            },
            Parsed::Configuration {
                epoch,
                generation,
                forced,
                count,
                members,
            } => {
                let mut c = Cursor {
                    buf: members,
                    pos: 0,
                };
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    let m = next_member(&mut c)?;
                    list.push(ConfigMember {
                        id: m.id.to_string(),
                        incarnation: m.incarnation,
                        voter: m.voter,
                        addr: m.addr.to_string(),
                        http_addr: (!m.http_addr.is_empty()).then(|| m.http_addr.to_string()),
                    });
                }
                ControlRecord::Configuration {
                    epoch,
                    config: Configuration {
                        generation,
                        forced,
                        members: list,
                    },
                }
            }
        })
    }

    /// Verifies a payload without allocating; returns its epoch.
    pub fn check(payload: &[u8]) -> Result<u64, ControlError> {
        Ok(match parse(payload)? {
            Parsed::EpochStart { epoch, .. } | Parsed::Configuration { epoch, .. } => epoch,
        })
    }

    /// Verifies the payload of a record at `lsn` without allocating, and its
    /// epoch against the record header's.
    pub fn check_at(lsn: Lsn, header_epoch: u64, payload: &[u8]) -> Result<(), ControlError> {
        let epoch = Self::check(payload)?;
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

    fn member(id: &str, voter: bool) -> ConfigMember {
        ConfigMember {
            id: id.to_string(),
            incarnation: 0x1122_3344_5566_7788,
            voter,
            addr: format!("{id}:7000"),
            http_addr: voter.then(|| format!("{id}:8000")),
        }
    }

    fn config(generation: u64, members: Vec<ConfigMember>) -> ControlRecord {
        ControlRecord::Configuration {
            epoch: 3,
            config: Configuration {
                generation,
                forced: false,
                members,
            },
        }
    }

    #[test]
    fn forced_configuration_sets_bit_0_of_config_flags_and_nothing_else() {
        let mut forced = config(2, vec![member("a", true)]);
        if let ControlRecord::Configuration { config, .. } = &mut forced {
            config.forced = true;
        }
        let b = forced.encode().expect("encode");
        let plain = config(2, vec![member("a", true)]).encode().expect("encode");
        assert_eq!(
            &b[..4],
            &[2, 1, 1, 0],
            "kind, version, config_flags = 0x0001 LE"
        );
        assert_eq!(&b[4..], &plain[4..], "the flag changes nothing else");
        assert_eq!(&plain[2..4], &[0, 0], "an unforced configuration keeps 0");
        assert_eq!(ControlRecord::decode(&b), Ok(forced));
        for bit in 1..16 {
            let mut x = b.clone();
            let flags = CONFIG_FLAG_FORCED | (1u16 << bit);
            x[2..4].copy_from_slice(&flags.to_le_bytes());
            assert_eq!(
                ControlRecord::decode(&x),
                Err(ControlError::UnknownConfigFlags { found: flags }),
                "bit {bit}"
            );
            assert!(ControlRecord::check(&x).is_err());
        }
        // The epoch-start body keeps a reserved u16 = 0: the forced bit means nothing there.
        let mut s = start(7, "n1").encode().expect("encode");
        s[2] = CONFIG_FLAG_FORCED as u8;
        assert_eq!(
            ControlRecord::decode(&s),
            Err(ControlError::Reserved { found: 1 })
        );
    }

    #[test]
    fn configuration_layout_is_byte_for_byte_the_spec() {
        let b = config(2, vec![member("a", true), member("b", false)])
            .encode()
            .expect("encode");
        let mut want = vec![
            2, 1, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2,
        ];
        want.extend_from_slice(&[1, b'a', 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 1]);
        want.extend_from_slice(&[6, b'a', b':', b'7', b'0', b'0', b'0']);
        want.extend_from_slice(&[6, b'a', b':', b'8', b'0', b'0', b'0']);
        want.extend_from_slice(&[1, b'b', 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0]);
        want.extend_from_slice(&[6, b'b', b':', b'7', b'0', b'0', b'0', 0]);
        assert_eq!(
            b, want,
            "kind, version, reserved, epoch, generation, count, members"
        );
        assert_eq!(
            ControlRecord::decode(&b),
            Ok(config(2, vec![member("a", true), member("b", false)]))
        );
        assert_eq!(ControlRecord::check_at(5, 3, &b), Ok(()));
    }

    #[test]
    fn malformed_configurations_are_refused_with_their_reason() {
        let bad = |why| Err(ControlError::BadConfiguration { why });
        assert_eq!(
            config(1, vec![member("a", false)]).encode(),
            bad("no voter")
        );
        assert_eq!(
            config(1, vec![member("a", true), member("a", false)]).encode(),
            bad("a member id appears twice")
        );
        assert_eq!(
            config(0, vec![member("a", true)]).encode(),
            bad("generation 0")
        );
        assert_eq!(
            config(1, vec![]).encode(),
            bad("member count outside 1..=64")
        );
        let many: Vec<_> = (0..65).map(|i| member(&format!("n{i}"), true)).collect();
        assert_eq!(
            config(1, many.clone()).encode(),
            bad("member count outside 1..=64")
        );
        assert!(config(1, many[..64].to_vec()).encode().is_ok());
        let mut m = member("a", true);
        m.incarnation = 0;
        assert_eq!(config(1, vec![m]).encode(), bad("incarnation 0"));
        let mut m = member("a", true);
        m.addr = String::new();
        assert_eq!(config(1, vec![m]).encode(), bad("empty peer address"));
        let mut m = member("a", true);
        m.addr = "x".repeat(256);
        assert_eq!(
            config(1, vec![m]).encode(),
            bad("address longer than 255 bytes")
        );

        let good = config(1, vec![member("a", true)]).encode().expect("encode");
        let mut b = good.clone();
        b[31] = 0x80; // member flags: an unknown bit beside voter
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::BadConfiguration {
                why: "unknown member flag bits"
            })
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            ControlRecord::decode(&b),
            Err(ControlError::TrailingBytes { extra: 1 })
        );
        for cut in 0..good.len() {
            assert!(
                ControlRecord::decode(&good[..cut]).is_err(),
                "a payload cut at {cut} of {} decoded",
                good.len()
            );
        }
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
        fn configuration_round_trips(
            generation in 1u64..,
            epoch in any::<u64>(),
            forced in any::<bool>(),
            members in proptest::collection::btree_map(
                "[a-z0-9]{1,12}",
                (1u64.., any::<bool>(), "[a-z0-9.:]{1,20}", proptest::option::of("[a-z0-9.:]{1,20}")),
                1..8,
            ),
        ) {
            let mut list: Vec<ConfigMember> = members
                .into_iter()
                .map(|(id, (incarnation, voter, addr, http_addr))| ConfigMember { id, incarnation, voter, addr, http_addr })
                .collect();
            list[0].voter = true;
            let c = ControlRecord::Configuration { epoch, config: Configuration { generation, forced, members: list } };
            let b = c.encode().expect("encode");
            prop_assert_eq!(u16::from_le_bytes([b[2], b[3]]), u16::from(forced));
            prop_assert_eq!(ControlRecord::check(&b), Ok(epoch));
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
