//! Image comparison metrics.

pub mod saliency;

/// Scores a batch of perturbed inputs: `(n x C x H x W values, n)` to one score per sample.
pub type BatchScore<'a> = dyn FnMut(&[f32], usize) -> crate::Result<Vec<f64>> + 'a;

/// SSIM (Wang et al. 2004) with Wang's parameters: an 11 x 11 Gaussian window with sigma 1.5,
/// K1 = 0.01, K2 = 0.03, data range 1, population covariances, averaged over the pixels whose
/// window lies inside the image (as scikit-image's `structural_similarity(gaussian_weights=True,
/// sigma=1.5, use_sample_covariance=False, data_range=1)` crops its map).
pub fn ssim(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    assert_eq!(a.len(), h * w);
    assert_eq!(b.len(), h * w);
    const R: usize = 5;
    let sigma = 1.5f64;
    let g: Vec<f64> = (0..=2 * R)
        .map(|i| (-((i as f64 - R as f64).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / gs).collect();
    let (c1, c2) = ((0.01f64).powi(2), (0.03f64).powi(2));
    if h <= 2 * R || w <= 2 * R {
        return f64::NAN;
    }
    // Separable weighted means of x, y, x^2, y^2, xy at every valid centre.
    let filt = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
        let mut rows = vec![0f64; h * (w - 2 * R)];
        for y in 0..h {
            for x in R..w - R {
                rows[y * (w - 2 * R) + x - R] =
                    (0..=2 * R).map(|k| g[k] * f(y * w + x + k - R)).sum();
            }
        }
        let ow = w - 2 * R;
        let mut out = vec![0f64; (h - 2 * R) * ow];
        for y in R..h - R {
            for x in 0..ow {
                out[(y - R) * ow + x] =
                    (0..=2 * R).map(|k| g[k] * rows[(y + k - R) * ow + x]).sum();
            }
        }
        out
    };
    let mx = filt(&|i| a[i]);
    let my = filt(&|i| b[i]);
    let mxx = filt(&|i| a[i] * a[i]);
    let myy = filt(&|i| b[i] * b[i]);
    let mxy = filt(&|i| a[i] * b[i]);
    let n = mx.len();
    let total: f64 = (0..n)
        .map(|i| {
            let (ux, uy) = (mx[i], my[i]);
            let (vx, vy, vxy) = (mxx[i] - ux * ux, myy[i] - uy * uy, mxy[i] - ux * uy);
            ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        })
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_score_one_and_unrelated_ones_less() {
        let (h, w) = (20, 30);
        let a: Vec<f64> = (0..h * w)
            .map(|i| ((i * 7919) % 101) as f64 / 100.0)
            .collect();
        assert!((ssim(&a, &a, h, w) - 1.0).abs() < 1e-12);
        let b: Vec<f64> = a.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&a, &b, h, w) < 0.0);
    }
}

#[cfg(test)]
mod skimage_parity {
    use super::*;

    fn load(name: &str) -> (Vec<f64>, usize, usize) {
        let path = format!(
            "{}/../../tests/fixtures/ssim/{name}.npy",
            env!("CARGO_MANIFEST_DIR")
        );
        let a = crate::npy::decode(&std::fs::read(&path).unwrap(), &path).unwrap();
        (a.data, a.shape[0], a.shape[1])
    }

    /// scikit-image's structural_similarity on fixed arrays (tests/fixtures/ssim, made by
    /// make_ssim_fixtures.py there), to 1e-4.
    #[test]
    fn matches_scikit_image() {
        let path = format!(
            "{}/../../tests/fixtures/ssim/ssim.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        for (p, q) in [("a", "b"), ("a", "c"), ("b", "c"), ("a", "a")] {
            let key = format!("\"{p}_{q}\": ");
            let i = text.find(&key).unwrap() + key.len();
            let want: f64 = text[i..]
                .split([',', '\n', '}'])
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let (x, h, w) = load(p);
            let (y, _, _) = load(q);
            let got = ssim(&x, &y, h, w);
            assert!(
                (got - want).abs() <= 1e-4,
                "{p}-{q}: {got} vs scikit-image {want}"
            );
        }
    }
}

/// What replaces a flipped patch in region perturbation (`"uniform"` or `"mean"` in TOML).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// Uniform random pixel values in [0, 255], normalised as the model's input (Samek et al.).
    Uniform,
    /// The mean image: 0 after normalisation.
    Mean,
}

