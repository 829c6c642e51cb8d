//! Unit tests of the replica executor over `SimStorage` (no thread, no network, no clock).

use std::sync::{Arc, Mutex};

use walship_wal::record::encode_record;
use walship_wal::sim::SimStorage;
use walship_wal::state::EpochEntry;
use walship_wal::{Lsn, Position, WalError, WalOptions};
use walship_wire::message::{Message, RecordBatch, Welcome, PROTOCOL_VERSION};

use super::{ExecConfig, Output, ReplicaExec};
use crate::replica::{Applier, ApplyError, ReplicaError};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Lsn>>>);

impl Recorder {
    fn lsns(&self) -> Vec<Lsn> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl Applier for Recorder {
    fn applied_lsn(&self) -> Lsn {
        self.lsns().last().copied().unwrap_or(0)
    }
    fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        self.0.lock().map_err(|_| "poisoned")?.push(lsn);
        Ok(())
    }
}

fn config() -> ExecConfig {
    ExecConfig {
        node_id: "r1".into(),
        cluster_id: "c1".into(),
        primary_name: "p1".into(),
        data_dir: "/r1".into(),
        wal: WalOptions::default(),
        backoff_initial_ms: 20,
        backoff_max_ms: 500,
        sync_every_bytes: 1 << 20,
        commit_interval_ms: 10,
        report_applied: true,
        min_primary_epoch: 0,
        base_config: None,
        incarnation: 0,
    }
}

/// The primary's records 1..=n of epoch 1: (stored bytes, identity) per record.
fn log(n: u64) -> Vec<(Vec<u8>, Position)> {
    let mut prev = Position::ZERO;
    (1..=n)
        .map(|lsn| {
            let mut bytes = Vec::new();
            let pos = encode_record(lsn, 1, prev.crc, format!("p{lsn}").as_bytes(), &mut bytes);
            prev = pos;
            (bytes, pos)
        })
        .collect()
}

fn batch(log: &[(Vec<u8>, Position)], from: Lsn, to: Lsn, commit_lsn: Lsn) -> Message {
    let bytes = log[from as usize - 1..to as usize]
        .iter()
        .flat_map(|(b, _)| b.clone())
        .collect();
    Message::Records(RecordBatch {
        first_lsn: from,
        count: (to - from + 1) as u32,
        bytes,
        commit_lsn,
    })
}

fn drain(exec: &mut ReplicaExec<SimStorage>) -> Vec<Output> {
    std::iter::from_fn(|| exec.poll_output()).collect()
}

fn receipts(outputs: &[Output]) -> Vec<Lsn> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                msg: Message::Receipt { durable_lsn },
                ..
            } => Some(*durable_lsn),
            _ => None,
        })
        .collect()
}

/// An executor streaming from an empty log on connection 1 (Hello and the first
/// receipt drained), with `primary_last` announced.
fn streaming(
    sim: &SimStorage,
    applier: Recorder,
    primary_last: Position,
) -> ReplicaExec<SimStorage> {
    let mut exec =
        ReplicaExec::open(sim.clone(), config(), Box::new(applier), 1_000).expect("open");
    assert_eq!(exec.next_deadline(), Some(1_000), "connects at once");
    exec.on_timer(1_000);
    assert!(matches!(drain(&mut exec).last(), Some(Output::Connect)));
    exec.on_connected(1, 1_000);
    exec.on_frame(
        1,
        Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch: 1,
            at_replica_last: Some(Position::ZERO),
            primary_last,
            commit_lsn: 0,
            epoch_history: vec![EpochEntry {
                epoch: 1,
                start_lsn: 1,
            }],
        }),
        1_000,
    );
    assert_eq!(receipts(&drain(&mut exec)), vec![0]);
    exec
}

