//! The durable halt: `state/halt`, present only while a replica is halted.
//!
//! A halt is data, not prose: a [`HaltReason`] (serialised kebab-case) plus the
//! lsn and epoch involved, the expected and found values, the peer and the
//! time. It is stored as a walship state file (`walship_wal::state`: header
//! with magic, version, length and crc32c, JSON body, written atomically:
//! temp file, fsync, rename, fsync of the directory), so after [`write_halt`]
//! returns the halt survives power loss.
//!
//! Only `walship-recover clear-halt` (an operator action, logged there) calls
//! [`clear_halt`].

use std::fmt;
use std::path::Path;

use walship_wal::state::{read_state_file, write_state_file, StateError};
use walship_wal::{Lsn, Storage};

/// Name of the halt state file inside `DIR/state/`.
pub const HALT_FILE: &str = "halt";

/// Why a replica halted. Each reason is a distinct situation an operator
/// handles differently; the serialised names (kebab-case) are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaltReason {
    /// A shipped record's lsn is above `last + 1` and the missing lsn is not in the frame (FM-6.2).
    Gap,
    /// A shipped record's lsn is at or below the replica's last lsn (FM-5.2).
    Duplicate,
    /// The expected lsn appears later in the same frame: records out of order (FM-5.2).
    Reorder,
    /// A shipped record fails its integrity check: crc, length bound or flags (FM-6.1).
    Checksum,
    /// The replica's log is not a prefix of the primary's (FM-8.1, FM-X.10).
    Divergence,
    /// A shipped record's epoch is below the epoch of the replica's last record (FM-X.3).
    EpochRegression,
    /// Fencing: the primary's epoch was below the highest epoch this replica had seen
    /// (FM-X.2). **No longer written** (protocol version 2): a replica meeting a stale
    /// primary is healthy, so it refuses it (`Refuse{StalePrimary}`, a session end) and
    /// does not halt. Kept so that halt files written by earlier builds still decode (and
    /// `walship-recover` still clears or rejoins them).
    StalePrimary,
    /// A completely received snapshot fails its integrity check (FM-7.1).
    SnapshotInvalid,
    /// A snapshot's boundary conflicts with the WAL history (FM-7.2).
    SnapshotBoundary,
    /// The replica's own WAL is corrupt when it opens (FM-X.6).
    LocalCorruption,
    /// A `Records` frame whose header (`first_lsn`, `count`) disagrees with the
    /// records it carries, or whose last record runs past the end of the frame.
    /// (A complete authenticated frame that cannot be parsed into the records it
    /// announces is a sender bug; spec/protocol.md §11.)
    MalformedBatch,
}

impl HaltReason {
    /// Every reason, in declaration order.
    pub const ALL: [HaltReason; 11] = [
        HaltReason::Gap,
        HaltReason::Duplicate,
        HaltReason::Reorder,
        HaltReason::Checksum,
        HaltReason::Divergence,
        HaltReason::EpochRegression,
        HaltReason::StalePrimary,
        HaltReason::SnapshotInvalid,
        HaltReason::SnapshotBoundary,
        HaltReason::LocalCorruption,
        HaltReason::MalformedBatch,
    ];

    /// The stable kebab-case name (as serialised in the halt file).
    pub fn as_str(self) -> &'static str {
        match self {
            HaltReason::Gap => "gap",
            HaltReason::Duplicate => "duplicate",
            HaltReason::Reorder => "reorder",
            HaltReason::Checksum => "checksum",
            HaltReason::Divergence => "divergence",
            HaltReason::EpochRegression => "epoch-regression",
            HaltReason::StalePrimary => "stale-primary",
            HaltReason::SnapshotInvalid => "snapshot-invalid",
            HaltReason::SnapshotBoundary => "snapshot-boundary",
            HaltReason::LocalCorruption => "local-corruption",
            HaltReason::MalformedBatch => "malformed-batch",
        }
    }
}

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content of `state/halt`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HaltRecord {
    /// Why the replica halted.
    pub reason: HaltReason,
    /// The lsn involved (the offending record's expected lsn, the first
    /// differing lsn of a divergence, the replica's last lsn for fencing).
    pub lsn: Lsn,
    /// The epoch involved (the offending record's epoch; for handshake halts
    /// the primary's announced epoch).
    pub epoch: u64,
    /// What the replica expected.
    pub expected: String,
    /// What it found.
    pub found: String,
    /// The authenticated peer whose frame caused the halt (or `local`).
    pub peer: String,
    /// When the halt was decided, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Free-form detail for the operator.
    pub detail: String,
}

