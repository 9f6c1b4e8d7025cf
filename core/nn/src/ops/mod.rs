//! Kernels: the layer primitives shared by the executor and the relevance methods, by family.
//!
//! - [`conv`]: convolutions and their transposes (vector-Jacobian products with respect to the
//!   input), with the IR's conventions (4-sided zero padding, groups, dilation);
//! - [`dense`]: dense layers and their transposes, with the sparse forms LRP uses;
//! - [`pool`]: max and average pooling, forward and transposed;
//! - [`norm`]: local response normalisation;
//! - [`elementwise`]: the smooth activations and their derivatives, channel shuffle and
//!   narrow, the channel LayerNorm and its backward passes;
//! - [`fused`]: the rules' element-wise steps, fused into one pass or into the last loop of a
//!   transposed map;
//! - [`sequence`]: the product of two computed values (attention) and the softmax rules;
//! - [`buffer`]: views of candle storage and outputs written without a zeroing pass.
//!
//! A stride-1 transpose is the forward convolution with the kernel flipped ([`flip_kernel`]);
//! any other is `W^T s` by a matrix product followed by a col2im that scatters the columns
//! back, parallel over channel planes with a fixed summation order, so results do not depend on
//! the thread count. Window geometry comes from [`sr_core::geometry`].

pub mod buffer;
pub mod conv;
pub mod dense;
pub mod elementwise;
pub mod fused;
pub mod norm;
pub mod pool;
pub mod sequence;

pub use buffer::{view, View};
pub use conv::{
    conv2d, conv2d_dense, conv2d_t, conv2d_t_times, flip_kernel, ones_ratio_t, transposes_by_flip,
};
pub use dense::{linear, linear_ratio_t, linear_t, linear_where};
pub use elementwise::{
    activation_derivative, activation_value, channel_shuffle, layer_norm, layer_norm_t, narrow,
    narrow_t, unary_map, LayerNormBackward,
};
pub use fused::{finish, gated, masked, open_mask, stab, zip_map, Act, Finish, Gate, Stab};
pub use norm::lrn;
pub use pool::{avg_pool_t, max_pool_t, max_pool_t_fused, pool, MaxRouting, PoolKind};
pub use sequence::{matmul, matmul_t, softmax_lrp, softmax_t};
pub use sr_core::geometry::Window;

/// The output size of `win` on an `h x w` input (floor mode), or an error naming `op`.
pub(crate) fn out_hw(
    op: &str,
    win: &Window,
    h: usize,
    w: usize,
) -> candle_core::Result<(usize, usize)> {
    match win.output_size(h, w, false) {
        Some(hw) => Ok(hw),
        None => candle_core::bail!("{op}: window {win:?} does not fit a {h}x{w} input"),
    }
}

#[cfg(test)]
mod tests {
    use super::buffer::data;
    use super::*;
    use candle_core::{Device, Tensor as CTensor};

