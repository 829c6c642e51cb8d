//! Unit and property tests of the primary core against an in-memory log.

use super::*;
use proptest::prelude::*;
use walship_wal::encode_record;

/// An in-memory log: record bytes and positions, of which the first `durable` are durable.
#[derive(Default)]
struct MemLog {
    records: Vec<(Position, Vec<u8>)>,
    durable: usize,
    /// The first retained lsn (0 or 1: nothing truncated; no snapshot either way).
    first: Lsn,
}

impl MemLog {
    fn append(&mut self, n: usize, payload_len: usize) {
        for _ in 0..n {
            let prev = self.records.last().map(|r| r.0).unwrap_or(Position::ZERO);
            let payload = vec![(prev.lsn % 251) as u8; payload_len];
            let mut buf = Vec::new();
            let pos = encode_record(prev.lsn + 1, 1, prev.crc, &payload, &mut buf);
            self.records.push((pos, buf));
        }
    }
    fn append_durable(&mut self, n: usize, payload_len: usize) {
        self.append(n, payload_len);
        self.durable = self.records.len();
    }
    fn pos(&self, lsn: Lsn) -> Position {
        if lsn == 0 {
            Position::ZERO
        } else {
            self.records[lsn as usize - 1].0
        }
    }
}

impl LogSource for MemLog {
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        if lsn as usize > self.records.len() {
            return Ok(None);
        }
        Ok(Some(self.pos(lsn)))
    }
    fn durable(&self) -> Position {
        self.pos(self.durable as Lsn)
    }
    fn first_lsn(&self) -> Lsn {
        self.first.max(1)
    }
    fn read_batch(
        &mut self,
        from_lsn: Lsn,
        max_bytes: usize,
    ) -> Result<Option<LogBatch>, WalError> {
        if from_lsn == 0 || from_lsn as usize > self.durable {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let mut count = 0u32;
        let mut last = Position::ZERO;
        for (pos, rec) in &self.records[from_lsn as usize - 1..self.durable] {
            if count > 0 && bytes.len() + rec.len() > max_bytes {
                break;
            }
            bytes.extend_from_slice(rec);
            count += 1;
            last = *pos;
        }
        Ok(Some((from_lsn, count, last, bytes)))
    }
}

fn members(n_replicas: usize) -> Vec<String> {
    let mut m = vec!["p".to_string()];
    m.extend((1..=n_replicas).map(|i| format!("r{i}")));
    m
}

fn core_with(quorum: Quorum, n_replicas: usize, window: Window) -> PrimaryCore {
    PrimaryCore::new(CoreConfig {
        node_id: "p".into(),
        cluster_id: "c".into(),
        members: members(n_replicas),
        quorum,
        epoch: 1,
        epoch_history: vec![EpochEntry {
            epoch: 1,
            start_lsn: 1,
        }],
        commit_lsn: 0,
        window,
    })
    .expect("valid core config")
}

fn core(quorum: Quorum, n_replicas: usize) -> PrimaryCore {
    core_with(quorum, n_replicas, Window::default())
}

fn hello(node: &str, last: Position) -> Hello {
    hello_of(node, 0, last)
}

/// A Hello of incarnation `incarnation` of `node`'s data directory.
fn hello_of(node: &str, incarnation: u64, last: Position) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "c".into(),
        node_id: node.into(),
        incarnation,
        last,
        commit_lsn: 0,
        epoch_history: vec![],
        highest_epoch_seen: 1,
    }
}

/// Connects `node` on `conn` and sends its Hello; returns all actions.
fn connect(
    core: &mut PrimaryCore,
    log: &mut MemLog,
    conn: ConnId,
    node: &str,
    last: Position,
) -> Vec<Action> {
    connect_as(core, log, conn, hello(node, last))
}

/// Connects `hello.node_id` on `conn` and sends `hello`; returns all actions.
fn connect_as(core: &mut PrimaryCore, log: &mut MemLog, conn: ConnId, hello: Hello) -> Vec<Action> {
    let mut a = core.handle(
        Event::Connected {
            conn,
            node_id: hello.node_id.clone(),
        },
        log,
        0,
    );
    a.extend(core.handle(
        Event::Received {
            conn,
            msg: Message::Hello(hello),
        },
        log,
        0,
    ));
    a
}

fn receipt(core: &mut PrimaryCore, log: &mut MemLog, conn: ConnId, lsn: Lsn) -> Vec<Action> {
    core.handle(
        Event::Received {
            conn,
            msg: Message::Receipt { durable_lsn: lsn },
        },
        log,
        0,
    )
}

fn batches(actions: &[Action], on: ConnId) -> Vec<RecordBatch> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                conn,
                msg: Message::Records(b),
            } if *conn == on => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn commit_advanced(actions: &[Action]) -> Option<Lsn> {
    actions.iter().rev().find_map(|a| match a {
        Action::CommitAdvanced { commit_lsn } => Some(*commit_lsn),
        _ => None,
    })
}

fn closed(actions: &[Action], on: ConnId) -> Option<CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close { conn, reason } if *conn == on => Some(reason.clone()),
        _ => None,
    })
}

fn shipped_lsns(b: &[RecordBatch]) -> Option<(Lsn, Lsn)> {
    Some((b.first()?.first_lsn, {
        let l = b.last()?;
        l.first_lsn + u64::from(l.count) - 1
    }))
}

#[test]
fn quorum_settings_parse_and_unsatisfiable_policy_is_rejected() {
    assert_eq!(Quorum::from_setting(0), Ok(Quorum::LocalOnly));
    assert_eq!(Quorum::from_setting(-1), Ok(Quorum::Majority));
    assert_eq!(Quorum::from_setting(2), Ok(Quorum::Exactly(2)));
    assert_eq!(
        Quorum::from_setting(-2),
        Err(QuorumError::InvalidSetting { setting: -2 })
    );
    assert_eq!(Quorum::Majority.receipts_needed(3), 1);
    assert_eq!(Quorum::Majority.receipts_needed(5), 2);
    assert_eq!(Quorum::Majority.receipts_needed(1), 0);
    assert_eq!(
        Quorum::Exactly(3).validate(3),
        Err(QuorumError::Unsatisfiable {
            needed: 3,
            replicas: 2
        })
    );
    let err = PrimaryCore::new(CoreConfig {
        members: members(2),
        quorum: Quorum::Exactly(3),
        ..core_config_template()
    })
    .unwrap_err();
    assert!(matches!(err, CoreError::Quorum(_)));
}

fn core_config_template() -> CoreConfig {
    CoreConfig {
        node_id: "p".into(),
        cluster_id: "c".into(),
        members: members(2),
        quorum: Quorum::Majority,
        epoch: 1,
        epoch_history: vec![],
        commit_lsn: 0,
        window: Window::default(),
    }
}