impl fmt::Display for HaltRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "halted ({}) at lsn {} epoch {}: expected {}, found {} (peer {}, at {} ms)",
            self.reason,
            self.lsn,
            self.epoch,
            self.expected,
            self.found,
            self.peer,
            self.at_unix_ms
        )?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Errors reading or writing the halt file.
#[derive(Debug, thiserror::Error)]
pub enum HaltError {
    /// The state file layer failed (I/O, bad header or crc).
    #[error("halt file: {0}")]
    State(#[from] StateError),
    /// The state file is intact but its JSON body is not a halt record.
    #[error("halt file {path}: body is not a halt record: {source}")]
    Body {
        /// The halt file.
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Removing the halt file failed.
    #[error("halt file {path}: {op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads `state_dir/halt`. `Ok(None)` if the replica is not halted.
pub fn read_halt<S: Storage>(
    storage: &S,
    state_dir: &Path,
) -> Result<Option<HaltRecord>, HaltError> {
    let Some(body) = read_state_file(storage, state_dir, HALT_FILE)? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|source| HaltError::Body {
            path: state_dir.join(HALT_FILE).display().to_string(),
            source,
        })
}

/// How a replica starts, decided from its durable halt alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// No halt file: open the WAL and replicate.
    Replicate,
    /// The replica halted before: it comes back halted with this record
    /// (identical, FM-11.3), connects to nobody and appends and applies
    /// nothing (FM-10.3), until an operator clears the halt.
    Halted(HaltRecord),
}

/// The start decision of every replica (FM-10.3, FM-11.3): a halt file means
/// the replica stays halted across restarts, whatever else its disk holds.
/// The production driver (`Replica::open`) and the simulator's restarts both
/// decide through this one function, so the simulator exercises the decision
/// production runs.
pub fn start_mode<S: Storage>(storage: &S, state_dir: &Path) -> Result<StartMode, HaltError> {
    Ok(match read_halt(storage, state_dir)? {
        Some(record) => StartMode::Halted(record),
        None => StartMode::Replicate,
    })
}

/// Writes `state_dir/halt` atomically and durably: when this returns `Ok`, the
/// halt survives power loss. Callers write the halt before doing anything else.
pub fn write_halt<S: Storage>(
    storage: &S,
    state_dir: &Path,
    record: &HaltRecord,
) -> Result<(), HaltError> {
    let body = serde_json::to_vec(record).map_err(|source| HaltError::Body {
        path: state_dir.join(HALT_FILE).display().to_string(),
        source,
    })?;
    write_state_file(storage, state_dir, HALT_FILE, &body)?;
    Ok(())
}

/// Removes `state_dir/halt` durably (fsync of the directory). Returns the
/// record that was removed, `None` if there was none or it was unreadable
/// (an unreadable halt file is removed too: clearing is the operator's explicit
/// intent). Used only by the operator's `walship-recover clear-halt`.
pub fn clear_halt<S: Storage>(
    storage: &S,
    state_dir: &Path,
) -> Result<Option<HaltRecord>, HaltError> {
    let existing = read_halt(storage, state_dir).unwrap_or(None);
    let path = state_dir.join(HALT_FILE);
    let present = storage.exists(&path).map_err(|source| HaltError::Io {
        op: "exists",
        path: path.display().to_string(),
        source,
    })?;
    if present {
        storage.remove_file(&path).map_err(|source| HaltError::Io {
            op: "remove",
            path: path.display().to_string(),
            source,
        })?;
        // Without the directory fsync the removal may be undone by a power loss.
        storage
            .sync_dir(state_dir)
            .map_err(|source| HaltError::Io {
                op: "sync_dir",
                path: state_dir.display().to_string(),
                source,
            })?;
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::sim::SimStorage;

    fn record(reason: HaltReason) -> HaltRecord {
        HaltRecord {
            reason,
            lsn: 42,
            epoch: 3,
            expected: "lsn 42".into(),
            found: "lsn 44".into(),
            peer: "n1".into(),
            at_unix_ms: 1_700_000_000_000,
            detail: "lsns 42..44 are missing".into(),
        }
    }

    #[test]
    fn reasons_serialise_to_their_stable_kebab_case_names() {
        for reason in HaltReason::ALL {
            let json = serde_json::to_string(&reason).expect("serialise");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            let back: HaltReason = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, reason);
        }
        assert_eq!(HaltReason::EpochRegression.as_str(), "epoch-regression");
        assert_eq!(HaltReason::StalePrimary.to_string(), "stale-primary");
    }

    #[test]
    fn written_halt_survives_a_crash_and_reads_back_identical() {
        let s = SimStorage::new(7);
        let dir = Path::new("/node/state");
        s.create_dir_all(dir).expect("mkdir");
        s.sync_dir(Path::new("/")).expect("sync");
        s.sync_dir(Path::new("/node")).expect("sync");
        assert_eq!(read_halt(&s, dir).expect("read"), None);
        let r = record(HaltReason::Gap);
        write_halt(&s, dir, &r).expect("write");
        s.crash();
        assert_eq!(read_halt(&s, dir).expect("read"), Some(r));
    }

    #[test]
    fn fm_11_3_start_mode_stays_halted_across_a_crash_until_the_halt_is_cleared() {
        let s = SimStorage::new(9);
        let dir = Path::new("/node/state");
        s.create_dir_all(dir).expect("mkdir");
        s.sync_dir(Path::new("/")).expect("sync");
        s.sync_dir(Path::new("/node")).expect("sync");
        assert_eq!(start_mode(&s, dir).expect("start"), StartMode::Replicate);
        let r = record(HaltReason::Divergence);
        write_halt(&s, dir, &r).expect("write");
        s.crash();
        assert_eq!(
            start_mode(&s, dir).expect("start"),
            StartMode::Halted(r.clone())
        );
        assert_eq!(
            start_mode(&s, dir).expect("start"),
            StartMode::Halted(r.clone())
        );
        assert_eq!(clear_halt(&s, dir).expect("clear"), Some(r));
        s.crash();
        assert_eq!(start_mode(&s, dir).expect("start"), StartMode::Replicate);
    }

    #[test]
    fn clear_halt_removes_durably_and_returns_the_record() {
        let s = SimStorage::new(8);
        let dir = Path::new("/node/state");
        s.create_dir_all(dir).expect("mkdir");
        s.sync_dir(Path::new("/")).expect("sync");
        s.sync_dir(Path::new("/node")).expect("sync");
        let r = record(HaltReason::Checksum);
        write_halt(&s, dir, &r).expect("write");
        assert_eq!(clear_halt(&s, dir).expect("clear"), Some(r));
        s.crash();
        assert_eq!(read_halt(&s, dir).expect("read"), None);
        assert_eq!(clear_halt(&s, dir).expect("clear again"), None);
    }

    #[test]
    fn corrupted_halt_file_is_an_error_not_absence() {
        let s = SimStorage::new(9);
        let dir = Path::new("/node/state");
        s.create_dir_all(dir).expect("mkdir");
        write_halt(&s, dir, &record(HaltReason::Divergence)).expect("write");
        s.flip_bit(&dir.join(HALT_FILE), 20, 1).expect("flip");
        assert!(read_halt(&s, dir).is_err());
    }
}
