//! Convolutions and their transposes: dense ones as tiles of im2col + gemm written straight
//! into the NCHW output, depthwise ones as direct loops, stride-1 transposes as forward
//! convolutions with flipped kernels, and the rest as gemm + col2im.

use super::buffer::{data, par_init, view, with_slice, SendPtr};
use super::dense::{matmul, par};
use super::fused::{Finish, FinishView};
use super::out_hw;
use candle_core::{Device, Result, Tensor as CTensor};
use rayon::prelude::*;
use sr_core::geometry::Window;

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
    let (oh, ow) = out_hw("conv2d_dense", win, h, wd)?;
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
    // (The caller checked the sizes.)
    let (oh, ow) = win.output_size(h, wd, false).unwrap_or((0, 0));
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

/// Per kernel column `kx`, the range of output columns whose input column
/// `ox * stride + kx * dilation - pad` lies inside `0..width`.
pub(crate) fn tap_columns(
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
    let (oh, ow) = out_hw("depthwise", win, h, wd)?;
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

/// The flat rule's `T(1, r / stab_e(1 x))` for a convolution without groups whose input has
/// `cin` channels of `in_hw`: all-ones weights and inputs. The ones convolution gives every
/// output channel the same value, `cin` times the taps inside the input (a product of the
/// taps inside along each axis), and the transpose gives every input channel the same value,
/// so the whole rule is one sum over the output channels and one single-channel transpose
/// (instead of two full convolutions with ones). Each output sums its channels in order, and
/// each input its taps in `(oy, ky, ox, kx)` order.
pub fn ones_ratio_t(
    r: &CTensor,
    cin: usize,
    in_hw: (usize, usize),
    win: &Window,
    e: f32,
) -> Result<CTensor> {
    let (n, cout, oh, ow) = r.dims4()?;
    let (h, w) = in_hw;
    if out_hw("flat", win, h, w)? != (oh, ow) {
        candle_core::bail!("flat: relevance of {oh} x {ow} for an input of {h} x {w}");
    }
    let rs = view(r)?;
    let [kh, kw] = win.kernel;
    let (st, d, p) = (win.stride, win.dilation, win.padding);
    // The input index of output `o` and tap `k` along one axis, if inside.
    let at = |o: usize, k: usize, axis: usize, len: usize| {
        let i = (o * st[axis] + k * d[axis]) as isize - p[axis] as isize;
        (0..len as isize).contains(&i).then_some(i as usize)
    };
    let inside = |o: usize, taps: usize, axis: usize, len: usize| {
        (0..taps).filter(|&k| at(o, k, axis, len).is_some()).count()
    };
    let rows: Vec<usize> = (0..oh).map(|o| inside(o, kh, 0, h)).collect();
    let cols: Vec<usize> = (0..ow).map(|o| inside(o, kw, 1, w)).collect();
    let plane = oh * ow;
    let mut out = vec![0f32; n * cin * h * w];
    out.par_chunks_mut((cin * h * w).max(1))
        .enumerate()
        .for_each(|(b, o)| {
            let mut s = vec![0f32; plane];
            for c in 0..cout {
                let src = &rs[(b * cout + c) * plane..(b * cout + c + 1) * plane];
                s.iter_mut().zip(src).for_each(|(a, v)| *a += v);
            }
            for (y, row) in s.chunks_mut(ow.max(1)).enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    *v /= super::fused::stab((cin * rows[y] * cols[x]) as f32, e);
                }
            }
            let (first, rest) = o.split_at_mut(h * w);
            for oy in 0..oh {
                for ky in 0..kh {
                    let Some(iy) = at(oy, ky, 0, h) else { continue };
                    for ox in 0..ow {
                        let v = s[oy * ow + ox];
                        for kx in 0..kw {
                            if let Some(ix) = at(ox, kx, 1, w) {
                                first[iy * w + ix] += v;
                            }
                        }
                    }
                }
            }
            rest.chunks_mut((h * w).max(1))
                .for_each(|c| c.copy_from_slice(first));
        });
    CTensor::from_vec(out, (n, cin, h, w), &Device::Cpu)
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
    back.output_size(s_dims[2], s_dims[3], false) == Some((h, w))
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
