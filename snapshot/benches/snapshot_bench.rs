//! Snapshot benchmark on the real file system (FsStorage), in one run:
//!
//! 1. the disk's durable sequential write rate (1 MiB `pwrite`s of the
//!    snapshot's size, one `fdatasync` at the end) — the limit;
//! 2. create: the embedder streams the payload through `SnapshotWriter`
//!    (1 MiB chunks), fsync, rename, fsync dir;
//! 3. verify: every chunk crc and the payload crc of the created file;
//! 4. install: the primary's chunks (read and verified from its file) pushed
//!    into `Install` (written, trailer, fsync, re-read and verified), then
//!    commit (boundary check, rename, fsync, `Wal::reset_to`);
//! 5. one plain quinn stream on loopback (mutual TLS, walship transport
//!    options): the same number of bytes, 1 MiB writes — the network limit;
//! 6. ship + verify + install over QUIC on loopback: `SnapshotSender` frames
//!    (`Message::SnapshotOffer/Chunk/End`) on one stream, `SnapshotReceiver`
//!    on the other side, then commit — the figure issue 4 asks for, to be
//!    compared with the smaller of (1) and (5).
//!
//! `cargo bench -p walship-snapshot`. Environment:
//! - `WALSHIP_BENCH_SNAPSHOT_MB`: payload size in MiB (default 256);
//! - `WALSHIP_BENCH_DIR`: directory to run in (default: the system temp dir).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use walship_snapshot::{
    Limits, ReceiveProgress, SnapshotReceiver, SnapshotSource, SnapshotStore, TransferItem,
};
use walship_wal::{FsStorage, Lsn, Position, Wal, WalOptions};
use walship_wire::endpoint::{client_endpoint_with, server_endpoint_with};
use walship_wire::message::Message;
use walship_wire::{connect, read_frame, FrameWriter, TlsFiles, TransportOptions, MAX_FRAME_BYTES};

const MIB: u64 = 1024 * 1024;
const CHUNK: u32 = 1024 * 1024;

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

/// The embedder: produces `len` bytes of pseudo-random state in 256 KiB writes.
struct Generated {
    len: u64,
    lsn: Lsn,
}

impl SnapshotSource for Generated {
    fn write_snapshot(&mut self, w: &mut dyn io::Write) -> io::Result<Lsn> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let mut left = self.len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            buf[0] = buf[0].wrapping_add(1);
            w.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(self.lsn)
    }
}

fn disk_durable_write(dir: &Path, bytes: u64) -> io::Result<f64> {
    let p = dir.join("raw-write");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)?;
    let buf = vec![0x5au8; MIB as usize];
    let t = Instant::now();
    let mut off = 0;
    while off < bytes {
        f.write_all_at(&buf, off)?;
        off += MIB;
    }
    f.sync_data()?;
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&p)?;
    Ok(secs)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Quic {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
}

fn quic_pair(certs_dir: &Path) -> Result<Quic, BoxError> {
    walship_wire::generate(certs_dir, &["primary", "replica"])?;
    let opts = TransportOptions::default();
    let pm = TlsFiles::for_node(certs_dir, "primary").load()?;
    let rm = TlsFiles::for_node(certs_dir, "replica").load()?;
    let server =
        server_endpoint_with("127.0.0.1:0".parse()?, &pm, &["replica".to_string()], &opts)?;
    let client = client_endpoint_with("127.0.0.1:0".parse()?, &rm, &opts)?;
    Ok(Quic { server, client })
}

async fn connect_pair(q: &Quic) -> Result<(quinn::Connection, quinn::Connection), BoxError> {
    let addr = q.server.local_addr()?;
    let accept = async {
        let incoming = q.server.accept().await.ok_or("endpoint closed")?;
        Ok::<_, BoxError>(incoming.await?)
    };
    let (s, c) = tokio::join!(accept, connect(&q.client, addr, "primary"));
    Ok((s?, c?))
}