/// Region perturbation (Samek, Binder, Montavon, Lapuschkin and Mueller, 2017), for one
/// image: the `patch x patch` regions are flipped one by one in `order`, and the target score
/// is measured after each step; `scores[k]` is the score after `k` flips (`scores[0]` the
/// unperturbed one).
#[derive(Clone, Debug, PartialEq)]
pub struct Perturbation {
    pub scores: Vec<f64>,
}

impl Perturbation {
    /// AOPC: the mean of `f(x^0) - f(x^k)` over `k = 0..=L` (higher: the order finds what
    /// matters sooner).
    pub fn aopc(&self) -> f64 {
        let f0 = self.scores[0];
        self.scores.iter().map(|s| f0 - s).sum::<f64>() / self.scores.len() as f64
    }
    /// The curve `f(x^0) - f(x^k)`, k = 0..=L.
    pub fn curve(&self) -> Vec<f64> {
        self.scores.iter().map(|s| self.scores[0] - s).collect()
    }
}

/// Patch order by relevance: the `(row, col)` patches of a `h x w` map (patch size `p`,
/// the last row/column of patches clipped), most relevant (largest sum) first; ties keep the
/// row-major order.
pub fn patches_by_relevance(
    relevance: &[f32],
    h: usize,
    w: usize,
    p: usize,
) -> Vec<(usize, usize)> {
    let (ph, pw) = (h.div_ceil(p), w.div_ceil(p));
    let mut sums: Vec<((usize, usize), f64)> = Vec::with_capacity(ph * pw);
    for py in 0..ph {
        for px in 0..pw {
            let mut s = 0.0;
            for y in py * p..((py + 1) * p).min(h) {
                for x in px * p..((px + 1) * p).min(w) {
                    s += relevance[y * w + x] as f64;
                }
            }
            sums.push(((py, px), s));
        }
    }
    sums.sort_by(|a, b| b.1.total_cmp(&a.1));
    sums.into_iter().map(|(k, _)| k).collect()
}

/// A random patch order (xorshift, seeded).
pub fn patches_random(h: usize, w: usize, p: usize, seed: u64) -> Vec<(usize, usize)> {
    let (ph, pw) = (h.div_ceil(p), w.div_ceil(p));
    let mut v: Vec<(usize, usize)> = (0..ph).flat_map(|y| (0..pw).map(move |x| (y, x))).collect();
    shuffle(&mut v, seed);
    v
}

/// A seeded Fisher-Yates shuffle (xorshift): the same order for the same seed and length,
/// on every machine.
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

/// `n` seeded standard normal values (xorshift uniforms, Box-Muller): the same values for the
/// same seed, on every machine.
pub fn gaussian(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        // 53 bits in (0, 1]: never 0, so the logarithm is finite.
        ((s >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let (u1, u2) = (uniform(), uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        v.push(r * t.cos());
        v.push(r * t.sin());
    }
    v.truncate(n);
    v
}

/// Flip `steps` patches of `input` (`C x H x W`, normalised) in `order` and score each step
/// with `score` (which takes a batch `N x C x H x W` of perturbed inputs and returns one score
/// per sample). The fill values come from `fill`: for `Uniform`, pixel values drawn once per
/// image (seeded), normalised with `mean`/`std`, so both orders flip to the same values.
#[allow(clippy::too_many_arguments)]
pub fn region_perturbation(
    input: &[f32],
    shape: [usize; 3],
    order: &[(usize, usize)],
    patch: usize,
    steps: usize,
    fill: Fill,
    mean_std: (&[f32], &[f32]),
    seed: u64,
    batch: usize,
    score: &mut BatchScore<'_>,
) -> crate::Result<Perturbation> {
    let [c, h, w] = shape;
    let plane = h * w;
    let replacement: Vec<f32> = match fill {
        Fill::Mean => vec![0.0; input.len()],
        Fill::Uniform => {
            let mut s = seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
            (0..input.len())
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let v = (s >> 11) as f32 / (1u64 << 53) as f32; // [0, 1)
                    let ch = i / plane;
                    (v - mean_std.0[ch % mean_std.0.len()]) / mean_std.1[ch % mean_std.1.len()]
                })
                .collect()
        }
    };
    let steps = steps.min(order.len());
    let mut x = input.to_vec();
    // The states x^0 .. x^L.
    let mut states = Batches::new(score, "region perturbation", x.len(), batch, steps + 1);
    states.push(&x)?;
    for &(py, px) in &order[..steps] {
        for ch in 0..c {
            for y in py * patch..((py + 1) * patch).min(h) {
                for xx in px * patch..((px + 1) * patch).min(w) {
                    let k = ch * plane + y * w + xx;
                    x[k] = replacement[k];
                }
            }
        }
        states.push(&x)?;
    }
    Ok(Perturbation {
        scores: states.finish()?,
    })
}

