//! Replication benchmark (issue 3, item 9), one run on loopback with 1 KiB records:
//!
//! - local-only durable append rate (SharedWal group commit, no network) with 1/16/64 writers;
//! - commit throughput and p50/p99 latency of `Primary::append` with 1/16/64 concurrent
//!   writers under quorum 0 and majority, with two real replicas connected;
//! - catch-up MB/s of a replica starting empty behind a primary holding
//!   `WALSHIP_BENCH_CATCHUP_MB` (default 256; 1024 for the full 1 GiB), beside this disk's
//!   durable sequential write rate (same size written, then fsync) and one plain quinn
//!   stream's raw throughput over loopback (same TLS);
//! - ratios against the targets: majority@64 >= 50% of local-only@64; catch-up >= 80% of
//!   the smaller limit.
//!
//! `cargo bench -p walship-primary --bench repl_bench`. Env: `WALSHIP_BENCH_SECS` (seconds
//! per commit point, default 3), `WALSHIP_BENCH_CATCHUP_MB`, `WALSHIP_BENCH_DIR` (where the
//! data goes; default the system temp dir).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walship_primary::{Primary, PrimaryConfig, Quorum};
use walship_replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaState};
use walship_wal::state::{EpochHistory, NodeDir};
use walship_wal::{FsStorage, Lsn, SharedWal, Wal, WalOptions, RECORD_HEADER_LEN};
use walship_wire::{TlsFiles, TransportOptions};

const RECORD: usize = 1024;
const CLUSTER: &str = "bench";
const WRITERS: [usize; 3] = [1, 16, 64];
type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// An applier that only counts.
struct Count(Arc<AtomicU64>);
impl Applier for Count {
    fn applied_lsn(&self) -> Lsn {
        self.0.load(Ordering::Relaxed)
    }
    fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        self.0.store(lsn, Ordering::Relaxed);
        Ok(())
    }
}

struct Env {
    root: tempfile::TempDir,
    certs: PathBuf,
}

impl Env {
    fn new() -> BenchResult<Env> {
        let root = match std::env::var_os("WALSHIP_BENCH_DIR") {
            Some(d) => tempfile::tempdir_in(d)?,
            None => tempfile::tempdir()?,
        };
        let certs = root.path().join("certs");
        walship_wire::generate(&certs, &["p", "r1", "r2"])?;
        Ok(Env { root, certs })
    }
    fn tls(&self, node: &str) -> TlsFiles {
        TlsFiles::for_node(&self.certs, node)
    }
    fn fresh_dir(&self, name: &str) -> PathBuf {
        let d = self.root.path().join(name);
        let _ = std::fs::remove_dir_all(&d);
        d
    }
    fn primary_config(&self, dir: &Path, quorum: Quorum) -> PrimaryConfig {
        let mut c = PrimaryConfig::new(
            "p",
            CLUSTER,
            dir,
            "127.0.0.1:0".parse().expect("literal address"),
            vec!["p".into(), "r1".into(), "r2".into()],
            self.tls("p"),
        );
        c.quorum = quorum;
        c.commit_timeout_ms = 60_000;
        if let Some(mb) = std::env::var("WALSHIP_BENCH_WINDOW_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            c.window.max_inflight_bytes = mb * 1024 * 1024;
        }
        if let Some(kb) = std::env::var("WALSHIP_BENCH_BATCH_KB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            c.window.max_batch_bytes = kb * 1024;
        }
        c
    }
    fn replica(&self, node: &str, dir: &Path, primary: &Primary) -> BenchResult<Replica> {
        let mut c = ReplicaConfig::new(
            node,
            CLUSTER,
            dir,
            primary.local_addr()?,
            "p",
            self.tls(node),
        );
        c.bind_addr = "127.0.0.1:0".parse()?;
        c.backoff_initial_ms = 10;
        if let Some(mb) = std::env::var("WALSHIP_BENCH_REPLICA_SYNC_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            c.sync_every_bytes = mb * 1024 * 1024;
        }
        Ok(Replica::open(c, Count(Arc::new(AtomicU64::new(0))))?)
    }
}

