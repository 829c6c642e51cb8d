//! Property tests for every decoder of untrusted bytes: the CI equivalents of the
//! cargo-fuzz targets in `fuzz/` (which run the same properties for minutes under
//! AddressSanitizer; see `fuzz/README.md`).
//!
//! Decoders: the WAL record (`decode_record`), the WAL directory scan (`Wal::open`,
//! `inspect`) over SimStorage, the wire framing (`FrameDecoder`, `decode_frame_body`,
//! `read_frame_from`), state files (`decode_state_file`, `read_state_file`, commit and
//! epochs bodies), the halt record (`read_halt`) and snapshot files (`SnapshotHeader`,
//! `SnapshotTrailer`, `SnapshotReader`). None may panic, allocate a length it
//! read instead of one it holds, or accept damaged bytes as valid.
//!
//! Cases per property: `WALSHIP_DECODER_CASES` (default 256); the seed is fixed so CI runs
//! are reproducible.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use walship_replica::halt::{read_halt, write_halt, HaltReason, HaltRecord, HALT_FILE};
use walship_snapshot::{Limits, SnapshotHeader, SnapshotReader, SnapshotTrailer, SnapshotWriter};
use walship_wal::control::ControlRecord;
use walship_wal::record::{
    compute_crc, decode_record, encode_record, RecordError, RecordHeader, OFF_PAYLOAD_LEN,
};
use walship_wal::record::{encode_record_with_flags, FLAG_CONTROL};
use walship_wal::segment::{segment_file_name, SegmentHeader};
use walship_wal::sim::SimStorage;
use walship_wal::state::{
    decode_state_file, encode_state_file, read_state_file, EpochEntry, EpochHistory, NodeDir,
    StateError, COMMIT_FILE, EPOCHS_FILE, STATE_HEADER_LEN,
};
use walship_wal::{
    inspect, Mapping, OpenReport, Position, Storage, StorageFile, Wal, WalError, WalOptions,
};
use walship_wire::frame::{
    decode_frame_body, encode_frame, read_frame_from, FrameDecoder, FrameError, MAX_FRAME_BYTES,
};
use walship_wire::message::{Message, RecordBatch};

// ---------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by THIS thread (tests run in
// parallel threads, so a global counter would see the others' allocations).

struct TrackingAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-local may be gone while a thread is torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards every call to `System` unchanged; only records the requested size in a
// const-initialised thread-local `Cell` (no allocation, no destructor).
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
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

/// Polls a future that never waits (frame sources over memory are always ready).
fn block_on_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory frame source returned Pending"),
    }
}

