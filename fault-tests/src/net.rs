//! `SimNet`: a seeded, simulated network between sans-IO cores.
//!
//! It models what the replication code actually sees from QUIC: each
//! connection carries one ordered, reliable byte stream per direction,
//! chopped into datagrams of at most `mtu_bytes`. Below that stream the
//! links are hostile — datagrams are dropped, delayed, duplicated,
//! reordered and corrupted, each from the one seeded [`SimRng`] — and the
//! model does what QUIC does about it: a per-datagram tag (standing for
//! packet protection) rejects corrupted datagrams, offsets discard
//! duplicates and reassemble reordered ones, and lost datagrams are
//! retransmitted after `rto_ms`. What the application sees is therefore
//! exactly the sender's bytes, in order, with arbitrary delays and
//! arbitrary chunk boundaries (frames split mid-way), or a connection that
//! ends — at an arbitrary byte — when a partition or a dead peer keeps a
//! side silent for `idle_timeout_ms`.
//!
//! Faults that corrupt a *complete frame* are not network faults (the
//! network cannot produce them past packet protection); the simulator
//! injects those above this layer, as a faulty sender.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::rng::{fnv1a64, SimRng};

/// Index of a simulated node.
pub type NodeId = usize;

/// Identifier of one simulated connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Datagram-level fault probabilities, per mille, and delay bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFaults {
    /// A datagram is lost (and later retransmitted by its sender).
    pub drop_per_mille: u32,
    /// A datagram is delivered twice.
    pub duplicate_per_mille: u32,
    /// A datagram gets an extra delay, overtaking-style reordering.
    pub reorder_per_mille: u32,
    /// A datagram's bytes are damaged (packet protection rejects it).
    pub corrupt_per_mille: u32,
    /// Smallest one-way delay.
    pub min_delay_ms: u64,
    /// Largest one-way delay (before reordering extra).
    pub max_delay_ms: u64,
}

impl NetFaults {
    /// A clean network: no loss, no duplication, fixed 1 ms delay.
    pub fn none() -> Self {
        Self {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            reorder_per_mille: 0,
            corrupt_per_mille: 0,
            min_delay_ms: 1,
            max_delay_ms: 1,
        }
    }

    /// Heavy transport noise, as used by FM-X.1.
    pub fn noisy() -> Self {
        Self {
            drop_per_mille: 100,
            duplicate_per_mille: 100,
            reorder_per_mille: 150,
            corrupt_per_mille: 50,
            min_delay_ms: 1,
            max_delay_ms: 20,
        }
    }
}

/// Network parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Largest datagram payload.
    pub mtu_bytes: usize,
    /// Retransmission timeout of a lost datagram.
    pub rto_ms: u64,
    /// A side that hears nothing from its peer this long closes the connection.
    pub idle_timeout_ms: u64,
    /// Link bandwidth per direction (0: unlimited). A large write leaves the
    /// sender over time, so a crash or partition can cut it in the middle.
    pub bandwidth_bytes_per_ms: u64,
    /// Datagram faults.
    pub faults: NetFaults,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            mtu_bytes: 1200,
            rto_ms: 30,
            idle_timeout_ms: 1_000,
            bandwidth_bytes_per_ms: 0,
            faults: NetFaults::none(),
        }
    }
}

/// Why a connection ended on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed it explicitly.
    PeerClosed,
    /// Nothing was heard from the peer for `idle_timeout_ms` (partition, dead peer).
    IdleTimeout,
}

/// What the network delivers to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// `to` accepted a connection opened by `from`.
    Accepted {
        /// The connection.
        conn: ConnId,
        /// The accepting node.
        to: NodeId,
        /// The connecting node.
        from: NodeId,
    },
    /// In-order stream bytes for `to` (a chunk; frames may be split anywhere).
    Data {
        /// The connection.
        conn: ConnId,
        /// Receiving node.
        to: NodeId,
        /// Sending node.
        from: NodeId,
        /// The next bytes of the stream.
        bytes: Vec<u8>,
    },
    /// The connection ended for `at`.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The node whose side closed.
        at: NodeId,
        /// The other node.
        peer: NodeId,
        /// Why.
        reason: CloseReason,
    },
}