    fn randn(shape: &[usize], seed: u64) -> CTensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        CTensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &CTensor, b: &CTensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Our dense convolution against candle-core's (an independent im2col + gemm), on
    /// symmetric pads, strides, dilation and 1x1 kernels; asymmetric pads against candle on
    /// an explicitly padded input.
    #[test]
    fn dense_convolution_matches_candle() {
        for (i, &(cin, cout, hw, k, s, p, d)) in [
            (3, 8, 17, 3, 1, 1, 1),
            (5, 4, 16, 3, 2, 1, 1),
            (4, 6, 15, 5, 2, 2, 1),
            (6, 3, 12, 3, 1, 2, 2),
            (16, 8, 9, 1, 1, 0, 1),
            (3, 4, 11, 1, 2, 0, 1),
        ]
        .iter()
        .enumerate()
        {
            let x = randn(&[2, cin, hw, hw], i as u64);
            let w = randn(&[cout, cin, k, k], 100 + i as u64);
            let b = randn(&[cout], 200 + i as u64);
            let win = Window {
                kernel: [k, k],
                stride: [s, s],
                padding: [p; 4],
                dilation: [d, d],
            };
            let ours = conv2d_dense(&x, &w, Some(&b), &win).unwrap();
            let theirs = x
                .conv2d(&w, p, s, d, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(
                max_diff(&ours, &theirs) < 1e-5,
                "case {i}: {}",
                max_diff(&ours, &theirs)
            );
        }
        // Asymmetric (TF "SAME") padding [0, 0, 1, 1] with stride 2.
        let x = randn(&[1, 3, 10, 10], 7);
        let w = randn(&[4, 3, 3, 3], 8);
        let win = Window {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0, 1, 1],
            dilation: [1, 1],
        };
        let ours = conv2d_dense(&x, &w, None, &win).unwrap();
        let padded = x
            .pad_with_zeros(2, 0, 1)
            .unwrap()
            .pad_with_zeros(3, 0, 1)
            .unwrap();
        let theirs = padded.conv2d(&w, 0, 2, 1, 1).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-5);
    }

    /// The stride-1 transposed convolution (flipped kernel) against the general path
    /// (matmul + col2im), which it replaces: <s, conv(x)> = <conv_t(s), x> both ways.
    #[test]
    fn stride_one_transpose_matches_the_general_path_and_the_adjoint() {
        // 5 -> 6 channels takes the flipped-kernel path; 3 -> 24 (a first layer) the general
        // one.
        for (cin, cout) in [(5, 6), (3, 24)] {
            adjoint_case(cin, cout);
        }
    }

    /// Max-pool routing against a naive loop over windows (Window::span's clamping), for
    /// windows that tile the input (the write-once path) and overlapping ones, with ties.
    #[test]
    fn max_pool_transpose_matches_a_naive_loop() {
        for (k, s_, h, w, ceil) in [(2, 2, 7, 9, false), (2, 2, 7, 9, true), (3, 2, 9, 8, true)] {
            // Small integers: many exact ties.
            let x = randn(&[2, 3, h, w], 11)
                .affine(2.0, 0.0)
                .unwrap()
                .round()
                .unwrap();
            let oh = sr_core::geometry::out_len(h, k, s_, 0, 0, ceil).unwrap();
            let ow = sr_core::geometry::out_len(w, k, s_, 0, 0, ceil).unwrap();
            let g = randn(&[2, 3, oh, ow], 12);
            let win = Window {
                kernel: [k, k],
                stride: [s_, s_],
                padding: [0; 4],
                dilation: [1, 1],
            };
            let (xs, gs) = (data(&x).unwrap(), data(&g).unwrap());
            for routing in [MaxRouting::First, MaxRouting::SplitTies] {
                let ours = data(&max_pool_t(&x, &g, &win, ceil, routing).unwrap()).unwrap();
                let mut want = vec![0f32; xs.len()];
                for p in 0..6 {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (y0, y1, _) = win.span(0, oy, h);
                            let (x0, x1, _) = win.span(1, ox, w);
                            let at = |y: usize, xx: usize| p * h * w + y * w + xx;
                            let cells: Vec<usize> = (y0..y1)
                                .flat_map(|y| (x0..x1).map(move |xx| (y, xx)))
                                .map(|(y, xx)| at(y, xx))
                                .collect();
                            let best = cells.iter().map(|&i| xs[i]).fold(f32::MIN, f32::max);
                            let winners: Vec<usize> =
                                cells.into_iter().filter(|&i| xs[i] == best).collect();
                            let v = gs[(p * oh + oy) * ow + ox];
                            match routing {
                                MaxRouting::First => want[winners[0]] += v,
                                MaxRouting::SplitTies => {
                                    for &i in &winners {
                                        want[i] += v / winners.len() as f32;
                                    }
                                }
                            }
                        }
                    }
                }
                let err = ours
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    err < 1e-6,
                    "k{k} s{s_} {h}x{w} ceil {ceil} {routing:?}: {err}"
                );
            }
        }
    }

    /// Max-pool routing with an activation's gate and a division folded in, against the
    /// plain routing followed by the mask and the division as separate passes: equal value for
    /// value, on the write-once 2 x 2 path and the general one.
    #[test]
    fn max_pool_transpose_folds_a_gate_and_a_division_exactly() {
        for (k, s_, h, w) in [(2, 2, 8, 10), (3, 2, 9, 8)] {
            // A ReLU's output (many exact zeros) and the layer output below it.
            let z = randn(&[2, 3, h, w], 31);
            let x = z.relu().unwrap();
            let oh = sr_core::geometry::out_len(h, k, s_, 0, 0, false).unwrap();
            let ow = sr_core::geometry::out_len(w, k, s_, 0, 0, false).unwrap();
            let g = randn(&[2, 3, oh, ow], 32);
            let win = Window {
                kernel: [k, k],
                stride: [s_, s_],
                padding: [0; 4],
                dilation: [1, 1],
            };
            for (gate, d) in [
                ((0.0, f32::INFINITY), Stab::Sign(0.25)),
                ((0.0, 0.3), Stab::Add(1e-9)),
            ] {
                let routed = max_pool_t(&x, &g, &win, false, MaxRouting::SplitTies).unwrap();
                let masked = zip_map(&routed, &x, |r, a| {
                    r * ((a > gate.0 && a < gate.1) as u8 as f32)
                })
                .unwrap();
                let want = zip_map(&masked, &z, |r, z| r / d.of(z)).unwrap();
                for x_of_div in [None, Some(Act::Relu)] {
                    let ours = max_pool_t_fused(
                        &x,
                        &g,
                        &win,
                        false,
                        MaxRouting::SplitTies,
                        Some(gate),
                        Some((&z, d)),
                        x_of_div,
                    )
                    .unwrap();
                    assert_eq!(
                        data(&ours).unwrap(),
                        data(&want).unwrap(),
                        "k{k} {d:?} {x_of_div:?}"
                    );
                }
            }
        }
    }

    /// The transposed convolutions finished inside their own loops (flipped 3 x 3 and 1 x 1,
    /// depthwise) or in one more pass (strided), against the plain transpose followed by the
    /// factor, gate and division as separate passes: equal value for value.
    #[test]
    fn transposed_convolutions_finish_exactly_as_separate_passes() {
        let win = |k: usize, s: usize, p: usize| Window {
            kernel: [k, k],
            stride: [s, s],
            padding: [p; 4],
            dilation: [1, 1],
        };
        // (cin, cout, groups, window): flipped 3x3, flipped 1x1 expansion, depthwise, strided.
        for (cin, cout, groups, wn) in [
            (5, 6, 1, win(3, 1, 1)),
            (4, 24, 1, win(1, 1, 0)),
            (6, 6, 6, win(3, 1, 1)),
            (6, 6, 6, win(3, 2, 1)),
            (3, 8, 1, win(3, 2, 1)),
        ] {
            let x = randn(&[2, cin, 9, 8], 41);
            let w = randn(&[cout, cin / groups, wn.kernel[0], wn.kernel[1]], 42);
            let y = conv2d(&x, &w, None, &wn, groups).unwrap();
            let s = randn(y.dims(), 43);
            let z = randn(x.dims(), 44);
            let a = z.clamp(0f32, 0.3f32).unwrap();
            let plain = conv2d_t(&s, &w, (9, 8), &wn, groups).unwrap();
            for (gate, div) in [
                (None, None),
                (Some((0.0, 0.3)), None),
                (None, Some(Stab::Sign(1e-6))),
                (Some((0.0, 0.3)), Some(Stab::Add(1e-9))),
            ] {
                let mut want = match gate {
                    None => zip_map(&plain, &a, |c, a| c * a).unwrap(),
                    Some(g) => zip_map(&plain, &a, |c, a| c * gated(a, g)).unwrap(),
                };
                if let Some(d) = div {
                    want = zip_map(&want, &z, |r, z| r / d.of(z)).unwrap();
                }
                // With a division, also with the factor read off z (a = clip(z)).
                let mut from_z = vec![None];
                if div.is_some() {
                    from_z.push(Some(Act::Clip(0.0, 0.3)));
                }
                for times_of_div in from_z {
                    let fin = Finish {
                        times: &a,
                        gate,
                        div: div.map(|d| (&z, d)),
                        times_of_div,
                    };
                    let ours = conv2d_t_times(&s, &w, None, &fin, (9, 8), &wn, groups).unwrap();
                    assert_eq!(
                        data(&ours).unwrap(),
                        data(&want).unwrap(),
                        "{cin}->{cout} g{groups} {wn:?} {gate:?} {div:?} {times_of_div:?}"
                    );
                }
            }
        }
    }

    /// The dense transpose, with rows skipped (most of `s` zero) and with one gemm, against
    /// candle's matmul.
    #[test]
    fn linear_transpose_matches_a_matmul_sparse_or_not() {
        let w = randn(&[300, 2500], 21);
        for zero_every in [1usize, 3] {
            // zero_every 3: two rows in three are zero in every sample (the skipping path).
            let s = randn(&[3, 300], 22);
            let mask: Vec<f32> = (0..3 * 300)
                .map(|k| {
                    if zero_every == 1 || k % 300 % 3 == 0 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let s = (s * CTensor::from_vec(mask, (3, 300), &Device::Cpu).unwrap()).unwrap();
            let ours = linear_t(&s, &w).unwrap();
            let theirs = s.matmul(&w).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-4, "zero_every {zero_every}");
        }
        // Several blocks of live rows and chunks of columns (the partial sums are added).
        let wide = randn(&[1200, 8300], 24);
        let s = randn(&[2, 1200], 25);
        let mask: Vec<f32> = (0..2 * 1200)
            .map(|k| if k % 1200 % 3 == 0 { 1.0 } else { 0.0 })
            .collect();
        let s = (s * CTensor::from_vec(mask, (2, 1200), &Device::Cpu).unwrap()).unwrap();
        let ours = linear_t(&s, &wide).unwrap();
        assert!(max_diff(&ours, &s.matmul(&wide).unwrap()) < 1e-4);
        // srp's dense step in one pass over the rows: the same values as its three steps.
        let x = randn(&[2, 8300], 26).relu().unwrap();
        let wp = wide.relu().unwrap();
        let z = linear_where(&x, &wp, &s).unwrap();
        let steps = linear_t(&zip_map(&s, &z, |r, z| r / (z + 1e-9)).unwrap(), &wp).unwrap();
        let fused = linear_ratio_t(&x, &wp, &s, 1e-9)
            .unwrap()
            .expect("applies here");
        assert_eq!(data(&fused).unwrap(), data(&steps).unwrap());
        // The forward at the units with relevance only (one in three here): those units equal
        // x W^T, the others are 0.
        let x = randn(&[3, 2500], 23);
        let need: Vec<bool> = (0..300).map(|j| j % 3 == 1).collect();
        let r: Vec<f32> = (0..3 * 300)
            .map(|k| if need[k % 300] { 1.0 } else { 0.0 })
            .collect();
        let r = CTensor::from_vec(r, (3, 300), &Device::Cpu).unwrap();
        let rows = data(&linear_where(&x, &w, &r).unwrap()).unwrap();
        let full = data(&x.matmul(&w.t().unwrap()).unwrap()).unwrap();
        for (k, (a, b)) in rows.iter().zip(&full).enumerate() {
            let want = if need[k % 300] { *b } else { 0.0 };
            assert!((a - want).abs() < 1e-4, "unit {k}: {a} vs {want}");
        }
    }

    fn adjoint_case(cin: usize, cout: usize) {
        let x = randn(&[2, cin, 9, 8], 1);
        let w = randn(&[cout, cin, 3, 3], 2);
        for padding in [[1, 1, 1, 1], [0, 0, 1, 1], [2, 1, 0, 2]] {
            let win = Window {
                kernel: [3, 3],
                stride: [1, 1],
                padding,
                dilation: [1, 1],
            };
            let y = conv2d(&x, &w, None, &win, 1).unwrap();
            let s = randn(y.dims(), 3);
            let t = conv2d_t(&s, &w, (9, 8), &win, 1).unwrap();
            // <s, conv(x)> == <conv_t(s), x>
            let lhs = (&s * &y)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let rhs = (&t * &x)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{padding:?}: {lhs} vs {rhs}"
            );
            // The general path (matmul + col2im) runs for grouped convolutions: the same
            // weights as two groups over a duplicated input give the same map twice.
            let t2 = {
                let w2 = CTensor::cat(&[&w, &w], 0).unwrap(); // groups = 2 over duplicated input
                let s2 = CTensor::cat(&[&s, &s], 1).unwrap();
                conv2d_t(&s2, &w2, (9, 8), &win, 2).unwrap()
            };
            let (a, b) = (
                t2.narrow(1, 0, cin).unwrap(),
                t2.narrow(1, cin, cin).unwrap(),
            );
            assert!(
                max_diff(&a, &t) < 1e-4 && max_diff(&b, &t) < 1e-4,
                "{padding:?}"
            );
        }
    }
}
