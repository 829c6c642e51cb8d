//! Failure-matrix scenarios FM-3 to FM-9: crashes around shipping, frame faults, divergence, epochs.

use std::path::PathBuf;

use walship_replica::halt::HaltReason;
use walship_wal::sim::SimStorage;
use walship_wal::state::{write_state_file, EpochEntry};
use walship_wal::{Position, Storage, Wal, WalOptions};

use super::snapshot::no_snapshot_state;
use super::support::*;
use super::{ensure, R};
use crate::net::NetFaults;
use crate::world::{FrameFault, World, WorldConfig, NODE_ROOT, PRIMARY};

pub(super) fn fm_3_1() -> R {
    let mut w = converged_cluster(cfg(2, -1), 31, 10)?;
    let before = primary_last(&w);
    w.client_append(&payloads("unsynced", 5, 40));
    // Crash before the group sync ran.
    let max_replica = (1..=2).map(|n| last_of(&w, n).lsn).max().unwrap_or(0);
    w.crash(PRIMARY);
    w.run_until(w.now() + 50);
    w.restart(PRIMARY);
    let after = primary_last(&w);
    ensure(after == before, || {
        format!(
            "primary restarted at lsn {after}, expected {before} (unsynced records must not exist)"
        )
    })?;
    ensure(max_replica <= before, || {
        format!("a replica held lsn {max_replica} > durable {before}")
    })?;
    ensure(w.oracle.shipped_above_durable == 0, || {
        "an undurable record was shipped".into()
    })?;
    w.client_append(&payloads("reused", 3, 40));
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!(
        "unsynced lsn {}..={} gone after restart (primary at {before}); replicas never held them; lsn {} reused and shipped",
        before + 1,
        before + 5,
        before + 1
    ))
}

pub(super) fn fm_3_2() -> R {
    let mut w = converged_cluster(cfg(2, -1), 32, 10)?;
    let now = w.now();
    w.net.partition(PRIMARY, 1, now);
    w.net.partition(PRIMARY, 2, now);
    w.client_append(&payloads("only-on-primary", 5, 40));
    w.run_until(w.now() + 20);
    let durable = w.primary.up.as_ref().map_or(0, |p| p.wal.durable_lsn());
    ensure(durable == 15, || {
        format!("primary durable {durable}, expected 15")
    })?;
    let held = (1..=2).map(|n| last_of(&w, n).lsn).max().unwrap_or(0);
    ensure(held == 10, || {
        format!("a replica holds lsn {held} before the primary shipped it")
    })?;
    w.crash(PRIMARY);
    let now = w.now();
    w.net.heal_all(now);
    w.run_until(now + 100);
    w.restart(PRIMARY);
    let after = primary_last(&w);
    ensure(after == 15, || {
        format!("primary restarted at {after}, durable records lost")
    })?;
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    let r = (1..=2).map(|n| durable_of(&w, n)).min().unwrap_or(0);
    ensure(r >= 15, || format!("replicas at {r} after catch-up"))?;
    Ok("lsn 11..=15 durable only on the primary survived its crash and reached both replicas by catch-up; committed then".into())
}

pub(super) fn fm_3_3() -> R {
    let mut c = cfg(1, -1);
    c.net.faults = NetFaults {
        min_delay_ms: 1,
        max_delay_ms: 3,
        ..NetFaults::none()
    };
    c.window.max_batch_bytes = 64 * 1024;
    let mut w = converged_cluster(c, 33, 2)?;
    w.client_append(&payloads("big", 20, 3_000));
    let cut = run_until_cond(&mut w, 2_000, |w| w.replica_buffered_bytes(1) > 0);
    ensure(cut, || "never observed a partly received frame".into())?;
    let partial = w.replica_buffered_bytes(1);
    let had = last_of(&w, 1).lsn;
    // The rest of the frame never leaves the primary: its link goes silent
    // and the process dies (datagrams in flight are lost with the partition).
    let now = w.now();
    w.net.partition(PRIMARY, 1, now);
    w.crash(PRIMARY);
    let ended = run_until_cond(&mut w, 10_000, |w| !w.replica_connected(1));
    ensure(ended, || "the session did not end".into())?;
    let ends = w.replica(1).session_ends.join(" | ");
    ensure(ends.contains("inside a frame"), || {
        format!("session end reasons: {ends}")
    })?;
    no_halts(&w)?;
    ensure(last_of(&w, 1).lsn == had, || {
        "the replica appended from a partial frame".into()
    })?;
    let now = w.now();
    w.net.heal_all(now);
    w.restart(PRIMARY);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!(
        "primary crashed with {partial} bytes of a frame buffered at the replica (last lsn {had}); session ended \"stream ended inside a frame\", no halt; resumed and caught up to lsn {}",
        last_of(&w, 1).lsn
    ))
}

