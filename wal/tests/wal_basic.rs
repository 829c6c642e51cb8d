//! Appends, reads, rolls, reopen, position_at, truncation and reset.

mod common;

use common::*;
use walship_wal::record::encode_record;
use walship_wal::sim::SimStorage;
use walship_wal::{
    ChainError, FsStorage, OpenReport, Position, RecordError, Wal, WalError, WalOptions,
};

#[test]
fn empty_dir_opens_empty_and_reopen_is_idempotent() {
    let s = SimStorage::new(1);
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Empty);
    assert_eq!(w.last(), Position::ZERO);
    assert_eq!(w.first_lsn(), 1);
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Empty);
    assert_eq!(w.segments().len(), 1);
}

#[test]
fn round_trip_across_rolls_and_reopen_keeps_the_chain() {
    let (s, w, positions) = sim_wal_with(200, small_opts());
    assert!(
        w.segments().len() > 5,
        "small segments roll: {}",
        w.segments().len()
    );
    assert_eq!(read_all(&w), positions);
    for pair in w.segments().windows(2) {
        assert_eq!(
            pair[1].prev, pair[0].last,
            "segment header prev chains to previous segment"
        );
        assert_eq!(pair[1].first_lsn, pair[0].last.lsn + 1);
    }
    let last = w.last();
    drop(w);
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Clean { last });
    assert_eq!(read_all(&w), positions);
    assert_eq!(w.durable_lsn(), 200);
    let (w2, r2) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r2, OpenReport::Clean { last });
    assert_eq!(w2.segments(), w.segments());
}

#[test]
fn fs_storage_round_trip_and_reopen() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("wal");
    let (mut w, r) = open(&FsStorage, &dir, small_opts());
    assert_eq!(r, OpenReport::Empty);
    let mut positions = Vec::new();
    for i in 1..=100 {
        w.append(&payload(i)).expect("append");
        positions.push(w.last());
    }
    assert_eq!(w.sync().expect("sync"), 100);
    drop(w);
    let (w, r) = open(&FsStorage, &dir, small_opts());
    assert_eq!(
        r,
        OpenReport::Clean {
            last: positions[99]
        }
    );
    assert_eq!(read_all(&w), positions);
}

#[test]
fn append_assigns_dense_lsn_epoch_and_prev_crc() {
    let (_s, mut w, positions) = sim_wal_with(3, small_opts());
    assert_eq!(positions[0].lsn, 1);
    w.set_epoch(4);
    let lsn = w.append(b"x").expect("append");
    assert_eq!(lsn, 4);
    let mut r = w.reader(4).expect("reader");
    let rec = r.next_record().expect("one").expect("valid");
    assert_eq!(rec.view().prev_crc(), positions[2].crc);
    assert_eq!(rec.view().epoch(), 4);
    assert!(r.next_record().is_none());
}

#[test]
fn append_batch_returns_range_and_spans_rolls() {
    let s = SimStorage::new(2);
    let (mut w, _) = open(&s, &wal_dir(), small_opts());
    let payloads: Vec<Vec<u8>> = (1..=60).map(payload).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    assert_eq!(w.append_batch(&refs).expect("batch"), 1..=60);
    assert!(w.segments().len() > 2);
    w.sync().expect("sync");
    assert_eq!(read_all(&w).len(), 60);
    drop(w);
    let (w, _) = open(&s, &wal_dir(), small_opts());
    assert_eq!(read_all(&w).len(), 60);
}

