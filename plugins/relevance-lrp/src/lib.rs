//! `relevance.lrp`: layer-wise relevance propagation on sr-core's graph IR, so it works on
//! every backend.
//!
//! In Zennit's vocabulary: a [`rules::Rule`] is the math for one layer; a composite
//! ([`composites`]) maps layer kinds to rules under a preset name; a canonizer
//! ([`canonizers`]) rewrites the model first (BatchNorm merged into the conv before it); the
//! attributor is sr-core's modified backward pass ([`sr_core::propagate`]).

pub mod canonizers;
pub mod composites;
pub mod rules;

use candle_core::TensorId;
use candle_core::{DType, Device, Result as CResult, Tensor as CTensor};
use composites::Composite;
use rules::{LinearMap, Rule};
use serde::{Deserialize, Serialize};
use sr_core::exec::{to_candle, Executor, GraphCache};
use sr_core::ops::{self, MaxRouting, Window};
use sr_core::propagate::{self, AddMode, Fused, LayerRule, Structure};
use sr_core::{
    Error, Explanation, Graph, Model, NodeId, Op, Params, Relevance, RelevanceStage,
    RelevanceStats, Result, StageDef, Tensor,
};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrpParams {
    /// `epsilon`, `epsilon-plus-flat`, `epsilon-alpha2-beta1-flat`, `epsilon-gamma-box`, `srp`.
    pub composite: String,
    /// Epsilon of the epsilon rule (every layer in `epsilon`, dense layers in the presets).
    pub epsilon: f32,
    /// Gamma of the gamma rule (`epsilon-gamma-box`).
    pub gamma: f32,
    /// Residual adds: `proportional` (conservative) or `copy` (Zennit's behaviour).
    pub add: String,
    /// Merge BatchNorm into the conv before it.
    pub canonize: bool,
    /// Activations: `pass` or `gradient`; empty: the composite's.
    pub activation: String,
    /// Max pooling: `winner` (winner-take-all, ties split evenly) or `first` (PyTorch's gradient).
    pub max_pool: String,
    /// Starting relevance at the target: `logit`, `one` or `prob` (softmax).
    pub start: String,
    /// Per-layer overrides: layer name or kind (`first`, `conv`, `linear`, `batch_norm`) to a rule.
    pub rules: toml::Table,
}

impl Default for LrpParams {
    fn default() -> Self {
        LrpParams {
            composite: "epsilon-plus-flat".into(),
            epsilon: 1e-6,
            gamma: 0.25,
            add: "proportional".into(),
            canonize: true,
            activation: String::new(),
            max_pool: "winner".into(),
            start: "logit".into(),
            rules: toml::Table::new(),
        }
    }
}

impl Params for LrpParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        ("composite", "epsilon, epsilon-plus-flat, epsilon-alpha2-beta1-flat, epsilon-gamma-box, srp (the paper's code)"),
        ("epsilon", "epsilon of the epsilon rule (all layers in `epsilon`, dense layers in the presets)"),
        ("gamma", "gamma of the gamma rule (epsilon-gamma-box)"),
        ("add", "residual adds: proportional (conservative) or copy (Zennit's behaviour)"),
        ("canonize", "merge BatchNorm into the conv before it"),
        ("activation", "activations: pass or gradient (default: the composite's)"),
        ("max_pool", "winner (ties split evenly) or first (PyTorch's gradient)"),
        ("start", "relevance at the target: logit, one or prob"),
        ("rules", "per-layer overrides, e.g. { \"features.0\" = \"flat\", linear = \"epsilon(0.25)\" }"),
    ];
}

/// What the attributor needs of one model, computed once and cached.
struct Prepared {
    graph: Graph,
    exec: Executor,
    /// Per node: `(weights, bias)` as candle tensors (conv and linear), or BatchNorm's
    /// `(scale, shift)` per channel.
    weights: Vec<Option<(CTensor, Option<CTensor>)>>,
    /// Per node: `(W+, W-)` when its rule splits the weights by sign (computed once).
    signs: Vec<Option<(CTensor, CTensor)>>,
    /// The flipped kernels of the stride-1 transposed convolutions ([`ops::flip_kernel`]) of
    /// the weights above (`W`, `W+`, `W-`), by tensor id, computed once per model.
    flipped: HashMap<TensorId, CTensor>,
    rules: Vec<Option<Rule>>,
}

