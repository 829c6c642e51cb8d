//! The JSON output of every subcommand. Field names and enum spellings are a
//! stable interface documented in `spec/recovery-tool.md`; add fields, never
//! rename or remove them without bumping [`SCHEMA_VERSION`].

use serde::{Deserialize, Serialize};
use walship_replica::halt::HaltRecord;
use walship_wal::error::CorruptionReport;
use walship_wal::state::EpochEntry;
use walship_wal::{Lsn, Position};

use crate::scan::{corruption_kind_name, EpochSpan, ScanEnd, SegmentSummary, WalScan};

/// Version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The top level of every JSON document: which command, its exit code, and its body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The subcommand (`inspect`, `verify`, `dump`, `diff`, `status`, `rewind`, `clear-halt`, `rejoin`, ...).
    pub command: String,
    /// The process exit code the command ends with.
    pub exit_code: u8,
    /// The command's own fields.
    #[serde(flatten)]
    pub body: T,
}

/// Body of the document printed when a command fails before producing its report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The failure.
    pub error: ErrorInfo,
}

/// A failure: a stable kind (the exit code's name) and a one-line message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `io`, `usage`, `corruption`, `node-running`, `refused`, ...
    pub kind: String,
    /// The same line printed on stderr.
    pub message: String,
}

/// A corruption, as found by a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    /// The segment file (full path).
    pub segment: String,
    /// Byte offset in the segment file.
    pub offset: u64,
    /// The lsn expected there, if known.
    pub lsn: Option<Lsn>,
    /// Stable kebab-case kind (`record-checksum`, `segment-missing`, `chain-break`, ...).
    pub kind: String,
    /// What the format requires there.
    pub expected: String,
    /// What is on disk.
    pub found: String,
}

impl From<&CorruptionReport> for Corruption {
    fn from(r: &CorruptionReport) -> Self {
        Corruption {
            segment: r.segment.display().to_string(),
            offset: r.offset,
            lsn: r.lsn,
            kind: corruption_kind_name(r.kind).to_string(),
            expected: r.expected.clone(),
            found: r.found.clone(),
        }
    }
}

/// How a WAL scan ended (`state` tag: `clean`, `torn-tail`, `corrupt`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum WalState {
    /// Every byte verified.
    Clean,
    /// An unsynced torn write at the end of the last segment; left in place
    /// (the node cuts it when it opens the WAL).
    TornTail {
        /// The last segment.
        segment: String,
        /// Where the torn record starts.
        offset: u64,
        /// Bytes from `offset` to the end of the file.
        bytes: u64,
        /// The lsn the torn record would have had.
        lsn: Lsn,
    },
    /// The first damage in log order.
    Corrupt {
        /// Where and what.
        corruption: Corruption,
    },
}

impl WalState {
    /// From a scan's end (`Stopped` counts as clean: the visited part verified).
    pub fn from_end(end: &ScanEnd) -> WalState {
        match end {
            ScanEnd::Clean | ScanEnd::Stopped => WalState::Clean,
            ScanEnd::TornTail {
                segment,
                offset,
                bytes,
                lsn,
            } => WalState::TornTail {
                segment: segment.display().to_string(),
                offset: *offset,
                bytes: *bytes,
                lsn: *lsn,
            },
            ScanEnd::Corrupt(r) => WalState::Corrupt {
                corruption: r.into(),
            },
        }
    }

    /// Whether the scan found corruption.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, WalState::Corrupt { .. })
    }
}

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// File name.
    pub name: String,
    /// lsn of the first record it holds (from header and name).
    pub first_lsn: Lsn,
    /// Last verified lsn in it (`null` if it holds no verified record).
    pub last_lsn: Option<Lsn>,
    /// Verified records in it.
    pub records: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Header + verified records in bytes.
    pub valid_bytes: u64,
    /// Log generation (bumped by a snapshot install's `reset_to`).
    pub generation: u64,
    /// The WAL's epoch when the segment was created.
    pub created_epoch: u64,
}

