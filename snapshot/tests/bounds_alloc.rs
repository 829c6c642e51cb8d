//! A length field above its bound is rejected before anything of the claimed
//! size is allocated: proven with a counting global allocator (one test in
//! this binary, so no other test's allocations interfere).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use walship_snapshot::format::{SnapshotHeader, HEADER_LEN, TRAILER_LEN};
use walship_snapshot::{
    InvalidSnapshot, Limits, SnapshotError, SnapshotOffer, SnapshotReader, SnapshotStore,
};
use walship_wal::sim::SimStorage;
use walship_wal::{Mapping, Position};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.store(0, Ordering::SeqCst);
    let r = f();
    (r, LARGEST.load(Ordering::SeqCst))
}

const SMALL: usize = 64 * 1024;

#[test]
fn fm_7_1_oversized_length_fields_are_rejected_before_allocation() {
    let sim = SimStorage::new(1);
    let (store, _) =
        SnapshotStore::open(sim.clone(), &snap_dir(), Limits::default()).expect("open");

    // An offer claiming 4 GiB chunks and an 16 EiB payload.
    let offer = SnapshotOffer {
        boundary: Position {
            lsn: 1,
            epoch: 1,
            crc: 1,
        },
        total_len: u64::MAX,
        chunk_size_bytes: u32::MAX,
        chunk_count: 1,
        header_crc: 0,
        configuration: Vec::new(),
    };
    let (r, largest) = largest_during(|| store.begin_install(&offer));
    assert!(
        matches!(
            r,
            Err(SnapshotError::Invalid(
                InvalidSnapshot::ChunkSizeOutOfBounds { .. }
            ))
        ),
        "{r:?}"
    );
    assert!(largest < SMALL, "allocated {largest} bytes");
    assert!(tmp_entries(&sim, &snap_dir()).is_empty());

    // A file whose (valid-crc) header claims 60 GiB of 4 MiB chunks, but
    // which holds only header + trailer: rejected by its length, nothing read.
    let h = SnapshotHeader {
        boundary: offer.boundary,
        chunk_size_bytes: 4 * 1024 * 1024,
        total_len: 60 * 1024 * 1024 * 1024,
    };
    let mut file = h.encode().to_vec();
    file.extend_from_slice(&[0u8; TRAILER_LEN]);
    let map = Mapping::from_vec(file);
    let (r, largest) = largest_during(|| SnapshotReader::open(map, &Limits::default(), None));
    assert_eq!(
        r.expect_err("rejected"),
        InvalidSnapshot::FileLength {
            expected: h.file_len(),
            found: (HEADER_LEN + TRAILER_LEN) as u64
        }
    );
    assert!(largest < SMALL, "allocated {largest} bytes");

    // A header above the configured total bound.
    let h = SnapshotHeader {
        total_len: Limits::default().max_total_bytes + 1,
        ..h
    };
    let (r, largest) = largest_during(|| SnapshotHeader::decode(&h.encode(), &Limits::default()));
    assert!(
        matches!(r, Err(InvalidSnapshot::TotalTooLarge { .. })),
        "{r:?}"
    );
    assert!(largest < SMALL, "allocated {largest} bytes");
}
