//! Unit tests of the primary executor over `SimStorage` (no thread, no clock).

use std::path::Path;

use walship_wal::sim::SimStorage;

use super::*;

const DIR: &str = "/p";

fn config(members: &[&str], quorum: Quorum) -> ExecConfig {
    ExecConfig {
        node_id: "p".into(),
        cluster_id: "c".into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        quorum,
        window: Window::default(),
        segment_size_bytes: 64 * 1024,
        max_record_bytes: 1024,
        commit_timeout_ms: Some(1_000),
        tick_ms: DEFAULT_TICK_MS,
        persist_interval_ms: DEFAULT_PERSIST_INTERVAL_MS,
    }
}

fn open(sim: &SimStorage, members: &[&str], quorum: Quorum) -> PrimaryExec<SimStorage, u64> {
    let mut exec =
        PrimaryExec::open(sim.clone(), Path::new(DIR), config(members, quorum), 0).expect("open");
    drain(&mut exec);
    exec
}

fn local_only(sim: &SimStorage) -> PrimaryExec<SimStorage, u64> {
    open(sim, &["p"], Quorum::LocalOnly)
}

fn drain(exec: &mut PrimaryExec<SimStorage, u64>) -> Vec<Output<u64>> {
    std::iter::from_fn(|| exec.poll_output()).collect()
}

fn append(exec: &mut PrimaryExec<SimStorage, u64>, tokens: std::ops::Range<u64>, now: u64) {
    let batch: Vec<(Vec<u8>, u64)> = tokens.map(|t| (format!("r{t}").into_bytes(), t)).collect();
    exec.append(batch, now);
}

/// (token, lsn) of every Ack, in output order.
fn acks(outs: &[Output<u64>]) -> Vec<(u64, Lsn)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Ack { token, lsn } => Some((*token, *lsn)),
            _ => None,
        })
        .collect()
}

#[test]
fn group_commit_one_sync_covers_every_append_written_before_it_and_acks_follow_in_lsn_order() {
    let sim = SimStorage::new(1);
    let mut exec = local_only(&sim);
    append(&mut exec, 10..13, 1);
    append(&mut exec, 13..15, 2);
    assert!(
        acks(&drain(&mut exec)).is_empty(),
        "nothing acknowledged before the sync"
    );
    assert!(exec.sync_needed());
    assert_eq!((exec.written_lsn(), exec.durable_lsn()), (5, 0));
    let syncs = sim.counters().file_syncs;
    exec.sync(3);
    assert_eq!(sim.counters().file_syncs, syncs + 1, "one fdatasync");
    let outs = drain(&mut exec);
    assert!(matches!(outs[0], Output::Durable(5)), "{outs:?}");
    assert!(matches!(outs[1], Output::Committed(5)), "{outs:?}");
    assert_eq!(
        acks(&outs),
        vec![(10, 1), (11, 2), (12, 3), (13, 4), (14, 5)]
    );
    assert!(!exec.sync_needed());
}

