//! The per-node HTTP endpoint (`spec/http.md`): `GET /status` (JSON), `GET /primary` and
//! `GET /replica` (health checks for load balancers: 200 or 503, as Patroni offers them),
//! `POST /append` (one record per request, answered once it is committed),
//! `GET /metrics` (Prometheus text exposition, `crate::metrics`) and a member's operator
//! commands (`POST /promote`, `/switchover`, `/pause`, `/resume`).
//!
//! The server knows a node only through [`NodeView`]: what the node reports
//! ([`NodeStatus`]), the largest record it takes, and an append that resolves once the
//! record is committed. `walship node` implements it over today's `Primary` and `Replica`;
//! the one `Node` that will play both roles implements the same trait, and the endpoint,
//! its status codes and its JSON stay as they are.
//!
//! Untrusted input is bounded before it is read: `POST /append` refuses a `Content-Length`
//! above the record limit with 413 without reading the body (`tower_http`'s
//! `RequestBodyLimitLayer`), and a body without a length stops being read at the limit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{debug, warn};
use walship_wal::Lsn;

use crate::primary::PrimaryStatus;
use crate::replica::{HaltRecord, ReplicaState, ReplicaStatus};

mod log_ids;
pub use log_ids::{
    primary_log_ids, LogIds, LogIdsError, LogIdsRequest, PositionJson, RecordId, MAX_LOG_IDS,
};

/// The role a node reports (`role` in `/status`, the `role` label of `walship_role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Serving appends.
    Primary,
    /// Following a primary, not halted.
    Follower,
    /// Asking for votes (elections come with the unified node; never reported today).
    Candidate,
    /// Halted with a durable halt record: waits for an operator.
    Halted,
    /// Stopped by a fatal failure of its own storage (or shutting down).
    Stopped,
}

impl NodeRole {
    /// Every role, in the order `/metrics` lists them.
    pub const ALL: [NodeRole; 5] = [
        NodeRole::Primary,
        NodeRole::Follower,
        NodeRole::Candidate,
        NodeRole::Halted,
        NodeRole::Stopped,
    ];

    /// The name used in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Follower => "follower",
            NodeRole::Candidate => "candidate",
            NodeRole::Halted => "halted",
            NodeRole::Stopped => "stopped",
        }
    }
}

/// A halt as `/status` reports it (the halt record's fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HaltStatus {
    /// The halt reason (`checksum`, `divergence`, ...; `spec/state-files.md`).
    pub reason: String,
    /// The lsn involved.
    pub lsn: Lsn,
    /// The epoch involved.
    pub epoch: u64,
    /// What the node expected.
    pub expected: String,
    /// What it found.
    pub found: String,
    /// The peer whose frame caused the halt (or `local`).
    pub peer: String,
    /// When the halt was decided, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Free-form detail for the operator.
    pub detail: String,
}

impl From<&HaltRecord> for HaltStatus {
    fn from(h: &HaltRecord) -> Self {
        HaltStatus {
            reason: h.reason.as_str().to_string(),
            lsn: h.lsn,
            epoch: h.epoch,
            expected: h.expected.clone(),
            found: h.found.clone(),
            peer: h.peer.clone(),
            at_unix_ms: h.at_unix_ms,
            detail: h.detail.clone(),
        }
    }
}

/// One other member's progress, as the primary sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The member's node id.
    pub node_id: String,
    /// A connection of this member is open.
    pub connected: bool,
    /// The highest lsn the member reported durable (counted as in the commit rule).
    pub durable_lsn: Lsn,
    /// The primary's durable lsn minus the member's.
    pub lag_records: u64,
    /// The same lag in bytes (exact in flight, estimated beyond).
    pub lag_bytes: u64,
    /// Milliseconds since the member's last receipt (`null` if none since the primary started).
    pub last_receipt_age_ms: Option<u64>,
    /// How long the member has been behind, in milliseconds: `0` while it holds everything
    /// durable here, else since the first record it lacks became durable on the primary
    /// (`walship_primary::core::ReplicaProgress::lag_ms`).
    pub lag_ms: u64,
    /// The incarnation id the member's latest accepted `Hello` announced (`null`: none
    /// since the primary started; 0: the member announced none).
    pub incarnation: Option<u64>,
    /// The incarnation whose receipts count towards commits (0: any); while `incarnation`
    /// is another one, the member is shipped to but counts as holding nothing.
    pub expected_incarnation: u64,
}

impl MemberStatus {
    /// A member's progress as the primary core reports it.
    pub fn from_progress(r: &walship_primary::core::ReplicaProgress) -> MemberStatus {
        MemberStatus {
            node_id: r.node_id.clone(),
            connected: r.connected,
            durable_lsn: r.durable_lsn,
            lag_records: r.lag_records,
            lag_bytes: r.lag_bytes,
            last_receipt_age_ms: r.last_receipt_age_ms,
            lag_ms: r.lag_ms,
            incarnation: r.incarnation,
            expected_incarnation: r.expected_incarnation,
        }
    }
}

