//! FM-X.13 at the library level (no network): a replica started empty
//! against a primary whose WAL was truncated behind a snapshot receives the
//! snapshot (SnapshotSender -> SnapshotReceiver), installs it, continues with
//! the records after the boundary, and ends byte-identical in applied state;
//! after a crash it rebuilds the same state from snapshot + WAL.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use common::*;
use walship_snapshot::{
    check_first_after, Limits, ReceiveProgress, RecoveryReport, SnapshotReceiver, SnapshotSink,
    SnapshotSource, SnapshotStore,
};
use walship_wal::sim::SimStorage;
use walship_wal::{Lsn, Position, Storage, Wal};

/// The tiny key-value embedder: records are `key=value`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Kv {
    applied: Lsn,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Kv {
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) {
        assert_eq!(lsn, self.applied + 1, "applied in order, each once");
        let eq = payload.iter().position(|&b| b == b'=').expect("key=value");
        self.map
            .insert(payload[..eq].to_vec(), payload[eq + 1..].to_vec());
        self.applied = lsn;
    }
}

const MAX_FIELD: u32 = 1 << 20;

impl SnapshotSource for Kv {
    fn write_snapshot(&mut self, w: &mut dyn io::Write) -> io::Result<Lsn> {
        w.write_all(&(self.map.len() as u64).to_le_bytes())?;
        for (k, v) in &self.map {
            for field in [k, v] {
                w.write_all(&(field.len() as u32).to_le_bytes())?;
                w.write_all(field)?;
            }
        }
        Ok(self.applied)
    }
}

fn read_field(r: &mut dyn io::Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FIELD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "field too long"));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

impl SnapshotSink for Kv {
    fn restore_snapshot(&mut self, boundary: Position, r: &mut dyn io::Read) -> io::Result<()> {
        let mut n = [0u8; 8];
        r.read_exact(&mut n)?;
        let mut map = BTreeMap::new();
        for _ in 0..u64::from_le_bytes(n) {
            let k = read_field(r)?;
            let v = read_field(r)?;
            map.insert(k, v);
        }
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)?; // also runs the payload crc check at the end
        if !rest.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "trailing bytes"));
        }
        self.map = map;
        self.applied = boundary.lsn;
        Ok(())
    }
}

fn kv_payload(i: u64) -> Vec<u8> {
    format!("k{}=v{}-{}", i % 17, i, "x".repeat((i % 40) as usize)).into_bytes()
}

fn apply_all<S: Storage>(wal: &Wal<S>, kv: &mut Kv, up_to: Lsn) {
    if up_to <= kv.applied {
        return;
    }
    let mut r = wal.reader(kv.applied + 1).expect("reader");
    while kv.applied < up_to {
        let rec = r.next_record().expect("record").expect("valid");
        kv.apply(rec.lsn(), rec.payload());
    }
}

