//! `walship demo`: a primary and two replicas as separate processes on
//! loopback, over real QUIC with mutual TLS and fresh certificates.
//!
//! The orchestrator (this process) makes certificates and configs, starts
//! the two replicas with `walship node`, and the primary with the hidden
//! `walship demo-primary`, which embeds `Primary`, writes the records with
//! majority commit, and then — through the primary's `fault-injection` hook,
//! reachable only from this subcommand — sends one corrupted record to one
//! replica. The orchestrator relays progress, reads the halted replica's
//! halt file from its data directory, and prints a summary.
//!
//! A third act runs three cluster members (`role = "member"`) under continuous appends,
//! kills the elected primary with SIGKILL and shows the failover ([`crate::drill`]).
//!
//! The demo-primary speaks to the orchestrator in single-line JSON events on
//! stdout (see [`Event`]); logs go to `<dir>/<node>.log`.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use walship::config::{NodeConfig, RoleConfig};
use walship_node::primary::{Primary, ShipFault};
use walship_wal::storage::FsStorage;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const PRIMARY: &str = "n1";
const HEALTHY: &str = "n2";
const VICTIM: &str = "n3";
/// Records written after the fault, so both replicas have something to receive.
const AFTER_FAULT: u64 = 200;
/// Concurrent writers in the demo primary (group commit + pipelined shipping).
const WRITERS: u64 = 32;
const PAYLOAD_BYTES: usize = 256;

