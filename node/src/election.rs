//! The election core: who may lead which epoch (spec/election.md).
//!
//! [`ElectionCore`] is a sans-IO state machine in the style of the primary and
//! replica cores: it owns no socket, file, thread or clock. The executor feeds
//! it inputs (`tick(now_ms)`, election messages, contact from the primary or
//! from members, eligibility, the local log head, operator commands) and
//! performs the returned [`Action`]s **in order**: a [`Action::PersistVote`]
//! must be written and fsynced ([`VoteFile::persist`]) before any
//! [`Action::Send`] that follows it leaves the node.
//!
//! What it owns: roles (follower, pre-candidate, candidate, primary, halted,
//! stopped), the epoch (= term) and the one vote per epoch, PreVote with
//! leader stickiness, randomised election timeouts, the election quorum of
//! each quorum setting ([`election_quorum`]), fencing by epoch and the
//! primary's step-down when its lease lapses. What it does not own: shipping
//! records, receipts and the commit watermark (the primary's logic; the
//! commit rule it must follow is [`committable_lsn`]), the control record a
//! new primary appends, catching up (the executor decides eligibility).
//!
//! ```
//! use walship_node::election::{
//!     Action, ElectionConfig, ElectionCore, ElectionMessage, LogPosition, StartState,
//! };
//!
//! let config = ElectionConfig {
//!     node_id: "n1".into(),
//!     voters: vec!["n1".into(), "n2".into(), "n3".into()],
//!     quorum_setting: -1,
//!     election_timeout_ms: 1000,
//!     lease_ms: 1000,
//! };
//! // A member of a formed cluster: its log holds a record (an empty log would
//! // need every voter: the bootstrap rule, spec/election.md §2.10).
//! let start = StartState { log_head: LogPosition::new(1, 4), ..StartState::fresh() };
//! let mut core = ElectionCore::new(config, start, 0, 7).expect("valid config");
//! // No primary heard for a whole (randomised) election timeout: ask for pre-votes.
//! let deadline = core.next_tick_ms().expect("a follower has an election deadline");
//! let actions = core.tick(deadline);
//! assert!(matches!(actions[0], Action::Send { msg: ElectionMessage::PreVoteRequest { epoch: 2, .. }, .. }));
//! // One pre-vote (plus our own) is a majority of 3: become a candidate of epoch 2,
//! // persisting the vote for ourselves before asking for votes.
//! let actions = core
//!     .on_message(deadline, "n2", ElectionMessage::PreVoteResponse { epoch: 2, granted: true, current_epoch: 1 })
//!     .expect("n2 is a voter");
//! assert_eq!(actions[0], Action::PersistVote { epoch: 2, voted_for: Some("n1".into()) });
//! let actions = core
//!     .on_message(deadline, "n3", ElectionMessage::VoteResponse { epoch: 2, granted: true })
//!     .expect("n3 is a voter");
//! assert_eq!(actions, vec![Action::BecomePrimary { epoch: 2 }]);
//! ```

mod inputs;
mod machine;
mod message;
mod quorum;
mod status;
mod vote_file;

use serde::{Deserialize, Serialize};

pub use inputs::{ContactRefusal, InputError, PromoteError, StartState};
pub use machine::ElectionCore;
pub use message::{Action, ElectionMessage, StepDownReason};
pub use quorum::{commit_copies, committable_lsn, election_quorum, lease_quorum, majority};
pub use status::{CampaignPhase, CampaignStatus, ElectionStatus, LeaseStatus};
pub use vote_file::{PersistedVote, VoteFile, VoteFileError, MAX_NODE_ID_BYTES, VOTE_FILE};

/// A member's id, as in the configuration (`node_id`, `members`).
pub type NodeId = String;

/// Position of the last record of a log: its epoch and its lsn. Ordered
/// lexicographically (epoch first), which is the up-to-date rule: a log
/// whose last record has a higher epoch is more up to date whatever its
/// length; with equal epochs the longer log is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// Epoch of the last record (0 for the empty log).
    pub epoch: u64,
    /// Lsn of the last record (0 for the empty log).
    pub lsn: u64,
}

impl LogPosition {
    /// The empty log.
    pub const ZERO: LogPosition = LogPosition { epoch: 0, lsn: 0 };

    /// A position.
    pub fn new(epoch: u64, lsn: u64) -> LogPosition {
        LogPosition { epoch, lsn }
    }
}

