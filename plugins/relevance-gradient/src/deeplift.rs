//! `relevance.deeplift`: DeepLIFT's rescale rule (Shrikumar, Greenside and Kundaje 2017)
//! against one or more baselines; averaged over several background samples it is Deep SHAP
//! (Lundberg and Lee 2017), the baseline the paper compares against (Sec. 3.2).
//!
//! For a baseline `b`, every layer with weights passes the gradient (it is linear), every
//! activation multiplies by `(f(x) - f(b)) / (x - b)` (its own derivative where `|x - b| <
//! 1e-10`). Input and baseline run as one batch and the value flows back through both halves,
//! as in Captum's `DeepLift`. Max pooling (`max_pool`): `"gradient"` routes to each window's
//! maximum, which is what Captum 0.9's maps show (measured against them: Pearson 1.000000,
//! sums to 1e-5; the exact rule below gives Pearson 0.2 to 0.99), or `"rescale"`, the rule
//! Captum's max-pool hook is written to apply: each window's `g (max(o_x, o_b) - o_b)` goes to the input's maximum and
//! `g (o_x - max(o_x, o_b))` to the baseline's, divided by `x - b` there (unpooling writes,
//! so with overlapping windows the last one wins). The attribution is `(x - b) * multiplier`;
//! its sum is `f(x) - f(b)` for the target logit on nets without max pooling, and with
//! `"rescale"` on non-overlapping pools. With several baselines the attributions are averaged.

use crate::Transpose;
use candle_core::{DType, Device, Tensor as CTensor};
use serde::{Deserialize, Serialize};
use sr_core::geometry::Window;
use sr_core::preprocess;
use sr_core::{
    Error, Explainer, Explanation, Model, ModelInfo, NodeId, Op, Params, Relevance, RelevanceStage,
    Request, Result, Tensor,
};
use sr_nn::propagate::{activation_derivative, LayerRule};
use sr_nn::{attribution, from_candle, ops, Attributor, Prepared};
use std::sync::Arc;

/// Below this `|x - b|`, an activation passes its own derivative (Captum's threshold).
pub const EPS: f32 = 1e-10;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeepLiftParams {
    /// Each entry: `"zero"` (the all-zero model input, i.e. the mean image), `"black"` or
    /// `"white"` (that image, normalised as the model declares), or an image file (a background
    /// sample, preprocessed as the photos). Attributions are averaged over the list.
    pub baselines: Vec<String>,
    /// `"gradient"`: max pooling passes the gradient to each window's maximum (what Captum
    /// 0.9's `DeepLift` computes, so its maps are matched); `"rescale"`: each window's output
    /// difference goes to the input's and the baseline's maxima, divided by `x - b` there
    /// (the rule Captum's max-pool hook describes; complete on non-overlapping pools).
    pub max_pool: String,
}

impl Default for DeepLiftParams {
    fn default() -> Self {
        DeepLiftParams {
            baselines: vec!["zero".into()],
            max_pool: "gradient".into(),
        }
    }
}

impl Params for DeepLiftParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        (
            "baselines",
            "list of \"zero\" (the mean image), \"black\", \"white\", or image files (background samples: Deep SHAP); attributions are averaged (default [\"zero\"])",
        ),
        (
            "max_pool",
            "\"gradient\" (to each window's maximum, as Captum computes it; default) or \"rescale\" (the output difference split between input and baseline maxima; complete on non-overlapping pools)",
        ),
    ];
}

enum Baseline {
    Zero,
    Fill(u8),
    Image(preprocess::Rgb8, String),
}

/// DeepLIFT / Deep SHAP.
pub struct DeepLift {
    baselines: Vec<Baseline>,
    rescale_max_pool: bool,
}

impl RelevanceStage for DeepLift {
    type Params = DeepLiftParams;
    fn build(p: DeepLiftParams) -> Result<Self> {
        if p.baselines.is_empty() {
            return Err(Error::params("`baselines`: give at least one baseline"));
        }
        let baselines = p
            .baselines
            .iter()
            .map(|b| match b.as_str() {
                "zero" => Ok(Baseline::Zero),
                "black" => Ok(Baseline::Fill(0)),
                "white" => Ok(Baseline::Fill(255)),
                path => {
                    let f = std::path::Path::new(path);
                    if !f.exists() {
                        return Err(Error::params(format!(
                            "`baselines`: `{path}` is neither \"zero\", \"black\", \"white\" nor an existing image file"
                        )));
                    }
                    Ok(Baseline::Image(preprocess::load_photo(f)?, path.to_string()))
                }
            })
            .collect::<Result<_>>()?;
        let rescale_max_pool = match p.max_pool.as_str() {
            "gradient" => false,
            "rescale" => true,
            other => {
                return Err(Error::params(format!(
                    "`max_pool`: unknown mode `{other}`; expected \"gradient\" or \"rescale\""
                )))
            }
        };
        Ok(DeepLift {
            baselines,
            rescale_max_pool,
        })
    }
}