/// One line of the demo-primary's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Event {
    /// Both replicas are connected.
    Ready,
    /// Periodic progress while writing.
    Progress {
        committed: u64,
        elapsed_ms: u64,
        replicas: Vec<ReplicaLine>,
    },
    /// The corrupt-next-record hook was armed for `replica`.
    FaultArmed { replica: String, next_lsn: u64 },
    /// Writing finished and the healthy replica caught up.
    Done {
        records: u64,
        commit_lsn: u64,
        elapsed_ms: u64,
        replicas: Vec<ReplicaLine>,
    },
    /// Something went wrong in the primary.
    Failed { message: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct ReplicaLine {
    id: String,
    connected: bool,
    durable_lsn: u64,
    lag_records: u64,
    lag_bytes: u64,
}

struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            // SIGTERM first so nodes shut down gracefully; then reap.
            // SAFETY-free: libc::kill on a pid we own.
            let _ = send_sigterm(child);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn send_sigterm(child: &Child) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn free_udp_port() -> Result<u16, String> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    sock.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

fn write_configs(dir: &Path, port: u16) -> Result<(), String> {
    for node in NODES {
        let role = if node == PRIMARY {
            format!(
                "role = \"primary\"\nlisten_addr = \"127.0.0.1:{port}\"\nmembers = [\"n1\", \"n2\", \"n3\"]\nquorum = -1\ncommit_timeout_ms = 10000\n"
            )
        } else {
            format!("role = \"replica\"\nprimary_addr = \"127.0.0.1:{port}\"\nprimary_name = \"{PRIMARY}\"\n")
        };
        let text = format!(
            "# written by `walship demo`\nnode_id = \"{node}\"\ncluster_id = \"demo\"\ndata_dir = \"{node}\"\n{role}\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{node}.pem\"\nkey = \"certs/{node}.key\"\n\n[transport]\nkeep_alive_ms = 500\nidle_timeout_ms = 3000\n"
        );
        let path = dir.join(format!("{node}.toml"));
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn spawn(dir: &Path, node: &str, args: &[&str]) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let log_path = dir.join(format!("{node}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("create {}: {e}", log_path.display()))?;
    Command::new(exe)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("spawn {node}: {e}"))
}

/// The orchestrator: `walship demo`.
pub fn run(data_dir: Option<PathBuf>, records: u64) -> Result<(), String> {
    if records == 0 {
        return Err("--records must be at least 1".into());
    }
    let started = Instant::now();
    let (dir, _temp) = match data_dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(&d)
                    .map_err(|e| e.to_string())?
                    .next()
                    .is_some()
            {
                return Err(format!(
                    "--data-dir {} is not empty; the demo starts from nothing",
                    d.display()
                ));
            }
            std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("walship-demo-")
                .tempdir()
                .map_err(|e| format!("temp dir: {e}"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    println!("walship demo in {}", dir.display());
    walship_wire::certs::generate(&dir.join("certs"), &NODES).map_err(|e| format!("certs: {e}"))?;
    let port = free_udp_port()?;
    write_configs(&dir, port)?;
    println!("  certificates: fresh CA + n1, n2, n3 (mutual TLS, ALPN walship/3)");
    println!("  primary n1 on 127.0.0.1:{port} (quorum: majority), replicas n2 and n3");

    let mut children = Children(Vec::new());
    for node in [HEALTHY, VICTIM] {
        let cfg = dir.join(format!("{node}.toml"));
        let cfg = cfg.to_string_lossy();
        children.0.push((
            node.to_string(),
            spawn(&dir, node, &["node", "--config", &cfg])?,
        ));
    }
    let cfg = dir.join(format!("{PRIMARY}.toml"));
    let cfg = cfg.to_string_lossy().into_owned();
    let records_arg = records.to_string();
    let mut primary = spawn(
        &dir,
        PRIMARY,
        &[
            "demo-primary",
            "--config",
            &cfg,
            "--records",
            &records_arg,
            "--corrupt-replica",
            VICTIM,
        ],
    )?;
    let stdout = primary
        .stdout
        .take()
        .ok_or_else(|| "primary stdout not captured".to_string())?;
    children.0.push((PRIMARY.to_string(), primary));

    let mut done = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading primary output: {e}"))?;
        let event: Event = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(_) => continue,
        };
        match event {
            Event::Ready => println!("  replicas connected; writing {records} records ({WRITERS} concurrent writers, {PAYLOAD_BYTES} B each)"),
            Event::Progress {
                committed,
                elapsed_ms,
                replicas,
            } => {
                let rate = committed as f64 / (elapsed_ms.max(1) as f64 / 1000.0);
                print!("  committed {committed:>8} ({rate:>8.0} rec/s)");
                for r in &replicas {
                    print!("  {} lag {:>6} rec {:>9} B", r.id, r.lag_records, r.lag_bytes);
                }
                println!();
            }
            Event::FaultArmed { replica, next_lsn } => println!(
                "  FAULT: primary will corrupt the record it ships to {replica} at lsn {next_lsn} (its own WAL stays intact); writing {AFTER_FAULT} more"
            ),
            Event::Done { .. } => {
                done = Some(event);
                break;
            }
            Event::Failed { message } => {
                return Err(format!(
                    "primary failed: {message} (logs in {})",
                    dir.display()
                ))
            }
        }
    }
    let Some(Event::Done {
        records: written,
        commit_lsn,
        elapsed_ms,
        replicas,
    }) = done
    else {
        return Err(format!(
            "primary exited without finishing; see {}",
            dir.join("n1.log").display()
        ));
    };

    // The victim halts on receipt of the corrupted record; its halt file is
    // fsynced before it does anything else, so poll for it.
    let victim_dir = dir.join(VICTIM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let halt = loop {
        match walship_node::replica::halt::read_halt(&FsStorage, &victim_dir.join("state")) {
            Ok(Some(h)) => break h,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => return Err(format!("{VICTIM} did not halt within 10 s")),
            Err(e) => return Err(format!("reading {VICTIM}'s halt file: {e}")),
        }
    };
    drop(children);

    let secs = elapsed_ms.max(1) as f64 / 1000.0;
    println!();
    println!("summary");
    println!(
        "  records committed     {written} (commit lsn {commit_lsn}) in {secs:.2} s = {:.0} records/s, {:.1} MB/s of payload",
        written as f64 / secs,
        written as f64 * PAYLOAD_BYTES as f64 / secs / 1e6
    );
    for r in &replicas {
        let state = if r.id == VICTIM {
            "HALTED".to_string()
        } else if r.durable_lsn >= commit_lsn {
            "streaming, caught up".to_string()
        } else {
            format!("streaming, {} records behind", r.lag_records)
        };
        println!("  {:<4} durable lsn {:>8}  {state}", r.id, r.durable_lsn);
    }
    println!(
        "  {VICTIM} halted: reason {}, at lsn {} (epoch {}), expected {}, found {}, peer {}",
        halt.reason, halt.lsn, halt.epoch, halt.expected, halt.found, halt.peer
    );
    println!(
        "  the halt is durable: {} survives restarts until an operator clears it",
        victim_dir.join("state/halt").display()
    );
    let healthy = replicas.iter().find(|r| r.id == HEALTHY);
    if healthy.map(|r| r.durable_lsn) < Some(commit_lsn) {
        return Err(format!(
            "{HEALTHY} did not catch up to commit lsn {commit_lsn}"
        ));
    }
    if _temp.is_none() {
        println!(
            "  data directories kept: {}/n1 {}/n2 {}/n3 (try: walship-recover status {}/n3)",
            dir.display(),
            dir.display(),
            dir.display(),
            dir.display()
        );
    }

    // Act 3: a cluster that survives its primary.
    println!();
    println!("failover: three members elect their primary (role = \"member\"), appends through POST /append");
    let opts = crate::drill::DrillOptions {
        nodes: 3,
        kills: 1,
        quorum: -1,
        writers: 4,
        appends_between: 300,
        dir: dir.join("failover"),
        election_timeout_ms: 500,
    };
    let report = crate::drill::run(&opts, &mut |line| println!("  {line}"))
        .map_err(|e| format!("failover act: {e} (logs in {})", opts.dir.display()))?;
    for k in &report.kills {
        println!(
            "  {} (epoch {}) was killed with SIGKILL after {} acknowledged appends; {} won epoch {}; appends resumed after {} ms; {} came back ({})",
            k.killed, k.epoch, k.acked_before, k.new_primary, k.new_epoch, k.write_pause_ms, k.killed, k.restart
        );
    }
    println!(
        "  {} appends acknowledged, {} missing from any member's log; epochs and their one primary: {:?}",
        report.acknowledged, report.missing, report.epochs
    );
    if report.missing != 0 {
        return Err(format!("{} acknowledged appends lost", report.missing));
    }
    println!("  total demo time {:.1} s", started.elapsed().as_secs_f64());
    std::io::stdout().flush().ok();
    Ok(())
}

fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The demo's primary process: `walship demo-primary`.
pub fn run_primary(config: &Path, records: u64, corrupt_replica: &str) -> Result<(), String> {
    crate::node::init_logging();
    let cfg = NodeConfig::load(config).map_err(|e| e.to_string())?;
    if !matches!(cfg.role, RoleConfig::Primary { .. }) {
        return Err("demo-primary needs a primary config".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let result = rt.block_on(demo_primary(cfg, records, corrupt_replica));
    if let Err(message) = &result {
        emit(&Event::Failed {
            message: message.clone(),
        });
    }
    result
}

fn replica_lines(p: &Primary) -> Vec<ReplicaLine> {
    p.status()
        .replicas
        .iter()
        .map(|r| ReplicaLine {
            id: r.node_id.clone(),
            connected: r.connected,
            durable_lsn: r.durable_lsn,
            lag_records: r.lag_records,
            lag_bytes: r.lag_bytes,
        })
        .collect()
}

async fn write_records(p: &Arc<Primary>, count: u64, start: Instant) -> Result<u64, String> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let p = Arc::clone(p);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<u64, String>(last);
                }
                let mut payload = format!("demo record {i} ").into_bytes();
                payload.resize(PAYLOAD_BYTES, b'.');
                last = p.append(payload).await.map_err(|e| e.to_string())?;
            }
        }));
    }
    let reporter = {
        let p = Arc::clone(p);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                emit(&Event::Progress {
                    committed: p.commit_lsn(),
                    elapsed_ms: start.elapsed().as_millis() as u64,
                    replicas: replica_lines(&p),
                });
            }
        })
    };
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.map_err(|e| format!("writer task: {e}"))??);
    }
    reporter.abort();
    Ok(last)
}

