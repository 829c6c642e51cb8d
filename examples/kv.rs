//! A tiny replicated key-value store built on walship.
//!
//! The primary turns each `set`/`delete` into one WAL record and returns once
//! the record is committed by the majority; the replica's [`Applier`] applies
//! committed records, in order and each once, to an in-memory map, and reads
//! on the replica go through the replica's read gate, so a halted replica
//! refuses them.
//!
//! The store also supports snapshots: the primary's copy of the map is a
//! [`SnapshotSource`] (`Primary::create_snapshot`), and the replica's applier a
//! [`SnapshotSink`], so a replica whose next record the primary no longer
//! retains installs the primary's snapshot and continues after its boundary.
//!
//! Run it with `cargo run --example kv`. It starts one primary and two
//! replicas in this process on loopback, with fresh certificates in a temp
//! directory, writes some keys, reads them back from a replica and snapshots
//! the primary's map.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use walship_node::primary::{Primary, PrimaryConfig};
use walship_node::replica::{Applier, ApplyError, Replica, ReplicaConfig};
use walship_snapshot::{SnapshotSink, SnapshotSource};
use walship_wal::record::{Lsn, Position};
use walship_wire::TlsFiles;

/// One state change of the store, as stored in a WAL record.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Set { key: String, value: String },
    Delete { key: String },
}

impl Op {
    /// `S<len u32 LE><key><value>` or `D<key>`: simple, bounded, checked on decode.
    fn encode(&self) -> Vec<u8> {
        match self {
            Op::Set { key, value } => {
                let mut out = vec![b'S'];
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(value.as_bytes());
                out
            }
            Op::Delete { key } => {
                let mut out = vec![b'D'];
                out.extend_from_slice(key.as_bytes());
                out
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Op, String> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| e.to_string());
        match bytes.split_first() {
            Some((b'S', rest)) if rest.len() >= 4 => {
                let key_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let rest = &rest[4..];
                if key_len > rest.len() {
                    return Err(format!("key length {key_len} past the record end"));
                }
                let (key, value) = rest.split_at(key_len);
                Ok(Op::Set {
                    key: text(key)?,
                    value: text(value)?,
                })
            }
            Some((b'D', key)) => Ok(Op::Delete { key: text(key)? }),
            _ => Err("not a kv operation".into()),
        }
    }
}

/// The store's state; shared between the applier and readers.
#[derive(Default)]
struct Store {
    map: BTreeMap<String, String>,
    applied: Lsn,
}

impl Store {
    fn apply(&mut self, lsn: Lsn, op: Op) {
        match op {
            Op::Set { key, value } => {
                self.map.insert(key, value);
            }
            Op::Delete { key } => {
                self.map.remove(&key);
            }
        }
        self.applied = lsn;
    }

    /// The snapshot image: every pair as a `Set` op, each prefixed by its length (u32 LE).
    fn write_image(&self, w: &mut dyn Write) -> io::Result<()> {
        for (key, value) in &self.map {
            let op = Op::Set {
                key: key.clone(),
                value: value.clone(),
            }
            .encode();
            w.write_all(&(op.len() as u32).to_le_bytes())?;
            w.write_all(&op)?;
        }
        Ok(())
    }

    /// Parses an image written by [`Store::write_image`].
    fn read_image(mut bytes: &[u8]) -> io::Result<BTreeMap<String, String>> {
        let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let mut map = BTreeMap::new();
        while !bytes.is_empty() {
            if bytes.len() < 4 {
                return Err(bad("truncated length".into()));
            }
            let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            let rest = &bytes[4..];
            if len > rest.len() {
                return Err(bad(format!("entry of {len} bytes past the image end")));
            }
            match Op::decode(&rest[..len]).map_err(bad)? {
                Op::Set { key, value } => {
                    map.insert(key, value);
                }
                Op::Delete { .. } => return Err(bad("a delete in a snapshot image".into())),
            }
            bytes = &rest[len..];
        }
        Ok(map)
    }
}

/// The primary's copy of the store, snapshotted by `Primary::create_snapshot`.
struct KvSource(Arc<Mutex<Store>>);

impl SnapshotSource for KvSource {
    fn write_snapshot(&mut self, w: &mut dyn Write) -> io::Result<Lsn> {
        let s = self
            .0
            .lock()
            .map_err(|_| io::Error::other("store lock poisoned"))?;
        s.write_image(w)?;
        Ok(s.applied)
    }
}

/// The replica side: applies committed records to the map.
struct KvApplier(Arc<Mutex<Store>>);

impl SnapshotSink for KvApplier {
    fn restore_snapshot(&mut self, boundary: Position, r: &mut dyn Read) -> io::Result<()> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)?;
        let map = Store::read_image(&bytes)?;
        let mut s = self
            .0
            .lock()
            .map_err(|_| io::Error::other("store lock poisoned"))?;
        s.map = map;
        s.applied = boundary.lsn;
        Ok(())
    }
}

impl Applier for KvApplier {
    fn applied_lsn(&self) -> Lsn {
        // The map lives in memory, so after a restart nothing is applied yet and
        // the replica replays its committed WAL from the start.
        self.0.lock().map(|s| s.applied).unwrap_or(0)
    }

    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), ApplyError> {
        let op = Op::decode(payload)?;
        let mut s = self.0.lock().map_err(|_| "store lock poisoned")?;
        s.apply(lsn, op);
        Ok(())
    }

    fn snapshot_sink(&mut self) -> Option<&mut dyn SnapshotSink> {
        Some(self)
    }
}

