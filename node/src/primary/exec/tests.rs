//! Unit tests of the primary executor over `SimStorage` (no thread, no clock).

use std::path::Path;

use walship_wal::control::ControlRecord;
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
        new_epoch: None,
        base_config: None,
        forced_config: None,
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

/// The record at `lsn` of the executor's WAL: (epoch, control record if it is one).
fn record_at(exec: &PrimaryExec<SimStorage, u64>, lsn: Lsn) -> (u64, Option<ControlRecord>) {
    exec.wal().with(|w| {
        let mut reader = w.reader(lsn).expect("reader");
        let rec = reader.next_record().expect("a record").expect("readable");
        assert_eq!(rec.lsn(), lsn);
        let view = rec.view();
        let control = view
            .is_control()
            .then(|| ControlRecord::decode(view.payload()).expect("valid control record"));
        (view.epoch(), control)
    })
}

fn open_new_epoch(
    sim: &SimStorage,
    members: &[&str],
    quorum: Quorum,
    new_epoch: Option<u64>,
) -> Result<PrimaryExec<SimStorage, u64>, PrimaryError> {
    let mut config = config(members, quorum);
    config.new_epoch = new_epoch;
    PrimaryExec::open(sim.clone(), Path::new(DIR), config, 0)
}

fn hello_from(node: &str, last: Position, highest_epoch_seen: u64) -> Message {
    Message::Hello(walship_wire::Hello {
        protocol_version: walship_wire::PROTOCOL_VERSION,
        cluster_id: "c".into(),
        node_id: node.into(),
        incarnation: 0,
        last,
        commit_lsn: 0,
        epoch_history: vec![],
        highest_epoch_seen,
    })
}

fn entries(pairs: &[(u64, Lsn)]) -> Vec<walship_wal::state::EpochEntry> {
    pairs
        .iter()
        .map(|&(epoch, start_lsn)| walship_wal::state::EpochEntry { epoch, start_lsn })
        .collect()
}

#[test]
fn new_epoch_on_an_empty_dir_starts_with_its_control_record_at_lsn_1() {
    let sim = SimStorage::new(20);
    let mut exec = open_new_epoch(&sim, &["p"], Quorum::LocalOnly, Some(3)).expect("open");
    let outs = drain(&mut exec);
    assert_eq!(exec.open_facts().epoch, 3);
    assert_eq!(exec.core().epoch(), 3);
    assert_eq!(exec.core().epoch_start_lsn(), 1);
    assert_eq!(
        exec.node_dir().epochs().expect("epochs").entries,
        entries(&[(3, 1)])
    );
    assert_eq!(
        record_at(&exec, 1),
        (
            3,
            Some(ControlRecord::EpochStart {
                epoch: 3,
                primary: "p".into()
            })
        )
    );
    // Synced in open: durable before the core exists, so a local-only primary commits it.
    assert_eq!(exec.durable_lsn(), 1);
    assert_eq!(exec.written_lsn(), 1);
    assert!(!exec.sync_needed());
    assert!(
        outs.iter().any(|o| matches!(o, Output::Committed(1))),
        "{outs:?}"
    );
    // Later appends are records of epoch 3 after it.
    append(&mut exec, 0..1, 1);
    exec.sync(1);
    assert_eq!(acks(&drain(&mut exec)), vec![(0, 2)]);
    assert_eq!(record_at(&exec, 2), (3, None));
}

/// An epoch-1 log of 5 durable records, none committed (majority of p and r1, no receipt).
fn epoch_1_log_of_5(sim: &SimStorage) {
    let mut exec = open(sim, &["p", "r1"], Quorum::Majority);
    append(&mut exec, 0..5, 0);
    exec.sync(0);
    drain(&mut exec);
    assert_eq!(exec.commit_lsn(), 0);
    exec.shutdown(1);
}

#[test]
fn new_epoch_over_an_epoch_1_log_commits_old_records_only_with_its_control_record() {
    let sim = SimStorage::new(21);
    epoch_1_log_of_5(&sim);
    let mut exec =
        open_new_epoch(&sim, &["p", "r1"], Quorum::Majority, Some(2)).expect("open epoch 2");
    drain(&mut exec);
    assert_eq!(
        exec.node_dir().epochs().expect("epochs").entries,
        entries(&[(1, 1), (2, 6)])
    );
    assert_eq!(exec.core().epoch_start_lsn(), 6);
    assert_eq!(record_at(&exec, 5), (1, None));
    assert_eq!(
        record_at(&exec, 6),
        (
            2,
            Some(ControlRecord::EpochStart {
                epoch: 2,
                primary: "p".into()
            })
        )
    );
    assert_eq!(
        exec.durable_lsn(),
        6,
        "the control record is synced in open"
    );
    append(&mut exec, 0..1, 1);
    // r1 holds the 5 epoch-1 records. The control record is durable, so it ships at once;
    // the append (lsn 7) is not synced yet and does not ship (FM-3.1).
    let r1_last = exec
        .wal()
        .with(|w| w.position_at(5))
        .expect("read")
        .expect("lsn 5");
    exec.on_connected(1, "r1".into(), 2);
    exec.on_frame(1, hello_from("r1", r1_last, 1), 2);
    let outs = drain(&mut exec);
    let shipped: Vec<(Lsn, u32)> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                msg: Message::Records(b),
                ..
            } => Some((b.first_lsn, b.count)),
            _ => None,
        })
        .collect();
    assert_eq!(shipped, vec![(6, 1)], "{outs:?}");
    let welcome_epoch = outs.iter().find_map(|o| match o {
        Output::Send {
            msg: Message::Welcome(w),
            ..
        } => Some((w.epoch, w.epoch_history.clone())),
        _ => None,
    });
    assert_eq!(welcome_epoch, Some((2, entries(&[(1, 1), (2, 6)]))));
    // lsn 5 on both nodes (a majority) does not commit: it is of epoch 1.
    exec.on_frame(1, Message::Receipt { durable_lsn: 5 }, 3);
    let outs = drain(&mut exec);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Committed(_))),
        "{outs:?}"
    );
    assert_eq!(exec.commit_lsn(), 0);
    // The control record on the majority: lsns 1..=6 commit together.
    exec.on_frame(1, Message::Receipt { durable_lsn: 6 }, 4);
    let outs = drain(&mut exec);
    assert!(
        outs.iter().any(|o| matches!(o, Output::Committed(6))),
        "{outs:?}"
    );
    assert!(acks(&outs).is_empty(), "lsn 7 is not synced yet");
    exec.sync(5);
    drain(&mut exec);
    exec.on_frame(1, Message::Receipt { durable_lsn: 7 }, 6);
    assert_eq!(acks(&drain(&mut exec)), vec![(0, 7)]);
}

