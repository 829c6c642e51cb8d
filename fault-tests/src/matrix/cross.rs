//! Failure-matrix scenarios FM-X.*: cross-cutting rules (fsync failure, commit watermark, membership, disk loss).

use std::path::PathBuf;

use walship_replica::halt::HaltReason;
use walship_wal::state::{write_state_file, EpochEntry};
use walship_wal::Position;

use super::support::*;
use super::{crash::sim_seeds_clean, stream::expect_halt};
use super::{ensure, R};
use crate::net::NetFaults;
use crate::world::{node_name, FrameFault, World, INTRUDER_BASE, NODE_ROOT, PRIMARY};

pub(super) fn fm_x_1() -> R {
    let mut c = cfg(2, -1);
    c.net.faults = NetFaults::noisy();
    c.net.idle_timeout_ms = 60_000;
    let mut w = converged_cluster(c, 201, 3)?;
    for i in 0..30 {
        w.client_append(&payloads(
            &format!("noise{i}"),
            3,
            if i % 5 == 0 { 4_000 } else { 60 },
        ));
        w.run_until(w.now() + 5);
        checked(&w)?;
    }
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    let s = w.net.stats().clone();
    ensure(s.faults_injected() > 0, || "no noise was injected".into())?;
    Ok(format!(
        "{} datagram faults (drop {}, dup {}, reorder {}, corrupt {}) absorbed; no halt; both replicas converged to lsn {}",
        s.faults_injected(),
        s.dropped,
        s.duplicated,
        s.reordered,
        s.corrupted,
        w.primary_commit()
    ))
}

/// FM-X.2, both ways a stale primary meets a replica: (1) its `Hello` says the replica has
/// seen a higher epoch: the primary is fenced (acknowledges nothing, commits nothing), the
/// replica ends the session (`Refuse{NotPrimary}`), stores nothing, does not halt;
/// (2) a stale primary's `Welcome` reaches a converged replica: it refuses it
/// (`Refuse{StalePrimary}`), stores nothing, does not halt, and follows the real primary
/// again after its backoff.
pub(super) fn fm_x_2() -> R {
    let mut w = World::new(cfg(1, -1), 202)?;
    seed_epochs(
        &w.replica(1).storage,
        vec![
            EpochEntry {
                epoch: 1,
                start_lsn: 1,
            },
            EpochEntry {
                epoch: 5,
                start_lsn: 1,
            },
        ],
    )?;
    w.start_all();
    w.client_append(&payloads("stale", 3, 40));
    let fenced = run_until_cond(&mut w, 5_000, |w| {
        w.primary
            .up
            .as_ref()
            .and_then(|p| p.exec.fenced())
            .is_some()
    });
    ensure(fenced, || "the stale primary was not fenced".into())?;
    let fenced_at = w.primary.up.as_ref().and_then(|p| p.exec.fenced());
    ensure(fenced_at == Some(5), || format!("fenced at {fenced_at:?}"))?;
    // It acknowledges nothing after it learns, not even new appends.
    let later = w.client_append(&payloads("after", 2, 40));
    w.run_until(w.now() + 1_000);
    ensure(later.is_empty(), || {
        format!("wrote {later:?} after being fenced")
    })?;
    ensure(w.oracle.acked.is_empty(), || {
        format!("acknowledged {:?}", w.oracle.acked.keys())
    })?;
    ensure(w.primary_commit() == 0, || {
        format!("commit advanced to {}", w.primary_commit())
    })?;
    ensure(w.replica(1).halted.is_none(), || {
        "the replica halted".into()
    })?;
    ensure(last_of(&w, 1).lsn == 0, || {
        "records of the stale primary were appended".into()
    })?;
    let end = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.exec.status().last_session_end)
        .unwrap_or_default();
    ensure(end.starts_with("not the primary (epoch 5)"), || {
        format!("replica's last session end: {end:?}")
    })?;

    // (2) A stale Welcome to a converged replica.
    let mut w2 = converged_cluster(cfg(1, -1), 212, 10)?;
    let before = last_of(&w2, 1);
    w2.arm_frame_fault(1, FrameFault::StaleWelcome);
    w2.crash(1);
    w2.restart(1);
    let refused = run_until_cond(&mut w2, 5_000, |w| {
        w.replica(1).up.as_ref().is_some_and(|u| {
            u.exec
                .status()
                .last_session_end
                .is_some_and(|e| e.starts_with("refused stale primary"))
        })
    });
    ensure(refused, || "the stale Welcome was not refused".into())?;
    ensure(last_of(&w2, 1) == before, || {
        format!("the replica's log changed: {before} -> {}", last_of(&w2, 1))
    })?;
    checked(&w2)?;
    ensure(w2.replica(1).halted.is_none(), || {
        "the replica halted on a stale Welcome".into()
    })?;
    w2.client_append(&payloads("after-stale", 2, 40));
    converge(&mut w2)?;
    checked(&w2)?;
    Ok(format!(
        "stale primary fenced at epoch 5 by the replica's Hello: nothing acknowledged or committed, replica not halted ({end}); a stale Welcome refused without a halt, replica log unchanged at {before}, then followed the real primary to lsn {}",
        last_of(&w2, 1).lsn
    ))
}

