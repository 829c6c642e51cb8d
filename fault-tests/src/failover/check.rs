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
//!    (nothing applied is rewound);
//! 5. membership (spec/membership.md), recomputed here from the logs, not from
//!    the executors' own bookkeeping: every commit advance of a primary is
//!    held durably by the commit copies of *every* configuration the record
//!    must commit under (rule 2: the newest configuration at or below it, and
//!    the one before while that one was not committed yet), counting a voter
//!    only as the incarnation the configuration names; every election is won
//!    with the votes of an election quorum of the winner's newest
//!    configuration (a learner's vote, or another incarnation's, never
//!    counts); within one epoch the primary's configuration changes one member
//!    at a time, generation + 1 (rule 3).
//!
//! Liveness (a primary exists and the members converge once faults heal) is
//! the scenario's part: [`Cluster::run_until_converged`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use walship_node::election::{commit_copies, election_quorum, majority, LogPosition, Role};
use walship_node::membership::classify_change;
use walship_wal::control::Configuration;
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
    /// An operator promotion accepted data loss (quorum 0), or a forced recovery whose
    /// plan said a loss is possible.
    pub data_loss_accepted: bool,
    /// The forced recovery the operator ran (`walship ctl force-quorum`), if any: after
    /// it, a record may be lost only if its plan said a loss is possible and only above
    /// the forcing node's log end.
    pub forced: Option<ForcedRun>,
    /// Primary executors fenced by a member that knew a higher epoch.
    pub fenced: usize,
    /// Per node: the last lsn its embedder was fed.
    pub applied_last: BTreeMap<usize, Lsn>,
    /// Per node: the commit watermark its current primary executor announced.
    commit_seen: BTreeMap<usize, Lsn>,
    /// Granted votes delivered to a candidate: (candidate, epoch) -> (voter,
    /// the voter's incarnation).
    pub grants: BTreeMap<(usize, u64), BTreeSet<(usize, u64)>>,
    /// What each destroyed incarnation durably held: (node, incarnation) ->
    /// lsn -> position (its receipts were true when it sent them).
    pub destroyed: BTreeMap<(usize, u64), Arc<BTreeMap<Lsn, Position>>>,
    /// Per node: the configuration records of its current primary role's log.
    configs: BTreeMap<usize, PrimaryConfigs>,
    /// Commit advances whose quorums were recomputed, and how many of them ran
    /// under two configurations (joint).
    pub commit_checks: (u64, u64),
    /// Configuration changes seen within a primary's epoch.
    pub config_changes: u64,
    /// Broken invariants, first first.
    pub violations: Vec<Violation>,
}

/// What a forced recovery's plan (`walship_node::membership::ForcePlan`) said, as the
/// checker holds later primaries to it.
#[derive(Debug, Clone)]
pub struct ForcedRun {
    /// The node that campaigned.
    pub node: usize,
    /// Its log end when it was asked.
    pub log_end: Lsn,
    /// The plan said acknowledged records may be lost.
    pub may_lose: bool,
    /// The forced configuration.
    pub config: Configuration,
}

/// Whether losing the record at `lsn` is what the operator accepted: with a forced
/// recovery, only a loss its plan allowed (above the forcing node's log end, and only
/// when a loss is possible); else any loss once data loss was accepted (quorum 0's
/// operator promotion).
fn loss_accepted(c: &Cluster, lsn: Lsn) -> Result<(), String> {
    match &c.ghost.forced {
        Some(f) if !f.may_lose => Err(format!(
            "the forced recovery on n{} said no acknowledged record can be lost",
            f.node + 1
        )),
        Some(f) if lsn <= f.log_end => Err(format!(
            "lsn {lsn} is at or below the log end {} of n{}, the forced recovery's survivor",
            f.log_end,
            f.node + 1
        )),
        Some(_) => Ok(()),
        None if c.ghost.data_loss_accepted => Ok(()),
        None => Err("no loss was accepted".into()),
    }
}

/// The configurations of a primary role's log, read from its WAL.
#[derive(Debug, Clone)]
struct PrimaryConfigs {
    epoch: u64,
    /// Records up to this lsn were scanned.
    scanned: Lsn,
    /// `(lsn, configuration)`, lsn ascending; lsn 0 is the static base.
    list: Vec<(Lsn, Configuration)>,
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
    c.ghost.configs.remove(&n);
}

