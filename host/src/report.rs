//! Run-wide tables: `metrics.csv`, `metrics.json` (rows, per-branch and per-class means),
//! `report.html` (the means with the best branch marked, per-class accuracy, each branch's best
//! and worst images, and a paged grid of image x branch fed by `report-data.js`), `run.json`,
//! and the terminal summary of `srhost compare`. All are rebuilt from every finished image's
//! `result.json` under the output folder ([`rebuild`]), so a resumed or sharded run reports
//! every image; `srhost merge` runs the same rebuild.

use crate::records::{write_atomic, BranchResult, ImageResult};
use serde::{Deserialize, Serialize};
use sr_core::{Error, Result};
use std::path::{Path, PathBuf};

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
    /// Means of the saliency benchmark's metrics against the photo saliency (relevance map:
    /// `1`, SR map: `2`; see [`BranchResult`]).
    #[serde(default)]
    pub cc1: Option<f64>,
    #[serde(default)]
    pub cc2: Option<f64>,
    #[serde(default)]
    pub sim1: Option<f64>,
    #[serde(default)]
    pub sim2: Option<f64>,
    #[serde(default)]
    pub kl1: Option<f64>,
    #[serde(default)]
    pub kl2: Option<f64>,
    #[serde(default)]
    pub emd1: Option<f64>,
    #[serde(default)]
    pub emd2: Option<f64>,
    /// Against fixations (`run.fixations`): |R| image (1) and SR map (2).
    #[serde(default)]
    pub nss1: Option<f64>,
    #[serde(default)]
    pub nss2: Option<f64>,
    #[serde(default)]
    pub auc_judd1: Option<f64>,
    #[serde(default)]
    pub auc_judd2: Option<f64>,
    #[serde(default)]
    pub auc_borji1: Option<f64>,
    #[serde(default)]
    pub auc_borji2: Option<f64>,
    #[serde(default)]
    pub sauc1: Option<f64>,
    #[serde(default)]
    pub sauc2: Option<f64>,
    pub aopc: Option<f64>,
    /// Mean AOPC of the random order, over the same images.
    pub aopc_random: Option<f64>,
    /// Model-parameter randomization: per step, the mean SSIM of the relevance images, the mean
    /// Spearman correlation of |R| and the mean SSIM of the SR maps (trained vs randomized),
    /// with the steps' layers; and the mean Table-1 figures under the fully randomized model.
    #[serde(default)]
    pub randomization: Option<RandomizationSummary>,
    /// Mean insertion and deletion areas (Petsiuk et al. 2018), and the mean curves (over the
    /// images whose curves have the first image's length).
    #[serde(default)]
    pub insertion: Option<f64>,
    #[serde(default)]
    pub deletion: Option<f64>,
    #[serde(default)]
    pub insertion_curve: Vec<Option<f64>>,
    #[serde(default)]
    pub deletion_curve: Vec<Option<f64>>,
    pub seconds_relevance: f64,
    pub seconds_sr: Option<f64>,
}

/// The means of a branch's randomization results over the images that have them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RandomizationSummary {
    pub order: String,
    pub steps: Vec<Vec<String>>,
    pub images: usize,
    pub ssim_relevance: Vec<Option<f64>>,
    pub spearman: Vec<Option<f64>>,
    pub ssim_sr: Vec<Option<f64>>,
    pub ssim1: Option<f64>,
    pub ssim2: Option<f64>,
    pub ssim_ratio: Option<f64>,
    /// The efficient MPRT: the mean relative rise of the relevance map's and the SR map's
    /// discrete entropy, trained to fully randomized.
    #[serde(default)]
    pub emprt: Option<f64>,
    #[serde(default)]
    pub emprt_sr: Option<f64>,
    /// The smooth MPRT's samples per map (1: plain MPRT).
    #[serde(default)]
    pub samples: usize,
}

fn randomization_summary(of: &[(&ImageResult, &BranchResult)]) -> Option<RandomizationSummary> {
    let rs: Vec<&crate::records::RandomizationResult> = of
        .iter()
        .filter_map(|(_, b)| b.randomization.as_ref())
        .collect();
    let first = rs.first()?;
    // Only the images randomized as the first was (the same order, steps and smoothing) are
    // averaged.
    let rs: Vec<_> = rs
        .iter()
        .filter(|r| r.order == first.order && r.steps == first.steps && r.samples == first.samples)
        .collect();
    let curve = |f: fn(&crate::records::RandomizationResult) -> &Vec<f64>| -> Vec<Option<f64>> {
        (0..first.steps.len())
            .map(|k| mean(rs.iter().map(|r| f(r).get(k).copied())))
            .collect()
    };
    Some(RandomizationSummary {
        order: first.order.clone(),
        steps: first.steps.clone(),
        images: rs.len(),
        ssim_relevance: curve(|r| &r.ssim_relevance),
        spearman: curve(|r| &r.spearman),
        ssim_sr: curve(|r| &r.ssim_sr),
        ssim1: mean(rs.iter().map(|r| r.ssim1)),
        ssim2: mean(rs.iter().map(|r| r.ssim2)),
        ssim_ratio: mean(rs.iter().map(|r| r.ssim_ratio)),
        emprt: mean(rs.iter().map(|r| r.emprt)),
        emprt_sr: mean(rs.iter().map(|r| r.emprt_sr)),
        samples: first.samples,
    })
}

/// The pointwise mean of the non-empty curves of the first one's length.
fn mean_curve<'a>(curves: impl Iterator<Item = &'a Vec<f64>>) -> Vec<Option<f64>> {
    let curves: Vec<&Vec<f64>> = curves.filter(|c| !c.is_empty()).collect();
    let Some(n) = curves.first().map(|c| c.len()) else {
        return vec![];
    };
    (0..n)
        .map(|k| mean(curves.iter().filter(|c| c.len() == n).map(|c| Some(c[k]))))
        .collect()
}

