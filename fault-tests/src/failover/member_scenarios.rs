//! Seed 000's scenarios 4, 6 and 7, where the membership changes, over the
//! failover world with membership run as production runs it ([`super::members`]):
//!
//! - **4**, a node's disk destroyed: a replica that was one of the fewest to
//!   hold the latest records loses its disk and comes back empty with a new
//!   incarnation. The primary demotes it to a learner by itself
//!   (`automatic_change`), it catches up, the operator promotes it. Its vote
//!   and receipts never count while it is a learner or as the old incarnation.
//! - **6**, scale-down without graceful shutdown: a replica (row `6`) or the
//!   primary (row `6p`) is terminated for good; the operator deregisters it
//!   (`Remove`), and the cluster keeps committing with `N - 1` voters.
//! - **7**, the primary crashes and two replicas' disks are destroyed: the two
//!   were the only replicas holding the latest records (with the primary).
//!   Elections are blocked where the survivors are fewer than the election
//!   quorum; the destroyed replicas come back empty and their votes do not
//!   count (new incarnations). Where it stays blocked (with no survivor but
//!   the old primary: once its disk is back) the operator runs `walship ctl
//!   force-quorum` as production does ([`Cluster::force_quorum`]): refused
//!   without `--accept-data-loss`; with it the most up to date survivor is
//!   elected among the survivors, writes the forced configuration and the
//!   cluster commits again; the loss is measured on its log against the
//!   plan. Where the survivors cannot hold a commit's copies (static `k`) the
//!   force is refused and the old primary's restart is what unblocks.

use std::cell::Cell as Flag;
use std::collections::BTreeMap;

use walship_node::membership::ForceError;
use walship_wal::{Lsn, Position};

use walship_node::election::{commit_copies, election_quorum, majority, Role};
use walship_node::membership::MemberChange;

use super::scenarios::Cell;
use super::{Cluster, FoConfig};

/// How long a cell waits for an election or a change (simulated ms).
const WAIT_MS: u64 = 3_000;

/// A fresh cluster with its first primary, the bootstrap configuration record
/// committed, and a client appending.
fn setup(n: usize, q: i64, seed: u64) -> Result<(Cluster, usize, u64), String> {
    let mut c = Cluster::new(FoConfig::new(n, q), seed)?;
    if q == 0 {
        c.promote(0, true)?;
        c.ghost.data_loss_accepted = false; // nothing was acknowledged yet
    }
    let t = c.now() + 5_000;
    if !c.run_until_cond(t, |c| c.primary().is_some() && c.converged()) {
        return Err("no first primary".into());
    }
    if !c.run_until_config_committed(1, WAIT_MS) {
        return Err("the primary wrote no bootstrap configuration record".into());
    }
    let p0 = c.primary().ok_or("no first primary")?;
    let epoch = c.nodes[p0].core.as_ref().map_or(0, |k| k.epoch());
    c.set_client(true);
    let t = c.now() + 800;
    c.run_until(t);
    Ok((c, p0, epoch))
}

fn new_primary(c: &Cluster, old_epoch: u64) -> Option<usize> {
    c.primary().filter(|&p| {
        c.nodes[p]
            .core
            .as_ref()
            .is_some_and(|k| k.epoch() > old_epoch)
    })
}

/// Acknowledged records so far.
fn acked(c: &Cluster) -> usize {
    c.ghost.acked.len()
}

/// Runs `ms` and returns how many records were acknowledged meanwhile.
fn acked_during(c: &mut Cluster, ms: u64) -> usize {
    let before = acked(c);
    let t = c.now() + ms;
    c.run_until(t);
    acked(c) - before
}

/// For `ms`, the replicas other than `p` among `others` receive nothing: only
/// `receivers` (and the primary) hold the latest records.
fn only_receive(c: &mut Cluster, p: usize, receivers: &[usize], ms: u64) {
    for o in 0..c.cfg.nodes {
        if o != p && !receivers.contains(&o) {
            c.block_data(p, o);
        }
    }
    let t = c.now() + ms;
    c.run_until(t);
}

/// The operator's deregistration of `victim` on the current primary, waited until
/// committed; returns what the operator column says.
/// After a member was deregistered (N - 1 voters): the cluster must commit and converge.
fn after_deregistration(c: &mut Cluster, n: usize, out: &mut String, failures: &mut Vec<String>) {
    let during = acked_during(c, 600);
    out.push_str(&format!(
        "; deregistered: N = {}, {during} acked in 600 ms",
        n - 1
    ));
    if during == 0 {
        failures.push("no commits with N - 1 voters".into());
    }
    if !c.run_until_converged(6_000) {
        failures.push("did not converge".into());
    }
}

