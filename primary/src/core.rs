//! The sans-IO primary core: handshake checks, pipelined shipping with a bounded
//! in-flight window per replica, receipts and quorum commit arithmetic.
//!
//! [`PrimaryCore::handle`] takes an [`Event`] (a replica connected, a message arrived, the
//! connection ended, the local durable lsn advanced, a tick) with `now_ms` passed in and
//! returns the [`Action`]s the driver must perform (send a message, close a connection,
//! announce a commit advance). It owns no socket, thread, clock or file. Where it must
//! look at the log (the handshake's `position_at`, reading batches to ship) it is handed a
//! `&mut dyn` [`LogSource`], which the tokio driver implements over
//! `SharedWal<FsStorage>` and the simulator over a `Wal<SimStorage>`.
//!
//! Invariants kept here (and asserted):
//! - `commit_lsn` never decreases and never exceeds the local durable lsn;
//! - only locally durable records are shipped (`read_batch` results beyond
//!   [`LogSource::durable`] are a broken invariant);
//! - per replica, bytes and records in flight (shipped, not yet covered by a receipt) stay
//!   within the window, except that a single batch larger than the window is still
//!   shipped when nothing else is in flight (otherwise a large record would stall forever);
//! - batches shipped on one connection are contiguous: each starts at the previous last + 1.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

#[cfg(feature = "fault-injection")]
use walship_wal::RECORD_HEADER_LEN;
use walship_wal::{Lsn, Position};

use crate::proto::{
    EpochEntry, Hello, Message, RecordBatch, Refuse, RefuseReason, WalError, Welcome,
    PROTOCOL_VERSION,
};

/// Identifies one replica connection inside the driver (assigned by the driver, never reused).
pub type ConnId = u64;

/// The quorum policy (seed 000): how many durable copies make a record committed.
///
/// `N` is the number of configured members including the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// Setting `0`: committed on the primary's local fsync (asynchronous replication).
    LocalOnly,
    /// Setting `-1` (default): `floor(N/2)` replica receipts, the primary's own durable
    /// write counting as one more copy.
    Majority,
    /// Setting `k > 0`: exactly `k` replica receipts (plus the primary's own durable write).
    Exactly(u32),
}

/// A quorum setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// Settings below -1 have no meaning.
    #[error(
        "quorum setting {setting} is invalid: use 0 (local only), -1 (majority) or k > 0 receipts"
    )]
    InvalidSetting {
        /// The setting as given.
        setting: i64,
    },
    /// `Exactly(k)` needs more replicas than are configured: nothing would ever commit.
    #[error("quorum needs {needed} replica receipts but only {replicas} replicas are configured")]
    Unsatisfiable {
        /// Receipts the policy needs.
        needed: usize,
        /// Replicas configured (members minus the primary).
        replicas: usize,
    },
}

impl Quorum {
    /// Parses the configuration setting: `0` local only, `-1` majority, `k > 0` exactly k.
    pub fn from_setting(setting: i64) -> Result<Quorum, QuorumError> {
        match setting {
            0 => Ok(Quorum::LocalOnly),
            -1 => Ok(Quorum::Majority),
            k if k > 0 && k <= i64::from(u32::MAX) => Ok(Quorum::Exactly(k as u32)),
            _ => Err(QuorumError::InvalidSetting { setting }),
        }
    }

    /// The configuration setting this policy is written as.
    pub fn setting(&self) -> i64 {
        match self {
            Quorum::LocalOnly => 0,
            Quorum::Majority => -1,
            Quorum::Exactly(k) => i64::from(*k),
        }
    }

    /// Replica receipts needed with `members` configured members (the primary included).
    pub fn receipts_needed(&self, members: usize) -> usize {
        match self {
            Quorum::LocalOnly => 0,
            Quorum::Majority => members / 2,
            Quorum::Exactly(k) => *k as usize,
        }
    }

    /// Checks that the policy can ever commit with `members` configured members.
    pub fn validate(&self, members: usize) -> Result<(), QuorumError> {
        let needed = self.receipts_needed(members);
        let replicas = members.saturating_sub(1);
        if needed > replicas {
            return Err(QuorumError::Unsatisfiable { needed, replicas });
        }
        Ok(())
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::LocalOnly => write!(f, "local-only (0)"),
            Quorum::Majority => write!(f, "majority (-1)"),
            Quorum::Exactly(k) => write!(f, "exactly {k} receipts"),
        }
    }
}

/// The highest lsn covered by `needed` replica copies plus the local durable copy: the
/// `needed`-th highest of `replica_durable` capped by `local_durable`, or `local_durable`
/// when no receipt is needed. `None` when fewer replicas than needed exist.
pub fn quorum_commit_lsn(
    needed: usize,
    local_durable: Lsn,
    replica_durable: &[Lsn],
) -> Option<Lsn> {
    if needed == 0 {
        return Some(local_durable);
    }
    if replica_durable.len() < needed {
        return None;
    }
    let mut sorted = replica_durable.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    Some(sorted[needed - 1].min(local_durable))
}

/// The commit rule of a primary of epoch `E` whose first record (the
/// control record of `E`) is at `epoch_start_lsn`: given the durable lsn of
/// every member it counts (its own and each receipt of epoch `E`), the
/// highest lsn held by at least `copies_needed` of them commits — **only if
/// that lsn is at or above `epoch_start_lsn`**, i.e. the record is of epoch
/// `E`. Every record below it, of any epoch, commits with it. Returns `None`
/// when nothing (new) can commit.
///
/// Counting receipts for a record of an older epoch directly is Raft's
/// "figure 8" bug: such a record can sit on a majority and still be
/// overwritten by a later primary whose last record has a newer epoch. A
/// record of the current epoch on a quorum cannot: every later vote set
/// intersects that quorum, and its members refuse a candidate whose log ends
/// in an older epoch (or is shorter in the same epoch).
///
/// This is the one definition of the rule: [`PrimaryCore`] advances its
/// watermark with it, and walship-node's election module (its model checker
/// included) re-exports it.
pub fn committable_lsn(
    epoch_start_lsn: u64,
    durable_lsns: &[u64],
    copies_needed: usize,
) -> Option<u64> {
    if copies_needed == 0 || copies_needed > durable_lsns.len() {
        return None;
    }
    let mut sorted = durable_lsns.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let held = sorted[copies_needed - 1];
    (held > 0 && held >= epoch_start_lsn).then_some(held)
}

