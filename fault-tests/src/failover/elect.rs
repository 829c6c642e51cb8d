//! Elections in a failover world: election messages travel a queue with
//! the configured delays and loss, dropped across partitions and at crashed
//! nodes; the core's actions are performed in order (`PersistVote` is
//! written and fsynced with the production [`VoteFile`] before anything
//! after it).

use walship_node::cluster::plan::RoleCommand;
use walship_node::election::{Action, ElectionMessage, LogPosition, PersistedVote, VoteFile};
use walship_replica::halt::HaltRecord;

use super::{check, Cluster, RoleState};
use crate::world::state_dir;

impl Cluster {
    pub(super) fn elect_send(&mut self, from: usize, to: usize, msg: ElectionMessage) {
        let now = self.now();
        if self.elect_blocked.contains(&(from, to))
            || self.net.is_down(from)
            || self.rng.chance(self.cfg.elect_loss_per_mille)
        {
            return;
        }
        let delay = self
            .rng
            .range(self.cfg.elect_delay_ms.0, self.cfg.elect_delay_ms.1);
        self.elect_seq += 1;
        // The envelope carries the sender's data-directory incarnation (spec/election.md §4).
        let incarnation = self.nodes[from].incarnation;
        self.elect_q
            .insert((now + delay, self.elect_seq), (from, incarnation, to, msg));
    }

    /// Delivers one election message as the production driver does: the newest
    /// configuration of the receiver's log goes to its core first, then the message
    /// with the sender's incarnation (`ElectionCore::on_message_from`).
    pub(super) fn deliver(
        &mut self,
        from: usize,
        incarnation: u64,
        to: usize,
        msg: ElectionMessage,
    ) {
        if self.elect_blocked.contains(&(from, to)) || self.net.is_down(to) {
            return;
        }
        self.sync_membership(to);
        let now = self.now();
        let from_name = self.nodes[from].name.clone();
        let Some(core) = self.nodes[to].core.as_mut() else {
            return;
        };
        let grant = match &msg {
            ElectionMessage::VoteResponse {
                epoch,
                granted: true,
            } if core.role() == walship_node::election::Role::Candidate
                && core.epoch() == *epoch =>
            {
                Some(*epoch)
            }
            _ => None,
        };
        match core.on_message_from(now, &from_name, incarnation, msg) {
            Ok(actions) => {
                if let Some(epoch) = grant {
                    check::note_grant(self, to, epoch, from, incarnation);
                }
                self.perform(to, actions)
            }
            Err(e) => self.log(format!("{}: {e}", self.nodes[to].name.clone())),
        }
    }

    /// Performs the core's actions of node `n`, in order.
    pub(crate) fn perform(&mut self, n: usize, actions: Vec<Action>) {
        for a in actions {
            if self.nodes[n].core.is_none() {
                return; // stopped while performing
            }
            let name = self.nodes[n].name.clone();
            match a {
                Action::PersistVote { epoch, voted_for } => {
                    let vote = PersistedVote { epoch, voted_for };
                    let mut file = VoteFile::new(self.nodes[n].storage.clone(), &state_dir());
                    if let Err(e) = file.persist(&vote) {
                        self.log(format!("{name} vote persist failed: {e}; stopping"));
                        self.stop_node(n, format!("vote file: {e}"));
                        return;
                    }
                }
                Action::StepDown { .. }
                | Action::BecomePrimary { .. }
                | Action::BecomeFollower { .. } => {
                    match &a {
                        Action::StepDown { epoch, reason } => {
                            self.log(format!("{name} STEP DOWN epoch {epoch}: {reason:?}"));
                        }
                        Action::BecomePrimary { epoch } => {
                            self.log(format!("{name} BECOMES PRIMARY of epoch {epoch}"));
                            check::note_primary(self, n, *epoch);
                            check::check_election(self, n, *epoch);
                        }
                        Action::BecomeFollower {
                            epoch,
                            primary_hint,
                        } => {
                            self.log(format!("{name} follows in epoch {epoch}: {primary_hint:?}"));
                        }
                        _ => {}
                    }
                    // The production Node's decision (walship_node::cluster::plan): which
                    // role the action asks for; an unchanged role is not reopened.
                    match self.nodes[n].plan.on_action(&a) {
                        None => {}
                        Some(RoleCommand::Close) => self.close_role(n),
                        Some(RoleCommand::Primary { epoch }) => {
                            self.close_role(n);
                            self.open_primary(n, epoch);
                        }
                        Some(RoleCommand::Follow { epoch, primary }) => {
                            self.close_role(n);
                            if let Some(p) = self.index_of(&primary) {
                                self.open_replica(n, p, epoch);
                            }
                        }
                    }
                }
                Action::Send { to, msg } => {
                    if let Some(t) = self.index_of(&to) {
                        self.elect_send(n, t, msg);
                    }
                }
            }
        }
    }

    /// The node stops (a fatal local error): its role closes, its core stops.
    pub(super) fn stop_node(&mut self, n: usize, why: String) {
        let now = self.now();
        let _ = self.nodes[n].plan.set(RoleCommand::Close);
        self.close_role(n);
        if let Some(core) = self.nodes[n].core.as_mut() {
            let _ = core.stop(now);
        }
        self.nodes[n].stopped = Some(why);
    }

    /// The node's replica executor halted: so does its election core.
    pub(super) fn halt_node(&mut self, n: usize, record: HaltRecord) {
        let now = self.now();
        self.log(format!(
            "{} HALT {} at lsn {}: {}",
            self.nodes[n].name.clone(),
            record.reason.as_str(),
            record.lsn,
            record.detail
        ));
        self.nodes[n].halted = Some(record);
        if let Some(core) = self.nodes[n].core.as_mut() {
            let actions = core.halt(now);
            self.perform(n, actions);
        }
    }

    /// Refreshes node `n`'s log head in its core from its WAL.
    pub(super) fn refresh_head(&mut self, n: usize) {
        let last = match &self.nodes[n].role {
            RoleState::Primary(p) => Some(p.up.exec.wal().last()),
            RoleState::Replica(r) => r.up.exec.wal().map(|w| w.last()),
            RoleState::Idle => None,
        };
        if let (Some(last), Some(core)) = (last, self.nodes[n].core.as_mut()) {
            let head = LogPosition::new(last.epoch, last.lsn);
            if head.epoch <= core.epoch() && core.log_head() != head {
                core.set_log_head(head);
            }
        }
    }
}
