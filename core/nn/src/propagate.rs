//! A modified backward pass over a [`Graph`]: the engine under LRP, the gradient and DeepLIFT.
//!
//! Starting from a seed at the output node, a value (relevance, or gradient) flows back
//! through the graph in reverse topological order; a node consumed several times receives the
//! sum of what its consumers send back. The walker owns the structural ops (flatten, dropout,
//! concatenation, residual adds, pooling, activations) with a few documented choices, and
//! asks a [`LayerRule`] what to do at every layer with weights (conv, linear, batch norm).
//!
//! What the walker folds into neighbouring passes (activation masks, the rules' first
//! divisions) depends on the graph, the [`Structure`] and the rule's [`Fusion`] at each layer,
//! not on the image: a [`Plan`] decides it once per model, and [`backward`] follows it.

use crate::ops::{self, MaxRouting};
use crate::prepared::Prepared;
use candle_core::{DType, Tensor as CTensor};
use sr_core::graph::{Graph, Node, NodeId, Op};
use sr_core::{Error, Result};

/// How a value passes an activation (ReLU, ReLU6/Clip, PReLU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationMode {
    /// Unchanged (LRP's usual choice).
    Pass,
    /// Multiplied by the activation's derivative at its input (the gradient; Zennit's choice
    /// when no rule is attached).
    Gradient,
}

/// How a value passes an average pooling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolMode {
    /// Spread by the pooling weights (the gradient).
    Gradient,
    /// As a linear layer with the epsilon rule: `a * T(P, R / stab(P a))` (Zennit's `Norm`).
    Norm { epsilon: f32 },
}

/// How a value passes a residual add.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AddMode {
    /// Every summand receives the whole value (the gradient; what Zennit does without a rule,
    /// so LRP relevance is not conserved through the add).
    Copy,
    /// In proportion to each summand's contribution: `R_i = x_i / stab(sum x) R` (conservative).
    Proportional { epsilon: f32 },
}

/// How a value passes a product `x * g` of a signal and a gate ([`Op::Mul`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// Both receive their gradient: `g * r` to the signal, `x * r` (summed over a broadcast)
    /// to the gate.
    Gradient,
    /// All of it to the signal, none to the gate (Arras et al. 2017, "Explaining recurrent
    /// neural network predictions in sentiment analysis": the gate is held constant, so the
    /// product is a linear map of the signal and the epsilon rule on it passes `r` unchanged).
    Signal,
}

/// How a value passes the ops of attention: a constant scale, the product of two computed
/// values ([`Op::MatMul`]) and a softmax inside the graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionMode {
    /// The gradient through all three.
    Gradient,
    /// AttnLRP (Achtibat et al., ICML 2024): a scale passes relevance unchanged (the epsilon
    /// rule on a one-to-one linear map); a product splits it evenly between its two factors,
    /// each by the epsilon rule (the uniform rule, Proposition 3.3):
    /// `R_a = a * ((R / 2 stab(z)) b^T)`, `R_b = b * (a^T (R / 2 stab(z)))`; a softmax sends
    /// `R_x = x * (R - s * sum R)` (Proposition 3.1).
    AttnLrp { epsilon: f32 },
    /// CP-LRP (Ali et al., ICML 2022): the attention weights are held constant. A softmax
    /// sends nothing back, and a product of a softmax's output and a value is a linear map of
    /// the value: all of `R` goes to the value by the epsilon rule, `R_v = v * (A^T (R /
    /// stab(z)))`. A product of two other values splits as in AttnLRP; a scale passes.
    CpLrp { epsilon: f32 },
}

/// The structural choices of a backward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Structure {
    pub activation: ActivationMode,
    pub avg_pool: PoolMode,
    pub max_pool: MaxRouting,
    pub add: AddMode,
    pub gate: GateMode,
    pub layer_norm: ops::LayerNormBackward,
    pub attention: AttentionMode,
    /// Whether the walker folds activation masks and the rules' first divisions into the
    /// neighbouring passes (see [`Fused`]). The result is the same either way (a test compares
    /// them value for value); off is slower and serves that test.
    pub fuse: bool,
}

