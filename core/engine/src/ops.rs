//! Layer primitives shared by the executor and the relevance methods: forward maps of the
//! linear layers (conv, dense, pooling) with arbitrary weights, and their transposes
//! (vector-Jacobian products with respect to the input), which is what every LRP rule and the
//! gradient are made of.
//!
//! Convolutions keep the IR's conventions (4-sided zero padding, groups, dilation). A stride-1
//! transpose is the forward convolution with the kernel flipped ([`flip_kernel`]); any other is
//! `W^T s` by a matrix product followed by a col2im that scatters the columns back, parallel
//! over channel planes with a fixed summation order, so results do not depend on the thread
//! count. Depthwise convolutions take direct loops. Element-wise steps of the rules run fused
//! ([`zip_map`]) on borrowed storage ([`view`]), not as one candle op and one buffer per step.

use candle_core::{Device, Result, Tensor as CTensor};
use rayon::prelude::*;

/// The geometry of a 2-D convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
}

impl Window {
    /// The window and group count of a `Conv2d` node whose weights are `[O, I/g, kh, kw]`.
    pub fn of_conv(op: &crate::graph::Op, weight_dims: &[usize]) -> Option<(Window, usize)> {
        match op {
            crate::graph::Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            } => Some((
                Window {
                    kernel: [weight_dims[2], weight_dims[3]],
                    stride: *stride,
                    padding: *padding,
                    dilation: *dilation,
                },
                *groups,
            )),
            _ => None,
        }
    }

    fn extent(&self, axis: usize) -> usize {
        (self.kernel[axis] - 1) * self.dilation[axis] + 1
    }
    /// Output size for an `h x w` input (floor mode).
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let o = |len: usize, axis: usize, p0: usize, p1: usize| {
            (len + p0 + p1 - self.extent(axis)) / self.stride[axis] + 1
        };
        (
            o(h, 0, self.padding[0], self.padding[2]),
            o(w, 1, self.padding[1], self.padding[3]),
        )
    }
}

/// An activation's open interval `(lo, hi)` folded into the factor of a transposed map: the
/// factor `x` counts as `x * 1[lo < x < hi]` (a clip activation's derivative, read off its
/// output), `None` leaves it as it is.
pub type Gate = Option<(f32, f32)>;

/// `x * 1[lo < x < hi]`.
#[inline(always)]
pub fn gated(x: f32, (lo, hi): (f32, f32)) -> f32 {
    if x > lo && x < hi {
        x
    } else {
        0.0
    }
}

/// `1[lo < a < hi]`: the derivative of a clip activation (ReLU6; ReLU with `(0, +inf)`) read
/// off its output `a`.
#[inline(always)]
pub fn open_mask(a: f32, (lo, hi): (f32, f32)) -> f32 {
    (a > lo && a < hi) as u8 as f32
}

/// `v * 1[lo < a < hi]` element-wise ([`open_mask`]): an activation's gradient mask applied to
/// the value `v` sent back through it, `a` being the activation's output.
pub fn masked(v: &CTensor, a: &CTensor, gate: (f32, f32)) -> Result<CTensor> {
    zip_map(v, a, |v, a| v * open_mask(a, gate))
}

/// A stabilised divisor `d(z)` of the traced output `z` of a layer: the first step of the
/// epsilon-like rules is `s = r / d(z)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stab {
    /// `z + e * sign0(z)` ([`stab`]; epsilon).
    Sign(f32),
    /// `z + e` (the paper's code).
    Add(f32),
}

impl Stab {
    #[inline(always)]
    pub fn of(self, z: f32) -> f32 {
        match self {
            Stab::Sign(e) => stab(z, e),
            Stab::Add(e) => z + e,
        }
    }

    /// `r / d(z)` element-wise, in one pass.
    pub fn divide(self, r: &CTensor, z: &CTensor) -> Result<CTensor> {
        match self {
            Stab::Sign(e) => zip_map(r, z, |r, z| r / stab(z, e)),
            Stab::Add(e) => zip_map(r, z, |r, z| r / (z + e)),
        }
    }
}

/// An element-wise activation as the trace computed it: the value a layer's input has, given
/// the output `z` of the layer below when only this activation (and dropout or flatten) lies
/// between them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Identity,
    Relu,
    Clip(f32, f32),
}

impl Act {
    #[inline(always)]
    pub fn of(self, z: f32) -> f32 {
        match self {
            Act::Identity => z,
            Act::Relu => z.max(0.0),
            Act::Clip(lo, hi) => z.max(lo).min(hi),
        }
    }
}

/// How the output `c` of a transposed map is finished, element-wise, while it is in cache:
/// `c * gated(times, gate)`, then divided by `d(z)` when `div` is `(z, d)` (the division that
/// the rule of the layer below would start with: see [`crate::propagate`]).
#[derive(Clone, Copy)]
pub struct Finish<'a> {
    pub times: &'a CTensor,
    pub gate: Gate,
    pub div: Option<(&'a CTensor, Stab)>,
    /// With `div`: `times` equals `act(z)` value for value (the layer's input is the
    /// activation of the layer below's output), so `act(z)` is used and `times` never read.
    pub times_of_div: Option<Act>,
}

impl<'a> Finish<'a> {
    /// `c * times`.
    pub fn times(times: &'a CTensor) -> Self {
        Finish {
            times,
            gate: None,
            div: None,
            times_of_div: None,
        }
    }

    fn views(&self, len: usize) -> Result<FinishView<'a>> {
        let times = view(self.times)?;
        let div = match self.div {
            Some((z, d)) => Some((view(z)?, d)),
            None => None,
        };
        if times.len() != len || div.as_ref().is_some_and(|(z, _)| z.len() != len) {
            candle_core::bail!(
                "finish: factor {:?} (divisor {:?}) for {len} values",
                self.times.dims(),
                self.div.map(|(z, _)| z.dims().to_vec())
            );
        }
        Ok(FinishView {
            times,
            gate: self.gate,
            div,
            times_of_div: self.times_of_div,
        })
    }
}

/// [`Finish`] on borrowed storage.
struct FinishView<'a> {
    times: View<'a>,
    gate: Gate,
    div: Option<(View<'a>, Stab)>,
    times_of_div: Option<Act>,
}

/// `o = o * gated(a(x), gate) / d(z)` over `o`, the factor's source `x` and `z`.
#[inline(always)]
fn finish_div(
    o: &mut [f32],
    x: &[f32],
    z: &[f32],
    a: impl Fn(f32) -> f32,
    d: impl Fn(f32) -> f32,
    gate: Gate,
) {
    let vals = o.iter_mut().zip(x).zip(z);
    match gate {
        None => vals.for_each(|((o, &x), &z)| *o = *o * a(x) / d(z)),
        Some(g) => vals.for_each(|((o, &x), &z)| *o = *o * gated(a(x), g) / d(z)),
    }
}

impl FinishView<'_> {
    /// Finish `o`, the values `at .. at + o.len()` of the map's output.
    #[inline]
    fn apply(&self, o: &mut [f32], at: usize) {
        let x = &self.times[at..at + o.len()];
        match (&self.div, self.gate) {
            (None, None) => o.iter_mut().zip(x).for_each(|(o, &x)| *o *= x),
            (None, Some(g)) => o.iter_mut().zip(x).for_each(|(o, &x)| *o *= gated(x, g)),
            (Some((z, d)), g) => {
                let z = &z[at..at + o.len()];
                // The factor: `times` itself, or read off `z`.
                let (x, act) = match self.times_of_div {
                    Some(act) => (z, act),
                    None => (x, Act::Identity),
                };
                match (act, *d) {
                    (Act::Identity, Stab::Sign(e)) => finish_div(o, x, z, |x| x, |z| stab(z, e), g),
                    (Act::Identity, Stab::Add(e)) => finish_div(o, x, z, |x| x, |z| z + e, g),
                    (Act::Relu, Stab::Sign(e)) => {
                        finish_div(o, x, z, |x| x.max(0.0), |z| stab(z, e), g)
                    }
                    (Act::Relu, Stab::Add(e)) => finish_div(o, x, z, |x| x.max(0.0), |z| z + e, g),
                    (Act::Clip(lo, hi), Stab::Sign(e)) => {
                        finish_div(o, x, z, |x| x.max(lo).min(hi), |z| stab(z, e), g)
                    }
                    (Act::Clip(lo, hi), Stab::Add(e)) => {
                        finish_div(o, x, z, |x| x.max(lo).min(hi), |z| z + e, g)
                    }
                }
            }
        }
    }
}

