//! Unit tests of the replica core's snapshot phase (sans-IO: the install itself is the
//! driver's; here only the protocol decisions and the halt outcomes).

use super::*;
use walship_snapshot::SnapshotTrailer;
use walship_wal::record::encode_record;

const BOUNDARY: Position = Position {
    lsn: 100,
    epoch: 1,
    crc: 0xdead_beef,
};

struct NoLog;

impl LocalLog for NoLog {
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        Ok((lsn == 0).then_some(Position::ZERO))
    }
}

fn core(snapshots: bool) -> ReplicaCore {
    let mut c = ReplicaCore::new(
        CoreConfig {
            node_id: "r1".into(),
            cluster_id: "c1".into(),
            primary_name: "p1".into(),
            max_record_bytes: 1 << 16,
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            min_primary_epoch: 0,
            incarnation: 0,
        },
        DurableState {
            last: Position::ZERO,
            commit_lsn: 0,
            applied_lsn: 0,
            epoch_history: EpochHistory::default(),
            halt: None,
        },
    );
    c.set_snapshot_install(snapshots);
    c
}

fn history() -> EpochHistory {
    let mut h = EpochHistory::new();
    h.push(1, 1).expect("epoch");
    h
}

fn step(c: &mut ReplicaCore, e: Event) -> Vec<Action> {
    c.handle(e, 1_000, &mut NoLog).expect("no local I/O error")
}

/// Start, connect, and a Welcome from a primary whose first retained lsn is above 1.
fn to_receiving(c: &mut ReplicaCore) {
    step(c, Event::Start);
    step(c, Event::SessionStarted);
    let out = step(
        c,
        Event::Received(Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch: 1,
            at_replica_last: None,
            primary_last: Position {
                lsn: 150,
                epoch: 1,
                crc: 7,
            },
            commit_lsn: 150,
            epoch_history: history().entries,
        })),
    );
    assert!(out.is_empty(), "waits for the offer: {out:?}");
    assert_eq!(*c.phase(), Phase::ReceivingSnapshot);
}

fn offer() -> SnapshotOffer {
    SnapshotOffer {
        boundary: BOUNDARY,
        total_len: 10,
        chunk_size_bytes: 8,
        chunk_count: 2,
        header_crc: 1,
        configuration: Vec::new(),
    }
}

fn chunk(index: u64) -> SnapshotChunk {
    SnapshotChunk {
        index,
        crc: 0,
        bytes: vec![1; 8],
    }
}

fn end() -> SnapshotEnd {
    SnapshotEnd {
        trailer: SnapshotTrailer {
            header_crc: 1,
            chunk_count: 2,
            total_len: 10,
            payload_crc: 2,
        },
    }
}

#[test]
fn without_snapshot_install_a_not_retained_prefix_ends_the_session() {
    let mut c = core(false);
    step(&mut c, Event::Start);
    step(&mut c, Event::SessionStarted);
    let out = step(
        &mut c,
        Event::Received(Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch: 1,
            at_replica_last: None,
            primary_last: BOUNDARY,
            commit_lsn: 100,
            epoch_history: history().entries,
        })),
    );
    assert!(matches!(
        out.last(),
        Some(Action::Reconnect {
            reason: SessionEnd::SnapshotRequired { .. },
            ..
        })
    ));
}

#[test]
fn transfer_messages_become_install_actions_in_order() {
    let mut c = core(true);
    to_receiving(&mut c);
    assert_eq!(
        step(&mut c, Event::Received(Message::SnapshotOffer(offer()))),
        vec![Action::SnapshotBegin(offer())]
    );
    for i in 0..2 {
        assert_eq!(
            step(&mut c, Event::Received(Message::SnapshotChunk(chunk(i)))),
            vec![Action::SnapshotChunk(chunk(i))]
        );
    }
    assert_eq!(
        step(&mut c, Event::Received(Message::SnapshotEnd(end()))),
        vec![Action::SnapshotFinish {
            end: end(),
            primary_epochs: history()
        }]
    );
    // Installed: the replica's position is the boundary; it reconnects to stream after it.
    let out = step(&mut c, Event::SnapshotInstalled { boundary: BOUNDARY });
    assert_eq!(out[0], Action::PersistCommit(BOUNDARY.lsn));
    assert_eq!(out[1], Action::PersistEpochs(history()));
    assert!(matches!(out[2], Action::Reconnect { after_ms: 0, .. }));
    assert_eq!(c.last(), BOUNDARY);
    assert_eq!(c.durable_lsn(), BOUNDARY.lsn);
    assert_eq!(c.applied_lsn(), BOUNDARY.lsn);
    let out = step(&mut c, Event::SessionStarted);
    match &out[..] {
        [Action::Send(Message::Hello(h))] => assert_eq!(h.last, BOUNDARY),
        other => panic!("expected a Hello, got {other:?}"),
    }
}

