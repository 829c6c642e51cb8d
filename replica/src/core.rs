//! The sans-IO replica state machine: the verifier.
//!
//! [`ReplicaCore::handle`] takes an [`Event`] (a session started or ended, a
//! message arrived, the WAL became durable up to some lsn) with `now_ms`
//! passed in, and returns the [`Action`]s the driver must perform, in order.
//! It owns no socket, file, thread or clock. The tokio/quinn driver
//! (`driver.rs`, behind [`crate::Replica`]) and the fault simulator feed it the same way.
//!
//! Where the core must look at its own log (the divergence search compares
//! the replica's record identity at an lsn with the primary's), it takes a
//! `&mut dyn LocalLog` parameter, implemented for [`walship_wal::Wal`].
//!
//! # What the core guarantees
//! - It emits [`Action::AppendVerified`] only for a whole `Records` batch that
//!   passed every check (see [`verify_batch`] for the order), and only while a
//!   session with a proven prefix is streaming.
//! - A batch that fails any check emits exactly one [`Action::Halt`] and
//!   nothing of that batch is appended; afterwards the core emits nothing,
//!   whatever happens, until it is rebuilt (which the driver does only from a
//!   durable state without a halt file).
//! - A session ending (connection lost, idle timeout, stream ended inside a
//!   frame, a malformed frame, a refusal) is never a halt: the core asks for a
//!   reconnect with backoff and resumes from its last durable position.
//! - [`Action::Apply`] never goes above `min(commit_lsn, durable_lsn)`, and
//!   each lsn is requested for apply once, in order.

use std::fmt;

use walship_snapshot::{FailureClass, SnapshotChunk, SnapshotEnd, SnapshotOffer};
use walship_wal::record::{check_successor, decode_record, ChainError, RecordError, RecordHeader};
use walship_wal::state::EpochHistory;
use walship_wal::{Lsn, Position, WalError};
use walship_wire::message::{
    Hello, Message, RecordBatch, Refuse, RefuseReason, Welcome, PROTOCOL_VERSION,
};

use crate::halt::{HaltReason, HaltRecord};

/// Read access to the replica's own log, needed by the divergence search.
pub trait LocalLog {
    /// The replica's record identity at `lsn` (`None` if not retained or beyond its end;
    /// lsn 0 is the position before the first record).
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError>;
}

impl<S: walship_wal::Storage> LocalLog for walship_wal::Wal<S> {
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        walship_wal::Wal::position_at(self, lsn)
    }
}

/// Static configuration of the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// This replica's node id (sent in `Hello`).
    pub node_id: String,
    /// The cluster id (sent in `Hello`).
    pub cluster_id: String,
    /// The configured primary's name: the peer named in halts before a `Welcome` named it.
    pub primary_name: String,
    /// Bound on a record's payload length; a longer record fails the integrity check.
    pub max_record_bytes: u32,
    /// First reconnect delay after a session ends.
    pub backoff_initial_ms: u64,
    /// Ceiling of the exponential reconnect delay.
    pub backoff_max_ms: u64,
    /// The lowest epoch of a primary this replica accepts besides its own history: the
    /// node's election epoch (it voted in, or follows, that epoch), 0 without elections.
    /// The fence is `max(highest epoch seen, min_primary_epoch)`; raise it at run time
    /// with [`Event::MinPrimaryEpoch`].
    pub min_primary_epoch: u64,
    /// The incarnation id of this replica's data directory (`state/identity`,
    /// spec/membership.md §1), sent in `Hello`: a primary counts this replica's receipts
    /// only while it expects this incarnation of it. 0 = unknown (no identity file: a
    /// replica outside a cluster).
    pub incarnation: u64,
}

/// The replica's durable state the core is built from (read from disk at open).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableState {
    /// Identity of the last record in the local WAL (all of it durable at open).
    pub last: Position,
    /// The persisted commit watermark (`state/commit`).
    pub commit_lsn: Lsn,
    /// The embedder's durable apply point (`Applier::applied_lsn`).
    pub applied_lsn: Lsn,
    /// The persisted epoch history (`state/epochs`).
    pub epoch_history: EpochHistory,
    /// The halt record, if `state/halt` exists.
    pub halt: Option<HaltRecord>,
}

/// Why a session ended. None of these is a halt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The connection could not be established (unreachable, TLS refused, ...).
    ConnectFailed {
        /// What the transport said.
        detail: String,
    },
    /// The connection or stream closed, reset or timed out (keep-alive / idle timeout).
    ConnectionLost {
        /// What the transport said.
        detail: String,
    },
    /// The stream ended inside a frame (the partial frame is discarded unused).
    FrameTruncated {
        /// Bytes of the frame received.
        received: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// A frame could not be decoded into a message (too large, empty, malformed).
    Malformed {
        /// The frame error.
        detail: String,
    },
    /// The primary sent a message that is not valid at this point of the protocol.
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The primary refused the session.
    Refused {
        /// The refusal reason.
        detail: String,
    },
    /// The node this replica connected to is not the primary (`Refuse{NotPrimary}`): it
    /// knows epoch `epoch` and, if `primary_hint` is set, which node leads it.
    NotPrimary {
        /// The refusing node's current epoch.
        epoch: u64,
        /// The primary it names, if any.
        primary_hint: Option<String>,
    },
    /// The primary's epoch is below this replica's fence (FM-X.2): the replica sent
    /// `Refuse{StalePrimary}`, stored nothing of it, and ends the session. Not a halt: the
    /// replica is healthy; the primary is the one fenced.
    StalePrimary {
        /// The stale primary's id (`Welcome.primary_id`).
        primary_id: String,
        /// Its epoch (`Welcome.epoch`).
        primary_epoch: u64,
        /// This replica's fence: `max(highest epoch seen, min_primary_epoch)`.
        fence: u64,
    },
    /// The primary no longer retains the records this replica needs next: a
    /// snapshot transfer is needed and this replica cannot install one (snapshot
    /// install not enabled: the applier has no `SnapshotSink`).
    SnapshotRequired {
        /// What the primary said.
        detail: String,
    },
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::ConnectFailed { detail } => write!(f, "connect failed: {detail}"),
            SessionEnd::ConnectionLost { detail } => write!(f, "connection lost: {detail}"),
            SessionEnd::FrameTruncated { received, expected } => write!(
                f,
                "stream ended inside a frame after {received} of {expected} bytes"
            ),
            SessionEnd::Malformed { detail } => write!(f, "malformed frame: {detail}"),
            SessionEnd::Protocol { detail } => write!(f, "protocol violation: {detail}"),
            SessionEnd::Refused { detail } => write!(f, "refused by primary: {detail}"),
            SessionEnd::NotPrimary {
                epoch,
                primary_hint: Some(hint),
            } => write!(f, "not the primary (epoch {epoch}); primary hint: {hint}"),
            SessionEnd::NotPrimary {
                epoch,
                primary_hint: None,
            } => write!(f, "not the primary (epoch {epoch}); no primary hint"),
            SessionEnd::StalePrimary {
                primary_id,
                primary_epoch,
                fence,
            } => write!(
                f,
                "refused stale primary {primary_id} of epoch {primary_epoch} (this replica is at epoch {fence})"
            ),
            SessionEnd::SnapshotRequired { detail } => write!(f, "snapshot required: {detail}"),
        }
    }
}

