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
    sim_wal_with_storage(&SimStorage::new(7), n, opts)
}

/// Like [`sim_wal_with`] on a given storage.
pub fn sim_wal_with_storage(
    s: &SimStorage,
    n: u64,
    opts: WalOptions,
) -> (SimStorage, Wal<SimStorage>, Vec<Position>) {
    let s = s.clone();
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

/// Rewrites every segment of the (closed) log in `dir` as a format version 1
/// segment, exactly as a build before preallocation left it: the header says
/// version 1 and the file ends right after its last record (the zero tail of
/// the preallocated version 2 file is dropped). Synced, so a crash keeps it.
pub fn downgrade_to_v1(s: &SimStorage, dir: &Path) {
    use walship_wal::segment::{SegmentHeader, SEGMENT_FORMAT_VERSION_1, SEGMENT_HEADER_LEN};
    use walship_wal::{decode_record, StorageFile};
    for name in s.list(dir).expect("list") {
        let path = dir.join(&name);
        let bytes = s.contents(&path).expect("contents");
        let header = SegmentHeader::decode(&path, &bytes).expect("header");
        let mut end = SEGMENT_HEADER_LEN;
        while let Ok(v) = decode_record(&bytes[end..], u32::MAX) {
            end += v.bytes().len();
        }
        let mut out = header.encode_version(SEGMENT_FORMAT_VERSION_1).to_vec();
        out.extend_from_slice(&bytes[SEGMENT_HEADER_LEN..end]);
        let f = s.open(&path, false).expect("open");
        f.set_len(0).expect("set_len");
        f.write_at(0, &out).expect("write");
        f.sync_data().expect("sync");
    }
}

/// A simulated log of `n` synced records (see [`sim_wal_with`]) rewritten as
/// format version 1 segments (see [`downgrade_to_v1`]), closed.
pub fn sim_v1_log_with(n: u64, opts: WalOptions) -> (SimStorage, Vec<Position>) {
    let (s, w, positions) = sim_wal_with(n, opts);
    drop(w);
    downgrade_to_v1(&s, &wal_dir());
    (s, positions)
}