pub(super) fn fm_x_3() -> R {
    expect_halt(203, FrameFault::EpochRegress)
}

pub(super) fn fm_x_4() -> R {
    let mut w = converged_cluster(cfg(1, -1), 204, 5)?;
    w.replica(1).storage.fail_syncs_after(0);
    w.client_append(&payloads("x4", 3, 40));
    let stopped = run_until_cond(&mut w, 2_000, |w| !w.is_up(1));
    ensure(stopped, || {
        "the replica did not stop on the failed sync".into()
    })?;
    let receipted = w
        .primary
        .up
        .as_ref()
        .map(|p| p.replica_progress(w.now())[0].durable_lsn)
        .unwrap_or(0);
    ensure(receipted <= 5, || {
        format!("receipt for lsn {receipted} that was never synced")
    })?;
    w.replica(1).storage.clear_faults();
    w.restart(1);
    let after = last_of(&w, 1).lsn;
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    // Once more with ONE failed fsync and later ones succeeding (the failed one drops the
    // file's dirty pages): a retried sync would appear to work. The node stops all the same.
    w.replica(1).storage.fail_one_sync_after(0);
    w.client_append(&payloads("x4-once", 3, 40));
    let stopped = run_until_cond(&mut w, 2_000, |w| !w.is_up(1));
    ensure(stopped, || {
        "the replica did not stop on a transient failed sync (later syncs succeed)".into()
    })?;
    w.replica(1).storage.clear_faults();
    w.restart(1);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!("sync failed on r1: node stopped (no retry), receipts stayed at {receipted}; restarted at lsn {after}, converged, no halt; one transient failed sync (later ones succeed) stopped it too"))
}

pub(super) fn fm_x_5() -> R {
    let mut w = converged_cluster(cfg(1, -1), 205, 5)?;
    let commit = w.primary_commit();
    w.primary.storage.fail_syncs_after(0);
    w.client_append(&payloads("x5", 3, 40));
    let stopped = run_until_cond(&mut w, 2_000, |w| !w.is_up(PRIMARY));
    ensure(stopped, || {
        "the primary did not stop on the failed sync".into()
    })?;
    ensure(w.oracle.acked.len() as u64 == commit, || {
        "records acknowledged despite the failed sync".into()
    })?;
    ensure(last_of(&w, 1).lsn <= 5, || {
        "records of the failed sync were shipped".into()
    })?;
    w.primary.storage.clear_faults();
    w.restart(PRIMARY);
    let after = primary_last(&w);
    ensure(after == 5, || format!("primary restarted at {after}"))?;
    w.client_append(&payloads("x5-again", 2, 40));
    converge(&mut w)?;
    checked(&w)?;
    // Once more with ONE failed fsync and later ones succeeding (the failed one drops the
    // file's dirty pages): a retried sync would appear to work. The primary stops all the
    // same and acknowledges nothing of that group.
    let acked = w.oracle.acked.len();
    w.primary.storage.fail_one_sync_after(0);
    w.client_append(&payloads("x5-once", 3, 40));
    let stopped = run_until_cond(&mut w, 2_000, |w| !w.is_up(PRIMARY));
    ensure(stopped, || {
        "the primary did not stop on a transient failed sync (later syncs succeed)".into()
    })?;
    ensure(w.oracle.acked.len() == acked, || {
        "records acknowledged despite the transient failed sync".into()
    })?;
    w.primary.storage.clear_faults();
    w.restart(PRIMARY);
    w.client_append(&payloads("x5-after", 2, 40));
    converge(&mut w)?;
    checked(&w)?;
    Ok("primary sync failed: node stopped, the 3 appends were never acknowledged or shipped, restart at lsn 5, converged; one transient failed sync (later ones succeed) stopped it too, nothing of its group acknowledged".into())
}

