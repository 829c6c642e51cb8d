//! The node's driver: one tokio task that feeds the election core its inputs (messages,
//! timers, operator commands, what the running role reports) and performs its actions in
//! order; and the accept loop that routes each incoming stream (election messages to the
//! driver, replication sessions to the primary role).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn, Instrument};
use walship_wal::state::NodeDir;
use walship_wal::{FsStorage, Lsn};
use walship_wire::CloseCode;

use super::plan::{self, RoleCommand, RolePlan, RoleReport, Verdict};
use super::roles::RoleRequest;
use super::transport::{self, Envelope, Sender};
use super::{
    http_role, identity, Inner, Node, NodeConfig, NodeError, NodeStatus, RoleSlot, RoleState,
};
use crate::election::{
    Action, ElectionCore, ElectionMessage, LogPosition, NodeId, PersistedVote, Role, StartState,
    VoteFile,
};
use crate::http;
use crate::replica::{apply_record, Applier, ReplicaState};

/// The driver wakes at least this often to look at its role (health, apply, log head).
const POLL: Duration = Duration::from_millis(20);
/// Most committed records the primary role applies per wake-up.
const APPLY_BATCH: usize = 4096;

/// What the driver task takes.
pub(crate) enum Input {
    /// An election message from a member (the connection's certificate named it), sent by
    /// its data directory's `incarnation` (0: unknown).
    Election {
        from: NodeId,
        incarnation: u64,
        msg: ElectionMessage,
    },
    /// Operator promotion.
    Promote {
        accept_data_loss: bool,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    /// Switchover: ask `target` to campaign now.
    Transfer {
        target: NodeId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    /// Maintenance mode on or off (persisted before the core changes).
    SetPaused {
        paused: bool,
        reply: oneshot::Sender<Result<bool, NodeError>>,
    },
    /// `walship ctl force-quorum`: the survivors become the voters of a forced
    /// configuration and this node campaigns among them now.
    ForceQuorum {
        survivors: Vec<NodeId>,
        accept_data_loss: bool,
        reply: oneshot::Sender<Result<crate::membership::ForcePlan, NodeError>>,
    },
    /// The role task could not open or close a role (its own storage failed).
    RoleFailed { reason: String },
    /// Stop the node.
    Shutdown { reply: oneshot::Sender<()> },
}

/// Monotonic milliseconds since the process's first call (the election core's clock).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `state/identity`: refuses another cluster's or another member's directory;
/// a directory without one gets one with a new incarnation id.
fn check_identity(
    config: &NodeConfig,
    node_dir: &NodeDir<FsStorage>,
) -> Result<identity::Identity, NodeError> {
    let loaded = identity::load_or_create(
        &FsStorage,
        &config.data_dir,
        node_dir.state_dir(),
        &config.cluster_id,
        &config.node_id,
    )?;
    if loaded.created {
        info!(node = %config.node_id, cluster = %config.cluster_id, incarnation = format_args!("{:016x}", loaded.identity.incarnation),
            "data directory initialised: new incarnation");
    }
    Ok(loaded.identity)
}

/// What a (re)starting member reads from its directory before it runs.
struct Start {
    /// Its vote, its log's last record and whether it holds everything it acknowledged.
    state: StartState,
    /// [`plan::RestartRule`]: its log must reach the higher of its commit watermark and
    /// its acknowledged mark.
    rule: plan::RestartRule,
    /// The halt, if halted (a halted node never votes or leads: it starts halted, before
    /// it heard anyone).
    halt: Option<String>,
    /// Maintenance mode (`state/paused`).
    paused: bool,
    /// `state/identity`, checked first: another cluster's or member's directory is
    /// refused before anything else in it is read.
    identity: identity::Identity,
    /// The newest configuration in the log (spec/membership.md rule 1: elections count
    /// votes among its voters), or the base configuration of `node.toml`.
    membership: crate::membership::MembershipView,
}

fn start_state(config: &NodeConfig) -> Result<Start, NodeError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| NodeError::Open(format!("{}: {e}", dir.display())))?;
    let node_dir = NodeDir::open(FsStorage, dir).map_err(|e| NodeError::Open(e.to_string()))?;
    let identity = check_identity(config, &node_dir)?;
    let commit = node_dir
        .commit_lsn()
        .map_err(|e| NodeError::Open(e.to_string()))?;
    // A damaged mark is never reset: the node cannot know what it acknowledged.
    let acked =
        walship_wal::state::read_acked_lsn(&FsStorage, node_dir.state_dir()).map_err(|e| {
            NodeError::Open(format!(
                "{e}; this node must not start until an operator repairs it"
            ))
        })?;
    let vote = VoteFile::new(FsStorage, node_dir.state_dir()).load()?;
    let wal_dir = node_dir.wal_dir();
    let last = if wal_dir.exists() {
        walship_wal::inspect(&FsStorage, wal_dir, config.wal.max_record_bytes)
            .map_err(|e| NodeError::Open(e.to_string()))?
            .last
    } else {
        walship_wal::Position::ZERO
    };
    let rule = plan::RestartRule {
        log_end: last.lsn,
        commit_lsn: commit,
        acked_lsn: acked,
    };
    let eligible = rule.eligible_at_start();
    if !eligible {
        warn!(node = %config.node_id, log_end = last.lsn, commit_lsn = commit, acked_lsn = acked,
            required_lsn = rule.required_lsn(),
            "the log ends below what this node acknowledged (its commit watermark or acknowledged mark): it neither votes nor leads until it re-fetched that range");
    }
    let halt = crate::replica::halt::read_halt(&FsStorage, node_dir.state_dir())
        .map_err(|e| NodeError::Open(e.to_string()))?;
    let paused = super::maintenance::load_paused(node_dir.state_dir())
        .map_err(|e| NodeError::Open(e.to_string()))?;
    // Read without changing anything: the role that opens the WAL next recovers it.
    let reader = walship_wal::read_only_reader(&FsStorage, wal_dir, config.wal.max_record_bytes)
        .map_err(|e| NodeError::Open(e.to_string()))?;
    // Records the newest snapshot replaced: what it records (spec/snapshot-format.md §1.5).
    let at_snapshot = walship_snapshot::read_newest_membership(
        &FsStorage,
        node_dir.snapshot_dir(),
        &walship_snapshot::Limits::default(),
    )
    .map_err(|e| NodeError::Open(e.to_string()))?
    .map(|(_, m)| m)
    .unwrap_or(walship_snapshot::BoundaryMembership::Static);
    let configs =
        crate::membership::ConfigLog::at_snapshot(config.base_configuration(), &at_snapshot)
            .extended_by(reader, commit)
            .map_err(|e| NodeError::Open(e.to_string()))?;
    let membership = configs.view(commit);
    Ok(Start {
        state: StartState {
            vote,
            log_head: LogPosition::new(last.epoch, last.lsn),
            eligible,
        },
        rule,
        halt: halt.map(|h| format!("{} at lsn {}", h.reason, h.lsn)),
        paused,
        identity,
        membership,
    })
}

