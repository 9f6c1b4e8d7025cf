//! `saliency.context-aware`: context-aware saliency (Goferman, Zelnik-Manor and Tal, TPAMI
//! 2012), an exact port of the readable reference (Tsai and Chang's Matlab code, shipped by
//! SMILER as CAS), with the nearest-patch search organised for speed (see [`ca`]).
//!
//! `variant = "reference"` (the default) is the reference algorithm; `variant = "fast"` samples
//! candidates twice as sparsely (a quarter of the pairs). Every parameter can be set.

pub mod brute;
pub mod ca;
pub mod edt;
pub mod imresize;
pub mod index;
pub mod lab;
pub mod pruned;
pub mod search;

use serde::{Deserialize, Serialize};
use sr_core::{Error, Image, Params, Result, Saliency, SaliencyStage, StageDef};

/// The largest working size: every photo is resized to `max_dim` on its longer side.
pub const MAX_DIM: usize = 2048;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaParams {
    /// `reference` or `fast`.
    pub variant: String,
    pub max_dim: usize,
    pub scales: Vec<f64>,
    pub half_sizes: Vec<usize>,
    /// Empty: 49 / (2H + 1)^2 per scale.
    pub factors: Vec<f64>,
    /// Empty: H per scale (reference), 2H (fast).
    pub candidate_strides: Vec<usize>,
    pub levels: Vec<f64>,
    pub min_level_scale: f64,
    pub k: usize,
    pub c: f64,
    pub foci_threshold: f64,
    pub buffer: usize,
}

impl Default for CaParams {
    fn default() -> Self {
        let r = ca::Config::reference();
        CaParams {
            variant: "reference".into(),
            max_dim: r.max_dim,
            scales: r.scales,
            half_sizes: r.half_sizes,
            factors: vec![],
            candidate_strides: vec![],
            levels: r.levels,
            min_level_scale: r.min_level_scale,
            k: r.k,
            c: r.c,
            foci_threshold: r.foci_threshold,
            buffer: r.buffer,
        }
    }
}

impl Params for CaParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        ("variant", "reference (exact reference algorithm) or fast (candidates on a grid twice as coarse)"),
        ("max_dim", "working size: the longer side, in pixels"),
        ("scales", "the scales r of the multi-scale average"),
        ("half_sizes", "half patch size H per scale (patches (2H+1) x (2H+1))"),
        ("factors", "distance factor per scale (empty: 49 / (2H+1)^2)"),
        ("candidate_strides", "candidate grid step per scale (empty: H, or 2H for fast)"),
        ("levels", "candidate pyramid levels f (bicubic resizes of the scale-r image)"),
        ("min_level_scale", "a level is used while r * f >= this"),
        ("k", "number of nearest patches averaged (exact K nearest)"),
        ("c", "position constant in d / (1 + c * d_position)"),
        ("foci_threshold", "foci: pixels above this fraction of the maximum"),
        ("buffer", "the reference's 500-column buffer quirk (zeros enter the mean when fewer candidates exist); 0 = off"),
    ];
}

