//! Failure-matrix conformance: one scenario per ID of
//! `spec/failure-matrix.md`, each running the production node executors (the cores, the WAL) over the
//! simulated disk, network and clock, and comparing what happened with the
//! row's required outcome.

use std::fmt::Write as _;

/// The spec file compiled into the binary.
pub const SPEC: &str = include_str!("../../spec/failure-matrix.md");

/// One row of the spec table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRow {
    /// Stable ID, e.g. `FM-6.2`.
    pub id: String,
    /// The failure, as written.
    pub failure: String,
    /// The required outcome, as written.
    pub required: String,
    /// The Test cell.
    pub test: String,
}

/// Parses every `| FM-... |` table row of the spec.
pub fn parse_spec(text: &str) -> Vec<SpecRow> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("| FM-"))
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            if cells.len() < 5 {
                return None;
            }
            Some(SpecRow {
                id: cells[0].to_string(),
                failure: cells[1].to_string(),
                required: cells[3].to_string(),
                test: cells[4].to_string(),
            })
        })
        .collect()
}

/// The result of one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The required outcome was observed.
    Pass(String),
    /// Something else was observed.
    Fail(String),
    /// The scenario ran, but a feature the row needs does not exist yet; counts as a failure.
    Missing {
        /// What is missing.
        feature: &'static str,
        /// What was observed.
        observed: String,
    },
}

impl Verdict {
    /// True only for [`Verdict::Pass`].
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass(_))
    }
    /// What was observed.
    pub fn observed(&self) -> &str {
        match self {
            Verdict::Pass(s) | Verdict::Fail(s) | Verdict::Missing { observed: s, .. } => s,
        }
    }
}

/// A scenario for one spec ID.
pub struct Scenario {
    /// The spec ID it proves.
    pub id: &'static str,
    /// Name of the test function that runs it in `cargo test`.
    pub test: &'static str,
    /// Runs it.
    pub run: fn() -> Verdict,
}

type R = Result<String, String>;

