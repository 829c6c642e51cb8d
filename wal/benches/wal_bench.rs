//! WAL benchmark, all on the same disk in the same run:
//!
//! - physical limits: 4 KiB pwrite+fdatasync on a **growing** file (every
//!   sync also persists a size change) and on a **preallocated** file (zeros
//!   written and synced first, then overwritten), and sequential write
//!   bandwidth (1 MiB writes, one fdatasync at the end);
//! - durable appends (every append returns only after its record is
//!   fdatasync'ed), 1 KiB records, 1 / 4 / 16 / 64 threads: walship's
//!   `SharedWal::append_durable` (group commit), okaywal 0.3.1
//!   (`begin_entry` + `write_chunk` + `commit`, its own group commit) and
//!   walrus-rust 0.2.0 (`FsyncSchedule::SyncEach`: every append synced before
//!   it returns; one topic per thread), **interleaved per thread count** so a
//!   noisy neighbour hurts all three alike; the ratios against the targets of
//!   issue 14;
//! - verified sequential scan throughput.
//!
//! `cargo bench -p walship-wal`. Environment:
//! - `WALSHIP_BENCH_DIR`: directory to run in (default: the system temp dir
//!   unless it is tmpfs, else the current directory).
//! - `WALSHIP_BENCH_SCALE`: multiplies every measurement's duration and the
//!   scan size (default 1.0: about a minute in all; 0.3 for a quick look).
//! - `WALSHIP_BENCH_ALL=1`: also walship alone at 64 B and 64 KiB payloads.
//!
//! Every rate is the best of [`ROUNDS`] rounds (the disk and CPUs may be shared).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use walship_wal::{FsStorage, SharedWal, Wal, WalOptions};

/// okaywal's log manager for the bench: nothing to recover, nothing to checkpoint into.
type OkayVoid = okaywal::LogVoid;

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn is_tmpfs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a properly sized out-parameter.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == TMPFS_MAGIC
}

fn bench_root() -> PathBuf {
    if let Ok(d) = std::env::var("WALSHIP_BENCH_DIR") {
        return PathBuf::from(d);
    }
    let t = std::env::temp_dir();
    if is_tmpfs(&t) {
        std::env::current_dir().unwrap_or(t)
    } else {
        t
    }
}

