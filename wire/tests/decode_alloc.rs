//! The body decoder allocates only for what a body holds: a small body claiming a huge string,
//! byte string or sequence is `Malformed` without an allocation of the claimed size; and the
//! decode limit derived from the body length never refuses a valid body.
//!
//! A tracking global allocator records the largest single allocation of the current thread
//! (tests run in parallel threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use walship_wire::frame::{decode_frame_body, encode_frame, FrameDecoder, FrameError};
use walship_wire::message::{
    decode_body, decode_limit_for, EpochEntry, Hello, Message, Position, MAX_DECODED_BYTES,
};

struct TrackingAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-local may be gone while a thread is torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards every call unchanged to the system allocator; only records the requested
// size in a const-initialised thread-local `Cell` (no allocation, no destructor).
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: TrackingAlloc = TrackingAlloc;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_alloc_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

/// A varint of `v` in its 9-byte form (253 + u64 LE), valid for any value.
fn varint_u64(v: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

const CLAIMED: u64 = 30_000_000;

/// Small bodies of this crate's messages, each claiming 30 MB (or 2^40 elements) that are not
/// there.
fn bodies_claiming_more_than_they_hold() -> Vec<(&'static str, Vec<u8>)> {
    // Records: tag 5, first_lsn 1, count 1, byte length 30 MB, commit_lsn 0.
    let mut records = vec![5u8, 1, 1];
    records.extend(varint_u64(CLAIMED));
    records.push(0);
    // Hello: tag 0, version 4 (this build's: another version's undecodable Hello is
    // `UnsupportedVersion`), cluster_id of 30 MB.
    let mut hello_cluster = vec![0u8, 4];
    hello_cluster.extend(varint_u64(CLAIMED));
    hello_cluster.extend_from_slice(b"c");
    // Hello: cluster "c", node "n", incarnation 0, last 0/0/0, commit 0, epoch history of
    // 2^40 entries.
    let mut hello_history = vec![0u8, 4, 1, b'c', 1, b'n', 0, 0, 0, 0, 0];
    hello_history.extend(varint_u64(1 << 40));
    hello_history.extend_from_slice(&[1, 1]);
    // Welcome: tag 1, version 4, primary_id of 30 MB.
    let mut welcome = vec![1u8, 4];
    welcome.extend(varint_u64(CLAIMED));
    // Refuse: tag 2, reason Halted (tag 7), reason text of 30 MB.
    let mut refuse = vec![2u8, 7];
    refuse.extend(varint_u64(CLAIMED));
    refuse.extend_from_slice(b"gap");
    // Refuse: tag 2, reason NotPrimary (tag 4), epoch 3, Some, primary_hint of 30 MB.
    let mut not_primary = vec![2u8, 4, 3, 1];
    not_primary.extend(varint_u64(CLAIMED));
    not_primary.extend_from_slice(b"n3");
    vec![
        ("records bytes", records),
        ("hello cluster_id", hello_cluster),
        ("hello epoch_history", hello_history),
        ("welcome primary_id", welcome),
        ("refuse halted reason", refuse),
        ("refuse not-primary hint", not_primary),
    ]
}

#[test]
fn small_body_claiming_a_30_mb_string_or_byte_string_allocates_no_more_than_the_body() {
    for (what, body) in bodies_claiming_more_than_they_hold() {
        let (r, largest) = largest_alloc_of(|| decode_frame_body(&body));
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{what}: {r:?}");
        // Error text and the like; nothing near the claim.
        assert!(
            largest <= 4096,
            "{what}: a {}-byte body made the decoder allocate {largest} bytes at once",
            body.len()
        );

        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut d = FrameDecoder::default();
        let (r, largest) = largest_alloc_of(|| {
            d.push(&frame)?;
            d.next_message()
        });
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{what}: {r:?}");
        assert!(largest <= 4096, "{what}: FrameDecoder allocated {largest}");
    }
}

#[test]
fn small_body_claiming_a_30_mb_snapshot_chunk_allocates_at_most_its_decode_limit() {
    // SnapshotChunk (tag 9; its byte string is decoded owned by walship-snapshot's serde impl):
    // index 0, crc 0, byte length 30 MB. bincode allocates the claim before the check, so the
    // bound is the decode limit chosen for a body this small (64 KiB), not MAX_DECODED_BYTES.
    let mut body = vec![9u8, 0, 0];
    body.extend(varint_u64(CLAIMED));
    body.extend_from_slice(&[0xAB; 16]);
    let (r, largest) = largest_alloc_of(|| decode_frame_body(&body));
    assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
    assert_eq!(decode_limit_for(body.len()), 64 * 1024);
    assert!(
        largest <= decode_limit_for(body.len()),
        "a {}-byte body made the decoder allocate {largest} bytes at once",
        body.len()
    );
}

#[test]
fn decode_limit_grows_with_the_body_by_factors_of_four_up_to_max_decoded_bytes() {
    let kib = 1024;
    for (body_len, limit) in [
        (0, 64 * kib),
        (1, 64 * kib),
        (4 * kib, 64 * kib),
        (4 * kib + 1, 256 * kib),
        (16 * kib, 256 * kib),
        (16 * kib + 1, 1024 * kib),
        (64 * kib + 1, 4096 * kib),
        (256 * kib + 1, 16384 * kib),
        (1024 * kib, 16384 * kib),
        (1024 * kib + 1, MAX_DECODED_BYTES),
        (usize::MAX, MAX_DECODED_BYTES),
    ] {
        assert_eq!(
            decode_limit_for(body_len),
            limit,
            "body of {body_len} bytes"
        );
        // Allocation bounded by what was received.
        assert!(limit <= body_len.saturating_mul(64).max(64 * kib));
    }
}

/// A `Hello` whose body is exactly `target` bytes, made mostly of epoch entries `{0, 0}`: two
/// body bytes that bincode counts as 16 in-memory bytes, the most a body can claim per byte.
fn hello_of_exactly(target: usize) -> (Message, Vec<u8>) {
    let encode = |entries: usize, pad: usize| {
        let msg = Message::Hello(Hello {
            protocol_version: walship_wire::PROTOCOL_VERSION,
            cluster_id: "c".repeat(pad),
            node_id: "n".into(),
            incarnation: 0,
            last: Position::default(),
            commit_lsn: 0,
            epoch_history: vec![
                EpochEntry {
                    epoch: 0,
                    start_lsn: 0,
                };
                entries
            ],
            highest_epoch_seen: 0,
        });
        let mut frame = Vec::new();
        encode_frame(&msg, &mut frame).expect("encode");
        (msg, frame[4..].to_vec())
    };
    let varint_len = |n: usize| match n {
        0..=250 => 1,
        251..=0xffff => 3,
        _ => 5,
    };
    // Body length = base + extra bytes of the history's length varint + 2 per entry + pad.
    let base = encode(0, 0).1.len();
    let entries = target.saturating_sub(base + 4) / 2;
    let len = base + varint_len(entries) - 1 + 2 * entries;
    assert!(
        len <= target && target - len < 200,
        "pad keeps a 1-byte length"
    );
    encode(entries, target - len)
}

#[test]
fn valid_bodies_of_the_densest_claims_decode_at_every_decode_limit_boundary() {
    let mut boundaries: Vec<usize> = [64usize, 256, 1024, 4096, 16384]
        .iter()
        .map(|kib| kib * 1024 / 16)
        .collect();
    boundaries.push(40);
    for b in boundaries {
        // b: the largest body of its limit; b + 1: the smallest of the next (skipped past
        // 1 MiB, where the next limit is MAX_DECODED_BYTES, to keep the test fast).
        let targets = if b < 1024 * 1024 {
            vec![b, b + 1]
        } else {
            vec![b]
        };
        for target in targets {
            let (msg, body) = hello_of_exactly(target);
            assert_eq!(body.len(), target);
            let decoded = decode_body(&body).unwrap_or_else(|e| {
                panic!(
                    "a valid {target}-byte hello (decode limit {}) was refused: {e}",
                    decode_limit_for(target)
                )
            });
            assert_eq!(decoded, msg);
        }
    }
}
