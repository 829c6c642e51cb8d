//! SharedWal group commit: many appenders, one sync, poisoning, listener.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;
use walship_wal::sim::SimStorage;
use walship_wal::{FsStorage, SharedWal, Storage, Wal, WalError, WalOptions};

fn thread_payload(t: u64, i: u64) -> Vec<u8> {
    let mut v = t.to_le_bytes().to_vec();
    v.extend_from_slice(&i.to_le_bytes());
    v.resize(16 + (t * 7 + i) as usize % 50, 0xab);
    v
}

fn run_threads<S: Storage>(
    shared: &Arc<SharedWal<S>>,
    threads: u64,
    per_thread: u64,
) -> Vec<Vec<u64>> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let w = Arc::clone(shared);
            thread::spawn(move || {
                let mut lsns = Vec::new();
                for i in 0..per_thread {
                    let lsn = w
                        .append_durable(&thread_payload(t, i))
                        .expect("append_durable");
                    assert!(w.durable_lsn() >= lsn, "returned before durable");
                    lsns.push(lsn);
                }
                lsns
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

fn check_log<S: Storage>(w: &Wal<S>, per_thread_lsns: &[Vec<u64>]) {
    let total: usize = per_thread_lsns.iter().map(|v| v.len()).sum();
    let mut all: Vec<u64> = per_thread_lsns.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=total as u64).collect::<Vec<_>>(),
        "lsns are dense and unique"
    );
    let mut r = w.reader(1).expect("reader");
    let mut by_lsn = vec![None; total + 1];
    while let Some(rec) = r.next_record() {
        let rec = rec.expect("verified");
        by_lsn[rec.lsn() as usize] = Some(rec.payload().to_vec());
    }
    for (t, lsns) in per_thread_lsns.iter().enumerate() {
        for (i, lsn) in lsns.iter().enumerate() {
            assert_eq!(
                by_lsn[*lsn as usize].as_deref(),
                Some(&thread_payload(t as u64, i as u64)[..])
            );
        }
        assert!(
            lsns.windows(2).all(|p| p[0] < p[1]),
            "a thread's lsns increase"
        );
    }
}

#[test]
fn group_commit_many_threads_all_durable_and_dense_on_sim() {
    let s = SimStorage::new(11);
    let (w, _) = open(&s, &wal_dir(), small_opts());
    let shared = SharedWal::new(w);
    let lsns = run_threads(&shared, 16, 100);
    assert_eq!(shared.durable_lsn(), 1600);
    let syncs = s.counters().file_syncs;
    let w = Arc::try_unwrap(shared).expect("sole owner").into_inner();
    check_log(&w, &lsns);
    // Every append was covered by at most one sync of its own (plus seals and creations).
    assert!(
        syncs <= 1600 + 3 * w.segments().len() as u64 + 2,
        "syncs {syncs}"
    );
    drop(w);
    s.crash();
    let (w, _) = open(&s, &wal_dir(), small_opts());
    check_log(&w, &lsns);
}

#[test]
fn group_commit_many_threads_on_real_disk() {
    let d =
        tempfile::tempdir_in(std::env::var("WALSHIP_TEST_DIR").unwrap_or_else(|_| "/tmp".into()))
            .expect("tempdir");
    let opts = WalOptions {
        segment_size_bytes: 64 * 1024,
        ..WalOptions::default()
    };
    let (w, _) = Wal::open(FsStorage, d.path(), opts).expect("open");
    let shared = SharedWal::new(w);
    let lsns = run_threads(&shared, 8, 40);
    let w = Arc::try_unwrap(shared).expect("sole owner").into_inner();
    check_log(&w, &lsns);
    drop(w);
    let (w, _) = Wal::open(FsStorage, d.path(), opts).expect("reopen");
    check_log(&w, &lsns);
}

