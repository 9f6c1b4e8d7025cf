//! The exact search for the K most similar patches (CA-SPEC steps 8-9), and the choice between
//! its two implementations.
//!
//! The dissimilarity of a query patch `q` and a candidate patch `p` is
//! `d = |q - p| / (1 + c |pos_q - pos_p|)`. Comparing every pair costs a matrix product of
//! the full patch dimension (about 1.4e9 pairs and 1.3e11 multiply-adds per 250-px image),
//! so the search rules most pairs out with three lower bounds that are cheap to evaluate, and
//! computes the exact float64 distance only for the few pairs that can still be among the K
//! nearest:
//!
//! - [`crate::index`]: the candidates' index and the lower bounds (a low-dimensional bound
//!   from the principal directions, and a block bound), and the exact dissimilarity;
//! - [`crate::pruned`]: the pruned search: each query scans the blocks, with a fine bound
//!   before each exact distance;
//! - [`crate::brute`]: the screened brute force, faster on noise-like inputs with AVX2 or AVX-512
//!   (its kernels, [`Kernel`], run on every CPU when asked);
//! - this module: [`k_smallest_sums`], which samples the pruned search and chooses.
//!
//! Both searches find the exact K nearest and sum them with [`crate::index::sum_exactly`], so
//! they give the same bits.

pub use crate::brute::Kernel;
use crate::index::{Basis, Index, Patches};
use crate::pruned::{band_rows, new_lanes, pruned, search_band, Ctx};
use rayon::prelude::*;

/// Rows of queries the pruned search samples before [`k_smallest_sums`] chooses a search.
const SAMPLE_ROWS: usize = 2;

/// Patches with fewer values are not sampled (the pruned search runs): at 75 values the two
/// searches are within 16% of each other on the bench inputs, at 27 within 9%, and the sample
/// costs 2-5% of such a scale.
const SAMPLE_DIM: usize = 100;

/// Fine bounds per query in the sample above which the screened brute force of
/// [`crate::brute`] is faster. Measured at the finest scale of 250-px inputs on 2 threads
/// (`benches/README.md`): the sample counts 110-160 on photos and `epsilon-plus-flat` maps
/// (where the pruned search takes 0.25-0.63 s and the brute force 0.34-0.84 s) and 650-1850
/// on `srp` maps (pruned 0.90-1.47 s, brute force 0.82-0.95 s).
const FINES_ABOVE: f64 = 400.0;

/// Which exact search runs. Every choice gives the same bits; the choice is for speed, and
/// for the tests, which run each path on every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Search {
    /// The screened brute force with [`Kernel::best`] where a sample says it pays (see
    /// [`k_smallest_sums`]), else the pruned search.
    #[default]
    Auto,
    /// The pruned search, always.
    Pruned,
    /// The screened brute force with this kernel (or the fastest below it that the CPU runs)
    /// wherever the patches have at least [`SAMPLE_DIM`] values, the pruned search below.
    Brute(Kernel),
}

/// For every query, the sum of its `k` smallest dissimilarities to the candidates (exact).
/// Queries come in rows of `row_len` (a row's queries are neighbours, left to right, and so
/// are the rows' first queries, top to bottom).
///
/// Two exact searches share the candidates' index: the pruned search of this module, and the
/// screened brute force of [`crate::brute`] for inputs whose patches are close to noise. With
/// [`Search::Auto`], AVX2 or AVX-512 (which the brute force needs to be faster) and patches of at
/// least [`SAMPLE_DIM`] values, the pruned search first runs on [`SAMPLE_ROWS`] rows spread
/// over the queries; if it evaluates more than [`FINES_ABOVE`] fine bounds per query there,
/// the brute force does all the queries. The choice depends on the input and the CPU, not on
/// the thread count, and every search gives the same bits (the exact K nearest, summed by
/// [`sum_exactly`]).
pub fn k_smallest_sums(
    q: &Patches,
    cand: &Patches,
    k: usize,
    c: f64,
    row_len: usize,
    search: Search,
) -> Vec<f64> {
    let row_len = row_len.max(1);
    indexed(q, cand, k, c, |ctx, k| {
        let brute = match search {
            Search::Auto => {
                Some(Kernel::best()).filter(|&kernel| brute_force_pays(ctx, k, row_len, kernel))
            }
            Search::Pruned => None,
            Search::Brute(kernel) => Some(kernel).filter(|_| ctx.q.dim >= SAMPLE_DIM),
        };
        if let Some(kernel) = brute {
            return crate::brute::k_smallest_sums(q, ctx.idx, ctx.basis, k, c, row_len, kernel);
        }
        let band_len = band_rows(q.n.div_ceil(row_len), rayon::current_num_threads());
        pruned(ctx, k, row_len, band_len)
    })
}

/// `search(ctx, k)` on the candidates' basis and index, with `k` at most the candidates; 0 for
/// every query when there is nothing to search.
pub(crate) fn indexed(
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

/// Whether [`crate::brute`] with `kernel` is the faster search for these queries (see
/// [`k_smallest_sums`]).
fn brute_force_pays(ctx: &Ctx, k: usize, row_len: usize, kernel: Kernel) -> bool {
    ctx.q.dim >= SAMPLE_DIM
        && crate::brute::worth_it(kernel)
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
    use crate::index::*;
    use crate::pruned::*;

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
            for kernel in Kernel::ALL {
                assert_eq!(
                    brute_force_pays(&ctx, 64, row_len, kernel),
                    is_noise && kernel >= Kernel::Avx2,
                    "{kernel:?}, noise: {is_noise}, fine bounds per query {}",
                    fines_per_query(&ctx, 64, row_len)
                );
            }
            // Whichever search runs, the result is the brute force's, with the same bits.
            let want = brute_force(q, c, 64, 3.0);
            let got = k_smallest_sums(q, c, 64, 3.0, row_len, Search::Auto);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12 * w,
                    "noise: {is_noise}, query {i}: {g} vs {w}"
                );
            }
            let mut paths = vec![Search::Pruned];
            paths.extend(Kernel::supported_here().into_iter().map(Search::Brute));
            for path in paths {
                let other = k_smallest_sums(q, c, 64, 3.0, row_len, path);
                assert!(
                    got.iter()
                        .zip(&other)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{path:?}, noise: {is_noise}"
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