/// A granted vote of `voter` (data directory `incarnation`) for candidate `n` in
/// `epoch` was delivered.
pub(super) fn note_grant(c: &mut Cluster, n: usize, epoch: u64, voter: usize, incarnation: u64) {
    c.ghost
        .grants
        .entry((n, epoch))
        .or_default()
        .insert((voter, incarnation));
}

/// Node `n` became primary of `epoch`: the grants it received must include an
/// election quorum of its newest configuration's voters, each from the
/// incarnation the configuration names (itself included when it votes).
pub(super) fn check_election(c: &mut Cluster, n: usize, epoch: u64) {
    // A force-quorum campaign counts in the forced configuration it will write.
    let config = match &c.nodes[n].forced {
        Some((forced, _)) => forced.clone(),
        None => c.nodes[n].membership.config.clone(),
    };
    let empty = c.nodes[n]
        .core
        .as_ref()
        .is_some_and(|k| k.log_head() == LogPosition::ZERO);
    let voters = config.voters().count();
    let needed = if empty {
        voters
    } else {
        election_quorum(voters, c.cfg.quorum).unwrap_or_else(|| majority(voters))
    };
    let grants = c.ghost.grants.get(&(n, epoch)).cloned().unwrap_or_default();
    let mut counted: BTreeSet<usize> = BTreeSet::new();
    // Its own vote counts as the incarnation the configuration names, like any other.
    let own = c.nodes[n].incarnation;
    if config
        .member(&c.nodes[n].name)
        .is_some_and(|m| m.voter && (m.incarnation == 0 || m.incarnation == own))
    {
        counted.insert(n);
    }
    for (v, inc) in grants {
        if let Some(m) = config.member(&c.nodes[v].name) {
            if m.voter && (m.incarnation == 0 || m.incarnation == inc) {
                counted.insert(v);
            }
        }
    }
    if counted.len() < needed {
        violate(
            c,
            "an election is won with an election quorum of the winner's newest configuration",
            format!(
                "n{} leads epoch {epoch} with {} valid votes {:?} of generation {} (needs {needed}; learners and other incarnations do not count)",
                n + 1,
                counted.len(),
                counted.iter().map(|v| v + 1).collect::<Vec<_>>(),
                config.generation
            ),
        );
    }
}

/// Node `n`'s disk is about to be destroyed: what its incarnation durably holds.
pub(super) fn note_destroyed(c: &mut Cluster, n: usize) {
    let held = read_held(c, n);
    let inc = c.nodes[n].incarnation;
    c.ghost.destroyed.insert((n, inc), held);
}

/// Every record node `n`'s disk holds (read without changing anything; a down
/// node's disk holds only what was synced).
fn read_held(c: &mut Cluster, n: usize) -> Arc<BTreeMap<Lsn, Position>> {
    if let Some(h) = &c.nodes[n].held {
        return h.clone();
    }
    let mut held = BTreeMap::new();
    if let Ok(reader) = walship_wal::read_only_reader(
        &c.nodes[n].storage,
        &crate::world::wal_dir(),
        c.cfg.max_record_bytes,
    ) {
        for r in reader {
            let Ok(r) = r else { break };
            held.insert(r.lsn(), r.position());
        }
    }
    let held = Arc::new(held);
    c.nodes[n].held = Some(held.clone());
    held
}

/// How many acknowledged records node `n`'s disk lacks (what a forced recovery
/// on it would lose).
pub fn missing_acked(c: &mut Cluster, n: usize) -> usize {
    let held = read_held(c, n);
    c.ghost
        .acked
        .values()
        .filter(|(pos, _)| held.get(&pos.lsn) != Some(pos))
        .count()
}

