//! `inspect DIR`: segments, lsn range, epochs, watermarks, snapshots, halt state.

use std::io::{self, Write};
use std::path::Path;

use crate::audit::read_audit;
use crate::cli::Common;
use crate::cmd::text::{write_halt, write_snapshots, write_wal_summary};
use crate::cmd::{progress_label, scan_options};
use crate::datadir::DataDir;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{AcknowledgedLoss, InspectReport, WalSummary, Watermarks};
use crate::snapshots::{scan_with_snapshots, Depth, SnapshotScan};
use crate::{Outcome, TextReport};

/// Runs `inspect`: exit 3 if the WAL, a snapshot or the snapshot/WAL agreement is corrupt or
/// the log ends below `state/commit`, else 4 if the node is halted, else 0.
pub fn inspect(
    dir: &Path,
    common: &Common,
    progress: bool,
) -> Result<Outcome<InspectReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    let SnapshotScan {
        snapshots,
        scan,
        snapshot_wal,
    } = scan_with_snapshots(
        &d,
        Depth::Header,
        scan_options(common),
        progress_label(progress, "inspect"),
    )?;
    let commit_lsn = d.commit_lsn()?;
    let epoch_history = d.epoch_history()?.map(|h| h.entries);
    let halt = d.halt()?;
    let audit_entries = read_audit(d.storage(), &d.state_dir())?.len() as u64;
    let durable_lsn = scan.last.lsn;
    let tentative_records = durable_lsn.saturating_sub(commit_lsn.unwrap_or(0));
    let wal = WalSummary::from_scan(&d.wal_dir(), &scan);
    let loss = AcknowledgedLoss::judge(&scan, &snapshot_wal, commit_lsn);
    let damaged = snapshots.iter().any(|s| !s.ok) || snapshot_wal.is_mismatch() || loss.is_some();
    let exit = if wal.state.is_corrupt() || damaged {
        Exit::Corruption
    } else if halt.is_some() {
        Exit::Halted
    } else {
        Exit::Ok
    };
    let report = InspectReport {
        dir: dir.display().to_string(),
        wal,
        epochs_in_log: scan.epochs.clone(),
        epoch_history,
        watermarks: Watermarks {
            durable_lsn,
            commit_lsn,
            tentative_records,
        },
        acknowledged_records_lost: loss,
        snapshots,
        snapshot_wal,
        halted: halt.is_some(),
        halt,
        audit_entries,
    };
    let mut out = Outcome::new(report, exit);
    if let Some(l) = loss {
        out.message = Some(format!(
            "{}: corruption found: {}",
            dir.display(),
            l.message()
        ));
    }
    Ok(out)
}

impl TextReport for InspectReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "inspect {}", self.dir)?;
        write_wal_summary(w, &self.wal)?;
        writeln!(w, "epochs in the log:")?;
        for e in &self.epochs_in_log {
            writeln!(
                w,
                "  epoch {}: lsn {}..={} ({} records)",
                e.epoch, e.first_lsn, e.last_lsn, e.records
            )?;
        }
        match &self.epoch_history {
            Some(h) => {
                writeln!(w, "epoch history (state/epochs):")?;
                for e in h {
                    writeln!(w, "  epoch {} starts at lsn {}", e.epoch, e.start_lsn)?;
                }
            }
            None => writeln!(w, "epoch history: absent")?,
        }
        let commit = self
            .watermarks
            .commit_lsn
            .map(|c| c.to_string())
            .unwrap_or_else(|| "absent".to_string());
        writeln!(
            w,
            "durable lsn: {}; commit lsn: {commit}; tentative records: {}",
            self.watermarks.durable_lsn, self.watermarks.tentative_records
        )?;
        if let Some(l) = &self.acknowledged_records_lost {
            writeln!(w, "CORRUPT: {}", l.message())?;
        }
        write_snapshots(w, &self.snapshots, &self.snapshot_wal)?;
        writeln!(w, "audit log entries: {}", self.audit_entries)?;
        match &self.halt {
            Some(h) => write_halt(w, h),
            None => writeln!(w, "not halted"),
        }
    }
}
