//! Live heap bytes, for soak runs. In test builds (the `fault-injection`
//! feature, which the test suite enables) the binary's global allocator is
//! mimalloc wrapped in [`Counting`], which keeps the bytes allocated and not
//! yet freed; the metrics page then shows them as
//! `ociregistry_heap_live_bytes`. A soak compares them with RSS: live bytes
//! climbing is a leak, a flat count under a rising RSS is memory the allocator
//! keeps for reuse. Release builds have no wrapper and no such series.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// A global allocator that counts the bytes `A` holds for the program.
pub struct Counting<A>(pub A);

// SAFETY: every call is forwarded unchanged to `A`, a GlobalAlloc; the counter
// only observes sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = self.0.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = self.0.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.0.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = self.0.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes allocated through [`Counting`] and not freed; `None` when the
/// binary's allocator does not count (release builds, or a library user).
pub fn live_bytes() -> Option<u64> {
    let live = LIVE.load(Ordering::Relaxed);
    (cfg!(feature = "fault-injection") && live > 0).then_some(live as u64)
}
