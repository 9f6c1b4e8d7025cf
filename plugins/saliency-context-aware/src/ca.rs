//! Context-aware saliency (Goferman, Zelnik-Manor and Tal, TPAMI 2012), as the reference Matlab
//! reimplementation by Tsai and Chang computes it (`CA-SPEC.md` in the project's shared notes
//! gives the steps; the comments below number them).
//!
//! The search for the K most similar patches is exact and pruned by rigorous lower bounds
//! (see [`crate::search`]; on noise-like inputs, a screened brute force, [`crate::brute`]):
//! only the pairs that can still be among the K nearest get their float64 distance computed,
//! and no pair matrix is ever held in memory. Bands of rows of queries run in parallel; each
//! query's work does not depend on the thread count, so neither does the result.

use crate::edt::bwdist;
use crate::imresize::{self, Img, Kernel};
use crate::index::Patches;
use crate::lab;
use crate::search;

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
    /// Steps 8-9: which exact search finds the K nearest (the same bits with each; not a
    /// pipeline key: the tests run every path).
    pub search: search::Search,
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
            search: search::Search::Auto,
        }
    }
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
    Patches { n, dim, data, pos }
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
    }
    cand
}

/// One scale's search for the K nearest (steps 5-7): its queries, candidates, K and row length,
/// as [`single_scale`] runs it (`pub` for the benches' per-scale floors, benches/README.md).
#[doc(hidden)]
pub struct ScaleSearch {
    /// Every pixel whose patch fits, row by row.
    pub q: Patches,
    pub cand: Patches,
    /// The real distances among the K (the rest are the reference buffer's zeros).
    pub k: usize,
    /// Zeros of the reference's buffer among the K.
    pub zeros: usize,
    /// Queries per row.
    pub row_len: usize,
}

impl ScaleSearch {
    /// Steps 5-7 for `img` at scale `r`.
    fn of(img: &Img, r: f64, h: usize, stride: usize, cfg: &Config) -> ScaleSearch {
        let len = img.h.max(img.w) as f64;
        let cand = sample_candidates(img, r, h, stride, cfg);
        // Step 7: queries, every pixel whose patch fits.
        let q = patches(img, h, h + 1, 1, len);
        // The reference's zero-initialised 500-column buffer: zeros among the top K.
        let zeros = cfg.buffer.saturating_sub(cand.n).min(cfg.k);
        let k = (cfg.k - zeros).min(cand.n);
        let row_len = img.w.saturating_sub(2 * h);
        ScaleSearch {
            q,
            cand,
            k,
            zeros,
            row_len,
        }
    }

    /// Steps 8-9: for every query, the sum of its K smallest dissimilarities.
    pub fn sums(&self, c: f64, search: search::Search) -> Vec<f64> {
        search::k_smallest_sums(&self.q, &self.cand, self.k, c, self.row_len, search)
    }
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
    let ss = ScaleSearch::of(img, r, h, stride, cfg);
    let qw = ss.row_len;
    let mut s = vec![0f64; img.h * img.w];
    if ss.q.n == 0 || ss.cand.n == 0 {
        return s;
    }
    for (i, sum) in ss.sums(cfg.c, cfg.search).into_iter().enumerate() {
        let mean = sum / (ss.k + ss.zeros) as f64;
        s[(i / qw + h) * img.w + i % qw + h] = 1.0 - (-mean * factor).exp();
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
    let ScaleSearch {
        q,
        cand,
        zeros,
        row_len: qw,
        ..
    } = ScaleSearch::of(img, r, h, stride, cfg);
    let cands = [cand];
    let mut s = vec![0f64; img.h * img.w];
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

/// Steps 1-3: the working image (the longer side `cfg.max_dim`, Lab for colour, each channel
/// min-maxed to [0, 1]).
fn working_image(img: &Img, cfg: &Config) -> Img {
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
    work
}

/// Every scale's search, as [`saliency`] runs them (for the benches' per-scale floors).
#[doc(hidden)]
pub fn scale_searches(img: &Img, cfg: &Config) -> Vec<ScaleSearch> {
    let work = working_image(img, cfg);
    cfg.scales
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let (h, stride) = (cfg.half_sizes[i], cfg.candidate_strides[i]);
            if r < 1.0 {
                let scaled = imresize::by_scale(&work, r, Kernel::Bilinear);
                ScaleSearch::of(&scaled, r, h, stride, cfg)
            } else {
                ScaleSearch::of(&work, r, h, stride, cfg)
            }
        })
        .collect()
}

/// The saliency map at the working size (the longer side `cfg.max_dim`), values in [0, 1].
/// `img` is `h x w x c` with c = 3 (sRGB in [0, 1]) or 1 (grey).
pub fn saliency(img: &Img, cfg: &Config) -> Img {
    let work = working_image(img, cfg);
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