pub(crate) async fn open(config: NodeConfig, applier: Box<dyn Applier>) -> Result<Node, NodeError> {
    config.validate()?;
    let me = config.me()?.clone();
    let cfg = config.clone();
    let Start {
        state: start,
        rule,
        halt: halted,
        paused,
        identity,
        membership,
    } = tokio::task::spawn_blocking(move || start_state(&cfg))
        .await
        .map_err(|e| NodeError::Open(format!("start-state task: {e}")))??;
    let material = config
        .tls
        .load()
        .map_err(walship_wire::EndpointError::from)?;
    // Any node the cluster CA signed for may connect: membership is the log's
    // (spec/membership.md), checked above TLS.
    let ids = vec![walship_wire::ANY_MEMBER.to_owned()];
    let mut endpoint =
        walship_wire::endpoint::server_endpoint_with(me.addr, &material, &ids, &config.transport)?;
    endpoint.set_default_client_config(walship_wire::endpoint::quinn_client_config(
        &material,
        &config.transport,
    )?);
    let seed = config.election_seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ u64::from(crc32c::crc32c(config.node_id.as_bytes())) << 32
    });
    let mut core = ElectionCore::new(config.election_config(), start.clone(), now_ms(), seed)?;
    let (voters, learners) = membership.election_members(&config.node_id, identity.incarnation);
    // A follower that never campaigned: nothing to abandon, nothing sent.
    let _ = core.set_membership(now_ms(), &voters, &learners);
    // The acknowledged mark is persisted at most once per heartbeat interval.
    let core_heartbeat_ms = core.heartbeat_ms();
    if let Some(why) = &halted {
        warn!(node = %config.node_id, halt = %why, "the node is halted: it neither votes nor leads until an operator clears the halt (walship-recover)");
        // A follower that never led: halting steps nothing down and sends nothing.
        let _ = core.halt(now_ms());
    }
    if paused {
        warn!(node = %config.node_id, "maintenance mode (state/paused): no automatic election until `walship ctl resume`");
        // A follower that never campaigned: pausing abandons nothing and sends nothing.
        let _ = core.pause(now_ms());
    }
    let addresses = address_book(&config, &membership);
    let sender = Sender::start(
        &endpoint,
        &peer_list(&config.node_id, &addresses),
        &config.cluster_id,
        config.digest(),
        identity.incarnation,
        config.me()?.addr,
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let state = RoleState {
        role: core.role(),
        epoch: core.epoch(),
        primary: None,
        reason: None,
    };
    let applied = applier.applied_lsn();
    let inner = Arc::new(Inner {
        status: Mutex::new(NodeStatus {
            node_id: config.node_id.clone(),
            state: state.clone(),
            voted_for: core.voted_for().cloned(),
            election_blocked_on: core.status(now_ms()).blocked_on(),
            blocker: super::maintenance::blocker(&core.status(now_ms())),
            paused,
            primary: None,
            replica: None,
            applied_lsn: applied,
            incarnation: identity.incarnation,
            acked_lsn: rule.acked_lsn,
            required_lsn: rule.required_lsn(),
            membership: membership.clone(),
            log_head: start.log_head,
        }),
        state: watch::channel(state).0,
        role: Mutex::new(RoleSlot::Idle),
        commands: tx,
        applier: Mutex::new(Some(applier)),
        draining: Mutex::new(None),
        metrics: Arc::new(crate::metrics::NodeMetrics::new()),
        addresses: Mutex::new(addresses),
        membership_change_running: std::sync::atomic::AtomicBool::new(false),
        proposing: std::sync::atomic::AtomicUsize::new(0),
        forced: Mutex::new(None),
        membership: Mutex::new(membership.clone()),
        config,
    });
    let votes = VoteFile::new(
        FsStorage,
        &inner.config.data_dir.join(walship_wal::state::STATE_DIR),
    );
    info!(node = %inner.config.node_id, epoch = core.epoch(), log_head = ?start.log_head,
        addr = %me.addr, "node open: following until an election says otherwise");
    let span = tracing::info_span!("node", node = %inner.config.node_id);
    let accept =
        tokio::spawn(accept_loop(endpoint.clone(), inner.clone()).instrument(span.clone()));
    let (roles_tx, roles_rx) = mpsc::unbounded_channel();
    tokio::spawn(
        super::roles::run(inner.clone(), endpoint.clone(), roles_rx).instrument(span.clone()),
    );
    let driver = Driver {
        inner: inner.clone(),
        core,
        votes: Some(votes),
        sender,
        roles: roles_tx,
        plan: RolePlan::new(inner.config.node_id.clone()),
        required_lsn: rule.required_lsn(),
        acked: plan::AckedMark::new(rule.acked_lsn, core_heartbeat_ms),
        stopped: halted,
        membership,
        forced_until: None,
    };
    let driver = tokio::spawn(driver.run(rx).instrument(span));
    Ok(Node {
        inner,
        driver: Some(driver),
        accept: Some(accept),
        endpoint,
    })
}

