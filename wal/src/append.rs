//! Appends, syncs and segment rolls of [`Wal`], and [`SharedWal`]: group
//! commit for many concurrent appenders sharing one fdatasync.
//!
//! Durability protocol (see `spec/wal-format.md`, "What is synced when"):
//! records are written with one `write_at` per append or per batch and are
//! durable once the active segment is `sync_data`ed; a segment is synced
//! whole (sealed) before the next segment is created; a failed sync poisons
//! the WAL for good, because after an fsync error the page cache may have
//! dropped the pages and a retry could falsely succeed.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::control::{ControlError, ControlRecord};
use crate::error::WalError;
use crate::reader::WalReader;
use crate::record::{
    check_successor, decode_record, encode_record, encode_record_with_flags, Lsn, Position,
    RecordHeader, FLAG_CONTROL,
};
use crate::segment::SegmentHeader;
use crate::storage::{Storage, StorageFile};
use crate::wal::{create_segment, write_zeros, Wal};

/// The first of `records` lsns after `last_lsn`; [`WalError::LsnExhausted`] if the last of
/// them would pass `u64::MAX` (lsns never wrap).
fn next_lsns(last_lsn: Lsn, records: u64) -> Result<Lsn, WalError> {
    match last_lsn.checked_add(records) {
        Some(_) => Ok(last_lsn + 1),
        None => Err(WalError::LsnExhausted { last_lsn, records }),
    }
}

