//! FM-7.1 (an invalid snapshot is rejected, the replica unchanged) and
//! FM-7.2 (a boundary that conflicts with the WAL history is fatal), each
//! with the exact outcome.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use walship_snapshot::format::{chunk_crc, SnapshotHeader};
use walship_snapshot::{
    check_boundary, check_first_after, BoundaryConflict, BoundaryVerdict, EpochCheck, FailureClass,
    InvalidSnapshot, Limits, SnapshotError, SnapshotReader, SnapshotStore, MAX_CHUNK_SIZE_BYTES,
};
use walship_snapshot::{read_newest_membership, BoundaryMembership, CONFIG_FILE};
use walship_wal::sim::SimStorage;
use walship_wal::state::{EpochEntry, EpochHistory};
use walship_wal::{Mapping, Position, RecordHeader, Storage, Wal};

/// A replica with records 1..=10 (epoch 1) and no snapshot.
fn replica(seed: u64) -> (SimStorage, SnapshotStore<SimStorage>, Wal<SimStorage>) {
    let sim = SimStorage::new(seed);
    sim.create_dir_all(Path::new("/node")).expect("mkdir");
    sim.sync_dir(Path::new("/")).expect("sync");
    let wal = wal_with(&sim, &wal_dir(), 10, 1);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    (sim, store, wal)
}

/// The primary's position at `lsn` for the shared history (records `payload(i)`, epoch 1).
fn primary_pos(lsn: u64) -> Position {
    let ps = SimStorage::new(77);
    let w = wal_with(&ps, &wal_dir(), lsn, 1);
    w.last()
}

fn shipped_at(lsn: u64) -> Shipped {
    primary_snapshot(primary_pos(lsn), state_bytes(5000, 3), 1024)
}

/// Asserts the replica is exactly as `replica()` built it.
fn assert_unchanged(sim: &SimStorage, store: &SnapshotStore<SimStorage>, wal: &Wal<SimStorage>) {
    assert!(
        store.installed().expect("list").is_empty(),
        "no snapshot installed"
    );
    assert!(
        tmp_entries(sim, &snap_dir()).is_empty(),
        "partial snapshot removed"
    );
    assert_eq!(wal.last().lsn, 10);
    assert_eq!(wal.base().lsn, 0);
    assert_eq!(wal_records(wal).len(), 10);
}

/// Pushes a whole (possibly altered) transfer; returns the first error.
fn transfer(
    store: &SnapshotStore<SimStorage>,
    wal: &mut Wal<SimStorage>,
    s: &Shipped,
) -> Result<(), SnapshotError> {
    let mut inst = store.begin_install(&s.offer)?;
    for c in &s.chunks {
        if let Err(e) = inst.push_chunk(c) {
            inst.abort().expect("abort");
            return Err(e);
        }
    }
    let v = inst.finish(&s.end)?;
    v.commit(wal, None)?;
    Ok(())
}

fn invalid(e: SnapshotError) -> InvalidSnapshot {
    assert_eq!(e.class(), FailureClass::Invalid);
    assert_eq!(e.class().halt_reason(), Some("snapshot-invalid"));
    match e {
        SnapshotError::Invalid(i) => i,
        other => panic!("expected Invalid, got {other}"),
    }
}

fn conflict(e: SnapshotError) -> BoundaryConflict {
    assert_eq!(e.class(), FailureClass::Boundary);
    assert_eq!(e.class().halt_reason(), Some("snapshot-boundary"));
    match e {
        SnapshotError::Boundary(c) => c,
        other => panic!("expected Boundary, got {other}"),
    }
}

// ----------------------------------------------------------------- FM-7.1

