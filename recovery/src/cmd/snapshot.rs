//! `snapshot verify DIR` and `snapshot create DIR --state FILE --lsn LSN`.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;

use walship_snapshot::{BoundaryMembership, Limits, SnapshotError, SnapshotSource, SnapshotStore};
use walship_wal::control::{Configuration, ControlRecord};
use walship_wal::{FsStorage, Lsn, Position};

use crate::audit::{append_audit, AuditEntry};
use crate::cli::Common;
use crate::cmd::text::{wal_state_line, write_snapshots};
use crate::cmd::{progress_label, scan_options};
use crate::datadir::DataDir;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{SnapshotCreateReport, SnapshotInfo, SnapshotVerifyReport, WalState};
use crate::snapshots::{
    boundaries, check_snapshots, scan_with_snapshots, Depth, PositionProbe, SnapshotScan,
};
use crate::{Env, Outcome, TextReport};

/// Runs `snapshot verify`: exit 3 if an installed snapshot is damaged, the
/// newest disagrees with the WAL, or the WAL is corrupt; else 0.
pub fn verify(
    dir: &Path,
    common: &Common,
    progress: bool,
) -> Result<Outcome<SnapshotVerifyReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    let SnapshotScan {
        snapshots,
        scan,
        snapshot_wal,
    } = scan_with_snapshots(
        &d,
        Depth::Full,
        scan_options(common),
        progress_label(progress, "snapshot verify: WAL"),
    )?;
    let wal_state = WalState::from_end(&scan.end);
    let bad =
        snapshots.iter().any(|s| !s.ok) || snapshot_wal.is_mismatch() || wal_state.is_corrupt();
    let mut o = Outcome::new(
        SnapshotVerifyReport {
            dir: dir.display().to_string(),
            snapshots,
            snapshot_wal,
            wal_state,
        },
        if bad { Exit::Corruption } else { Exit::Ok },
    );
    if bad {
        o.message = Some(format!("{}: corruption found", dir.display()));
    }
    Ok(o)
}

/// What the operator asked `snapshot create` for.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    /// The embedder's exported state.
    pub state_file: std::path::PathBuf,
    /// The lsn the state corresponds to.
    pub lsn: Lsn,
    /// Payload bytes per chunk.
    pub chunk_size_bytes: u32,
}

/// The state file as a [`SnapshotSource`].
struct FileSource {
    file: std::fs::File,
    lsn: Lsn,
}

impl SnapshotSource for FileSource {
    fn write_snapshot(&mut self, w: &mut dyn io::Write) -> io::Result<Lsn> {
        io::copy(&mut self.file, w)?;
        Ok(self.lsn)
    }
}

