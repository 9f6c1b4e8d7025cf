//! The token-sequence ops of transformers: the matrix product of two computed values, and
//! what a value sends back through it and through a softmax.

use super::fused::stab;
use candle_core::{Result, Tensor as CTensor};

/// `a b` over equal leading axes: `[..., m, k] x [..., k, n]`.
pub fn matmul(a: &CTensor, b: &CTensor) -> Result<CTensor> {
    a.contiguous()?.matmul(&b.contiguous()?)
}

/// The last two axes swapped.
pub fn t_last(x: &CTensor) -> Result<CTensor> {
    let r = x.rank();
    x.transpose(r - 2, r - 1)?.contiguous()
}

/// What `z = a b` sends back to `a` and `b` given `s` at `z`, each times its input:
/// `(a * (s b^T), b * (a^T s))`; with `times_input` false, the gradients `(s b^T, a^T s)`.
pub fn matmul_t(
    a: &CTensor,
    b: &CTensor,
    s: &CTensor,
    times_input: bool,
) -> Result<(CTensor, CTensor)> {
    let ga = matmul(s, &t_last(b)?)?;
    let gb = matmul(&t_last(a)?, s)?;
    if times_input {
        Ok(((a * ga)?, (b * gb)?))
    } else {
        Ok((ga, gb))
    }
}

/// `r / stab(z)` element-wise, times `scale`.
pub fn divide(r: &CTensor, z: &CTensor, epsilon: f32, scale: f32) -> Result<CTensor> {
    super::zip_map(r, z, |r, z| scale * r / stab(z, epsilon))
}

/// The gradient of `s = softmax(x)` along axis 1 at the output value `g`:
/// `s * (g - sum_1(s * g))`.
pub fn softmax_t(s: &CTensor, g: &CTensor) -> Result<CTensor> {
    let sg = (s * g)?;
    let sum = sg.sum_keepdim(1)?;
    sg - s.broadcast_mul(&sum)?
}

/// AttnLRP's softmax rule (Achtibat et al. 2024, Proposition 3.1): the Taylor decomposition
/// at `x` without the bias, `R_x = x * (R - s * sum_1 R)`, along axis 1.
pub fn softmax_lrp(x: &CTensor, s: &CTensor, r: &CTensor) -> Result<CTensor> {
    let sum = r.sum_keepdim(1)?;
    x * (r - s.broadcast_mul(&sum)?)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: &[usize]) -> CTensor {
        CTensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    /// Hand values: a 2 x 2 product and its transposes; AttnLRP's softmax rule for
    /// x = (0, ln 3), s = (1/4, 3/4) and R = (1, 1): R_x = x * (R - s * 2) = (0, ln 3 * (1 - 3/2)).
    #[test]
    fn hand_derived_values() {
        let a = t(&[1., 2., 3., 4.], &[1, 2, 2]);
        let b = t(&[5., 6., 7., 8.], &[1, 2, 2]);
        let z = matmul(&a, &b).unwrap();
        assert_eq!(
            z.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![19., 22., 43., 50.]
        );
        let s = t(&[1., 0., 0., 0.], &[1, 2, 2]);
        let (ga, gb) = matmul_t(&a, &b, &s, false).unwrap();
        // z00 = a00 b00 + a01 b10: d z00 / d a = (b00, b10) = (5, 7) at a00, a01, and
        // d z00 / d b = (a00, a01) = (1, 2) at b00, b10.
        assert_eq!(
            ga.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![5., 7., 0., 0.]
        );
        assert_eq!(
            gb.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1., 0., 2., 0.]
        );
        let x = t(&[0., 3f32.ln()], &[1, 2]);
        let sm = t(&[0.25, 0.75], &[1, 2]);
        let r = t(&[1., 1.], &[1, 2]);
        let rx = softmax_lrp(&x, &sm, &r).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(rx[0][0], 0.0);
        assert!((rx[0][1] - 3f32.ln() * (1.0 - 1.5)).abs() < 1e-6);
        // The gradient of softmax at g = (1, 0): s0 (1 - s0), -s1 s0.
        let g = softmax_t(&sm, &t(&[1., 0.], &[1, 2]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((g[0][0] - 0.1875).abs() < 1e-7 && (g[0][1] + 0.1875).abs() < 1e-7);
    }
}
