//! `rewind DIR --to LSN`: cut the log's tail after LSN (tentative records left
//! behind by a failover), with the safety rules of spec/recovery-tool.md:
//! never at or below the commit watermark without `--accept-data-loss`, never
//! without confirmation (`--yes` or a `y` typed on a terminal), never on a
//! corrupt log, always audited, always verified afterwards.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;

use walship_wal::state::write_state_json;
use walship_wal::{FsStorage, Lsn, Wal, WalOptions};

use crate::audit::{append_audit, AuditEntry};
use crate::cmd::progress_label;
use crate::cmd::text::wal_state_line;
use crate::datadir::{CommitBody, DataDir, COMMIT_FILE};
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{CutPlan, RewindReport, WalState};
use crate::scan::{EpochSpan, ScanOptions};
use crate::snapshots::{boundaries, check_snapshots, Depth};
use crate::{Env, Outcome, TextReport};

/// What the operator asked for.
#[derive(Clone, Copy, Debug)]
pub struct RewindRequest {
    /// Keep records up to and including this lsn.
    pub to_lsn: Lsn,
    /// Allow cutting committed records.
    pub accept_data_loss: bool,
    /// Skip the confirmation question.
    pub yes: bool,
    /// The node's record size bound.
    pub max_record_bytes: u32,
}

/// Runs `rewind`: exit 0 when done (or nothing to cut), 6 when refused, 3 if
/// the log is corrupt (before: nothing is touched; after: the verify failed),
/// 2 for an lsn outside the log.
pub fn rewind(
    dir: &Path,
    req: &RewindRequest,
    env: &mut Env<'_>,
) -> Result<Outcome<RewindReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    let ready = match plan_rewind(&d, req, env.progress)? {
        RewindPlan::Finished(o) => return Ok(o),
        RewindPlan::Ready(r) => r,
    };
    if !req.yes {
        if let Some(reason) = ask_confirmation(env, &ready.question())? {
            return Ok(ready.refuse(reason));
        }
    }
    perform_rewind(&d, ready, env)
}

/// A rewind decided by [`plan_rewind`].
#[derive(Debug)]
pub enum RewindPlan {
    /// Nothing to cut, or refused by a safety rule: the outcome to report. Nothing was changed.
    Finished(Outcome<RewindReport>),
    /// Every safety rule passed: [`perform_rewind`] may act once the operator confirmed.
    Ready(ReadyRewind),
}

/// A rewind that passed every safety rule and waits for confirmation.
#[derive(Debug)]
pub struct ReadyRewind {
    report: RewindReport,
    plan: CutPlan,
    wal_state_before: WalState,
    req: RewindRequest,
}

impl ReadyRewind {
    /// The report so far (`performed` false).
    pub fn report(&self) -> &RewindReport {
        &self.report
    }

    /// What will be cut and lost, as the confirmation question shows it.
    pub fn plan_text(&self) -> String {
        plan_text(&self.plan, self.report.commit_lsn)
    }

    /// The confirmation question `rewind` asks.
    pub fn question(&self) -> String {
        if self.plan.records == 0 {
            format!(
                "{}\nLower the commit watermark of {} to lsn {}? [y/N] ",
                self.plan_text(),
                self.report.dir,
                self.req.to_lsn
            )
        } else {
            format!(
                "{}\nCut these {} records from {}? [y/N] ",
                self.plan_text(),
                self.plan.records,
                self.report.dir
            )
        }
    }

    /// Not confirmed: the refusal outcome (exit 6), nothing changed.
    pub fn refuse(self, reason: String) -> Outcome<RewindReport> {
        refused(self.report, reason)
    }
}

fn refused(mut report: RewindReport, reason: String) -> Outcome<RewindReport> {
    report.refused = Some(reason.clone());
    Outcome {
        report,
        exit: Exit::Refused,
        message: Some(format!("refused: {reason}; nothing was changed")),
    }
}

/// Asks `question` (prompt on stderr). `Ok(None)`: confirmed; `Ok(Some(reason))`:
/// not confirmed (declined, or no terminal to ask on — never act unconfirmed in a pipe).
pub fn ask_confirmation(env: &mut Env<'_>, question: &str) -> Result<Option<String>, RecoverError> {
    let Some(ask) = env.confirm.as_mut() else {
        return Ok(Some(
            "no confirmation: stdin is not a terminal; re-run with --yes".to_string(),
        ));
    };
    let yes = ask(question).map_err(|source| RecoverError::Io {
        op: "read confirmation",
        path: "<stdin>".into(),
        source,
    })?;
    Ok((!yes).then(|| "not confirmed by the operator".to_string()))
}

