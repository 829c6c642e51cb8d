//! The simulator's fault vocabulary (spec/failure-matrix.md, "The random
//! simulator's fault vocabulary"): each fault the random simulator injects,
//! run once by hand, with the outcome the matrix requires, and the checks
//! that judge it able to fail.

use walship_fault::check::{
    check_all, standard_checkers, ActionInvariants, Checker, HaltedReplicaFrozen,
};
use walship_fault::world::{state_dir, FrameFault, World, WorldConfig, PRIMARY};
use walship_replica::halt::{clear_halt, HaltReason};

fn converged(replicas: usize, seed: u64) -> World {
    let mut w = World::new(
        WorldConfig {
            replicas,
            ..WorldConfig::default()
        },
        seed,
    )
    .expect("world");
    w.start_all();
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("p{i}").into_bytes()).collect();
    w.client_append(&payloads);
    assert!(w.run_until_converged(30_000), "{}", w.trace.render_tail());
    check_all(&mut standard_checkers(), &w).expect("a healthy cluster passes every checker");
    w
}

fn run_until(w: &mut World, max_ms: u64, mut cond: impl FnMut(&World) -> bool) {
    let deadline = w.now() + max_ms;
    while !cond(w) && w.now() < deadline {
        let t = w.now() + 5;
        w.run_until(t);
    }
}

/// Halts replica 1 of a converged one-replica cluster with `fault`.
fn halted_by(fault: FrameFault, seed: u64) -> World {
    let mut w = converged(1, seed);
    w.arm_frame_fault(1, fault);
    let payloads: Vec<Vec<u8>> = (0..4).map(|i| format!("q{i}").into_bytes()).collect();
    w.client_append(&payloads);
    run_until(&mut w, 5_000, |w| w.replica(1).halted.is_some());
    assert!(
        w.replica(1).halted.is_some(),
        "{fault:?} must halt: {}",
        w.trace.render_tail()
    );
    w
}

#[test]
fn fm_8_1_crc_valid_record_with_wrong_prev_crc_halts_divergence_and_stores_nothing() {
    let w = halted_by(FrameFault::WrongPrevCrc, 11);
    let h = w.replica(1).halted.clone().expect("halted");
    assert_eq!(h.record.reason, HaltReason::Divergence);
    // The first shipped record after the converged ten broke the chain.
    assert_eq!(h.record.lsn, 11);
    assert!(h.record.expected.starts_with("prev_crc"), "{:?}", h.record);
    let u = w.replica(1).up.as_ref().expect("halted, still running");
    assert_eq!(
        u.wal().expect("wal open").last().lsn,
        10,
        "the faulty record was not stored"
    );
    assert_eq!(w.replica(1).applied.last_lsn(), 10, "nothing applied");
    assert_eq!(
        w.oracle.injected.get(&1),
        Some(&vec![FrameFault::WrongPrevCrc])
    );
    check_all(&mut standard_checkers(), &w).expect("an explained, frozen halt");
}

#[test]
fn fm_11_3_halted_replica_restarted_comes_back_halted_and_a_cleared_halt_file_is_reported() {
    let mut w = halted_by(FrameFault::WrongPrevCrc, 12);
    let record = w.replica(1).halted.clone().expect("halted").record;
    w.crash(1);
    w.restart(1);
    let u = w.replica(1).up.as_ref().expect("restarted");
    assert_eq!(
        u.core().halt(),
        Some(&record),
        "comes back halted, same record"
    );
    run_until(&mut w, 500, |_| false);
    check_all(&mut standard_checkers(), &w).expect("still halted and frozen");
    // The checker must be able to fail: a halt file that went away is reported
    // at once, and a restart without it comes back replicating.
    clear_halt(&w.replica(1).storage, &state_dir()).expect("clear");
    let err = HaltedReplicaFrozen.check(&w).expect_err("must fail");
    assert!(err.contains("halt file now reads Ok(None)"), "{err}");
    w.crash(1);
    w.restart(1);
    let err = HaltedReplicaFrozen.check(&w).expect_err("must fail");
    assert!(err.contains("halt file now reads Ok(None)"), "{err}");
    assert_eq!(w.replica(1).up.as_ref().expect("up").core().halt(), None);
}

