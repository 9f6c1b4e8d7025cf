//! Run-wide tables: `metrics.csv`, `metrics.json` (rows and per-branch means), `report.html`
//! (the means with the best branch marked, and a thumbnail grid of image x branch), and the
//! terminal summary of `srhost compare`. All are rebuilt from every finished image's
//! `result.json`, so a resumed run reports every image.

use crate::records::{output_names, write_atomic, BranchResult, ImageResult};
use serde::{Deserialize, Serialize};
use sr_core::{Error, Result};
use std::path::Path;

/// Means over the images of one branch.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BranchSummary {
    pub branch: String,
    pub images: usize,
    /// Mean relevance sum / target score (conservation).
    pub ratio: f64,
    pub ssim1: Option<f64>,
    pub ssim2: Option<f64>,
    /// Mean of SSIM2 / SSIM1 (the paper's Table 1 figure).
    pub ssim_ratio: Option<f64>,
    pub aopc: Option<f64>,
    /// Mean AOPC of the random order, over the same images.
    pub aopc_random: Option<f64>,
    pub seconds_relevance: f64,
    pub seconds_sr: Option<f64>,
}

/// `metrics.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub branches: Vec<BranchSummary>,
    /// The branch with the highest mean AOPC / SSIM ratio.
    pub best_aopc: Option<String>,
    pub best_ssim_ratio: Option<String>,
    /// Images whose prediction matched `run.labels` / images with a label.
    pub correct: Option<(usize, usize)>,
    pub images: Vec<ImageResult>,
}

fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Per-branch means of `rows` (branches in first-seen order).
pub fn summarise(rows: &[ImageResult]) -> Metrics {
    let mut names: Vec<String> = vec![];
    for r in rows {
        for b in &r.branches {
            if !names.contains(&b.branch) {
                names.push(b.branch.clone());
            }
        }
    }
    let branches: Vec<BranchSummary> = names
        .iter()
        .map(|name| {
            let of: Vec<(&ImageResult, &BranchResult)> = rows
                .iter()
                .flat_map(|r| {
                    r.branches
                        .iter()
                        .filter(|b| &b.branch == name)
                        .map(move |b| (r, b))
                })
                .collect();
            BranchSummary {
                branch: name.clone(),
                images: of.len(),
                ratio: mean(of.iter().map(|(_, b)| Some(b.ratio))).unwrap_or(f64::NAN),
                ssim1: mean(of.iter().map(|(_, b)| b.ssim1)),
                ssim2: mean(of.iter().map(|(_, b)| b.ssim2)),
                ssim_ratio: mean(of.iter().map(|(_, b)| b.ssim_ratio)),
                aopc: mean(of.iter().map(|(_, b)| b.aopc)),
                aopc_random: mean(
                    of.iter()
                        .filter(|(_, b)| b.aopc.is_some())
                        .map(|(r, _)| r.aopc_random),
                ),
                seconds_relevance: mean(of.iter().map(|(_, b)| Some(b.seconds_relevance)))
                    .unwrap_or(0.0),
                seconds_sr: mean(of.iter().map(|(_, b)| b.seconds_sr)),
            }
        })
        .collect();
    let best = |f: fn(&BranchSummary) -> Option<f64>| {
        branches
            .iter()
            .filter_map(|b| f(b).map(|v| (b, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(b, _)| b.branch.clone())
    };
    let labelled: Vec<bool> = rows.iter().filter_map(|r| r.correct).collect();
    Metrics {
        best_aopc: best(|b| b.aopc),
        best_ssim_ratio: best(|b| b.ssim_ratio),
        correct: (!labelled.is_empty())
            .then(|| (labelled.iter().filter(|c| **c).count(), labelled.len())),
        branches,
        images: rows.to_vec(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// `metrics.csv`: one row per image and branch.
pub fn csv(rows: &[ImageResult]) -> String {
    let mut out = String::from(
        "image,label,branch,target,relevance_sum,target_score,ratio,truth,correct,ssim1,ssim2,ssim_ratio,aopc,aopc_random,seconds_relevance,seconds_sr\n",
    );
    for r in rows {
        for b in &r.branches {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(&r.image),
                csv_field(r.label.as_deref().unwrap_or("")),
                csv_field(&b.branch),
                b.target,
                b.relevance_sum,
                b.target_score,
                b.ratio,
                csv_field(r.truth.as_deref().unwrap_or("")),
                r.correct.map(|c| c.to_string()).unwrap_or_default(),
                opt(b.ssim1),
                opt(b.ssim2),
                opt(b.ssim_ratio),
                opt(b.aopc),
                opt(b.aopc.and(r.aopc_random)),
                b.seconds_relevance,
                opt(b.seconds_sr),
            ));
        }
    }
    out
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

/// The summary table as text (for `srhost compare`).
pub fn table(m: &Metrics) -> String {
    let head = [
        "branch",
        "images",
        "SSIM1",
        "SSIM2",
        "SSIM2/SSIM1",
        "AOPC",
        "AOPC random",
        "R sum/score",
        "s relevance",
        "s SR",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for b in &m.branches {
        let mark = |best: &Option<String>| {
            if best.as_ref() == Some(&b.branch) {
                " *"
            } else {
                ""
            }
        };
        rows.push(vec![
            b.branch.clone(),
            b.images.to_string(),
            fmt(b.ssim1, 4),
            fmt(b.ssim2, 4),
            format!("{}{}", fmt(b.ssim_ratio, 4), mark(&m.best_ssim_ratio)),
            format!("{}{}", fmt(b.aopc, 4), mark(&m.best_aopc)),
            fmt(b.aopc_random, 4),
            fmt(Some(b.ratio), 4),
            fmt(Some(b.seconds_relevance), 3),
            fmt(b.seconds_sr, 3),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c == 0 {
                    format!("{v:<w$}", w = widths[c])
                } else {
                    format!("{v:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(
                &widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  "),
            );
            out.push('\n');
        }
    }
    out.push_str("* best (highest mean); AOPC: region perturbation, most relevant first (higher: more faithful)\n");
    if let Some((c, n)) = m.correct {
        out.push_str(&format!("predictions matching labels: {c} of {n}\n"));
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `report.html`: the summary table and a thumbnail grid (image x branch). `names[i]` is the
/// output folder of `rows[i]`.
pub fn html(m: &Metrics, names: &[String], title: &str) -> String {
    let mut h = String::new();
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>srhost report: {}</title>\n<style>\n\
body{{font-family:sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;margin-bottom:1.5em}}\n\
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th:first-child,td:first-child{{text-align:left}}\n\
td.best{{background:#d9f2d9;font-weight:bold}} .grid td{{text-align:center;vertical-align:top;font-size:12px}}\n\
.grid img{{width:160px;height:160px;image-rendering:pixelated;display:block}} .wrong{{color:#b00;font-weight:bold}}\n\
</style></head>\n<body>\n<h1>srhost report: {}</h1>\n",
        esc(title),
        esc(title)
    ));
    h.push_str("<h2>Mean metrics per branch</h2>\n<table id=\"summary\">\n<tr><th>branch</th><th>images</th><th>SSIM1</th><th>SSIM2</th><th>SSIM2/SSIM1</th><th>AOPC</th><th>AOPC random</th><th>R sum / score</th><th>s relevance</th><th>s SR</th></tr>\n");
    for b in &m.branches {
        let cell = |v: Option<f64>, best: &Option<String>| {
            let cls = if best.as_ref() == Some(&b.branch) {
                " class=\"best\""
            } else {
                ""
            };
            format!("<td{cls}>{}</td>", fmt(v, 4))
        };
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&b.branch),
            b.images,
            fmt(b.ssim1, 4),
            fmt(b.ssim2, 4),
            cell(b.ssim_ratio, &m.best_ssim_ratio),
            cell(b.aopc, &m.best_aopc),
            fmt(b.aopc_random, 4),
            fmt(Some(b.ratio), 4),
            fmt(Some(b.seconds_relevance), 3),
            fmt(b.seconds_sr, 3),
        ));
    }
    h.push_str("</table>\n<p>Highlighted: the best branch (highest mean). SSIM1 = SSIM(relevance, photo saliency), SSIM2 = SSIM(SR map, photo saliency) (the paper's Table 1); AOPC: region perturbation, most relevant patches first, against a random order (Samek et al. 2017).</p>\n");
    if let Some((c, n)) = m.correct {
        h.push_str(&format!(
            "<p>Predictions matching <code>labels.csv</code>: {c} of {n}.</p>\n"
        ));
    }
    let left_out: Vec<&str> = m
        .images
        .iter()
        .zip(names)
        .filter(|(r, _)| !r.selected)
        .map(|(_, n)| n.as_str())
        .collect();
    if !left_out.is_empty() {
        h.push_str(&format!(
            "<p>Left out by <code>run.select</code>: {}.</p>\n",
            esc(&left_out.join(", "))
        ));
    }
    h.push_str("<h2>Images</h2>\n<table class=\"grid\" id=\"grid\">\n<tr><th>image</th><th>model input</th><th>photo saliency</th>");
    for b in &m.branches {
        h.push_str(&format!(
            "<th>{0}: relevance</th><th>{0}: SR map</th>",
            esc(&b.branch)
        ));
    }
    h.push_str("</tr>\n");
    for (r, name) in m.images.iter().zip(names) {
        if !r.selected {
            continue;
        }
        let label = r.label.clone().unwrap_or_default();
        let caption = match (&r.truth, r.correct) {
            (Some(t), Some(false)) => format!(
                "{}<br><span class=\"wrong\">predicted {} (wrong)</span>",
                esc(t),
                esc(&label)
            ),
            (Some(t), _) => format!("{}<br>predicted {}", esc(t), esc(&label)),
            _ => format!("predicted {}", esc(&label)),
        };
        let img = |file: &str| {
            if r.outputs.iter().any(|o| o == file) {
                format!(
                    "<td><img src=\"{}/{}\" alt=\"{}\"></td>",
                    esc(name),
                    esc(file),
                    esc(file)
                )
            } else {
                "<td>-</td>".to_string()
            }
        };
        let title = if r.outputs.iter().any(|o| o == "panel.png") {
            format!("<a href=\"{0}/panel.png\">{0}</a>", esc(name))
        } else {
            esc(name)
        };
        h.push_str(&format!(
            "<tr><td>{title}<br>{caption}</td>{}{}",
            img("input.png"),
            img("saliency-photo.png")
        ));
        for b in &m.branches {
            h.push_str(&img(&format!("relevance-{}.png", b.branch)));
            h.push_str(&img(&format!("sr-{}.png", b.branch)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    // Lets a headless browser (the tests) read whether every picture decoded.
    h.push_str("<script>\nwindow.addEventListener('load', () => {\n  const imgs = [...document.images];\n  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));\n  document.body.dataset.images = imgs.length;\n  document.body.dataset.broken = broken.join(' ');\n  document.body.dataset.loaded = 'yes';\n});\n</script>\n</body></html>\n");
    h
}

/// Rebuild `metrics.csv`, `metrics.json` and `report.html` in `out` from the finished images.
pub fn write_all(
    out: &Path,
    rows: &[ImageResult],
    done_names: &[String],
    title: &str,
) -> Result<Metrics> {
    let m = summarise(rows);
    write_atomic(&out.join("metrics.csv"), csv(rows).as_bytes())?;
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::internal(e.to_string()))?;
    write_atomic(&out.join("metrics.json"), &json)?;
    write_atomic(
        &out.join("report.html"),
        html(&m, done_names, title).as_bytes(),
    )?;
    Ok(m)
}

/// Read `metrics.json` of a finished run (for `srhost compare`).
pub fn read(out: &Path) -> Result<Metrics> {
    let f = out.join("metrics.json");
    let bytes = std::fs::read(&f).map_err(|e| {
        Error::io(&f, e)
            .with_help("give the output folder of a finished run (it holds metrics.json)")
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::input(format!("{}: not an srhost metrics.json: {e}", f.display()))
            .with_help("rerun the pipeline with this srhost to rebuild it")
    })
}

/// The SR maps of two runs on the same images, compared: per image and shared branch, the SSIM
/// between the two maps (the larger resampled to the smaller's size, bilinear), e.g. AlexNet vs
/// VGG-16 (the paper's Sec. 4.1). Returns `(image folder, branch, ssim)` rows.
pub fn cross_ssim(a: &Path, ma: &Metrics, b: &Path, mb: &Metrics) -> Vec<(String, String, f64)> {
    let folders = |m: &Metrics| {
        let paths: Vec<std::path::PathBuf> =
            m.images.iter().map(|r| r.image.clone().into()).collect();
        output_names(&paths)
    };
    let (fa, fb) = (folders(ma), folders(mb));
    let mut rows = vec![];
    for (ra, na) in ma.images.iter().zip(&fa) {
        let Some((rb, _)) = mb.images.iter().zip(&fb).find(|(_, nb)| *nb == na) else {
            continue;
        };
        for br in &ra.branches {
            if !rb.branches.iter().any(|x| x.branch == br.branch) {
                continue;
            }
            let file = format!("sr-{}.npy", br.branch);
            let load = |root: &Path| -> Option<(Vec<f64>, usize, usize)> {
                let f = root.join(na).join(&file);
                let arr = sr_core::npy::decode(&std::fs::read(&f).ok()?, &f.display().to_string())
                    .ok()?;
                match arr.shape[..] {
                    [h, w] => Some((arr.data, h, w)),
                    _ => None,
                }
            };
            let (Some(x), Some(y)) = (load(a), load(b)) else {
                continue;
            };
            let (h, w) = (x.1.min(y.1), x.2.min(y.2));
            let (x, y) = (
                resample(&x.0, x.1, x.2, h, w),
                resample(&y.0, y.1, y.2, h, w),
            );
            if h >= 11 && w >= 11 {
                rows.push((
                    na.clone(),
                    br.branch.clone(),
                    sr_core::metrics::ssim(&x, &y, h, w),
                ));
            }
        }
    }
    rows
}

/// Bilinear resampling (pixel centres aligned) of a `h x w` map to `oh x ow`.
fn resample(v: &[f64], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    if (h, w) == (oh, ow) {
        return v.to_vec();
    }
    let at = |y: usize, x: usize| v[y.min(h - 1) * w + x.min(w - 1)];
    let mut out = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        let fy = ((oy as f64 + 0.5) * h as f64 / oh as f64 - 0.5).max(0.0);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        for ox in 0..ow {
            let fx = ((ox as f64 + 0.5) * w as f64 / ow as f64 - 0.5).max(0.0);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let top = at(y0, x0) * (1.0 - tx) + at(y0, x0 + 1) * tx;
            let bot = at(y0 + 1, x0) * (1.0 - tx) + at(y0 + 1, x0 + 1) * tx;
            out.push(top * (1.0 - ty) + bot * ty);
        }
    }
    out
}