/// Inputs of the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The replica starts: replays committed records to the applier and connects.
    Start,
    /// A mutually authenticated connection to the configured primary and its stream are open.
    SessionStarted,
    /// A complete frame from the authenticated primary decoded into a message.
    Received(Message),
    /// The session ended (or could not start). Never a halt.
    SessionEnded(SessionEnd),
    /// Everything up to `lsn` is durable in the local WAL (after an [`Action::Sync`]).
    Durable {
        /// The WAL's durable lsn.
        lsn: Lsn,
    },
    /// The driver installed the received snapshot (after [`Action::SnapshotFinish`]):
    /// it is published, the WAL was reset to start after `boundary`, `state/commit`
    /// is at least `boundary.lsn` and the applier restored it (its applied lsn is
    /// `boundary.lsn`). The core ends the session and reconnects from the boundary.
    SnapshotInstalled {
        /// The installed snapshot's boundary (the replica's new last position).
        boundary: Position,
    },
    /// Receiving or installing the snapshot failed (after [`Action::SnapshotBegin`],
    /// [`Action::SnapshotChunk`] or [`Action::SnapshotFinish`]); the partial
    /// snapshot is already discarded. `Invalid` halts `snapshot-invalid` (FM-7.1),
    /// `Boundary` halts `snapshot-boundary` (FM-7.2), `LocalCorruption` halts
    /// `local-corruption`. `NodeStop` (I/O, embedder) is not fed: the driver stops.
    SnapshotFailed {
        /// `walship_snapshot::SnapshotError::class()` of the failure.
        class: FailureClass,
        /// The error, for the halt record.
        detail: String,
    },
    /// The node's election epoch rose: raise [`CoreConfig::min_primary_epoch`] (never
    /// lowered). A session with a primary below the new fence is refused
    /// (`Refuse{StalePrimary}`) and ends; nothing more of it is stored.
    MinPrimaryEpoch(u64),
}

/// Records that passed every check, to be appended unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBatch {
    /// Lsn of the first record.
    pub first_lsn: Lsn,
    /// Number of records.
    pub count: u32,
    /// Identity of the last record (the replica's new last position).
    pub last: Position,
    /// The records' stored bytes, exactly as received.
    pub bytes: Vec<u8>,
}

/// Outputs of the core, performed by the driver in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message to the primary on the session's stream.
    Send(Message),
    /// Append these verified records to the WAL (`Wal::append_verified` per record). Not durable yet.
    AppendVerified(VerifiedBatch),
    /// Make every appended record durable, then feed [`Event::Durable`]. The driver
    /// may coalesce several syncs (group sync) but must eventually perform it.
    Sync,
    /// Persist the commit watermark (`state/commit`) before applying up to it.
    PersistCommit(Lsn),
    /// Persist the epoch history (`state/epochs`) before anything from this primary is appended.
    PersistEpochs(EpochHistory),
    /// Deliver the committed, durable records up to `up_to` (inclusive) to the applier, in order.
    Apply {
        /// Highest lsn to apply; `<= min(commit_lsn, durable_lsn)`.
        up_to: Lsn,
    },
    /// Write and fsync the halt file BEFORE anything else, then stop streaming and applying.
    Halt(HaltRecord),
    /// A snapshot transfer starts: begin an install of `offer`
    /// (`SnapshotStore::begin_install`: the offer is checked, `tmp-*` created).
    /// On error feed [`Event::SnapshotFailed`].
    SnapshotBegin(SnapshotOffer),
    /// Check and write the next chunk of the install (`Install::push_chunk`).
    /// On error discard the install and feed [`Event::SnapshotFailed`].
    SnapshotChunk(SnapshotChunk),
    /// The transfer is complete: `Install::finish(end)`, then
    /// `VerifiedSnapshot::commit` with the local and the primary's epoch histories
    /// (boundary check, publish, WAL reset), then persist the commit watermark
    /// `max(commit, boundary.lsn)`, restore the snapshot into the applier, and
    /// feed [`Event::SnapshotInstalled`] (or [`Event::SnapshotFailed`]).
    SnapshotFinish {
        /// The primary's trailer.
        end: SnapshotEnd,
        /// The primary's epoch history (from its `Welcome`), for the boundary check.
        primary_epochs: EpochHistory,
    },
    /// The session ended mid-transfer: discard the partial snapshot
    /// (`Install::abort`). Not a halt (FM-X.8).
    SnapshotAbort,
    /// Close the current session (if any) and connect again after `after_ms`.
    Reconnect {
        /// Delay before the next connection attempt.
        after_ms: u64,
        /// Why the previous session ended.
        reason: SessionEnd,
    },
}

/// Where the core is in the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Built, [`Event::Start`] not yet handled.
    Idle,
    /// No session; waiting for [`Event::SessionStarted`] (after a [`Action::Reconnect`]).
    Disconnected,
    /// `Hello` sent, waiting for `Welcome`.
    AwaitWelcome,
    /// The logs differ; searching the first differing lsn with `Probe`s.
    Probing,
    /// Prefix proven: records stream.
    Streaming,
    /// The primary does not retain what this replica needs next: a snapshot
    /// (offer, chunks, end) is being received; nothing is appended meanwhile.
    ReceivingSnapshot,
    /// Halted: emits nothing any more.
    Halted,
}

#[derive(Clone, Debug)]
struct Session {
    primary_id: String,
    epoch: u64,
}