impl From<&SegmentSummary> for Segment {
    fn from(s: &SegmentSummary) -> Self {
        Segment {
            name: s.name.clone(),
            first_lsn: s.first_lsn,
            last_lsn: s.last.map(|p| p.lsn),
            records: s.records,
            bytes: s.file_bytes,
            valid_bytes: s.valid_bytes,
            generation: s.generation,
            created_epoch: s.created_epoch,
        }
    }
}

/// What a full WAL scan found: shared by `inspect` and `verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSummary {
    /// The WAL directory.
    pub wal_dir: String,
    /// Live segments in lsn order (up to the one where damage was found).
    pub segments: Vec<Segment>,
    /// First retained lsn (`null` if the log holds no record).
    pub first_lsn: Option<Lsn>,
    /// The record before the first retained one (front truncation / snapshot boundary; lsn 0 if none).
    pub base: Position,
    /// The last verified record (== `base` if none).
    pub last: Position,
    /// Verified records.
    pub records: u64,
    /// Clean, torn tail or the first corruption.
    pub state: WalState,
    /// Non-segment files in the WAL directory (left untouched).
    pub ignored_files: Vec<String>,
    /// Segments of an older generation (leftovers of a snapshot install; the node removes them on open).
    pub superseded_segments: Vec<String>,
}

impl WalSummary {
    /// From a scan of `wal_dir`.
    pub fn from_scan(wal_dir: &std::path::Path, scan: &WalScan) -> WalSummary {
        WalSummary {
            wal_dir: wal_dir.display().to_string(),
            segments: scan.segments.iter().map(Segment::from).collect(),
            first_lsn: scan.first_lsn(),
            base: scan.start,
            last: scan.last,
            records: scan.records,
            state: WalState::from_end(&scan.end),
            ignored_files: scan.ignored.clone(),
            superseded_segments: scan.superseded.clone(),
        }
    }
}

/// The recovered log ends below the persisted commit watermark: records that were
/// acknowledged are gone (FM-X.6, `spec/wal-format.md` "What the scan cannot see").
/// Corruption (exit 3), although the WAL itself may scan clean or end in a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgedLoss {
    /// Where the log ends once the node opened it: its last verified record (a torn
    /// tail is cut), or the newest snapshot's boundary if an interrupted install is
    /// completed on open.
    pub log_end: Lsn,
    /// `state/commit`.
    pub commit_lsn: Lsn,
}

impl AcknowledgedLoss {
    /// Judges a scan that found no corruption against `state/commit` (`None` if absent or
    /// unreadable: a damaged state file is reported on its own). A corrupt scan has no
    /// known end and is already corruption: `None`.
    pub fn judge(
        scan: &WalScan,
        snapshot_wal: &SnapshotWal,
        commit_lsn: Option<Lsn>,
    ) -> Option<AcknowledgedLoss> {
        if scan.corruption().is_some() {
            return None;
        }
        let mut log_end = scan.last.lsn;
        if snapshot_wal.state == "install-interrupted" {
            if let Some(b) = snapshot_wal.boundary {
                log_end = log_end.max(b.lsn);
            }
        }
        let commit_lsn = commit_lsn?;
        (log_end < commit_lsn).then_some(AcknowledgedLoss {
            log_end,
            commit_lsn,
        })
    }

    /// The one-line verdict.
    pub fn message(&self) -> String {
        format!(
            "acknowledged records lost: log ends at lsn {}, commit watermark {}",
            self.log_end, self.commit_lsn
        )
    }
}

/// `verify` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The data directory.
    pub dir: String,
    /// The WAL scan.
    pub wal: WalSummary,
    /// The state files `commit`, `epochs`, `halt` (header, crc and JSON body checked).
    pub state_files: Vec<StateFileCheck>,
    /// Entries of `DIR/snapshots/`, installed snapshots fully verified.
    pub snapshots: Vec<SnapshotInfo>,
    /// The newest installed snapshot against the WAL.
    pub snapshot_wal: SnapshotWal,
    /// Set when the log ends below `state/commit` (corruption); `null` otherwise.
    pub acknowledged_records_lost: Option<AcknowledgedLoss>,
}

