//! The element-wise steps of the rules, fused: one pass per step ([`zip_map`]), or folded into
//! the last loop of a transposed map while its values are in cache ([`Finish`]): a factor, an
//! activation's gate and the stabilised division of the layer below.

use super::buffer::{par_init, view, with_slice, View};
use candle_core::{Device, Result, Tensor as CTensor};
use rayon::prelude::*;

/// An activation's open interval `(lo, hi)` folded into the factor of a transposed map: the
/// factor `x` counts as `x * 1[lo < x < hi]` (a clip activation's derivative, read off its
/// output), `None` leaves it as it is.
pub type Gate = Option<(f32, f32)>;

/// `x * 1[lo < x < hi]`.
#[inline(always)]
pub fn gated(x: f32, (lo, hi): (f32, f32)) -> f32 {
    if x > lo && x < hi {
        x
    } else {
        0.0
    }
}

/// `1[lo < a < hi]`: the derivative of a clip activation (ReLU6; ReLU with `(0, +inf)`) read
/// off its output `a`.
#[inline(always)]
pub fn open_mask(a: f32, (lo, hi): (f32, f32)) -> f32 {
    (a > lo && a < hi) as u8 as f32
}

/// `v * 1[lo < a < hi]` element-wise ([`open_mask`]): an activation's gradient mask applied to
/// the value `v` sent back through it, `a` being the activation's output.
pub fn masked(v: &CTensor, a: &CTensor, gate: (f32, f32)) -> Result<CTensor> {
    zip_map(v, a, |v, a| v * open_mask(a, gate))
}

/// A stabilised divisor `d(z)` of the traced output `z` of a layer: the first step of the
/// epsilon-like rules is `s = r / d(z)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stab {
    /// `z + e * sign0(z)` ([`stab`]; epsilon).
    Sign(f32),
    /// `z + e` (the paper's code).
    Add(f32),
}

impl Stab {
    #[inline(always)]
    pub fn of(self, z: f32) -> f32 {
        match self {
            Stab::Sign(e) => stab(z, e),
            Stab::Add(e) => z + e,
        }
    }

    /// `r / d(z)` element-wise, in one pass.
    pub fn divide(self, r: &CTensor, z: &CTensor) -> Result<CTensor> {
        match self {
            Stab::Sign(e) => zip_map(r, z, |r, z| r / stab(z, e)),
            Stab::Add(e) => zip_map(r, z, |r, z| r / (z + e)),
        }
    }
}

/// An element-wise activation as the trace computed it: the value a layer's input has, given
/// the output `z` of the layer below when only this activation (and dropout or flatten) lies
/// between them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Identity,
    Relu,
    Clip(f32, f32),
}

impl Act {
    #[inline(always)]
    pub fn of(self, z: f32) -> f32 {
        match self {
            Act::Identity => z,
            Act::Relu => z.max(0.0),
            Act::Clip(lo, hi) => z.max(lo).min(hi),
        }
    }
}

/// How the output `c` of a transposed map is finished, element-wise, while it is in cache:
/// `c * gated(times, gate)`, then divided by `d(z)` when `div` is `(z, d)` (the division that
/// the rule of the layer below would start with: see [`crate::propagate`]).
#[derive(Clone, Copy)]
pub struct Finish<'a> {
    pub times: &'a CTensor,
    pub gate: Gate,
    pub div: Option<(&'a CTensor, Stab)>,
    /// With `div`: `times` equals `act(z)` value for value (the layer's input is the
    /// activation of the layer below's output), so `act(z)` is used and `times` never read.
    pub times_of_div: Option<Act>,
}

impl<'a> Finish<'a> {
    /// `c * times`.
    pub fn times(times: &'a CTensor) -> Self {
        Finish {
            times,
            gate: None,
            div: None,
            times_of_div: None,
        }
    }

    pub(crate) fn views(&self, len: usize) -> Result<FinishView<'a>> {
        let times = view(self.times)?;
        let div = match self.div {
            Some((z, d)) => Some((view(z)?, d)),
            None => None,
        };
        if times.len() != len || div.as_ref().is_some_and(|(z, _)| z.len() != len) {
            candle_core::bail!(
                "finish: factor {:?} (divisor {:?}) for {len} values",
                self.times.dims(),
                self.div.map(|(z, _)| z.dims().to_vec())
            );
        }
        Ok(FinishView {
            times,
            gate: self.gate,
            div,
            times_of_div: self.times_of_div,
        })
    }
}

