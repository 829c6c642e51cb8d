//! The [`LogSource`] over the WAL: [`WalLog`] over a `SharedWal`, read by the primary
//! executor in production and in the simulator alike.

use std::cell::Cell;
use std::sync::Arc;

use walship_wal::{Lsn, Position, SharedWal, Storage, WalError, WalReader};

use crate::core::{LogBatch, LogSource};

/// Readers kept open for sequential shipping (one per replica stream, plus slack).
const MAX_CACHED_READERS: usize = 8;
/// The newest records kept in memory by the WAL for shipping (`Wal::set_tail_cache_bytes`):
/// a replica keeping up reads each synced batch from there instead of mapping the segment
/// again; one further behind is read through a reader.
pub const TAIL_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// The primary's log seen through a [`SharedWal`]: readers are cached per stream position so
/// a replica catching up reads sequentially from the mmap, and batches are cut at the durable
/// lsn. Call [`WalLog::refresh`] before handing it to the core so [`LogSource::durable`] is
/// current.
pub struct WalLog<S: Storage> {
    wal: Arc<SharedWal<S>>,
    /// The durable lsn as of the last refresh (what the core ships up to).
    durable_lsn: Lsn,
    /// The full durable position, computed on demand (it may need a read of the WAL).
    durable_pos: Cell<Position>,
    readers: Vec<WalReader<S>>,
    /// Boundary of the newest installed snapshot.
    newest_snapshot: Option<Position>,
}

impl<S: Storage> std::fmt::Debug for WalLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalLog")
            .field("durable_lsn", &self.durable_lsn)
            .field("readers", &self.readers.len())
            .finish()
    }
}

impl<S: Storage> WalLog<S> {
    /// Wraps the shared WAL, enables its tail cache ([`TAIL_CACHE_BYTES`]) and reads its
    /// durable position.
    pub fn new(wal: Arc<SharedWal<S>>) -> Result<WalLog<S>, WalError> {
        wal.with(|w| w.set_tail_cache_bytes(TAIL_CACHE_BYTES));
        let durable_lsn = wal.durable_lsn();
        let log = WalLog {
            wal,
            durable_lsn,
            durable_pos: Cell::new(Position::ZERO),
            readers: Vec::new(),
            newest_snapshot: None,
        };
        log.durable_pos.set(log.durable_position(durable_lsn)?);
        Ok(log)
    }

    /// Sets the boundary of the newest installed snapshot ([`LogSource::newest_snapshot`]).
    pub fn set_newest_snapshot(&mut self, boundary: Option<Position>) {
        self.newest_snapshot = boundary;
    }

    /// The shared WAL.
    pub fn wal(&self) -> &Arc<SharedWal<S>> {
        &self.wal
    }

    /// Re-reads the durable lsn of the WAL (cheap: an atomic load; the full position is read
    /// only when [`LogSource::durable`] asks for it).
    pub fn refresh(&mut self) {
        self.durable_lsn = self.wal.durable_lsn();
    }

    fn durable_position(&self, lsn: Lsn) -> Result<Position, WalError> {
        let pos = self.wal.with(|w| {
            let last = w.last();
            if last.lsn == lsn {
                Ok(Some(last))
            } else {
                w.position_at(lsn)
            }
        })?;
        // The durable lsn is always retained and <= last: a missing position is a WAL bug.
        pos.ok_or(WalError::OutOfRange {
            lsn,
            min: 0,
            max: self.wal.last().lsn,
        })
    }

    fn take_reader(&mut self, from_lsn: Lsn) -> Result<WalReader<S>, WalError> {
        if let Some(i) = self
            .readers
            .iter()
            .position(|r| r.position().lsn + 1 == from_lsn && r.end_lsn() >= from_lsn)
        {
            return Ok(self.readers.swap_remove(i));
        }
        self.wal.reader(from_lsn)
    }

    fn keep_reader(&mut self, reader: WalReader<S>) {
        if self.readers.len() >= MAX_CACHED_READERS {
            self.readers.remove(0);
        }
        self.readers.push(reader);
    }
}

impl<S: Storage> LogSource for WalLog<S> {
    fn position_at(&mut self, lsn: Lsn) -> Result<Option<Position>, WalError> {
        self.wal.with(|w| w.position_at(lsn))
    }

    fn durable(&self) -> Position {
        let cached = self.durable_pos.get();
        if cached.lsn == self.durable_lsn {
            return cached;
        }
        match self.durable_position(self.durable_lsn) {
            Ok(p) => {
                self.durable_pos.set(p);
                p
            }
            Err(e) => {
                // Conservative: an older durable position claims less, never more.
                tracing::warn!(lsn = self.durable_lsn, error = %e, "cannot read the durable position");
                cached
            }
        }
    }

    fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    fn first_lsn(&self) -> Lsn {
        self.wal.with(|w| w.first_lsn())
    }