/// The verdict on one state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileCheck {
    /// `commit`, `epochs` or `halt`.
    pub name: String,
    /// Whether the file exists.
    pub present: bool,
    /// Whether it is absent or verifies (header, crc32c, JSON body).
    pub ok: bool,
    /// What is wrong, if not ok.
    pub error: Option<String>,
}

/// An entry of `DIR/snapshots/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Name inside `DIR/snapshots/`.
    pub name: String,
    /// `installed` (20-digit boundary lsn), `temporary` (`tmp-*`: an interrupted
    /// install or creation, discarded by the node on open) or `unknown` (left alone).
    pub kind: String,
    /// The snapshot's boundary (installed snapshots whose header verified).
    pub boundary: Option<Position>,
    /// Length of the snapshot file.
    pub file_bytes: Option<u64>,
    /// Payload length from the header.
    pub payload_bytes: Option<u64>,
    /// `none`, `header` (header, length, trailer) or `full` (also every chunk and the payload crc).
    pub verified: String,
    /// False when an installed snapshot is damaged.
    pub ok: bool,
    /// What is wrong, naming the file.
    pub error: Option<String>,
}

/// The newest installed snapshot against the WAL (rule of `SnapshotStore::recover`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotWal {
    /// `no-snapshot`, `consistent`, `unknown` (the WAL is corrupt before the
    /// boundary), `install-interrupted` (WAL ends below the boundary: the node
    /// resets it on open) or `mismatch` (corruption).
    pub state: String,
    /// The newest installed snapshot's boundary.
    pub boundary: Option<Position>,
    /// The WAL's record at the boundary lsn (`null`: not retained or beyond the end).
    pub wal_at_boundary: Option<Position>,
    /// One line of facts.
    pub detail: String,
}

impl SnapshotWal {
    /// Whether this is corruption.
    pub fn is_mismatch(&self) -> bool {
        self.state == "mismatch"
    }
}

/// The durable watermarks of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    /// Last record on disk that verifies (a stopped node's durable lsn).
    pub durable_lsn: Lsn,
    /// `state/commit` (`null` if the file is absent).
    pub commit_lsn: Option<Lsn>,
    /// Records above the commit watermark (tentative).
    pub tentative_records: u64,
}

/// `inspect` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InspectReport {
    /// The data directory.
    pub dir: String,
    /// The WAL scan.
    pub wal: WalSummary,
    /// Runs of records per epoch found in the log.
    pub epochs_in_log: Vec<EpochSpan>,
    /// `state/epochs` (`null` if absent).
    pub epoch_history: Option<Vec<EpochEntry>>,
    /// Durable and commit watermarks.
    pub watermarks: Watermarks,
    /// Set when the log ends below `state/commit` (corruption); `null` otherwise.
    pub acknowledged_records_lost: Option<AcknowledgedLoss>,
    /// Entries of `DIR/snapshots/` (installed snapshots: header, length and trailer verified).
    pub snapshots: Vec<SnapshotInfo>,
    /// The newest installed snapshot against the WAL.
    pub snapshot_wal: SnapshotWal,
    /// Whether `state/halt` is present.
    pub halted: bool,
    /// The halt record, if halted.
    pub halt: Option<HaltRecord>,
    /// Entries in `state/audit.log`.
    pub audit_entries: u64,
}

/// One record printed by `dump`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpRecord {
    /// lsn.
    pub lsn: Lsn,
    /// Epoch of the writer.
    pub epoch: u64,
    /// The record's crc.
    pub crc: u32,
    /// crc of the previous record.
    pub prev_crc: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Segment file name.
    pub segment: String,
    /// Byte offset of the record in the segment.
    pub offset: u64,
    /// The payload as lowercase hex (only with `--payload hex`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_hex: Option<String>,
    /// Set for a control record (spec/wal-format.md, "Control records"): what it says.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub control: Option<DumpControl>,
}

