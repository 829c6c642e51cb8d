//! Seed 000's failure scenarios 1 to 8 at 3, 5 and 7 nodes under quorum 0, -1
//! and 2, run over the production code ([`Cluster`]), as the table
//! `walship-fault failover` prints. Scenarios 4, 6 (a replica, row `6`, or the
//! primary, row `6p`, terminated) and 7 change the membership and are driven
//! by [`super::member_scenarios`]; the rest as below.
//!
//! Each cell: a fresh cluster elects its first primary (quorum 0: the
//! operator promotes n1), a client appends every 10 ms, the scenario's fault
//! strikes, and the world runs for [`WINDOW_MS`]. If no new primary was
//! elected, the cell is *blocked*; the scenario's unblocking act follows
//! (heal the partition, restart a crashed node; quorum 0: the operator
//! promotes the most up-to-date live node with `accept_data_loss`), and a
//! new primary must follow. Then every fault heals and the members must
//! converge. Walship's expected outcome is computed from the quorum
//! arithmetic (`election_quorum`): elected iff the nodes that are up and
//! connected are at least the election quorum.

use walship_node::election::{commit_copies, election_quorum, LogPosition, Role};

use super::{Cluster, FoConfig, Violation};

/// How long a cell waits for an election after the fault (simulated ms).
pub const WINDOW_MS: u64 = 3_000;

/// The scenarios of seed 000 this table runs.
pub const SCENARIOS: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
/// The table's rows: (scenario, the terminated node is the primary). Scenario 6
/// has two: a replica terminated (`6`) and the primary (`6p`).
pub const ROWS: [(u8, bool); 9] = [
    (1, false),
    (2, false),
    (3, false),
    (4, false),
    (5, false),
    (6, false),
    (6, true),
    (7, false),
    (8, false),
];
/// Cluster sizes.
pub const SIZES: [usize; 3] = [3, 5, 7];
/// Quorum settings.
pub const QUORUMS: [i64; 3] = [0, -1, 2];

/// One cell of the table.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Scenario number (seed 000).
    pub scenario: u8,
    /// The row's label (`6p`: scenario 6 with the primary terminated).
    pub row: String,
    /// Members.
    pub nodes: usize,
    /// Quorum setting.
    pub quorum: i64,
    /// What seed 000 says.
    pub seed_outcome: &'static str,
    /// What walship did.
    pub outcome: String,
    /// Acknowledged records lost (and how many were acknowledged).
    pub lost: String,
    /// What the operator had to do.
    pub operator: String,
    /// The cell passed.
    pub pass: bool,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Broken invariants (first first).
    pub violations: Vec<Violation>,
    /// The trace's last events.
    pub trace_tail: String,
}

/// One scenario's name.
pub fn scenario_name(s: u8) -> &'static str {
    match s {
        1 => "primary crashes, replicas healthy",
        2 => "primary crashes, one replica partitioned",
        3 => "primary + one replica crash (it had receipted the latest records; others lag)",
        5 => "primary partitioned from everyone",
        8 => "primary crashes after an unmet quorum (tentative record on one replica)",
        4 => "a node's disk destroyed (back empty, new incarnation)",
        6 => "scale-down without graceful shutdown (a replica, or the primary in row 6p)",
        7 => "primary crashes + two replicas' disks destroyed",
        _ => "?",
    }
}

/// Seed 000's outcome for a row's cell (row `6p`: the terminated node is the primary).
pub fn seed_outcome_row(s: u8, primary: bool, n: usize, q: i64) -> &'static str {
    match (s, primary, q, n) {
        (6, true, 0, _) => "as scenario 1: elected (object storage); no loss",
        (6, true, -1, _) => "as scenario 1: elected (majority); no loss",
        (6, true, _, _) => "blocks until the terminated node is deregistered; no loss",
        _ => seed_outcome(s, n, q),
    }
}

