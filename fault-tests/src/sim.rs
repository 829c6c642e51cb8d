//! The deterministic simulator: a random workload of appends, crashes,
//! restarts, partitions and transport noise over a [`World`], checked after
//! every step (safety phase), then healed and required to converge within a
//! bounded simulated time (liveness phase).
//!
//! Everything is decided by one u64 seed: the options it expands to
//! ([`SimOptions::from_seed`]), the workload, the network, the disks. The
//! same seed on the same commit gives the same trace hash.

use std::collections::BTreeMap;
use std::fmt;

use crate::check::{check_all, standard_checkers, Violation};
use crate::net::{NetConfig, NetFaults, NetStats, NodeId};
use crate::rng::SimRng;
use crate::world::{node_name, FrameFault, World, WorldConfig, PRIMARY};

/// The sender faults the simulator may arm.
const FRAME_FAULTS: [FrameFault; 8] = [
    FrameFault::Corrupt,
    FrameFault::Skip,
    FrameFault::Duplicate,
    FrameFault::Reorder,
    FrameFault::EpochRegress,
    FrameFault::Malformed,
    FrameFault::WrongPrevCrc,
    FrameFault::StaleWelcome,
];

/// Default number of steps of the safety phase.
pub const DEFAULT_STEPS: u64 = 300;
/// Simulated time the liveness phase may take to converge.
pub const LIVENESS_BUDGET_MS: u64 = 60_000;

/// What a seed expands to. Printed with every run so a failure can be read
/// without re-deriving it.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The seed.
    pub seed: u64,
    /// Steps of the safety phase.
    pub steps: u64,
    /// Number of replicas.
    pub replicas: usize,
    /// Quorum setting.
    pub quorum: i64,
    /// Transport noise during the safety phase.
    pub net_faults: NetFaults,
    /// Per-step chance of crashing a node (per mille).
    pub crash_per_mille: u32,
    /// Per-step chance of partitioning a replica from the primary (per mille).
    pub partition_per_mille: u32,
    /// Per-step chance of appending a batch (per mille).
    pub append_per_mille: u32,
    /// Probability that a crash tears unsynced writes.
    pub torn_crash_probability: f64,
    /// Idle timeout of connections.
    pub idle_timeout_ms: u64,
    /// Per-step chance of replacing a random replica's disk by an empty one
    /// (per mille; 30% of seeds, or `walship-fault sim --wipe-per-mille N`
    /// for every seed). It found finding 5 (old receipts of a replaced disk
    /// counted towards the quorum), fixed in walship-primary d98f674.
    pub wipe_per_mille: u32,
    /// Per-step chance that the primary snapshots at its commit watermark
    /// and drops WAL segments below it (lagging replicas then get the
    /// snapshot), per mille.
    pub snapshot_per_mille: u32,
    /// Largest datagram payload: small values split frames into many
    /// datagrams, so sessions end in the middle of frames more often.
    pub mtu_bytes: usize,
    /// Link bandwidth (0: unlimited).
    pub bandwidth_bytes_per_ms: u64,
    /// Per-step chance of a sender fault in the next `Records` frame to a
    /// random replica (per mille; 0 for most seeds). Each must halt that
    /// replica with the matching reason if the frame arrives.
    pub byzantine_per_mille: u32,
    /// Per-step chance of a disk fault on a random node (per mille): every
    /// fsync from the next one on fails, or exactly one fsync fails and later
    /// ones succeed (a node still running after it then loses power), or its
    /// disk fills up. The node must stop, not halt.
    pub disk_fault_per_mille: u32,
    /// Per-step chance that the primary loses its disk and restarts empty under
    /// the same id and epoch (FM-X.16; per mille; 10% of seeds, or
    /// `walship-fault sim --primary-wipe-per-mille N`). Every replica holding
    /// records must then halt `divergence` and keep them byte for byte; one that
    /// followed the new history over its old records is caught by the
    /// durable-records-never-rewritten checker. Drawn from its own stream, so the
    /// other options of a seed are what they were before it existed.
    pub primary_wipe_per_mille: u32,
}

