//! Atomic install of a received snapshot on a replica.
//!
//! ```text
//! begin_install(offer)      offer checked against the limits; snapshots/tmp-<lsn>-<n>/ created
//! push_chunk(chunk) x N     index, length and crc checked, then written at its offset
//! finish(end)               count, trailer and whole-payload crc checked; trailer and header
//!                           written; file fsynced; tmp dir fsynced; file re-read and verified
//! commit(wal)               boundary checked against the WAL (FM-7.2);
//!                           rename tmp -> snapshots/<lsn>/; fsync snapshots/   <- commit point
//!                           Wal::reset_to(boundary); older snapshots removed
//! ```
//! A crash before the commit point leaves a `tmp-*` directory that the next
//! [`SnapshotStore::open`] discards: the replica is exactly in its previous
//! state (FM-4.3). A crash after it leaves the new snapshot published and
//! perhaps the old WAL, which [`SnapshotStore::recover`] resets to the
//! boundary before anything reads it: the old WAL is never used with the new
//! snapshot (FM-10.5).

use std::path::{Path, PathBuf};

use walship_wal::state::EpochHistory;
use walship_wal::{Lsn, Position, RecordHeader, Storage, StorageFile, Wal, WalError};

use crate::error::{io_err, BoundaryConflict, InvalidSnapshot, SnapshotError};
use crate::format::{ChunkHeader, SnapshotHeader, SnapshotTrailer, CHUNK_HEADER_LEN};
use crate::membership::BoundaryMembership;
use crate::reader::SnapshotReader;
use crate::store::{InstalledSnapshot, SnapshotStore, SNAPSHOT_FILE};
use crate::transfer::{SnapshotChunk, SnapshotEnd};

/// The WAL operations an install needs (implemented for [`Wal`]; a replica
/// holding a `SharedWal` calls the install inside `SharedWal::with`).
pub trait WalTarget {
    /// The position before the first retained record.
    fn base(&self) -> Position;
    /// The last record's position.
    fn last(&self) -> Position;
    /// The identity of record `lsn` (`None` if not retained or beyond the end).
    fn position_at(&self, lsn: Lsn) -> Result<Option<Position>, WalError>;
    /// Starts a fresh, empty log whose first record is `boundary.lsn + 1`,
    /// chaining to `boundary.crc`; durable when it returns.
    fn reset_to(&mut self, boundary: Position) -> Result<(), WalError>;
}

impl<S: Storage> WalTarget for Wal<S> {
    fn base(&self) -> Position {
        Wal::base(self)
    }
    fn last(&self) -> Position {
        Wal::last(self)
    }
    fn position_at(&self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        Wal::position_at(self, lsn)
    }
    fn reset_to(&mut self, boundary: Position) -> Result<(), WalError> {
        Wal::reset_to(self, boundary)
    }
}

/// The local and the primary's epoch histories, for the boundary check.
#[derive(Clone, Copy, Debug)]
pub struct EpochCheck<'a> {
    /// The replica's epoch history (covering its WAL's records).
    pub local: &'a EpochHistory,
    /// The primary's epoch history (from `Welcome`).
    pub primary: &'a EpochHistory,
}

/// How a boundary relates to the local WAL, when it is acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundaryVerdict {
    /// The boundary is past the local WAL's end: the snapshot replaces the
    /// whole local state.
    AheadOfLocal,
    /// The boundary is the local WAL's last record: the snapshot covers
    /// exactly the local records; nothing durable is cut.
    AtLocalLast,
}

