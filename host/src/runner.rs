//! Runs a validated pipeline over its images: in parallel, resumable, never losing finished
//! outputs (every file is written to a temporary name and renamed into place, and an image
//! counts as done only once its `result.json` exists).

use crate::spec::{Pipeline, RelevanceInput, Target};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use sr_core::preprocess;
use sr_core::{
    npy, BranchMaps, Error, Image, Model, Registry, Relevance, RenderInput, Renderer, Result,
    Saliency, Tensor,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The stages of a pipeline, built once and shared by every image.
pub struct Stages {
    pub model: Option<Box<dyn Model>>,
    pub relevance: Vec<(String, Box<dyn Relevance>)>,
    pub saliency: Option<Box<dyn Saliency>>,
    pub renderers: Vec<(String, Box<dyn Renderer>)>,
}

/// Build every stage of `p` (loading the model is the heavy part).
pub fn build_stages(p: &Pipeline, reg: &Registry) -> Result<Stages> {
    let model = match &p.model {
        Some(s) => Some(
            reg.create_model(&s.name, &s.params_toml)
                .map_err(|e| e.context(format!("[{}]", s.table)))?,
        ),
        None => None,
    };
    let relevance = p
        .relevance
        .iter()
        .map(|(b, s)| {
            reg.create_relevance(&s.name, &s.params_toml)
                .map(|r| (b.clone(), r))
                .map_err(|e| e.context(format!("[{}]", s.table)))
        })
        .collect::<Result<_>>()?;
    let saliency = match &p.saliency {
        Some(s) => Some(
            reg.create_saliency(&s.name, &s.params_toml)
                .map_err(|e| e.context(format!("[{}]", s.table)))?,
        ),
        None => None,
    };
    let renderers = p
        .renderers
        .iter()
        .map(|s| {
            reg.create_renderer(&s.name, &s.params_toml)
                .map(|r| (s.name.clone(), r))
                .map_err(|e| e.context(format!("[{}]", s.table)))
        })
        .collect::<Result<_>>()?;
    Ok(Stages {
        model,
        relevance,
        saliency,
        renderers,
    })
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Worker threads; 0 uses every core.
    pub jobs: usize,
    /// Redo images whose outputs already exist.
    pub force: bool,
}

/// What happened to the images of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub done: usize,
    pub skipped: usize,
    pub failed: Vec<(PathBuf, Error)>,
}

/// Per-image record, written last: its presence marks the image as finished.
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct ImageResult {
    pub image: String,
    pub label: Option<String>,
    pub class_index: Option<usize>,
    pub branches: Vec<BranchResult>,
    pub outputs: Vec<String>,
    pub seconds: HashMap<String, f64>,
}

#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct BranchResult {
    pub branch: String,
    pub target: usize,
    pub relevance_sum: f64,
    pub target_score: f64,
    pub ratio: f64,
}

const RESULT_FILE: &str = "result.json";

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

pub use sr_core::preprocess::load_photo;

