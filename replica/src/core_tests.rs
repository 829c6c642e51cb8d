//! Unit and property tests of the replica core (sans-IO: no disk, no network).

use super::*;
use proptest::prelude::*;
use walship_wal::record::encode_record;
use walship_wal::state::EpochEntry;
use walship_wire::message::{Refuse, RefuseReason};

const MAX: u32 = 1 << 16;

fn config() -> CoreConfig {
    CoreConfig {
        node_id: "r1".into(),
        cluster_id: "c1".into(),
        primary_name: "p1".into(),
        max_record_bytes: MAX,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
        min_primary_epoch: 0,
        incarnation: 0x1ca7,
    }
}

fn empty_history() -> EpochHistory {
    EpochHistory {
        entries: Vec::new(),
    }
}

/// A primary's log: record bytes and identities, index i holds lsn i + 1.
#[derive(Clone, Debug, Default)]
struct Log {
    records: Vec<Vec<u8>>,
    positions: Vec<Position>,
}

impl Log {
    fn build(epochs: &[u64]) -> Log {
        let mut log = Log::default();
        for (i, &e) in epochs.iter().enumerate() {
            log.push(e, format!("payload-{}", i + 1).as_bytes());
        }
        log
    }
    fn push(&mut self, epoch: u64, payload: &[u8]) {
        let prev = self.last();
        let mut out = Vec::new();
        let pos = encode_record(prev.lsn + 1, epoch, prev.crc, payload, &mut out);
        self.records.push(out);
        self.positions.push(pos);
    }
    /// The epoch history of this log, ending with `epoch` (the primary's current one).
    fn history(&self, epoch: u64) -> EpochHistory {
        let mut h = EpochHistory::new();
        for p in &self.positions {
            if h.last_epoch() < p.epoch {
                h.push(p.epoch, p.lsn).expect("increasing");
            }
        }
        if h.last_epoch() < epoch {
            h.push(epoch, self.last().lsn + 1).expect("increasing");
        }
        h
    }
    fn prefix(&self, n: Lsn) -> Log {
        Log {
            records: self.records[..n as usize].to_vec(),
            positions: self.positions[..n as usize].to_vec(),
        }
    }
    fn last(&self) -> Position {
        self.positions.last().copied().unwrap_or(Position::ZERO)
    }
    fn at(&self, lsn: Lsn) -> Option<Position> {
        if lsn == 0 {
            return Some(Position::ZERO);
        }
        self.positions.get(lsn as usize - 1).copied()
    }
    /// A batch of lsns `from ..= to` (stored bytes concatenated).
    fn batch(&self, from: Lsn, to: Lsn, commit_lsn: Lsn) -> RecordBatch {
        let mut bytes = Vec::new();
        for lsn in from..=to {
            bytes.extend_from_slice(&self.records[lsn as usize - 1]);
        }
        RecordBatch {
            first_lsn: from,
            count: (to + 1 - from) as u32,
            bytes,
            commit_lsn,
        }
    }
}

/// The replica's local log as the core sees it through [`LocalLog`].
struct MemLog(Vec<Position>);

impl LocalLog for MemLog {
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        if lsn == 0 {
            return Ok(Some(Position::ZERO));
        }
        Ok(self.0.get(lsn as usize - 1).copied())
    }
}

fn welcome(primary: &Log, epoch: u64, replica_last: Lsn, commit_lsn: Lsn) -> Message {
    Message::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        primary_id: "p1".into(),
        epoch,
        at_replica_last: primary.at(replica_last),
        primary_last: primary.last(),
        commit_lsn,
        epoch_history: primary.history(epoch).entries,
    })
}

/// A core driven like the real driver: it executes AppendVerified into a local
/// log, syncs immediately, and records every action.
struct Harness {
    core: ReplicaCore,
    local: MemLog,
    appended: Vec<Lsn>,
    applied: Vec<Lsn>,
    halts: Vec<HaltRecord>,
    sent: Vec<Message>,
    all: Vec<Action>,
}

impl Harness {
    fn new(local: &Log, commit_lsn: Lsn, applied_lsn: Lsn) -> Harness {
        let state = DurableState {
            last: local.last(),
            commit_lsn,
            applied_lsn,
            epoch_history: empty_history(),
            halt: None,
        };
        Harness {
            core: ReplicaCore::new(config(), state),
            local: MemLog(local.positions.clone()),
            appended: Vec::new(),
            applied: Vec::new(),
            halts: Vec::new(),
            sent: Vec::new(),
            all: Vec::new(),
        }
    }

    /// Feeds one event and performs its actions (feeding Durable after Sync).
    fn feed(&mut self, event: Event) -> Vec<Action> {
        let actions = self
            .core
            .handle(event, 1_000, &mut self.local)
            .expect("in-memory log does not fail");
        let mut all = actions.clone();
        for a in &actions {
            match a {
                Action::AppendVerified(b) => {
                    let mut off = 0;
                    while off < b.bytes.len() {
                        let v = decode_record(&b.bytes[off..], MAX).expect("verified bytes");
                        assert_eq!(v.lsn(), self.local.0.len() as u64 + 1, "append in order");
                        self.local.0.push(v.position());
                        self.appended.push(v.lsn());
                        off += v.bytes().len();
                    }
                }
                Action::Sync => {
                    let lsn = self.local.0.len() as Lsn;
                    all.extend(self.feed(Event::Durable { lsn }));
                }
                Action::Apply { up_to } => {
                    let from = self
                        .applied
                        .last()
                        .copied()
                        .unwrap_or(self.core_applied_start());
                    for lsn in from + 1..=*up_to {
                        self.applied.push(lsn);
                    }
                }
                Action::Halt(h) => self.halts.push(h.clone()),
                Action::Send(m) => self.sent.push(m.clone()),
                _ => {}
            }
        }
        self.all.extend(actions);
        all
    }

    fn core_applied_start(&self) -> Lsn {
        0
    }

