//! What LRP derives from a model when it binds to it: the (canonized) graph prepared by sr-nn,
//! and [`LrpRules`]: the rule of every layer, the weight signs the rules need and the model's
//! input box, which is the [`LayerRule`] the backward walker calls at every layer with weights.

use crate::composites::Composite;
use crate::maps::{AffineMap, ConvMap, DenseMap, LinearMap};
use crate::rules::{Bounds, Layer, LayerKind, Rule};
use crate::{canonizers, Override};
use candle_core::Tensor as CTensor;
use sr_core::{Error, Graph, ModelInfo, NodeId, Result};
use sr_nn::propagate::{Fused, Fusion, LayerRule};
use sr_nn::{LayerWeights, Prepared};

pub(crate) struct LrpRules {
    /// Per node: its rule (layers with weights only).
    rules: Vec<Option<Rule>>,
    /// Per node: `(W+, W-)` when its rule splits the weights by sign (computed once).
    signs: Vec<Option<(CTensor, CTensor)>>,
    /// z^B's box: the normalised images of pixel values 0 and 1, per channel, in f32.
    bounds: Bounds,
}

impl LrpRules {
    /// Canonize `graph` when asked, prepare it, choose every layer's rule, and cache what the
    /// rules reuse (weight signs, flipped kernels).
    pub fn prepare(
        graph: Graph,
        info: &ModelInfo,
        canonize: bool,
        composite: &Composite,
        overrides: &[(Override, Rule)],
    ) -> Result<(Prepared, Self)> {
        let graph = if canonize {
            canonizers::merge_batch_norm(&graph)?
        } else {
            graph
        };
        let mut base = Prepared::new(graph)?;
        let norm = |v: f32| -> Vec<f32> {
            info.mean
                .iter()
                .zip(&info.std)
                .map(|(m, s)| (v - m) / s)
                .collect()
        };
        let bounds = (norm(0.0), norm(1.0));
        let first = base
            .graph
            .nodes
            .iter()
            .position(|n| LayerKind::of(&n.op).is_some_and(|k| k != LayerKind::BatchNorm));
        let mut rules = Vec::with_capacity(base.graph.nodes.len());
        let mut signs = Vec::with_capacity(base.graph.nodes.len());
        for (id, n) in base.graph.nodes.iter().enumerate() {
            let Some(kind) = LayerKind::of(&n.op) else {
                rules.push(None);
                signs.push(None);
                continue;
            };
            let is_first = Some(id) == first;
            let chosen = |o: &Override| match o {
                Override::Layer(name) => *name == n.name,
                Override::First => is_first,
                Override::Kind(k) => *k == kind,
            };
            // A layer's own name first, then `first`, then its kind, then the composite.
            let by = |want: fn(&Override) -> bool| {
                overrides
                    .iter()
                    .find(|(o, _)| want(o) && chosen(o))
                    .map(|(_, r)| r)
            };
            let rule = by(|o| matches!(o, Override::Layer(_)))
                .or_else(|| by(|o| matches!(o, Override::First)))
                .or_else(|| by(|o| matches!(o, Override::Kind(_))))
                .unwrap_or_else(|| composite.rule_for(kind, is_first))
                .clone();
            if !rule.applies_to(kind) {
                return Err(Error::params(format!(
                    "layer `{}` ({}): rule {rule:?} does not apply (batch norm takes pass, gradient or epsilon; pass is for batch norm only)",
                    n.name,
                    kind.name()
                )));
            }
            let sign = match base.layers[id].as_ref() {
                Some(LayerWeights::Weights { weight, .. }) if rule.uses_weight_signs() => {
                    let ce =
                        |e: candle_core::Error| Error::internal(format!("layer `{}`: {e}", n.name));
                    Some((
                        weight.relu().map_err(ce)?,
                        weight.minimum(0f32).map_err(ce)?,
                    ))
                }
                _ => None,
            };
            rules.push(Some(rule));
            signs.push(sign);
        }
        // The flipped kernels of the stride-1 transposes, for W and the weight signs.
        for (id, sign) in signs.iter().enumerate() {
            let mut kernels = vec![];
            if let Some(LayerWeights::Weights { weight, .. }) = &base.layers[id] {
                kernels.push(weight.clone());
            }
            if let Some((p, m)) = sign {
                kernels.extend([p.clone(), m.clone()]);
            }
            for k in &kernels {
                base.cache_flip(id, k)?;
            }
        }
        Ok((
            base,
            LrpRules {
                rules,
                signs,
                bounds,
            },
        ))
    }

    /// The rule of layer `node` if it is a conv or dense layer.
    fn linear_rule(&self, graph: &Graph, node: NodeId) -> Option<&Rule> {
        match LayerKind::of(&graph.nodes[node].op) {
            Some(LayerKind::Conv | LayerKind::Linear) => self.rules[node].as_ref(),
            _ => None,
        }
    }
}

impl LayerRule for LrpRules {
    fn fusion(&self, graph: &Graph, node: NodeId) -> Fusion {
        self.linear_rule(graph, node)
            .map(Rule::fusion)
            .unwrap_or_default()
    }

    fn layer(
        &self,
        p: &Prepared,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
    ) -> Result<CTensor> {
        self.layer_fused(p, node, a, z, r, &Fused::default())
    }

    fn layer_fused(
        &self,
        p: &Prepared,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
        how: &Fused,
    ) -> Result<CTensor> {
        let n = &p.graph.nodes[node];
        let err =
            |e: candle_core::Error| Error::internal(format!("LRP at layer `{}`: {e}", n.name));
        let rule = self.rules[node]
            .as_ref()
            .ok_or_else(|| Error::internal(format!("layer `{}` has no rule", n.name)))?;
        let (w, b) = match p.layer(node)? {
            LayerWeights::Weights { weight, bias } => (weight, bias.as_ref()),
            LayerWeights::Affine { scale, shift } => (scale, Some(shift)),
        };
        let signs = self.signs[node].as_ref().map(|(p, m)| (p, m));
        let layer = |map: &dyn LinearMap, a: &CTensor| {
            let l = Layer {
                map,
                a,
                z,
                w,
                b,
                signs,
                bounds: &self.bounds,
            };
            rule.apply_fused(&l, r, how).map_err(err)
        };
        match LayerKind::of(&n.op) {
            Some(LayerKind::Conv) => {
                let (win, groups) = n.op.conv_window(w.dims()).expect("a conv");
                let (_, _, h, wd) = a.dims4().map_err(err)?;
                let m = ConvMap {
                    win,
                    groups,
                    in_hw: (h, wd),
                    flipped: Some(p.flipped()),
                };
                layer(&m, a)
            }
            Some(LayerKind::Linear) => {
                let m = DenseMap {
                    in_shape: a.dims().to_vec(),
                };
                let flat = a.flatten_from(1).map_err(err)?;
                layer(&m, &flat)?.reshape(a.shape()).map_err(err)
            }
            // (The walker folds gates and divisions into convolutions and dense layers only.)
            Some(LayerKind::BatchNorm) if !how.is_plain() => Err(Error::internal(format!(
                "layer `{}`: nothing is fused into a batch norm",
                n.name
            ))),
            Some(LayerKind::BatchNorm) => layer(&AffineMap, a),
            None => Err(Error::internal(format!(
                "layer `{}` has no weights",
                n.name
            ))),
        }
    }
}