/// The primary's log as the core sees it. Implemented by the driver over the WAL.
pub trait LogSource {
    /// The identity of the record at `lsn` (`lsn == 0`: the position before the first
    /// retained record, `Position::ZERO` for a log starting at 1). `None` if not retained
    /// or beyond the end.
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError>;
    /// The last locally durable record (`Position::ZERO` for an empty log). Only records up
    /// to here may be shipped or count towards the commit.
    fn durable(&self) -> Position;
    /// `durable().lsn`; implementations where the full position costs a read override it.
    /// The core calls only this on its hot path (every event).
    fn durable_lsn(&self) -> Lsn {
        self.durable().lsn
    }
    /// The first retained lsn.
    fn first_lsn(&self) -> Lsn;
    /// The boundary of the newest installed snapshot, if any (default: none).
    /// A replica whose next record is no longer retained gets this snapshot
    /// ([`Action::SendSnapshot`]); the log is never truncated past it.
    fn newest_snapshot(&self) -> Option<Position> {
        None
    }
    /// Whole records from `from_lsn`, at most `max_bytes` (at least one record if any), as
    /// stored bytes, never beyond [`LogSource::durable`]. Returns `(first_lsn, count, last,
    /// bytes)`, or `None` if `from_lsn` is beyond the durable end.
    fn read_batch(&mut self, from_lsn: Lsn, max_bytes: usize)
        -> Result<Option<LogBatch>, WalError>;
}

/// Bounds of the per-replica pipelined window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Largest `Records` batch the core asks the log for (a single larger record still ships alone).
    pub max_batch_bytes: usize,
    /// Bytes shipped to one replica and not yet covered by its receipt.
    pub max_inflight_bytes: u64,
    /// Records shipped to one replica and not yet covered by its receipt.
    pub max_inflight_records: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            max_batch_bytes: 1024 * 1024,
            max_inflight_bytes: 32 * 1024 * 1024,
            max_inflight_records: 256 * 1024,
        }
    }
}

/// A batch read from the log: `(first_lsn, count, last position, stored bytes)`.
pub type LogBatch = (Lsn, u32, Position, Vec<u8>);

/// What the core is built from: identity, membership, policy and the persisted state.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This primary's node id.
    pub node_id: String,
    /// Cluster id; a replica with another is refused.
    pub cluster_id: String,
    /// Every member's node id, the primary's own included (N in the quorum rule).
    pub members: Vec<String>,
    /// Quorum policy.
    pub quorum: Quorum,
    /// This primary's epoch (term).
    pub epoch: u64,
    /// The epoch history announced in `Welcome`.
    pub epoch_history: Vec<EpochEntry>,
    /// The persisted commit watermark (capped at the local durable lsn on first use).
    pub commit_lsn: Lsn,
    /// Shipping window bounds.
    pub window: Window,
}

/// A core configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The quorum policy cannot be met by the membership.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// The primary's own id is not in the member list.
    #[error("primary {node_id} is not in the member list")]
    PrimaryNotMember {
        /// The primary's id.
        node_id: String,
    },
    /// A member is listed twice.
    #[error("member {node_id} is listed twice")]
    DuplicateMember {
        /// The repeated id.
        node_id: String,
    },
    /// A window bound is zero.
    #[error("shipping window bounds must be > 0")]
    EmptyWindow,
    /// The epoch history is not empty and its last entry is not this primary's epoch:
    /// the core could not tell where its epoch starts (the commit rule needs it).
    #[error("primary of epoch {epoch}: the epoch history ends with epoch {last}, not with ours")]
    EpochNotLastInHistory {
        /// The primary's epoch.
        epoch: u64,
        /// The last epoch of the history given.
        last: u64,
    },
    /// A membership without a voter set, or with an empty one.
    #[error("a membership needs at least one non-empty voter set")]
    EmptyVoterSet,
    /// `inject_fault` named a node that is not a replica member.
    #[error("{node_id} is not a replica member")]
    UnknownReplica {
        /// The id given.
        node_id: String,
    },
}

/// An input to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection passed mutual TLS; `node_id` is the name its certificate proved.
    Connected {
        /// The driver's id for the connection.
        conn: ConnId,
        /// Authenticated node id.
        node_id: String,
    },
    /// A complete frame arrived on the connection.
    Received {
        /// The connection.
        conn: ConnId,
        /// The decoded message.
        msg: Message,
    },
    /// A frame arrived whose body is a `Hello` of another protocol version that this build
    /// cannot decode (`FrameError::UnsupportedVersion`); the driver reads nothing more from
    /// the connection. Before the handshake it is refused like a decodable `Hello` of another
    /// version; later it is an unexpected message.
    HelloOfOtherVersion {
        /// The connection.
        conn: ConnId,
        /// The version the `Hello` announced.
        protocol_version: u32,
    },
    /// The connection ended (lost, timed out, closed by either side). Not an error of the log.
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// The local durable lsn advanced (the core reads it from the log).
    LocalDurable,
    /// Periodic wake-up; re-evaluates commit and windows.
    Tick,
}

/// Why the core closes a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The handshake was refused; the `Refuse` message was sent first.
    Refused(RefuseReason),
    /// A message the protocol does not allow in this state.
    UnexpectedMessage {
        /// The message kind.
        kind: &'static str,
        /// The session state.
        state: &'static str,
    },
    /// A receipt claims more than was ever shipped or proven on this connection.
    ReceiptBeyondShipped {
        /// The receipt's durable lsn.
        durable_lsn: Lsn,
        /// The highest lsn known to be on the replica.
        shipped_lsn: Lsn,
    },
    /// A newer connection of the same node replaced this one.
    Superseded {
        /// The newer connection.
        by: ConnId,
    },
    /// The replica needs records this primary no longer retains and no snapshot
    /// covers them yet: it reconnects (and gets a snapshot once one exists).
    NotRetained {
        /// The replica's last lsn.
        replica_lsn: Lsn,
        /// The first lsn this primary retains.
        first_lsn: Lsn,
    },
    /// Reading the local log failed; shipping to this replica stops.
    LogRead {
        /// The lsn being read.
        lsn: Lsn,
        /// The WAL's error.
        error: String,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Refused(r) => write!(f, "refused: {r}"),
            CloseReason::UnexpectedMessage { kind, state } => {
                write!(f, "unexpected {kind} message in state {state}")
            }
            CloseReason::ReceiptBeyondShipped {
                durable_lsn,
                shipped_lsn,
            } => write!(
                f,
                "receipt for durable lsn {durable_lsn} beyond shipped lsn {shipped_lsn}"
            ),
            CloseReason::Superseded { by } => write!(f, "superseded by connection {by}"),
            CloseReason::NotRetained {
                replica_lsn,
                first_lsn,
            } => write!(
                f,
                "replica at lsn {replica_lsn} needs records below the first retained lsn {first_lsn} and no snapshot covers them"
            ),
            CloseReason::LogRead { lsn, error } => {
                write!(f, "reading the local log at lsn {lsn} failed: {error}")
            }
        }
    }
}