/// A line chart as inline SVG (no script, no network): one polyline per series over the
/// points `0..n`, y from `lo` to `hi`, a legend, and `x_labels` under the first and last point.
fn svg_lines(
    id: &str,
    title: &str,
    y_label: &str,
    x_labels: (&str, &str),
    (lo, hi): (f64, f64),
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    const COLOURS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    ];
    let (w, h, left, top, right, bottom) = (520.0, 260.0, 50.0, 28.0, 150.0, 36.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let x = |k: usize| {
        left + if n > 1 {
            pw * k as f64 / (n - 1) as f64
        } else {
            pw / 2.0
        }
    };
    let y = |v: f64| top + ph * (1.0 - ((v - lo) / (hi - lo)).clamp(0.0, 1.0));
    let mut o = format!(
        "<svg id=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">\n\
<text x=\"{left}\" y=\"16\" font-size=\"13\">{}</text>\n\
<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\n",
        esc(id),
        esc(title),
        esc(title)
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        o.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{v:.2}</text>\n",
            left - 4.0,
            y(v) + 3.0
        ));
    }
    o.push_str(&format!(
        "<text x=\"12\" y=\"{}\" font-size=\"10\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{}</text>\n",
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label),
    ));
    if n > 1 {
        o.push_str(&format!(
            "<text x=\"{left}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>\n",
            h - bottom + 14.0,
            esc(x_labels.0),
            left + pw,
            h - bottom + 14.0,
            esc(x_labels.1)
        ));
    } else {
        o.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n",
            left + pw / 2.0,
            h - bottom + 14.0,
            esc(x_labels.0)
        ));
    }
    for (i, (name, v)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .filter_map(|(k, p)| {
                p.filter(|p| p.is_finite())
                    .map(|p| format!("{:.1},{:.1}", x(k), y(p)))
            })
            .collect();
        // A marker per point as well: a one-step curve is a point.
        let marks: String = pts
            .iter()
            .map(|p| {
                let (cx, cy) = p.split_once(',').unwrap();
                format!("<circle cx=\"{cx}\" cy=\"{cy}\" r=\"3\" fill=\"{c}\"/>")
            })
            .collect();
        o.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>{marks}\n\
<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{c}\">{}</text>\n",
            pts.join(" "),
            left + pw + 8.0,
            top + 12.0 + 14.0 * i as f64,
            esc(name)
        ));
    }
    o.push_str("</svg>\n");
    o
}

/// The last step's value of a randomization curve.
fn last(v: &[f64]) -> Option<f64> {
    v.last().copied()
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
    /// Per ground-truth class (with `run.labels`), sorted by class.
    #[serde(default)]
    pub classes: Vec<ClassSummary>,
    pub images: Vec<ImageResult>,
    /// Each image's output folder, relative to the output (parallel to `images`).
    #[serde(default)]
    pub folders: Vec<String>,
}

/// The images of one ground-truth class.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClassSummary {
    pub class: String,
    pub images: usize,
    /// How many of them the model classified right.
    pub correct: usize,
    /// Mean SSIM2/SSIM1 per branch, in the order of `Metrics::branches`.
    pub ssim_ratio: Vec<Option<f64>>,
    /// Every mean per branch over the class's images (as `Metrics::branches`, same order).
    #[serde(default)]
    pub branches: Vec<BranchSummary>,
}

fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The means of each branch in `names` over `rows` (its images), in that order.
fn branch_summaries(rows: &[&ImageResult], names: &[String]) -> Vec<BranchSummary> {
    names
        .iter()
        .map(|name| {
            let of: Vec<(&ImageResult, &BranchResult)> = rows
                .iter()
                .copied()
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
                cc1: mean(of.iter().map(|(_, b)| b.cc1)),
                cc2: mean(of.iter().map(|(_, b)| b.cc2)),
                sim1: mean(of.iter().map(|(_, b)| b.sim1)),
                sim2: mean(of.iter().map(|(_, b)| b.sim2)),
                kl1: mean(of.iter().map(|(_, b)| b.kl1)),
                kl2: mean(of.iter().map(|(_, b)| b.kl2)),
                emd1: mean(of.iter().map(|(_, b)| b.emd1)),
                emd2: mean(of.iter().map(|(_, b)| b.emd2)),
                nss1: mean(of.iter().map(|(_, b)| b.nss1)),
                nss2: mean(of.iter().map(|(_, b)| b.nss2)),
                auc_judd1: mean(of.iter().map(|(_, b)| b.auc_judd1)),
                auc_judd2: mean(of.iter().map(|(_, b)| b.auc_judd2)),
                auc_borji1: mean(of.iter().map(|(_, b)| b.auc_borji1)),
                auc_borji2: mean(of.iter().map(|(_, b)| b.auc_borji2)),
                sauc1: mean(of.iter().map(|(_, b)| b.sauc1)),
                sauc2: mean(of.iter().map(|(_, b)| b.sauc2)),
                aopc: mean(of.iter().map(|(_, b)| b.aopc)),
                aopc_random: mean(
                    of.iter()
                        .filter(|(_, b)| b.aopc.is_some())
                        .map(|(r, _)| r.aopc_random),
                ),
                randomization: randomization_summary(&of),
                insertion: mean(of.iter().map(|(_, b)| b.insertion)),
                deletion: mean(of.iter().map(|(_, b)| b.deletion)),
                insertion_curve: mean_curve(of.iter().map(|(_, b)| &b.insertion_curve)),
                deletion_curve: mean_curve(of.iter().map(|(_, b)| &b.deletion_curve)),
                seconds_relevance: mean(of.iter().map(|(_, b)| Some(b.seconds_relevance)))
                    .unwrap_or(0.0),
                seconds_sr: mean(of.iter().map(|(_, b)| b.seconds_sr)),
            }
        })
        .collect()
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
    let all: Vec<&ImageResult> = rows.iter().collect();
    let branches = branch_summaries(&all, &names);
    let best = |f: fn(&BranchSummary) -> Option<f64>| {
        branches
            .iter()
            .filter_map(|b| f(b).map(|v| (b, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(b, _)| b.branch.clone())
    };
    let labelled: Vec<bool> = rows.iter().filter_map(|r| r.correct).collect();
    let mut by_class: std::collections::BTreeMap<&str, Vec<&ImageResult>> = Default::default();
    for r in rows {
        if let Some(t) = &r.truth {
            by_class.entry(t.as_str()).or_default().push(r);
        }
    }
    let classes = by_class
        .into_iter()
        .map(|(class, rs)| {
            let branches = branch_summaries(&rs, &names);
            ClassSummary {
                class: class.to_string(),
                images: rs.len(),
                correct: rs.iter().filter(|r| r.correct == Some(true)).count(),
                ssim_ratio: branches.iter().map(|b| b.ssim_ratio).collect(),
                branches,
            }
        })
        .collect();
    Metrics {
        best_aopc: best(|b| b.aopc),
        best_ssim_ratio: best(|b| b.ssim_ratio),
        correct: (!labelled.is_empty())
            .then(|| (labelled.iter().filter(|c| **c).count(), labelled.len())),
        branches,
        classes,
        images: rows.to_vec(),
        folders: vec![],
    }
}

/// A name as a CSV field: always quoted (RFC 4180), so a comma, quote, CR or LF in a file
/// name stays inside its field.
fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// `metrics.csv`: one row per image and branch (`folders[i]`: the output folder of `rows[i]`).
pub fn csv(rows: &[ImageResult], folders: &[String]) -> String {
    let mut out = String::from(
        "image,label,branch,target,relevance_sum,target_score,ratio,truth,correct,ssim1,ssim2,ssim_ratio,cc1,cc2,sim1,sim2,kl1,kl2,emd1,emd2,nss1,nss2,auc_judd1,auc_judd2,auc_borji1,auc_borji2,sauc1,sauc2,aopc,aopc_random,insertion,deletion,random_ssim_relevance,random_spearman,random_ssim_sr,random_ssim1,random_ssim2,random_ssim_ratio,random_emprt,random_emprt_sr,seconds_relevance,seconds_sr,folder\n",
    );
    for (r, folder) in rows.iter().zip(folders) {
        for b in &r.branches {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
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
                opt(b.cc1),
                opt(b.cc2),
                opt(b.sim1),
                opt(b.sim2),
                opt(b.kl1),
                opt(b.kl2),
                opt(b.emd1),
                opt(b.emd2),
                opt(b.nss1),
                opt(b.nss2),
                opt(b.auc_judd1),
                opt(b.auc_judd2),
                opt(b.auc_borji1),
                opt(b.auc_borji2),
                opt(b.sauc1),
                opt(b.sauc2),
                opt(b.aopc),
                opt(b.aopc.and(r.aopc_random)),
                opt(b.insertion),
                opt(b.deletion),
                opt(b.randomization.as_ref().and_then(|r| last(&r.ssim_relevance))),
                opt(b.randomization.as_ref().and_then(|r| last(&r.spearman))),
                opt(b.randomization.as_ref().and_then(|r| last(&r.ssim_sr))),
                opt(b.randomization.as_ref().and_then(|r| r.ssim1)),
                opt(b.randomization.as_ref().and_then(|r| r.ssim2)),
                opt(b.randomization.as_ref().and_then(|r| r.ssim_ratio)),
                opt(b.randomization.as_ref().and_then(|r| r.emprt)),
                opt(b.randomization.as_ref().and_then(|r| r.emprt_sr)),
                b.seconds_relevance,
                opt(b.seconds_sr),
                csv_field(folder),
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

/// A column of the means per branch, as `srhost compare` prints it and report.html shows it.
struct Column {
    head: &'static str,
    value: fn(&BranchSummary) -> Option<f64>,
    digits: usize,
    /// The branch the column marks as best, if it marks one.
    best: Option<fn(&Metrics) -> &Option<String>>,
}

/// The columns after the branch and its number of images.
const SUMMARY_COLUMNS: &[Column] = &[
    Column {
        head: "SSIM1",
        value: |b| b.ssim1,
        digits: 4,
        best: None,
    },
    Column {
        head: "SSIM2",
        value: |b| b.ssim2,
        digits: 4,
        best: None,
    },
    Column {
        head: "SSIM2/SSIM1",
        value: |b| b.ssim_ratio,
        digits: 4,
        best: Some(|m| &m.best_ssim_ratio),
    },
    Column {
        head: "CC1",
        value: |b| b.cc1,
        digits: 3,
        best: None,
    },
    Column {
        head: "CC2",
        value: |b| b.cc2,
        digits: 3,
        best: None,
    },
    Column {
        head: "SIM1",
        value: |b| b.sim1,
        digits: 3,
        best: None,
    },
    Column {
        head: "SIM2",
        value: |b| b.sim2,
        digits: 3,
        best: None,
    },
    Column {
        head: "KL1",
        value: |b| b.kl1,
        digits: 3,
        best: None,
    },
    Column {
        head: "KL2",
        value: |b| b.kl2,
        digits: 3,
        best: None,
    },
    Column {
        head: "EMD1",
        value: |b| b.emd1,
        digits: 3,
        best: None,
    },
    Column {
        head: "EMD2",
        value: |b| b.emd2,
        digits: 3,
        best: None,
    },
    Column {
        head: "NSS1",
        value: |b| b.nss1,
        digits: 3,
        best: None,
    },
    Column {
        head: "NSS2",
        value: |b| b.nss2,
        digits: 3,
        best: None,
    },
    Column {
        head: "AUC-J1",
        value: |b| b.auc_judd1,
        digits: 3,
        best: None,
    },
    Column {
        head: "AUC-J2",
        value: |b| b.auc_judd2,
        digits: 3,
        best: None,
    },
    Column {
        head: "AUC-B1",
        value: |b| b.auc_borji1,
        digits: 3,
        best: None,
    },
    Column {
        head: "AUC-B2",
        value: |b| b.auc_borji2,
        digits: 3,
        best: None,
    },
    Column {
        head: "sAUC1",
        value: |b| b.sauc1,
        digits: 3,
        best: None,
    },
    Column {
        head: "sAUC2",
        value: |b| b.sauc2,
        digits: 3,
        best: None,
    },
    Column {
        head: "AOPC",
        value: |b| b.aopc,
        digits: 4,
        best: Some(|m| &m.best_aopc),
    },
    Column {
        head: "AOPC random",
        value: |b| b.aopc_random,
        digits: 4,
        best: None,
    },
    Column {
        head: "Insertion",
        value: |b| b.insertion,
        digits: 4,
        best: None,
    },
    Column {
        head: "Deletion",
        value: |b| b.deletion,
        digits: 4,
        best: None,
    },
    Column {
        head: "Rand. Spearman",
        value: |b| {
            b.randomization
                .as_ref()
                .and_then(|r| r.spearman.last().copied().flatten())
        },
        digits: 3,
        best: None,
    },
    Column {
        head: "Rand. SSIM2/SSIM1",
        value: |b| b.randomization.as_ref().and_then(|r| r.ssim_ratio),
        digits: 4,
        best: None,
    },
    Column {
        head: "Rand. eMPRT",
        value: |b| b.randomization.as_ref().and_then(|r| r.emprt),
        digits: 3,
        best: None,
    },
    Column {
        head: "R sum / score",
        value: |b| Some(b.ratio),
        digits: 4,
        best: None,
    },
    Column {
        head: "s relevance",
        value: |b| Some(b.seconds_relevance),
        digits: 3,
        best: None,
    },
    Column {
        head: "s SR",
        value: |b| b.seconds_sr,
        digits: 3,
        best: None,
    },
];

/// The [`SUMMARY_COLUMNS`] that some branch has a value in (a run without fixations, AOPC or
/// randomization leaves those columns out, rather than a column of dashes).
fn shown_columns(m: &Metrics) -> Vec<&'static Column> {
    SUMMARY_COLUMNS
        .iter()
        .filter(|c| m.branches.iter().any(|b| (c.value)(b).is_some()))
        .collect()
}

/// Branch `b`'s cells of the shown columns: the formatted value, and whether it is the best.
fn summary_cells(m: &Metrics, b: &BranchSummary) -> Vec<(String, bool)> {
    shown_columns(m)
        .into_iter()
        .map(|c| {
            let best = c.best.is_some_and(|f| f(m).as_ref() == Some(&b.branch));
            (fmt((c.value)(b), c.digits), best)
        })
        .collect()
}

/// The summary table as text (for `srhost compare`).
pub fn table(m: &Metrics) -> String {
    let mut head = vec!["branch", "images"];
    head.extend(shown_columns(m).iter().map(|c| c.head));
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for b in &m.branches {
        let mut row = vec![b.branch.clone(), b.images.to_string()];
        row.extend(
            summary_cells(m, b)
                .into_iter()
                .map(|(v, best)| if best { format!("{v} *") } else { v }),
        );
        rows.push(row);
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

/// The randomization section: per branch the similarity of the randomized model's maps to the
/// trained model's, step by step (Adebayo et al. 2018, Fig. 2), and the Table-1 figures under
/// the fully randomized model.
fn randomization_html(h: &mut String, m: &Metrics) {
    let rs: Vec<(&BranchSummary, &RandomizationSummary)> = m
        .branches
        .iter()
        .filter_map(|b| b.randomization.as_ref().map(|r| (b, r)))
        .collect();
    let Some((_, first)) = rs.first() else {
        return;
    };
    h.push_str(&format!(
        "<h2>Model-parameter randomization ({})</h2>\n<p>Each step randomizes the learned layers listed (their weights and biases permuted, seeded){}; the curves show how like the trained model's map each branch's map stays (1: the same). A method that explains the model should fall away as the layers it learned are destroyed.{}</p>\n<div id=\"randomization\">\n",
        esc(&first.order),
        if first.order == "cascading" {
            ", keeping the layers above randomized"
        } else {
            ", the others as trained"
        },
        if first.samples > 1 {
            format!(" Smooth MPRT (Hedstr&ouml;m et al. 2023): the relevance maps compared are each the mean of {} passes, all but one on the input plus Gaussian noise.", first.samples)
        } else {
            String::new()
        }
    ));
    let first_step = first
        .steps
        .first()
        .map(|s| layer_list(s))
        .unwrap_or_default();
    let last_step = first
        .steps
        .last()
        .map(|s| layer_list(s))
        .unwrap_or_default();
    let short = |s: &str| s.chars().take(40).collect::<String>();
    for (key, title) in [
        ("spearman", "Spearman rank correlation of |R|"),
        ("ssim_relevance", "SSIM of the relevance maps"),
        ("ssim_sr", "SSIM of the SR maps"),
    ] {
        let series: Vec<(String, Vec<Option<f64>>)> = rs
            .iter()
            .map(|(b, r)| {
                let v = match key {
                    "spearman" => &r.spearman,
                    "ssim_relevance" => &r.ssim_relevance,
                    _ => &r.ssim_sr,
                };
                (b.branch.clone(), v.clone())
            })
            .filter(|(_, v)| v.iter().any(|x| x.is_some()))
            .collect();
        if series.is_empty() {
            continue;
        }
        h.push_str(&svg_lines(
            &format!("randomization-{key}"),
            title,
            "similarity",
            (&short(&first_step), &short(&last_step)),
            (-0.2, 1.0),
            &series,
        ));
    }
    h.push_str("</div>\n<table id=\"randomization-table\">\n<tr><th>branch</th><th>images</th><th>step</th><th>layers</th><th>SSIM relevance</th><th>Spearman |R|</th><th>SSIM SR</th></tr>\n");
    for (b, r) in &rs {
        for (k, layers) in r.steps.iter().enumerate() {
            let at = |v: &Vec<Option<f64>>| fmt(v.get(k).copied().flatten(), 3);
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&b.branch),
                r.images,
                k + 1,
                esc(&layer_list(layers)),
                at(&r.ssim_relevance),
                at(&r.spearman),
                at(&r.ssim_sr)
            ));
        }
    }
    h.push_str("</table>\n");
    if rs.iter().any(|(_, r)| r.ssim_ratio.is_some()) {
        h.push_str("<table id=\"randomization-table1\">\n<tr><th>branch</th><th>SSIM1 trained</th><th>SSIM2 trained</th><th>SSIM2/SSIM1 trained</th><th>SSIM1 randomized</th><th>SSIM2 randomized</th><th>SSIM2/SSIM1 randomized</th></tr>\n");
        for (b, r) in &rs {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&b.branch),
                fmt(b.ssim1, 4),
                fmt(b.ssim2, 4),
                fmt(b.ssim_ratio, 4),
                fmt(r.ssim1, 4),
                fmt(r.ssim2, 4),
                fmt(r.ssim_ratio, 4)
            ));
        }
        h.push_str("</table>\n<p>The paper's Table-1 figures for the trained model and for the fully randomized one: a ratio that stays high without the learned weights measures the maps' form, not the model.</p>\n");
    }
    if rs.iter().any(|(_, r)| r.emprt.is_some()) {
        h.push_str("<table id=\"randomization-emprt\">\n<tr><th>branch</th><th>eMPRT, relevance</th><th>eMPRT, SR map</th></tr>\n");
        for (b, r) in &rs {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&b.branch),
                fmt(r.emprt, 3),
                fmt(r.emprt_sr, 3)
            ));
        }
        h.push_str("</table>\n<p>The efficient MPRT (Hedstr&ouml;m et al. 2023): how much the discrete entropy of the map (100 bins) rises from the trained model to the fully randomized one, relative to the trained map's. Above 0: the randomized model's map is less structured, as it should be.</p>\n");
    }
}