/// Why no election can complete, or why this node neither leads nor follows a known
/// primary (`blocked_on` in `/status`; `spec/http.md` §2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ElectionBlocker {
    /// `campaign` (votes missing), `lease` (a primary hearing too few members),
    /// `no-primary` (waiting for an election timeout), `paused`, `quorum-0`, `ineligible`,
    /// `halted` or `stopped`.
    pub kind: String,
    /// Votes (or, for `lease`, members heard) needed; `null` where no count applies.
    pub need: Option<usize>,
    /// Votes granted so far (this node's own included), or members heard.
    pub have: Option<usize>,
    /// Voting members.
    pub voters: Option<usize>,
    /// Members that have not answered this round.
    pub waiting_for: Vec<String>,
    /// Members that refused this round.
    pub refused_by: Vec<String>,
    /// The whole blocker in one line (`need 5 of 7 votes for epoch 9, have 4: waiting for
    /// n4, n6`).
    pub message: String,
    /// What an operator can do about it.
    pub hint: Option<String>,
}

/// What `GET /status` answers; every key is always present (`null` where it does not apply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: String,
    /// Its role.
    pub role: NodeRole,
    /// The current epoch (a follower: its primary's, else the highest it has seen).
    pub epoch: u64,
    /// Highest lsn fsynced in the local WAL (`null` while unknown: a replica halted at open
    /// does not open its WAL).
    pub durable_lsn: Option<Lsn>,
    /// The commit watermark this node knows.
    pub commit_lsn: Lsn,
    /// The primary's node id, if known (a primary names itself).
    pub primary: Option<String>,
    /// Where clients reach the primary's HTTP endpoint (`http://ip:port`), if known.
    pub primary_http: Option<String>,
    /// A follower: whether its connection to the primary is open (`null` on a primary).
    pub connected: Option<bool>,
    /// A follower: records it lacks behind the primary's last announced lsn (`null` on a primary).
    pub lag_records: Option<u64>,
    /// The halt, while halted.
    pub halt: Option<HaltStatus>,
    /// Why the node stopped, once it did.
    pub stopped: Option<String>,
    /// A primary: every other member's progress (`null` on other roles).
    pub members: Option<Vec<MemberStatus>>,
    /// A cluster member: the incarnation id of its data directory
    /// (`state/identity`; `null` for a node that is not a cluster member).
    #[serde(default)]
    pub incarnation: Option<u64>,
    /// A cluster member: its acknowledged mark as last persisted (`state/acked`,
    /// spec/election.md §5.1); `null` on a fixed primary or replica.
    pub acked_lsn: Option<Lsn>,
    /// A cluster member: the lsn its log had to reach at start before it votes or leads
    /// (the higher of its persisted commit watermark and acknowledged mark); `null` on a
    /// fixed primary or replica.
    pub required_lsn: Option<Lsn>,
    /// Automatic failover is paused on this node (`POST /pause`; kept across restarts).
    pub paused: bool,
    /// What keeps an election from completing, or this node from leading or following a
    /// known primary (`null` when nothing does).
    pub blocked_on: Option<ElectionBlocker>,
    /// A cluster member: the newest configuration in its log (spec/membership.md), the
    /// one its elections count votes in; `null` on a fixed primary or replica.
    pub configuration: Option<ConfigurationStatus>,
    /// A cluster member: the last record of its log as its election compares it (epoch
    /// of that record, lsn): the most up to date survivor is the one `force-quorum` picks.
    pub log_head: Option<crate::election::LogPosition>,
}

/// `configuration` of `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigurationStatus {
    /// 0: the static base of `node.toml` (no configuration record yet).
    pub generation: u64,
    /// Lsn of its record (0 for the base).
    pub lsn: Lsn,
    /// Whether this node knows it is committed.
    pub committed: bool,
    /// The members.
    pub members: Vec<ConfigMemberStatus>,
}

/// One member of a [`ConfigurationStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigMemberStatus {
    /// Node id.
    pub id: String,
    /// Votes (and counts towards commits); `false`: a learner.
    pub voter: bool,
    /// The incarnation the configuration names (0: unknown, base only).
    pub incarnation: u64,
    /// Peer (QUIC) address.
    pub addr: String,
    /// HTTP address, if any.
    pub http_addr: Option<String>,
}

impl ConfigurationStatus {
    /// The status form of a configuration view.
    pub fn from_view(v: &crate::membership::MembershipView) -> ConfigurationStatus {
        ConfigurationStatus {
            generation: v.config.generation,
            lsn: v.lsn,
            committed: v.committed,
            members: v
                .config
                .members
                .iter()
                .map(|m| ConfigMemberStatus {
                    id: m.id.clone(),
                    voter: m.voter,
                    incarnation: m.incarnation,
                    addr: m.addr.clone(),
                    http_addr: m.http_addr.clone(),
                })
                .collect(),
        }
    }
}

