//! Running a [`Graph`] on the CPU: `forward` (logits) and `trace` (every node's output).
//!
//! Dense convolutions and matrix products go through candle-core (im2col + gemm). The ops
//! candle lacks or does slowly are written here on plain slices, parallel over channels:
//! depthwise convolution (candle runs one tiny convolution per group), pooling with
//! 4-sided padding and `ceil_mode`, and local response normalisation. Weights are converted
//! to candle tensors once, when the executor is built.
//!
//! Results do not depend on the thread count: every output element is computed by one
//! thread with the same order of summation.

use crate::error::{Error, Result};
use crate::graph::{Graph, Op};
use crate::ops::{self, Window};
use crate::tensor::Tensor;
use candle_core::{DType, Device, Tensor as CTensor};
use rayon::prelude::*;

/// Convert a candle error into ours, naming the layer.
fn ce(layer: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::internal(format!("layer `{layer}`: {e}"))
}

/// An sr-core tensor as a candle tensor (one copy).
pub fn to_candle(t: &Tensor) -> Result<CTensor> {
    CTensor::from_slice(t.data(), t.shape(), &Device::Cpu)
        .map_err(|e| Error::internal(e.to_string()))
}

/// A candle tensor as an sr-core tensor (one copy).
pub fn from_candle(t: &CTensor) -> Result<Tensor> {
    let shape = t.dims().to_vec();
    let data = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::internal(e.to_string()))?;
    Tensor::new(shape, data)
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
}

/// A graph ready to run.
pub struct Executor {
    graph: Graph,
    prepared: Vec<Prepared>,
    /// For each node, the last node that reads it (to free intermediates in `forward`).
    last_use: Vec<usize>,
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
                    weight_t: to_candle(n.param("weight").unwrap())?
                        .t()
                        .and_then(|t| t.contiguous())
                        .map_err(&e)?,
                    bias: n.param("bias").map(to_candle).transpose()?,
                },
                Op::BatchNorm { eps } => {
                    let g = |k: &str| n.param(k).unwrap().data();
                    let (w, b, m, v) =
                        (g("weight"), g("bias"), g("running_mean"), g("running_var"));
                    let scale: Vec<f32> =
                        w.iter().zip(v).map(|(w, v)| w / (v + eps).sqrt()).collect();
                    let shift: Vec<f32> = b
                        .iter()
                        .zip(m)
                        .zip(&scale)
                        .map(|((b, m), s)| b - m * s)
                        .collect();
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
            graph,
            prepared,
            last_use,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
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

    /// `N x ...` input to the output node's value.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
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

    /// Every node's output, in graph order (node 0 is the input itself).
    pub fn trace_candle(&self, x: &Tensor) -> Result<Vec<CTensor>> {
        self.check_input(x)?;
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
            (
                Op::Conv2d {
                    stride,
                    padding,
                    dilation,
                    groups,
                },
                Prepared::Conv { weight, bias },
            ) => {
                let (kh, kw) = (weight.dims()[2], weight.dims()[3]);
                let win = Window {
                    kernel: [kh, kw],
                    stride: *stride,
                    padding: *padding,
                    dilation: *dilation,
                };
                ops::conv2d(x, weight, bias.as_ref(), &win, *groups).map_err(&e)
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
            (
                Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                    ceil_mode,
                },
                _,
            ) => pool(x, *kernel, *stride, *padding, *ceil_mode, PoolKind::Max).map_err(&e),
            (
                Op::AvgPool {
                    kernel,
                    stride,
                    padding,
                    ceil_mode,
                    count_include_pad,
                },
                _,
            ) => pool(
                x,
                *kernel,
                *stride,
                *padding,
                *ceil_mode,
                PoolKind::Avg {
                    count_include_pad: *count_include_pad,
                },
            )
            .map_err(&e),
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
            (Op::Concat { axis }, _) => {
                let parts: Vec<&CTensor> = (0..node.inputs.len()).map(arg).collect();
                CTensor::cat(&parts, *axis).map_err(&e)
            }
            (Op::Dropout, _) => Ok(x.clone()),
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
            ) => lrn(x, *size, *alpha, *beta, *bias).map_err(&e),
            (op, _) => Err(Error::internal(format!(
                "layer `{}`: op `{}` was not prepared",
                node.name,
                op.name()
            ))),
        }
    }
}

fn dims4(x: &CTensor) -> candle_core::Result<(usize, usize, usize, usize, ops::View<'_>)> {
    let (n, c, h, w) = x.dims4()?;
    Ok((n, c, h, w, ops::view(x)?))
}

/// Output length of a window op (PyTorch/ONNX rule, as in shape inference).
pub fn out_len(len: usize, k: usize, s: usize, p0: usize, p1: usize, ceil: bool) -> usize {
    let span = len + p0 + p1 - k;
    let mut out = if ceil { span.div_ceil(s) } else { span / s } + 1;
    if ceil && (out - 1) * s >= len + p0 {
        out -= 1;
    }
    out
}