#[test]
fn config_without_the_primary_or_with_duplicates_is_rejected() {
    let err = PrimaryCore::new(CoreConfig {
        members: vec!["r1".into(), "r2".into()],
        ..core_config_template()
    })
    .unwrap_err();
    assert_eq!(
        err,
        CoreError::PrimaryNotMember {
            node_id: "p".into()
        }
    );
    let err = PrimaryCore::new(CoreConfig {
        members: vec!["p".into(), "r1".into(), "r1".into()],
        ..core_config_template()
    })
    .unwrap_err();
    assert_eq!(
        err,
        CoreError::DuplicateMember {
            node_id: "r1".into()
        }
    );
}

#[test]
fn quorum_commit_lsn_is_kth_highest_capped_by_local() {
    assert_eq!(quorum_commit_lsn(0, 7, &[]), Some(7));
    assert_eq!(quorum_commit_lsn(1, 7, &[3, 9]), Some(7));
    assert_eq!(quorum_commit_lsn(2, 7, &[3, 9]), Some(3));
    assert_eq!(quorum_commit_lsn(3, 7, &[3, 9]), None);
}

#[test]
fn local_only_commits_on_local_durable_without_replicas() {
    let mut c = core(Quorum::LocalOnly, 2);
    let mut log = MemLog::default();
    log.append_durable(5, 10);
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert_eq!(commit_advanced(&a), Some(5));
    assert_eq!(c.commit_lsn(), 5);
}

#[test]
fn majority_without_receipts_does_not_commit() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    log.append_durable(5, 10);
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert_eq!(commit_advanced(&a), None);
    assert_eq!(c.commit_lsn(), 0);
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((1, 5)));
    assert_eq!(shipped_lsns(&batches(&a, 2)), Some((1, 5)));
}

#[test]
fn majority_of_three_commits_on_one_receipt_and_ships_commit_to_replicas() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    log.append_durable(10, 10);
    c.handle(Event::LocalDurable, &mut log, 0);
    let a = receipt(&mut c, &mut log, 1, 4);
    assert_eq!(commit_advanced(&a), Some(4));
    for conn in [1, 2] {
        assert!(a.contains(&Action::Send {
            conn,
            msg: Message::Commit { commit_lsn: 4 }
        }));
    }
}

#[test]
fn halted_replica_does_not_hold_back_commit_when_the_other_satisfies_majority() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    // r2 halts: its connection ends and it never sends a receipt again.
    c.handle(Event::Disconnected { conn: 2 }, &mut log, 0);
    log.append_durable(20, 10);
    c.handle(Event::LocalDurable, &mut log, 0);
    let a = receipt(&mut c, &mut log, 1, 20);
    assert_eq!(commit_advanced(&a), Some(20));
}

#[test]
fn exactly_two_needs_both_replicas() {
    let mut c = core(Quorum::Exactly(2), 2);
    let mut log = MemLog::default();
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    log.append_durable(10, 10);
    c.handle(Event::LocalDurable, &mut log, 0);
    let a = receipt(&mut c, &mut log, 1, 10);
    assert_eq!(commit_advanced(&a), None);
    let a = receipt(&mut c, &mut log, 2, 6);
    assert_eq!(commit_advanced(&a), Some(6));
}

/// A primary of epoch 2 that took over a log of 10 epoch-1 records: its control record
/// is lsn 11, the history is [(1,1),(2,11)]; two replicas (majority: one receipt).
fn epoch_2_core_over_10_old_records() -> (PrimaryCore, MemLog) {
    let c = PrimaryCore::new(CoreConfig {
        epoch: 2,
        epoch_history: vec![
            EpochEntry {
                epoch: 1,
                start_lsn: 1,
            },
            EpochEntry {
                epoch: 2,
                start_lsn: 11,
            },
        ],
        ..core_config_template()
    })
    .expect("valid core config");
    let mut log = MemLog::default();
    log.append_durable(12, 10);
    (c, log)
}

#[test]
fn committable_lsn_needs_a_record_of_the_current_epoch_on_the_quorum() {
    // Primary of epoch 3 whose control record is at lsn 2; lsn 1 (epoch 1)
    // is on 2 of 3 nodes, lsn 2 only on the primary.
    assert_eq!(committable_lsn(2, &[2, 1, 0], 2), None);
    // Once the epoch-3 record is on a majority, lsn 1 commits with it.
    assert_eq!(committable_lsn(2, &[2, 2, 0], 2), Some(2));
    assert_eq!(committable_lsn(2, &[3, 2, 1], 2), Some(2));
    assert_eq!(committable_lsn(2, &[3, 3, 3], 3), Some(3));
    // Not enough members counted, or nothing durable.
    assert_eq!(committable_lsn(1, &[5], 2), None);
    assert_eq!(committable_lsn(1, &[5, 5], 0), None);
    assert_eq!(committable_lsn(1, &[0, 0, 0], 1), None);
    assert_eq!(committable_lsn(1, &[5, 0, 0], 1), Some(5));
}

#[test]
fn committable_lsn_from_the_first_epoch_is_the_plain_quorum_formula() {
    // With the epoch starting at lsn 1 (or no history) the rule adds nothing.
    for needed in 0..3usize {
        for local in 0..6u64 {
            for a in 0..6u64 {
                for b in 0..6u64 {
                    let replicas = [a.min(local), b.min(local)];
                    let plain = quorum_commit_lsn(needed, local, &replicas).filter(|l| *l > 0);
                    let all = [local, replicas[0], replicas[1]];
                    assert_eq!(committable_lsn(1, &all, needed + 1), plain);
                    assert_eq!(committable_lsn(0, &all, needed + 1), plain);
                }
            }
        }
    }
}

#[test]
fn figure_8_epoch_2_primary_does_not_commit_old_epoch_records_on_their_own() {
    let (mut c, mut log) = epoch_2_core_over_10_old_records();
    assert_eq!(c.epoch_start_lsn(), 11);
    // r1 holds the 10 epoch-1 records; r2 holds nothing.
    let r1_last = log.pos(10);
    let a = connect(&mut c, &mut log, 1, "r1", r1_last);
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((11, 12)));
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    // Receipts up to 10 from a majority (r1 and the primary itself): lsn 10 is on 2 of 3
    // nodes, and still does not commit.
    let a = receipt(&mut c, &mut log, 1, 10);
    assert_eq!(commit_advanced(&a), None);
    assert_eq!(c.commit_lsn(), 0);
    // r2 catching up to 10 changes nothing either: 10 is of epoch 1.
    let b = receipt(&mut c, &mut log, 2, 10);
    assert_eq!(commit_advanced(&b), None);
    assert_eq!(c.commit_lsn(), 0);
    // The epoch's first record (lsn 11) on a majority: everything up to it commits.
    let a = receipt(&mut c, &mut log, 1, 11);
    assert_eq!(commit_advanced(&a), Some(11));
    assert!(a.contains(&Action::Send {
        conn: 2,
        msg: Message::Commit { commit_lsn: 11 }
    }));
    let a = receipt(&mut c, &mut log, 2, 12);
    assert_eq!(commit_advanced(&a), Some(12));
}

