//! Control records (spec/wal-format.md, "Control records" and "Format
//! versions"): a record with the control flag, stored only in segments of
//! format version 3; older segments are sealed (or, empty, replaced) before
//! one is written; a control record found in an older segment, or with a
//! malformed body, is corruption, never a torn tail; logs of versions 1 and 2
//! still open and take control records after a roll.

mod common;

use std::path::Path;

use common::*;
use walship_wal::control::{ControlError, ControlRecord};
use walship_wal::record::{encode_record_with_flags, FLAG_CONTROL};
use walship_wal::segment::{
    SegmentHeader, SEGMENT_FORMAT_VERSION, SEGMENT_FORMAT_VERSION_2, SEGMENT_HEADER_LEN,
};
use walship_wal::sim::SimStorage;
use walship_wal::{CorruptionKind, OpenReport, Storage, StorageFile, Wal, WalError};

fn epoch_start(epoch: u64) -> ControlRecord {
    ControlRecord::EpochStart {
        epoch,
        primary: "n2".to_string(),
    }
}

/// Rewrites the header of every segment in `dir` as format `version` (the
/// rest of the file is kept: versions 2 and 3 share the preallocated layout).
fn set_header_version(s: &SimStorage, dir: &Path, version: u16) {
    for name in s.list(dir).expect("list") {
        let path = dir.join(&name);
        let bytes = s.contents(&path).expect("contents");
        let header = SegmentHeader::decode(&path, &bytes).expect("header");
        let f = s.open(&path, false).expect("open");
        f.write_at(0, &header.encode_version(version))
            .expect("write");
        f.sync_data().expect("sync");
    }
}

/// Which records of the log are control records, in lsn order.
fn control_flags(w: &Wal<SimStorage>) -> Vec<bool> {
    let mut r = w.reader(0).expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record() {
        let rec = rec.expect("valid record");
        out.push(rec.bytes()[28] & 1 == 1);
    }
    out
}

#[test]
fn a_control_record_is_appended_read_back_and_survives_a_crash_and_reopen() {
    let (s, mut w, _) = sim_wal_with(3, small_opts());
    let pos = w.append_control(&epoch_start(1)).expect("append control");
    assert_eq!(pos.lsn, 4);
    w.append(&payload(5)).expect("append");
    w.sync().expect("sync");
    assert_eq!(control_flags(&w), [false, false, false, true, false]);
    let rec = {
        let mut r = w.reader(4).expect("reader");
        r.next_record().expect("record").expect("valid")
    };
    assert_eq!(
        ControlRecord::decode(rec.payload()).expect("body"),
        epoch_start(1)
    );
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 5),
        "{r:?}"
    );
    assert_eq!(control_flags(&w), [false, false, false, true, false]);
    assert!(w
        .segments()
        .iter()
        .all(|seg| seg.format_version == SEGMENT_FORMAT_VERSION));
}

#[test]
fn a_control_record_of_another_epoch_or_with_a_bad_node_id_is_refused_and_nothing_is_written() {
    let (_s, mut w, _) = sim_wal_with(2, small_opts());
    let err = w
        .append_control(&epoch_start(2))
        .expect_err("wal epoch is 1");
    assert!(
        matches!(
            err,
            WalError::InvalidControl(ControlError::EpochMismatch {
                lsn: 3,
                body: 2,
                header: 1
            })
        ),
        "{err}"
    );
    let err = w
        .append_control(&ControlRecord::EpochStart {
            epoch: 1,
            primary: String::new(),
        })
        .expect_err("empty node id");
    assert!(matches!(err, WalError::InvalidControl(_)), "{err}");
    assert_eq!(w.last().lsn, 2);
    w.append(&payload(3)).expect("the log is still appendable");
}

#[test]
fn a_version_2_segment_holding_records_is_sealed_before_a_control_record() {
    let (s, w, positions) = sim_wal_with(2, small_opts());
    drop(w);
    set_header_version(&s, &wal_dir(), SEGMENT_FORMAT_VERSION_2);
    let (mut w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Clean { last: positions[1] });
    assert_eq!(w.segments().len(), 1);
    assert_eq!(w.segments()[0].format_version, SEGMENT_FORMAT_VERSION_2);
    // Data records still go into the version 2 segment.
    w.append(&payload(3)).expect("append");
    assert_eq!(w.segments().len(), 1);
    w.append_control(&epoch_start(1)).expect("append control");
    let segs = w.segments();
    assert_eq!(segs.len(), 2, "rolled before the control record");
    assert_eq!(segs[0].format_version, SEGMENT_FORMAT_VERSION_2);
    assert_eq!(segs[0].last.lsn, 3);
    assert_eq!(segs[1].format_version, SEGMENT_FORMAT_VERSION);
    assert_eq!(segs[1].first_lsn, 4);
    assert_eq!(
        w.durable_lsn(),
        3,
        "the roll sealed (synced) the old segment"
    );
    w.sync().expect("sync");
    drop(w);
    s.crash_with_torn_write();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 4),
        "{r:?}"
    );
    assert_eq!(control_flags(&w), [false, false, false, true]);
}

#[test]
fn an_empty_version_2_segment_is_replaced_by_a_version_3_one_for_a_control_record() {
    let s = SimStorage::new(3);
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(r, OpenReport::Empty);
    drop(w);
    set_header_version(&s, &wal_dir(), SEGMENT_FORMAT_VERSION_2);
    let (mut w, _) = open(&s, &wal_dir(), small_opts());
    assert_eq!(w.segments()[0].format_version, SEGMENT_FORMAT_VERSION_2);
    w.append_control(&epoch_start(1)).expect("append control");
    let segs = w.segments();
    assert_eq!(segs.len(), 1, "same name, replaced");
    assert_eq!(segs[0].format_version, SEGMENT_FORMAT_VERSION);
    assert_eq!(segs[0].first_lsn, 1);
    w.sync().expect("sync");
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 1),
        "{r:?}"
    );
    assert_eq!(control_flags(&w), [true]);
    assert_eq!(s.list(&wal_dir()).expect("list").len(), 1, "no leftover");
}

