//! Pooling: max and average pooling with 4-sided padding and `ceil_mode` (PyTorch's divisor
//! rules), and their transposes (max pooling routed to each window's maximum).

use super::buffer::{par_init, view};
use super::fused::{open_mask, stab, Act, Gate, Stab};
use candle_core::{Device, Result, Tensor as CTensor};
use rayon::prelude::*;
use sr_core::geometry::Window;

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
            let (y0, y1, _) = win.span(0, oy, h);
            for ox in 0..ow {
                let v = g[oy * ow + ox];
                if v == 0.0 {
                    continue;
                }
                let (x0, x1, _) = win.span(1, ox, w);
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
            let (y0, y1, ey) = win.span(0, oy, h);
            for ox in 0..ow {
                let (x0, x1, ex) = win.span(1, ox, w);
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

/// Which pooling [`pool`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

/// Max or average pooling with 4-sided padding and `ceil_mode` (PyTorch's divisor rules).
pub fn pool(x: &CTensor, win: &Window, ceil: bool, kind: PoolKind) -> Result<CTensor> {
    let (n, c, h, w) = x.dims4()?;
    let xs = view(x)?;
    let Some((oh, ow)) = win.output_size(h, w, ceil) else {
        candle_core::bail!("pool: window {win:?} does not fit a {h}x{w} input")
    };
    let out = par_init(n * c * oh * ow, oh * ow, |nc, o| {
        let src = &xs[nc * h * w..(nc + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1, ey) = win.span(0, oy, h);
            for ox in 0..ow {
                let (x0, x1, ex) = win.span(1, ox, w);
                o[oy * ow + ox].write(match kind {
                    PoolKind::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for yy in y0..y1 {
                            for xx in x0..x1 {
                                m = m.max(src[yy * w + xx]);
                            }
                        }
                        m
                    }
                    PoolKind::Avg { count_include_pad } => {
                        let mut acc = 0f32;
                        for yy in y0..y1 {
                            for xx in x0..x1 {
                                acc += src[yy * w + xx];
                            }
                        }
                        let div = if count_include_pad {
                            ey * ex
                        } else {
                            (y1 - y0) * (x1 - x0)
                        };
                        if div == 0 {
                            0.0
                        } else {
                            acc / div as f32
                        }
                    }
                });
            }
        }
    });
    CTensor::from_vec(out, (n, c, oh, ow), &Device::Cpu)
}