fn deregister(c: &mut Cluster, victim: usize) -> Result<String, String> {
    let name = c.nodes[victim].name.clone();
    // One change at a time: wait until the newest configuration (maybe one the
    // primary made by itself) is committed.
    if !c.run_until_config_committed(0, WAIT_MS) {
        return Err(format!("deregister {name}: a change stays pending"));
    }
    let generation = c
        .primary_membership()
        .map_or(0, |v| v.config.generation + 1);
    c.change_membership(MemberChange::Remove(name.clone()))
        .map_err(|e| format!("deregister {name} refused: {e}"))?;
    if !c.run_until_config_committed(generation, WAIT_MS) {
        return Err(format!("deregistering {name} did not commit"));
    }
    Ok(format!("deregister {name} (Remove)"))
}

/// The operator promotes quorum 0's most up-to-date live voter with
/// `accept_data_loss`; true once a new primary leads.
fn operator_promotes(c: &mut Cluster, old_epoch: u64, ops: &mut Vec<String>) -> bool {
    let pick = c
        .nodes
        .iter()
        .filter(|n| n.is_up() && n.halted.is_none() && !n.gone)
        .filter(|n| n.membership.config.is_voter(&n.name))
        .filter(|n| {
            let reach = (0..c.cfg.nodes)
                .filter(|&m| m == n.id || (c.net.reachable(n.id, m) && c.nodes[m].is_up()))
                .count();
            reach >= majority(n.membership.config.voters().count())
        })
        .max_by_key(|n| n.core.as_ref().map(|k| k.log_head()))
        .map(|n| n.id);
    let Some(pick) = pick else {
        return false;
    };
    if c.promote(pick, true).is_err() {
        return false;
    }
    ops.push(format!("promote n{} --accept-data-loss", pick + 1));
    let t = c.now() + 1_500;
    c.run_until_cond(t, |c| new_primary(c, old_epoch).is_some())
}

/// What the cell reports in its loss column: acknowledged records lost (counted
/// by the ghost), or none.
fn loss_text(c: &Cluster) -> String {
    let lost = c.ghost.lost_acked.len();
    if lost > 0 {
        format!("yes: {lost} of {} (accepted)", acked(c))
    } else {
        format!("no (0 of {})", acked(c))
    }
}

/// Drives a cell of scenario 4, 6 (`primary` = the terminated node is the primary)
/// or 7; fills `cell` and returns the failures.
pub(super) fn drive(cell: &mut Cell, primary: bool, seed: u64) -> Result<Vec<String>, String> {
    let (s, n, q) = (cell.scenario, cell.nodes, cell.quorum);
    let (mut c, p0, epoch0) = setup(n, q, seed)?;
    let mut ops: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let outcome = match (s, primary) {
        (4, _) => destroyed_disk(&mut c, p0, &mut ops, &mut failures)?,
        (6, false) => scale_down_replica(&mut c, p0, &mut ops, &mut failures)?,
        (6, true) => scale_down_primary(&mut c, p0, epoch0, &mut ops, &mut failures)?,
        (7, _) => {
            primary_and_two_disks(&mut c, p0, epoch0, &mut ops, &mut failures, &mut cell.lost)?
        }
        _ => return Err(format!("no membership scenario {s}")),
    };
    for node in &c.nodes {
        if node.halted.is_some() {
            ops.push(format!("walship-recover rejoin n{}", node.id + 1));
        }
    }
    cell.outcome = outcome;
    cell.lost = match cell.lost.is_empty() {
        true => loss_text(&c),
        false => format!("{}; {}", loss_text(&c), cell.lost),
    };
    if ops.is_empty() {
        ops.push("none".into());
    }
    cell.operator = ops.join("; ");
    cell.violations = c.ghost.violations.clone();
    cell.trace_tail = c.trace.render_tail();
    if let Some(v) = c.ghost.violations.first() {
        failures.push(format!("seed {seed}: {v}"));
    }
    if acked(&c) == 0 {
        failures.push("nothing was acknowledged".into());
    }
    // A forced recovery whose plan said a loss is possible may lose what the checker
    // allowed (above its survivor's log end); anything else is a failure.
    let forced_may_lose = c.ghost.forced.as_ref().is_some_and(|f| f.may_lose);
    if q != 0 && !forced_may_lose && !c.ghost.lost_acked.is_empty() {
        failures.push("acknowledged records lost".into());
    }
    for node in &c.nodes {
        if let Some(h) = &node.halted {
            if h.reason.as_str() != "divergence" {
                failures.push(format!("n{} halted {}", node.id + 1, h.reason.as_str()));
            }
        }
        if let Some(why) = &node.stopped {
            failures.push(format!("n{} stopped: {why}", node.id + 1));
        }
    }
    let mut primaries: Vec<u64> = c
        .nodes
        .iter()
        .filter(|x| x.election_role() == Some(Role::Primary))
        .filter_map(|x| x.core.as_ref().map(|k| k.epoch()))
        .collect();
    primaries.dedup();
    if primaries.len()
        < c.nodes
            .iter()
            .filter(|x| x.election_role() == Some(Role::Primary))
            .count()
    {
        failures.push("two primaries of one epoch".into());
    }
    Ok(failures)
}

