//! Element-wise arithmetic: residual sums, a layer's bias, gates (squeeze-and-excitation, and
//! SiLU / hard swish written as `x * sigmoid(x)`), per-channel scales (ConvNeXt's layer scale),
//! and the shape arithmetic on constants that torch writes around a Split or Slice (folded).

use super::{Const, Importer, OpBuilder, Val};
use crate::proto::{Data, NodeProto};
use sr_core::graph::{NodeId, Op};
use sr_core::{Result, Tensor};
use std::sync::Arc;

/// The ops of this family.
pub(super) const OPS: &[OpBuilder] = &[
    OpBuilder {
        op: "Add",
        build: add,
    },
    OpBuilder {
        op: "Sum",
        build: add,
    },
    OpBuilder {
        op: "Mul",
        build: mul,
    },
    OpBuilder {
        op: "Sub",
        build: sub_div,
    },
    OpBuilder {
        op: "Div",
        build: sub_div,
    },
];

/// When both inputs of a binary op are constants: bind their element-wise result (same
/// shapes, or one of them a single value) and return true.
fn fold(imp: &mut Importer<'_>, n: &NodeProto) -> Result<bool> {
    if n.inputs.len() != 2 {
        return Ok(false);
    }
    let (Val::Const(mut a), Val::Const(mut b)) = (imp.val(n, 0)?.clone(), imp.val(n, 1)?.clone())
    else {
        return Ok(false);
    };
    if a.dims != b.dims && a.numel() != 1 && b.numel() != 1 {
        // Numpy broadcasting of two shapes (Swin's window mask `m[:, None] - m[:, :, None]`).
        if let Some(d) = broadcast_dims(&a.dims, &b.dims) {
            imp.charge(n, super::element_count(n, &d)?.saturating_mul(2))?;
            a = expand_to(n, &a, &d)?;
            b = expand_to(n, &b, &d)?;
        }
    }
    let dims = if a.dims == b.dims || b.numel() == 1 && a.dims.len() >= b.dims.len() {
        a.dims.clone()
    } else if a.numel() == 1 {
        b.dims.clone()
    } else {
        return Err(Importer::err(
            n,
            format!(
                "constants of shapes {:?} and {:?} do not broadcast (srhost folds equal shapes or one single value)",
                a.dims, b.dims
            ),
        ));
    };
    let len = a.numel().max(b.numel());
    imp.charge(n, len)?;
    let pick = |k: usize, c: &Const| if c.numel() == 1 { 0 } else { k };
    let op = n.op_type.as_str();
    let data = match (a.data.as_ref(), b.data.as_ref()) {
        (Data::I64(x), Data::I64(y)) => Data::I64(
            (0..len)
                .map(|k| {
                    let (p, q) = (x[pick(k, &a)], y[pick(k, &b)]);
                    match op {
                        "Add" | "Sum" => p.checked_add(q),
                        "Sub" => p.checked_sub(q),
                        "Mul" => p.checked_mul(q),
                        _ => p.checked_div(q),
                    }
                    .ok_or_else(|| {
                        Importer::err(
                            n,
                            format!("integer {op} of {p} and {q} overflows or divides by 0"),
                        )
                    })
                })
                .collect::<Result<_>>()?,
        ),
        _ => {
            let (x, y) = (a.floats(), b.floats());
            Data::F32(
                (0..len)
                    .map(|k| {
                        let (p, q) = (x[pick(k, &a)], y[pick(k, &b)]);
                        match op {
                            "Add" | "Sum" => p + q,
                            "Sub" => p - q,
                            "Mul" => p * q,
                            _ => p / q,
                        }
                    })
                    .collect(),
            )
        }
    };
    imp.bind(
        n,
        0,
        Val::Const(Const {
            dims,
            data: Arc::new(data),
        }),
    );
    Ok(true)
}

