//! Frames over streams: [`read_frame`] / [`write_frame`] on quinn streams, with the rules of
//! [`crate::frame`] (limit checked on the prefix before allocating; a clean end of stream only
//! on a frame boundary; an end inside a frame is `Truncated`).
//!
//! `Records` frames take a fast path in both directions: the writer sends the record bytes
//! straight from the caller's slice (e.g. the WAL mapping) and the reader reads them straight
//! into the batch's buffer, so a record byte is copied once per side, not three times.

use crate::frame::{
    check_len, decode_frame_body, encode_frame, parse_records_head, parse_records_tail,
    records_frame_parts, FrameError, FRAME_HEADER_LEN, MAX_FRAME_BYTES, RECORDS_HEAD_MAX,
};
use crate::message::{Message, RecordBatch};

/// A source of stream bytes frames are read from. Implemented for `quinn::RecvStream` and for
/// in-memory sources (`&[u8]`, used by tests and simulations).
#[allow(async_fn_in_trait)] // used through generics only, never as `dyn`
pub trait FrameSource {
    /// Reads at least one byte into `buf` (non-empty), `Ok(None)` at the end of the stream.
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, FrameError>;
}

impl FrameSource for quinn::RecvStream {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, FrameError> {
        Ok(self.read(buf).await?)
    }
}

impl FrameSource for &[u8] {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, FrameError> {
        if self.is_empty() {
            return Ok(None);
        }
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(Some(n))
    }
}

/// Fills `buf` completely. `Err(got)` if the stream ended after `got` bytes.
async fn fill<S: FrameSource>(
    src: &mut S,
    buf: &mut [u8],
) -> Result<Result<(), usize>, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read_some(&mut buf[filled..]).await? {
            Some(n) => filled += n,
            None => return Ok(Err(filled)),
        }
    }
    Ok(Ok(()))
}

/// Reads one message from a quinn stream, accepting bodies up to `max` bytes (clamped to
/// [`MAX_FRAME_BYTES`]).
///
/// `Ok(None)`: the peer finished the stream cleanly on a frame boundary. A stream that ends
/// inside a frame is [`FrameError::Truncated`]; a reset or lost connection is
/// [`FrameError::Read`]. Memory for the body is allocated only after its length was checked.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: u32,
) -> Result<Option<Message>, FrameError> {
    read_frame_from(recv, max).await
}

/// [`read_frame`] over any [`FrameSource`].
pub async fn read_frame_from<S: FrameSource>(
    src: &mut S,
    max: u32,
) -> Result<Option<Message>, FrameError> {
    let max = max.min(MAX_FRAME_BYTES);
    let mut prefix = [0u8; FRAME_HEADER_LEN];
    match fill(src, &mut prefix).await? {
        Ok(()) => {}
        Err(0) => return Ok(None),
        Err(received) => {
            return Err(FrameError::Truncated {
                received,
                expected: FRAME_HEADER_LEN,
            })
        }
    }
    let len = check_len(u32::from_le_bytes(prefix), max)?;
    let truncated = |got_of_body: usize| FrameError::Truncated {
        received: FRAME_HEADER_LEN + got_of_body,
        expected: FRAME_HEADER_LEN + len,
    };

    // First bytes of the body: enough to recognise a Records head.
    let mut head = [0u8; RECORDS_HEAD_MAX];
    let head_read = len.min(RECORDS_HEAD_MAX);
    fill(src, &mut head[..head_read])
        .await?
        .map_err(truncated)?;
    let head = &head[..head_read];

    if let Some(h) = parse_records_head(head) {
        // `records_len` is the peer's (up to 2^64 - 1): checked sum, or the fast path would
        // be taken on a wrapped length and allocate the claimed one. Out of range falls
        // through to the generic path, which reports the body as malformed.
        let tail_len = h
            .head_len
            .checked_add(h.records_len)
            .and_then(|n| len.checked_sub(n));
        if let Some(tail_len) = tail_len {
            // Fast path: record bytes go straight into the batch buffer (records_len < len <= max).
            let mut bytes = vec![0u8; h.records_len];
            let mut tail = vec![0u8; tail_len];
            let already = &head[h.head_len..];
            let in_bytes = already.len().min(h.records_len);
            bytes[..in_bytes].copy_from_slice(&already[..in_bytes]);
            let in_tail = already.len() - in_bytes;
            tail[..in_tail].copy_from_slice(&already[in_bytes..]);
            let mut got = head_read;
            fill(src, &mut bytes[in_bytes..])
                .await?
                .map_err(|n| truncated(got + n))?;
            got += h.records_len - in_bytes;
            fill(src, &mut tail[in_tail..])
                .await?
                .map_err(|n| truncated(got + n))?;
            let commit_lsn = parse_records_tail(&tail)?;
            return Ok(Some(Message::Records(RecordBatch {
                first_lsn: h.first_lsn,
                count: h.count,
                bytes,
                commit_lsn,
            })));
        }
    }

    // Generic path: the whole body, then the bincode decoder.
    let mut body = vec![0u8; len];
    body[..head_read].copy_from_slice(head);
    fill(src, &mut body[head_read..])
        .await?
        .map_err(|n| truncated(head_read + n))?;
    decode_frame_body(&body).map(Some)
}

