//! One image through a pipeline, in named steps: [`Job::classify`] (preprocess, forward, top-1),
//! [`Job::explain`] (every relevance branch), [`Job::saliency`] (the photo's map and each
//! branch's SR map), [`Job::metrics`] (SSIM and AOPC) and [`Job::render`]; [`process`] runs them in
//! that order. Every stage call runs under `catch_panic`, so a stage that panics fails its image
//! with an error naming the stage. Every output is checked against the stage contracts
//! ([`sr_core::contract`]) before it is written, and written atomically; `result.json` comes
//! last.

use crate::dataset::{Entry, Truth};
use crate::records::{self, BranchResult, ImageResult, RandomizationResult};
use crate::spec::Pipeline;
use crate::stages::Stages;
use sr_core::sr::{channel_sum, perturb, relevance_to_image, resolve_targets, RelevanceInput};
use sr_core::{catch_panic, ImageId, Request, Result, Tensor};
use sr_core::{contract, metrics, npy, preprocess, BranchMaps, Error, Image, RenderInput};
use std::path::Path;
use std::time::Instant;

/// The most pixels of the photo handed to renderers (see `Job::render_photo`).
pub const MAX_RENDER_PIXELS: usize = 4 << 20;

/// One image's state between the steps.
struct Job<'a> {
    stages: &'a Stages,
    p: &'a Pipeline,
    dir: &'a Path,
    /// The photo as an `H x W x 3` float image, made from `rgb` when a step needs it (the
    /// saliency without a model, the renderers): for a 50-megapixel photo it is 600 MB, so it
    /// is not made for nothing, and the 8-bit pixels are dropped once it exists.
    photo: Option<Image>,
    rgb: preprocess::Rgb8,
    /// The photo's size as decoded, `(width, height)`.
    photo_size: (usize, usize),
    result: ImageResult,
    outputs: Vec<String>,
    /// Each output's size, as written.
    sizes: Vec<u64>,
    seconds: std::collections::BTreeMap<String, f64>,
    /// The model's input: the normalised tensor and the crop as an image.
    input: Option<(Tensor, Image)>,
    /// The explained classes.
    targets: Vec<usize>,
    branches: Vec<BranchMaps>,
    photo_saliency: Option<Image>,
    /// The ground truth, as `run.labels` gives it (resolved against the model's labels when
    /// there is a model).
    truth: Option<Truth>,
    /// The image's path and the folder it was found under (a relevance method that reads
    /// something per image finds it by them).
    id: ImageId,
    /// The model's logits for the image, `1 x classes`.
    logits: Option<Tensor>,
}

/// What a step decided about the rest of the image.
enum Next {
    Go,
    /// Left out by `run.select`: only the prediction is recorded.
    Stop,
}

/// Process one image into `dir`: every step, then `result.json` with `fingerprint`.
pub fn process(
    stages: &Stages,
    p: &Pipeline,
    entry: &Entry,
    dir: &Path,
    fingerprint: &str,
) -> Result<ImageResult> {
    let mut job = Job::decode(stages, p, entry, dir)?;
    job.result.fingerprint = fingerprint.to_string();
    if let Next::Go = job.classify()? {
        job.explain()?;
        job.saliency()?;
        job.metrics()?;
        job.fixations(entry)?;
        job.insertion_deletion()?;
        job.randomization()?;
        job.render()?;
    }
    job.finish()
}

impl<'a> Job<'a> {
    fn time(&mut self, name: &str, t: Instant) {
        self.seconds
            .insert(name.to_string(), t.elapsed().as_secs_f64());
    }

    /// The photo as a float image, made once, the 8-bit pixels dropped (classify has used
    /// them by then).
    fn photo(&mut self) -> Result<Image> {
        if self.photo.is_none() {
            let rgb = std::mem::replace(
                &mut self.rgb,
                preprocess::Rgb8 {
                    width: 0,
                    height: 0,
                    data: vec![],
                },
            );
            self.photo = Some(preprocess::to_image(&rgb)?);
        }
        self.photo
            .clone()
            .ok_or_else(|| Error::internal("the photo was not made"))
    }

