//! Exhaustive model check (stateright) of the election core and the commit
//! rule for 3 nodes at a bounded depth (spec/election.md §6).
//!
//! The model runs the production [`ElectionCore`] of each node and the
//! production commit rule [`committable_lsn`]; only the world around them is
//! abstract:
//!
//! - the network is a set of messages in flight: any of them may be
//!   delivered next (reordering), delivered and kept (duplication), or never
//!   delivered (loss: for safety, a message that is never delivered is the
//!   same as a lost one);
//! - a node may crash and restart at any step, keeping its persisted vote
//!   (`PersistVote` actions) and its log (records are durable before they
//!   are acknowledged), losing everything else;
//! - a timeout is a nondeterministic choice: the node's clock jumps to its
//!   next deadline (election timeout = lease = 1 ms, so one jump expires
//!   stickiness and leases); a primary's timeout also sends its heartbeats
//!   (at once after winning, then every 1 ms), which travel the network like
//!   every other message and whose acks renew its lease or fence it;
//! - a log is a list of epochs (lsn = index + 1). A primary appends its
//!   control record on `BecomePrimary` and further records on `Append`;
//!   `Ship` copies a prefix of the primary's log to a follower that accepts
//!   the contact (replacing a divergent suffix, as `rejoin` would) and
//!   returns the receipt, or returns the follower's higher epoch (fencing).
//!   The commit point is `committable_lsn` over the receipts of the primary's
//!   epoch;
//! - the "schedule" variant adds a macro step `Campaign(i, peers)`: node i
//!   times out and its pre-vote and vote round trips with `peers` happen at
//!   once (other messages lost). Every state it reaches is reachable with
//!   single steps, it only makes deep schedules such as figure 8 reachable
//!   within the depth bound.
//!
//! Properties: at most one primary per epoch; a node never grants two
//! candidates in one epoch; a grant is persisted before it is sent; every
//! committed record is in the log of every later primary.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use stateright::{Checker, Model, Property};
use walship_node::election::{
    commit_copies, committable_lsn, Action, ContactRefusal, ElectionConfig, ElectionCore,
    ElectionMessage, LogPosition, PersistedVote, Role, StartState,
};

const N: usize = 3;
const IDS: [&str; N] = ["n1", "n2", "n3"];

fn idx(id: &str) -> usize {
    IDS.iter()
        .position(|x| *x == id)
        .unwrap_or_else(|| panic!("model invariant: {id} is a member"))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    core: ElectionCore,
    now_ms: u64,
    /// Epoch of each record; lsn = index + 1.
    log: Vec<u64>,
    /// What `state/vote` holds.
    vote: PersistedVote,
    /// Primary only: durable lsn of each member from receipts of its epoch.
    matched: [usize; N],
}

