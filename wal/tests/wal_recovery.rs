//! The local-recovery decision table (spec/wal-format.md, "Local recovery"):
//! torn tails are cut, everything else is corruption named by place.

mod common;

use std::path::Path;

use common::*;
use walship_wal::record::encode_record;
use walship_wal::segment::{segment_file_name, SegmentHeader};
use walship_wal::sim::SimStorage;
use walship_wal::{
    CorruptionKind, OpenReport, Position, Storage, StorageFile, WalError, WalOptions,
};

/// 3 sealed-or-not segments of records with payload(i) for i in 1..=n.
fn build(n: u64) -> (SimStorage, Vec<Placed>) {
    let (s, w, _) = sim_wal_with(n, small_opts());
    let l = layout(&w);
    (s, l)
}

/// Like [`build`], the segments rewritten in format version 1 (not
/// preallocated: each file ends after its last record), as older builds left them.
fn build_v1(n: u64) -> (SimStorage, Vec<Placed>) {
    let (s, l) = build(n);
    downgrade_to_v1(&s, &wal_dir());
    (s, l)
}

fn raw_write(s: &SimStorage, path: &Path, offset: u64, bytes: &[u8]) {
    let f = s.open(path, true).expect("open");
    f.write_at(offset, bytes).expect("write");
    f.sync_data().expect("sync");
}

fn set_len(s: &SimStorage, path: &Path, len: u64) {
    let f = s.open(path, false).expect("open");
    f.set_len(len).expect("set_len");
    f.sync_data().expect("sync");
}

