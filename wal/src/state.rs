//! Small durable state of a node: checksummed, atomically replaced state
//! files, the node directory layout, the epoch history and the directory lock.
//!
//! Specified byte by byte in `spec/state-files.md`.
//!
//! # State file format (version 1)
//!
//! ```text
//! offset size field
//! 0      4    magic     "WSST"
//! 4      2    version   u16 LE = 1
//! 6      2    reserved  u16 LE = 0
//! 8      4    body_len  u32 LE, <= MAX_STATE_BODY_BYTES (1 MiB)
//! 12     4    crc       u32 LE, crc32c(body)
//! 16     ..   body      body_len bytes (JSON for every walship state file)
//! ```
//!
//! A state file is replaced atomically ([`write_state_file`]): a reader, or a
//! node restarting after a crash at any point, sees either the complete old
//! file or the complete new one. Any damage (a flipped bit anywhere, a
//! truncation, a wrong length) is detected by [`read_state_file`] and
//! reported as a [`StateError`] naming the file; nothing is ever guessed.
//!
//! # Node directory
//!
//! ```text
//! DIR/LOCK             DirLock (flock)
//! DIR/wal/             WAL segments
//! DIR/state/commit     {"commit_lsn":N}
//! DIR/state/epochs     {"entries":[{"epoch":E,"start_lsn":L},...]}
//! DIR/state/halt       halt record (walship-replica)
//! DIR/state/audit.log  operator audit log (walship-recovery)
//! DIR/snapshots/       snapshots (walship-snapshot)
//! ```
//!
//! ```
//! use std::path::Path;
//! use walship_wal::sim::SimStorage;
//! use walship_wal::state::{EpochHistory, NodeDir};
//!
//! let dir = NodeDir::open(SimStorage::new(1), Path::new("/node")).expect("open");
//! assert_eq!(dir.commit_lsn().expect("read"), 0);
//! dir.set_commit_lsn(42).expect("write");
//! let mut epochs = EpochHistory::new();
//! epochs.push(1, 1).expect("first epoch");
//! epochs.push(2, 43).expect("later epoch");
//! dir.set_epochs(&epochs).expect("write");
//! assert_eq!(dir.epochs().expect("read").epoch_at(42), Some(1));
//! assert_eq!(dir.commit_lsn().expect("read"), 42);
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::record::Lsn;
use crate::storage::{Storage, StorageFile};

/// Magic bytes at offset 0 of every state file.
pub const STATE_MAGIC: [u8; 4] = *b"WSST";
/// The state file format version this code writes and reads.
pub const STATE_VERSION: u16 = 1;
/// Length of the state file header.
pub const STATE_HEADER_LEN: usize = 16;
/// Largest body a state file may carry (1 MiB), checked before allocating.
pub const MAX_STATE_BODY_BYTES: u32 = 1 << 20;

/// Offset of the magic in the header.
pub const STATE_MAGIC_OFFSET: usize = 0;
/// Offset of the version (u16 LE) in the header.
pub const STATE_VERSION_OFFSET: usize = 4;
/// Offset of the reserved field (u16 LE, must be 0) in the header.
pub const STATE_RESERVED_OFFSET: usize = 6;
/// Offset of body_len (u32 LE) in the header.
pub const STATE_BODY_LEN_OFFSET: usize = 8;
/// Offset of crc32c(body) (u32 LE) in the header.
pub const STATE_CRC_OFFSET: usize = 12;

/// Name of the lock file in a node directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the WAL directory in a node directory.
pub const WAL_DIR: &str = "wal";
/// Name of the state directory in a node directory.
pub const STATE_DIR: &str = "state";
/// Name of the snapshot directory in a node directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// State file holding the commit watermark.
pub const COMMIT_FILE: &str = "commit";
/// State file holding the epoch history.
pub const EPOCHS_FILE: &str = "epochs";
/// State file holding the acknowledged mark (written by walship-node's driver; spec/election.md §5.1).
pub const ACKED_FILE: &str = "acked";
/// State file holding the halt record (written by walship-replica).
pub const HALT_FILE: &str = "halt";
/// Operator audit log (plain JSON lines, written by walship-recovery).
pub const AUDIT_LOG_FILE: &str = "audit.log";
/// Suffix of the temporary file a state file is written to before the rename.
pub const TMP_SUFFIX: &str = ".tmp";

