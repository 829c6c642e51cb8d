//! The durable halt record (`walship_replica::halt`, file `state/halt`): `read_halt` over
//! SimStorage with an arbitrary file.
//!
//! Input: one mode byte, then bytes. Mode 0: the bytes are the whole file. Mode 1: the
//! bytes are a body (JSON, hopefully a halt record) wrapped in a valid state file header.
//!
//! Checks: no panic; no allocation larger than the file; a present file is never read as
//! "not halted" (`Ok(None)`); a record that parses writes back with `write_halt` and reads
//! back equal; `clear_halt` removes any halt file, readable or not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use walship_fuzz::with_alloc_bound;
use walship_replica::halt::{clear_halt, read_halt, write_halt, HaltError, HALT_FILE};
use walship_wal::sim::SimStorage;
use walship_wal::state::encode_state_file;
use walship_wal::{Storage, StorageFile};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        match encode_state_file(Path::new("halt"), rest) {
            Ok(f) => f,
            Err(_) => return,
        }
    };
    let s = SimStorage::new(11);
    let dir = Path::new("/n/state");
    s.create_dir_all(dir).expect("sim mkdir");
    let path = dir.join(HALT_FILE);
    let f = s.open(&path, true).expect("sim open");
    f.write_at(0, &file).expect("sim write");
    f.sync_data().expect("sim sync");
    drop(f);

    let bound = 2 * file.len() + 64 * 1024;
    match with_alloc_bound("read_halt", bound, || read_halt(&s, dir)) {
        Ok(None) => panic!("a present halt file was read as not halted"),
        Ok(Some(record)) => {
            write_halt(&s, dir, &record).expect("write back the halt record");
            assert_eq!(read_halt(&s, dir).expect("read back"), Some(record.clone()));
            assert_eq!(clear_halt(&s, dir).expect("clear"), Some(record));
        }
        Err(HaltError::State(_) | HaltError::Body { .. }) => {
            assert_eq!(clear_halt(&s, dir).expect("clear an unreadable halt"), None);
        }
        Err(e) => panic!("read_halt: unexpected error kind: {e}"),
    }
    assert!(
        !s.exists(&path).expect("sim exists"),
        "clear_halt left the halt file"
    );
    assert!(matches!(read_halt(&s, dir), Ok(None)));
});