/// Seed 000's outcome for a cell (abridged from its table; `N/A` where it says so).
pub fn seed_outcome(s: u8, n: usize, q: i64) -> &'static str {
    match (s, q, n) {
        (1, 0, _) => "elected (object storage); no loss",
        (1, -1, _) => "elected (majority); no loss",
        (1, _, _) => "elected after contacting all; no loss",
        (2, 0, _) => "elected from known nodes; no loss",
        (2, -1, 3) => "blocks until a 2nd node responds; no loss",
        (2, -1, _) => "elected (majority); no loss",
        (2, _, _) => "blocks until the partitioned replica recovers or is deregistered",
        (3, _, 7) => "(no 7-node row in seed)",
        (3, 0, 3) => "sole survivor elected; no loss",
        (3, 0, _) => "elected; no loss",
        (3, -1, 3) => "blocks until a crashed node restarts",
        (3, -1, _) => "elected (majority); no loss",
        (3, _, _) => "blocks until crashed nodes restart or are deregistered",
        (5, 0, _) | (5, -1, _) => "old primary drains; new one elected; no loss",
        (5, _, _) => "blocks until the old primary recovers or is deregistered",
        (8, 0, _) => "N/A",
        (4, 0, _) => "deregistered (auto or manual); no loss",
        (4, -1, _) => "primary still has the data; no loss",
        (4, _, 3) => "no loss (both replicas receipted)",
        (4, _, _) => "other receipter has it; election blocks until deregistered; no loss",
        (6, 0, _) => "auto-deregistered; no loss",
        (6, -1, _) => "auto-deregistered: N-1, quorum writes continue; no loss",
        (6, _, _) => "election blocks until deregistered; no loss",
        (7, _, 3) => "(no 3-node row in seed)",
        (7, 0, _) => "deregister destroyed; elected from remaining; no loss",
        (7, -1, 5) => "data loss possible",
        (7, -1, _) => "1 receipted replica survives; deregister: N=5; no loss",
        (7, _, _) => "data loss possible",
        (8, -1, 3) | (8, 2, _) => "B elected; adopts its tentative record",
        (8, _, _) => "B elected if in the majority, else its tentative record is overwritten",
        _ => "?",
    }
}

/// Runs the whole table with `seed` (every cell its own world).
pub fn run_table(seed: u64) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (s, primary) in ROWS {
        for n in SIZES {
            for q in QUORUMS {
                cells.push(run_row(s, primary, n, q, seed));
            }
        }
    }
    cells
}

/// Renders the table.
pub fn render(cells: &[Cell]) -> String {
    let mut out = String::from(
        "scenario | nodes | quorum | seed's outcome | walship's outcome | acknowledged data lost? | operator action | pass\n",
    );
    out.push_str("---|---|---|---|---|---|---|---\n");
    for c in cells {
        out.push_str(&format!(
            "{} | {} | {} | {} | {} | {} | {} | {}\n",
            c.row,
            c.nodes,
            c.quorum,
            c.seed_outcome,
            c.outcome,
            c.lost,
            c.operator,
            if c.pass { "pass" } else { "FAIL" }
        ));
    }
    out
}

fn new_primary(c: &Cluster, old_epoch: u64) -> Option<usize> {
    c.primary().filter(|&p| {
        c.nodes[p]
            .core
            .as_ref()
            .is_some_and(|k| k.epoch() > old_epoch)
    })
}

/// The live node with the most up-to-date log that is not a primary (the
/// operator's pick).
fn most_up_to_date(c: &Cluster) -> Option<usize> {
    c.nodes
        .iter()
        .filter(|n| n.is_up() && n.halted.is_none())
        .filter(|n| n.election_role() != Some(Role::Primary))
        // It must reach a majority (itself included) to win.
        .filter(|n| {
            let reach = (0..c.cfg.nodes)
                .filter(|&m| m == n.id || c.net.reachable(n.id, m))
                .count();
            reach >= walship_node::election::majority(c.cfg.nodes)
        })
        .max_by_key(|n| n.core.as_ref().map_or(LogPosition::ZERO, |k| k.log_head()))
        .map(|n| n.id)
}