#[test]
fn fm_x_4_one_failed_replica_fsync_stops_the_node_and_it_resumes_from_its_real_durable_lsn() {
    let mut w = converged(1, 13);
    w.replica(1).storage.fail_one_sync_after(0);
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| format!("x{i}").into_bytes()).collect();
    w.client_append(&payloads);
    run_until(&mut w, 2_000, |w| !w.is_up(1));
    assert!(
        !w.is_up(1),
        "the replica stops on the failed sync (no retry)"
    );
    assert_eq!(w.replica(1).storage.counters().failed_syncs, 1);
    assert_eq!(
        w.replica(1).known_durable,
        10,
        "nothing above 10 was synced"
    );
    // The fault was one-shot: the restart's syncs succeed.
    w.restart(1);
    assert!(w.run_until_converged(30_000), "{}", w.trace.render_tail());
    assert!(w.replica(1).halted.is_none());
    check_all(&mut standard_checkers(), &w).expect("no acknowledged record lost");
}

#[test]
fn fm_x_5_one_failed_primary_fsync_stops_the_node_and_nothing_is_acknowledged() {
    let mut w = converged(1, 14);
    let acked = w.oracle.acked.len();
    w.primary.storage.fail_one_sync_after(0);
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| format!("x{i}").into_bytes()).collect();
    w.client_append(&payloads);
    run_until(&mut w, 2_000, |w| !w.is_up(PRIMARY));
    assert!(!w.is_up(PRIMARY), "the primary stops on the failed sync");
    assert_eq!(w.oracle.acked.len(), acked, "nothing acknowledged");
    w.restart(PRIMARY);
    assert_eq!(
        w.primary.up.as_ref().expect("restarted").wal.last().lsn,
        10,
        "the dropped appends are gone, the synced ones are there"
    );
    assert!(w.run_until_converged(30_000), "{}", w.trace.render_tail());
    check_all(&mut standard_checkers(), &w).expect("no acknowledged record lost");
}

#[test]
fn primary_reopening_below_its_durable_lsn_is_reported() {
    let mut w = converged(1, 15);
    w.crash(PRIMARY);
    // Pretend the primary had claimed two more records durable than its disk holds.
    w.oracle.primary_durable += 2;
    w.restart(PRIMARY);
    let err = ActionInvariants.check(&w).expect_err("must fail");
    assert!(
        err.contains("p0: WAL reopened at durable lsn 10 below the 12"),
        "{err}"
    );
}

#[test]
fn fm_x_2_welcome_of_an_older_epoch_primary_is_refused_without_halt_and_nothing_is_stored() {
    let mut w = converged(1, 16);
    w.arm_frame_fault(1, FrameFault::StaleWelcome);
    // The next session's Welcome carries the fault.
    w.crash(1);
    w.restart(1);
    run_until(&mut w, 5_000, |w| {
        w.replica(1).up.as_ref().is_some_and(|u| {
            u.exec
                .status()
                .last_session_end
                .is_some_and(|e| e.starts_with("refused stale primary"))
        })
    });
    assert_eq!(
        w.oracle.injected.get(&1),
        Some(&vec![FrameFault::StaleWelcome])
    );
    // The world's own check (a stale Welcome is refused, nothing of it stored, the session
    // ends) ran on delivery: no action violation.
    assert!(
        w.oracle.action_violations.is_empty(),
        "{:?}",
        w.oracle.action_violations
    );
    assert!(w.replica(1).halted.is_none(), "refused, not halted");
    let u = w.replica(1).up.as_ref().expect("running");
    assert_eq!(
        u.wal().expect("wal open").last().lsn,
        10,
        "nothing appended"
    );
    let end = u.exec.status().last_session_end.unwrap_or_default();
    assert!(end.starts_with("refused stale primary"), "{end}");
    // The real primary (not fenced: the refusal named no epoch above its own) is
    // followed again after the backoff.
    assert_eq!(w.primary.up.as_ref().and_then(|p| p.exec.fenced()), None);
    w.client_append(&[b"after".to_vec()]);
    run_until(&mut w, 5_000, |w| w.converged());
    check_all(&mut standard_checkers(), &w).expect("a refused stale Welcome, then streaming");
}