#[test]
fn fm_7_1_corrupt_chunk_is_rejected_and_replica_unchanged() {
    let (sim, store, mut wal) = replica(1);
    let mut s = shipped_at(20);
    s.chunks[2].bytes[100] ^= 0x10;
    let stored = s.chunks[2].crc;
    let computed = chunk_crc(2, &s.chunks[2].bytes);
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert_eq!(
        e,
        InvalidSnapshot::ChunkChecksum {
            index: 2,
            stored,
            computed
        }
    );
    assert_unchanged(&sim, &store, &wal);
    // Replication restarts: the intact transfer installs.
    transfer(&store, &mut wal, &shipped_at(20)).expect("clean transfer installs");
    assert_eq!(wal.base(), primary_pos(20));
}

#[test]
fn fm_7_1_chunks_out_of_order_or_duplicated_are_rejected() {
    let (sim, store, mut wal) = replica(2);
    let mut s = shipped_at(20);
    s.chunks.swap(1, 2);
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert_eq!(
        e,
        InvalidSnapshot::ChunkOutOfOrder {
            expected: 1,
            found: 2
        }
    );
    let mut s = shipped_at(20);
    let dup = s.chunks[0].clone();
    s.chunks.insert(1, dup);
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert_eq!(
        e,
        InvalidSnapshot::ChunkOutOfOrder {
            expected: 1,
            found: 0
        }
    );
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_1_missing_last_chunk_or_extra_chunk_is_rejected() {
    let (sim, store, mut wal) = replica(3);
    let mut s = shipped_at(20);
    let n = s.chunks.len() as u64;
    s.chunks.pop();
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert_eq!(
        e,
        InvalidSnapshot::ChunkCountMismatch {
            what: "transfer",
            expected: n,
            found: n - 1
        }
    );
    let mut s = shipped_at(20);
    let extra = s.chunks[0].clone();
    s.chunks.push(extra);
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert!(matches!(e, InvalidSnapshot::Sequence { .. }), "{e}");
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_1_corrupt_trailer_is_rejected_and_replica_unchanged() {
    let (sim, store, mut wal) = replica(4);
    let mut s = shipped_at(20);
    let good = s.end.trailer.payload_crc;
    s.end.trailer.payload_crc ^= 1;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert_eq!(
        e,
        InvalidSnapshot::PayloadChecksum {
            stored: good ^ 1,
            computed: good
        }
    );
    let mut s = shipped_at(20);
    s.end.trailer.total_len += 1;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert!(
        matches!(
            e,
            InvalidSnapshot::TrailerMismatch {
                field: "total_len",
                ..
            }
        ),
        "{e}"
    );
    let mut s = shipped_at(20);
    s.end.trailer.header_crc ^= 4;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert!(
        matches!(
            e,
            InvalidSnapshot::TrailerMismatch {
                field: "header_crc",
                ..
            }
        ),
        "{e}"
    );
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_1_corrupt_header_is_rejected_before_anything_is_created() {
    let (sim, store, mut wal) = replica(5);
    let mut s = shipped_at(20);
    s.offer.header_crc ^= 0x100;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert!(matches!(e, InvalidSnapshot::HeaderChecksum { .. }), "{e}");
    // An offer whose boundary was altered no longer matches the stored header crc.
    let mut s = shipped_at(20);
    s.offer.boundary.crc ^= 1;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert!(matches!(e, InvalidSnapshot::HeaderChecksum { .. }), "{e}");
    let mut s = shipped_at(20);
    s.offer.chunk_count += 1;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert!(
        matches!(e, InvalidSnapshot::ChunkCountMismatch { what: "offer", .. }),
        "{e}"
    );
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_1_length_fields_above_the_bounds_are_rejected_before_allocation() {
    let (sim, store, mut wal) = replica(6);
    let mut s = shipped_at(20);
    s.offer.chunk_size_bytes = MAX_CHUNK_SIZE_BYTES + 1;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert_eq!(
        e,
        InvalidSnapshot::ChunkSizeOutOfBounds {
            found: MAX_CHUNK_SIZE_BYTES + 1,
            max: MAX_CHUNK_SIZE_BYTES
        }
    );
    let mut s = shipped_at(20);
    s.offer.total_len = u64::MAX;
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert!(matches!(e, InvalidSnapshot::TotalTooLarge { .. }), "{e}");
    // A chunk longer than the chunk size is refused before it is written.
    let mut s = shipped_at(20);
    s.chunks[0].bytes.extend_from_slice(&[0; 8]);
    let e = invalid(transfer(&store, &mut wal, &s).expect_err("rejected"));
    assert_eq!(
        e,
        InvalidSnapshot::ChunkLength {
            index: 0,
            expected: 1024,
            found: 1032
        }
    );
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_1_configured_total_bound_applies_to_offers() {
    let sim = SimStorage::new(8);
    let limits = Limits {
        max_total_bytes: 4096,
        ..Limits::default()
    };
    let (store, _) = SnapshotStore::open(sim.clone(), &snap_dir(), limits).expect("open");
    let s = shipped_at(20); // 5000 bytes
    let e = invalid(store.begin_install(&s.offer).expect_err("too large"));
    assert_eq!(
        e,
        InvalidSnapshot::TotalTooLarge {
            found: 5000,
            max: 4096
        }
    );
    assert!(tmp_entries(&sim, &snap_dir()).is_empty());
}

#[test]
fn fm_7_1_bit_flip_in_installed_snapshot_is_local_corruption() {
    let (sim, store, mut wal) = replica(9);
    transfer(&store, &mut wal, &shipped_at(20)).expect("install");
    let snap = store.newest().expect("list").expect("one");
    sim.flip_bit(&snap.file, 64 + 16 + 7, 3).expect("flip");
    let e = store.verify(&snap).expect_err("damaged");
    assert_eq!(e.class(), FailureClass::LocalCorruption);
    assert!(
        matches!(
            e,
            SnapshotError::InstalledDamaged {
                error: InvalidSnapshot::ChunkChecksum { index: 0, .. },
                ..
            }
        ),
        "{e}"
    );
    let mut sink = BytesState::default();
    let e = store
        .restore(&snap, &mut sink)
        .expect_err("restore refuses");
    assert!(matches!(e, SnapshotError::InstalledDamaged { .. }), "{e}");
    // Damage to the trailer shows already when listing.
    sim.flip_bit(&snap.file, snap.file_len - 10, 0)
        .expect("flip");
    let e = store.installed().expect_err("damaged trailer");
    assert!(
        matches!(
            e,
            SnapshotError::InstalledDamaged {
                error: InvalidSnapshot::TrailerChecksum { .. },
                ..
            }
        ),
        "{e}"
    );
}

/// A replica installs a snapshot with the configuration it records: the configuration file
/// arrives with the offer, is published with the snapshot, and reads back the same, also
/// through the read-only reader a node uses before any role opens the store.
#[test]
fn the_configuration_at_the_boundary_travels_with_the_snapshot() {
    let (sim, store, mut wal) = replica(21);
    let s = shipped_at(20);
    transfer(&store, &mut wal, &s).expect("install");
    let snap = store.newest().expect("list").expect("one");
    assert_eq!(snap.membership, s.membership);
    assert!(matches!(
        snap.membership,
        BoundaryMembership::Record { lsn: 18, .. }
    ));
    let read = read_newest_membership(&sim, &snap_dir(), &Limits::default()).expect("read");
    assert_eq!(read, Some((snap.boundary, s.membership.clone())));
    // The installed file is the primary's, byte for byte.
    let file = sim
        .contents(&snap.dir.join(CONFIG_FILE))
        .expect("configuration file");
    assert_eq!(file, s.offer.configuration);
}

#[test]
fn fm_7_1_an_offer_whose_configuration_fails_a_check_is_rejected_before_anything_is_created() {
    let base = shipped_at(20);
    // A flipped bit anywhere, a truncated file, and a file of another snapshot.
    let mut altered = Vec::new();
    for bit in [
        0,
        9 * 8,
        20 * 8 + 1,
        (base.offer.configuration.len() - 1) * 8,
    ] {
        let mut s = base.clone();
        s.offer.configuration[bit / 8] ^= 1 << (bit % 8);
        altered.push(s);
    }
    let mut s = base.clone();
    s.offer.configuration.truncate(30);
    altered.push(s);
    let mut s = base.clone();
    s.offer.configuration = shipped_at(19).offer.configuration;
    altered.push(s);
    for (i, s) in altered.iter().enumerate() {
        let (sim, store, mut wal) = replica(30 + i as u64);
        let e = transfer(&store, &mut wal, s).expect_err("refused");
        let i = invalid(e);
        assert!(
            matches!(
                i,
                InvalidSnapshot::Configuration { .. }
                    | InvalidSnapshot::BadMagic { .. }
                    | InvalidSnapshot::UnsupportedVersion { .. }
                    | InvalidSnapshot::Truncated { .. }
            ),
            "{i}"
        );
        assert_unchanged(&sim, &store, &wal);
    }
}

#[test]
fn a_damaged_configuration_file_of_an_installed_snapshot_is_local_corruption() {
    let (sim, store, mut wal) = replica(40);
    transfer(&store, &mut wal, &shipped_at(20)).expect("install");
    let snap = store.newest().expect("list").expect("one");
    sim.flip_bit(&snap.dir.join(CONFIG_FILE), 40, 2)
        .expect("flip");
    let e = store.newest().expect_err("damaged");
    assert_eq!(e.class(), FailureClass::LocalCorruption);
    assert!(
        matches!(
            e,
            SnapshotError::InstalledDamaged {
                error: InvalidSnapshot::Configuration { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(read_newest_membership(&sim, &snap_dir(), &Limits::default()).is_err());
}

// ----------------------------------------------------------------- FM-7.2

#[test]
fn fm_7_2_boundary_with_other_crc_at_a_local_lsn_is_fatal() {
    let (sim, store, mut wal) = replica(10);
    let mut b = wal.position_at(10).expect("pos").expect("some");
    b.crc ^= 0xffff;
    let local = wal.last();
    let s = primary_snapshot(b, state_bytes(100, 1), 64);
    let c = conflict(transfer(&store, &mut wal, &s).expect_err("conflict"));
    assert_eq!(
        c,
        BoundaryConflict::PositionMismatch {
            lsn: 10,
            local,
            boundary: b
        }
    );
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_2_boundary_with_other_epoch_at_a_local_lsn_is_fatal() {
    let (sim, store, mut wal) = replica(11);
    let local = wal.last();
    let b = Position { epoch: 2, ..local };
    let s = primary_snapshot(b, state_bytes(100, 1), 64);
    let c = conflict(transfer(&store, &mut wal, &s).expect_err("conflict"));
    assert_eq!(
        c,
        BoundaryConflict::PositionMismatch {
            lsn: 10,
            local,
            boundary: b
        }
    );
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_2_boundary_below_local_durable_records_is_fatal() {
    let (sim, store, mut wal) = replica(12);
    let b = wal.position_at(7).expect("pos").expect("some");
    let s = primary_snapshot(b, state_bytes(100, 1), 64);
    let c = conflict(transfer(&store, &mut wal, &s).expect_err("conflict"));
    assert_eq!(
        c,
        BoundaryConflict::BelowLocalLast {
            boundary_lsn: 7,
            local_last_lsn: 10
        }
    );
    assert_unchanged(&sim, &store, &wal);
}

#[test]
fn fm_7_2_boundary_epoch_below_local_last_epoch_is_fatal() {
    let sim = SimStorage::new(13);
    sim.create_dir_all(Path::new("/node")).expect("mkdir");
    let mut wal = wal_with(&sim, &wal_dir(), 10, 1);
    wal.set_epoch(3);
    wal.append(b"epoch 3").expect("append");
    wal.sync().expect("sync");
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");
    let b = Position {
        lsn: 30,
        epoch: 2,
        crc: 5,
    };
    let s = primary_snapshot(b, state_bytes(100, 1), 64);
    let c = conflict(transfer(&store, &mut wal, &s).expect_err("conflict"));
    assert_eq!(
        c,
        BoundaryConflict::EpochRegression {
            boundary_epoch: 2,
            local_epoch: 3
        }
    );
    assert!(store.installed().expect("list").is_empty());
    assert_eq!(wal.last().lsn, 11);
}

#[test]
fn fm_7_2_boundary_below_installed_snapshot_is_fatal() {
    let (sim, store, mut wal) = replica(14);
    transfer(&store, &mut wal, &shipped_at(20)).expect("install at 20");
    let s = shipped_at(15);
    let c = conflict(transfer(&store, &mut wal, &s).expect_err("conflict"));
    assert_eq!(
        c,
        BoundaryConflict::BelowLocalBase {
            boundary_lsn: 15,
            local_base_lsn: 20
        }
    );
    let installed = store.installed().expect("list");
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].boundary, primary_pos(20));
    assert!(tmp_entries(&sim, &snap_dir()).is_empty());
}

#[test]
fn fm_7_2_epoch_history_disagreement_is_fatal() {
    let (sim, store, mut wal) = replica(15);
    let s = shipped_at(20);
    let local = EpochHistory::from_entries(vec![EpochEntry {
        epoch: 1,
        start_lsn: 1,
    }])
    .expect("history");
    // The primary says lsns from 5 on were written in epoch 2: the replica's 5..=10 are not its.
    let primary = EpochHistory::from_entries(vec![
        EpochEntry {
            epoch: 1,
            start_lsn: 1,
        },
        EpochEntry {
            epoch: 2,
            start_lsn: 5,
        },
    ])
    .expect("history");
    let mut inst = store.begin_install(&s.offer).expect("begin");
    for c in &s.chunks {
        inst.push_chunk(c).expect("chunk");
    }
    let v = inst.finish(&s.end).expect("finish");
    let e = v
        .commit(
            &mut wal,
            Some(EpochCheck {
                local: &local,
                primary: &primary,
            }),
        )
        .expect_err("conflict");
    // The boundary (epoch 1 at lsn 20) is not in the primary's history either; that is checked first.
    assert_eq!(
        conflict(e),
        BoundaryConflict::EpochNotInHistory {
            lsn: 20,
            boundary_epoch: 1,
            history_epoch: Some(2)
        }
    );
    assert_unchanged(&sim, &store, &wal);
    // With a boundary epoch the primary's history agrees with, the local disagreement is named.
    let boundary = Position {
        lsn: 20,
        epoch: 2,
        crc: 1,
    };
    let c = check_boundary(
        boundary,
        wal.base(),
        wal.last(),
        None,
        Some(EpochCheck {
            local: &local,
            primary: &primary,
        }),
    )
    .expect_err("conflict");
    assert_eq!(c, BoundaryConflict::EpochHistory { lsn: 5 });
}

#[test]
fn fm_7_2_first_record_after_boundary_must_chain_to_boundary_crc() {
    let b = Position {
        lsn: 20,
        epoch: 2,
        crc: 0xabcd,
    };
    let good = RecordHeader {
        crc: 0,
        payload_len: 0,
        lsn: 21,
        epoch: 2,
        prev_crc: 0xabcd,
        flags: 0,
    };
    check_first_after(b, &good).expect("chains");
    let bad = RecordHeader {
        prev_crc: 0xabce,
        ..good
    };
    let c = check_first_after(b, &bad).expect_err("chain break");
    assert!(
        matches!(
            c,
            BoundaryConflict::FirstRecordBreaksChain {
                found_lsn: 21,
                found_prev_crc: 0xabce,
                ..
            }
        ),
        "{c}"
    );
    let gap = RecordHeader { lsn: 22, ..good };
    assert!(check_first_after(b, &gap).is_err());
    let old_epoch = RecordHeader { epoch: 1, ..good };
    assert!(check_first_after(b, &old_epoch).is_err());
}

#[test]
fn boundary_at_local_last_installs_and_cuts_nothing() {
    let (_, store, mut wal) = replica(16);
    let b = wal.last();
    let s = primary_snapshot(b, state_bytes(100, 1), 64);
    let mut inst = store.begin_install(&s.offer).expect("begin");
    for c in &s.chunks {
        inst.push_chunk(c).expect("chunk");
    }
    let out = inst
        .finish(&s.end)
        .expect("finish")
        .commit(&mut wal, None)
        .expect("commit");
    assert_eq!(out.verdict, BoundaryVerdict::AtLocalLast);
    assert_eq!(wal.base(), b);
    assert_eq!(wal.last(), b);
}

// ----------------------------------------------------- any single bit flip

fn sample_file() -> Vec<u8> {
    let s = primary_snapshot(
        Position {
            lsn: 9,
            epoch: 2,
            crc: 0x1234_5678,
        },
        state_bytes(700, 5),
        256,
    );
    assert_eq!(s.offer.chunk_count, 3);
    s.file
}

fn verify_bytes(bytes: Vec<u8>) -> Result<(), InvalidSnapshot> {
    let r = SnapshotReader::open(Mapping::from_vec(bytes), &Limits::default(), None)?;
    r.verify()
}

#[test]
fn every_single_bit_flip_of_a_small_snapshot_is_detected() {
    let file = sample_file();
    verify_bytes(file.clone()).expect("intact file verifies");
    for offset in 0..file.len() {
        for bit in 0..8 {
            let mut f = file.clone();
            f[offset] ^= 1 << bit;
            assert!(
                verify_bytes(f).is_err(),
                "flip at offset {offset} bit {bit} undetected"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_single_bit_flip_is_detected(
        len in 0usize..3000,
        chunk in 1u32..700,
        salt in any::<u8>(),
        pick in any::<u64>(),
        bit in 0u8..8,
    ) {
        let s = primary_snapshot(Position { lsn: 3, epoch: 1, crc: 9 }, state_bytes(len, salt), chunk);
        let mut f = s.file.clone();
        let offset = (pick % f.len() as u64) as usize;
        f[offset] ^= 1 << bit;
        prop_assert!(verify_bytes(f).is_err(), "flip at {} bit {} undetected", offset, bit);
    }

    #[test]
    fn header_round_trips(lsn in any::<u64>(), epoch in any::<u64>(), crc in any::<u32>(),
                          chunk in 1u32..=MAX_CHUNK_SIZE_BYTES, total in 0u64..=walship_snapshot::format::DEFAULT_MAX_TOTAL_BYTES) {
        let h = SnapshotHeader { boundary: Position { lsn, epoch, crc }, chunk_size_bytes: chunk, total_len: total };
        prop_assert_eq!(SnapshotHeader::decode(&h.encode(), &Limits::default()), Ok(h));
    }

    #[test]
    fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = verify_bytes(bytes);
    }
}

// ------------------------------------------- mutated transfers (FM-7.1)

#[derive(Clone, Debug)]
enum Mutation {
    FlipChunkByte { chunk: usize, at: usize, bit: u8 },
    FlipChunkCrc { chunk: usize, bit: u8 },
    DropChunk(usize),
    DuplicateChunk(usize),
    SwapChunks(usize, usize),
    TruncateChunk { chunk: usize, by: usize },
    FlipTrailer { field: u8, bit: u8 },
    FlipOffer { field: u8, bit: u8 },
    None,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..16, 0usize..4096, 0u8..8).prop_map(|(chunk, at, bit)| Mutation::FlipChunkByte {
            chunk,
            at,
            bit
        }),
        (0usize..16, 0u8..32).prop_map(|(chunk, bit)| Mutation::FlipChunkCrc { chunk, bit }),
        (0usize..16).prop_map(Mutation::DropChunk),
        (0usize..16).prop_map(Mutation::DuplicateChunk),
        (0usize..16, 0usize..16).prop_map(|(a, b)| Mutation::SwapChunks(a, b)),
        (0usize..16, 1usize..64).prop_map(|(chunk, by)| Mutation::TruncateChunk { chunk, by }),
        (0u8..4, 0u8..32).prop_map(|(field, bit)| Mutation::FlipTrailer { field, bit }),
        (0u8..6, 0u8..32).prop_map(|(field, bit)| Mutation::FlipOffer { field, bit }),
        Just(Mutation::None),
    ]
}

fn apply_mutation(s: &mut Shipped, m: &Mutation) -> bool {
    let n = s.chunks.len();
    if n == 0 {
        return false;
    }
    match *m {
        Mutation::FlipChunkByte { chunk, at, bit } => {
            let c = &mut s.chunks[chunk % n];
            let at = at % c.bytes.len();
            c.bytes[at] ^= 1 << bit;
        }
        Mutation::FlipChunkCrc { chunk, bit } => s.chunks[chunk % n].crc ^= 1 << bit,
        Mutation::DropChunk(i) => {
            s.chunks.remove(i % n);
        }
        Mutation::DuplicateChunk(i) => {
            let c = s.chunks[i % n].clone();
            s.chunks.insert(i % n, c);
        }
        Mutation::SwapChunks(a, b) => {
            if a % n == b % n {
                return false;
            }
            s.chunks.swap(a % n, b % n);
        }
        Mutation::TruncateChunk { chunk, by } => {
            let c = &mut s.chunks[chunk % n];
            let keep = c.bytes.len().saturating_sub(by);
            c.bytes.truncate(keep);
        }
        Mutation::FlipTrailer { field, bit } => {
            let t = &mut s.end.trailer;
            match field {
                0 => t.header_crc ^= 1 << bit,
                1 => t.chunk_count ^= 1 << bit,
                2 => t.total_len ^= 1 << bit,
                _ => t.payload_crc ^= 1 << bit,
            }
        }
        Mutation::FlipOffer { field, bit } => {
            let o = &mut s.offer;
            match field {
                0 => o.boundary.lsn ^= 1 << bit,
                1 => o.boundary.epoch ^= 1 << bit,
                2 => o.boundary.crc ^= 1 << bit,
                3 => o.total_len ^= 1 << bit,
                4 => o.chunk_size_bytes ^= 1 << bit,
                _ => o.header_crc ^= 1 << bit,
            }
        }
        Mutation::None => return false,
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Any mutated transfer is rejected as invalid (replica unchanged, no
    /// partial snapshot left); an unmutated one installs a byte-identical file.
    #[test]
    fn fm_7_1_mutated_transfer_is_rejected_or_installs_the_exact_file(
        len in 1usize..6000,
        chunk in 200u32..1500,
        m in mutation(),
    ) {
        let (sim, store, mut wal) = replica(21);
        let original = primary_snapshot(primary_pos(20), state_bytes(len, 7), chunk);
        let mut s = original.clone();
        let mutated = apply_mutation(&mut s, &m);
        let mut receiver = walship_snapshot::SnapshotReceiver::new(store.clone());
        let items = std::iter::once(walship_snapshot::TransferItem::Offer(s.offer))
            .chain(s.chunks.iter().cloned().map(walship_snapshot::TransferItem::Chunk))
            .chain(std::iter::once(walship_snapshot::TransferItem::End(s.end)));
        let mut result = Err(None);
        for item in items {
            match receiver.on_item(&item) {
                Ok(walship_snapshot::ReceiveProgress::Complete(v)) => {
                    result = Ok(v);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    result = Err(Some(e));
                    break;
                }
            }
        }
        if mutated {
            match result {
                Err(Some(e)) => prop_assert_eq!(e.class(), FailureClass::Invalid, "{}", e),
                Err(None) => prop_assert!(false, "mutated transfer neither completed nor failed"),
                Ok(_) => prop_assert!(false, "mutation {:?} accepted", m),
            }
            assert_unchanged(&sim, &store, &wal);
        } else {
            let v = result.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            v.commit(&mut wal, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let snap = store.newest().expect("list").expect("one");
            prop_assert_eq!(sim.contents(&snap.file).expect("contents"), original.file);
        }
    }
}