/// Quorum 0: the operator promotes the most up-to-date live node with
/// `accept_data_loss`; true once a new primary is elected.
fn operator_promotes(
    c: &mut Cluster,
    old_epoch: u64,
    operator: &mut Vec<String>,
) -> Result<bool, String> {
    let Some(pick) = most_up_to_date(c) else {
        return Ok(false);
    };
    c.promote(pick, true)?;
    operator.push(format!("promote n{} --accept-data-loss", pick + 1));
    let t = c.now() + 1_500;
    Ok(c.run_until_cond(t, |c| new_primary(c, old_epoch).is_some()))
}

/// Runs one cell (row `s`; scenario 6's replica row).
pub fn run_cell(s: u8, n: usize, q: i64, seed: u64) -> Cell {
    run_row(s, false, n, q, seed)
}

/// Runs one cell of row `(s, primary)`.
pub fn run_row(s: u8, primary: bool, n: usize, q: i64, seed: u64) -> Cell {
    let seed_text = seed_outcome_row(s, primary, n, q);
    let mut cell = Cell {
        scenario: s,
        row: if primary {
            format!("{s}p")
        } else {
            s.to_string()
        },
        nodes: n,
        quorum: q,
        seed_outcome: seed_text,
        outcome: String::new(),
        lost: String::new(),
        operator: String::new(),
        pass: false,
        failure: None,
        violations: Vec::new(),
        trace_tail: String::new(),
    };
    if seed_text == "N/A" {
        cell.outcome = "N/A".into();
        cell.lost = "N/A".into();
        cell.operator = "N/A".into();
        cell.pass = true;
        return cell;
    }
    let cell_seed = seed
        ^ (u64::from(s) << 48)
        ^ ((n as u64) << 40)
        ^ ((q + 8) as u64) << 32
        ^ (u64::from(primary) << 56);
    if matches!(s, 4 | 6 | 7) {
        match super::member_scenarios::drive(&mut cell, primary, cell_seed) {
            Ok(failures) => {
                cell.pass = failures.is_empty();
                if !cell.pass {
                    cell.failure = Some(failures.join("; "));
                }
            }
            Err(e) => {
                cell.pass = false;
                cell.failure = Some(e.clone());
                if cell.outcome.is_empty() {
                    cell.outcome = format!("error: {e}");
                }
            }
        }
        return cell;
    }
    match drive(&mut cell, cell_seed) {
        Ok(()) => {}
        Err(e) => {
            cell.pass = false;
            cell.failure = Some(e.clone());
            if cell.outcome.is_empty() {
                cell.outcome = format!("error: {e}");
            }
        }
    }
    cell
}

