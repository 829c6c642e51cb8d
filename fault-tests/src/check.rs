//! Invariant checkers: components of their own, each judging the whole
//! [`World`] after every step against the [`crate::world::Oracle`].
//!
//! A checker returns the first [`Violation`] it finds; the simulator stops
//! the run there and prints the seed, the invariant and the trace tail.

use std::collections::BTreeMap;
use walship_replica::halt::read_halt;

use walship_wal::sim::SimStorage;
use walship_wal::{Lsn, Position};

use crate::net::NodeId;
use crate::world::{node_name, state_dir, FrameFault, World};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The checker (invariant) name.
    pub invariant: &'static str,
    /// The spec IDs the invariant proves.
    pub spec: &'static str,
    /// What was found.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]: {}", self.invariant, self.spec, self.detail)
    }
}

/// One invariant.
pub trait Checker {
    /// Short name of the invariant.
    fn name(&self) -> &'static str;
    /// Spec IDs it proves.
    fn spec(&self) -> &'static str;
    /// Checks the world after a step.
    fn check(&mut self, w: &World) -> Result<(), String>;
}

/// The standard set of checkers for a simulation run.
pub fn standard_checkers() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(ActionInvariants),
        Box::new(ReceiptNeverAboveSynced),
        Box::new(AckedCommitsSurvive),
        Box::new(ReplicaIsPrefix::default()),
        Box::new(AppliedIsCommittedInOrder),
        Box::new(HaltedReplicaFrozen),
        Box::new(NoHaltWithoutCause),
        Box::new(PersistedCommitNeverAboveAcknowledged),
        Box::new(DurableNeverRewritten::default()),
        Box::new(ReplicaCommitNeverAboveDurable),
        Box::new(AppliedNeverAbovePersistedCommit),
    ]
}

/// Runs every checker; the first violation wins.
pub fn check_all(checkers: &mut [Box<dyn Checker>], w: &World) -> Result<(), Violation> {
    for c in checkers.iter_mut() {
        if let Err(detail) = c.check(w) {
            return Err(Violation {
                invariant: c.name(),
                spec: c.spec(),
                detail,
            });
        }
    }
    Ok(())
}

/// Replica `n`'s record identity at `lsn`, if it is up and has it.
fn replica_position(w: &World, n: NodeId, lsn: Lsn) -> Option<Position> {
    let wal = w.replica(n).up.as_ref()?.wal()?;
    wal.position_at(lsn).ok().flatten()
}

/// Violations the world itself noticed while performing actions.
pub struct ActionInvariants;

impl Checker for ActionInvariants {
    fn name(&self) -> &'static str {
        "driver-observed invariants"
    }
    fn spec(&self) -> &'static str {
        "FM-3.1, FM-10.1"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        match w.oracle.action_violations.first() {
            Some((what, detail)) => Err(format!("{what}: {detail}")),
            None => Ok(()),
        }
    }
}

/// A replica never sends a receipt above its synced lsn: every receipt the executor
/// emitted carried at most the durable lsn its WAL had when it was sent (the world
/// records each one that did not), and the last receipt of every running replica is at
/// most its WAL's durable lsn now.
pub struct ReceiptNeverAboveSynced;

impl Checker for ReceiptNeverAboveSynced {
    fn name(&self) -> &'static str {
        "a replica never sends a receipt above its synced lsn"
    }
    fn spec(&self) -> &'static str {
        "FM-4.1, FM-X.4"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        if let Some(first) = w.oracle.unsynced_receipts.first() {
            return Err(first.clone());
        }
        for r in &w.replicas {
            let Some(u) = &r.up else { continue };
            let (Some(receipt), Some(wal)) = (u.exec.last_receipt(), u.wal()) else {
                continue;
            };
            if receipt > wal.durable_lsn() {
                return Err(format!(
                    "{} receipted lsn {receipt} but its WAL is synced only up to {}",
                    node_name(r.id),
                    wal.durable_lsn()
                ));
            }
        }
        Ok(())
    }
}

/// No record acknowledged to a client is lost: it stays in the primary's
/// log, and at least `receipts_needed` replicas hold it durably (a quorum of
/// disks, the primary's counting as one).
pub struct AckedCommitsSurvive;

