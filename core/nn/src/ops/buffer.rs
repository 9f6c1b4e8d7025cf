//! Buffers: borrowed views of candle storage ([`view`]), outputs written in parallel chunks
//! without a zeroing pass ([`par_init`]), and the raw pointer the tiled kernels share.

use candle_core::{Result, Tensor as CTensor};
use rayon::prelude::*;

/// Run `f` on the f32 values of `t` in row-major order, borrowed when `t` is contiguous on the
/// CPU (no copy), else on a contiguous copy.
pub(crate) fn with_slice<R>(t: &CTensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    Ok(f(&view(t)?))
}

/// `n` values written by `f` on parallel chunks of `chunk` values (`f(chunk index, chunk)`),
/// with no zeroing pass first (large buffers come back from the allocator's cache, see
/// [`crate::alloc`], and zeroing them would be one more pass over memory). `f` must write every
/// value of its chunk.
pub(crate) fn par_init(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| f(i, c));
    // SAFETY: `f` wrote all n values (its contract); f32 has no invalid bit patterns anyway.
    unsafe { v.set_len(n) };
    v
}

/// The f32 values of a tensor in row-major order: borrowed from its storage when it is
/// contiguous on the CPU (no copy), else a contiguous copy. Derefs to `[f32]`.
pub struct View<'a> {
    ptr: *const f32,
    len: usize,
    /// Keeps the storage's read lock while the view lives (never touched after creation).
    _guard: Option<Box<dyn Held + 'a>>,
    _owned: Vec<f32>,
}

/// Anything kept alive for its drop (here a storage read lock).
trait Held {}

impl<T> Held for T {}

// SAFETY: a shared `View` only hands out `&[f32]` into storage that its guard keeps alive and
// unwritten (or into its own vector); the guard itself is never used through `&View`.

unsafe impl Sync for View<'_> {}

impl std::ops::Deref for View<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: ptr/len describe a live, read-locked (or owned) f32 buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A [`View`] of `t`.
pub fn view(t: &CTensor) -> Result<View<'_>> {
    let (storage, layout) = t.storage_and_layout();
    let borrowed = match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(cpu), Some((a, b))) => cpu
            .as_slice::<f32>()
            .ok()
            .map(|v| (v[a..b].as_ptr(), b - a)),
        _ => None,
    };
    if let Some((ptr, len)) = borrowed {
        return Ok(View {
            ptr,
            len,
            _guard: Some(Box::new(storage)),
            _owned: vec![],
        });
    }
    drop(storage);
    let owned = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(View {
        ptr: owned.as_ptr(),
        len: owned.len(),
        _guard: None,
        _owned: owned,
    })
}

pub(crate) fn data(x: &CTensor) -> Result<Vec<f32>> {
    x.flatten_all()?.to_vec1::<f32>()
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

unsafe impl Send for SendPtr {}

unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