#[test]
fn oversized_append_is_typed_error_and_writes_nothing() {
    let (_s, mut w, _) = sim_wal_with(2, small_opts());
    let big = vec![0u8; 4097];
    match w.append(&big) {
        Err(WalError::RecordTooLarge {
            len: 4097,
            max: 4096,
        }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    match w.append_batch(&[b"ok", &big]) {
        Err(WalError::RecordTooLarge {
            len: 4097,
            max: 4096,
        }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(w.last().lsn, 2);
    assert_eq!(w.append(&vec![1u8; 4096]).expect("max size fits"), 3);
}

#[test]
fn record_larger_than_segment_gets_its_own_segment() {
    let (_s, mut w, _) = sim_wal_with(2, small_opts());
    w.append(&vec![9u8; 3000]).expect("append");
    w.append(b"after").expect("append");
    let segs = w.segments();
    let big = segs
        .iter()
        .find(|s| s.first_lsn == 3)
        .expect("segment starting at 3");
    assert_eq!(big.last.lsn, 3);
    assert_eq!(
        w.reader(3)
            .expect("reader")
            .next_record()
            .expect("rec")
            .expect("ok")
            .payload()
            .len(),
        3000
    );
}

#[test]
fn position_at_covers_base_retained_and_beyond() {
    let (_s, w, positions) = sim_wal_with(50, small_opts());
    assert_eq!(w.position_at(0).expect("ok"), Some(Position::ZERO));
    for p in &positions {
        assert_eq!(w.position_at(p.lsn).expect("ok"), Some(*p));
    }
    assert_eq!(w.position_at(51).expect("ok"), None);
}

#[test]
fn reader_from_every_lsn_yields_the_suffix() {
    let (_s, w, positions) = sim_wal_with(40, small_opts());
    for from in 1..=41u64 {
        let got: Vec<Position> = w
            .reader(from)
            .expect("reader")
            .map(|r| r.expect("ok").position())
            .collect();
        assert_eq!(
            got,
            positions[(from - 1) as usize..].to_vec(),
            "from {from}"
        );
    }
}

#[test]
fn reader_sees_records_up_to_last_at_creation() {
    let (_s, mut w, _) = sim_wal_with(5, small_opts());
    let mut r = w.reader(1).expect("reader");
    w.append(b"later").expect("append");
    assert_eq!(r.by_ref().count(), 5);
}

#[test]
fn next_batch_is_contiguous_bounded_and_verified() {
    let (_s, w, positions) = sim_wal_with(100, small_opts());
    let mut r = w.reader(1).expect("reader");
    let mut seen = Vec::new();
    while let Some(b) = r.next_batch(300) {
        let b = b.expect("batch");
        assert!(b.count >= 1);
        assert!(
            b.count == 1 || b.bytes().len() <= 300,
            "batch of {} bytes",
            b.bytes().len()
        );
        let recs: Vec<_> = b.records().map(|v| v.position()).collect();
        assert_eq!(recs.len() as u32, b.count);
        assert_eq!(recs[0].lsn, b.first_lsn);
        assert_eq!(*recs.last().expect("nonempty"), b.last);
        seen.extend(recs);
    }
    assert_eq!(seen, positions);
}

#[test]
fn truncate_front_removes_whole_segments_and_keeps_chain_base() {
    let (s, mut w, positions) = sim_wal_with(200, small_opts());
    let segs = w.segments();
    let cut_at = segs[3].first_lsn + 1;
    w.truncate_front(cut_at).expect("truncate_front");
    assert_eq!(w.first_lsn(), segs[3].first_lsn);
    assert_eq!(w.base(), segs[2].last);
    assert_eq!(w.position_at(0).expect("ok"), Some(segs[2].last));
    assert_eq!(w.position_at(1).expect("ok"), None);
    match w.reader(1) {
        Err(WalError::NotRetained { lsn: 1, first_lsn }) => {
            assert_eq!(first_lsn, segs[3].first_lsn)
        }
        other => panic!("expected NotRetained, got {other:?}"),
    }
    let from = w.first_lsn();
    let got: Vec<Position> = w
        .reader(from)
        .expect("reader")
        .map(|r| r.expect("ok").position())
        .collect();
    assert_eq!(got, positions[(from - 1) as usize..].to_vec());
    w.truncate_front(u64::MAX).expect("truncate all but active");
    assert_eq!(w.segments().len(), 1);
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(
        r,
        OpenReport::Clean {
            last: positions[199]
        }
    );
    assert_eq!(w.base().lsn + 1, w.segments()[0].first_lsn);
}

#[test]
fn truncate_tail_rewinds_and_survives_crash() {
    let (s, mut w, positions) = sim_wal_with(200, small_opts());
    w.truncate_tail(77).expect("truncate_tail");
    assert_eq!(w.last(), positions[76]);
    assert_eq!(w.durable_lsn(), 77);
    let lsn = w.append(b"new history").expect("append");
    assert_eq!(lsn, 78);
    w.sync().expect("sync");
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 78),
        "{r:?}"
    );
    let all: Vec<Position> = w
        .reader(1)
        .expect("reader")
        .map(|r| r.expect("ok").position())
        .collect();
    assert_eq!(&all[..77], &positions[..77]);
    match w.position_at(79) {
        Ok(None) => {}
        other => panic!("expected None, got {other:?}"),
    }
}

#[test]
fn truncate_tail_out_of_range_is_refused() {
    let (_s, mut w, _) = sim_wal_with(10, small_opts());
    match w.truncate_tail(11) {
        Err(WalError::OutOfRange {
            lsn: 11,
            min: 0,
            max: 10,
        }) => {}
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    w.truncate_tail(0).expect("rewind to empty");
    assert_eq!(w.last(), Position::ZERO);
    assert_eq!(w.append(b"a").expect("append"), 1);
}

#[test]
fn reset_to_starts_fresh_log_chaining_to_boundary() {
    let (s, mut w, _) = sim_wal_with(30, small_opts());
    let boundary = Position {
        lsn: 1000,
        epoch: 3,
        crc: 0xfeed,
    };
    w.set_epoch(3);
    w.reset_to(boundary).expect("reset_to");
    assert_eq!(w.last(), boundary);
    assert_eq!(w.first_lsn(), 1001);
    assert_eq!(w.position_at(1000).expect("ok"), Some(boundary));
    assert_eq!(w.append(b"a").expect("append"), 1001);
    w.sync().expect("sync");
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 1001),
        "{r:?}"
    );
    let rec = w
        .reader(1001)
        .expect("reader")
        .next()
        .expect("one")
        .expect("ok");
    assert_eq!(rec.view().prev_crc(), 0xfeed);
    assert_eq!(w.segments().len(), 1);
}

#[test]
fn reset_to_lower_boundary_replaces_history() {
    let (s, mut w, _) = sim_wal_with(30, small_opts());
    let boundary = Position {
        lsn: 5,
        epoch: 1,
        crc: 0x1,
    };
    w.reset_to(boundary).expect("reset_to");
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Clean { last: boundary });
    assert_eq!(w.first_lsn(), 6);
}

