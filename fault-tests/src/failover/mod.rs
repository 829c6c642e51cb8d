//! The failover world: N nodes, each running the production [`ElectionCore`]
//! (its votes in the production [`VoteFile`] on the node's `SimStorage`) and,
//! as the core decides, the production `PrimaryExec` (opened with
//! `new_epoch: Some(E)` when the core says `BecomePrimary{E}`) or the
//! production `ReplicaExec` (following the primary the core follows), over
//! the same simulated disks, network ([`SimNet`] for the replication
//! connections, a datagram queue with delays, loss and the same partitions
//! for the election messages) and clock as the rest of walship-fault.
//!
//! The world decides nothing about elections or replication: it performs the
//! core's actions in order (`PersistVote` is written and fsynced before any
//! later action of its batch), moves frames, fires deadlines and group syncs
//! after a simulated fsync latency, crashes and restarts nodes, and records
//! the facts the invariants of [`check`] judge after every step.
//!
//! - [`scenarios`]: seed 000's failure scenarios 1 to 8 as a table
//!   (`walship-fault failover`; 4, 6 and 7 change the membership: [`members`]);
//! - [`random`]: random failover runs with crashes and partitions
//!   (`walship-fault failover --seeds A..B`);
//! - [`figure8`]: Raft's figure 8 schedule over the production code.

mod acked;
pub mod check;
mod elect;
mod faults;
pub mod figure8;
pub mod member_scenarios;
pub mod members;
pub mod random;
mod roles;
pub mod scenarios;

use std::collections::{BTreeMap, BTreeSet};

use walship_node::cluster::plan::{AckedMark, RestartRule, RolePlan};
use walship_node::election::{
    ElectionConfig, ElectionCore, ElectionMessage, LogPosition, Role, StartState, VoteFile,
};
use walship_node::membership::{ConfigLog, MembershipView};
use walship_primary::core::Window;
use walship_replica::halt::HaltRecord;
use walship_wal::control::Configuration;
use walship_wal::sim::{SimConfig, SimStorage};

use crate::clock::SimClock;
use crate::net::{NetConfig, NetEvent, SimNet};
use crate::rng::SimRng;
use crate::trace::Trace;
use crate::world::{make_dirs, state_dir, wal_dir, Applied, SimApplier};

pub use check::{Ghost, Violation};
pub use roles::{PrimaryRole, ReplicaRole};

/// The cluster id of every failover world.
pub const CLUSTER_ID: &str = "walship-failover";

/// Static parameters of a failover world.
#[derive(Debug, Clone)]
pub struct FoConfig {
    /// Voting members.
    pub nodes: usize,
    /// Quorum setting (0, -1 or k).
    pub quorum: i64,
    /// The election core's minimum election timeout.
    pub election_timeout_ms: u64,
    /// The primary's lease.
    pub lease_ms: u64,
    /// One-way delay of an election message.
    pub elect_delay_ms: (u64, u64),
    /// Election messages lost, per mille.
    pub elect_loss_per_mille: u32,
    /// The replication network.
    pub net: NetConfig,
    /// Simulated fsync latency of a group sync.
    pub sync_delay_ms: (u64, u64),
    /// The primary's shipping window.
    pub window: Window,
    /// WAL segment size.
    pub segment_size_bytes: u64,
    /// Largest record payload.
    pub max_record_bytes: u32,
    /// Interval between two client appends while a client runs.
    pub client_interval_ms: u64,
}

impl FoConfig {
    /// Defaults for `nodes` members under `quorum`.
    pub fn new(nodes: usize, quorum: i64) -> FoConfig {
        FoConfig {
            nodes,
            quorum,
            election_timeout_ms: 200,
            lease_ms: 150,
            elect_delay_ms: (1, 5),
            elect_loss_per_mille: 0,
            net: NetConfig::default(),
            sync_delay_ms: (1, 3),
            window: Window {
                max_batch_bytes: 8 * 1024,
                max_inflight_bytes: 64 * 1024,
                max_inflight_records: 256,
            },
            segment_size_bytes: 64 * 1024,
            max_record_bytes: 16 * 1024,
            client_interval_ms: 10,
        }
    }
}

/// What a node currently runs besides its election core.
pub enum RoleState {
    /// Nothing (a follower that knows no primary, a candidate, halted).
    Idle,
    /// The production primary executor.
    Primary(Box<PrimaryRole>),
    /// The production replica executor.
    Replica(Box<ReplicaRole>),
}

