//! Random failover runs: one seed decides the cluster (3, 5 or 7 nodes,
//! quorum -1, 1 or 2), the election message loss, and a schedule of
//! crashes, restarts, isolations, pairwise partitions, lagging replicas (the
//! primary's records stop reaching them) and heals while a client appends. The invariants of [`super::check`] are judged after every step;
//! then every fault heals and the members must converge within bounded
//! simulated time (a node halted `divergence` — it holds records no primary
//! acknowledged — waits for the operator's `walship-recover rejoin` and is
//! left out).

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
        match rng.index(7) {
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
    // Halted nodes can leave too few members for the commit quorum: then
    // not converging waits for the operator, it is not a liveness bug.
    let live = nodes - out.halted;
    let copies = walship_node::election::commit_copies(nodes, quorum).unwrap_or(nodes);
    let eq = walship_node::election::election_quorum(nodes, quorum).unwrap_or(nodes);
    if !out.converged && live >= copies.max(eq) {
        failures.push(format!(
            "no convergence within 10 s after healing ({live} live, {} halted)",
            out.halted
        ));
    }
    if !failures.is_empty() {
        out.failure = Some(failures.join("; "));
        out.trace_tail = c.trace.render_tail();
    }
    out
}