impl Checker for AckedCommitsSurvive {
    fn name(&self) -> &'static str {
        "acknowledged commits survive"
    }
    fn spec(&self) -> &'static str {
        "FM-3.2, FM-X.11, FM-4.1"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        let hist = &w.oracle.primary_history;
        for (&lsn, pos) in &w.oracle.acked {
            match hist.get(lsn as usize - 1) {
                Some(p) if p == pos => {}
                other => {
                    return Err(format!(
                        "acknowledged lsn {lsn} ({pos}) is {} in the primary's log",
                        other.map_or("missing".to_string(), |p| format!("replaced by {p}"))
                    ))
                }
            }
            if let Some(p) = &w.primary.up {
                if p.wal.durable_lsn() < lsn {
                    return Err(format!(
                        "acknowledged lsn {lsn} above the primary's durable lsn {}",
                        p.wal.durable_lsn()
                    ));
                }
            }
        }
        // Quorum of disks: only judged when every replica is running with its
        // WAL open (a down replica's disk, or that of a replica halted at open,
        // is not readable here, not lost).
        let needed = receipts_needed(w);
        if needed == 0
            || w.replicas
                .iter()
                .any(|r| r.up.as_ref().and_then(|u| u.wal()).is_none())
        {
            return Ok(());
        }
        // Checking the highest acknowledged lsn is enough: replica logs are
        // prefixes (checked separately) and durable lsns are monotone.
        if let Some((&lsn, pos)) = w.oracle.acked.iter().next_back() {
            let holders = (1..=w.cfg.replicas)
                .filter(|&n| {
                    let wal = w.replica(n).up.as_ref().and_then(|u| u.wal());
                    // A snapshot at or past the lsn covers it.
                    wal.is_some_and(|wal| {
                        wal.base().lsn >= lsn
                            || (wal.durable_lsn() >= lsn
                                && replica_position(w, n, lsn) == Some(*pos))
                    })
                })
                .count();
            // Replicas whose disk was replaced after they stored the record
            // are excused (the budget: the record must survive elsewhere).
            let excused = w.oracle.wiped.values().filter(|&&at| at >= lsn).count();
            if holders + excused < needed {
                return Err(format!(
                    "acknowledged lsn {lsn} is durable on {holders} replicas, quorum {} needs {needed}",
                    w.cfg.quorum
                ));
            }
        }
        Ok(())
    }
}

/// Receipts the quorum policy needs (the primary's own copy counts as one).
pub fn receipts_needed(w: &World) -> usize {
    w.receipts_needed()
}

/// Every replica's log is a prefix of the primary's history (identical
/// record identities at every lsn it holds).
#[derive(Default)]
pub struct ReplicaIsPrefix {
    verified_upto: Vec<Lsn>,
    primary_len: usize,
}

impl Checker for ReplicaIsPrefix {
    fn name(&self) -> &'static str {
        "replica log is a prefix of the primary's"
    }
    fn spec(&self) -> &'static str {
        "FM-8.1, FM-10.4, FM-5.1"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        let hist = &w.oracle.primary_history;
        if self.verified_upto.len() != w.cfg.replicas {
            self.verified_upto = vec![0; w.cfg.replicas];
        }
        if hist.len() < self.primary_len {
            // The primary lost an unsynced tail: re-verify above its new end.
            for v in &mut self.verified_upto {
                *v = (*v).min(hist.len() as Lsn);
            }
        }
        self.primary_len = hist.len();
        for n in 1..=w.cfg.replicas {
            if w.oracle.foreign_history.contains(&n) {
                continue;
            }
            let Some(wal) = w.replica(n).up.as_ref().and_then(|u| u.wal()) else {
                continue;
            };
            let last = wal.last().lsn;
            let v = &mut self.verified_upto[n - 1];
            *v = (*v).min(last);
            let first = wal.first_lsn().max(*v + 1);
            for lsn in first..=last {
                let ours = replica_position(w, n, lsn);
                let theirs = hist.get(lsn as usize - 1).copied();
                if ours.is_none() || ours != theirs {
                    return Err(format!(
                        "{} holds {:?} at lsn {lsn}, the primary's history has {:?}",
                        node_name(n),
                        ours,
                        theirs
                    ));
                }
                *v = lsn;
            }
        }
        Ok(())
    }
}

/// Every applied record is whole, durable, committed and the primary's; the
/// applier sees lsns strictly increasing by one.
pub struct AppliedIsCommittedInOrder;

