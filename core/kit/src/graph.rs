//! The graph IR: a model as a DAG of layers that relevance methods can walk backwards.
//!
//! Backends (candle, ONNX) produce a [`Graph`]; relevance plugins own the math and match on
//! [`Op`] kinds, never on backend types, so every rule works on every backend.
//!
//! Conventions: tensors are NCHW; node 0 is the [`Op::Input`]; nodes are in topological order
//! (every input index is smaller than the node's own); padding is 4-sided
//! `[top, left, bottom, right]`, so TF-"SAME" and ONNX asymmetric pads need no extra node.
//! Parameters live in [`Node::params`] under fixed names (see [`Op::param_names`]).

use crate::error::{Error, Result};
use crate::geometry::Window;
use crate::tensor::Tensor;
use abi_stable::std_types::RVec;
use serde::{Deserialize, Serialize};
use sr_abi::{FfiGraph, FfiNamedTensor, FfiNode};

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// One operation and its attributes. Serialised as a TOML table tagged by `op` when it crosses
/// the plugin ABI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// The model input, `[C, H, W]` without the batch dimension.
    Input {
        shape: Vec<usize>,
    },
    /// params: `weight [O, I/groups, kh, kw]`, optional `bias [O]`.
    Conv2d {
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    },
    /// params: `weight [O, I]`, optional `bias [O]`. Input is flattened to `[N, I]`.
    Linear,
    /// params: `weight`, `bias`, `running_mean`, `running_var`, each `[C]`.
    BatchNorm {
        eps: f32,
    },
    Relu,
    /// `min(max(x, min), max)`: ReLU6 is `Clip { min: 0, max: 6 }`.
    Clip {
        min: f32,
        max: f32,
    },
    /// params: `slope [C]` (or `[1]`).
    PRelu,
    MaxPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
        ceil_mode: bool,
    },
    AvgPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
        ceil_mode: bool,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    /// Flatten every dimension after the batch.
    Flatten,
    /// Element-wise sum of its inputs (residual connections).
    Add,
    /// Concatenate along `axis` (1 = channels).
    Concat {
        axis: usize,
    },
    Dropout,
    /// Local response normalisation across channels (AlexNet).
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    Softmax,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `max(0, min(1, alpha * x + beta))` (ONNX HardSigmoid; PyTorch's is alpha 1/6, beta 1/2).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x * sigmoid(x)` (SiLU, Swish).
    Silu,
    /// `x * min(max(x + 3, 0), 6) / 6`.
    HardSwish,
    /// `x * Phi(x)`, `Phi` the standard normal CDF (the exact, erf form).
    Gelu,
    /// `x * g`: input 0 is the signal `x`, input 1 the gate `g`, of the same shape or
    /// `[N, C, 1, 1]` (one factor per channel: squeeze-and-excitation).
    Mul,
    /// Normalisation over the channels at every position (LayerNorm of a channels-last
    /// tensor): `(x - mean_c x) / sqrt(var_c x + eps) * weight + bias`. params: `weight [C]`,
    /// `bias [C]`.
    LayerNorm {
        eps: f32,
    },
    /// ShuffleNet's channel shuffle: channel `i * (C / groups) + j` moves to `j * groups + i`.
    ChannelShuffle {
        groups: usize,
    },
    /// `len` indices of axis `axis` from `start`, `step` apart (a Split, Slice or Gather; axis
    /// 1, the channels, and step 1 when not given; Swin's patch merging takes every other row).
    Narrow {
        start: usize,
        len: usize,
        #[serde(default = "channel_axis")]
        axis: usize,
        #[serde(default = "unit_step")]
        step: usize,
    },
    /// The same values in the shape `shape` (every axis, the batch axis included, at batch 1:
    /// see [`Op::runs_per_sample`]).
    Reshape {
        shape: Vec<usize>,
    },
    /// The axes permuted: output axis `k` is input axis `perm[k]` (batch axis included).
    Transpose {
        perm: Vec<usize>,
    },
    /// The matrix product of two computed values, `[..., m, k] x [..., k, n]`, over equal
    /// leading axes (attention's `q k^T` and `softmax(.) v`).
    MatMul,
    /// A learnt tensor (a class token, a position embedding, a relative position bias), param
    /// `value` (its whole shape, at batch 1). Its one input, the model input, only orders it;
    /// nothing flows back through it.
    Constant,
    /// `x * factor` (attention's `1 / sqrt(d)`).
    Scale {
        factor: f32,
    },
}

