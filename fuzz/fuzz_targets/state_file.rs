//! State files (`walship_wal::state`): `decode_state_file`, `read_state_file` over
//! SimStorage, and the JSON bodies behind them (`NodeDir::commit_lsn`, `NodeDir::epochs`).
//!
//! Input: one mode byte, then bytes. Mode 0: the bytes are the whole file. Mode 1: the bytes
//! are a body, wrapped in a valid header (so the JSON parsers are reached). Mode 2: like 1,
//! then the last input byte selects a header byte to damage.
//!
//! Checks: no panic; no allocation larger than the file (a claimed body_len is never
//! allocated); `decode_state_file` accepts exactly the files `encode_state_file` writes;
//! `read_state_file` agrees with it; a parsed commit/epochs value writes back and reads
//! back equal; a parsed epoch history is valid.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use walship_fuzz::with_alloc_bound;
use walship_wal::sim::SimStorage;
use walship_wal::state::{
    decode_state_file, encode_state_file, read_state_file, NodeDir, StateError, COMMIT_FILE,
    EPOCHS_FILE, MAX_STATE_BODY_BYTES, STATE_HEADER_LEN,
};
use walship_wal::{Storage, StorageFile};

fn file_from_input(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    match mode % 3 {
        0 => Some(rest.to_vec()),
        1 => encode_state_file(Path::new("fuzz"), rest).ok(),
        _ => {
            let (&which, body) = rest.split_last()?;
            let mut f = encode_state_file(Path::new("fuzz"), body).ok()?;
            f[usize::from(which) % STATE_HEADER_LEN] ^= 1 << (which % 8);
            Some(f)
        }
    }
}

fn put(s: &SimStorage, path: &Path, bytes: &[u8]) {
    let f = s.open(path, true).expect("sim open");
    f.set_len(0).expect("sim set_len");
    f.write_at(0, bytes).expect("sim write");
    f.sync_data().expect("sim sync");
}

fuzz_target!(|data: &[u8]| {
    let Some(file) = file_from_input(data) else {
        return;
    };
    let path = Path::new("/n/state/commit");
    let bound = 2 * file.len() + 64 * 1024;

    let decoded = with_alloc_bound("decode_state_file", 4096, || {
        decode_state_file(path, &file).map(<[u8]>::len)
    });
    match &decoded {
        Ok(body_len) => {
            assert!(*body_len <= MAX_STATE_BODY_BYTES as usize);
            let body = &file[STATE_HEADER_LEN..];
            assert_eq!(*body_len, body.len());
            assert_eq!(
                encode_state_file(path, body).expect("re-encode"),
                file,
                "accepted a non-canonical state file"
            );
        }
        Err(StateError::LengthMismatch {
            body_len, file_len, ..
        }) => {
            assert_ne!(u64::from(*body_len) + STATE_HEADER_LEN as u64, *file_len);
            assert_eq!(*file_len, file.len() as u64);
        }
        Err(StateError::BodyTooLarge { len, max, .. }) => assert!(*len > u64::from(*max)),
        Err(StateError::Truncated { len, .. }) => assert!(*len < STATE_HEADER_LEN as u64),
        Err(StateError::Checksum {
            stored, computed, ..
        }) => assert_ne!(stored, computed),
        Err(
            StateError::BadMagic { .. }
            | StateError::UnsupportedVersion { .. }
            | StateError::BadReserved { .. },
        ) => {}
        Err(e) => panic!("decode_state_file: unexpected error kind: {e}"),
    }

    let s = SimStorage::new(7);
    let node = NodeDir::open(s.clone(), Path::new("/n")).expect("sim node dir");
    put(&s, path, &file);
    put(&s, &node.state_dir().join(EPOCHS_FILE), &file);
    let read = with_alloc_bound("read_state_file", bound, || {
        read_state_file(&s, node.state_dir(), COMMIT_FILE)
    });
    match (&decoded, &read) {
        (Ok(_), Ok(Some(body))) => assert_eq!(&body[..], &file[STATE_HEADER_LEN..]),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("decode_state_file and read_state_file disagree: {a:?} vs {b:?}"),
    }

    if let Ok(commit) = with_alloc_bound("commit_lsn", bound, || node.commit_lsn()) {
        assert!(decoded.is_ok());
        node.set_commit_lsn(commit).expect("write back commit");
        assert_eq!(node.commit_lsn().expect("read back commit"), commit);
    }
    if let Ok(epochs) = with_alloc_bound("epochs", bound, || node.epochs()) {
        assert!(decoded.is_ok());
        epochs
            .validate()
            .expect("epochs() returned an invalid history");
        node.set_epochs(&epochs).expect("write back epochs");
        assert_eq!(node.epochs().expect("read back epochs"), epochs);
    }
});