/// The boundary check of FM-7.2, a pure function of what the replica holds.
///
/// In order: the boundary must not be below the WAL's base (the local
/// snapshot or truncation point); if the WAL holds the boundary lsn the
/// record there must have the boundary's identity and be the last one
/// (installing must never cut durable, possibly receipted records); if the
/// boundary is past the WAL's end its epoch must not be below the last
/// record's; with `epochs`, the primary's history must give the boundary lsn
/// the boundary's epoch, and the local history must agree with the primary's
/// on every lsn the replica holds.
pub fn check_boundary(
    boundary: Position,
    base: Position,
    last: Position,
    at_boundary: Option<Position>,
    epochs: Option<EpochCheck<'_>>,
) -> Result<BoundaryVerdict, BoundaryConflict> {
    if boundary.lsn < base.lsn {
        return Err(BoundaryConflict::BelowLocalBase {
            boundary_lsn: boundary.lsn,
            local_base_lsn: base.lsn,
        });
    }
    let verdict = if boundary.lsn <= last.lsn {
        match at_boundary {
            Some(p) if p == boundary => {}
            Some(local) => {
                return Err(BoundaryConflict::PositionMismatch {
                    lsn: boundary.lsn,
                    local,
                    boundary,
                })
            }
            None => {
                return Err(BoundaryConflict::BelowLocalBase {
                    boundary_lsn: boundary.lsn,
                    local_base_lsn: base.lsn,
                })
            }
        }
        if boundary.lsn < last.lsn {
            return Err(BoundaryConflict::BelowLocalLast {
                boundary_lsn: boundary.lsn,
                local_last_lsn: last.lsn,
            });
        }
        BoundaryVerdict::AtLocalLast
    } else {
        if boundary.epoch < last.epoch {
            return Err(BoundaryConflict::EpochRegression {
                boundary_epoch: boundary.epoch,
                local_epoch: last.epoch,
            });
        }
        BoundaryVerdict::AheadOfLocal
    };
    if let Some(e) = epochs {
        if boundary.lsn > 0 {
            let history_epoch = e.primary.epoch_at(boundary.lsn);
            if history_epoch != Some(boundary.epoch) {
                return Err(BoundaryConflict::EpochNotInHistory {
                    lsn: boundary.lsn,
                    boundary_epoch: boundary.epoch,
                    history_epoch,
                });
            }
        }
        if let Some(lsn) = e.local.first_disagreement(e.primary) {
            if lsn <= last.lsn {
                return Err(BoundaryConflict::EpochHistory { lsn });
            }
        }
    }
    Ok(verdict)
}

/// The second half of FM-7.2: the first record after an installed snapshot
/// must be `boundary.lsn + 1` and chain to `boundary.crc` with an epoch not
/// below the boundary's. The replica calls it on the first record it
/// receives after an install (a failure halts `snapshot-boundary`, the record
/// is not appended).
pub fn check_first_after(boundary: Position, first: &RecordHeader) -> Result<(), BoundaryConflict> {
    walship_wal::check_successor(boundary, first).map_err(|error| {
        BoundaryConflict::FirstRecordBreaksChain {
            boundary,
            found_lsn: first.lsn,
            found_prev_crc: first.prev_crc,
            found_epoch: first.epoch,
            detail: error.to_string(),
        }
    })
}

/// A snapshot being received into a temporary directory.
///
/// After an error from [`Install::push_chunk`] the install is dead: call
/// [`Install::abort`]. A session that ends mid-transfer also calls `abort`
/// (FM-X.8); a dropped `Install` leaves its directory to the next open.
pub struct Install<S: Storage> {
    store: SnapshotStore<S>,
    tmp_dir: PathBuf,
    path: PathBuf,
    file: S::File,
    header: SnapshotHeader,
    membership: BoundaryMembership,
    next_index: u64,
    payload_crc: u32,
    failed: bool,
    unsynced_bytes: u64,
}