/// The baseline as a model input `[C, H, W]`.
fn baseline_input(b: &Baseline, info: &ModelInfo) -> Result<Tensor> {
    let shape = info.input_shape.clone();
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let fill = |v: u8| {
        if c != 3 {
            return Err(Error::unsupported(format!(
                "`baselines`: black/white images need a 3-channel model, this one takes {c}"
            )));
        }
        let img = preprocess::Rgb8 {
            width: w,
            height: h,
            data: vec![v; w * h * 3],
        };
        preprocess::normalise(&img, &info.mean, &info.std)
    };
    let t = match b {
        Baseline::Zero => Tensor::zeros(vec![1, c, h, w]),
        Baseline::Fill(v) => fill(*v)?,
        Baseline::Image(img, path) => {
            preprocess::preprocess(img, info)
                .map_err(|e| e.context(format!("baseline {path}")))?
                .0
        }
    };
    t.reshape(vec![c, h, w])
}

/// The rescale rule on a forward pass of `[inputs; baselines]` (2N samples, as Captum runs
/// it): the value flows back through both halves, the multipliers come from their differences.
/// Layers with weights pass the gradient ([`Transpose`]).
pub struct Rescale {
    rescale_max_pool: bool,
}

/// `(first half, second half)` of a batch.
fn halves(t: &CTensor) -> candle_core::Result<(CTensor, CTensor)> {
    let n = t.dim(0)? / 2;
    Ok((t.narrow(0, 0, n)?, t.narrow(0, n, n)?))
}

/// `t - u` repeated for both halves: `[t - u; t - u]`.
fn delta2(t: &CTensor) -> candle_core::Result<CTensor> {
    let (x, b) = halves(t)?;
    let d = (x - b)?;
    CTensor::cat(&[&d, &d], 0)
}

impl LayerRule for Rescale {
    fn layer(
        &self,
        p: &Prepared,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
    ) -> Result<CTensor> {
        Transpose.layer(p, node, a, z, r)
    }

    fn defines_nonlinear(&self) -> bool {
        true
    }

    fn nonlinear(
        &self,
        p: &Prepared,
        acts: &[CTensor],
        node: NodeId,
        r: &CTensor,
    ) -> Result<CTensor> {
        let n = &p.graph.nodes[node];
        let ce =
            |e: candle_core::Error| Error::internal(format!("DeepLIFT at layer `{}`: {e}", n.name));
        let i = n.inputs[0];
        match &n.op {
            Op::MaxPool { .. } => {
                let (win, ceil_mode) = n.op.pool_window().expect("a max pooling");
                if self.rescale_max_pool {
                    max_pool(&acts[i], &acts[node], r, &win).map_err(ce)
                } else {
                    ops::max_pool_t(&acts[i], r, &win, ceil_mode, ops::MaxRouting::First)
                        .map_err(ce)
                }
            }
            _ => {
                let a = &acts[i];
                let din = delta2(a).map_err(ce)?;
                let dout = delta2(&acts[node]).map_err(ce)?;
                rescale(n, a, &din, &dout, r).map_err(ce)
            }
        }
    }
}

/// The rescale rule at activation `n` with input `a`: `r * dout / din`, `dout` and `din` being
/// the output's and the input's differences to the baseline, or `r` times the derivative at `a`
/// where `|din| < EPS`.
fn rescale(
    n: &sr_core::graph::Node,
    a: &CTensor,
    din: &CTensor,
    dout: &CTensor,
    r: &CTensor,
) -> candle_core::Result<CTensor> {
    let grad = (r * activation_derivative(n, a)?)?;
    let small = din.abs()?.lt(EPS)?;
    let scaled = ((r * dout)? / din)?;
    small.where_cond(&grad, &scaled)
}