impl SimOptions {
    /// Expands a seed into options (deterministically).
    pub fn from_seed(seed: u64, steps: u64) -> Self {
        let mut r = SimRng::new(seed ^ 0x0005_1e55_0bad_cafe);
        let replicas = r.range(1, 4) as usize;
        let members = replicas as i64 + 1;
        let quorum = match r.range(0, 3) {
            0 => 0,
            1 | 2 => -1,
            _ => r.range(1, replicas as u64) as i64,
        };
        let quorum = quorum.min(members - 1);
        let net_faults = match r.range(0, 2) {
            0 => NetFaults::none(),
            1 => NetFaults {
                drop_per_mille: 20,
                duplicate_per_mille: 20,
                reorder_per_mille: 50,
                corrupt_per_mille: 10,
                min_delay_ms: 1,
                max_delay_ms: 8,
            },
            _ => NetFaults::noisy(),
        };
        Self {
            seed,
            steps,
            replicas,
            quorum,
            net_faults,
            crash_per_mille: r.range(0, 40) as u32,
            partition_per_mille: r.range(0, 40) as u32,
            append_per_mille: r.range(300, 900) as u32,
            torn_crash_probability: if r.chance(500) { 0.5 } else { 0.0 },
            idle_timeout_ms: r.range(200, 1_500),
            byzantine_per_mille: if r.chance(250) {
                r.range(1, 10) as u32
            } else {
                0
            },
            disk_fault_per_mille: if r.chance(300) {
                r.range(1, 10) as u32
            } else {
                0
            },
            wipe_per_mille: if r.chance(300) {
                r.range(1, 5) as u32
            } else {
                0
            },
            snapshot_per_mille: if r.chance(500) {
                r.range(2, 20) as u32
            } else {
                0
            },
            bandwidth_bytes_per_ms: if r.chance(600) { r.range(20, 2_000) } else { 0 },
            mtu_bytes: if r.chance(500) {
                r.range(64, 400) as usize
            } else {
                1200
            },
            primary_wipe_per_mille: {
                let mut r = SimRng::new(seed ^ 0x0d15_ea5e_0f0d_d15c);
                if r.chance(100) {
                    r.range(1, 4) as u32
                } else {
                    0
                }
            },
        }
    }
}

impl fmt::Display for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} steps {} replicas {} quorum {} net {{drop {}‰ dup {}‰ reorder {}‰ corrupt {}‰ delay {}..{}ms}} crash {}‰ partition {}‰ append {}‰ torn {} idle_timeout {}ms byzantine {}‰ disk-faults {}‰ mtu {} bandwidth {}B/ms wipe {}‰ snapshot {}‰ primary-wipe {}‰",
            self.seed,
            self.steps,
            self.replicas,
            self.quorum,
            self.net_faults.drop_per_mille,
            self.net_faults.duplicate_per_mille,
            self.net_faults.reorder_per_mille,
            self.net_faults.corrupt_per_mille,
            self.net_faults.min_delay_ms,
            self.net_faults.max_delay_ms,
            self.crash_per_mille,
            self.partition_per_mille,
            self.append_per_mille,
            self.torn_crash_probability,
            self.idle_timeout_ms,
            self.byzantine_per_mille,
            self.disk_fault_per_mille,
            self.mtu_bytes,
            self.bandwidth_bytes_per_ms,
            self.wipe_per_mille,
            self.snapshot_per_mille,
            self.primary_wipe_per_mille
        )
    }
}

/// A failed run.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// `setup`, `safety` or `liveness`.
    pub phase: &'static str,
    /// The broken invariant.
    pub violation: Violation,
    /// The last events, readable.
    pub trace_tail: String,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The options the seed expanded to.
    pub options: SimOptions,
    /// Hash of the whole trace.
    pub trace_hash: u64,
    /// Events in the trace.
    pub events: u64,
    /// Steps run.
    pub steps_run: u64,
    /// Simulated time at the end.
    pub sim_time_ms: u64,
    /// Records acknowledged to clients.
    pub acked: usize,
    /// Final commit watermark.
    pub commit_lsn: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Sender (frame) faults armed.
    pub byzantine: u64,
    /// Disk faults (failed fsync, disk full) injected.
    pub disk_faults: u64,
    /// Snapshots the primary took (each truncating its WAL front).
    pub snapshots: u64,
    /// Primary disks replaced by empty ones (FM-X.16).
    pub primary_wipes: u64,
    /// Network counters.
    pub net: NetStats,
    /// Why the liveness phase could not be judged (the primary refused to
    /// start after a torn crash), if so.
    pub liveness_skipped: Option<String>,
    /// Replicas halted at the end (reason names).
    pub halts: Vec<String>,
    /// Every trace event, when asked for.
    pub full_trace: Option<String>,
    /// `Ok` or the failure.
    pub outcome: Result<(), SimFailure>,
}

