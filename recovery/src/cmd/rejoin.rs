//! `rejoin DIR --from PRIMARY_DIR|ADDR`: bring back a node that holds records the
//! primary lacks (halted `divergence`, or `stale-primary` after a failover) in
//! one audited command: diff against the primary's log — its directory (read without
//! its lock, never written: the primary may be running) or the record identities its
//! HTTP endpoint serves (`GET /log/ids`, [`crate::remote::RemoteLog`]) —, decide the cut,
//! rewind to the common prefix, clear the halt, verify. Every step reuses the
//! command that does it alone (`diff`'s [`compare_logs`], `rewind`'s
//! [`plan_rewind`]/[`perform_rewind`], `clear-halt`'s [`judge_halt`]/[`lift_halt`],
//! `verify`'s [`verify_data_dir`]); the rules are in spec/recovery-tool.md §11.

use std::io::{self, Write};
use std::path::Path;

use walship_replica::halt::{HaltReason, HaltRecord};
use walship_wal::Lsn;

use crate::audit::{append_audit, AuditEntry};
use crate::cmd::clear_halt::{judge_halt, lift_halt, required_checks, Condition, HaltFacts};
use crate::cmd::diff::{check_distinct_data_dirs, compare_logs, Comparison, PositionSource, ReadB};
use crate::cmd::progress_label;
use crate::cmd::rewind::{
    ask_confirmation, perform_rewind, plan_rewind, RewindPlan, RewindRequest,
};
use crate::cmd::text::wal_state_line;
use crate::cmd::verify::verify_data_dir;
use crate::datadir::{check_data_dir, DataDir, LiveDir};
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::remote::{RejoinFrom, RemoteLog};
use crate::report::{RejoinReport, Relation};
use crate::scan::{ScanEnd, ScanOptions};
use crate::{Env, Outcome, TextReport};

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct RejoinRequest {
    /// `--from`: the primary's data directory (or a copy of it), or its HTTP endpoint.
    pub from: RejoinFrom,
    /// Allow cutting records at or below the commit watermark (as `rewind`).
    pub accept_data_loss: bool,
    /// Skip the confirmation question.
    pub yes: bool,
    /// The node's record size bound.
    pub max_record_bytes: u32,
}

/// Whether rejoin may clear a halt of `reason`: only the halts a rejoin is
/// the remedy for. Any other halt has a cause rejoin does not look at.
pub fn rejoin_clears(reason: HaltReason) -> bool {
    matches!(reason, HaltReason::Divergence | HaltReason::StalePrimary)
}

/// The cut the comparison calls for: keep records up to and including the
/// returned lsn, or why no cut can be derived (refusal, nothing changed).
fn decide_cut(cmp: &Comparison) -> Result<Lsn, String> {
    let a_last = cmp.a.last.lsn;
    match cmp.relation {
        Relation::Identical | Relation::APrefixOfB => Ok(a_last),
        // DIR holds records the primary lacks (the primary ends below DIR's last).
        Relation::BPrefixOfA => match cmp.common_prefix {
            Some(c) => Ok(c.lsn),
            None => unreachable!("compare_logs: a prefix relation always has a common prefix"),
        },
        Relation::Diverged => {
            let Some(d) = &cmp.divergence else {
                unreachable!("compare_logs: a diverged relation always names the divergence")
            };
            match cmp.common_prefix {
                // Both logs are dense and compared lsn by lsn: the last equal lsn
                // is the one before the first unequal one.
                Some(c) => {
                    assert_eq!(
                        c.lsn + 1,
                        d.lsn,
                        "compare_logs: the common prefix ends just before the first divergence"
                    );
                    Ok(c.lsn)
                }
                None => Err(format!(
                    "the logs differ at lsn {}, the first lsn both retain: the records before it are gone from one of them, so no common prefix can be proven; the node needs a resync (snapshot), not a rewind",
                    d.lsn
                )),
            }
        }
        Relation::Disjoint => Err(format!(
            "no lsn to compare: {} holds lsn {}..={} and the primary's log was read over lsn {}..={}; a common prefix cannot be proven; the node needs a resync (snapshot), not a rewind",
            cmp.name_a,
            cmp.a.start.lsn,
            a_last,
            cmp.b.start.lsn,
            cmp.b.last.lsn
        )),
    }
}

