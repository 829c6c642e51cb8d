//! Opening the executor: the node directory, the halt file (start mode), local recovery
//! of the WAL and the snapshot store, and the replay of committed records to the applier.

use std::collections::VecDeque;

use walship_snapshot::{FailureClass, Limits, RecoveryReport, SnapshotStore};
use walship_wal::state::NodeDir;
use walship_wal::{Lsn, OpenReport, Position, Storage, Wal, WalError};

use super::{ExecConfig, Local, Output, ReplicaExec, Start};
use crate::replica::{Applier, ReplicaError};
use walship_replica::core::{CoreConfig, DurableState, Event, ReplicaCore};
use walship_replica::halt::{start_mode, write_halt, HaltReason, HaltRecord, StartMode};

/// The `local-corruption` halt of a log that ends (or would end, after a refused cut) at
/// `log_end`, below the persisted commit watermark (FM-X.6).
fn lost_records_halt(
    log_end: Lsn,
    commit_lsn: Lsn,
    epoch: u64,
    context: &str,
    now_ms: u64,
) -> HaltRecord {
    HaltRecord {
        reason: HaltReason::LocalCorruption,
        lsn: log_end + 1,
        epoch,
        expected: format!(
            "the log holds every record up to the persisted commit watermark {commit_lsn}"
        ),
        found: format!("the log ends at lsn {log_end}"),
        peer: "local".into(),
        at_unix_ms: now_ms,
        detail: format!(
            "acknowledged records lost: log ends at lsn {log_end}, commit watermark {commit_lsn} ({context}); \
             restore the records (resync), or accept their loss: walship-recover rewind DIR --to {log_end} --accept-data-loss, then walship-recover clear-halt DIR"
        ),
    }
}

/// What recovery decided before the core is built.
struct Recovered<S: Storage> {
    local: Option<Local<S>>,
    start: Start,
    halt: Option<HaltRecord>,
    commit_lsn: Lsn,
    applied_lsn: Lsn,
    installed_boundary: Option<Position>,
    restored: Option<Position>,
}

impl<S: Storage> ReplicaExec<S> {
    /// Opens the replica's state: reads `state/halt` and
    ///
    /// - if halted: an executor in the halted state that never opens the WAL, connects or
    ///   applies anything (the directory stays exactly as it was; FM-10.3, FM-11.3);
    /// - else opens the WAL (recovery scan: a torn tail is cut, FM-X.7) and the snapshot
    ///   store (an install interrupted after its commit point is completed, FM-10.5).
    ///   Local corruption (FM-X.6), a snapshot that disagrees with the WAL, or a log ending
    ///   below the persisted commit watermark writes a `local-corruption` halt and gives a
    ///   halted executor; other I/O errors are returned;
    /// - restores the applier from the installed snapshot if it is behind it, then replays
    ///   the committed records above `applier.applied_lsn()` (FM-4.2).
    ///
    /// A halt decided or found here is also the first output ([`Output::Halted`]); a
    /// replicating executor's first deadline is `now_ms` (its first [`Output::Connect`]).
    pub fn open(
        storage: S,
        config: ExecConfig,
        mut applier: Box<dyn Applier>,
        now_ms: u64,
    ) -> Result<ReplicaExec<S>, ReplicaError> {
        let node_dir = NodeDir::open(storage.clone(), &config.data_dir)?;
        let epoch_history = node_dir.epochs()?;
        let highest_epoch = epoch_history
            .entries
            .iter()
            .map(|e| e.epoch)
            .max()
            .unwrap_or(0);
        let rec = recover(
            &storage,
            &node_dir,
            &config,
            &mut *applier,
            highest_epoch,
            now_ms,
        )?;
        let last = rec.local.as_ref().map_or(Position::ZERO, |l| l.wal.last());
        if let Some(l) = &rec.local {
            let available = rec.commit_lsn.min(l.wal.durable_lsn());
            if rec.applied_lsn > available {
                return Err(ReplicaError::ApplierAhead {
                    applied_lsn: rec.applied_lsn,
                    available_lsn: available,
                });
            }
        }
        let mut core = ReplicaCore::new(
            CoreConfig {
                node_id: config.node_id.clone(),
                cluster_id: config.cluster_id.clone(),
                primary_name: config.primary_name.clone(),
                max_record_bytes: config.wal.max_record_bytes,
                backoff_initial_ms: config.backoff_initial_ms,
                backoff_max_ms: config.backoff_max_ms,
                min_primary_epoch: config.min_primary_epoch,
                incarnation: config.incarnation,
            },
            DurableState {
                last,
                commit_lsn: rec.commit_lsn,
                applied_lsn: rec.applied_lsn,
                epoch_history,
                halt: rec.halt.clone(),
            },
        );
        core.set_snapshot_install(applier.snapshot_sink().is_some());
        core.set_installed_boundary(rec.installed_boundary);
        // The configurations of the log (spec/membership.md), read once here.
        let configs = match (&config.base_config, &rec.local) {
            (Some(base), Some(l)) => {
                // The configuration records an installed snapshot replaced: what its
                // configuration file records (spec/snapshot-format.md §1.5).
                let at_snapshot = match l.snapshots.newest()? {
                    Some(snap) => {
                        if snap.membership == walship_snapshot::BoundaryMembership::Unrecorded
                            && l.wal.base().lsn > 0
                        {
                            tracing::warn!(lsn = snap.boundary.lsn, "the newest snapshot records no configuration and the WAL starts after it: the static member list is assumed for the records it replaced");
                        }
                        snap.membership
                    }
                    None => walship_snapshot::BoundaryMembership::Static,
                };
                Some(
                    crate::membership::ConfigLog::at_snapshot(base.clone(), &at_snapshot)
                        .extended_by(l.wal.reader(0)?, rec.commit_lsn)
                        .map_err(|e| {
                            ReplicaError::Runtime(format!("configuration records: {e}"))
                        })?,
                )
            }
            (Some(base), None) => Some(crate::membership::ConfigLog::new(base.clone())),
            (None, _) => None,
        };
        let mut exec = ReplicaExec {
            storage,
            node_dir,
            start: rec.start,
            core,
            local: rec.local,
            applier,
            before_halt: None,
            outputs: VecDeque::new(),
            conn: None,
            connecting: false,
            connect_at: None,
            commit_at: None,
            last_commit_write_ms: None,
            unsynced_bytes: 0,
            commit_pending: None,
            persisted_commit: rec.commit_lsn,
            apply_pending: None,
            applied: rec.applied_lsn,
            last_receipt: None,
            halted: rec.halt.is_some(),
            stopped: None,
            sessions: 0,
            last_session_end: None,
            configs,
            base_config: config.base_config.clone(),
            config,
        };
        if let Some(b) = rec.restored {
            exec.outputs.push_back(Output::Restored(b));
        }
        if let Some(h) = rec.halt {
            exec.outputs.push_back(Output::Halted(h));
            return Ok(exec);
        }
        // Replaying committed records happens here, before open returns (FM-4.2); the
        // core's start also asks for the first connection (after 0 ms).
        exec.feed(Event::Start, now_ms);
        exec.settle(now_ms);
        if let Some(Output::Stopped(_)) = exec.outputs.back() {
            if let Some(Output::Stopped(e)) = exec.outputs.pop_back() {
                return Err(e);
            }
        }
        // The first connection is not the end of a session.
        exec.last_session_end = None;
        Ok(exec)
    }
}

