//! The exact search for the K most similar patches by a screened brute force: for inputs
//! whose patches are close to noise (the `srp` relevance maps), chosen on CPUs with AVX2 or
//! AVX-512 ([`worth_it`]; its portable kernel runs when asked, and in the tests on every CPU).
//!
//! On such inputs the pruned search of [`crate::search`] lets 700-1500 candidates per query
//! through its 12-coordinate screen at the finest scale, and evaluates a bound of 48
//! coordinates on each; the bound then costs a good part of what the whole distance costs.
//! Here every pair gets a 16-bit integer distance instead, computed as a matrix product in
//! tiles of `R` queries by [`NC`] candidates held in registers (`vpmaddwd`, or VNNI's
//! `vpdpwssd`: two 16-bit products summed into each 32-bit lane, twice the multiply-adds of a
//! float32 FMA per instruction), and only the pairs that can still be among a query's K
//! nearest get their exact float64 distance. The candidates are the pruned search's blocks (a
//! chunk is a block), and a tile skips a block when the block's bound (the pruned search's,
//! per query) exceeds the `T` of all its queries.
//!
//! **The screen.** Patches are centred on the candidates' mean (`q`, `p`, float64) and
//! quantised: `q^ = round(s q)` with one scale `s` for the search, the largest that keeps
//! every `|q^|^2` within 2^29 ([`Quant`]). The integer distance `D = |q^|^2 + |p^|^2 - 2 q^.p^`
//! is then exact: the dot product's partial sums are at most `|q^| |p^| <= 2^29` in 32-bit
//! lanes, and `D < 2^31`. Each patch keeps the norm of its rounding error,
//! `E_q = |s q - q^|` (at most `sqrt(dim) / 2`, about `sqrt(dim / 12)` on average), so by the
//! triangle inequality `|sqrt(D) - s |q - p|| <= E_q + E_p`: a rigorous bound, whatever the
//! patches. Centring in float64 moves `|q - p|` by far less than the absolute margin [`ABS`].
//! So a pair with `d <= T` always has
//! `sqrt(D) <= (s (T (1 + REL) (1 + c rho) + ABS) + E_q + E_p) (1 + 3 REL) (1 + 2 REL)^(1/2)`
//! (`rho` the position distance in float32; the float32 evaluation of the test and of `D`
//! itself round far below REL), the test of [`screen`]. A pair that passes gets float64 lower
//! and upper bounds on its `d` from the same margins ([`Ctx::bounds`]). Without `E_q + E_p` the
//! screen drops true neighbours: `the_screen_allows_for_its_rounding` plants such a case.
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
//! depend on their order. So this search and the pruned one give the same bits, with every
//! kernel: the kernels compute the same integers.

use rayon::prelude::*;

use crate::index::{
    block_bounds, dissimilarity, sum_exactly, Basis, Index, Patches, ABS, L, M, REL,
};

/// Candidates per chunk (the lanes of a tile): a block of the pruned search.
const NC: usize = L;
/// Queries per tile with AVX-512 (24 of the 32 vector registers hold the tile).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const R_WIDE: usize = 12;
/// Queries per tile with AVX2 (12 of the 16 vector registers hold half a tile).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const R_AVX2: usize = 6;
/// Queries per tile without SIMD.
const R_NARROW: usize = 3;
/// Chunks per pass over a row of queries: a row's tiles share them while they are in cache.
const SUPER: usize = 8;
/// Rows of queries per band.
const BAND: usize = 4;

