//! FM-4.3 / FM-10.5: a crash at every write, sync, rename and remove of an
//! install leaves, after restart, exactly the old state or exactly the new
//! one — never a partial snapshot, never the new snapshot with the old WAL.

mod common;

use std::path::Path;

use common::*;
use walship_snapshot::{
    BoundaryMembership, Limits, RecoveryReport, SnapshotError, SnapshotStore, VerifiedSnapshot,
};
use walship_wal::sim::SimStorage;
use walship_wal::{encode_record, Position, Storage, Wal};

/// The replica's state before the install.
struct Before {
    snapshot: Position,
    snapshot_state: Vec<u8>,
    records: Vec<(Position, Vec<u8>)>,
}

fn setup(seed: u64) -> (SimStorage, Before, Shipped) {
    let sim = SimStorage::new(seed);
    sim.create_dir_all(Path::new("/node")).expect("mkdir");
    sim.sync_dir(Path::new("/")).expect("sync root");
    let wal = wal_with(&sim, &wal_dir(), 10, 1);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let old_state = state_bytes(3000, 1);
    let mut src = BytesState {
        lsn: 5,
        bytes: old_state.clone(),
        restored_boundary: None,
    };
    let old = store
        .create(512, &mut src, &mut |lsn| {
            Ok(wal.position_at(lsn).expect("position").expect("retained"))
        })
        .expect("create old snapshot");
    let before = Before {
        snapshot: old.boundary,
        snapshot_state: old_state,
        records: wal_records(&wal),
    };
    assert_eq!(before.records.len(), 10);
    // The primary's history: the same records 1..=10, continuing to 20.
    let ps = SimStorage::new(seed ^ 0xff);
    let pwal = wal_with(&ps, &wal_dir(), 20, 1);
    assert_eq!(pwal.position_at(10).expect("pos"), Some(wal.last()));
    let boundary = pwal.last();
    let shipped = primary_snapshot(boundary, state_bytes(9000, 2), 1000);
    assert_eq!(shipped.offer.chunk_count, 9);
    (sim, before, shipped)
}

type Step = Result<(), SnapshotError>;

