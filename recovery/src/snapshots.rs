//! Read-only checks of `DIR/snapshots/` (walship-snapshot's format and
//! layout) and of the agreement between the newest installed snapshot and the
//! WAL. Never opens a `SnapshotStore` (its `open` discards temporaries): it
//! lists the directory and verifies each installed snapshot with
//! `SnapshotReader`, as `SnapshotStore::installed`/`verify` would.

use std::path::Path;

use walship_snapshot::{
    parse_snapshot_dir_name, Limits, SnapshotReader, SNAPSHOT_FILE, TMP_PREFIX,
};
use walship_wal::{Lsn, Position, Storage};

use crate::error::RecoverError;
use crate::report::{SnapshotInfo, SnapshotWal};

/// How deeply installed snapshots are verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Header, exact file length and trailer (cheap; `inspect`).
    Header,
    /// Also every chunk's crc and the whole-payload crc (`verify`, `snapshot verify`).
    Full,
}

/// Lists and checks every entry of `snapshot_dir` (empty if the directory is absent).
pub fn check_snapshots<S: Storage>(
    storage: &S,
    snapshot_dir: &Path,
    depth: Depth,
) -> Result<Vec<SnapshotInfo>, RecoverError> {
    let names = match storage.list(snapshot_dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RecoverError::Io {
                op: "list",
                path: snapshot_dir.to_path_buf(),
                source,
            })
        }
    };
    let limits = Limits::default();
    let mut out = Vec::new();
    for name in names {
        let mut info = SnapshotInfo {
            name: name.clone(),
            kind: "unknown".to_string(),
            boundary: None,
            file_bytes: None,
            payload_bytes: None,
            verified: "none".to_string(),
            ok: true,
            error: None,
        };
        if name.starts_with(TMP_PREFIX) {
            info.kind = "temporary".to_string();
            info.error = None;
        } else if let Some(lsn) = parse_snapshot_dir_name(&name) {
            info.kind = "installed".to_string();
            let file = snapshot_dir.join(&name).join(SNAPSHOT_FILE);
            match storage.map(&file) {
                Err(e) => {
                    info.ok = false;
                    info.error = Some(format!("{}: {e}", file.display()));
                }
                Ok(map) => {
                    info.file_bytes = Some(map.len() as u64);
                    match SnapshotReader::open(map, &limits, None) {
                        Err(e) => {
                            info.ok = false;
                            info.error = Some(format!("{}: {e}", file.display()));
                        }
                        Ok(r) => {
                            info.boundary = Some(r.boundary());
                            info.payload_bytes = Some(r.header().total_len);
                            info.verified = "header".to_string();
                            if r.boundary().lsn != lsn {
                                info.ok = false;
                                info.error = Some(format!(
                                    "{}: boundary lsn {} differs from the directory name {name}",
                                    file.display(),
                                    r.boundary().lsn
                                ));
                            } else if let Err(e) = check_configuration_file(
                                storage,
                                &snapshot_dir.join(&name),
                                r.boundary().lsn,
                                r.header().crc(),
                            ) {
                                // The node refuses a damaged one at open (spec/snapshot-format.md §1.5).
                                info.ok = false;
                                info.error = Some(e);
                            } else if depth == Depth::Full {
                                info.verified = "full".to_string();
                                if let Err(e) = r.verify() {
                                    info.ok = false;
                                    info.error = Some(format!("{}: {e}", file.display()));
                                }
                            }
                        }
                    }
                }
            }
        }
        out.push(info);
    }
    Ok(out)
}

