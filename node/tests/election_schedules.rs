//! Property test: random schedules of timeouts, deliveries, duplications,
//! losses, heartbeats, lease expiries and crash-restarts over 3 and 5 real
//! election cores never produce two primaries in one epoch, nor two grants
//! by one voter in one epoch, nor a grant sent before it was persisted.
//!
//! Beside the exhaustive model check (tests/election_model.rs, 3 nodes,
//! small depth) this samples long schedules, larger clusters, real
//! randomised timeouts and every quorum setting with automatic elections.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use walship_node::election::{
    Action, ElectionConfig, ElectionCore, ElectionMessage, LogPosition, PersistedVote, Role,
    StartState,
};

const T_MS: u64 = 10;

struct Node {
    core: ElectionCore,
    vote: PersistedVote,
    head: LogPosition,
    restarts: u64,
}

struct World {
    n: usize,
    setting: i64,
    now_ms: u64,
    nodes: Vec<Node>,
    net: Vec<(usize, usize, ElectionMessage)>,
    /// epoch → primaries ever elected in it.
    primaries: BTreeMap<u64, BTreeSet<usize>>,
    /// (voter, epoch) → candidates granted.
    grants: BTreeMap<(usize, u64), BTreeSet<usize>>,
}

fn id(i: usize) -> String {
    format!("n{}", i + 1)
}

fn idx(id: &str) -> usize {
    id[1..].parse::<usize>().expect("node id n<k>") - 1
}

impl World {
    fn config(&self, i: usize) -> ElectionConfig {
        ElectionConfig {
            node_id: id(i),
            voters: (0..self.n).map(id).collect(),
            quorum_setting: self.setting,
            election_timeout_ms: T_MS,
            lease_ms: 2 * T_MS,
        }
    }

    /// `formed`: every node starts holding one record of epoch 0 (a cluster
    /// that has formed); else every log is empty (bootstrap: the first
    /// election needs every voter, spec/election.md §2.10).
    fn new(n: usize, setting: i64, seed: u64, formed: bool) -> World {
        let head = if formed {
            LogPosition::new(0, 1)
        } else {
            LogPosition::ZERO
        };
        let mut w = World {
            n,
            setting,
            now_ms: 0,
            nodes: Vec::new(),
            net: Vec::new(),
            primaries: BTreeMap::new(),
            grants: BTreeMap::new(),
        };
        for i in 0..n {
            let start = StartState {
                log_head: head,
                ..StartState::fresh()
            };
            let core = ElectionCore::new(w.config(i), start, 0, seed ^ (i as u64 * 7919))
                .expect("valid config");
            w.nodes.push(Node {
                core,
                vote: PersistedVote::default(),
                head,
                restarts: 0,
            });
        }
        w
    }

    /// Performs node `i`'s actions in order, checking the invariants.
    fn perform(&mut self, i: usize, actions: Vec<Action>) -> Result<(), TestCaseError> {
        for a in actions {
            match a {
                Action::PersistVote { epoch, voted_for } => {
                    self.nodes[i].vote = PersistedVote { epoch, voted_for };
                }
                Action::Send { to, msg } => {
                    let j = idx(&to);
                    if let ElectionMessage::VoteResponse {
                        epoch,
                        granted: true,
                    } = msg
                    {
                        prop_assert_eq!(
                            &self.nodes[i].vote,
                            &PersistedVote {
                                epoch,
                                voted_for: Some(to.clone())
                            },
                            "n{} sent a grant it had not persisted",
                            i + 1
                        );
                        let g = self.grants.entry((i, epoch)).or_default();
                        g.insert(j);
                        prop_assert!(
                            g.len() == 1,
                            "n{} granted {:?} in epoch {}",
                            i + 1,
                            g,
                            epoch
                        );
                    }
                    self.net.push((i, j, msg));
                }
                Action::BecomePrimary { epoch } => {
                    let p = self.primaries.entry(epoch).or_default();
                    p.insert(i);
                    prop_assert!(p.len() == 1, "two primaries {:?} in epoch {}", p, epoch);
                    // The control record of the new epoch.
                    let node = &mut self.nodes[i];
                    node.head = LogPosition::new(epoch, node.head.lsn + 1);
                    node.core.set_log_head(node.head);
                }
                Action::BecomeFollower { .. } | Action::StepDown { .. } => {}
            }
        }
        Ok(())
    }