fn install<S: Storage>(store: &SnapshotStore<S>, wal: &mut Wal<S>, shipped: &Shipped) -> Step {
    let mut inst = store.begin_install(&shipped.offer)?;
    for c in &shipped.chunks {
        inst.push_chunk(c)?;
    }
    let verified: VerifiedSnapshot<S> = inst.finish(&shipped.end)?;
    verified.commit(wal, None)?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Seen {
    Old,
    New,
}

/// Runs the install allowing `k` storage steps, crashes, restarts, and
/// checks the state is exactly the old or exactly the new one.
fn run(seed: u64, k: u64, torn: bool) -> (Seen, bool) {
    let (sim, before, shipped) = setup(seed);
    let lim = StepLimit::new(sim.clone());
    let (mut store, _) =
        SnapshotStore::open(lim.clone(), &snap_dir(), Limits::default()).expect("open");
    // Intermediate write-back syncs are steps too.
    store.set_install_sync_every_bytes(3000);
    let (mut wal, _) = Wal::open(lim.clone(), &wal_dir(), opts(1)).expect("wal open");
    lim.arm(k);
    let result = install(&store, &mut wal, &shipped);
    let completed = !lim.hit_limit();
    match (&result, completed) {
        (Ok(()), true) => {}
        (Err(e), false) => assert_eq!(
            e.class(),
            walship_snapshot::FailureClass::NodeStop,
            "k={k}: a stopped process is an I/O failure, never a halt: {e}"
        ),
        (r, c) => panic!("k={k}: result {r:?} with limit hit = {}", !c),
    }
    drop(wal);
    drop(store);
    if torn {
        sim.crash_with_torn_write();
    } else {
        sim.crash();
    }

    // Restart.
    let (store, report) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("reopen store");
    assert!(
        tmp_entries(&sim, &snap_dir()).is_empty(),
        "k={k}: tmp left: {report:?}"
    );
    let (mut wal, _) = Wal::open(sim.clone(), &wal_dir(), opts(1)).expect("reopen wal");
    let recovery = store.recover(&mut wal).expect("recover");
    let installed = store.installed().expect("installed");
    assert_eq!(
        installed.len(),
        1,
        "k={k}: exactly one snapshot after recover: {installed:?}"
    );
    let newest = &installed[0];
    store.verify(newest).expect("the visible snapshot is whole");
    let state = restore(&store, newest);
    let seen = if newest.boundary == before.snapshot {
        assert_eq!(
            wal_records(&wal),
            before.records,
            "k={k}: old snapshot with the old WAL"
        );
        assert_eq!(state.bytes, before.snapshot_state);
        assert!(matches!(recovery, RecoveryReport::Consistent { .. }));
        // The old snapshot keeps what it recorded (nothing: created without one).
        assert_eq!(newest.membership, BoundaryMembership::Unrecorded, "k={k}");
        Seen::Old
    } else {
        let b = shipped.offer.boundary;
        assert_eq!(newest.boundary, b, "k={k}: unknown snapshot");
        // FM-10.5: the new snapshot is never read with the old WAL.
        assert_eq!(wal.base(), b, "k={k}: WAL restarts at the boundary");
        assert_eq!(wal.last(), b);
        assert!(wal_records(&wal).is_empty());
        assert_eq!(state.bytes, shipped.state);
        // The configuration file is published with the snapshot, never without it.
        assert_eq!(newest.membership, shipped.membership, "k={k}");
        Seen::New
    };
    if seen == Seen::New {
        // The log continues from the boundary: record b+1 chaining to b.crc.
        let b = shipped.offer.boundary;
        let mut rec = Vec::new();
        encode_record(b.lsn + 1, 1, b.crc, b"next", &mut rec);
        wal.append_verified(&rec)
            .expect("first record after the boundary");
    }
    (seen, completed)
}

#[test]
fn fm_4_3_crash_at_every_install_step_leaves_old_or_new_state_never_mixed() {
    let mut k = 0;
    let mut seen = Vec::new();
    loop {
        let (s, completed) = run(1, k, false);
        seen.push(s);
        if completed {
            break;
        }
        k += 1;
        assert!(k < 500, "install never completes");
    }
    let steps = k;
    eprintln!("install takes {steps} storage steps; outcomes {seen:?}");
    assert!(
        steps >= 15,
        "install has too few steps to be credible: {steps}"
    );
    assert_eq!(seen[0], Seen::Old, "no step taken: old state");
    assert_eq!(*seen.last().expect("runs"), Seen::New);
    // Monotone: once the commit point is durable, every later crash shows New.
    let first_new = seen.iter().position(|s| *s == Seen::New).expect("new");
    assert!(
        seen[first_new..].iter().all(|s| *s == Seen::New),
        "{seen:?}"
    );
    // The commit point is after the file and tmp dir were synced.
    assert!(
        first_new > 10,
        "new state visible too early: step {first_new}"
    );
}

#[test]
fn fm_10_5_torn_crash_at_every_install_step_leaves_old_or_new_state() {
    let (_, completed) = run(1, u64::MAX, false);
    assert!(completed);
    let mut k = 0;
    loop {
        let (_, completed) = run(1000 + k, k, true);
        if completed {
            break;
        }
        k += 1;
    }
}

#[test]
fn fm_4_3_recover_rolls_forward_an_install_interrupted_after_its_commit_point() {
    // Stop right after publish (rename + fsync of snapshots/), before the WAL reset.
    let (sim, before, shipped) = setup(5);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let (wal, _) = Wal::open(sim.clone(), &wal_dir(), opts(1)).expect("wal");
    let mut inst = store.begin_install(&shipped.offer).expect("begin");
    for c in &shipped.chunks {
        inst.push_chunk(c).expect("chunk");
    }
    let verified = inst.finish(&shipped.end).expect("finish");
    // A WalTarget whose reset "crashes".
    struct NoReset<'a>(&'a Wal<SimStorage>);
    impl walship_snapshot::WalTarget for NoReset<'_> {
        fn base(&self) -> Position {
            self.0.base()
        }
        fn last(&self) -> Position {
            self.0.last()
        }
        fn position_at(&self, lsn: u64) -> Result<Option<Position>, walship_wal::WalError> {
            self.0.position_at(lsn)
        }
        fn reset_to(&mut self, _: Position) -> Result<(), walship_wal::WalError> {
            Err(walship_wal::WalError::Poisoned)
        }
    }
    let err = verified
        .commit(&mut NoReset(&wal), None)
        .expect_err("reset fails");
    assert!(matches!(err, SnapshotError::Wal(_)), "{err}");
    drop(wal);
    sim.crash();
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let (mut wal, _) = Wal::open(sim.clone(), &wal_dir(), opts(1)).expect("wal");
    assert_eq!(wal.last(), before.records.last().expect("records").0);
    let report = store.recover(&mut wal).expect("recover");
    assert_eq!(
        report,
        RecoveryReport::RolledForward {
            boundary: shipped.offer.boundary,
            old_wal_last: before.records[9].0,
        }
    );
    assert_eq!(wal.base(), shipped.offer.boundary);
    assert_eq!(wal.last(), shipped.offer.boundary);
    assert_eq!(store.installed().expect("list").len(), 1);
    // Idempotent.
    assert_eq!(
        store.recover(&mut wal).expect("recover again"),
        RecoveryReport::Consistent {
            boundary: shipped.offer.boundary
        }
    );
}