/// What a control record says, as `dump` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DumpControl {
    /// The first record of a primary's epoch.
    EpochStart {
        /// The epoch it opened.
        epoch: u64,
        /// The primary's node id.
        primary: String,
    },
    /// A configuration: the cluster's members from this record on.
    Configuration {
        /// The epoch of the primary that wrote it.
        epoch: u64,
        /// Its generation.
        generation: u64,
        /// Forced by an operator without the old voters (`config_flags` bit 0).
        forced: bool,
        /// Each member: id, incarnation, voter, addresses.
        members: Vec<DumpMember>,
    },
}

/// One member of a configuration record, as `dump` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpMember {
    /// Node id.
    pub id: String,
    /// Incarnation id of its data directory.
    pub incarnation: u64,
    /// Whether it votes (else a learner).
    pub voter: bool,
    /// Peer address.
    pub addr: String,
    /// HTTP address, if any.
    pub http_addr: Option<String>,
}

impl From<&walship_wal::control::ConfigMember> for DumpMember {
    fn from(m: &walship_wal::control::ConfigMember) -> Self {
        DumpMember {
            id: m.id.clone(),
            incarnation: m.incarnation,
            voter: m.voter,
            addr: m.addr.clone(),
            http_addr: m.http_addr.clone(),
        }
    }
}

/// `dump` output (the `records` array is streamed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DumpReport {
    /// The data directory.
    pub dir: String,
    /// `--from` (`null` = from the first retained record).
    pub from_lsn: Option<Lsn>,
    /// `--to` (`null` = to the last record).
    pub to_lsn: Option<Lsn>,
    /// The records in the range, in lsn order.
    pub records: Vec<DumpRecord>,
    /// How the scan ended (a corruption stops the dump).
    pub state: WalState,
}

/// One side of a `diff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffSide {
    /// The data directory.
    pub dir: String,
    /// The record before the first retained one.
    pub base: Position,
    /// Last verified record.
    pub last: Position,
    /// How the side's scan ended.
    pub state: WalState,
}

/// The first lsn at which the logs differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The lsn.
    pub lsn: Lsn,
    /// Side A's record there (`null` if A has none).
    pub a: Option<Position>,
    /// Side B's record there (`null` if B has none).
    pub b: Option<Position>,
}

/// How two logs relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    /// Same records.
    Identical,
    /// A's log is a proper prefix of B's.
    APrefixOfB,
    /// B's log is a proper prefix of A's.
    BPrefixOfA,
    /// They differ at `first_divergence.lsn`.
    Diverged,
    /// Their retained ranges do not overlap: nothing can be compared.
    Disjoint,
}

/// `diff` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiffReport {
    /// Side A.
    pub a: DiffSide,
    /// Side B.
    pub b: DiffSide,
    /// How the logs relate.
    pub relation: Relation,
    /// The last record both logs hold identically (lsn 0 if none); by the crc
    /// chain the whole prefix up to it is identical.
    pub common_prefix: Position,
    /// The first differing lsn (`null` when identical or one is a prefix of the other, or disjoint).
    pub first_divergence: Option<Divergence>,
}

/// `status` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// The data directory.
    pub dir: String,
    /// Set when the log ends below `state/commit` (corruption); `null` otherwise.
    pub acknowledged_records_lost: Option<AcknowledgedLoss>,
    /// Whether `state/halt` is present.
    pub halted: bool,
    /// The halt record in full.
    pub halt: Option<HaltRecord>,
}

/// What a rewind cuts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutPlan {
    /// First lsn cut (`to_lsn + 1`).
    pub first_lsn: Lsn,
    /// Last lsn cut.
    pub last_lsn: Lsn,
    /// Records cut.
    pub records: u64,
    /// Bytes of records cut.
    pub bytes: u64,
    /// Runs per epoch of the records cut.
    pub epochs: Vec<EpochSpan>,
    /// Records cut at or below the commit watermark (committed data lost).
    pub committed_records: u64,
}

