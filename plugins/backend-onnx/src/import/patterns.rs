//! Subgraphs that `torch.onnx.export` writes op by op for a layer that newer opsets (and the
//! IR) have one op for, rewritten to that op before import, so the importer reads both forms:
//!
//! - LayerNorm below opset 17: `ReduceMean(x) -> Sub -> Pow 2 -> ReduceMean -> Add eps -> Sqrt
//!   -> Div [-> Mul weight] [-> Add bias]` becomes `LayerNormalization(x, weight, bias)`;
//! - exact GELU below opset 20: `Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5` becomes
//!   `Gelu(x)`.
//!
//! A subgraph is rewritten only when its intermediate values are read by nothing else (and are
//! not graph outputs); anything else is left for the importer, whose errors then name the ops.

use crate::proto::{Attr, Data, ModelProto, NodeProto};
use std::collections::{HashMap, HashSet};

struct Index<'m> {
    m: &'m ModelProto,
    producer: HashMap<&'m str, usize>,
    consumers: HashMap<&'m str, Vec<usize>>,
    outputs: HashSet<&'m str>,
    initializers: HashMap<&'m str, usize>,
}

impl<'m> Index<'m> {
    fn new(m: &'m ModelProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in m.nodes.iter().enumerate() {
            for o in &n.outputs {
                producer.insert(o.as_str(), i);
            }
            for x in n.inputs.iter().filter(|s| !s.is_empty()) {
                consumers.entry(x.as_str()).or_default().push(i);
            }
        }
        Index {
            m,
            producer,
            consumers,
            outputs: m.outputs.iter().map(|o| o.name.as_str()).collect(),
            initializers: m
                .initializers
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect(),
        }
    }

    fn node(&self, i: usize) -> &'m NodeProto {
        &self.m.nodes[i]
    }

    /// The one node that reads `value`, when `value` is not a graph output.
    fn only(&self, value: &str, op: &str) -> Option<usize> {
        if self.outputs.contains(value) {
            return None;
        }
        match self.consumers.get(value).map(Vec::as_slice) {
            Some(&[c]) if self.node(c).op_type == op => Some(c),
            _ => None,
        }
    }

    /// `value`, or what the Identity nodes that produce it pass on (torch writes an Identity
    /// for each use of a deduplicated initializer).
    fn source<'a>(&'a self, mut value: &'a str) -> &'a str {
        for _ in 0..self.m.nodes.len() {
            match self.producer.get(value) {
                Some(&p) if self.node(p).op_type == "Identity" => match self.node(p).inputs.first()
                {
                    Some(i) => value = i,
                    None => break,
                },
                _ => break,
            }
        }
        value
    }

    /// Whether `value` is a constant (an initializer or a Constant node's output, possibly
    /// through Identity nodes).
    fn is_const(&self, value: &str) -> bool {
        let value = self.source(value);
        self.initializers.contains_key(value)
            || self
                .producer
                .get(value)
                .is_some_and(|&p| self.node(p).op_type == "Constant")
    }

    /// The value of a one-element float constant.
    fn scalar(&self, value: &str) -> Option<f32> {
        let value = self.source(value);
        let data = match (self.initializers.get(value), self.producer.get(value)) {
            (Some(&t), _) => &self.m.initializers[t].data,
            (None, Some(&p)) if self.node(p).op_type == "Constant" => {
                match self.node(p).attr("value") {
                    Some(Attr::Tensor(t)) => &t.data,
                    _ => return None,
                }
            }
            _ => return None,
        };
        match data {
            Data::F32(v) if v.len() == 1 => Some(v[0]),
            Data::I64(v) if v.len() == 1 => Some(v[0] as f32),
            _ => None,
        }
    }

    /// The input of binary node `i` other than `value` (for commutative ops).
    fn other(&self, i: usize, value: &str) -> Option<&'m str> {
        match self.node(i).inputs.as_slice() {
            [a, b] if a == value => Some(b),
            [a, b] if b == value => Some(a),
            _ => None,
        }
    }
}

fn last_axis(n: &NodeProto) -> bool {
    let keep = !matches!(n.attr("keepdims"), Some(Attr::Int(0)));
    let axes = matches!(n.attr("axes"), Some(Attr::Ints(a)) if a == &[-1]);
    keep && axes && n.inputs.len() == 1
}

/// A match: the nodes it replaces (the last one's position takes the new node) and the node.
struct Rewrite {
    nodes: Vec<usize>,
    node: NodeProto,
}

