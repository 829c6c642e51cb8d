//! What the node does with its election core's role actions and with what its running
//! role reports: sans-IO, so that production ([`super::Node`]) and the simulator's
//! failover world decide the same way. The executor opens and closes the roles the plan
//! names; the plan never touches a file, socket or clock.

use crate::election::{Action, NodeId, Role};
use walship_wal::Lsn;

/// The role a node should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleCommand {
    /// Lead `epoch` (an epoch this node just won): open the primary role with
    /// `new_epoch = Some(epoch)` (its first record is the epoch's control record).
    Primary {
        /// The epoch won.
        epoch: u64,
    },
    /// Follow `primary` in `epoch`: open the replica role refusing any primary below
    /// `epoch` (`min_primary_epoch`).
    Follow {
        /// The node's epoch.
        epoch: u64,
        /// The primary of that epoch.
        primary: NodeId,
    },
    /// Run no role (stepped down, or no primary known in a newer epoch).
    Close,
}

/// Turns role actions into role commands, remembering what it last asked for so that
/// an unchanged role is never reopened.
#[derive(Clone, Debug)]
pub struct RolePlan {
    node_id: NodeId,
    wanted: Option<RoleCommand>,
}

impl RolePlan {
    /// A plan for node `node_id`, running no role.
    pub fn new(node_id: impl Into<NodeId>) -> RolePlan {
        RolePlan {
            node_id: node_id.into(),
            wanted: None,
        }
    }

    /// The role last asked for.
    pub fn wanted(&self) -> Option<&RoleCommand> {
        self.wanted.as_ref()
    }

    /// The role change `action` asks for, if any. `StepDown` closes the primary role at
    /// once (the executor also refuses appends before it performs anything else);
    /// `BecomePrimary` opens the primary role of the new epoch; `BecomeFollower` follows
    /// the epoch's primary, and without a known primary closes a role that belongs to an
    /// older epoch (its primary was fenced). Other actions change no role.
    pub fn on_action(&mut self, action: &Action) -> Option<RoleCommand> {
        let cmd = match action {
            Action::StepDown { .. } => RoleCommand::Close,
            Action::BecomePrimary { epoch } => RoleCommand::Primary { epoch: *epoch },
            Action::BecomeFollower {
                epoch,
                primary_hint: Some(p),
            } if *p != self.node_id => RoleCommand::Follow {
                epoch: *epoch,
                primary: p.clone(),
            },
            Action::BecomeFollower {
                epoch,
                primary_hint: None,
            } => {
                let stale = match &self.wanted {
                    Some(RoleCommand::Primary { .. }) => true,
                    Some(RoleCommand::Follow { epoch: e, .. }) => e < epoch,
                    _ => false,
                };
                if !stale {
                    return None;
                }
                RoleCommand::Close
            }
            _ => return None,
        };
        self.set(cmd)
    }

    /// Asks for `cmd` directly (shutdown, stop); `None` if it is already wanted.
    pub fn set(&mut self, cmd: RoleCommand) -> Option<RoleCommand> {
        if self.wanted.as_ref() == Some(&cmd) {
            return None;
        }
        self.wanted = Some(cmd.clone());
        Some(cmd)
    }
}

/// What the running role reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleReport {
    /// No role is running.
    Idle,
    /// The replica halted (a durable halt record was written).
    Halted(String),
    /// The role stopped on a failure of its own storage.
    Stopped(String),
    /// The role runs; its log is durable up to this lsn.
    Durable(Lsn),
}

/// What the election core must be told about the role's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `ElectionCore::halt`: the node never votes or leads until an operator acts.
    Halt(String),
    /// `ElectionCore::stop`: a fatal failure of the node's own storage.
    Stop(String),
    /// `ElectionCore::set_eligible(true)`: the log now holds everything the node
    /// acknowledged (it reached `required_lsn`, its commit watermark at start).
    Eligible,
}

/// The verdict on a role report, given the core's role and eligibility and the lsn an
/// ineligible node must reach.
pub fn verdict(
    report: &RoleReport,
    role: Role,
    eligible: bool,
    required_lsn: Lsn,
) -> Option<Verdict> {
    match report {
        RoleReport::Halted(why) if role != Role::Halted => Some(Verdict::Halt(why.clone())),
        RoleReport::Stopped(why) if role != Role::Stopped => Some(Verdict::Stop(why.clone())),
        RoleReport::Durable(lsn) if !eligible && *lsn >= required_lsn => Some(Verdict::Eligible),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::StepDownReason;

    fn follower(epoch: u64, hint: Option<&str>) -> Action {
        Action::BecomeFollower {
            epoch,
            primary_hint: hint.map(String::from),
        }
    }

    #[test]
    fn role_actions_open_each_role_once_and_close_what_an_election_outdated() {
        let mut plan = RolePlan::new("n1");
        assert_eq!(plan.on_action(&follower(1, None)), None, "nothing runs yet");
        let follow = RoleCommand::Follow {
            epoch: 1,
            primary: "n2".into(),
        };
        assert_eq!(
            plan.on_action(&follower(1, Some("n2"))),
            Some(follow.clone())
        );
        assert_eq!(
            plan.on_action(&follower(1, Some("n2"))),
            None,
            "not reopened"
        );
        assert_eq!(
            plan.on_action(&follower(1, None)),
            None,
            "same epoch: keep following"
        );
        assert_eq!(
            plan.on_action(&follower(2, None)),
            Some(RoleCommand::Close),
            "a newer epoch without a known primary: the old primary was fenced"
        );
        assert_eq!(
            plan.on_action(&Action::BecomePrimary { epoch: 3 }),
            Some(RoleCommand::Primary { epoch: 3 })
        );
        assert_eq!(
            plan.on_action(&follower(3, Some("n1"))),
            None,
            "following itself is leading"
        );
        assert_eq!(
            plan.on_action(&Action::StepDown {
                epoch: 3,
                reason: StepDownReason::LeaseExpired {
                    heard: 1,
                    needed: 2
                }
            }),
            Some(RoleCommand::Close)
        );
        assert_eq!(plan.on_action(&follower(3, None)), None, "already closed");
        assert_eq!(plan.wanted(), Some(&RoleCommand::Close));
    }

    #[test]
    fn role_reports_halt_stop_or_make_eligible_once() {
        let halted = RoleReport::Halted("divergence at lsn 5".into());
        assert_eq!(
            verdict(&halted, Role::Follower, true, 0),
            Some(Verdict::Halt("divergence at lsn 5".into()))
        );
        assert_eq!(verdict(&halted, Role::Halted, true, 0), None);
        let stopped = RoleReport::Stopped("fsync".into());
        assert_eq!(
            verdict(&stopped, Role::Primary, true, 0),
            Some(Verdict::Stop("fsync".into()))
        );
        assert_eq!(
            verdict(&RoleReport::Durable(9), Role::Follower, false, 10),
            None
        );
        assert_eq!(
            verdict(&RoleReport::Durable(10), Role::Follower, false, 10),
            Some(Verdict::Eligible)
        );
        assert_eq!(
            verdict(&RoleReport::Durable(10), Role::Follower, true, 10),
            None
        );
        assert_eq!(verdict(&RoleReport::Idle, Role::Follower, false, 0), None);
    }
}