/// `c` finished by `f` in one pass (for the maps that do not finish inside their own loops).
pub fn finish(c: &CTensor, f: &Finish) -> Result<CTensor> {
    let n = c.elem_count();
    let fv = f.views(n)?;
    let out = with_slice(c, |cs| {
        const CHUNK: usize = 1 << 15;
        let mut out = par_init(n, CHUNK, |i, o| {
            for (o, &c) in o.iter_mut().zip(&cs[i * CHUNK..]) {
                o.write(c);
            }
        });
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, o)| fv.apply(o, i * CHUNK));
        out
    })?;
    CTensor::from_vec(out, c.shape(), &Device::Cpu)
}

/// Run `f` on the f32 values of `t` in row-major order, borrowed when `t` is contiguous on the
/// CPU (no copy), else on a contiguous copy.
fn with_slice<R>(t: &CTensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    Ok(f(&view(t)?))
}

/// `f(a_i, b_i)` for every element of two tensors of one shape, in one pass (the rules'
/// element-wise steps, fused instead of one candle op and one buffer per step). Each element
/// is computed on its own, so the result does not depend on the thread count.
pub fn zip_map(a: &CTensor, b: &CTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<CTensor> {
    if a.dims() != b.dims() {
        candle_core::bail!("zip_map: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    let out = with_slice(a, |xs| {
        with_slice(b, |ys| {
            const CHUNK: usize = 1 << 15;
            par_init(xs.len(), CHUNK, |i, o| {
                let (x, y) = (&xs[i * CHUNK..], &ys[i * CHUNK..]);
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    o.write(f(x, y));
                }
            })
        })
    })??;
    CTensor::from_vec(out, a.shape(), &Device::Cpu)
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

/// `d + e * sign0(d)` for one value, `sign0(d) = 1` for `d >= 0`, else `-1` (Zennit's
/// stabiliser; [`crate::propagate::stabilise`] on a whole tensor).
#[inline(always)]
pub fn stab(d: f32, e: f32) -> f32 {
    d + if d >= 0.0 { e } else { -e }
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

fn data(x: &CTensor) -> Result<Vec<f32>> {
    x.flatten_all()?.to_vec1::<f32>()
}

/// `conv(x, w) + b` with the IR's padding and groups.
pub fn conv2d(
    x: &CTensor,
    w: &CTensor,
    b: Option<&CTensor>,
    win: &Window,
    groups: usize,
) -> Result<CTensor> {
    let (_, cin, _, _) = x.dims4()?;
    let (cout, _, _, _) = w.dims4()?;
    let y = if groups > 1 && groups == cin && cout == cin {
        depthwise(x, &data(w)?, win)?
    } else if groups == 1 {
        return conv2d_dense(x, w, b, win);
    } else {
        let [pt, pl, pb, pr] = win.padding;
        if win.stride[0] != win.stride[1] || win.dilation[0] != win.dilation[1] {
            candle_core::bail!(
                "non-square stride {:?} or dilation {:?} is not supported",
                win.stride,
                win.dilation
            )
        }
        if pt == pb && pl == pr && pt == pl {
            x.conv2d(w, pt, win.stride[0], win.dilation[0], groups)?
        } else {
            x.pad_with_zeros(2, pt, pb)?
                .pad_with_zeros(3, pl, pr)?
                .conv2d(w, 0, win.stride[0], win.dilation[0], groups)?
        }
    };
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// A dense convolution (`groups == 1`) as tiles of im2col + one gemm each, written straight
/// into the NCHW output, plus the bias. Tiles of output rows run in parallel (rayon), each gemm
/// single-threaded, so the work splits evenly and no im2col matrix of the whole image is ever
/// built. A 1 x 1 stride-1 unpadded convolution reads the input directly (no im2col).
pub fn conv2d_dense(
    x: &CTensor,
    w: &CTensor,
    b: Option<&CTensor>,
    win: &Window,
) -> Result<CTensor> {
    conv2d_dense_times(x, w, b, win, None)
}

/// [`conv2d_dense`], finished by `fin` (see [`Finish`]; shaped like the output) inside each
/// tile while it is in cache, when given.
fn conv2d_dense_times(
    x: &CTensor,
    w: &CTensor,
    b: Option<&CTensor>,
    win: &Window,
    fin: Option<&Finish>,
) -> Result<CTensor> {
    let (n, cin, h, wd) = x.dims4()?;
    let (cout, cin_w, kh, kw) = w.dims4()?;
    if cin_w != cin {
        candle_core::bail!(
            "conv2d_dense: weight {:?} for {cin} input channels",
            w.dims()
        );
    }
    let (oh, ow) = win.out_size(h, wd);
    if let Some(f) = fin {
        if f.times.dims() != [n, cout, oh, ow] {
            candle_core::bail!(
                "conv2d_dense: factor {:?} for an output [{n}, {cout}, {oh}, {ow}]",
                f.times.dims()
            );
        }
    }
    let bias = match b {
        Some(b) => data(b)?,
        None => vec![0f32; cout],
    };
    let fv = fin.map(|f| f.views(n * cout * oh * ow)).transpose()?;
    let out = with_slice(x, |xs| {
        with_slice(w, |ws| {
            dense_into(
                xs,
                ws,
                &bias,
                (n, cin, h, wd),
                (cout, kh, kw),
                win,
                fv.as_ref(),
            )
        })
    })??;
    CTensor::from_vec(out, (n, cout, oh, ow), &Device::Cpu)
}

/// [`conv2d_dense`] on raw row-major slices.
fn dense_into(
    xs: &[f32],
    ws: &[f32],
    bias: &[f32],
    (n, cin, h, wd): (usize, usize, usize, usize),
    (cout, kh, kw): (usize, usize, usize),
    win: &Window,
    fin: Option<&FinishView>,
) -> Vec<f32> {
    let (oh, ow) = win.out_size(h, wd);
    let (s, d, p) = (win.stride, win.dilation, win.padding);
    let k = cin * kh * kw;
    let plane = oh * ow;
    // Every output starts at its bias; the tiles' gemms accumulate onto it.
    let mut out = par_init(n * cout * plane, plane.max(1), |i, o| {
        for v in o {
            v.write(bias[i % cout]);
        }
    });
    for (bi, ob) in out.chunks_mut(cout * plane).enumerate() {
        let src = &xs[bi * cin * h * wd..(bi + 1) * cin * h * wd];
        let pointwise = kh == 1 && kw == 1 && s == [1, 1] && p == [0; 4];
        // Output rows per tile: about 64 KiB of im2col columns per row block, at least one row.
        // (Fixed by the shapes, not the thread count, so results do not depend on it; a 1x1
        // convolution reads the input in place and takes tiles of about 4096 columns.)
        let rows = if pointwise {
            (4096 / ow.max(1)).clamp(1, oh.max(1))
        } else {
            ((16384 / (k * ow).max(1)).max(1)).min(oh)
        };
        let tiles: Vec<usize> = (0..oh).step_by(rows.max(1)).collect();
        let dst = SendPtr(ob.as_mut_ptr());
        tiles.par_iter().for_each(|&oy0| {
            let oy1 = (oy0 + rows).min(oh);
            let ncols = (oy1 - oy0) * ow;
            let mut col = Vec::new();
            let rhs: *const f32 = if pointwise {
                // SAFETY: in bounds, the input plane holds oh * ow = h * wd values per channel.
                unsafe { src.as_ptr().add(oy0 * ow) }
            } else {
                col.resize(k * ncols, 0f32);
                // Per kernel column, the output columns whose input column is inside the
                // image: a contiguous (stride 1) or strided copy, zeros around it.
                let taps = tap_columns(kw, s[1], d[1], p[1], wd, ow);
                for ci in 0..cin {
                    for ky in 0..kh {
                        for (kx, &(lo, hi)) in taps.iter().enumerate() {
                            let row = &mut col[((ci * kh + ky) * kw + kx) * ncols..][..ncols];
                            for oy in oy0..oy1 {
                                let iy = (oy * s[0] + ky * d[0]) as isize - p[0] as isize;
                                let dst_row = &mut row[(oy - oy0) * ow..][..ow];
                                if iy < 0 || iy >= h as isize || lo >= hi {
                                    dst_row.fill(0.0);
                                    continue;
                                }
                                let srow = &src[(ci * h + iy as usize) * wd..][..wd];
                                dst_row[..lo].fill(0.0);
                                dst_row[hi..].fill(0.0);
                                let first = lo * s[1] + kx * d[1] - p[1];
                                if s[1] == 1 {
                                    dst_row[lo..hi]
                                        .copy_from_slice(&srow[first..first + (hi - lo)]);
                                } else {
                                    for (j, v) in dst_row[lo..hi].iter_mut().enumerate() {
                                        *v = srow[first + j * s[1]];
                                    }
                                }
                            }
                        }
                    }
                }
                col.as_ptr()
            };
            let rhs_rs = if pointwise {
                (h * wd) as isize
            } else {
                ncols as isize
            };
            // SAFETY: each tile writes its own columns oy0 * ow .. oy1 * ow of every output
            // channel; the pointers and strides stay inside `ob`, `ws` and `rhs`.
            unsafe {
                matmul(
                    (cout, ncols, k),
                    (dst.get().add(oy0 * ow), plane),
                    true,
                    (ws.as_ptr(), k),
                    (rhs, rhs_rs, 1),
                    gemm::Parallelism::None,
                );
            }
            if let Some(f) = fin {
                for co in 0..cout {
                    let at = co * plane + oy0 * ow;
                    // SAFETY: this tile's own columns of channel co, as written above.
                    let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(at), ncols) };
                    f.apply(o, bi * cout * plane + at);
                }
            }
        });
    }
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Per kernel column `kx`, the range of output columns whose input column
/// `ox * stride + kx * dilation - pad` lies inside `0..width`.
fn tap_columns(
    kw: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    width: usize,
    ow: usize,
) -> Vec<(usize, usize)> {
    (0..kw)
        .map(|kx| {
            let off = (kx * dilation) as isize - pad as isize;
            let lo = if off >= 0 {
                0
            } else {
                ((-off) as usize).div_ceil(stride)
            };
            let hi = if (width as isize) <= off {
                0
            } else {
                ((width as isize - 1 - off) as usize / stride + 1).min(ow)
            };
            (lo, hi.max(lo))
        })
        .collect()
}

/// Depthwise convolution (one input channel per output channel), no bias.
fn depthwise(x: &CTensor, w: &[f32], win: &Window) -> Result<CTensor> {
    let (n, c, h, wd) = x.dims4()?;
    let xs = view(x)?;
    let (oh, ow) = win.out_size(h, wd);
    let [kh, kw] = win.kernel;
    let (s, d, p) = (win.stride, win.dilation, win.padding);
    let mut out = vec![0f32; n * c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(nc, o)| {
        let ch = nc % c;
        let src = &xs[nc * h * wd..(nc + 1) * h * wd];
        let ker = &w[ch * kh * kw..(ch + 1) * kh * kw];
        let cols = tap_columns(kw, s[1], d[1], p[1], wd, ow);
        for oy in 0..oh {
            let orow = &mut o[oy * ow..(oy + 1) * ow];
            // Each output sums its taps in (ky, kx) order, as a direct loop would.
            for ky in 0..kh {
                let iy = (oy * s[0] + ky * d[0]) as isize - p[0] as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let irow = &src[iy as usize * wd..(iy as usize + 1) * wd];
                for kx in 0..kw {
                    let wv = ker[ky * kw + kx];
                    let (lo, hi) = cols[kx];
                    let first = (lo * s[1] + kx * d[1]) - p[1];
                    if s[1] == 1 {
                        for (ov, iv) in orow[lo..hi].iter_mut().zip(&irow[first..first + (hi - lo)])
                        {
                            *ov += wv * iv;
                        }
                    } else {
                        for (j, ov) in orow[lo..hi].iter_mut().enumerate() {
                            *ov += wv * irow[first + j * s[1]];
                        }
                    }
                }
            }
        }
    });
    CTensor::from_vec(out, (n, c, oh, ow), &Device::Cpu)
}

/// Whether [`conv2d_t`] computes the transpose of this convolution as a forward convolution
/// with the kernel flipped ([`flip_kernel`]): stride 1, no dilation, one group, padding smaller
/// than the kernel, and either a 1 x 1 kernel (no im2col on either path; the flipped one needs
/// no col2im either) or not far fewer input than output channels (as in a first layer, where
/// the column matrix of the general path, `cin * kh * kw` rows, is much smaller than the im2col
/// matrix of the flipped convolution, `cout * kh * kw` rows).
pub fn transposes_by_flip(weight_dims: &[usize], win: &Window, groups: usize) -> bool {
    let (cout, cin, kh, kw) = (
        weight_dims[0],
        weight_dims[1],
        weight_dims[2],
        weight_dims[3],
    );
    let [pt, pl, pb, pr] = win.padding;
    groups == 1
        && win.stride == [1, 1]
        && win.dilation == [1, 1]
        && pt < kh
        && pb < kh
        && pl < kw
        && pr < kw
        && ((kh == 1 && kw == 1) || 4 * cin >= cout)
}

/// [`transposes_by_flip`], and the flipped convolution of an `oh x ow` value gives the
/// input's `h x w` back (it does not when the forward window leaves input rows unread).
fn flips_exactly(
    weight_dims: &[usize],
    win: &Window,
    groups: usize,
    s_dims: &[usize],
    (h, w): (usize, usize),
) -> bool {
    if !transposes_by_flip(weight_dims, win, groups) || s_dims.len() != 4 {
        return false;
    }
    let (kh, kw) = (weight_dims[2], weight_dims[3]);
    let [pt, pl, pb, pr] = win.padding;
    let back = Window {
        kernel: [kh, kw],
        stride: [1, 1],
        dilation: [1, 1],
        padding: [kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr],
    };
    back.out_size(s_dims[2], s_dims[3]) == (h, w)
}

/// `wf[ci, co, ky, kx] = w[co, ci, kh - 1 - ky, kw - 1 - kx]`: the kernel of the stride-1
/// transposed convolution (plain loops: a strided copy through candle costs several times more).
pub fn flip_kernel(w: &CTensor) -> Result<CTensor> {
    let (cout, cin, kh, kw) = w.dims4()?;
    let kk = kh * kw;
    let wf = with_slice(w, |ws| {
        let mut f = vec![0f32; ws.len()];
        for ci in 0..cin {
            for co in 0..cout {
                let src = &ws[(co * cin + ci) * kk..][..kk];
                let dst = &mut f[(ci * cout + co) * kk..][..kk];
                for (j, v) in dst.iter_mut().enumerate() {
                    *v = src[kk - 1 - j];
                }
            }
        }
        f
    })?;
    CTensor::from_vec(wf, (cin, cout, kh, kw), &Device::Cpu)
}

/// The transpose of `x -> conv(x, w)` applied to `s` (`N x O x oh x ow`): an `N x I x h x w`
/// tensor, `h x w` being the convolution's input size.
pub fn conv2d_t(
    s: &CTensor,
    w: &CTensor,
    in_hw: (usize, usize),
    win: &Window,
    groups: usize,
) -> Result<CTensor> {
    conv2d_t_with(s, w, None, None, in_hw, win, groups)
}

/// `conv2d_t(s, w)` finished by `fin` (see [`Finish`]: the factor is shaped like the layer's
/// input, as in every LRP rule of the form `a * T(V, s)`), given [`flip_kernel`]`(w)` when it
/// was computed beforehand (used only when [`transposes_by_flip`] holds). Each path finishes
/// while the values are in cache: the flipped one inside the convolution's tiles, the
/// depthwise one per channel plane, the general one per block of rows after its col2im.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_t_times(
    s: &CTensor,
    w: &CTensor,
    flipped: Option<&CTensor>,
    fin: &Finish,
    in_hw: (usize, usize),
    win: &Window,
    groups: usize,
) -> Result<CTensor> {
    conv2d_t_with(s, w, flipped, Some(fin), in_hw, win, groups)
}

/// [`conv2d_t`], given [`flip_kernel`]`(w)` when it was computed beforehand (used only when
/// [`transposes_by_flip`] holds), and finished by `fin` when given.
fn conv2d_t_with(
    s: &CTensor,
    w: &CTensor,
    flipped: Option<&CTensor>,
    fin: Option<&Finish>,
    in_hw: (usize, usize),
    win: &Window,
    groups: usize,
) -> Result<CTensor> {
    let (n, cout, oh, ow) = s.dims4()?;
    let (_, cin_g, kh, kw) = w.dims4()?;
    let cin = cin_g * groups;
    let (h, wd) = in_hw;
    let (s_, d, p) = (win.stride, win.dilation, win.padding);
    if groups > 1 && groups == cin && cout == cin {
        // Depthwise: scatter each output back through its own kernel.
        let ws = view(w)?;
        let ss = view(s)?;
        let fv = fin.map(|f| f.views(n * cin * h * wd)).transpose()?;
        let mut out = vec![0f32; n * cin * h * wd];
        out.par_chunks_mut(h * wd).enumerate().for_each(|(nc, o)| {
            let ch = nc % cin;
            let src = &ss[nc * oh * ow..(nc + 1) * oh * ow];
            let ker = &ws[ch * kh * kw..(ch + 1) * kh * kw];
            let cols = tap_columns(kw, s_[1], d[1], p[1], wd, ow);
            for oy in 0..oh {
                let srow = &src[oy * ow..(oy + 1) * ow];
                for ky in 0..kh {
                    let iy = (oy * s_[0] + ky * d[0]) as isize - p[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let orow = &mut o[iy as usize * wd..(iy as usize + 1) * wd];
                    for kx in 0..kw {
                        let wv = ker[ky * kw + kx];
                        let (lo, hi) = cols[kx];
                        let first = (lo * s_[1] + kx * d[1]) - p[1];
                        if s_[1] == 1 {
                            for (ov, g) in
                                orow[first..first + (hi - lo)].iter_mut().zip(&srow[lo..hi])
                            {
                                *ov += wv * g;
                            }
                        } else {
                            for (j, g) in srow[lo..hi].iter().enumerate() {
                                orow[first + j * s_[1]] += wv * g;
                            }
                        }
                    }
                }
            }
            if let Some(f) = &fv {
                f.apply(o, nc * h * wd);
            }
        });
        return CTensor::from_vec(out, (n, cin, h, wd), &Device::Cpu);
    }
    if flips_exactly(w.dims(), win, groups, s.dims(), in_hw) {
        // Stride 1: the transpose is the convolution with the kernel turned by 180 degrees and
        // its channel axes swapped, padded by k - 1 - p on each side.
        let [pt, pl, pb, pr] = p;
        let own;
        let wf = match flipped {
            Some(f) => f,
            None => {
                own = flip_kernel(w)?;
                &own
            }
        };
        let win_t = Window {
            kernel: [kh, kw],
            stride: [1, 1],
            dilation: [1, 1],
            padding: [kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr],
        };
        return conv2d_dense_times(s, wf, None, &win_t, fin);
    }
    // cols[n, g] = W[g]^T (cin_g*kh*kw x cout_g) @ s[n, g] (cout_g x oh*ow), W[g]^T copied
    // once (weights are small next to the columns).
    let cout_g = cout / groups;
    let kg = cin_g * kh * kw;
    let plane = oh * ow;
    let wt: Vec<f32> = with_slice(w, |ws| {
        let mut t = vec![0f32; ws.len()];
        for g in 0..groups {
            for co in 0..cout_g {
                for r in 0..kg {
                    t[(g * kg + r) * cout_g + co] = ws[(g * cout_g + co) * kg + r];
                }
            }
        }
        t
    })?;
    let kk = kh * kw;
    let taps = tap_columns(kw, s_[1], d[1], p[1], wd, ow);
    let fv = fin.map(|f| f.views(n * cin * h * wd)).transpose()?;
    let ss = view(s)?;
    // One sample at a time: its column matrix (a few MB, reused) is scattered back while it is
    // still in cache. Its gemms overwrite it.
    let mut cols = vec![0f32; groups * kg * plane];
    // Blocks of input rows per channel plane in parallel (a first layer has three planes for
    // two or more threads); every value sums its taps in (ky, kx) order whatever the blocks,
    // and each block is finished while in cache.
    const RB: usize = 16;
    let mut out = vec![0f32; n * cin * h * wd];
    for (b, ob_sample) in out.chunks_mut(cin * h * wd).enumerate() {
        for (g, dst) in cols.chunks_mut(kg * plane).enumerate() {
            let ng = b * groups + g;
            // SAFETY: dst kg x plane (row stride plane), lhs kg x cout_g (row stride cout_g),
            // rhs cout_g x plane (row stride plane), all inside their buffers.
            unsafe {
                matmul(
                    (kg, plane, cout_g),
                    (dst.as_mut_ptr(), plane),
                    false,
                    (wt.as_ptr().add(g * kg * cout_g), cout_g),
                    (ss.as_ptr().add(ng * cout_g * plane), plane as isize, 1),
                    par(),
                );
            }
        }
        let cols = &cols;
        ob_sample
            .par_chunks_mut(h * wd)
            .enumerate()
            .for_each(|(c, o)| {
                // Channel c reads rows (c_in_group * kk ..) of its group's columns.
                let (g, cg) = (c / cin_g, c % cin_g);
                let base = (g * cin_g * kk + cg * kk) * oh * ow;
                let nc = b * cin + c;
                o.par_chunks_mut(RB * wd).enumerate().for_each(|(blk, ob)| {
                    let (iy0, iy1) = (blk * RB, blk * RB + ob.len() / wd);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let row = &cols[base + (ky * kw + kx) * oh * ow
                                ..base + (ky * kw + kx + 1) * oh * ow];
                            let (lo, hi) = taps[kx];
                            if lo >= hi {
                                continue;
                            }
                            let first = lo * s_[1] + kx * d[1] - p[1];
                            for oy in 0..oh {
                                let iy = (oy * s_[0] + ky * d[0]) as isize - p[0] as isize;
                                if iy < iy0 as isize || iy >= iy1 as isize {
                                    continue;
                                }
                                let r0 = (iy as usize - iy0) * wd;
                                let orow = &mut ob[r0..r0 + wd];
                                let src = &row[oy * ow + lo..oy * ow + hi];
                                if s_[1] == 1 {
                                    for (ov, v) in
                                        orow[first..first + (hi - lo)].iter_mut().zip(src)
                                    {
                                        *ov += v;
                                    }
                                } else {
                                    for (j, v) in src.iter().enumerate() {
                                        orow[first + j * s_[1]] += v;
                                    }
                                }
                            }
                        }
                    }
                    if let Some(f) = &fv {
                        f.apply(ob, nc * h * wd + iy0 * wd);
                    }
                });
            });
    }
    CTensor::from_vec(out, (n, cin, h, wd), &Device::Cpu)
}