impl<S: Storage> std::fmt::Debug for Install<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Install")
            .field("tmp_dir", &self.tmp_dir)
            .field("header", &self.header)
            .field("next_index", &self.next_index)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<S: Storage> Install<S> {
    pub(crate) fn begin(
        store: &SnapshotStore<S>,
        header: SnapshotHeader,
        membership: BoundaryMembership,
    ) -> Result<Install<S>, SnapshotError> {
        let tmp_dir = store.new_tmp_dir(header.boundary.lsn)?;
        let path = tmp_dir.join(SNAPSHOT_FILE);
        let file = store
            .storage
            .open(&path, true)
            .map_err(io_err("open", &path))?;
        file.set_len(0).map_err(io_err("set_len", &path))?;
        tracing::info!(
            lsn = header.boundary.lsn,
            epoch = header.boundary.epoch,
            total_len = header.total_len,
            chunks = header.chunk_count(),
            tmp = %tmp_dir.display(),
            "snapshot install started"
        );
        Ok(Install {
            store: store.clone(),
            tmp_dir,
            path,
            file,
            header,
            membership,
            next_index: 0,
            payload_crc: 0,
            failed: false,
            unsynced_bytes: 0,
        })
    }

    /// The header being received.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The index of the next chunk expected.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The temporary directory.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    /// Checks the next chunk (sequence, index, length, crc), then writes it.
    pub fn push_chunk(&mut self, chunk: &SnapshotChunk) -> Result<(), SnapshotError> {
        let r = self.push_chunk_inner(chunk);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn push_chunk_inner(&mut self, chunk: &SnapshotChunk) -> Result<(), SnapshotError> {
        self.store.check_poisoned()?;
        if self.failed {
            return Err(InvalidSnapshot::Sequence {
                detail: "chunk after the install failed".into(),
            }
            .into());
        }
        let count = self.header.chunk_count();
        if self.next_index >= count {
            return Err(InvalidSnapshot::Sequence {
                detail: format!("chunk {} after the last of {count} chunks", chunk.index),
            }
            .into());
        }
        let len = u32::try_from(chunk.bytes.len()).unwrap_or(u32::MAX);
        let ch = ChunkHeader {
            index: chunk.index,
            len,
            crc: chunk.crc,
        };
        ch.check_against(&self.header, self.next_index)?;
        ch.verify_bytes(&chunk.bytes)?;
        let at = self.header.chunk_offset(self.next_index);
        self.file
            .write_at(at, &ch.encode())
            .map_err(io_err("write_at", &self.path))?;
        self.file
            .write_at(at + CHUNK_HEADER_LEN as u64, &chunk.bytes)
            .map_err(io_err("write_at", &self.path))?;
        self.payload_crc = crc32c::crc32c_append(self.payload_crc, &chunk.bytes);
        self.next_index += 1;
        self.unsynced_bytes += (CHUNK_HEADER_LEN + chunk.bytes.len()) as u64;
        if self.unsynced_bytes >= self.store.sync_every_bytes {
            // Write-back while the transfer goes on; not a durability point
            // (the final fsync in `finish` is). A failure is still fatal.
            self.file
                .sync_data()
                .map_err(|e| self.store.sync_failed("sync_data", &self.path, e))?;
            self.unsynced_bytes = 0;
        }
        Ok(())
    }

    /// Checks the end of the transfer (every chunk received, the trailer
    /// against the header and the whole-payload crc), writes trailer and
    /// header, fsyncs the file and the temporary directory, then re-reads the
    /// file and verifies all of it (a misdirected or lost local write shows
    /// here as [`SnapshotError::InstalledDamaged`]). On error the temporary
    /// directory is removed.
    pub fn finish(self, end: &SnapshotEnd) -> Result<VerifiedSnapshot<S>, SnapshotError> {
        let store = self.store.clone();
        let tmp = self.tmp_dir.clone();
        let r = self.finish_inner(end);
        if r.is_err() {
            discard_best_effort(&store, &tmp);
        }
        r
    }

    fn finish_inner(self, end: &SnapshotEnd) -> Result<VerifiedSnapshot<S>, SnapshotError> {
        self.store.check_poisoned()?;
        if self.failed {
            return Err(InvalidSnapshot::Sequence {
                detail: "end after the install failed".into(),
            }
            .into());
        }
        let count = self.header.chunk_count();
        if self.next_index != count {
            return Err(InvalidSnapshot::ChunkCountMismatch {
                what: "transfer",
                expected: count,
                found: self.next_index,
            }
            .into());
        }
        end.trailer.check_against(&self.header, self.payload_crc)?;
        let trailer = SnapshotTrailer {
            header_crc: self.header.crc(),
            chunk_count: count,
            total_len: self.header.total_len,
            payload_crc: self.payload_crc,
        };
        debug_assert_eq!(trailer, end.trailer);
        self.file
            .write_at(self.header.trailer_offset(), &trailer.encode())
            .map_err(io_err("write_at", &self.path))?;
        self.file
            .write_at(0, &self.header.encode())
            .map_err(io_err("write_at", &self.path))?;
        // The bytes must be durable before the directory is published.
        self.file
            .sync_data()
            .map_err(|e| self.store.sync_failed("sync_data", &self.path, e))?;
        // The configuration in force at the boundary, published with the snapshot.
        self.store.write_membership(
            &self.tmp_dir,
            &self.membership,
            self.header.boundary.lsn,
            self.header.crc(),
        )?;
        // The files' entries in the tmp dir must be durable before the rename.
        self.store
            .storage
            .sync_dir(&self.tmp_dir)
            .map_err(|e| self.store.sync_failed("sync_dir", &self.tmp_dir, e))?;
        drop(self.file);
        let map = self
            .store
            .storage
            .map(&self.path)
            .map_err(io_err("map", &self.path))?;
        let damaged = |error| SnapshotError::InstalledDamaged {
            path: self.path.clone(),
            error,
        };
        let reader = SnapshotReader::open(map, &self.store.limits, Some(self.header.boundary))
            .map_err(damaged)?;
        reader.verify().map_err(damaged)?;
        tracing::info!(
            lsn = self.header.boundary.lsn,
            epoch = self.header.boundary.epoch,
            "snapshot received and verified"
        );
        Ok(VerifiedSnapshot {
            store: self.store,
            tmp_dir: self.tmp_dir,
            header: self.header,
        })
    }

    /// Discards the partial snapshot (a session ended, or a check failed).
    pub fn abort(self) -> Result<(), SnapshotError> {
        drop(self.file);
        remove_tmp(&self.store, &self.tmp_dir)
    }
}

fn remove_tmp<S: Storage>(store: &SnapshotStore<S>, tmp: &Path) -> Result<(), SnapshotError> {
    store.check_poisoned()?;
    store
        .storage
        .remove_dir_all(tmp)
        .map_err(io_err("remove_dir_all", tmp))?;
    store.sync_dir()?;
    tracing::info!(tmp = %tmp.display(), "partial snapshot discarded");
    Ok(())
}

fn discard_best_effort<S: Storage>(store: &SnapshotStore<S>, tmp: &Path) {
    // A leftover tmp directory is discarded by the next open anyway.
    if let Err(e) = remove_tmp(store, tmp) {
        tracing::warn!(tmp = %tmp.display(), error = %e, "could not discard a partial snapshot");
    }
}

/// A received snapshot, complete, durable and verified in its temporary
/// directory, not yet installed.
#[derive(Debug)]
pub struct VerifiedSnapshot<S: Storage> {
    store: SnapshotStore<S>,
    tmp_dir: PathBuf,
    header: SnapshotHeader,
}

/// The result of a successful [`VerifiedSnapshot::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallOutcome {
    /// The installed snapshot.
    pub installed: InstalledSnapshot,
    /// How the boundary related to the local WAL.
    pub verdict: BoundaryVerdict,
}

