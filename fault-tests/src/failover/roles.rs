//! The two roles of a failover node: the production primary and replica
//! executors over the node's `SimStorage`. As in `world/primary.rs` and
//! `world/replica.rs` (whose frame decoding, node layout, applier and
//! message descriptions are used here), the world only moves frames, fires
//! deadlines and group syncs, and records facts from the executors' outputs;
//! unlike them, any node may run either executor, one after the other, on
//! the same disk, as its election core decides.

use walship_node::primary::exec::{ExecConfig as PExecConfig, Output as POutput, PrimaryExec};
use walship_node::replica::exec::{ExecConfig as RExecConfig, Output as ROutput, ReplicaExec};
use walship_primary::core::Quorum;
use walship_wal::{Lsn, WalOptions};
use walship_wire::frame::encode_frame;
use walship_wire::message::Message;

use super::{check, Cluster, RoleState, CLUSTER_ID};
use crate::net::{CloseReason, ConnId};
use crate::world::{describe, root, PrimaryUp, ReplicaUp, NODE_ROOT};

/// A node's running primary executor (the world's [`PrimaryUp`]: executor,
/// connections, client tokens, group sync latency).
pub struct PrimaryRole {
    /// The epoch it leads.
    pub epoch: u64,
    /// Lsn of its epoch's first record (the `EpochStart` control record).
    pub epoch_start: Lsn,
    /// The process.
    pub up: PrimaryUp,
    /// Ghost records at or below this lsn were verified present in its log.
    pub(crate) verified_upto: Lsn,
}

/// A node's running replica executor (the world's [`ReplicaUp`]).
pub struct ReplicaRole {
    /// The node it follows.
    pub primary: usize,
    /// The election epoch in which it follows it.
    pub epoch: u64,
    /// The process.
    pub up: ReplicaUp,
}

impl Cluster {
    /// `BecomePrimary{epoch}`: the production primary executor on the node's
    /// disk, starting `epoch` (its `EpochStart` record, durable at open).
    pub(super) fn open_primary(&mut self, n: usize, epoch: u64) {
        let now = self.now();
        let quorum = match Quorum::from_setting(self.cfg.quorum) {
            Ok(q) => q,
            Err(e) => panic!("failover config: bad quorum {}: {e}", self.cfg.quorum),
        };
        let config = PExecConfig {
            node_id: self.nodes[n].name.clone(),
            cluster_id: CLUSTER_ID.into(),
            members: self.nodes.iter().map(|x| x.name.clone()).collect(),
            quorum,
            window: self.cfg.window,
            segment_size_bytes: self.cfg.segment_size_bytes,
            max_record_bytes: self.cfg.max_record_bytes,
            commit_timeout_ms: None,
            tick_ms: 50,
            persist_interval_ms: 20,
            new_epoch: Some(epoch),
            // node.toml's member list (generation 0) until the log holds a configuration.
            base_config: Some(self.base.clone()),
            // A force-quorum campaign won: its forced configuration follows the epoch's
            // control record (the production `roles::open_primary`).
            forced_config: self.nodes[n].forced.take().map(|(config, _)| config),
        };
        let storage = self.nodes[n].storage.clone();
        match PrimaryExec::open(
            storage.clone(),
            std::path::Path::new(NODE_ROOT),
            config,
            now,
        ) {
            Ok(exec) => {
                let last = exec.wal().last();
                // A forced configuration written at open follows the epoch's control record.
                let view = exec.membership();
                let epoch_start = if view.config.forced && view.lsn == last.lsn {
                    last.lsn - 1
                } else {
                    last.lsn
                };
                self.log(format!(
                    "{} primary exec open: epoch {epoch} starts at lsn {epoch_start} (commit {}, newest configuration generation {} at lsn {}{})",
                    self.nodes[n].name,
                    exec.commit_lsn(),
                    view.config.generation,
                    view.lsn,
                    if view.config.forced { ", forced" } else { "" }
                ));
                self.nodes[n].role = RoleState::Primary(Box::new(PrimaryRole {
                    epoch,
                    epoch_start,
                    up: PrimaryUp::new(exec, &storage),
                    verified_upto: 0,
                }));
                self.refresh_head(n);
                check::check_new_primary(self, n);
                self.primary_outputs(n);
            }
            Err(e) => {
                let why = format!("primary exec refuses to open: {e}");
                self.log(format!("{} {why}", self.nodes[n].name));
                self.stop_node(n, why);
            }
        }
    }

