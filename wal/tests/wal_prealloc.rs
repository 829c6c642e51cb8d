//! Format version 2 segments (spec/wal-format.md, "Segment file" and "Local
//! recovery"): preallocated and zero-filled at creation; the scan takes an
//! all-zero region after the last record as the unwritten tail, cuts a torn
//! tail by zeroing it, refuses a bit flip that no torn write can leave, and
//! still opens version 1 logs exactly as before.

mod common;

use std::path::Path;

use common::*;
use walship_wal::record::decode_record;
use walship_wal::segment::{SEGMENT_FORMAT_VERSION, SEGMENT_FORMAT_VERSION_1, SEGMENT_HEADER_LEN};
use walship_wal::sim::SimStorage;
use walship_wal::{CorruptionKind, OpenReport, Storage, StorageFile, Wal, WalError};

const SEG: u64 = 1024;

fn build(n: u64) -> (SimStorage, Vec<Placed>) {
    let (s, w, _) = sim_wal_with(n, small_opts());
    let l = layout(&w);
    (s, l)
}

fn len_of(s: &SimStorage, p: &Path) -> u64 {
    s.contents(p).expect("contents").len() as u64
}

fn raw_write(s: &SimStorage, path: &Path, offset: u64, bytes: &[u8]) {
    let f = s.open(path, false).expect("open");
    f.write_at(offset, bytes).expect("write");
    f.sync_data().expect("sync");
}

#[test]
fn new_segments_are_preallocated_zero_filled_and_keep_their_length_while_appending() {
    let s = SimStorage::new(1);
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Empty);
    let seg = w.segments()[0].clone();
    assert_eq!(seg.format_version, SEGMENT_FORMAT_VERSION);
    let bytes = s.contents(&seg.path).expect("contents");
    assert_eq!(
        bytes.len() as u64,
        SEG,
        "preallocated to segment_size_bytes"
    );
    assert!(bytes[SEGMENT_HEADER_LEN..].iter().all(|&b| b == 0));
    // The zeros were synced with the header: a crash keeps the whole length.
    drop(w);
    s.crash();
    assert_eq!(len_of(&s, &seg.path), SEG);
    let (mut w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Empty);
    for i in 1..=40 {
        w.append(&payload(i)).expect("append");
    }
    w.sync().expect("sync");
    let segs = w.segments();
    assert!(segs.len() > 2, "rolled");
    for seg in &segs {
        assert_eq!(seg.format_version, SEGMENT_FORMAT_VERSION);
        assert_eq!(len_of(&s, &seg.path), SEG, "{}", seg.path.display());
        assert!(seg.len_bytes <= SEG);
    }
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 40),
        "{r:?}"
    );
    assert_eq!(read_all(&w).len(), 40);
}

#[test]
fn a_record_larger_than_the_segment_grows_its_preallocated_segment_and_reopens_clean() {
    let s = SimStorage::new(2);
    let (mut w, _) = open(&s, &wal_dir(), small_opts());
    w.append(&payload(1)).expect("append");
    let big = vec![0x5a; 3000];
    w.append(&big).expect("append big");
    w.append(&payload(3)).expect("append");
    w.sync().expect("sync");
    let segs = w.segments();
    assert_eq!(segs.len(), 3);
    assert_eq!(len_of(&s, &segs[1].path), 64 + 32 + 3000);
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 3),
        "{r:?}"
    );
    assert_eq!(w.position_at(2).expect("pos").map(|p| p.lsn), Some(2));
}

/// What open must report when the last record's bytes from `from` to its end
/// read as zeros (a torn write into the preallocated, zero-filled tail).
fn expected_after_tear(bytes: &[u8], last: &Placed, prev: walship_wal::Position) -> OpenReport {
    let off = last.offset as usize;
    if decode_record(&bytes[off..], small_opts().max_record_bytes).is_ok() {
        // The zeroed suffix was zeros anyway: the record is whole.
        return OpenReport::Clean {
            last: last.position,
        };
    }
    let nz = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if nz <= off {
        // The tear reached no byte of the disk: nothing to cut.
        return OpenReport::Clean { last: prev };
    }
    OpenReport::TornTailCut {
        segment: last.segment.clone(),
        offset: last.offset,
        bytes_cut: (nz - off) as u64,
        last: prev,
    }
}

