//! A failed fsync in the snapshot store is fatal and never retried
//! (FM-X.4 on a replica, FM-X.5 on a primary): the store is poisoned, every
//! later call returns `SnapshotError::Poisoned`, and a snapshot whose publish
//! did not end with a successful fsync of `snapshots/` is never listed —
//! retention would otherwise truncate the WAL behind a snapshot that a power
//! loss can take away.

mod common;

use std::path::Path;

use common::*;
use walship_snapshot::{FailureClass, Limits, SnapshotError, SnapshotStore};
use walship_wal::sim::SimStorage;
use walship_wal::{Position, Storage};

fn fresh(seed: u64) -> (SimStorage, SnapshotStore<SimStorage>) {
    let sim = SimStorage::new(seed);
    sim.create_dir_all(Path::new("/node")).expect("mkdir");
    sim.sync_dir(Path::new("/")).expect("sync root");
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    (sim, store)
}

fn pos(lsn: u64) -> Position {
    Position {
        lsn,
        epoch: 1,
        crc: lsn as u32 * 11,
    }
}

fn create(store: &SnapshotStore<SimStorage>, lsn: u64) -> Result<Position, SnapshotError> {
    let mut src = BytesState {
        lsn,
        bytes: state_bytes(3000, lsn as u8),
        restored_boundary: None,
    };
    store
        .create(512, &mut src, &mut |l| Ok(pos(l)))
        .map(|s| s.boundary)
}

fn assert_poisoned_by(e: SnapshotError, want_op: &str, want_path: &Path) {
    match e {
        SnapshotError::Poisoned { op, path, .. } => {
            assert_eq!(op, want_op);
            assert_eq!(path, want_path);
        }
        other => panic!("expected Poisoned by {want_op} of {want_path:?}, got {other}"),
    }
}

#[test]
fn fm_x_5_failed_dir_sync_at_publish_poisons_the_store_and_the_renamed_snapshot_is_never_listed() {
    let (sim, store) = fresh(1);
    assert_eq!(create(&store, 5).expect("first snapshot"), pos(5));
    let observer = store.clone();

    // The rename of snapshot 9 succeeds, the fsync of snapshots/ that commits it fails.
    sim.fail_next_sync(&snap_dir()).expect("arm");
    match create(&store, 9) {
        Err(SnapshotError::Io { op, path, .. }) => {
            assert_eq!(op, "sync_dir");
            assert_eq!(path, snap_dir());
        }
        other => panic!("expected the failed sync_dir, got {other:?}"),
    }
    // The page cache shows the renamed directory ...
    let listed = sim.list(&snap_dir()).expect("list");
    assert!(
        listed.contains(&walship_snapshot::snapshot_dir_name(9)),
        "{listed:?}"
    );
    // ... but nothing may be decided from it: every call, on every clone, is refused.
    assert_poisoned_by(store.newest().expect_err("newest"), "sync_dir", &snap_dir());
    assert_poisoned_by(
        observer.newest().expect_err("newest on a clone"),
        "sync_dir",
        &snap_dir(),
    );
    assert_poisoned_by(
        observer.installed().expect_err("installed"),
        "sync_dir",
        &snap_dir(),
    );
    assert_poisoned_by(
        store.remove_older_than(100).expect_err("remove"),
        "sync_dir",
        &snap_dir(),
    );
    assert_poisoned_by(
        create(&store, 12).expect_err("create"),
        "sync_dir",
        &snap_dir(),
    );
    assert!(store.is_poisoned() && observer.is_poisoned());
    assert_eq!(
        store.newest().expect_err("newest").class(),
        FailureClass::NodeStop
    );
    // No retry happened: exactly the one failed directory sync.
    assert_eq!(sim.counters().failed_syncs, 1);

    // Power loss: the unsynced rename is gone, snapshot 5 is what the disk holds.
    sim.clear_faults();
    sim.crash();
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("reopen");
    assert_eq!(
        store.newest().expect("newest").expect("some").boundary,
        pos(5)
    );
}

#[test]
fn fm_x_5_failed_file_sync_during_creation_poisons_the_store() {
    let (sim, store) = fresh(2);
    // The first sync of the creation is the snapshot file's fdatasync.
    sim.fail_syncs_after(0);
    let e = create(&store, 5).expect_err("creation fails");
    let SnapshotError::Io { op, path, .. } = e else {
        panic!("expected the failed sync_data, got {e}");
    };
    assert_eq!(op, "sync_data");
    assert!(path.starts_with(snap_dir()), "{path:?}");
    sim.clear_faults();
    // The next sync would succeed; the store must not try it.
    assert_poisoned_by(create(&store, 5).expect_err("no retry"), "sync_data", &path);
    assert_poisoned_by(store.newest().expect_err("newest"), "sync_data", &path);
}

#[test]
fn fm_x_4_failed_dir_sync_at_install_commit_poisons_the_store_and_leaves_the_wal() {
    let (sim, store) = fresh(3);
    let mut wal = wal_with(&sim, &wal_dir(), 10, 1);
    let before = wal.last();
    let ps = SimStorage::new(33);
    let pwal = wal_with(&ps, &wal_dir(), 20, 1);
    let shipped = primary_snapshot(pwal.last(), state_bytes(5000, 4), 1000);
    let mut inst = store.begin_install(&shipped.offer).expect("begin");
    for c in &shipped.chunks {
        inst.push_chunk(c).expect("chunk");
    }
    let verified = inst.finish(&shipped.end).expect("finish");
    sim.fail_next_sync(&snap_dir()).expect("arm");
    match verified.commit(&mut wal, None) {
        Err(SnapshotError::Io {
            op: "sync_dir",
            path,
            ..
        }) => assert_eq!(path, snap_dir()),
        other => panic!("expected the failed sync_dir, got {other:?}"),
    }
    // Not past the commit point: the WAL was not reset.
    assert_eq!(wal.last(), before);
    assert_poisoned_by(
        store.begin_install(&shipped.offer).expect_err("begin"),
        "sync_dir",
        &snap_dir(),
    );
    assert_poisoned_by(store.newest().expect_err("newest"), "sync_dir", &snap_dir());
}

#[test]
fn listing_trusts_only_snapshots_found_at_open_or_published() {
    let (sim, store) = fresh(4);
    // A second store over the same directory publishes snapshot 9; the first
    // store neither published it nor found it at open.
    let (other, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    assert_eq!(create(&other, 9).expect("create"), pos(9));
    assert_eq!(
        other.newest().expect("newest").expect("some").boundary,
        pos(9)
    );
    assert_eq!(store.newest().expect("newest"), None);
    assert_eq!(store.installed().expect("installed"), vec![]);
    // Its own publish is trusted.
    assert_eq!(create(&store, 12).expect("create"), pos(12));
    assert_eq!(
        store.newest().expect("newest").expect("some").boundary,
        pos(12)
    );
    // Found at open: a fresh store trusts it.
    let (reopened, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    assert_eq!(
        reopened.newest().expect("newest").expect("some").boundary,
        pos(12)
    );
}
