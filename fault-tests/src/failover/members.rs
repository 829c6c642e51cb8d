//! Membership in a failover world, run as production runs it
//! (spec/membership.md): every node's data directory has an incarnation
//! (`state/identity`, the production file; a new one when the disk is
//! destroyed), the roles track the configuration records of their logs
//! (`base_config`), the newest configuration of a node's log goes to its
//! election core before every election message and at every step (the
//! production driver's `refresh_log_head`), a primary makes its own changes
//! each step (`automatic_change`: the bootstrap record once every member
//! connected, a reincarnated voter demoted to a learner), and the operator
//! proposes changes on the primary (`apply_change` + `propose_configuration`,
//! as `walship ctl add|remove|promote` do).

use walship_node::cluster::identity::{load_or_create, Identity, IDENTITY_FILE};
use walship_node::election::Role;
use walship_node::membership::{
    apply_change, automatic_change, choose_force_survivors, forced_campaign_keeps,
    start_force_quorum, ForceCandidate, ForceError, ForceNode, ForcePlan, MemberChange,
    MembershipView, ReplicaFacts, FORCE_CAMPAIGN_TIMEOUTS,
};
use walship_wal::control::{ConfigMember, Configuration};
use walship_wal::sim::{SimConfig, SimStorage};
use walship_wal::Lsn;

use super::{Cluster, RoleState, CLUSTER_ID};
use crate::world::{make_dirs, root, state_dir, Applied, SimApplier};

/// Token bit of a membership proposal (client appends use small tokens).
const MEMBER_TOKEN: u64 = 1 << 63;

/// A force-quorum campaign the operator started ([`Cluster::force_quorum`]).
#[derive(Debug, Clone)]
pub struct ForceRun {
    /// The node that campaigns (the most up to date survivor).
    pub node: usize,
    /// The survivors named.
    pub survivors: Vec<String>,
    /// Its log end when it was asked: what may be lost lies above it.
    pub log_end: Lsn,
    /// The production plan.
    pub plan: ForcePlan,
}

/// The static base configuration of an `nodes`-member failover cluster
/// (generation 0, `node.toml`'s list): `n1..nN`, every one a voter, any
/// incarnation, the node id as its address.
pub fn base_config(nodes: usize) -> Configuration {
    walship_node::membership::base_configuration((1..=nodes).map(|i| ConfigMember {
        id: format!("n{i}"),
        incarnation: 0,
        voter: true,
        addr: format!("n{i}"),
        http_addr: None,
    }))
}

impl Cluster {
    /// Reads node `n`'s `state/identity` with the production code; an empty
    /// directory first gets one with a new incarnation from the world's
    /// generator (the production one draws from the kernel; the world stays
    /// deterministic).
    pub(super) fn load_identity(&mut self, n: usize) -> Result<(), String> {
        let storage = self.nodes[n].storage.clone();
        let name = self.nodes[n].name.clone();
        let present = walship_wal::state::read_state_json::<_, Identity>(
            &storage,
            &state_dir(),
            IDENTITY_FILE,
        )
        .map_err(|e| e.to_string())?
        .is_some();
        if !present {
            let identity = Identity {
                cluster_id: CLUSTER_ID.into(),
                node_id: name.clone(),
                incarnation: self.rng.next_u64().max(1),
            };
            walship_wal::state::write_state_json(&storage, &state_dir(), IDENTITY_FILE, &identity)
                .map_err(|e| e.to_string())?;
        }
        let loaded = load_or_create(&storage, &root(), &state_dir(), CLUSTER_ID, &name)
            .map_err(|e| e.to_string())?;
        if self.nodes[n].incarnation != loaded.identity.incarnation {
            self.log(format!(
                "{name} incarnation {:#x}",
                loaded.identity.incarnation
            ));
        }
        self.nodes[n].incarnation = loaded.identity.incarnation;
        Ok(())
    }

    /// The newest configuration of node `n`'s running role's log (the primary's
    /// `membership()`, the replica's `status().membership`), or `None` while idle.
    pub fn role_membership(&self, n: usize) -> Option<MembershipView> {
        match &self.nodes[n].role {
            RoleState::Primary(p) => Some(p.up.exec.membership()),
            RoleState::Replica(r) => r.up.exec.status().membership,
            RoleState::Idle => None,
        }
    }

