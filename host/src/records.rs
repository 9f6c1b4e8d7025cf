//! The records a run leaves: each image's `result.json` (its presence marks the image as
//! finished), the output folder names, and the atomic writes every file goes through.

use serde::{Deserialize, Serialize};
use sr_core::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Per-image record, written last: its presence marks the image as finished.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ImageResult {
    pub image: String,
    pub label: Option<String>,
    pub class_index: Option<usize>,
    /// Ground truth from `run.labels`, and whether the prediction matches it.
    #[serde(default)]
    pub truth: Option<String>,
    #[serde(default)]
    pub correct: Option<bool>,
    /// False when `run.select` left this image out after its prediction (no maps).
    #[serde(default = "yes")]
    pub selected: bool,
    /// AOPC of a random patch order (the baseline every branch's AOPC is compared with).
    #[serde(default)]
    pub aopc_random: Option<f64>,
    #[serde(default)]
    pub aopc_random_curve: Vec<f64>,
    pub branches: Vec<BranchResult>,
    pub outputs: Vec<String>,
    pub seconds: HashMap<String, f64>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BranchResult {
    pub branch: String,
    pub target: usize,
    pub relevance_sum: f64,
    pub target_score: f64,
    pub ratio: f64,
    /// SSIM(relevance map, photo saliency): the paper's SSIM1.
    #[serde(default)]
    pub ssim1: Option<f64>,
    /// SSIM(SR map, photo saliency): SSIM2.
    #[serde(default)]
    pub ssim2: Option<f64>,
    /// SSIM2 / SSIM1 (Table 1).
    #[serde(default)]
    pub ssim_ratio: Option<f64>,
    /// Region perturbation, most relevant first: AOPC and its curve.
    #[serde(default)]
    pub aopc: Option<f64>,
    #[serde(default)]
    pub aopc_curve: Vec<f64>,
    #[serde(default)]
    pub seconds_relevance: f64,
    #[serde(default)]
    pub seconds_sr: Option<f64>,
}

pub const RESULT_FILE: &str = "result.json";

/// Write `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Temporary files a killed run left behind (`.<name>.tmp-<pid>`): the image is redone.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with('.') && n.contains(".tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Output folder names: the file stem, or stem and extension when two images share a stem.
pub fn output_names(images: &[PathBuf]) -> Vec<String> {
    let stem = |p: &PathBuf| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("image")
            .to_string()
    };
    let mut count: HashMap<String, usize> = HashMap::new();
    for p in images {
        *count.entry(stem(p)).or_default() += 1;
    }
    images
        .iter()
        .map(|p| {
            let s = stem(p);
            if count[&s] > 1 {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                format!("{s}_{ext}")
            } else {
                s
            }
        })
        .collect()
}

/// An image's `result.json` in `dir`, if it is finished (`None`: not there).
pub fn read_result(dir: &Path) -> Result<Option<ImageResult>> {
    let f = dir.join(RESULT_FILE);
    let Ok(bytes) = std::fs::read(&f) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::io(&f, e))
}

/// Write an image's `result.json` into `dir`, last: it marks the image as finished.
pub fn write_result(dir: &Path, result: &ImageResult) -> Result<()> {
    let json = serde_json::to_vec_pretty(result).map_err(|e| Error::internal(e.to_string()))?;
    write_atomic(&dir.join(RESULT_FILE), &json)
}
