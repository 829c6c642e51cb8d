//! One test per failure-matrix ID: each runs the scenario of
//! `walship_fault::matrix` for that ID and requires the row's outcome.
//! Rows whose feature does not exist yet are `#[ignore]`d with the reason;
//! `walship-fault matrix` still runs them and reports them as failures.

use walship_fault::matrix::{scenario, Verdict};

fn require(id: &str) {
    let s = scenario(id).unwrap_or_else(|| panic!("no scenario for {id}"));
    match (s.run)() {
        Verdict::Pass(obs) => println!("{id}: {obs}"),
        other => panic!("{id}: {other:?}"),
    }
}

#[test]
fn fm_3_1_primary_crash_before_sync_record_never_exists() {
    require("FM-3.1");
}

#[test]
fn fm_3_2_primary_crash_after_sync_record_survives_and_ships() {
    require("FM-3.2");
}

#[test]
fn fm_3_3_primary_crash_mid_frame_ends_session_no_halt() {
    require("FM-3.3");
}

#[test]
fn fm_4_1_replica_crash_before_sync_refetches_no_halt() {
    require("FM-4.1");
}

#[test]
fn fm_4_2_replica_crash_before_apply_replays_in_order() {
    require("FM-4.2");
}

#[test]
fn fm_4_3_replica_crash_during_snapshot_install_keeps_prior_state() {
    require("FM-4.3");
}

#[test]
fn fm_5_1_partition_ends_session_replica_frozen_resumes_after_heal() {
    require("FM-5.1");
}

#[test]
fn fm_5_2_duplicated_or_reordered_record_halts() {
    require("FM-5.2");
}

#[test]
fn fm_6_1_corrupted_record_halts_checksum() {
    require("FM-6.1");
}

#[test]
fn fm_6_2_gap_in_stream_halts_replica() {
    require("FM-6.2");
}

#[test]
fn fm_7_1_invalid_snapshot_halts_snapshot_invalid() {
    require("FM-7.1");
}

#[test]
fn fm_7_2_snapshot_boundary_mismatch_halts() {
    require("FM-7.2");
}

#[test]
fn fm_8_1_diverged_replica_halts_divergence_log_kept() {
    require("FM-8.1");
}

#[test]
fn fm_9_1_replica_crash_while_partitioned_recovers_and_resumes() {
    require("FM-9.1");
}

#[test]
fn fm_9_2_crash_during_recovery_recovers_identically() {
    require("FM-9.2");
}

#[test]
fn fm_10_1_tentative_records_never_applied() {
    require("FM-10.1");
}

#[test]
fn fm_10_2_applied_order_is_dense() {
    require("FM-10.2");
}

#[test]
fn fm_10_3_divergence_never_healed() {
    require("FM-10.3");
}

#[test]
fn fm_10_4_no_implicit_authority() {
    require("FM-10.4");
}

#[test]
fn fm_10_5_no_mixed_snapshot_and_wal() {
    require("FM-10.5");
}

#[test]
fn fm_11_1_same_seed_same_trace_hash() {
    require("FM-11.1");
}

#[test]
fn fm_11_2_halt_independent_of_timing() {
    require("FM-11.2");
}

#[test]
fn fm_11_3_restart_is_function_of_durable_state() {
    require("FM-11.3");
}

#[test]
fn fm_x_1_transport_noise_never_halts() {
    require("FM-X.1");
}

#[test]
fn fm_x_2_stale_primary_is_refused_and_fenced() {
    require("FM-X.2");
}

#[test]
fn fm_x_3_epoch_regression_halts() {
    require("FM-X.3");
}

#[test]
fn fm_x_4_replica_fsync_failure_stops_node() {
    require("FM-X.4");
}

#[test]
fn fm_x_5_primary_fsync_failure_stops_node() {
    require("FM-X.5");
}

#[test]
fn fm_x_6_local_corruption_halts() {
    require("FM-X.6");
}

#[test]
fn fm_x_7_torn_tail_cut_keeps_synced() {
    require("FM-X.7");
}

#[test]
fn fm_x_8_session_end_mid_snapshot_restarts_transfer() {
    require("FM-X.8");
}

#[test]
fn fm_x_9_non_member_cannot_cause_halt() {
    require("FM-X.9");
}

#[test]
fn fm_x_10_tentative_conflict_after_failover_halts() {
    require("FM-X.10");
}

#[test]
fn fm_x_11_acknowledged_commits_survive_minority_crash() {
    require("FM-X.11");
}

#[test]
fn fm_x_12_enospc_stops_node_no_halt() {
    require("FM-X.12");
}

#[test]
fn fm_x_13_far_behind_replica_gets_snapshot() {
    require("FM-X.13");
}

#[test]
fn fm_x_14_malformed_batch_halts() {
    require("FM-X.14");
}

#[test]
fn fm_x_15_replaced_replica_disk_does_not_count_old_receipts() {
    require("FM-X.15");
}

#[test]
fn fm_x_16_primary_disk_loss_halts_replicas_never_overwrites() {
    require("FM-X.16");
}

#[test]
fn fm_f_1_quorum_0_fails_over_only_by_operator_promotion_naming_the_loss() {
    require("FM-F.1");
}

#[test]
fn fm_f_2_static_k_elects_with_n_minus_k_votes_without_contacting_all() {
    require("FM-F.2");
}

#[test]
fn fm_f_3_a_node_holding_unacknowledged_records_the_winner_lacks_halts_divergence() {
    require("FM-F.3");
}

#[test]
fn fm_f_5_a_new_cluster_forms_only_with_every_member_up_and_empty() {
    require("FM-F.5");
}

#[test]
fn fm_f_6_a_membership_change_under_crashes_commits_under_old_and_new_voters() {
    require("FM-F.6");
}