    /// Feeds node `n`'s core the newest configuration of its running role's log
    /// (the production driver's `set_membership`): votes are counted among its
    /// voters, with the incarnation each must vote from; learners never campaign.
    /// While idle the core keeps the last one it knew.
    pub(super) fn sync_membership(&mut self, n: usize) {
        let Some(view) = self.role_membership(n) else {
            return;
        };
        if view == self.nodes[n].membership {
            return;
        }
        // As the production driver: a force-quorum campaign counts among the survivors
        // until its primary role wrote the forced configuration.
        if let Some((forced, _)) = &self.nodes[n].forced {
            if forced_campaign_keeps(forced, &view.config) {
                return;
            }
        }
        let now = self.now();
        // As the production driver: the core hears of it when the configuration changed.
        let changed = view.config != self.nodes[n].membership.config
            || view.departing != self.nodes[n].membership.departing;
        let name = self.nodes[n].name.clone();
        self.nodes[n].membership = view.clone();
        if !changed {
            return;
        }
        let (voters, learners) =
            view.election_members(&self.nodes[n].name, self.nodes[n].incarnation);
        self.log(format!(
            "{name} membership: generation {} at lsn {} voters {:?} learners {learners:?}",
            view.config.generation,
            view.lsn,
            voters.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>()
        ));
        let Some(core) = self.nodes[n].core.as_mut() else {
            return;
        };
        let actions = core.set_membership(now, &voters, &learners);
        self.perform(n, actions);
    }

    /// What node `n`'s primary role knows of its replicas (the production
    /// `members::replica_facts`: the incarnation of a connected replica's `Hello`).
    fn replica_facts(&mut self, n: usize) -> Vec<ReplicaFacts> {
        let now = self.now();
        let RoleState::Primary(p) = &mut self.nodes[n].role else {
            return Vec::new();
        };
        p.up.exec
            .status(now)
            .replicas
            .iter()
            .map(|r| ReplicaFacts {
                id: r.node_id.clone(),
                incarnation: if r.connected {
                    r.incarnation.unwrap_or(0)
                } else {
                    0
                },
                durable_lsn: r.durable_lsn,
                // The world deregisters by the operator's Remove (seed 000 scenario 6).
                silent_ms: r.last_receipt_age_ms.unwrap_or(0),
            })
            .collect()
    }

    /// The changes node `n`'s primary makes by itself (the production driver's
    /// `automatic_membership_change`, `auto_promote_learners = false`): the bootstrap
    /// record once every member connected, a voter that came back with another
    /// incarnation demoted to a learner under its new one.
    pub(super) fn automatic_membership_change(&mut self, n: usize) {
        let leads = self.nodes[n]
            .core
            .as_ref()
            .is_some_and(|k| k.role() == walship_node::election::Role::Primary);
        let Some(p) = self.nodes[n].primary() else {
            return;
        };
        if !leads || p.up.exec.fenced().is_some() {
            return;
        }
        let view = p.up.exec.membership();
        let commit = p.up.exec.commit_lsn();
        if !view.committed {
            return;
        }
        let facts = self.replica_facts(n);
        let Some(change) = automatic_change(&view, &facts, commit, false, 0) else {
            return;
        };
        let key = (view.lsn, format!("{change:?}"));
        if self.auto_refused.get(&n) == Some(&key) {
            return;
        }
        let next = match &change {
            MemberChange::Bootstrap => self.bootstrap_config(n, &view.config, &facts),
            other => apply_change(&view.config, other).map_err(|e| e.to_string()),
        };
        let result = next.and_then(|config| self.propose(n, config));
        let name = self.nodes[n].name.clone();
        match result {
            Ok(lsn) => self.log(format!(
                "{name} AUTOMATIC membership change {change:?} proposed at lsn {lsn}"
            )),
            Err(e) => {
                self.log(format!(
                    "{name} automatic membership change {change:?} refused: {e}"
                ));
                self.auto_refused.insert(n, key);
            }
        }
    }

    /// The first configuration record (the production `members::bootstrap_config`):
    /// the base members with each one's incarnation (the primary's own, and the one
    /// each replica's `Hello` announced).
    fn bootstrap_config(
        &self,
        n: usize,
        base: &Configuration,
        facts: &[ReplicaFacts],
    ) -> Result<Configuration, String> {
        let mut next = base.clone();
        next.generation = 1;
        for m in &mut next.members {
            m.incarnation = if m.id == self.nodes[n].name {
                self.nodes[n].incarnation
            } else {
                facts
                    .iter()
                    .find(|r| r.id == m.id && r.incarnation != 0)
                    .map(|r| r.incarnation)
                    .ok_or_else(|| format!("{} has not connected", m.id))?
            };
        }
        Ok(next)
    }

