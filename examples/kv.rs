//! A tiny replicated key-value store built on walship's [`Node`].
//!
//! Each of three members embeds one [`Node`] with its own copy of the store as the
//! node's [`Applier`]: whichever role the node has (primary, follower, between roles),
//! committed records reach the store in lsn order, each once. A put is one WAL record;
//! it goes to whichever member is primary (a member that is not answers
//! [`NodeError::NotPrimary`] with the primary it knows, and the client follows that
//! hint) and is acknowledged once committed by a majority. Reads are served by any
//! member's store, after it applied the write being read (read-your-writes) and only
//! while the member is not halted or stopped.
//!
//! The store keeps its map and its apply point in memory, so a restarted member
//! starts with an empty store and its node replays the committed records of its WAL
//! from the start. The node's control records (the first record of every new
//! primary's epoch) count in the lsns: [`Applier::apply_control`] records them so
//! that the apply point stays contiguous.
//!
//! Run it with `cargo run --example kv` (`RUST_LOG=info` shows the nodes' logs). On
//! loopback, with fresh certificates in a temp directory, it
//! 1. elects a primary, puts and deletes some keys and reads them back from every member;
//! 2. crashes the primary (its `Node` is dropped without a shutdown), lets the other two
//!    elect a new one, puts more keys through it and reads every acknowledged key from
//!    the new primary's store;
//! 3. restarts the crashed member (empty store: it replays its WAL and catches up),
//!    hands the primary role back to it with [`Node::switchover`], prints the write
//!    pause, puts more keys and reads every acknowledged key from every member.
//!
//! `tests/kv_example.rs` runs the same scenario and checks what [`run`] returns.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use walship::node::election::Role;
use walship::node::NodeConfig;
use walship::replica::ApplyError;
use walship::wal::control::ControlRecord;
use walship::wal::state::DirLock;
use walship::wal::Lsn;
use walship::wire::{TlsFiles, TransportOptions};
use walship::{Applier, MemberAddr, Node, NodeError};

/// Bound on every wait: only a hang reaches it; conditions decide.
const WAIT: Duration = Duration::from_secs(20);
/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(10);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One state change of the store, as stored in a WAL record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put { key: String, value: String },
    /// Removes `key`.
    Delete { key: String },
}

impl Op {
    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `S<len u32 LE><key><value>` or `D<key>`: simple, bounded, checked on decode.
    fn encode(&self) -> Vec<u8> {
        match self {
            Op::Put { key, value } => {
                let mut out = vec![b'S'];
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(value.as_bytes());
                out
            }
            Op::Delete { key } => {
                let mut out = vec![b'D'];
                out.extend_from_slice(key.as_bytes());
                out
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Op, String> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| e.to_string());
        match bytes.split_first() {
            Some((b'S', rest)) if rest.len() >= 4 => {
                let key_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let rest = &rest[4..];
                if key_len > rest.len() {
                    return Err(format!("key length {key_len} past the record end"));
                }
                let (key, value) = rest.split_at(key_len);
                Ok(Op::Put {
                    key: text(key)?,
                    value: text(value)?,
                })
            }
            Some((b'D', key)) => Ok(Op::Delete { key: text(key)? }),
            _ => Err("not a kv operation".into()),
        }
    }
}

/// What the store applied at one lsn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A put or delete.
    Op(Op),
    /// The node's control record starting a primary's epoch.
    EpochStart { epoch: u64 },
    /// The node's control record naming the cluster's members.
    Configuration { generation: u64 },
}

/// The store's state, shared between the member's applier and its readers.
#[derive(Default, Clone, Debug)]
pub struct Store {
    /// The key-value map.
    pub map: BTreeMap<String, String>,
    /// The apply point: every lsn up to it is applied.
    pub applied: Lsn,
    /// Everything applied, in order: what a client looks a write up in after an
    /// ambiguous failure, and what the test checks (each lsn once, in order).
    pub history: Vec<(Lsn, Applied)>,
}

impl Store {
    /// Applies `what` at `lsn`, which must follow the apply point.
    fn apply(&mut self, lsn: Lsn, what: Applied) -> Result<(), String> {
        if lsn != self.applied + 1 {
            return Err(format!(
                "lsn {lsn} after {}: out of order or twice",
                self.applied
            ));
        }
        match &what {
            Applied::Op(Op::Put { key, value }) => {
                self.map.insert(key.clone(), value.clone());
            }
            Applied::Op(Op::Delete { key }) => {
                self.map.remove(key);
            }
            Applied::EpochStart { .. } | Applied::Configuration { .. } => {}
        }
        self.applied = lsn;
        self.history.push((lsn, what));
        Ok(())
    }