/// Captum's DeepLIFT max-pool rule on a `[inputs; baselines]` batch: `input`/`output` are
/// the pool's, `g` the value at its output (both halves).
fn max_pool(
    input: &CTensor,
    output: &CTensor,
    g: &CTensor,
    win: &Window,
) -> candle_core::Result<CTensor> {
    let (n2, c, h, w) = input.dims4()?;
    let (_, _, oh, ow) = output.dims4()?;
    let n = n2 / 2;
    let flat = |t: &CTensor| t.flatten_all()?.to_vec1::<f32>();
    let (iv, ov, gv) = (flat(input)?, flat(output)?, flat(g)?);
    let (plane, oplane) = (h * w, oh * ow);
    let half = n * c * plane;
    let ohalf = n * c * oplane;
    // The first maximum of each window, as PyTorch's max_pool2d indices.
    let argmax = |v: &[f32], oy: usize, ox: usize| {
        let (y0, y1, _) = win.span(0, oy, h);
        let (x0, x1, _) = win.span(1, ox, w);
        let mut best = (f32::NEG_INFINITY, y0 * w + x0);
        for y in y0..y1 {
            for x in x0..x1 {
                let val = v[y * w + x];
                if val > best.0 || val.is_nan() {
                    best = (val, y * w + x);
                }
            }
        }
        best.1
    };
    // unpool(g * [max(o, o_b) - o_b; o - max(o, o_b)]) at each half's own maxima (max_unpool2d
    // writes: with overlapping windows sharing a maximum, the last window wins); the two halves
    // are added. The plain gradient of the input half (a scatter-add) is the fallback where
    // |x - b| < eps.
    let mut unpool = vec![0f32; 2 * half];
    let mut grad = vec![0f32; half];
    for p in 0..n * c {
        for (hf, sign) in [(0usize, 1f32), (1, -1f32)] {
            let base = hf * half + p * plane;
            let src = &iv[base..base + plane];
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = p * oplane + oy * ow + ox;
                    let (ox_, ob) = (ov[o], ov[ohalf + o]);
                    let m = ox_.max(ob);
                    let d = if sign > 0.0 { m - ob } else { ox_ - m };
                    let k = argmax(src, oy, ox);
                    unpool[base + k] = gv[hf * ohalf + o] * d;
                    if hf == 0 {
                        grad[p * plane + k] += gv[o];
                    }
                }
            }
        }
    }
    let mut out = vec![0f32; 2 * half];
    for k in 0..half {
        let din = iv[k] - iv[half + k];
        let u = unpool[k] + unpool[half + k];
        let v = if din.abs() < EPS { grad[k] } else { u / din };
        out[k] = v;
        out[half + k] = v;
    }
    CTensor::from_vec(out, (n2, c, h, w), &Device::Cpu)
}

impl Relevance for DeepLift {
    /// Prepare the graph, plan the backward pass, and make every baseline's model input, once.
    fn bind(&self, model: Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        let info = model.info();
        let baselines = self
            .baselines
            .iter()
            .map(|b| baseline_input(b, &info))
            .collect::<Result<_>>()?;
        let rule = Rescale {
            rescale_max_pool: self.rescale_max_pool,
        };
        let graph = model.graph()?;
        Ok(Box::new(DeepLiftExplainer {
            attributor: Attributor::new(Prepared::new(graph)?, crate::GRADIENT, rule, "DeepLIFT"),
            baselines,
        }))
    }
}

/// DeepLIFT bound to one model, with its baselines as model inputs.
struct DeepLiftExplainer {
    attributor: Attributor<Rescale>,
    /// `[C, H, W]` each.
    baselines: Vec<Tensor>,
}

/// The rescale rule for a graph that runs one image at a time (a transformer's: its ops move the
/// batch axis, so input and baseline cannot share a batch): the value flows back through the
/// input's trace, the multipliers come from the differences to the baseline's own trace.
/// Products, softmax and LayerNorm pass the gradient (the rescale rule covers activations; the
/// chain rule the rest, as in Captum for the ops it has no rule for).
struct PairedRescale<'a> {
    baseline: &'a [CTensor],
}

impl LayerRule for PairedRescale<'_> {
    fn layer(
        &self,
        p: &Prepared,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
    ) -> Result<CTensor> {
        Transpose.layer(p, node, a, z, r)
    }

    fn defines_nonlinear(&self) -> bool {
        true
    }

    fn nonlinear(
        &self,
        p: &Prepared,
        acts: &[CTensor],
        node: NodeId,
        r: &CTensor,
    ) -> Result<CTensor> {
        let n = &p.graph.nodes[node];
        let ce =
            |e: candle_core::Error| Error::internal(format!("DeepLIFT at layer `{}`: {e}", n.name));
        let i = n.inputs[0];
        if let Op::MaxPool { .. } = n.op {
            let (win, ceil_mode) = n.op.pool_window().expect("a max pooling");
            return ops::max_pool_t(&acts[i], r, &win, ceil_mode, ops::MaxRouting::First)
                .map_err(ce);
        }
        let a = &acts[i];
        let din = (a - &self.baseline[i]).map_err(ce)?;
        let dout = (&acts[node] - &self.baseline[node]).map_err(ce)?;
        rescale(n, a, &din, &dout, r).map_err(ce)
    }
}

