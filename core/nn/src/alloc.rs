//! A global allocator for srhost's binaries that keeps large freed blocks for reuse.
//!
//! A forward pass or an LRP pass allocates the same activation-sized buffers (megabytes to
//! hundreds of megabytes) for every image of a batch run. The system allocator returns blocks
//! that large to the kernel when they are freed (`munmap`), so every new buffer pays a page
//! fault and a page clear per 4 KiB on first touch: measured here, that was 10-20% of an LRP
//! pass on VGG-16 and more at batch 8. [`ReuseLarge`] keeps up to [`SLOTS`] freed blocks of at
//! least [`MIN_BYTES`] (at most [`MAX_CACHED_BYTES`] in all, the oldest evicted first) and hands
//! one back when a block of exactly the same size and alignment is asked for; everything else
//! goes to the system allocator unchanged.
//!
//! A binary opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: sr_nn::alloc::ReuseLarge = sr_nn::alloc::ReuseLarge;
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
/// The most memory kept in freed blocks, unless [`set_cache_limit`] says otherwise.
pub const MAX_CACHED_BYTES: usize = 3 << 30;

/// The limit in force (bytes); 0 keeps nothing.
static LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(MAX_CACHED_BYTES);

/// Set how much freed memory is kept for reuse (0: none, every block goes back to the system).
/// Blocks already kept beyond a lower limit are released as others are freed.
pub fn set_cache_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The environment variable that sets the limit for `srhost`, in MiB.
pub const CACHE_ENV: &str = "SRHOST_BUFFER_CACHE_MB";

/// Parse [`CACHE_ENV`]'s value: a whole number of MiB.
pub fn parse_cache_mb(value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|mb| mb.checked_mul(1 << 20))
        .ok_or_else(|| {
            format!(
                "{CACHE_ENV}=`{value}`: expected a whole number of MiB (0 keeps no freed buffers)"
            )
        })
}

#[derive(Clone, Copy)]
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    /// When it was kept (a counter): the oldest block is evicted first.
    age: u64,
}

struct Cache {
    blocks: [Option<Block>; SLOTS],
    bytes: usize,
    clock: u64,
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
        clock: 0,
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

/// Keep a freed block, evicting the oldest kept blocks (up to four) while the cache is full, so
/// that blocks never asked for again (a dropped model's weights) do not crowd out the
/// activations. Returns what is to be freed, outside the lock: the evicted blocks, and the
/// block itself when there is still no room for it.
fn keep(ptr: *mut u8, layout: Layout) -> [Option<Block>; 5] {
    let mut out = [None; 5];
    let me = Block {
        ptr,
        size: layout.size(),
        align: layout.align(),
        age: 0,
    };
    let limit = LIMIT.load(Ordering::Relaxed);
    if me.size > limit {
        out[4] = Some(me);
        return out;
    }
    // Put `me` in a free slot if it fits.
    let insert = |c: &mut Cache| -> bool {
        if c.bytes + me.size > limit {
            return false;
        }
        let Some(slot) = c.blocks.iter().position(|b| b.is_none()) else {
            return false;
        };
        c.clock += 1;
        c.blocks[slot] = Some(Block { age: c.clock, ..me });
        c.bytes += me.size;
        true
    };
    with_cache(|c| {
        for slot_out in out.iter_mut().take(4) {
            if insert(c) {
                return;
            }
            let oldest = c
                .blocks
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|b| (b.age, i)))
                .min()
                .map(|(_, i)| i);
            let Some(oldest) = oldest else { break };
            let b = c.blocks[oldest].take().expect("found above");
            c.bytes -= b.size;
            *slot_out = Some(b);
        }
        if !insert(c) {
            out[4] = Some(me);
        }
    });
    out
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
        if layout.size() < MIN_BYTES {
            return System.dealloc(ptr, layout);
        }
        for b in keep(ptr, layout).into_iter().flatten() {
            System.dealloc(b.ptr, Layout::from_size_align_unchecked(b.size, b.align));
        }
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

    #[test]
    fn the_cache_limit_is_parsed_in_mib_with_a_clear_error() {
        assert_eq!(parse_cache_mb("512"), Ok(512 << 20));
        assert_eq!(parse_cache_mb(" 0 "), Ok(0));
        let e = parse_cache_mb("2GB").unwrap_err();
        assert!(
            e.contains("SRHOST_BUFFER_CACHE_MB=`2GB`") && e.contains("MiB"),
            "{e}"
        );
        assert!(parse_cache_mb("-1").is_err());
    }

    #[test]
    fn a_full_cache_evicts_its_oldest_blocks() {
        let a = ReuseLarge;
        // Four blocks of 1 GiB, never touched (no memory is actually used), then freed: the
        // cache keeps at most MAX_CACHED_BYTES, so the first one freed is evicted.
        let layout = Layout::from_size_align(1 << 30, 4096).unwrap();
        unsafe {
            let ps: Vec<*mut u8> = (0..4).map(|_| a.alloc(layout)).collect();
            assert!(ps.iter().all(|p| !p.is_null()));
            for &p in &ps {
                a.dealloc(p, layout);
            }
            let kept: Vec<*mut u8> = with_cache(|c| {
                assert!(c.bytes <= MAX_CACHED_BYTES);
                c.blocks.iter().flatten().map(|b| b.ptr).collect()
            });
            assert!(!kept.contains(&ps[0]), "the oldest block was kept");
            assert!(kept.contains(&ps[3]), "the newest block was not kept");
            // Give them back so other tests start from an emptier cache.
            for &p in &ps[1..] {
                if let Some(q) = take(layout) {
                    System.dealloc(q, layout);
                }
                let _ = p;
            }
        }
    }
}