struct Driver {
    inner: Arc<Inner>,
    core: ElectionCore,
    /// `None` only while a persist runs on the blocking pool.
    votes: Option<VoteFile<FsStorage>>,
    sender: Sender,
    /// The role task's queue, and what it was last asked for.
    roles: mpsc::UnboundedSender<RoleRequest>,
    plan: RolePlan,
    /// An ineligible node becomes eligible once its durable lsn reaches this.
    required_lsn: Lsn,
    /// The acknowledged mark and when to persist it (`state/acked`).
    acked: plan::AckedMark,
    /// Why the node stopped or halted, once it did.
    stopped: Option<String>,
    /// The newest configuration the core counts votes in.
    membership: crate::membership::MembershipView,
    /// A force-quorum campaign gives up at this time.
    forced_until: Option<u64>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        loop {
            let now = now_ms();
            let wait = self
                .core
                .next_tick_ms()
                .map_or(POLL, |t| Duration::from_millis(t.saturating_sub(now)))
                .min(POLL);
            let input = tokio::select! {
                i = rx.recv() => i,
                _ = tokio::time::sleep(wait) => None,
            };
            let now = now_ms();
            let mut actions = Vec::new();
            match input {
                Some(Input::Election {
                    from,
                    incarnation,
                    msg,
                }) => {
                    self.refresh_log_head();
                    match self.core.on_message_from(now, &from, incarnation, msg) {
                        Ok(a) => actions = a,
                        Err(e) => warn!(peer = %from, error = %e, "election message refused"),
                    }
                }
                Some(Input::Promote {
                    accept_data_loss,
                    reply,
                }) => {
                    self.refresh_log_head();
                    match self.core.promote(now, accept_data_loss) {
                        Ok(a) => {
                            let _ = reply.send(Ok(()));
                            actions = a;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                    }
                }
                Some(Input::Transfer { target, reply }) => {
                    // The core counts in the newest configuration (a target promoted a
                    // moment ago is a voter already).
                    self.refresh_log_head();
                    match self.core.transfer_to(&target) {
                        Ok(a) => {
                            let _ = reply.send(Ok(()));
                            actions = a;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                    }
                }
                Some(Input::SetPaused { paused, reply }) => {
                    let r = self.set_paused(now, paused).await;
                    // `/status` says so once the command answered.
                    self.publish();
                    let _ = reply.send(r);
                }
                Some(Input::ForceQuorum {
                    survivors,
                    accept_data_loss,
                    reply,
                }) => {
                    self.refresh_log_head();
                    match self.force_quorum(now, &survivors, accept_data_loss) {
                        Ok((plan, a)) => {
                            let _ = reply.send(Ok(plan));
                            actions = a;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Some(Input::RoleFailed { reason }) => {
                    error!(%reason, "the role failed: the node stops");
                    self.fail(reason).await;
                }
                Some(Input::Shutdown { reply }) => {
                    let a = self.core.stop(now);
                    self.stopped.get_or_insert_with(|| "shut down".into());
                    self.perform(a).await;
                    self.observe_acked();
                    self.close_role().await;
                    // A clean shutdown leaves the mark current (a crash leaves it at most
                    // one interval behind).
                    if let Some(lsn) = self.acked.at_shutdown() {
                        if let Err(e) = self.persist_acked(lsn).await {
                            error!(acked_lsn = lsn, error = %e, "persisting the acknowledged mark at shutdown failed");
                        }
                    }
                    self.publish();
                    let _ = reply.send(());
                    return;
                }
                None => {}
            }
            actions.extend(self.core.tick(now));
            self.perform(actions).await;
            self.watch_role().await;
            self.publish();
            if self.core.role() == Role::Stopped {
                self.close_role().await;
                self.publish();
                // Keep answering commands (status, shutdown) without doing anything.
                while let Some(i) = rx.recv().await {
                    if let Input::Shutdown { reply } = i {
                        let _ = reply.send(());
                        return;
                    }
                }
                return;
            }
        }
    }

    /// Maintenance mode: persists the flag (write, fsync, rename, fsync `state/`), then
    /// tells the core. A failed write stops the node, as a failed vote write does (a failed
    /// fsync is never retried).
    async fn set_paused(&mut self, now: u64, paused: bool) -> Result<bool, NodeError> {
        if matches!(self.core.role(), Role::Halted | Role::Stopped) {
            return Err(NodeError::Stopped {
                reason: self
                    .stopped
                    .clone()
                    .unwrap_or_else(|| self.core.role().as_str().into()),
            });
        }
        let changed = self.core.status(now).paused != paused;
        let state_dir = self
            .inner
            .config
            .data_dir
            .join(walship_wal::state::STATE_DIR);
        let done = tokio::task::spawn_blocking(move || {
            super::maintenance::persist_paused(&state_dir, paused)
        })
        .await;
        let failed = match done {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("state/paused: {e}")),
            Err(e) => Some(format!("state/paused task: {e}")),
        };
        if let Some(reason) = failed {
            error!(%reason, "persisting the maintenance flag failed: the node stops (a failed fsync is never retried)");
            self.fail(reason.clone()).await;
            return Err(NodeError::Stopped { reason });
        }
        if paused {
            warn!(
                epoch = self.core.epoch(),
                "maintenance mode: no automatic election on this node until resumed"
            );
            let a = self.core.pause(now);
            self.perform(a).await;
        } else {
            info!(
                epoch = self.core.epoch(),
                "maintenance mode off: automatic elections allowed again"
            );
            self.core.resume(now);
        }
        Ok(changed)
    }

    /// Counts what the election does on this node (`/metrics`): one increment per
    /// pre-vote round, candidacy, win and step-down.
    fn count(&self, actions: &[Action]) {
        let m = self.inner.metrics.election();
        let me = &self.inner.config.node_id;
        let mut pre_vote_round = false;
        for a in actions {
            match a {
                // A vote for itself is persisted exactly when a candidacy starts.
                Action::PersistVote {
                    voted_for: Some(v), ..
                } if v == me => m.elections_started.inc(),
                Action::BecomePrimary { .. } => m.elections_won.inc(),
                Action::StepDown { reason, .. } => m
                    .step_downs
                    .with_label_values(&[step_down_label(reason)])
                    .inc(),
                Action::Send {
                    msg: ElectionMessage::PreVoteRequest { .. },
                    ..
                } => pre_vote_round = true,
                _ => {}
            }
        }
        if pre_vote_round {
            m.pre_votes_started.inc();
        }
    }

    /// Performs the core's actions in order (a vote is durable before anything after it).
    async fn perform(&mut self, actions: Vec<Action>) {
        self.count(&actions);
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::PersistVote { epoch, voted_for } => {
                    let Some(mut votes) = self.votes.take() else {
                        return;
                    };
                    let vote = PersistedVote {
                        epoch,
                        voted_for: voted_for.clone(),
                    };
                    let done = tokio::task::spawn_blocking(move || {
                        let r = votes.persist(&vote);
                        (votes, r)
                    })
                    .await;
                    match done {
                        Ok((votes, Ok(()))) => {
                            self.votes = Some(votes);
                            debug!(epoch, ?voted_for, "vote persisted");
                        }
                        Ok((_, Err(e))) => {
                            error!(epoch, error = %e, "persisting the vote failed: the node stops (a failed fsync is never retried)");
                            self.fail(format!("state/vote: {e}")).await;
                            return;
                        }
                        Err(e) => {
                            error!(epoch, error = %e, "the vote-persisting task died: the node stops");
                            self.fail(format!("state/vote task: {e}")).await;
                            return;
                        }
                    }
                }
                Action::Send { to, msg } => self.sender.send(&to, msg),
                role_action => {
                    match &role_action {
                        Action::StepDown { epoch, reason } => {
                            warn!(
                                epoch,
                                ?reason,
                                "stepping down: appends are refused from now on"
                            );
                            // Appends check the published role: refuse them before anything else.
                            self.publish();
                        }
                        Action::BecomePrimary { epoch } => {
                            info!(epoch, "won the election: opening the primary role (its first record is the epoch's control record)");
                        }
                        _ => {}
                    }
                    // The role task performs role changes in order while this task keeps
                    // answering election messages (heartbeats flow during a change).
                    if let Some(cmd) = self.plan.on_action(&role_action) {
                        let _ = self.roles.send(RoleRequest::Set(cmd));
                    }
                }
            }
        }
    }

    /// A fatal failure of this node's own storage (or of a role): stop, never retried.
    /// The run loop closes the role once it sees the node stopped.
    async fn fail(&mut self, reason: String) {
        self.stopped.get_or_insert(reason);
        let _ = self.core.stop(now_ms());
        self.publish();
    }

    /// Closes the role and waits until it is closed.
    async fn close_role(&mut self) {
        let _ = self.plan.set(RoleCommand::Close);
        let (tx, rx) = oneshot::channel();
        if self.roles.send(RoleRequest::CloseAndReply(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The log head the up-to-date rule compares, and the newest configuration in the log
    /// (rule 1 of spec/membership.md: the one votes are counted in), from the running role.
    fn refresh_log_head(&mut self) {
        let (head, membership) = match &*self.inner.lock_role() {
            RoleSlot::Primary(p) => {
                let s = p.status();
                (
                    Some(LogPosition::new(s.epoch, s.durable_lsn)),
                    Some(p.membership()),
                )
            }
            RoleSlot::Replica { replica, .. } => {
                let s = replica.status();
                (
                    s.last.map(|p| LogPosition::new(p.epoch, p.lsn)),
                    s.membership,
                )
            }
            RoleSlot::Idle => (None, None),
        };
        if let Some(head) = head {
            if head != self.core.log_head() {
                self.core.set_log_head(head);
            }
        }
        if let Some(m) = membership {
            self.set_membership(m);
        }
    }

    /// `walship ctl force-quorum` on this node (spec/membership.md §3): refused on a
    /// primary, for survivors that still hold an election quorum, without this node among
    /// them, or when acknowledged records may be lost and the loss is not accepted. Else
    /// the forced configuration is kept for the primary role to write right after its
    /// epoch's control record, the core counts votes among the survivors, and this node
    /// campaigns now (the survivors still apply the vote rules: it must be the most up
    /// to date of them).
    fn force_quorum(
        &mut self,
        now: u64,
        survivors: &[NodeId],
        accept_data_loss: bool,
    ) -> Result<(crate::membership::ForcePlan, Vec<Action>), NodeError> {
        let refused = |r: String| NodeError::Primary(crate::primary::PrimaryError::Membership(r));
        let incarnation = self.incarnation();
        let me = crate::membership::ForceNode {
            id: &self.inner.config.node_id,
            incarnation,
            primary: self.core.role() == Role::Primary,
            config: &self.membership.config,
            log_end: self.core.log_head().lsn,
        };
        let start = crate::membership::start_force_quorum(
            me,
            survivors,
            self.inner.config.quorum,
            accept_data_loss,
        )
        .map_err(|e| refused(e.to_string()))?;
        let plan = start.plan;
        warn!(generation = plan.config.generation, survivors = ?survivors, lost = ?plan.lost, may_lose = plan.may_lose,
            "force-quorum: campaigning among the survivors; the primary role writes the forced configuration");
        *self.inner.forced.lock().unwrap_or_else(|p| p.into_inner()) = Some(plan.config.clone());
        self.forced_until = Some(now.saturating_add(
            crate::membership::FORCE_CAMPAIGN_TIMEOUTS * self.inner.config.election_timeout_ms,
        ));
        let mut actions = self
            .core
            .set_membership(now, &start.voters, &start.learners);
        actions.extend(self.core.promote(now, true)?);
        Ok((plan, actions))
    }

    /// The incarnation of this node's data directory (`state/identity`).
    fn incarnation(&self) -> u64 {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .incarnation
    }

    /// A role reported the newest configuration of its log: the core counts votes in it,
    /// the transport reaches its members.
    fn set_membership(&mut self, m: crate::membership::MembershipView) {
        if m == self.membership {
            return;
        }
        // A force-quorum campaign counts among the survivors until its primary role wrote
        // the forced configuration (or the campaign gave up).
        if let Some(f) = &*self.inner.forced.lock().unwrap_or_else(|p| p.into_inner()) {
            if crate::membership::forced_campaign_keeps(f, &m.config) {
                return;
            }
        }
        if m.config != self.membership.config || m.departing != self.membership.departing {
            let incarnation = self.incarnation();
            let (voters, learners) = m.election_members(&self.inner.config.node_id, incarnation);
            let actions = self.core.set_membership(now_ms(), &voters, &learners);
            // Only a campaign abandoned by a node that stopped voting: its role command.
            for a in actions {
                if let Some(cmd) = self.plan.on_action(&a) {
                    let _ = self.roles.send(RoleRequest::Set(cmd));
                }
            }
            let addresses = address_book(&self.inner.config, &m);
            self.sender
                .set_peers(&peer_list(&self.inner.config.node_id, &addresses));
            *self
                .inner
                .addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = addresses;
        }
        *self
            .inner
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = m.clone();
        self.membership = m;
    }

    /// Looks at the running role: a halted replica halts the node, a stopped role stops
    /// it, a caught-up node becomes eligible, the primary role applies what it committed.
    async fn watch_role(&mut self) {
        self.refresh_log_head();
        let now = now_ms();
        let report = match &*self.inner.lock_role() {
            RoleSlot::Primary(p) => match p.stopped() {
                Some(r) => RoleReport::Stopped(r.to_string()),
                None => RoleReport::Durable(p.durable_lsn()),
            },
            RoleSlot::Replica { replica, .. } => {
                let s = replica.status();
                match s.state {
                    ReplicaState::Halted(h) => {
                        RoleReport::Halted(format!("{} at lsn {}", h.reason, h.lsn))
                    }
                    ReplicaState::Stopped(why) => RoleReport::Stopped(why),
                    _ => RoleReport::Durable(s.durable_lsn.unwrap_or(0)),
                }
            }
            RoleSlot::Idle => RoleReport::Idle,
        };
        self.observe_acked();
        if let Some(lsn) = self.acked.due(now) {
            if let Err(e) = self.persist_acked(lsn).await {
                error!(acked_lsn = lsn, error = %e, "persisting the acknowledged mark failed: the node stops (a failed fsync is never retried)");
                self.fail(format!("state/acked: {e}")).await;
                return;
            }
        }
        let eligible = self.core.status(now).eligible;
        match plan::verdict(&report, self.core.role(), eligible, self.required_lsn) {
            Some(Verdict::Halt(why)) => {
                error!(reason = %why, "replication halted: this node neither votes nor leads until an operator acts");
                // `why` is "<reason> at lsn <lsn>": the reason is the halt record's.
                let reason = why.split_whitespace().next().unwrap_or("unknown");
                self.inner
                    .metrics
                    .election()
                    .halts
                    .with_label_values(&[reason])
                    .inc();
                self.stopped.get_or_insert(why);
                let a = self.core.halt(now);
                self.perform(a).await;
            }
            Some(Verdict::Stop(why)) => {
                error!(reason = %why, "the role stopped on a failure of its own storage: the node stops");
                self.stopped.get_or_insert(why);
                let _ = self.core.stop(now);
            }
            Some(Verdict::Eligible) => {
                info!(
                    required_lsn = self.required_lsn,
                    "caught up to what this node acknowledged: eligible to vote and lead"
                );
                let a = self.core.set_eligible(now, true);
                self.perform(a).await;
            }
            None => {}
        }
        self.apply_as_primary().await;
        self.automatic_membership_change();
        if self.forced_until.is_some_and(|t| now >= t) {
            self.forced_until = None;
            if self
                .inner
                .forced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .is_some()
            {
                warn!("force-quorum: the campaign did not lead in time; the forced configuration is dropped (run it again)");
            }
        }
    }

    /// The primary's own membership changes (a reincarnated voter demoted, caught-up
    /// learners promoted with `auto_promote_learners`): one at a time, on a task of its
    /// own (it waits for the commit while this task keeps running the election).
    fn automatic_membership_change(&mut self) {
        use std::sync::atomic::Ordering;
        if self.core.role() != Role::Primary
            || self.inner.membership_change_running.load(Ordering::Acquire)
        {
            return;
        }
        let Some(change) = super::members::automatic(&self.inner) else {
            return;
        };
        self.inner
            .membership_change_running
            .store(true, Ordering::Release);
        warn!(?change, "membership change made by the primary itself");
        let inner = self.inner.clone();
        tokio::spawn(async move {
            match super::members::change(&inner, change.clone()).await {
                Ok(done) => {
                    info!(
                        lsn = done.lsn,
                        generation = done.config.generation,
                        ?change,
                        "automatic membership change committed"
                    )
                }
                Err(e) => {
                    warn!(?change, error = %e, "automatic membership change did not complete")
                }
            }
            inner
                .membership_change_running
                .store(false, Ordering::Release);
        });
    }

    /// Tells the acknowledged mark what the running role acknowledged.
    fn observe_acked(&mut self) {
        let ack = match &*self.inner.lock_role() {
            RoleSlot::Primary(p) => plan::RoleAck::Primary {
                commit_lsn: p.commit_lsn(),
            },
            RoleSlot::Replica { replica, .. } => {
                let s = replica.status();
                match (&s.state, s.durable_lsn) {
                    (ReplicaState::Halted(_) | ReplicaState::Stopped(_), _) | (_, None) => {
                        plan::RoleAck::Idle
                    }
                    (_, Some(durable_lsn)) => plan::RoleAck::Replica { durable_lsn },
                }
            }
            RoleSlot::Idle => plan::RoleAck::Idle,
        };
        self.acked.observe(ack);
    }

    /// Makes the acknowledged mark `lsn` durable (`state/acked`: write, fsync, rename,
    /// fsync dir) on the blocking pool, off the commit path.
    async fn persist_acked(&mut self, lsn: Lsn) -> Result<(), String> {
        let state_dir = self
            .inner
            .config
            .data_dir
            .join(walship_wal::state::STATE_DIR);
        let done = tokio::task::spawn_blocking(move || {
            walship_wal::state::write_acked_lsn(&FsStorage, &state_dir, lsn)
        })
        .await;
        match done {
            Ok(Ok(())) => {
                self.acked.persisted_at(lsn, now_ms());
                debug!(acked_lsn = lsn, "acknowledged mark persisted");
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the persisting task died: {e}")),
        }
    }

    /// The primary role applies what it committed, in lsn order (blocking reads and the
    /// embedder's apply run on the blocking pool).
    async fn apply_as_primary(&mut self) {
        let records = {
            let slot = self.inner.lock_role();
            let RoleSlot::Primary(p) = &*slot else {
                return;
            };
            let applied = match self.inner.applier.lock() {
                Ok(a) => a.as_ref().map(|a| a.applied_lsn()),
                Err(p) => p.into_inner().as_ref().map(|a| a.applied_lsn()),
            };
            let Some(applied) = applied else { return };
            if applied >= p.commit_lsn() {
                return;
            }
            match p.committed_records(applied + 1, APPLY_BATCH) {
                Ok(r) => r,
                Err(e) => {
                    warn!(from = applied + 1, error = %e, "cannot read committed records to apply");
                    return;
                }
            }
        };
        if records.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = inner.applier.lock().unwrap_or_else(|p| p.into_inner());
            let Some(applier) = guard.as_mut() else {
                return Ok(0);
            };
            let mut last = 0;
            for r in &records {
                if r.lsn() <= applier.applied_lsn() {
                    continue;
                }
                apply_record(applier.as_mut(), r).map_err(|e| e.to_string())?;
                last = r.lsn();
            }
            Ok::<Lsn, String>(last)
        })
        .await;
        match result {
            Ok(Ok(last)) if last > 0 => {
                let mut s = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
                s.applied_lsn = last;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                error!(error = %e, "the applier failed: the node stops");
                self.fail(format!("applier: {e}")).await;
            }
            Err(e) => self.fail(format!("apply task: {e}")).await,
        }
    }

    /// Publishes the role state (subscribers see changes) and the status fields.
    fn publish(&self) {
        let role = self.core.role();
        let state = RoleState {
            role,
            epoch: self.core.epoch(),
            primary: self.core.primary().cloned(),
            reason: match role {
                Role::Halted | Role::Stopped => self.stopped.clone(),
                _ => None,
            },
        };
        self.inner.state.send_if_modified(|s| {
            if *s == state {
                return false;
            }
            info!(role = role.as_str(), epoch = state.epoch, primary = ?state.primary, "role");
            *s = state.clone();
            true
        });
        let mut s = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = state;
        s.voted_for = self.core.voted_for().cloned();
        let election = self.core.status(now_ms());
        s.election_blocked_on = election.blocked_on();
        s.blocker = super::maintenance::blocker(&election);
        s.paused = election.paused;
        s.acked_lsn = self.acked.persisted();
        s.required_lsn = self.required_lsn;
        s.log_head = self.core.log_head();
    }
}

/// The `reason` label of `walship_step_downs_total`.
fn step_down_label(reason: &crate::election::StepDownReason) -> &'static str {
    use crate::election::StepDownReason as R;
    match reason {
        R::HigherEpoch { .. } => "higher-epoch",
        R::LeaseExpired { .. } => "lease-expired",
        R::Ineligible => "ineligible",
        R::Halted => "halted",
        R::Stopped => "stopped",
    }
}

/// [`super::Node::switchover`]: drain, wait for the target to hold everything, hand over,
/// wait for the target to lead.
pub(crate) async fn switchover(
    inner: &Arc<Inner>,
    target: &str,
    timeout: Duration,
) -> Result<Duration, NodeError> {
    let fail = |reason: String| NodeError::Switchover {
        target: target.to_owned(),
        reason,
    };
    // A voter of the newest configuration in the primary role's log (a member added
    // since node.toml was written is one too; a learner cannot win an election).
    let voter = match &*inner.lock_role() {
        RoleSlot::Primary(p) => p.membership().config.is_voter(target),
        _ => return Err(inner.not_primary()),
    };
    if target == inner.config.node_id || !voter {
        return Err(fail(
            "the target must be another voter of the newest configuration".into(),
        ));
    }
    let epoch = {
        let s = inner.state.borrow();
        if s.role != Role::Primary {
            return Err(inner.not_primary());
        }
        s.epoch
    };
    let started = Instant::now();
    *inner.draining.lock().unwrap_or_else(|p| p.into_inner()) = Some(target.to_owned());
    info!(
        epoch,
        target,
        "switchover: appends refused from now on; waiting for the target to hold everything"
    );
    let result = async {
        // Caught up: the target's receipts cover this primary's durable lsn, twice in a row
        // (appends handed to the primary before the drain are durable by then).
        let mut previous = None;
        loop {
            // A configuration record proposed before the drain began is still on its way
            // (refused from now on: `members::propose`): wait for it, or the target would
            // campaign without it and lose to voters holding it.
            let proposing = inner.proposing.load(std::sync::atomic::Ordering::SeqCst);
            let (durable, at_target) = match &*inner.lock_role() {
                RoleSlot::Primary(p) => {
                    let s = p.status();
                    let t = s
                        .replicas
                        .iter()
                        .find(|r| r.node_id == target)
                        .map_or(0, |r| r.durable_lsn);
                    (s.durable_lsn, t)
                }
                _ => {
                    return Err(fail(
                        "this node stopped leading during the switchover".into(),
                    ))
                }
            };
            if proposing == 0 && at_target >= durable && previous == Some(durable) {
                break;
            }
            previous = (proposing == 0).then_some(durable);
            if started.elapsed() > timeout {
                return Err(fail(if proposing > 0 {
                    format!("a configuration record proposed before the switchover is still not committed after {timeout:?}")
                } else {
                    format!("the target holds lsn {at_target}, this primary {durable}, after {timeout:?}")
                }));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (tx, rx) = oneshot::channel();
        inner
            .commands
            .send(Input::Transfer {
                target: target.to_owned(),
                reply: tx,
            })
            .map_err(|_| fail("the node's driver ended".into()))?;
        rx.await
            .map_err(|_| fail("the node's driver ended".into()))??;
        let mut rx = inner.state.subscribe();
        let led = tokio::time::timeout(timeout.saturating_sub(started.elapsed()), async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    match s.primary.as_deref() {
                        Some(p) if s.epoch > epoch && p == target => return Ok(()),
                        // Another member won the epoch the hand-over started: say so now
                        // rather than at the timeout.
                        Some(p) if s.epoch > epoch => {
                            return Err(format!(
                                "{p} won epoch {} instead of the target",
                                s.epoch
                            ))
                        }
                        _ => {}
                    }
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match led {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(fail(reason)),
            Err(_) => Err(fail(format!("the target did not lead within {timeout:?}"))),
        }
    }
    .await;
    *inner.draining.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let pause = started.elapsed();
    match &result {
        Ok(()) => info!(
            target,
            pause_ms = pause.as_millis() as u64,
            "switchover done"
        ),
        Err(e) => warn!(target, error = %e, "switchover abandoned: appends are taken again"),
    }
    result.map(|()| pause)
}

/// Every member's addresses: the newest configuration's and its departing members' (parsed), then the members of
/// `node.toml` it does not list (a node added later may not be in an old member's file,
/// and this node's own file may list members the log does not know yet).
pub(crate) fn address_book(
    config: &NodeConfig,
    view: &crate::membership::MembershipView,
) -> std::collections::BTreeMap<NodeId, super::MemberAddr> {
    let mut book = std::collections::BTreeMap::new();
    for m in view.config.members.iter().chain(&view.departing) {
        match m.addr.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                let http_addr = m.http_addr.as_deref().and_then(|h| h.parse().ok());
                book.insert(
                    m.id.clone(),
                    super::MemberAddr {
                        node_id: m.id.clone(),
                        addr,
                        http_addr,
                    },
                );
            }
            Err(e) => {
                warn!(member = %m.id, addr = %m.addr, error = %e, "a configured member's address does not parse: using node.toml's, if any");
            }
        }
    }
    for m in &config.members {
        book.entry(m.node_id.clone()).or_insert_with(|| m.clone());
    }
    book
}

/// The election peers: the members of the address book other than this node.
fn peer_list(
    me: &str,
    book: &std::collections::BTreeMap<NodeId, super::MemberAddr>,
) -> Vec<(NodeId, std::net::SocketAddr)> {
    book.values()
        .filter(|m| m.node_id != me)
        .map(|m| (m.node_id.clone(), m.addr))
        .collect()
}

/// Accepts members' connections: unidirectional streams carry election messages (to the
/// driver), a bidirectional stream is a replica's session (to the primary role, or
/// refused when this node is not the primary).
async fn accept_loop(endpoint: quinn::Endpoint, inner: Arc<Inner>) {
    let ids = vec![walship_wire::ANY_MEMBER.to_owned()];
    let digest = inner.config.digest();
    while let Some(incoming) = endpoint.accept().await {
        let inner = inner.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    warn!(%remote, error = %e, "connection refused during the mutual-TLS handshake");
                    return;
                }
            };
            let peer = match walship_wire::peer_node_id(&conn, &ids) {
                Ok(p) if p != inner.config.node_id => p,
                Ok(p) => {
                    warn!(%remote, peer = %p, "a connection presenting this node's own certificate: closing");
                    CloseCode::Refused.close(&conn, "not another member");
                    return;
                }
                Err(e) => {
                    warn!(%remote, error = %e, "peer certificate does not name exactly one member: closing");
                    CloseCode::Refused.close(&conn, "not a member");
                    return;
                }
            };
            loop {
                tokio::select! {
                    uni = conn.accept_uni() => {
                        let Ok(mut recv) = uni else { return };
                        let inner = inner.clone();
                        let peer = peer.clone();
                        tokio::spawn(async move {
                            let bytes = match transport::read_envelope(&mut recv).await {
                                Ok(b) => b,
                                Err(e) => {
                                    warn!(%peer, error = %e, "election message refused");
                                    return;
                                }
                            };
                            match Envelope::decode_checked(&bytes, &inner.config.cluster_id, digest) {
                                Ok((msg, incarnation, addr)) => {
                                    learn_address(&inner, &peer, &addr);
                                    let _ = inner.commands.send(Input::Election { from: peer, incarnation, msg });
                                }
                                Err(e) => error!(%peer, error = %e, "election message refused"),
                            }
                        });
                    }
                    bi = conn.accept_bi() => {
                        let Ok((send, recv)) = bi else { return };
                        route_session(&inner, conn.clone(), peer.clone(), send, recv).await;
                    }
                }
            }
        });
    }
}

