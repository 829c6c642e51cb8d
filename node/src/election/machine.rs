//! [`ElectionCore`]: the election state machine (spec/election.md §2).

use std::collections::{BTreeMap, BTreeSet};

use super::inputs::{ContactRefusal, InputError, PromoteError, StartState};
use super::message::{Action, ElectionMessage, StepDownReason};
use super::quorum::{election_quorum, lease_quorum, majority};
use super::status::{CampaignPhase, CampaignStatus, ElectionStatus, LeaseStatus};
use super::{ConfigError, ElectionConfig, LogPosition, NodeId, Role};

/// Votes being collected (pre-votes or votes) in one round.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Tally {
    phase: CampaignPhase,
    /// The epoch asked for (the pre-vote's proposed epoch, or the candidate's epoch).
    epoch: u64,
    granted: BTreeSet<NodeId>,
    refused: BTreeSet<NodeId>,
}

/// Actions of one input, assembled in the canonical order at the end.
#[derive(Default)]
struct Out {
    step_down: Option<Action>,
    persist: bool,
    role_change: Option<Action>,
    sends: Vec<Action>,
}

/// The sans-IO election state machine of one member. See the module docs of
/// [`crate::election`] and spec/election.md.
///
/// Deterministic: the same inputs (with the same `now_ms` values and seed)
/// give the same actions. `Clone + Hash + Eq` so that a model checker can
/// enumerate its states.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ElectionCore {
    config: ElectionConfig,
    /// `election_quorum(N, setting)`: `None` = no automatic elections.
    election_quorum: Option<usize>,
    lease_quorum: usize,
    role: Role,
    epoch: u64,
    voted_for: Option<NodeId>,
    primary: Option<NodeId>,
    log_head: LogPosition,
    eligible: bool,
    paused: bool,
    rng: u64,
    /// When a follower/pre-candidate/candidate starts the next round.
    election_deadline_ms: u64,
    /// When a primary of our epoch was last heard (stickiness).
    last_primary_contact_ms: Option<u64>,
    tally: Option<Tally>,
    /// Primary only: when each other voter was last heard in our epoch.
    member_contact_ms: BTreeMap<NodeId, u64>,
    /// Primary only: when the next heartbeats are due.
    next_heartbeat_ms: u64,
    /// The commit watermark heartbeats carry (set by the executor).
    commit_lsn: u64,
    /// Members that receive the log and heartbeats but neither vote nor
    /// campaign (spec/membership.md): from [`ElectionCore::set_membership`].
    learners: BTreeSet<NodeId>,
    /// The incarnation each voter's votes must come from (absent or 0: any),
    /// from the newest configuration.
    incarnations: BTreeMap<NodeId, u64>,
}