/// The instruction set of the screen's integer products. Every kernel computes the same
/// integers, so the search gives the same bits with each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// Plain Rust, any CPU: the brute force is never chosen with it (the pruned search is
    /// faster), but it runs when asked, and on every CPU in the tests.
    Portable,
    /// x86-64 AVX2: `vpmaddwd` and `vpaddd` on 256-bit vectors, tiles of 6 queries by half a
    /// chunk.
    Avx2,
    /// AVX-512BW: the same on 512-bit vectors, tiles of 12 queries.
    Avx512,
    /// AVX-512 VNNI: `vpdpwssd` (the product and the sum in one instruction).
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Portable,
        Kernel::Avx2,
        Kernel::Avx512,
        Kernel::Avx512Vnni,
    ];

    /// Its name, as `SRHOST_CA_KERNEL` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU runs it.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Kernel::Portable => true,
                Kernel::Avx2 => has!("avx2"),
                Kernel::Avx512 => has!("avx2") && has!("avx512f") && has!("avx512bw"),
                Kernel::Avx512Vnni => {
                    has!("avx2") && has!("avx512f") && has!("avx512bw") && has!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }

    /// The kernels this CPU runs, slowest first.
    pub fn supported_here() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// The fastest kernel this CPU runs, at most the one `SRHOST_CA_KERNEL` names (`portable`,
    /// `avx2`, `avx512` or `avx512vnni`: benches measure the AVX2 path on an AVX-512 CPU this
    /// way; a name it does not know is ignored with a warning). Read once per process.
    pub fn best() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = match std::env::var("SRHOST_CA_KERNEL") {
                Ok(v) => Kernel::ALL
                    .into_iter()
                    .find(|k| k.name() == v)
                    .unwrap_or_else(|| {
                        eprintln!(
                            "warning: SRHOST_CA_KERNEL={v} is none of portable, avx2, avx512, avx512vnni; ignored"
                        );
                        Kernel::Avx512Vnni
                    }),
                Err(_) => Kernel::Avx512Vnni,
            };
            cap.or_below()
        })
    }

    /// `self` where this CPU runs it, else the fastest kernel below it that it runs.
    pub(crate) fn or_below(self) -> Kernel {
        Kernel::supported_here()
            .into_iter()
            .filter(|&k| k <= self)
            .max()
            .unwrap_or(Kernel::Portable)
    }
}

/// Whether the screened brute force can be faster than the pruned search on noise-like inputs
/// with `kernel`: with x86 SIMD. With AVX2 it was a draw until each passing pair's bounds took
/// one division; since, at the finest scale of the `srp` maps it is 6-11% faster than the pruned
/// search (benches/README.md, `cpu/context_aware_scales`, AVX2 forced on an AVX-512 machine).
/// The portable kernel is not: it runs only when asked.
pub(crate) fn worth_it(kernel: Kernel) -> bool {
    kernel >= Kernel::Avx2
}

/// The quantisation of the module doc: `q^ = round(s (x - mean))`.
struct Quant<'a> {
    mean: &'a [f64],
    s: f64,
    /// `1 / s`.
    inv: f64,
}

impl Quant<'_> {
    /// The largest integer a coordinate may become, for patches of `dim` values: `dim` of them
    /// squared stay within 2^29, and a 16-bit lane holds one.
    fn max_int(dim: usize) -> f64 {
        ((((1u64 << 29) as f64) / dim.max(1) as f64).sqrt().floor() - 1.0).clamp(1.0, 16383.0)
    }

    /// The scale for these patches: the largest `|x - mean|` becomes at most
    /// [`Quant::max_int`] after rounding (1 for patches all at the mean, or holding NaN).
    fn of<'a>(mean: &'a [f64], sets: &[&[f64]]) -> Quant<'a> {
        let dim = mean.len();
        let mut big = 0f64;
        for data in sets {
            for row in data.chunks_exact(dim) {
                for (x, m) in row.iter().zip(mean) {
                    big = big.max((x - m).abs());
                }
            }
        }
        let s = if big > 0.0 && big.is_finite() {
            (Quant::max_int(dim) - 0.5) / big
        } else {
            1.0
        };
        Quant {
            mean,
            s,
            inv: 1.0 / s,
        }
    }

    /// `x` quantised into `out` (coordinate pairs packed into 32 bits, the first in the low
    /// half; an odd last coordinate pairs with 0). Returns `|x^|^2` and `E_x`, rounded up.
    fn quantise(&self, x: &[f64], out: &mut [i32]) -> (i32, f32) {
        let (mut norm, mut err) = (0i64, 0f64);
        let mut ints = x.iter().zip(self.mean).map(|(v, m)| {
            let t = (v - m) * self.s;
            // NaN becomes 0 here, and its error NaN: the pair's bounds are NaN.
            let r = t.round();
            err += (t - r) * (t - r);
            let i = r as i16;
            norm += i as i64 * i as i64;
            i
        });
        for o in out.iter_mut() {
            let lo = ints.next().unwrap_or(0);
            let hi = ints.next().unwrap_or(0);
            *o = (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32;
        }
        // The error norm in float64 is off by far less than this relative margin.
        (norm as i32, (err.sqrt() * (1.0 + 1e-6) + 1e-6) as f32)
    }
}

