//! The candidates' index and the lower bounds both exact searches share (CA-SPEC steps 8-9):
//! the principal basis, the blocks, the block bounds, the exact dissimilarity and the
//! order-independent sum. The pruned search ([`crate::pruned`]) and the screened brute force
//! ([`crate::brute`]) are built on it; [`crate::search`] chooses between them.
//!
//! The dissimilarity of a query patch `q` and a candidate patch `p` is
//! `d = |q - p| / (1 + c |pos_q - pos_p|)`; two lower bounds rule most pairs out cheaply:
//!
//! 1. **A low-dimensional bound.** With `V` the [`M`] leading principal directions of the
//!    candidates (orthonormal rows), every patch `x` splits into its coordinates `a = V x`
//!    and a residual of norm `rho = sqrt(|x|^2 - |a|^2)`. Then
//!    `|q - p|^2 >= |a_q - a_p|^2 + (rho_q - rho_p)^2` for any orthonormal `V`: the bound is
//!    rigorous whatever the basis, and tight when `V` captures most of the patches' variance
//!    (on the sample photos' 7x7 patches the leading 8 directions hold 93-94% of it, 16 hold
//!    97%; M is 12).
//! 2. **A block bound.** Candidates are grouped into blocks of [`L`] by a k-d tree over their
//!    leading coordinates and positions. Each block keeps the box of its coordinates,
//!    residual norms and positions; the distance from a query to the box, divided by the
//!    largest position term inside it, bounds `d` for the whole block from below.
//!
//! The margins: the float32 colour bound `b` exceeds the true one by at most its round-off,
//! relatively below `(M + 3) 2^-24 < 1e-6` (the fine bound sums its `M_FINE + 1` terms in
//! sixteen partial sums: `(M_FINE / 16 + 7) 2^-24 < 1e-6`) and absolutely below
//! `2^-24 (|q| + |p|) < 2e-6` (centred patches of at most 147 values in [-1, 1]); the
//! position term's round-off is below 1e-6. So a pair can have `d <= T` only if
//! `b (1 - REL) - ABS <= T den (1 + REL)`, and the search keeps every pair that passes this
//! test ([`REL`] = 1e-5 and [`ABS`] = 1e-4 are ten and fifty times the round-off).

use rayon::prelude::*;

/// Leading principal coordinates of the screen (per block and per candidate).
pub const M: usize = 12;
/// Principal coordinates of the fine bound, at most (all of them when a patch has fewer).
pub const M_FINE: usize = 47;
/// Candidates per block.
pub const L: usize = 32;
/// Relative safety margin of the float32 bounds (their round-off is below 1e-6).
pub const REL: f64 = 1e-5;
/// Absolute safety margin of the float32 bounds, in colour-distance units (the round-off of
/// projecting a patch of at most 147 values in [-1, 1] to float32 is below 2e-6).
pub const ABS: f64 = 1e-4;

/// Sampled patches: `n x dim` row-major float64, with their positions `(x, y)`.
pub struct Patches {
    pub n: usize,
    pub dim: usize,
    pub data: Vec<f64>,
    pub pos: Vec<(f64, f64)>,
}

/// An orthonormal set of at most [`M_FINE`] directions (unused rows are zero) and the centre.
/// The first [`M`] rows are the screen's, all `fine` rows the fine bound's.
pub(crate) struct Basis {
    pub(crate) mean: Vec<f64>,
    /// `fine x dim`, row-major (at least `M` rows; those beyond `dim` are zero).
    pub(crate) v: Vec<f64>,
    /// `v . mean` per direction.
    pub(crate) v_mean: Vec<f64>,
    /// Directions of the fine bound: `min(M_FINE, dim)`, at least `M`.
    pub(crate) fine: usize,
}

