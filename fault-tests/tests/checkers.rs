//! The invariant checkers must be able to fail: each test breaks one fact
//! the checker judges and requires that checker (and only a violation) to
//! report it.

use walship_fault::check::{
    check_all, standard_checkers, AckedCommitsSurvive, AppliedIsCommittedInOrder, Checker,
    HaltedReplicaFrozen, NoHaltWithoutCause, ReplicaIsPrefix,
};
use walship_fault::world::{FrameFault, World, WorldConfig};
use walship_wal::Position;

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
fn acked_commit_on_too_few_replicas_is_reported() {
    let mut w = converged(2);
    // Pretend the primary acknowledged one more record than any replica holds.
    let p = w.primary.up.as_mut().expect("primary up");
    p.wal.append(b"only here").expect("append");
    let last = p.wal.sync().expect("sync");
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