    /// Start + session + Welcome from `primary` at `epoch`.
    fn connect(&mut self, primary: &Log, epoch: u64, commit_lsn: Lsn) -> Vec<Action> {
        if *self.core.phase() == Phase::Idle {
            self.feed(Event::Start);
        }
        self.feed(Event::SessionStarted);
        let last = self.core.last().lsn;
        self.feed(Event::Received(welcome(primary, epoch, last, commit_lsn)))
    }
}

fn has_append(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::AppendVerified(_)))
}

fn only_halt(actions: &[Action]) -> HaltRecord {
    assert_eq!(
        actions.len(),
        1,
        "expected exactly one Halt action, got {actions:?}"
    );
    match &actions[0] {
        Action::Halt(h) => h.clone(),
        other => panic!("expected Halt, got {other:?}"),
    }
}

#[test]
fn start_replays_committed_records_then_connects() {
    let local = Log::build(&[1; 5]);
    let mut core = ReplicaCore::new(
        config(),
        DurableState {
            last: local.last(),
            commit_lsn: 4,
            applied_lsn: 2,
            epoch_history: empty_history(),
            halt: None,
        },
    );
    let actions = core
        .handle(Event::Start, 0, &mut MemLog(local.positions.clone()))
        .expect("ok");
    assert_eq!(actions[0], Action::Apply { up_to: 4 });
    assert!(matches!(actions[1], Action::Reconnect { after_ms: 0, .. }));
    assert_eq!(actions.len(), 2);
}

#[test]
fn hello_carries_last_position_commit_and_highest_epoch() {
    let local = Log::build(&[1, 1, 2]);
    let mut h = Harness::new(&local, 2, 2);
    h.feed(Event::Start);
    let actions = h.feed(Event::SessionStarted);
    match &actions[..] {
        [Action::Send(Message::Hello(hello))] => {
            assert_eq!(hello.last, local.last());
            assert_eq!(hello.commit_lsn, 2);
            assert_eq!(hello.highest_epoch_seen, 2);
            assert_eq!(hello.node_id, "r1");
            assert_eq!(hello.cluster_id, "c1");
            assert_eq!(
                hello.incarnation, 0x1ca7,
                "the configured incarnation is announced"
            );
            assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
        }
        other => panic!("expected one Hello, got {other:?}"),
    }
}

#[test]
fn matching_welcome_persists_epochs_then_streams_and_receipts() {
    let primary = Log::build(&[1; 10]);
    let mut h = Harness::new(&Log::default(), 0, 0);
    let actions = h.connect(&primary, 1, 0);
    assert_eq!(*h.core.phase(), Phase::Streaming);
    assert!(
        matches!(actions[0], Action::PersistEpochs(ref e) if e.entries == vec![EpochEntry { epoch: 1, start_lsn: 1 }])
    );
    assert!(actions.contains(&Action::Send(Message::Receipt { durable_lsn: 0 })));

    let actions = h.feed(Event::Received(Message::Records(primary.batch(1, 4, 2))));
    assert!(has_append(&actions));
    assert_eq!(h.appended, vec![1, 2, 3, 4]);
    assert!(actions.contains(&Action::Send(Message::Receipt { durable_lsn: 4 })));
    // Applied only up to the commit watermark.
    assert_eq!(h.applied, vec![1, 2]);
    h.feed(Event::Received(Message::Commit { commit_lsn: 9 }));
    assert_eq!(h.applied, vec![1, 2, 3, 4], "apply never passes durable");
    assert_eq!(h.core.commit_lsn(), 9);
}

#[test]
fn apply_waits_for_durability_and_commit() {
    let primary = Log::build(&[1; 4]);
    let mut core = ReplicaCore::new(
        config(),
        DurableState {
            last: Position::ZERO,
            commit_lsn: 0,
            applied_lsn: 0,
            epoch_history: empty_history(),
            halt: None,
        },
    );
    let mut log = MemLog(Vec::new());
    core.handle(Event::Start, 0, &mut log).expect("ok");
    core.handle(Event::SessionStarted, 0, &mut log).expect("ok");
    core.handle(Event::Received(welcome(&primary, 1, 0, 4)), 0, &mut log)
        .expect("ok");
    let actions = core
        .handle(
            Event::Received(Message::Records(primary.batch(1, 4, 4))),
            0,
            &mut log,
        )
        .expect("ok");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Apply { .. })),
        "nothing is applied before it is durable: {actions:?}"
    );
    let actions = core
        .handle(Event::Durable { lsn: 3 }, 0, &mut log)
        .expect("ok");
    assert_eq!(
        actions,
        vec![
            Action::Send(Message::Receipt { durable_lsn: 3 }),
            Action::Apply { up_to: 3 }
        ]
    );
}

fn streaming_harness(primary: &Log, have: Lsn) -> Harness {
    let local = primary.prefix(have);
    let mut h = Harness::new(&local, 0, 0);
    h.connect(primary, 1, 0);
    assert_eq!(*h.core.phase(), Phase::Streaming);
    h
}

fn raw_batch(records: &[&Vec<u8>], first_lsn: Lsn) -> RecordBatch {
    let mut bytes = Vec::new();
    for r in records {
        bytes.extend_from_slice(r);
    }
    RecordBatch {
        first_lsn,
        count: records.len() as u32,
        bytes,
        commit_lsn: 0,
    }
}

#[test]
fn fm_6_2_gap_in_batch_halts_with_missing_lsn() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    let b = raw_batch(&[&primary.records[4], &primary.records[5]], 5);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::Gap);
    assert_eq!(halt.lsn, 4);
    assert_eq!(halt.expected, "lsn 4");
    assert_eq!(halt.found, "lsn 5");
    assert_eq!(halt.peer, "p1");
    assert_eq!(halt.at_unix_ms, 1_000);
    assert_eq!(*h.core.phase(), Phase::Halted);
}

