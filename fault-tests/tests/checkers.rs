//! The invariant checkers must be able to fail: each test breaks one fact
//! the checker judges and requires that checker (and only a violation) to
//! report it.

use walship_fault::check::{
    check_all, standard_checkers, AckedCommitsSurvive, AppliedIsCommittedInOrder, Checker,
    HaltedReplicaFrozen, NoHaltWithoutCause, PersistedCommitNeverAboveAcknowledged,
    ReceiptNeverAboveSynced, ReplicaIsPrefix,
};
use walship_fault::world::{FrameFault, World, WorldConfig, PRIMARY};
use walship_wal::{Lsn, Position};

fn converged(replicas: usize) -> World {
    let mut w = World::new(
        WorldConfig {
            replicas,
            ..WorldConfig::default()
        },
        7,
    )
    .expect("world");
    w.start_all();
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("p{i}").into_bytes()).collect();
    w.client_append(&payloads);
    assert!(w.run_until_converged(30_000), "{}", w.trace.render_tail());
    let mut c = standard_checkers();
    check_all(&mut c, &w).expect("a healthy cluster passes every checker");
    w
}

#[test]
fn acked_commit_missing_from_primary_is_reported() {
    let mut w = converged(2);
    let fake = Position {
        lsn: 3,
        epoch: 1,
        crc: 0xdead_beef,
    };
    w.oracle.acked.insert(3, fake);
    let err = AckedCommitsSurvive.check(&w).expect_err("must fail");
    assert!(err.contains("acknowledged lsn 3"), "{err}");
}

#[test]
fn fm_4_1_receipt_recorded_above_the_synced_lsn_is_reported() {
    let mut w = converged(2);
    ReceiptNeverAboveSynced
        .check(&w)
        .expect("a healthy cluster's receipts are all synced");
    w.oracle
        .unsynced_receipts
        .push("r1 receipted lsn 11 with its WAL synced up to 10".into());
    let err = ReceiptNeverAboveSynced.check(&w).expect_err("must fail");
    assert!(err.contains("receipted lsn 11"), "{err}");
}

#[test]
fn fm_x_6_persisted_commit_watermark_above_what_was_acknowledged_is_reported() {
    let w = converged(2);
    let mut checker = PersistedCommitNeverAboveAcknowledged;
    checker
        .check(&w)
        .expect("a healthy primary's watermark passes");
    // The primary's state/commit claims more than it ever announced.
    let body = serde_json::to_vec(&walship_wal::state::CommitBody {
        commit_lsn: w.oracle.max_commit + 5,
    })
    .expect("encode");
    walship_wal::state::write_state_file(
        &w.primary.storage,
        &walship_fault::world::state_dir(),
        "commit",
        &body,
    )
    .expect("write state/commit");
    let err = checker.check(&w).expect_err("must fail");
    assert!(err.contains("state/commit holds"), "{err}");
}

#[test]
fn acked_commit_on_too_few_replicas_is_reported() {
    let mut w = converged(2);
    // Pretend the primary acknowledged one more record than any replica holds.
    let p = w.primary.up.as_mut().expect("primary up");
    p.wal.append(b"only here").expect("append");
    let last = p.wal.with(|wal| wal.sync()).expect("sync");
    let pos = p.wal.last();
    w.oracle.primary_history.push(pos);
    w.oracle.acked.insert(last, pos);
    let err = AckedCommitsSurvive.check(&w).expect_err("must fail");
    assert!(err.contains("durable on 0 replicas"), "{err}");
}

#[test]
fn replica_record_differing_from_primary_is_reported() {
    let mut w = converged(1);
    w.oracle.primary_history[4].crc ^= 1;
    let err = ReplicaIsPrefix::default().check(&w).expect_err("must fail");
    assert!(err.contains("at lsn 5"), "{err}");
}

#[test]
fn applied_out_of_order_or_uncommitted_is_reported() {
    let mut w = converged(1);
    w.replicas[0].applied.records.swap(2, 3);
    let err = AppliedIsCommittedInOrder.check(&w).expect_err("must fail");
    assert!(err.contains("applied lsn"), "{err}");
    let mut w = converged(1);
    w.oracle.max_commit = 4;
    let err = AppliedIsCommittedInOrder.check(&w).expect_err("must fail");
    assert!(err.contains("above"), "{err}");
}

#[test]
fn halt_without_injected_fault_and_change_after_halt_are_reported() {
    let mut w = converged(1);
    w.arm_frame_fault(1, FrameFault::Skip);
    let payloads: Vec<Vec<u8>> = (0..4).map(|i| format!("q{i}").into_bytes()).collect();
    w.client_append(&payloads);
    let deadline = w.now() + 5_000;
    while w.replica(1).halted.is_none() && w.now() < deadline {
        let t = w.now() + 5;
        w.run_until(t);
    }
    assert!(w.replica(1).halted.is_some(), "the gap must halt");
    NoHaltWithoutCause
        .check(&w)
        .expect("explained by the injected gap");
    HaltedReplicaFrozen.check(&w).expect("nothing changed yet");
    // Forget the cause: now the halt is a false alarm.
    let injected = std::mem::take(&mut w.oracle.injected);
    let err = NoHaltWithoutCause.check(&w).expect_err("must fail");
    assert!(err.contains("halted (gap"), "{err}");
    w.oracle.injected = injected;
    // Pretend the halted replica applied something afterwards.
    let extra = Position {
        lsn: w.replica(1).applied.last_lsn() + 1,
        epoch: 1,
        crc: 1,
    };
    w.replicas[0].applied.records.push(extra);
    let err = HaltedReplicaFrozen.check(&w).expect_err("must fail");
    assert!(err.contains("has applied up to"), "{err}");
}

