//! Failure-matrix conformance: one scenario per ID of
//! `spec/failure-matrix.md`, each running the real cores and WAL over the
//! simulated disk, network and clock, and comparing what happened with the
//! row's required outcome.

use std::fmt::Write as _;
use std::path::PathBuf;

use walship_replica::halt::HaltReason;
use walship_wal::sim::SimStorage;
use walship_wal::state::{write_state_file, EpochEntry, EpochHistory};
use walship_wal::{Lsn, Position, Storage, Wal, WalOptions};

use crate::check::{check_all, standard_checkers};
use crate::net::{NetFaults, NodeId};
use crate::sim::{self, SimOptions};
use crate::world::{node_name, FrameFault, World, WorldConfig, INTRUDER_BASE, NODE_ROOT, PRIMARY};

/// The spec file compiled into the binary.
pub const SPEC: &str = include_str!("../../spec/failure-matrix.md");

/// One row of the spec table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRow {
    /// Stable ID, e.g. `FM-6.2`.
    pub id: String,
    /// The failure, as written.
    pub failure: String,
    /// The required outcome, as written.
    pub required: String,
    /// The Test cell.
    pub test: String,
}

/// Parses every `| FM-... |` table row of the spec.
pub fn parse_spec(text: &str) -> Vec<SpecRow> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("| FM-"))
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            if cells.len() < 5 {
                return None;
            }
            Some(SpecRow {
                id: cells[0].to_string(),
                failure: cells[1].to_string(),
                required: cells[3].to_string(),
                test: cells[4].to_string(),
            })
        })
        .collect()
}

/// The result of one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The required outcome was observed.
    Pass(String),
    /// Something else was observed.
    Fail(String),
    /// The scenario ran, but a feature the row needs does not exist yet; counts as a failure.
    Missing {
        /// What is missing.
        feature: &'static str,
        /// What was observed.
        observed: String,
    },
}

impl Verdict {
    /// True only for [`Verdict::Pass`].
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass(_))
    }
    /// What was observed.
    pub fn observed(&self) -> &str {
        match self {
            Verdict::Pass(s) | Verdict::Fail(s) | Verdict::Missing { observed: s, .. } => s,
        }
    }
}

/// A scenario for one spec ID.
pub struct Scenario {
    /// The spec ID it proves.
    pub id: &'static str,
    /// Name of the test function that runs it in `cargo test`.
    pub test: &'static str,
    /// Runs it.
    pub run: fn() -> Verdict,
}

type R = Result<String, String>;

fn verdict(r: R) -> Verdict {
    match r {
        Ok(s) => Verdict::Pass(s),
        Err(s) => Verdict::Fail(s),
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn cfg(replicas: usize, quorum: i64) -> WorldConfig {
    WorldConfig {
        replicas,
        quorum,
        ..WorldConfig::default()
    }
}

fn payloads(tag: &str, n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v = format!("{tag}-{i}-").into_bytes();
            v.resize(v.len() + len, (i % 251) as u8);
            v
        })
        .collect()
}

/// A started cluster that has committed and applied `n` records everywhere.
fn converged_cluster(c: WorldConfig, seed: u64, n: usize) -> Result<World, String> {
    let mut w = World::new(c, seed)?;
    w.start_all();
    w.client_append(&payloads("base", n, 40));
    if !w.run_until_converged(30_000) {
        return Err(format!("setup did not converge: {}", w.trace.render_tail()));
    }
    checked(&w)?;
    Ok(w)
}

fn converge(w: &mut World) -> Result<(), String> {
    if w.run_until_converged(60_000) {
        Ok(())
    } else {
        Err(format!(
            "did not converge; last events:\n{}",
            w.trace.render_tail()
        ))
    }
}

/// Runs the standard checkers once (fresh: they judge the whole state).
fn checked(w: &World) -> Result<(), String> {
    let mut c = standard_checkers();
    check_all(&mut c, w).map_err(|v| v.to_string())
}