    /// The photo as the renderers get it: the float photo when a step made one already (no
    /// model), else made from the 8-bit pixels at most [`MAX_RENDER_PIXELS`] (resized with the
    /// same antialiased filter as the model's input when it is larger: the built-in renderers
    /// draw the model's input when there is one, and a 50-megapixel photo as floats is 600 MB).
    fn render_photo(&mut self) -> Result<Image> {
        if let Some(p) = &self.photo {
            return Ok(p.clone());
        }
        let (w, h) = (self.rgb.width, self.rgb.height);
        let pixels = (w * h) as f64;
        if pixels <= MAX_RENDER_PIXELS as f64 {
            return self.photo();
        }
        let f = (MAX_RENDER_PIXELS as f64 / pixels).sqrt();
        let (rw, rh) = (
            ((w as f64 * f) as usize).max(1),
            ((h as f64 * f) as usize).max(1),
        );
        preprocess::to_image(&preprocess::resize_bilinear(&self.rgb, rw, rh))
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = match name.rsplit_once('/') {
            // A renderer's file in a subfolder: made as the image folder is, no link followed.
            Some((sub, file)) => records::image_dir(self.dir, sub)?.join(file),
            None => self.dir.join(name),
        };
        records::write_atomic(&path, bytes)?;
        self.outputs.push(name.to_string());
        self.sizes.push(bytes.len() as u64);
        Ok(())
    }

    /// Decode the photo.
    fn decode(stages: &'a Stages, p: &'a Pipeline, entry: &Entry, dir: &'a Path) -> Result<Self> {
        let path = entry.path.as_path();
        let t = Instant::now();
        let rgb = preprocess::load_photo_limited(path, &p.photo_limits)?;
        let mut job = Job {
            stages,
            p,
            dir,
            photo: None,
            photo_size: (rgb.width, rgb.height),
            rgb,
            result: ImageResult {
                image: path.display().to_string(),
                fingerprint: String::new(),
                label: None,
                class_index: None,
                truth: None,
                truth_index: None,
                correct: None,
                selected: true,
                aopc_random: None,
                aopc_random_curve: vec![],
                fixations: None,
                branches: vec![],
                outputs: vec![],
                sizes: vec![],
                seconds: Default::default(),
            },
            outputs: vec![],
            sizes: vec![],
            seconds: Default::default(),
            input: None,
            targets: vec![],
            branches: vec![],
            photo_saliency: None,
            truth: p
                .labels
                .of(path, &entry.root)
                .map_err(|m| Error::input(format!("`run.labels`: {m}")))?,
            id: ImageId {
                path: path.display().to_string(),
                root: entry.root.display().to_string(),
            },
            logits: None,
        };
        if let Some(t) = &job.truth {
            job.result.truth = Some(match t {
                Truth::Index(i) => i.to_string(),
                Truth::Wnid(w) | Truth::Name(w) => w.clone(),
            });
        }
        job.time("decode", t);
        Ok(job)
    }

    /// Preprocess as the model declares, run it, record the top-1 class and decide (by
    /// `run.select`) whether the image goes on.
    fn classify(&mut self) -> Result<Next> {
        let Some(model) = &self.stages.model else {
            return Ok(Next::Go);
        };
        let info = model.info();
        let t = Instant::now();
        let (input, crop) = preprocess::preprocess(&self.rgb, &info)?;
        let crop = preprocess::to_image(&crop)?;
        self.write("input.png", &rgb_png(&crop)?)?;
        let logits = catch_panic("the model", || model.forward(&input))?;
        contract::logits(&logits, 1, "the model")?;
        self.time("forward", t);
        let top = logits
            .data()
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .ok_or_else(|| Error::input("the model returned no logits"))?;
        let r = &mut self.result;
        r.class_index = Some(top);
        let label = info
            .labels
            .get(top)
            .cloned()
            .unwrap_or_else(|| format!("class {top}"));
        if let Some(t) = &self.truth {
            let (index, name) = t
                .resolve(&info.labels)
                .map_err(|m| Error::input(format!("`run.labels`: {m}")))?;
            r.correct = Some(match index {
                Some(i) => i == top,
                None => name == label,
            });
            r.truth = Some(name);
            r.truth_index = index;
        }
        r.label = Some(label);
        if !self.p.select.keeps(r.correct) {
            r.selected = false;
            return Ok(Next::Stop);
        }
        self.targets = resolve_targets(&self.p.target, logits.data(), &info.labels)?;
        self.logits = Some(logits);
        self.input = Some((input, crop));
        Ok(Next::Go)
    }