fn corruption(e: WalError) -> walship_wal::CorruptionReport {
    match e {
        WalError::Corruption(r) => r,
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn fm_x_7_torn_tail_at_every_byte_offset_of_last_record_recovers_previous_record() {
    let n = 12;
    let (_, l) = build(n);
    let last = l.last().expect("records").clone();
    let prev = l[l.len() - 2].position;
    // Format version 1 segments grow with appends: a torn append is a short file.
    for cut in last.offset..last.offset + last.len {
        let (s, _) = build_v1(n);
        set_len(&s, &last.segment, cut);
        let (w, r) = open(&s, &wal_dir(), small_opts());
        if cut == last.offset {
            assert_eq!(r, OpenReport::Clean { last: prev }, "cut {cut}");
        } else {
            assert_eq!(
                r,
                OpenReport::TornTailCut {
                    segment: last.segment.clone(),
                    offset: last.offset,
                    bytes_cut: cut - last.offset,
                    last: prev
                },
                "cut {cut}"
            );
        }
        assert_eq!(w.last(), prev);
        assert_eq!(read_all(&w).len() as u64, n - 1);
        drop(w);
        // Idempotent, and the cut was synced: a crash does not bring the bytes back.
        s.crash();
        let (_, r) = open(&s, &wal_dir(), small_opts());
        assert_eq!(
            r,
            OpenReport::Clean { last: prev },
            "reopen after cut {cut}"
        );
    }
}

#[test]
fn zero_filled_tail_from_every_offset_of_last_record_is_cut() {
    let n = 12;
    let (_, l) = build(n);
    let last = l.last().expect("records").clone();
    let end = last.offset + last.len;
    for from in last.offset..end {
        let (s, _) = build_v1(n);
        s.zero_range(&last.segment, from, end - from).expect("zero");
        // also a zero-filled extension past the data (length reached disk first)
        set_len(&s, &last.segment, end + 100);
        let (w, r) = open(&s, &wal_dir(), small_opts());
        match r {
            OpenReport::TornTailCut {
                offset,
                bytes_cut,
                last: p,
                ..
            } => {
                assert_eq!(offset, last.offset);
                assert_eq!(bytes_cut, last.len + 100);
                assert_eq!(p, l[l.len() - 2].position);
            }
            other => panic!("zeroed from {from}: {other:?}"),
        }
        assert_eq!(w.last(), l[l.len() - 2].position);
    }
}

/// Opens after a single bit flip and checks the verdict; flips back when the
/// open did not change the files.
fn check_flip(s: &SimStorage, l: &[Placed], target: &Placed, bit_index: u64) -> Result<(), String> {
    let byte = target.offset + bit_index / 8;
    s.flip_bit(&target.segment, byte, (bit_index % 8) as u8)
        .map_err(|e| e.to_string())?;
    let is_last_record = target.lsn == l.last().map(|p| p.lsn).unwrap_or(0);
    let in_len_field = (4..8).contains(&(bit_index / 8));
    match walship_wal::Wal::open(s.clone(), &wal_dir(), small_opts()) {
        Err(WalError::Corruption(r)) => {
            if r.segment != target.segment || r.offset != target.offset || r.lsn != Some(target.lsn)
            {
                return Err(format!(
                    "bit {bit_index} of lsn {}: wrong place {r}",
                    target.lsn
                ));
            }
            let ok_kind = if in_len_field {
                matches!(
                    r.kind,
                    CorruptionKind::RecordChecksum
                        | CorruptionKind::RecordTooLarge
                        | CorruptionKind::RecordTruncated
                )
            } else {
                r.kind == CorruptionKind::RecordChecksum
            };
            if !ok_kind {
                return Err(format!(
                    "bit {bit_index} of lsn {}: kind {:?}",
                    target.lsn, r.kind
                ));
            }
        }
        Ok((w, OpenReport::TornTailCut { offset, last, .. })) if is_last_record => {
            // Damage to the very last record is indistinguishable from a torn
            // write: it is cut and reported, never silently kept.
            if offset != target.offset
                || last.lsn != target.lsn - 1
                || w.last().lsn != target.lsn - 1
            {
                return Err(format!(
                    "bit {bit_index} of last record: cut at {offset}, last {last:?}"
                ));
            }
            return Ok(()); // files changed: caller rebuilds
        }
        Ok((_, r)) => {
            return Err(format!(
                "bit {bit_index} of lsn {} not detected: {r:?}",
                target.lsn
            ))
        }
        Err(e) => {
            return Err(format!(
                "bit {bit_index} of lsn {}: unexpected {e}",
                target.lsn
            ))
        }
    }
    s.flip_bit(&target.segment, byte, (bit_index % 8) as u8)
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn every_single_bit_flip_in_a_stored_record_is_detected_on_open() {
    let n = 24;
    let (s, l) = build(n);
    let segs: Vec<_> = {
        let mut v: Vec<_> = l.iter().map(|p| p.segment.clone()).collect();
        v.dedup();
        v
    };
    assert!(segs.len() >= 3, "need sealed segments");
    // a record in a sealed segment, a middle record of the last segment, and the last record
    let sealed = l
        .iter()
        .find(|p| p.segment == segs[1])
        .expect("sealed")
        .clone();
    let last_seg: Vec<_> = l
        .iter()
        .filter(|p| p.segment == *segs.last().expect("seg"))
        .cloned()
        .collect();
    assert!(last_seg.len() >= 2, "last segment needs 2 records");
    let middle = last_seg[0].clone();
    for target in [&sealed, &middle] {
        for bit in 0..target.len * 8 {
            if let Err(e) = check_flip(&s, &l, target, bit) {
                panic!("{e}");
            }
        }
    }
    let last = l.last().expect("records").clone();
    for bit in 0..last.len * 8 {
        let (s, l) = build(n);
        if let Err(e) = check_flip(&s, &l, &last, bit) {
            panic!("{e}");
        }
    }
}

#[test]
fn every_single_bit_flip_is_detected_on_read_with_exact_place() {
    let n = 24;
    let (s, w, _) = sim_wal_with(n, small_opts());
    let l = layout(&w);
    let target = l[10].clone();
    for bit in 0..target.len * 8 {
        let byte = target.offset + bit / 8;
        s.flip_bit(&target.segment, byte, (bit % 8) as u8)
            .expect("flip");
        let mut r = w.reader(1).expect("reader");
        let mut good = 0;
        let err = loop {
            match r.next_record() {
                Some(Ok(_)) => good += 1,
                Some(Err(e)) => break e,
                None => panic!("bit {bit}: flip not detected on read"),
            }
        };
        assert_eq!(good, 10, "bit {bit}");
        let rep = corruption(err);
        assert_eq!(
            (rep.segment.clone(), rep.offset, rep.lsn),
            (target.segment.clone(), target.offset, Some(11))
        );
        assert!(r.next_record().is_none(), "reader is fused after an error");
        // position_at verifies too
        assert!(w.position_at(11).is_err(), "bit {bit}: position_at");
        s.flip_bit(&target.segment, byte, (bit % 8) as u8)
            .expect("flip back");
    }
}

#[test]
fn fm_x_6_corruption_in_middle_record_refuses_to_open_and_names_the_place() {
    let (s, l) = build(30);
    let target = l[l.len() - 3].clone();
    s.flip_bit(&target.segment, target.offset + 40, 3)
        .expect("flip");
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::RecordChecksum);
    assert_eq!(rep.segment, target.segment);
    assert_eq!(rep.offset, target.offset);
    assert_eq!(rep.lsn, Some(target.lsn));
    let text = rep.to_string();
    assert!(
        text.contains(&target.segment.display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("offset {}", target.offset)),
        "{text}"
    );
    assert!(text.contains(&format!("lsn {}", target.lsn)), "{text}");
    assert!(text.contains("crc-valid record follows"), "{text}");
    // refusing is stable and changes nothing
    let rep2 = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep2, rep);
}

#[test]
fn zeroed_sector_mid_log_with_valid_records_after_is_corruption() {
    let (s, l) = build(30);
    let target = l[l.len() - 3].clone();
    s.zero_range(&target.segment, target.offset, target.len)
        .expect("zero");
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::RecordChecksum);
    assert_eq!((rep.offset, rep.lsn), (target.offset, Some(target.lsn)));
}