#[test]
fn epoch_2_primary_commits_up_to_receipts_at_or_above_its_start() {
    let (mut c, mut log) = epoch_2_core_over_10_old_records();
    let r1_last = log.pos(10);
    connect(&mut c, &mut log, 1, "r1", r1_last);
    let a = receipt(&mut c, &mut log, 1, 12);
    assert_eq!(commit_advanced(&a), Some(12));
    assert_eq!(c.commit_lsn(), 12);
}

#[test]
fn local_only_primary_of_a_new_epoch_commits_once_its_first_record_is_durable() {
    let mut c = PrimaryCore::new(CoreConfig {
        quorum: Quorum::LocalOnly,
        epoch: 2,
        epoch_history: vec![
            EpochEntry {
                epoch: 1,
                start_lsn: 1,
            },
            EpochEntry {
                epoch: 2,
                start_lsn: 11,
            },
        ],
        ..core_config_template()
    })
    .expect("valid core config");
    let mut log = MemLog::default();
    log.append_durable(10, 10);
    log.append(1, 10); // the control record, written but not yet durable
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert_eq!(commit_advanced(&a), None);
    log.durable = 11;
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert_eq!(commit_advanced(&a), Some(11));
}

#[test]
fn history_not_ending_in_the_primarys_epoch_is_rejected() {
    let err = PrimaryCore::new(CoreConfig {
        epoch: 3,
        epoch_history: vec![EpochEntry {
            epoch: 2,
            start_lsn: 1,
        }],
        ..core_config_template()
    })
    .unwrap_err();
    assert_eq!(err, CoreError::EpochNotLastInHistory { epoch: 3, last: 2 });
}

#[test]
fn only_locally_durable_records_are_shipped() {
    let mut c = core(Quorum::Majority, 1);
    let mut log = MemLog::default();
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    log.append_durable(3, 10);
    log.append(4, 10); // written, not yet durable
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((1, 3)));
    log.durable = 7;
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((4, 7)));
}

#[test]
fn matching_hello_gets_welcome_and_records_from_its_next_lsn() {
    let mut c = core(Quorum::Majority, 1);
    let mut log = MemLog::default();
    log.append_durable(10, 10);
    let last = log.pos(6);
    let a = connect(&mut c, &mut log, 1, "r1", last);
    let welcome = a.iter().find_map(|a| match a {
        Action::Send {
            msg: Message::Welcome(w),
            ..
        } => Some(w.clone()),
        _ => None,
    });
    let w = welcome.expect("welcome sent");
    assert_eq!(w.at_replica_last, Some(last));
    assert_eq!(w.primary_last, log.pos(10));
    assert_eq!(w.epoch, 1);
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((7, 10)));
    // Only receipts count as durable copies, not the Hello position.
    assert_eq!(c.commit_lsn(), 0);
    let a = receipt(&mut c, &mut log, 1, 6);
    assert_eq!(commit_advanced(&a), Some(6));
}

#[test]
fn diverged_hello_gets_our_position_and_no_records_then_probes_are_answered() {
    let mut c = core(Quorum::Majority, 1);
    let mut log = MemLog::default();
    log.append_durable(10, 10);
    let theirs = Position {
        lsn: 6,
        epoch: 1,
        crc: log.pos(6).crc ^ 1,
    };
    let a = connect(&mut c, &mut log, 1, "r1", theirs);
    assert!(a.iter().any(|a| matches!(a,
        Action::Send { msg: Message::Welcome(w), .. } if w.at_replica_last == Some(log.pos(6)))));
    assert!(batches(&a, 1).is_empty());
    let a = c.handle(
        Event::Received {
            conn: 1,
            msg: Message::Probe { lsn: 3 },
        },
        &mut log,
        0,
    );
    assert_eq!(
        a,
        vec![Action::Send {
            conn: 1,
            msg: Message::ProbeReply {
                lsn: 3,
                position: Some(log.pos(3))
            }
        }]
    );
    let a = c.handle(
        Event::Received {
            conn: 1,
            msg: Message::Probe { lsn: 11 },
        },
        &mut log,
        0,
    );
    assert_eq!(
        a,
        vec![Action::Send {
            conn: 1,
            msg: Message::ProbeReply {
                lsn: 11,
                position: None
            }
        }]
    );
    // Nothing from it counts: commit stays at 0.
    assert_eq!(c.commit_lsn(), 0);
}

#[test]
fn replica_ahead_of_local_durable_gets_none_and_no_records() {
    let mut c = core(Quorum::Majority, 1);
    let mut log = MemLog::default();
    log.append_durable(5, 10);
    log.append(3, 10);
    let p = log.pos(7);
    let a = connect(&mut c, &mut log, 1, "r1", p);
    assert!(a.iter().any(|a| matches!(a,
        Action::Send { msg: Message::Welcome(w), .. } if w.at_replica_last.is_none())));
    assert!(batches(&a, 1).is_empty());
}

fn refuse_from(
    core: &mut PrimaryCore,
    log: &mut MemLog,
    conn: ConnId,
    reason: RefuseReason,
) -> Vec<Action> {
    core.handle(
        Event::Received {
            conn,
            msg: Message::Refuse(Refuse { reason }),
        },
        log,
        0,
    )
}

fn not_primary(epoch: u64) -> RefuseReason {
    RefuseReason::NotPrimary {
        epoch,
        primary_hint: None,
    }
}

/// The refusal sent on `conn` followed by the close of `conn`, as `refuse` emits them.
fn refused(conn: ConnId, reason: RefuseReason) -> [Action; 2] {
    [
        Action::Send {
            conn,
            msg: Message::Refuse(Refuse {
                reason: reason.clone(),
            }),
        },
        Action::Close {
            conn,
            reason: CloseReason::Refused(reason),
        },
    ]
}