#[test]
fn fm_x_13_empty_replica_catches_up_through_a_snapshot_and_matches_the_primary() {
    // The primary: 300 records, snapshot at 180, WAL truncated behind it.
    let ps = SimStorage::new(1);
    let (mut pwal, _) = Wal::open(ps.clone(), Path::new("/p/wal"), opts(1)).expect("wal");
    for i in 1..=300 {
        pwal.append(&kv_payload(i)).expect("append");
    }
    pwal.sync().expect("sync");
    let mut pkv = Kv::default();
    apply_all(&pwal, &mut pkv, 180);
    let (pstore, _) = SnapshotStore::open(ps.clone(), Path::new("/p/snapshots"), Limits::default())
        .expect("store");
    let snap = pstore
        .create(256, &mut pkv, &mut |lsn| {
            Ok(pwal.position_at(lsn).expect("pos").expect("retained"))
        })
        .expect("create");
    apply_all(&pwal, &mut pkv, 300);
    pwal.truncate_front(snap.boundary.lsn + 1)
        .expect("truncate");
    assert!(pwal.first_lsn() > 1, "the primary no longer retains lsn 1");
    assert!(pwal.first_lsn() <= snap.boundary.lsn + 1);

    // The replica: empty. Its Hello.last = ZERO is not retained: snapshot first.
    let rs = SimStorage::new(2);
    rs.create_dir_all(Path::new("/node")).expect("mkdir");
    rs.sync_dir(Path::new("/")).expect("sync");
    let (mut rwal, _) = Wal::open(rs.clone(), &wal_dir(), opts(1)).expect("wal");
    let (rstore, _) =
        SnapshotStore::open(rs.clone(), &snap_dir(), Limits::default()).expect("store");
    // (Note: `position_at(0)` answers the position before the first retained
    // record, so the primary must test retention by lsn, not by that answer.)
    assert!(rwal.last().lsn + 1 < pwal.first_lsn(), "not retained");

    let sender = pstore.sender(&snap).expect("sender");
    let mut receiver = SnapshotReceiver::new(rstore.clone());
    let mut verified = None;
    for item in sender {
        match receiver
            .on_item(&item.expect("primary's chunk verifies"))
            .expect("receive")
        {
            ReceiveProgress::Complete(v) => verified = Some(v),
            ReceiveProgress::Started { .. } | ReceiveProgress::Chunk { .. } => {}
        }
    }
    let outcome = verified
        .expect("complete")
        .commit(&mut rwal, None)
        .expect("install");
    let b = outcome.installed.boundary;
    assert_eq!(b, snap.boundary);
    let mut rkv = Kv::default();
    rstore
        .restore(&outcome.installed, &mut rkv)
        .expect("restore");
    assert_eq!(rkv.applied, b.lsn);

    // Reconnect: Hello.last = boundary, which the primary proves and streams after.
    assert_eq!(pwal.position_at(b.lsn).expect("pos"), Some(b));
    let mut reader = pwal.reader(b.lsn + 1).expect("reader");
    let mut first = true;
    while let Some(batch) = reader.next_batch(4096) {
        let batch = batch.expect("batch");
        if first {
            let h = batch.records().next().expect("one record").header();
            check_first_after(b, &h).expect("first record chains to the boundary");
            first = false;
        }
        rwal.append_verified_batch(batch.bytes()).expect("append");
    }
    rwal.sync().expect("sync");
    apply_all(&rwal, &mut rkv, rwal.last().lsn);
    assert_eq!(rwal.last(), pwal.last());
    assert_eq!(rkv, pkv, "applied state byte-identical to the primary's");

    // Crash and restart: snapshot + WAL rebuild the same state.
    drop(rwal);
    rs.crash();
    let (rstore, _) =
        SnapshotStore::open(rs.clone(), &snap_dir(), Limits::default()).expect("store");
    let (mut rwal, _) = Wal::open(rs.clone(), &wal_dir(), opts(1)).expect("wal");
    assert_eq!(
        rstore.recover(&mut rwal).expect("recover"),
        RecoveryReport::Consistent { boundary: b }
    );
    let mut rkv2 = Kv::default();
    assert_eq!(
        rstore
            .restore_if_behind(rkv2.applied, &mut rkv2)
            .expect("restore"),
        Some(b)
    );
    apply_all(&rwal, &mut rkv2, rwal.last().lsn);
    assert_eq!(rkv2, pkv);
    // An embedder already past the boundary is left alone.
    assert_eq!(
        rstore
            .restore_if_behind(rkv2.applied, &mut rkv2)
            .expect("no-op"),
        None
    );
}

#[test]
fn fm_x_8_receiver_discards_partial_snapshot_when_the_session_ends_and_retries() {
    let s = primary_snapshot(
        Position {
            lsn: 4,
            epoch: 1,
            crc: 4,
        },
        state_bytes(5000, 1),
        512,
    );
    let rs = SimStorage::new(3);
    let (store, _) =
        SnapshotStore::open(rs.clone(), &snap_dir(), Limits::default()).expect("store");
    let mut receiver = SnapshotReceiver::new(store.clone());
    let items: Vec<_> = std::iter::once(walship_snapshot::TransferItem::Offer(s.offer.clone()))
        .chain(
            s.chunks
                .iter()
                .cloned()
                .map(walship_snapshot::TransferItem::Chunk),
        )
        .chain(std::iter::once(walship_snapshot::TransferItem::End(s.end)))
        .collect();
    for item in &items[..5] {
        receiver.on_item(item).expect("receive");
    }
    assert!(receiver.in_progress());
    receiver.session_ended().expect("discard");
    assert!(!receiver.in_progress());
    assert!(tmp_entries(&rs, &snap_dir()).is_empty());
    // A chunk without an offer (a new session that skipped the offer) is invalid.
    let e = receiver.on_item(&items[1]).expect_err("no offer");
    assert_eq!(e.class(), walship_snapshot::FailureClass::Invalid);
    // The retry completes.
    let (mut wal, _) = Wal::open(rs.clone(), &wal_dir(), opts(1)).expect("wal");
    let mut done = None;
    for item in &items {
        if let ReceiveProgress::Complete(v) = receiver.on_item(item).expect("receive") {
            done = Some(v);
        }
    }
    done.expect("complete")
        .commit(&mut wal, None)
        .expect("install");
    assert_eq!(wal.base(), s.offer.boundary);
}
