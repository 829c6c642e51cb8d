//! A node data directory opened by the recovery tool: validated, locked, and
//! read without side effects (nothing is created in a directory that is not a
//! walship data directory). [`LiveDir`] is the one exception to the lock: the
//! directory of a possibly running primary, read without its lock and without
//! writing anything (`rejoin --from`).

use std::path::{Path, PathBuf};

use walship_replica::halt::{read_halt, HaltRecord};
use walship_wal::state::{read_state_json, DirLock, EpochHistory};
pub use walship_wal::state::{COMMIT_FILE, EPOCHS_FILE, SNAPSHOT_DIR, STATE_DIR, WAL_DIR};
use walship_wal::{FsStorage, Lsn};

use crate::error::RecoverError;
use crate::scan::{
    confirm_with_wal, scan_wal, ConfirmError, ScanEnd, ScanOptions, Visitor, WalScan,
};

/// A WAL that can be scanned read-only, visiting every verified record in lsn order.
pub trait ScanSource: Sync {
    /// The data directory.
    fn root(&self) -> &Path;
    /// Scans the WAL read-only; the verdict is as reliable as the source allows
    /// (see the implementations).
    fn scan_log(
        &self,
        opts: ScanOptions,
        progress_label: Option<&str>,
        visit: &mut Visitor<'_>,
    ) -> Result<WalScan, RecoverError>;
}

impl ScanSource for DataDir {
    fn root(&self) -> &Path {
        &self.root
    }

    fn scan_log(
        &self,
        opts: ScanOptions,
        progress_label: Option<&str>,
        visit: &mut Visitor<'_>,
    ) -> Result<WalScan, RecoverError> {
        self.scan(opts, progress_label, visit)
    }
}

/// The data directory of a node that may be RUNNING (the primary a node
/// rejoins): its lock is not taken and nothing in it is ever opened for
/// writing. Its WAL is scanned with `Storage::list` and `Storage::map` only.
///
/// A live log is append-only: a record the scan verified is never rewritten
/// by the running node, so positions read are final (spec/recovery-tool.md
/// §11). What a second read would see differs only at the tail (new records,
/// a write in flight), so a complete scan is not re-confirmed by
/// `walship_wal::inspect` as a stopped directory's is; only a corruption
/// verdict is, because it must not be an artefact of a write in flight.
#[derive(Debug)]
pub struct LiveDir {
    root: PathBuf,
    storage: FsStorage,
}

impl LiveDir {
    /// Checks `root` is a walship data directory; takes no lock and creates nothing.
    pub fn open_unlocked(root: &Path) -> Result<LiveDir, RecoverError> {
        check_data_dir(root)?;
        Ok(LiveDir {
            root: root.to_path_buf(),
            storage: FsStorage,
        })
    }

    /// `DIR/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join(WAL_DIR)
    }
}

impl ScanSource for LiveDir {
    fn root(&self) -> &Path {
        &self.root
    }

    /// Read-only scan. A segment listed but gone before it is mapped (the
    /// running node's retention removed it) is [`RecoverError::LiveLogChanged`].
    /// A corruption verdict is confirmed by `walship_wal::inspect` (a second,
    /// independent read must find the same damage at the same place; damage in
    /// the verified part of an append-only log cannot go away), else it is
    /// [`RecoverError::LiveLogChanged`] too. A torn tail is the live log's end.
    fn scan_log(
        &self,
        opts: ScanOptions,
        progress_label: Option<&str>,
        visit: &mut Visitor<'_>,
    ) -> Result<WalScan, RecoverError> {
        let wal_dir = self.wal_dir();
        let mut scan =
            scan_wal(&self.storage, &wal_dir, opts, progress_label, visit).map_err(|e| {
                if e.op == "map" && e.source.kind() == std::io::ErrorKind::NotFound {
                    RecoverError::LiveLogChanged {
                        dir: self.root.clone(),
                        detail: format!(
                            "segment {} was removed during the read (the running node's retention)",
                            e.path.display()
                        ),
                    }
                } else {
                    RecoverError::from(e)
                }
            })?;
        if matches!(scan.end, ScanEnd::Corrupt(_)) {
            confirm_with_wal(&self.storage, &wal_dir, opts, &mut scan).map_err(|e| match e {
                ConfirmError::Wal(w) => RecoverError::from(w),
                ConfirmError::Mismatch(m) => RecoverError::LiveLogChanged {
                    dir: self.root.clone(),
                    detail: m.to_string(),
                },
            })?;
        }
        Ok(scan)
    }
}