impl SimReport {
    /// One-line summary.
    pub fn summary(&self) -> String {
        format!(
            "seed {:>6}: {} hash {:016x} steps {} events {} t={}ms acked {} commit {} crashes {} partitions {} net-faults {} byzantine {} disk-faults {}{}",
            self.options.seed,
            if self.outcome.is_ok() { "ok  " } else { "FAIL" },
            self.trace_hash,
            self.steps_run,
            self.events,
            self.sim_time_ms,
            self.acked,
            self.commit_lsn,
            self.crashes,
            self.partitions,
            self.net.faults_injected(),
            self.byzantine,
            self.disk_faults,
            match &self.liveness_skipped {
                Some(why) => format!(" (liveness skipped: {why})"),
                None => String::new(),
            }
        )
    }

    /// Multi-line failure report (seed, options, invariant, trace tail).
    pub fn failure_report(&self) -> Option<String> {
        let f = self.outcome.as_ref().err()?;
        Some(format!(
            "simulation FAILED\n  seed: {}\n  options: {}\n  phase: {}\n  invariant: {}\n  spec: {}\n  detail: {}\n  replay: walship-fault sim --seed {} --steps {}\n  last events:\n{}",
            self.options.seed,
            self.options,
            f.phase,
            f.violation.invariant,
            f.violation.spec,
            f.violation.detail,
            self.options.seed,
            self.options.steps,
            f.trace_tail
        ))
    }
}

fn payload(rng: &mut SimRng, step: u64, k: usize) -> Vec<u8> {
    let len = if rng.chance(30) {
        rng.range(1_500, 6_000)
    } else {
        rng.range(0, 200)
    } as usize;
    let mut v = format!("s{step}k{k}:").into_bytes();
    let mut tail = vec![0u8; len];
    rng.fill(&mut tail);
    v.extend_from_slice(&tail);
    v
}

/// Runs one seed: safety phase (`opts.steps` steps), then liveness phase.
pub fn run(opts: &SimOptions) -> SimReport {
    run_traced(opts, false)
}

/// Like [`run`]; with `keep_trace` the report carries every trace event.
pub fn run_traced(opts: &SimOptions, keep_trace: bool) -> SimReport {
    let mut rng = SimRng::new(opts.seed);
    let cfg = WorldConfig {
        replicas: opts.replicas,
        quorum: opts.quorum,
        net: NetConfig {
            faults: opts.net_faults.clone(),
            idle_timeout_ms: opts.idle_timeout_ms,
            mtu_bytes: opts.mtu_bytes,
            bandwidth_bytes_per_ms: opts.bandwidth_bytes_per_ms,
            ..NetConfig::default()
        },
        torn_crash_probability: opts.torn_crash_probability,
        ..WorldConfig::default()
    };
    let mut workload = rng.fork("workload");
    let mut report = SimReport {
        options: opts.clone(),
        trace_hash: 0,
        events: 0,
        steps_run: 0,
        sim_time_ms: 0,
        acked: 0,
        commit_lsn: 0,
        crashes: 0,
        partitions: 0,
        byzantine: 0,
        disk_faults: 0,
        snapshots: 0,
        primary_wipes: 0,
        net: NetStats::default(),
        liveness_skipped: None,
        halts: Vec::new(),
        full_trace: None,
        outcome: Ok(()),
    };
    let mut w = match World::new(cfg, rng.next_u64()) {
        Ok(w) => w,
        Err(e) => {
            report.outcome = Err(SimFailure {
                phase: "setup",
                violation: Violation {
                    invariant: "world setup",
                    spec: "-",
                    detail: e,
                },
                trace_tail: String::new(),
            });
            return report;
        }
    };
    if keep_trace {
        w.trace.keep_all();
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drive(opts, &mut w, &mut workload, &mut report)
    }));
    if let Err(p) = outcome {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        report.outcome = Err(SimFailure {
            phase: "panic",
            violation: Violation {
                invariant: "no assertion fails in the cores, the WAL or the harness",
                spec: "-",
                detail: msg,
            },
            trace_tail: w.trace.render_tail(),
        });
    }
    finish(report, &w)
}