/// A member this node has no address for (not in the newest configuration of its log nor
/// in its `node.toml`: it was added while this node was down) told its address in an
/// election message: keep it, so that this node can follow it if it leads. Known addresses
/// are never replaced by what a peer claims (the next configuration the node reads rebuilds
/// the book anyway).
fn learn_address(inner: &Inner, peer: &str, addr: &str) {
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return;
    };
    let mut book = inner.addresses.lock().unwrap_or_else(|p| p.into_inner());
    if book.contains_key(peer) {
        return;
    }
    info!(%peer, %addr, "learned a member's address from its election message");
    book.insert(
        peer.to_owned(),
        super::MemberAddr {
            node_id: peer.to_owned(),
            addr,
            http_addr: None,
        },
    );
}

/// A replica's session: served by the primary role, or refused with the primary this
/// node knows.
async fn route_session(
    inner: &Arc<Inner>,
    conn: quinn::Connection,
    peer: NodeId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    {
        let slot = inner.lock_role();
        if let RoleSlot::Primary(p) = &*slot {
            p.serve_session(conn, peer, send, recv);
            return;
        }
    }
    let (epoch, hint) = {
        let s = inner.state.borrow();
        (s.epoch, s.primary.clone())
    };
    debug!(%peer, epoch, primary = ?hint, "replica session refused: this node is not the primary");
    let mut send = send;
    let refuse = walship_wire::Message::Refuse(walship_wire::Refuse {
        reason: walship_wire::RefuseReason::NotPrimary {
            epoch,
            primary_hint: hint,
        },
    });
    let _ = walship_wire::stream::write_frame(&mut send, &refuse).await;
    let _ = send.finish();
    drop(recv);
}

