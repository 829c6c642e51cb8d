//! The WAL directory scan: `Wal::open` (and the read-only `inspect`) over a SimStorage
//! directory whose segment files are built from the input: valid segments with chained
//! records (so the scan gets deep), records whose fields lie under a valid crc, then file
//! damage (bit flips, truncation, zeroed ranges, appended garbage), or raw bytes.
//!
//! Checks: no panic; only `Empty` / `Clean` / `TornTailCut` or `WalError::Corruption`;
//! no single allocation larger than the files themselves (a claimed length is never
//! allocated); `inspect` predicts exactly what `open` does; an opened log reads back
//! record by record to its last position; reopening is idempotent; an append after the
//! recovery survives a reopen.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use walship_fuzz::with_alloc_bound;
use walship_wal::record::{compute_crc, encode_record, DEFAULT_MAX_RECORD_BYTES, OFF_FLAGS};
use walship_wal::segment::{
    segment_file_name, SegmentHeader, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    SEG_OFF_CREATED_EPOCH, SEG_OFF_FIRST_LSN, SEG_OFF_GENERATION, SEG_OFF_HEADER_CRC,
    SEG_OFF_HEADER_LEN, SEG_OFF_PREV_CRC, SEG_OFF_PREV_EPOCH, SEG_OFF_PREV_LSN, SEG_OFF_VERSION,
};
use walship_wal::sim::SimStorage;
use walship_wal::{inspect, OpenReport, Position, Storage, StorageFile, Wal, WalError, WalOptions};

/// Bytes of zeros one input may append in total (keeps executions fast).
const MAX_ZEROS: usize = 256 * 1024;

#[derive(Arbitrary, Debug)]
enum Start {
    One,
    Lsn(u64),
    NearMax(u8),
}

#[derive(Arbitrary, Debug)]
enum NameSpec {
    /// `<first_lsn from the header>.wal`
    FromHeader,
    /// `<lsn>.wal` disagreeing (maybe) with the header.
    Lsn(u64),
    /// A name that is not a well-formed segment name.
    Odd(u8),
}

#[derive(Arbitrary, Debug)]
enum HeaderSpec {
    /// Continues the log: first_lsn = last + 1, prev = last record.
    Chained,
    /// Continues the log in another generation.
    Generation(u64),
    /// Arbitrary fields (header crc still valid).
    Fields {
        first_lsn: u64,
        generation: u64,
        created_epoch: u64,
        prev_epoch: u64,
        prev_crc: u32,
    },
}

#[derive(Arbitrary, Debug)]
enum Lie {
    Lsn(u64),
    PrevCrc(u32),
    Epoch(u64),
    Flags(u32),
}

#[derive(Arbitrary, Debug)]
struct RecSpec {
    payload_len: u8,
    fill: u8,
    epoch_step: u8,
    /// A field rewritten after encoding, crc recomputed: passes the crc, fails the chain.
    lie: Option<Lie>,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip {
        bit: u32,
    },
    Xor {
        offset: u32,
        mask: u8,
    },
    Truncate {
        len: u32,
    },
    Zero {
        offset: u32,
        len: u16,
    },
    AppendZeros {
        len: u16,
    },
    AppendBytes {
        bytes: Vec<u8>,
    },
    /// A valid record of `payload_len` after whatever the file holds now.
    AppendRecord {
        lsn: u64,
        payload_len: u8,
    },
    /// Overwrite a u32 (e.g. a payload_len) at `offset`.
    Put32 {
        offset: u32,
        value: u32,
    },
}

#[derive(Arbitrary, Debug)]
struct SegSpec {
    name: NameSpec,
    header: HeaderSpec,
    records: Vec<RecSpec>,
    damage: Vec<Damage>,
    /// Replaces the whole file.
    raw: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    start: Start,
    start_epoch: u8,
    small_max: Option<u16>,
    segments: Vec<SegSpec>,
    append_after: bool,
}

