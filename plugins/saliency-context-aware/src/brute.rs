//! The exact search for the K most similar patches by a screened brute force: for inputs
//! whose patches are close to noise (the `srp` relevance maps), on CPUs with AVX-512.
//!
//! On such inputs the pruned search of [`crate::search`] lets 700-1500 candidates per query
//! through its 12-coordinate screen at the finest scale, and evaluates a bound of 48
//! coordinates on each; the bound then costs a good part of what the whole distance costs.
//! Here every pair gets a float32 distance instead, computed as a matrix product in tiles of
//! [`R_WIDE`] queries by [`NC`] candidates held in registers, and only the pairs that can still
//! be among a query's K nearest get their exact float64 distance. The candidates are the
//! pruned search's blocks (a chunk is a block), and a tile skips a block when the block's
//! bound (the pruned search's, per query) exceeds the `T` of all its queries.
//!
//! **The screen.** Patches are centred on the candidates' mean and rounded to float32
//! (`q'`, `p'`). A tile computes `c2 = (|q'|^2 + |p'|^2) - 2 q'.p'`, which differs from
//! `|q' - p'|^2` by at most `(dim + 6) u S` with `S = |q'|^2 + |p'|^2` and `u = 2^-24` (the
//! dot product's `gamma_dim` bound on `sum |q'_i p'_i| <= S / 2`, doubled, plus the roundings
//! of the norms and the two additions); [`G`] takes four times that. Rounding the patches
//! moves `|q - p|` by at most `u (|q| + |p|) < 2e-6`, which the absolute margin [`ABS`]
//! covers fifty times over. So a pair with `d <= T` always has
//! `c2 - G S <= ((T (1 + REL) (1 + c rho) + ABS) (1 + 3 REL))^2 (1 + 2 REL)` (`rho` the
//! position distance in float32), the test of [`screen`]. A pair that passes gets float64
//! lower and upper bounds on its `d` from the same margins ([`Ctx::bounds`]).
//!
//! **T.** A query's `T` is an upper bound on its K-th distance `T*`: the K-th smallest upper
//! bound over K or more distinct candidates. It starts from the K nearest of the three
//! queries above it (their float32 distances, rounded up; a band's first row starts from
//! infinity), then the upper bounds of the pairs that pass the screen tighten it
//! ([`KthBound`]). Every pair with `d <= T*` passes, since `T >= T*` throughout; at the end,
//! the pairs whose lower bound is at most the final `T` get their exact distance, and the K
//! smallest of those are the exact K nearest.
//!
//! Bands of [`BAND`] rows run in parallel; their size does not depend on the thread count,
//! and the K distances are summed by [`crate::index::sum_exactly`], whose result does not
//! depend on their order. So this search and the pruned one give the same bits.

use rayon::prelude::*;

use crate::index::{
    block_bounds, dissimilarity, sum_exactly, Basis, Index, Patches, ABS, L, M, REL,
};

/// Candidates per chunk (the lanes of a tile): a block of the pruned search.
const NC: usize = L;
/// Queries per tile with AVX-512 (24 of the 32 vector registers hold the tile).
const R_WIDE: usize = 12;
/// Queries per tile without it.
const R_NARROW: usize = 3;
/// Chunks per pass over a row of queries: a row's tiles share them while they are in cache.
const SUPER: usize = 8;
/// Rows of queries per band.
const BAND: usize = 4;
/// The screen's margin for the expanded float32 distance, per unit of `dim + 6`: four times
/// the round-off bound of the module doc.
const G: f32 = 4.0 / (1u32 << 24) as f32;

/// Whether this search is faster than the pruned one on noise-like inputs here: it needs
/// AVX-512 (with 256-bit vectors its tiles are half as wide, and it loses: 1.44 s against
/// 1.20 s on astronaut's `srp` map at the finest scale).
pub(crate) fn worth_it() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The candidates, centred and rounded to float32, in chunks of [`NC`]: per chunk, `dim` rows
/// of NC lanes, then per slot its squared norm and position.
struct Chunks {
    /// Per chunk: its real lanes (the pruned search pads its last block).
    valid: Vec<u32>,
    p: Vec<f32>,
    norm: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
}