#[test]
fn fm_x_7_torn_write_into_the_zero_filled_tail_at_every_offset_of_the_last_record_keeps_the_previous_record(
) {
    let n = 12;
    let (_, l) = build(n);
    let last = l.last().expect("records").clone();
    let prev = l[l.len() - 2].position;
    let end = last.offset + last.len;
    let mut cuts = 0;
    for from in last.offset..end {
        let (s, _) = build(n);
        s.zero_range(&last.segment, from, end - from).expect("zero");
        let bytes = s.contents(&last.segment).expect("contents");
        let expected = expected_after_tear(&bytes, &last, prev);
        let (mut w, r) = open(&s, &wal_dir(), small_opts());
        assert_eq!(r, expected, "torn at {from}");
        if matches!(r, OpenReport::TornTailCut { .. }) {
            cuts += 1;
        }
        let kept = w.last();
        // The cut zeroes in place: the file keeps its preallocated length.
        let after = s.contents(&last.segment).expect("contents");
        assert_eq!(after.len() as u64, SEG, "torn at {from}");
        assert!(
            after[(w.segments().last().expect("seg").len_bytes as usize)..]
                .iter()
                .all(|&b| b == 0),
            "torn at {from}: tail zeroed"
        );
        // Appending after the cut works and survives a crash.
        let lsn = w.append(&payload(kept.lsn + 1)).expect("append");
        w.sync().expect("sync");
        drop(w);
        s.crash();
        let (w, r) = open(&s, &wal_dir(), small_opts());
        assert!(
            matches!(r, OpenReport::Clean { last } if last.lsn == lsn),
            "torn at {from}: reopen {r:?}"
        );
        assert_eq!(read_all(&w).len() as u64, lsn);
    }
    assert!(cuts > 0, "some tears left bytes to cut");
}

#[test]
fn garbage_after_the_last_record_of_a_preallocated_segment_is_zeroed_and_the_zeroing_survives_a_crash(
) {
    let (s, l) = build(12);
    let last = l.last().expect("records").clone();
    let end = last.offset + last.len;
    // The first 50 bytes of the next record (a torn append).
    let mut next = Vec::new();
    walship_wal::encode_record(13, 1, last.position.crc, &[0x77; 100], &mut next);
    raw_write(&s, &last.segment, end, &next[..50]);
    let ins = walship_wal::inspect(&s, &wal_dir(), 4096).expect("inspect");
    assert_eq!(ins.torn_tail, Some((last.segment.clone(), end, 50)));
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(
        r,
        OpenReport::TornTailCut {
            segment: last.segment.clone(),
            offset: end,
            bytes_cut: 50,
            last: last.position
        }
    );
    drop(w);
    s.crash();
    let bytes = s.contents(&last.segment).expect("contents");
    assert_eq!(bytes.len() as u64, SEG);
    assert!(bytes[end as usize..].iter().all(|&b| b == 0));
    let (_, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(
        r,
        OpenReport::Clean {
            last: last.position
        }
    );
}

#[test]
fn fm_9_2_crash_during_the_zeroing_cut_of_a_preallocated_segment_recovers_identically() {
    let (s_ref, l) = build(12);
    let last = l.last().expect("records").clone();
    let cut_from = last.offset + last.len / 2;
    let len = last.offset + last.len - cut_from;
    s_ref
        .zero_range(&last.segment, cut_from, len)
        .expect("zero");
    let (w_ref, r_ref) = open(&s_ref, &wal_dir(), small_opts());
    let (s, _) = build(12);
    s.zero_range(&last.segment, cut_from, len).expect("zero");
    s.fail_next_sync(&last.segment).expect("arm");
    match Wal::open(s.clone(), &wal_dir(), small_opts()) {
        Err(WalError::Io {
            op: "sync_data", ..
        }) => {}
        other => panic!("expected the cut's sync to fail, got {other:?}"),
    }
    s.crash_with_torn_write();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, r_ref);
    assert_eq!(w.last(), w_ref.last());
    assert_eq!(read_all(&w), read_all(&w_ref));
}

#[test]
fn a_set_bit_in_the_last_synced_record_of_a_preallocated_segment_is_corruption_not_a_torn_tail() {
    let n = 10;
    let (_, l) = build(n);
    let last = l.last().expect("records").clone();
    let (mut s, _) = build(n);
    let mut refused = 0;
    let mut cut = 0;
    for bit in 0..last.len * 8 {
        let byte = last.offset + bit / 8;
        if (4..8).contains(&(bit / 8)) {
            continue; // the length field: a different record extent
        }
        let before = s.contents(&last.segment).expect("contents")[byte as usize];
        s.flip_bit(&last.segment, byte, (bit % 8) as u8)
            .expect("flip");
        let set = before >> (bit % 8) & 1 == 0;
        match Wal::open(s.clone(), &wal_dir(), small_opts()) {
            Err(WalError::Corruption(r)) => {
                assert_eq!(
                    (&r.segment, r.offset, r.lsn, r.kind),
                    (
                        &last.segment,
                        last.offset,
                        Some(last.lsn),
                        CorruptionKind::RecordChecksum
                    ),
                    "bit {bit}: {r}"
                );
                assert!(r.found.contains("not a torn write"), "{r}");
                refused += 1;
                s.flip_bit(&last.segment, byte, (bit % 8) as u8)
                    .expect("flip back");
            }
            Ok((w, OpenReport::TornTailCut { offset, .. })) => {
                // Only a cleared bit with nothing but zeros after it in its
                // sector could be a torn write.
                assert!(!set, "bit {bit} was set by the flip but the record was cut");
                assert_eq!(offset, last.offset);
                drop(w);
                cut += 1;
                s = build(n).0;
            }
            other => panic!("bit {bit}: {other:?}"),
        }
    }
    assert!(refused > cut, "refused {refused}, cut {cut}");
}