fn cases() -> u32 {
    std::env::var("WALSHIP_DECODER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config(seed: u64) -> Config {
    Config {
        cases: cases(),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

// ---------------------------------------------------------------------------------------
// WAL record

/// Bytes that are often almost a record: a valid record with a few bytes changed, or noise.
fn record_like() -> impl Strategy<Value = Vec<u8>> {
    let valid = (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(lsn, epoch, prev, payload)| {
            let mut v = Vec::new();
            encode_record(lsn, epoch, prev, &payload, &mut v);
            v
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        (
            valid,
            prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(mut v, edits, tail)| {
                for (at, b) in edits {
                    let n = v.len();
                    v[at % n] = b;
                }
                v.extend_from_slice(&tail);
                v
            }),
    ]
}

proptest! {
    #![proptest_config(config(0x7ec04d))]

    /// decode_record never panics, never allocates, and every outcome states facts true
    /// of the buffer; an accepted record is its fields' canonical encoding.
    #[test]
    fn record_decode_of_any_bytes_is_total_and_exact(buf in record_like(), max in prop_oneof![any::<u32>(), 0u32..200]) {
        let (r, largest) = largest_alloc_of(|| decode_record(&buf, max));
        prop_assert_eq!(largest, 0, "decode_record allocated");
        let h = RecordHeader::parse(&buf);
        match r {
            Ok(v) => {
                let h = h.ok_or_else(|| fail("accepted less than a header"))?;
                prop_assert!(h.payload_len <= max);
                prop_assert!(h.flags == 0 || h.flags == FLAG_CONTROL);
                prop_assert_eq!(v.bytes(), &buf[..h.record_len()]);
                if h.flags == FLAG_CONTROL {
                    // Only a well-formed body of the header's epoch is accepted.
                    let c = ControlRecord::decode(v.payload()).map_err(|e| fail(e.to_string()))?;
                    prop_assert_eq!(c.epoch(), v.epoch());
                }
                let mut again = Vec::new();
                encode_record_with_flags(v.lsn(), v.epoch(), v.prev_crc(), h.flags, v.payload(), &mut again);
                prop_assert_eq!(&again[..], v.bytes());
            }
            Err(RecordError::Truncated { need, have }) => {
                prop_assert_eq!(have, buf.len());
                prop_assert!(need > have);
                if let Some(h) = h {
                    prop_assert!(h.payload_len <= max);
                    prop_assert_eq!(need, h.record_len());
                }
            }
            Err(RecordError::TooLarge { len, .. }) => prop_assert!(len > max),
            Err(RecordError::Checksum { stored, computed }) => {
                let h = h.ok_or_else(|| fail("checksum without a header"))?;
                prop_assert_eq!(stored, h.crc);
                prop_assert_eq!(computed, compute_crc(&buf[..h.record_len()]));
                prop_assert_ne!(stored, computed);
            }
            Err(RecordError::BadFlags { found }) => prop_assert_ne!(found & !FLAG_CONTROL, 0),
            Err(RecordError::BadControl { .. }) => {
                let h = h.ok_or_else(|| fail("bad control body without a header"))?;
                prop_assert_eq!(h.flags, FLAG_CONTROL);
            }
        }
    }

    /// crc32c detects every error of at most 3 bits in a record of any length (Hamming
    /// distance 4 up to 2^31 bits), and every burst within 32 bits: such damage is never
    /// accepted, wherever it lands (the length field excepted: it changes which bytes are
    /// covered, tested below).
    #[test]
    fn record_with_up_to_3_flipped_bits_or_a_short_burst_is_rejected(
        lsn: u64, epoch: u64, prev: u32,
        payload in prop::collection::vec(any::<u8>(), 0..600),
        bits in prop::collection::vec(any::<usize>(), 1..=3),
        burst in prop::option::of((any::<usize>(), 1u32..=u32::MAX)),
    ) {
        let mut rec = Vec::new();
        encode_record(lsn, epoch, prev, &payload, &mut rec);
        let mut damaged = rec.clone();
        let covered: Vec<usize> = (0..rec.len())
            .filter(|i| !(OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 4).contains(i))
            .collect();
        match burst {
            None => {
                for b in bits {
                    let byte = covered[(b / 8) % covered.len()];
                    damaged[byte] ^= 1 << (b % 8);
                }
            }
            Some((at, pattern)) => {
                // A burst of up to 32 bits inside the crc-covered bytes after the length.
                let start = OFF_PAYLOAD_LEN + 4 + at % (rec.len() - OFF_PAYLOAD_LEN - 4 - 3).max(1);
                let end = (start + 4).min(rec.len());
                for (i, byte) in damaged[start..end].iter_mut().enumerate() {
                    *byte ^= pattern.to_le_bytes()[i];
                }
            }
        }
        prop_assume!(damaged != rec);
        let r = decode_record(&damaged, u32::MAX);
        prop_assert!(r.is_err(), "damaged record accepted: {:?}", r.map(|v| v.position()));
    }

    /// Any damage at all (length field, truncation, insertion, removal, appended bytes):
    /// the only record ever accepted is the original one, or one whose crc field was
    /// rewritten to match (a forgery, not an accident).
    #[test]
    fn damaged_record_is_never_accepted_with_other_content_under_its_crc(
        lsn: u64, epoch: u64, prev: u32,
        payload in prop::collection::vec(any::<u8>(), 0..200),
        edits in prop::collection::vec((0u8..5, any::<usize>(), any::<u32>()), 1..4),
    ) {
        let mut rec = Vec::new();
        let pos = encode_record(lsn, epoch, prev, &payload, &mut rec);
        let mut d = rec.clone();
        for (kind, at, v) in edits {
            let n = d.len();
            match kind {
                0 if n > 0 => d[at % n] ^= (v as u8).max(1),
                1 if n >= 4 => {
                    // Aim at the u32 fields (payload_len, flags) half of the time.
                    let at = if v % 2 == 0 { OFF_PAYLOAD_LEN } else { at % (n - 3) };
                    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                2 if n > 0 => d.truncate(at % n),
                3 if n > 0 => { d.remove(at % n); }
                _ => d.insert(at % (n + 1), v as u8),
            }
        }
        let intact = d.len() >= rec.len() && d[..rec.len()] == rec[..];
        match decode_record(&d, u32::MAX) {
            Ok(v) if v.bytes() == &rec[..] => prop_assert!(intact),
            Ok(v) => prop_assert_ne!(v.crc(), pos.crc, "the crc did not catch the damage"),
            Err(e) => prop_assert!(!intact, "intact record rejected: {}", e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// WAL directory scan

#[derive(Clone, Debug)]
enum FileDamage {
    Flip(usize),
    Truncate(usize),
    Zero(usize, usize),
    AppendZeros(usize),
    AppendBytes(Vec<u8>),
    Put32(usize, u32),
}

fn file_damage() -> impl Strategy<Value = FileDamage> {
    prop_oneof![
        any::<usize>().prop_map(FileDamage::Flip),
        any::<usize>().prop_map(FileDamage::Truncate),
        (any::<usize>(), 1usize..200).prop_map(|(a, b)| FileDamage::Zero(a, b)),
        (1usize..300).prop_map(FileDamage::AppendZeros),
        prop::collection::vec(any::<u8>(), 1..80).prop_map(FileDamage::AppendBytes),
        (
            any::<usize>(),
            prop_oneof![any::<u32>(), Just(u32::MAX), Just(4 << 20), Just(0)]
        )
            .prop_map(|(a, v)| FileDamage::Put32(a, v)),
    ]
}

#[derive(Clone, Debug)]
struct SegPlan {
    /// Payload lengths of the records in this segment.
    records: Vec<u8>,
    /// Damage to the segment file (applied to the last segment mostly; any segment may get it).
    damage: Vec<FileDamage>,
    /// The name disagrees with the header.
    misnamed: bool,
}

fn seg_plan() -> impl Strategy<Value = SegPlan> {
    (
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(file_damage(), 0..3),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(records, damage, misnamed)| SegPlan {
            records,
            damage,
            misnamed,
        })
}

fn apply_damage(bytes: &mut Vec<u8>, d: &FileDamage) {
    let n = bytes.len();
    match d {
        FileDamage::Flip(b) if n > 0 => bytes[(b / 8) % n] ^= 1 << (b % 8),
        FileDamage::Truncate(l) if n > 0 => bytes.truncate(l % n),
        FileDamage::Zero(a, l) if n > 0 => {
            let from = a % n;
            let to = (from + l).min(n);
            bytes[from..to].fill(0);
        }
        FileDamage::AppendZeros(l) => bytes.resize(n + l, 0),
        FileDamage::AppendBytes(b) => bytes.extend_from_slice(b),
        FileDamage::Put32(a, v) if n >= 4 => {
            let at = a % (n - 3);
            bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => {}
    }
}

fn put_file(s: &SimStorage, path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let f = s.open(path, true).map_err(fail)?;
    f.set_len(0).map_err(fail)?;
    f.write_at(0, bytes).map_err(fail)?;
    f.sync_data().map_err(fail)
}

/// Writes the planned segments (chained, then damaged) and returns the total bytes.
fn write_segments(
    s: &SimStorage,
    dir: &Path,
    start: Position,
    plans: &[SegPlan],
) -> Result<usize, TestCaseError> {
    let mut cur = start;
    let mut total = 0;
    for p in plans {
        let header = SegmentHeader {
            first_lsn: cur.lsn + 1,
            generation: 1,
            created_epoch: 1,
            prev: cur,
        };
        let mut bytes = header.encode().to_vec();
        for &len in &p.records {
            cur = encode_record(
                cur.lsn + 1,
                cur.epoch,
                cur.crc,
                &vec![len; usize::from(len)],
                &mut bytes,
            );
        }
        for d in &p.damage {
            apply_damage(&mut bytes, d);
        }
        let name = segment_file_name(if p.misnamed {
            header.first_lsn + 1
        } else {
            header.first_lsn
        });
        total += bytes.len();
        put_file(s, &dir.join(name), &bytes)?;
    }
    Ok(total)
}

fn check_wal_open(
    start: Position,
    plans: &[SegPlan],
    max_record_bytes: u32,
) -> Result<(), TestCaseError> {
    let s = SimStorage::new(1);
    let dir = Path::new("/node/wal");
    s.create_dir_all(dir).map_err(fail)?;
    let total = write_segments(&s, dir, start, plans)?;
    let opts = WalOptions {
        segment_size_bytes: 2048,
        max_record_bytes,
        epoch: 1,
    };
    let bound = 2 * total + 64 * 1024;

    let (ins, a1) = largest_alloc_of(|| inspect(&s, dir, max_record_bytes));
    let (opened, a2) = largest_alloc_of(|| Wal::open(s.clone(), dir, opts));
    prop_assert!(
        a1.max(a2) <= bound,
        "scan allocated {} bytes at once for {} bytes of files",
        a1.max(a2),
        total
    );
    let (wal, report) = match (ins, opened) {
        (Err(WalError::Corruption(a)), Err(WalError::Corruption(b))) => {
            prop_assert_eq!(&a, &b);
            let again = Wal::open(s.clone(), dir, opts);
            prop_assert!(
                matches!(&again, Err(WalError::Corruption(c)) if *c == b),
                "corruption not stable"
            );
            return Ok(());
        }
        (Ok(ins), Ok((wal, report))) => {
            let want = match ins.torn_tail.clone() {
                Some((segment, offset, bytes_cut)) => OpenReport::TornTailCut {
                    segment,
                    offset,
                    bytes_cut,
                    last: ins.last,
                },
                None if ins.last == Position::ZERO => OpenReport::Empty,
                None => OpenReport::Clean { last: ins.last },
            };
            prop_assert_eq!(&report, &want);
            (wal, report)
        }
        (i, o) => {
            return Err(fail(format!(
                "inspect {:?} vs open {:?}",
                i.map(|x| x.last),
                o.map(|(_, r)| r)
            )))
        }
    };
    let last = wal.last();
    let base = wal.base();
    let mut reader = wal.reader(base.lsn + 1).map_err(fail)?;
    let mut prev = base;
    while let Some(r) = reader.next_record() {
        let rec = r.map_err(fail)?;
        prop_assert_eq!(rec.view().lsn(), prev.lsn + 1);
        prop_assert_eq!(rec.view().prev_crc(), prev.crc);
        prev = rec.view().position();
    }
    prop_assert_eq!(
        prev,
        last,
        "reader did not end at last() (report {:?})",
        report
    );
    drop(wal);
    let (mut wal, again) = Wal::open(s.clone(), dir, opts).map_err(fail)?;
    let want = if last == Position::ZERO {
        OpenReport::Empty
    } else {
        OpenReport::Clean { last }
    };
    prop_assert_eq!(again, want, "reopen not idempotent");
    let lsn = wal.append(b"after recovery").map_err(fail)?;
    prop_assert_eq!(lsn, last.lsn + 1);
    wal.sync().map_err(fail)?;
    let new_last = wal.last();
    drop(wal);
    let (_, after) = Wal::open(s, dir, opts).map_err(fail)?;
    prop_assert_eq!(after, OpenReport::Clean { last: new_last });
    Ok(())
}

proptest! {
    #![proptest_config(config(0x5ca17))]

    /// Wal::open over damaged segment files: Empty/Clean/TornTailCut or Corruption, exactly
    /// as inspect predicts; never a claimed length allocated; what opens reads back, reopens
    /// Clean and takes an append.
    #[test]
    fn wal_open_of_damaged_segments_is_clean_torn_or_corruption_never_a_panic(
        start_lsn in prop_oneof![Just(0u64), 0u64..1_000_000],
        plans in prop::collection::vec(seg_plan(), 1..4),
        small_max in prop::option::of(0u32..300),
    ) {
        let start = if start_lsn == 0 { Position::ZERO } else { Position { lsn: start_lsn, epoch: 2, crc: 0xabcd } };
        check_wal_open(start, &plans, small_max.unwrap_or(4 << 20))?;
    }
}

// ---------------------------------------------------------------------------------------
// Wire framing

#[derive(Debug)]
struct Outcome {
    messages: Vec<Message>,
    end: Result<(), FrameError>,
}

fn decode_chunked(stream: &[u8], chunks: &[usize], max: u32) -> Outcome {
    let mut d = FrameDecoder::new(max);
    let mut messages = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().copied().cycle();
    while !rest.is_empty() {
        let n = if chunks.is_empty() {
            rest.len()
        } else {
            sizes.next().unwrap_or(1).clamp(1, rest.len())
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = d.push(chunk) {
            return Outcome {
                messages,
                end: Err(e),
            };
        }
        loop {
            match d.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        messages,
                        end: Err(e),
                    }
                }
            }
        }
    }
    Outcome {
        messages,
        end: d.finish(),
    }
}

fn read_stream(stream: &[u8], max: u32) -> Outcome {
    let mut src = stream;
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

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<u64>().prop_map(|lsn| Message::Probe { lsn }),
        any::<u64>().prop_map(|durable_lsn| Message::Receipt { durable_lsn }),
        any::<u64>().prop_map(|commit_lsn| Message::Commit { commit_lsn }),
        (
            any::<u64>(),
            prop::option::of((any::<u64>(), any::<u64>(), any::<u32>()))
        )
            .prop_map(|(lsn, p)| Message::ProbeReply {
                lsn,
                position: p.map(|(lsn, epoch, crc)| Position { lsn, epoch, crc })
            }),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..100),
            any::<u64>()
        )
            .prop_map(|(first_lsn, count, bytes, commit_lsn)| Message::Records(
                RecordBatch {
                    first_lsn,
                    count,
                    bytes,
                    commit_lsn
                }
            )),
    ]
}

/// Streams of valid frames with some bytes changed, cut or added, or plain noise.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    let frames = prop::collection::vec(message(), 0..4).prop_map(|ms| {
        let mut out = Vec::new();
        for m in &ms {
            encode_frame(m, &mut out).expect("encode a small message");
        }
        out
    });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (
            frames,
            prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            any::<usize>(),
            prop::collection::vec(any::<u8>(), 0..6)
        )
            .prop_map(|(mut v, edits, cut, tail)| {
                for (at, b) in edits {
                    if !v.is_empty() {
                        let n = v.len();
                        v[at % n] = b;
                    }
                }
                if cut % 4 == 0 && !v.is_empty() {
                    v.truncate(cut % v.len());
                }
                v.extend_from_slice(&tail);
                v
            }),
    ]
}

fn same_end(a: &Result<(), FrameError>, b: &Result<(), FrameError>) -> bool {
    match (a, b) {
        (Ok(()), Ok(())) => true,
        (
            Err(FrameError::Truncated {
                received: r1,
                expected: e1,
            }),
            Err(FrameError::Truncated {
                received: r2,
                expected: e2,
            }),
        ) => (r1, e1) == (r2, e2),
        (Err(x), Err(y)) => std::mem::discriminant(x) == std::mem::discriminant(y),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config(0xf4a3e))]

    /// The frame decoder gives the same messages and the same ending however the stream is
    /// chunked, agrees with the stream reader (and its Records fast path), re-encodes what
    /// it decodes, and allocates no more than what it was given: the decoder's buffer, and
    /// bincode's up-front allocation bounded by `decode_limit_for(body)` <= max(64 KiB,
    /// 64 x body) (regression wire-1 below, fixed); the stream reader also allocates a
    /// frame's body once its prefix passed the limit.
    #[test]
    fn frame_decoding_is_chunking_independent_and_agrees_with_the_stream_reader(
        stream in frame_stream(),
        chunks in prop::collection::vec(1usize..20, 0..6),
        max in prop_oneof![Just(MAX_FRAME_BYTES), 0u32..200, any::<u32>()],
    ) {
        let bound = 64 * stream.len() + 64 * 1024;
        let reader_bound = bound + MAX_FRAME_BYTES as usize;
        let (whole, a1) = largest_alloc_of(|| decode_chunked(&stream, &[], max));
        let (chunked, a2) = largest_alloc_of(|| decode_chunked(&stream, &chunks, max));
        let (streamed, a3) = largest_alloc_of(|| read_stream(&stream, max));
        prop_assert!(a1.max(a2) <= bound);
        prop_assert!(a3 <= reader_bound);
        prop_assert_eq!(&whole.messages, &chunked.messages);
        prop_assert!(same_end(&whole.end, &chunked.end), "{:?} vs {:?}", whole.end, chunked.end);
        prop_assert_eq!(&whole.messages, &streamed.messages);
        prop_assert!(same_end(&whole.end, &streamed.end), "{:?} vs {:?}", whole.end, streamed.end);
        for m in &whole.messages {
            let mut f = Vec::new();
            encode_frame(m, &mut f).map_err(fail)?;
            prop_assert_eq!(&decode_frame_body(&f[4..]).map_err(fail)?, m);
        }
    }

    /// A length prefix above the limit is refused at once, before any body bytes arrive and
    /// without allocating anything near the announced length.
    #[test]
    fn oversize_frame_prefix_is_rejected_without_allocating_the_body(
        max in prop_oneof![Just(MAX_FRAME_BYTES), 0u32..100_000],
        excess in 1u32..=u32::MAX,
    ) {
        let len = max.saturating_add(excess).max(max + 1);
        let prefix = len.to_le_bytes();
        let mut d = FrameDecoder::new(max);
        let (r, largest) = largest_alloc_of(|| d.push(&prefix));
        prop_assert!(matches!(r, Err(FrameError::TooLarge { len: l, max: m }) if l == len && m == max), "{:?}", r);
        prop_assert!(largest <= 64, "push allocated {} bytes for a 4-byte prefix", largest);
        let (r, largest) = largest_alloc_of(|| read_stream(&prefix, max));
        prop_assert!(matches!(r.end, Err(FrameError::TooLarge { .. })), "{:?}", r.end);
        prop_assert!(largest <= 64, "read_frame_from allocated {} bytes for a 4-byte prefix", largest);
    }
}

