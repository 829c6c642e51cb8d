//! The read-only scan of walship-recover must say exactly what `Wal::open`
//! would do (clean / cut this torn tail / refuse with this corruption) and
//! what `walship_wal::inspect` says, and must not change a byte while saying
//! it. Exhaustive over small damage of a small log on the simulated storage.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use walship_recovery::scan::{confirm_with_wal, scan_wal, ScanEnd, ScanOptions, WalScan};
use walship_wal::sim::SimStorage;
use walship_wal::{OpenReport, Storage, StorageFile, Wal, WalError, WalOptions};

const MAX: u32 = 1024;

fn opts() -> WalOptions {
    WalOptions {
        segment_size_bytes: 200,
        max_record_bytes: MAX,
        ..WalOptions::default()
    }
}

fn wal_dir() -> PathBuf {
    PathBuf::from("/node/wal")
}

/// A log of 12 records over several 200-byte segments.
fn build() -> SimStorage {
    let s = SimStorage::new(7);
    let (mut wal, _) = Wal::open(s.clone(), &wal_dir(), opts()).expect("open");
    for i in 0..12u32 {
        if i == 6 {
            wal.set_epoch(3);
        }
        wal.append(format!("record-{i}").as_bytes())
            .expect("append");
    }
    wal.sync().expect("sync");
    s
}

/// The same log with every segment rewritten in format version 1 (header
/// version 1, the file ending right after its last record), as builds before
/// preallocation left it.
fn build_v1() -> SimStorage {
    use walship_wal::segment::{SegmentHeader, SEGMENT_FORMAT_VERSION_1, SEGMENT_HEADER_LEN};
    let s = build();
    for path in segments(&s) {
        let bytes = s.contents(&path).expect("contents");
        let header = SegmentHeader::decode(&path, &bytes).expect("header");
        let mut end = SEGMENT_HEADER_LEN;
        while let Ok(v) = walship_wal::decode_record(&bytes[end..], MAX) {
            end += v.bytes().len();
        }
        let mut out = header.encode_version(SEGMENT_FORMAT_VERSION_1).to_vec();
        out.extend_from_slice(&bytes[SEGMENT_HEADER_LEN..end]);
        let f = s.open(&path, false).expect("open");
        f.set_len(0).expect("set_len");
        f.write_at(0, &out).expect("write");
        f.sync_data().expect("sync");
    }
    s
}

/// `build` (format version 2, preallocated) or `build_v1`.
fn build_version(v1: bool) -> SimStorage {
    if v1 {
        build_v1()
    } else {
        build()
    }
}

fn segments(s: &SimStorage) -> Vec<PathBuf> {
    s.list(&wal_dir())
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| wal_dir().join(n))
        .collect()
}

fn contents(s: &SimStorage) -> Vec<(String, Vec<u8>)> {
    s.list(&wal_dir())
        .expect("list")
        .into_iter()
        .map(|n| {
            let c = s.contents(&wal_dir().join(&n)).expect("contents");
            (n, c)
        })
        .collect()
}

fn scan(s: &SimStorage) -> WalScan {
    scan_wal(
        s,
        &wal_dir(),
        ScanOptions {
            max_record_bytes: MAX,
        },
        None,
        &mut |_, _, _| ControlFlow::Continue(()),
    )
    .expect("scan")
}

/// Scans read-only, then opens, and checks they agree.
fn check(s: &SimStorage, case: &str) {
    let before = contents(s);
    let sc = scan(s);
    assert_eq!(contents(s), before, "{case}: the scan changed bytes");
    let mut confirmed = sc.clone();
    if let Err(e) = confirm_with_wal(
        s,
        &wal_dir(),
        ScanOptions {
            max_record_bytes: MAX,
        },
        &mut confirmed,
    ) {
        panic!("{case}: {e}");
    }
    assert_eq!(
        contents(s),
        before,
        "{case}: walship_wal::inspect changed bytes"
    );
    let opened = Wal::open(s.clone(), &wal_dir(), opts());
    match (&sc.end, opened) {
        (ScanEnd::Clean, Ok((wal, OpenReport::Clean { last }))) => {
            assert_eq!(last, sc.last, "{case}");
            assert_eq!(wal.last(), sc.last, "{case}");
        }
        (ScanEnd::Clean, Ok((_, OpenReport::Empty))) => assert_eq!(sc.records, 0, "{case}"),
        (
            ScanEnd::TornTail {
                segment,
                offset,
                bytes,
                ..
            },
            Ok((
                _,
                OpenReport::TornTailCut {
                    segment: s2,
                    offset: o2,
                    bytes_cut,
                    last,
                },
            )),
        ) => {
            assert_eq!((segment, *offset, *bytes), (&s2, o2, bytes_cut), "{case}");
            assert_eq!(last, sc.last, "{case}");
        }
        (ScanEnd::Corrupt(r), Err(WalError::Corruption(r2))) => {
            assert_eq!(
                (&r.segment, r.offset, r.kind, r.lsn),
                (&r2.segment, r2.offset, r2.kind, r2.lsn),
                "{case}: scan {r} / open {r2}"
            );
        }
        (end, other) => panic!("{case}: scan says {end:?}, open says {other:?}"),
    }
}

#[test]
fn clean_log_scans_clean_like_open() {
    let s = build();
    assert!(segments(&s).len() >= 3);
    check(&s, "clean");
    assert_eq!(scan(&s).records, 12);
}

#[test]
fn every_single_bit_flip_is_judged_like_open() {
    for v1 in [false, true] {
        let base = build_version(v1);
        let segs = segments(&base);
        for (si, seg) in segs.iter().enumerate() {
            let len = base.contents(seg).expect("contents").len() as u64;
            for off in 0..len {
                for bit in [(off % 8) as u8, 7 - (off % 8) as u8] {
                    let s = build_version(v1);
                    s.flip_bit(seg, off, bit).expect("flip");
                    check(&s, &format!("v1 {v1} segment {si} offset {off} bit {bit}"));
                }
            }
        }
    }
}