fn verdict(r: R) -> Verdict {
    match r {
        Ok(s) => Verdict::Pass(s),
        Err(s) => Verdict::Fail(s),
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

mod crash;
mod cross;
mod failover;
mod snapshot;
mod stream;
mod support;

pub use self::snapshot::snapshot_world;
use self::{crash::*, cross::*, failover::*, snapshot::*, stream::*};

/// Every scenario, in spec order.
pub fn scenarios() -> Vec<Scenario> {
    macro_rules! sc {
        ($id:literal, $test:literal, $f:expr) => {
            Scenario {
                id: $id,
                test: $test,
                run: $f,
            }
        };
    }
    vec![
        sc!(
            "FM-3.1",
            "fm_3_1_primary_crash_before_sync_record_never_exists",
            || verdict(fm_3_1())
        ),
        sc!(
            "FM-3.2",
            "fm_3_2_primary_crash_after_sync_record_survives_and_ships",
            || verdict(fm_3_2())
        ),
        sc!(
            "FM-3.3",
            "fm_3_3_primary_crash_mid_frame_ends_session_no_halt",
            || verdict(fm_3_3())
        ),
        sc!(
            "FM-4.1",
            "fm_4_1_replica_crash_before_sync_refetches_no_halt",
            || verdict(fm_4_1())
        ),
        sc!(
            "FM-4.2",
            "fm_4_2_replica_crash_before_apply_replays_in_order",
            || verdict(fm_4_2())
        ),
        sc!(
            "FM-4.3",
            "fm_4_3_replica_crash_during_snapshot_install_keeps_prior_state",
            || verdict(fm_4_3())
        ),
        sc!(
            "FM-5.1",
            "fm_5_1_partition_ends_session_replica_frozen_resumes_after_heal",
            || verdict(fm_5_1())
        ),
        sc!(
            "FM-5.2",
            "fm_5_2_duplicated_or_reordered_record_halts",
            || verdict(fm_5_2())
        ),
        sc!("FM-6.1", "fm_6_1_corrupted_record_halts_checksum", || {
            verdict(fm_6_1())
        }),
        sc!("FM-6.2", "fm_6_2_gap_in_stream_halts_replica", || verdict(
            fm_6_2()
        )),
        sc!(
            "FM-7.1",
            "fm_7_1_invalid_snapshot_halts_snapshot_invalid",
            || verdict(fm_7_1())
        ),
        sc!("FM-7.2", "fm_7_2_snapshot_boundary_mismatch_halts", || {
            verdict(fm_7_2())
        }),
        sc!(
            "FM-8.1",
            "fm_8_1_diverged_replica_halts_divergence_log_kept",
            || verdict(fm_8_1())
        ),
        sc!(
            "FM-9.1",
            "fm_9_1_replica_crash_while_partitioned_recovers_and_resumes",
            || verdict(fm_9_1())
        ),
        sc!(
            "FM-9.2",
            "fm_9_2_crash_during_recovery_recovers_identically",
            || verdict(fm_9_2())
        ),
        sc!("FM-10.1", "fm_10_1_tentative_records_never_applied", || {
            verdict(fm_10_1())
        }),
        sc!("FM-10.2", "fm_10_2_applied_order_is_dense", || verdict(
            fm_10_2()
        )),
        sc!("FM-10.3", "fm_10_3_divergence_never_healed", || verdict(
            fm_10_3()
        )),
        sc!("FM-10.4", "fm_10_4_no_implicit_authority", || verdict(
            fm_10_4()
        )),
        sc!("FM-10.5", "fm_10_5_no_mixed_snapshot_and_wal", || verdict(
            fm_10_5()
        )),
        sc!("FM-11.1", "fm_11_1_same_seed_same_trace_hash", || verdict(
            fm_11_1()
        )),
        sc!("FM-11.2", "fm_11_2_halt_independent_of_timing", || verdict(
            fm_11_2()
        )),
        sc!(
            "FM-11.3",
            "fm_11_3_restart_is_function_of_durable_state",
            || verdict(fm_11_3())
        ),
        sc!("FM-X.1", "fm_x_1_transport_noise_never_halts", || verdict(
            fm_x_1()
        )),
        sc!(
            "FM-X.2",
            "fm_x_2_stale_primary_is_refused_and_fenced",
            || { verdict(fm_x_2()) }
        ),
        sc!("FM-X.3", "fm_x_3_epoch_regression_halts", || verdict(
            fm_x_3()
        )),
        sc!("FM-X.4", "fm_x_4_replica_fsync_failure_stops_node", || {
            verdict(fm_x_4())
        }),
        sc!("FM-X.5", "fm_x_5_primary_fsync_failure_stops_node", || {
            verdict(fm_x_5())
        }),
        sc!("FM-X.6", "fm_x_6_local_corruption_halts", || verdict(
            fm_x_6()
        )),
        sc!("FM-X.7", "fm_x_7_torn_tail_cut_keeps_synced", || verdict(
            fm_x_7()
        )),
        sc!(
            "FM-X.8",
            "fm_x_8_session_end_mid_snapshot_restarts_transfer",
            || verdict(fm_x_8())
        ),
        sc!("FM-X.9", "fm_x_9_non_member_cannot_cause_halt", || verdict(
            fm_x_9()
        )),
        sc!(
            "FM-X.10",
            "fm_x_10_tentative_conflict_after_failover_halts",
            || verdict(fm_x_10())
        ),
        sc!(
            "FM-X.11",
            "fm_x_11_acknowledged_commits_survive_minority_crash",
            || verdict(fm_x_11())
        ),
        sc!("FM-X.12", "fm_x_12_enospc_stops_node_no_halt", || verdict(
            fm_x_12()
        )),
        sc!("FM-X.14", "fm_x_14_malformed_batch_halts", || verdict(
            fm_x_14()
        )),
        sc!(
            "FM-X.16",
            "fm_x_16_primary_disk_loss_halts_replicas_never_overwrites",
            || verdict(fm_x_16())
        ),
        sc!(
            "FM-X.15",
            "fm_x_15_replaced_replica_disk_does_not_count_old_receipts",
            || verdict(fm_x_15())
        ),
        sc!(
            "FM-X.13",
            "fm_x_13_far_behind_replica_gets_snapshot",
            || verdict(fm_x_13())
        ),
        sc!(
            "FM-F.1",
            "fm_f_1_quorum_0_fails_over_only_by_operator_promotion_naming_the_loss",
            || verdict(fm_f_1())
        ),
        sc!(
            "FM-F.2",
            "fm_f_2_static_k_elects_with_n_minus_k_votes_without_contacting_all",
            || verdict(fm_f_2())
        ),
        sc!(
            "FM-F.3",
            "fm_f_3_a_node_holding_unacknowledged_records_the_winner_lacks_halts_divergence",
            || verdict(fm_f_3())
        ),
        sc!(
            "FM-F.4",
            "fm_f_4_member_that_lost_acknowledged_records_neither_votes_nor_leads_until_it_refetched_them",
            || verdict(crate::failover::scenarios::fm_f_4(0))
        ),
        sc!(
            "FM-F.5",
            "fm_f_5_a_new_cluster_forms_only_with_every_member_up_and_empty",
            || verdict(fm_f_5())
        ),
        sc!(
            "FM-F.6",
            "fm_f_6_a_membership_change_under_crashes_commits_under_old_and_new_voters",
            || verdict(crate::failover::member_scenarios::fm_f_6(0))
        ),
    ]
}

/// Finds the scenario for `id`.
pub fn scenario(id: &str) -> Option<Scenario> {
    scenarios().into_iter().find(|s| s.id == id)
}

/// One line of the matrix report.
#[derive(Debug, Clone)]
pub struct MatrixLine {
    /// The spec row.
    pub row: SpecRow,
    /// The verdict (`None`: no scenario for this ID).
    pub verdict: Option<Verdict>,
}

/// Runs every scenario for the IDs of `spec` (those matching `filter`).
pub fn run_matrix(spec: &str, filter: Option<&str>) -> Vec<MatrixLine> {
    let all = scenarios();
    parse_spec(spec)
        .into_iter()
        .filter(|r| filter.is_none_or(|f| r.id.contains(f)))
        .map(|row| {
            let verdict = all.iter().find(|s| s.id == row.id).map(|s| {
                let r = std::panic::catch_unwind(s.run);
                r.unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    Verdict::Fail(format!("panicked: {msg}"))
                })
            });
            MatrixLine { row, verdict }
        })
        .collect()
}

