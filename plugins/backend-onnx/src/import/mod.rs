//! ONNX graph -> sr-core graph IR, so every relevance method walks ONNX models too.
//!
//! Each compute node of the file becomes one IR node (op for op, so the IR's op counts are the
//! file's). What the IR has no op for is folded at load time, never approximated:
//! - constant subgraphs (Constant, ConstantOfShape, Shape, Gather, Slice, Concat, Reshape,
//!   Transpose, Cast, Unsqueeze, Squeeze on constants) are evaluated;
//! - a zero `Pad` goes into the padding of the Conv / AveragePool that reads it;
//! - a `Transpose` that is flattened and fed to Gemm/MatMul permutes that layer's weight
//!   columns (ONet's `permute(0, 3, 2, 1)` before its dense layer);
//! - an `Add` of a constant after MatMul/Gemm/Conv becomes that layer's bias;
//! - `Reshape` to `[N, features]` is a Flatten; Identity is dropped.
//!
//! Anything else is an error that names the op and the node.
//!
//! Each op has a builder in its family's module (`nn`, `shape`, `constants`), listed in that
//! module's `OPS` table; adding an op is a function and a table row there.

use crate::proto::{
    dtype_name, is_float_type, Attr, Data, Dim, ModelProto, NodeProto, TensorProto,
};
use sr_core::graph::{Node, NodeId, Op};
use sr_core::{Error, Graph, Result, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

mod arith;
mod constants;
mod nn;
mod patterns;
mod shape;

/// How one ONNX op is read: a function that appends IR nodes for it, or folds it.
pub struct OpBuilder {
    /// The ONNX op type.
    pub op: &'static str,
    build: fn(&mut Importer<'_>, &NodeProto) -> Result<()>,
}

/// Every op the importer reads, by family: layers (`nn`), shape arithmetic folded at load
/// time (`shape`), constants (`constants`).
fn ops() -> impl Iterator<Item = &'static OpBuilder> {
    nn::OPS
        .iter()
        .chain(arith::OPS)
        .chain(shape::OPS)
        .chain(constants::OPS)
}

/// The ONNX ops the importer reads (for errors and docs).
pub fn supported() -> Vec<&'static str> {
    ops().map(|b| b.op).collect()
}

/// A constant tensor during import. Its values are shared: passing a constant through
/// Identity, Reshape or Squeeze copies no values.
#[derive(Clone, Debug, PartialEq)]
struct Const {
    dims: Vec<usize>,
    data: Arc<Data>,
}