/// `rewind` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewindReport {
    /// The data directory.
    pub dir: String,
    /// Keep records up to here.
    pub to_lsn: Lsn,
    /// The commit watermark before the rewind.
    pub commit_lsn: Option<Lsn>,
    /// The last record before the rewind.
    pub before: Position,
    /// What is (or would be) cut; `null` if nothing is after `to_lsn`.
    pub cut: Option<CutPlan>,
    /// Whether the log was changed.
    pub performed: bool,
    /// Why nothing was changed, when `performed` is false.
    pub refused: Option<String>,
    /// The last record after the rewind.
    pub after: Option<Position>,
    /// The commit watermark after the rewind (lowered to `to_lsn` only with `--accept-data-loss`).
    pub commit_lsn_after: Option<Lsn>,
    /// The verify scan run after the rewind.
    pub verify: Option<WalState>,
    /// Path of the audit log written.
    pub audit_log: Option<String>,
}

/// One condition `clear-halt` checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable name: `log-verifies`, `tail-below-halt-lsn`, ...
    pub name: String,
    /// Whether it holds.
    pub passed: bool,
    /// Facts behind the verdict.
    pub detail: String,
}

/// `clear-halt` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClearHaltReport {
    /// The data directory.
    pub dir: String,
    /// The halt record found (`null`: the node was not halted, nothing done).
    pub halt: Option<HaltRecord>,
    /// The conditions checked for this halt reason.
    pub checks: Vec<Check>,
    /// Whether the halt file was removed.
    pub cleared: bool,
    /// Path of the audit log written.
    pub audit_log: Option<String>,
}

/// `snapshot verify` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotVerifyReport {
    /// The data directory.
    pub dir: String,
    /// Entries of `DIR/snapshots/`, installed snapshots fully verified.
    pub snapshots: Vec<SnapshotInfo>,
    /// The newest installed snapshot against the WAL.
    pub snapshot_wal: SnapshotWal,
    /// How the WAL scan (needed for the boundary record) ended.
    pub wal_state: WalState,
}

/// `snapshot create` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotCreateReport {
    /// The data directory.
    pub dir: String,
    /// The state file read.
    pub state_file: String,
    /// The boundary: the WAL's record at `--lsn`.
    pub boundary: Position,
    /// The commit watermark (the boundary is at or below it).
    pub commit_lsn: Option<Lsn>,
    /// The installed snapshot, fully verified after creation.
    pub snapshot: SnapshotInfo,
    /// Temporary snapshot directories discarded when the store was opened.
    pub discarded_tmp: Vec<String>,
    /// Older installed snapshots removed (only the newest counts).
    pub removed_older: Vec<String>,
    /// Path of the audit log written.
    pub audit_log: Option<String>,
}

/// `rejoin` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RejoinReport {
    /// The rejoining node's data directory (locked).
    pub dir: String,
    /// `--from`: the primary's data directory (or a copy), read without its lock; or,
    /// for an address, `http://ip:port` (as `primary_addr`).
    pub primary_dir: String,
    /// `--from` as an address: the primary's HTTP endpoint `http://ip:port` whose
    /// `/log/ids` were compared (`null` for a directory).
    pub primary_addr: Option<String>,
    /// The comparison, `a` = `dir`, `b` = `primary_dir`. `b.last` is the last
    /// record read of the primary's log (see `primary_read_complete`).
    pub diff: DiffReport,
    /// Whether the primary's log was read to its end; false when the read
    /// stopped once the comparison was decided (the primary holds more).
    pub primary_read_complete: bool,
    /// The cut: keep records up to and including this lsn (`null`: refused before deciding).
    pub to_lsn: Option<Lsn>,
    /// The rewind to `to_lsn` (its plan in `rewind.cut`; `null` before it was planned).
    pub rewind: Option<RewindReport>,
    /// The halt record found in `dir` (`null`: not halted).
    pub halt: Option<HaltRecord>,
    /// The clear-halt conditions checked after the rewind.
    pub halt_checks: Vec<Check>,
    /// Whether the halt file was removed.
    pub halt_cleared: bool,
    /// The full verify of `dir` run last (`null` if nothing was changed).
    pub verify: Option<VerifyReport>,
    /// Why nothing was changed, when refused.
    pub refused: Option<String>,
    /// Path of the audit log written (`null` if nothing was changed).
    pub audit_log: Option<String>,
}