/// `x W^T + b` for `x` of shape `N x I` (flattened first).
pub fn linear(x: &CTensor, w: &CTensor, b: Option<&CTensor>) -> Result<CTensor> {
    let n = x.dims()[0];
    let (o, i) = w.dims2()?;
    if x.elem_count() != n * i {
        candle_core::bail!("linear: input {:?} for weight {:?}", x.dims(), w.dims());
    }
    // y = x W^T straight from the weight's memory (W^T as a strided view, no copy).
    let mut y: Vec<f32> = Vec::with_capacity(n * o);
    with_slice(x, |xs| {
        with_slice(w, |ws| unsafe {
            // SAFETY: dst n x o (row stride o), lhs n x i (row stride i), rhs[k, j] = W[j, k].
            matmul(
                (n, o, i),
                (y.as_mut_ptr(), o),
                false,
                (xs.as_ptr(), i),
                (ws.as_ptr(), 1, i as isize),
                par(),
            )
        })
    })??;
    // SAFETY: the gemm (not accumulating) wrote all n * o values.
    unsafe { y.set_len(n * o) };
    let y = CTensor::from_vec(y, (n, o), &Device::Cpu)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `dst = [dst +] lhs * rhs` for an `m x n` `dst` and an `m x k` `lhs`, both with contiguous
/// columns and the given row strides; `rhs[r, c]` sits at `rhs + r * rs + c * cs`.
///
/// # Safety
/// Every pointer, with its strides and sizes, must stay inside its buffer, and `dst` must not
/// be written by anyone else meanwhile.
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    accumulate: bool,
    (lhs, lhs_rs): (*const f32, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        rhs_cs,
        rhs_rs,
        if accumulate { 1.0f32 } else { 0.0f32 },
        1.0f32,
        false,
        false,
        false,
        par,
    )
}

