//! Runs a validated pipeline over its images: in parallel, resumable, never losing finished
//! outputs (every file is written to a temporary name and renamed into place, and an image
//! counts as done only once its `result.json` exists).

use crate::spec::{Pipeline, RelevanceInput, Target};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use sr_core::preprocess;
use sr_core::{
    metrics, npy, BranchMaps, Error, Image, Model, Registry, Relevance, RenderInput, Renderer,
    Result, Saliency, Tensor,
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

#[derive(Serialize, serde::Deserialize, Debug, Clone)]
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

/// Temporary files a killed run left behind (`.<name>.tmp-<pid>`): the image is redone.
fn remove_stale_temps(dir: &Path) {
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

pub use sr_core::preprocess::load_photo;

/// A `[1,] C x H x W` relevance map summed over channels (signed), `H x W`.
fn channel_sum(r: &Tensor) -> Result<Vec<f32>> {
    let (c, h, w) = match r.shape() {
        [1, c, h, w] | [c, h, w] => (*c, *h, *w),
        s => {
            return Err(Error::input(format!(
                "relevance has shape {s:?}, expected [1, C, H, W]"
            )))
        }
    };
    Ok((0..h * w)
        .map(|i| (0..c).map(|ch| r.data()[ch * h * w + i]).sum())
        .collect())
}

/// Region perturbation of one image (`input`: `1 x C x H x W`) in `order`, scored by the
/// `target` logit, batches of 8.
fn perturb(
    model: &dyn Model,
    input: &Tensor,
    order: &[(usize, usize)],
    target: usize,
    p: &Pipeline,
) -> Result<metrics::Perturbation> {
    let s = input.shape();
    let info = model.info();
    let shape = [s[1], s[2], s[3]];
    metrics::region_perturbation(
        input.data(),
        shape,
        order,
        p.metrics.aopc_patch,
        p.metrics.aopc_steps,
        p.metrics.aopc_fill,
        (&info.mean, &info.std),
        p.metrics.seed,
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

/// An RGB image in [0, 1] as an 8-bit PNG.
fn rgb_png(img: &Image) -> Result<Vec<u8>> {
    let px: Vec<u8> = img
        .data()
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_raw(img.width as u32, img.height as u32, px)
        .ok_or_else(|| Error::internal("image buffer size"))?
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
    Ok(out.into_inner())
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
fn process(stages: &Stages, p: &Pipeline, path: &Path, dir: &Path) -> Result<ImageResult> {
    let (target, relevance_input) = (&p.target, p.relevance_input);
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
        truth: p.truth_of(path).cloned(),
        correct: None,
        selected: true,
        aopc_random: None,
        aopc_random_curve: vec![],
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
        write("input.png", &rgb_png(&crop)?, &mut outputs)?;
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
        result.correct = result
            .truth
            .as_ref()
            .map(|t| Some(t) == result.label.as_ref());
        if !p.select.keeps(result.correct) {
            // Left out by run.select: the prediction is recorded, nothing else is made.
            result.selected = false;
            result.outputs = outputs;
            result.seconds = seconds;
            let json =
                serde_json::to_vec_pretty(&result).map_err(|e| Error::internal(e.to_string()))?;
            write_atomic(&dir.join(RESULT_FILE), &json)?;
            return Ok(result);
        }
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
                let seconds_relevance = t0.elapsed().as_secs_f64();
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
                    let (aopc, aopc_curve) = if p.metrics.aopc {
                        let t1 = Instant::now();
                        let order = metrics::patches_by_relevance(
                            &channel_sum(&e.relevance)?,
                            input.shape()[2],
                            input.shape()[3],
                            p.metrics.aopc_patch,
                        );
                        let r = perturb(model.as_ref(), &input, &order, s.target, p)?;
                        timed(&format!("aopc.{name}"), t1);
                        (Some(r.aopc()), r.curve())
                    } else {
                        (None, vec![])
                    };
                    result.branches.push(BranchResult {
                        branch: name.clone(),
                        target: s.target,
                        relevance_sum: s.relevance_sum,
                        target_score: s.target_score,
                        ratio: s.relevance_sum / s.target_score,
                        ssim1: None,
                        ssim2: None,
                        ssim_ratio: None,
                        aopc,
                        aopc_curve,
                        seconds_relevance,
                        seconds_sr: None,
                    });
                }
                branches.push(BranchMaps {
                    branch: name,
                    relevance: e.relevance,
                    sr: None,
                });
            }
        }
        if p.metrics.aopc && !stages.relevance.is_empty() {
            let t1 = Instant::now();
            let order = metrics::patches_random(
                input.shape()[2],
                input.shape()[3],
                p.metrics.aopc_patch,
                p.metrics.seed,
            );
            let r = perturb(model.as_ref(), &input, &order, targets[0], p)?;
            timed("aopc.random", t1);
            result.aopc_random = Some(r.aopc());
            result.aopc_random_curve = r.curve();
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
            if let Some(br) = result.branches.iter_mut().find(|r| r.branch == b.branch) {
                br.seconds_sr = Some(t.elapsed().as_secs_f64());
                if p.metrics.ssim {
                    let rel = relevance_to_image(&b.relevance, RelevanceInput::AbsSum)?;
                    let (h, w) = (s.height, s.width);
                    let f64s = |i: &Image| i.data().iter().map(|&v| v as f64).collect::<Vec<_>>();
                    if (rel.height, rel.width) == (h, w) && (sr.height, sr.width) == (h, w) {
                        let sal = f64s(&s);
                        let s1 = metrics::ssim(&f64s(&rel), &sal, h, w);
                        let s2 = metrics::ssim(&f64s(&sr), &sal, h, w);
                        br.ssim1 = Some(s1);
                        br.ssim2 = Some(s2);
                        br.ssim_ratio = Some(s2 / s1);
                    }
                }
            }
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
            truth: result.truth.clone(),
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
                    remove_stale_temps(&dir);
                    match sr_core::catch_panic(&format!("{}", img.display()), || {
                        process(stages, p, img, &dir)
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

/// `metrics.csv`, `metrics.json` and `report.html` from every finished image's `result.json`
/// (so a resumed run reports every image, not only those it redid).
fn write_tables(p: &Pipeline, names: &[String]) -> Result<()> {
    let mut rows = vec![];
    let mut done = vec![];
    for name in names {
        let f = p.output.join(name).join(RESULT_FILE);
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let r: ImageResult = serde_json::from_slice(&bytes).map_err(|e| Error::io(&f, e))?;
        rows.push(r);
        done.push(name.clone());
    }
    crate::report::write_all(&p.output, names, &rows, &done, &p.file)?;
    Ok(())
}
