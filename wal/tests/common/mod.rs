//! Helpers shared by the walship-wal integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use walship_wal::sim::SimStorage;
use walship_wal::{OpenReport, Position, Storage, Wal, WalError, WalOptions};

/// The WAL directory used by simulated tests.
pub fn wal_dir() -> PathBuf {
    PathBuf::from("/node/wal")
}

/// Small segments so tests roll often.
pub fn small_opts() -> WalOptions {
    WalOptions {
        segment_size_bytes: 1024,
        max_record_bytes: 4096,
        epoch: 1,
    }
}

/// Deterministic payload for lsn `i`.
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 200) as usize;
    (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
}

/// Opens, panicking on error (tests only).
pub fn open<S: Storage>(s: &S, dir: &Path, opts: WalOptions) -> (Wal<S>, OpenReport) {
    match Wal::open(s.clone(), dir, opts) {
        Ok(x) => x,
        Err(e) => panic!("open failed: {e}"),
    }
}

/// Opens and expects a corruption error.
pub fn open_err<S: Storage>(s: &S, dir: &Path, opts: WalOptions) -> WalError {
    match Wal::open(s.clone(), dir, opts) {
        Ok((w, r)) => panic!("open succeeded unexpectedly: {r:?}, last {:?}", w.last()),
        Err(e) => e,
    }
}

/// A simulated WAL with `n` records appended and synced.
pub fn sim_wal_with(n: u64, opts: WalOptions) -> (SimStorage, Wal<SimStorage>, Vec<Position>) {
    let s = SimStorage::new(7);
    let (mut w, _) = open(&s, &wal_dir(), opts);
    let mut positions = Vec::new();
    for i in 1..=n {
        w.append(&payload(i)).expect("append");
        positions.push(w.last());
    }
    w.sync().expect("sync");
    (s, w, positions)
}

/// Reads every record from lsn 1, verifying payloads, returning positions.
pub fn read_all<S: Storage>(w: &Wal<S>) -> Vec<Position> {
    let mut r = w.reader(0).expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record() {
        let rec = rec.expect("record");
        assert_eq!(
            rec.payload(),
            &payload(rec.lsn())[..],
            "payload of lsn {}",
            rec.lsn()
        );
        out.push(rec.position());
    }
    out
}

/// Where one record is stored.
#[derive(Clone, Debug)]
pub struct Placed {
    pub lsn: u64,
    pub segment: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub position: Position,
}

/// Where every retained record is stored (records are back to back after the 64-byte segment header).
pub fn layout<S: Storage>(w: &Wal<S>) -> Vec<Placed> {
    let mut out = Vec::new();
    let mut r = w.reader(0).expect("reader");
    for seg in w.segments() {
        let mut off = walship_wal::segment::SEGMENT_HEADER_LEN as u64;
        for _ in seg.first_lsn..=seg.last.lsn {
            let rec = r.next_record().expect("record").expect("valid");
            out.push(Placed {
                lsn: rec.lsn(),
                segment: seg.path.clone(),
                offset: off,
                len: rec.bytes().len() as u64,
                position: rec.position(),
            });
            off += rec.bytes().len() as u64;
        }
        assert_eq!(off, seg.len_bytes);
    }
    out
}
