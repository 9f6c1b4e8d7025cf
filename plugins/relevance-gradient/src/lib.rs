//! `relevance.gradient` and `relevance.gradient-x-input`: the plain gradient of the target
//! logit with respect to the input (Simonyan, Vedaldi and Zisserman 2014) and its product with
//! the input, as `N x C x H x W` maps like every relevance method, so later stages treat all
//! methods alike.
//!
//! The gradient is sr-core's backward pass with every layer transposed (`T(W, R)`), the
//! derivative of every activation, max pooling routed to the first maximum of each window and
//! average pooling spread evenly: exactly PyTorch's autograd for these layers. BatchNorm is
//! not merged (its gradient is the per-channel scale).

pub mod deeplift;
pub mod rollout;

use candle_core::Tensor as CTensor;
use sr_core::{
    Error, Explainer, Explanation, Model, NoParams, NodeId, Op, Relevance, RelevanceStage, Request,
    Result, StageDef, Tensor,
};
use sr_nn::ops::{self, MaxRouting};
use sr_nn::propagate::{
    ActivationMode, AddMode, AttentionMode, GateMode, LayerRule, PoolMode, Structure,
};
use sr_nn::{attribution, Attributor, LayerWeights, Prepared};
use std::sync::Arc;

/// PyTorch's autograd for the IR's layers.
pub const GRADIENT: Structure = Structure {
    activation: ActivationMode::Gradient,
    avg_pool: PoolMode::Gradient,
    max_pool: MaxRouting::First,
    add: AddMode::Copy,
    gate: GateMode::Gradient,
    layer_norm: ops::LayerNormBackward::Gradient,
    attention: AttentionMode::Gradient,
    fuse: true,
};

/// Transposes every layer with weights: `T(W, R)`; BatchNorm multiplies by its scale.
pub struct Transpose;

impl LayerRule for Transpose {
    fn layer(
        &self,
        p: &Prepared,
        node: NodeId,
        a: &CTensor,
        _z: &CTensor,
        r: &CTensor,
    ) -> Result<CTensor> {
        let n = &p.graph.nodes[node];
        let err =
            |e: candle_core::Error| Error::internal(format!("gradient at layer `{}`: {e}", n.name));
        match (&n.op, p.layer(node)?) {
            (Op::Conv2d { .. }, LayerWeights::Weights { weight: w, .. }) => {
                let (win, groups) = n.op.conv_window(w.dims()).expect("a conv");
                let (_, _, h, wd) = a.dims4().map_err(err)?;
                ops::conv2d_t(r, w, (h, wd), &win, groups).map_err(err)
            }
            (Op::Linear, LayerWeights::Weights { weight: w, .. }) => ops::linear_t(r, w)
                .and_then(|g| g.reshape(a.shape()))
                .map_err(err),
            (Op::BatchNorm { .. }, LayerWeights::Affine { scale, .. }) => {
                let shape: Vec<usize> = (0..a.rank())
                    .map(|d| if d == 1 { scale.dims()[0] } else { 1 })
                    .collect();
                scale
                    .reshape(shape)
                    .and_then(|s| r.broadcast_mul(&s))
                    .map_err(err)
            }
            _ => Err(Error::internal(format!(
                "layer `{}` has no weights",
                n.name
            ))),
        }
    }
}

/// The gradient bound to one model: its graph prepared, the backward pass planned.
fn bind_gradient(model: &dyn Model) -> Result<Attributor<Transpose>> {
    Ok(Attributor::new(
        Prepared::new(model.graph()?)?,
        GRADIENT,
        Transpose,
        "the gradient",
    ))
}

/// The gradient of the target logits (seed 1 at each target), with the logits as scores.
fn gradient(a: &Attributor<Transpose>, req: &Request<'_>) -> Result<(Tensor, Vec<f64>)> {
    a.attribute(req.input, req.targets, |l, t| (1.0, l[t] as f64))
}

/// The plain gradient.
#[derive(Default)]
pub struct Gradient;

impl RelevanceStage for Gradient {
    type Params = NoParams;
    fn build(_: NoParams) -> Result<Self> {
        Ok(Gradient)
    }
}

impl Relevance for Gradient {
    fn bind(&self, model: Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        Ok(Box::new(GradientExplainer {
            attributor: bind_gradient(model.as_ref())?,
            times_input: false,
        }))
    }
}

/// Gradient x input.
#[derive(Default)]
pub struct GradientXInput;

impl RelevanceStage for GradientXInput {
    type Params = NoParams;
    fn build(_: NoParams) -> Result<Self> {
        Ok(GradientXInput)
    }
}

impl Relevance for GradientXInput {
    fn bind(&self, model: Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        Ok(Box::new(GradientExplainer {
            attributor: bind_gradient(model.as_ref())?,
            times_input: true,
        }))
    }
}

/// The gradient, or gradient x input, bound to one model.
struct GradientExplainer {
    attributor: Attributor<Transpose>,
    times_input: bool,
}

impl Explainer for GradientExplainer {
    fn explain(&self, req: &Request<'_>) -> Result<Explanation> {
        let (g, scores) = gradient(&self.attributor, req)?;
        let map = if self.times_input {
            Tensor::new(
                g.shape().to_vec(),
                g.data()
                    .iter()
                    .zip(req.input.data())
                    .map(|(a, b)| a * b)
                    .collect(),
            )?
        } else {
            g
        };
        Ok(attribution::explanation(map, req.targets, &scores))
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::relevance::<Gradient>("gradient", env!("CARGO_PKG_VERSION"), "The plain gradient of the target logit (Simonyan et al. 2014)."),
        StageDef::relevance::<GradientXInput>("gradient-x-input", env!("CARGO_PKG_VERSION"), "Gradient x input."),
        StageDef::relevance::<deeplift::DeepLift>("deeplift", env!("CARGO_PKG_VERSION"), "DeepLIFT's rescale rule against baselines; over background samples, Deep SHAP."),
        StageDef::relevance::<rollout::Rollout>("rollout", env!("CARGO_PKG_VERSION"), "Attention rollout of a vision transformer (Abnar and Zuidema 2020): the class token's attention through the layers, per patch."),
    ],
}