/// [`Finish`] on borrowed storage.
pub(crate) struct FinishView<'a> {
    times: View<'a>,
    gate: Gate,
    div: Option<(View<'a>, Stab)>,
    times_of_div: Option<Act>,
}

/// `o = o * gated(a(x), gate) / d(z)` over `o`, the factor's source `x` and `z`.
#[inline(always)]
fn finish_div(
    o: &mut [f32],
    x: &[f32],
    z: &[f32],
    a: impl Fn(f32) -> f32,
    d: impl Fn(f32) -> f32,
    gate: Gate,
) {
    let vals = o.iter_mut().zip(x).zip(z);
    match gate {
        None => vals.for_each(|((o, &x), &z)| *o = *o * a(x) / d(z)),
        Some(g) => vals.for_each(|((o, &x), &z)| *o = *o * gated(a(x), g) / d(z)),
    }
}

impl FinishView<'_> {
    /// Finish `o`, the values `at .. at + o.len()` of the map's output.
    #[inline]
    pub(crate) fn apply(&self, o: &mut [f32], at: usize) {
        let x = &self.times[at..at + o.len()];
        match (&self.div, self.gate) {
            (None, None) => o.iter_mut().zip(x).for_each(|(o, &x)| *o *= x),
            (None, Some(g)) => o.iter_mut().zip(x).for_each(|(o, &x)| *o *= gated(x, g)),
            (Some((z, d)), g) => {
                let z = &z[at..at + o.len()];
                // The factor: `times` itself, or read off `z`.
                let (x, act) = match self.times_of_div {
                    Some(act) => (z, act),
                    None => (x, Act::Identity),
                };
                match (act, *d) {
                    (Act::Identity, Stab::Sign(e)) => finish_div(o, x, z, |x| x, |z| stab(z, e), g),
                    (Act::Identity, Stab::Add(e)) => finish_div(o, x, z, |x| x, |z| z + e, g),
                    (Act::Relu, Stab::Sign(e)) => {
                        finish_div(o, x, z, |x| x.max(0.0), |z| stab(z, e), g)
                    }
                    (Act::Relu, Stab::Add(e)) => finish_div(o, x, z, |x| x.max(0.0), |z| z + e, g),
                    (Act::Clip(lo, hi), Stab::Sign(e)) => {
                        finish_div(o, x, z, |x| x.max(lo).min(hi), |z| stab(z, e), g)
                    }
                    (Act::Clip(lo, hi), Stab::Add(e)) => {
                        finish_div(o, x, z, |x| x.max(lo).min(hi), |z| z + e, g)
                    }
                }
            }
        }
    }
}

/// `c` finished by `f` in one pass (for the maps that do not finish inside their own loops).
pub fn finish(c: &CTensor, f: &Finish) -> Result<CTensor> {
    let n = c.elem_count();
    let fv = f.views(n)?;
    let out = with_slice(c, |cs| {
        const CHUNK: usize = 1 << 15;
        let mut out = par_init(n, CHUNK, |i, o| {
            for (o, &c) in o.iter_mut().zip(&cs[i * CHUNK..]) {
                o.write(c);
            }
        });
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, o)| fv.apply(o, i * CHUNK));
        out
    })?;
    CTensor::from_vec(out, c.shape(), &Device::Cpu)
}

/// `f(a_i, b_i)` for every element of two tensors of one shape, in one pass (the rules'
/// element-wise steps, fused instead of one candle op and one buffer per step). Each element
/// is computed on its own, so the result does not depend on the thread count.
pub fn zip_map(a: &CTensor, b: &CTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<CTensor> {
    if a.dims() != b.dims() {
        candle_core::bail!("zip_map: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    let out = with_slice(a, |xs| {
        with_slice(b, |ys| {
            const CHUNK: usize = 1 << 15;
            par_init(xs.len(), CHUNK, |i, o| {
                let (x, y) = (&xs[i * CHUNK..], &ys[i * CHUNK..]);
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    o.write(f(x, y));
                }
            })
        })
    })??;
    CTensor::from_vec(out, a.shape(), &Device::Cpu)
}

/// `d + e * sign0(d)` for one value, `sign0(d) = 1` for `d >= 0`, else `-1` (Zennit's
/// stabiliser; [`crate::propagate::stabilise`] on a whole tensor).
#[inline(always)]
pub fn stab(d: f32, e: f32) -> f32 {
    d + if d >= 0.0 { e } else { -e }
}