#[test]
fn receipt_is_sent_only_after_the_sync_and_never_above_the_synced_lsn() {
    let sim = SimStorage::new(1);
    let log = log(5);
    let mut exec = streaming(&sim, Recorder::default(), log[4].1);
    exec.on_frame(1, batch(&log, 1, 3, 0), 1_001);
    exec.on_frame(1, batch(&log, 4, 5, 0), 1_001);
    let out = drain(&mut exec);
    assert_eq!(
        receipts(&out),
        Vec::<Lsn>::new(),
        "no receipt before the sync"
    );
    let wal = exec.wal().expect("wal");
    assert_eq!((wal.last().lsn, wal.durable_lsn()), (5, 0));
    assert!(exec.sync_needed());
    // One group sync covers both batches; the receipt follows it.
    let syncs = sim.counters().file_syncs;
    exec.sync(1_002);
    assert_eq!(
        sim.counters().file_syncs,
        syncs + 1,
        "one sync for two batches"
    );
    let out = drain(&mut exec);
    assert_eq!(receipts(&out), vec![5]);
    assert!(matches!(out.first(), Some(Output::Durable(5))), "{out:?}");
    assert_eq!(exec.wal().expect("wal").durable_lsn(), 5);
    assert_eq!(exec.last_receipt(), Some(5));
    assert!(!exec.sync_needed());
}

#[test]
fn fm_x_4_failed_sync_stops_the_node_without_receipt_and_is_never_retried() {
    let sim = SimStorage::new(2);
    let log = log(3);
    let mut exec = streaming(&sim, Recorder::default(), log[2].1);
    exec.on_frame(1, batch(&log, 1, 3, 3), 1_001);
    drain(&mut exec);
    sim.fail_one_sync_after(0);
    exec.sync(1_002);
    let out = drain(&mut exec);
    assert_eq!(
        receipts(&out),
        Vec::<Lsn>::new(),
        "no receipt after a failed sync"
    );
    match out.last() {
        Some(Output::Stopped(ReplicaError::Wal(WalError::Io { op, .. }))) => {
            assert_eq!(*op, "sync_data")
        }
        other => panic!("expected a stop on the failed sync_data, got {other:?}"),
    }
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close { conn: 1, .. })),
        "the session is closed: {out:?}"
    );
    // Stopped: nothing is retried, later inputs change nothing.
    assert!(!exec.sync_needed());
    exec.sync(1_003);
    exec.on_frame(1, batch(&log, 1, 3, 3), 1_003);
    exec.on_timer(5_000);
    assert!(drain(&mut exec).is_empty());
    assert_eq!(exec.next_deadline(), None);
    assert_eq!(sim.counters().failed_syncs, 1);
    assert_eq!(exec.applied_lsn(), 0, "nothing applied");
}

#[test]
fn apply_waits_for_the_sync_and_the_persisted_commit_watermark() {
    let sim = SimStorage::new(3);
    let applier = Recorder::default();
    let log = log(4);
    let mut exec = streaming(&sim, applier.clone(), log[3].1);
    // Records 1..=4, the primary committed 2.
    exec.on_frame(1, batch(&log, 1, 4, 2), 1_001);
    drain(&mut exec);
    assert_eq!(
        applier.lsns(),
        Vec::<Lsn>::new(),
        "nothing applied before the sync"
    );
    exec.sync(1_001);
    drain(&mut exec);
    assert_eq!(
        applier.lsns(),
        vec![1, 2],
        "applied up to the commit watermark only"
    );
    assert_eq!(exec.persisted_commit(), 2);
    // The watermark moves within the interval: written (and applied) at the deadline.
    exec.on_frame(1, Message::Commit { commit_lsn: 4 }, 1_005);
    drain(&mut exec);
    assert_eq!(applier.lsns(), vec![1, 2]);
    assert_eq!(exec.next_deadline(), Some(1_011));
    exec.on_timer(1_011);
    let out = drain(&mut exec);
    assert!(
        out.iter().any(|o| matches!(o, Output::CommitPersisted(4))),
        "{out:?}"
    );
    assert_eq!(applier.lsns(), vec![1, 2, 3, 4]);
    assert_eq!(exec.persisted_commit(), 4);
}

