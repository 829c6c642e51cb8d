//! Snapshot creation and WAL retention on the primary (`spec/snapshot-format.md` §2.1, §6):
//! on demand ([`crate::Primary::create_snapshot`], [`crate::Primary::enforce_retention`]) and
//! periodically (a maintenance task: a snapshot by policy when the embedder registered a
//! source, then retention).
//!
//! A failure of this node's own storage here (a failed fsync — which poisons the snapshot
//! store or the WAL — or any other I/O error of either) stops the node, like every failed
//! fsync: it is never retried next round. Only the embedder's failures (its snapshot
//! source, a payload above the limit, an applied lsn not yet committed) are left for the
//! next round.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{error, info};
use walship_snapshot::retention::{
    plan_retention, retained_bytes_from, snapshot_due, ReplicaNeed, SegmentSpan, SnapshotPolicy,
};
use walship_snapshot::{InstalledSnapshot, SnapshotError, SnapshotSource};
use walship_wal::{Lsn, Position};

use crate::driver::Shared;
use crate::{PrimaryError, PrimaryStop, RetentionReport};

/// A snapshot source the maintenance task may call from its blocking thread.
pub type BoxedSnapshotSource = Box<dyn SnapshotSource + Send>;

pub(crate) struct Maintenance {
    pub(crate) shared: Arc<Shared>,
    pub(crate) max_retained_wal_bytes: u64,
    pub(crate) chunk_size_bytes: u32,
    pub(crate) policy: SnapshotPolicy,
    /// Serialises creation and retention.
    pub(crate) lock: Mutex<()>,
    pub(crate) source: Mutex<Option<BoxedSnapshotSource>>,
}

/// Whether a maintenance error is a failure of this node's own storage (the node stops)
/// rather than the embedder's (the next round tries again).
fn is_fatal(e: &PrimaryError) -> bool {
    !matches!(
        e,
        PrimaryError::Snapshot(
            SnapshotError::Embedder { .. }
                | SnapshotError::PayloadTooLarge { .. }
                | SnapshotError::UnresolvedBoundary { .. }
        )
    )
}

impl Maintenance {
    fn commit_lsn(&self) -> Lsn {
        *self.shared.commit_rx.borrow()
    }

