//! FM-X.4 at shutdown: the replica's final sync is part of its durability promise, so a
//! failed fsync there is fatal like any other (never logged and forgotten): `shutdown`
//! returns the error, so `walship node` exits non-zero with it.

mod common;

use common::*;
use walship_node::replica::{ReplicaError, ReplicaState};
use walship_wal::fault::FaultyStorage;
use walship_wal::{FsStorage, WalError};
use walship_wire::message::Message;
use walship_wire::CloseCode;

#[tokio::test]
async fn fm_x_4_replica_whose_final_sync_at_shutdown_fails_reports_it_from_shutdown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(tmp.path());
    let data = tmp.path().join("r1");
    let primary = FakePrimary::start(&certs.files("p1"));
    let storage = FaultyStorage::new(FsStorage);
    let replica = walship_node::replica::Replica::open_with_storage(
        storage.clone(),
        config(&data, &certs, primary.addr, "p1"),
        TestApplier::default(),
    )
    .expect("open replica");
    let faults = storage.faults().clone();
    let log = Log::build(5, 1, "p");
    let mut s = primary.accept().await;
    s.welcome(&log, 1, 0).await;
    wait_for(&replica, "streaming", |st| {
        st.state == ReplicaState::Streaming
    })
    .await;

    // The group sync of records 1..=5 starts and is held in flight.
    faults.hold_syncs_under(data.join("wal"));
    s.send(Message::Records(log.batch(1, 5, 0))).await;
    let held = faults.clone();
    tokio::task::spawn_blocking(move || held.wait_held_syncs(1))
        .await
        .expect("wait for the held sync");

    // Shutdown while it is in flight: the driver stops streaming (it closes the connection)
    // and its final flush waits for that sync.
    let shutdown = tokio::spawn(replica.shutdown());
    assert_eq!(
        s.closed_code().await,
        Some(CloseCode::ShuttingDown.code().into_inner())
    );
    // Only now does the sync end, failing.
    faults.fail_syncs_under(data.join("wal"));
    faults.release_held_syncs();

    let result = shutdown.await.expect("shutdown task");
    match result {
        // The executor's final sync is the one that failed (inline, on its thread).
        Err(ReplicaError::Wal(WalError::Io {
            op: "sync_data", ..
        })) => {}
        other => panic!("expected the failed final sync from shutdown, got {other:?}"),
    }
    assert_eq!(faults.failed_syncs(), 1, "the failed sync was not retried");
}
