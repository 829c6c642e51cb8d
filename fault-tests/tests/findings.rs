//! Reproducers of problems the harness found in other crates. A finding not
//! fixed yet is `#[ignore]`d with its name (run those with `cargo test -p
//! walship-fault --test findings -- --ignored`); a fixed one stays here as a
//! regression test. Each test's doc comment is the record of its finding: what
//! the harness saw and, once fixed, the commit that fixed it.

use walship_fault::check::{check_all, standard_checkers};
use walship_fault::world::{FrameFault, World, WorldConfig};

/// Finding 4 (fixed in walship-replica a9d9cd2): a record at lsn 1 whose epoch (0) is below the epoch the
/// primary's announced history gives lsn 1 (1) has a valid crc and chains to
/// the empty log, so the replica appends it and receipts it: the replica then
/// holds a record that is not the primary's, and the primary counts that
/// receipt towards its quorum. Required (FM-X.3 / FM-8.1): halt before
/// appending.
#[test]
fn fm_x_3_first_record_with_epoch_below_the_history_halts() {
    let mut w = World::new(
        WorldConfig {
            replicas: 1,
            ..WorldConfig::default()
        },
        2007,
    )
    .expect("world");
    w.start_all();
    w.arm_frame_fault(1, FrameFault::EpochBelowHistory);
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| format!("r{i}").into_bytes()).collect();
    w.client_append(&payloads);
    let end = w.now() + 2_000;
    while w.now() < end && w.replica(1).halted.is_none() {
        let t = w.now() + 1;
        w.run_until(t);
        let mut c = standard_checkers();
        if let Err(v) = check_all(&mut c, &w) {
            panic!("replica accepted a record that is not the primary's: {v}");
        }
    }
    let h = w.replica(1).halted.clone().expect("the replica must halt");
    assert_eq!(h.record.lsn, 1);
}

/// Finding 6: in the first `Records` frame after a snapshot install, a
/// duplicated record that is not the first of the frame (lsn boundary+1 sent
/// twice) halts `snapshot-boundary` instead of `duplicate`: the replica turns
/// every chain error whose lsn is ≤ boundary+1 into a boundary conflict,
/// although the first record did chain to the boundary. Found by
/// `walship-fault sim --seeds 0..80 --wipe-per-mille 10` (seed 44).
/// Fixed in walship-replica e9635b9; kept as a regression test.
#[test]
fn fm_5_2_duplicate_right_after_a_snapshot_install_halts_duplicate() {
    let (mut w, boundary) = walship_fault::matrix::snapshot_world(4406).expect("world");
    let more: Vec<Vec<u8>> = (0..5).map(|i| format!("after{i}").into_bytes()).collect();
    w.client_append(&more);
    w.arm_frame_fault(1, FrameFault::Duplicate);
    w.restart(1);
    let end = w.now() + 30_000;
    while w.now() < end && w.replica(1).halted.is_none() {
        let t = w.now() + 5;
        w.run_until(t);
    }
    let h = w
        .replica(1)
        .halted
        .clone()
        .expect("the duplicate must halt");
    assert_eq!(
        h.record.reason.as_str(),
        "duplicate",
        "halt {} at lsn {} after the snapshot at {boundary}: {}",
        h.record.reason.as_str(),
        h.record.lsn,
        h.record.detail
    );
}