impl ElectionCore {
    /// A core for a (re)starting node: always a follower, in the persisted
    /// epoch with the persisted vote — or, if the log's last record is of a
    /// newer epoch than the vote file (a data directory written before vote
    /// files existed), in that epoch without a vote (the file only grows, so
    /// the node never voted in it). `seed` drives the randomised election
    /// timeouts (give every node and every start a different one).
    pub fn new(
        config: ElectionConfig,
        start: StartState,
        now_ms: u64,
        seed: u64,
    ) -> Result<ElectionCore, ConfigError> {
        config.validate()?;
        let n = config.voters.len();
        let (epoch, voted_for) = if start.log_head.epoch > start.vote.epoch {
            (start.log_head.epoch, None)
        } else {
            (start.vote.epoch, start.vote.voted_for)
        };
        let mut core = ElectionCore {
            election_quorum: election_quorum(n, config.quorum_setting),
            lease_quorum: lease_quorum(n, config.quorum_setting),
            role: Role::Follower,
            epoch,
            voted_for,
            primary: None,
            log_head: start.log_head,
            eligible: start.eligible,
            paused: false,
            rng: seed,
            election_deadline_ms: 0,
            last_primary_contact_ms: None,
            tally: None,
            member_contact_ms: BTreeMap::new(),
            next_heartbeat_ms: 0,
            commit_lsn: 0,
            learners: BTreeSet::new(),
            incarnations: BTreeMap::new(),
            config,
        };
        core.reset_election_deadline(now_ms);
        tracing::info!(node = %core.config.node_id, epoch = core.epoch, voted_for = ?core.voted_for, eligible = core.eligible, "election core started as follower");
        Ok(core)
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The vote in the current epoch.
    pub fn voted_for(&self) -> Option<&NodeId> {
        self.voted_for.as_ref()
    }

    /// The primary of the current epoch, if known (this node when primary).
    pub fn primary(&self) -> Option<&NodeId> {
        self.primary.as_ref()
    }

    /// When the executor must call [`ElectionCore::tick`] next (absolute
    /// ms), or `None` if no timer is pending (halted, stopped, or a follower
    /// that may not campaign: quorum 0, paused or ineligible).
    pub fn next_tick_ms(&self) -> Option<u64> {
        match self.role {
            Role::Halted | Role::Stopped => None,
            Role::Primary => {
                // A single voter has nobody to send heartbeats to.
                let heartbeat = (self.config.voters.len() > 1 || !self.learners.is_empty())
                    .then_some(self.next_heartbeat_ms);
                match (self.lease_deadline_ms(), heartbeat) {
                    (Some(l), Some(h)) => Some(l.min(h)),
                    (l, h) => l.or(h),
                }
            }
            // A candidate either retries or (promoted while it may not
            // campaign on its own) gives up at its deadline.
            Role::Candidate => Some(self.election_deadline_ms),
            Role::Follower | Role::PreCandidate => {
                self.may_campaign().then_some(self.election_deadline_ms)
            }
        }
    }

    /// The interval between a primary's heartbeats:
    /// `max(1, min(election_timeout_ms, lease_ms) / 4)`.
    pub fn heartbeat_ms(&self) -> u64 {
        (self.config.election_timeout_ms.min(self.config.lease_ms) / 4).max(1)
    }

    /// The commit watermark the next heartbeats carry (the executor's
    /// number; the core does not interpret it).
    pub fn set_commit_lsn(&mut self, commit_lsn: u64) {
        self.commit_lsn = commit_lsn;
    }

    /// The newest configuration in this node's log changed (spec/membership.md
    /// rule 1: elections count votes among its voters, committed or not).
    /// `voters` with the incarnation each must vote from (0: any), `learners`
    /// receive heartbeats only. A node that is not a voter stops campaigning
    /// (a candidate or pre-candidate becomes a follower) and never starts
    /// again while it is not one; a primary keeps leading (a configuration
    /// that removes or demotes the primary is refused where it is proposed).
    /// An empty `voters` is a broken invariant of the caller (a configuration
    /// has at least one voter) and changes nothing.
    pub fn set_membership(
        &mut self,
        now_ms: u64,
        voters: &[(NodeId, u64)],
        learners: &[NodeId],
    ) -> Vec<Action> {
        let mut out = Out::default();
        if voters.is_empty() {
            tracing::error!(node = %self.config.node_id, "a configuration without voters: ignored");
            return Vec::new();
        }
        let ids: Vec<NodeId> = voters.iter().map(|(id, _)| id.clone()).collect();
        if ids != self.config.voters || learners.iter().ne(self.learners.iter()) {
            tracing::info!(node = %self.config.node_id, epoch = self.epoch, voters = ?ids, ?learners, "membership changed");
        }
        let n = ids.len();
        self.config.voters = ids;
        self.learners = learners
            .iter()
            .filter(|l| !self.config.voters.contains(l))
            .cloned()
            .collect();
        self.incarnations = voters
            .iter()
            .filter(|(_, inc)| *inc != 0)
            .cloned()
            .collect();
        self.election_quorum = election_quorum(n, self.config.quorum_setting);
        self.lease_quorum = lease_quorum(n, self.config.quorum_setting);
        // Learners' contacts are kept too: a learner promoted to voter heard this primary
        // when it acked, and it grants no pre-vote while it hears from one (the same rule
        // as a voter), so its last ack renews the lease from the moment it votes.
        let (voters, learners) = (&self.config.voters, &self.learners);
        self.member_contact_ms
            .retain(|id, _| voters.contains(id) || learners.contains(id));
        if !self.is_voter() && matches!(self.role, Role::PreCandidate | Role::Candidate) {
            tracing::info!(node = %self.config.node_id, epoch = self.epoch, "no longer a voter: campaign abandoned");
            self.role = Role::Follower;
            self.tally = None;
            out.role_change = Some(Action::BecomeFollower {
                epoch: self.epoch,
                primary_hint: self.primary.clone(),
            });
            self.reset_election_deadline(now_ms);
        }
        self.finish(out)
    }

    /// Whether this node votes in its newest configuration.
    pub fn is_voter(&self) -> bool {
        self.config.voters.contains(&self.config.node_id)
    }

    /// The learners of the newest configuration.
    pub fn learners(&self) -> impl Iterator<Item = &NodeId> {
        self.learners.iter()
    }

    /// An election message from member `from`, sent by its data directory's
    /// incarnation `incarnation` (0: unknown). A granted vote or pre-vote from
    /// a voter whose incarnation is not the one the newest configuration
    /// names counts as refused: a node that lost its disk may have lost
    /// records it once acknowledged, so its votes are not the old member's
    /// (spec/membership.md §3, "Incarnations").
    pub fn on_message_from(
        &mut self,
        now_ms: u64,
        from: &str,
        incarnation: u64,
        msg: ElectionMessage,
    ) -> Result<Vec<Action>, InputError> {
        let expected = self.incarnations.get(from).copied().unwrap_or(0);
        let msg = match msg {
            ElectionMessage::VoteResponse {
                epoch,
                granted: true,
            } if expected != 0 && incarnation != expected => {
                tracing::warn!(node = %self.config.node_id, epoch, from, expected, incarnation, "a vote from another incarnation of a voter does not count");
                ElectionMessage::VoteResponse {
                    epoch,
                    granted: false,
                }
            }
            ElectionMessage::PreVoteResponse {
                epoch,
                granted: true,
                current_epoch,
            } if expected != 0 && incarnation != expected => ElectionMessage::PreVoteResponse {
                epoch,
                granted: false,
                current_epoch,
            },
            other => other,
        };
        self.on_message(now_ms, from, msg)
    }

    /// Timers: a primary whose lease lapsed steps down, else sends
    /// [`ElectionMessage::Heartbeat`] to every other voter when they are due
    /// (first at the tick right after `BecomePrimary`: `next_tick_ms` is
    /// then due at once); a follower (or pre-candidate, candidate) whose
    /// election deadline passed starts a pre-vote round.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut out = Out::default();
        match self.role {
            Role::Halted | Role::Stopped => {}
            Role::Primary => {
                let heard = self.members_heard(now_ms);
                if heard < self.lease_quorum {
                    tracing::warn!(node = %self.config.node_id, epoch = self.epoch, heard, needed = self.lease_quorum, lease_ms = self.config.lease_ms, "lease lapsed: stepping down");
                    self.step_down(
                        now_ms,
                        StepDownReason::LeaseExpired {
                            heard,
                            needed: self.lease_quorum,
                        },
                        &mut out,
                    );
                } else if now_ms >= self.next_heartbeat_ms {
                    self.next_heartbeat_ms = now_ms.saturating_add(self.heartbeat_ms());
                    let msg = ElectionMessage::Heartbeat {
                        epoch: self.epoch,
                        commit_lsn: self.commit_lsn,
                    };
                    // Learners follow the primary too (they vote for nobody).
                    for peer in self
                        .peers()
                        .into_iter()
                        .chain(self.learners.iter().cloned())
                    {
                        out.send(&peer, msg.clone());
                    }
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if now_ms >= self.election_deadline_ms {
                    if self.may_campaign() {
                        self.start_pre_vote(now_ms, &mut out);
                    } else if self.role == Role::Candidate {
                        // A promoted candidate under quorum 0 that did not win:
                        // give up; the operator may promote again.
                        tracing::warn!(node = %self.config.node_id, epoch = self.epoch, "promotion did not win its epoch before the election timeout");
                        self.abandon_campaign(now_ms, &mut out);
                    }
                }
            }
        }
        self.finish(out)
    }

    /// A valid contact from `primary` claiming `epoch` (records, or a
    /// heartbeat, of a session the executor accepted). `Ok` = follow it:
    /// its records may be stored once the returned actions are performed.
    /// `Err` = refuse it (and store nothing).
    pub fn on_primary_contact(
        &mut self,
        now_ms: u64,
        epoch: u64,
        primary: &str,
    ) -> Result<Vec<Action>, ContactRefusal> {
        let mut out = Out::default();
        self.primary_contact(now_ms, epoch, primary, &mut out)?;
        Ok(self.finish(out))
    }

    /// A member `from` answered this node in `epoch` (a receipt, a
    /// heartbeat reply, a `Refuse{StalePrimary}` carrying its epoch). A
    /// higher epoch fences this node; on a primary, a same-epoch contact
    /// renews its lease.
    pub fn on_member_contact(
        &mut self,
        now_ms: u64,
        from: &str,
        epoch: u64,
    ) -> Result<Vec<Action>, InputError> {
        self.check_peer(from)?;
        let mut out = Out::default();
        if matches!(self.role, Role::Halted | Role::Stopped) {
            return Ok(Vec::new());
        }
        self.member_contact(now_ms, from, epoch, &mut out);
        Ok(self.finish(out))
    }

    /// An election message from member `from`.
    pub fn on_message(
        &mut self,
        now_ms: u64,
        from: &str,
        msg: ElectionMessage,
    ) -> Result<Vec<Action>, InputError> {
        // A heartbeat is contact from a primary, which a node follows whatever its
        // newest configuration lists (Raft processes a leader's RPCs without
        // consulting its configuration): a node holding an uncommitted
        // configuration record that removed the member now leading would otherwise
        // never follow it, so never learn that the record was discarded, and never
        // converge. Following grants no vote; the replication handshake decides
        // what happens to its log (a diverging suffix halts it, FM-F.3).
        let heartbeat = matches!(msg, ElectionMessage::Heartbeat { .. });
        if !heartbeat || from == self.config.node_id {
            self.check_peer(from)?;
        }
        let mut out = Out::default();
        if matches!(self.role, Role::Halted | Role::Stopped) {
            return Ok(Vec::new());
        }
        match msg {
            ElectionMessage::PreVoteRequest { epoch, last } => {
                let granted = self.would_grant_pre_vote(now_ms, epoch, last);
                tracing::debug!(node = %self.config.node_id, from, epoch, granted, "pre-vote request");
                out.send(
                    from,
                    ElectionMessage::PreVoteResponse {
                        epoch,
                        granted,
                        current_epoch: self.epoch,
                    },
                );
            }
            ElectionMessage::PreVoteResponse {
                epoch,
                granted,
                current_epoch,
            } => {
                if current_epoch > self.epoch {
                    self.adopt_epoch(now_ms, current_epoch, from, None, &mut out);
                } else if self.role == Role::PreCandidate
                    && self.record_answer(CampaignPhase::PreVote, epoch, from, granted)
                {
                    self.start_candidacy(now_ms, &mut out);
                }
            }
            ElectionMessage::VoteRequest { epoch, last } => {
                if epoch > self.epoch {
                    self.adopt_epoch(now_ms, epoch, from, None, &mut out);
                }
                let granted = self.grant_vote(now_ms, epoch, from, last, &mut out);
                tracing::debug!(node = %self.config.node_id, from, epoch, granted, "vote request");
                out.send(
                    from,
                    ElectionMessage::VoteResponse {
                        epoch: self.epoch,
                        granted,
                    },
                );
            }
            ElectionMessage::VoteResponse { epoch, granted } => {
                if epoch > self.epoch {
                    self.adopt_epoch(now_ms, epoch, from, None, &mut out);
                } else if self.role == Role::Candidate
                    && self.record_answer(CampaignPhase::Vote, epoch, from, granted)
                {
                    self.become_primary(now_ms, &mut out);
                }
            }
            ElectionMessage::Heartbeat { epoch, commit_lsn } => {
                match self.follow_contact(now_ms, epoch, from, &mut out) {
                    // Followed, or stale (the ack's higher epoch fences the
                    // sender): answer with our epoch after handling it.
                    Ok(()) | Err(ContactRefusal::StalePrimary { .. }) => {
                        tracing::trace!(node = %self.config.node_id, from, epoch, commit_lsn, "heartbeat");
                        out.send(from, ElectionMessage::HeartbeatAck { epoch: self.epoch });
                    }
                    Err(refusal) => {
                        tracing::warn!(node = %self.config.node_id, from, epoch, %refusal, "heartbeat refused");
                    }
                }
            }
            ElectionMessage::HeartbeatAck { epoch } => {
                self.member_contact(now_ms, from, epoch, &mut out);
            }
            ElectionMessage::TimeoutNow { epoch } => {
                let from_our_primary = epoch == self.epoch
                    && self.role == Role::Follower
                    && self.primary.as_deref() == Some(from);
                // A hand-over is an operator act: it is taken while paused, like `promote`.
                if from_our_primary && self.eligible && self.is_voter() {
                    tracing::info!(node = %self.config.node_id, from, epoch, "hand-over from the primary: campaigning now");
                    self.start_candidacy(now_ms, &mut out);
                } else {
                    tracing::warn!(node = %self.config.node_id, from, epoch, role = self.role.as_str(), eligible = self.eligible, "hand-over request ignored: not from the primary this node follows, or it may not campaign");
                }
            }
        }
        Ok(self.finish(out))
    }

    /// The epoch and lsn of the local log's last record changed (an append,
    /// records received, a rewind by the recovery tool).
    ///
    /// Panics if `head.epoch` is above the node's epoch: records are stored
    /// only after the core accepted their epoch (`on_primary_contact`, or
    /// `BecomePrimary`), so such a head is a broken executor invariant.
    pub fn set_log_head(&mut self, head: LogPosition) {
        assert!(
            head.epoch <= self.epoch,
            "invariant: the log holds no record of an epoch above the node's epoch {} (head {head:?})",
            self.epoch
        );
        self.log_head = head;
    }

    /// The local log's last record as the core knows it.
    pub fn log_head(&self) -> LogPosition {
        self.log_head
    }

    /// The executor's verdict: does this node hold everything it ever
    /// acknowledged? An ineligible node refuses every vote and pre-vote and
    /// never campaigns; an ineligible primary steps down.
    pub fn set_eligible(&mut self, now_ms: u64, eligible: bool) -> Vec<Action> {
        let mut out = Out::default();
        if self.eligible != eligible {
            tracing::info!(node = %self.config.node_id, eligible, "eligibility changed");
        }
        self.eligible = eligible;
        if eligible {
            self.reset_election_deadline(now_ms);
        } else {
            match self.role {
                Role::Primary => self.step_down(now_ms, StepDownReason::Ineligible, &mut out),
                Role::PreCandidate | Role::Candidate => self.abandon_campaign(now_ms, &mut out),
                _ => {}
            }
        }
        self.finish(out)
    }

    /// Operator (maintenance mode): no automatic election until
    /// [`ElectionCore::resume`]: no pre-vote round at an election timeout (a
    /// running campaign is abandoned), and pre-votes of others are refused, so a
    /// member that missed the pause cannot fail over through paused voters.
    /// Votes are still answered (operator promotion and switchover need them;
    /// pausing changes who starts an election, never how a vote is granted), a
    /// primary keeps leading, and `promote` and a switchover's hand-over
    /// ([`ElectionMessage::TimeoutNow`]) are still taken.
    pub fn pause(&mut self, now_ms: u64) -> Vec<Action> {
        let mut out = Out::default();
        self.paused = true;
        if matches!(self.role, Role::PreCandidate | Role::Candidate) {
            self.abandon_campaign(now_ms, &mut out);
        }
        self.finish(out)
    }

    /// Operator: campaigning allowed again, after a fresh election timeout.
    pub fn resume(&mut self, now_ms: u64) {
        self.paused = false;
        self.reset_election_deadline(now_ms);
    }

    /// Operator promotion: become a candidate of the next epoch now, without
    /// pre-vote or stickiness (also when paused, and under quorum 0, where
    /// it needs `accept_data_loss`). It still needs the votes of an election
    /// quorum (a majority under quorum 0), and the voters still apply the
    /// up-to-date rule, so it cannot create a second primary in an epoch.
    pub fn promote(
        &mut self,
        now_ms: u64,
        accept_data_loss: bool,
    ) -> Result<Vec<Action>, PromoteError> {
        match self.role {
            Role::Halted | Role::Stopped => {
                return Err(PromoteError::NotRunning { role: self.role })
            }
            Role::Primary => return Err(PromoteError::AlreadyPrimary { epoch: self.epoch }),
            _ => {}
        }
        if !self.eligible {
            return Err(PromoteError::Ineligible);
        }
        if !self.is_voter() {
            return Err(PromoteError::NotAVoter);
        }
        if self.election_quorum.is_none() && !accept_data_loss {
            return Err(PromoteError::DataLossNotAccepted);
        }
        tracing::warn!(node = %self.config.node_id, epoch = self.epoch + 1, accept_data_loss, "operator promotion: campaigning");
        let mut out = Out::default();
        self.start_candidacy(now_ms, &mut out);
        Ok(self.finish(out))
    }

    /// Operator switchover: this primary asks `target` (which the executor
    /// made sure holds everything this primary has) to campaign now
    /// ([`ElectionMessage::TimeoutNow`]). This primary keeps its role until the
    /// target's vote request of the next epoch reaches it (it then steps down,
    /// fenced by the higher epoch); if the message is lost nothing changes.
    pub fn transfer_to(&mut self, target: &str) -> Result<Vec<Action>, PromoteError> {
        if self.role != Role::Primary {
            return Err(PromoteError::NotRunning { role: self.role });
        }
        if !self.is_peer(target) || !self.config.voters.iter().any(|v| v == target) {
            return Err(PromoteError::UnknownTarget {
                target: target.to_owned(),
            });
        }
        tracing::info!(node = %self.config.node_id, epoch = self.epoch, target, "switchover: asking the target to campaign");
        let mut out = Out::default();
        out.send(target, ElectionMessage::TimeoutNow { epoch: self.epoch });
        Ok(self.finish(out))
    }

    /// The node halted: it never votes or campaigns again (until restarted
    /// after an operator cleared the halt). A primary steps down.
    pub fn halt(&mut self, now_ms: u64) -> Vec<Action> {
        self.leave(now_ms, Role::Halted, StepDownReason::Halted)
    }

    /// The node is stopping (shutdown, or a fatal error such as a failed
    /// vote fsync): it never votes or campaigns again.
    pub fn stop(&mut self, now_ms: u64) -> Vec<Action> {
        self.leave(now_ms, Role::Stopped, StepDownReason::Stopped)
    }

    /// The operator's view (see [`ElectionStatus`]).
    pub fn status(&self, now_ms: u64) -> ElectionStatus {
        let n = self.config.voters.len();
        let campaign = self.tally.as_ref().map(|t| CampaignStatus {
            phase: t.phase,
            epoch: t.epoch,
            voters: n,
            need: self.campaign_quorum(),
            granted: t.granted.iter().cloned().collect(),
            refused: t.refused.iter().cloned().collect(),
            waiting: self
                .config
                .voters
                .iter()
                .filter(|v| !t.granted.contains(*v) && !t.refused.contains(*v))
                .cloned()
                .collect(),
        });
        let lease = (self.role == Role::Primary).then(|| LeaseStatus {
            heard: self.members_heard(now_ms),
            need: self.lease_quorum,
            lease_ms: self.config.lease_ms,
        });
        ElectionStatus {
            node_id: self.config.node_id.clone(),
            role: self.role,
            epoch: self.epoch,
            voted_for: self.voted_for.clone(),
            primary: self.primary.clone(),
            log_head: self.log_head,
            eligible: self.eligible,
            paused: self.paused,
            automatic_failover: self.election_quorum.is_some(),
            campaign,
            lease,
        }
    }

    // ---- internals ----

    fn is_peer(&self, id: &str) -> bool {
        id != self.config.node_id
            && (self.config.voters.iter().any(|v| v == id) || self.learners.contains(id))
    }

    /// [`ElectionCore::on_primary_contact`] (and a heartbeat): follow
    /// `primary` in `epoch`, or refuse it (changing nothing).
    fn primary_contact(
        &mut self,
        now_ms: u64,
        epoch: u64,
        primary: &str,
        out: &mut Out,
    ) -> Result<(), ContactRefusal> {
        if !self.is_peer(primary) {
            return Err(ContactRefusal::UnknownPeer {
                peer: primary.to_owned(),
            });
        }
        self.follow_contact(now_ms, epoch, primary, out)
    }

    /// [`Self::primary_contact`] without the membership check: a heartbeat is
    /// followed from whichever member sends it (see [`ElectionCore::on_message`]).
    fn follow_contact(
        &mut self,
        now_ms: u64,
        epoch: u64,
        primary: &str,
        out: &mut Out,
    ) -> Result<(), ContactRefusal> {
        if matches!(self.role, Role::Halted | Role::Stopped) {
            return Err(ContactRefusal::NotRunning { role: self.role });
        }
        if epoch < self.epoch {
            return Err(ContactRefusal::StalePrimary {
                primary_epoch: epoch,
                current_epoch: self.epoch,
            });
        }
        if epoch > self.epoch {
            self.adopt_epoch(now_ms, epoch, primary, Some(primary.to_owned()), out);
        } else {
            let known = match self.role {
                Role::Primary => Some(self.config.node_id.clone()),
                _ => self.primary.clone().filter(|p| p != primary),
            };
            if let Some(known) = known {
                tracing::error!(node = %self.config.node_id, epoch, claimed = primary, %known, "two primaries claim one epoch: refusing");
                return Err(ContactRefusal::ConflictingPrimary {
                    epoch,
                    claimed: primary.to_owned(),
                    known,
                });
            }
            if self.role != Role::Follower || self.primary.is_none() {
                self.role = Role::Follower;
                self.tally = None;
                self.primary = Some(primary.to_owned());
                out.role_change = Some(Action::BecomeFollower {
                    epoch,
                    primary_hint: self.primary.clone(),
                });
            }
        }
        self.last_primary_contact_ms = Some(now_ms);
        self.reset_election_deadline(now_ms);
        Ok(())
    }

    /// [`ElectionCore::on_member_contact`] (and a heartbeat ack) of a running node.
    fn member_contact(&mut self, now_ms: u64, from: &str, epoch: u64, out: &mut Out) {
        if epoch > self.epoch {
            self.adopt_epoch(now_ms, epoch, from, None, out);
        } else if epoch == self.epoch
            && self.role == Role::Primary
            && (self.config.voters.iter().any(|v| v == from)
                || self.learners.iter().any(|l| l == from))
        {
            // Only voters renew the lease (`lease_contacts`); a learner's contact is kept for
            // when it is promoted.
            self.member_contact_ms.insert(from.to_owned(), now_ms);
        }
    }

    fn check_peer(&self, id: &str) -> Result<(), InputError> {
        if self.is_peer(id) {
            Ok(())
        } else {
            Err(InputError::UnknownPeer {
                peer: id.to_owned(),
            })
        }
    }

    fn may_campaign(&self) -> bool {
        self.eligible && !self.paused && self.election_quorum.is_some() && self.is_voter()
    }

    /// Votes a campaign needs: the election quorum, a majority for an
    /// operator promotion under quorum 0 — and every voter while this
    /// node's log is empty (bootstrap, spec/election.md §2.10: a voter whose
    /// log is not empty refuses an empty candidate, so a cluster forms only
    /// when every listed member is up and empty, and an emptied node cannot
    /// lead a cluster that holds data).
    fn campaign_quorum(&self) -> usize {
        if self.log_head == LogPosition::ZERO {
            return self.config.voters.len();
        }
        self.election_quorum
            .unwrap_or_else(|| majority(self.config.voters.len()))
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic, good enough to spread timeouts.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Next deadline in `[now + T, now + 2T)`.
    fn reset_election_deadline(&mut self, now_ms: u64) {
        let t = self.config.election_timeout_ms;
        let jitter = self.next_random() % t;
        self.election_deadline_ms = now_ms.saturating_add(t).saturating_add(jitter);
    }

    /// When each voter other than this node was last heard in this epoch.
    fn lease_contacts(&self) -> impl Iterator<Item = u64> + '_ {
        self.member_contact_ms
            .iter()
            .filter(|(id, _)| self.config.voters.contains(id))
            .map(|(_, t)| *t)
    }

    /// Members heard within the lease (this node included).
    fn members_heard(&self, now_ms: u64) -> usize {
        1 + self
            .lease_contacts()
            .filter(|&t| now_ms.saturating_sub(t) < self.config.lease_ms)
            .count()
    }

    /// The earliest time the lease can lapse without new contact.
    fn lease_deadline_ms(&self) -> Option<u64> {
        let others = self.lease_quorum - 1;
        if others == 0 {
            return None;
        }
        let mut times: Vec<u64> = self.lease_contacts().collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        // The lease holds while the `others`-th most recent contact is fresh.
        Some(
            times
                .get(others - 1)
                .map_or(0, |t| t.saturating_add(self.config.lease_ms)),
        )
    }

    fn primary_is_live(&self, now_ms: u64) -> bool {
        self.role == Role::Primary
            || self
                .last_primary_contact_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < self.config.election_timeout_ms)
    }

