//! Replication benchmark (issues 3 and 14), one run on loopback with 1 KiB records. Every
//! figure is printed with its durability setting:
//!
//! - local-only durable appends (`SharedWal::append_durable` group commit, no network:
//!   acknowledged after write + fdatasync of the primary's WAL) with 1/16/64 writers, measured
//!   before and again after the commit points (the mean is the baseline);
//! - commits through `Primary::append` with two real replicas connected: quorum 0 (acknowledged
//!   after the primary's fdatasync; replicas asynchronous) at 1 and 64 writers, majority
//!   (acknowledged after the primary's fdatasync and one replica's fdatasync receipt) at
//!   1/16/64 writers; rate, p50 and p99 commit latency per point;
//! - catch-up MB/s of a replica starting empty behind a primary holding
//!   `WALSHIP_BENCH_CATCHUP_MB` (default 256; 1024 for the full 1 GiB), beside this disk's
//!   durable sequential write rate (same size written, then fsync) and one plain quinn
//!   stream's raw throughput over loopback (same TLS);
//! - the issue-14 ratios, each with its target and met/missed: majority vs PostgreSQL
//!   (synchronous standby) at 1/16/64 clients when the PostgreSQL figures are given,
//!   quorum-0@1 / local-only@1, majority@64 / local-only@64, catch-up / min(disk, quinn).
//!
//! `cargo bench -p walship-primary --bench repl_bench`. Env:
//! - `WALSHIP_BENCH_SECS` (seconds per commit point, default 3), `WALSHIP_BENCH_CATCHUP_MB`,
//!   `WALSHIP_BENCH_DIR` (where the data goes; default the system temp dir);
//! - `WALSHIP_BENCH_ONLY=commit|catchup|stages` runs one part; `=one` the one-writer points
//!   only (local-only, quorum 0 with and without replicas, majority), `=w64` local-only and
//!   majority at 64 writers, each once, for experiments;
//! - `WALSHIP_BENCH_STAGES_QUORUM=0`: the stage breakdown of quorum-0 commits instead;
//! - `WALSHIP_BENCH_CPU=1`: CPU time per thread of each commit point and of the quinn probe
//!   (the catch-up always prints its own), from `/proc/self/task` (Linux);
//! - `WALSHIP_BENCH_PG="1=950,16=5966,64=7864"`: PostgreSQL tps with `synchronous_commit=on`
//!   (one synchronous standby, remote flush) per client count, as printed by
//!   `../shared/bench/pg_sync_baseline.sh`; `WALSHIP_BENCH_PG_LOCAL` the same for
//!   `synchronous_commit=local` (shown for context). `bench/compare_pg.sh` runs both in one go;
//! - `WALSHIP_BENCH_STAGES=1`: adds "where the time goes", a per-stage latency breakdown of
//!   majority commits with one writer, from the `walship::stage` TRACE events of the primary
//!   and replica drivers (recorded by a `tracing` layer this bench installs; off otherwise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walship_node::primary::{Primary, PrimaryConfig, Quorum};
use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaState};
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

/// Rate and latency of one measured point.
#[derive(Clone, Copy)]
struct Point {
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
}

impl Point {
    fn from_latencies(mut lat: Vec<Duration>, elapsed: Duration) -> Point {
        lat.sort_unstable();
        Point {
            ops_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
        }
    }
    /// The mean of two runs of the same point (the machine is shared).
    fn mean(a: Point, b: Point) -> Point {
        Point {
            ops_per_s: (a.ops_per_s + b.ops_per_s) / 2.0,
            p50: (a.p50 + b.p50) / 2,
            p99: (a.p99 + b.p99) / 2,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Local-only durable append rate: `writers` threads on one SharedWal, each append_durable.
fn local_durable_point(env: &Env, writers: usize, secs: Duration) -> BenchResult<Point> {
    let dir = env.fresh_dir(&format!("local-{writers}"));
    let (wal, _) = Wal::open(FsStorage, &dir, WalOptions::default())?;
    let wal = SharedWal::new(wal);
    let start = Instant::now();
    let deadline = start + secs;
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let payload = vec![0xABu8; RECORD];
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    if wal.append_durable(&payload).is_err() {
                        break;
                    }
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| "local writer thread panicked")?);
    }
    Ok(Point::from_latencies(lat, start.elapsed()))
}