/// An output of the core, performed by the driver in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `msg` as one frame on the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// Close the connection (after writing what was queued before).
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (log it with the node id).
        reason: CloseReason,
    },
    /// The commit watermark advanced: persist `state/commit` (may be batched) and wake the
    /// appenders waiting for lsns up to `commit_lsn`.
    CommitAdvanced {
        /// The new watermark.
        commit_lsn: Lsn,
    },
    /// The replica on `conn` needs records this primary no longer retains: send it the
    /// newest snapshot on the connection's stream, as `SnapshotOffer`, every
    /// `SnapshotChunk` in order, then `SnapshotEnd` (`walship_snapshot::SnapshotSender`;
    /// each chunk re-verified from the stored file; a chunk that fails is local
    /// corruption: close the connection, ship nothing more). Nothing else is sent on
    /// that connection meanwhile (the core ships no records to it); the replica
    /// installs the snapshot and reconnects from its boundary.
    SendSnapshot {
        /// The connection.
        conn: ConnId,
        /// The boundary of the snapshot to send ([`LogSource::newest_snapshot`]).
        boundary: Position,
    },
    /// This primary is stale: a replica has seen (or voted in) `epoch`, above this
    /// primary's (its `Hello.highest_epoch_seen`, or its `Refuse{StalePrimary}`). Emitted
    /// once per higher epoch learned, before the sessions are closed. From now on the core
    /// never advances the commit watermark, ships nothing, refuses every `Hello` with
    /// `Refuse{NotPrimary}`; the executor fails every pending and later append and the
    /// node steps down.
    Fenced {
        /// The highest epoch learned.
        epoch: u64,
    },
}

/// A fault the primary injects into what it ships to one replica (demo/test use only).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShipFault {
    /// Flip one payload byte of the next record shipped (its stored crc no longer matches).
    CorruptNextRecord,
    /// Leave the next record out of the stream (the replica sees a gap).
    SkipNextRecord,
    /// Ship the next record twice (the replica sees a duplicate).
    DuplicateNextRecord,
}

/// What the status of one replica member reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaProgress {
    /// The replica's node id.
    pub node_id: String,
    /// A connection of this replica is open.
    pub connected: bool,
    /// Records are being shipped (the handshake proved its log a prefix of ours).
    pub shipping: bool,
    /// The highest lsn the replica reported durable in a receipt, counted only up to what
    /// its latest Hello proves it still holds (FM-X.15).
    pub durable_lsn: Lsn,
    /// The highest lsn shipped to it on the current connection.
    pub shipped_lsn: Lsn,
    /// Local durable lsn minus the replica's durable lsn.
    pub lag_records: u64,
    /// Bytes between the replica's durable lsn and the local durable lsn: exact for what is
    /// in flight, estimated from the mean record size for what is not yet shipped.
    pub lag_bytes: u64,
    /// Milliseconds since the last receipt (`None` if none arrived since the primary started).
    pub last_receipt_age_ms: Option<u64>,
    /// How long the replica has been behind: 0 when it holds everything durable here,
    /// else the milliseconds since the first record it lacks became durable on this
    /// primary (a lower bound when that is older than the [`MAX_DURABLE_MARKS`] marks
    /// kept, or older than this primary).
    pub lag_ms: u64,
    /// The incarnation id its latest accepted `Hello` announced (`None`: no `Hello`
    /// accepted since this primary started; `Some(0)`: the replica announced none).
    pub incarnation: Option<u64>,
    /// The incarnation whose receipts count towards commits (0: any;
    /// [`PrimaryCore::set_expected_incarnations`]). While `incarnation` is another one, the
    /// replica is shipped to and reported here but counts as holding nothing.
    pub expected_incarnation: u64,
}

/// Most (durable lsn, time) marks the core keeps for [`ReplicaProgress::lag_ms`]; the
/// oldest is dropped beyond it.
pub const MAX_DURABLE_MARKS: usize = 4096;

/// A snapshot of the core's state for `status()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreStatus {
    /// This primary's epoch.
    pub epoch: u64,
    /// Local durable lsn.
    pub durable_lsn: Lsn,
    /// Commit watermark.
    pub commit_lsn: Lsn,
    /// One entry per replica member, in member-list order.
    pub replicas: Vec<ReplicaProgress>,
}

/// One shipped batch not yet covered by a receipt.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    last_lsn: Lsn,
    records: u64,
    bytes: u64,
}

/// Shipping state of a connection whose log was proven a prefix of ours.
#[derive(Debug)]
struct Ship {
    /// Next lsn to ship.
    next_lsn: Lsn,
    inflight: VecDeque<InFlight>,
    inflight_bytes: u64,
    inflight_records: u64,
    /// A batch read but held back because the window was full.
    pending: Option<LogBatch>,
}

impl Ship {
    fn shipped_lsn(&self) -> Lsn {
        self.next_lsn - 1
    }
}

#[derive(Debug)]
enum SessionState {
    AwaitingHello,
    Shipping(Ship),
    /// Handshake answered but nothing is shipped: the replica's log is not a proven prefix
    /// (divergence search by probes).
    Idle,
    /// The replica's next record is not retained: the driver sends it a snapshot.
    SendingSnapshot,
}

impl SessionState {
    fn name(&self) -> &'static str {
        match self {
            SessionState::AwaitingHello => "awaiting-hello",
            SessionState::Shipping(_) => "shipping",
            SessionState::Idle => "idle",
            SessionState::SendingSnapshot => "sending-snapshot",
        }
    }
}

#[derive(Debug)]
struct Session {
    member: usize,
    state: SessionState,
}

#[derive(Debug)]
struct Member {
    node_id: String,
    /// Highest lsn known durable on the replica (and equal to ours).
    durable_lsn: Lsn,
    last_receipt_ms: Option<u64>,
    conn: Option<ConnId>,
    /// The incarnation its latest accepted `Hello` announced (`None`: none since start).
    incarnation: Option<u64>,
    /// The incarnation whose receipts count (0: any).
    expected_incarnation: u64,
    #[cfg(feature = "fault-injection")]
    fault: Option<ShipFault>,
}

impl Member {
    /// Its receipts count towards commits: no incarnation is expected of it, or its latest
    /// `Hello` announced the expected one (FM-X.15: the receipts of another incarnation of
    /// its data directory say nothing about the disk the member is expected to have).
    fn receipts_count(&self) -> bool {
        self.expected_incarnation == 0 || self.incarnation == Some(self.expected_incarnation)
    }
}