fn last_of(w: &World, n: NodeId) -> Position {
    w.replica_last(n).unwrap_or_default()
}

fn durable_of(w: &World, n: NodeId) -> Lsn {
    w.replica(n)
        .up
        .as_ref()
        .and_then(|u| u.wal())
        .map_or(0, |w| w.durable_lsn())
}

fn primary_last(w: &World) -> Lsn {
    w.primary.up.as_ref().map_or(0, |p| p.wal.last().lsn)
}

fn no_halts(w: &World) -> Result<(), String> {
    for r in &w.replicas {
        if let Some(h) = &r.halted {
            return Err(format!(
                "{} halted ({}): {}",
                node_name(r.id),
                h.record.reason.as_str(),
                h.record.detail
            ));
        }
    }
    Ok(())
}

/// Steps 1 ms at a time until `cond` holds (or `max_ms` passes).
fn run_until_cond(w: &mut World, max_ms: u64, mut cond: impl FnMut(&World) -> bool) -> bool {
    let end = w.now() + max_ms;
    while w.now() < end {
        if cond(w) {
            return true;
        }
        let t = w.now() + 1;
        w.run_until(t);
    }
    cond(w)
}

/// Seeds a node's disk with a WAL of `payloads` at `epoch` (all synced).
fn seed_wal(
    s: &SimStorage,
    epoch: u64,
    tail_epoch: Option<(u64, usize)>,
    pl: &[Vec<u8>],
) -> Result<Position, String> {
    let dir = PathBuf::from(NODE_ROOT).join("wal");
    let opts = WalOptions {
        segment_size_bytes: WorldConfig::default().segment_size_bytes,
        max_record_bytes: WorldConfig::default().max_record_bytes,
        epoch,
    };
    let (mut wal, _) = Wal::open(s.clone(), &dir, opts).map_err(|e| e.to_string())?;
    for (i, p) in pl.iter().enumerate() {
        if let Some((e, from)) = tail_epoch {
            if i == from {
                wal.set_epoch(e);
            }
        }
        wal.append(p).map_err(|e| e.to_string())?;
    }
    wal.sync().map_err(|e| e.to_string())?;
    Ok(wal.last())
}

fn seed_epochs(s: &SimStorage, entries: Vec<EpochEntry>) -> Result<(), String> {
    let body = serde_json::to_vec(&EpochHistory { entries }).map_err(|e| e.to_string())?;
    write_state_file(s, &PathBuf::from(NODE_ROOT).join("state"), "epochs", &body)
        .map_err(|e| e.to_string())
}

fn first_segment(s: &SimStorage) -> Result<PathBuf, String> {
    let dir = PathBuf::from(NODE_ROOT).join("wal");
    let names = s.list(&dir).map_err(|e| e.to_string())?;
    names
        .iter()
        .find(|n| n.ends_with(".wal"))
        .map(|n| dir.join(n))
        .ok_or_else(|| "no segment file".to_string())
}

// ---------------------------------------------------------------- section 3

