//! One node, two roles (DESIGN.md "One node, two roles", "Failover"): [`Node`].
//!
//! A node is a member of a cluster that is currently following or leading. The
//! sans-IO [`ElectionCore`](crate::election::ElectionCore) decides who leads which
//! epoch; the node performs its actions in order: a vote is persisted (write, fsync,
//! rename, fsync dir) before anything after it leaves the node; `BecomePrimary` opens the
//! primary role on the node's directory with the new epoch (its first record is the
//! epoch's control record, and nothing of an older epoch commits before it does);
//! `BecomeFollower` follows the epoch's primary as a replica that refuses any primary
//! below its epoch; `StepDown` stops acknowledging at once. The roles are the same
//! `Primary` and `Replica` (and so the same executors) that run alone; a role change
//! closes one and opens the other on the same directory, as a restart would.
//!
//! The embedder holds one [`Node`] and one [`Applier`]: committed records reach the
//! applier in lsn order in every role (the primary role applies what it committed).
//!
//! A restarting node neither votes nor leads until its log reaches the higher of its
//! persisted commit watermark and its acknowledged mark (`state/acked`: the highest lsn it
//! acknowledged, persisted off the commit path at most once per heartbeat interval;
//! [`plan::RestartRule`], [`plan::AckedMark`], spec/election.md §2.8).

mod config;
mod driver;
pub mod identity;
pub mod maintenance;
pub mod members;
pub mod plan;
mod roles;
pub mod transport;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use walship_wal::Lsn;

pub use self::config::{MemberAddr, NodeConfig};
use crate::election::{ConfigError, NodeId, PromoteError, Role, VoteFileError};
use crate::http::{self, AppendFuture, NodeRole, NodeView};
use crate::primary::{Primary, PrimaryError, PrimaryStatus};
use crate::replica::{Applier, Replica, ReplicaError, ReplicaStatus};

