//! FM-F.*: the cells of seed 000's scenario table where walship's outcome
//! differs from the seed's, run over the failover world
//! ([`crate::failover::scenarios`]).

use super::{ensure, R};
use crate::failover::scenarios::{run_cell, Cell};

fn cell(s: u8, n: usize, q: i64) -> Result<Cell, String> {
    let c = run_cell(s, n, q, 0);
    ensure(c.pass, || {
        format!(
            "scenario {s} nodes {n} quorum {q}: {}",
            c.failure.as_deref().unwrap_or("?")
        )
    })?;
    Ok(c)
}

/// FM-F.1: quorum 0 has no automatic failover; the operator's promotion
/// names the loss and still needs a majority.
pub(super) fn fm_f_1() -> R {
    let mut seen = Vec::new();
    for (s, n) in [(1, 3), (2, 3), (3, 3), (5, 3), (2, 5)] {
        let c = cell(s, n, 0)?;
        ensure(
            c.outcome.starts_with("blocked (no automatic failover"),
            || format!("scenario {s} nodes {n}: {}", c.outcome),
        )?;
        ensure(c.operator.contains("--accept-data-loss"), || {
            format!("scenario {s} nodes {n}: operator {}", c.operator)
        })?;
        seen.push(format!("S{s}/{n}: {} [{}]", c.operator, c.lost));
    }
    // A majority even for a promotion: 1 of 3 left cannot be promoted alone.
    let c = cell(2, 3, 0)?;
    ensure(c.outcome.contains("until the partition heals"), || {
        format!("scenario 2 nodes 3: {}", c.outcome)
    })?;
    Ok(seen.join("; "))
}

/// FM-F.2: static k elects with max(floor(N/2)+1, N-k) votes, without
/// contacting every node, and loses no acknowledged record.
pub(super) fn fm_f_2() -> R {
    let mut seen = Vec::new();
    for (s, n) in [(2, 5), (2, 7), (3, 5), (3, 7), (5, 3), (5, 5), (5, 7)] {
        let c = cell(s, n, 2)?;
        ensure(c.outcome.contains("elected after"), || {
            format!("scenario {s} nodes {n}: {}", c.outcome)
        })?;
        ensure(c.lost.starts_with("no"), || {
            format!("scenario {s} nodes {n}: lost {}", c.lost)
        })?;
        seen.push(format!("S{s}/{n}: {}", c.outcome));
    }
    Ok(seen.join("; "))
}

/// FM-F.3: a node holding records the new primary lacks (the old primary's
/// unacknowledged tail, scenario 8's tentative record on B when B is not
/// elected) halts `divergence` instead of being overwritten; nothing
/// acknowledged is lost.
pub(super) fn fm_f_3() -> R {
    let mut seen = Vec::new();
    let mut halts = 0;
    for (s, n, q) in [(5, 3, -1), (5, 5, 2), (8, 5, -1), (8, 5, 2), (8, 3, -1)] {
        let c = cell(s, n, q)?;
        ensure(c.lost.starts_with("no"), || {
            format!("scenario {s} nodes {n} quorum {q}: lost {}", c.lost)
        })?;
        if c.outcome.contains("divergence") {
            halts += 1;
            ensure(c.operator.contains("walship-recover rejoin"), || {
                format!("scenario {s}: operator {}", c.operator)
            })?;
        }
        seen.push(format!("S{s}/{n}/q{q}: {}", c.outcome));
    }
    ensure(halts >= 3, || {
        format!("only {halts} cells halted: {seen:?}")
    })?;
    Ok(seen.join("; "))
}

/// FM-F.5: a new cluster forms only when every member is up and empty
/// (spec/election.md §2.10): with one of 3, 5 or 7 members down from the
/// start nobody leads, however long it waits; once it is up, one primary
/// is elected and every member follows it.
pub(super) fn fm_f_5() -> R {
    use crate::failover::{Cluster, FoConfig};
    let mut seen = Vec::new();
    for n in [3, 5, 7] {
        let mut c = Cluster::new(FoConfig::new(n, -1), 0)?;
        let missing = n - 1;
        c.crash(missing);
        let formed = c.run_until_cond(20 * c.cfg.election_timeout_ms, |c| c.primary().is_some());
        ensure(!formed, || {
            format!(
                "{n} nodes: n{} leads a cluster n{n} never joined",
                c.primary().map_or(0, |p| p + 1)
            )
        })?;
        let waited = c.now();
        c.restart(missing);
        let t = c.now();
        let formed = c.run_until_cond(t + 20 * c.cfg.election_timeout_ms, |c| {
            c.primary().is_some()
        });
        ensure(formed, || {
            format!("{n} nodes: no primary once every member is up")
        })?;
        ensure(c.run_until_converged(10_000), || {
            format!("{n} nodes: members did not converge on the new cluster")
        })?;
        ensure(c.ghost.violations.is_empty(), || {
            format!("{n} nodes: {}", c.ghost.violations[0])
        })?;
        seen.push(format!(
            "{n} nodes: none led for {waited} ms with n{n} down; n{} elected {} ms after it came up",
            c.primary().map_or(0, |p| p + 1),
            c.now() - t
        ));
    }
    Ok(seen.join("; "))
}
