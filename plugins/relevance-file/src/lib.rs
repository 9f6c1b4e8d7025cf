//! `relevance.file`: relevance maps made elsewhere (Zennit, Captum, iNNvestigate, a GPU run),
//! one `.npy` per image, fed to the SR map, SSIM, AOPC and the report as if srhost had made them.
//!
//! An ordinary relevance stage: it binds to the model the maps explain (their size is checked
//! against its input, and the target's logit is its score) and finds each map by the image's
//! path, which every request carries ([`sr_core::ImageId`]).

use serde::{Deserialize, Serialize};
use sr_core::stage::{Params, RelevanceStage, StageDef};
use sr_core::{
    Error, Explainer, Explanation, ImageId, Model, Relevance, RelevanceStats, Request, Result,
    Tensor,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest map file read (bytes): 64 channels of 4096 x 4096 float64, well above any CNN
/// input, checked before the file is read. A map for a given model may be at most its input's
/// values in float64 plus [`MAP_HEADER_BYTES`].
pub const MAX_MAP_BYTES: u64 = 64 * 4096 * 4096 * 8;
/// Room for a `.npy` header (NumPy writes 128 bytes or so).
pub const MAP_HEADER_BYTES: u64 = 64 << 10;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileParams {
    /// The folder of maps.
    pub folder: String,
}

impl Params for FileParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[(
        "folder",
        "the folder of .npy maps (float32/64; C x H x W, 1 x C x H x W or H x W at the model's input size), one per image: <folder>/<the image's path under its input folder, .npy> or else <folder>/<image stem>.npy",
    )];
}

/// The stage: the folder, checked when it is built.
pub struct FileRelevance {
    folder: PathBuf,
}

impl RelevanceStage for FileRelevance {
    type Params = FileParams;
    fn build(p: FileParams) -> Result<Self> {
        if p.folder.trim().is_empty() {
            return Err(Error::params(
                "`folder`: give the folder that holds one .npy relevance map per image",
            ));
        }
        let folder = sr_core::resolve_path(&p.folder);
        if !folder.is_dir() {
            return Err(
                Error::params(format!("`folder`: no such folder: `{}`", p.folder)).with_help(
                    "the folder of .npy relevance maps, relative to the current directory",
                ),
            );
        }
        Ok(FileRelevance { folder })
    }
}

impl Relevance for FileRelevance {
    fn bind(&self, model: Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        Ok(Box::new(FileExplainer {
            folder: self.folder.clone(),
            model,
        }))
    }
}

/// The maps of one model's images.
struct FileExplainer {
    folder: PathBuf,
    model: Arc<dyn Model>,
}

impl Explainer for FileExplainer {
    fn explain(&self, req: &Request<'_>) -> Result<Explanation> {
        let [n, c, h, w] = req.input.shape()[..] else {
            return Err(Error::input(format!(
                "relevance.file: the input has shape {:?}, expected N x C x H x W",
                req.input.shape()
            )));
        };
        if req.images.len() != n || req.images.iter().any(|i| i.path.is_empty()) {
            return Err(Error::unsupported(
                "relevance.file reads one map per image, found by the image's path: give it images by their path (a pipeline, or Model.explain with a path), not a bare tensor",
            )
            .with_help("from Python, pass the map itself to srhost.sr_map or srhost.aopc"));
        }
        if req.targets.len() != n {
            return Err(Error::input(format!(
                "{} targets for a batch of {n}",
                req.targets.len()
            )));
        }
        // The target's logit scores the map; the caller's logits when it has them.
        let computed;
        let logits = match req.logits {
            Some(l) => l,
            None => {
                computed = self.model.forward(req.input)?;
                &computed
            }
        };
        let classes = logits.numel() / n.max(1);
        let mut data = Vec::with_capacity(n * c * h * w);
        let mut stats = Vec::with_capacity(n);
        for (i, (ImageId { path, root }, &t)) in req.images.iter().zip(req.targets).enumerate() {
            let score = if t < classes {
                logits.data()[i * classes + t] as f64
            } else {
                f64::NAN
            };
            let e = load(
                &self.folder,
                Path::new(path),
                Path::new(root),
                &[1, c, h, w],
                t,
                score,
            )?;
            data.extend_from_slice(e.relevance.data());
            stats.extend(e.stats);
        }
        Ok(Explanation {
            relevance: Tensor::new(vec![n, c, h, w], data)?,
            stats,
        })
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::relevance::<FileRelevance>("file", env!("CARGO_PKG_VERSION"), "Relevance maps made by another tool (Zennit, Captum, ...): one .npy per image, read from a folder."),
    ],
}

/// The candidate files for an image: its path under its input folder with `.npy`, then its stem.
pub fn candidates(folder: &Path, image: &Path, root: &Path) -> Vec<PathBuf> {
    sr_core::io::per_image_files(folder, image, root, &["npy"])
}

/// The map of one image as a `1 x C x H x W` explanation of `target` for a model whose input
/// is `input_shape` (`[1, C, H, W]`). An `H x W` map is spread equally over the `C` channels
/// (its sum and its |R| per pixel are kept up to a factor C). `target_score` is the model's
/// logit of the target.
pub fn load(
    folder: &Path,
    image: &Path,
    root: &Path,
    input_shape: &[usize],
    target: usize,
    target_score: f64,
) -> Result<Explanation> {
    let tried = candidates(folder, image, root);
    let Some(file) = tried.iter().find(|p| p.is_file()) else {
        return Err(Error::input(format!(
            "relevance.file: no map for {}: looked for {}",
            image.display(),
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        )));
    };
    let shown = file.display().to_string();
    // A map holds at most C x H x W float64 values plus its header.
    let values: u64 = input_shape.iter().map(|&d| d as u64).product();
    let limit = (values * 8 + MAP_HEADER_BYTES).min(MAX_MAP_BYTES);
    let bytes = sr_core::io::read_bounded(file, limit, "a relevance map for this model")?;
    let a = sr_core::npy::decode(&bytes, &shown)?;
    let [_, c, h, w] = input_shape else {
        return Err(Error::internal(format!(
            "model input {input_shape:?} is not [1, C, H, W]"
        )));
    };
    let (c, h, w) = (*c, *h, *w);
    let data: Vec<f32> = match a.shape[..] {
        [cc, hh, ww] | [1, cc, hh, ww] if (cc, hh, ww) == (c, h, w) => {
            a.data.iter().map(|&v| v as f32).collect()
        }
        [hh, ww] | [1, hh, ww] | [1, 1, hh, ww] if (hh, ww) == (h, w) => {
            let share = 1.0 / c as f64;
            (0..c)
                .flat_map(|_| a.data.iter().map(|&v| (v * share) as f32))
                .collect()
        }
        _ => {
            return Err(Error::input(format!(
                "{shown}: a map of shape {:?} for a model whose input is {c} x {h} x {w}",
                a.shape
            ))
            .with_help(format!(
                "save it at the model's input size: {c} x {h} x {w} (or {h} x {w}), in the same resize and crop"
            )))
        }
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "{shown}: value {} at flat index {i} is not finite",
            data[i]
        )));
    }
    let relevance_sum = data.iter().map(|&v| v as f64).sum();
    Ok(Explanation {
        relevance: Tensor::new(vec![1, c, h, w], data)?,
        stats: vec![RelevanceStats {
            target,
            relevance_sum,
            target_score,
        }],
    })
}
