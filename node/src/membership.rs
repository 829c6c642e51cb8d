//! Membership rules (spec/membership.md), sans-IO: which configuration a node
//! uses for elections and which for commits, which changes are allowed, and the
//! commit point under one or two configurations.
//!
//! The member list is data in the log: a configuration control record
//! ([`Configuration`], `kind` 2 of `spec/wal-format.md`, "Control records").
//! Before a log holds one, the configuration is the static member list of
//! `node.toml` (generation 0). The rules, each argued in spec/membership.md §3:
//!
//! 1. **Elections use the newest configuration in the node's log**, committed
//!    or not (Raft's single-server rule). Using only a configuration known to
//!    be committed loses committed records (the model checker finds the
//!    schedule: `node/tests/membership_model.rs`).
//! 2. **A configuration record commits under both configurations**: on
//!    enough copies among the old voters *and* among the new ones. Until it
//!    commits, every record after it needs both as well (joint, for one
//!    change only). Committing it under the new configuration alone loses
//!    records under static `k` when a voter is removed.
//! 3. **One change at a time**: a primary proposes a configuration only when
//!    the newest one in its log is committed, and a change adds, removes,
//!    promotes or demotes one member (or changes addresses), generation + 1.
//!
//! A **forced** configuration (`Configuration::forced`, written only by an
//! operator's `walship-recover promote` or `walship ctl force-quorum` after
//! the old voters were lost) is the exception to rules 2 and 3: it may
//! change any number of members (still generation + 1, at least one voter),
//! and it commits under itself alone. It gives up the guarantee that every
//! committed record survives; spec/membership.md §3 says what can be lost.

use walship_snapshot::BoundaryMembership;
use walship_wal::control::ControlRecord;
use walship_wal::record::RecordHeader;
use walship_wal::{Lsn, Storage, WalError, WalReader};

pub use walship_wal::control::{ConfigMember, Configuration};

use crate::election::{commit_copies, committable_lsn, election_quorum, LogPosition};

/// What a proposed configuration changes relative to the one before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The first configuration record of a log, equal in members to the
    /// static list it replaces (generation 0 to 1): it records incarnations.
    Bootstrap,
    /// A new member that does not vote yet.
    AddLearner(String),
    /// A new voting member.
    AddVoter(String),
    /// A learner becomes a voter.
    Promote(String),
    /// A voter becomes a learner.
    Demote(String),
    /// A member leaves.
    Remove(String),
    /// Only addresses or incarnations of existing members changed, no vote
    /// moved (an incarnation change of a voter is refused: see
    /// [`ChangeError::VoterReincarnated`]).
    Readdress,
    /// A forced configuration (an operator's recovery without the old
    /// voters): any members may change at once, each named here.
    Forced {
        /// Members of the old configuration that are not in the new one.
        removed: Vec<String>,
        /// Members of the new configuration that were not in the old one.
        added: Vec<String>,
        /// Members present in both whose vote, incarnation or addresses changed.
        changed: Vec<String>,
    },
}

/// Why a proposed configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Generation is not the previous one plus one.
    #[error("configuration generation {found} does not follow generation {previous}")]
    Generation {
        /// The previous configuration's generation.
        previous: u64,
        /// The proposed one's.
        found: u64,
    },
    /// More than one member's vote (or presence) changes at once.
    #[error("a configuration change may add, remove, promote or demote one member; this one changes {0}")]
    TooManyChanges(String),
    /// A voter's incarnation changed: its old receipts and votes would count
    /// for a node that lost them. Remove it (or demote it) first.
    #[error(
        "voter {0} has a new incarnation: demote or remove it first, then add it back as a learner"
    )]
    VoterReincarnated(String),
    /// The new configuration has no voter left.
    #[error("a configuration needs at least one voter")]
    NoVoter,
    /// The newest configuration in the log is not committed yet.
    #[error("the configuration at lsn {pending_lsn} is not committed yet (commit lsn {commit_lsn}): one change at a time")]
    ChangePending {
        /// Where the uncommitted configuration is.
        pending_lsn: Lsn,
        /// The commit watermark.
        commit_lsn: Lsn,
    },
}