    /// `BecomeFollower` with a known primary: the production replica executor
    /// on the node's disk, following `primary`.
    pub(super) fn open_replica(&mut self, n: usize, primary: usize, epoch: u64) {
        if self.nodes[n].halted.is_some() {
            return;
        }
        let now = self.now();
        let config = RExecConfig {
            node_id: self.nodes[n].name.clone(),
            cluster_id: CLUSTER_ID.into(),
            primary_name: self.nodes[primary].name.clone(),
            data_dir: root(),
            wal: WalOptions {
                segment_size_bytes: self.cfg.segment_size_bytes,
                max_record_bytes: self.cfg.max_record_bytes,
                epoch: 0,
            },
            backoff_initial_ms: 20,
            backoff_max_ms: 200,
            sync_every_bytes: 8 * 1024 * 1024,
            commit_interval_ms: walship_node::replica::exec::DEFAULT_COMMIT_INTERVAL_MS,
            report_applied: true,
            // Fenced by its election epoch: nothing from a primary below it.
            min_primary_epoch: epoch,
            // Tracks the configuration records it receives; `Hello` announces the
            // data directory's incarnation.
            base_config: Some(self.base.clone()),
            incarnation: self.nodes[n].incarnation,
        };
        let storage = self.nodes[n].storage.clone();
        let applier = Box::new(self.nodes[n].applier.clone());
        match ReplicaExec::open(storage.clone(), config, applier, now) {
            Ok(exec) => {
                self.nodes[n].role = RoleState::Replica(Box::new(ReplicaRole {
                    primary,
                    epoch,
                    up: ReplicaUp::new(exec, &storage),
                }));
                self.refresh_head(n);
                self.replica_outputs(n);
            }
            Err(e) => {
                let why = format!("replica exec refuses to open: {e}");
                self.log(format!("{} {why}", self.nodes[n].name));
                self.stop_node(n, why);
            }
        }
    }

    /// Closes the node's role (step-down, a new primary to follow): its
    /// connections close, the executor is dropped; what it wrote stays on
    /// the disk for the next role to reopen.
    pub(super) fn close_role(&mut self, n: usize) {
        let now = self.now();
        self.nodes[n].held = None;
        let role = std::mem::replace(&mut self.nodes[n].role, RoleState::Idle);
        match role {
            RoleState::Idle => {}
            RoleState::Primary(p) => {
                for conn in p.up.conn_ids() {
                    self.net.close(conn, n, now);
                }
            }
            RoleState::Replica(r) => {
                if let Some(conn) = r.up.conn_id() {
                    self.net.close(conn, n, now);
                }
            }
        }
    }

    pub(super) fn role_next_timer(&self, n: usize) -> Option<u64> {
        match &self.nodes[n].role {
            RoleState::Idle => None,
            RoleState::Primary(p) => p.up.next_timer(),
            RoleState::Replica(r) => r.up.next_timer(),
        }
    }

    pub(super) fn role_fire_due(&mut self, n: usize) {
        let now = self.now();
        match &mut self.nodes[n].role {
            RoleState::Idle => return,
            RoleState::Primary(p) => {
                if p.up.sync_due(now) {
                    p.up.sync(now);
                }
                if p.up.timer_due(now) {
                    p.up.exec.on_timer(now);
                }
            }
            RoleState::Replica(r) => {
                let (sync_due, timer_due) = r.up.due(now);
                if sync_due {
                    r.up.sync(now);
                }
                if timer_due {
                    r.up.exec.on_timer(now);
                }
            }
        }
        self.role_outputs(n);
    }

    fn role_outputs(&mut self, n: usize) {
        match self.nodes[n].role {
            RoleState::Idle => {}
            RoleState::Primary(_) => self.primary_outputs(n),
            RoleState::Replica(_) => self.replica_outputs(n),
        }
    }