pub struct Lrp {
    params: LrpParams,
    composite_name: String,
    structure: Structure,
    start: Start,
    cache: GraphCache<Prepared>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    Logit,
    One,
    Prob,
}

impl RelevanceStage for Lrp {
    type Params = LrpParams;

    fn build(p: LrpParams) -> Result<Self> {
        // Validate everything that does not need the model now, so `srhost` fails before
        // loading any image.
        let bounds = (vec![0.0; 3], vec![1.0; 3]);
        let comp = Composite::named(&p.composite, p.epsilon, p.gamma, &bounds)?;
        let activation = match p.activation.as_str() {
            "" => comp.activation,
            "pass" => propagate::ActivationMode::Pass,
            "gradient" => propagate::ActivationMode::Gradient,
            o => {
                return Err(Error::params(format!(
                    "`activation` must be pass or gradient, got `{o}`"
                )))
            }
        };
        let add = match p.add.as_str() {
            "proportional" => AddMode::Proportional {
                epsilon: rules::STABILIZER,
            },
            "copy" => AddMode::Copy,
            o => {
                return Err(Error::params(format!(
                    "`add` must be proportional or copy, got `{o}`"
                )))
            }
        };
        let max_pool = match p.max_pool.as_str() {
            "winner" => MaxRouting::SplitTies,
            "first" => MaxRouting::First,
            o => {
                return Err(Error::params(format!(
                    "`max_pool` must be winner or first, got `{o}`"
                )))
            }
        };
        let start = match p.start.as_str() {
            "logit" => Start::Logit,
            "one" => Start::One,
            "prob" => Start::Prob,
            o => {
                return Err(Error::params(format!(
                    "`start` must be logit, one or prob, got `{o}`"
                )))
            }
        };
        for (k, v) in &p.rules {
            let text = v.as_str().ok_or_else(|| {
                Error::params(format!("`rules.{k}` must be a rule name (a string)"))
            })?;
            Rule::parse(text, p.epsilon, p.gamma, &bounds)
                .map_err(|e| e.context(format!("`rules.{k}`")))?;
        }
        Ok(Lrp {
            composite_name: p.composite.clone(),
            structure: Structure {
                activation,
                avg_pool: comp.avg_pool,
                max_pool,
                add,
                fuse: true,
            },
            start,
            params: p,
            cache: GraphCache::default(),
        })
    }
}

/// The first conv or dense layer on the way from the input (Zennit's "first layer").
fn first_layer(g: &Graph) -> Option<NodeId> {
    g.nodes
        .iter()
        .position(|n| matches!(n.op, Op::Conv2d { .. } | Op::Linear))
}

fn ce(e: candle_core::Error) -> Error {
    Error::internal(e.to_string())
}

impl Lrp {
    /// The same method with the backward walker's fusions off (activation masks and the
    /// rules' first divisions each in a pass of their own, see `sr_core::propagate::Fused`):
    /// slower, and equal value for value; the test of the fusions compares the two.
    pub fn unfused(mut self) -> Lrp {
        self.structure.fuse = false;
        self
    }

    fn prepare(&self, model: &dyn Model) -> Result<Arc<Prepared>> {
        let graph = model.graph()?;
        self.cache
            .get_or_build(&graph.clone(), || self.build_prepared(model, graph))
    }