#[test]
fn majority_token_waits_for_the_quorum_and_times_out_tentative_after_its_record_is_durable() {
    let sim = SimStorage::new(2);
    let mut exec = open(&sim, &["p", "r1"], Quorum::Majority);
    append(&mut exec, 7..8, 10);
    assert_eq!(
        exec.next_deadline(),
        Some(DEFAULT_TICK_MS),
        "no timeout before the sync"
    );
    exec.sync(20);
    let outs = drain(&mut exec);
    assert!(acks(&outs).is_empty(), "durable here, no receipt: {outs:?}");
    assert_eq!(exec.commit_lsn(), 0);
    assert_eq!(exec.next_deadline(), Some(DEFAULT_TICK_MS));
    exec.on_timer(1_019);
    assert!(!drain(&mut exec)
        .iter()
        .any(|o| matches!(o, Output::Fail { .. })));
    exec.on_timer(1_020);
    let outs = drain(&mut exec);
    match &outs[..] {
        [Output::Fail {
            token: 7,
            error: PrimaryError::CommitTimeout { lsn: 1 },
        }, ..] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn record_above_the_limit_fails_only_its_own_token() {
    let sim = SimStorage::new(3);
    let mut exec = local_only(&sim);
    let big = vec![0u8; 1025];
    exec.append(vec![(b"a".to_vec(), 1), (big, 2), (b"c".to_vec(), 3)], 0);
    let outs = drain(&mut exec);
    match &outs[..] {
        [Output::Fail {
            token: 2,
            error:
                PrimaryError::Wal(WalError::RecordTooLarge {
                    len: 1025,
                    max: 1024,
                }),
        }] => {}
        other => panic!("{other:?}"),
    }
    exec.sync(1);
    assert_eq!(acks(&drain(&mut exec)), vec![(1, 1), (3, 2)]);
    assert!(exec.stopped().is_none());
}

#[test]
fn fm_x_5_failed_wal_sync_stops_the_node_fails_every_pending_token_and_is_never_retried() {
    let sim = SimStorage::new(4);
    let mut exec = local_only(&sim);
    append(&mut exec, 0..2, 0);
    exec.sync(1);
    assert_eq!(acks(&drain(&mut exec)), vec![(0, 1), (1, 2)]);
    append(&mut exec, 2..5, 2);
    // One failure only: a retry would succeed, so only not retrying passes.
    sim.fail_one_sync_after(0);
    exec.sync(3);
    let outs = drain(&mut exec);
    let wal_stop = |r: &PrimaryStop| matches!(r, PrimaryStop::Wal { .. });
    // The appends the failed sync was to make durable get its error.
    let failed: Vec<u64> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Fail {
                token,
                error:
                    PrimaryError::Wal(WalError::Io {
                        op: "sync_data", ..
                    }),
            } => Some(*token),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![2, 3, 4], "{outs:?}");
    assert!(acks(&outs).is_empty());
    assert!(matches!(outs.last(), Some(Output::Stopped(r)) if wal_stop(r)));
    let at_stop = sim.counters();
    assert_eq!(at_stop.failed_syncs, 1);
    // Later appends are refused; nothing is synced, persisted or ticked any more.
    assert!(!exec.sync_needed());
    exec.sync(4);
    append(&mut exec, 5..6, 5);
    exec.on_timer(10_000);
    let outs = drain(&mut exec);
    match &outs[..] {
        [Output::Fail {
            token: 5,
            error: PrimaryError::Stopped(r),
        }] if wal_stop(r) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(exec.next_deadline(), None);
    assert_eq!(
        sim.counters(),
        at_stop,
        "nothing written or synced after the stop"
    );
}

#[test]
fn fm_x_5_failed_fsync_of_the_commit_watermark_stops_the_node_and_is_never_retried() {
    let sim = SimStorage::new(5);
    let mut exec = local_only(&sim);
    append(&mut exec, 0..1, 0);
    exec.sync(0);
    drain(&mut exec);
    sim.fail_next_sync(exec.node_dir().state_dir())
        .expect("arm");
    assert_eq!(exec.next_deadline(), Some(DEFAULT_PERSIST_INTERVAL_MS));
    exec.on_timer(DEFAULT_PERSIST_INTERVAL_MS);
    let outs = drain(&mut exec);
    assert!(
        matches!(
            outs.last(),
            Some(Output::Stopped(PrimaryStop::CommitWatermark {
                commit_lsn: 1,
                ..
            }))
        ),
        "{outs:?}"
    );
    let at_stop = sim.counters();
    assert_eq!(at_stop.failed_syncs, 1);
    append(&mut exec, 1..2, 30);
    exec.sync(30);
    exec.on_timer(100);
    exec.shutdown(200);
    assert_eq!(
        sim.counters(),
        at_stop,
        "nothing written or synced after the stop"
    );
}

#[test]
fn commit_watermark_is_persisted_once_per_interval_and_never_above_the_announced_commit() {
    let sim = SimStorage::new(6);
    let mut exec = local_only(&sim);
    append(&mut exec, 0..1, 0);
    exec.sync(0);
    append(&mut exec, 1..3, 5);
    exec.sync(5);
    drain(&mut exec);
    assert_eq!(exec.commit_lsn(), 3);
    assert_eq!(exec.next_deadline(), Some(DEFAULT_PERSIST_INTERVAL_MS));
    exec.on_timer(DEFAULT_PERSIST_INTERVAL_MS - 1);
    assert_eq!(exec.node_dir().commit_lsn().expect("read"), 0);
    // Written (one file, one rename) only when the deadline comes, with the newest value.
    exec.on_timer(DEFAULT_PERSIST_INTERVAL_MS);
    let outs = drain(&mut exec);
    assert!(matches!(outs[..], [Output::CommitPersisted(3)]), "{outs:?}");
    assert_eq!(exec.node_dir().commit_lsn().expect("read"), 3);
    assert_eq!(exec.persisted_commit_lsn(), 3);
    // Appended, synced, not committed (majority restart below): nothing more is persisted.
    drop(exec);
    let mut exec = open(&sim, &["p", "r1"], Quorum::Majority);
    append(&mut exec, 3..4, 0);
    exec.sync(0);
    exec.on_timer(1_000);
    exec.shutdown(1_000);
    assert_eq!(exec.node_dir().commit_lsn().expect("read"), 3);
}

#[test]
fn shutdown_persists_the_final_watermark_and_fails_pending_tokens_shutting_down() {
    let sim = SimStorage::new(7);
    let mut exec = open(&sim, &["p", "r1"], Quorum::Majority);
    append(&mut exec, 0..2, 0);
    exec.sync(0);
    drain(&mut exec);
    exec.shutdown(1);
    append(&mut exec, 2..3, 2);
    let failed: Vec<u64> = drain(&mut exec)
        .iter()
        .filter_map(|o| match o {
            Output::Fail {
                token,
                error: PrimaryError::ShuttingDown,
            } => Some(*token),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![0, 1, 2]);
    // A quorum-0 primary persists its final watermark at shutdown.
    let sim = SimStorage::new(8);
    let mut exec = local_only(&sim);
    append(&mut exec, 0..2, 0);
    exec.sync(0);
    exec.shutdown(1);
    assert_eq!(exec.node_dir().commit_lsn().expect("read"), 2);
}