/// Whether member `m`, as incarnation `inc` (0: any), durably holds `pos`.
fn holds(c: &mut Cluster, m: usize, inc: u64, pos: Position) -> bool {
    let in_destroyed = |c: &Cluster| {
        c.ghost
            .destroyed
            .iter()
            .filter(|((node, i), _)| *node == m && (inc == 0 || *i == inc))
            .any(|(_, h)| h.get(&pos.lsn) == Some(&pos))
    };
    if inc != 0 && c.nodes[m].incarnation != inc {
        return in_destroyed(c);
    }
    let now_holds = match &c.nodes[m].role {
        RoleState::Primary(p) => p.up.exec.wal().with(|w| {
            w.durable_lsn() >= pos.lsn && w.position_at(pos.lsn).ok().flatten() == Some(pos)
        }),
        RoleState::Replica(r) => r.up.exec.wal().is_some_and(|w| {
            w.durable_lsn() >= pos.lsn && w.position_at(pos.lsn).ok().flatten() == Some(pos)
        }),
        RoleState::Idle => read_held(c, m).get(&pos.lsn) == Some(&pos),
    };
    now_holds || (inc == 0 && in_destroyed(c))
}

/// Reads the configuration records of node `n`'s primary log up to its last record.
fn scan_configs(c: &mut Cluster, n: usize) {
    let RoleState::Primary(p) = &c.nodes[n].role else {
        return;
    };
    let epoch = p.epoch;
    let epoch_start = p.epoch_start;
    let fresh = c.ghost.configs.get(&n).is_none_or(|t| t.epoch != epoch);
    if fresh {
        c.ghost.configs.insert(
            n,
            PrimaryConfigs {
                epoch,
                scanned: 0,
                list: vec![(0, c.base.clone())],
            },
        );
    }
    let Some(track) = c.ghost.configs.get(&n) else {
        return;
    };
    let last = p.up.exec.wal().last().lsn;
    if last <= track.scanned {
        return;
    }
    let from = track.scanned + 1;
    let found = p.up.exec.wal().with(|w| {
        w.reader(from.max(w.first_lsn()))
            .map_err(|e| e.to_string())
            .and_then(|r| walship_node::membership::configurations_in(r).map_err(|e| e.to_string()))
    });
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            violate(
                c,
                "a primary's log is readable",
                format!("n{}: configurations above {from}: {e}", n + 1),
            );
            return;
        }
    };
    let mut changes = Vec::new();
    if let Some(track) = c.ghost.configs.get_mut(&n) {
        for (lsn, config) in found {
            if lsn <= track.scanned {
                continue;
            }
            if lsn > epoch_start {
                let prev = &track.list[track.list.len() - 1].1;
                changes.push((lsn, classify_change(prev, &config), config.forced));
            }
            track.list.push((lsn, config));
        }
        track.scanned = last;
    }
    for (lsn, change, forced) in changes {
        c.ghost.config_changes += 1;
        // A forced configuration: only the one the operator's plan made, right after the
        // epoch's control record of the node that campaigned (spec/membership.md §3).
        let planned = forced
            && lsn == epoch_start + 1
            && c.ghost.forced.as_ref().is_some_and(|f| {
                f.node == n && found_config(c, n, lsn).is_some_and(|cfg| cfg == f.config)
            });
        match change {
            Ok(ch @ walship_node::membership::Change::Forced { .. }) if planned => {
                c.log(format!(
                    "n{} epoch {epoch}: forced configuration at lsn {lsn}: {ch:?}",
                    n + 1
                ));
            }
            Ok(ch) if !forced => {
                c.log(format!(
                    "n{} epoch {epoch}: configuration at lsn {lsn}: {ch:?}",
                    n + 1
                ));
            }
            other => violate(
                c,
                "within an epoch the configuration changes one member at a time, generation + 1",
                format!(
                    "n{} epoch {epoch}: configuration at lsn {lsn}: {other:?} (forced {forced})",
                    n + 1
                ),
            ),
        }
    }
}

/// The configuration record at `lsn` of node `n`'s primary log, as scanned.
fn found_config(c: &Cluster, n: usize, lsn: Lsn) -> Option<Configuration> {
    c.ghost
        .configs
        .get(&n)
        .and_then(|t| t.list.iter().find(|(l, _)| *l == lsn))
        .map(|(_, cfg)| cfg.clone())
}

