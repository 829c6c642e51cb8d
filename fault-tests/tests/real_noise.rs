//! FM-X.1 (network noise is not a halt) with real QUIC on loopback: a userspace
//! UDP fault proxy between a replica and its primary drops, duplicates, reorders,
//! delays and corrupts datagrams in both directions, from a seeded generator,
//! counting every fault it injects. QUIC retransmits, reorders and rejects
//! damaged packets, so the replica must never halt (a halt here is a false
//! alarm: FM-X.1; datagram-level duplication or reordering must never reach the
//! verifier as FM-5.2), and must converge to the primary's durable lsn after the
//! load stops, with the noise still on. A total outage of the link (longer than
//! the QUIC idle timeout) in the middle of the load must end the session without
//! a halt, and the replica must reconnect and resume (FM-5.1, here on loopback
//! without root). Afterwards walship-recover `verify` and `diff` show two clean,
//! identical logs holding exactly the appended payloads.
//!
//! `WALSHIP_NOISE_SEED` fixes the seed (printed), `WALSHIP_NOISE_RECORDS` the number
//! of appends (default 3000).

mod real_common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use real_common::{check_diff_prefix, check_dir, count_from_env, make_certs, seed_from_env};
use walship_node::primary::{Primary, PrimaryConfig, Quorum};
use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig};
use walship_recovery::report::WalState;
use walship_wal::Lsn;
use walship_wire::{TlsFiles, TransportOptions};

/// Probabilities per datagram (each fault drawn independently, in this order:
/// drop, corrupt, duplicate, then per copy delay or reorder).
#[derive(Clone, Copy, Debug)]
struct Rates {
    drop: f64,
    corrupt: f64,
    duplicate: f64,
    delay: f64,
    reorder: f64,
    max_delay_ms: u64,
}

/// How many faults the proxy injected.
#[derive(Debug, Default)]
struct FaultCounts {
    datagrams_in: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    corrupted: AtomicU64,
    duplicated: AtomicU64,
    delayed: AtomicU64,
    reordered: AtomicU64,
    /// Dropped because the link was blacked out.
    blackout_dropped: AtomicU64,
}