pub(super) fn fm_x_6() -> R {
    let mut w = converged_cluster(cfg(1, -1), 206, 40)?;
    w.crash(1);
    let s = w.replica(1).storage.clone();
    let seg = first_segment(&s)?;
    let bytes = s.contents(&seg).map_err(|e| e.to_string())?;
    let len = bytes.len() as u64;
    // Segments are preallocated: damage the middle of the records, not the zero tail.
    let records_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
    let at = records_end / 2;
    s.flip_bit(&seg, at, 3).map_err(|e| e.to_string())?;
    w.oracle.disk_damaged.insert(1);
    w.restart(1);
    let h = w
        .replica(1)
        .halted
        .clone()
        .ok_or_else(|| format!("no halt; stopped: {:?}", w.replica(1).stopped))?;
    ensure(h.record.reason == HaltReason::LocalCorruption, || {
        format!("halted {}", h.record.reason.as_str())
    })?;
    ensure(
        s.contents(&seg).map_err(|e| e.to_string())?.len() as u64 == len,
        || "the corrupt segment was cut".into(),
    )?;
    Ok(format!("bit flipped at offset {at} of {}: replica refused to start, halt local-corruption ({}), nothing cut", seg.display(), h.record.detail))
}

pub(super) fn fm_x_7() -> R {
    let mut tears = 0;
    for seed in 0..6u64 {
        let mut c = cfg(1, -1);
        c.sync_delay_ms = (5, 9);
        let mut w = converged_cluster(c, 2070 + seed, 4)?;
        w.client_append(&payloads("torn", 4, 2_000));
        run_until_cond(&mut w, 2_000, |w| last_of(w, 1).lsn > durable_of(w, 1));
        let durable = durable_of(&w, 1);
        w.crash_with(1, true);
        w.restart(1);
        no_halts(&w)?;
        ensure(w.is_up(1), || {
            format!(
                "replica refused to start after a torn tail: {:?}",
                w.replica(1).stopped
            )
        })?;
        let after = last_of(&w, 1).lsn;
        ensure(after >= durable, || {
            format!("cut below durable: {after} < {durable}")
        })?;
        if w.trace.tail().any(|e| e.what.contains("TornTailCut")) {
            tears += 1;
        }
        converge(&mut w)?;
        checked(&w)?;
    }
    Ok(format!("6 torn crashes of a replica with unsynced appends: every restart kept the synced records, {tears} reported TornTailCut, all converged"))
}

pub(super) fn fm_x_9() -> R {
    let mut w = converged_cluster(cfg(1, -1), 209, 5)?;
    let mut garbage = vec![0xffu8; 64];
    garbage[..4].copy_from_slice(&60u32.to_le_bytes());
    let sent = w.intruder_send(INTRUDER_BASE, &garbage);
    ensure(sent, || "intruder could not connect".into())?;
    w.run_until(w.now() + 200);
    no_halts(&w)?;
    ensure(w.is_up(PRIMARY), || "primary went down".into())?;
    w.client_append(&payloads("after", 3, 40));
    converge(&mut w)?;
    checked(&w)?;
    Ok("a non-member connection sending garbage was refused by the primary's member check and dropped; no halt, replication continued (mutual TLS itself is tested in walship-wire)".into())
}