#[derive(Clone, Debug)]
struct Probe {
    /// Highest lsn at which both logs are known (or assumed, see `lo_unknown`) to agree.
    lo: Lsn,
    /// True if `lo` is not a proven agreement but a point below which the primary retains nothing.
    lo_unknown: bool,
    /// Lowest lsn at which the logs are known to differ.
    hi: Lsn,
    /// The primary's identity at `hi` (`None`: it has no record there).
    hi_primary: Option<Position>,
    /// The replica's identity at `hi`.
    hi_local: Option<Position>,
    /// The lsn of the outstanding `Probe`.
    pending: Lsn,
    /// The primary's last lsn (for the halt's detail).
    primary_last: Position,
}

/// Why a batch was rejected: the content of the halt it causes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The halt reason.
    pub reason: HaltReason,
    /// The lsn involved.
    pub lsn: Lsn,
    /// The epoch involved (the offending record's).
    pub epoch: u64,
    /// What was expected.
    pub expected: String,
    /// What was found.
    pub found: String,
    /// Detail for the operator.
    pub detail: String,
}

/// The replica verifier state machine. See the module documentation.
#[derive(Debug)]
pub struct ReplicaCore {
    config: CoreConfig,
    phase: Phase,
    /// Identity of the last record appended (verified) to the WAL.
    last: Position,
    durable_lsn: Lsn,
    commit_lsn: Lsn,
    /// Highest lsn an `Apply` was emitted for (or the embedder's applied lsn at start).
    applied_lsn: Lsn,
    epoch_history: EpochHistory,
    highest_epoch_seen: u64,
    halt: Option<HaltRecord>,
    session: Option<Session>,
    probe: Option<Probe>,
    /// Consecutive failed sessions since the last proven prefix (backoff exponent).
    failures: u32,
    /// The primary's last lsn as last announced (Welcome or a batch), for lag.
    primary_last_lsn: Lsn,
    /// The applier can restore snapshots: a primary that no longer retains our
    /// next record is asked for a snapshot instead of ending the session.
    snapshot_install: bool,
    /// The transfer in progress (phase `ReceivingSnapshot`).
    transfer: Option<Transfer>,
    /// Boundary of the installed snapshot while no record follows it yet: the
    /// first record after it must chain to it, else `snapshot-boundary` (FM-7.2).
    installed_boundary: Option<Position>,
}

/// A snapshot transfer in progress.
#[derive(Clone, Debug)]
struct Transfer {
    /// The primary's epoch history from its `Welcome`.
    primary_epochs: EpochHistory,
    /// The offer, once it arrived.
    offer: Option<SnapshotOffer>,
    /// `SnapshotEnd` arrived: the driver is installing.
    finishing: bool,
}

impl ReplicaCore {
    /// Builds the core from the replica's durable state. A state with a halt
    /// record gives a core that is halted from the start and emits nothing.
    pub fn new(config: CoreConfig, state: DurableState) -> ReplicaCore {
        assert!(
            config.backoff_initial_ms <= config.backoff_max_ms,
            "core config: backoff_initial_ms must not exceed backoff_max_ms"
        );
        let highest_epoch_seen = highest_epoch(&state.epoch_history).max(state.last.epoch);
        let phase = if state.halt.is_some() {
            Phase::Halted
        } else {
            Phase::Idle
        };
        ReplicaCore {
            config,
            phase,
            last: state.last,
            durable_lsn: state.last.lsn,
            commit_lsn: state.commit_lsn,
            applied_lsn: state.applied_lsn,
            epoch_history: state.epoch_history,
            highest_epoch_seen,
            halt: state.halt,
            session: None,
            probe: None,
            failures: 0,
            primary_last_lsn: 0,
            snapshot_install: false,
            transfer: None,
            installed_boundary: None,
        }
    }

    /// Enables snapshot install (off by default): when the primary no longer
    /// retains this replica's next record, the core waits for its snapshot
    /// ([`Phase::ReceivingSnapshot`]) instead of ending the session with
    /// [`SessionEnd::SnapshotRequired`]. Enable it only if the driver performs
    /// the `Snapshot*` actions and the applier can restore a snapshot.
    pub fn set_snapshot_install(&mut self, enabled: bool) {
        self.snapshot_install = enabled;
    }

    /// Tells the core that the local WAL starts right after an installed
    /// snapshot's `boundary` and holds no record after it yet (a restart after an
    /// install): the first record received must chain to it, else the halt is
    /// `snapshot-boundary` rather than `divergence` (FM-7.2).
    pub fn set_installed_boundary(&mut self, boundary: Option<Position>) {
        self.installed_boundary = boundary.filter(|b| *b == self.last);
    }