    /// Every relevance branch for every target: the maps (`relevance-<name>.npy`) and their
    /// statistics.
    fn explain(&mut self) -> Result<()> {
        let Some((input, _)) = &self.input else {
            return Ok(());
        };
        let input = input.clone();
        let logits = self.logits.clone();
        let images = [self.id.clone()];
        for &t in &self.targets.clone() {
            // One target: `relevance-<branch>`; several: `relevance-<branch>-<class>`.
            let suffix = if self.targets.len() > 1 {
                format!("-{t}")
            } else {
                String::new()
            };
            for (branch, explainer) in &self.stages.relevance {
                let name = format!("{branch}{suffix}");
                let t0 = Instant::now();
                let what = format!("relevance.{branch}");
                let e = catch_panic("the relevance method", || {
                    explainer.explain(&Request {
                        input: &input,
                        targets: &[t],
                        logits: logits.as_ref(),
                        images: &images,
                    })
                })
                .map_err(|e| e.context(&what))?;
                contract::explanation(&e, input.shape(), &[t], &what)?;
                let seconds_relevance = t0.elapsed().as_secs_f64();
                self.time(&format!("relevance.{name}"), t0);
                let r = e.relevance.reshape(e.relevance.shape()[1..].to_vec())?;
                self.write(
                    &format!("relevance-{name}.npy"),
                    &npy::encode_f32(r.shape(), r.data()),
                )?;
                let s = &e.stats[0];
                self.result.branches.push(BranchResult {
                    branch: name.clone(),
                    target: s.target,
                    relevance_sum: s.relevance_sum,
                    target_score: s.target_score,
                    ratio: s.relevance_sum / s.target_score,
                    seconds_relevance,
                    ..Default::default()
                });
                self.branches.push(BranchMaps {
                    branch: name,
                    relevance: e.relevance,
                    sr: None,
                });
            }
        }
        Ok(())
    }

    /// The photo's saliency (on the model's input crop when there is a model) and every
    /// branch's SR map: the saliency of its relevance map.
    fn saliency(&mut self) -> Result<()> {
        let Some(sal) = &self.stages.saliency else {
            return Ok(());
        };
        let t = Instant::now();
        if self.input.is_none() {
            self.photo()?;
        }
        let base = match (&self.input, &self.photo) {
            (Some((_, crop)), _) => crop,
            (None, Some(photo)) => photo,
            (None, None) => return Err(Error::internal("the photo was not made")),
        };
        let what = "saliency of the photo";
        let s = catch_panic("the saliency stage", || sal.saliency(base))
            .map_err(|e| e.context(what))?;
        contract::saliency_of(&s, base, what)?;
        self.time("saliency.photo", t);
        self.write(
            "saliency-photo.npy",
            &npy::encode_f32(&[s.height, s.width], s.data()),
        )?;
        self.write("saliency-photo.png", &map_png(&s)?)?;
        self.photo_saliency = Some(s);
        for i in 0..self.branches.len() {
            let t = Instant::now();
            let name = self.branches[i].branch.clone();
            let what = format!("SR map of {name}");
            let map = relevance_to_image(&self.branches[i].relevance, self.p.relevance_input)?;
            let sr = catch_panic("the saliency stage", || sal.saliency(&map))
                .map_err(|e| e.context(&what))?;
            contract::saliency_of(&sr, &map, &what)?;
            if let Some(br) = self.result.branch_mut(&name) {
                br.seconds_sr = Some(t.elapsed().as_secs_f64());
            }
            self.time(&format!("saliency.{name}"), t);
            self.write(
                &format!("sr-{name}.npy"),
                &npy::encode_f32(&[sr.height, sr.width], sr.data()),
            )?;
            self.write(&format!("sr-{name}.png"), &map_png(&sr)?)?;
            self.branches[i].sr = Some(sr);
        }
        Ok(())
    }