/// gemm's parallelism: rayon's threads.
fn par() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    }
}

/// Which of the `o` units of an `n x o` value are non-zero in some sample, when fewer than
/// three quarters are (else None: reading every row of the weights costs no more). Relevance
/// reaching a dense layer is zero wherever the ReLU after it was off.
fn live_units(vs: &[f32], n: usize, o: usize) -> Option<Vec<bool>> {
    let live: Vec<bool> = (0..o)
        .map(|j| (0..n).any(|b| vs[b * o + j] != 0.0))
        .collect();
    (live.iter().filter(|&&l| l).count() * 4 < o * 3).then_some(live)
}

/// `x W^T` (no bias) at the output units where `r` (`N x O`, the relevance arriving there) is
/// non-zero in some sample, 0 at the others: one dot product per such unit and sample, so the
/// rows of `W` of the other units are never read. When most units are live, the whole product.
pub fn linear_where(x: &CTensor, w: &CTensor, r: &CTensor) -> Result<CTensor> {
    let n = x.dims()[0];
    let (o, i) = w.dims2()?;
    if x.elem_count() != n * i || r.dims() != [n, o] {
        candle_core::bail!(
            "linear_where: input {:?} and relevance {:?} for weight {:?}",
            x.dims(),
            r.dims(),
            w.dims()
        );
    }
    let Some(need) = live_units(&view(r)?, n, o) else {
        return linear(x, w, None);
    };
    let (xs, ws) = (view(x)?, view(w)?);
    // Unit-major, then transposed to N x O.
    let per_unit: Vec<f32> = par_init(o * n, n.max(1), |u, out| {
        for (b, v) in out.iter_mut().enumerate() {
            v.write(if need[u] {
                dot8(&ws[u * i..(u + 1) * i], &xs[b * i..(b + 1) * i])
            } else {
                0.0
            });
        }
    });
    let mut y = vec![0f32; n * o];
    for u in 0..o {
        for b in 0..n {
            y[b * o + u] = per_unit[u * n + b];
        }
    }
    CTensor::from_vec(y, (n, o), &Device::Cpu)
}

