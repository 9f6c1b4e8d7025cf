//! `relevance.lrp`: layer-wise relevance propagation on sr-core's graph IR, so it works on
//! every backend.
//!
//! In Zennit's vocabulary: a [`rules::Rule`] is the math for one layer (one module each under
//! [`rules`]); a composite ([`composites`]) maps layer kinds to rules under a preset name; a
//! canonizer ([`canonizers`]) rewrites the model first (BatchNorm merged into the conv before
//! it); the attributor is sr-nn's [`sr_nn::Attributor`], which runs the modified backward pass
//! ([`sr_nn::propagate`]). The stage's parameters are parsed once when it is built; the rule of
//! every layer is chosen once, when the stage binds to a model ([`prepare`]).

pub mod canonizers;
pub mod composites;
pub mod maps;
mod prepare;
pub mod rules;

pub use maps::{AffineMap, ConvMap, DenseMap, LinearMap};

use composites::{Composite, CompositeName};
use rules::{Defaults, Rule};
use serde::{Deserialize, Serialize};
use sr_core::{
    Error, Explainer, Explanation, Model, Params, Relevance, RelevanceStage, Request, Result,
    StageDef,
};
use sr_nn::ops::{LayerNormBackward, MaxRouting};
use sr_nn::propagate::{ActivationMode, AddMode, AttentionMode, GateMode, PoolMode, Structure};
use sr_nn::Attributor;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrpParams {
    /// `epsilon`, `epsilon-plus-flat`, `epsilon-alpha2-beta1-flat`, `epsilon-gamma-box`, `srp`,
    /// `attnlrp`, `cp-lrp`.
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
    /// Average pooling: `norm` (as a linear layer, epsilon rule) or `gradient`; empty: the
    /// composite's.
    pub avg_pool: String,
    /// Starting relevance at the target: `logit`, `one` or `prob` (softmax).
    pub start: String,
    /// Per-layer overrides: layer name or kind (`first`, `conv`, `linear`, `batch_norm`) to a rule.
    /// Attention: `attnlrp`, `cp-lrp` or `gradient` (default: the composite's).
    pub attention: String,
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
            avg_pool: String::new(),
            start: "logit".into(),
            attention: String::new(),
            rules: toml::Table::new(),
        }
    }
}

impl Params for LrpParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        ("composite", "epsilon, epsilon-plus-flat, epsilon-alpha2-beta1-flat, epsilon-gamma-box, srp (the paper's code), attnlrp, cp-lrp (transformers)"),
        ("epsilon", "epsilon of the epsilon rule (all layers in `epsilon`, dense layers in the presets)"),
        ("gamma", "gamma of the gamma rule (epsilon-gamma-box)"),
        ("add", "residual adds: proportional (conservative) or copy (Zennit's behaviour)"),
        ("canonize", "merge BatchNorm into the conv before it"),
        ("activation", "activations: pass or gradient (default: the composite's)"),
        ("max_pool", "winner (ties split evenly) or first (PyTorch's gradient)"),
        ("avg_pool", "average pooling: norm (a linear layer, epsilon rule) or gradient (default: the composite's)"),
        ("start", "relevance at the target: logit, one or prob"),
        ("attention", "softmax and products in attention: attnlrp, cp-lrp (weights held constant) or gradient (default: the composite's)"),
        ("rules", "per-layer overrides, e.g. { \"features.0\" = \"flat\", linear = \"epsilon(0.25)\" }"),
    ];
}

/// The relevance the backward pass starts from at the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The target's logit.
    Logit,
    /// 1.
    One,
    /// The target's softmax probability.
    Prob,
}

/// Where a per-layer override applies (`rules.<key>`).
#[derive(Clone, Debug, PartialEq)]
pub enum Override {
    /// The layer of that name.
    Layer(String),
    /// The first conv or dense layer.
    First,
    /// Every layer of a kind.
    Kind(rules::LayerKind),
}

/// `value` among `choices` (`(name, value)`), or an error naming `key` and the choices.
fn one_of<T: Copy>(key: &str, value: &str, choices: &[(&str, T)]) -> Result<T> {
    choices
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            let list = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => {
                    format!("{} or {last}", rest.join(", "))
                }
                _ => names.join(""),
            };
            Error::params(format!("`{key}` must be {list}, got `{value}`"))
        })
}

pub struct Lrp {
    composite: Composite,
    overrides: Vec<(Override, Rule)>,
    canonize: bool,
    structure: Structure,
    start: Start,
}

impl RelevanceStage for Lrp {
    type Params = LrpParams;