/// States of one size, scored `batch` at a time in the order they come (at most `batch`
/// states in memory): the batching of region perturbation and of insertion/deletion.
struct Batches<'s, 'a> {
    score: &'s mut BatchScore<'a>,
    /// The metric, for the error when `score` miscounts.
    what: &'static str,
    size: usize,
    batch: usize,
    pending: Vec<f32>,
    scores: Vec<f64>,
}

impl<'s, 'a> Batches<'s, 'a> {
    /// For `count` states of `size` values each.
    fn new(
        score: &'s mut BatchScore<'a>,
        what: &'static str,
        size: usize,
        batch: usize,
        count: usize,
    ) -> Self {
        let (size, batch) = (size.max(1), batch.max(1));
        Batches {
            score,
            what,
            size,
            batch,
            pending: Vec::with_capacity(batch.min(count) * size),
            scores: Vec::with_capacity(count),
        }
    }

    /// Add a state; a full batch is scored.
    fn push(&mut self, x: &[f32]) -> crate::Result<()> {
        self.pending.extend_from_slice(x);
        if self.pending.len() / self.size >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> crate::Result<()> {
        let n = self.pending.len() / self.size;
        if n == 0 {
            return Ok(());
        }
        let s = (self.score)(&self.pending, n)?;
        if s.len() != n {
            return Err(crate::Error::internal(format!(
                "{}: one score per sample expected",
                self.what
            )));
        }
        self.scores.extend(s);
        self.pending.clear();
        Ok(())
    }

    /// Score what is left; every state's score, in order.
    fn finish(mut self) -> crate::Result<Vec<f64>> {
        self.flush()?;
        Ok(self.scores)
    }
}

/// What the pixels of insertion and deletion (Petsiuk et al.) start from or turn into
/// (`"blur"`, `"grey"` or `"zeros"` in TOML).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// The image under a Gaussian blur (sigma in pixels; Petsiuk et al.'s insertion start).
    Blur,
    /// The mean image: 0 after normalisation.
    Grey,
    /// A black image, normalised as the model's input (Petsiuk et al.'s deletion end).
    Zeros,
}

/// The baseline image for `input` (`C x H x W`, normalised with `mean_std`).
pub fn baseline(
    input: &[f32],
    [c, h, w]: [usize; 3],
    kind: Baseline,
    blur_sigma: f32,
    mean_std: (&[f32], &[f32]),
) -> Vec<f32> {
    let plane = h * w;
    match kind {
        Baseline::Grey => vec![0.0; input.len()],
        Baseline::Zeros => (0..input.len())
            .map(|i| {
                let ch = i / plane;
                (0.0 - mean_std.0[ch % mean_std.0.len()]) / mean_std.1[ch % mean_std.1.len()]
            })
            .collect(),
        Baseline::Blur => {
            // Separable Gaussian, radius ceil(3 sigma), borders mirrored (half-sample).
            let r = (3.0 * blur_sigma).ceil().max(0.0) as isize;
            let k: Vec<f32> = (-r..=r)
                .map(|d| (-((d * d) as f32) / (2.0 * blur_sigma * blur_sigma).max(1e-12)).exp())
                .collect();
            let ks: f32 = k.iter().sum();
            let k: Vec<f32> = k.iter().map(|v| v / ks).collect();
            let mirror = |v: isize, n: usize| -> usize {
                let n = n as isize;
                let mut v = v;
                while v < 0 || v >= n {
                    v = if v < 0 { -v - 1 } else { 2 * n - v - 1 };
                }
                v as usize
            };
            let mut out = vec![0f32; input.len()];
            let mut tmp = vec![0f32; plane];
            for ch in 0..c {
                let src = &input[ch * plane..(ch + 1) * plane];
                for y in 0..h {
                    for x in 0..w {
                        tmp[y * w + x] = (-r..=r)
                            .map(|d| k[(d + r) as usize] * src[y * w + mirror(x as isize + d, w)])
                            .sum();
                    }
                }
                for y in 0..h {
                    for x in 0..w {
                        out[ch * plane + y * w + x] = (-r..=r)
                            .map(|d| k[(d + r) as usize] * tmp[mirror(y as isize + d, h) * w + x])
                            .sum();
                    }
                }
            }
            out
        }
    }
}

/// Pixel order by relevance: the indices of a `H x W` map, most relevant first; ties keep the
/// row-major order.
pub fn pixels_by_relevance(relevance: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..relevance.len()).collect();
    idx.sort_by(|&a, &b| relevance[b].total_cmp(&relevance[a]));
    idx
}

