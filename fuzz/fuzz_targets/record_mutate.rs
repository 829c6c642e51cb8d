//! Structured: encode a valid record, damage its bytes, decode. The decoder must never
//! accept a damaged record as a valid record with different content (the crc must catch
//! every change that leaves the stored crc in place), must accept the undamaged record
//! (trailing bytes ignored), and must never panic.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use walship_wal::record::{decode_record, encode_record, RECORD_HEADER_LEN};

#[derive(Arbitrary, Debug)]
enum Damage {
    /// XOR `mask` into the byte at `offset` (modulo the length).
    Xor { offset: u16, mask: u8 },
    /// Flip one bit.
    Flip { bit: u32 },
    /// Overwrite 4 bytes at `offset` with `value` (LE): aims at the u32 fields.
    Put32 { offset: u8, value: u32 },
    /// Cut the buffer to `len` bytes (modulo the length).
    Truncate { len: u16 },
    /// Remove the byte at `offset` (shifts everything after it).
    Remove { offset: u16 },
    /// Insert a byte at `offset`.
    Insert { offset: u16, byte: u8 },
    /// Append bytes (trailing bytes are not part of the record).
    Append { bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    lsn: u64,
    epoch: u64,
    prev_crc: u32,
    payload: Vec<u8>,
    slack: u16,
    damage: Vec<Damage>,
}

fn apply(buf: &mut Vec<u8>, d: &Damage) {
    let n = buf.len();
    match *d {
        Damage::Xor { offset, mask } if n > 0 => buf[offset as usize % n] ^= mask,
        Damage::Flip { bit } if n > 0 => {
            let bit = bit as usize % (n * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
        }
        Damage::Put32 { offset, value } if n >= 4 => {
            let at = offset as usize % (n - 3);
            buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        Damage::Truncate { len } if n > 0 => buf.truncate(len as usize % n),
        Damage::Remove { offset } if n > 0 => {
            buf.remove(offset as usize % n);
        }
        Damage::Insert { offset, byte } => buf.insert(offset as usize % (n + 1), byte),
        Damage::Append { ref bytes } => buf.extend_from_slice(bytes),
        _ => {}
    }
}

fuzz_target!(|input: Input| {
    let mut original = Vec::new();
    let pos = encode_record(
        input.lsn,
        input.epoch,
        input.prev_crc,
        &input.payload,
        &mut original,
    );
    let len = input.payload.len() as u32;
    // A bound at or above the payload length: the record is valid as encoded.
    let max = len.saturating_add(u32::from(input.slack));
    let view = decode_record(&original, max).expect("a freshly encoded record must decode");
    assert_eq!(view.position(), pos);
    assert_eq!(view.payload(), &input.payload[..]);

    let mut damaged = original.clone();
    for d in &input.damage {
        apply(&mut damaged, d);
    }
    let intact = damaged.len() >= original.len() && damaged[..original.len()] == original[..];
    match decode_record(&damaged, max) {
        Ok(v) if v.bytes() == &original[..] => assert!(intact),
        Ok(v) => {
            // Different content was accepted. That is legitimate only when the damage
            // rewrote the crc field to the crc of the new content (a forger, not an
            // accident: no checksum stops that). With the original crc still in place
            // it would mean the crc failed to catch the change.
            assert_ne!(
                v.crc(),
                pos.crc,
                "the crc did not catch a damaged record: original {:?}, accepted {:?} (prev_crc {:#x}, payload_len {})",
                pos,
                v.position(),
                v.prev_crc(),
                v.payload().len()
            );
            assert!(!intact);
        }
        Err(e) => assert!(
            !intact,
            "rejected an intact record followed by {} trailing bytes: {e}",
            damaged.len() - original.len()
        ),
    }
    assert!(original.len() >= RECORD_HEADER_LEN);
});
