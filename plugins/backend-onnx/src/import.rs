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

use crate::proto::{
    dtype_name, is_float_type, Attr, Data, Dim, ModelProto, NodeProto, TensorProto,
};
use sr_core::graph::{Node, NodeId, Op};
use sr_core::{Error, Graph, Result, Tensor};
use std::collections::HashMap;

/// The ops the importer reads (besides constant folding helpers).
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "PRelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Add",
    "Sum",
    "Concat",
    "Flatten",
    "Reshape",
    "Dropout",
    "LRN",
    "Softmax",
    "Pad",
    "Identity",
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Gather",
    "Slice",
    "Transpose",
    "Cast",
    "Unsqueeze",
    "Squeeze",
];

/// A constant tensor during import.
#[derive(Clone, Debug, PartialEq)]
struct Const {
    dims: Vec<usize>,
    data: Data,
}

impl Const {
    fn ints(&self) -> Vec<i64> {
        match &self.data {
            Data::I64(v) => v.clone(),
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
    fn floats(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    fn numel(&self) -> usize {
        self.data.len()
    }
    /// Pick elements by flat index.
    fn pick(&self, dims: Vec<usize>, idx: &[usize]) -> Const {
        let data = match &self.data {
            Data::F32(v) => Data::F32(idx.iter().map(|&i| v[i]).collect()),
            Data::I64(v) => Data::I64(idx.iter().map(|&i| v[i]).collect()),
        };
        Const { dims, data }
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
}

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
}

struct Importer<'m> {
    m: &'m ModelProto,
    graph: Graph,
    shapes: Vec<Vec<usize>>,
    /// The file's value name of each IR node's output.
    value_names: Vec<String>,
    vals: HashMap<String, Val>,
    uses: HashMap<&'m str, usize>,
    used_names: HashMap<String, usize>,
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

    /// A computed input with nothing pending on it.
    fn plain_in(&self, n: &NodeProto, i: usize) -> Result<NodeId> {
        let (id, p) = self.node_in(n, i)?;
        match p {
            Pending::None => Ok(id),
            Pending::Pad(_, by) => Err(Self::err(
                n,
                format!("reads the output of Pad `{by}`; a Pad is only supported right before Conv or AveragePool"),
            )),
            Pending::Transpose(_, by) | Pending::Flat(_, by) => Err(Self::err(
                n,
                format!("reads the output of Transpose `{by}`; a Transpose is only supported before a Flatten/Reshape feeding Gemm or MatMul"),
            )),
        }
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
        if !matches!(c.data, Data::F32(_)) {
            return Err(Self::err(
                n,
                format!("{what} must be floating point, found integers"),
            ));
        }
        Tensor::new(shape, c.floats()).map_err(|e| Self::err(n, format!("{what}: {}", e.message)))
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
        let name = self.unique_name(n);
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            params,
        });
        self.graph.output = self.graph.nodes.len() - 1;
        // Shapes are re-derived by sr-core so that its checks (and messages) apply as the
        // graph grows; the graphs of CNNs are small enough for this to be instant.
        let shapes = self
            .graph
            .infer_shapes()
            .map_err(|e| Error::input(format!("{}: {}", node_label(n), e.message)))?;
        self.shapes = shapes;
        let id = self.graph.output;
        self.value_names.push(n.outputs[0].clone());
        self.bind(n, 0, Val::Node(id, Pending::None));
        Ok(id)
    }

    fn bind(&mut self, n: &NodeProto, i: usize, v: Val) {
        if let Some(name) = n.outputs.get(i) {
            self.vals.insert(name.clone(), v);
        }
    }

