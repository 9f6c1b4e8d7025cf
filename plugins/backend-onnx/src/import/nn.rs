//! The ops that become layers of the IR: convolutions, dense layers, activations, pooling,
//! normalisation, residual sums, and the zero `Pad` folded into the window of the layer that
//! reads it.

use super::{node_label, norm_axis, scalar, Importer, OpBuilder, Pending, Val};
use crate::proto::NodeProto;
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
        op: "Add",
        build: add,
    },
    OpBuilder {
        op: "Sum",
        build: add,
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
    let w = imp.konst(n, 1)?.clone();
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
    let mut params = vec![(
        "weight".to_string(),
        Importer::tensor(n, &w, "weight", w.dims.clone())?,
    )];
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
    let (x, pending) = imp.node_in(n, 0)?;
    let map = match pending {
        Pending::None => None,
        Pending::Flat(m, _) => Some(m),
        _ => {
            imp.plain_in(n, 0)?;
            None
        }
    };
    if imp.shape_of(x).len() != 2 {
        return Err(Importer::err(
            n,
            format!(
                "expects a [batch, features] input, got {:?}",
                imp.shape_of(x)
            ),
        ));
    }
    let b = imp.konst(n, 1)?.clone();
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
    imp.push(n, Op::Linear, vec![x], params)?;
    Ok(())
}

fn add(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let k = n.inputs.len();
    let vals: Vec<Val> = (0..k)
        .map(|i| imp.val(n, i).cloned())
        .collect::<Result<_>>()?;
    let consts: Vec<usize> = (0..k)
        .filter(|&i| matches!(vals[i], Val::Const(_)))
        .collect();
    if consts.is_empty() {
        let ids: Vec<NodeId> = (0..k).map(|i| imp.plain_in(n, i)).collect::<Result<_>>()?;
        if ids.len() == 1 {
            imp.bind(n, 0, Val::Node(ids[0], Pending::None));
        } else {
            imp.push(n, Op::Add, ids, vec![])?;
        }
    } else if k == 2 && consts.len() == 1 {
        // A bias: fold into the layer before, if it is ours alone and has none.
        let xi = 1 - consts[0];
        let x = imp.plain_in(n, xi)?;
        let Val::Const(c) = &vals[consts[0]] else {
            unreachable!()
        };
        let prev = &imp.graph.nodes[x];
        let channels = imp.shapes[x][1];
        let alone = imp.uses.get(n.inputs[xi].as_str()).copied() == Some(1);
        let fits = c.numel() == channels && c.dims.iter().filter(|&&d| d != 1).count() <= 1;
        if matches!(prev.op, Op::Linear | Op::Conv2d { .. })
            && prev.param("bias").is_none()
            && alone
            && fits
        {
            let bias =
                Tensor::new(vec![channels], c.floats()).map_err(|e| Importer::err(n, e.message))?;
            imp.graph.nodes[x].params.push(("bias".into(), bias));
            imp.bind(n, 0, Val::Node(x, Pending::None));
        } else {
            return Err(Importer::err(n, "adding a constant is only supported as the bias of the MatMul, Gemm or Conv right before it"));
        }
    } else {
        return Err(Importer::err(
            n,
            "adding constants is only supported as a layer bias",
        ));
    }
    Ok(())
}

fn relu(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    imp.push(n, Op::Relu, vec![x], vec![])?;
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