impl FaultCounts {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Acquire)
    }

    fn line(&self) -> String {
        format!(
            "datagrams in {}, forwarded {}, dropped {}, corrupted {}, duplicated {}, delayed {}, reordered {}, dropped in the blackout {}",
            Self::get(&self.datagrams_in),
            Self::get(&self.forwarded),
            Self::get(&self.dropped),
            Self::get(&self.corrupted),
            Self::get(&self.duplicated),
            Self::get(&self.delayed),
            Self::get(&self.reordered),
            Self::get(&self.blackout_dropped)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    ToPrimary,
    ToReplica,
}

/// The fault proxy: its own thread with its own single-threaded runtime.
struct Proxy {
    front: SocketAddr,
    counts: Arc<FaultCounts>,
    stop: Arc<tokio::sync::Notify>,
    /// While set, every datagram in both directions is dropped (a total outage).
    blackout: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 for the replica and forwards to `primary`.
    fn start(primary: SocketAddr, seed: u64, rates: Rates) -> Result<Proxy, String> {
        let front = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let back = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        back.connect(primary).map_err(|e| format!("connect: {e}"))?;
        for s in [&front, &back] {
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
        let front_addr = front.local_addr().map_err(|e| e.to_string())?;
        let counts = Arc::new(FaultCounts::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let blackout = Arc::new(AtomicBool::new(false));
        let thread = {
            let counts = counts.clone();
            let stop = stop.clone();
            let blackout = blackout.clone();
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("proxy runtime: {e}"))?;
                    rt.block_on(proxy_loop(front, back, seed, rates, counts, stop, blackout))
                })
                .map_err(|e| format!("spawn proxy: {e}"))?
        };
        Ok(Proxy {
            front: front_addr,
            counts,
            stop,
            blackout,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> Result<(), String> {
        self.stop.notify_one();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("proxy thread panicked".into()),
            None => Ok(()),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// QUIC idle timeout of both nodes, and a blackout well above it: the outage
/// ends the session by configuration, not by a race.
const IDLE_TIMEOUT_MS: u64 = 1_500;
const BLACKOUT_MS: u64 = 3 * IDLE_TIMEOUT_MS;

/// A reorder holds one datagram per direction until the next one in that
/// direction has been sent (or this long has passed without one).
const REORDER_FLUSH: Duration = Duration::from_millis(15);

/// A delayed datagram: (release time, sequence number, direction, bytes).
type Delayed = (Instant, u64, Dir, Vec<u8>);

struct ProxyState {
    front: tokio::net::UdpSocket,
    back: tokio::net::UdpSocket,
    replica: Option<SocketAddr>,
    rng: StdRng,
    rates: Rates,
    counts: Arc<FaultCounts>,
    blackout: Arc<AtomicBool>,
    /// Delayed datagrams by release time (seq keeps the heap order total).
    delayed: BinaryHeap<Reverse<Delayed>>,
    seq: u64,
    held: [Option<(Instant, Vec<u8>)>; 2],
}

impl ProxyState {
    async fn send(&mut self, dir: Dir, pkt: &[u8]) {
        // Send errors (the peer's socket is gone for a moment) are datagram loss.
        let sent = match dir {
            Dir::ToPrimary => self.back.send(pkt).await.is_ok(),
            Dir::ToReplica => match self.replica {
                Some(r) => self.front.send_to(pkt, r).await.is_ok(),
                None => false,
            },
        };
        if sent {
            self.counts.forwarded.fetch_add(1, Ordering::AcqRel);
        }
    }

    async fn send_then_release_held(&mut self, dir: Dir, pkt: &[u8]) {
        self.send(dir, pkt).await;
        if let Some((_, held)) = self.held[dir as usize].take() {
            self.send(dir, &held).await;
        }
    }

    async fn on_datagram(&mut self, dir: Dir, mut pkt: Vec<u8>) {
        let c = self.counts.clone();
        c.datagrams_in.fetch_add(1, Ordering::AcqRel);
        if self.blackout.load(Ordering::Acquire) {
            c.blackout_dropped.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let r = self.rates;
        if self.rng.gen_bool(r.drop) {
            c.dropped.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if !pkt.is_empty() && self.rng.gen_bool(r.corrupt) {
            let i = self.rng.gen_range(0..pkt.len());
            pkt[i] ^= self.rng.gen_range(1..=255u8);
            c.corrupted.fetch_add(1, Ordering::AcqRel);
        }
        let copies = if self.rng.gen_bool(r.duplicate) {
            c.duplicated.fetch_add(1, Ordering::AcqRel);
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.gen_bool(r.delay) {
                let ms = self.rng.gen_range(1..=r.max_delay_ms);
                self.seq += 1;
                self.delayed.push(Reverse((
                    Instant::now() + Duration::from_millis(ms),
                    self.seq,
                    dir,
                    pkt.clone(),
                )));
                c.delayed.fetch_add(1, Ordering::AcqRel);
            } else if self.held[dir as usize].is_none() && self.rng.gen_bool(r.reorder) {
                self.held[dir as usize] = Some((Instant::now() + REORDER_FLUSH, pkt.clone()));
                c.reordered.fetch_add(1, Ordering::AcqRel);
            } else {
                self.send_then_release_held(dir, &pkt).await;
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let heap = self.delayed.peek().map(|Reverse((t, ..))| *t);
        let held = self.held.iter().flatten().map(|(t, _)| *t).min();
        heap.into_iter().chain(held).min()
    }

    async fn release_due(&mut self) {
        let now = Instant::now();
        while self
            .delayed
            .peek()
            .is_some_and(|Reverse((t, ..))| *t <= now)
        {
            if let Some(Reverse((_, _, dir, pkt))) = self.delayed.pop() {
                self.send(dir, &pkt).await;
            }
        }
        for dir in [Dir::ToPrimary, Dir::ToReplica] {
            if self.held[dir as usize]
                .as_ref()
                .is_some_and(|(t, _)| *t <= now)
            {
                if let Some((_, pkt)) = self.held[dir as usize].take() {
                    self.send(dir, &pkt).await;
                }
            }
        }
    }
}

async fn proxy_loop(
    front: std::net::UdpSocket,
    back: std::net::UdpSocket,
    seed: u64,
    rates: Rates,
    counts: Arc<FaultCounts>,
    stop: Arc<tokio::sync::Notify>,
    blackout: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut st = ProxyState {
        front: tokio::net::UdpSocket::from_std(front).map_err(|e| e.to_string())?,
        back: tokio::net::UdpSocket::from_std(back).map_err(|e| e.to_string())?,
        replica: None,
        rng: StdRng::seed_from_u64(seed),
        rates,
        counts,
        blackout,
        delayed: BinaryHeap::new(),
        seq: 0,
        held: [None, None],
    };
    let mut buf_front = vec![0u8; 65_536];
    let mut buf_back = vec![0u8; 65_536];
    loop {
        let due = st
            .next_due()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.notified() => return Ok(()),
            r = st.front.recv_from(&mut buf_front) => {
                // A receive error on loopback (ICMP port unreachable reported late) is loss.
                if let Ok((n, from)) = r {
                    st.replica = Some(from);
                    let pkt = buf_front[..n].to_vec();
                    st.on_datagram(Dir::ToPrimary, pkt).await;
                }
            }
            r = st.back.recv(&mut buf_back) => {
                if let Ok(n) = r {
                    let pkt = buf_back[..n].to_vec();
                    st.on_datagram(Dir::ToReplica, pkt).await;
                }
            }
            _ = tokio::time::sleep_until(due.into()) => st.release_due().await,
        }
    }
}

/// Log-only embedder that records what it was given, in order.
struct Recorder {
    applied: Arc<AtomicU64>,
    out_of_order: Arc<AtomicU64>,
}

impl Applier for Recorder {
    fn applied_lsn(&self) -> Lsn {
        self.applied.load(Ordering::Acquire)
    }

    fn apply(&mut self, lsn: Lsn, _payload: &[u8]) -> Result<(), ApplyError> {
        if lsn != self.applied.load(Ordering::Acquire) + 1 {
            self.out_of_order.fetch_add(1, Ordering::AcqRel);
            return Err(format!("apply of lsn {lsn} out of order").into());
        }
        self.applied.store(lsn, Ordering::Release);
        Ok(())
    }
}

/// Payload of append `k`: printable, 16..1400 bytes, recomputable from `k`.
fn payload(k: u64) -> String {
    let len = 16 + (k.wrapping_mul(2_654_435_761) % 1_384) as usize;
    let mut s = format!("noise-{k}-");
    let fill = (b'a' + (k % 26) as u8) as char;
    while s.len() < len {
        s.push(fill);
    }
    s
}

#[test]
fn fm_x_1_fm_5_2_fm_5_1_datagram_noise_and_outage_are_not_a_halt_and_replica_converges() {
    let seed = seed_from_env("WALSHIP_NOISE_SEED");
    let records = count_from_env("WALSHIP_NOISE_RECORDS", 3_000);
    let rates = Rates {
        drop: 0.04,
        corrupt: 0.02,
        duplicate: 0.03,
        delay: 0.04,
        reorder: 0.03,
        max_delay_ms: 25,
    };
    println!("real_noise: seed {seed} (WALSHIP_NOISE_SEED), {records} appends (WALSHIP_NOISE_RECORDS), rates {rates:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    make_certs(&certs, &["n1", "n2"]).expect("certs");
    let (p_dir, r_dir) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let transport = TransportOptions {
        keep_alive_ms: 200,
        idle_timeout_ms: IDLE_TIMEOUT_MS,
        ..TransportOptions::default()
    };
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let applied = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicU64::new(0));
    let (counts, sessions, durable) = rt.block_on(async {
        let mut pc = PrimaryConfig::new(
            "n1",
            "noise",
            &p_dir,
            "127.0.0.1:0".parse().expect("literal"),
            vec!["n1".into(), "n2".into()],
            TlsFiles::for_node(&certs, "n1"),
        );
        // Majority of two: every commit needs the replica's receipt through the noise.
        pc.quorum = Quorum::Majority;
        pc.commit_timeout_ms = 120_000;
        pc.transport = transport;
        pc.segment_size_bytes = real_common::SEGMENT_SIZE_BYTES;
        let primary = Primary::open(pc).expect("open primary");
        let proxy = Proxy::start(primary.local_addr().expect("addr"), seed, rates).expect("proxy");
        let mut rc = ReplicaConfig::new(
            "n2",
            "noise",
            &r_dir,
            proxy.front,
            "n1",
            TlsFiles::for_node(&certs, "n2"),
        );
        rc.bind_addr = "127.0.0.1:0".parse().expect("literal");
        rc.transport = transport;
        rc.backoff_max_ms = 500;
        rc.wal.segment_size_bytes = real_common::SEGMENT_SIZE_BYTES;
        let replica = Replica::open(
            rc,
            Recorder {
                applied: applied.clone(),
                out_of_order: out_of_order.clone(),
            },
        )
        .expect("open replica");

        let mut tasks = tokio::task::JoinSet::new();
        let mut acked = 0u64;
        let mut next = 0u64;
        let mut blackout_task = None;
        while acked < records {
            if acked == records / 3 && blackout_task.is_none() {
                // A total outage longer than the idle timeout: the session must end
                // (FM-5.1 on loopback), the appends wait for the quorum, nothing halts.
                proxy.blackout.store(true, Ordering::Release);
                let b = proxy.blackout.clone();
                blackout_task = Some(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(BLACKOUT_MS)).await;
                    b.store(false, Ordering::Release);
                }));
            }
            while next < records && tasks.len() < 64 {
                let k = next;
                let fut = primary.append(payload(k).into_bytes());
                tasks.spawn(async move { (k, fut.await) });
                next += 1;
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (k, result) = done.expect("append task");
            let lsn = result.unwrap_or_else(|e| panic!("append {k} failed: {e}"));
            assert!(lsn >= 1 && lsn <= records, "lsn {lsn} out of range");
            acked += 1;
            if let Some(h) = replica.halt() {
                panic!("FM-X.1: replica halted under transport noise: {h}");
            }
        }
        assert_eq!(acked, records);
        if let Some(t) = blackout_task {
            t.await.expect("blackout task");
        }
        // Load stopped, noise still on: the replica converges to the primary's durable lsn.
        let durable = primary.durable_lsn();
        assert_eq!(durable, records, "every append is durable on the primary");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = replica.status();
            if let Some(h) = s.halt() {
                panic!("FM-X.1: replica halted under transport noise: {h}");
            }
            if s.durable_lsn == Some(durable) && s.applied_lsn == durable && s.commit_lsn == durable
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "liveness: replica did not converge to lsn {durable} within 120 s: {s:?}; proxy {}",
                proxy.counts.line()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sessions = replica.status().sessions;
        let counts = proxy.counts.clone();
        replica.shutdown().await.expect("replica shutdown");
        primary.shutdown().await;
        proxy.stop().expect("proxy");
        (counts, sessions, durable)
    });
    assert_eq!(
        out_of_order.load(Ordering::Acquire),
        0,
        "applier fed out of order"
    );
    assert_eq!(applied.load(Ordering::Acquire), durable);

    let p = check_dir(&p_dir).expect("verify primary");
    let r = check_dir(&r_dir).expect("verify replica");
    assert_eq!(p.wal_state, WalState::Clean);
    assert_eq!(r.wal_state, WalState::Clean);
    assert!(r.halt.is_none(), "replica halted: {:?}", r.halt);
    check_diff_prefix(&p_dir, &r_dir, true).expect("diff: identical logs");
    // The replica holds exactly the appended payloads (each once, every lsn 1..=N).
    let mut seen: Vec<String> = r.payloads.values().cloned().collect();
    seen.sort();
    let mut want: Vec<String> = (0..records).map(payload).collect();
    want.sort();
    assert_eq!(r.payloads.len() as u64, records);
    assert!(
        seen == want,
        "the replica's payloads are not exactly the appended ones"
    );

    println!(
        "real_noise figures: seed {seed}, {records} records, proxy: {}, replica sessions {sessions}, {:.1} s",
        counts.line(),
        started.elapsed().as_secs_f64()
    );
    // The test must have injected every kind of fault, or it proved nothing.
    assert!(
        sessions >= 2,
        "the blackout ({BLACKOUT_MS} ms > idle timeout {IDLE_TIMEOUT_MS} ms) must end the session and the replica reconnect: sessions {sessions}"
    );
    for (name, c) in [
        ("dropped", &counts.dropped),
        ("corrupted", &counts.corrupted),
        ("duplicated", &counts.duplicated),
        ("delayed", &counts.delayed),
        ("reordered", &counts.reordered),
        ("dropped in the blackout", &counts.blackout_dropped),
    ] {
        assert!(
            FaultCounts::get(c) > 0,
            "no datagram was {name}: {}",
            counts.line()
        );
    }
}
