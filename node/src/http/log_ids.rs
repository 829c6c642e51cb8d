//! `GET /log/ids?from=LSN&count=N` (`spec/http.md` §8): the identities of this node's
//! durable records, read-only, for `walship-recover rejoin DIR --from ADDR` (which compares
//! a stopped node's log with the primary's without access to the primary's disk).
//!
//! Only identities are served, never payloads: `(lsn, epoch, crc, prev_crc, len)` per
//! record. The crc32c chain makes them enough to compare logs: two records with the same
//! lsn and crc have equal prefixes (each crc covers `prev_crc`), and `prev_crc` lets the
//! client check that consecutive pages chain onto each other.
//!
//! The primary role serves them from its shared WAL's reader (the one that ships records
//! to replicas: it reads concurrently with appends and group commit, and never writes),
//! bounded by the durable lsn. Other roles answer 503: their log is held by the replica
//! executor's thread, and the one log a rejoin compares with is the primary's.

use serde::{Deserialize, Serialize};
use walship_wal::{Lsn, Position};

use super::NodeRole;

/// The most identities one request returns (`count` above this is refused with 400).
pub const MAX_LOG_IDS: u32 = 4096;

/// One record's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordId {
    /// Its lsn.
    pub lsn: Lsn,
    /// The epoch of the primary that wrote it.
    pub epoch: u64,
    /// Its crc32c (covers its header after the crc field, `prev_crc` included, and its payload).
    pub crc: u32,
    /// The crc of record `lsn - 1`.
    pub prev_crc: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl RecordId {
    /// The record's identity as the WAL compares it.
    pub fn position(&self) -> Position {
        Position {
            lsn: self.lsn,
            epoch: self.epoch,
            crc: self.crc,
        }
    }
}

/// A record position in JSON (`{lsn, epoch, crc}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionJson {
    /// lsn (0: the empty log).
    pub lsn: Lsn,
    /// Epoch.
    pub epoch: u64,
    /// crc.
    pub crc: u32,
}

impl From<Position> for PositionJson {
    fn from(p: Position) -> Self {
        PositionJson {
            lsn: p.lsn,
            epoch: p.epoch,
            crc: p.crc,
        }
    }
}

impl From<PositionJson> for Position {
    fn from(p: PositionJson) -> Self {
        Position {
            lsn: p.lsn,
            epoch: p.epoch,
            crc: p.crc,
        }
    }
}

/// The answer of `GET /log/ids`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogIds {
    /// This node.
    pub node_id: String,
    /// Its role (`/status` `role`).
    pub role: NodeRole,
    /// Its epoch (`/status` `epoch`).
    pub epoch: u64,
    /// The record before the first retained one (the log's base; lsn 0 for a log that
    /// starts at lsn 1).
    pub base: PositionJson,
    /// First retained lsn (`base.lsn + 1`).
    pub first_lsn: Lsn,
    /// The last lsn served: the durable lsn when the answer was made (records above it
    /// are not served).
    pub last_lsn: Lsn,
    /// The commit watermark this node knows.
    pub commit_lsn: Lsn,
    /// The record before `ids[0]` (`base` when `from` was 0 or the first retained lsn).
    pub prev: PositionJson,
    /// Identities from `from` (or the first retained lsn), consecutive, at most `count`.
    pub ids: Vec<RecordId>,
}

/// Why `GET /log/ids` was not answered with identities.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogIdsError {
    /// This node does not serve its log now (not the primary role, or stopped): 503.
    #[error("{0}")]
    Unavailable(String),
    /// `from` is below the first retained lsn: 410.
    #[error("lsn {lsn} is not retained (first retained lsn {first_lsn})")]
    NotRetained {
        /// The lsn asked for.
        lsn: Lsn,
        /// The first retained one.
        first_lsn: Lsn,
    },
    /// Reading the log failed: 500.
    #[error("{0}")]
    Failed(String),
}