async fn demo_primary(cfg: NodeConfig, records: u64, victim: &str) -> Result<(), String> {
    let primary = Arc::new(
        Primary::open(crate::node::primary_config(&cfg)?)
            .map_err(|e| format!("open primary: {e}"))?,
    );
    // Wait for both replicas so the progress lines show real lag from the start.
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica_lines(&primary)
        .iter()
        .filter(|r| r.connected)
        .count()
        < 2
    {
        if Instant::now() > deadline {
            return Err("replicas did not connect within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emit(&Event::Ready);
    let start = Instant::now();
    write_records(&primary, records, start).await?;
    primary
        .inject_fault(victim, ShipFault::CorruptNextRecord)
        .map_err(|e| format!("inject fault: {e}"))?;
    emit(&Event::FaultArmed {
        replica: victim.to_string(),
        next_lsn: primary.commit_lsn() + 1,
    });
    let last = write_records(&primary, AFTER_FAULT, start).await?;
    let elapsed_ms = start.elapsed().as_millis() as u64;
    // The healthy replica must receive everything, including what came after the fault.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = replica_lines(&primary);
        if lines
            .iter()
            .any(|r| r.id == HEALTHY && r.durable_lsn >= last)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{HEALTHY} did not reach lsn {last} within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emit(&Event::Done {
        records: records + AFTER_FAULT,
        commit_lsn: primary.commit_lsn(),
        elapsed_ms,
        replicas: replica_lines(&primary),
    });
    // Keep serving until the orchestrator stops us.
    crate::node::wait_for_shutdown_signal().await;
    if let Ok(p) = Arc::try_unwrap(primary) {
        p.shutdown().await;
    }
    Ok(())
}