// ---------------------------------------------------------------- section 4

pub(super) fn fm_4_1() -> R {
    let mut c = cfg(1, -1);
    c.sync_delay_ms = (5, 8);
    let mut w = converged_cluster(c, 41, 5)?;
    w.client_append(&payloads("r-unsynced", 6, 40));
    let got = run_until_cond(&mut w, 2_000, |w| last_of(w, 1).lsn > durable_of(w, 1));
    ensure(got, || "never saw unsynced records on the replica".into())?;
    let durable = durable_of(&w, 1);
    let last = last_of(&w, 1).lsn;
    let receipted = w
        .primary
        .up
        .as_ref()
        .map(|p| p.replica_progress(w.now())[0].durable_lsn)
        .unwrap_or(0);
    w.crash(1);
    w.restart(1);
    let after = last_of(&w, 1).lsn;
    ensure(after >= durable && after >= receipted, || {
        format!("after restart last {after} < durable {durable} / receipted {receipted}")
    })?;
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!(
        "replica crashed with lsn {}..={last} unsynced (durable {durable}, receipted {receipted}); restarted at {after}, re-fetched, no halt",
        durable + 1
    ))
}

pub(super) fn fm_4_2() -> R {
    // Quorum 2 with 2 replicas: r1 holds records durably that are not yet
    // committed (r2 partitioned), so they are durable but not applied.
    let mut w = converged_cluster(cfg(2, 2), 42, 5)?;
    let now = w.now();
    w.net.partition(PRIMARY, 2, now);
    w.client_append(&payloads("tentative", 4, 40));
    let got = run_until_cond(&mut w, 2_000, |w| durable_of(w, 1) >= 9);
    ensure(got, || "r1 never made lsn 9 durable".into())?;
    let applied = w.replica(1).applied.last_lsn();
    ensure(applied == 5, || {
        format!("r1 applied {applied}, expected 5 (commit)")
    })?;
    w.crash(1);
    w.restart(1);
    let now = w.now();
    w.net.heal_all(now);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    let a = &w.replica(1).applied.records;
    let dense = a.iter().enumerate().all(|(i, p)| p.lsn == i as u64 + 1);
    ensure(dense && a.len() == 9, || {
        format!(
            "applied sequence {:?}",
            a.iter().map(|p| p.lsn).collect::<Vec<_>>()
        )
    })?;
    Ok("r1 crashed with lsn 6..=9 durable but unapplied; after restart the applier saw 1..=9 exactly once, in order".into())
}

// ---------------------------------------------------------------- section 5

pub(super) fn fm_5_1() -> R {
    let mut c = cfg(2, -1);
    c.net.idle_timeout_ms = 300;
    let mut w = converged_cluster(c, 51, 5)?;
    let now = w.now();
    w.net.partition(PRIMARY, 1, now);
    let frozen = last_of(&w, 1);
    let applied = w.replica(1).applied.last_lsn();
    for i in 0..10 {
        w.client_append(&payloads(&format!("during-{i}"), 2, 40));
        w.run_until(w.now() + 100);
    }
    ensure(last_of(&w, 1) == frozen, || {
        "the partitioned replica's log changed".into()
    })?;
    ensure(w.replica(1).applied.last_lsn() == applied, || {
        "the partitioned replica applied records".into()
    })?;
    ensure(!w.replica_connected(1), || {
        "the session did not end during a 1 s partition".into()
    })?;
    no_halts(&w)?;
    let commit = w.primary_commit();
    ensure(commit >= 25, || {
        format!("commit {commit}: the majority (p0 + r2) should keep committing")
    })?;
    let now = w.now();
    w.net.heal_all(now);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!(
        "r1 frozen at lsn {} (applied {applied}) while partitioned, session ended, no halt; p0+r2 committed to {commit}; after heal r1 resumed from {} and caught up",
        frozen.lsn, frozen.lsn
    ))
}