#[test]
fn fm_x_2_hello_of_a_replica_that_has_seen_a_higher_epoch_fences_the_primary() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    log.append_durable(5, 10);
    // r2 streams and receipts 3: commit 3.
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    assert_eq!(commit_advanced(&receipt(&mut c, &mut log, 2, 3)), Some(3));
    c.handle(
        Event::Connected {
            conn: 1,
            node_id: "r1".into(),
        },
        &mut log,
        0,
    );
    let mut h = hello("r1", Position::ZERO);
    h.highest_epoch_seen = 2;
    let a = c.handle(
        Event::Received {
            conn: 1,
            msg: Message::Hello(h),
        },
        &mut log,
        0,
    );
    // No Welcome: refused as not the primary, fenced, and every other session ends too.
    let mut want = refused(1, not_primary(2)).to_vec();
    want.push(Action::Fenced { epoch: 2 });
    want.extend(refused(2, not_primary(2)));
    assert_eq!(a, want);
    assert_eq!(c.fenced(), Some(2));
    // Nothing commits or ships any more, even with receipts that would commit.
    log.append_durable(5, 10);
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(c.commit_lsn(), 3);
    // A replica connecting later is pointed away.
    let a = connect(&mut c, &mut log, 3, "r2", Position::ZERO);
    assert_eq!(a, refused(3, not_primary(2)).to_vec());
}

#[test]
fn fm_x_2_refuse_stale_primary_from_a_replica_fences_the_primary_and_freezes_its_commit() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    log.append_durable(10, 10);
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    assert_eq!(commit_advanced(&receipt(&mut c, &mut log, 1, 4)), Some(4));
    // r2 has voted in epoch 3 meanwhile (its Hello said 1) and refuses our Welcome.
    let stale = RefuseReason::StalePrimary {
        primary_epoch: 1,
        current_epoch: 3,
    };
    let a = refuse_from(&mut c, &mut log, 2, stale.clone());
    let mut want = vec![Action::Close {
        conn: 2,
        reason: CloseReason::Refused(stale),
    }];
    want.push(Action::Fenced { epoch: 3 });
    want.extend(refused(1, not_primary(3)));
    assert_eq!(a, want);
    assert_eq!(c.fenced(), Some(3));
    // A receipt racing the close changes nothing: the connection is gone.
    let a = receipt(&mut c, &mut log, 1, 10);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(c.commit_lsn(), 4);
    // A later Hello is pointed away with the epoch learned, and fences nothing anew.
    let a = connect(&mut c, &mut log, 3, "r1", Position::ZERO);
    assert_eq!(a, refused(3, not_primary(3)).to_vec());
    assert_eq!(c.fenced(), Some(3));
}

#[test]
fn refuse_stale_primary_naming_no_higher_epoch_only_ends_that_session() {
    // A refusal that names no epoch above ours (e.g. answering a Welcome a middlebox
    // rewrote) is no evidence of a newer primary: the session ends, nothing is fenced.
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    log.append_durable(10, 10);
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    let stale = RefuseReason::StalePrimary {
        primary_epoch: 0,
        current_epoch: 1,
    };
    let a = refuse_from(&mut c, &mut log, 2, stale.clone());
    assert_eq!(
        a,
        vec![Action::Close {
            conn: 2,
            reason: CloseReason::Refused(stale)
        }]
    );
    assert_eq!(c.fenced(), None);
    assert_eq!(commit_advanced(&receipt(&mut c, &mut log, 1, 10)), Some(10));
    // A Refuse before the Hello is out of order.
    c.handle(
        Event::Connected {
            conn: 3,
            node_id: "r2".into(),
        },
        &mut log,
        0,
    );
    let a = refuse_from(&mut c, &mut log, 3, not_primary(5));
    assert_eq!(
        closed(&a, 3),
        Some(CloseReason::UnexpectedMessage {
            kind: "refuse",
            state: "awaiting-hello"
        })
    );
    assert_eq!(c.fenced(), None);
}

#[test]
fn hello_with_wrong_version_cluster_or_name_is_refused_and_closed() {
    type Edit = Box<dyn Fn(&mut Hello)>;
    let cases: Vec<(Edit, RefuseReason)> = vec![
        (
            Box::new(|h: &mut Hello| h.protocol_version = 9),
            RefuseReason::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: 9,
            },
        ),
        (
            Box::new(|h: &mut Hello| h.cluster_id = "other".into()),
            RefuseReason::ClusterMismatch {
                ours: "c".into(),
                theirs: "other".into(),
            },
        ),
        (
            Box::new(|h: &mut Hello| h.node_id = "r2".into()),
            RefuseReason::NodeIdMismatch {
                claimed: "r2".into(),
                certified: "r1".into(),
            },
        ),
    ];
    for (edit, reason) in cases {
        let mut c = core(Quorum::Majority, 2);
        let mut log = MemLog::default();
        c.handle(
            Event::Connected {
                conn: 1,
                node_id: "r1".into(),
            },
            &mut log,
            0,
        );
        let mut h = hello("r1", Position::ZERO);
        edit(&mut h);
        let a = c.handle(
            Event::Received {
                conn: 1,
                msg: Message::Hello(h),
            },
            &mut log,
            0,
        );
        assert_eq!(
            a,
            vec![
                Action::Send {
                    conn: 1,
                    msg: Message::Refuse(Refuse {
                        reason: reason.clone()
                    })
                },
                Action::Close {
                    conn: 1,
                    reason: CloseReason::Refused(reason)
                }
            ]
        );
    }
}

#[test]
fn undecodable_hello_of_another_version_is_refused_before_the_handshake_and_a_violation_after() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    c.handle(
        Event::Connected {
            conn: 1,
            node_id: "r1".into(),
        },
        &mut log,
        0,
    );
    let a = c.handle(
        Event::HelloOfOtherVersion {
            conn: 1,
            protocol_version: 2,
        },
        &mut log,
        0,
    );
    // A replica of version 2 (before incarnations) meets a version-3 primary.
    let reason = RefuseReason::UnsupportedVersion {
        ours: PROTOCOL_VERSION,
        theirs: 2,
    };
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 1,
                msg: Message::Refuse(Refuse {
                    reason: reason.clone()
                })
            },
            Action::Close {
                conn: 1,
                reason: CloseReason::Refused(reason)
            }
        ]
    );

    // After the handshake a Hello of any kind is out of order.
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    let a = c.handle(
        Event::HelloOfOtherVersion {
            conn: 2,
            protocol_version: 1,
        },
        &mut log,
        0,
    );
    assert_eq!(
        closed(&a, 2),
        Some(CloseReason::UnexpectedMessage {
            kind: "hello",
            state: "shipping"
        })
    );
}

#[test]
fn connection_from_a_non_replica_name_is_refused() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    let a = c.handle(
        Event::Connected {
            conn: 1,
            node_id: "p".into(),
        },
        &mut log,
        0,
    );
    assert!(matches!(
        closed(&a, 1),
        Some(CloseReason::Refused(RefuseReason::NotAMember { .. }))
    ));
}