    /// Node `to` accepted a connection: only a primary serves one.
    pub(super) fn role_accepted(&mut self, to: usize, conn: ConnId, from: usize) {
        let now = self.now();
        let from_name = self.nodes[from].name.clone();
        match &mut self.nodes[to].role {
            RoleState::Primary(p) => {
                p.up.accept(conn, from);
                p.up.connected(conn, from_name, now);
                self.primary_outputs(to);
            }
            _ => self.net.close(conn, to, now),
        }
    }

    pub(super) fn role_data(&mut self, to: usize, conn: ConnId, bytes: &[u8]) {
        let now = self.now();
        let mut msgs = Vec::new();
        let decoded = match &mut self.nodes[to].role {
            RoleState::Primary(p) => p.up.decode(conn, bytes, &mut msgs),
            RoleState::Replica(r) => r.up.decode(conn, bytes, &mut msgs),
            RoleState::Idle => None,
        };
        let Some(bad) = decoded else {
            return;
        };
        let name = self.nodes[to].name.clone();
        for m in msgs {
            self.trace
                .record(now, self.step, format!("{name} <- {}", describe(&m)));
            match &mut self.nodes[to].role {
                RoleState::Primary(p) => {
                    let fenced_before = p.up.exec.fenced();
                    if !p.up.deliver(conn, m, now) {
                        return;
                    }
                    let fenced = p.up.exec.fenced().filter(|_| fenced_before.is_none());
                    let peer = p.up.peer(conn);
                    self.primary_outputs(to);
                    if let (Some(epoch), Some(peer)) = (fenced, peer) {
                        self.primary_fenced(to, peer, epoch);
                    }
                }
                RoleState::Replica(r) if r.up.conn_id() == Some(conn) => {
                    r.up.deliver(conn, m, now);
                    self.replica_outputs(to);
                }
                _ => return,
            }
        }
        if let Some(e) = bad {
            self.log(format!("{name} bad frame on conn {}: {e}", conn.0));
            match &mut self.nodes[to].role {
                RoleState::Primary(p) => {
                    p.up.conn_closed(conn, now);
                    self.net.close(conn, to, now);
                }
                RoleState::Replica(r) => r.up.bad_frame(conn, &e, now),
                RoleState::Idle => {}
            }
            self.role_outputs(to);
        }
    }

    pub(super) fn role_closed(&mut self, at: usize, conn: ConnId, reason: CloseReason) {
        let now = self.now();
        match &mut self.nodes[at].role {
            RoleState::Primary(p) => {
                p.up.conn_closed(conn, now);
            }
            RoleState::Replica(r) => {
                r.up.conn_closed(conn, reason, now);
            }
            RoleState::Idle => return,
        }
        self.role_outputs(at);
    }

    /// Node `n`'s primary executor was fenced by member `peer`, which knows
    /// `epoch`: the election core learns it (and steps down: the executor
    /// already acknowledges nothing).
    fn primary_fenced(&mut self, n: usize, peer: usize, epoch: u64) {
        let now = self.now();
        self.ghost.fenced += 1;
        let peer_name = self.nodes[peer].name.clone();
        self.log(format!(
            "{} primary exec fenced by {peer_name} (epoch {epoch})",
            self.nodes[n].name
        ));
        let Some(core) = self.nodes[n].core.as_mut() else {
            return;
        };
        match core.on_member_contact(now, &peer_name, epoch) {
            Ok(actions) => self.perform(n, actions),
            Err(e) => self.log(format!("{}: {e}", self.nodes[n].name)),
        }
    }

    /// A client append through node `n`'s primary executor.
    pub(super) fn primary_append(&mut self, n: usize, payload: Vec<u8>) {
        let now = self.now();
        let delay = self
            .rng
            .range(self.cfg.sync_delay_ms.0, self.cfg.sync_delay_ms.1);
        let RoleState::Primary(p) = &mut self.nodes[n].role else {
            return;
        };
        p.up.append(&[payload], now);
        p.up.schedule_sync(now, delay);
        self.primary_outputs(n);
    }

