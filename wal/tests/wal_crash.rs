//! Crash safety on SimStorage: every record reported durable survives a crash,
//! with its identity unchanged; a torn crash never loses durable records
//! silently (it is cut only past the durable point, or refused with a report).

mod common;

use std::sync::Arc;
use std::thread;

use common::*;
use proptest::prelude::*;
use walship_wal::sim::{SimConfig, SimStorage};
use walship_wal::{OpenReport, Position, SharedWal, Wal, WalError};

fn seeds() -> u64 {
    std::env::var("WALSHIP_WAL_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[derive(Clone, Debug)]
enum Op {
    Append(u16),
    Batch(u8, u16),
    Sync,
    Crash,
    TornCrash,
    TruncateFront,
    TruncateTail,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..300).prop_map(Op::Append),
        2 => (1u8..6, 0u16..200).prop_map(|(n, l)| Op::Batch(n, l)),
        3 => Just(Op::Sync),
        1 => Just(Op::Crash),
        1 => Just(Op::TornCrash),
        1 => Just(Op::TruncateFront),
        1 => Just(Op::TruncateTail),
    ]
}

/// The model: every position ever written, and the durable prefix length.
struct Model {
    written: Vec<Position>,
    durable: u64,
    first: u64,
}

fn reopen(s: &SimStorage, m: &mut Model, torn: bool) -> Result<Wal<SimStorage>, TestCaseError> {
    match Wal::open(s.clone(), &wal_dir(), small_opts()) {
        Ok((w, report)) => {
            let last = w.last();
            prop_assert!(
                last.lsn >= m.durable,
                "durable lsn {} lost: last {:?} ({report:?})",
                m.durable,
                last
            );
            if let OpenReport::TornTailCut { last: l, .. } = report {
                prop_assert!(l.lsn >= m.durable);
            }
            // Everything kept is what was written, identity for identity.
            if last.lsn > 0 {
                prop_assert_eq!(Some(last), m.written.get(last.lsn as usize - 1).copied());
            }
            let mut r = w
                .reader(0)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut n = 0;
            while let Some(rec) = r.next_record() {
                let rec = rec.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    Some(rec.position()),
                    m.written.get(rec.lsn() as usize - 1).copied()
                );
                n += 1;
            }
            prop_assert_eq!(n, last.lsn + 1 - w.first_lsn());
            m.written.truncate(last.lsn as usize);
            m.durable = last.lsn;
            m.first = w.first_lsn();
            Ok(w)
        }
        Err(WalError::Corruption(rep)) if torn => {
            // Out-of-order write-back can leave a valid record behind a hole:
            // the decision table refuses rather than cut. It may only happen
            // past the durable point.
            prop_assert!(
                rep.lsn.unwrap_or(0) > m.durable,
                "refused inside the durable prefix: {rep}"
            );
            Err(TestCaseError::reject(
                "torn crash left a hole before valid records (refused by design)",
            ))
        }
        Err(e) => Err(TestCaseError::fail(format!("open after crash: {e}"))),
    }
}

