//! The log of a running primary read over its HTTP endpoint (`rejoin DIR --from ADDR`):
//! `GET /status` says who it is, `GET /log/ids` serves its durable records' identities in
//! bounded pages (spec/http.md §8). A [`RemoteLog`] is a [`PositionSource`]: the same
//! comparison as for a directory runs over it (spec/recovery-tool.md §11.1).
//!
//! Every answer is untrusted input: the HTTP client reads at most
//! [`walship::http_client::MAX_RESPONSE_BYTES`] per response, a page may hold at most
//! the identities asked for, and each page must chain onto what was read before it (the
//! next lsn, `prev_crc` = the previous crc, epochs never going back). Anything else
//! rejects the read with [`RecoverError::RemoteLog`]; nothing is changed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;
use walship::http_client;
use walship_wal::{Lsn, Position};

use crate::cmd::diff::{PositionSource, PositionVisitor};
use crate::error::RecoverError;
use crate::scan::{EpochSpan, ScanEnd, ScanOptions, WalScan};

/// Identities asked for per request (the endpoint's bound, spec/http.md §8).
pub const PAGE_IDS: u32 = 4096;

/// How long one request may take (connect, send, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL scheme that marks `--from` as an address.
const SCHEME: &str = "http://";

/// Where `--from` points: a data directory, or a primary's HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejoinFrom {
    /// The primary's data directory (or a copy), read without its lock.
    Dir(std::path::PathBuf),
    /// The primary's HTTP endpoint.
    Addr(SocketAddr),
}

impl RejoinFrom {
    /// Tells the two forms apart (spec/recovery-tool.md §11): a value that starts with
    /// `http://` is an address (`http://IP:PORT` or `http://HOST:PORT`, resolved here; a
    /// trailing `/` is allowed); a value that parses as a socket address (`IP:PORT`,
    /// `[IPv6]:PORT`) is an address; anything else is a directory. A directory whose name
    /// looks like an address is given as `./127.0.0.1:8080`.
    pub fn parse(value: &std::path::Path) -> Result<RejoinFrom, RecoverError> {
        let Some(text) = value.to_str() else {
            return Ok(RejoinFrom::Dir(value.to_path_buf()));
        };
        if let Some(rest) = text.strip_prefix(SCHEME) {
            let hostport = rest.strip_suffix('/').unwrap_or(rest);
            if hostport.is_empty() || hostport.contains('/') {
                return Err(RecoverError::BadInput {
                    message: format!("--from {text}: an address is http://HOST:PORT, with no path"),
                });
            }
            let addr = hostport
                .to_socket_addrs()
                .map_err(|e| RecoverError::BadInput {
                    message: format!("--from {text}: cannot resolve {hostport}: {e}"),
                })?
                .next()
                .ok_or_else(|| RecoverError::BadInput {
                    message: format!("--from {text}: {hostport} resolves to no address"),
                })?;
            return Ok(RejoinFrom::Addr(addr));
        }
        match text.parse::<SocketAddr>() {
            Ok(a) => Ok(RejoinFrom::Addr(a)),
            Err(_) => Ok(RejoinFrom::Dir(value.to_path_buf())),
        }
    }

    /// How reports and the audit log name it.
    pub fn name(&self) -> String {
        match self {
            RejoinFrom::Dir(d) => d.display().to_string(),
            RejoinFrom::Addr(a) => format!("{SCHEME}{a}"),
        }
    }
}

/// `GET /status`, the keys rejoin reads.
#[derive(Clone, Debug, Deserialize)]
pub struct RemoteStatus {
    /// The node's id.
    pub node_id: String,
    /// Its role.
    pub role: String,
    /// Its epoch.
    pub epoch: u64,
    /// The primary it names.
    pub primary: Option<String>,
    /// That primary's endpoint.
    pub primary_http: Option<String>,
    /// Its commit watermark.
    pub commit_lsn: Lsn,
}

#[derive(Clone, Copy, Debug, Deserialize)]
struct PositionJson {
    lsn: Lsn,
    epoch: u64,
    crc: u32,
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

#[derive(Clone, Copy, Debug, Deserialize)]
struct RecordIdJson {
    lsn: Lsn,
    epoch: u64,
    crc: u32,
    prev_crc: u32,
    len: u32,
}

/// One page of `GET /log/ids`.
#[derive(Clone, Debug, Deserialize)]
struct Page {
    node_id: String,
    role: String,
    epoch: u64,
    base: PositionJson,
    first_lsn: Lsn,
    last_lsn: Lsn,
    prev: PositionJson,
    ids: Vec<RecordIdJson>,
}

/// A running primary's log, read through its HTTP endpoint. Check it is the primary
/// with [`RemoteLog::connect_primary`].
#[derive(Debug)]
pub struct RemoteLog {
    addr: SocketAddr,
    timeout: Duration,
    page_ids: u32,
    status: RemoteStatus,
}

impl RemoteLog {
    /// Asks `addr` who it is (`GET /status`). [`RecoverError::Refused`] if it is not a
    /// serving primary (naming the primary it knows); [`RecoverError::RemoteLog`] if it
    /// cannot be asked or answers nonsense.
    pub fn connect_primary(addr: SocketAddr) -> Result<RemoteLog, RecoverError> {
        Self::connect_primary_with(addr, REQUEST_TIMEOUT, PAGE_IDS)
    }

