//! Helpers shared by the walship-snapshot integration tests.
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use walship_snapshot::{
    BoundaryMembership, InstalledSnapshot, Limits, SnapshotChunk, SnapshotEnd, SnapshotOffer,
    SnapshotSink, SnapshotSource, SnapshotStore,
};
use walship_wal::control::{ConfigMember, Configuration};
use walship_wal::sim::SimStorage;
use walship_wal::{Lsn, Mapping, Position, Storage, StorageFile, Wal, WalOptions};

pub const WAL_DIR: &str = "/node/wal";
pub const SNAP_DIR: &str = "/node/snapshots";
pub const PRIMARY_SNAP_DIR: &str = "/primary/snapshots";

pub fn wal_dir() -> PathBuf {
    PathBuf::from(WAL_DIR)
}

pub fn snap_dir() -> PathBuf {
    PathBuf::from(SNAP_DIR)
}

pub fn opts(epoch: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes: 2048,
        max_record_bytes: 4096,
        epoch,
    }
}

/// Deterministic record payload for lsn `i`.
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 13 % 90) as usize + 1;
    (0..len).map(|k| (i as usize * 7 + k) as u8).collect()
}

/// Deterministic snapshot payload of `len` bytes.
pub fn state_bytes(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// An embedder whose state is a byte string applied up to `lsn`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BytesState {
    pub lsn: Lsn,
    pub bytes: Vec<u8>,
    pub restored_boundary: Option<Position>,
}

impl SnapshotSource for BytesState {
    fn write_snapshot(&mut self, w: &mut dyn io::Write) -> io::Result<Lsn> {
        // Several writes of odd sizes, to exercise chunking.
        for part in self.bytes.chunks(1000) {
            w.write_all(part)?;
        }
        Ok(self.lsn)
    }
}

impl SnapshotSink for BytesState {
    fn restore_snapshot(&mut self, boundary: Position, r: &mut dyn io::Read) -> io::Result<()> {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)?;
        self.bytes = buf;
        self.lsn = boundary.lsn;
        self.restored_boundary = Some(boundary);
        Ok(())
    }
}

/// A WAL in `storage` at [`WAL_DIR`] holding records `1..=n` (synced), epoch 1.
pub fn wal_with<S: Storage>(storage: &S, dir: &Path, n: u64, epoch: u64) -> Wal<S> {
    let (mut w, _) = Wal::open(storage.clone(), dir, opts(epoch)).expect("wal open");
    for i in w.last().lsn + 1..=n {
        w.append(&payload(i)).expect("append");
    }
    w.sync().expect("sync");
    w
}

/// Every record's position and payload from the first retained one.
pub fn wal_records<S: Storage>(w: &Wal<S>) -> Vec<(Position, Vec<u8>)> {
    if w.last().lsn == w.base().lsn {
        return Vec::new();
    }
    let mut r = w.reader(0).expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record() {
        let rec = rec.expect("record");
        out.push((rec.position(), rec.payload().to_vec()));
    }
    out
}

/// A snapshot as a primary would ship it.
#[derive(Clone, Debug)]
pub struct Shipped {
    pub offer: SnapshotOffer,
    pub chunks: Vec<SnapshotChunk>,
    pub end: SnapshotEnd,
    pub state: Vec<u8>,
    pub file: Vec<u8>,
    /// What its configuration file records.
    pub membership: BoundaryMembership,
}

/// A configuration of generation `generation` (three voters).
pub fn configuration(generation: u64) -> Configuration {
    Configuration {
        generation,
        forced: false,
        members: ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| ConfigMember {
                id: (*id).to_string(),
                incarnation: 100 + i as u64,
                voter: true,
                addr: format!("127.0.0.1:{}", 9000 + i),
                http_addr: None,
            })
            .collect(),
    }
}

