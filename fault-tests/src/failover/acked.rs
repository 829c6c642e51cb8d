//! What a failover node acknowledged, as the production Node tracks it
//! (`walship_node::cluster::plan`): the acknowledged mark persisted to
//! `state/acked` at most once per heartbeat interval (off the commit path),
//! and eligibility regained once the running role's durable lsn reaches the
//! lsn the restart rule required.

use walship_node::cluster::plan::{self, RoleAck, RoleReport, Verdict};

use super::{Cluster, RoleState};
use crate::world::state_dir;

impl Cluster {
    /// Looks at node `n`'s running role: feeds its acknowledged mark, persists the mark
    /// when the plan says it is due, and makes an ineligible node eligible once its log
    /// reached the required lsn.
    pub(super) fn watch_acked(&mut self, n: usize) {
        let now = self.now();
        let node = &mut self.nodes[n];
        if node.core.is_none() || node.halted.is_some() || node.stopped.is_some() {
            return;
        }
        let (ack, durable) = match &node.role {
            RoleState::Primary(p) => (
                RoleAck::Primary {
                    commit_lsn: p.up.exec.commit_lsn(),
                },
                Some(p.up.exec.durable_lsn()),
            ),
            RoleState::Replica(r) => match r.up.exec.wal() {
                Some(w) => {
                    let d = w.durable_lsn();
                    (RoleAck::Replica { durable_lsn: d }, Some(d))
                }
                None => (RoleAck::Idle, None),
            },
            RoleState::Idle => (RoleAck::Idle, None),
        };
        node.acked.observe(ack);
        if let Some(lsn) = node.acked.due(now) {
            match walship_wal::state::write_acked_lsn(&node.storage, &state_dir(), lsn) {
                Ok(()) => node.acked.persisted_at(lsn, now),
                Err(e) => {
                    let why = format!("state/acked: {e}");
                    let name = node.name.clone();
                    self.log(format!("{name} acked mark persist failed: {e}; stopping"));
                    self.stop_node(n, why);
                    return;
                }
            }
        }
        let Some(durable) = durable else { return };
        let required = node.required_lsn;
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let eligible = core.status(now).eligible;
        if let Some(Verdict::Eligible) = plan::verdict(
            &RoleReport::Durable(durable),
            core.role(),
            eligible,
            required,
        ) {
            let actions = core.set_eligible(now, true);
            let name = node.name.clone();
            self.log(format!(
                "{name} ELIGIBLE: durable lsn {durable} reached the required lsn {required}"
            ));
            self.perform(n, actions);
        }
    }

    /// The acknowledged mark and commit watermark node `n` persisted (its `state/acked`
    /// and `state/commit`; 0 when absent or unreadable).
    pub fn persisted_marks(&self, n: usize) -> (walship_wal::Lsn, walship_wal::Lsn) {
        let s = &self.nodes[n].storage;
        let acked = walship_wal::state::read_acked_lsn(s, &state_dir()).unwrap_or(0);
        let commit = walship_wal::state::read_state_json::<_, walship_wal::state::CommitBody>(
            s,
            &state_dir(),
            walship_wal::state::COMMIT_FILE,
        )
        .ok()
        .flatten()
        .map_or(0, |c| c.commit_lsn);
        (acked, commit)
    }
}