#[test]
fn fm_5_2_duplicate_in_batch_halts() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    let b = raw_batch(&[&primary.records[2], &primary.records[3]], 3);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::Duplicate);
    assert_eq!(halt.lsn, 3);
    assert_eq!(halt.expected, "lsn 4");
    assert_eq!(halt.found, "lsn 3");
}

#[test]
fn fm_5_2_reorder_permutation_halts_before_any_append() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    let b = raw_batch(&[&primary.records[4], &primary.records[3]], 5);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::Reorder);
    assert_eq!(halt.lsn, 4);
    assert_eq!(halt.found, "lsn 5");
    assert!(h.appended.is_empty());
}

#[test]
fn fm_5_2_expected_lsn_later_in_frame_is_reorder_not_gap() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    // 5, 4, 4: not a permutation of {4, 5, 6}, but 4 appears after 5.
    let b = raw_batch(
        &[
            &primary.records[4],
            &primary.records[3],
            &primary.records[3],
        ],
        5,
    );
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::Reorder);
    assert_eq!(halt.lsn, 4);
}

#[test]
fn fm_6_1_flipped_payload_byte_halts_checksum_with_stored_and_computed_crc() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    let mut b = primary.batch(4, 6, 0);
    let second = primary.records[3].len();
    b.bytes[second + RECORD_HEADER_LEN_T] ^= 0x40; // first payload byte of lsn 5
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::Checksum);
    assert_eq!(halt.lsn, 5);
    assert!(halt
        .found
        .contains(&format!("{:#010x}", primary.positions[4].crc)));
    assert!(
        h.appended.is_empty(),
        "nothing of a failed batch is appended"
    );
}

const RECORD_HEADER_LEN_T: usize = walship_wal::RECORD_HEADER_LEN;

#[test]
fn fm_8_1_prev_crc_chain_break_halts_divergence() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    let mut other = Vec::new();
    encode_record(4, 1, 0xdead_beef, b"other history", &mut other);
    let b = raw_batch(&[&other], 4);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::Divergence);
    assert_eq!(halt.lsn, 4);
    assert_eq!(halt.found, "prev_crc 0xdeadbeef");
}

#[test]
fn fm_x_3_epoch_regression_halts() {
    let primary = Log::build(&[1, 1, 2]);
    let local = primary.clone();
    let mut h = Harness::new(&local, 0, 0);
    h.connect(&primary, 2, 0);
    let mut rec = Vec::new();
    encode_record(4, 1, primary.last().crc, b"back in time", &mut rec);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(raw_batch(&[&rec], 4)))));
    assert_eq!(halt.reason, HaltReason::EpochRegression);
    assert_eq!(halt.lsn, 4);
    assert_eq!(halt.epoch, 1);
    assert_eq!(halt.expected, "epoch >= 2");
}

#[test]
fn record_epoch_above_primary_epoch_is_divergence() {
    let primary = Log::build(&[1, 1]);
    let mut h = streaming_harness(&primary, 2);
    let mut rec = Vec::new();
    encode_record(3, 7, primary.last().crc, b"future", &mut rec);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(raw_batch(&[&rec], 3)))));
    assert_eq!(halt.reason, HaltReason::Divergence);
    assert_eq!(halt.lsn, 3);
    assert_eq!(halt.epoch, 7);
}

#[test]
fn batch_count_mismatch_halts_malformed_batch() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    let mut b = primary.batch(4, 5, 0);
    b.count = 3;
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::MalformedBatch);
    assert_eq!(halt.lsn, 4);
}

#[test]
fn record_running_past_frame_end_halts_malformed_batch() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    let mut b = primary.batch(4, 5, 0);
    b.bytes.truncate(b.bytes.len() - 1);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!(halt.reason, HaltReason::MalformedBatch);
    assert_eq!(halt.lsn, 5);
}

/// The refusal and session end of a stale primary's Welcome: asserts the core sent
/// `Refuse{StalePrimary}` first, stored nothing (no append, epoch history, commit or apply)
/// and ended the session without a halt.
fn assert_refused_stale(actions: &[Action], primary_epoch: u64, fence: u64) {
    let want_refuse = Action::Send(Message::Refuse(Refuse {
        reason: RefuseReason::StalePrimary {
            primary_epoch,
            current_epoch: fence,
        },
    }));
    assert_eq!(actions.first(), Some(&want_refuse), "{actions:?}");
    for a in actions {
        assert!(
            matches!(
                a,
                Action::Send(Message::Refuse(_)) | Action::Reconnect { .. }
            ),
            "a stale primary's Welcome caused {a:?}"
        );
    }
    match actions.last() {
        Some(Action::Reconnect {
            reason:
                SessionEnd::StalePrimary {
                    primary_epoch: e,
                    fence: f,
                    ..
                },
            after_ms,
        }) => {
            assert_eq!((*e, *f), (primary_epoch, fence));
            assert!(*after_ms > 0, "retries with its usual backoff");
        }
        other => panic!("expected a reconnect after StalePrimary, got {other:?}"),
    }
}

#[test]
fn fm_x_2_stale_primary_welcome_is_refused_and_nothing_is_stored() {
    let primary = Log::build(&[1, 1]);
    let local = Log::build(&[1, 1, 3]);
    let mut h = Harness::new(&local, 0, 0);
    h.feed(Event::Start);
    let hello = h.feed(Event::SessionStarted);
    assert!(matches!(&hello[..],
        [Action::Send(Message::Hello(hl))] if hl.highest_epoch_seen == 3));
    let history = h.core.epoch_history().clone();
    let actions = h.feed(Event::Received(welcome(&primary, 2, 3, 2)));
    assert_refused_stale(&actions, 2, 3);
    assert!(h.halts.is_empty() && h.core.halt().is_none());
    assert_eq!(*h.core.phase(), Phase::Disconnected);
    assert_eq!(h.core.last(), local.last(), "the log is unchanged");
    assert_eq!(h.core.epoch_history(), &history);
    assert_eq!(h.core.commit_lsn(), 0, "nothing of its Welcome is taken");
    assert_eq!(h.core.primary(), None);
    // A newer primary is followed normally afterwards.
    let newer = Log::build(&[1, 1, 3, 3]);
    h.connect(&newer, 3, 4);
    assert_eq!(*h.core.phase(), Phase::Streaming);
}