#[test]
fn fm_7_1_invalid_snapshot_halts_snapshot_invalid_at_the_offered_boundary() {
    let mut c = core(true);
    to_receiving(&mut c);
    step(&mut c, Event::Received(Message::SnapshotOffer(offer())));
    step(&mut c, Event::Received(Message::SnapshotChunk(chunk(0))));
    let out = step(
        &mut c,
        Event::SnapshotFailed {
            class: FailureClass::Invalid,
            detail: "chunk 1 crc mismatch".into(),
        },
    );
    match &out[..] {
        [Action::Halt(h)] => {
            assert_eq!(h.reason, HaltReason::SnapshotInvalid);
            assert_eq!((h.lsn, h.epoch), (BOUNDARY.lsn, BOUNDARY.epoch));
            assert!(h.found.contains("chunk 1"));
        }
        other => panic!("expected one halt, got {other:?}"),
    }
    assert_eq!(*c.phase(), Phase::Halted);
    assert_eq!(c.last(), Position::ZERO, "nothing installed");
    assert!(step(&mut c, Event::Received(Message::SnapshotChunk(chunk(1)))).is_empty());
}

#[test]
fn fm_7_2_boundary_conflict_halts_snapshot_boundary() {
    let mut c = core(true);
    to_receiving(&mut c);
    step(&mut c, Event::Received(Message::SnapshotOffer(offer())));
    step(&mut c, Event::Received(Message::SnapshotEnd(end())));
    let out = step(
        &mut c,
        Event::SnapshotFailed {
            class: FailureClass::Boundary,
            detail: "boundary epoch 1 below the local last epoch 2".into(),
        },
    );
    assert!(
        matches!(&out[..], [Action::Halt(h)] if h.reason == HaltReason::SnapshotBoundary),
        "{out:?}"
    );
}

#[test]
fn fm_x_8_session_ending_mid_transfer_aborts_the_install_without_a_halt() {
    let mut c = core(true);
    to_receiving(&mut c);
    step(&mut c, Event::Received(Message::SnapshotOffer(offer())));
    step(&mut c, Event::Received(Message::SnapshotChunk(chunk(0))));
    let out = step(
        &mut c,
        Event::SessionEnded(SessionEnd::ConnectionLost {
            detail: "reset".into(),
        }),
    );
    assert_eq!(out[0], Action::SnapshotAbort);
    assert!(matches!(out[1], Action::Reconnect { .. }));
    assert!(c.halt().is_none());
    assert_eq!(*c.phase(), Phase::Disconnected);
    // The transfer starts over on the next session.
    step(&mut c, Event::SessionStarted);
    assert_eq!(c.last(), Position::ZERO);
}

#[test]
fn snapshot_messages_out_of_sequence_end_the_session_without_a_halt() {
    let mut c = core(true);
    to_receiving(&mut c);
    let out = step(&mut c, Event::Received(Message::SnapshotChunk(chunk(0))));
    assert!(
        matches!(
            out.last(),
            Some(Action::Reconnect {
                reason: SessionEnd::Protocol { .. },
                ..
            })
        ),
        "{out:?}"
    );
    assert!(c.halt().is_none());
}

