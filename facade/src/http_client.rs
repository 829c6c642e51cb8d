//! A minimal blocking HTTP/1.1 client for a node's endpoint (`spec/http.md`): what the
//! demo, the failover drill and operators' tools need, without a client stack. One request
//! per connection (`Connection: close`); the answer is untrusted input, read up to
//! [`MAX_RESPONSE_BYTES`] and rejected beyond.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response read (status line, headers and body).
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// Connecting, writing or reading failed (the node is down, or timed out).
    #[error("{addr}: {op}: {source}")]
    Io {
        /// The endpoint.
        addr: SocketAddr,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The answer is not a valid HTTP/1.1 response, or too large.
    #[error("{addr}: bad response: {reason}")]
    BadResponse {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Reply, HttpClientError> {
    request(addr, "GET", path, b"", timeout)
}

/// `POST path` with `body`.
pub fn post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, HttpClientError> {
    request(addr, "POST", path, body, timeout)
}

/// One request, one connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, HttpClientError> {
    let io = |op| move |source| HttpClientError::Io { addr, op, source };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io("connect"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(io("write"))?;
    // The server may answer (and close) before it read the body: a refused write is fine.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io("read"))?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(HttpClientError::BadResponse {
            addr,
            reason: format!("longer than {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    parse(&raw).map_err(|reason| HttpClientError::BadResponse { addr, reason })
}

fn parse(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body)?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not ended")?;
        let text = std::str::from_utf8(&raw[..eol]).map_err(|_| "chunk size not UTF-8")?;
        let size = usize::from_str_radix(text.trim(), 16)
            .map_err(|_| format!("bad chunk size {text:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let start = eol + 2;
        let end = start
            .checked_add(size)
            .filter(|e| e + 2 <= raw.len())
            .ok_or("chunk longer than the response")?;
        out.extend_from_slice(&raw[start..end]);
        raw = &raw[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers_and_refuses_broken_ones() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Type: a\r\n\r\n{\"lsn\":3}").expect("ok");
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("a"));
        assert_eq!(r.json().and_then(|j| j["lsn"].as_u64()), Some(3));
        let r = parse(
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!((r.status, r.body.as_slice()), (503, b"abcde".as_slice()));
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err(), "no header end");
        assert!(parse(b"garbage\r\n\r\n").is_err(), "no status");
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nab").is_err(),
            "a chunk claiming more than the response holds"
        );
    }
}
