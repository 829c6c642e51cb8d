//! [`Wal`]: a segmented, crc-chained log in one directory. Opening runs the
//! recovery scan (`scan.rs`); appends and group commit live in `append.rs`;
//! readers in `reader.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, CorruptionReport, WalError};
use crate::reader::{verify_record_at, WalReader};
use crate::record::{Lsn, Position, DEFAULT_MAX_RECORD_BYTES};
use crate::scan::{recover, OpenReport};
use crate::segment::{
    segment_file_name, SegmentHeader, SegmentInfo, SegmentMeta, PREALLOC_CHUNK_BYTES,
    SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_LEN, TMP_SUFFIX,
};
use crate::storage::{Storage, StorageFile};
use crate::tail::{TailBatch, TailCache};

/// Default segment size (64 MiB).
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Options of a [`Wal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is sealed and a new one started when the next append would
    /// grow it past this size (a single larger record gets a segment of its own).
    pub segment_size_bytes: u64,
    /// Largest payload accepted by appends and by the recovery scan (default 4 MiB).
    pub max_record_bytes: u32,
    /// Epoch stamped on appended records. On open the WAL uses
    /// `max(epoch, epoch of the last record)`.
    pub epoch: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            epoch: 1,
        }
    }
}

/// How [`Wal::open_with`] may change the log while recovering it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Records at or below this lsn were acknowledged (the caller's commit watermark,
    /// `state/commit`). A torn-tail cut that would leave the log's last lsn below it is
    /// refused with [`WalError::CutRefused`] and nothing is cut or removed, so the damaged
    /// bytes stay for the operator. `0` (the default) protects nothing: open cuts as
    /// [`Wal::open`] does. A log that ends below it without a cut (e.g. an unwritten
    /// version 2 tail) is not judged here: nothing is destroyed, and the caller compares
    /// [`Wal::last`] with its watermark.
    pub protected_lsn: Lsn,
}

impl OpenOptions {
    /// The options a node opens its WAL with (FM-X.6), from its persisted commit watermark
    /// and the boundary lsn of its newest snapshot (0 if none): records up to the watermark
    /// are protected, unless the snapshot reaches it — recovery then ends the log at the
    /// boundary at least, so no cut can take it below the watermark.
    pub fn protecting_commit(commit_lsn: Lsn, snapshot_lsn: Lsn) -> OpenOptions {
        let protected_lsn = if snapshot_lsn >= commit_lsn {
            0
        } else {
            commit_lsn
        };
        OpenOptions { protected_lsn }
    }
}

/// A write-ahead log in one directory, generic over its [`Storage`].
///
/// Single-writer: `&mut self` for every change. For many concurrent appenders
/// sharing one fdatasync, wrap it in [`crate::SharedWal`].
pub struct Wal<S: Storage> {
    pub(crate) storage: S,
    pub(crate) dir: PathBuf,
    pub(crate) opts: WalOptions,
    /// Never empty; the last one is the active segment.
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) active: Arc<S::File>,
    pub(crate) epoch: u64,
    pub(crate) durable_lsn: Lsn,
    pub(crate) poisoned: bool,
    /// Reusable encode buffer: one write_at per append or per batch.
    pub(crate) buf: Vec<u8>,
    pub(crate) staged: Vec<(Position, u64, bool)>,
    /// Bumped whenever the log's files are rewritten (truncate_tail, reset_to),
    /// so a group-commit sync begun before cannot claim records it never saw.
    pub(crate) rewrite_era: u64,
    /// The newest records of the active segment, in memory (disabled unless
    /// [`Wal::set_tail_cache_bytes`] enables it).
    pub(crate) tail: TailCache,
    notes: Vec<String>,
}

impl<S: Storage> std::fmt::Debug for Wal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first_lsn", &self.first_lsn())
            .field("last", &self.last())
            .field("durable_lsn", &self.durable_lsn)
            .field("epoch", &self.epoch)
            .field("segments", &self.segments.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |e| WalError::io(op, path, e)
}

/// Creates a segment durably: header written to `<name>.tmp`, the rest of
/// the file zero-filled up to `preallocate_to` bytes (format version 2), the
/// file synced, renamed to `<name>`, directory synced. A crash leaves either
/// no segment or a whole verified header with a synced zero tail under the
/// segment name, never a half-written one.
///
/// Zeros are written, not `set_len`/`fallocate`d: a hole or an unwritten
/// extent still changes file-system metadata on the first write into it, and
/// that metadata is what makes an fdatasync of a growing file cost about twice
/// one of a file whose blocks already exist.
pub(crate) fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    header: SegmentHeader,
    preallocate_to: u64,
) -> Result<(SegmentMeta, S::File), WalError> {
    let name = segment_file_name(header.first_lsn);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let f = storage.open(&tmp, true).map_err(io_err("open", &tmp))?;
    f.set_len(0).map_err(io_err("set_len", &tmp))?;
    f.write_at(0, &header.encode())
        .map_err(io_err("write_at", &tmp))?;
    write_zeros(&f, SEGMENT_HEADER_LEN as u64, preallocate_to).map_err(io_err("write_at", &tmp))?;
    f.sync_data().map_err(io_err("sync_data", &tmp))?;
    drop(f);
    storage
        .rename(&tmp, &path)
        .map_err(io_err("rename", &tmp))?;
    // The new name must be durable before any record in it is called durable.
    storage.sync_dir(dir).map_err(io_err("sync_dir", dir))?;
    let file = storage.open(&path, false).map_err(io_err("open", &path))?;
    tracing::debug!(segment = %path.display(), first_lsn = header.first_lsn, generation = header.generation, preallocate_to, "created segment");
    Ok((SegmentMeta::new(path, header, SEGMENT_FORMAT_VERSION), file))
}

/// Writes zeros over `[from, to)` of `f` (nothing if `to <= from`), one
/// `write_at` per [`PREALLOC_CHUNK_BYTES`]. Not synced.
pub(crate) fn write_zeros<F: StorageFile>(f: &F, from: u64, to: u64) -> std::io::Result<()> {
    if to <= from {
        return Ok(());
    }
    let zeros = vec![0u8; PREALLOC_CHUNK_BYTES.min((to - from) as usize)];
    let mut off = from;
    while off < to {
        let n = (zeros.len() as u64).min(to - off) as usize;
        f.write_at(off, &zeros[..n])?;
        off += n as u64;
    }
    Ok(())
}

impl<S: Storage> Wal<S> {
    /// Opens (creating if needed) the WAL in `dir` and runs the recovery scan:
    /// every segment header and record is verified, a torn tail of the last
    /// segment is cut (and synced) and reported, anything else damaged is a
    /// [`WalError::Corruption`] naming segment, offset, lsn, expected and found.
    /// Idempotent: opening again reports `Clean` (or `Empty`).
    pub fn open(
        storage: S,
        dir: &Path,
        opts: WalOptions,
    ) -> Result<(Wal<S>, OpenReport), WalError> {
        Wal::open_with(storage, dir, opts, OpenOptions::default())
    }

    /// [`Wal::open`], refusing a torn-tail cut that would leave the log below
    /// `open.protected_lsn` ([`WalError::CutRefused`] naming the segment, the offset,
    /// the would-be log end and the protected lsn; every WAL file is left byte for byte
    /// as it was).
    pub fn open_with(
        storage: S,
        dir: &Path,
        opts: WalOptions,
        open: OpenOptions,
    ) -> Result<(Wal<S>, OpenReport), WalError> {
        let span = tracing::info_span!("wal_open", dir = %dir.display(), epoch = opts.epoch, protected_lsn = open.protected_lsn);
        let _g = span.enter();
        if opts.segment_size_bytes <= SEGMENT_HEADER_LEN as u64 {
            return Err(WalError::InvalidOptions(format!(
                "segment_size_bytes {} must exceed the {SEGMENT_HEADER_LEN}-byte segment header",
                opts.segment_size_bytes
            )));
        }
        let rec = recover(
            &storage,
            dir,
            opts.max_record_bytes,
            false,
            open.protected_lsn,
        )?;
        let mut segments = rec.segments;
        let fresh = segments.is_empty();
        if fresh {
            let header = SegmentHeader {
                first_lsn: 1,
                generation: 1,
                created_epoch: opts.epoch,
                prev: Position::ZERO,
            };
            let (meta, _file) = create_segment(&storage, dir, header, opts.segment_size_bytes)?;
            segments.push(meta);
        }
        let last_seg = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let active = storage
            .open(&last_seg, false)
            .map_err(io_err("open", &last_seg))?;
        // Whatever the scan found may still sit only in the page cache (a
        // process crash keeps it): sync once so all of it counts as durable.
        active.sync_data().map_err(io_err("sync_data", &last_seg))?;
        let last = segments.last().map(|s| s.last).unwrap_or(Position::ZERO);
        let report = match rec.cut {
            Some((segment, offset, bytes_cut)) => OpenReport::TornTailCut {
                segment,
                offset,
                bytes_cut,
                last,
            },
            None if last == Position::ZERO => OpenReport::Empty,
            None => OpenReport::Clean { last },
        };
        let wal = Wal {
            storage,
            dir: dir.to_path_buf(),
            opts,
            segments,
            active: Arc::new(active),
            epoch: opts.epoch.max(last.epoch),
            durable_lsn: last.lsn,
            poisoned: false,
            buf: Vec::new(),
            staged: Vec::new(),
            rewrite_era: 0,
            tail: TailCache::default(),
            notes: rec.notes,
        };
        tracing::info!(
            first_lsn = wal.first_lsn(),
            last_lsn = last.lsn,
            segments = wal.segments.len(),
            ?report,
            "WAL opened"
        );
        Ok((wal, report))
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the WAL was opened with.
    pub fn options(&self) -> WalOptions {
        self.opts
    }

    /// The storage the WAL uses.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Files the recovery scan ignored or removed (non-segment files, segments
    /// superseded by a completed `reset_to`), one human-readable line each.
    pub fn open_notes(&self) -> &[String] {
        &self.notes
    }

    /// The last record (the reset boundary, or [`Position::ZERO`], if none follows it).
    pub fn last(&self) -> Position {
        self.active_meta().last
    }

    /// Highest lsn known to survive power loss.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// lsn of the first retained record (`last().lsn + 1` if the log holds none).
    pub fn first_lsn(&self) -> Lsn {
        // base is a segment header's prev, and headers decode only with prev.lsn ==
        // first_lsn - 1 (first_lsn >= 1) or are created by reset_to from a checked boundary.
        self.base().lsn + 1
    }

    /// The record before the first retained one (front truncation or reset boundary).
    pub fn base(&self) -> Position {
        self.segments[0].header.prev
    }

    /// Epoch stamped on appended records.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sets the epoch stamped on later appends (a promotion). Appends fail with
    /// [`WalError::EpochBehindLog`] while it is below the last record's epoch.
    pub fn set_epoch(&mut self, epoch: u64) {
        tracing::info!(old = self.epoch, new = epoch, "WAL epoch set");
        self.epoch = epoch;
    }

    /// Whether an earlier sync failed (every call now returns [`WalError::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Descriptions of the retained segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.iter().map(SegmentInfo::from).collect()
    }

    pub(crate) fn active_meta(&self) -> &SegmentMeta {
        match self.segments.last() {
            Some(s) => s,
            None => unreachable!("a WAL always has an active segment"),
        }
    }

    pub(crate) fn check_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    pub(crate) fn poison(&mut self, why: &str) {
        if !self.poisoned {
            tracing::error!(dir = %self.dir.display(), last_lsn = self.last().lsn, durable_lsn = self.durable_lsn, "WAL poisoned: {why}");
        }
        self.poisoned = true;
    }

    /// Index of the segment holding `lsn` (which must be retained and <= last).
    fn segment_index(&self, lsn: Lsn) -> usize {
        let i = self.segments.partition_point(|s| s.header.first_lsn <= lsn);
        assert!(i > 0, "lsn {lsn} precedes the first segment");
        // Empty segments (possible only as the active one) never hold lsn <= last.
        i - 1
    }

    /// Finds and verifies record `lsn`: returns (segment index, offset, position, len).
    pub(crate) fn locate(&self, lsn: Lsn) -> Result<(usize, u64, Position, u64), WalError> {
        let si = self.segment_index(lsn);
        let seg = &self.segments[si];
        let entry = seg.seek(lsn);
        let map = self
            .storage
            .map(&seg.path)
            .map_err(io_err("map", &seg.path))?;
        let data = &map[..(seg.end_offset as usize).min(map.len())];
        let mut offset = entry.offset;
        let mut prev = entry.prev;
        loop {
            let view = verify_record_at(&seg.path, data, offset, prev, self.opts.max_record_bytes)?;
            let len = view.bytes().len() as u64;
            if view.lsn() == lsn {
                return Ok((si, offset, view.position(), len));
            }
            prev = view.position();
            offset += len;
        }
    }

    /// The identity of record `lsn`, verified from disk. `lsn == 0` or the lsn
    /// just before the first retained record give [`Wal::base`]. `None` if the
    /// record is not retained or beyond the end.
    pub fn position_at(&self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        self.check_poisoned()?;
        let base = self.base();
        let last = self.last();
        if lsn == 0 || lsn == base.lsn {
            return Ok(Some(base));
        }
        if lsn < base.lsn || lsn > last.lsn {
            return Ok(None);
        }
        if lsn == last.lsn {
            return Ok(Some(last));
        }
        let (_, _, pos, _) = self.locate(lsn)?;
        Ok(Some(pos))
    }

    /// Keeps up to `bytes` of the newest records of the active segment in memory
    /// (0, the default, disables it), so [`Wal::tail_batch`] can hand out what was
    /// just written without mapping the segment (see [`crate::tail`]).
    pub fn set_tail_cache_bytes(&mut self, bytes: usize) {
        self.tail.set_capacity(bytes);
    }

    /// The records from `from_lsn` on, none above `up_to_lsn`, at most `max_bytes` of
    /// them (at least one), if the tail cache holds `from_lsn`: the same bytes a
    /// [`Wal::reader`] would return, from memory. `None` otherwise (read them with a
    /// reader). Knows nothing of durability: the caller bounds `up_to_lsn`.
    pub fn tail_batch(
        &self,
        from_lsn: Lsn,
        up_to_lsn: Lsn,
        max_bytes: usize,
    ) -> Option<TailBatch<'_>> {
        if self.poisoned {
            return None;
        }
        self.tail
            .batch(from_lsn, up_to_lsn.min(self.last().lsn), max_bytes)
    }

    /// A reader of the records from `from_lsn` (0 means the first retained) up
    /// to `last()` at this call, verified as they are read.
    pub fn reader(&self, from_lsn: Lsn) -> Result<WalReader<S>, WalError> {
        self.check_poisoned()?;
        let from = from_lsn.max(self.first_lsn()).max(1);
        if from_lsn != 0 && from_lsn < self.first_lsn() {
            return Err(WalError::NotRetained {
                lsn: from_lsn,
                first_lsn: self.first_lsn(),
            });
        }
        let last = self.last();
        if from > last.lsn {
            return Ok(WalReader::empty(
                self.storage.clone(),
                self.opts.max_record_bytes,
                last,
            ));
        }
        let si = self.segment_index(from);
        let entry = self.segments[si].seek(from);
        let segs = self.segments[si..]
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(k, s)| {
                let start = if k == 0 {
                    entry.offset
                } else {
                    SEGMENT_HEADER_LEN as u64
                };
                (s.path.clone(), start, s.end_offset)
            })
            .collect();
        WalReader::new(
            self.storage.clone(),
            self.opts.max_record_bytes,
            segs,
            entry.prev,
            from,
            last.lsn,
        )
    }

    /// Removes whole segments whose records are all below `before_lsn` (never
    /// the active segment). Oldest first, so a crash leaves a contiguous suffix.
    pub fn truncate_front(&mut self, before_lsn: Lsn) -> Result<(), WalError> {
        self.check_poisoned()?;
        let mut removed = 0usize;
        while self.segments.len() > 1 && self.segments[1].header.first_lsn <= before_lsn {
            let path = self.segments[0].path.clone();
            self.storage
                .remove_file(&path)
                .map_err(io_err("remove_file", &path))?;
            // One directory sync per removal: an unsynced removal may persist or
            // not, independently of the others, and a gap would be corruption.
            self.sync_dir_or_poison()?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(
                before_lsn,
                removed,
                first_lsn = self.first_lsn(),
                "truncated WAL front"
            );
        }
        Ok(())
    }

    fn sync_dir_or_poison(&mut self) -> Result<(), WalError> {
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            self.poison("directory sync failed");
            return Err(WalError::io("sync_dir", &self.dir, e));
        }
        Ok(())
    }

    /// Removes every record after `after_lsn` (operator rewind only; the
    /// caller enforces the commit watermark). Later segments are removed newest
    /// first; the segment holding `after_lsn` is rewritten (copy, sync, rename,
    /// sync dir) rather than shrunk in place, so live mappings stay valid.
    /// `after_lsn` must be in `base().lsn ..= last().lsn`.
    pub fn truncate_tail(&mut self, after_lsn: Lsn) -> Result<(), WalError> {
        self.check_poisoned()?;
        let base = self.base();
        let last = self.last();
        if after_lsn < base.lsn || after_lsn > last.lsn {
            return Err(WalError::OutOfRange {
                lsn: after_lsn,
                min: base.lsn,
                max: last.lsn,
            });
        }
        if after_lsn == last.lsn {
            return Ok(());
        }
        let span = tracing::info_span!("wal_truncate_tail", after_lsn, last_lsn = last.lsn);
        let _g = span.enter();
        self.rewrite_era += 1;
        self.tail.clear();
        while self.segments.len() > 1 && self.active_meta().header.first_lsn > after_lsn {
            let path = self.active_meta().path.clone();
            self.storage
                .remove_file(&path)
                .map_err(io_err("remove_file", &path))?;
            // Newest first, each removal synced: the log stays a contiguous prefix.
            self.sync_dir_or_poison()?;
            self.segments.pop();
        }
        let seg_index = self.segments.len() - 1;
        let (cut, new_last) = if after_lsn < self.active_meta().header.first_lsn {
            (SEGMENT_HEADER_LEN as u64, self.active_meta().header.prev)
        } else {
            let (_, off, pos, len) = self.locate(after_lsn)?;
            (off + len, pos)
        };
        let path = self.active_meta().path.clone();
        let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
        let map = self.storage.map(&path).map_err(io_err("map", &path))?;
        if (map.len() as u64) < cut {
            return Err(WalError::io(
                "map",
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment shorter than its records",
                ),
            ));
        }
        let preallocated = self.active_meta().preallocated();
        // Version 2: the bytes after the last record are zeros to the end of
        // the file (the unwritten tail); version 1: the file ends there.
        let nothing_after_cut = if preallocated {
            map[cut as usize..].iter().all(|&b| b == 0)
        } else {
            map.len() as u64 == cut
        };
        if nothing_after_cut {
            // after_lsn ends its segment: removing the later segments was all.
            let file = self
                .storage
                .open(&path, false)
                .map_err(io_err("open", &path))?;
            if let Err(e) = file.sync_data() {
                self.poison("sync of the new last segment failed");
                return Err(WalError::io("sync_data", &path, e));
            }
            self.active = Arc::new(file);
            let seg = &mut self.segments[seg_index];
            seg.last = new_last;
            seg.end_offset = cut;
            self.durable_lsn = after_lsn;
            tracing::warn!(after_lsn, "truncated WAL tail");
            return Ok(());
        }
        let f = self
            .storage
            .open(&tmp, true)
            .map_err(io_err("open", &tmp))?;
        f.set_len(0).map_err(io_err("set_len", &tmp))?;
        f.write_at(0, &map[..cut as usize])
            .map_err(io_err("write_at", &tmp))?;
        if preallocated {
            // Keep the file's preallocated length, zero after the cut.
            write_zeros(&f, cut, map.len() as u64).map_err(io_err("write_at", &tmp))?;
        }
        if let Err(e) = f.sync_data() {
            self.poison("sync of rewritten segment failed");
            return Err(WalError::io("sync_data", &tmp, e));
        }
        drop(f);
        drop(map);
        self.storage
            .rename(&tmp, &path)
            .map_err(io_err("rename", &tmp))?;
        self.sync_dir_or_poison()?;
        let file = self
            .storage
            .open(&path, false)
            .map_err(io_err("open", &path))?;
        self.active = Arc::new(file);
        let seg = &mut self.segments[seg_index];
        seg.index.retain(|e| e.lsn <= after_lsn);
        seg.last = new_last;
        seg.end_offset = cut;
        // Everything kept is in a synced file now.
        self.durable_lsn = after_lsn;
        tracing::warn!(after_lsn, "truncated WAL tail");
        Ok(())
    }

    /// Starts a fresh, empty log whose first record will be `boundary.lsn + 1`
    /// chaining to `boundary.crc` (snapshot install). The new segment carries a
    /// higher generation and is made durable before the old segments are
    /// removed; a crash in between leaves old-generation leftovers that the
    /// next open removes.
    ///
    /// A boundary at lsn `u64::MAX` is [`WalError::OutOfRange`] (no record could follow it).
    pub fn reset_to(&mut self, boundary: Position) -> Result<(), WalError> {
        self.check_poisoned()?;
        let Some(first_lsn) = boundary.lsn.checked_add(1) else {
            return Err(WalError::OutOfRange {
                lsn: boundary.lsn,
                min: 0,
                max: Lsn::MAX - 1,
            });
        };
        let active = self.active_meta();
        let Some(generation) = active.header.generation.checked_add(1) else {
            // Only a damaged (crc-valid) header can hold the last generation.
            return Err(WalError::Corruption(CorruptionReport {
                segment: active.path.clone(),
                offset: 0,
                lsn: None,
                kind: CorruptionKind::SegmentHeaderField,
                expected: format!("generation below {}", u64::MAX),
                found: format!("generation {}", active.header.generation),
            }));
        };
        let span = tracing::info_span!("wal_reset_to", lsn = boundary.lsn, epoch = boundary.epoch);
        let _g = span.enter();
        self.rewrite_era += 1;
        self.tail.clear();
        let header = SegmentHeader {
            first_lsn,
            generation,
            created_epoch: self.epoch,
            prev: boundary,
        };
        let (meta, file) = match create_segment(
            &self.storage,
            &self.dir,
            header,
            self.opts.segment_size_bytes,
        ) {
            Ok(x) => x,
            Err(e) => {
                if matches!(&e, WalError::Io { op, .. } if op.starts_with("sync")) {
                    self.poison("sync while creating a segment failed");
                }
                return Err(e);
            }
        };
        let old: Vec<PathBuf> = self
            .segments
            .drain(..)
            .map(|s| s.path)
            .filter(|p| *p != meta.path)
            .collect();
        self.segments.push(meta);
        self.active = Arc::new(file);
        self.durable_lsn = boundary.lsn;
        for p in &old {
            self.storage
                .remove_file(p)
                .map_err(io_err("remove_file", p))?;
        }
        self.sync_dir_or_poison()?;
        tracing::info!(first_lsn, generation, "WAL reset to boundary");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::OpenOptions;

    #[test]
    fn protecting_commit_protects_the_watermark_unless_a_snapshot_reaches_it() {
        assert_eq!(OpenOptions::protecting_commit(10, 0).protected_lsn, 10);
        assert_eq!(OpenOptions::protecting_commit(10, 5).protected_lsn, 10);
        assert_eq!(OpenOptions::protecting_commit(10, 10).protected_lsn, 0);
        assert_eq!(OpenOptions::protecting_commit(10, 12).protected_lsn, 0);
        assert_eq!(OpenOptions::protecting_commit(0, 0).protected_lsn, 0);
    }
}