impl NodeStatus {
    /// A follower of nobody in epoch 0, with nothing known: the base the other
    /// constructors fill in.
    pub fn empty(node_id: &str) -> NodeStatus {
        NodeStatus {
            node_id: node_id.to_owned(),
            role: NodeRole::Follower,
            epoch: 0,
            durable_lsn: None,
            commit_lsn: 0,
            primary: None,
            primary_http: None,
            connected: None,
            lag_records: None,
            halt: None,
            stopped: None,
            members: None,
            paused: false,
            blocked_on: None,
            incarnation: None,
            acked_lsn: None,
            required_lsn: None,
            configuration: None,
            log_head: None,
        }
    }

    /// The status of a running primary (`Primary::status()`); `http` is its own endpoint's URL.
    pub fn from_primary(s: &PrimaryStatus, http: Option<String>) -> NodeStatus {
        NodeStatus {
            node_id: s.node_id.clone(),
            role: if s.stopped.is_some() {
                NodeRole::Stopped
            } else {
                NodeRole::Primary
            },
            epoch: s.epoch,
            durable_lsn: Some(s.durable_lsn),
            commit_lsn: s.commit_lsn,
            primary: Some(s.node_id.clone()),
            primary_http: http,
            connected: None,
            lag_records: None,
            halt: None,
            stopped: s.stopped.as_ref().map(ToString::to_string),
            members: Some(s.replicas.iter().map(MemberStatus::from_progress).collect()),
            paused: false,
            blocked_on: None,
            incarnation: None,
            acked_lsn: None,
            required_lsn: None,
            configuration: None,
            log_head: None,
        }
    }

    /// The status of a replica (`Replica::status()`). `configured_primary` is the primary it
    /// is configured to follow (named even before a session said `Welcome`);
    /// `primary_http` where clients reach that primary's endpoint.
    pub fn from_replica(
        s: &ReplicaStatus,
        configured_primary: &str,
        primary_http: Option<String>,
    ) -> NodeStatus {
        let (role, halt, stopped) = match &s.state {
            ReplicaState::Halted(h) => (NodeRole::Halted, Some(HaltStatus::from(h)), None),
            ReplicaState::Stopped(why) => (NodeRole::Stopped, None, Some(why.clone())),
            ReplicaState::Connecting
            | ReplicaState::Handshaking
            | ReplicaState::Streaming
            | ReplicaState::ReceivingSnapshot => (NodeRole::Follower, None, None),
        };
        NodeStatus {
            node_id: s.node_id.clone(),
            role,
            epoch: s.epoch,
            durable_lsn: s.durable_lsn,
            commit_lsn: s.commit_lsn,
            primary: Some(
                s.primary_id
                    .clone()
                    .unwrap_or_else(|| configured_primary.to_string()),
            ),
            primary_http,
            connected: Some(s.connected),
            lag_records: Some(s.lag_records),
            halt,
            stopped,
            members: None,
            incarnation: None,
            acked_lsn: None,
            required_lsn: None,
            paused: false,
            blocked_on: None,
            configuration: None,
            log_head: None,
        }
    }

    /// `GET /primary` answers 200: this node serves appends.
    pub fn is_serving_primary(&self) -> bool {
        self.role == NodeRole::Primary
    }

    /// `GET /replica` answers 200: a follower, not halted, connected to its primary.
    pub fn is_healthy_replica(&self) -> bool {
        self.role == NodeRole::Follower && self.connected == Some(true)
    }
}

/// Why an append through the endpoint was not committed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// This node does not serve appends; the hint names the primary it knows.
    #[error("not the primary (primary: {primary:?}, its endpoint: {primary_http:?})")]
    NotPrimary {
        /// The primary's node id, if known.
        primary: Option<String>,
        /// Where its HTTP endpoint is, if known.
        primary_http: Option<String>,
    },
    /// Durable locally but not committed within the commit timeout: the record stays
    /// tentative above the commit watermark (it may still commit later).
    #[error(
        "commit of lsn {lsn} timed out: the record stays tentative above the commit watermark"
    )]
    CommitTimeout {
        /// The record's lsn.
        lsn: Lsn,
    },
    /// The record is larger than the WAL's record limit.
    #[error("record of {len} bytes is above the {max}-byte limit")]
    TooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The node stopped (a fatal failure of its own storage) or is shutting down.
    #[error("the node stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
    /// Anything else.
    #[error("{message}")]
    Failed {
        /// The error's message.
        message: String,
    },
}

/// Why an operator command (`POST /promote`, `POST /switchover`) was not done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// This node is not a cluster member (a fixed primary or replica): 409.
    #[error("this node is not a cluster member: it takes no operator commands")]
    NotAMember,
    /// The command was refused as asked (wrong role, data loss not accepted, unknown
    /// target): 409, nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The command started and did not complete (e.g. a switchover whose target did not
    /// catch up in time): 504; appends are taken again.
    #[error("{0}")]
    Incomplete(String),
}

/// The future of an operator command: its JSON answer.
pub type OperatorFuture =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, OperatorError>> + Send + 'static>>;

/// The future [`NodeView::append`] returns.
pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Lsn, AppendError>> + Send + 'static>>;

