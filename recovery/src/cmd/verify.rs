//! `verify DIR`: full read-only scan of every segment and the state files.

use std::io::{self, Write};
use std::path::Path;

use crate::cli::Common;
use crate::cmd::text::{write_snapshots, write_wal_summary};
use crate::cmd::{progress_label, scan_options};
use crate::datadir::{DataDir, COMMIT_FILE, EPOCHS_FILE};
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{AcknowledgedLoss, StateFileCheck, VerifyReport, WalSummary};
use crate::scan::ScanOptions;
use crate::snapshots::{scan_with_snapshots, Depth, SnapshotScan};
use crate::{Outcome, TextReport};

/// Runs `verify`: exit 3 if the WAL or a state file is corrupt, else 0 (a torn tail is not corruption).
pub fn verify(
    dir: &Path,
    common: &Common,
    progress: bool,
) -> Result<Outcome<VerifyReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    verify_data_dir(&d, scan_options(common), progress_label(progress, "verify"))
}

/// `verify` on a directory the caller has locked (also the last step of `rejoin`).
pub fn verify_data_dir(
    d: &DataDir,
    opts: ScanOptions,
    progress: Option<&str>,
) -> Result<Outcome<VerifyReport>, RecoverError> {
    let dir = d.root();
    let SnapshotScan {
        snapshots,
        scan,
        snapshot_wal,
    } = scan_with_snapshots(d, Depth::Full, opts, progress)?;
    let wal = WalSummary::from_scan(&d.wal_dir(), &scan);
    let state_files = check_state_files(d)?;
    let loss = AcknowledgedLoss::judge(&scan, &snapshot_wal, readable_commit_lsn(d)?);
    let corrupt = wal.state.is_corrupt()
        || state_files.iter().any(|c| !c.ok)
        || snapshots.iter().any(|s| !s.ok)
        || snapshot_wal.is_mismatch()
        || loss.is_some();
    let report = VerifyReport {
        dir: dir.display().to_string(),
        wal,
        state_files,
        snapshots,
        snapshot_wal,
        acknowledged_records_lost: loss,
    };
    let mut out = Outcome::new(report, if corrupt { Exit::Corruption } else { Exit::Ok });
    if corrupt {
        out.message = Some(match loss {
            Some(l) => format!("{}: corruption found: {}", dir.display(), l.message()),
            None => format!("{}: corruption found", dir.display()),
        });
    }
    Ok(out)
}

/// `state/commit` for the acknowledged-loss check: `None` if absent or damaged (a damaged
/// file is reported by [`check_state_files`]); I/O errors propagate.
pub fn readable_commit_lsn(d: &DataDir) -> Result<Option<walship_wal::Lsn>, RecoverError> {
    match d.commit_lsn() {
        Ok(c) => Ok(c),
        Err(RecoverError::StateCorrupt { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads and checks `state/commit`, `state/epochs` and `state/halt`. I/O errors propagate.
pub fn check_state_files(d: &DataDir) -> Result<Vec<StateFileCheck>, RecoverError> {
    fn verdict<T>(
        name: &str,
        r: Result<Option<T>, RecoverError>,
    ) -> Result<StateFileCheck, RecoverError> {
        match r {
            Ok(v) => Ok(StateFileCheck {
                name: name.to_string(),
                present: v.is_some(),
                ok: true,
                error: None,
            }),
            Err(RecoverError::StateCorrupt { message }) => Ok(StateFileCheck {
                name: name.to_string(),
                present: true,
                ok: false,
                error: Some(message),
            }),
            Err(e) => Err(e),
        }
    }
    Ok(vec![
        verdict(COMMIT_FILE, d.commit_lsn())?,
        verdict(EPOCHS_FILE, d.epoch_history())?,
        verdict("halt", d.halt())?,
    ])
}

impl TextReport for VerifyReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "verify {}", self.dir)?;
        write_wal_summary(w, &self.wal)?;
        for c in &self.state_files {
            let v = match (&c.error, c.present) {
                (Some(e), _) => format!("CORRUPT: {e}"),
                (None, true) => "ok".to_string(),
                (None, false) => "absent".to_string(),
            };
            writeln!(w, "state/{}: {v}", c.name)?;
        }
        if let Some(l) = &self.acknowledged_records_lost {
            writeln!(w, "CORRUPT: {}", l.message())?;
        }
        write_snapshots(w, &self.snapshots, &self.snapshot_wal)
    }
}
