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

use candle_core::{DType, Device, Tensor as CTensor};
use sr_core::exec::{from_candle, to_candle, Executor, GraphCache};
use sr_core::ops::{self, MaxRouting, Window};
use sr_core::propagate::{self, ActivationMode, AddMode, LayerRule, PoolMode, Structure};
use sr_core::{
    Error, Explanation, Graph, Model, NoParams, NodeId, Op, Relevance, RelevanceStage,
    RelevanceStats, Result, StageDef, Tensor,
};

/// PyTorch's autograd for the IR's layers.
pub const GRADIENT: Structure = Structure {
    activation: ActivationMode::Gradient,
    avg_pool: PoolMode::Gradient,
    max_pool: MaxRouting::First,
    add: AddMode::Copy,
    fuse: true,
};

struct Prepared {
    graph: Graph,
    exec: Executor,
    /// Per node: conv / linear weights as candle tensors, or batch norm's per-channel scale.
    weights: Vec<Option<CTensor>>,
}

impl Prepared {
    fn new(graph: Graph) -> Result<Self> {
        let weights = graph
            .nodes
            .iter()
            .map(|n| match n.op {
                Op::Conv2d { .. } | Op::Linear => {
                    to_candle(n.param("weight").expect("checked")).map(Some)
                }
                Op::BatchNorm { eps } => {
                    let p = |k: &str| n.param(k).expect("checked").data().to_vec();
                    let scale: Vec<f32> = p("weight")
                        .iter()
                        .zip(p("running_var"))
                        .map(|(g, v)| g / (v + eps).sqrt())
                        .collect();
                    let c = scale.len();
                    CTensor::from_vec(scale, c, &Device::Cpu)
                        .map(Some)
                        .map_err(|e| Error::internal(e.to_string()))
                }
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Prepared {
            exec: Executor::new(graph.clone())?,
            graph,
            weights,
        })
    }
}

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
        let w = self.0.weights[node]
            .as_ref()
            .expect("prepared for every layer with weights");
        match &n.op {
            Op::Conv2d { .. } => {
                let (win, groups) = Window::of_conv(&n.op, w.dims()).expect("a conv");
                let (_, _, h, wd) = a.dims4().map_err(err)?;
                ops::conv2d_t(r, w, (h, wd), &win, groups).map_err(err)
            }
            Op::Linear => ops::linear_t(r, w)
                .and_then(|g| g.reshape(a.shape()))
                .map_err(err),
            Op::BatchNorm { .. } => {
                let shape: Vec<usize> = (0..a.rank())
                    .map(|d| if d == 1 { w.dims()[0] } else { 1 })
                    .collect();
                w.reshape(shape)
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
) -> Result<(Tensor, Vec<f32>)> {
    let graph = model.graph()?;
    let prep = cache.get_or_build(&graph.clone(), || Prepared::new(graph))?;
    let acts = prep.exec.trace_candle(input)?;
    let start = propagate::start_node(&prep.graph);
    let ce = |e: candle_core::Error| Error::internal(e.to_string());
    let (n, classes) = acts[start]
        .dims2()
        .map_err(|_| Error::unsupported("the gradient starts from a `N x classes` output"))?;
    if targets.len() != n {
        return Err(Error::input(format!(
            "{} targets for a batch of {n}",
            targets.len()
        )));
    }
    let logits = acts[start].to_vec2::<f32>().map_err(ce)?;
    let mut seed = vec![0f32; n * classes];
    let mut scores = vec![];
    for (i, &t) in targets.iter().enumerate() {
        if t >= classes {
            return Err(Error::input(format!(
                "target class {t} does not exist (the model has {classes})"
            )));
        }
        seed[i * classes + t] = 1.0;
        scores.push(logits[i][t]);
    }
    let seed = CTensor::from_vec(seed, (n, classes), &Device::Cpu).map_err(ce)?;
    let g = propagate::backward(
        &prep.graph,
        &acts,
        start,
        seed,
        &GRADIENT,
        &Transpose(&prep),
    )?;
    Ok((from_candle(&g.to_dtype(DType::F32).map_err(ce)?)?, scores))
}

fn explanation(rel: Tensor, targets: &[usize], scores: &[f32]) -> Explanation {
    let per = rel.numel() / targets.len().max(1);
    let stats = targets
        .iter()
        .zip(scores)
        .enumerate()
        .map(|(i, (&t, &s))| RelevanceStats {
            target: t,
            relevance_sum: rel.data()[i * per..(i + 1) * per]
                .iter()
                .map(|&v| v as f64)
                .sum(),
            target_score: s as f64,
        })
        .collect();
    Explanation {
        relevance: rel,
        stats,
    }
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
        Ok(explanation(g, targets, &scores))
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
        Ok(explanation(gx, targets, &scores))
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