    /// [`RemoteLog::connect_primary`] with a request timeout and page size (tests).
    pub fn connect_primary_with(
        addr: SocketAddr,
        timeout: Duration,
        page_ids: u32,
    ) -> Result<RemoteLog, RecoverError> {
        assert!(
            (1..=PAGE_IDS).contains(&page_ids),
            "a page asks for 1..={PAGE_IDS} identities"
        );
        let status: RemoteStatus = get_json(addr, "/status", timeout)?;
        if status.role != "primary" {
            let primary = match (&status.primary, &status.primary_http) {
                (Some(p), Some(h)) => format!("it names {p} ({h}) as the primary"),
                (Some(p), None) => format!("it names {p} as the primary"),
                _ => "it knows no primary".to_string(),
            };
            return Err(RecoverError::Refused {
                reason: format!(
                    "{SCHEME}{addr} is not the primary: node {} is {} in epoch {}; {primary}. Rejoin from the primary's address",
                    status.node_id, status.role, status.epoch
                ),
            });
        }
        Ok(RemoteLog {
            addr,
            timeout,
            page_ids,
            status,
        })
    }

    /// What `/status` said when connecting.
    pub fn status(&self) -> &RemoteStatus {
        &self.status
    }

    fn bad(&self, detail: impl Into<String>) -> RecoverError {
        RecoverError::RemoteLog {
            addr: format!("{SCHEME}{}", self.addr),
            detail: detail.into(),
        }
    }

    /// One page from `from`, checked on its own terms: at most the identities asked for,
    /// the same node and epoch as `/status` said, consecutive lsns chained by `prev_crc`
    /// from `prev`, lengths within the record bound.
    fn page(&self, from: Lsn, max_record_bytes: u32) -> Result<Page, RecoverError> {
        let path = format!("/log/ids?from={from}&count={}", self.page_ids);
        let page: Page = get_json(self.addr, &path, self.timeout)?;
        if page.node_id != self.status.node_id || page.role != "primary" {
            return Err(self.bad(format!(
                "the log was served by {} as {}, but {} was the primary when the read began",
                page.node_id, page.role, self.status.node_id
            )));
        }
        if page.epoch != self.status.epoch {
            return Err(self.bad(format!(
                "the primary's epoch changed from {} to {} during the read (a failover): run the command again against the current primary",
                self.status.epoch, page.epoch
            )));
        }
        if page.ids.len() > self.page_ids as usize {
            return Err(self.bad(format!(
                "a page holds {} identities, {} were asked for",
                page.ids.len(),
                self.page_ids
            )));
        }
        if page.first_lsn != page.base.lsn.saturating_add(1) || page.last_lsn < page.base.lsn {
            return Err(self.bad(format!(
                "base lsn {}, first lsn {} and last lsn {} do not fit together",
                page.base.lsn, page.first_lsn, page.last_lsn
            )));
        }
        let mut prev: Position = page.prev.into();
        if from != 0 && prev.lsn.saturating_add(1) != from && !page.ids.is_empty() {
            return Err(self.bad(format!(
                "asked for lsn {from}, the page starts after lsn {}",
                prev.lsn
            )));
        }
        for id in &page.ids {
            if id.lsn != prev.lsn.wrapping_add(1)
                || id.prev_crc != prev.crc
                || id.epoch < prev.epoch
                || id.len > max_record_bytes
                || id.lsn > page.last_lsn
            {
                return Err(self.bad(format!(
                    "identity lsn {} epoch {} crc {:#010x} prev_crc {:#010x} len {} does not follow lsn {} epoch {} crc {:#010x} (or is above the last lsn {} or the {max_record_bytes}-byte record bound)",
                    id.lsn, id.epoch, id.crc, id.prev_crc, id.len, prev.lsn, prev.epoch, prev.crc, page.last_lsn
                )));
            }
            prev = Position {
                lsn: id.lsn,
                epoch: id.epoch,
                crc: id.crc,
            };
        }
        Ok(page)
    }
}

impl PositionSource for RemoteLog {
    fn name(&self) -> String {
        format!("{SCHEME}{}", self.addr)
    }