#[test]
fn fencing_bound_comes_from_persisted_epoch_history() {
    let primary = Log::build(&[1, 1]);
    let mut core = ReplicaCore::new(
        config(),
        DurableState {
            last: primary.last(),
            commit_lsn: 0,
            applied_lsn: 0,
            epoch_history: EpochHistory {
                entries: vec![EpochEntry {
                    epoch: 5,
                    start_lsn: 3,
                }],
            },
            halt: None,
        },
    );
    let mut log = MemLog(primary.positions.clone());
    core.handle(Event::Start, 0, &mut log).expect("ok");
    core.handle(Event::SessionStarted, 0, &mut log).expect("ok");
    let actions = core
        .handle(Event::Received(welcome(&primary, 4, 2, 0)), 0, &mut log)
        .expect("ok");
    assert_refused_stale(&actions, 4, 5);
    assert!(core.halt().is_none());
}

#[test]
fn fm_x_2_min_primary_epoch_fences_a_primary_the_history_does_not_know_is_stale() {
    // The node voted in epoch 4: a primary of epoch 2 (the replica's history says 2) is
    // stale although nothing in the log shows a newer epoch.
    let primary = Log::build(&[1, 2]);
    let mut h = Harness::new(&primary.prefix(1), 0, 0);
    h.core = ReplicaCore::new(
        CoreConfig {
            min_primary_epoch: 4,
            ..config()
        },
        DurableState {
            last: primary.at(1).expect("lsn 1"),
            commit_lsn: 0,
            applied_lsn: 0,
            epoch_history: primary.history(2),
            halt: None,
        },
    );
    assert_eq!(h.core.highest_epoch_seen(), 2);
    assert_eq!(h.core.fence(), 4);
    h.feed(Event::Start);
    let hello = h.feed(Event::SessionStarted);
    assert!(matches!(&hello[..],
        [Action::Send(Message::Hello(hl))] if hl.highest_epoch_seen == 4));
    let actions = h.feed(Event::Received(welcome(&primary, 2, 1, 1)));
    assert_refused_stale(&actions, 2, 4);
    assert!(h.appended.is_empty() && h.halts.is_empty());
}

#[test]
fn fm_x_2_raising_min_primary_epoch_mid_session_refuses_the_primary_and_stores_nothing_more() {
    let primary = Log::build(&[1, 1, 1]);
    let mut h = streaming_harness(&primary, 2);
    assert_eq!(*h.core.phase(), Phase::Streaming);
    let last = h.core.last();
    // Lowering or repeating is a no-op.
    assert!(h.feed(Event::MinPrimaryEpoch(0)).is_empty());
    assert!(h.feed(Event::MinPrimaryEpoch(1)).is_empty());
    assert_eq!(*h.core.phase(), Phase::Streaming);
    // The node voted in epoch 2: the epoch-1 primary is stale now.
    let actions = h.feed(Event::MinPrimaryEpoch(2));
    assert_refused_stale(&actions, 1, 2);
    // Its records still in flight are dropped with the session.
    let late = h.feed(Event::Received(Message::Records(primary.batch(3, 3, 3))));
    assert!(
        late.iter().all(|a| !matches!(a, Action::AppendVerified(_))),
        "{late:?}"
    );
    assert_eq!(h.core.last(), last);
    assert!(h.halts.is_empty());
}

#[test]
fn refuse_not_primary_ends_the_session_with_the_hint_and_no_halt() {
    let primary = Log::build(&[1]);
    let mut h = Harness::new(&primary, 0, 0);
    h.feed(Event::Start);
    h.feed(Event::SessionStarted);
    let actions = h.feed(Event::Received(Message::Refuse(Refuse {
        reason: RefuseReason::NotPrimary {
            epoch: 7,
            primary_hint: Some("n3".into()),
        },
    })));
    let end = match actions.last() {
        Some(Action::Reconnect { reason, .. }) => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        end,
        SessionEnd::NotPrimary {
            epoch: 7,
            primary_hint: Some("n3".into())
        }
    );
    assert_eq!(
        end.to_string(),
        "not the primary (epoch 7); primary hint: n3"
    );
    assert!(h.halts.is_empty());
    assert_eq!(*h.core.phase(), Phase::Disconnected);
}

/// Runs the handshake of a replica holding `local` against `primary`, answering probes.
fn handshake_against(local: &Log, primary: &Log) -> (Harness, Vec<Lsn>) {
    let mut h = Harness::new(local, 0, 0);
    let mut probes = Vec::new();
    let mut actions = h.connect(primary, 1, 0);
    loop {
        let probe = actions.iter().find_map(|a| match a {
            Action::Send(Message::Probe { lsn }) => Some(*lsn),
            _ => None,
        });
        let Some(lsn) = probe else { break };
        probes.push(lsn);
        actions = h.feed(Event::Received(Message::ProbeReply {
            lsn,
            position: primary.at(lsn),
        }));
    }
    (h, probes)
}

#[test]
fn fm_8_1_divergence_found_by_probe_search_at_first_differing_lsn() {
    let mut primary = Log::build(&[1; 6]);
    let mut local = primary.clone();
    for i in 7..=20 {
        primary.push(1, format!("primary {i}").as_bytes());
    }
    for i in 7..=15 {
        local.push(1, format!("replica {i}").as_bytes());
    }
    let (h, probes) = handshake_against(&local, &primary);
    assert!(!probes.is_empty());
    assert!(probes.len() <= 5, "binary search: {probes:?}");
    let halt = h.halts.first().expect("halted");
    assert_eq!(halt.reason, HaltReason::Divergence);
    assert_eq!(halt.lsn, 7);
    assert_eq!(
        halt.expected,
        format!("primary record {}", primary.positions[6])
    );
    assert_eq!(halt.found, format!("replica record {}", local.positions[6]));
    assert!(h.appended.is_empty());
}