#[test]
fn durable_listener_sees_monotonic_durable_lsns_up_to_the_end() {
    let s = SimStorage::new(12);
    let (w, _) = open(&s, &wal_dir(), small_opts());
    let shared = SharedWal::new(w);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    shared.set_durable_listener(Box::new(move |lsn| seen2.lock().expect("lock").push(lsn)));
    run_threads(&shared, 4, 50);
    let seen = seen.lock().expect("lock").clone();
    assert!(!seen.is_empty());
    // Each call reports a value that advanced the published lsn, but calls are
    // made outside the locks by different leaders, so two may arrive swapped.
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seen.len(),
        "each advance reported once: {seen:?}"
    );
    assert_eq!(sorted.last().copied(), Some(200), "{seen:?}");
    // a sync made through `with` is published too
    shared.append(b"x").expect("append");
    shared.with(|w| w.sync()).expect("sync");
    assert_eq!(shared.durable_lsn(), 201);
}

#[test]
fn fm_x_5_failed_sync_poisons_the_wal_for_good() {
    let s = SimStorage::new(13);
    let (w, _) = open(&s, &wal_dir(), WalOptions::default());
    let shared = SharedWal::new(w);
    let l1 = shared.append_durable(b"one").expect("first");
    let active = shared.with(|w| w.segments().last().expect("segment").path.clone());
    s.fail_next_sync(&active).expect("arm");
    let l2 = shared.append(b"two").expect("written");
    match shared.wait_durable(l2) {
        Err(WalError::Io {
            op: "sync_data", ..
        }) => {}
        other => panic!("expected the sync error, got {other:?}"),
    }
    // Never retried: the page cache may have dropped the pages.
    assert!(matches!(shared.wait_durable(l2), Err(WalError::Poisoned)));
    assert!(matches!(shared.append(b"three"), Err(WalError::Poisoned)));
    assert!(matches!(
        shared.append_durable(b"four"),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(shared.reader(1), Err(WalError::Poisoned)));
    assert!(matches!(shared.with(|w| w.sync()), Err(WalError::Poisoned)));
    assert!(matches!(
        shared.with(|w| w.truncate_front(1)),
        Err(WalError::Poisoned)
    ));
    assert_eq!(shared.durable_lsn(), l1);
    // Restart: what was reported durable is there.
    drop(shared);
    s.crash();
    let (w, _) = open(&s, &wal_dir(), WalOptions::default());
    assert!(w.last().lsn >= l1);
}

#[test]
fn failed_sync_wakes_concurrent_waiters_with_poisoned() {
    let s = SimStorage::new(14);
    let (w, _) = open(&s, &wal_dir(), WalOptions::default());
    let shared = SharedWal::new(w);
    let active = shared.with(|w| w.segments().last().expect("segment").path.clone());
    s.fail_syncs_after(0);
    let errors = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let w = Arc::clone(&shared);
            let errors = Arc::clone(&errors);
            thread::spawn(move || match w.append_durable(&[t as u8; 10]) {
                Err(WalError::Poisoned) | Err(WalError::Io { .. }) => {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("thread {t}: {other:?}"),
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(errors.load(Ordering::SeqCst), 8);
    assert_eq!(shared.durable_lsn(), 0);
    let _ = active;
}

#[test]
fn direct_wal_sync_failure_poisons() {
    let s = SimStorage::new(15);
    let (mut w, _) = open(&s, &wal_dir(), WalOptions::default());
    w.append(b"a").expect("append");
    s.fail_syncs_after(0);
    assert!(matches!(
        w.sync(),
        Err(WalError::Io {
            op: "sync_data",
            ..
        })
    ));
    s.clear_faults();
    assert!(matches!(w.sync(), Err(WalError::Poisoned)));
    assert!(matches!(w.append(b"b"), Err(WalError::Poisoned)));
    assert!(w.is_poisoned());
}

#[test]
fn wait_durable_beyond_last_is_out_of_range() {
    let s = SimStorage::new(16);
    let (w, _) = open(&s, &wal_dir(), WalOptions::default());
    let shared = SharedWal::new(w);
    shared.append(b"a").expect("append");
    assert!(matches!(
        shared.wait_durable(5),
        Err(WalError::OutOfRange { lsn: 5, .. })
    ));
    shared.wait_durable(1).expect("durable");
}

#[test]
fn shipper_style_readers_follow_concurrent_appenders_on_real_disk() {
    let d =
        tempfile::tempdir_in(std::env::var("WALSHIP_TEST_DIR").unwrap_or_else(|_| "/tmp".into()))
            .expect("tempdir");
    let opts = WalOptions {
        segment_size_bytes: 8 * 1024,
        ..WalOptions::default()
    };
    let (w, _) = Wal::open(FsStorage, d.path(), opts).expect("open");
    let shared = SharedWal::new(w);
    let (threads, per_thread) = (4u64, 60u64);
    let total = threads * per_thread;
    let follower = {
        let w = Arc::clone(&shared);
        thread::spawn(move || {
            // Like a shipper: wake, read from the next lsn up to the durable end, repeat.
            let mut next = 1u64;
            let mut prev = walship_wal::Position::ZERO;
            let mut shipped = 0u64;
            while next <= total {
                let durable = w.durable_lsn();
                if durable < next {
                    thread::yield_now();
                    continue;
                }
                let mut r = w.reader(next).expect("reader");
                while let Some(b) = r.next_batch(4096) {
                    let b = b.expect("verified batch");
                    for rec in b.records() {
                        assert_eq!(rec.lsn(), next);
                        assert_eq!(rec.prev_crc(), prev.crc);
                        let t = u64::from_le_bytes(rec.payload()[..8].try_into().expect("8 bytes"));
                        let i =
                            u64::from_le_bytes(rec.payload()[8..16].try_into().expect("8 bytes"));
                        assert_eq!(rec.payload(), &thread_payload(t, i)[..]);
                        prev = rec.position();
                        next += 1;
                        shipped += rec.bytes().len() as u64;
                    }
                }
            }
            shipped
        })
    };
    let lsns = run_threads(&shared, threads, per_thread);
    let shipped = follower.join().expect("follower");
    assert!(shipped > 0);
    let w = Arc::try_unwrap(shared).expect("sole owner").into_inner();
    check_log(&w, &lsns);
    assert!(w.segments().len() > 2, "rolled while being read");
}

/// A Storage whose file syncs can be held at a gate, to observe what other
/// threads can do while an fdatasync is in progress.
#[derive(Clone)]
struct GateStorage {
    inner: SimStorage,
    gate: Arc<Gate>,
}

struct Gate {
    armed: std::sync::atomic::AtomicBool,
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

struct GateFile {
    inner: <SimStorage as Storage>::File,
    gate: Arc<Gate>,
}

impl walship_wal::StorageFile for GateFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            if let Some(tx) = self.gate.entered.lock().expect("lock").take() {
                tx.send(()).expect("entered");
            }
            let rx = self
                .gate
                .release
                .lock()
                .expect("lock")
                .take()
                .expect("release receiver");
            rx.recv().expect("released");
        }
        self.inner.sync_data()
    }
}

impl Storage for GateStorage {
    type File = GateFile;
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn open(&self, path: &std::path::Path, create: bool) -> std::io::Result<GateFile> {
        Ok(GateFile {
            inner: self.inner.open(path, create)?,
            gate: Arc::clone(&self.gate),
        })
    }
    fn exists(&self, path: &std::path::Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(dir)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn map(&self, path: &std::path::Path) -> std::io::Result<walship_wal::Mapping> {
        self.inner.map(path)
    }
}

/// The thread of an appender held inside its fdatasync.
type HeldLeader = thread::JoinHandle<Result<u64, WalError>>;

/// A `SharedWal` on gated storage whose first appender (lsn 1, `append_durable`) is held
/// inside its fdatasync: returns the WAL, that leader's thread, and the sender that
/// releases the sync.
fn held_leader(
    seed: u64,
    opts: WalOptions,
) -> (
    Arc<SharedWal<GateStorage>>,
    HeldLeader,
    std::sync::mpsc::Sender<()>,
) {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let gate = Arc::new(Gate {
        armed: std::sync::atomic::AtomicBool::new(false),
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let s = GateStorage {
        inner: SimStorage::new(seed),
        gate: Arc::clone(&gate),
    };
    let (w, _) = Wal::open(s, &wal_dir(), opts).expect("open");
    let shared = SharedWal::new(w);
    gate.armed.store(true, Ordering::SeqCst);
    let leader = {
        let w = Arc::clone(&shared);
        thread::spawn(move || w.append_durable(b"first"))
    };
    entered_rx.recv().expect("leader is inside fdatasync");
    (shared, leader, release_tx)
}

#[test]
fn append_lock_is_not_held_during_fdatasync_and_each_appender_learns_its_own_durability() {
    let (shared, leader, release_tx) = held_leader(21, WalOptions::default());
    // The leader is blocked inside sync_data: appending must still work.
    let second = shared
        .append(b"second")
        .expect("append while a sync is in flight");
    assert_eq!(second, 2);
    assert_eq!(shared.last().lsn, 2);
    assert_eq!(
        shared.durable_lsn(),
        0,
        "nothing durable while the sync is held"
    );
    release_tx.send(()).expect("release");
    assert_eq!(leader.join().expect("leader").expect("durable"), 1);
    // The held sync covered only what was written when it started.
    assert_eq!(shared.durable_lsn(), 1);
    shared.wait_durable(2).expect("second sync");
    assert_eq!(shared.durable_lsn(), 2);
}

/// The stranding race, step by step: the leader's fdatasync of lsn 1 is held; two
/// appenders of lsn 2 and 3 go to sleep waiting for the next round; then a segment roll
/// seals (syncs) them. When the leader's round ends, more is durable than it synced: the
/// old code woke one of the two to lead the next round, which found itself covered and
/// returned, and the other slept for good (nobody left to lead).
#[test]
fn a_roll_during_a_held_sync_wakes_every_waiter_it_made_durable() {
    let opts = WalOptions {
        segment_size_bytes: 4096,
        ..WalOptions::default()
    };
    let (shared, leader, release_tx) = held_leader(22, opts);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for i in 0..2u8 {
        let w = Arc::clone(&shared);
        let done = done_tx.clone();
        thread::spawn(move || {
            let _ = done.send(w.append_durable(&[b'w', i]));
        });
    }
    // Both are asleep on the next round by now (they need more than the held sync).
    thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(shared.durable_lsn(), 0);
    // Records that no longer fit the segment: the roll seals lsn 1..=4 (its own sync).
    // (No `with` here: it would publish and wake everyone, hiding the race.)
    for _ in 0..4 {
        shared.append(&[0x5a; 1500]).expect("append");
    }
    release_tx.send(()).expect("release");
    assert_eq!(leader.join().expect("leader").expect("durable"), 1);
    for _ in 0..2 {
        match done_rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(r) => assert!(r.expect("durable") <= 3),
            Err(_) => panic!("a waiter the roll made durable was never woken"),
        }
    }
    // The roll did seal them: the first segment's records were durable before any later
    // sync (the leader's round ended with lsn 5 durable, beyond the 1 it synced).
    assert!(shared.durable_lsn() >= 3);
}

/// realfault F1: `with` used to publish the durable lsn it read under the append
/// lock after releasing it, overwriting a higher value a group-commit leader had
/// published in between (the published durable lsn went backwards). Only a real
/// rewrite (truncate_tail / reset_to) may lower it.
#[test]
fn durable_lsn_never_decreases_under_concurrent_with_and_appends() {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};
    let d =
        tempfile::tempdir_in(std::env::var("WALSHIP_TEST_DIR").unwrap_or_else(|_| "/tmp".into()))
            .expect("tempdir");
    let (w, _) = Wal::open(FsStorage, d.path(), WalOptions::default()).expect("open");
    let shared = SharedWal::new(w);
    let stop = Arc::new(AtomicBool::new(false));
    let decreases = Arc::new(AtomicU64::new(0));
    let mut side = Vec::new();
    for _ in 0..2 {
        let (w, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        side.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                w.with(|w| w.first_lsn());
            }
        }));
    }
    {
        let (w, stop, dec) = (
            Arc::clone(&shared),
            Arc::clone(&stop),
            Arc::clone(&decreases),
        );
        side.push(thread::spawn(move || {
            let mut high = 0;
            while !stop.load(Ordering::Relaxed) {
                let d = w.durable_lsn();
                if d < high && dec.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("durable_lsn {d} after {high}");
                }
                high = high.max(d);
            }
        }));
    }
    // Bounded by time as well as count: a slow disk must not make this slow.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let appenders: Vec<_> = (0..3u64)
        .map(|t| {
            let (w, dec) = (Arc::clone(&shared), Arc::clone(&decreases));
            thread::spawn(move || {
                for i in 0..1500u64 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let lsn = w.append_durable(&thread_payload(t, i)).expect("append");
                    let d = w.durable_lsn();
                    if d < lsn && dec.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("durable_lsn {d} below {lsn} whose append returned");
                    }
                }
            })
        })
        .collect();
    for a in appenders {
        a.join().expect("appender");
    }
    stop.store(true, Ordering::Relaxed);
    for h in side {
        h.join().expect("side thread");
    }
    assert_eq!(
        decreases.load(Ordering::Relaxed),
        0,
        "published durable lsn went backwards"
    );
    assert_eq!(shared.durable_lsn(), shared.last().lsn);
}

