//! Length-prefixed framing of messages on a QUIC stream.
//!
//! ```text
//! offset size field
//! 0      4    body_len  u32 little-endian, 0 < body_len <= max (at most MAX_FRAME_BYTES)
//! 4      ..   body      bincode 2 of Message (see crate::message)
//! ```
//!
//! `body_len` is checked against the limit before anything is allocated for the body, so a peer
//! cannot make us allocate more than the limit by lying in a prefix. The sans-IO pieces are
//! [`encode_frame`] and [`FrameDecoder`]; [`crate::stream`] applies the same rules to quinn
//! streams. [`encode_records_frame`] / [`records_frame_parts`] produce exactly the bytes of a
//! `Message::Records` frame without first copying the records into a `RecordBatch`.

use crate::message::{self, BodyError, Message};

// The stream helpers lived here first; other crates import them from this path.
pub use crate::stream::{read_frame, read_frame_from, write_frame, FrameSource, FrameWriter};

/// Size of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// The protocol's ceiling on `body_len`: 8 MiB + 64 KiB, room for a record batch of 8 MiB (two
/// maximum-size 4 MiB records with their headers) plus the message fields. No configuration
/// can raise it; a reader may use a lower limit.
pub const MAX_FRAME_BYTES: u32 = 8 * 1024 * 1024 + 64 * 1024;

/// Most record bytes one [`crate::message::RecordBatch`] may carry: 8 MiB. With the batch's
/// other fields (a few dozen bytes) the frame stays below [`MAX_FRAME_BYTES`].
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Framing and stream errors. [`FrameError::is_session_end`] tells a network ending (the
/// session ends, the replica reconnects) from a protocol violation by the peer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces a body larger than the limit; nothing was allocated.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced body length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// A length prefix of zero (no message encodes to nothing).
    #[error("empty frame body")]
    Empty,
    /// The body is not a valid message.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The body is a `Hello` of another protocol version that this build cannot decode.
    #[error("hello of unsupported protocol version {theirs}")]
    UnsupportedVersion {
        /// The version the peer announced.
        theirs: u32,
    },
    /// The stream ended inside a frame (after `received` of `expected` bytes of this frame).
    #[error("stream ended inside a frame after {received} of {expected} bytes")]
    Truncated {
        /// Bytes of the frame received (prefix included).
        received: usize,
        /// Bytes the frame needed (4 while the prefix is incomplete).
        expected: usize,
    },
    /// Reading from the stream failed (reset, connection lost, ...).
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing to the stream failed.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The message could not be encoded (never happens for well-formed messages).
    #[error("encode: {0}")]
    Encode(String),
}

impl FrameError {
    /// True if the error is the stream or connection ending (a truncated frame, a reset, a lost
    /// connection): the session is over, no peer misbehaviour is proven. False for protocol
    /// violations by the peer (too large, empty, malformed, unsupported version) and for local
    /// encoding errors.
    pub fn is_session_end(&self) -> bool {
        matches!(
            self,
            FrameError::Truncated { .. } | FrameError::Read(_) | FrameError::Write(_)
        )
    }
}

fn body_error(body: &[u8], e: BodyError) -> FrameError {
    match message::peek_hello_version(body) {
        Some(theirs) if theirs != message::PROTOCOL_VERSION => {
            FrameError::UnsupportedVersion { theirs }
        }
        _ => FrameError::Malformed(e.to_string()),
    }
}

/// Decodes a frame body (without its prefix).
pub fn decode_frame_body(body: &[u8]) -> Result<Message, FrameError> {
    message::decode_body(body).map_err(|e| body_error(body, e))
}

/// Appends one frame carrying `msg` to `out`; returns the frame's total length.
/// On error `out` is left as it was.
pub fn encode_frame(msg: &Message, out: &mut Vec<u8>) -> Result<usize, FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let body_len = match message::encode_body(msg, out) {
        Ok(n) => n,
        Err(e) => {
            out.truncate(start);
            return Err(FrameError::Encode(e.to_string()));
        }
    };
    let len = match u32::try_from(body_len) {
        Ok(len) if len <= MAX_FRAME_BYTES => len,
        _ => {
            out.truncate(start);
            return Err(FrameError::TooLarge {
                len: u32::try_from(body_len).unwrap_or(u32::MAX),
                max: MAX_FRAME_BYTES,
            });
        }
    };
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(FRAME_HEADER_LEN + body_len)
}