/// What a rule lets the walker fold around it at one layer: the fusion protocol, spelled once.
/// A rule says it per layer ([`LayerRule::fusion`]); the [`Plan`] reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fusion {
    /// The value the rule sends back is `x * (...)` element-wise (or `x+ * (...) + x- * (...)`),
    /// `x` being the layer's input (epsilon, z+, alpha-beta, ...): it is then zero wherever the
    /// input is, so a ReLU feeding only such layers needs no gradient mask (the mask would leave
    /// every value, and every zero's sign, unchanged).
    pub scales_by_input: bool,
    /// The divisor `d` the rule starts from, when its first step is `s = r / d(z)` element-wise
    /// (epsilon-like rules). The walker may then take that division into the last pass of the
    /// layer above and hand over `s` instead of `r` ([`Fused::divided`]).
    pub divisor: Option<ops::Stab>,
    /// The rule's last step is a single transposed map times the layer's input
    /// (`a * T(V, s)`), finished in one pass that can also take a clip activation's gate and the
    /// division of the layer below ([`Fused::gate`], [`Fused::below`]).
    pub finishes: bool,
}

/// What a layer with weights sends back to its input.
pub trait LayerRule: Send + Sync {
    /// `node` is a conv, linear or batch-norm node of `p.graph`; `a` its input (as traced), `z`
    /// its output, `r` the value arriving at its output. Returns the value at its input (shape
    /// of `a`).
    fn layer(
        &self,
        p: &Prepared,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
    ) -> Result<CTensor>;

    /// What the walker may fold around layer `node` (nothing by default).
    fn fusion(&self, graph: &Graph, node: NodeId) -> Fusion {
        let _ = (graph, node);
        Fusion::default()
    }

    /// [`LayerRule::layer`] with the walker's fusions (see [`Fused`]). `divided` and `below` are
    /// only asked of rules that declare them ([`Fusion::divisor`], [`Fusion::finishes`]); a gate
    /// is asked of any rule, and by default the result is multiplied by it afterwards.
    #[allow(clippy::too_many_arguments)]
    fn layer_fused(
        &self,
        p: &Prepared,
        node: NodeId,
        a: &CTensor,
        z: &CTensor,
        r: &CTensor,
        how: &Fused,
    ) -> Result<CTensor> {
        let name = &p.graph.nodes[node].name;
        if how.divided || how.below.is_some() {
            return Err(Error::internal(format!(
                "layer `{name}`: this rule takes no fused division"
            )));
        }
        let v = self.layer(p, node, a, z, r)?;
        match how.gate {
            Some(gate) => ops::masked(&v, a, gate).map_err(ce(name)),
            None => Ok(v),
        }
    }

    /// Whether this rule also decides what activations (ReLU, Clip, PReLU) and max pooling
    /// send back (DeepLIFT's multipliers); if not, the [`Structure`] does.
    fn defines_nonlinear(&self) -> bool {
        false
    }

    /// What the activation or max-pool `node` sends back to its input, given the value `r` at
    /// its output and the trace `acts` of this pass. Only called when
    /// [`LayerRule::defines_nonlinear`] is true.
    fn nonlinear(
        &self,
        p: &Prepared,
        acts: &[CTensor],
        node: NodeId,
        r: &CTensor,
    ) -> Result<CTensor> {
        let _ = (acts, r);
        Err(Error::internal(format!(
            "layer `{}`: this rule does not define activations",
            p.graph.nodes[node].name
        )))
    }
}