#[test]
fn messages_out_of_protocol_order_close_only_that_connection() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    c.handle(
        Event::Connected {
            conn: 1,
            node_id: "r1".into(),
        },
        &mut log,
        0,
    );
    let a = receipt(&mut c, &mut log, 1, 0);
    assert_eq!(
        closed(&a, 1),
        Some(CloseReason::UnexpectedMessage {
            kind: "receipt",
            state: "awaiting-hello"
        })
    );
    let a = c.handle(
        Event::Received {
            conn: 2,
            msg: Message::Commit { commit_lsn: 1 },
        },
        &mut log,
        0,
    );
    assert_eq!(
        closed(&a, 2),
        Some(CloseReason::UnexpectedMessage {
            kind: "commit",
            state: "shipping"
        })
    );
}

#[test]
fn receipt_beyond_shipped_closes_the_connection() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    log.append_durable(3, 10);
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    let a = receipt(&mut c, &mut log, 1, 4);
    assert_eq!(
        closed(&a, 1),
        Some(CloseReason::ReceiptBeyondShipped {
            durable_lsn: 4,
            shipped_lsn: 3
        })
    );
    assert_eq!(c.commit_lsn(), 0);
}

#[test]
fn reconnect_supersedes_the_old_connection_and_resumes_from_hello() {
    let mut c = core(Quorum::Majority, 1);
    let mut log = MemLog::default();
    log.append_durable(10, 10);
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    receipt(&mut c, &mut log, 1, 4);
    let p = log.pos(4);
    let a = connect(&mut c, &mut log, 2, "r1", p);
    assert_eq!(closed(&a, 1), Some(CloseReason::Superseded { by: 2 }));
    assert_eq!(shipped_lsns(&batches(&a, 2)), Some((5, 10)));
}

/// FM-X.15: r1 receipted 20, its disk is replaced and it comes back with an empty log.
/// Its old receipts must not count: r2's receipt of 20 alone does not commit under quorum 2.
#[test]
fn replaced_replica_disk_does_not_count_old_receipts() {
    let mut c = core(Quorum::Exactly(2), 2);
    let mut log = MemLog::default();
    log.append_durable(20, 10);
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    c.handle(Event::LocalDurable, &mut log, 0);
    receipt(&mut c, &mut log, 1, 20);
    let a = receipt(&mut c, &mut log, 2, 10);
    assert_eq!(commit_advanced(&a), Some(10));
    // r1 reconnects with an empty log (disk replaced) and is cut off again.
    connect(&mut c, &mut log, 3, "r1", Position::ZERO);
    c.handle(Event::Disconnected { conn: 3 }, &mut log, 0);
    let r1 = |c: &PrimaryCore, log: &MemLog| {
        c.status(log, 0)
            .replicas
            .into_iter()
            .find(|r| r.node_id == "r1")
            .expect("r1 status")
            .durable_lsn
    };
    assert_eq!(
        r1(&c, &log),
        0,
        "the empty Hello proves nothing durable on r1"
    );
    let a = receipt(&mut c, &mut log, 2, 20);
    assert_eq!(commit_advanced(&a), None, "20 is on one replica disk only");
    assert_eq!(c.commit_lsn(), 10, "the commit watermark never decreases");
    // r1 catches up on its new log: its new receipts count again.
    connect(&mut c, &mut log, 4, "r1", Position::ZERO);
    let a = receipt(&mut c, &mut log, 4, 20);
    assert_eq!(commit_advanced(&a), Some(20));
    // A Hello proving a prefix keeps the receipts it covers (and only those).
    let p15 = log.pos(15);
    connect(&mut c, &mut log, 5, "r1", p15);
    assert_eq!(r1(&c, &log), 15);
    assert_eq!(c.commit_lsn(), 20);
}

fn progress(c: &PrimaryCore, log: &MemLog, node: &str) -> ReplicaProgress {
    c.status(log, 0)
        .replicas
        .into_iter()
        .find(|r| r.node_id == node)
        .expect("replica status")
}

fn expect(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|&(n, i)| (n.to_string(), i)).collect()
}

/// FM-X.15 extended to incarnations: r2's data directory was replaced (incarnation 0xB
/// became 0xB2). While the primary expects 0xB, r2 is shipped to and reported, but its
/// receipts do not count; once 0xB2 is expected they do.
#[test]
fn fm_x_15_reincarnated_replica_receipts_do_not_count_until_its_new_incarnation_is_expected() {
    let mut c = core(Quorum::Exactly(2), 2);
    c.set_expected_incarnations(&expect(&[("p", 0x9), ("r1", 0xA), ("r2", 0xB)]));
    let mut log = MemLog::default();
    log.append_durable(20, 10);
    connect_as(&mut c, &mut log, 1, hello_of("r1", 0xA, Position::ZERO));
    let a = connect_as(&mut c, &mut log, 2, hello_of("r2", 0xB2, Position::ZERO));
    assert_eq!(
        shipped_lsns(&batches(&a, 2)),
        Some((1, 20)),
        "a replica of an unexpected incarnation is still shipped to"
    );
    receipt(&mut c, &mut log, 1, 20);
    let a = receipt(&mut c, &mut log, 2, 20);
    assert_eq!(commit_advanced(&a), None, "r2's receipts do not count");
    assert_eq!(c.commit_lsn(), 0);
    let r2 = progress(&c, &log, "r2");
    assert_eq!(
        (r2.connected, r2.shipping, r2.durable_lsn, r2.lag_records),
        (true, true, 20, 0),
        "its progress is still reported"
    );
    assert_eq!((r2.incarnation, r2.expected_incarnation), (Some(0xB2), 0xB));
    let r1 = progress(&c, &log, "r1");
    assert_eq!((r1.incarnation, r1.expected_incarnation), (Some(0xA), 0xA));
    // Naming another member's new incarnation changes nothing for r2.
    c.set_expected_incarnations(&expect(&[("r1", 0xA1), ("r2", 0xB)]));
    let a = c.handle(Event::Tick, &mut log, 0);
    assert_eq!(commit_advanced(&a), None);
    // The operator (or the configuration) now expects r2's new incarnation.
    c.set_expected_incarnations(&expect(&[("r1", 0xA), ("r2", 0xB2)]));
    let a = c.handle(Event::Tick, &mut log, 0);
    assert_eq!(commit_advanced(&a), Some(20));
    // Back to the old one: r2 holds nothing again; the watermark never decreases.
    c.set_expected_incarnations(&expect(&[("r1", 0xA), ("r2", 0xB)]));
    log.append_durable(5, 10);
    receipt(&mut c, &mut log, 1, 25);
    let a = receipt(&mut c, &mut log, 2, 25);
    assert_eq!(commit_advanced(&a), None);
    assert_eq!(c.commit_lsn(), 20);
}