/// Regression, wire-2 (found by fuzzing, fixed in walship-wire c9c0df8): a `Records` frame
/// whose byte-string length is near u64::MAX made the stream reader's fast path overflow
/// `head_len + records_len` (a panic in debug builds, an attempted allocation of ~2^64
/// bytes in release) instead of returning `Malformed` as the FrameDecoder does.
#[test]
fn records_frame_with_a_byte_length_near_u64_max_is_malformed_not_a_panic() {
    // body: tag 5, first_lsn 1, count 1, byte length u64::MAX - 8 (varint 253 + 8 bytes), commit 0.
    let mut body = vec![5u8, 1, 1, 253];
    body.extend_from_slice(&(u64::MAX - 8).to_le_bytes());
    body.push(0);
    let mut stream = (body.len() as u32).to_le_bytes().to_vec();
    stream.extend_from_slice(&body);
    let whole = decode_chunked(&stream, &[], MAX_FRAME_BYTES);
    assert!(
        matches!(whole.end, Err(FrameError::Malformed(_))),
        "{:?}",
        whole.end
    );
    let streamed = read_stream(&stream, MAX_FRAME_BYTES);
    assert!(
        matches!(streamed.end, Err(FrameError::Malformed(_))),
        "{:?}",
        streamed.end
    );
}