/// The safety and liveness phases; sets `report.outcome` on a violation.
fn drive(opts: &SimOptions, w: &mut World, workload: &mut SimRng, report: &mut SimReport) {
    w.log(format!("options: {opts}"));
    w.start_all();
    let mut checkers = standard_checkers();
    let mut restarts: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
    let mut heals: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
    let mut disk_faulted: Vec<NodeId> = Vec::new();
    // Nodes armed with a transient fsync failure, with their disk's failed-sync
    // count at arming: when it fires and the node is still running, its power
    // is cut, so what its disk really holds is judged at the restart.
    let mut transient: Vec<(NodeId, u64)> = Vec::new();
    // Replicas restarted since their halt (each halted replica is, once).
    let mut halt_restarted: std::collections::BTreeSet<NodeId> = Default::default();
    let nodes = opts.replicas + 1;

    let fail = |w: &World, phase: &'static str, v: Violation| SimFailure {
        phase,
        violation: v,
        trace_tail: w.trace.render_tail(),
    };

    // Safety phase.
    for step in 1..=opts.steps {
        w.step = step;
        report.steps_run = step;
        let now = w.now();
        if workload.chance(opts.append_per_mille) {
            let k = workload.range(1, 8) as usize;
            let batch: Vec<Vec<u8>> = (0..k).map(|i| payload(workload, step, i)).collect();
            w.client_append(&batch);
        }
        if workload.chance(opts.crash_per_mille) {
            let n = workload.index(nodes);
            if w.is_up(n) {
                w.crash(n);
                report.crashes += 1;
                let at = now + workload.range(1, 400);
                restarts.entry(at).or_default().push(n);
            }
        }
        if workload.chance(opts.byzantine_per_mille) {
            let n = 1 + workload.index(opts.replicas);
            let f = FRAME_FAULTS[workload.index(FRAME_FAULTS.len())];
            w.arm_frame_fault(n, f);
            report.byzantine += 1;
        }
        if workload.chance(opts.disk_fault_per_mille) {
            let n = workload.index(nodes);
            if w.is_up(n) {
                let s = w.storage(n);
                match workload.index(4) {
                    0 | 1 => {
                        w.log(format!("DISK FAULT {}: every fsync fails", node_name(n)));
                        s.fail_syncs_after(0);
                    }
                    2 => {
                        // One fsync fails (dropping the file's dirty pages),
                        // later ones succeed: a retry would appear to work.
                        let after = workload.range(0, 3);
                        w.log(format!(
                            "DISK FAULT {}: one fsync fails after {after} more, later ones succeed",
                            node_name(n)
                        ));
                        transient.push((n, s.counters().failed_syncs));
                        s.fail_one_sync_after(after);
                    }
                    _ => {
                        w.log(format!("DISK FAULT {}: disk full", node_name(n)));
                        s.set_capacity_bytes(s.used_bytes());
                    }
                }
                report.disk_faults += 1;
                disk_faulted.push(n);
            }
        }
        if workload.chance(opts.snapshot_per_mille) {
            match w.primary_snapshot() {
                Ok(_) => report.snapshots += 1,
                Err(e) => w.log(format!("no snapshot: {e}")),
            }
        }
        if opts.wipe_per_mille > 0 && workload.chance(opts.wipe_per_mille) {
            let n = 1 + workload.index(opts.replicas);
            if let Err(e) = w.wipe_replica_disk(n) {
                w.log(format!("wipe failed: {e}"));
            }
            let at = now + workload.range(1, 400);
            restarts.entry(at).or_default().push(n);
        }
        // Drawn only in seeds that wipe primaries, so every other seed replays
        // exactly as before this event existed.
        if opts.primary_wipe_per_mille > 0 && workload.chance(opts.primary_wipe_per_mille) {
            // FM-X.16: beyond any fault budget; what was acknowledged is gone
            // from the primary by the scenario's choice. The replicas holding
            // it must keep it and halt, never follow the new history over it.
            match w.wipe_primary_disk() {
                Ok(()) => {
                    report.primary_wipes += 1;
                    w.oracle.acked.clear();
                    // Frames of the old history still in flight may land on a
                    // replica that held nothing yet: every replica may now hold
                    // a history that is not the new primary's, so the prefix
                    // checker no longer judges them; the never-rewritten
                    // checker still does.
                    for n in 1..=opts.replicas {
                        if !w.oracle.foreign_history.contains(&n) {
                            w.oracle.foreign_history.push(n);
                        }
                    }
                }
                Err(e) => w.log(format!("primary wipe failed: {e}")),
            }
            let at = now + workload.range(1, 400);
            restarts.entry(at).or_default().push(PRIMARY);
        }
        if opts.replicas > 0 && workload.chance(opts.partition_per_mille) {
            let n = 1 + workload.index(opts.replicas);
            if workload.chance(250) {
                // Half a partition: one direction only.
                let (a, b) = if workload.chance(500) {
                    (PRIMARY, n)
                } else {
                    (n, PRIMARY)
                };
                w.log(format!(
                    "PARTITION {} -> {} (one way)",
                    node_name(a),
                    node_name(b)
                ));
                w.net.block(a, b, now);
            } else {
                w.log(format!("PARTITION p0 | {}", node_name(n)));
                w.net.partition(PRIMARY, n, now);
            }
            report.partitions += 1;
            let at = now + workload.range(10, 3_000);
            heals.entry(at).or_default().push(n);
        }
        let dt = workload.range(1, 15);
        w.run_until(now + dt);
        let now = w.now();
        // A node that kept running after its transient fsync failure (it must
        // have stopped: FM-X.4, FM-X.5) loses power: its restart shows whether
        // what it claimed durable after the failure is on the disk.
        for (n, base) in std::mem::take(&mut transient) {
            if !w.is_up(n) {
                continue;
            }
            if w.storage(n).counters().failed_syncs > base {
                w.log(format!(
                    "POWER CUT {}: still running after a failed fsync",
                    node_name(n)
                ));
                w.crash(n);
                report.crashes += 1;
            } else {
                transient.push((n, base));
            }
        }
        // Every halted replica is restarted once (FM-10.3, FM-11.3: it must
        // come back halted, with the same record, frozen).
        for n in 1..=opts.replicas {
            if w.replica(n).halted.is_none() {
                halt_restarted.remove(&n);
            } else if w.is_up(n) && halt_restarted.insert(n) {
                w.log(format!("CRASH {} (halted), to be restarted", node_name(n)));
                w.crash(n);
                report.crashes += 1;
                let at = now + workload.range(1, 200);
                restarts.entry(at).or_default().push(n);
            }
        }
        // A node stopped by a disk fault is repaired and restarted later.
        for n in std::mem::take(&mut disk_faulted) {
            if w.is_up(n) {
                disk_faulted.push(n);
            } else {
                w.storage(n).clear_faults();
                w.storage(n).set_capacity_bytes(u64::MAX);
                let at = now + workload.range(1, 300);
                restarts.entry(at).or_default().push(n);
            }
        }
        let due: Vec<u64> = restarts.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for n in restarts.remove(&t).unwrap_or_default() {
                w.log(format!("RESTART {}", node_name(n)));
                w.restart(n);
            }
        }
        let due: Vec<u64> = heals.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for n in heals.remove(&t).unwrap_or_default() {
                w.log(format!("HEAL p0 | {}", node_name(n)));
                w.net.heal(PRIMARY, n, now);
            }
        }
        if let Err(v) = check_all(&mut checkers, w) {
            report.outcome = Err(fail(w, "safety", v));
            return;
        }
    }

    // Liveness phase: heal everything, restart everything, stop injecting.
    w.step = opts.steps + 1;
    let now = w.now();
    w.log("LIVENESS: heal all, restart all, no more faults".into());
    w.net.heal_all(now);
    w.net.set_faults(NetFaults::none());
    for n in 0..nodes {
        w.storage(n).clear_faults();
        w.storage(n).set_capacity_bytes(u64::MAX);
    }
    w.disarm_frame_faults();
    w.start_all();
    let batch: Vec<Vec<u8>> = (0..3).map(|i| payload(workload, w.step, i)).collect();
    w.client_append(&batch);
    if w.primary.up.is_none() && w.oracle.torn_crashed.contains(&PRIMARY) {
        // The primary's WAL refused to open after a torn crash (reported as
        // corruption): safe, but nothing can converge without it.
        w.log("LIVENESS skipped: primary refused to start after a torn crash".into());
        report.liveness_skipped = w.primary.refused.clone();
        return;
    }
    let converged = w.run_until_converged(LIVENESS_BUDGET_MS);
    if let Err(v) = check_all(&mut checkers, w) {
        report.outcome = Err(fail(w, "liveness", v));
        return;
    }
    if !converged {
        let mut why = Vec::new();
        if let Some(r) = &w.primary.refused {
            why.push(r.clone());
        }
        match &w.primary.up {
            None => why.push("p0 is down".into()),
            Some(p) => why.push(format!(
                "p0 durable {} commit {}",
                p.wal.durable_lsn(),
                p.exec.commit_lsn()
            )),
        }
        for r in &w.replicas {
            let name = node_name(r.id);
            match (&r.up, &r.halted, &r.stopped) {
                (_, Some(h), _) => {
                    why.push(format!("{name} halted ({})", h.record.reason.as_str()))
                }
                (None, _, Some(s)) => why.push(s.clone()),
                (None, _, None) => why.push(format!("{name} is down")),
                (Some(u), _, _) => why.push(format!(
                    "{name} {:?} last {:?} durable {:?} commit {} applied {}",
                    u.core().phase(),
                    u.wal().map(|w| w.last().lsn),
                    u.wal().map(|w| w.durable_lsn()),
                    u.core().commit_lsn(),
                    r.applied.last_lsn()
                )),
            }
        }
        report.outcome = Err(fail(
            w,
            "liveness",
            Violation {
                invariant: "healed cluster converges",
                spec: "FM-5.1, FM-9.1, FM-3.3, FM-X.1",
                detail: format!(
                    "not converged within {LIVENESS_BUDGET_MS}ms of simulated time: {}",
                    why.join("; ")
                ),
            },
        ));
    }
}