/// Wire tag of `Message::Records`.
pub const RECORDS_TAG: u32 = 5;

/// Longest possible encoding of the fields of a `Records` body before the record bytes:
/// tag (u32 varint, up to 5) + first_lsn (u64, up to 9) + count (u32, up to 5) + byte length
/// (u64, up to 9).
pub const RECORDS_HEAD_MAX: usize = 5 + 9 + 5 + 9;

fn std_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

fn push_varint<T: bincode::Encode>(v: T, out: &mut Vec<u8>) {
    if let Err(e) = bincode::encode_into_std_write(v, out, std_config()) {
        unreachable!("encoding an integer into a Vec cannot fail: {e}");
    }
}

/// The bytes around the records of a `Message::Records` frame: `head` (length prefix, tag,
/// `first_lsn`, `count`, byte length) and `tail` (`commit_lsn`), so that
/// `head ++ records ++ tail` is byte-for-byte `encode_frame(Message::Records(..))`.
/// `head` and `tail` are cleared first. Fails with `TooLarge` if the body would exceed
/// [`MAX_FRAME_BYTES`].
pub fn records_frame_parts(
    first_lsn: u64,
    count: u32,
    records_len: usize,
    commit_lsn: u64,
    head: &mut Vec<u8>,
    tail: &mut Vec<u8>,
) -> Result<(), FrameError> {
    head.clear();
    tail.clear();
    head.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    push_varint(RECORDS_TAG, head);
    push_varint(first_lsn, head);
    push_varint(count, head);
    push_varint(records_len as u64, head);
    push_varint(commit_lsn, tail);
    let body_len = (head.len() - FRAME_HEADER_LEN)
        .saturating_add(records_len)
        .saturating_add(tail.len());
    let len = match u32::try_from(body_len) {
        Ok(len) if len <= MAX_FRAME_BYTES => len,
        _ => {
            head.clear();
            tail.clear();
            return Err(FrameError::TooLarge {
                len: u32::try_from(body_len).unwrap_or(u32::MAX),
                max: MAX_FRAME_BYTES,
            });
        }
    };
    head[..FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends a `Message::Records` frame for `records` (stored record bytes) to `out`; the same
/// bytes as `encode_frame` of the equivalent `RecordBatch`. On error `out` is unchanged.
pub fn encode_records_frame(
    first_lsn: u64,
    count: u32,
    records: &[u8],
    commit_lsn: u64,
    out: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    let (mut head, mut tail) = (
        Vec::with_capacity(RECORDS_HEAD_MAX + 4),
        Vec::with_capacity(9),
    );
    records_frame_parts(
        first_lsn,
        count,
        records.len(),
        commit_lsn,
        &mut head,
        &mut tail,
    )?;
    out.reserve(head.len() + records.len() + tail.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(records);
    out.extend_from_slice(&tail);
    Ok(head.len() + records.len() + tail.len())
}

/// The fields of a `Records` body that precede the record bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordsHead {
    pub first_lsn: u64,
    pub count: u32,
    pub records_len: usize,
    /// Bytes of the body the head occupies.
    pub head_len: usize,
}

/// Parses the head of a `Records` body from its first bytes with the same integer decoding as
/// the generic decoder. `None` if `buf` does not start with a complete `Records` head (the
/// caller then falls back to the generic decoder, which reports the precise error).
pub(crate) fn parse_records_head(buf: &[u8]) -> Option<RecordsHead> {
    let mut at = 0;
    let tag: u32 = take_varint(buf, &mut at)?;
    if tag != RECORDS_TAG {
        return None;
    }
    let first_lsn: u64 = take_varint(buf, &mut at)?;
    let count: u32 = take_varint(buf, &mut at)?;
    let records_len: u64 = take_varint(buf, &mut at)?;
    Some(RecordsHead {
        first_lsn,
        count,
        records_len: usize::try_from(records_len).ok()?,
        head_len: at,
    })
}

/// Parses the tail (`commit_lsn`) of a `Records` body; it must be consumed exactly.
pub(crate) fn parse_records_tail(buf: &[u8]) -> Result<u64, FrameError> {
    let mut at = 0;
    let commit_lsn: u64 = take_varint(buf, &mut at)
        .ok_or_else(|| FrameError::Malformed("records: bad commit_lsn".into()))?;
    if at != buf.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after a records message",
            buf.len() - at
        )));
    }
    Ok(commit_lsn)
}