/// What the endpoint needs from a node.
pub trait NodeView: Send + Sync + 'static {
    /// The node's current status.
    fn status(&self) -> NodeStatus;
    /// The largest record `append` takes (the WAL's `max_record_bytes`); `POST /append`
    /// refuses larger bodies with 413 before reading them.
    fn max_record_bytes(&self) -> u32;
    /// Appends one record; resolves with its lsn once it is committed.
    fn append(&self, payload: Vec<u8>) -> AppendFuture;
    /// Operator promotion (`POST /promote[?accept_data_loss=true]`): campaign now.
    fn promote(&self, accept_data_loss: bool) -> OperatorFuture {
        let _ = accept_data_loss;
        Box::pin(async { Err(OperatorError::NotAMember) })
    }
    /// Planned hand-over (`POST /switchover?to=ID[&timeout_ms=N]`).
    fn switchover(&self, to: String, timeout: Duration) -> OperatorFuture {
        let _ = (to, timeout);
        Box::pin(async { Err(OperatorError::NotAMember) })
    }
    /// Identities of this node's durable records (`GET /log/ids`, `spec/http.md` §8):
    /// blocking file reads, called off the runtime's workers. The default answers that
    /// this node does not serve them (503).
    fn log_ids(&self, req: LogIdsRequest) -> Result<LogIds, LogIdsError> {
        let _ = req;
        Err(LogIdsError::Unavailable(
            "this node does not serve its log's identities".into(),
        ))
    }
    /// Maintenance mode (`POST /pause`, `POST /resume`): `paused` true stops this node
    /// from starting automatic elections (durably: a restart keeps it).
    fn set_paused(&self, paused: bool) -> OperatorFuture {
        let _ = paused;
        Box::pin(async { Err(OperatorError::NotAMember) })
    }
    /// A membership change (`POST /members?op=…`, `spec/http.md` §9) on the primary.
    fn change_membership(&self, change: crate::membership::MemberChange) -> OperatorFuture {
        let _ = change;
        Box::pin(async { Err(OperatorError::NotAMember) })
    }
    /// `POST /force-quorum?survivors=A,B[&accept_data_loss=true]` (`spec/http.md` §6).
    fn force_quorum(&self, survivors: Vec<String>, accept_data_loss: bool) -> OperatorFuture {
        let _ = (survivors, accept_data_loss);
        Box::pin(async { Err(OperatorError::NotAMember) })
    }
    /// The node's metrics (`GET /metrics`); `None`: the state gauges of `status()` only.
    fn metrics(&self) -> Option<&crate::metrics::NodeMetrics> {
        None
    }
}

/// The endpoint's router over `view` (also usable without [`HttpListener`], e.g. in tests).
pub fn router(view: Arc<dyn NodeView>) -> Router {
    let limit = view.max_record_bytes();
    let append_route = post(append)
        // The limit layer below is the bound; axum's own 2 MiB default would refuse valid records.
        .layer::<_, Infallible>(DefaultBodyLimit::disable())
        .layer::<_, Infallible>(RequestBodyLimitLayer::new(limit as usize))
        // The limit layer answers an oversized Content-Length with a bare 413; say it in JSON.
        .layer::<_, Infallible>(axum::middleware::map_response(
            move |res: Response| async move {
                if res.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&res) {
                    too_large(None, limit)
                } else {
                    res
                }
            },
        ));
    Router::new()
        .route("/status", get(status))
        .route("/primary", get(primary_check))
        .route("/replica", get(replica_check))
        .route("/metrics", get(metrics))
        .route("/append", append_route)
        .route("/promote", post(promote))
        .route("/switchover", post(switchover))
        .route("/log/ids", get(log_ids_handler))
        .route("/members", post(members_handler))
        .route("/force-quorum", post(force_quorum_handler))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(view)
}

fn is_json(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serializing the response failed: {e}"),
        )
            .into_response(),
    }
}

fn too_large(len: Option<usize>, max: u32) -> Response {
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        &serde_json::json!({"error": "too-large", "len": len, "max_record_bytes": max}),
    )
}

async fn status(State(view): State<Arc<dyn NodeView>>) -> Response {
    json(StatusCode::OK, &view.status())
}

async fn primary_check(State(view): State<Arc<dyn NodeView>>) -> Response {
    let s = view.status();
    let code = if s.is_serving_primary() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &s)
}

async fn replica_check(State(view): State<Arc<dyn NodeView>>) -> Response {
    let s = view.status();
    let code = if s.is_healthy_replica() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &s)
}

async fn append(
    State(view): State<Arc<dyn NodeView>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let max = view.max_record_bytes();
    let payload = match body {
        Ok(b) => b,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            return too_large(None, max)
        }
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "bad-request", "detail": e.body_text()}),
            )
        }
    };
    match view.append(Vec::from(payload)).await {
        Ok(lsn) => json(StatusCode::OK, &serde_json::json!({ "lsn": lsn })),
        Err(e) => append_error_response(&e),
    }
}