/// Classifies the change from `old` to `new`, or refuses it (rule 3).
pub fn classify_change(old: &Configuration, new: &Configuration) -> Result<Change, ChangeError> {
    if new.generation != old.generation.wrapping_add(1) || new.generation == 0 {
        return Err(ChangeError::Generation {
            previous: old.generation,
            found: new.generation,
        });
    }
    if new.voters().next().is_none() {
        return Err(ChangeError::NoVoter);
    }
    if new.forced {
        return Ok(forced_change(old, new));
    }
    let mut changes = Vec::new();
    for m in &old.members {
        match new.member(&m.id) {
            None => changes.push(Change::Remove(m.id.clone())),
            Some(n) if m.voter && !n.voter => changes.push(Change::Demote(m.id.clone())),
            Some(n) if !m.voter && n.voter => changes.push(Change::Promote(m.id.clone())),
            Some(n)
                if m.voter && n.voter && m.incarnation != n.incarnation && old.generation > 0 =>
            {
                return Err(ChangeError::VoterReincarnated(m.id.clone()));
            }
            Some(_) => {}
        }
    }
    for n in &new.members {
        if old.member(&n.id).is_none() {
            changes.push(if n.voter {
                Change::AddVoter(n.id.clone())
            } else {
                Change::AddLearner(n.id.clone())
            });
        }
    }
    match changes.len() {
        0 if old.generation == 0 => Ok(Change::Bootstrap),
        0 => Ok(Change::Readdress),
        1 if old.generation > 0 => Ok(changes.remove(0)),
        _ => Err(ChangeError::TooManyChanges(
            changes
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// What a forced configuration changes (no rule limits it: rule 3 is what
/// forcing gives up).
fn forced_change(old: &Configuration, new: &Configuration) -> Change {
    let removed = old
        .members
        .iter()
        .filter(|m| new.member(&m.id).is_none())
        .map(|m| m.id.clone())
        .collect();
    let added = new
        .members
        .iter()
        .filter(|m| old.member(&m.id).is_none())
        .map(|m| m.id.clone())
        .collect();
    let changed = new
        .members
        .iter()
        .filter(|n| old.member(&n.id).is_some_and(|m| m != *n))
        .map(|n| n.id.clone())
        .collect();
    Change::Forced {
        removed,
        added,
        changed,
    }
}

/// The configurations of one log: the static base and every configuration
/// record not yet superseded by a committed one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigLog {
    /// `(lsn, configuration)`, lsn ascending; the first entry is the newest
    /// committed configuration (lsn 0 for the static base).
    entries: Vec<(Lsn, Configuration)>,
    /// Committed configurations a newer committed one superseded, lsn
    /// ascending, at most [`CONFIG_HISTORY`]: what a snapshot whose boundary
    /// lies before the newest committed configuration records
    /// ([`ConfigLog::at_or_below`]).
    history: Vec<(Lsn, Configuration)>,
}

/// How many superseded configurations a [`ConfigLog`] keeps for snapshots.
pub const CONFIG_HISTORY: usize = 32;

/// Why a configuration found in a log cannot follow the ones before it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigLogError {
    /// Not after the newest configuration already seen.
    #[error("configuration at lsn {lsn} is not after the one at lsn {newest}")]
    OutOfOrder {
        /// Its lsn.
        lsn: Lsn,
        /// The newest one's.
        newest: Lsn,
    },
    /// The change itself breaks rule 3.
    #[error("configuration at lsn {lsn}: {error}")]
    Change {
        /// Its lsn.
        lsn: Lsn,
        /// Why.
        error: ChangeError,
    },
}

impl ConfigLog {
    /// A log with no configuration record: `base` (generation 0, from
    /// `node.toml`) is in effect.
    pub fn new(base: Configuration) -> ConfigLog {
        ConfigLog {
            entries: vec![(0, base)],
            history: Vec::new(),
        }
    }

    /// The configurations of a log whose records up to a snapshot boundary
    /// were replaced by the snapshot: `at_snapshot` is what the snapshot
    /// recorded (`spec/snapshot-format.md` §1.5); `base` the static list of
    /// `node.toml`, in force when no configuration record precedes the
    /// boundary. A snapshot that records nothing (`Unrecorded`: written by a
    /// build or an embedder that does not track membership) leaves the static
    /// list in force.
    pub fn at_snapshot(base: Configuration, at_snapshot: &BoundaryMembership) -> ConfigLog {
        match at_snapshot {
            BoundaryMembership::Record { lsn, config } => ConfigLog {
                entries: vec![(*lsn, config.clone())],
                history: Vec::new(),
            },
            BoundaryMembership::Static | BoundaryMembership::Unrecorded => ConfigLog::new(base),
        }
    }

    /// What a snapshot whose boundary is `boundary` records: the newest
    /// configuration at or below it, or `None` when this log no longer knows
    /// it (the boundary lies before the configurations it kept).
    pub fn at_or_below(&self, boundary: Lsn) -> Option<BoundaryMembership> {
        let (lsn, config) = self
            .entries
            .iter()
            .rev()
            .chain(self.history.iter().rev())
            .find(|(l, _)| *l <= boundary)?;
        Some(if *lsn == 0 {
            BoundaryMembership::Static
        } else {
            BoundaryMembership::Record {
                lsn: *lsn,
                config: config.clone(),
            }
        })
    }

    /// A configuration record at `lsn` was appended (or found on open).
    ///
    /// The first record of a log replaces the static base whatever it lists:
    /// the base is this node's `node.toml`, which may differ from the one of
    /// the primary that wrote the record (a member added later lists itself as
    /// a learner); the log is what the cluster agreed on. Every later record
    /// must follow the one before it by the rules of [`classify_change`].
    pub fn observe(&mut self, lsn: Lsn, config: Configuration) -> Result<Change, ConfigLogError> {
        let (newest_lsn, newest) = self.newest_entry();
        if lsn <= newest_lsn {
            return Err(ConfigLogError::OutOfOrder {
                lsn,
                newest: newest_lsn,
            });
        }
        let change = if newest_lsn == 0 && newest.generation == 0 {
            if config.voters().next().is_none() {
                return Err(ConfigLogError::Change {
                    lsn,
                    error: ChangeError::NoVoter,
                });
            }
            classify_change(newest, &config).unwrap_or(Change::Bootstrap)
        } else {
            classify_change(newest, &config)
                .map_err(|error| ConfigLogError::Change { lsn, error })?
        };
        self.entries.push((lsn, config));
        Ok(change)
    }

    /// The log of a node: `base` (its `node.toml`) and every configuration
    /// record `reader` yields, with what is committed at `commit` forgotten.
    pub fn from_log<S: Storage>(
        base: Configuration,
        reader: WalReader<S>,
        commit: Lsn,
    ) -> Result<ConfigLog, MembershipError> {
        ConfigLog::new(base).extended_by(reader, commit)
    }

    /// This log extended by every configuration record `reader` yields after
    /// its newest one (a WAL may still hold records before the snapshot a log
    /// starts from), with what is committed at `commit` forgotten.
    pub fn extended_by<S: Storage>(
        mut self,
        reader: WalReader<S>,
        commit: Lsn,
    ) -> Result<ConfigLog, MembershipError> {
        let after = self.newest_lsn();
        for (lsn, config) in configurations_in(reader)? {
            if lsn > after {
                self.observe(lsn, config)?;
            }
        }
        self.committed(commit);
        Ok(self)
    }

    /// The newest configuration record and whether it is committed at
    /// `commit` (for status and for the election core).
    pub fn view(&self, commit: Lsn) -> MembershipView {
        let committed = self.newest_lsn() <= commit;
        let n = self.entries.len();
        // While a removal is not committed, the old voters' copies still count (rule 2):
        // the member leaving keeps getting heartbeats, so that it follows whoever leads.
        let departing = if committed || n < 2 {
            Vec::new()
        } else {
            let newest = self.newest();
            self.entries[n - 2]
                .1
                .members
                .iter()
                .filter(|m| newest.member(&m.id).is_none())
                .cloned()
                .collect()
        };
        MembershipView {
            lsn: self.newest_lsn(),
            config: self.newest().clone(),
            committed,
            departing,
        }
    }

    /// The log was cut after `keep_upto`: configurations above it are gone.
    /// (Never below the newest committed one: nothing committed is cut.)
    pub fn rewind(&mut self, keep_upto: Lsn) {
        while self.entries.len() > 1 && self.entries.last().is_some_and(|(l, _)| *l > keep_upto) {
            self.entries.pop();
        }
    }

    /// The commit watermark reached `commit`: forget configurations a
    /// committed one supersedes.
    pub fn committed(&mut self, commit: Lsn) {
        let keep_from = self
            .entries
            .iter()
            .rposition(|(l, _)| *l <= commit)
            .unwrap_or(0);
        self.history.extend(self.entries.drain(..keep_from));
        let excess = self.history.len().saturating_sub(CONFIG_HISTORY);
        self.history.drain(..excess);
    }

    fn newest_entry(&self) -> (Lsn, &Configuration) {
        let (l, c) = self
            .entries
            .last()
            .unwrap_or_else(|| panic!("ConfigLog invariant: the base entry is never removed"));
        (*l, c)
    }

    /// Rule 1: the configuration elections use (the newest in the log).
    pub fn newest(&self) -> &Configuration {
        self.newest_entry().1
    }

    /// Where the newest configuration record is (0: the static base).
    pub fn newest_lsn(&self) -> Lsn {
        self.newest_entry().0
    }

    /// Rule 2: the configurations a record must be committed under given the
    /// commit watermark `commit`: the newest, and the one before it while the
    /// newest is not committed — unless the newest is forced: its old voters
    /// are gone (that is why it was forced), so it commits under itself alone.
    pub fn commit_configs(&self, commit: Lsn) -> Vec<&Configuration> {
        let n = self.entries.len();
        let (newest_lsn, newest) = self.newest_entry();
        if newest_lsn > commit && n >= 2 && !newest.forced {
            vec![&self.entries[n - 2].1, newest]
        } else {
            vec![newest]
        }
    }

    /// Rule 3: may a primary whose commit watermark is `commit` propose a
    /// configuration?
    pub fn may_propose(&self, commit: Lsn) -> Result<(), ChangeError> {
        let pending_lsn = self.newest_lsn();
        if pending_lsn > commit {
            return Err(ChangeError::ChangePending {
                pending_lsn,
                commit_lsn: commit,
            });
        }
        Ok(())
    }
}

/// The newest configuration of a log, as roles report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipView {
    /// Where its record is (0: the static base of `node.toml`).
    pub lsn: Lsn,
    /// The configuration.
    pub config: Configuration,
    /// Whether the commit watermark covers it.
    pub committed: bool,
    /// Members of the configuration before it that it removes, while it is not
    /// committed (empty once it is): their copies still count for the old voters,
    /// so they are reached (heartbeats, addresses) though they are not members of it.
    pub departing: Vec<ConfigMember>,
}

impl MembershipView {
    /// `(voter, incarnation)` pairs and the learners, for
    /// [`crate::election::ElectionCore::set_membership`] of node `me`, whose data
    /// directory is incarnation `my_incarnation` (0: unknown). If the configuration
    /// names another incarnation for `me` as a voter, `me` counts as a learner: its
    /// disk was destroyed or replaced and the configuration recording that (the
    /// primary's demotion) has not reached it, so it must neither campaign nor count
    /// its own vote for what the old incarnation held.
    pub fn election_members(
        &self,
        me: &str,
        my_incarnation: u64,
    ) -> (Vec<(String, u64)>, Vec<String>) {
        let other_me = |m: &ConfigMember| {
            m.id == me
                && m.incarnation != 0
                && my_incarnation != 0
                && m.incarnation != my_incarnation
        };
        let voters = self
            .config
            .members
            .iter()
            .filter(|m| m.voter && !other_me(m))
            .map(|m| (m.id.clone(), m.incarnation))
            .collect();
        let learners = self
            .config
            .members
            .iter()
            .filter(|m| !m.voter || other_me(m))
            .chain(&self.departing)
            .map(|m| m.id.clone())
            .collect();
        (voters, learners)
    }
}

/// Why a log's configurations cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Reading the log failed.
    #[error("reading the log's configuration records: {0}")]
    Wal(#[from] WalError),
    /// A control record's body is invalid.
    #[error("control record at lsn {lsn}: {error}")]
    Control {
        /// Its lsn.
        lsn: Lsn,
        /// Why.
        error: walship_wal::control::ControlError,
    },
    /// A configuration does not follow the one before it.
    #[error(transparent)]
    Order(#[from] ConfigLogError),
    /// Stored record bytes that do not parse (a broken invariant of a verified batch).
    #[error("record bytes at offset {offset} do not parse")]
    Bytes {
        /// Where.
        offset: usize,
    },
}

/// Every configuration record `reader` yields, in lsn order.
pub fn configurations_in<S: Storage>(
    mut reader: WalReader<S>,
) -> Result<Vec<(Lsn, Configuration)>, MembershipError> {
    let mut found = Vec::new();
    while let Some(record) = reader.next_record() {
        let record = record?;
        if !record.view().is_control() {
            continue;
        }
        let lsn = record.lsn();
        match ControlRecord::decode(record.payload())
            .map_err(|error| MembershipError::Control { lsn, error })?
        {
            ControlRecord::Configuration { config, .. } => found.push((lsn, config)),
            ControlRecord::EpochStart { .. } => {}
        }
    }
    Ok(found)
}

/// The configuration records in a batch of stored record bytes (already
/// verified: crc, chain, control bodies).
pub fn configurations_in_bytes(bytes: &[u8]) -> Result<Vec<(Lsn, Configuration)>, MembershipError> {
    let mut found = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let header =
            RecordHeader::parse(&bytes[offset..]).ok_or(MembershipError::Bytes { offset })?;
        let len = header.record_len();
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= bytes.len())
            .ok_or(MembershipError::Bytes { offset })?;
        if header.is_control() {
            let payload = &bytes[offset + walship_wal::RECORD_HEADER_LEN..end];
            let lsn = header.lsn;
            if let ControlRecord::Configuration { config, .. } = ControlRecord::decode(payload)
                .map_err(|error| MembershipError::Control { lsn, error })?
            {
                found.push((lsn, config));
            }
        }
        offset = end;
    }
    Ok(found)
}

