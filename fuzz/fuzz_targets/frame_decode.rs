//! walship-wire framing: `FrameDecoder` fed in arbitrary chunks, `decode_frame_body`, and
//! the stream reader `read_frame_from` (with its `Records` fast path) over the same bytes.
//!
//! Input: limit selector, chunk sizes, then the byte stream. Checks: no panic; an oversize
//! length prefix is rejected without allocating the body; no single allocation above the
//! decoder's documented bound; the messages (and the first error's kind) do not depend on
//! how the stream is chunked; the stream reader agrees with the sans-IO decoder; every
//! decoded message re-encodes to a frame that decodes to the same message.
#![no_main]

use std::mem::discriminant;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use walship_fuzz::{block_on_ready, with_alloc_bound};
use walship_wire::frame::{
    decode_frame_body, encode_frame, read_frame_from, FrameDecoder, FrameError, FRAME_HEADER_LEN,
    MAX_FRAME_BYTES,
};
use walship_wire::message::Message;

#[derive(Arbitrary, Debug)]
enum Limit {
    Protocol,
    Small(u16),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    limit: Limit,
    chunks: Vec<u16>,
    stream: Vec<u8>,
}

/// What a reader made of a stream: the messages, then how it ended.
#[derive(Debug)]
struct Outcome {
    messages: Vec<Message>,
    end: Result<(), FrameError>,
}

fn same_kind(a: &FrameError, b: &FrameError) -> bool {
    discriminant(a) == discriminant(b)
}

/// Every allocation the sans-IO decoder makes is bounded by what it was given: its buffer,
/// and bincode's up-front allocation, which walship-wire bounds by max(64 KiB, 64 x body)
/// (`decode_limit_for`, since the fix of wire-1).
fn alloc_bound(input_len: usize) -> usize {
    64 * input_len + 128 * 1024
}

fn run_decoder(stream: &[u8], chunks: &[u16], max: u32) -> Outcome {
    let mut d = FrameDecoder::new(max);
    let mut messages = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().copied().cycle();
    let drain = |d: &mut FrameDecoder, messages: &mut Vec<Message>| -> Result<(), FrameError> {
        while let Some(m) = d.next_message()? {
            messages.push(m);
        }
        Ok(())
    };
    while !rest.is_empty() {
        let n = if chunks.is_empty() {
            rest.len()
        } else {
            (usize::from(sizes.next().unwrap_or(1)) % 4096)
                .max(1)
                .min(rest.len())
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let before = d.buffered_bytes();
        if let Err(e) = d.push(chunk) {
            if let FrameError::TooLarge { len, max: m } = e {
                assert!(len > m && m <= max.min(MAX_FRAME_BYTES));
            }
            // A rejected prefix buffered nothing beyond the bytes given.
            assert!(d.buffered_bytes() <= before + n);
            return Outcome {
                messages,
                end: Err(e),
            };
        }
        if let Err(e) = drain(&mut d, &mut messages) {
            // Poisoned: every later call fails too.
            assert!(d.next_message().is_err());
            return Outcome {
                messages,
                end: Err(e),
            };
        }
    }
    Outcome {
        messages,
        end: d.finish(),
    }
}

fn run_stream(stream: &[u8], max: u32) -> Outcome {
    let mut src: &[u8] = stream;
    let mut messages = Vec::new();
    loop {
        match block_on_ready(read_frame_from(&mut src, max)) {
            Ok(Some(m)) => messages.push(m),
            Ok(None) => {
                return Outcome {
                    messages,
                    end: Ok(()),
                }
            }
            Err(e) => {
                return Outcome {
                    messages,
                    end: Err(e),
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let max = match input.limit {
        Limit::Protocol => MAX_FRAME_BYTES,
        Limit::Small(n) => u32::from(n),
        Limit::Any(n) => n,
    };
    let stream = &input.stream[..];
    let bound = alloc_bound(stream.len());

    let whole = with_alloc_bound("FrameDecoder (one chunk)", bound, || {
        run_decoder(stream, &[], max)
    });
    let chunked = with_alloc_bound("FrameDecoder (chunks)", bound, || {
        run_decoder(stream, &input.chunks, max)
    });
    assert_eq!(
        whole.messages, chunked.messages,
        "chunking changed the messages"
    );
    match (&whole.end, &chunked.end) {
        (Ok(()), Ok(())) => {}
        (Err(a), Err(b)) => assert!(same_kind(a, b), "chunking changed the error: {a} vs {b}"),
        (a, b) => panic!("chunking changed how the stream ends: {a:?} vs {b:?}"),
    }

    // The stream reader allocates a frame's body (at most the limit) once its prefix passed.
    let streamed = with_alloc_bound(
        "read_frame_from",
        bound + max.min(MAX_FRAME_BYTES) as usize,
        || run_stream(stream, max),
    );
    assert_eq!(
        streamed.messages, whole.messages,
        "stream reader and FrameDecoder disagree"
    );
    match (&whole.end, &streamed.end) {
        (Ok(()), Ok(())) => {}
        (
            Err(FrameError::Truncated {
                received: a,
                expected: b,
            }),
            Err(FrameError::Truncated {
                received: c,
                expected: d,
            }),
        ) => {
            assert_eq!((a, b), (c, d), "truncation reported differently");
        }
        (Err(a), Err(b)) => assert!(
            same_kind(a, b),
            "stream reader and FrameDecoder end differently: {a} vs {b}"
        ),
        (a, b) => panic!("stream reader and FrameDecoder end differently: {a:?} vs {b:?}"),
    }
    if let Err(e) = &whole.end {
        // A network ending is never a protocol violation and vice versa.
        assert_eq!(
            e.is_session_end(),
            matches!(e, FrameError::Truncated { .. })
        );
    }

    // Whatever decodes re-encodes to a frame that decodes to the same message.
    for m in &whole.messages {
        let mut frame = Vec::new();
        let n = encode_frame(m, &mut frame).expect("a decoded message re-encodes");
        assert_eq!(n, frame.len());
        let body = &frame[FRAME_HEADER_LEN..];
        assert!(body.len() <= MAX_FRAME_BYTES as usize);
        assert_eq!(
            &decode_frame_body(body).expect("re-encoded body decodes"),
            m
        );
    }

    // The body decoder alone on the raw bytes (no prefix): no panic, bounded allocation.
    with_alloc_bound("decode_frame_body", bound, || {
        let _ = decode_frame_body(stream);
    });
});
