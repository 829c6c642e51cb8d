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

use super::driver::Shared;
use super::{PrimaryError, PrimaryStop, RetentionReport};

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
    match e {
        PrimaryError::Snapshot(e) => snapshot_error_stops_the_node(e),
        _ => true,
    }
}

/// Whether a failed snapshot creation stops the primary (FM-X.5): every failure of the
/// node's own storage does (a failed fsync poisons the store; a retry could falsely
/// succeed); a failure of the embedder's source, a payload over the limit or a boundary not
/// yet resolvable does not, and the next round tries again. The simulator asks the same
/// question, so the decision is written once.
pub fn snapshot_error_stops_the_node(e: &SnapshotError) -> bool {
    !matches!(
        e,
        SnapshotError::Embedder { .. }
            | SnapshotError::PayloadTooLarge { .. }
            | SnapshotError::UnresolvedBoundary { .. }
    )
}

impl Maintenance {
    fn commit_lsn(&self) -> Lsn {
        self.shared
            .commit_lsn
            .load(std::sync::atomic::Ordering::Acquire)
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
            // The configuration in force at the boundary goes into the snapshot's
            // directory with it (spec/snapshot-format.md §1.5).
            let shared = self.shared.clone();
            let mut membership = |boundary: Position| {
                shared.lock_exec().membership_at(boundary.lsn).ok_or_else(|| {
                    SnapshotError::UnresolvedBoundary {
                        lsn: boundary.lsn,
                        detail: "the configuration in force there is older than the configurations this primary keeps".into(),
                    }
                })
            };
            let snap = self.shared.snapshots.create_with_membership(
                self.chunk_size_bytes,
                source,
                &mut resolve,
                &mut membership,
            )?;
            self.shared
                .lock_exec()
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
        let (plan, first_before, first_lsn) = self.shared.wal.with(|w| {
            let first_before = w.first_lsn();
            let segments: Vec<SegmentSpan> = w.segments().iter().map(SegmentSpan::from).collect();
            let plan = plan_retention(&segments, newest, &replicas, self.max_retained_wal_bytes);
            // Never past the durable end (plan_retention never passes the snapshot's boundary).
            let before = plan.truncate_before.min(w.durable_lsn().saturating_add(1));
            let r = if before > w.first_lsn() {
                w.truncate_front(before)
            } else {
                Ok(())
            };
            (r.map(|()| plan), first_before, w.first_lsn())
        });
        let plan = plan?;
        if first_lsn > first_before {
            info!(
                first_before,
                first_lsn, "truncated WAL segments behind the newest snapshot"
            );
        }
        let (switched, kept) = needs_snapshot(&replicas, first_lsn);
        if !switched.is_empty() {
            info!(replicas = ?switched, first_lsn, "lagging replicas switched to the snapshot: the records they need are no longer retained");
        }
        let over_cap_kept: Vec<&String> = plan
            .switch_to_snapshot
            .iter()
            .filter(|id| kept.contains(id))
            .collect();
        if !over_cap_kept.is_empty() {
            // WAL segments go whole, never the active one: nothing they need was removed yet.
            info!(replicas = ?over_cap_kept, first_lsn, "lagging replicas over the WAL retention cap still stream from the log: nothing they need was truncated");
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

/// Splits `replicas` into those whose next record is below `first_lsn` (they can only
/// catch up through the snapshot) and those the retained log still serves.
fn needs_snapshot(replicas: &[ReplicaNeed], first_lsn: Lsn) -> (Vec<String>, Vec<String>) {
    let (switched, kept): (Vec<&ReplicaNeed>, Vec<&ReplicaNeed>) = replicas
        .iter()
        .partition(|r| r.durable_lsn.saturating_add(1) < first_lsn);
    let ids = |v: Vec<&ReplicaNeed>| v.into_iter().map(|r| r.id.clone()).collect();
    (ids(switched), ids(kept))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn need(id: &str, durable_lsn: Lsn) -> ReplicaNeed {
        ReplicaNeed {
            id: id.into(),
            durable_lsn,
            halted: false,
        }
    }

    #[test]
    fn a_replica_is_switched_to_the_snapshot_only_when_its_next_record_was_truncated() {
        let replicas = [need("r1", 0), need("r2", 9), need("r3", 10)];
        // Nothing truncated (first retained lsn 1): every replica streams from the log.
        assert_eq!(
            needs_snapshot(&replicas, 1),
            (vec![], vec!["r1".into(), "r2".into(), "r3".into()])
        );
        // Records 1..=9 truncated: r1 needs lsn 1 (gone); r2 needs lsn 10 (retained).
        assert_eq!(
            needs_snapshot(&replicas, 10),
            (vec!["r1".into()], vec!["r2".into(), "r3".into()])
        );
        assert_eq!(
            needs_snapshot(&replicas, 11),
            (vec!["r1".into(), "r2".into()], vec!["r3".into()])
        );
    }
}
