//! [`SnapshotStore`]: the `DIR/snapshots/` directory of a node.
//!
//! ```text
//! snapshots/
//!   00000000000000001234/snapshot   installed snapshot, boundary lsn 1234
//!   tmp-00000000000000005678-3/     a snapshot being written or received
//! ```
//! An installed snapshot directory appears only by an atomic rename of a
//! complete, verified, fsynced temporary directory, followed by an fsync of
//! `snapshots/`. Anything named `tmp-*` is discarded on open (FM-4.3, FM-X.8).
//! Only the newest installed snapshot counts; older ones are removed once a
//! newer one is installed.
//!
//! A failed fsync (`sync_data` of a snapshot file or `sync_dir` of a snapshot
//! directory) **poisons** the store, and every clone of it: every later call
//! returns [`SnapshotError::Poisoned`]. After a failed directory fsync the
//! page cache may show a renamed snapshot the disk does not hold; nothing may
//! be decided from it (a retry could falsely succeed). Listings
//! ([`SnapshotStore::newest`], [`SnapshotStore::installed`]) show only
//! *trusted* snapshots: those found by [`SnapshotStore::open`] and those whose
//! publish (rename + fsync of `snapshots/`) returned success.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use walship_wal::{Lsn, Position, Storage, StorageFile, WalError};

use crate::embedder::{SnapshotSink, SnapshotSource};
use crate::error::{io_err, BoundaryConflict, InvalidSnapshot, SnapshotError};
use crate::format::Limits;
use crate::install::{Install, WalTarget};
use crate::membership::{BoundaryMembership, CONFIG_FILE};
use crate::reader::SnapshotReader;
use crate::transfer::{SnapshotOffer, SnapshotSender};
use crate::writer::SnapshotWriter;

/// Name of the snapshot file inside a snapshot directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Prefix of temporary snapshot directories.
pub const TMP_PREFIX: &str = "tmp-";
/// Digits of an installed snapshot directory's name (the boundary lsn, zero-padded).
pub const DIR_NAME_DIGITS: usize = 20;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Directory name of an installed snapshot with boundary lsn `lsn`.
pub fn snapshot_dir_name(lsn: Lsn) -> String {
    format!("{lsn:0width$}", width = DIR_NAME_DIGITS)
}

/// The boundary lsn of an installed snapshot directory name, if it is one.
pub fn parse_snapshot_dir_name(name: &str) -> Option<Lsn> {
    if name.len() == DIR_NAME_DIGITS && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// The boundary and the configuration (`spec/snapshot-format.md` §1.5) of the
/// newest installed snapshot under `dir`, read without changing anything: no
/// temporary directory is removed and the WAL is not looked at (a node reads
/// it before any role opens the store). `None`: no snapshot. The snapshot's
/// header is verified (the configuration file is bound to its crc); its
/// payload is not read.
pub fn read_newest_membership<S: Storage>(
    storage: &S,
    dir: &Path,
    limits: &Limits,
) -> Result<Option<(Position, BoundaryMembership)>, SnapshotError> {
    if !storage.exists(dir).map_err(io_err("exists", dir))? {
        return Ok(None);
    }
    let newest = storage
        .list(dir)
        .map_err(io_err("list", dir))?
        .iter()
        .filter_map(|n| parse_snapshot_dir_name(n))
        .max();
    let Some(lsn) = newest else {
        return Ok(None);
    };
    let snap_dir = dir.join(snapshot_dir_name(lsn));
    let file = snap_dir.join(SNAPSHOT_FILE);
    let damaged = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SnapshotError::InstalledDamaged { path, error }
    };
    let map = storage.map(&file).map_err(io_err("map", &file))?;
    let reader = SnapshotReader::open(map, limits, None).map_err(damaged(&file))?;
    let header = reader.header();
    let membership = read_config_file(storage, &snap_dir, header.boundary.lsn, header.crc())?;
    Ok(Some((header.boundary, membership)))
}