#[test]
fn sync_with_hands_over_the_receipt_before_the_commit_watermark_write_and_the_applies() {
    let sim = SimStorage::new(3);
    let applier = Recorder::default();
    let log = log(4);
    let mut exec = streaming(&sim, applier.clone(), log[3].1);
    // Records 1..=4, the primary committed 2: the sync makes 4 durable, then `state/commit`
    // (2) is due at once and records 1..=2 are applied.
    exec.on_frame(1, batch(&log, 1, 4, 2), 1_001);
    drain(&mut exec);
    let mut early = Vec::new();
    let mut seen_at_receipt = None;
    exec.sync_with(1_001, |o| {
        if matches!(
            o,
            Output::Send {
                msg: Message::Receipt { .. },
                ..
            }
        ) {
            seen_at_receipt = Some(applier.lsns());
        }
        early.push(o);
    });
    assert!(
        early.iter().any(|o| matches!(
            o,
            Output::Send {
                msg: Message::Receipt { durable_lsn: 4 },
                ..
            }
        )),
        "the receipt of the sync is handed over early: {early:?}"
    );
    assert!(
        !early
            .iter()
            .any(|o| matches!(o, Output::CommitPersisted(_))),
        "the watermark write comes after: {early:?}"
    );
    assert_eq!(
        seen_at_receipt,
        Some(Vec::<Lsn>::new()),
        "nothing applied when the receipt left"
    );
    let later = drain(&mut exec);
    assert!(
        later
            .iter()
            .any(|o| matches!(o, Output::CommitPersisted(2))),
        "{later:?}"
    );
    assert_eq!(applier.lsns(), vec![1, 2], "same decisions as sync");
    assert_eq!(exec.persisted_commit(), 2);
}

#[test]
fn a_frame_with_records_leaves_the_commit_watermark_write_and_the_applies_to_its_sync() {
    let sim = SimStorage::new(5);
    let applier = Recorder::default();
    let log = log(4);
    let mut exec = streaming(&sim, applier.clone(), log[3].1);
    exec.on_frame(1, batch(&log, 1, 2, 0), 1_001);
    exec.sync(1_001);
    assert_eq!(receipts(&drain(&mut exec)), vec![2]);
    // Records 3..=4 arrive with commit 2: the `state/commit` write of 2 is due and records
    // 1..=2 could be applied, but the records' fdatasync (and so the receipt) comes first.
    exec.on_frame(1, batch(&log, 3, 4, 2), 1_100);
    let on_frame = drain(&mut exec);
    assert!(
        !on_frame
            .iter()
            .any(|o| matches!(o, Output::CommitPersisted(_))),
        "no watermark write before the sync: {on_frame:?}"
    );
    assert_eq!(
        applier.lsns(),
        Vec::<Lsn>::new(),
        "nothing applied before the sync"
    );
    assert!(exec.sync_needed());
    exec.sync(1_100);
    let after = drain(&mut exec);
    let receipt_at = after.iter().position(|o| {
        matches!(
            o,
            Output::Send {
                msg: Message::Receipt { durable_lsn: 4 },
                ..
            }
        )
    });
    let persisted_at = after
        .iter()
        .position(|o| matches!(o, Output::CommitPersisted(2)));
    assert!(
        matches!((receipt_at, persisted_at), (Some(r), Some(p)) if r < p),
        "the receipt, then the watermark write: {after:?}"
    );
    assert_eq!(applier.lsns(), vec![1, 2]);
    assert_eq!(exec.persisted_commit(), 2);
}

#[test]
fn commit_watermark_is_persisted_only_up_to_the_durable_lsn() {
    let sim = SimStorage::new(4);
    let log = log(5);
    let mut exec = streaming(&sim, Recorder::default(), log[4].1);
    // The primary committed 5 with other replicas; this one holds 1..=3 so far.
    exec.on_frame(1, batch(&log, 1, 3, 5), 1_001);
    exec.sync(1_001);
    drain(&mut exec);
    assert_eq!(exec.persisted_commit(), 3);
    assert_eq!(exec.applied_lsn(), 3);
}

/// Data lsns applied, and (lsn, epoch) of each control record applied.
type Applied = (Vec<Lsn>, Vec<(Lsn, u64)>);

/// Records data applies and control applies separately.
#[derive(Clone, Default)]
struct SplitRecorder(Arc<Mutex<Applied>>);

impl Applier for SplitRecorder {
    fn applied_lsn(&self) -> Lsn {
        0
    }
    fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        self.0.lock().map_err(|_| "poisoned")?.0.push(lsn);
        Ok(())
    }
    fn apply_control(
        &mut self,
        lsn: Lsn,
        control: &walship_wal::control::ControlRecord,
    ) -> Result<(), ApplyError> {
        self.0
            .lock()
            .map_err(|_| "poisoned")?
            .1
            .push((lsn, control.epoch()));
        Ok(())
    }
}

