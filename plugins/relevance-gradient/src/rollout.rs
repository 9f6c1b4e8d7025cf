//! `relevance.rollout`: attention rollout (Abnar and Zuidema, "Quantifying attention flow in
//! transformers", ACL 2020), a baseline for the transformers' relevance methods.
//!
//! Each attention layer's weights, averaged over its heads, get the residual connection,
//! `A' = (1 - r) A + r I` (`residual`, 0.5 in the paper), and are normalised by row; the
//! layers' `A'` are multiplied from the last to the first, and the class token's row over the
//! patch tokens is the map: a `g x g` grid (`g^2` patches), each patch's value spread over its
//! pixels and channels. It explains the model's attention, whatever the target class.
//!
//! Attention layers are the graph's softmax nodes over `T` tokens whose rows are heads times
//! `T` (ViT and DeiT); a graph whose attention is over windows (Swin) has no class token row to
//! read, and is refused naming the layer.

use serde::{Deserialize, Serialize};
use sr_core::{
    Error, Explainer, Explanation, Model, NodeId, Op, Params, Relevance, RelevanceStage, Request,
    Result, Tensor,
};
use sr_nn::{attribution, Executor};
use std::sync::Arc;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutParams {
    /// The weight of the identity (the residual connection) in each layer, in `[0, 1)`.
    pub residual: f32,
}

impl Default for RolloutParams {
    fn default() -> Self {
        RolloutParams { residual: 0.5 }
    }
}

impl Params for RolloutParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[(
        "residual",
        "weight of the identity added to each layer's head-averaged attention, in [0, 1) (0.5, Abnar and Zuidema 2020)",
    )];
}

pub struct Rollout {
    residual: f32,
}

impl RelevanceStage for Rollout {
    type Params = RolloutParams;
    fn build(p: RolloutParams) -> Result<Self> {
        if !(0.0..1.0).contains(&p.residual) {
            return Err(Error::params(format!(
                "`residual` must be in [0, 1), got {}",
                p.residual
            )));
        }
        Ok(Rollout {
            residual: p.residual,
        })
    }
}

/// One attention layer: its softmax node, heads and tokens.
struct Layer {
    node: NodeId,
    heads: usize,
}

impl Relevance for Rollout {
    fn bind(&self, model: Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        let graph = model.graph()?;
        let shapes = graph.infer_shapes()?;
        let input = shapes[0].clone();
        let mut layers = vec![];
        let mut tokens = None;
        for (id, n) in graph.nodes.iter().enumerate() {
            if n.op != Op::Softmax || id == graph.output {
                continue;
            }
            let s = &shapes[id];
            let (rows, t) = (s[..s.len() - 1].iter().product::<usize>(), s[s.len() - 1]);
            let grid = (1..=t).find(|g| g * g + 1 >= t).unwrap_or(0);
            let fits = s.len() >= 2 && t > 1 && rows % t == 0 && grid * grid + 1 == t;
            if !fits || tokens.is_some_and(|k| k != t) {
                return Err(Error::unsupported(format!(
                    "attention rollout reads a class token's attention over a square grid of patches; layer `{}` attends over {t} tokens in rows of {rows}",
                    n.name
                ))
                .with_help("attention over windows (Swin) has no class token: use lrp with composite = \"attnlrp\" or \"cp-lrp\""));
            }
            tokens = Some(t);
            layers.push(Layer {
                node: id,
                heads: rows / t,
            });
        }
        let Some(t) = tokens else {
            return Err(Error::unsupported(
                "attention rollout needs a transformer: this model has no softmax inside its graph",
            ));
        };
        let g = ((t - 1) as f64).sqrt() as usize;
        let (h, w) = (input[2], input[3]);
        if h % g != 0 || w % g != 0 {
            return Err(Error::unsupported(format!(
                "the {g} x {g} patch grid does not tile the {h} x {w} input"
            )));
        }
        Ok(Box::new(RolloutExplainer {
            exec: Executor::new(graph)?,
            layers,
            tokens: t,
            residual: self.residual as f64,
        }))
    }
}

struct RolloutExplainer {
    exec: Executor,
    layers: Vec<Layer>,
    tokens: usize,
    residual: f64,
}

impl RolloutExplainer {
    /// The rollout of one image (a batch of 1): the class token's row over the patches.
    fn row(&self, x: &Tensor) -> Result<Vec<f64>> {
        let acts = self.exec.trace(x)?;
        let t = self.tokens;
        // rollout = A'_L ... A'_1, built up as A'_k (A'_{k-1} ... A'_1).
        let mut roll: Vec<f64> = (0..t * t)
            .map(|k| if k / t == k % t { 1.0 } else { 0.0 })
            .collect();
        for l in &self.layers {
            let a = acts[l.node].data();
            let mut m = vec![0f64; t * t];
            for hd in 0..l.heads {
                for (k, v) in m.iter_mut().enumerate() {
                    *v += a[hd * t * t + k] as f64 / l.heads as f64;
                }
            }
            for i in 0..t {
                let row = &mut m[i * t..(i + 1) * t];
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (1.0 - self.residual) * *v + if i == j { self.residual } else { 0.0 };
                }
                let s: f64 = row.iter().sum();
                if s != 0.0 {
                    row.iter_mut().for_each(|v| *v /= s);
                }
            }
            let mut next = vec![0f64; t * t];
            for i in 0..t {
                for k in 0..t {
                    let mik = m[i * t + k];
                    if mik == 0.0 {
                        continue;
                    }
                    for j in 0..t {
                        next[i * t + j] += mik * roll[k * t + j];
                    }
                }
            }
            roll = next;
        }
        Ok(roll[1..t].to_vec())
    }
}

impl Explainer for RolloutExplainer {
    fn explain(&self, req: &Request<'_>) -> Result<Explanation> {
        let (input, targets) = (req.input, req.targets);
        let s = input.shape().to_vec();
        let n = s[0];
        attribution::check_targets(targets, n, usize::MAX)?;
        let (c, h, w) = (s[1], s[2], s[3]);
        let g = ((self.tokens - 1) as f64).sqrt() as usize;
        let (ph, pw) = (h / g, w / g);
        let mut out = Vec::with_capacity(input.numel());
        let mut scores = vec![];
        for (i, &t) in targets.iter().enumerate() {
            let x = input.sample(i)?;
            let row = self.row(&x)?;
            let logits = self.exec.forward(&x)?;
            scores.push(logits.data()[t] as f64);
            for _ in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        out.push(row[(y / ph) * g + xx / pw] as f32);
                    }
                }
            }
        }
        Ok(attribution::explanation(
            Tensor::new(s, out)?,
            targets,
            &scores,
        ))
    }
}
