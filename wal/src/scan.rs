//! Local recovery: the scan `Wal::open` runs over every segment, and the
//! decision table that tells a torn tail (cut: damage at the very end of the
//! log, which the WAL cannot tell from an unsynced write) from corruption (refuse to open and say where). The table is normative in
//! `spec/wal-format.md`, "Local recovery".

use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, CorruptionReport, RefusedCut, WalError};
use crate::record::{
    bit_flip_not_torn, check_successor, decode_record, ChainError, Lsn, Position, RecordError,
    RecordHeader, KNOWN_RECORD_FLAGS, RECORD_HEADER_LEN,
};
use crate::segment::{classify_name, DirEntryKind, SegmentHeader, SegmentMeta, SEGMENT_HEADER_LEN};
use crate::storage::{Storage, StorageFile};

/// What the recovery scan found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenReport {
    /// The log holds no record and never did (it starts at lsn 1 chaining to [`Position::ZERO`]).
    Empty,
    /// Every segment verified; nothing was cut.
    Clean {
        /// The last record (or the reset boundary if no record follows it).
        last: Position,
    },
    /// The last segment ended in a torn write or a damaged last record, which was cut.
    /// The WAL cannot tell whether it had been synced (and acknowledged): the caller
    /// compares `last` with its commit watermark (`spec/wal-format.md`, "What the scan
    /// cannot see").
    TornTailCut {
        /// The segment that was cut.
        segment: PathBuf,
        /// Offset the segment was cut at (its new length).
        offset: u64,
        /// Bytes removed.
        bytes_cut: u64,
        /// The last record after the cut.
        last: Position,
    },
}

/// What a read-only scan ([`inspect`]) found: what `Wal::open` would see and do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The segments that verified, oldest first (after a cut, as open would leave them).
    pub segments: Vec<crate::segment::SegmentInfo>,
    /// The record before the first retained one.
    pub base: Position,
    /// The last record that verified.
    pub last: Position,
    /// A torn tail `open` would cut: (segment, offset, bytes).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Ignored files and superseded segments `open` would remove.
    pub notes: Vec<String>,
}

/// Runs the recovery scan without changing anything (no directory creation,
/// no cut, no removal): for operator tools (`walship-recover inspect|verify`).
/// Errors exactly where `Wal::open` would (`Corruption` naming the place); a
/// missing directory is `WalError::Io` with `NotFound`.
pub fn inspect<S: Storage>(
    storage: &S,
    dir: &Path,
    max_record_bytes: u32,
) -> Result<Inspection, WalError> {
    let rec = recover(storage, dir, max_record_bytes, true, 0)?;
    let mut segments: Vec<crate::segment::SegmentInfo> =
        rec.segments.iter().map(Into::into).collect();
    if let (Some(last), Some((path, offset, _))) = (segments.last_mut(), rec.cut.as_ref()) {
        debug_assert_eq!(&last.path, path);
        last.len_bytes = *offset;
    }
    let (base, last) = rec.bounds();
    Ok(Inspection {
        segments,
        base,
        last,
        torn_tail: rec.cut,
        notes: rec.notes,
    })
}

/// A reader of every retained record of the WAL in `dir`, without changing
/// anything on disk (no cut, no removal): what [`inspect`] verified, up to its
/// `last` (a torn tail `open` would cut is not read). For a node that must
/// look at its log (e.g. its configuration records) before any role opens it.
/// An absent directory reads as an empty log.
pub fn read_only_reader<S: Storage + Clone>(
    storage: &S,
    dir: &Path,
    max_record_bytes: u32,
) -> Result<crate::reader::WalReader<S>, WalError> {
    if !storage
        .exists(dir)
        .map_err(|e| WalError::io("exists", dir, e))?
    {
        return Ok(crate::reader::WalReader::empty(
            storage.clone(),
            max_record_bytes,
            Position::ZERO,
        ));
    }
    let rec = recover(storage, dir, max_record_bytes, true, 0)?;
    let (base, last) = rec.bounds();
    let segs = rec
        .segments
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| (s.path.clone(), SEGMENT_HEADER_LEN as u64, s.end_offset))
        .collect();
    crate::reader::WalReader::new(
        storage.clone(),
        max_record_bytes,
        segs,
        base,
        base.lsn.saturating_add(1),
        last.lsn,
    )
}

