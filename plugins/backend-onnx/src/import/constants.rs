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
];

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
                Data::F32(c.floats())
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