// ---------------------------------------------------------------------------------------
// State files and the halt record

fn node() -> Result<(SimStorage, NodeDir<SimStorage>), TestCaseError> {
    let s = SimStorage::new(3);
    let n = NodeDir::open(s.clone(), Path::new("/n")).map_err(fail)?;
    Ok((s, n))
}

/// A state file: raw noise, a valid file around an arbitrary or JSON-ish body, possibly
/// with one bit of it flipped.
fn state_file() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        any::<u64>().prop_map(|c| format!("{{\"commit_lsn\":{c}}}").into_bytes()),
        prop::collection::vec((any::<u64>(), any::<u64>()), 0..4).prop_map(|es| {
            let es: Vec<String> = es
                .iter()
                .map(|(e, l)| format!("{{\"epoch\":{e},\"start_lsn\":{l}}}"))
                .collect();
            format!("{{\"entries\":[{}]}}", es.join(",")).into_bytes()
        }),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (body, prop::option::of(any::<usize>())).prop_map(|(b, flip)| {
            let mut f = encode_state_file(Path::new("x"), &b).expect("small body");
            if let Some(bit) = flip {
                let n = f.len();
                f[(bit / 8) % n] ^= 1 << (bit % 8);
            }
            f
        }),
    ]
}

fn halt_record() -> impl Strategy<Value = HaltRecord> {
    (
        0..HaltReason::ALL.len(),
        any::<u64>(),
        any::<u64>(),
        ".{0,12}",
        ".{0,12}",
        "[a-z0-9-]{0,8}",
        any::<u64>(),
        ".{0,20}",
    )
        .prop_map(
            |(r, lsn, epoch, expected, found, peer, at_unix_ms, detail)| HaltRecord {
                reason: HaltReason::ALL[r],
                lsn,
                epoch,
                expected,
                found,
                peer,
                at_unix_ms,
                detail,
            },
        )
}