/// The configuration file of the snapshot directory `dir` (absent:
/// [`BoundaryMembership::Unrecorded`]); damaged: `InstalledDamaged`.
fn read_config_file<S: Storage>(
    storage: &S,
    dir: &Path,
    boundary_lsn: Lsn,
    header_crc: u32,
) -> Result<BoundaryMembership, SnapshotError> {
    let path = dir.join(CONFIG_FILE);
    if !storage.exists(&path).map_err(io_err("exists", &path))? {
        return Ok(BoundaryMembership::Unrecorded);
    }
    let map = storage.map(&path).map_err(io_err("map", &path))?;
    BoundaryMembership::decode(&map, boundary_lsn, header_crc)
        .map_err(|error| SnapshotError::InstalledDamaged { path, error })
}

/// An installed snapshot whose header, length and trailer were verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledSnapshot {
    /// Its boundary.
    pub boundary: Position,
    /// Its directory.
    pub dir: PathBuf,
    /// Its snapshot file.
    pub file: PathBuf,
    /// Length of the snapshot file.
    pub file_len: u64,
    /// Total payload length.
    pub total_len: u64,
    /// The configuration in force at the boundary (its configuration file,
    /// `spec/snapshot-format.md` §1.5).
    pub membership: BoundaryMembership,
}

/// What [`SnapshotStore::open`] found and cleaned up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOpenReport {
    /// Temporary directories discarded (an interrupted install or creation).
    pub discarded_tmp: Vec<String>,
    /// Entries that are neither installed snapshots nor temporaries (left alone).
    pub ignored: Vec<String>,
}

/// What [`SnapshotStore::recover`] did to make snapshot and WAL agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryReport {
    /// No snapshot installed; the WAL alone is the state.
    NoSnapshot,
    /// The newest snapshot and the WAL agree (the WAL starts at or before the
    /// boundary and holds the boundary record).
    Consistent {
        /// The newest snapshot's boundary.
        boundary: Position,
    },
    /// An install was interrupted after the snapshot was published but before
    /// the WAL was reset: the WAL was reset to the boundary now.
    RolledForward {
        /// The newest snapshot's boundary.
        boundary: Position,
        /// The WAL's last position before the reset.
        old_wal_last: Position,
    },
}

/// The snapshot directory of one node. Clones share the poisoning and the
/// set of trusted snapshots.
#[derive(Clone, Debug)]
pub struct SnapshotStore<S: Storage> {
    pub(crate) storage: S,
    pub(crate) dir: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) sync_every_bytes: u64,
    health: Arc<Mutex<StoreHealth>>,
}

/// What every clone of a store shares.
#[derive(Debug, Default)]
struct StoreHealth {
    /// The first failed fsync: (operation, path, error).
    poisoned: Option<(&'static str, PathBuf, String)>,
    /// Boundary lsns of the snapshots found at open or published with success.
    trusted: BTreeSet<Lsn>,
}

/// Default write-back interval of an install: the received file is fsynced
/// every this many bytes, so the final fsync is short and write-back
/// overlaps the transfer (durability is still decided by the final fsync).
pub const DEFAULT_INSTALL_SYNC_EVERY_BYTES: u64 = 64 * 1024 * 1024;

impl<S: Storage> SnapshotStore<S> {
    /// Opens `dir` (creating it durably if missing) and discards every
    /// temporary directory: a crash during an install or a creation leaves
    /// only such a directory, and nothing in it is ever read (FM-4.3).
    pub fn open(
        storage: S,
        dir: &Path,
        limits: Limits,
    ) -> Result<(SnapshotStore<S>, StoreOpenReport), SnapshotError> {
        let span = tracing::debug_span!("snapshot_store_open", dir = %dir.display());
        let _g = span.enter();
        let existed = storage.exists(dir).map_err(io_err("exists", dir))?;
        if !existed {
            storage
                .create_dir_all(dir)
                .map_err(io_err("create_dir_all", dir))?;
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            // The new directory's entry must survive power loss before anything is put in it.
            storage
                .sync_dir(parent)
                .map_err(io_err("sync_dir", parent))?;
        }
        let store = SnapshotStore {
            storage,
            dir: dir.to_path_buf(),
            limits,
            sync_every_bytes: DEFAULT_INSTALL_SYNC_EVERY_BYTES,
            health: Arc::new(Mutex::new(StoreHealth::default())),
        };
        let mut report = StoreOpenReport::default();
        for name in store.list_names()? {
            if let Some(lsn) = parse_snapshot_dir_name(&name) {
                // On disk before this process touched it: as durable as anything found at open.
                store.health().trusted.insert(lsn);
            } else if name.starts_with(TMP_PREFIX) {
                let p = store.dir.join(&name);
                store
                    .storage
                    .remove_dir_all(&p)
                    .map_err(io_err("remove_dir_all", &p))?;
                tracing::info!(tmp = %name, "discarded partial snapshot (interrupted install or creation)");
                report.discarded_tmp.push(name);
            } else if parse_snapshot_dir_name(&name).is_none() {
                tracing::warn!(entry = %name, "unexpected entry in the snapshot directory, left alone");
                report.ignored.push(name);
            }
        }
        if !report.discarded_tmp.is_empty() {
            store.sync_dir()?;
        }
        Ok((store, report))
    }