pub(super) fn frame_fault_halts(
    seed: u64,
    fault: FrameFault,
) -> Result<(HaltReason, String), String> {
    frame_fault_halts_in(cfg(1, -1), seed, fault)
}

pub(super) fn frame_fault_halts_in(
    c: WorldConfig,
    seed: u64,
    fault: FrameFault,
) -> Result<(HaltReason, String), String> {
    let mut w = converged_cluster(c, seed, 5)?;
    let before = last_of(&w, 1);
    let applied = w.replica(1).applied.last_lsn();
    w.arm_frame_fault(1, fault);
    w.client_append(&payloads("faulty", 4, 40));
    let halted = run_until_cond(&mut w, 5_000, |w| w.replica(1).halted.is_some());
    ensure(halted, || format!("no halt after {fault:?}"))?;
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    ensure(last_of(&w, 1) == before, || {
        "records of the faulty frame were appended".into()
    })?;
    // Keep the primary going: the halted replica must stay put.
    w.client_append(&payloads("after", 4, 40));
    w.run_until(w.now() + 500);
    w.crash(1);
    w.restart(1);
    w.run_until(w.now() + 500);
    ensure(w.replica(1).applied.last_lsn() == applied, || {
        "applied after the halt".into()
    })?;
    ensure(last_of(&w, 1) == before, || {
        "appended after the halt".into()
    })?;
    let again = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.core().halt().cloned());
    ensure(again.as_ref() == Some(&h.record), || {
        format!("after restart the core reports {again:?}")
    })?;
    checked(&w)?;
    Ok((
        h.record.reason,
        format!(
            "halt {} at lsn {} (expected {}, found {}); log unchanged at lsn {}; still halted after restart",
            h.record.reason.as_str(),
            h.record.lsn,
            h.record.expected,
            h.record.found,
            before.lsn
        ),
    ))
}

/// The fault must give its halt on a clean network, under transport noise
/// and on a slow link (frames cut into many datagrams arriving over time).
pub(super) fn expect_halt(seed: u64, fault: FrameFault) -> R {
    let clean = cfg(1, -1);
    let mut noisy = cfg(1, -1);
    noisy.net.faults = NetFaults::noisy();
    noisy.net.idle_timeout_ms = 60_000;
    let mut slow = cfg(1, -1);
    slow.net.bandwidth_bytes_per_ms = 50;
    slow.net.mtu_bytes = 100;
    let Some(expected) = fault.expected_halt() else {
        return Err(format!(
            "{fault:?} is refused, not halted: no halt to expect"
        ));
    };
    let mut first = None;
    for (i, c) in [clean, noisy, slow].into_iter().enumerate() {
        let (reason, text) = frame_fault_halts_in(c, seed + 1000 * i as u64, fault)?;
        if reason != expected {
            return Err(format!("expected {}, got {text}", expected.as_str()));
        }
        first.get_or_insert(text);
    }
    Ok(format!(
        "{} (same reason under noise and on a slow link)",
        first.unwrap_or_default()
    ))
}

pub(super) fn fm_5_2() -> R {
    let a = expect_halt(52, FrameFault::Duplicate)?;
    let b = expect_halt(53, FrameFault::Reorder)?;
    Ok(format!("duplicate: {a}; reorder: {b}"))
}

// ---------------------------------------------------------------- section 6

pub(super) fn fm_6_1() -> R {
    expect_halt(61, FrameFault::Corrupt)
}

pub(super) fn fm_6_2() -> R {
    expect_halt(62, FrameFault::Skip)
}

// ---------------------------------------------------------------- section 7