#[test]
fn length_above_max_at_tail_is_corruption_not_torn() {
    let (s, l) = build(10);
    let last = l.last().expect("records").clone();
    let end = last.offset + last.len;
    let mut hdr = [0u8; 32];
    hdr[4..8].copy_from_slice(&5000u32.to_le_bytes());
    raw_write(&s, &last.segment, end, &hdr);
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::RecordTooLarge);
    assert_eq!((rep.offset, rep.lsn), (end, Some(11)));
    assert_eq!(rep.found, "payload_len 5000");
}

#[test]
fn length_above_max_in_middle_is_corruption() {
    let (s, l) = build(10);
    let t = l[4].clone();
    raw_write(&s, &t.segment, t.offset + 4, &u32::MAX.to_le_bytes());
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::RecordTooLarge);
    assert_eq!((rep.offset, rep.lsn), (t.offset, Some(t.lsn)));
}

fn append_raw_record(s: &SimStorage, l: &[Placed], lsn: u64, epoch: u64, prev_crc: u32) -> u64 {
    let last = l.last().expect("records");
    let end = last.offset + last.len;
    let mut rec = Vec::new();
    encode_record(lsn, epoch, prev_crc, b"forged", &mut rec);
    raw_write(s, &last.segment, end, &rec);
    end
}

#[test]
fn crc_valid_record_with_wrong_lsn_prev_crc_or_epoch_is_corruption() {
    let n = 10;
    let cases: [(u64, u64, bool, CorruptionKind); 4] = [
        (n + 2, 1, true, CorruptionKind::ChainGap),
        (n, 1, true, CorruptionKind::ChainDuplicate),
        (n + 1, 1, false, CorruptionKind::ChainBreak),
        (n + 1, 0, true, CorruptionKind::ChainEpochRegression),
    ];
    for (lsn, epoch, right_prev, kind) in cases {
        let (s, l) = build(n);
        let last = l.last().expect("records").position;
        let prev_crc = if right_prev {
            last.crc
        } else {
            last.crc ^ 0xff
        };
        let at = append_raw_record(&s, &l, lsn, epoch, prev_crc);
        let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
        assert_eq!(rep.kind, kind);
        assert_eq!((rep.offset, rep.lsn), (at, Some(n + 1)));
    }
}

#[test]
fn damage_in_sealed_segment_tail_is_corruption() {
    let (s, l) = build(30);
    let first_seg = l[0].segment.clone();
    let in_first: Vec<_> = l
        .iter()
        .filter(|p| p.segment == first_seg)
        .cloned()
        .collect();
    let last_of_first = in_first.last().expect("records");
    set_len(&s, &first_seg, last_of_first.offset + last_of_first.len - 1);
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::RecordTruncated);
    assert_eq!(
        (rep.segment, rep.offset, rep.lsn),
        (first_seg, last_of_first.offset, Some(last_of_first.lsn))
    );
}

fn segment_paths(s: &SimStorage) -> Vec<std::path::PathBuf> {
    s.list(&wal_dir())
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| wal_dir().join(n))
        .collect()
}

#[test]
fn missing_middle_segment_is_corruption() {
    let (s, _) = build(30);
    let segs = segment_paths(&s);
    s.remove_file(&segs[1]).expect("remove");
    s.sync_dir(&wal_dir()).expect("sync");
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::SegmentMissing);
    assert_eq!(rep.segment, segs[2]);
}

#[test]
fn extra_unparseable_segment_name_is_corruption() {
    let (s, _) = build(5);
    let bad = wal_dir().join("123.wal");
    s.open(&bad, true).expect("create");
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::SegmentBadName);
    assert_eq!(rep.segment, bad);
}

