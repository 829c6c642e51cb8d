//! Real processes, real QUIC on loopback: kill -9 of the primary or a replica at
//! seeded random moments under load, with restarts (FM-3.2, FM-3.3, FM-4.1, FM-4.2,
//! FM-X.11).
//!
//! One primary (`n1`) and two replicas (`n2`, `n3`) under majority quorum run as
//! separate processes (this test executable re-executed, see `real_common`). A
//! client thread appends through the primary's stdin and records every
//! `committed <lsn> <payload>` the primary acknowledges. Each iteration kills one
//! seeded victim with SIGKILL at a seeded moment, lets the load go on, maybe
//! restarts the victim under load (a restarted primary gets its own load and the
//! running replicas must reconnect, prove their prefix and resume: FM-3.3), then
//! kills every node, the replicas first (so the primary can acknowledge nothing
//! more), and checks the directories with walship-recover's `verify` and `diff`
//! (read-only scans):
//! - every acknowledged (lsn, payload) is in the primary's WAL, unchanged, and no
//!   lsn is ever acknowledged with two payloads across restarts;
//! - under majority quorum every acknowledged lsn is on at least one replica;
//! - every replica's WAL is a prefix of the primary's (`diff`: identical or B prefix of A);
//! - no WAL is corrupt, no replica is halted, no replica applied out of order or
//!   past its commit watermark, the primary's durable lsn never went back.
//!
//! A last round restarts everything, stops the load, waits until both replicas
//! converge, stops all nodes gracefully and requires identical, clean logs.
//!
//! kill -9 does NOT test fsync: the killed process's page cache survives, so
//! unsynced writes are still on disk after the kill. Losing unsynced data (power
//! loss, torn writes, failed fsync) is the simulator's job (walship-fault sim,
//! `SimStorage::crash`). What this test adds is the real thing around it: real
//! processes dying mid-syscall, real sockets, real QUIC sessions cut mid-frame,
//! real restarts on the same directories and port.
//!
//! `WALSHIP_CRASH_ITERS` (default 8) sets the iterations, `WALSHIP_CRASH_SEED` the
//! seed (printed on every run).

mod real_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use real_common::{
    check_diff_prefix, check_dir, count_from_env, free_udp_port, log_tail, make_certs,
    seed_from_env, Load, NodeProc, NodeSpec, Reported, RoleSpec, Verdict,
};
use walship_recovery::report::WalState;
use walship_wal::Lsn;

const TEST_NAME: &str = "fm_3_3_fm_4_2_fm_x_11_kill9_under_load_loses_no_acknowledged_commit";
const CORRUPT_TEST_NAME: &str =
    "fm_x_6_corrupt_replica_wal_halts_across_a_real_restart_keeps_its_bytes_and_the_cluster_goes_on";
const NAMES: [&str; 3] = ["n1", "n2", "n3"];
const PRIMARY: usize = 0;

fn main() {
    let crash = || match run() {
        Ok(figures) => Verdict::Passed(figures),
        Err(e) => Verdict::Failed(e),
    };
    let corrupt = || match corrupt_replica_wal() {
        Ok(figures) => Verdict::Passed(figures),
        Err(e) => Verdict::Failed(e),
    };
    real_common::harness_main(&[(TEST_NAME, &crash), (CORRUPT_TEST_NAME, &corrupt)]);
}

struct Cluster {
    root: PathBuf,
    specs: Vec<NodeSpec>,
    nodes: Vec<Option<NodeProc>>,
    starts: u32,
}