/// What every query of one search shares.
struct Ctx<'a> {
    q: &'a Patches,
    /// The candidates in the pruned search's blocks: a candidate is a slot.
    idx: &'a Index,
    basis: &'a Basis,
    /// The candidates the same way, slot by slot (for the seeds).
    cf: Vec<f32>,
    chunks: Chunks,
    c: f64,
    k: usize,
    /// `G (dim + 6)`.
    g: f32,
}

/// `sum (a_i - b_i)^2` in float32, in sixteen partial sums.
#[inline(always)]
fn sum16(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += (x[l] - y[l]) * (x[l] - y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `x - mean` rounded to float32 into `out`; returns its squared norm.
fn centred(x: &[f64], mean: &[f64], out: &mut [f32]) -> f32 {
    let mut n = 0f64;
    for ((o, v), m) in out.iter_mut().zip(x).zip(mean) {
        *o = (v - m) as f32;
        n += *o as f64 * *o as f64;
    }
    n as f32
}

impl Ctx<'_> {
    /// Float64 lower and upper bounds on `d` for a pair that passed the screen (its `c2` and
    /// position distance in float32): `|q - p|^2` is within `g S` of c2, `|q - p|` within
    /// ABS of the rounded patches' distance, the position term within REL of its value.
    #[inline(always)]
    fn bounds(&self, qn: f32, (c2, rho, j): (f32, f32, u32)) -> (f64, f64) {
        let (c2, e) = (
            c2 as f64,
            self.g as f64 * (qn + self.chunks.norm[j as usize]) as f64,
        );
        let den = 1.0 + self.c * rho as f64;
        let lo = ((c2 - e).max(0.0).sqrt() - ABS) / (den * (1.0 + REL)) * (1.0 - REL);
        let hi = ((c2 + e).sqrt() + ABS) / (den * (1.0 - REL)) * (1.0 + REL);
        (lo, hi)
    }

    fn exact(&self, qi: usize, j: usize) -> f64 {
        let dim = self.q.dim;
        dissimilarity(
            &self.q.data[qi * dim..(qi + 1) * dim],
            self.q.pos[qi],
            &self.idx.data[j * dim..(j + 1) * dim],
            self.idx.pos[j],
            self.c,
        )
    }

    /// An upper bound on query `qi`'s K-th distance: the K-th smallest upper bound on `d` over
    /// the distinct candidates in `sets` (each K distinct candidates; `stamp` marks those seen,
    /// so none counts twice). And whether all of the first set are exactly as far as 0 (then
    /// they are its K nearest).
    fn seed_bound(
        &self,
        qi: usize,
        qf: &[f32],
        sets: &[&[u32]],
        stamp: &mut [u32],
        ubs: &mut KthBound,
    ) -> (f64, bool) {
        let dim = self.q.dim;
        let (qx, qy) = (self.q.pos[qi].0 as f32, self.q.pos[qi].1 as f32);
        let mut zero = true;
        ubs.clear();
        for (n, seeds) in sets.iter().enumerate() {
            for &j in seeds.iter() {
                let j = j as usize;
                if stamp[j] == qi as u32 {
                    continue;
                }
                stamp[j] = qi as u32;
                let s = sum16(qf, &self.cf[j * dim..(j + 1) * dim]);
                zero &= n > 0 || s == 0.0;
                let (dx, dy) = (qx - self.chunks.x[j], qy - self.chunks.y[j]);
                let den = 1.0 + self.c as f32 * (dx * dx + dy * dy).sqrt();
                // A sum of non-negative terms: relative round-off below (dim + 2) u < REL.
                ubs.push(
                    ((s as f64).sqrt() * (1.0 + 2.0 * REL) + ABS) / (den as f64 * (1.0 - REL)),
                );
            }
        }
        if zero {
            zero = sets[0].iter().all(|&j| self.exact(qi, j as usize) == 0.0);
        }
        ubs.cut();
        (ubs.t, zero)
    }
}

/// The dot products of `R` queries (`qt`: `dim` rows of R, transposed) with one chunk.
#[inline(always)]
fn tile<const FMA: bool, const R: usize>(qt: &[f32], p: &[f32]) -> [[f32; NC]; R] {
    let mut acc = [[0f32; NC]; R];
    for (pv, qv) in p.chunks_exact(NC).zip(qt.chunks_exact(R)) {
        let pv: &[f32; NC] = pv.try_into().unwrap();
        for r in 0..R {
            let s = qv[r];
            for l in 0..NC {
                acc[r][l] = if FMA {
                    s.mul_add(pv[l], acc[r][l])
                } else {
                    acc[r][l] + s * pv[l]
                };
            }
        }
    }
    acc
}

/// One query of a row.
struct Query {
    qi: usize,
    /// Its squared norm, centred and rounded as the candidates are.
    qn: f32,
    /// The seeds' bound (infinite without seeds, 0 when there is nothing to find).
    bound: f64,
    /// Its K nearest are its seeds, all at distance 0.
    zero: bool,
    /// The upper bounds on `d` of the pairs that passed the screen.
    up: KthBound,
    /// The pairs that passed the screen: their float32 `c2`, position distance and slot.
    list: Vec<(f32, f32, u32)>,
}

impl Query {
    /// The current bound on the query's K-th distance.
    #[inline(always)]
    fn t(&self) -> f64 {
        self.up.t.min(self.bound)
    }
}

/// The K-th smallest of the values pushed, loosely kept: values gather in a buffer and are cut
/// back to the K smallest when it holds 2K (no heap, no data-dependent branch per value). `t`
/// is the K-th smallest at the last cut (infinite before): never below the K-th smallest of
/// all the values pushed, and equal to it after [`KthBound::cut`].
struct KthBound {
    v: Vec<f64>,
    k: usize,
    t: f64,
}

impl KthBound {
    fn new(k: usize) -> KthBound {
        KthBound {
            v: Vec::with_capacity(2 * k),
            k,
            t: f64::INFINITY,
        }
    }
    fn clear(&mut self) {
        self.v.clear();
        self.t = f64::INFINITY;
    }
    #[inline(always)]
    fn push(&mut self, x: f64) {
        // A value at or above t is not needed: K values up to t are known.
        if x < self.t {
            self.v.push(x);
            if self.v.len() >= 2 * self.k {
                self.cut();
            }
        }
    }
    fn cut(&mut self) {
        let k = self.k;
        if self.v.len() >= k {
            self.v.select_nth_unstable_by(k - 1, f64::total_cmp);
            self.t = self.v[k - 1];
            self.v.truncate(k);
        }
    }
}

/// The screen of the module doc for query `q` against chunk `ci` (`dots`: the tile's dot
/// products for it). A pair that passes is listed, and its upper bound tightens `T`.
#[inline(always)]
fn screen(ctx: &Ctx, q: &mut Query, ci: usize, dots: &[f32; NC]) {
    let ch = &ctx.chunks;
    let base = ci * NC;
    let (qn, qx, qy) = (q.qn, ctx.q.pos[q.qi].0 as f32, ctx.q.pos[q.qi].1 as f32);
    let (rel, abs, c, g) = (REL as f32, ABS as f32, ctx.c as f32, ctx.g);
    let tf = q.t() as f32 * (1.0 + rel);
    // The test with its constants folded: keep iff c2 - g S <= (a + b rho)^2.
    let widen = (1.0 + 3.0 * rel) * (1.0 + 2.0 * rel).sqrt() * (1.0 + rel);
    let (a, b) = if tf.is_finite() {
        ((tf + abs) * widen, tf * c * widen)
    } else {
        // No bound yet: keep everything (and no infinity times a zero distance).
        (f32::INFINITY, 0.0)
    };
    let norm: &[f32; NC] = ch.norm[base..base + NC].try_into().unwrap();
    let xs: &[f32; NC] = ch.x[base..base + NC].try_into().unwrap();
    let ys: &[f32; NC] = ch.y[base..base + NC].try_into().unwrap();
    let mut mask = 0u32;
    let mut c2s = [0f32; NC];
    let mut rhos = [0f32; NC];
    for l in 0..NC {
        let s = qn + norm[l];
        let c2 = s - 2.0 * dots[l];
        let (dx, dy) = (qx - xs[l], qy - ys[l]);
        let rho = (dx * dx + dy * dy).sqrt();
        let v = a + b * rho;
        mask |= ((c2 - g * s <= v * v) as u32) << l;
        c2s[l] = c2;
        rhos[l] = rho;
    }
    mask &= ch.valid[ci];
    while mask != 0 {
        let l = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let e = (c2s[l], rhos[l], (base + l) as u32);
        q.list.push(e);
        q.up.push(ctx.bounds(qn, e).1);
    }
}

/// One band of rows, top to bottom. Each row's queries start from their seeds, then go
/// through the candidates [`SUPER`] chunks at a time, tile by tile (`R` neighbours each).
/// `out` holds the band's sums.
#[inline(always)]
fn band_body<const FMA: bool, const R: usize>(
    ctx: &Ctx,
    q0: usize,
    row_len: usize,
    out: &mut [f64],
) {
    let (dim, k, nb) = (ctx.q.dim, ctx.k, ctx.idx.blocks);
    let rows = out.len().div_ceil(row_len);
    let tiles = row_len.div_ceil(R);
    // The K nearest of every query of the previous row and of this one.
    let mut above: Vec<u32> = vec![];
    let mut here: Vec<u32> = vec![0; row_len * k];
    // The row's queries, tile by tile, transposed (`dim` rows of R), and their block bounds.
    let mut qt = vec![0f32; tiles * dim * R];
    let mut bounds = vec![0f32; tiles * R * nb];
    let mut row_q: Vec<Query> = (0..tiles * R)
        .map(|_| Query {
            qi: 0,
            qn: 0.0,
            bound: f64::INFINITY,
            zero: false,
            up: KthBound::new(k),
            list: vec![],
        })
        .collect();
    let mut found: Vec<(f64, u32)> = vec![];
    let mut ubs = KthBound::new(k);
    let mut stamp = vec![u32::MAX; nb * L];
    let mut a = [0f32; M + 1];
    let mut qf = vec![0f32; dim];
    for row in 0..rows {
        let len = row_len.min(out.len() - row * row_len);
        for (i, q) in row_q.iter_mut().enumerate() {
            // A short last tile repeats the row's last query (computed, not reported).
            let at = i.min(len - 1);
            q.qi = q0 + row * row_len + at;
            q.up.clear();
            q.list.clear();
            q.zero = false;
            q.bound = if i < len { f64::INFINITY } else { 0.0 };
            let x = &ctx.q.data[q.qi * dim..(q.qi + 1) * dim];
            q.qn = centred(x, &ctx.basis.mean, &mut qf);
            if row > 0 && i < len {
                // The K nearest of the queries above, above left and above right.
                let set = |at: usize| &above[at * k..(at + 1) * k];
                let sets = [
                    set(at),
                    set(at.saturating_sub(1)),
                    set((at + 1).min(len - 1)),
                ];
                (q.bound, q.zero) = ctx.seed_bound(q.qi, &qf, &sets, &mut stamp, &mut ubs);
                if q.zero {
                    q.bound = 0.0;
                }
            }
            ctx.basis.project(x, &mut a);
            block_bounds(
                ctx.idx,
                ctx.c,
                &mut bounds[i * nb..(i + 1) * nb],
                &a,
                ctx.q.pos[q.qi],
            );
            let (t, r) = (i / R, i % R);
            for (d, &v) in qf.iter().enumerate() {
                qt[(t * dim + d) * R + r] = v;
            }
        }
        for sc in (0..nb).step_by(SUPER) {
            for (t, qs) in row_q.chunks_exact_mut(R).enumerate() {
                let qt = &qt[t * dim * R..(t + 1) * dim * R];
                let tb = &bounds[t * R * nb..(t + 1) * R * nb];
                for ci in sc..(sc + SUPER).min(nb) {
                    // A query scans a block whose bound does not exceed its T (and is not 0).
                    let wants = |(r, q): (usize, &Query)| {
                        let t = q.t();
                        t > 0.0 && tb[r * nb + ci] as f64 <= t
                    };
                    if !qs.iter().enumerate().any(wants) {
                        continue;
                    }
                    let dots =
                        tile::<FMA, R>(qt, &ctx.chunks.p[ci * dim * NC..(ci + 1) * dim * NC]);
                    for (r, (q, dots)) in qs.iter_mut().zip(&dots).enumerate() {
                        if wants((r, q)) {
                            screen(ctx, q, ci, dots);
                        }
                    }
                }
            }
        }
        for (i, q) in row_q[..len].iter_mut().enumerate() {
            let slots = &mut here[i * k..(i + 1) * k];
            if q.zero {
                // Its seeds, all at distance 0.
                slots.copy_from_slice(&above[i * k..(i + 1) * k]);
                out[row * row_len + i] = 0.0;
                continue;
            }
            // Every pair with d <= T* is listed, with a lower bound at most T.
            q.up.cut();
            let (t, qn) = (q.t(), q.qn);
            found.clear();
            for &e in &q.list {
                if ctx.bounds(qn, e).0 <= t {
                    found.push((ctx.exact(q.qi, e.2 as usize), e.2));
                }
            }
            // At least the K nearest are found (unless the patches hold NaN, which the stage
            // refuses: then the sum is NaN); ties at the K-th go by slot.
            if found.len() < k {
                out[row * row_len + i] = f64::NAN;
                slots.fill(0);
                continue;
            }
            found.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            out[row * row_len + i] = sum_exactly(found[..k].iter().map(|&(v, _)| v));
            for (s, &(_, j)) in slots.iter_mut().zip(&found[..k]) {
                *s = j;
            }
        }
        std::mem::swap(&mut above, &mut here);
        here.resize(row_len * k, 0);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn band_avx512(ctx: &Ctx, q0: usize, row_len: usize, out: &mut [f64]) {
    band_body::<true, R_WIDE>(ctx, q0, row_len, out)
}

fn band(ctx: &Ctx, q0: usize, row_len: usize, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if worth_it() {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { band_avx512(ctx, q0, row_len, out) };
    }
    band_body::<false, R_NARROW>(ctx, q0, row_len, out)
}

/// For every query, the sum of its `k` smallest dissimilarities to the candidates of `idx`
/// (exact), as [`crate::search::k_smallest_sums`] gives it. Queries come in rows of `row_len`
/// neighbours; `k` is at most the number of candidates.
pub(crate) fn k_smallest_sums(
    q: &Patches,
    idx: &Index,
    basis: &Basis,
    k: usize,
    c: f64,
    row_len: usize,
) -> Vec<f64> {
    let mut out = vec![0f64; q.n];
    let dim = q.dim;
    let mean = &basis.mean;
    let slots = idx.blocks * L;
    let mut chunks = Chunks {
        valid: vec![0; idx.blocks],
        p: vec![0f32; slots * dim],
        norm: vec![0f32; slots],
        x: vec![0f32; slots],
        y: vec![0f32; slots],
    };
    let mut cf = vec![0f32; slots * dim];
    for (j, (x, row)) in idx
        .data
        .chunks_exact(dim)
        .zip(cf.chunks_exact_mut(dim))
        .enumerate()
    {
        if !idx.real[j] {
            continue;
        }
        let (ci, l) = (j / NC, j % NC);
        chunks.valid[ci] |= 1 << l;
        chunks.norm[j] = centred(x, mean, row);
        for (d, &v) in row.iter().enumerate() {
            chunks.p[ci * dim * NC + d * NC + l] = v;
        }
        chunks.x[j] = idx.pos[j].0 as f32;
        chunks.y[j] = idx.pos[j].1 as f32;
    }
    let ctx = Ctx {
        q,
        idx,
        basis,
        cf,
        chunks,
        c,
        k,
        g: G * (dim + 6) as f32,
    };
    let row_len = row_len.max(1);
    out.par_chunks_mut(row_len * BAND)
        .enumerate()
        .for_each(|(b, out)| band(&ctx, b * row_len * BAND, row_len, out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::sums_in_bands;
    use crate::search::tests::{brute_force, case, Rng};

    /// The brute force alone on `q` and `c`, as [`crate::search::k_smallest_sums`] calls it.
    fn sums(q: &Patches, c: &Patches, k: usize, pc: f64, row_len: usize) -> Vec<f64> {
        let basis = Basis::of(c);
        let idx = Index::build(c, &basis);
        k_smallest_sums(q, &idx, &basis, k.min(c.n), pc, row_len)
    }

    #[test]
    fn the_screened_brute_force_finds_the_exact_k_nearest() {
        let mut rng = Rng(0x51_7cc1_b727_220a);
        // The reference's 147, 75 and 27 values, the 49, 25 and 9 of grey inputs, fewer
        // candidates than a chunk, and k above the candidates.
        for (dim, nq, nc, k, noise) in [
            (1, 120, 90, 16, 0.3),
            (9, 300, 700, 64, 0.1),
            (25, 200, 500, 64, 0.4),
            (27, 150, 400, 64, 0.1),
            (49, 250, 600, 64, 0.05),
            (49, 40, 20, 64, 0.2),
            (49, 60, 5, 3, 0.2),
            (75, 100, 300, 64, 0.3),
            (147, 90, 130, 64, 0.3),
        ] {
            let (q, c) = case(&mut rng, (dim, nq, nc, noise), true);
            let want = brute_force(&q, &c, k, 3.0);
            // One row, rows shorter and longer than a tile, a short last row and band.
            for row_len in [1, 4, 13, nq] {
                let got = sums(&q, &c, k, 3.0, row_len);
                // The pruned search finds the same K distances: the same bits.
                let pruned = sums_in_bands(&q, &c, k, 3.0, row_len, 3);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-12 * w.max(1.0),
                        "dim {dim}, k {k}, rows of {row_len}, query {i}: {g} vs {w}"
                    );
                    assert_eq!(g.to_bits(), pruned[i].to_bits(), "query {i}: {g} vs pruned");
                }
            }
            assert!(
                want.iter().any(|&w| w > 0.0),
                "a trivial case proves nothing"
            );
        }
    }

    #[test]
    fn the_screen_allows_for_its_round_off() {
        // Near-copies of one bright patch, far from the candidates' mean (a crowd of dark
        // patches): the expanded float32 distance is off by about 1e-3, ten times the squared
        // distances between the copies, so a screen without its margin drops true neighbours.
        let mut rng = Rng(3);
        let dim = 147;
        let bright: Vec<f64> = (0..dim).map(|_| 0.9 + 0.05 * rng.next()).collect();
        let near = |rng: &mut Rng, n: usize, centre: &[f64], noise: f64| -> Vec<f64> {
            (0..n)
                .flat_map(|_| {
                    centre
                        .iter()
                        .map(|&v| v + noise * rng.next())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let dark = vec![0.05; dim];
        let mut data = near(&mut rng, 200, &bright, 0.004);
        data.extend(near(&mut rng, 600, &dark, 0.1));
        let pos = |rng: &mut Rng, n: usize| (0..n).map(|_| (rng.next(), rng.next())).collect();
        let c = Patches {
            n: 800,
            dim,
            data,
            pos: pos(&mut rng, 800),
        };
        let q = Patches {
            n: 120,
            dim,
            data: near(&mut rng, 120, &bright, 0.004),
            pos: pos(&mut rng, 120),
        };
        let want = brute_force(&q, &c, 64, 3.0);
        for row_len in [10, 120] {
            let got = sums(&q, &c, 64, 3.0, row_len);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12 * w,
                    "rows of {row_len}, query {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn nan_patches_give_nan_not_a_panic() {
        let mut rng = Rng(5);
        let (mut q, c) = case(&mut rng, (49, 100, 300, 0.2), false);
        q.data.iter_mut().step_by(3).for_each(|v| *v = f64::NAN);
        assert!(sums(&q, &c, 64, 3.0, 10).iter().all(|s| s.is_nan()));
    }

    #[test]
    fn flat_queries_stop_at_their_seeds() {
        // Every patch the same: every distance 0, found from the seeds (and the sums are 0).
        let (dim, n) = (9, 200);
        let p = Patches {
            n,
            dim,
            data: vec![0.25; n * dim],
            pos: (0..n)
                .map(|i| ((i % 20) as f64 / 20.0, (i / 20) as f64 / 20.0))
                .collect(),
        };
        assert!(sums(&p, &p, 64, 3.0, 20).iter().all(|&s| s == 0.0));
    }
}