/// The status code and JSON body of a refused or failed append (`spec/http.md`).
pub fn append_error_response(e: &AppendError) -> Response {
    match e {
        AppendError::NotPrimary {
            primary,
            primary_http,
        } => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "not-primary", "primary": primary, "primary_http": primary_http}),
        ),
        AppendError::CommitTimeout { lsn } => json(
            StatusCode::GATEWAY_TIMEOUT,
            &serde_json::json!({"error": "commit-timeout", "lsn": lsn, "detail": e.to_string()}),
        ),
        AppendError::TooLarge { len, max } => too_large(Some(*len), *max),
        AppendError::Stopped { reason } => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "stopped", "reason": reason}),
        ),
        AppendError::Failed { message } => {
            debug!(%message, "append failed");
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "failed", "detail": message}),
            )
        }
    }
}

/// `key=value` pairs of a query string (at most 8, each at most 128 bytes: anything else
/// is refused before it is looked at).
fn query_pairs(uri: &axum::http::Uri) -> Result<Vec<(String, String)>, Box<Response>> {
    let Some(q) = uri.query() else {
        return Ok(Vec::new());
    };
    let pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    if pairs.len() > 8 || pairs.iter().any(|p| p.len() > 128) {
        return Err(Box::new(json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad-request", "detail": "query too long"}),
        )));
    }
    Ok(pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => ((*p).to_owned(), String::new()),
        })
        .collect())
}

fn operator_response(r: Result<serde_json::Value, OperatorError>) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e @ (OperatorError::NotAMember | OperatorError::Refused(_))) => json(
            StatusCode::CONFLICT,
            &serde_json::json!({"error": "refused", "detail": e.to_string()}),
        ),
        Err(e @ OperatorError::Incomplete(_)) => json(
            StatusCode::GATEWAY_TIMEOUT,
            &serde_json::json!({"error": "incomplete", "detail": e.to_string()}),
        ),
    }
}

async fn promote(State(view): State<Arc<dyn NodeView>>, uri: axum::http::Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let accept = pairs
        .iter()
        .any(|(k, v)| k == "accept_data_loss" && v == "true");
    operator_response(view.promote(accept).await)
}

async fn switchover(State(view): State<Arc<dyn NodeView>>, uri: axum::http::Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(to) = pairs
        .iter()
        .find(|(k, _)| k == "to")
        .map(|(_, v)| v.clone())
    else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad-request", "detail": "switchover needs ?to=NODE_ID"}),
        );
    };
    let timeout_ms = match pairs.iter().find(|(k, _)| k == "timeout_ms") {
        None => 10_000,
        Some((_, v)) => match v.parse::<u64>() {
            Ok(ms) if (1..=600_000).contains(&ms) => ms,
            _ => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "bad-request", "detail": "timeout_ms must be 1..=600000"}),
                )
            }
        },
    };
    operator_response(view.switchover(to, Duration::from_millis(timeout_ms)).await)
}

async fn log_ids_handler(State(view): State<Arc<dyn NodeView>>, uri: axum::http::Uri) -> Response {
    let bad = |detail: String| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad-request", "detail": detail}),
        )
    };
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let req = match LogIdsRequest::parse(&pairs) {
        Ok(r) => r,
        Err(detail) => return bad(detail),
    };
    // The read maps and verifies segment bytes: blocking file I/O, off the workers.
    match tokio::task::spawn_blocking(move || view.log_ids(req)).await {
        Ok(Ok(ids)) => json(StatusCode::OK, &ids),
        Ok(Err(e @ LogIdsError::Unavailable(_))) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "unavailable", "detail": e.to_string()}),
        ),
        Ok(Err(LogIdsError::NotRetained { lsn, first_lsn })) => json(
            StatusCode::GONE,
            &serde_json::json!({"error": "not-retained", "lsn": lsn, "first_lsn": first_lsn}),
        ),
        Ok(Err(LogIdsError::Failed(detail))) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": "failed", "detail": detail}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": "failed", "detail": format!("the read task failed: {e}")}),
        ),
    }
}

/// `POST /force-quorum?survivors=A,B[&accept_data_loss=true]`.
async fn force_quorum_handler(
    State(view): State<Arc<dyn NodeView>>,
    uri: axum::http::Uri,
) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let survivors: Vec<String> = pairs
        .iter()
        .find(|(k, _)| k == "survivors")
        .map(|(_, v)| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if survivors.is_empty() {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad-request", "detail": "force-quorum needs ?survivors=ID,..."}),
        );
    }
    let accept = pairs
        .iter()
        .any(|(k, v)| k == "accept_data_loss" && v == "true");
    operator_response(view.force_quorum(survivors, accept).await)
}

/// `POST /members?op=add|remove|promote|demote&id=ID[&addr=HOST:PORT&http=HOST:PORT&incarnation=N&voter=true]`.
async fn members_handler(State(view): State<Arc<dyn NodeView>>, uri: axum::http::Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match parse_member_change(&pairs) {
        Ok(change) => operator_response(view.change_membership(change).await),
        Err(detail) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad-request", "detail": detail}),
        ),
    }
}