/// One member.
pub struct FoNode {
    /// Index (0-based).
    pub id: usize,
    /// Node id (`n1`, `n2`, ...).
    pub name: String,
    /// The node's disk.
    pub storage: SimStorage,
    /// The election core, while the node runs.
    pub core: Option<ElectionCore>,
    /// The executor its role runs.
    pub role: RoleState,
    /// The embedder (survives crashes and role changes).
    pub applier: SimApplier,
    /// What the embedder was fed.
    pub applied: Applied,
    /// The node's replica executor halted (it stays halted across restarts).
    pub halted: Option<HaltRecord>,
    /// Why the node stopped, if it did.
    pub stopped: Option<String>,
    /// Which role the core's actions ask for (the production Node's plan; fresh at
    /// every start, as the role is).
    pub plan: RolePlan,
    /// The acknowledged mark and when to persist it (the production Node's
    /// `plan::AckedMark`; read from `state/acked` at every start).
    pub acked: AckedMark,
    /// The lsn the log had to reach at the last start before the node votes or leads
    /// (the production `plan::RestartRule`).
    pub required_lsn: walship_wal::Lsn,
    /// The incarnation id of its data directory (`state/identity`; a new one
    /// whenever the disk is destroyed).
    pub incarnation: u64,
    /// The newest configuration of its log as last fed to its election core
    /// (from the running role, or the last one known while idle).
    pub membership: MembershipView,
    /// Terminated for good (scale-down): never restarted.
    pub gone: bool,
    /// A force-quorum campaign's configuration, for the primary role it opens if it
    /// wins (the production `Inner::forced`), and when the campaign gives up.
    pub forced: Option<(Configuration, u64)>,
    /// What its log holds (lsn -> position) while no role runs, read once.
    pub(crate) held: Option<std::sync::Arc<BTreeMap<walship_wal::Lsn, walship_wal::Position>>>,
    /// Number of starts (seeds the core's timeouts).
    starts: u64,
}

impl FoNode {
    /// The node runs.
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// Its core's role (None while down).
    pub fn election_role(&self) -> Option<Role> {
        self.core.as_ref().map(|c| c.role())
    }

    /// The running primary executor's role, if any.
    pub fn primary(&self) -> Option<&PrimaryRole> {
        match &self.role {
            RoleState::Primary(p) => Some(p),
            _ => None,
        }
    }

    /// The running replica executor's role, if any.
    pub fn replica(&self) -> Option<&ReplicaRole> {
        match &self.role {
            RoleState::Replica(r) => Some(r),
            _ => None,
        }
    }
}

/// The failover world.
pub struct Cluster {
    /// Parameters.
    pub cfg: FoConfig,
    /// Simulated time.
    pub clock: SimClock,
    rng: SimRng,
    /// The replication network.
    pub net: SimNet,
    /// The trace.
    pub trace: Trace,
    /// Steps (event batches) so far.
    pub step: u64,
    /// The members.
    pub nodes: Vec<FoNode>,
    /// Election messages in flight: (deliver at, seq) -> (from, sender's
    /// incarnation, to, msg).
    elect_q: BTreeMap<(u64, u64), (usize, u64, usize, ElectionMessage)>,
    elect_seq: u64,
    /// Directed links on which election messages are lost.
    elect_blocked: BTreeSet<(usize, usize)>,
    /// The facts the invariants are judged against.
    pub ghost: Ghost,
    /// When the client appends next (None: no client).
    client_at: Option<u64>,
    next_payload: u64,
    seed: u64,
    /// The static base configuration (generation 0): every member votes, any
    /// incarnation (the `node.toml` member list).
    pub base: Configuration,
    /// Per node: the automatic change its primary refused last (configuration
    /// lsn, change), not proposed again until the configuration moves.
    auto_refused: BTreeMap<usize, (walship_wal::Lsn, String)>,
    /// Token sequence of membership proposals.
    member_tokens: u64,
}