pub(super) fn fm_7_2() -> R {
    // The primary is at epoch 2 (epoch 2 began at lsn 4) and has snapshotted
    // past lsn 5; the replica holds lsn 4..5 from epoch 1 (tentative records
    // of the old primary). The snapshot's history conflicts with them.
    let mut c = cfg(1, 0);
    c.epoch = 2;
    c.epoch_history = Some(vec![
        EpochEntry {
            epoch: 1,
            start_lsn: 1,
        },
        EpochEntry {
            epoch: 2,
            start_lsn: 4,
        },
    ]);
    let mut w = World::new(c, 72)?;
    let base = payloads("base", 3, 40);
    let mut prim = base.clone();
    prim.extend(payloads("epoch2", 400, 200));
    seed_wal(&w.primary.storage, 1, Some((2, 3)), &prim)?;
    let body =
        serde_json::to_vec(&serde_json::json!({"commit_lsn": 403})).map_err(|e| e.to_string())?;
    write_state_file(
        &w.primary.storage,
        &PathBuf::from(NODE_ROOT).join("state"),
        "commit",
        &body,
    )
    .map_err(|e| e.to_string())?;
    let mut rep = base;
    rep.extend(payloads("old-tentative", 2, 40));
    let r_last = seed_wal(&w.replica(1).storage, 1, None, &rep)?;
    seed_epochs(
        &w.replica(1).storage,
        vec![EpochEntry {
            epoch: 1,
            start_lsn: 1,
        }],
    )?;
    w.oracle.primary_history = {
        let (wal, _) = Wal::open(
            w.primary.storage.clone(),
            &PathBuf::from(NODE_ROOT).join("wal"),
            WalOptions {
                epoch: 2,
                ..WalOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        (1..=403)
            .filter_map(|l| wal.position_at(l).ok().flatten())
            .collect()
    };
    w.oracle.foreign_history.push(1);
    w.restart(PRIMARY);
    let boundary = w.primary_snapshot()?;
    w.restart(1);
    let halted = run_until_cond(&mut w, 30_000, |w| w.replica(1).halted.is_some());
    ensure(halted, || {
        format!("no halt; last events:\n{}", w.trace.render_tail())
    })?;
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    ensure(h.record.reason == HaltReason::SnapshotBoundary, || {
        format!("halted {}: {}", h.record.reason.as_str(), h.record.detail)
    })?;
    no_snapshot_state(&w, 1, 5)?;
    ensure(last_of(&w, 1) == r_last, || {
        "the replica's log changed".into()
    })?;
    Ok(format!(
        "snapshot {boundary} whose epoch history (epoch 2 from lsn 4) conflicts with the replica's epoch-1 records 4..5: halt snapshot-boundary ({}), not installed, replica log kept",
        h.record.found
    ))
}

// ---------------------------------------------------------------- section 8

pub(super) fn diverged_world(seed: u64) -> Result<(World, Position), String> {
    let mut w = World::new(cfg(1, -1), seed)?;
    // The primary has base-0..9; r1 has base-0..4 then its own 5..7.
    let base = payloads("base", 10, 40);
    seed_wal(&w.primary.storage, 1, None, &base)?;
    let mut other = base[..5].to_vec();
    other.extend(payloads("other", 3, 40));
    let r_last = seed_wal(&w.replica(1).storage, 1, None, &other)?;
    w.oracle.foreign_history.push(1);
    w.oracle.primary_history = {
        let (wal, _) = Wal::open(
            w.primary.storage.clone(),
            &PathBuf::from(NODE_ROOT).join("wal"),
            WalOptions {
                epoch: 1,
                ..WalOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        (1..=10)
            .filter_map(|l| wal.position_at(l).ok().flatten())
            .collect()
    };
    w.start_all();
    Ok((w, r_last))
}

pub(super) fn fm_8_1() -> R {
    let (mut w, r_last) = diverged_world(81)?;
    let halted = run_until_cond(&mut w, 5_000, |w| w.replica(1).halted.is_some());
    ensure(halted, || {
        format!("no halt; last events:\n{}", w.trace.render_tail())
    })?;
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    ensure(h.record.reason == HaltReason::Divergence, || {
        format!("halted {}", h.record.reason.as_str())
    })?;
    ensure(h.record.lsn == 6, || {
        format!(
            "divergence named lsn {}, first difference is 6",
            h.record.lsn
        )
    })?;
    ensure(last_of(&w, 1) == r_last, || {
        "the diverged log was changed".into()
    })?;
    checked(&w)?;
    Ok(format!(
        "halt divergence at lsn {} (expected {}, found {}); replica log kept as is (last lsn {})",
        h.record.lsn, h.record.expected, h.record.found, r_last.lsn
    ))
}

// ---------------------------------------------------------------- section 9

pub(super) fn fm_9_1() -> R {
    let mut c = cfg(2, -1);
    c.net.idle_timeout_ms = 300;
    c.sync_delay_ms = (4, 8);
    let mut w = converged_cluster(c, 91, 5)?;
    let now = w.now();
    w.net.partition(PRIMARY, 1, now);
    w.client_append(&payloads("while-partitioned", 6, 40));
    w.run_until(w.now() + 3);
    w.crash(1);
    w.run_until(w.now() + 200);
    w.restart(1);
    let recovered = last_of(&w, 1);
    w.client_append(&payloads("more", 4, 40));
    w.run_until(w.now() + 1_000);
    ensure(last_of(&w, 1) == recovered, || {
        "the partitioned replica got records from somewhere".into()
    })?;
    no_halts(&w)?;
    let now = w.now();
    w.net.heal_all(now);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!(
        "r1 crashed while partitioned, recovered at lsn {} and stayed there; after heal resumed to lsn {}",
        recovered.lsn,
        last_of(&w, 1).lsn
    ))
}

pub(super) fn fm_9_2() -> R {
    // (a) WAL recovery interrupted by a failing sync and a crash, at several points.
    let mut results = Vec::new();
    for k in 0..4u64 {
        let s = SimStorage::new(900 + k);
        let dir = PathBuf::from("/wal");
        s.create_dir_all(&dir).map_err(|e| e.to_string())?;
        s.sync_dir(std::path::Path::new("/"))
            .map_err(|e| e.to_string())?;
        let opts = WalOptions {
            epoch: 1,
            ..WalOptions::default()
        };
        let durable;
        {
            let (mut wal, _) = Wal::open(s.clone(), &dir, opts).map_err(|e| e.to_string())?;
            for p in payloads("d", 8, 100) {
                wal.append(&p).map_err(|e| e.to_string())?;
            }
            durable = wal.sync().map_err(|e| e.to_string())?;
            for p in payloads("u", 5, 3_000) {
                wal.append(&p).map_err(|e| e.to_string())?;
            }
        }
        s.crash_with_torn_write();
        // Interrupted recovery: the k-th sync fails, then power is lost.
        s.fail_syncs_after(k);
        let first = Wal::open(s.clone(), &dir, opts).map(|(w, _)| w.last());
        s.crash();
        s.clear_faults();
        let (wal, _) = Wal::open(s.clone(), &dir, opts)
            .map_err(|e| format!("recovery after interrupted recovery: {e}"))?;
        let last = wal.last();
        let (wal2, _) = Wal::open(s.clone(), &dir, opts).map_err(|e| e.to_string())?;
        ensure(wal2.last() == last, || "recovery is not idempotent".into())?;
        ensure(last.lsn >= durable, || {
            format!(
                "recovery lost synced lsn: last {} < durable {durable}",
                last.lsn
            )
        })?;
        if let Ok(f) = first {
            ensure(f.lsn >= durable, || {
                "first recovery lost synced records".into()
            })?;
        }
        results.push(last.lsn);
    }
    // (b) A replica crashed right after it restarted (before replay finished).
    let mut w = converged_cluster(cfg(1, -1), 92, 6)?;
    w.crash(1);
    w.restart(1);
    w.crash(1);
    w.restart(1);
    w.client_append(&payloads("after", 3, 40));
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!(
        "WAL recovery interrupted by a failed sync + crash at 4 points recovered to lsn {results:?} (>= synced 8, idempotent); replica crashed during its restart recovered and converged"
    ))
}

// ---------------------------------------------------------------- section 10
