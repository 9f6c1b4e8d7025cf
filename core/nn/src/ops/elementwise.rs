//! The smooth activations (sigmoid, hard sigmoid, SiLU, hard swish, GELU) and their
//! derivatives, one value at a time, as PyTorch defines them (the derivative at a kink is
//! PyTorch's choice), plus the layout ops of the mobile nets: channel shuffle and narrow, and
//! the channel LayerNorm of ConvNeXt with its two backward passes.

use super::buffer::{par_init, view};
use super::fused::stab;
use candle_core::{Device, Result, Tensor as CTensor};
use rayon::prelude::*;
use sr_core::graph::Op;

/// `1 / (1 + e^-x)`.
#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The standard normal CDF.
#[inline]
fn phi_cdf(x: f32) -> f32 {
    0.5 * (1.0 + candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `op(x)` for the smooth activations (`x` unchanged for any other op).
pub fn activation_value(op: &Op, x: f32) -> f32 {
    match *op {
        Op::Sigmoid => sigmoid(x),
        Op::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
        Op::Silu => x * sigmoid(x),
        Op::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Op::Gelu => x * phi_cdf(x),
        _ => x,
    }
}

/// `op'(x)` for the smooth activations, as PyTorch's autograd gives it (1 for any other op).
pub fn activation_derivative(op: &Op, x: f32) -> f32 {
    match *op {
        Op::Sigmoid => {
            let s = sigmoid(x);
            s * (1.0 - s)
        }
        Op::HardSigmoid { alpha, beta } => {
            let t = alpha * x + beta;
            if t > 0.0 && t < 1.0 {
                alpha
            } else {
                0.0
            }
        }
        Op::Silu => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
        // PyTorch: 0 below -3, x / 3 + 1/2 up to 3 (inclusive), 1 above.
        Op::HardSwish => {
            if x < -3.0 {
                0.0
            } else if x <= 3.0 {
                x / 3.0 + 0.5
            } else {
                1.0
            }
        }
        Op::Gelu => {
            let pdf = (-0.5 * x * x).exp()
                * (0.5 * std::f32::consts::FRAC_2_SQRT_PI)
                * std::f32::consts::FRAC_1_SQRT_2;
            phi_cdf(x) + x * pdf
        }
        _ => 1.0,
    }
}

/// `f(x_i)` for every element, in parallel chunks (each element on its own: the result does
/// not depend on the thread count).
pub fn unary_map(x: &CTensor, f: impl Fn(f32) -> f32 + Sync) -> Result<CTensor> {
    let xs = view(x)?;
    const CHUNK: usize = 1 << 15;
    let out = par_init(xs.len(), CHUNK, |i, o| {
        for (o, &x) in o.iter_mut().zip(&xs[i * CHUNK..]) {
            o.write(f(x));
        }
    });
    CTensor::from_vec(out, x.shape(), &Device::Cpu)
}

/// ShuffleNet's channel shuffle of an NCHW tensor: channel `i * (C / groups) + j` moves to
/// `j * groups + i`. Its inverse is the shuffle with `C / groups` groups.
pub fn channel_shuffle(x: &CTensor, groups: usize) -> Result<CTensor> {
    let (n, c, h, w) = x.dims4()?;
    if groups == 0 || c % groups != 0 {
        candle_core::bail!("channel shuffle: {groups} groups do not divide {c} channels");
    }
    x.reshape((n, groups, c / groups, h * w))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n, c, h, w))
}

/// `len` indices of axis `axis` of `x` from `start`, `step` apart.
pub fn narrow(x: &CTensor, axis: usize, start: usize, len: usize, step: usize) -> Result<CTensor> {
    if step == 1 {
        return x.narrow(axis, start, len)?.contiguous();
    }
    let ids: Vec<u32> = (0..len).map(|i| (start + i * step) as u32).collect();
    let ids = CTensor::from_vec(ids, len, x.device())?;
    x.contiguous()?.index_select(&ids, axis)
}

/// The transpose of [`narrow`] on an axis `full` long: `r` back in place, zeros elsewhere.
pub fn narrow_t(
    r: &CTensor,
    axis: usize,
    start: usize,
    step: usize,
    full: usize,
) -> Result<CTensor> {
    let len = r.dims()[axis];
    if step == 1 {
        return r.pad_with_zeros(axis, start, full - start - len);
    }
    let mut dims = r.dims().to_vec();
    dims[axis] = full;
    let ids: Vec<u32> = (0..len).map(|i| (start + i * step) as u32).collect();
    let ids = CTensor::from_vec(ids, len, r.device())?;
    CTensor::zeros(dims, r.dtype(), r.device())?.index_add(&ids, &r.contiguous()?, axis)
}

