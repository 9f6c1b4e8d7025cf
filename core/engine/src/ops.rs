//! Layer primitives shared by the executor and the relevance methods: forward maps of the
//! linear layers (conv, dense, pooling) with arbitrary weights, and their transposes
//! (vector-Jacobian products with respect to the input), which is what every LRP rule and the
//! gradient are made of.
//!
//! Convolutions keep the IR's conventions (4-sided zero padding, groups, dilation); the
//! transpose is `W^T s` by a (batched) matrix product on candle followed by a col2im that
//! scatters the columns back, parallel over channel planes with a fixed summation order, so
//! results do not depend on the thread count. Depthwise convolutions take direct loops.

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

/// Depthwise convolution (one input channel per output channel), no bias.
fn depthwise(x: &CTensor, w: &[f32], win: &Window) -> Result<CTensor> {
    let (n, c, h, wd) = x.dims4()?;
    let xs = data(x)?;
    let (oh, ow) = win.out_size(h, wd);
    let [kh, kw] = win.kernel;
    let (s, d, p) = (win.stride, win.dilation, win.padding);
    let mut out = vec![0f32; n * c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(nc, o)| {
        let ch = nc % c;
        let src = &xs[nc * h * wd..(nc + 1) * h * wd];
        let ker = &w[ch * kh * kw..(ch + 1) * kh * kw];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0f32;
                for ky in 0..kh {
                    let iy = (oy * s[0] + ky * d[0]) as isize - p[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let row = &src[iy as usize * wd..];
                    for kx in 0..kw {
                        let ix = (ox * s[1] + kx * d[1]) as isize - p[1] as isize;
                        if ix >= 0 && ix < wd as isize {
                            acc += ker[ky * kw + kx] * row[ix as usize];
                        }
                    }
                }
                o[oy * ow + ox] = acc;
            }
        }
    });
    CTensor::from_vec(out, (n, c, oh, ow), &Device::Cpu)
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
    let (n, cout, oh, ow) = s.dims4()?;
    let (_, cin_g, kh, kw) = w.dims4()?;
    let cin = cin_g * groups;
    let (h, wd) = in_hw;
    let (s_, d, p) = (win.stride, win.dilation, win.padding);
    if groups > 1 && groups == cin && cout == cin {
        // Depthwise: scatter each output back through its own kernel.
        let ws = data(w)?;
        let ss = data(s)?;
        let mut out = vec![0f32; n * cin * h * wd];
        out.par_chunks_mut(h * wd).enumerate().for_each(|(nc, o)| {
            let ch = nc % cin;
            let src = &ss[nc * oh * ow..(nc + 1) * oh * ow];
            let ker = &ws[ch * kh * kw..(ch + 1) * kh * kw];
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = src[oy * ow + ox];
                    if g == 0.0 {
                        continue;
                    }
                    for ky in 0..kh {
                        let iy = (oy * s_[0] + ky * d[0]) as isize - p[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * s_[1] + kx * d[1]) as isize - p[1] as isize;
                            if ix >= 0 && ix < wd as isize {
                                o[iy as usize * wd + ix as usize] += ker[ky * kw + kx] * g;
                            }
                        }
                    }
                }
            }
        });
        return CTensor::from_vec(out, (n, cin, h, wd), &Device::Cpu);
    }
    // cols[n, g] = W[g]^T (cin_g*kh*kw x cout_g) @ s[n, g] (cout_g x oh*ow)
    let cout_g = cout / groups;
    let wt = w
        .reshape((groups, cout_g, cin_g * kh * kw))?
        .transpose(1, 2)?
        .contiguous()?
        .unsqueeze(0)?;
    let sg = s.reshape((n, groups, cout_g, oh * ow))?;
    let cols = wt.broadcast_matmul(&sg)?; // n x g x (cin_g*kh*kw) x (oh*ow)
    let cols = data(&cols)?;
    let kk = kh * kw;
    let mut out = vec![0f32; n * cin * h * wd];
    out.par_chunks_mut(h * wd).enumerate().for_each(|(nc, o)| {
        // Channel c of sample b reads rows (c_in_group * kk ..) of its group's columns.
        let (b, c) = (nc / cin, nc % cin);
        let (g, cg) = (c / cin_g, c % cin_g);
        let base = ((b * groups + g) * cin_g * kk + cg * kk) * oh * ow;
        for ky in 0..kh {
            for kx in 0..kw {
                let row =
                    &cols[base + (ky * kw + kx) * oh * ow..base + (ky * kw + kx + 1) * oh * ow];
                for oy in 0..oh {
                    let iy = (oy * s_[0] + ky * d[0]) as isize - p[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let orow = &mut o[iy as usize * wd..(iy as usize + 1) * wd];
                    for ox in 0..ow {
                        let ix = (ox * s_[1] + kx * d[1]) as isize - p[1] as isize;
                        if ix >= 0 && ix < wd as isize {
                            orow[ix as usize] += row[oy * ow + ox];
                        }
                    }
                }
            }
        }
    });
    CTensor::from_vec(out, (n, cin, h, wd), &Device::Cpu)
}

/// `x W^T + b` for `x` of shape `N x I` (flattened first).
pub fn linear(x: &CTensor, w: &CTensor, b: Option<&CTensor>) -> Result<CTensor> {
    let y = x.flatten_from(1)?.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// The transpose of `x -> x W^T` applied to `s` (`N x O`): `s W`, `N x I`.
pub fn linear_t(s: &CTensor, w: &CTensor) -> Result<CTensor> {
    s.matmul(w)
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
    let (n, c, h, w) = x.dims4()?;
    let (_, _, oh, ow) = s.dims4()?;
    let _ = ceil; // the output size is s's; windows are clamped to the input either way
    let (xs, ss) = (data(x)?, data(s)?);
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
    let ss = data(s)?;
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
