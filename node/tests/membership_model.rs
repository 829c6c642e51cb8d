//! Exhaustive model check (stateright) of the membership rules
//! (spec/membership.md §3) with four nodes at a bounded depth.
//!
//! The model runs the production rules of `walship_node::membership`: which
//! configuration a candidate counts votes in ([`ConfigLog::newest`]), which
//! configurations a record commits under ([`ConfigLog::commit_configs`] and
//! [`joint_committable_lsn`], which applies the new epoch's rule), when a
//! primary may propose ([`ConfigLog::may_propose`]) and what a change may be
//! ([`ConfigLog::observe`]). The world around them is abstract:
//!
//! - `a`, `b` and `c` are the voters of the static base configuration; `d`
//!   is not a member until a configuration adds it;
//! - an election is one step: candidate `c` picks a set of voters of the
//!   configuration its rule gives; each must be at a lower epoch and find the
//!   candidate's log at least as up to date as its own (last record's epoch,
//!   then length); all of them move to the new epoch; the candidate becomes
//!   primary and appends its epoch-start record;
//! - a primary appends a data record, or proposes adding a non-member as a
//!   voter or removing a voter other than itself;
//! - `Ship` copies the primary's whole log to a node at its epoch or below
//!   (replacing a divergent suffix, as `rejoin` would), with the commit point
//!   the primary knew when it sent them; the receipt moves the primary's
//!   commit point by the rules above.
//!
//! Properties: at most one primary per epoch; every committed record is in
//! the log of every later primary. Two plausible variants of the rules are
//! checked too and must FAIL, which shows the model can find what it looks
//! for: elections counted in the newest configuration *known to be
//! committed*, and a configuration committed under the new voters alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use stateright::{Checker, Model, Property};
use walship_node::membership::{joint_committable_lsn, ConfigLog, ConfigMember, Configuration};

const N: usize = 4;
const IDS: [&str; N] = ["a", "b", "c", "d"];
const BASE: u8 = 0b0111;