impl Basis {
    /// The leading principal directions of the candidates (subspace iteration on their
    /// covariance, from at most 2048 of them). Only orthonormality matters for exactness;
    /// the better the directions, the tighter the bounds.
    pub(crate) fn of(c: &Patches) -> Basis {
        let dim = c.dim;
        let mut mean = vec![0f64; dim];
        for row in c.data.chunks_exact(dim) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= c.n as f64);
        let step = c.n.div_ceil(2048).max(1);
        let mut cov = vec![0f64; dim * dim];
        let mut x = vec![0f64; dim];
        for row in c.data.chunks_exact(dim).step_by(step) {
            for ((xi, v), m) in x.iter_mut().zip(row).zip(&mean) {
                *xi = v - m;
            }
            for i in 0..dim {
                let xi = x[i];
                let out = &mut cov[i * dim..(i + 1) * dim];
                for (o, xj) in out[i..].iter_mut().zip(&x[i..]) {
                    *o += xi * xj;
                }
            }
        }
        for i in 0..dim {
            for j in 0..i {
                cov[i * dim + j] = cov[j * dim + i];
            }
        }
        let m = M.min(dim);
        let rows = M_FINE.min(dim).max(M);
        // A fixed pseudo-random start, so the basis (and the work done) is reproducible.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut v: Vec<f64> = (0..rows * dim)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        // Fewer dimensions than M: the rows beyond them stay zero.
        v[m * dim..M.min(rows) * dim]
            .iter_mut()
            .for_each(|x| *x = 0.0);
        orthonormalise(&mut v[..m * dim], dim);
        let mut next = vec![0f64; rows * dim];
        // The screen's M directions: 30 steps of subspace iteration. The fine bound's further
        // directions: a few steps in the complement (Gram-Schmidt leaves the first M rows as
        // they are, up to round-off), enough to catch most of the remaining variance.
        for (from, to, steps) in [(0, m, 30), (M, rows, 6)] {
            if to <= from {
                continue;
            }
            if from > 0 {
                orthonormalise(&mut v[..to * dim], dim);
            }
            for _ in 0..steps {
                for r in from..to {
                    let vr = &v[r * dim..(r + 1) * dim];
                    for i in 0..dim {
                        next[r * dim + i] = dot(&cov[i * dim..(i + 1) * dim], vr);
                    }
                }
                v[from * dim..to * dim].copy_from_slice(&next[from * dim..to * dim]);
                orthonormalise(&mut v[..to * dim], dim);
            }
        }
        let v_mean = (0..rows)
            .map(|k| dot(&v[k * dim..(k + 1) * dim], &mean))
            .collect();
        Basis {
            mean,
            v,
            v_mean,
            fine: rows,
        }
    }

    /// The screen's `M` leading coordinates of `x - mean` and their residual norm, in `a`.
    /// Returns `|x - mean|^2` and the squared norm of the M coordinates, in float64, for
    /// [`Basis::project_fine`].
    #[inline]
    pub(crate) fn project(&self, x: &[f64], a: &mut [f32; M + 1]) -> (f64, f64) {
        let dim = self.mean.len();
        let norm2 = squared_distance(x, &self.mean);
        let mut proj2 = 0.0;
        for (k, ak) in a.iter_mut().take(M).enumerate() {
            let s = dot(&self.v[k * dim..(k + 1) * dim], x) - self.v_mean[k];
            proj2 += s * s;
            *ak = s as f32;
        }
        a[M] = (norm2 - proj2).max(0.0).sqrt() as f32;
        (norm2, proj2)
    }

    /// All `fine` coordinates of `x - mean` and their residual norm, in `f`, given what
    /// [`Basis::project`] gave for `x`.
    #[inline]
    pub(crate) fn project_fine(
        &self,
        x: &[f64],
        a: &[f32; M + 1],
        (norm2, mut proj2): (f64, f64),
        f: &mut [f32],
    ) {
        let dim = self.mean.len();
        f[..M].copy_from_slice(&a[..M]);
        for k in M..self.fine {
            let s = dot(&self.v[k * dim..(k + 1) * dim], x) - self.v_mean[k];
            proj2 += s * s;
            f[k] = s as f32;
        }
        f[self.fine] = (norm2 - proj2).max(0.0).sqrt() as f32;
    }
}

/// Modified Gram-Schmidt, twice, on the rows of `v` (`rows x dim`).
pub(crate) fn orthonormalise(v: &mut [f64], dim: usize) {
    let rows = v.len() / dim.max(1);
    for _ in 0..2 {
        for r in 0..rows {
            for s in 0..r {
                let (head, tail) = v.split_at_mut(r * dim);
                let vs = &head[s * dim..(s + 1) * dim];
                let vr = &mut tail[..dim];
                let d: f64 = vs.iter().zip(vr.iter()).map(|(a, b)| a * b).sum();
                vr.iter_mut().zip(vs).for_each(|(x, y)| *x -= d * y);
            }
            let vr = &mut v[r * dim..(r + 1) * dim];
            let n = vr.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 1e-12 {
                vr.iter_mut().for_each(|x| *x /= n);
            } else {
                // A degenerate direction (fewer distinct patches than M): drop it.
                vr.iter_mut().for_each(|x| *x = 0.0);
            }
        }
    }
}

