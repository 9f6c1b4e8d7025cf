//! Shape arithmetic, folded at load time: on constants (the shape computations exporters
//! write) the value is computed; on image data, `Transpose` is kept pending until a flatten
//! feeds a dense layer, `Concat` becomes an IR concatenation and `Reshape`/`Flatten` an IR
//! flatten; a `Slice`, `Split` or one-index `Gather` becomes IR narrows, and ShuffleNet's
//! `Reshape -> Transpose [0, 2, 1, 3, 4] -> Reshape` an IR channel shuffle. What transformers
//! write besides (a reshape to any shape, a transpose that moves the batch axis, Squeeze and
//! Unsqueeze of image data) becomes IR `Reshape` and `Transpose` nodes.

use super::{
    element_count, flat_map, for_each_index, node_label, norm_axis, strides, Const, Importer,
    OpBuilder, Pending, Val,
};
use crate::proto::{Data, NodeProto};
use sr_core::graph::{NodeId, Op};
use sr_core::Result;
use std::sync::Arc;

/// The ops of this family.
pub(super) const OPS: &[OpBuilder] = &[
    OpBuilder {
        op: "Shape",
        build: shape,
    },
    OpBuilder {
        op: "Gather",
        build: gather,
    },
    OpBuilder {
        op: "Unsqueeze",
        build: unsqueeze_squeeze,
    },
    OpBuilder {
        op: "Squeeze",
        build: unsqueeze_squeeze,
    },
    OpBuilder {
        op: "Slice",
        build: slice,
    },
    OpBuilder {
        op: "Transpose",
        build: transpose,
    },
    OpBuilder {
        op: "Concat",
        build: concat,
    },
    OpBuilder {
        op: "Reshape",
        build: reshape,
    },
    OpBuilder {
        op: "Flatten",
        build: reshape,
    },
    OpBuilder {
        op: "Split",
        build: split,
    },
    OpBuilder {
        op: "Expand",
        build: expand,
    },
];

/// `Expand` (numpy broadcasting to a shape): folded on constants (the class token
/// `expand(N, -1, -1)`); a computed value may only keep its shape.
fn expand(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let want = imp.konst(n, 1)?.ints();
    let dims_in = match imp.val(n, 0)? {
        Val::Const(c) => c.dims.clone(),
        Val::Node(id, _) => imp.shape_of(*id).to_vec(),
    };
    let rank = want.len().max(dims_in.len());
    let pad = |d: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, rank - d.len())
            .chain(d.iter().copied())
            .collect()
    };
    let a = pad(&dims_in);
    let w: Vec<i64> = std::iter::repeat_n(1, rank - want.len())
        .chain(want.iter().copied())
        .collect();
    let mut out = Vec::with_capacity(rank);
    for (k, (&d, &t)) in a.iter().zip(&w).enumerate() {
        out.push(match (d, t) {
            (d, t) if t == d as i64 || t == 1 => d,
            (1, t) if t > 1 => t as usize,
            _ => {
                return Err(Importer::err(
                    n,
                    format!("cannot expand {dims_in:?} to {want:?} (axis {k})"),
                ))
            }
        });
    }
    match imp.val(n, 0)?.clone() {
        Val::Const(c) => {
            let count = element_count(n, &out)?;
            imp.charge(n, count.saturating_mul(3))?;
            let full = super::arith::expand_to(n, &c, &out)?;
            imp.bind(n, 0, Val::Const(full));
            Ok(())
        }
        Val::Node(..) if out == dims_in => {
            let x = imp.plain_in(n, 0)?;
            imp.bind(n, 0, Val::Node(x, Pending::None));
            Ok(())
        }
        Val::Node(..) => Err(Importer::err(
            n,
            format!("expanding image data {dims_in:?} to {out:?} is not supported"),
        )),
    }
}