#[test]
fn epoch_behind_log_refuses_append() {
    let (_s, mut w, _) = sim_wal_with(
        1,
        WalOptions {
            epoch: 5,
            ..small_opts()
        },
    );
    w.set_epoch(4);
    match w.append(b"x") {
        Err(WalError::EpochBehindLog {
            epoch: 4,
            last_epoch: 5,
        }) => {}
        other => panic!("expected EpochBehindLog, got {other:?}"),
    }
}

#[test]
fn open_uses_epoch_of_last_record_when_higher() {
    let (s, w, _) = sim_wal_with(
        3,
        WalOptions {
            epoch: 9,
            ..small_opts()
        },
    );
    drop(w);
    let (w, _) = open(
        &s,
        &wal_dir(),
        WalOptions {
            epoch: 2,
            ..small_opts()
        },
    );
    assert_eq!(w.epoch(), 9);
}

fn shipped(lsn: u64, epoch: u64, prev_crc: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_record(lsn, epoch, prev_crc, payload, &mut v);
    v
}

#[test]
fn append_verified_stores_bytes_unchanged_and_rejects_each_mismatch_distinctly() {
    let (_src_s, src, positions) = sim_wal_with(
        5,
        WalOptions {
            epoch: 2,
            ..small_opts()
        },
    );
    let s = SimStorage::new(3);
    let (mut replica, _) = open(&s, &wal_dir(), small_opts());
    let mut r = src.reader(1).expect("reader");
    for _ in 0..3 {
        let rec = r.next_record().expect("rec").expect("ok");
        assert_eq!(
            replica.append_verified(rec.bytes()).expect("verified"),
            rec.position()
        );
    }
    let last = positions[2];
    // gap
    match replica.append_verified(&shipped(5, 2, last.crc, b"x")) {
        Err(WalError::Chain(ChainError::Gap {
            expected_lsn: 4,
            found_lsn: 5,
        })) => {}
        other => panic!("gap: {other:?}"),
    }
    // duplicate
    match replica.append_verified(&shipped(3, 2, positions[1].crc, b"x")) {
        Err(WalError::Chain(ChainError::Duplicate {
            expected_lsn: 4,
            found_lsn: 3,
        })) => {}
        other => panic!("duplicate: {other:?}"),
    }
    // chain break (divergence)
    match replica.append_verified(&shipped(4, 2, last.crc ^ 1, b"x")) {
        Err(WalError::Chain(ChainError::ChainBreak {
            lsn: 4,
            expected_prev_crc,
            found_prev_crc,
        })) => {
            assert_eq!(expected_prev_crc, last.crc);
            assert_eq!(found_prev_crc, last.crc ^ 1);
        }
        other => panic!("chain break: {other:?}"),
    }
    // epoch regression
    match replica.append_verified(&shipped(4, 1, last.crc, b"x")) {
        Err(WalError::Chain(ChainError::EpochRegression {
            lsn: 4,
            last_epoch: 2,
            found_epoch: 1,
        })) => {}
        other => panic!("epoch regression: {other:?}"),
    }
    // checksum
    let mut bad = shipped(4, 2, last.crc, b"payload");
    bad[35] ^= 0x10;
    match replica.append_verified(&bad) {
        Err(WalError::Record(RecordError::Checksum { .. })) => {}
        other => panic!("checksum: {other:?}"),
    }
    // too large
    let mut huge = shipped(4, 2, last.crc, b"x");
    huge[4..8].copy_from_slice(&100_000u32.to_le_bytes());
    match replica.append_verified(&huge) {
        Err(WalError::Record(RecordError::TooLarge {
            len: 100_000,
            max: 4096,
        })) => {}
        other => panic!("too large: {other:?}"),
    }
    // truncated
    let whole = shipped(4, 2, last.crc, b"xyz");
    match replica.append_verified(&whole[..whole.len() - 1]) {
        Err(WalError::Record(RecordError::Truncated { .. })) => {}
        other => panic!("truncated: {other:?}"),
    }
    // trailing bytes after one record
    let mut two = shipped(4, 2, last.crc, b"x");
    two.extend_from_slice(b"extra");
    match replica.append_verified(&two) {
        Err(WalError::TrailingBytes {
            expected: 33,
            found: 38,
        }) => {}
        other => panic!("trailing bytes: {other:?}"),
    }
    assert_eq!(replica.last(), last, "nothing written by rejected records");
    // and the genuine next record still goes in, byte for byte
    let rec4 = r.next_record().expect("rec").expect("ok");
    replica.append_verified(rec4.bytes()).expect("lsn 4");
    replica.sync().expect("sync");
    let mine = replica
        .reader(4)
        .expect("reader")
        .next()
        .expect("rec")
        .expect("ok");
    assert_eq!(mine.bytes(), rec4.bytes());
}

