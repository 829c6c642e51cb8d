//! FM-X.6 on a replica: `state/commit` never names a record the replica does not hold
//! durably, so a log that ends below it at open lost synced records and halts
//! `local-corruption`; a lagging replica's watermark is persisted only up to its durable lsn.

mod common;

use std::path::Path;

use common::*;
use walship_node::replica::HaltReason;
use walship_wal::state::NodeDir;
use walship_wal::{FsStorage, Lsn};
use walship_wire::message::Message;

fn persisted_commit(data_dir: &Path) -> Lsn {
    NodeDir::open(FsStorage, data_dir)
        .expect("node dir")
        .commit_lsn()
        .expect("state/commit")
}

fn newest_segment(data_dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("segment")
}

/// Zeroes the last 4 bytes of the log's last record, as a torn write of it would leave them:
/// the WAL scan alone would cut it (version 2 segments: the records end at the last non-zero
/// byte of the preallocated file).
fn tear_last_record(data_dir: &Path) {
    let seg = newest_segment(data_dir);
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    bytes[end - 4..end].fill(0);
    std::fs::write(&seg, bytes).expect("write segment");
}

/// Every file of `wal/` with its bytes, by name.
fn wal_files(data_dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            let bytes = std::fs::read(&p).expect("read wal file");
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn fm_x_6_replica_whose_log_ends_below_its_commit_watermark_halts_local_corruption() {
    let f = fixture();
    let log = Log::build(10, 1, "p");
    let replica = f.open();
    let mut s = f.primary.accept().await;
    s.welcome(&log, 1, 0).await;
    s.send(Message::Records(log.batch(1, 10, 10))).await;
    s.wait_receipt(10).await;
    wait_for(&replica, "applied 10", |st| st.applied_lsn == 10).await;
    replica.shutdown().await.expect("shutdown");
    assert_eq!(persisted_commit(&f.data), 10);
    // Damage to the synced, receipted and committed record 10 that the scan alone would cut.
    tear_last_record(&f.data);
    let before = wal_files(&f.data);

    let replica = f.open();
    let st = replica.status();
    let record = st.halt().expect("halted at open").clone();
    assert_eq!(record.reason, HaltReason::LocalCorruption);
    assert_eq!(record.lsn, 10, "the first lost lsn");
    assert_eq!(record.peer, "local");
    assert_eq!(
        record.expected,
        "the log holds every record up to the persisted commit watermark 10"
    );
    assert_eq!(record.found, "the log ends at lsn 9");
    assert_eq!(read_halt_file(&f.data), Some(record));
    assert_eq!(st.sessions, 0);
    replica.shutdown().await.expect("shutdown");
    assert!(
        wal_files(&f.data) == before,
        "the halted open changed the WAL's files: nothing may be cut"
    );
    assert_eq!(
        persisted_commit(&f.data),
        10,
        "the watermark is never lowered"
    );
}

#[tokio::test]
async fn lagging_replica_persists_the_commit_watermark_only_up_to_its_durable_lsn() {
    let f = fixture();
    let log = Log::build(20, 1, "p");
    let replica = f.open();
    let mut s = f.primary.accept().await;
    // The primary committed 20 (with other replicas); this one holds only 1..=5 so far.
    s.welcome(&log, 1, 20).await;
    s.send(Message::Records(log.batch(1, 5, 20))).await;
    s.wait_receipt(5).await;
    wait_for(&replica, "applied 5", |st| st.applied_lsn == 5).await;
    replica.shutdown().await.expect("shutdown");
    assert_eq!(
        persisted_commit(&f.data),
        5,
        "state/commit must not name records this replica does not hold"
    );

    // Restarts cleanly (a log ending at the watermark is no loss) and catches up.
    let replica = f.open();
    assert!(replica.halt().is_none(), "{:?}", replica.halt());
    let mut s = f.primary.accept().await;
    assert_eq!(s.hello.commit_lsn, 5);
    s.welcome(&log, 1, 20).await;
    s.send(Message::Records(log.batch(6, 20, 20))).await;
    s.wait_receipt(20).await;
    wait_for(&replica, "applied 20", |st| st.applied_lsn == 20).await;
    replica.shutdown().await.expect("shutdown");
    assert_eq!(persisted_commit(&f.data), 20);
    assert_eq!(f.applier.lsns(), (1..=20).collect::<Vec<_>>());
}