#[test]
fn tmp_and_foreign_files_are_ignored_and_reported() {
    let (s, l) = build(5);
    let tmp = wal_dir().join(format!("{}.tmp", segment_file_name(99)));
    raw_write(&s, &tmp, 0, b"half a header");
    raw_write(&s, &wal_dir().join("README"), 0, b"hi");
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(
        r,
        OpenReport::Clean {
            last: l[4].position
        }
    );
    assert_eq!(w.open_notes().len(), 2, "{:?}", w.open_notes());
    assert!(w.open_notes().iter().any(|n| n.contains(".wal.tmp")));
}

#[test]
fn segment_header_crc_bad_is_corruption() {
    let (s, _) = build(30);
    let segs = segment_paths(&s);
    s.flip_bit(&segs[1], 20, 0).expect("flip");
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::SegmentHeaderChecksum);
    assert_eq!((rep.segment.clone(), rep.offset), (segs[1].clone(), 0));
    // the last segment's header too: a header is synced before its name exists
    let (s, _) = build(30);
    let segs = segment_paths(&s);
    let last = segs.last().expect("seg").clone();
    s.flip_bit(&last, 9, 1).expect("flip");
    assert_eq!(
        corruption(open_err(&s, &wal_dir(), small_opts())).kind,
        CorruptionKind::SegmentHeaderChecksum
    );
}

#[test]
fn short_segment_file_is_corruption() {
    let (s, _) = build(3);
    raw_write(&s, &wal_dir().join(segment_file_name(4)), 0, &[0u8; 10]);
    s.sync_dir(&wal_dir()).expect("sync");
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::SegmentHeaderTruncated);
}

#[test]
fn header_first_lsn_disagreeing_with_name_is_corruption() {
    let (s, _) = build(30);
    let segs = segment_paths(&s);
    let last = segs.last().expect("seg").clone();
    let renamed = wal_dir().join(segment_file_name(100_000));
    s.rename(&last, &renamed).expect("rename");
    s.sync_dir(&wal_dir()).expect("sync");
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::SegmentNameMismatch);
    assert_eq!(rep.segment, renamed);
}

#[test]
fn segment_prev_disagreeing_with_previous_segment_is_corruption() {
    let (s, _) = build(30);
    let segs = segment_paths(&s);
    let bytes = s.contents(&segs[2]).expect("contents");
    let mut h = SegmentHeader::decode(&segs[2], &bytes).expect("header");
    h.prev.crc ^= 1;
    raw_write(&s, &segs[2], 0, &h.encode());
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::SegmentPrevMismatch);
    assert_eq!(rep.segment, segs[2]);
}

#[test]
fn superseded_generation_leftovers_of_reset_are_removed() {
    let (s, mut w, _) = sim_wal_with(30, small_opts());
    let old: Vec<_> = segment_paths(&s)
        .into_iter()
        .map(|p| (p.clone(), s.contents(&p).expect("c")))
        .collect();
    let boundary = Position {
        lsn: 500,
        epoch: 1,
        crc: 42,
    };
    w.reset_to(boundary).expect("reset");
    drop(w);
    // as if the crash came after the new segment was durable but before the removals
    for (p, bytes) in &old {
        raw_write(&s, p, 0, bytes);
    }
    s.sync_dir(&wal_dir()).expect("sync");
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Clean { last: boundary });
    assert_eq!(w.open_notes().len(), old.len());
    assert_eq!(segment_paths(&s).len(), 1);
}

#[test]
fn bad_crc_in_last_record_followed_by_garbage_only_is_torn() {
    // Version 1: a damaged last record cannot be told from a torn write.
    let (s, l) = build_v1(10);
    let last = l.last().expect("records").clone();
    s.flip_bit(&last.segment, last.offset + last.len - 1, 0)
        .expect("flip");
    raw_write(&s, &last.segment, last.offset + last.len, &[0xa5; 50]);
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::TornTailCut { offset, bytes_cut, .. } if offset == last.offset && bytes_cut == last.len + 50),
        "{r:?}"
    );
    assert_eq!(w.last(), l[8].position);
}