#[test]
fn fm_x_10_replica_ahead_of_primary_halts_divergence_after_primary_end() {
    let primary = Log::build(&[1; 8]);
    let mut local = primary.clone();
    local.push(1, b"tentative 9");
    local.push(1, b"tentative 10");
    let (h, _) = handshake_against(&local, &primary);
    let halt = h.halts.first().expect("halted");
    assert_eq!(halt.reason, HaltReason::Divergence);
    assert_eq!(halt.lsn, 9);
    assert!(halt.expected.starts_with("no record"), "{}", halt.expected);
}

#[test]
fn divergence_at_first_lsn_is_found() {
    let primary = Log::build(&[1; 9]);
    let mut local = Log::default();
    for i in 1..=9 {
        local.push(1, format!("other {i}").as_bytes());
    }
    let (h, _) = handshake_against(&local, &primary);
    assert_eq!(
        h.halts.first().map(|x| (x.reason, x.lsn)),
        Some((HaltReason::Divergence, 1))
    );
}

#[test]
fn halted_core_emits_nothing_for_any_event() {
    let primary = Log::build(&[1; 4]);
    let mut h = streaming_harness(&primary, 1);
    let b = raw_batch(&[&primary.records[2]], 3);
    only_halt(&h.feed(Event::Received(Message::Records(b))));
    let events = vec![
        Event::Received(Message::Records(primary.batch(2, 4, 4))),
        Event::Received(Message::Commit { commit_lsn: 4 }),
        Event::Durable { lsn: 1 },
        Event::SessionEnded(SessionEnd::ConnectionLost { detail: "x".into() }),
        Event::SessionStarted,
        Event::Start,
    ];
    for e in events {
        assert_eq!(h.feed(e.clone()), Vec::<Action>::new(), "{e:?}");
    }
}

#[test]
fn core_built_with_halt_record_never_connects() {
    let halt = HaltRecord {
        reason: HaltReason::Gap,
        lsn: 4,
        epoch: 1,
        expected: "lsn 4".into(),
        found: "lsn 5".into(),
        peer: "p1".into(),
        at_unix_ms: 1,
        detail: String::new(),
    };
    let mut core = ReplicaCore::new(
        config(),
        DurableState {
            last: Position::ZERO,
            commit_lsn: 0,
            applied_lsn: 0,
            epoch_history: empty_history(),
            halt: Some(halt.clone()),
        },
    );
    assert_eq!(*core.phase(), Phase::Halted);
    assert_eq!(core.halt(), Some(&halt));
    let actions = core
        .handle(Event::Start, 0, &mut MemLog(Vec::new()))
        .expect("ok");
    assert!(actions.is_empty());
}

#[test]
fn session_end_is_not_a_halt_and_backoff_doubles_to_the_cap_then_resets() {
    let primary = Log::build(&[1; 4]);
    let mut h = Harness::new(&Log::default(), 0, 0);
    h.feed(Event::Start);
    let mut delays = Vec::new();
    for _ in 0..6 {
        let actions = h.feed(Event::SessionEnded(SessionEnd::ConnectFailed {
            detail: "refused".into(),
        }));
        match &actions[..] {
            [Action::Reconnect { after_ms, .. }] => delays.push(*after_ms),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
    h.connect(&primary, 1, 0);
    let actions = h.feed(Event::SessionEnded(SessionEnd::FrameTruncated {
        received: 10,
        expected: 100,
    }));
    assert!(matches!(
        actions[..],
        [Action::Reconnect { after_ms: 100, .. }]
    ));
    assert!(h.halts.is_empty());
}

#[test]
fn session_end_after_unsynced_append_syncs_before_reconnecting() {
    let primary = Log::build(&[1; 4]);
    let mut local = MemLog(Vec::new());
    let mut core = ReplicaCore::new(
        config(),
        DurableState {
            last: Position::ZERO,
            commit_lsn: 0,
            applied_lsn: 0,
            epoch_history: empty_history(),
            halt: None,
        },
    );
    core.handle(Event::Start, 0, &mut local).expect("ok");
    core.handle(Event::SessionStarted, 0, &mut local)
        .expect("ok");
    core.handle(Event::Received(welcome(&primary, 1, 0, 0)), 0, &mut local)
        .expect("ok");
    core.handle(
        Event::Received(Message::Records(primary.batch(1, 2, 0))),
        0,
        &mut local,
    )
    .expect("ok");
    let actions = core
        .handle(
            Event::SessionEnded(SessionEnd::ConnectionLost {
                detail: "idle timeout".into(),
            }),
            0,
            &mut local,
        )
        .expect("ok");
    assert_eq!(actions[0], Action::Sync);
    assert!(matches!(actions[1], Action::Reconnect { .. }));
}

#[test]
fn refuse_and_out_of_order_messages_end_the_session_without_halt() {
    let primary = Log::build(&[1; 4]);
    let mut h = Harness::new(&Log::default(), 0, 0);
    h.feed(Event::Start);
    h.feed(Event::SessionStarted);
    let actions = h.feed(Event::Received(Message::Refuse(Refuse {
        reason: RefuseReason::ClusterMismatch {
            ours: "c".into(),
            theirs: "other".into(),
        },
    })));
    assert!(matches!(
        actions[..],
        [Action::Reconnect {
            reason: SessionEnd::Refused { .. },
            ..
        }]
    ));
    h.feed(Event::SessionStarted);
    // Records before Welcome: protocol violation, not history.
    let actions = h.feed(Event::Received(Message::Records(primary.batch(1, 2, 0))));
    assert!(matches!(
        actions[..],
        [Action::Reconnect {
            reason: SessionEnd::Protocol { .. },
            ..
        }]
    ));
    assert!(h.halts.is_empty());
    assert!(h.appended.is_empty());
}

#[test]
fn front_truncated_primary_ends_session_as_snapshot_required() {
    let primary = Log::build(&[1; 4]);
    let mut h = Harness::new(&Log::default(), 0, 0);
    h.feed(Event::Start);
    h.feed(Event::SessionStarted);
    let mut w = match welcome(&primary, 1, 0, 0) {
        Message::Welcome(w) => w,
        _ => unreachable!(),
    };
    w.at_replica_last = Some(primary.positions[1]);
    let actions = h.feed(Event::Received(Message::Welcome(w)));
    assert!(matches!(
        actions[..],
        [Action::Reconnect {
            reason: SessionEnd::SnapshotRequired { .. },
            ..
        }]
    ));
    assert!(h.halts.is_empty());
}

// ---------------------------------------------------------------- properties

/// An independent, boolean statement of "this batch may be appended after `last`".
fn oracle_valid(
    last: Position,
    primary_epoch: u64,
    history: Option<&EpochHistory>,
    b: &RecordBatch,
) -> bool {
    let mut prev = last;
    let mut off = 0;
    let mut n = 0u32;
    while off < b.bytes.len() {
        let Ok(v) = decode_record(&b.bytes[off..], MAX) else {
            return false;
        };
        if n == 0 && v.lsn() != b.first_lsn {
            return false;
        }
        if v.lsn() != prev.lsn + 1
            || v.prev_crc() != prev.crc
            || v.epoch() < prev.epoch
            || v.epoch() > primary_epoch
            || history
                .and_then(|h| h.epoch_at(v.lsn()))
                .is_some_and(|e| e != v.epoch())
        {
            return false;
        }
        prev = v.position();
        off += v.bytes().len();
        n += 1;
    }
    n == b.count
}

#[derive(Clone, Debug)]
enum Mutation {
    DropRecord(usize),
    DuplicateRecord(usize),
    Swap(usize, usize),
    FlipByte(usize, u8),
    LowerEpoch(usize),
    BreakPrevCrc(usize),
    Count(i8),
    FirstLsn(i8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DropRecord),
        any::<usize>().prop_map(Mutation::DuplicateRecord),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<usize>(), 1u8..).prop_map(|(a, b)| Mutation::FlipByte(a, b)),
        any::<usize>().prop_map(Mutation::LowerEpoch),
        any::<usize>().prop_map(Mutation::BreakPrevCrc),
        (-2i8..=2).prop_map(Mutation::Count),
        (-2i8..=2).prop_map(Mutation::FirstLsn),
    ]
}

