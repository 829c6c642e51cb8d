//! FM-X.5 on the real `Primary` (real file system, syncs made to fail through the
//! `fault-injection` storage wrapper): a failed fsync of the WAL, of `state/commit` or of
//! the snapshot store stops the node — every append afterwards fails with
//! `PrimaryError::Stopped`, `wait_stopped` resolves with the reason, and nothing is
//! retried (in particular the WAL is never truncated behind a snapshot whose publish did
//! not end with a successful directory fsync).
#![cfg(feature = "fault-injection")]

mod support;

use std::io;

use support::*;
use walship_node::primary::{Primary, PrimaryError, PrimaryStop, Quorum};
use walship_snapshot::{SnapshotError, SnapshotSource};
use walship_wal::{FsStorage, Lsn, Wal, WalError, WalOptions};

/// A single-node primary (quorum 0: committed on the local fsync) with small segments.
fn open_single(cluster: &Cluster) -> Primary {
    let mut c = cluster.primary_config(&["p"], Quorum::LocalOnly);
    c.segment_size_bytes = 4096;
    Primary::open(c).expect("open primary")
}

struct Source(Lsn);

impl SnapshotSource for Source {
    fn write_snapshot(&mut self, w: &mut dyn io::Write) -> io::Result<Lsn> {
        w.write_all(&[7u8; 3000])?;
        Ok(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_x_5_primary_refuses_appends_and_stops_after_a_failed_wal_sync() {
    let cluster = Cluster::new(&["p"]);
    let primary = open_single(&cluster);
    assert_eq!(primary.append(b"a".to_vec()).await.expect("append"), 1);
    let faults = primary.storage_faults();
    faults.fail_syncs_under(cluster.data_dir("p").join("wal"));

    match primary.append(b"b".to_vec()).await {
        Err(PrimaryError::Wal(WalError::Io {
            op: "sync_data", ..
        })) => {}
        other => panic!("expected the failed sync_data, got {other:?}"),
    }
    let reason = primary.stopped().expect("the node stopped");
    assert!(matches!(reason, PrimaryStop::Wal { .. }), "{reason:?}");
    assert_eq!(primary.wait_stopped().await, reason);
    assert_eq!(primary.status().stopped, Some(reason.clone()));
    assert_eq!(faults.failed_syncs(), 1);

    // The disk works again; the node stays stopped (nothing is retried).
    faults.clear();
    match primary.append(b"c".to_vec()).await {
        Err(PrimaryError::Stopped(r)) => assert_eq!(r, reason),
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert_eq!(primary.durable_lsn(), 1);
    assert_eq!(primary.commit_lsn(), 1);
    assert_eq!(faults.failed_syncs(), 1, "no sync was tried again");
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_x_5_failed_fsync_of_the_commit_watermark_stops_the_primary() {
    let cluster = Cluster::new(&["p"]);
    let primary = open_single(&cluster);
    let faults = primary.storage_faults();
    faults.fail_syncs_under(cluster.data_dir("p").join("state"));
    // Committed on the WAL's fsync; the persister then fails to write state/commit.
    assert_eq!(primary.append(b"a".to_vec()).await.expect("append"), 1);
    let reason = primary.wait_stopped().await;
    assert!(
        matches!(reason, PrimaryStop::CommitWatermark { commit_lsn: 1, .. }),
        "{reason:?}"
    );
    match primary.append(b"b".to_vec()).await {
        Err(PrimaryError::Stopped(r)) => assert_eq!(r, reason),
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert_eq!(
        faults.failed_syncs(),
        1,
        "state/commit was not written again"
    );
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_x_5_failed_dir_sync_at_snapshot_publish_stops_the_primary_and_never_truncates_the_wal()
{
    let cluster = Cluster::new(&["p"]);
    let primary = std::sync::Arc::new(open_single(&cluster));
    for i in 0..200u32 {
        primary
            .append(format!("record {i:0>90}").into_bytes())
            .await
            .expect("append");
    }
    let commit = primary.commit_lsn();
    assert_eq!(commit, 200);
    let snapshots = cluster.data_dir("p").join("snapshots");
    let faults = primary.storage_faults();
    // The rename of the new snapshot succeeds; the fsync of snapshots/ that commits it fails.
    faults.fail_syncs_of(&snapshots);
    let p = primary.clone();
    let created = tokio::task::spawn_blocking(move || p.create_snapshot(&mut Source(commit)))
        .await
        .expect("join");
    match created {
        Err(PrimaryError::Snapshot(SnapshotError::Io {
            op: "sync_dir",
            path,
            ..
        })) => assert_eq!(path, snapshots),
        other => panic!("expected the failed sync_dir, got {other:?}"),
    }
    let reason = primary.stopped().expect("the node stopped");
    assert!(
        matches!(reason, PrimaryStop::Maintenance { .. }),
        "{reason:?}"
    );
    assert_eq!(primary.wait_stopped().await, reason);
    // Retention must not trust the renamed snapshot the page cache shows.
    faults.clear();
    let p = primary.clone();
    match tokio::task::spawn_blocking(move || p.enforce_retention())
        .await
        .expect("join")
    {
        Err(PrimaryError::Stopped(r)) => assert_eq!(r, reason),
        other => panic!("expected Stopped, got {other:?}"),
    }
    match primary.append(b"after".to_vec()).await {
        Err(PrimaryError::Stopped(r)) => assert_eq!(r, reason),
        other => panic!("expected Stopped, got {other:?}"),
    }
    match std::sync::Arc::try_unwrap(primary) {
        Ok(p) => {
            p.shutdown().await;
        }
        Err(_) => panic!("the primary is still shared"),
    }
    // Every record is still in the WAL: nothing was truncated.
    let (wal, _) = Wal::open(
        FsStorage,
        &cluster.data_dir("p").join("wal"),
        WalOptions {
            segment_size_bytes: 4096,
            ..WalOptions::default()
        },
    )
    .expect("reopen the WAL");
    assert_eq!(wal.first_lsn(), 1);
    assert_eq!(wal.last().lsn, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_x_12_primary_whose_disk_is_full_refuses_the_append_and_stops() {
    let cluster = Cluster::new(&["p"]);
    let primary = open_single(&cluster);
    assert_eq!(primary.append(b"a".to_vec()).await.expect("append"), 1);
    let faults = primary.storage_faults();
    faults.fill_disk_under(cluster.data_dir("p").join("wal"));
    // Segments are preallocated (format version 2): an append inside the active segment needs
    // no space, so this record is too large for what is left of the 4 KiB segment and must
    // create the next one, which the full disk refuses.
    match primary.append(vec![b'b'; 4000]).await {
        Err(PrimaryError::Wal(WalError::Io { source, .. })) => {
            assert_eq!(source.kind(), io::ErrorKind::StorageFull)
        }
        other => panic!("expected ENOSPC creating the next segment, got {other:?}"),
    }
    let reason = primary.stopped().expect("the node stopped");
    assert!(matches!(reason, PrimaryStop::Wal { .. }), "{reason:?}");
    assert_eq!(primary.wait_stopped().await, reason);
    // Space is back; the node stays stopped and acknowledges nothing.
    faults.clear();
    match primary.append(b"c".to_vec()).await {
        Err(PrimaryError::Stopped(r)) => assert_eq!(r, reason),
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert_eq!(primary.durable_lsn(), 1);
    assert_eq!(primary.commit_lsn(), 1);
    assert_eq!(faults.failed_writes(), 1);
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fm_x_5_commit_watermark_fsync_failing_during_shutdown_is_returned_by_shutdown() {
    let cluster = Cluster::new(&["p"]);
    let primary = open_single(&cluster);
    let faults = primary.storage_faults();
    let state = cluster.data_dir("p").join("state");
    // The persister's write of the watermark is held in its fsync...
    faults.hold_syncs_under(&state);
    for i in 1..=3u64 {
        assert_eq!(primary.append(vec![i as u8]).await.expect("append"), i);
    }
    let held = faults.clone();
    tokio::task::spawn_blocking(move || held.wait_held_syncs(1))
        .await
        .expect("wait for the held sync");
    assert_eq!(primary.stopped(), None);
    // ...while the node shuts down; the shutdown waits for the persister, whose fsync fails.
    let shutdown = tokio::spawn(primary.shutdown());
    faults.fail_syncs_under(&state);
    faults.release_held_syncs();
    match shutdown.await.expect("shutdown task") {
        Some(PrimaryStop::CommitWatermark { .. }) => {}
        other => panic!("expected the failed state/commit fsync from shutdown, got {other:?}"),
    }
    assert_eq!(faults.failed_syncs(), 1, "nothing was retried");
}