/// The candidates, reordered into blocks of [`L`] (the last one padded).
pub(crate) struct Index {
    pub(crate) blocks: usize,
    /// Per block, [`ROWS`] rows of L lanes: the M leading coordinates, the residual norm,
    /// then the positions x and y.
    pub(crate) screen: Vec<f32>,
    /// Per coordinate, per block: the box of the block's coordinates.
    pub(crate) lo: Vec<f32>,
    pub(crate) hi: Vec<f32>,
    /// Per block: the box of its positions, `(x0, x1, y0, y1)`.
    pub(crate) pos_box: Vec<[f32; 4]>,
    /// Per slot: the fine coordinates and their residual norm (`fine + 1` values).
    pub(crate) fine: Vec<f32>,
    /// Values per slot in `fine`: `fine + 1`, padded with zeros to a multiple of 16.
    pub(crate) fine_len: usize,
    /// Per slot: the candidate's float64 values, its position; `real[slot]` is false for
    /// padding.
    pub(crate) data: Vec<f64>,
    pub(crate) pos: Vec<(f64, f64)>,
    pub(crate) real: Vec<bool>,
}

/// Rows per block in [`Index::screen`].
pub(crate) const ROWS: usize = M + 3;

/// Leading coordinates the k-d tree splits on (besides the position).
pub(crate) const KD: usize = 4;

/// Weight of the positions against the leading coordinate's spread in the k-d tree.
pub(crate) const POS_WEIGHT: f64 = 8.0;

impl Index {
    pub(crate) fn build(c: &Patches, basis: &Basis) -> Index {
        let dim = c.dim;
        // Padded with zeros to whole chunks of 16 (zeros on both sides add nothing).
        let fine_len = (basis.fine + 1).next_multiple_of(16);
        let mut fine = vec![0f32; c.n * fine_len];
        let coords: Vec<[f32; M + 1]> = c
            .data
            .par_chunks_exact(dim)
            .zip(fine.par_chunks_exact_mut(fine_len))
            .map(|(x, f)| {
                let mut a = [0f32; M + 1];
                let norms = basis.project(x, &mut a);
                basis.project_fine(x, &a, norms, f);
                a
            })
            .collect();
        // k-d tree over the 4 leading coordinates and the position: split the widest feature
        // at a multiple of L, so every block but the last is full.
        let spread = {
            let (lo, hi) = coords
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), a| (l.min(a[0]), h.max(a[0])));
            ((hi - lo) as f64).max(1e-12)
        };
        let w = POS_WEIGHT * spread / 4.0;
        let feature = |i: usize, f: usize| -> f64 {
            match f {
                f if f < KD => coords[i][f] as f64,
                f if f == KD => w * c.pos[i].0,
                _ => w * c.pos[i].1,
            }
        };
        let mut order: Vec<usize> = (0..c.n).collect();
        let mut stack = vec![(0usize, c.n)];
        let mut leaves = vec![];
        while let Some((s, e)) = stack.pop() {
            if e - s <= L {
                leaves.push((s, e));
                continue;
            }
            let ids = &mut order[s..e];
            let extent = |f: usize| {
                let (lo, hi) = ids.iter().fold((f64::MAX, f64::MIN), |(l, h), &i| {
                    (l.min(feature(i, f)), h.max(feature(i, f)))
                });
                hi - lo
            };
            let widths: Vec<f64> = (0..KD + 2).map(extent).collect();
            let f = (0..KD + 2)
                .max_by(|&a, &b| widths[a].total_cmp(&widths[b]).then(b.cmp(&a)))
                .unwrap();
            let mid = L * (e - s).div_ceil(2 * L);
            ids.select_nth_unstable_by(mid, |&a, &b| {
                feature(a, f).total_cmp(&feature(b, f)).then(a.cmp(&b))
            });
            // Left before right: push right first.
            stack.push((s + mid, e));
            stack.push((s, s + mid));
        }
        leaves.sort_unstable();
        let blocks = leaves.len();
        let mut idx = Index {
            blocks,
            screen: vec![0f32; blocks * ROWS * L],
            lo: vec![f32::MAX; (M + 1) * blocks],
            hi: vec![f32::MIN; (M + 1) * blocks],
            pos_box: vec![[f32::MAX, f32::MIN, f32::MAX, f32::MIN]; blocks],
            fine: vec![0f32; blocks * L * fine_len],
            fine_len,
            data: vec![0f64; blocks * L * dim],
            pos: vec![(0.0, 0.0); blocks * L],
            real: vec![false; blocks * L],
        };
        for (b, &(s, e)) in leaves.iter().enumerate() {
            for l in 0..L {
                let slot = b * L + l;
                let base = b * ROWS * L + l;
                if s + l >= e {
                    // Padding: far from everything; `real` keeps it out of the result.
                    for k in 0..=M {
                        idx.screen[base + k * L] = 1e15;
                    }
                    continue;
                }
                let i = order[s + l];
                idx.real[slot] = true;
                idx.data[slot * dim..(slot + 1) * dim]
                    .copy_from_slice(&c.data[i * dim..(i + 1) * dim]);
                idx.pos[slot] = c.pos[i];
                idx.fine[slot * fine_len..(slot + 1) * fine_len]
                    .copy_from_slice(&fine[i * fine_len..(i + 1) * fine_len]);
                for (k, &v) in coords[i].iter().enumerate() {
                    idx.screen[base + k * L] = v;
                    idx.lo[k * blocks + b] = idx.lo[k * blocks + b].min(v);
                    idx.hi[k * blocks + b] = idx.hi[k * blocks + b].max(v);
                }
                let (x, y) = (c.pos[i].0 as f32, c.pos[i].1 as f32);
                idx.screen[base + (M + 1) * L] = x;
                idx.screen[base + (M + 2) * L] = y;
                let pb = &mut idx.pos_box[b];
                *pb = [pb[0].min(x), pb[1].max(x), pb[2].min(y), pb[3].max(y)];
            }
        }
        idx
    }
}