/// What the walker folds into a layer's step ([`LayerRule::layer_fused`]), each exact (the
/// same operations on the same values as the unfused passes, in the same order).
#[derive(Clone, Copy, Default)]
pub struct Fused<'a> {
    /// The layer's input is the output of a clip activation `(lo, hi)` (ReLU6) that feeds only
    /// layers: multiply the result by `1[lo < a < hi]`, the activation's derivative (read off
    /// its output `a`), which the activation then skips.
    pub gate: Option<(f32, f32)>,
    /// `r` is already `r / d(z)`, [`Fusion::divisor`]'s first step, done by the layer above.
    pub divided: bool,
    /// Divide the result by `d(z)`, `z` being the traced output of the layer below whose rule
    /// starts with that division (through activations, dropout and flatten that pass the value
    /// unchanged); that layer then receives it `divided`.
    pub below: Option<(&'a CTensor, ops::Stab)>,
    /// With `below`: the layer's input equals `act(z)` of that `z` value for value (at most
    /// one activation lies between them), so the finish may read `z` alone.
    pub input_is: Option<ops::Act>,
}

impl Fused<'_> {
    /// Nothing to fold: [`LayerRule::layer`] as it is.
    pub fn is_plain(&self) -> bool {
        self.gate.is_none() && !self.divided && self.below.is_none()
    }
}

/// The derivative of an activation ([`Op::is_activation`]) at its input `a`, as autograd gives
/// it (0 at ReLU's kink and at Clip's bounds).
pub fn activation_derivative(node: &Node, a: &CTensor) -> candle_core::Result<CTensor> {
    match &node.op {
        Op::Relu => a.gt(0f32).and_then(|m| m.to_dtype(DType::F32)),
        Op::Clip { min, max } => a
            .gt(*min)
            .and_then(|lo| lo.mul(&a.lt(*max)?))
            .and_then(|m| m.to_dtype(DType::F32)),
        Op::PRelu => {
            let s = node.param("slope").expect("checked by infer_shapes");
            let slope = CTensor::from_slice(s.data(), s.numel(), a.device())?;
            let shape: Vec<usize> = (0..a.rank())
                .map(|d| if d == 1 { s.numel() } else { 1 })
                .collect();
            let slope = slope.reshape(shape)?;
            let pos = a.gt(0f32)?.to_dtype(DType::F32)?;
            // pos + (1 - pos) * slope
            pos.broadcast_add(&pos.affine(-1.0, 1.0)?.broadcast_mul(&slope)?)?
                .contiguous()
        }
        op @ (Op::Sigmoid | Op::HardSigmoid { .. } | Op::Silu | Op::HardSwish | Op::Gelu) => {
            ops::unary_map(a, |x| ops::activation_derivative(op, x))
        }
        op => candle_core::bail!("`{}` is not an activation", op.name()),
    }
}

/// `d + e * sign0(d)` with `sign0(d) = 1` for `d >= 0`, else `-1` (Zennit's stabiliser).
pub fn stabilise(d: &CTensor, e: f32) -> candle_core::Result<CTensor> {
    let sign = d.ge(0f32)?.to_dtype(DType::F32)?.affine(2.0, -1.0)?;
    d + sign.affine(e as f64, 0.0)?
}

fn ce(node: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::internal(format!("backward pass at layer `{node}`: {e}"))
}

/// The division a layer leaves to its consumer: the layer, its divisor, and the activation
/// between them when there is at most one.
type Below = (NodeId, ops::Stab, Option<ops::Act>);

/// What the walker folds where, decided once per model (graph, structure and rule), not per
/// image: the gradient masks activations leave to their consumers, the first divisions layers
/// leave to the layer above, and the ReLUs that need no mask at all.
pub struct Plan {
    /// The node the seed starts from ([`start_node`]).
    pub start: NodeId,
    pub structure: Structure,
    /// Per node: the open interval of the activation whose gradient mask it applies (an
    /// activation that feeds only layers with weights and max poolings leaves its mask to them).
    gates: Vec<Option<(f32, f32)>>,
    /// Per activation: its mask is applied by its consumers (`gates`).
    folded: Vec<bool>,
    /// Per node: everything that flows back into it is zero where its output is zero (it feeds
    /// only layers whose rule scales by their input, possibly through dropout or flatten).
    zero_where_output_is: Vec<bool>,
    /// Per consumer: the division of the layer below it that it does in its last pass.
    below: Vec<Option<Below>>,
    /// Per layer: its relevance arrives divided.
    divided: Vec<bool>,
}

