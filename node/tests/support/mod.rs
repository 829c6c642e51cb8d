//! Test support: certificates, a primary on loopback, and a minimal fake replica speaking the
//! wire protocol directly (it appends nothing; the test decides its receipts).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use walship_node::primary::{Primary, PrimaryConfig, Quorum};
use walship_wal::{decode_record, Lsn, Position, RecordError};
use walship_wire::{read_frame, CloseCode, FrameError, FrameWriter, MAX_FRAME_BYTES};
use walship_wire::{
    Hello, Message, RecordBatch, TlsFiles, TransportOptions, Welcome, PROTOCOL_VERSION,
};

pub const CLUSTER: &str = "test-cluster";
/// Generous bound for conditions that must eventually hold (tests never assert on timing).
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A temp dir with certificates for `nodes` from one CA.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub certs: PathBuf,
}

impl Cluster {
    pub fn new(nodes: &[&str]) -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        walship_wire::generate(&certs, nodes).expect("generate certs");
        Cluster { dir, certs }
    }

    pub fn tls(&self, node: &str) -> TlsFiles {
        TlsFiles::for_node(&self.certs, node)
    }

    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    pub fn primary_config(&self, members: &[&str], quorum: Quorum) -> PrimaryConfig {
        let mut c = PrimaryConfig::new(
            "p",
            CLUSTER,
            self.data_dir("p"),
            "127.0.0.1:0".parse().expect("addr"),
            members.iter().map(|m| m.to_string()).collect(),
            self.tls("p"),
        );
        c.quorum = quorum;
        c.segment_size_bytes = 256 * 1024;
        c
    }
}

/// Waits until `f` holds, polling; panics with `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "condition never held: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A replica that speaks the protocol by hand.
pub struct FakeReplica {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    writer: FrameWriter,
}

impl FakeReplica {
    /// Connects as `node` with the files `tls` and opens the stream.
    pub async fn connect_with(tls: &TlsFiles, addr: SocketAddr) -> Result<FakeReplica, String> {
        let endpoint = walship_wire::client_endpoint(
            "127.0.0.1:0".parse().expect("addr"),
            tls,
            &TransportOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        let conn = walship_wire::connect(&endpoint, addr, "p")
            .await
            .map_err(|e| e.to_string())?;
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        Ok(FakeReplica {
            endpoint,
            conn,
            send,
            recv,
            writer: FrameWriter::default(),
        })
    }

    pub async fn connect(cluster: &Cluster, node: &str, addr: SocketAddr) -> FakeReplica {
        FakeReplica::connect_with(&cluster.tls(node), addr)
            .await
            .expect("connect")
    }

    pub async fn send(&mut self, msg: &Message) {
        self.writer
            .write(&mut self.send, msg)
            .await
            .expect("write frame");
    }

    /// Like [`FakeReplica::send`], but a failed write (the primary closed the connection)
    /// is returned rather than a test failure.
    pub async fn try_send(&mut self, msg: &Message) -> Result<(), FrameError> {
        self.writer.write(&mut self.send, msg).await
    }

    pub async fn recv(&mut self) -> Result<Option<Message>, FrameError> {
        tokio::time::timeout(DEADLINE, read_frame(&mut self.recv, MAX_FRAME_BYTES))
            .await
            .expect("a frame within the deadline")
    }

    pub async fn hello(&mut self, node: &str, last: Position) -> Welcome {
        self.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: CLUSTER.into(),
            node_id: node.into(),
            incarnation: 0,
            last,
            commit_lsn: 0,
            epoch_history: vec![],
            highest_epoch_seen: 0,
        }))
        .await;
        match self.recv().await {
            Ok(Some(Message::Welcome(w))) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Next Records frame (skipping Commit messages).
    pub async fn next_batch(&mut self) -> RecordBatch {
        loop {
            match self.recv().await {
                Ok(Some(Message::Records(b))) => return b,
                Ok(Some(Message::Commit { .. })) => continue,
                other => panic!("expected Records, got {other:?}"),
            }
        }
    }

    pub async fn receipt(&mut self, durable_lsn: Lsn) {
        self.send(&Message::Receipt { durable_lsn }).await;
    }

    /// Waits for the connection to be closed by the primary; returns the application close code.
    pub async fn closed_code(&self) -> Option<CloseCode> {
        match tokio::time::timeout(DEADLINE, self.conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => CloseCode::from_code(c.error_code),
            Ok(_) => None,
            Err(_) => panic!("connection not closed within the deadline"),
        }
    }
}

/// Splits a batch into verified records, checking they follow `prev` in order.
pub fn verify_batch(prev: Position, b: &RecordBatch) -> Result<Position, RecordError> {
    let mut rest = &b.bytes[..];
    let mut last = prev;
    let mut n = 0;
    while !rest.is_empty() {
        let v = decode_record(rest, 4 * 1024 * 1024)?;
        assert_eq!(v.lsn(), last.lsn + 1, "records in order");
        assert_eq!(v.prev_crc(), last.crc, "chain");
        last = v.position();
        rest = &rest[v.bytes().len()..];
        n += 1;
    }
    assert_eq!(
        (b.first_lsn, b.count),
        (prev.lsn + 1, n),
        "frame header matches records"
    );
    Ok(last)
}

/// All WAL segment bytes of a data directory, concatenated in name order, header-less
/// comparisons are done by the caller.
pub fn wal_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let wal = dir.join("wal");
    let mut names: Vec<_> = std::fs::read_dir(&wal)
        .expect("wal dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(wal.join(&n)).expect("read segment");
            (n, bytes)
        })
        .collect()
}

pub fn open_primary(config: PrimaryConfig) -> Primary {
    Primary::open(config).expect("open primary")
}