proptest! {
    #![proptest_config(config(0x57a7e))]

    /// decode_state_file accepts exactly canonical files, never allocates, and agrees with
    /// read_state_file; commit and epochs bodies that parse write back and read back equal,
    /// and a parsed epoch history is valid.
    #[test]
    fn state_file_decoding_accepts_only_canonical_files(file in state_file()) {
        let path = PathBuf::from("/n/state/commit");
        let (decoded, largest) = largest_alloc_of(|| decode_state_file(&path, &file).map(<[u8]>::len));
        // Errors name the file (a PathBuf); nothing may come near a claimed body_len.
        prop_assert!(largest <= 4096, "decode_state_file allocated {} bytes", largest);
        if decoded.is_ok() {
            prop_assert_eq!(encode_state_file(&path, &file[STATE_HEADER_LEN..]).map_err(fail)?, file.clone());
        }
        let (s, n) = node()?;
        put_file(&s, &path, &file)?;
        put_file(&s, &n.state_dir().join(EPOCHS_FILE), &file)?;
        let (read, largest) = largest_alloc_of(|| read_state_file(&s, n.state_dir(), COMMIT_FILE));
        prop_assert!(largest <= 2 * file.len() + 1024);
        match (&decoded, &read) {
            (Ok(_), Ok(Some(b))) => prop_assert_eq!(&b[..], &file[STATE_HEADER_LEN..]),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => return Err(fail(format!("{a:?} vs {b:?}"))),
        }
        if let Ok(c) = n.commit_lsn() {
            n.set_commit_lsn(c).map_err(fail)?;
            prop_assert_eq!(n.commit_lsn().map_err(fail)?, c);
        }
        match n.epochs() {
            Ok(h) => {
                prop_assert!(h.validate().is_ok());
                n.set_epochs(&h).map_err(fail)?;
                prop_assert_eq!(n.epochs().map_err(fail)?, h);
            }
            Err(StateError::InvalidEpochs { .. } | StateError::Json { .. }) => prop_assert!(decoded.is_ok()),
            Err(_) => prop_assert!(decoded.is_err()),
        }
    }

    /// A halt file survives write/read unchanged; with 1 to 3 bits flipped anywhere it is
    /// an error, never "not halted" and never a different record.
    #[test]
    fn halt_file_round_trips_and_any_3_bit_damage_is_an_error(
        rec in halt_record(),
        bits in prop::collection::vec(any::<usize>(), 0..=3),
    ) {
        let (s, n) = node()?;
        write_halt(&s, n.state_dir(), &rec).map_err(fail)?;
        prop_assert_eq!(read_halt(&s, n.state_dir()).map_err(fail)?, Some(rec.clone()));
        let path = n.state_dir().join(HALT_FILE);
        let mut bytes = s.contents(&path).map_err(fail)?;
        let original = bytes.clone();
        for b in bits {
            let len = bytes.len();
            bytes[(b / 8) % len] ^= 1 << (b % 8);
        }
        put_file(&s, &path, &bytes)?;
        let (r, largest) = largest_alloc_of(|| read_halt(&s, n.state_dir()));
        prop_assert!(largest <= 2 * bytes.len() + 1024);
        if bytes == original {
            prop_assert_eq!(r.map_err(fail)?, Some(rec));
        } else {
            prop_assert!(r.is_err(), "damaged halt file read as {:?}", r);
        }
    }

    /// Arbitrary bodies under a valid header: read_halt never panics and never answers
    /// "not halted" for a present file.
    #[test]
    fn halt_file_with_any_body_is_a_record_or_an_error(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        halt_record().prop_map(|r| serde_json::to_vec(&r).expect("json")).prop_flat_map(|j| {
            let n = j.len();
            (Just(j), 0..n, any::<u8>())
        }).prop_map(|(mut j, at, b)| { j[at] = b; j }),
    ]) {
        let (s, n) = node()?;
        put_file(&s, &n.state_dir().join(HALT_FILE), &encode_state_file(Path::new("halt"), &body).map_err(fail)?)?;
        match read_halt(&s, n.state_dir()) {
            Ok(Some(r)) => {
                write_halt(&s, n.state_dir(), &r).map_err(fail)?;
                prop_assert_eq!(read_halt(&s, n.state_dir()).map_err(fail)?, Some(r));
            }
            Ok(None) => return Err(fail("present halt file read as not halted")),
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Snapshot files

fn written_snapshot(chunk_size: u32, payload: &[u8], boundary: Position) -> Vec<u8> {
    let s = SimStorage::new(4);
    let path = Path::new("/snap");
    let file = s.open(path, true).expect("sim open");
    let mut w = SnapshotWriter::new(file, path, chunk_size, &Limits::default()).expect("writer");
    w.write_payload(payload).expect("payload");
    w.finish(boundary).expect("finish");
    s.contents(path).expect("sim contents")
}

/// Opens, verifies and reads the payload; `Some((payload, boundary))` only if all three succeed.
fn read_snapshot(
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<u8>, Position)>, TestCaseError> {
    let Ok(r) = SnapshotReader::open(Mapping::from_vec(bytes.to_vec()), limits, None) else {
        return Ok(None);
    };
    let verified = r.verify();
    let mut out = Vec::new();
    let read = r.payload_reader().read_to_end(&mut out);
    match (verified, read) {
        (Ok(()), Ok(n)) => {
            prop_assert_eq!(n as u64, r.header().total_len);
            Ok(Some((out, r.boundary())))
        }
        (Err(_), Err(_)) => Ok(None),
        (v, rd) => Err(fail(format!("verify {v:?} but payload read {rd:?}"))),
    }
}

proptest! {
    #![proptest_config(config(0x5a7))]

    /// A written snapshot reads back its payload and boundary; with 1 to 3 bits flipped, or
    /// cut, or extended, it never opens and verifies.
    #[test]
    fn snapshot_reads_back_and_any_small_damage_is_rejected(
        chunk_size in 1u32..300,
        payload in prop::collection::vec(any::<u8>(), 0..1500),
        boundary in (any::<u64>(), any::<u64>(), any::<u32>()),
        bits in prop::collection::vec(any::<usize>(), 1..=3),
        cut in prop::option::weighted(0.2, any::<usize>()),
    ) {
        let boundary = Position { lsn: boundary.0, epoch: boundary.1, crc: boundary.2 };
        let clean = written_snapshot(chunk_size, &payload, boundary);
        prop_assert_eq!(read_snapshot(&clean, &Limits::default())?, Some((payload.clone(), boundary)));
        let mut damaged = clean.clone();
        match cut {
            Some(c) if c % 2 == 0 => damaged.truncate(c % clean.len()),
            Some(c) => damaged.push(c as u8),
            None => for b in bits {
                let n = damaged.len();
                damaged[(b / 8) % n] ^= 1 << (b % 8);
            },
        }
        prop_assume!(damaged != clean);
        prop_assert_eq!(read_snapshot(&damaged, &Limits::default())?, None, "damaged snapshot accepted");
    }

    /// Arbitrary bytes (or a valid header over arbitrary bytes) with arbitrary limits: the
    /// header/chunk/trailer decoders and the reader never panic, accept only canonical
    /// headers, and never allocate a claimed length.
    #[test]
    fn snapshot_decoders_on_any_bytes_are_total_and_bounded(
        header in prop::option::of((any::<u64>(), 1u32..(8 << 20), any::<u64>())),
        rest in prop::collection::vec(any::<u8>(), 0..200),
        max_total_bytes in prop_oneof![Just(Limits::default().max_total_bytes), any::<u64>()],
        max_chunk_size_bytes in prop_oneof![Just(Limits::default().max_chunk_size_bytes), any::<u32>()],
    ) {
        let mut bytes = match header {
            Some((lsn, chunk_size_bytes, total_len)) => SnapshotHeader {
                boundary: Position { lsn, epoch: 1, crc: 2 },
                chunk_size_bytes,
                total_len,
            }
            .encode()
            .to_vec(),
            None => Vec::new(),
        };
        bytes.extend_from_slice(&rest);
        let limits = Limits { max_total_bytes, max_chunk_size_bytes };
        let (h, largest) = largest_alloc_of(|| SnapshotHeader::decode(&bytes, &limits));
        prop_assert!(largest <= 4096);
        if let Ok(h) = h {
            prop_assert_eq!(&h.encode()[..], &bytes[..64]);
        }
        let _ = SnapshotTrailer::decode(&bytes);
        let (r, largest) = largest_alloc_of(|| read_snapshot(&bytes, &limits));
        r?;
        prop_assert!(largest <= 2 * bytes.len() + 64 * 1024, "reader allocated {} bytes at once", largest);
    }
}

#[test]
fn epoch_entry_type_is_the_one_the_state_files_use() {
    // Keeps the JSON generator above honest about the field names.
    let h = EpochHistory::from_entries(vec![EpochEntry {
        epoch: 1,
        start_lsn: 1,
    }])
    .expect("valid");
    let json = serde_json::to_string(&h).expect("json");
    assert_eq!(json, r#"{"entries":[{"epoch":1,"start_lsn":1}]}"#);
}

/// Regression, wire-1 (found by fuzzing, fixed in walship-wire 7d89cee): bincode 2
/// allocated a claimed byte-string (or string) length up front, before checking the body
/// held that many bytes, bounded only by `MAX_DECODED_BYTES` (~33 MiB): a 13-byte `Records`
/// body claiming 30 MB of record bytes made `decode_frame_body` allocate 30 MB.
#[test]
fn small_frame_claiming_a_30_mb_byte_string_allocates_no_more_than_the_frame() {
    // body: tag 5 (Records), first_lsn 1, count 1, byte length 30_000_000 (varint 253 + u64), commit 0.
    let mut body = vec![5u8, 1, 1, 253];
    body.extend_from_slice(&30_000_000u64.to_le_bytes());
    body.push(0);
    let (r, largest) = largest_alloc_of(|| decode_frame_body(&body));
    assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
    assert!(
        largest <= 64 * 1024,
        "a {}-byte body made the decoder allocate {largest} bytes at once",
        body.len()
    );
}

/// Regression, wal-1 (found by fuzzing, fixed in walship-wal 7d9563e): a segment whose
/// last record has lsn u64::MAX, followed by any byte, made the recovery scan compute
/// `last.lsn + 1` and overflow (a panic in debug builds; in release the lsn wrapped to 0
/// and a crc-chained record with lsn 0 would have been accepted).
#[test]
fn segment_ending_at_lsn_u64_max_with_a_byte_after_it_opens_without_panicking() {
    let s = SimStorage::new(9);
    let dir = Path::new("/node/wal");
    s.create_dir_all(dir).expect("sim mkdir");
    let prev = Position {
        lsn: u64::MAX - 1,
        epoch: 1,
        crc: 0,
    };
    let header = SegmentHeader {
        first_lsn: u64::MAX,
        generation: 1,
        created_epoch: 1,
        prev,
    };
    let mut bytes = header.encode().to_vec();
    encode_record(u64::MAX, 1, 0, b"last", &mut bytes);
    bytes.push(0xff);
    let f = s
        .open(&dir.join(segment_file_name(u64::MAX)), true)
        .expect("sim open");
    f.write_at(0, &bytes).expect("sim write");
    let r = Wal::open(s.clone(), dir, WalOptions::default()).map(|(_, r)| r);
    assert!(
        matches!(
            r,
            Ok(OpenReport::TornTailCut { .. }) | Err(WalError::Corruption(_))
        ),
        "{r:?}"
    );
}
