//! Failure-matrix scenarios FM-10 and FM-11: crash points, halt durability, determinism.

use walship_wal::Position;

use super::support::*;
use super::{
    cross::fm_x_2,
    snapshot::{no_snapshot_state, snapshot_world},
    stream::{diverged_world, frame_fault_halts},
};
use super::{ensure, R};
use crate::net::NetFaults;
use crate::sim::{self, SimOptions};
use crate::world::{node_name, FrameFault, PRIMARY};

pub(super) fn sim_seeds_clean(seeds: std::ops::Range<u64>, steps: u64, spec: &str) -> R {
    let mut n = 0;
    for seed in seeds {
        let rep = sim::run(&SimOptions::from_seed(seed, steps));
        if let Err(f) = &rep.outcome {
            return Err(format!(
                "seed {seed}: {} [{}]: {}",
                f.violation.invariant, f.violation.spec, f.violation.detail
            ));
        }
        n += 1;
    }
    Ok(format!(
        "{n} simulator seeds ({steps} steps, crashes/partitions/noise) without a {spec} violation"
    ))
}

pub(super) fn fm_10_1() -> R {
    // Tentative records on r1 (r2 partitioned, quorum 2) are never applied.
    let mut w = converged_cluster(cfg(2, 2), 101, 3)?;
    let now = w.now();
    w.net.partition(PRIMARY, 2, now);
    w.client_append(&payloads("tentative", 5, 40));
    run_until_cond(&mut w, 2_000, |w| durable_of(w, 1) >= 8);
    let applied = w.replica(1).applied.last_lsn();
    ensure(durable_of(&w, 1) >= 8 && applied == 3, || {
        format!("r1 durable {} applied {applied}", durable_of(&w, 1))
    })?;
    checked(&w)?;
    let s = sim_seeds_clean(1000..1006, 150, "partial-commit")?;
    Ok(format!(
        "r1 held tentative lsn 4..=8 durably, applied only up to commit 3; {s}"
    ))
}

pub(super) fn fm_10_2() -> R {
    let s = sim_seeds_clean(1100..1106, 150, "reordered-apply")?;
    let (_, t) = frame_fault_halts(102, FrameFault::Reorder)?;
    Ok(format!("{s}; a reordered frame halts: {t}"))
}

pub(super) fn fm_10_3() -> R {
    let (mut w, r_last) = diverged_world(103)?;
    run_until_cond(&mut w, 5_000, |w| w.replica(1).halted.is_some());
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    for i in 0..3 {
        w.client_append(&payloads(&format!("more{i}"), 3, 40));
        w.run_until(w.now() + 300);
        w.crash(1);
        w.restart(1);
    }
    w.run_until(w.now() + 1_000);
    ensure(last_of(&w, 1) == r_last, || {
        "the diverged log changed".into()
    })?;
    let now_halt = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.core().halt().cloned());
    ensure(now_halt.as_ref() == Some(&h.record), || {
        "halt record changed".into()
    })?;
    checked(&w)?;
    Ok(format!("diverged replica halted ({}) and, through 3 restarts and 9 more primary appends, kept its log (last lsn {}) and its halt record", h.record.reason.as_str(), r_last.lsn))
}

pub(super) fn fm_10_4() -> R {
    let mut w = converged_cluster(cfg(2, -1), 104, 5)?;
    let before: Vec<Position> = (1..=2).map(|n| last_of(&w, n)).collect();
    let commit = w.primary_commit();
    w.crash(PRIMARY);
    w.run_until(w.now() + 5_000);
    let after: Vec<Position> = (1..=2).map(|n| last_of(&w, n)).collect();
    ensure(before == after, || {
        "a replica's log changed with no primary".into()
    })?;
    for n in 1..=2 {
        let c = w
            .replica(n)
            .up
            .as_ref()
            .map_or(0, |u| u.core().commit_lsn());
        ensure(c <= commit, || {
            format!("{} commit {c} above the primary's {commit}", node_name(n))
        })?;
    }
    // A lower-epoch primary is refused (fencing).
    let t = fm_x_2()?;
    Ok(format!("with the primary down for 5 s no replica appended, committed or promoted itself; fencing: {t}"))
}

