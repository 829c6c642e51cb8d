//! An oversized length prefix is refused before anything of the claimed size is allocated.
//! A counting global allocator records the largest single allocation; this file holds one test
//! so that no other test allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

mod support;

use walship_wire::frame::{FrameDecoder, FrameError, MAX_FRAME_BYTES};
use walship_wire::stream::read_frame;

struct PeakAlloc;

static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only records sizes.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PEAK.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

#[tokio::test]
async fn oversized_prefix_is_refused_without_allocating_the_claimed_size() {
    let claimed = u32::MAX;

    // Sans-IO decoder.
    let mut decoder = FrameDecoder::default();
    PEAK.store(0, Ordering::SeqCst);
    let result = decoder.push(&claimed.to_le_bytes());
    let peak = PEAK.load(Ordering::SeqCst);
    assert!(matches!(result, Err(FrameError::TooLarge { len, .. }) if len == claimed));
    assert!(
        peak < 4096,
        "decoder allocated {peak} bytes for a refused prefix"
    );

    // quinn stream: the prefix claims 4 GiB, followed by some body bytes.
    let pair = support::connected_pair().await;
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    let mut bytes = claimed.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xAA; 1024]);
    send.write_all(&bytes).await.expect("write");
    send.finish().expect("finish");
    let (_s, mut recv) = pair.server.accept_bi().await.expect("accept");
    PEAK.store(0, Ordering::SeqCst);
    let result = read_frame(&mut recv, MAX_FRAME_BYTES).await;
    let peak = PEAK.load(Ordering::SeqCst);
    assert!(
        matches!(result, Err(FrameError::TooLarge { len, max: MAX_FRAME_BYTES }) if len == claimed)
    );
    assert!(
        peak < 1024 * 1024,
        "read_frame allocated {peak} bytes for a refused prefix (claimed {claimed})"
    );
}