impl Cluster {
    /// A cluster of fresh disks; every node started as a follower of epoch 0.
    pub fn new(cfg: FoConfig, seed: u64) -> Result<Cluster, String> {
        let mut rng = SimRng::new(seed);
        let cfg_nodes = cfg.nodes;
        let net = SimNet::new(cfg.net.clone(), rng.fork("net"));
        let mut nodes = Vec::new();
        for id in 0..cfg.nodes {
            let storage = SimStorage::with_config(
                rng.fork(&format!("disk-{id}")).next_u64(),
                SimConfig::default(),
            );
            make_dirs(&storage).map_err(|e| format!("n{} mkdir: {e}", id + 1))?;
            nodes.push(FoNode {
                id,
                name: format!("n{}", id + 1),
                storage,
                core: None,
                role: RoleState::Idle,
                plan: RolePlan::new(format!("n{}", id + 1)),
                acked: AckedMark::new(0, 1),
                required_lsn: 0,
                applier: SimApplier::default(),
                applied: Applied::default(),
                halted: None,
                stopped: None,
                incarnation: 0,
                membership: MembershipView {
                    lsn: 0,
                    config: members::base_config(cfg.nodes),
                    committed: true,
                    departing: Vec::new(),
                },
                gone: false,
                forced: None,
                held: None,
                starts: 0,
            });
        }
        let mut c = Cluster {
            cfg,
            clock: SimClock::new(),
            rng: rng.fork("world"),
            net,
            trace: Trace::new(),
            step: 0,
            nodes,
            elect_q: BTreeMap::new(),
            elect_seq: 0,
            elect_blocked: BTreeSet::new(),
            ghost: Ghost::default(),
            client_at: None,
            next_payload: 0,
            seed,
            base: members::base_config(cfg_nodes),
            auto_refused: BTreeMap::new(),
            member_tokens: 0,
        };
        for n in 0..c.cfg.nodes {
            c.start_node(n);
        }
        Ok(c)
    }