impl<S: Storage> Wal<S> {
    fn check_appendable(&self) -> Result<(), WalError> {
        self.check_poisoned()?;
        let last_epoch = self.last().epoch;
        if self.epoch < last_epoch {
            return Err(WalError::EpochBehindLog {
                epoch: self.epoch,
                last_epoch,
            });
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<(), WalError> {
        if len > self.opts.max_record_bytes as usize {
            return Err(WalError::RecordTooLarge {
                len,
                max: self.opts.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Appends one record (lsn = last + 1, the WAL's epoch, prev_crc = last crc).
    /// Written, not durable: call [`Wal::sync`] (or use [`SharedWal`]).
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, WalError> {
        self.check_appendable()?;
        self.check_len(payload.len())?;
        let last = self.last();
        let lsn = next_lsns(last.lsn, 1)?;
        let mut buf = std::mem::take(&mut self.buf);
        let mut staged = std::mem::take(&mut self.staged);
        buf.clear();
        staged.clear();
        let pos = encode_record(lsn, self.epoch, last.crc, payload, &mut buf);
        staged.push((pos, buf.len() as u64, false));
        let r = self.write_staged(&buf, &staged);
        self.buf = buf;
        self.staged = staged;
        r.map(|()| pos.lsn)
    }

    /// Appends several records with one write per segment touched. Every
    /// length is checked before anything is written.
    pub fn append_batch(&mut self, payloads: &[&[u8]]) -> Result<RangeInclusive<Lsn>, WalError> {
        self.check_appendable()?;
        assert!(
            !payloads.is_empty(),
            "append_batch needs at least one payload"
        );
        for p in payloads {
            self.check_len(p.len())?;
        }
        // Every lsn of the batch exists: the `+ 1`s below cannot wrap.
        let first = next_lsns(self.last().lsn, payloads.len() as u64)?;
        let mut buf = std::mem::take(&mut self.buf);
        let mut staged = std::mem::take(&mut self.staged);
        buf.clear();
        staged.clear();
        let mut prev = self.last();
        for p in payloads {
            let before = buf.len();
            prev = encode_record(prev.lsn + 1, self.epoch, prev.crc, p, &mut buf);
            staged.push((prev, (buf.len() - before) as u64, false));
        }
        let r = self.write_staged(&buf, &staged);
        self.buf = buf;
        self.staged = staged;
        r.map(|()| first..=prev.lsn)
    }

    /// Replica path: verifies ONE shipped record (bounds, crc, flags, then
    /// lsn == last + 1, prev_crc == last crc, epoch not going back) and stores
    /// its bytes unchanged. Errors: [`WalError::Record`], [`WalError::Chain`],
    /// [`WalError::TrailingBytes`]; nothing is written on error.
    pub fn append_verified(&mut self, record: &[u8]) -> Result<Position, WalError> {
        if let Some(h) = RecordHeader::parse(record) {
            if h.payload_len <= self.opts.max_record_bytes && h.record_len() < record.len() {
                return Err(WalError::TrailingBytes {
                    expected: h.record_len(),
                    found: record.len(),
                });
            }
        }
        self.append_verified_batch(record)
    }

    /// Like [`Wal::append_verified`] for several concatenated records (a
    /// shipped batch): all are verified before any is written, then stored with
    /// one write per segment touched. Returns the last record's position.
    pub fn append_verified_batch(&mut self, records: &[u8]) -> Result<Position, WalError> {
        self.check_poisoned()?;
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        let mut prev = self.last();
        let mut off = 0usize;
        let verdict = loop {
            let view = match decode_record(&records[off..], self.opts.max_record_bytes) {
                Ok(v) => v,
                Err(e) => break Err(WalError::Record(e)),
            };
            if let Err(e) = check_successor(prev, &view.header()) {
                break Err(WalError::Chain(e));
            }
            prev = view.position();
            let len = view.bytes().len();
            staged.push((prev, len as u64, view.is_control()));
            off += len;
            if off == records.len() {
                break Ok(());
            }
        };
        let r = verdict.and_then(|()| self.write_staged(records, &staged));
        self.staged = staged;
        r.map(|()| prev)
    }

    /// Appends a control record ([`crate::control`]) of the WAL's epoch: the
    /// node's own record, never handed to an applier. A control record is
    /// stored only in a segment of format version 3: if the active segment is
    /// older it is sealed first (or, holding no record, replaced by a version 3
    /// one). Written, not durable, like [`Wal::append`].
    pub fn append_control(&mut self, control: &ControlRecord) -> Result<Position, WalError> {
        self.check_appendable()?;
        let last = self.last();
        let lsn = next_lsns(last.lsn, 1)?;
        if control.epoch() != self.epoch {
            return Err(WalError::InvalidControl(ControlError::EpochMismatch {
                lsn,
                body: control.epoch(),
                header: self.epoch,
            }));
        }
        let payload = control.encode().map_err(WalError::InvalidControl)?;
        self.check_len(payload.len())?;
        let mut buf = std::mem::take(&mut self.buf);
        let mut staged = std::mem::take(&mut self.staged);
        buf.clear();
        staged.clear();
        let pos =
            encode_record_with_flags(lsn, self.epoch, last.crc, FLAG_CONTROL, &payload, &mut buf);
        staged.push((pos, buf.len() as u64, true));
        let r = self.write_staged(&buf, &staged);
        self.buf = buf;
        self.staged = staged;
        r.map(|()| pos)
    }

    /// Writes encoded records `bytes` (described by `staged`: position, length
    /// and whether it is a control record, back to back) at the end of the log,
    /// rolling segments as needed (and before a control record that would land
    /// in a segment older than format version 3); one write_at per segment touched.
    fn write_staged(
        &mut self,
        bytes: &[u8],
        staged: &[(Position, u64, bool)],
    ) -> Result<(), WalError> {
        debug_assert_eq!(staged.iter().map(|s| s.1).sum::<u64>(), bytes.len() as u64);
        let seg_size = self.opts.segment_size_bytes;
        let mut i = 0usize;
        let mut buf_off = 0usize;
        while i < staged.len() {
            let seg = self.active_meta();
            let full = !seg.is_empty() && seg.end_offset + staged[i].1 > seg_size;
            let old_format = staged[i].2 && !seg.allows_control();
            if full || old_format {
                let made = if seg.is_empty() {
                    self.replace_empty_active()
                } else {
                    self.roll()
                };
                if let Err(e) = made {
                    if i > 0 {
                        // Part of this call is already in the log but the caller
                        // gets an error: only a restart can make that consistent.
                        self.poison("segment roll failed in the middle of a batch");
                    }
                    return Err(e);
                }
            }
            let start = self.active_meta().end_offset;
            let mut chunk = staged[i].1;
            let mut j = i + 1;
            let allows_control = self.active_meta().allows_control();
            while j < staged.len()
                && start + chunk + staged[j].1 <= seg_size
                && (allows_control || !staged[j].2)
            {
                chunk += staged[j].1;
                j += 1;
            }
            let slice = &bytes[buf_off..buf_off + chunk as usize];
            if let Err(e) = self.active.write_at(start, slice) {
                self.tail.clear();
                let path = self.active_meta().path.clone();
                // A partial write may have left bytes past the last record: cut them
                // (version 1) or zero them (version 2: the preallocated tail must
                // read as unwritten) so they can never be mistaken for log content.
                // If that fails too, or records of this call were already stored,
                // stop for good.
                let undone = if self.active_meta().preallocated() {
                    write_zeros(&*self.active, start, start + chunk).is_ok()
                } else {
                    self.active.set_len(start).is_ok()
                };
                if i > 0 || !undone {
                    self.poison("write failed and could not be undone");
                }
                return Err(WalError::io("write_at", path, e));
            }
            let seg = match self.segments.last_mut() {
                Some(s) => s,
                None => unreachable!("a WAL always has an active segment"),
            };
            let mut off = start;
            for &(pos, len, _) in &staged[i..j] {
                seg.note_record(pos, off, len);
                off += len;
            }
            self.tail.push(slice, &staged[i..j]);
            buf_off += chunk as usize;
            i = j;
        }
        Ok(())
    }

    /// Replaces the active segment, which holds no record and predates format
    /// version 3, by a version 3 segment with the same header (same name: the
    /// new file is created as `<name>.tmp`, synced and renamed over it, the
    /// directory synced), so a control record can be stored in it.
    fn replace_empty_active(&mut self) -> Result<(), WalError> {
        let meta = self.active_meta();
        assert!(
            meta.is_empty() && !meta.allows_control(),
            "only an empty pre-version-3 active segment is replaced"
        );
        let header = meta.header;
        self.tail.clear();
        match create_segment(
            &self.storage,
            &self.dir,
            header,
            self.opts.segment_size_bytes,
        ) {
            Ok((meta, file)) => {
                tracing::debug!(segment = %meta.path.display(), "replaced an empty segment by a format version 3 one");
                match self.segments.last_mut() {
                    Some(s) => *s = meta,
                    None => unreachable!("a WAL always has an active segment"),
                }
                self.active = Arc::new(file);
                Ok(())
            }
            Err(e) => {
                if matches!(&e, WalError::Io { op, .. } if op.starts_with("sync") || *op == "rename")
                {
                    self.poison("replacing an empty segment failed");
                }
                Err(e)
            }
        }
    }

    /// Seals the active segment (sync_data) and starts the next one.
    fn roll(&mut self) -> Result<(), WalError> {
        // Batches never span segments: the cache starts again with the next one.
        self.tail.clear();
        let last = self.last();
        let seg_size = self.opts.segment_size_bytes;
        let path = self.active_meta().path.clone();
        // Sealed segments are whole on disk before a later segment exists:
        // that is what lets recovery call any damage in them corruption.
        if let Err(e) = self.active.sync_data() {
            self.poison("sync while sealing a segment failed");
            return Err(WalError::io("sync_data", path, e));
        }
        self.durable_lsn = self.durable_lsn.max(last.lsn);
        let header = SegmentHeader {
            // Callers roll only before writing a record after `last`, which exists.
            first_lsn: next_lsns(last.lsn, 1)?,
            generation: self.active_meta().header.generation,
            created_epoch: self.epoch,
            prev: last,
        };
        match create_segment(&self.storage, &self.dir, header, seg_size) {
            Ok((meta, file)) => {
                tracing::debug!(sealed = %path.display(), next_first_lsn = header.first_lsn, "rolled WAL segment");
                self.segments.push(meta);
                self.active = Arc::new(file);
                Ok(())
            }
            Err(e) => {
                if matches!(&e, WalError::Io { op, .. } if op.starts_with("sync")) {
                    self.poison("sync while creating a segment failed");
                }
                Err(e)
            }
        }
    }

    /// Makes every record written so far durable (fdatasync of the active
    /// segment; earlier segments were synced when sealed). Returns the durable
    /// lsn. A failure poisons the WAL: never retried.
    pub fn sync(&mut self) -> Result<Lsn, WalError> {
        self.check_poisoned()?;
        let target = self.last().lsn;
        if target <= self.durable_lsn {
            return Ok(self.durable_lsn);
        }
        if let Err(e) = self.active.sync_data() {
            self.poison("sync failed");
            return Err(WalError::io(
                "sync_data",
                self.active_meta().path.clone(),
                e,
            ));
        }
        self.durable_lsn = target;
        Ok(target)
    }

    /// For a group-commit leader: the file to sync (outside the lock) and the
    /// lsn that sync makes durable; `None` if already durable.
    fn begin_sync(&self) -> Result<Option<SyncTicket<S>>, WalError> {
        self.check_poisoned()?;
        let target = self.last().lsn;
        if target <= self.durable_lsn {
            return Ok(None);
        }
        Ok(Some(SyncTicket {
            file: Arc::clone(&self.active),
            target,
            path: self.active_meta().path.clone(),
            rewrite_era: self.rewrite_era,
        }))
    }

    /// Records a leader's successful sync. If the log was rewritten meanwhile
    /// (truncate_tail, reset_to), the synced file may no longer hold `target`:
    /// nothing is claimed. Returns the durable lsn.
    fn finish_sync(&mut self, ticket: &SyncTicket<S>) -> Durable {
        if ticket.rewrite_era == self.rewrite_era {
            self.durable_lsn = self.durable_lsn.max(ticket.target);
        }
        self.durable()
    }

    /// The durable lsn with the rewrite era it belongs to (read under the append lock).
    fn durable(&self) -> Durable {
        Durable {
            lsn: self.durable_lsn,
            rewrite_era: self.rewrite_era,
        }
    }
}

/// What a group-commit leader syncs outside the append lock.
struct SyncTicket<S: Storage> {
    file: Arc<S::File>,
    target: Lsn,
    path: std::path::PathBuf,
    rewrite_era: u64,
}

/// A durable lsn read under the append lock, with the log's rewrite era then.
/// Within one era the WAL's durable lsn only grows; only a rewrite
/// (truncate_tail, reset_to: a new era) may lower it.
#[derive(Debug, Clone, Copy)]
struct Durable {
    lsn: Lsn,
    rewrite_era: u64,
}

/// An appender asleep until a sync covers its lsn (or it is asked to lead one).
#[derive(Debug)]
struct Sleeper {
    lsn: Lsn,
    thread: std::thread::Thread,
    /// Set (under the sync lock) by whoever removes the sleeper from the list and wakes
    /// it; the sleeper parks until it sees it (`park` may return spuriously).
    woken: Arc<AtomicBool>,
}

/// Group-commit bookkeeping of a [`SharedWal`].
#[derive(Debug, Default)]
struct SyncState {
    durable: Lsn,
    /// The rewrite era `durable` belongs to.
    rewrite_era: u64,
    leader_active: bool,
    /// Appenders asleep while a leader syncs, in the order they went to sleep.
    sleepers: Vec<Sleeper>,
    /// How many appenders the last round woke as covered, and the append count then:
    /// in a busy log they append again right away, and the next leader gives them a
    /// moment to do so (at most [`SharedWal::gather_cap`]) so one sync covers them all.
    woken_last: u64,
    appends_at_wake: u64,
    /// Duration of the last sync, which bounds that moment.
    last_sync: Duration,
    poisoned: bool,
}

thread_local! {
    /// This thread's wake-up flag (a thread waits on one [`SharedWal`] at a time).
    static WOKEN: Arc<AtomicBool> = Arc::new(AtomicBool::new(false));
}

type Listener = Arc<dyn Fn(Lsn) + Send + Sync>;

/// Group commit: many threads append concurrently and share one sync.
///
/// An appender writes its record under the append lock, then waits until its
/// lsn is durable. One waiter at a time becomes the sync leader: it takes the
/// active file and the last written lsn under the lock, releases the lock,
/// and fdatasyncs — while others keep appending — then wakes everyone whose
/// lsn it covered. The next waiter leads the next sync, covering everything
/// written meanwhile. A failed sync poisons the WAL for good.
///
/// No thread hop per record: appenders write and sync on their own threads.
/// Waiters park on their own thread and are woken one by one by the leader that
/// covered them (no condition variable, so no herd re-taking a mutex on each wake);
/// a woken waiter that was covered returns without taking any lock. When a round
/// ends with waiters it did not cover, ONE of them is woken to lead the next sync,
/// unless a thread already took the lead.
///
/// Gathering: the appenders a round wakes usually append again at once. The leader
/// of the next round waits for as many appends as that round woke, or at most a
/// quarter of the last sync's duration (capped at [`GATHER_CAP_MAX`]), yielding the
/// CPU meanwhile. With one appender it never waits (a round that woke nobody else).
pub struct SharedWal<S: Storage> {
    wal: Mutex<Wal<S>>,
    sync: Mutex<SyncState>,
    durable: AtomicU64,
    /// Records appended through [`SharedWal::append`] / [`SharedWal::append_batch`].
    appends: AtomicU64,
    listener: RwLock<Option<Listener>>,
}

/// The longest a leader waits for woken appenders to append again.
pub const GATHER_CAP_MAX: Duration = Duration::from_micros(200);

impl<S: Storage> std::fmt::Debug for SharedWal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWal")
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}

impl<S: Storage> SharedWal<S> {
    /// Wraps an open WAL.
    pub fn new(wal: Wal<S>) -> Arc<SharedWal<S>> {
        let Durable {
            lsn: durable,
            rewrite_era,
        } = wal.durable();
        let poisoned = wal.is_poisoned();
        Arc::new(SharedWal {
            wal: Mutex::new(wal),
            sync: Mutex::new(SyncState {
                durable,
                rewrite_era,
                poisoned,
                ..SyncState::default()
            }),
            durable: AtomicU64::new(durable),
            appends: AtomicU64::new(0),
            listener: RwLock::new(None),
        })
    }

    fn lock_wal(&self) -> MutexGuard<'_, Wal<S>> {
        // A panic under the lock is a broken invariant that already took the
        // thread down; the WAL state itself is only changed after I/O succeeds.
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `d` (read under the append lock, published under the sync lock:
    /// another thread may have published a later reading in between). A reading
    /// of an older era is stale and ignored; within one era the published lsn
    /// only grows; a newer era (the log was rewritten) replaces it, possibly
    /// lower. Returns the new lsn if it went up.
    fn publish(&self, st: &mut SyncState, d: Durable) -> Option<Lsn> {
        let newer_era = d.rewrite_era > st.rewrite_era;
        if d.rewrite_era < st.rewrite_era || (!newer_era && d.lsn <= st.durable) {
            return None;
        }
        let advanced = (d.lsn > st.durable).then_some(d.lsn);
        st.rewrite_era = d.rewrite_era;
        st.durable = d.lsn;
        self.durable.store(d.lsn, Ordering::Release);
        advanced
    }

    /// Appends one record; not durable yet (see [`SharedWal::wait_durable`]).
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let r = self.lock_wal().append(payload);
        self.appends.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Appends several records with one write; not durable yet.
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<RangeInclusive<Lsn>, WalError> {
        let r = self.lock_wal().append_batch(payloads);
        self.appends.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Appends one record and blocks until it is durable.
    pub fn append_durable(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let lsn = self.append(payload)?;
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// How long the leader of the next round may wait for the appenders the last
    /// round woke: a quarter of the last sync, at most [`GATHER_CAP_MAX`].
    fn gather_cap(last_sync: Duration) -> Duration {
        (last_sync / 4).min(GATHER_CAP_MAX)
    }

    /// Blocks until `lsn` (already written) is durable, leading a group sync
    /// if no other thread is. Errors: the sync's I/O error for the leader that
    /// hit it, [`WalError::Poisoned`] for everyone after; `OutOfRange` if
    /// `lsn` was never written.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        loop {
            let gather = {
                let mut st = self.lock_sync();
                if st.poisoned {
                    return Err(WalError::Poisoned);
                }
                if st.durable >= lsn {
                    return Ok(());
                }
                if st.leader_active {
                    let woken = WOKEN.with(Arc::clone);
                    woken.store(false, Ordering::Relaxed);
                    st.sleepers.push(Sleeper {
                        lsn,
                        thread: std::thread::current(),
                        woken: Arc::clone(&woken),
                    });
                    drop(st);
                    while !woken.load(Ordering::Acquire) {
                        std::thread::park();
                    }
                    // Covered: no lock needed. Otherwise (asked to lead, poisoned, or
                    // a rewrite moved the durable lsn) the locked path decides.
                    if self.durable.load(Ordering::Acquire) >= lsn {
                        return Ok(());
                    }
                    continue;
                }
                st.leader_active = true;
                let expect = st.appends_at_wake + std::mem::take(&mut st.woken_last);
                (expect, Self::gather_cap(st.last_sync))
            };
            self.gather(gather);
            let begun = {
                let w = self.lock_wal();
                let last = w.last().lsn;
                match w.begin_sync() {
                    Ok(_) if lsn > last => Err(WalError::OutOfRange {
                        lsn,
                        min: 0,
                        max: last,
                    }),
                    Ok(Some(ticket)) => Ok(Ok(ticket)),
                    Ok(None) => Ok(Err(w.durable())),
                    Err(e) => Err(e),
                }
            };
            let started = Instant::now();
            let outcome: Result<Durable, WalError> = match begun {
                Err(e) => Err(e),
                Ok(Err(already)) => Ok(already),
                Ok(Ok(ticket)) => match ticket.file.sync_data() {
                    Ok(()) => Ok(self.lock_wal().finish_sync(&ticket)),
                    Err(e) => {
                        self.lock_wal().poison("group commit sync failed");
                        Err(WalError::io("sync_data", ticket.path.clone(), e))
                    }
                },
            };
            let synced = started.elapsed();
            let (advanced, wake) = {
                let mut st = self.lock_sync();
                st.leader_active = false;
                if outcome.is_ok() {
                    st.last_sync = synced;
                }
                let advanced = match &outcome {
                    Ok(d) => self.publish(&mut st, *d),
                    Err(WalError::OutOfRange { .. }) => None,
                    Err(_) => {
                        st.poisoned = true;
                        None
                    }
                };
                let wake = self.take_covered(&mut st);
                (advanced, wake)
            };
            for t in wake {
                t.unpark();
            }
            if let Some(t) = advanced {
                self.notify_listener(t);
            }
            outcome?;
        }
    }

    /// The leader's moment for the appenders the last round woke: until `expect`
    /// appends were counted or `cap` passed, yielding the CPU to them.
    fn gather(&self, (expect, cap): (u64, Duration)) {
        if self.appends.load(Ordering::Relaxed) >= expect || cap.is_zero() {
            return;
        }
        let until = Instant::now() + cap;
        while self.appends.load(Ordering::Relaxed) < expect && Instant::now() < until {
            std::thread::yield_now();
        }
    }

    /// Under the sync lock, after durability changed: removes from the sleepers every
    /// one the durable lsn covers (all of them if the WAL is poisoned) and, when
    /// sleepers remain and no thread leads, one more to lead the next round; marks them
    /// woken. Returns their threads, to unpark once the lock is released.
    fn take_covered(&self, st: &mut SyncState) -> Vec<std::thread::Thread> {
        let durable = st.durable;
        let everyone = st.poisoned;
        let mut wake = Vec::new();
        let mut covered = 0u64;
        st.sleepers.retain(|s| {
            if everyone || s.lsn <= durable {
                s.woken.store(true, Ordering::Release);
                wake.push(s.thread.clone());
                covered += 1;
                false
            } else {
                true
            }
        });
        if !st.leader_active && !st.sleepers.is_empty() {
            let s = st.sleepers.remove(0);
            s.woken.store(true, Ordering::Release);
            wake.push(s.thread);
        }
        st.woken_last = covered;
        st.appends_at_wake = self.appends.load(Ordering::Relaxed);
        wake
    }

    fn notify_listener(&self, lsn: Lsn) {
        let l = self
            .listener
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(f) = l {
            f(lsn);
        }
    }

    /// Highest lsn known durable. Never decreases, except when a
    /// [`SharedWal::with`] closure rewrote the log (truncate_tail, reset_to).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable.load(Ordering::Acquire)
    }

    /// The last record written (durable or not).
    pub fn last(&self) -> Position {
        self.lock_wal().last()
    }

    /// A reader from `from_lsn` up to `last()` at this call.
    pub fn reader(&self, from_lsn: Lsn) -> Result<WalReader<S>, WalError> {
        self.lock_wal().reader(from_lsn)
    }

    /// Read-only access under the append lock (nothing it can do changes durability, so
    /// nothing is published afterwards, unlike [`SharedWal::with`]).
    pub fn read<R>(&self, f: impl FnOnce(&Wal<S>) -> R) -> R {
        f(&self.lock_wal())
    }

    /// Exclusive access for rare operations (truncation, reset, epoch change,
    /// replica appends). Durability changes made inside (e.g. `sync`, or a
    /// poisoning) are published to waiters and the listener afterwards.
    pub fn with<R>(&self, f: impl FnOnce(&mut Wal<S>) -> R) -> R {
        let (r, durable, poisoned) = {
            let mut w = self.lock_wal();
            let r = f(&mut w);
            (r, w.durable(), w.is_poisoned())
        };
        let advanced = {
            let mut st = self.lock_sync();
            if poisoned {
                st.poisoned = true;
            }
            // reset_to/truncate_tail (a new rewrite era) may move the durable lsn
            // in either direction; otherwise it only grows (a leader may have
            // published a higher one since `durable` was read).
            let advanced = self.publish(&mut st, durable);
            // Every sleeper looks again: durability may have moved either way.
            let wake: Vec<_> = st
                .sleepers
                .drain(..)
                .map(|s| {
                    s.woken.store(true, Ordering::Release);
                    s.thread
                })
                .collect();
            (advanced, wake)
        };
        let (advanced, wake) = advanced;
        for t in wake {
            t.unpark();
        }
        if let Some(t) = advanced {
            self.notify_listener(t);
        }
        r
    }

    /// Called (outside locks) after the durable lsn advances; used by the
    /// primary driver to wake shippers. Replaces any earlier listener. A wakeup:
    /// calls made by different threads may arrive out of order, so read
    /// [`SharedWal::durable_lsn`] for the current value.
    pub fn set_durable_listener(&self, f: Box<dyn Fn(Lsn) + Send + Sync>) {
        *self.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(f));
    }

    /// Takes the WAL back (e.g. to close it) once no other handle is left.
    pub fn into_inner(self) -> Wal<S> {
        self.wal.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

#[allow(dead_code)]
fn assert_shared_wal_is_send_sync<S: Storage>() {
    fn is<T: Send + Sync>() {}
    is::<SharedWal<S>>();
}