#[test]
fn fm_7_2_first_record_after_the_boundary_must_chain_to_it() {
    let mut c = core(true);
    to_receiving(&mut c);
    step(&mut c, Event::Received(Message::SnapshotOffer(offer())));
    step(&mut c, Event::Received(Message::SnapshotEnd(end())));
    step(&mut c, Event::SnapshotInstalled { boundary: BOUNDARY });
    step(&mut c, Event::SessionStarted);
    step(
        &mut c,
        Event::Received(Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch: 1,
            at_replica_last: Some(BOUNDARY),
            primary_last: Position {
                lsn: 150,
                epoch: 1,
                crc: 7,
            },
            commit_lsn: 150,
            epoch_history: history().entries,
        })),
    );
    assert_eq!(*c.phase(), Phase::Streaming);
    // Record 101 chains to another crc than the boundary's.
    let mut bytes = Vec::new();
    encode_record(BOUNDARY.lsn + 1, 1, BOUNDARY.crc ^ 1, b"x", &mut bytes);
    let out = step(
        &mut c,
        Event::Received(Message::Records(RecordBatch {
            first_lsn: BOUNDARY.lsn + 1,
            count: 1,
            bytes,
            commit_lsn: 150,
        })),
    );
    match &out[..] {
        [Action::Halt(h)] => {
            assert_eq!(h.reason, HaltReason::SnapshotBoundary);
            assert_eq!(h.lsn, BOUNDARY.lsn + 1);
        }
        other => panic!("expected a snapshot-boundary halt, got {other:?}"),
    }
}

#[test]
fn a_record_chaining_to_the_boundary_streams_normally() {
    let mut c = core(true);
    to_receiving(&mut c);
    step(&mut c, Event::Received(Message::SnapshotOffer(offer())));
    step(&mut c, Event::Received(Message::SnapshotEnd(end())));
    step(&mut c, Event::SnapshotInstalled { boundary: BOUNDARY });
    step(&mut c, Event::SessionStarted);
    step(
        &mut c,
        Event::Received(Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch: 1,
            at_replica_last: Some(BOUNDARY),
            primary_last: BOUNDARY,
            commit_lsn: 100,
            epoch_history: history().entries,
        })),
    );
    let mut bytes = Vec::new();
    let pos = encode_record(BOUNDARY.lsn + 1, 1, BOUNDARY.crc, b"x", &mut bytes);
    let out = step(
        &mut c,
        Event::Received(Message::Records(RecordBatch {
            first_lsn: BOUNDARY.lsn + 1,
            count: 1,
            bytes,
            commit_lsn: 101,
        })),
    );
    assert!(
        matches!(&out[0], Action::AppendVerified(b) if b.last == pos),
        "{out:?}"
    );
    assert_eq!(c.last(), pos);
}

/// Finding 6 (walship-fault): a duplicate later in the first frame after the boundary
/// (the first record chained) is `duplicate`, not a boundary conflict.
#[test]
fn duplicate_after_a_first_record_that_chains_to_the_boundary_halts_duplicate() {
    let mut c = core(true);
    to_receiving(&mut c);
    step(&mut c, Event::Received(Message::SnapshotOffer(offer())));
    step(&mut c, Event::Received(Message::SnapshotEnd(end())));
    step(&mut c, Event::SnapshotInstalled { boundary: BOUNDARY });
    step(&mut c, Event::SessionStarted);
    step(
        &mut c,
        Event::Received(Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch: 1,
            at_replica_last: Some(BOUNDARY),
            primary_last: BOUNDARY,
            commit_lsn: 100,
            epoch_history: history().entries,
        })),
    );
    let mut bytes = Vec::new();
    encode_record(BOUNDARY.lsn + 1, 1, BOUNDARY.crc, b"x", &mut bytes);
    let twice = [bytes.clone(), bytes].concat();
    let out = step(
        &mut c,
        Event::Received(Message::Records(RecordBatch {
            first_lsn: BOUNDARY.lsn + 1,
            count: 2,
            bytes: twice,
            commit_lsn: 101,
        })),
    );
    match &out[..] {
        [Action::Halt(h)] => {
            assert_eq!(h.reason, HaltReason::Duplicate, "{h:?}");
            assert_eq!(h.lsn, BOUNDARY.lsn + 1);
        }
        other => panic!("expected a duplicate halt, got {other:?}"),
    }
}