/// Runs `rejoin`: exit 0 when rejoined (or nothing to do), 6 when refused
/// (nothing changed), 3 when either log is corrupt (nothing changed) or the
/// rejoined directory does not verify, 5 when `dir`'s node is running.
pub fn rejoin(
    dir: &Path,
    req: &RejoinRequest,
    env: &mut Env<'_>,
) -> Result<Outcome<RejoinReport>, RecoverError> {
    let primary: Box<dyn PositionSource> = match &req.from {
        RejoinFrom::Dir(primary_dir) => {
            check_distinct_data_dirs(dir, primary_dir)?;
            Box::new(LiveDir::open_unlocked(primary_dir)?)
        }
        &RejoinFrom::Addr(addr) => {
            check_data_dir(dir)?;
            // Who it is first: a rejoin compares with the primary's log, nobody else's.
            Box::new(RemoteLog::connect_primary(addr)?)
        }
    };
    let d = DataDir::open_locked(dir)?;
    let opts = ScanOptions {
        max_record_bytes: req.max_record_bytes,
    };
    let cmp = compare_logs(
        &d,
        primary.as_ref(),
        opts,
        progress_label(env.progress, "rejoin: diff"),
        ReadB::UntilDecided,
    )?;
    let halt = d.halt()?;
    let mut report = RejoinReport {
        dir: dir.display().to_string(),
        primary_dir: req.from.name(),
        primary_addr: match &req.from {
            RejoinFrom::Addr(_) => Some(req.from.name()),
            RejoinFrom::Dir(_) => None,
        },
        diff: cmp.report(),
        primary_read_complete: cmp.b.end != ScanEnd::Stopped,
        to_lsn: None,
        rewind: None,
        halt: halt.clone(),
        halt_checks: Vec::new(),
        halt_cleared: false,
        verify: None,
        refused: None,
        audit_log: None,
    };
    let corrupt = [&report.diff.a, &report.diff.b]
        .into_iter()
        .find(|side| side.state.is_corrupt())
        .map(|side| {
            format!(
                "{}: {}; nothing was changed",
                side.dir,
                wal_state_line(&side.state)
            )
        });
    if let Some(message) = corrupt {
        return Ok(Outcome {
            report,
            exit: Exit::Corruption,
            message: Some(message),
        });
    }
    let keep = match decide_cut(&cmp) {
        Ok(k) => k,
        Err(reason) => return Ok(refuse(report, reason)),
    };
    report.to_lsn = Some(keep);
    if let Some(h) = &halt {
        if !rejoin_clears(h.reason) {
            let reason = format!(
                "{} is halted for {} at lsn {}, not for a divergence: rejoin does not clear it (find its cause with status and verify, then clear-halt)",
                report.dir, h.reason, h.lsn
            );
            return Ok(refuse(report, reason));
        }
        if required_checks(h.reason).contains(&Condition::TailBelowHaltLsn) && keep >= h.lsn {
            let reason = format!(
                "{}'s log agrees with {}'s through lsn {keep}, at or above the {} halt's lsn {}: the divergence the node saw is not in this primary's log (is {} the current primary's directory?)",
                report.dir, report.primary_dir, h.reason, h.lsn, report.primary_dir
            );
            return Ok(refuse(report, reason));
        }
    }

    let rreq = RewindRequest {
        to_lsn: keep,
        accept_data_loss: req.accept_data_loss,
        yes: req.yes,
        max_record_bytes: req.max_record_bytes,
    };
    let ready = match plan_rewind(&d, &rreq, env.progress)? {
        RewindPlan::Finished(o) => {
            let exit = o.exit;
            report.rewind = Some(o.report);
            if exit != Exit::Ok {
                let reason = report
                    .rewind
                    .as_ref()
                    .and_then(|r| r.refused.clone())
                    .unwrap_or_else(|| format!("the rewind to lsn {keep} was refused"));
                report.refused = Some(reason.clone());
                return Ok(Outcome {
                    report,
                    exit,
                    message: Some(format!("refused: {reason}; nothing was changed")),
                });
            }
            None
        }
        RewindPlan::Ready(r) => Some(r),
    };
    if ready.is_none() && halt.is_none() {
        let mut o = Outcome::new(report, Exit::Ok);
        o.message = Some(format!(
            "nothing to do: {dir} is not halted and its log is a prefix of the primary's (lsn {keep})",
            dir = dir.display()
        ));
        return Ok(o);
    }
    if let Some(r) = &ready {
        report.rewind = Some(r.report().clone());
        if !req.yes {
            let question = format!(
                "{}\n{}\nRewind {} to lsn {keep} and rejoin {}? [y/N] ",
                relation_line(&report),
                r.plan_text(),
                report.dir,
                report.primary_dir
            );
            if let Some(reason) = ask_confirmation(env, &question)? {
                return Ok(refuse(report, reason));
            }
        }
    }

    // Audit first: the action must never happen without a durable trace.
    let details = serde_json::json!({
        "primary_dir": report.primary_dir,
        "primary_addr": report.primary_addr,
        "relation": report.diff.relation,
        "common_prefix": report.diff.common_prefix,
        "first_divergence": report.diff.first_divergence,
        "primary_last_read": report.diff.b.last,
        "to_lsn": keep,
        "cut": report.rewind.as_ref().and_then(|r| r.cut.clone()),
        "halt": halt,
        "accept_data_loss": req.accept_data_loss,
    });
    let state_dir = d.state_dir();
    let audit_path = append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("rejoin", "intent", dir, &env.command_line, details.clone()),
    )?;
    report.audit_log = Some(audit_path.display().to_string());
    let failed = |d: &DataDir, env: &Env<'_>, error: String| {
        let mut f = details.clone();
        f["error"] = serde_json::Value::String(error);
        // Best effort: the error being reported matters more than this entry.
        let _ = append_audit(
            d.storage(),
            &d.state_dir(),
            &AuditEntry::now("rejoin", "failed", dir, &env.command_line, f),
        );
    };

    if let Some(r) = ready {
        let done = match perform_rewind(&d, r, env) {
            Ok(o) => o,
            Err(e) => {
                failed(&d, env, e.to_string());
                return Err(e);
            }
        };
        let exit = done.exit;
        report.rewind = Some(done.report);
        if exit != Exit::Ok {
            let message = done
                .message
                .unwrap_or_else(|| "the rewind did not complete".to_string());
            failed(&d, env, message.clone());
            return Ok(Outcome {
                report,
                exit,
                message: Some(message),
            });
        }
    }

    if let Some(h) = &halt {
        let facts =
            match HaltFacts::gather(&d, opts, progress_label(env.progress, "rejoin: clear-halt")) {
                Ok(f) => f,
                Err(e) => {
                    failed(&d, env, e.to_string());
                    return Err(e);
                }
            };
        report.halt_checks = judge_halt(h, &facts);
        let unmet: Vec<String> = report
            .halt_checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if !unmet.is_empty() {
            // The decision above made tail-below-halt-lsn hold after the cut; what
            // can still fail is the directory itself (snapshots, acknowledged loss).
            let message = format!(
                "the {} halt at lsn {} is NOT cleared: {}",
                h.reason,
                h.lsn,
                unmet.join("; ")
            );
            failed(&d, env, message.clone());
            return Ok(Outcome {
                report,
                exit: Exit::Corruption,
                message: Some(message),
            });
        }
        if let Err(e) = lift_halt(&d, h, &report.halt_checks, &facts, env) {
            failed(&d, env, e.to_string());
            return Err(e);
        }
        report.halt_cleared = true;
    }

    let verified = match verify_data_dir(&d, opts, progress_label(env.progress, "rejoin: verify")) {
        Ok(v) => v,
        Err(e) => {
            failed(&d, env, e.to_string());
            return Err(e);
        }
    };
    let exit = verified.exit;
    let mut done_details = details;
    done_details["after"] = serde_json::to_value(verified.report.wal.last).unwrap_or_default();
    done_details["halt_cleared"] = serde_json::Value::Bool(report.halt_cleared);
    done_details["verify"] = serde_json::to_value(&verified.report.wal.state).unwrap_or_default();
    done_details["verify_ok"] = serde_json::Value::Bool(exit == Exit::Ok);
    append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("rejoin", "done", dir, &env.command_line, done_details),
    )?;
    tracing::warn!(
        dir = %dir.display(),
        primary = %req.from.name(),
        to_lsn = keep,
        halt_cleared = report.halt_cleared,
        "operator rejoin: done"
    );
    report.verify = Some(verified.report);
    let mut o = Outcome::new(report, exit);
    if exit != Exit::Ok {
        o.message = Some(
            verified
                .message
                .unwrap_or_else(|| "the rejoined directory does not verify".to_string()),
        );
    }
    Ok(o)
}