pub use walship_wal::state::CommitBody;

/// A validated data directory whose lock this process holds until drop.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    storage: FsStorage,
    _lock: DirLock,
}

impl DataDir {
    /// Checks `root` is a walship data directory (it has `wal/` and `state/`
    /// subdirectories) and takes its lock. Creates nothing in a directory that
    /// fails the check; refuses with [`RecoverError::NodeRunning`] if the lock is held.
    pub fn open_locked(root: &Path) -> Result<DataDir, RecoverError> {
        check_data_dir(root)?;
        let lock = DirLock::acquire(root)?;
        Ok(DataDir {
            root: root.to_path_buf(),
            storage: FsStorage,
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage all reads and writes go through.
    pub fn storage(&self) -> &FsStorage {
        &self.storage
    }

    /// `DIR/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join(WAL_DIR)
    }

    /// `DIR/state`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// `DIR/snapshots`.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join(SNAPSHOT_DIR)
    }

    /// Read-only scan of the WAL, its verdict confirmed by (and its
    /// corruption report taken from) `walship_wal::inspect`.
    pub fn scan(
        &self,
        opts: ScanOptions,
        progress_label: Option<&str>,
        visit: &mut Visitor<'_>,
    ) -> Result<WalScan, RecoverError> {
        let mut scan = scan_wal(&self.storage, &self.wal_dir(), opts, progress_label, visit)?;
        confirm_with_wal(&self.storage, &self.wal_dir(), opts, &mut scan).map_err(|e| match e {
            ConfirmError::Wal(w) => RecoverError::from(w),
            ConfirmError::Mismatch(m) => RecoverError::Internal {
                message: m.to_string(),
            },
        })?;
        Ok(scan)
    }

    /// `state/commit`, `None` if absent.
    pub fn commit_lsn(&self) -> Result<Option<Lsn>, RecoverError> {
        let c: Option<CommitBody> = read_state_json(&self.storage, &self.state_dir(), COMMIT_FILE)?;
        Ok(c.map(|c| c.commit_lsn))
    }

    /// `state/epochs`, `None` if absent. An intact file whose entries break the
    /// ordering rules is reported as corrupt.
    pub fn epoch_history(&self) -> Result<Option<EpochHistory>, RecoverError> {
        let h: Option<EpochHistory> =
            read_state_json(&self.storage, &self.state_dir(), EPOCHS_FILE)?;
        if let Some(h) = &h {
            h.validate().map_err(|e| RecoverError::StateCorrupt {
                message: format!("{}: {e}", self.state_dir().join(EPOCHS_FILE).display()),
            })?;
        }
        Ok(h)
    }

    /// `state/halt`, `None` if the node is not halted.
    pub fn halt(&self) -> Result<Option<HaltRecord>, RecoverError> {
        Ok(read_halt(&self.storage, &self.state_dir())?)
    }
}

/// `root` must be an existing directory with `wal/` and `state/` subdirectories.
pub fn check_data_dir(root: &Path) -> Result<(), RecoverError> {
    let not = |reason: String| RecoverError::NotADataDir {
        path: root.to_path_buf(),
        reason,
    };
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(not("it is not a directory".to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not("it does not exist".to_string()))
        }
        Err(source) => {
            return Err(RecoverError::Io {
                op: "stat",
                path: root.to_path_buf(),
                source,
            })
        }
    }
    for sub in [WAL_DIR, STATE_DIR] {
        let p = root.join(sub);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not(format!("{sub}/ is not a directory"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not(format!("no {sub}/ subdirectory")))
            }
            Err(source) => {
                return Err(RecoverError::Io {
                    op: "stat",
                    path: p,
                    source,
                })
            }
        }
    }
    Ok(())
}
