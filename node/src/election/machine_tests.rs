//! Unit tests of [`ElectionCore`]: one rule each (spec/election.md §2).

use super::*;
use crate::election::{Action as A, ElectionMessage as M, PersistedVote};

const T: u64 = 100;
const LEASE: u64 = 300;

fn config(id: &str, n: usize, setting: i64) -> ElectionConfig {
    ElectionConfig {
        node_id: id.into(),
        voters: (1..=n).map(|i| format!("n{i}")).collect(),
        quorum_setting: setting,
        election_timeout_ms: T,
        lease_ms: LEASE,
    }
}

fn start(epoch: u64, voted_for: Option<&str>, head: LogPosition) -> StartState {
    StartState {
        vote: PersistedVote {
            epoch,
            voted_for: voted_for.map(String::from),
        },
        log_head: head,
        eligible: true,
    }
}

/// A member of a cluster that has formed: its log holds one record (of epoch
/// 0, so epochs in the tests start at 1), and every peer's log in the tests
/// is at least as long unless a test says otherwise. (An empty log campaigns
/// only with every voter: [`fm_f_5_bootstrap_needs_every_voter_and_an_empty_log_on_each`].)
fn core(id: &str, n: usize, setting: i64) -> ElectionCore {
    ElectionCore::new(config(id, n, setting), start(0, None, FORMED), 0, 1).expect("valid config")
}

/// The log head of a formed cluster in these tests.
const FORMED: LogPosition = LogPosition { epoch: 0, lsn: 1 };

fn send(to: &str, msg: M) -> A {
    A::Send { to: to.into(), msg }
}

fn vote_req(epoch: u64, last: LogPosition) -> M {
    M::VoteRequest { epoch, last }
}

/// Drives `c` (a follower of a 3-node cluster) to primary of its next epoch
/// with n2's pre-vote and vote; returns the time it won.
fn elect_n1(c: &mut ElectionCore) -> u64 {
    let now = c.next_tick_ms().expect("follower has a deadline");
    let e = c.epoch() + 1;
    let a = c.tick(now);
    assert!(matches!(&a[0], A::Send { msg: M::PreVoteRequest { epoch, .. }, .. } if *epoch == e));
    let pv = M::PreVoteResponse {
        epoch: e,
        granted: true,
        current_epoch: e - 1,
    };
    c.on_message(now, "n2", pv).expect("peer");
    let a = c
        .on_message(
            now,
            "n2",
            M::VoteResponse {
                epoch: e,
                granted: true,
            },
        )
        .expect("peer");
    assert_eq!(a, vec![A::BecomePrimary { epoch: e }]);
    now
}

#[test]
fn vote_is_persisted_before_the_granting_response_is_sent() {
    let mut c = core("n2", 3, -1);
    let a = c.on_message(5, "n1", vote_req(1, FORMED)).expect("peer");
    assert_eq!(
        a,
        vec![
            A::PersistVote {
                epoch: 1,
                voted_for: Some("n1".into())
            },
            A::BecomeFollower {
                epoch: 1,
                primary_hint: None
            },
            send(
                "n1",
                M::VoteResponse {
                    epoch: 1,
                    granted: true
                }
            ),
        ]
    );
}

#[test]
fn second_candidate_in_the_same_epoch_is_refused() {
    let mut c = core("n2", 3, -1);
    c.on_message(5, "n1", vote_req(1, FORMED)).expect("peer");
    let a = c
        .on_message(6, "n3", vote_req(1, LogPosition::new(1, 9)))
        .expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n3",
            M::VoteResponse {
                epoch: 1,
                granted: false
            }
        )]
    );
    assert_eq!(c.voted_for(), Some(&"n1".to_string()));
}

#[test]
fn vote_restored_from_the_vote_file_refuses_another_candidate_after_restart() {
    let mut c =
        ElectionCore::new(config("n2", 3, -1), start(4, Some("n1"), FORMED), 0, 9).expect("valid");
    let a = c.on_message(1, "n3", vote_req(4, FORMED)).expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n3",
            M::VoteResponse {
                epoch: 4,
                granted: false
            }
        )]
    );
}

#[test]
fn duplicate_request_of_the_same_candidate_is_granted_again_without_a_second_fsync() {
    let mut c = core("n2", 3, -1);
    c.on_message(5, "n1", vote_req(1, FORMED)).expect("peer");
    let a = c.on_message(6, "n1", vote_req(1, FORMED)).expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n1",
            M::VoteResponse {
                epoch: 1,
                granted: true
            }
        )]
    );
}

#[test]
fn stale_epoch_vote_request_is_refused_with_the_current_epoch() {
    let mut c =
        ElectionCore::new(config("n2", 3, -1), start(3, None, FORMED), 0, 1).expect("valid");
    let a = c
        .on_message(1, "n1", vote_req(2, LogPosition::new(2, 50)))
        .expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n1",
            M::VoteResponse {
                epoch: 3,
                granted: false
            }
        )]
    );
    assert_eq!(c.epoch(), 3);
    assert_eq!(c.voted_for(), None);
}

#[test]
fn up_to_date_rule_compares_last_epoch_then_lsn() {
    let own = LogPosition::new(2, 10);
    for (cand, granted) in [
        (LogPosition::new(1, 20), false), // older last epoch, longer log
        (LogPosition::new(2, 9), false),  // same epoch, shorter
        (LogPosition::new(2, 10), true),  // equal
        (LogPosition::new(3, 1), true),   // newer last epoch, shorter log
    ] {
        let mut c =
            ElectionCore::new(config("n2", 3, -1), start(2, None, own), 0, 1).expect("valid");
        let a = c.on_message(1, "n1", vote_req(3, cand)).expect("peer");
        assert_eq!(
            a.last(),
            Some(&send("n1", M::VoteResponse { epoch: 3, granted })),
            "candidate {cand:?} vs own {own:?}"
        );
        assert_eq!(c.voted_for().is_some(), granted);
    }
}

