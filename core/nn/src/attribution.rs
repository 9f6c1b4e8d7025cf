//! What every attribution method does around its backward pass: read the logits its seed starts
//! from, check the targets against them, and sum each sample's map for the statistics.

use candle_core::{Device, Tensor as CTensor};
use sr_core::graph::{Graph, NodeId};
use sr_core::{Error, Explanation, RelevanceStats, Result, Tensor};

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