/// Errors of state files, the node directory and its lock. Every variant
/// names the file involved.
#[derive(Debug, Error)]
pub enum StateError {
    /// An I/O operation failed. A failed `sync_data`/`sync_dir` is fatal for
    /// the caller: never retry it.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`open`, `write`, `sync_data`, `rename`, `sync_dir`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A body longer than [`MAX_STATE_BODY_BYTES`] (when writing, or as
    /// claimed by a header when reading).
    #[error("state file {}: body of {len} bytes exceeds the limit of {max} bytes", path.display())]
    BodyTooLarge {
        /// The state file.
        path: PathBuf,
        /// The body length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The file is shorter than the header.
    #[error("state file {}: {len} bytes, shorter than the {STATE_HEADER_LEN}-byte header", path.display())]
    Truncated {
        /// The state file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The first four bytes are not `WSST`.
    #[error("state file {}: bad magic {found:02x?}, expected {STATE_MAGIC:02x?} (\"WSST\")", path.display())]
    BadMagic {
        /// The state file.
        path: PathBuf,
        /// The bytes found.
        found: [u8; 4],
    },
    /// A format version this code does not read.
    #[error("state file {}: unsupported version {found}, this build reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The state file.
        path: PathBuf,
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The reserved header field is not 0.
    #[error("state file {}: reserved header field is {found:#06x}, expected 0", path.display())]
    BadReserved {
        /// The state file.
        path: PathBuf,
        /// The value found.
        found: u16,
    },
    /// The file length does not match the header's body_len.
    #[error("state file {}: header says {body_len} body bytes ({} in all) but the file has {file_len} bytes", path.display(), *body_len as u64 + STATE_HEADER_LEN as u64)]
    LengthMismatch {
        /// The state file.
        path: PathBuf,
        /// body_len from the header.
        body_len: u32,
        /// The file's length.
        file_len: u64,
    },
    /// crc32c(body) differs from the header's crc.
    #[error("state file {}: checksum mismatch: stored crc {stored:#010x}, computed {computed:#010x}", path.display())]
    Checksum {
        /// The state file.
        path: PathBuf,
        /// crc from the header.
        stored: u32,
        /// crc32c of the body read.
        computed: u32,
    },
    /// The body is not the JSON this file must hold.
    #[error("state file {}: invalid JSON body: {source}", path.display())]
    Json {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// An epoch history that breaks its ordering rules (read from, or about
    /// to be written to, `path`).
    #[error("state file {}: {source}", path.display())]
    InvalidEpochs {
        /// The epochs file.
        path: PathBuf,
        /// The broken rule.
        #[source]
        source: EpochHistoryError,
    },
    /// Another process (or another [`DirLock`] in this process) holds the
    /// node directory's lock.
    #[error("node directory is locked by another process or handle: {}", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes a state file (header + body). `path` only names the file in the error.
pub fn encode_state_file(path: &Path, body: &[u8]) -> Result<Vec<u8>, StateError> {
    let body_len = match u32::try_from(body.len()) {
        Ok(n) if n <= MAX_STATE_BODY_BYTES => n,
        _ => {
            return Err(StateError::BodyTooLarge {
                path: path.to_path_buf(),
                len: body.len() as u64,
                max: MAX_STATE_BODY_BYTES,
            })
        }
    };
    let mut out = Vec::with_capacity(STATE_HEADER_LEN + body.len());
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    debug_assert_eq!(out.len(), STATE_HEADER_LEN, "header layout");
    out.extend_from_slice(body);
    Ok(out)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Verifies a whole state file and returns its body. Checks, in order: the
/// length covers the header, magic, version, reserved, body_len against
/// [`MAX_STATE_BODY_BYTES`], the file length, the crc. `path` only names
/// the file in the error.
pub fn decode_state_file<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], StateError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < STATE_HEADER_LEN {
        return Err(StateError::Truncated {
            path: path_buf(),
            len: bytes.len() as u64,
        });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[STATE_MAGIC_OFFSET..STATE_MAGIC_OFFSET + 4]);
    if magic != STATE_MAGIC {
        return Err(StateError::BadMagic {
            path: path_buf(),
            found: magic,
        });
    }
    let version = le_u16(bytes, STATE_VERSION_OFFSET);
    if version != STATE_VERSION {
        return Err(StateError::UnsupportedVersion {
            path: path_buf(),
            found: version,
            supported: STATE_VERSION,
        });
    }
    let reserved = le_u16(bytes, STATE_RESERVED_OFFSET);
    if reserved != 0 {
        return Err(StateError::BadReserved {
            path: path_buf(),
            found: reserved,
        });
    }
    let body_len = le_u32(bytes, STATE_BODY_LEN_OFFSET);
    if body_len > MAX_STATE_BODY_BYTES {
        return Err(StateError::BodyTooLarge {
            path: path_buf(),
            len: u64::from(body_len),
            max: MAX_STATE_BODY_BYTES,
        });
    }
    if bytes.len() as u64 != STATE_HEADER_LEN as u64 + u64::from(body_len) {
        return Err(StateError::LengthMismatch {
            path: path_buf(),
            body_len,
            file_len: bytes.len() as u64,
        });
    }
    let body = &bytes[STATE_HEADER_LEN..];
    let stored = le_u32(bytes, STATE_CRC_OFFSET);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(StateError::Checksum {
            path: path_buf(),
            stored,
            computed,
        });
    }
    Ok(body)
}

fn check_name(name: &str) {
    assert!(
        !name.is_empty()
            && !name.contains('/')
            && name != "."
            && name != ".."
            && !name.ends_with(TMP_SUFFIX),
        "state file name {name:?} must be a plain file name not ending in {TMP_SUFFIX}"
    );
}

/// Atomically replaces the state file `dir/name` with `body`: after it
/// returns Ok the new contents survive power loss; if it fails or the node
/// crashes at any point, `dir/name` holds either the old or the new complete
/// file (a leftover `name.tmp` is harmless and overwritten next time).
///
/// Any error is fatal for the caller (a failed sync must never be retried).
/// Panics if `name` is not a plain file name (a caller bug).
pub fn write_state_file<S: Storage>(
    s: &S,
    dir: &Path,
    name: &str,
    body: &[u8],
) -> Result<(), StateError> {
    check_name(name);
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let bytes = encode_state_file(&path, body)?;
    let _span =
        tracing::debug_span!("write_state_file", path = %path.display(), body_len = body.len())
            .entered();

    // 1. Write the whole new file under a temporary name, never in place: a
    //    crash in the middle of an in-place write would destroy the old copy.
    let f = s.open(&tmp, true).map_err(io_err("open", &tmp))?;
    // A leftover tmp from an earlier crash may be longer than the new file.
    f.set_len(0).map_err(io_err("set_len", &tmp))?;
    f.write_at(0, &bytes).map_err(io_err("write", &tmp))?;
    // 2. Make its bytes and length durable BEFORE the rename publishes them:
    //    otherwise the rename could reach the disk first and a crash would
    //    leave `name` pointing at an empty or partial file.
    f.sync_data().map_err(io_err("sync_data", &tmp))?;
    drop(f);
    // 3. Atomic replace: every reader sees the old or the new complete file.
    s.rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    // 4. Make the rename itself durable: until the directory is synced, a
    //    crash may bring back the old file (and the tmp) under the old names.
    s.sync_dir(dir).map_err(io_err("sync_dir", dir))?;
    Ok(())
}

/// Reads and verifies the state file `dir/name`. `Ok(None)` if it does not
/// exist; any damage is an error naming the file.
pub fn read_state_file<S: Storage>(
    s: &S,
    dir: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>, StateError> {
    check_name(name);
    let path = dir.join(name);
    // A read-only view: state files are never modified in place (always
    // replaced by rename), so a mapping cannot change under us, and no
    // memory is allocated for the body until the header checked body_len.
    let mapping = match s.map(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("map", &path)(e)),
    };
    let body = decode_state_file(&path, &mapping)?;
    Ok(Some(body.to_vec()))
}

/// [`read_state_file`] and parse the body as JSON. `Ok(None)` if absent.
pub fn read_state_json<S: Storage, T: DeserializeOwned>(
    s: &S,
    dir: &Path,
    name: &str,
) -> Result<Option<T>, StateError> {
    let Some(body) = read_state_file(s, dir, name)? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|source| StateError::Json {
            path: dir.join(name),
            source,
        })
}

/// Serialise `value` as JSON and [`write_state_file`] it.
pub fn write_state_json<S: Storage, T: Serialize>(
    s: &S,
    dir: &Path,
    name: &str,
    value: &T,
) -> Result<(), StateError> {
    let body = serde_json::to_vec(value).map_err(|source| StateError::Json {
        path: dir.join(name),
        source,
    })?;
    write_state_file(s, dir, name, &body)
}

/// One epoch of the history: `epoch` wrote its first record at `start_lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EpochEntry {
    /// The epoch (term) of a primary.
    pub epoch: u64,
    /// The first lsn written in this epoch.
    pub start_lsn: Lsn,
}

