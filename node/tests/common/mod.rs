//! Test support: a FAKE primary written with walship-wire (a real QUIC server
//! with mutual TLS) that sends crafted frames, a recording applier, and helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig, ReplicaStatus};
use walship_wal::record::encode_record;
use walship_wal::state::EpochEntry;
use walship_wal::{FsStorage, Lsn, Position, Wal, WalOptions};
use walship_wire::message::{Hello, Message, RecordBatch, Welcome, PROTOCOL_VERSION};
use walship_wire::{read_frame, FrameWriter, MAX_FRAME_BYTES};
use walship_wire::{TlsFiles, TransportOptions};

/// Bound on any wait in these tests: only a hang reaches it; conditions decide.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn transport() -> TransportOptions {
    TransportOptions {
        keep_alive_ms: 200,
        idle_timeout_ms: 3_000,
        ..TransportOptions::default()
    }
}

/// A primary's log: record bytes and identities, index i holds lsn i + 1.
#[derive(Clone, Debug, Default)]
pub struct Log {
    pub records: Vec<Vec<u8>>,
    pub positions: Vec<Position>,
}

impl Log {
    pub fn build(n: usize, epoch: u64, tag: &str) -> Log {
        let mut log = Log::default();
        for i in 1..=n {
            log.push(epoch, format!("{tag}-{i}").as_bytes());
        }
        log
    }
    pub fn push(&mut self, epoch: u64, payload: &[u8]) {
        let prev = self.last();
        let mut out = Vec::new();
        let pos = encode_record(prev.lsn + 1, epoch, prev.crc, payload, &mut out);
        self.records.push(out);
        self.positions.push(pos);
    }
    pub fn last(&self) -> Position {
        self.positions.last().copied().unwrap_or(Position::ZERO)
    }
    pub fn at(&self, lsn: Lsn) -> Option<Position> {
        if lsn == 0 {
            return Some(Position::ZERO);
        }
        self.positions.get(lsn as usize - 1).copied()
    }
    pub fn prefix(&self, n: usize) -> Log {
        Log {
            records: self.records[..n].to_vec(),
            positions: self.positions[..n].to_vec(),
        }
    }
    pub fn record(&self, lsn: Lsn) -> &[u8] {
        &self.records[lsn as usize - 1]
    }
    pub fn payload(&self, lsn: Lsn) -> Vec<u8> {
        self.record(lsn)[walship_wal::RECORD_HEADER_LEN..].to_vec()
    }
    /// Batch of the given lsns in the given order (stored bytes concatenated).
    pub fn batch_of(&self, lsns: &[Lsn], commit_lsn: Lsn) -> RecordBatch {
        let mut bytes = Vec::new();
        for &l in lsns {
            bytes.extend_from_slice(self.record(l));
        }
        RecordBatch {
            first_lsn: lsns[0],
            count: lsns.len() as u32,
            bytes,
            commit_lsn,
        }
    }
    pub fn batch(&self, from: Lsn, to: Lsn, commit_lsn: Lsn) -> RecordBatch {
        self.batch_of(&(from..=to).collect::<Vec<_>>(), commit_lsn)
    }
}

/// Cluster certificates: `ca` signs p1, p2 and r1; `other` is another CA signing its own p1.
pub struct Certs {
    pub dir: PathBuf,
    pub other_dir: PathBuf,
}

impl Certs {
    pub fn generate(root: &Path) -> Certs {
        let dir = root.join("certs");
        let other_dir = root.join("other-ca");
        walship_wire::generate(&dir, &["p1", "p2", "r1"]).expect("certs");
        walship_wire::generate(&other_dir, &["p1"]).expect("other CA certs");
        Certs { dir, other_dir }
    }
    pub fn files(&self, node: &str) -> TlsFiles {
        TlsFiles::for_node(&self.dir, node)
    }
}

/// A fake primary: a real walship-wire server endpoint; the test scripts every frame.
pub struct FakePrimary {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
}

impl FakePrimary {
    pub fn start(files: &TlsFiles) -> FakePrimary {
        let endpoint = walship_wire::server_endpoint(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            files,
            &["r1".to_string()],
            &transport(),
        )
        .expect("server endpoint");
        let addr = endpoint.local_addr().expect("local addr");
        FakePrimary { endpoint, addr }
    }