    /// Where the core is in the protocol.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }
    /// The halt record, if halted.
    pub fn halt(&self) -> Option<&HaltRecord> {
        self.halt.as_ref()
    }
    /// Identity of the last record appended to the WAL.
    pub fn last(&self) -> Position {
        self.last
    }
    /// Highest lsn known durable in the local WAL.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }
    /// The commit watermark received from the primary (never decreases).
    pub fn commit_lsn(&self) -> Lsn {
        self.commit_lsn
    }
    /// Highest lsn delivered (or requested) for apply.
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }
    /// The highest epoch this replica has seen in a primary's history or its own log.
    pub fn highest_epoch_seen(&self) -> u64 {
        self.highest_epoch_seen
    }
    /// The fencing bound: a primary below it is refused. `max(highest epoch seen,
    /// min_primary_epoch)`; sent as `Hello.highest_epoch_seen`.
    pub fn fence(&self) -> u64 {
        self.highest_epoch_seen.max(self.config.min_primary_epoch)
    }
    /// The epoch history as last persisted (or to be persisted by a pending action).
    pub fn epoch_history(&self) -> &EpochHistory {
        &self.epoch_history
    }
    /// The authenticated primary of the current session and its epoch, once it said `Welcome`.
    pub fn primary(&self) -> Option<(&str, u64)> {
        self.session
            .as_ref()
            .map(|s| (s.primary_id.as_str(), s.epoch))
    }
    /// The primary's last lsn as last announced (0 before any `Welcome`).
    pub fn primary_last_lsn(&self) -> Lsn {
        self.primary_last_lsn
    }

    /// Handles one event and returns the actions to perform, in order.
    ///
    /// `now_ms` is milliseconds since the Unix epoch (simulated time in the
    /// simulator); it only timestamps halts. `log` is read only during the
    /// divergence search. An error of `log` is a local I/O failure: the node
    /// must stop (it is not a halt).
    pub fn handle(
        &mut self,
        event: Event,
        now_ms: u64,
        log: &mut dyn LocalLog,
    ) -> Result<Vec<Action>, WalError> {
        let mut out = Vec::new();
        if self.phase == Phase::Halted {
            return Ok(out);
        }
        match event {
            Event::Start => self.on_start(&mut out),
            Event::SessionStarted => self.on_session_started(&mut out),
            Event::SessionEnded(reason) => self.end_session(reason, &mut out),
            Event::Durable { lsn } => self.on_durable(lsn, &mut out),
            Event::Received(msg) => self.on_message(msg, now_ms, log, &mut out)?,
            Event::SnapshotInstalled { boundary } => self.on_snapshot_installed(boundary, &mut out),
            Event::SnapshotFailed { class, detail } => {
                self.on_snapshot_failed(class, detail, now_ms, &mut out)
            }
            Event::MinPrimaryEpoch(epoch) => self.on_min_primary_epoch(epoch, &mut out),
        }
        Ok(out)
    }

    fn on_min_primary_epoch(&mut self, epoch: u64, out: &mut Vec<Action>) {
        if epoch <= self.config.min_primary_epoch {
            return;
        }
        self.config.min_primary_epoch = epoch;
        let fence = self.fence();
        let stale = match (&self.phase, &self.session) {
            (Phase::Probing | Phase::Streaming | Phase::ReceivingSnapshot, Some(s))
                if s.epoch < fence =>
            {
                Some((s.primary_id.clone(), s.epoch))
            }
            _ => None,
        };
        if let Some((primary_id, primary_epoch)) = stale {
            self.refuse_stale(primary_id, primary_epoch, out);
        }
    }

    /// FM-X.2: the primary of this session is below the fence. Tell it
    /// (`Refuse{StalePrimary}`, so it stops acknowledging) and end the session; nothing of
    /// it is stored. Not a halt: the replica is healthy, the old primary is fenced.
    fn refuse_stale(&mut self, primary_id: String, primary_epoch: u64, out: &mut Vec<Action>) {
        let fence = self.fence();
        tracing::warn!(primary = %primary_id, primary_epoch, fence, lsn = self.last.lsn,
            "refusing a stale primary: its epoch is below this replica's; nothing of it is stored");
        out.push(Action::Send(Message::Refuse(Refuse {
            reason: RefuseReason::StalePrimary {
                primary_epoch,
                current_epoch: fence,
            },
        })));
        self.end_session(
            SessionEnd::StalePrimary {
                primary_id,
                primary_epoch,
                fence,
            },
            out,
        );
    }

    fn on_start(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Idle {
            return;
        }
        // FM-4.2: the WAL is authoritative; replay what the applier has not seen.
        self.push_apply(out);
        self.phase = Phase::Disconnected;
        out.push(Action::Reconnect {
            after_ms: 0,
            reason: SessionEnd::ConnectFailed {
                detail: "initial connection".into(),
            },
        });
    }

    fn on_session_started(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Disconnected {
            // A driver bug: a session can only start after a Reconnect.
            debug_assert!(false, "SessionStarted in phase {:?}", self.phase);
            return;
        }
        self.phase = Phase::AwaitWelcome;
        out.push(Action::Send(Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: self.config.cluster_id.clone(),
            node_id: self.config.node_id.clone(),
            incarnation: self.config.incarnation,
            last: self.last,
            commit_lsn: self.commit_lsn,
            epoch_history: self.epoch_history.entries.clone(),
            // The fence: a primary below it learns it is stale at the handshake.
            highest_epoch_seen: self.fence(),
        })));
    }

    /// Ends the session (not a halt) and asks for a reconnect with backoff.
    fn end_session(&mut self, reason: SessionEnd, out: &mut Vec<Action>) {
        if self.phase == Phase::Idle {
            return;
        }
        self.session = None;
        self.probe = None;
        if let Some(t) = self.transfer.take() {
            // FM-X.8: a transfer cut short is discarded, never a halt. An install
            // already finishing (SnapshotEnd handed to the driver) completes or
            // fails on its own; the driver reports it.
            if t.offer.is_some() && !t.finishing {
                out.push(Action::SnapshotAbort);
            }
        }
        self.phase = Phase::Disconnected;
        // Resume from the durable position: make what was appended durable first.
        if self.durable_lsn < self.last.lsn {
            out.push(Action::Sync);
        }
        let after_ms = self.backoff_ms();
        self.failures = self.failures.saturating_add(1);
        out.push(Action::Reconnect { after_ms, reason });
    }

    fn backoff_ms(&self) -> u64 {
        let exp = self.failures.min(20);
        self.config
            .backoff_initial_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.backoff_max_ms)
    }

    fn on_durable(&mut self, lsn: Lsn, out: &mut Vec<Action>) {
        assert!(
            lsn <= self.last.lsn,
            "durable lsn {lsn} above the last appended lsn {}",
            self.last.lsn
        );
        if lsn <= self.durable_lsn {
            return;
        }
        self.durable_lsn = lsn;
        if self.phase == Phase::Streaming {
            out.push(Action::Send(Message::Receipt { durable_lsn: lsn }));
        }
        self.push_apply(out);
    }

    fn on_message(
        &mut self,
        msg: Message,
        now_ms: u64,
        log: &mut dyn LocalLog,
        out: &mut Vec<Action>,
    ) -> Result<(), WalError> {
        match (&self.phase, msg) {
            (Phase::AwaitWelcome, Message::Welcome(w)) => self.on_welcome(w, now_ms, log, out)?,
            (Phase::Probing, Message::ProbeReply { lsn, position }) => {
                self.on_probe_reply(lsn, position, now_ms, log, out)?
            }
            (Phase::Streaming, Message::Records(batch)) => self.on_records(batch, now_ms, out),
            (Phase::Streaming, Message::Commit { commit_lsn }) => {
                self.advance_commit(commit_lsn, out);
                self.push_apply(out);
            }
            (Phase::ReceivingSnapshot, Message::SnapshotOffer(offer)) => {
                self.on_snapshot_offer(offer, out)
            }
            (Phase::ReceivingSnapshot, Message::SnapshotChunk(chunk)) => {
                self.on_snapshot_chunk(chunk, out)
            }
            (Phase::ReceivingSnapshot, Message::SnapshotEnd(end)) => self.on_snapshot_end(end, out),
            (
                Phase::AwaitWelcome | Phase::Probing | Phase::Streaming | Phase::ReceivingSnapshot,
                Message::Refuse(r),
            ) => {
                let end = match r.reason {
                    RefuseReason::NotPrimary {
                        epoch,
                        primary_hint,
                    } => SessionEnd::NotPrimary {
                        epoch,
                        primary_hint,
                    },
                    other => SessionEnd::Refused {
                        detail: other.to_string(),
                    },
                };
                self.end_session(end, out);
            }
            (phase, msg) => {
                // Not about history: a message out of protocol order ends the session.
                let detail = format!("unexpected {} message in phase {:?}", msg.kind(), phase);
                self.end_session(SessionEnd::Protocol { detail }, out);
            }
        }
        Ok(())
    }

    fn on_welcome(
        &mut self,
        w: Welcome,
        now_ms: u64,
        log: &mut dyn LocalLog,
        out: &mut Vec<Action>,
    ) -> Result<(), WalError> {
        if w.protocol_version != PROTOCOL_VERSION {
            let detail = format!(
                "welcome with protocol version {} (this replica speaks {PROTOCOL_VERSION})",
                w.protocol_version
            );
            self.end_session(SessionEnd::Protocol { detail }, out);
            return Ok(());
        }
        // Fencing (FM-X.2): a primary below the fence is stale. Refused before anything of
        // its Welcome is taken (history, commit watermark, last lsn); not a halt.
        if w.epoch < self.fence() {
            self.refuse_stale(w.primary_id, w.epoch, out);
            return Ok(());
        }
        self.session = Some(Session {
            primary_id: w.primary_id.clone(),
            epoch: w.epoch,
        });
        self.primary_last_lsn = w.primary_last.lsn;
        if let Err(e) = EpochHistory::from_entries(w.epoch_history.clone()) {
            let detail = format!("welcome carries an invalid epoch history: {e}");
            self.end_session(SessionEnd::Protocol { detail }, out);
            return Ok(());
        }
        if w.at_replica_last == Some(self.last) {
            self.start_streaming(&w, out);
            return Ok(());
        }
        // The primary does not hold our last record as we do.
        if self.last.lsn == 0
            || (w.at_replica_last.is_none() && self.last.lsn <= w.primary_last.lsn)
        {
            // The primary does not retain what we need (front-truncated log): no proof either way.
            if self.snapshot_install {
                tracing::info!(
                    lsn = self.last.lsn,
                    primary = %w.primary_id,
                    epoch = w.epoch,
                    "primary does not retain our next record: waiting for its snapshot"
                );
                self.phase = Phase::ReceivingSnapshot;
                self.transfer = Some(Transfer {
                    primary_epochs: EpochHistory {
                        entries: w.epoch_history.clone(),
                    },
                    offer: None,
                    finishing: false,
                });
                return Ok(());
            }
            let detail = format!(
                "primary {} does not retain lsn {} (its position there: {:?}); a snapshot transfer is needed",
                w.primary_id, self.last.lsn, w.at_replica_last
            );
            self.end_session(SessionEnd::SnapshotRequired { detail }, out);
            return Ok(());
        }
        // Divergence search on (lo, hi]: agreement at lo, known difference at hi.
        let (hi, hi_primary) = if self.last.lsn > w.primary_last.lsn {
            // The primary's log ends below ours: it has no record at primary_last + 1.
            (w.primary_last.lsn + 1, None)
        } else {
            (self.last.lsn, w.at_replica_last)
        };
        let hi_local = log.position_at(hi)?;
        self.phase = Phase::Probing;
        self.probe = Some(Probe {
            lo: 0,
            lo_unknown: false,
            hi,
            hi_primary,
            hi_local,
            pending: 0,
            primary_last: w.primary_last,
        });
        self.failures = 0;
        self.next_probe(now_ms, out);
        Ok(())
    }

    fn start_streaming(&mut self, w: &Welcome, out: &mut Vec<Action>) {
        self.phase = Phase::Streaming;
        self.failures = 0;
        // Adopt the primary's epoch history, making sure it records the primary's own
        // epoch, so the fencing bound (highest epoch seen) is durable before any record
        // of this primary is appended.
        let mut history = EpochHistory {
            entries: w.epoch_history.clone(),
        };
        if history.last_epoch() < w.epoch {
            let start_lsn = history
                .last()
                .map_or(0, |e| e.start_lsn)
                .max(w.primary_last.lsn.saturating_add(1));
            // Cannot fail: the epoch increases and start_lsn does not decrease.
            let _ = history.push(w.epoch, start_lsn);
        }
        if history != self.epoch_history {
            self.highest_epoch_seen = self.highest_epoch_seen.max(highest_epoch(&history));
            self.epoch_history = history.clone();
            out.push(Action::PersistEpochs(history));
        }
        self.advance_commit(w.commit_lsn, out);
        // Receipt right away: the primary learns our durable lsn even if nothing streams.
        out.push(Action::Send(Message::Receipt {
            durable_lsn: self.durable_lsn,
        }));
        self.push_apply(out);
    }

    fn next_probe(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        debug_assert!(p.lo < p.hi, "probe range ({}, {}] is empty", p.lo, p.hi);
        if p.hi - p.lo > 1 {
            let mid = p.lo + (p.hi - p.lo) / 2;
            p.pending = mid;
            out.push(Action::Send(Message::Probe { lsn: mid }));
            return;
        }
        // The first differing lsn is hi.
        let p = p.clone();
        let session_epoch = self.session.as_ref().map_or(0, |s| s.epoch);
        let expected = match p.hi_primary {
            Some(pos) => format!("primary record {pos}"),
            None => format!(
                "no record (primary's log ends at lsn {})",
                p.primary_last.lsn
            ),
        };
        let found = match p.hi_local {
            Some(pos) => format!("replica record {pos}"),
            None => "no record".to_string(),
        };
        let mut detail = format!(
            "first lsn where the replica's log differs from the primary's (replica last lsn {}, primary last lsn {})",
            self.last.lsn, p.primary_last.lsn
        );
        if p.lo_unknown {
            detail.push_str(&format!(
                "; the primary does not retain lsn {} or below, so the logs may differ earlier",
                p.lo
            ));
        }
        let rejection = Rejection {
            reason: HaltReason::Divergence,
            lsn: p.hi,
            epoch: session_epoch,
            expected,
            found,
            detail,
        };
        self.do_halt(rejection, now_ms, out);
    }

    fn on_probe_reply(
        &mut self,
        lsn: Lsn,
        position: Option<Position>,
        now_ms: u64,
        log: &mut dyn LocalLog,
        out: &mut Vec<Action>,
    ) -> Result<(), WalError> {
        let pending = self.probe.as_ref().map_or(0, |p| p.pending);
        if lsn != pending {
            let detail = format!("probe reply for lsn {lsn}, asked for lsn {pending}");
            self.end_session(SessionEnd::Protocol { detail }, out);
            return Ok(());
        }
        let local = log.position_at(lsn)?;
        let Some(p) = self.probe.as_mut() else {
            return Ok(());
        };
        match (position, local) {
            (Some(theirs), Some(ours)) if theirs == ours => {
                p.lo = lsn;
                p.lo_unknown = false;
            }
            (None, _) | (_, None) => {
                // Not retained (primary's front truncated, or ours): nothing is provable at
                // or below lsn; the first provable difference is searched above it.
                p.lo = lsn;
                p.lo_unknown = true;
            }
            (Some(theirs), Some(ours)) => {
                p.hi = lsn;
                p.hi_primary = Some(theirs);
                p.hi_local = Some(ours);
            }
        }
        self.next_probe(now_ms, out);
        Ok(())
    }

    fn on_snapshot_offer(&mut self, offer: SnapshotOffer, out: &mut Vec<Action>) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.offer.is_some() {
            // A second offer inside one transfer: the sender is not following the
            // protocol. The session ends; the partial snapshot is discarded.
            let detail = "a second snapshot offer during a transfer".to_string();
            self.end_session(SessionEnd::Protocol { detail }, out);
            return;
        }
        t.offer = Some(offer.clone());
        out.push(Action::SnapshotBegin(offer));
    }

    fn on_snapshot_chunk(&mut self, chunk: SnapshotChunk, out: &mut Vec<Action>) {
        match self.transfer.as_ref() {
            Some(t) if t.offer.is_some() && !t.finishing => out.push(Action::SnapshotChunk(chunk)),
            _ => {
                let detail = format!("snapshot chunk {} without an offer", chunk.index);
                self.end_session(SessionEnd::Protocol { detail }, out);
            }
        }
    }

    fn on_snapshot_end(&mut self, end: SnapshotEnd, out: &mut Vec<Action>) {
        match self.transfer.as_mut() {
            Some(t) if t.offer.is_some() && !t.finishing => {
                t.finishing = true;
                out.push(Action::SnapshotFinish {
                    end,
                    primary_epochs: t.primary_epochs.clone(),
                });
            }
            _ => {
                let detail = "snapshot end without an offer".to_string();
                self.end_session(SessionEnd::Protocol { detail }, out);
            }
        }
    }

    fn on_snapshot_installed(&mut self, boundary: Position, out: &mut Vec<Action>) {
        // The WAL was reset to the boundary: the core follows it whatever else
        // happened meanwhile (the driver installs synchronously, so normally the
        // transfer is still here).
        let t = self.transfer.take();
        debug_assert!(
            t.as_ref()
                .and_then(|t| t.offer.as_ref())
                .map(|o| o.boundary)
                == Some(boundary),
            "SnapshotInstalled for another boundary than the one offered"
        );
        self.last = boundary;
        self.durable_lsn = boundary.lsn;
        self.applied_lsn = boundary.lsn;
        self.primary_last_lsn = self.primary_last_lsn.max(boundary.lsn);
        self.installed_boundary = Some(boundary);
        // Snapshot content is committed by construction (the primary snapshots
        // committed state); the driver persisted the watermark before restoring.
        if boundary.lsn > self.commit_lsn {
            self.commit_lsn = boundary.lsn;
            out.push(Action::PersistCommit(boundary.lsn));
        }
        // The boundary check verified the primary's history against ours; adopt it
        // so the boundary's epoch is part of the durable fencing bound.
        let history = t.map(|t| t.primary_epochs).unwrap_or_default();
        if history != self.epoch_history && !history.entries.is_empty() {
            self.highest_epoch_seen = self.highest_epoch_seen.max(highest_epoch(&history));
            self.epoch_history = history.clone();
            out.push(Action::PersistEpochs(history));
        }
        tracing::info!(
            lsn = boundary.lsn,
            epoch = boundary.epoch,
            "snapshot installed: reconnecting to stream from the boundary"
        );
        // The next Hello carries last = boundary, which the primary proves.
        self.failures = 0;
        self.session = None;
        self.probe = None;
        self.phase = Phase::Disconnected;
        out.push(Action::Reconnect {
            after_ms: 0,
            reason: SessionEnd::ConnectionLost {
                detail: format!("snapshot at lsn {} installed; reconnecting", boundary.lsn),
            },
        });
    }

    fn on_snapshot_failed(
        &mut self,
        class: FailureClass,
        detail: String,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let offer = self.transfer.take().and_then(|t| t.offer);
        let boundary = offer.map_or(Position::ZERO, |o| o.boundary);
        let (reason, expected) = match class {
            FailureClass::Invalid => (
                HaltReason::SnapshotInvalid,
                "a snapshot whose chunks, trailer and header verify (spec/snapshot-format.md §1.4)",
            ),
            FailureClass::Boundary => (
                HaltReason::SnapshotBoundary,
                "a boundary that is part of this replica's history (spec/snapshot-format.md §3)",
            ),
            FailureClass::LocalCorruption => (
                HaltReason::LocalCorruption,
                "the local snapshot store and WAL consistent",
            ),
            FailureClass::NodeStop => {
                // The driver stops the node on these; a core fed one just ends the session.
                debug_assert!(
                    false,
                    "SnapshotFailed(NodeStop) must stop the node, not be fed"
                );
                self.end_session(SessionEnd::Protocol { detail }, out);
                return;
            }
        };
        let rejection = Rejection {
            reason,
            lsn: boundary.lsn,
            epoch: boundary.epoch,
            expected: expected.to_string(),
            found: detail.clone(),
            detail: format!(
                "snapshot with boundary {boundary} from the primary rejected: {detail}; \
                 the partial snapshot was discarded, the WAL, installed snapshot and commit \
                 watermark are unchanged"
            ),
        };
        self.do_halt(rejection, now_ms, out);
    }

    fn on_records(&mut self, batch: RecordBatch, now_ms: u64, out: &mut Vec<Action>) {
        let session_epoch = self.session.as_ref().map_or(0, |s| s.epoch);
        match verify_batch_with_history(
            self.last,
            session_epoch,
            Some(&self.epoch_history),
            &batch,
            self.config.max_record_bytes,
        ) {
            Ok(None) => {}
            Ok(Some(last)) => {
                self.installed_boundary = None;
                self.last = last;
                self.primary_last_lsn = self.primary_last_lsn.max(last.lsn);
                out.push(Action::AppendVerified(VerifiedBatch {
                    first_lsn: batch.first_lsn,
                    count: batch.count,
                    last,
                    bytes: batch.bytes,
                }));
                out.push(Action::Sync);
            }
            Err(mut rejection) => {
                if let Some(b) = self.installed_boundary.filter(|b| *b == self.last) {
                    // FM-7.2, second half: the first record after an installed
                    // snapshot must chain to its boundary.
                    // Only when the frame's first record itself breaks the chain to
                    // the boundary: a later record's gap or duplicate (the first one
                    // chained) keeps its own reason, and so does a reorder.
                    let chain = matches!(
                        rejection.reason,
                        HaltReason::Gap
                            | HaltReason::Duplicate
                            | HaltReason::Divergence
                            | HaltReason::EpochRegression
                    );
                    let first_breaks = decode_record(&batch.bytes, self.config.max_record_bytes)
                        .is_ok_and(|first| check_successor(b, &first.header()).is_err());
                    if chain && first_breaks {
                        rejection.reason = HaltReason::SnapshotBoundary;
                        rejection.detail = format!(
                            "the first record after the installed snapshot (boundary {b}) does not chain to it: {}",
                            rejection.detail
                        );
                    }
                }
                self.do_halt(rejection, now_ms, out);
                return;
            }
        }
        self.advance_commit(batch.commit_lsn, out);
        self.push_apply(out);
    }

    fn advance_commit(&mut self, commit_lsn: Lsn, out: &mut Vec<Action>) {
        // The watermark never decreases; a primary's lower value says nothing new.
        if commit_lsn > self.commit_lsn {
            self.commit_lsn = commit_lsn;
            out.push(Action::PersistCommit(commit_lsn));
        }
    }

    fn push_apply(&mut self, out: &mut Vec<Action>) {
        let up_to = self.commit_lsn.min(self.durable_lsn);
        if up_to > self.applied_lsn {
            self.applied_lsn = up_to;
            out.push(Action::Apply { up_to });
        }
    }

    fn do_halt(&mut self, r: Rejection, now_ms: u64, out: &mut Vec<Action>) {
        let peer = self.session.as_ref().map_or_else(
            || self.config.primary_name.clone(),
            |s| s.primary_id.clone(),
        );
        let record = HaltRecord {
            reason: r.reason,
            lsn: r.lsn,
            epoch: r.epoch,
            expected: r.expected,
            found: r.found,
            peer,
            at_unix_ms: now_ms,
            detail: r.detail,
        };
        self.phase = Phase::Halted;
        self.session = None;
        self.probe = None;
        self.transfer = None;
        self.halt = Some(record.clone());
        out.push(Action::Halt(record));
    }
}