#[test]
fn fm_x_8_session_ending_mid_transfer_discards_partial_snapshot() {
    let (sim, before, shipped) = setup(9);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let mut inst = store.begin_install(&shipped.offer).expect("begin");
    for c in &shipped.chunks[..4] {
        inst.push_chunk(c).expect("chunk");
    }
    assert_eq!(tmp_entries(&sim, &snap_dir()).len(), 1);
    inst.abort().expect("abort");
    assert!(tmp_entries(&sim, &snap_dir()).is_empty());
    let newest = store.newest().expect("newest").expect("some");
    assert_eq!(newest.boundary, before.snapshot);
    // The transfer starts again and succeeds.
    let (mut wal, _) = Wal::open(sim.clone(), &wal_dir(), opts(1)).expect("wal");
    install(&store, &mut wal, &shipped).expect("second transfer installs");
    assert_eq!(wal.base(), shipped.offer.boundary);
}

#[test]
fn installed_file_is_byte_identical_to_the_primarys() {
    let (sim, _, shipped) = setup(11);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let (mut wal, _) = Wal::open(sim.clone(), &wal_dir(), opts(1)).expect("wal");
    install(&store, &mut wal, &shipped).expect("install");
    let snap = store.newest().expect("newest").expect("some");
    assert_eq!(sim.contents(&snap.file).expect("contents"), shipped.file);
}