/// FM-X.15: expected incarnation 0 (the default, or named) accepts any announced one,
/// 0 (a replica without an identity) included; a member not named expects 0.
#[test]
fn fm_x_15_expected_incarnation_0_counts_receipts_of_any_incarnation() {
    for expected in [
        vec![],
        expect(&[("r1", 0), ("r2", 0)]),
        expect(&[("r1", 0)]),
    ] {
        let mut c = core(Quorum::Exactly(2), 2);
        c.set_expected_incarnations(&expected);
        let mut log = MemLog::default();
        log.append_durable(10, 10);
        connect_as(&mut c, &mut log, 1, hello_of("r1", 0x77, Position::ZERO));
        connect_as(&mut c, &mut log, 2, hello_of("r2", 0, Position::ZERO));
        receipt(&mut c, &mut log, 1, 10);
        let a = receipt(&mut c, &mut log, 2, 10);
        assert_eq!(commit_advanced(&a), Some(10), "expected {expected:?}");
        assert_eq!(progress(&c, &log, "r2").incarnation, Some(0));
        assert_eq!(progress(&c, &log, "r2").expected_incarnation, 0);
    }
    // Before any Hello nothing is known of a member's incarnation.
    let c = core(Quorum::Exactly(2), 2);
    let log = MemLog::default();
    assert_eq!(progress(&c, &log, "r1").incarnation, None);
}

/// FM-X.15: receipts of an earlier incarnation never count for a new one, even when any
/// incarnation is expected and the new one's Hello proves the same log (a directory
/// restored from a copy): only receipts of the new incarnation do.
#[test]
fn fm_x_15_receipts_of_an_earlier_incarnation_never_count_for_the_new_one() {
    let mut c = core(Quorum::Exactly(2), 2);
    let mut log = MemLog::default();
    log.append_durable(20, 10);
    connect_as(&mut c, &mut log, 1, hello_of("r1", 0xA, Position::ZERO));
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    receipt(&mut c, &mut log, 1, 20);
    let a = receipt(&mut c, &mut log, 2, 10);
    assert_eq!(commit_advanced(&a), Some(10));
    let p20 = log.pos(20);
    connect_as(&mut c, &mut log, 3, hello_of("r1", 0xA2, p20));
    assert_eq!(
        progress(&c, &log, "r1").durable_lsn,
        0,
        "the old incarnation's receipt of 20 is gone"
    );
    let a = receipt(&mut c, &mut log, 2, 20);
    assert_eq!(commit_advanced(&a), None, "20 is on one replica disk only");
    let a = receipt(&mut c, &mut log, 3, 20);
    assert_eq!(
        commit_advanced(&a),
        Some(20),
        "the new incarnation's receipt counts"
    );
    // The same incarnation reconnecting keeps what its Hello proves (as before).
    connect_as(&mut c, &mut log, 4, hello_of("r1", 0xA2, p20));
    assert_eq!(progress(&c, &log, "r1").durable_lsn, 20);
}

/// FM-X.15: a replaced disk that comes back empty to a truncated log with no snapshot is
/// closed (`NotRetained`), and its old receipts no longer count all the same; the
/// incarnation its Hello announced is recorded.
#[test]
fn fm_x_15_old_receipts_stop_counting_when_the_replaced_disk_is_not_retained() {
    let mut c = core(Quorum::Exactly(2), 2);
    let mut log = MemLog::default();
    log.append_durable(20, 10);
    connect_as(&mut c, &mut log, 1, hello_of("r1", 0xA, Position::ZERO));
    connect(&mut c, &mut log, 2, "r2", Position::ZERO);
    receipt(&mut c, &mut log, 1, 20);
    let a = receipt(&mut c, &mut log, 2, 10);
    assert_eq!(commit_advanced(&a), Some(10));
    log.first = 11;
    let a = connect_as(&mut c, &mut log, 3, hello_of("r1", 0xA2, Position::ZERO));
    assert_eq!(
        closed(&a, 3),
        Some(CloseReason::NotRetained {
            replica_lsn: 0,
            first_lsn: 11
        })
    );
    let r1 = progress(&c, &log, "r1");
    assert_eq!(
        (r1.connected, r1.durable_lsn, r1.incarnation),
        (false, 0, Some(0xA2))
    );
    let a = receipt(&mut c, &mut log, 2, 20);
    assert_eq!(commit_advanced(&a), None, "20 is on one replica disk only");
}

#[test]
fn window_bytes_bound_holds_shipping_until_a_receipt() {
    let w = Window {
        max_batch_bytes: 100,
        max_inflight_bytes: 300,
        max_inflight_records: 1000,
    };
    let mut c = core_with(Quorum::Majority, 1, w);
    let mut log = MemLog::default();
    log.append_durable(20, 18); // 50-byte records
    let a = connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    let b = batches(&a, 1);
    assert_eq!(shipped_lsns(&b), Some((1, 6)));
    assert!(b.iter().all(|b| b.bytes.len() <= 100));
    let a = receipt(&mut c, &mut log, 1, 2);
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((7, 8)));
    let a = receipt(&mut c, &mut log, 1, 3);
    // lsn 3 is in the middle of an in-flight batch: nothing frees up.
    assert!(batches(&a, 1).is_empty());
}

#[test]
fn window_records_bound_holds_shipping() {
    let w = Window {
        max_batch_bytes: 1000,
        max_inflight_bytes: 1 << 20,
        max_inflight_records: 4,
    };
    let mut c = core_with(Quorum::Majority, 1, w);
    let mut log = MemLog::default();
    log.append_durable(20, 0);
    let a = connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    // The first batch (20 records) exceeds the record window but ships alone.
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((1, 20)));
    log.append_durable(3, 0);
    let a = c.handle(Event::LocalDurable, &mut log, 0);
    assert!(batches(&a, 1).is_empty());
    let a = receipt(&mut c, &mut log, 1, 20);
    assert_eq!(shipped_lsns(&batches(&a, 1)), Some((21, 23)));
}

#[test]
fn status_reports_per_replica_lag() {
    let mut c = core(Quorum::Majority, 2);
    let mut log = MemLog::default();
    log.append_durable(10, 68); // 100-byte records
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    receipt(&mut c, &mut log, 1, 4);
    let s = c.status(&log, 1500);
    assert_eq!(s.durable_lsn, 10);
    assert_eq!(s.commit_lsn, 4);
    let r1 = &s.replicas[0];
    assert!(r1.connected && r1.shipping);
    assert_eq!((r1.durable_lsn, r1.lag_records, r1.lag_bytes), (4, 6, 1000));
    assert_eq!(r1.last_receipt_age_ms, Some(1500));
    let r2 = &s.replicas[1];
    assert!(!r2.connected);
    assert_eq!((r2.lag_records, r2.lag_bytes), (10, 1000));
}