fn add(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    if fold(imp, n)? {
        return Ok(());
    }
    let k = n.inputs.len();
    let vals: Vec<Val> = (0..k)
        .map(|i| imp.val(n, i).cloned())
        .collect::<Result<_>>()?;
    let consts: Vec<usize> = (0..k)
        .filter(|&i| matches!(vals[i], Val::Const(_)))
        .collect();
    if consts.is_empty() {
        let ins: Vec<(NodeId, Option<String>)> =
            (0..k).map(|i| imp.view_in(n, i)).collect::<Result<_>>()?;
        let mut view = ins[0].1.clone();
        let mut ids: Vec<NodeId> = ins.iter().map(|(id, _)| *id).collect();
        if ins.iter().any(|(_, v)| v.is_some() != view.is_some()) {
            // One plain, one channels-last view (Swin's residual sums): both as plain values,
            // the view transposed.
            ids = (0..k).map(|i| imp.plain_in(n, i)).collect::<Result<_>>()?;
            view = None;
        }
        if ids.len() == 1 {
            imp.bind_view(n, ids[0], view);
        } else {
            let id = imp.push(n, Op::Add, ids, vec![])?;
            imp.bind_view(n, id, view);
        }
    } else if k == 2 && consts.len() == 1 {
        // A bias: fold into the layer before, if it is ours alone and has none.
        let xi = 1 - consts[0];
        let (x, view) = imp.view_in(n, xi)?;
        let Val::Const(c) = &vals[consts[0]] else {
            unreachable!()
        };
        let alone = imp.uses.get(n.inputs[xi].as_str()).copied() == Some(1);
        let shape = imp.shapes[x].clone();
        // A dense layer on tokens is Reshape -> Linear -> Reshape: its bias runs along the
        // last axis, and goes into the Linear behind the reshape.
        let layer = match &imp.graph.nodes[x].op {
            Op::Reshape { .. } if shape.len() > 2 && view.is_none() => {
                let l = imp.graph.nodes[x].inputs[0];
                let last_only = c.dims.iter().rev().skip(1).all(|&d| d == 1);
                (matches!(imp.graph.nodes[l].op, Op::Linear)
                    && imp.shapes[l][1] == shape[shape.len() - 1]
                    && imp.graph.nodes[l + 1..] // its readers come after it
                        .iter()
                        .filter(|m| m.inputs.contains(&l))
                        .count()
                        == 1
                    && last_only)
                    .then_some(l)
            }
            _ => None,
        };
        let (target, channels) = match layer {
            Some(l) => (l, imp.shapes[l][1]),
            None => (x, shape[1]),
        };
        let prev = &imp.graph.nodes[target];
        let fits = c.numel() == channels
            && (layer.is_some() || c.dims.iter().filter(|&&d| d != 1).count() <= 1);
        if matches!(prev.op, Op::Linear | Op::Conv2d { .. })
            && prev.param("bias").is_none()
            && alone
            && fits
        {
            let bias = Tensor::new(vec![channels], c.floats().into_owned())
                .map_err(|e| Importer::err(n, e.message))?;
            imp.graph.nodes[target].params.push(("bias".into(), bias));
            imp.bind_view(n, x, view);
        } else if view.is_none() && broadcasts(&c.dims, &shape) {
            // A learnt tensor added to the data (a position embedding): an IR constant of the
            // data's shape, and a sum.
            let full = expand_to(n, c, &shape)?;
            let k = imp.constant_node(n, &full)?;
            let ids = if xi == 0 { vec![x, k] } else { vec![k, x] };
            imp.push(n, Op::Add, ids, vec![])?;
        } else {
            return Err(Importer::err(n, format!("adding a constant of shape {:?} to a value of shape {shape:?}: srhost adds a layer bias or a constant that broadcasts to the value", c.dims)));
        }
    } else {
        return Err(Importer::err(
            n,
            "adding constants is only supported as a layer bias",
        ));
    }
    Ok(())
}