    /// Proposes `config` through node `n`'s primary executor; its group sync follows.
    fn propose(&mut self, n: usize, config: Configuration) -> Result<Lsn, String> {
        let now = self.now();
        let delay = self
            .rng
            .range(self.cfg.sync_delay_ms.0, self.cfg.sync_delay_ms.1);
        self.member_tokens += 1;
        let token = MEMBER_TOKEN | self.member_tokens;
        let RoleState::Primary(p) = &mut self.nodes[n].role else {
            return Err(format!("n{} is not primary", n + 1));
        };
        let generation = config.generation;
        let result = p.up.exec.propose_configuration(config, token, now);
        if result.is_ok() {
            p.up.schedule_sync(now, delay);
        }
        self.primary_outputs(n);
        let lsn = result.map_err(|e| e.to_string())?;
        self.log(format!(
            "n{} proposes configuration generation {generation} at lsn {lsn}",
            n + 1
        ));
        Ok(lsn)
    }

    /// Operator: a membership change on the current primary (`walship ctl
    /// add|remove|promote|demote`): the next configuration of the newest one
    /// (`apply_change`), proposed with `propose_configuration`. The log must hold
    /// its bootstrap record already (the primary writes it by itself once every
    /// member connected). Returns the configuration record's lsn; it commits
    /// under the old and the new voters.
    pub fn change_membership(&mut self, change: MemberChange) -> Result<Lsn, String> {
        let p = self.primary().ok_or("no primary")?;
        let view = self.nodes[p]
            .primary()
            .map(|r| r.up.exec.membership())
            .ok_or("no primary role")?;
        if view.config.generation == 0 {
            return Err("the log holds no bootstrap configuration record yet".into());
        }
        let next = apply_change(&view.config, &change).map_err(|e| e.to_string())?;
        self.log(format!(
            "OPERATOR membership change {change:?} on n{}",
            p + 1
        ));
        let r = self.propose(p, next);
        self.after_step();
        r
    }

    /// The configuration of the current primary's log, if there is a primary.
    pub fn primary_membership(&self) -> Option<MembershipView> {
        self.primary()
            .and_then(|p| self.nodes[p].primary().map(|r| r.up.exec.membership()))
    }

    /// Runs until the primary's newest configuration is committed and is
    /// `generation` or later, or `budget_ms` passed.
    pub fn run_until_config_committed(&mut self, generation: u64, budget_ms: u64) -> bool {
        let t = self.now() + budget_ms;
        self.run_until_cond(t, |c| {
            c.primary_membership()
                .is_some_and(|v| v.committed && v.config.generation >= generation)
        })
    }

