//! Snapshot install under crashes, below the replica: the real
//! `walship-snapshot` install (begin, chunks, finish, commit with
//! `Wal::reset_to`) over SimStorage, interrupted at every fsync by a failed
//! sync plus power loss, and between every step by power loss alone, and
//! at the end of an aborted transfer. After each, the node is recovered as a
//! restarting replica does (`SnapshotStore::open` discards temporaries,
//! `Wal::open`, `SnapshotStore::recover`) and must be in exactly the old
//! state or exactly the new one, never a mix (FM-4.3, FM-10.5, FM-X.8).
//!
//! The replica core does not drive snapshot transfers yet, so the matrix
//! rows stay "missing"; this sweep is the evidence for the layer that exists.

use std::path::Path;

use walship_snapshot::{Limits, SnapshotSource, SnapshotStore};
use walship_wal::sim::SimStorage;
use walship_wal::{Position, Storage, Wal, WalOptions};

const OLD_RECORDS: u64 = 5;
const BOUNDARY_LSN: u64 = 50;
const CHUNK: u32 = 4096;

struct Source(Vec<u8>);

impl SnapshotSource for Source {
    fn write_snapshot(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
        w.write_all(&self.0)?;
        Ok(BOUNDARY_LSN)
    }
}

/// What a node's durable state looks like after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// No snapshot; the old WAL with its records.
    Old,
    /// The new snapshot; the WAL empty after its boundary.
    New,
}