#[test]
fn pre_vote_is_refused_while_a_primary_is_live_and_granted_after_the_minimum_timeout() {
    let mut c = core("n2", 3, -1);
    c.on_primary_contact(1000, 1, "n1").expect("follows n1");
    let req = M::PreVoteRequest {
        epoch: 2,
        last: LogPosition::new(1, 5),
    };
    let a = c.on_message(1000 + T - 1, "n3", req.clone()).expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n3",
            M::PreVoteResponse {
                epoch: 2,
                granted: false,
                current_epoch: 1
            }
        )]
    );
    let a = c.on_message(1000 + T, "n3", req).expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n3",
            M::PreVoteResponse {
                epoch: 2,
                granted: true,
                current_epoch: 1
            }
        )]
    );
    // A pre-vote changes nothing at the receiver: no epoch, no vote, no fsync.
    assert_eq!(
        (c.epoch(), c.voted_for(), c.primary()),
        (1, None, Some(&"n1".to_string()))
    );
}

#[test]
fn rejoining_node_never_disturbs_a_healthy_primary() {
    // n3 restarts with an old epoch, times out, asks pre-votes: n2 hears
    // the primary and refuses; n1 is the primary and refuses; n3 stays a
    // pre-candidate and nobody's epoch moved.
    let mut n1 = core("n1", 3, -1);
    let won = elect_n1(&mut n1);
    let mut n2 = core("n2", 3, -1);
    n2.on_primary_contact(won, 1, "n1").expect("follows");
    let mut n3 = core("n3", 3, -1);
    let t = n3.next_tick_ms().expect("deadline").max(won + 1);
    let reqs = n3.tick(t);
    assert_eq!(reqs.len(), 2);
    for (peer, node) in [("n1", &mut n1), ("n2", &mut n2)] {
        let a = node
            .on_message(
                t,
                "n3",
                M::PreVoteRequest {
                    epoch: 1,
                    last: FORMED,
                },
            )
            .expect("peer");
        assert_eq!(
            a,
            vec![send(
                "n3",
                M::PreVoteResponse {
                    epoch: 1,
                    granted: false,
                    current_epoch: 1
                }
            )],
            "{peer}"
        );
    }
    // The refusals carry epoch 1 > n3's 0: n3 learns it and follows.
    let a = n3
        .on_message(
            t,
            "n2",
            M::PreVoteResponse {
                epoch: 1,
                granted: false,
                current_epoch: 1,
            },
        )
        .expect("peer");
    assert_eq!(
        a,
        vec![
            A::PersistVote {
                epoch: 1,
                voted_for: None
            },
            A::BecomeFollower {
                epoch: 1,
                primary_hint: None
            }
        ]
    );
    assert_eq!(n1.role(), Role::Primary);
    assert_eq!(n1.epoch(), 1);
}

#[test]
fn higher_epoch_in_a_vote_request_fences_the_primary() {
    let mut c = core("n1", 3, -1);
    let won = elect_n1(&mut c);
    let a = c
        .on_message(won + 1, "n3", vote_req(5, LogPosition::new(1, 1)))
        .expect("peer");
    assert_eq!(
        a,
        vec![
            A::StepDown {
                epoch: 1,
                reason: StepDownReason::HigherEpoch {
                    epoch: 5,
                    from: "n3".into()
                }
            },
            A::PersistVote {
                epoch: 5,
                voted_for: Some("n3".into())
            },
            A::BecomeFollower {
                epoch: 5,
                primary_hint: None
            },
            send(
                "n3",
                M::VoteResponse {
                    epoch: 5,
                    granted: true
                }
            ),
        ]
    );
}

#[test]
fn stale_primary_contact_is_refused_and_changes_nothing() {
    let mut c =
        ElectionCore::new(config("n2", 3, -1), start(3, Some("n3"), FORMED), 0, 1).expect("valid");
    assert_eq!(
        c.on_primary_contact(10, 2, "n1"),
        Err(ContactRefusal::StalePrimary {
            primary_epoch: 2,
            current_epoch: 3
        })
    );
    assert_eq!(
        c.on_primary_contact(10, 3, "n9"),
        Err(ContactRefusal::UnknownPeer { peer: "n9".into() })
    );
    assert_eq!((c.epoch(), c.primary()), (3, None));
}

#[test]
fn primary_steps_down_when_no_election_quorum_was_heard_for_lease_ms() {
    let mut c = core("n1", 3, -1);
    let won = elect_n1(&mut c);
    c.on_member_contact(won + 50, "n3", 1).expect("peer");
    // n2 voted at `won`, n3 answered at won+50: the lease holds until
    // won+50+LEASE; until then the ticks only send heartbeats.
    let mut now = won;
    loop {
        let next = c.next_tick_ms().expect("a primary has timers");
        if next >= won + 50 + LEASE {
            break;
        }
        now = next;
        assert!(c.tick(now).iter().all(|a| matches!(
            a,
            A::Send {
                msg: M::Heartbeat { .. },
                ..
            }
        )));
        assert_eq!(c.role(), Role::Primary);
    }
    assert!(now < won + 50 + LEASE);
    assert_eq!(
        c.tick(won + 50 + LEASE),
        vec![
            A::StepDown {
                epoch: 1,
                reason: StepDownReason::LeaseExpired {
                    heard: 1,
                    needed: 2
                }
            },
            A::BecomeFollower {
                epoch: 1,
                primary_hint: None
            },
        ]
    );
    assert_eq!(c.role(), Role::Follower);
}