fn short(s: &str, n: usize) -> String {
    let s = s.replace('|', "/");
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Renders the table `ID | failure | required outcome | observed | pass/fail`.
pub fn render(lines: &[MatrixLine], width: usize) -> String {
    let mut out = String::from("ID | failure | required outcome | observed | pass/fail\n");
    out.push_str("---|---|---|---|---\n");
    for l in lines {
        let (obs, pf) = match &l.verdict {
            None => ("NO SCENARIO".to_string(), "FAIL".to_string()),
            Some(Verdict::Pass(o)) => (o.clone(), "pass".to_string()),
            Some(Verdict::Fail(o)) => (o.clone(), "FAIL".to_string()),
            Some(Verdict::Missing { feature, observed }) => (
                format!("{observed} [missing: {feature}]"),
                "FAIL (missing)".to_string(),
            ),
        };
        let _ = writeln!(
            out,
            "{} | {} | {} | {} | {}",
            l.row.id,
            short(&l.row.failure.replace("**walship addition.** ", ""), width),
            short(&l.row.required, width),
            short(&obs, width * 2),
            pf
        );
    }
    let pass = lines
        .iter()
        .filter(|l| l.verdict.as_ref().is_some_and(Verdict::passed))
        .count();
    let missing = lines
        .iter()
        .filter(|l| matches!(l.verdict, Some(Verdict::Missing { .. })))
        .count();
    let unscripted = lines.iter().filter(|l| l.verdict.is_none()).count();
    let _ = writeln!(
        out,
        "\n{pass}/{} IDs pass ({} fail, {missing} of them for a missing feature, {unscripted} without a scenario)",
        lines.len(),
        lines.len() - pass
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_every_section() {
        let rows = parse_spec(SPEC);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for id in [
            "FM-3.1", "FM-3.3", "FM-4.3", "FM-5.2", "FM-6.2", "FM-7.2", "FM-8.1", "FM-9.2",
            "FM-10.1", "FM-10.5", "FM-11.1", "FM-X.1",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        assert!(rows
            .iter()
            .all(|r| !r.required.is_empty() && !r.test.is_empty()));
    }

    /// Every test or checker the spec's Test column names exists.
    #[test]
    fn spec_test_column_names_only_existing_tests() {
        // Read at run time: a missing file shows up as unknown test names.
        // The Test column may name a test of any workspace crate, so every
        // `.rs` file under the workspace's crate folders is searched.
        fn collect(dir: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name();
                if path.is_dir() {
                    if name != "target" && !name.to_string_lossy().starts_with('.') {
                        collect(&path, out);
                    }
                } else if path.extension().is_some_and(|x| x == "rs")
                    // This file lists the names itself; it proves nothing.
                    && !path.ends_with("fault-tests/src/matrix.rs")
                {
                    out.push(std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        let crate_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = crate_root.parent().unwrap_or(crate_root);
        let mut sources: Vec<String> = Vec::new();
        for dir in [
            "wal",
            "snapshot",
            "wire",
            "primary",
            "replica",
            "node",
            "recovery",
            "fault-tests",
            "src",
            "tests",
        ] {
            collect(&workspace.join(dir), &mut sources);
        }
        let mut named = 0;
        for row in parse_spec(SPEC) {
            for (i, part) in row.test.split('`').enumerate() {
                if i % 2 == 0 || part.contains(' ') || part.is_empty() {
                    continue;
                }
                named += 1;
                let as_fn = format!("fn {part}(");
                let as_const = format!("\"{part}\"");
                let as_struct = format!("pub struct {part}");
                assert!(
                    sources.iter().any(|s| s.contains(&as_fn)
                        || s.contains(&as_const)
                        || s.contains(&as_struct)),
                    "{}: Test column names `{part}`, which no test file defines",
                    row.id
                );
            }
        }
        assert!(named > 30, "only {named} tests named in the spec");
    }

    #[test]
    fn every_spec_id_has_a_scenario_and_no_scenario_is_orphaned() {
        let rows = parse_spec(SPEC);
        let sc = scenarios();
        for r in &rows {
            assert!(
                sc.iter().any(|s| s.id == r.id),
                "spec ID {} has no scenario",
                r.id
            );
        }
        for s in &sc {
            assert!(
                rows.iter().any(|r| r.id == s.id),
                "scenario {} is not in the spec",
                s.id
            );
        }
    }
}