/// Writes one message to `send` (one allocation for the encoded frame; use [`FrameWriter`] to
/// reuse a buffer and to send records without copying them).
pub async fn write_frame(send: &mut quinn::SendStream, msg: &Message) -> Result<(), FrameError> {
    FrameWriter::default().write(send, msg).await
}

/// Writes frames to a quinn stream through reused buffers.
#[derive(Debug, Default)]
pub struct FrameWriter {
    buf: Vec<u8>,
    tail: Vec<u8>,
}

impl FrameWriter {
    /// Encodes `msg` and writes the whole frame to `send`.
    pub async fn write(
        &mut self,
        send: &mut quinn::SendStream,
        msg: &Message,
    ) -> Result<(), FrameError> {
        if let Message::Records(b) = msg {
            return self
                .write_records(send, b.first_lsn, b.count, &b.bytes, b.commit_lsn)
                .await;
        }
        self.buf.clear();
        encode_frame(msg, &mut self.buf)?;
        send.write_all(&self.buf).await?;
        Ok(())
    }

    /// Writes a `Message::Records` frame whose record bytes are `records` (whole stored records,
    /// e.g. a slice of the WAL mapping), without copying them into a `RecordBatch` first.
    /// `records.len()` must be at most [`crate::frame::MAX_BATCH_BYTES`].
    pub async fn write_records(
        &mut self,
        send: &mut quinn::SendStream,
        first_lsn: u64,
        count: u32,
        records: &[u8],
        commit_lsn: u64,
    ) -> Result<(), FrameError> {
        records_frame_parts(
            first_lsn,
            count,
            records.len(),
            commit_lsn,
            &mut self.buf,
            &mut self.tail,
        )?;
        send.write_all(&self.buf).await?;
        send.write_all(records).await?;
        send.write_all(&self.tail).await?;
        Ok(())
    }

    /// [`FrameWriter::write_records`] for record bytes the caller owns: they are handed to
    /// quinn as they are, where `write_records` copies a borrowed slice into quinn's send
    /// buffer first — one copy of every shipped byte less on the primary's runtime (its
    /// catch-up and commit paths are CPU-bound on small machines). Same frame, byte for byte.
    pub async fn write_records_owned(
        &mut self,
        send: &mut quinn::SendStream,
        first_lsn: u64,
        count: u32,
        records: bytes::Bytes,
        commit_lsn: u64,
    ) -> Result<(), FrameError> {
        records_frame_parts(
            first_lsn,
            count,
            records.len(),
            commit_lsn,
            &mut self.buf,
            &mut self.tail,
        )?;
        let mut chunks = [
            bytes::Bytes::copy_from_slice(&self.buf),
            records,
            bytes::Bytes::copy_from_slice(&self.tail),
        ];
        send.write_all_chunks(&mut chunks).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Runs a future over an in-memory source (never pends).
    fn ready<F: Future>(f: F) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(f).poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("in-memory source must never pend"),
        }
    }

    /// A `Records` frame: tag 5, first_lsn 1, count 1, byte length `records_len` as a
    /// 9-byte varint (253 + u64 LE), commit_lsn 0, and no record bytes at all.
    fn records_frame_claiming(records_len: u64) -> Vec<u8> {
        let mut body = vec![5u8, 1, 1, 253];
        body.extend_from_slice(&records_len.to_le_bytes());
        body.push(0);
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn records_frame_with_a_byte_length_near_u64_max_is_malformed_not_a_panic() {
        // head_len is 12: u64::MAX - 8 overflows head_len + records_len (a debug panic);
        // u64::MAX - 3 wraps it to 8 < len, which took the fast path and tried to allocate
        // ~2^64 bytes (a release-mode capacity overflow panic).
        for records_len in [u64::MAX, u64::MAX - 3, u64::MAX - 8, u64::MAX - 11] {
            let frame = records_frame_claiming(records_len);
            let r = ready(read_frame_from(&mut &frame[..], MAX_FRAME_BYTES));
            assert!(
                matches!(r, Err(FrameError::Malformed(_))),
                "byte length {records_len}: {r:?}"
            );
            assert!(matches!(
                decode_frame_body(&frame[FRAME_HEADER_LEN..]),
                Err(FrameError::Malformed(_))
            ));
        }
    }
}