/// Creates a snapshot of `state` at `boundary` in a separate simulated
/// primary and returns its transfer messages.
pub fn primary_snapshot(boundary: Position, state: Vec<u8>, chunk_size: u32) -> Shipped {
    let ps = SimStorage::new(99);
    let (store, _) =
        SnapshotStore::open(ps.clone(), Path::new(PRIMARY_SNAP_DIR), Limits::default())
            .expect("primary store");
    let mut src = BytesState {
        lsn: boundary.lsn,
        bytes: state.clone(),
        restored_boundary: None,
    };
    // The newest configuration record at or below the boundary, as a node records it.
    let membership = BoundaryMembership::Record {
        lsn: boundary.lsn.saturating_sub(2).max(1),
        config: configuration(4),
    };
    let snap = store
        .create_with_membership(chunk_size, &mut src, &mut |_| Ok(boundary), &mut |_| {
            Ok(membership.clone())
        })
        .expect("create");
    assert_eq!(snap.membership, membership);
    let r = store.reader(&snap).expect("reader");
    r.verify().expect("verify");
    let offer = match store.sender(&snap).expect("sender").next() {
        Some(Ok(walship_snapshot::TransferItem::Offer(o))) => o,
        other => panic!("the first item is the offer: {other:?}"),
    };
    assert!(!offer.configuration.is_empty());
    let chunks = (0..offer.chunk_count)
        .map(|i| r.chunk_message(i).expect("chunk"))
        .collect();
    Shipped {
        offer,
        chunks,
        end: r.end_message(),
        state,
        file: ps.contents(&snap.file).expect("contents"),
        membership,
    }
}

/// Reads an installed snapshot's payload through the store (full verification).
pub fn restore<S: Storage>(store: &SnapshotStore<S>, snap: &InstalledSnapshot) -> BytesState {
    let mut sink = BytesState::default();
    store.restore(snap, &mut sink).expect("restore");
    sink
}

/// Entries of a directory that start with `tmp-`.
pub fn tmp_entries<S: Storage>(s: &S, dir: &Path) -> Vec<String> {
    s.list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("tmp-"))
        .collect()
}

// ---------------------------------------------------------------------------
// StepLimit: a Storage wrapper that lets the first `k` mutating operations
// through and fails every later one, to stop a process "after step k".
// ---------------------------------------------------------------------------

/// Counts mutating storage operations; after `budget` of them every further
/// one fails with EIO (the process is "dead"; the test then crashes the sim).
#[derive(Clone, Debug)]
pub struct StepLimit<S> {
    inner: S,
    steps: Arc<AtomicU64>,
    budget: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

impl<S: Storage> StepLimit<S> {
    pub fn new(inner: S) -> Self {
        StepLimit {
            inner,
            steps: Arc::new(AtomicU64::new(0)),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// From now on, allow `k` more mutating steps.
    pub fn arm(&self, k: u64) {
        self.steps.store(0, Ordering::SeqCst);
        self.refused.store(0, Ordering::SeqCst);
        self.budget.store(k, Ordering::SeqCst);
    }

    /// Mutating steps taken since `arm`.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::SeqCst)
    }

    /// Whether any step was refused since `arm`.
    pub fn hit_limit(&self) -> bool {
        self.refused.load(Ordering::SeqCst) > 0
    }

    fn step(&self, _what: &str) -> io::Result<()> {
        step(&self.steps, &self.budget, &self.refused)
    }
}

fn step(steps: &AtomicU64, budget: &AtomicU64, refused: &AtomicU64) -> io::Result<()> {
    if steps.load(Ordering::SeqCst) >= budget.load(Ordering::SeqCst) {
        refused.fetch_add(1, Ordering::SeqCst);
        return Err(io::Error::other("step limit: process stopped"));
    }
    steps.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

pub struct StepFile<F> {
    inner: F,
    steps: Arc<AtomicU64>,
    budget: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

impl<F: StorageFile> StorageFile for StepFile<F> {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        step(&self.steps, &self.budget, &self.refused)?;
        self.inner.write_at(offset, buf)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        step(&self.steps, &self.budget, &self.refused)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        step(&self.steps, &self.budget, &self.refused)?;
        self.inner.sync_data()
    }
}

impl<S: Storage> Storage for StepLimit<S> {
    type File = StepFile<S::File>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.step("create_dir_all")?;
        self.inner.create_dir_all(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Self::File> {
        if create {
            self.step("open")?;
        }
        Ok(StepFile {
            inner: self.inner.open(path, create)?,
            steps: Arc::clone(&self.steps),
            budget: Arc::clone(&self.budget),
            refused: Arc::clone(&self.refused),
        })
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step("rename")?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step("remove_file")?;
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.step("remove_dir_all")?;
        self.inner.remove_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step("sync_dir")?;
        self.inner.sync_dir(dir)
    }
    fn map(&self, path: &Path) -> io::Result<Mapping> {
        self.inner.map(path)
    }
}