impl DeepLiftExplainer {
    /// DeepLIFT for a graph that runs one image at a time: per image and baseline, two traces
    /// and a walk back through the image's ([`PairedRescale`]).
    fn explain_per_sample(&self, req: &Request<'_>) -> Result<Explanation> {
        let (input, targets) = (req.input, req.targets);
        let n = input.shape()[0];
        attribution::check_targets(targets, n, usize::MAX)?;
        let per = input.numel() / n.max(1);
        let mut shape1 = input.shape().to_vec();
        shape1[0] = 1;
        let ce = |e: candle_core::Error| Error::internal(format!("DeepLIFT: {e}"));
        let mut total = vec![0f64; input.numel()];
        let mut scores = vec![0f64; n];
        let k = self.baselines.len() as f64;
        for base in &self.baselines {
            let b = Tensor::new(shape1.clone(), base.data().to_vec())?;
            for (i, &t) in targets.iter().enumerate() {
                let x = input.sample(i)?;
                let tx = self.attributor.trace(&x, &[t])?;
                let tb = self.attributor.trace(&b, &[t])?;
                scores[i] += (tx.logits[0][t] - tb.logits[0][t]) as f64 / k;
                let classes = tx.logits[0].len();
                let seed = attribution::one_hot(classes, &[t], &[1.0])?;
                let rule = PairedRescale { baseline: &tb.acts };
                let p = self.attributor.prepared();
                let m =
                    sr_nn::propagate::backward(p, self.attributor.plan(), &rule, &tx.acts, seed)?;
                let m = from_candle(&m.to_dtype(DType::F32).map_err(ce)?)?;
                for (j, mv) in m.data().iter().enumerate() {
                    let d = x.data()[j] - base.data()[j];
                    total[i * per + j] += (d * mv) as f64 / k;
                }
            }
        }
        let rel = Tensor::new(
            input.shape().to_vec(),
            total.iter().map(|&v| v as f32).collect(),
        )?;
        Ok(attribution::explanation(rel, targets, &scores))
    }
}

impl Explainer for DeepLiftExplainer {
    fn explain(&self, req: &Request<'_>) -> Result<Explanation> {
        if self.attributor.prepared().exec.per_sample() {
            return self.explain_per_sample(req);
        }
        let (input, targets) = (req.input, req.targets);
        let ce = |e: candle_core::Error| Error::internal(format!("DeepLIFT: {e}"));
        let s = input.shape().to_vec();
        let n = s[0];
        attribution::check_targets(targets, n, usize::MAX)?;
        let per = input.numel() / n.max(1);
        let mut total = vec![0f64; input.numel()];
        let mut fx = vec![0f64; n];
        let mut fb_mean = vec![0f64; n];
        for base in &self.baselines {
            if base.numel() != per {
                return Err(Error::input(format!(
                    "the baseline has {} values per sample, the input {per}",
                    base.numel()
                )));
            }
            // [inputs; baselines] in one batch, as Captum runs it.
            let mut both = input.data().to_vec();
            for _ in 0..n {
                both.extend_from_slice(base.data());
            }
            let mut shape2 = s.clone();
            shape2[0] = 2 * n;
            // Each target twice: the input half and the baseline half.
            let both_targets: Vec<usize> = targets.iter().chain(targets).copied().collect();
            let trace = self
                .attributor
                .trace(&Tensor::new(shape2, both)?, &both_targets)?;
            let f = &trace.logits;
            for (i, &t) in targets.iter().enumerate() {
                fx[i] = f[i][t] as f64;
                fb_mean[i] += f[n + i][t] as f64 / self.baselines.len() as f64;
            }
            let m = self
                .attributor
                .backward(&trace, &both_targets, &vec![1.0; 2 * n])?;
            let m = m
                .narrow(0, 0, n)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(ce)?;
            let m = from_candle(&m)?;
            for (k, t) in total.iter_mut().enumerate() {
                let d = input.data()[k] - base.data()[k % per];
                *t += (d * m.data()[k]) as f64;
            }
        }
        let scale = 1.0 / self.baselines.len() as f64;
        let rel = Tensor::new(s, total.iter().map(|v| (v * scale) as f32).collect())?;
        // DeepLIFT explains the difference from the baseline(s).
        let scores: Vec<f64> = fx.iter().zip(&fb_mean).map(|(x, b)| x - b).collect();
        Ok(attribution::explanation(rel, targets, &scores))
    }
}