/// The 64 header bytes with a valid header crc, for any field values: unlike
/// `SegmentHeader::encode` (which asserts its invariant, prev.lsn + 1 == first_lsn without
/// wrapping) it can write the headers a damaged or hostile disk holds.
fn encode_header_any(h: &SegmentHeader) -> Vec<u8> {
    let mut b = vec![0u8; SEGMENT_HEADER_LEN];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[SEG_OFF_VERSION..SEG_OFF_VERSION + 2].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    b[SEG_OFF_HEADER_LEN..SEG_OFF_HEADER_LEN + 2]
        .copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
    b[SEG_OFF_FIRST_LSN..SEG_OFF_FIRST_LSN + 8].copy_from_slice(&h.first_lsn.to_le_bytes());
    b[SEG_OFF_GENERATION..SEG_OFF_GENERATION + 8].copy_from_slice(&h.generation.to_le_bytes());
    b[SEG_OFF_CREATED_EPOCH..SEG_OFF_CREATED_EPOCH + 8]
        .copy_from_slice(&h.created_epoch.to_le_bytes());
    b[SEG_OFF_PREV_LSN..SEG_OFF_PREV_LSN + 8].copy_from_slice(&h.prev.lsn.to_le_bytes());
    b[SEG_OFF_PREV_EPOCH..SEG_OFF_PREV_EPOCH + 8].copy_from_slice(&h.prev.epoch.to_le_bytes());
    b[SEG_OFF_PREV_CRC..SEG_OFF_PREV_CRC + 4].copy_from_slice(&h.prev.crc.to_le_bytes());
    let crc = crc32c::crc32c(&b[..SEG_OFF_HEADER_CRC]);
    b[SEG_OFF_HEADER_CRC..].copy_from_slice(&crc.to_le_bytes());
    if h.prev.lsn.checked_add(1) == Some(h.first_lsn) {
        assert_eq!(
            b,
            h.encode().to_vec(),
            "encode_header_any drifted from SegmentHeader::encode"
        );
    }
    b
}