impl<S: Storage> VerifiedSnapshot<S> {
    /// The snapshot's boundary.
    pub fn boundary(&self) -> Position {
        self.header.boundary
    }

    /// The snapshot's header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Installs the snapshot: the boundary check ([`check_boundary`]; a
    /// conflict discards the snapshot and is [`SnapshotError::Boundary`],
    /// FM-7.2), then publish (rename + fsync of `snapshots/`: the commit
    /// point), then `wal.reset_to(boundary)`, then removal of older
    /// snapshots. An error after the commit point (the WAL reset failing)
    /// leaves a published snapshot whose WAL reset [`SnapshotStore::recover`]
    /// completes on the next start; the node must stop.
    pub fn commit<W: WalTarget + ?Sized>(
        self,
        wal: &mut W,
        epochs: Option<EpochCheck<'_>>,
    ) -> Result<InstallOutcome, SnapshotError> {
        let boundary = self.header.boundary;
        let span = tracing::info_span!(
            "snapshot_commit",
            lsn = boundary.lsn,
            epoch = boundary.epoch
        );
        let _g = span.enter();
        self.store.check_poisoned()?;
        let base = wal.base();
        let last = wal.last();
        let at_boundary = if boundary.lsn >= base.lsn && boundary.lsn <= last.lsn {
            match wal.position_at(boundary.lsn) {
                Ok(p) => p,
                Err(e) => {
                    discard_best_effort(&self.store, &self.tmp_dir);
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let verdict = match check_boundary(boundary, base, last, at_boundary, epochs) {
            Ok(v) => v,
            Err(conflict) => {
                tracing::error!(%conflict, "snapshot boundary conflicts with the WAL history");
                discard_best_effort(&self.store, &self.tmp_dir);
                return Err(conflict.into());
            }
        };
        let installed = self.store.publish(&self.tmp_dir, boundary)?;
        // Commit point passed: from here a crash is completed by `recover`.
        wal.reset_to(boundary)?;
        self.store.remove_older_than(boundary.lsn)?;
        tracing::info!(
            ?verdict,
            "snapshot installed; WAL restarts after the boundary"
        );
        Ok(InstallOutcome { installed, verdict })
    }

    /// Throws the verified snapshot away without installing it.
    pub fn discard(self) -> Result<(), SnapshotError> {
        remove_tmp(&self.store, &self.tmp_dir)
    }
}

/// Progress of a [`SnapshotReceiver`].
#[derive(Debug)]
pub enum ReceiveProgress<S: Storage> {
    /// An offer was accepted; chunks are expected.
    Started {
        /// The offered boundary.
        boundary: Position,
        /// Chunks to come.
        chunk_count: u64,
    },
    /// A chunk was verified and written.
    Chunk {
        /// Chunks received so far.
        received: u64,
        /// Chunks in all.
        chunk_count: u64,
    },
    /// The snapshot is complete and verified: call [`VerifiedSnapshot::commit`].
    Complete(VerifiedSnapshot<S>),
}

/// The replica's side of a transfer: feeds offer, chunks and end into an
/// [`Install`], enforcing their order. Any error discards the partial
/// snapshot; so does [`SnapshotReceiver::session_ended`] (FM-X.8).
#[derive(Debug)]
pub struct SnapshotReceiver<S: Storage> {
    store: SnapshotStore<S>,
    install: Option<Install<S>>,
}

impl<S: Storage> SnapshotReceiver<S> {
    /// A receiver installing into `store`.
    pub fn new(store: SnapshotStore<S>) -> SnapshotReceiver<S> {
        SnapshotReceiver {
            store,
            install: None,
        }
    }

    /// Whether a transfer is in progress.
    pub fn in_progress(&self) -> bool {
        self.install.is_some()
    }

    /// Handles the next transfer message.
    pub fn on_item(
        &mut self,
        item: &crate::transfer::TransferItem,
    ) -> Result<ReceiveProgress<S>, SnapshotError> {
        use crate::transfer::TransferItem;
        match item {
            TransferItem::Offer(offer) => {
                if self.install.is_some() {
                    self.session_ended()?;
                    return Err(InvalidSnapshot::Sequence {
                        detail: "a second offer during a transfer".into(),
                    }
                    .into());
                }
                let inst = self.store.begin_install(offer)?;
                let chunk_count = inst.header().chunk_count();
                self.install = Some(inst);
                Ok(ReceiveProgress::Started {
                    boundary: offer.boundary,
                    chunk_count,
                })
            }
            TransferItem::Chunk(chunk) => {
                let Some(inst) = self.install.as_mut() else {
                    return Err(InvalidSnapshot::Sequence {
                        detail: format!("chunk {} without an offer", chunk.index),
                    }
                    .into());
                };
                if let Err(e) = inst.push_chunk(chunk) {
                    self.session_ended()?;
                    return Err(e);
                }
                Ok(ReceiveProgress::Chunk {
                    received: inst.next_index(),
                    chunk_count: inst.header().chunk_count(),
                })
            }
            TransferItem::End(end) => {
                let Some(inst) = self.install.take() else {
                    return Err(InvalidSnapshot::Sequence {
                        detail: "end without an offer".into(),
                    }
                    .into());
                };
                Ok(ReceiveProgress::Complete(inst.finish(end)?))
            }
        }
    }

    /// The session ended (or the transfer failed): discard the partial snapshot.
    pub fn session_ended(&mut self) -> Result<(), SnapshotError> {
        match self.install.take() {
            Some(inst) => inst.abort(),
            None => Ok(()),
        }
    }
}
