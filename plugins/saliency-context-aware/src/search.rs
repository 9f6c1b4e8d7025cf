//! The exact search for the K most similar patches (CA-SPEC steps 8-9), pruned by bounds.
//!
//! The dissimilarity of a query patch `q` and a candidate patch `p` is
//! `d = |q - p| / (1 + c |pos_q - pos_p|)`. Comparing every pair costs a matrix product of
//! the full patch dimension (about 1.4e9 pairs and 1.3e11 multiply-adds per 250-px image),
//! so the search rules most pairs out with three lower bounds that are cheap to evaluate, and
//! computes the exact float64 distance only for the few pairs that can still be among the K
//! nearest:
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
//! 3. **A fine bound.** A candidate that passes the low-dimensional bound is tried against the
//!    same bound with up to [`M_FINE`] directions (the M leading ones, then directions of most
//!    of the remaining variance) before its exact distance is computed. Photos need it little;
//!    on relevance maps, whose patches are close to noise and spread their variance over
//!    many directions, 12 coordinates let 10-12% of all pairs through at the final `T`,
//!    and the fine bound cuts the exact evaluations that follow five- to six-fold (the `srp`
//!    map of astronaut, the two finest scales).
//!
//! Each query keeps its K smallest exact distances in a max-heap; its top, `T`, only
//! decreases. A block whose bound exceeds `T` is skipped whole; inside a block, a candidate
//! whose bound exceeds `T` is skipped. Everything skipped is certainly farther than the K-th
//! nearest, so the K distances kept at the end are the exact K smallest. The bounds are
//! evaluated in float32 with safety margins far above their round-off, and the distances that
//! enter the result are always computed in float64 from the original patch values.
//!
//! The margins: the float32 colour bound `b` exceeds the true one by at most its round-off,
//! relatively below `(M + 3) 2^-24 < 1e-6` (the fine bound sums its `M_FINE + 1` terms in
//! sixteen partial sums: `(M_FINE / 16 + 7) 2^-24 < 1e-6`) and absolutely below
//! `2^-24 (|q| + |p|) < 2e-6` (centred patches of at most 147 values in [-1, 1]); the
//! position term's round-off is below 1e-6. So a pair can have `d <= T` only if
//! `b (1 - REL) - ABS <= T den (1 + REL)`, and the search keeps every pair that passes this
//! test ([`REL`] = 1e-5 and [`ABS`] = 1e-4 are ten and fifty times the round-off).
//!
//! Two things make `T` small early, so little is computed: a query first evaluates the K
//! nearest of its left neighbour (overlapping patches have similar neighbours), and the first
//! query of a row first scans its most promising blocks.
//!
//! Bands of up to [`BAND`] neighbouring rows run in parallel. Inside a band the rows take turns
//! block by block, one column at a time, so a block's candidates are read from memory once for
//! all its queries (vertical neighbours: they scan and evaluate many of the same candidates).
//! Bands are narrower when there are many threads, so that each has at least four bands to
//! take. Each query still does exactly the work it would do alone, so neither the band nor the
//! thread count changes the result.

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
/// Blocks the first query of a row scans before the others.
const SEED_BLOCKS: usize = 4;

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
    v: Vec<f64>,
    /// `v . mean` per direction.
    v_mean: Vec<f64>,
    /// Directions of the fine bound: `min(M_FINE, dim)`, at least `M`.
    fine: usize,
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
    fn project_fine(
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
fn orthonormalise(v: &mut [f64], dim: usize) {
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
    screen: Vec<f32>,
    /// Per coordinate, per block: the box of the block's coordinates.
    lo: Vec<f32>,
    hi: Vec<f32>,
    /// Per block: the box of its positions, `(x0, x1, y0, y1)`.
    pos_box: Vec<[f32; 4]>,
    /// Per slot: the fine coordinates and their residual norm (`fine + 1` values).
    fine: Vec<f32>,
    /// Values per slot in `fine`: `fine + 1`, padded with zeros to a multiple of 16.
    fine_len: usize,
    /// Per slot: the candidate's float64 values, its position; `real[slot]` is false for
    /// padding.
    pub(crate) data: Vec<f64>,
    pub(crate) pos: Vec<(f64, f64)>,
    pub(crate) real: Vec<bool>,
}

/// Rows per block in [`Index::screen`].
const ROWS: usize = M + 3;

/// Leading coordinates the k-d tree splits on (besides the position).
const KD: usize = 4;

/// Weight of the positions against the leading coordinate's spread in the k-d tree.
const POS_WEIGHT: f64 = 8.0;

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

/// The K smallest values seen with their slots (a max-heap in a fixed array).
struct TopK {
    heap: Vec<(f64, u32)>,
    k: usize,
}

impl TopK {
    /// Until K values are in, they are appended and made a heap at the K-th (Floyd's
    /// construction); after that a smaller value replaces the top and sinks.
    #[inline(always)]
    fn push(&mut self, v: f64, slot: u32) {
        let h = &mut self.heap;
        if h.len() < self.k {
            h.push((v, slot));
            if h.len() == self.k {
                for i in (0..self.k / 2).rev() {
                    let item = h[i];
                    Self::sink(h, i, item);
                }
            }
        } else if v < h[0].0 {
            Self::sink(h, 0, (v, slot));
        }
    }
    /// Put `item` at `i` and let it sink below every larger child (the hole moves down).
    #[inline(always)]
    fn sink(h: &mut [(f64, u32)], mut i: usize, item: (f64, u32)) {
        let n = h.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let c = if l + 1 < n && h[l + 1].0 > h[l].0 {
                l + 1
            } else {
                l
            };
            if h[c].0 <= item.0 {
                break;
            }
            h[i] = h[c];
            i = c;
        }
        h[i] = item;
    }
    /// The K-th smallest distance so far (infinite until K are known).
    fn threshold(&self) -> f64 {
        if self.heap.len() < self.k {
            f64::INFINITY
        } else {
            self.heap[0].0
        }
    }
}

