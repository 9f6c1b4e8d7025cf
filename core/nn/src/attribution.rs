//! The attribution recipe, in one place: an [`Attributor`] holds what a method derived from its
//! model once (the prepared graph, the method's [`LayerRule`] and the walker's [`Plan`]) and
//! runs every request the same way: trace, read the logits at the start node, check the
//! targets, seed a one-hot at each target, walk back, sum each sample's map for the statistics.
//! LRP, the gradient and DeepLIFT supply only their rule and their seed.

use crate::from_candle;
use crate::prepared::Prepared;
use crate::propagate::{self, LayerRule, Plan, Structure};
use candle_core::{DType, Device, Tensor as CTensor};
use sr_core::graph::{Graph, NodeId};
use sr_core::{Error, Explanation, RelevanceStats, Result, Tensor};

/// A method bound to one model: the prepared graph, the rule, and the backward pass planned
/// once.
pub struct Attributor<R> {
    prep: Prepared,
    rule: R,
    plan: Plan,
    /// The method in errors (`LRP`, `the gradient`, `DeepLIFT`).
    method: &'static str,
}

/// One forward pass: every node's output, and the start node's `N x classes` values.
pub struct Trace {
    pub acts: Vec<CTensor>,
    pub logits: Vec<Vec<f32>>,
}

impl<R: LayerRule> Attributor<R> {
    /// Plan the backward pass of `prep`'s graph under `structure` with `rule`.
    pub fn new(prep: Prepared, structure: Structure, rule: R, method: &'static str) -> Self {
        let plan = Plan::new(&prep.graph, structure, &rule);
        Attributor {
            prep,
            rule,
            plan,
            method,
        }
    }

    pub fn prepared(&self) -> &Prepared {
        &self.prep
    }

    pub fn rule(&self) -> &R {
        &self.rule
    }

    /// The backward pass planned at bind (for a method that walks it with a rule of its own
    /// per request, as DeepLIFT does with each baseline's trace).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Run the model on `input` and read the values at the start node, after checking that
    /// there is one target per sample and that each is a class.
    pub fn trace(&self, input: &Tensor, targets: &[usize]) -> Result<Trace> {
        let acts = self.prep.exec.trace_candle(input)?;
        let logits = target_logits(
            &self.prep.graph,
            &acts,
            self.plan.start,
            targets,
            self.method,
        )?;
        Ok(Trace { acts, logits })
    }

    /// Walk back from a seed of `values[i]` at `(i, targets[i])`: the value at the input.
    pub fn backward(&self, trace: &Trace, targets: &[usize], values: &[f32]) -> Result<CTensor> {
        let classes = trace.logits.first().map_or(0, Vec::len);
        let seed = one_hot(classes, targets, values)?;
        propagate::backward(&self.prep, &self.plan, &self.rule, &trace.acts, seed)
    }

    /// The whole recipe: `seed(logits of sample i, its target)` gives the seed value and the
    /// score its relevance is compared with. Returns the `N x C x H x W` map and the scores.
    pub fn attribute(
        &self,
        input: &Tensor,
        targets: &[usize],
        seed: impl Fn(&[f32], usize) -> (f32, f64),
    ) -> Result<(Tensor, Vec<f64>)> {
        let n = input.shape().first().copied().unwrap_or(0);
        if self.prep.exec.per_sample() && n > 1 {
            // One image at a time (the graph moves the batch axis): the same maps as one by one.
            check_targets(targets, n, usize::MAX)?;
            let mut maps = Vec::with_capacity(n);
            let mut scores = Vec::with_capacity(n);
            for (i, t) in targets.iter().enumerate() {
                let (m, s) =
                    self.attribute_batch(&input.sample(i)?, std::slice::from_ref(t), &seed)?;
                maps.push(m);
                scores.extend(s);
            }
            return Ok((Tensor::stack(&maps)?, scores));
        }
        self.attribute_batch(input, targets, &seed)
    }

    /// [`Attributor::attribute`] on the batch as one trace.
    fn attribute_batch(
        &self,
        input: &Tensor,
        targets: &[usize],
        seed: &dyn Fn(&[f32], usize) -> (f32, f64),
    ) -> Result<(Tensor, Vec<f64>)> {
        let trace = self.trace(input, targets)?;
        let (values, scores): (Vec<f32>, Vec<f64>) = targets
            .iter()
            .zip(&trace.logits)
            .map(|(&t, l)| seed(l, t))
            .unzip();
        let r = self.backward(&trace, targets, &values)?;
        let ce = |e: candle_core::Error| Error::internal(e.to_string());
        Ok((from_candle(&r.to_dtype(DType::F32).map_err(ce)?)?, scores))
    }

    /// [`Attributor::attribute`] as an explanation with each sample's statistics.
    pub fn explain(
        &self,
        input: &Tensor,
        targets: &[usize],
        seed: impl Fn(&[f32], usize) -> (f32, f64),
    ) -> Result<Explanation> {
        let (map, scores) = self.attribute(input, targets, seed)?;
        Ok(explanation(map, targets, &scores))
    }
}

/// The `N x classes` values of node `start` in a trace (`acts`), row by row, after checking that
/// there is one target per sample and that every target is a class. `method` names the caller
/// in errors (`LRP`, `the gradient`).
pub fn target_logits(
    graph: &Graph,
    acts: &[CTensor],
    start: NodeId,
    targets: &[usize],
    method: &str,
) -> Result<Vec<Vec<f32>>> {
    let out = &acts[start];
    let (n, classes) = out.dims2().map_err(|_| {
        Error::unsupported(format!(
            "{method} starts from a `N x classes` output; layer `{}` gives {:?}",
            graph.nodes[start].name,
            out.dims()
        ))
    })?;
    check_targets(targets, n, classes)?;
    out.to_vec2::<f32>()
        .map_err(|e| Error::internal(e.to_string()))
}

/// One target per sample, each a class of the model.
pub fn check_targets(targets: &[usize], n: usize, classes: usize) -> Result<()> {
    if targets.len() != n {
        return Err(Error::input(format!(
            "{} targets for a batch of {n}",
            targets.len()
        )));
    }
    match targets.iter().find(|&&t| t >= classes) {
        Some(t) => Err(Error::input(format!(
            "target class {t} does not exist (the model has {classes})"
        ))),
        None => Ok(()),
    }
}

/// The seed of a backward pass: `N x classes` zeros with `values[i]` at `(i, targets[i])`.
pub fn one_hot(classes: usize, targets: &[usize], values: &[f32]) -> Result<CTensor> {
    let n = targets.len();
    let mut seed = vec![0f32; n * classes];
    for (i, (&t, &v)) in targets.iter().zip(values).enumerate() {
        seed[i * classes + t] = v;
    }
    CTensor::from_vec(seed, (n, classes), &Device::Cpu).map_err(|e| Error::internal(e.to_string()))
}

/// An explanation of `N x ...` maps, with each sample's relevance sum and `scores[i]`, the
/// value its relevance is compared with (the seed, a logit, a logit difference).
pub fn explanation(relevance: Tensor, targets: &[usize], scores: &[f64]) -> Explanation {
    let per = relevance.numel() / targets.len().max(1);
    let stats = targets
        .iter()
        .zip(scores)
        .enumerate()
        .map(|(i, (&t, &s))| RelevanceStats {
            target: t,
            relevance_sum: relevance.data()[i * per..(i + 1) * per]
                .iter()
                .map(|&v| v as f64)
                .sum(),
            target_score: s,
        })
        .collect();
    Explanation { relevance, stats }
}
