//! The SR vocabulary and operations, in one place for the host and the Python package: how a
//! relevance map becomes the saliency stage's image ([`RelevanceInput`], [`relevance_to_image`]),
//! which classes are explained ([`Target`], [`resolve_targets`]), and the region perturbation
//! behind AOPC ([`Perturb`], [`perturb`]). Each spelling is parsed by one `FromStr`.

use crate::error::{Error, Result};
use crate::metrics::{self, Fill};
use crate::stage::Model;
use crate::tensor::{Image, Tensor};
use std::str::FromStr;

/// How a relevance map (`C x H x W`) becomes an image for the saliency stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RelevanceInput {
    /// Per channel |R|, one min-max over all channels to [0, 1], as RGB (the paper's code).
    #[default]
    AbsRgb,
    /// Sum of |R| over channels, min-max to [0, 1], as grey.
    AbsSum,
    /// Sum of max(R, 0) over channels, min-max to [0, 1], as grey.
    Positive,
}

impl RelevanceInput {
    /// The spellings, in the order errors list them.
    pub const NAMES: [&'static str; 3] = ["abs-rgb", "abs-sum", "positive"];

    pub fn name(self) -> &'static str {
        match self {
            RelevanceInput::AbsRgb => "abs-rgb",
            RelevanceInput::AbsSum => "abs-sum",
            RelevanceInput::Positive => "positive",
        }
    }
}

impl FromStr for RelevanceInput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "abs-rgb" => Ok(RelevanceInput::AbsRgb),
            "abs-sum" => Ok(RelevanceInput::AbsSum),
            "positive" => Ok(RelevanceInput::Positive),
            other => Err(format!(
                "`{other}` is not one of {}",
                RelevanceInput::NAMES.join(", ")
            )),
        }
    }
}

/// Which classes relevance explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The `k` most likely classes (`"top1"`, the default, is the paper's choice).
    Top(usize),
    /// A class index.
    Class(usize),
    /// A class by its label.
    Label(String),
}

impl Default for Target {
    fn default() -> Self {
        Target::Top(1)
    }
}

impl FromStr for Target {
    type Err = String;
    /// `"topK"` (K >= 1), or a label. (A class index is a number, not a string: callers that
    /// read TOML or Python values make [`Target::Class`] themselves.)
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("top").map(str::parse::<usize>) {
            Some(Ok(k)) if k >= 1 => Ok(Target::Top(k)),
            Some(_) => Err(format!("`{s}` is not top1, top2, ...")),
            None => Ok(Target::Label(s.to_string())),
        }
    }
}