#[test]
fn the_replica_path_rolls_a_version_2_segment_before_a_shipped_control_record() {
    // The primary's log: 2 data records, a control record, 1 data record.
    let (_ps, mut primary, _) = sim_wal_with(2, small_opts());
    primary.append_control(&epoch_start(1)).expect("control");
    primary.append(&payload(4)).expect("append");
    primary.sync().expect("sync");
    let mut shipped = Vec::new();
    let mut r = primary.reader(1).expect("reader");
    while let Some(rec) = r.next_record() {
        shipped.extend_from_slice(rec.expect("valid").bytes());
    }
    // A replica whose log is empty, in a version 2 segment.
    let s = SimStorage::new(11);
    drop(open(&s, &wal_dir(), small_opts()).0);
    set_header_version(&s, &wal_dir(), SEGMENT_FORMAT_VERSION_2);
    let (mut w, _) = open(&s, &wal_dir(), small_opts());
    let first_two: usize = {
        let mut r = primary.reader(1).expect("reader");
        (0..2)
            .map(|_| {
                r.next_record()
                    .expect("record")
                    .expect("valid")
                    .bytes()
                    .len()
            })
            .sum()
    };
    w.append_verified_batch(&shipped[..first_two])
        .expect("data records");
    assert_eq!(w.segments().len(), 1);
    let last = w
        .append_verified_batch(&shipped[first_two..])
        .expect("control + data");
    assert_eq!(last, primary.last());
    let segs = w.segments();
    assert_eq!(segs.len(), 2);
    assert_eq!(
        (segs[0].format_version, segs[0].last.lsn),
        (SEGMENT_FORMAT_VERSION_2, 2)
    );
    assert_eq!(
        (segs[1].format_version, segs[1].first_lsn),
        (SEGMENT_FORMAT_VERSION, 3)
    );
    w.sync().expect("sync");
    drop(w);
    s.crash();
    let (w, r) = open(&s, &wal_dir(), small_opts());
    assert_eq!(
        r,
        OpenReport::Clean {
            last: primary.last()
        }
    );
    assert_eq!(control_flags(&w), [false, false, true, false]);
}

/// Places a crc-valid record with the control flag and `body` as lsn 3 of a
/// 2-record log, in place, synced; returns the storage and the record's offset.
fn log_with_raw_control(version: u16, body: &[u8]) -> (SimStorage, u64) {
    let (s, w, positions) = sim_wal_with(2, small_opts());
    let seg = w.segments()[0].clone();
    drop(w);
    let mut rec = Vec::new();
    encode_record_with_flags(3, 1, positions[1].crc, FLAG_CONTROL, body, &mut rec);
    let f = s.open(&seg.path, false).expect("open");
    f.write_at(seg.len_bytes, &rec).expect("write");
    f.sync_data().expect("sync");
    drop(f);
    if version != SEGMENT_FORMAT_VERSION {
        set_header_version(&s, &wal_dir(), version);
    }
    (s, seg.len_bytes)
}

#[test]
fn a_control_record_in_a_version_2_segment_is_corruption_not_a_torn_tail() {
    let body = epoch_start(1).encode().expect("body");
    // The same bytes in a version 3 segment are a valid log end.
    let (s, _) = log_with_raw_control(SEGMENT_FORMAT_VERSION, &body);
    let (_, r) = open(&s, &wal_dir(), small_opts());
    assert!(
        matches!(r, OpenReport::Clean { last } if last.lsn == 3),
        "{r:?}"
    );
    let (s, at) = log_with_raw_control(SEGMENT_FORMAT_VERSION_2, &body);
    assert!(at > SEGMENT_HEADER_LEN as u64);
    let seg = wal_dir().join(s.list(&wal_dir()).expect("list")[0].clone());
    let before = s.contents(&seg).expect("contents");
    match open_err(&s, &wal_dir(), small_opts()) {
        WalError::Corruption(rep) => {
            assert_eq!(rep.kind, CorruptionKind::RecordBadFlags, "{rep:?}");
            assert_eq!(rep.offset, at);
        }
        e => panic!("expected corruption, got {e}"),
    }
    assert_eq!(s.contents(&seg).expect("contents"), before, "nothing cut");
}

#[test]
fn a_control_record_with_a_malformed_body_at_the_end_of_the_log_is_corruption_not_a_torn_tail() {
    let mut body = epoch_start(1).encode().expect("body");
    body[1] = 9; // body version
    let (s, _) = log_with_raw_control(SEGMENT_FORMAT_VERSION, &body);
    match open_err(&s, &wal_dir(), small_opts()) {
        WalError::Corruption(rep) => {
            assert_eq!(rep.kind, CorruptionKind::RecordBadControl, "{rep:?}")
        }
        e => panic!("expected corruption, got {e}"),
    }
    // A body naming another epoch than its header: same verdict.
    let body = epoch_start(7).encode().expect("body");
    let (s, _) = log_with_raw_control(SEGMENT_FORMAT_VERSION, &body);
    match open_err(&s, &wal_dir(), small_opts()) {
        WalError::Corruption(rep) => {
            assert_eq!(rep.kind, CorruptionKind::RecordBadControl, "{rep:?}")
        }
        e => panic!("expected corruption, got {e}"),
    }
}