    fn would_grant_pre_vote(&self, now_ms: u64, epoch: u64, last: LogPosition) -> bool {
        self.eligible
            && !self.paused
            && epoch > self.epoch
            && last >= self.log_head
            && !self.primary_is_live(now_ms)
    }

    /// The vote rule, after any epoch adoption: same epoch, one candidate per
    /// epoch, up to date, eligible. Marks the vote for persisting.
    fn grant_vote(
        &mut self,
        now_ms: u64,
        epoch: u64,
        candidate: &str,
        last: LogPosition,
        out: &mut Out,
    ) -> bool {
        if epoch != self.epoch || !self.eligible || self.role != Role::Follower {
            return false;
        }
        match &self.voted_for {
            Some(v) if v == candidate => {
                // Already granted (and durable): a duplicate request.
                self.reset_election_deadline(now_ms);
                return true;
            }
            Some(_) => return false,
            None => {}
        }
        if last < self.log_head {
            return false;
        }
        self.voted_for = Some(candidate.to_owned());
        out.persist = true;
        self.reset_election_deadline(now_ms);
        true
    }

    /// Records an answer of the current round; true when the quorum is reached.
    fn record_answer(
        &mut self,
        phase: CampaignPhase,
        epoch: u64,
        from: &str,
        granted: bool,
    ) -> bool {
        let need = self.campaign_quorum();
        let Some(t) = self.tally.as_mut() else {
            return false;
        };
        if t.phase != phase || t.epoch != epoch {
            return false; // an answer to an earlier round
        }
        if granted {
            t.refused.remove(from);
            t.granted.insert(from.to_owned());
        } else if !t.granted.contains(from) {
            t.refused.insert(from.to_owned());
        }
        t.granted.len() >= need
    }