    /// Every parameter is parsed and checked here, once, so `srhost` fails before loading any
    /// image.
    fn build(p: LrpParams) -> Result<Self> {
        let name: CompositeName = p.composite.parse()?;
        let composite = Composite::new(name, p.epsilon, p.gamma)?;
        let activation = match p.activation.as_str() {
            "" => composite.activation,
            a => one_of(
                "activation",
                a,
                &[
                    ("pass", ActivationMode::Pass),
                    ("gradient", ActivationMode::Gradient),
                ],
            )?,
        };
        let add = one_of(
            "add",
            &p.add,
            &[
                (
                    "proportional",
                    AddMode::Proportional {
                        epsilon: rules::STABILIZER,
                    },
                ),
                ("copy", AddMode::Copy),
            ],
        )?;
        let max_pool = one_of(
            "max_pool",
            &p.max_pool,
            &[
                ("winner", MaxRouting::SplitTies),
                ("first", MaxRouting::First),
            ],
        )?;
        let avg_pool = match p.avg_pool.as_str() {
            "" => composite.avg_pool,
            a => one_of(
                "avg_pool",
                a,
                &[
                    (
                        "norm",
                        PoolMode::Norm {
                            epsilon: rules::STABILIZER,
                        },
                    ),
                    ("gradient", PoolMode::Gradient),
                ],
            )?,
        };
        let attention = match p.attention.as_str() {
            "" => composite.attention,
            a => one_of(
                "attention",
                a,
                &[
                    ("attnlrp", AttentionMode::AttnLrp { epsilon: p.epsilon }),
                    ("cp-lrp", AttentionMode::CpLrp { epsilon: p.epsilon }),
                    ("gradient", AttentionMode::Gradient),
                ],
            )?,
        };
        let start = one_of(
            "start",
            &p.start,
            &[
                ("logit", Start::Logit),
                ("one", Start::One),
                ("prob", Start::Prob),
            ],
        )?;
        let defaults = Defaults {
            epsilon: p.epsilon,
            gamma: p.gamma,
        };
        let overrides = p
            .rules
            .iter()
            .map(|(k, v)| {
                let text = v.as_str().ok_or_else(|| {
                    Error::params(format!("`rules.{k}` must be a rule name (a string)"))
                })?;
                let rule =
                    Rule::parse(text, &defaults).map_err(|e| e.context(format!("`rules.{k}`")))?;
                let at = match k.as_str() {
                    "first" => Override::First,
                    "conv" => Override::Kind(rules::LayerKind::Conv),
                    "linear" => Override::Kind(rules::LayerKind::Linear),
                    "batch_norm" => Override::Kind(rules::LayerKind::BatchNorm),
                    name => Override::Layer(name.to_string()),
                };
                Ok((at, rule))
            })
            .collect::<Result<_>>()?;
        Ok(Lrp {
            structure: Structure {
                activation,
                avg_pool,
                max_pool,
                add,
                gate: GateMode::Signal,
                layer_norm: LayerNormBackward::Linear { epsilon: p.epsilon },
                attention,
                fuse: true,
            },
            composite,
            overrides,
            canonize: p.canonize,
            start,
        })
    }
}

impl Lrp {
    /// The same method with the backward walker's fusions off (activation masks and the
    /// rules' first divisions each in a pass of their own, see `sr_nn::propagate::Fused`):
    /// slower, and equal value for value; the test of the fusions compares the two.
    pub fn unfused(mut self) -> Lrp {
        self.structure.fuse = false;
        self
    }
}

impl Relevance for Lrp {
    /// Canonize the model's graph, choose every layer's rule, and plan the backward pass, once.
    fn bind(&self, model: Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        let (prep, rules) = prepare::LrpRules::prepare(
            model.graph()?,
            &model.info(),
            self.canonize,
            &self.composite,
            &self.overrides,
        )?;
        Ok(Box::new(LrpExplainer {
            attributor: Attributor::new(prep, self.structure, rules, "LRP"),
            start: self.start,
        }))
    }
}

/// LRP bound to one model.
struct LrpExplainer {
    attributor: Attributor<prepare::LrpRules>,
    start: Start,
}

impl Explainer for LrpExplainer {
    fn explain(&self, req: &Request<'_>) -> Result<Explanation> {
        let start = self.start;
        self.attributor.explain(req.input, req.targets, |l, t| {
            let v = match start {
                Start::Logit => l[t],
                Start::One => 1.0,
                Start::Prob => {
                    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let z: f64 = l.iter().map(|&v| ((v - m) as f64).exp()).sum();
                    (((l[t] - m) as f64).exp() / z) as f32
                }
            };
            (v, v as f64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_parameters_are_parsed_once_with_errors_naming_the_key() {
        let build = |p: LrpParams| Lrp::build(p).err().map(|e| e.message);
        assert_eq!(build(LrpParams::default()), None);
        assert_eq!(
            build(LrpParams {
                max_pool: "winnr".into(),
                ..Default::default()
            })
            .unwrap(),
            "`max_pool` must be winner or first, got `winnr`"
        );
        assert_eq!(
            build(LrpParams {
                start: "x".into(),
                ..Default::default()
            })
            .unwrap(),
            "`start` must be logit, one or prob, got `x`"
        );
        assert!(build(LrpParams {
            composite: "nope".into(),
            ..Default::default()
        })
        .unwrap()
        .contains("unknown composite `nope`"));
        let mut rules = toml::Table::new();
        rules.insert("features.0".into(), "zbox(1)".into());
        assert!(build(LrpParams {
            rules,
            ..Default::default()
        })
        .unwrap()
        .starts_with("`rules.features.0`: rule `zbox(1)` takes at most 0"));
    }
}