#[test]
fn with_truncate_tail_and_reset_to_still_move_the_published_durable_lsn() {
    let s = SimStorage::new(13);
    let (w, _) = open(&s, &wal_dir(), small_opts());
    let shared = SharedWal::new(w);
    run_threads(&shared, 2, 20);
    assert_eq!(shared.durable_lsn(), 40);
    shared.with(|w| w.truncate_tail(30)).expect("truncate_tail");
    assert_eq!(shared.durable_lsn(), 30);
    let lsn = shared.append_durable(b"after truncate").expect("append");
    assert_eq!((lsn, shared.durable_lsn()), (31, 31));
    let boundary = shared
        .with(|w| w.position_at(10))
        .expect("position")
        .expect("lsn 10 exists");
    shared.with(|w| w.reset_to(boundary)).expect("reset_to");
    assert_eq!(shared.durable_lsn(), 10);
    let lsn = shared.append_durable(b"after reset").expect("append");
    assert_eq!((lsn, shared.durable_lsn()), (11, 11));
    // A no-op truncate (nothing after the lsn) is no rewrite and changes nothing.
    shared
        .with(|w| w.truncate_tail(11))
        .expect("no-op truncate");
    assert_eq!(shared.durable_lsn(), 11);
}

/// Group commit batches every appender waiting behind a running sync into
/// the ONE next sync: while the first sync is held, `K` threads append
/// durably; once it is released, all `K` records become durable with exactly
/// one more fdatasync, and every appender returns its own lsn.
#[test]
fn every_appender_waiting_behind_a_running_sync_is_made_durable_by_the_one_next_sync() {
    const K: u64 = 12;
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let gate = Arc::new(Gate {
        armed: std::sync::atomic::AtomicBool::new(false),
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let sim = SimStorage::new(23);
    let s = GateStorage {
        inner: sim.clone(),
        gate: Arc::clone(&gate),
    };
    let (w, _) = Wal::open(s, &wal_dir(), WalOptions::default()).expect("open");
    let shared = SharedWal::new(w);
    let syncs_before = sim.counters().file_syncs;
    gate.armed.store(true, Ordering::SeqCst);
    let leader = {
        let w = Arc::clone(&shared);
        thread::spawn(move || w.append_durable(b"first"))
    };
    entered_rx.recv().expect("leader is inside fdatasync");
    let followers: Vec<_> = (0..K)
        .map(|t| {
            let w = Arc::clone(&shared);
            thread::spawn(move || w.append_durable(&thread_payload(t, 0)))
        })
        .collect();
    // Every follower has written its record (they may or may not be waiting yet).
    while shared.last().lsn < K + 1 {
        thread::yield_now();
    }
    assert_eq!(shared.durable_lsn(), 0, "the first sync is still held");
    release_tx.send(()).expect("release");
    assert_eq!(leader.join().expect("leader").expect("durable"), 1);
    let mut lsns: Vec<u64> = followers
        .into_iter()
        .map(|h| h.join().expect("follower").expect("durable"))
        .collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (2..=K + 1).collect::<Vec<_>>());
    assert_eq!(shared.durable_lsn(), K + 1);
    assert_eq!(
        sim.counters().file_syncs - syncs_before,
        2,
        "the held sync, then one sync for all {K} followers"
    );
    // And they really are durable.
    drop(shared);
    sim.crash();
    let (w, _) = Wal::open(sim, &wal_dir(), WalOptions::default()).expect("reopen");
    assert_eq!(w.last().lsn, K + 1);
}
