//! Running a [`Graph`] on the CPU: `forward` (logits) and `trace` (every node's output).
//!
//! Each op is one kernel of [`crate::ops`] (convolutions, dense layers, pooling, LRN) or a
//! candle-core op (element-wise activations, concatenation). Weights are converted to candle
//! tensors once, when the executor is built.
//!
//! Results do not depend on the thread count: every output element is computed by one
//! thread with the same order of summation.

use crate::ops::{self, PoolKind};
use crate::{from_candle, to_candle};
use candle_core::{Device, Tensor as CTensor};
use sr_core::graph::{batch_norm_affine, Graph, Op};
use sr_core::{Error, Result, Tensor};

/// Convert a candle error into ours, naming the layer.
fn ce(layer: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::internal(format!("layer `{layer}`: {e}"))
}

/// Parameters of one node, prepared for execution.
enum Prepared {
    None,
    Conv {
        weight: CTensor,
        bias: Option<CTensor>,
    },
    /// `weight` transposed to `[in, out]`.
    Linear {
        weight_t: CTensor,
        bias: Option<CTensor>,
    },
    /// `y = x * scale + shift`, both `[1, C, 1, 1]`.
    Affine {
        scale: CTensor,
        shift: CTensor,
    },
    Slope(CTensor),
    /// LayerNorm's `weight` and `bias`.
    Norm {
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// A [`Op::Constant`]'s value.
    Value(CTensor),
}

/// A graph ready to run.
pub struct Executor {
    graph: Graph,
    prepared: Vec<Prepared>,
    /// For each node, the last node that reads it (to free intermediates in `forward`).
    last_use: Vec<usize>,
    /// The graph runs one image at a time ([`Graph::runs_per_sample`]).
    per_sample: bool,
}

impl Executor {
    /// Check the graph and convert its weights once.
    pub fn new(graph: Graph) -> Result<Self> {
        graph.infer_shapes()?;
        let mut prepared = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let e = ce(&n.name);
            let p = match &n.op {
                Op::Conv2d { .. } => Prepared::Conv {
                    weight: to_candle(n.param("weight").unwrap())?,
                    bias: n.param("bias").map(to_candle).transpose()?,
                },
                Op::Linear => Prepared::Linear {
                    weight_t: transposed(n.param("weight").unwrap()).map_err(&e)?,
                    bias: n.param("bias").map(to_candle).transpose()?,
                },
                Op::BatchNorm { .. } => {
                    let (scale, shift) = batch_norm_affine(n)?;
                    let c = scale.len();
                    Prepared::Affine {
                        scale: CTensor::from_vec(scale, (1, c, 1, 1), &Device::Cpu).map_err(&e)?,
                        shift: CTensor::from_vec(shift, (1, c, 1, 1), &Device::Cpu).map_err(&e)?,
                    }
                }
                Op::PRelu => {
                    let s = n.param("slope").unwrap();
                    Prepared::Slope(to_candle(s)?.flatten_all().map_err(&e)?)
                }
                Op::LayerNorm { .. } => Prepared::Norm {
                    weight: n.param("weight").unwrap().data().to_vec(),
                    bias: n.param("bias").unwrap().data().to_vec(),
                },
                Op::Constant => Prepared::Value(to_candle(n.param("value").unwrap())?),
                _ => Prepared::None,
            };
            prepared.push(p);
        }
        let mut last_use: Vec<usize> = (0..graph.nodes.len()).collect();
        for (id, n) in graph.nodes.iter().enumerate() {
            for &i in &n.inputs {
                last_use[i] = last_use[i].max(id);
            }
        }
        last_use[graph.output] = usize::MAX;
        Ok(Executor {
            per_sample: graph.runs_per_sample(),
            graph,
            prepared,
            last_use,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The weights and bias of conv node `id` as the executor holds them (`None` for another
    /// node).
    pub fn conv_weights(&self, id: usize) -> Option<(&CTensor, Option<&CTensor>)> {
        match self.prepared.get(id)? {
            Prepared::Conv { weight, bias } => Some((weight, bias.as_ref())),
            _ => None,
        }
    }

    /// Check an input batch against the graph's input shape.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let Op::Input { shape } = &self.graph.nodes[0].op else {
            unreachable!("checked by infer_shapes")
        };
        if x.shape().len() != shape.len() + 1 || x.shape()[1..] != shape[..] {
            return Err(Error::input(format!(
                "input has shape {:?}, the model expects [N, {}]",
                x.shape(),
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// Whether the graph runs one image at a time ([`Graph::runs_per_sample`]): `forward`
    /// splits a batch, `trace` takes one image.
    pub fn per_sample(&self) -> bool {
        self.per_sample
    }

    /// `N x ...` input to the output node's value.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let n = x.shape()[0];
        if self.per_sample && n > 1 {
            let outs = (0..n)
                .map(|i| self.forward(&x.sample(i)?))
                .collect::<Result<Vec<_>>>()?;
            return Tensor::stack(&outs);
        }
        let mut vals: Vec<Option<CTensor>> = vec![None; self.graph.nodes.len()];
        vals[0] = Some(to_candle(x)?);
        for id in 1..self.graph.nodes.len() {
            let v = self.eval(id, &vals)?;
            vals[id] = Some(v);
            for &i in &self.graph.nodes[id].inputs {
                if self.last_use[i] == id {
                    vals[i] = None;
                }
            }
        }
        from_candle(vals[self.graph.output].as_ref().unwrap())
    }

    /// Every node's output, in graph order (node 0 is the input itself). A graph that runs
    /// one image at a time traces one image.
    pub fn trace_candle(&self, x: &Tensor) -> Result<Vec<CTensor>> {
        self.check_input(x)?;
        if self.per_sample && x.shape()[0] != 1 {
            return Err(Error::input(format!(
                "this model runs one image at a time (its graph moves the batch axis); a trace takes a batch of 1, got {}",
                x.shape()[0]
            )));
        }
        let mut vals: Vec<Option<CTensor>> = vec![None; self.graph.nodes.len()];
        vals[0] = Some(to_candle(x)?);
        for id in 1..self.graph.nodes.len() {
            vals[id] = Some(self.eval(id, &vals)?);
        }
        Ok(vals.into_iter().map(Option::unwrap).collect())
    }

    pub fn trace(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.trace_candle(x)?.iter().map(from_candle).collect()
    }

    /// Evaluate node `id` from the values of its inputs.
    fn eval(&self, id: usize, vals: &[Option<CTensor>]) -> Result<CTensor> {
        let node = &self.graph.nodes[id];
        let e = ce(&node.name);
        let arg = |k: usize| {
            vals[node.inputs[k]]
                .as_ref()
                .expect("inputs are evaluated first (topological order)")
        };
        let x = arg(0);
        match (&node.op, &self.prepared[id]) {
            (Op::Conv2d { .. }, Prepared::Conv { weight, bias }) => {
                let (win, groups) = node
                    .op
                    .conv_window(weight.dims())
                    .ok_or_else(|| Error::internal(format!("layer `{}`: not a conv", node.name)))?;
                ops::conv2d(x, weight, bias.as_ref(), &win, groups).map_err(&e)
            }
            (Op::Linear, Prepared::Linear { weight_t, bias }) => {
                let y = x
                    .flatten_from(1)
                    .and_then(|x| x.matmul(weight_t))
                    .map_err(&e)?;
                match bias {
                    Some(b) => y.broadcast_add(b).map_err(&e),
                    None => Ok(y),
                }
            }
            (Op::BatchNorm { .. }, Prepared::Affine { scale, shift }) => x
                .broadcast_mul(scale)
                .and_then(|y| y.broadcast_add(shift))
                .map_err(&e),
            (Op::Relu, _) => x.relu().map_err(&e),
            (Op::Clip { min, max }, _) => x.clamp(*min, *max).map_err(&e),
            (Op::PRelu, Prepared::Slope(s)) => {
                // The slope runs along dimension 1, whatever the rank of x.
                let shape: Vec<usize> = (0..x.rank())
                    .map(|d| if d == 1 { s.dims()[0] } else { 1 })
                    .collect();
                let s = s.reshape(shape).map_err(&e)?;
                let neg = x
                    .minimum(0f32)
                    .and_then(|n| n.broadcast_mul(&s))
                    .map_err(&e)?;
                x.maximum(0f32).and_then(|p| p + neg).map_err(&e)
            }
            (Op::MaxPool { .. } | Op::AvgPool { .. }, _) => {
                let (win, ceil) = node.op.pool_window().expect("a pooling");
                let kind = match node.op {
                    Op::AvgPool {
                        count_include_pad, ..
                    } => PoolKind::Avg { count_include_pad },
                    _ => PoolKind::Max,
                };
                ops::pool(x, &win, ceil, kind).map_err(&e)
            }
            (Op::GlobalAvgPool, _) => x
                .mean_keepdim(3)
                .and_then(|y| y.mean_keepdim(2))
                .map_err(&e),
            (Op::Flatten, _) => x.flatten_from(1).map_err(&e),
            (Op::Add, _) => {
                let mut y = x.clone();
                for k in 1..node.inputs.len() {
                    y = (y + arg(k)).map_err(&e)?;
                }
                Ok(y)
            }
            (
                op @ (Op::Sigmoid | Op::HardSigmoid { .. } | Op::Silu | Op::HardSwish | Op::Gelu),
                _,
            ) => ops::unary_map(x, |v| ops::activation_value(op, v)).map_err(&e),
            (Op::Mul, _) => x.broadcast_mul(arg(1)).map_err(&e),
            (Op::LayerNorm { eps }, Prepared::Norm { weight, bias }) => {
                ops::layer_norm(x, weight, bias, *eps).map_err(&e)
            }
            (Op::ChannelShuffle { groups }, _) => ops::channel_shuffle(x, *groups).map_err(&e),
            (
                Op::Narrow {
                    start,
                    len,
                    axis,
                    step,
                },
                _,
            ) => ops::narrow(x, *axis, *start, *len, *step).map_err(&e),
            (Op::Concat { axis }, _) => {
                let parts: Vec<&CTensor> = (0..node.inputs.len()).map(arg).collect();
                CTensor::cat(&parts, *axis).map_err(&e)
            }
            (Op::Dropout, _) => Ok(x.clone()),
            (Op::Reshape { shape }, _) => x.reshape(shape.as_slice()).map_err(&e),
            (Op::Transpose { perm }, _) => x
                .permute(perm.as_slice())
                .and_then(|t| t.contiguous())
                .map_err(&e),
            (Op::MatMul, _) => ops::matmul(x, arg(1)).map_err(&e),
            (Op::Constant, Prepared::Value(v)) => Ok(v.clone()),
            (Op::Scale { factor }, _) => x.affine(*factor as f64, 0.0).map_err(&e),
            (Op::Softmax, _) => {
                let m = x.max_keepdim(1).map_err(&e)?;
                let ex = x.broadcast_sub(&m).and_then(|d| d.exp()).map_err(&e)?;
                let s = ex.sum_keepdim(1).map_err(&e)?;
                ex.broadcast_div(&s).map_err(&e)
            }
            (
                Op::Lrn {
                    size,
                    alpha,
                    beta,
                    bias,
                },
                _,
            ) => ops::lrn(x, *size, *alpha, *beta, *bias).map_err(&e),
            (op, _) => Err(Error::internal(format!(
                "layer `{}`: op `{}` was not prepared",
                node.name,
                op.name()
            ))),
        }
    }
}

/// The `[out, in]` weight `w` as a contiguous `[in, out]` candle tensor, made in one
/// allocation (a transposed view made contiguous held three copies at once).
fn transposed(w: &Tensor) -> candle_core::Result<CTensor> {
    let (o, i) = (w.shape()[0], w.shape()[1]);
    let d = w.data();
    let mut t = vec![0f32; o * i];
    // In 64 x 64 tiles: a column at a time would read the whole weight once per column.
    const B: usize = 64;
    for r0 in (0..o).step_by(B) {
        for c0 in (0..i).step_by(B) {
            for r in r0..(r0 + B).min(o) {
                for c in c0..(c0 + B).min(i) {
                    t[c * o + r] = d[r * i + c];
                }
            }
        }
    }
    CTensor::from_vec(t, (i, o), &Device::Cpu)
}