/// Local recovery: start mode, WAL scan, snapshot store, applier restore.
fn recover<S: Storage>(
    storage: &S,
    node_dir: &NodeDir<S>,
    config: &ExecConfig,
    applier: &mut dyn Applier,
    highest_epoch: u64,
    now_ms: u64,
) -> Result<Recovered<S>, ReplicaError> {
    let mut commit_lsn = node_dir.commit_lsn()?;
    let mut applied_lsn = applier.applied_lsn();
    let halted = |start: Start, record: HaltRecord, commit_lsn: Lsn, applied_lsn: Lsn| {
        Ok(Recovered {
            local: None,
            start,
            halt: Some(record),
            commit_lsn,
            applied_lsn,
            installed_boundary: None,
            restored: None,
        })
    };
    let state_dir = node_dir.state_dir();
    if let StartMode::Halted(record) = start_mode(storage, state_dir)? {
        tracing::warn!(reason = %record.reason, lsn = record.lsn, epoch = record.epoch,
            "replica is halted: not opening the WAL, not connecting");
        return halted(Start::HaltFileFound, record, commit_lsn, applied_lsn);
    }
    // Discards every tmp-* directory: an install interrupted before its commit point
    // leaves the replica exactly in its previous state (FM-4.3, FM-X.8).
    let (snapshots, store_report) =
        SnapshotStore::open(storage.clone(), node_dir.snapshot_dir(), Limits::default())?;
    if !store_report.discarded_tmp.is_empty() {
        tracing::warn!(discarded = ?store_report.discarded_tmp, "discarded interrupted snapshot transfers");
    }
    // FM-X.6: a torn-tail cut that would leave the log below the watermark is refused
    // before anything is cut (the bytes stay for the operator) and halts. A snapshot at
    // or above the watermark makes any cut harmless: the log then ends at its boundary.
    let snapshot_lsn = snapshots.newest()?.map_or(0, |s| s.boundary.lsn);
    let open = walship_wal::OpenOptions::protecting_commit(commit_lsn, snapshot_lsn);
    let (mut wal, report) = match Wal::open_with(
        storage.clone(),
        node_dir.wal_dir(),
        config.wal,
        open,
    ) {
        Ok(x) => x,
        Err(WalError::CutRefused(r)) => {
            let record =
                lost_records_halt(r.log_end, commit_lsn, highest_epoch, &r.to_string(), now_ms);
            tracing::error!(refused = %r, "acknowledged records lost: the WAL's damaged tail would leave the log below the persisted commit watermark; halting, nothing was cut");
            write_halt(storage, state_dir, &record)?;
            return halted(Start::HaltedAtOpen, record, commit_lsn, applied_lsn);
        }
        Err(WalError::Corruption(report)) => {
            // FM-X.6: the replica refuses to start; the halt names where. Nothing is cut.
            let record = HaltRecord {
                reason: HaltReason::LocalCorruption,
                lsn: report.lsn.unwrap_or(0),
                epoch: highest_epoch,
                expected: report.expected.clone(),
                found: report.found.clone(),
                peer: "local".into(),
                at_unix_ms: now_ms,
                detail: report.to_string(),
            };
            tracing::error!(%report, "local WAL corruption at open: halting");
            write_halt(storage, state_dir, &record)?;
            return halted(Start::HaltedAtOpen, record, commit_lsn, applied_lsn);
        }
        Err(e) => return Err(e.into()),
    };
    if let OpenReport::TornTailCut {
        segment,
        offset,
        bytes_cut,
        last,
    } = &report
    {
        // A cut at or below the watermark is judged below, once an interrupted install is completed.
        tracing::warn!(segment = %segment.display(), offset, bytes_cut, lsn = last.lsn, commit_lsn,
            "cut a torn WAL tail at open (persisted commit watermark {commit_lsn})");
    }
    // FM-10.5: an install interrupted after its commit point is completed (the WAL reset
    // to the boundary) before anything reads the WAL; a snapshot and a WAL that disagree
    // are local corruption.
    let installed_boundary = match snapshots.recover(&mut wal) {
        Ok(RecoveryReport::NoSnapshot) => None,
        Ok(RecoveryReport::Consistent { boundary }) => Some(boundary),
        Ok(RecoveryReport::RolledForward {
            boundary,
            old_wal_last,
        }) => {
            tracing::warn!(
                lsn = boundary.lsn,
                epoch = boundary.epoch,
                old_last_lsn = old_wal_last.lsn,
                "completed a snapshot install interrupted after its commit point"
            );
            Some(boundary)
        }
        Err(e) if e.class() == FailureClass::LocalCorruption => {
            let record = HaltRecord {
                reason: HaltReason::LocalCorruption,
                lsn: wal.last().lsn,
                epoch: highest_epoch,
                expected: "the newest snapshot's boundary record in the WAL".into(),
                found: e.to_string(),
                peer: "local".into(),
                at_unix_ms: now_ms,
                detail: format!("snapshot store and WAL disagree at open: {e}"),
            };
            tracing::error!(error = %e, "snapshot store and WAL disagree at open: halting");
            write_halt(storage, state_dir, &record)?;
            return halted(Start::HaltedAtOpen, record, commit_lsn, applied_lsn);
        }
        Err(e) => return Err(e.into()),
    };
    // FM-X.6: `state/commit` is written only at or below the durable lsn, so a log (its
    // last record or the snapshot boundary it was reset to) ending below it lost synced
    // records: typically a damaged last record that the WAL scan cut as a torn tail.
    let log_end = wal.last().lsn;
    if log_end < commit_lsn {
        let context = format!("open report: {report:?}");
        let record = lost_records_halt(log_end, commit_lsn, highest_epoch, &context, now_ms);
        tracing::error!(
            log_end,
            commit_lsn,
            ?report,
            "acknowledged records lost: the log ends below the persisted commit watermark; halting"
        );
        write_halt(storage, state_dir, &record)?;
        return halted(Start::HaltedAtOpen, record, commit_lsn, applied_lsn);
    }
    let mut restored = None;
    if let Some(b) = installed_boundary {
        // Snapshot content is committed by construction: a crash between an install and
        // its `state/commit` write must not leave the watermark below it.
        commit_lsn = commit_lsn.max(b.lsn);
        if applied_lsn < b.lsn {
            // The embedder is behind the installed snapshot (in-memory state, or a crash
            // between install and restore): restore it before replaying the WAL.
            let Some(sink) = applier.snapshot_sink() else {
                return Err(ReplicaError::Config(format!(
                    "the applier's applied lsn {applied_lsn} is below the installed snapshot's boundary {b} and it has no snapshot sink"
                )));
            };
            let snap = snapshots.newest()?.ok_or_else(|| {
                ReplicaError::Runtime("the recovered snapshot disappeared".into())
            })?;
            snapshots.restore(&snap, sink)?;
            applied_lsn = b.lsn;
            restored = Some(b);
            tracing::info!(
                lsn = b.lsn,
                epoch = b.epoch,
                "restored the applier from the installed snapshot"
            );
        }
    }
    Ok(Recovered {
        local: Some(Local {
            wal,
            snapshots,
            install: None,
        }),
        start: Start::Replicating,
        halt: None,
        commit_lsn,
        applied_lsn,
        installed_boundary,
        restored,
    })
}
