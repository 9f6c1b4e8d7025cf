//! The ops that become layers of the IR: convolutions, dense layers, activations, pooling,
//! normalisation, residual sums, and the zero `Pad` folded into the window of the layer that
//! reads it.

use super::{node_label, norm_axis, scalar, Importer, OpBuilder, Pending, Val, CHANNELS_LAST};
use crate::proto::{Data, NodeProto};
use sr_core::graph::{NodeId, Op};
use sr_core::{Result, Tensor};

/// The ops of this family.
pub(super) const OPS: &[OpBuilder] = &[
    OpBuilder {
        op: "Conv",
        build: conv,
    },
    OpBuilder {
        op: "Gemm",
        build: dense,
    },
    OpBuilder {
        op: "MatMul",
        build: dense,
    },
    OpBuilder {
        op: "Relu",
        build: relu,
    },
    OpBuilder {
        op: "Clip",
        build: clip,
    },
    OpBuilder {
        op: "PRelu",
        build: prelu,
    },
    OpBuilder {
        op: "MaxPool",
        build: pool,
    },
    OpBuilder {
        op: "AveragePool",
        build: pool,
    },
    OpBuilder {
        op: "GlobalAveragePool",
        build: global_average_pool,
    },
    OpBuilder {
        op: "BatchNormalization",
        build: batch_norm,
    },
    OpBuilder {
        op: "Dropout",
        build: dropout,
    },
    OpBuilder {
        op: "LRN",
        build: lrn,
    },
    OpBuilder {
        op: "Softmax",
        build: softmax,
    },
    OpBuilder {
        op: "Pad",
        build: pad,
    },
    OpBuilder {
        op: "Sigmoid",
        build: activation,
    },
    OpBuilder {
        op: "HardSigmoid",
        build: activation,
    },
    OpBuilder {
        op: "HardSwish",
        build: activation,
    },
    OpBuilder {
        op: "Gelu",
        build: activation,
    },
    OpBuilder {
        op: "LayerNormalization",
        build: layer_norm,
    },
    OpBuilder {
        op: "ReduceMean",
        build: reduce_mean,
    },
];