    /// The seed of this world.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Now, in simulated ms.
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Records a trace event.
    pub fn log(&mut self, what: String) {
        self.trace.record(self.clock.now_ms(), self.step, what);
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn election_config(&self, n: usize) -> ElectionConfig {
        ElectionConfig {
            node_id: self.nodes[n].name.clone(),
            voters: self.nodes.iter().map(|x| x.name.clone()).collect(),
            quorum_setting: self.cfg.quorum,
            election_timeout_ms: self.cfg.election_timeout_ms,
            lease_ms: self.cfg.lease_ms,
        }
    }

    /// Starts node `n` from its disk: vote file, log head, a follower core.
    fn start_node(&mut self, n: usize) {
        let now = self.now();
        if self.nodes[n].gone {
            return;
        }
        // The production identity check (`state/identity`): created with a new
        // incarnation on an empty directory, checked at every later start.
        if let Err(e) = self.load_identity(n) {
            let msg = format!("{} refuses to start: identity: {e}", self.nodes[n].name);
            self.nodes[n].stopped = Some(msg.clone());
            self.log(msg);
            return;
        }
        self.nodes[n].held = None;
        let node = &mut self.nodes[n];
        let vote = match VoteFile::new(node.storage.clone(), &state_dir()).load() {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("{} refuses to start: vote file: {e}", node.name);
                node.stopped = Some(msg.clone());
                self.log(msg);
                return;
            }
        };
        let head = walship_wal::inspect(&node.storage, &wal_dir(), self.cfg.max_record_bytes)
            .map(|i| i.last)
            .unwrap_or_default();
        // The production restart rule: what the node acknowledged (its persisted commit
        // watermark and acknowledged mark) against what its log holds.
        let persisted = walship_wal::state::read_state_json::<_, walship_wal::state::CommitBody>(
            &node.storage,
            &state_dir(),
            walship_wal::state::COMMIT_FILE,
        )
        .map(|c| c.map_or(0, |c| c.commit_lsn))
        .and_then(|commit| {
            walship_wal::state::read_acked_lsn(&node.storage, &state_dir()).map(|a| (commit, a))
        });
        let (commit_lsn, acked_lsn) = match persisted {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("{} refuses to start: state file: {e}", node.name);
                node.stopped = Some(msg.clone());
                self.log(msg);
                return;
            }
        };
        let rule = RestartRule {
            log_end: head.lsn,
            commit_lsn,
            acked_lsn,
        };
        node.starts += 1;
        let seed = self.seed ^ ((n as u64 + 1) << 32) ^ node.starts;
        let start = StartState {
            vote,
            log_head: LogPosition::new(head.epoch, head.lsn),
            eligible: rule.eligible_at_start(),
        };
        let config = self.election_config(n);
        // The newest configuration of the log, read without changing anything (the
        // production driver's start: rule 1 of spec/membership.md from the first input).
        let membership = walship_wal::read_only_reader(
            &self.nodes[n].storage,
            &wal_dir(),
            self.cfg.max_record_bytes,
        )
        .map_err(|e| e.to_string())
        .and_then(|r| {
            ConfigLog::from_log(self.base.clone(), r, commit_lsn).map_err(|e| e.to_string())
        })
        .map(|log| log.view(commit_lsn));
        let membership = match membership {
            Ok(m) => m,
            Err(e) => {
                let msg = format!(
                    "{} refuses to start: configurations: {e}",
                    self.nodes[n].name
                );
                self.nodes[n].stopped = Some(msg.clone());
                self.log(msg);
                return;
            }
        };
        match ElectionCore::new(config, start, now, seed) {
            Ok(mut core) => {
                let (voters, learners) =
                    membership.election_members(&self.nodes[n].name, self.nodes[n].incarnation);
                let _ = core.set_membership(now, &voters, &learners);
                self.nodes[n].membership = membership;
                self.nodes[n].acked = AckedMark::new(acked_lsn, core.heartbeat_ms());
                self.nodes[n].required_lsn = rule.required_lsn();
                if !rule.eligible_at_start() {
                    self.log(format!(
                        "{} INELIGIBLE at start: log ends at {} below required lsn {} (commit {commit_lsn}, acked mark {acked_lsn})",
                        self.nodes[n].name, head.lsn, rule.required_lsn()
                    ));
                }
                if self.nodes[n].halted.is_some() {
                    // A halted node stays halted until the operator clears it.
                    core.halt(now);
                }
                self.nodes[n].core = Some(core);
                self.nodes[n].plan = RolePlan::new(self.nodes[n].name.clone());
                self.nodes[n].stopped = None;
                self.net.restart_node(n, now);
                self.log(format!(
                    "{} start: log head {head:?}",
                    self.nodes[n].name.clone()
                ));
            }
            Err(e) => {
                let msg = format!("{} refuses to start: {e}", self.nodes[n].name);
                self.nodes[n].stopped = Some(msg.clone());
                self.log(msg);
            }
        }
    }

    // ------------------------------------------------------------- queries

    /// The node that runs a primary executor whose core is primary (the
    /// highest epoch if several: a stale one may not have learned yet).
    pub fn primary(&self) -> Option<usize> {
        self.nodes
            .iter()
            .filter(|n| n.election_role() == Some(Role::Primary) && n.primary().is_some())
            .max_by_key(|n| n.core.as_ref().map_or(0, |c| c.epoch()))
            .map(|n| n.id)
    }

    /// The highest epoch any running node is in.
    pub fn max_epoch(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| c.epoch()))
            .max()
            .unwrap_or(0)
    }

    // ------------------------------------------------------------- event loop

    fn next_event(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut take = |x: Option<u64>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t: u64| t.min(x)));
            }
        };
        take(self.net.next_event_ms());
        take(self.elect_q.keys().next().map(|k| k.0));
        take(self.client_at);
        for n in &self.nodes {
            if let Some(c) = &n.core {
                take(c.next_tick_ms());
            }
            take(self.role_next_timer(n.id));
        }
        t
    }

    /// Processes everything due up to `until_ms` in time order, checking the
    /// invariants after every step; then sets the clock to `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        self.run_while(until_ms, |_| true);
    }

    /// Like [`Cluster::run_until`], but stops early (returning true) once
    /// `stop` holds after a step.
    pub fn run_until_cond(&mut self, until_ms: u64, stop: impl Fn(&Cluster) -> bool) -> bool {
        if stop(self) {
            return true;
        }
        let mut hit = false;
        self.run_while(until_ms, |c| {
            hit = stop(c);
            !hit
        });
        hit
    }

    fn run_while(&mut self, until_ms: u64, mut go_on: impl FnMut(&Cluster) -> bool) {
        let mut guard = 0u64;
        while let Some(t) = self.next_event() {
            let t = t.max(self.now());
            if t > until_ms {
                break;
            }
            guard += 1;
            assert!(
                guard < 5_000_000,
                "failover world: event loop does not settle"
            );
            self.clock.advance_to(t);
            self.fire_due();
            self.after_step();
            if !go_on(self) {
                return;
            }
        }
        self.clock.advance_to(until_ms.max(self.now()));
    }

    fn after_step(&mut self) {
        self.step += 1;
        check::check_step(self);
    }

    fn fire_due(&mut self) {
        let now = self.now();
        for ev in self.net.poll(now) {
            self.on_net(ev);
        }
        while let Some((&(at, seq), _)) = self.elect_q.iter().next() {
            if at > now {
                break;
            }
            if let Some((from, inc, to, msg)) = self.elect_q.remove(&(at, seq)) {
                self.deliver(from, inc, to, msg);
            }
        }
        for n in 0..self.nodes.len() {
            self.role_fire_due(n);
            self.watch_acked(n);
            // As the production driver's poll: the newest configuration of the running
            // role's log goes to the core, and a primary makes its own changes.
            self.sync_membership(n);
            self.automatic_membership_change(n);
            self.force_campaign_deadline(n);
            let due = self.nodes[n]
                .core
                .as_ref()
                .and_then(|c| c.next_tick_ms())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(core) = self.nodes[n].core.as_mut() {
                    let actions = core.tick(now);
                    self.perform(n, actions);
                }
            }
        }
        if self.client_at.is_some_and(|t| t <= now) {
            self.client_at = Some(now + self.cfg.client_interval_ms);
            self.client_append();
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Accepted { conn, to, from } => self.role_accepted(to, conn, from),
            NetEvent::Data {
                conn, to, bytes, ..
            } => self.role_data(to, conn, &bytes),
            NetEvent::Closed {
                conn, at, reason, ..
            } => self.role_closed(at, conn, reason),
        }
    }

    /// The client's next record, through the current primary.
    fn client_append(&mut self) {
        let Some(p) = self.primary() else {
            return;
        };
        self.next_payload += 1;
        let payload = format!("rec-{}-{}", self.seed, self.next_payload).into_bytes();
        self.primary_append(p, payload);
    }

    /// Runs until every running, non-halted member holds the primary's log up
    /// to its commit watermark (and that watermark covers the primary's
    /// durable log), or `budget_ms` passed.
    pub fn run_until_converged(&mut self, budget_ms: u64) -> bool {
        let deadline = self.now() + budget_ms;
        self.run_until_cond(deadline, |c| c.converged())
    }

    /// See [`Cluster::run_until_converged`].
    pub fn converged(&self) -> bool {
        let Some(p) = self.primary() else {
            return false;
        };
        let Some(pr) = self.nodes[p].primary() else {
            return false;
        };
        let mut commit = pr.up.exec.commit_lsn();
        // Only the members of the primary's newest configuration follow it (a removed or
        // terminated node does not).
        let view = pr.up.exec.membership();
        let member = |n: &FoNode| !n.gone && view.config.member(&n.name).is_some();
        // Halted members (waiting for the operator's rejoin) can leave fewer
        // than the commit quorum: then the members converge on the
        // primary's durable log, which cannot commit yet.
        let healthy = self
            .nodes
            .iter()
            .filter(|n| member(n) && view.config.is_voter(&n.name))
            .filter(|n| n.is_up() && n.halted.is_none() && n.stopped.is_none())
            .count();
        let copies =
            walship_node::election::commit_copies(view.config.voters().count(), self.cfg.quorum)
                .unwrap_or(1);
        if healthy < copies {
            commit = pr.up.exec.durable_lsn();
        } else if commit < pr.up.exec.durable_lsn() || commit < pr.epoch_start {
            return false;
        }
        let Ok(Some(at_commit)) = pr.up.exec.wal().with(|w| w.position_at(commit)) else {
            return false;
        };
        self.nodes
            .iter()
            .filter(|n| n.id != p && member(n))
            .all(|n| {
                if n.halted.is_some() || n.stopped.is_some() {
                    return true;
                }
                let Some(r) = n.replica() else {
                    return false;
                };
                r.primary == p
                    && r.up.exec.wal().is_some_and(|w| {
                        w.durable_lsn() >= commit
                            && w.position_at(commit).ok().flatten() == Some(at_commit)
                    })
                    && (healthy < copies || r.up.exec.core().commit_lsn() >= commit)
            })
    }
}
