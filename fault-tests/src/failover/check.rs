//! The failover invariants, judged after every step of a [`Cluster`] against
//! the ghost facts recorded from the executors' and cores' outputs:
//!
//! 1. at most one primary per epoch (every `BecomePrimary` ever);
//! 2. a primary that stepped down or was fenced acknowledges nothing after
//!    its core learned it (no primary executor runs, and no `Ack` is emitted,
//!    on a node whose core is not the primary of that executor's epoch);
//! 3. every acknowledged and every committed record is in the log of every
//!    later primary (unless an operator accepted data loss under quorum 0:
//!    then the lost acknowledged records are counted, not flagged);
//! 4. a committed record is never replaced by another at its lsn, and no
//!    node's embedder is ever fed an lsn at or below one it already applied
//!    (nothing applied is rewound).
//!
//! Liveness (a primary exists and the members converge once faults heal) is
//! the scenario's part: [`Cluster::run_until_converged`].

use std::collections::BTreeMap;

use walship_node::election::Role;
use walship_wal::{Lsn, Position};

use super::{Cluster, RoleState};

/// One broken invariant, with where it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// The step at which it was seen.
    pub step: u64,
    /// Simulated time.
    pub at_ms: u64,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {} at {} ms: {}: {}",
            self.step, self.at_ms, self.invariant, self.detail
        )
    }
}

/// Facts of the run, independent of the nodes' own view.
#[derive(Debug, Default, Clone)]
pub struct Ghost {
    /// Every `BecomePrimary`: epoch -> node.
    pub primaries: BTreeMap<u64, usize>,
    /// Acknowledged records: lsn -> (identity, epoch of the primary that
    /// acknowledged it).
    pub acked: BTreeMap<Lsn, (Position, u64)>,
    /// Committed records (a primary's watermark, or applied by a replica):
    /// lsn -> (identity, epoch of the primary that committed it).
    pub committed: BTreeMap<Lsn, (Position, u64)>,
    /// Acknowledged records lost after an operator accepted data loss.
    pub lost_acked: BTreeMap<Lsn, Position>,
    /// An operator promotion accepted data loss (quorum 0).
    pub data_loss_accepted: bool,
    /// Primary executors fenced by a member that knew a higher epoch.
    pub fenced: usize,
    /// Per node: the last lsn its embedder was fed.
    pub applied_last: BTreeMap<usize, Lsn>,
    /// Per node: the commit watermark its current primary executor announced.
    commit_seen: BTreeMap<usize, Lsn>,
    /// Broken invariants, first first.
    pub violations: Vec<Violation>,
}

fn violate(c: &mut Cluster, invariant: &'static str, detail: String) {
    let v = Violation {
        invariant,
        detail,
        step: c.step,
        at_ms: c.now(),
    };
    c.log(format!("VIOLATION {v}"));
    c.ghost.violations.push(v);
}

/// `BecomePrimary{epoch}` on node `n`.
pub(super) fn note_primary(c: &mut Cluster, n: usize, epoch: u64) {
    if let Some(&other) = c.ghost.primaries.get(&epoch) {
        if other != n {
            violate(
                c,
                "at most one primary per epoch",
                format!(
                    "n{} and n{} both became primary of epoch {epoch}",
                    other + 1,
                    n + 1
                ),
            );
        }
    }
    c.ghost.primaries.insert(epoch, n);
    c.ghost.commit_seen.insert(n, 0);
}

/// A record `lsn` of `epoch`'s primary on node `n` was acknowledged.
pub(super) fn note_ack(c: &mut Cluster, n: usize, epoch: u64, lsn: Lsn, pos: Option<Position>) {
    let core = c.nodes[n].core.as_ref();
    let leads = core.is_some_and(|k| k.role() == Role::Primary && k.epoch() == epoch);
    if !leads {
        violate(
            c,
            "a stepped-down or fenced primary acknowledges nothing",
            format!(
                "n{} acknowledged lsn {lsn} as primary of epoch {epoch}, its core is {:?} of epoch {:?}",
                n + 1,
                core.map(|k| k.role()),
                core.map(|k| k.epoch())
            ),
        );
    }
    let Some(pos) = pos else {
        violate(
            c,
            "an acknowledged record is in the primary's log",
            format!("n{} acknowledged lsn {lsn}, absent from its WAL", n + 1),
        );
        return;
    };
    if let Some((old, _)) = c.ghost.acked.insert(lsn, (pos, epoch)) {
        if old != pos {
            if c.ghost.data_loss_accepted {
                c.ghost.lost_acked.insert(lsn, old);
            } else {
                violate(
                    c,
                    "no acknowledged record is ever lost",
                    format!("lsn {lsn} was acknowledged as {old:?}, now as {pos:?}"),
                );
            }
        }
    }
}

