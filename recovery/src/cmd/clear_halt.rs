//! `clear-halt DIR`: lift a halt only once its cause is gone. The rule per
//! [`HaltReason`] is in [`required_checks`] and spec/recovery-tool.md.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use walship_replica::halt::{clear_halt as remove_halt, HaltReason, HaltRecord};

use crate::audit::{append_audit, AuditEntry};
use crate::cli::Common;
use crate::cmd::text::{wal_state_line, write_halt};
use crate::cmd::verify::readable_commit_lsn;
use crate::cmd::{progress_label, scan_options};
use crate::datadir::DataDir;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{
    AcknowledgedLoss, Check, ClearHaltReport, SnapshotInfo, SnapshotWal, WalState,
};
use crate::scan::{ScanOptions, WalScan};
use crate::snapshots::{boundaries, check_snapshots, judge_snapshot_wal, Depth, PositionProbe};
use crate::{Env, Outcome, TextReport};

/// A condition that must hold before a halt is lifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The WAL scan finds no corruption (a torn tail is allowed: the node cuts
    /// it on open) and the log does not end below `state/commit` (acknowledged
    /// records lost, FM-X.6: the node would halt again).
    LogVerifies,
    /// Every installed snapshot fully verifies and the newest one agrees with
    /// the WAL (consistent, or an interrupted install the node completes).
    SnapshotsVerify,
    /// The WAL's last lsn is below the halt lsn: nothing at or after the
    /// offending lsn is in the log (for a divergence: the tail was rewound to
    /// the common prefix).
    TailBelowHaltLsn,
}

impl Condition {
    /// The stable name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Condition::LogVerifies => "log-verifies",
            Condition::SnapshotsVerify => "snapshots-verify",
            Condition::TailBelowHaltLsn => "tail-below-halt-lsn",
        }
    }
}

/// The conditions that must hold to clear a halt of `reason`.
pub fn required_checks(reason: HaltReason) -> &'static [Condition] {
    match reason {
        // Stream-level halts: the offending record (at halt.lsn) was never
        // appended; the check confirms nothing at or after it is in the log.
        // Divergence: the replica's own records from halt.lsn on differ from
        // the primary's and must have been rewound away.
        HaltReason::Gap
        | HaltReason::Duplicate
        | HaltReason::Reorder
        | HaltReason::Checksum
        | HaltReason::EpochRegression
        | HaltReason::MalformedBatch
        | HaltReason::Divergence
        | HaltReason::SnapshotBoundary => &[
            Condition::LogVerifies,
            Condition::SnapshotsVerify,
            Condition::TailBelowHaltLsn,
        ],
        // The cause is outside the log (a fenced primary, a bad received
        // snapshot that was discarded) or was the log itself (local corruption):
        // the local state must verify.
        HaltReason::StalePrimary | HaltReason::SnapshotInvalid | HaltReason::LocalCorruption => {
            &[Condition::LogVerifies, Condition::SnapshotsVerify]
        }
    }
}

/// What the conditions are judged on: one verifying scan of the WAL, the
/// commit watermark and the snapshots (fully verified).
#[derive(Debug)]
pub struct HaltFacts {
    scan: WalScan,
    commit_lsn: Option<walship_wal::Lsn>,
    snapshots: Vec<SnapshotInfo>,
    snapshot_wal: SnapshotWal,
}

impl HaltFacts {
    /// Reads the facts of `d` (read-only).
    pub fn gather(
        d: &DataDir,
        opts: ScanOptions,
        progress: Option<&str>,
    ) -> Result<HaltFacts, RecoverError> {
        let snapshots = check_snapshots(d.storage(), &d.snapshot_dir(), Depth::Full)?;
        let newest = boundaries(&snapshots).pop();
        let mut probe = PositionProbe::for_boundary(newest);
        let scan = d.scan(opts, progress, &mut |_, _, v| {
            probe.see(v.position());
            ControlFlow::Continue(())
        })?;
        let snapshot_wal = judge_snapshot_wal(
            newest,
            scan.last,
            probe.result(scan.start),
            scan.corruption().is_some(),
        );
        Ok(HaltFacts {
            scan,
            commit_lsn: readable_commit_lsn(d)?,
            snapshots,
            snapshot_wal,
        })
    }

    /// The WAL scan (its `last` is the log's last verified record).
    pub fn scan(&self) -> &WalScan {
        &self.scan
    }
}

/// Every condition [`required_checks`] names for `halt`'s reason, judged on `facts`.
pub fn judge_halt(halt: &HaltRecord, facts: &HaltFacts) -> Vec<Check> {
    required_checks(halt.reason)
        .iter()
        .map(|c| evaluate(*c, halt, facts))
        .collect()
}