/// `sum w_i x_i` with eight partial sums, combined in a fixed order.
#[inline]
fn dot8(wr: &[f32], xb: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (wc, xc) = (wr.chunks_exact(8), xb.chunks_exact(8));
    let tail: f32 = wc
        .remainder()
        .iter()
        .zip(xc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (wv, xv) in wc.zip(xc) {
        for l in 0..8 {
            acc[l] += wv[l] * xv[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y[b] = sum_r coef(b, r) W[r]` over the given rows of `W` (`i` columns), `N x I`.
///
/// Blocks of rows times chunks of `ch` columns run in parallel: each task streams long
/// segments of its rows (short segments at a large stride starve the hardware prefetcher) into
/// its own partial sums, four rows per pass over them (a quarter of their traffic), and the
/// partial sums are then added in block order. `coef` is asked for the coefficients of a pass
/// just before it runs, per chunk, so it may read those rows itself while they are in cache.
/// Blocks and chunks are fixed by the shapes: the result does not depend on the thread count.
fn rows_t(
    n: usize,
    i: usize,
    ws: &[f32],
    rows: &[usize],
    ch: usize,
    coef: impl Fn(usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    const RB: usize = 256;
    let ch = ch.clamp(1, i.max(1));
    let (nch, nrb) = (i.div_ceil(ch), rows.len().div_ceil(RB).max(1));
    let parts: Vec<Vec<f32>> = (0..nch * nrb)
        .into_par_iter()
        .map(|t| {
            let (c, rb) = (t / nrb, t % nrb);
            let (c0, c1) = (c * ch, ((c + 1) * ch).min(i));
            let len = c1 - c0;
            let mut acc = vec![0f32; n * len];
            let block = &rows[(rb * RB).min(rows.len())..((rb + 1) * RB).min(rows.len())];
            let quads = block.chunks_exact(4);
            let rest = quads.remainder();
            for q in quads {
                let w4: [&[f32]; 4] = std::array::from_fn(|k| &ws[q[k] * i + c0..q[k] * i + c1]);
                for b in 0..n {
                    let sv: [f32; 4] = std::array::from_fn(|k| coef(b, q[k]));
                    let ab = &mut acc[b * len..(b + 1) * len];
                    for j in 0..len {
                        ab[j] += (sv[0] * w4[0][j] + sv[1] * w4[1][j])
                            + (sv[2] * w4[2][j] + sv[3] * w4[3][j]);
                    }
                }
            }
            for &r in rest {
                let wr = &ws[r * i + c0..r * i + c1];
                for b in 0..n {
                    let sv = coef(b, r);
                    for (a, &wv) in acc[b * len..(b + 1) * len].iter_mut().zip(wr) {
                        *a += sv * wv;
                    }
                }
            }
            acc
        })
        .collect();
    let mut y = vec![0f32; n * i];
    y.par_chunks_mut(i.max(1)).enumerate().for_each(|(b, yb)| {
        for c in 0..nch {
            let (c0, c1) = (c * ch, ((c + 1) * ch).min(i));
            let len = c1 - c0;
            for part in &parts[c * nrb..(c + 1) * nrb] {
                for (y, p) in yb[c0..c1].iter_mut().zip(&part[b * len..(b + 1) * len]) {
                    *y += p;
                }
            }
        }
    });
    y
}

/// `T(W, r / (W x + e))` for a dense layer whose rule recomputes its output from weights `W`
/// without bias (the paper's `srp` rule on `W+`): the same values as [`linear_where`], the
/// division and [`linear_t`] in turn, but each live row of `W` is read from memory once (its
/// dot products, then its share of the transpose, while it is in cache). `None` when that does
/// not apply (a large batch, or most units live): use the three steps.
pub fn linear_ratio_t(x: &CTensor, w: &CTensor, r: &CTensor, e: f32) -> Result<Option<CTensor>> {
    let n = x.dims()[0];
    let (o, i) = w.dims2()?;
    if x.elem_count() != n * i || r.dims() != [n, o] {
        candle_core::bail!(
            "linear_ratio_t: input {:?} and relevance {:?} for weight {:?}",
            x.dims(),
            r.dims(),
            w.dims()
        );
    }
    // The partial sums of a task span whole rows here: keep them well inside L2.
    if n * i * 4 > 256 << 10 {
        return Ok(None);
    }
    let rs = view(r)?;
    let Some(live) = live_units(&rs, n, o) else {
        return Ok(None);
    };
    let (xs, ws) = (view(x)?, view(w)?);
    let rows: Vec<usize> = (0..o).filter(|&u| live[u]).collect();
    let y = rows_t(n, i, &ws, &rows, i, |b, u| {
        rs[b * o + u] / (dot8(&ws[u * i..(u + 1) * i], &xs[b * i..(b + 1) * i]) + e)
    });
    Ok(Some(CTensor::from_vec(y, (n, i), &Device::Cpu)?))
}

/// The transpose of `x -> x W^T` applied to `s` (`N x O`): `s W`, `N x I`.
///
/// Relevance reaching a dense layer is zero wherever the ReLU after it was off, so for a small
/// batch only the rows of `W` with a non-zero `s` in some sample are read (VGG-16's first dense
/// layer is 411 MB, and reading it is all the work); otherwise one gemm.
pub fn linear_t(s: &CTensor, w: &CTensor) -> Result<CTensor> {
    let (n, o) = s.dims2()?;
    let (o2, i) = w.dims2()?;
    if o != o2 {
        candle_core::bail!("linear_t: value {:?} for weight {:?}", s.dims(), w.dims());
    }
    let ss = view(s)?;
    let ws = view(w)?;
    let live = if n <= 8 { live_units(&ss, n, o) } else { None };
    if let Some(live) = live {
        let rows: Vec<usize> = (0..o).filter(|&r| live[r]).collect();
        let y = rows_t(n, i, &ws, &rows, 8192, |b, r| ss[b * o + r]);
        return CTensor::from_vec(y, (n, i), &Device::Cpu);
    }
    let mut y: Vec<f32> = Vec::with_capacity(n * i);
    // SAFETY: dst n x i (row stride i), lhs n x o (row stride o), rhs o x i (row stride i).
    unsafe {
        matmul(
            (n, i, o),
            (y.as_mut_ptr(), i),
            false,
            (ss.as_ptr(), o),
            (ws.as_ptr(), i as isize, 1),
            par(),
        );
        // The gemm (not accumulating) wrote all n * i values.
        y.set_len(n * i);
    }
    CTensor::from_vec(y, (n, i), &Device::Cpu)
}

/// The maximum of the window `rows x cols` of a plane `w` wide, the index of its first
/// occurrence in row-major order (None when no value exceeds -inf) and how many values equal it.
#[inline]
fn window_max(
    src: &[f32],
    w: usize,
    (y0, y1): (usize, usize),
    (x0, x1): (usize, usize),
) -> (f32, Option<usize>, usize) {
    let mut best = f32::NEG_INFINITY;
    let mut first = None;
    let mut ties = 0usize;
    for yy in y0..y1 {
        for xx in x0..x1 {
            let a = src[yy * w + xx];
            if a > best {
                best = a;
                first = Some(yy * w + xx);
                ties = 1;
            } else if a == best {
                ties += 1;
            }
        }
    }
    (best, first, ties)
}

/// One row of 2 x 2 windows (input rows `r0`, `r1`; values `g`): each window's value goes to
/// its first maximum or is split between its tied maxima (none when no value exceeds -inf),
/// the other three get 0; writes every value of `o0` and `o1`.
#[inline]
fn route_2x2_row(
    r0: &[f32],
    r1: &[f32],
    g: &[f32],
    o0: &mut [f32],
    o1: &mut [f32],
    routing: MaxRouting,
) {
    let ow = g.len();
    let (r0, r1) = (&r0[..2 * ow], &r1[..2 * ow]);
    let (o0, o1) = (&mut o0[..2 * ow], &mut o1[..2 * ow]);
    for ox in 0..ow {
        let q = [r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]];
        let best = q[0].max(q[1]).max(q[2].max(q[3]));
        let routed = best > f32::NEG_INFINITY;
        let eq = q.map(|a| routed && a == best);
        let v = g[ox];
        let put = match routing {
            MaxRouting::First => {
                let first = [
                    eq[0],
                    eq[1] && !eq[0],
                    eq[2] && !(eq[0] || eq[1]),
                    eq[3] && !(eq[0] || eq[1] || eq[2]),
                ];
                first.map(|f| if f { v } else { 0.0 })
            }
            MaxRouting::SplitTies => {
                let ties = eq.iter().map(|&e| e as u32).sum::<u32>();
                // v / 1 is v exactly.
                let share = v / ties.max(1) as f32;
                eq.map(|e| if e { share } else { 0.0 })
            }
        };
        o0[2 * ox] = put[0];
        o0[2 * ox + 1] = put[1];
        o1[2 * ox] = put[2];
        o1[2 * ox + 1] = put[3];
    }
}

/// Where the relevance (or gradient) of a max-pooled output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxRouting {
    /// To the first maximum of each window in row-major order (PyTorch's gradient).
    First,
    /// Split evenly between all the maxima of a window (winner-take-all with ties shared).
    SplitTies,
}

/// The transpose of max pooling at `x` applied to `s`: each output's value goes to the
/// maximum of its window (or is split between tied maxima), summed where windows overlap.
pub fn max_pool_t(
    x: &CTensor,
    s: &CTensor,
    win: &Window,
    ceil: bool,
    routing: MaxRouting,
) -> Result<CTensor> {
    max_pool_t_fused(x, s, win, ceil, routing, None, None, None)
}

/// [`max_pool_t`], every value then multiplied by `1[lo < x < hi]` when `gate` is `(lo, hi)`
/// (the derivative of the activation whose output `x` is) and divided by `d(z)` when `div` is
/// `(z, d)` (`z` shaped like `x`), in the same pass. With `x_of_div` (and `div`), `x` equals
/// `act(z)` value for value and the 2 x 2 path reads `z` only.
#[allow(clippy::too_many_arguments)]
pub fn max_pool_t_fused(
    x: &CTensor,
    s: &CTensor,
    win: &Window,
    ceil: bool,
    routing: MaxRouting,
    gate: Gate,
    div: Option<(&CTensor, Stab)>,
    x_of_div: Option<Act>,
) -> Result<CTensor> {
    let (n, c, h, w) = x.dims4()?;
    let (_, _, oh, ow) = s.dims4()?;
    let _ = ceil; // the output size is s's; windows are clamped to the input either way
    let (xs, ss) = (view(x)?, view(s)?);
    let dv = match div {
        Some((z, d)) if z.elem_count() == x.elem_count() => Some((view(z)?, d)),
        Some((z, _)) => candle_core::bail!(
            "max_pool_t: divisor {:?} for an input {:?}",
            z.dims(),
            x.dims()
        ),
        None => None,
    };
    let dv = dv.as_ref();
    if win.kernel == [2, 2]
        && win.stride == [2, 2]
        && win.padding == [0; 4]
        && win.dilation == [1, 1]
        && h == 2 * oh
        && w == 2 * ow
    {
        // 2 x 2 windows tiling the input exactly (VGG's pooling): every input value is written
        // once, with no zeroing pass. Per pair of rows: the routing, then the gate, then the
        // division, each a branch-free loop over values in L1.
        let out = par_init(n * c * h * w, h * w, |nc, o| {
            let src = &xs[nc * h * w..(nc + 1) * h * w];
            let g = &ss[nc * oh * ow..(nc + 1) * oh * ow];
            let mut from_z = vec![];
            for oy in 0..oh {
                let rows = 2 * oy * w..(2 * oy + 2) * w;
                let x2: &[f32] = match (x_of_div, dv) {
                    (Some(act), Some((z, _))) => {
                        from_z.clear();
                        from_z.extend(z[nc * h * w..][rows.clone()].iter().map(|&z| act.of(z)));
                        &from_z
                    }
                    _ => &src[rows.clone()],
                };
                let (r0, r1) = x2.split_at(w);
                let o = &mut o[rows.clone()];
                // SAFETY: every value of these two rows is written by the routing loop below
                // before any is read, and f32 has no invalid bit patterns.
                let o = unsafe { &mut *(o as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
                let (o0, o1) = o.split_at_mut(w);
                route_2x2_row(r0, r1, &g[oy * ow..(oy + 1) * ow], o0, o1, routing);
                if let Some((lo, hi)) = gate {
                    for (v, &a) in o.iter_mut().zip(x2) {
                        *v *= open_mask(a, (lo, hi));
                    }
                }
                if let Some((z, d)) = dv {
                    let z = &z[nc * h * w..][rows.clone()];
                    // 0 / d(z) stays 0 (up to its sign) unless d(z) is 0 or NaN.
                    let div = |v: f32, dz: f32| {
                        let q = v / dz;
                        if v != 0.0 || !(dz != 0.0) {
                            q
                        } else {
                            v
                        }
                    };
                    match *d {
                        Stab::Sign(e) => o
                            .iter_mut()
                            .zip(z)
                            .for_each(|(v, &z)| *v = div(*v, stab(z, e))),
                        Stab::Add(e) => o.iter_mut().zip(z).for_each(|(v, &z)| *v = div(*v, z + e)),
                    }
                }
            }
        });
        return CTensor::from_vec(out, (n, c, h, w), &Device::Cpu);
    }
    let mut out = vec![0f32; n * c * h * w];
    out.par_chunks_mut(h * w).enumerate().for_each(|(nc, o)| {
        let src = &xs[nc * h * w..(nc + 1) * h * w];
        let g = &ss[nc * oh * ow..(nc + 1) * oh * ow];
        for oy in 0..oh {
            let (y0, y1, _) = crate::exec::window(
                oy,
                win.kernel[0],
                win.stride[0],
                win.padding[0],
                win.padding[2],
                h,
            );
            for ox in 0..ow {
                let v = g[oy * ow + ox];
                if v == 0.0 {
                    continue;
                }
                let (x0, x1, _) = crate::exec::window(
                    ox,
                    win.kernel[1],
                    win.stride[1],
                    win.padding[1],
                    win.padding[3],
                    w,
                );
                let (best, first, ties) = window_max(src, w, (y0, y1), (x0, x1));
                match (routing, first) {
                    (_, None) => {}
                    (MaxRouting::First, Some(i)) => o[i] += v,
                    (MaxRouting::SplitTies, Some(_)) => {
                        let share = v / ties as f32;
                        for yy in y0..y1 {
                            for xx in x0..x1 {
                                if src[yy * w + xx] == best {
                                    o[yy * w + xx] += share;
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some((lo, hi)) = gate {
            for (o, &a) in o.iter_mut().zip(src) {
                *o *= open_mask(a, (lo, hi));
            }
        }
        if let Some((z, d)) = dv {
            for (o, &z) in o.iter_mut().zip(&z[nc * h * w..(nc + 1) * h * w]) {
                *o /= d.of(z);
            }
        }
    });
    CTensor::from_vec(out, (n, c, h, w), &Device::Cpu)
}

/// The transpose of average pooling applied to `s`: each output's value spread over its
/// window with the pooling's own weights (1 / divisor).
pub fn avg_pool_t(
    s: &CTensor,
    in_hw: (usize, usize),
    win: &Window,
    count_include_pad: bool,
) -> Result<CTensor> {
    let (n, c, oh, ow) = s.dims4()?;
    let (h, w) = in_hw;
    let ss = view(s)?;
    let mut out = vec![0f32; n * c * h * w];
    out.par_chunks_mut(h * w).enumerate().for_each(|(nc, o)| {
        let g = &ss[nc * oh * ow..(nc + 1) * oh * ow];
        for oy in 0..oh {
            let (y0, y1, ey) = crate::exec::window(
                oy,
                win.kernel[0],
                win.stride[0],
                win.padding[0],
                win.padding[2],
                h,
            );
            for ox in 0..ow {
                let (x0, x1, ex) = crate::exec::window(
                    ox,
                    win.kernel[1],
                    win.stride[1],
                    win.padding[1],
                    win.padding[3],
                    w,
                );
                let div = if count_include_pad {
                    ey * ex
                } else {
                    (y1 - y0) * (x1 - x0)
                };
                if div == 0 {
                    continue;
                }
                let v = g[oy * ow + ox] / div as f32;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        o[yy * w + xx] += v;
                    }
                }
            }
        }
    });
    CTensor::from_vec(out, (n, c, h, w), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(shape: &[usize], seed: u64) -> CTensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        CTensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &CTensor, b: &CTensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Our dense convolution against candle-core's (an independent im2col + gemm), on
    /// symmetric pads, strides, dilation and 1x1 kernels; asymmetric pads against candle on
    /// an explicitly padded input.
    #[test]
    fn dense_convolution_matches_candle() {
        for (i, &(cin, cout, hw, k, s, p, d)) in [
            (3, 8, 17, 3, 1, 1, 1),
            (5, 4, 16, 3, 2, 1, 1),
            (4, 6, 15, 5, 2, 2, 1),
            (6, 3, 12, 3, 1, 2, 2),
            (16, 8, 9, 1, 1, 0, 1),
            (3, 4, 11, 1, 2, 0, 1),
        ]
        .iter()
        .enumerate()
        {
            let x = randn(&[2, cin, hw, hw], i as u64);
            let w = randn(&[cout, cin, k, k], 100 + i as u64);
            let b = randn(&[cout], 200 + i as u64);
            let win = Window {
                kernel: [k, k],
                stride: [s, s],
                padding: [p; 4],
                dilation: [d, d],
            };
            let ours = conv2d_dense(&x, &w, Some(&b), &win).unwrap();
            let theirs = x
                .conv2d(&w, p, s, d, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(
                max_diff(&ours, &theirs) < 1e-5,
                "case {i}: {}",
                max_diff(&ours, &theirs)
            );
        }
        // Asymmetric (TF "SAME") padding [0, 0, 1, 1] with stride 2.
        let x = randn(&[1, 3, 10, 10], 7);
        let w = randn(&[4, 3, 3, 3], 8);
        let win = Window {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0, 1, 1],
            dilation: [1, 1],
        };
        let ours = conv2d_dense(&x, &w, None, &win).unwrap();
        let padded = x
            .pad_with_zeros(2, 0, 1)
            .unwrap()
            .pad_with_zeros(3, 0, 1)
            .unwrap();
        let theirs = padded.conv2d(&w, 0, 2, 1, 1).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-5);
    }

    /// The stride-1 transposed convolution (flipped kernel) against the general path
    /// (matmul + col2im), which it replaces: <s, conv(x)> = <conv_t(s), x> both ways.
    #[test]
    fn stride_one_transpose_matches_the_general_path_and_the_adjoint() {
        // 5 -> 6 channels takes the flipped-kernel path; 3 -> 24 (a first layer) the general
        // one.
        for (cin, cout) in [(5, 6), (3, 24)] {
            adjoint_case(cin, cout);
        }
    }

    /// Max-pool routing against a naive loop over windows (exec::window's clamping), for
    /// windows that tile the input (the write-once path) and overlapping ones, with ties.
    #[test]
    fn max_pool_transpose_matches_a_naive_loop() {
        for (k, s_, h, w, ceil) in [(2, 2, 7, 9, false), (2, 2, 7, 9, true), (3, 2, 9, 8, true)] {
            // Small integers: many exact ties.
            let x = randn(&[2, 3, h, w], 11)
                .affine(2.0, 0.0)
                .unwrap()
                .round()
                .unwrap();
            let oh = crate::exec::out_len(h, k, s_, 0, 0, ceil);
            let ow = crate::exec::out_len(w, k, s_, 0, 0, ceil);
            let g = randn(&[2, 3, oh, ow], 12);
            let win = Window {
                kernel: [k, k],
                stride: [s_, s_],
                padding: [0; 4],
                dilation: [1, 1],
            };
            let (xs, gs) = (data(&x).unwrap(), data(&g).unwrap());
            for routing in [MaxRouting::First, MaxRouting::SplitTies] {
                let ours = data(&max_pool_t(&x, &g, &win, ceil, routing).unwrap()).unwrap();
                let mut want = vec![0f32; xs.len()];
                for p in 0..6 {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (y0, y1, _) = crate::exec::window(oy, k, s_, 0, 0, h);
                            let (x0, x1, _) = crate::exec::window(ox, k, s_, 0, 0, w);
                            let at = |y: usize, xx: usize| p * h * w + y * w + xx;
                            let cells: Vec<usize> = (y0..y1)
                                .flat_map(|y| (x0..x1).map(move |xx| (y, xx)))
                                .map(|(y, xx)| at(y, xx))
                                .collect();
                            let best = cells.iter().map(|&i| xs[i]).fold(f32::MIN, f32::max);
                            let winners: Vec<usize> =
                                cells.into_iter().filter(|&i| xs[i] == best).collect();
                            let v = gs[(p * oh + oy) * ow + ox];
                            match routing {
                                MaxRouting::First => want[winners[0]] += v,
                                MaxRouting::SplitTies => {
                                    for &i in &winners {
                                        want[i] += v / winners.len() as f32;
                                    }
                                }
                            }
                        }
                    }
                }
                let err = ours
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    err < 1e-6,
                    "k{k} s{s_} {h}x{w} ceil {ceil} {routing:?}: {err}"
                );
            }
        }
    }

    /// Max-pool routing with an activation's gate and a division folded in, against the
    /// plain routing followed by the mask and the division as separate passes: equal value for
    /// value, on the write-once 2 x 2 path and the general one.
    #[test]
    fn max_pool_transpose_folds_a_gate_and_a_division_exactly() {
        for (k, s_, h, w) in [(2, 2, 8, 10), (3, 2, 9, 8)] {
            // A ReLU's output (many exact zeros) and the layer output below it.
            let z = randn(&[2, 3, h, w], 31);
            let x = z.relu().unwrap();
            let oh = crate::exec::out_len(h, k, s_, 0, 0, false);
            let ow = crate::exec::out_len(w, k, s_, 0, 0, false);
            let g = randn(&[2, 3, oh, ow], 32);
            let win = Window {
                kernel: [k, k],
                stride: [s_, s_],
                padding: [0; 4],
                dilation: [1, 1],
            };
            for (gate, d) in [
                ((0.0, f32::INFINITY), Stab::Sign(0.25)),
                ((0.0, 0.3), Stab::Add(1e-9)),
            ] {
                let routed = max_pool_t(&x, &g, &win, false, MaxRouting::SplitTies).unwrap();
                let masked = zip_map(&routed, &x, |r, a| {
                    r * ((a > gate.0 && a < gate.1) as u8 as f32)
                })
                .unwrap();
                let want = zip_map(&masked, &z, |r, z| r / d.of(z)).unwrap();
                for x_of_div in [None, Some(Act::Relu)] {
                    let ours = max_pool_t_fused(
                        &x,
                        &g,
                        &win,
                        false,
                        MaxRouting::SplitTies,
                        Some(gate),
                        Some((&z, d)),
                        x_of_div,
                    )
                    .unwrap();
                    assert_eq!(
                        data(&ours).unwrap(),
                        data(&want).unwrap(),
                        "k{k} {d:?} {x_of_div:?}"
                    );
                }
            }
        }
    }

    /// The transposed convolutions finished inside their own loops (flipped 3 x 3 and 1 x 1,
    /// depthwise) or in one more pass (strided), against the plain transpose followed by the
    /// factor, gate and division as separate passes: equal value for value.
    #[test]
    fn transposed_convolutions_finish_exactly_as_separate_passes() {
        let win = |k: usize, s: usize, p: usize| Window {
            kernel: [k, k],
            stride: [s, s],
            padding: [p; 4],
            dilation: [1, 1],
        };
        // (cin, cout, groups, window): flipped 3x3, flipped 1x1 expansion, depthwise, strided.
        for (cin, cout, groups, wn) in [
            (5, 6, 1, win(3, 1, 1)),
            (4, 24, 1, win(1, 1, 0)),
            (6, 6, 6, win(3, 1, 1)),
            (6, 6, 6, win(3, 2, 1)),
            (3, 8, 1, win(3, 2, 1)),
        ] {
            let x = randn(&[2, cin, 9, 8], 41);
            let w = randn(&[cout, cin / groups, wn.kernel[0], wn.kernel[1]], 42);
            let y = conv2d(&x, &w, None, &wn, groups).unwrap();
            let s = randn(y.dims(), 43);
            let z = randn(x.dims(), 44);
            let a = z.clamp(0f32, 0.3f32).unwrap();
            let plain = conv2d_t(&s, &w, (9, 8), &wn, groups).unwrap();
            for (gate, div) in [
                (None, None),
                (Some((0.0, 0.3)), None),
                (None, Some(Stab::Sign(1e-6))),
                (Some((0.0, 0.3)), Some(Stab::Add(1e-9))),
            ] {
                let mut want = match gate {
                    None => zip_map(&plain, &a, |c, a| c * a).unwrap(),
                    Some(g) => zip_map(&plain, &a, |c, a| c * gated(a, g)).unwrap(),
                };
                if let Some(d) = div {
                    want = zip_map(&want, &z, |r, z| r / d.of(z)).unwrap();
                }
                // With a division, also with the factor read off z (a = clip(z)).
                let mut from_z = vec![None];
                if div.is_some() {
                    from_z.push(Some(Act::Clip(0.0, 0.3)));
                }
                for times_of_div in from_z {
                    let fin = Finish {
                        times: &a,
                        gate,
                        div: div.map(|d| (&z, d)),
                        times_of_div,
                    };
                    let ours = conv2d_t_times(&s, &w, None, &fin, (9, 8), &wn, groups).unwrap();
                    assert_eq!(
                        data(&ours).unwrap(),
                        data(&want).unwrap(),
                        "{cin}->{cout} g{groups} {wn:?} {gate:?} {div:?} {times_of_div:?}"
                    );
                }
            }
        }
    }

    /// The dense transpose, with rows skipped (most of `s` zero) and with one gemm, against
    /// candle's matmul.
    #[test]
    fn linear_transpose_matches_a_matmul_sparse_or_not() {
        let w = randn(&[300, 2500], 21);
        for zero_every in [1usize, 3] {
            // zero_every 3: two rows in three are zero in every sample (the skipping path).
            let s = randn(&[3, 300], 22);
            let mask: Vec<f32> = (0..3 * 300)
                .map(|k| {
                    if zero_every == 1 || k % 300 % 3 == 0 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let s = (s * CTensor::from_vec(mask, (3, 300), &Device::Cpu).unwrap()).unwrap();
            let ours = linear_t(&s, &w).unwrap();
            let theirs = s.matmul(&w).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-4, "zero_every {zero_every}");
        }
        // Several blocks of live rows and chunks of columns (the partial sums are added).
        let wide = randn(&[1200, 8300], 24);
        let s = randn(&[2, 1200], 25);
        let mask: Vec<f32> = (0..2 * 1200)
            .map(|k| if k % 1200 % 3 == 0 { 1.0 } else { 0.0 })
            .collect();
        let s = (s * CTensor::from_vec(mask, (2, 1200), &Device::Cpu).unwrap()).unwrap();
        let ours = linear_t(&s, &wide).unwrap();
        assert!(max_diff(&ours, &s.matmul(&wide).unwrap()) < 1e-4);
        // srp's dense step in one pass over the rows: the same values as its three steps.
        let x = randn(&[2, 8300], 26).relu().unwrap();
        let wp = wide.relu().unwrap();
        let z = linear_where(&x, &wp, &s).unwrap();
        let steps = linear_t(&zip_map(&s, &z, |r, z| r / (z + 1e-9)).unwrap(), &wp).unwrap();
        let fused = linear_ratio_t(&x, &wp, &s, 1e-9)
            .unwrap()
            .expect("applies here");
        assert_eq!(data(&fused).unwrap(), data(&steps).unwrap());
        // The forward at the units with relevance only (one in three here): those units equal
        // x W^T, the others are 0.
        let x = randn(&[3, 2500], 23);
        let need: Vec<bool> = (0..300).map(|j| j % 3 == 1).collect();
        let r: Vec<f32> = (0..3 * 300)
            .map(|k| if need[k % 300] { 1.0 } else { 0.0 })
            .collect();
        let r = CTensor::from_vec(r, (3, 300), &Device::Cpu).unwrap();
        let rows = data(&linear_where(&x, &w, &r).unwrap()).unwrap();
        let full = data(&x.matmul(&w.t().unwrap()).unwrap()).unwrap();
        for (k, (a, b)) in rows.iter().zip(&full).enumerate() {
            let want = if need[k % 300] { *b } else { 0.0 };
            assert!((a - want).abs() < 1e-4, "unit {k}: {a} vs {want}");
        }
    }

    fn adjoint_case(cin: usize, cout: usize) {
        let x = randn(&[2, cin, 9, 8], 1);
        let w = randn(&[cout, cin, 3, 3], 2);
        for padding in [[1, 1, 1, 1], [0, 0, 1, 1], [2, 1, 0, 2]] {
            let win = Window {
                kernel: [3, 3],
                stride: [1, 1],
                padding,
                dilation: [1, 1],
            };
            let y = conv2d(&x, &w, None, &win, 1).unwrap();
            let s = randn(y.dims(), 3);
            let t = conv2d_t(&s, &w, (9, 8), &win, 1).unwrap();
            // <s, conv(x)> == <conv_t(s), x>
            let lhs = (&s * &y)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let rhs = (&t * &x)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{padding:?}: {lhs} vs {rhs}"
            );
            // The general path (matmul + col2im) runs for grouped convolutions: the same
            // weights as two groups over a duplicated input give the same map twice.
            let t2 = {
                let w2 = CTensor::cat(&[&w, &w], 0).unwrap(); // groups = 2 over duplicated input
                let s2 = CTensor::cat(&[&s, &s], 1).unwrap();
                conv2d_t(&s2, &w2, (9, 8), &win, 2).unwrap()
            };
            let (a, b) = (
                t2.narrow(1, 0, cin).unwrap(),
                t2.narrow(1, cin, cin).unwrap(),
            );
            assert!(
                max_diff(&a, &t) < 1e-4 && max_diff(&b, &t) < 1e-4,
                "{padding:?}"
            );
        }
    }
}
