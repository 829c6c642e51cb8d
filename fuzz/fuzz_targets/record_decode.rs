//! `walship_wal::record::decode_record` on arbitrary bytes with an arbitrary bound.
//!
//! Input: 4 bytes of `max_record_bytes` (LE), then the buffer. Checks: no panic, no
//! allocation at all, every error variant states facts true of the buffer, and every
//! accepted record is exactly what `encode_record` would write for its fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walship_fuzz::with_alloc_bound;
use walship_wal::record::DEFAULT_MAX_RECORD_BYTES;
use walship_wal::record::{
    compute_crc, decode_record, encode_record, RecordError, RecordHeader, RECORD_HEADER_LEN,
};

fn check(buf: &[u8], max: u32) {
    let r = with_alloc_bound("decode_record", 0, || decode_record(buf, max));
    let header = RecordHeader::parse(buf);
    match r {
        Ok(view) => {
            let h = header.expect("accepted a record shorter than a header");
            assert!(
                h.payload_len <= max,
                "accepted payload_len {} > max {max}",
                h.payload_len
            );
            assert_eq!(
                view.bytes(),
                &buf[..RECORD_HEADER_LEN + h.payload_len as usize]
            );
            assert_eq!(view.header(), h);
            assert_eq!(h.flags, 0);
            assert_eq!(compute_crc(view.bytes()), view.crc());
            assert_eq!(view.payload(), &view.bytes()[RECORD_HEADER_LEN..]);
            assert_eq!(view.position(), h.position());
            let mut again = Vec::new();
            let pos = encode_record(
                view.lsn(),
                view.epoch(),
                view.prev_crc(),
                view.payload(),
                &mut again,
            );
            assert_eq!(
                again,
                view.bytes(),
                "accepted bytes differ from their canonical encoding"
            );
            assert_eq!(pos, view.position());
        }
        Err(RecordError::Truncated { need, have }) => {
            assert_eq!(have, buf.len());
            assert!(need > have);
            match header {
                None => assert_eq!(need, RECORD_HEADER_LEN),
                Some(h) => {
                    assert!(h.payload_len <= max, "length checked before truncation");
                    assert_eq!(need, h.record_len());
                }
            }
        }
        Err(RecordError::TooLarge { len, max: m }) => {
            let h = header.expect("TooLarge without a header");
            assert_eq!((len, m), (h.payload_len, max));
            assert!(len > max);
        }
        Err(RecordError::Checksum { stored, computed }) => {
            let h = header.expect("Checksum without a header");
            assert_eq!(stored, h.crc);
            assert_ne!(stored, computed);
            assert_eq!(computed, compute_crc(&buf[..h.record_len()]));
        }
        Err(RecordError::BadFlags { found }) => {
            let h = header.expect("BadFlags without a header");
            assert_eq!(found, h.flags);
            assert_ne!(found, 0);
            assert_eq!(
                h.crc,
                compute_crc(&buf[..h.record_len()]),
                "flags checked after crc"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let max = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let buf = &data[4..];
    check(buf, max);
    // The same bytes under the bounds production uses and the loosest one: a record
    // accepted under a smaller bound is accepted, identically, under a larger one.
    let small = decode_record(buf, max).ok();
    for m in [DEFAULT_MAX_RECORD_BYTES, u32::MAX] {
        check(buf, m);
        if let Some(v) = small {
            if m >= max {
                assert_eq!(decode_record(buf, m).ok(), Some(v));
            }
        }
    }
});