/// Segments that verified, plus what the scan noticed on the way.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) cut: Option<(PathBuf, u64, u64)>,
    pub(crate) notes: Vec<String>,
}

impl Recovered {
    /// The record before the first retained one, and the last record that verified.
    fn bounds(&self) -> (Position, Position) {
        let base = self
            .segments
            .first()
            .map(|s| s.header.prev)
            .unwrap_or(Position::ZERO);
        let last = self
            .segments
            .last()
            .map(|s| s.last)
            .unwrap_or(Position::ZERO);
        (base, last)
    }
}

/// How a damaged tail of the last segment is judged.
enum TailVerdict {
    Torn,
    Corrupt(CorruptionKind, String, String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |e| WalError::io(op, path, e)
}

fn corruption(
    segment: &Path,
    offset: u64,
    lsn: Option<Lsn>,
    kind: CorruptionKind,
    expected: String,
    found: String,
) -> WalError {
    let r = CorruptionReport {
        segment: segment.to_path_buf(),
        offset,
        lsn,
        kind,
        expected,
        found,
    };
    tracing::error!(segment = %r.segment.display(), offset, lsn, kind = %kind, "{r}");
    WalError::Corruption(r)
}

/// The corruption kind and expected/found texts for a chain error.
pub(crate) fn chain_facts(prev: Position, e: &ChainError) -> (CorruptionKind, String, String) {
    match *e {
        ChainError::Duplicate { found_lsn, .. } if prev.lsn == Lsn::MAX => (
            CorruptionKind::ChainDuplicate,
            format!("no record after lsn {} (lsns never wrap)", prev.lsn),
            format!("lsn {found_lsn}"),
        ),
        ChainError::Gap {
            expected_lsn,
            found_lsn,
        } => (
            CorruptionKind::ChainGap,
            format!("lsn {expected_lsn}"),
            format!("lsn {found_lsn}"),
        ),
        ChainError::Duplicate {
            expected_lsn,
            found_lsn,
        } => (
            CorruptionKind::ChainDuplicate,
            format!("lsn {expected_lsn}"),
            format!("lsn {found_lsn}"),
        ),
        ChainError::ChainBreak {
            expected_prev_crc,
            found_prev_crc,
            ..
        } => (
            CorruptionKind::ChainBreak,
            format!("prev_crc {expected_prev_crc:#010x}"),
            format!("prev_crc {found_prev_crc:#010x}"),
        ),
        ChainError::EpochRegression {
            last_epoch,
            found_epoch,
            ..
        } => (
            CorruptionKind::ChainEpochRegression,
            format!("epoch >= {last_epoch}"),
            format!("epoch {found_epoch}"),
        ),
    }
}

/// The corruption kind and expected/found texts for a record error.
pub(crate) fn record_facts(e: &RecordError) -> (CorruptionKind, String, String) {
    match *e {
        RecordError::Truncated { need, have } => (
            CorruptionKind::RecordTruncated,
            format!("{need} record bytes"),
            format!("{have} bytes to end of segment"),
        ),
        RecordError::TooLarge { len, max } => (
            CorruptionKind::RecordTooLarge,
            format!("payload_len <= {max}"),
            format!("payload_len {len}"),
        ),
        RecordError::Checksum { stored, computed } => (
            CorruptionKind::RecordChecksum,
            format!("crc {computed:#010x}"),
            format!("crc {stored:#010x}"),
        ),
        RecordError::BadFlags { found } => (
            CorruptionKind::RecordBadFlags,
            "flags 0, or 1 (control) in a segment of format 3+".to_string(),
            format!("flags {found:#x}"),
        ),
        RecordError::BadControl { ref error } => (
            CorruptionKind::RecordBadControl,
            "a valid control record body".to_string(),
            error.to_string(),
        ),
    }
}

/// First offset after `from` at which a whole crc-valid record starts, if any.
///
/// Candidates are pre-filtered on defined flags and a length that fits before
/// EOF, so the crc is computed almost only where a record really starts: the
/// search stays linear even over megabytes of garbage.
fn later_valid_record(data: &[u8], from: usize, max_record_bytes: u32) -> Option<usize> {
    let last_start = data.len().checked_sub(RECORD_HEADER_LEN)?;
    // A valid record has lsn >= 1, so it starts before the last non-zero byte:
    // a preallocated zero tail is not searched byte by byte.
    let last_start = last_start.min(last_nonzero_end(data).saturating_sub(1));
    (from..=last_start).find(|&o| {
        let rest = &data[o..];
        match RecordHeader::parse(rest) {
            Some(h)
                if h.flags & !KNOWN_RECORD_FLAGS == 0
                    && h.lsn != 0
                    && h.payload_len <= max_record_bytes
                    && h.record_len() <= rest.len() =>
            {
                decode_record(rest, max_record_bytes).is_ok()
            }
            _ => false,
        }
    })
}

/// Length of `data` up to and including its last non-zero byte (0 if all zero).
fn last_nonzero_end(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Judges damage found at `offset` of the LAST segment (decision table rows 1-4).
/// `preallocated`: the segment is format version 2 (zero-filled at creation;
/// the caller has already taken an all-zero rest as the unwritten tail).
fn judge_tail(
    data: &[u8],
    offset: usize,
    err: &RecordError,
    max_record_bytes: u32,
    preallocated: bool,
) -> TailVerdict {
    // Row 2: zeros from here to EOF (file length reached the disk before the data did).
    if data[offset..].iter().all(|&b| b == 0) {
        return TailVerdict::Torn;
    }
    match err {
        // Row 4: a length above the maximum is never a torn write of ours.
        RecordError::TooLarge { .. }
        | RecordError::BadFlags { .. }
        | RecordError::BadControl { .. } => {
            let (k, e, f) = record_facts(err);
            TailVerdict::Corrupt(k, e, f)
        }
        // Rows 1 and 3: torn only if nothing crc-valid follows; otherwise bytes
        // written (and possibly acknowledged) after the damage would be lost.
        RecordError::Truncated { .. } | RecordError::Checksum { .. } => {
            match later_valid_record(data, offset + 1, max_record_bytes) {
                None if preallocated && matches!(err, RecordError::Checksum { .. }) => {
                    // Row 3c: in a zero-filled segment a torn write only leaves
                    // zeros; one flipped bit that no tear can explain is bit rot.
                    let len = RecordHeader::parse(&data[offset..]).map_or(0, |h| h.record_len());
                    match bit_flip_not_torn(&data[offset..offset + len], offset as u64) {
                        None => TailVerdict::Torn,
                        Some(f) => {
                            let (k, e, fnd) = record_facts(err);
                            TailVerdict::Corrupt(
                                k,
                                e,
                                format!(
                                    "{fnd}; flipping bit {} of the byte at offset {} makes the record crc-valid, \
                                     and a torn write into the zero-filled segment cannot leave that bit {} (bit rot, not a torn write)",
                                    f.bit,
                                    offset + f.byte,
                                    if f.on_disk { "set" } else { "cleared with non-zero bytes after it in its sector" }
                                ),
                            )
                        }
                    }
                }
                None => TailVerdict::Torn,
                Some(o) => {
                    let (k, e, f) = record_facts(err);
                    TailVerdict::Corrupt(
                        k,
                        e,
                        format!("{f}, and a crc-valid record follows at offset {o}"),
                    )
                }
            }
        }
    }
}

/// Creates `dir` and missing ancestors, syncing the parent of every created
/// directory: otherwise a power loss could drop the WAL directory with every
/// segment in it, although each segment was synced.
fn create_dir_durably<S: Storage>(storage: &S, dir: &Path) -> Result<(), WalError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || storage.exists(d).map_err(io_err("exists", d))? {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    storage
        .create_dir_all(dir)
        .map_err(io_err("create_dir_all", dir))?;
    // Deepest first is fine: each sync makes one new entry durable, and all
    // of them are done before any segment is created.
    for d in missing {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage
                .sync_dir(parent)
                .map_err(io_err("sync_dir", parent))?;
        }
    }
    Ok(())
}

/// Runs the recovery scan over `dir` (created if missing). Cuts a torn tail
/// (set_len + sync_data) before returning; removes segments superseded by a
/// completed `reset_to` (lower generation). A cut that would leave the log's
/// last lsn below `protected_lsn` is [`WalError::CutRefused`], and then nothing
/// is cut or removed.
pub(crate) fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    max_record_bytes: u32,
    read_only: bool,
    protected_lsn: Lsn,
) -> Result<Recovered, WalError> {
    if !read_only {
        create_dir_durably(storage, dir)?;
    }
    let names = storage.list(dir).map_err(io_err("list", dir))?;
    let mut notes = Vec::new();
    let mut seg_names: Vec<(Lsn, PathBuf)> = Vec::new();
    for name in names {
        let path = dir.join(&name);
        match classify_name(&name) {
            DirEntryKind::Segment(lsn) => seg_names.push((lsn, path)),
            DirEntryKind::BadSegmentName => {
                return Err(corruption(
                    &path,
                    0,
                    None,
                    CorruptionKind::SegmentBadName,
                    "<first_lsn as 20 decimal digits, >= 1>.wal".to_string(),
                    format!("{name:?}"),
                ))
            }
            DirEntryKind::Other => {
                tracing::warn!(file = %path.display(), "ignoring non-segment file in WAL directory");
                notes.push(format!("ignored non-segment file {}", path.display()));
            }
        }
    }
    seg_names.sort();

    // Headers first: each must verify and agree with its name.
    let mut headers = Vec::with_capacity(seg_names.len());
    for (lsn, path) in &seg_names {
        let map = storage.map(path).map_err(io_err("map", path))?;
        let (header, version) = SegmentHeader::decode_versioned(path, &map).map_err(|r| {
            tracing::error!("{r}");
            WalError::Corruption(r)
        })?;
        if header.first_lsn != *lsn {
            return Err(corruption(
                path,
                0,
                None,
                CorruptionKind::SegmentNameMismatch,
                format!("first_lsn {lsn} (from the file name)"),
                format!("first_lsn {}", header.first_lsn),
            ));
        }
        headers.push((path.clone(), header, version));
    }

    // Segments of a lower generation are leftovers of a reset_to that completed
    // (its new segment is durable): they are no longer part of the log. They are
    // removed only once the scan has accepted the log (below): a refused open
    // leaves every file as it was.
    let mut superseded = Vec::new();
    if let Some(max_gen) = headers.iter().map(|(_, h, _)| h.generation).max() {
        for (path, h, _) in headers.iter().filter(|(_, h, _)| h.generation < max_gen) {
            tracing::warn!(segment = %path.display(), generation = h.generation, max_gen, "segment superseded by reset_to");
            notes.push(format!(
                "{} segment {} of superseded generation {} (current {max_gen})",
                if read_only { "would remove" } else { "removed" },
                path.display(),
                h.generation
            ));
            superseded.push(path.clone());
        }
        headers.retain(|(_, h, _)| h.generation == max_gen);
    }

    let n = headers.len();
    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(n);
    let mut cut = None;
    for (i, (path, header, version)) in headers.into_iter().enumerate() {
        let is_last = i + 1 == n;
        if let Some(prev_seg) = segments.last() {
            let prev_last = prev_seg.last;
            let Some(expected_first) = prev_last.lsn.checked_add(1) else {
                // Nothing follows lsn u64::MAX (lsns never wrap): this segment overlaps.
                return Err(corruption(
                    &path,
                    0,
                    None,
                    CorruptionKind::SegmentOverlap,
                    format!(
                        "no segment after {} (it ends at lsn {}, the last lsn)",
                        prev_seg.path.display(),
                        prev_last.lsn
                    ),
                    format!("first_lsn {}", header.first_lsn),
                ));
            };
            if header.first_lsn != expected_first {
                let kind = if header.first_lsn > expected_first {
                    CorruptionKind::SegmentMissing
                } else {
                    CorruptionKind::SegmentOverlap
                };
                return Err(corruption(
                    &path,
                    0,
                    Some(expected_first),
                    kind,
                    format!(
                        "first_lsn {expected_first} (after {})",
                        prev_seg.path.display()
                    ),
                    format!("first_lsn {}", header.first_lsn),
                ));
            }
            if header.prev != prev_last {
                return Err(corruption(
                    &path,
                    0,
                    Some(expected_first),
                    CorruptionKind::SegmentPrevMismatch,
                    format!("prev {prev_last}"),
                    format!("prev {}", header.prev),
                ));
            }
        }
        let map = storage.map(&path).map_err(io_err("map", &path))?;
        let data: &[u8] = &map;
        let mut meta = SegmentMeta::new(path.clone(), header, version);
        let mut offset = SEGMENT_HEADER_LEN;
        while offset < data.len() {
            // None after a record with lsn u64::MAX: no record may follow it.
            let expected_lsn = meta.last.lsn.checked_add(1);
            // A control record is a record only in a segment of format 3 or later;
            // in an older segment its flag is damage like any undefined bit.
            let decoded = decode_record(&data[offset..], max_record_bytes).and_then(|v| {
                if v.is_control() && !meta.allows_control() {
                    Err(RecordError::BadFlags {
                        found: v.header().flags,
                    })
                } else {
                    Ok(v)
                }
            });
            match decoded {
                Ok(view) => {
                    if let Err(e) = check_successor(meta.last, &view.header()) {
                        let (k, ex, f) = chain_facts(meta.last, &e);
                        return Err(corruption(&path, offset as u64, expected_lsn, k, ex, f));
                    }
                    let len = view.bytes().len();
                    meta.note_record(view.position(), offset as u64, len as u64);
                    offset += len;
                }
                Err(e) => {
                    if meta.preallocated() && data[offset..].iter().all(|&b| b == 0) {
                        // Version 2, row 2: zeros from here to EOF are the
                        // preallocated tail that no record reached (or whose
                        // write reached no byte of the disk): the end of the
                        // records, in any segment. Nothing to cut.
                        break;
                    }
                    if !is_last {
                        // Row 6: a sealed segment was synced whole before the next one existed.
                        let (k, ex, f) = record_facts(&e);
                        return Err(corruption(
                            &path,
                            offset as u64,
                            expected_lsn,
                            k,
                            ex,
                            format!("{f} in sealed segment"),
                        ));
                    }
                    match judge_tail(data, offset, &e, max_record_bytes, meta.preallocated()) {
                        TailVerdict::Torn => {
                            // Version 1 cuts to EOF (set_len); version 2 zeroes the
                            // bytes up to the last non-zero one (the file keeps
                            // its preallocated length).
                            let end = if meta.preallocated() {
                                offset + last_nonzero_end(&data[offset..])
                            } else {
                                data.len()
                            };
                            cut = Some((
                                path.clone(),
                                offset as u64,
                                (end - offset) as u64,
                                meta.preallocated(),
                            ));
                            break;
                        }
                        TailVerdict::Corrupt(k, ex, f) => {
                            return Err(corruption(&path, offset as u64, expected_lsn, k, ex, f));
                        }
                    }
                }
            }
        }
        segments.push(meta);
    }

    if let Some((path, offset, bytes_cut, _)) = cut.as_ref() {
        let log_end = segments.last().map_or(0, |s| s.last.lsn);
        if log_end < protected_lsn {
            // The damaged bytes may be an acknowledged record: keep every byte for the
            // operator (spec/wal-format.md, "What the scan cannot see").
            let r = RefusedCut {
                segment: path.clone(),
                offset: *offset,
                bytes_cut: *bytes_cut,
                log_end,
                protected_lsn,
            };
            tracing::error!(segment = %path.display(), offset, bytes_cut, log_end, protected_lsn, "{r}");
            return Err(WalError::CutRefused(r));
        }
    }
    if !read_only && !superseded.is_empty() {
        for path in &superseded {
            storage
                .remove_file(path)
                .map_err(io_err("remove_file", path))?;
        }
        storage.sync_dir(dir).map_err(io_err("sync_dir", dir))?;
    }
    if let Some((path, offset, bytes_cut, preallocated)) = cut.as_ref().filter(|_| !read_only) {
        // The cut must be on disk before open returns: otherwise a second crash
        // could resurrect the torn bytes after new records were appended behind them.
        let f = storage.open(path, false).map_err(io_err("open", path))?;
        if *preallocated {
            // Zeroed, not shrunk: the tail stays preallocated and reads as unwritten.
            crate::wal::write_zeros(&f, *offset, offset + bytes_cut)
                .map_err(io_err("write_at", path))?;
        } else {
            f.set_len(*offset).map_err(io_err("set_len", path))?;
        }
        f.sync_data().map_err(io_err("sync_data", path))?;
        tracing::warn!(segment = %path.display(), offset, bytes_cut,
            "cut torn tail of the WAL (an unsynced write or a damaged last record: the WAL cannot tell; the node checks it against its commit watermark)");
    }
    Ok(Recovered {
        segments,
        cut: cut.map(|(p, o, b, _)| (p, o, b)),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_record;

    fn records(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        let mut prev = Position::ZERO;
        for lsn in 1..=n {
            prev = encode_record(lsn, 1, prev.crc, &[lsn as u8; 20], &mut v);
        }
        v
    }

    #[test]
    fn later_valid_record_finds_the_next_record_start() {
        let v = records(3);
        assert_eq!(later_valid_record(&v, 1, 1024), Some(52));
        assert_eq!(later_valid_record(&v, 53, 1024), Some(104));
        assert_eq!(later_valid_record(&v, 105, 1024), None);
        assert_eq!(later_valid_record(&v[..10], 0, 1024), None);
    }

    #[test]
    fn judge_tail_cuts_torn_and_zeroed_but_refuses_when_valid_data_follows() {
        let v = records(3);
        let torn = &v[..52 + 30];
        let e = RecordError::Truncated { need: 52, have: 30 };
        assert!(matches!(
            judge_tail(torn, 52, &e, 1024, false),
            TailVerdict::Torn
        ));
        let mut zeroed = v.clone();
        zeroed[52..].fill(0);
        let e = RecordError::Checksum {
            stored: 0,
            computed: 1,
        };
        assert!(matches!(
            judge_tail(&zeroed, 52, &e, 1024, false),
            TailVerdict::Torn
        ));
        let mut hole = v.clone();
        hole[60] ^= 1;
        assert!(matches!(
            judge_tail(&hole, 52, &e, 1024, false),
            TailVerdict::Corrupt(CorruptionKind::RecordChecksum, _, _)
        ));
        let e = RecordError::TooLarge {
            len: 5000,
            max: 1024,
        };
        assert!(matches!(
            judge_tail(&hole, 52, &e, 1024, false),
            TailVerdict::Corrupt(CorruptionKind::RecordTooLarge, _, _)
        ));
    }
}