/// Lifts `halt` (every check passed): audit `intent` → remove `state/halt`
/// (fsync `state/`) → audit `done` (`failed` on error). Returns the audit log path.
pub fn lift_halt(
    d: &DataDir,
    halt: &HaltRecord,
    checks: &[Check],
    facts: &HaltFacts,
    env: &mut Env<'_>,
) -> Result<PathBuf, RecoverError> {
    assert!(
        checks.iter().all(|c| c.passed),
        "lift_halt: a halt is lifted only when every required condition holds"
    );
    let dir = d.root();
    let details = serde_json::json!({
        "halt": halt,
        "checks": checks,
        "last": facts.scan.last,
    });
    let state_dir = d.state_dir();
    let audit = append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now(
            "clear-halt",
            "intent",
            dir,
            &env.command_line,
            details.clone(),
        ),
    )?;
    if let Err(e) = remove_halt(d.storage(), &state_dir) {
        let mut failed = details;
        failed["error"] = serde_json::Value::String(e.to_string());
        let _ = append_audit(
            d.storage(),
            &state_dir,
            &AuditEntry::now("clear-halt", "failed", dir, &env.command_line, failed),
        );
        return Err(e.into());
    }
    append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("clear-halt", "done", dir, &env.command_line, details),
    )?;
    tracing::warn!(
        dir = %dir.display(),
        reason = %halt.reason,
        lsn = halt.lsn,
        epoch = halt.epoch,
        "operator clear-halt: halt lifted"
    );
    Ok(audit)
}

fn evaluate(c: Condition, halt: &HaltRecord, facts: &HaltFacts) -> Check {
    let scan = &facts.scan;
    let (passed, detail) = match c {
        Condition::LogVerifies => {
            let state = WalState::from_end(&scan.end);
            match AcknowledgedLoss::judge(scan, &facts.snapshot_wal, facts.commit_lsn) {
                Some(loss) => (false, loss.message()),
                None => (!state.is_corrupt(), wal_state_line(&state)),
            }
        }
        Condition::SnapshotsVerify => {
            let damaged: Vec<String> = facts
                .snapshots
                .iter()
                .filter_map(|s| s.error.clone())
                .collect();
            let agrees = matches!(
                facts.snapshot_wal.state.as_str(),
                "no-snapshot" | "consistent" | "install-interrupted"
            );
            let detail = if damaged.is_empty() {
                format!(
                    "{}: {}",
                    facts.snapshot_wal.state, facts.snapshot_wal.detail
                )
            } else {
                damaged.join("; ")
            };
            (damaged.is_empty() && agrees, detail)
        }
        Condition::TailBelowHaltLsn => {
            let last = scan.last.lsn;
            let passed = last < halt.lsn;
            let detail = if passed {
                format!("last lsn {last} < halt lsn {}", halt.lsn)
            } else {
                format!(
                    "last lsn {last} >= halt lsn {}: rewind to lsn {} or below first (walship-recover rewind --to {})",
                    halt.lsn,
                    halt.lsn.saturating_sub(1),
                    halt.lsn.saturating_sub(1)
                )
            };
            (passed, detail)
        }
    };
    Check {
        name: c.name().to_string(),
        passed,
        detail,
    }
}

/// Runs `clear-halt`: exit 0 when cleared (or not halted), 6 when a condition fails.
pub fn clear_halt(
    dir: &Path,
    common: &Common,
    env: &mut Env<'_>,
) -> Result<Outcome<ClearHaltReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    let mut report = ClearHaltReport {
        dir: dir.display().to_string(),
        halt: None,
        checks: Vec::new(),
        cleared: false,
        audit_log: None,
    };
    let Some(halt) = d.halt()? else {
        let mut o = Outcome::new(report, Exit::Ok);
        o.message = Some("not halted: nothing to clear".to_string());
        return Ok(o);
    };
    let facts = HaltFacts::gather(
        &d,
        scan_options(common),
        progress_label(env.progress, "clear-halt: verify"),
    )?;
    report.checks = judge_halt(&halt, &facts);
    report.halt = Some(halt.clone());
    let failed: Vec<&Check> = report.checks.iter().filter(|c| !c.passed).collect();
    if !failed.is_empty() {
        let why = failed
            .iter()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ");
        return Ok(Outcome {
            report,
            exit: Exit::Refused,
            message: Some(format!(
                "refused: the cause of the {} halt at lsn {} is still there ({why}); nothing was changed",
                halt.reason, halt.lsn
            )),
        });
    }
    let audit = lift_halt(&d, &halt, &report.checks, &facts, env)?;
    report.audit_log = Some(audit.display().to_string());
    report.cleared = true;
    Ok(Outcome::new(report, Exit::Ok))
}

impl TextReport for ClearHaltReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let Some(h) = &self.halt else {
            return writeln!(w, "not halted: nothing to clear");
        };
        write_halt(w, h)?;
        for c in &self.checks {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            writeln!(w, "  [{mark}] {}: {}", c.name, c.detail)?;
        }
        if self.cleared {
            writeln!(w, "halt cleared")?;
        } else {
            writeln!(w, "halt NOT cleared")?;
        }
        if let Some(a) = &self.audit_log {
            writeln!(w, "audit entry written to {a}")?;
        }
        Ok(())
    }
}