#[test]
fn lag_ms_dates_the_first_record_a_replica_lacks() {
    let mut c = core(Quorum::Majority, 1);
    let mut log = MemLog::default();
    // lsns 1..=4 durable at t=100, 5..=8 at t=300, 9..=10 at t=700.
    log.append_durable(4, 0);
    c.handle(Event::LocalDurable, &mut log, 100);
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    for (n, at) in [(4, 300), (2, 700)] {
        log.append_durable(n, 0);
        c.handle(Event::LocalDurable, &mut log, at);
    }
    let lag = |c: &PrimaryCore, log: &MemLog, now| c.status(log, now).replicas[0].lag_ms;
    // Holding nothing: it lacks lsn 1, durable since t=100.
    assert_eq!(lag(&c, &log, 1000), 900);
    // Holding 4: it lacks 5, durable since t=300; holding 6 changes nothing.
    receipt(&mut c, &mut log, 1, 4);
    assert_eq!(lag(&c, &log, 1000), 700);
    receipt(&mut c, &mut log, 1, 6);
    assert_eq!(lag(&c, &log, 1000), 700);
    // Holding 8: it lacks 9, durable since t=700; holding everything: no lag.
    receipt(&mut c, &mut log, 1, 8);
    assert_eq!(lag(&c, &log, 1000), 300);
    receipt(&mut c, &mut log, 1, 10);
    assert_eq!(lag(&c, &log, 1000), 0);
    // The marks every replica passed are forgotten (the bound holds under a long run).
    for i in 0..(2 * MAX_DURABLE_MARKS as u64) {
        log.append_durable(1, 0);
        c.handle(Event::LocalDurable, &mut log, 2000 + i);
    }
    assert!(c.durable_marks.len() <= MAX_DURABLE_MARKS);
    // Far behind every mark kept: the oldest kept is a lower bound.
    let oldest = c.durable_marks.front().map(|m| m.1).expect("marks");
    assert_eq!(lag(&c, &log, 100_000), 100_000 - oldest);
}

#[cfg(feature = "fault-injection")]
mod faults {
    use super::*;
    use walship_wal::{decode_record, RecordError};

    fn shipped_with(fault: ShipFault) -> (MemLog, Vec<RecordBatch>) {
        let mut c = core(Quorum::Majority, 1);
        let mut log = MemLog::default();
        log.append_durable(3, 10);
        c.inject_fault("r1", fault).expect("r1 is a replica");
        let a = connect(&mut c, &mut log, 1, "r1", Position::ZERO);
        (log, batches(&a, 1))
    }

    #[test]
    fn corrupt_next_record_flips_a_payload_byte_of_the_shipped_copy_only() {
        let (log, b) = shipped_with(ShipFault::CorruptNextRecord);
        assert_eq!((b[0].first_lsn, b[0].count), (1, 3));
        assert!(matches!(
            decode_record(&b[0].bytes, 1024),
            Err(RecordError::Checksum { .. })
        ));
        assert!(decode_record(&log.records[0].1, 1024).is_ok());
    }

    #[test]
    fn skip_next_record_leaves_a_gap() {
        let (_, b) = shipped_with(ShipFault::SkipNextRecord);
        assert_eq!((b[0].first_lsn, b[0].count), (2, 2));
        let first = decode_record(&b[0].bytes, 1024).expect("valid record");
        assert_eq!(first.lsn(), 2);
    }

    #[test]
    fn duplicate_next_record_ships_it_twice() {
        let (_, b) = shipped_with(ShipFault::DuplicateNextRecord);
        assert_eq!((b[0].first_lsn, b[0].count), (1, 4));
        let first = decode_record(&b[0].bytes, 1024).expect("valid record");
        let second = decode_record(&b[0].bytes[first.bytes().len()..], 1024).expect("valid");
        assert_eq!((first.lsn(), second.lsn()), (1, 1));
    }

    #[test]
    fn fault_for_an_unknown_node_is_an_error() {
        let mut c = core(Quorum::Majority, 1);
        assert!(matches!(
            c.inject_fault("zz", ShipFault::SkipNextRecord),
            Err(CoreError::UnknownReplica { .. })
        ));
    }
}

/// One step of the random scenario.
#[derive(Clone, Debug)]
enum Op {
    /// Append n records (payload sizes vary), making them durable or not.
    Append {
        n: usize,
        payload: usize,
        durable: bool,
    },
    /// Everything written becomes durable.
    Sync,
    /// Replica i sends a receipt for a fraction (0..=100 %) of what it was shipped.
    Receipt {
        replica: usize,
        pct: u64,
    },
    /// Replica i's connection ends (halt, crash, partition).
    Disconnect {
        replica: usize,
    },
    /// Replica i connects and says Hello with its durable position.
    Connect {
        replica: usize,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20, 0usize..300, any::<bool>()).prop_map(|(n, payload, durable)| Op::Append {
            n,
            payload,
            durable
        }),
        Just(Op::Sync),
        (0usize..4, 0u64..=100).prop_map(|(replica, pct)| Op::Receipt { replica, pct }),
        (0usize..4).prop_map(|replica| Op::Disconnect { replica }),
        (0usize..4).prop_map(|replica| Op::Connect { replica }),
        Just(Op::Tick),
    ]
}

fn quorum_strategy() -> impl Strategy<Value = Quorum> {
    prop_oneof![
        Just(Quorum::LocalOnly),
        Just(Quorum::Majority),
        (1u32..=4).prop_map(Quorum::Exactly)
    ]
}