impl Const {
    fn ints(&self) -> Vec<i64> {
        match self.data.as_ref() {
            Data::I64(v) => v.clone(),
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
    fn floats(&self) -> std::borrow::Cow<'_, [f32]> {
        match self.data.as_ref() {
            Data::F32(v) => std::borrow::Cow::Borrowed(v),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// The values as float32, moved out when nothing else holds them (see
    /// [`Importer::take_const`]), else copied.
    fn into_floats(self) -> Vec<f32> {
        match Arc::try_unwrap(self.data) {
            Ok(Data::F32(v)) => v,
            Ok(Data::I64(v)) => v.iter().map(|&x| x as f32).collect(),
            Err(shared) => match shared.as_ref() {
                Data::F32(v) => v.clone(),
                Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
            },
        }
    }
    fn numel(&self) -> usize {
        self.data.len()
    }
    /// Pick elements by flat index.
    fn pick(&self, dims: Vec<usize>, idx: &[usize]) -> Const {
        let data = match self.data.as_ref() {
            Data::F32(v) => Data::F32(idx.iter().map(|&i| v[i]).collect()),
            Data::I64(v) => Data::I64(idx.iter().map(|&i| v[i]).collect()),
        };
        Const {
            dims,
            data: Arc::new(data),
        }
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Every multi-index of `dims` in row-major order, as a callback.
fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize])) {
    if dims.contains(&0) {
        return;
    }
    let mut ix = vec![0; dims.len()];
    loop {
        f(&ix);
        let mut k = dims.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            ix[k] += 1;
            if ix[k] < dims[k] {
                break;
            }
            ix[k] = 0;
        }
    }
}

/// Work pending on a computed value, folded into the layer that reads it.
#[derive(Clone, Debug, PartialEq)]
enum Pending {
    None,
    /// Zero padding `[top, left, bottom, right]` of a `Pad` node (and the Pad's name).
    Pad([usize; 4], String),
    /// A `Transpose` of a 4-D value by `perm` (and the node's name).
    Transpose(Vec<usize>, String),
    /// A flattened transposed value: feature `i` of the IR's flatten is feature `map[i]` of
    /// the file's.
    Flat(Vec<usize>, String),
    /// An NCHW value reshaped to `[N, groups, C / groups, H, W]` (the first step of a channel
    /// shuffle).
    Grouped(usize, String),
    /// That, transposed by `[0, 2, 1, 3, 4]`: reshaped back to NCHW it is a channel shuffle.
    Shuffled(usize, String),
}

/// The permutation of a channels-last view of an NCHW value (`x.permute(0, 2, 3, 1)`), which
/// element-wise ops, LayerNorm over the last axis and MatMul on the last axis keep.
pub(crate) const CHANNELS_LAST: [usize; 4] = [0, 2, 3, 1];

#[derive(Clone, Debug)]
enum Val {
    Node(NodeId, Pending),
    Const(Const),
}

/// The imported model.
#[derive(Clone, Debug)]
pub struct Imported {
    pub graph: Graph,
    /// The graph input's name and its declared dims (batch first).
    pub input_name: String,
    pub input_dims: Vec<Dim>,
    /// The file's value that holds the logits: the chosen output, or the input of the Softmax
    /// that produces it.
    pub logits_name: String,
    /// Whether `logits_name` is one of the file's graph outputs.
    pub logits_is_output: bool,
    /// The constant values the file does not store but its folds make (a ConstantOfShape
    /// fill, a Range, a broadcast): ONNX Runtime would hold its own copy of them.
    pub generated_values: usize,
}

struct Importer<'m> {
    m: &'m ModelProto,
    graph: Graph,
    shapes: Vec<Vec<usize>>,
    /// The bytes of the graph's values so far at batch 1 (the activation budget's count).
    activation_bytes: u64,
    /// The file's value name of each IR node's output.
    value_names: Vec<String>,
    vals: HashMap<String, Val>,
    uses: HashMap<&'m str, usize>,
    /// Per value, the reads by nodes not yet imported: a constant is dropped after its last
    /// read, so a weight made from it need not be a second copy.
    left: HashMap<&'m str, usize>,
    used_names: HashMap<String, usize>,
    /// Values of constants computed so far ([`MAX_FOLDED_VALUES`] in all).
    folded: usize,
    /// Of those, the values that folds made beyond their inputs' (fills, ranges, broadcasts).
    generated: usize,
}

fn node_label(n: &NodeProto) -> String {
    let name = if n.name.is_empty() {
        n.outputs.first().map(String::as_str).unwrap_or("?")
    } else {
        &n.name
    };
    format!("node `{name}` ({})", n.op_type)
}

impl<'m> Importer<'m> {
    /// Charge `values` new constant values (computed by node `n`) to the import's budget.
    fn charge(&mut self, n: &NodeProto, values: usize) -> Result<()> {
        self.folded = self
            .folded
            .checked_add(values)
            .filter(|&t| t <= MAX_FOLDED_VALUES)
            .ok_or_else(|| {
                Self::err(
                    n,
                    format!(
                        "the constants computed at load time would hold more than {MAX_FOLDED_VALUES} values (this node adds {values})"
                    ),
                )
            })?;
        Ok(())
    }

    fn err(n: &NodeProto, msg: impl std::fmt::Display) -> Error {
        Error::input(format!("{}: {msg}", node_label(n)))
    }