    /// Reads pages from the first retained lsn up to the last lsn the first page
    /// announced (the primary keeps appending; what it holds beyond that is not read).
    /// Consecutive pages must chain onto each other.
    fn scan_positions(
        &self,
        opts: ScanOptions,
        _progress_label: Option<&str>,
        visit: &mut PositionVisitor<'_>,
    ) -> Result<WalScan, RecoverError> {
        let first = self.page(0, opts.max_record_bytes)?;
        let base: Position = first.base.into();
        let end = first.last_lsn;
        let first_prev: Position = first.prev.into();
        if first_prev != base {
            return Err(self.bad(format!(
                "the first page starts after {first_prev}, not at the base {base}"
            )));
        }
        let mut scan = WalScan {
            segments: Vec::new(),
            ignored: Vec::new(),
            superseded: Vec::new(),
            start: base,
            last: base,
            records: 0,
            epochs: Vec::new(),
            end: ScanEnd::Clean,
        };
        let mut page = first;
        loop {
            for id in &page.ids {
                if id.lsn > end {
                    return Ok(scan);
                }
                if id.lsn != scan.last.lsn.wrapping_add(1) || id.prev_crc != scan.last.crc {
                    return Err(self.bad(format!(
                        "the page starting at lsn {} does not chain onto lsn {} crc {:#010x} read before it (the primary's log changed during the read)",
                        id.lsn, scan.last.lsn, scan.last.crc
                    )));
                }
                let pos = Position {
                    lsn: id.lsn,
                    epoch: id.epoch,
                    crc: id.crc,
                };
                note_epoch(&mut scan.epochs, pos);
                scan.last = pos;
                scan.records += 1;
                if visit(pos).is_break() {
                    scan.end = ScanEnd::Stopped;
                    return Ok(scan);
                }
            }
            if scan.last.lsn >= end {
                return Ok(scan);
            }
            let from = scan.last.lsn + 1;
            page = self.page(from, opts.max_record_bytes)?;
            if page.ids.is_empty() {
                return Err(self.bad(format!(
                    "the primary announced records up to lsn {end} but serves none from lsn {from}"
                )));
            }
        }
    }
}

/// Extends the per-epoch runs with `pos` (the next position in lsn order).
fn note_epoch(epochs: &mut Vec<EpochSpan>, pos: Position) {
    match epochs.last_mut() {
        Some(e) if e.epoch == pos.epoch => {
            e.last_lsn = pos.lsn;
            e.records += 1;
        }
        _ => epochs.push(EpochSpan {
            epoch: pos.epoch,
            first_lsn: pos.lsn,
            last_lsn: pos.lsn,
            records: 1,
        }),
    }
}

/// `GET path` answered 200 with a JSON body of type `T`; anything else is
/// [`RecoverError::RemoteLog`] with the status and the body's `error`/`detail`.
fn get_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<T, RecoverError> {
    let bad = |detail: String| RecoverError::RemoteLog {
        addr: format!("{SCHEME}{addr}"),
        detail,
    };
    let reply =
        http_client::get(addr, path, timeout).map_err(|e| bad(format!("GET {path}: {e}")))?;
    if reply.status != 200 {
        let why = reply
            .json()
            .map(|j| format!("{} {}", j["error"], j["detail"]))
            .unwrap_or_else(|| format!("{} bytes", reply.body.len()));
        return Err(bad(format!("GET {path}: status {}: {why}", reply.status)));
    }
    serde_json::from_slice(&reply.body).map_err(|e| {
        bad(format!(
            "GET {path}: the answer is not the expected JSON: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn from_is_an_address_when_it_parses_as_one_or_says_http() {
        let addr = |s: &str| RejoinFrom::parse(Path::new(s)).expect("parses");
        assert_eq!(
            addr("127.0.0.1:8080"),
            RejoinFrom::Addr("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            addr("[::1]:9"),
            RejoinFrom::Addr("[::1]:9".parse().expect("addr"))
        );
        assert_eq!(
            addr("http://127.0.0.1:8080/"),
            RejoinFrom::Addr("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            addr("./127.0.0.1:8080"),
            RejoinFrom::Dir("./127.0.0.1:8080".into())
        );
        assert_eq!(addr("/var/lib/n1"), RejoinFrom::Dir("/var/lib/n1".into()));
        assert_eq!(addr("n1"), RejoinFrom::Dir("n1".into()));
        assert!(matches!(
            RejoinFrom::parse(Path::new("http://127.0.0.1:8080/status")),
            Err(RecoverError::BadInput { .. })
        ));
        assert!(matches!(
            RejoinFrom::parse(Path::new("http://")),
            Err(RecoverError::BadInput { .. })
        ));
        assert_eq!(
            RejoinFrom::Addr("127.0.0.1:1".parse().expect("addr")).name(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn epoch_runs_are_extended_or_started() {
        let mut e = Vec::new();
        for (lsn, epoch) in [(1, 1), (2, 1), (3, 2)] {
            note_epoch(&mut e, Position { lsn, epoch, crc: 0 });
        }
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].first_lsn, e[0].last_lsn, e[0].records), (1, 2, 2));
        assert_eq!((e[1].epoch, e[1].first_lsn), (2, 3));
    }
}
