//! Context-aware saliency (Goferman, Zelnik-Manor and Tal, TPAMI 2012), as the reference Matlab
//! reimplementation by Tsai and Chang computes it (`CA-SPEC.md` in the project's shared notes
//! gives the steps; the comments below number them).
//!
//! The search for the K most similar patches is exact. It is organised for speed: the
//! query-candidate colour distances come from `||p||^2 + ||q||^2 - 2 p.q`, the dot products by
//! a matrix product over tiles of queries and blocks of candidates, fused with the position
//! term and a running top-K per query, so no pair matrix is ever held in memory. Query tiles
//! run in parallel; each query sees the candidates in the same order whatever the thread
//! count, so the result does not depend on it.

use crate::edt::bwdist;
use crate::imresize::{self, Img, Kernel};
use crate::lab;
use rayon::prelude::*;

/// Every parameter of the algorithm. [`Config::reference`] is the reference code's.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Step 1: the longer side of the working image.
    pub max_dim: usize,
    /// Step 4: the scales r.
    pub scales: Vec<f64>,
    /// Step 4: half patch size H per scale (patches are (2H+1) x (2H+1)).
    pub half_sizes: Vec<usize>,
    /// Step 4: distance factor F per scale.
    pub factors: Vec<f64>,
    /// Step 6: candidate stride per scale (the reference uses H).
    pub candidate_strides: Vec<usize>,
    /// Step 6: the candidate levels f (the scale-r image resized by f, bicubic).
    pub levels: Vec<f64>,
    /// Step 6: a level is used while r * f >= this.
    pub min_level_scale: f64,
    /// Step 9: how many nearest patches.
    pub k: usize,
    /// Step 8: the position constant c in `d / (1 + c * d_pos)`.
    pub c: f64,
    /// Step 11: foci are pixels above this fraction of the maximum.
    pub foci_threshold: f64,
    /// The reference keeps distances in a 500-column buffer initialised to zero: with fewer
    /// candidates than that, zeros enter the top-K mean. 0 turns the quirk off.
    pub buffer: usize,
}

impl Config {
    /// The reference code's parameters.
    pub fn reference() -> Config {
        let half_sizes = vec![3, 2, 1, 1];
        Config {
            max_dim: 250,
            scales: vec![1.0, 0.8, 0.5, 0.3],
            factors: half_sizes
                .iter()
                .map(|&h| 49.0 / ((2 * h + 1) * (2 * h + 1)) as f64)
                .collect(),
            candidate_strides: half_sizes.clone(),
            half_sizes,
            levels: vec![1.0, 0.5, 0.25],
            min_level_scale: 0.2,
            k: 64,
            c: 3.0,
            foci_threshold: 0.8,
            buffer: 500,
        }
    }
}

/// Sampled patches: `n x dim` row-major, with their positions `(x, y)`.
struct Patches {
    n: usize,
    dim: usize,
    data: Vec<f64>,
    pos: Vec<(f64, f64)>,
    norms: Vec<f64>,
}

/// Patches of `img` centred at the 1-based rows/cols `first, first + stride, ..., <= size - h`,
/// positions `(col, row) / unit`.
fn patches(img: &Img, h: usize, first: usize, stride: usize, unit: f64) -> Patches {
    let p = 2 * h + 1;
    let dim = img.c * p * p;
    let rows: Vec<usize> = (first..=img.h.saturating_sub(h)).step_by(stride).collect();
    let cols: Vec<usize> = (first..=img.w.saturating_sub(h)).step_by(stride).collect();
    let n = rows.len() * cols.len();
    let mut data = Vec::with_capacity(n * dim);
    let mut pos = Vec::with_capacity(n);
    for &r in &rows {
        for &c in &cols {
            // 1-based centre (r, c): rows r-h..=r+h, i.e. 0-based r-1-h..
            for ch in 0..img.c {
                for dy in 0..p {
                    for dx in 0..p {
                        data.push(img.at(r - 1 - h + dy, c - 1 - h + dx, ch));
                    }
                }
            }
            pos.push((c as f64 / unit, r as f64 / unit));
        }
    }
    let norms = data
        .chunks_exact(dim.max(1))
        .map(|v| v.iter().map(|x| x * x).sum())
        .collect();
    Patches {
        n,
        dim,
        data,
        pos,
        norms,
    }
}