fn build_segment(spec: &SegSpec, cur: &mut Position, zeros: &mut usize) -> (String, Vec<u8>) {
    let header = match spec.header {
        HeaderSpec::Chained => SegmentHeader {
            first_lsn: cur.lsn.wrapping_add(1),
            generation: 1,
            created_epoch: cur.epoch,
            prev: *cur,
        },
        HeaderSpec::Generation(generation) => SegmentHeader {
            first_lsn: cur.lsn.wrapping_add(1),
            generation,
            created_epoch: cur.epoch,
            prev: *cur,
        },
        HeaderSpec::Fields {
            first_lsn,
            generation,
            created_epoch,
            prev_epoch,
            prev_crc,
        } => SegmentHeader {
            first_lsn,
            generation,
            created_epoch,
            prev: Position {
                lsn: first_lsn.wrapping_sub(1),
                epoch: prev_epoch,
                crc: prev_crc,
            },
        },
    };
    *cur = header.prev;
    let mut bytes = encode_header_any(&header);
    for r in &spec.records {
        let start = bytes.len();
        let payload = vec![r.fill; usize::from(r.payload_len)];
        let epoch = cur.epoch.saturating_add(u64::from(r.epoch_step % 4));
        let pos = encode_record(
            cur.lsn.wrapping_add(1),
            epoch,
            cur.crc,
            &payload,
            &mut bytes,
        );
        *cur = pos;
        if let Some(lie) = &r.lie {
            let rec = &mut bytes[start..];
            match *lie {
                Lie::Lsn(v) => rec[8..16].copy_from_slice(&v.to_le_bytes()),
                Lie::PrevCrc(v) => rec[24..28].copy_from_slice(&v.to_le_bytes()),
                Lie::Epoch(v) => rec[16..24].copy_from_slice(&v.to_le_bytes()),
                Lie::Flags(v) => rec[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&v.to_le_bytes()),
            }
            let crc = compute_crc(rec);
            rec[0..4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    if let Some(raw) = &spec.raw {
        bytes = raw.clone();
    }
    for d in &spec.damage {
        let n = bytes.len();
        match *d {
            Damage::Flip { bit } if n > 0 => {
                let bit = bit as usize % (n * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            Damage::Xor { offset, mask } if n > 0 => bytes[offset as usize % n] ^= mask,
            Damage::Truncate { len } if n > 0 => bytes.truncate(len as usize % n),
            Damage::Zero { offset, len } if n > 0 => {
                let from = offset as usize % n;
                let to = (from + usize::from(len)).min(n);
                bytes[from..to].fill(0);
            }
            Damage::AppendZeros { len } => {
                let len = usize::from(len).min(MAX_ZEROS - *zeros);
                *zeros += len;
                bytes.resize(n + len, 0);
            }
            Damage::AppendBytes { bytes: ref extra } => bytes.extend_from_slice(extra),
            Damage::AppendRecord { lsn, payload_len } => {
                let payload = vec![0xA5; usize::from(payload_len)];
                encode_record(lsn, cur.epoch, cur.crc, &payload, &mut bytes);
            }
            Damage::Put32 { offset, value } if n >= 4 => {
                let at = offset as usize % (n - 3);
                bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            _ => {}
        }
    }
    let name = match spec.name {
        NameSpec::FromHeader => segment_file_name(header.first_lsn),
        NameSpec::Lsn(l) => segment_file_name(l),
        NameSpec::Odd(k) => match k % 6 {
            0 => "00000000000000000000.wal".to_string(),
            1 => "1.wal".to_string(),
            2 => format!("{}.tmp", segment_file_name(header.first_lsn)),
            3 => "0000000000000000000x.wal".to_string(),
            4 => "99999999999999999999.wal".to_string(),
            _ => "notes.txt".to_string(),
        },
    };
    (name, bytes)
}

fn write_file(s: &SimStorage, path: &Path, bytes: &[u8]) {
    let f = s.open(path, true).expect("sim open");
    f.set_len(0).expect("sim set_len");
    f.write_at(0, bytes).expect("sim write");
    f.sync_data().expect("sim sync");
}

/// The report `open` must give for what `inspect` saw.
fn expected_report(last: Position, torn: Option<(PathBuf, u64, u64)>) -> OpenReport {
    match torn {
        Some((segment, offset, bytes_cut)) => OpenReport::TornTailCut {
            segment,
            offset,
            bytes_cut,
            last,
        },
        None if last == Position::ZERO => OpenReport::Empty,
        None => OpenReport::Clean { last },
    }
}

fn open(
    s: &SimStorage,
    dir: &Path,
    opts: WalOptions,
) -> Result<(Wal<SimStorage>, OpenReport), WalError> {
    Wal::open(s.clone(), dir, opts)
}

fuzz_target!(|input: Input| {
    if input.segments.len() > 6 {
        return;
    }
    let s = SimStorage::new(0x5eed);
    let dir = Path::new("/node/wal");
    s.create_dir_all(dir).expect("sim mkdir");
    let mut cur = match input.start {
        Start::One => Position::ZERO,
        Start::Lsn(l) => Position {
            lsn: l,
            epoch: 1,
            crc: 0,
        },
        Start::NearMax(k) => Position {
            lsn: u64::MAX - u64::from(k % 4),
            epoch: 1,
            crc: 0,
        },
    };
    cur.epoch = cur.epoch.max(u64::from(input.start_epoch));
    let mut zeros = 0;
    let mut total = 0usize;
    for spec in &input.segments {
        let (name, bytes) = build_segment(spec, &mut cur, &mut zeros);
        total += bytes.len();
        write_file(&s, &dir.join(name), &bytes);
    }
    let max_record_bytes = input.small_max.map_or(DEFAULT_MAX_RECORD_BYTES, u32::from);
    let opts = WalOptions {
        segment_size_bytes: 4096,
        max_record_bytes,
        epoch: 1,
    };
    // The files are mapped (copied in the simulation) whole; nothing else may come close
    // to a claimed length such as a 4 MiB payload_len in a 100-byte file.
    let bound = 2 * total + 64 * 1024;

    let inspected = with_alloc_bound("inspect", bound, || inspect(&s, dir, max_record_bytes));
    let opened = with_alloc_bound("Wal::open", bound, || open(&s, dir, opts));
    let (wal, report) = match (inspected, opened) {
        (Err(WalError::Corruption(a)), Err(WalError::Corruption(b))) => {
            assert_eq!(a, b, "inspect and open disagree on the corruption");
            // Refused: must stay refused (open changed nothing that makes it pass).
            match open(&s, dir, opts) {
                Err(WalError::Corruption(c)) => assert_eq!(c, b),
                other => panic!("second open after corruption: {:?}", other.map(|(_, r)| r)),
            }
            return;
        }
        (Ok(ins), Ok((wal, report))) => {
            assert_eq!(report, expected_report(ins.last, ins.torn_tail.clone()));
            assert_eq!(wal.last(), ins.last);
            assert_eq!(wal.base(), ins.base);
            (wal, report)
        }
        (i, o) => panic!(
            "inspect and open disagree or fail unexpectedly: inspect {:?}, open {:?}",
            i.map(|x| x.last),
            o.map(|(_, r)| r)
        ),
    };
    let last = wal.last();
    let base = wal.base();
    assert!(last.lsn >= base.lsn);
    assert_eq!(wal.durable_lsn(), last.lsn);

    // Every retained record reads back verified, densely, ending at last().
    if last.lsn > base.lsn {
        let mut reader = wal.reader(base.lsn + 1).expect("reader over an opened log");
        let mut prev = base;
        let mut n = 0u64;
        while let Some(r) = reader.next_record() {
            let rec = r.expect("a record the open scan verified must read back");
            let pos = rec.view().position();
            assert_eq!(pos.lsn, prev.lsn + 1);
            assert_eq!(rec.view().prev_crc(), prev.crc);
            prev = pos;
            n += 1;
            assert!(n <= last.lsn - base.lsn, "reader runs past last()");
        }
        assert_eq!(prev, last, "reader ends before last()");
        assert_eq!(wal.position_at(last.lsn).expect("position_at"), Some(last));
    }
    drop(wal);

    // Opening again is idempotent: the cut (if any) is durable, nothing else changes.
    let again = open(&s, dir, opts).map(|(w, r)| (w.last(), r));
    let want = if last == Position::ZERO {
        OpenReport::Empty
    } else {
        OpenReport::Clean { last }
    };
    match again {
        Ok((l, r)) => {
            assert_eq!(l, last);
            assert_eq!(r, want, "first open reported {report:?}");
        }
        Err(e) => panic!("second open failed after a successful open: {e}"),
    }

    // Nothing follows lsn u64::MAX (wal-1): an append there is refused before writing.
    if input.append_after && last.lsn == u64::MAX {
        let (mut wal, _) = open(&s, dir, opts).expect("third open");
        assert!(matches!(
            wal.append(b"x"),
            Err(WalError::LsnExhausted { .. })
        ));
        return;
    }
    // A record appended after recovery survives a reopen (the scan left a sound tail).
    if input.append_after {
        let (mut wal, _) = open(&s, dir, opts).expect("third open");
        // A payload within max_record_bytes (which the input may have set to 0).
        let payload = &b"after-recovery"[..(max_record_bytes as usize).min(14)];
        match wal.append(payload) {
            Ok(lsn) => {
                assert_eq!(lsn, last.lsn + 1);
                wal.sync().expect("sim sync");
                let new_last = wal.last();
                drop(wal);
                let (w, r) = open(&s, dir, opts).expect("open after append");
                assert_eq!(r, OpenReport::Clean { last: new_last });
                assert_eq!(w.last(), new_last);
            }
            // The log's epoch may be above the WAL's configured epoch: the WAL adopts
            // max(opts.epoch, last.epoch), so this cannot happen; anything else is a bug.
            Err(e) => panic!("append after recovery failed: {e}"),
        }
    }
});