fn layer_norm(ix: &Index, i: usize) -> Option<Rewrite> {
    let mean = ix.node(i);
    if mean.op_type != "ReduceMean" || !last_axis(mean) {
        return None;
    }
    let x = &mean.inputs[0];
    let sub = ix.only(&mean.outputs[0], "Sub")?;
    if ix.node(sub).inputs != [x.clone(), mean.outputs[0].clone()] {
        return None;
    }
    let d = &ix.node(sub).outputs[0];
    if ix.outputs.contains(d.as_str()) {
        return None;
    }
    let users = ix.consumers.get(d.as_str())?;
    let [p, q] = users[..] else { return None };
    let (pow, div) = match (ix.node(p).op_type.as_str(), ix.node(q).op_type.as_str()) {
        ("Pow", "Div") => (p, q),
        ("Div", "Pow") => (q, p),
        _ => return None,
    };
    if ix.node(pow).inputs.first() != Some(d) || ix.scalar(ix.node(pow).inputs.get(1)?)? != 2.0 {
        return None;
    }
    let var = ix.only(&ix.node(pow).outputs[0], "ReduceMean")?;
    if !last_axis(ix.node(var)) {
        return None;
    }
    let add = ix.only(&ix.node(var).outputs[0], "Add")?;
    let eps = ix.scalar(ix.other(add, &ix.node(var).outputs[0])?)?;
    let sqrt = ix.only(&ix.node(add).outputs[0], "Sqrt")?;
    if ix.only(&ix.node(sqrt).outputs[0], "Div") != Some(div)
        || ix.node(div).inputs != [d.clone(), ix.node(sqrt).outputs[0].clone()]
    {
        return None;
    }
    let mut nodes = vec![i, sub, pow, var, add, sqrt, div];
    let (mut weight, mut bias) = (String::new(), String::new());
    let mut out = &ix.node(div).outputs[0];
    if let Some(mul) = ix.only(out, "Mul") {
        let w = ix.other(mul, out)?;
        if ix.is_const(w) {
            weight = w.to_string();
            nodes.push(mul);
            out = &ix.node(mul).outputs[0];
            if let Some(b_add) = ix.only(out, "Add") {
                let b = ix.other(b_add, out)?;
                if ix.is_const(b) {
                    bias = b.to_string();
                    nodes.push(b_add);
                    out = &ix.node(b_add).outputs[0];
                }
            }
        }
    }
    Some(Rewrite {
        node: NodeProto {
            name: format!("{}/LayerNorm", mean.name.trim_end_matches("/ReduceMean")),
            op_type: "LayerNormalization".into(),
            domain: String::new(),
            inputs: vec![x.clone(), weight, bias],
            outputs: vec![out.clone()],
            attrs: vec![
                ("axis".into(), Attr::Int(-1)),
                ("epsilon".into(), Attr::Float(eps)),
            ],
        },
        nodes,
    })
}

fn gelu(ix: &Index, i: usize) -> Option<Rewrite> {
    let erf = ix.node(i);
    if erf.op_type != "Erf" {
        return None;
    }
    let div = *ix.producer.get(erf.inputs.first()?.as_str())?;
    let dn = ix.node(div);
    if dn.op_type != "Div"
        || ix.only(&dn.outputs[0], "Erf") != Some(i)
        || (ix.scalar(dn.inputs.get(1)?)? - std::f32::consts::SQRT_2).abs() > 1e-4
    {
        return None;
    }
    let x = &dn.inputs[0];
    let add = ix.only(&erf.outputs[0], "Add")?;
    if ix.scalar(ix.other(add, &erf.outputs[0])?)? != 1.0 {
        return None;
    }
    let mul = ix.only(&ix.node(add).outputs[0], "Mul")?;
    if ix.other(mul, &ix.node(add).outputs[0])? != x {
        return None;
    }
    let half = ix.only(&ix.node(mul).outputs[0], "Mul")?;
    if ix.scalar(ix.other(half, &ix.node(mul).outputs[0])?)? != 0.5 {
        return None;
    }
    Some(Rewrite {
        nodes: vec![div, i, add, mul, half],
        node: NodeProto {
            name: format!("{}/Gelu", dn.name.trim_end_matches("/Div")),
            op_type: "Gelu".into(),
            domain: String::new(),
            inputs: vec![x.clone()],
            outputs: vec![ix.node(half).outputs[0].clone()],
            attrs: vec![],
        },
    })
}

/// The model's nodes with the patterns above rewritten (the same nodes when none matches).
pub fn fuse(m: &ModelProto) -> Vec<NodeProto> {
    let ix = Index::new(m);
    let mut gone = vec![false; m.nodes.len()];
    let mut at: HashMap<usize, NodeProto> = HashMap::new();
    for i in 0..m.nodes.len() {
        if gone[i] {
            continue;
        }
        let Some(rw) = layer_norm(&ix, i).or_else(|| gelu(&ix, i)) else {
            continue;
        };
        if rw.nodes.iter().any(|&k| gone[k]) {
            continue;
        }
        let last = *rw.nodes.iter().max().expect("a match has nodes");
        for &k in &rw.nodes {
            gone[k] = true;
        }
        at.insert(last, rw.node);
    }
    let mut out = Vec::with_capacity(m.nodes.len());
    for (i, n) in m.nodes.iter().enumerate() {
        match at.remove(&i) {
            Some(new) => out.push(new),
            None if !gone[i] => out.push(n.clone()),
            None => {}
        }
    }
    out
}