/// What a request asks for, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogIdsRequest {
    /// First lsn wanted (0: the first retained).
    pub from: Lsn,
    /// At most this many identities (1..=[`MAX_LOG_IDS`]).
    pub count: u32,
}

impl LogIdsRequest {
    /// Parses `from` (an lsn, default 0) and `count` (1..=[`MAX_LOG_IDS`], default
    /// [`MAX_LOG_IDS`]) from query pairs; anything else is refused with the reason.
    pub fn parse(pairs: &[(String, String)]) -> Result<LogIdsRequest, String> {
        let mut req = LogIdsRequest {
            from: 0,
            count: MAX_LOG_IDS,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "from" => {
                    req.from = v
                        .parse::<Lsn>()
                        .map_err(|_| format!("from must be an lsn (0..=2^64-1), not {v:?}"))?
                }
                "count" => {
                    req.count = match v.parse::<u32>() {
                        Ok(n) if (1..=MAX_LOG_IDS).contains(&n) => n,
                        _ => return Err(format!("count must be 1..={MAX_LOG_IDS}, not {v:?}")),
                    }
                }
                other => return Err(format!("unknown parameter {other:?} (from, count)")),
            }
        }
        Ok(req)
    }
}

/// `GET /log/ids` answered by a running primary role `primary` whose `/status` is `status`
/// (what [`super::NodeView::log_ids`] does on a primary; `walship node`'s fixed primary and a
/// cluster member in the primary role share it).
pub fn primary_log_ids(
    primary: &crate::primary::Primary,
    status: &super::NodeStatus,
    req: LogIdsRequest,
) -> Result<LogIds, LogIdsError> {
    if status.role != NodeRole::Primary {
        return Err(LogIdsError::Unavailable(format!(
            "this node is {}, not a serving primary",
            status.role.as_str()
        )));
    }
    let (base, prev, durable, ids) =
        primary
            .record_ids(req.from, req.count as usize)
            .map_err(|e| match e {
                crate::primary::PrimaryError::Wal(walship_wal::WalError::NotRetained {
                    lsn,
                    first_lsn,
                }) => LogIdsError::NotRetained { lsn, first_lsn },
                e => LogIdsError::Failed(e.to_string()),
            })?;
    debug_assert!(
        ids.len() <= req.count as usize,
        "record_ids returned more than asked"
    );
    Ok(LogIds {
        node_id: status.node_id.clone(),
        role: status.role,
        epoch: status.epoch,
        base: base.into(),
        first_lsn: base.lsn.saturating_add(1),
        last_lsn: durable.max(base.lsn),
        commit_lsn: status.commit_lsn,
        prev: prev.into(),
        ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn request_defaults_bounds_and_refusals() {
        assert_eq!(
            LogIdsRequest::parse(&[]),
            Ok(LogIdsRequest {
                from: 0,
                count: MAX_LOG_IDS
            })
        );
        assert_eq!(
            LogIdsRequest::parse(&pairs(&[("from", "7"), ("count", "1")])),
            Ok(LogIdsRequest { from: 7, count: 1 })
        );
        for bad in [
            pairs(&[("count", "0")]),
            pairs(&[("count", "4097")]),
            pairs(&[("count", "-1")]),
            pairs(&[("from", "x")]),
            pairs(&[("from", "18446744073709551616")]),
            pairs(&[("to", "3")]),
        ] {
            assert!(LogIdsRequest::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_record_id_is_its_position_and_round_trips_in_json() {
        let id = RecordId {
            lsn: 5,
            epoch: 2,
            crc: 0xdead_beef,
            prev_crc: 1,
            len: 3,
        };
        assert_eq!(
            id.position(),
            Position {
                lsn: 5,
                epoch: 2,
                crc: 0xdead_beef
            }
        );
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(
            json,
            r#"{"lsn":5,"epoch":2,"crc":3735928559,"prev_crc":1,"len":3}"#
        );
        assert_eq!(serde_json::from_str::<RecordId>(&json).expect("parse"), id);
    }
}