    /// Runs `f` unless the node stopped; a fatal error of `f` stops it.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, PrimaryError>) -> Result<T, PrimaryError> {
        if let Some(reason) = self.shared.stop_reason() {
            return Err(PrimaryError::Stopped(reason));
        }
        f().inspect_err(|e| {
            if is_fatal(e) {
                self.shared.stop_node(PrimaryStop::Maintenance {
                    error: e.to_string(),
                });
            }
        })
    }

    pub(crate) fn create_snapshot(
        &self,
        source: &mut dyn SnapshotSource,
    ) -> Result<InstalledSnapshot, PrimaryError> {
        self.guarded(|| self.create_snapshot_inner(source))
    }

    fn create_snapshot_inner(
        &self,
        source: &mut dyn SnapshotSource,
    ) -> Result<InstalledSnapshot, PrimaryError> {
        let snap = {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let commit_lsn = self.commit_lsn();
            let wal = self.shared.wal.clone();
            let mut resolve = |lsn: Lsn| -> Result<Position, SnapshotError> {
                let unresolved = |detail: String| SnapshotError::UnresolvedBoundary { lsn, detail };
                if lsn == 0 {
                    return Err(unresolved("a snapshot of the empty log".into()));
                }
                // Only committed, durable records may be the boundary: a replica treats
                // everything up to it as committed.
                if lsn > commit_lsn || lsn > wal.durable_lsn() {
                    return Err(unresolved(format!(
                        "not committed and durable (commit lsn {commit_lsn}, durable lsn {})",
                        wal.durable_lsn()
                    )));
                }
                wal.with(|w| w.position_at(lsn))?
                    .ok_or_else(|| unresolved("not retained in the WAL".into()))
            };
            let snap = self
                .shared
                .snapshots
                .create(self.chunk_size_bytes, source, &mut resolve)?;
            self.shared
                .lock_state()
                .log
                .set_newest_snapshot(Some(snap.boundary));
            info!(
                lsn = snap.boundary.lsn,
                epoch = snap.boundary.epoch,
                bytes = snap.total_len,
                "snapshot created"
            );
            snap
        };
        self.enforce_retention_inner()?;
        Ok(snap)
    }

    pub(crate) fn enforce_retention(&self) -> Result<RetentionReport, PrimaryError> {
        self.guarded(|| self.enforce_retention_inner())
    }

    fn enforce_retention_inner(&self) -> Result<RetentionReport, PrimaryError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let newest = self.shared.snapshots.newest()?.map(|s| s.boundary);
        // Halted replicas are not known to the primary: every member holds the log back
        // until the cap switches it to the snapshot (conservative).
        let replicas: Vec<ReplicaNeed> = self
            .shared
            .status()
            .replicas
            .into_iter()
            .map(|r| ReplicaNeed {
                id: r.node_id,
                durable_lsn: r.durable_lsn,
                halted: false,
            })
            .collect();
        let (plan, first_lsn) = self.shared.wal.with(|w| {
            let segments: Vec<SegmentSpan> = w.segments().iter().map(SegmentSpan::from).collect();
            let plan = plan_retention(&segments, newest, &replicas, self.max_retained_wal_bytes);
            // Never past the durable end (plan_retention never passes the snapshot's boundary).
            let before = plan.truncate_before.min(w.durable_lsn().saturating_add(1));
            let r = if before > w.first_lsn() {
                w.truncate_front(before)
            } else {
                Ok(())
            };
            (r.map(|()| plan), w.first_lsn())
        });
        let plan = plan?;
        if !plan.switch_to_snapshot.is_empty() {
            info!(replicas = ?plan.switch_to_snapshot, first_lsn, "lagging replicas switched to the snapshot");
        }
        Ok(RetentionReport {
            first_lsn,
            switched_to_snapshot: plan.switch_to_snapshot,
            retained_bytes: plan.retained_bytes,
            snapshot_needed: plan.snapshot_needed,
        })
    }

    /// One maintenance round: a snapshot if the policy says one is due and a source is
    /// registered, then retention.
    fn round(&self) -> Result<(), PrimaryError> {
        let mut source = self.source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(src) = source.as_mut() {
            let newest = self
                .shared
                .snapshots
                .newest()?
                .map_or(0, |s| s.boundary.lsn);
            let bytes_since = self.shared.wal.with(|w| {
                let segments: Vec<SegmentSpan> =
                    w.segments().iter().map(SegmentSpan::from).collect();
                retained_bytes_from(&segments, newest.saturating_add(1))
            });
            if snapshot_due(&self.policy, newest, self.commit_lsn(), bytes_since) {
                self.create_snapshot_inner(src.as_mut())?;
                return Ok(());
            }
        }
        drop(source);
        self.enforce_retention_inner().map(|_| ())
    }
}

/// The maintenance task: a round every `interval` on a blocking thread, until aborted or
/// until the node stops.
pub(crate) async fn run(m: Arc<Maintenance>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let m2 = Arc::clone(&m);
        match tokio::task::spawn_blocking(move || m2.guarded(|| m2.round())).await {
            Ok(Ok(())) => {}
            // `guarded` stopped the node (or it had stopped already): never retried.
            Ok(Err(e)) if is_fatal(&e) => {
                info!(error = %e, "maintenance ends: the node stopped");
                return;
            }
            // The embedder's failure: the next round tries again.
            Ok(Err(e)) => error!(error = %e, "snapshot maintenance failed; retried next round"),
            Err(e) => error!(error = %e, "maintenance task failed"),
        }
    }
}
