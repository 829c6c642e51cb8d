//! Snapshot files (`walship-snapshot`): `SnapshotHeader::decode`, `ChunkHeader::decode`,
//! `SnapshotTrailer::decode`, `SnapshotOffer::validate` and `SnapshotReader` (open, chunk,
//! verify, payload reader) on raw bytes, or on a valid file written by `SnapshotWriter` and
//! then damaged.
//!
//! Checks: no panic; no allocation above the file size (a claimed chunk size or total
//! length is never allocated); accepted headers/trailers are their canonical encoding; a
//! snapshot that opens and verifies reads back exactly `total_len` payload bytes, and the
//! payload reader never succeeds on one that does not verify; a written snapshot reads back
//! its payload and boundary; a damaged one never opens AND verifies.
#![no_main]

use std::io::Read;
use std::path::Path;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use walship_fuzz::with_alloc_bound;
use walship_snapshot::format::{ChunkHeader, CHUNK_HEADER_LEN, HEADER_LEN, TRAILER_LEN};
use walship_snapshot::{Limits, SnapshotHeader, SnapshotReader, SnapshotTrailer, SnapshotWriter};
use walship_wal::sim::SimStorage;
use walship_wal::{Mapping, Position, Storage};

#[derive(Arbitrary, Debug)]
enum LimitSel {
    Default,
    Custom {
        max_total_bytes: u64,
        max_chunk_size_bytes: u32,
    },
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip { bit: u32 },
    Xor { offset: u32, mask: u8 },
    Truncate { len: u32 },
    Append { bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
enum Source {
    Raw(Vec<u8>),
    Written {
        chunk_size: u16,
        payload: Vec<u8>,
        boundary: (u64, u64, u32),
        damage: Vec<Damage>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    limits: LimitSel,
    source: Source,
    expect_boundary: bool,
}

fn written(chunk_size: u16, payload: &[u8], boundary: Position) -> Vec<u8> {
    let s = SimStorage::new(3);
    let path = Path::new("/snap");
    let file = s.open(path, true).expect("sim open");
    let chunk = u32::from(chunk_size).max(1);
    let mut w = SnapshotWriter::new(file, path, chunk, &Limits::default()).expect("writer");
    w.write_payload(payload).expect("write payload");
    w.finish(boundary).expect("finish");
    s.contents(path).expect("sim contents")
}

fuzz_target!(|input: Input| {
    let limits = match input.limits {
        LimitSel::Default => Limits::default(),
        LimitSel::Custom {
            max_total_bytes,
            max_chunk_size_bytes,
        } => Limits {
            max_total_bytes,
            max_chunk_size_bytes,
        },
    };
    let mut original = None;
    let bytes = match &input.source {
        Source::Raw(b) => b.clone(),
        Source::Written {
            chunk_size,
            payload,
            boundary,
            damage,
        } => {
            if payload.len() > 64 * 1024 {
                return;
            }
            let boundary = Position {
                lsn: boundary.0,
                epoch: boundary.1,
                crc: boundary.2,
            };
            let clean = written(*chunk_size, payload, boundary);
            let mut b = clean.clone();
            for d in damage {
                let n = b.len();
                match *d {
                    Damage::Flip { bit } if n > 0 => {
                        let bit = bit as usize % (n * 8);
                        b[bit / 8] ^= 1 << (bit % 8);
                    }
                    Damage::Xor { offset, mask } if n > 0 => b[offset as usize % n] ^= mask,
                    Damage::Truncate { len } if n > 0 => b.truncate(len as usize % n),
                    Damage::Append { ref bytes } => b.extend_from_slice(bytes),
                    _ => {}
                }
            }
            original = Some((clean, payload.clone(), boundary));
            b
        }
    };
    let bound = 2 * bytes.len() + 64 * 1024;

    let header = with_alloc_bound("SnapshotHeader::decode", 4096, || {
        SnapshotHeader::decode(&bytes, &limits)
    });
    if let Ok(h) = header {
        assert_eq!(
            &h.encode()[..],
            &bytes[..HEADER_LEN],
            "accepted a non-canonical header"
        );
        assert!(h.chunk_size_bytes >= 1 && h.chunk_size_bytes <= limits.chunk_size_bound());
        assert!(h.total_len <= limits.max_total_bytes);
    }
    if let Ok(t) = SnapshotTrailer::decode(&bytes) {
        assert_eq!(&t.encode()[..], &bytes[..TRAILER_LEN]);
    }
    if let Ok(c) = ChunkHeader::decode(&bytes) {
        assert_eq!(&c.encode()[..], &bytes[..CHUNK_HEADER_LEN]);
    }

    let expected = match (&original, input.expect_boundary) {
        (Some((_, _, b)), true) => Some(*b),
        _ => None,
    };
    let map = Mapping::from_vec(bytes.clone());
    let opened = with_alloc_bound("SnapshotReader::open", bound, || {
        SnapshotReader::open(map, &limits, expected)
    });
    let mut accepted = None;
    if let Ok(r) = &opened {
        assert_eq!(
            Ok(*r.header()),
            header,
            "open accepted a header decode rejects"
        );
        assert_eq!(r.offer().validate(&limits), Ok(*r.header()));
        let count = r.header().chunk_count();
        // Chunk access by index: never a panic, verified or an error.
        for i in 0..count.min(64) {
            let _ = with_alloc_bound("SnapshotReader::chunk", bound, || {
                r.chunk(i).map(|(c, _)| c)
            });
        }
        let verified = with_alloc_bound("SnapshotReader::verify", bound, || r.verify());
        let mut out = Vec::new();
        let read = with_alloc_bound(
            "PayloadReader",
            bound + r.header().chunk_size_bytes as usize,
            || r.payload_reader().read_to_end(&mut out),
        );
        match (&verified, &read) {
            (Ok(()), Ok(n)) => {
                assert_eq!(*n as u64, r.header().total_len);
                accepted = Some((out, r.boundary()));
            }
            (Ok(()), Err(e)) => panic!("verified snapshot's payload failed to read: {e}"),
            (Err(_), Ok(_)) => panic!("payload reader succeeded on a snapshot that fails verify"),
            (Err(_), Err(_)) => {}
        }
    }

    if let Some((clean, payload, boundary)) = original {
        if let LimitSel::Default = input.limits {
            if bytes == clean {
                let (out, b) = accepted.expect("a freshly written snapshot must open and verify");
                assert_eq!(out, payload);
                assert_eq!(b, boundary);
            } else {
                assert!(
                    accepted.is_none(),
                    "a damaged snapshot opened and verified ({} -> {} bytes)",
                    clean.len(),
                    bytes.len()
                );
            }
        }
    }
});
