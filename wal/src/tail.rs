//! [`TailCache`]: the bytes of the records most recently written to the active segment,
//! kept in memory so a primary ships what it has just synced without mapping the segment
//! again for every batch.
//!
//! Why: a [`crate::WalReader`] reads up to the log end it saw when it was created, so a
//! primary shipping each group sync as it completes needs a new reader per batch, and on
//! the real file system each one is an open, a stat, an mmap of the whole preallocated
//! segment and, when an older reader is dropped, a munmap (a TLB shootdown across the
//! process's CPUs). That cost ~0.1 ms per commit on the 2-vCPU bench machine, between the
//! primary's fdatasync and the frame leaving (BENCHMARKS.md, issue 14). Reading the same
//! bytes from memory is the same on every [`crate::Storage`], so the simulator runs this
//! path too.
//!
//! What stays true: the cache holds exactly the bytes `write_at` stored for consecutive
//! records of the active segment (a copy taken after the write succeeded), so a batch it
//! hands out is byte for byte what a reader of the segment would return. It is cleared
//! whenever those bytes may stop being the log's: a segment roll (batches never span
//! segments), a failed write, a rewrite of the tail (`truncate_tail`, `reset_to`). It knows
//! nothing of durability: the caller bounds what it reads by the durable lsn (a primary
//! ships only what it has synced, FM-3.1). Disabled (capacity 0) unless
//! [`crate::Wal::set_tail_cache_bytes`] enables it.

use std::collections::VecDeque;

use crate::record::{Lsn, Position};

/// Consecutive records of one segment, back to back, bounded by a byte capacity.
#[derive(Debug, Default)]
pub(crate) struct TailCache {
    /// Most live bytes kept; 0 disables the cache.
    capacity_bytes: usize,
    /// The records' bytes; `bytes[0]` is at stream offset `origin`. Bytes before the
    /// first live record are dead and dropped in bulk.
    bytes: Vec<u8>,
    origin: u64,
    /// Each live record's position and stream offset, lsn order, lsns consecutive.
    records: VecDeque<(Position, u64)>,
}

/// A run of consecutive cached records, as one contiguous slice.
#[derive(Debug, PartialEq, Eq)]
pub struct TailBatch<'a> {
    /// lsn of the first record.
    pub first_lsn: Lsn,
    /// Number of records.
    pub count: u32,
    /// The last record's identity.
    pub last: Position,
    /// The stored bytes of the records, back to back.
    pub bytes: &'a [u8],
}

impl TailCache {
    /// Sets the capacity (0 disables and empties the cache).
    pub(crate) fn set_capacity(&mut self, capacity_bytes: usize) {
        self.capacity_bytes = capacity_bytes;
        self.trim();
    }

    /// Forgets every record.
    pub(crate) fn clear(&mut self) {
        self.origin += self.bytes.len() as u64;
        self.bytes.clear();
        self.records.clear();
    }

    fn end_offset(&self) -> u64 {
        self.origin + self.bytes.len() as u64
    }

    /// Records `bytes`, just written back to back after the cached records and described
    /// by `staged` (position, length, control flag), in order.
    pub(crate) fn push(&mut self, bytes: &[u8], staged: &[(Position, u64, bool)]) {
        if self.capacity_bytes == 0 || staged.is_empty() {
            return;
        }
        debug_assert_eq!(
            staged.iter().map(|s| s.1).sum::<u64>(),
            bytes.len() as u64,
            "the staged lengths describe the written bytes"
        );
        let follows = self
            .records
            .back()
            .is_none_or(|(p, _)| p.lsn.checked_add(1) == Some(staged[0].0.lsn));
        if !follows {
            // Only a caller bug gets here (the WAL clears the cache whenever its tail is
            // rewritten); a gap must never be served as consecutive records.
            debug_assert!(follows, "cached records must be consecutive");
            self.clear();
        }
        let mut at = self.end_offset();
        for &(pos, len, _) in staged {
            self.records.push_back((pos, at));
            at += len;
        }
        self.bytes.extend_from_slice(bytes);
        self.trim();
    }

    /// Drops the oldest records beyond the capacity, and the dead bytes once they
    /// outweigh it (amortised: each byte is moved at most once per capacity written).
    fn trim(&mut self) {
        let end = self.end_offset();
        while let Some(&(_, start)) = self.records.front() {
            if end - start <= self.capacity_bytes as u64 {
                break;
            }
            self.records.pop_front();
        }
        let live_from = self.records.front().map_or(end, |&(_, s)| s);
        let dead = (live_from - self.origin) as usize;
        if dead > self.capacity_bytes || self.records.is_empty() {
            self.bytes.drain(..dead);
            self.origin = live_from;
        }
    }