#[test]
fn new_epoch_not_above_the_history_is_refused_and_changes_nothing() {
    let sim = SimStorage::new(22);
    epoch_1_log_of_5(&sim);
    for requested in [0, 1] {
        match open_new_epoch(&sim, &["p", "r1"], Quorum::Majority, Some(requested)) {
            Err(PrimaryError::EpochNotNew { requested: r, last }) => {
                assert_eq!((r, last), (requested, 1));
            }
            other => panic!("{other:?}"),
        }
    }
    let exec = open(&sim, &["p", "r1"], Quorum::Majority);
    assert_eq!(
        exec.node_dir().epochs().expect("epochs").entries,
        entries(&[(1, 1)])
    );
    assert_eq!(exec.written_lsn(), 5);
    assert_eq!(exec.core().epoch(), 1);
}

#[test]
fn reopening_after_a_new_epoch_continues_it_without_a_second_control_record() {
    let sim = SimStorage::new(23);
    let mut exec = open_new_epoch(&sim, &["p"], Quorum::LocalOnly, Some(4)).expect("open");
    drain(&mut exec);
    exec.shutdown(1);
    drop(exec);
    let exec = local_only(&sim);
    assert_eq!(exec.core().epoch(), 4);
    assert_eq!(exec.core().epoch_start_lsn(), 1);
    assert_eq!(exec.written_lsn(), 1);
    // Asking again for the epoch it already has is refused.
    drop(exec);
    assert!(matches!(
        open_new_epoch(&sim, &["p"], Quorum::LocalOnly, Some(4)),
        Err(PrimaryError::EpochNotNew {
            requested: 4,
            last: 4
        })
    ));
}

#[test]
fn fm_x_2_fenced_primary_fails_pending_and_new_appends_and_never_commits_again() {
    let sim = SimStorage::new(24);
    let mut exec = open(&sim, &["p", "r1", "r2"], Quorum::Majority);
    let r1_zero = Position::ZERO;
    exec.on_connected(1, "r1".into(), 0);
    exec.on_frame(1, hello_from("r1", r1_zero, 1), 0);
    append(&mut exec, 0..2, 1);
    exec.sync(1);
    exec.on_frame(1, Message::Receipt { durable_lsn: 1 }, 2);
    assert_eq!(acks(&drain(&mut exec)), vec![(0, 1)]);
    append(&mut exec, 2..3, 3);
    exec.sync(3);
    drain(&mut exec);
    // r2 has seen epoch 4: its Hello fences this epoch-1 primary.
    exec.on_connected(2, "r2".into(), 4);
    exec.on_frame(2, hello_from("r2", r1_zero, 4), 4);
    assert_eq!(exec.fenced(), Some(4));
    let outs = drain(&mut exec);
    let fenced: Vec<u64> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Fail {
                token,
                error: PrimaryError::Fenced { epoch: 4 },
            } => Some(*token),
            _ => None,
        })
        .collect();
    assert_eq!(fenced, vec![1, 2], "pending appends fail: {outs:?}");
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Send {
            conn: 2,
            msg: Message::Refuse(_)
        }
    )));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Close { conn: 1, .. })));
    // Receipts (on a connection the core closed) and new appends change nothing.
    exec.on_frame(1, Message::Receipt { durable_lsn: 3 }, 5);
    append(&mut exec, 3..4, 6);
    let outs = drain(&mut exec);
    assert!(
        matches!(
            &outs[..],
            [Output::Fail {
                token: 3,
                error: PrimaryError::Fenced { epoch: 4 }
            }]
        ),
        "{outs:?}"
    );
    assert_eq!(exec.commit_lsn(), 1);
    exec.on_timer(10_000);
    assert!(!drain(&mut exec)
        .iter()
        .any(|o| matches!(o, Output::Committed(_) | Output::Ack { .. })));
    assert_eq!(exec.commit_lsn(), 1);
}