#[test]
fn a_version_1_log_opens_as_before_appends_grow_its_last_segment_and_rolls_make_preallocated_segments(
) {
    let (s, positions) = sim_v1_log_with(12, small_opts());
    let (mut w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(
        r,
        OpenReport::Clean {
            last: positions[11]
        }
    );
    let segs = w.segments();
    assert!(segs.len() > 1);
    for seg in &segs {
        assert_eq!(seg.format_version, SEGMENT_FORMAT_VERSION_1);
        assert_eq!(
            len_of(&s, &seg.path),
            seg.len_bytes,
            "version 1: not preallocated"
        );
    }
    let active = segs.last().expect("segment").clone();
    w.append(&payload(13)).expect("append");
    w.sync().expect("sync");
    let grown = w.segments().last().expect("segment").clone();
    if grown.path == active.path {
        assert_eq!(
            len_of(&s, &grown.path),
            grown.len_bytes,
            "grows with the append"
        );
    }
    for i in 14..=40 {
        w.append(&payload(i)).expect("append");
    }
    w.sync().expect("sync");
    let segs = w.segments();
    let newest = segs.last().expect("segment");
    assert_eq!(newest.format_version, SEGMENT_FORMAT_VERSION);
    assert_eq!(len_of(&s, &newest.path), SEG);
    drop(w);
    s.crash_with_torn_write();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 40),
        "{r:?}"
    );
    assert_eq!(read_all(&w).len(), 40);
    // The recovery tool's read-only view agrees.
    let ins = walship_wal::inspect(&s, &wal_dir(), 4096).expect("inspect");
    assert_eq!(ins.segments, w.segments());
}

#[test]
fn truncate_tail_keeps_the_preallocated_length_and_zeroes_after_the_cut() {
    let (s, mut w, positions) = sim_wal_with(30, small_opts());
    let keep = positions[20].lsn;
    w.truncate_tail(keep).expect("truncate");
    let seg = w.segments().last().expect("segment").clone();
    let bytes = s.contents(&seg.path).expect("contents");
    assert_eq!(bytes.len() as u64, SEG);
    assert!(bytes[seg.len_bytes as usize..].iter().all(|&b| b == 0));
    w.append(&payload(keep + 1)).expect("append");
    w.sync().expect("sync");
    drop(w);
    s.crash_with_torn_write();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == keep + 1),
        "{r:?}"
    );
    assert_eq!(read_all(&w).len() as u64, keep + 1);
}

#[test]
fn non_zero_bytes_in_the_tail_of_a_sealed_preallocated_segment_are_corruption() {
    let (s, l) = build(30);
    let sealed = l[0].segment.clone();
    let end = l
        .iter()
        .filter(|p| p.segment == sealed)
        .map(|p| p.offset + p.len)
        .max()
        .expect("records");
    raw_write(&s, &sealed, end + 7, &[1]);
    match open_err(&s, &wal_dir(), small_opts()) {
        WalError::Corruption(r) => {
            assert_eq!((&r.segment, r.offset), (&sealed, end));
            assert!(r.found.contains("in sealed segment"), "{r}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn zeroed_last_record_of_a_sealed_preallocated_segment_is_reported_as_missing_before_the_next_segment(
) {
    let (s, l) = build(30);
    let sealed = l[0].segment.clone();
    let last_in_sealed = l
        .iter()
        .rfind(|p| p.segment == sealed)
        .expect("records")
        .clone();
    s.zero_range(&sealed, last_in_sealed.offset, last_in_sealed.len)
        .expect("zero");
    match open_err(&s, &wal_dir(), small_opts()) {
        WalError::Corruption(r) => {
            // The sealed segment now ends one record early, so the next
            // segment's first_lsn leaves a gap: never read as a clean end.
            assert_eq!(r.kind, CorruptionKind::SegmentMissing, "{r}");
            assert_eq!(r.lsn, Some(last_in_sealed.lsn));
        }
        other => panic!("{other}"),
    }
}