#[test]
fn quorum_0_never_campaigns_but_promotion_with_accepted_loss_does() {
    let mut c = core("n1", 3, 0);
    assert_eq!(c.next_tick_ms(), None);
    assert!(c.tick(1_000_000).is_empty());
    assert_eq!(c.role(), Role::Follower);
    assert_eq!(
        c.promote(1_000_000, false),
        Err(PromoteError::DataLossNotAccepted)
    );
    let a = c.promote(1_000_000, true).expect("promotion");
    assert_eq!(
        a,
        vec![
            A::PersistVote {
                epoch: 1,
                voted_for: Some("n1".into())
            },
            send("n2", vote_req(1, FORMED)),
            send("n3", vote_req(1, FORMED)),
        ]
    );
    let a = c
        .on_message(
            1_000_001,
            "n3",
            M::VoteResponse {
                epoch: 1,
                granted: true,
            },
        )
        .expect("peer");
    assert_eq!(a, vec![A::BecomePrimary { epoch: 1 }]);
    // Quorum 0 still has a lease (a majority): no primary acknowledges alone
    // for long. (Heartbeats are due first: at once, then every T/4.)
    assert_eq!(c.next_tick_ms(), Some(1_000_001));
    assert_eq!(c.tick(1_000_001).len(), 2, "heartbeats to n2 and n3");
    assert_eq!(c.next_tick_ms(), Some(1_000_001 + T / 4));
    assert!(matches!(
        c.tick(1_000_001 + LEASE)[0],
        A::StepDown {
            reason: StepDownReason::LeaseExpired {
                heard: 1,
                needed: 2
            },
            ..
        }
    ));
}

#[test]
fn ineligible_node_neither_votes_nor_campaigns_until_it_caught_up() {
    let s = StartState {
        eligible: false,
        ..StartState::fresh()
    };
    let mut c = ElectionCore::new(config("n2", 3, -1), s, 0, 1).expect("valid");
    assert_eq!(c.next_tick_ms(), None);
    assert!(c.tick(1_000_000).is_empty());
    let a = c
        .on_message(
            1_000_000,
            "n1",
            M::PreVoteRequest {
                epoch: 1,
                last: LogPosition::new(0, 0),
            },
        )
        .expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n1",
            M::PreVoteResponse {
                epoch: 1,
                granted: false,
                current_epoch: 0
            }
        )]
    );
    let a = c
        .on_message(1_000_000, "n1", vote_req(1, FORMED))
        .expect("peer");
    // It learns the epoch (durably) but does not vote.
    assert_eq!(
        a,
        vec![
            A::PersistVote {
                epoch: 1,
                voted_for: None
            },
            A::BecomeFollower {
                epoch: 1,
                primary_hint: None
            },
            send(
                "n1",
                M::VoteResponse {
                    epoch: 1,
                    granted: false
                }
            ),
        ]
    );
    assert_eq!(c.promote(1_000_000, true), Err(PromoteError::Ineligible));
    assert!(c.set_eligible(1_000_000, true).is_empty());
    assert!(c.next_tick_ms().is_some());
}

#[test]
fn primary_marked_ineligible_steps_down() {
    let mut c = core("n1", 3, -1);
    let won = elect_n1(&mut c);
    assert_eq!(
        c.set_eligible(won, false),
        vec![
            A::StepDown {
                epoch: 1,
                reason: StepDownReason::Ineligible
            },
            A::BecomeFollower {
                epoch: 1,
                primary_hint: None
            },
        ]
    );
}

#[test]
fn halted_and_stopped_nodes_never_vote_or_campaign() {
    for halt in [true, false] {
        let mut c = core("n2", 3, -1);
        let a = if halt { c.halt(0) } else { c.stop(0) };
        assert!(a.is_empty());
        assert_eq!(c.next_tick_ms(), None);
        assert!(c.tick(1_000_000).is_empty());
        assert!(c
            .on_message(1, "n1", vote_req(1, FORMED))
            .expect("peer")
            .is_empty());
        assert_eq!(
            c.on_primary_contact(1, 1, "n1"),
            Err(ContactRefusal::NotRunning { role: c.role() })
        );
        assert_eq!(c.epoch(), 0);
    }
}

#[test]
fn paused_node_does_not_campaign_until_resumed() {
    let mut c = core("n1", 3, -1);
    let deadline = c.next_tick_ms().expect("deadline");
    assert!(c.pause(0).is_empty());
    assert_eq!(c.next_tick_ms(), None);
    assert!(c.tick(deadline + 10 * T).is_empty());
    c.resume(deadline + 10 * T);
    let d = c.next_tick_ms().expect("deadline after resume");
    assert!((deadline + 11 * T..deadline + 12 * T).contains(&d));
    assert_eq!(c.tick(d).len(), 2, "two pre-vote requests");
}