#[test]
fn a_shipped_control_record_is_stored_and_applied_through_apply_control_never_as_a_payload() {
    use walship_wal::control::ControlRecord;
    use walship_wal::record::{encode_record_with_flags, FLAG_CONTROL};
    let sim = SimStorage::new(5);
    // The primary's log: a data record, a control record of epoch 1, a data record.
    let mut log = log(1);
    let body = ControlRecord::EpochStart {
        epoch: 1,
        primary: "p1".into(),
    }
    .encode()
    .expect("body");
    let mut bytes = Vec::new();
    let ctl = encode_record_with_flags(2, 1, log[0].1.crc, FLAG_CONTROL, &body, &mut bytes);
    log.push((bytes, ctl));
    let mut bytes = Vec::new();
    let third = encode_record(3, 1, ctl.crc, b"p3", &mut bytes);
    log.push((bytes, third));
    let applier = SplitRecorder::default();
    let seen = applier.0.clone();
    let mut exec =
        ReplicaExec::open(sim.clone(), config(), Box::new(applier), 1_000).expect("open");
    exec.on_timer(1_000);
    drain(&mut exec);
    exec.on_connected(1, 1_000);
    exec.on_frame(
        1,
        Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch: 1,
            at_replica_last: Some(Position::ZERO),
            primary_last: third,
            commit_lsn: 0,
            epoch_history: vec![EpochEntry {
                epoch: 1,
                start_lsn: 1,
            }],
        }),
        1_000,
    );
    drain(&mut exec);
    exec.on_frame(1, batch(&log, 1, 3, 3), 1_001);
    exec.sync(1_002);
    drain(&mut exec);
    for t in 1_003..1_100 {
        exec.on_timer(t);
        drain(&mut exec);
    }
    let (data, controls) = seen.lock().map(|g| g.clone()).expect("lock");
    assert_eq!(
        data,
        vec![1, 3],
        "the control record is never applied as a payload"
    );
    assert_eq!(controls, vec![(2, 1)]);
    assert_eq!(exec.wal().expect("wal").last(), third);
}

#[test]
fn fm_x_2_raised_min_primary_epoch_refuses_the_streaming_primary_closes_refused_and_retries() {
    use walship_wire::{CloseCode, Refuse, RefuseReason};
    let sim = SimStorage::new(30);
    let log = log(4);
    let mut exec = streaming(&sim, Recorder::default(), log[3].1);
    exec.on_frame(1, batch(&log, 1, 2, 2), 1_001);
    exec.sync(1_002);
    drain(&mut exec);
    // The node voted in epoch 2: the epoch-1 primary is stale.
    exec.set_min_primary_epoch(2, 1_003);
    let out = drain(&mut exec);
    let refuse = Message::Refuse(Refuse {
        reason: RefuseReason::StalePrimary {
            primary_epoch: 1,
            current_epoch: 2,
        },
    });
    assert!(
        matches!(&out[0], Output::Send { conn: 1, msg } if *msg == refuse),
        "{out:?}"
    );
    assert!(
        matches!(
            &out[1],
            Output::Close {
                conn: 1,
                code: CloseCode::Refused,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(
        matches!(&out[2], Output::SessionEnded { reconnect_after_ms, .. } if *reconnect_after_ms > 0),
        "{out:?}"
    );
    // Frames of that connection are ignored; nothing more is stored.
    exec.on_frame(1, batch(&log, 3, 4, 4), 1_004);
    assert_eq!(exec.wal().expect("wal").last().lsn, 2);
    let st = exec.status();
    assert!(st.halt().is_none());
    assert_eq!(
        st.last_session_end.as_deref(),
        Some("refused stale primary p1 of epoch 1 (this replica is at epoch 2)")
    );
    // It retries with its backoff; the next Hello carries the fence.
    exec.on_timer(10_000);
    assert!(matches!(drain(&mut exec).last(), Some(Output::Connect)));
    exec.on_connected(2, 10_000);
    let out = drain(&mut exec);
    assert!(
        matches!(&out[..], [Output::Send { conn: 2, msg: Message::Hello(h) }] if h.highest_epoch_seen == 2),
        "{out:?}"
    );
}
