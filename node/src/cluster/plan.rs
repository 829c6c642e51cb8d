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
    /// acknowledged (it reached [`RestartRule::required_lsn`]).
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

/// The restart rule (spec/election.md §2.8): what a (re)starting node must hold before it
/// votes or leads. `required_lsn` is the higher of its persisted commit watermark and its
/// persisted acknowledged mark ([`AckedMark`]); the node is eligible at start only if its
/// recovered log ends at or above it, and otherwise once its running role reports a durable
/// lsn at or above it ([`verdict`]).
///
/// A torn tail cut at open does not by itself make a node ineligible: bytes that were
/// synced are never torn on an honest disk, so a cut only removes writes that were never
/// acknowledged; what a lying disk loses is caught by the two persisted lsns (a lower
/// bound of what was acknowledged, lagging by at most one persist interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartRule {
    /// The last lsn of the log recovered at open.
    pub log_end: Lsn,
    /// `state/commit` (0 when absent).
    pub commit_lsn: Lsn,
    /// `state/acked` (0 when absent).
    pub acked_lsn: Lsn,
}

impl RestartRule {
    /// The lsn the node's log must reach before it votes or leads.
    pub fn required_lsn(&self) -> Lsn {
        self.commit_lsn.max(self.acked_lsn)
    }

    /// Whether the node may vote and lead from its start.
    pub fn eligible_at_start(&self) -> bool {
        self.log_end >= self.required_lsn()
    }
}

/// What the running role has acknowledged, for the [`AckedMark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleAck {
    /// The primary role: what it acknowledged to clients is its commit watermark (a
    /// record above it was acknowledged to nobody).
    Primary {
        /// The primary's commit watermark.
        commit_lsn: Lsn,
    },
    /// The replica role: its receipts report its durable lsn (the durable lsn is an upper
    /// bound of every receipt sent, so the mark never misses one).
    Replica {
        /// The replica's durable lsn.
        durable_lsn: Lsn,
    },
    /// No role runs: nothing new was acknowledged.
    Idle,
}

impl RoleAck {
    /// The highest lsn the role acknowledged (0 for [`RoleAck::Idle`]).
    pub fn acknowledged(&self) -> Lsn {
        match *self {
            RoleAck::Primary { commit_lsn } => commit_lsn,
            RoleAck::Replica { durable_lsn } => durable_lsn,
            RoleAck::Idle => 0,
        }
    }
}

/// The acknowledged mark: the highest lsn this node acknowledged, and when to persist it
/// to `state/acked` (spec/election.md §2.8, §5.1). Off the commit path: the executor
/// persists it at most once per `interval_ms` when it has grown, and at a clean shutdown,
/// so the persisted mark is a lower bound that lags by at most one interval. It never
/// goes down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedMark {
    persisted: Lsn,
    highest: Lsn,
    interval_ms: u64,
    next_ms: u64,
}

impl AckedMark {
    /// The mark as read from `state/acked` at start (0 when absent), persisted at most
    /// once per `interval_ms` (the heartbeat interval).
    pub fn new(persisted: Lsn, interval_ms: u64) -> AckedMark {
        AckedMark {
            persisted,
            highest: persisted,
            interval_ms,
            next_ms: 0,
        }
    }

    /// The last mark made durable.
    pub fn persisted(&self) -> Lsn {
        self.persisted
    }

    /// The highest lsn acknowledged so far (durable or not yet).
    pub fn highest(&self) -> Lsn {
        self.highest
    }

    /// Takes what the running role reports it acknowledged.
    pub fn observe(&mut self, ack: RoleAck) {
        self.highest = self.highest.max(ack.acknowledged());
    }

    /// The mark to persist now, if it grew and the interval since the last persist passed.
    pub fn due(&self, now_ms: u64) -> Option<Lsn> {
        (self.highest > self.persisted && now_ms >= self.next_ms).then_some(self.highest)
    }

    /// The mark to persist at a clean shutdown, if it grew since the last persist.
    pub fn at_shutdown(&self) -> Option<Lsn> {
        (self.highest > self.persisted).then_some(self.highest)
    }

    /// `lsn` was made durable at `now_ms` (write, fsync, rename, fsync dir).
    pub fn persisted_at(&mut self, lsn: Lsn, now_ms: u64) {
        assert!(
            lsn >= self.persisted && lsn <= self.highest,
            "invariant: the acknowledged mark persisted ({lsn}) never goes down (was {}) nor passes what was acknowledged ({})",
            self.persisted,
            self.highest
        );
        self.persisted = lsn;
        self.next_ms = now_ms.saturating_add(self.interval_ms);
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

    #[test]
    fn restart_requires_the_higher_of_the_commit_watermark_and_the_acknowledged_mark() {
        let rule = RestartRule {
            log_end: 10,
            commit_lsn: 8,
            acked_lsn: 12,
        };
        assert_eq!(rule.required_lsn(), 12);
        assert!(
            !rule.eligible_at_start(),
            "the log lost acknowledged lsn 11..=12"
        );
        let rule = RestartRule {
            acked_lsn: 10,
            ..rule
        };
        assert!(rule.eligible_at_start());
        let rule = RestartRule {
            log_end: 7,
            commit_lsn: 8,
            acked_lsn: 0,
        };
        assert_eq!(rule.required_lsn(), 8);
        assert!(!rule.eligible_at_start());
        // Once the replica role re-fetched past the requirement, the node is eligible.
        assert_eq!(
            verdict(&RoleReport::Durable(11), Role::Follower, false, 12),
            None
        );
        assert_eq!(
            verdict(&RoleReport::Durable(12), Role::Follower, false, 12),
            Some(Verdict::Eligible)
        );
    }

    #[test]
    fn acked_mark_is_persisted_at_most_once_per_interval_when_grown_and_at_shutdown() {
        let mut m = AckedMark::new(5, 100);
        assert_eq!(m.due(0), None, "nothing new");
        m.observe(RoleAck::Replica { durable_lsn: 9 });
        assert_eq!(m.due(0), Some(9));
        m.persisted_at(9, 0);
        m.observe(RoleAck::Replica { durable_lsn: 12 });
        assert_eq!(m.due(50), None, "not before the interval passed");
        assert_eq!(m.due(100), Some(12));
        m.observe(RoleAck::Primary { commit_lsn: 11 });
        assert_eq!(m.highest(), 12, "never goes down");
        m.observe(RoleAck::Idle);
        assert_eq!(m.at_shutdown(), Some(12));
        m.persisted_at(12, 120);
        assert_eq!(
            (m.persisted(), m.at_shutdown(), m.due(1000)),
            (12, None, None)
        );
    }
}
