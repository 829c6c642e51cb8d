//! The primary over real QUIC on loopback, against minimal fake replicas whose receipts the
//! test controls.

mod support;

use support::*;
use walship_node::primary::{Primary, PrimaryError, Quorum};
use walship_wal::state::NodeDir;
use walship_wal::{FsStorage, Position};
use walship_wire::CloseCode;
use walship_wire::{Hello, Message, RefuseReason, PROTOCOL_VERSION};

const MEMBERS: &[&str] = &["p", "r1", "r2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_only_commits_on_local_fsync_and_persists_watermark_and_epoch() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::LocalOnly));
    for i in 0..100u32 {
        let lsn = primary
            .append(i.to_le_bytes().to_vec())
            .await
            .expect("append");
        assert_eq!(lsn, u64::from(i) + 1);
    }
    assert_eq!(primary.commit_lsn(), 100);
    let status = primary.status();
    assert_eq!((status.epoch, status.durable_lsn), (1, 100));
    assert_eq!(status.replicas.len(), 2);
    assert!(status
        .replicas
        .iter()
        .all(|r| !r.connected && r.lag_records == 100));
    primary.shutdown().await;

    let dir = NodeDir::open(FsStorage, &cluster.data_dir("p")).expect("node dir");
    assert_eq!(dir.commit_lsn().expect("commit"), 100);
    let epochs = dir.epochs().expect("epochs");
    assert_eq!((epochs.last_epoch(), epochs.entries[0].start_lsn), (1, 1));

    // Reopen: the data directory lock was released, state is kept.
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::LocalOnly));
    assert_eq!((primary.commit_lsn(), primary.durable_lsn()), (100, 100));
    assert_eq!(
        primary.append(b"more".as_slice()).await.expect("append"),
        101
    );
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_a_locked_data_dir_is_refused() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::LocalOnly));
    let err = Primary::open(cluster.primary_config(MEMBERS, Quorum::LocalOnly)).unwrap_err();
    assert!(
        matches!(
            err,
            PrimaryError::State(walship_wal::state::StateError::Locked { .. })
        ),
        "{err}"
    );
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_blocks_commit_without_receipts_and_returns_commit_timeout() {
    let cluster = Cluster::new(MEMBERS);
    let mut config = cluster.primary_config(MEMBERS, Quorum::Majority);
    config.commit_timeout_ms = 300;
    let primary = open_primary(config);
    let addr = primary.local_addr().expect("addr");
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    r1.hello("r1", Position::ZERO).await;

    let err = primary.append(b"tentative".as_slice()).await.unwrap_err();
    assert!(
        matches!(err, PrimaryError::CommitTimeout { lsn: 1 }),
        "{err}"
    );
    assert_eq!((primary.durable_lsn(), primary.commit_lsn()), (1, 0));

    // The record was shipped; once r1's receipt arrives it commits (it stayed tentative).
    let b = r1.next_batch().await;
    assert_eq!((b.first_lsn, b.count, b.commit_lsn), (1, 1, 0));
    r1.receipt(1).await;
    eventually("commit reaches 1 after the receipt", || {
        primary.commit_lsn() == 1
    })
    .await;
    assert!(matches!(
        r1.recv().await,
        Ok(Some(Message::Commit { commit_lsn: 1 }))
    ));
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_receipting_replica_commits_majority_while_the_other_is_silent() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let addr = primary.local_addr().expect("addr");
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    r1.hello("r1", Position::ZERO).await;
    let mut r2 = FakeReplica::connect(&cluster, "r2", addr).await;
    r2.hello("r2", Position::ZERO).await;

    // r1 acknowledges everything it receives; r2 never does.
    let acker = tokio::spawn(async move {
        let mut last = Position::ZERO;
        let mut shipped = Vec::new();
        while last.lsn < 200 {
            let b = r1.next_batch().await;
            last = verify_batch(last, &b).expect("valid records");
            shipped.extend_from_slice(&b.bytes);
            r1.receipt(last.lsn).await;
        }
        (r1, shipped)
    });
    let mut appends = Vec::new();
    for i in 0..200u32 {
        appends.push(primary.append(format!("record {i}").into_bytes()));
    }
    let mut lsns = Vec::new();
    for a in appends {
        lsns.push(a.await.expect("committed"));
    }
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=200).collect::<Vec<_>>());
    assert_eq!(primary.commit_lsn(), 200);
    let (_r1, shipped) = acker.await.expect("acker");
    let status = primary.status();
    let r1s = &status.replicas[0];
    assert_eq!(
        (r1s.node_id.as_str(), r1s.durable_lsn, r1s.lag_records),
        ("r1", 200, 0)
    );
    let r2s = &status.replicas[1];
    assert!(r2s.connected);
    assert_eq!((r2s.durable_lsn, r2s.lag_records), (0, 200));
    primary.shutdown().await;

    // The shipped bytes are the stored bytes: the segment files contain them verbatim.
    let stored: Vec<u8> = wal_files(&cluster.data_dir("p"))
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    assert!(
        stored
            .windows(shipped.len().min(4096))
            .any(|w| w == &shipped[..shipped.len().min(4096)]),
        "shipped bytes appear in the WAL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_catches_up_from_disk_across_segments_and_resumes_after_reconnect() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::LocalOnly));
    let addr = primary.local_addr().expect("addr");
    // 3000 records of ~300 bytes span several 256 KiB segments.
    let payload = vec![7u8; 300];
    for _ in 0..3000 {
        primary.append(payload.clone()).await.expect("append");
    }
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    let w = r1.hello("r1", Position::ZERO).await;
    assert_eq!(w.at_replica_last, Some(Position::ZERO));
    assert_eq!(w.primary_last.lsn, 3000);
    let mut last = Position::ZERO;
    let mut mid = Position::ZERO;
    while last.lsn < 3000 {
        let b = r1.next_batch().await;
        last = verify_batch(last, &b).expect("valid records");
        if mid.lsn == 0 && last.lsn >= 1234 {
            mid = last;
        }
        r1.receipt(last.lsn).await;
    }
    drop(r1);

    // Reconnect from the middle: the primary proves the prefix and resumes at mid + 1.
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    let w = r1.hello("r1", mid).await;
    assert_eq!(w.at_replica_last, Some(mid));
    let b = r1.next_batch().await;
    assert_eq!(b.first_lsn, mid.lsn + 1);
    verify_batch(mid, &b).expect("valid records");

    // A diverged position gets the primary's own identity and no records: probes are answered.
    let mut r2 = FakeReplica::connect(&cluster, "r2", addr).await;
    let fake = Position {
        crc: mid.crc ^ 1,
        ..mid
    };
    let w = r2.hello("r2", fake).await;
    assert_eq!(w.at_replica_last, Some(mid));
    r2.send(&Message::Probe { lsn: 10 }).await;
    match r2.recv().await {
        Ok(Some(Message::ProbeReply {
            lsn: 10,
            position: Some(p),
        })) => assert_eq!(p.lsn, 10),
        other => panic!("expected ProbeReply, got {other:?}"),
    }
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_of_another_cluster_is_refused_with_reason_and_closed() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let addr = primary.local_addr().expect("addr");
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    r1.send(&Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "other".into(),
        node_id: "r1".into(),
        incarnation: 0,
        last: Position::ZERO,
        commit_lsn: 0,
        epoch_history: vec![],
        highest_epoch_seen: 0,
    }))
    .await;
    match r1.recv().await {
        Ok(Some(Message::Refuse(r))) => assert!(
            matches!(r.reason, RefuseReason::ClusterMismatch { ref theirs, .. } if theirs == "other")
        ),
        other => panic!("expected Refuse, got {other:?}"),
    }
    assert_eq!(r1.closed_code().await, Some(CloseCode::Refused));
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_of_another_version_that_does_not_decode_is_refused_with_unsupported_version() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let addr = primary.local_addr().expect("addr");
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    // Tag 0 (Hello) and version 1 (before failover), then nothing this version's Hello
    // could decode.
    let body = [0u8, 1];
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    r1.send.write_all(&frame).await.expect("write");
    match r1.recv().await {
        Ok(Some(Message::Refuse(r))) => assert_eq!(
            r.reason,
            RefuseReason::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: 1
            }
        ),
        other => panic!("expected Refuse, got {other:?}"),
    }
    assert_eq!(r1.closed_code().await, Some(CloseCode::Refused));
    primary.shutdown().await;
}

