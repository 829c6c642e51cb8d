//! FM-X.6 on the primary: a recovered log that ends below the persisted commit watermark
//! lost acknowledged records; the primary refuses to start instead of reusing their lsns.

mod support;

use std::path::{Path, PathBuf};

use support::Cluster;
use walship_node::primary::{Primary, PrimaryError, Quorum};
use walship_wal::state::NodeDir;
use walship_wal::FsStorage;

/// The WAL segment holding the newest records (the highest first lsn).
fn last_segment(data_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("list wal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Zeroes the last 4 bytes of the log's last record (its payload's end), as a torn write of
/// it would leave them: the WAL scan alone cuts such a record (spec/wal-format.md, "Bit flip
/// or torn write"); damage it can tell from a tear is corruption, tested elsewhere.
fn tear_last_record(data_dir: &Path) {
    let seg = last_segment(data_dir);
    let mut bytes = std::fs::read(&seg).expect("read segment");
    // Version 2 segments are preallocated: the records end at the last non-zero byte.
    let end = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    bytes[end - 4..end].fill(0);
    std::fs::write(&seg, bytes).expect("write segment");
}

/// A single-node primary (quorum 0) that acknowledged `n` records and shut down cleanly.
async fn acknowledged(cluster: &Cluster, n: u64) {
    let primary =
        Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly)).expect("open primary");
    for i in 1..=n {
        let payload = format!("record {i} {}", "x".repeat(i as usize * 7));
        assert_eq!(
            primary.append(payload.into_bytes()).await.expect("append"),
            i
        );
    }
    primary.shutdown().await;
}

/// Every file of `wal/` with its bytes, by name.
fn wal_files(data_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(data_dir.join("wal"))
        .expect("list wal")
        .map(|e| {
            let p = e.expect("entry").path();
            let bytes = std::fs::read(&p).expect("read wal file");
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

fn persisted_commit(cluster: &Cluster) -> u64 {
    NodeDir::open(FsStorage, &cluster.data_dir("p"))
        .expect("node dir")
        .commit_lsn()
        .expect("state/commit")
}

#[tokio::test]
async fn fm_x_6_primary_refuses_to_start_when_its_acknowledged_last_record_is_cut() {
    let cluster = Cluster::new(&["p"]);
    acknowledged(&cluster, 10).await;
    // A clean shutdown persists the final watermark.
    assert_eq!(persisted_commit(&cluster), 10);
    tear_last_record(&cluster.data_dir("p"));

    let err = Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly))
        .expect_err("a primary that lost acknowledged record 10 must not start");
    match &err {
        PrimaryError::AcknowledgedRecordsLost {
            log_end,
            commit_lsn,
            ..
        } => assert_eq!((*log_end, *commit_lsn), (9, 10), "{err}"),
        other => panic!("expected AcknowledgedRecordsLost, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("log ends at lsn 9, commit watermark 10"),
        "{text}"
    );
    // Refused again on the next attempt: the watermark still names the lost record.
    assert!(matches!(
        Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly)),
        Err(PrimaryError::AcknowledgedRecordsLost {
            log_end: 9,
            commit_lsn: 10,
            ..
        })
    ));
    assert_eq!(
        persisted_commit(&cluster),
        10,
        "the watermark is never lowered"
    );
}

#[tokio::test]
async fn fm_x_6_refused_primary_open_keeps_every_byte_of_the_damaged_wal() {
    let cluster = Cluster::new(&["p"]);
    acknowledged(&cluster, 10).await;
    let data_dir = cluster.data_dir("p");
    // Damage record 10 the way a torn write would look, so the scan alone would cut it:
    // only the commit watermark shows it was acknowledged.
    tear_last_record(&data_dir);
    let before = wal_files(&data_dir);

    for attempt in 0..2 {
        match Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly)) {
            Err(PrimaryError::AcknowledgedRecordsLost {
                log_end,
                commit_lsn,
                ..
            }) => assert_eq!((log_end, commit_lsn), (9, 10), "attempt {attempt}"),
            Err(other) => panic!("expected AcknowledgedRecordsLost, got {other}"),
            Ok(_) => panic!("a primary that lost acknowledged record 10 must not start"),
        }
        assert!(
            wal_files(&data_dir) == before,
            "attempt {attempt}: the refused open changed the WAL's files"
        );
    }
    assert_eq!(persisted_commit(&cluster), 10);
}

#[tokio::test]
async fn torn_tail_strictly_above_the_commit_watermark_is_cut_and_the_primary_starts() {
    let cluster = Cluster::new(&["p"]);
    acknowledged(&cluster, 10).await;
    // The watermark file lags (the persister had not caught up): record 10 is above it.
    NodeDir::open(FsStorage, &cluster.data_dir("p"))
        .expect("node dir")
        .set_commit_lsn(9)
        .expect("write state/commit");
    tear_last_record(&cluster.data_dir("p"));

    let primary = Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly))
        .expect("a torn tail above the watermark is cut, the primary starts");
    assert_eq!(primary.durable_lsn(), 9);
    assert_eq!(
        primary.append(b"next".as_slice()).await.expect("append"),
        10
    );
    primary.shutdown().await;
}

struct Applied(u64);

impl walship_snapshot::SnapshotSource for Applied {
    fn write_snapshot(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
        w.write_all(b"state")?;
        Ok(self.0)
    }
}

#[tokio::test]
async fn damaged_last_record_covered_by_a_snapshot_at_the_watermark_is_cut_and_the_log_ends_at_the_boundary(
) {
    let cluster = Cluster::new(&["p"]);
    let primary =
        Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly)).expect("open primary");
    for i in 1..=10u64 {
        assert_eq!(primary.append(vec![i as u8; 40]).await.expect("append"), i);
    }
    let snap = primary
        .create_snapshot(&mut Applied(10))
        .expect("snapshot at 10");
    primary.shutdown().await;
    assert_eq!(persisted_commit(&cluster), 10);
    // Record 10 is in the snapshot: cutting its damaged copy from the WAL loses nothing,
    // the log then ends at the snapshot's boundary (FM-10.5 recovery resets it there).
    tear_last_record(&cluster.data_dir("p"));
    let primary = Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly))
        .expect("the snapshot covers the watermark: the primary starts");
    assert_eq!(primary.durable_lsn(), 10);
    assert_eq!(
        primary.enforce_retention().expect("retention").first_lsn,
        snap.boundary.lsn + 1,
        "the log was reset to the boundary"
    );
    assert_eq!(primary.append(b"next".to_vec()).await.expect("append"), 11);
    primary.shutdown().await;
}