    fn val(&self, n: &NodeProto, i: usize) -> Result<&Val> {
        let name = n
            .inputs
            .get(i)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Self::err(n, format!("input {i} is missing")))?;
        self.vals.get(name).ok_or_else(|| {
            Self::err(n, format!("input `{name}` is not produced by any earlier node, initializer or graph input"))
        })
    }

    fn has_input(n: &NodeProto, i: usize) -> bool {
        n.inputs.get(i).is_some_and(|s| !s.is_empty())
    }

    fn konst(&self, n: &NodeProto, i: usize) -> Result<&Const> {
        match self.val(n, i)? {
            Val::Const(c) => Ok(c),
            Val::Node(..) => Err(Self::err(
                n,
                format!(
                    "input `{}` is computed at run time, but srhost needs it as a constant (an initializer or Constant)",
                    n.inputs[i]
                ),
            )),
        }
    }

    fn opt_konst(&self, n: &NodeProto, i: usize) -> Result<Option<&Const>> {
        if Self::has_input(n, i) {
            self.konst(n, i).map(Some)
        } else {
            Ok(None)
        }
    }

    fn node_in(&self, n: &NodeProto, i: usize) -> Result<(NodeId, Pending)> {
        match self.val(n, i)? {
            Val::Node(id, p) => Ok((*id, p.clone())),
            Val::Const(_) => Err(Self::err(
                n,
                format!(
                    "input `{}` is a constant; srhost expects the image data here",
                    n.inputs[i]
                ),
            )),
        }
    }

    /// A computed input with nothing pending on it. A pending transpose becomes an IR
    /// `Transpose` here (bound in place of the input, so that its other readers share it).
    fn plain_in(&mut self, n: &NodeProto, i: usize) -> Result<NodeId> {
        let (id, p) = self.node_in(n, i)?;
        match p {
            Pending::None => Ok(id),
            Pending::Transpose(perm, _) => {
                let t = self.push_step(n, Op::Transpose { perm }, vec![id], vec![])?;
                self.vals
                    .insert(n.inputs[i].clone(), Val::Node(t, Pending::None));
                Ok(t)
            }
            Pending::Pad(_, by) => Err(Self::err(
                n,
                format!("reads the output of Pad `{by}`; a Pad is only supported right before Conv or AveragePool"),
            )),
            Pending::Flat(_, by) => Err(Self::err(
                n,
                format!("reads the flattened output of Transpose `{by}`; a flattened transpose is only supported before Gemm or MatMul"),
            )),
            Pending::Grouped(_, by) | Pending::Shuffled(_, by) => Err(Self::err(
                n,
                format!("reads the 5-D output of `{by}`; a 5-D Reshape is only supported as a channel shuffle (Reshape, Transpose [0, 2, 1, 3, 4], Reshape back)"),
            )),
        }
    }

    /// A computed input that is plain or a channels-last view of an NCHW node (returned, to
    /// be bound again to the result of an op that keeps it).
    fn view_in(&mut self, n: &NodeProto, i: usize) -> Result<(NodeId, Option<String>)> {
        match self.node_in(n, i)? {
            (id, Pending::Transpose(p, by)) if p == CHANNELS_LAST => Ok((id, Some(by))),
            _ => Ok((self.plain_in(n, i)?, None)),
        }
    }

    /// Bind output 0 of `n` to node `id`, as a channels-last view when `view` is set.
    fn bind_view(&mut self, n: &NodeProto, id: NodeId, view: Option<String>) {
        let p = match view {
            Some(by) => Pending::Transpose(CHANNELS_LAST.to_vec(), by),
            None => Pending::None,
        };
        self.bind(n, 0, Val::Node(id, p));
    }

    fn ints_attr(n: &NodeProto, name: &str) -> Result<Option<Vec<i64>>> {
        match n.attr(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(_) => Err(Self::err(
                n,
                format!("attribute `{name}` must be a list of integers"),
            )),
        }
    }
    fn int_attr(n: &NodeProto, name: &str, default: i64) -> Result<i64> {
        match n.attr(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(Self::err(
                n,
                format!("attribute `{name}` must be an integer"),
            )),
        }
    }
    fn float_attr(n: &NodeProto, name: &str, default: f32) -> Result<f32> {
        match n.attr(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(_) => Err(Self::err(n, format!("attribute `{name}` must be a number"))),
        }
    }
    fn str_attr(n: &NodeProto, name: &str, default: &str) -> Result<String> {
        match n.attr(name) {
            None => Ok(default.into()),
            Some(Attr::Str(s)) => Ok(s.clone()),
            Some(_) => Err(Self::err(n, format!("attribute `{name}` must be a string"))),
        }
    }

    fn tensor(n: &NodeProto, c: &Const, what: &str, shape: Vec<usize>) -> Result<Tensor> {
        Self::tensor_of(n, c.clone(), what, shape)
    }

    /// [`Importer::tensor`] of a constant owned: its values are moved, not copied, when
    /// nothing else holds them.
    fn tensor_of(n: &NodeProto, c: Const, what: &str, shape: Vec<usize>) -> Result<Tensor> {
        if !matches!(*c.data, Data::F32(_)) {
            return Err(Self::err(
                n,
                format!("{what} must be floating point, found integers"),
            ));
        }
        Tensor::new(shape, c.into_floats())
            .map_err(|e| Self::err(n, format!("{what}: {}", e.message)))
    }

    /// Input `i` of `n` as a constant, taken out of the import when `n` is its last reader
    /// (and it is no graph output), so that its values can be moved into a weight.
    fn take_const(&mut self, n: &NodeProto, i: usize) -> Result<Const> {
        let c = self.konst(n, i)?.clone();
        let name = n.inputs[i].as_str();
        let last = self.left.get(name).copied() == Some(1)
            && n.inputs.iter().filter(|s| s.as_str() == name).count() == 1
            && !self.is_output(name);
        if last {
            self.vals.remove(name);
        }
        Ok(c)
    }

    fn unique_name(&mut self, n: &NodeProto) -> String {
        let base = if n.name.is_empty() {
            n.outputs
                .first()
                .cloned()
                .unwrap_or_else(|| n.op_type.clone())
        } else {
            n.name.clone()
        };
        let k = self.used_names.entry(base.clone()).or_insert(0);
        *k += 1;
        if *k == 1 {
            base
        } else {
            format!("{base}#{k}")
        }
    }

    /// Append an IR node for file node `n`, check its shapes, bind its first output.
    fn push(
        &mut self,
        n: &NodeProto,
        op: Op,
        inputs: Vec<NodeId>,
        params: Vec<(String, Tensor)>,
    ) -> Result<NodeId> {
        let id = self.push_step(n, op, inputs, params)?;
        self.bind(n, 0, Val::Node(id, Pending::None));
        Ok(id)
    }

    /// [`Importer::push`] without binding: one step of a file node that takes several.
    fn push_step(
        &mut self,
        n: &NodeProto,
        op: Op,
        inputs: Vec<NodeId>,
        params: Vec<(String, Tensor)>,
    ) -> Result<NodeId> {
        let name = self.unique_name(n);
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            params,
        });
        self.graph.output = self.graph.nodes.len() - 1;
        // The new node's shape is inferred by sr-core from the shapes before it, so that its
        // checks (and messages) and the activation budget apply as the graph grows, in
        // constant time per node (re-deriving the whole graph per node made a 100,000-node
        // import quadratic).
        let shape = self
            .graph
            .infer_next_shape(&self.shapes, &mut self.activation_bytes)
            .map_err(|e| Error::input(format!("{}: {}", node_label(n), e.message)))?;
        self.shapes.push(shape);
        self.value_names.push(n.outputs[0].clone());
        Ok(self.graph.output)
    }

    /// `op` applied to every row of `x` (its last axis): on a value of rank 3 or more, between
    /// two reshapes to `[rows, last]` and back (the IR's dense layer, LayerNorm and softmax
    /// run along axis 1). `out_last`: the length of the last axis after `op`. Binds output 0.
    fn on_rows(
        &mut self,
        n: &NodeProto,
        x: NodeId,
        op: Op,
        params: Vec<(String, Tensor)>,
        out_last: usize,
    ) -> Result<NodeId> {
        let shape = self.shape_of(x).to_vec();
        if shape.len() <= 2 {
            return self.push(n, op, vec![x], params);
        }
        let last = shape[shape.len() - 1];
        let rows = shape[..shape.len() - 1].iter().product::<usize>();
        let flat = self.push_step(
            n,
            Op::Reshape {
                shape: vec![rows, last],
            },
            vec![x],
            vec![],
        )?;
        let y = self.push_step(n, op, vec![flat], params)?;
        let mut back = shape;
        *back.last_mut().expect("rank 3 or more") = out_last;
        self.push(n, Op::Reshape { shape: back }, vec![y], vec![])
    }

    /// A constant as an IR [`Op::Constant`] node (a class token, a position embedding).
    fn constant_node(&mut self, n: &NodeProto, c: &Const) -> Result<NodeId> {
        let value = Self::tensor(n, c, "a constant read as data", c.dims.clone())?;
        self.push_step(n, Op::Constant, vec![0], vec![("value".into(), value)])
    }

    fn bind(&mut self, n: &NodeProto, i: usize, v: Val) {
        if let Some(name) = n.outputs.get(i) {
            self.vals.insert(name.clone(), v);
        }
    }

    /// Whether `name` is one of the file's graph outputs.
    fn is_output(&self, name: &str) -> bool {
        self.m.outputs.iter().any(|o| o.name == name)
    }

    fn used(&self, name: &str) -> bool {
        self.uses.get(name).copied().unwrap_or(0) > 0 || self.is_output(name)
    }

    fn shape_of(&self, id: NodeId) -> &[usize] {
        &self.shapes[id]
    }

    /// Window attributes shared by Conv and the pools: `(kernel, stride, pads, dilation)`.
    fn window(
        &self,
        n: &NodeProto,
        kernel: [usize; 2],
        x: &[usize],
    ) -> Result<([usize; 2], [usize; 4], [usize; 2])> {
        let two = |name: &str, default: usize| -> Result<[usize; 2]> {
            match Self::ints_attr(n, name)? {
                None => Ok([default; 2]),
                Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => {
                    Ok([v[0] as usize, v[1] as usize])
                }
                Some(v) => Err(Self::err(
                    n,
                    format!("`{name}` = {v:?}, expected two values >= 1 (2-D only)"),
                )),
            }
        };
        let stride = two("strides", 1)?;
        let dilation = two("dilations", 1)?;
        let auto = Self::str_attr(n, "auto_pad", "NOTSET")?;
        let pads = match auto.as_str() {
            "NOTSET" => match Self::ints_attr(n, "pads")? {
                None => [0; 4],
                Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                    // ONNX order [x1_begin, x2_begin, x1_end, x2_end] = [top, left, bottom, right].
                    [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
                }
                Some(p) => {
                    return Err(Self::err(
                        n,
                        format!("`pads` = {p:?}, expected 4 values >= 0"),
                    ))
                }
            },
            "VALID" => [0; 4],
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut p = [0; 4];
                for a in 0..2 {
                    let len = x[2 + a];
                    let out = len.div_ceil(stride[a]);
                    let span = kernel[a].saturating_sub(1) * dilation[a] + 1;
                    let total = ((out - 1) * stride[a] + span).saturating_sub(len);
                    let (small, big) = (total / 2, total - total / 2);
                    if auto == "SAME_UPPER" {
                        p[a] = small;
                        p[2 + a] = big;
                    } else {
                        p[a] = big;
                        p[2 + a] = small;
                    }
                }
                p
            }
            other => {
                return Err(Self::err(
                    n,
                    format!("`auto_pad` = {other:?} is not an ONNX value"),
                ))
            }
        };
        Ok((stride, pads, dilation))
    }

    fn kernel_attr(n: &NodeProto) -> Result<[usize; 2]> {
        match Self::ints_attr(n, "kernel_shape")? {
            Some(k) if k.len() == 2 && k.iter().all(|&x| x >= 1) => {
                Ok([k[0] as usize, k[1] as usize])
            }
            Some(k) => Err(Self::err(
                n,
                format!("`kernel_shape` = {k:?}; only 2-D windows are supported"),
            )),
            None => Err(Self::err(n, "`kernel_shape` is missing")),
        }
    }

    fn node(&mut self, n: &'m NodeProto) -> Result<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(Self::err(
                n,
                format!("op domain `{}` is not supported (only the standard ONNX ops are)", n.domain),
            )
            .with_help("export without runtime-specific fused ops (e.g. save the model before ONNX Runtime's extended optimisations)"));
        }
        if n.outputs.first().is_none_or(|o| o.is_empty()) {
            return Err(Self::err(n, "the node has no output"));
        }
        // The values a fold makes beyond its largest constant input.
        let biggest_in = n
            .inputs
            .iter()
            .filter_map(|i| match self.vals.get(i) {
                Some(Val::Const(c)) => Some(c.numel()),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        match ops().find(|b| b.op == n.op_type) {
            Some(b) => (b.build)(self, n)?,
            None => {
                return Err(Error::unsupported(format!(
                    "{}: unsupported ONNX op `{}`",
                    node_label(n),
                    n.op_type
                ))
                .with_help(format!("supported ops: {}", supported().join(", "))))
            }
        }
        let made: usize = n
            .outputs
            .iter()
            .filter_map(|o| match self.vals.get(o) {
                Some(Val::Const(c)) => Some(c.numel().saturating_sub(biggest_in)),
                _ => None,
            })
            .sum();
        self.generated = self.generated.saturating_add(made);
        // Constants read for the last time are dropped (what was folded from them, or made
        // into a weight, is all that stays).
        for name in n.inputs.iter().filter(|s| !s.is_empty()) {
            if let Some(l) = self.left.get_mut(name.as_str()) {
                *l = l.saturating_sub(1);
                if *l == 0
                    && matches!(self.vals.get(name), Some(Val::Const(_)))
                    && !self.is_output(name)
                {
                    self.vals.remove(name);
                }
            }
        }
        Ok(())
    }
}