#[test]
fn paused_node_refuses_pre_votes_but_grants_votes_and_takes_a_hand_over() {
    // Refuses pre-votes: a member that missed the pause cannot fail over through it.
    let mut c = core("n2", 3, -1);
    c.pause(0);
    let a = c
        .on_message(
            1,
            "n3",
            M::PreVoteRequest {
                epoch: 1,
                last: FORMED,
            },
        )
        .expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n3",
            M::PreVoteResponse {
                epoch: 1,
                granted: false,
                current_epoch: 0
            }
        )]
    );
    // Grants a vote under the usual rules (persisted first): promotions need it.
    let a = c.on_message(1, "n3", vote_req(1, FORMED)).expect("peer");
    assert_eq!(
        a[0],
        A::PersistVote {
            epoch: 1,
            voted_for: Some("n3".into())
        }
    );
    // A paused follower of n1 takes n1's hand-over (an operator's switchover).
    let mut f = core("n2", 3, -1);
    f.pause(0);
    f.on_message(
        1,
        "n1",
        M::Heartbeat {
            epoch: 0,
            commit_lsn: 0,
        },
    )
    .expect("peer");
    f.on_message(1, "n1", M::TimeoutNow { epoch: 0 })
        .expect("peer");
    assert_eq!(f.role(), Role::Candidate);
    // Resumed: pre-votes are answered again.
    let mut r = core("n2", 3, -1);
    r.pause(0);
    r.resume(0);
    let a = r
        .on_message(
            1,
            "n3",
            M::PreVoteRequest {
                epoch: 1,
                last: FORMED,
            },
        )
        .expect("peer");
    assert!(matches!(
        a[0],
        A::Send {
            msg: M::PreVoteResponse { granted: true, .. },
            ..
        }
    ));
}

#[test]
fn election_timeouts_are_drawn_from_t_to_2t_and_differ_by_seed() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let c =
            ElectionCore::new(config("n1", 3, -1), StartState::fresh(), 1000, seed).expect("valid");
        let d = c.next_tick_ms().expect("deadline") - 1000;
        assert!((T..2 * T).contains(&d), "seed {seed}: timeout {d}");
        seen.insert(d);
    }
    assert!(
        seen.len() > 50,
        "timeouts are spread: {} distinct",
        seen.len()
    );
}

#[test]
fn single_voter_cluster_elects_itself_on_timeout() {
    let mut c = core("n1", 1, -1);
    let d = c.next_tick_ms().expect("deadline");
    assert_eq!(
        c.tick(d),
        vec![
            A::PersistVote {
                epoch: 1,
                voted_for: Some("n1".into())
            },
            A::BecomePrimary { epoch: 1 }
        ]
    );
    assert_eq!(
        c.next_tick_ms(),
        None,
        "a lease of one needs nobody else, and there is nobody to send heartbeats to"
    );
}

#[test]
fn static_k_1_of_5_needs_4_votes_and_status_names_who_is_missing() {
    let mut c = core("n1", 5, 1);
    let d = c.next_tick_ms().expect("deadline");
    c.tick(d);
    for p in ["n2", "n3", "n4"] {
        c.on_message(
            d,
            p,
            M::PreVoteResponse {
                epoch: 1,
                granted: true,
                current_epoch: 0,
            },
        )
        .expect("peer");
    }
    assert_eq!(c.role(), Role::Candidate);
    c.on_message(
        d,
        "n2",
        M::VoteResponse {
            epoch: 1,
            granted: true,
        },
    )
    .expect("peer");
    c.on_message(
        d,
        "n5",
        M::VoteResponse {
            epoch: 1,
            granted: false,
        },
    )
    .expect("peer");
    let st = c.status(d);
    assert_eq!(
        st.blocked_on().as_deref(),
        Some("need 4 of 5 votes for epoch 1, have 2: waiting for n3, n4; refused by n5")
    );
    let a = c
        .on_message(
            d,
            "n3",
            M::VoteResponse {
                epoch: 1,
                granted: true,
            },
        )
        .expect("peer");
    assert!(a.is_empty(), "3 of 4 votes: still a candidate");
    let a = c
        .on_message(
            d,
            "n4",
            M::VoteResponse {
                epoch: 1,
                granted: true,
            },
        )
        .expect("peer");
    assert_eq!(a, vec![A::BecomePrimary { epoch: 1 }]);
}

#[test]
fn messages_from_unknown_members_or_itself_are_refused() {
    let mut c = core("n1", 3, -1);
    for who in ["n9", "n1"] {
        assert_eq!(
            c.on_message(0, who, vote_req(1, FORMED)),
            Err(InputError::UnknownPeer { peer: who.into() })
        );
    }
    assert_eq!(c.epoch(), 0);
}

#[test]
fn invalid_configurations_are_refused() {
    let mut cfg = config("n4", 3, -1);
    assert!(matches!(
        ElectionCore::new(cfg.clone(), StartState::fresh(), 0, 0),
        Err(ConfigError::NotAVoter { .. })
    ));
    cfg.node_id = "n1".into();
    cfg.quorum_setting = -2;
    assert_eq!(
        ElectionCore::new(cfg.clone(), StartState::fresh(), 0, 0).err(),
        Some(ConfigError::InvalidQuorumSetting { setting: -2 })
    );
    cfg.quorum_setting = -1;
    cfg.voters.push("n2".into());
    assert_eq!(
        ElectionCore::new(cfg.clone(), StartState::fresh(), 0, 0).err(),
        Some(ConfigError::DuplicateVoter { voter: "n2".into() })
    );
    cfg.voters.pop();
    cfg.lease_ms = 0;
    assert_eq!(
        ElectionCore::new(cfg, StartState::fresh(), 0, 0).err(),
        Some(ConfigError::ZeroTimeout { name: "lease_ms" })
    );
}