impl Plan {
    /// Plan the backward pass of `graph` under `structure` with `rule`.
    pub fn new(graph: &Graph, structure: Structure, rule: &dyn LayerRule) -> Plan {
        let len = graph.nodes.len();
        let mut consumers: Vec<Vec<NodeId>> = vec![vec![]; len];
        for (id, n) in graph.nodes.iter().enumerate() {
            for &i in &n.inputs {
                consumers[i].push(id);
            }
        }
        let fusion: Vec<Fusion> = (0..len)
            .map(|id| match graph.nodes[id].op {
                Op::Conv2d { .. } | Op::Linear => rule.fusion(graph, id),
                _ => Fusion::default(),
            })
            .collect();
        fn zero_where(
            graph: &Graph,
            consumers: &[Vec<NodeId>],
            fusion: &[Fusion],
            id: NodeId,
        ) -> bool {
            !consumers[id].is_empty()
                && consumers[id].iter().all(|&c| match graph.nodes[c].op {
                    Op::Conv2d { .. } | Op::Linear => fusion[c].scales_by_input,
                    Op::Dropout | Op::Flatten => zero_where(graph, consumers, fusion, c),
                    _ => false,
                })
        }
        let zero_where_output_is: Vec<bool> = (0..len)
            .map(|id| zero_where(graph, &consumers, &fusion, id))
            .collect();
        // An activation whose output feeds only layers with weights and max poolings (ReLU6
        // before the depthwise and 1x1 convolutions of mobile nets, ReLU before VGG's poolings)
        // leaves its gradient mask to them. (A ReLU that feeds only layers scaling by their
        // input needs no mask at all.)
        let mut gates: Vec<Option<(f32, f32)>> = vec![None; len];
        let mut folded = vec![false; len];
        if structure.fuse
            && structure.activation == ActivationMode::Gradient
            && !rule.defines_nonlinear()
        {
            for (id, n) in graph.nodes.iter().enumerate() {
                let gate = match n.op {
                    Op::Clip { min, max } if min < max => (min, max),
                    Op::Relu if !zero_where_output_is[id] => (0.0, f32::INFINITY),
                    _ => continue,
                };
                let takes = |&c: &NodeId| {
                    matches!(
                        graph.nodes[c].op,
                        Op::Conv2d { .. } | Op::Linear | Op::MaxPool { .. }
                    ) && graph.nodes[c].inputs[0] == id
                };
                if !consumers[id].is_empty() && consumers[id].iter().all(takes) {
                    folded[id] = true;
                    for &c in &consumers[id] {
                        gates[c] = Some(gate);
                    }
                }
            }
        }
        // A layer whose rule starts by dividing its relevance (`Fusion::divisor`) and whose
        // output reaches one single consumer through activations that pass the value unchanged
        // (ReLU without its mask, a folded clip), dropout or flatten, leaves that division to
        // the consumer's last pass, when the consumer is a max pooling or a layer whose rule
        // finishes in one pass. With it, the activation between them when there is at most one
        // (then the consumer's input is `act(z)` of the layer's output `z`, and the consumer
        // reads `z` alone).
        let mut below: Vec<Option<Below>> = vec![None; len];
        let mut divided = vec![false; len];
        let unchanged = |c: NodeId| match graph.nodes[c].op {
            Op::Dropout | Op::Flatten => true,
            Op::Relu if !rule.defines_nonlinear() => {
                structure.activation == ActivationMode::Pass || zero_where_output_is[c]
            }
            Op::Clip { .. } if !rule.defines_nonlinear() => {
                structure.activation == ActivationMode::Pass || folded[c]
            }
            _ => false,
        };
        for (p, n) in graph.nodes.iter().enumerate() {
            if !structure.fuse || !matches!(n.op, Op::Conv2d { .. } | Op::Linear) {
                continue;
            }
            let Some(d) = fusion[p].divisor else {
                continue;
            };
            let mut cur = p;
            let mut between = vec![];
            let last = loop {
                let [c] = consumers[cur][..] else { break None };
                if graph.nodes[c].inputs[0] != cur {
                    break None;
                }
                match graph.nodes[c].op {
                    Op::Conv2d { .. } | Op::Linear if fusion[c].finishes => break Some(c),
                    Op::MaxPool { .. } if !rule.defines_nonlinear() => break Some(c),
                    _ if unchanged(c) => {
                        match graph.nodes[c].op {
                            Op::Relu => between.push(ops::Act::Relu),
                            Op::Clip { min, max } => between.push(ops::Act::Clip(min, max)),
                            _ => {}
                        }
                        cur = c
                    }
                    _ => break None,
                }
            };
            if let Some(c) = last {
                let act = match between[..] {
                    [] => Some(ops::Act::Identity),
                    [a] => Some(a),
                    _ => None,
                };
                below[c] = Some((p, d, act));
                divided[p] = true;
            }
        }
        Plan {
            start: start_node(graph),
            structure,
            gates,
            folded,
            zero_where_output_is,
            below,
            divided,
        }
    }
}