/// One plain stream: `bytes` in 1 MiB writes; returns seconds until the receiver read them all.
async fn plain_stream(q: &Quic, bytes: u64) -> Result<f64, BoxError> {
    let (sconn, cconn) = connect_pair(q).await?;
    let t = Instant::now();
    let sender = async move {
        let mut send = sconn.open_uni().await?;
        let buf = vec![0xa5u8; MIB as usize];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(MIB) as usize;
            send.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        send.finish()?;
        sconn.closed().await;
        Ok::<_, BoxError>(())
    };
    let receiver = async move {
        let mut recv = cconn.accept_uni().await?;
        let mut got = 0u64;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            got += chunk.bytes.len() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        cconn.close(0u32.into(), b"done");
        if got != bytes {
            return Err(format!("received {got} of {bytes} bytes").into());
        }
        Ok::<_, BoxError>(secs)
    };
    let (s, r) = tokio::join!(sender, receiver);
    s?;
    r
}

/// Ships the snapshot as walship frames and installs it; returns (seconds to
/// verified, seconds to installed).
async fn ship_and_install(
    q: &Quic,
    pstore: &SnapshotStore<FsStorage>,
    snap: &walship_snapshot::InstalledSnapshot,
    replica: &Path,
) -> Result<(f64, f64), BoxError> {
    let (rstore, _) =
        SnapshotStore::open(FsStorage, &replica.join("snapshots"), Limits::default())?;
    let (mut wal, _) = Wal::open(FsStorage, &replica.join("wal"), WalOptions::default())?;
    let (sconn, cconn) = connect_pair(q).await?;
    let sender = pstore.sender(snap)?;
    let t = Instant::now();
    // As a driver would: the file work (chunk verify + copy on the primary,
    // chunk verify + write + fsync on the replica) runs on its own thread,
    // connected to the network tasks by bounded channels, so reading and
    // writing the stream overlap with the disk.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(4);
    let producer = std::thread::spawn(move || -> Result<(), String> {
        for item in sender {
            let msg = match item.map_err(|e| e.to_string())? {
                TransferItem::Offer(o) => Message::SnapshotOffer(o),
                TransferItem::Chunk(c) => Message::SnapshotChunk(c),
                TransferItem::End(e) => Message::SnapshotEnd(e),
            };
            if out_tx.blocking_send(msg).is_err() {
                return Err("network task gone".into());
            }
        }
        Ok(())
    });
    let primary = async move {
        let mut send = sconn.open_uni().await?;
        let mut w = FrameWriter::default();
        while let Some(msg) = out_rx.recv().await {
            w.write(&mut send, &msg).await?;
        }
        send.finish()?;
        sconn.closed().await;
        Ok::<_, BoxError>(())
    };
    let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<TransferItem>(4);
    let installer = std::thread::spawn(move || -> Result<(f64, f64), String> {
        let mut receiver = SnapshotReceiver::new(rstore);
        while let Ok(item) = in_rx.recv() {
            if let ReceiveProgress::Complete(v) =
                receiver.on_item(&item).map_err(|e| e.to_string())?
            {
                let verified_secs = t.elapsed().as_secs_f64();
                v.commit(&mut wal, None).map_err(|e| e.to_string())?;
                return Ok((verified_secs, t.elapsed().as_secs_f64()));
            }
        }
        receiver.session_ended().map_err(|e| e.to_string())?;
        Err("stream ended before the snapshot was complete".into())
    });
    let replica_side = async move {
        let mut recv = cconn.accept_uni().await?;
        while let Some(msg) = read_frame(&mut recv, MAX_FRAME_BYTES).await? {
            let item = match msg {
                Message::SnapshotOffer(o) => TransferItem::Offer(o),
                Message::SnapshotChunk(c) => TransferItem::Chunk(c),
                Message::SnapshotEnd(e) => TransferItem::End(e),
                other => return Err(format!("unexpected {}", other.kind()).into()),
            };
            let end = matches!(item, TransferItem::End(_));
            // Blocking send on a bounded channel: backpressure from the disk to the stream.
            let tx = in_tx.clone();
            tokio::task::spawn_blocking(move || tx.send(item))
                .await?
                .map_err(|_| "installer gone")?;
            if end {
                break;
            }
        }
        drop(in_tx);
        let timings = tokio::task::spawn_blocking(move || installer.join())
            .await?
            .map_err(|_| "installer panicked")??;
        // Close only once installed: the primary waits for this.
        cconn.close(0u32.into(), b"installed");
        Ok::<_, BoxError>(timings)
    };
    let (p, r) = tokio::join!(primary, replica_side);
    let timings = r?;
    p?;
    producer.join().map_err(|_| "producer panicked")??;
    Ok(timings)
}