impl Checker for AppliedIsCommittedInOrder {
    fn name(&self) -> &'static str {
        "applied records are committed, in order"
    }
    fn spec(&self) -> &'static str {
        "FM-10.1, FM-10.2, FM-4.2"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        for r in &w.replicas {
            let name = node_name(r.id);
            let recs = &r.applied.records;
            for pair in recs.windows(2) {
                if pair[1].lsn != pair[0].lsn + 1 {
                    return Err(format!(
                        "{name} applied lsn {} after lsn {}",
                        pair[1].lsn, pair[0].lsn
                    ));
                }
            }
            if let Some(u) = &r.up {
                if u.core().commit_lsn() > w.oracle.max_commit {
                    return Err(format!(
                        "{name} believes commit lsn {} but the primary never committed above {}",
                        u.core().commit_lsn(),
                        w.oracle.max_commit
                    ));
                }
            }
            if let Some(last) = recs.last() {
                if last.lsn > w.oracle.max_commit {
                    return Err(format!(
                        "{name} applied lsn {} above the highest commit watermark {}",
                        last.lsn, w.oracle.max_commit
                    ));
                }
                if let Some(wal) = r.up.as_ref().and_then(|u| u.wal()) {
                    if last.lsn > wal.durable_lsn() && r.halted.is_none() {
                        return Err(format!(
                            "{name} applied lsn {} above its durable lsn {}",
                            last.lsn,
                            wal.durable_lsn()
                        ));
                    }
                }
            }
            if w.oracle.foreign_history.contains(&r.id) {
                continue;
            }
            if let Some(first) = recs.first() {
                let expected = r.applied.base.map_or(1, |b| b.lsn + 1);
                if first.lsn != expected {
                    return Err(format!(
                        "{name} applied lsn {} first (expected {expected})",
                        first.lsn
                    ));
                }
            }
            if let Some(b) = r.applied.base {
                let theirs = w.oracle.primary_history.get(b.lsn as usize - 1);
                if b.lsn > 0 && theirs.is_some_and(|t| *t != b) {
                    return Err(format!(
                        "{name} restored a snapshot at {b}, the primary's record there is {theirs:?}"
                    ));
                }
            }
            for p in recs {
                if w.oracle.acked.get(&p.lsn).is_some_and(|a| a != p) {
                    return Err(format!(
                        "{name} applied {p}, the acknowledged record is {:?}",
                        w.oracle.acked.get(&p.lsn)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A halted replica changes nothing: its log, durable lsn and applied lsn
/// stay as at the halt, across restarts, and it stays halted: its halt file
/// holds the identical record and, whenever it runs, its core reports it.
pub struct HaltedReplicaFrozen;

impl Checker for HaltedReplicaFrozen {
    fn name(&self) -> &'static str {
        "halted replica applies and appends nothing"
    }
    fn spec(&self) -> &'static str {
        "FM-10.3, FM-11.3, FM-6.2"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        for r in &w.replicas {
            let Some(h) = &r.halted else { continue };
            let name = node_name(r.id);
            // The halt is durable and stays (the simulator never clears it):
            // whatever restarts the replica reads it back (FM-11.3).
            match read_halt(&r.storage, &state_dir()) {
                Ok(Some(rec)) if rec == h.record => {}
                other => {
                    return Err(format!(
                        "{name} halted with {:?} but its halt file now reads {other:?}",
                        h.record
                    ))
                }
            }
            if r.applied.last_lsn() != h.applied_lsn {
                return Err(format!(
                    "{name} halted ({}) at applied lsn {} but has applied up to {}",
                    h.record.reason.as_str(),
                    h.applied_lsn,
                    r.applied.last_lsn()
                ));
            }
            if let Some(u) = &r.up {
                // Its open WAL, or (started halted: the WAL stays closed) its disk.
                if let Some(last) = w.replica_last(r.id) {
                    if last.lsn > h.last.lsn {
                        return Err(format!(
                            "{name} halted at lsn {} but its log now ends at {}",
                            h.last.lsn, last.lsn
                        ));
                    }
                    if last.lsn < h.durable_lsn {
                        return Err(format!(
                            "{name} halted with durable lsn {} but its log now ends at {} (cut)",
                            h.durable_lsn, last.lsn
                        ));
                    }
                }
                match u.core().halt() {
                    Some(rec) if *rec == h.record => {}
                    other => {
                        return Err(format!(
                            "{name} halted with {:?} but its core now reports {:?}",
                            h.record, other
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// A halt happens only where a history fault was injected, with the reason
/// that fault calls for: transport noise, partitions and crashes never halt.
pub struct NoHaltWithoutCause;

impl Checker for NoHaltWithoutCause {
    fn name(&self) -> &'static str {
        "no halt without a history fault"
    }
    fn spec(&self) -> &'static str {
        "FM-X.1, FM-3.3, FM-5.1, FM-9.1"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        for r in &w.replicas {
            let Some(h) = &r.halted else { continue };
            if w.oracle.foreign_history.contains(&r.id) {
                continue;
            }
            let injected = w.oracle.injected.get(&r.id);
            let torn = w.oracle.torn_crashed.contains(&r.id)
                && h.record.reason == walship_replica::halt::HaltReason::LocalCorruption;
            // Right after a snapshot install, a first record that does not
            // chain to the boundary is a boundary conflict (FM-7.2): a gap,
            // reorder or epoch fault there halts `snapshot-boundary`.
            let after_snapshot = h.record.reason
                == walship_replica::halt::HaltReason::SnapshotBoundary
                && (r.applied.base.is_some()
                    || r.up
                        .as_ref()
                        .and_then(|u| u.wal())
                        .is_some_and(|w| w.base().lsn > 0))
                && injected.is_some_and(|fs| {
                    fs.iter().any(|f| {
                        matches!(
                            f,
                            FrameFault::Skip
                                | FrameFault::Reorder
                                | FrameFault::WrongPrevCrc
                                | FrameFault::EpochRegress
                                | FrameFault::EpochBelowHistory
                        )
                    })
                });
            let explained = torn
                || after_snapshot
                || injected.is_some_and(|fs| {
                    fs.iter()
                        .any(|f| f.expected_halt() == Some(h.record.reason))
                });
            if !explained {
                return Err(format!(
                    "{} halted ({} at lsn {}: expected {}, found {}) but the faults injected into its stream were {:?}",
                    node_name(r.id),
                    h.record.reason.as_str(),
                    h.record.lsn,
                    h.record.expected,
                    h.record.found,
                    injected
                ));
            }
        }
        Ok(())
    }
}

/// The commit watermark the primary persists (`state/commit`) never exceeds what it
/// acknowledged: the highest commit it announced, or the watermark a previous life of the
/// disk held when the process started. A watermark above that would make a restart treat
/// unacknowledged records as committed (and refuse to start when they are lost, FM-X.6).
pub struct PersistedCommitNeverAboveAcknowledged;

impl Checker for PersistedCommitNeverAboveAcknowledged {
    fn name(&self) -> &'static str {
        "persisted commit watermark never above what was acknowledged"
    }
    fn spec(&self) -> &'static str {
        "FM-X.6, FM-3.2"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        let s = &w.primary.storage;
        let persisted = match walship_wal::state::read_state_json::<_, walship_wal::state::CommitBody>(
            s,
            &state_dir(),
            "commit",
        ) {
            Ok(c) => c.map_or(0, |c| c.commit_lsn),
            // A torn or damaged file is judged by the restart, not here.
            Err(_) => return Ok(()),
        };
        let allowed = w.oracle.max_commit.max(w.oracle.primary_commit_at_start);
        if persisted > allowed {
            return Err(format!(
                "p0's state/commit holds {persisted}, above the highest commit it announced ({}) and the watermark it started from ({})",
                w.oracle.max_commit, w.oracle.primary_commit_at_start
            ));
        }
        Ok(())
    }
}

/// A replica never rewrites or cuts a record it made durable: whatever the
/// primary later sends (a new history after it lost its disk, FM-X.16; a
/// stale or diverging one, FM-6.x, FM-X.10), a replica that disagrees halts
/// and keeps its log byte for byte. Only a replaced disk (a wipe) or damage a
/// scenario placed on purpose excuses a different record at an lsn it held.
///
/// Checking the last durable record is enough: records are crc-chained
/// (`prev_crc`), so any rewrite at or below it changes its identity.
#[derive(Default)]
pub struct DurableNeverRewritten {
    /// Per replica: the disk it was seen on and its last durable record there.
    seen: BTreeMap<NodeId, (SimStorage, Position)>,
}

impl Checker for DurableNeverRewritten {
    fn name(&self) -> &'static str {
        "durable records are never rewritten"
    }
    fn spec(&self) -> &'static str {
        "FM-X.16, FM-6.1, FM-10.3"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        for r in &w.replicas {
            if w.oracle.disk_damaged.contains(&r.id) {
                self.seen.remove(&r.id);
                continue;
            }
            // A replica halted at open keeps its WAL closed; its log is judged once it opens.
            let Some(wal) = r.up.as_ref().and_then(|u| u.wal()) else {
                continue;
            };
            if let Some((disk, held)) = self.seen.get(&r.id) {
                // Below the log's first lsn a snapshot install covers it.
                if disk.is_same_disk(&r.storage) && held.lsn >= wal.first_lsn() {
                    let now = wal.position_at(held.lsn).ok().flatten();
                    if now != Some(*held) {
                        return Err(format!(
                            "{} had made {held} durable; its log now holds {} there (halted: {})",
                            node_name(r.id),
                            now.map_or("nothing".to_string(), |p| p.to_string()),
                            r.halted.as_ref().map_or("no".to_string(), |h| h
                                .record
                                .reason
                                .as_str()
                                .to_string())
                        ));
                    }
                }
            }
            let durable = wal.durable_lsn();
            if durable == 0 {
                continue;
            }
            if let Some(p) = wal.position_at(durable).ok().flatten() {
                self.seen.insert(r.id, (r.storage.clone(), p));
            }
        }
        Ok(())
    }
}

/// A replica's `state/commit` as its disk holds it now (0 without the file; `None` for a
/// torn or damaged file, which the restart judges).
fn replica_persisted_commit(w: &World, n: NodeId) -> Option<Lsn> {
    let s = &w.replica(n).storage;
    match walship_wal::state::read_state_json::<_, walship_wal::state::CommitBody>(
        s,
        &state_dir(),
        "commit",
    ) {
        Ok(c) => Some(c.map_or(0, |c| c.commit_lsn)),
        Err(_) => None,
    }
}

/// A replica's `state/commit` never names a record it does not hold durably: the
/// primary's watermark may be ahead of a lagging replica, and the replica persists only
/// up to its own durable lsn. A watermark above it turns a crash that loses the unsynced
/// tail into a `local-corruption` halt ("log ends below the persisted commit watermark",
/// FM-X.6) that no damage caused.
pub struct ReplicaCommitNeverAboveDurable;

impl Checker for ReplicaCommitNeverAboveDurable {
    fn name(&self) -> &'static str {
        "a replica's persisted commit watermark never above its durable lsn"
    }
    fn spec(&self) -> &'static str {
        "FM-X.6, FM-4.2"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        for r in &w.replicas {
            if w.oracle.disk_damaged.contains(&r.id) {
                continue;
            }
            let Some(persisted) = replica_persisted_commit(w, r.id) else {
                continue;
            };
            // Its open WAL's durable lsn, or (down, or halted at open with the WAL closed)
            // the highest it made durable on this disk.
            let durable =
                r.up.as_ref()
                    .and_then(|u| u.wal())
                    .map_or(r.known_durable, |wal| wal.durable_lsn().max(wal.base().lsn));
            if persisted > durable {
                return Err(format!(
                    "{}'s state/commit holds {persisted}, above its durable lsn {durable}",
                    node_name(r.id)
                ));
            }
        }
        Ok(())
    }
}

/// A replica applies a record only once its own `state/commit` covers it (the executor
/// applies up to the persisted watermark): whatever the embedder has seen is then
/// protected by the watermark check at open (FM-X.6), and a restart replays exactly the
/// committed records after the applier's lsn (FM-4.2). The embedder's state survives
/// crashes here, so the judgement holds across them. A restored snapshot is committed by
/// construction and is not judged.
pub struct AppliedNeverAbovePersistedCommit;

impl Checker for AppliedNeverAbovePersistedCommit {
    fn name(&self) -> &'static str {
        "a replica applies only up to its persisted commit watermark"
    }
    fn spec(&self) -> &'static str {
        "FM-4.2, FM-10.1, FM-X.6"
    }
    fn check(&mut self, w: &World) -> Result<(), String> {
        for r in &w.replicas {
            if w.oracle.disk_damaged.contains(&r.id) {
                continue;
            }
            let Some(last) = r.applied.records.last() else {
                continue;
            };
            let Some(persisted) = replica_persisted_commit(w, r.id) else {
                continue;
            };
            if last.lsn > persisted {
                return Err(format!(
                    "{} applied lsn {} but its state/commit holds {persisted}",
                    node_name(r.id),
                    last.lsn
                ));
            }
        }
        Ok(())
    }
}
