//! Random failover runs: one seed decides the cluster (3, 5 or 7 nodes,
//! quorum -1, 1 or 2), the election message loss, and a schedule of
//! crashes, restarts, isolations, pairwise partitions, lagging replicas (the
//! primary's records stop reaching them), heals and membership changes (the
//! operator removes a voter other than the primary, adds a removed node back as
//! a learner, promotes a caught-up learner: one at a time, through the
//! production `propose_configuration`) while a client appends. The invariants of [`super::check`] are judged after every step;
//! then every fault heals and the members must converge within bounded
//! simulated time (a node halted `divergence` — it holds records no primary
//! acknowledged — waits for the operator's `walship-recover rejoin` and is
//! left out).

use walship_node::membership::MemberChange;
use walship_wal::control::ConfigMember;

use super::{Cluster, FoConfig, Violation};
use crate::rng::SimRng;

/// The result of one random run.
#[derive(Debug, Clone)]
pub struct RandomRun {
    /// The seed.
    pub seed: u64,
    /// Members.
    pub nodes: usize,
    /// Quorum setting.
    pub quorum: i64,
    /// Faults injected.
    pub faults: usize,
    /// Epochs that had a primary.
    pub elections: usize,
    /// Acknowledged records.
    pub acked: usize,
    /// Primary executors fenced by a member's higher epoch.
    pub fenced: usize,
    /// Nodes halted `divergence` at the end.
    pub halted: usize,
    /// Membership changes proposed by the operator (remove, add, promote), and
    /// configuration changes the checker saw within primaries' epochs (the
    /// bootstrap records and automatic ones included).
    pub member_changes: (usize, u64),
    /// Voters of the newest configuration at the end.
    pub voters: usize,
    /// Disks destroyed (a replica back empty with a new incarnation).
    pub destroyed: usize,
    /// Converged after healing.
    pub converged: bool,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// Why it failed (None: passed).
    pub failure: Option<String>,
    /// The trace's last events (on failure).
    pub trace_tail: String,
}

/// Runs seed `seed`.
pub fn run(seed: u64) -> RandomRun {
    let mut rng = SimRng::new(seed ^ 0xf0f0_5eed);
    let nodes = [3, 3, 5, 5, 7][rng.index(5)];
    let quorum = [-1, -1, 1, 2][rng.index(4)];
    let mut cfg = FoConfig::new(nodes, quorum);
    cfg.elect_loss_per_mille = [0, 20, 100][rng.index(3)] as u32;
    cfg.elect_delay_ms = (1, rng.range(2, 20));
    let mut out = RandomRun {
        seed,
        nodes,
        quorum,
        faults: 0,
        elections: 0,
        acked: 0,
        fenced: 0,
        halted: 0,
        member_changes: (0, 0),
        voters: nodes,
        destroyed: 0,
        converged: false,
        violations: Vec::new(),
        failure: None,
        trace_tail: String::new(),
    };
    let mut c = match Cluster::new(cfg, seed) {
        Ok(c) => c,
        Err(e) => {
            out.failure = Some(e);
            return out;
        }
    };
    c.set_client(true);
    let rounds = rng.range(6, 14);
    let mut destroyed = false;
    for _ in 0..rounds {
        let t = c.now() + rng.range(200, 900);
        c.run_until(t);
        if !c.ghost.violations.is_empty() {
            break;
        }
        let victim = rng.index(nodes);
        let target = if rng.chance(500) {
            c.primary().unwrap_or(victim)
        } else {
            victim
        };
        out.faults += 1;
        match rng.index(10) {
            9 => {
                // A replica's disk destroyed (at most once a run, never where static k
                // could not demote it): it comes back empty, a new incarnation, and the
                // primary demotes it to a learner; a later change may promote it.
                let voters = c
                    .primary_membership()
                    .map_or(nodes, |v| v.config.voters().count());
                let fits = walship_node::election::commit_copies(voters - 1, quorum)
                    .is_some_and(|k| k < voters);
                match c.primary() {
                    Some(p) if target != p && !destroyed && fits => {
                        destroyed = true;
                        c.destroy_disk(target);
                        c.restart(target);
                        out.destroyed += 1;
                    }
                    _ => out.faults -= 1,
                }
            }
            7 | 8 => {
                if membership_change(&mut c, &mut rng) {
                    out.member_changes.0 += 1;
                } else {
                    out.faults -= 1;
                }
            }
            0 | 1 => c.crash(target),
            2 => c.restart_all(),
            3 => c.isolate(target),
            4 => {
                let other = rng.index(nodes);
                if other != target {
                    c.partition(target, other);
                }
            }
            5 => {
                // Replicas that lag: the primary's records stop reaching them.
                if let Some(p) = c.primary() {
                    for _ in 0..rng.range(1, nodes as u64 / 2) {
                        let lagger = rng.index(nodes);
                        if lagger != p {
                            c.block_data(p, lagger);
                        }
                    }
                }
            }
            _ => c.heal_all(),
        }
    }
    c.heal_all();
    c.restart_all();
    out.converged = c.run_until_converged(10_000);
    out.elections = c.ghost.primaries.len();
    out.acked = c.ghost.acked.len();
    out.fenced = c.ghost.fenced;
    out.halted = c.nodes.iter().filter(|n| n.halted.is_some()).count();
    out.member_changes.1 = c.ghost.config_changes;
    out.violations = c.ghost.violations.clone();
    let mut failures = Vec::new();
    if let Some(v) = out.violations.first() {
        failures.push(format!("{v}"));
    }
    let others_halted = c
        .nodes
        .iter()
        .filter_map(|n| n.halted.as_ref())
        .any(|h| h.reason.as_str() != "divergence");
    if others_halted {
        failures.push("a node halted for another reason than divergence".into());
    }
    if let Some(n) = c.nodes.iter().find(|n| n.stopped.is_some()) {
        failures.push(format!("n{} stopped: {:?}", n.id + 1, n.stopped));
    }
    // Halted nodes, and voters whose disk was destroyed (counted as the incarnation
    // the configuration names until the primary demotes them), can leave too few
    // voters for the commit or election quorum of a configuration records commit
    // under: then not converging waits for the operator (rejoin), it is not a
    // liveness bug.
    let configs = c
        .primary()
        .and_then(|p| {
            c.nodes[p]
                .primary()
                .map(|r| r.up.exec.commit_configurations())
        })
        .unwrap_or_else(|| {
            vec![c
                .nodes
                .iter()
                .filter(|n| n.halted.is_none())
                .max_by_key(|n| (n.membership.config.generation, n.membership.lsn))
                .map_or_else(|| c.base.clone(), |n| n.membership.config.clone())]
        });
    out.voters = configs.last().map_or(nodes, |cfg| cfg.voters().count());
    let mut live_everywhere = true;
    let mut live = nodes;
    for cfg in &configs {
        let voters = cfg.voters().count();
        let valid = c
            .nodes
            .iter()
            .filter(|n| n.halted.is_none() && !n.gone)
            .filter(|n| {
                cfg.member(&n.name).is_some_and(|m| {
                    m.voter && (m.incarnation == 0 || m.incarnation == n.incarnation)
                })
            })
            .count();
        let copies = walship_node::election::commit_copies(voters, quorum).unwrap_or(voters);
        let eq = walship_node::election::election_quorum(voters, quorum).unwrap_or(voters);
        live = live.min(valid);
        if valid < copies.max(eq) {
            live_everywhere = false;
        }
    }
    if !out.converged && live_everywhere {
        failures.push(format!(
            "no convergence within 10 s after healing ({live} live, {} halted)",
            out.halted
        ));
    }
    if !failures.is_empty() {
        out.failure = Some(failures.join("; "));
        out.trace_tail = format!("{}{}", node_states(&c), c.trace.render_tail());
    }
    out
}