/// Indices `start .. end` of axis `axis` of computed value `x`, every `step`-th, as an IR narrow
/// bound to output `out` of `n`.
fn narrow(
    imp: &mut Importer<'_>,
    n: &NodeProto,
    x: NodeId,
    (axis, start, end, step): (usize, usize, usize, usize),
    out: usize,
) -> Result<NodeId> {
    let c = imp.shape_of(x)[axis];
    if start >= end || end > c {
        let by = if step == 1 {
            String::new()
        } else {
            format!(" by {step}")
        };
        return Err(Importer::err(
            n,
            format!("indices {start}..{end}{by} of axis {axis}, which has {c}"),
        ));
    }
    let op = Op::Narrow {
        start,
        len: (end - start).div_ceil(step),
        axis,
        step,
    };
    let id = imp.push_step(n, op, vec![x], vec![])?;
    imp.bind(n, out, Val::Node(id, Pending::None));
    Ok(id)
}

/// `Split` of a computed value along the channels (ShuffleNet's `chunk(2, dim=1)`): one narrow
/// per output.
fn split(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    let shape = imp.shape_of(x).to_vec();
    let axis = norm_axis(n, Importer::int_attr(n, "axis", 0)?, shape.len())?;
    let k = n.outputs.len();
    let sizes: Vec<i64> = match (Importer::ints_attr(n, "split")?, imp.opt_konst(n, 1)?) {
        (Some(s), _) => s,
        (None, Some(c)) => c.ints(),
        (None, None) if k > 0 && shape[axis] % k == 0 => vec![(shape[axis] / k) as i64; k],
        _ => {
            return Err(Importer::err(
                n,
                format!(
                    "{} values along axis {axis} do not split evenly into {k} outputs",
                    shape[axis]
                ),
            ))
        }
    };
    if sizes.len() != k
        || sizes.iter().any(|&v| v <= 0)
        || sizes.iter().try_fold(0i64, |a, &v| a.checked_add(v)) != Some(shape[axis] as i64)
    {
        let what = if axis == 1 {
            "channels".to_string()
        } else {
            format!("values along axis {axis}")
        };
        return Err(Importer::err(
            n,
            format!(
                "split sizes {sizes:?} for {k} outputs of {} {what}",
                shape[axis]
            ),
        ));
    }
    let mut start = 0;
    for (o, &len) in sizes.iter().enumerate() {
        let end = start + len as usize;
        if !n.outputs[o].is_empty() {
            narrow(imp, n, x, (axis, start, end, 1), o)?;
        }
        start = end;
    }
    Ok(())
}