fn channel_axis() -> usize {
    1
}

fn unit_step() -> usize {
    1
}

/// The most values one node's output may hold at batch 1 (1 GiB of float32).
pub const MAX_VALUES_PER_NODE: usize = 1 << 28;

/// The default activation budget: the bytes of every node's output of a graph, at batch 1,
/// summed (the executor and the backward walkers allocate each at its full size). The shipped
/// EfficientNet-Lite0 takes 76 MiB (tests/models.rs prints it), VGG-16 about 110 MiB (counted by
/// hand: 28.6 million values); a graph over this budget is refused when it is imported or
/// checked, before anything is allocated.
pub const DEFAULT_ACTIVATION_BUDGET: u64 = 1 << 30;

/// The environment variable that sets the activation budget, in MiB.
pub const BUDGET_ENV: &str = "SRHOST_MAX_ACTIVATION_MB";

/// The activation budget in force: [`BUDGET_ENV`] (MiB), else [`DEFAULT_ACTIVATION_BUDGET`].
/// Read once per process (shape inference asks for it at every node).
pub fn activation_budget() -> u64 {
    static BUDGET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var(BUDGET_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&mb| mb > 0)
            .map(|mb| mb.saturating_mul(1 << 20))
            .unwrap_or(DEFAULT_ACTIVATION_BUDGET)
    })
}

impl Op {
    /// The window and group count of a `Conv2d` node whose weights are `[O, I/g, kh, kw]`;
    /// `None` for another op or weights that are not 4-D.
    pub fn conv_window(&self, weight_dims: &[usize]) -> Option<(Window, usize)> {
        match (self, weight_dims) {
            (
                Op::Conv2d {
                    stride,
                    padding,
                    dilation,
                    groups,
                },
                &[_, _, kh, kw],
            ) => Some((
                Window {
                    kernel: [kh, kw],
                    stride: *stride,
                    padding: *padding,
                    dilation: *dilation,
                },
                *groups,
            )),
            _ => None,
        }
    }

    /// The window and `ceil_mode` of a `MaxPool` or `AvgPool` node.
    pub fn pool_window(&self) -> Option<(Window, bool)> {
        match self {
            Op::MaxPool {
                kernel,
                stride,
                padding,
                ceil_mode,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
                ceil_mode,
                ..
            } => Some((Window::pool(*kernel, *stride, *padding), *ceil_mode)),
            _ => None,
        }
    }

    /// Whether the op's shape is the whole tensor at batch 1 (transformer exports move the batch
    /// axis around): a graph with such an op runs one image at a time ([`Graph::runs_per_sample`]).
    pub fn runs_per_sample(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. } | Op::Transpose { .. } | Op::MatMul | Op::Constant
        ) || matches!(self, Op::Narrow { axis: 0, .. } | Op::Concat { axis: 0 })
    }

    /// Whether the op is an element-wise activation of one input (what LRP passes relevance
    /// through).
    pub fn is_activation(&self) -> bool {
        matches!(
            self,
            Op::Relu
                | Op::Clip { .. }
                | Op::PRelu
                | Op::Sigmoid
                | Op::HardSigmoid { .. }
                | Op::Silu
                | Op::HardSwish
                | Op::Gelu
        )
    }

    /// The op's name as written in the `op` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::Linear => "linear",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::Clip { .. } => "clip",
            Op::PRelu => "p_relu",
            Op::MaxPool { .. } => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::Concat { .. } => "concat",
            Op::Dropout => "dropout",
            Op::Lrn { .. } => "lrn",
            Op::Softmax => "softmax",
            Op::Sigmoid => "sigmoid",
            Op::HardSigmoid { .. } => "hard_sigmoid",
            Op::Silu => "silu",
            Op::HardSwish => "hard_swish",
            Op::Gelu => "gelu",
            Op::Mul => "mul",
            Op::LayerNorm { .. } => "layer_norm",
            Op::ChannelShuffle { .. } => "channel_shuffle",
            Op::Narrow { .. } => "narrow",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::MatMul => "mat_mul",
            Op::Constant => "constant",
            Op::Scale { .. } => "scale",
        }
    }

    /// `(required, optional)` parameter names.
    pub fn param_names(&self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Op::Conv2d { .. } | Op::Linear => (&["weight"], &["bias"]),
            Op::BatchNorm { .. } => (&["weight", "bias", "running_mean", "running_var"], &[]),
            Op::PRelu => (&["slope"], &[]),
            Op::LayerNorm { .. } => (&["weight", "bias"], &[]),
            Op::Constant => (&["value"], &[]),
            _ => (&[], &[]),
        }
    }
}