#[test]
fn default_options_open_small_log_after_fs_torn_tail() {
    use walship_wal::FsStorage;
    let d = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions::default();
    let (mut w, _) = walship_wal::Wal::open(FsStorage, d.path(), opts).expect("open");
    for i in 1..=5 {
        w.append(&payload(i)).expect("append");
    }
    w.sync().expect("sync");
    let seg = w.segments()[0].clone();
    drop(w);
    let f = FsStorage.open(&seg.path, false).expect("open");
    f.set_len(seg.len_bytes - 3).expect("cut");
    let (w, r) = walship_wal::Wal::open(FsStorage, d.path(), opts).expect("open");
    let rec5 = 32 + payload(5).len() as u64;
    assert!(
        matches!(r, OpenReport::TornTailCut { bytes_cut, .. } if bytes_cut == rec5 - 3),
        "{r:?}"
    );
    assert_eq!(w.last().lsn, 4);
}

#[test]
fn fm_9_2_crash_during_torn_tail_cut_recovers_identically() {
    let n = 12;
    let (_, l) = build(n);
    let last = l.last().expect("records").clone();
    let cut_at = last.offset + last.len / 2;
    // Uninterrupted recovery, for reference.
    let (s_ref, _) = build_v1(n);
    set_len(&s_ref, &last.segment, cut_at);
    let (w_ref, r_ref) = open(&s_ref, &wal_dir(), small_opts());
    // Recovery interrupted: the cut's sync fails, then power is lost.
    let (s, _) = build_v1(n);
    set_len(&s, &last.segment, cut_at);
    s.fail_next_sync(&last.segment).expect("arm");
    match walship_wal::Wal::open(s.clone(), &wal_dir(), small_opts()) {
        Err(WalError::Io {
            op: "sync_data", ..
        }) => {}
        other => panic!("expected the cut's sync to fail, got {other:?}"),
    }
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, r_ref);
    assert_eq!(w.last(), w_ref.last());
    assert_eq!(read_all(&w), read_all(&w_ref));
}

#[test]
fn enospc_append_fails_without_partial_record_and_wal_continues() {
    // A version 1 segment grows with every append, so an append can hit ENOSPC.
    let (s, positions) = sim_v1_log_with(5, WalOptions::default());
    let (mut w, _) = open(&s, &wal_dir(), WalOptions::default());
    s.set_capacity_bytes(s.used_bytes() + 10);
    match w.append(&[7u8; 100]) {
        Err(WalError::Io { op: "write_at", .. }) => {}
        other => panic!("expected ENOSPC write error, got {other:?}"),
    }
    assert!(!w.is_poisoned(), "nothing was written: the WAL can go on");
    assert_eq!(w.last(), positions[4]);
    s.set_capacity_bytes(u64::MAX);
    assert_eq!(w.append(&payload(6)).expect("append"), 6);
    w.sync().expect("sync");
    drop(w);
    let (w, r) = open(&s, &wal_dir(), WalOptions::default());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 6),
        "{r:?}"
    );
    assert_eq!(read_all(&w).len(), 6);
}