    /// Sets how many received bytes an install writes between intermediate
    /// fsyncs (`u64::MAX`: only the final one).
    pub fn set_install_sync_every_bytes(&mut self, bytes: u64) {
        self.sync_every_bytes = bytes.max(1);
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The limits every snapshot is checked against.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn health(&self) -> MutexGuard<'_, StoreHealth> {
        // A panic under this lock is a broken invariant that already took its thread down.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(SnapshotError::Poisoned)` once an fsync of this store failed.
    pub(crate) fn check_poisoned(&self) -> Result<(), SnapshotError> {
        match &self.health().poisoned {
            None => Ok(()),
            Some((op, path, error)) => Err(SnapshotError::Poisoned {
                op,
                path: path.clone(),
                error: error.clone(),
            }),
        }
    }

    /// Whether an fsync of this store failed (every call now returns
    /// [`SnapshotError::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.health().poisoned.is_some()
    }

    /// Poisons the store for good after a failed fsync of `path` (never
    /// retried: the page cache may have dropped what the fsync was to write)
    /// and returns the failure as [`SnapshotError::Io`].
    pub(crate) fn sync_failed(&self, op: &'static str, path: &Path, e: io::Error) -> SnapshotError {
        let mut h = self.health();
        if h.poisoned.is_none() {
            tracing::error!(op, path = %path.display(), error = %e,
                "snapshot store poisoned: an fsync failed; restart and recover from disk");
            h.poisoned = Some((op, path.to_path_buf(), e.to_string()));
        }
        SnapshotError::io(op, path, e)
    }

    /// Poisons the store if `e` is a failed fsync (`sync_data`/`sync_dir`).
    pub(crate) fn poison_if_sync(&self, e: SnapshotError) -> SnapshotError {
        match e {
            SnapshotError::Io {
                op: op @ ("sync_data" | "sync_dir"),
                path,
                source,
            } => self.sync_failed(op, &path, source),
            other => other,
        }
    }

    fn list_names(&self) -> Result<Vec<String>, SnapshotError> {
        self.check_poisoned()?;
        self.storage
            .list(&self.dir)
            .map_err(io_err("list", &self.dir))
    }

    /// Installed snapshot lsns this store trusts, ascending: found at open or
    /// published with success, and still listed (a rename whose directory
    /// fsync failed is never trusted, however the page cache shows it).
    fn trusted_lsns(&self) -> Result<Vec<Lsn>, SnapshotError> {
        let listed: BTreeSet<Lsn> = self
            .list_names()?
            .iter()
            .filter_map(|n| parse_snapshot_dir_name(n))
            .collect();
        let h = self.health();
        Ok(h.trusted.intersection(&listed).copied().collect())
    }

    pub(crate) fn sync_dir(&self) -> Result<(), SnapshotError> {
        self.check_poisoned()?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| self.sync_failed("sync_dir", &self.dir, e))
    }