    /// The lsn `op` was applied at, if it was.
    fn lsn_of(&self, op: &Op) -> Option<Lsn> {
        self.history
            .iter()
            .find(|(_, a)| matches!(a, Applied::Op(o) if o == op))
            .map(|(lsn, _)| *lsn)
    }

    /// The lsn of the control record starting `epoch`, if it was applied.
    fn epoch_start(&self, epoch: u64) -> Option<Lsn> {
        self.history
            .iter()
            .rev()
            .find(|(_, a)| *a == Applied::EpochStart { epoch })
            .map(|(lsn, _)| *lsn)
    }
}

/// A member's store, shared by its applier and its readers.
#[derive(Clone, Default)]
struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the map half-updated (one insert
        // or remove, then the apply point): the state is usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node's applier: committed records, in lsn order, in every role.
impl Applier for SharedStore {
    fn applied_lsn(&self) -> Lsn {
        // In memory: after a restart nothing is applied and the node replays its
        // committed WAL from the start.
        self.lock().applied
    }

    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        let op = Op::decode(payload)?;
        Ok(self.lock().apply(lsn, Applied::Op(op))?)
    }

    fn apply_control(&mut self, lsn: Lsn, control: &ControlRecord) -> Result<(), ApplyError> {
        let applied = match control {
            ControlRecord::EpochStart { epoch, .. } => Applied::EpochStart { epoch: *epoch },
            ControlRecord::Configuration { config, .. } => Applied::Configuration {
                generation: config.generation,
            },
        };
        Ok(self.lock().apply(lsn, applied)?)
    }
}

/// An acknowledged write: committed at `lsn` through member `via`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Its lsn.
    pub lsn: Lsn,
    /// The write.
    pub op: Op,
    /// The member that acknowledged it.
    pub via: String,
}

/// What a run shows; the test checks it.
#[derive(Debug)]
#[allow(dead_code)] // read by tests/kv_example.rs
pub struct Outcome {
    /// Every acknowledged write, in the order the client made them.
    pub acked: Vec<Ack>,
    /// The member elected after the crash, and its store once it applied every write
    /// acknowledged by then.
    pub after_failover: (String, Store),
    /// The member the primary role was handed back to, and its store once it applied
    /// every acknowledged write.
    pub after_switchover: (String, Store),
    /// Every member's store at the end.
    pub members_at_end: Vec<(String, Store)>,
    /// The switchover's write pause.
    pub switchover_pause: Duration,
}

/// One member: its node (`None` while crashed) and its store.
struct Member {
    id: String,
    node: Option<Node>,
    store: SharedStore,
}

/// Three members on loopback, and a client that remembers which one led last.
struct Cluster {
    root: PathBuf,
    addrs: Vec<MemberAddr>,
    members: Vec<Member>,
    leader_guess: usize,
    acked: Vec<Ack>,
}

fn free_addr() -> Result<SocketAddr, Error> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

impl Cluster {
    async fn start(root: &Path, ids: &[&str]) -> Result<Cluster, Error> {
        walship::wire::generate(&root.join("certs"), ids)?;
        let mut addrs = Vec::new();
        for id in ids {
            addrs.push(MemberAddr {
                node_id: id.to_string(),
                addr: free_addr()?,
                http_addr: None,
            });
        }
        let mut cluster = Cluster {
            root: root.to_path_buf(),
            addrs,
            members: Vec::new(),
            leader_guess: 0,
            acked: Vec::new(),
        };
        for id in ids {
            let store = SharedStore::default();
            let node = Node::open(cluster.config(id), store.clone()).await?;
            cluster.members.push(Member {
                id: id.to_string(),
                node: Some(node),
                store,
            });
        }
        Ok(cluster)
    }