#[test]
fn inspect_reports_what_open_would_do_without_changing_anything() {
    let (s, l) = build(12);
    let last = l.last().expect("records").clone();
    set_len(&s, &last.segment, last.offset + 5);
    let before = s.contents(&last.segment).expect("contents");
    let ins = walship_wal::inspect(&s, &wal_dir(), small_opts().max_record_bytes).expect("inspect");
    assert_eq!(ins.torn_tail, Some((last.segment.clone(), last.offset, 5)));
    assert_eq!(ins.last, l[l.len() - 2].position);
    assert_eq!(ins.base, Position::ZERO);
    assert_eq!(
        s.contents(&last.segment).expect("contents"),
        before,
        "inspect is read-only"
    );
    let (w, _) = open(&s, &wal_dir(), small_opts());
    assert_eq!(w.segments(), ins.segments);
    // corruption is reported the same way open reports it
    let (s, l) = build(30);
    let t = l[3].clone();
    s.flip_bit(&t.segment, t.offset + 33, 0).expect("flip");
    let a = corruption(walship_wal::inspect(&s, &wal_dir(), 4096).expect_err("corrupt"));
    let b = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(a, b);
    // a missing directory is NotFound, not created
    match walship_wal::inspect(&s, Path::new("/nowhere/wal"), 4096) {
        Err(WalError::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert!(!s.exists(Path::new("/nowhere")).expect("exists"));
}

/// A segment starting at lsn u64::MAX (header prev u64::MAX - 1) holding one valid record
/// with lsn u64::MAX, followed by `tail`.
fn segment_ending_at_lsn_u64_max(tail: &[u8]) -> (SimStorage, std::path::PathBuf, Position) {
    let s = SimStorage::new(9);
    let dir = wal_dir();
    s.create_dir_all(&dir).expect("mkdir");
    let header = SegmentHeader {
        first_lsn: u64::MAX,
        generation: 1,
        created_epoch: 1,
        prev: Position {
            lsn: u64::MAX - 1,
            epoch: 1,
            crc: 0,
        },
    };
    let mut bytes = header.encode().to_vec();
    let last = encode_record(u64::MAX, 1, 0, b"last", &mut bytes);
    bytes.extend_from_slice(tail);
    let path = dir.join(segment_file_name(u64::MAX));
    raw_write(&s, &path, 0, &bytes);
    (s, path, last)
}

#[test]
fn torn_byte_after_a_record_with_lsn_u64_max_is_cut_and_appending_after_it_is_lsn_exhausted() {
    // The scan computed `last.lsn + 1` unchecked: a panic in debug builds.
    let (s, path, last) = segment_ending_at_lsn_u64_max(&[0xff]);
    let ins = walship_wal::inspect(&s, &wal_dir(), 4096).expect("inspect");
    assert_eq!(ins.last, last);
    let (mut w, r) = open(&s, &wal_dir(), small_opts());
    let offset = (walship_wal::segment::SEGMENT_HEADER_LEN + 32 + 4) as u64;
    assert_eq!(
        r,
        OpenReport::TornTailCut {
            segment: path,
            offset,
            bytes_cut: 1,
            last
        }
    );
    assert_eq!(w.last(), last);
    // Nothing can follow lsn u64::MAX: typed errors, never a wrapped lsn 0.
    assert!(matches!(
        w.append(b"x"),
        Err(WalError::LsnExhausted {
            last_lsn: u64::MAX,
            records: 1
        })
    ));
    assert!(matches!(
        w.append_batch(&[b"x", b"y"]),
        Err(WalError::LsnExhausted {
            last_lsn: u64::MAX,
            records: 2
        })
    ));
    let mut rec = Vec::new();
    encode_record(0, 1, last.crc, b"wrapped", &mut rec);
    assert!(matches!(
        w.append_verified(&rec),
        Err(WalError::Chain(
            walship_wal::record::ChainError::Duplicate {
                expected_lsn: u64::MAX,
                found_lsn: 0
            }
        ))
    ));
    assert!(matches!(
        w.reset_to(last),
        Err(WalError::OutOfRange { lsn: u64::MAX, .. })
    ));
    assert_eq!(w.last(), last, "nothing was written");
}

#[test]
fn batch_that_would_pass_lsn_u64_max_is_refused_before_anything_is_written() {
    let (s, _, last) = segment_ending_at_lsn_u64_max(&[]);
    let (mut w, _) = open(&s, &wal_dir(), small_opts());
    w.truncate_tail(u64::MAX - 1).expect("truncate");
    let before = w.last();
    assert_eq!(before.lsn, u64::MAX - 1);
    assert!(matches!(
        w.append_batch(&[b"x", b"y"]),
        Err(WalError::LsnExhausted { last_lsn, records: 2 }) if last_lsn == u64::MAX - 1
    ));
    assert_eq!(w.last(), before);
    // One record still fits: lsn u64::MAX, chained to the base.
    assert_eq!(w.append(b"z").expect("append"), u64::MAX);
    assert_ne!(w.last(), last, "a different record at lsn u64::MAX");
}

#[test]
fn crc_valid_record_after_lsn_u64_max_is_duplicate_corruption_not_a_wrapped_lsn_0() {
    // In release the scan's lsn wrapped to 0 and a record with lsn 0 chaining by crc was
    // accepted; in debug it panicked.
    let mut next = Vec::new();
    let (_, _, last) = segment_ending_at_lsn_u64_max(&[]);
    encode_record(0, 1, last.crc, b"wrapped", &mut next);
    let (s, path, _) = segment_ending_at_lsn_u64_max(&next);
    let rep = corruption(open_err(&s, &wal_dir(), small_opts()));
    assert_eq!(rep.kind, CorruptionKind::ChainDuplicate);
    assert_eq!(rep.segment, path);
    assert_eq!(
        (rep.offset, rep.lsn),
        (
            (walship_wal::segment::SEGMENT_HEADER_LEN + 32 + 4) as u64,
            None
        )
    );
    assert!(
        rep.expected
            .contains("no record after lsn 18446744073709551615"),
        "{rep}"
    );
    let a = corruption(walship_wal::inspect(&s, &wal_dir(), 4096).expect_err("corrupt"));
    assert_eq!(a, rep);
}