/// Runs `snapshot create`: exit 0 when installed and verified; 2 for an lsn
/// not in the WAL or an unreadable state file; 6 when refused (above the
/// commit watermark, older than the newest snapshot); 3 if the WAL is corrupt.
pub fn create(
    dir: &Path,
    req: &CreateRequest,
    common: &Common,
    env: &mut Env<'_>,
) -> Result<Outcome<SnapshotCreateReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    let lsn = req.lsn;
    if lsn == 0 {
        return Err(RecoverError::BadInput {
            message: "--lsn must be at least 1".to_string(),
        });
    }
    let mut probe = PositionProbe {
        lsn: Some(lsn),
        found: None,
    };
    let mut in_log: Option<(Lsn, Configuration)> = None;
    let scan = d.scan(
        scan_options(common),
        progress_label(env.progress, "snapshot create: WAL"),
        &mut |_, _, v| {
            probe.see(v.position());
            // The newest configuration record at or below the boundary goes into the
            // snapshot's configuration file (spec/snapshot-format.md §1.5).
            if v.is_control() && v.lsn() <= lsn {
                if let Ok(ControlRecord::Configuration { config, .. }) =
                    ControlRecord::decode(v.payload())
                {
                    in_log = Some((v.lsn(), config));
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(c) = scan.corruption() {
        return Err(RecoverError::WalCorrupt(c.clone()));
    }
    let Some(boundary) = probe.result(scan.start) else {
        return Err(RecoverError::BadInput {
            message: format!(
                "lsn {lsn} is not in the WAL (it holds lsn {}..={})",
                scan.start.lsn, scan.last.lsn
            ),
        });
    };
    let commit_lsn = d.commit_lsn()?;
    if lsn > commit_lsn.unwrap_or(0) {
        return Err(RecoverError::Refused {
            reason: format!(
                "lsn {lsn} is above the commit watermark ({}): a snapshot holds committed records only",
                commit_lsn.map_or("absent".to_string(), |c| c.to_string())
            ),
        });
    }
    let before = check_snapshots(d.storage(), &d.snapshot_dir(), Depth::Header)?;
    if let Some(newest) = boundaries(&before).pop() {
        if newest.lsn > lsn {
            return Err(RecoverError::Refused {
                reason: format!(
                    "a newer snapshot is installed (boundary lsn {}); it is the one that counts",
                    newest.lsn
                ),
            });
        }
    }
    // Records before the WAL's first retained one are what the newest snapshot replaced:
    // it records the configuration among them.
    let membership = match in_log {
        Some((lsn, config)) => BoundaryMembership::Record { lsn, config },
        None if scan.start.lsn == 0 => BoundaryMembership::Static,
        None => walship_snapshot::read_newest_membership(
            d.storage(),
            &d.snapshot_dir(),
            &Limits::default(),
        )
        .map_err(snapshot_error)?
        .map_or(BoundaryMembership::Unrecorded, |(_, m)| m),
    };
    let io_state = |op: &'static str| {
        let path = req.state_file.clone();
        move |source| RecoverError::Io { op, path, source }
    };
    let file = std::fs::File::open(&req.state_file).map_err(|e| RecoverError::BadInput {
        message: format!(
            "cannot read the state file {}: {e}",
            req.state_file.display()
        ),
    })?;
    let len = file.metadata().map_err(io_state("stat"))?.len();
    let limits = Limits::default();
    limits
        .check(req.chunk_size_bytes, len)
        .map_err(|e| RecoverError::BadInput {
            message: format!("{}: {e}", req.state_file.display()),
        })?;

    let details = serde_json::json!({
        "lsn": lsn,
        "boundary": boundary,
        "commit_lsn": commit_lsn,
        "state_file": req.state_file.display().to_string(),
        "state_bytes": len,
        "chunk_size_bytes": req.chunk_size_bytes,
    });
    let state_dir = d.state_dir();
    let audit = append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now(
            "snapshot-create",
            "intent",
            dir,
            &env.command_line,
            details.clone(),
        ),
    )?;
    let result = (|| -> Result<_, RecoverError> {
        let (store, opened) =
            SnapshotStore::open(FsStorage, &d.snapshot_dir(), limits).map_err(snapshot_error)?;
        let mut source = FileSource { file, lsn };
        let installed = store
            .create_with_membership(
                req.chunk_size_bytes,
                &mut source,
                &mut |l| {
                    if l == lsn {
                        Ok(boundary)
                    } else {
                        Err(SnapshotError::UnresolvedBoundary {
                            lsn: l,
                            detail: format!("expected lsn {lsn}"),
                        })
                    }
                },
                &mut |_| Ok(membership.clone()),
            )
            .map_err(|e| match e {
                SnapshotError::Embedder { source, .. } => io_state("read")(source),
                other => snapshot_error(other),
            })?;
        store.verify(&installed).map_err(snapshot_error)?;
        Ok((installed, opened))
    })();
    let (installed, opened) = match result {
        Ok(r) => r,
        Err(e) => {
            let mut failed = details;
            failed["error"] = serde_json::Value::String(e.to_string());
            let _ = append_audit(
                d.storage(),
                &state_dir,
                &AuditEntry::now("snapshot-create", "failed", dir, &env.command_line, failed),
            );
            return Err(e);
        }
    };
    let after = check_snapshots(d.storage(), &d.snapshot_dir(), Depth::Full)?;
    let name = walship_snapshot::snapshot_dir_name(installed.boundary.lsn);
    let snapshot = after
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| RecoverError::Internal {
            message: format!("snapshot {name} is not listed after creation"),
        })?;
    let removed_older: Vec<String> = before
        .iter()
        .filter(|b| b.kind == "installed" && !after.iter().any(|a| a.name == b.name))
        .map(|b| b.name.clone())
        .collect();
    let mut done = details;
    done["snapshot"] = serde_json::to_value(&snapshot).unwrap_or_default();
    done["removed_older"] = serde_json::to_value(&removed_older).unwrap_or_default();
    append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("snapshot-create", "done", dir, &env.command_line, done),
    )?;
    let ok = snapshot.ok;
    Ok(Outcome::new(
        SnapshotCreateReport {
            dir: dir.display().to_string(),
            state_file: req.state_file.display().to_string(),
            boundary,
            commit_lsn,
            snapshot,
            discarded_tmp: opened.discarded_tmp,
            removed_older,
            audit_log: Some(audit.display().to_string()),
        },
        if ok { Exit::Ok } else { Exit::Corruption },
    ))
}

