//! `walship-fault`: run the deterministic simulator or the failure-matrix
//! conformance suite.
//!
//! ```text
//! walship-fault sim --seed 42 [--steps 300]
//! walship-fault sim --seeds 0..200
//! walship-fault matrix [--id FM-6] [--spec spec/failure-matrix.md]
//! walship-fault failover [--seed 0] [--scenario 8] [--nodes 5] [--quorum -1]
//! walship-fault failover --seeds 0..100
//! ```
//! Exit code 0: everything passed; 1: a run or a row failed; 2: usage error.

use std::io::Write as _;
use std::process::ExitCode;

/// Writes one chunk of output; false once stdout is gone (e.g. `| head`).
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

use clap::{Parser, Subcommand};
use walship_fault::failover;
use walship_fault::matrix;
use walship_fault::sim::{self, SimOptions, DEFAULT_STEPS};

#[derive(Parser)]
#[command(
    name = "walship-fault",
    version,
    about = "walship fault-injection harness"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the deterministic simulator for one seed or a range of seeds.
    Sim {
        /// One seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// A half-open range of seeds, `A..B`.
        #[arg(long)]
        seeds: Option<String>,
        /// Steps of the safety phase.
        #[arg(long, default_value_t = DEFAULT_STEPS)]
        steps: u64,
        /// Print the options each seed expands to.
        #[arg(long)]
        verbose: bool,
        /// Print every event of the run (for replaying one seed).
        #[arg(long)]
        trace: bool,
        /// Replace replica disks by empty ones at this rate (per mille per step)
        /// in every seed, instead of the rate the seed chooses.
        #[arg(long)]
        wipe_per_mille: Option<u32>,
        /// Replace the primary's disk by an empty one at this rate (per mille
        /// per step, FM-X.16) in every seed, instead of the rate the seed chooses.
        #[arg(long)]
        primary_wipe_per_mille: Option<u32>,
    },
    /// Run one scenario per ID of the failure matrix and print the table.
    Matrix {
        /// Only IDs containing this string (e.g. `FM-6`).
        #[arg(long)]
        id: Option<String>,
        /// Read the IDs from this spec file instead of the compiled-in one.
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
        /// Column width of the text cells.
        #[arg(long, default_value_t = 60)]
        width: usize,
    },
    /// Seed 000's failure scenarios 1 to 8 (6 twice: a replica, 6p the primary)
    /// at 3/5/7 nodes under quorum 0/-1/2 over the production election core and executors (the table), or
    /// random failover runs (`--seeds A..B`).
    Failover {
        /// The table's seed.
        #[arg(long, default_value_t = 0, conflicts_with = "seeds")]
        seed: u64,
        /// Random failover runs for a half-open range of seeds, `A..B`.
        #[arg(long)]
        seeds: Option<String>,
        /// Only this scenario.
        #[arg(long)]
        scenario: Option<u8>,
        /// Only this cluster size.
        #[arg(long)]
        nodes: Option<usize>,
        /// Only this quorum setting.
        #[arg(long, allow_hyphen_values = true)]
        quorum: Option<i64>,
        /// Print the last events of every cell.
        #[arg(long)]
        trace: bool,
    },
}