/// The candidates, quantised, in chunks of [`NC`]: per chunk, `pairs` rows of NC lanes, then
/// per slot its squared norm, error norm and position.
struct Chunks {
    /// Per chunk: its real lanes (the pruned search pads its last block).
    valid: Vec<u32>,
    p: Vec<i32>,
    norm: Vec<i32>,
    err: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
}

/// What every query of one search shares.
struct Ctx<'a> {
    q: &'a Patches,
    /// The candidates in the pruned search's blocks: a candidate is a slot.
    idx: &'a Index,
    basis: &'a Basis,
    quant: Quant<'a>,
    /// Coordinate pairs per patch.
    pairs: usize,
    /// The candidates centred and rounded to float32, slot by slot (for the seeds).
    cf: Vec<f32>,
    chunks: Chunks,
    c: f64,
    k: usize,
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

/// `x - mean` rounded to float32 into `out`.
fn centred(x: &[f64], mean: &[f64], out: &mut [f32]) {
    for ((o, v), m) in out.iter_mut().zip(x).zip(mean) {
        *o = (v - m) as f32;
    }
}

impl Ctx<'_> {
    /// Float64 lower and upper bounds on `d` for a pair that passed the screen (its integer
    /// `D`, position distance in float32 and slot; `qe` the query's `E_q`): `s |q - p|` is
    /// within `E_q + E_p` of `sqrt(D)`, `|q - p|` within ABS of the centred patches' distance,
    /// the position term within REL of its value. Computed once per pair, with one division
    /// (`1 / s` is the search's; the products by reciprocals round within a few float64 ulps,
    /// some 1e-15, far inside REL's margin).
    #[inline(always)]
    fn bounds(&self, qe: f32, d2: u32, rho: f32, j: usize) -> (f64, f64) {
        const LOW: f64 = (1.0 - REL) / (1.0 + REL);
        const HIGH: f64 = (1.0 + REL) / (1.0 - REL);
        let r = (d2 as f64).sqrt();
        let e = qe as f64 + self.chunks.err[j] as f64;
        let inv = 1.0 / (1.0 + self.c * rho as f64);
        let lo = ((r - e).max(0.0) * self.quant.inv - ABS).max(0.0) * inv * LOW;
        let hi = ((r + e) * self.quant.inv + ABS) * inv * HIGH;
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

/// The dot products of `R` queries with one chunk (`qt`: `pairs` rows of R packed coordinate
/// pairs, transposed; `p`: `pairs` rows of NC), as one kernel computes them.
trait Tile<const R: usize> {
    /// # Safety
    /// The CPU runs the kernel (`Kernel::supported`).
    unsafe fn dots(qt: &[i32], p: &[i32]) -> [[i32; NC]; R];
}

/// The two 16-bit halves of a packed pair.
#[inline(always)]
fn halves(v: i32) -> (i32, i32) {
    (v as i16 as i32, (v >> 16) as i16 as i32)
}

struct Portable;

impl<const R: usize> Tile<R> for Portable {
    #[inline(always)]
    unsafe fn dots(qt: &[i32], p: &[i32]) -> [[i32; NC]; R] {
        let mut acc = [[0i32; NC]; R];
        for (pv, qv) in p.chunks_exact(NC).zip(qt.chunks_exact(R)) {
            for r in 0..R {
                let (q0, q1) = halves(qv[r]);
                for l in 0..NC {
                    let (p0, p1) = halves(pv[l]);
                    acc[r][l] += q0 * p0 + q1 * p1;
                }
            }
        }
        acc
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, NC};
    use std::arch::x86_64::*;

    pub(super) struct Avx2;
    pub(super) struct Avx512;
    pub(super) struct Avx512Vnni;

    impl<const R: usize> Tile<R> for Avx2 {
        #[inline(always)]
        unsafe fn dots(qt: &[i32], p: &[i32]) -> [[i32; NC]; R] {
            unsafe { avx2::<R>(qt, p) }
        }
    }

    /// Half a chunk (16 lanes, two vectors) at a time: `2 R` accumulators, the two candidate
    /// vectors, a broadcast query pair and the product fit the 16 registers for R <= 6 (the
    /// whole chunk at once spilled three registers to the stack at R = 3).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<const R: usize>(qt: &[i32], p: &[i32]) -> [[i32; NC]; R] {
        let mut out = [[0i32; NC]; R];
        for half in 0..2 {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for (pv, qv) in p.chunks_exact(NC).zip(qt.chunks_exact(R)) {
                // SAFETY: pv holds NC = 32 values: this half's 16, 8 per vector.
                let x = unsafe {
                    [
                        _mm256_loadu_si256(pv.as_ptr().add(16 * half).cast()),
                        _mm256_loadu_si256(pv.as_ptr().add(16 * half + 8).cast()),
                    ]
                };
                for (r, a) in acc.iter_mut().enumerate() {
                    let b = _mm256_set1_epi32(qv[r]);
                    for (a, &x) in a.iter_mut().zip(&x) {
                        *a = _mm256_add_epi32(*a, _mm256_madd_epi16(b, x));
                    }
                }
            }
            for (o, a) in out.iter_mut().zip(&acc) {
                for (v, a) in a.iter().enumerate() {
                    // SAFETY: o holds NC = 32 values: this half's 16, 8 per vector.
                    unsafe {
                        _mm256_storeu_si256(o.as_mut_ptr().add(16 * half + 8 * v).cast(), *a)
                    };
                }
            }
        }
        out
    }

    /// The AVX-512 tile: `$fma` adds the pairwise products of `b` and `x`.
    macro_rules! avx512_tile {
        ($kernel:ident, $func:ident, $features:literal, |$a:ident, $b:ident, $x:ident| $fma:expr) => {
            impl<const R: usize> Tile<R> for $kernel {
                #[inline(always)]
                unsafe fn dots(qt: &[i32], p: &[i32]) -> [[i32; NC]; R] {
                    unsafe { $func::<R>(qt, p) }
                }
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn $func<const R: usize>(qt: &[i32], p: &[i32]) -> [[i32; NC]; R] {
                let mut acc = [[_mm512_setzero_si512(); NC / 16]; R];
                for (pv, qv) in p.chunks_exact(NC).zip(qt.chunks_exact(R)) {
                    // SAFETY: pv holds NC = 32 values, 16 per vector.
                    let x = unsafe {
                        [
                            _mm512_loadu_si512(pv.as_ptr().cast()),
                            _mm512_loadu_si512(pv.as_ptr().add(16).cast()),
                        ]
                    };
                    for (r, a) in acc.iter_mut().enumerate() {
                        let b = _mm512_set1_epi32(qv[r]);
                        for (acc, &$x) in a.iter_mut().zip(&x) {
                            let ($a, $b) = (*acc, b);
                            *acc = $fma;
                        }
                    }
                }
                let mut out = [[0i32; NC]; R];
                for (o, a) in out.iter_mut().zip(&acc) {
                    for (v, a) in a.iter().enumerate() {
                        // SAFETY: o holds NC = 32 values, 16 per vector.
                        unsafe { _mm512_storeu_si512(o.as_mut_ptr().add(16 * v).cast(), *a) };
                    }
                }
                out
            }
        };
    }

    avx512_tile!(Avx512, avx512, "avx2,avx512f,avx512bw", |a, b, x| {
        _mm512_add_epi32(a, _mm512_madd_epi16(b, x))
    });
    avx512_tile!(
        Avx512Vnni,
        avx512_vnni,
        "avx2,avx512f,avx512bw,avx512vnni",
        |a, b, x| _mm512_dpwssd_epi32(a, b, x)
    );
}

/// One query of a row.
struct Query {
    qi: usize,
    /// Its quantised squared norm `|q^|^2` and error norm `E_q`.
    qn: i32,
    qe: f32,
    /// The seeds' bound (infinite without seeds, 0 when there is nothing to find).
    bound: f64,
    /// Its K nearest are its seeds, all at distance 0.
    zero: bool,
    /// The upper bounds on `d` of the pairs that passed the screen.
    up: KthBound,
    /// The pairs that passed the screen: their lower bound on `d` and slot.
    list: Vec<(f64, u32)>,
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
fn screen(ctx: &Ctx, q: &mut Query, ci: usize, dots: &[i32; NC]) {
    let ch = &ctx.chunks;
    let base = ci * NC;
    let (qn, qe, qx, qy) = (
        q.qn,
        q.qe,
        ctx.q.pos[q.qi].0 as f32,
        ctx.q.pos[q.qi].1 as f32,
    );
    let (rel, abs, c, s) = (REL as f32, ABS as f32, ctx.c as f32, ctx.quant.s as f32);
    let tf = q.t() as f32 * (1.0 + rel);
    // The test with its constants folded: keep iff D <= (a + b rho + w (E_q + E_p))^2.
    let widen = (1.0 + 3.0 * rel) * (1.0 + 2.0 * rel).sqrt() * (1.0 + rel);
    let (a, b, w) = if tf.is_finite() {
        (s * (tf + abs) * widen, s * tf * c * widen, widen)
    } else {
        // No bound yet: keep everything (and no infinity times a zero distance).
        (f32::INFINITY, 0.0, 0.0)
    };
    let norm: &[i32; NC] = ch.norm[base..base + NC].try_into().unwrap();
    let err: &[f32; NC] = ch.err[base..base + NC].try_into().unwrap();
    let xs: &[f32; NC] = ch.x[base..base + NC].try_into().unwrap();
    let ys: &[f32; NC] = ch.y[base..base + NC].try_into().unwrap();
    let mut mask = 0u32;
    let mut d2s = [0u32; NC];
    let mut rhos = [0f32; NC];
    for l in 0..NC {
        // Exact: the true D is in [0, 2^31], so the wrapped difference read unsigned is it.
        let d2 = qn
            .wrapping_add(norm[l])
            .wrapping_sub(dots[l].wrapping_mul(2)) as u32;
        let (dx, dy) = (qx - xs[l], qy - ys[l]);
        let rho = (dx * dx + dy * dy).sqrt();
        let v = a + b * rho + w * (qe + err[l]);
        mask |= ((d2 as f32 <= v * v) as u32) << l;
        d2s[l] = d2;
        rhos[l] = rho;
    }
    mask &= ch.valid[ci];
    while mask != 0 {
        let l = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let (lo, hi) = ctx.bounds(qe, d2s[l], rhos[l], base + l);
        q.list.push((lo, (base + l) as u32));
        q.up.push(hi);
    }
}

/// One band of rows, top to bottom. Each row's queries start from their seeds, then go
/// through the candidates [`SUPER`] chunks at a time, tile by tile (`R` neighbours each).
/// `out` holds the band's sums. With `PRODUCTS` (for the benches' floor) the band computes
/// the tiles' integer products alone, for every query and chunk (no seeds, no block bounds,
/// no screen), and `out` holds each row's products summed.
#[inline(always)]
fn band_body<T: Tile<R>, const R: usize, const PRODUCTS: bool>(
    ctx: &Ctx,
    q0: usize,
    row_len: usize,
    out: &mut [f64],
) {
    let (dim, pairs, k, nb) = (ctx.q.dim, ctx.pairs, ctx.k, ctx.idx.blocks);
    let rows = out.len().div_ceil(row_len);
    let tiles = row_len.div_ceil(R);
    // The K nearest of every query of the previous row and of this one.
    let mut above: Vec<u32> = vec![];
    let mut here: Vec<u32> = vec![0; row_len * k];
    // The row's queries, tile by tile, transposed (`pairs` rows of R), and their block bounds.
    let mut qt = vec![0i32; tiles * pairs * R];
    let mut bounds = vec![0f32; tiles * R * nb];
    let mut row_q: Vec<Query> = (0..tiles * R)
        .map(|_| Query {
            qi: 0,
            qn: 0,
            qe: 0.0,
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
    let mut qi = vec![0i32; pairs];
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
            centred(x, &ctx.basis.mean, &mut qf);
            (q.qn, q.qe) = ctx.quant.quantise(x, &mut qi);
            if row > 0 && i < len && !PRODUCTS {
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
            if !PRODUCTS {
                ctx.basis.project(x, &mut a);
                block_bounds(
                    ctx.idx,
                    ctx.c,
                    &mut bounds[i * nb..(i + 1) * nb],
                    &a,
                    ctx.q.pos[q.qi],
                );
            }
            let (t, r) = (i / R, i % R);
            for (d, &v) in qi.iter().enumerate() {
                qt[(t * pairs + d) * R + r] = v;
            }
        }
        let mut products = 0i32;
        for sc in (0..nb).step_by(SUPER) {
            for (t, qs) in row_q.chunks_exact_mut(R).enumerate() {
                let qt = &qt[t * pairs * R..(t + 1) * pairs * R];
                let tb = &bounds[t * R * nb..(t + 1) * R * nb];
                for ci in sc..(sc + SUPER).min(nb) {
                    // A query scans a block whose bound does not exceed its T (and is not 0).
                    let wants = |(r, q): (usize, &Query)| {
                        let t = q.t();
                        t > 0.0 && tb[r * nb + ci] as f64 <= t
                    };
                    if !PRODUCTS && !qs.iter().enumerate().any(wants) {
                        continue;
                    }
                    let p = &ctx.chunks.p[ci * pairs * NC..(ci + 1) * pairs * NC];
                    // SAFETY: `band` calls this with a kernel the CPU runs.
                    let dots = unsafe { T::dots(qt, p) };
                    if PRODUCTS {
                        let sum = dots.iter().flatten().fold(0i32, |a, &d| a.wrapping_add(d));
                        products = products.wrapping_add(sum);
                        continue;
                    }
                    for (r, (q, dots)) in qs.iter_mut().zip(&dots).enumerate() {
                        if wants((r, q)) {
                            screen(ctx, q, ci, dots);
                        }
                    }
                }
            }
        }
        if PRODUCTS {
            out[row * row_len] = products as f64;
            continue;
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
            let t = q.t();
            found.clear();
            for &(lo, j) in &q.list {
                if lo <= t {
                    found.push((ctx.exact(q.qi, j as usize), j));
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
#[target_feature(enable = "avx2")]
unsafe fn band_avx2<const P: bool>(ctx: &Ctx, q0: usize, row_len: usize, out: &mut [f64]) {
    band_body::<x86::Avx2, R_AVX2, P>(ctx, q0, row_len, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn band_avx512<const P: bool>(ctx: &Ctx, q0: usize, row_len: usize, out: &mut [f64]) {
    band_body::<x86::Avx512, R_WIDE, P>(ctx, q0, row_len, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
unsafe fn band_avx512_vnni<const P: bool>(ctx: &Ctx, q0: usize, row_len: usize, out: &mut [f64]) {
    band_body::<x86::Avx512Vnni, R_WIDE, P>(ctx, q0, row_len, out)
}

/// One band with `kernel` (one this CPU runs: [`k_smallest_sums`] checks); `P`: the products
/// alone (see [`band_body`]).
fn band<const P: bool>(ctx: &Ctx, kernel: Kernel, q0: usize, row_len: usize, out: &mut [f64]) {
    // SAFETY (each arm): the CPU supports the features the function was compiled for.
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { band_avx2::<P>(ctx, q0, row_len, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { band_avx512::<P>(ctx, q0, row_len, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => unsafe { band_avx512_vnni::<P>(ctx, q0, row_len, out) },
        _ => band_body::<Portable, R_NARROW, P>(ctx, q0, row_len, out),
    }
}

/// For every query, the sum of its `k` smallest dissimilarities to the candidates of `idx`
/// (exact), as [`crate::search::k_smallest_sums`] gives it, with the tile products of
/// `kernel` (or the fastest below it that this CPU runs). Queries come in rows of `row_len`
/// neighbours; `k` is at most the number of candidates.
pub(crate) fn k_smallest_sums(
    q: &Patches,
    idx: &Index,
    basis: &Basis,
    k: usize,
    c: f64,
    row_len: usize,
    kernel: Kernel,
) -> Vec<f64> {
    run::<false>(q, idx, basis, k, c, row_len, kernel)
}

/// This search on `q` and `cand` whatever their dimension (benches/README.md: the per-scale
/// table; [`crate::search`] does not choose it below 100 values).
#[doc(hidden)]
pub fn forced(
    q: &Patches,
    cand: &Patches,
    k: usize,
    c: f64,
    row_len: usize,
    kernel: Kernel,
) -> Vec<f64> {
    crate::search::indexed(q, cand, k, c, |ctx, k| {
        k_smallest_sums(q, ctx.idx, ctx.basis, k, c, row_len, kernel)
    })
}

/// The floor of this search on `q` and `cand` (benches/README.md, issue 33): the tiles'
/// integer products alone, for every query and every chunk of candidates, with `kernel` (or
/// the fastest below it that this CPU runs), in the bands the search runs. Returns their
/// wrapped sum, so that nothing is optimised away.
#[doc(hidden)]
pub fn products_only(q: &Patches, cand: &Patches, row_len: usize, kernel: Kernel) -> i64 {
    let out = crate::search::indexed(q, cand, 1, 3.0, |ctx, k| {
        run::<true>(q, ctx.idx, ctx.basis, k, ctx.c, row_len, kernel)
    });
    out.iter().fold(0i64, |a, &v| a.wrapping_add(v as i64))
}

/// [`k_smallest_sums`], or with `P` the products alone (see [`band_body`]).
fn run<const P: bool>(
    q: &Patches,
    idx: &Index,
    basis: &Basis,
    k: usize,
    c: f64,
    row_len: usize,
    kernel: Kernel,
) -> Vec<f64> {
    let kernel = kernel.or_below();
    let mut out = vec![0f64; q.n];
    let dim = q.dim;
    let pairs = dim.div_ceil(2);
    let mean = &basis.mean;
    let quant = Quant::of(mean, &[&q.data, &idx.data]);
    let slots = idx.blocks * L;
    let mut chunks = Chunks {
        valid: vec![0; idx.blocks],
        p: vec![0; slots * pairs],
        norm: vec![0; slots],
        err: vec![0.0; slots],
        x: vec![0f32; slots],
        y: vec![0f32; slots],
    };
    let mut cf = vec![0f32; slots * dim];
    let mut ints = vec![0i32; pairs];
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
        centred(x, mean, row);
        (chunks.norm[j], chunks.err[j]) = quant.quantise(x, &mut ints);
        for (d, &v) in ints.iter().enumerate() {
            chunks.p[ci * pairs * NC + d * NC + l] = v;
        }
        chunks.x[j] = idx.pos[j].0 as f32;
        chunks.y[j] = idx.pos[j].1 as f32;
    }
    let ctx = Ctx {
        q,
        idx,
        basis,
        quant,
        pairs,
        cf,
        chunks,
        c,
        k,
    };
    let row_len = row_len.max(1);
    out.par_chunks_mut(row_len * BAND)
        .enumerate()
        .for_each(|(b, out)| band::<P>(&ctx, kernel, b * row_len * BAND, row_len, out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::sums_in_bands;
    use crate::search::tests::{brute_force, case, Rng};

    /// The brute force alone on `q` and `c`, as [`crate::search::k_smallest_sums`] calls it,
    /// with each kernel this CPU runs: their results, which must be the same bits.
    fn sums(q: &Patches, c: &Patches, k: usize, pc: f64, row_len: usize) -> Vec<f64> {
        let basis = Basis::of(c);
        let idx = Index::build(c, &basis);
        let mut first: Option<Vec<f64>> = None;
        for kernel in Kernel::supported_here() {
            let got = k_smallest_sums(q, &idx, &basis, k.min(c.n), pc, row_len, kernel);
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kernel:?} differs from the portable kernel"
                ),
            }
        }
        first.unwrap()
    }

    #[test]
    fn every_kernel_computes_the_same_integer_products() {
        // Extreme pairs: the largest magnitudes of both signs, and odd `pairs` counts.
        let mut rng = Rng(11);
        for pairs in [1, 5, 74] {
            let r = 3;
            let qt: Vec<i32> = (0..pairs * R_WIDE)
                .map(|i| {
                    let (a, b) = match i % 3 {
                        0 => (16383i16, -16383i16),
                        1 => (-16383, -16383),
                        _ => (
                            (rng.next() * 3e4 - 1.5e4) as i16,
                            (rng.next() * 3e4 - 1.5e4) as i16,
                        ),
                    };
                    (a as u16 as u32 | (b as u16 as u32) << 16) as i32
                })
                .collect();
            let p: Vec<i32> = (0..pairs * NC)
                .map(|i| {
                    let (a, b) = if i % 2 == 0 {
                        (16383i16, 16383i16)
                    } else {
                        ((rng.next() * 3e4 - 1.5e4) as i16, -9000)
                    };
                    (a as u16 as u32 | (b as u16 as u32) << 16) as i32
                })
                .collect();
            // Dot products small enough not to wrap: the first `pairs` at most 4 here.
            let n = pairs.min(4);
            let want = |q: &[i32], rr: usize| -> [[i64; NC]; R_WIDE] {
                let mut w = [[0i64; NC]; R_WIDE];
                for r in 0..rr {
                    for l in 0..NC {
                        for d in 0..n {
                            let (q0, q1) = halves(q[d * rr + r]);
                            let (p0, p1) = halves(p[d * NC + l]);
                            w[r][l] += (q0 * p0) as i64 + (q1 * p1) as i64;
                        }
                    }
                }
                w
            };
            let q3 = &qt[..n * r];
            let w3 = want(q3, r);
            let check = |got: &[[i32; NC]], w: &[[i64; NC]; R_WIDE], name: &str| {
                for (r, row) in got.iter().enumerate() {
                    for l in 0..NC {
                        assert_eq!(
                            row[l] as i64, w[r][l],
                            "{name}, pairs {n}, query {r}, lane {l}"
                        );
                    }
                }
            };
            // SAFETY: each kernel runs only where the CPU supports it.
            check(
                &unsafe { <Portable as Tile<3>>::dots(q3, &p[..n * NC]) },
                &w3,
                "portable",
            );
            #[cfg(target_arch = "x86_64")]
            let (q12, w12) = (&qt[..n * R_WIDE], want(&qt[..n * R_WIDE], R_WIDE));
            #[cfg(target_arch = "x86_64")]
            for kernel in Kernel::supported_here() {
                let p = &p[..n * NC];
                match kernel {
                    Kernel::Avx2 => {
                        check(&unsafe { <x86::Avx2 as Tile<3>>::dots(q3, p) }, &w3, "avx2")
                    }
                    Kernel::Avx512 => check(
                        &unsafe { <x86::Avx512 as Tile<R_WIDE>>::dots(q12, p) },
                        &w12,
                        "avx512",
                    ),
                    Kernel::Avx512Vnni => check(
                        &unsafe { <x86::Avx512Vnni as Tile<R_WIDE>>::dots(q12, p) },
                        &w12,
                        "avx512vnni",
                    ),
                    Kernel::Portable => {}
                }
            }
        }
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
    fn the_screen_allows_for_its_rounding() {
        // Near-copies of one bright patch among a crowd of dark ones: the copies differ by
        // about as much as quantising moves a patch (`E_q + E_p`, some 2e-3 here), so a screen
        // without that margin drops true neighbours.
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
        for noise in [4e-3, 5e-4, 1e-4] {
            let mut data = near(&mut rng, 200, &bright, noise);
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
                data: near(&mut rng, 120, &bright, noise),
                pos: pos(&mut rng, 120),
            };
            let want = brute_force(&q, &c, 64, 3.0);
            for row_len in [10, 120] {
                let got = sums(&q, &c, 64, 3.0, row_len);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-12 * w,
                        "noise {noise}, rows of {row_len}, query {i}: {g} vs {w}"
                    );
                }
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
