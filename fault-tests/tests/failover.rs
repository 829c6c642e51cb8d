//! Automatic failover over the production election core and executors
//! (`walship_fault::failover`): seed 000's scenario table, Raft's figure 8
//! schedule, and random failover runs.
//!
//! `WALSHIP_FAILOVER_SEEDS=500 cargo test -p walship-fault --test failover`
//! runs more random seeds (default 30).

use walship_fault::failover::{figure8, random, scenarios};

#[test]
fn seed_000_failover_table_passes_every_cell() {
    let cells = scenarios::run_table(0);
    let table = scenarios::render(&cells);
    eprintln!("{table}");
    assert_eq!(cells.len(), 81);
    let failed: Vec<String> = cells
        .iter()
        .filter(|c| !c.pass)
        .map(|c| {
            format!(
                "scenario {} nodes {} quorum {}: {}",
                c.scenario,
                c.nodes,
                c.quorum,
                c.failure.as_deref().unwrap_or("?")
            )
        })
        .collect();
    assert!(failed.is_empty(), "failed cells:\n{}", failed.join("\n"));
}

#[test]
fn figure_8_schedule_commits_no_older_epoch_record_and_loses_nothing() {
    for seed in 0..3 {
        let f = figure8::run(seed).unwrap_or_else(|e| panic!("seed {seed}: schedule: {e}"));
        assert!(
            f.violations.is_empty(),
            "seed {seed}: {}\n{}",
            f.violations[0],
            f.trace_tail
        );
        // The schedule happened as in the figure.
        let epochs: Vec<(u64, usize)> = f.primaries.clone();
        assert!(
            epochs.iter().any(|&(e, n)| n == 0 && e >= 3)
                && epochs.iter().any(|&(e, n)| n == 2 && e >= 4),
            "seed {seed}: primaries {epochs:?}"
        );
        let (lsn1, lsn2, has3) = f.n2_after_step4;
        assert!(lsn1.is_some(), "seed {seed}: n2 holds the record before a");
        assert_eq!(
            lsn2.map(|p| p.epoch),
            Some(1),
            "seed {seed}: n2 holds record a (epoch 1) at lsn {}",
            f.a_lsn
        );
        assert!(
            !has3,
            "seed {seed}: n1's EpochStart of epoch 3 must not reach n2"
        );
        // `a` sits on a majority (n1, n2) under epoch 3: it must not commit.
        assert!(
            f.n1_commit_after_receipt < f.a_lsn,
            "seed {seed}: n1 committed lsn {} with an epoch-1 record on a majority",
            f.n1_commit_after_receipt
        );
        // n2 holds `a`, which n3 (epoch 4) lacks: it halts, never rewritten silently.
        assert!(
            f.n2_halt
                .as_deref()
                .is_some_and(|h| h.starts_with("divergence")),
            "seed {seed}: n2 halt {:?}",
            f.n2_halt
        );
    }
}