fn run_failover(
    seed: u64,
    seeds: Option<String>,
    scenario: Option<u8>,
    nodes: Option<usize>,
    quorum: Option<i64>,
    trace: bool,
) -> ExitCode {
    if let Some(r) = seeds {
        let Some(range) = parse_range(&r) else {
            eprintln!("--seeds must be A..B with A < B, got {r:?}");
            return ExitCode::from(2);
        };
        let (mut runs, mut failed) = (0u64, 0u64);
        for s in range {
            let run = failover::random::run(s);
            runs += 1;
            let line = format!(
                "seed {s}: {} nodes quorum {} faults {} destroyed {} member-changes {}/{} voters {} elections {} acked {} fenced {} halted {} converged {} {}\n",
                run.nodes,
                run.quorum,
                run.faults,
                run.destroyed,
                run.member_changes.0,
                run.member_changes.1,
                run.voters,
                run.elections,
                run.acked,
                run.fenced,
                run.halted,
                run.converged,
                if run.failure.is_none() { "ok" } else { "FAIL" }
            );
            if !emit(&line) {
                return ExitCode::SUCCESS;
            }
            if let Some(f) = &run.failure {
                failed += 1;
                eprintln!("seed {s} FAILED: {f}\n{}", run.trace_tail);
            }
        }
        emit(&format!("failover runs: {runs}, failed: {failed}\n"));
        return if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let mut cells = Vec::new();
    for (s, primary) in failover::scenarios::ROWS {
        for n in failover::scenarios::SIZES {
            for q in failover::scenarios::QUORUMS {
                if scenario.is_some_and(|x| x != s)
                    || nodes.is_some_and(|x| x != n)
                    || quorum.is_some_and(|x| x != q)
                {
                    continue;
                }
                cells.push(failover::scenarios::run_row(s, primary, n, q, seed));
            }
        }
    }
    if cells.is_empty() {
        eprintln!("no cell matched");
        return ExitCode::from(2);
    }
    emit(&failover::scenarios::render(&cells));
    if trace {
        for c in &cells {
            emit(&format!(
                "\n-- scenario {} nodes {} quorum {}:\n{}",
                c.scenario, c.nodes, c.quorum, c.trace_tail
            ));
        }
    }
    let failed: Vec<_> = cells.iter().filter(|c| !c.pass).collect();
    for c in &failed {
        eprintln!(
            "FAIL scenario {} nodes {} quorum {}: {}",
            c.scenario,
            c.nodes,
            c.quorum,
            c.failure.as_deref().unwrap_or("?")
        );
    }
    emit(&format!(
        "cells: {}, passed: {}, failed: {}\n",
        cells.len(),
        cells.len() - failed.len(),
        failed.len()
    ));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_range(s: &str) -> Option<std::ops::Range<u64>> {
    let (a, b) = s.split_once("..")?;
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = b.trim().parse().ok()?;
    (a < b).then_some(a..b)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Sim {
            seed,
            seeds,
            steps,
            verbose,
            trace,
            wipe_per_mille,
            primary_wipe_per_mille,
        } => {
            let range = match (seed, seeds) {
                (Some(s), None) => s..s.saturating_add(1),
                (None, Some(r)) => match parse_range(&r) {
                    Some(r) => r,
                    None => {
                        eprintln!("--seeds must be A..B with A < B, got {r:?}");
                        return ExitCode::from(2);
                    }
                },
                _ => {
                    eprintln!("give --seed S or --seeds A..B");
                    return ExitCode::from(2);
                }
            };
            let mut totals = sim::SimTotals::default();
            for s in range {
                let mut opts = SimOptions::from_seed(s, steps);
                if let Some(w) = wipe_per_mille {
                    opts.wipe_per_mille = w;
                }
                if let Some(w) = primary_wipe_per_mille {
                    opts.primary_wipe_per_mille = w;
                }
                if verbose && !emit(&format!("options: {opts}\n")) {
                    return ExitCode::SUCCESS;
                }
                let rep = sim::run_traced(&opts, trace);
                if let Some(t) = &rep.full_trace {
                    if !emit(t) {
                        return ExitCode::SUCCESS;
                    }
                }
                if !emit(&format!("{}\n", rep.summary())) {
                    return ExitCode::SUCCESS;
                }
                totals.add(&rep);
                if let Some(f) = rep.failure_report() {
                    eprintln!("{f}");
                }
            }
            emit(&format!("{totals}\n"));
            if totals.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Failover {
            seed,
            seeds,
            scenario,
            nodes,
            quorum,
            trace,
        } => run_failover(seed, seeds, scenario, nodes, quorum, trace),
        Cmd::Matrix { id, spec, width } => {
            let text = match spec {
                Some(p) => match std::fs::read_to_string(&p) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("reading {}: {e}", p.display());
                        return ExitCode::from(2);
                    }
                },
                None => matrix::SPEC.to_string(),
            };
            let lines = matrix::run_matrix(&text, id.as_deref());
            if lines.is_empty() {
                eprintln!("no spec IDs matched");
                return ExitCode::from(2);
            }
            emit(&matrix::render(&lines, width));
            if lines
                .iter()
                .all(|l| l.verdict.as_ref().is_some_and(matrix::Verdict::passed))
            {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
