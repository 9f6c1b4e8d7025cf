//! The pruned exact search for the K most similar patches: every query scans the candidates'
//! blocks ([`crate::index`]) and computes exact distances only where the bounds cannot rule a
//! pair out.
//!
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
//! nearest of its left neighbour (overlapping patches have similar neighbours), and the first
//! query of a row first scans its most promising blocks.
//!
//! Bands of up to [`BAND`] neighbouring rows run in parallel. Inside a band the rows take turns
//! block by block, one column at a time, so a block's candidates are read from memory once for
//! all its queries (vertical neighbours: they scan and evaluate many of the same candidates).
//! Bands are narrower when there are many threads, so that each has at least four bands to
//! take. Each query still does exactly the work it would do alone, so neither the band nor the
//! thread count changes the result.

use crate::index::{
    block_bounds, dissimilarity, sum_exactly, Basis, Index, Patches, ABS, L, M, REL, ROWS,
};
use rayon::prelude::*;

/// Blocks the first query of a row scans before the others.
pub(crate) const SEED_BLOCKS: usize = 4;

/// The K smallest values seen with their slots (a max-heap in a fixed array).
pub(crate) struct TopK {
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

/// What every query of one search shares.
pub(crate) struct Ctx<'a> {
    pub(crate) idx: &'a Index,
    pub(crate) basis: &'a Basis,
    pub(crate) q: &'a Patches,
    pub(crate) c: f64,
}

/// The scratch of one lane: the queries of one row, one after another.
pub(crate) struct Lane {
    /// The query that last evaluated each slot.
    pub(crate) stamp: Vec<u32>,
    /// Each block's lower bound on `d` for the current query.
    pub(crate) bound: Vec<f32>,
    /// Blocks ordered for the first query.
    pub(crate) first: Vec<(f32, u32)>,
    /// The fine coordinates of query `fine_of`.
    pub(crate) fine: Vec<f32>,
    pub(crate) fine_of: u32,
    /// The current query's norms from [`Basis::project`].
    pub(crate) norms: (f64, f64),
    /// The current query's screen coordinates.
    pub(crate) a: [f32; M + 1],
    /// The previous query's K nearest (the current one's seeds).
    pub(crate) prev: Vec<u32>,
    /// Whether the current query still scans (false once its `T` is 0).
    pub(crate) going: bool,
    /// Fine bounds evaluated so far, by all the lane's queries.
    pub(crate) fines: u64,
    pub(crate) top: TopK,
}

#[inline(always)]
pub(crate) fn exact(ctx: &Ctx, qi: usize, slot: usize) -> f64 {
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
pub(crate) fn fine_passes(ctx: &Ctx, qf: &[f32], slot: usize, t: f64, den: f32) -> bool {
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
pub(crate) fn scan_block(
    ctx: &Ctx,
    lane: &mut Lane,
    qi: usize,
    a: &[f32; M + 1],
    b: usize,
) -> bool {
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

/// Start query `qi` in `lane`: its coordinates, its block bounds, and a first `T` from the
/// K nearest of its left neighbour (the lane's previous query) or, at the start of a row, from
/// the most promising blocks.
#[inline(always)]
pub(crate) fn start_query(ctx: &Ctx, lane: &mut Lane, qi: usize) {
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
pub(crate) fn finish_query(lane: &mut Lane) -> f64 {
    lane.prev.clear();
    lane.prev.extend(lane.top.heap.iter().map(|&(_, s)| s));
    sum_exactly(lane.top.heap.iter().map(|&(v, _)| v))
}

/// One band of neighbouring rows, a lane each, swept left to right one column at a time.
/// Each query does exactly what it would alone (its left neighbour's seeds, then the blocks in
/// index order, each skipped or scanned against its own `T`); the lanes only take turns block
/// by block, so a block's candidates are read from memory once for all of them.
#[inline(always)]
pub(crate) fn search_band_body(
    ctx: &Ctx,
    lanes: &mut [Lane],
    q0: usize,
    row_len: usize,
    out: &mut [f64],
) {
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
pub(crate) unsafe fn search_band_avx2(
    ctx: &Ctx,
    lanes: &mut [Lane],
    q0: usize,
    row_len: usize,
    out: &mut [f64],
) {
    search_band_body(ctx, lanes, q0, row_len, out)
}

pub(crate) fn search_band(
    ctx: &Ctx,
    lanes: &mut [Lane],
    q0: usize,
    row_len: usize,
    out: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { search_band_avx2(ctx, lanes, q0, row_len, out) };
    }
    search_band_body(ctx, lanes, q0, row_len, out)
}

/// Rows of queries searched together, at most (see [`search_band_body`]).
pub(crate) const BAND: usize = 8;

/// The rows of a band: [`BAND`], or fewer so that every thread has at least four bands to
/// take (a band of 8 rows on the finest scale of a 250-px image is 1/31 of its work).
pub(crate) fn band_rows(rows: usize, threads: usize) -> usize {
    (rows / (4 * threads.max(1))).clamp(1, BAND)
}

pub(crate) fn new_lanes(idx: &Index, k: usize, n: usize) -> Vec<Lane> {
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
pub(crate) fn pruned(ctx: &Ctx, k: usize, row_len: usize, band_len: usize) -> Vec<f64> {
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
