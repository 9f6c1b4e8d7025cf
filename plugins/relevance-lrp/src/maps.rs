//! A layer's linear map, applied with any weights: what every rule is written against, so a
//! rule is one formula for convolutions, dense layers and batch norms alike.

use candle_core::{Device, Result as CResult, Tensor as CTensor, TensorId};
use sr_core::geometry::Window;
use sr_nn::ops::{self, Finish};
use std::collections::HashMap;

/// A layer's linear map: a convolution, a dense layer or a batch norm, applied with any
/// weights `V` (the layer's own, `W+`, `W-`, ones, `W^2`).
pub trait LinearMap {
    /// `V x + c`.
    fn fwd(&self, x: &CTensor, v: &CTensor, c: Option<&CTensor>) -> CResult<CTensor>;
    /// `T(V, s)`, shaped like the layer's input.
    fn tr(&self, s: &CTensor, v: &CTensor) -> CResult<CTensor>;
    /// A tensor shaped like the input, each channel filled with `values[channel]`.
    fn per_channel(&self, a: &CTensor, values: &[f32]) -> CResult<CTensor> {
        per_channel(a, values)
    }
    /// `V x` at the outputs where `r` (the relevance arriving there) is non-zero in some
    /// sample; the others may hold anything (their relevance is zero, and so is what they send
    /// back). Dense layers skip the rows of `V` that are not needed.
    fn fwd_where(&self, x: &CTensor, v: &CTensor, r: &CTensor) -> CResult<CTensor> {
        let _ = r;
        self.fwd(x, v, None)
    }
    /// `x * T(V, s)` element-wise (`x` shaped like the input): the last step of most rules,
    /// which a map may fuse into its transpose.
    fn tr_times(&self, s: &CTensor, v: &CTensor, x: &CTensor) -> CResult<CTensor> {
        self.tr_finish(s, v, &Finish::times(x))
    }
    /// `T(V, s)` finished by `fin` (the general form of [`LinearMap::tr_times`]: the factor
    /// gated, and the division of the layer below, see [`Finish`]).
    fn tr_finish(&self, s: &CTensor, v: &CTensor, fin: &Finish) -> CResult<CTensor> {
        ops::finish(&self.tr(s, v)?, fin)
    }
    /// The flat rule's `T(1, r / stab(1 x))` (`1` all-ones weights and inputs) without the
    /// two passes with ones, where the map can (see [`ConvMap`]), else `None`.
    fn flat(&self, a: &CTensor, v: &CTensor, r: &CTensor) -> CResult<Option<CTensor>> {
        let _ = (a, v, r);
        Ok(None)
    }
    /// `T(V, r / (V x + e))` in one pass over `V` where the map can (dense layers, small
    /// batches: [`ops::linear_ratio_t`]), else `None`.
    fn tr_of_ratio(
        &self,
        x: &CTensor,
        v: &CTensor,
        r: &CTensor,
        e: f32,
    ) -> CResult<Option<CTensor>> {
        let _ = (x, v, r, e);
        Ok(None)
    }
}

/// A convolution as a [`LinearMap`].
pub struct ConvMap<'p> {
    pub win: Window,
    pub groups: usize,
    pub in_hw: (usize, usize),
    /// Flipped kernels computed beforehand, by the id of the kernel they flip.
    pub flipped: Option<&'p HashMap<TensorId, CTensor>>,
}

impl LinearMap for ConvMap<'_> {
    fn fwd(&self, x: &CTensor, v: &CTensor, c: Option<&CTensor>) -> CResult<CTensor> {
        ops::conv2d(x, v, c, &self.win, self.groups)
    }
    fn tr(&self, s: &CTensor, v: &CTensor) -> CResult<CTensor> {
        ops::conv2d_t(s, v, self.in_hw, &self.win, self.groups)
    }
    fn tr_finish(&self, s: &CTensor, v: &CTensor, fin: &Finish) -> CResult<CTensor> {
        let f = self.flipped.and_then(|m| m.get(&v.id()));
        ops::conv2d_t_times(s, v, f, fin, self.in_hw, &self.win, self.groups)
    }
    /// Without groups: [`ops::ones_ratio_t`], one sum over the output channels and a
    /// single-channel transpose instead of two full convolutions with ones.
    fn flat(&self, a: &CTensor, v: &CTensor, r: &CTensor) -> CResult<Option<CTensor>> {
        if self.groups != 1 {
            return Ok(None);
        }
        let cin = a.dims()[1];
        debug_assert_eq!(cin, v.dims()[1]);
        let e = crate::rules::STABILIZER;
        ops::ones_ratio_t(r, cin, self.in_hw, &self.win, e).map(Some)
    }
}

/// A dense layer as a [`LinearMap`].
pub struct DenseMap {
    pub in_shape: Vec<usize>,
}

impl LinearMap for DenseMap {
    fn fwd(&self, x: &CTensor, v: &CTensor, c: Option<&CTensor>) -> CResult<CTensor> {
        ops::linear(x, v, c)
    }
    fn tr(&self, s: &CTensor, v: &CTensor) -> CResult<CTensor> {
        ops::linear_t(s, v)?.reshape(self.in_shape.as_slice())
    }
    fn fwd_where(&self, x: &CTensor, v: &CTensor, r: &CTensor) -> CResult<CTensor> {
        ops::linear_where(x, v, r)
    }
    fn tr_of_ratio(
        &self,
        x: &CTensor,
        v: &CTensor,
        r: &CTensor,
        e: f32,
    ) -> CResult<Option<CTensor>> {
        ops::linear_ratio_t(x, v, r, e)?
            .map(|t| t.reshape(self.in_shape.as_slice()))
            .transpose()
    }
}

/// A batch norm as a [`LinearMap`]: the per-channel affine map `x * v + c` (`v`, `c`: `[C]`),
/// its own transpose.
pub struct AffineMap;

impl AffineMap {
    fn channels(x: &CTensor, v: &CTensor) -> CResult<CTensor> {
        let shape: Vec<usize> = (0..x.rank())
            .map(|d| if d == 1 { v.elem_count() } else { 1 })
            .collect();
        v.reshape(shape)
    }
}

impl LinearMap for AffineMap {
    fn fwd(&self, x: &CTensor, v: &CTensor, c: Option<&CTensor>) -> CResult<CTensor> {
        let y = x.broadcast_mul(&Self::channels(x, v)?)?;
        match c {
            Some(c) => y.broadcast_add(&Self::channels(x, c)?),
            None => Ok(y),
        }
    }
    fn tr(&self, s: &CTensor, v: &CTensor) -> CResult<CTensor> {
        s.broadcast_mul(&Self::channels(s, v)?)
    }
}

/// A tensor shaped like `a` whose channel `c` (dimension 1) holds `values[c]` (or `values[0]`
/// everywhere when one value is given).
pub fn per_channel(a: &CTensor, values: &[f32]) -> CResult<CTensor> {
    let c = a.dims()[1];
    let v: Vec<f32> = (0..c)
        .map(|i| {
            if values.len() == c {
                values[i]
            } else {
                values[0]
            }
        })
        .collect();
    let shape: Vec<usize> = (0..a.rank()).map(|d| if d == 1 { c } else { 1 }).collect();
    CTensor::from_vec(v, shape, &Device::Cpu)?
        .broadcast_as(a.shape())?
        .contiguous()
}