/// An insertion or deletion curve: the score after each of `steps` equal shares of the pixels
/// was inserted or deleted (`scores[0]`: none, `scores[steps]`: all).
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub scores: Vec<f64>,
}

impl Curve {
    /// The area under the curve over the share of pixels, [0, 1], by trapezoids.
    pub fn auc(&self) -> f64 {
        let n = self.scores.len();
        if n < 2 {
            return f64::NAN;
        }
        let inner: f64 =
            self.scores.iter().sum::<f64>() - (self.scores[0] + self.scores[n - 1]) / 2.0;
        inner / (n - 1) as f64
    }
}

/// Insertion (`insert`: the pixels of `input` put into `base` in `order`) or deletion (the
/// pixels of `input` replaced by `base`'s in `order`), Petsiuk, Das and Saenko, "RISE",
/// BMVC 2018: after step `k` of `steps`, the first `round(k N / steps)` pixels of `order`
/// (indices of the `H x W` plane, all channels) are changed; `score` takes a batch
/// `n x C x H x W` and returns one score per sample, `batch` states at a time.
#[allow(clippy::too_many_arguments)]
pub fn insertion_deletion(
    input: &[f32],
    base: &[f32],
    [c, h, w]: [usize; 3],
    order: &[usize],
    steps: usize,
    insert: bool,
    batch: usize,
    score: &mut BatchScore<'_>,
) -> crate::Result<Curve> {
    let plane = h * w;
    if input.len() != c * plane || base.len() != input.len() || order.len() != plane {
        return Err(crate::Error::internal(
            "insertion/deletion: input, baseline and order sizes disagree",
        ));
    }
    let steps = steps.max(1);
    let (mut x, from) = if insert {
        (base.to_vec(), input)
    } else {
        (input.to_vec(), base)
    };
    let mut states = Batches::new(score, "insertion/deletion", x.len(), batch, steps + 1);
    states.push(&x)?;
    let mut done = 0;
    for k in 1..=steps {
        let upto = (k * plane + steps / 2) / steps;
        for &p in &order[done..upto] {
            for ch in 0..c {
                x[ch * plane + p] = from[ch * plane + p];
            }
        }
        done = upto;
        states.push(&x)?;
    }
    Ok(Curve {
        scores: states.finish()?,
    })
}

#[cfg(test)]
mod insertion_deletion_tests {
    use super::*;