    fn used(&self, name: &str) -> bool {
        self.uses.get(name).copied().unwrap_or(0) > 0
            || self.m.outputs.iter().any(|o| o.name == name)
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
                    let span = (kernel[a] - 1) * dilation[a] + 1;
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
        let opset = self.m.opset;
        match n.op_type.as_str() {
            "Constant" => {
                let c = if let Some(Attr::Tensor(t)) = n.attr("value") {
                    const_of(t)
                } else if let Some(Attr::Float(f)) = n.attr("value_float") {
                    Const {
                        dims: vec![],
                        data: Data::F32(vec![*f]),
                    }
                } else if let Some(Attr::Floats(f)) = n.attr("value_floats") {
                    Const {
                        dims: vec![f.len()],
                        data: Data::F32(f.clone()),
                    }
                } else if let Some(Attr::Int(i)) = n.attr("value_int") {
                    Const {
                        dims: vec![],
                        data: Data::I64(vec![*i]),
                    }
                } else if let Some(Attr::Ints(i)) = n.attr("value_ints") {
                    Const {
                        dims: vec![i.len()],
                        data: Data::I64(i.clone()),
                    }
                } else {
                    return Err(Self::err(n, "no `value` attribute of a supported kind"));
                };
                self.bind(n, 0, Val::Const(c));
            }
            "ConstantOfShape" => {
                let dims = dims_of(n, self.konst(n, 0)?)?;
                let count: usize = dims.iter().product();
                let data = match n.attr("value") {
                    Some(Attr::Tensor(t)) => match &t.data {
                        Data::F32(v) => Data::F32(vec![v.first().copied().unwrap_or(0.0); count]),
                        Data::I64(v) => Data::I64(vec![v.first().copied().unwrap_or(0); count]),
                    },
                    _ => Data::F32(vec![0.0; count]),
                };
                self.bind(n, 0, Val::Const(Const { dims, data }));
            }
            "Identity" => {
                let v = self.val(n, 0)?.clone();
                self.bind(n, 0, v);
            }
            "Shape" => {
                let (id, _) = self.node_in(n, 0)?;
                let s: Vec<i64> = self.shape_of(id).iter().map(|&d| d as i64).collect();
                self.bind(
                    n,
                    0,
                    Val::Const(Const {
                        dims: vec![s.len()],
                        data: Data::I64(s),
                    }),
                );
            }
            "Cast" => {
                let to = Self::int_attr(n, "to", 1)?;
                match self.val(n, 0)?.clone() {
                    Val::Const(c) => {
                        let data = if is_float_type(to) {
                            Data::F32(c.floats())
                        } else {
                            Data::I64(c.ints())
                        };
                        self.bind(n, 0, Val::Const(Const { dims: c.dims, data }));
                    }
                    v @ Val::Node(..) if is_float_type(to) => self.bind(n, 0, v),
                    Val::Node(..) => {
                        return Err(Self::err(
                            n,
                            format!("casting image data to {} is not supported", dtype_name(to)),
                        ))
                    }
                }
            }
            "Gather" => {
                let data = self.konst(n, 0)?.clone();
                let idx = self.konst(n, 1)?.clone();
                let axis = norm_axis(n, Self::int_attr(n, "axis", 0)?, data.dims.len())?;
                let len = data.dims[axis] as i64;
                let picks = idx
                    .ints()
                    .iter()
                    .map(|&i| {
                        let j = if i < 0 { i + len } else { i };
                        (0..len).contains(&j).then_some(j as usize).ok_or_else(|| {
                            Self::err(
                                n,
                                format!("index {i} is out of range for axis of length {len}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let outer: usize = data.dims[..axis].iter().product();
                let inner: usize = data.dims[axis + 1..].iter().product();
                let mut flat = Vec::new();
                for o in 0..outer {
                    for &p in &picks {
                        flat.extend((0..inner).map(|i| (o * data.dims[axis] + p) * inner + i));
                    }
                }
                let dims = [&data.dims[..axis], &idx.dims[..], &data.dims[axis + 1..]].concat();
                self.bind(n, 0, Val::Const(data.pick(dims, &flat)));
            }
            "Unsqueeze" | "Squeeze" => {
                let c = self.konst(n, 0)?.clone();
                let axes = if opset >= 13 {
                    self.opt_konst(n, 1)?.map(Const::ints)
                } else {
                    Self::ints_attr(n, "axes")?
                };
                let mut dims = c.dims.clone();
                if n.op_type == "Squeeze" {
                    let rank = dims.len();
                    let mut drop: Vec<usize> = match axes {
                        Some(a) => a
                            .iter()
                            .map(|&x| norm_axis(n, x, rank))
                            .collect::<Result<_>>()?,
                        None => (0..rank).filter(|&i| dims[i] == 1).collect(),
                    };
                    drop.sort_unstable();
                    for &a in drop.iter().rev() {
                        dims.remove(a);
                    }
                } else {
                    let axes = axes.ok_or_else(|| Self::err(n, "`axes` is missing"))?;
                    let rank = dims.len() + axes.len();
                    let mut a: Vec<usize> = axes
                        .iter()
                        .map(|&x| norm_axis(n, x, rank))
                        .collect::<Result<_>>()?;
                    a.sort_unstable();
                    for x in a {
                        dims.insert(x, 1);
                    }
                }
                self.bind(n, 0, Val::Const(Const { dims, data: c.data }));
            }
            "Slice" => {
                let c = self.konst(n, 0)?.clone();
                let rank = c.dims.len();
                let (starts, ends, axes, steps) = if opset >= 10 {
                    (
                        self.konst(n, 1)?.ints(),
                        self.konst(n, 2)?.ints(),
                        self.opt_konst(n, 3)?.map(Const::ints),
                        self.opt_konst(n, 4)?.map(Const::ints),
                    )
                } else {
                    (
                        Self::ints_attr(n, "starts")?.unwrap_or_default(),
                        Self::ints_attr(n, "ends")?.unwrap_or_default(),
                        Self::ints_attr(n, "axes")?,
                        None,
                    )
                };
                let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
                // Per axis: the list of picked indices.
                let mut picks: Vec<Vec<usize>> = c.dims.iter().map(|&d| (0..d).collect()).collect();
                for k in 0..starts.len() {
                    let a = norm_axis(n, axes[k], rank)?;
                    let len = c.dims[a] as i64;
                    let step = steps[k];
                    if step == 0 {
                        return Err(Self::err(n, "a slice step is 0"));
                    }
                    let clampv = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
                    let fix = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
                    let (mut s, e) = if step > 0 {
                        (clampv(fix(starts[k]), 0, len), clampv(fix(ends[k]), 0, len))
                    } else {
                        (
                            clampv(fix(starts[k]), -1, len - 1),
                            clampv(fix(ends[k]), -1, len - 1),
                        )
                    };
                    let mut v = Vec::new();
                    while (step > 0 && s < e) || (step < 0 && s > e) {
                        v.push(s as usize);
                        s += step;
                    }
                    picks[a] = v;
                }
                let dims: Vec<usize> = picks.iter().map(Vec::len).collect();
                let st = strides(&c.dims);
                let mut flat = Vec::new();
                for_each_index(&dims, |ix| {
                    flat.push(
                        ix.iter()
                            .enumerate()
                            .map(|(a, &i)| picks[a][i] * st[a])
                            .sum(),
                    );
                });
                self.bind(n, 0, Val::Const(c.pick(dims, &flat)));
            }
            "Transpose" => match self.val(n, 0)?.clone() {
                Val::Const(c) => {
                    let rank = c.dims.len();
                    let perm = match Self::ints_attr(n, "perm")? {
                        Some(p) => p
                            .iter()
                            .map(|&x| norm_axis(n, x, rank))
                            .collect::<Result<Vec<_>>>()?,
                        None => (0..rank).rev().collect(),
                    };
                    let dims: Vec<usize> = perm.iter().map(|&p| c.dims[p]).collect();
                    let st = strides(&c.dims);
                    let mut flat = Vec::new();
                    for_each_index(&dims, |ix| {
                        flat.push(ix.iter().enumerate().map(|(k, &i)| i * st[perm[k]]).sum());
                    });
                    self.bind(n, 0, Val::Const(c.pick(dims, &flat)));
                }
                Val::Node(id, Pending::None) => {
                    let rank = self.shape_of(id).len();
                    let perm = match Self::ints_attr(n, "perm")? {
                        Some(p) => p
                            .iter()
                            .map(|&x| norm_axis(n, x, rank))
                            .collect::<Result<Vec<_>>>()?,
                        None => (0..rank).rev().collect(),
                    };
                    if perm.iter().enumerate().all(|(i, &p)| i == p) {
                        self.bind(n, 0, Val::Node(id, Pending::None));
                    } else if perm[0] != 0 {
                        return Err(Self::err(
                            n,
                            "a Transpose that moves the batch axis is not supported",
                        ));
                    } else {
                        self.bind(n, 0, Val::Node(id, Pending::Transpose(perm, node_label(n))));
                    }
                }
                Val::Node(..) => {
                    self.plain_in(n, 0)?;
                }
            },
            "Concat" => {
                let k = n.inputs.len();
                let vals: Vec<Val> = (0..k)
                    .map(|i| self.val(n, i).cloned())
                    .collect::<Result<_>>()?;
                if vals.iter().all(|v| matches!(v, Val::Const(_))) {
                    let cs: Vec<Const> = vals
                        .into_iter()
                        .map(|v| match v {
                            Val::Const(c) => c,
                            _ => unreachable!(),
                        })
                        .collect();
                    let rank = cs[0].dims.len();
                    let axis = norm_axis(n, Self::int_attr(n, "axis", 0)?, rank)?;
                    let outer: usize = cs[0].dims[..axis].iter().product();
                    let float = cs.iter().any(|c| matches!(c.data, Data::F32(_)));
                    let (mut fv, mut iv) = (Vec::new(), Vec::new());
                    for o in 0..outer {
                        for c in &cs {
                            if c.dims.len() != rank
                                || c.dims[..axis] != cs[0].dims[..axis]
                                || c.dims[axis + 1..] != cs[0].dims[axis + 1..]
                            {
                                return Err(Self::err(
                                    n,
                                    format!(
                                        "constant shapes {:?} and {:?} do not concatenate",
                                        cs[0].dims, c.dims
                                    ),
                                ));
                            }
                            let chunk: usize = c.dims[axis..].iter().product();
                            if float {
                                fv.extend_from_slice(&c.floats()[o * chunk..(o + 1) * chunk]);
                            } else {
                                iv.extend_from_slice(&c.ints()[o * chunk..(o + 1) * chunk]);
                            }
                        }
                    }
                    let mut dims = cs[0].dims.clone();
                    dims[axis] = cs.iter().map(|c| c.dims[axis]).sum();
                    let data = if float { Data::F32(fv) } else { Data::I64(iv) };
                    self.bind(n, 0, Val::Const(Const { dims, data }));
                } else {
                    let ids: Vec<NodeId> =
                        (0..k).map(|i| self.plain_in(n, i)).collect::<Result<_>>()?;
                    let rank = self.shape_of(ids[0]).len();
                    let axis = norm_axis(n, Self::int_attr(n, "axis", 0)?, rank)?;
                    if ids.len() == 1 {
                        self.bind(n, 0, Val::Node(ids[0], Pending::None));
                    } else {
                        self.push(n, Op::Concat { axis }, ids, vec![])?;
                    }
                }
            }
            "Reshape" | "Flatten" => {
                let v = self.val(n, 0)?.clone();
                let target: Option<Vec<i64>> = if n.op_type == "Reshape" {
                    Some(if opset >= 5 {
                        self.konst(n, 1)?.ints()
                    } else {
                        Self::ints_attr(n, "shape")?.unwrap_or_default()
                    })
                } else {
                    None
                };
                let dims_in = match &v {
                    Val::Const(c) => c.dims.clone(),
                    Val::Node(id, _) => self.shape_of(*id).to_vec(),
                };
                let total: usize = dims_in.iter().product();
                let dims_out: Vec<usize> = match &target {
                    Some(t) => {
                        let allow_zero = Self::int_attr(n, "allowzero", 0)? == 1;
                        let mut out: Vec<usize> = Vec::with_capacity(t.len());
                        let mut infer = None;
                        for (i, &d) in t.iter().enumerate() {
                            match d {
                                -1 if infer.is_none() => {
                                    infer = Some(i);
                                    out.push(1);
                                }
                                0 if !allow_zero => out.push(*dims_in.get(i).ok_or_else(|| Self::err(n, format!("shape {t:?} copies a dimension the input {dims_in:?} lacks")))?),
                                d if d >= 0 => out.push(d as usize),
                                _ => return Err(Self::err(n, format!("invalid target shape {t:?}"))),
                            }
                        }
                        if let Some(i) = infer {
                            let rest: usize = out.iter().product();
                            if rest == 0 || total % rest != 0 {
                                return Err(Self::err(
                                    n,
                                    format!("cannot reshape {dims_in:?} to {t:?}"),
                                ));
                            }
                            out[i] = total / rest;
                        }
                        out
                    }
                    None => {
                        let axis = norm_axis(n, Self::int_attr(n, "axis", 1)?, dims_in.len() + 1)?;
                        vec![
                            dims_in[..axis].iter().product(),
                            dims_in[axis..].iter().product(),
                        ]
                    }
                };
                if dims_out.iter().product::<usize>() != total {
                    return Err(Self::err(
                        n,
                        format!("cannot reshape {dims_in:?} to {dims_out:?}"),
                    ));
                }
                match v {
                    Val::Const(c) => self.bind(
                        n,
                        0,
                        Val::Const(Const {
                            dims: dims_out,
                            data: c.data,
                        }),
                    ),
                    Val::Node(id, pending) => {
                        if dims_out == dims_in && pending == Pending::None {
                            self.bind(n, 0, Val::Node(id, Pending::None));
                            return Ok(());
                        }
                        // The IR flattens every axis after the batch; the batch is 1 here.
                        let flat = dims_out.len() == 2 && dims_out[0] == dims_in[0];
                        if !flat {
                            return Err(Self::err(n, format!(
                                "reshaping {dims_in:?} to {dims_out:?} is not supported (only flattening to [batch, features])"
                            )));
                        }
                        let map = match pending {
                            Pending::None => None,
                            Pending::Transpose(perm, by) => Some((flat_map(&dims_in, &perm), by)),
                            _ => {
                                self.plain_in(n, 0)?;
                                None
                            }
                        };
                        let id = self.push(n, Op::Flatten, vec![id], vec![])?;
                        if let Some((map, by)) = map {
                            self.bind(n, 0, Val::Node(id, Pending::Flat(map, by)));
                        }
                    }
                }
            }
            "Conv" => {
                let (x, pending) = self.node_in(n, 0)?;
                let extra = match pending {
                    Pending::None => [0; 4],
                    Pending::Pad(p, _) => p,
                    _ => {
                        self.plain_in(n, 0)?;
                        [0; 4]
                    }
                };
                let w = self.konst(n, 1)?.clone();
                if w.dims.len() != 4 {
                    return Err(Self::err(n, format!("weight `{}` has shape {:?}; only 2-D convolutions (4-D weights) are supported", n.inputs[1], w.dims)));
                }
                let kernel = match Self::ints_attr(n, "kernel_shape")? {
                    Some(_) => Self::kernel_attr(n)?,
                    None => [w.dims[2], w.dims[3]],
                };
                if kernel != [w.dims[2], w.dims[3]] {
                    return Err(Self::err(
                        n,
                        format!(
                            "`kernel_shape` {kernel:?} disagrees with weight shape {:?}",
                            w.dims
                        ),
                    ));
                }
                let xs = self.shape_of(x).to_vec();
                let (stride, pads, dilation) = self.window(n, kernel, &xs)?;
                let padding = [
                    pads[0] + extra[0],
                    pads[1] + extra[1],
                    pads[2] + extra[2],
                    pads[3] + extra[3],
                ];
                let groups = Self::int_attr(n, "group", 1)?;
                if groups < 1 {
                    return Err(Self::err(n, format!("`group` = {groups}")));
                }
                let mut params = vec![(
                    "weight".to_string(),
                    Self::tensor(n, &w, "weight", w.dims.clone())?,
                )];
                if let Some(b) = self.opt_konst(n, 2)? {
                    params.push(("bias".into(), Self::tensor(n, b, "bias", vec![b.numel()])?));
                }
                self.push(
                    n,
                    Op::Conv2d {
                        stride,
                        padding,
                        dilation,
                        groups: groups as usize,
                    },
                    vec![x],
                    params,
                )?;
            }
            "Gemm" | "MatMul" => {
                let (x, pending) = self.node_in(n, 0)?;
                let map = match pending {
                    Pending::None => None,
                    Pending::Flat(m, _) => Some(m),
                    _ => {
                        self.plain_in(n, 0)?;
                        None
                    }
                };
                if self.shape_of(x).len() != 2 {
                    return Err(Self::err(
                        n,
                        format!(
                            "expects a [batch, features] input, got {:?}",
                            self.shape_of(x)
                        ),
                    ));
                }
                let b = self.konst(n, 1)?.clone();
                if b.dims.len() != 2 {
                    return Err(Self::err(
                        n,
                        format!(
                            "weight `{}` has shape {:?}, expected 2-D",
                            n.inputs[1], b.dims
                        ),
                    ));
                }
                let gemm = n.op_type == "Gemm";
                if gemm && Self::int_attr(n, "transA", 0)? != 0 {
                    return Err(Self::err(n, "`transA` = 1 is not supported"));
                }
                let trans_b = gemm && Self::int_attr(n, "transB", 0)? != 0;
                let alpha = if gemm {
                    Self::float_attr(n, "alpha", 1.0)?
                } else {
                    1.0
                };
                let beta = if gemm {
                    Self::float_attr(n, "beta", 1.0)?
                } else {
                    1.0
                };
                let (o, i) = if trans_b {
                    (b.dims[0], b.dims[1])
                } else {
                    (b.dims[1], b.dims[0])
                };
                let bv = b.floats();
                let mut w = vec![0f32; o * i];
                for r in 0..o {
                    for c in 0..i {
                        let src = map.as_ref().map_or(c, |m| m[c]);
                        let v = if trans_b {
                            bv[r * i + src]
                        } else {
                            bv[src * o + r]
                        };
                        w[r * i + c] = alpha * v;
                    }
                }
                let mut params = vec![(
                    "weight".to_string(),
                    Tensor::new(vec![o, i], w).map_err(|e| Self::err(n, e.message))?,
                )];
                if gemm {
                    if let Some(c) = self.opt_konst(n, 2)? {
                        let cv = c.floats();
                        let bias: Vec<f32> = match cv.len() {
                            1 => vec![beta * cv[0]; o],
                            l if l == o => cv.iter().map(|v| beta * v).collect(),
                            _ => {
                                return Err(Self::err(
                                    n,
                                    format!(
                                        "bias `{}` has shape {:?}, expected [{o}]",
                                        n.inputs[2], c.dims
                                    ),
                                ))
                            }
                        };
                        params.push((
                            "bias".into(),
                            Tensor::new(vec![o], bias).map_err(|e| Self::err(n, e.message))?,
                        ));
                    }
                }
                self.push(n, Op::Linear, vec![x], params)?;
            }
            "Add" | "Sum" => {
                let k = n.inputs.len();
                let vals: Vec<Val> = (0..k)
                    .map(|i| self.val(n, i).cloned())
                    .collect::<Result<_>>()?;
                let consts: Vec<usize> = (0..k)
                    .filter(|&i| matches!(vals[i], Val::Const(_)))
                    .collect();
                if consts.is_empty() {
                    let ids: Vec<NodeId> =
                        (0..k).map(|i| self.plain_in(n, i)).collect::<Result<_>>()?;
                    if ids.len() == 1 {
                        self.bind(n, 0, Val::Node(ids[0], Pending::None));
                    } else {
                        self.push(n, Op::Add, ids, vec![])?;
                    }
                } else if k == 2 && consts.len() == 1 {
                    // A bias: fold into the layer before, if it is ours alone and has none.
                    let xi = 1 - consts[0];
                    let x = self.plain_in(n, xi)?;
                    let Val::Const(c) = &vals[consts[0]] else {
                        unreachable!()
                    };
                    let prev = &self.graph.nodes[x];
                    let channels = self.shapes[x][1];
                    let alone = self.uses.get(n.inputs[xi].as_str()).copied() == Some(1);
                    let fits =
                        c.numel() == channels && c.dims.iter().filter(|&&d| d != 1).count() <= 1;
                    if matches!(prev.op, Op::Linear | Op::Conv2d { .. })
                        && prev.param("bias").is_none()
                        && alone
                        && fits
                    {
                        let bias = Tensor::new(vec![channels], c.floats())
                            .map_err(|e| Self::err(n, e.message))?;
                        self.graph.nodes[x].params.push(("bias".into(), bias));
                        self.bind(n, 0, Val::Node(x, Pending::None));
                    } else {
                        return Err(Self::err(n, "adding a constant is only supported as the bias of the MatMul, Gemm or Conv right before it"));
                    }
                } else {
                    return Err(Self::err(
                        n,
                        "adding constants is only supported as a layer bias",
                    ));
                }
            }
            "Relu" => {
                let x = self.plain_in(n, 0)?;
                self.push(n, Op::Relu, vec![x], vec![])?;
            }
            "Clip" => {
                let x = self.plain_in(n, 0)?;
                let (min, max) = if opset >= 11 {
                    let lo = self
                        .opt_konst(n, 1)?
                        .map(|c| c.floats()[0])
                        .unwrap_or(f32::NEG_INFINITY);
                    let hi = self
                        .opt_konst(n, 2)?
                        .map(|c| c.floats()[0])
                        .unwrap_or(f32::INFINITY);
                    (lo, hi)
                } else {
                    (
                        Self::float_attr(n, "min", f32::NEG_INFINITY)?,
                        Self::float_attr(n, "max", f32::INFINITY)?,
                    )
                };
                self.push(n, Op::Clip { min, max }, vec![x], vec![])?;
            }
            "PRelu" => {
                let x = self.plain_in(n, 0)?;
                let s = self.konst(n, 1)?.clone();
                let slope = Self::tensor(n, &s, "slope", vec![s.numel()])?;
                self.push(n, Op::PRelu, vec![x], vec![("slope".into(), slope)])?;
            }
            "MaxPool" | "AveragePool" => {
                let (x, pending) = self.node_in(n, 0)?;
                let max = n.op_type == "MaxPool";
                if max
                    && n.outputs
                        .get(1)
                        .is_some_and(|o| !o.is_empty() && self.used(o))
                {
                    return Err(Self::err(
                        n,
                        "the `Indices` output of MaxPool is not supported",
                    ));
                }
                let kernel = Self::kernel_attr(n)?;
                let xs = self.shape_of(x).to_vec();
                let (stride, mut padding, dilation) = self.window(n, kernel, &xs)?;
                if dilation != [1, 1] {
                    return Err(Self::err(
                        n,
                        format!("`dilations` = {dilation:?} is not supported for pooling"),
                    ));
                }
                let ceil_mode = Self::int_attr(n, "ceil_mode", 0)? != 0;
                let mut count_include_pad = Self::int_attr(n, "count_include_pad", 0)? != 0;
                match pending {
                    Pending::None => {}
                    Pending::Pad(p, by) if !max && (padding == [0; 4] || count_include_pad) => {
                        // Zeros of an explicit Pad are counted, like included padding.
                        for k in 0..4 {
                            padding[k] += p[k];
                        }
                        count_include_pad = true;
                        let _ = by;
                    }
                    _ => {
                        self.plain_in(n, 0)?;
                    }
                }
                let op = if max {
                    Op::MaxPool {
                        kernel,
                        stride,
                        padding,
                        ceil_mode,
                    }
                } else {
                    Op::AvgPool {
                        kernel,
                        stride,
                        padding,
                        ceil_mode,
                        count_include_pad,
                    }
                };
                self.push(n, op, vec![x], vec![])?;
            }
            "GlobalAveragePool" => {
                let x = self.plain_in(n, 0)?;
                self.push(n, Op::GlobalAvgPool, vec![x], vec![])?;
            }
            "BatchNormalization" => {
                let x = self.plain_in(n, 0)?;
                let eps = Self::float_attr(n, "epsilon", 1e-5)?;
                let names = ["weight", "bias", "running_mean", "running_var"];
                let mut params = Vec::new();
                for (k, pname) in names.iter().enumerate() {
                    let c = self.konst(n, k + 1)?;
                    params.push((
                        pname.to_string(),
                        Self::tensor(n, c, pname, vec![c.numel()])?,
                    ));
                }
                self.push(n, Op::BatchNorm { eps }, vec![x], params)?;
            }
            "Dropout" => {
                if n.outputs
                    .get(1)
                    .is_some_and(|o| !o.is_empty() && self.used(o))
                {
                    return Err(Self::err(
                        n,
                        "the `mask` output of Dropout is not supported",
                    ));
                }
                let x = self.plain_in(n, 0)?;
                self.push(n, Op::Dropout, vec![x], vec![])?;
            }
            "LRN" => {
                let x = self.plain_in(n, 0)?;
                let size = Self::int_attr(n, "size", 0)?;
                if size < 1 {
                    return Err(Self::err(n, "`size` must be >= 1"));
                }
                let op = Op::Lrn {
                    size: size as usize,
                    alpha: Self::float_attr(n, "alpha", 1e-4)?,
                    beta: Self::float_attr(n, "beta", 0.75)?,
                    bias: Self::float_attr(n, "bias", 1.0)?,
                };
                self.push(n, op, vec![x], vec![])?;
            }
            "Softmax" => {
                let x = self.plain_in(n, 0)?;
                let s = self.shape_of(x).to_vec();
                let default = if opset >= 13 { -1 } else { 1 };
                let axis = norm_axis(n, Self::int_attr(n, "axis", default)?, s.len())?;
                // The IR's Softmax runs over all features of a sample (the classes). Before
                // opset 13, Softmax flattens from `axis` on; from 13 it runs along one axis.
                let classes: usize = s[1..].iter().product();
                let ok = if opset < 13 {
                    axis == 1
                } else {
                    s[axis] == classes
                };
                if !ok {
                    return Err(Self::err(n, format!("Softmax over axis {axis} of {s:?} is not supported (only over the classes)")));
                }
                self.push(n, Op::Softmax, vec![x], vec![])?;
            }
            "Pad" => {
                let (x, pending) = self.node_in(n, 0)?;
                let mode = Self::str_attr(n, "mode", "constant")?;
                if mode != "constant" {
                    return Err(Self::err(
                        n,
                        format!("`mode` = {mode:?}; only constant (zero) padding is supported"),
                    ));
                }
                let (pads, value) = if opset >= 11 {
                    let pads = self.konst(n, 1)?.ints();
                    let value = self.opt_konst(n, 2)?.map(|c| c.floats()[0]).unwrap_or(0.0);
                    if Self::has_input(n, 3) {
                        return Err(Self::err(n, "the `axes` input of Pad is not supported"));
                    }
                    (pads, value)
                } else {
                    (
                        Self::ints_attr(n, "pads")?.unwrap_or_default(),
                        Self::float_attr(n, "value", 0.0)?,
                    )
                };
                if value != 0.0 {
                    return Err(Self::err(
                        n,
                        format!("padding value {value}; only 0 is supported"),
                    ));
                }
                if pads.len() != 8
                    || pads[0] != 0
                    || pads[1] != 0
                    || pads[4] != 0
                    || pads[5] != 0
                    || pads.iter().any(|&p| p < 0)
                {
                    return Err(Self::err(n, format!("pads {pads:?}: only non-negative padding of the two spatial axes of an NCHW tensor is supported")));
                }
                let mut p = [
                    pads[2] as usize,
                    pads[3] as usize,
                    pads[6] as usize,
                    pads[7] as usize,
                ];
                match pending {
                    Pending::None => {}
                    Pending::Pad(q, _) => {
                        for k in 0..4 {
                            p[k] += q[k];
                        }
                    }
                    _ => {
                        self.plain_in(n, 0)?;
                    }
                }
                self.bind(n, 0, Val::Node(x, Pending::Pad(p, node_label(n))));
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{}: unsupported ONNX op `{other}`",
                    node_label(n)
                ))
                .with_help(format!("supported ops: {}", SUPPORTED.join(", "))));
            }
        }
        Ok(())
    }
}

fn const_of(t: &TensorProto) -> Const {
    Const {
        dims: t.dims.iter().map(|&d| d as usize).collect(),
        data: t.data.clone(),
    }
}

fn dims_of(n: &NodeProto, c: &Const) -> Result<Vec<usize>> {
    c.ints()
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| Importer::err(n, format!("negative dimension {d}")))
        })
        .collect()
}

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
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &m.nodes {
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
        value_names: vec![input.name.clone()],
        vals: HashMap::new(),
        uses,
        used_names: HashMap::new(),
    };
    imp.used_names.insert(input.name.clone(), 1);
    for t in &m.initializers {
        imp.vals.insert(t.name.clone(), Val::Const(const_of(t)));
    }
    imp.vals
        .insert(input.name.clone(), Val::Node(0, Pending::None));
    for n in &m.nodes {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
