//! [`WalReader`]: iterates records from an lsn across segments through
//! [`Mapping`]s (mmap on the real file system), verifying crc and chain as it
//! goes and handing out zero-copy views.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionReport, WalError};
use crate::record::{check_successor, decode_record, Lsn, Position, RecordView};
use crate::scan::{chain_facts, record_facts};
use crate::storage::{Mapping, Storage};

/// Verifies the record at `offset` of `data` (a segment's bytes up to its
/// known end) as the successor of `prev`.
pub(crate) fn verify_record_at<'a>(
    segment: &Path,
    data: &'a [u8],
    offset: u64,
    prev: Position,
    max_record_bytes: u32,
) -> Result<RecordView<'a>, WalError> {
    let fail = |(kind, expected, found): (_, String, String)| {
        let r = CorruptionReport {
            segment: segment.to_path_buf(),
            offset,
            lsn: prev.lsn.checked_add(1),
            kind,
            expected,
            found,
        };
        tracing::error!("{r}");
        WalError::Corruption(r)
    };
    let rest = data.get(offset as usize..).unwrap_or(&[]);
    let view = decode_record(rest, max_record_bytes).map_err(|e| fail(record_facts(&e)))?;
    check_successor(prev, &view.header()).map_err(|e| fail(chain_facts(prev, &e)))?;
    Ok(view)
}

/// One verified record, owning a cheap clone of the mapping it lives in (zero-copy).
#[derive(Clone, Debug)]
pub struct OwnedRecord {
    bytes: Mapping,
}

impl OwnedRecord {
    /// The record as a view (header accessors, payload).
    pub fn view(&self) -> RecordView<'_> {
        RecordView::from_verified(&self.bytes)
    }
    /// The whole stored record (header + payload).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        RecordView::from_verified(&self.bytes).payload()
    }
    /// Log sequence number.
    pub fn lsn(&self) -> Lsn {
        self.view().lsn()
    }
    /// The record's identity.
    pub fn position(&self) -> Position {
        self.view().position()
    }
    /// The underlying mapping slice (hand it on without copying).
    pub fn mapping(&self) -> &Mapping {
        &self.bytes
    }
}

/// Whole consecutive verified records as ONE contiguous zero-copy slice.
#[derive(Clone, Debug)]
pub struct RecordBatchView {
    bytes: Mapping,
    /// lsn of the first record.
    pub first_lsn: Lsn,
    /// The last record's identity.
    pub last: Position,
    /// Number of records.
    pub count: u32,
}

impl RecordBatchView {
    /// The stored bytes of the records, back to back (exactly what is shipped).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The underlying mapping slice (hand it on without copying).
    pub fn mapping(&self) -> &Mapping {
        &self.bytes
    }
    /// The records of the batch (already verified).
    pub fn records(&self) -> impl Iterator<Item = RecordView<'_>> {
        let mut rest: &[u8] = &self.bytes;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let v = RecordView::from_verified(rest);
            let len = v.header().record_len();
            let (rec, tail) = rest.split_at(len);
            rest = tail;
            Some(RecordView::from_verified(rec))
        })
    }
}

struct ReaderSegment {
    path: PathBuf,
    start: u64,
    end: u64,
}

struct Current {
    path: PathBuf,
    map: Mapping,
    offset: u64,
    end: u64,
}

/// Iterates verified records from an lsn to the end the WAL had when the
/// reader was created. Fused: after an error or the end, it returns `None`.
pub struct WalReader<S: Storage> {
    storage: S,
    max_record_bytes: u32,
    segments: VecDeque<ReaderSegment>,
    current: Option<Current>,
    prev: Position,
    end_lsn: Lsn,
    failed: bool,
}