impl CaParams {
    /// The algorithm's configuration, checked.
    pub fn config(&self) -> Result<ca::Config> {
        let n = self.scales.len();
        let fast = match self.variant.as_str() {
            "reference" => false,
            "fast" => true,
            o => {
                return Err(Error::params(format!(
                    "`variant` must be reference or fast, got `{o}`"
                )))
            }
        };
        if n == 0 || self.half_sizes.len() != n {
            return Err(Error::params(format!(
                "`scales` ({n}) and `half_sizes` ({}) need one value per scale",
                self.half_sizes.len()
            )));
        }
        for (key, len) in [
            ("factors", self.factors.len()),
            ("candidate_strides", self.candidate_strides.len()),
        ] {
            if len != 0 && len != n {
                return Err(Error::params(format!(
                    "`{key}` needs {n} values (one per scale) or none, got {len}"
                )));
            }
        }
        if self.scales.iter().any(|&r| !(r > 0.0 && r <= 1.0)) {
            return Err(Error::params("`scales` must lie in (0, 1]"));
        }
        if self.k == 0 || self.max_dim < 16 || self.half_sizes.contains(&0) {
            return Err(Error::params(
                "`k` must be >= 1, `max_dim` >= 16 and every half size >= 1",
            ));
        }
        if self.max_dim > MAX_DIM {
            return Err(Error::params(format!(
                "`max_dim` = {}: the working size may be at most {MAX_DIM} pixels (every photo is resized to it)",
                self.max_dim
            )));
        }
        if self.levels.is_empty() || self.levels.iter().any(|&f| !(f > 0.0 && f <= 1.0)) {
            return Err(Error::params(format!(
                "`levels` needs at least one pyramid level in (0, 1], got {:?}",
                self.levels
            )));
        }
        for (key, v) in [
            ("c", self.c),
            ("min_level_scale", self.min_level_scale),
            ("foci_threshold", self.foci_threshold),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::params(format!(
                    "`{key}` must be a finite number >= 0, got {v}"
                )));
            }
        }
        if self.factors.iter().any(|&f| !(f.is_finite() && f > 0.0)) {
            return Err(Error::params(format!(
                "`factors` must be finite and > 0, got {:?}",
                self.factors
            )));
        }
        if self.candidate_strides.contains(&0) {
            return Err(Error::params("`candidate_strides` must be >= 1"));
        }
        // A patch (2H + 1 wide) must fit the working image at its scale: the shorter side is
        // at least 1/8 of the longer in any photo srhost is shown (checked again per image).
        for (&r, &h) in self.scales.iter().zip(&self.half_sizes) {
            if (2 * h + 1) as f64 > r * self.max_dim as f64 {
                return Err(Error::params(format!(
                    "half size {h} at scale {r}: a {0}x{0} patch does not fit the {1:.0}-pixel working image",
                    2 * h + 1,
                    r * self.max_dim as f64
                )));
            }
        }
        if self.k > MAX_K {
            return Err(Error::params(format!(
                "`k` = {}: at most {MAX_K} nearest patches are averaged (the paper uses 64; the search is exact, so its time grows with k)",
                self.k
            )));
        }
        let cfg = ca::Config {
            max_dim: self.max_dim,
            scales: self.scales.clone(),
            factors: if self.factors.is_empty() {
                self.half_sizes
                    .iter()
                    .map(|&h| 49.0 / ((2 * h + 1) * (2 * h + 1)) as f64)
                    .collect()
            } else {
                self.factors.clone()
            },
            candidate_strides: if self.candidate_strides.is_empty() {
                self.half_sizes
                    .iter()
                    .map(|&h| if fast { 2 * h } else { h })
                    .collect()
            } else {
                self.candidate_strides.clone()
            },
            half_sizes: self.half_sizes.clone(),
            levels: self.levels.clone(),
            min_level_scale: self.min_level_scale,
            k: self.k,
            c: self.c,
            foci_threshold: self.foci_threshold,
            buffer: self.buffer,
            search: crate::search::Search::Auto,
        };
        // The patches of one scale are held at once, as float64: bounded like a model's
        // activations, before any photo is read.
        let bytes = patch_bytes(&cfg);
        let budget = sr_core::graph::activation_budget();
        if bytes > budget {
            return Err(Error::params(format!(
                "`max_dim` = {} with these scales and half sizes holds about {} MiB of patches for one photo, more than the memory budget of {} MiB",
                self.max_dim,
                bytes >> 20,
                budget >> 20
            ))
            .with_help(format!(
                "lower max_dim (250 is the paper's), or raise the budget with {} (MiB)",
                sr_core::graph::BUDGET_ENV
            )));
        }
        Ok(cfg)
    }
}

/// The most nearest patches averaged.
pub const MAX_K: usize = 1024;