fn conv(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let (x, pending) = imp.node_in(n, 0)?;
    let extra = match pending {
        Pending::None => [0; 4],
        Pending::Pad(p, _) => p,
        _ => {
            imp.plain_in(n, 0)?;
            [0; 4]
        }
    };
    let w = imp.take_const(n, 1)?;
    if w.dims.len() != 4 {
        return Err(Importer::err(
            n,
            format!(
                "weight `{}` has shape {:?}; only 2-D convolutions (4-D weights) are supported",
                n.inputs[1], w.dims
            ),
        ));
    }
    let kernel = match Importer::ints_attr(n, "kernel_shape")? {
        Some(_) => Importer::kernel_attr(n)?,
        None => [w.dims[2], w.dims[3]],
    };
    if kernel != [w.dims[2], w.dims[3]] {
        return Err(Importer::err(
            n,
            format!(
                "`kernel_shape` {kernel:?} disagrees with weight shape {:?}",
                w.dims
            ),
        ));
    }
    let xs = imp.shape_of(x).to_vec();
    let (stride, pads, dilation) = imp.window(n, kernel, &xs)?;
    let padding = [
        pads[0] + extra[0],
        pads[1] + extra[1],
        pads[2] + extra[2],
        pads[3] + extra[3],
    ];
    let groups = Importer::int_attr(n, "group", 1)?;
    if groups < 1 {
        return Err(Importer::err(n, format!("`group` = {groups}")));
    }
    let mut params = vec![("weight".to_string(), {
        let dims = w.dims.clone();
        Importer::tensor_of(n, w, "weight", dims)?
    })];
    if let Some(b) = imp.opt_konst(n, 2)? {
        params.push((
            "bias".into(),
            Importer::tensor(n, b, "bias", vec![b.numel()])?,
        ));
    }
    imp.push(
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
    Ok(())
}

fn dense(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    if n.op_type == "MatMul" && matches!(imp.val(n, 1)?, Val::Node(..)) {
        // Two computed values (attention's products).
        let a = imp.plain_in(n, 0)?;
        let b = imp.plain_in(n, 1)?;
        imp.push(n, Op::MatMul, vec![a, b], vec![])?;
        return Ok(());
    }
    let (x, pending) = imp.node_in(n, 0)?;
    let map = match pending {
        Pending::None => None,
        Pending::Flat(m, _) => Some(m),
        Pending::Transpose(p, by) if p == CHANNELS_LAST && n.op_type == "MatMul" => {
            return channels_last_matmul(imp, n, x, by);
        }
        _ => {
            imp.plain_in(n, 0)?;
            None
        }
    };
    let tokens = n.op_type == "MatMul" && imp.shape_of(x).len() > 2 && map.is_none();
    if imp.shape_of(x).len() != 2 && !tokens {
        return Err(Importer::err(
            n,
            format!(
                "expects a [batch, features] input, got {:?}",
                imp.shape_of(x)
            ),
        ));
    }
    let b = imp.take_const(n, 1)?;
    if b.dims.len() != 2 {
        return Err(Importer::err(
            n,
            format!(
                "weight `{}` has shape {:?}, expected 2-D",
                n.inputs[1], b.dims
            ),
        ));
    }
    let gemm = n.op_type == "Gemm";
    if gemm && Importer::int_attr(n, "transA", 0)? != 0 {
        return Err(Importer::err(n, "`transA` = 1 is not supported"));
    }
    let trans_b = gemm && Importer::int_attr(n, "transB", 0)? != 0;
    let alpha = if gemm {
        Importer::float_attr(n, "alpha", 1.0)?
    } else {
        1.0
    };
    let beta = if gemm {
        Importer::float_attr(n, "beta", 1.0)?
    } else {
        1.0
    };
    let (o, i) = if trans_b {
        (b.dims[0], b.dims[1])
    } else {
        (b.dims[1], b.dims[0])
    };
    let b_dims = b.dims.clone();
    let w = match &map {
        // Moved (or transposed in place) when nothing else holds it: a weight the file
        // does not store (a fill) is held once.
        None if matches!(*b.data, Data::F32(_)) => {
            let mut w = b.into_floats();
            if !trans_b {
                transpose_in_place(&mut w, i, o);
            }
            if alpha != 1.0 {
                w.iter_mut().for_each(|v| *v *= alpha);
            }
            w
        }
        _ => {
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
            w
        }
    };
    let mut params = vec![(
        "weight".to_string(),
        Tensor::new(vec![o, i], w).map_err(|e| Importer::err(n, e.message))?,
    )];
    if gemm {
        if let Some(c) = imp.opt_konst(n, 2)? {
            let cv = c.floats();
            let bias: Vec<f32> = match cv.len() {
                1 => vec![beta * cv[0]; o],
                l if l == o => cv.iter().map(|v| beta * v).collect(),
                _ => {
                    return Err(Importer::err(
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
                Tensor::new(vec![o], bias).map_err(|e| Importer::err(n, e.message))?,
            ));
        }
    }
    if tokens {
        // A dense layer on the last axis of tokens `[..., features]`.
        let x = imp.plain_in(n, 0)?;
        if imp.shape_of(x).last() != Some(&i) {
            return Err(Importer::err(
                n,
                format!(
                    "weight `{}` has shape {:?}, which does not fit {:?}",
                    n.inputs[1],
                    b_dims,
                    imp.shape_of(x)
                ),
            ));
        }
        imp.on_rows(n, x, Op::Linear, params, o)?;
        return Ok(());
    }
    imp.push(n, Op::Linear, vec![x], params)?;
    Ok(())
}

/// A MatMul on the last axis of a channels-last view (ConvNeXt's `Linear` layers) is a 1 x 1
/// convolution of the NCHW value; its result stays a channels-last view.
fn channels_last_matmul(
    imp: &mut Importer<'_>,
    n: &NodeProto,
    x: NodeId,
    by: String,
) -> Result<()> {
    let b = imp.konst(n, 1)?.clone();
    let c = imp.shape_of(x)[1];
    if b.dims.len() != 2 || b.dims[0] != c {
        return Err(Importer::err(
            n,
            format!(
                "weight `{}` has shape {:?}; on a channels-last view of {c} channels it must be [{c}, out]",
                n.inputs[1], b.dims
            ),
        ));
    }
    let o = b.dims[1];
    let bv = b.floats();
    let w: Vec<f32> = (0..o)
        .flat_map(|r| (0..c).map(move |k| (r, k)))
        .map(|(r, k)| bv[k * o + r])
        .collect();
    let weight = Tensor::new(vec![o, c, 1, 1], w).map_err(|e| Importer::err(n, e.message))?;
    let op = Op::Conv2d {
        stride: [1, 1],
        padding: [0; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let id = imp.push(n, op, vec![x], vec![("weight".into(), weight)])?;
    imp.bind_view(n, id, Some(by));
    Ok(())
}

fn relu(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let (x, view) = imp.view_in(n, 0)?;
    let id = imp.push(n, Op::Relu, vec![x], vec![])?;
    imp.bind_view(n, id, view);
    Ok(())
}

/// The smooth activations; like ReLU they keep a channels-last view.
fn activation(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let (x, view) = imp.view_in(n, 0)?;
    let op = match n.op_type.as_str() {
        "Sigmoid" => Op::Sigmoid,
        "HardSigmoid" => Op::HardSigmoid {
            alpha: Importer::float_attr(n, "alpha", 0.2)?,
            beta: Importer::float_attr(n, "beta", 0.5)?,
        },
        "HardSwish" => Op::HardSwish,
        "Gelu" => match Importer::str_attr(n, "approximate", "none")?.as_str() {
            "none" => Op::Gelu,
            a => {
                return Err(Importer::err(
                    n,
                    format!("`approximate` = {a:?}; only the exact (erf) GELU is supported"),
                ))
            }
        },
        other => return Err(Importer::err(n, format!("`{other}` is not an activation"))),
    };
    let id = imp.push(n, op, vec![x], vec![])?;
    imp.bind_view(n, id, view);
    Ok(())
}

/// LayerNorm over the channels: over the last axis of a channels-last view (ConvNeXt's
/// `permute(0, 2, 3, 1)` then `LayerNorm`), or of a `[batch, features]` value. Written by
/// opset 17 as one op, below it as a subgraph that `patterns` rewrites to this op.
fn layer_norm(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let (x, view) = imp.view_in(n, 0)?;
    let shape = imp.shape_of(x).to_vec();
    let rank = if view.is_some() { 4 } else { shape.len() };
    let axis = norm_axis(n, Importer::int_attr(n, "axis", -1)?, rank)?;
    let over_channels = match &view {
        Some(_) => axis == 3,
        None => rank == 2 && axis == 1,
    };
    let over_tokens = view.is_none() && rank > 2 && axis == rank - 1;
    if !over_channels && !over_tokens {
        return Err(Importer::err(
            n,
            format!("LayerNorm over axis {axis} of {shape:?}; only over the channels (the last axis of a channels-last view, or the features of [batch, features]) is supported"),
        ));
    }
    let c = if over_tokens {
        shape[rank - 1]
    } else {
        shape[1]
    };
    let param = |k: usize, what: &str, default: f32| -> Result<Tensor> {
        match imp.opt_konst(n, k)? {
            Some(t) if t.numel() == c => Importer::tensor(n, t, what, vec![c]),
            Some(t) => Err(Importer::err(
                n,
                format!(
                    "{what} `{}` has shape {:?}, expected [{c}]",
                    n.inputs[k], t.dims
                ),
            )),
            None => Ok(Tensor::new(vec![c], vec![default; c]).expect("c values")),
        }
    };
    let params = vec![
        ("weight".to_string(), param(1, "the scale", 1.0)?),
        ("bias".to_string(), param(2, "the bias", 0.0)?),
    ];
    let eps = Importer::float_attr(n, "epsilon", 1e-5)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Importer::err(n, format!("`epsilon` = {eps}")));
    }
    if over_tokens {
        imp.on_rows(n, x, Op::LayerNorm { eps }, params, c)?;
        return Ok(());
    }
    let id = imp.push(n, Op::LayerNorm { eps }, vec![x], params)?;
    imp.bind_view(n, id, view);
    Ok(())
}

/// The mean over the spatial axes of an NCHW value (MNASNet's and ShuffleNet's `x.mean([2, 3])`)
/// is a global average pooling, flattened when the axes are not kept.
fn reduce_mean(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    let rank = imp.shape_of(x).len();
    let axes = match Importer::ints_attr(n, "axes")? {
        Some(a) => a,
        None => imp.opt_konst(n, 1)?.map(|c| c.ints()).unwrap_or_default(),
    };
    let mut axes = axes
        .iter()
        .map(|&a| norm_axis(n, a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    if rank != 4 || axes != [2, 3] {
        return Err(Importer::err(
            n,
            format!("ReduceMean over axes {axes:?} of a rank-{rank} value; only the mean over the spatial axes [2, 3] of an NCHW value is supported"),
        ));
    }
    let id = imp.push(n, Op::GlobalAvgPool, vec![x], vec![])?;
    if Importer::int_attr(n, "keepdims", 1)? == 0 {
        imp.push(n, Op::Flatten, vec![id], vec![])?;
    }
    Ok(())
}

fn clip(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let opset = imp.m.opset;
    let x = imp.plain_in(n, 0)?;
    let (min, max) = if opset >= 11 {
        let lo = imp
            .opt_konst(n, 1)?
            .map(|c| scalar(n, c, "the bound"))
            .transpose()?
            .unwrap_or(f32::NEG_INFINITY);
        let hi = imp
            .opt_konst(n, 2)?
            .map(|c| scalar(n, c, "the bound"))
            .transpose()?
            .unwrap_or(f32::INFINITY);
        (lo, hi)
    } else {
        (
            Importer::float_attr(n, "min", f32::NEG_INFINITY)?,
            Importer::float_attr(n, "max", f32::INFINITY)?,
        )
    };
    imp.push(n, Op::Clip { min, max }, vec![x], vec![])?;
    Ok(())
}

fn prelu(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    let s = imp.konst(n, 1)?.clone();
    let slope = Importer::tensor(n, &s, "slope", vec![s.numel()])?;
    imp.push(n, Op::PRelu, vec![x], vec![("slope".into(), slope)])?;
    Ok(())
}

fn pool(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let (x, pending) = imp.node_in(n, 0)?;
    let max = n.op_type == "MaxPool";
    if max
        && n.outputs
            .get(1)
            .is_some_and(|o| !o.is_empty() && imp.used(o))
    {
        return Err(Importer::err(
            n,
            "the `Indices` output of MaxPool is not supported",
        ));
    }
    let kernel = Importer::kernel_attr(n)?;
    let xs = imp.shape_of(x).to_vec();
    let (stride, mut padding, dilation) = imp.window(n, kernel, &xs)?;
    if dilation != [1, 1] {
        return Err(Importer::err(
            n,
            format!("`dilations` = {dilation:?} is not supported for pooling"),
        ));
    }
    let ceil_mode = Importer::int_attr(n, "ceil_mode", 0)? != 0;
    let mut count_include_pad = Importer::int_attr(n, "count_include_pad", 0)? != 0;
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
            imp.plain_in(n, 0)?;
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
    imp.push(n, op, vec![x], vec![])?;
    Ok(())
}

fn global_average_pool(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    imp.push(n, Op::GlobalAvgPool, vec![x], vec![])?;
    Ok(())
}

fn batch_norm(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    let eps = Importer::float_attr(n, "epsilon", 1e-5)?;
    let names = ["weight", "bias", "running_mean", "running_var"];
    let mut params = Vec::new();
    for (k, pname) in names.iter().enumerate() {
        let c = imp.konst(n, k + 1)?;
        params.push((
            pname.to_string(),
            Importer::tensor(n, c, pname, vec![c.numel()])?,
        ));
    }
    imp.push(n, Op::BatchNorm { eps }, vec![x], params)?;
    Ok(())
}

fn dropout(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    if n.outputs
        .get(1)
        .is_some_and(|o| !o.is_empty() && imp.used(o))
    {
        return Err(Importer::err(
            n,
            "the `mask` output of Dropout is not supported",
        ));
    }
    let x = imp.plain_in(n, 0)?;
    imp.push(n, Op::Dropout, vec![x], vec![])?;
    Ok(())
}

fn lrn(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    let size = Importer::int_attr(n, "size", 0)?;
    if size < 1 {
        return Err(Importer::err(n, "`size` must be >= 1"));
    }
    let op = Op::Lrn {
        size: size as usize,
        alpha: Importer::float_attr(n, "alpha", 1e-4)?,
        beta: Importer::float_attr(n, "beta", 0.75)?,
        bias: Importer::float_attr(n, "bias", 1.0)?,
    };
    imp.push(n, op, vec![x], vec![])?;
    Ok(())
}

fn softmax(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let opset = imp.m.opset;
    let x = imp.plain_in(n, 0)?;
    let s = imp.shape_of(x).to_vec();
    let default = if opset >= 13 { -1 } else { 1 };
    let axis = norm_axis(n, Importer::int_attr(n, "axis", default)?, s.len())?;
    // The IR's Softmax runs over all features of a sample (the classes). Before
    // opset 13, Softmax flattens from `axis` on; from 13 it runs along one axis.
    let classes: usize = s[1..].iter().product();
    let ok = if opset < 13 {
        axis == 1
    } else {
        s[axis] == classes
    };
    if !ok && opset >= 13 && s.len() > 2 && axis == s.len() - 1 {
        // Along the last axis of a value of rank 3 or more (attention), row by row.
        let last = s[axis];
        imp.on_rows(n, x, Op::Softmax, vec![], last)?;
        return Ok(());
    }
    if !ok {
        return Err(Importer::err(
            n,
            format!("Softmax over axis {axis} of {s:?} is not supported (only over the classes)"),
        ));
    }
    imp.push(n, Op::Softmax, vec![x], vec![])?;
    Ok(())
}

fn pad(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let opset = imp.m.opset;
    let (x, pending) = imp.node_in(n, 0)?;
    let mode = Importer::str_attr(n, "mode", "constant")?;
    if mode != "constant" {
        return Err(Importer::err(
            n,
            format!("`mode` = {mode:?}; only constant (zero) padding is supported"),
        ));
    }
    let (pads, value) = if opset >= 11 {
        let pads = imp.konst(n, 1)?.ints();
        let value = imp
            .opt_konst(n, 2)?
            .map(|c| scalar(n, c, "the padding value"))
            .transpose()?
            .unwrap_or(0.0);
        if Importer::has_input(n, 3) {
            return Err(Importer::err(n, "the `axes` input of Pad is not supported"));
        }
        (pads, value)
    } else {
        (
            Importer::ints_attr(n, "pads")?.unwrap_or_default(),
            Importer::float_attr(n, "value", 0.0)?,
        )
    };
    if pads.iter().all(|&p| p == 0) {
        // Nothing to pad (Swin pads its windows only when they do not tile the image).
        let (x, view) = imp.view_in(n, 0)?;
        imp.bind_view(n, x, view);
        return Ok(());
    }
    if value != 0.0 {
        return Err(Importer::err(
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
        return Err(Importer::err(n, format!("pads {pads:?}: only non-negative padding of the two spatial axes of an NCHW tensor is supported")));
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
            imp.plain_in(n, 0)?;
        }
    }
    imp.bind(n, 0, Val::Node(x, Pending::Pad(p, node_label(n))));
    Ok(())
}

/// Transpose the `rows x cols` row-major matrix `v` in place: the element at `r cols + c`
/// moves to `c rows + r`, cycle by cycle, with a bit per element marking those moved.
fn transpose_in_place(v: &mut [f32], rows: usize, cols: usize) {
    let n = v.len();
    if rows <= 1 || cols <= 1 {
        return;
    }
    let mut moved = vec![0u64; n.div_ceil(64)];
    for start in 0..n {
        if moved[start / 64] >> (start % 64) & 1 == 1 {
            continue;
        }
        let (mut at, mut carry) = (start, v[start]);
        loop {
            let to = (at % cols) * rows + at / cols;
            std::mem::swap(&mut v[to], &mut carry);
            moved[to / 64] |= 1 << (to % 64);
            at = to;
            if at == start {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_in_place_matches_a_copy() {
        for (rows, cols) in [(1, 5), (5, 1), (2, 3), (3, 2), (4, 4), (7, 13), (64, 3)] {
            let v: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
            let mut t = v.clone();
            super::transpose_in_place(&mut t, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], v[r * cols + c], "{rows} x {cols}");
                }
            }
        }
    }
}
