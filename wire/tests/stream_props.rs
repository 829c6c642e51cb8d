//! Property tests of `read_frame_from` (the reader used on quinn streams) over in-memory sources
//! delivering random chunk sizes, and of the zero-copy `Records` paths: the writer's parts are
//! byte-identical to `encode_frame`, and the reader's fast path agrees with the generic decoder
//! on valid, mutated and random bodies.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use walship_wire::frame::{
    decode_frame_body, encode_frame, encode_records_frame, FrameError, FRAME_HEADER_LEN,
    MAX_FRAME_BYTES,
};
use walship_wire::message::{Message, RecordBatch};
use walship_wire::stream::{read_frame_from, FrameSource};

/// Runs a future that never waits (in-memory sources are always ready).
fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory source must never pend"),
    }
}

/// Delivers `data` in chunks of the given sizes (cycled).
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    i: usize,
}

impl FrameSource for Chunked<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, FrameError> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let size = self.sizes[self.i % self.sizes.len()].max(1);
        self.i += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(Some(n))
    }
}

fn read_all(data: &[u8], sizes: Vec<usize>) -> Result<Vec<Message>, FrameError> {
    let mut src = Chunked { data, sizes, i: 0 };
    let mut out = Vec::new();
    while let Some(m) = ready(read_frame_from(&mut src, MAX_FRAME_BYTES))? {
        out.push(m);
    }
    Ok(out)
}

fn batch() -> impl Strategy<Value = RecordBatch> {
    (
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..600),
        any::<u64>(),
    )
        .prop_map(|(first_lsn, count, bytes, commit_lsn)| RecordBatch {
            first_lsn,
            count,
            bytes,
            commit_lsn,
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        batch().prop_map(Message::Records),
        any::<u64>().prop_map(|commit_lsn| Message::Commit { commit_lsn }),
        any::<u64>().prop_map(|durable_lsn| Message::Receipt { durable_lsn }),
        (any::<u64>(), any::<Option<(u64, u64, u32)>>()).prop_map(|(lsn, p)| {
            Message::ProbeReply {
                lsn,
                position: p.map(|(lsn, epoch, crc)| walship_wire::message::Position {
                    lsn,
                    epoch,
                    crc,
                }),
            }
        }),
    ]
}

fn frame_of(msg: &Message) -> Vec<u8> {
    let mut f = Vec::new();
    encode_frame(msg, &mut f).expect("encode");
    f
}

/// Reader fast path vs generic decoder on one complete frame: same message or both errors.
fn assert_paths_agree(frame: &[u8]) -> Result<(), TestCaseError> {
    let fast = ready(read_frame_from(&mut &frame[..], MAX_FRAME_BYTES));
    let generic = decode_frame_body(&frame[FRAME_HEADER_LEN..]);
    match (fast, generic) {
        (Ok(Some(a)), Ok(b)) => prop_assert_eq!(a, b),
        (Err(FrameError::Malformed(_)), Err(FrameError::Malformed(_))) => {}
        (a, b) => prop_assert!(false, "paths disagree: fast {:?}, generic {:?}", a, b),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn messages_read_back_from_random_chunks_then_clean_end(
        msgs in prop::collection::vec(message(), 1..6),
        sizes in prop::collection::vec(1usize..40, 1..6),
    ) {
        let mut data = Vec::new();
        for m in &msgs {
            data.extend_from_slice(&frame_of(m));
        }
        prop_assert_eq!(read_all(&data, sizes).expect("read"), msgs);
    }

    #[test]
    fn records_frame_parts_are_byte_identical_to_encode_frame(b in batch()) {
        let mut fast = Vec::new();
        encode_records_frame(b.first_lsn, b.count, &b.bytes, b.commit_lsn, &mut fast)
            .expect("encode records");
        prop_assert_eq!(fast, frame_of(&Message::Records(b)));
    }

    #[test]
    fn end_of_stream_inside_any_frame_is_truncated_at_that_byte(
        msg in message(),
        cut in any::<prop::sample::Index>(),
        sizes in prop::collection::vec(1usize..40, 1..4),
    ) {
        let frame = frame_of(&msg);
        let cut = 1 + cut.index(frame.len() - 1);
        let expected = if cut < FRAME_HEADER_LEN { FRAME_HEADER_LEN } else { frame.len() };
        match read_all(&frame[..cut], sizes) {
            Err(FrameError::Truncated { received, expected: e }) => {
                prop_assert_eq!(received, cut);
                prop_assert_eq!(e, expected);
            }
            other => prop_assert!(false, "expected Truncated, got {:?}", other),
        }
    }

    #[test]
    fn fast_path_agrees_with_generic_decoder_on_mutated_records(
        b in batch(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut frame = frame_of(&Message::Records(b));
        for (at, xor) in mutations {
            let i = FRAME_HEADER_LEN + at.index(frame.len() - FRAME_HEADER_LEN);
            frame[i] ^= xor;
        }
        assert_paths_agree(&frame)?;
    }

    #[test]
    fn fast_path_agrees_with_generic_decoder_on_random_records_bodies(
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut frame = ((rest.len() + 1) as u32).to_le_bytes().to_vec();
        frame.push(5); // Records tag
        frame.extend_from_slice(&rest);
        assert_paths_agree(&frame)?;
    }
}

#[test]
fn records_length_claim_beyond_the_body_is_malformed() {
    // Records, first_lsn 1, count 1, claims 200 bytes but the body ends after 3, commit 0.
    let body = [5u8, 1, 1, 200, 9, 9, 9, 0];
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    assert!(matches!(
        ready(read_frame_from(&mut &frame[..], MAX_FRAME_BYTES)),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn records_with_trailing_bytes_after_commit_lsn_are_malformed() {
    let mut frame = frame_of(&Message::Records(RecordBatch {
        first_lsn: 1,
        count: 1,
        bytes: vec![1, 2, 3],
        commit_lsn: 0,
    }));
    frame.push(0);
    let len = (frame.len() - FRAME_HEADER_LEN) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    assert!(matches!(
        ready(read_frame_from(&mut &frame[..], MAX_FRAME_BYTES)),
        Err(FrameError::Malformed(_))
    ));
}