/// The role of a node, as the election core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Follows the primary of its epoch (or waits for one).
    Follower,
    /// Asks for pre-votes: would a quorum vote for it in the next epoch?
    /// Its epoch is unchanged; nothing durable happened.
    PreCandidate,
    /// Voted for itself in its epoch and asks the others for their vote.
    Candidate,
    /// Won its epoch's election; leads until it sees a higher epoch or its
    /// lease lapses.
    Primary,
    /// Halted (replication could not be shown correct): never votes or campaigns.
    Halted,
    /// Shutting down: never votes or campaigns.
    Stopped,
}

impl Role {
    /// The name used in status output (`follower`, `pre-candidate`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Primary => "primary",
            Role::Halted => "halted",
            Role::Stopped => "stopped",
        }
    }
}

/// What the election core is built from (the node's configuration; every
/// member has the same `voters`, `quorum_setting` and timeouts).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ElectionConfig {
    /// This node's id; must be one of `voters`.
    pub node_id: NodeId,
    /// Every voting member's id, this node's included (N in the quorum rules).
    pub voters: Vec<NodeId>,
    /// The quorum setting: `-1` majority, `0` local only (no automatic
    /// failover), `k > 0` static k receipts.
    pub quorum_setting: i64,
    /// Minimum election timeout; each timeout is drawn from
    /// `[election_timeout_ms, 2 * election_timeout_ms)`. Also the stickiness
    /// window: a node that heard a live primary less than this long ago
    /// refuses pre-votes.
    pub election_timeout_ms: u64,
    /// A primary that has not heard from an election quorum (itself
    /// included) for this long steps down.
    pub lease_ms: u64,
}

/// A configuration the election core cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `voters` does not contain `node_id`.
    #[error("node {node_id} is not in the voter list {voters:?}")]
    NotAVoter {
        /// This node's id.
        node_id: NodeId,
        /// The configured voters.
        voters: Vec<NodeId>,
    },
    /// A voter is listed twice.
    #[error("voter {voter} is listed more than once")]
    DuplicateVoter {
        /// The duplicated id.
        voter: NodeId,
    },
    /// A node id that is empty or longer than [`MAX_NODE_ID_BYTES`].
    #[error("node id {id:?} must be 1 to {MAX_NODE_ID_BYTES} bytes long")]
    BadNodeId {
        /// The id.
        id: NodeId,
    },
    /// A quorum setting below -1.
    #[error(
        "quorum setting {setting} is invalid: use 0 (local only), -1 (majority) or k > 0 receipts"
    )]
    InvalidQuorumSetting {
        /// The setting.
        setting: i64,
    },
    /// A zero timeout (an election every tick, or a lease that always lapses).
    #[error("{name} must be greater than 0")]
    ZeroTimeout {
        /// `election_timeout_ms` or `lease_ms`.
        name: &'static str,
    },
    /// A timeout so large that `2 * election_timeout_ms` overflows.
    #[error("election_timeout_ms {value} is too large")]
    TimeoutTooLarge {
        /// The value.
        value: u64,
    },
}

impl ElectionConfig {
    /// Checks the configuration (see [`ConfigError`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for id in std::iter::once(&self.node_id).chain(&self.voters) {
            if id.is_empty() || id.len() > MAX_NODE_ID_BYTES {
                return Err(ConfigError::BadNodeId { id: id.clone() });
            }
        }
        if !self.voters.contains(&self.node_id) {
            return Err(ConfigError::NotAVoter {
                node_id: self.node_id.clone(),
                voters: self.voters.clone(),
            });
        }
        for (i, v) in self.voters.iter().enumerate() {
            if self.voters[..i].contains(v) {
                return Err(ConfigError::DuplicateVoter { voter: v.clone() });
            }
        }
        if self.quorum_setting < -1 {
            return Err(ConfigError::InvalidQuorumSetting {
                setting: self.quorum_setting,
            });
        }
        if self.election_timeout_ms == 0 {
            return Err(ConfigError::ZeroTimeout {
                name: "election_timeout_ms",
            });
        }
        if self.election_timeout_ms > u64::MAX / 4 {
            return Err(ConfigError::TimeoutTooLarge {
                value: self.election_timeout_ms,
            });
        }
        if self.lease_ms == 0 {
            return Err(ConfigError::ZeroTimeout { name: "lease_ms" });
        }
        Ok(())
    }
}
