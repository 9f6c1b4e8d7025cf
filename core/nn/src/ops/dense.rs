//! Dense layers: `x W^T + b`, its transpose, and the sparse forms the rules use (rows of `W`
//! whose relevance is zero are never read). [`matmul`] is the one gemm call of the kernels.

use super::buffer::{par_init, view, with_slice};
use candle_core::{Device, Result, Tensor as CTensor};
use rayon::prelude::*;

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
pub(crate) unsafe fn matmul(
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
pub(crate) fn par() -> gemm::Parallelism {
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