/// An operator's membership change (`walship ctl add|remove|promote|demote`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// The first configuration record of a log: the base members with every
    /// member's incarnation (written before any other change, and by the
    /// primary by itself once every base member connected).
    Bootstrap,
    /// A new member: a learner unless `member.voter` (a voter added directly
    /// votes at once; `ctl add` adds a learner, waits until it caught up,
    /// then promotes it).
    Add(ConfigMember),
    /// A member leaves.
    Remove(String),
    /// A learner becomes a voter.
    Promote(String),
    /// A voter becomes a learner, optionally recording a new incarnation (a
    /// voter whose disk was replaced: its old votes and receipts stop counting).
    Demote {
        /// The member.
        id: String,
        /// Its new incarnation, if it changed.
        incarnation: Option<u64>,
    },
}

/// Why an operator's change cannot be applied to the newest configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberChangeError {
    /// `Add` of a member already listed.
    #[error("{0} is already a member")]
    AlreadyMember(String),
    /// A change naming a node that is not a member.
    #[error("{0} is not a member")]
    NotAMember(String),
    /// `Promote` of a voter or `Demote` of a learner.
    #[error("{id} is already a {}", if *voter { "voter" } else { "learner" })]
    Unchanged {
        /// The member.
        id: String,
        /// What it is.
        voter: bool,
    },
    /// The rules refuse the result.
    #[error(transparent)]
    Rules(#[from] ChangeError),
}

/// The configuration `change` makes of `current` (generation + 1), checked
/// against rule 3. `current` must be a configuration record's (generation
/// ≥ 1): the first record of a log is the bootstrap, written before any
/// change.
pub fn apply_change(
    current: &Configuration,
    change: &MemberChange,
) -> Result<Configuration, MemberChangeError> {
    let mut next = current.clone();
    next.generation = current.generation.wrapping_add(1);
    // Only an operator forces a configuration; a change after a forced one is an
    // ordinary one again (rule 3), joint-committed with it.
    next.forced = false;
    match change {
        MemberChange::Bootstrap => {
            return Err(MemberChangeError::Rules(ChangeError::Generation {
                previous: current.generation,
                found: 1,
            }))
        }
        MemberChange::Add(m) => {
            if current.member(&m.id).is_some() {
                return Err(MemberChangeError::AlreadyMember(m.id.clone()));
            }
            next.members.push(m.clone());
        }
        MemberChange::Remove(id) => {
            if current.member(id).is_none() {
                return Err(MemberChangeError::NotAMember(id.clone()));
            }
            next.members.retain(|m| m.id != *id);
        }
        MemberChange::Promote(id) | MemberChange::Demote { id, .. } => {
            let promote = matches!(change, MemberChange::Promote(_));
            let m = next
                .members
                .iter_mut()
                .find(|m| m.id == *id)
                .ok_or_else(|| MemberChangeError::NotAMember(id.clone()))?;
            if m.voter == promote {
                return Err(MemberChangeError::Unchanged {
                    id: id.clone(),
                    voter: m.voter,
                });
            }
            m.voter = promote;
            if let MemberChange::Demote {
                incarnation: Some(inc),
                ..
            } = change
            {
                m.incarnation = *inc;
            }
        }
    }
    classify_change(current, &next)?;
    Ok(next)
}

