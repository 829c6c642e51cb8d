//! FM-X.6 on the primary: a recovered log that ends below the persisted commit watermark
//! lost acknowledged records; the primary refuses to start instead of reusing their lsns.

mod support;

use std::path::{Path, PathBuf};

use support::Cluster;
use walship_primary::{Primary, PrimaryError, Quorum};
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

/// Zeroes the last written (non-zero) byte of the newest segment: damage to the synced last
/// record that the scan cannot tell from a torn write into the preallocated zero tail
/// (spec/wal-format.md, "What the scan cannot see"), so it is cut like one.
fn zero_last_written_byte(data_dir: &Path) {
    let seg = last_segment(data_dir);
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let last = bytes.iter().rposition(|&b| b != 0).expect("a written byte");
    bytes[last] = 0;
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
    zero_last_written_byte(&cluster.data_dir("p"));

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
async fn torn_tail_strictly_above_the_commit_watermark_is_cut_and_the_primary_starts() {
    let cluster = Cluster::new(&["p"]);
    acknowledged(&cluster, 10).await;
    // The watermark file lags (the persister had not caught up): record 10 is above it.
    NodeDir::open(FsStorage, &cluster.data_dir("p"))
        .expect("node dir")
        .set_commit_lsn(9)
        .expect("write state/commit");
    zero_last_written_byte(&cluster.data_dir("p"));

    let primary = Primary::open(cluster.primary_config(&["p"], Quorum::LocalOnly))
        .expect("a torn tail above the watermark is cut, the primary starts");
    assert_eq!(primary.durable_lsn(), 9);
    assert_eq!(
        primary.append(b"next".as_slice()).await.expect("append"),
        10
    );
    primary.shutdown().await;
}