impl Cluster {
    fn new(root: &Path) -> Result<Cluster, String> {
        let certs = root.join("certs");
        make_certs(&certs, &NAMES)?;
        std::fs::create_dir_all(root.join("logs")).map_err(|e| e.to_string())?;
        let port = free_udp_port("127.0.0.1")?;
        let primary_addr = format!("127.0.0.1:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let specs = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| NodeSpec {
                node_id: name.to_string(),
                cluster_id: "crash".into(),
                data_dir: root.join(name),
                certs_dir: certs.clone(),
                keep_alive_ms: 200,
                idle_timeout_ms: 1_500,
                role: if i == PRIMARY {
                    RoleSpec::Primary {
                        listen: primary_addr,
                        members: NAMES.iter().map(|s| s.to_string()).collect(),
                        quorum: -1,
                        commit_timeout_ms: 30_000,
                    }
                } else {
                    RoleSpec::Replica {
                        primary_addr,
                        primary_name: NAMES[PRIMARY].into(),
                        bind: "127.0.0.1:0".parse().expect("literal address"),
                    }
                },
            })
            .collect();
        Ok(Cluster {
            root: root.to_path_buf(),
            specs,
            nodes: vec![None, None, None],
            starts: 0,
        })
    }

    fn dir(&self, i: usize) -> &Path {
        &self.specs[i].data_dir
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        assert!(self.nodes[i].is_none(), "node {i} already running");
        self.starts += 1;
        let log = self
            .root
            .join("logs")
            .join(format!("{}-{}.log", NAMES[i], self.starts));
        let node = NodeProc::spawn(&self.specs[i], &[], &log)?;
        node.wait_ready()?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    fn start_missing(&mut self) -> Result<(), String> {
        for i in 0..NAMES.len() {
            if self.nodes[i].is_none() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    fn kill(&mut self, i: usize) -> Option<Reported> {
        self.nodes[i].take().map(NodeProc::kill9)
    }

    fn primary(&self) -> Result<&NodeProc, String> {
        self.nodes[PRIMARY]
            .as_ref()
            .ok_or("primary not running".into())
    }

    /// Log tails of every node's latest incarnation, for failure reports.
    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("logs")) {
            let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths.iter().rev().take(6) {
                out.push_str(&format!("--- {}\n{}\n", p.display(), log_tail(p, 15)));
            }
        }
        out
    }
}

/// Every acknowledgement so far; an lsn acknowledged twice with different payloads
/// means an acknowledged record was lost and its lsn reused.
#[derive(Default)]
struct Acked {
    by_lsn: BTreeMap<Lsn, String>,
}