    /// f(x) = the mean of channel 0 over a 2 x 2 block of a 4 x 4 image of ones (1 at start),
    /// with the block's pixels first in the order: deletion to zeros (grey baseline) over 8
    /// steps of 2 pixels removes the block in steps 1 and 2: scores 1, 0.5, 0, 0, ..., 0; the
    /// area = (sum - (first + last) / 2) / 8 = (1.5 - 0.5) / 8 = 0.125. Insertion from the
    /// same baseline mirrors it: 0, 0.5, 1, 1, ..., 1; area = (7.5 - 0.5) / 8 = 0.875.
    #[test]
    fn a_model_that_reads_one_block_gives_the_hand_derived_curves() {
        let (c, h, w) = (2, 4, 4);
        let x = vec![1f32; c * h * w];
        let block = [5usize, 6, 9, 10];
        let mut rel = vec![0f32; h * w];
        for &p in &block {
            rel[p] = 1.0;
        }
        let order = pixels_by_relevance(&rel);
        assert_eq!(&order[..4], &block);
        let base = baseline(&x, [c, h, w], Baseline::Grey, 0.0, (&[0.0], &[1.0]));
        let mut f = |b: &[f32], n: usize| -> crate::Result<Vec<f64>> {
            Ok((0..n)
                .map(|i| {
                    block
                        .iter()
                        .map(|&p| b[i * c * h * w + p] as f64)
                        .sum::<f64>()
                        / 4.0
                })
                .collect())
        };
        let del = insertion_deletion(&x, &base, [c, h, w], &order, 8, false, 3, &mut f).unwrap();
        assert_eq!(
            del.scores,
            vec![1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(del.auc(), 0.125);
        let ins = insertion_deletion(&x, &base, [c, h, w], &order, 8, true, 3, &mut f).unwrap();
        assert_eq!(
            ins.scores,
            vec![0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        );
        assert_eq!(ins.auc(), 0.875);
    }

    #[test]
    fn baselines_follow_their_definitions() {
        // Zeros: (0 - mean) / std per channel. Blur of a constant image: the constant.
        let x = vec![0.5f32; 2 * 3 * 3];
        let z = baseline(
            &x,
            [2, 3, 3],
            Baseline::Zeros,
            0.0,
            (&[0.5, 0.25], &[0.5, 0.25]),
        );
        assert!(z[..9].iter().all(|&v| v == -1.0) && z[9..].iter().all(|&v| v == -1.0));
        let b = baseline(&x, [2, 3, 3], Baseline::Blur, 2.0, (&[0.0], &[1.0]));
        assert!(b.iter().all(|&v| (v - 0.5).abs() < 1e-6));
        // A unit impulse in the middle of a 1 x 1 x 7 row, sigma 1: the normalised Gaussian
        // taps exp(-d^2 / 2) / sum over d = -3..=3.
        let mut row = vec![0f32; 7];
        row[3] = 1.0;
        let g = baseline(&row, [1, 1, 7], Baseline::Blur, 1.0, (&[0.0], &[1.0]));
        let norm: f32 = (-3..=3).map(|d: i32| (-(d * d) as f32 / 2.0).exp()).sum();
        for d in -3i32..=3 {
            let want = (-(d * d) as f32 / 2.0).exp() / norm;
            assert!(
                (g[(3 + d) as usize] - want).abs() < 1e-6,
                "{d}: {}",
                g[(3 + d) as usize]
            );
        }
    }
}

#[cfg(test)]
mod perturbation_tests {
    #[test]
    fn gaussian_noise_is_seeded_and_standard() {
        let a = super::gaussian(200_001, 7);
        assert_eq!(a, super::gaussian(200_001, 7));
        assert_ne!(a[..10], super::gaussian(10, 8)[..]);
        // Mean 0 and variance 1 within 5 standard errors (2.2e-3 and 3.2e-3 for 200001 draws).
        let n = a.len() as f64;
        let m = a.iter().sum::<f64>() / n;
        let v = a.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        assert!(m.abs() < 5.0 * (1.0 / n).sqrt(), "mean {m}");
        assert!((v - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "variance {v}");
        // The share beyond 1.96 is 5% (standard error 4.9e-4).
        let tail = a.iter().filter(|x| x.abs() > 1.96).count() as f64 / n;
        assert!((tail - 0.05).abs() < 2.5e-3, "tail {tail}");
    }

    use super::*;

    #[test]
    fn aopc_of_a_model_that_reads_one_patch_is_known() {
        // f(x) = sum of channel 0 over the 8x8 patch (1, 2) of a 32x32 image of ones; the fill
        // is the mean image (0). Most relevant first flips that patch first: f drops 64 -> 0
        // at step 1 and stays there, so AOPC = (0 + 64 L) / (L + 1).
        let (c, h, w, p, steps) = (3, 32, 32, 8, 5);
        let x = vec![1f32; c * h * w];
        let mut rel = vec![0f32; h * w];
        for y in 8..16 {
            for xx in 16..24 {
                rel[y * w + xx] = 1.0;
            }
        }
        let mut f = |batch: &[f32], n: usize| -> crate::Result<Vec<f64>> {
            Ok((0..n)
                .map(|i| {
                    let s = &batch[i * c * h * w..];
                    (8..16)
                        .flat_map(|y| (16..24).map(move |xx| (y, xx)))
                        .map(|(y, xx)| s[y * w + xx] as f64)
                        .sum()
                })
                .collect())
        };
        let morf = patches_by_relevance(&rel, h, w, p);
        assert_eq!(morf[0], (1, 2));
        let run = |order: &[(usize, usize)], f: &mut BatchScore<'_>| {
            region_perturbation(
                &x,
                [c, h, w],
                order,
                p,
                steps,
                Fill::Mean,
                (&[0.0; 3], &[1.0; 3]),
                0,
                2,
                f,
            )
            .unwrap()
        };
        let r = run(&morf, &mut f);
        assert_eq!(r.scores, vec![64.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(r.aopc(), 64.0 * 5.0 / 6.0);
        // A random order finds the patch at its position k in the order (or never within L
        // steps): AOPC = 64 (L + 1 - k) / (L + 1) for k <= L, else 0.
        let rnd = patches_random(h, w, p, 7);
        let k = rnd.iter().position(|&q| q == (1, 2)).unwrap() + 1;
        let want = if k <= steps {
            64.0 * (steps + 1 - k) as f64 / (steps + 1) as f64
        } else {
            0.0
        };
        assert_eq!(run(&rnd, &mut f).aopc(), want);
        // The random order is a permutation, and the same for the same seed.
        let mut sorted = rnd.clone();
        sorted.sort();
        assert_eq!(sorted.len(), 16);
        sorted.dedup();
        assert_eq!(sorted.len(), 16);
        assert_eq!(rnd, patches_random(h, w, p, 7));
    }
}