/// The primary's protocol state machine. See the module documentation.
#[derive(Debug)]
pub struct PrimaryCore {
    node_id: String,
    cluster_id: String,
    epoch: u64,
    epoch_history: Vec<EpochEntry>,
    /// The first lsn of this primary's epoch (its control record after a failover): the
    /// commit watermark advances only to an lsn at or above it ([`committable_lsn`]).
    epoch_start_lsn: Lsn,
    quorum: Quorum,
    /// The voter sets a record must be committed under (spec/membership.md
    /// rule 2: one set, or the old and the new one while a configuration
    /// change is not committed); each needs `quorum.receipts_needed(len) + 1`
    /// copies among its voters, this primary's own counting if it is one.
    voter_sets: Vec<Vec<String>>,
    window: Window,
    members: Vec<Member>,
    sessions: BTreeMap<ConnId, Session>,
    commit_lsn: Lsn,
    /// The highest epoch above ours a replica told us of ([`Action::Fenced`]).
    fenced: Option<u64>,
    /// Bytes and records seen in batches read from the log (for the lag_bytes estimate).
    bytes_read: u64,
    records_read: u64,
    /// When the local durable lsn reached each value (oldest first, lsns increasing,
    /// bounded by [`MAX_DURABLE_MARKS`]): the time lag of a replica is the age of the
    /// first mark above its durable lsn.
    durable_marks: std::collections::VecDeque<(Lsn, u64)>,
}

impl PrimaryCore {
    /// Builds the core; checks the membership, the quorum policy and the window.
    pub fn new(config: CoreConfig) -> Result<PrimaryCore, CoreError> {
        let mut seen = std::collections::BTreeSet::new();
        for m in &config.members {
            if !seen.insert(m.as_str()) {
                return Err(CoreError::DuplicateMember { node_id: m.clone() });
            }
        }
        if !seen.contains(config.node_id.as_str()) {
            return Err(CoreError::PrimaryNotMember {
                node_id: config.node_id,
            });
        }
        config.quorum.validate(config.members.len())?;
        let w = config.window;
        if w.max_batch_bytes == 0 || w.max_inflight_bytes == 0 || w.max_inflight_records == 0 {
            return Err(CoreError::EmptyWindow);
        }
        // An empty history (a test or a log from before histories): no epoch boundary,
        // every record is of this epoch.
        let epoch_start_lsn = match config.epoch_history.last() {
            None => 0,
            Some(e) if e.epoch == config.epoch => e.start_lsn,
            Some(e) => {
                return Err(CoreError::EpochNotLastInHistory {
                    epoch: config.epoch,
                    last: e.epoch,
                })
            }
        };
        let members = config
            .members
            .iter()
            .filter(|m| **m != config.node_id)
            .map(|m| Member {
                node_id: m.clone(),
                durable_lsn: 0,
                last_receipt_ms: None,
                conn: None,
                incarnation: None,
                expected_incarnation: 0,
                #[cfg(feature = "fault-injection")]
                fault: None,
            })
            .collect();
        Ok(PrimaryCore {
            voter_sets: vec![config.members.clone()],
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            epoch: config.epoch,
            epoch_history: config.epoch_history,
            epoch_start_lsn,
            quorum: config.quorum,
            window: config.window,
            members,
            sessions: BTreeMap::new(),
            commit_lsn: config.commit_lsn,
            fenced: None,
            bytes_read: 0,
            records_read: 0,
            durable_marks: std::collections::VecDeque::new(),
        })
    }

    /// Notes when the local durable lsn advanced, and forgets the marks every replica has
    /// passed (the last such mark is kept: it dates the next record a replica lacks).
    fn mark_durable(&mut self, durable: Lsn, now_ms: u64) {
        if self.durable_marks.back().is_none_or(|&(l, _)| durable > l) {
            if self.durable_marks.len() == MAX_DURABLE_MARKS {
                self.durable_marks.pop_front();
            }
            self.durable_marks.push_back((durable, now_ms));
        }
        let slowest = self
            .members
            .iter()
            .map(|m| m.durable_lsn)
            .min()
            .unwrap_or(durable);
        while self.durable_marks.len() > 1 && self.durable_marks[0].0 <= slowest {
            self.durable_marks.pop_front();
        }
    }

    /// [`ReplicaProgress::lag_ms`] of a replica holding `replica_durable`.
    fn lag_ms(&self, replica_durable: Lsn, durable: Lsn, now_ms: u64) -> u64 {
        if replica_durable >= durable {
            return 0;
        }
        // The first mark above what the replica holds: that sync made the first record it
        // lacks durable here. Older than every mark kept: the oldest is a lower bound.
        self.durable_marks
            .iter()
            .find(|&&(l, _)| l > replica_durable)
            .or(self.durable_marks.front())
            .map_or(0, |&(_, at)| now_ms.saturating_sub(at))
    }

    /// The commit watermark: every lsn up to it is covered by the quorum.
    pub fn commit_lsn(&self) -> Lsn {
        self.commit_lsn
    }

    /// The quorum policy.
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    /// This primary's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The first lsn of this primary's epoch: the commit watermark only advances to an
    /// lsn at or above it (0 when the history was empty).
    pub fn epoch_start_lsn(&self) -> Lsn {
        self.epoch_start_lsn
    }

    /// The higher epoch a replica told us of, once this primary is fenced
    /// ([`Action::Fenced`]): it commits and ships nothing more.
    pub fn fenced(&self) -> Option<u64> {
        self.fenced
    }

    /// The node id of the replica on `conn`, if the connection is known.
    pub fn conn_node_id(&self, conn: ConnId) -> Option<&str> {
        self.sessions
            .get(&conn)
            .map(|s| self.members[s.member].node_id.as_str())
    }