/// A tensor of the file as a constant: its dims must be non-negative and hold exactly its
/// values (checked without overflow).
fn const_of(t: &TensorProto) -> Result<Const> {
    let dims: Option<Vec<usize>> = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
    let count = dims
        .as_ref()
        .and_then(|d| d.iter().try_fold(1usize, |a, &x| a.checked_mul(x)));
    match (dims, count) {
        (Some(dims), Some(c)) if c == t.data.len() => Ok(Const {
            dims,
            data: Arc::new(t.data.clone()),
        }),
        _ => Err(Error::input(format!(
            "tensor `{}` declares dims {:?} but holds {} values",
            t.name,
            t.dims,
            t.data.len()
        ))),
    }
}

/// The first value of a constant that must hold one (a Clip bound, a Pad value).
fn scalar(n: &NodeProto, c: &Const, what: &str) -> Result<f32> {
    c.floats()
        .first()
        .copied()
        .ok_or_else(|| Importer::err(n, format!("{what} is an empty tensor")))
}

fn dims_of(n: &NodeProto, c: &Const) -> Result<Vec<usize>> {
    c.ints()
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| Importer::err(n, format!("negative dimension {d}")))
        })
        .collect()
}

/// The most values the constants computed at load time may hold, all together, counted in
/// f32s with their index vectors (3 x 2^26, 768 MiB): shape arithmetic makes a few, weights
/// filled by ConstantOfShape (weight-stripped test models) up to VGG-19's 144 M. A small file
/// cannot make the importer allocate more.
pub const MAX_FOLDED_VALUES: usize = 3 << 26;