/// Counters of what the network did, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams put on the wire (including retransmissions and duplicates).
    pub datagrams_sent: u64,
    /// Datagrams dropped by the fault model.
    pub dropped: u64,
    /// Extra copies injected.
    pub duplicated: u64,
    /// Datagrams given an extra, reordering delay.
    pub reordered: u64,
    /// Datagrams damaged in flight.
    pub corrupted: u64,
    /// Damaged datagrams rejected by the receiver's tag check.
    pub rejected_corrupt: u64,
    /// Duplicate datagrams discarded by offset.
    pub discarded_duplicate: u64,
    /// Datagrams lost to a partition or a dead receiver.
    pub lost_unreachable: u64,
    /// Retransmissions scheduled.
    pub retransmitted: u64,
    /// Stream bytes delivered to applications.
    pub bytes_delivered: u64,
}

impl NetStats {
    /// Total datagram-level faults injected (drop + duplicate + reorder + corrupt).
    pub fn faults_injected(&self) -> u64 {
        self.dropped + self.duplicated + self.reordered + self.corrupted
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Payload {
    Data { offset: u64, bytes: Vec<u8> },
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Datagram {
    conn: ConnId,
    from: NodeId,
    to: NodeId,
    /// The payload as sent (intact; the sender keeps it for retransmission).
    payload: Payload,
    /// The tag computed by the sender over `payload`.
    tag: u64,
    /// Damage done in flight: (byte index, bit) flipped in a data payload,
    /// or a damaged tag when the payload is empty.
    damage: Option<(usize, u8)>,
    /// When it leaves the sender (a crash before then loses it).
    depart_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlightKind {
    /// A datagram on the wire.
    Wire,
    /// The sender's loss timer: re-send the datagram if its side is still open.
    Retransmit,
}

fn tag_of(conn: ConnId, from: NodeId, payload: &Payload) -> u64 {
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(&conn.0.to_le_bytes());
    buf.extend_from_slice(&(from as u64).to_le_bytes());
    match payload {
        Payload::Data { offset, bytes } => {
            buf.push(1);
            buf.extend_from_slice(&offset.to_le_bytes());
            buf.extend_from_slice(bytes);
        }
        Payload::Close => buf.push(2),
    }
    fnv1a64(&buf)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    at_ms: u64,
    seq: u64,
    kind: FlightKind,
    dgram: Datagram,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    node: NodeId,
    open: bool,
    next_send: u64,
    next_recv: u64,
    reassembly: BTreeMap<u64, Vec<u8>>,
    /// Since when this side has been unable to hear its peer.
    silent_since: Option<u64>,
}

impl Endpoint {
    fn new(node: NodeId) -> Self {
        Self {
            node,
            open: true,
            next_send: 0,
            next_recv: 0,
            reassembly: BTreeMap::new(),
            silent_since: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Conn {
    ends: [Endpoint; 2],
}

impl Conn {
    fn side(&self, node: NodeId) -> Option<usize> {
        self.ends.iter().position(|e| e.node == node)
    }
}

/// Upper bound on in-flight datagrams: a run that exceeds it is a harness bug.
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// The simulated network.
#[derive(Debug)]
pub struct SimNet {
    cfg: NetConfig,
    rng: SimRng,
    down: BTreeSet<NodeId>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    heap: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    pending: Vec<NetEvent>,
    stats: NetStats,
    /// Per directed link: when its sender finishes writing what is queued.
    link_free_at: BTreeMap<(NodeId, NodeId), u64>,
}

impl SimNet {
    /// A network with the given parameters; every decision comes from `rng`.
    pub fn new(cfg: NetConfig, rng: SimRng) -> Self {
        assert!(cfg.mtu_bytes > 0, "mtu must be positive");
        assert!(
            cfg.faults.min_delay_ms <= cfg.faults.max_delay_ms,
            "min delay above max delay"
        );
        Self {
            cfg,
            rng,
            down: BTreeSet::new(),
            blocked: BTreeSet::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            heap: BinaryHeap::new(),
            seq: 0,
            pending: Vec::new(),
            stats: NetStats::default(),
            link_free_at: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Replaces the datagram fault model (e.g. heal all noise for the liveness phase).
    pub fn set_faults(&mut self, faults: NetFaults) {
        assert!(faults.min_delay_ms <= faults.max_delay_ms);
        self.cfg.faults = faults;
    }

    /// What the network has done so far.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Opens a connection from `from` to `to`. Returns `None` (connection
    /// refused / unreachable) if either node is down or the link is blocked
    /// in either direction. The acceptor learns of it through
    /// [`NetEvent::Accepted`] on the next poll.
    pub fn connect(&mut self, from: NodeId, to: NodeId, now_ms: u64) -> Option<ConnId> {
        assert_ne!(from, to, "a node does not connect to itself");
        if !self.reachable(from, to) {
            return None;
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                ends: [Endpoint::new(from), Endpoint::new(to)],
            },
        );
        self.pending.push(NetEvent::Accepted { conn: id, to, from });
        self.refresh(now_ms);
        Some(id)
    }

    /// True if `conn` is open on `node`'s side.
    pub fn is_open(&self, conn: ConnId, node: NodeId) -> bool {
        self.conns
            .get(&conn)
            .and_then(|c| c.side(node).map(|s| c.ends[s].open))
            .unwrap_or(false)
    }

    /// Writes `bytes` to `node`'s send stream on `conn`. Ignored if that side
    /// is closed (the application's write fails, as on a closed QUIC stream).
    pub fn send(&mut self, conn: ConnId, node: NodeId, bytes: &[u8], now_ms: u64) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let Some(s) = c.side(node) else { return false };
        if !c.ends[s].open || self.down.contains(&node) {
            return false;
        }
        let peer = c.ends[1 - s].node;
        let mut chunks = Vec::new();
        for chunk in bytes.chunks(self.cfg.mtu_bytes) {
            let offset = c.ends[s].next_send;
            c.ends[s].next_send += chunk.len() as u64;
            chunks.push(Payload::Data {
                offset,
                bytes: chunk.to_vec(),
            });
        }
        for p in chunks {
            let depart = self.departure(node, peer, &p, now_ms);
            self.transmit(conn, node, peer, p, depart);
        }
        true
    }

    /// When a datagram written now leaves `from` towards `to`, given the
    /// link's bandwidth and what is already queued on it.
    fn departure(&mut self, from: NodeId, to: NodeId, p: &Payload, now_ms: u64) -> u64 {
        let bw = self.cfg.bandwidth_bytes_per_ms;
        if bw == 0 {
            return now_ms;
        }
        let len = match p {
            Payload::Data { bytes, .. } => bytes.len() as u64,
            Payload::Close => 0,
        };
        let free = self.link_free_at.entry((from, to)).or_insert(0);
        let depart = (*free).max(now_ms);
        *free = depart + len.div_ceil(bw);
        depart
    }

    /// Closes `node`'s side of `conn` now; the peer learns it when the close
    /// datagram arrives, or by idle timeout if it cannot.
    pub fn close(&mut self, conn: ConnId, node: NodeId, now_ms: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(s) = c.side(node) else { return };
        if !c.ends[s].open {
            return;
        }
        c.ends[s].open = false;
        let peer = c.ends[1 - s].node;
        let depart = self.departure(node, peer, &Payload::Close, now_ms);
        self.transmit(conn, node, peer, Payload::Close, depart);
        self.refresh(now_ms);
    }

    /// Blocks the directed link `from -> to` (half of a partition).
    pub fn block(&mut self, from: NodeId, to: NodeId, now_ms: u64) {
        self.blocked.insert((from, to));
        self.refresh(now_ms);
    }

    /// Partitions `a` and `b` from each other (both directions).
    pub fn partition(&mut self, a: NodeId, b: NodeId, now_ms: u64) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
        self.refresh(now_ms);
    }

    /// Heals the partition between `a` and `b`.
    pub fn heal(&mut self, a: NodeId, b: NodeId, now_ms: u64) {
        self.blocked.remove(&(a, b));
        self.blocked.remove(&(b, a));
        self.refresh(now_ms);
    }

    /// Heals every partition.
    pub fn heal_all(&mut self, now_ms: u64) {
        self.blocked.clear();
        self.refresh(now_ms);
    }

    /// True if `a` and `b` can currently exchange datagrams both ways.
    pub fn reachable(&self, a: NodeId, b: NodeId) -> bool {
        !self.down.contains(&a)
            && !self.down.contains(&b)
            && !self.blocked.contains(&(a, b))
            && !self.blocked.contains(&(b, a))
    }

    /// True if some link is blocked.
    pub fn has_partitions(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// The node crashed: its sides of every connection vanish without a
    /// word (as with kill -9 or power loss); peers notice by idle timeout.
    /// Datagrams it already put on the wire may still arrive; those still
    /// queued behind the link's bandwidth are lost.
    pub fn crash_node(&mut self, node: NodeId, now_ms: u64) {
        self.down.insert(node);
        // What had not left the machine yet dies with it.
        let before = self.heap.len();
        self.heap.retain(|f| {
            let f = &f.0;
            !(f.dgram.from == node && f.kind == FlightKind::Wire && f.dgram.depart_ms > now_ms)
        });
        self.stats.lost_unreachable += (before - self.heap.len()) as u64;
        self.link_free_at.retain(|(from, _), _| *from != node);
        for c in self.conns.values_mut() {
            if let Some(s) = c.side(node) {
                c.ends[s].open = false;
                c.ends[s].reassembly.clear();
            }
        }
        self.refresh(now_ms);
    }

    /// The node is running again (it opens new connections; old ones are gone).
    pub fn restart_node(&mut self, node: NodeId, now_ms: u64) {
        self.down.remove(&node);
        self.refresh(now_ms);
    }

    /// True if the node is down.
    pub fn is_down(&self, node: NodeId) -> bool {
        self.down.contains(&node)
    }

    /// The earliest time at which [`SimNet::poll`] has something to do.
    pub fn next_event_ms(&self) -> Option<u64> {
        if !self.pending.is_empty() {
            return Some(0);
        }
        let head = self.heap.peek().map(|r| r.0.at_ms);
        let timeout = self
            .conns
            .values()
            .flat_map(|c| c.ends.iter())
            .filter(|e| e.open)
            .filter_map(|e| e.silent_since.map(|t| t + self.cfg.idle_timeout_ms))
            .min();
        match (head, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Delivers everything due at or before `now_ms`, in time order.
    pub fn poll(&mut self, now_ms: u64) -> Vec<NetEvent> {
        let mut out = std::mem::take(&mut self.pending);
        loop {
            let due = matches!(self.heap.peek(), Some(Reverse(f)) if f.at_ms <= now_ms);
            if !due {
                break;
            }
            let Some(Reverse(f)) = self.heap.pop() else {
                break;
            };
            self.deliver(f, &mut out);
        }
        self.refresh(now_ms);
        // Idle timeouts.
        for (id, c) in self.conns.iter_mut() {
            for s in 0..2 {
                let peer = c.ends[1 - s].node;
                let e = &mut c.ends[s];
                if e.open {
                    if let Some(t) = e.silent_since {
                        if t + self.cfg.idle_timeout_ms <= now_ms {
                            e.open = false;
                            e.reassembly.clear();
                            out.push(NetEvent::Closed {
                                conn: *id,
                                at: e.node,
                                peer,
                                reason: CloseReason::IdleTimeout,
                            });
                        }
                    }
                }
            }
        }
        self.conns.retain(|_, c| c.ends[0].open || c.ends[1].open);
        out
    }

    fn refresh(&mut self, now_ms: u64) {
        let down = &self.down;
        let blocked = &self.blocked;
        for c in self.conns.values_mut() {
            for s in 0..2 {
                let peer_open = c.ends[1 - s].open;
                let me = c.ends[s].node;
                let peer = c.ends[1 - s].node;
                let ok = peer_open
                    && !down.contains(&me)
                    && !down.contains(&peer)
                    && !blocked.contains(&(me, peer))
                    && !blocked.contains(&(peer, me));
                let e = &mut c.ends[s];
                if ok {
                    e.silent_since = None;
                } else if e.silent_since.is_none() {
                    e.silent_since = Some(now_ms);
                }
            }
        }
    }

    fn delay(&mut self) -> u64 {
        let f = &self.cfg.faults;
        let (lo, hi) = (f.min_delay_ms, f.max_delay_ms);
        let mut d = self.rng.range(lo, hi);
        if self.rng.chance(self.cfg.faults.reorder_per_mille) {
            self.stats.reordered += 1;
            d += self.rng.range(1, 4 * hi.max(1));
        }
        d
    }

    fn push(&mut self, at_ms: u64, kind: FlightKind, dgram: Datagram) {
        assert!(
            self.heap.len() < MAX_IN_FLIGHT,
            "SimNet: more than {MAX_IN_FLIGHT} datagrams in flight"
        );
        self.seq += 1;
        if kind == FlightKind::Wire {
            self.stats.datagrams_sent += 1;
        } else {
            self.stats.retransmitted += 1;
        }
        self.heap.push(Reverse(InFlight {
            at_ms,
            seq: self.seq,
            kind,
            dgram,
        }));
    }

    /// Puts one datagram on the wire, applying the fault model.
    fn transmit(&mut self, conn: ConnId, from: NodeId, to: NodeId, payload: Payload, now_ms: u64) {
        let tag = tag_of(conn, from, &payload);
        let dgram = Datagram {
            conn,
            from,
            to,
            payload,
            tag,
            damage: None,
            depart_ms: now_ms,
        };
        if self.rng.chance(self.cfg.faults.drop_per_mille) {
            self.stats.dropped += 1;
            // The sender's loss detection re-sends the same datagram.
            self.push(now_ms + self.cfg.rto_ms, FlightKind::Retransmit, dgram);
            return;
        }
        if self.rng.chance(self.cfg.faults.duplicate_per_mille) {
            self.stats.duplicated += 1;
            let d = self.delay();
            self.push(now_ms + d, FlightKind::Wire, dgram.clone());
        }
        let mut sent = dgram;
        if self.rng.chance(self.cfg.faults.corrupt_per_mille) {
            self.stats.corrupted += 1;
            let len = match &sent.payload {
                Payload::Data { bytes, .. } => bytes.len(),
                Payload::Close => 0,
            };
            let bit = self.rng.range(0, 7) as u8;
            let at = if len == 0 {
                usize::MAX
            } else {
                self.rng.index(len)
            };
            sent.damage = Some((at, bit));
        }
        let d = self.delay();
        self.push(now_ms + d, FlightKind::Wire, sent);
    }

    fn sender_alive(&self, d: &Datagram) -> bool {
        self.is_open(d.conn, d.from) && !self.down.contains(&d.from)
    }

    fn deliver(&mut self, f: InFlight, out: &mut Vec<NetEvent>) {
        let now_ms = f.at_ms;
        let mut d = f.dgram;
        if f.kind == FlightKind::Retransmit {
            // Data of a dead or closed sender side is gone with it.
            if self.sender_alive(&d) {
                let (conn, from, to, payload) = (d.conn, d.from, d.to, d.payload);
                self.transmit(conn, from, to, payload, now_ms);
            }
            return;
        }
        // On the wire: lost if the link is cut or the receiver is down.
        if self.blocked.contains(&(d.from, d.to)) || self.down.contains(&d.to) {
            self.stats.lost_unreachable += 1;
            if self.sender_alive(&d) {
                d.damage = None;
                self.push(now_ms + self.cfg.rto_ms, FlightKind::Retransmit, d);
            }
            return;
        }
        if let Some((at, bit)) = d.damage.take() {
            // What the receiver got: the damaged bytes; the tag check (packet
            // protection) rejects them, and the sender re-sends its intact copy.
            let mut received = d.payload.clone();
            let mut tag = d.tag;
            match &mut received {
                Payload::Data { bytes, .. } if at < bytes.len() => bytes[at] ^= 1 << bit,
                _ => tag ^= 1 << bit,
            }
            assert_ne!(
                tag_of(d.conn, d.from, &received),
                tag,
                "SimNet: damaged datagram passed the tag check"
            );
            self.stats.rejected_corrupt += 1;
            if self.sender_alive(&d) {
                self.push(now_ms + self.cfg.rto_ms, FlightKind::Retransmit, d);
            }
            return;
        }
        debug_assert_eq!(tag_of(d.conn, d.from, &d.payload), d.tag);
        let Some(c) = self.conns.get_mut(&d.conn) else {
            return;
        };
        let Some(s) = c.side(d.to) else { return };
        let peer = c.ends[1 - s].node;
        let e = &mut c.ends[s];
        if !e.open {
            return;
        }
        match d.payload {
            Payload::Close => {
                e.open = false;
                e.reassembly.clear();
                out.push(NetEvent::Closed {
                    conn: d.conn,
                    at: d.to,
                    peer,
                    reason: CloseReason::PeerClosed,
                });
            }
            Payload::Data { offset, bytes } => {
                let end = offset + bytes.len() as u64;
                if end <= e.next_recv || e.reassembly.contains_key(&offset) {
                    self.stats.discarded_duplicate += 1;
                    return;
                }
                e.reassembly.insert(offset, bytes);
                let mut ready = Vec::new();
                while let Some(chunk) = e.reassembly.remove(&e.next_recv) {
                    e.next_recv += chunk.len() as u64;
                    ready.extend_from_slice(&chunk);
                }
                if !ready.is_empty() {
                    self.stats.bytes_delivered += ready.len() as u64;
                    out.push(NetEvent::Data {
                        conn: d.conn,
                        to: d.to,
                        from: d.from,
                        bytes: ready,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the network until quiet or `until_ms`, collecting events.
    fn run(net: &mut SimNet, from_ms: u64, until_ms: u64) -> (Vec<NetEvent>, u64) {
        let mut now = from_ms;
        let mut all = Vec::new();
        while let Some(t) = net.next_event_ms() {
            let t = t.max(now);
            if t > until_ms {
                break;
            }
            now = t;
            all.extend(net.poll(now));
        }
        (all, now)
    }

    fn received(events: &[NetEvent], to: NodeId) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                NetEvent::Data { to: t, bytes, .. } if *t == to => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn payload(n: usize, seed: u64) -> Vec<u8> {
        let mut r = SimRng::new(seed);
        let mut v = vec![0u8; n];
        r.fill(&mut v);
        v
    }

    #[test]
    fn clean_network_delivers_stream_in_order() {
        let mut net = SimNet::new(NetConfig::default(), SimRng::new(1));
        let c = net.connect(0, 1, 0).expect("reachable");
        let data = payload(10_000, 2);
        assert!(net.send(c, 0, &data, 0));
        let (ev, _) = run(&mut net, 0, 10_000);
        assert!(matches!(ev[0], NetEvent::Accepted { to: 1, from: 0, .. }));
        assert_eq!(received(&ev, 1), data);
    }

    #[test]
    fn noisy_network_delivers_exact_stream_for_many_seeds() {
        let mut totals = NetStats::default();
        for seed in 0..40 {
            let cfg = NetConfig {
                faults: NetFaults::noisy(),
                idle_timeout_ms: u64::MAX / 4,
                ..NetConfig::default()
            };
            let mut net = SimNet::new(cfg, SimRng::new(seed));
            let c = net.connect(0, 1, 0).expect("reachable");
            let a = payload(20_000, seed);
            let b = payload(5_000, seed + 1000);
            net.send(c, 0, &a[..7_000], 0);
            net.send(c, 1, &b, 3);
            net.send(c, 0, &a[7_000..], 5);
            let (ev, _) = run(&mut net, 0, 1_000_000);
            assert_eq!(received(&ev, 1), a, "seed {seed}");
            assert_eq!(received(&ev, 0), b, "seed {seed}");
            let s = net.stats();
            assert_eq!(
                s.rejected_corrupt, s.corrupted,
                "every damaged datagram is rejected"
            );
            totals.dropped += s.dropped;
            totals.duplicated += s.duplicated;
            totals.corrupted += s.corrupted;
            totals.reordered += s.reordered;
        }
        assert!(
            totals.dropped > 0
                && totals.duplicated > 0
                && totals.corrupted > 0
                && totals.reordered > 0,
            "{totals:?}"
        );
    }

    #[test]
    fn short_partition_then_heal_loses_nothing() {
        let mut net = SimNet::new(NetConfig::default(), SimRng::new(3));
        let c = net.connect(0, 1, 0).expect("reachable");
        net.partition(0, 1, 0);
        let data = payload(5_000, 4);
        net.send(c, 0, &data, 0);
        let (ev, now) = run(&mut net, 0, 500);
        assert!(received(&ev, 1).is_empty());
        net.heal(0, 1, now);
        let (ev2, _) = run(&mut net, now, 100_000);
        assert_eq!(received(&ev2, 1), data);
        assert!(!ev2.iter().any(|e| matches!(e, NetEvent::Closed { .. })));
    }

    #[test]
    fn long_partition_ends_the_session_on_both_sides_by_idle_timeout() {
        let mut net = SimNet::new(NetConfig::default(), SimRng::new(5));
        let c = net.connect(0, 1, 0).expect("reachable");
        net.partition(0, 1, 10);
        let (ev, _) = run(&mut net, 10, 100_000);
        let closed: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                NetEvent::Closed {
                    at, reason, conn, ..
                } => Some((*at, *reason, *conn)),
                _ => None,
            })
            .collect();
        assert_eq!(
            closed,
            vec![
                (0, CloseReason::IdleTimeout, c),
                (1, CloseReason::IdleTimeout, c)
            ]
        );
        assert!(net.connect(0, 1, 2000).is_none(), "still partitioned");
    }

    #[test]
    fn crashed_sender_leaves_a_prefix_and_the_peer_times_out() {
        let cfg = NetConfig {
            faults: NetFaults {
                min_delay_ms: 1,
                max_delay_ms: 10,
                ..NetFaults::noisy()
            },
            ..NetConfig::default()
        };
        for seed in 0..20 {
            let mut net = SimNet::new(cfg.clone(), SimRng::new(seed));
            let c = net.connect(0, 1, 0).expect("reachable");
            let data = payload(30_000, seed);
            net.send(c, 0, &data, 0);
            let (ev, now) = run(&mut net, 0, 4);
            net.crash_node(0, now);
            let (ev2, _) = run(&mut net, now, 100_000);
            let mut got = received(&ev, 1);
            got.extend(received(&ev2, 1));
            assert!(
                got.len() < data.len(),
                "seed {seed}: crash must cut the stream"
            );
            assert_eq!(&data[..got.len()], &got[..], "seed {seed}: a prefix");
            assert!(ev2.iter().any(|e| matches!(
                e,
                NetEvent::Closed {
                    at: 1,
                    reason: CloseReason::IdleTimeout,
                    ..
                }
            )));
        }
    }

    #[test]
    fn limited_bandwidth_crash_cuts_a_large_write_mid_way() {
        let cfg = NetConfig {
            bandwidth_bytes_per_ms: 100,
            ..NetConfig::default()
        };
        let mut net = SimNet::new(cfg, SimRng::new(21));
        let c = net.connect(0, 1, 0).expect("reachable");
        let data = payload(10_000, 21);
        net.send(c, 0, &data, 0);
        // 10 000 bytes at 100 B/ms take 100 ms to leave; crash after 30 ms.
        let (ev, now) = run(&mut net, 0, 30);
        net.crash_node(0, now);
        let (ev2, _) = run(&mut net, now, 100_000);
        let mut got = received(&ev, 1);
        got.extend(received(&ev2, 1));
        assert!(
            !got.is_empty() && got.len() < data.len(),
            "got {} bytes",
            got.len()
        );
        assert_eq!(&data[..got.len()], &got[..]);
        assert!(net.stats().lost_unreachable > 0);
    }

    #[test]
    fn explicit_close_reaches_peer() {
        let mut net = SimNet::new(NetConfig::default(), SimRng::new(9));
        let c = net.connect(0, 1, 0).expect("reachable");
        net.close(c, 1, 0);
        let (ev, _) = run(&mut net, 0, 10_000);
        assert!(ev.iter().any(|e| matches!(
            e,
            NetEvent::Closed {
                at: 0,
                reason: CloseReason::PeerClosed,
                ..
            }
        )));
        assert!(!net.is_open(c, 0) && !net.is_open(c, 1));
    }

    #[test]
    fn same_seed_same_events() {
        let go = |seed| {
            let cfg = NetConfig {
                faults: NetFaults::noisy(),
                ..NetConfig::default()
            };
            let mut net = SimNet::new(cfg, SimRng::new(seed));
            let c = net.connect(0, 1, 0).expect("reachable");
            net.send(c, 0, &payload(9_000, 1), 0);
            run(&mut net, 0, 100_000).0
        };
        assert_eq!(go(11), go(11));
        assert_ne!(go(11), go(12));
    }
}