/// The test's view of one replica: what it durably holds and what was shipped on its connection.
#[derive(Clone, Debug, Default)]
struct ModelReplica {
    durable: Lsn,
    conn: Option<ConnId>,
    /// Highest lsn shipped on the current connection.
    shipped: Lsn,
    /// Highest durable lsn the primary has heard of (receipt or proven Hello).
    known: Lsn,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("WALSHIP_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
    fn core_invariants_hold_under_random_appends_receipts_and_reconnects(
        n_replicas in 1usize..=4,
        quorum in quorum_strategy(),
        ops in proptest::collection::vec(op(), 1..60),
        batch in 64usize..2048,
        window_bytes in 64u64..8192,
        window_records in 1u64..64,
    ) {
        let quorum = match quorum {
            Quorum::Exactly(k) if k as usize > n_replicas => Quorum::Exactly(n_replicas as u32),
            q => q,
        };
        let window = Window { max_batch_bytes: batch, max_inflight_bytes: window_bytes, max_inflight_records: window_records };
        let mut c = core_with(quorum, n_replicas, window);
        let needed = quorum.receipts_needed(n_replicas + 1);
        let mut log = MemLog::default();
        let mut model = vec![ModelReplica::default(); n_replicas];
        let mut next_conn: ConnId = 1;
        let mut last_commit = 0;
        for op in ops {
            let actions = match op {
                Op::Append { n, payload, durable } => {
                    log.append(n, payload);
                    if durable { log.durable = log.records.len(); }
                    c.handle(Event::LocalDurable, &mut log, 0)
                }
                Op::Sync => {
                    log.durable = log.records.len();
                    c.handle(Event::LocalDurable, &mut log, 0)
                }
                Op::Receipt { replica, pct } => {
                    let r = &mut model[replica % n_replicas];
                    match r.conn {
                        Some(conn) => {
                            let lsn = r.durable.max(r.durable + (r.shipped.saturating_sub(r.durable)) * pct / 100);
                            r.durable = lsn;
                            r.known = r.known.max(lsn);
                            receipt(&mut c, &mut log, conn, lsn)
                        }
                        None => c.handle(Event::Tick, &mut log, 0),
                    }
                }
                Op::Disconnect { replica } => {
                    let r = &mut model[replica % n_replicas];
                    match r.conn.take() {
                        Some(conn) => c.handle(Event::Disconnected { conn }, &mut log, 0),
                        None => c.handle(Event::Tick, &mut log, 0),
                    }
                }
                Op::Connect { replica } => {
                    let i = replica % n_replicas;
                    let conn = next_conn;
                    next_conn += 1;
                    let r = &mut model[i];
                    r.conn = Some(conn);
                    r.shipped = r.durable;
                    r.known = r.durable;
                    let last = log.pos(r.durable);
                    connect(&mut c, &mut log, conn, &format!("r{}", i + 1), last)
                }
                Op::Tick => c.handle(Event::Tick, &mut log, 0),
            };
            // Batches: contiguous per connection, only durable records, verified bytes.
            for (i, r) in model.iter_mut().enumerate() {
                let Some(conn) = r.conn else { continue };
                for b in batches(&actions, conn) {
                    prop_assert_eq!(b.first_lsn, r.shipped + 1, "replica {} batch not contiguous", i);
                    let last = b.first_lsn + u64::from(b.count) - 1;
                    prop_assert!(last <= log.durable as Lsn, "shipped beyond local durable");
                    let mut expect = Vec::new();
                    for lsn in b.first_lsn..=last { expect.extend_from_slice(&log.records[lsn as usize - 1].1); }
                    prop_assert!(b.bytes == expect, "shipped bytes differ from stored bytes");
                    r.shipped = last;
                }
                prop_assert!(closed(&actions, conn).is_none(), "a well-behaved replica was closed");
            }
            // Window bound: in flight within the window, or a single batch.
            for s in c.sessions.values() {
                if let SessionState::Shipping(ship) = &s.state {
                    prop_assert!(ship.inflight.len() <= 1 ||
                        (ship.inflight_bytes <= window_bytes && ship.inflight_records <= window_records),
                        "window exceeded: {} bytes {} records in {} batches", ship.inflight_bytes, ship.inflight_records, ship.inflight.len());
                }
            }
            // Commit: never decreases; equals the quorum formula over what the primary heard.
            let commit = c.commit_lsn();
            prop_assert!(commit >= last_commit, "commit decreased {} -> {}", last_commit, commit);
            prop_assert!(commit <= log.durable as Lsn);
            let known: Vec<Lsn> = model.iter().map(|r| r.known).collect();
            let formula = quorum_commit_lsn(needed, log.durable as Lsn, &known).unwrap_or(0);
            prop_assert_eq!(commit, last_commit.max(formula));
            if commit > last_commit {
                prop_assert_eq!(commit_advanced(&actions), Some(commit));
            }
            last_commit = commit;
        }
    }
}

// ---- membership (voter sets, spec/membership.md rule 2) ----

#[test]
fn joint_voter_sets_need_the_quorum_of_each_and_a_removed_member_is_refused() {
    // Static k = 1 (two copies). Old voters {p, r1, r2}, new {p, r1, r2, r3}: lsn 10 on p
    // and r3 only is enough for the new set, not for the old one.
    let mut c = core(Quorum::Exactly(1), 3);
    let mut log = MemLog::default();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let a = c
        .set_membership(
            &ids(&["p", "r1", "r2", "r3"]),
            vec![ids(&["p", "r1", "r2"]), ids(&["p", "r1", "r2", "r3"])],
        )
        .expect("valid membership");
    assert!(a.is_empty(), "nobody connected yet: {a:?}");
    connect(&mut c, &mut log, 1, "r1", Position::ZERO);
    connect(&mut c, &mut log, 3, "r3", Position::ZERO);
    log.append_durable(10, 10);
    c.handle(Event::LocalDurable, &mut log, 0);
    let a = receipt(&mut c, &mut log, 3, 10);
    assert_eq!(
        commit_advanced(&a),
        None,
        "the old voters hold one copy only"
    );
    let a = receipt(&mut c, &mut log, 1, 7);
    assert_eq!(commit_advanced(&a), Some(7), "both sets hold lsn 7 twice");
    // The change committed: the new set alone. r3's lsn 10 is the second copy.
    c.set_membership(
        &ids(&["p", "r1", "r2", "r3"]),
        vec![ids(&["p", "r1", "r2", "r3"])],
    )
    .expect("valid");
    let a = c.handle(Event::Tick, &mut log, 0);
    assert_eq!(commit_advanced(&a), Some(10));
    // r1 is removed: its session is refused and closed, and it is refused if it comes back.
    let a = c
        .set_membership(&ids(&["p", "r2", "r3"]), vec![ids(&["p", "r2", "r3"])])
        .expect("valid");
    assert!(
        matches!(
            closed(&a, 1),
            Some(CloseReason::Refused(RefuseReason::NotAMember { .. }))
        ),
        "{a:?}"
    );
    let a = connect(&mut c, &mut log, 4, "r1", Position::ZERO);
    assert!(
        matches!(
            closed(&a, 4),
            Some(CloseReason::Refused(RefuseReason::NotAMember { .. }))
        ),
        "{a:?}"
    );
    assert_eq!(
        c.set_membership(&ids(&["p"]), vec![]),
        Err(CoreError::EmptyVoterSet)
    );
}