    fn start_pre_vote(&mut self, now_ms: u64, out: &mut Out) {
        let proposed = self.epoch + 1;
        tracing::info!(node = %self.config.node_id, epoch = proposed, "election timeout: asking for pre-votes");
        self.role = Role::PreCandidate;
        self.primary = None;
        self.tally = Some(Tally {
            phase: CampaignPhase::PreVote,
            epoch: proposed,
            granted: BTreeSet::from([self.config.node_id.clone()]),
            refused: BTreeSet::new(),
        });
        self.reset_election_deadline(now_ms);
        if self.campaign_quorum() <= 1 {
            self.start_candidacy(now_ms, out);
            return;
        }
        let last = self.log_head;
        for peer in self.peers() {
            out.send(
                &peer,
                ElectionMessage::PreVoteRequest {
                    epoch: proposed,
                    last,
                },
            );
        }
    }

    fn start_candidacy(&mut self, now_ms: u64, out: &mut Out) {
        self.epoch += 1;
        self.voted_for = Some(self.config.node_id.clone());
        self.primary = None;
        self.role = Role::Candidate;
        self.last_primary_contact_ms = None;
        out.persist = true;
        tracing::info!(node = %self.config.node_id, epoch = self.epoch, "candidate: voted for itself");
        self.tally = Some(Tally {
            phase: CampaignPhase::Vote,
            epoch: self.epoch,
            granted: BTreeSet::from([self.config.node_id.clone()]),
            refused: BTreeSet::new(),
        });
        self.reset_election_deadline(now_ms);
        if self.campaign_quorum() <= 1 {
            self.become_primary(now_ms, out);
            return;
        }
        let last = self.log_head;
        for peer in self.peers() {
            out.send(
                &peer,
                ElectionMessage::VoteRequest {
                    epoch: self.epoch,
                    last,
                },
            );
        }
    }