/// `sum f(a_i, b_i)` in float64, with eight independent partial sums (so it pipelines and
/// vectorises).
#[inline(always)]
pub(crate) fn sum8(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail: f64 = ar.iter().zip(br).map(|(&x, &y)| f(x, y)).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `sum (a_i - b_i)^2` in float64.
#[inline(always)]
pub fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    sum8(a, b, |x, y| (x - y) * (x - y))
}

#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    sum8(a, b, |x, y| x * y)
}

/// The exact float64 dissimilarity `|q - p| / (1 + c |pos_q - pos_p|)`: the only value that
/// enters a result, whichever search found the pair.
#[inline(always)]
pub(crate) fn dissimilarity(
    q: &[f64],
    q_pos: (f64, f64),
    p: &[f64],
    p_pos: (f64, f64),
    c: f64,
) -> f64 {
    let d2 = squared_distance(q, p);
    let (dx, dy) = (q_pos.0 - p_pos.0, q_pos.1 - p_pos.1);
    let dp = (dx * dx + dy * dy).sqrt();
    d2.sqrt() / (1.0 + c * dp)
}

/// Every block's lower bound on `d` for one query.
#[inline(always)]
pub(crate) fn block_bounds(
    idx: &Index,
    c: f64,
    bound: &mut [f32],
    a: &[f32; M + 1],
    qpos: (f64, f64),
) {
    let nb = idx.blocks;
    bound.iter_mut().for_each(|g| *g = 0.0);
    for (k, &ak) in a.iter().enumerate() {
        let (lo, hi) = (&idx.lo[k * nb..(k + 1) * nb], &idx.hi[k * nb..(k + 1) * nb]);
        for b in 0..nb {
            let gap = (lo[b] - ak).max(ak - hi[b]).max(0.0);
            bound[b] += gap * gap;
        }
    }
    let (qx, qy) = (qpos.0 as f32, qpos.1 as f32);
    let (c, rel, abs) = (c as f32, REL as f32, ABS as f32);
    for (g, pb) in bound.iter_mut().zip(&idx.pos_box) {
        let fx = (qx - pb[0]).abs().max((qx - pb[1]).abs());
        let fy = (qy - pb[2]).abs().max((qy - pb[3]).abs());
        // The largest position term in the box, rounded up generously.
        let den = (1.0 + c * (fx * fx + fy * fy).sqrt()) * (1.0 + 2.0 * rel);
        *g = (g.sqrt() * (1.0 - 2.0 * rel) - abs) / den;
    }
}

/// The sum of non-negative `values` below 2^20 (distances), independent of their order: each
/// is cut to a multiple of 2^-100 (exactly, for any value above 2^-47 and with an error
/// below 2^-100 otherwise) and the cut values are added as integers, which is associative;
/// the total is rounded once. Two searches that find the same K distances in different orders
/// give the same bits, and the result is closer to the true sum than a float64 sum.
pub(crate) fn sum_exactly(values: impl Iterator<Item = f64>) -> f64 {
    const TOP: f64 = (1u64 << 40) as f64;
    const LOW: f64 = (1u64 << 60) as f64;
    let mut total = 0i128;
    let mut plain = 0f64;
    let mut fits = true;
    for v in values {
        plain += v;
        fits &= (0.0..(1u64 << 20) as f64).contains(&v);
        // v 2^100 as i128, in two exact float-to-integer steps (one instruction each): the
        // integer part of v 2^40 (below 2^60), then the fraction left (exact) times 2^60.
        let x = v * TOP;
        let hi = x as i64;
        let lo = ((x - hi as f64) * LOW) as i64;
        match total.checked_add(((hi as i128) << 60) + lo as i128) {
            Some(t) => total = t,
            None => fits = false,
        }
    }
    if fits {
        total as f64 / (TOP * LOW)
    } else {
        // Out of range (not a distance between patches in [0, 1]): the plain sum.
        plain
    }
}