/// Creation on the primary: a crash at every step leaves the previous
/// snapshot or the new one, whole, and never a temporary directory.
#[test]
fn crash_at_every_step_of_snapshot_creation_leaves_previous_or_new_snapshot() {
    let old_state = state_bytes(2000, 4);
    let new_state = state_bytes(7000, 5);
    let old_b = Position {
        lsn: 5,
        epoch: 1,
        crc: 55,
    };
    let new_b = Position {
        lsn: 9,
        epoch: 1,
        crc: 99,
    };
    let mut k = 0;
    let mut seen = Vec::new();
    loop {
        let sim = SimStorage::new(k);
        sim.create_dir_all(Path::new("/node")).expect("mkdir");
        sim.sync_dir(Path::new("/")).expect("sync root");
        let lim = StepLimit::new(sim.clone());
        let (store, _) =
            SnapshotStore::open(lim.clone(), &snap_dir(), Limits::default()).expect("open");
        let mut src = BytesState {
            lsn: 5,
            bytes: old_state.clone(),
            restored_boundary: None,
        };
        store
            .create_with_membership(600, &mut src, &mut |_| Ok(old_b), &mut |_| {
                Ok(BoundaryMembership::Static)
            })
            .expect("old");
        lim.arm(k);
        let mut src = BytesState {
            lsn: 9,
            bytes: new_state.clone(),
            restored_boundary: None,
        };
        let new_membership = BoundaryMembership::Record {
            lsn: 8,
            config: configuration(2),
        };
        let r = store.create_with_membership(600, &mut src, &mut |_| Ok(new_b), &mut |_| {
            Ok(new_membership.clone())
        });
        let completed = !lim.hit_limit();
        assert_eq!(r.is_ok(), completed, "k={k}: {r:?}");
        drop(store);
        if k % 2 == 0 {
            sim.crash();
        } else {
            sim.crash_with_torn_write();
        }
        let (store, _) =
            SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("reopen");
        assert!(tmp_entries(&sim, &snap_dir()).is_empty());
        let newest = store.newest().expect("list").expect("a snapshot");
        store.verify(&newest).expect("whole");
        let state = restore(&store, &newest);
        if newest.boundary == old_b {
            assert_eq!(state.bytes, old_state);
            assert_eq!(newest.membership, BoundaryMembership::Static, "k={k}");
            seen.push(false);
        } else {
            assert_eq!(newest.boundary, new_b, "k={k}");
            assert_eq!(state.bytes, new_state);
            assert_eq!(newest.membership, new_membership, "k={k}");
            seen.push(true);
        }
        if completed {
            break;
        }
        k += 1;
        assert!(k < 200);
    }
    assert!(k >= 8, "creation has {k} steps");
    assert!(*seen.last().expect("runs"));
    assert!(!seen[0]);
}

fn two_snapshots(b_crc_delta: u32) -> (SimStorage, Wal<SimStorage>, Position, Position) {
    let sim = SimStorage::new(77);
    sim.create_dir_all(Path::new("/node")).expect("mkdir");
    sim.sync_dir(Path::new("/")).expect("sync root");
    let wal = wal_with(&sim, &wal_dir(), 10, 1);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let mut b = wal.position_at(8).expect("pos").expect("some");
    b.crc ^= b_crc_delta;
    let a = wal.position_at(5).expect("pos").expect("some");
    for (lsn, pos) in [(8, b), (5, a)] {
        let mut src = BytesState {
            lsn,
            bytes: state_bytes(1500, lsn as u8),
            restored_boundary: None,
        };
        store
            .create(400, &mut src, &mut |_| Ok(pos))
            .expect("create");
    }
    assert_eq!(store.installed().expect("list").len(), 2);
    (sim, wal, a, b)
}

#[test]
fn recover_ignores_and_removes_a_damaged_superseded_snapshot() {
    let (sim, mut wal, a, b) = two_snapshots(0);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let older = snap_dir()
        .join(walship_snapshot::snapshot_dir_name(a.lsn))
        .join("snapshot");
    sim.flip_bit(&older, 3, 1).expect("flip");
    assert!(
        store.installed().is_err(),
        "strict listing reports the damage"
    );
    assert_eq!(store.newest().expect("newest").expect("some").boundary, b);
    assert_eq!(
        store.recover(&mut wal).expect("recover"),
        RecoveryReport::Consistent { boundary: b }
    );
    assert_eq!(store.installed().expect("list").len(), 1);
}

#[test]
fn recover_that_finds_a_mismatch_removes_nothing() {
    let (sim, mut wal, _, b) = two_snapshots(0xff);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let e = store.recover(&mut wal).expect_err("mismatch");
    assert_eq!(e.class(), walship_snapshot::FailureClass::LocalCorruption);
    assert!(
        matches!(e, SnapshotError::StoreWalMismatch { snapshot, .. } if snapshot == b),
        "{e}"
    );
    assert_eq!(store.installed().expect("list").len(), 2, "every byte kept");
    assert_eq!(wal.last().lsn, 10);
}
