//! The invariant checkers must be able to fail: each test breaks one fact
//! the checker judges and requires that checker (and only a violation) to
//! report it.

use walship_fault::check::{
    check_all, standard_checkers, AckedCommitsSurvive, AppliedIsCommittedInOrder,
    AppliedNeverAbovePersistedCommit, Checker, HaltedReplicaFrozen, NoHaltWithoutCause,
    PersistedCommitNeverAboveAcknowledged, ReceiptNeverAboveSynced, ReplicaCommitNeverAboveDurable,
    ReplicaIsPrefix,
};
use walship_fault::world::{state_dir, FrameFault, World, WorldConfig, PRIMARY};
use walship_wal::Storage as _;
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
    walship_wal::state::write_state_file(&w.primary.storage, &state_dir(), "commit", &body)
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

/// Writes `lsn` into replica `n`'s `state/commit` (as a buggy executor would).
fn set_replica_commit(w: &World, n: usize, lsn: Lsn) {
    #[derive(serde::Serialize)]
    struct Commit {
        commit_lsn: Lsn,
    }
    walship_wal::state::write_state_json(
        &w.replica(n).storage,
        &state_dir(),
        "commit",
        &Commit { commit_lsn: lsn },
    )
    .expect("write state/commit");
}

/// FM-X.6: a replica's `state/commit` names only records it holds durably (planted
/// `persist = c` instead of `c.min(durable)` in the replica executor's settle: only an
/// unexplained `local-corruption` halt after a crash showed it, in 251 of seeds 0..2000).
#[test]
fn fm_x_6_replica_state_commit_above_its_durable_lsn_is_reported() {
    let w = converged(1);
    ReplicaCommitNeverAboveDurable
        .check(&w)
        .expect("a healthy replica passes");
    let durable = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.wal())
        .expect("r1 runs with its WAL")
        .durable_lsn();
    set_replica_commit(&w, 1, durable + 1);
    let err = ReplicaCommitNeverAboveDurable
        .check(&w)
        .expect_err("must fail");
    assert!(err.contains("above its durable lsn"), "{err}");
}

/// FM-4.2: a replica applies only what its own `state/commit` covers (planted: apply up
/// to the core's commit instead of the persisted watermark: only the liveness phase
/// showed it, when the restart refused an applier ahead of the watermark).
#[test]
fn fm_4_2_applied_above_the_replicas_persisted_commit_is_reported() {
    let w = converged(1);
    AppliedNeverAbovePersistedCommit
        .check(&w)
        .expect("a healthy replica passes");
    let applied = w.replica(1).applied.last_lsn();
    assert!(applied > 1, "the replica applied something");
    set_replica_commit(&w, 1, applied - 1);
    let err = AppliedNeverAbovePersistedCommit
        .check(&w)
        .expect_err("must fail");
    assert!(err.contains("but its state/commit holds"), "{err}");
}

/// FM-X.4: a replica whose disk failed an fsync must have stopped (planted: a failed WAL
/// sync logged and retried at the next sync instead of stopping the node).
#[test]
fn fm_x_4_replica_running_on_after_a_failed_fsync_is_reported() {
    let mut w = converged(1);
    // One fsync of r1's disk fails behind its executor's back: the executor never saw
    // it, so it does not stop, which is what the world must report.
    let s = w.replica(1).storage.clone();
    s.fail_one_sync_after(0);
    assert!(s.sync_dir(&state_dir()).is_err(), "the armed fsync fails");
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| format!("r{i}").into_bytes()).collect();
    w.client_append(&payloads);
    let deadline = w.now() + 5_000;
    while w.oracle.action_violations.is_empty() && w.now() < deadline {
        let t = w.now() + 5;
        w.run_until(t);
    }
    let (what, detail) = w
        .oracle
        .action_violations
        .first()
        .expect("the world reports the replica running on");
    assert!(what.contains("FM-X.4"), "{what}: {detail}");
    assert!(
        detail.contains("r1 still runs after 1 failed fsync"),
        "{detail}"
    );
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