/// A primary and its connected replicas (two, or none for the diagnostic point).
struct Cluster {
    primary: Arc<Primary>,
    replicas: Vec<Replica>,
}

impl Cluster {
    async fn start(env: &Env, quorum: Quorum, tag: &str) -> BenchResult<Cluster> {
        Cluster::start_with(env, quorum, tag, true).await
    }

    /// `with_replicas == false`: the primary alone (quorum 0 only), to tell the cost of
    /// `Primary::append`'s own path from that of the replicas sharing the machine.
    async fn start_with(
        env: &Env,
        quorum: Quorum,
        tag: &str,
        with_replicas: bool,
    ) -> BenchResult<Cluster> {
        let primary =
            Primary::open(env.primary_config(&env.fresh_dir(&format!("{tag}-p")), quorum))?;
        let mut replicas = Vec::new();
        if with_replicas {
            for r in ["r1", "r2"] {
                let dir = env.fresh_dir(&format!("{tag}-{r}"));
                replicas.push(env.replica(r, &dir, &primary)?);
            }
        }
        let connected = Instant::now();
        while with_replicas && !primary.status().replicas.iter().all(|r| r.shipping) {
            if connected.elapsed() > Duration::from_secs(30) {
                return Err("replicas did not connect".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Cluster {
            primary: Arc::new(primary),
            replicas,
        })
    }

    async fn stop(self) -> BenchResult<()> {
        for r in self.replicas {
            r.shutdown().await?;
        }
        match Arc::try_unwrap(self.primary) {
            Ok(p) => match p.shutdown().await {
                None => Ok(()),
                Some(stop) => Err(format!("primary stopped: {stop}").into()),
            },
            Err(_) => Err("primary still shared".into()),
        }
    }
}

/// `writers` tasks appending through `Primary::append` until `deadline`; per commit its
/// start, lsn and end.
async fn drive_appends(
    primary: &Arc<Primary>,
    writers: usize,
    deadline: Instant,
) -> BenchResult<Vec<(Instant, Lsn, Instant)>> {
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let primary = primary.clone();
        tasks.push(tokio::spawn(async move {
            let mut commits = Vec::new();
            let payload = vec![0xCDu8; RECORD];
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match primary.append(payload.clone()).await {
                    Ok(lsn) => commits.push((t0, lsn, Instant::now())),
                    Err(_) => break,
                }
            }
            commits
        }));
    }
    let mut commits = Vec::new();
    for t in tasks {
        commits.extend(t.await?);
    }
    Ok(commits)
}

/// Commit throughput/latency through Primary::append with two replicas connected.
async fn commit_point(
    env: &Env,
    quorum: Quorum,
    writers: usize,
    secs: Duration,
) -> BenchResult<Point> {
    commit_point_with(env, quorum, writers, secs, true).await
}

/// [`commit_point`], optionally with no replica connected (see [`Cluster::start_with`]).
async fn commit_point_with(
    env: &Env,
    quorum: Quorum,
    writers: usize,
    secs: Duration,
    with_replicas: bool,
) -> BenchResult<Point> {
    let tag = format!(
        "q{}-w{writers}-r{}",
        quorum.setting(),
        u8::from(with_replicas)
    );
    let cluster = Cluster::start_with(env, quorum, &tag, with_replicas).await?;
    let cpu_before = thread_cpu_ns();
    let start = Instant::now();
    let commits = drive_appends(&cluster.primary, writers, start + secs).await?;
    let elapsed = start.elapsed();
    if std::env::var("WALSHIP_BENCH_CPU").is_ok_and(|v| v == "1") {
        let what = format!(
            "quorum {}, {writers} writers{}",
            quorum.setting(),
            if with_replicas { "" } else { ", no replica" }
        );
        print_thread_cpu(&what, &cpu_before, &thread_cpu_ns(), elapsed);
    }
    cluster.stop().await?;
    let lat = commits.iter().map(|(t0, _, t1)| *t1 - *t0).collect();
    Ok(Point::from_latencies(lat, elapsed))
}