/// One layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// A unique name, e.g. the weight-file prefix (`features.0`); used in errors and in TOML
    /// per-layer overrides.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub params: Vec<(String, Tensor)>,
}

impl Node {
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// The per-channel affine map `y = x * scale + shift` of a `BatchNorm` node in inference mode:
/// `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean * scale`. Errors
/// name the layer when it is not a batch norm or lacks a parameter.
pub fn batch_norm_affine(node: &Node) -> Result<(Vec<f32>, Vec<f32>)> {
    let Op::BatchNorm { eps } = node.op else {
        return Err(Error::internal(format!(
            "layer `{}` ({}) is not a batch norm",
            node.name,
            node.op.name()
        )));
    };
    let p = |k: &str| {
        node.param(k).map(Tensor::data).ok_or_else(|| {
            Error::input(format!(
                "layer `{}` (batch_norm): missing parameter `{k}`",
                node.name
            ))
        })
    };
    let (w, b, m, v) = (
        p("weight")?,
        p("bias")?,
        p("running_mean")?,
        p("running_var")?,
    );
    if [b.len(), m.len(), v.len()].iter().any(|&l| l != w.len()) {
        return Err(Error::input(format!(
            "layer `{}` (batch_norm): parameters of different lengths",
            node.name
        )));
    }
    let scale: Vec<f32> = w.iter().zip(v).map(|(w, v)| w / (v + eps).sqrt()).collect();
    let shift = b
        .iter()
        .zip(m)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Ok((scale, shift))
}

/// A model as a DAG in topological order. Node 0 is the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub output: NodeId,
}

impl Graph {
    /// Checks the structure, the parameters and their shapes, and returns every node's output
    /// shape with batch size 1. Errors name the layer and give the expected and found shapes.
    pub fn infer_shapes(&self) -> Result<Vec<Vec<usize>>> {
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        // Bytes of every value so far, at batch 1 (float32).
        let mut total: u64 = 0;
        if self.nodes.is_empty() {
            return Err(Error::input("the graph has no nodes"));
        }
        if self.output >= self.nodes.len() {
            return Err(Error::input(format!(
                "the graph output {} is not a node (the graph has {})",
                self.output,
                self.nodes.len()
            )));
        }
        for _ in 0..self.nodes.len() {
            let out = self.infer_next_shape(&shapes, &mut total)?;
            shapes.push(out);
        }
        Ok(shapes)
    }