fn drive(cell: &mut Cell, seed: u64) -> Result<(), String> {
    let (s, n, q) = (cell.scenario, cell.nodes, cell.quorum);
    let mut c = Cluster::new(FoConfig::new(n, q), seed)?;
    // The first primary.
    if q == 0 {
        c.promote(0, true)?;
        c.ghost.data_loss_accepted = false; // nothing was acknowledged yet
    }
    let t = c.now() + 5_000;
    if !c.run_until_cond(t, |c| c.primary().is_some() && c.converged()) {
        return Err("no first primary".into());
    }
    let p0 = c.primary().ok_or("no first primary")?;
    let old_epoch = c.nodes[p0].core.as_ref().map_or(0, |k| k.epoch());
    let eq = election_quorum(n, q);
    c.set_client(true);
    let t = c.now() + 800;
    c.run_until(t);
    let others: Vec<usize> = (0..n).filter(|&x| x != p0).collect();
    let r1 = others[0];
    // The fault; `up` = nodes up and connected to each other afterwards.
    let mut tentative: Option<(usize, u64)> = None;
    let up = match s {
        1 => {
            c.crash(p0);
            n - 1
        }
        2 => {
            c.crash(p0);
            c.isolate(r1);
            n - 2
        }
        3 => {
            // The crashed replica is one of the fewest that receipted the
            // latest records (seed: "if the crashed Replica had receipted the
            // latest committed record"): for 300 ms only `copies - 1`
            // replicas receive records, the others lag.
            let copies = commit_copies(n, q).unwrap_or(1);
            let receipters = copies.saturating_sub(1).max(1);
            for &o in &others[receipters..] {
                c.block_data(p0, o);
            }
            let t = c.now() + 300;
            c.run_until(t);
            c.crash(p0);
            c.crash(r1);
            c.heal_all();
            n - 2
        }
        5 => {
            c.isolate(p0);
            n - 1
        }
        8 => {
            c.set_client(false);
            if !c.run_until_converged(3_000) {
                return Err("did not converge before the tentative record".into());
            }
            // B (= r1) stores the record, its receipt is lost; nobody else gets it.
            c.block_data(r1, p0);
            for &o in &others[1..] {
                c.block_data(p0, o);
            }
            c.primary_append(p0, format!("tentative-{seed}").into_bytes());
            let want = c.nodes[p0]
                .primary()
                .map_or(0, |p| p.up.exec.wal().last().lsn);
            let stored = |c: &Cluster| {
                c.nodes[r1]
                    .replica()
                    .and_then(|r| r.up.exec.wal())
                    .is_some_and(|w| w.durable_lsn() >= want)
            };
            if !c.run_until_cond(c.now() + 1_000, stored) {
                return Err("B never stored the tentative record".into());
            }
            tentative = Some((r1, want));
            c.crash(p0);
            c.heal_all();
            c.set_client(true);
            n - 1
        }
        _ => return Err(format!("no scenario {s}")),
    };
    let fault_at = c.now();
    let lsn_at_fault = c.ghost.acked.keys().next_back().copied().unwrap_or(0);
    let expect_elected = eq.is_some_and(|e| up >= e);
    let t = c.now() + WINDOW_MS;
    let elected = c.run_until_cond(t, |c| new_primary(c, old_epoch).is_some());
    let mut operator: Vec<String> = Vec::new();
    let mut outcome;
    if elected {
        let p = new_primary(&c, old_epoch).ok_or("no primary")?;
        outcome = format!("n{} elected after {} ms", p + 1, c.now() - fault_at);
    } else {
        let why = match eq {
            None => "no automatic failover (quorum 0)".to_string(),
            Some(e) => format!("{up} of {n} up, election quorum {e}"),
        };
        outcome = format!("blocked ({why})");
        let mut done = false;
        if q == 0 {
            // The operator promotes the most up-to-date live node, accepting
            // the loss of what only the old primary may hold.
            done = operator_promotes(&mut c, old_epoch, &mut operator)?;
        }
        if !done {
            // The unblocking act.
            let unblock = match s {
                2 | 5 => {
                    c.heal_all();
                    "until the partition heals"
                }
                3 => {
                    c.restart(r1);
                    "until the crashed replica restarts"
                }
                _ => "until the operator promotes (a majority must vote)",
            };
            outcome.push_str(&format!(" {unblock}"));
            if q == 0 {
                if !operator_promotes(&mut c, old_epoch, &mut operator)? {
                    return Err(format!("{outcome}: operator promotion did not elect"));
                }
            } else {
                let t = c.now() + WINDOW_MS;
                if !c.run_until_cond(t, |c| new_primary(c, old_epoch).is_some()) {
                    return Err(format!("{outcome}: still no primary"));
                }
            }
        }
        let p = new_primary(&c, old_epoch).ok_or("no primary")?;
        outcome.push_str(&format!("; then n{} elected", p + 1));
    }
    // The client keeps writing through the new primary for a while.
    let t = c.now() + 600;
    c.run_until(t);
    let acked_after_election = c.ghost.acked.range(lsn_at_fault + 1..).count();
    // Heal everything; the members must converge.
    c.heal_all();
    c.restart_all();
    let converged = c.run_until_converged(6_000);
    let p = c.primary();
    if let (Some((b, lsn)), Some(p)) = (tentative, p) {
        let kept = c.nodes[p].primary().is_some_and(|pr| {
            pr.up
                .exec
                .wal()
                .with(|w| w.position_at(lsn).ok().flatten())
                .is_some_and(|pos| pos.epoch == old_epoch)
        });
        if kept {
            outcome.push_str(&format!(
                "; B=n{}'s tentative lsn {lsn} kept (commits with the new epoch's first record)",
                b + 1
            ));
        } else {
            outcome.push_str(&format!(
                "; tentative lsn {lsn} not on n{}: B=n{} halts",
                p + 1,
                b + 1
            ));
        }
    }
    let mut halted = Vec::new();
    for node in &c.nodes {
        if let Some(h) = &node.halted {
            halted.push(format!("n{} {}", node.id + 1, h.reason.as_str()));
            operator.push(format!("walship-recover rejoin n{}", node.id + 1));
        }
    }
    if !halted.is_empty() {
        outcome.push_str(&format!("; halted: {}", halted.join(", ")));
    }
    let acked = c.ghost.acked.len();
    let lost = c.ghost.lost_acked.len();
    if acked_after_election == 0 {
        outcome.push_str("; writes wait until the missing nodes are back");
    } else {
        outcome.push_str(&format!(
            "; writes resume ({acked_after_election} acked in 600 ms)"
        ));
    }
    cell.lost = if lost > 0 {
        format!("yes: {lost} of {acked} (accepted)")
    } else {
        format!("no (0 of {acked})")
    };
    if operator.is_empty() {
        operator.push("none".into());
    }
    cell.operator = operator.join("; ");
    cell.outcome = outcome;
    cell.violations = c.ghost.violations.clone();
    cell.trace_tail = c.trace.render_tail();
    let mut failures = Vec::new();
    if let Some(v) = c.ghost.violations.first() {
        failures.push(format!("seed {seed}: {v}"));
    }
    if elected != expect_elected {
        failures.push(format!(
            "expected {} (election quorum {eq:?}, {up} up)",
            if expect_elected {
                "an election"
            } else {
                "a block"
            }
        ));
    }
    if !converged {
        failures.push("did not converge after healing".into());
    }
    if acked == 0 {
        failures.push("nothing was acknowledged".into());
    }
    if q != 0 && lost > 0 {
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
    if c.nodes
        .iter()
        .filter(|x| x.election_role() == Some(Role::Primary))
        .count()
        > 1
    {
        failures.push("two primaries after convergence".into());
    }
    cell.pass = failures.is_empty();
    if !cell.pass {
        cell.failure = Some(failures.join("; "));
    }
    Ok(())
}

/// FM-F.4 (spec/failure-matrix.md): a member whose disk lied about fsync lost
/// synced records it had acknowledged in receipts (below its persisted
/// acknowledged mark, at its persisted commit watermark, so the commit
/// watermark alone does not notice). Restarted, it neither votes nor leads
/// until it re-fetched past the mark: the other survivor, which lacks the
/// acknowledged records too, cannot be elected with its vote, and nothing
/// acknowledged is lost. Planting `required_lsn` = the commit watermark
/// alone (the rule before the mark) makes the two of them elect a primary
/// without the acknowledged records. Returns what happened, or what broke.
pub fn fm_f_4(seed: u64) -> Result<String, String> {
    let mut c = Cluster::new(FoConfig::new(3, -1), seed)
        .map_err(|e| format!("seed {seed}: cluster: {e}"))?;
    if !(c.run_until_cond(5_000, |c| c.primary().is_some())) {
        return Err(format!("seed {seed}: a first primary"));
    }
    let p = c
        .primary()
        .ok_or_else(|| format!("seed {seed}: no primary"))?;
    let others: Vec<usize> = (0..3).filter(|&n| n != p).collect();
    let (r, o) = (others[0], others[1]);
    // o falls behind: every record is committed on p and r alone.
    c.isolate(o);
    c.set_client(true);
    let t = c.now();
    c.run_until(t + 500);
    // Wait for a moment where r's persisted mark is above its persisted commit
    // watermark with an acknowledged record in between (the window a lying disk can
    // hit: receipts are sent before the watermark that counts them comes back).
    let t = c.now();
    let window = c.run_until_cond(t + 20_000, |c| {
        let (acked, commit) = c.persisted_marks(r);
        acked > commit && c.ghost.acked.range(commit + 1..=acked).next().is_some()
    });
    if !(window) {
        return Err(format!(
            "seed {seed}: r's mark never got ahead of its commit watermark"
        ));
    }
    let (acked, commit) = c.persisted_marks(r);
    c.crash(p);
    c.crash(r);
    c.set_client(false);
    c.lose_synced_suffix(r, commit)
        .map_err(|e| format!("seed {seed}: lying disk: {e}"))?;
    c.heal_all();
    let vote_of_r = |c: &Cluster| {
        walship_node::election::VoteFile::new(
            c.nodes[r].storage.clone(),
            &crate::world::state_dir(),
        )
        .load()
        .map_err(|e| format!("r's vote file: {e}"))
    };
    let vote_before = vote_of_r(&c)?;
    c.restart(r);
    let r_name = c.nodes[r].name.clone();
    if c.nodes[r].required_lsn != acked {
        return Err(format!(
            "seed {seed}: required = the mark: {} vs {acked}",
            c.nodes[r].required_lsn
        ));
    }
    // Only r and o run, and neither may lead: r is ineligible and o alone is no majority.
    let t = c.now();
    let led = c.run_until_cond(t + 5_000, |c| c.primary().is_some());
    if led {
        return Err(format!("seed {seed}: a primary was elected while {r_name} lacked lsn {}..={acked} it acknowledged (leader: n{})\n{}", commit + 1, c.primary().map_or(0, |n| n + 1), c.trace.render_tail()));
    }
    // It voted for nobody in any later epoch (it may only have learned of them).
    let vote_after = vote_of_r(&c)?;
    if !(vote_after == vote_before || vote_after.voted_for.is_none()) {
        return Err(format!(
            "seed {seed}: r voted while ineligible: {vote_before:?} -> {vote_after:?}"
        ));
    }
    let now = c.now();
    let core = c.nodes[r]
        .core
        .as_ref()
        .ok_or_else(|| format!("seed {seed}: r does not run"))?;
    if core.status(now).eligible {
        return Err(format!("seed {seed}: r stays ineligible"));
    }
    if core.role() == Role::Primary {
        return Err(format!("seed {seed}: r leads while ineligible"));
    }
    if !(c.ghost.violations.is_empty()) {
        return Err(format!(
            "seed {seed}: {}\n{}",
            c.ghost.violations[0],
            c.trace.render_tail()
        ));
    }
    // The old primary comes back: it is elected, r re-fetches past its mark and only
    // then becomes eligible again.
    c.restart(p);
    if !(c.run_until_converged(20_000)) {
        return Err(format!(
            "seed {seed}: converged after p's restart\n{}",
            c.trace.render_tail()
        ));
    }
    let t = c.now();
    let eligible = c.run_until_cond(t + 5_000, |c| {
        let now = c.now();
        c.nodes[r]
            .core
            .as_ref()
            .is_some_and(|k| k.status(now).eligible)
    });
    if !(eligible) {
        return Err(format!("seed {seed}: r eligible once it re-fetched"));
    }
    let durable = c.nodes[r]
        .replica()
        .and_then(|x| x.up.exec.wal().map(|w| w.durable_lsn()))
        .unwrap_or(0);
    if durable < acked {
        return Err(format!(
            "seed {seed}: r holds its mark again ({durable} >= {acked})"
        ));
    }
    if !(c.ghost.violations.is_empty()) {
        return Err(format!(
            "seed {seed}: {}\n{}",
            c.ghost.violations[0],
            c.trace.render_tail()
        ));
    }
    Ok(format!(
        "seed {seed}: n{} restarted below its mark {acked} (commit {commit}): no primary without it; eligible again at durable {durable}",
        r + 1
    ))
}
