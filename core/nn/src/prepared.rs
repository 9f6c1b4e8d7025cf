//! What relevance methods derive from a model once, when they bind to it, and reuse for every
//! image: the graph, its executor, every layer's weights as candle tensors and the flipped
//! kernels of the stride-1 transposed convolutions ([`Prepared`]).

use crate::exec::Executor;
use crate::ops;
use crate::to_candle;
use candle_core::{Device, Tensor as CTensor, TensorId};
use sr_core::graph::{batch_norm_affine, Graph, NodeId, Op};
use sr_core::{Error, Result};
use std::collections::HashMap;

/// One layer's weights as candle tensors.
#[derive(Clone, Debug)]
pub enum LayerWeights {
    /// A convolution or a dense layer: `weight` and its optional `bias`.
    Weights {
        weight: CTensor,
        bias: Option<CTensor>,
    },
    /// A batch norm in inference mode: `y = x * scale + shift`, both `[C]`
    /// ([`batch_norm_affine`]).
    Affine { scale: CTensor, shift: CTensor },
}

/// A model's graph ready for backward passes: its executor (for the trace), the weights of
/// every layer that has some, and a cache of flipped kernels ([`ops::flip_kernel`]).
pub struct Prepared {
    pub graph: Graph,
    pub exec: Executor,
    /// Per node: the weights of a conv, linear or batch-norm node; `None` for the others.
    pub layers: Vec<Option<LayerWeights>>,
    flipped: HashMap<TensorId, CTensor>,
}

impl Prepared {
    /// Check the graph and convert its weights once (convolutions share the executor's).
    pub fn new(graph: Graph) -> Result<Self> {
        let exec = Executor::new(graph.clone())?;
        let layers = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(id, n)| {
                let ce =
                    |e: candle_core::Error| Error::internal(format!("layer `{}`: {e}", n.name));
                Ok(match n.op {
                    Op::Conv2d { .. } | Op::Linear => {
                        let (weight, bias) = match exec.conv_weights(id) {
                            Some((w, b)) => (w.clone(), b.cloned()),
                            None => (
                                to_candle(param(&graph, id, "weight")?)?,
                                n.param("bias").map(to_candle).transpose()?,
                            ),
                        };
                        Some(LayerWeights::Weights { weight, bias })
                    }
                    Op::BatchNorm { .. } => {
                        let (scale, shift) = batch_norm_affine(n)?;
                        let c = scale.len();
                        Some(LayerWeights::Affine {
                            scale: CTensor::from_vec(scale, c, &Device::Cpu).map_err(ce)?,
                            shift: CTensor::from_vec(shift, c, &Device::Cpu).map_err(ce)?,
                        })
                    }
                    _ => None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Prepared {
            graph,
            exec,
            layers,
            flipped: HashMap::new(),
        })
    }

    /// The weights of layer `node`, or an error naming it.
    pub fn layer(&self, node: NodeId) -> Result<&LayerWeights> {
        self.layers
            .get(node)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                Error::internal(format!(
                    "layer `{}` has no weights",
                    self.graph.nodes.get(node).map_or("?", |n| n.name.as_str())
                ))
            })
    }

    /// Cache the flipped form of `kernel`, a kernel of conv node `node` (its weights, or
    /// weights derived from them such as `W+`), when that convolution transposes by a flip
    /// ([`ops::transposes_by_flip`]).
    pub fn cache_flip(&mut self, node: NodeId, kernel: &CTensor) -> Result<()> {
        let n = &self.graph.nodes[node];
        let Some((win, groups)) = n.op.conv_window(kernel.dims()) else {
            return Ok(());
        };
        if ops::transposes_by_flip(kernel.dims(), &win, groups) {
            let f = ops::flip_kernel(kernel)
                .map_err(|e| Error::internal(format!("layer `{}`: {e}", n.name)))?;
            self.flipped.insert(kernel.id(), f);
        }
        Ok(())
    }

    /// The cached flipped kernels, by the id of the kernel they flip.
    pub fn flipped(&self) -> &HashMap<TensorId, CTensor> {
        &self.flipped
    }
}

fn param<'g>(graph: &'g Graph, node: NodeId, name: &str) -> Result<&'g sr_core::Tensor> {
    let n = &graph.nodes[node];
    n.param(name).ok_or_else(|| {
        Error::input(format!(
            "layer `{}` ({}): missing parameter `{name}`",
            n.name,
            n.op.name()
        ))
    })
}