    /// The cached records from `from_lsn` on, none above `up_to_lsn`, at most `max_bytes`
    /// of them (at least one, even if larger). `None` unless `from_lsn` is cached and
    /// `from_lsn <= up_to_lsn`.
    pub(crate) fn batch(
        &self,
        from_lsn: Lsn,
        up_to_lsn: Lsn,
        max_bytes: usize,
    ) -> Option<TailBatch<'_>> {
        let &(first, _) = self.records.front()?;
        if from_lsn < first.lsn || from_lsn > up_to_lsn {
            return None;
        }
        let i = usize::try_from(from_lsn - first.lsn).ok()?;
        let &(first_pos, start) = self.records.get(i)?;
        debug_assert_eq!(first_pos.lsn, from_lsn, "cached lsns are consecutive");
        let end_of = |k: usize| self.records.get(k + 1).map_or(self.end_offset(), |r| r.1);
        let mut last = first_pos;
        let mut end = end_of(i);
        let mut count = 1u32;
        for k in i + 1..self.records.len() {
            let (pos, _) = self.records[k];
            let next_end = end_of(k);
            if pos.lsn > up_to_lsn || next_end - start > max_bytes as u64 || count == u32::MAX {
                break;
            }
            last = pos;
            end = next_end;
            count += 1;
        }
        let lo = (start - self.origin) as usize;
        let hi = (end - self.origin) as usize;
        Some(TailBatch {
            first_lsn: from_lsn,
            count,
            last,
            bytes: &self.bytes[lo..hi],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lsn: Lsn) -> Position {
        Position {
            lsn,
            epoch: 1,
            crc: lsn as u32 ^ 0xABCD,
        }
    }

    /// Pushes records `lsns` of `len` bytes each, byte value = lsn.
    fn push(c: &mut TailCache, lsns: std::ops::RangeInclusive<Lsn>, len: u64) {
        let mut bytes = Vec::new();
        let mut staged = Vec::new();
        for l in lsns {
            bytes.extend(std::iter::repeat_n(l as u8, len as usize));
            staged.push((pos(l), len, false));
        }
        c.push(&bytes, &staged);
    }

    #[test]
    fn disabled_cache_serves_nothing() {
        let mut c = TailCache::default();
        push(&mut c, 1..=3, 10);
        assert_eq!(c.batch(1, 3, 1 << 20), None);
    }

    #[test]
    fn batch_is_cut_at_up_to_lsn_and_max_bytes_and_holds_at_least_one_record() {
        let mut c = TailCache::default();
        c.set_capacity(1 << 20);
        push(&mut c, 5..=9, 10);
        let b = c.batch(6, 8, 1 << 20).expect("cached");
        assert_eq!((b.first_lsn, b.count, b.last), (6, 3, pos(8)));
        assert_eq!(b.bytes.len(), 30);
        assert_eq!((b.bytes[0], b.bytes[29]), (6, 8));
        let b = c.batch(6, 9, 25).expect("cached");
        assert_eq!((b.count, b.last), (2, pos(7)));
        let b = c.batch(6, 9, 3).expect("cached");
        assert_eq!(
            (b.count, b.bytes.len()),
            (1, 10),
            "one record even if larger"
        );
        assert_eq!(c.batch(4, 9, 1 << 20), None, "before the cache");
        assert_eq!(c.batch(10, 10, 1 << 20), None, "after the cache");
        assert_eq!(c.batch(9, 8, 1 << 20), None, "above up_to_lsn");
    }

    #[test]
    fn capacity_drops_the_oldest_records_and_keeps_the_bytes_aligned() {
        let mut c = TailCache::default();
        c.set_capacity(35);
        for l in 1..=20 {
            push(&mut c, l..=l, 10);
            let b = c.batch(l, l, 1 << 20).expect("newest cached");
            assert_eq!(b.bytes, &[l as u8; 10][..]);
        }
        assert_eq!(c.batch(17, 20, 1 << 20), None, "dropped");
        let b = c.batch(18, 20, 1 << 20).expect("cached");
        assert_eq!(b.count, 3);
        assert_eq!(b.bytes[..10], [18u8; 10]);
        assert_eq!(b.bytes[20..], [20u8; 10]);
        assert!(c.bytes.len() <= 2 * 35 + 10, "dead bytes are dropped");
    }

    #[test]
    fn clear_forgets_and_the_next_push_starts_afresh() {
        let mut c = TailCache::default();
        c.set_capacity(1 << 20);
        push(&mut c, 1..=3, 10);
        c.clear();
        assert_eq!(c.batch(1, 3, 1 << 20), None);
        push(&mut c, 2..=4, 7);
        let b = c.batch(2, 4, 1 << 20).expect("cached");
        assert_eq!((b.count, b.bytes.len(), b.bytes[0]), (3, 21, 2));
    }
}