    /// The membership changed (spec/membership.md): `members` are every node
    /// this primary ships to (voters and learners of every configuration in
    /// effect; its own id is skipped), `voter_sets` the sets a record must be
    /// committed under. A replica no longer a member has its session closed
    /// ([`RefuseReason::NotAMember`]). The commit watermark is re-evaluated at
    /// the next event. Refused (changing nothing): an empty set list or set.
    pub fn set_membership(
        &mut self,
        members: &[String],
        voter_sets: Vec<Vec<String>>,
    ) -> Result<Vec<Action>, CoreError> {
        if voter_sets.is_empty() || voter_sets.iter().any(|s| s.is_empty()) {
            return Err(CoreError::EmptyVoterSet);
        }
        let mut out = Vec::new();
        // Departed members: close their sessions, then drop them (session indices follow).
        while let Some(i) = self
            .members
            .iter()
            .position(|m| !members.contains(&m.node_id))
        {
            if let Some(conn) = self.members[i].conn {
                let reason = RefuseReason::NotAMember {
                    node_id: self.members[i].node_id.clone(),
                };
                self.refuse(conn, reason, &mut out);
            }
            let gone = self.members.remove(i);
            tracing::info!(node = %self.node_id, epoch = self.epoch, member = %gone.node_id, "member removed: no longer shipped to");
            self.sessions.retain(|_, s| s.member != i);
            for s in self.sessions.values_mut() {
                if s.member > i {
                    s.member -= 1;
                }
            }
        }
        for id in members {
            if *id != self.node_id && !self.members.iter().any(|m| m.node_id == *id) {
                tracing::info!(node = %self.node_id, epoch = self.epoch, member = %id, "member added: shipping to it once it connects");
                self.members.push(Member {
                    node_id: id.clone(),
                    durable_lsn: 0,
                    last_receipt_ms: None,
                    conn: None,
                    incarnation: None,
                    expected_incarnation: 0,
                    #[cfg(feature = "fault-injection")]
                    fault: None,
                });
            }
        }
        self.voter_sets = voter_sets;
        Ok(out)
    }

    /// Whether the replicas shipped to are exactly `members` (this primary's id skipped).
    pub fn members_match(&self, members: &[String]) -> bool {
        let others = members.iter().filter(|m| **m != self.node_id);
        others.clone().count() == self.members.len()
            && others
                .into_iter()
                .all(|id| self.members.iter().any(|m| m.node_id == *id))
    }

    /// The voter sets a record must currently be committed under.
    pub fn voter_sets(&self) -> &[Vec<String>] {
        &self.voter_sets
    }

    /// Says which incarnation of each replica member must have announced in its `Hello` for
    /// its receipts to count towards commits (spec/protocol.md §12.1, FM-X.15): `(node_id,
    /// incarnation)` pairs, 0 = any. Replaces the previous expectation: a member not named
    /// expects 0 (any). Names that are not replica members (this primary itself, a node
    /// outside the member list) are ignored; of a name given twice the last counts.
    ///
    /// A member whose `Hello` announced another incarnation is still shipped to (it catches
    /// up like a learner) and reported by [`status`](Self::status), but counts as holding
    /// nothing for the commit. The watermark is re-evaluated at the next
    /// [`handle`](Self::handle) (feed [`Event::Tick`] to do it at once).
    pub fn set_expected_incarnations(&mut self, expected: &[(String, u64)]) {
        for m in &mut self.members {
            let counted = m.receipts_count();
            m.expected_incarnation = expected
                .iter()
                .rev()
                .find(|(id, _)| *id == m.node_id)
                .map_or(0, |&(_, inc)| inc);
            match (counted, m.receipts_count(), m.incarnation) {
                (true, false, Some(announced)) => {
                    tracing::warn!(replica = %m.node_id, epoch = self.epoch, durable_lsn = m.durable_lsn,
                        expected = format_args!("{:016x}", m.expected_incarnation),
                        announced = format_args!("{announced:016x}"),
                        "replica's Hello announced another incarnation than expected: still shipping to it, its receipts do not count");
                }
                (false, true, _) => {
                    tracing::info!(replica = %m.node_id, epoch = self.epoch, durable_lsn = m.durable_lsn,
                        expected = format_args!("{:016x}", m.expected_incarnation),
                        "replica's announced incarnation is now expected: its receipts count");
                }
                _ => {}
            }
        }
    }