/// A broken ordering rule of an [`EpochHistory`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EpochHistoryError {
    /// Epochs must strictly increase.
    #[error("epoch history entry {index}: epoch {epoch} does not increase past the previous epoch {prev_epoch}")]
    EpochNotIncreasing {
        /// Index of the offending entry.
        index: usize,
        /// Epoch of the entry before it.
        prev_epoch: u64,
        /// Its epoch.
        epoch: u64,
    },
    /// start_lsns must never decrease.
    #[error("epoch history entry {index}: epoch {epoch} starts at lsn {start_lsn}, below the previous epoch's start lsn {prev_start_lsn}")]
    StartLsnRegression {
        /// Index of the offending entry.
        index: usize,
        /// Its epoch.
        epoch: u64,
        /// start_lsn of the entry before it.
        prev_start_lsn: Lsn,
        /// Its start_lsn.
        start_lsn: Lsn,
    },
}

/// Which epoch wrote which lsns: entries in order, epochs strictly
/// increasing, start_lsns non-decreasing (an epoch that wrote nothing has the
/// same start_lsn as its successor). Record `lsn` belongs to the last entry
/// whose `start_lsn <= lsn`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EpochHistory {
    /// The entries, oldest first.
    pub entries: Vec<EpochEntry>,
}

impl EpochHistory {
    /// The empty history (a node that has never seen an epoch).
    pub fn new() -> EpochHistory {
        EpochHistory::default()
    }