/// Runs a well-behaved acking replica until `until`; yields its last position and itself (so
/// the connection, and with it the last receipt, is not dropped early).
fn spawn_acker(mut r: FakeReplica, until: u64) -> tokio::task::JoinHandle<(Position, FakeReplica)> {
    tokio::spawn(async move {
        let mut last = Position::ZERO;
        while last.lsn < until {
            let b = r.next_batch().await;
            last = verify_batch(last, &b).expect("valid records");
            r.receipt(last.lsn).await;
        }
        (last, r)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_only_that_connection() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let addr = primary.local_addr().expect("addr");
    let mut r2 = FakeReplica::connect(&cluster, "r2", addr).await;
    r2.hello("r2", Position::ZERO).await;
    let r2 = spawn_acker(r2, 20);

    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    r1.hello("r1", Position::ZERO).await;
    // A length prefix above the limit: the primary must not allocate, just close.
    r1.send
        .write_all(&(u32::MAX).to_le_bytes())
        .await
        .expect("write");
    assert_eq!(r1.closed_code().await, Some(CloseCode::ProtocolViolation));

    for i in 0..20u32 {
        primary
            .append(i.to_le_bytes().to_vec())
            .await
            .expect("commit via r2");
    }
    assert_eq!(r2.await.expect("r2").0.lsn, 20);
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_and_unexpected_message_close_only_that_connection() {
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let addr = primary.local_addr().expect("addr");
    let mut r2 = FakeReplica::connect(&cluster, "r2", addr).await;
    r2.hello("r2", Position::ZERO).await;
    let r2 = spawn_acker(r2, 10);

    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    r1.hello("r1", Position::ZERO).await;
    let mut garbage = 16u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xEE; 16]);
    r1.send.write_all(&garbage).await.expect("write");
    assert_eq!(r1.closed_code().await, Some(CloseCode::ProtocolViolation));

    // A well-formed message the primary never accepts (Records from a replica).
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    r1.hello("r1", Position::ZERO).await;
    r1.send(&Message::Commit { commit_lsn: 5 }).await;
    assert_eq!(r1.closed_code().await, Some(CloseCode::ProtocolViolation));

    for i in 0..10u32 {
        primary
            .append(i.to_le_bytes().to_vec())
            .await
            .expect("commit via r2");
    }
    assert_eq!(r2.await.expect("r2").0.lsn, 10);
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_of_another_ca_or_unlisted_name_is_refused_and_others_keep_streaming() {
    // "intruder" has a certificate from the cluster CA but is not a member.
    let cluster = Cluster::new(&["p", "r1", "r2", "intruder"]);
    let other = tempfile::tempdir().expect("tempdir");
    walship_wire::generate(other.path(), &["r1"]).expect("other CA");
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let addr = primary.local_addr().expect("addr");
    let mut r2 = FakeReplica::connect(&cluster, "r2", addr).await;
    r2.hello("r2", Position::ZERO).await;
    let r2 = spawn_acker(r2, 10);

    // A client certificate from another CA (even with a member's name) never gets a session.
    let foreign = walship_wire::TlsFiles {
        ca: cluster.tls("r1").ca, // it trusts our CA, so only the primary's check can refuse it
        ..walship_wire::TlsFiles::for_node(other.path(), "r1")
    };
    assert!(refused(&foreign, addr).await, "foreign CA accepted");
    assert!(
        refused(&cluster.tls("intruder"), addr).await,
        "unlisted name accepted"
    );

    for i in 0..10u32 {
        primary
            .append(i.to_le_bytes().to_vec())
            .await
            .expect("commit via r2");
    }
    assert_eq!(r2.await.expect("r2").0.lsn, 10);
    primary.shutdown().await;
}

/// True if the primary refuses the client: the handshake fails, or the primary closes the
/// connection before a Welcome arrives. False if a Welcome arrives. A primary that neither
/// welcomes nor closes fails the test (the receive and the close wait are bounded).
async fn refused(tls: &walship_wire::TlsFiles, addr: std::net::SocketAddr) -> bool {
    match FakeReplica::connect_with(tls, addr).await {
        Ok(r) => hello_refused(r).await,
        Err(_) => true,
    }
}

/// [`refused`] after the client's side of the handshake completed.
async fn hello_refused(mut r: FakeReplica) -> bool {
    // In TLS 1.3 the client's handshake completes before the server has verified the
    // client's certificate: the primary's refusal (a CONNECTION_CLOSE) can arrive before
    // the Hello is written. A failed write is that refusal, not a failure of the test.
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: CLUSTER.into(),
        node_id: "r1".into(),
        incarnation: 0,
        last: Position::ZERO,
        commit_lsn: 0,
        epoch_history: vec![],
        highest_epoch_seen: 0,
    });
    let sent = r.try_send(&hello).await.is_ok();
    if sent && matches!(r.recv().await, Ok(Some(Message::Welcome(_)))) {
        return false;
    }
    // Refused means closed by the primary (panics if the connection stays open).
    let _ = r.closed_code().await;
    true
}