/// Maps a snapshot-store error to the tool's error (and exit code).
pub fn snapshot_error(e: SnapshotError) -> RecoverError {
    match e {
        SnapshotError::Io { op, path, source } => RecoverError::Io { op, path, source },
        // An fsync of the store failed earlier in this run: an I/O failure (exit 1).
        SnapshotError::Poisoned { op, path, error } => RecoverError::Io {
            op,
            path,
            source: std::io::Error::other(format!(
                "snapshot store poisoned by an earlier failed {op}: {error}"
            )),
        },
        SnapshotError::Wal(w) => w.into(),
        SnapshotError::InstalledDamaged { .. } | SnapshotError::StoreWalMismatch { .. } => {
            RecoverError::SnapshotCorrupt {
                message: e.to_string(),
            }
        }
        SnapshotError::Boundary(_) => RecoverError::Refused {
            reason: e.to_string(),
        },
        SnapshotError::Invalid(_)
        | SnapshotError::PayloadTooLarge { .. }
        | SnapshotError::UnresolvedBoundary { .. }
        | SnapshotError::Embedder { .. } => RecoverError::BadInput {
            message: e.to_string(),
        },
    }
}

impl TextReport for SnapshotVerifyReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "snapshot verify {}", self.dir)?;
        write_snapshots(w, &self.snapshots, &self.snapshot_wal)?;
        writeln!(w, "wal: {}", wal_state_line(&self.wal_state))
    }
}

impl TextReport for SnapshotCreateReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "snapshot created in {} from {} at boundary {}",
            self.dir, self.state_file, self.boundary
        )?;
        write_snapshot_line(w, &self.snapshot)?;
        for t in &self.discarded_tmp {
            writeln!(w, "discarded temporary snapshot directory {t}")?;
        }
        for o in &self.removed_older {
            writeln!(w, "removed older snapshot {o}")?;
        }
        if let Some(a) = &self.audit_log {
            writeln!(w, "audit entry written to {a}")?;
        }
        Ok(())
    }
}

fn write_snapshot_line(w: &mut dyn Write, s: &SnapshotInfo) -> io::Result<()> {
    let b = s.boundary.unwrap_or(Position::ZERO);
    writeln!(
        w,
        "snapshot {}: boundary {b}, {} payload bytes, verified: {}{}",
        s.name,
        s.payload_bytes.unwrap_or(0),
        s.verified,
        s.error
            .as_ref()
            .map(|e| format!(", DAMAGED: {e}"))
            .unwrap_or_default()
    )
}
