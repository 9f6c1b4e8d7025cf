//! A global allocator for srhost's binaries that keeps large freed blocks for reuse.
//!
//! A forward pass or an LRP pass allocates the same activation-sized buffers (megabytes to
//! hundreds of megabytes) for every image of a batch run. The system allocator returns blocks
//! that large to the kernel when they are freed (`munmap`), so every new buffer pays a page
//! fault and a page clear per 4 KiB on first touch: measured here, that was 10-20% of an LRP
//! pass on VGG-16 and more at batch 8. [`ReuseLarge`] keeps up to [`SLOTS`] freed blocks of at
//! least [`MIN_BYTES`] (at most [`MAX_CACHED_BYTES`] in all) and hands one back when a block of
//! exactly the same size and alignment is asked for; everything else goes to the system
//! allocator unchanged.
//!
//! A binary opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: sr_core::alloc::ReuseLarge = sr_core::alloc::ReuseLarge;
//! ```
//!
//! (`srhost` and the benches do; a library never chooses the allocator of its users).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks smaller than this go straight to the system allocator.
pub const MIN_BYTES: usize = 128 << 10;
/// How many freed blocks are kept.
pub const SLOTS: usize = 512;
/// The most memory kept in freed blocks.
pub const MAX_CACHED_BYTES: usize = 3 << 30;

#[derive(Clone, Copy)]
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
}

struct Cache {
    blocks: [Option<Block>; SLOTS],
    bytes: usize,
}

struct Shared {
    lock: AtomicBool,
    cache: UnsafeCell<Cache>,
}

// SAFETY: `cache` is only touched while `lock` is held (see `with_cache`).
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    lock: AtomicBool::new(false),
    cache: UnsafeCell::new(Cache {
        blocks: [None; SLOTS],
        bytes: 0,
    }),
};

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    while SHARED
        .lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
    // SAFETY: the lock is held, so this is the only reference.
    let r = f(unsafe { &mut *SHARED.cache.get() });
    SHARED.lock.store(false, Ordering::Release);
    r
}

/// Take a cached block of exactly this size and alignment.
fn take(layout: Layout) -> Option<*mut u8> {
    with_cache(|c| {
        let slot = c
            .blocks
            .iter_mut()
            .find(|b| b.is_some_and(|b| b.size == layout.size() && b.align == layout.align()))?;
        let b = slot.take()?;
        c.bytes -= b.size;
        Some(b.ptr)
    })
}

/// Keep a freed block; false when the cache is full.
fn keep(ptr: *mut u8, layout: Layout) -> bool {
    with_cache(|c| {
        if c.bytes + layout.size() > MAX_CACHED_BYTES {
            return false;
        }
        match c.blocks.iter_mut().find(|b| b.is_none()) {
            Some(slot) => {
                *slot = Some(Block {
                    ptr,
                    size: layout.size(),
                    align: layout.align(),
                });
                c.bytes += layout.size();
                true
            }
            None => false,
        }
    })
}

/// The system allocator, keeping large freed blocks for reuse (see the module docs).
pub struct ReuseLarge;

// SAFETY: every block handed out is either fresh from `System` with the requested layout or a
// block previously allocated by `System` with exactly the same size and alignment; blocks are
// given back to `System` with the layout they were allocated with.
unsafe impl GlobalAlloc for ReuseLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_BYTES {
            if let Some(p) = take(layout) {
                return p;
            }
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_BYTES {
            if let Some(p) = take(layout) {
                std::ptr::write_bytes(p, 0, layout.size());
                return p;
            }
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= MIN_BYTES && keep(ptr, layout) {
            return;
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < MIN_BYTES && new_size < MIN_BYTES {
            return System.realloc(ptr, layout, new_size);
        }
        // SAFETY: the caller guarantees a valid layout for the new size.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let p = self.alloc(new_layout);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_reused_and_zeroed_on_request() {
        let a = ReuseLarge;
        let layout = Layout::from_size_align(MIN_BYTES + 4096, 64).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, layout.size());
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            // Zeroed whether or not it is the same block (another test may have taken it).
            assert!((0..layout.size()).step_by(4093).all(|i| *q.add(i) == 0));
            a.dealloc(q, layout);
            // A different size is never served from the cache with the wrong size.
            let other = Layout::from_size_align(MIN_BYTES + 8192, 64).unwrap();
            let r = a.realloc(a.alloc(layout), layout, other.size());
            r.write_bytes(1, other.size());
            a.dealloc(r, other);
        }
    }
}
