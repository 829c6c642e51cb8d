//! The replica against the REAL primary (walship-primary) over QUIC on
//! loopback: replication with byte-identical WAL files, and a replica
//! restarted mid-stream that resumes without gaps or double apply.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use walship_node::primary::{Primary, PrimaryConfig, Quorum};
use walship_node::replica::Replica;

fn primary(root: &Path, certs: &Certs, quorum: Quorum) -> Primary {
    let mut c = PrimaryConfig::new(
        "p1",
        "c1",
        root.join("p1"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        vec!["p1".to_string(), "r1".to_string()],
        certs.files("p1"),
    );
    c.quorum = quorum;
    c.transport = transport();
    c.segment_size_bytes = 256 * 1024;
    Primary::open(c).expect("primary opens")
}

fn wal_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read segment"),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_primary_majority_commit_replicates_and_wal_segments_are_byte_identical() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(tmp.path());
    let p = primary(tmp.path(), &certs, Quorum::Majority);
    let addr = p.local_addr().expect("addr");
    let applier = TestApplier::default();
    let r_dir = tmp.path().join("r1");
    let mut rc = config(&r_dir, &certs, addr, "p1");
    rc.wal.segment_size_bytes = 256 * 1024;
    let replica = Replica::open(rc, applier.clone()).expect("replica opens");

    const N: u64 = 2_000;
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let appends: Vec<_> = (0..N / 8)
            .map(|i| p.append(format!("writer {w} record {i} {}", "x".repeat(100))))
            .collect();
        writers.push(tokio::spawn(async move {
            for a in appends {
                a.await.expect("majority commit");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Majority of 2 members: every acknowledged record was receipted by r1.
    assert_eq!(p.commit_lsn(), N);
    let st = wait_for(&replica, "applied N", |st| st.applied_lsn == N).await;
    assert!(st.halt().is_none());
    assert_eq!(applier.lsns(), (1..=N).collect::<Vec<_>>());
    replica.shutdown().await.expect("replica shutdown");
    p.shutdown().await;
    let primary_files = wal_files(&tmp.path().join("p1"));
    let replica_files = wal_files(&r_dir);
    assert!(primary_files.len() > 1, "several segments were written");
    assert_eq!(
        primary_files.iter().map(|f| &f.0).collect::<Vec<_>>(),
        replica_files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (a, b) in primary_files.iter().zip(&replica_files) {
        assert!(a.1 == b.1, "segment {} differs", a.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_restarted_mid_stream_resumes_without_gap_or_double_apply() {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(tmp.path());
    let p = primary(tmp.path(), &certs, Quorum::LocalOnly);
    let addr = p.local_addr().expect("addr");
    let applier = TestApplier::default();
    let r_dir = tmp.path().join("r1");
    let replica =
        Replica::open(config(&r_dir, &certs, addr, "p1"), applier.clone()).expect("replica opens");

    const N: u64 = 3_000;
    const WRITERS: u64 = 10;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let appends: Vec<_> = (0..N / WRITERS)
            .map(|i| p.append(format!("writer {w} record {i}")))
            .collect();
        writers.push(tokio::spawn(async move {
            for a in appends {
                a.await.expect("local commit");
            }
        }));
    }
    wait_for(&replica, "some records applied", |st| st.applied_lsn >= 200).await;
    replica.shutdown().await.expect("shutdown mid-stream");
    // The embedder lost its last applies too.
    let keep = applier.lsns().len() as u64 / 2;
    applier.truncate(keep);

    let replica = Replica::open(config(&r_dir, &certs, addr, "p1"), applier.clone())
        .expect("replica reopens");
    for w in writers {
        w.await.expect("writer");
    }
    let st = wait_for(&replica, "applied N", |st| st.applied_lsn == N).await;
    assert!(st.halt().is_none());
    assert!(st.sessions >= 1);
    assert_eq!(applier.lsns(), (1..=N).collect::<Vec<_>>());
    let applied = applier.0.lock().expect("lock").records.clone();
    let mut payloads: Vec<Vec<u8>> = applied.into_iter().map(|r| r.1).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(
        payloads.len() as u64,
        N,
        "every record applied exactly once"
    );
    replica.shutdown().await.expect("shutdown");
    p.shutdown().await;
}
