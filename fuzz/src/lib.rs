//! Shared pieces of the walship fuzz targets: an allocation tracker (so a target can
//! assert that no decoder allocates a length it read from untrusted bytes), and a
//! no-op executor for the in-memory `FrameSource` futures of walship-wire.
//!
//! The targets themselves are in `fuzz_targets/`; run one with
//! `cargo +nightly fuzz run <target> -- -max_total_time=60 -rss_limit_mb=512 -malloc_limit_mb=256`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

/// Global allocator that remembers the largest single allocation (or reallocation)
/// since the last [`reset_largest_alloc`]. Delegates to the system allocator, so
/// AddressSanitizer still sees every allocation.
pub struct TrackingAlloc;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged;
// the only addition is a relaxed atomic max on the requested size.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: TrackingAlloc = TrackingAlloc;

/// Forgets the largest allocation seen so far.
pub fn reset_largest_alloc() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// The largest single allocation since the last [`reset_largest_alloc`].
pub fn largest_alloc() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

/// Runs `f`, then panics if any single allocation made while it ran exceeded `bound`
/// bytes (the decoder allocated a length it was told rather than one it had seen).
pub fn with_alloc_bound<R>(what: &str, bound: usize, f: impl FnOnce() -> R) -> R {
    reset_largest_alloc();
    let r = f();
    let largest = largest_alloc();
    assert!(
        largest <= bound,
        "{what}: allocated {largest} bytes at once, bound {bound}"
    );
    r
}

/// Drives a future that never waits (all walship-wire `FrameSource`s over memory are
/// always ready) to completion. Panics if it returns `Pending`.
pub fn block_on_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory frame source future returned Pending"),
    }
}