    fn become_primary(&mut self, now_ms: u64, out: &mut Out) {
        assert_eq!(
            self.voted_for.as_ref(),
            Some(&self.config.node_id),
            "invariant: a primary voted for itself in its epoch"
        );
        let voters = self.tally.take().map(|t| t.granted).unwrap_or_default();
        tracing::info!(node = %self.config.node_id, epoch = self.epoch, votes = voters.len(), "won the election: primary");
        self.role = Role::Primary;
        self.primary = Some(self.config.node_id.clone());
        // Voting for us was contact in our epoch: the lease starts now.
        self.member_contact_ms = voters
            .into_iter()
            .filter(|v| *v != self.config.node_id)
            .map(|v| (v, now_ms))
            .collect();
        // First heartbeats at once: followers learn the new primary.
        self.next_heartbeat_ms = now_ms;
        out.role_change = Some(Action::BecomePrimary { epoch: self.epoch });
    }

    /// A higher epoch seen from `from`: follow it (fencing). A primary steps down.
    fn adopt_epoch(
        &mut self,
        now_ms: u64,
        epoch: u64,
        from: &str,
        primary: Option<NodeId>,
        out: &mut Out,
    ) {
        assert!(
            epoch > self.epoch,
            "invariant: only a higher epoch is adopted"
        );
        if self.role == Role::Primary {
            tracing::warn!(node = %self.config.node_id, epoch = self.epoch, higher = epoch, from, "higher epoch seen: stepping down");
            out.step_down = Some(Action::StepDown {
                epoch: self.epoch,
                reason: StepDownReason::HigherEpoch {
                    epoch,
                    from: from.to_owned(),
                },
            });
        }
        self.epoch = epoch;
        self.voted_for = None;
        self.primary = primary;
        self.role = Role::Follower;
        self.tally = None;
        self.member_contact_ms.clear();
        self.last_primary_contact_ms = None;
        out.persist = true;
        out.role_change = Some(Action::BecomeFollower {
            epoch,
            primary_hint: self.primary.clone(),
        });
        self.reset_election_deadline(now_ms);
    }