    fn config(&self, id: &str) -> NodeConfig {
        let mut c = NodeConfig::new(
            id,
            "kv-example",
            self.root.join(id),
            self.addrs.clone(),
            TlsFiles::for_node(&self.root.join("certs"), id),
        );
        c.election_timeout_ms = 300;
        c.lease_ms = 300;
        c.commit_timeout_ms = 5_000;
        c.transport = TransportOptions {
            keep_alive_ms: 200,
            idle_timeout_ms: 3_000,
            ..TransportOptions::default()
        };
        c
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The epoch member `i` leads, once its store applied that epoch's start record:
    /// from then on every record of an older epoch is either in its store or never
    /// commits.
    fn ready_primary(&self, i: usize) -> Option<u64> {
        let m = &self.members[i];
        let s = m.node.as_ref()?.status().state;
        (s.role == Role::Primary && m.store.lock().epoch_start(s.epoch).is_some())
            .then_some(s.epoch)
    }

    /// Waits until one member is a ready primary (see [`Cluster::ready_primary`]).
    async fn wait_primary(&self) -> Result<usize, Error> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = (0..self.members.len()).find(|&i| self.ready_primary(i).is_some()) {
                return Ok(i);
            }
            if Instant::now() > deadline {
                return Err(format!("no primary within {WAIT:?}").into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes `op` through whichever member is primary, following `NotPrimary` hints,
    /// and returns once it is committed. A failed attempt may still commit (a primary
    /// that stepped down with the record in its log, which the next epoch commits), so
    /// before sending it again the client waits for the primary to apply its epoch's
    /// start record and looks the write up there: each write is applied once.
    async fn put(&mut self, op: Op) -> Result<Ack, Error> {
        let deadline = Instant::now() + WAIT;
        let mut target = self.leader_guess;
        let mut failed_before = false;
        let mut redirects = Vec::new();
        loop {
            if Instant::now() > deadline {
                return Err(format!("{op:?} not acknowledged within {WAIT:?}").into());
            }
            let n = self.members.len();
            let Some(node) = self.members[target].node.as_ref() else {
                target = (target + 1) % n; // crashed: try the next member
                continue;
            };
            let id = self.members[target].id.clone();
            if failed_before && node.status().state.role == Role::Primary {
                if self.ready_primary(target).is_none() {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                let found = self.members[target].store.lock().lsn_of(&op);
                if let Some(lsn) = found {
                    println!("  {op:?} had committed at lsn {lsn} after all");
                    return Ok(self.acknowledged(target, lsn, op));
                }
            }
            match node.append(op.encode()).await {
                Ok(lsn) => {
                    if !redirects.is_empty() {
                        println!("  client: {}", redirects.join(", "));
                    }
                    return Ok(self.acknowledged(target, lsn, op));
                }
                Err(NodeError::NotPrimary {
                    epoch,
                    primary_hint,
                }) => {
                    failed_before = true;
                    match primary_hint.as_deref().and_then(|h| self.index(h)) {
                        Some(h) if h != target && self.members[h].node.is_some() => {
                            redirects.push(format!(
                                "{id} is not the primary (epoch {epoch}): hint {}",
                                self.members[h].id
                            ));
                            target = h;
                        }
                        // No primary known yet (an election is running), or a stale hint.
                        _ => {
                            target = (target + 1) % n;
                            tokio::time::sleep(POLL).await;
                        }
                    }
                }
                Err(e @ (NodeError::Primary(_) | NodeError::Stopped { .. })) => {
                    println!("  {id}: {e}; trying again");
                    failed_before = true;
                    target = (target + 1) % n;
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn acknowledged(&mut self, i: usize, lsn: Lsn, op: Op) -> Ack {
        self.leader_guess = i;
        let ack = Ack {
            lsn,
            op,
            via: self.members[i].id.clone(),
        };
        println!("  lsn {:>3} via {}: {:?}", ack.lsn, ack.via, ack.op);
        self.acked.push(ack.clone());
        ack
    }

    /// Member `i`'s store once it applied `lsn` (read-your-writes); refused while the
    /// member is halted or stopped.
    async fn read(&self, i: usize, lsn: Lsn) -> Result<Store, Error> {
        let m = &self.members[i];
        let node = m.node.as_ref().ok_or(format!("{} is down", m.id))?;
        let deadline = Instant::now() + WAIT;
        loop {
            let state = node.status().state;
            if matches!(state.role, Role::Halted | Role::Stopped) {
                return Err(format!(
                    "{} refuses reads: {:?} {:?}",
                    m.id, state.role, state.reason
                )
                .into());
            }
            let applied = {
                let store = m.store.lock();
                if store.applied >= lsn {
                    return Ok(store.clone());
                }
                store.applied
            };
            if Instant::now() > deadline {
                return Err(format!("{} applied {applied} of {lsn} within {WAIT:?}", m.id).into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// "epoch E, started at lsn L" for primary `i`.
    fn epoch_of(&self, i: usize) -> String {
        let Some(epoch) = self.ready_primary(i) else {
            return "not a primary".into();
        };
        let start = self.members[i].store.lock().epoch_start(epoch).unwrap_or(0);
        format!("epoch {epoch}, started by the control record at lsn {start}")
    }

    fn last_acked(&self) -> Lsn {
        self.acked.iter().map(|a| a.lsn).max().unwrap_or(0)
    }

    /// Waits until every member applied the cluster's first configuration record, which
    /// the primary writes by itself once every member connected. A crash before it reached
    /// the others would leave it on the crashed primary alone: a tentative record the next
    /// primary lacks, for which the restarted member halts `divergence` until an operator
    /// runs `walship-recover rejoin` (the failover drill, `walship failover-drill`, takes
    /// that path). This example shows the plain one.
    async fn wait_configured(&self) -> Result<(), Error> {
        let deadline = Instant::now() + WAIT;
        loop {
            let all = self.members.iter().all(|m| {
                m.store
                    .lock()
                    .history
                    .iter()
                    .any(|(_, a)| matches!(a, Applied::Configuration { .. }))
            });
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the first configuration record did not reach every member".into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Member `i`'s store, checked against every acknowledged write: see [`check`].
    async fn read_checked(&self, i: usize) -> Result<Store, Error> {
        let store = self.read(i, self.last_acked()).await?;
        check(&store, &self.acked).map_err(|e| format!("{}: {e}", self.members[i].id))?;
        Ok(store)
    }

    /// Restarts crashed member `i` with an empty store, once the crashed node released
    /// its directory (a crashed process's lock goes with it; here its tasks end first).
    async fn restart(&mut self, i: usize) -> Result<(), Error> {
        let dir = self.root.join(&self.members[i].id);
        let deadline = Instant::now() + WAIT;
        while DirLock::acquire(&dir).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{} still locked after {WAIT:?}", dir.display()).into());
            }
            tokio::time::sleep(POLL).await;
        }
        let store = SharedStore::default();
        let node = Node::open(self.config(&self.members[i].id), store.clone()).await?;
        self.members[i].node = Some(node);
        self.members[i].store = store;
        Ok(())
    }

    async fn shutdown(self) {
        for m in self.members {
            if let Some(n) = m.node {
                n.shutdown().await;
            }
        }
    }
}

/// Checks `store` against the acknowledged writes: its history is lsns 1, 2, 3, …
/// each once; every acknowledged write was applied exactly once, at its lsn; and the
/// map is what the acknowledged writes make, applied in lsn order.
pub fn check(store: &Store, acked: &[Ack]) -> Result<(), String> {
    for (i, (lsn, _)) in store.history.iter().enumerate() {
        if *lsn != i as Lsn + 1 {
            return Err(format!("history position {i} holds lsn {lsn}"));
        }
    }
    let mut expected = Store::default().map;
    let mut by_lsn: Vec<&Ack> = acked.iter().collect();
    by_lsn.sort_by_key(|a| a.lsn);
    for a in by_lsn {
        let applied: Vec<Lsn> = store
            .history
            .iter()
            .filter(|(_, x)| *x == Applied::Op(a.op.clone()))
            .map(|(l, _)| *l)
            .collect();
        if applied != [a.lsn] {
            return Err(format!(
                "{:?} acknowledged at lsn {} applied at {applied:?}",
                a.op, a.lsn
            ));
        }
        match &a.op {
            Op::Put { key, value } => expected.insert(key.clone(), value.clone()),
            Op::Delete { key } => expected.remove(key),
        };
    }
    if store.map != expected {
        return Err(format!(
            "map {:?} differs from the acknowledged writes' {expected:?}",
            store.map
        ));
    }
    Ok(())
}

#[tokio::main]
#[allow(dead_code)] // unused when tests/kv_example.rs includes this file as a module
async fn main() -> Result<(), Error> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    run().await.map(|_| ())
}

/// The whole example; also run by `tests/kv_example.rs`.
pub async fn run() -> Result<Outcome, Error> {
    let dir = tempfile::tempdir()?;
    let mut c = Cluster::start(dir.path(), &["kv1", "kv2", "kv3"]).await?;

    let p = c.wait_primary().await?;
    println!("{} leads ({})", c.members[p].id, c.epoch_of(p));
    println!("puts (a client that starts at kv1 and follows NotPrimary hints):");
    for op in [
        Op::put("alice", "42"),
        Op::put("bob", "7"),
        Op::put("carol", "13"),
        Op::Delete { key: "bob".into() },
    ] {
        c.put(op).await?;
    }
    for i in 0..c.members.len() {
        let store = c.read_checked(i).await?;
        println!(
            "{} reads (applied lsn {}): {:?}",
            c.members[i].id, store.applied, store.map
        );
    }

    // Crash: the primary's node goes away without a shutdown, and its store with it
    // (once nothing but acknowledged writes is in its log: see `wait_configured`).
    c.wait_configured().await?;
    let crashed = c.leader_guess;
    let crashed_id = c.members[crashed].id.clone();
    drop(c.members[crashed].node.take());
    c.members[crashed].store = SharedStore::default();
    let crash = Instant::now();
    println!("{crashed_id} crashed (its Node dropped without a shutdown)");
    println!("puts:");
    for i in 0..5 {
        c.put(Op::put(&format!("after-crash-{i}"), &format!("v{i}")))
            .await?;
        if i == 0 {
            println!(
                "  writes resumed {} ms after the crash",
                crash.elapsed().as_millis()
            );
        }
    }
    let q = c.leader_guess;
    let after_failover = c.read_checked(q).await?;
    println!(
        "new primary {} ({}) holds every acknowledged write ({} of them): {:?}",
        c.members[q].id,
        c.epoch_of(q),
        c.acked.len(),
        after_failover.map
    );
    let after_failover = (c.members[q].id.clone(), after_failover);

    // The crashed member restarts (empty store: its node replays its WAL, then
    // follows), catches up, and takes the primary role back by switchover.
    c.restart(crashed).await?;
    let rejoined = c.read_checked(crashed).await?;
    println!(
        "{crashed_id} restarted and caught up: applied lsn {}",
        rejoined.applied
    );
    let primary = c.members[q].node.as_ref().ok_or("the primary is down")?;
    let pause = primary.switchover(&crashed_id, WAIT).await?;
    println!(
        "switchover {} -> {crashed_id}: write pause {} ms",
        c.members[q].id,
        pause.as_millis()
    );
    println!("puts:");
    for i in 0..5 {
        c.put(Op::put(&format!("after-switchover-{i}"), &format!("w{i}")))
            .await?;
    }
    if c.leader_guess != crashed {
        return Err(format!(
            "writes went to {} instead of {crashed_id}",
            c.members[c.leader_guess].id
        )
        .into());
    }
    let after_switchover = c.read_checked(crashed).await?;
    println!(
        "primary {crashed_id} ({}) holds every acknowledged write ({} of them)",
        c.epoch_of(crashed),
        c.acked.len()
    );
    let mut members_at_end = Vec::new();
    for i in 0..c.members.len() {
        let store = c.read_checked(i).await?;
        println!(
            "{} reads (applied lsn {}): {} keys",
            c.members[i].id,
            store.applied,
            store.map.len()
        );
        members_at_end.push((c.members[i].id.clone(), store));
    }
    let outcome = Outcome {
        acked: c.acked.clone(),
        after_failover,
        after_switchover: (crashed_id, after_switchover),
        members_at_end,
        switchover_pause: pause,
    };
    c.shutdown().await;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_round_trip_and_bad_input() {
        for op in [
            Op::put("k", "v"),
            Op::put("", ""),
            Op::Delete { key: "k".into() },
        ] {
            assert_eq!(Op::decode(&op.encode()), Ok(op));
        }
        assert!(Op::decode(b"").is_err());
        assert!(Op::decode(b"S\xff\xff\xff\xffab").is_err());
        assert!(Op::decode(b"X").is_err());
    }

    #[test]
    fn the_store_refuses_a_gap_or_a_repeat_and_check_sees_a_missing_write() {
        let mut s = Store::default();
        s.apply(1, Applied::EpochStart { epoch: 1 }).expect("first");
        s.apply(2, Applied::Op(Op::put("a", "1"))).expect("next");
        assert!(s.apply(2, Applied::Op(Op::put("a", "1"))).is_err());
        assert!(s.apply(4, Applied::Op(Op::put("b", "2"))).is_err());
        let ack = |lsn, op| Ack {
            lsn,
            op,
            via: "kv1".into(),
        };
        assert_eq!(check(&s, &[ack(2, Op::put("a", "1"))]), Ok(()));
        assert!(check(&s, &[ack(3, Op::put("b", "2"))]).is_err());
        assert!(check(&s, &[ack(3, Op::put("a", "1"))]).is_err());
    }
}