/// Whether static `k` can run on `voters` voters (it needs `k + 1` copies).
fn k_fits(q: i64, voters: usize) -> bool {
    commit_copies(voters, q).is_some_and(|copies| copies <= voters)
}

/// Scenario 4.
fn destroyed_disk(
    c: &mut Cluster,
    p0: usize,
    ops: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> Result<String, String> {
    let (n, q) = (c.cfg.nodes, c.cfg.quorum);
    let others: Vec<usize> = (0..n).filter(|&x| x != p0).collect();
    let victim = others[0];
    let vname = c.nodes[victim].name.clone();
    // The victim is one of the fewest replicas that hold the latest records.
    let copies = commit_copies(n, q).unwrap_or(1);
    let receivers: Vec<usize> = others[..copies.saturating_sub(1).max(1)].to_vec();
    only_receive(c, p0, &receivers, 300);
    let old_inc = c.nodes[victim].incarnation;
    c.destroy_disk(victim);
    c.heal_all();
    c.restart(victim);
    let new_inc = c.nodes[victim].incarnation;
    let mut out = format!(
        "{vname} back empty (incarnation {:#x} -> {:#x})",
        old_inc & 0xffff,
        new_inc & 0xffff
    );
    // The primary demotes it by itself (its Hello names another incarnation).
    let campaigned = Flag::new(false);
    let learner_of = |c: &Cluster| {
        c.primary_membership().is_some_and(|v| {
            v.committed
                && v.config
                    .member(&vname)
                    .is_some_and(|m| !m.voter && m.incarnation == new_inc)
        })
    };
    let t = c.now() + WAIT_MS;
    let demoted = c.run_until_cond(t, |c| {
        watch_learner(c, victim, &campaigned);
        learner_of(c)
    });
    let fits = k_fits(q, n - 1);
    if !demoted {
        let during = acked_during(c, 600);
        if fits {
            failures.push(format!("{vname} was not demoted to a learner"));
        }
        out.push_str(&format!(
            "; not demoted: {} voters left would not meet k+1 = {} copies; its new incarnation's receipts do not count: writes blocked ({during} acked in 600 ms): no configuration of the intact voters can commit under this quorum, and neither force-quorum nor walship-recover promote can make the new incarnation a voter (spec/membership.md §5, not built)",
            n - 1,
            commit_copies(n - 1, q).unwrap_or(0)
        ));
        if during > 0 {
            failures.push(format!(
                "{during} records acknowledged with a destroyed voter counted"
            ));
        }
        return Ok(out);
    }
    if !fits {
        failures.push(format!(
            "{vname} demoted although {} voters cannot meet k+1",
            n - 1
        ));
    }
    ops.push(format!(
        "none to demote ({vname} demoted to learner by the primary)"
    ));
    out.push_str(&format!(
        "; demoted to learner automatically at {} ms",
        c.now()
    ));
    // It catches up as a learner (records), writes keep committing meanwhile.
    let caught_up = |c: &Cluster| {
        let Some(p) = c.primary() else { return false };
        let Some(pr) = c.nodes[p].primary() else {
            return false;
        };
        let commit = pr.up.exec.commit_lsn();
        c.nodes[victim]
            .replica()
            .and_then(|r| r.up.exec.wal().map(|w| w.durable_lsn()))
            .is_some_and(|d| d >= commit && commit > 0)
    };
    let t = c.now() + WAIT_MS;
    if !c.run_until_cond(t, |c| {
        watch_learner(c, victim, &campaigned);
        caught_up(c)
    }) {
        failures.push(format!("{vname} did not catch up as a learner"));
        return Ok(out);
    }
    let during = acked_during(c, 300);
    out.push_str(&format!(
        "; caught up from lsn 1 ({during} acked in 300 ms meanwhile)"
    ));
    // The operator promotes it.
    let generation = c
        .primary_membership()
        .map_or(0, |v| v.config.generation + 1);
    c.change_membership(MemberChange::Promote(vname.clone()))
        .map_err(|e| format!("promote {vname}: {e}"))?;
    ops.push(format!("promote {vname} to voter"));
    if !c.run_until_config_committed(generation, WAIT_MS) {
        failures.push(format!("promoting {vname} did not commit"));
    }
    if campaigned.get() {
        failures.push(format!("{vname} campaigned while a learner"));
    }
    let during = acked_during(c, 600);
    out.push_str(&format!(
        "; promoted: voter again ({during} acked in 600 ms)"
    ));
    if !c.run_until_converged(6_000) {
        failures.push("did not converge".into());
    }
    Ok(out)
}

/// Records whether node `n` campaigns (or leads) while its newest configuration
/// says it is a learner.
fn watch_learner(c: &Cluster, n: usize, campaigned: &Flag<bool>) {
    let node = &c.nodes[n];
    let learner = node
        .membership
        .config
        .member(&node.name)
        .is_some_and(|m| !m.voter);
    if learner
        && matches!(
            node.election_role(),
            Some(Role::PreCandidate | Role::Candidate | Role::Primary)
        )
    {
        campaigned.set(true);
    }
}

/// Scenario 6, a replica terminated.
fn scale_down_replica(
    c: &mut Cluster,
    p0: usize,
    ops: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> Result<String, String> {
    let (n, q) = (c.cfg.nodes, c.cfg.quorum);
    let victim = (0..n).find(|&x| x != p0).ok_or("no replica")?;
    let vname = c.nodes[victim].name.clone();
    c.terminate(victim);
    let during = acked_during(c, 600);
    let copies = commit_copies(n, q).unwrap_or(1);
    let mut out = format!(
        "{vname} terminated: {during} acked in 600 ms with {} of {n} voters",
        n - 1
    );
    if (during > 0) != (copies < n) {
        failures.push(format!(
            "expected writes to {} with {} of {n} voters ({copies} copies)",
            if copies < n { "continue" } else { "wait" },
            n - 1
        ));
    }
    match deregister(c, victim) {
        Ok(op) => {
            ops.push(op);
            if !k_fits(q, n - 1) {
                failures.push("deregistered below k + 1 voters".into());
            }
            after_deregistration(c, n, &mut out, failures);
        }
        Err(e) => {
            if k_fits(q, n - 1) {
                failures.push(e.clone());
            }
            out.push_str(&format!(
                "; {e}: k+1 = {copies} copies need {copies} voters, writes wait"
            ));
        }
    }
    Ok(out)
}

/// Scenario 6, the primary terminated.
fn scale_down_primary(
    c: &mut Cluster,
    p0: usize,
    epoch0: u64,
    ops: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> Result<String, String> {
    let (n, q) = (c.cfg.nodes, c.cfg.quorum);
    let pname = c.nodes[p0].name.clone();
    c.terminate(p0);
    let fault_at = c.now();
    let t = c.now() + WAIT_MS;
    let elected = c.run_until_cond(t, |c| new_primary(c, epoch0).is_some());
    let expect = election_quorum(n, q).is_some_and(|e| e < n);
    let mut out = format!("{pname} (primary) terminated");
    if elected != expect {
        failures.push(format!(
            "expected {}",
            if expect { "an election" } else { "a block" }
        ));
    }
    if !elected {
        out.push_str("; blocked (no automatic failover (quorum 0))");
        if q != 0 || !operator_promotes(c, epoch0, ops) {
            failures.push("no primary".into());
            return Ok(out);
        }
    }
    let p = new_primary(c, epoch0).ok_or("no primary")?;
    out.push_str(&format!(
        "; n{} elected after {} ms",
        p + 1,
        c.now() - fault_at
    ));
    match deregister(c, p0) {
        Ok(op) => {
            ops.push(op);
            after_deregistration(c, n, &mut out, failures);
        }
        Err(e) => {
            if k_fits(q, n - 1) {
                failures.push(e.clone());
            }
            out.push_str(&format!("; {e}: writes wait"));
        }
    }
    let halted: Vec<String> = c
        .nodes
        .iter()
        .filter_map(|x| {
            x.halted
                .as_ref()
                .map(|h| format!("n{} {}", x.id + 1, h.reason.as_str()))
        })
        .collect();
    if !halted.is_empty() {
        out.push_str(&format!("; halted: {}", halted.join(", ")));
    }
    Ok(out)
}

/// Scenario 7; `lost_note` gets what a forced recovery measured against its plan.
fn primary_and_two_disks(
    c: &mut Cluster,
    p0: usize,
    epoch0: u64,
    ops: &mut Vec<String>,
    failures: &mut Vec<String>,
    lost_note: &mut String,
) -> Result<String, String> {
    let (n, q) = (c.cfg.nodes, c.cfg.quorum);
    let others: Vec<usize> = (0..n).filter(|&x| x != p0).collect();
    let victims = [others[0], others[1]];
    let copies = commit_copies(n, q).unwrap_or(1);
    let receivers: Vec<usize> = others[..copies.saturating_sub(1).max(2)].to_vec();
    only_receive(c, p0, &receivers, 300);
    c.set_client(false);
    c.crash(p0);
    for v in victims {
        c.destroy_disk(v);
    }
    c.heal_all();
    let survivors = n - 3;
    let eq = election_quorum(n, q);
    let expect = eq.is_some_and(|e| survivors >= e);
    let t = c.now() + WAIT_MS;
    let mut elected = c.run_until_cond(t, |c| new_primary(c, epoch0).is_some());
    let vnames = format!("n{}, n{}", victims[0] + 1, victims[1] + 1);
    let mut out = String::new();
    if elected != expect {
        failures.push(format!(
            "expected {} with {survivors} survivors (election quorum {eq:?})",
            if expect { "an election" } else { "a block" }
        ));
    }
    if elected {
        out.push_str(&format!(
            "n{} elected ({survivors} of {n} survive, quorum {})",
            new_primary(c, epoch0).map_or(0, |p| p + 1),
            eq.unwrap_or(0)
        ));
    } else {
        out.push_str(&format!(
            "blocked ({survivors} of {n} survive{})",
            match eq {
                Some(e) => format!(", election quorum {e}"),
                None => ", no automatic failover (quorum 0)".into(),
            }
        ));
        if q == 0 && operator_promotes(c, epoch0, ops) {
            elected = true;
            out.push_str("; operator promotion elected");
        }
    }
    // The destroyed replicas' VMs come back with empty disks (new incarnations).
    for v in victims {
        c.restart(v);
    }
    if !elected {
        let t = c.now() + WAIT_MS;
        let now_elected = c.run_until_cond(t, |c| new_primary(c, epoch0).is_some());
        if now_elected {
            failures.push(format!(
                "elected with the votes of {vnames}, back empty (their old incarnations held the records)"
            ));
        }
        out.push_str(&format!(
            "; still blocked with {vnames} back empty (their votes do not count: new incarnations)"
        ));
        // With no survivor but the old primary, whose disk survived, it restarts first.
        let survivor = (0..n).any(|x| x != p0 && !victims.contains(&x));
        let mut p0_back = false;
        if !survivor {
            c.restart(p0);
            p0_back = true;
            ops.push(format!("restart n{} (old primary)", p0 + 1));
            let up = n - 2;
            let t = c.now() + WAIT_MS;
            elected = c.run_until_cond(t, |c| new_primary(c, epoch0).is_some());
            let expect2 = eq.is_some_and(|e| up >= e);
            if elected != expect2 {
                failures.push(format!(
                    "expected {} once n{} is back ({up} up)",
                    if expect2 { "an election" } else { "a block" },
                    p0 + 1
                ));
            }
            if elected {
                out.push_str(&format!(
                    "; n{} elected once n{} restarted",
                    new_primary(c, epoch0).map_or(0, |p| p + 1),
                    p0 + 1
                ));
            } else {
                out.push_str(&format!(
                    "; still blocked with n{} back ({up} of {n} voters count)",
                    p0 + 1
                ));
            }
        }
        if !elected {
            let forced = forced_recovery(
                c,
                Fault {
                    p0,
                    epoch0,
                    receivers: &receivers,
                },
                ops,
                failures,
                &mut out,
                lost_note,
            )?;
            if forced {
                if !p0_back {
                    ops.push(format!(
                        "keep n{} (old primary, removed) from running on its old data",
                        p0 + 1
                    ));
                }
                return Ok(out);
            }
            if p0_back {
                return Ok(out);
            }
            // Refused: the old primary's disk survived; it restarts.
            c.restart(p0);
            ops.push(format!("restart n{} (old primary)", p0 + 1));
            let up = n - 2;
            let t = c.now() + WAIT_MS;
            elected = c.run_until_cond(t, |c| new_primary(c, epoch0).is_some());
            if !elected && q == 0 {
                elected = operator_promotes(c, epoch0, ops);
            }
            let expect2 = eq.is_some_and(|e| up >= e) || (q == 0 && up >= majority(n));
            if elected != expect2 {
                failures.push(format!(
                    "expected {} once n{} is back ({up} up)",
                    if expect2 { "an election" } else { "a block" },
                    p0 + 1
                ));
            }
            if !elected {
                out.push_str(&format!(
                    "; still blocked with n{} back ({up} of {n} voters count)",
                    p0 + 1
                ));
                return Ok(out);
            }
            out.push_str(&format!(
                "; n{} elected once n{} restarted",
                new_primary(c, epoch0).map_or(0, |p| p + 1),
                p0 + 1
            ));
        }
    }
    // The destroyed replicas are back: the primary demotes them (new incarnations);
    // the operator deregisters them.
    c.set_client(true);
    for v in victims {
        let name = c.nodes[v].name.clone();
        let inc = c.nodes[v].incarnation;
        let t = c.now() + WAIT_MS;
        let demoted = c.run_until_cond(t, |c| {
            c.primary_membership().is_some_and(|m| {
                m.committed
                    && m.config
                        .member(&name)
                        .is_none_or(|x| !x.voter && x.incarnation == inc)
            })
        });
        if !demoted {
            let voters = c
                .primary_membership()
                .map_or(0, |m| m.config.voters().count());
            if k_fits(q, voters.saturating_sub(1)) {
                failures.push(format!("{name} was not demoted"));
            }
            out.push_str(&format!(
                "; {name} not demoted ({voters} voters, k+1 copies)"
            ));
            continue;
        }
        match deregister(c, v) {
            Ok(op) => ops.push(op),
            Err(e) => failures.push(e),
        }
    }
    let during = acked_during(c, 600);
    let voters = c
        .primary_membership()
        .map_or(0, |m| m.config.voters().count());
    out.push_str(&format!(
        "; {vnames} demoted (automatic), deregistered: N = {voters}, {during} acked in 600 ms"
    ));
    // The old primary's disk survived: it comes back and follows.
    c.restart_all();
    if !c.run_until_converged(6_000) {
        failures.push("did not converge".into());
    }
    let halted: Vec<String> = c
        .nodes
        .iter()
        .filter_map(|x| {
            x.halted
                .as_ref()
                .map(|h| format!("n{} {}", x.id + 1, h.reason.as_str()))
        })
        .collect();
    if !halted.is_empty() {
        out.push_str(&format!("; halted: {}", halted.join(", ")));
    }
    Ok(out)
}

/// Scenario 7's fault, for [`forced_recovery`].
#[derive(Clone, Copy)]
struct Fault<'a> {
    /// The old primary.
    p0: usize,
    /// Its epoch.
    epoch0: u64,
    /// The replicas that received the latest records.
    receivers: &'a [usize],
}

/// The operator's `walship ctl force-quorum` on a blocked cluster ([`Cluster::force_quorum`]):
/// first without `--accept-data-loss` (refused exactly when the plan says a loss is
/// possible), then with it; the most up to date survivor campaigns among the survivors,
/// leads, writes the forced configuration, and the cluster commits again. The loss is
/// measured (acknowledged records absent from the new primary's log) and must be what the
/// plan allowed: nothing at or below the survivor's log end, nothing at all unless the plan
/// said a loss is possible. False when the force is refused for another reason (stated).
fn forced_recovery(
    c: &mut Cluster,
    fault: Fault<'_>,
    ops: &mut Vec<String>,
    failures: &mut Vec<String>,
    out: &mut String,
    lost_note: &mut String,
) -> Result<bool, String> {
    let Fault {
        p0,
        epoch0,
        receivers,
    } = fault;
    // Nothing is acknowledged from here until the forced primary leads (no primary).
    let acked_before: BTreeMap<Lsn, Position> =
        c.ghost.acked.iter().map(|(&l, &(p, _))| (l, p)).collect();
    let (refused_without, run) = match c.force_quorum(false)? {
        Err(ForceError::LossNotAccepted { lost, log_end }) => {
            let run = c
                .force_quorum(true)?
                .map_err(|e| format!("force-quorum --accept-data-loss refused: {e}"))?;
            (Some((lost, log_end)), run)
        }
        Err(e) => {
            cell_note(out, format!("force-quorum refused: {e}"));
            ops.push("walship ctl force-quorum (refused)".into());
            return Ok(false);
        }
        Ok(run) => {
            failures.push(format!(
                "force-quorum ran without accept_data_loss (plan: may lose {})",
                run.plan.may_lose
            ));
            (None, run)
        }
    };
    let chosen = run.node;
    let name = c.nodes[chosen].name.clone();
    if let Some((lost, log_end)) = &refused_without {
        if !run.plan.may_lose || *lost != run.plan.lost || *log_end != run.log_end {
            failures.push(format!(
                "refused without accept_data_loss ({lost:?} above {log_end}) but the plan is {:?}",
                run.plan
            ));
        }
        cell_note(
            out,
            format!(
                "force-quorum without --accept-data-loss refused (lost voters may hold records above lsn {log_end})"
            ),
        );
    }
    ops.push(format!(
        "walship ctl force-quorum --accept-data-loss (campaigns on {name}, survivors {})",
        run.survivors.join(",")
    ));
    let generation = run.plan.config.generation;
    let t = c.now() + WAIT_MS;
    let led = c.run_until_cond(t, |c| {
        new_primary(c, epoch0) == Some(chosen)
            && c.primary_membership()
                .is_some_and(|v| v.config.forced && v.config.generation == generation)
    });
    if !led {
        failures.push(format!(
            "{name} did not lead with the forced configuration generation {generation}"
        ));
        return Ok(true);
    }
    let epoch = c.nodes[chosen].core.as_ref().map_or(0, |k| k.epoch());
    let view = c.primary_membership().ok_or("no primary")?;
    let mut voters: Vec<&str> = view.config.voters().collect();
    voters.sort_unstable();
    let mut named: Vec<&str> = run.survivors.iter().map(String::as_str).collect();
    named.sort_unstable();
    if voters != named || view.config != run.plan.config {
        failures.push(format!(
            "the forced configuration's voters {voters:?} are not the survivors {named:?}"
        ));
    }
    // The loss, measured on the new primary's log.
    let measured: Vec<Lsn> = match c.nodes[chosen].primary() {
        Some(p) => p.up.exec.wal().with(|w| {
            acked_before
                .iter()
                .filter(|(&l, &pos)| w.position_at(l).ok().flatten() != Some(pos))
                .map(|(&l, _)| l)
                .collect()
        }),
        None => return Err("no primary role".into()),
    };
    let checker: Vec<Lsn> = c.ghost.lost_acked.keys().copied().collect();
    if measured != checker {
        failures.push(format!(
            "measured loss {measured:?} differs from the checker's {checker:?}"
        ));
    }
    if let Some(l) = measured.iter().find(|&&l| l <= run.log_end) {
        failures.push(format!(
            "acknowledged lsn {l} lost, at or below {name}'s log end {}",
            run.log_end
        ));
    }
    if !measured.is_empty() && !run.plan.may_lose {
        failures.push("records lost although the plan said none may be".into());
    }
    // The latest records were on the old primary and the replicas that received them
    // only: forced on another survivor with those lost, they are gone.
    let copies = commit_copies(c.cfg.nodes, c.cfg.quorum).unwrap_or(1);
    let holders_lost = receivers
        .iter()
        .all(|r| !run.survivors.contains(&c.nodes[*r].name));
    if measured.is_empty() && chosen != p0 && holders_lost && copies > 1 {
        failures.push("the survivors were expected to lack the latest records".into());
    }
    let range = match (measured.first(), measured.last()) {
        (Some(a), Some(b)) => format!(" (lsn {a}..={b})"),
        _ => String::new(),
    };
    cell_note(
        out,
        format!(
            "force-quorum --accept-data-loss: {name} (most up to date survivor, log end {}) led epoch {epoch} with forced configuration generation {generation} at lsn {} (voters {}; removed {})",
            run.log_end,
            view.lsn,
            run.survivors.join(","),
            run.plan.lost.join(",")
        ),
    );
    lost_note.push_str(&format!(
        "forced: measured {} of {} lost{range}, all above {name}'s log end {} as the plan said (may lose: {}, {} lost voters >= {copies} copies)",
        measured.len(),
        acked_before.len(),
        run.log_end,
        run.plan.may_lose,
        run.plan.lost.len()
    ));
    // The cluster commits again under the forced configuration.
    c.set_client(true);
    let during = acked_during(c, 600);
    cell_note(out, format!("{during} acked in 600 ms after"));
    if during == 0 {
        failures.push("no commits under the forced configuration".into());
    }
    if !c.run_until_converged(6_000) {
        failures.push("did not converge".into());
    }
    Ok(true)
}

fn cell_note(out: &mut String, note: String) {
    out.push_str("; ");
    out.push_str(&note);
}

/// FM-F.6 (spec/failure-matrix.md): a membership change under crashes. Three
/// members under majority; a replica's disk is destroyed, it comes back empty
/// and the primary demotes it to a learner (its new incarnation); it catches
/// up. The other replica then lags (the primary's records stop reaching it)
/// and the operator promotes the learner: the configuration record commits
/// only on the commit copies of the old voters *and* of the new (rule 2), so
/// neither it nor any record after it commits while the old voter lags,
/// although the primary and the promoted learner hold them. The primary then
/// crashes with the change pending: the promoted learner, counting votes in
/// its newest configuration (rule 1), is elected with the lagging voter's
/// vote; the lagging voter, whose newest configuration is the old one, cannot
/// be elected without the crashed primary; nothing acknowledged is lost.
/// Planting `ConfigLog::commit_configs` = the newest configuration alone makes
/// the primary commit the promotion on itself and the learner, which the
/// checker's recomputed quorums flag. Returns what happened, or what broke.
pub fn fm_f_6(seed: u64) -> Result<String, String> {
    let fail = |c: &Cluster, what: String| {
        format!(
            "seed {seed}: {what}{}\n{}",
            c.ghost
                .violations
                .first()
                .map_or(String::new(), |v| format!(" ({v})")),
            c.trace.render_tail()
        )
    };
    let (mut c, p0, _) = setup(3, -1, seed).map_err(|e| format!("seed {seed}: {e}"))?;
    let others: Vec<usize> = (0..3).filter(|&x| x != p0).collect();
    let (lagger, learner) = (others[0], others[1]);
    let lname = c.nodes[learner].name.clone();
    c.destroy_disk(learner);
    c.restart(learner);
    let inc = c.nodes[learner].incarnation;
    let t = c.now() + WAIT_MS;
    let demoted = c.run_until_cond(t, |c| {
        c.primary_membership().is_some_and(|v| {
            v.committed
                && v.config
                    .member(&lname)
                    .is_some_and(|m| !m.voter && m.incarnation == inc)
        })
    });
    if !demoted || !c.ghost.violations.is_empty() {
        return Err(fail(&c, format!("{lname} demoted to a learner")));
    }
    let t = c.now() + WAIT_MS;
    let caught_up = c.run_until_cond(t, |c| {
        let commit = c.nodes[p0]
            .primary()
            .map_or(u64::MAX, |p| p.up.exec.commit_lsn());
        c.nodes[learner]
            .replica()
            .and_then(|r| r.up.exec.wal().map(|w| w.durable_lsn()))
            .is_some_and(|d| d >= commit)
    });
    if !caught_up {
        return Err(fail(&c, format!("{lname} caught up")));
    }
    // The other voter lags; the operator promotes the learner.
    c.block_data(p0, lagger);
    let commit_before = c.nodes[p0].primary().map_or(0, |p| p.up.exec.commit_lsn());
    let acked_before = c.ghost.acked.len();
    let lsn = c
        .change_membership(MemberChange::Promote(lname.clone()))
        .map_err(|e| fail(&c, format!("promote {lname}: {e}")))?;
    let t = c.now() + 600;
    c.run_until(t);
    let commit = c.nodes[p0].primary().map_or(0, |p| p.up.exec.commit_lsn());
    if commit >= lsn || !c.ghost.violations.is_empty() {
        return Err(fail(
            &c,
            format!(
                "the promotion at lsn {lsn} committed (commit {commit}) without the lagging old voter n{}",
                lagger + 1
            ),
        ));
    }
    let stalled = c.ghost.acked.len() - acked_before;
    // The primary crashes with the change pending.
    c.crash(p0);
    c.heal_all();
    let t = c.now() + WAIT_MS;
    if !c.run_until_cond(t, |c| c.primary().is_some()) {
        return Err(fail(&c, "no primary after the crash".into()));
    }
    let winner = c.primary().ok_or("no primary")?;
    if winner != learner {
        return Err(fail(
            &c,
            format!(
                "n{} elected; the promoted learner {lname} was expected (the lagging voter counts in the old configuration)",
                winner + 1
            ),
        ));
    }
    c.restart(p0);
    if !c.run_until_converged(10_000) {
        return Err(fail(&c, "converged after the old primary's restart".into()));
    }
    let view = c.primary_membership().ok_or("no primary")?;
    if !view.committed || !view.config.is_voter(&lname) || !c.ghost.violations.is_empty() {
        return Err(fail(&c, format!("{lname} a voter, committed: {view:?}")));
    }
    Ok(format!(
        "seed {seed}: promotion of {lname} at lsn {lsn} pending while n{} lagged (commit stayed at {commit} from {commit_before}, {stalled} acked meanwhile); primary n{} crashed; {lname} elected with the lagging voter's vote; {} acked, none lost; {} commit advances recomputed ({} joint)",
        lagger + 1,
        p0 + 1,
        c.ghost.acked.len(),
        c.ghost.commit_checks.0,
        c.ghost.commit_checks.1
    ))
}