impl<S: Storage> std::fmt::Debug for WalReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("prev", &self.prev)
            .field("end_lsn", &self.end_lsn)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<S: Storage> WalReader<S> {
    pub(crate) fn empty(storage: S, max_record_bytes: u32, last: Position) -> WalReader<S> {
        WalReader {
            storage,
            max_record_bytes,
            segments: VecDeque::new(),
            current: None,
            prev: last,
            end_lsn: last.lsn,
            failed: false,
        }
    }

    /// `segments`: (path, start offset, end offset) of each segment to read;
    /// the first starts at an index point whose previous record is `prev`.
    /// Records before `from` are read (verified) and skipped.
    pub(crate) fn new(
        storage: S,
        max_record_bytes: u32,
        segments: Vec<(PathBuf, u64, u64)>,
        prev: Position,
        from: Lsn,
        end_lsn: Lsn,
    ) -> Result<WalReader<S>, WalError> {
        let mut r = WalReader {
            storage,
            max_record_bytes,
            segments: segments
                .into_iter()
                .map(|(path, start, end)| ReaderSegment { path, start, end })
                .collect(),
            current: None,
            prev,
            end_lsn,
            failed: false,
        };
        while r.prev.lsn.saturating_add(1) < from {
            match r.next_view_range() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(r)
    }

    /// The last record returned (or the record before the first to come).
    pub fn position(&self) -> Position {
        self.prev
    }

    /// The lsn after which this reader stops.
    pub fn end_lsn(&self) -> Lsn {
        self.end_lsn
    }

    fn ensure_current(&mut self) -> Option<Result<(), WalError>> {
        loop {
            if let Some(c) = &self.current {
                if c.offset < c.end {
                    return Some(Ok(()));
                }
            }
            let seg = self.segments.pop_front()?;
            let map = match self.storage.map(&seg.path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Some(Err(WalError::NotRetained {
                        // prev.lsn < end_lsn <= u64::MAX here; saturating keeps the
                        // lower bound from wrapping.
                        lsn: self.prev.lsn.saturating_add(1),
                        first_lsn: self.prev.lsn.saturating_add(2),
                    }));
                }
                Err(e) => return Some(Err(WalError::io("map", &seg.path, e))),
            };
            if (map.len() as u64) < seg.end {
                return Some(Err(WalError::io(
                    "map",
                    &seg.path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("segment is {} bytes, records end at {}", map.len(), seg.end),
                    ),
                )));
            }
            self.current = Some(Current {
                path: seg.path,
                map,
                offset: seg.start,
                end: seg.end,
            });
        }
    }

    /// Verifies the next record and returns its byte range in the current mapping.
    fn next_view_range(&mut self) -> Option<Result<(u64, u64), WalError>> {
        if self.failed || self.prev.lsn >= self.end_lsn {
            return None;
        }
        match self.ensure_current() {
            None => {
                // The segment list ran out before end_lsn: the WAL promised more.
                self.failed = true;
                return Some(Err(WalError::NotRetained {
                    // prev.lsn < end_lsn <= u64::MAX here (checked above).
                    lsn: self.prev.lsn.saturating_add(1),
                    first_lsn: self.prev.lsn.saturating_add(2),
                }));
            }
            Some(Err(e)) => {
                self.failed = true;
                return Some(Err(e));
            }
            Some(Ok(())) => {}
        }
        let c = match &mut self.current {
            Some(c) => c,
            None => unreachable!("ensure_current set the current segment"),
        };
        let data = &c.map[..c.end as usize];
        match verify_record_at(&c.path, data, c.offset, self.prev, self.max_record_bytes) {
            Ok(view) => {
                let start = c.offset;
                let len = view.bytes().len() as u64;
                self.prev = view.position();
                c.offset += len;
                Some(Ok((start, start + len)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }

    /// Next verified record (crc + chain), zero-copy from the mapping. `None` at the end.
    pub fn next_record(&mut self) -> Option<Result<OwnedRecord, WalError>> {
        let (start, end) = match self.next_view_range()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let c = self.current.as_ref()?;
        Some(Ok(OwnedRecord {
            bytes: c.map.slice(start as usize..end as usize),
        }))
    }

    /// Up to `max_bytes` of whole consecutive records (at least one, even if
    /// larger) from one segment, as ONE contiguous zero-copy slice, each verified.
    pub fn next_batch(&mut self, max_bytes: usize) -> Option<Result<RecordBatchView, WalError>> {
        let (start, mut end) = match self.next_view_range()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let first_lsn = self.prev.lsn;
        let mut count = 1u32;
        loop {
            if self.prev.lsn >= self.end_lsn {
                break;
            }
            let Some(c) = self.current.as_ref() else {
                break;
            };
            if c.offset >= c.end {
                break; // batches never span segments
            }
            // Peek the next record's length before verifying it into the batch.
            let Some(h) =
                crate::record::RecordHeader::parse(&c.map[c.offset as usize..c.end as usize])
            else {
                break;
            };
            let next_len = h.record_len() as u64;
            if (end - start) + next_len > max_bytes as u64 {
                break;
            }
            match self.next_view_range() {
                Some(Ok((_, e))) => {
                    end = e;
                    count += 1;
                }
                Some(Err(_)) => {
                    // Hand out the verified records first; the next call
                    // re-verifies this record and returns its error.
                    self.failed = false;
                    break;
                }
                None => break,
            }
        }
        let c = self.current.as_ref()?;
        Some(Ok(RecordBatchView {
            bytes: c.map.slice(start as usize..end as usize),
            first_lsn,
            last: self.prev,
            count,
        }))
    }
}

impl<S: Storage> Iterator for WalReader<S> {
    type Item = Result<OwnedRecord, WalError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}