/// Keep the `k` smallest values seen (a max-heap in a fixed array).
struct TopK {
    heap: Vec<f64>,
    k: usize,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            heap: Vec::with_capacity(k),
            k,
        }
    }
    #[inline]
    fn push(&mut self, v: f64) {
        if self.heap.len() < self.k {
            self.heap.push(v);
            let mut i = self.heap.len() - 1;
            while i > 0 {
                let parent = (i - 1) / 2;
                if self.heap[parent] >= self.heap[i] {
                    break;
                }
                self.heap.swap(parent, i);
                i = parent;
            }
        } else if v < self.heap[0] {
            self.heap[0] = v;
            let n = self.heap.len();
            let mut i = 0;
            loop {
                let (l, r) = (2 * i + 1, 2 * i + 2);
                let mut m = i;
                if l < n && self.heap[l] > self.heap[m] {
                    m = l;
                }
                if r < n && self.heap[r] > self.heap[m] {
                    m = r;
                }
                if m == i {
                    break;
                }
                self.heap.swap(i, m);
                i = m;
            }
        }
    }
}

const QUERY_TILE: usize = 384;
const CAND_BLOCK: usize = 256;

/// Colour distances are screened in float32 with a rigorous error bound, and only the
/// candidates that can still be among the K nearest are recomputed exactly in float64.
///
/// For a query `q` and candidate `c` (centred by the image mean, so norms are small), the f32
/// value `d2~ = |q|^2 + |c|^2 - 2 q.c` differs from the exact squared distance by at most
/// `e = (dim + 4) u (|q|^2 + |c|^2)` (u = 2^-24; a dot product in any summation order is off by
/// at most `dim u sum |q_i c_i| <= dim u (|q|^2 + |c|^2) / 2`, plus the roundings of the norms
/// and of the sum), doubled here for margin. Each pair gets a lower bound `l` and an upper
/// bound `u` of its distance `d = sqrt(d2) / (1 + c d_pos)`. With `T` the K-th smallest upper
/// bound so far, every candidate with `l <= T` is kept; `T` only decreases, and the final `T`
/// bounds the exact K-th distance from above, so the exact K nearest are all kept. They are
/// then recomputed in float64 and the exact K smallest are averaged.
fn error_coefficient(dim: usize) -> f32 {
    2.0 * (dim as f32 + 4.0) * f32::EPSILON / 2.0
}

struct Survivor {
    cand: u32,
    lower: f32,
}

/// The running K-th smallest upper bound of one query, kept Matlab-style: upper bounds are
/// appended to a buffer and the threshold is re-selected when the buffer holds 4K values
/// (amortised O(1) per insertion, no heap).
struct Running {
    k: usize,
    uppers: Vec<f32>,
    thr: f32,
}

impl Running {
    fn new(k: usize) -> Self {
        // With k = 0 (the buffer's zeros fill the K nearest) nothing needs to be kept.
        Running {
            k,
            uppers: Vec::with_capacity(4 * k + 1),
            thr: if k == 0 {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            },
        }
    }
    #[inline]
    fn push(&mut self, u: f32) {
        self.uppers.push(u);
        if self.uppers.len() >= 4 * self.k {
            self.compact();
        }
    }
    fn compact(&mut self) {
        if self.k > 0 && self.uppers.len() >= self.k {
            let k = self.k;
            self.uppers
                .select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b));
            self.uppers.truncate(k);
            self.thr = self
                .uppers
                .iter()
                .cloned()
                .fold(f32::NEG_INFINITY, f32::max);
        }
    }
    /// The final threshold: the K-th smallest upper bound of all.
    fn finish(&mut self) -> f32 {
        self.compact();
        self.thr
    }
}

/// One query's dot products with one block of candidates, and what the bounds need.
#[derive(Clone, Copy)]
struct Row<'a> {
    dots: &'a [f32],
    /// Squared norms and positions of all candidates; the block starts at `c0`.
    cn: &'a [f32],
    cpos: &'a [(f32, f32)],
    qn: f32,
    qpos: (f32, f32),
    coef: f32,
    pc: f32,
    c0: usize,
}