/// Local-only durable append rate: `writers` threads on one SharedWal, each append_durable.
fn local_durable_rate(env: &Env, writers: usize, secs: Duration) -> BenchResult<f64> {
    let dir = env.fresh_dir(&format!("local-{writers}"));
    let (wal, _) = Wal::open(FsStorage, &dir, WalOptions::default())?;
    let wal = SharedWal::new(wal);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + secs;
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let wal = wal.clone();
            let count = count.clone();
            std::thread::spawn(move || {
                let payload = vec![0xABu8; RECORD];
                while Instant::now() < deadline {
                    if wal.append_durable(&payload).is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

struct CommitPoint {
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// Commit throughput/latency through Primary::append with two replicas connected.
async fn commit_point(
    env: &Env,
    quorum: Quorum,
    writers: usize,
    secs: Duration,
) -> BenchResult<CommitPoint> {
    let tag = format!("q{}-w{writers}", quorum.setting());
    let primary = Primary::open(env.primary_config(&env.fresh_dir(&format!("{tag}-p")), quorum))?;
    let r1 = env.replica("r1", &env.fresh_dir(&format!("{tag}-r1")), &primary)?;
    let r2 = env.replica("r2", &env.fresh_dir(&format!("{tag}-r2")), &primary)?;
    let connected = Instant::now();
    while !primary.status().replicas.iter().all(|r| r.shipping) {
        if connected.elapsed() > Duration::from_secs(30) {
            return Err("replicas did not connect".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let primary = Arc::new(primary);
    let start = Instant::now();
    let deadline = start + secs;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let primary = primary.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let payload = vec![0xCDu8; RECORD];
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if primary.append(payload.clone()).await.is_err() {
                    break;
                }
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    let point = CommitPoint {
        ops_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
    };
    r1.shutdown().await?;
    r2.shutdown().await?;
    match Arc::try_unwrap(primary) {
        Ok(p) => {
            p.shutdown().await;
        }
        Err(_) => return Err("primary still shared".into()),
    }
    Ok(point)
}

/// Durable sequential write rate: `bytes` written in 1 MiB chunks, then one fsync.
fn disk_write_rate(env: &Env, bytes: u64) -> BenchResult<f64> {
    let path = env.root.path().join("disk-probe");
    let chunk = vec![0x5Au8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let rate = mb_per_s(bytes, start.elapsed());
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// Raw throughput of one quinn stream over loopback with the cluster's TLS.
async fn quinn_stream_rate(env: &Env, bytes: u64) -> BenchResult<f64> {
    let opts = TransportOptions::default();
    let members = vec!["p".to_string(), "r1".to_string(), "r2".to_string()];
    let server =
        walship_wire::server_endpoint("127.0.0.1:0".parse()?, &env.tls("p"), &members, &opts)?;
    let addr = server.local_addr()?;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.ok_or("no connection")?.await?;
        let mut recv = conn.accept_uni().await?;
        let mut got = 0u64;
        while let Some(chunk) = recv.read_chunk(1 << 20, true).await? {
            got += chunk.bytes.len() as u64;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((got, Instant::now(), conn))
    });
    let client = walship_wire::client_endpoint("127.0.0.1:0".parse()?, &env.tls("r1"), &opts)?;
    let conn = walship_wire::connect(&client, addr, "p").await?;
    let mut send = conn.open_uni().await?;
    let chunk = vec![0x77u8; 1 << 20];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        send.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    send.finish()?;
    let (got, end, _server_conn) = receiver.await??;
    if got != bytes {
        return Err(format!("quinn probe received {got} of {bytes} bytes").into());
    }
    conn.close(0u32.into(), b"done");
    Ok(mb_per_s(bytes, end - start))
}

/// Catch-up: a primary holding `bytes` of 1 KiB records; an empty replica connects; time until
/// the replica's receipts cover the whole log (durable there).
async fn catch_up_rate(env: &Env, bytes: u64) -> BenchResult<(f64, u64, Duration)> {
    let pdir = env.fresh_dir("catchup-p");
    let records = bytes / (RECORD + RECORD_HEADER_LEN) as u64;
    {
        let node = NodeDir::open(FsStorage, &pdir)?;
        let mut epochs = EpochHistory::new();
        epochs.push(1, 1)?;
        node.set_epochs(&epochs)?;
        let (mut wal, _) = Wal::open(FsStorage, node.wal_dir(), WalOptions::default())?;
        let payload = vec![0xEFu8; RECORD];
        let batch: Vec<&[u8]> = (0..1024).map(|_| payload.as_slice()).collect();
        let mut left = records;
        while left > 0 {
            let n = left.min(batch.len() as u64) as usize;
            wal.append_batch(&batch[..n])?;
            left -= n as u64;
        }
        wal.sync()?;
    }
    let primary = Primary::open(env.primary_config(&pdir, Quorum::LocalOnly))?;
    let last = primary.durable_lsn();
    let start = Instant::now();
    let r1 = env.replica("r1", &env.fresh_dir("catchup-r1"), &primary)?;
    loop {
        if primary.status().replicas[0].durable_lsn >= last {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err("catch-up did not finish in 600 s".into());
        }
        match r1.status().state {
            ReplicaState::Halted(h) => {
                return Err(format!("replica halted during catch-up: {h:?}").into())
            }
            ReplicaState::Stopped(why) => {
                return Err(format!("replica stopped during catch-up: {why}").into())
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    let shipped = last * (RECORD + RECORD_HEADER_LEN) as u64;
    r1.shutdown().await?;
    primary.shutdown().await;
    Ok((mb_per_s(shipped, took), shipped, took))
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> BenchResult<()> {
    let secs = Duration::from_secs(env_u64("WALSHIP_BENCH_SECS", 3));
    let catchup_mb = env_u64("WALSHIP_BENCH_CATCHUP_MB", 256);
    let env = Env::new()?;
    // WALSHIP_BENCH_ONLY=commit|catchup runs one half (for experiments).
    let only = std::env::var("WALSHIP_BENCH_ONLY").unwrap_or_default();
    println!(
        "walship repl_bench: loopback, {RECORD}-byte records, {} s per commit point, data in {}",
        secs.as_secs(),
        env.root.path().display()
    );

    let mut local = Vec::new();
    let mut majority64 = 0.0;
    if only != "catchup" {
        println!("\nlocal-only durable append rate (SharedWal group commit, no network):");
        for w in WRITERS {
            let r = local_durable_rate(&env, w, secs)?;
            println!("  writers {w:>3}: {r:>10.0} records/s");
            local.push(r);
        }

        println!("\ncommit through Primary::append, two replicas connected:");
        println!(
            "  {:<10} {:>7} {:>14} {:>10} {:>10}",
            "quorum", "writers", "commits/s", "p50 ms", "p99 ms"
        );
        for quorum in [Quorum::LocalOnly, Quorum::Majority] {
            for w in WRITERS {
                let p = commit_point(&env, quorum, w, secs).await?;
                println!(
                    "  {:<10} {:>7} {:>14.0} {:>10.2} {:>10.2}",
                    quorum.setting(),
                    w,
                    p.ops_per_s,
                    p.p50.as_secs_f64() * 1e3,
                    p.p99.as_secs_f64() * 1e3
                );
                if quorum == Quorum::Majority && w == 64 {
                    majority64 = p.ops_per_s;
                }
            }
        }
        // The machine is shared: measure the baseline again right after and use the mean.
        let again = local_durable_rate(&env, 64, secs)?;
        println!("\nlocal-only durable append rate again, writers 64: {again:.0} records/s");
        if let Some(first) = local.get_mut(2) {
            *first = (*first + again) / 2.0;
        }
    }
    if only == "commit" {
        return Ok(());
    }

    let bytes = catchup_mb * 1024 * 1024;
    println!("\ncatch-up of an empty replica behind {catchup_mb} MiB, and the two limits:");
    let disk = disk_write_rate(&env, bytes)?;
    println!("  disk durable sequential write ({catchup_mb} MiB + fsync): {disk:>8.1} MB/s");
    let quic = quinn_stream_rate(&env, bytes).await?;
    println!("  one quinn stream, loopback, TLS ({catchup_mb} MiB):        {quic:>8.1} MB/s");
    let (catch, shipped, took) = catch_up_rate(&env, bytes).await?;
    println!(
        "  replica catch-up ({:.1} MB in {:.2} s):                   {catch:>8.1} MB/s",
        shipped as f64 / 1e6,
        took.as_secs_f64()
    );
    // Limits measured again after the catch-up; the mean of both runs is the limit.
    let disk2 = disk_write_rate(&env, bytes)?;
    let quic2 = quinn_stream_rate(&env, bytes).await?;
    println!("  limits again: disk {disk2:.1} MB/s, quinn {quic2:.1} MB/s");
    let disk = (disk + disk2) / 2.0;
    let quic = (quic + quic2) / 2.0;

    let local64 = local.get(2).copied().unwrap_or(f64::NAN);
    let r1 = majority64 / local64;
    let limit = disk.min(quic);
    let r2 = catch / limit;
    let verdict = |ok: bool| if ok { "meets target" } else { "BELOW target" };
    println!("\nratios:");
    println!(
        "  majority@64 / local-only@64 (mean of 2) = {majority64:.0} / {local64:.0} = {:.0}% (target >= 50%): {}",
        r1 * 100.0,
        verdict(r1 >= 0.5)
    );
    println!(
        "  catch-up / min(disk, quinn) (means of 2) = {catch:.1} / {limit:.1} = {:.0}% (target >= 80%): {}",
        r2 * 100.0,
        verdict(r2 >= 0.8)
    );
    Ok(())
}