/// What `walship ctl force-quorum` does to the newest configuration (spec/membership.md
/// §3, "Forced configurations"): the survivors become the voters of a forced
/// configuration at generation + 1; the other voters are removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcePlan {
    /// The forced configuration.
    pub config: Configuration,
    /// The voters it removes (unreachable, presumed lost).
    pub lost: Vec<String>,
    /// Whether a committed (acknowledged) record may exist only on the lost voters:
    /// they are at least as many as the copies a commit needs, so some commit set may
    /// lie entirely among them. Then the operator must accept the loss.
    pub may_lose: bool,
}

/// Why a forced configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForceError {
    /// No survivor named.
    #[error("force-quorum needs at least one surviving member")]
    NoSurvivor,
    /// A survivor that is not a member of the newest configuration.
    #[error("{0} is not a member of the newest configuration")]
    NotAMember(String),
    /// The surviving voters can still elect: nothing needs forcing.
    #[error("{have} of the {voters} voters survive and {need} elect: no force needed (wait for the election, or `walship ctl promote`)")]
    NotNeeded {
        /// Surviving voters.
        have: usize,
        /// Votes an election needs.
        need: usize,
        /// Voters of the newest configuration.
        voters: usize,
    },
    /// The survivors are fewer than the copies a commit needs under the quorum setting
    /// (static `k`: `k + 1`): the forced configuration could never commit, not even
    /// itself (`PrimaryExec::propose_configuration` refuses such a configuration too).
    #[error("{voters} surviving voters cannot hold the {copies} copies a commit needs under quorum {setting}: the forced configuration would never commit")]
    CommitUnreachable {
        /// Voters of the forced configuration.
        voters: usize,
        /// Copies a commit needs.
        copies: usize,
        /// The quorum setting.
        setting: i64,
    },
    /// Asked of the primary.
    #[error("this node is the primary: nothing to force (walship ctl remove drops a lost member)")]
    IsPrimary,
    /// Asked of a node the survivors do not name.
    #[error("{0} is not among the survivors named")]
    NotASurvivor(String),
    /// A surviving member whose incarnation no configuration record names yet.
    #[error("{0}'s incarnation is unknown (the log holds no configuration record yet): force-quorum with this node alone, then `walship ctl add` the others")]
    UnknownIncarnation(String),
    /// A loss is possible and was not accepted.
    #[error("the lost voters {lost:?} may hold acknowledged records this node lacks (records above its log end, lsn {log_end}): repeat with accept_data_loss")]
    LossNotAccepted {
        /// The voters removed.
        lost: Vec<String>,
        /// The forcing node's log end: what may be lost lies above it.
        log_end: Lsn,
    },
}

/// A running member of the cluster as `walship ctl force-quorum` sees it (its
/// `/status`), for [`choose_force_survivors`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForceCandidate {
    /// Its node id.
    pub id: String,
    /// The incarnation of its data directory (0: not reported).
    pub incarnation: u64,
    /// The last record of its log (epoch of that record, lsn), as elections compare it.
    pub log_head: LogPosition,
}

/// Who survives and who campaigns for `walship ctl force-quorum`, from the members that
/// answered (running, neither halted nor stopped): the survivors are those `config`
/// lists that run the incarnation it names (one that came back with another lost its
/// data: it holds nothing of the old one, and a forced configuration naming its old
/// incarnation would keep a voter that never votes); the one that campaigns is the most
/// up to date of them by log head (epoch, then lsn), the smaller id on a tie. `None`
/// when no member survives.
pub fn choose_force_survivors(
    config: &Configuration,
    reachable: &[ForceCandidate],
) -> Option<(Vec<String>, String)> {
    let survivors: Vec<&ForceCandidate> = reachable
        .iter()
        .filter(|c| {
            config.member(&c.id).is_some_and(|m| {
                m.incarnation == 0 || c.incarnation == 0 || m.incarnation == c.incarnation
            })
        })
        .collect();
    let chosen = survivors
        .iter()
        .max_by(|a, b| a.log_head.cmp(&b.log_head).then(b.id.cmp(&a.id)))?;
    Some((
        survivors.iter().map(|c| c.id.clone()).collect(),
        chosen.id.clone(),
    ))
}

/// The node `walship ctl force-quorum` asks to campaign, for [`start_force_quorum`].
#[derive(Clone, Copy, Debug)]
pub struct ForceNode<'a> {
    /// Its node id.
    pub id: &'a str,
    /// The incarnation of its data directory.
    pub incarnation: u64,
    /// Its election core leads.
    pub primary: bool,
    /// The newest configuration in its log.
    pub config: &'a Configuration,
    /// The lsn its log ends at.
    pub log_end: Lsn,
}

/// A force-quorum campaign as [`start_force_quorum`] decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForceStart {
    /// The plan; `plan.config` is what the node's primary role writes right after its
    /// epoch's control record if it wins (`ExecConfig::forced_config`).
    pub plan: ForcePlan,
    /// The voters its election core counts votes among until then (with the incarnation
    /// each must vote from).
    pub voters: Vec<(String, u64)>,
    /// The learners its election core knows until then.
    pub learners: Vec<String>,
}

/// Elections a force-quorum campaign may take: after this many election timeouts
/// without leading, the forced configuration is dropped (the operator runs it again).
pub const FORCE_CAMPAIGN_TIMEOUTS: u64 = 20;

/// What node `me` does on `walship ctl force-quorum` (spec/membership.md §3): refused on
/// a primary, when `me` is not among `survivors`, when [`plan_force_quorum`] refuses,
/// when a survivor's incarnation is unknown (the log holds no configuration record;
/// `me`'s own is filled in), and when the plan may lose acknowledged records without
/// `accept_data_loss`. Else the plan, and the members its election core counts votes
/// among (`MembershipView::election_members` of the forced configuration); the caller
/// sets them, campaigns now, and gives `plan.config` to the primary role it opens.
pub fn start_force_quorum(
    me: ForceNode<'_>,
    survivors: &[String],
    setting: i64,
    accept_data_loss: bool,
) -> Result<ForceStart, ForceError> {
    if me.primary {
        return Err(ForceError::IsPrimary);
    }
    if !survivors.iter().any(|s| s == me.id) {
        return Err(ForceError::NotASurvivor(me.id.to_owned()));
    }
    let mut plan = plan_force_quorum(me.config, survivors, setting)?;
    for m in &mut plan.config.members {
        if m.incarnation == 0 && m.id == me.id {
            m.incarnation = me.incarnation;
        }
        if m.incarnation == 0 {
            return Err(ForceError::UnknownIncarnation(m.id.clone()));
        }
    }
    if plan.may_lose && !accept_data_loss {
        return Err(ForceError::LossNotAccepted {
            lost: plan.lost.clone(),
            log_end: me.log_end,
        });
    }
    let (voters, learners) = MembershipView {
        lsn: 0,
        config: plan.config.clone(),
        committed: false,
        departing: Vec::new(),
    }
    .election_members(me.id, me.incarnation);
    Ok(ForceStart {
        plan,
        voters,
        learners,
    })
}