#[test]
fn candidate_hearing_the_primary_of_its_epoch_follows_it() {
    let mut c = core("n1", 3, -1);
    let d = c.next_tick_ms().expect("deadline");
    c.tick(d);
    c.on_message(
        d,
        "n2",
        M::PreVoteResponse {
            epoch: 1,
            granted: true,
            current_epoch: 0,
        },
    )
    .expect("peer");
    assert_eq!(c.role(), Role::Candidate);
    // n3 won epoch 1 with n2's vote.
    let a = c.on_primary_contact(d + 1, 1, "n3").expect("follows n3");
    assert_eq!(
        a,
        vec![A::BecomeFollower {
            epoch: 1,
            primary_hint: Some("n3".into())
        }]
    );
    // A second primary claiming epoch 1 is refused.
    assert_eq!(
        c.on_primary_contact(d + 2, 1, "n2"),
        Err(ContactRefusal::ConflictingPrimary {
            epoch: 1,
            claimed: "n2".into(),
            known: "n3".into()
        })
    );
    // A late vote for the lost candidacy changes nothing.
    let a = c
        .on_message(
            d + 3,
            "n2",
            M::VoteResponse {
                epoch: 1,
                granted: true,
            },
        )
        .expect("peer");
    assert!(a.is_empty());
    assert_eq!(c.role(), Role::Follower);
}

#[test]
fn answers_to_an_earlier_pre_vote_round_are_not_counted() {
    let mut c = core("n1", 5, -1);
    let d1 = c.next_tick_ms().expect("deadline");
    c.tick(d1);
    let d2 = c.next_tick_ms().expect("next round");
    c.tick(d2); // a second pre-vote round, still for epoch 1
    c.on_message(
        d2,
        "n2",
        M::PreVoteResponse {
            epoch: 1,
            granted: true,
            current_epoch: 0,
        },
    )
    .expect("peer");
    // The same peer answering twice (duplicate) is one pre-vote.
    c.on_message(
        d2,
        "n2",
        M::PreVoteResponse {
            epoch: 1,
            granted: true,
            current_epoch: 0,
        },
    )
    .expect("peer");
    // An answer for another epoch is not counted.
    c.on_message(
        d2,
        "n3",
        M::PreVoteResponse {
            epoch: 2,
            granted: true,
            current_epoch: 0,
        },
    )
    .expect("peer");
    assert_eq!(c.role(), Role::PreCandidate, "2 of the 3 pre-votes needed");
    let a = c
        .on_message(
            d2,
            "n4",
            M::PreVoteResponse {
                epoch: 1,
                granted: true,
                current_epoch: 0,
            },
        )
        .expect("peer");
    assert_eq!(
        a[0],
        A::PersistVote {
            epoch: 1,
            voted_for: Some("n1".into())
        }
    );
    assert_eq!(c.role(), Role::Candidate);
}

#[test]
fn restart_with_a_log_newer_than_the_vote_file_starts_in_the_log_epoch_without_a_vote() {
    let s = start(2, Some("n3"), LogPosition::new(5, 40));
    let mut c = ElectionCore::new(config("n2", 3, -1), s, 0, 1).expect("valid");
    assert_eq!((c.epoch(), c.voted_for()), (5, None));
    assert_eq!(
        c.on_primary_contact(1, 4, "n1"),
        Err(ContactRefusal::StalePrimary {
            primary_epoch: 4,
            current_epoch: 5
        })
    );
    // Its next candidacy is for epoch 6, above every record it holds.
    let d = c.next_tick_ms().expect("deadline");
    let a = c.tick(d);
    assert!(matches!(
        &a[0],
        A::Send {
            msg: M::PreVoteRequest { epoch: 6, .. },
            ..
        }
    ));
}

#[test]
#[should_panic(expected = "no record of an epoch above the node's epoch")]
fn log_head_of_an_epoch_the_core_never_accepted_is_a_broken_invariant() {
    let mut c = core("n2", 3, -1);
    c.set_log_head(LogPosition::new(1, 1));
}

fn heartbeat(epoch: u64, commit_lsn: u64) -> M {
    M::Heartbeat { epoch, commit_lsn }
}

#[test]
fn primary_sends_heartbeats_at_once_then_every_quarter_of_the_shorter_timeout() {
    let mut c = core("n1", 3, -1);
    let won = elect_n1(&mut c);
    let hb = T.min(LEASE) / 4;
    assert_eq!(c.heartbeat_ms(), hb);
    // Due right after winning: the followers learn the new primary.
    assert_eq!(c.next_tick_ms(), Some(won));
    c.set_commit_lsn(7);
    assert_eq!(
        c.tick(won),
        vec![send("n2", heartbeat(1, 7)), send("n3", heartbeat(1, 7))]
    );
    assert_eq!(c.next_tick_ms(), Some(won + hb));
    assert!(c.tick(won + hb - 1).is_empty());
    assert_eq!(c.tick(won + hb).len(), 2);
    // The interval is never 0, and follows the shorter of the two timeouts.
    let mut cfg = config("n1", 3, -1);
    cfg.election_timeout_ms = 3;
    let tiny = ElectionCore::new(cfg, StartState::fresh(), 0, 1).expect("valid");
    assert_eq!(tiny.heartbeat_ms(), 1);
    let mut cfg = config("n1", 3, -1);
    cfg.lease_ms = 40;
    let short_lease = ElectionCore::new(cfg, StartState::fresh(), 0, 1).expect("valid");
    assert_eq!(short_lease.heartbeat_ms(), 10);
}