pub(super) fn fm_x_10() -> R {
    let mut c = cfg(1, -1);
    c.epoch = 2;
    c.epoch_history = Some(vec![
        EpochEntry {
            epoch: 1,
            start_lsn: 1,
        },
        EpochEntry {
            epoch: 2,
            start_lsn: 8,
        },
    ]);
    let mut w = World::new(c, 210)?;
    let base = payloads("base", 10, 40);
    // New primary: base 0..6 at epoch 1, then its own records at epoch 2.
    let mut newp = base[..7].to_vec();
    newp.extend(payloads("new-primary", 3, 40));
    seed_wal(&w.primary.storage, 1, Some((2, 7)), &newp)?;
    // Replica: base 0..9 at epoch 1, committed up to 7 (8..10 tentative).
    let r_last = seed_wal(&w.replica(1).storage, 1, None, &base)?;
    let body =
        serde_json::to_vec(&serde_json::json!({"commit_lsn": 7})).map_err(|e| e.to_string())?;
    write_state_file(
        &w.replica(1).storage,
        &PathBuf::from(NODE_ROOT).join("state"),
        "commit",
        &body,
    )
    .map_err(|e| e.to_string())?;
    seed_epochs(
        &w.replica(1).storage,
        vec![EpochEntry {
            epoch: 1,
            start_lsn: 1,
        }],
    )?;
    w.oracle.foreign_history.push(1);
    w.start_all();
    let halted = run_until_cond(&mut w, 5_000, |w| w.replica(1).halted.is_some());
    ensure(halted, || {
        format!("no halt; last events:\n{}", w.trace.render_tail())
    })?;
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    ensure(
        h.record.reason == HaltReason::Divergence && h.record.lsn == 8,
        || format!("halted {} at {}", h.record.reason.as_str(), h.record.lsn),
    )?;
    ensure(last_of(&w, 1) == r_last, || {
        "tentative records were overwritten".into()
    })?;
    let applied = w.replica(1).applied.last_lsn();
    ensure(applied <= 7, || {
        format!("applied {applied}: tentative records were applied")
    })?;
    Ok(format!("replica with tentative lsn 8..=10 met a new epoch-2 primary: halt divergence at lsn 8, nothing overwritten, applied only to {applied}"))
}

pub(super) fn fm_x_11() -> R {
    let mut w = converged_cluster(cfg(2, -1), 211, 5)?;
    for i in 0..5 {
        w.client_append(&payloads(&format!("q{i}"), 3, 40));
        w.run_until(w.now() + 7);
    }
    let acked = w.oracle.acked.len();
    w.crash(1);
    w.crash(PRIMARY);
    w.restart(PRIMARY);
    w.restart(1);
    checked(&w)?;
    converge(&mut w)?;
    checked(&w)?;
    let s = sim_seeds_clean(1200..1206, 150, "lost-acknowledged-commit")?;
    Ok(format!(
        "{acked} acknowledged records survived crashing the primary and one replica together; {s}"
    ))
}

pub(super) fn fm_x_12() -> R {
    let mut w = converged_cluster(cfg(1, -1), 212, 5)?;
    let s = w.replica(1).storage.clone();
    s.set_capacity_bytes(s.used_bytes() + 10);
    w.client_append(&payloads("enospc", 3, 500));
    let stopped = run_until_cond(&mut w, 2_000, |w| !w.is_up(1));
    ensure(stopped, || "the replica did not stop on ENOSPC".into())?;
    no_halts(&w)?;
    s.set_capacity_bytes(u64::MAX);
    w.restart(1);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok("replica disk full while appending: node stopped, no receipt, no halt; after space came back it resumed and converged".into())
}