    /// Arms a fault for the next record shipped to `node_id` (demo/test use only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&mut self, node_id: &str, fault: ShipFault) -> Result<(), CoreError> {
        let m = self
            .members
            .iter_mut()
            .find(|m| m.node_id == node_id)
            .ok_or_else(|| CoreError::UnknownReplica {
                node_id: node_id.to_string(),
            })?;
        m.fault = Some(fault);
        Ok(())
    }

    /// Feeds one event; returns the actions to perform, in order.
    pub fn handle(&mut self, event: Event, log: &mut dyn LogSource, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.mark_durable(log.durable_lsn(), now_ms);
        match event {
            Event::Connected { conn, node_id } => self.on_connected(conn, node_id, &mut out),
            Event::Received { conn, msg } => self.on_message(conn, msg, log, now_ms, &mut out),
            Event::HelloOfOtherVersion {
                conn,
                protocol_version,
            } => self.on_hello_of_other_version(conn, protocol_version, &mut out),
            Event::Disconnected { conn } => self.remove_session(conn),
            Event::LocalDurable | Event::Tick => {}
        }
        self.pump(log, &mut out);
        out
    }

    /// A snapshot of epoch, durable/commit lsn and per-replica progress.
    pub fn status(&self, log: &dyn LogSource, now_ms: u64) -> CoreStatus {
        let durable = log.durable_lsn();
        let mean = self.bytes_read.checked_div(self.records_read).unwrap_or(0);
        let replicas = self
            .members
            .iter()
            .map(|m| {
                let session = m.conn.and_then(|c| self.sessions.get(&c));
                let ship = match session.map(|s| &s.state) {
                    Some(SessionState::Shipping(ship)) => Some(ship),
                    _ => None,
                };
                let lag_records = durable.saturating_sub(m.durable_lsn);
                let (shipped_lsn, inflight_bytes) = match ship {
                    Some(s) => (s.shipped_lsn(), s.inflight_bytes),
                    None => (m.durable_lsn, 0),
                };
                let unshipped = durable.saturating_sub(shipped_lsn.max(m.durable_lsn));
                ReplicaProgress {
                    node_id: m.node_id.clone(),
                    connected: session.is_some(),
                    shipping: ship.is_some(),
                    durable_lsn: m.durable_lsn,
                    shipped_lsn,
                    lag_records,
                    lag_bytes: inflight_bytes + unshipped * mean,
                    last_receipt_age_ms: m.last_receipt_ms.map(|t| now_ms.saturating_sub(t)),
                    lag_ms: self.lag_ms(m.durable_lsn, durable, now_ms),
                    incarnation: m.incarnation,
                    expected_incarnation: m.expected_incarnation,
                }
            })
            .collect();
        CoreStatus {
            epoch: self.epoch,
            durable_lsn: durable,
            commit_lsn: self.commit_lsn.min(durable),
            replicas,
        }
    }

    fn on_connected(&mut self, conn: ConnId, node_id: String, out: &mut Vec<Action>) {
        assert!(
            !self.sessions.contains_key(&conn),
            "connection ids are never reused"
        );
        let Some(member) = self.members.iter().position(|m| m.node_id == node_id) else {
            // TLS admits every member, the primary's own name included; only replicas ship.
            let reason = RefuseReason::NotAMember { node_id };
            out.push(Action::Send {
                conn,
                msg: Message::Refuse(Refuse {
                    reason: reason.clone(),
                }),
            });
            out.push(Action::Close {
                conn,
                reason: CloseReason::Refused(reason),
            });
            return;
        };
        if let Some(old) = self.members[member].conn {
            self.remove_session(old);
            out.push(Action::Close {
                conn: old,
                reason: CloseReason::Superseded { by: conn },
            });
        }
        self.members[member].conn = Some(conn);
        self.sessions.insert(
            conn,
            Session {
                member,
                state: SessionState::AwaitingHello,
            },
        );
    }

    /// Records that a replica knows `epoch`, above ours: emits [`Action::Fenced`] (once per
    /// higher epoch) and ends every session with `Refuse{NotPrimary}`, so no replica keeps
    /// waiting on (or storing records of) a primary that can commit nothing.
    fn fence(&mut self, epoch: u64, out: &mut Vec<Action>) {
        debug_assert!(epoch > self.epoch);
        if self.fenced.is_some_and(|f| f >= epoch) {
            return;
        }
        tracing::warn!(node = %self.node_id, epoch = self.epoch, higher = epoch,
            commit_lsn = self.commit_lsn, "fenced: a replica knows a higher epoch; committing and shipping nothing more");
        self.fenced = Some(epoch);
        out.push(Action::Fenced { epoch });
        let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
        for conn in conns {
            let reason = RefuseReason::NotPrimary {
                epoch,
                primary_hint: None,
            };
            self.refuse(conn, reason, out);
        }
    }

    fn remove_session(&mut self, conn: ConnId) {
        if let Some(s) = self.sessions.remove(&conn) {
            let m = &mut self.members[s.member];
            if m.conn == Some(conn) {
                m.conn = None;
            }
        }
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason, out: &mut Vec<Action>) {
        self.remove_session(conn);
        out.push(Action::Close { conn, reason });
    }

    fn refuse(&mut self, conn: ConnId, reason: RefuseReason, out: &mut Vec<Action>) {
        out.push(Action::Send {
            conn,
            msg: Message::Refuse(Refuse {
                reason: reason.clone(),
            }),
        });
        self.close(conn, CloseReason::Refused(reason), out);
    }

    fn on_message(
        &mut self,
        conn: ConnId,
        msg: Message,
        log: &mut dyn LogSource,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(session) = self.sessions.get(&conn) else {
            // A message racing the close of its connection: nothing to do.
            return;
        };
        let state = session.state.name();
        let awaiting = matches!(session.state, SessionState::AwaitingHello);
        let shipping = matches!(session.state, SessionState::Shipping(_));
        match msg {
            Message::Hello(hello) if awaiting => self.on_hello(conn, hello, log, out),
            Message::Probe { lsn } if !awaiting => {
                let position = if lsn > log.durable_lsn() {
                    Ok(None)
                } else {
                    log.position_at(lsn)
                };
                match position {
                    Ok(position) => out.push(Action::Send {
                        conn,
                        msg: Message::ProbeReply { lsn, position },
                    }),
                    Err(e) => self.close(
                        conn,
                        CloseReason::LogRead {
                            lsn,
                            error: e.to_string(),
                        },
                        out,
                    ),
                }
            }
            Message::Receipt { durable_lsn } if shipping => {
                self.on_receipt(conn, durable_lsn, now_ms, out)
            }
            // A replica refuses this primary's Welcome: it has seen (or voted in) a higher
            // epoch. Only a strictly higher epoch fences us; any refusal ends the session.
            Message::Refuse(refuse) if !awaiting => {
                let higher = match refuse.reason {
                    RefuseReason::StalePrimary { current_epoch, .. }
                        if current_epoch > self.epoch =>
                    {
                        Some(current_epoch)
                    }
                    _ => None,
                };
                tracing::warn!(replica = ?self.conn_node_id(conn), epoch = self.epoch,
                    reason = %refuse.reason, "replica refused this primary");
                self.close(conn, CloseReason::Refused(refuse.reason), out);
                if let Some(epoch) = higher {
                    self.fence(epoch, out);
                }
            }
            other => {
                let kind = other.kind();
                self.close(conn, CloseReason::UnexpectedMessage { kind, state }, out);
            }
        }
    }

    fn on_hello_of_other_version(
        &mut self,
        conn: ConnId,
        protocol_version: u32,
        out: &mut Vec<Action>,
    ) {
        let Some(session) = self.sessions.get(&conn) else {
            return;
        };
        assert_ne!(
            protocol_version, PROTOCOL_VERSION,
            "a Hello of this build's version decodes: it is never reported as another version"
        );
        if matches!(session.state, SessionState::AwaitingHello) {
            let reason = RefuseReason::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: protocol_version,
            };
            self.refuse(conn, reason, out);
        } else {
            let state = session.state.name();
            let reason = CloseReason::UnexpectedMessage {
                kind: "hello",
                state,
            };
            self.close(conn, reason, out);
        }
    }

    fn on_hello(
        &mut self,
        conn: ConnId,
        hello: Hello,
        log: &mut dyn LogSource,
        out: &mut Vec<Action>,
    ) {
        let member = match self.sessions.get(&conn) {
            Some(s) => s.member,
            None => return,
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            let reason = RefuseReason::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: hello.protocol_version,
            };
            return self.refuse(conn, reason, out);
        }
        if hello.cluster_id != self.cluster_id {
            let reason = RefuseReason::ClusterMismatch {
                ours: self.cluster_id.clone(),
                theirs: hello.cluster_id,
            };
            return self.refuse(conn, reason, out);
        }
        if hello.node_id != self.members[member].node_id {
            // The Hello must name the node its certificate proved.
            let reason = RefuseReason::NodeIdMismatch {
                claimed: hello.node_id,
                certified: self.members[member].node_id.clone(),
            };
            return self.refuse(conn, reason, out);
        }
        if let Some(epoch) = self.fenced {
            // A fenced primary is no primary: point the replica away.
            let reason = RefuseReason::NotPrimary {
                epoch,
                primary_hint: None,
            };
            return self.refuse(conn, reason, out);
        }
        if hello.highest_epoch_seen > self.epoch {
            // The replica has seen (or voted in) a newer epoch: this primary is stale.
            tracing::warn!(replica = %hello.node_id, epoch = self.epoch, seen = hello.highest_epoch_seen,
                "replica has seen a higher epoch than ours: this primary is fenced");
            let epoch = hello.highest_epoch_seen;
            let reason = RefuseReason::NotPrimary {
                epoch,
                primary_hint: None,
            };
            self.refuse(conn, reason, out);
            return self.fence(epoch, out);
        }
        let durable_lsn = log.durable_lsn();
        let first_lsn = log.first_lsn();
        // Below the base (the position before the first retained record) nothing is
        // retained: position_at(0) would answer the base, which an empty replica must
        // not take for its prefix proof.
        let not_retained = hello.last.lsn.saturating_add(1) < first_lsn;
        let at_replica_last = if hello.last.lsn > durable_lsn || not_retained {
            Ok(None)
        } else {
            log.position_at(hello.last.lsn)
        };
        let at_replica_last = match at_replica_last {
            Ok(p) => p,
            Err(e) => {
                let reason = CloseReason::LogRead {
                    lsn: hello.last.lsn,
                    error: e.to_string(),
                };
                return self.close(conn, reason, out);
            }
        };
        let durable = match log.position_at(durable_lsn) {
            Ok(Some(p)) => p,
            Ok(None) => {
                // The durable lsn is always retained: a log that cannot name it is broken.
                let reason = CloseReason::LogRead {
                    lsn: durable_lsn,
                    error: "durable position not found".into(),
                };
                return self.close(conn, reason, out);
            }
            Err(e) => {
                let reason = CloseReason::LogRead {
                    lsn: durable_lsn,
                    error: e.to_string(),
                };
                return self.close(conn, reason, out);
            }
        };
        out.push(Action::Send {
            conn,
            msg: Message::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                primary_id: self.node_id.clone(),
                epoch: self.epoch,
                at_replica_last,
                primary_last: durable,
                commit_lsn: self.commit_lsn.min(durable.lsn),
                epoch_history: self.epoch_history.clone(),
            }),
        });
        let node_id = &self.members[member].node_id;
        // Set when the session closes after the receipt accounting below (which a Hello
        // that passed the checks above always gets: the close proves nothing is held).
        let mut close_after = None;
        let state = if at_replica_last == Some(hello.last) {
            tracing::info!(replica = %node_id, lsn = hello.last.lsn, epoch = self.epoch,
                "replica log is a prefix of ours: shipping");
            // Hello.last may be ahead of the replica's durable lsn: only receipts count as copies.
            SessionState::Shipping(Ship {
                next_lsn: hello.last.lsn + 1,
                inflight: VecDeque::new(),
                inflight_bytes: 0,
                inflight_records: 0,
                pending: None,
            })
        } else if not_retained {
            match log.newest_snapshot() {
                // The log is never truncated past the newest snapshot, so the replica
                // streams from boundary + 1 after installing it.
                Some(boundary) if boundary.lsn.saturating_add(1) >= first_lsn => {
                    tracing::info!(replica = %node_id, replica_lsn = hello.last.lsn, first_lsn,
                        boundary = %boundary, "replica's next record is not retained: sending the snapshot");
                    out.push(Action::SendSnapshot { conn, boundary });
                    SessionState::SendingSnapshot
                }
                _ => {
                    tracing::warn!(replica = %node_id, replica_lsn = hello.last.lsn, first_lsn,
                        "replica's next record is not retained and no snapshot covers it");
                    close_after = Some(CloseReason::NotRetained {
                        replica_lsn: hello.last.lsn,
                        first_lsn,
                    });
                    SessionState::Idle
                }
            }
        } else {
            tracing::warn!(replica = %node_id, replica_last = %hello.last, ours = ?at_replica_last,
                "replica log is not a proven prefix of ours: not shipping, answering probes");
            SessionState::Idle
        };
        // FM-X.15: receipts from an earlier session count only for what this Hello proves
        // the replica still holds (a replaced disk comes back empty), and not at all when
        // the Hello announces another incarnation of its data directory than the earlier
        // session did; later receipts raise it again. The commit watermark never decreases.
        let m = &mut self.members[member];
        let same_incarnation = m.incarnation.is_none_or(|i| i == hello.incarnation);
        let proven = match state {
            SessionState::Shipping(_) if same_incarnation => m.durable_lsn.min(hello.last.lsn),
            _ => 0,
        };
        if proven < m.durable_lsn {
            tracing::warn!(replica = %m.node_id, receipted = m.durable_lsn, hello_last = %hello.last,
                counted = proven, same_incarnation, "replica's Hello proves less than it receipted before: old receipts no longer count");
            m.durable_lsn = proven;
        }
        let (counted, before) = (m.receipts_count(), m.incarnation);
        m.incarnation = Some(hello.incarnation);
        // Warn once: when the member stops counting, or announces an unexpected
        // incarnation it did not announce before (not at every reconnect).
        if !m.receipts_count() && (counted || before != m.incarnation) {
            tracing::warn!(replica = %m.node_id, epoch = self.epoch, lsn = hello.last.lsn,
                expected = format_args!("{:016x}", m.expected_incarnation),
                announced = format_args!("{:016x}", hello.incarnation),
                "replica's Hello announced another incarnation than expected: still shipping to it, its receipts do not count");
        }
        if let Some(reason) = close_after {
            return self.close(conn, reason, out);
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.state = state;
        }
    }

    fn on_receipt(&mut self, conn: ConnId, durable_lsn: Lsn, now_ms: u64, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let SessionState::Shipping(ship) = &mut session.state else {
            return;
        };
        let shipped_lsn = ship.shipped_lsn();
        if durable_lsn > shipped_lsn {
            let reason = CloseReason::ReceiptBeyondShipped {
                durable_lsn,
                shipped_lsn,
            };
            return self.close(conn, reason, out);
        }
        while let Some(f) = ship.inflight.front() {
            if f.last_lsn > durable_lsn {
                break;
            }
            ship.inflight_bytes -= f.bytes;
            ship.inflight_records -= f.records;
            ship.inflight.pop_front();
        }
        let m = &mut self.members[session.member];
        // Receipts arrive in order on one stream; a lower one is stale information.
        m.durable_lsn = m.durable_lsn.max(durable_lsn);
        m.last_receipt_ms = Some(now_ms);
    }

    /// Re-evaluates the commit watermark, then fills every shipping window.
    fn pump(&mut self, log: &mut dyn LogSource, out: &mut Vec<Action>) {
        if self.fenced.is_some() {
            return;
        }
        let durable_lsn = log.durable_lsn();
        self.advance_commit(durable_lsn, out);
        let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
        for conn in conns {
            self.fill_window(conn, durable_lsn, log, out);
        }
    }

    fn advance_commit(&mut self, local_durable: Lsn, out: &mut Vec<Action>) {
        if self.fenced.is_some() {
            // Another primary may be committing in a newer epoch: nothing more commits here.
            return;
        }
        // Every copy counted: our own durable write and each replica's receipt (a receipt
        // never exceeds what we shipped, which is locally durable; capped all the same).
        // Every voter set must hold the record (joint while a configuration change is
        // not committed); figure 8: records of older epochs commit only together with
        // one of ours.
        let mut point: Option<Lsn> = None;
        for set in &self.voter_sets {
            let durable: Vec<Lsn> = set
                .iter()
                .map(|id| {
                    if *id == self.node_id {
                        local_durable
                    } else {
                        // A replica of another incarnation than expected holds
                        // nothing here (FM-X.15).
                        self.members
                            .iter()
                            .find(|m| m.node_id == *id)
                            .filter(|m| m.receipts_count())
                            .map_or(0, |m| m.durable_lsn.min(local_durable))
                    }
                })
                .collect();
            let copies = self.quorum.receipts_needed(set.len()) + 1;
            let Some(here) = committable_lsn(self.epoch_start_lsn, &durable, copies) else {
                return;
            };
            point = Some(point.map_or(here, |p: Lsn| p.min(here)));
        }
        let Some(candidate) = point else {
            return;
        };
        if candidate <= self.commit_lsn {
            return;
        }
        self.commit_lsn = candidate;
        assert!(
            self.commit_lsn <= local_durable,
            "commit_lsn beyond the local durable lsn"
        );
        out.push(Action::CommitAdvanced {
            commit_lsn: candidate,
        });
        for (conn, s) in &self.sessions {
            if matches!(s.state, SessionState::Shipping(_)) {
                out.push(Action::Send {
                    conn: *conn,
                    msg: Message::Commit {
                        commit_lsn: candidate,
                    },
                });
            }
        }
    }

    fn fill_window(
        &mut self,
        conn: ConnId,
        durable_lsn: Lsn,
        log: &mut dyn LogSource,
        out: &mut Vec<Action>,
    ) {
        let w = self.window;
        let commit_lsn = self.commit_lsn;
        loop {
            let Some(session) = self.sessions.get_mut(&conn) else {
                return;
            };
            #[cfg(feature = "fault-injection")]
            let member = session.member;
            let SessionState::Shipping(ship) = &mut session.state else {
                return;
            };
            let batch = match ship.pending.take() {
                Some(b) => b,
                None => {
                    if ship.next_lsn > durable_lsn {
                        return;
                    }
                    let room = w.max_inflight_bytes.saturating_sub(ship.inflight_bytes);
                    if room == 0 || ship.inflight_records >= w.max_inflight_records {
                        return;
                    }
                    let max = w
                        .max_batch_bytes
                        .min(usize::try_from(room).unwrap_or(usize::MAX));
                    match log.read_batch(ship.next_lsn, max) {
                        Ok(Some(b)) => {
                            self.bytes_read += b.3.len() as u64;
                            self.records_read += u64::from(b.1);
                            b
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let reason = CloseReason::LogRead {
                                lsn: ship.next_lsn,
                                error: e.to_string(),
                            };
                            return self.close(conn, reason, out);
                        }
                    }
                }
            };
            let (first_lsn, count, last, bytes) = batch;
            assert_eq!(first_lsn, ship.next_lsn, "read_batch returned another lsn");
            assert!(count > 0, "read_batch returned an empty batch");
            assert_eq!(
                last.lsn,
                first_lsn + u64::from(count) - 1,
                "read_batch count disagrees with its last position"
            );
            assert!(
                last.lsn <= durable_lsn,
                "read_batch returned records beyond the local durable lsn"
            );
            let len = bytes.len() as u64;
            let fits = ship.inflight_bytes + len <= w.max_inflight_bytes
                && ship.inflight_records + u64::from(count) <= w.max_inflight_records;
            if !fits && !ship.inflight.is_empty() {
                ship.pending = Some((first_lsn, count, last, bytes));
                return;
            }
            ship.inflight.push_back(InFlight {
                last_lsn: last.lsn,
                records: u64::from(count),
                bytes: len,
            });
            ship.inflight_bytes += len;
            ship.inflight_records += u64::from(count);
            ship.next_lsn = last.lsn + 1;
            #[cfg(feature = "fault-injection")]
            let shipped = {
                let fault = self.members[member].fault.take();
                apply_ship_fault(fault, first_lsn, count, bytes)
            };
            #[cfg(not(feature = "fault-injection"))]
            let shipped = Some((first_lsn, count, bytes));
            if let Some((first_lsn, count, bytes)) = shipped {
                out.push(Action::Send {
                    conn,
                    msg: Message::Records(RecordBatch {
                        first_lsn,
                        count,
                        bytes,
                        commit_lsn,
                    }),
                });
            }
        }
    }
}