/// The most constant values a file may have its folds make (fills, ranges, broadcasts:
/// [`Imported::generated_values`]) when ONNX Runtime runs it (2^24, 64 MiB): the runtime
/// folds them again into its own copy. The dynamo exports of the torchvision classifiers and
/// transformers make a few thousand; a weight-stripped model whose weights are fills runs with
/// `runtime = "srhost"` (up to [`MAX_GENERATED`]).
pub const MAX_GENERATED_FOR_ORT: usize = 1 << 24;

/// The most such values a file may have its folds make when srhost's executor runs it
/// (3 x 2^25, 384 MiB): the graph keeps a weight and the executor its prepared copy, so they
/// take at most 768 MiB. The `onnx` package's weight-stripped VGG-19 (144 M) imports, but does
/// not run.
pub const MAX_GENERATED: usize = 3 << 25;

/// The element count of `dims`, checked: no overflow, at most [`MAX_FOLDED_VALUES`].
fn element_count(n: &NodeProto, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= MAX_FOLDED_VALUES)
        .ok_or_else(|| {
            Importer::err(
                n,
                format!("a constant of shape {dims:?} is larger than the {MAX_FOLDED_VALUES} values srhost folds"),
            )
        })
}

/// The largest input height or width a model may declare.
pub const MAX_INPUT_SIDE: usize = 4096;