    /// A validated history.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<EpochHistory, EpochHistoryError> {
        let h = EpochHistory { entries };
        h.validate()?;
        Ok(h)
    }

    /// Checks the ordering rules (epochs strictly increase, start_lsns never decrease).
    pub fn validate(&self) -> Result<(), EpochHistoryError> {
        for (index, pair) in self.entries.windows(2).enumerate() {
            let (prev, e) = (pair[0], pair[1]);
            if e.epoch <= prev.epoch {
                return Err(EpochHistoryError::EpochNotIncreasing {
                    index: index + 1,
                    prev_epoch: prev.epoch,
                    epoch: e.epoch,
                });
            }
            if e.start_lsn < prev.start_lsn {
                return Err(EpochHistoryError::StartLsnRegression {
                    index: index + 1,
                    epoch: e.epoch,
                    prev_start_lsn: prev.start_lsn,
                    start_lsn: e.start_lsn,
                });
            }
        }
        Ok(())
    }

    /// Appends `(epoch, start_lsn)` if it keeps the history valid.
    pub fn push(&mut self, epoch: u64, start_lsn: Lsn) -> Result<(), EpochHistoryError> {
        let entry = EpochEntry { epoch, start_lsn };
        if let Some(&prev) = self.entries.last() {
            let index = self.entries.len();
            if epoch <= prev.epoch {
                return Err(EpochHistoryError::EpochNotIncreasing {
                    index,
                    prev_epoch: prev.epoch,
                    epoch,
                });
            }
            if start_lsn < prev.start_lsn {
                return Err(EpochHistoryError::StartLsnRegression {
                    index,
                    epoch,
                    prev_start_lsn: prev.start_lsn,
                    start_lsn,
                });
            }
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The epoch that wrote `lsn`: the last entry with `start_lsn <= lsn`.
    /// `None` if `lsn` is before the first entry (or the history is empty).
    /// Meaningful only for a valid history.
    pub fn epoch_at(&self, lsn: Lsn) -> Option<u64> {
        let idx = self.entries.partition_point(|e| e.start_lsn <= lsn);
        idx.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// The newest epoch, 0 for the empty history (epoch 0 = "no epoch yet",
    /// the epoch of `Position::ZERO`).
    pub fn last_epoch(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.epoch)
    }

    /// The newest entry.
    pub fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The smallest lsn to which the two histories assign different epochs
    /// (one of them possibly none), or `None` if they agree on every lsn.
    /// Both must be valid.
    pub fn first_disagreement(&self, other: &EpochHistory) -> Option<Lsn> {
        // Both are step functions of lsn that change only at start_lsns, so
        // comparing them at every start_lsn of either, in order, suffices.
        let mut points: Vec<Lsn> = self
            .entries
            .iter()
            .chain(&other.entries)
            .map(|e| e.start_lsn)
            .collect();
        points.sort_unstable();
        points.dedup();
        points
            .into_iter()
            .find(|&lsn| self.epoch_at(lsn) != other.epoch_at(lsn))
    }

    /// For the replication handshake: whether a log holding records
    /// `1..=through_lsn` written under this history (the replica's) agrees,
    /// epoch for epoch, with `other` (the primary's) on every one of those
    /// lsns. Necessary, not sufficient, for the log to be a prefix of the
    /// other log: the record identity (crc) at `through_lsn` must match too.
    /// A node that holds records must have a history covering them: the
    /// empty history is compatible only with `through_lsn` below the other's
    /// first start_lsn.
    pub fn is_compatible_prefix(&self, other: &EpochHistory, through_lsn: Lsn) -> bool {
        match self.first_disagreement(other) {
            None => true,
            Some(lsn) => lsn > through_lsn,
        }
    }
}

/// Body of `state/commit` (JSON inside the state-file envelope, spec/state-files.md): the
/// commit watermark a node persisted. The one definition every crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBody {
    /// The quorum-committed lsn.
    pub commit_lsn: Lsn,
}