/// Applies an armed fault to a batch about to be shipped; `None` if nothing is left to send.
/// The batch must be whole records verified from the WAL. The one implementation of these
/// faults: the simulator's sender faults of the same names call it too.
#[cfg(feature = "fault-injection")]
pub fn apply_ship_fault(
    fault: Option<ShipFault>,
    first_lsn: Lsn,
    count: u32,
    mut bytes: Vec<u8>,
) -> Option<(Lsn, u32, Vec<u8>)> {
    let Some(fault) = fault else {
        return Some((first_lsn, count, bytes));
    };
    // The batch came verified from the WAL, so its first record header is whole.
    let payload_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let first_len = RECORD_HEADER_LEN + payload_len;
    tracing::warn!(
        lsn = first_lsn,
        ?fault,
        "fault injection: altering a shipped record"
    );
    match fault {
        ShipFault::CorruptNextRecord => {
            // The first payload byte, or the epoch field of an empty record: either way the
            // stored crc no longer matches.
            let at = if payload_len > 0 {
                RECORD_HEADER_LEN
            } else {
                16
            };
            bytes[at] ^= 0xFF;
            Some((first_lsn, count, bytes))
        }
        ShipFault::SkipNextRecord => {
            if count == 1 {
                return None;
            }
            Some((first_lsn + 1, count - 1, bytes.split_off(first_len)))
        }
        ShipFault::DuplicateNextRecord => {
            let mut dup = bytes[..first_len].to_vec();
            dup.extend_from_slice(&bytes);
            Some((first_lsn, count + 1, dup))
        }
    }
}

#[cfg(test)]
mod tests;