/// An upper estimate of the bytes the largest scale's patches take for a square photo at the
/// working size: every query patch, and the candidates of every pyramid level three times
/// over (the patches, the index's reordered copy and its coordinates), as float64.
pub fn patch_bytes(cfg: &ca::Config) -> u64 {
    let d = cfg.max_dim as f64;
    cfg.scales
        .iter()
        .zip(&cfg.half_sizes)
        .zip(&cfg.candidate_strides)
        .map(|((&r, &h), &stride)| {
            let dim = ((2 * h + 1) * (2 * h + 1) * 3) as f64;
            let side = r * d;
            let queries = side * side;
            let candidates: f64 = cfg
                .levels
                .iter()
                .filter(|&&f| r * f >= cfg.min_level_scale)
                .map(|&f| (side * f / stride.max(1) as f64).powi(2))
                .sum();
            (8.0 * dim * (queries + 3.0 * candidates)) as u64
        })
        .max()
        .unwrap_or(0)
}

/// The stage.
pub struct ContextAware {
    cfg: ca::Config,
}

impl ContextAware {
    pub fn new(cfg: ca::Config) -> Self {
        ContextAware { cfg }
    }
}

impl SaliencyStage for ContextAware {
    type Params = CaParams;
    fn build(p: CaParams) -> Result<Self> {
        Ok(ContextAware { cfg: p.config()? })
    }
}

impl Saliency for ContextAware {
    /// The map at the input's size: the working-size map resized back (bicubic) and scaled
    /// to [0, 1], as SMILER's wrapper does.
    fn saliency(&self, input: &Image) -> Result<Image> {
        if input.channels != 1 && input.channels != 3 {
            return Err(Error::input(format!(
                "context-aware saliency takes 1 or 3 channels, got {}",
                input.channels
            )));
        }
        if let Some(i) = input.data().iter().position(|v| !v.is_finite()) {
            return Err(Error::input(format!(
                "context-aware saliency: the input holds {} at flat index {i}",
                input.data()[i]
            ))
            .with_help("every value must be finite (photos and relevance maps in [0, 1])"));
        }
        let img = imresize::Img {
            h: input.height,
            w: input.width,
            c: input.channels,
            data: input.data().iter().map(|&v| v as f64).collect(),
        };
        // Every scale's patch must fit the shorter side of the working image.
        let m = input.height.max(input.width) as f64;
        let short = input.height.min(input.width) as f64 / m * self.cfg.max_dim as f64;
        for (&r, &h) in self.cfg.scales.iter().zip(&self.cfg.half_sizes) {
            if ((r * short).floor() as usize) < 2 * h + 1 {
                return Err(Error::input(format!(
                    "context-aware saliency: a {0}x{0} patch (half size {h}) does not fit this {1}x{2} image at scale {r} ({3:.0} pixels on its shorter side)",
                    2 * h + 1,
                    input.width,
                    input.height,
                    r * short
                ))
                .with_help("use smaller half_sizes or a larger max_dim for images this elongated"));
            }
        }
        let s = ca::saliency(&img, &self.cfg);
        let out = ca::wrap(&s, input.height, input.width);
        Image::new(
            input.width,
            input.height,
            1,
            out.data.iter().map(|&v| v as f32).collect(),
        )
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::saliency::<ContextAware>(
            "context-aware",
            env!("CARGO_PKG_VERSION"),
            "Context-aware saliency (Goferman et al., TPAMI 2012), exact port of the reference Matlab code with a fast exact K-nearest-patch search.",
        ),
    ],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_working_size_fits_the_memory_budget_and_the_largest_does_not() {
        let mib = |max_dim: usize| {
            let cfg = ca::Config {
                max_dim,
                ..ca::Config::reference()
            };
            patch_bytes(&cfg) >> 20
        };
        let largest = (16..=MAX_DIM).rev().find(|&d| mib(d) < 1024).unwrap();
        println!(
            "patches at 250: {} MiB, at 2048: {} MiB; the largest max_dim within 1 GiB: {largest}",
            mib(250),
            mib(2048)
        );
        assert!(mib(250) < 256, "{}", mib(250));
        assert!(mib(2048) > 1024, "{}", mib(2048));
        assert!(CaParams::default().config().is_ok());
    }
}