/// While a force-quorum campaign's configuration `forced` waits to be written, a
/// configuration its running role reports is ignored unless it is at least as new (the
/// role's log still holds the configuration the force replaces; the core keeps counting
/// among the survivors).
pub fn forced_campaign_keeps(forced: &Configuration, reported: &Configuration) -> bool {
    reported.generation < forced.generation
}

/// The forced configuration for `survivors` (member ids of `current`), under the quorum
/// `setting`. Refused when the survivors include an election quorum of `current`'s voters
/// (automatic elections can proceed) or name a non-member.
pub fn plan_force_quorum(
    current: &Configuration,
    survivors: &[String],
    setting: i64,
) -> Result<ForcePlan, ForceError> {
    if survivors.is_empty() {
        return Err(ForceError::NoSurvivor);
    }
    for s in survivors {
        if current.member(s).is_none() {
            return Err(ForceError::NotAMember(s.clone()));
        }
    }
    let voters: Vec<&str> = current.voters().collect();
    let have = voters
        .iter()
        .filter(|v| survivors.iter().any(|s| s == *v))
        .count();
    if let Some(need) = election_quorum(voters.len(), setting) {
        if have >= need {
            return Err(ForceError::NotNeeded {
                have,
                need,
                voters: voters.len(),
            });
        }
    }
    let lost: Vec<String> = voters
        .iter()
        .filter(|v| !survivors.iter().any(|s| s == *v))
        .map(|v| (*v).to_owned())
        .collect();
    let copies = commit_copies(voters.len(), setting).unwrap_or(1);
    let forced_copies = commit_copies(survivors.len(), setting).unwrap_or(1);
    if forced_copies > survivors.len() {
        return Err(ForceError::CommitUnreachable {
            voters: survivors.len(),
            copies: forced_copies,
            setting,
        });
    }
    let mut config = current.clone();
    config.generation = current.generation.wrapping_add(1);
    config.forced = true;
    config.members.retain(|m| survivors.contains(&m.id));
    for m in &mut config.members {
        m.voter = true;
    }
    Ok(ForcePlan {
        config,
        may_lose: lost.len() >= copies,
        lost,
    })
}

/// What a primary knows of one replica, for [`automatic_change`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaFacts {
    /// Its node id.
    pub id: String,
    /// The incarnation its current session's `Hello` announced (0: unknown or
    /// not connected).
    pub incarnation: u64,
    /// Its durable lsn as the primary knows it (receipts).
    pub durable_lsn: Lsn,
    /// How long it has been silent (no receipt) as this primary saw it: since its last
    /// receipt, or since the primary started if it never sent one.
    pub silent_ms: u64,
}

/// The change a primary makes by itself, if any (spec/membership.md §5): a
/// member silent for `deregistration_timeout_ms` (> 0) is removed; a voter
/// that connected with another incarnation than
/// the configuration names lost its disk (or had it replaced), so it is
/// demoted to a learner under its new incarnation — its votes and receipts
/// no longer count for the old one. With `auto_promote`, a learner that
/// holds everything up to `commit` becomes a voter again. One change at a
/// time: `None` while the newest configuration is not committed or is the
/// static base (generation 0).
pub fn automatic_change(
    view: &MembershipView,
    replicas: &[ReplicaFacts],
    commit: Lsn,
    auto_promote: bool,
    deregistration_timeout_ms: u64,
) -> Option<MemberChange> {
    if !view.committed {
        return None;
    }
    if view.config.generation == 0 {
        // Record every base member's incarnation as soon as each replica connected (the
        // primary's own is its identity's; it has no replica entry).
        let all_known = replicas.iter().all(|r| r.incarnation != 0);
        return all_known.then_some(MemberChange::Bootstrap);
    }
    for r in replicas {
        if let Some(m) = view.config.member(&r.id) {
            if m.voter && r.incarnation != 0 && m.incarnation != 0 && r.incarnation != m.incarnation
            {
                return Some(MemberChange::Demote {
                    id: r.id.clone(),
                    incarnation: Some(r.incarnation),
                });
            }
        }
    }
    // Seed 000 scenario 6 (`elector.deregistration_timeout`): a member silent for the
    // timeout is removed, so that the voters left can elect and commit without it. The
    // removal is a configuration record: audited in the log like any change.
    if deregistration_timeout_ms > 0 {
        if let Some(r) = replicas.iter().find(|r| {
            r.silent_ms >= deregistration_timeout_ms && view.config.member(&r.id).is_some()
        }) {
            return Some(MemberChange::Remove(r.id.clone()));
        }
    }
    if auto_promote {
        for r in replicas {
            if let Some(m) = view.config.member(&r.id) {
                if !m.voter
                    && r.incarnation != 0
                    && r.incarnation == m.incarnation
                    && r.durable_lsn >= commit
                    && commit > 0
                {
                    return Some(MemberChange::Promote(r.id.clone()));
                }
            }
        }
    }
    None
}

/// The static base configuration (generation 0) of a member list: ids,
/// addresses, voter flags; incarnations unknown (0).
pub fn base_configuration(members: impl IntoIterator<Item = ConfigMember>) -> Configuration {
    Configuration {
        generation: 0,
        forced: false,
        members: members.into_iter().collect(),
    }
}

/// Votes a candidate needs under `config` (rule 1: the newest configuration
/// in its log) and the quorum setting, or `None` (setting 0: no automatic
/// election).
pub fn election_votes_needed(config: &Configuration, setting: i64) -> Option<usize> {
    election_quorum(config.voters().count(), setting)
}