fn finish(mut report: SimReport, w: &World) -> SimReport {
    report.trace_hash = w.trace.hash();
    report.events = w.trace.len();
    report.sim_time_ms = w.now();
    report.acked = w.oracle.acked.len();
    report.commit_lsn = w.oracle.max_commit;
    report.net = w.net.stats().clone();
    report.halts = w
        .replicas
        .iter()
        .filter_map(|r| r.halted.as_ref())
        .map(|h| h.record.reason.as_str().to_string())
        .collect();
    report.full_trace = w.trace.all().map(|evs| {
        evs.iter()
            .map(|e| format!("[step {:>6} t={:>8}ms] {}\n", e.step, e.at_ms, e.what))
            .collect()
    });
    report
}

/// Totals over many runs, for the closing line of `walship-fault sim --seeds`.
#[derive(Debug, Clone, Default)]
pub struct SimTotals {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that failed.
    pub failed: u64,
    /// Safety steps run.
    pub steps: u64,
    /// Records acknowledged to clients.
    pub acked: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Datagram-level faults injected.
    pub net_faults: u64,
    /// Sender frame faults armed.
    pub byzantine: u64,
    /// Disk faults injected.
    pub disk_faults: u64,
    /// Snapshots taken by primaries.
    pub snapshots: u64,
    /// Primary disks replaced by empty ones.
    pub primary_wipes: u64,
    /// Replica halts (all explained by an injected fault, else the seed failed).
    pub halts: u64,
    /// Seeds whose liveness phase was skipped (primary refused to start after a torn crash).
    pub liveness_skipped: u64,
}