/// Per position (sample and pixel) of `[N, C, rest...]`: the mean over the channels and
/// `1 / sqrt(var + eps)` (biased variance), in f64 sums.
fn ln_stats(xs: &[f32], n: usize, c: usize, plane: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let stats: Vec<(f32, f32)> = (0..n * plane)
        .into_par_iter()
        .map(|k| {
            let (b, p) = (k / plane, k % plane);
            let at = |ch: usize| xs[(b * c + ch) * plane + p] as f64;
            let mean = (0..c).map(at).sum::<f64>() / c as f64;
            let var = (0..c).map(|ch| (at(ch) - mean).powi(2)).sum::<f64>() / c as f64;
            (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

fn dims_nc(x: &CTensor) -> Result<(usize, usize, usize)> {
    let d = x.dims();
    if d.len() < 2 {
        candle_core::bail!("layer norm: expects [N, C, ...], got {d:?}");
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// LayerNorm over the channels at every position:
/// `(x - mean_c x) / sqrt(var_c x + eps) * weight_c + bias_c`.
pub fn layer_norm(x: &CTensor, weight: &[f32], bias: &[f32], eps: f32) -> Result<CTensor> {
    let (n, c, plane) = dims_nc(x)?;
    let xs = view(x)?;
    let (mean, rstd) = ln_stats(&xs, n, c, plane, eps);
    let out = par_init(xs.len(), plane.max(1), |nc, o| {
        let (b, ch) = (nc / c, nc % c);
        for (p, o) in o.iter_mut().enumerate() {
            let k = b * plane + p;
            o.write((xs[nc * plane + p] - mean[k]) * rstd[k] * weight[ch] + bias[ch]);
        }
    });
    CTensor::from_vec(out, x.shape(), &Device::Cpu)
}

/// How a value passes a [`layer_norm`] backwards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerNormBackward {
    /// The gradient: `(g - mean g - xhat mean(g xhat)) / sigma` with `g = r * weight`.
    Gradient,
    /// LRP with the normalising factor held constant (Ali et al. 2022, "XAI for Transformers:
    /// better explanations through conservative propagation"): the layer is then linear in
    /// `x`, `y = (x - mean x) * weight / sigma + bias`, and the epsilon rule gives
    /// `R_i = x_i / sigma * (u_i - mean_c u_c)` with `u = weight * r / stab(y)`.
    Linear { epsilon: f32 },
}

/// The value at a [`layer_norm`]'s input, given its input `x`, output `y` and the value `r` at
/// its output.
pub fn layer_norm_t(
    x: &CTensor,
    y: &CTensor,
    r: &CTensor,
    weight: &[f32],
    eps: f32,
    how: LayerNormBackward,
) -> Result<CTensor> {
    let (n, c, plane) = dims_nc(x)?;
    let (xs, ys, rs) = (view(x)?, view(y)?, view(r)?);
    let (mean, rstd) = ln_stats(&xs, n, c, plane, eps);
    // Per position: u_c = weight_c * (r_c or r_c / stab(y_c)), its mean, and for the gradient
    // mean(u * xhat).
    let at = |b: usize, ch: usize, p: usize| (b * c + ch) * plane + p;
    let u = |i: usize, ch: usize| match how {
        LayerNormBackward::Gradient => weight[ch] * rs[i],
        LayerNormBackward::Linear { epsilon } => weight[ch] * rs[i] / stab(ys[i], epsilon),
    };
    let sums: Vec<(f32, f32)> = (0..n * plane)
        .into_par_iter()
        .map(|k| {
            let (b, p) = (k / plane, k % plane);
            let (mut su, mut sux) = (0f64, 0f64);
            for ch in 0..c {
                let i = at(b, ch, p);
                let uv = u(i, ch) as f64;
                su += uv;
                sux += uv * ((xs[i] - mean[k]) * rstd[k]) as f64;
            }
            ((su / c as f64) as f32, (sux / c as f64) as f32)
        })
        .collect();
    let out = par_init(xs.len(), plane.max(1), |nc, o| {
        let (b, ch) = (nc / c, nc % c);
        for (p, o) in o.iter_mut().enumerate() {
            let k = b * plane + p;
            let i = nc * plane + p;
            let (mu, mux) = sums[k];
            o.write(match how {
                LayerNormBackward::Gradient => {
                    let xhat = (xs[i] - mean[k]) * rstd[k];
                    (u(i, ch) - mu - xhat * mux) * rstd[k]
                }
                LayerNormBackward::Linear { .. } => xs[i] * rstd[k] * (u(i, ch) - mu),
            });
        }
    });
    CTensor::from_vec(out, x.shape(), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derivatives against central differences of the values (away from the kinks).
    #[test]
    fn derivatives_match_finite_differences() {
        let ops = [
            Op::Sigmoid,
            Op::HardSigmoid {
                alpha: 1.0 / 6.0,
                beta: 0.5,
            },
            Op::Silu,
            Op::HardSwish,
            Op::Gelu,
        ];
        for op in &ops {
            for k in -40..=40 {
                let x = k as f64 * 0.173 + 0.01;
                if matches!(op, Op::HardSigmoid { .. } | Op::HardSwish)
                    && (x.abs() - 3.0).abs() < 0.01
                {
                    continue;
                }
                let h = 1e-2f32;
                let xf = x as f32;
                let fd = (activation_value(op, xf + h) - activation_value(op, xf - h)) / (2.0 * h);
                let d = activation_derivative(op, xf);
                assert!((fd - d).abs() < 2e-3, "{op:?} at {x}: {d} vs {fd}");
            }
        }
        // Hand values: sigmoid(0) = 1/2, silu'(0) = 1/2, gelu(1) = Phi(1) = 0.841345.
        assert_eq!(activation_value(&Op::Sigmoid, 0.0), 0.5);
        assert!((activation_derivative(&Op::Silu, 0.0) - 0.5).abs() < 1e-7);
        assert!((activation_value(&Op::Gelu, 1.0) - 0.841_344_7).abs() < 1e-6);
        assert_eq!(activation_value(&Op::HardSwish, 1.0), 4.0 / 6.0);
    }

    /// The shuffle with C / g groups undoes the shuffle with g; channel 1 of 6 in 3 groups
    /// (group 0, member 1) moves to 1 * 3 + 0 = 3.
    #[test]
    fn channel_shuffle_moves_channels_and_inverts() {
        let x = CTensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 6, 1, 1))
            .unwrap();
        let y = channel_shuffle(&x, 3).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        let back: Vec<f32> = channel_shuffle(&y, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(back, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    /// LayerNorm's gradient against central differences of <r, layer_norm(x)>; its LRP pass
    /// with bias 0 conserves relevance at every position.
    #[test]
    fn layer_norm_backward_passes() {
        let (c, plane) = (5, 3);
        let xv: Vec<f32> = (0..c * plane)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let rv: Vec<f32> = (0..c * plane)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.2)
            .collect();
        let w = [0.5f32, -1.0, 2.0, 1.5, 0.7];
        let b = [0f32; 5];
        let t = |v: &[f32]| CTensor::from_slice(v, (1, c, plane), &Device::Cpu).unwrap();
        let (x, r) = (t(&xv), t(&rv));
        let y = layer_norm(&x, &w, &b, 1e-5).unwrap();
        let g: Vec<f32> = layer_norm_t(&x, &y, &r, &w, 1e-5, LayerNormBackward::Gradient)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let dot = |xv: &[f32]| -> f64 {
            let y: Vec<f32> = layer_norm(&t(xv), &w, &b, 1e-5)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            y.iter().zip(&rv).map(|(a, b)| (a * b) as f64).sum()
        };
        for i in 0..xv.len() {
            let h = 1e-3;
            let (mut up, mut dn) = (xv.clone(), xv.clone());
            up[i] += h;
            dn[i] -= h;
            let fd = (dot(&up) - dot(&dn)) / (2.0 * h as f64);
            assert!((fd - g[i] as f64).abs() < 2e-3, "{i}: {} vs {fd}", g[i]);
        }
        let rel: Vec<f32> = layer_norm_t(
            &x,
            &y,
            &y,
            &w,
            1e-5,
            LayerNormBackward::Linear { epsilon: 1e-9 },
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        for p in 0..plane {
            let got: f32 = (0..c).map(|ch| rel[ch * plane + p]).sum();
            let want: f32 = (0..c).map(|ch| yv[ch * plane + p]).sum();
            assert!((got - want).abs() < 1e-4, "position {p}: {got} vs {want}");
        }
    }
}