impl Node {
    fn head(&self) -> LogPosition {
        LogPosition::new(self.log.last().copied().unwrap_or(0), self.log.len() as u64)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Sys {
    nodes: Vec<Node>,
    net: BTreeSet<(usize, usize, ElectionMessage)>,
    /// Ghost: (epoch, node) for every BecomePrimary ever.
    primaries: BTreeSet<(u64, usize)>,
    /// Ghost: (voter, epoch, candidate) for every granted vote ever sent.
    grants: BTreeSet<(usize, u64, usize)>,
    /// Ghost: a grant was sent while `state/vote` did not hold it.
    unpersisted_grant: bool,
    /// Ghost: committed (lsn, record epoch) → lowest epoch that committed it.
    committed: BTreeMap<(usize, u64), u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Act {
    Timeout(usize),
    Deliver(usize, usize, ElectionMessage),
    Duplicate(usize, usize, ElectionMessage),
    /// Deliver, and deliver the receiver's answers back at once, and the
    /// answers to those (a shortcut: the same as `Deliver` followed by
    /// delivering each answer as it is sent).
    Exchange(usize, usize, ElectionMessage),
    Restart(usize),
    Ship {
        from: usize,
        to: usize,
        upto: usize,
    },
    Append(usize),
    Campaign(usize, u8),
}

#[derive(Clone, Debug)]
struct ElectionModel {
    quorum_setting: i64,
    max_epoch: u64,
    max_log: usize,
    max_net: usize,
    /// Bound on every node's clock (ms; one timeout advances it by 1).
    max_now_ms: u64,
    /// Messages go through the network (else only macro campaigns deliver them).
    fine_network: bool,
    /// Offer the `Campaign` macro step.
    campaigns: bool,
    /// Offer crash-restarts.
    restarts: bool,
}

fn config(i: usize, setting: i64) -> ElectionConfig {
    ElectionConfig {
        node_id: IDS[i].into(),
        voters: IDS.iter().map(|s| s.to_string()).collect(),
        quorum_setting: setting,
        election_timeout_ms: 1,
        lease_ms: 1,
    }
}

impl ElectionModel {
    fn new_core(&self, i: usize, start: StartState, now_ms: u64) -> ElectionCore {
        ElectionCore::new(config(i, self.quorum_setting), start, now_ms, i as u64)
            .unwrap_or_else(|e| panic!("model config is valid: {e}"))
    }

    fn init(&self) -> Sys {
        Sys {
            nodes: (0..N)
                .map(|i| Node {
                    core: self.new_core(i, StartState::fresh(), 0),
                    now_ms: 0,
                    log: Vec::new(),
                    vote: PersistedVote::default(),
                    matched: [0; N],
                })
                .collect(),
            net: BTreeSet::new(),
            primaries: BTreeSet::new(),
            grants: BTreeSet::new(),
            unpersisted_grant: false,
            committed: BTreeMap::new(),
        }
    }

    /// Performs `actions` of node `origin` in order, as an executor would.
    /// Messages between `direct.0` and the peers in mask `direct.1` are
    /// delivered at once; others go to the network (fine model) or are lost.
    fn run(&self, s: &mut Sys, origin: usize, actions: Vec<Action>, direct: Option<(usize, u8)>) {
        let mut queue: VecDeque<(usize, Action)> =
            actions.into_iter().map(|a| (origin, a)).collect();
        while let Some((i, a)) = queue.pop_front() {
            match a {
                Action::PersistVote { epoch, voted_for } => {
                    s.nodes[i].vote = PersistedVote { epoch, voted_for };
                }
                Action::Send { to, msg } => {
                    let j = idx(&to);
                    if let ElectionMessage::VoteResponse {
                        epoch,
                        granted: true,
                    } = msg
                    {
                        s.grants.insert((i, epoch, j));
                        let durable = PersistedVote {
                            epoch,
                            voted_for: Some(to.clone()),
                        };
                        if s.nodes[i].vote != durable {
                            s.unpersisted_grant = true;
                        }
                    }
                    let is_direct = direct.is_some_and(|(c, mask)| {
                        (i == c && mask & (1 << j) != 0) || (j == c && mask & (1 << i) != 0)
                    });
                    if is_direct {
                        let now = s.nodes[j].now_ms;
                        let acts = s.nodes[j]
                            .core
                            .on_message(now, IDS[i], msg)
                            .unwrap_or_else(|e| panic!("model: members only: {e}"));
                        queue.extend(acts.into_iter().map(|a| (j, a)));
                    } else if self.fine_network {
                        s.net.insert((i, j, msg));
                    }
                }
                Action::BecomePrimary { epoch } => {
                    s.primaries.insert((epoch, i));
                    let n = &mut s.nodes[i];
                    n.log.push(epoch);
                    let head = n.head();
                    n.core.set_log_head(head);
                    n.matched = [0; N];
                    self.commit(s, i);
                }
                Action::BecomeFollower { .. } | Action::StepDown { .. } => {
                    s.nodes[i].matched = [0; N];
                }
            }
        }
    }

    /// The primary's commit point by the production rule; marks what commits.
    fn commit(&self, s: &mut Sys, p: usize) {
        let n = &s.nodes[p];
        if n.core.role() != Role::Primary {
            return;
        }
        let epoch = n.core.epoch();
        let Some(start) = n.log.iter().position(|&e| e == epoch) else {
            panic!("model invariant: a primary holds its control record");
        };
        let durable: Vec<u64> = (0..N)
            .map(|j| if j == p { n.log.len() } else { n.matched[j] } as u64)
            .collect();
        let copies = commit_copies(N, self.quorum_setting).expect("valid setting");
        if let Some(l) = committable_lsn(start as u64 + 1, &durable, copies) {
            for lsn in 1..=l as usize {
                let key = (lsn, n.log[lsn - 1]);
                let c = s.committed.entry(key).or_insert(epoch);
                *c = (*c).min(epoch);
            }
        }
    }

    fn ship(&self, s: &mut Sys, p: usize, f: usize, upto: usize) {
        let epoch = s.nodes[p].core.epoch();
        let now_f = s.nodes[f].now_ms;
        let now_p = s.nodes[p].now_ms;
        match s.nodes[f].core.on_primary_contact(now_f, epoch, IDS[p]) {
            Err(ContactRefusal::StalePrimary { current_epoch, .. }) => {
                let acts = s.nodes[p]
                    .core
                    .on_member_contact(now_p, IDS[f], current_epoch)
                    .expect("member");
                self.run(s, p, acts, None);
            }
            Err(_) => {}
            Ok(acts) => {
                self.run(s, f, acts, None);
                let prefix = s.nodes[p].log[..upto].to_vec();
                let fl = &mut s.nodes[f];
                if !fl.log.starts_with(&prefix) {
                    fl.log = prefix;
                }
                let head = fl.head();
                fl.core.set_log_head(head);
                let pn = &mut s.nodes[p];
                pn.matched[f] = pn.matched[f].max(upto);
                let acts = pn
                    .core
                    .on_member_contact(now_p, IDS[f], epoch)
                    .expect("member");
                self.run(s, p, acts, None);
                self.commit(s, p);
            }
        }
    }
}

impl Model for ElectionModel {
    type State = Sys;
    type Action = Act;

    fn init_states(&self) -> Vec<Sys> {
        vec![self.init()]
    }

    fn actions(&self, s: &Sys, out: &mut Vec<Act>) {
        for (i, n) in s.nodes.iter().enumerate() {
            if n.core.next_tick_ms().is_some() {
                let is_primary = n.core.role() == Role::Primary;
                // The schedule variant times out followers only through
                // `Campaign` (the fine variant covers every other timeout).
                if self.fine_network || is_primary {
                    out.push(Act::Timeout(i));
                }
                if self.campaigns && !is_primary {
                    for mask in 1..8u8 {
                        if mask & (1 << i) == 0 {
                            out.push(Act::Campaign(i, mask));
                        }
                    }
                }
            }
            if self.restarts {
                out.push(Act::Restart(i));
            }
            if n.core.role() == Role::Primary {
                if n.log.len() < self.max_log {
                    out.push(Act::Append(i));
                }
                for f in (0..N).filter(|&f| f != i) {
                    for upto in 1..=n.log.len() {
                        out.push(Act::Ship {
                            from: i,
                            to: f,
                            upto,
                        });
                    }
                }
            }
        }
        for (from, to, msg) in &s.net {
            out.push(Act::Deliver(*from, *to, msg.clone()));
            out.push(Act::Duplicate(*from, *to, msg.clone()));
            out.push(Act::Exchange(*from, *to, msg.clone()));
        }
    }

    fn next_state(&self, last: &Sys, act: Act) -> Option<Sys> {
        let mut s = last.clone();
        let keep_in_flight = matches!(act, Act::Duplicate(..));
        let exchange = matches!(act, Act::Exchange(..));
        match act {
            Act::Timeout(i) | Act::Campaign(i, _) => {
                let t = s.nodes[i].core.next_tick_ms()?;
                let direct = match act {
                    Act::Campaign(_, mask) => {
                        // A campaign follows a silence: the peers it reaches
                        // passed their own deadline too (not yet ticked), so
                        // stickiness does not refuse it. (The fine variant
                        // explores sticky refusals.)
                        for j in (0..N).filter(|j| mask & (1 << j) != 0) {
                            let pj = &mut s.nodes[j];
                            if let Some(tj) = pj.core.next_tick_ms() {
                                pj.now_ms = pj.now_ms.max(tj);
                            }
                        }
                        Some((i, mask))
                    }
                    _ => None,
                };
                let n = &mut s.nodes[i];
                n.now_ms = n.now_ms.max(t);
                let acts = n.core.tick(n.now_ms);
                self.run(&mut s, i, acts, direct);
            }
            Act::Deliver(from, to, msg)
            | Act::Duplicate(from, to, msg)
            | Act::Exchange(from, to, msg) => {
                if !keep_in_flight {
                    s.net.remove(&(from, to, msg.clone()));
                }
                let now = s.nodes[to].now_ms;
                let acts = s.nodes[to]
                    .core
                    .on_message(now, IDS[from], msg)
                    .expect("members only");
                let answers_back = exchange.then_some((from, 1 << to));
                self.run(&mut s, to, acts, answers_back);
            }
            Act::Restart(i) => {
                let n = &s.nodes[i];
                let start = StartState {
                    vote: n.vote.clone(),
                    log_head: n.head(),
                    eligible: true,
                };
                let core = self.new_core(i, start, n.now_ms);
                let n = &mut s.nodes[i];
                n.core = core;
                n.matched = [0; N];
            }
            Act::Ship { from, to, upto } => self.ship(&mut s, from, to, upto),
            Act::Append(p) => {
                let n = &mut s.nodes[p];
                n.log.push(n.core.epoch());
                let head = n.head();
                n.core.set_log_head(head);
                self.commit(&mut s, p);
            }
        }
        Some(s)
    }

    fn within_boundary(&self, s: &Sys) -> bool {
        s.net.len() <= self.max_net
            && s.nodes.iter().all(|n| {
                n.core.epoch() <= self.max_epoch
                    && n.log.len() <= self.max_log
                    && n.now_ms <= self.max_now_ms
            })
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always("at most one primary per epoch", |_, s: &Sys| {
                s.primaries
                    .iter()
                    .zip(s.primaries.iter().skip(1))
                    .all(|(a, b)| a.0 != b.0)
            }),
            Property::always("one candidate granted per voter and epoch", |_, s: &Sys| {
                s.grants
                    .iter()
                    .zip(s.grants.iter().skip(1))
                    .all(|(a, b)| (a.0, a.1) != (b.0, b.1))
            }),
            Property::always(
                "every grant was persisted before it was sent",
                |_, s: &Sys| !s.unpersisted_grant,
            ),
            Property::always(
                "every committed record is in every later primary's log",
                |_, s: &Sys| committed_records_held(s),
            ),
            Property::sometimes("a primary is elected", |_, s: &Sys| !s.primaries.is_empty()),
        ];
        if self.campaigns {
            p.push(Property::sometimes("a record commits", |_, s: &Sys| {
                !s.committed.is_empty()
            }));
            p.push(Property::sometimes(
                "a later epoch elects a primary over committed records",
                |_, s: &Sys| {
                    s.committed.iter().any(|(&(lsn, _), &c)| {
                        s.nodes.iter().any(|n| {
                            n.core.role() == Role::Primary
                                && n.core.epoch() > c
                                && n.log.len() > lsn
                        })
                    })
                },
            ));
        }
        p
    }
}

/// Every node that is primary in an epoch at or above the epoch that
/// committed a record holds that record.
fn committed_records_held(s: &Sys) -> bool {
    s.nodes
        .iter()
        .filter(|n| n.core.role() == Role::Primary)
        .all(|n| {
            s.committed.iter().all(|(&(lsn, rec_epoch), &c)| {
                n.core.epoch() < c || n.log.get(lsn - 1) == Some(&rec_epoch)
            })
        })
}

fn check(model: ElectionModel, depth: usize) {
    let started = Instant::now();
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    eprintln!(
        "model {:?} depth {depth}: {} states ({} unique), max depth {}, {:.1?}",
        checker.model(),
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker.assert_properties();
}

fn fine_model() -> ElectionModel {
    ElectionModel {
        quorum_setting: -1,
        max_epoch: 2,
        max_log: 2,
        max_net: 6,
        max_now_ms: 3,
        fine_network: true,
        campaigns: false,
        restarts: true,
    }
}

#[test]
fn model_fine_network_one_primary_and_one_vote_per_epoch_3_nodes() {
    check(fine_model(), 7);
}

/// The same at depth 9 (5.7 million states, about 2 minutes): not in CI;
/// run it with `cargo test -p walship-node --test election_model --
/// --ignored` after changing the core. It reaches schedules the CI depth
/// does not, such as a voter that forgets its vote in a restart and grants a
/// second candidate (7 steps; seen to fail with that bug planted).
#[test]
#[ignore = "deep: about 2 minutes; run with --ignored after changing the core"]
fn model_fine_network_deep_3_nodes() {
    check(fine_model(), 9);
}

fn campaign_model(quorum_setting: i64) -> ElectionModel {
    ElectionModel {
        quorum_setting,
        max_epoch: 4,
        max_log: 2,
        max_net: 0,
        max_now_ms: 8,
        fine_network: false,
        campaigns: true,
        restarts: false,
    }
}

/// Depth 7 = six steps: figure 8 takes five (see below).
#[test]
fn model_campaign_schedules_never_lose_a_committed_record_majority_3_nodes() {
    check(campaign_model(-1), 7);
}

/// Static k = 2 with 3 nodes: commits need all 3 copies, elections 2 votes.
#[test]
fn model_campaign_schedules_never_lose_a_committed_record_static_k2_3_nodes() {
    check(campaign_model(2), 7);
}

/// Raft's figure 8 with 3 nodes, step by step. The cluster first forms
/// (n1 leads epoch 1 with every vote: an empty log campaigns only with every
/// voter, spec/election.md §2.10) and its epoch-start record commits on all
/// three. Then n1 appends `a` (lsn 2) unreplicated, n3 leads epoch 2, n1
/// leads epoch 3 and ships `a` to n2 (now on a majority: it must NOT commit),
/// then n3 wins epoch 4 with n2's vote and overwrites lsn 2. The same
/// schedule as the simulator's `failover::figure8`.
#[test]
fn figure_8_schedule_commits_no_older_epoch_record_and_loses_nothing() {
    let m = ElectionModel {
        quorum_setting: -1,
        max_epoch: 5,
        max_log: 4,
        max_net: 0,
        max_now_ms: 10,
        fine_network: false,
        campaigns: true,
        restarts: false,
    };
    let (n1, n2, n3) = (0, 1, 2);
    let bit = |i: usize| 1u8 << i;
    let ship = |from, to, upto| Act::Ship { from, to, upto };
    let formation = [
        Act::Campaign(n1, bit(n2) | bit(n3)), // n1 primary of epoch 1, log [1]
        ship(n1, n2, 1),
        ship(n1, n3, 1), // lsn 1 committed on all three
        Act::Append(n1), // `a`: lsn 2 of epoch 1, on n1 only
    ];
    let steps = [
        Act::Campaign(n3, bit(n1) | bit(n2)), // n3 primary of epoch 2 (n2's vote), n1 fenced
        Act::Campaign(n1, bit(n2) | bit(n3)), // n1 primary of epoch 3 (n2's vote), n3 fenced
        ship(n1, n2, 2),                      // `a` on n1 and n2
        Act::Campaign(n3, bit(n2)),           // n3 primary of epoch 4 (n2's vote)
    ];
    let mut s = m.init();
    let check_props = |s: &Sys, what: &str| {
        for p in m.properties() {
            if p.expectation == stateright::Expectation::Always {
                assert!((p.condition)(&m, s), "{what} breaks \"{}\"", p.name);
            }
        }
    };
    for (k, act) in formation.iter().enumerate() {
        s = m
            .next_state(&s, act.clone())
            .unwrap_or_else(|| panic!("formation step {k} {act:?} is enabled"));
        check_props(&s, &format!("formation step {k} {act:?}"));
    }
    assert_eq!(s.committed, BTreeMap::from([((1, 1), 1)]));
    let formed = s.clone();
    for (k, act) in steps.iter().enumerate() {
        s = m
            .next_state(&s, act.clone())
            .unwrap_or_else(|| panic!("step {k} {act:?} is enabled"));
        check_props(&s, &format!("step {k} {act:?}"));
        if k == 2 {
            assert_eq!(s.nodes[n2].log, vec![1, 1]);
            assert_eq!(
                s.committed,
                BTreeMap::from([((1, 1), 1)]),
                "an epoch-1 record on a majority must not commit under epoch 3"
            );
        }
    }
    assert_eq!(
        s.primaries,
        BTreeSet::from([(1, n1), (2, n3), (3, n1), (4, n3)])
    );
    assert_eq!(
        s.nodes[n3].log,
        vec![1, 2, 4],
        "n3 leads epoch 4 without lsn 2 of epoch 1"
    );
    // Had lsn 2 been committed at step 2, it would now be lost. With the
    // epoch-3 record on n2 as well, both commit and n3 could not have won:
    let mut t = formed;
    for act in &steps[..2] {
        t = m.next_state(&t, act.clone()).expect("enabled");
    }
    t = m.next_state(&t, ship(n1, n2, 3)).expect("enabled");
    assert_eq!(
        t.committed,
        BTreeMap::from([((1, 1), 1), ((2, 1), 3), ((3, 3), 3)])
    );
    t = m
        .next_state(&t, Act::Campaign(n3, bit(n2)))
        .expect("enabled");
    assert_eq!(
        t.nodes[n3].core.role(),
        Role::PreCandidate,
        "n2 refuses n3 even a pre-vote: its log ends in epoch 3"
    );
    assert!(committed_records_held(&t));
}
