//! What the election core takes at start ([`StartState`]) and the typed
//! refusals of its inputs.

use super::{LogPosition, NodeId, PersistedVote, Role};

/// What a (re)starting node brings to its election core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartState {
    /// The vote loaded from `state/vote` ([`super::VoteFile::load`]). A node
    /// whose vote file is damaged has no `PersistedVote` and so no core.
    pub vote: PersistedVote,
    /// Epoch and lsn of the last record of the recovered log.
    pub log_head: LogPosition,
    /// Whether the node holds everything it ever acknowledged (its log ends
    /// at or above its commit watermark and every receipt it sent, and
    /// recovery cut nothing). An ineligible node neither votes nor leads
    /// until the executor calls [`ElectionCore::set_eligible`].
    pub eligible: bool,
}

impl StartState {
    /// A node that never took part: epoch 0, no vote, empty log, eligible.
    pub fn fresh() -> StartState {
        StartState {
            vote: PersistedVote::default(),
            log_head: LogPosition::ZERO,
            eligible: true,
        }
    }
}

/// An input from a peer the core cannot take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The sender is not a configured voter (or is this node itself).
    #[error("message from {peer}, which is not another voting member")]
    UnknownPeer {
        /// The claimed sender.
        peer: NodeId,
    },
}

/// Why contact from a primary is refused. The executor answers the primary
/// with `Refuse{StalePrimary}` (or the matching refusal) and stores nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContactRefusal {
    /// The sender is not a configured voter (or is this node itself).
    #[error("contact from {peer}, which is not another voting member")]
    UnknownPeer {
        /// The claimed sender.
        peer: NodeId,
    },
    /// The primary's epoch is below this node's: it was fenced by an election.
    #[error("stale primary: epoch {primary_epoch} is below this node's epoch {current_epoch}")]
    StalePrimary {
        /// The primary's epoch.
        primary_epoch: u64,
        /// This node's epoch (the primary adopts it and steps down).
        current_epoch: u64,
    },
    /// Another node already leads (or this node leads) the same epoch: an
    /// invariant of the election is broken somewhere; refuse rather than
    /// follow two primaries.
    #[error("{claimed} claims epoch {epoch}, whose primary is {known}")]
    ConflictingPrimary {
        /// The epoch.
        epoch: u64,
        /// Who claims it.
        claimed: NodeId,
        /// The primary this node knows for it.
        known: NodeId,
    },
    /// The node is halted or stopping.
    #[error("this node is {} and follows no primary", role.as_str())]
    NotRunning {
        /// Its role.
        role: Role,
    },
}

/// Why an operator promotion is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromoteError {
    /// Quorum 0: an acknowledged record may exist on the old primary alone.
    #[error("quorum 0 (local-only commits): promotion may lose acknowledged records; repeat with accept_data_loss")]
    DataLossNotAccepted,
    /// The node is not eligible (its log lacks what it acknowledged).
    #[error(
        "this node is not eligible: its log ends below what it acknowledged; let it catch up first"
    )]
    Ineligible,
    /// A learner: it does not vote, so it cannot lead (promote it to voter first).
    #[error("this node is a learner in the newest configuration: make it a voter first (walship ctl add --voter / promote-voter)")]
    NotAVoter,
    /// Already primary.
    #[error("this node is already the primary of epoch {epoch}")]
    AlreadyPrimary {
        /// Its epoch.
        epoch: u64,
    },
    /// Halted or stopping (or, for a switchover, not the primary).
    #[error("this node is {} and cannot be promoted or hand over", role.as_str())]
    NotRunning {
        /// Its role.
        role: Role,
    },
    /// A switchover target that is not another voting member.
    #[error("switchover target {target} is not another voting member")]
    UnknownTarget {
        /// The named target.
        target: NodeId,
    },
}