    fn step(&mut self, op: u8, a: usize, b: usize) -> Result<(), TestCaseError> {
        // Deliveries weigh most: elections need several in a row.
        match op % 12 {
            // Time passes; every node whose timer is due ticks.
            0 => {
                self.now_ms += 1 + (a as u64 % (2 * T_MS));
                for i in 0..self.n {
                    if self.nodes[i]
                        .core
                        .next_tick_ms()
                        .is_some_and(|t| t <= self.now_ms)
                    {
                        let acts = self.nodes[i].core.tick(self.now_ms);
                        self.perform(i, acts)?;
                    }
                }
            }
            // Deliver (remove) or duplicate (keep) a message in flight.
            1..=6 if !self.net.is_empty() => {
                let k = a % self.net.len();
                let (from, to, msg) = if op % 12 != 6 {
                    self.net.swap_remove(k)
                } else {
                    self.net[k].clone()
                };
                let acts = self.nodes[to]
                    .core
                    .on_message(self.now_ms, &id(from), msg)
                    .expect("members only");
                self.perform(to, acts)?;
            }
            // Lose a message.
            7 if !self.net.is_empty() => {
                let k = a % self.net.len();
                self.net.swap_remove(k);
            }
            // A primary contacts a member (records or heartbeat) and hears back.
            8 | 9 => {
                let p = a % self.n;
                let f = b % self.n;
                if p == f || self.nodes[p].core.role() != Role::Primary {
                    return Ok(());
                }
                let epoch = self.nodes[p].core.epoch();
                match self.nodes[f]
                    .core
                    .on_primary_contact(self.now_ms, epoch, &id(p))
                {
                    Ok(acts) => {
                        self.perform(f, acts)?;
                        // The follower now holds the primary's log.
                        let head = self.nodes[p].head;
                        self.nodes[f].head = head;
                        self.nodes[f].core.set_log_head(head);
                        let back = self.nodes[f].core.epoch();
                        let acts = self.nodes[p]
                            .core
                            .on_member_contact(self.now_ms, &id(f), back)
                            .expect("member");
                        self.perform(p, acts)?;
                    }
                    Err(_) => {
                        let back = self.nodes[f].core.epoch();
                        let acts = self.nodes[p]
                            .core
                            .on_member_contact(self.now_ms, &id(f), back)
                            .expect("member");
                        self.perform(p, acts)?;
                    }
                }
            }
            // A primary appends a record of its epoch.
            10 => {
                let p = a % self.n;
                if self.nodes[p].core.role() == Role::Primary {
                    let node = &mut self.nodes[p];
                    node.head = LogPosition::new(node.core.epoch(), node.head.lsn + 1);
                    node.core.set_log_head(node.head);
                }
            }
            // Crash and restart: the vote file and the log survive.
            11 => {
                let i = a % self.n;
                let node = &self.nodes[i];
                let start = StartState {
                    vote: node.vote.clone(),
                    log_head: node.head,
                    eligible: true,
                };
                let seed = (b as u64) << 32 | node.restarts;
                let core =
                    ElectionCore::new(self.config(i), start, self.now_ms, seed).expect("valid");
                let node = &mut self.nodes[i];
                node.core = core;
                node.restarts += 1;
                // Messages in flight to the node may still arrive.
            }
            _ => {}
        }
        Ok(())
    }
}

fn schedule() -> impl Strategy<Value = Vec<(u8, usize, usize)>> {
    prop::collection::vec((any::<u8>(), 0usize..64, 0usize..64), 1..400)
}

fn run(
    n: usize,
    setting: i64,
    seed: u64,
    ops: &[(u8, usize, usize)],
) -> Result<World, TestCaseError> {
    run_from(true, n, setting, seed, ops)
}

fn run_from(
    formed: bool,
    n: usize,
    setting: i64,
    seed: u64,
    ops: &[(u8, usize, usize)],
) -> Result<World, TestCaseError> {
    let mut w = World::new(n, setting, seed, formed);
    for &(op, a, b) in ops {
        w.step(op, a, b)?;
        if w.net.len() > 64 {
            w.net.drain(..32); // bounded network: the oldest are lost
        }
    }
    Ok(w)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_schedules_3_nodes_majority_elect_at_most_one_primary_per_epoch(
        seed in any::<u64>(), ops in schedule()
    ) {
        run(3, -1, seed, &ops)?;
    }

    #[test]
    fn random_schedules_5_nodes_every_setting_elect_at_most_one_primary_per_epoch(
        seed in any::<u64>(), setting in prop::sample::select(vec![-1i64, 1, 2, 3]), ops in schedule()
    ) {
        run(5, setting, seed, &ops)?;
    }

    #[test]
    fn random_schedules_3_nodes_bootstrap_elect_at_most_one_primary_per_epoch(
        seed in any::<u64>(), ops in schedule()
    ) {
        run_from(false, 3, -1, seed, &ops)?;
    }
}

/// The generator reaches elections at all (the property above is not vacuous).
#[test]
fn a_long_quiet_schedule_elects_a_primary_in_3_and_5_node_clusters() -> Result<(), TestCaseError> {
    for n in [3, 5] {
        // Time passes, every message is delivered, repeatedly.
        let mut ops = Vec::new();
        for k in 0..200 {
            ops.push((if k % 10 == 0 { 0 } else { 1 }, 0, 0));
        }
        let w = run(n, -1, 42, &ops)?;
        prop_assert!(!w.primaries.is_empty(), "{} nodes: no primary elected", n);
    }
    Ok(())
}

/// A new cluster (every log empty) forms on a quiet schedule: split votes
/// (every voter is needed) are retried with fresh random timeouts.
#[test]
fn a_long_quiet_schedule_forms_a_new_3_and_5_node_cluster() -> Result<(), TestCaseError> {
    for n in [3, 5] {
        let mut ops = Vec::new();
        for k in 0..1000 {
            ops.push((if k % 10 == 0 { 0 } else { 1 }, 0, 0));
        }
        let w = run_from(false, n, -1, 42, &ops)?;
        prop_assert!(!w.primaries.is_empty(), "{} nodes: no cluster formed", n);
    }
    Ok(())
}