#[test]
fn follower_follows_a_heartbeat_answers_it_and_stays_sticky() {
    let mut c = core("n2", 3, -1);
    // Epoch 1 from a follower of epoch 0: adopt (persisted) before acking.
    assert_eq!(
        c.on_message(10, "n1", heartbeat(1, 0)).expect("peer"),
        vec![
            A::PersistVote {
                epoch: 1,
                voted_for: None
            },
            A::BecomeFollower {
                epoch: 1,
                primary_hint: Some("n1".into())
            },
            send("n1", M::HeartbeatAck { epoch: 1 }),
        ]
    );
    assert_eq!(c.primary(), Some(&"n1".to_string()));
    // The next one only answers, and pushes the election deadline.
    assert_eq!(
        c.on_message(10 + T, "n1", heartbeat(1, 3)).expect("peer"),
        vec![send("n1", M::HeartbeatAck { epoch: 1 })]
    );
    assert!(c.next_tick_ms().expect("deadline") >= 10 + 2 * T);
    // Stickiness: a pre-vote less than T after a heartbeat is refused.
    let a = c
        .on_message(
            10 + 2 * T - 1,
            "n3",
            M::PreVoteRequest {
                epoch: 2,
                last: LogPosition::new(1, 5),
            },
        )
        .expect("peer");
    assert_eq!(
        a,
        vec![send(
            "n3",
            M::PreVoteResponse {
                epoch: 2,
                granted: false,
                current_epoch: 1
            }
        )]
    );
    // A second primary claiming epoch 1 is refused without an ack.
    assert!(c
        .on_message(10 + T, "n3", heartbeat(1, 0))
        .expect("peer")
        .is_empty());
    assert_eq!(c.primary(), Some(&"n1".to_string()));
}

#[test]
fn stale_heartbeat_is_answered_with_the_higher_epoch_and_the_old_primary_steps_down() {
    let mut old = core("n1", 3, -1);
    let won = elect_n1(&mut old);
    let mut f =
        ElectionCore::new(config("n3", 3, -1), start(2, Some("n2"), FORMED), 0, 3).expect("valid");
    let hb = old.tick(won);
    let to_n3 = hb
        .into_iter()
        .find_map(|a| match a {
            A::Send { to, msg } if to == "n3" => Some(msg),
            _ => None,
        })
        .expect("a heartbeat to n3");
    let a = f.on_message(won, "n1", to_n3).expect("peer");
    assert_eq!(a, vec![send("n1", M::HeartbeatAck { epoch: 2 })]);
    assert_eq!((f.epoch(), f.primary()), (2, None), "n3 changed nothing");
    let a = old
        .on_message(won + 1, "n3", M::HeartbeatAck { epoch: 2 })
        .expect("peer");
    assert_eq!(
        a,
        vec![
            A::StepDown {
                epoch: 1,
                reason: StepDownReason::HigherEpoch {
                    epoch: 2,
                    from: "n3".into()
                }
            },
            A::PersistVote {
                epoch: 2,
                voted_for: None
            },
            A::BecomeFollower {
                epoch: 2,
                primary_hint: None
            },
        ]
    );
    assert_eq!(old.role(), Role::Follower);
}

#[test]
fn heartbeat_acks_of_its_epoch_renew_the_primary_lease() {
    let mut c = core("n1", 3, -1);
    let won = elect_n1(&mut c);
    // n2's vote counted at `won`; acks from n3 keep the lease beyond it.
    let mut now = won;
    while now < won + 3 * LEASE {
        for a in c.tick(now) {
            assert!(matches!(a, A::Send { .. }), "still primary at {now}: {a:?}");
        }
        c.on_message(now, "n3", M::HeartbeatAck { epoch: 1 })
            .expect("peer");
        now += c.heartbeat_ms();
    }
    assert_eq!(c.role(), Role::Primary);
    assert_eq!(c.status(now).lease.map(|l| l.heard), Some(2));
    // Acks of an older epoch are not contact.
    let mut c = core("n1", 3, -1);
    let won = elect_n1(&mut c);
    c.on_message(won + 1, "n3", M::HeartbeatAck { epoch: 0 })
        .expect("peer");
    assert_eq!(c.status(won + LEASE).lease.map(|l| l.heard), Some(1));
}

#[test]
fn candidate_hearing_a_heartbeat_of_its_epoch_follows_and_a_higher_one_fences_a_primary() {
    // n1 is a candidate of epoch 1 (voted for itself); a heartbeat of
    // epoch 2 makes it a follower of n3.
    let mut c = core("n1", 3, -1);
    let now = c.next_tick_ms().expect("deadline");
    c.tick(now);
    c.on_message(
        now,
        "n2",
        M::PreVoteResponse {
            epoch: 1,
            granted: true,
            current_epoch: 0,
        },
    )
    .expect("peer");
    assert_eq!(c.role(), Role::Candidate);
    let a = c.on_message(now + 1, "n3", heartbeat(2, 0)).expect("peer");
    assert_eq!(a.last(), Some(&send("n3", M::HeartbeatAck { epoch: 2 })));
    assert_eq!((c.role(), c.epoch()), (Role::Follower, 2));
    // A primary hearing a heartbeat of a higher epoch steps down first.
    let mut p = core("n1", 3, -1);
    let won = elect_n1(&mut p);
    let a = p.on_message(won + 1, "n2", heartbeat(5, 0)).expect("peer");
    assert!(matches!(a[0], A::StepDown { epoch: 1, .. }));
    assert_eq!(a.last(), Some(&send("n2", M::HeartbeatAck { epoch: 5 })));
    assert_eq!(p.primary(), Some(&"n2".to_string()));
}