fn run(root: &Path, mb: u64) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = mb * MIB;
    let limits = Limits::default();
    let primary = root.join("primary");
    let replica = root.join("replica");
    std::fs::create_dir_all(&primary)?;
    std::fs::create_dir_all(replica.join("wal"))?;

    let raw_secs = disk_durable_write(root, bytes)?;

    let (pstore, _) = SnapshotStore::open(FsStorage, &primary.join("snapshots"), limits)?;
    let boundary = Position {
        lsn: 1000,
        epoch: 1,
        crc: 0x1234,
    };
    let t = Instant::now();
    let snap = pstore.create(
        CHUNK,
        &mut Generated {
            len: bytes,
            lsn: 1000,
        },
        &mut |_| Ok(boundary),
    )?;
    let create_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    pstore.verify(&snap)?;
    let verify_secs = t.elapsed().as_secs_f64();

    let (rstore, _) = SnapshotStore::open(FsStorage, &replica.join("snapshots"), limits)?;
    let (mut wal, _) = Wal::open(FsStorage, &replica.join("wal"), WalOptions::default())?;
    let t = Instant::now();
    let reader = pstore.reader(&snap)?;
    let mut inst = rstore.begin_install(&reader.offer())?;
    for i in 0..reader.header().chunk_count() {
        inst.push_chunk(&reader.chunk_message(i)?)?;
    }
    let verified = inst.finish(&reader.end_message())?;
    let receive_secs = t.elapsed().as_secs_f64();
    verified.commit(&mut wal, None)?;
    let install_secs = t.elapsed().as_secs_f64();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // quinn endpoints bind their sockets inside a runtime.
    let _rt_guard = rt.enter();
    let q = quic_pair(&root.join("certs")).map_err(|e| e.to_string())?;
    let quic_secs = rt
        .block_on(plain_stream(&q, bytes))
        .map_err(|e| e.to_string())?;
    let quic_replica = root.join("quic-replica");
    std::fs::create_dir_all(quic_replica.join("wal"))?;
    let (ship_verified_secs, ship_installed_secs) = rt
        .block_on(ship_and_install(&q, &pstore, &snap, &quic_replica))
        .map_err(|e| e.to_string())?;

    let raw = mb_per_s(bytes, raw_secs);
    let quic = mb_per_s(bytes, quic_secs);
    let limit = raw.min(quic);
    let rows = [
        (
            "disk durable sequential write (1 MiB pwrite + fdatasync)",
            raw_secs,
        ),
        (
            "create (embedder -> SnapshotWriter, fsync, rename)",
            create_secs,
        ),
        ("verify (every chunk crc + payload crc)", verify_secs),
        (
            "receive (verify chunk, write, fsync, re-verify)",
            receive_secs,
        ),
        (
            "install = receive + commit (rename, fsync, WAL reset)",
            install_secs,
        ),
        ("one plain quinn stream, loopback (1 MiB writes)", quic_secs),
        (
            "QUIC ship + verify (frames -> SnapshotReceiver)",
            ship_verified_secs,
        ),
        ("QUIC ship + verify + install (commit)", ship_installed_secs),
    ];
    println!(
        "snapshot benchmark: {mb} MiB payload, 1 MiB chunks, dir {}",
        root.display()
    );
    println!(
        "{:<58} {:>9} {:>10} {:>8}",
        "measurement", "seconds", "MiB/s", "vs disk"
    );
    for (name, secs) in rows {
        let rate = mb_per_s(bytes, secs);
        println!(
            "{name:<58} {secs:>9.3} {rate:>10.1} {:>7.0}%",
            rate / raw * 100.0
        );
    }
    let shipped = mb_per_s(bytes, ship_installed_secs);
    println!(
        "QUIC ship+verify+install = {shipped:.1} MiB/s = {:.0}% of min(disk {raw:.1}, quinn stream {quic:.1}) = {limit:.1} MiB/s (target >= 80%)",
        shipped / limit * 100.0
    );
    Ok(())
}

fn main() {
    let mb: u64 = std::env::var("WALSHIP_BENCH_SNAPSHOT_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let base: PathBuf = std::env::var("WALSHIP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = match tempfile::Builder::new()
        .prefix("walship-snapshot-bench")
        .tempdir_in(&base)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a bench directory in {}: {e}", base.display());
            std::process::exit(1);
        }
    };
    if let Err(e) = run(dir.path(), mb) {
        eprintln!("snapshot benchmark failed: {e}");
        std::process::exit(1);
    }
}