    fn build_prepared(&self, model: &dyn Model, graph: Graph) -> Result<Prepared> {
        let info = model.info();
        let graph = if self.params.canonize {
            canonizers::merge_batch_norm(&graph)?
        } else {
            graph
        };
        // z^B bounds: the normalised images of pixel values 0 and 1, per channel, in f32.
        let low: Vec<f32> = info
            .mean
            .iter()
            .zip(&info.std)
            .map(|(m, s)| (0.0f32 - m) / s)
            .collect();
        let high: Vec<f32> = info
            .mean
            .iter()
            .zip(&info.std)
            .map(|(m, s)| (1.0f32 - m) / s)
            .collect();
        let bounds = (low, high);
        let comp = Composite::named(
            &self.composite_name,
            self.params.epsilon,
            self.params.gamma,
            &bounds,
        )?;
        let overrides: Vec<(String, Rule)> = self
            .params
            .rules
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    Rule::parse(
                        v.as_str().unwrap_or(""),
                        self.params.epsilon,
                        self.params.gamma,
                        &bounds,
                    )?,
                ))
            })
            .collect::<Result<_>>()?;
        let first = first_layer(&graph);
        let mut weights = Vec::with_capacity(graph.nodes.len());
        let mut rules_per_node = Vec::with_capacity(graph.nodes.len());
        for (id, n) in graph.nodes.iter().enumerate() {
            let kind = match n.op {
                Op::Conv2d { .. } => "conv",
                Op::Linear => "linear",
                Op::BatchNorm { .. } => "batch_norm",
                _ => {
                    weights.push(None);
                    rules_per_node.push(None);
                    continue;
                }
            };
            let by = |key: &str| {
                overrides
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, r)| r.clone())
            };
            let rule = by(&n.name)
                .or_else(|| if Some(id) == first { by("first") } else { None })
                .or_else(|| by(kind))
                .unwrap_or_else(|| comp.rule_for(kind, Some(id) == first));
            let w = match n.op {
                Op::BatchNorm { eps } => {
                    let p = |k: &str| n.param(k).expect("checked").data().to_vec();
                    let (g, b, m, v) =
                        (p("weight"), p("bias"), p("running_mean"), p("running_var"));
                    let scale: Vec<f32> = g
                        .iter()
                        .zip(&v)
                        .map(|(g, v)| g / (v + eps).sqrt())
                        .collect();
                    let shift: Vec<f32> = b
                        .iter()
                        .zip(&m)
                        .zip(&scale)
                        .map(|((b, m), s)| b - m * s)
                        .collect();
                    let c = scale.len();
                    (
                        CTensor::from_vec(scale, c, &Device::Cpu).map_err(ce)?,
                        Some(CTensor::from_vec(shift, c, &Device::Cpu).map_err(ce)?),
                    )
                }
                _ => (
                    to_candle(n.param("weight").expect("checked"))?,
                    n.param("bias").map(to_candle).transpose()?,
                ),
            };
            let is_bn = matches!(n.op, Op::BatchNorm { .. });
            if is_bn != matches!(rule, Rule::Pass | Rule::Gradient | Rule::Epsilon(_))
                && (is_bn || rule == Rule::Pass)
            {
                return Err(Error::params(format!(
                    "layer `{}` ({kind}): rule {rule:?} does not apply (batch norm takes pass, gradient or epsilon; pass is for batch norm only)",
                    n.name
                )));
            }
            weights.push(Some(w));
            rules_per_node.push(Some(rule));
        }
        let signs = weights
            .iter()
            .zip(&rules_per_node)
            .zip(&graph.nodes)
            .map(|((w, r), n)| match (w, r) {
                (Some((w, _)), Some(r))
                    if rules::uses_weight_signs(r) && !matches!(n.op, Op::BatchNorm { .. }) =>
                {
                    Ok(Some((w.relu().map_err(ce)?, w.minimum(0f32).map_err(ce)?)))
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut flipped = HashMap::new();
        for (id, n) in graph.nodes.iter().enumerate() {
            let Some((w, _)) = &weights[id] else { continue };
            let Some((win, groups)) = Window::of_conv(&n.op, w.dims()) else {
                continue;
            };
            if !ops::transposes_by_flip(w.dims(), &win, groups) {
                continue;
            }
            let mut kernels = vec![w];
            if let Some((p, m)) = &signs[id] {
                kernels.extend([p, m]);
            }
            for k in kernels {
                flipped.insert(k.id(), ops::flip_kernel(k).map_err(ce)?);
            }
        }
        let exec = Executor::new(graph.clone())?;
        Ok(Prepared {
            graph,
            exec,
            weights,
            signs,
            flipped,
            rules: rules_per_node,
        })
    }
}

/// A convolution as a [`LinearMap`].
pub struct ConvMap<'p> {
    pub win: Window,
    pub groups: usize,
    pub in_hw: (usize, usize),
    /// Flipped kernels computed beforehand, by the id of the kernel they flip.
    pub flipped: Option<&'p HashMap<TensorId, CTensor>>,
}