/// Scans `d`'s log and applies every safety rule of spec/recovery-tool.md §6
/// (except the confirmation). Read-only.
pub fn plan_rewind(
    d: &DataDir,
    req: &RewindRequest,
    progress: bool,
) -> Result<RewindPlan, RecoverError> {
    let to = req.to_lsn;
    let opts = ScanOptions {
        max_record_bytes: req.max_record_bytes,
    };
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut epochs: Vec<EpochSpan> = Vec::new();
    let scan = d.scan(
        opts,
        progress_label(progress, "rewind: scan"),
        &mut |_, _, v| {
            if v.lsn() > to {
                records += 1;
                bytes += v.bytes().len() as u64;
                match epochs.last_mut() {
                    Some(s) if s.epoch == v.epoch() => {
                        s.last_lsn = v.lsn();
                        s.records += 1;
                    }
                    _ => epochs.push(EpochSpan {
                        epoch: v.epoch(),
                        first_lsn: v.lsn(),
                        last_lsn: v.lsn(),
                        records: 1,
                    }),
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(c) = scan.corruption() {
        return Err(RecoverError::WalCorrupt(c.clone()));
    }
    let before = scan.last;
    if to > before.lsn {
        return Err(RecoverError::BadInput {
            message: format!("--to {to} is beyond the last record (lsn {})", before.lsn),
        });
    }
    if to < scan.start.lsn {
        return Err(RecoverError::BadInput {
            message: format!(
                "--to {to} is below the log's base (lsn {}): the records before it are no longer retained",
                scan.start.lsn
            ),
        });
    }
    let commit_lsn = d.commit_lsn()?;
    let report = RewindReport {
        dir: d.root().display().to_string(),
        to_lsn: to,
        commit_lsn,
        before,
        cut: None,
        performed: false,
        refused: None,
        after: None,
        commit_lsn_after: commit_lsn,
        verify: None,
        audit_log: None,
    };
    // The log ends below the watermark (acknowledged records lost, FM-X.6): rewinding to its
    // end cuts nothing but, with --accept-data-loss, lowers the watermark so the node starts.
    let lost_above_end = commit_lsn.filter(|c| *c > before.lsn);
    if to == before.lsn {
        if let Some(c) = lost_above_end {
            if !req.accept_data_loss {
                return Ok(RewindPlan::Finished(refused(
                    report,
                    format!(
                        "acknowledged records lost: log ends at lsn {to}, commit watermark {c}; pass --accept-data-loss to lower the watermark to {to} and accept losing lsn {}..={c}",
                        to + 1
                    ),
                )));
            }
        } else {
            let mut o = Outcome::new(report, Exit::Ok);
            o.message = Some(format!("nothing to cut: lsn {to} is the last record"));
            return Ok(RewindPlan::Finished(o));
        }
    }
    let newest_snapshot = boundaries(&check_snapshots(
        d.storage(),
        &d.snapshot_dir(),
        Depth::Header,
    )?)
    .pop();
    let committed_records = commit_lsn.map_or(0, |c| c.min(before.lsn).saturating_sub(to));
    let plan = CutPlan {
        first_lsn: to + 1,
        last_lsn: before.lsn,
        records,
        bytes,
        epochs,
        committed_records,
    };
    assert_eq!(
        plan.records,
        before.lsn - to,
        "rewind plan: a verified log is dense, so it cuts last - to records"
    );
    let mut report = report;
    report.cut = Some(plan.clone());
    if let Some(b) = newest_snapshot.filter(|b| b.lsn > to) {
        // The node would roll the WAL forward to the snapshot on open
        // (SnapshotStore::recover): the rewind would silently not hold.
        return Ok(RewindPlan::Finished(refused(
            report,
            format!(
                "the newest installed snapshot's boundary (lsn {}) is above lsn {to}: the node would restore it on open; a log below a snapshot needs a resync, not a rewind",
                b.lsn
            ),
        )));
    }
    if committed_records > 0 && !req.accept_data_loss {
        let c = commit_lsn.unwrap_or(0);
        return Ok(RewindPlan::Finished(refused(
            report,
            format!(
                "cutting after lsn {to} would remove {committed_records} committed records (lsn {}..={}, commit watermark {c}); pass --accept-data-loss to accept losing them",
                to + 1,
                c.min(before.lsn)
            ),
        )));
    }
    Ok(RewindPlan::Ready(ReadyRewind {
        report,
        plan,
        wal_state_before: WalState::from_end(&scan.end),
        req: *req,
    }))
}

/// Performs a confirmed rewind on `d` (locked by the caller): audit `intent`
/// → `Wal::open` + `truncate_tail` → (with `--accept-data-loss`) lower
/// `state/commit` → verify → audit `done`.
pub fn perform_rewind(
    d: &DataDir,
    ready: ReadyRewind,
    env: &mut Env<'_>,
) -> Result<Outcome<RewindReport>, RecoverError> {
    let ReadyRewind {
        mut report,
        plan,
        wal_state_before,
        req,
    } = ready;
    let dir = d.root();
    let to = req.to_lsn;
    let before = report.before;
    let commit_lsn = report.commit_lsn;
    let opts = ScanOptions {
        max_record_bytes: req.max_record_bytes,
    };
    // Audit first: the action must never happen without a durable trace.
    let details = serde_json::json!({
        "to_lsn": to,
        "before": before,
        "commit_lsn": commit_lsn,
        "accept_data_loss": req.accept_data_loss,
        "cut": plan,
        "wal_state_before": wal_state_before,
    });
    let state_dir = d.state_dir();
    let audit_path = append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("rewind", "intent", dir, &env.command_line, details.clone()),
    )?;
    report.audit_log = Some(audit_path.display().to_string());
    let lower_commit = req.accept_data_loss && commit_lsn.is_some_and(|c| c > to);
    let done = (|| -> Result<_, RecoverError> {
        let wal_opts = WalOptions {
            max_record_bytes: req.max_record_bytes,
            ..WalOptions::default()
        };
        let (mut wal, _open) = Wal::open(FsStorage, &d.wal_dir(), wal_opts)?;
        wal.truncate_tail(to)?;
        let after = wal.last();
        drop(wal);
        if lower_commit {
            // The watermark must not claim records this node no longer holds.
            write_state_json(
                d.storage(),
                &state_dir,
                COMMIT_FILE,
                &CommitBody { commit_lsn: to },
            )?;
        }
        Ok(after)
    })();
    let after = match done {
        Ok(a) => a,
        Err(e) => {
            let mut failed = details.clone();
            failed["error"] = serde_json::Value::String(e.to_string());
            let _ = append_audit(
                d.storage(),
                &state_dir,
                &AuditEntry::now("rewind", "failed", dir, &env.command_line, failed),
            );
            return Err(e);
        }
    };
    tracing::warn!(
        dir = %dir.display(),
        to_lsn = to,
        before_lsn = before.lsn,
        before_epoch = before.epoch,
        after_lsn = after.lsn,
        records = plan.records,
        "operator rewind: WAL tail cut"
    );
    report.performed = true;
    report.after = Some(after);
    report.commit_lsn_after = if lower_commit { Some(to) } else { commit_lsn };
    let check = d.scan(
        opts,
        progress_label(env.progress, "rewind: verify"),
        &mut |_, _, _| ControlFlow::Continue(()),
    )?;
    let verify = WalState::from_end(&check.end);
    let mut done_details = details;
    done_details["after"] = serde_json::to_value(after).unwrap_or_default();
    done_details["commit_lsn_after"] =
        serde_json::to_value(report.commit_lsn_after).unwrap_or_default();
    done_details["verify"] = serde_json::to_value(&verify).unwrap_or_default();
    append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("rewind", "done", dir, &env.command_line, done_details),
    )?;
    let exit = if verify.is_corrupt() || check.last != after {
        Exit::Corruption
    } else {
        Exit::Ok
    };
    report.verify = Some(verify);
    let mut o = Outcome::new(report, exit);
    if exit != Exit::Ok {
        o.message = Some("the log does not verify after the rewind".to_string());
    }
    Ok(o)
}

fn plan_text(plan: &CutPlan, commit_lsn: Option<Lsn>) -> String {
    let mut s = if plan.records == 0 {
        format!("cuts no record (the log ends at lsn {})", plan.last_lsn)
    } else {
        format!(
            "will cut lsn {}..={} ({} records, {} bytes)",
            plan.first_lsn, plan.last_lsn, plan.records, plan.bytes
        )
    };
    for e in &plan.epochs {
        s.push_str(&format!(
            "\n  epoch {}: lsn {}..={} ({} records)",
            e.epoch, e.first_lsn, e.last_lsn, e.records
        ));
    }
    match commit_lsn {
        Some(c) => s.push_str(&format!("\ncommit watermark: {c}")),
        None => s.push_str("\ncommit watermark: absent"),
    }
    if plan.committed_records > 0 {
        s.push_str(&format!(
            "\nDATA LOSS: {} of these records are committed",
            plan.committed_records
        ));
    }
    if let Some(c) = commit_lsn.filter(|c| *c > plan.last_lsn) {
        s.push_str(&format!(
            "\nDATA LOSS: acknowledged records lost: log ends at lsn {}, commit watermark {c}; the watermark is lowered",
            plan.last_lsn
        ));
    }
    s
}

impl TextReport for RewindReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "rewind {} to lsn {} (last was {})",
            self.dir, self.to_lsn, self.before
        )?;
        match &self.cut {
            Some(plan) => writeln!(w, "{}", plan_text(plan, self.commit_lsn))?,
            None => writeln!(w, "nothing to cut")?,
        }
        if let Some(r) = &self.refused {
            writeln!(w, "REFUSED: {r}")?;
        }
        if self.performed {
            if let Some(a) = &self.after {
                writeln!(w, "done: last record is now {a}")?;
            }
            if self.commit_lsn_after != self.commit_lsn {
                writeln!(w, "commit watermark lowered to {:?}", self.commit_lsn_after)?;
            }
        }
        if let Some(v) = &self.verify {
            writeln!(w, "verify: {}", wal_state_line(v))?;
        }
        if let Some(a) = &self.audit_log {
            writeln!(w, "audit entry written to {a}")?;
        }
        Ok(())
    }
}