fn scale() -> f64 {
    std::env::var("WALSHIP_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

fn secs(base: f64) -> Duration {
    Duration::from_secs_f64(base * scale())
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Raw rate: 4 KiB pwrite then fdatasync, repeat. `preallocated`: the file's
/// blocks are written (zeros) and synced first, so each sync persists data
/// only; otherwise the file grows with every write, like a version 1 segment,
/// and each sync also persists the new size.
fn raw_fdatasync_once(root: &Path, preallocated: bool) -> BenchResult<f64> {
    let path = root.join("raw.bin");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let buf = vec![0x5au8; 4096];
    let dur = secs(0.8);
    let mut size = 0u64;
    if preallocated {
        // Enough for the measurement: at most ~20k syncs/s of 4 KiB.
        size = ((dur.as_secs_f64() * 20_000.0) as u64 + 1) * 4096;
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < size {
            let n = (zeros.len() as u64).min(size - off) as usize;
            f.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
        f.sync_all()?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur && (!preallocated || (n + 1) * 4096 <= size) {
        f.write_all_at(&buf, n * 4096)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// Sequential write bandwidth: 1 MiB pwrites into a new file, one fdatasync
/// at the end (included in the time). MB/s.
fn seq_write_once(root: &Path) -> BenchResult<f64> {
    let path = root.join("seq.bin");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let buf = vec![0x6bu8; 1 << 20];
    let total = ((256.0 * scale()) as u64).max(16) << 20;
    let start = Instant::now();
    let mut off = 0u64;
    while off < total {
        f.write_all_at(&buf, off)?;
        off += buf.len() as u64;
    }
    f.sync_data()?;
    let mb_s = total as f64 / start.elapsed().as_secs_f64() / 1e6;
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(mb_s)
}

/// The disk is shared with other processes: every figure is the best of
/// this many rounds (stalls caused by others only ever make a round slower).
const ROUNDS: usize = 2;

/// Raw rate, best of [`ROUNDS`].
fn raw_fdatasync_rate(root: &Path, preallocated: bool) -> BenchResult<f64> {
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        best = best.max(raw_fdatasync_once(root, preallocated)?);
    }
    Ok(best)
}

/// Sequential write bandwidth, best of [`ROUNDS`].
fn seq_write_rate(root: &Path) -> BenchResult<f64> {
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        best = best.max(seq_write_once(root)?);
    }
    Ok(best)
}

/// Durable append rate, best of [`ROUNDS`].
fn durable_appends(root: &Path, payload_len: usize, appenders: usize) -> BenchResult<AppendResult> {
    let mut best: Option<AppendResult> = None;
    for _ in 0..ROUNDS {
        let r = durable_appends_once(root, payload_len, appenders)?;
        if best
            .as_ref()
            .is_none_or(|b| r.appends_per_s > b.appends_per_s)
        {
            best = Some(r);
        }
    }
    best.ok_or_else(|| "no rounds".into())
}

struct AppendResult {
    appends_per_s: f64,
    mb_per_s: f64,
    syncs_per_s: f64,
}

fn durable_appends_once(
    root: &Path,
    payload_len: usize,
    appenders: usize,
) -> BenchResult<AppendResult> {
    let dir = root.join(format!("append-{payload_len}-{appenders}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (wal, _) = Wal::open(FsStorage, &dir, WalOptions::default())?;
    let shared = SharedWal::new(wal);
    let syncs = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&syncs);
    shared.set_durable_listener(Box::new(move |_| {
        s2.fetch_add(1, Ordering::Relaxed);
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let dur = secs(if payload_len >= 65536 { 0.8 } else { 0.6 });
    let start = Instant::now();
    let handles: Vec<_> = (0..appenders)
        .map(|_| {
            let w = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            thread::spawn(move || -> Result<u64, walship_wal::WalError> {
                let payload = vec![0xa7u8; payload_len];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    w.append_durable(&payload)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    for h in handles {
        total += h.join().map_err(|_| "appender thread panicked")??;
    }
    let el = start.elapsed().as_secs_f64();
    drop(shared);
    std::fs::remove_dir_all(&dir)?;
    Ok(AppendResult {
        appends_per_s: total as f64 / el,
        mb_per_s: total as f64 * payload_len as f64 / el / 1e6,
        syncs_per_s: syncs.load(Ordering::Relaxed) as f64 / el,
    })
}

/// Runs `appenders` threads, each calling its `append` closure (one durable
/// append per call) until the measurement time is up. Appends per second.
fn drive<F>(appenders: usize, make: impl Fn(usize) -> F) -> BenchResult<f64>
where
    F: FnMut() -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let dur = secs(0.6);
    let start = Instant::now();
    let handles: Vec<_> = (0..appenders)
        .map(|i| {
            let stop = Arc::clone(&stop);
            let mut append = make(i);
            thread::spawn(
                move || -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        append()?;
                        n += 1;
                    }
                    Ok(n)
                },
            )
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    for h in handles {
        total += h
            .join()
            .map_err(|_| "appender thread panicked")?
            .map_err(|e| e.to_string())?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// okaywal 0.3.1 with its default configuration (1 MiB preallocated,
/// recycled segment files): one entry of one chunk per append, `commit()`
/// returns after the entry is fsynced (okaywal batches concurrent commits
/// into one fsync).
fn okaywal_appends_once(root: &Path, payload_len: usize, appenders: usize) -> BenchResult<f64> {
    let dir = root.join(format!("okaywal-{appenders}"));
    let _ = std::fs::remove_dir_all(&dir);
    let log = okaywal::WriteAheadLog::recover(&dir, OkayVoid {})?;
    let rate = drive(appenders, |_| {
        let log = log.clone();
        let payload = vec![0xa7u8; payload_len];
        move || {
            let mut e = log.begin_entry()?;
            e.write_chunk(&payload)?;
            e.commit()?;
            Ok(())
        }
    })?;
    log.shutdown()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(rate)
}

/// walrus-rust 0.2.0 with `FsyncSchedule::SyncEach` (every append is synced
/// before it returns; no group commit), one topic per thread (its fastest
/// shape: topics do not share a writer lock).
fn walrus_appends_once(root: &Path, payload_len: usize, appenders: usize) -> BenchResult<f64> {
    use walrus_rust::{FsyncSchedule, ReadConsistency, Walrus};
    let key = format!("walship-bench-{appenders}-{}", std::process::id());
    let w = Arc::new(Walrus::with_consistency_and_schedule_for_key(
        &key,
        ReadConsistency::StrictlyAtOnce,
        FsyncSchedule::SyncEach,
    )?);
    let rate = drive(appenders, |i| {
        let w = Arc::clone(&w);
        let payload = vec![0xa7u8; payload_len];
        let topic = format!("t{i}");
        move || {
            w.append_for_topic(&topic, &payload)?;
            Ok(())
        }
    })?;
    drop(w);
    let _ = std::fs::remove_dir_all(root.join("walrus"));
    Ok(rate)
}

struct ScanResult {
    bytes: u64,
    records: u64,
    batch_gb_s: f64,
    record_gb_s: f64,
    /// Reference measured right after: one crc32c pass over the same mapped
    /// segment bytes (what the CPU can do at this moment; the machine may be shared).
    crc_only_gb_s: f64,
}

fn scan(root: &Path, payload_len: usize) -> BenchResult<ScanResult> {
    let dir = root.join(format!("scan-{payload_len}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut wal, _) = Wal::open(FsStorage, &dir, WalOptions::default())?;
    let target = (256.0 * 1024.0 * 1024.0 * scale()) as u64;
    let payload = vec![0x3cu8; payload_len];
    let batch: Vec<&[u8]> = (0..(1 << 20) / (payload_len + 32))
        .map(|_| &payload[..])
        .collect();
    let mut written = 0u64;
    while written < target {
        wal.append_batch(&batch)?;
        written += (batch.len() * (payload_len + 32)) as u64;
    }
    wal.sync()?;
    // Warm pass: the measurement is of verification over mapped, cached pages.
    let mut r = wal.reader(1)?;
    while let Some(b) = r.next_batch(1 << 20) {
        b?;
    }
    let start = Instant::now();
    let mut r = wal.reader(1)?;
    let (mut bytes, mut records) = (0u64, 0u64);
    while let Some(b) = r.next_batch(1 << 20) {
        let b = b?;
        bytes += b.bytes().len() as u64;
        records += b.count as u64;
    }
    let batch_gb_s = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
    let start = Instant::now();
    let mut r = wal.reader(1)?;
    let mut rb = 0u64;
    while let Some(rec) = r.next_record() {
        rb += rec?.bytes().len() as u64;
    }
    let record_gb_s = rb as f64 / start.elapsed().as_secs_f64() / 1e9;
    let maps: Vec<walship_wal::Mapping> = wal
        .segments()
        .iter()
        .map(|seg| walship_wal::Storage::map(&FsStorage, &seg.path))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let mut acc = 0u32;
    let mut cb = 0u64;
    for m in &maps {
        for chunk in m.chunks(payload_len + 32) {
            acc ^= crc32c::crc32c(chunk);
        }
        cb += m.len() as u64;
    }
    let crc_only_gb_s = cb as f64 / start.elapsed().as_secs_f64() / 1e9;
    std::hint::black_box(acc);
    drop(maps);
    drop(wal);
    std::fs::remove_dir_all(&dir)?;
    Ok(ScanResult {
        bytes,
        records,
        batch_gb_s,
        record_gb_s,
        crc_only_gb_s,
    })
}

/// Time to create one default-size segment (64 MiB of zeros written and
/// synced, rename, directory sync): what the append that rolls a segment
/// waits for. Best of [`ROUNDS`], milliseconds.
fn segment_creation_ms(root: &Path) -> BenchResult<f64> {
    let mut best = f64::MAX;
    for i in 0..ROUNDS {
        let dir = root.join(format!("create-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let start = Instant::now();
        let (wal, _) = Wal::open(FsStorage, &dir, WalOptions::default())?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
        drop(wal);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(best)
}

/// Best of [`ROUNDS`] for walship, okaywal and walrus at one thread count,
/// the three interleaved within each round.
struct Compared {
    threads: usize,
    walship: AppendResult,
    okaywal: Option<f64>,
    walrus: Option<f64>,
}

fn compare(root: &Path, threads: usize) -> BenchResult<Compared> {
    let mut walship: Option<AppendResult> = None;
    let (mut okay, mut walrus): (Option<f64>, Option<f64>) = (None, None);
    for _ in 0..ROUNDS {
        let r = durable_appends_once(root, 1024, threads)?;
        if walship
            .as_ref()
            .is_none_or(|b| r.appends_per_s > b.appends_per_s)
        {
            walship = Some(r);
        }
        match okaywal_appends_once(root, 1024, threads) {
            Ok(r) => okay = Some(okay.unwrap_or(0.0).max(r)),
            Err(e) => eprintln!("okaywal at {threads} threads failed: {e}"),
        }
        match walrus_appends_once(root, 1024, threads) {
            Ok(r) => walrus = Some(walrus.unwrap_or(0.0).max(r)),
            Err(e) => eprintln!("walrus-rust at {threads} threads failed: {e}"),
        }
    }
    Ok(Compared {
        threads,
        walship: walship.ok_or("no rounds")?,
        okaywal: okay,
        walrus,
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; filters are not supported.
    let root = bench_root().join(format!("walship-wal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    // walrus-rust reads its data directory and verbosity from the environment
    // when an instance is created; set both while this is the only thread.
    std::env::set_var("WALRUS_DATA_DIR", root.join("walrus"));
    std::env::set_var("WALRUS_QUIET", "1");
    println!(
        "walship-wal benchmark in {} (tmpfs: {}), scale {}, best of {ROUNDS} rounds",
        root.display(),
        is_tmpfs(&root),
        scale()
    );
    println!("durability: every append figure below is of DURABLE appends (fdatasync/O_SYNC/msync before the append returns)");
    println!();
    println!("physical limits of this disk:");
    let pre_before = raw_fdatasync_rate(&root, true)?;
    let grow_before = raw_fdatasync_rate(&root, false)?;
    let seq = seq_write_rate(&root)?;
    println!("  4 KiB pwrite+fdatasync, preallocated file: {pre_before:.0}/s");
    println!("  4 KiB pwrite+fdatasync, growing file:      {grow_before:.0}/s");
    println!("  sequential write (1 MiB writes + fdatasync): {seq:.0} MB/s");
    let create_ms = segment_creation_ms(&root)?;
    println!(
        "  walship segment creation, default 64 MiB preallocated (paid by the append that rolls): {create_ms:.0} ms"
    );
    println!();
    println!("durable appends, 1 KiB records (walship: SharedWal::append_durable; okaywal: commit; walrus: SyncEach):");
    println!(
        "{:>7} {:>11} {:>9} {:>11} {:>11} {:>9} {:>11} {:>9}",
        "threads", "walship/s", "recs/sync", "okaywal/s", "ratio", "", "walrus/s", "ratio"
    );
    let mut rows = Vec::new();
    for &n in &[1usize, 4, 16, 64] {
        let c = compare(&root, n)?;
        let w = c.walship.appends_per_s;
        let fmt_peer = |p: Option<f64>| match p {
            Some(r) => (format!("{r:.0}"), format!("{:.2}x", w / r.max(1e-9))),
            None => ("failed".to_string(), "-".to_string()),
        };
        let (ok_s, ok_r) = fmt_peer(c.okaywal);
        let (wr_s, wr_r) = fmt_peer(c.walrus);
        println!(
            "{:>7} {:>11.0} {:>9.1} {:>11} {:>11} {:>9} {:>11} {:>9}",
            n,
            w,
            w / c.walship.syncs_per_s.max(1e-9),
            ok_s,
            ok_r,
            "",
            wr_s,
            wr_r
        );
        rows.push(c);
    }
    if std::env::var("WALSHIP_BENCH_ALL").is_ok_and(|v| v == "1") {
        println!();
        println!(
            "{:>9} {:>9} {:>14} {:>10} {:>10} {:>12}",
            "payload", "appenders", "appends/s", "MB/s", "syncs/s", "recs/sync"
        );
        for &len in &[64usize, 65536] {
            for &n in &[1usize, 4, 16, 64] {
                let r = durable_appends(&root, len, n)?;
                println!(
                    "{:>9} {:>9} {:>14.0} {:>10.2} {:>10.0} {:>12.1}",
                    len,
                    n,
                    r.appends_per_s,
                    r.mb_per_s,
                    r.syncs_per_s,
                    r.appends_per_s / r.syncs_per_s.max(1e-9)
                );
            }
        }
    }
    println!();
    let s1 = scan(&root, 1024)?;
    println!(
        "verified scan, 1 KiB records: {} MB, {} records: next_batch {:.2} GB/s, next_record {:.2} GB/s (bare crc32c over the same bytes now: {:.2} GB/s)",
        s1.bytes / 1_000_000,
        s1.records,
        s1.batch_gb_s,
        s1.record_gb_s,
        s1.crc_only_gb_s
    );
    let pre_after = raw_fdatasync_rate(&root, true)?;
    let grow_after = raw_fdatasync_rate(&root, false)?;
    // The higher reading is the baseline: conservative for the ratios.
    let pre = pre_before.max(pre_after);
    let grow = grow_before.max(grow_after);
    println!(
        "physical limits again (after): preallocated {pre_after:.0}/s, growing {grow_after:.0}/s; baselines (max): preallocated {pre:.0}/s, growing {grow:.0}/s"
    );
    println!();
    println!("targets (issue 14):");
    for c in &rows {
        let w = c.walship.appends_per_s;
        if let Some(o) = c.okaywal {
            let r = w / o.max(1e-9);
            let need = if c.threads >= 16 { 1.5 } else { 1.0 };
            println!(
                "  durable appends, {:>2} threads: walship / okaywal = {r:.2}x (target >= {need:.1}x) {}",
                c.threads,
                verdict(r >= need)
            );
        } else {
            println!(
                "  durable appends, {:>2} threads: okaywal failed, no ratio",
                c.threads
            );
        }
    }
    if let Some(one) = rows.first() {
        let r = one.walship.appends_per_s / pre.max(1e-9);
        println!(
            "  1 appender (1 KiB) / preallocated 4 KiB write+fdatasync = {r:.2} (target >= 0.90) {}",
            verdict(r >= 0.9)
        );
        let r = one.walship.appends_per_s / grow.max(1e-9);
        println!("  (1 appender / growing-file rate = {r:.2}: what preallocation buys)");
    }
    if let (Some(one), Some(last)) = (rows.first(), rows.last()) {
        let g = last.walship.appends_per_s / one.walship.appends_per_s.max(1e-9);
        println!(
            "  64 appenders / 1 appender at 1 KiB = {g:.1}x (issue 2 target >= 20x) {}",
            verdict(g >= 20.0)
        );
    }
    println!(
        "  verified scan (1 KiB records, next_batch) = {:.2} GB/s (issue 2 target >= 1 GB/s) {}",
        s1.batch_gb_s,
        verdict(s1.batch_gb_s >= 1.0)
    );
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