/// One line per node: what it runs, its epoch, its newest configuration.
fn node_states(c: &Cluster) -> String {
    let now = c.now();
    let mut out = String::new();
    for n in &c.nodes {
        out.push_str(&format!(
            "  {}: up {} role {:?} epoch {:?} incarnation {:#x} configuration generation {} at lsn {} (committed {}) voters {:?} halted {:?} stopped {:?} follows {:?} durable {:?} leads (commit, durable) {:?} eligible {:?}{}\n",
            n.name,
            n.is_up(),
            n.election_role(),
            n.core.as_ref().map(|k| k.epoch()),
            n.incarnation,
            n.membership.config.generation,
            n.membership.lsn,
            n.membership.committed,
            n.membership.config.voters().collect::<Vec<_>>(),
            n.halted.as_ref().map(|h| h.reason.as_str()),
            n.stopped,
            n.replica().map(|r| c.nodes[r.primary].name.clone()),
            n.replica().and_then(|r| r.up.exec.wal().map(|w| w.durable_lsn())),
            n.primary().map(|p| (p.up.exec.commit_lsn(), p.up.exec.durable_lsn())),
            n.core.as_ref().map(|k| k.status(now).eligible),
            if n.gone { " (terminated)" } else { "" },
        ));
    }
    out
}

/// The operator's membership change on the current primary, if one applies: a
/// caught-up learner is promoted; else a node the configuration does not list
/// is added back as a learner (with its data directory's incarnation, as
/// `walship ctl add` reads it from the node's status); else a voter other than
/// the primary is removed while more than two voters remain. Refusals (a change
/// pending, static `k` without enough voters) are part of the run. True when a
/// change was proposed.
fn membership_change(c: &mut Cluster, rng: &mut SimRng) -> bool {
    let Some(p) = c.primary() else {
        return false;
    };
    let Some(view) = c.primary_membership() else {
        return false;
    };
    let commit = c.nodes[p].primary().map_or(0, |r| r.up.exec.commit_lsn());
    let learners: Vec<usize> = c
        .nodes
        .iter()
        .filter(|n| view.config.member(&n.name).is_some_and(|m| !m.voter))
        .filter(|n| {
            n.replica()
                .and_then(|r| r.up.exec.wal().map(|w| w.durable_lsn()))
                .is_some_and(|d| d >= commit)
        })
        .map(|n| n.id)
        .collect();
    let outside: Vec<usize> = c
        .nodes
        .iter()
        .filter(|n| view.config.member(&n.name).is_none() && n.is_up())
        .map(|n| n.id)
        .collect();
    let voters: Vec<usize> = c
        .nodes
        .iter()
        .filter(|n| n.id != p && view.config.is_voter(&n.name))
        .map(|n| n.id)
        .collect();
    let change = if let Some(&l) = learners.first() {
        MemberChange::Promote(c.nodes[l].name.clone())
    } else if let Some(&o) = outside.first() {
        let name = c.nodes[o].name.clone();
        MemberChange::Add(ConfigMember {
            id: name.clone(),
            incarnation: c.nodes[o].incarnation,
            voter: false,
            addr: name,
            http_addr: None,
        })
    } else if voters.len() + 1 > 2 {
        MemberChange::Remove(c.nodes[voters[rng.index(voters.len())]].name.clone())
    } else {
        return false;
    };
    match c.change_membership(change.clone()) {
        Ok(_) => true,
        Err(e) => {
            c.log(format!("operator change {change:?} refused: {e}"));
            false
        }
    }
}