/// A configuration as `promote` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// Where its record is (`null`: the base configuration of node.toml, or not written yet).
    pub lsn: Option<Lsn>,
    /// The epoch of the record (`null` as `lsn`).
    pub epoch: Option<u64>,
    /// Its generation (0: the base configuration).
    pub generation: u64,
    /// Whether it is (or will be written as) a forced configuration.
    pub forced: bool,
    /// Its members (incarnation 0 in the base configuration: node.toml records none).
    pub members: Vec<DumpMember>,
}

/// The vote file as `promote` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteView {
    /// The highest epoch the node has seen.
    pub epoch: u64,
    /// Its vote in that epoch.
    pub voted_for: Option<String>,
}

/// What `promote` says may be lost, as facts (the text lines are in `may_lose`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteLoss {
    /// This node's durable lsn: its last verified record (a torn tail after it is cut).
    pub durable_lsn: Lsn,
    /// The epoch of that record.
    pub durable_epoch: u64,
    /// The commit watermark this node knows (`state/commit`; `null`: absent).
    pub commit_lsn: Option<Lsn>,
    /// This node's acknowledged mark (`state/acked`, 0 when absent).
    pub acked_lsn: Lsn,
    /// Committed records this node no longer holds (`state/commit` above its log): lost for sure.
    pub committed_missing: u64,
    /// Records above the commit watermark known here that become committed with the new epoch
    /// (the old primary may never have acknowledged them).
    pub uncommitted_kept: u64,
    /// Voters of the old configuration that leave it: whatever they acknowledged above
    /// `durable_lsn` is lost.
    pub removed_voters: Vec<String>,
    /// Every member (voter or learner) that leaves the configuration.
    pub removed_members: Vec<String>,
}

/// `promote` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PromoteReport {
    /// The data directory.
    pub dir: String,
    /// The node the directory belongs to (`state/identity`).
    pub node_id: String,
    /// Its incarnation (`null`: no `state/identity` yet; one is written at promote, from `--config`).
    pub incarnation: Option<u64>,
    /// The last verified record before.
    pub before: Position,
    /// How the scan of the log ended (a torn tail is cut when the WAL is opened to append).
    pub wal_state: WalState,
    /// `state/vote` before.
    pub vote: VoteView,
    /// The newest configuration in the log (or the base configuration of `--config`).
    pub old_configuration: ConfigView,
    /// The forced configuration (`lsn` set once written).
    pub new_configuration: ConfigView,
    /// The new epoch: one above the vote's, the log head's and the epoch history's.
    pub epoch: u64,
    /// What may be lost, as facts.
    pub loss: PromoteLoss,
    /// What may be lost, one sentence each (printed before anything is written).
    pub may_lose: Vec<String>,
    /// Whether anything was written.
    pub performed: bool,
    /// Why nothing was changed, when `performed` is false.
    pub refused: Option<String>,
    /// The epoch-start record written (`null` if nothing was written).
    pub epoch_start: Option<Position>,
    /// The last record after (the forced configuration).
    pub after: Option<Position>,
    /// `state/commit` after (lowered to the old log end only when it was above it).
    pub commit_lsn_after: Option<Lsn>,
    /// `state/acked` after: the forced configuration's lsn.
    pub acked_lsn_after: Option<Lsn>,
    /// The full verify run last (`null` if nothing was changed).
    pub verify: Option<VerifyReport>,
    /// Path of the audit log written (`null` if nothing was changed).
    pub audit_log: Option<String>,
}
