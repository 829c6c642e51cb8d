//! FM-X.6 on a replica: `state/commit` never names a record the replica does not hold
//! durably, so a log that ends below it at open lost synced records and halts
//! `local-corruption`; a lagging replica's watermark is persisted only up to its durable lsn.

mod common;

use std::path::Path;

use common::*;
use walship_replica::{HaltReason, Replica};
use walship_wal::state::NodeDir;
use walship_wal::{FsStorage, Lsn};
use walship_wire::message::Message;

struct Fixture {
    _tmp: tempfile::TempDir,
    certs: Certs,
    data: std::path::PathBuf,
    primary: FakePrimary,
    applier: TestApplier,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(tmp.path());
    let data = tmp.path().join("r1");
    let primary = FakePrimary::start(&certs.files("p1"));
    Fixture {
        _tmp: tmp,
        certs,
        data,
        primary,
        applier: TestApplier::default(),
    }
}

impl Fixture {
    fn open(&self) -> Replica {
        Replica::open(
            config(&self.data, &self.certs, self.primary.addr, "p1"),
            self.applier.clone(),
        )
        .expect("open replica")
    }
}

fn persisted_commit(data_dir: &Path) -> Lsn {
    NodeDir::open(FsStorage, data_dir)
        .expect("node dir")
        .commit_lsn()
        .expect("state/commit")
}

/// Zeroes the last written (non-zero) byte of the newest segment: damage to the synced last
/// record that the scan cannot tell from a torn write into the preallocated zero tail.
fn zero_last_written_byte(data_dir: &Path) {
    let mut segs: Vec<_> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    let seg = segs.pop().expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let last = bytes.iter().rposition(|&b| b != 0).expect("a written byte");
    bytes[last] = 0;
    std::fs::write(&seg, bytes).expect("write segment");
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
    // Bit rot in the synced, receipted and committed record 10.
    zero_last_written_byte(&f.data);

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
