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
use std::sync::OnceLock;
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

/// Whether targets should skip inputs that reach a known, reported, still-open bug (see
/// `README.md`). Set `WALSHIP_FUZZ_KNOWN_BUGS=1` to reach them anyway (to reproduce them or
/// to check a fix).
pub fn skip_known_bugs() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("WALSHIP_FUZZ_KNOWN_BUGS").is_none())
}

/// Reads a bincode-2 standard-config varint u64 at `*at` (tag byte < 251: the value; 251,
/// 252, 253: a u16, u32, u64 follows, little-endian).
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let tag = *b.get(*at)?;
    *at += 1;
    let n = match tag {
        0..=250 => return Some(u64::from(tag)),
        251 => 2,
        252 => 4,
        253 => 8,
        _ => return None,
    };
    let bytes = b.get(*at..*at + n)?;
    *at += n;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some(u64::from_le_bytes(v))
}

/// True if some frame of `stream` (walked by length prefix) is a `Records` body whose byte
/// length is within 2^16 of u64::MAX: the input of open bug wire-2 (stream reader overflow).
pub fn reaches_wire_2(stream: &[u8]) -> bool {
    let mut at = 0;
    while let Some(prefix) = stream.get(at..at + 4) {
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let body = &stream[at + 4..];
        let mut p = 0;
        if varint(body, &mut p) == Some(5)
            && varint(body, &mut p).is_some()
            && varint(body, &mut p).is_some()
            && varint(body, &mut p).is_some_and(|n| n > u64::MAX - (1 << 16))
        {
            return true;
        }
        if len == 0 {
            return false;
        }
        at += 4 + len;
    }
    false
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