/// "Where the time goes": a `tracing` layer that timestamps the `walship::stage` TRACE events
/// of the primary and replica drivers. Each event says a stage reached every lsn up to `lsn`;
/// a commit of lsn L passed a stage at the first event of that stage (from either replica: a
/// majority of three commits on the first receipt) whose watermark reaches L.
mod stages {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tracing::field::{Field, Visit};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};

    pub const TARGET: &str = "walship::stage";
    /// The stages between `Primary::append` being called and returning, in commit order.
    pub const STAGES: [&str; 13] = [
        "primary_written",
        "primary_fsync",
        "frame_dequeued",
        "frame_sent",
        "replica_receive",
        "replica_exec_frame",
        "replica_written",
        "replica_fsync",
        "receipt_sent",
        "receipt_dequeued",
        "receipt_received",
        "receipt_exec",
        "commit_advanced",
    ];

    /// (stage index, lsn watermark, when) in arrival order.
    pub type Events = Arc<Mutex<Vec<(usize, u64, Instant)>>>;

    pub struct Recorder {
        pub events: Events,
        pub on: Arc<AtomicBool>,
    }

    #[derive(Default)]
    struct Fields {
        stage: Option<usize>,
        lsn: Option<u64>,
    }
    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "stage" {
                self.stage = STAGES.iter().position(|s| *s == value);
            }
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "lsn" {
                self.lsn = Some(value);
            }
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            if field.name() == "lsn" {
                self.lsn = u64::try_from(value).ok();
            }
        }
        fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
    }

    impl<S: Subscriber> Layer<S> for Recorder {
        fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
            // Everything but the stage events stays disabled (no spans, no logs).
            if m.target() == TARGET {
                Interest::always()
            } else {
                Interest::never()
            }
        }
        fn enabled(&self, m: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
            m.target() == TARGET
        }
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            if !self.on.load(Ordering::Relaxed) {
                return;
            }
            let mut f = Fields::default();
            event.record(&mut f);
            if let (Some(stage), Some(lsn)) = (f.stage, f.lsn) {
                let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
                ev.push((stage, lsn, Instant::now()));
            }
        }
    }

    /// Per commit (start, lsn, end): the time of each stage after the start, where found.
    pub fn breakdown(
        events: &[(usize, u64, Instant)],
        commits: &[(Instant, u64, Instant)],
    ) -> Vec<[Option<f64>; STAGES.len()]> {
        // Per stage: (when, running max watermark), both non-decreasing.
        let mut per: Vec<Vec<(Instant, u64)>> = vec![Vec::new(); STAGES.len()];
        for &(s, lsn, at) in events {
            let v = &mut per[s];
            let max = v.last().map_or(lsn, |&(_, m)| m.max(lsn));
            v.push((at, max));
        }
        commits
            .iter()
            .map(|&(t0, lsn, _)| {
                let mut row = [None; STAGES.len()];
                for (s, v) in per.iter().enumerate() {
                    let i = v.partition_point(|&(at, max)| at < t0 || max < lsn);
                    if let Some(&(at, _)) = v.get(i) {
                        row[s] = Some((at - t0).as_secs_f64() * 1e3);
                    }
                }
                row
            })
            .collect()
    }
}