    /// Operator: `walship ctl force-quorum [--accept-data-loss]` as the production `ctl`
    /// runs it, with no primary: the running members (neither halted nor stopped) answer
    /// with their incarnation and log head; the newest configuration they report names
    /// the members; `choose_force_survivors` picks the survivors and the most up to date
    /// of them, on which the production driver's `start_force_quorum` decides (the outer
    /// `Err`: the world's own refusals; the inner one: the node's). On success that node's
    /// core counts among the survivors and campaigns now; if it wins, its primary role
    /// writes the forced configuration (`ExecConfig::forced_config`).
    pub fn force_quorum(
        &mut self,
        accept_data_loss: bool,
    ) -> Result<Result<ForceRun, ForceError>, String> {
        if let Some(p) = self.primary() {
            return Err(format!("n{} is the primary: nothing to force", p + 1));
        }
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| {
                let x = &self.nodes[n];
                x.is_up() && x.halted.is_none() && x.stopped.is_none() && !x.gone
            })
            .collect();
        for &n in &running {
            self.sync_membership(n);
        }
        let config = running
            .iter()
            .map(|&n| &self.nodes[n].membership.config)
            .max_by_key(|c| c.generation)
            .cloned()
            .ok_or("no running member answers")?;
        let candidates: Vec<ForceCandidate> = running
            .iter()
            .filter_map(|&n| {
                let x = &self.nodes[n];
                x.core.as_ref().map(|k| ForceCandidate {
                    id: x.name.clone(),
                    incarnation: x.incarnation,
                    log_head: k.log_head(),
                })
            })
            .collect();
        let (survivors, chosen) = choose_force_survivors(&config, &candidates)
            .ok_or("no running member of the configuration: nothing to force")?;
        let n = self
            .index_of(&chosen)
            .ok_or("the chosen member is unknown")?;
        let now = self.now();
        let node = &self.nodes[n];
        let core = node.core.as_ref().ok_or("the chosen member is down")?;
        let log_end = core.log_head().lsn;
        let me = ForceNode {
            id: &node.name,
            incarnation: node.incarnation,
            primary: core.role() == Role::Primary,
            config: &node.membership.config,
            log_end,
        };
        let start = match start_force_quorum(me, &survivors, self.cfg.quorum, accept_data_loss) {
            Ok(s) => s,
            Err(e) => {
                self.log(format!(
                    "OPERATOR force-quorum on {chosen} (survivors {survivors:?}, accept_data_loss {accept_data_loss}) refused: {e}"
                ));
                return Ok(Err(e));
            }
        };
        self.log(format!(
            "OPERATOR force-quorum on {chosen} (log end {log_end}): survivors {survivors:?}, lost {:?}, may lose {}, forced generation {}",
            start.plan.lost, start.plan.may_lose, start.plan.config.generation
        ));
        if start.plan.may_lose {
            self.ghost.data_loss_accepted = true;
        }
        self.ghost.forced = Some(crate::failover::check::ForcedRun {
            node: n,
            log_end,
            may_lose: start.plan.may_lose,
            config: start.plan.config.clone(),
        });
        let until = now + FORCE_CAMPAIGN_TIMEOUTS * self.cfg.election_timeout_ms;
        self.nodes[n].forced = Some((start.plan.config.clone(), until));
        let Some(core) = self.nodes[n].core.as_mut() else {
            return Err("the chosen member is down".into());
        };
        let mut actions = core.set_membership(now, &start.voters, &start.learners);
        actions.extend(core.promote(now, true).map_err(|e| e.to_string())?);
        self.perform(n, actions);
        self.after_step();
        Ok(Ok(ForceRun {
            node: n,
            survivors,
            log_end,
            plan: start.plan,
        }))
    }

    /// A force-quorum campaign that did not lead in time drops its forced configuration
    /// (the production driver's `forced_until`).
    pub(super) fn force_campaign_deadline(&mut self, n: usize) {
        let now = self.now();
        if self.nodes[n]
            .forced
            .as_ref()
            .is_some_and(|(_, t)| now >= *t)
        {
            self.nodes[n].forced = None;
            let name = self.nodes[n].name.clone();
            self.log(format!(
                "{name} force-quorum: the campaign did not lead in time; the forced configuration is dropped"
            ));
        }
    }

    /// The VM of node `n` is terminated with its ephemeral storage: the node
    /// crashes, its disk is replaced by an empty one (a new incarnation at its
    /// next start), its embedder starts over. What the old incarnation durably
    /// held is kept by the checker (its receipts were true when sent).
    pub fn destroy_disk(&mut self, n: usize) {
        if self.nodes[n].is_up() {
            self.crash(n);
        }
        crate::failover::check::note_destroyed(self, n);
        let seed = self.rng.next_u64();
        let storage = SimStorage::with_config(seed, SimConfig::default());
        if let Err(e) = make_dirs(&storage) {
            panic!("n{}: mkdir on a fresh disk: {e}", n + 1);
        }
        let node = &mut self.nodes[n];
        node.storage = storage;
        node.applier = SimApplier::default();
        node.applied = Applied::default();
        node.halted = None;
        node.stopped = None;
        node.held = None;
        node.forced = None;
        node.membership = MembershipView {
            lsn: 0,
            config: self.base.clone(),
            committed: true,
            departing: Vec::new(),
        };
        self.ghost.applied_last.remove(&n);
        self.log(format!(
            "DESTROY disk of {} (incarnation {:#x} gone)",
            self.nodes[n].name, self.nodes[n].incarnation
        ));
    }

    /// Node `n` is terminated for good (scale-down without graceful shutdown):
    /// it crashes and is never restarted.
    pub fn terminate(&mut self, n: usize) {
        if self.nodes[n].is_up() {
            self.crash(n);
        }
        self.nodes[n].gone = true;
        self.log(format!("TERMINATE {} for good", self.nodes[n].name));
    }
}