/// The change a `POST /members` query names, or why it names none.
pub fn parse_member_change(
    pairs: &[(String, String)],
) -> Result<crate::membership::MemberChange, String> {
    use crate::membership::MemberChange;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let id = get("id").ok_or("members needs ?id=NODE_ID")?;
    if id.is_empty() || id.len() > walship_wal::control::MAX_CONFIG_ADDR_BYTES {
        return Err("id must be 1 to 255 bytes".into());
    }
    let id = id.to_owned();
    match get("op") {
        Some("add") => {
            let addr =
                get("addr").ok_or("add needs &addr=HOST:PORT (the member's peer address)")?;
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| format!("addr {addr:?}: {e}"))?;
            let http_addr = match get("http") {
                None | Some("") => None,
                Some(h) => {
                    h.parse::<std::net::SocketAddr>()
                        .map_err(|e| format!("http {h:?}: {e}"))?;
                    Some(h.to_owned())
                }
            };
            let inc = get("incarnation").ok_or(
                "add needs &incarnation=N (the new member's, from its /status: it must be running)",
            )?;
            let incarnation = inc
                .parse::<u64>()
                .ok()
                .filter(|i| *i != 0)
                .ok_or_else(|| format!("incarnation {inc:?} must be a non-zero integer"))?;
            let voter = matches!(get("voter"), Some("true"));
            Ok(MemberChange::Add(walship_wal::control::ConfigMember {
                id,
                incarnation,
                voter,
                addr: addr.to_owned(),
                http_addr,
            }))
        }
        Some("remove") => Ok(MemberChange::Remove(id)),
        Some("promote") => Ok(MemberChange::Promote(id)),
        Some("demote") => Ok(MemberChange::Demote {
            id,
            incarnation: None,
        }),
        _ => Err("members needs ?op=add|remove|promote|demote".into()),
    }
}

async fn pause(State(view): State<Arc<dyn NodeView>>) -> Response {
    operator_response(view.set_paused(true).await)
}

async fn resume(State(view): State<Arc<dyn NodeView>>) -> Response {
    operator_response(view.set_paused(false).await)
}

async fn metrics(State(view): State<Arc<dyn NodeView>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        render_metrics(view.as_ref()),
    )
        .into_response()
}

/// The Prometheus text exposition (format 0.0.4) of `view`: its own metrics, or for a
/// view without them the state gauges of its status (`spec/http.md` §5 lists the names).
pub fn render_metrics(view: &dyn NodeView) -> String {
    let status = view.status();
    match view.metrics() {
        Some(m) => m.render(&status),
        None => crate::metrics::NodeMetrics::new().render(&status),
    }
}