#[test]
fn switchover_target_campaigns_at_once_only_when_its_own_primary_asks() {
    // n1 leads epoch 1; n2 follows it.
    let mut p = core("n1", 3, -1);
    let now = elect_n1(&mut p);
    assert_eq!(
        p.transfer_to("n2").expect("primary"),
        vec![send("n2", M::TimeoutNow { epoch: 1 })]
    );
    assert!(matches!(
        p.transfer_to("n9"),
        Err(PromoteError::UnknownTarget { .. })
    ));
    let mut f = core("n2", 3, -1);
    f.on_message(
        now,
        "n1",
        M::Heartbeat {
            epoch: 1,
            commit_lsn: 0,
        },
    )
    .expect("peer");
    assert_eq!(f.primary().map(String::as_str), Some("n1"));
    // From a member that is not its primary, or of another epoch: ignored.
    assert!(f
        .on_message(now, "n3", M::TimeoutNow { epoch: 1 })
        .expect("peer")
        .is_empty());
    assert!(f
        .on_message(now, "n1", M::TimeoutNow { epoch: 0 })
        .expect("peer")
        .is_empty());
    assert_eq!(f.role(), Role::Follower);
    // From its primary: a candidate of epoch 2 at once (no pre-vote, despite the live
    // primary), its own vote persisted before the requests leave.
    let a = f
        .on_message(now, "n1", M::TimeoutNow { epoch: 1 })
        .expect("peer");
    assert_eq!(f.role(), Role::Candidate);
    assert_eq!(
        a[0],
        A::PersistVote {
            epoch: 2,
            voted_for: Some("n2".into())
        }
    );
    assert!(a[1..].iter().all(|x| matches!(
        x,
        A::Send {
            msg: M::VoteRequest { epoch: 2, .. },
            ..
        }
    )));
    // The old primary grants it (it is up to date) and so steps down, fenced.
    let a = p.on_message(now, "n2", vote_req(2, FORMED)).expect("peer");
    assert!(matches!(a[0], A::StepDown { epoch: 1, .. }), "{a:?}");
    assert_ne!(p.role(), Role::Primary);
    // A follower that is not its primary's peer in the epoch (a primary itself) refuses.
    assert!(matches!(
        f.transfer_to("n1"),
        Err(PromoteError::NotRunning { .. })
    ));
}

/// Bootstrap (spec/election.md §2.10): a candidate whose log is empty needs
/// every voter, and a voter whose log holds anything refuses it; so a cluster
/// forms only when every listed member is up and empty, and an emptied node
/// cannot lead a cluster that holds data.
#[test]
fn fm_f_5_bootstrap_needs_every_voter_and_an_empty_log_on_each() {
    let fresh = |id: &str| {
        ElectionCore::new(config(id, 3, -1), StartState::fresh(), 0, 1).expect("valid config")
    };
    let mut c = fresh("n1");
    let now = c.next_tick_ms().expect("follower has a deadline");
    c.tick(now);
    let pv = |current_epoch| M::PreVoteResponse {
        epoch: 1,
        granted: true,
        current_epoch,
    };
    c.on_message(now, "n2", pv(0)).expect("peer");
    assert_eq!(
        c.role(),
        Role::PreCandidate,
        "two of three pre-votes are not enough"
    );
    let a = c.on_message(now, "n3", pv(0)).expect("peer");
    assert!(a.iter().any(|x| matches!(
        x,
        A::Send {
            msg: M::VoteRequest { epoch: 1, .. },
            ..
        }
    )));
    let v = M::VoteResponse {
        epoch: 1,
        granted: true,
    };
    assert_eq!(c.on_message(now, "n2", v.clone()).expect("peer"), vec![]);
    assert_eq!(c.role(), Role::Candidate);
    let st = c.status(now);
    assert_eq!(
        st.campaign.as_ref().map(|t| t.need),
        Some(3),
        "status names the bootstrap quorum"
    );
    assert_eq!(
        c.on_message(now, "n3", v).expect("peer"),
        vec![A::BecomePrimary { epoch: 1 }]
    );

    // A voter whose log holds a record refuses an empty candidate.
    let mut holder = core("n2", 3, -1);
    let a = holder
        .on_message(5, "n1", vote_req(1, LogPosition::ZERO))
        .expect("peer");
    assert!(
        a.iter().any(|x| matches!(
            x,
            A::Send {
                msg: M::VoteResponse { granted: false, .. },
                ..
            }
        )),
        "{a:?}"
    );

    // Once its log holds a record, the same node needs only a majority.
    let mut c = fresh("n1");
    c.set_log_head(FORMED);
    elect_n1(&mut c);
    assert_eq!(c.role(), Role::Primary);
}

// ---- membership (spec/membership.md) ----

#[test]
fn a_learner_never_campaigns_and_a_candidate_demoted_to_learner_gives_up() {
    let mut c = core("n3", 3, -1);
    let a = c.set_membership(0, &[("n1".into(), 0), ("n2".into(), 0)], &["n3".into()]);
    assert!(a.is_empty(), "a follower abandons nothing: {a:?}");
    assert!(!c.is_voter());
    assert_eq!(c.next_tick_ms(), None, "a learner has no election deadline");
    assert_eq!(c.tick(10 * T), vec![]);
    assert_eq!(c.promote(10 * T, false), Err(PromoteError::NotAVoter));
    // A learner still follows a primary (heartbeats reach it).
    assert!(c.on_primary_contact(10 * T, 1, "n1").is_ok());

    // A pre-candidate that stops being a voter becomes a follower.
    let mut c = core("n3", 3, -1);
    let now = c.next_tick_ms().expect("deadline");
    let a = c.tick(now);
    assert!(matches!(
        &a[0],
        A::Send {
            msg: M::PreVoteRequest { .. },
            ..
        }
    ));
    assert_eq!(c.role(), Role::PreCandidate);
    let a = c.set_membership(now, &[("n1".into(), 0), ("n2".into(), 0)], &["n3".into()]);
    assert_eq!(c.role(), Role::Follower);
    assert!(matches!(a.as_slice(), [A::BecomeFollower { .. }]), "{a:?}");
}

