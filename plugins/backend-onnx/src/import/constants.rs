//! Constants and what passes values through unchanged.

use super::{const_of, dims_of, Const, Importer, OpBuilder, Val};
use crate::proto::{dtype_name, is_float_type, Attr, Data, NodeProto};
use sr_core::Result;
use std::sync::Arc;

/// The ops of this family.
pub(super) const OPS: &[OpBuilder] = &[
    OpBuilder {
        op: "Constant",
        build: constant,
    },
    OpBuilder {
        op: "ConstantOfShape",
        build: constant_of_shape,
    },
    OpBuilder {
        op: "Identity",
        build: identity,
    },
    OpBuilder {
        op: "Cast",
        build: cast,
    },
    OpBuilder {
        op: "Sqrt",
        build: const_elementwise,
    },
    OpBuilder {
        op: "Mod",
        build: const_elementwise,
    },
    OpBuilder {
        op: "Equal",
        build: const_elementwise,
    },
    OpBuilder {
        op: "Where",
        build: const_elementwise,
    },
    OpBuilder {
        op: "Not",
        build: const_elementwise,
    },
    OpBuilder {
        op: "Pow",
        build: const_elementwise,
    },
    OpBuilder {
        op: "ScatterND",
        build: scatter_nd,
    },
    OpBuilder {
        op: "Range",
        build: range,
    },
];

/// `Range(start, limit, delta)` on constants (Swin's relative positions, TorchScript export):
/// folded, at most [`super::MAX_FOLDED_VALUES`] values.
fn range(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let cs: Vec<Const> = (0..3)
        .map(|i| imp.konst(n, i).cloned())
        .collect::<Result<_>>()?;
    let float = cs.iter().any(|c| matches!(*c.data, Data::F32(_)));
    let v: Vec<f64> = cs
        .iter()
        .map(|c| super::scalar(n, c, "a Range bound").map(f64::from))
        .collect::<Result<_>>()?;
    let (start, limit, delta) = (v[0], v[1], v[2]);
    let steps = ((limit - start) / delta).ceil();
    if delta == 0.0 || !steps.is_finite() || steps > super::MAX_FOLDED_VALUES as f64 {
        return Err(Importer::err(
            n,
            format!("Range({start}, {limit}, {delta}) is not a range srhost folds"),
        ));
    }
    let count = steps.max(0.0) as usize;
    imp.charge(n, count)?;
    let data = if float {
        Data::F32(
            (0..count)
                .map(|k| (start + k as f64 * delta) as f32)
                .collect(),
        )
    } else {
        let (s, d) = (cs[0].ints()[0], cs[2].ints()[0]);
        Data::I64((0..count as i64).map(|k| s + k * d).collect())
    };
    imp.bind(
        n,
        0,
        Val::Const(Const {
            dims: vec![count],
            data: Arc::new(data),
        }),
    );
    Ok(())
}

/// `ScatterND` on constants (Swin's attention mask, written slice by slice), folded: a copy of
/// `data` with the slices that `indices` name replaced by `updates`.
fn scatter_nd(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let cs: Vec<Const> = (0..3)
        .map(|i| {
            imp.konst(n, i).cloned().map_err(|_| {
                Importer::err(
                    n,
                    "ScatterND of image data is not supported (only on constants)",
                )
            })
        })
        .collect::<Result<_>>()?;
    let (data, idx, upd) = (&cs[0], &cs[1], &cs[2]);
    if Importer::str_attr(n, "reduction", "none")? != "none" {
        return Err(Importer::err(n, "only `reduction` = none is supported"));
    }
    let k = idx.dims.last().copied().unwrap_or(0);
    let rank = data.dims.len();
    let lead = &idx.dims[..idx.dims.len().saturating_sub(1)];
    let want: Vec<usize> = lead
        .iter()
        .chain(&data.dims[k.min(rank)..])
        .copied()
        .collect();
    if idx.dims.is_empty() || k == 0 || k > rank || upd.dims != want {
        return Err(Importer::err(
            n,
            format!(
                "indices {:?} and updates {:?} do not fit data {:?}",
                idx.dims, upd.dims, data.dims
            ),
        ));
    }
    imp.charge(n, data.numel().saturating_mul(2))?;
    let slice: usize = data.dims[k..].iter().product();
    let st = super::strides(&data.dims);
    let ix = idx.ints();
    let count = ix.len() / k;
    let mut at = Vec::with_capacity(count);
    for t in 0..count {
        let mut off = 0usize;
        for (a, &i) in ix[t * k..(t + 1) * k].iter().enumerate() {
            let len = data.dims[a] as i64;
            let j = if i < 0 { i + len } else { i };
            if !(0..len).contains(&j) {
                return Err(Importer::err(
                    n,
                    format!("index {i} is out of range for axis {a} of {:?}", data.dims),
                ));
            }
            off += j as usize * st[a];
        }
        at.push(off);
    }
    // Each named slice of a copy of `d` replaced by the next slice of `u`.
    fn scatter<T: Copy>(d: &[T], u: &[T], at: &[usize], slice: usize) -> Vec<T> {
        let mut d = d.to_vec();
        for (t, &off) in at.iter().enumerate() {
            d[off..off + slice].copy_from_slice(&u[t * slice..(t + 1) * slice]);
        }
        d
    }
    let data = match data.data.as_ref() {
        Data::F32(d) => Data::F32(scatter(d, &upd.floats(), &at, slice)),
        Data::I64(d) => Data::I64(scatter(d, &upd.ints(), &at, slice)),
    };
    imp.bind(
        n,
        0,
        Val::Const(Const {
            dims: cs[0].dims.clone(),
            data: Arc::new(data),
        }),
    );
    Ok(())
}