    fn newest_snapshot(&self) -> Option<Position> {
        self.newest_snapshot
    }

    fn read_batch(
        &mut self,
        from_lsn: Lsn,
        max_bytes: usize,
    ) -> Result<Option<LogBatch>, WalError> {
        if from_lsn == 0 || from_lsn > self.durable_lsn {
            return Ok(None);
        }
        // What was just synced is still in memory: no mapping of the segment per batch.
        let cached = self.wal.read(|w| {
            w.tail_batch(from_lsn, self.durable_lsn, max_bytes)
                .map(|b| (b.first_lsn, b.count, b.last, b.bytes.to_vec()))
        });
        if cached.is_some() {
            return Ok(cached);
        }
        let mut reader = self.take_reader(from_lsn)?;
        let batch = match reader.next_batch(max_bytes) {
            Some(b) => b?,
            None => {
                // A cached reader can only end early if the WAL shrank under it: start afresh.
                reader = self.wal.reader(from_lsn)?;
                match reader.next_batch(max_bytes) {
                    Some(b) => b?,
                    None => return Ok(None),
                }
            }
        };
        assert_eq!(batch.first_lsn, from_lsn, "WAL reader returned another lsn");
        if batch.last.lsn <= self.durable_lsn {
            let out = (
                batch.first_lsn,
                batch.count,
                batch.last,
                batch.bytes().to_vec(),
            );
            self.keep_reader(reader);
            return Ok(Some(out));
        }
        // The reader saw records written after the last sync: ship only the durable prefix
        // (the reader is now ahead of the stream and is dropped).
        let durable_lsn = self.durable_lsn;
        let mut len = 0usize;
        let mut count = 0u32;
        let mut last = Position::ZERO;
        for rec in batch.records() {
            if rec.lsn() > durable_lsn {
                break;
            }
            len += rec.bytes().len();
            count += 1;
            last = rec.position();
        }
        assert!(
            count > 0,
            "from_lsn <= durable, so the first record is durable"
        );
        Ok(Some((from_lsn, count, last, batch.bytes()[..len].to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::sim::SimStorage;
    use walship_wal::{decode_record, Wal, WalOptions};

    fn sim_wal(records: usize) -> Wal<SimStorage> {
        let storage = SimStorage::new(7);
        let (mut wal, _) = Wal::open(storage, std::path::Path::new("/w"), WalOptions::default())
            .expect("open sim wal");
        for i in 0..records {
            wal.append(format!("record {i}").as_bytes())
                .expect("append");
        }
        wal
    }

    #[test]
    fn wal_log_ships_only_the_durable_prefix_and_reuses_its_reader() {
        let mut wal = sim_wal(10);
        wal.sync().expect("sync");
        wal.append(b"not durable").expect("append");
        let shared = SharedWal::new(wal);
        let mut log = WalLog::new(shared.clone()).expect("log");
        assert_eq!(log.durable().lsn, 10);
        let (first, count, last, bytes) = log.read_batch(1, 64).expect("read").expect("batch");
        assert_eq!(first, 1);
        assert!(count >= 1 && last.lsn == u64::from(count));
        assert_eq!(decode_record(&bytes, 1024).expect("valid").lsn(), 1);
        let (first, _, last, _) = log
            .read_batch(last.lsn + 1, 1 << 20)
            .expect("read")
            .expect("batch");
        assert!(first > 1);
        assert_eq!(last.lsn, 10, "cut at the durable lsn");
        assert_eq!(log.read_batch(11, 1 << 20).expect("read"), None);
        shared.wait_durable(11).expect("sync");
        log.refresh();
        let (first, count, _, _) = log.read_batch(11, 1 << 20).expect("read").expect("batch");
        assert_eq!((first, count), (11, 1));
        assert_eq!(log.position_at(0).expect("pos"), Some(Position::ZERO));
        assert_eq!(log.position_at(12).expect("pos"), None);
    }

    #[test]
    fn records_written_after_the_log_opened_ship_from_the_tail_cache_only_up_to_durable() {
        let wal = sim_wal(0);
        let shared = SharedWal::new(wal);
        let mut log = WalLog::new(shared.clone()).expect("log");
        shared.append_batch(&[b"a", b"b"]).expect("append");
        shared.wait_durable(2).expect("sync");
        shared.append(b"c, not durable").expect("append");
        log.refresh();
        let cached = shared.read(|w| w.tail_batch(1, 3, 1 << 20).map(|b| b.count));
        assert_eq!(cached, Some(3), "the three records are in the tail cache");
        let (first, count, last, bytes) = log.read_batch(1, 1 << 20).expect("read").expect("batch");
        assert_eq!(
            (first, count, last.lsn),
            (1, 2, 2),
            "cut at the durable lsn"
        );
        assert_eq!(decode_record(&bytes, 1024).expect("valid").payload(), b"a");
        assert_eq!(log.read_batch(3, 1 << 20).expect("read"), None);
    }
}