fn highest_epoch(h: &EpochHistory) -> u64 {
    // Not last_epoch(): a history read from disk is not trusted to be ordered.
    h.entries.iter().map(|e| e.epoch).max().unwrap_or(0)
}

/// Verifies one `Records` batch against the replica's last position.
///
/// Returns `Ok(Some(last))` with the identity of the batch's last record when
/// every record may be appended, `Ok(None)` for an empty batch (commit update
/// only), or the [`Rejection`] for the first failed check. Order of checks:
/// 1. integrity, record by record in frame order: the length bound, the record
///    lying whole inside the frame (else `malformed-batch`), crc and flags
///    (`checksum`);
/// 2. frame consistency: `count` agrees with the records (`malformed-batch`);
/// 3. reorder: the lsns are exactly `{last+1 ..= last+n}` but not ascending
///    (before the `first_lsn` check: a reordered frame whose header names the
///    expected first lsn is a reorder, FM-5.2);
/// 4. frame consistency: `first_lsn` is the first record's lsn (`malformed-batch`);
/// 5. per record, the chain rule against the previous one: lsn above
///    `last + 1` (`reorder` if the expected lsn appears later in the frame,
///    else `gap`), lsn at or below `last` (`duplicate`), `prev_crc` differing
///    from the previous crc (`divergence`), epoch below the previous record's
///    (`epoch-regression`);
/// 6. a record epoch above the primary's announced epoch (`divergence`);
/// 7. (only [`verify_batch_with_history`]) the record's epoch is the one the
///    primary's epoch history assigns to its lsn: below it `epoch-regression`,
///    above it `divergence`.
pub fn verify_batch(
    last: Position,
    primary_epoch: u64,
    batch: &RecordBatch,
    max_record_bytes: u32,
) -> Result<Option<Position>, Rejection> {
    verify_batch_with_history(last, primary_epoch, None, batch, max_record_bytes)
}