/// `Slice` of a computed value: along any axes, with step 1 (a narrow per axis).
fn slice_node(imp: &mut Importer<'_>, n: &NodeProto, x: NodeId) -> Result<()> {
    let rank = imp.shape_of(x).len();
    let konst =
        |i: usize| -> Result<Option<Vec<i64>>> { Ok(imp.opt_konst(n, i)?.map(Const::ints)) };
    let (starts, ends) = (konst(1)?.unwrap_or_default(), konst(2)?.unwrap_or_default());
    let axes = konst(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = konst(4)?.unwrap_or_else(|| vec![1; starts.len()]);
    let agree = [ends.len(), axes.len(), steps.len()] == [starts.len(); 3] && !starts.is_empty();
    if !agree || steps.iter().any(|&s| s < 1) || imp.m.opset < 10 {
        return Err(Importer::err(
            n,
            "a Slice of image data is only supported with positive steps (and from opset 10)",
        ));
    }
    let mut cur = x;
    for k in 0..starts.len() {
        let axis = norm_axis(n, axes[k], rank)?;
        let c = imp.shape_of(cur)[axis] as i64;
        let fix = |v: i64| (if v < 0 { v.saturating_add(c) } else { v }).clamp(0, c) as usize;
        let (s0, e0) = (fix(starts[k]), fix(ends[k]));
        let step = steps[k] as usize;
        if (s0, e0, step) == (0, c as usize, 1) {
            imp.bind(n, 0, Val::Node(cur, Pending::None));
            continue;
        }
        // A step above 1 takes every step-th index (Swin's patch merging, `x[..., 0::2, :]`).
        cur = narrow(imp, n, cur, (axis, s0, e0, step), 0)?;
    }
    Ok(())
}

/// A computed value under another shape of as many values: an IR `Reshape`, bound to output
/// 0 of `n` (nothing when the shape is the same).
fn reshape_node(imp: &mut Importer<'_>, n: &NodeProto, x: NodeId, dims: Vec<usize>) -> Result<()> {
    if imp.shape_of(x) == dims.as_slice() {
        imp.bind(n, 0, Val::Node(x, Pending::None));
        return Ok(());
    }
    imp.push(n, Op::Reshape { shape: dims }, vec![x], vec![])?;
    Ok(())
}

fn shape(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let s: Vec<i64> = match imp.val(n, 0)? {
        Val::Const(c) => c.dims.iter().map(|&d| d as i64).collect(),
        Val::Node(..) => {
            let (id, pending) = imp.node_in(n, 0)?;
            match pending {
                // The file's shape of a pending transpose is the permuted one.
                Pending::Transpose(perm, _) => {
                    perm.iter().map(|&p| imp.shape_of(id)[p] as i64).collect()
                }
                _ => imp.shape_of(id).iter().map(|&d| d as i64).collect(),
            }
        }
    };
    imp.bind(
        n,
        0,
        Val::Const(Const {
            dims: vec![s.len()],
            data: Arc::new(Data::I64(s)),
        }),
    );
    Ok(())
}

fn gather(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    if let Val::Node(..) = imp.val(n, 0)? {
        return gather_node(imp, n);
    }
    let data = imp.konst(n, 0)?.clone();
    let idx = imp.konst(n, 1)?.clone();
    let axis = norm_axis(n, Importer::int_attr(n, "axis", 0)?, data.dims.len())?;
    let len = data.dims[axis] as i64;
    let picks = idx
        .ints()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + len } else { i };
            (0..len).contains(&j).then_some(j as usize).ok_or_else(|| {
                Importer::err(
                    n,
                    format!("index {i} is out of range for axis of length {len}"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let outer: usize = data.dims[..axis].iter().product();
    let inner: usize = data.dims[axis + 1..].iter().product();
    let count = outer
        .checked_mul(picks.len())
        .and_then(|c| c.checked_mul(inner))
        .unwrap_or(usize::MAX);
    // The values and their index vector (8 bytes each): three f32s' worth.
    imp.charge(n, count.saturating_mul(3))?;
    let mut flat = Vec::new();
    for o in 0..outer {
        for &p in &picks {
            flat.extend((0..inner).map(|i| (o * data.dims[axis] + p) * inner + i));
        }
    }
    let dims = [&data.dims[..axis], &idx.dims[..], &data.dims[axis + 1..]].concat();
    imp.bind(n, 0, Val::Const(data.pick(dims, &flat)));
    Ok(())
}

/// `Gather` of one index of a computed value (the class token `x[:, 0]`, attention's `q, k, v
/// = qkv[0], qkv[1], qkv[2]`): a narrow, and a reshape without the axis for a scalar index.
fn gather_node(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let x = imp.plain_in(n, 0)?;
    let shape = imp.shape_of(x).to_vec();
    let axis = norm_axis(n, Importer::int_attr(n, "axis", 0)?, shape.len())?;
    let idx = imp.konst(n, 1)?.clone();
    let ints = idx.ints();
    if ints.len() == shape[axis] && ints.iter().enumerate().all(|(k, &i)| i == k as i64) {
        // Every index in order (the dynamo export's `as_strided` before Swin's head): the
        // same values in the gathered shape.
        let dims = [&shape[..axis], &idx.dims[..], &shape[axis + 1..]].concat();
        return reshape_node(imp, n, x, dims);
    }
    let &[i] = ints.as_slice() else {
        return Err(Importer::err(
            n,
            format!(
                "a Gather of {} indices from image data; srhost gathers one",
                idx.numel()
            ),
        ));
    };
    let len = shape[axis] as i64;
    let j = if i < 0 { i + len } else { i };
    if !(0..len).contains(&j) {
        return Err(Importer::err(
            n,
            format!("index {i} is out of range for axis {axis} of {shape:?}"),
        ));
    }
    let j = j as usize;
    let picked = narrow(imp, n, x, (axis, j, j + 1, 1), 0)?;
    if idx.dims.is_empty() {
        let mut dims = shape;
        dims.remove(axis);
        if dims.is_empty() {
            return Err(Importer::err(n, "gathers a single value"));
        }
        reshape_node(imp, n, picked, dims)?;
    }
    Ok(())
}

fn unsqueeze_squeeze(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let opset = imp.m.opset;
    if let Val::Node(..) = imp.val(n, 0)? {
        let x = imp.plain_in(n, 0)?;
        let c = Const {
            dims: imp.shape_of(x).to_vec(),
            data: Arc::new(Data::F32(vec![])),
        };
        let dims = squeezed_dims(imp, n, &c, opset)?;
        return reshape_node(imp, n, x, dims);
    }
    let c = imp.konst(n, 0)?.clone();
    let dims = squeezed_dims(imp, n, &c, opset)?;
    imp.bind(n, 0, Val::Const(Const { dims, data: c.data }));
    Ok(())
}

/// The dims of `c` after the Squeeze or Unsqueeze `n`.
fn squeezed_dims(imp: &Importer<'_>, n: &NodeProto, c: &Const, opset: i64) -> Result<Vec<usize>> {
    let axes = if opset >= 13 {
        imp.opt_konst(n, 1)?.map(Const::ints)
    } else {
        Importer::ints_attr(n, "axes")?
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
        if drop.windows(2).any(|w| w[0] == w[1]) {
            return Err(Importer::err(
                n,
                format!("`axes` names an axis twice: {drop:?}"),
            ));
        }
        if let Some(&a) = drop.iter().find(|&&a| dims[a] != 1) {
            return Err(Importer::err(
                n,
                format!("squeezes axis {a} of {dims:?}, which is not 1 long"),
            ));
        }
        for &a in drop.iter().rev() {
            dims.remove(a);
        }
    } else {
        let axes = axes.ok_or_else(|| Importer::err(n, "`axes` is missing"))?;
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
    Ok(dims)
}

fn slice(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let opset = imp.m.opset;
    if let Val::Node(..) = imp.val(n, 0)? {
        let x = imp.plain_in(n, 0)?;
        return slice_node(imp, n, x);
    }
    let c = imp.konst(n, 0)?.clone();
    let rank = c.dims.len();
    let (starts, ends, axes, steps) = if opset >= 10 {
        (
            imp.konst(n, 1)?.ints(),
            imp.konst(n, 2)?.ints(),
            imp.opt_konst(n, 3)?.map(Const::ints),
            imp.opt_konst(n, 4)?.map(Const::ints),
        )
    } else {
        (
            Importer::ints_attr(n, "starts")?.unwrap_or_default(),
            Importer::ints_attr(n, "ends")?.unwrap_or_default(),
            Importer::ints_attr(n, "axes")?,
            None,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if [ends.len(), axes.len(), steps.len()]
        .iter()
        .any(|&l| l != starts.len())
    {
        return Err(Importer::err(
            n,
            format!(
                "starts, ends, axes and steps have {}, {}, {} and {} values; they must agree",
                starts.len(),
                ends.len(),
                axes.len(),
                steps.len()
            ),
        ));
    }
    // Per axis: the list of picked indices.
    let mut picks: Vec<Vec<usize>> = c.dims.iter().map(|&d| (0..d).collect()).collect();
    for k in 0..starts.len() {
        let a = norm_axis(n, axes[k], rank)?;
        let len = c.dims[a] as i64;
        let step = steps[k];
        if step == 0 {
            return Err(Importer::err(n, "a slice step is 0"));
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
            // A step that would overflow leaves the axis anyway.
            match s.checked_add(step) {
                Some(t) => s = t,
                None => break,
            }
        }
        picks[a] = v;
    }
    let dims: Vec<usize> = picks.iter().map(Vec::len).collect();
    imp.charge(n, dims.iter().product::<usize>().saturating_mul(3))?;
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
    imp.bind(n, 0, Val::Const(c.pick(dims, &flat)));
    Ok(())
}

fn transpose(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    match imp.val(n, 0)?.clone() {
        Val::Const(c) => {
            let rank = c.dims.len();
            let perm = match Importer::ints_attr(n, "perm")? {
                Some(p) => p
                    .iter()
                    .map(|&x| norm_axis(n, x, rank))
                    .collect::<Result<Vec<_>>>()?,
                None => (0..rank).rev().collect(),
            };
            let dims: Vec<usize> = perm.iter().map(|&p| c.dims[p]).collect();
            imp.charge(n, c.numel().saturating_mul(3))?;
            let st = strides(&c.dims);
            let mut flat = Vec::new();
            for_each_index(&dims, |ix| {
                flat.push(ix.iter().enumerate().map(|(k, &i)| i * st[perm[k]]).sum());
            });
            imp.bind(n, 0, Val::Const(c.pick(dims, &flat)));
        }
        Val::Node(id, Pending::None) => {
            let rank = imp.shape_of(id).len();
            let perm = match Importer::ints_attr(n, "perm")? {
                Some(p) => p
                    .iter()
                    .map(|&x| norm_axis(n, x, rank))
                    .collect::<Result<Vec<_>>>()?,
                None => (0..rank).rev().collect(),
            };
            let mut seen = vec![false; rank];
            if perm.len() != rank || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
                return Err(Importer::err(
                    n,
                    format!("perm {perm:?} is not a permutation of the {rank} axes"),
                ));
            }
            if perm.iter().enumerate().all(|(i, &p)| i == p) {
                imp.bind(n, 0, Val::Node(id, Pending::None));
            } else if perm[0] != 0 || rank != 4 {
                // Transformers move the batch axis: an IR transpose (the graph then runs one
                // image at a time). Only 4-D views wait for the op that reads them.
                imp.push(n, Op::Transpose { perm }, vec![id], vec![])?;
            } else {
                imp.bind(n, 0, Val::Node(id, Pending::Transpose(perm, node_label(n))));
            }
        }
        Val::Node(id, Pending::Grouped(g, by)) => {
            let perm = Importer::ints_attr(n, "perm")?;
            if perm.as_deref() != Some(&[0, 2, 1, 3, 4]) {
                return Err(Importer::err(
                    n,
                    format!("a Transpose by {perm:?} of the 5-D output of `{by}`; only [0, 2, 1, 3, 4] (a channel shuffle) is supported"),
                ));
            }
            imp.bind(n, 0, Val::Node(id, Pending::Shuffled(g, by)));
        }
        Val::Node(id, Pending::Transpose(first, by)) => {
            // Two transposes in a row are one: ConvNeXt's permute back from channels-last.
            let perm = match Importer::ints_attr(n, "perm")? {
                Some(p) => p
                    .iter()
                    .map(|&x| norm_axis(n, x, first.len()))
                    .collect::<Result<Vec<_>>>()?,
                None => (0..first.len()).rev().collect(),
            };
            if perm.len() != first.len() {
                return Err(Importer::err(
                    n,
                    format!("perm {perm:?} for a rank-{} value", first.len()),
                ));
            }
            let both: Vec<usize> = perm.iter().map(|&p| first[p]).collect();
            if both.iter().enumerate().all(|(i, &p)| i == p) {
                imp.bind(n, 0, Val::Node(id, Pending::None));
            } else if both[0] != 0 {
                imp.push(n, Op::Transpose { perm: both }, vec![id], vec![])?;
            } else {
                imp.bind(n, 0, Val::Node(id, Pending::Transpose(both, by)));
            }
        }
        Val::Node(..) => {
            imp.plain_in(n, 0)?;
        }
    };
    Ok(())
}

fn concat(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let k = n.inputs.len();
    if k == 0 {
        return Err(Importer::err(n, "Concat has no inputs"));
    }
    let vals: Vec<Val> = (0..k)
        .map(|i| imp.val(n, i).cloned())
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
        let axis = norm_axis(n, Importer::int_attr(n, "axis", 0)?, rank)?;
        let outer: usize = cs[0].dims[..axis].iter().product();
        let float = cs.iter().any(|c| matches!(*c.data, Data::F32(_)));
        imp.charge(
            n,
            cs.iter().map(Const::numel).sum::<usize>().saturating_mul(2),
        )?;
        // Each constant's values, converted once.
        let values: Vec<(Vec<f32>, Vec<i64>)> = cs
            .iter()
            .map(|c| {
                if float {
                    (c.floats().into_owned(), vec![])
                } else {
                    (vec![], c.ints())
                }
            })
            .collect();
        let (mut fv, mut iv) = (Vec::new(), Vec::new());
        for o in 0..outer {
            for (c, (cf, ci)) in cs.iter().zip(&values) {
                if c.dims.len() != rank
                    || c.dims[..axis] != cs[0].dims[..axis]
                    || c.dims[axis + 1..] != cs[0].dims[axis + 1..]
                {
                    return Err(Importer::err(
                        n,
                        format!(
                            "constant shapes {:?} and {:?} do not concatenate",
                            cs[0].dims, c.dims
                        ),
                    ));
                }
                let chunk: usize = c.dims[axis..].iter().product();
                if float {
                    fv.extend_from_slice(&cf[o * chunk..(o + 1) * chunk]);
                } else {
                    iv.extend_from_slice(&ci[o * chunk..(o + 1) * chunk]);
                }
            }
        }
        let mut dims = cs[0].dims.clone();
        dims[axis] = cs.iter().map(|c| c.dims[axis]).sum();
        let data = if float { Data::F32(fv) } else { Data::I64(iv) };
        imp.bind(
            n,
            0,
            Val::Const(Const {
                dims,
                data: Arc::new(data),
            }),
        );
    } else {
        // A constant among computed values (a class token) is an IR constant.
        let ids: Vec<NodeId> = (0..k)
            .map(|i| match &vals[i] {
                Val::Const(c) => imp.constant_node(n, c),
                Val::Node(..) => imp.plain_in(n, i),
            })
            .collect::<Result<_>>()?;
        let rank = imp.shape_of(ids[0]).len();
        let axis = norm_axis(n, Importer::int_attr(n, "axis", 0)?, rank)?;
        if ids.len() == 1 {
            imp.bind(n, 0, Val::Node(ids[0], Pending::None));
        } else {
            imp.push(n, Op::Concat { axis }, ids, vec![])?;
        }
    }
    Ok(())
}

fn reshape(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let opset = imp.m.opset;
    let v = imp.val(n, 0)?.clone();
    let target: Option<Vec<i64>> = if n.op_type == "Reshape" {
        Some(if opset >= 5 {
            imp.konst(n, 1)?.ints()
        } else {
            Importer::ints_attr(n, "shape")?.unwrap_or_default()
        })
    } else {
        None
    };
    let dims_in = match &v {
        Val::Const(c) => c.dims.clone(),
        Val::Node(id, _) => imp.shape_of(*id).to_vec(),
    };
    let total: usize = dims_in.iter().product();
    let dims_out: Vec<usize> = match &target {
        Some(t) => {
            let allow_zero = Importer::int_attr(n, "allowzero", 0)? == 1;
            let mut out: Vec<usize> = Vec::with_capacity(t.len());
            let mut infer = None;
            for (i, &d) in t.iter().enumerate() {
                match d {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        out.push(1);
                    }
                    0 if !allow_zero => out.push(*dims_in.get(i).ok_or_else(|| {
                        Importer::err(
                            n,
                            format!("shape {t:?} copies a dimension the input {dims_in:?} lacks"),
                        )
                    })?),
                    d if d >= 0 => out.push(d as usize),
                    _ => return Err(Importer::err(n, format!("invalid target shape {t:?}"))),
                }
            }
            if let Some(i) = infer {
                let rest: usize = out
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| Importer::err(n, format!("invalid target shape {t:?}")))?;
                if rest == 0 || total % rest != 0 {
                    return Err(Importer::err(
                        n,
                        format!("cannot reshape {dims_in:?} to {t:?}"),
                    ));
                }
                out[i] = total / rest;
            }
            out
        }
        None => {
            let axis = norm_axis(n, Importer::int_attr(n, "axis", 1)?, dims_in.len() + 1)?;
            vec![
                dims_in[..axis].iter().product(),
                dims_in[axis..].iter().product(),
            ]
        }
    };
    let count = dims_out.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(total) {
        return Err(Importer::err(
            n,
            format!("cannot reshape {dims_in:?} to {dims_out:?}"),
        ));
    }
    match v {
        Val::Const(c) => imp.bind(
            n,
            0,
            Val::Const(Const {
                dims: dims_out,
                data: c.data,
            }),
        ),
        Val::Node(id, pending) => {
            if dims_out == dims_in && pending == Pending::None {
                imp.bind(n, 0, Val::Node(id, Pending::None));
                return Ok(());
            }
            // ShuffleNet's channel shuffle: [N, C, H, W] -> [N, g, C / g, H, W], transposed,
            // and back.
            match &pending {
                Pending::None
                    if dims_in.len() == 4
                        && dims_out.len() == 5
                        && dims_out[0] == dims_in[0]
                        && dims_out[1] * dims_out[2] == dims_in[1]
                        && dims_out[3..] == dims_in[2..] =>
                {
                    imp.bind(
                        n,
                        0,
                        Val::Node(id, Pending::Grouped(dims_out[1], node_label(n))),
                    );
                    return Ok(());
                }
                Pending::Shuffled(g, _) if dims_out == dims_in => {
                    let g = *g;
                    let shuffled =
                        imp.push(n, Op::ChannelShuffle { groups: g }, vec![id], vec![])?;
                    imp.bind(n, 0, Val::Node(shuffled, Pending::None));
                    return Ok(());
                }
                _ => {}
            }
            // The IR flattens every axis after the batch; the batch is 1 here.
            let flat = dims_out.len() == 2 && dims_out[0] == dims_in[0];
            if !flat {
                if matches!(pending, Pending::Grouped(..) | Pending::Shuffled(..)) {
                    return Err(Importer::err(n, format!(
                        "reshaping the 5-D {dims_in:?} to {dims_out:?} is not supported (only a channel shuffle)"
                    )));
                }
                // Any other shape: an IR reshape of the whole tensor (transformers).
                let x = imp.plain_in(n, 0)?;
                return reshape_node(imp, n, x, dims_out);
            }
            let map = match pending {
                Pending::None => None,
                Pending::Transpose(perm, by) => Some((flat_map(&dims_in, &perm), by)),
                _ => {
                    imp.plain_in(n, 0)?;
                    None
                }
            };
            let id = imp.push(n, Op::Flatten, vec![id], vec![])?;
            if let Some((map, by)) = map {
                imp.bind(n, 0, Val::Node(id, Pending::Flat(map, by)));
            }
        }
    }
    Ok(())
}