fn refuse(mut report: RejoinReport, reason: String) -> Outcome<RejoinReport> {
    report.refused = Some(reason.clone());
    Outcome {
        report,
        exit: Exit::Refused,
        message: Some(format!("refused: {reason}; nothing was changed")),
    }
}

/// How DIR relates to the primary's log, in one line.
fn relation_line(r: &RejoinReport) -> String {
    let cp = r.diff.common_prefix;
    match (&r.diff.relation, &r.diff.first_divergence) {
        (Relation::Identical, _) => format!("{} holds the same records as the primary", r.dir),
        (Relation::APrefixOfB, _) => format!(
            "{} is a prefix of the primary's log (common prefix up to {cp})",
            r.dir
        ),
        (Relation::BPrefixOfA, _) => format!(
            "{} holds records the primary lacks: the primary's log ends at {cp}",
            r.dir
        ),
        (Relation::Diverged, Some(d)) => {
            format!("DIVERGED at lsn {}: common prefix up to {cp}", d.lsn)
        }
        (Relation::Diverged, None) => "DIVERGED".to_string(),
        (Relation::Disjoint, _) => "no comparable lsn".to_string(),
    }
}

fn halt_line(h: &HaltRecord) -> String {
    format!(
        "{} at lsn {} (epoch {}, peer {})",
        h.reason, h.lsn, h.epoch, h.peer
    )
}

