//! `status DIR`: the halt record in full, or 'not halted'; and whether the log ends
//! below the persisted commit watermark (acknowledged records lost, FM-X.6).

use std::io::{self, Write};
use std::path::Path;

use crate::cli::Common;
use crate::cmd::text::write_halt;
use crate::cmd::verify::readable_commit_lsn;
use crate::cmd::{progress_label, scan_options};
use crate::datadir::DataDir;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{AcknowledgedLoss, StatusReport};
use crate::snapshots::{scan_with_snapshots, Depth, SnapshotScan};
use crate::{Outcome, TextReport};

/// Runs `status`: exit 3 if the log ends below `state/commit` (acknowledged records lost),
/// else 4 if halted, else 0. Scans the WAL once to find where the log ends (other damage
/// is `verify`'s to report).
pub fn status(
    dir: &Path,
    common: &Common,
    progress: bool,
) -> Result<Outcome<StatusReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    let halt = d.halt()?;
    let SnapshotScan {
        scan, snapshot_wal, ..
    } = scan_with_snapshots(
        &d,
        Depth::Header,
        scan_options(common),
        progress_label(progress, "status"),
    )?;
    let loss = AcknowledgedLoss::judge(&scan, &snapshot_wal, readable_commit_lsn(&d)?);
    let exit = if loss.is_some() {
        Exit::Corruption
    } else if halt.is_some() {
        Exit::Halted
    } else {
        Exit::Ok
    };
    let mut out = Outcome::new(
        StatusReport {
            dir: dir.display().to_string(),
            acknowledged_records_lost: loss,
            halted: halt.is_some(),
            halt,
        },
        exit,
    );
    if let Some(l) = loss {
        out.message = Some(format!(
            "{}: corruption found: {}",
            dir.display(),
            l.message()
        ));
    }
    Ok(out)
}

impl TextReport for StatusReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        if let Some(l) = &self.acknowledged_records_lost {
            writeln!(w, "CORRUPT: {}", l.message())?;
        }
        match &self.halt {
            Some(h) => write_halt(w, h),
            None => writeln!(w, "not halted"),
        }
    }
}
