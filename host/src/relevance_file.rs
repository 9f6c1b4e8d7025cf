//! `relevance.file`: relevance maps made elsewhere (Zennit, Captum, iNNvestigate, a GPU run),
//! one `.npy` per image, fed to the SR map, SSIM, AOPC and the report as if srhost had made them.
//!
//! The stage is registered like any other (so `srhost check` and `srhost plugins` know its
//! keys), but a map belongs to an image, not to a tensor: the runner reads it in
//! [`crate::process`], by the image's path, through [`load`].

use serde::{Deserialize, Serialize};
use sr_core::stage::{Params, RelevanceStage, StageDef};
use sr_core::{Error, Explanation, Model, Relevance, RelevanceStats, Result, Tensor};
use std::path::{Path, PathBuf};

/// The stage's name in a pipeline: `use = "file"`.
pub const NAME: &str = "file";

/// The largest map file read (bytes): 64 channels of 4096 x 4096 float64, well above any CNN
/// input, checked before the file is read.
pub const MAX_MAP_BYTES: u64 = 64 * 4096 * 4096 * 8;

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

/// The registered stage. Called on a bare tensor (outside a pipeline) it says why it cannot.
pub struct FileRelevance;

impl Relevance for FileRelevance {
    fn explain(&self, _: &dyn Model, _: &Tensor, _: &[usize]) -> Result<Explanation> {
        Err(Error::unsupported(
            "relevance.file reads one map per image, found by the image's path: it runs inside a pipeline (srhost run, Python's srhost.run), not on a bare tensor",
        )
        .with_help("from Python, pass the map itself to srhost.sr_map or srhost.aopc"))
    }
}

impl RelevanceStage for FileRelevance {
    type Params = FileParams;
    fn build(p: FileParams) -> Result<Self> {
        if p.folder.trim().is_empty() {
            return Err(Error::params(
                "`folder`: give the folder that holds one .npy relevance map per image",
            ));
        }
        Ok(FileRelevance)
    }
}

sr_core::export_plugin! {
    name: "srhost",
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::relevance::<FileRelevance>(NAME, env!("CARGO_PKG_VERSION"), "Relevance maps made by another tool (Zennit, Captum, ...): one .npy per image, read from a folder."),
    ],
}

/// The candidate files for an image: its path under its input folder with `.npy`, then its stem.
pub fn candidates(folder: &Path, image: &Path, root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rel) = image.strip_prefix(root) {
        if !rel.as_os_str().is_empty() {
            out.push(folder.join(rel).with_extension("npy"));
        }
    }
    if let Some(stem) = image.file_stem() {
        let p = folder.join(stem).with_extension("npy");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
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
    let len = std::fs::metadata(file)
        .map_err(|e| Error::io(file, e))?
        .len();
    if len > MAX_MAP_BYTES {
        return Err(Error::input(format!(
            "{shown}: {len} bytes is more than a relevance map can be ({MAX_MAP_BYTES})"
        )));
    }
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
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