impl LinearMap for ConvMap<'_> {
    fn fwd(&self, x: &CTensor, v: &CTensor, c: Option<&CTensor>) -> CResult<CTensor> {
        ops::conv2d(x, v, c, &self.win, self.groups)
    }
    fn tr(&self, s: &CTensor, v: &CTensor) -> CResult<CTensor> {
        ops::conv2d_t(s, v, self.in_hw, &self.win, self.groups)
    }
    fn tr_finish(&self, s: &CTensor, v: &CTensor, fin: &ops::Finish) -> CResult<CTensor> {
        let f = self.flipped.and_then(|m| m.get(&v.id()));
        ops::conv2d_t_times(s, v, f, fin, self.in_hw, &self.win, self.groups)
    }
    fn per_channel(&self, a: &CTensor, values: &[f32]) -> CResult<CTensor> {
        per_channel(a, values)
    }
}

/// A dense layer as a [`LinearMap`].
pub struct DenseMap {
    pub in_shape: Vec<usize>,
}

impl LinearMap for DenseMap {
    fn fwd(&self, x: &CTensor, v: &CTensor, c: Option<&CTensor>) -> CResult<CTensor> {
        ops::linear(x, v, c)
    }
    fn tr(&self, s: &CTensor, v: &CTensor) -> CResult<CTensor> {
        ops::linear_t(s, v)?.reshape(self.in_shape.as_slice())
    }
    fn fwd_where(&self, x: &CTensor, v: &CTensor, r: &CTensor) -> CResult<CTensor> {
        ops::linear_where(x, v, r)
    }
    fn tr_of_ratio(
        &self,
        x: &CTensor,
        v: &CTensor,
        r: &CTensor,
        e: f32,
    ) -> CResult<Option<CTensor>> {
        ops::linear_ratio_t(x, v, r, e)?
            .map(|t| t.reshape(self.in_shape.as_slice()))
            .transpose()
    }
    fn per_channel(&self, a: &CTensor, values: &[f32]) -> CResult<CTensor> {
        per_channel(a, values)
    }
}

/// A tensor shaped like `a` whose channel `c` (dimension 1) holds `values[c]` (or `values[0]`
/// everywhere when one value is given).
fn per_channel(a: &CTensor, values: &[f32]) -> CResult<CTensor> {
    let c = a.dims()[1];
    let v: Vec<f32> = (0..c)
        .map(|i| {
            if values.len() == c {
                values[i]
            } else {
                values[0]
            }
        })
        .collect();
    let shape: Vec<usize> = (0..a.rank()).map(|d| if d == 1 { c } else { 1 }).collect();
    CTensor::from_vec(v, shape, &Device::Cpu)?
        .broadcast_as(a.shape())?
        .contiguous()
}

struct Layers<'p> {
    prep: &'p Prepared,
}