/// `/status` of a node.
pub(crate) fn http_status(config: &NodeConfig, s: &NodeStatus) -> http::NodeStatus {
    // The newest configuration's address first: a member added later may not be in
    // this node's node.toml.
    let http_of = |id: &str| {
        s.membership
            .config
            .member(id)
            .and_then(|m| m.http_addr.clone())
            .or_else(|| {
                config
                    .member(id)
                    .and_then(|m| m.http_addr)
                    .map(|a| a.to_string())
            })
            .map(|a| format!("http://{a}"))
    };
    let mut out = if let Some(p) = &s.primary {
        http::NodeStatus::from_primary(p, http_of(&config.node_id))
    } else if let Some(r) = &s.replica {
        let primary = s.state.primary.clone().unwrap_or_default();
        http::NodeStatus::from_replica(r, &primary, http_of(&primary))
    } else {
        http::NodeStatus {
            node_id: s.node_id.clone(),
            role: http_role(s.state.role),
            epoch: s.state.epoch,
            durable_lsn: None,
            commit_lsn: 0,
            primary: s.state.primary.clone(),
            primary_http: s.state.primary.as_deref().and_then(http_of),
            connected: None,
            lag_records: None,
            halt: None,
            stopped: None,
            members: None,
            incarnation: None,
            acked_lsn: None,
            required_lsn: None,
            paused: false,
            blocked_on: None,
            configuration: None,
            log_head: None,
        }
    };
    out.paused = s.paused;
    out.blocked_on = s.blocker.clone();
    // The election decides the role and the epoch; the role's own report adds the rest.
    if !matches!(out.role, http::NodeRole::Halted) || s.state.role == Role::Stopped {
        out.role = http_role(s.state.role);
    }
    out.epoch = out.epoch.max(s.state.epoch);
    if s.state.role == Role::Stopped && out.stopped.is_none() {
        out.stopped = s.state.reason.clone();
    }
    if out.primary.is_none() || s.state.role != Role::Primary {
        out.primary = s.state.primary.clone();
        out.primary_http = s.state.primary.as_deref().and_then(http_of);
    }
    out.incarnation = Some(s.incarnation);
    out.configuration = Some(http::ConfigurationStatus::from_view(&s.membership));
    out.log_head = Some(s.log_head);
    out.acked_lsn = Some(s.acked_lsn);
    out.required_lsn = Some(s.required_lsn);
    out
}