impl SimTotals {
    /// Adds one report.
    pub fn add(&mut self, r: &SimReport) {
        self.seeds += 1;
        self.failed += u64::from(r.outcome.is_err());
        self.steps += r.steps_run;
        self.acked += r.acked as u64;
        self.crashes += r.crashes;
        self.partitions += r.partitions;
        self.net_faults += r.net.faults_injected();
        self.byzantine += r.byzantine;
        self.disk_faults += r.disk_faults;
        self.snapshots += r.snapshots;
        self.primary_wipes += r.primary_wipes;
        self.halts += r.halts.len() as u64;
        self.liveness_skipped += u64::from(r.liveness_skipped.is_some());
    }
}

impl fmt::Display for SimTotals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seeds, {} failed; {} steps, {} acknowledged records; injected: {} crashes, {} partitions, {} datagram faults, {} sender faults, {} disk faults, {} primary snapshots, {} primary disk losses; {} explained halts; liveness skipped in {} seeds (primary WAL refused to open after a torn crash)",
            self.seeds,
            self.failed,
            self.steps,
            self.acked,
            self.crashes,
            self.partitions,
            self.net_faults,
            self.byzantine,
            self.disk_faults,
            self.snapshots,
            self.primary_wipes,
            self.halts,
            self.liveness_skipped
        )
    }
}

/// Number of seeds for the default test run: `WALSHIP_SIM_SEEDS` or `default`.
pub fn seeds_from_env(default: u64) -> u64 {
    std::env::var("WALSHIP_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