/// Body of `state/acked` (JSON inside the state-file envelope, spec/election.md §5.1): the
/// highest lsn a node acknowledged (as a replica, in a receipt; as a primary, as committed),
/// persisted at most once per heartbeat interval. A restarting node neither votes nor leads
/// while its log ends below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckedBody {
    /// The acknowledged mark.
    pub acked_lsn: Lsn,
}

/// `state_dir/acked`, 0 if it was never written. Damage is an error naming the file.
pub fn read_acked_lsn<S: Storage>(s: &S, state_dir: &Path) -> Result<Lsn, StateError> {
    let body: Option<AckedBody> = read_state_json(s, state_dir, ACKED_FILE)?;
    Ok(body.map_or(0, |b| b.acked_lsn))
}

/// Durably replaces `state_dir/acked` (write `acked.tmp`, fsync, rename, fsync the
/// directory: [`write_state_file`]). Any error is fatal for the caller (a failed sync is
/// never retried). Does not check monotonicity: the caller owns the mark.
pub fn write_acked_lsn<S: Storage>(
    s: &S,
    state_dir: &Path,
    acked_lsn: Lsn,
) -> Result<(), StateError> {
    tracing::debug!(acked_lsn, dir = %state_dir.display(), "write_acked_lsn");
    write_state_json(s, state_dir, ACKED_FILE, &AckedBody { acked_lsn })
}