    /// Accepts the next connection and its stream, and reads the replica's Hello.
    pub async fn accept(&self) -> Session {
        let fut = async {
            let incoming = self.endpoint.accept().await.expect("endpoint open");
            let conn = incoming.await.expect("handshake");
            let (send, mut recv) = conn.accept_bi().await.expect("stream");
            let hello = match read_frame(&mut recv, MAX_FRAME_BYTES).await {
                Ok(Some(Message::Hello(h))) => h,
                other => panic!("expected Hello, got {other:?}"),
            };
            Session {
                conn,
                send,
                recv,
                writer: FrameWriter::default(),
                hello,
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("replica connects")
    }
}

/// One accepted session of the fake primary.
pub struct Session {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub writer: FrameWriter,
    pub hello: Hello,
}

impl Session {
    pub async fn send(&mut self, msg: Message) {
        self.writer
            .write(&mut self.send, &msg)
            .await
            .expect("send frame");
    }

    /// Welcome computed from `log` as an honest primary would.
    pub async fn welcome(&mut self, log: &Log, epoch: u64, commit_lsn: Lsn) {
        let w = Welcome {
            protocol_version: PROTOCOL_VERSION,
            primary_id: "p1".into(),
            epoch,
            at_replica_last: log.at(self.hello.last.lsn),
            primary_last: log.last(),
            commit_lsn,
            epoch_history: vec![EpochEntry {
                epoch,
                start_lsn: 1,
            }],
        };
        self.send(Message::Welcome(w)).await;
    }

    pub async fn recv(&mut self) -> Option<Message> {
        match tokio::time::timeout(WAIT, read_frame(&mut self.recv, MAX_FRAME_BYTES)).await {
            Ok(Ok(m)) => m,
            Ok(Err(_)) => None,
            Err(_) => panic!("timed out waiting for a frame from the replica"),
        }
    }

    /// Reads until a Receipt for at least `lsn`; returns it.
    pub async fn wait_receipt(&mut self, lsn: Lsn) -> Lsn {
        loop {
            match self.recv().await {
                Some(Message::Receipt { durable_lsn }) if durable_lsn >= lsn => return durable_lsn,
                Some(_) => {}
                None => panic!("stream ended before a receipt for lsn {lsn}"),
            }
        }
    }

    /// Answers Probes from `log` until the replica closes the stream; returns the probed lsns.
    pub async fn answer_probes(&mut self, log: &Log) -> Vec<Lsn> {
        let mut probes = Vec::new();
        while let Some(msg) = self.recv().await {
            if let Message::Probe { lsn } = msg {
                probes.push(lsn);
                self.send(Message::ProbeReply {
                    lsn,
                    position: log.at(lsn),
                })
                .await;
            }
        }
        probes
    }

    /// Waits for the replica to close the connection; returns its application close code.
    pub async fn closed_code(&self) -> Option<u64> {
        let err = tokio::time::timeout(WAIT, self.conn.closed())
            .await
            .expect("replica closes the connection");
        match err {
            quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

/// The embedder's state as the test applier records it; survives a replica restart.
#[derive(Debug, Default)]
pub struct Applied {
    pub records: Vec<(Lsn, Vec<u8>)>,
}

#[derive(Clone, Debug, Default)]
pub struct TestApplier(pub Arc<Mutex<Applied>>);

impl TestApplier {
    pub fn lsns(&self) -> Vec<Lsn> {
        self.0
            .lock()
            .expect("lock")
            .records
            .iter()
            .map(|r| r.0)
            .collect()
    }
    /// Simulates the embedder losing its applies above `lsn` in a crash.
    pub fn truncate(&self, lsn: Lsn) {
        self.0.lock().expect("lock").records.retain(|r| r.0 <= lsn);
    }
}

impl Applier for TestApplier {
    fn applied_lsn(&self) -> Lsn {
        self.0
            .lock()
            .expect("lock")
            .records
            .last()
            .map_or(0, |r| r.0)
    }
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        let mut g = self.0.lock().expect("lock");
        let prev = g.records.last().map_or(0, |r| r.0);
        if lsn != prev + 1 {
            return Err(format!("applied lsn {lsn} after {prev}: out of order or twice").into());
        }
        g.records.push((lsn, payload.to_vec()));
        Ok(())
    }
}

pub fn config(
    data_dir: &Path,
    certs: &Certs,
    primary: SocketAddr,
    primary_name: &str,
) -> ReplicaConfig {
    let mut c = ReplicaConfig::new(
        "r1",
        "c1",
        data_dir,
        primary,
        primary_name,
        certs.files("r1"),
    );
    c.bind_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    c.transport = transport();
    c.backoff_initial_ms = 20;
    c.backoff_max_ms = 200;
    c
}

/// Polls the replica's status until `cond` holds (the condition decides; WAIT only bounds a hang).
pub async fn wait_for(
    replica: &Replica,
    what: &str,
    cond: impl Fn(&ReplicaStatus) -> bool,
) -> ReplicaStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = replica.status();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `log`'s records into a fresh WAL in `data_dir/wal` (a replica's pre-existing log).
pub fn seed_wal(data_dir: &Path, log: &Log) {
    let (mut wal, _) =
        Wal::open(FsStorage, &data_dir.join("wal"), WalOptions::default()).expect("wal");
    let bytes: Vec<u8> = log.records.concat();
    if !bytes.is_empty() {
        wal.append_verified_batch(&bytes).expect("append");
    }
    wal.sync().expect("sync");
}

/// The last position of the WAL in `data_dir/wal` (opened after the replica stopped).
pub fn wal_last(data_dir: &Path) -> Position {
    let (wal, _) = Wal::open(FsStorage, &data_dir.join("wal"), WalOptions::default()).expect("wal");
    wal.last()
}

pub fn read_halt_file(data_dir: &Path) -> Option<walship_node::replica::HaltRecord> {
    walship_node::replica::read_halt(&FsStorage, &data_dir.join("state")).expect("read halt")
}

/// A UDP relay between one QUIC client and a server that can partition the
/// link (drop everything) or add noise: drop, duplicate, delay-reorder and
/// corrupt datagrams, from a seeded generator.
pub struct Relay {
    pub addr: SocketAddr,
    pub blocked: Arc<std::sync::atomic::AtomicBool>,
    pub noise: Arc<std::sync::atomic::AtomicBool>,
    /// Datagrams dropped, corrupted, duplicated, reordered by the noise.
    pub faults: Arc<[std::sync::atomic::AtomicU64; 4]>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// splitmix64: deterministic noise from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

impl Relay {
    pub async fn start(server: SocketAddr, seed: u64) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind front"),
        );
        let back = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind back"),
        );
        let addr = front.local_addr().expect("addr");
        let blocked = Arc::new(AtomicBool::new(false));
        let noise = Arc::new(AtomicBool::new(false));
        let faults: Arc<[std::sync::atomic::AtomicU64; 4]> = Arc::new(Default::default());
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));