/// Applies `m` to the records `recs` (lsns first..) of a batch.
fn mutate(mut recs: Vec<Vec<u8>>, first_lsn: Lsn, m: &Mutation) -> RecordBatch {
    let n = recs.len();
    let mut count = n as i64;
    let mut first = first_lsn as i64;
    match *m {
        Mutation::DropRecord(i) => {
            recs.remove(i % n);
            count -= 1;
        }
        Mutation::DuplicateRecord(i) => {
            let r = recs[i % n].clone();
            recs.insert(i % n, r);
            count += 1;
        }
        Mutation::Swap(a, b) => recs.swap(a % n, b % n),
        Mutation::FlipByte(..) | Mutation::Count(_) | Mutation::FirstLsn(_) => {}
        Mutation::LowerEpoch(i) | Mutation::BreakPrevCrc(i) => {
            let i = i % n;
            let v = decode_record(&recs[i], MAX).expect("valid");
            let (epoch, prev_crc) = match m {
                Mutation::LowerEpoch(_) => (v.epoch().saturating_sub(1), v.prev_crc()),
                _ => (v.epoch(), v.prev_crc() ^ 1),
            };
            let mut out = Vec::new();
            encode_record(v.lsn(), epoch, prev_crc, v.payload(), &mut out);
            recs[i] = out;
        }
    }
    if let Mutation::Count(d) = m {
        count += i64::from(*d);
    }
    if let Mutation::FirstLsn(d) = m {
        first += i64::from(*d);
    }
    let mut bytes: Vec<u8> = recs.concat();
    if let Mutation::FlipByte(i, x) = m {
        if !bytes.is_empty() {
            let at = i % bytes.len();
            bytes[at] ^= x;
        }
    }
    RecordBatch {
        first_lsn: first.max(0) as u64,
        count: count.max(0) as u32,
        bytes,
        commit_lsn: 0,
    }
}