    /// `[metrics] randomization`: each branch's maps under models whose learned layers are
    /// randomized step by step, against the trained model's (Adebayo et al. 2018).
    fn randomization(&mut self) -> Result<()> {
        use crate::randomization::{abs_image, entropy_rise, Params, Passes, Plane, Steps};
        use crate::spec::Randomization;
        let m = self.p.metrics.clone();
        let (Some(model), Some((input, _))) = (&self.stages.model, &self.input) else {
            return Ok(());
        };
        if m.randomization == Randomization::None || self.branches.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let params = Params {
            order: m.randomization,
            steps: m.randomization_steps,
            seed: m.seed,
            samples: m.randomization_samples.max(1),
            noise: m.randomization_noise,
        };
        let steps = Steps::of(model.as_ref(), params)?;
        let images = [self.id.clone()];
        let passes = Passes::new(input, &images, &params);
        // What every step compares against, per branch, once: its method (the branch's name
        // before a per-target suffix), target, trained |R| image (smoothed for the smooth
        // MPRT, else the branch's own) and trained SR map.
        struct Trained<'m> {
            name: &'m str,
            method: &'m dyn sr_core::Relevance,
            target: usize,
            abs: Plane,
            smoothed: Option<Plane>,
            sr: Option<Plane>,
        }
        let mut trained: Vec<Option<Trained>> = vec![];
        for b in &self.branches {
            let row = self.result.branch(&b.branch);
            let method = self
                .stages
                .methods
                .iter()
                .filter(|(n, _)| b.branch == *n || b.branch.starts_with(&format!("{n}-")))
                .max_by_key(|(n, _)| n.len());
            trained.push(match (row, method) {
                (Some(row), Some((name, method))) => {
                    let smoothed = if params.samples > 1 {
                        let what = format!("relevance.{name}, the smooth MPRT's trained map");
                        let ex = method.bind(model.clone()).map_err(|e| e.context(&what))?;
                        passes.explain(ex.as_ref(), row.target, &what)?.1
                    } else {
                        None
                    };
                    Some(Trained {
                        name,
                        method: method.as_ref(),
                        target: row.target,
                        abs: abs_image(&b.relevance)?,
                        smoothed,
                        sr: b.sr.as_ref().map(|s| (f64s(s), s.height, s.width)),
                    })
                }
                _ => None,
            });
        }
        let photo = self
            .photo_saliency
            .as_ref()
            .map(|s| (f64s(s), s.height, s.width));
        let mut results: Vec<RandomizationResult> = self
            .branches
            .iter()
            .map(|_| RandomizationResult {
                order: format!("{:?}", m.randomization).to_lowercase(),
                seed: m.seed,
                samples: params.samples,
                noise: if params.samples > 1 {
                    params.noise
                } else {
                    0.0
                },
                steps: steps.names(),
                ..Default::default()
            })
            .collect();
        for k in 0..steps.len() {
            let rm = steps.model(k)?;
            let what = format!("randomization step {} of {}", k + 1, steps.len());
            let last = steps.is_full(k);
            for ((b, t), res) in self.branches.iter().zip(&trained).zip(&mut results) {
                let Some(t) = t else {
                    continue;
                };
                let what = format!("relevance.{}, {what}", t.name);
                let ex = t.method.bind(rm.clone()).map_err(|e| e.context(&what))?;
                let (relevance, smoothed) = passes.explain(ex.as_ref(), t.target, &what)?;
                let ((a, h, w), (r, _, _)) = (&t.abs, abs_image(&relevance)?);
                let (ta, ra) = match (&t.smoothed, &smoothed) {
                    (Some((ta, _, _)), Some((sa, _, _))) => (ta, sa),
                    _ => (a, &r),
                };
                res.ssim_relevance.push(metrics::ssim(ta, ra, *h, *w));
                res.spearman.push(metrics::saliency::spearman(ta, ra));
                if last {
                    res.emprt = entropy_rise(a, &r);
                }
                let (Some(sal), Some((sr, sh, sw))) = (&self.stages.saliency, &t.sr) else {
                    continue;
                };
                let map = relevance_to_image(&relevance, self.p.relevance_input)?;
                let rsr = catch_panic("the saliency stage", || sal.saliency(&map))
                    .map_err(|e| e.context(format!("SR map of {}, {what}", b.branch)))?;
                contract::saliency_of(&rsr, &map, &what)?;
                if (rsr.height, rsr.width) != (*sh, *sw) {
                    continue;
                }
                let rsr = f64s(&rsr);
                res.ssim_sr.push(metrics::ssim(sr, &rsr, *sh, *sw));
                if last {
                    res.emprt_sr = entropy_rise(sr, &rsr);
                }
                if let (true, Some((ps, ph, pw))) = (last, &photo) {
                    if (*ph, *pw) == (*h, *w) && (*sh, *sw) == (*h, *w) {
                        let (s1, s2) = (
                            metrics::ssim(&r, ps, *h, *w),
                            metrics::ssim(&rsr, ps, *h, *w),
                        );
                        (res.ssim1, res.ssim2, res.ssim_ratio) =
                            (Some(s1), Some(s2), Some(s2 / s1));
                    }
                }
            }
        }
        for (b, res) in self.branches.iter().zip(results) {
            if let Some(row) = self.result.branch_mut(&b.branch) {
                row.randomization = Some(res);
            }
        }
        self.time("randomization", t0);
        Ok(())
    }

    /// `run.fixations`: NSS, AUC-Judd, AUC-Borji and the shuffled AUC of the photo's saliency,
    /// each branch's |R| image and its SR map against the image's fixations, at the model's
    /// input (the photo's size without a model).
    fn fixations(&mut self, entry: &Entry) -> Result<()> {
        use crate::fixations as fx;
        use metrics::saliency::{auc_borji, auc_judd, auc_shuffled, nss};
        let Some(folder) = &self.p.fixations else {
            return Ok(());
        };
        let t0 = Instant::now();
        let file = fx::find(folder, &entry.path, &entry.root)?;
        let own = fx::load(&file, self.photo_size, &self.p.photo_limits)?;
        let crop = |size: (usize, usize)| -> Result<preprocess::Crop> {
            match &self.stages.model {
                Some(m) => preprocess::crop_of(size.0, size.1, &m.info()),
                None => Ok(preprocess::Crop {
                    resized: size,
                    left: 0,
                    top: 0,
                    size,
                }),
            }
        };
        let frame = crop(self.photo_size)?;
        let points = fx::to_input(&own.points, own.size, &frame);
        // The shuffled AUC's negatives: the next images' fixations, each placed by its
        // position in its own photo, then cropped as this photo is.
        let mut others = vec![];
        let n = self.p.entries.len();
        if let Some(i) = self.p.entries.iter().position(|e| e.path == entry.path) {
            for k in 1..=fx::SHUFFLED_NEIGHBOURS.min(n.saturating_sub(1)) {
                let e = &self.p.entries[(i + k) % n];
                let what = format!("the shuffled AUC's negatives from {}", e.path.display());
                let file = fx::find(folder, &e.path, &e.root).map_err(|e| e.context(&what))?;
                let size = preprocess::photo_size(&e.path).map_err(|e| e.context(&what))?;
                let theirs =
                    fx::load(&file, size, &self.p.photo_limits).map_err(|e| e.context(&what))?;
                let placed: Vec<(usize, usize)> = theirs
                    .points
                    .iter()
                    .map(|&(x, y)| {
                        let f = |v: usize, from: usize, to: usize| {
                            (((v as f64 + 0.5) * to as f64 / from as f64) as usize).min(to - 1)
                        };
                        (
                            f(x, size.0, self.photo_size.0),
                            f(y, size.1, self.photo_size.1),
                        )
                    })
                    .collect();
                others.extend(fx::to_input(&placed, self.photo_size, &frame));
            }
        }
        let (w, h) = frame.size;
        let score = |map: &[f64]| -> [Option<f64>; 4] {
            let ok = |v: f64| v.is_finite().then_some(v);
            if points.is_empty() {
                return [None; 4];
            }
            [
                ok(nss(map, w, &points)),
                ok(auc_judd(map, w, &points)),
                ok(auc_borji(map, w, &points)),
                (!others.is_empty())
                    .then(|| ok(auc_shuffled(map, w, &points, &others)))
                    .flatten(),
            ]
        };
        let at_frame = |im: &Image| (im.height, im.width) == (h, w);
        let photo = self
            .photo_saliency
            .as_ref()
            .filter(|s| at_frame(s))
            .map(|s| score(&f64s(s)));
        let [nss_p, judd_p, borji_p, sauc_p] = photo.unwrap_or([None; 4]);
        self.result.fixations = Some(crate::records::FixationRecord {
            file: own.file.display().to_string(),
            sha256: own.sha256.clone(),
            points: points.len(),
            cropped: own.points.len() - points.len(),
            shuffled_negatives: others.len(),
            nss: nss_p,
            auc_judd: judd_p,
            auc_borji: borji_p,
            sauc: sauc_p,
        });
        for b in &self.branches {
            let rel = relevance_to_image(&b.relevance, RelevanceInput::AbsSum)?;
            let s1 = at_frame(&rel).then(|| score(&f64s(&rel)));
            let s2 =
                b.sr.as_ref()
                    .filter(|s| at_frame(s))
                    .map(|s| score(&f64s(s)));
            let Some(row) = self.result.branch_mut(&b.branch) else {
                continue;
            };
            if let Some([a, b, c, d]) = s1 {
                (row.nss1, row.auc_judd1, row.auc_borji1, row.sauc1) = (a, b, c, d);
            }
            if let Some([a, b, c, d]) = s2 {
                (row.nss2, row.auc_judd2, row.auc_borji2, row.sauc2) = (a, b, c, d);
            }
        }
        self.time("fixations", t0);
        Ok(())
    }

    /// `[metrics] insertion_deletion`: each branch's insertion and deletion curves.
    fn insertion_deletion(&mut self) -> Result<()> {
        let m = &self.p.metrics;
        let (true, Some(model), Some((input, _))) =
            (m.insertion_deletion, &self.stages.model, &self.input)
        else {
            return Ok(());
        };
        let p = m.insertion_deletion();
        for b in &self.branches {
            let t = Instant::now();
            let Some(row) = self.result.branch_mut(&b.branch) else {
                continue;
            };
            let (ins, del) = sr_core::sr::insertion_deletion(
                model.as_ref(),
                input,
                &channel_sum(&b.relevance)?,
                row.target,
                &p,
            )?;
            (row.insertion, row.deletion) = (Some(ins.auc()), Some(del.auc()));
            (row.insertion_curve, row.deletion_curve) = (ins.scores, del.scores);
            self.seconds.insert(
                format!("insertion_deletion.{}", b.branch),
                t.elapsed().as_secs_f64(),
            );
        }
        Ok(())
    }

    /// `[metrics]`: SSIM1/SSIM2 of each branch against the photo's saliency, and AOPC of each
    /// branch's patch order against a random one.
    fn metrics(&mut self) -> Result<()> {
        let m = &self.p.metrics;
        if m.ssim {
            if let Some(s) = &self.photo_saliency {
                let (h, w) = (s.height, s.width);
                let sal = f64s(s);
                for b in &self.branches {
                    let (Some(sr), Some(row)) = (&b.sr, self.result.branch_mut(&b.branch)) else {
                        continue;
                    };
                    let rel = relevance_to_image(&b.relevance, RelevanceInput::AbsSum)?;
                    if (rel.height, rel.width) == (h, w) && (sr.height, sr.width) == (h, w) {
                        let (rel, sr) = (f64s(&rel), f64s(sr));
                        let s1 = metrics::ssim(&rel, &sal, h, w);
                        let s2 = metrics::ssim(&sr, &sal, h, w);
                        row.ssim1 = Some(s1);
                        row.ssim2 = Some(s2);
                        row.ssim_ratio = Some(s2 / s1);
                        use metrics::saliency::{cc, kl, sim};
                        (row.cc1, row.cc2) = (Some(cc(&rel, &sal)), Some(cc(&sr, &sal)));
                        (row.sim1, row.sim2) = (Some(sim(&rel, &sal)), Some(sim(&sr, &sal)));
                        (row.kl1, row.kl2) = (Some(kl(&rel, &sal)), Some(kl(&sr, &sal)));
                        if m.emd {
                            let emd =
                                |a: &[f64]| metrics::saliency::emd(a, &sal, h, w, m.emd_cells);
                            (row.emd1, row.emd2) = (Some(emd(&rel)), Some(emd(&sr)));
                        }
                    }
                }
            }
        }
        let (true, Some(model), Some((input, _))) = (m.aopc, &self.stages.model, &self.input)
        else {
            return Ok(());
        };
        if self.branches.is_empty() {
            return Ok(());
        }
        let (h, w) = (input.shape()[2], input.shape()[3]);
        for b in &self.branches {
            let t = Instant::now();
            let Some(row) = self.result.branch_mut(&b.branch) else {
                continue;
            };
            let order =
                metrics::patches_by_relevance(&channel_sum(&b.relevance)?, h, w, m.aopc_patch);
            let r = perturb(model.as_ref(), input, &order, row.target, &m.perturbation())?;
            row.aopc = Some(r.aopc());
            row.aopc_curve = r.curve();
            self.seconds
                .insert(format!("aopc.{}", b.branch), t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let order = metrics::patches_random(h, w, m.aopc_patch, m.seed);
        let r = perturb(
            model.as_ref(),
            input,
            &order,
            self.targets[0],
            &m.perturbation(),
        )?;
        self.time("aopc.random", t);
        self.result.aopc_random = Some(r.aopc());
        self.result.aopc_random_curve = r.curve();
        Ok(())
    }

    /// The relevance pictures (`relevance-<branch>.png`, by the relevance renderer) and every
    /// renderer of `[render]`.
    fn render(&mut self) -> Result<()> {
        let renderers = self
            .stages
            .relevance_png
            .iter()
            .chain(&self.stages.renderers);
        let mut renderers = renderers.peekable();
        if renderers.peek().is_none() {
            return Ok(());
        }
        let input = RenderInput {
            image_name: self
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string(),
            photo: self.render_photo()?,
            model_input: self.input.as_ref().map(|(_, crop)| crop.clone()),
            label: self.result.label.clone().unwrap_or_default(),
            branches: std::mem::take(&mut self.branches),
            photo_saliency: self.photo_saliency.take(),
            truth: self.result.truth.clone(),
        };
        let mut files = vec![];
        for (name, r) in renderers {
            let t = Instant::now();
            let out = catch_panic("the renderer", || r.render(&input))
                .map_err(|e| e.context(format!("renderer `{name}`")))?;
            for a in out {
                contract::artifact_name(name, &a.name)?;
                files.push(a);
            }
            self.seconds
                .insert(format!("render.{name}"), t.elapsed().as_secs_f64());
        }
        for a in files {
            self.write(&a.name, &a.bytes)?;
        }
        Ok(())
    }

    /// Write `result.json`, which marks the image as finished. A number that is not finite
    /// fails the image (it would be `null` in a field the tables need); an optional metric that
    /// is not finite is left out.
    fn finish(mut self) -> Result<ImageResult> {
        for b in &mut self.result.branches {
            for (what, v) in [
                ("relevance sum", b.relevance_sum),
                ("target score", b.target_score),
                ("relevance sum / target score", b.ratio),
            ] {
                if !v.is_finite() {
                    return Err(Error::input(format!(
                        "relevance.{}: the {what} is {v} (relevance sum {}, target score {})",
                        b.branch, b.relevance_sum, b.target_score
                    )));
                }
            }
            if b.aopc_curve.iter().any(|v| !v.is_finite()) {
                b.aopc_curve.clear();
                b.aopc = None;
            }
            if b.insertion_curve.iter().any(|v| !v.is_finite()) {
                b.insertion_curve.clear();
                b.insertion = None;
            }
            if b.deletion_curve.iter().any(|v| !v.is_finite()) {
                b.deletion_curve.clear();
                b.deletion = None;
            }
            for m in [
                &mut b.ssim1,
                &mut b.ssim2,
                &mut b.ssim_ratio,
                &mut b.cc1,
                &mut b.cc2,
                &mut b.sim1,
                &mut b.sim2,
                &mut b.kl1,
                &mut b.kl2,
                &mut b.emd1,
                &mut b.emd2,
                &mut b.aopc,
                &mut b.insertion,
                &mut b.deletion,
            ] {
                *m = m.filter(|v| v.is_finite());
            }
        }
        let r = &mut self.result;
        if r.aopc_random_curve.iter().any(|v| !v.is_finite()) {
            r.aopc_random_curve.clear();
            r.aopc_random = None;
        }
        r.aopc_random = r.aopc_random.filter(|v| v.is_finite());
        self.result.outputs = self.outputs;
        self.result.sizes = self.sizes;
        self.result.seconds = self.seconds;
        records::write_result(self.dir, &self.result)?;
        // Every file must still be there as written (a folder removed or emptied while the image
        // was processed): else the image is not finished, and a rerun redoes it.
        let mut gone = records::missing_outputs(self.dir, &self.result);
        if !self.dir.join(records::RESULT_FILE).is_file() {
            gone.push(records::RESULT_FILE.to_string());
        }
        if !gone.is_empty() {
            let _ = std::fs::remove_file(self.dir.join(records::RESULT_FILE));
            return Err(Error::io(
                self.dir,
                format!(
                    "{} of its files vanished while srhost wrote them ({}); the image is not finished",
                    gone.len(),
                    gone.join(", ")
                ),
            ));
        }
        Ok(self.result)
    }
}

fn f64s(i: &Image) -> Vec<f64> {
    i.data().iter().map(|&v| v as f64).collect()
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
