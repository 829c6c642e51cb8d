//! Election messages (exchanged between members) and the actions the core
//! asks its executor to perform. The wire codec is not here: these are plain
//! serde types, framed by walship-wire later.

use serde::{Deserialize, Serialize};

use super::{LogPosition, NodeId};

/// A message between members about elections. The sender is not in the
/// message: the transport knows it (mutual TLS names the peer), and passes
/// it to [`super::ElectionCore::on_message`] as `from`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElectionMessage {
    /// "Would you vote for me in `epoch`?" — sent before campaigning, with
    /// `epoch` = the sender's epoch + 1. Changes nothing at the receiver
    /// (no epoch adoption, nothing durable), so a node that cannot win (it is
    /// behind, or the others still hear a live primary) never disturbs one.
    PreVoteRequest {
        /// The epoch the sender would campaign for.
        epoch: u64,
        /// The sender's last record.
        last: LogPosition,
    },
    /// Answer to a [`ElectionMessage::PreVoteRequest`].
    PreVoteResponse {
        /// The epoch of the request answered.
        epoch: u64,
        /// Whether the responder would vote.
        granted: bool,
        /// The responder's epoch (a sender behind it adopts it).
        current_epoch: u64,
    },
    /// "Vote for me in `epoch`": the sender is a candidate that voted for
    /// itself in `epoch` (durably).
    VoteRequest {
        /// The candidate's epoch.
        epoch: u64,
        /// The candidate's last record (for the up-to-date rule).
        last: LogPosition,
    },
    /// Answer to a [`ElectionMessage::VoteRequest`]. A granted vote is sent
    /// only after it was persisted.
    VoteResponse {
        /// The responder's epoch after handling the request.
        epoch: u64,
        /// Whether the vote is granted.
        granted: bool,
    },
    /// "I lead `epoch`": sent by a primary to every other voter every
    /// heartbeat interval (`max(1, min(election_timeout_ms, lease_ms) / 4)`).
    /// The receiver treats it as contact from the primary of `epoch`
    /// ([`super::ElectionCore::on_primary_contact`]) and answers
    /// [`ElectionMessage::HeartbeatAck`].
    Heartbeat {
        /// The primary's epoch.
        epoch: u64,
        /// The primary's commit watermark, as its executor last set it
        /// ([`super::ElectionCore::set_commit_lsn`]); informational.
        commit_lsn: u64,
    },
    /// Answer to a [`ElectionMessage::Heartbeat`]: the responder's epoch
    /// after handling it. The primary counts an ack of its epoch as contact
    /// (lease); an ack of a higher epoch (the heartbeat was stale) makes it
    /// step down.
    HeartbeatAck {
        /// The responder's epoch.
        epoch: u64,
    },
}

/// Why a primary stops leading.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepDownReason {
    /// A message of a higher epoch arrived: another election happened (fencing).
    HigherEpoch {
        /// The higher epoch.
        epoch: u64,
        /// Who carried it.
        from: NodeId,
    },
    /// Fewer than the lease quorum of members (itself included) were heard
    /// from within `lease_ms`.
    LeaseExpired {
        /// Members heard within the lease, itself included.
        heard: usize,
        /// Members needed.
        needed: usize,
    },
    /// The executor marked the node ineligible (its log lacks what it acknowledged).
    Ineligible,
    /// The node halted.
    Halted,
    /// The node is stopping.
    Stopped,
}

/// What the executor must do, in the order returned. Every input returns its
/// actions in the canonical order `StepDown`, `PersistVote`,
/// `BecomeFollower`/`BecomePrimary`, `Send`*.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Write `{epoch, voted_for}` to `state/vote` (write, fsync, rename,
    /// fsync dir: [`super::VoteFile::persist`]) BEFORE performing any later
    /// action of this batch and before acting in `epoch` in any other way
    /// (storing records of its primary, sending receipts). A failure is
    /// fatal: stop the node ([`super::ElectionCore::stop`]) and send nothing.
    PersistVote {
        /// The node's epoch.
        epoch: u64,
        /// Its vote in that epoch, if any.
        voted_for: Option<NodeId>,
    },
    /// Send `msg` to member `to`. Loss, duplication and reordering are
    /// tolerated.
    Send {
        /// The receiving member.
        to: NodeId,
        /// The message.
        msg: ElectionMessage,
    },
    /// This node won `epoch`: record `{epoch, log end + 1}` in the epoch
    /// history, append the epoch's control record, start shipping. Its
    /// commit watermark may advance only by [`super::committable_lsn`].
    BecomePrimary {
        /// The epoch won.
        epoch: u64,
    },
    /// This node follows in `epoch` (its role, epoch or known primary
    /// changed): refuse appends with `NotPrimary { epoch, primary_hint }`,
    /// refuse records of primaries below `epoch`.
    BecomeFollower {
        /// The node's epoch.
        epoch: u64,
        /// The primary of `epoch` if known.
        primary_hint: Option<NodeId>,
    },
    /// This node was primary of `epoch` and no longer is: stop acknowledging
    /// appends at once (waiters get `NotPrimary`).
    StepDown {
        /// The epoch it led.
        epoch: u64,
        /// Why.
        reason: StepDownReason,
    },
}