#[inline(always)]
fn screen_row(row: &Row, run: &mut Running, keep: &mut Vec<Survivor>, scratch: &mut Vec<f32>) {
    let Row {
        dots,
        cn,
        cpos,
        qn,
        qpos,
        coef,
        pc,
        c0,
    } = *row;
    let n = dots.len();
    let (cn, cpos) = (&cn[c0..c0 + n], &cpos[c0..c0 + n]);
    let thr0 = run.thr;
    // Pass 1 (vectorisable: no branch, square root or division; plain index loops so it
    // compiles inside the AVX2 caller): a key that is positive only if the pair's lower
    // bound certainly exceeds the threshold at the start of the row. With dp2 the squared
    // position distance, (1 + c dp)^2 <= 2 (1 + c^2 dp2), so lower > thr0 whenever
    // d2 - e > 2 thr0^2 (1 + c^2 dp2).
    let t2 = if thr0.is_finite() {
        2.0 * thr0 * thr0 * (1.0 + 1e-5)
    } else {
        f32::MAX
    };
    let c2 = pc * pc;
    scratch.resize(n, 0.0);
    for j in 0..n {
        let d2 = qn + cn[j] - 2.0 * dots[j];
        let e = coef * (qn + cn[j]);
        let (dx, dy) = (qpos.0 - cpos[j].0, qpos.1 - cpos[j].1);
        scratch[j] = (d2 - e) - t2 * (1.0 + c2 * (dx * dx + dy * dy));
    }
    // Pass 2: exact bounds for the few that may pass; keep what can still be among the K
    // nearest.
    for (j, &key) in scratch.iter().enumerate() {
        if key > 0.0 {
            continue;
        }
        let d2 = qn + cn[j] - 2.0 * dots[j];
        let e = coef * (qn + cn[j]);
        let (dx, dy) = (qpos.0 - cpos[j].0, qpos.1 - cpos[j].1);
        let inv = 1.0 / (1.0 + pc * (dx * dx + dy * dy).sqrt());
        let lower = (d2 - e).max(0.0).sqrt() * inv * (1.0 - 1e-6);
        if lower <= run.thr {
            let upper = (d2 + e).max(0.0).sqrt() * inv * (1.0 + 1e-6);
            keep.push(Survivor {
                cand: (c0 + j) as u32,
                lower,
            });
            run.push(upper);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn screen_row_avx2(
    row: &Row,
    run: &mut Running,
    keep: &mut Vec<Survivor>,
    scratch: &mut Vec<f32>,
) {
    screen_row(row, run, keep, scratch)
}

fn screen(row: &Row, run: &mut Running, keep: &mut Vec<Survivor>, scratch: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { screen_row_avx2(row, run, keep, scratch) };
    }
    screen_row(row, run, keep, scratch)
}

/// `sum (a_i - b_i)^2` in float64, with eight independent partial sums (so it pipelines).
#[inline]
pub fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            let d = a[i * 8 + l] - b[i * 8 + l];
            acc[l] += d * d;
        }
    }
    let mut tail = 0.0;
    for i in chunks * 8..a.len() {
        let d = a[i] - b[i];
        tail += d * d;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Step 6: the candidate patches of one scale, from the image and its bicubic resizes, every
/// `stride` pixels, while `r * f >= min_level_scale`; positions in units of the scale's
/// larger side.
fn sample_candidates(img: &Img, r: f64, h: usize, stride: usize, cfg: &Config) -> Patches {
    let len = img.h.max(img.w) as f64;
    let mut cand = Patches {
        n: 0,
        dim: img.c * (2 * h + 1) * (2 * h + 1),
        data: vec![],
        pos: vec![],
        norms: vec![],
    };
    for &f in &cfg.levels {
        if r * f < cfg.min_level_scale - 1e-12 {
            break;
        }
        let level = if f == 1.0 {
            img.clone()
        } else {
            imresize::by_scale(img, f, Kernel::Bicubic)
        };
        let p = patches(&level, h, h + 1, stride.max(1), len * f);
        cand.n += p.n;
        cand.data.extend(p.data);
        cand.pos.extend(p.pos);
        cand.norms.extend(p.norms);
    }
    cand
}

/// Steps 5-9 at one scale: `S_r` for every pixel of `img` (border pixels 0).
pub fn single_scale(
    img: &Img,
    r: f64,
    h: usize,
    factor: f64,
    stride: usize,
    cfg: &Config,
) -> Vec<f64> {
    let len = img.h.max(img.w) as f64;
    let cand = sample_candidates(img, r, h, stride, cfg);
    // Step 7: queries, every pixel whose patch fits.
    let q = patches(img, h, h + 1, 1, len);
    let qw = img.w.saturating_sub(2 * h);
    let mut s = vec![0f64; img.h * img.w];
    if q.n == 0 || cand.n == 0 {
        return s;
    }
    // The reference's zero-initialised 500-column buffer: zeros among the top K.
    let zeros = cfg.buffer.saturating_sub(cand.n).min(cfg.k);
    let k_real = (cfg.k - zeros).min(cand.n);
    let dim = q.dim;
    // f32 copies centred by the image's per-channel mean (distances do not change, norms
    // and hence round-off shrink).
    let per = dim / img.c;
    let mean: Vec<f64> = (0..img.c)
        .map(|ch| img.data.iter().skip(ch).step_by(img.c).sum::<f64>() / (img.h * img.w) as f64)
        .collect();
    let centred = |p: &Patches| -> (Vec<f32>, Vec<f32>) {
        let data: Vec<f32> = p
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| (v - mean[(i % dim) / per]) as f32)
            .collect();
        let norms = data
            .chunks_exact(dim)
            .map(|v| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() as f32)
            .collect();
        (data, norms)
    };
    let (q32, qn32) = centred(&q);
    let (c32, cn32) = centred(&cand);
    let qpos32: Vec<(f32, f32)> = q.pos.iter().map(|&(x, y)| (x as f32, y as f32)).collect();
    let cpos32: Vec<(f32, f32)> = cand
        .pos
        .iter()
        .map(|&(x, y)| (x as f32, y as f32))
        .collect();
    let coef = error_coefficient(dim);
    let block_centres: Vec<(f64, f64)> = cand
        .pos
        .chunks(CAND_BLOCK)
        .map(|b| {
            let (x, y) = b.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0, y + p.1));
            (x / b.len() as f64, y / b.len() as f64)
        })
        .collect();
    // Identical patches (flat regions, black backgrounds of relevance maps) are exactly at
    // colour distance 0: give every distinct patch vector an id so the exact pass skips them.
    let mut ids: std::collections::HashMap<Vec<u64>, u32> = std::collections::HashMap::new();
    let mut id_of = |v: &[f64]| -> u32 {
        let key: Vec<u64> = v.iter().map(|x| x.to_bits()).collect();
        let next = ids.len() as u32;
        *ids.entry(key).or_insert(next)
    };
    let qid: Vec<u32> = q.data.chunks_exact(dim).map(&mut id_of).collect();
    let cid: Vec<u32> = cand.data.chunks_exact(dim).map(&mut id_of).collect();
    let pc = cfg.c as f32;
    let means: Vec<f64> = (0..q.n.div_ceil(QUERY_TILE))
        .into_par_iter()
        .flat_map_iter(|t| {
            let q0 = t * QUERY_TILE;
            let nq = QUERY_TILE.min(q.n - q0);
            let mut runs: Vec<Running> = (0..nq).map(|_| Running::new(k_real)).collect();
            let mut keeps: Vec<Vec<Survivor>> =
                (0..nq).map(|_| Vec::with_capacity(4 * k_real)).collect();
            // Scan the candidate blocks nearest to this tile first: near patches are the likely
            // nearest neighbours (the position term favours them), so the running thresholds
            // drop early and fewer candidates are kept. The result does not depend on the order.
            let (tx, ty) =
                (q0..q0 + nq).fold((0.0, 0.0), |(x, y), i| (x + q.pos[i].0, y + q.pos[i].1));
            let (tx, ty) = (tx / nq as f64, ty / nq as f64);
            let mut order: Vec<usize> = (0..block_centres.len()).collect();
            order.sort_by(|&a, &b| {
                let d = |k: usize| {
                    (block_centres[k].0 - tx).powi(2) + (block_centres[k].1 - ty).powi(2)
                };
                d(a).total_cmp(&d(b))
            });
            let mut dots = vec![0f32; nq * CAND_BLOCK];
            let mut scratch: Vec<f32> = Vec::with_capacity(CAND_BLOCK);
            for &b in &order {
                let c0 = b * CAND_BLOCK;
                let nc = CAND_BLOCK.min(cand.n - c0);
                // dots[i][j] = q_i . c_j (f32)
                unsafe {
                    gemm::gemm(
                        nq,
                        nc,
                        dim,
                        dots.as_mut_ptr(),
                        1,
                        nc as isize,
                        false,
                        q32.as_ptr().add(q0 * dim),
                        1,
                        dim as isize,
                        c32.as_ptr().add(c0 * dim),
                        dim as isize,
                        1,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for i in 0..nq {
                    let row = Row {
                        dots: &dots[i * nc..(i + 1) * nc],
                        cn: &cn32,
                        cpos: &cpos32,
                        qn: qn32[q0 + i],
                        qpos: qpos32[q0 + i],
                        coef,
                        pc,
                        c0,
                    };
                    screen(&row, &mut runs[i], &mut keeps[i], &mut scratch);
                }
            }
            // Exact float64 distances of the survivors; the K smallest (with the buffer's
            // zeros) give S_r (step 9).
            let (q, cand, qid, cid) = (&q, &cand, &qid, &cid);
            runs.into_iter()
                .zip(keeps)
                .enumerate()
                .map(move |(i, (mut run, keep))| {
                    let qi = q0 + i;
                    let thr = run.finish();
                    let qv = &q.data[qi * dim..(qi + 1) * dim];
                    let (qx, qy) = q.pos[qi];
                    let mut exact = TopK::new(k_real);
                    for sv in keep.iter().filter(|sv| sv.lower <= thr) {
                        let cj = sv.cand as usize;
                        if cid[cj] == qid[qi] {
                            exact.push(0.0);
                            continue;
                        }
                        let d2 = squared_distance(qv, &cand.data[cj * dim..(cj + 1) * dim]);
                        let (cx, cy) = cand.pos[cj];
                        let dp = ((qx - cx) * (qx - cx) + (qy - cy) * (qy - cy)).sqrt();
                        exact.push(d2.sqrt() / (1.0 + cfg.c * dp));
                    }
                    exact.heap.iter().sum::<f64>() / (exact.heap.len() + zeros) as f64
                })
        })
        .collect();
    for (i, m) in means.into_iter().enumerate() {
        let (y, x) = (i / qw + h, i % qw + h);
        s[y * img.w + x] = 1.0 - (-m * factor).exp();
    }
    s
}

/// The same as [`single_scale`], by brute force: every pair in float64, sorted. For tests.
pub fn single_scale_naive(
    img: &Img,
    r: f64,
    h: usize,
    factor: f64,
    stride: usize,
    cfg: &Config,
) -> Vec<f64> {
    let len = img.h.max(img.w) as f64;
    let cands = [sample_candidates(img, r, h, stride, cfg)];
    let q = patches(img, h, h + 1, 1, len);
    let n_cand: usize = cands.iter().map(|c| c.n).sum();
    let zeros = cfg.buffer.saturating_sub(n_cand).min(cfg.k);
    let mut s = vec![0f64; img.h * img.w];
    let qw = img.w.saturating_sub(2 * h);
    for i in 0..q.n {
        let qv = &q.data[i * q.dim..(i + 1) * q.dim];
        let mut d: Vec<f64> = vec![0.0; zeros];
        for c in &cands {
            for j in 0..c.n {
                let cv = &c.data[j * c.dim..(j + 1) * c.dim];
                let d2: f64 = qv.iter().zip(cv).map(|(a, b)| (a - b) * (a - b)).sum();
                let dp =
                    ((q.pos[i].0 - c.pos[j].0).powi(2) + (q.pos[i].1 - c.pos[j].1).powi(2)).sqrt();
                d.push(d2.sqrt() / (1.0 + cfg.c * dp));
            }
        }
        d.sort_by(|a, b| a.total_cmp(b));
        let k = cfg.k.min(d.len());
        let m = d[..k].iter().sum::<f64>() / k as f64;
        s[(i / qw + h) * img.w + i % qw + h] = 1.0 - (-m * factor).exp();
    }
    s
}

/// The saliency map at the working size (the longer side `cfg.max_dim`), values in [0, 1].
/// `img` is `h x w x c` with c = 3 (sRGB in [0, 1]) or 1 (grey).
pub fn saliency(img: &Img, cfg: &Config) -> Img {
    // Step 1: resize so the longer side is max_dim (bilinear, Matlab semantics).
    let m = img.h.max(img.w) as f64;
    let target = cfg.max_dim as f64;
    let mut work = imresize::to_size(
        img,
        img.h as f64 / m * target,
        img.w as f64 / m * target,
        Kernel::Bilinear,
    );
    // Step 2: colour images to Lab (Matlab's ICC srgb2lab).
    if work.c == 3 {
        lab::srgb_to_lab(&mut work.data);
    }
    // Step 3: each channel min-max to [0, 1] (Matlab's eps in the denominator).
    for ch in 0..work.c {
        let vals = work.data.iter().skip(ch).step_by(work.c);
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
        let span = hi - lo + f64::EPSILON;
        for v in work.data.iter_mut().skip(ch).step_by(work.c) {
            *v = (*v - lo) / span;
        }
    }
    let (h0, w0) = (work.h, work.w);
    // Steps 4-10: every scale, resized back (bilinear) and averaged.
    let mut sum = vec![0f64; h0 * w0];
    for (i, &r) in cfg.scales.iter().enumerate() {
        let (h, f, stride) = (cfg.half_sizes[i], cfg.factors[i], cfg.candidate_strides[i]);
        let sr = if r < 1.0 {
            let scaled = imresize::by_scale(&work, r, Kernel::Bilinear);
            let s = single_scale(&scaled, r, h, f, stride, cfg);
            let s = Img {
                h: scaled.h,
                w: scaled.w,
                c: 1,
                data: s,
            };
            imresize::to_size(&s, h0 as f64, w0 as f64, Kernel::Bilinear).data
        } else {
            single_scale(&work, r, h, f, stride, cfg)
        };
        for (a, b) in sum.iter_mut().zip(sr) {
            *a += b;
        }
    }
    let n = cfg.scales.len() as f64;
    let s: Vec<f64> = sum.into_iter().map(|v| v / n).collect();
    // Step 11: foci and the distance to them. Matlab's bwdist returns single precision and the
    // product is then taken in single precision; reproduce that.
    let max = s.iter().cloned().fold(0.0, f64::max);
    let foci: Vec<bool> = s.iter().map(|&v| v > max * cfg.foci_threshold).collect();
    let data = if foci.iter().any(|&f| f) {
        let d: Vec<f32> = bwdist(&foci, h0, w0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let dmax = d.iter().cloned().fold(0f32, f32::max);
        s.iter()
            .zip(&d)
            .map(|(&sv, &dv)| {
                let dn = if dmax > 0.0 { dv / dmax } else { 0.0 };
                ((sv as f32) * (1.0f32 - dn)) as f64
            })
            .collect()
    } else {
        s
    };
    Img {
        h: h0,
        w: w0,
        c: 1,
        data,
    }
}

/// SMILER's wrapper on top of the map: bicubic resize back to `h x w`, then min-max to [0, 1].
pub fn wrap(s: &Img, h: usize, w: usize) -> Img {
    let mut out = imresize::to_size(s, h as f64, w as f64, Kernel::Bicubic);
    let (lo, hi) = out
        .data
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let span = hi - lo;
    for v in out.data.iter_mut() {
        *v = if span > 0.0 { (*v - lo) / span } else { 0.0 };
    }
    out
}