/// A relevance map (`[1,] C x H x W`) as the saliency stage's input image:
/// `abs-rgb` (per channel |R|, one min-max over all channels, `H x W x C`), `abs-sum` (sum of
/// |R| over channels) or `positive` (sum of max(R, 0)), both min-maxed, `H x W x 1`.
pub fn relevance_to_image(r: &Tensor, how: RelevanceInput) -> Result<Image> {
    let (c, h, w) = match r.shape() {
        [1, c, h, w] | [c, h, w] => (*c, *h, *w),
        s => {
            return Err(Error::input(format!(
                "relevance has shape {s:?}, expected [1, C, H, W]"
            )))
        }
    };
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

/// The classes to explain for one image.
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

/// A one-channel map in [0, 1] as an 8-bit grey PNG.
pub fn map_png(map: &Image) -> Result<Vec<u8>> {
    let px: Vec<u8> = (0..map.width * map.height)
        .map(|i| (map.data()[i * map.channels].clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_raw(map.width as u32, map.height as u32, px)
        .ok_or_else(|| Error::internal("map buffer size"))?
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
    Ok(out.into_inner())
}

fn check_map(map: &Image, what: &str) -> Result<()> {
    if map.channels != 1 {
        return Err(Error::input(format!(
            "{what}: a saliency map must have 1 channel, got {}",
            map.channels
        )));
    }
    if let Some(v) = map.data().iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(Error::input(format!(
            "{what}: saliency values must lie in [0, 1], found {v}"
        )));
    }
    Ok(())
}

/// Process one image into `dir`.
fn process(
    stages: &Stages,
    path: &Path,
    dir: &Path,
    target: &Target,
    relevance_input: RelevanceInput,
) -> Result<ImageResult> {
    let mut seconds = HashMap::new();
    let mut timed = |name: &str, t: Instant| {
        seconds.insert(name.to_string(), t.elapsed().as_secs_f64());
    };
    let mut outputs = vec![];
    let write = |name: &str, bytes: &[u8], outputs: &mut Vec<String>| -> Result<()> {
        write_atomic(&dir.join(name), bytes)?;
        outputs.push(name.to_string());
        Ok(())
    };
    let t = Instant::now();
    let rgb = load_photo(path)?;
    let photo = preprocess::to_image(&rgb)?;
    timed("decode", t);
    let mut result = ImageResult {
        image: path.display().to_string(),
        label: None,
        class_index: None,
        branches: vec![],
        outputs: vec![],
        seconds: HashMap::new(),
    };
    let mut branches = vec![];
    let mut model_input = None;
    if let Some(model) = &stages.model {
        let info = model.info();
        let t = Instant::now();
        let (input, crop) = preprocess::preprocess(&rgb, &info)?;
        let crop = preprocess::to_image(&crop)?;
        let logits = model.forward(&input)?;
        timed("forward", t);
        let top = logits
            .data()
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .ok_or_else(|| Error::input("the model returned no logits"))?;
        result.class_index = Some(top);
        result.label = Some(
            info.labels
                .get(top)
                .cloned()
                .unwrap_or_else(|| format!("class {top}")),
        );
        let targets = resolve_targets(target, logits.data(), &info.labels)?;
        for &t in &targets {
            // One target: `relevance-<branch>`; several: `relevance-<branch>-<class>`.
            let suffix = if targets.len() > 1 {
                format!("-{t}")
            } else {
                String::new()
            };
            for (branch, rel) in &stages.relevance {
                let name = format!("{branch}{suffix}");
                let t0 = Instant::now();
                let e = rel
                    .explain(model.as_ref(), &input, &[t])
                    .map_err(|e| e.context(format!("relevance.{branch}")))?;
                timed(&format!("relevance.{name}"), t0);
                let r = e.relevance.reshape(e.relevance.shape()[1..].to_vec())?;
                write(
                    &format!("relevance-{name}.npy"),
                    &npy::encode_f32(r.shape(), r.data()),
                    &mut outputs,
                )?;
                write(
                    &format!("relevance-{name}.png"),
                    &sr_render_basic::heatmap_png(&r, sr_render_basic::Colormap::Bwr, 100.0)?,
                    &mut outputs,
                )?;
                if let Some(s) = e.stats.first() {
                    result.branches.push(BranchResult {
                        branch: name.clone(),
                        target: s.target,
                        relevance_sum: s.relevance_sum,
                        target_score: s.target_score,
                        ratio: s.relevance_sum / s.target_score,
                    });
                }
                branches.push(BranchMaps {
                    branch: name,
                    relevance: e.relevance,
                    sr: None,
                });
            }
        }
        model_input = Some(crop);
    }
    let mut photo_saliency = None;
    if let Some(sal) = &stages.saliency {
        let t = Instant::now();
        let base = model_input.as_ref().unwrap_or(&photo);
        let s = sal
            .saliency(base)
            .map_err(|e| e.context("saliency of the photo"))?;
        check_map(&s, "saliency of the photo")?;
        timed("saliency.photo", t);
        write(
            "saliency-photo.npy",
            &npy::encode_f32(&[s.height, s.width], s.data()),
            &mut outputs,
        )?;
        write("saliency-photo.png", &map_png(&s)?, &mut outputs)?;
        for b in &mut branches {
            let t = Instant::now();
            let sr = sal
                .saliency(&relevance_to_image(&b.relevance, relevance_input)?)
                .map_err(|e| e.context(format!("SR map of {}", b.branch)))?;
            check_map(&sr, &format!("SR map of {}", b.branch))?;
            timed(&format!("saliency.{}", b.branch), t);
            write(
                &format!("sr-{}.npy", b.branch),
                &npy::encode_f32(&[sr.height, sr.width], sr.data()),
                &mut outputs,
            )?;
            write(
                &format!("sr-{}.png", b.branch),
                &map_png(&sr)?,
                &mut outputs,
            )?;
            b.sr = Some(sr);
        }
        photo_saliency = Some(s);
    }
    if !stages.renderers.is_empty() {
        let input = RenderInput {
            image_name: dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string(),
            photo,
            model_input,
            label: result.label.clone().unwrap_or_default(),
            branches,
            photo_saliency,
        };
        for (name, r) in &stages.renderers {
            let t = Instant::now();
            for a in r
                .render(&input)
                .map_err(|e| e.context(format!("renderer `{name}`")))?
            {
                let rel = Path::new(&a.name);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(Error::input(format!(
                        "renderer `{name}` produced `{}`, which is not a plain relative file name",
                        a.name
                    )));
                }
                write(&a.name, &a.bytes, &mut outputs)?;
            }
            timed(&format!("render.{name}"), t);
        }
    }
    result.outputs = outputs;
    result.seconds = seconds;
    let json = serde_json::to_vec_pretty(&result).map_err(|e| Error::internal(e.to_string()))?;
    write_atomic(&dir.join(RESULT_FILE), &json)?;
    Ok(result)
}

/// Run every image of `p` through `stages`, writing into `p.output`.
pub fn run(p: &Pipeline, stages: &Stages, opts: RunOptions) -> Result<Summary> {
    std::fs::create_dir_all(&p.output).map_err(|e| Error::io(&p.output, e))?;
    let names = output_names(&p.images);
    let pb = ProgressBar::new(p.images.len() as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .build()
        .map_err(|e| Error::internal(format!("cannot start {} worker threads: {e}", opts.jobs)))?;
    enum Outcome {
        Done,
        Skipped,
        Failed(Error),
    }
    let outcomes: Vec<Outcome> = pool.install(|| {
        p.images
            .par_iter()
            .zip(names.par_iter())
            .map(|(img, name)| {
                let dir = p.output.join(name);
                let marker = dir.join(RESULT_FILE);
                let outcome = if marker.is_file() && !opts.force {
                    Outcome::Skipped
                } else {
                    if marker.is_file() {
                        let _ = std::fs::remove_file(&marker);
                    }
                    match sr_core::catch_panic(&format!("{}", img.display()), || {
                        process(stages, img, &dir, &p.target, p.relevance_input)
                    }) {
                        Ok(_) => Outcome::Done,
                        Err(e) => {
                            pb.suspend(|| eprintln!("error: {}: {e}", img.display()));
                            Outcome::Failed(e)
                        }
                    }
                };
                pb.inc(1);
                outcome
            })
            .collect()
    });
    pb.finish_and_clear();
    let mut s = Summary::default();
    for (o, img) in outcomes.into_iter().zip(&p.images) {
        match o {
            Outcome::Done => s.done += 1,
            Outcome::Skipped => s.skipped += 1,
            Outcome::Failed(e) => s.failed.push((img.clone(), e)),
        }
    }
    write_tables(p, &names)?;
    Ok(s)
}

/// `metrics.csv` and `metrics.json` from every finished image's `result.json` (so a resumed run
/// reports every image, not only those it redid).
fn write_tables(p: &Pipeline, names: &[String]) -> Result<()> {
    let mut rows = vec![];
    for name in names {
        let f = p.output.join(name).join(RESULT_FILE);
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let r: ImageResult = serde_json::from_slice(&bytes).map_err(|e| Error::io(&f, e))?;
        rows.push(r);
    }
    let mut csv = String::from("image,label,branch,target,relevance_sum,target_score,ratio\n");
    for r in &rows {
        for b in &r.branches {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                csv_field(&r.image),
                csv_field(r.label.as_deref().unwrap_or("")),
                csv_field(&b.branch),
                b.target,
                b.relevance_sum,
                b.target_score,
                b.ratio
            ));
        }
    }
    write_atomic(&p.output.join("metrics.csv"), csv.as_bytes())?;
    let json = serde_json::to_vec_pretty(&rows).map_err(|e| Error::internal(e.to_string()))?;
    write_atomic(&p.output.join("metrics.json"), &json)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