/// The most points a scatter plot draws (every k-th image beyond that, in order).
const MAX_SCATTER_POINTS: usize = 2000;

/// The spread behind the means: per branch, each image's SSIM1 against its SSIM2 (above the
/// diagonal: the SR map is closer to the photo's saliency than the relevance is), and a
/// histogram of the images' SSIM2 / SSIM1.
fn spread_html(h: &mut String, m: &Metrics) {
    let per_branch: Vec<(&str, Vec<(f64, f64)>)> = m
        .branches
        .iter()
        .map(|b| {
            let pts: Vec<(f64, f64)> = m
                .images
                .iter()
                .flat_map(|r| r.branches.iter().filter(|x| x.branch == b.branch))
                .filter_map(|x| Some((x.ssim1?, x.ssim2?)))
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .collect();
            (b.branch.as_str(), pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if per_branch.is_empty() {
        return;
    }
    h.push_str("<h2>Per image: SSIM1 against SSIM2, and the spread of the ratio</h2>\n<p>One point per image (at most 2000 per branch: every k-th image beyond that); above the diagonal the SR map is closer to the photo's saliency than the relevance map is. The histograms count the images' SSIM2 / SSIM1 (ratios above 10 in the last bin).</p>\n<div id=\"spread\">\n");
    for (branch, pts) in &per_branch {
        let step = pts.len().div_ceil(MAX_SCATTER_POINTS).max(1);
        let shown: Vec<(f64, f64)> = pts.iter().step_by(step).copied().collect();
        let hi = shown
            .iter()
            .flat_map(|(a, b)| [*a, *b])
            .fold(0.1f64, f64::max)
            .min(1.0);
        h.push_str(&svg_scatter(
            &format!("scatter-{branch}"),
            branch,
            &shown,
            hi,
        ));
        let ratios: Vec<f64> = pts
            .iter()
            .map(|(a, b)| b / a)
            .filter(|r| r.is_finite())
            .collect();
        // Ratio 1: where the SR map and the relevance map are equally close.
        let of = HistogramOf {
            what: "SSIM2 / SSIM1",
            mark: Some(1.0),
            beyond: true,
        };
        h.push_str(&svg_histogram(
            &format!("ratio-{branch}"),
            branch,
            &of,
            &ratios,
            (0.0, 10.0),
            20,
        ));
    }
    h.push_str("</div>\n");
}

/// Each image's value of a per-branch metric, for the distributions section.
type PerImage = fn(&BranchResult) -> Option<f64>;

/// The metrics whose spread across images the report draws (besides SSIM2 / SSIM1).
const DISTRIBUTIONS: &[(&str, &str, PerImage)] = &[
    ("cc2", "CC of the SR map and the photo's saliency", |b| {
        b.cc2
    }),
    ("sim2", "SIM of the SR map and the photo's saliency", |b| {
        b.sim2
    }),
    ("kl2", "KL of the photo's saliency from the SR map", |b| {
        b.kl2
    }),
    ("emd2", "EMD of the SR map and the photo's saliency", |b| {
        b.emd2
    }),
    ("nss2", "NSS of the SR map at the fixations", |b| b.nss2),
    ("auc_judd2", "AUC-Judd of the SR map", |b| b.auc_judd2),
    ("sauc2", "shuffled AUC of the SR map", |b| b.sauc2),
    ("aopc", "AOPC", |b| b.aopc),
    ("insertion", "insertion", |b| b.insertion),
    ("deletion", "deletion", |b| b.deletion),
    (
        "random_spearman",
        "Spearman of |R|, trained vs fully randomized",
        |b| {
            b.randomization
                .as_ref()
                .and_then(|r| r.spearman.last().copied())
        },
    ),
    (
        "random_emprt",
        "eMPRT (entropy rise under randomization)",
        |b| b.randomization.as_ref().and_then(|r| r.emprt),
    ),
];

/// Histograms of every image's value of the metrics a run has, per branch, on one range per
/// metric so that the branches compare.
fn distributions_html(h: &mut String, m: &Metrics) {
    let mut started = false;
    for (key, title, value) in DISTRIBUTIONS {
        let per_branch: Vec<(&str, Vec<f64>)> = m
            .branches
            .iter()
            .map(|b| {
                let v: Vec<f64> = m
                    .images
                    .iter()
                    .flat_map(|r| r.branches.iter().filter(|x| x.branch == b.branch))
                    .filter_map(value)
                    .filter(|x| x.is_finite())
                    .collect();
                (b.branch.as_str(), v)
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if per_branch.is_empty() {
            continue;
        }
        if !started {
            h.push_str("<h2>Per image: the spread of each metric</h2>\n<p>Histograms of the images' values per branch (20 bins over the range all branches span), so that a mean is read with the spread behind it.</p>\n<div id=\"distributions\">\n");
            started = true;
        }
        let (lo, hi) = per_branch
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, u), x| {
                (l.min(x), u.max(x))
            });
        let hi = if hi > lo { hi } else { lo + 1.0 };
        h.push_str(&format!("<h3>{}</h3>\n", esc(title)));
        let of = HistogramOf {
            what: key,
            mark: None,
            beyond: false,
        };
        for (branch, v) in &per_branch {
            h.push_str(&svg_histogram(
                &format!("dist-{key}-{branch}"),
                branch,
                &of,
                v,
                (lo, hi),
                20,
            ));
        }
    }
    if started {
        h.push_str("</div>\n");
    }
}

/// A scatter plot as inline SVG: `(x, y)` points in `[0, hi]^2` with the diagonal.
fn svg_scatter(id: &str, title: &str, pts: &[(f64, f64)], hi: f64) -> String {
    let (size, pad) = (240.0, 36.0);
    let p = size - 2.0 * pad;
    let x = |v: f64| pad + p * (v / hi).clamp(0.0, 1.0);
    let y = |v: f64| size - pad - p * (v / hi).clamp(0.0, 1.0);
    let mut o = format!(
        "<svg id=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" role=\"img\" aria-label=\"{}: SSIM1 against SSIM2\">\n\
<text x=\"{pad}\" y=\"16\" font-size=\"12\">{}: SSIM2 (up) vs SSIM1</text>\n\
<rect x=\"{pad}\" y=\"{pad}\" width=\"{p}\" height=\"{p}\" fill=\"none\" stroke=\"#999\"/>\n\
<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>\n\
<text x=\"{pad}\" y=\"{}\" font-size=\"10\">0</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{hi:.2}</text>\n",
        esc(id),
        esc(title),
        esc(title),
        x(0.0),
        y(0.0),
        x(hi),
        y(hi),
        size - pad + 12.0,
        size - pad,
        size - pad + 12.0
    );
    for (a, b) in pts {
        o.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#1f77b4\" fill-opacity=\"0.6\"/>",
            x(*a),
            y(*b)
        ));
    }
    o.push_str("\n</svg>\n");
    o
}

/// What a histogram shows: the quantity's name, where a dashed line marks a reference value,
/// and whether values beyond `hi` were gathered in the last bin (its label then reads `hi+`).
struct HistogramOf<'a> {
    what: &'a str,
    mark: Option<f64>,
    beyond: bool,
}