impl TextReport for RejoinReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "rejoin {} from {}", self.dir, self.primary_dir)?;
        let a = &self.diff.a;
        let b = &self.diff.b;
        writeln!(
            w,
            "  this node: last {} ({})",
            a.last,
            wal_state_line(&a.state)
        )?;
        let read = if self.primary_read_complete {
            "read to its end"
        } else {
            "read as far as the comparison needs; it holds more"
        };
        writeln!(
            w,
            "  primary:   last read {} ({read}; {})",
            b.last,
            wal_state_line(&b.state)
        )?;
        writeln!(w, "1. diff: {}", relation_line(self))?;
        match (self.to_lsn, &self.rewind) {
            (None, _) => writeln!(w, "2. rewind: not decided")?,
            (Some(k), None) => writeln!(w, "2. rewind: keep up to lsn {k}")?,
            (Some(k), Some(r)) => match &r.cut {
                None if r.commit_lsn_after == r.commit_lsn => {
                    writeln!(w, "2. rewind: nothing to cut (keep up to lsn {k})")?
                }
                _ => {
                    let plan = r
                        .cut
                        .as_ref()
                        .map(|p| {
                            let mut s = format!(
                                "keep up to lsn {k}; cut lsn {}..={} ({} records, {} bytes)",
                                p.first_lsn, p.last_lsn, p.records, p.bytes
                            );
                            for e in &p.epochs {
                                s.push_str(&format!(
                                    "\n     epoch {}: lsn {}..={} ({} records)",
                                    e.epoch, e.first_lsn, e.last_lsn, e.records
                                ));
                            }
                            if p.committed_records > 0 {
                                s.push_str(&format!(
                                    "\n     DATA LOSS: {} of these records are committed",
                                    p.committed_records
                                ));
                            }
                            s
                        })
                        .unwrap_or_else(|| format!("keep up to lsn {k}"));
                    let state = if r.performed {
                        match &r.after {
                            Some(after) => format!("done, last record is now {after}"),
                            None => "done".to_string(),
                        }
                    } else {
                        "not performed".to_string()
                    };
                    writeln!(w, "2. rewind: {plan}\n   {state}")?;
                    if r.performed && r.commit_lsn_after != r.commit_lsn {
                        let lsn =
                            |l: Option<Lsn>| l.map_or("absent".to_string(), |l| l.to_string());
                        writeln!(
                            w,
                            "   DATA LOSS: commit watermark lowered from {} to {}",
                            lsn(r.commit_lsn),
                            lsn(r.commit_lsn_after)
                        )?;
                    }
                }
            },
        }
        match &self.halt {
            None => writeln!(w, "3. halt: not halted")?,
            Some(h) => {
                let verdict = if self.halt_cleared {
                    "cleared"
                } else {
                    "NOT cleared"
                };
                writeln!(w, "3. halt: {} — {verdict}", halt_line(h))?;
                for c in &self.halt_checks {
                    let mark = if c.passed { "ok  " } else { "FAIL" };
                    writeln!(w, "   [{mark}] {}: {}", c.name, c.detail)?;
                }
            }
        }
        match &self.verify {
            None => writeln!(w, "4. verify: not run (nothing was changed)")?,
            Some(v) => {
                let ok = v.acknowledged_records_lost.is_none()
                    && v.state_files.iter().all(|s| s.ok)
                    && v.snapshots.iter().all(|s| s.ok)
                    && !v.snapshot_wal.is_mismatch();
                let extra = if ok { "" } else { " — CORRUPTION FOUND" };
                writeln!(w, "4. verify: {}{extra}", wal_state_line(&v.wal.state))?;
            }
        }
        if let Some(r) = &self.refused {
            writeln!(w, "REFUSED: {r}")?;
        }
        if let Some(a) = &self.audit_log {
            writeln!(w, "audit entries written to {a}")?;
        }
        Ok(())
    }
}