/// One log entry: its epoch and, for a configuration record, its voters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Entry {
    epoch: u8,
    config: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    epoch: u8,
    log: Vec<Entry>,
    /// The commit point this node knows.
    commit: usize,
    /// Primary of `epoch` (until it meets a higher epoch).
    primary: bool,
    /// Primary only: lsn of each node's log known to match its own.
    matched: [usize; N],
    /// Primary only: lsn of its epoch-start record.
    epoch_start: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Sys {
    nodes: Vec<Node>,
    /// Ghost: every (epoch, node) that became primary.
    primaries: BTreeSet<(u8, usize)>,
    /// Ghost: committed (lsn, record epoch) → epoch of the primary that committed it.
    committed: BTreeMap<(usize, u8), u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Act {
    Elect(usize, u8),
    Append(usize),
    Propose(usize, u8),
    Ship(usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VoteRule {
    /// Ours: the newest configuration in the candidate's log.
    NewestInLog,
    /// Wrong: the newest configuration at or below the commit point the candidate knows.
    KnownCommitted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitRule {
    /// Ours: old and new voters while the newest configuration is not committed.
    Joint,
    /// Wrong: the newest configuration's voters only.
    NewestOnly,
}

#[derive(Clone, Debug)]
struct MembershipModel {
    setting: i64,
    vote_rule: VoteRule,
    commit_rule: CommitRule,
    max_epoch: u8,
    max_log: usize,
}

fn configuration(voters: u8, generation: u64) -> Configuration {
    Configuration {
        generation,
        forced: false,
        members: (0..N)
            .filter(|i| voters & (1 << i) != 0)
            .map(|i| ConfigMember {
                id: IDS[i].to_string(),
                incarnation: 1,
                voter: true,
                addr: format!("{}:1", IDS[i]),
                http_addr: None,
            })
            .collect(),
    }
}

/// The production configuration log of `log` up to `upto` records.
fn config_log(log: &[Entry], upto: usize) -> ConfigLog {
    // As if the bootstrap record (generation 1) preceded lsn 1.
    let mut c = ConfigLog::new(configuration(BASE, 1));
    let mut generation = 1;
    for (i, e) in log.iter().take(upto).enumerate() {
        if let Some(voters) = e.config {
            generation += 1;
            c.observe(i as u64 + 1, configuration(voters, generation))
                .unwrap_or_else(|err| panic!("model invariant: proposals follow rule 3: {err}"));
        }
    }
    c
}

fn voters_mask(c: &Configuration) -> u8 {
    c.voters()
        .map(|id| {
            1u8 << IDS
                .iter()
                .position(|x| *x == id)
                .unwrap_or_else(|| panic!("model invariant: {id} is one of the four"))
        })
        .fold(0, |a, b| a | b)
}

fn head(n: &Node) -> (u8, usize) {
    (n.log.last().map_or(0, |e| e.epoch), n.log.len())
}

impl MembershipModel {
    fn election_config(&self, n: &Node) -> Configuration {
        let upto = match self.vote_rule {
            VoteRule::NewestInLog => n.log.len(),
            VoteRule::KnownCommitted => n.commit,
        };
        config_log(&n.log, upto).newest().clone()
    }

    /// The primary's commit point after a receipt.
    fn commit_point(&self, p: &Node) -> usize {
        let cl = config_log(&p.log, p.log.len());
        let configs = cl.commit_configs(p.commit as u64);
        let configs = match self.commit_rule {
            CommitRule::Joint => configs,
            CommitRule::NewestOnly => vec![cl.newest()],
        };
        let durable = |id: &str| {
            let i = IDS
                .iter()
                .position(|x| *x == id)
                .unwrap_or_else(|| panic!("model invariant: {id} is one of the four"));
            p.matched[i] as u64
        };
        joint_committable_lsn(&configs, self.setting, p.epoch_start as u64, durable)
            .map_or(p.commit, |l| p.commit.max(l as usize))
    }
}

impl Model for MembershipModel {
    type State = Sys;
    type Action = Act;

    fn init_states(&self) -> Vec<Sys> {
        let node = Node {
            epoch: 0,
            log: Vec::new(),
            commit: 0,
            primary: false,
            matched: [0; N],
            epoch_start: 0,
        };
        vec![Sys {
            nodes: vec![node; N],
            primaries: BTreeSet::new(),
            committed: BTreeMap::new(),
        }]
    }

    fn actions(&self, s: &Sys, out: &mut Vec<Act>) {
        for (i, n) in s.nodes.iter().enumerate() {
            if n.epoch < self.max_epoch && n.log.len() < self.max_log {
                let voters = voters_mask(&self.election_config(n));
                if voters & (1 << i) != 0 {
                    for mask in 1..(1u8 << N) {
                        if mask & (1 << i) != 0 && mask & !voters == 0 {
                            out.push(Act::Elect(i, mask));
                        }
                    }
                }
            }
            if n.primary && n.log.len() < self.max_log {
                out.push(Act::Append(i));
                let cl = config_log(&n.log, n.log.len());
                if cl.may_propose(n.commit as u64).is_ok() {
                    let current = voters_mask(cl.newest());
                    for j in 0..N {
                        let next = current ^ (1 << j);
                        if j != i && next != 0 {
                            out.push(Act::Propose(i, next));
                        }
                    }
                }
            }
            if n.primary {
                for j in 0..N {
                    if j != i && s.nodes[j].epoch <= n.epoch {
                        out.push(Act::Ship(i, j));
                    }
                }
            }
        }
    }

    fn next_state(&self, s: &Sys, act: Act) -> Option<Sys> {
        let mut t = s.clone();
        match act {
            Act::Elect(c, mask) => {
                let e = s.nodes[c].epoch + 1;
                let config = self.election_config(&s.nodes[c]);
                let votes = mask.count_ones() as usize;
                let needed =
                    walship_node::membership::election_votes_needed(&config, self.setting)?;
                if votes < needed {
                    return None;
                }
                for v in 0..N {
                    if mask & (1 << v) != 0 && v != c {
                        let voter = &s.nodes[v];
                        if voter.epoch >= e || head(&s.nodes[c]) < head(voter) {
                            return None;
                        }
                    }
                }
                for v in 0..N {
                    if mask & (1 << v) != 0 {
                        t.nodes[v].epoch = e;
                        t.nodes[v].primary = false;
                    }
                }
                let p = &mut t.nodes[c];
                p.primary = true;
                p.log.push(Entry {
                    epoch: e,
                    config: None,
                });
                p.epoch_start = p.log.len();
                p.matched = [0; N];
                p.matched[c] = p.log.len();
                t.primaries.insert((e, c));
            }
            Act::Append(p) => {
                let n = &mut t.nodes[p];
                n.log.push(Entry {
                    epoch: n.epoch,
                    config: None,
                });
                n.matched[p] = n.log.len();
            }
            Act::Propose(p, voters) => {
                let n = &mut t.nodes[p];
                n.log.push(Entry {
                    epoch: n.epoch,
                    config: Some(voters),
                });
                n.matched[p] = n.log.len();
            }
            Act::Ship(p, f) => {
                // The whole log: a prefix is extended, a divergent suffix replaced.
                let plog = s.nodes[p].log.clone();
                let fnode = &mut t.nodes[f];
                fnode.epoch = s.nodes[p].epoch;
                fnode.primary = false;
                fnode.log = plog.clone();
                let len = plog.len();
                let before = s.nodes[p].commit;
                let pn = &mut t.nodes[p];
                pn.matched[f] = len;
                let commit = self.commit_point(pn);
                pn.commit = commit;
                // The shipment carried the commit point from before its own receipt.
                t.nodes[f].commit = before.min(len);
                for lsn in before + 1..=commit {
                    t.committed
                        .entry((lsn, plog[lsn - 1].epoch))
                        .or_insert(s.nodes[p].epoch);
                }
            }
        }
        Some(t)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::<Self>::always("at most one primary per epoch", |_, s: &Sys| {
                let epochs: BTreeSet<u8> = s.primaries.iter().map(|(e, _)| *e).collect();
                epochs.len() == s.primaries.len()
            }),
            Property::<Self>::always(
                "every committed record is in every later primary's log",
                |_, s: &Sys| committed_records_held(s),
            ),
        ]
    }
}

fn committed_records_held(s: &Sys) -> bool {
    s.nodes.iter().filter(|n| n.primary).all(|n| {
        s.committed.iter().all(|(&(lsn, rec_epoch), &c)| {
            n.epoch < c || n.log.get(lsn - 1).map(|e| e.epoch) == Some(rec_epoch)
        })
    })
}

fn run(model: MembershipModel, depth: usize) -> Option<Vec<Act>> {
    let started = Instant::now();
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    eprintln!(
        "model {:?} depth {depth}: {} states ({} unique), {:.1?}",
        checker.model(),
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed()
    );
    checker
        .discoveries()
        .into_values()
        .next()
        .map(|path| path.into_actions())
}

fn model(setting: i64, vote_rule: VoteRule, commit_rule: CommitRule) -> MembershipModel {
    MembershipModel {
        setting,
        vote_rule,
        commit_rule,
        max_epoch: 2,
        max_log: 4,
    }
}

/// Depth 8 reaches a change committed and a record committed under the new
/// configuration, then a competing election (the counterexamples below need 7).
const DEPTH: usize = 8;

#[test]
fn membership_rules_never_lose_a_committed_record_static_k1_4_nodes() {
    let found = run(model(1, VoteRule::NewestInLog, CommitRule::Joint), DEPTH);
    assert_eq!(found, None, "the rules of spec/membership.md lose a record");
}

#[test]
fn membership_rules_never_lose_a_committed_record_majority_4_nodes() {
    let found = run(model(-1, VoteRule::NewestInLog, CommitRule::Joint), DEPTH);
    assert_eq!(found, None, "the rules of spec/membership.md lose a record");
}

/// Elections in the configuration known to be committed: a node that holds
/// the new configuration but not its commit counts votes among the old
/// voters, while the primary it did not fence commits under the new voters.
/// Found (6 steps): c leads epoch 1 with a; c adds d; b receives it (the
/// change commits on c and b, b does not know yet); b wins epoch 2 with a's
/// vote, counted among {a, b, c}; c, unfenced, removes b and commits that on
/// c and d. b leads epoch 2 without it.
#[test]
fn votes_counted_in_the_known_committed_configuration_lose_a_record_static_k1() {
    let found = run(model(1, VoteRule::KnownCommitted, CommitRule::Joint), DEPTH);
    let path = found.expect("the checker must find the loss this rule allows");
    eprintln!("counterexample: {path:?}");
}

/// A configuration committed under the new voters alone: two changes can
/// then be in effect before the old voters saw the first, and configurations
/// two members apart have disjoint quorums. Found (6 steps): a leads epoch 1;
/// a adds d and ships it to d (committed on {a, d} alone); a removes b; a wins
/// epoch 2 with d's vote, counted among {a, c, d}; b wins epoch 2 with c's
/// vote, counted among {a, b, c}.
#[test]
fn a_configuration_committed_by_its_new_voters_alone_loses_a_record_static_k1() {
    let found = run(
        model(1, VoteRule::NewestInLog, CommitRule::NewestOnly),
        DEPTH,
    );
    let path = found.expect("the checker must find the loss this rule allows");
    eprintln!("counterexample: {path:?}");
}