#[test]
fn every_zeroed_suffix_of_the_last_segment_is_judged_like_open() {
    // A torn write into a preallocated segment leaves zeros from the tear on.
    for v1 in [false, true] {
        let base = build_version(v1);
        let last = segments(&base).pop().expect("segment");
        let len = base.contents(&last).expect("contents").len() as u64;
        for from in 64..len {
            let s = build_version(v1);
            s.zero_range(&last, from, len - from).expect("zero");
            check(&s, &format!("v1 {v1} zeroed from {from}"));
        }
    }
}

#[test]
fn a_version_1_log_scans_clean_like_open() {
    let s = build_v1();
    check(&s, "clean v1");
    assert_eq!(scan(&s).records, 12);
    assert!(scan(&s).segments.iter().all(|g| g.format_version == 1));
}

#[test]
fn every_truncation_of_the_last_segment_is_judged_like_open() {
    for v1 in [false, true] {
        every_truncation_of_the_last_segment(v1);
    }
}

fn every_truncation_of_the_last_segment(v1: bool) {
    let base = build_version(v1);
    let last = segments(&base).pop().expect("segment");
    let len = base.contents(&last).expect("contents").len() as u64;
    for cut in 0..len {
        let s = build_version(v1);
        let f = s.open(&last, false).expect("open");
        f.set_len(cut).expect("set_len");
        f.sync_data().expect("sync");
        check(&s, &format!("cut at {cut}"));
    }
}

#[test]
fn trailing_garbage_and_zeros_are_judged_like_open() {
    for (name, tail) in [
        ("zeros", vec![0u8; 100]),
        ("short garbage", vec![0xab; 20]),
        ("long garbage", vec![0x5a; 300]),
    ] {
        let s = build();
        let last = segments(&s).pop().expect("segment");
        // Version 2: a torn append lands at the end of the records, inside
        // the zero-filled tail.
        let end = s
            .contents(&last)
            .expect("contents")
            .iter()
            .rposition(|&b| b != 0)
            .expect("records") as u64
            + 1;
        let f = s.open(&last, false).expect("open");
        f.write_at(end, &tail).expect("write");
        f.sync_data().expect("sync");
        check(&s, &format!("{name} at the end of the records"));
        let s = build_v1();
        let last = segments(&s).pop().expect("segment");
        let f = s.open(&last, false).expect("open");
        let len = f.len().expect("len");
        f.write_at(len, &tail).expect("write");
        f.sync_data().expect("sync");
        check(&s, name);
    }
}

#[test]
fn a_missing_or_renamed_segment_is_judged_like_open() {
    let s = build();
    let segs = segments(&s);
    s.remove_file(&segs[1]).expect("remove");
    check(&s, "missing middle segment");
    assert!(matches!(scan(&s).end, ScanEnd::Corrupt(_)));

    let s = build();
    let segs = segments(&s);
    let bad = Path::new("/node/wal/00000000000000000099.wal");
    s.rename(&segs[1], bad).expect("rename");
    check(&s, "renamed segment");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Several random byte changes anywhere, a random cut of the last
        /// segment and random trailing bytes: the scan never panics, never
        /// writes, and agrees with `Wal::open`.
        #[test]
        fn random_damage_is_judged_like_open(
            v1 in any::<bool>(),
            edits in proptest::collection::vec((0usize..4, 0u64..400, any::<u8>()), 0..4),
            cut in proptest::option::of(0u64..400),
            tail in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let s = build_version(v1);
            let segs = segments(&s);
            for (si, off, byte) in edits {
                let seg = &segs[si % segs.len()];
                let len = s.contents(seg).expect("contents").len() as u64;
                if len == 0 { continue; }
                let f = s.open(seg, false).expect("open");
                f.write_at(off % len, &[byte]).expect("write");
                f.sync_data().expect("sync");
            }
            let last = segs.last().expect("segment");
            let f = s.open(last, false).expect("open");
            if let Some(c) = cut {
                let len = f.len().expect("len");
                f.set_len(c.min(len)).expect("set_len");
            }
            let len = f.len().expect("len");
            f.write_at(len, &tail).expect("tail");
            f.sync_data().expect("sync");
            check(&s, "random damage");
        }
    }
}

#[test]
fn superseded_generation_leftovers_are_judged_like_open() {
    let s = build();
    let old: Vec<(PathBuf, Vec<u8>)> = segments(&s)
        .into_iter()
        .map(|p| {
            let c = s.contents(&p).expect("contents");
            (p, c)
        })
        .collect();
    let (mut wal, _) = Wal::open(s.clone(), &wal_dir(), opts()).expect("open");
    let boundary = walship_wal::Position {
        lsn: 40,
        epoch: 4,
        crc: 0x1234_5678,
    };
    wal.reset_to(boundary).expect("reset_to");
    wal.set_epoch(4);
    wal.append(b"after reset").expect("append");
    wal.sync().expect("sync");
    drop(wal);
    // A crash between the new generation and the removal of the old one leaves these behind.
    for (p, c) in &old {
        let f = s.open(p, true).expect("recreate");
        f.write_at(0, c).expect("write");
        f.sync_data().expect("sync");
    }
    s.sync_dir(&wal_dir()).expect("sync dir");
    let sc = scan(&s);
    assert!(!sc.superseded.is_empty(), "leftovers listed");
    assert_eq!(sc.start, boundary);
    assert_eq!(sc.last.lsn, 41);
    check(&s, "superseded leftovers");
}