/// The element-wise shape arithmetic torch writes on constants (`Sqrt` of a head size, `Mod`,
/// `Equal` and `Where` around an `Expand`'s shape, `Not` in Swin's mask), folded: on inputs of equal shapes, or
/// single values. Image data is refused, naming the op.
fn const_elementwise(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let arity = match n.op_type.as_str() {
        "Sqrt" | "Not" => 1,
        "Where" => 3,
        _ => 2,
    };
    if n.inputs.len() != arity {
        return Err(Importer::err(
            n,
            format!("{} takes {arity} inputs, has {}", n.op_type, n.inputs.len()),
        ));
    }
    let mut cs: Vec<Const> = (0..arity)
        .map(|i| {
            imp.konst(n, i).cloned().map_err(|_| {
                Importer::err(
                    n,
                    format!(
                        "{} of image data is not supported (only on constants)",
                        n.op_type
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    let full = cs.iter().try_fold(vec![], |d: Vec<usize>, c| {
        super::arith::broadcast_dims(&d, &c.dims)
    });
    if let Some(d) = full.filter(|d| cs.iter().any(|c| c.numel() != 1 && c.dims != *d)) {
        imp.charge(n, super::element_count(n, &d)?.saturating_mul(cs.len()))?;
        for c in &mut cs {
            if c.numel() != 1 {
                *c = super::arith::expand_to(n, c, &d)?;
            }
        }
    }
    let big = cs
        .iter()
        .max_by_key(|c| c.numel())
        .expect("one input or more");
    if cs.iter().any(|c| c.numel() != 1 && c.dims != big.dims) {
        return Err(Importer::err(
            n,
            format!(
                "inputs of shapes {:?} do not broadcast (srhost folds equal shapes or single values)",
                cs.iter().map(|c| c.dims.clone()).collect::<Vec<_>>()
            ),
        ));
    }
    let len = big.numel();
    imp.charge(n, len)?;
    let dims = big.dims.clone();
    let at = |c: &Const, k: usize| if c.numel() == 1 { 0 } else { k };
    let float = cs.iter().any(|c| matches!(*c.data, Data::F32(_)));
    let data = match n.op_type.as_str() {
        "Sqrt" => Data::F32(cs[0].floats().iter().map(|v| v.sqrt()).collect()),
        "Not" => Data::I64(cs[0].ints().iter().map(|&v| (v == 0) as i64).collect()),
        "Pow" => {
            let (a, b) = (cs[0].floats(), cs[1].floats());
            Data::F32(
                (0..len)
                    .map(|k| a[at(&cs[0], k)].powf(b[at(&cs[1], k)]))
                    .collect(),
            )
        }
        "Equal" => {
            let (a, b) = (cs[0].floats(), cs[1].floats());
            Data::I64(
                (0..len)
                    .map(|k| (a[at(&cs[0], k)] == b[at(&cs[1], k)]) as i64)
                    .collect(),
            )
        }
        "Where" => {
            let cond = cs[0].ints();
            // Element k of `a` where the condition holds, else of `b` (single values
            // broadcast).
            let pick = |a: &Const, b: &Const, k: usize| {
                if cond[at(&cs[0], k)] != 0 {
                    (true, at(a, k))
                } else {
                    (false, at(b, k))
                }
            };
            fn select<T: Copy>(
                len: usize,
                pick: impl Fn(usize) -> (bool, usize),
                a: &[T],
                b: &[T],
            ) -> Vec<T> {
                (0..len)
                    .map(|k| match pick(k) {
                        (true, i) => a[i],
                        (false, i) => b[i],
                    })
                    .collect()
            }
            let pick = |k| pick(&cs[1], &cs[2], k);
            if float {
                Data::F32(select(len, pick, &cs[1].floats(), &cs[2].floats()))
            } else {
                Data::I64(select(len, pick, &cs[1].ints(), &cs[2].ints()))
            }
        }
        _ => {
            // Mod: the sign of the divisor (fmod = 0), or of the dividend (fmod = 1).
            let fmod = Importer::int_attr(n, "fmod", 0)? != 0;
            if float {
                let (a, b) = (cs[0].floats(), cs[1].floats());
                Data::F32(
                    (0..len)
                        .map(|k| {
                            let (x, y) = (a[at(&cs[0], k)], b[at(&cs[1], k)]);
                            if fmod {
                                x % y
                            } else {
                                x - y * (x / y).floor()
                            }
                        })
                        .collect(),
                )
            } else {
                let (a, b) = (cs[0].ints(), cs[1].ints());
                Data::I64(
                    (0..len)
                        .map(|k| {
                            let (x, y) = (a[at(&cs[0], k)], b[at(&cs[1], k)]);
                            if y == 0 {
                                return Err(Importer::err(n, "integer Mod by 0"));
                            }
                            Ok(if fmod {
                                x.wrapping_rem(y)
                            } else {
                                x.wrapping_rem(y).wrapping_add(y).wrapping_rem(y)
                            })
                        })
                        .collect::<Result<_>>()?,
                )
            }
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
    Ok(())
}

fn constant(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let c = if let Some(Attr::Tensor(t)) = n.attr("value") {
        const_of(t).map_err(|e| Importer::err(n, e.message))?
    } else if let Some(Attr::Float(f)) = n.attr("value_float") {
        Const {
            dims: vec![],
            data: Arc::new(Data::F32(vec![*f])),
        }
    } else if let Some(Attr::Floats(f)) = n.attr("value_floats") {
        Const {
            dims: vec![f.len()],
            data: Arc::new(Data::F32(f.clone())),
        }
    } else if let Some(Attr::Int(i)) = n.attr("value_int") {
        Const {
            dims: vec![],
            data: Arc::new(Data::I64(vec![*i])),
        }
    } else if let Some(Attr::Ints(i)) = n.attr("value_ints") {
        Const {
            dims: vec![i.len()],
            data: Arc::new(Data::I64(i.clone())),
        }
    } else {
        return Err(Importer::err(n, "no `value` attribute of a supported kind"));
    };
    imp.bind(n, 0, Val::Const(c));
    Ok(())
}

fn constant_of_shape(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let dims = dims_of(n, imp.konst(n, 0)?)?;
    let count = super::element_count(n, &dims)?;
    // Charged in f32s: an integer fill takes two.
    let wide = matches!(n.attr("value"), Some(Attr::Tensor(t)) if matches!(t.data, Data::I64(_)));
    imp.charge(n, if wide { count.saturating_mul(2) } else { count })?;
    let data = match n.attr("value") {
        Some(Attr::Tensor(t)) => match &t.data {
            Data::F32(v) => Data::F32(vec![v.first().copied().unwrap_or(0.0); count]),
            Data::I64(v) => Data::I64(vec![v.first().copied().unwrap_or(0); count]),
        },
        _ => Data::F32(vec![0.0; count]),
    };
    imp.bind(
        n,
        0,
        Val::Const(Const {
            dims,
            data: Arc::new(data),
        }),
    );
    Ok(())
}

fn identity(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let v = imp.val(n, 0)?.clone();
    imp.bind(n, 0, v);
    Ok(())
}

fn cast(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let to = Importer::int_attr(n, "to", 1)?;
    match imp.val(n, 0)?.clone() {
        Val::Const(c) => {
            imp.charge(n, c.numel().saturating_mul(2))?;
            let data = if is_float_type(to) {
                Data::F32(c.floats().into_owned())
            } else {
                Data::I64(c.ints())
            };
            imp.bind(
                n,
                0,
                Val::Const(Const {
                    dims: c.dims,
                    data: Arc::new(data),
                }),
            );
        }
        v @ Val::Node(..) if is_float_type(to) => imp.bind(n, 0, v),
        Val::Node(..) => {
            return Err(Importer::err(
                n,
                format!("casting image data to {} is not supported", dtype_name(to)),
            ))
        }
    }
    Ok(())
}
