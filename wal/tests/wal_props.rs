//! Property tests: whatever mix of appends, batches, segment sizes, batch
//! bounds and front truncations, the log reads back exactly what was written,
//! chained, through next_record, next_batch, position_at and after reopen.

mod common;

use common::*;
use proptest::prelude::*;
use walship_wal::sim::SimStorage;
use walship_wal::{OpenReport, Position, Wal, WalOptions, RECORD_HEADER_LEN};

fn cases() -> u32 {
    std::env::var("WALSHIP_WAL_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

#[derive(Clone, Debug)]
enum Step {
    One(Vec<u8>),
    Many(Vec<Vec<u8>>),
}

fn step() -> impl Strategy<Value = Step> {
    let payload = proptest::collection::vec(any::<u8>(), 0..700);
    prop_oneof![
        3 => payload.clone().prop_map(Step::One),
        1 => proptest::collection::vec(payload, 1..6).prop_map(Step::Many),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn log_reads_back_exactly_what_was_written(
        steps in proptest::collection::vec(step(), 1..60),
        segment_size in 200u64..5000,
        batch_max in 1usize..3000,
        front in 0u64..100,
        probe in 0u64..200,
    ) {
        let s = SimStorage::new(1);
        let opts = WalOptions { segment_size_bytes: segment_size, max_record_bytes: 1024, epoch: 3 };
        let (mut w, _) = Wal::open(s.clone(), &wal_dir(), opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for st in &steps {
            match st {
                Step::One(p) => {
                    let lsn = w.append(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(lsn, payloads.len() as u64 + 1);
                    payloads.push(p.clone());
                }
                Step::Many(ps) => {
                    let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
                    let r = w.append_batch(&refs).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(*r.start(), payloads.len() as u64 + 1);
                    payloads.extend(ps.iter().cloned());
                    prop_assert_eq!(*r.end(), payloads.len() as u64);
                }
            }
        }
        w.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let n = payloads.len() as u64;

        // next_record: payloads and chain
        let mut positions: Vec<Position> = Vec::new();
        let mut prev = Position::ZERO;
        for rec in w.reader(1).map_err(|e| TestCaseError::fail(e.to_string()))? {
            let rec = rec.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(rec.payload(), &payloads[rec.lsn() as usize - 1][..]);
            prop_assert_eq!(rec.view().prev_crc(), prev.crc);
            prop_assert_eq!(rec.view().epoch(), 3);
            prev = rec.position();
            positions.push(prev);
        }
        prop_assert_eq!(positions.len() as u64, n);

        // next_batch: same bytes, bounded, contiguous
        let mut r = w.reader(1).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut seen = Vec::new();
        while let Some(b) = r.next_batch(batch_max) {
            let b = b.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(b.count == 1 || b.bytes().len() <= batch_max);
            prop_assert_eq!(b.first_lsn, seen.len() as u64 + 1);
            seen.extend(b.records().map(|v| v.position()));
            prop_assert_eq!(seen.last().copied(), Some(b.last));
        }
        prop_assert_eq!(&seen, &positions);

        // position_at
        let lsn = probe % (n + 2);
        let expected = if lsn == 0 { Some(Position::ZERO) } else { positions.get(lsn as usize - 1).copied() };
        prop_assert_eq!(w.position_at(lsn).map_err(|e| TestCaseError::fail(e.to_string()))?, expected);

        // front truncation keeps a verifiable suffix
        w.truncate_front(front).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let first = w.first_lsn();
        prop_assert!(first <= front.max(1));
        prop_assert_eq!(w.base(), if first == 1 { Position::ZERO } else { positions[first as usize - 2] });
        drop(w);
        let (w, report) = Wal::open(s.clone(), &wal_dir(), opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(report, OpenReport::Clean { last: positions[n as usize - 1] });
        let from = first + probe % (n - first + 2);
        let got: Result<Vec<Position>, _> = w.reader(from).map_err(|e| TestCaseError::fail(e.to_string()))?
            .map(|r| r.map(|x| x.position()))
            .collect();
        let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&got[..], &positions[(from - 1).min(n) as usize..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Arbitrary damage (bytes overwritten anywhere in any segment, or the
    /// last segment cut anywhere): open never panics, and if it succeeds every
    /// record it kept is exactly a record that was written (a prefix of the log).
    #[test]
    fn arbitrary_damage_never_yields_records_that_were_not_written(
        n in 1u64..60,
        seg_pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 1..80),
        cut_instead in any::<bool>(),
    ) {
        let (s, w, positions) = sim_wal_with(n, small_opts());
        let segs = w.segments();
        drop(w);
        let seg = &segs[seg_pick.index(segs.len())];
        let len = seg.len_bytes;
        let off = at.index(len as usize) as u64;
        if cut_instead {
            let last = segs.last().map(|x| x.path.clone()).unwrap_or_default();
            let f = walship_wal::Storage::open(&s, &last, false).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let last_len = segs.last().map(|x| x.len_bytes).unwrap_or(0);
            walship_wal::StorageFile::set_len(&f, off.min(last_len)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        } else {
            let f = walship_wal::Storage::open(&s, &seg.path, false).map_err(|e| TestCaseError::fail(e.to_string()))?;
            walship_wal::StorageFile::write_at(&f, off, &garbage).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        match Wal::open(s.clone(), &wal_dir(), small_opts()) {
            Ok((w, _)) => {
                let last = w.last();
                prop_assert!(last.lsn <= n);
                if last.lsn > 0 {
                    prop_assert_eq!(last, positions[last.lsn as usize - 1]);
                }
                for rec in w.reader(1).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    let rec = rec.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(rec.position(), positions[rec.lsn() as usize - 1]);
                    prop_assert_eq!(rec.payload(), &payload(rec.lsn())[..]);
                }
            }
            Err(walship_wal::WalError::Corruption(r)) => {
                // A cut of the last segment past its header is always a torn tail.
                let last_len = segs.last().map(|x| x.len_bytes).unwrap_or(0);
                prop_assert!(!(cut_instead && off.min(last_len) >= 64), "cut at {off} refused: {r}");
                prop_assert!(r.segment.starts_with(wal_dir()), "{r}");
            }
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
        }
    }
}

#[derive(Clone, Debug)]
enum TailStep {
    Append(Step),
    /// Truncate the tail after `last - n % (last + 1)`.
    TruncateTail(u64),
    Sync,
}

fn tail_step() -> impl Strategy<Value = TailStep> {
    prop_oneof![
        6 => step().prop_map(TailStep::Append),
        1 => any::<u64>().prop_map(TailStep::TruncateTail),
        2 => Just(TailStep::Sync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The tail cache hands out exactly what a reader of the segment returns (same first
    /// lsn, count, last position and bytes) through appends, batches, segment rolls and
    /// tail truncations, for any capacity and batch bound, and nothing above `up_to_lsn`.
    #[test]
    fn tail_cache_batches_equal_reader_batches(
        steps in proptest::collection::vec(tail_step(), 1..60),
        segment_size in 200u64..5000,
        capacity in 0usize..6000,
        batch_max in 1usize..3000,
        cut in 0u64..8,
    ) {
        let s = SimStorage::new(2);
        let opts = WalOptions { segment_size_bytes: segment_size, max_record_bytes: 1024, epoch: 1 };
        let (mut w, _) = Wal::open(s.clone(), &wal_dir(), opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        w.set_tail_cache_bytes(capacity);
        let fail = |e: walship_wal::WalError| TestCaseError::fail(e.to_string());
        for st in &steps {
            match st {
                TailStep::Append(Step::One(p)) => { w.append(p).map_err(fail)?; }
                TailStep::Append(Step::Many(ps)) => {
                    let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
                    w.append_batch(&refs).map_err(fail)?;
                }
                TailStep::TruncateTail(n) => {
                    let last = w.last().lsn;
                    let after = (last - n % (last + 1)).max(w.base().lsn);
                    w.truncate_tail(after).map_err(fail)?;
                }
                TailStep::Sync => { w.sync().map_err(fail)?; }
            }
            let last = w.last().lsn;
            let up_to = last.saturating_sub(cut);
            for from in w.first_lsn().max(1)..=last {
                let Some(t) = w.tail_batch(from, up_to, batch_max) else { continue };
                prop_assert!(from <= up_to);
                prop_assert!(t.last.lsn <= up_to, "nothing above up_to_lsn");
                let mut r = w.reader(from).map_err(fail)?;
                let b = r.next_batch(batch_max).expect("a record at from").map_err(fail)?;
                prop_assert_eq!(t.first_lsn, b.first_lsn);
                // The reader is bounded by the log end only: compare its prefix up to t.last.
                let view: Vec<Position> = b.records().map(|v| v.position()).collect();
                let n = t.count as usize;
                prop_assert_eq!(view.get(n - 1).copied(), Some(t.last));
                prop_assert_eq!(t.bytes, &b.bytes()[..t.bytes.len()]);
                if t.last.lsn < up_to {
                    // Not cut by up_to_lsn: cut where the reader cuts (max_bytes, segment end).
                    prop_assert_eq!(n, view.len());
                }
            }
            if matches!(st, TailStep::Append(_)) && capacity >= 1024 + RECORD_HEADER_LEN {
                // What was just written is served from memory.
                prop_assert!(w.tail_batch(last, last, batch_max).is_some());
            }
        }
    }
}