/// The numpy broadcast of two shapes, if they broadcast.
pub(super) fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], k: usize| {
        if k + s.len() >= r {
            s[k + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|k| match (at(a, k), at(b, k)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// Whether a constant of shape `c` broadcasts to `x` (numpy rules, the value's shape kept).
fn broadcasts(c: &[usize], x: &[usize]) -> bool {
    c.len() <= x.len()
        && c.iter()
            .rev()
            .zip(x.iter().rev())
            .all(|(&a, &b)| a == b || a == 1)
}

/// Constant `c` broadcast to shape `x` (checked by [`broadcasts`]).
pub(super) fn expand_to(n: &NodeProto, c: &Const, x: &[usize]) -> Result<Const> {
    let count = super::element_count(n, x)?;
    let pad = x.len() - c.dims.len();
    let a: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(c.dims.iter().copied())
        .collect();
    let st = super::strides(&a);
    let mut flat = Vec::with_capacity(count);
    super::for_each_index(x, |ix| {
        flat.push(
            ix.iter()
                .enumerate()
                .map(|(k, &i)| if a[k] == 1 { 0 } else { i * st[k] })
                .sum(),
        );
    });
    Ok(c.pick(x.to_vec(), &flat))
}

/// Whether IR node `id` is a sigmoid-like gate (Sigmoid or HardSigmoid).
fn is_gate(imp: &Importer<'_>, id: NodeId) -> bool {
    matches!(imp.graph.nodes[id].op, Op::Sigmoid | Op::HardSigmoid { .. })
}

fn mul(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    if fold(imp, n)? {
        return Ok(());
    }
    if n.inputs.len() != 2 {
        return Err(Importer::err(
            n,
            format!("Mul has {} inputs, expected 2", n.inputs.len()),
        ));
    }
    let konst = (0..2).find(|&i| matches!(imp.vals.get(&n.inputs[i]), Some(Val::Const(_))));
    if let Some(ci) = konst {
        return scale(imp, n, ci);
    }
    let (a, va) = imp.view_in(n, 0)?;
    let (b, vb) = imp.view_in(n, 1)?;
    if va.is_some() || vb.is_some() {
        return Err(Importer::err(
            n,
            "a product of two computed values in channels-last layout is not supported",
        ));
    }
    let (sa, sb) = (imp.shape_of(a).to_vec(), imp.shape_of(b).to_vec());
    let per_channel =
        |s: &[usize], of: &[usize]| of.len() == 4 && s == [of[0], of[1], 1, 1] && s != of;
    let (signal, gate) = if sa == sb {
        // x * sigmoid(x) is SiLU; x * hardsigmoid(x) with PyTorch's constants is hard swish.
        for (x, g) in [(a, b), (b, a)] {
            let gn = &imp.graph.nodes[g];
            if gn.inputs.first() != Some(&x) {
                continue;
            }
            let fused = match gn.op {
                Op::Sigmoid => Some(Op::Silu),
                Op::HardSigmoid { alpha, beta }
                    if (alpha - 1.0 / 6.0).abs() < 1e-6 && beta == 0.5 =>
                {
                    Some(Op::HardSwish)
                }
                _ => None,
            };
            if let Some(op) = fused {
                imp.push(n, op, vec![x], vec![])?;
                return Ok(());
            }
        }
        if !is_gate(imp, b) && is_gate(imp, a) {
            (b, a)
        } else {
            (a, b)
        }
    } else if per_channel(&sb, &sa) {
        (a, b)
    } else if per_channel(&sa, &sb) {
        (b, a)
    } else {
        return Err(Importer::err(
            n,
            format!("a product of shapes {sa:?} and {sb:?}; srhost multiplies equal shapes or a [N, C, H, W] signal by a [N, C, 1, 1] gate"),
        ));
    };
    imp.push(n, Op::Mul, vec![signal, gate], vec![])?;
    Ok(())
}

/// A computed value times a constant that holds one value, or one per channel (ConvNeXt's
/// layer scale `[C, 1, 1]`, or `[C]` on a channels-last view): a per-channel affine map,
/// written as a BatchNorm with mean 0, variance 1, epsilon 0 and no shift.
fn scale(imp: &mut Importer<'_>, n: &NodeProto, ci: usize) -> Result<()> {
    let Val::Const(c) = imp.val(n, ci)?.clone() else {
        unreachable!("checked by the caller")
    };
    let (x, view) = imp.view_in(n, 1 - ci)?;
    let shape = imp.shape_of(x).to_vec();
    let channels = shape.get(1).copied().unwrap_or(0);
    // The constant's one non-1 axis, aligned to the right of the value's 4 axes, must be the
    // channels: axis 1 of NCHW, axis 3 of a channels-last view.
    if shape.len() != 4 && view.is_none() && c.numel() == 1 {
        // One factor on a value of another rank (attention's `q * d^-1/2`).
        let factor = c.floats()[0];
        imp.push(n, Op::Scale { factor }, vec![x], vec![])?;
        return Ok(());
    }
    let channel_axis = if view.is_some() { 3 } else { 1 };
    let aligned = c.dims.len() <= 4
        && c.dims
            .iter()
            .rev()
            .enumerate()
            .all(|(k, &d)| d == 1 || 3 - k == channel_axis);
    if shape.len() != 4 || !(c.numel() == 1 || c.numel() == channels && aligned) {
        return Err(Importer::err(
            n,
            format!(
                "multiplying a value of shape {shape:?} by a constant of shape {:?}; srhost multiplies an NCHW value by one value or one per channel",
                c.dims
            ),
        ));
    }
    let v = c.floats();
    let weight: Vec<f32> = (0..channels)
        .map(|k| v[if v.len() == 1 { 0 } else { k }])
        .collect();
    let t = |v: Vec<f32>| Tensor::new(vec![channels], v).expect("one value per channel");
    let params = vec![
        ("weight".to_string(), t(weight)),
        ("bias".to_string(), t(vec![0.0; channels])),
        ("running_mean".to_string(), t(vec![0.0; channels])),
        ("running_var".to_string(), t(vec![1.0; channels])),
    ];
    let id = imp.push(n, Op::BatchNorm { eps: 0.0 }, vec![x], params)?;
    imp.bind_view(n, id, view);
    Ok(())
}

fn sub_div(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    if fold(imp, n)? {
        return Ok(());
    }
    // A computed value divided by one constant value: a scale.
    if n.op_type == "Div" && n.inputs.len() == 2 {
        if let (Val::Node(..), Val::Const(c)) = (imp.val(n, 0)?.clone(), imp.val(n, 1)?.clone()) {
            if c.numel() == 1 && c.floats()[0] != 0.0 {
                let x = imp.plain_in(n, 0)?;
                let factor = 1.0 / c.floats()[0];
                imp.push(n, Op::Scale { factor }, vec![x], vec![])?;
                return Ok(());
            }
        }
    }
    Err(Importer::err(
        n,
        format!(
            "{} of computed values is only supported inside a LayerNorm or GELU as torch exports them, or on constants",
            n.op_type
        ),
    ))
}