fn note_committed_record(c: &mut Cluster, who: usize, pos: Position, epoch: u64) {
    if let Some(&(old, old_epoch)) = c.ghost.committed.get(&pos.lsn) {
        if old == pos {
            // The lowest epoch that committed it is what later primaries are held to.
            let e = old_epoch.min(epoch);
            c.ghost.committed.insert(pos.lsn, (pos, e));
            return;
        }
        if old != pos && !c.ghost.data_loss_accepted {
            violate(
                c,
                "a committed record is never replaced",
                format!(
                    "n{} commits {pos:?} at lsn {}, where {old:?} was committed",
                    who + 1,
                    pos.lsn
                ),
            );
        }
    }
    c.ghost.committed.insert(pos.lsn, (pos, epoch));
}

/// Node `n`'s primary executor announced commit watermark `commit`.
pub(super) fn note_commit(c: &mut Cluster, n: usize, commit: Lsn) {
    let from = c.ghost.commit_seen.get(&n).copied().unwrap_or(0) + 1;
    let (epoch, positions): (u64, Vec<Position>) = match &c.nodes[n].role {
        RoleState::Primary(p) => (
            p.epoch,
            p.up.exec.wal().with(|w| {
                (from..=commit)
                    .filter_map(|l| w.position_at(l).ok().flatten())
                    .collect()
            }),
        ),
        _ => (0, Vec::new()),
    };
    for pos in positions {
        note_committed_record(c, n, pos, epoch);
    }
    c.ghost.commit_seen.insert(n, commit.max(from - 1));
}

/// Node `n`'s embedder was fed `records`.
pub(super) fn note_applied(c: &mut Cluster, n: usize, records: &[Position]) {
    // The commit watermark came from the primary this replica follows.
    let epoch = c.nodes[n].replica().map_or(0, |r| r.epoch);
    for &pos in records {
        let last = c.ghost.applied_last.get(&n).copied().unwrap_or(0);
        if pos.lsn <= last {
            violate(
                c,
                "nothing applied is rewound",
                format!("n{} applies lsn {} after lsn {last}", n + 1, pos.lsn),
            );
        }
        c.ghost.applied_last.insert(n, pos.lsn);
        note_committed_record(c, n, pos, epoch);
    }
}

/// Every acknowledged and committed record must be in node `n`'s log: called
/// when it opens its primary executor.
pub(super) fn check_new_primary(c: &mut Cluster, n: usize) {
    verify_primary_log(c, n, 0);
}

fn verify_primary_log(c: &mut Cluster, n: usize, above: Lsn) {
    let RoleState::Primary(p) = &c.nodes[n].role else {
        return;
    };
    let epoch = p.epoch;
    // Held to every record acknowledged or committed in its epoch or before.
    let wanted: Vec<(bool, Position)> = c
        .ghost
        .acked
        .range(above + 1..)
        .map(|(_, &(p, e))| (true, p, e))
        .chain(
            c.ghost
                .committed
                .range(above + 1..)
                .map(|(_, &(p, e))| (false, p, e)),
        )
        .filter(|&(_, _, e)| e <= epoch)
        .map(|(a, p, _)| (a, p))
        .collect();
    let found: Vec<Option<Position>> = p.up.exec.wal().with(|w| {
        wanted
            .iter()
            .map(|(_, pos)| w.position_at(pos.lsn).ok().flatten())
            .collect()
    });
    let top = wanted.iter().map(|(_, p)| p.lsn).max().unwrap_or(above);
    if let RoleState::Primary(p) = &mut c.nodes[n].role {
        p.verified_upto = p.verified_upto.max(top);
    }
    for ((acked, pos), got) in wanted.into_iter().zip(found) {
        if got == Some(pos) {
            continue;
        }
        if c.ghost.data_loss_accepted {
            if acked {
                c.ghost.lost_acked.insert(pos.lsn, pos);
            }
            continue;
        }
        let what = if acked { "acknowledged" } else { "committed" };
        violate(
            c,
            "every acknowledged or committed record is in every later primary's log",
            format!(
                "n{} leads epoch {epoch} without the {what} record {pos:?} (its log has {got:?})",
                n + 1
            ),
        );
    }
}

/// The per-step checks.
pub(super) fn check_step(c: &mut Cluster) {
    for n in 0..c.nodes.len() {
        let (epoch, verified) = match &c.nodes[n].role {
            RoleState::Primary(p) => (p.epoch, p.verified_upto),
            _ => continue,
        };
        let core = c.nodes[n].core.as_ref();
        if !core.is_some_and(|k| k.role() == Role::Primary && k.epoch() == epoch) {
            violate(
                c,
                "a stepped-down or fenced primary acknowledges nothing",
                format!(
                    "n{} still runs the primary executor of epoch {epoch}; its core is {:?} of epoch {:?}",
                    n + 1,
                    core.map(|k| k.role()),
                    core.map(|k| k.epoch())
                ),
            );
            continue;
        }
        let newer = c.ghost.acked.range(verified + 1..).next().is_some()
            || c.ghost.committed.range(verified + 1..).next().is_some();
        if newer {
            verify_primary_log(c, n, verified);
        }
    }
}