    /// The output shape of node `shapes.len()` from the shapes of the nodes before it (what
    /// [`Graph::infer_shapes`] does node by node, so an importer that grows a graph checks each
    /// new node in constant time), charged to `total`, the bytes of the values so far at batch
    /// 1, against the activation budget ([`activation_budget`]).
    pub fn infer_next_shape(&self, shapes: &[Vec<usize>], total: &mut u64) -> Result<Vec<usize>> {
        let id = shapes.len();
        let node = self
            .nodes
            .get(id)
            .ok_or_else(|| Error::internal(format!("no node {id} to infer")))?;
        let err =
            |m: String| Error::input(format!("layer `{}` ({}): {m}", node.name, node.op.name()));
        if id == 0 {
            match &node.op {
                Op::Input { shape } if !node.inputs.is_empty() => {
                    return Err(err(format!(
                        "the input node takes no inputs, has {:?}",
                        node.inputs
                    )));
                }
                Op::Input { shape } => {
                    return Ok(std::iter::once(1).chain(shape.iter().copied()).collect());
                }
                _ => return Err(err("node 0 must be the input".into())),
            }
        }
        if let Some(&bad) = node.inputs.iter().find(|&&i| i >= id) {
            return Err(err(format!(
                "input {bad} is not an earlier node (graph must be topological)"
            )));
        }
        let want_inputs = match node.op {
            Op::Input { .. } => return Err(err("only node 0 may be an input".into())),
            Op::Add => None,
            Op::Concat { .. } => None,
            Op::Mul | Op::MatMul => Some(2),
            _ => Some(1),
        };
        match want_inputs {
            Some(n) if node.inputs.len() != n => {
                let s = if n == 1 { "" } else { "s" };
                return Err(err(format!(
                    "expects {n} input{s}, has {}",
                    node.inputs.len()
                )));
            }
            None if node.inputs.len() < 2 => {
                return Err(err(format!(
                    "expects 2 or more inputs, has {}",
                    node.inputs.len()
                )));
            }
            _ => {}
        }
        let (required, optional) = node.op.param_names();
        for r in required {
            if node.param(r).is_none() {
                return Err(err(format!("missing parameter `{r}`")));
            }
        }
        if let Some((n, _)) = node
            .params
            .iter()
            .find(|(n, _)| !required.contains(&n.as_str()) && !optional.contains(&n.as_str()))
        {
            return Err(err(format!(
                "unexpected parameter `{n}` (expected {required:?} {optional:?})"
            )));
        }
        let x = &shapes[node.inputs[0]];
        let check = |pname: &str, want: &[usize]| -> Result<()> {
            match node.param(pname) {
                Some(t) if t.shape() != want => Err(err(format!(
                    "parameter `{pname}` (`{}.{pname}`) has shape {:?}, expected {want:?}",
                    node.name,
                    t.shape()
                ))),
                _ => Ok(()),
            }
        };
        let out: Vec<usize> = match &node.op {
            Op::Input { .. } => unreachable!(),
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            } => {
                if x.len() != 4 {
                    return Err(err(format!("expects an NCHW input, got shape {x:?}")));
                }
                let w = node.param("weight").unwrap().shape();
                if w.len() != 4 || *groups == 0 || x[1] % groups != 0 || w[0] % groups != 0 {
                    return Err(err(format!(
                        "weight shape {w:?} does not fit input {x:?} with groups {groups}"
                    )));
                }
                check("weight", &[w[0], x[1] / groups, w[2], w[3]])?;
                check("bias", &[w[0]])?;
                let win = Window {
                    kernel: [w[2], w[3]],
                    stride: *stride,
                    padding: *padding,
                    dilation: *dilation,
                };
                match win.output_size(x[2], x[3], false) {
                    Some((h, ww)) => vec![x[0], w[0], h, ww],
                    None => return Err(err(format!("kernel {w:?} does not fit input {x:?}"))),
                }
            }
            Op::Linear => {
                let fan_in: usize = x[1..].iter().product();
                let w = node.param("weight").unwrap().shape();
                if w.len() != 2 {
                    return Err(err(format!(
                        "parameter `weight` has shape {w:?}, expected [out, {fan_in}]"
                    )));
                }
                check("weight", &[w[0], fan_in])?;
                check("bias", &[w[0]])?;
                vec![x[0], w[0]]
            }
            Op::BatchNorm { .. } => {
                for p in ["weight", "bias", "running_mean", "running_var"] {
                    check(p, &[x[1]])?;
                }
                x.clone()
            }
            Op::PRelu => {
                let s = node.param("slope").unwrap();
                if s.numel() != 1 && s.numel() != x[1] {
                    return Err(err(format!(
                        "parameter `slope` has {} values, expected 1 or {} (the channels)",
                        s.numel(),
                        x[1]
                    )));
                }
                x.clone()
            }
            Op::MaxPool { kernel, .. } | Op::AvgPool { kernel, .. } => {
                let (win, ceil) = node.op.pool_window().expect("a pooling");
                if x.len() != 4 {
                    return Err(err(format!("expects an NCHW input, got {x:?}")));
                }
                match win.output_size(x[2], x[3], ceil) {
                    Some((h, w)) => vec![x[0], x[1], h, w],
                    None => {
                        return Err(err(format!(
                            "kernel {kernel:?} with stride {:?} does not fit input {x:?}",
                            win.stride
                        )))
                    }
                }
            }
            Op::GlobalAvgPool => {
                if x.len() != 4 {
                    return Err(err(format!("expects an NCHW input, got {x:?}")));
                }
                vec![x[0], x[1], 1, 1]
            }
            Op::Flatten => vec![x[0], x[1..].iter().product()],
            Op::Add => {
                for &i in &node.inputs[1..] {
                    if shapes[i] != *x {
                        return Err(err(format!(
                            "input shapes differ: {x:?} and {:?}",
                            shapes[i]
                        )));
                    }
                }
                x.clone()
            }
            Op::Concat { axis } => {
                let mut out = x.clone();
                if *axis >= out.len() {
                    return Err(err(format!("axis {axis} out of range for {x:?}")));
                }
                for &i in &node.inputs[1..] {
                    let s = &shapes[i];
                    let same_rest = s.len() == x.len()
                        && s.iter()
                            .zip(x)
                            .enumerate()
                            .all(|(d, (a, b))| d == *axis || a == b);
                    if !same_rest {
                        return Err(err(format!(
                            "cannot concatenate {x:?} and {s:?} on axis {axis}"
                        )));
                    }
                    out[*axis] += s[*axis];
                }
                out
            }
            Op::Mul => {
                let g = &shapes[node.inputs[1]];
                let per_channel = x.len() == 4 && *g == [x[0], x[1], 1, 1];
                if g != x && !per_channel {
                    return Err(err(format!(
                        "the gate has shape {g:?}; expected the signal's {x:?} or one value per channel [{}, {}, 1, 1]",
                        x[0],
                        x.get(1).copied().unwrap_or(0)
                    )));
                }
                x.clone()
            }
            Op::LayerNorm { .. } => {
                if x.len() < 2 {
                    return Err(err(format!("expects a [N, C, ...] input, got {x:?}")));
                }
                check("weight", &[x[1]])?;
                check("bias", &[x[1]])?;
                x.clone()
            }
            Op::ChannelShuffle { groups } => {
                if x.len() != 4 || *groups == 0 || x[1] % groups != 0 {
                    return Err(err(format!(
                        "{groups} groups do not divide the channels of {x:?}"
                    )));
                }
                x.clone()
            }
            Op::Narrow {
                start,
                len,
                axis,
                step,
            } => {
                // The last index taken, start + (len - 1) * step, must be on the axis.
                let last = len
                    .checked_sub(1)
                    .and_then(|l| l.checked_mul(*step))
                    .and_then(|l| l.checked_add(*start));
                if *axis >= x.len() || *step == 0 || last.is_none_or(|l| l >= x[*axis]) {
                    let by = if *step == 1 {
                        String::new()
                    } else {
                        format!(" by {step}")
                    };
                    return Err(err(format!(
                        "indices {start}..{}{by} of axis {axis} are not within {x:?}",
                        start.saturating_add(len.saturating_mul(*step)),
                    )));
                }
                let mut out = x.clone();
                out[*axis] = *len;
                out
            }
            Op::Reshape { shape } => {
                let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if shape.is_empty() || count != Some(x.iter().product()) {
                    return Err(err(format!("cannot reshape {x:?} to {shape:?}")));
                }
                shape.clone()
            }
            Op::Transpose { perm } => {
                let mut seen = vec![false; x.len()];
                let ok = perm.len() == x.len()
                    && perm
                        .iter()
                        .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
                if !ok {
                    return Err(err(format!(
                        "perm {perm:?} is not a permutation of the {} axes of {x:?}",
                        x.len()
                    )));
                }
                perm.iter().map(|&p| x[p]).collect()
            }
            Op::MatMul => {
                let b = &shapes[node.inputs[1]];
                let r = x.len();
                if r < 2 || b.len() != r || x[..r - 2] != b[..r - 2] || x[r - 1] != b[r - 2] {
                    return Err(err(format!(
                        "cannot multiply {x:?} by {b:?} (srhost multiplies [..., m, k] by [..., k, n] with equal leading axes)"
                    )));
                }
                let mut out = x.clone();
                out[r - 1] = b[r - 1];
                out
            }
            Op::Constant => {
                let v = node.param("value").unwrap();
                if v.shape().is_empty() {
                    return Err(err("parameter `value` has no shape".into()));
                }
                v.shape().to_vec()
            }
            Op::Relu
            | Op::Clip { .. }
            | Op::Dropout
            | Op::Lrn { .. }
            | Op::Softmax
            | Op::Sigmoid
            | Op::HardSigmoid { .. }
            | Op::Silu
            | Op::HardSwish
            | Op::Gelu
            | Op::Scale { .. } => x.clone(),
        };
        // Every value is allocated at its full size by the executor and the walkers: its
        // size is checked here, and the sum over the graph bounded, before anything runs.
        let values = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_VALUES_PER_NODE)
            .ok_or_else(|| {
                err(format!(
                    "its output would be {out:?}: more than {MAX_VALUES_PER_NODE} values (a pad, stride or size out of range?)"
                ))
            })?;
        *total = total.saturating_add(values as u64 * 4);
        let budget = activation_budget();
        if *total > budget {
            return Err(err(format!(
                "the graph's values up to here take {} MiB for one image, more than the activation budget of {} MiB",
                *total >> 20,
                budget >> 20
            ))
            .with_help(format!(
                "raise it with {BUDGET_ENV} (MiB) if the model is meant to be this large"
            )));
        }
        Ok(out)
    }

    /// Whether the graph runs one image at a time: some op's shape is the whole tensor at batch
    /// 1 ([`Op::runs_per_sample`]). Executors then split a batch into single images, so a
    /// batch gives what its images give one by one.
    pub fn runs_per_sample(&self) -> bool {
        self.nodes.iter().any(|n| n.op.runs_per_sample())
    }

    /// The bytes of every node's output at batch 1 (float32), summed: what the activation
    /// budget bounds ([`activation_budget`]).
    pub fn activation_bytes(&self) -> Result<u64> {
        Ok(self
            .infer_shapes()?
            .iter()
            .map(|s| s.iter().product::<usize>() as u64 * 4)
            .sum())
    }

    /// The graph as ABI data (weights are shared, not copied).
    pub fn to_ffi(&self) -> Result<FfiGraph> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let attrs = toml::to_string(&n.op).map_err(|e| {
                    Error::internal(format!("layer `{}`: cannot encode attributes: {e}", n.name))
                })?;
                Ok(FfiNode {
                    name: n.name.as_str().into(),
                    op: n.op.name().into(),
                    attrs_toml: attrs.into(),
                    inputs: n.inputs.iter().map(|&i| i as u32).collect(),
                    params: n
                        .params
                        .iter()
                        .map(|(k, t)| FfiNamedTensor {
                            name: k.as_str().into(),
                            tensor: t.to_ffi(),
                        })
                        .collect::<RVec<_>>(),
                })
            })
            .collect::<Result<RVec<_>>>()?;
        Ok(FfiGraph {
            nodes,
            output: self.output as u32,
        })
    }

    /// A graph received from a plugin. Attributes are parsed strictly, and the result is
    /// checked with [`Graph::infer_shapes`].
    pub fn from_ffi(g: &FfiGraph) -> Result<Self> {
        let nodes = g
            .nodes
            .iter()
            .map(|n| {
                let op: Op = toml::from_str(&n.attrs_toml).map_err(|e| {
                    Error::input(format!(
                        "layer `{}`: bad attributes for op `{}`: {e}",
                        n.name, n.op
                    ))
                })?;
                Ok(Node {
                    name: n.name.to_string(),
                    op,
                    inputs: n.inputs.iter().map(|&i| i as usize).collect(),
                    params: n
                        .params
                        .iter()
                        .map(|p| Ok((p.name.to_string(), Tensor::from_ffi(&p.tensor)?)))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let graph = Graph {
            nodes,
            output: g.output as usize,
        };
        graph.infer_shapes()?;
        Ok(graph)
    }
}
