//! The operator's view of the election core: [`ElectionStatus`], and the
//! "blocked on" line (`need 5 of 7 votes, have 4: waiting for n4, n6`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{LogPosition, NodeId, Role};

/// Which round a campaign is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CampaignPhase {
    /// Asking for pre-votes (nothing durable happened yet).
    PreVote,
    /// Candidate: voted for itself, asking for votes.
    Vote,
}

/// A campaign in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignStatus {
    /// Pre-vote or vote.
    pub phase: CampaignPhase,
    /// The epoch asked for.
    pub epoch: u64,
    /// Voting members (N).
    pub voters: usize,
    /// Votes needed (the election quorum).
    pub need: usize,
    /// Who granted (this node included).
    pub granted: Vec<NodeId>,
    /// Who refused.
    pub refused: Vec<NodeId>,
    /// Who has not answered.
    pub waiting: Vec<NodeId>,
}

impl fmt::Display for CampaignStatus {
    /// `need 5 of 7 votes, have 4: waiting for n4, n6; refused by n7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.phase {
            CampaignPhase::PreVote => "pre-votes",
            CampaignPhase::Vote => "votes",
        };
        write!(
            f,
            "need {} of {} {what} for epoch {}, have {}",
            self.need,
            self.voters,
            self.epoch,
            self.granted.len()
        )?;
        let mut sep = ":";
        if !self.waiting.is_empty() {
            write!(f, "{sep} waiting for {}", self.waiting.join(", "))?;
            sep = ";";
        }
        if !self.refused.is_empty() {
            write!(f, "{sep} refused by {}", self.refused.join(", "))?;
        }
        Ok(())
    }
}

/// A primary's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// Members heard within `lease_ms`, this node included.
    pub heard: usize,
    /// Members needed to keep leading.
    pub need: usize,
    /// The lease.
    pub lease_ms: u64,
}

/// What [`super::ElectionCore::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionStatus {
    /// This node.
    pub node_id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its epoch.
    pub epoch: u64,
    /// Its vote in that epoch.
    pub voted_for: Option<NodeId>,
    /// The primary of that epoch, if known.
    pub primary: Option<NodeId>,
    /// Its last record.
    pub log_head: LogPosition,
    /// Whether it may vote and lead.
    pub eligible: bool,
    /// Whether the operator paused campaigning.
    pub paused: bool,
    /// False under quorum 0: only an operator promotion makes a primary.
    pub automatic_failover: bool,
    /// The campaign in progress, if any.
    pub campaign: Option<CampaignStatus>,
    /// The lease, on a primary.
    pub lease: Option<LeaseStatus>,
}

impl ElectionStatus {
    /// What keeps this node from leading or following, in one line for an
    /// operator, or `None` when nothing does (a primary holding its lease, or
    /// a follower of a known primary).
    pub fn blocked_on(&self) -> Option<String> {
        match self.role {
            Role::Halted => {
                return Some("halted: never votes or campaigns until the halt is cleared".into())
            }
            Role::Stopped => return Some("stopped".into()),
            _ => {}
        }
        if !self.eligible {
            return Some(
                "ineligible: its log ends below what it acknowledged; it neither votes nor leads until it caught up"
                    .into(),
            );
        }
        if let Some(c) = &self.campaign {
            return Some(c.to_string());
        }
        if let Some(l) = &self.lease {
            return (l.heard < l.need).then(|| {
                format!(
                    "lease: heard {} of the {} members needed within {} ms",
                    l.heard, l.need, l.lease_ms
                )
            });
        }
        if self.primary.is_some() {
            return None;
        }
        if self.paused {
            return Some("no primary known; campaigning paused by the operator".into());
        }
        if !self.automatic_failover {
            return Some(
                "no primary known; quorum 0 has no automatic failover: promote a node with accept_data_loss"
                    .into(),
            );
        }
        Some(format!(
            "no primary known in epoch {}; waiting for an election timeout",
            self.epoch
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_on_names_votes_needed_and_who_is_missing() {
        let c = CampaignStatus {
            phase: CampaignPhase::Vote,
            epoch: 9,
            voters: 7,
            need: 5,
            granted: ["n1", "n2", "n3", "n5"].map(String::from).to_vec(),
            refused: vec!["n7".into()],
            waiting: vec!["n4".into(), "n6".into()],
        };
        assert_eq!(
            c.to_string(),
            "need 5 of 7 votes for epoch 9, have 4: waiting for n4, n6; refused by n7"
        );
    }
}