/// `v1_records`: start from a format version 1 log of that many synced
/// records (segments not preallocated, as older builds wrote them).
fn run(seed: u64, ops: &[Op], v1_records: u64) -> Result<(), TestCaseError> {
    let s = SimStorage::with_config(seed, SimConfig::default());
    let mut m = Model {
        written: Vec::new(),
        durable: 0,
        first: 1,
    };
    if v1_records > 0 {
        let (w, positions) = {
            let (_, w, p) = sim_wal_with_storage(&s, v1_records, small_opts());
            (w, p)
        };
        drop(w);
        downgrade_to_v1(&s, &wal_dir());
        m.written = positions;
        m.durable = v1_records;
    }
    let (mut w, _) = Wal::open(s.clone(), &wal_dir(), small_opts())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for op in ops {
        match op {
            Op::Append(len) => {
                w.append(&payload(*len as u64))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.written.push(w.last());
            }
            Op::Batch(n, len) => {
                let ps: Vec<Vec<u8>> = (0..*n).map(|k| payload(*len as u64 + k as u64)).collect();
                let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
                let range = w
                    .append_batch(&refs)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut r = w
                    .reader(*range.start())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                while let Some(rec) = r.next_record() {
                    m.written.push(
                        rec.map_err(|e| TestCaseError::fail(e.to_string()))?
                            .position(),
                    );
                }
            }
            Op::Sync => {
                m.durable = w.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Op::TruncateFront => {
                let target = m.durable / 2;
                w.truncate_front(target)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(w.first_lsn() <= target.max(m.first));
                m.first = w.first_lsn();
            }
            Op::TruncateTail => {
                let base = w.first_lsn() - 1;
                let after = base + (w.last().lsn - base) / 2;
                w.truncate_tail(after)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.written.truncate(after as usize);
                // Everything kept is in a synced file.
                m.durable = after;
                prop_assert_eq!(w.durable_lsn(), after);
            }
            Op::Crash | Op::TornCrash => {
                // durable_lsn may exceed what the model saw (segment seals sync too).
                m.durable = m.durable.max(w.durable_lsn());
                drop(w);
                let torn = matches!(op, Op::TornCrash);
                if torn {
                    s.crash_with_torn_write();
                } else {
                    s.crash();
                }
                w = reopen(&s, &mut m, torn)?;
            }
        }
    }
    m.durable = m.durable.max(w.durable_lsn());
    drop(w);
    s.crash();
    reopen(&s, &mut m, false)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: seeds() as u32, max_global_rejects: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn every_record_reported_durable_survives_crash(seed: u64, ops in proptest::collection::vec(op(), 1..120)) {
        run(seed, &ops, 0)?;
    }

    #[test]
    fn every_record_reported_durable_survives_crash_starting_from_a_version_1_log(seed: u64, v1 in 1u64..40, ops in proptest::collection::vec(op(), 1..120)) {
        run(seed, &ops, v1)?;
    }
}

#[test]
fn plain_crash_loses_exactly_the_unsynced_suffix() {
    for seed in 0..seeds() {
        let s = SimStorage::new(seed);
        let (mut w, _) = open(&s, &wal_dir(), small_opts());
        let mut positions = Vec::new();
        for i in 1..=(20 + seed % 30) {
            w.append(&payload(i)).expect("append");
            positions.push(w.last());
            if i % 7 == 0 {
                w.sync().expect("sync");
            }
        }
        let durable = w.durable_lsn();
        drop(w);
        s.crash();
        let (w, _) = open(&s, &wal_dir(), small_opts());
        // Nothing unsynced can survive a plain crash, and nothing synced is lost.
        assert_eq!(w.last().lsn, durable, "seed {seed}");
        assert_eq!(read_all(&w), positions[..durable as usize].to_vec());
    }
}

#[test]
fn group_commit_durable_records_survive_crash() {
    for seed in 0..4 {
        let s = SimStorage::new(seed);
        let (w, _) = open(&s, &wal_dir(), small_opts());
        let shared = SharedWal::new(w);
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let w = Arc::clone(&shared);
                thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..30u64 {
                        if i % 3 == 0 {
                            // written but never waited for: may or may not survive
                            w.append(&payload(t * 1000 + i)).expect("append");
                        } else {
                            let p = payload(t * 1000 + i);
                            acked.push((w.append_durable(&p).expect("durable"), p));
                        }
                    }
                    acked
                })
            })
            .collect();
        let acked: Vec<(u64, Vec<u8>)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        drop(shared);
        s.crash();
        let (w, _) = open(&s, &wal_dir(), small_opts());
        for (lsn, p) in &acked {
            let rec = w
                .reader(*lsn)
                .expect("reader")
                .next()
                .expect("retained")
                .expect("valid");
            assert_eq!(rec.payload(), &p[..], "acked lsn {lsn} survives");
        }
    }
}

#[test]
fn crash_during_roll_keeps_every_sealed_record() {
    // Sync failures armed at each successive sync position exercise every
    // step of roll/seal/create: the WAL must poison, and a crash must keep
    // everything that was durable.
    for n in 0..12u64 {
        let s = SimStorage::new(n);
        let (mut w, _) = open(&s, &wal_dir(), small_opts());
        s.fail_syncs_after(n);
        let mut durable = 0;
        for i in 1..=100u64 {
            match w
                .append(&payload(i))
                .and_then(|_| if i % 5 == 0 { w.sync() } else { Ok(durable) })
            {
                Ok(d) => durable = d.max(w.durable_lsn()),
                Err(WalError::Io { .. }) | Err(WalError::Poisoned) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        durable = durable.max(w.durable_lsn());
        drop(w);
        s.clear_faults();
        s.crash();
        let (w, _) = open(&s, &wal_dir(), small_opts());
        assert!(
            w.last().lsn >= durable,
            "n {n}: last {} < durable {durable}",
            w.last().lsn
        );
        assert_eq!(read_all(&w).len() as u64, w.last().lsn);
    }
}

#[test]
fn torn_crash_is_cut_past_durable_or_refused_never_lossy() {
    let mut cuts = 0;
    let mut refusals = 0;
    for seed in 0..seeds() * 5 {
        let s = SimStorage::new(seed);
        let (mut w, _) = open(&s, &wal_dir(), small_opts());
        for i in 1..=10u64 {
            w.append(&payload(i)).expect("append");
        }
        let durable = w.sync().expect("sync");
        for i in 11..=(12 + seed % 5) {
            w.append(&payload(i * 13)).expect("append");
        }
        drop(w);
        s.crash_with_torn_write();
        match Wal::open(s.clone(), &wal_dir(), small_opts()) {
            Ok((w, report)) => {
                assert!(w.last().lsn >= durable, "seed {seed}: {report:?}");
                if matches!(report, OpenReport::TornTailCut { .. }) {
                    cuts += 1;
                }
            }
            Err(WalError::Corruption(rep)) => {
                assert!(
                    rep.lsn.unwrap_or(0) > durable,
                    "seed {seed}: refused inside durable prefix: {rep}"
                );
                refusals += 1;
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
    assert!(cuts > 0, "torn crashes exercised the cut path");
    let _ = refusals;
}