#[test]
fn append_verified_batch_is_all_or_nothing() {
    let (_src_s, src, positions) = sim_wal_with(20, small_opts());
    let s = SimStorage::new(4);
    let (mut replica, _) = open(&s, &wal_dir(), small_opts());
    let mut r = src.reader(1).expect("reader");
    let b = r.next_batch(10_000).expect("batch").expect("ok");
    let pos = replica
        .append_verified_batch(b.bytes())
        .expect("batch verified");
    assert_eq!(pos, b.last);
    // a batch whose 2nd record is damaged is refused whole
    let next = r.next_batch(10_000).expect("batch").expect("ok");
    let mut bytes = next.bytes().to_vec();
    let first_len = next.records().next().expect("first").bytes().len();
    bytes[first_len + 33] ^= 1;
    match replica.append_verified_batch(&bytes) {
        Err(WalError::Record(RecordError::Checksum { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(replica.last(), b.last);
    replica
        .append_verified_batch(next.bytes())
        .expect("genuine batch");
    assert_eq!(replica.last(), next.last);
    assert!(positions.contains(&next.last));
}

#[test]
fn wal_open_with_default_options_on_fs() {
    let d = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = Wal::open(FsStorage, d.path(), WalOptions::default()).expect("open");
    let l = w.append(b"hello").expect("append");
    assert_eq!(w.sync().expect("sync"), l);
    assert_eq!(w.durable_lsn(), 1);
}

#[test]
fn truncate_tail_at_segment_boundary_drops_later_segments_only() {
    let (s, mut w, positions) = sim_wal_with(200, small_opts());
    let segs = w.segments();
    let after = segs[2].last.lsn;
    w.truncate_tail(after).expect("truncate_tail");
    assert_eq!(w.last(), segs[2].last);
    assert_eq!(w.segments().len(), 3);
    assert_eq!(w.append(b"z").expect("append"), after + 1);
    w.sync().expect("sync");
    drop(w);
    s.crash();
    let (w, _) = open(&s, &wal_dir(), small_opts());
    assert_eq!(w.last().lsn, after + 1);
    let all: Vec<Position> = w
        .reader(1)
        .expect("reader")
        .map(|r| r.expect("ok").position())
        .collect();
    assert_eq!(&all[..after as usize], &positions[..after as usize]);
}

#[test]
fn segment_size_not_above_header_is_invalid_options() {
    let s = SimStorage::new(9);
    let opts = WalOptions {
        segment_size_bytes: 64,
        ..small_opts()
    };
    match Wal::open(s, &wal_dir(), opts) {
        Err(WalError::InvalidOptions(_)) => {}
        other => panic!("expected InvalidOptions, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn reader_whose_next_segment_was_truncated_away_reports_not_retained() {
    let (_s, mut w, _) = sim_wal_with(200, small_opts());
    let mut r = w.reader(1).expect("reader");
    let seg1_last = w.segments()[0].last.lsn;
    for _ in 0..seg1_last {
        r.next_record().expect("record").expect("valid");
    }
    w.truncate_front(w.segments()[3].first_lsn)
        .expect("truncate_front");
    match r.next_record() {
        Some(Err(WalError::NotRetained { lsn, .. })) => assert_eq!(lsn, seg1_last + 1),
        other => panic!("expected NotRetained, got {other:?}"),
    }
    assert!(r.next_record().is_none(), "fused");
}

#[test]
fn roll_failing_in_the_middle_of_a_batch_poisons() {
    let (s, mut w, _) = sim_wal_with(1, small_opts());
    let end = w.segments()[0].len_bytes;
    let rec = 32 + 100u64;
    let first_chunk = (1024 - end) / rec * rec;
    assert!(first_chunk > 0);
    s.set_capacity_bytes(s.used_bytes() + first_chunk + 10);
    let p = [5u8; 100];
    let batch: Vec<&[u8]> = (0..10).map(|_| &p[..]).collect();
    match w.append_batch(&batch) {
        Err(WalError::Io { op: "write_at", .. }) => {}
        other => panic!("expected ENOSPC creating the next segment, got {other:?}"),
    }
    assert!(
        w.is_poisoned(),
        "part of the batch is in the log: the WAL must stop"
    );
    assert!(matches!(w.append(b"x"), Err(WalError::Poisoned)));
}

#[test]
fn one_write_per_append_and_per_segment_touched_by_a_batch() {
    let s = SimStorage::new(31);
    let opts = WalOptions {
        segment_size_bytes: 64 * 1024,
        ..small_opts()
    };
    let (mut w, _) = open(&s, &wal_dir(), opts);
    let before = s.counters().writes;
    for i in 1..=10 {
        w.append(&payload(i)).expect("append");
    }
    assert_eq!(s.counters().writes - before, 10, "one write_at per append");
    let ps: Vec<Vec<u8>> = (1..=50).map(payload).collect();
    let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
    let before = s.counters().writes;
    w.append_batch(&refs).expect("batch");
    assert_eq!(
        s.counters().writes - before,
        1,
        "one write_at per batch within a segment"
    );
    let syncs = s.counters().file_syncs;
    w.sync().expect("sync");
    w.sync().expect("nothing new");
    assert_eq!(
        s.counters().file_syncs - syncs,
        1,
        "a sync with nothing new to sync does not fdatasync"
    );
}