/// Checks the configuration file of the snapshot directory `dir`, if it has one
/// (spec/snapshot-format.md §1.5): the error names the file.
fn check_configuration_file<S: Storage>(
    storage: &S,
    dir: &Path,
    boundary_lsn: Lsn,
    header_crc: u32,
) -> Result<(), String> {
    let path = dir.join(walship_snapshot::CONFIG_FILE);
    match storage.exists(&path) {
        Ok(false) => return Ok(()),
        Ok(true) => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let map = storage
        .map(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    walship_snapshot::BoundaryMembership::decode(&map, boundary_lsn, header_crc)
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The boundary lsns of the installed snapshots that verified, ascending.
pub fn boundaries(snaps: &[SnapshotInfo]) -> Vec<Position> {
    let mut v: Vec<Position> = snaps
        .iter()
        .filter(|s| s.ok && s.kind == "installed")
        .filter_map(|s| s.boundary)
        .collect();
    v.sort_by_key(|p| p.lsn);
    v
}

/// Judges the newest installed snapshot against the WAL, by the rule of
/// `SnapshotStore::recover`: a WAL ending below the boundary is an interrupted
/// install (the node resets the WAL to the boundary on open); otherwise the
/// WAL must hold the boundary record with the boundary's identity.
/// `wal_at` is the WAL's position at the boundary lsn (`None`: not retained).
/// With `wal_corrupt` the WAL was not read to its end: without the boundary
/// record the verdict is `unknown`.
pub fn judge_snapshot_wal(
    newest: Option<Position>,
    wal_last: Position,
    wal_at: Option<Position>,
    wal_corrupt: bool,
) -> SnapshotWal {
    let Some(b) = newest else {
        return SnapshotWal {
            state: "no-snapshot".to_string(),
            boundary: None,
            wal_at_boundary: None,
            detail: "no installed snapshot".to_string(),
        };
    };
    let (state, detail) = if wal_corrupt && wal_at.is_none() {
        (
            "unknown",
            format!(
                "the WAL is corrupt before the boundary lsn {} could be read",
                b.lsn
            ),
        )
    } else if wal_last.lsn < b.lsn {
        (
            "install-interrupted",
            format!(
                "the WAL ends at lsn {} below the boundary lsn {}: the node completes the install (WAL reset to the boundary) on open",
                wal_last.lsn, b.lsn
            ),
        )
    } else if wal_at == Some(b) {
        (
            "consistent",
            format!("the WAL holds the boundary record {b}"),
        )
    } else {
        (
            "mismatch",
            match wal_at {
                Some(p) => format!(
                    "the WAL's record at lsn {} is {p}, the snapshot's boundary is {b}",
                    b.lsn
                ),
                None => format!(
                    "the WAL does not retain the boundary record (lsn {})",
                    b.lsn
                ),
            },
        )
    };
    SnapshotWal {
        state: state.to_string(),
        boundary: Some(b),
        wal_at_boundary: wal_at,
        detail,
    }
}

/// Collects the WAL position at `lsn` during a scan (see `verify`/`inspect`).
#[derive(Debug, Default)]
pub struct PositionProbe {
    /// The lsn wanted.
    pub lsn: Option<Lsn>,
    /// The position found there.
    pub found: Option<Position>,
}

impl PositionProbe {
    /// Probes for the newest boundary's lsn.
    pub fn for_boundary(newest: Option<Position>) -> PositionProbe {
        PositionProbe {
            lsn: newest.map(|b| b.lsn),
            found: None,
        }
    }

    /// Called for every verified record.
    pub fn see(&mut self, pos: Position) {
        if Some(pos.lsn) == self.lsn {
            self.found = Some(pos);
        }
    }

    /// The position at the wanted lsn, including the WAL's base (the record
    /// before its first retained one, e.g. a snapshot boundary after `reset_to`).
    pub fn result(&self, base: Position) -> Option<Position> {
        match self.lsn {
            Some(l) if l == base.lsn => Some(base),
            _ => self.found,
        }
    }
}

/// What the snapshot-aware commands (`inspect`, `verify`, `snapshot verify`)
/// learn from one pass: the installed snapshots, the WAL scan, and how the
/// newest snapshot relates to the WAL.
pub struct SnapshotScan {
    /// Every installed snapshot, checked to `depth`.
    pub snapshots: Vec<SnapshotInfo>,
    /// The read-only WAL scan (confirmed by `walship_wal::inspect`).
    pub scan: crate::scan::WalScan,
    /// The newest snapshot judged against the WAL.
    pub snapshot_wal: SnapshotWal,
}

/// Checks the snapshots, scans the WAL once (probing the newest boundary on
/// the way) and judges the two together.
pub fn scan_with_snapshots(
    d: &crate::datadir::DataDir,
    depth: Depth,
    opts: crate::scan::ScanOptions,
    progress_label: Option<&str>,
) -> Result<SnapshotScan, RecoverError> {
    let snapshots = check_snapshots(d.storage(), &d.snapshot_dir(), depth)?;
    let newest = boundaries(&snapshots).pop();
    let mut probe = PositionProbe::for_boundary(newest);
    let scan = d.scan(opts, progress_label, &mut |_, _, v| {
        probe.see(v.position());
        std::ops::ControlFlow::Continue(())
    })?;
    let snapshot_wal = judge_snapshot_wal(
        newest,
        scan.last,
        probe.result(scan.start),
        scan.corruption().is_some(),
    );
    Ok(SnapshotScan {
        snapshots,
        scan,
        snapshot_wal,
    })
}
