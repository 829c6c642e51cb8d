//! Failure-matrix scenarios around snapshots: transfer, install crash points, retention (FM-4.3, FM-7.1, FM-X.8, FM-X.13, FM-10.5 helpers).

use std::path::PathBuf;

use walship_replica::halt::HaltReason;
use walship_wal::{Lsn, Position, Storage};

use super::support::*;
use super::{ensure, R};
use crate::net::NodeId;
use crate::world::{FrameFault, World, NODE_ROOT, PRIMARY};

/// A primary that has snapshotted and truncated its log past lsn 3, and a
/// replica (down) at lsn 3 that will need the snapshot; the link to the
/// replica is slow so the transfer takes a while. (Public for the findings'
/// reproducers.)
pub fn snapshot_world(seed: u64) -> Result<(World, Position), String> {
    let mut c = cfg(1, 0);
    c.net.bandwidth_bytes_per_ms = 40;
    c.net.mtu_bytes = 200;
    let mut w = converged_cluster(c, seed, 3)?;
    w.crash(1);
    w.client_append(&payloads("far", 400, 200));
    w.run_until(w.now() + 100);
    let boundary = w.primary_snapshot()?;
    Ok((w, boundary))
}

pub(super) fn no_snapshot_state(w: &World, n: NodeId, last: Lsn) -> Result<(), String> {
    let u = w.replica(n).up.as_ref().ok_or("replica down")?;
    let newest = u
        .exec
        .snapshots()
        .ok_or("replica WAL not open")?
        .newest()
        .map_err(|e| e.to_string())?;
    ensure(newest.is_none(), || {
        format!("a snapshot is installed: {newest:?}")
    })?;
    let wal_last = u.wal().map_or(0, |w| w.last().lsn);
    ensure(wal_last == last, || {
        format!("WAL last {wal_last} instead of {last}")
    })?;
    let tmp = w
        .storage(n)
        .list(&PathBuf::from(NODE_ROOT).join("snapshots"))
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|x| x.starts_with(walship_snapshot::TMP_PREFIX))
        .count();
    ensure(tmp == 0, || format!("{tmp} partial snapshots left"))
}

pub(super) fn fm_x_8() -> R {
    let (mut w, boundary) = snapshot_world(208)?;
    w.restart(1);
    let mid = run_until_cond(&mut w, 20_000, |w| w.replica_installing(1));
    ensure(mid, || "the transfer never started".into())?;
    w.run_until(w.now() + 20);
    ensure(w.replica_installing(1), || {
        "the transfer finished too fast to cut".into()
    })?;
    let now = w.now();
    w.net.partition(PRIMARY, 1, now);
    let ended = run_until_cond(&mut w, 10_000, |w| {
        !w.replica_installing(1) && !w.replica_connected(1)
    });
    ensure(ended, || "the session did not end".into())?;
    no_halts(&w)?;
    no_snapshot_state(&w, 1, 3)?;
    let now = w.now();
    w.net.heal_all(now);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    let base = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.wal())
        .map(|w| w.base());
    ensure(base == Some(boundary), || format!("replica base {base:?}"))?;
    Ok(format!("partition in the middle of the snapshot transfer: session ended, partial snapshot discarded, replica still at lsn 3, no halt; after heal the transfer restarted and {boundary} was installed"))
}

pub(super) fn fm_4_3() -> R {
    let (mut w, boundary) = snapshot_world(43)?;
    w.restart(1);
    let mid = run_until_cond(&mut w, 20_000, |w| w.replica_installing(1));
    ensure(mid, || "the transfer never started".into())?;
    w.run_until(w.now() + 20);
    ensure(w.replica_installing(1), || {
        "the install finished before the crash".into()
    })?;
    w.crash(1);
    w.restart(1);
    no_halts(&w)?;
    no_snapshot_state(&w, 1, 3)?;
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    let base = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.wal())
        .map(|w| w.base());
    ensure(base == Some(boundary), || format!("replica base {base:?}"))?;
    let sweep = crate::snapshot_sweep::sweep(4300)?;
    Ok(format!(
        "replica crashed mid-install: restarted with no snapshot, no temporary, WAL at lsn 3; the transfer started over and {boundary} was installed; install layer sweep: {} interruption points, {} old / {} new, never mixed",
        sweep.0, sweep.1, sweep.2
    ))
}

pub(super) fn fm_7_1() -> R {
    let (mut w, _) = snapshot_world(71)?;
    w.arm_frame_fault(1, FrameFault::CorruptChunk);
    w.restart(1);
    let halted = run_until_cond(&mut w, 30_000, |w| w.replica(1).halted.is_some());
    ensure(halted, || {
        format!("no halt; last events:\n{}", w.trace.render_tail())
    })?;
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    ensure(h.record.reason == HaltReason::SnapshotInvalid, || {
        format!("halted {}", h.record.reason.as_str())
    })?;
    no_snapshot_state(&w, 1, 3)?;
    checked(&w)?;
    Ok(format!("a snapshot chunk with a bad crc: halt snapshot-invalid ({}), partial snapshot discarded, replica unchanged at lsn 3", h.record.found))
}

pub(super) fn fm_x_13() -> R {
    let mut w = converged_cluster(cfg(1, 0), 213, 3)?;
    w.crash(1);
    // The replica is down while the primary commits alone (quorum 0) and
    // snapshots at its commit watermark.
    w.client_append(&payloads("far", 400, 200));
    w.run_until(w.now() + 100);
    let boundary = w.primary_snapshot()?;
    w.client_append(&payloads("after-snapshot", 5, 40));
    w.run_until(w.now() + 50);
    let first = w
        .primary
        .up
        .as_ref()
        .map_or(0, |p| p.wal.with(|wal| wal.first_lsn()));
    ensure(first > 4, || {
        format!("the primary still retains lsn {first}")
    })?;
    w.restart(1);
    converge(&mut w)?;
    checked(&w)?;
    no_halts(&w)?;
    let base = w
        .replica(1)
        .up
        .as_ref()
        .and_then(|u| u.wal())
        .map(|w| w.base());
    ensure(base == Some(boundary), || {
        format!("replica WAL base {base:?}, snapshot {boundary}")
    })?;
    Ok(format!(
        "replica at lsn 3, primary retains from lsn {first}: snapshot {} shipped and installed, WAL restarted after it, caught up to lsn {}, no halt",
        boundary,
        last_of(&w, 1).lsn
    ))
}