/// Installs the stage recorder as the global `tracing` subscriber (`WALSHIP_BENCH_STAGES=1`).
fn install_stage_recorder() -> BenchResult<stages::Recorder> {
    use tracing_subscriber::layer::SubscriberExt;
    let events: stages::Events = Arc::default();
    let on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let layer = stages::Recorder {
        events: events.clone(),
        on: on.clone(),
    };
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
    Ok(stages::Recorder { events, on })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[(v.len() - 1) / 2])
}

/// Majority commits with one writer, stage events recorded; prints p50 per stage.
async fn stage_breakdown(
    env: &Env,
    rec: &stages::Recorder,
    quorum: Quorum,
    secs: Duration,
) -> BenchResult<()> {
    let cluster = Cluster::start(env, quorum, "stages").await?;
    rec.events.lock().unwrap_or_else(|p| p.into_inner()).clear();
    rec.on.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let commits = drive_appends(&cluster.primary, 1, start + secs).await?;
    rec.on.store(false, Ordering::Relaxed);
    cluster.stop().await?;
    let events = std::mem::take(&mut *rec.events.lock().unwrap_or_else(|p| p.into_inner()));
    let rows = stages::breakdown(&events, &commits);
    let total: Vec<f64> = commits
        .iter()
        .map(|(t0, _, t1)| (*t1 - *t0).as_secs_f64() * 1e3)
        .collect();
    println!(
        "\nwhere the time goes: quorum {} commit, 1 writer, {} commits, {} stage events; \
         p50 per stage, from Primary::append called:",
        quorum.setting(),
        commits.len(),
        events.len()
    );
    println!(
        "  {:<44} {:>12} {:>12} {:>9}",
        "stage (reached by the commit's lsn)", "p50 at ms", "p50 step ms", "found"
    );
    println!(
        "  {:<44} {:>12.3}",
        "append called (handed to the executor thread)", 0.0
    );
    let label = [
        "primary WAL write done (executor)",
        "primary fdatasync done (executor group sync)",
        "writer task took the frame (thread hop)",
        "frame handed to quinn (writer task)",
        "replica read the frame",
        "replica executor got the frame (thread hop)",
        "replica WAL write done (replica executor)",
        "replica fdatasync done",
        "receipt queued for the writer (replica)",
        "replica writer task took it (thread hop)",
        "receipt read by the primary",
        "primary executor got it (thread hop)",
        "commit advanced (executor)",
    ];
    let mut prev: Vec<f64> = vec![0.0; rows.len()];
    for (s, name) in label.iter().enumerate() {
        let mut at = Vec::new();
        let mut step = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if let Some(t) = row[s] {
                at.push(t);
                step.push(t - prev[i]);
                prev[i] = t;
            }
        }
        let found = at.len();
        match (median(at), median(step)) {
            (Some(a), Some(d)) => println!(
                "  {name:<44} {a:>12.3} {d:>12.3} {:>8.0}%",
                found as f64 * 100.0 / rows.len().max(1) as f64
            ),
            _ => println!("  {name:<44} {:>12} {:>12} {:>9}", "-", "-", "0%"),
        }
    }
    let mut step = Vec::new();
    for (i, t) in total.iter().enumerate() {
        step.push(t - prev[i]);
    }
    println!(
        "  {:<44} {:>12.3} {:>12.3} {:>8}%",
        "append returned (ack delivered, task woken)",
        median(total).unwrap_or(f64::NAN),
        median(step).unwrap_or(f64::NAN),
        100
    );
    println!("  (\"step\": p50 of the time since the previous stage of the same commit)");
    Ok(())
}