fn norm_axis(n: &NodeProto, axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if (0..rank as i64).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Importer::err(
            n,
            format!("axis {axis} is out of range for rank {rank}"),
        ))
    }
}

/// For a value of shape `dims` transposed by `perm` and then flattened: feature `i` of the
/// untransposed value's flattening is feature `map[i]` of the transposed one's.
fn flat_map(dims: &[usize], perm: &[usize]) -> Vec<usize> {
    let tdims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let tst = strides(&tdims);
    let inner = &dims[1..];
    let mut map = Vec::with_capacity(inner.iter().product());
    for_each_index(inner, |ix| {
        // Full index with batch 0; transposed position k holds original axis perm[k].
        let full: Vec<usize> = std::iter::once(0).chain(ix.iter().copied()).collect();
        map.push(
            perm.iter()
                .enumerate()
                .map(|(k, &p)| full[p] * tst[k])
                .sum(),
        );
    });
    map
}

/// Import a parsed model. `output`: which graph output to explain (default: the first).
/// `input_hw`: the spatial size for files whose input height/width are symbolic.
pub fn import(
    m: &ModelProto,
    output: Option<&str>,
    input_hw: Option<[usize; 2]>,
) -> Result<Imported> {
    let init: HashMap<&str, &TensorProto> = m
        .initializers
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let nodes = patterns::fuse(m);
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &nodes {
        for i in n.inputs.iter().filter(|s| !s.is_empty()) {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    // The image input: the one graph input that is not an initializer and is read.
    let candidates: Vec<_> = m
        .inputs
        .iter()
        .filter(|i| !init.contains_key(i.name.as_str()) && uses.contains_key(i.name.as_str()))
        .collect();
    let input = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::input(
                "the model has no graph input that its nodes read",
            ))
        }
        many => {
            return Err(Error::input(format!(
                "the model has {} inputs ({}); srhost runs models with one image input",
                many.len(),
                many.iter()
                    .map(|i| format!("`{}`", i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let dims = input
        .shape
        .clone()
        .ok_or_else(|| Error::input(format!("input `{}` declares no shape", input.name)))?;
    if dims.len() != 4 {
        return Err(Error::input(format!(
            "input `{}` has rank {}; srhost expects an NCHW image batch",
            input.name,
            dims.len()
        )));
    }
    if input.elem_type != 0 && !is_float_type(input.elem_type) {
        return Err(Error::input(format!(
            "input `{}` is {}; srhost feeds float images",
            input.name,
            dtype_name(input.elem_type)
        )));
    }
    let fixed = |d: &Dim| match d {
        Dim::Fixed(v) if *v > 0 => Some(*v as usize),
        _ => None,
    };
    let c = fixed(&dims[1]).ok_or_else(|| {
        Error::input(format!(
            "input `{}`: the channel count is not fixed ({:?})",
            input.name, dims[1]
        ))
    })?;
    let hw = match (fixed(&dims[2]), fixed(&dims[3]), input_hw) {
        // A fixed size is the model's: input_size may only repeat it.
        (Some(h), Some(w), Some(hw)) if hw != [h, w] => {
            return Err(Error::params(format!(
                "`input_size` {hw:?}: input `{}` is fixed at {h} x {w}",
                input.name
            ))
            .with_help("leave input_size out for a model with a fixed input size"))
        }
        (_, _, Some(hw)) => hw,
        (Some(h), Some(w), None) => [h, w],
        _ => {
            return Err(Error::params(format!(
                "input `{}` has a symbolic height or width ({:?}, {:?})",
                input.name, dims[2], dims[3]
            ))
            .with_help("give input_size = [height, width] in the [model] table"))
        }
    };
    if c > 64 || hw.iter().any(|&s| s == 0 || s > MAX_INPUT_SIDE) {
        return Err(Error::input(format!(
            "input `{}` is {c} x {} x {}: srhost takes at most 64 channels and {MAX_INPUT_SIDE} pixels a side",
            input.name, hw[0], hw[1]
        )));
    }
    let mut imp = Importer {
        m,
        graph: Graph {
            nodes: vec![Node {
                name: input.name.clone(),
                op: Op::Input {
                    shape: vec![c, hw[0], hw[1]],
                },
                inputs: vec![],
                params: vec![],
            }],
            output: 0,
        },
        shapes: vec![vec![1, c, hw[0], hw[1]]],
        activation_bytes: 0,
        value_names: vec![input.name.clone()],
        vals: HashMap::new(),
        left: uses.clone(),
        uses,
        used_names: HashMap::new(),
        folded: 0,
        generated: 0,
    };
    imp.used_names.insert(input.name.clone(), 1);
    for t in &m.initializers {
        imp.vals.insert(t.name.clone(), Val::Const(const_of(t)?));
    }
    imp.vals
        .insert(input.name.clone(), Val::Node(0, Pending::None));
    for n in &nodes {
        imp.node(n)?;
    }

    let out_name = match output {
        Some(o) => {
            if !m.outputs.iter().any(|v| v.name == o) && !imp.vals.contains_key(o) {
                return Err(
                    Error::params(format!("`output`: the model has no value `{o}`")).with_help(
                        format!(
                            "graph outputs: {}",
                            m.outputs
                                .iter()
                                .map(|v| v.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                );
            }
            o.to_string()
        }
        None => m
            .outputs
            .first()
            .map(|v| v.name.clone())
            .ok_or_else(|| Error::input("the model declares no graph output"))?,
    };
    let out = match imp.vals.get(&out_name) {
        Some(Val::Node(id, Pending::None)) => *id,
        Some(Val::Node(..)) => {
            return Err(Error::input(format!(
            "output `{out_name}` ends in a Pad or Transpose, which srhost does not run on its own"
        )))
        }
        Some(Val::Const(_)) => {
            return Err(Error::input(format!("output `{out_name}` is a constant")))
        }
        None => {
            return Err(Error::input(format!(
                "no node produces the output `{out_name}`"
            )))
        }
    };
    if imp.shapes[out].len() != 2 && imp.shapes[out][2..].iter().any(|&d| d != 1) {
        return Err(Error::input(format!(
            "output `{out_name}` has shape {:?}; srhost explains classifiers with [batch, classes] outputs",
            imp.shapes[out]
        )));
    }
    let logits = if imp.graph.nodes[out].op == Op::Softmax {
        imp.graph.nodes[out].inputs[0]
    } else {
        out
    };
    let logits_name = imp.value_names[logits].clone();
    let generated_values = imp.generated;

    // Keep only what the chosen output depends on (ONet's other heads go).
    let mut keep = vec![false; imp.graph.nodes.len()];
    keep[out] = true;
    keep[0] = true;
    for id in (0..=out).rev() {
        if keep[id] {
            for &i in &imp.graph.nodes[id].inputs {
                keep[i] = true;
            }
        }
    }
    let mut remap = vec![usize::MAX; keep.len()];
    let mut nodes = Vec::new();
    for (id, node) in imp.graph.nodes.into_iter().enumerate() {
        if keep[id] {
            remap[id] = nodes.len();
            let mut node = node;
            node.inputs = node.inputs.iter().map(|&i| remap[i]).collect();
            nodes.push(node);
        }
    }
    let graph = Graph {
        nodes,
        output: remap[out],
    };
    graph.infer_shapes()?;
    Ok(Imported {
        graph,
        input_name: input.name.clone(),
        input_dims: dims,
        logits_is_output: m.outputs.iter().any(|o| o.name == logits_name),
        logits_name,
        generated_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_one_builder() {
        let ops = supported();
        let mut sorted = ops.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ops.len(), "an op is listed twice: {ops:?}");
        // Errors list the layers first.
        assert_eq!(ops[0], "Conv");
        for op in [
            "Gemm", "MatMul", "Constant", "Reshape", "Flatten", "Pad", "Sum",
        ] {
            assert!(ops.contains(&op), "{op}");
        }
    }

    #[test]
    fn flat_map_matches_a_direct_transpose() {
        // dims [1, 2, 3, 4], perm [0, 3, 2, 1] as in ONet.
        let dims = [1, 2, 3, 4];
        let perm = [0, 3, 2, 1];
        let map = flat_map(&dims, &perm);
        // Transposed tensor t[0, w, h, c] = x[0, c, h, w]; flat index of t is (w*3 + h)*2 + c.
        for c in 0..2 {
            for h in 0..3 {
                for w in 0..4 {
                    let i = (c * 3 + h) * 4 + w;
                    assert_eq!(map[i], (w * 3 + h) * 2 + c);
                }
            }
        }
    }
}