    /// Every installed snapshot this store trusts (see the module docs),
    /// oldest first, each with its header, length and trailer verified and
    /// its boundary lsn equal to its directory name.
    pub fn installed(&self) -> Result<Vec<InstalledSnapshot>, SnapshotError> {
        let mut out = Vec::new();
        for lsn in self.trusted_lsns()? {
            out.push(self.inspect(lsn)?);
        }
        Ok(out)
    }

    /// The newest installed snapshot, if any.
    ///
    /// Only the newest directory is inspected: an older snapshot is superseded
    /// (and removed by [`SnapshotStore::recover`]) whatever its state, and
    /// the newest is never replaced by an older one if it is damaged (after
    /// its install the WAL continues from its boundary, not from an older one).
    ///
    /// Only trusted snapshots count (see the module docs): retention truncates
    /// the WAL behind what this returns, so it never names a snapshot whose
    /// publish did not end with a successful fsync of `snapshots/`.
    pub fn newest(&self) -> Result<Option<InstalledSnapshot>, SnapshotError> {
        let newest = self.trusted_lsns()?.last().copied();
        newest.map(|lsn| self.inspect(lsn)).transpose()
    }

    fn inspect(&self, lsn: Lsn) -> Result<InstalledSnapshot, SnapshotError> {
        let dir = self.dir.join(snapshot_dir_name(lsn));
        let file = dir.join(SNAPSHOT_FILE);
        let r = self.open_reader(&file)?;
        if r.boundary().lsn != lsn {
            return Err(SnapshotError::InstalledDamaged {
                path: file,
                error: InvalidSnapshot::BoundaryMismatch {
                    expected: Position {
                        lsn,
                        ..r.boundary()
                    },
                    found: r.boundary(),
                },
            });
        }
        let membership = read_config_file(
            &self.storage,
            &dir,
            r.header().boundary.lsn,
            r.header().crc(),
        )?;
        Ok(InstalledSnapshot {
            boundary: r.boundary(),
            file_len: r.header().file_len(),
            total_len: r.header().total_len,
            membership,
            dir,
            file,
        })
    }

    /// Writes `membership` as the configuration file of the temporary
    /// directory `tmp` (nothing for `Unrecorded`) and fsyncs it; the caller
    /// fsyncs `tmp` before publishing. A failed fsync poisons the store.
    pub(crate) fn write_membership(
        &self,
        tmp: &Path,
        membership: &BoundaryMembership,
        boundary_lsn: Lsn,
        header_crc: u32,
    ) -> Result<(), SnapshotError> {
        let Some(bytes) = membership.encode(boundary_lsn, header_crc)? else {
            return Ok(());
        };
        let path = tmp.join(CONFIG_FILE);
        let file = self
            .storage
            .open(&path, true)
            .map_err(io_err("open", &path))?;
        file.set_len(0).map_err(io_err("set_len", &path))?;
        file.write_at(0, &bytes)
            .map_err(io_err("write_at", &path))?;
        file.sync_data()
            .map_err(|e| self.sync_failed("sync_data", &path, e))
    }

    /// A sender of the installed snapshot `snap`: its reader and its
    /// configuration file, both verified.
    pub fn sender(&self, snap: &InstalledSnapshot) -> Result<SnapshotSender, SnapshotError> {
        let reader = self.reader(snap)?;
        SnapshotSender::new(reader, &snap.membership).map_err(|error| {
            SnapshotError::InstalledDamaged {
                path: snap.dir.join(CONFIG_FILE),
                error,
            }
        })
    }

    fn open_reader(&self, file: &Path) -> Result<SnapshotReader, SnapshotError> {
        self.check_poisoned()?;
        let map = self.storage.map(file).map_err(io_err("map", file))?;
        SnapshotReader::open(map, &self.limits, None).map_err(|error| {
            SnapshotError::InstalledDamaged {
                path: file.to_path_buf(),
                error,
            }
        })
    }

    /// A reader of an installed snapshot (header and trailer verified again;
    /// chunks are verified as they are read).
    pub fn reader(&self, snap: &InstalledSnapshot) -> Result<SnapshotReader, SnapshotError> {
        let r = self.open_reader(&snap.file)?;
        if r.boundary() != snap.boundary {
            return Err(SnapshotError::InstalledDamaged {
                path: snap.file.clone(),
                error: InvalidSnapshot::BoundaryMismatch {
                    expected: snap.boundary,
                    found: r.boundary(),
                },
            });
        }
        Ok(r)
    }