#[derive(Clone, Copy)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

/// The input window of output index `o` along one axis: `(start, end)` clamped to the
/// input, and the PyTorch divisor extent (clamped to the padded input only).
pub fn window(
    o: usize,
    k: usize,
    s: usize,
    p0: usize,
    p1: usize,
    len: usize,
) -> (usize, usize, usize) {
    let start = (o * s) as isize - p0 as isize;
    let end_padded = (start + k as isize).min((len + p1) as isize);
    let extent = (end_padded - start) as usize;
    (
        start.max(0) as usize,
        (end_padded.min(len as isize)).max(0) as usize,
        extent,
    )
}

/// Max or average pooling with 4-sided padding and `ceil_mode` (PyTorch's divisor rules).
pub fn pool(
    x: &CTensor,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 4],
    ceil: bool,
    kind: PoolKind,
) -> candle_core::Result<CTensor> {
    let (n, c, h, w, xs) = dims4(x)?;
    let oh = out_len(h, k[0], s[0], p[0], p[2], ceil);
    let ow = out_len(w, k[1], s[1], p[1], p[3], ceil);
    let out = ops::par_init(n * c * oh * ow, oh * ow, |nc, o| {
        let src = &xs[nc * h * w..(nc + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1, ey) = window(oy, k[0], s[0], p[0], p[2], h);
            for ox in 0..ow {
                let (x0, x1, ex) = window(ox, k[1], s[1], p[1], p[3], w);
                o[oy * ow + ox].write(match kind {
                    PoolKind::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for yy in y0..y1 {
                            for xx in x0..x1 {
                                m = m.max(src[yy * w + xx]);
                            }
                        }
                        m
                    }
                    PoolKind::Avg { count_include_pad } => {
                        let mut acc = 0f32;
                        for yy in y0..y1 {
                            for xx in x0..x1 {
                                acc += src[yy * w + xx];
                            }
                        }
                        let div = if count_include_pad {
                            ey * ex
                        } else {
                            (y1 - y0) * (x1 - x0)
                        };
                        if div == 0 {
                            0.0
                        } else {
                            acc / div as f32
                        }
                    }
                });
            }
        }
    });
    CTensor::from_vec(out, (n, c, oh, ow), &Device::Cpu)
}

/// Local response normalisation across channels (ONNX LRN; PyTorch's LocalResponseNorm for odd
/// sizes): `y = x / (bias + alpha / size * sum_{window} x^2)^beta`, the window running from
/// `c - floor((size - 1) / 2)` to `c + ceil((size - 1) / 2)`.
fn lrn(x: &CTensor, size: usize, alpha: f32, beta: f32, bias: f32) -> candle_core::Result<CTensor> {
    let (n, c, h, w, xs) = dims4(x)?;
    let plane = h * w;
    let lo = (size - 1) / 2;
    let hi = size - 1 - lo;
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(plane).enumerate().for_each(|(nc, o)| {
        let (b, ch) = (nc / c, nc % c);
        let first = ch.saturating_sub(lo);
        let last = (ch + hi).min(c - 1);
        for i in 0..plane {
            let mut sq = 0f32;
            for j in first..=last {
                let v = xs[(b * c + j) * plane + i];
                sq += v * v;
            }
            o[i] = xs[nc * plane + i] / (bias + alpha / size as f32 * sq).powf(beta);
        }
    });
    CTensor::from_vec(out, (n, c, h, w), &Device::Cpu)
}

/// A per-model cache for what a stage derives from a model's graph (a canonized graph, an
/// executor, converted weights): built on the first call, reused while the same model is
/// given. A model is recognised by its node count and the address of its first weight buffer
/// (weights are shared buffers, so two loaded models never share one).
pub struct GraphCache<T> {
    inner: std::sync::Mutex<Option<((usize, usize), std::sync::Arc<T>)>>,
}

impl<T> Default for GraphCache<T> {
    fn default() -> Self {
        GraphCache {
            inner: std::sync::Mutex::new(None),
        }
    }
}

impl<T> GraphCache<T> {
    pub fn get_or_build(
        &self,
        graph: &Graph,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<std::sync::Arc<T>> {
        let key = (
            graph.nodes.len(),
            graph
                .nodes
                .iter()
                .flat_map(|n| n.params.first())
                .map(|(_, t)| t.data().as_ptr() as usize)
                .next()
                .unwrap_or(0),
        );
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, v)) = guard.as_ref() {
            if *k == key {
                return Ok(v.clone());
            }
        }
        let v = std::sync::Arc::new(build()?);
        *guard = Some((key, v.clone()));
        Ok(v)
    }
}
