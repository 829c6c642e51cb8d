//! Faults and operator acts on a failover world: crashes, restarts,
//! partitions (replication and elections alike), replication-only blocks,
//! the client, and the operator's promote / pause / resume.

use super::{Cluster, RoleState};

impl Cluster {
    /// Power loss of node `n`: unsynced writes are lost, the process and its
    /// connections vanish.
    pub fn crash(&mut self, n: usize) {
        let now = self.now();
        self.net.crash_node(n, now);
        let node = &mut self.nodes[n];
        node.core = None;
        node.role = RoleState::Idle;
        node.held = None;
        // The production `Inner::forced` lives in the process.
        node.forced = None;
        let report = node.storage.crash();
        self.log(format!("CRASH {} ({report:?})", self.nodes[n].name.clone()));
    }

    /// A disk that lied about fsync: while node `n` is down, every record of its log
    /// after `keep_lsn` is gone, synced or not (its state files stay as they were).
    pub fn lose_synced_suffix(
        &mut self,
        n: usize,
        keep_lsn: walship_wal::Lsn,
    ) -> Result<(), String> {
        assert!(
            !self.nodes[n].is_up(),
            "a disk loses what it acknowledged across a power loss: crash n{} first",
            n + 1
        );
        let opts = walship_wal::WalOptions {
            segment_size_bytes: self.cfg.segment_size_bytes,
            max_record_bytes: self.cfg.max_record_bytes,
            epoch: 0,
        };
        let storage = self.nodes[n].storage.clone();
        let (mut wal, _) = walship_wal::Wal::open(storage, &crate::world::wal_dir(), opts)
            .map_err(|e| format!("n{}: open: {e}", n + 1))?;
        let last = wal.last().lsn;
        self.nodes[n].held = None;
        wal.truncate_tail(keep_lsn)
            .map_err(|e| format!("n{}: truncate after {keep_lsn}: {e}", n + 1))?;
        drop(wal);
        self.log(format!(
            "LYING DISK {}: lsn {}..={last} lost across the power loss",
            self.nodes[n].name.clone(),
            keep_lsn + 1
        ));
        Ok(())
    }

    /// Restarts node `n` if it is down.
    pub fn restart(&mut self, n: usize) {
        if !self.nodes[n].is_up() {
            self.start_node(n);
        }
    }

    /// Cuts node `n` off from every other node (replication and elections).
    pub fn isolate(&mut self, n: usize) {
        let now = self.now();
        for m in (0..self.cfg.nodes).filter(|&m| m != n) {
            self.net.partition(n, m, now);
            self.elect_blocked.insert((n, m));
            self.elect_blocked.insert((m, n));
        }
        self.log(format!("ISOLATE {}", self.nodes[n].name.clone()));
    }

    /// Partitions `a` and `b` (both directions, replication and elections).
    pub fn partition(&mut self, a: usize, b: usize) {
        let now = self.now();
        self.net.partition(a, b, now);
        self.elect_blocked.insert((a, b));
        self.elect_blocked.insert((b, a));
    }

    /// Heals the link between `a` and `b`.
    pub fn heal(&mut self, a: usize, b: usize) {
        let now = self.now();
        self.net.heal(a, b, now);
        self.elect_blocked.remove(&(a, b));
        self.elect_blocked.remove(&(b, a));
    }

    /// Blocks the replication link `from -> to` only (election messages pass).
    pub fn block_data(&mut self, from: usize, to: usize) {
        let now = self.now();
        self.net.block(from, to, now);
        self.log(format!(
            "BLOCK data {} -> {}",
            self.nodes[from].name.clone(),
            self.nodes[to].name.clone()
        ));
    }

    /// Heals every partition and block.
    pub fn heal_all(&mut self) {
        let now = self.now();
        self.net.heal_all(now);
        self.elect_blocked.clear();
        self.log("HEAL all".into());
    }

    /// Restarts every node that is down.
    pub fn restart_all(&mut self) {
        for n in 0..self.cfg.nodes {
            self.restart(n);
        }
    }

    /// Starts (or stops) a client appending one record every
    /// `client_interval_ms` through whichever node is primary.
    pub fn set_client(&mut self, on: bool) {
        self.client_at = on.then(|| self.now() + 1);
    }

    /// Operator: promote node `n` (`ElectionCore::promote`).
    pub fn promote(&mut self, n: usize, accept_data_loss: bool) -> Result<(), String> {
        self.sync_membership(n);
        let now = self.now();
        let core = self.nodes[n]
            .core
            .as_mut()
            .ok_or_else(|| format!("n{} is down", n + 1))?;
        let actions = core
            .promote(now, accept_data_loss)
            .map_err(|e| e.to_string())?;
        if accept_data_loss {
            self.ghost.data_loss_accepted = true;
        }
        self.log(format!(
            "OPERATOR promote {} (accept_data_loss {accept_data_loss})",
            self.nodes[n].name.clone()
        ));
        self.perform(n, actions);
        self.after_step();
        Ok(())
    }

    /// Operator: no campaigning on node `n` until [`Cluster::resume`].
    pub fn pause(&mut self, n: usize) {
        let now = self.now();
        if let Some(core) = self.nodes[n].core.as_mut() {
            let actions = core.pause(now);
            self.perform(n, actions);
        }
    }

    /// Operator: campaigning allowed again on node `n`.
    pub fn resume(&mut self, n: usize) {
        let now = self.now();
        if let Some(core) = self.nodes[n].core.as_mut() {
            core.resume(now);
        }
    }
}