    /// Fully verifies an installed snapshot (every chunk and the payload crc).
    pub fn verify(&self, snap: &InstalledSnapshot) -> Result<(), SnapshotError> {
        self.reader(snap)?
            .verify()
            .map_err(|error| SnapshotError::InstalledDamaged {
                path: snap.file.clone(),
                error,
            })
    }

    /// Feeds an installed snapshot to the embedder ([`SnapshotSink::restore_snapshot`]).
    /// A chunk that fails verification while being read is
    /// [`SnapshotError::InstalledDamaged`].
    pub fn restore<K: SnapshotSink + ?Sized>(
        &self,
        snap: &InstalledSnapshot,
        sink: &mut K,
    ) -> Result<(), SnapshotError> {
        let r = self.reader(snap)?;
        let span = tracing::info_span!(
            "snapshot_restore",
            lsn = snap.boundary.lsn,
            epoch = snap.boundary.epoch
        );
        let _g = span.enter();
        let mut payload = r.payload_reader();
        sink.restore_snapshot(snap.boundary, &mut payload)
            .map_err(|e| {
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<InvalidSnapshot>())
                {
                    Some(inv) => SnapshotError::InstalledDamaged {
                        path: snap.file.clone(),
                        error: inv.clone(),
                    },
                    None => SnapshotError::Embedder {
                        op: "restore_snapshot",
                        source: e,
                    },
                }
            })
    }

    /// On start, after [`SnapshotStore::recover`]: if the embedder's applied
    /// lsn is below the newest snapshot's boundary (an in-memory embedder, or
    /// a crash between install and restore), restores the newest snapshot
    /// into it and returns its boundary; the caller then replays the WAL from
    /// `boundary.lsn + 1`. `None` when the embedder is at or past it.
    pub fn restore_if_behind<K: SnapshotSink + ?Sized>(
        &self,
        applied_lsn: Lsn,
        sink: &mut K,
    ) -> Result<Option<Position>, SnapshotError> {
        match self.newest()? {
            Some(snap) if applied_lsn < snap.boundary.lsn => {
                self.restore(&snap, sink)?;
                Ok(Some(snap.boundary))
            }
            _ => Ok(None),
        }
    }

    pub(crate) fn new_tmp_dir(&self, lsn_hint: Lsn) -> Result<PathBuf, SnapshotError> {
        self.check_poisoned()?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = self
            .dir
            .join(format!("{TMP_PREFIX}{}-{n}", snapshot_dir_name(lsn_hint)));
        if self.storage.exists(&p).map_err(io_err("exists", &p))? {
            self.storage
                .remove_dir_all(&p)
                .map_err(io_err("remove_dir_all", &p))?;
        }
        self.storage
            .create_dir_all(&p)
            .map_err(io_err("create_dir_all", &p))?;
        Ok(p)
    }

    /// Starts receiving the snapshot `offer` announces into a temporary
    /// directory. The offer is checked against the limits before anything
    /// is created.
    pub fn begin_install(&self, offer: &SnapshotOffer) -> Result<Install<S>, SnapshotError> {
        let header = offer.validate(&self.limits)?;
        let membership = offer.membership()?;
        Install::begin(self, header, membership)
    }

    /// Creates a snapshot of the embedder's state (primary side, on demand or
    /// by policy): the embedder writes into a temporary directory, `resolve`
    /// turns its applied lsn into the WAL position (it must be committed and
    /// durable), the file is fsynced, renamed into place and the directory
    /// fsynced; older snapshots are removed afterwards. A crash at any point
    /// leaves the previous snapshots as they were.
    ///
    /// The snapshot records no configuration ([`BoundaryMembership::Unrecorded`]);
    /// [`SnapshotStore::create_with_membership`] records one.
    pub fn create(
        &self,
        chunk_size_bytes: u32,
        source: &mut dyn SnapshotSource,
        resolve: &mut dyn FnMut(Lsn) -> Result<Position, SnapshotError>,
    ) -> Result<InstalledSnapshot, SnapshotError> {
        self.create_with_membership(chunk_size_bytes, source, resolve, &mut |_| {
            Ok(BoundaryMembership::Unrecorded)
        })
    }

    /// [`SnapshotStore::create`], and `membership` names the configuration in
    /// force at the resolved boundary: written as the snapshot's configuration
    /// file inside the temporary directory, so it is published with the
    /// snapshot (`spec/snapshot-format.md` §1.5).
    pub fn create_with_membership(
        &self,
        chunk_size_bytes: u32,
        source: &mut dyn SnapshotSource,
        resolve: &mut dyn FnMut(Lsn) -> Result<Position, SnapshotError>,
        membership: &mut dyn FnMut(Position) -> Result<BoundaryMembership, SnapshotError>,
    ) -> Result<InstalledSnapshot, SnapshotError> {
        let span = tracing::info_span!("snapshot_create", dir = %self.dir.display());
        let _g = span.enter();
        self.limits.check(chunk_size_bytes, 0)?;
        let tmp = self.new_tmp_dir(0)?;
        let result = self.create_in(&tmp, chunk_size_bytes, source, resolve, membership);
        if result.is_err() {
            // Best effort: a leftover tmp directory is discarded on the next open anyway.
            if let Err(e) = self.storage.remove_dir_all(&tmp) {
                tracing::warn!(tmp = %tmp.display(), error = %e, "could not remove a failed snapshot's tmp directory");
            }
        }
        result
    }

    fn create_in(
        &self,
        tmp: &Path,
        chunk_size_bytes: u32,
        source: &mut dyn SnapshotSource,
        resolve: &mut dyn FnMut(Lsn) -> Result<Position, SnapshotError>,
        membership: &mut dyn FnMut(Position) -> Result<BoundaryMembership, SnapshotError>,
    ) -> Result<InstalledSnapshot, SnapshotError> {
        let path = tmp.join(SNAPSHOT_FILE);
        let file = self
            .storage
            .open(&path, true)
            .map_err(io_err("open", &path))?;
        let mut w = SnapshotWriter::new(file, &path, chunk_size_bytes, &self.limits)?;
        let lsn = source.write_snapshot(&mut w).map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<SnapshotError>())
            {
                Some(SnapshotError::PayloadTooLarge { max }) => {
                    SnapshotError::PayloadTooLarge { max: *max }
                }
                _ => SnapshotError::Embedder {
                    op: "write_snapshot",
                    source: e,
                },
            }
        })?;
        let boundary = resolve(lsn)?;
        if boundary.lsn != lsn {
            return Err(SnapshotError::UnresolvedBoundary {
                lsn,
                detail: format!("resolved to a position at lsn {}", boundary.lsn),
            });
        }
        let at_boundary = membership(boundary)?;
        let meta = w.finish(boundary).map_err(|e| self.poison_if_sync(e))?;
        self.write_membership(tmp, &at_boundary, boundary.lsn, meta.header.crc())?;
        // The files' entries in tmp must be durable before tmp is published.
        self.storage
            .sync_dir(tmp)
            .map_err(|e| self.sync_failed("sync_dir", tmp, e))?;
        let installed = self.publish(tmp, boundary)?;
        tracing::info!(
            lsn = boundary.lsn,
            epoch = boundary.epoch,
            total_len = meta.header.total_len,
            "snapshot created"
        );
        self.remove_older_than(boundary.lsn)?;
        Ok(installed)
    }

    /// Renames a complete, synced temporary directory to the installed name of
    /// `boundary` and fsyncs `snapshots/`: the commit point of a snapshot.
    /// Only after that fsync succeeded is the snapshot trusted; if it fails
    /// the store is poisoned and the renamed directory is never listed.
    pub(crate) fn publish(
        &self,
        tmp: &Path,
        boundary: Position,
    ) -> Result<InstalledSnapshot, SnapshotError> {
        self.check_poisoned()?;
        let final_dir = self.dir.join(snapshot_dir_name(boundary.lsn));
        if self
            .storage
            .exists(&final_dir)
            .map_err(io_err("exists", &final_dir))?
        {
            // A snapshot at this lsn is installed already (re-created at an
            // unchanged applied lsn, or a repeated install). Keep it rather
            // than replace it: a remove followed by a rename is not atomic,
            // and the WAL before it may be truncated already.
            let existing = self.inspect(boundary.lsn)?;
            if existing.boundary != boundary {
                return Err(BoundaryConflict::InstalledDiffers {
                    lsn: boundary.lsn,
                    installed: existing.boundary,
                    boundary,
                }
                .into());
            }
            self.storage
                .remove_dir_all(tmp)
                .map_err(io_err("remove_dir_all", tmp))?;
            self.sync_dir()?;
            self.health().trusted.insert(boundary.lsn);
            return Ok(existing);
        }
        self.storage
            .rename(tmp, &final_dir)
            .map_err(io_err("rename", tmp))?;
        // Without this fsync the rename may be lost on power failure. If it
        // fails the store is poisoned and the snapshot stays untrusted.
        self.sync_dir()?;
        self.health().trusted.insert(boundary.lsn);
        self.inspect(boundary.lsn)
    }

    /// Removes every installed snapshot older than `lsn` (durably).
    pub fn remove_older_than(&self, lsn: Lsn) -> Result<usize, SnapshotError> {
        let mut removed = 0;
        for name in self.list_names()? {
            if let Some(l) = parse_snapshot_dir_name(&name) {
                if l < lsn {
                    let p = self.dir.join(&name);
                    self.storage
                        .remove_dir_all(&p)
                        .map_err(io_err("remove_dir_all", &p))?;
                    self.health().trusted.remove(&l);
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(removed)
    }

    /// Makes the newest snapshot and the WAL agree after a restart (call
    /// after [`SnapshotStore::open`] and `Wal::open`, before using either):
    ///
    /// * no snapshot: nothing to do;
    /// * WAL last lsn below the boundary: the install was interrupted after its
    ///   commit point (the published snapshot), so the WAL is reset to the
    ///   boundary now — the old WAL is never read together with the new
    ///   snapshot (FM-10.5);
    /// * otherwise the WAL must hold the boundary record with the boundary's
    ///   identity, else [`SnapshotError::StoreWalMismatch`] (local corruption).
    ///
    /// Older snapshots left by an interrupted cleanup are removed.
    pub fn recover<W: WalTarget + ?Sized>(
        &self,
        wal: &mut W,
    ) -> Result<RecoveryReport, SnapshotError> {
        let Some(newest) = self.newest()? else {
            return Ok(RecoveryReport::NoSnapshot);
        };
        let b = newest.boundary;
        let span = tracing::info_span!("snapshot_recover", lsn = b.lsn, epoch = b.epoch);
        let _g = span.enter();
        let last = wal.last();
        if last.lsn < b.lsn {
            wal.reset_to(b)?;
            tracing::info!(
                old_last_lsn = last.lsn,
                "completed an interrupted snapshot install: WAL reset to the boundary"
            );
            self.remove_older_than(b.lsn)?;
            return Ok(RecoveryReport::RolledForward {
                boundary: b,
                old_wal_last: last,
            });
        }
        let at = wal.position_at(b.lsn).map_err(|e| match e {
            WalError::NotRetained { .. } => SnapshotError::StoreWalMismatch {
                snapshot: b,
                wal_base: wal.base(),
                wal_at_boundary: None,
                detail: "the WAL does not retain the boundary record".into(),
            },
            other => SnapshotError::Wal(other),
        })?;
        if at != Some(b) {
            // Nothing is removed: an operator gets every byte there was.
            return Err(SnapshotError::StoreWalMismatch {
                snapshot: b,
                wal_base: wal.base(),
                wal_at_boundary: at,
                detail: "the WAL's record at the boundary lsn differs from the boundary".into(),
            });
        }
        // Older snapshots left by an interrupted cleanup are superseded.
        self.remove_older_than(b.lsn)?;
        Ok(RecoveryReport::Consistent { boundary: b })
    }
}
