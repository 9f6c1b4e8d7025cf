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

use candle_core::{DType, Tensor as CTensor};
use sr_core::geometry::Window;
use sr_core::{
    Error, Explanation, Graph, Model, NoParams, NodeId, Op, Relevance, RelevanceStage, Result,
    StageDef, Tensor,
};
use sr_nn::ops::{self, MaxRouting};
use sr_nn::propagate::{self, ActivationMode, AddMode, GateMode, LayerRule, PoolMode, Structure};
use sr_nn::{attribution, from_candle, GraphCache, LayerWeights, Prepared};

/// PyTorch's autograd for the IR's layers.
pub const GRADIENT: Structure = Structure {
    activation: ActivationMode::Gradient,
    avg_pool: PoolMode::Gradient,
    max_pool: MaxRouting::First,
    add: AddMode::Copy,
    gate: GateMode::Gradient,
    layer_norm: ops::LayerNormBackward::Gradient,
    fuse: true,
};

/// Transposes every layer with weights: `T(W, R)`; BatchNorm multiplies by its scale.
struct Transpose<'p>(&'p Prepared);

impl LayerRule for Transpose<'_> {
    fn layer(
        &self,
        graph: &Graph,
        node: NodeId,
        a: &CTensor,
        _z: &CTensor,
        r: &CTensor,
    ) -> Result<CTensor> {
        let n = &graph.nodes[node];
        let err =
            |e: candle_core::Error| Error::internal(format!("gradient at layer `{}`: {e}", n.name));
        match (&n.op, self.0.layer(node)?) {
            (Op::Conv2d { .. }, LayerWeights::Weights { weight: w, .. }) => {
                let (win, groups) = Window::of_conv(&n.op, w.dims()).expect("a conv");
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

/// The gradient of the target logits, `N x C x H x W`, and the logits.
fn gradient(
    cache: &GraphCache<Prepared>,
    model: &dyn Model,
    input: &Tensor,
    targets: &[usize],
) -> Result<(Tensor, Vec<f64>)> {
    let graph = model.graph()?;
    let prep = cache.get_or_build(&graph.clone(), || Prepared::new(graph))?;
    let acts = prep.exec.trace_candle(input)?;
    let start = propagate::start_node(&prep.graph);
    let logits = attribution::target_logits(&prep.graph, &acts, start, targets, "the gradient")?;
    let classes = logits.first().map_or(0, Vec::len);
    let seed = attribution::one_hot(classes, targets, &vec![1.0; targets.len()])?;
    let scores = targets
        .iter()
        .enumerate()
        .map(|(i, &t)| logits[i][t] as f64)
        .collect();
    let g = propagate::backward(
        &prep.graph,
        &acts,
        start,
        seed,
        &GRADIENT,
        &Transpose(&prep),
    )?;
    let ce = |e: candle_core::Error| Error::internal(e.to_string());
    Ok((from_candle(&g.to_dtype(DType::F32).map_err(ce)?)?, scores))
}

/// The plain gradient.
#[derive(Default)]
pub struct Gradient {
    cache: GraphCache<Prepared>,
}

impl RelevanceStage for Gradient {
    type Params = NoParams;
    fn build(_: NoParams) -> Result<Self> {
        Ok(Gradient::default())
    }
}

impl Relevance for Gradient {
    fn explain(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Explanation> {
        let (g, scores) = gradient(&self.cache, model, input, targets)?;
        Ok(attribution::explanation(g, targets, &scores))
    }
}

/// Gradient x input.
#[derive(Default)]
pub struct GradientXInput {
    cache: GraphCache<Prepared>,
}

impl RelevanceStage for GradientXInput {
    type Params = NoParams;
    fn build(_: NoParams) -> Result<Self> {
        Ok(GradientXInput::default())
    }
}

impl Relevance for GradientXInput {
    fn explain(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Explanation> {
        let (g, scores) = gradient(&self.cache, model, input, targets)?;
        let gx = Tensor::new(
            g.shape().to_vec(),
            g.data()
                .iter()
                .zip(input.data())
                .map(|(a, b)| a * b)
                .collect(),
        )?;
        Ok(attribution::explanation(gx, targets, &scores))
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::relevance::<Gradient>("gradient", env!("CARGO_PKG_VERSION"), "The plain gradient of the target logit (Simonyan et al. 2014)."),
        StageDef::relevance::<GradientXInput>("gradient-x-input", env!("CARGO_PKG_VERSION"), "Gradient x input."),
        StageDef::relevance::<deeplift::DeepLift>("deeplift", env!("CARGO_PKG_VERSION"), "DeepLIFT's rescale rule against baselines; over background samples, Deep SHAP."),
    ],
}