/// Run the backward pass that `plan` describes. `acts[i]` is node `i`'s output from a forward
/// pass of `p.graph`; `seed` has the shape of the start node's value. Returns the value at the
/// input.
pub fn backward(
    p: &Prepared,
    plan: &Plan,
    rule: &dyn LayerRule,
    acts: &[CTensor],
    seed: CTensor,
) -> Result<CTensor> {
    let graph = &p.graph;
    let mut vals: Vec<Option<CTensor>> = vec![None; graph.nodes.len()];
    vals[plan.start] = Some(seed);
    for id in (1..=plan.start).rev() {
        let Some(r) = vals[id].take() else { continue };
        let e = ce(&graph.nodes[id].name);
        for (i, v) in step(p, plan, rule, acts, id, r)? {
            vals[i] = Some(match vals[i].take() {
                Some(prev) => (prev + v).map_err(&e)?,
                None => v,
            });
        }
    }
    vals[0]
        .take()
        .ok_or_else(|| Error::input("the output does not depend on the input"))
}

/// What node `id` sends back to its inputs, given the value `r` at its output.
fn step(
    p: &Prepared,
    plan: &Plan,
    rule: &dyn LayerRule,
    acts: &[CTensor],
    id: NodeId,
    r: CTensor,
) -> Result<Vec<(NodeId, CTensor)>> {
    let graph = &p.graph;
    let structure = &plan.structure;
    let node = &graph.nodes[id];
    let e = ce(&node.name);
    let input = |k: usize| &acts[node.inputs[k]];
    let a = input(0);
    let to_input = |v: CTensor| Ok(vec![(node.inputs[0], v)]);
    match &node.op {
        Op::Input { .. } => unreachable!("node 0 is not visited"),
        Op::Conv2d { .. } | Op::Linear | Op::BatchNorm { .. } => {
            let how = Fused {
                gate: plan.gates[id],
                divided: plan.divided[id],
                below: plan.below[id].map(|(p, d, _)| (&acts[p], d)),
                input_is: plan.below[id].and_then(|(_, _, act)| act),
            };
            to_input(if how.is_plain() {
                rule.layer(p, id, a, &acts[id], &r)?
            } else {
                rule.layer_fused(p, id, a, &acts[id], &r, &how)?
            })
        }
        op if (op.is_activation() || matches!(op, Op::MaxPool { .. }))
            && rule.defines_nonlinear() =>
        {
            to_input(rule.nonlinear(p, acts, id, &r)?)
        }
        Op::Relu
        | Op::Clip { .. }
        | Op::PRelu
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::Silu
        | Op::HardSwish
        | Op::Gelu => to_input(match structure.activation {
            ActivationMode::Pass => r,
            ActivationMode::Gradient if plan.folded[id] => r,
            // ReLU's mask 1[a > 0] keeps a value that is already 0 where relu(a) is.
            ActivationMode::Gradient
                if matches!(node.op, Op::Relu) && plan.zero_where_output_is[id] =>
            {
                r
            }
            ActivationMode::Gradient => match node.op {
                // r * 1[a > 0] (and within Clip's bounds) in one pass.
                Op::Relu => ops::zip_map(&r, a, |r, a| r * ((a > 0.0) as u8 as f32)),
                Op::Clip { min, max } => ops::masked(&r, a, (min, max)),
                _ => activation_derivative(node, a).and_then(|d| r * d),
            }
            .map_err(&e)?,
        }),
        Op::MaxPool { .. } => {
            let (win, ceil_mode) = node.op.pool_window().expect("a max pooling");
            let div = plan.below[id].map(|(p, d, _)| (&acts[p], d));
            let x_of_div = plan.below[id].and_then(|(_, _, act)| act);
            let route = structure.max_pool;
            let gate = plan.gates[id];
            to_input(
                ops::max_pool_t_fused(a, &r, &win, ceil_mode, route, gate, div, x_of_div)
                    .map_err(&e)?,
            )
        }
        Op::AvgPool {
            count_include_pad, ..
        } => {
            let (win, _) = node.op.pool_window().expect("an average pooling");
            let (_, _, h, w) = a.dims4().map_err(&e)?;
            to_input(
                match structure.avg_pool {
                    PoolMode::Gradient => ops::avg_pool_t(&r, (h, w), &win, *count_include_pad),
                    PoolMode::Norm { epsilon } => stabilise(&acts[id], epsilon)
                        .and_then(|z| r.div(&z))
                        .and_then(|s| ops::avg_pool_t(&s, (h, w), &win, *count_include_pad))
                        .and_then(|t| t.mul(a)),
                }
                .map_err(&e)?,
            )
        }
        Op::GlobalAvgPool => {
            let (_, _, h, w) = a.dims4().map_err(&e)?;
            let k = (h * w) as f64;
            to_input(
                match structure.avg_pool {
                    PoolMode::Gradient => r
                        .affine(1.0 / k, 0.0)
                        .and_then(|s| s.broadcast_as(a.shape())?.contiguous()),
                    PoolMode::Norm { epsilon } => stabilise(&acts[id], epsilon)
                        .and_then(|z| r.div(&z))
                        .and_then(|s| s.affine(1.0 / k, 0.0))
                        .and_then(|s| s.broadcast_mul(a)),
                }
                .map_err(&e)?,
            )
        }
        Op::Flatten => to_input(r.reshape(a.shape()).map_err(&e)?),
        // LRN on the path is passed through unchanged (it is not a linear layer, and it keeps
        // the sign).
        Op::Dropout | Op::Lrn { .. } => to_input(r),
        // A softmax inside the graph (attention; a final one is not walked, see
        // [`start_node`]).
        Op::Softmax => match structure.attention {
            AttentionMode::Gradient => to_input(ops::softmax_t(&acts[id], &r).map_err(&e)?),
            AttentionMode::AttnLrp { .. } => {
                to_input(ops::softmax_lrp(a, &acts[id], &r).map_err(&e)?)
            }
            AttentionMode::CpLrp { .. } => Ok(vec![]),
        },
        Op::Add => match structure.add {
            AddMode::Copy => Ok(node.inputs.iter().map(|&i| (i, r.clone())).collect()),
            AddMode::Proportional { epsilon } => {
                let s =
                    ops::zip_map(&r, &acts[id], |r, z| r / ops::stab(z, epsilon)).map_err(&e)?;
                node.inputs
                    .iter()
                    .map(|&i| Ok((i, ops::zip_map(&acts[i], &s, |x, s| x * s).map_err(&e)?)))
                    .collect()
            }
        },
        Op::Mul => {
            let g = input(1);
            match structure.gate {
                GateMode::Signal => to_input(r),
                GateMode::Gradient => {
                    let to_x = r.broadcast_mul(g).map_err(&e)?;
                    let mut to_g = (&r * a).map_err(&e)?;
                    if g.dims() != a.dims() {
                        to_g = to_g
                            .sum_keepdim(3)
                            .and_then(|t| t.sum_keepdim(2))
                            .map_err(&e)?;
                    }
                    Ok(vec![(node.inputs[0], to_x), (node.inputs[1], to_g)])
                }
            }
        }
        Op::LayerNorm { eps } => {
            let w = node.param("weight").expect("checked by infer_shapes");
            to_input(
                ops::layer_norm_t(a, &acts[id], &r, w.data(), *eps, structure.layer_norm)
                    .map_err(&e)?,
            )
        }
        Op::ChannelShuffle { groups } => {
            let c = a.dims()[1];
            to_input(ops::channel_shuffle(&r, c / groups).map_err(&e)?)
        }
        Op::Narrow {
            start, axis, step, ..
        } => to_input(ops::narrow_t(&r, *axis, *start, *step, a.dims()[*axis]).map_err(&e)?),
        Op::Reshape { .. } => to_input(r.reshape(a.shape()).map_err(&e)?),
        Op::Transpose { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (k, &p) in perm.iter().enumerate() {
                inverse[p] = k;
            }
            to_input(
                r.permute(inverse)
                    .and_then(|t| t.contiguous())
                    .map_err(&e)?,
            )
        }
        // A learnt tensor keeps what reaches it (as a bias does).
        Op::Constant => Ok(vec![]),
        Op::Scale { factor } => to_input(match structure.attention {
            AttentionMode::Gradient => r.affine(*factor as f64, 0.0).map_err(&e)?,
            _ => r,
        }),
        Op::MatMul => {
            let (x, y, z) = (input(0), input(1), &acts[id]);
            let (ix, iy) = (node.inputs[0], node.inputs[1]);
            let both = |s: CTensor, times| -> Result<Vec<(NodeId, CTensor)>> {
                let (ra, rb) = ops::matmul_t(x, y, &s, times).map_err(&e)?;
                Ok(vec![(ix, ra), (iy, rb)])
            };
            match structure.attention {
                AttentionMode::Gradient => both(r, false),
                AttentionMode::CpLrp { epsilon } => {
                    let s = ops::sequence::divide(&r, z, epsilon, 1.0).map_err(&e)?;
                    match (is_attention(graph, ix), is_attention(graph, iy)) {
                        (true, false) => {
                            let g = ops::matmul(&ops::sequence::t_last(x).map_err(&e)?, &s);
                            Ok(vec![(iy, g.and_then(|g| y * g).map_err(&e)?)])
                        }
                        (false, true) => {
                            let g = ops::matmul(&s, &ops::sequence::t_last(y).map_err(&e)?);
                            Ok(vec![(ix, g.and_then(|g| x * g).map_err(&e)?)])
                        }
                        _ => both(
                            ops::sequence::divide(&r, z, epsilon, 0.5).map_err(&e)?,
                            true,
                        ),
                    }
                }
                AttentionMode::AttnLrp { epsilon } => both(
                    ops::sequence::divide(&r, z, epsilon, 0.5).map_err(&e)?,
                    true,
                ),
            }
        }
        Op::Concat { axis } => {
            let mut start = 0;
            let mut out = vec![];
            for &i in &node.inputs {
                let len = acts[i].dims()[*axis];
                out.push((
                    i,
                    r.narrow(*axis, start, len)
                        .and_then(|t| t.contiguous())
                        .map_err(&e)?,
                ));
                start += len;
            }
            Ok(out)
        }
    }
}

/// Whether node `id` is attention weights: a softmax's output, possibly through reshapes,
/// transposes and dropout.
fn is_attention(graph: &Graph, mut id: NodeId) -> bool {
    loop {
        match graph.nodes[id].op {
            Op::Softmax => return true,
            Op::Reshape { .. } | Op::Transpose { .. } | Op::Dropout => {
                id = graph.nodes[id].inputs[0]
            }
            _ => return false,
        }
    }
}

/// The node whose value relevance starts from: the output, or the input of a final softmax
/// (relevance explains logits, not probabilities).
pub fn start_node(graph: &Graph) -> NodeId {
    let out = graph.output;
    match graph.nodes[out].op {
        Op::Softmax => graph.nodes[out].inputs[0],
        _ => out,
    }
}