/// A histogram as inline SVG: `bins` equal bins over `[lo, hi]`, values beyond in the end bins.
fn svg_histogram(
    id: &str,
    title: &str,
    of: &HistogramOf,
    v: &[f64],
    (lo, hi): (f64, f64),
    bins: usize,
) -> String {
    let mut counts = vec![0usize; bins];
    for &x in v {
        let k = (((x - lo) / (hi - lo)) * bins as f64).floor();
        counts[(k.max(0.0) as usize).min(bins - 1)] += 1;
    }
    let (w, h, pad) = (300.0, 240.0, 36.0);
    let (pw, ph) = (w - 2.0 * pad, h - 2.0 * pad);
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = pw / bins as f64;
    let mut o = format!(
        "<svg id=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}: {} per image\">\n\
<text x=\"{pad}\" y=\"16\" font-size=\"12\">{}: {}, {} images</text>\n\
<text x=\"{pad}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}{}</text>\n\
<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>\n",
        esc(id),
        esc(title),
        esc(of.what),
        esc(title),
        esc(of.what),
        v.len(),
        h - pad + 12.0,
        axis_label(lo),
        w - pad,
        h - pad + 12.0,
        axis_label(hi),
        if of.beyond { "+" } else { "" },
        pad - 4.0,
        pad + 8.0,
        top as usize
    );
    for (k, &c) in counts.iter().enumerate() {
        let bh = ph * c as f64 / top;
        o.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#2ca02c\"><title>{c}</title></rect>",
            pad + bw * k as f64,
            pad + ph - bh,
            (bw - 1.0).max(0.5),
            bh
        ));
    }
    if let Some(mark) = of.mark.filter(|m| (lo..=hi).contains(m)) {
        let x = pad + pw * (mark - lo) / (hi - lo);
        o.push_str(&format!(
            "\n<line x1=\"{x:.1}\" y1=\"{pad}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>",
            pad + ph
        ));
    }
    o.push_str("\n</svg>\n");
    o
}

