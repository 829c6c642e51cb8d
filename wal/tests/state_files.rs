//! State files, the node directory and its lock.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use walship_wal::sim::SimStorage;
use walship_wal::state::{
    decode_state_file, encode_state_file, read_state_file, write_state_file, DirLock, EpochEntry,
    EpochHistory, EpochHistoryError, NodeDir, StateError, COMMIT_FILE, EPOCHS_FILE,
    MAX_STATE_BODY_BYTES, STATE_HEADER_LEN,
};
use walship_wal::{FsStorage, Storage, StorageFile};

fn dir() -> PathBuf {
    PathBuf::from("/n/state")
}

/// A sim storage with /n/state durably created.
fn sim(seed: u64) -> io::Result<SimStorage> {
    let s = SimStorage::new(seed);
    s.create_dir_all(&dir())?;
    s.sync_dir(Path::new("/"))?;
    s.sync_dir(Path::new("/n"))?;
    Ok(s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn state_file_round_trips_any_body(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let path = Path::new("/n/state/x");
        let bytes = encode_state_file(path, &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bytes.len(), STATE_HEADER_LEN + body.len());
        let decoded = decode_state_file(path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded, &body[..]);
    }

    #[test]
    fn state_file_round_trips_through_sim_storage_and_crash(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        seed in any::<u64>(),
    ) {
        let s = sim(seed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        write_state_file(&s, &dir(), "x", &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        s.crash_with_torn_write();
        let read = read_state_file(&s, &dir(), "x").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(read, Some(body));
    }

    #[test]
    fn any_single_bit_flip_in_a_state_file_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let path = Path::new("/n/state/x");
        let mut bytes = encode_state_file(path, &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(decode_state_file(path, &bytes).is_err(), "flip of bit {} at byte {} accepted", bit, i);
    }

    #[test]
    fn any_truncation_or_extension_of_a_state_file_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
        extra in 1usize..64,
    ) {
        let path = Path::new("/n/state/x");
        let bytes = encode_state_file(path, &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let short = &bytes[..cut.index(bytes.len())];
        prop_assert!(decode_state_file(path, short).is_err());
        let mut long = bytes.clone();
        long.resize(bytes.len() + extra, 0);
        let is_length_mismatch = matches!(decode_state_file(path, &long), Err(StateError::LengthMismatch { .. }));
        prop_assert!(is_length_mismatch);
    }
}

#[test]
fn bit_flip_on_disk_is_reported_with_the_file_name() -> Result<(), Box<dyn std::error::Error>> {
    let s = sim(1)?;
    write_state_file(&s, &dir(), "commit", br#"{"commit_lsn":7}"#)?;
    let path = dir().join("commit");
    s.flip_bit(&path, STATE_HEADER_LEN as u64 + 3, 2)?;
    let err = read_state_file(&s, &dir(), "commit").expect_err("flipped body");
    assert!(matches!(&err, StateError::Checksum { path: p, .. } if *p == path));
    assert!(err.to_string().contains("/n/state/commit"), "{err}");
    s.flip_bit(&path, 0, 0)?;
    let err = read_state_file(&s, &dir(), "commit").expect_err("flipped magic");
    assert!(matches!(err, StateError::BadMagic { found, .. } if &found == b"VSST"));
    Ok(())
}

#[test]
fn header_field_damage_maps_to_the_named_variant() -> Result<(), StateError> {
    let path = Path::new("x");
    let good = encode_state_file(path, b"body")?;
    let mut v = good.clone();
    v[4] = 2;
    assert!(matches!(
        decode_state_file(path, &v),
        Err(StateError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));
    let mut v = good.clone();
    v[7] = 1;
    assert!(matches!(
        decode_state_file(path, &v),
        Err(StateError::BadReserved { found: 0x100, .. })
    ));
    let mut v = good.clone();
    v[8] = 5;
    assert!(matches!(
        decode_state_file(path, &v),
        Err(StateError::LengthMismatch {
            body_len: 5,
            file_len: 20,
            ..
        })
    ));
    assert!(matches!(
        decode_state_file(path, &good[..10]),
        Err(StateError::Truncated { len: 10, .. })
    ));
    Ok(())
}

#[test]
fn absent_state_file_reads_as_none() -> Result<(), Box<dyn std::error::Error>> {
    let s = sim(2)?;
    assert_eq!(read_state_file(&s, &dir(), "commit")?, None);
    Ok(())
}

#[test]
fn oversized_body_is_refused_and_nothing_is_written() -> Result<(), Box<dyn std::error::Error>> {
    let s = sim(3)?;
    let body = vec![b' '; MAX_STATE_BODY_BYTES as usize + 1];
    let err = write_state_file(&s, &dir(), "x", &body).expect_err("too large");
    assert!(matches!(err, StateError::BodyTooLarge { max, .. } if max == MAX_STATE_BODY_BYTES));
    assert!(s.list(&dir())?.is_empty());
    Ok(())
}

#[test]
fn leftover_longer_tmp_from_a_crash_does_not_leak_into_the_new_file(
) -> Result<(), Box<dyn std::error::Error>> {
    let s = sim(4)?;
    s.open(&dir().join("x.tmp"), true)?
        .write_at(0, &[0xAB; 10_000])?;
    write_state_file(&s, &dir(), "x", b"small")?;
    assert_eq!(
        read_state_file(&s, &dir(), "x")?.as_deref(),
        Some(&b"small"[..])
    );
    assert_eq!(s.list(&dir())?, vec!["x"]);
    Ok(())
}

#[test]
fn completed_write_survives_crash_and_replaces_old_contents(
) -> Result<(), Box<dyn std::error::Error>> {
    let s = sim(5)?;
    write_state_file(&s, &dir(), "x", b"old")?;
    write_state_file(&s, &dir(), "x", b"new")?;
    s.crash();
    assert_eq!(
        read_state_file(&s, &dir(), "x")?.as_deref(),
        Some(&b"new"[..])
    );
    Ok(())
}

#[test]
fn write_failing_at_any_sync_then_crash_leaves_old_or_new_complete_file(
) -> Result<(), Box<dyn std::error::Error>> {
    // write_state_file syncs twice (file, then directory); fail each one in turn.
    for failing_sync in 0..2u64 {
        for seed in 0..32 {
            let s = sim(seed)?;
            write_state_file(&s, &dir(), "x", b"old contents")?;
            s.fail_syncs_after(failing_sync);
            let err = write_state_file(&s, &dir(), "x", b"new contents, longer")
                .expect_err("sync armed to fail");
            let op = match &err {
                StateError::Io { op, source, .. } => {
                    assert_eq!(source.raw_os_error(), Some(libc::EIO));
                    *op
                }
                other => panic!("unexpected error {other}"),
            };
            assert_eq!(op, ["sync_data", "sync_dir"][failing_sync as usize]);
            s.clear_faults();
            s.crash_with_torn_write();
            let got = read_state_file(&s, &dir(), "x")?;
            let got = got.as_deref();
            assert!(
                got == Some(&b"old contents"[..])
                    || (failing_sync == 1 && got == Some(&b"new contents, longer"[..])),
                "sync {failing_sync} seed {seed}: {got:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn node_dir_creates_layout_durably() -> Result<(), Box<dyn std::error::Error>> {
    let s = SimStorage::new(6);
    s.create_dir_all(Path::new("/data"))?;
    s.sync_dir(Path::new("/"))?;
    let nd = NodeDir::open(s.clone(), Path::new("/data/n1"))?;
    s.crash();
    assert_eq!(
        s.list(Path::new("/data/n1"))?,
        vec!["snapshots", "state", "wal"]
    );
    assert_eq!(nd.wal_dir(), Path::new("/data/n1/wal"));
    assert_eq!(nd.state_dir(), Path::new("/data/n1/state"));
    assert_eq!(nd.snapshot_dir(), Path::new("/data/n1/snapshots"));
    // Reopening an existing directory is fine.
    NodeDir::open(s, Path::new("/data/n1"))?;
    Ok(())
}

#[test]
fn commit_lsn_defaults_to_zero_and_survives_crash() -> Result<(), Box<dyn std::error::Error>> {
    let s = SimStorage::new(7);
    let nd = NodeDir::open(s.clone(), Path::new("/n"))?;
    assert_eq!(nd.commit_lsn()?, 0);
    nd.set_commit_lsn(41)?;
    nd.set_commit_lsn(42)?;
    s.crash_with_torn_write();
    assert_eq!(nd.commit_lsn()?, 42);
    let raw = read_state_file(&s, nd.state_dir(), COMMIT_FILE)?;
    assert_eq!(raw.as_deref(), Some(&br#"{"commit_lsn":42}"#[..]));
    Ok(())
}

#[test]
fn epochs_round_trip_and_invalid_history_is_refused_both_ways(
) -> Result<(), Box<dyn std::error::Error>> {
    let s = SimStorage::new(8);
    let nd = NodeDir::open(s.clone(), Path::new("/n"))?;
    assert_eq!(nd.epochs()?, EpochHistory::new());
    let hist = EpochHistory::from_entries(vec![
        EpochEntry {
            epoch: 1,
            start_lsn: 1,
        },
        EpochEntry {
            epoch: 4,
            start_lsn: 90,
        },
    ])?;
    nd.set_epochs(&hist)?;
    s.crash();
    assert_eq!(nd.epochs()?, hist);

    let bad = EpochHistory {
        entries: vec![
            EpochEntry {
                epoch: 4,
                start_lsn: 1,
            },
            EpochEntry {
                epoch: 3,
                start_lsn: 2,
            },
        ],
    };
    let err = nd.set_epochs(&bad).expect_err("decreasing epochs");
    assert!(matches!(
        err,
        StateError::InvalidEpochs {
            source: EpochHistoryError::EpochNotIncreasing { index: 1, .. },
            ..
        }
    ));
    assert_eq!(nd.epochs()?, hist, "a refused history must not be written");

    // The same history written behind NodeDir's back is refused on read.
    write_state_file(&s, nd.state_dir(), EPOCHS_FILE, &serde_json::to_vec(&bad)?)?;
    let err = nd.epochs().expect_err("invalid on disk");
    assert!(
        matches!(err, StateError::InvalidEpochs { path, .. } if path == Path::new("/n/state/epochs"))
    );
    // And a body that is not the expected JSON.
    write_state_file(&s, nd.state_dir(), EPOCHS_FILE, b"[1,2]")?;
    assert!(matches!(nd.epochs(), Err(StateError::Json { .. })));
    Ok(())
}

#[test]
fn node_dir_works_on_the_real_file_system() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("node");
    let nd = NodeDir::open(FsStorage, &root)?;
    nd.set_commit_lsn(9)?;
    assert_eq!(nd.commit_lsn()?, 9);
    assert!(root.join("wal").is_dir() && root.join("snapshots").is_dir());
    assert!(!root.join("state/commit.tmp").exists());
    Ok(())
}

#[test]
fn dir_lock_second_acquire_in_same_process_is_locked_until_drop(
) -> Result<(), Box<dyn std::error::Error>> {
    let _serial = fork_guard();
    let tmp = tempfile::tempdir()?;
    let first = DirLock::acquire(tmp.path())?;
    assert_eq!(first.path(), tmp.path().join("LOCK"));
    let err = DirLock::acquire(tmp.path()).expect_err("already held");
    assert!(matches!(&err, StateError::Locked { path } if *path == tmp.path().join("LOCK")));
    drop(first);
    let again = DirLock::acquire(tmp.path())?;
    let pid = std::fs::read_to_string(again.path())?;
    assert_eq!(pid.trim(), std::process::id().to_string());
    Ok(())
}

const PROBE_ENV: &str = "WALSHIP_DIR_LOCK_PROBE";

/// Runs `dir_lock_probe_child` in a child process against `dir`; returns its verdict.
/// flock belongs to the open file description, which a fork shares until the
/// child execs: while another test of this binary spawns a child, a lock this
/// test drops can stay held for a moment. Tests that drop-and-reacquire a
/// lock or spawn children take this guard so they never overlap.
fn fork_guard() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn probe_in_child_process(dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "dir_lock_probe_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, dir)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdict = stdout
        .lines()
        .find_map(|l| l.split_once("probe-verdict: ").map(|(_, v)| v))
        .ok_or_else(|| format!("child printed no verdict: {stdout}"))?;
    Ok(verdict.to_owned())
}

/// Helper run only as a child process by
/// `dir_lock_held_here_is_locked_for_another_process`.
#[test]
#[ignore = "helper: runs in a child process spawned by another test"]
fn dir_lock_probe_child() {
    let Some(dir) = std::env::var_os(PROBE_ENV) else {
        return;
    };
    let verdict = match DirLock::acquire(Path::new(&dir)) {
        Ok(_) => "acquired".to_owned(),
        Err(StateError::Locked { .. }) => "locked".to_owned(),
        Err(e) => format!("error {e}"),
    };
    println!("probe-verdict: {verdict}");
}

#[test]
fn dir_lock_held_here_is_locked_for_another_process() -> Result<(), Box<dyn std::error::Error>> {
    let _serial = fork_guard();
    let tmp = tempfile::tempdir()?;
    let lock = DirLock::acquire(tmp.path())?;
    assert_eq!(probe_in_child_process(tmp.path())?, "locked");
    drop(lock);
    assert_eq!(probe_in_child_process(tmp.path())?, "acquired");
    Ok(())
}

#[test]
fn dir_lock_on_missing_directory_is_an_io_error_naming_the_lock_file() {
    let err = DirLock::acquire(Path::new("/nonexistent-walship-dir")).expect_err("missing");
    assert!(
        matches!(&err, StateError::Io { op: "open", path, .. } if path == Path::new("/nonexistent-walship-dir/LOCK"))
    );
}
