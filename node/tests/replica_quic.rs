//! The replica over real QUIC on loopback against a FAKE primary that sends
//! crafted frames: every halt reason, divergence by probe search, halts that
//! survive restarts, sessions that end without a halt, and TLS refusals.

mod common;

use std::time::Duration;

use common::*;
use walship_node::replica::{HaltReason, Replica, ReplicaError, ReplicaState};
use walship_wal::Lsn;
use walship_wire::message::Message;
use walship_wire::CloseCode;

/// Streams lsns 1..=3 (committed) to a fresh replica, then sends `bad` and
/// checks the replica halts with `reason` at `lsn`, keeps exactly 1..=3, and
/// refuses reads.
async fn injected_frame_halts(
    bad: impl FnOnce(&Log) -> walship_wire::RecordBatch,
    reason: HaltReason,
    lsn: Lsn,
) -> walship_node::replica::HaltRecord {
    let f = fixture();
    let log = Log::build(10, 1, "p");
    let replica = f.open();
    let mut s = f.primary.accept().await;
    assert_eq!(s.hello.last, walship_wal::Position::ZERO);
    s.welcome(&log, 1, 0).await;
    s.send(Message::Records(log.batch(1, 3, 3))).await;
    s.wait_receipt(3).await;
    wait_for(&replica, "applied 3", |st| st.applied_lsn == 3).await;
    s.send(Message::Records(bad(&log))).await;
    assert_eq!(s.closed_code().await, Some(CloseCode::Halted as u64));
    let st = wait_for(&replica, "halt", |st| st.halt().is_some()).await;
    let record = read_halt_file(&f.data).expect("halt file written");
    assert_eq!(record.reason, reason, "{record}");
    assert_eq!(record.lsn, lsn, "{record}");
    assert_eq!(record.peer, "p1");
    assert_eq!(st.halt(), Some(&record));
    assert_eq!(
        st.durable_lsn,
        Some(3),
        "nothing of the bad frame is appended"
    );
    assert!(matches!(
        replica.check_readable(),
        Err(ReplicaError::Halted { record: r }) if *r == record
    ));
    assert_eq!(replica.with_reads(|| 1).ok(), None);
    assert_eq!(f.applier.lsns(), vec![1, 2, 3]);
    replica.shutdown().await.expect("shutdown");
    assert_eq!(
        wal_last(&f.data),
        log.positions[2],
        "the WAL keeps exactly 1..=3"
    );
    record
}

#[tokio::test]
async fn fm_6_2_gap_frame_halts_replica_with_missing_lsn() {
    let r = injected_frame_halts(|log| log.batch(5, 6, 6), HaltReason::Gap, 4).await;
    assert_eq!((r.expected.as_str(), r.found.as_str()), ("lsn 4", "lsn 5"));
}

#[tokio::test]
async fn fm_5_2_duplicate_frame_halts_replica() {
    let r = injected_frame_halts(|log| log.batch(3, 4, 4), HaltReason::Duplicate, 3).await;
    assert_eq!((r.expected.as_str(), r.found.as_str()), ("lsn 4", "lsn 3"));
}

#[tokio::test]
async fn fm_5_2_reordered_frame_halts_replica() {
    let r = injected_frame_halts(|log| log.batch_of(&[5, 4, 6], 6), HaltReason::Reorder, 4).await;
    assert_eq!((r.expected.as_str(), r.found.as_str()), ("lsn 4", "lsn 5"));
}

#[tokio::test]
async fn fm_6_1_corrupt_record_frame_halts_replica_checksum() {
    let r = injected_frame_halts(
        |log| {
            let mut b = log.batch(4, 5, 5);
            // Flip one payload byte of lsn 4.
            b.bytes[walship_wal::RECORD_HEADER_LEN + 1] ^= 0x01;
            b
        },
        HaltReason::Checksum,
        4,
    )
    .await;
    assert!(r.expected.starts_with("crc "), "{r}");
}