    fn step_down(&mut self, now_ms: u64, reason: StepDownReason, out: &mut Out) {
        debug_assert_eq!(self.role, Role::Primary, "only a primary steps down");
        out.step_down = Some(Action::StepDown {
            epoch: self.epoch,
            reason,
        });
        self.role = Role::Follower;
        self.primary = None;
        self.member_contact_ms.clear();
        out.role_change = Some(Action::BecomeFollower {
            epoch: self.epoch,
            primary_hint: None,
        });
        self.reset_election_deadline(now_ms);
    }

    fn abandon_campaign(&mut self, now_ms: u64, out: &mut Out) {
        self.role = Role::Follower;
        self.tally = None;
        out.role_change = Some(Action::BecomeFollower {
            epoch: self.epoch,
            primary_hint: None,
        });
        self.reset_election_deadline(now_ms);
    }

    fn leave(&mut self, now_ms: u64, role: Role, reason: StepDownReason) -> Vec<Action> {
        let mut out = Out::default();
        if self.role == Role::Primary {
            self.step_down(now_ms, reason, &mut out);
            out.role_change = None;
        }
        self.role = role;
        self.tally = None;
        self.primary = None;
        self.finish(out)
    }

    fn peers(&self) -> Vec<NodeId> {
        self.config
            .voters
            .iter()
            .filter(|v| **v != self.config.node_id)
            .cloned()
            .collect()
    }

    fn finish(&self, out: Out) -> Vec<Action> {
        let mut actions = Vec::with_capacity(3 + out.sends.len());
        actions.extend(out.step_down);
        if out.persist {
            actions.push(Action::PersistVote {
                epoch: self.epoch,
                voted_for: self.voted_for.clone(),
            });
        }
        actions.extend(out.role_change);
        actions.extend(out.sends);
        actions
    }
}

impl Out {
    fn send(&mut self, to: &str, msg: ElectionMessage) {
        self.sends.push(Action::Send {
            to: to.to_owned(),
            msg,
        });
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