fn take_varint<T: bincode::Decode<()>>(buf: &[u8], at: &mut usize) -> Option<T> {
    let (v, used) = bincode::decode_from_slice(buf.get(*at..)?, std_config()).ok()?;
    *at += used;
    Some(v)
}

/// Checks a length prefix against `max`.
pub(crate) fn check_len(len: u32, max: u32) -> Result<usize, FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len as usize)
}

/// Sans-IO frame decoder: feed it byte chunks of any size with [`FrameDecoder::push`], take
/// messages out with [`FrameDecoder::next_message`] until it returns `Ok(None)`.
///
/// After an error the decoder is poisoned (the byte stream has no reliable frame boundary any
/// more): every further call returns [`FrameError::Malformed`].
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    max: u32,
    poisoned: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder accepting bodies up to `max` bytes (clamped to [`MAX_FRAME_BYTES`]).
    pub fn new(max: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max: max.min(MAX_FRAME_BYTES),
            poisoned: false,
        }
    }

    /// Buffers `chunk`. Fails early if a complete length prefix exceeds the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), FrameError> {
        self.check_poisoned()?;
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            // Compact: consumed bytes are at least half of the buffer, so this copy is amortised.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
        self.peek_len().map(|_| ())
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        self.check_poisoned()?;
        let Some(len) = self.peek_len()? else {
            return Ok(None);
        };
        let start = self.pos + FRAME_HEADER_LEN;
        let Some(body) = self.buf.get(start..start + len) else {
            return Ok(None);
        };
        let result = decode_frame_body(body);
        self.pos = start + len;
        if result.is_err() {
            self.poisoned = true;
        }
        result.map(Some)
    }

    /// Bytes buffered but not yet returned as messages.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Ends the byte stream: `Ok(())` if it ended on a frame boundary, else
    /// [`FrameError::Truncated`].
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered_bytes() {
            0 => Ok(()),
            received => {
                let expected = match self.peek_len() {
                    Ok(Some(len)) => FRAME_HEADER_LEN + len,
                    _ => FRAME_HEADER_LEN,
                };
                Err(FrameError::Truncated { received, expected })
            }
        }
    }

    fn check_poisoned(&self) -> Result<(), FrameError> {
        if self.poisoned {
            return Err(FrameError::Malformed(
                "decoder used after an earlier framing error".into(),
            ));
        }
        Ok(())
    }

    /// Length of the next body, once its prefix is complete; checked against the limit.
    fn peek_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buf.get(self.pos..self.pos + FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut le = [0u8; FRAME_HEADER_LEN];
        le.copy_from_slice(prefix);
        check_len(u32::from_le_bytes(le), self.max).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_length_prefix_is_rejected_as_empty() {
        let mut d = FrameDecoder::default();
        assert!(matches!(d.push(&[0, 0, 0, 0]), Err(FrameError::Empty)));
    }

    #[test]
    fn finish_reports_truncation_inside_prefix_and_body() {
        let mut frame = Vec::new();
        encode_frame(&Message::Commit { commit_lsn: 1 }, &mut frame).expect("encode");
        let mut d = FrameDecoder::default();
        d.push(&frame[..2]).expect("push");
        assert!(matches!(
            d.finish(),
            Err(FrameError::Truncated {
                received: 2,
                expected: 4
            })
        ));
        d.push(&frame[2..frame.len() - 1]).expect("push");
        assert!(matches!(d.next_message(), Ok(None)));
        let n = frame.len();
        assert!(matches!(
            d.finish(),
            Err(FrameError::Truncated { received, expected }) if received == n - 1 && expected == n
        ));
    }
}