/// Errors of the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configured address could not be bound.
    #[error("http endpoint: cannot bind {addr}: {source}")]
    Bind {
        /// The configured `http_addr`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound, not yet serving, endpoint socket: bind it before opening the node, so a busy
/// address fails the start before anything else is touched.
#[derive(Debug)]
pub struct HttpListener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl HttpListener {
    /// Binds `addr` (TCP). Must be called inside a tokio runtime.
    pub async fn bind(addr: SocketAddr) -> Result<HttpListener, HttpError> {
        let bind_err = |source| HttpError::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(HttpListener { listener, addr })
    }

    /// The bound address (the actual port when `addr` said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving `view` on a task of the current runtime.
    pub fn serve(self, view: Arc<dyn NodeView>) -> HttpServer {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(view);
        let addr = self.addr;
        let task = tokio::spawn(async move {
            let served = axum::serve(self.listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                warn!(%addr, error = %e, "http endpoint failed");
            }
        });
        HttpServer {
            addr,
            shutdown: tx,
            task,
        }
    }
}

/// A serving endpoint. [`HttpServer::shutdown`] stops it; dropping it leaves it serving
/// until the runtime ends.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits up to `grace` for the requests in flight (an
    /// append waits for its commit, at most the commit timeout). Returns false if requests
    /// were still running after `grace`: their tasks keep their handle on the node.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// A node whose status and append outcome the test sets.
    struct Fake {
        status: NodeStatus,
        outcome: Mutex<Option<Result<Lsn, AppendError>>>,
        appended: Mutex<Vec<Vec<u8>>>,
    }

    impl NodeView for Fake {
        fn status(&self) -> NodeStatus {
            self.status.clone()
        }
        fn max_record_bytes(&self) -> u32 {
            16
        }
        fn append(&self, payload: Vec<u8>) -> AppendFuture {
            self.appended.lock().expect("lock").push(payload);
            let outcome = self
                .outcome
                .lock()
                .expect("lock")
                .take()
                .expect("the test set one outcome per append");
            Box::pin(async move { outcome })
        }
    }

    fn primary_status() -> NodeStatus {
        NodeStatus {
            node_id: "n1".into(),
            role: NodeRole::Primary,
            epoch: 3,
            durable_lsn: Some(12),
            commit_lsn: 11,
            primary: Some("n1".into()),
            primary_http: Some("http://127.0.0.1:8080".into()),
            connected: None,
            lag_records: None,
            halt: None,
            stopped: None,
            members: Some(vec![MemberStatus {
                node_id: "n2".into(),
                connected: true,
                durable_lsn: 10,
                lag_records: 2,
                lag_bytes: 64,
                last_receipt_age_ms: Some(5),
                lag_ms: 5,
                incarnation: Some(7),
                expected_incarnation: 0,
            }]),
            incarnation: None,
            acked_lsn: None,
            required_lsn: None,
            paused: false,
            blocked_on: None,
            configuration: None,
            log_head: None,
        }
    }

    fn fake(status: NodeStatus, outcome: Option<Result<Lsn, AppendError>>) -> Arc<Fake> {
        Arc::new(Fake {
            status,
            outcome: Mutex::new(outcome),
            appended: Mutex::new(Vec::new()),
        })
    }

    async fn call(view: Arc<Fake>, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let res = router(view).oneshot(req).await.expect("infallible");
        let code = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        (code, value)
    }

    fn post_append(body: &'static [u8]) -> Request<Body> {
        Request::post("/append")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("request")
    }

    #[tokio::test]
    async fn append_maps_each_outcome_to_its_status_code_and_error() {
        let cases: Vec<(Result<Lsn, AppendError>, StatusCode, serde_json::Value)> = vec![
            (Ok(7), StatusCode::OK, serde_json::json!({"lsn": 7})),
            (
                Err(AppendError::NotPrimary {
                    primary: Some("n1".into()),
                    primary_http: Some("http://10.0.0.1:8080".into()),
                }),
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "not-primary", "primary": "n1", "primary_http": "http://10.0.0.1:8080"}),
            ),
            (
                Err(AppendError::Stopped {
                    reason: "the WAL failed: sync_data: EIO".into(),
                }),
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "stopped", "reason": "the WAL failed: sync_data: EIO"}),
            ),
            (
                Err(AppendError::Failed {
                    message: "primary task failed: boom".into(),
                }),
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "failed", "detail": "primary task failed: boom"}),
            ),
        ];
        for (outcome, code, body) in cases {
            let view = fake(primary_status(), Some(outcome));
            let (got_code, got_body) = call(view.clone(), post_append(b"hello")).await;
            assert_eq!((got_code, got_body), (code, body));
            assert_eq!(
                *view.appended.lock().expect("lock"),
                vec![b"hello".to_vec()]
            );
        }
        let view = fake(
            primary_status(),
            Some(Err(AppendError::CommitTimeout { lsn: 9 })),
        );
        let (code, body) = call(view, post_append(b"x")).await;
        assert_eq!(code, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"], "commit-timeout");
        assert_eq!(body["lsn"], 9);
    }

    #[tokio::test]
    async fn append_above_the_record_limit_is_413_and_never_reaches_the_node() {
        // 16 bytes pass, 17 are refused: by Content-Length before the body is read ...
        let view = fake(primary_status(), Some(Ok(1)));
        let (code, _) = call(view.clone(), post_append(b"0123456789abcdef")).await;
        assert_eq!(code, StatusCode::OK);
        let (code, body) = call(view.clone(), post_append(b"0123456789abcdefg")).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"], "too-large");
        assert_eq!(body["max_record_bytes"], 16);
        // A Content-Length above the limit is refused before a byte of the body is read:
        // this body never ends, so reading it would never answer (the bound turns that hang
        // into a failure; nothing is asserted on time).
        let req = Request::post("/append")
            .header(header::CONTENT_LENGTH, "1000000000")
            .body(streamed(vec![b"0123".to_vec()], true))
            .expect("request");
        let (code, body) = tokio::time::timeout(Duration::from_secs(60), call(view.clone(), req))
            .await
            .expect("answered without reading the body");
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["max_record_bytes"], 16);
        // ... and without a Content-Length, by the limit on what is read.
        let stream = streamed(vec![b"0123456789".to_vec(), b"abcdefg".to_vec()], false);
        let req = Request::post("/append").body(stream).expect("request");
        let (code, body) = call(view.clone(), req).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"], "too-large");
        assert_eq!(view.appended.lock().expect("lock").len(), 1);
    }

    /// A request body of `chunks` with no known length (as a chunked request); with
    /// `keep_open`, it never ends after them (a client still sending).
    fn streamed(chunks: Vec<Vec<u8>>, keep_open: bool) -> Body {
        struct Rx(tokio::sync::mpsc::Receiver<Bytes>);
        impl axum::body::HttpBody for Rx {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>>
            {
                self.0
                    .poll_recv(cx)
                    .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(Bytes::from(c)).await.is_err() {
                    return;
                }
            }
            if keep_open {
                tx.closed().await;
            }
        });
        Body::new(Rx(rx))
    }

    #[tokio::test]
    async fn health_checks_follow_the_role_and_the_connection() {
        let primary = fake(primary_status(), None);
        let get = |p: &str| Request::get(p).body(Body::empty()).expect("request");
        assert_eq!(
            call(primary.clone(), get("/primary")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(primary.clone(), get("/replica")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let mut follower = primary_status();
        follower.role = NodeRole::Follower;
        follower.members = None;
        follower.connected = Some(false);
        let f = fake(follower.clone(), None);
        assert_eq!(
            call(f.clone(), get("/replica")).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "a follower that lost its primary is not a healthy replica"
        );
        follower.connected = Some(true);
        let f = fake(follower.clone(), None);
        assert_eq!(call(f.clone(), get("/replica")).await.0, StatusCode::OK);
        assert_eq!(
            call(f, get("/primary")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let mut stopped = primary_status();
        stopped.role = NodeRole::Stopped;
        stopped.stopped = Some("the WAL failed".into());
        let s = fake(stopped, None);
        let (code, body) = call(s, get("/primary")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["role"], "stopped");
        assert_eq!(body["stopped"], "the WAL failed");
    }

    #[tokio::test]
    async fn metrics_follow_the_text_exposition_format() {
        let view = fake(primary_status(), None);
        let req = Request::get("/metrics")
            .body(Body::empty())
            .expect("request");
        let (code, body) = call(view, req).await;
        assert_eq!(code, StatusCode::OK);
        let text = body.as_str().expect("text").to_owned();
        assert!(text.ends_with('\n'));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, _kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(typed.insert(name.to_string()), "{name} typed twice");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name value");
            value.parse::<f64>().expect("numeric value");
            let name = series.split('{').next().expect("name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(
                typed.contains(family),
                "{name} sampled before its TYPE line"
            );
        }
        assert!(
            text.contains("walship_role{role=\"primary\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("walship_epoch 3\n"));
        assert!(text.contains("walship_member_lag_records{member=\"n2\"} 2\n"));
        assert!(!text.contains("walship_follower_"), "{text}");
    }

    /// A member whose operator commands record what they were asked and answer as set.
    struct Member {
        asked: Mutex<Vec<String>>,
    }

    impl NodeView for Member {
        fn status(&self) -> NodeStatus {
            primary_status()
        }
        fn max_record_bytes(&self) -> u32 {
            16
        }
        fn append(&self, _payload: Vec<u8>) -> AppendFuture {
            Box::pin(async { Ok(1) })
        }
        fn promote(&self, accept_data_loss: bool) -> OperatorFuture {
            self.asked
                .lock()
                .expect("lock")
                .push(format!("promote {accept_data_loss}"));
            Box::pin(async move {
                if accept_data_loss {
                    Ok(serde_json::json!({"promoted": "n1"}))
                } else {
                    Err(OperatorError::Refused(
                        "quorum 0: accept the data loss".into(),
                    ))
                }
            })
        }
        fn switchover(&self, to: String, timeout: Duration) -> OperatorFuture {
            self.asked
                .lock()
                .expect("lock")
                .push(format!("switchover {to} {}", timeout.as_millis()));
            Box::pin(async move {
                if to == "n2" {
                    Ok(serde_json::json!({"primary": to, "write_pause_ms": 12}))
                } else {
                    Err(OperatorError::Incomplete("did not catch up".into()))
                }
            })
        }
    }

    #[tokio::test]
    async fn operator_commands_parse_their_query_and_map_each_outcome() {
        let post = |uri: &str| {
            Request::post(uri.to_owned())
                .body(Body::empty())
                .expect("request")
        };
        let member = Arc::new(Member {
            asked: Mutex::new(Vec::new()),
        });
        let call_member = |req: Request<Body>| {
            let m: Arc<dyn NodeView> = member.clone();
            async move {
                let res = router(m).oneshot(req).await.expect("infallible");
                let code = res.status();
                let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .expect("body");
                (
                    code,
                    serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
                )
            }
        };
        let (code, body) = call_member(post("/promote")).await;
        assert_eq!(
            (code, body["error"].as_str()),
            (StatusCode::CONFLICT, Some("refused"))
        );
        let (code, _) = call_member(post("/promote?accept_data_loss=true")).await;
        assert_eq!(code, StatusCode::OK);
        let (code, body) = call_member(post("/switchover?to=n2&timeout_ms=500")).await;
        assert_eq!(
            (code, body["write_pause_ms"].as_u64()),
            (StatusCode::OK, Some(12))
        );
        let (code, body) = call_member(post("/switchover?to=n3")).await;
        assert_eq!(
            (code, body["error"].as_str()),
            (StatusCode::GATEWAY_TIMEOUT, Some("incomplete"))
        );
        let (code, _) = call_member(post("/switchover")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "no target");
        let (code, _) = call_member(post("/switchover?to=n2&timeout_ms=0")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "timeout out of range");
        let long = format!("/switchover?to={}", "x".repeat(200));
        let (code, _) = call_member(post(&long)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "bounded query");
        assert_eq!(
            *member.asked.lock().expect("lock"),
            vec![
                "promote false".to_string(),
                "promote true".into(),
                "switchover n2 500".into(),
                "switchover n3 10000".into(),
            ]
        );
        // A node that is not a cluster member takes no operator command.
        let (code, body) = call(
            fake(primary_status(), None),
            post("/promote?accept_data_loss=true"),
        )
        .await;
        assert_eq!(
            (code, body["error"].as_str()),
            (StatusCode::CONFLICT, Some("refused"))
        );
    }
}