impl LayerRule for Layers<'_> {
    fn scales_by_input(&self, graph: &Graph, node: NodeId) -> bool {
        matches!(graph.nodes[node].op, Op::Conv2d { .. } | Op::Linear)
            && self.prep.rules[node]
                .as_ref()
                .is_some_and(rules::scales_by_input)
    }

    fn layer(
        &self,
        graph: &Graph,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
    ) -> Result<CTensor> {
        self.layer_fused(graph, node, a, z, r, &Fused::default())
    }

    fn divisor(&self, graph: &Graph, node: NodeId) -> Option<ops::Stab> {
        match graph.nodes[node].op {
            Op::Conv2d { .. } | Op::Linear => {
                self.prep.rules[node].as_ref().and_then(rules::divisor)
            }
            _ => None,
        }
    }

    fn finishes(&self, graph: &Graph, node: NodeId) -> bool {
        matches!(graph.nodes[node].op, Op::Conv2d { .. } | Op::Linear)
            && self.prep.rules[node].as_ref().is_some_and(rules::finishes)
    }

    fn layer_fused(
        &self,
        graph: &Graph,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
        how: &Fused,
    ) -> Result<CTensor> {
        let n = &graph.nodes[node];
        let (w, b) = self.prep.weights[node]
            .as_ref()
            .expect("prepared for every layer with weights");
        let rule = self.prep.rules[node]
            .as_ref()
            .expect("prepared for every layer with weights");
        let err =
            |e: candle_core::Error| Error::internal(format!("LRP at layer `{}`: {e}", n.name));
        match &n.op {
            Op::Conv2d { .. } => {
                let (win, groups) = Window::of_conv(&n.op, w.dims()).expect("a conv");
                let (_, _, h, wd) = a.dims4().map_err(err)?;
                let m = ConvMap {
                    win,
                    groups,
                    in_hw: (h, wd),
                    flipped: Some(&self.prep.flipped),
                };
                let signs = self.prep.signs[node].as_ref().map(|(p, n)| (p, n));
                rules::apply_with_signs(rule, &m, a, z, w, b.as_ref(), r, signs, how).map_err(err)
            }
            Op::Linear => {
                let m = DenseMap {
                    in_shape: a.dims().to_vec(),
                };
                let flat = a.flatten_from(1).map_err(err)?;
                let signs = self.prep.signs[node].as_ref().map(|(p, n)| (p, n));
                let out = rules::apply_with_signs(rule, &m, &flat, z, w, b.as_ref(), r, signs, how)
                    .map_err(err)?;
                out.reshape(a.shape()).map_err(err)
            }
            // (The walker folds gates and divisions into convolutions and dense layers only.)
            Op::BatchNorm { .. } if !how.is_plain() => Err(Error::internal(format!(
                "layer `{}`: nothing is fused into a batch norm",
                n.name
            ))),
            Op::BatchNorm { .. } => {
                let shape: Vec<usize> = (0..a.rank())
                    .map(|d| if d == 1 { w.dims()[0] } else { 1 })
                    .collect();
                let scale = w.reshape(shape.as_slice()).map_err(err)?;
                match rule {
                    Rule::Gradient => r.broadcast_mul(&scale).map_err(err),
                    Rule::Epsilon(e) => propagate::stabilise(z, *e)
                        .and_then(|zz| r.div(&zz))
                        .and_then(|s| s.broadcast_mul(&scale))
                        .and_then(|s| s.mul(a))
                        .map_err(err),
                    _ => Ok(r.clone()), // Pass
                }
            }
            _ => Err(Error::internal(format!(
                "layer `{}` has no weights",
                n.name
            ))),
        }
    }
}

impl Relevance for Lrp {
    fn explain(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Explanation> {
        let prep = self.prepare(model)?;
        let acts = prep.exec.trace_candle(input)?;
        let start = propagate::start_node(&prep.graph);
        let out = &acts[start];
        let (n, classes) = out.dims2().map_err(|_| {
            Error::unsupported(format!(
                "LRP starts from a `N x classes` output; layer `{}` gives {:?}",
                prep.graph.nodes[start].name,
                out.dims()
            ))
        })?;
        if targets.len() != n {
            return Err(Error::input(format!(
                "{} targets for a batch of {n}",
                targets.len()
            )));
        }
        let logits = out.to_vec2::<f32>().map_err(ce)?;
        let mut seed = vec![0f32; n * classes];
        let mut starts = Vec::with_capacity(n);
        for (i, &t) in targets.iter().enumerate() {
            if t >= classes {
                return Err(Error::input(format!(
                    "target class {t} does not exist (the model has {classes})"
                )));
            }
            let v = match self.start {
                Start::Logit => logits[i][t],
                Start::One => 1.0,
                Start::Prob => {
                    let m = logits[i].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let z: f64 = logits[i].iter().map(|&l| ((l - m) as f64).exp()).sum();
                    (((logits[i][t] - m) as f64).exp() / z) as f32
                }
            };
            seed[i * classes + t] = v;
            starts.push((t, v));
        }
        let seed = CTensor::from_vec(seed, (n, classes), &Device::Cpu).map_err(ce)?;
        let r = propagate::backward(
            &prep.graph,
            &acts,
            start,
            seed,
            &self.structure,
            &Layers { prep: &prep },
        )?;
        let rel = sr_core::exec::from_candle(&r.to_dtype(DType::F32).map_err(ce)?)?;
        let per = rel.numel() / n;
        let stats = starts
            .iter()
            .enumerate()
            .map(|(i, &(t, v))| RelevanceStats {
                target: t,
                relevance_sum: rel.data()[i * per..(i + 1) * per]
                    .iter()
                    .map(|&x| x as f64)
                    .sum(),
                target_score: v as f64,
            })
            .collect();
        Ok(Explanation {
            relevance: rel,
            stats,
        })
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::relevance::<Lrp>(
            "lrp",
            env!("CARGO_PKG_VERSION"),
            "Layer-wise relevance propagation: epsilon, z+, alpha-beta, z^B, flat, w^2, gamma rules; Zennit's composites and the paper's own (srp).",
        ),
    ],
}