/// [`verify_batch`] plus check 7 against `history` (the epoch history adopted
/// from the primary's `Welcome`); lsns before the history's first entry are not
/// checked by it.
pub fn verify_batch_with_history(
    last: Position,
    primary_epoch: u64,
    history: Option<&EpochHistory>,
    batch: &RecordBatch,
    max_record_bytes: u32,
) -> Result<Option<Position>, Rejection> {
    // (1) integrity.
    let mut headers: Vec<RecordHeader> = Vec::new();
    let mut offset = 0usize;
    while offset < batch.bytes.len() {
        let rest = &batch.bytes[offset..];
        let as_read = RecordHeader::parse(rest);
        let lsn_as_read = as_read.map_or(last.lsn + 1 + headers.len() as u64, |h| h.lsn);
        let epoch_as_read = as_read.map_or(0, |h| h.epoch);
        match decode_record(rest, max_record_bytes) {
            Ok(view) => {
                headers.push(view.header());
                offset += view.bytes().len();
            }
            Err(e) => {
                let (reason, expected, found) = match e {
                    RecordError::Truncated { need, have } => (
                        HaltReason::MalformedBatch,
                        format!("a whole record of {need} bytes"),
                        format!("{have} bytes left in the frame"),
                    ),
                    RecordError::TooLarge { len, max } => (
                        HaltReason::Checksum,
                        format!("payload_len <= {max}"),
                        format!("payload_len {len}"),
                    ),
                    RecordError::Checksum { stored, computed } => (
                        HaltReason::Checksum,
                        format!("crc {computed:#010x} (computed over the record)"),
                        format!("crc {stored:#010x} (stored in the record)"),
                    ),
                    RecordError::BadFlags { found } => (
                        HaltReason::Checksum,
                        "flags 0 or 1 (control)".to_string(),
                        format!("flags {found:#x}"),
                    ),
                    RecordError::BadControl { ref error } => (
                        HaltReason::Checksum,
                        "a valid control record body".to_string(),
                        error.to_string(),
                    ),
                };
                return Err(Rejection {
                    reason,
                    lsn: lsn_as_read,
                    epoch: epoch_as_read,
                    expected,
                    found,
                    detail: format!(
                        "record {} of a batch of {} (first_lsn {}) at byte {offset} fails its integrity check: {e}; lsn and epoch as read from the unverified header",
                        headers.len() + 1,
                        batch.count,
                        batch.first_lsn
                    ),
                });
            }
        }
    }
    // (2) frame consistency.
    if headers.len() != batch.count as usize {
        return Err(Rejection {
            reason: HaltReason::MalformedBatch,
            lsn: batch.first_lsn,
            epoch: headers.first().map_or(0, |h| h.epoch),
            expected: format!("{} records (batch count)", batch.count),
            found: format!("{} records in the bytes", headers.len()),
            detail: "the batch header's count disagrees with its records".into(),
        });
    }
    let Some(first) = headers.first() else {
        return Ok(None);
    };
    // (3) reorder: a permutation of the expected lsns that is not ascending.
    let n = headers.len() as u64;
    let expected_range = (last.lsn + 1)..=(last.lsn + n);
    let mut sorted: Vec<Lsn> = headers.iter().map(|h| h.lsn).collect();
    sorted.sort_unstable();
    let is_permutation = sorted
        .iter()
        .zip(expected_range.clone())
        .all(|(a, b)| *a == b);
    if is_permutation {
        if let Some((i, h)) = headers
            .iter()
            .enumerate()
            .find(|(i, h)| h.lsn != last.lsn + 1 + *i as u64)
        {
            let expected_lsn = last.lsn + 1 + i as u64;
            return Err(Rejection {
                reason: HaltReason::Reorder,
                lsn: expected_lsn,
                epoch: h.epoch,
                expected: format!("lsn {expected_lsn}"),
                found: format!("lsn {}", h.lsn),
                detail: format!(
                    "record {} of the batch has lsn {}; lsn {expected_lsn} comes later in the same frame",
                    i + 1,
                    h.lsn
                ),
            });
        }
    }
    // (4) first_lsn consistency.
    if first.lsn != batch.first_lsn {
        return Err(Rejection {
            reason: HaltReason::MalformedBatch,
            lsn: batch.first_lsn,
            epoch: first.epoch,
            expected: format!("first record lsn {} (batch first_lsn)", batch.first_lsn),
            found: format!("first record lsn {}", first.lsn),
            detail: "the batch header's first_lsn disagrees with its first record".into(),
        });
    }
    // (5) chain, (6) epoch bound and (7) epoch history, record by record.
    let mut prev = last;
    for (i, h) in headers.iter().enumerate() {
        if let Err(e) = check_successor(prev, h) {
            let r = match e {
                ChainError::Gap {
                    expected_lsn,
                    found_lsn,
                } => {
                    let later = headers[i + 1..].iter().any(|x| x.lsn == expected_lsn);
                    Rejection {
                        reason: if later {
                            HaltReason::Reorder
                        } else {
                            HaltReason::Gap
                        },
                        lsn: expected_lsn,
                        epoch: h.epoch,
                        expected: format!("lsn {expected_lsn}"),
                        found: format!("lsn {found_lsn}"),
                        detail: if later {
                            format!("lsn {expected_lsn} comes later in the same frame")
                        } else {
                            format!("lsns {expected_lsn}..{found_lsn} are missing")
                        },
                    }
                }
                ChainError::Duplicate {
                    expected_lsn,
                    found_lsn,
                } => Rejection {
                    reason: HaltReason::Duplicate,
                    lsn: found_lsn,
                    epoch: h.epoch,
                    expected: format!("lsn {expected_lsn}"),
                    found: format!("lsn {found_lsn}"),
                    detail: format!("lsn {found_lsn} is at or below the last lsn {}", prev.lsn),
                },
                ChainError::ChainBreak {
                    lsn,
                    expected_prev_crc,
                    found_prev_crc,
                } => Rejection {
                    reason: HaltReason::Divergence,
                    lsn,
                    epoch: h.epoch,
                    expected: format!(
                        "prev_crc {expected_prev_crc:#010x} (crc of lsn {})",
                        prev.lsn
                    ),
                    found: format!("prev_crc {found_prev_crc:#010x}"),
                    detail: format!(
                        "record {lsn} does not chain to the replica's record {}",
                        prev.lsn
                    ),
                },
                ChainError::EpochRegression {
                    lsn,
                    last_epoch,
                    found_epoch,
                } => Rejection {
                    reason: HaltReason::EpochRegression,
                    lsn,
                    epoch: found_epoch,
                    expected: format!("epoch >= {last_epoch}"),
                    found: format!("epoch {found_epoch}"),
                    detail: format!("record {lsn} goes back in time from epoch {last_epoch}"),
                },
            };
            return Err(r);
        }
        if h.epoch > primary_epoch {
            return Err(Rejection {
                reason: HaltReason::Divergence,
                lsn: h.lsn,
                epoch: h.epoch,
                expected: format!("epoch <= {primary_epoch} (the primary's epoch)"),
                found: format!("epoch {}", h.epoch),
                detail: "a record from an epoch later than its primary's cannot be in the primary's history".into(),
            });
        }
        if let Some(want) = history.and_then(|hist| hist.epoch_at(h.lsn)) {
            if h.epoch != want {
                let below = h.epoch < want;
                return Err(Rejection {
                    reason: if below {
                        HaltReason::EpochRegression
                    } else {
                        HaltReason::Divergence
                    },
                    lsn: h.lsn,
                    epoch: h.epoch,
                    expected: format!("epoch {want} (the primary's epoch history at lsn {})", h.lsn),
                    found: format!("epoch {}", h.epoch),
                    detail: format!(
                        "record {} carries epoch {} but the primary's epoch history assigns lsn {} to epoch {want}",
                        h.lsn, h.epoch, h.lsn
                    ),
                });
            }
        }
        prev = h.position();
    }
    Ok(Some(prev))
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "core_snapshot_tests.rs"]
mod snapshot_tests;