/// The commit point (rule 2): the highest lsn committable under every
/// configuration in `configs`, counting for each only its voters' durable
/// lsns (`durable(id)`, the primary's own included; a voter not heard from
/// is 0), with the new epoch's rule (`epoch_start_lsn`, "figure 8").
pub fn joint_committable_lsn(
    configs: &[&Configuration],
    setting: i64,
    epoch_start_lsn: Lsn,
    durable: impl Fn(&str) -> Lsn,
) -> Option<Lsn> {
    let mut point: Option<Lsn> = None;
    for config in configs {
        let lsns: Vec<Lsn> = config.voters().map(&durable).collect();
        let copies = commit_copies(lsns.len(), setting)?;
        let here = committable_lsn(epoch_start_lsn, &lsns, copies)?;
        point = Some(point.map_or(here, |p| p.min(here)));
    }
    point
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, voter: bool) -> ConfigMember {
        ConfigMember {
            id: id.to_string(),
            incarnation: 1,
            voter,
            addr: format!("{id}:1"),
            http_addr: None,
        }
    }

    fn cfg(generation: u64, members: &[(&str, bool)]) -> Configuration {
        Configuration {
            generation,
            forced: false,
            members: members.iter().map(|(id, v)| m(id, *v)).collect(),
        }
    }

    #[test]
    fn the_primary_demotes_a_reincarnated_voter_and_deregisters_a_silent_member() {
        let mut abc = cfg(2, &[("a", true), ("b", true), ("c", true)]);
        abc.members[1].incarnation = 7;
        let view = MembershipView {
            lsn: 3,
            config: abc,
            committed: true,
            departing: Vec::new(),
        };
        let fact = |id: &str, incarnation: u64, silent_ms: u64| ReplicaFacts {
            id: id.into(),
            incarnation,
            durable_lsn: 10,
            silent_ms,
        };
        let healthy = [fact("b", 7, 0), fact("c", 1, 0)];
        assert_eq!(automatic_change(&view, &healthy, 10, false, 5_000), None);
        let wiped = [fact("b", 99, 0), fact("c", 1, 0)];
        assert_eq!(
            automatic_change(&view, &wiped, 10, false, 0),
            Some(MemberChange::Demote {
                id: "b".into(),
                incarnation: Some(99)
            })
        );
        let silent = [fact("b", 7, 0), fact("c", 1, 6_000)];
        assert_eq!(
            automatic_change(&view, &silent, 10, false, 5_000),
            Some(MemberChange::Remove("c".into()))
        );
        assert_eq!(
            automatic_change(&view, &silent, 10, false, 0),
            None,
            "0: never deregistered"
        );
        let pending = MembershipView {
            committed: false,
            ..view
        };
        assert_eq!(
            automatic_change(&pending, &silent, 10, false, 5_000),
            None,
            "one change at a time"
        );
    }

    #[test]
    fn a_member_whose_removal_is_not_committed_still_gets_heartbeats() {
        let mut log = ConfigLog::new(cfg(0, &[("a", true), ("b", true), ("c", true)]));
        log.observe(1, cfg(1, &[("a", true), ("b", true), ("c", true)]))
            .expect("bootstrap");
        log.observe(5, cfg(2, &[("a", true), ("b", true)]))
            .expect("remove c");
        let pending = log.view(4);
        assert_eq!(
            pending
                .departing
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            vec!["c"]
        );
        let (voters, learners) = pending.election_members("a", 1);
        assert_eq!(
            voters.len(),
            2,
            "c does not vote in the newest configuration"
        );
        assert_eq!(learners, vec!["c".to_string()], "but is reached");
        let done = log.view(5);
        assert!(done.departing.is_empty());
        assert!(done.election_members("a", 1).1.is_empty());
    }

    #[test]
    fn a_node_named_as_a_voter_under_another_incarnation_counts_itself_a_learner() {
        let mut abc = cfg(2, &[("a", true), ("b", true), ("c", true)]);
        abc.members[1].incarnation = 7;
        let view = MembershipView {
            lsn: 3,
            config: abc,
            committed: true,
            departing: Vec::new(),
        };
        let (voters, learners) = view.election_members("b", 7);
        assert_eq!(voters.len(), 3);
        assert!(learners.is_empty());
        // b's disk was destroyed: its new incarnation 99 is not the voter the log names.
        let (voters, learners) = view.election_members("b", 99);
        assert_eq!(
            voters.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(),
            vec!["a", "c"]
        );
        assert_eq!(learners, vec!["b".to_string()]);
        // The others see b as the voter the log names.
        assert_eq!(view.election_members("a", 1).0.len(), 3);
    }

    #[test]
    fn force_quorum_removes_the_lost_voters_and_says_when_a_commit_may_be_lost() {
        let abc = cfg(3, &[("a", true), ("b", true), ("c", true)]);
        let plan = plan_force_quorum(&abc, &["a".into()], -1).expect("two of three lost");
        assert_eq!(plan.config.generation, 4);
        assert!(plan.config.forced);
        assert_eq!(plan.config.voters().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(plan.lost, vec!["b".to_string(), "c".to_string()]);
        assert!(plan.may_lose, "b and c are a commit quorum of their own");
        assert!(matches!(
            classify_change(&abc, &plan.config),
            Ok(Change::Forced { .. })
        ));
        assert_eq!(
            plan_force_quorum(&abc, &["a".into(), "b".into()], -1),
            Err(ForceError::NotNeeded {
                have: 2,
                need: 2,
                voters: 3
            })
        );
        // Five voters, static k = 3 (four copies): three lost cannot hold a commit alone.
        let five = cfg(
            1,
            &[
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", true),
            ],
        );
        // Every commit set of four copies meets a or b, but two voters could never hold
        // four copies again: refused, as a proposal of such a configuration is.
        assert_eq!(
            plan_force_quorum(&five, &["a".into(), "b".into()], 3),
            Err(ForceError::CommitUnreachable {
                voters: 2,
                copies: 4,
                setting: 3
            })
        );
        assert_eq!(
            plan_force_quorum(&abc, &["z".into()], -1),
            Err(ForceError::NotAMember("z".into()))
        );
        // Static k = 2 needs three copies: one survivor could never commit.
        assert_eq!(
            plan_force_quorum(&abc, &["a".into()], 2),
            Err(ForceError::CommitUnreachable {
                voters: 1,
                copies: 3,
                setting: 2
            })
        );
    }

    #[test]
    fn force_survivors_are_the_members_of_their_named_incarnation_and_the_most_up_to_date_campaigns(
    ) {
        // m() names incarnation 1 for every member.
        let abcd = cfg(2, &[("a", true), ("b", true), ("c", true), ("d", false)]);
        let at = |id: &str, incarnation: u64, epoch: u64, lsn: u64| ForceCandidate {
            id: id.into(),
            incarnation,
            log_head: LogPosition::new(epoch, lsn),
        };
        // b came back with another incarnation (its disk was destroyed): not a survivor,
        // however long its new log; z is no member.
        let reachable = [
            at("a", 1, 2, 10),
            at("b", 9, 3, 50),
            at("c", 1, 3, 4),
            at("d", 1, 3, 4),
            at("z", 1, 4, 99),
        ];
        let (survivors, chosen) = choose_force_survivors(&abcd, &reachable).expect("survivors");
        assert_eq!(survivors, vec!["a", "c", "d"]);
        assert_eq!(
            chosen, "c",
            "epoch 3 beats epoch 2; c and d tie, the smaller id wins"
        );
        // Incarnation 0 (unknown: the base configuration, or not reported) matches.
        let (survivors, chosen) =
            choose_force_survivors(&abcd, &[at("b", 0, 1, 1)]).expect("b survives");
        assert_eq!(
            (survivors, chosen),
            (vec!["b".to_string()], "b".to_string())
        );
        assert_eq!(choose_force_survivors(&abcd, &[at("b", 9, 9, 9)]), None);
    }

    #[test]
    fn force_quorum_starts_a_campaign_among_the_survivors_only_with_the_loss_accepted() {
        let abc = cfg(3, &[("a", true), ("b", true), ("c", true)]);
        let a = ForceNode {
            id: "a",
            incarnation: 1,
            primary: false,
            config: &abc,
            log_end: 42,
        };
        let only_a = ["a".to_string()];
        assert_eq!(
            start_force_quorum(ForceNode { primary: true, ..a }, &only_a, -1, true),
            Err(ForceError::IsPrimary)
        );
        assert_eq!(
            start_force_quorum(a, &["b".to_string()], -1, true),
            Err(ForceError::NotASurvivor("a".into()))
        );
        assert_eq!(
            start_force_quorum(a, &only_a, -1, false),
            Err(ForceError::LossNotAccepted {
                lost: vec!["b".into(), "c".into()],
                log_end: 42
            })
        );
        let start = start_force_quorum(a, &only_a, -1, true).expect("accepted");
        assert!(start.plan.may_lose && start.plan.config.forced);
        assert_eq!(start.plan.config.generation, 4);
        assert_eq!(start.voters, vec![("a".to_string(), 1)]);
        assert!(start.learners.is_empty());
        // Five voters under static k = 3: two survivors cannot hold its four copies.
        let five = cfg(
            1,
            &[
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", true),
            ],
        );
        let two = ["a".to_string(), "b".to_string()];
        assert!(matches!(
            start_force_quorum(ForceNode { config: &five, ..a }, &two, 3, true),
            Err(ForceError::CommitUnreachable { .. })
        ));
        // The base configuration: this node's incarnation is filled in, another
        // survivor's is unknown.
        let mut base = abc.clone();
        base.generation = 0;
        for m in &mut base.members {
            m.incarnation = 0;
        }
        let start =
            start_force_quorum(ForceNode { config: &base, ..a }, &only_a, -1, true).expect("alone");
        assert_eq!(start.plan.config.members[0].incarnation, 1);
        let mut base5 = five.clone();
        base5.generation = 0;
        for m in &mut base5.members {
            m.incarnation = 0;
        }
        assert_eq!(
            start_force_quorum(
                ForceNode {
                    config: &base5,
                    ..a
                },
                &two,
                -1,
                true
            ),
            Err(ForceError::UnknownIncarnation("b".into()))
        );
        // Until the forced configuration is in the log, the role's older one is ignored.
        assert!(forced_campaign_keeps(&start.plan.config, &base));
        assert!(!forced_campaign_keeps(
            &start.plan.config,
            &start.plan.config
        ));
    }

    #[test]
    fn one_vote_moves_per_change_and_generations_follow() {
        let abc = cfg(1, &[("a", true), ("b", true), ("c", true)]);
        let add_d = cfg(2, &[("a", true), ("b", true), ("c", true), ("d", false)]);
        assert_eq!(
            classify_change(&abc, &add_d),
            Ok(Change::AddLearner("d".into()))
        );
        let promote_d = cfg(3, &[("a", true), ("b", true), ("c", true), ("d", true)]);
        assert_eq!(
            classify_change(&add_d, &promote_d),
            Ok(Change::Promote("d".into()))
        );
        let two = cfg(
            2,
            &[
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", true),
            ],
        );
        assert!(matches!(
            classify_change(&abc, &two),
            Err(ChangeError::TooManyChanges(_))
        ));
        let skip = cfg(3, &[("a", true), ("b", true)]);
        assert_eq!(
            classify_change(&abc, &skip),
            Err(ChangeError::Generation {
                previous: 1,
                found: 3
            })
        );
        let remove_c = cfg(2, &[("a", true), ("b", true)]);
        assert_eq!(
            classify_change(&abc, &remove_c),
            Ok(Change::Remove("c".into()))
        );
        let mut reinc = abc.clone();
        reinc.generation = 2;
        reinc.members[1].incarnation = 9;
        assert_eq!(
            classify_change(&abc, &reinc),
            Err(ChangeError::VoterReincarnated("b".into()))
        );
        // The first record after the static base records incarnations.
        let base = cfg(0, &[("a", true), ("b", true), ("c", true)]);
        let mut first = abc.clone();
        first.members[2].incarnation = 7;
        assert_eq!(classify_change(&base, &first), Ok(Change::Bootstrap));
        assert!(matches!(
            classify_change(&base, &remove_c_gen1()),
            Err(ChangeError::TooManyChanges(_))
        ));
    }

    fn remove_c_gen1() -> Configuration {
        cfg(1, &[("a", true), ("b", true)])
    }

    #[test]
    fn a_snapshot_records_the_newest_configuration_at_or_below_its_boundary() {
        let base = cfg(0, &[("a", true), ("b", true), ("c", true)]);
        let mut log = ConfigLog::new(base.clone());
        assert_eq!(log.at_or_below(0), Some(BoundaryMembership::Static));
        let gens: Vec<Configuration> = (1..=3)
            .map(|g| cfg(g, &[("a", true), ("b", true), ("c", g < 3)]))
            .collect();
        for (i, c) in gens.iter().enumerate() {
            let lsn = 10 * (i as u64 + 1);
            log.observe(lsn, c.clone()).expect("follows");
            log.committed(lsn);
        }
        // Committed and superseded configurations are still answered.
        assert_eq!(log.at_or_below(9), Some(BoundaryMembership::Static));
        for (b, g) in [(10, 0), (19, 0), (20, 1), (29, 1), (30, 2), (1000, 2)] {
            assert_eq!(
                log.at_or_below(b),
                Some(BoundaryMembership::Record {
                    lsn: 10 * (g as u64 + 1),
                    config: gens[g].clone()
                }),
                "boundary {b}"
            );
        }
        // A log that starts from a snapshot's record goes on from it: records at or
        // below it in the WAL are not seen twice.
        let resumed = ConfigLog::at_snapshot(
            base.clone(),
            &BoundaryMembership::Record {
                lsn: 20,
                config: gens[1].clone(),
            },
        );
        assert_eq!((resumed.newest_lsn(), resumed.newest()), (20, &gens[1]));
        assert_eq!(resumed.at_or_below(19), None, "older than it knows");
        // Static and unrecorded snapshots leave the static list in force.
        for m in [BoundaryMembership::Static, BoundaryMembership::Unrecorded] {
            let l = ConfigLog::at_snapshot(base.clone(), &m);
            assert_eq!((l.newest_lsn(), l.newest()), (0, &base));
        }
    }

    #[test]
    fn the_history_kept_for_snapshots_is_bounded() {
        let mut log = ConfigLog::new(cfg(0, &[("a", true)]));
        let n = CONFIG_HISTORY as u64 + 10;
        for g in 1..=n {
            let c = cfg(g, &[("a", true), ("b", g % 2 == 0)]);
            log.observe(g, c).expect("follows");
            log.committed(g);
        }
        assert_eq!(log.history.len(), CONFIG_HISTORY);
        assert_eq!(log.at_or_below(1), None, "forgotten beyond the history");
        assert!(log.at_or_below(n - CONFIG_HISTORY as u64).is_some());
    }

    #[test]
    fn joint_until_the_newest_configuration_commits_then_only_the_newest() {
        let mut log = ConfigLog::new(cfg(0, &[("a", true), ("b", true), ("c", true)]));
        log.observe(1, cfg(1, &[("a", true), ("b", true), ("c", true)]))
            .expect("bootstrap");
        log.committed(1);
        let add_d = cfg(2, &[("a", true), ("b", true), ("c", true), ("d", true)]);
        assert_eq!(
            log.observe(5, add_d.clone()),
            Ok(Change::AddVoter("d".into()))
        );
        assert_eq!(log.newest(), &add_d, "elections use the uncommitted newest");
        assert_eq!(log.commit_configs(4).len(), 2);
        assert_eq!(
            log.may_propose(4),
            Err(ChangeError::ChangePending {
                pending_lsn: 5,
                commit_lsn: 4
            })
        );
        // Static k = 1 (two copies): lsn 6 on a and d only is enough for the
        // new configuration, not for the old one.
        let durable = |id: &str| match id {
            "a" | "d" => 6,
            _ => 4,
        };
        let configs = log.commit_configs(4);
        assert_eq!(joint_committable_lsn(&configs[1..], 1, 1, durable), Some(6));
        assert_eq!(joint_committable_lsn(&configs, 1, 1, durable), Some(4));
        log.committed(6);
        assert_eq!(log.commit_configs(6), vec![&add_d]);
        assert_eq!(log.may_propose(6), Ok(()));
        assert_eq!(
            log.observe(5, add_d),
            Err(ConfigLogError::OutOfOrder { lsn: 5, newest: 5 })
        );
    }

    fn forced(generation: u64, members: &[(&str, bool)]) -> Configuration {
        Configuration {
            forced: true,
            ..cfg(generation, members)
        }
    }

    #[test]
    fn a_forced_configuration_may_change_any_members_at_generation_plus_one() {
        let abcde = cfg(
            3,
            &[
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", false),
            ],
        );
        // Two survivors of five: three voters and a learner leave at once, f joins.
        let mut survivors = forced(4, &[("a", true), ("b", true), ("f", false)]);
        survivors.members[1].addr = "b:2".into();
        assert_eq!(
            classify_change(&abcde, &survivors),
            Ok(Change::Forced {
                removed: vec!["c".into(), "d".into(), "e".into()],
                added: vec!["f".into()],
                changed: vec!["b".into()],
            })
        );
        // The same member list unforced is refused (rule 3).
        let mut unforced = survivors.clone();
        unforced.forced = false;
        assert!(matches!(
            classify_change(&abcde, &unforced),
            Err(ChangeError::TooManyChanges(_))
        ));
        // A voter's new incarnation is no refusal when forced (its old votes are moot:
        // every other voter is gone).
        let mut reinc = forced(4, &[("a", true)]);
        reinc.members[0].incarnation = 9;
        assert_eq!(
            classify_change(&abcde, &reinc),
            Ok(Change::Forced {
                removed: vec!["b".into(), "c".into(), "d".into(), "e".into()],
                added: vec![],
                changed: vec!["a".into()],
            })
        );
        // Generation still + 1, and still a voter.
        assert_eq!(
            classify_change(&abcde, &forced(5, &[("a", true)])),
            Err(ChangeError::Generation {
                previous: 3,
                found: 5
            })
        );
        assert_eq!(
            classify_change(&abcde, &forced(3, &[("a", true)])),
            Err(ChangeError::Generation {
                previous: 3,
                found: 3
            })
        );
        assert_eq!(
            classify_change(&abcde, &forced(4, &[("a", false), ("b", false)])),
            Err(ChangeError::NoVoter)
        );
        // Over the static base (generation 0): generation 1, any members.
        let base = cfg(0, &[("a", true), ("b", true), ("c", true)]);
        assert_eq!(
            classify_change(&base, &forced(1, &[("c", true)])),
            Ok(Change::Forced {
                removed: vec!["a".into(), "b".into()],
                added: vec![],
                changed: vec![],
            })
        );
        assert_eq!(
            classify_change(&base, &forced(2, &[("c", true)])),
            Err(ChangeError::Generation {
                previous: 0,
                found: 2
            })
        );
    }

    #[test]
    fn a_forced_configuration_commits_and_elects_under_itself_alone() {
        let mut log = ConfigLog::new(cfg(0, &[("a", true), ("b", true), ("c", true)]));
        log.observe(1, cfg(1, &[("a", true), ("b", true), ("c", true)]))
            .expect("bootstrap");
        log.committed(1);
        let c_alone = forced(2, &[("c", true)]);
        assert_eq!(
            log.observe(8, c_alone.clone()),
            Ok(Change::Forced {
                removed: vec!["a".into(), "b".into()],
                added: vec![],
                changed: vec![],
            })
        );
        assert_eq!(log.newest(), &c_alone);
        assert_eq!(election_votes_needed(log.newest(), -1), Some(1));
        // Uncommitted, it is still the only configuration a record commits under: a and
        // b are gone, a joint commit could never happen.
        assert_eq!(log.commit_configs(5), vec![&c_alone]);
        let durable = |id: &str| if id == "c" { 9 } else { 0 };
        assert_eq!(
            joint_committable_lsn(&log.commit_configs(5), -1, 7, durable),
            Some(9)
        );
        // One change at a time still holds after it: nothing is proposed before it commits.
        assert_eq!(
            log.may_propose(5),
            Err(ChangeError::ChangePending {
                pending_lsn: 8,
                commit_lsn: 5
            })
        );
        log.committed(9);
        assert_eq!(log.may_propose(9), Ok(()));
        // A second forced configuration follows at generation + 1.
        assert!(log.observe(12, forced(3, &[("c", true)])).is_ok());
        // A change proposed after it is an ordinary one: one member, not forced.
        let add_d =
            apply_change(log.newest(), &MemberChange::Add(m("d", false))).expect("add a learner");
        assert!(!add_d.forced, "a running primary's change is never forced");
        assert_eq!(add_d.generation, 4);
        assert_eq!(
            classify_change(log.newest(), &add_d),
            Ok(Change::AddLearner("d".into()))
        );
    }

    #[test]
    fn a_rewind_drops_uncommitted_configurations_only() {
        let mut log = ConfigLog::new(cfg(0, &[("a", true), ("b", true), ("c", true)]));
        log.observe(1, cfg(1, &[("a", true), ("b", true), ("c", true)]))
            .expect("bootstrap");
        log.observe(3, cfg(2, &[("a", true), ("b", true)]))
            .expect("remove c");
        log.rewind(2);
        assert_eq!(log.newest_lsn(), 1);
        log.committed(1);
        log.rewind(0);
        assert_eq!(
            log.newest_lsn(),
            1,
            "the newest committed configuration stays"
        );
        assert_eq!(
            election_votes_needed(log.newest(), -1),
            Some(2),
            "majority of 3"
        );
    }
}
