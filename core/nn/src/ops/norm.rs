//! Local response normalisation (AlexNet).

use super::buffer::view;
use candle_core::{Device, Result, Tensor as CTensor};
use rayon::prelude::*;

/// Local response normalisation across channels (ONNX LRN; PyTorch's LocalResponseNorm for odd
/// sizes): `y = x / (bias + alpha / size * sum_{window} x^2)^beta`, the window running from
/// `c - floor((size - 1) / 2)` to `c + ceil((size - 1) / 2)`.
pub fn lrn(x: &CTensor, size: usize, alpha: f32, beta: f32, bias: f32) -> Result<CTensor> {
    let (n, c, h, w) = x.dims4()?;
    if size == 0 {
        candle_core::bail!("lrn: size 0");
    }
    let xs = view(x)?;
    let plane = h * w;
    let lo = (size - 1) / 2;
    let hi = size - 1 - lo;
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(nc, o)| {
            let (b, ch) = (nc / c, nc % c);
            let first = ch.saturating_sub(lo);
            let last = (ch + hi).min(c - 1);
            for i in 0..plane {
                let mut sq = 0f32;
                for j in first..=last {
                    let v = xs[(b * c + j) * plane + i];
                    sq += v * v;
                }
                o[i] = xs[nc * plane + i] / (bias + alpha / size as f32 * sq).powf(beta);
            }
        });
    CTensor::from_vec(out, (n, c, h, w), &Device::Cpu)
}