/// A node's data directory (see the module docs for the layout), with typed
/// access to the state files this crate owns.
#[derive(Clone, Debug)]
pub struct NodeDir<S: Storage> {
    storage: S,
    root: PathBuf,
    wal_dir: PathBuf,
    state_dir: PathBuf,
    snapshot_dir: PathBuf,
}

impl<S: Storage> NodeDir<S> {
    /// Opens the node directory at `root`, creating `root` and its `wal/`,
    /// `state/` and `snapshots/` sub-directories if missing, and making those
    /// entries durable. The parent of `root` must exist durably already if
    /// `root` is new (only `root`'s own entry in it is synced).
    pub fn open(storage: S, root: &Path) -> Result<NodeDir<S>, StateError> {
        let dir = NodeDir {
            root: root.to_path_buf(),
            wal_dir: root.join(WAL_DIR),
            state_dir: root.join(STATE_DIR),
            snapshot_dir: root.join(SNAPSHOT_DIR),
            storage,
        };
        let _span = tracing::debug_span!("node_dir_open", root = %root.display()).entered();
        let root_existed = dir.storage.exists(root).map_err(io_err("exists", root))?;
        for sub in [&dir.wal_dir, &dir.state_dir, &dir.snapshot_dir] {
            dir.storage
                .create_dir_all(sub)
                .map_err(io_err("create_dir_all", sub))?;
        }
        // New directory entries survive power loss only once their parent is
        // synced: the three sub-directories live in root, and root (if we
        // just created it) lives in its parent.
        dir.storage
            .sync_dir(root)
            .map_err(io_err("sync_dir", root))?;
        if !root_existed {
            let parent = match root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            dir.storage
                .sync_dir(parent)
                .map_err(io_err("sync_dir", parent))?;
        }
        Ok(dir)
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// `DIR`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/wal`.
    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// `DIR/state`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `DIR/snapshots`.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    /// The durable commit watermark, 0 if none was ever written.
    pub fn commit_lsn(&self) -> Result<Lsn, StateError> {
        let body: Option<CommitBody> =
            read_state_json(&self.storage, &self.state_dir, COMMIT_FILE)?;
        Ok(body.map_or(0, |b| b.commit_lsn))
    }

    /// Durably replaces the commit watermark. Does not check monotonicity:
    /// the caller owns the watermark and must never move it backwards.
    pub fn set_commit_lsn(&self, commit_lsn: Lsn) -> Result<(), StateError> {
        tracing::debug!(commit_lsn, root = %self.root.display(), "set_commit_lsn");
        write_state_json(
            &self.storage,
            &self.state_dir,
            COMMIT_FILE,
            &CommitBody { commit_lsn },
        )
    }

    /// The durable epoch history (validated), empty if none was ever written.
    pub fn epochs(&self) -> Result<EpochHistory, StateError> {
        let h: Option<EpochHistory> = read_state_json(&self.storage, &self.state_dir, EPOCHS_FILE)?;
        let h = h.unwrap_or_default();
        h.validate().map_err(|source| StateError::InvalidEpochs {
            path: self.state_dir.join(EPOCHS_FILE),
            source,
        })?;
        Ok(h)
    }

    /// Durably replaces the epoch history, after validating it.
    pub fn set_epochs(&self, epochs: &EpochHistory) -> Result<(), StateError> {
        epochs
            .validate()
            .map_err(|source| StateError::InvalidEpochs {
                path: self.state_dir.join(EPOCHS_FILE),
                source,
            })?;
        tracing::debug!(epoch = epochs.last_epoch(), entries = epochs.entries.len(), root = %self.root.display(), "set_epochs");
        write_state_json(&self.storage, &self.state_dir, EPOCHS_FILE, epochs)
    }
}

/// Exclusive lock on a node directory: `flock(LOCK_EX | LOCK_NB)` on
/// `DIR/LOCK`, held by a running node and by `walship-recover`. Works on the
/// real file system only (it is process-level exclusion, not storage). A
/// second acquire, from this process or another, fails with
/// [`StateError::Locked`]. Released when dropped (closing the descriptor
/// releases the flock), and by the kernel if the process dies.
#[derive(Debug)]
pub struct DirLock {
    /// Held only for its flock: closing the descriptor releases the lock.
    _file: File,
    path: PathBuf,
}

/// Bound on retries of `flock` interrupted by a signal.
const FLOCK_EINTR_RETRIES: usize = 16;

impl DirLock {
    /// Takes the lock on `root` (which must exist). The holder's pid is
    /// written into the lock file for operators; the lock is the flock, not
    /// the file's contents or existence.
    pub fn acquire(root: &Path) -> Result<DirLock, StateError> {
        let path = root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut attempts = 0;
        loop {
            // SAFETY: flock takes a file descriptor and flags and touches no
            // memory of ours; `file` owns the descriptor and outlives the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Err(StateError::Locked { path }),
                Some(libc::EINTR) if attempts < FLOCK_EINTR_RETRIES => attempts += 1,
                _ => return Err(io_err("flock", &path)(err)),
            }
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0).map_err(io_err("set_len", &path))?;
        file.write_all_at(pid.as_bytes(), 0)
            .map_err(io_err("write", &path))?;
        tracing::debug!(path = %path.display(), "node directory locked");
        Ok(DirLock { _file: file, path })
    }