#[tokio::main]
#[allow(dead_code)] // unused when tests/kv_example.rs includes this file as a module
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

/// The whole example; also run by `tests/kv_example.rs`.
pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let nodes = ["kv1", "kv2", "kv3"];
    let certs = walship_wire::certs::generate(&dir.path().join("certs"), &nodes)?;
    let tls = |i: usize| -> TlsFiles { certs.nodes[i].1.clone() };

    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let members = nodes.iter().map(|s| s.to_string()).collect();
    let primary = Arc::new(Primary::open(PrimaryConfig::new(
        "kv1",
        "kv-example",
        dir.path().join("kv1"),
        listen,
        members,
        tls(0),
    ))?);
    let addr = primary.local_addr()?;

    let mut replicas = Vec::new();
    for (i, id) in nodes.iter().enumerate().skip(1) {
        let store = Arc::new(Mutex::new(Store::default()));
        let mut cfg =
            ReplicaConfig::new(*id, "kv-example", dir.path().join(id), addr, "kv1", tls(i));
        cfg.bind_addr = "127.0.0.1:0".parse()?;
        let replica = Replica::open(cfg, KvApplier(Arc::clone(&store)))?;
        replicas.push((replica, store));
    }

    // Writes: each returns once a majority (the primary and one replica) has it durably.
    let ops = [
        Op::Set {
            key: "alice".into(),
            value: "42".into(),
        },
        Op::Set {
            key: "bob".into(),
            value: "7".into(),
        },
        Op::Set {
            key: "carol".into(),
            value: "13".into(),
        },
        Op::Delete { key: "bob".into() },
        Op::Set {
            key: "alice".into(),
            value: "43".into(),
        },
    ];
    // The primary keeps its own copy of the map (committed records only): the
    // image its snapshots are made of.
    let primary_store = Arc::new(Mutex::new(Store::default()));
    let mut last = 0;
    for op in &ops {
        last = primary.append(op.encode()).await?;
        println!("committed lsn {last}: {op:?}");
        primary_store
            .lock()
            .map_err(|_| "store lock poisoned")?
            .apply(last, op.clone());
    }

    // Reads on a replica: wait until it has applied the last commit, then read
    // through the gate (a halted replica would refuse).
    let (replica, store) = &replicas[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.lock().map(|s| s.applied).unwrap_or(0) < last {
        if Instant::now() > deadline {
            return Err(format!("replica did not apply lsn {last} within 10 s").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let view = replica.with_reads(|| store.lock().map(|s| s.map.clone()))?;
    let view = view.map_err(|_| "store lock poisoned")?;
    println!("replica kv2 reads: {view:?}");
    let expected: BTreeMap<String, String> = [("alice", "43"), ("carol", "13")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if view != expected {
        return Err(format!("replica state {view:?} differs from {expected:?}").into());
    }
    println!("status of kv2: {:?}", replica.status().state);

    // A snapshot of the primary's map at the last commit (blocking file I/O).
    let snap = {
        let primary = Arc::clone(&primary);
        let source = Arc::clone(&primary_store);
        tokio::task::spawn_blocking(move || primary.create_snapshot(&mut KvSource(source)))
            .await??
    };
    println!(
        "snapshot at lsn {} (epoch {}), {} bytes: a replica the WAL no longer serves installs it",
        snap.boundary.lsn, snap.boundary.epoch, snap.total_len
    );
    if snap.boundary.lsn != last {
        return Err(format!("snapshot at lsn {} instead of {last}", snap.boundary.lsn).into());
    }

    for (r, _) in replicas {
        r.shutdown().await?;
    }
    if let Ok(p) = Arc::try_unwrap(primary) {
        p.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_round_trip_and_bad_input() {
        for op in [
            Op::Set {
                key: "k".into(),
                value: "v".into(),
            },
            Op::Set {
                key: String::new(),
                value: String::new(),
            },
            Op::Delete { key: "k".into() },
        ] {
            assert_eq!(Op::decode(&op.encode()), Ok(op));
        }
        assert!(Op::decode(b"").is_err());
        assert!(Op::decode(b"S\xff\xff\xff\xffab").is_err());
        assert!(Op::decode(b"X").is_err());
    }

    #[test]
    fn snapshot_image_round_trip_and_restore() {
        let mut store = Store::default();
        store.apply(
            1,
            Op::Set {
                key: "a".into(),
                value: "1".into(),
            },
        );
        store.apply(
            2,
            Op::Set {
                key: "b".into(),
                value: "2".into(),
            },
        );
        store.apply(3, Op::Delete { key: "a".into() });
        let mut image = Vec::new();
        store.write_image(&mut image).expect("write");
        let target = Arc::new(Mutex::new(Store::default()));
        let mut applier = KvApplier(Arc::clone(&target));
        let boundary = Position {
            lsn: 3,
            epoch: 1,
            crc: 0,
        };
        applier
            .restore_snapshot(boundary, &mut image.as_slice())
            .expect("restore");
        let restored = target.lock().expect("lock");
        assert_eq!(restored.map, store.map);
        assert_eq!(restored.applied, 3);
        assert!(Store::read_image(&image[..image.len() - 1]).is_err());
    }
}