fn fm_3_1() -> R {
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

fn fm_3_2() -> R {
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

fn fm_3_3() -> R {
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

fn fm_4_1() -> R {
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
        .map(|p| p.core().status(&NoLog, w.now()).replicas[0].durable_lsn)
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

/// The primary core's `status` needs a log only for the durable position;
/// the scenarios read receipts through it.
struct NoLog;
impl walship_primary::core::LogSource for NoLog {
    fn position_at(&mut self, _: Lsn) -> Result<Option<Position>, walship_wal::WalError> {
        Ok(None)
    }
    fn durable(&self) -> Position {
        Position::default()
    }
    fn first_lsn(&self) -> Lsn {
        1
    }
    fn read_batch(
        &mut self,
        _: Lsn,
        _: usize,
    ) -> Result<Option<(Lsn, u32, Position, Vec<u8>)>, walship_wal::WalError> {
        Ok(None)
    }
}

fn fm_4_2() -> R {
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

fn fm_5_1() -> R {
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

fn frame_fault_halts(seed: u64, fault: FrameFault) -> Result<(HaltReason, String), String> {
    frame_fault_halts_in(cfg(1, -1), seed, fault)
}

fn frame_fault_halts_in(
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
fn expect_halt(seed: u64, fault: FrameFault) -> R {
    let clean = cfg(1, -1);
    let mut noisy = cfg(1, -1);
    noisy.net.faults = NetFaults::noisy();
    noisy.net.idle_timeout_ms = 60_000;
    let mut slow = cfg(1, -1);
    slow.net.bandwidth_bytes_per_ms = 50;
    slow.net.mtu_bytes = 100;
    let mut first = None;
    for (i, c) in [clean, noisy, slow].into_iter().enumerate() {
        let (reason, text) = frame_fault_halts_in(c, seed + 1000 * i as u64, fault)?;
        if reason != fault.expected_halt() {
            return Err(format!(
                "expected {}, got {text}",
                fault.expected_halt().as_str()
            ));
        }
        first.get_or_insert(text);
    }
    Ok(format!(
        "{} (same reason under noise and on a slow link)",
        first.unwrap_or_default()
    ))
}

fn fm_5_2() -> R {
    let a = expect_halt(52, FrameFault::Duplicate)?;
    let b = expect_halt(53, FrameFault::Reorder)?;
    Ok(format!("duplicate: {a}; reorder: {b}"))
}

// ---------------------------------------------------------------- section 6

fn fm_6_1() -> R {
    expect_halt(61, FrameFault::Corrupt)
}

fn fm_6_2() -> R {
    expect_halt(62, FrameFault::Skip)
}

// ---------------------------------------------------------------- section 7

fn fm_7_2() -> R {
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

fn diverged_world(seed: u64) -> Result<(World, Position), String> {
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

fn fm_8_1() -> R {
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

fn fm_9_1() -> R {
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

fn fm_9_2() -> R {
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

fn sim_seeds_clean(seeds: std::ops::Range<u64>, steps: u64, spec: &str) -> R {
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

fn fm_10_1() -> R {
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

fn fm_10_2() -> R {
    let s = sim_seeds_clean(1100..1106, 150, "reordered-apply")?;
    let (_, t) = frame_fault_halts(102, FrameFault::Reorder)?;
    Ok(format!("{s}; a reordered frame halts: {t}"))
}

fn fm_10_3() -> R {
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

fn fm_10_4() -> R {
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

fn fm_10_5() -> R {
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

fn fm_11_1() -> R {
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

fn fm_11_2() -> R {
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

fn fm_11_3() -> R {
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

fn fm_x_1() -> R {
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

fn fm_x_2() -> R {
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
    let halted = run_until_cond(&mut w, 5_000, |w| w.replica(1).halted.is_some());
    ensure(halted, || "no halt".into())?;
    let h = w.replica(1).halted.clone().ok_or("no halt")?;
    ensure(h.record.reason == HaltReason::StalePrimary, || {
        format!("halted {}", h.record.reason.as_str())
    })?;
    ensure(last_of(&w, 1).lsn == 0, || {
        "records of the stale primary were appended".into()
    })?;
    Ok(format!(
        "halt stale-primary ({} / {}); nothing appended",
        h.record.expected, h.record.found
    ))
}

fn fm_x_3() -> R {
    expect_halt(203, FrameFault::EpochRegress)
}

fn fm_x_4() -> R {
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
        .map(|p| p.core().status(&NoLog, w.now()).replicas[0].durable_lsn)
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

fn fm_x_5() -> R {
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

fn fm_x_6() -> R {
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

fn fm_x_7() -> R {
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

fn fm_x_9() -> R {
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

fn fm_x_10() -> R {
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

fn fm_x_11() -> R {
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

fn fm_x_12() -> R {
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

fn fm_x_15() -> R {
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

fn fm_x_16() -> R {
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

fn fm_x_14() -> R {
    expect_halt(214, FrameFault::Malformed)
}

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

fn no_snapshot_state(w: &World, n: NodeId, last: Lsn) -> Result<(), String> {
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

fn fm_x_8() -> R {
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

fn fm_4_3() -> R {
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

fn fm_7_1() -> R {
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

fn fm_x_13() -> R {
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

/// Every scenario, in spec order.
pub fn scenarios() -> Vec<Scenario> {
    macro_rules! sc {
        ($id:literal, $test:literal, $f:expr) => {
            Scenario {
                id: $id,
                test: $test,
                run: $f,
            }
        };
    }
    vec![
        sc!(
            "FM-3.1",
            "fm_3_1_primary_crash_before_sync_record_never_exists",
            || verdict(fm_3_1())
        ),
        sc!(
            "FM-3.2",
            "fm_3_2_primary_crash_after_sync_record_survives_and_ships",
            || verdict(fm_3_2())
        ),
        sc!(
            "FM-3.3",
            "fm_3_3_primary_crash_mid_frame_ends_session_no_halt",
            || verdict(fm_3_3())
        ),
        sc!(
            "FM-4.1",
            "fm_4_1_replica_crash_before_sync_refetches_no_halt",
            || verdict(fm_4_1())
        ),
        sc!(
            "FM-4.2",
            "fm_4_2_replica_crash_before_apply_replays_in_order",
            || verdict(fm_4_2())
        ),
        sc!(
            "FM-4.3",
            "fm_4_3_replica_crash_during_snapshot_install_keeps_prior_state",
            || verdict(fm_4_3())
        ),
        sc!(
            "FM-5.1",
            "fm_5_1_partition_ends_session_replica_frozen_resumes_after_heal",
            || verdict(fm_5_1())
        ),
        sc!(
            "FM-5.2",
            "fm_5_2_duplicated_or_reordered_record_halts",
            || verdict(fm_5_2())
        ),
        sc!("FM-6.1", "fm_6_1_corrupted_record_halts_checksum", || {
            verdict(fm_6_1())
        }),
        sc!("FM-6.2", "fm_6_2_gap_in_stream_halts_replica", || verdict(
            fm_6_2()
        )),
        sc!(
            "FM-7.1",
            "fm_7_1_invalid_snapshot_halts_snapshot_invalid",
            || verdict(fm_7_1())
        ),
        sc!("FM-7.2", "fm_7_2_snapshot_boundary_mismatch_halts", || {
            verdict(fm_7_2())
        }),
        sc!(
            "FM-8.1",
            "fm_8_1_diverged_replica_halts_divergence_log_kept",
            || verdict(fm_8_1())
        ),
        sc!(
            "FM-9.1",
            "fm_9_1_replica_crash_while_partitioned_recovers_and_resumes",
            || verdict(fm_9_1())
        ),
        sc!(
            "FM-9.2",
            "fm_9_2_crash_during_recovery_recovers_identically",
            || verdict(fm_9_2())
        ),
        sc!("FM-10.1", "fm_10_1_tentative_records_never_applied", || {
            verdict(fm_10_1())
        }),
        sc!("FM-10.2", "fm_10_2_applied_order_is_dense", || verdict(
            fm_10_2()
        )),
        sc!("FM-10.3", "fm_10_3_divergence_never_healed", || verdict(
            fm_10_3()
        )),
        sc!("FM-10.4", "fm_10_4_no_implicit_authority", || verdict(
            fm_10_4()
        )),
        sc!("FM-10.5", "fm_10_5_no_mixed_snapshot_and_wal", || verdict(
            fm_10_5()
        )),
        sc!("FM-11.1", "fm_11_1_same_seed_same_trace_hash", || verdict(
            fm_11_1()
        )),
        sc!("FM-11.2", "fm_11_2_halt_independent_of_timing", || verdict(
            fm_11_2()
        )),
        sc!(
            "FM-11.3",
            "fm_11_3_restart_is_function_of_durable_state",
            || verdict(fm_11_3())
        ),
        sc!("FM-X.1", "fm_x_1_transport_noise_never_halts", || verdict(
            fm_x_1()
        )),
        sc!("FM-X.2", "fm_x_2_stale_primary_halts", || verdict(fm_x_2())),
        sc!("FM-X.3", "fm_x_3_epoch_regression_halts", || verdict(
            fm_x_3()
        )),
        sc!("FM-X.4", "fm_x_4_replica_fsync_failure_stops_node", || {
            verdict(fm_x_4())
        }),
        sc!("FM-X.5", "fm_x_5_primary_fsync_failure_stops_node", || {
            verdict(fm_x_5())
        }),
        sc!("FM-X.6", "fm_x_6_local_corruption_halts", || verdict(
            fm_x_6()
        )),
        sc!("FM-X.7", "fm_x_7_torn_tail_cut_keeps_synced", || verdict(
            fm_x_7()
        )),
        sc!(
            "FM-X.8",
            "fm_x_8_session_end_mid_snapshot_restarts_transfer",
            || verdict(fm_x_8())
        ),
        sc!("FM-X.9", "fm_x_9_non_member_cannot_cause_halt", || verdict(
            fm_x_9()
        )),
        sc!(
            "FM-X.10",
            "fm_x_10_tentative_conflict_after_failover_halts",
            || verdict(fm_x_10())
        ),
        sc!(
            "FM-X.11",
            "fm_x_11_acknowledged_commits_survive_minority_crash",
            || verdict(fm_x_11())
        ),
        sc!("FM-X.12", "fm_x_12_enospc_stops_node_no_halt", || verdict(
            fm_x_12()
        )),
        sc!("FM-X.14", "fm_x_14_malformed_batch_halts", || verdict(
            fm_x_14()
        )),
        sc!(
            "FM-X.16",
            "fm_x_16_primary_disk_loss_halts_replicas_never_overwrites",
            || verdict(fm_x_16())
        ),
        sc!(
            "FM-X.15",
            "fm_x_15_replaced_replica_disk_does_not_count_old_receipts",
            || verdict(fm_x_15())
        ),
        sc!(
            "FM-X.13",
            "fm_x_13_far_behind_replica_gets_snapshot",
            || verdict(fm_x_13())
        ),
    ]
}

/// Finds the scenario for `id`.
pub fn scenario(id: &str) -> Option<Scenario> {
    scenarios().into_iter().find(|s| s.id == id)
}

/// One line of the matrix report.
#[derive(Debug, Clone)]
pub struct MatrixLine {
    /// The spec row.
    pub row: SpecRow,
    /// The verdict (`None`: no scenario for this ID).
    pub verdict: Option<Verdict>,
}

/// Runs every scenario for the IDs of `spec` (those matching `filter`).
pub fn run_matrix(spec: &str, filter: Option<&str>) -> Vec<MatrixLine> {
    let all = scenarios();
    parse_spec(spec)
        .into_iter()
        .filter(|r| filter.is_none_or(|f| r.id.contains(f)))
        .map(|row| {
            let verdict = all.iter().find(|s| s.id == row.id).map(|s| {
                let r = std::panic::catch_unwind(s.run);
                r.unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    Verdict::Fail(format!("panicked: {msg}"))
                })
            });
            MatrixLine { row, verdict }
        })
        .collect()
}

fn short(s: &str, n: usize) -> String {
    let s = s.replace('|', "/");
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Renders the table `ID | failure | required outcome | observed | pass/fail`.
pub fn render(lines: &[MatrixLine], width: usize) -> String {
    let mut out = String::from("ID | failure | required outcome | observed | pass/fail\n");
    out.push_str("---|---|---|---|---\n");
    for l in lines {
        let (obs, pf) = match &l.verdict {
            None => ("NO SCENARIO".to_string(), "FAIL".to_string()),
            Some(Verdict::Pass(o)) => (o.clone(), "pass".to_string()),
            Some(Verdict::Fail(o)) => (o.clone(), "FAIL".to_string()),
            Some(Verdict::Missing { feature, observed }) => (
                format!("{observed} [missing: {feature}]"),
                "FAIL (missing)".to_string(),
            ),
        };
        let _ = writeln!(
            out,
            "{} | {} | {} | {} | {}",
            l.row.id,
            short(&l.row.failure.replace("**walship addition.** ", ""), width),
            short(&l.row.required, width),
            short(&obs, width * 2),
            pf
        );
    }
    let pass = lines
        .iter()
        .filter(|l| l.verdict.as_ref().is_some_and(Verdict::passed))
        .count();
    let missing = lines
        .iter()
        .filter(|l| matches!(l.verdict, Some(Verdict::Missing { .. })))
        .count();
    let unscripted = lines.iter().filter(|l| l.verdict.is_none()).count();
    let _ = writeln!(
        out,
        "\n{pass}/{} IDs pass ({} fail, {missing} of them for a missing feature, {unscripted} without a scenario)",
        lines.len(),
        lines.len() - pass
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_every_section() {
        let rows = parse_spec(SPEC);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for id in [
            "FM-3.1", "FM-3.3", "FM-4.3", "FM-5.2", "FM-6.2", "FM-7.2", "FM-8.1", "FM-9.2",
            "FM-10.1", "FM-10.5", "FM-11.1", "FM-X.1",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        assert!(rows
            .iter()
            .all(|r| !r.required.is_empty() && !r.test.is_empty()));
    }

    /// Every test or checker the spec's Test column names exists.
    #[test]
    fn spec_test_column_names_only_existing_tests() {
        // Read at run time: a missing file shows up as unknown test names.
        // The Test column may name a test of any workspace crate, so every
        // `.rs` file under the workspace's crate folders is searched.
        fn collect(dir: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name();
                if path.is_dir() {
                    if name != "target" && !name.to_string_lossy().starts_with('.') {
                        collect(&path, out);
                    }
                } else if path.extension().is_some_and(|x| x == "rs")
                    // This file lists the names itself; it proves nothing.
                    && !path.ends_with("fault-tests/src/matrix.rs")
                {
                    out.push(std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        let crate_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = crate_root.parent().unwrap_or(crate_root);
        let mut sources: Vec<String> = Vec::new();
        for dir in [
            "wal",
            "snapshot",
            "wire",
            "primary",
            "replica",
            "node",
            "recovery",
            "fault-tests",
            "src",
            "tests",
        ] {
            collect(&workspace.join(dir), &mut sources);
        }
        let mut named = 0;
        for row in parse_spec(SPEC) {
            for (i, part) in row.test.split('`').enumerate() {
                if i % 2 == 0 || part.contains(' ') || part.is_empty() {
                    continue;
                }
                named += 1;
                let as_fn = format!("fn {part}(");
                let as_const = format!("\"{part}\"");
                let as_struct = format!("pub struct {part}");
                assert!(
                    sources.iter().any(|s| s.contains(&as_fn)
                        || s.contains(&as_const)
                        || s.contains(&as_struct)),
                    "{}: Test column names `{part}`, which no test file defines",
                    row.id
                );
            }
        }
        assert!(named > 30, "only {named} tests named in the spec");
    }

    #[test]
    fn every_spec_id_has_a_scenario_and_no_scenario_is_orphaned() {
        let rows = parse_spec(SPEC);
        let sc = scenarios();
        for r in &rows {
            assert!(
                sc.iter().any(|s| s.id == r.id),
                "spec ID {} has no scenario",
                r.id
            );
        }
        for s in &sc {
            assert!(
                rows.iter().any(|r| r.id == s.id),
                "scenario {} is not in the spec",
                s.id
            );
        }
    }
}