/// PostgreSQL figures given as `clients=tps,...` (e.g. `1=950,16=5966,64=7864`).
fn pg_figures(var: &str) -> BenchResult<Vec<(usize, f64)>> {
    let Ok(v) = std::env::var(var) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (c, t) = part
            .split_once('=')
            .ok_or_else(|| format!("{var}: `{part}` is not clients=tps"))?;
        let c: usize = c
            .trim()
            .parse()
            .map_err(|e| format!("{var}: clients `{c}`: {e}"))?;
        let t: f64 = t
            .trim()
            .parse()
            .map_err(|e| format!("{var}: tps `{t}`: {e}"))?;
        out.push((c, t));
    }
    Ok(out)
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
    let cpu_before = thread_cpu_ns();
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        send.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    send.finish()?;
    let (got, end, _server_conn) = receiver.await??;
    if std::env::var("WALSHIP_BENCH_CPU").is_ok_and(|v| v == "1") {
        print_thread_cpu("quinn probe", &cpu_before, &thread_cpu_ns(), end - start);
    }
    if got != bytes {
        return Err(format!("quinn probe received {got} of {bytes} bytes").into());
    }
    conn.close(0u32.into(), b"done");
    Ok(mb_per_s(bytes, end - start))
}

/// CPU time of this process's threads by name (Linux: `/proc/self/task/*/comm` and the
/// first field of `schedstat`, nanoseconds on a CPU); empty elsewhere. The difference of two
/// readings says which threads a phase kept busy (threads that ended in between are lost).
fn thread_cpu_ns() -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(p.join("comm")),
            std::fs::read_to_string(p.join("schedstat")),
        ) else {
            continue;
        };
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *by_name.entry(comm.trim().to_string()).or_insert(0) += ns;
    }
    by_name
}

/// Prints where the CPU went between two [`thread_cpu_ns`] readings over `wall`.
fn print_thread_cpu(
    what: &str,
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    wall: Duration,
) {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(*before.get(k).unwrap_or(&0));
            (k.clone(), d as f64 / 1e9)
        })
        .filter(|(_, s)| *s > 0.0005)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "    CPU by thread, {what}, over {:.2} s wall ({:.2} CPU-s in all = {:.0}% of {cores} cores):",
        wall.as_secs_f64(),
        total,
        total * 100.0 / (cores as f64 * wall.as_secs_f64())
    );
    for (name, s) in rows {
        println!(
            "      {name:<18} {s:>7.3} CPU-s ({:>3.0}% of one core)",
            s * 100.0 / wall.as_secs_f64()
        );
    }
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
    let cpu_before = thread_cpu_ns();
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
    let cpu_after = thread_cpu_ns();
    let shipped = last * (RECORD + RECORD_HEADER_LEN) as u64;
    print_thread_cpu("catch-up", &cpu_before, &cpu_after, took);
    r1.shutdown().await?;
    if let Some(stop) = primary.shutdown().await {
        return Err(format!("primary stopped: {stop}").into());
    }
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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn print_point(label: &str, writers: usize, p: &Point) {
    println!(
        "  {label:<12} {writers:>7} {:>12.0} {:>9.2} {:>9.2}",
        p.ops_per_s,
        ms(p.p50),
        ms(p.p99)
    );
}