#[test]
fn random_failover_runs_keep_every_invariant_and_converge() {
    let seeds: u64 = std::env::var("WALSHIP_FAILOVER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut failed = Vec::new();
    let (mut elections, mut acked, mut halted) = (0, 0, 0);
    for seed in 0..seeds {
        let r = random::run(seed);
        elections += r.elections;
        acked += r.acked;
        halted += r.halted;
        if let Some(f) = &r.failure {
            failed.push(format!("seed {seed}: {f}\n{}", r.trace_tail));
        }
    }
    eprintln!(
        "failover runs: {seeds}, elections {elections}, acknowledged {acked}, halted divergence {halted}, failed {}",
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// FM-F.4: a member whose disk lied about fsync lost synced records it had
/// acknowledged in receipts (below its persisted acknowledged mark, at its persisted
/// commit watermark, so the commit watermark alone does not notice). Restarted, it
/// neither votes nor leads until it re-fetched past the mark: the other survivor, which
/// lacks the acknowledged records too, cannot be elected with its vote, and nothing
/// acknowledged is lost. Planting `required_lsn` = the commit watermark alone (the rule
/// before the mark) makes the two of them elect a primary without the acknowledged
/// records: the invariant "every acknowledged or committed record is in every later
/// primary's log" fails.
#[test]
fn fm_f_4_member_that_lost_acknowledged_records_neither_votes_nor_leads_until_it_refetched_them() {
    for seed in 0..3u64 {
        walship_fault::failover::scenarios::fm_f_4(seed).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// FM-F.6: a membership change under crashes (a destroyed disk demoted by the
/// primary, caught up, promoted while another voter lags, the primary crashing with
/// the promotion pending) commits only under the old and the new voters and loses
/// nothing. Planting `ConfigLog::commit_configs` = the newest configuration alone
/// makes the checker's recomputed commit quorums fail.
#[test]
fn fm_f_6_membership_change_under_crashes_over_several_seeds() {
    for seed in 0..3u64 {
        let r = walship_fault::failover::member_scenarios::fm_f_6(seed)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{r}");
    }
}

/// FM-X.15 extended to votes (seed 000 scenario 7): the primary crashes and two
/// replicas' disks are destroyed; they come back empty with new incarnations. Their
/// votes do not count: with 3 members nobody is elected even once the old primary is
/// back (a forced recovery follows); with 5 members under `k = 2` only the old
/// primary's restart unblocks (force-quorum is refused: two voters cannot hold
/// `k + 1` copies). Delivering election messages without the sender's incarnation
/// (`on_message` for `on_message_from`) elects with their votes.
#[test]
fn fm_x_15_votes_of_destroyed_disks_do_not_count_seed_000_scenario_7() {
    for (n, q) in [(3, -1), (3, 2), (5, 2), (5, -1)] {
        let c = scenarios::run_row(7, false, n, q, 0);
        assert!(
            c.pass,
            "nodes {n} quorum {q}: {}\n{}",
            c.failure.as_deref().unwrap_or("?"),
            c.trace_tail
        );
        assert!(
            c.outcome.contains("their votes do not count"),
            "nodes {n} quorum {q}: {}",
            c.outcome
        );
        if n == 3 {
            assert!(
                c.outcome.contains("back (1 of 3 voters count)"),
                "nodes {n} quorum {q}: {}",
                c.outcome
            );
        }
    }
}

/// Seed 000 scenario 7 with the operator's `walship ctl force-quorum` run in the world
/// where the cluster stays blocked: refused without `--accept-data-loss` (the plan says a
/// loss is possible); with it, the most up to date survivor is elected among the
/// survivors, its primary role writes the forced configuration (the survivors are its
/// voters), the cluster commits again, and the acknowledged records it lost, measured on
/// its log, all lie above its log end. With 5 members the survivors lack the latest
/// records (only the old primary and the destroyed replicas held them): the loss is
/// real. Under static `k = 2` with fewer than `k + 1` survivors the force is refused.
#[test]
fn seed_000_scenario_7_forced_recovery_loses_only_what_its_plan_allowed() {
    for (n, q) in [(3, 0), (3, -1), (5, 0), (5, -1), (7, 2)] {
        let c = scenarios::run_row(7, false, n, q, 0);
        let cell = format!("nodes {n} quorum {q}: {} | {}", c.outcome, c.lost);
        assert!(
            c.pass,
            "{cell}: {}\n{}",
            c.failure.as_deref().unwrap_or("?"),
            c.trace_tail
        );
        assert!(
            c.outcome
                .contains("force-quorum without --accept-data-loss refused"),
            "{cell}"
        );
        assert!(
            c.outcome.contains("with forced configuration generation"),
            "{cell}"
        );
        assert!(
            c.lost.contains("as the plan said (may lose: true"),
            "{cell}"
        );
        if n > 3 && q != 0 {
            assert!(c.lost.starts_with("yes: "), "{cell}");
            assert!(!c.lost.contains("measured 0 of"), "{cell}");
        }
    }
    for (n, q) in [(3, 2), (5, 2)] {
        let c = scenarios::run_row(7, false, n, q, 0);
        assert!(c.pass, "nodes {n} quorum {q}: {:?}", c.failure);
        assert!(
            c.outcome
                .contains("the forced configuration would never commit"),
            "nodes {n} quorum {q}: {}",
            c.outcome
        );
    }
}