/// The ordering that made the test above flaky (the Hello's write failed), forced: the primary's refusal of a foreign-CA certificate reaches the client
/// before it writes its Hello. That is a refusal, not a failed test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_refusal_arriving_before_the_hello_is_written_counts_as_refused() {
    let cluster = Cluster::new(MEMBERS);
    let other = tempfile::tempdir().expect("tempdir");
    walship_wire::generate(other.path(), &["r1"]).expect("other CA");
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::Majority));
    let addr = primary.local_addr().expect("addr");
    let foreign = walship_wire::TlsFiles {
        ca: cluster.tls("r1").ca,
        ..walship_wire::TlsFiles::for_node(other.path(), "r1")
    };
    // The client's side of a TLS 1.3 handshake completes before the server has checked the
    // client's certificate, but the refusal often reaches the client before its connect
    // returns (then the handshake itself reports it): try until one attempt connects.
    let start = std::time::Instant::now();
    let r = loop {
        match FakeReplica::connect_with(&foreign, addr).await {
            Ok(r) => break r,
            Err(e) => assert!(
                start.elapsed() < DEADLINE,
                "no attempt completed the client's side of the handshake: {e}"
            ),
        }
    };
    // Wait for the primary's refusal before writing anything.
    let closed = tokio::time::timeout(DEADLINE, r.conn.closed())
        .await
        .expect("the primary refuses within the deadline");
    assert!(
        matches!(closed, quinn::ConnectionError::ConnectionClosed(_)),
        "refused by the TLS layer: {closed:?}"
    );
    assert!(hello_refused(r).await);
    primary.shutdown().await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_corruption_alters_only_the_shipped_copy_for_one_replica() {
    use walship_node::primary::ShipFault;
    let cluster = Cluster::new(MEMBERS);
    let primary = open_primary(cluster.primary_config(MEMBERS, Quorum::LocalOnly));
    let addr = primary.local_addr().expect("addr");
    primary.append(b"first".as_slice()).await.expect("append");
    let mut r1 = FakeReplica::connect(&cluster, "r1", addr).await;
    let mut r2 = FakeReplica::connect(&cluster, "r2", addr).await;
    r1.hello("r1", Position::ZERO).await;
    r2.hello("r2", Position::ZERO).await;
    let p1 = verify_batch(Position::ZERO, &r1.next_batch().await).expect("valid");
    verify_batch(Position::ZERO, &r2.next_batch().await).expect("valid");

    primary
        .inject_fault("r1", ShipFault::CorruptNextRecord)
        .expect("inject");
    primary.append(b"second".as_slice()).await.expect("append");
    let bad = r1.next_batch().await;
    assert!(matches!(
        verify_batch(p1, &bad),
        Err(walship_wal::RecordError::Checksum { .. })
    ));
    let good = r2.next_batch().await;
    verify_batch(p1, &good).expect("r2 gets the intact record");
    assert_eq!(bad.bytes.len(), good.bytes.len());
    assert_ne!(bad.bytes, good.bytes);
    primary.shutdown().await;
}