    pub(super) fn primary_outputs(&mut self, n: usize) {
        let name = self.nodes[n].name.clone();
        loop {
            let now = self.now();
            let RoleState::Primary(p) = &mut self.nodes[n].role else {
                return;
            };
            let Some(o) = p.up.exec.poll_output() else {
                break;
            };
            match o {
                POutput::Send { conn, msg } => {
                    let mut buf = Vec::new();
                    if let Err(e) = encode_frame(&msg, &mut buf) {
                        panic!("{name}: encoding {} failed: {e}", msg.kind());
                    }
                    self.trace
                        .record(now, self.step, format!("{name} -> {}", describe(&msg)));
                    self.net.send(ConnId(conn), n, &buf, now);
                }
                POutput::Close { conn, reason } => {
                    p.up.forget(ConnId(conn));
                    self.log(format!("{name} closes conn {conn}: {reason}"));
                    self.net.close(ConnId(conn), n, now);
                }
                POutput::SendSnapshot { conn, .. } => {
                    // No snapshots are taken in the failover world.
                    p.up.forget(ConnId(conn));
                    self.net.close(ConnId(conn), n, now);
                }
                POutput::Ack { token: _, lsn } => {
                    let epoch = p.epoch;
                    let pos = p.up.wal.with(|w| w.position_at(lsn));
                    check::note_ack(self, n, epoch, lsn, pos.ok().flatten());
                }
                POutput::Fail { token: _, error } => {
                    self.log(format!("{name} append failed: {error}"));
                }
                POutput::Durable(d) => self.log(format!("{name} durable {d}")),
                POutput::Committed(c) => {
                    if let Some(core) = self.nodes[n].core.as_mut() {
                        core.set_commit_lsn(c);
                    }
                    check::note_commit(self, n, c);
                }
                POutput::CommitPersisted(_) => {}
                POutput::Stopped(reason) => {
                    self.log(format!("{name} primary exec stops: {reason}"));
                    self.stop_node(n, reason.to_string());
                    return;
                }
            }
        }
        self.refresh_head(n);
    }

    fn replica_outputs(&mut self, n: usize) {
        let name = self.nodes[n].name.clone();
        loop {
            let now = self.now();
            let RoleState::Replica(r) = &mut self.nodes[n].role else {
                return;
            };
            let Some(o) = r.up.exec.poll_output() else {
                break;
            };
            match o {
                ROutput::Connect => {
                    let connected = self.net.connect(n, r.primary, now);
                    r.up.connect_result(connected, now);
                }
                ROutput::Send { conn, msg } => {
                    let mut buf = Vec::new();
                    if let Err(e) = encode_frame(&msg, &mut buf) {
                        panic!("{name}: encoding {} failed: {e}", msg.kind());
                    }
                    if !matches!(msg, Message::Receipt { .. }) {
                        self.trace
                            .record(now, self.step, format!("{name} -> {}", describe(&msg)));
                    }
                    self.net.send(ConnId(conn), n, &buf, now);
                }
                ROutput::Close { conn, .. } => {
                    r.up.forget(ConnId(conn));
                    self.net.close(ConnId(conn), n, now);
                }
                ROutput::SessionEnded { reason, .. } => {
                    self.log(format!("{name} session ends: {reason}"));
                }
                ROutput::Durable(_) | ROutput::CommitPersisted(_) => {}
                ROutput::Applied { records, .. } => check::note_applied(self, n, &records),
                ROutput::Restored(b) | ROutput::SnapshotInstalled(b) => {
                    self.log(format!("{name} snapshot {b}"));
                }
                ROutput::Halted(record) => {
                    self.halt_node(n, record);
                    let _ = self.nodes[n]
                        .plan
                        .set(walship_node::cluster::plan::RoleCommand::Close);
                    self.close_role(n);
                    return;
                }
                ROutput::Stopped(e) => {
                    self.log(format!("{name} replica exec stops: {e}"));
                    self.stop_node(n, e.to_string());
                    return;
                }
            }
        }
        let delay = self
            .rng
            .range(self.cfg.sync_delay_ms.0, self.cfg.sync_delay_ms.1);
        let now = self.now();
        if let RoleState::Replica(r) = &mut self.nodes[n].role {
            r.up.schedule_sync(now, delay);
        }
        self.refresh_head(n);
    }
}