/// Errors of a [`Node`].
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration value is invalid.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The election configuration is invalid.
    #[error("invalid election configuration: {0}")]
    Election(#[from] ConfigError),
    /// `state/vote` could not be read or written (a failed write stops the node).
    #[error(transparent)]
    Vote(#[from] VoteFileError),
    /// The QUIC endpoint could not be set up.
    #[error(transparent)]
    Endpoint(#[from] walship_wire::EndpointError),
    /// The WAL or a state file could not be read at open.
    #[error("data directory: {0}")]
    Open(String),
    /// The data directory belongs to another cluster or member, or its
    /// identity file is damaged.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// This node is not the primary; the hint names the primary it knows.
    #[error("not the primary (epoch {epoch}, primary: {primary_hint:?})")]
    NotPrimary {
        /// The node's epoch.
        epoch: u64,
        /// The primary of that epoch, if known.
        primary_hint: Option<NodeId>,
    },
    /// The primary role refused or failed the append.
    #[error(transparent)]
    Primary(#[from] PrimaryError),
    /// The replica role failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// A switchover did not complete (appends are taken again).
    #[error("switchover to {target} did not complete: {reason}")]
    Switchover {
        /// The target.
        target: NodeId,
        /// Why.
        reason: String,
    },
    /// An operator command was refused.
    #[error("promotion refused: {0}")]
    Promote(#[from] PromoteError),
    /// The node stopped (a failed fsync, or shutdown) and serves nothing.
    #[error("the node stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

/// What a node is doing, as [`Node::status`] and [`Node::subscribe`] report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleState {
    /// The election role (`follower`, `pre-candidate`, `candidate`, `primary`, `halted`,
    /// `stopped`).
    pub role: Role,
    /// The node's epoch.
    pub epoch: u64,
    /// The primary of that epoch, if known (this node when primary).
    pub primary: Option<NodeId>,
    /// Why the node halted or stopped, if it did.
    pub reason: Option<String>,
}

/// A snapshot of a node: its role and what its running role reports.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// Role, epoch, primary.
    pub state: RoleState,
    /// The vote in the current epoch.
    pub voted_for: Option<NodeId>,
    /// What blocks an election, when one is blocked (e.g. "need 2 of 3 votes").
    pub election_blocked_on: Option<String>,
    /// The same blocker with its counts, members and a hint (`/status` `blocked_on`).
    pub blocker: Option<http::ElectionBlocker>,
    /// Automatic elections are paused (maintenance mode, `state/paused`).
    pub paused: bool,
    /// The primary role's status, while primary.
    pub primary: Option<PrimaryStatus>,
    /// The replica role's status, while following.
    pub replica: Option<ReplicaStatus>,
    /// Highest lsn delivered to the applier.
    pub applied_lsn: Lsn,
    /// The incarnation id of the data directory (`state/identity`).
    pub incarnation: u64,
    /// The acknowledged mark last persisted (`state/acked`, spec/election.md §5.1).
    pub acked_lsn: Lsn,
    /// The lsn this node's log had to reach at start before it votes or leads (the
    /// higher of its persisted commit watermark and acknowledged mark).
    pub required_lsn: Lsn,
    /// The newest configuration in the log, the one elections count votes in.
    pub membership: crate::membership::MembershipView,
    /// The log's last record as the election compares it.
    pub log_head: crate::election::LogPosition,
}

/// A cluster member: leads or follows as elected. See the module documentation.
pub struct Node {
    inner: Arc<Inner>,
    driver: Option<tokio::task::JoinHandle<()>>,
    accept: Option<tokio::task::JoinHandle<()>>,
    endpoint: quinn::Endpoint,
}

/// The running role.
pub(crate) enum RoleSlot {
    /// No role running (no primary known yet, or between roles).
    Idle,
    /// Leading.
    Primary(Primary),
    /// Following `primary` in `epoch`.
    Replica {
        /// The replica.
        replica: Replica,
        /// Whom it follows.
        primary: NodeId,
        /// In which epoch.
        epoch: u64,
    },
}

/// State shared by the handle, the driver task and the accept loop.
pub(crate) struct Inner {
    pub(crate) config: NodeConfig,
    pub(crate) role: Mutex<RoleSlot>,
    pub(crate) state: watch::Sender<RoleState>,
    pub(crate) status: Mutex<NodeStatus>,
    pub(crate) commands: mpsc::UnboundedSender<driver::Input>,
    /// The applier while no replica holds it (the primary role applies through it).
    pub(crate) applier: Mutex<Option<Box<dyn Applier>>>,
    /// A switchover in progress: appends are refused and pointed at this target.
    pub(crate) draining: Mutex<Option<NodeId>>,
    /// This node's metrics (its roles observe into them; `/metrics` renders them).
    pub(crate) metrics: Arc<crate::metrics::NodeMetrics>,
    /// Every member's addresses (newest configuration, then `node.toml`).
    pub(crate) addresses: Mutex<std::collections::BTreeMap<NodeId, MemberAddr>>,
    /// The newest configuration in the log, as the election core uses it.
    pub(crate) membership: Mutex<crate::membership::MembershipView>,
    /// An automatic membership change is waiting for its commit.
    pub(crate) membership_change_running: std::sync::atomic::AtomicBool,
    /// Configuration records handed to the primary role and not yet answered (written and
    /// committed, or failed). A switchover sets `draining` first, then waits for this to
    /// reach 0 before it checks the target caught up: no record is written behind the
    /// target's back (see `members::propose`).
    pub(crate) proposing: std::sync::atomic::AtomicUsize,
    /// A forced configuration the next primary role writes (force-quorum).
    pub(crate) forced: Mutex<Option<walship_wal::control::Configuration>>,
}

impl Inner {
    pub(crate) fn lock_role(&self) -> std::sync::MutexGuard<'_, RoleSlot> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_primary(&self) -> NodeError {
        let s = self.state.borrow();
        match s.role {
            Role::Stopped => NodeError::Stopped {
                reason: s.reason.clone().unwrap_or_else(|| "shut down".into()),
            },
            _ => NodeError::NotPrimary {
                epoch: s.epoch,
                primary_hint: s.primary.clone(),
            },
        }
    }
}

impl Node {
    /// Opens the node: checks the configuration, reads `state/vote` and the log's last
    /// record, binds the QUIC endpoint and starts as a follower (always: a restarting node
    /// never leads before an election). Must be called inside a multi-thread tokio
    /// runtime.
    pub async fn open(config: NodeConfig, applier: impl Applier) -> Result<Node, NodeError> {
        driver::open(config, Box::new(applier)).await
    }

    /// Appends one record and resolves with its lsn once it is committed under the quorum
    /// policy. On a node that is not the primary (or stops being it before the record
    /// commits): [`NodeError::NotPrimary`] with the primary it knows.
    pub fn append(
        &self,
        payload: impl Into<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<Lsn, NodeError>> + Send + 'static {
        let payload = payload.into();
        let inner = self.inner.clone();
        // The published role decides (a primary that stepped down refuses at once, even
        // while its role is still being closed).
        let leading = inner.state.borrow().role == Role::Primary;
        let draining = inner
            .draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let pending = match (&*inner.lock_role(), draining) {
            (_, Some(target)) => Err(NodeError::NotPrimary {
                epoch: inner.state.borrow().epoch,
                primary_hint: Some(target),
            }),
            (RoleSlot::Primary(p), None) if leading => Ok(p.append(payload)),
            _ => Err(inner.not_primary()),
        };
        async move {
            match pending {
                Err(e) => Err(e),
                Ok(fut) => fut.await.map_err(|e| match e {
                    PrimaryError::ShuttingDown => inner.not_primary(),
                    e => NodeError::Primary(e),
                }),
            }
        }
    }

    /// The node's status.
    pub fn status(&self) -> NodeStatus {
        let mut s = self
            .inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.state = self.inner.state.borrow().clone();
        s.membership = self.membership();
        match &*self.inner.lock_role() {
            RoleSlot::Primary(p) => s.primary = Some(p.status()),
            RoleSlot::Replica { replica, .. } => s.replica = Some(replica.status()),
            RoleSlot::Idle => {}
        }
        s
    }

    /// Role changes: the receiver sees every new [`RoleState`] (role, epoch, primary).
    pub fn subscribe(&self) -> watch::Receiver<RoleState> {
        self.inner.state.subscribe()
    }

    /// Waits until this node's role is `role` (or `timeout` passes: `false`).
    pub async fn wait_for_role(&self, role: Role, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if rx.borrow_and_update().role == role {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Operator promotion (quorum 0 has no automatic failover): campaign now.
    /// `accept_data_loss` is required under quorum 0, where an acknowledged record may
    /// exist on the old primary alone.
    pub async fn promote(&self, accept_data_loss: bool) -> Result<(), NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.command(driver::Input::Promote {
            accept_data_loss,
            reply: tx,
        })?;
        rx.await.map_err(|_| self.inner.not_primary())?
    }

    /// Planned hand-over to `target` (switchover): this primary stops accepting appends
    /// (they get `NotPrimary` naming `target`), waits until `target` holds everything this
    /// primary has durable, then asks it to campaign at once; `target` wins the next epoch
    /// (the voters still apply the vote rules) and this node follows it. Returns the write
    /// pause: from the first refused append until this node learned that `target` leads.
    /// Fails (and takes appends again) if `target` did not catch up or lead within
    /// `timeout`.
    pub async fn switchover(&self, target: &str, timeout: Duration) -> Result<Duration, NodeError> {
        driver::switchover(&self.inner, target, timeout).await
    }

    /// Maintenance mode: `true` stops this node from starting automatic elections (no
    /// pre-vote round, pre-votes of others refused; votes, promotion and switchover go on:
    /// see [`maintenance`]), `false` allows them again after a fresh election timeout.
    /// The flag is persisted in `state/paused` (write, fsync, rename, fsync dir) before
    /// this returns, so a restart keeps it. Returns whether the flag changed.
    pub async fn set_paused(&self, paused: bool) -> Result<bool, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.command(driver::Input::SetPaused { paused, reply: tx })?;
        rx.await.map_err(|_| NodeError::Stopped {
            reason: "the node's driver ended".into(),
        })?
    }

    /// A membership change on the primary (spec/membership.md): resolves once the new
    /// configuration is committed under the old and the new voters. The first change of
    /// a log writes the bootstrap record first (every base member's incarnation: each
    /// must have connected). Refused on a follower (`NotPrimary`), while another change
    /// is pending, for a change of more than one vote, and for a change that removes or
    /// demotes this primary (switch over first).
    pub async fn change_membership(
        &self,
        change: crate::membership::MemberChange,
    ) -> Result<members::MembershipChanged, NodeError> {
        members::change(&self.inner, change).await
    }

    /// `walship ctl force-quorum` (spec/membership.md §3): `survivors` (this node among
    /// them) become the voters of a forced configuration and this node campaigns among
    /// them now; its primary role writes the configuration right after its epoch's control
    /// record. Refused on the primary, while the survivors hold an election quorum, and
    /// when acknowledged records may be lost unless `accept_data_loss`. Returns the plan
    /// (the configuration, the voters removed, whether a loss is possible) once the
    /// campaign started; `status()` shows whether it won.
    pub async fn force_quorum(
        &self,
        survivors: Vec<NodeId>,
        accept_data_loss: bool,
    ) -> Result<crate::membership::ForcePlan, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.command(driver::Input::ForceQuorum {
            survivors,
            accept_data_loss,
            reply: tx,
        })?;
        rx.await.map_err(|_| self.inner.not_primary())?
    }

    /// The newest configuration in this node's log, as its election core counts votes.
    pub fn membership(&self) -> crate::membership::MembershipView {
        self.inner
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This node's metrics (what `/metrics` renders).
    pub fn metrics(&self) -> &Arc<crate::metrics::NodeMetrics> {
        &self.inner.metrics
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// The address the node's QUIC endpoint is bound to.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Resolves once the node stopped (a failed fsync of its own storage, or shutdown),
    /// with the reason.
    pub fn wait_stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.subscribe();
        async move {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.role == Role::Stopped {
                        return s.reason.clone().unwrap_or_else(|| "stopped".into());
                    }
                }
                if rx.changed().await.is_err() {
                    return "node dropped".into();
                }
            }
        }
    }

    fn command(&self, input: driver::Input) -> Result<(), NodeError> {
        self.inner
            .commands
            .send(input)
            .map_err(|_| NodeError::Stopped {
                reason: "the node's driver ended".into(),
            })
    }

    /// Stops the node: closes its role (a primary's waiters get `NotPrimary`), its
    /// connections and its endpoint.
    pub async fn shutdown(mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.command(driver::Input::Shutdown { reply: tx }).is_ok() {
            let _ = rx.await;
        }
        if let Some(d) = self.driver.take() {
            let _ = d.await;
        }
        self.endpoint.close(
            walship_wire::CloseCode::ShuttingDown.code(),
            b"node stopping",
        );
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Dropping a node without [`Node::shutdown`] stops it without waiting: its tasks are
/// aborted and its endpoint closed (which ends every connection and, with them, the
/// tasks that hold the running role; the role's own drop then stops it).
impl Drop for Node {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.endpoint.close(
            walship_wire::CloseCode::ShuttingDown.code(),
            b"node dropped",
        );
    }
}

/// The node as the HTTP endpoint sees it.
pub struct NodeHttpView {
    node: Arc<Node>,
}

impl NodeHttpView {
    /// A view of `node`.
    pub fn new(node: Arc<Node>) -> NodeHttpView {
        NodeHttpView { node }
    }
}

impl NodeView for NodeHttpView {
    fn status(&self) -> http::NodeStatus {
        driver::http_status(&self.node.inner.config, &self.node.status())
    }

    fn max_record_bytes(&self) -> u32 {
        self.node.inner.config.wal.max_record_bytes
    }

    fn append(&self, payload: Vec<u8>) -> AppendFuture {
        let fut = self.node.append(payload);
        let config = self.node.inner.config.clone();
        Box::pin(async move {
            fut.await.map_err(|e| match e {
                NodeError::NotPrimary { primary_hint, .. } => http::AppendError::NotPrimary {
                    primary_http: primary_hint
                        .as_deref()
                        .and_then(|p| config.member(p))
                        .and_then(|m| m.http_addr)
                        .map(|a| a.to_string()),
                    primary: primary_hint,
                },
                NodeError::Primary(PrimaryError::CommitTimeout { lsn }) => {
                    http::AppendError::CommitTimeout { lsn }
                }
                NodeError::Primary(PrimaryError::Wal(walship_wal::WalError::RecordTooLarge {
                    len,
                    max,
                })) => http::AppendError::TooLarge { len, max },
                NodeError::Stopped { reason } => http::AppendError::Stopped { reason },
                NodeError::Primary(PrimaryError::Stopped(reason)) => http::AppendError::Stopped {
                    reason: reason.to_string(),
                },
                e => http::AppendError::Failed {
                    message: e.to_string(),
                },
            })
        })
    }

    fn promote(&self, accept_data_loss: bool) -> http::OperatorFuture {
        let node = self.node.clone();
        Box::pin(async move {
            node.promote(accept_data_loss)
                .await
                .map_err(Self::operator_error)?;
            Ok(
                serde_json::json!({"promoted": node.node_id(), "accept_data_loss": accept_data_loss}),
            )
        })
    }

    fn log_ids(&self, req: http::LogIdsRequest) -> Result<http::LogIds, http::LogIdsError> {
        let status = self.status();
        match &*self.node.inner.lock_role() {
            RoleSlot::Primary(p) => http::primary_log_ids(p, &status, req),
            _ => Err(http::LogIdsError::Unavailable(format!(
                "this member is {}: only the primary role serves its log's identities",
                status.role.as_str()
            ))),
        }
    }

    fn switchover(&self, to: String, timeout: Duration) -> http::OperatorFuture {
        let node = self.node.clone();
        Box::pin(async move {
            let pause = node
                .switchover(&to, timeout)
                .await
                .map_err(Self::operator_error)?;
            Ok(serde_json::json!({"primary": to, "write_pause_ms": pause.as_millis() as u64}))
        })
    }

    fn set_paused(&self, paused: bool) -> http::OperatorFuture {
        let node = self.node.clone();
        Box::pin(async move {
            let changed = node
                .set_paused(paused)
                .await
                .map_err(Self::operator_error)?;
            Ok(serde_json::json!({"node_id": node.node_id(), "paused": paused, "changed": changed}))
        })
    }

    fn change_membership(&self, change: crate::membership::MemberChange) -> http::OperatorFuture {
        let node = self.node.clone();
        Box::pin(async move {
            let done = node
                .change_membership(change)
                .await
                .map_err(Self::operator_error)?;
            let view = crate::membership::MembershipView {
                lsn: done.lsn,
                config: done.config,
                committed: true,
                departing: Vec::new(),
            };
            Ok(serde_json::json!({
                "lsn": done.lsn,
                "bootstrapped": done.bootstrapped,
                "configuration": http::ConfigurationStatus::from_view(&view),
            }))
        })
    }

    fn force_quorum(&self, survivors: Vec<String>, accept_data_loss: bool) -> http::OperatorFuture {
        let node = self.node.clone();
        Box::pin(async move {
            let plan = node
                .force_quorum(survivors, accept_data_loss)
                .await
                .map_err(Self::operator_error)?;
            let view = crate::membership::MembershipView {
                lsn: 0,
                config: plan.config,
                committed: false,
                departing: Vec::new(),
            };
            Ok(serde_json::json!({
                "campaigning": node.node_id(),
                "lost": plan.lost,
                "may_lose": plan.may_lose,
                "accept_data_loss": accept_data_loss,
                "configuration": http::ConfigurationStatus::from_view(&view),
            }))
        })
    }

    fn metrics(&self) -> Option<&crate::metrics::NodeMetrics> {
        Some(self.node.metrics())
    }
}

impl NodeHttpView {
    fn operator_error(e: NodeError) -> http::OperatorError {
        match e {
            NodeError::Switchover { .. } => http::OperatorError::Incomplete(e.to_string()),
            e => http::OperatorError::Refused(e.to_string()),
        }
    }
}

/// The role names `/status` uses.
pub(crate) fn http_role(role: Role) -> NodeRole {
    match role {
        Role::Primary => NodeRole::Primary,
        Role::Follower => NodeRole::Follower,
        Role::PreCandidate | Role::Candidate => NodeRole::Candidate,
        Role::Halted => NodeRole::Halted,
        Role::Stopped => NodeRole::Stopped,
    }
}