        async fn pump(
            from: Arc<tokio::net::UdpSocket>,
            to: Arc<tokio::net::UdpSocket>,
            dest: impl Fn(SocketAddr) -> Option<SocketAddr>,
            blocked: Arc<AtomicBool>,
            noise: Arc<AtomicBool>,
            faults: Arc<[std::sync::atomic::AtomicU64; 4]>,
            mut rng: Rng,
        ) {
            let count = |i: usize| faults[i].fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 65_536];
            let mut held: Option<(Vec<u8>, SocketAddr)> = None;
            loop {
                let Ok((n, src)) = from.recv_from(&mut buf).await else {
                    return;
                };
                let Some(dst) = dest(src) else { continue };
                if blocked.load(Ordering::SeqCst) {
                    continue;
                }
                let mut pkt = buf[..n].to_vec();
                if noise.load(Ordering::SeqCst) {
                    if rng.percent(10) {
                        count(0);
                        continue; // dropped
                    }
                    if rng.percent(5) {
                        count(1);
                        let at = (rng.next() as usize) % pkt.len();
                        pkt[at] ^= 0x20; // corrupted: QUIC packet protection rejects it
                    }
                    if rng.percent(10) {
                        count(2);
                        let _ = to.send_to(&pkt, dst).await; // duplicated
                    }
                    if held.is_none() && rng.percent(10) {
                        count(3);
                        held = Some((pkt, dst)); // reordered: sent after the next one
                        continue;
                    }
                }
                let _ = to.send_to(&pkt, dst).await;
                if let Some((p, d)) = held.take() {
                    let _ = to.send_to(&p, d).await;
                }
            }
        }

        let c1 = Arc::clone(&client);
        let up = tokio::spawn(pump(
            Arc::clone(&front),
            Arc::clone(&back),
            move |src| {
                *c1.lock().expect("lock") = Some(src);
                Some(server)
            },
            Arc::clone(&blocked),
            Arc::clone(&noise),
            Arc::clone(&faults),
            Rng(seed),
        ));
        let c2 = Arc::clone(&client);
        let down = tokio::spawn(pump(
            back,
            front,
            move |_| *c2.lock().expect("lock"),
            Arc::clone(&blocked),
            Arc::clone(&noise),
            Arc::clone(&faults),
            Rng(seed ^ 0x5555),
        ));
        Relay {
            addr,
            blocked,
            noise,
            faults,
            tasks: vec![up, down],
        }
    }

    pub fn partition(&self, on: bool) {
        self.blocked.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_noise(&self, on: bool) {
        self.noise.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Relay {
    /// [dropped, corrupted, duplicated, reordered] datagrams so far.
    pub fn fault_counts(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.faults[i].load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// One replica (data directory `r1`) against a fake primary `p1`, with fresh certificates.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub certs: Certs,
    pub data: std::path::PathBuf,
    pub primary: FakePrimary,
    pub applier: TestApplier,
}

/// A fresh [`Fixture`].
pub fn fixture() -> Fixture {
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
    /// Opens the replica on the fixture's directory, following the fake primary.
    pub fn open(&self) -> walship_node::replica::Replica {
        walship_node::replica::Replica::open(
            config(&self.data, &self.certs, self.primary.addr, "p1"),
            self.applier.clone(),
        )
        .expect("open replica")
    }
}