pub(super) fn fm_x_15() -> R {
    // Quorum 2 with 2 replicas: every commit needs both replica disks.
    let mut w = converged_cluster(cfg(2, 2), 215, 10)?;
    let now = w.now();
    w.net.partition(PRIMARY, 2, now);
    w.client_append(&payloads("r1-only", 10, 40));
    let got = run_until_cond(&mut w, 2_000, |w| durable_of(w, 1) >= 20);
    ensure(got, || "r1 never made lsn 20 durable".into())?;
    // r1's receipt for lsn 20 reaches the primary; r2 is cut off: commit 10.
    w.run_until(w.now() + 20);
    let commit_before = w.primary_commit();
    ensure(commit_before == 10, || {
        format!("commit {commit_before} without r2")
    })?;
    // r1's disk is replaced; it reconnects empty and says so in its Hello,
    // then is cut off before it can re-replicate.
    // Only events after the wipe count: the tail still holds the first handshake.
    let wiped_at = w.now();
    w.wipe_replica_disk(1)?;
    w.restart(1);
    let hello = run_until_cond(&mut w, 2_000, |w| {
        let mut after = w.trace.tail().filter(|e| e.at_ms >= wiped_at);
        after.any(|e| e.what.starts_with("r1 -> p0 Hello(last 0"))
            && after.any(|e| e.what.starts_with("p0 -> r1 Welcome"))
    });
    ensure(hello, || {
        "r1 did not reconnect after the disk replacement".into()
    })?;
    let now = w.now();
    w.net.partition(PRIMARY, 1, now);
    // r2 comes back and catches up to lsn 20.
    w.net.heal(PRIMARY, 2, now);
    w.run_until(w.now() + 2_000);
    let commit = w.primary_commit();
    let r1 = durable_of(&w, 1);
    if commit > 10 && r1 < commit {
        return Err(format!(
            "commit advanced to {commit} on r2's receipt plus r1's receipt from before its disk was replaced, although r1's Hello proved it holds lsn {r1} (quorum 2 counts a copy that does not exist)"
        ));
    }
    checked(&w)?;
    let now = w.now();
    w.net.heal_all(now);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    Ok(format!(
        "r1 came back empty after a disk replacement: commit stayed at {commit} until r1 re-replicated, then converged to {}",
        w.primary_commit()
    ))
}

pub(super) fn fm_x_16() -> R {
    let mut w = converged_cluster(cfg(2, -1), 216, 12)?;
    let acked = w.oracle.acked.len();
    let before: Vec<Position> = (1..=2).map(|n| last_of(&w, n)).collect();
    w.wipe_primary_disk()?;
    w.run_until(w.now() + 100);
    w.restart(PRIMARY);
    // The empty primary takes new writes under the same epoch.
    w.client_append(&payloads("after-loss", 20, 40));
    let halted = run_until_cond(&mut w, 10_000, |w| {
        (1..=2).all(|n| w.replica(n).halted.is_some())
    });
    let reasons: Vec<String> = (1..=2)
        .map(|n| {
            w.replica(n)
                .halted
                .as_ref()
                .map_or("not halted".into(), |h| {
                    format!("{} at lsn {}", h.record.reason.as_str(), h.record.lsn)
                })
        })
        .collect();
    ensure(halted, || {
        format!(
            "replicas: {reasons:?}; last events:\n{}",
            w.trace.render_tail()
        )
    })?;
    for n in 1..=2 {
        let h = w.replica(n).halted.clone().ok_or("no halt")?;
        ensure(h.record.reason == HaltReason::Divergence, || {
            format!("{} halted {}", node_name(n), h.record.reason.as_str())
        })?;
        ensure(last_of(&w, n) == before[n - 1], || {
            format!("{}'s log changed", node_name(n))
        })?;
    }
    let lost = &w.oracle.lost_primary_history;
    let kept = (1..=2).all(|n| {
        (1..=acked as u64).all(|l| {
            w.replica(n)
                .up
                .as_ref()
                .and_then(|u| u.wal()?.position_at(l).ok().flatten())
                == lost.get(l as usize - 1).copied()
        })
    });
    ensure(kept, || "a replica lost acknowledged records".into())?;
    Ok(format!(
        "primary restarted on an empty disk and wrote new records under the same epoch: both replicas halted ({reasons:?}), keeping all {acked} acknowledged records; nothing was overwritten"
    ))
}

pub(super) fn fm_x_14() -> R {
    expect_halt(214, FrameFault::Malformed)
}