/// Node `n`'s primary advanced its commit watermark from `from` to `commit`:
/// the record at `commit` must be durably held by the commit copies of every
/// configuration it commits under (rule 2), recomputed from the primary's log and
/// the members' disks.
fn check_commit_quorum(c: &mut Cluster, n: usize, commit: Lsn) {
    scan_configs(c, n);
    let Some(track) = c.ghost.configs.get(&n) else {
        return;
    };
    let Some(idx) = track.list.iter().rposition(|(l, _)| *l <= commit) else {
        return;
    };
    let (a_lsn, a) = track.list[idx].clone();
    let before = (idx > 0).then(|| track.list[idx - 1].1.clone());
    let (pos, a_pos) = match &c.nodes[n].role {
        RoleState::Primary(p) => p.up.exec.wal().with(|w| {
            (
                w.position_at(commit).ok().flatten(),
                w.position_at(a_lsn).ok().flatten(),
            )
        }),
        _ => (None, None),
    };
    let Some(pos) = pos else {
        return;
    };
    // A configuration not committed before this advance (by this primary or any
    // other) commits jointly with the one before it, unless it is forced (it
    // replaces voters that are gone).
    let a_committed = a_lsn == 0
        || c.ghost
            .committed
            .get(&a_lsn)
            .is_some_and(|(p, _)| Some(*p) == a_pos);
    let mut needed: Vec<Configuration> = vec![a.clone()];
    if let Some(b) = before.filter(|_| !a_committed && !a.forced) {
        needed.insert(0, b);
    }
    c.ghost.commit_checks.0 += 1;
    if needed.len() > 1 {
        c.ghost.commit_checks.1 += 1;
    }
    for config in needed {
        let voters: Vec<(usize, u64)> = config
            .members
            .iter()
            .filter(|m| m.voter)
            .filter_map(|m| c.index_of(&m.id).map(|i| (i, m.incarnation)))
            .collect();
        let copies = commit_copies(config.voters().count(), c.cfg.quorum).unwrap_or(1);
        let holders: Vec<usize> = voters
            .iter()
            .filter(|&&(m, inc)| holds(c, m, inc, pos))
            .map(|&(m, _)| m)
            .collect();
        if holders.len() < copies {
            violate(
                c,
                "a commit is held by the commit copies of every configuration it commits under",
                format!(
                    "n{} committed lsn {commit} ({pos:?}) held by {:?} of generation {} voters {:?}: {} < {copies}",
                    n + 1,
                    holders.iter().map(|m| m + 1).collect::<Vec<_>>(),
                    config.generation,
                    voters.iter().map(|(m, _)| m + 1).collect::<Vec<_>>(),
                    holders.len()
                ),
            );
        }
    }
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
            match loss_accepted(c, lsn) {
                Ok(()) => {
                    c.ghost.lost_acked.insert(lsn, old);
                }
                Err(why) => violate(
                    c,
                    "no acknowledged record is ever lost",
                    format!("lsn {lsn} was acknowledged as {old:?}, now as {pos:?} ({why})"),
                ),
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
        if let Err(why) = loss_accepted(c, pos.lsn) {
            violate(
                c,
                "a committed record is never replaced",
                format!(
                    "n{} commits {pos:?} at lsn {}, where {old:?} was committed ({why})",
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
    if commit >= from && epoch > 0 {
        check_commit_quorum(c, n, commit);
    }
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
        let why = match loss_accepted(c, pos.lsn) {
            Ok(()) => {
                if acked {
                    c.ghost.lost_acked.insert(pos.lsn, pos);
                }
                continue;
            }
            Err(why) => why,
        };
        let what = if acked { "acknowledged" } else { "committed" };
        violate(
            c,
            "every acknowledged or committed record is in every later primary's log",
            format!(
                "n{} leads epoch {epoch} without the {what} record {pos:?} (its log has {got:?}; {why})",
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
        // Rule 3 within the epoch: every configuration the primary appends follows the
        // one before it.
        let cfg_lsn = match &c.nodes[n].role {
            RoleState::Primary(p) => p.up.exec.membership().lsn,
            _ => 0,
        };
        if c.ghost
            .configs
            .get(&n)
            .is_none_or(|t| t.epoch != epoch || t.scanned < cfg_lsn)
        {
            scan_configs(c, n);
        }
        let newer = c.ghost.acked.range(verified + 1..).next().is_some()
            || c.ghost.committed.range(verified + 1..).next().is_some();
        if newer {
            verify_primary_log(c, n, verified);
        }
    }
}