    /// The lock file (`DIR/LOCK`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(u64, Lsn)]) -> EpochHistory {
        EpochHistory {
            entries: entries
                .iter()
                .map(|&(epoch, start_lsn)| EpochEntry { epoch, start_lsn })
                .collect(),
        }
    }

    #[test]
    fn header_constants_match_the_spec_table() {
        assert_eq!(STATE_MAGIC_OFFSET + 4, STATE_VERSION_OFFSET);
        assert_eq!(STATE_VERSION_OFFSET + 2, STATE_RESERVED_OFFSET);
        assert_eq!(STATE_RESERVED_OFFSET + 2, STATE_BODY_LEN_OFFSET);
        assert_eq!(STATE_BODY_LEN_OFFSET + 4, STATE_CRC_OFFSET);
        assert_eq!(STATE_CRC_OFFSET + 4, STATE_HEADER_LEN);
    }

    #[test]
    fn encoded_header_bytes_are_exactly_as_specified() -> Result<(), StateError> {
        let bytes = encode_state_file(Path::new("x"), b"{}")?;
        let mut want = b"WSST".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        want.extend_from_slice(&crc32c::crc32c(b"{}").to_le_bytes());
        want.extend_from_slice(b"{}");
        assert_eq!(bytes, want);
        Ok(())
    }

    #[test]
    fn oversized_body_is_refused_on_write_and_on_read_before_allocating() {
        let err = encode_state_file(
            Path::new("x"),
            &vec![0u8; MAX_STATE_BODY_BYTES as usize + 1],
        )
        .expect_err("too large");
        assert!(
            matches!(err, StateError::BodyTooLarge { len, .. } if len == u64::from(MAX_STATE_BODY_BYTES) + 1)
        );
        let mut header = b"WSST\x01\x00\x00\x00".to_vec();
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        let err = decode_state_file(Path::new("x"), &header).expect_err("too large");
        assert!(matches!(err, StateError::BodyTooLarge { len, .. } if len == u64::from(u32::MAX)));
    }

    #[test]
    fn epoch_at_picks_last_entry_starting_at_or_before_lsn() {
        let hist = h(&[(1, 1), (2, 10), (3, 10), (5, 20)]);
        assert_eq!(hist.epoch_at(0), None);
        assert_eq!(hist.epoch_at(1), Some(1));
        assert_eq!(hist.epoch_at(9), Some(1));
        assert_eq!(hist.epoch_at(10), Some(3));
        assert_eq!(hist.epoch_at(19), Some(3));
        assert_eq!(hist.epoch_at(u64::MAX), Some(5));
        assert_eq!(hist.last_epoch(), 5);
        assert_eq!(EpochHistory::new().last_epoch(), 0);
        assert_eq!(EpochHistory::new().epoch_at(5), None);
    }

    #[test]
    fn validation_names_the_broken_rule_and_entry() {
        assert_eq!(
            h(&[(1, 1), (1, 5)]).validate(),
            Err(EpochHistoryError::EpochNotIncreasing {
                index: 1,
                prev_epoch: 1,
                epoch: 1
            })
        );
        assert_eq!(
            h(&[(1, 1), (2, 5), (3, 4)]).validate(),
            Err(EpochHistoryError::StartLsnRegression {
                index: 2,
                epoch: 3,
                prev_start_lsn: 5,
                start_lsn: 4
            })
        );
        let mut hist = h(&[(2, 5)]);
        assert_eq!(
            hist.push(1, 6),
            Err(EpochHistoryError::EpochNotIncreasing {
                index: 1,
                prev_epoch: 2,
                epoch: 1
            })
        );
        assert!(hist.push(3, 5).is_ok());
        assert_eq!(hist, h(&[(2, 5), (3, 5)]));
    }

    #[test]
    fn replica_behind_a_failover_is_compatible_only_below_the_new_epoch_start() {
        let primary = h(&[(1, 1), (2, 13)]);
        let replica = h(&[(1, 1)]);
        assert_eq!(replica.first_disagreement(&primary), Some(13));
        assert!(replica.is_compatible_prefix(&primary, 12));
        // The replica holds lsn 13 from epoch 1: the primary's 13 is epoch 2.
        assert!(!replica.is_compatible_prefix(&primary, 13));
    }

    #[test]
    fn identical_histories_agree_everywhere_and_conflicting_ones_at_first_split() {
        let a = h(&[(1, 1), (3, 7)]);
        assert_eq!(a.first_disagreement(&a.clone()), None);
        assert!(a.is_compatible_prefix(&a, u64::MAX));
        let b = h(&[(1, 1), (2, 5), (3, 7)]);
        assert_eq!(a.first_disagreement(&b), Some(5));
        assert!(a.is_compatible_prefix(&b, 4));
        assert!(!a.is_compatible_prefix(&b, 5));
        // Replica ahead in epochs (primary is stale): disagreement too.
        let stale = h(&[(1, 1)]);
        assert_eq!(a.first_disagreement(&stale), Some(7));
        // Empty history holds nothing.
        assert!(EpochHistory::new().is_compatible_prefix(&a, 0));
        assert!(!EpochHistory::new().is_compatible_prefix(&a, 1));
    }

    #[test]
    fn epoch_history_json_matches_the_spec() -> Result<(), serde_json::Error> {
        let hist = h(&[(1, 1), (2, 13)]);
        let json = serde_json::to_string(&hist)?;
        assert_eq!(
            json,
            r#"{"entries":[{"epoch":1,"start_lsn":1},{"epoch":2,"start_lsn":13}]}"#
        );
        assert_eq!(serde_json::from_str::<EpochHistory>(&json)?, hist);
        Ok(())
    }
}