// ---- FM-X.11: what the primary could know about a replaced replica disk ----
//
// A receipt is a past fact: a replica disk replaced after it receipted lsn L
// held L when the primary counted it, and the primary learns of the loss only
// from the new disk's `Hello`. Until that Hello arrives the quorum checker
// must judge the commit by what the lost disk had (the loss counts against the
// fault budget, spec/failure-matrix.md FM-X.11); once it has arrived, only by
// the new log. Quorum 2 with two replicas: every commit needs both replica
// disks.

fn quorum_2_cluster_with_r1_ahead(seed: u64) -> World {
    let mut w = World::new(
        WorldConfig {
            replicas: 2,
            quorum: 2,
            ..WorldConfig::default()
        },
        seed,
    )
    .expect("world");
    w.trace.keep_all();
    w.start_all();
    let base: Vec<Vec<u8>> = (0..10).map(|i| format!("b{i}").into_bytes()).collect();
    w.client_append(&base);
    assert!(w.run_until_converged(30_000), "{}", w.trace.render_tail());
    assert_eq!(w.primary_commit(), 10);
    // r2 is cut off; r1 receipts lsn 20; the commit stays at 10.
    let now = w.now();
    w.net.partition(PRIMARY, 2, now);
    let more: Vec<Vec<u8>> = (0..10).map(|i| format!("m{i}").into_bytes()).collect();
    w.client_append(&more);
    run_until(&mut w, 2_000, |w| receipted(w, 1, 20));
    assert!(receipted(&w, 1, 20), "{}", w.trace.render_tail());
    assert_eq!(w.primary_commit(), 10, "r2 holds only 10");
    check_all(&mut standard_checkers(), &w).expect("before the disk loss");
    w
}

/// True once the primary counts replica `n` durable at `lsn` or above.
fn receipted(w: &World, n: usize, lsn: Lsn) -> bool {
    let name = format!("r{n}");
    w.primary.up.as_ref().is_some_and(|p| {
        p.replica_progress(w.now())
            .iter()
            .any(|r| r.node_id == name && r.durable_lsn >= lsn)
    })
}

/// Runs 1 ms at a time (first what is due now) until `cond` holds.
fn run_until(w: &mut World, max_ms: u64, mut cond: impl FnMut(&World) -> bool) {
    let end = w.now() + max_ms;
    let now = w.now();
    w.run_until(now);
    while w.now() < end && !cond(w) {
        let t = w.now() + 1;
        w.run_until(t);
    }
}

/// Heals r2, lets it catch up, and requires the commit to reach 20 on r2's
/// receipt plus r1's receipt from its lost disk (the primary cannot know yet),
/// with every checker passing.
fn commit_20_on_the_lost_disks_receipt_passes(w: &mut World) {
    let now = w.now();
    w.net.heal(PRIMARY, 2, now);
    let mut checkers = standard_checkers();
    let end = w.now() + 5_000;
    while w.now() < end && w.primary_commit() < 20 {
        let t = w.now() + 1;
        w.run_until(t);
        if let Err(v) = check_all(&mut checkers, w) {
            panic!("{v}\n{}", w.trace.render_tail());
        }
    }
    assert_eq!(
        w.primary_commit(),
        20,
        "the primary commits 20 counting r1's receipt: {}",
        w.trace.render_tail()
    );
}

#[test]
fn fm_x_11_receipt_of_a_disk_replaced_twice_before_any_hello_still_counts_for_the_checker() {
    let mut w = quorum_2_cluster_with_r1_ahead(611);
    // r1's disk is replaced twice; it never restarts in between (seed 6394).
    w.wipe_replica_disk(1).expect("wipe");
    w.wipe_replica_disk(1).expect("wipe again");
    commit_20_on_the_lost_disks_receipt_passes(&mut w);
    // r1 comes back empty and re-replicates; lsn 20 stays acknowledged.
    w.restart(1);
    assert!(w.run_until_converged(30_000), "{}", w.trace.render_tail());
    check_all(&mut standard_checkers(), &w).expect("after r1 re-replicated");
}

#[test]
fn fm_x_11_commit_while_the_new_disks_hello_is_in_flight_still_counts_the_old_receipt() {
    let mut w = quorum_2_cluster_with_r1_ahead(612);
    w.wipe_replica_disk(1).expect("wipe");
    let wiped_at = w.now();
    w.restart(1);
    let hello_sent = |w: &World| {
        w.trace.all().is_some_and(|all| {
            all.iter()
                .any(|e| e.at_ms >= wiped_at && e.what.starts_with("r1 -> p0 Hello(last 0"))
        })
    };
    run_until(&mut w, 2_000, hello_sent);
    assert!(hello_sent(&w), "{}", w.trace.render_tail());
    // The Hello from the empty disk is on its way but does not arrive yet
    // (seed 9165: the primary committed before it arrived).
    let now = w.now();
    w.net.block(1, PRIMARY, now);
    commit_20_on_the_lost_disks_receipt_passes(&mut w);
    let welcomed = w.trace.all().is_some_and(|all| {
        all.iter()
            .any(|e| e.at_ms >= wiped_at && e.what.starts_with("p0 -> r1 Welcome"))
    });
    assert!(
        !welcomed,
        "the primary must not have received the Hello yet"
    );
    // The Hello arrives: from now on r1 counts only with its new log.
    let now = w.now();
    w.net.heal_all(now);
    assert!(w.run_until_converged(30_000), "{}", w.trace.render_tail());
    check_all(&mut standard_checkers(), &w).expect("after r1 re-replicated");
}