fn epochs_strategy() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(0u64..2, 1..60).prop_map(|steps| {
        let mut e = 1;
        steps
            .into_iter()
            .map(|s| {
                e += s;
                e
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// A valid stream of N records, cut into arbitrary batches and sessions that end
    /// at arbitrary points (a reconnect resumes from the durable lsn + 1), is appended
    /// in order exactly once and applied in order exactly once up to the commit watermark.
    #[test]
    fn valid_stream_is_appended_and_applied_in_order_exactly_once(
        epochs in epochs_strategy(),
        cuts in proptest::collection::vec((1u64..8, any::<bool>()), 1..40),
    ) {
        let primary = Log::build(&epochs);
        let n = primary.last().lsn;
        let epoch = primary.last().epoch;
        let mut h = Harness::new(&Log::default(), 0, 0);
        h.connect(&primary, epoch, 0);
        let mut cut = cuts.iter().cycle();
        let mut sessions = 0;
        while h.core.last().lsn < n {
            let (len, end_session) = *cut.next().expect("cycle");
            let from = h.core.last().lsn + 1;
            let to = (from + len - 1).min(n);
            h.feed(Event::Received(Message::Records(primary.batch(from, to, to))));
            if end_session && sessions < 50 {
                sessions += 1;
                h.feed(Event::SessionEnded(SessionEnd::FrameTruncated { received: 3, expected: 9 }));
                // The primary resumes from the replica's Hello.last.lsn + 1.
                let hello_last = h.core.last();
                prop_assert_eq!(hello_last.lsn, h.core.durable_lsn());
                h.connect(&primary, epoch, to);
            }
        }
        h.feed(Event::Received(Message::Commit { commit_lsn: n }));
        prop_assert!(h.halts.is_empty());
        prop_assert_eq!(h.appended.clone(), (1..=n).collect::<Vec<_>>());
        prop_assert_eq!(h.applied.clone(), (1..=n).collect::<Vec<_>>());
        prop_assert_eq!(h.local.0.clone(), primary.positions.clone());
    }

    /// Whatever one batch of an otherwise valid stream is turned into, the replica
    /// appends it only if it is valid, halts otherwise, and after a halt emits nothing.
    #[test]
    fn replica_never_appends_a_failing_batch_and_stays_halted(
        epochs in epochs_strategy(),
        have in 0usize..20,
        len in 1usize..6,
        m in mutation(),
    ) {
        let primary = Log::build(&epochs);
        let n = primary.positions.len();
        let have = have.min(n - 1);
        let to = (have + len).min(n);
        let mut h = streaming_harness_epoch(&primary, have as Lsn);
        let recs: Vec<Vec<u8>> = primary.records[have..to].to_vec();
        let batch = mutate(recs, have as Lsn + 1, &m);
        let valid = oracle_valid(
            h.core.last(),
            primary.last().epoch,
            Some(h.core.epoch_history()),
            &batch,
        );
        let before = h.appended.len();
        let actions = h.feed(Event::Received(Message::Records(batch.clone())));
        if valid {
            prop_assert_eq!(has_append(&actions), batch.count > 0);
            prop_assert!(h.halts.is_empty());
        } else {
            prop_assert_eq!(h.appended.len(), before);
            let halt = only_halt(&actions);
            for e in [
                Event::Received(Message::Records(primary.batch(have as Lsn + 1, to as Lsn, to as Lsn))),
                Event::Durable { lsn: have as Lsn },
                Event::SessionEnded(SessionEnd::ConnectionLost { detail: "x".into() }),
                Event::SessionStarted,
            ] {
                prop_assert_eq!(h.feed(e), Vec::<Action>::new());
            }
            prop_assert_eq!(h.core.halt(), Some(&halt));
        }
    }
}

fn streaming_harness_epoch(primary: &Log, have: Lsn) -> Harness {
    let local = primary.prefix(have);
    let mut h = Harness::new(&local, 0, 0);
    h.connect(primary, primary.last().epoch, 0);
    assert_eq!(*h.core.phase(), Phase::Streaming);
    h
}

#[test]
fn welcome_history_without_primary_epoch_is_completed_and_persisted_before_records() {
    let primary = Log::build(&[1, 1, 1]);
    let mut h = Harness::new(&Log::default(), 0, 0);
    h.feed(Event::Start);
    h.feed(Event::SessionStarted);
    let mut w = match welcome(&primary, 4, 0, 0) {
        Message::Welcome(w) => w,
        _ => unreachable!(),
    };
    w.epoch_history = vec![EpochEntry {
        epoch: 1,
        start_lsn: 1,
    }];
    let actions = h.feed(Event::Received(Message::Welcome(w)));
    let expected = EpochHistory {
        entries: vec![
            EpochEntry {
                epoch: 1,
                start_lsn: 1,
            },
            EpochEntry {
                epoch: 4,
                start_lsn: 4,
            },
        ],
    };
    assert_eq!(actions[0], Action::PersistEpochs(expected));
    assert_eq!(h.core.highest_epoch_seen(), 4);
    // A reconnect announces the fencing bound.
    h.feed(Event::SessionEnded(SessionEnd::ConnectionLost {
        detail: "x".into(),
    }));
    match &h.feed(Event::SessionStarted)[..] {
        [Action::Send(Message::Hello(hello))] => assert_eq!(hello.highest_epoch_seen, 4),
        other => panic!("{other:?}"),
    }
}

#[test]
fn welcome_with_invalid_epoch_history_ends_session_without_halt() {
    let primary = Log::build(&[1, 1]);
    let mut h = Harness::new(&Log::default(), 0, 0);
    h.feed(Event::Start);
    h.feed(Event::SessionStarted);
    let mut w = match welcome(&primary, 2, 0, 0) {
        Message::Welcome(w) => w,
        _ => unreachable!(),
    };
    w.epoch_history = vec![
        EpochEntry {
            epoch: 2,
            start_lsn: 1,
        },
        EpochEntry {
            epoch: 1,
            start_lsn: 3,
        },
    ];
    let actions = h.feed(Event::Received(Message::Welcome(w)));
    assert!(matches!(
        actions[..],
        [Action::Reconnect {
            reason: SessionEnd::Protocol { .. },
            ..
        }]
    ));
    assert!(h.halts.is_empty());
}

fn arb_position() -> impl Strategy<Value = Position> {
    (0u64..1_000, 0u64..5, any::<u32>()).prop_map(|(lsn, epoch, crc)| Position { lsn, epoch, crc })
}

fn arb_message(primary: Log) -> impl Strategy<Value = Message> {
    let p2 = primary.clone();
    let n = primary.positions.len() as u64;
    prop_oneof![
        (0u64..=n + 2, 0u64..4, any::<bool>(), any::<u64>()).prop_map(
            move |(at, epoch, honest, commit)| {
                let mut w = match welcome(&primary, epoch, at, commit % (n + 5)) {
                    Message::Welcome(w) => w,
                    _ => unreachable!(),
                };
                if !honest {
                    w.primary_last.lsn = w.primary_last.lsn.wrapping_mul(commit | 1);
                }
                Message::Welcome(w)
            }
        ),
        (1u64..=n, 1u64..=n, 0u64..=n).prop_map(move |(a, b, c)| {
            let (from, to) = (a.min(b), a.max(b));
            Message::Records(p2.batch(from, to, c))
        }),
        (
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(bytes, first_lsn, count)| Message::Records(RecordBatch {
                first_lsn,
                count,
                bytes,
                commit_lsn: 0
            })),
        (0u64..=n + 2, proptest::option::of(arb_position()))
            .prop_map(|(lsn, position)| Message::ProbeReply { lsn, position }),
        any::<u64>().prop_map(|commit_lsn| Message::Commit { commit_lsn }),
        any::<u64>().prop_map(|durable_lsn| Message::Receipt { durable_lsn }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Arbitrary bytes in a Records frame never panic the verifier, and whatever
    /// it accepts is a valid continuation.
    #[test]
    fn verify_batch_never_panics_and_accepts_only_valid_continuations(
        last in arb_position(),
        epoch in 0u64..5,
        first_lsn in 0u64..1_010,
        count in 0u32..8,
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let batch = RecordBatch { first_lsn, count, bytes, commit_lsn: 0 };
        if let Ok(Some(_)) = verify_batch(last, epoch, &batch, MAX) {
            prop_assert!(oracle_valid(last, epoch, None, &batch));
        }
    }

    /// Any sequence of messages and session events from an authenticated primary:
    /// the core never panics, appends only while streaming and only what chains
    /// onto its log, and never applies above min(commit, durable).
    #[test]
    fn arbitrary_message_sequences_keep_the_core_invariants(
        (epochs, steps) in epochs_strategy().prop_flat_map(|e| {
            let log = Log::build(&e);
            (Just(e), proptest::collection::vec((any::<u8>(), arb_message(log)), 1..40))
        }),
        have in 0usize..10,
    ) {
        let primary = Log::build(&epochs);
        let have = have.min(primary.positions.len());
        let mut h = Harness::new(&primary.prefix(have as Lsn), 0, 0);
        h.feed(Event::Start);
        for (kind, msg) in steps {
            let phase_before = h.core.phase().clone();
            let event = match kind % 8 {
                0 => Event::SessionStarted,
                1 => Event::SessionEnded(SessionEnd::ConnectionLost { detail: "x".into() }),
                // Half of the time the primary is honest for the phase (an exact
                // Welcome, the next records), so streaming is reached and appends happen.
                k if k % 2 == 0 && phase_before == Phase::AwaitWelcome => Event::Received(
                    welcome(&primary, primary.last().epoch, h.core.last().lsn, u64::from(k)),
                ),
                k if k % 2 == 0
                    && phase_before == Phase::Streaming
                    && h.core.last().lsn < primary.last().lsn =>
                {
                    let from = h.core.last().lsn + 1;
                    let to = (from + u64::from(k % 5)).min(primary.last().lsn);
                    Event::Received(Message::Records(primary.batch(from, to, u64::from(k) % 30)))
                }
                _ => Event::Received(msg),
            };
            if matches!(event, Event::SessionStarted) && phase_before != Phase::Disconnected {
                continue; // the driver only starts a session after a Reconnect
            }
            let before = h.appended.len();
            let actions = h.feed(event);
            if h.appended.len() > before {
                prop_assert_eq!(&phase_before, &Phase::Streaming);
            }
            if h.core.phase() == &Phase::Halted {
                prop_assert!(actions.iter().all(|a| !matches!(a, Action::AppendVerified(_))));
            }
            prop_assert!(h.core.applied_lsn() <= h.core.commit_lsn().min(h.core.durable_lsn()));
        }
        // Every appended record is the primary's, in order: the local log is a prefix of it.
        for (i, pos) in h.local.0.iter().enumerate() {
            prop_assert_eq!(Some(*pos), primary.at(i as Lsn + 1));
        }
    }
}

#[test]
fn fm_5_2_reordered_frame_with_expected_first_lsn_in_header_is_reorder() {
    let primary = Log::build(&[1; 10]);
    let mut h = streaming_harness(&primary, 3);
    // Records 5, 4 but the header says first_lsn 4 (the expected one).
    let mut b = raw_batch(&[&primary.records[4], &primary.records[3]], 4);
    b.commit_lsn = 0;
    let halt = only_halt(&h.feed(Event::Received(Message::Records(b))));
    assert_eq!((halt.reason, halt.lsn), (HaltReason::Reorder, 4));
}

#[test]
fn fm_x_3_first_record_with_epoch_below_the_history_halts_before_append() {
    let primary = Log::build(&[1, 1]);
    let mut h = streaming_harness(&primary, 0);
    // lsn 1 re-encoded with epoch 0: valid crc, prev_crc 0, no regression from ZERO.
    let mut rec = Vec::new();
    encode_record(1, 0, 0, b"payload-1", &mut rec);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(raw_batch(&[&rec], 1)))));
    assert_eq!(
        (halt.reason, halt.lsn, halt.epoch),
        (HaltReason::EpochRegression, 1, 0)
    );
    assert!(halt.expected.starts_with("epoch 1 "), "{}", halt.expected);
    assert!(h.appended.is_empty());
    assert!(
        !h.sent
            .iter()
            .any(|m| matches!(m, Message::Receipt { durable_lsn } if *durable_lsn > 0)),
        "nothing is receipted"
    );
}

#[test]
fn record_epoch_above_the_history_at_its_lsn_is_divergence() {
    // The primary is at epoch 2, which began at lsn 3; a record 2 claiming epoch 2 is not its.
    let mut primary = Log::build(&[1]);
    primary.push(2, b"epoch 2 starts at 2");
    let mut h = Harness::new(&primary.prefix(1), 0, 0);
    h.feed(Event::Start);
    h.feed(Event::SessionStarted);
    let mut w = match welcome(&primary, 2, 1, 0) {
        Message::Welcome(w) => w,
        _ => unreachable!(),
    };
    w.epoch_history = vec![
        EpochEntry {
            epoch: 1,
            start_lsn: 1,
        },
        EpochEntry {
            epoch: 2,
            start_lsn: 3,
        },
    ];
    h.feed(Event::Received(Message::Welcome(w)));
    assert_eq!(*h.core.phase(), Phase::Streaming);
    let halt = only_halt(&h.feed(Event::Received(Message::Records(primary.batch(2, 2, 0)))));
    assert_eq!((halt.reason, halt.lsn), (HaltReason::Divergence, 2));
}