/// The classes to explain for one image, given its logits and the model's labels.
pub fn resolve_targets(target: &Target, logits: &[f32], labels: &[String]) -> Result<Vec<usize>> {
    let n = logits.len();
    match target {
        Target::Top(k) => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            Ok(idx.into_iter().take(*k).collect())
        }
        Target::Class(c) if *c < n => Ok(vec![*c]),
        Target::Class(c) => Err(Error::params(format!(
            "`run.target`: class {c} does not exist (the model has {n})"
        ))),
        Target::Label(l) => labels
            .iter()
            .position(|x| x == l)
            .map(|i| vec![i])
            .ok_or_else(|| {
                let near: Vec<&String> = labels
                    .iter()
                    .filter(|x| x.to_lowercase().contains(&l.to_lowercase()))
                    .take(5)
                    .collect();
                Error::params(format!("`run.target`: no class is labelled `{l}`")).with_help(
                    if near.is_empty() {
                        "give a label exactly as the model's label list spells it, or a class index"
                            .to_string()
                    } else {
                        format!(
                            "similar labels: {}",
                            near.iter()
                                .map(|s| format!("`{s}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                )
            }),
    }
}

/// `(C, H, W)` of a `[1,] C x H x W` relevance map.
fn chw(r: &Tensor) -> Result<(usize, usize, usize)> {
    match r.shape() {
        [1, c, h, w] | [c, h, w] => Ok((*c, *h, *w)),
        s => Err(Error::input(format!(
            "relevance has shape {s:?}, expected [1, C, H, W]"
        ))),
    }
}

/// A `[1,] C x H x W` relevance map summed over channels (signed), `H x W`.
pub fn channel_sum(r: &Tensor) -> Result<Vec<f32>> {
    let (c, h, w) = chw(r)?;
    Ok((0..h * w)
        .map(|i| (0..c).map(|ch| r.data()[ch * h * w + i]).sum())
        .collect())
}

/// A relevance map (`[1,] C x H x W`) as the saliency stage's input image:
/// `abs-rgb` (per channel |R|, one min-max over all channels, `H x W x C`), `abs-sum` (sum of
/// |R| over channels) or `positive` (sum of max(R, 0)), both min-maxed, `H x W x 1`.
pub fn relevance_to_image(r: &Tensor, how: RelevanceInput) -> Result<Image> {
    let (c, h, w) = chw(r)?;
    let d = r.data();
    let (vals, channels): (Vec<f32>, usize) = match how {
        RelevanceInput::AbsRgb => {
            let mut out = vec![0f32; h * w * c];
            for ch in 0..c {
                for i in 0..h * w {
                    out[i * c + ch] = d[ch * h * w + i].abs();
                }
            }
            (out, c)
        }
        RelevanceInput::AbsSum => (
            (0..h * w)
                .map(|i| (0..c).map(|ch| d[ch * h * w + i].abs()).sum())
                .collect(),
            1,
        ),
        RelevanceInput::Positive => (
            (0..h * w)
                .map(|i| (0..c).map(|ch| d[ch * h * w + i].max(0.0)).sum())
                .collect(),
            1,
        ),
    };
    let (lo, hi) = vals
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
    Image::new(
        w,
        h,
        channels,
        vals.into_iter().map(|v| (v - lo) * scale).collect(),
    )
}

/// How region perturbation runs (the AOPC keys of `[metrics]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perturb {
    /// Patch side in pixels.
    pub patch: usize,
    /// Patches replaced, one forward pass each (in batches of 8).
    pub steps: usize,
    pub fill: Fill,
    pub seed: u64,
}

/// Region perturbation of one image (`input`: `1 x C x H x W`) in `order`, scored by the
/// `target` logit, batches of 8.
pub fn perturb(
    model: &dyn Model,
    input: &Tensor,
    order: &[(usize, usize)],
    target: usize,
    p: &Perturb,
) -> Result<metrics::Perturbation> {
    let s = input.shape();
    let info = model.info();
    let shape = [s[1], s[2], s[3]];
    metrics::region_perturbation(
        input.data(),
        shape,
        order,
        p.patch,
        p.steps,
        p.fill,
        (&info.mean, &info.std),
        p.seed,
        8,
        &mut |batch, n| {
            let x = Tensor::new(vec![n, shape[0], shape[1], shape[2]], batch.to_vec())?;
            let y = model.forward(&x)?;
            let classes = y.numel() / n;
            Ok((0..n)
                .map(|i| y.data()[i * classes + target] as f64)
                .collect())
        },
    )
}

/// Insertion and deletion (Petsiuk et al. 2018) as the host runs them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InsDel {
    /// Curve points after the first; each costs a forward pass (in batches of 8).
    pub steps: usize,
    /// What insertion starts from, and what deletion turns pixels into.
    pub insertion_baseline: metrics::Baseline,
    pub deletion_baseline: metrics::Baseline,
    /// Sigma in pixels of a `blur` baseline.
    pub blur_sigma: f32,
}

/// Insertion and deletion curves of one image (`input`: `1 x C x H x W`) for a pixel
/// `relevance` map (`H x W`, most relevant inserted or deleted first), scored by the softmax
/// probability of `target`, as Petsiuk et al. score them.
pub fn insertion_deletion(
    model: &dyn Model,
    input: &Tensor,
    relevance: &[f32],
    target: usize,
    p: &InsDel,
) -> Result<(metrics::Curve, metrics::Curve)> {
    let s = input.shape();
    let info = model.info();
    let shape = [s[1], s[2], s[3]];
    let order = metrics::pixels_by_relevance(relevance);
    let mut score = |batch: &[f32], n: usize| -> Result<Vec<f64>> {
        let x = Tensor::new(vec![n, shape[0], shape[1], shape[2]], batch.to_vec())?;
        let y = model.forward(&x)?;
        let classes = y.numel() / n;
        Ok((0..n)
            .map(|i| {
                let row = &y.data()[i * classes..(i + 1) * classes];
                let top = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - top).exp()).sum();
                (row[target] as f64 - top).exp() / sum
            })
            .collect())
    };
    let base = |kind| {
        metrics::baseline(
            input.data(),
            shape,
            kind,
            p.blur_sigma,
            (&info.mean, &info.std),
        )
    };
    let ins = metrics::insertion_deletion(
        input.data(),
        &base(p.insertion_baseline),
        shape,
        &order,
        p.steps,
        true,
        8,
        &mut score,
    )?;
    let del = metrics::insertion_deletion(
        input.data(),
        &base(p.deletion_baseline),
        shape,
        &order,
        p.steps,
        false,
        8,
        &mut score,
    )?;
    Ok((ins, del))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 x 3 x 2 x 2 map (channels of pixels p0..p3), each mode's image derived by hand.
    #[test]
    fn relevance_to_image_follows_the_hand_derived_values() {
        let r = Tensor::new(
            vec![1, 3, 2, 2],
            vec![
                1.0, -2.0, 0.0, 4.0, // channel 0
                -1.0, 0.0, 2.0, 0.0, // channel 1
                0.0, 3.0, -3.0, 2.0, // channel 2
            ],
        )
        .unwrap();
        // abs-rgb: |R| per channel, H x W x 3, one min-max over all (0 .. 4).
        let rgb = relevance_to_image(&r, RelevanceInput::AbsRgb).unwrap();
        assert_eq!((rgb.width, rgb.height, rgb.channels), (2, 2, 3));
        assert_eq!(
            rgb.data(),
            &[0.25, 0.25, 0.0, 0.5, 0.0, 0.75, 0.0, 0.5, 0.75, 1.0, 0.0, 0.5]
        );
        // abs-sum: 2, 5, 5, 6 -> min-max over 2 .. 6.
        let sum = relevance_to_image(&r, RelevanceInput::AbsSum).unwrap();
        assert_eq!(sum.channels, 1);
        assert_eq!(sum.data(), &[0.0, 0.75, 0.75, 1.0]);
        // positive: 1, 3, 2, 6 -> min-max over 1 .. 6.
        let pos = relevance_to_image(&r, RelevanceInput::Positive).unwrap();
        assert_eq!(pos.data(), &[0.0, 0.4, 0.2, 1.0]);
        // A constant map is all zeros, not NaN.
        let flat = Tensor::new(vec![1, 3, 2, 2], vec![0.5; 12]).unwrap();
        assert!(relevance_to_image(&flat, RelevanceInput::AbsSum)
            .unwrap()
            .data()
            .iter()
            .all(|&v| v == 0.0));
    }

    /// SSIM1 as the pipeline computes it (the relevance's abs-sum image against the photo's
    /// saliency), against scikit-image on a min-max done in numpy (tests/fixtures/ssim,
    /// make_ssim1_fixture.py), to 1e-5: the abs-sum is summed in float32 here, in float64 there.
    #[test]
    fn ssim1_matches_scikit_image() {
        let dir = format!("{}/../../tests/fixtures/ssim", env!("CARGO_MANIFEST_DIR"));
        let load = |f: &str| {
            let p = format!("{dir}/{f}");
            crate::npy::decode(&std::fs::read(&p).unwrap(), &p).unwrap()
        };
        let (r, s) = (load("relevance.npy"), load("saliency.npy"));
        let r = Tensor::new(r.shape.clone(), r.data.iter().map(|&v| v as f32).collect()).unwrap();
        let img = relevance_to_image(&r, RelevanceInput::AbsSum).unwrap();
        let rel: Vec<f64> = img.data().iter().map(|&v| v as f64).collect();
        let got = crate::metrics::ssim(&rel, &s.data, s.shape[0], s.shape[1]);
        let text = std::fs::read_to_string(format!("{dir}/ssim1.json")).unwrap();
        let want: f64 = text
            .split("\"ssim1\": ")
            .nth(1)
            .and_then(|t| t.split(['\n', '}', ',']).next())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            (got - want).abs() <= 1e-5,
            "SSIM1 {got} vs scikit-image {want}"
        );
    }

    #[test]
    fn the_spellings_parse_once() {
        assert_eq!(
            "abs-sum".parse::<RelevanceInput>(),
            Ok(RelevanceInput::AbsSum)
        );
        assert!("abs"
            .parse::<RelevanceInput>()
            .unwrap_err()
            .contains("abs-rgb, abs-sum, positive"));
        assert_eq!("top3".parse::<Target>(), Ok(Target::Top(3)));
        assert_eq!(
            "espresso".parse::<Target>(),
            Ok(Target::Label("espresso".into()))
        );
        assert!("top0".parse::<Target>().is_err());
    }
}