#[test]
fn a_heartbeat_is_followed_from_a_primary_the_newest_configuration_does_not_list() {
    // n3 holds an uncommitted configuration record that removed n1; the record was
    // discarded and n1 leads epoch 2: n3 follows it (and learns from the replication
    // handshake that its record diverges) instead of refusing it forever.
    let mut c = core("n3", 3, -1);
    c.set_membership(0, &[("n2".into(), 0), ("n3".into(), 0)], &[]);
    let a = c
        .on_message(
            5,
            "n1",
            M::Heartbeat {
                epoch: 2,
                commit_lsn: 9,
            },
        )
        .expect("a heartbeat from a non-member is contact from a primary");
    assert!(
        a.contains(&A::BecomeFollower {
            epoch: 2,
            primary_hint: Some("n1".into())
        }),
        "{a:?}"
    );
    assert!(
        a.contains(&send("n1", M::HeartbeatAck { epoch: 2 })),
        "{a:?}"
    );
    // Every other message from a non-member is still refused.
    assert_eq!(
        c.on_message(6, "n1", vote_req(3, FORMED)),
        Err(InputError::UnknownPeer { peer: "n1".into() })
    );
}

#[test]
fn elections_count_votes_among_the_newest_configurations_voters() {
    // Five voters: n1 needs three votes; with n2's alone it is not primary.
    let mut c = core("n1", 3, -1);
    let voters: Vec<(String, u64)> = (1..=5).map(|i| (format!("n{i}"), 0)).collect();
    c.set_membership(0, &voters, &[]);
    let now = c.next_tick_ms().expect("deadline");
    c.tick(now);
    let e = c.epoch() + 1;
    for peer in ["n2", "n3"] {
        c.on_message(
            now,
            peer,
            M::PreVoteResponse {
                epoch: e,
                granted: true,
                current_epoch: e - 1,
            },
        )
        .expect("peer");
    }
    assert_eq!(c.role(), Role::Candidate);
    let a = c
        .on_message(
            now,
            "n2",
            M::VoteResponse {
                epoch: e,
                granted: true,
            },
        )
        .expect("peer");
    assert!(a.is_empty(), "2 of 5 votes do not elect: {a:?}");
    let a = c
        .on_message(
            now,
            "n4",
            M::VoteResponse {
                epoch: e,
                granted: true,
            },
        )
        .expect("n4 is a voter of the newest configuration");
    assert_eq!(a, vec![A::BecomePrimary { epoch: e }]);
}

#[test]
fn fm_x_15_a_vote_from_another_incarnation_of_a_voter_does_not_count() {
    let mut c = core("n1", 3, -1);
    c.set_membership(
        0,
        &[("n1".into(), 11), ("n2".into(), 22), ("n3".into(), 33)],
        &[],
    );
    let now = c.next_tick_ms().expect("deadline");
    c.tick(now);
    let e = c.epoch() + 1;
    let pv = M::PreVoteResponse {
        epoch: e,
        granted: true,
        current_epoch: e - 1,
    };
    // n2's disk was wiped: it answers from incarnation 99.
    c.on_message_from(now, "n2", 99, pv.clone()).expect("peer");
    assert_eq!(
        c.role(),
        Role::PreCandidate,
        "the wiped n2's pre-vote is a refusal"
    );
    c.on_message_from(now, "n3", 33, pv).expect("peer");
    assert_eq!(c.role(), Role::Candidate);
    let granted = M::VoteResponse {
        epoch: e,
        granted: true,
    };
    let a = c
        .on_message_from(now, "n2", 99, granted.clone())
        .expect("peer");
    assert!(a.is_empty(), "the wiped n2's vote does not count: {a:?}");
    let a = c.on_message_from(now, "n3", 33, granted).expect("peer");
    assert_eq!(a, vec![A::BecomePrimary { epoch: e }]);
}

#[test]
fn a_learner_promoted_to_voter_brings_its_recent_ack_to_the_lease() {
    // n1 leads {n1, n2, n3} with learner n4; n3 is down. n4's acks as a learner do not
    // renew the lease, but once n4 votes (4 voters: 3 needed) its last ack counts at
    // once: the primary does not step down for want of an ack n4 already sent.
    let mut c = core("n1", 3, -1);
    let three: Vec<(String, u64)> = (1..=3).map(|i| (format!("n{i}"), 0)).collect();
    c.set_membership(0, &three, &["n4".to_string()]);
    let won = elect_n1(&mut c);
    let mut now = won;
    while now < won + 2 * LEASE {
        for peer in ["n2", "n4"] {
            c.on_message(now, peer, M::HeartbeatAck { epoch: 1 })
                .expect("peer");
        }
        c.tick(now);
        now += c.heartbeat_ms();
    }
    assert_eq!(c.role(), Role::Primary);
    assert_eq!(
        c.status(now).lease.map(|l| l.heard),
        Some(2),
        "the learner's acks are not lease contact"
    );
    let four: Vec<(String, u64)> = (1..=4).map(|i| (format!("n{i}"), 0)).collect();
    c.set_membership(now, &four, &[]);
    assert_eq!(
        c.status(now).lease.map(|l| l.heard),
        Some(3),
        "n4's last ack counts once it votes"
    );
    for a in c.tick(now) {
        assert!(matches!(a, A::Send { .. }), "still primary: {a:?}");
    }
    assert_eq!(c.role(), Role::Primary);
}