/// An axis end as at most three decimals, without trailing zeros.
fn axis_label(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A step's layers for a table cell: all of them up to 6, else the first three, how many, the last.
fn layer_list(layers: &[String]) -> String {
    if layers.len() <= 6 {
        layers.join(", ")
    } else {
        format!(
            "{}, ... ({} layers) ..., {}",
            layers[..3].join(", "),
            layers.len(),
            layers[layers.len() - 1]
        )
    }
}

/// The mean insertion and deletion curves per branch.
fn insertion_deletion_html(h: &mut String, m: &Metrics) {
    let with = |f: fn(&BranchSummary) -> &Vec<Option<f64>>| -> Vec<(String, Vec<Option<f64>>)> {
        m.branches
            .iter()
            .filter(|b| !f(b).is_empty())
            .map(|b| (b.branch.clone(), f(b).clone()))
            .collect()
    };
    let (ins, del) = (with(|b| &b.insertion_curve), with(|b| &b.deletion_curve));
    if ins.is_empty() && del.is_empty() {
        return;
    }
    h.push_str("<h2>Insertion and deletion</h2>\n<div id=\"insertion-deletion\">\n");
    for (id, title, s) in [
        (
            "insertion",
            "Insertion: target probability (higher: better)",
            &ins,
        ),
        (
            "deletion",
            "Deletion: target probability (lower: better)",
            &del,
        ),
    ] {
        if !s.is_empty() {
            h.push_str(&svg_lines(
                id,
                title,
                "probability",
                ("0%", "100% of pixels"),
                (0.0, 1.0),
                s,
            ));
        }
    }
    h.push_str("</div>\n");
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rows per page of the report's image grid.
pub const PAGE: usize = 50;

/// `report.html`: the per-branch means, per-class accuracy and SSIM ratios (with ground truth),
/// each branch's best and worst images, and a paged grid of image x branch whose rows live in
/// `report-data.js` (made by [`grid_data`]), so a page of 50,000 images loads one page of
/// pictures at a time.
pub fn html(m: &Metrics, title: &str) -> String {
    let mut h = String::new();
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>srhost report: {}</title>\n<style>\n\
body{{font-family:sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;margin-bottom:1.5em}}\n\
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th:first-child,td:first-child{{text-align:left}}\n\
td.best{{background:#d9f2d9;font-weight:bold}} .grid td{{text-align:center;vertical-align:top;font-size:12px}}\n\
.grid img{{width:160px;height:160px;image-rendering:pixelated;display:block}} .wrong{{color:#b00;font-weight:bold}}\n\
#pager button{{margin-right:0.5em}} ol{{margin-top:0}}\n\
</style></head>\n<body>\n<h1>srhost report: {}</h1>\n",
        esc(title),
        esc(title)
    ));
    h.push_str(&format!("<p>{} images.</p>\n", m.images.len()));
    h.push_str("<h2>Mean metrics per branch</h2>\n<table id=\"summary\">\n<tr><th>branch</th><th>images</th>");
    for c in shown_columns(m) {
        h.push_str(&format!("<th>{}</th>", esc(c.head)));
    }
    h.push_str("</tr>\n");
    for b in &m.branches {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td>",
            esc(&b.branch),
            b.images
        ));
        for (v, best) in summary_cells(m, b) {
            let cls = if best { " class=\"best\"" } else { "" };
            h.push_str(&format!("<td{cls}>{v}</td>"));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<p>Highlighted: the best branch (highest mean). SSIM1 = SSIM(relevance, photo saliency), SSIM2 = SSIM(SR map, photo saliency) (the paper's Table 1); CC, SIM, KL and EMD: the saliency benchmark's linear correlation, histogram intersection, KL divergence of the photo saliency from the map and earth mover's distance, for the relevance map (1) and the SR map (2) (higher CC and SIM, lower KL and EMD: closer); AOPC: region perturbation, most relevant patches first, against a random order (Samek et al. 2017); insertion and deletion: the area under the target's probability as the most relevant pixels are inserted into a baseline or deleted from the photo (Petsiuk et al. 2018; insertion higher, deletion lower is better).</p>\n");
    randomization_html(&mut h, m);
    insertion_deletion_html(&mut h, m);
    spread_html(&mut h, m);
    distributions_html(&mut h, m);
    if let Some((c, n)) = m.correct {
        h.push_str(&format!(
            "<p>Predictions matching the ground truth: {c} of {n} ({:.1}%).</p>\n",
            100.0 * c as f64 / n.max(1) as f64
        ));
    }
    if !m.classes.is_empty() {
        // The per-class means of the measures a run has (of the summary's columns, those that
        // read per class: the Table-1 ratio, map agreement, faithfulness and randomization).
        const PER_CLASS: &[&str] = &[
            "SSIM2/SSIM1",
            "CC2",
            "NSS2",
            "AOPC",
            "Insertion",
            "Deletion",
            "Rand. Spearman",
            "Rand. eMPRT",
        ];
        let cols: Vec<&Column> = SUMMARY_COLUMNS
            .iter()
            .filter(|c| PER_CLASS.contains(&c.head))
            .filter(|c| {
                m.classes
                    .iter()
                    .any(|k| k.branches.iter().any(|b| (c.value)(b).is_some()))
            })
            .collect();
        h.push_str("<h2>Per class</h2>\n<table id=\"classes\">\n<tr><th>class</th><th>images</th><th>correct</th>");
        for b in &m.branches {
            for c in &cols {
                h.push_str(&format!("<th>{}: {}</th>", esc(&b.branch), esc(c.head)));
            }
        }
        h.push_str("</tr>\n");
        for k in &m.classes {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td>",
                esc(&k.class),
                k.images,
                k.correct
            ));
            for b in &k.branches {
                for c in &cols {
                    h.push_str(&format!("<td>{}</td>", fmt((c.value)(b), c.digits)));
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    let extremes = best_and_worst(m, 5);
    if !extremes.is_empty() {
        h.push_str("<h2>Best and worst images per branch</h2>\n");
        for (branch, metric, best, worst) in extremes {
            let list = |v: &[(usize, f64)]| {
                v.iter()
                    .map(|&(i, x)| {
                        let f = &m.folders[i];
                        format!(
                            "<li><a href=\"{}/sr-{}.png\">{}</a> {:.4}</li>",
                            esc(f),
                            esc(&branch),
                            esc(f),
                            x
                        )
                    })
                    .collect::<String>()
            };
            h.push_str(&format!(
                "<h3>{} (by {metric})</h3>\n<p>Highest:</p><ol>{}</ol><p>Lowest:</p><ol>{}</ol>\n",
                esc(&branch),
                list(&best),
                list(&worst)
            ));
        }
    }
    let left_out: Vec<&str> = m
        .images
        .iter()
        .zip(&m.folders)
        .filter(|(r, _)| !r.selected)
        .map(|(_, n)| n.as_str())
        .take(100)
        .collect();
    if !left_out.is_empty() {
        h.push_str(&format!(
            "<p>Left out by <code>run.select</code>: {}{}.</p>\n",
            esc(&left_out.join(", ")),
            if left_out.len() == 100 { ", ..." } else { "" }
        ));
    }
    h.push_str(
        "<h2>Images</h2>\n<p id=\"pager\"></p>\n<table class=\"grid\" id=\"grid\"></table>\n",
    );
    h.push_str("<script src=\"report-data.js\"></script>\n");
    // The grid: one page of rows at a time from report-data.js. After load, the page records
    // how many pictures it shows and which failed (what a headless browser reads in the tests).
    h.push_str(&format!(
        r#"<script>
const D = window.SRHOST_REPORT || {{branches: [], rows: []}};
const PAGE = {PAGE};
const esc = s => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
function cell(row, file) {{
  return row.files.includes(file)
    ? '<td><img src="' + esc(row.folder) + '/' + esc(file) + '" alt="' + esc(file) + '"></td>'
    : '<td>-</td>';
}}
function show(page) {{
  const pages = Math.max(1, Math.ceil(D.rows.length / PAGE));
  page = Math.min(Math.max(page, 0), pages - 1);
  let h = '<tr><th>image</th><th>model input</th><th>photo saliency</th>';
  for (const b of D.branches) h += '<th>' + esc(b) + ': relevance</th><th>' + esc(b) + ': SR map</th>';
  h += '</tr>';
  for (const r of D.rows.slice(page * PAGE, (page + 1) * PAGE)) {{
    let cap = r.truth == null ? 'predicted ' + esc(r.label)
      : r.correct === false ? esc(r.truth) + '<br><span class="wrong">predicted ' + esc(r.label) + ' (wrong)</span>'
      : esc(r.truth) + '<br>predicted ' + esc(r.label);
    const title = r.files.includes('panel.png')
      ? '<a href="' + esc(r.folder) + '/panel.png">' + esc(r.folder) + '</a>' : esc(r.folder);
    h += '<tr><td>' + title + '<br>' + cap + '</td>' + cell(r, 'input.png') + cell(r, 'saliency-photo.png');
    for (const b of D.branches) h += cell(r, 'relevance-' + b + '.png') + cell(r, 'sr-' + b + '.png');
    h += '</tr>';
  }}
  document.getElementById('grid').innerHTML = h;
  let p = 'Page ' + (page + 1) + ' of ' + pages + ' (' + D.rows.length + ' images) ';
  p += '<button onclick="show(' + (page - 1) + ')">previous</button>';
  p += '<button onclick="show(' + (page + 1) + ')">next</button>';
  document.getElementById('pager').innerHTML = p;
  document.body.dataset.page = page;
}}
show(0);
window.addEventListener('load', () => {{
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.body.dataset.images = imgs.length;
  document.body.dataset.broken = broken.join(' ');
  document.body.dataset.rows = D.rows.length;
  document.body.dataset.loaded = 'yes';
}});
</script>
</body></html>
"#
    ));
    h
}

/// `report-data.js`: the grid's rows (selected images only: folder, label, truth, whether the
/// prediction is right, the pictures it has) and the branch names.
pub fn grid_data(m: &Metrics) -> String {
    let rows: Vec<serde_json::Value> = m
        .images
        .iter()
        .zip(&m.folders)
        .filter(|(r, _)| r.selected)
        .map(|(r, f)| {
            let files: Vec<&String> = r.outputs.iter().filter(|o| o.ends_with(".png")).collect();
            serde_json::json!({
                "folder": f,
                "label": r.label.clone().unwrap_or_default(),
                "truth": r.truth,
                "correct": r.correct,
                "files": files,
            })
        })
        .collect();
    let branches: Vec<&String> = m.branches.iter().map(|b| &b.branch).collect();
    format!(
        "window.SRHOST_REPORT = {};\n",
        serde_json::json!({ "branches": branches, "rows": rows })
    )
}

/// Per branch: the metric it is ranked by (SSIM2/SSIM1, else AOPC) and its `k` highest and
/// lowest images (`(index, value)`).
#[allow(clippy::type_complexity)]
fn best_and_worst(
    m: &Metrics,
    k: usize,
) -> Vec<(String, &'static str, Vec<(usize, f64)>, Vec<(usize, f64)>)> {
    m.branches
        .iter()
        .filter_map(|b| {
            let of = |f: fn(&BranchResult) -> Option<f64>| -> Vec<(usize, f64)> {
                m.images
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        r.branches
                            .iter()
                            .find(|x| x.branch == b.branch)
                            .and_then(f)
                            .filter(|v| v.is_finite())
                            .map(|v| (i, v))
                    })
                    .collect()
            };
            let (metric, mut v) = match of(|x| x.ssim_ratio) {
                v if !v.is_empty() => ("SSIM2/SSIM1", v),
                _ => ("AOPC", of(|x| x.aopc)),
            };
            if v.is_empty() {
                return None;
            }
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let best: Vec<_> = v.iter().take(k).copied().collect();
            let worst: Vec<_> = v.iter().rev().take(k).copied().collect();
            Some((b.branch.clone(), metric, best, worst))
        })
        .collect()
}

/// Rebuild `metrics.csv`, `metrics.json`, `report-data.js`, `report.html` and `run.json` in
/// `out` from every finished image under it and every process's record in `.runs/`, under a
/// lock (`.tables.lock`), so processes sharing the folder never leave a torn or stale table:
/// each rebuild reads what is finished at that moment, and the last one sees everything.
/// Running it twice gives the same files.
///
/// The tables hold one configuration: with `fingerprint` (a run), the images finished under it;
/// images of other configurations in the folder are left out, and said so. Without one
/// (`srhost merge`), a folder holding several configurations is an error naming them.
pub fn rebuild(out: &Path, title: &str, fingerprint: Option<&str>) -> Result<Metrics> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let lock_path = out.join(".tables.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    let mut found = crate::records::scan_results(out)?;
    let configs: std::collections::BTreeSet<String> =
        found.iter().map(|(_, r)| r.fingerprint.clone()).collect();
    match fingerprint {
        Some(fp) => {
            let before = found.len();
            found.retain(|(_, r)| r.fingerprint == fp);
            if found.len() < before {
                eprintln!(
                    "note: {} finished images in {} come from other configurations and are left out of its tables",
                    before - found.len(),
                    out.display()
                );
            }
        }
        None if configs.len() > 1 => {
            return Err(Error::input(format!(
                "{}: its images were made by {} configurations (fingerprints {}); the tables hold one",
                out.display(),
                configs.len(),
                configs.iter().cloned().collect::<Vec<_>>().join(", ")
            ))
            .with_help("rerun the configuration you want into this folder (it redoes the others' images), or use one output folder per configuration"));
        }
        None => {}
    }
    let (folders, rows): (Vec<String>, Vec<ImageResult>) = found.into_iter().unzip();
    let mut m = summarise(&rows);
    m.folders = folders;
    write_atomic(&out.join("metrics.csv"), csv(&rows, &m.folders).as_bytes())?;
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::internal(e.to_string()))?;
    write_atomic(&out.join("metrics.json"), &json)?;
    write_atomic(&out.join("report-data.js"), grid_data(&m).as_bytes())?;
    write_atomic(&out.join("report.html"), html(&m, title).as_bytes())?;
    let run = run_json(out, &m)?;
    write_atomic(
        &out.join("run.json"),
        &serde_json::to_vec_pretty(&run).map_err(|e| Error::internal(e.to_string()))?,
    )?;
    Ok(m)
}

/// Where each process of a run records what it did (`.runs/<host>-<pid>.json`), for `run.json`.
pub fn record_run(out: &Path, provenance: &serde_json::Value) -> Result<()> {
    let runs = crate::records::image_dir(out, ".runs")?;
    let f = runs.join(format!(
        "{}-{}.json",
        crate::records::host_name(),
        std::process::id()
    ));
    write_atomic(
        &f,
        &serde_json::to_vec_pretty(provenance).map_err(|e| Error::internal(e.to_string()))?,
    )
}

/// `run.json`: every process's record (sorted by file name), the number of finished images,
/// and the images whose latest attempt failed and that are still not finished.
fn run_json(out: &Path, m: &Metrics) -> Result<serde_json::Value> {
    let dir = out.join(".runs");
    let mut names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(_) => vec![],
    };
    names.sort();
    let mut runs = vec![];
    for f in &names {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        runs.push(
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| Error::io(f, e))?,
        );
    }
    let finished: std::collections::HashSet<&str> =
        m.images.iter().map(|r| r.image.as_str()).collect();
    let mut failed: Vec<serde_json::Value> = vec![];
    for r in &runs {
        for f in r["failed"].as_array().into_iter().flatten() {
            let image = f["image"].as_str().unwrap_or("");
            if !finished.contains(image) && !failed.iter().any(|x| x["image"] == f["image"]) {
                failed.push(f.clone());
            }
        }
    }
    let last = runs.last().cloned().unwrap_or(serde_json::Value::Null);
    Ok(serde_json::json!({
        "srhost": env!("CARGO_PKG_VERSION"),
        "abi": sr_core::abi::ABI_VERSION,
        "pipeline": last["pipeline"],
        "config": last["config"],
        "fingerprint": last["fingerprint"],
        "images": m.images.len(),
        "failed": failed,
        "runs": runs,
    }))
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
    let (fa, fb) = (&ma.folders, &mb.folders);
    let mut rows = vec![];
    for (ra, na) in ma.images.iter().zip(fa) {
        let Some((rb, _)) = mb.images.iter().zip(fb).find(|(_, nb)| *nb == na) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_into_equal_bins_with_the_ends_open() {
        // Bins of 0.5 over [0, 10]: 0.5 -> bin 1, 1.5 and 1.6 -> bin 3, 25 -> the last,
        // -3 -> the first.
        let of = HistogramOf {
            what: "x",
            mark: Some(1.0),
            beyond: true,
        };
        let svg = svg_histogram("h", "t", &of, &[0.5, 1.5, 1.6, 25.0, -3.0], (0.0, 10.0), 20);
        let counts: Vec<&str> = svg
            .split("<title>")
            .skip(1)
            .map(|c| c.split('<').next().unwrap())
            .collect();
        let mut want = vec!["0"; 20];
        (want[0], want[1], want[3], want[19]) = ("1", "1", "2", "1");
        assert_eq!(counts, want);
        // The axis ends (the last one open: "10+") and the dashed line at 1: a tenth of the
        // 228 px plot from 36 px.
        assert!(
            svg.contains(">0</text>") && svg.contains(">10+</text>"),
            "{svg}"
        );
        assert!(svg.contains("x1=\"58.8\""), "{svg}");
        let closed = HistogramOf {
            what: "x",
            mark: None,
            beyond: false,
        };
        let svg = svg_histogram("h", "t", &closed, &[0.25], (0.125, 0.375), 2);
        assert!(
            svg.contains(">0.125</text>") && svg.contains(">0.375</text>"),
            "{svg}"
        );
        assert!(!svg.contains("<line"), "{svg}");
    }

    #[test]
    fn the_scatter_draws_a_point_per_pair_in_the_box() {
        let svg = svg_scatter("s", "t", &[(0.0, 0.0), (0.5, 0.25)], 0.5);
        assert_eq!(svg.matches("<circle").count(), 2);
        // (0, 0) at the lower left corner of the 168 px box from 36 px; (0.5, 0.25) at the
        // right edge, half way up.
        assert!(svg.contains("cx=\"36.0\" cy=\"204.0\""), "{svg}");
        assert!(svg.contains("cx=\"204.0\" cy=\"120.0\""), "{svg}");
    }
}