#[tokio::test]
async fn fm_x_3_lower_epoch_record_halts_epoch_regression() {
    let f = fixture();
    let mut log = Log::build(3, 2, "p");
    log.push(1, b"from an older epoch");
    let replica = f.open();
    let mut s = f.primary.accept().await;
    s.welcome(&log, 2, 0).await;
    s.send(Message::Records(log.batch(1, 3, 3))).await;
    s.wait_receipt(3).await;
    s.send(Message::Records(log.batch(4, 4, 4))).await;
    assert_eq!(s.closed_code().await, Some(CloseCode::Halted as u64));
    let record = read_halt_file(&f.data).expect("halt file");
    assert_eq!(
        (record.reason, record.lsn, record.epoch),
        (HaltReason::EpochRegression, 4, 1)
    );
    assert_eq!(record.expected, "epoch >= 2");
    wait_for(&replica, "halt", |st| st.halt().is_some()).await;
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_x_2_primary_with_lower_epoch_than_seen_is_refused_without_halt_and_nothing_is_stored() {
    let f = fixture();
    let log = Log::build(4, 3, "p");
    let replica = f.open();
    // Session 1: a primary at epoch 3; the replica persists epoch 3 before appending.
    let mut s = f.primary.accept().await;
    s.welcome(&log, 3, 0).await;
    s.send(Message::Records(log.batch(1, 2, 2))).await;
    s.wait_receipt(2).await;
    s.conn.close(0u32.into(), b"primary restarts");
    // Session 2: an old primary at epoch 2 answers, and ships records anyway.
    let mut s2 = f.primary.accept().await;
    assert_eq!(s2.hello.highest_epoch_seen, 3);
    assert_eq!(s2.hello.last, log.positions[1]);
    s2.welcome(&log, 2, 4).await;
    s2.send(Message::Records(log.batch(3, 4, 4))).await;
    // The replica refuses it, telling it the epoch, and closes with Refused.
    let mut refusal = None;
    while let Some(m) = s2.recv().await {
        if let Message::Refuse(r) = m {
            refusal = Some(r.reason);
            break;
        }
    }
    assert_eq!(
        refusal,
        Some(walship_wire::RefuseReason::StalePrimary {
            primary_epoch: 2,
            current_epoch: 3
        })
    );
    assert_eq!(s2.closed_code().await, Some(CloseCode::Refused as u64));
    let st = wait_for(&replica, "stale-primary session end", |st| {
        st.last_session_end
            .as_deref()
            .is_some_and(|r| r.starts_with("refused stale primary"))
    })
    .await;
    assert!(st.halt().is_none(), "{st:?}");
    assert!(read_halt_file(&f.data).is_none(), "no halt file");
    assert_eq!(st.durable_lsn, Some(2));
    // It retries with its usual backoff; its log is unchanged: nothing of epoch 2 stored.
    let mut s3 = f.primary.accept().await;
    assert_eq!(s3.hello.last, log.positions[1]);
    assert_eq!(s3.hello.highest_epoch_seen, 3);
    // The primary of epoch 3 is back: streaming resumes.
    s3.welcome(&log, 3, 4).await;
    s3.send(Message::Records(log.batch(3, 4, 4))).await;
    s3.wait_receipt(4).await;
    wait_for(&replica, "applied 4", |st| st.applied_lsn == 4).await;
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn refuse_not_primary_shows_its_hint_in_the_status_and_the_replica_reconnects() {
    let f = fixture();
    let replica = f.open();
    let mut s = f.primary.accept().await;
    s.send(Message::Refuse(walship_wire::Refuse {
        reason: walship_wire::RefuseReason::NotPrimary {
            epoch: 4,
            primary_hint: Some("p2".into()),
        },
    }))
    .await;
    assert_eq!(s.closed_code().await, Some(CloseCode::Normal as u64));
    let st = wait_for(&replica, "not-primary session end", |st| {
        st.last_session_end
            .as_deref()
            .is_some_and(|r| r.starts_with("not the primary"))
    })
    .await;
    assert_eq!(
        st.last_session_end.as_deref(),
        Some("not the primary (epoch 4); primary hint: p2")
    );
    assert!(st.halt().is_none());
    let _again = f.primary.accept().await;
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_8_1_divergent_wal_halts_divergence_at_first_differing_lsn_on_handshake() {
    let f = fixture();
    let primary_log = Log::build(12, 1, "p");
    let mut replica_log = primary_log.prefix(6);
    for i in 7..=10 {
        replica_log.push(1, format!("replica-{i}").as_bytes());
    }
    seed_wal(&f.data, &replica_log);
    let replica = f.open();
    let mut s = f.primary.accept().await;
    assert_eq!(s.hello.last, replica_log.last());
    s.welcome(&primary_log, 1, 0).await;
    let probes = s.answer_probes(&primary_log).await;
    assert!(
        !probes.is_empty() && probes.len() <= 4,
        "binary search: {probes:?}"
    );
    let record = read_halt_file(&f.data).expect("halt file");
    assert_eq!(
        (record.reason, record.lsn),
        (HaltReason::Divergence, 7),
        "{record}"
    );
    assert_eq!(
        record.expected,
        format!("primary record {}", primary_log.positions[6])
    );
    assert_eq!(
        record.found,
        format!("replica record {}", replica_log.positions[6])
    );
    wait_for(&replica, "halt", |st| st.halt().is_some()).await;
    replica.shutdown().await.expect("shutdown");
    assert_eq!(
        wal_last(&f.data),
        replica_log.last(),
        "nothing is truncated"
    );
}

#[tokio::test]
async fn fm_11_3_halted_replica_stays_halted_after_restart_and_never_connects() {
    let f = fixture();
    let log = Log::build(6, 1, "p");
    let replica = f.open();
    let mut s = f.primary.accept().await;
    s.welcome(&log, 1, 0).await;
    s.send(Message::Records(log.batch(1, 2, 2))).await;
    s.wait_receipt(2).await;
    s.send(Message::Records(log.batch(4, 4, 4))).await;
    s.closed_code().await;
    let halted = wait_for(&replica, "halt", |st| st.halt().is_some()).await;
    replica.shutdown().await.expect("shutdown");

    let replica = f.open();
    let st = replica.status();
    assert_eq!(st.halt(), halted.halt(), "the identical halt record");
    assert_eq!(st.sessions, 0);
    assert!(!st.connected);
    assert!(matches!(
        replica.check_readable(),
        Err(ReplicaError::Halted { .. })
    ));
    // Nothing arrives at the primary (a wrong pass here is impossible; only a slow
    // connect could hide a bug, and the status check above already covers it).
    let attempt =
        tokio::time::timeout(Duration::from_millis(300), f.primary.endpoint.accept()).await;
    assert!(attempt.is_err(), "a halted replica must not connect");
    assert_eq!(f.applier.lsns(), vec![1, 2]);
    replica.shutdown().await.expect("shutdown");
    assert_eq!(read_halt_file(&f.data).as_ref(), halted.halt());
}

#[tokio::test]
async fn fm_3_3_stream_cut_mid_frame_does_not_halt_and_resumes_from_durable_lsn() {
    let f = fixture();
    let log = Log::build(10, 1, "p");
    let replica = f.open();
    let mut s = f.primary.accept().await;
    s.welcome(&log, 1, 0).await;
    s.send(Message::Records(log.batch(1, 5, 5))).await;
    s.wait_receipt(5).await;
    // Half a frame of lsns 6..=10, then the stream ends.
    let mut frame = Vec::new();
    walship_wire::encode_frame(&Message::Records(log.batch(6, 10, 10)), &mut frame)
        .expect("encode");
    s.send
        .write_all(&frame[..frame.len() / 2])
        .await
        .expect("write");
    s.send.finish().expect("finish");
    assert_eq!(s.closed_code().await, Some(CloseCode::Normal as u64));

    let mut s2 = f.primary.accept().await;
    assert_eq!(
        s2.hello.last, log.positions[4],
        "resumes from durable lsn + 1"
    );
    s2.welcome(&log, 1, 5).await;
    s2.send(Message::Records(log.batch(6, 10, 10))).await;
    s2.wait_receipt(10).await;
    let st = wait_for(&replica, "applied 10", |st| st.applied_lsn == 10).await;
    assert_eq!(st.state, ReplicaState::Streaming);
    assert_eq!(st.sessions, 2);
    assert!(
        read_halt_file(&f.data).is_none(),
        "a session end is not a halt"
    );
    assert_eq!(f.applier.lsns(), (1..=10).collect::<Vec<_>>());
    let applied = f.applier.0.lock().expect("lock").records.clone();
    for (lsn, payload) in applied {
        assert_eq!(payload, log.payload(lsn));
    }
    replica.shutdown().await.expect("shutdown");
    assert_eq!(wal_last(&f.data), log.last());
}

#[tokio::test]
async fn fm_4_2_restart_replays_committed_records_above_applied_lsn_then_streams() {
    let f = fixture();
    let log = Log::build(12, 1, "p");
    let replica = f.open();
    let mut s = f.primary.accept().await;
    s.welcome(&log, 1, 0).await;
    s.send(Message::Records(log.batch(1, 10, 8))).await;
    s.wait_receipt(10).await;
    wait_for(&replica, "applied 8", |st| st.applied_lsn == 8).await;
    replica.shutdown().await.expect("shutdown");
    // The embedder lost its applies above 4; 9 and 10 are durable but tentative.
    f.applier.truncate(4);
    let replica = f.open();
    assert_eq!(
        f.applier.lsns(),
        (1..=8).collect::<Vec<_>>(),
        "replayed before open returns"
    );
    let mut s = f.primary.accept().await;
    assert_eq!(s.hello.last, log.positions[9]);
    assert_eq!(s.hello.commit_lsn, 8);
    s.welcome(&log, 1, 10).await;
    s.send(Message::Records(log.batch(11, 12, 12))).await;
    s.wait_receipt(12).await;
    wait_for(&replica, "applied 12", |st| st.applied_lsn == 12).await;
    assert_eq!(f.applier.lsns(), (1..=12).collect::<Vec<_>>());
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_x_9_primary_with_certificate_from_another_ca_is_refused_without_halt() {
    let f = fixture();
    let impostor = FakePrimary::start(&walship_wire::TlsFiles::for_node(&f.certs.other_dir, "p1"));
    let replica = Replica::open(
        config(&f.data, &f.certs, impostor.addr, "p1"),
        f.applier.clone(),
    )
    .expect("open");
    // The replica tries; the TLS handshake fails on both sides.
    for _ in 0..2 {
        let incoming = tokio::time::timeout(WAIT, impostor.endpoint.accept())
            .await
            .expect("a connection attempt")
            .expect("endpoint open");
        assert!(incoming.await.is_err(), "handshake must fail");
    }
    let st = replica.status();
    assert_eq!(st.sessions, 0);
    assert!(st.halt().is_none());
    assert!(read_halt_file(&f.data).is_none());
    replica.check_readable().expect("not halted");
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_x_9_primary_with_another_members_name_is_refused_without_halt() {
    let f = fixture();
    // p2 is a member certificate of the same CA, but not the configured primary.
    let wrong = FakePrimary::start(&f.certs.files("p2"));
    let replica = Replica::open(
        config(&f.data, &f.certs, wrong.addr, "p1"),
        f.applier.clone(),
    )
    .expect("open");
    let incoming = tokio::time::timeout(WAIT, wrong.endpoint.accept())
        .await
        .expect("a connection attempt")
        .expect("endpoint open");
    assert!(incoming.await.is_err(), "handshake must fail");
    assert!(read_halt_file(&f.data).is_none());
    assert_eq!(replica.status().sessions, 0);
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_x_6_local_corruption_at_open_halts_local_corruption_and_keeps_the_wal() {
    let f = fixture();
    let log = Log::build(5, 1, "p");
    seed_wal(&f.data, &log);
    // Flip a payload byte of lsn 2 inside the segment: bad record followed by valid ones.
    let wal_dir = f.data.join("wal");
    let seg = std::fs::read_dir(&wal_dir)
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let rec2 = bytes
        .windows(log.records[1].len())
        .position(|w| w == log.records[1].as_slice())
        .expect("record 2 in the segment");
    bytes[rec2 + walship_wal::RECORD_HEADER_LEN] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write segment");

    let replica = f.open();
    let st = replica.status();
    let record = st.halt().expect("halted at open").clone();
    assert_eq!(record.reason, HaltReason::LocalCorruption);
    assert_eq!(record.peer, "local");
    assert_eq!(read_halt_file(&f.data), Some(record));
    assert_eq!(st.sessions, 0);
    replica.shutdown().await.expect("shutdown");
    assert_eq!(std::fs::read(&seg).expect("read"), bytes, "nothing is cut");
}

#[tokio::test]
async fn second_open_of_a_running_replica_directory_is_refused() {
    let f = fixture();
    let replica = f.open();
    let err = Replica::open(
        config(&f.data, &f.certs, f.primary.addr, "p1"),
        TestApplier::default(),
    )
    .expect_err("locked");
    assert!(matches!(err, ReplicaError::State(_)), "{err}");
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_5_1_partition_ends_session_by_idle_timeout_without_halt_and_resumes_after_heal() {
    let f = fixture();
    let relay = Relay::start(f.primary.addr, 1).await;
    let log = Log::build(8, 1, "p");
    let mut c = config(&f.data, &f.certs, relay.addr, "p1");
    c.transport.keep_alive_ms = 100;
    c.transport.idle_timeout_ms = 500;
    let replica = Replica::open(c, f.applier.clone()).expect("open");
    let mut s = f.primary.accept().await;
    s.welcome(&log, 1, 0).await;
    s.send(Message::Records(log.batch(1, 4, 4))).await;
    s.wait_receipt(4).await;
    wait_for(&replica, "applied 4", |st| st.applied_lsn == 4).await;

    relay.partition(true);
    let st = wait_for(&replica, "session ended", |st| !st.connected).await;
    assert!(st.halt().is_none());
    assert_eq!(st.applied_lsn, 4, "reads of applied data stay possible");
    replica.check_readable().expect("a partition is not a halt");
    relay.partition(false);

    let mut s2 = f.primary.accept().await;
    assert_eq!(s2.hello.last, log.positions[3]);
    s2.welcome(&log, 1, 4).await;
    s2.send(Message::Records(log.batch(5, 8, 8))).await;
    s2.wait_receipt(8).await;
    wait_for(&replica, "applied 8", |st| st.applied_lsn == 8).await;
    assert_eq!(f.applier.lsns(), (1..=8).collect::<Vec<_>>());
    assert!(read_halt_file(&f.data).is_none());
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_x_1_datagram_loss_duplication_reordering_and_corruption_never_halt() {
    let f = fixture();
    let relay = Relay::start(f.primary.addr, 42).await;
    let log = Log::build(300, 1, "noisy");
    let replica = Replica::open(
        config(&f.data, &f.certs, relay.addr, "p1"),
        f.applier.clone(),
    )
    .expect("open");
    relay.set_noise(true);
    // Sessions may end under noise (handshake loss); each new session resumes at hello.last + 1.
    let mut done: Lsn = 0;
    while done < 300 {
        let mut s = f.primary.accept().await;
        let from = s.hello.last.lsn + 1;
        assert!(from <= done + 1, "never resumes past what it made durable");
        s.welcome(&log, 1, done).await;
        let mut lsn = from;
        while lsn <= 300 {
            let to = (lsn + 24).min(300);
            s.send(Message::Records(log.batch(lsn, to, to))).await;
            lsn = to + 1;
        }
        done = s.wait_receipt(300).await;
    }
    let st = wait_for(&replica, "applied 300", |st| st.applied_lsn == 300).await;
    let faults = relay.fault_counts();
    assert!(
        faults.iter().all(|&n| n > 0),
        "every kind of noise happened: {faults:?}"
    );
    assert!(st.halt().is_none());
    assert!(read_halt_file(&f.data).is_none());
    assert_eq!(f.applier.lsns(), (1..=300).collect::<Vec<_>>());
    replica.shutdown().await.expect("shutdown");
    assert_eq!(wal_last(&f.data), log.last());
}

/// Streams 1..=3 to a replica on a simulated disk, arms `fault`, sends 4..=5,
/// and checks the node stops without a halt and without receipting 4..=5; then
/// crashes the disk, restarts, and checks it resumes from lsn 3 to 5.
/// `segment_size_bytes`: the replica's WAL segment size, if not the default.
async fn local_io_failure_stops_node_then_restart_resumes(
    seed: u64,
    segment_size_bytes: Option<u64>,
    fault: impl FnOnce(&walship_wal::sim::SimStorage),
) {
    let config = |data: &std::path::Path, certs, addr, name| {
        let mut c = config(data, certs, addr, name);
        if let Some(n) = segment_size_bytes {
            c.wal.segment_size_bytes = n;
        }
        c
    };
    use walship_wal::sim::SimStorage;
    let f = fixture();
    let sim = SimStorage::new(seed);
    let data = std::path::Path::new("/r1");
    let log = Log::build(5, 1, "payload-that-is-not-tiny");
    let replica = Replica::open_with_storage(
        sim.clone(),
        config(data, &f.certs, f.primary.addr, "p1"),
        f.applier.clone(),
    )
    .expect("open");
    let mut s = f.primary.accept().await;
    s.welcome(&log, 1, 0).await;
    s.send(Message::Records(log.batch(1, 3, 3))).await;
    s.wait_receipt(3).await;
    wait_for(&replica, "applied 3", |st| st.applied_lsn == 3).await;
    fault(&sim);
    s.send(Message::Records(log.batch(4, 5, 5))).await;
    while let Some(msg) = s.recv().await {
        assert!(
            !matches!(msg, Message::Receipt { durable_lsn } if durable_lsn > 3),
            "no receipt for records that are not durable: {msg:?}"
        );
    }
    let why = replica.wait_stopped().await;
    let st = replica.status();
    assert_eq!(st.state, ReplicaState::Stopped(why.clone()));
    assert!(why.contains("wal"), "the reason names the WAL error: {why}");
    assert!(st.halt().is_none(), "a local I/O failure is not a halt");
    assert!(matches!(
        replica.shutdown().await,
        Err(ReplicaError::Wal(_))
    ));
    assert!(walship_node::replica::read_halt(&sim, &data.join("state"))
        .expect("read")
        .is_none());
    assert_eq!(f.applier.lsns(), vec![1, 2, 3]);

    sim.clear_faults();
    sim.crash();
    let replica = Replica::open_with_storage(
        sim.clone(),
        config(data, &f.certs, f.primary.addr, "p1"),
        f.applier.clone(),
    )
    .expect("reopen after the crash");
    let mut s = f.primary.accept().await;
    assert_eq!(
        s.hello.last, log.positions[2],
        "resumes from its real durable lsn"
    );
    s.welcome(&log, 1, 3).await;
    s.send(Message::Records(log.batch(4, 5, 5))).await;
    s.wait_receipt(5).await;
    wait_for(&replica, "applied 5", |st| st.applied_lsn == 5).await;
    assert_eq!(f.applier.lsns(), (1..=5).collect::<Vec<_>>());
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fm_x_4_failed_fsync_stops_replica_without_receipt_or_halt_and_restart_resumes() {
    use walship_wal::Storage;
    local_io_failure_stops_node_then_restart_resumes(11, None, |sim| {
        let wal_dir = std::path::Path::new("/r1/wal");
        let seg = sim
            .list(wal_dir)
            .expect("wal dir")
            .into_iter()
            .find(|n| n.ends_with(".wal"))
            .expect("a segment");
        sim.fail_next_sync(&wal_dir.join(seg)).expect("arm");
    })
    .await;
}

#[tokio::test]
async fn fm_x_12_disk_full_stops_replica_without_receipt_or_halt_and_restart_resumes() {
    // WAL segments are preallocated: appends inside a segment never need
    // more space, so the disk fills up where the next segment is created.
    // Segments of exactly three of these records (64-byte header + 3 x 58)
    // make record 4 start a new segment.
    local_io_failure_stops_node_then_restart_resumes(12, Some(64 + 3 * 58), |sim| {
        sim.set_capacity_bytes(sim.used_bytes() + 10);
    })
    .await;
}

#[tokio::test]
async fn malformed_oversized_and_refused_sessions_end_without_halt_and_the_replica_reconnects() {
    let f = fixture();
    let log = Log::build(4, 1, "p");
    let replica = f.open();
    // 1: a body that is not a message.
    let mut s = f.primary.accept().await;
    s.send
        .write_all(&[5, 0, 0, 0, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])
        .await
        .expect("write");
    assert_eq!(
        s.closed_code().await,
        Some(CloseCode::ProtocolViolation as u64)
    );
    // 2: a length prefix above the frame limit (rejected before allocating).
    let mut s = f.primary.accept().await;
    s.send
        .write_all(&u32::MAX.to_le_bytes())
        .await
        .expect("write");
    assert_eq!(
        s.closed_code().await,
        Some(CloseCode::ProtocolViolation as u64)
    );
    // 3: a refusal.
    let mut s = f.primary.accept().await;
    s.send(Message::Refuse(walship_wire::Refuse {
        reason: walship_wire::RefuseReason::ClusterMismatch {
            ours: "c".into(),
            theirs: "other".into(),
        },
    }))
    .await;
    assert_eq!(s.closed_code().await, Some(CloseCode::Normal as u64));
    // 4: records before Welcome (out of protocol order).
    let mut s = f.primary.accept().await;
    s.send(Message::Records(log.batch(1, 2, 2))).await;
    assert_eq!(
        s.closed_code().await,
        Some(CloseCode::ProtocolViolation as u64)
    );
    // Then an honest session streams normally.
    let mut s = f.primary.accept().await;
    assert_eq!(
        s.hello.last,
        walship_wal::Position::ZERO,
        "nothing was appended"
    );
    s.welcome(&log, 1, 4).await;
    s.send(Message::Records(log.batch(1, 4, 4))).await;
    s.wait_receipt(4).await;
    let st = wait_for(&replica, "applied 4", |st| st.applied_lsn == 4).await;
    assert_eq!(st.sessions, 5);
    assert!(
        st.last_session_end
            .as_deref()
            .is_some_and(|r| r.starts_with("protocol violation")),
        "{st:?}"
    );
    assert!(read_halt_file(&f.data).is_none());
    replica.shutdown().await.expect("shutdown");
}

/// An applier that can restore snapshots (its state is only its applied lsn).
#[derive(Clone, Default)]
struct SnapshotApplier(std::sync::Arc<std::sync::Mutex<Lsn>>);

impl walship_node::replica::Applier for SnapshotApplier {
    fn applied_lsn(&self) -> Lsn {
        *self.0.lock().expect("lock")
    }
    fn apply(
        &mut self,
        lsn: Lsn,
        _payload: &[u8],
    ) -> Result<(), walship_node::replica::ApplyError> {
        *self.0.lock().expect("lock") = lsn;
        Ok(())
    }
    fn snapshot_sink(&mut self) -> Option<&mut dyn walship_snapshot::SnapshotSink> {
        Some(self)
    }
}

impl walship_snapshot::SnapshotSink for SnapshotApplier {
    fn restore_snapshot(
        &mut self,
        boundary: walship_wal::Position,
        r: &mut dyn std::io::Read,
    ) -> std::io::Result<()> {
        std::io::copy(r, &mut std::io::sink())?;
        *self.0.lock().expect("lock") = boundary.lsn;
        Ok(())
    }
}

struct StateImage(Lsn);

impl walship_snapshot::SnapshotSource for StateImage {
    fn write_snapshot(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<Lsn> {
        w.write_all(&[5u8; 5000])?;
        Ok(self.0)
    }
}

/// A session ends mid-transfer (FM-X.8: the partial snapshot is discarded), and the fsync
/// of `snapshots/` that makes the discard durable fails: the snapshot store is poisoned and
/// the node stops — it does not log and reconnect as if nothing happened.
#[tokio::test]
async fn fm_x_4_failed_fsync_while_discarding_a_partial_snapshot_stops_the_replica() {
    use walship_snapshot::{Limits, SnapshotStore};
    use walship_wal::sim::SimStorage;
    use walship_wal::Storage;
    use walship_wire::message::EpochEntry;
    use walship_wire::{Welcome, PROTOCOL_VERSION};
    let f = fixture();
    let sim = SimStorage::new(21);
    let data = std::path::Path::new("/r1");
    let snapshots = data.join("snapshots");
    let log = Log::build(20, 1, "payload");
    let replica = Replica::open_with_storage(
        sim.clone(),
        config(data, &f.certs, f.primary.addr, "p1"),
        SnapshotApplier::default(),
    )
    .expect("open");
    // The primary's snapshot at lsn 10, in five chunks.
    let ps = SimStorage::new(22);
    let (store, _) = SnapshotStore::open(
        ps.clone(),
        std::path::Path::new("/p/snapshots"),
        Limits::default(),
    )
    .expect("primary store");
    let boundary = log.at(10).expect("position");
    let snap = store
        .create(1000, &mut StateImage(10), &mut |_| Ok(boundary))
        .expect("create");
    let reader = store.reader(&snap).expect("reader");
    // The only fsync of snapshots/ from here on is the one that discards the partial snapshot.
    sim.fail_next_sync(&snapshots).expect("arm");

    let mut s = f.primary.accept().await;
    s.send(Message::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        primary_id: "p1".into(),
        epoch: 1,
        at_replica_last: None,
        primary_last: log.last(),
        commit_lsn: 20,
        epoch_history: vec![EpochEntry {
            epoch: 1,
            start_lsn: 1,
        }],
    }))
    .await;
    s.send(Message::SnapshotOffer(reader.offer())).await;
    s.send(Message::SnapshotChunk(
        reader.chunk_message(0).expect("chunk"),
    ))
    .await;
    let start = std::time::Instant::now();
    while !sim
        .list(&snapshots)
        .expect("list")
        .iter()
        .any(|n| n.starts_with("tmp-"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "install never began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.conn.close(0u32.into(), b"session ends mid-transfer");

    let why = tokio::time::timeout(Duration::from_secs(20), replica.wait_stopped())
        .await
        .expect("the replica stops instead of reconnecting");
    assert!(why.contains("sync_dir"), "{why}");
    let st = replica.status();
    assert_eq!(st.state, ReplicaState::Stopped(why));
    assert!(st.halt().is_none(), "a local I/O failure is not a halt");
    assert_eq!(sim.counters().failed_syncs, 1);
    assert!(matches!(
        replica.shutdown().await,
        Err(ReplicaError::Snapshot(_))
    ));
}