pub(super) fn fm_10_5() -> R {
    let mut old = 0;
    let mut new = 0;
    for k in 0..8u64 {
        let (mut w, boundary) = snapshot_world(1050 + k)?;
        w.restart(1);
        let mid = run_until_cond(&mut w, 20_000, |w| w.replica_installing(1));
        ensure(mid, || "the transfer never started".into())?;
        // Crash the replica at a different moment of transfer and install each time.
        w.run_until(w.now() + k * 12);
        w.crash(1);
        w.restart(1);
        let u = w.replica(1).up.as_ref().ok_or("replica down")?;
        let newest = u
            .exec
            .snapshots()
            .ok_or("replica WAL not open")?
            .newest()
            .map_err(|e| e.to_string())?
            .map(|x| x.boundary);
        match newest {
            None => {
                no_snapshot_state(&w, 1, 3)?;
                old += 1;
            }
            Some(b) => {
                let base = u.wal().map(|w| w.base());
                ensure(b == boundary && base == Some(boundary), || {
                    format!("mixed: snapshot {b} with WAL base {base:?}")
                })?;
                new += 1;
            }
        }
        converge(&mut w)?;
        checked(&w)?;
    }
    let sweep = crate::snapshot_sweep::sweep(10_500)?;
    ensure(old > 0, || {
        "no crash landed before the install's commit point".into()
    })?;
    Ok(format!(
        "replica crashed at 8 moments of a snapshot transfer/install: {old} restarted in the old state, {new} in the new one, never mixed, all converged; install layer sweep: {} points, {} old / {} new",
        sweep.0, sweep.1, sweep.2
    ))
}

// ---------------------------------------------------------------- section 11

pub(super) fn fm_11_1() -> R {
    let o = SimOptions::from_seed(1111, 200);
    let a = sim::run(&o);
    let b = sim::run(&o);
    let c = sim::run(&SimOptions::from_seed(1112, 200));
    ensure(a.trace_hash == b.trace_hash && a.events == b.events, || {
        format!(
            "hashes differ: {:016x} vs {:016x}",
            a.trace_hash, b.trace_hash
        )
    })?;
    ensure(a.trace_hash != c.trace_hash, || {
        "different seeds gave the same trace".into()
    })?;
    Ok(format!(
        "seed 1111 twice: trace hash {:016x} ({} events) both times; seed 1112: {:016x}",
        a.trace_hash, a.events, c.trace_hash
    ))
}

pub(super) fn fm_11_2() -> R {
    let mut seen = Vec::new();
    for (seed, noisy) in [(1121u64, false), (1122, true), (1123, true)] {
        let mut c = cfg(1, -1);
        if noisy {
            c.net.faults = NetFaults::noisy();
            c.net.idle_timeout_ms = 60_000;
        }
        let mut w = converged_cluster(c, seed, 5)?;
        w.arm_frame_fault(1, FrameFault::Skip);
        w.client_append(&payloads("x", 4, 40));
        run_until_cond(&mut w, 20_000, |w| w.replica(1).halted.is_some());
        let h = w.replica(1).halted.clone().ok_or("no halt")?;
        let r = h.record;
        seen.push((r.reason, r.lsn, r.epoch, r.expected, r.found, r.peer));
    }
    ensure(seen.windows(2).all(|p| p[0] == p[1]), || {
        format!("halts differ with timing: {seen:?}")
    })?;
    Ok(format!(
        "the same gap under 3 network timings gave the same halt: {:?}",
        seen[0]
    ))
}

pub(super) fn fm_11_3() -> R {
    let (mut w, _) = diverged_world(113)?;
    run_until_cond(&mut w, 5_000, |w| w.replica(1).halted.is_some());
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    w.crash(1);
    w.restart(1);
    let again = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.core().halt().cloned());
    ensure(again.as_ref() == Some(&h.record), || {
        format!("restart gave {again:?}")
    })?;
    let mut w2 = converged_cluster(cfg(1, -1), 114, 7)?;
    let d = durable_of(&w2, 1);
    w2.crash(1);
    w2.restart(1);
    ensure(last_of(&w2, 1).lsn == d, || {
        "a clean replica did not come back at its durable lsn".into()
    })?;
    Ok(format!("halted replica came back with the identical halt record ({}); clean replica came back at durable lsn {d}", h.record.reason.as_str()))
}

// ---------------------------------------------------------------- additions