/// `sum f(a_i, b_i)` in float64, with eight independent partial sums (so it pipelines and
/// vectorises).
#[inline(always)]
fn sum8(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
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
fn dot(a: &[f64], b: &[f64]) -> f64 {
    sum8(a, b, |x, y| x * y)
}

/// What every query of one search shares.
struct Ctx<'a> {
    idx: &'a Index,
    basis: &'a Basis,
    q: &'a Patches,
    c: f64,
}

/// The scratch of one lane: the queries of one row, one after another.
struct Lane {
    /// The query that last evaluated each slot.
    stamp: Vec<u32>,
    /// Each block's lower bound on `d` for the current query.
    bound: Vec<f32>,
    /// Blocks ordered for the first query.
    first: Vec<(f32, u32)>,
    /// The fine coordinates of query `fine_of`.
    fine: Vec<f32>,
    fine_of: u32,
    /// The current query's norms from [`Basis::project`].
    norms: (f64, f64),
    /// The current query's screen coordinates.
    a: [f32; M + 1],
    /// The previous query's K nearest (the current one's seeds).
    prev: Vec<u32>,
    /// Whether the current query still scans (false once its `T` is 0).
    going: bool,
    /// Fine bounds evaluated so far, by all the lane's queries.
    fines: u64,
    top: TopK,
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

#[inline(always)]
fn exact(ctx: &Ctx, qi: usize, slot: usize) -> f64 {
    let dim = ctx.q.dim;
    dissimilarity(
        &ctx.q.data[qi * dim..(qi + 1) * dim],
        ctx.q.pos[qi],
        &ctx.idx.data[slot * dim..(slot + 1) * dim],
        ctx.idx.pos[slot],
        ctx.c,
    )
}

/// The fine bound of the module doc for query coordinates `qf` and candidate `slot`, tested
/// against `T` with the screen's margins: false only if the candidate is certainly farther
/// than `T`. The first 32 coordinates are tried first: their sum of squares is at most the
/// whole one, and its round-off is smaller, so it may reject with the same margins (2-4%
/// faster on every bench input; trying after 16 as well was 5-8% slower).
#[inline(always)]
fn fine_passes(ctx: &Ctx, qf: &[f32], slot: usize, t: f64, den: f32) -> bool {
    let idx = ctx.idx;
    let n = idx.fine_len;
    let cf = &idx.fine[slot * n..(slot + 1) * n];
    let (rel, abs) = (REL as f32, ABS as f32);
    let r = (t as f32 * (1.0 + rel) * den + abs) * (1.0 + 3.0 * rel);
    let lim = r * r * (1.0 + 2.0 * rel);
    // Sixteen partial sums: two independent chains of vector additions.
    let mut acc = [0f32; 16];
    let total = |acc: &[f32; 16]| {
        let mut half = [0f32; 8];
        for l in 0..8 {
            half[l] = acc[l] + acc[l + 8];
        }
        ((half[0] + half[4]) + (half[1] + half[5])) + ((half[2] + half[6]) + (half[3] + half[7]))
    };
    for (i, (x, y)) in qf.chunks_exact(16).zip(cf.chunks_exact(16)).enumerate() {
        if i == 2 && total(&acc) > lim {
            return false;
        }
        for l in 0..16 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    total(&acc) <= lim
}

/// Scan block `b` for query `qi` (coordinates `a`). Returns false once `T` is 0 (nothing can
/// improve the result any more).
#[inline(always)]
fn scan_block(ctx: &Ctx, lane: &mut Lane, qi: usize, a: &[f32; M + 1], b: usize) -> bool {
    let idx = ctx.idx;
    let t = lane.top.threshold();
    if t == 0.0 {
        return false;
    }
    let block = &idx.screen[b * ROWS * L..(b + 1) * ROWS * L];
    let (qx, qy) = (ctx.q.pos[qi].0 as f32, ctx.q.pos[qi].1 as f32);
    // A candidate is kept unless its bound certainly exceeds T (the margins of the module
    // doc, plus one more REL for the float32 evaluation of the radius itself).
    let (rel, abs) = (REL as f32, ABS as f32);
    let tf = t as f32 * (1.0 + rel);
    let c = ctx.c as f32;
    let mut mask = 0u32;
    // The position terms, kept for the fine bound.
    let mut dens = [0f32; L];
    // All L lanes at once, coordinate by coordinate: L / 8 independent sums in registers.
    let mut acc = [0f32; L];
    for (k, &ak) in a.iter().enumerate() {
        let col = &block[k * L..(k + 1) * L];
        for l in 0..L {
            let d = ak - col[l];
            acc[l] += d * d;
        }
    }
    let (xs, ys) = (
        &block[(M + 1) * L..(M + 2) * L],
        &block[(M + 2) * L..(M + 3) * L],
    );
    let mut keep = [false; L];
    for l in 0..L {
        let (dx, dy) = (qx - xs[l], qy - ys[l]);
        let den = 1.0 + c * (dx * dx + dy * dy).sqrt();
        dens[l] = den;
        let r = (tf * den + abs) * (1.0 + 3.0 * rel);
        keep[l] = acc[l] <= r * r * (1.0 + 2.0 * rel);
    }
    for (l, &k) in keep.iter().enumerate() {
        mask |= (k as u32) << l;
    }
    while mask != 0 {
        let l = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let slot = b * L + l;
        if !idx.real[slot] || lane.stamp[slot] == qi as u32 {
            continue;
        }
        lane.stamp[slot] = qi as u32;
        if lane.fine_of != qi as u32 {
            // The query's fine coordinates, when a candidate first needs them.
            let dim = ctx.q.dim;
            let x = &ctx.q.data[qi * dim..(qi + 1) * dim];
            ctx.basis.project_fine(x, a, lane.norms, &mut lane.fine);
            lane.fine_of = qi as u32;
        }
        // Rejected now, rejected for good: T only decreases.
        lane.fines += 1;
        if !fine_passes(ctx, &lane.fine, slot, lane.top.threshold(), dens[l]) {
            continue;
        }
        lane.top.push(exact(ctx, qi, slot), slot as u32);
        if lane.top.threshold() == 0.0 {
            return false;
        }
    }
    true
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

/// Start query `qi` in `lane`: its coordinates, its block bounds, and a first `T` from the
/// K nearest of its left neighbour (the lane's previous query) or, at the start of a row, from
/// the most promising blocks.
#[inline(always)]
fn start_query(ctx: &Ctx, lane: &mut Lane, qi: usize) {
    let dim = ctx.q.dim;
    lane.norms = ctx
        .basis
        .project(&ctx.q.data[qi * dim..(qi + 1) * dim], &mut lane.a);
    lane.top.heap.clear();
    block_bounds(ctx.idx, ctx.c, &mut lane.bound, &lane.a, ctx.q.pos[qi]);
    let a = lane.a;
    if lane.prev.is_empty() {
        lane.going = true;
        lane.first.clear();
        lane.first
            .extend(lane.bound.iter().enumerate().map(|(b, &g)| (g, b as u32)));
        let n = SEED_BLOCKS.min(lane.first.len());
        if n < lane.first.len() {
            lane.first
                .select_nth_unstable_by(n, |x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        }
        for i in 0..n {
            let b = lane.first[i].1 as usize;
            if !scan_block(ctx, lane, qi, &a, b) {
                lane.going = false;
                break;
            }
        }
    } else {
        let prev = std::mem::take(&mut lane.prev);
        for &slot in &prev {
            let slot = slot as usize;
            lane.stamp[slot] = qi as u32;
            lane.top.push(exact(ctx, qi, slot), slot as u32);
        }
        lane.prev = prev;
        lane.going = lane.top.threshold() > 0.0;
    }
}

/// The sum of the lane's K nearest, kept as the next query's seeds.
#[inline(always)]
fn finish_query(lane: &mut Lane) -> f64 {
    lane.prev.clear();
    lane.prev.extend(lane.top.heap.iter().map(|&(_, s)| s));
    sum_exactly(lane.top.heap.iter().map(|&(v, _)| v))
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

/// One band of neighbouring rows, a lane each, swept left to right one column at a time.
/// Each query does exactly what it would alone (its left neighbour's seeds, then the blocks in
/// index order, each skipped or scanned against its own `T`); the lanes only take turns block
/// by block, so a block's candidates are read from memory once for all of them.
#[inline(always)]
fn search_band_body(ctx: &Ctx, lanes: &mut [Lane], q0: usize, row_len: usize, out: &mut [f64]) {
    let rows = out.len().div_ceil(row_len);
    let lanes = &mut lanes[..rows];
    // The last row may be short (when the query count is not a multiple of `row_len`).
    let n = out.len();
    let len = |i: usize| row_len.min(n - i * row_len);
    for col in 0..row_len {
        for (i, lane) in lanes.iter_mut().enumerate() {
            lane.going = false;
            if col < len(i) {
                start_query(ctx, lane, q0 + i * row_len + col);
            }
        }
        for b in 0..ctx.idx.blocks {
            for (i, lane) in lanes.iter_mut().enumerate() {
                if !lane.going || lane.bound[b] as f64 > lane.top.threshold() {
                    continue;
                }
                let a = lane.a;
                lane.going = scan_block(ctx, lane, q0 + i * row_len + col, &a, b);
            }
        }
        for (i, lane) in lanes.iter_mut().enumerate() {
            if col < len(i) {
                out[i * row_len + col] = finish_query(lane);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn search_band_avx2(
    ctx: &Ctx,
    lanes: &mut [Lane],
    q0: usize,
    row_len: usize,
    out: &mut [f64],
) {
    search_band_body(ctx, lanes, q0, row_len, out)
}

fn search_band(ctx: &Ctx, lanes: &mut [Lane], q0: usize, row_len: usize, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { search_band_avx2(ctx, lanes, q0, row_len, out) };
    }
    search_band_body(ctx, lanes, q0, row_len, out)
}

/// Rows of queries searched together, at most (see [`search_band_body`]).
const BAND: usize = 8;

/// The rows of a band: [`BAND`], or fewer so that every thread has at least four bands to
/// take (a band of 8 rows on the finest scale of a 250-px image is 1/31 of its work).
fn band_rows(rows: usize, threads: usize) -> usize {
    (rows / (4 * threads.max(1))).clamp(1, BAND)
}

/// Rows of queries the pruned search samples before [`k_smallest_sums`] chooses a search.
const SAMPLE_ROWS: usize = 2;

/// Patches with fewer values are not sampled (the pruned search runs): at 75 values the two
/// searches are within 16% of each other on the bench inputs, at 27 within 9%, and the sample
/// costs 2-5% of such a scale.
const SAMPLE_DIM: usize = 100;

/// Fine bounds per query in the sample above which the screened brute force of
/// [`crate::dense`] is faster. Measured at the finest scale of 250-px inputs on 2 threads
/// (`benches/README.md`): the sample counts 110-160 on photos and `epsilon-plus-flat` maps
/// (where the pruned search takes 0.25-0.63 s and the brute force 0.34-0.84 s) and 650-1850
/// on `srp` maps (pruned 0.90-1.47 s, brute force 0.82-0.95 s).
const FINES_ABOVE: f64 = 400.0;

/// For every query, the sum of its `k` smallest dissimilarities to the candidates (exact).
/// Queries come in rows of `row_len` (a row's queries are neighbours, left to right, and so
/// are the rows' first queries, top to bottom).
///
/// Two exact searches share the candidates' index: the pruned search of this module, and the
/// screened brute force of [`crate::dense`] for inputs whose patches are close to noise. With
/// AVX-512 (which the brute force needs to be faster) and patches of at least [`SAMPLE_DIM`]
/// values, the pruned search first runs on [`SAMPLE_ROWS`] rows spread over the queries; if
/// it evaluates more than [`FINES_ABOVE`] fine bounds per query there, the brute force does
/// all the queries. The choice depends on the input and the CPU, not on the thread count, and
/// both searches give the same bits (the exact K nearest, summed by [`sum_exactly`]).
pub fn k_smallest_sums(q: &Patches, cand: &Patches, k: usize, c: f64, row_len: usize) -> Vec<f64> {
    let row_len = row_len.max(1);
    indexed(q, cand, k, c, |ctx, k| {
        if brute_force_pays(ctx, k, row_len) {
            return crate::dense::k_smallest_sums(q, ctx.idx, ctx.basis, k, c, row_len);
        }
        let band_len = band_rows(q.n.div_ceil(row_len), rayon::current_num_threads());
        pruned(ctx, k, row_len, band_len)
    })
}

/// `search(ctx, k)` on the candidates' basis and index, with `k` at most the candidates; 0 for
/// every query when there is nothing to search.
fn indexed(
    q: &Patches,
    cand: &Patches,
    k: usize,
    c: f64,
    search: impl FnOnce(&Ctx, usize) -> Vec<f64>,
) -> Vec<f64> {
    if k == 0 || q.n == 0 || cand.n == 0 {
        return vec![0f64; q.n];
    }
    let basis = Basis::of(cand);
    let idx = Index::build(cand, &basis);
    let ctx = Ctx {
        idx: &idx,
        basis: &basis,
        q,
        c,
    };
    search(&ctx, k.min(cand.n))
}

/// Whether [`crate::dense`] is the faster search for these queries (see [`k_smallest_sums`]).
fn brute_force_pays(ctx: &Ctx, k: usize, row_len: usize) -> bool {
    ctx.q.dim >= SAMPLE_DIM
        && crate::dense::worth_it()
        && fines_per_query(ctx, k, row_len) > FINES_ABOVE
}

/// The fine bounds the pruned search evaluates per query, on [`SAMPLE_ROWS`] full rows spread
/// over the queries (0 when there are too few rows to sample). Each row starts afresh, as the
/// first row of a band does.
fn fines_per_query(ctx: &Ctx, k: usize, row_len: usize) -> f64 {
    let full_rows = ctx.q.n / row_len;
    if full_rows < 4 * SAMPLE_ROWS {
        return 0.0;
    }
    let fines: u64 = (0..SAMPLE_ROWS)
        .into_par_iter()
        .map(|i| {
            let row = (2 * i + 1) * full_rows / (2 * SAMPLE_ROWS);
            let mut lanes = new_lanes(ctx.idx, k, 1);
            let mut out = vec![0f64; row_len];
            search_band(ctx, &mut lanes, row * row_len, row_len, &mut out);
            lanes[0].fines
        })
        .sum();
    fines as f64 / (SAMPLE_ROWS * row_len) as f64
}

fn new_lanes(idx: &Index, k: usize, n: usize) -> Vec<Lane> {
    (0..n)
        .map(|_| Lane {
            stamp: vec![u32::MAX; idx.blocks * L],
            bound: vec![0f32; idx.blocks],
            first: Vec::with_capacity(idx.blocks),
            fine: vec![0f32; idx.fine_len],
            fine_of: u32::MAX,
            norms: (0.0, 0.0),
            a: [0f32; M + 1],
            prev: Vec::with_capacity(k),
            going: false,
            fines: 0,
            top: TopK {
                heap: Vec::with_capacity(k),
                k,
            },
        })
        .collect()
}

/// The pruned search with bands of `band_len` rows.
fn pruned(ctx: &Ctx, k: usize, row_len: usize, band_len: usize) -> Vec<f64> {
    let mut out = vec![0f64; ctx.q.n];
    let band_len = band_len.max(1);
    out.par_chunks_mut(row_len * band_len)
        .enumerate()
        .for_each(|(band, out)| {
            let mut lanes = new_lanes(ctx.idx, k, band_len);
            search_band(ctx, &mut lanes, band * row_len * band_len, row_len, out);
        });
    out
}

/// The pruned search alone, with bands of `band_len` rows (for the tests).
#[cfg(test)]
pub(crate) fn sums_in_bands(
    q: &Patches,
    cand: &Patches,
    k: usize,
    c: f64,
    row_len: usize,
    band_len: usize,
) -> Vec<f64> {
    indexed(q, cand, k, c, |ctx, k| {
        pruned(ctx, k, row_len.max(1), band_len)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Patches with structure: a few prototypes plus noise of the given size, some exact
    /// copies of earlier patches, positions in the unit square.
    pub(crate) fn patches(
        rng: &mut Rng,
        n: usize,
        dim: usize,
        noise: f64,
        protos: &[Vec<f64>],
    ) -> Patches {
        let mut data: Vec<f64> = Vec::with_capacity(n * dim);
        for i in 0..n {
            if i >= 10 && rng.next() < 0.15 {
                // An exact copy of an earlier patch (distance 0).
                let j = (rng.next() * i as f64) as usize;
                let copy = data[j * dim..(j + 1) * dim].to_vec();
                data.extend(copy);
                continue;
            }
            let p = &protos[(rng.next() * protos.len() as f64) as usize];
            data.extend(
                p.iter()
                    .map(|&v| (v + noise * (rng.next() - 0.5)).clamp(0.0, 1.0)),
            );
        }
        let pos = (0..n).map(|_| (rng.next(), rng.next())).collect();
        Patches { n, dim, data, pos }
    }

    /// Candidates and queries from six prototypes plus `noise`; every 7th query an exact copy
    /// of a candidate (T reaches 0), every 14th also at its position when `same_pos` (a
    /// position term of 0).
    pub(crate) fn case(
        rng: &mut Rng,
        (dim, nq, nc, noise): (usize, usize, usize, f64),
        same_pos: bool,
    ) -> (Patches, Patches) {
        let protos: Vec<Vec<f64>> = (0..6)
            .map(|_| (0..dim).map(|_| rng.next()).collect())
            .collect();
        let c = patches(rng, nc, dim, noise, &protos);
        let mut q = patches(rng, nq, dim, noise, &protos);
        for i in (0..nq).step_by(7) {
            let j = i % nc;
            q.data[i * dim..(i + 1) * dim].copy_from_slice(&c.data[j * dim..(j + 1) * dim]);
            if same_pos && i % 2 == 0 {
                q.pos[i] = c.pos[j];
            }
        }
        (q, c)
    }

    /// Every pair in float64, sorted: the sum of the k smallest.
    pub(crate) fn brute_force(q: &Patches, c: &Patches, k: usize, pc: f64) -> Vec<f64> {
        (0..q.n)
            .map(|i| {
                let qv = &q.data[i * q.dim..(i + 1) * q.dim];
                let mut d: Vec<f64> = (0..c.n)
                    .map(|j| {
                        let cv = &c.data[j * c.dim..(j + 1) * c.dim];
                        let d2: f64 = qv.iter().zip(cv).map(|(a, b)| (a - b) * (a - b)).sum();
                        let (dx, dy) = (q.pos[i].0 - c.pos[j].0, q.pos[i].1 - c.pos[j].1);
                        d2.sqrt() / (1.0 + pc * (dx * dx + dy * dy).sqrt())
                    })
                    .collect();
                d.sort_by(f64::total_cmp);
                d[..k.min(c.n)].iter().sum()
            })
            .collect()
    }

    #[test]
    fn sums_do_not_depend_on_the_order() {
        let mut rng = Rng(11);
        let v: Vec<f64> = (0..64)
            .map(|i| rng.next() * 12.0 * (i % 5) as f64)
            .collect();
        let want = sum_exactly(v.iter().copied());
        let mut w = v.clone();
        for _ in 0..20 {
            // A shuffle: the plain float64 sum changes in its last bits, this one does not.
            for i in (1..w.len()).rev() {
                w.swap(i, (rng.next() * (i + 1) as f64) as usize);
            }
            assert_eq!(sum_exactly(w.iter().copied()).to_bits(), want.to_bits());
        }
        // Within one rounding of the exact sum (here the values are multiples of 2^-53 * 12, so
        // a long double-double check is enough: compare with the float64 sum of the sorted
        // values, which is within 64 roundings).
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let plain: f64 = sorted.iter().sum();
        assert!((want - plain).abs() <= 64.0 * f64::EPSILON * plain);
        assert_eq!(sum_exactly([0.1, 0.2].into_iter()), 0.30000000000000004);
        assert_eq!(sum_exactly([1e-30, 1.0].into_iter()), 1.0);
        // Out of range: the plain sum.
        assert_eq!(sum_exactly([-1.0, 3.0].into_iter()), 2.0);
        assert!(sum_exactly([f64::NAN].into_iter()).is_nan());
    }

    #[test]
    fn noise_goes_to_the_brute_force_and_photos_stay_pruned() {
        let mut rng = Rng(21);
        let (dim, rows, row_len) = (147, 20, 20);
        // Noise: every value independent.
        let noise = |rng: &mut Rng, n: usize| Patches {
            n,
            dim,
            data: (0..n * dim).map(|_| rng.next()).collect(),
            pos: (0..n).map(|_| (rng.next(), rng.next())).collect(),
        };
        let (q, c) = (noise(&mut rng, rows * row_len), noise(&mut rng, 1200));
        // Structure: a few prototypes and little noise (as photos' patches are).
        let protos: Vec<Vec<f64>> = (0..6)
            .map(|_| (0..dim).map(|_| rng.next()).collect())
            .collect();
        let (sq, sc) = (
            patches(&mut rng, rows * row_len, dim, 0.05, &protos),
            patches(&mut rng, 1200, dim, 0.05, &protos),
        );
        for (q, c, is_noise) in [(&q, &c, true), (&sq, &sc, false)] {
            let basis = Basis::of(c);
            let idx = Index::build(c, &basis);
            let ctx = Ctx {
                idx: &idx,
                basis: &basis,
                q,
                c: 3.0,
            };
            assert_eq!(
                brute_force_pays(&ctx, 64, row_len),
                is_noise && crate::dense::worth_it(),
                "noise: {is_noise}, fine bounds per query {}",
                fines_per_query(&ctx, 64, row_len)
            );
            // Whichever search runs, the result is the brute force's.
            let want = brute_force(q, c, 64, 3.0);
            let got = k_smallest_sums(q, c, 64, 3.0, row_len);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12 * w,
                    "noise: {is_noise}, query {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn bands_narrow_so_that_every_thread_has_four() {
        // The finest scale of a 250-px image has 244 rows of queries.
        assert_eq!(band_rows(244, 2), BAND);
        assert_eq!(band_rows(244, 16), 3);
        assert_eq!(band_rows(244, 64), 1);
        assert_eq!(band_rows(5, 2), 1);
        assert_eq!(band_rows(0, 0), 1);
    }

    #[test]
    fn the_pruned_search_finds_the_exact_k_nearest() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // dim 1 and 3 have fewer dimensions than M; 27, 75 and 147 are the reference's.
        for (dim, nq, nc, k, noise) in [
            (1, 120, 90, 16, 0.3),
            (3, 150, 200, 64, 0.2),
            (27, 300, 700, 64, 0.1),
            (75, 200, 500, 64, 0.4),
            (147, 250, 600, 64, 0.05),
            (147, 40, 20, 64, 0.2),
            (147, 60, 5, 3, 0.2),
        ] {
            let (q, c) = case(&mut rng, (dim, nq, nc, noise), false);
            let want = brute_force(&q, &c, k, 3.0);
            for row_len in [1, 13, nq] {
                // Bands of one row, of three, and of eight (with a short last row and band).
                for band_len in [1, 3, BAND] {
                    let got = sums_in_bands(&q, &c, k, 3.0, row_len, band_len);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-12 * w.max(1.0),
                            "dim {dim}, k {k}, rows of {row_len}, bands of {band_len}, query {i}: {g} vs {w}"
                        );
                    }
                }
            }
            assert!(
                want.iter().any(|&w| w > 0.0),
                "a trivial case proves nothing"
            );
        }
    }

    #[test]
    fn the_basis_is_orthonormal_and_the_bound_holds() {
        let mut rng = Rng(7);
        let dim = 75;
        let protos: Vec<Vec<f64>> = (0..4)
            .map(|_| (0..dim).map(|_| rng.next()).collect())
            .collect();
        let c = patches(&mut rng, 400, dim, 0.3, &protos);
        let basis = Basis::of(&c);
        assert_eq!(basis.fine, M_FINE);
        for r in 0..M_FINE {
            for s in 0..M_FINE {
                let d = dot(
                    &basis.v[r * dim..(r + 1) * dim],
                    &basis.v[s * dim..(s + 1) * dim],
                );
                let want = if r == s { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-12, "rows {r}, {s}: {d}");
            }
        }
        // The screen's and the fine bound of the module doc, in float64, never exceed the
        // distance, and the fine bound is the tighter one.
        let (mut a, mut b) = ([0f32; M + 1], [0f32; M + 1]);
        let (mut fa, mut fb) = (vec![0f32; M_FINE + 1], vec![0f32; M_FINE + 1]);
        let bound = |u: &[f32], v: &[f32]| -> f64 {
            u.iter()
                .zip(v)
                .map(|(&u, &v)| (u as f64 - v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let mut tighter = 0;
        for i in 0..c.n - 1 {
            let (x, y) = (
                &c.data[i * dim..(i + 1) * dim],
                &c.data[(i + 1) * dim..(i + 2) * dim],
            );
            let norms = basis.project(x, &mut a);
            basis.project_fine(x, &a, norms, &mut fa);
            let norms = basis.project(y, &mut b);
            basis.project_fine(y, &b, norms, &mut fb);
            let (screen, fine) = (bound(&a, &b), bound(&fa, &fb));
            let exact = squared_distance(x, y).sqrt();
            assert!(screen * (1.0 - REL) - ABS <= exact, "pair {i}: screen");
            assert!(fine * (1.0 - REL) - ABS <= exact, "pair {i}: fine");
            tighter += (fine > screen) as usize;
        }
        assert!(
            tighter > c.n / 2,
            "the fine bound is tighter on {tighter} pairs only"
        );
    }
}