impl Acked {
    fn add(&mut self, acks: &[(Lsn, String)]) -> Result<(), String> {
        for (lsn, payload) in acks {
            if let Some(prev) = self.by_lsn.insert(*lsn, payload.clone()) {
                if &prev != payload {
                    return Err(format!(
                        "lsn {lsn} acknowledged as {prev:?} and later as {payload:?}: an acknowledged commit was lost"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_reports(name: &str, r: &Reported) -> Result<(), String> {
    if !r.halted.is_empty() {
        return Err(format!("{name} halted: {:?}", r.halted));
    }
    if !r.violations.is_empty() {
        return Err(format!("{name} violations: {:?}", r.violations));
    }
    if !r.errors.is_empty() {
        return Err(format!("{name} stopped/errored: {:?}", r.errors));
    }
    Ok(())
}

/// Checks the stopped cluster's directories (see the module doc).
fn check_stopped(c: &Cluster, acked: &Acked, must_be_clean: bool) -> Result<Lsn, String> {
    let p = check_dir(c.dir(PRIMARY))?;
    for (lsn, payload) in &acked.by_lsn {
        match p.payloads.get(lsn) {
            Some(found) if found == payload => {}
            other => {
                return Err(format!(
                    "acknowledged lsn {lsn} ({payload}) is {other:?} in the primary's WAL"
                ))
            }
        }
    }
    if must_be_clean && p.wal_state != WalState::Clean {
        return Err(format!(
            "primary WAL not clean after a graceful stop: {:?}",
            p.wal_state
        ));
    }
    let mut best_replica = 0;
    for (i, name) in NAMES.iter().enumerate().skip(1) {
        let r = check_dir(c.dir(i))?;
        if let Some(h) = &r.halt {
            return Err(format!("{name} is halted: {h}"));
        }
        if must_be_clean && r.wal_state != WalState::Clean {
            return Err(format!(
                "{name} WAL not clean after a graceful stop: {:?}",
                r.wal_state
            ));
        }
        check_diff_prefix(c.dir(PRIMARY), c.dir(i), must_be_clean)?;
        best_replica = best_replica.max(r.last.lsn);
    }
    if let Some((&max_acked, _)) = acked.by_lsn.last_key_value() {
        if max_acked > best_replica {
            return Err(format!(
                "FM-X.11: acknowledged lsn {max_acked} is on no replica (replicas end at {best_replica})"
            ));
        }
    }
    Ok(p.last.lsn)
}

fn run() -> Result<String, String> {
    let seed = seed_from_env("WALSHIP_CRASH_SEED");
    let iters = count_from_env("WALSHIP_CRASH_ITERS", 8);
    println!(
        "real_crash: seed {seed} (WALSHIP_CRASH_SEED), iterations {iters} (WALSHIP_CRASH_ITERS)"
    );
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let mut c = Cluster::new(tmp.path())?;
    let result = crash_rounds(&mut c, seed, iters);
    if result.is_err() {
        let logs = c.logs();
        // Keep the directories for a post-mortem (walship-recover inspect/dump/diff).
        let kept = tmp.keep();
        return result.map_err(|e| {
            format!(
                "seed {seed}: {e}\nnode directories kept in {}\n{logs}",
                kept.display()
            )
        });
    }
    result
}

fn crash_rounds(c: &mut Cluster, seed: u64, iters: u64) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut acked = Acked::default();
    let mut victim_kills = [0u32; 3];
    let mut freeze_kills = 0u32;
    let mut victim_restarts = 0u32;
    for it in 0..iters {
        c.start_missing()?;
        let load = Load::start(
            c.primary()?,
            format!("i{it}"),
            32,
            Duration::from_micros(300),
        );
        let d1 = rng.gen_range(150..700);
        let victim = rng.gen_range(0..NAMES.len());
        let d2 = rng.gen_range(0..400);
        let restart_victim = rng.gen_bool(0.5);
        let d3 = rng.gen_range(100..500);
        println!(
            "  iteration {it}: kill -9 {} after {d1} ms, down {d2} ms{}, then kill -9 all (replicas first) and check",
            NAMES[victim],
            if restart_victim {
                format!(", restarted under load for {d3} ms")
            } else {
                String::new()
            }
        );
        std::thread::sleep(Duration::from_millis(d1));
        let victim_report = c.kill(victim).ok_or("victim not running")?;
        victim_kills[victim] += 1;
        if victim == PRIMARY {
            check_reports(NAMES[PRIMARY], &victim_report)?;
            acked.add(&victim_report.acks)?;
        } else {
            check_reports(NAMES[victim], &victim_report)?;
        }
        std::thread::sleep(Duration::from_millis(d2));
        // A restarted primary gets a load of its own; the running replicas must
        // reconnect to it, prove their prefix and resume (FM-3.3), never halt.
        let mut second_load = None;
        if restart_victim {
            c.start(victim)?;
            victim_restarts += 1;
            if victim == PRIMARY {
                second_load = Some(Load::start(
                    c.primary()?,
                    format!("i{it}b"),
                    32,
                    Duration::from_micros(300),
                ));
            }
            std::thread::sleep(Duration::from_millis(d3));
        }
        // Freeze: the replicas first. From then on no receipt can reach the primary,
        // so whatever it acknowledges until its own kill is a record no surviving
        // disk but its own holds: under majority quorum there must be none (FM-X.11).
        for i in (0..NAMES.len()).rev() {
            if let Some(r) = c.kill(i) {
                freeze_kills += 1;
                if i == PRIMARY {
                    check_reports(NAMES[PRIMARY], &r)?;
                    acked.add(&r.acks)?;
                } else {
                    check_reports(NAMES[i], &r)?;
                }
            }
        }
        load.stop();
        if let Some(l) = second_load {
            l.stop();
        }
        let last =
            check_stopped(c, &acked, false).map_err(|e| format!("after iteration {it}: {e}"))?;
        println!(
            "    ok: {} acknowledged so far, primary WAL ends at lsn {last}",
            acked.by_lsn.len()
        );
    }
    // Liveness round: restart all, load, stop the load, converge, stop gracefully.
    c.start_missing()?;
    let load = Load::start(c.primary()?, "final".into(), 32, Duration::from_micros(300));
    std::thread::sleep(Duration::from_millis(rng.gen_range(200..600)));
    let sent = load.stop();
    let p_events = c.primary()?.events.clone();
    let p = p_events.wait_for(
        "every final append answered",
        Duration::from_secs(60),
        |r| r.settled(sent) && r.durable > 0,
    )?;
    if p.failed > 0 {
        return Err(format!(
            "{} final appends failed with every node up",
            p.failed
        ));
    }
    let target = p.durable;
    for (node, name) in c.nodes.iter().zip(NAMES).skip(1) {
        let node = node.as_ref().ok_or("replica not running")?;
        let r = node.events.wait_for(
            &format!("{name} converged to lsn {target}"),
            Duration::from_secs(60),
            |r| r.durable == target && r.applied == target,
        )?;
        check_reports(name, &r)?;
    }
    for i in (0..NAMES.len()).rev() {
        if let Some(n) = c.nodes[i].take() {
            let r = n.quit()?;
            if i == PRIMARY {
                check_reports(NAMES[PRIMARY], &r)?;
                acked.add(&r.acks)?;
            } else {
                check_reports(NAMES[i], &r)?;
            }
        }
    }
    let last = check_stopped(c, &acked, true)?;
    if last != target {
        return Err(format!("primary WAL ends at {last}, expected {target}"));
    }
    Ok(format!(
        "real_crash figures: seed {seed}, {iters} iterations, victim kill -9: n1 (primary) {} n2 {} n3 {}, victims restarted under load {victim_restarts}, freeze kill -9 {freeze_kills}, {} acknowledged commits checked, final log {last} records identical on 3 nodes, {:.1} s",
        victim_kills[0],
        victim_kills[1],
        victim_kills[2],
        acked.by_lsn.len(),
        started.elapsed().as_secs_f64()
    ))
}

/// FM-X.6 with real processes, the other half of "no false alarms": damage in a
/// stopped replica's sealed segment (one payload bit, a record followed by valid
/// ones) is corruption, never a torn tail to cut. On restart the replica halts
/// `local-corruption` at exactly that lsn, keeps every byte of its WAL, stays
/// halted; the primary and the other replica go on committing and converge.
fn corrupt_replica_wal() -> Result<String, String> {
    let started = Instant::now();
    let limit = Duration::from_secs(60);
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let mut c = Cluster::new(tmp.path())?;
    let result = corrupt_scenario(&mut c, limit);
    match result {
        Ok(s) => Ok(format!("{s}, {:.1} s", started.elapsed().as_secs_f64())),
        Err(e) => {
            let logs = c.logs();
            let kept = tmp.keep();
            Err(format!(
                "{e}\nnode directories kept in {}\n{logs}",
                kept.display()
            ))
        }
    }
}

/// Waits until every append is answered and the primary's commit covers its durable lsn.
fn settle(p: &NodeProc, sent_total: u64, limit: Duration) -> Result<Reported, String> {
    p.events
        .wait_for("every append answered and committed", limit, |r| {
            r.settled(sent_total) && r.durable > 0
        })
}

fn corrupt_scenario(c: &mut Cluster, limit: Duration) -> Result<String, String> {
    const N3: usize = 2;
    c.start_missing()?;
    // ~1 KiB records: several 128 KiB segments, so the first one is sealed.
    let load = Load::start_padded(c.primary()?, "c".into(), 32, Duration::ZERO, 1000);
    c.primary()?
        .events
        .wait_for("600 acknowledged", limit, |r| r.acks.len() >= 600)?;
    let sent = load.stop();
    let target = settle(c.primary()?, sent, limit)?.durable;
    for i in 1..NAMES.len() {
        let node = c.nodes[i].as_ref().ok_or("replica not running")?;
        node.events.wait_for("replica converged", limit, |r| {
            r.durable == target && r.applied == target
        })?;
    }
    let n3 = c.nodes[N3].take().ok_or("n3 not running")?;
    check_reports(NAMES[N3], &n3.quit()?)?;

    // One bit of one payload in the middle of n3's first (sealed) segment.
    let mut records: Vec<(PathBuf, u64, Lsn)> = Vec::new();
    {
        let d = walship_recovery::datadir::DataDir::open_locked(c.dir(N3))
            .map_err(|e| format!("open n3: {e}"))?;
        let opts = walship_recovery::scan::ScanOptions {
            max_record_bytes: walship_wal::WalOptions::default().max_record_bytes,
        };
        d.scan(opts, None, &mut |seg, off, v| {
            records.push((seg.to_path_buf(), off, v.lsn()));
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| format!("scan n3: {e}"))?;
    }
    let first_segment = records.first().ok_or("n3 holds no record")?.0.clone();
    let in_first: Vec<&(PathBuf, u64, Lsn)> =
        records.iter().filter(|r| r.0 == first_segment).collect();
    if in_first.len() == records.len() {
        return Err(format!(
            "n3 has one segment only ({} records): nothing is sealed",
            records.len()
        ));
    }
    let (segment, offset, lsn) = in_first[in_first.len() / 2].clone();
    let at = offset + walship_wal::RECORD_HEADER_LEN as u64 + 3;
    flip_bit(&segment, at)?;
    let damaged =
        std::fs::read(&segment).map_err(|e| format!("read {}: {e}", segment.display()))?;

    // Restart: the replica must halt local-corruption at that lsn, not repair.
    c.start(N3)?;
    let r3 = c.nodes[N3]
        .as_ref()
        .ok_or("n3 not running")?
        .events
        .wait_for_halt_allowed("n3 halts local-corruption", limit, |r| {
            !r.halted.is_empty() || r.eof
        })?;
    let halt_line = r3
        .halted
        .first()
        .cloned()
        .ok_or("n3 exited without halting")?;
    if !halt_line.contains("local-corruption") {
        return Err(format!("n3 halted for another reason: {halt_line}"));
    }
    // The cluster goes on without it: n2's receipts make the majority.
    let load = Load::start_padded(c.primary()?, "after".into(), 32, Duration::ZERO, 1000);
    let before = c.primary()?.events.snapshot().acks.len();
    c.primary()?
        .events
        .wait_for("200 more acknowledged", limit, |r| {
            r.acks.len() >= before + 200
        })?;
    let sent_after = load.stop();
    let target = settle(c.primary()?, sent + sent_after, limit)?.durable;
    c.nodes[1]
        .as_ref()
        .ok_or("n2 not running")?
        .events
        .wait_for("n2 converged", limit, |r| {
            r.durable == target && r.applied == target
        })?;

    let n3 = c.nodes[N3].take().ok_or("n3 not running")?;
    let r3 = n3.quit()?;
    if r3.applied > 0 || !r3.violations.is_empty() {
        return Err(format!(
            "halted n3 applied {} (violations {:?})",
            r3.applied, r3.violations
        ));
    }
    let mut acked = Acked::default();
    for i in [1, 0] {
        let n = c.nodes[i].take().ok_or("node not running")?;
        let r = n.quit()?;
        check_reports(NAMES[i], &r)?;
        if i == PRIMARY {
            acked.add(&r.acks)?;
        }
    }

    // On disk: n3 kept every byte, is halted at lsn, verify names the same lsn.
    let now = std::fs::read(&segment).map_err(|e| format!("read {}: {e}", segment.display()))?;
    if now != damaged {
        return Err(format!(
            "{} changed after the halt: the halted replica must keep every byte",
            segment.display()
        ));
    }
    let verified = walship_recovery::cmd::verify::verify(
        c.dir(N3),
        &walship_recovery::cli::Common {
            json: false,
            max_record_bytes: walship_wal::WalOptions::default().max_record_bytes,
        },
        false,
    )
    .map_err(|e| format!("verify n3: {e}"))?;
    match &verified.report.wal.state {
        WalState::Corrupt { corruption } if corruption.lsn == Some(lsn) => {}
        other => {
            return Err(format!(
                "verify n3: expected corruption at lsn {lsn}, got {other:?}"
            ))
        }
    }
    let halt = walship_recovery::datadir::DataDir::open_locked(c.dir(N3))
        .and_then(|d| d.halt())
        .map_err(|e| format!("halt of n3: {e}"))?
        .ok_or("n3 has no halt file")?;
    if halt.reason != walship_replica::HaltReason::LocalCorruption || halt.lsn != lsn {
        return Err(format!(
            "n3 halt {halt}: expected local-corruption at lsn {lsn}"
        ));
    }
    let p = check_dir(c.dir(PRIMARY))?;
    for (l, payload) in &acked.by_lsn {
        if p.payloads.get(l) != Some(payload) {
            return Err(format!("acknowledged lsn {l} missing on the primary"));
        }
    }
    check_diff_prefix(c.dir(PRIMARY), c.dir(1), true)?;
    Ok(format!(
        "real_crash corrupt figures: n3 segment {} bit flipped in lsn {lsn} (offset {at}); n3 halted local-corruption at lsn {lsn} across a real restart, WAL unchanged; n1+n2 committed {} records, identical",
        segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        p.last.lsn
    ))
}

/// Flips the lowest bit of the byte at `offset` and makes it durable.
fn flip_bit(path: &Path, offset: u64) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)
        .and_then(|()| {
            b[0] ^= 1;
            f.write_all_at(&b, offset)
        })
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("flip a bit of {} at {offset}: {e}", path.display()))
}