async fn run() -> BenchResult<()> {
    let secs = Duration::from_secs(env_u64("WALSHIP_BENCH_SECS", 3));
    let catchup_mb = env_u64("WALSHIP_BENCH_CATCHUP_MB", 256);
    let stages_on = std::env::var("WALSHIP_BENCH_STAGES").is_ok_and(|v| v == "1");
    let pg_on = pg_figures("WALSHIP_BENCH_PG")?;
    let pg_local = pg_figures("WALSHIP_BENCH_PG_LOCAL")?;
    let recorder = if stages_on {
        Some(install_stage_recorder()?)
    } else {
        None
    };
    let env = Env::new()?;
    // WALSHIP_BENCH_ONLY=commit|catchup|stages runs one part (for experiments).
    let only = std::env::var("WALSHIP_BENCH_ONLY").unwrap_or_default();
    println!(
        "walship repl_bench: loopback, {RECORD}-byte records, {} s per commit point, data in {}",
        secs.as_secs(),
        env.root.path().display()
    );

    let mut ratios: Vec<String> = Vec::new();
    if only == "one" {
        // Experiments on the one-writer path: local-only, quorum 0 with and without the
        // replicas, majority; each point once.
        println!(
            "  {:<12} {:>7} {:>12} {:>9} {:>9}",
            "", "writers", "ops/s", "p50 ms", "p99 ms"
        );
        let l = local_durable_point(&env, 1, secs)?;
        print_point("local-only", 1, &l);
        let solo = commit_point_with(&env, Quorum::LocalOnly, 1, secs, false).await?;
        print_point("0, alone", 1, &solo);
        let q = commit_point(&env, Quorum::LocalOnly, 1, secs).await?;
        print_point("0", 1, &q);
        let m = commit_point(&env, Quorum::Majority, 1, secs).await?;
        print_point("majority", 1, &m);
        println!(
            "  quorum 0 / local-only = {:.2}x; alone / local-only = {:.2}x",
            q.ops_per_s / l.ops_per_s,
            solo.ops_per_s / l.ops_per_s
        );
    }
    if only == "w64" {
        // Experiments on the 64-writer path: local-only and majority, each point once.
        let l = local_durable_point(&env, 64, secs)?;
        print_point("local-only", 64, &l);
        let m = commit_point(&env, Quorum::Majority, 64, secs).await?;
        print_point("majority", 64, &m);
        println!(
            "  majority / local-only = {:.0}%",
            m.ops_per_s * 100.0 / l.ops_per_s
        );
    }
    if only.is_empty() || only == "commit" {
        println!(
            "\nlocal-only durable appends (SharedWal::append_durable group commit, no network; \
             durability: write + fdatasync of the primary's WAL):"
        );
        println!(
            "  {:<12} {:>7} {:>12} {:>9} {:>9}",
            "", "writers", "records/s", "p50 ms", "p99 ms"
        );
        let mut local = Vec::new();
        for w in WRITERS {
            let p = local_durable_point(&env, w, secs)?;
            print_point("local-only", w, &p);
            local.push((w, p));
        }

        println!(
            "\ncommits through Primary::append, two replicas connected (quorum 0: acknowledged after \
             the primary's fdatasync, replicas asynchronous; majority (-1) of 3: after the primary's \
             fdatasync and one replica's fdatasync receipt):"
        );
        println!(
            "  {:<12} {:>7} {:>12} {:>9} {:>9}",
            "quorum", "writers", "commits/s", "p50 ms", "p99 ms"
        );
        let mut q0 = Vec::new();
        for w in [1, 64] {
            let p = commit_point(&env, Quorum::LocalOnly, w, secs).await?;
            print_point("0", w, &p);
            q0.push((w, p));
        }
        // Diagnostic: the same path with no replica running, so the cost of the path itself
        // (hand-off to the executor and back) shows apart from the replicas' share of the
        // two cores and the disk.
        let solo = commit_point_with(&env, Quorum::LocalOnly, 1, secs, false).await?;
        print_point("0, alone", 1, &solo);
        let mut majority = Vec::new();
        for w in WRITERS {
            let p = commit_point(&env, Quorum::Majority, w, secs).await?;
            print_point("majority", w, &p);
            majority.push((w, p));
        }
        // The machine is shared: the baselines of the ratios are measured again right after,
        // and the mean of both runs is used.
        println!(
            "\nlocal-only durable appends again (same durability), and the mean of both runs:"
        );
        for (w, first) in local.iter_mut().filter(|(w, _)| *w == 1 || *w == 64) {
            let again = local_durable_point(&env, *w, secs)?;
            print_point("again", *w, &again);
            *first = Point::mean(*first, again);
            print_point("mean", *w, first);
        }

        let at = |v: &[(usize, Point)], w: usize| v.iter().find(|(x, _)| *x == w).map(|(_, p)| *p);
        if pg_on.is_empty() {
            ratios.push(
                "majority / PostgreSQL sync standby (target >= 1.5x at 1, 16, 64): not measured \
                 (no WALSHIP_BENCH_PG; run bench/compare_pg.sh)"
                    .into(),
            );
        } else {
            println!(
                "\nPostgreSQL figures given (pgbench 1 KiB insert, fsync=on; synchronous_commit=on: \
                 acknowledged after the primary's flush and the synchronous standby's flush):"
            );
            for (c, t) in &pg_on {
                let local = pg_local.iter().find(|(x, _)| x == c).map(|(_, t)| *t);
                match local {
                    Some(l) => println!(
                        "  clients {c:>3}: synchronous_commit=on {t:>9.0} tps, =local {l:>9.0} tps"
                    ),
                    None => println!("  clients {c:>3}: synchronous_commit=on {t:>9.0} tps"),
                }
            }
            for w in WRITERS {
                let (Some(m), Some((_, pg))) =
                    (at(&majority, w), pg_on.iter().find(|(c, _)| *c == w))
                else {
                    ratios.push(format!(
                        "majority@{w} / PostgreSQL sync standby@{w}: no PostgreSQL figure for {w} clients"
                    ));
                    continue;
                };
                let r = m.ops_per_s / pg;
                ratios.push(format!(
                    "majority@{w} / PostgreSQL synchronous_commit=on@{w} = {:.0} / {pg:.0} = {r:.2}x \
                     (target >= 1.5x): {}",
                    m.ops_per_s,
                    verdict(r >= 1.5)
                ));
            }
        }
        if let (Some(q), Some(l)) = (at(&q0, 1), at(&local, 1)) {
            let r = q.ops_per_s / l.ops_per_s;
            ratios.push(format!(
                "quorum-0@1 / local-only@1 (mean of 2) = {:.0} / {:.0} = {r:.2}x (target >= 0.8x): {}",
                q.ops_per_s,
                l.ops_per_s,
                verdict(r >= 0.8)
            ));
        }
        if let Some(l) = at(&local, 1) {
            ratios.push(format!(
                "(diagnostic) quorum-0@1 with no replica running / local-only@1 = {:.0} / {:.0} = {:.2}x",
                solo.ops_per_s,
                l.ops_per_s,
                solo.ops_per_s / l.ops_per_s
            ));
        }
        if let (Some(m), Some(l)) = (at(&majority, 64), at(&local, 64)) {
            let r = m.ops_per_s / l.ops_per_s;
            ratios.push(format!(
                "majority@64 / local-only@64 (mean of 2) = {:.0} / {:.0} = {:.0}% (target >= 60%): {}",
                m.ops_per_s,
                l.ops_per_s,
                r * 100.0,
                verdict(r >= 0.6)
            ));
        }
    }

    if let Some(rec) = &recorder {
        if only.is_empty() || only == "stages" {
            // WALSHIP_BENCH_STAGES_QUORUM=0: the stages of a quorum-0 commit instead.
            let quorum = match std::env::var("WALSHIP_BENCH_STAGES_QUORUM").as_deref() {
                Ok("0") => Quorum::LocalOnly,
                _ => Quorum::Majority,
            };
            stage_breakdown(&env, rec, quorum, secs).await?;
        }
    }

    if only.is_empty() || only == "catchup" {
        let bytes = catchup_mb * 1024 * 1024;
        println!(
            "\ncatch-up of an empty replica behind {catchup_mb} MiB (durable on the replica: \
             receipts cover the log), and the two limits:"
        );
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
        let limit = ((disk + disk2) / 2.0).min((quic + quic2) / 2.0);
        let r = catch / limit;
        ratios.push(format!(
            "catch-up / min(disk, one quinn stream) (means of 2) = {catch:.1} / {limit:.1} MB/s = {:.0}% \
             (target >= 80%): {}",
            r * 100.0,
            verdict(r >= 0.8)
        ));
    }

    if !ratios.is_empty() {
        println!("\nratios (issue 14 targets):");
        for r in ratios {
            println!("  {r}");
        }
    }
    Ok(())
}
