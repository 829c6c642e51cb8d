//! Raft's figure 8, step by step, over the production election core,
//! primary and replica executors (3 nodes, majority quorum):
//!
//! 1. n1 leads epoch 1; every node holds its `EpochStart` (lsn 1, committed)
//!    and the bootstrap configuration record after it (lsn 2, committed; the
//!    lsns below are the figure's, each one more in the run);
//! 2. n1, cut off, appends record `a` (lsn 2, epoch 1): on n1 only;
//! 3. n3 wins epoch 2 with n2's vote and is cut off at once: its
//!    `EpochStart` (lsn 2, epoch 2) is on n3 only;
//! 4. n1 wins epoch 3 with n2's vote and ships `a` to n2 — `a` is now on a
//!    majority, and n1 receives n2's receipt for lsn 2, but its own
//!    `EpochStart` (lsn 3) has not reached n2 when n1 is cut off. `a` must
//!    NOT commit: it is of an older epoch than its primary's;
//! 5. n3 wins epoch 4 with n2's vote (n3's log ends in epoch 2, n2's in
//!    epoch 1) and leads without `a`.
//!
//! Had `a` been committed at step 4 (counting receipts for an older epoch's
//! record directly), step 5 loses a committed record: the invariants of
//! [`super::check`] report it.

use walship_wal::{Lsn, Position};

use super::{Cluster, FoConfig, Violation};
use crate::net::NetFaults;

/// What the figure 8 schedule did.
#[derive(Debug, Clone)]
pub struct Figure8 {
    /// Every `BecomePrimary`: (epoch, node index).
    pub primaries: Vec<(u64, usize)>,
    /// n1's commit watermark once n2's receipt for `a` arrived (step 4).
    pub n1_commit_after_receipt: Lsn,
    /// Where record `a` is: 2 in the figure; one more per record of epoch 1
    /// before it (the bootstrap configuration record the primary writes once
    /// every member connected, spec/membership.md).
    pub a_lsn: Lsn,
    /// n2's log at step 4: positions of `a_lsn - 1` and `a_lsn`, and whether
    /// `a_lsn + 1` is there.
    pub n2_after_step4: (Option<Position>, Option<Position>, bool),
    /// n2's halt at the end, if any (`reason: detail`).
    pub n2_halt: Option<String>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// The trace's last events.
    pub trace_tail: String,
}

fn promote_until_primary(c: &mut Cluster, n: usize, budget_ms: u64) -> Result<u64, String> {
    let deadline = c.now() + budget_ms;
    while c.now() < deadline {
        let before = c.max_epoch();
        if let Err(e) = c.promote(n, false) {
            c.log(format!("promote n{} refused: {e}", n + 1));
        }
        let until = (c.now() + 3 * c.cfg.election_timeout_ms).min(deadline);
        if c.run_until_cond(until, |c| c.primary() == Some(n)) {
            return Ok(c.nodes[n].core.as_ref().map_or(0, |k| k.epoch()));
        }
        c.log(format!(
            "n{} did not win (epochs {before} -> {}); promoting again",
            n + 1,
            c.max_epoch()
        ));
    }
    Err(format!(
        "n{} did not become primary in {budget_ms} ms",
        n + 1
    ))
}

/// Runs the schedule with `seed`; an error names the step the schedule
/// could not take, with the trace's last events.
pub fn run(seed: u64) -> Result<Figure8, String> {
    let mut trace = String::new();
    run_inner(seed, &mut trace).map_err(|e| format!("{e}\n{trace}"))
}

fn run_inner(seed: u64, trace_out: &mut String) -> Result<Figure8, String> {
    let mut cfg = FoConfig::new(3, -1);
    cfg.net.faults = NetFaults::none();
    cfg.elect_delay_ms = (1, 1);
    cfg.sync_delay_ms = (1, 1);
    // One record per batch and in flight: `a` goes alone, the `EpochStart`
    // after it only once `a`'s receipt arrived.
    cfg.window.max_batch_bytes = 64;
    cfg.window.max_inflight_bytes = 64;
    cfg.window.max_inflight_records = 1;
    let mut c = Cluster::new(cfg, seed)?;
    let r = schedule(&mut c);
    if r.is_err() {
        *trace_out = c.trace.render_tail();
    }
    r
}

fn schedule(c: &mut Cluster) -> Result<Figure8, String> {
    let c = &mut *c;
    let (n1, n2, n3) = (0, 1, 2);
    for n in 0..3 {
        c.pause(n);
    }
    // 1.
    promote_until_primary(c, n1, 2_000)?;
    if !c.run_until_config_committed(1, 3_000) || !c.run_until_converged(3_000) {
        return Err("step 1: the cluster did not converge under n1".into());
    }
    // Epoch 1 holds its EpochStart and the bootstrap configuration record.
    let a_lsn = c.nodes[n1]
        .primary()
        .map_or(0, |p| p.up.exec.wal().last().lsn)
        + 1;
    // 2.
    c.isolate(n1);
    c.primary_append(n1, b"figure-8 record a".to_vec());
    let t = c.now() + 20;
    c.run_until(t);
    // 3.
    c.heal(n2, n3);
    let deadline = c.now() + 2_000;
    loop {
        if c.now() >= deadline {
            return Err("step 3: n3 did not win epoch 2".into());
        }
        let _ = c.promote(n3, false);
        if c.run_until_cond(c.now() + 600, |c| c.primary() == Some(n3)) {
            break;
        }
    }
    c.isolate(n3);
    // 4.
    c.heal(n1, n2);
    promote_until_primary(c, n1, 3_000)?;
    let got_a = |c: &Cluster| {
        c.nodes[n2]
            .replica()
            .and_then(|r| r.up.exec.wal())
            .is_some_and(|w| w.durable_lsn() >= a_lsn)
    };
    if !c.run_until_cond(c.now() + 2_000, got_a) {
        return Err("step 4: n2 never stored record a".into());
    }
    // The receipt is on its way (1 ms); the EpochStart of epoch 3 leaves n1
    // when it arrives, and is cut off with n1.
    let t = c.now() + 1;
    c.run_until(t);
    let n1_commit_after_receipt = c.nodes[n1].primary().map_or(0, |p| p.up.exec.commit_lsn());
    c.isolate(n1);
    let t = c.now() + 5;
    c.run_until(t);
    let n2_after_step4 =
        c.nodes[n2]
            .replica()
            .and_then(|r| r.up.exec.wal())
            .map_or((None, None, false), |w| {
                (
                    w.position_at(a_lsn - 1).ok().flatten(),
                    w.position_at(a_lsn).ok().flatten(),
                    w.last().lsn > a_lsn,
                )
            });
    // 5.
    c.heal(n2, n3);
    promote_until_primary(c, n3, 3_000)?;
    let t = c.now() + 1_000;
    c.run_until(t);
    let n2_halt = c.nodes[n2]
        .halted
        .as_ref()
        .map(|h| format!("{}: {}", h.reason.as_str(), h.detail));
    Ok(Figure8 {
        primaries: c.ghost.primaries.iter().map(|(&e, &n)| (e, n)).collect(),
        n1_commit_after_receipt,
        a_lsn,
        n2_after_step4,
        n2_halt,
        violations: c.ghost.violations.clone(),
        trace_tail: c.trace.render_tail(),
    })
}