fn wal_opts() -> WalOptions {
    WalOptions {
        epoch: 1,
        ..WalOptions::default()
    }
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The primary side: a snapshot and its transfer messages.
fn transfer() -> Result<
    (
        walship_snapshot::SnapshotOffer,
        Vec<walship_snapshot::SnapshotChunk>,
        walship_snapshot::SnapshotEnd,
        Position,
    ),
    String,
> {
    let p = SimStorage::new(4242);
    let (store, _) =
        SnapshotStore::open(p, Path::new("/p/snapshots"), Limits::default()).map_err(s)?;
    let boundary = Position {
        lsn: BOUNDARY_LSN,
        epoch: 1,
        crc: 0x5a5a_0001,
    };
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let snap = store
        .create(CHUNK, &mut Source(payload), &mut |_| Ok(boundary))
        .map_err(s)?;
    let reader = store.reader(&snap).map_err(s)?;
    let offer = reader.offer();
    let chunks = (0..offer.chunk_count)
        .map(|i| reader.chunk_message(i).map_err(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((offer, chunks, reader.end_message(), boundary))
}

/// A replica disk with `OLD_RECORDS` durable records and no snapshot.
fn replica_disk(seed: u64) -> Result<(SimStorage, Vec<Position>), String> {
    let st = SimStorage::new(seed);
    for d in ["/node", "/node/wal", "/node/state"] {
        st.create_dir_all(Path::new(d)).map_err(s)?;
    }
    st.sync_dir(Path::new("/")).map_err(s)?;
    st.sync_dir(Path::new("/node")).map_err(s)?;
    let (mut wal, _) = Wal::open(st.clone(), Path::new("/node/wal"), wal_opts()).map_err(s)?;
    for i in 0..OLD_RECORDS {
        wal.append(format!("old-{i}").as_bytes()).map_err(s)?;
    }
    wal.sync().map_err(s)?;
    let old = (1..=OLD_RECORDS)
        .map(|l| {
            wal.position_at(l)
                .map_err(s)?
                .ok_or("missing old record".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((st, old))
}

/// Recovers a node as a restarting replica does and classifies its state.
fn recover(st: &SimStorage, old: &[Position], boundary: Position) -> Result<Recovered, String> {
    let (store, _) =
        SnapshotStore::open(st.clone(), Path::new("/node/snapshots"), Limits::default())
            .map_err(|e| format!("snapshot store open: {e}"))?;
    let (mut wal, _) = Wal::open(st.clone(), Path::new("/node/wal"), wal_opts())
        .map_err(|e| format!("wal open: {e}"))?;
    store
        .recover(&mut wal)
        .map_err(|e| format!("recover: {e}"))?;
    let tmp_left = st
        .list(Path::new("/node/snapshots"))
        .map_err(s)?
        .into_iter()
        .filter(|n| n.starts_with(walship_snapshot::TMP_PREFIX))
        .count();
    if tmp_left > 0 {
        return Err(format!(
            "{tmp_left} temporary snapshot directories survived recovery"
        ));
    }
    match store.newest().map_err(s)? {
        None => {
            let now: Vec<Option<Position>> = (1..=OLD_RECORDS)
                .map(|l| wal.position_at(l).ok().flatten())
                .collect();
            let want: Vec<Option<Position>> = old.iter().copied().map(Some).collect();
            if now != want || wal.last().lsn != OLD_RECORDS {
                return Err(format!(
                    "no snapshot but the WAL is not the old one (last {:?})",
                    wal.last()
                ));
            }
            Ok(Recovered::Old)
        }
        Some(snap) => {
            store
                .verify(&snap)
                .map_err(|e| format!("installed snapshot damaged: {e}"))?;
            if snap.boundary != boundary || wal.base() != boundary || wal.last() != boundary {
                return Err(format!(
                    "mixed state: snapshot {:?} with WAL base {:?} last {:?}",
                    snap.boundary,
                    wal.base(),
                    wal.last()
                ));
            }
            Ok(Recovered::New)
        }
    }
}

/// Runs the install; `crash_after_step` stops it (power loss) after that
/// many steps (begin, each chunk, finish, commit); `fail_sync` makes the
/// n-th fsync of the install fail first.
fn install(
    st: &SimStorage,
    crash_after_step: Option<usize>,
    fail_sync: Option<u64>,
    abort_after_chunks: Option<usize>,
) -> Result<(), String> {
    let (offer, chunks, end, _) = transfer()?;
    let (store, _) =
        SnapshotStore::open(st.clone(), Path::new("/node/snapshots"), Limits::default())
            .map_err(s)?;
    let (mut wal, _) = Wal::open(st.clone(), Path::new("/node/wal"), wal_opts()).map_err(s)?;
    if let Some(n) = fail_sync {
        st.fail_syncs_after(n);
    }
    let mut step = 0usize;
    let stop = |step: usize| crash_after_step.is_some_and(|k| step >= k);
    let Ok(mut ins) = store.begin_install(&offer) else {
        return Ok(());
    };
    step += 1;
    if stop(step) {
        return Ok(());
    }
    for (i, c) in chunks.iter().enumerate() {
        if abort_after_chunks == Some(i) {
            // The session ended mid-transfer (FM-X.8).
            return ins.abort().map_err(s);
        }
        if ins.push_chunk(c).is_err() {
            return Ok(());
        }
        step += 1;
        if stop(step) {
            return Ok(());
        }
    }
    let Ok(verified) = ins.finish(&end) else {
        return Ok(());
    };
    step += 1;
    if stop(step) {
        return Ok(());
    }
    let _ = verified.commit(&mut wal, None);
    Ok(())
}

/// The sweep; returns (old, new) counts of recovered states.
pub fn sweep(seed: u64) -> Result<(usize, usize, usize), String> {
    let (_, chunks, _, boundary) = transfer()?;
    let steps = chunks.len() + 3;
    let mut old = 0;
    let mut new = 0;
    let mut points = 0;
    let mut check = |st: &SimStorage, olds: &[Position], what: String| -> Result<(), String> {
        st.crash();
        st.clear_faults();
        match recover(st, olds, boundary).map_err(|e| format!("{what}: {e}"))? {
            Recovered::Old => old += 1,
            Recovered::New => new += 1,
        }
        points += 1;
        Ok(())
    };
    for k in 1..=steps {
        let (st, olds) = replica_disk(seed + k as u64)?;
        install(&st, Some(k), None, None)?;
        check(&st, &olds, format!("power loss after step {k}"))?;
    }
    for n in 0..64u64 {
        let (st, olds) = replica_disk(seed + 1000 + n)?;
        install(&st, None, Some(n), None)?;
        let failed = st.counters().failed_syncs > 0;
        check(&st, &olds, format!("fsync #{n} failed, then power loss"))?;
        if !failed {
            break;
        }
    }
    for a in [0, chunks.len() / 2] {
        let (st, olds) = replica_disk(seed + 2000 + a as u64)?;
        install(&st, None, None, Some(a))?;
        check(&st, &olds, format!("transfer aborted after {a} chunks"))?;
    }
    Ok((points, old, new))
}
