//! Every rule against a naive dense reference in f64 (Zennit's unit tests do the same): the
//! layer is written out as a dense matrix `M` (built here from the convolution's index
//! arithmetic, independently of sr-core's ops), and each rule's formula is evaluated sum by sum.
//! Layers: a strided conv with asymmetric padding, a depthwise conv, a grouped conv, a dense
//! layer.

use candle_core::{Device, Tensor as CTensor};
use sr_core::geometry::Window;
use sr_relevance_lrp::rules::{self, apply, LinearMap, Rule};
use sr_relevance_lrp::{ConvMap, DenseMap};

/// Deterministic pseudo-random values in [-1, 1).
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

struct Layer {
    /// Dense matrix, `out x in`.
    m: Vec<Vec<f64>>,
    /// Input channel of each input unit (for z^B bounds).
    in_channel: Vec<usize>,
}

/// The dense matrix of a conv: `M[(o, oy, ox)][(c, iy, ix)] = w[o][c - g*cin_g][ky][kx]`.
fn conv_matrix(
    w: &[f32],
    wshape: [usize; 4],
    c_in: usize,
    h: usize,
    wd: usize,
    win: &Window,
    groups: usize,
) -> Layer {
    let [cout, cin_g, kh, kw] = wshape;
    let (oh, ow) = win.output_size(h, wd, false).unwrap();
    let mut m = vec![vec![0f64; c_in * h * wd]; cout * oh * ow];
    let cout_g = cout / groups;
    for o in 0..cout {
        let g = o / cout_g;
        for oy in 0..oh {
            for ox in 0..ow {
                for ci in 0..cin_g {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * win.stride[0] + ky * win.dilation[0]) as isize
                                - win.padding[0] as isize;
                            let ix = (ox * win.stride[1] + kx * win.dilation[1]) as isize
                                - win.padding[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            let c = g * cin_g + ci;
                            m[(o * oh + oy) * ow + ox][(c * h + iy as usize) * wd + ix as usize] +=
                                w[((o * cin_g + ci) * kh + ky) * kw + kx] as f64;
                        }
                    }
                }
            }
        }
    }
    Layer {
        m,
        in_channel: (0..c_in * h * wd).map(|i| i / (h * wd)).collect(),
    }
}

fn stab(d: f64, e: f64) -> f64 {
    d + e * if d >= 0.0 { 1.0 } else { -1.0 }
}

/// The rule, sum by sum, in f64. `bias[j]` is per output unit.
fn naive(rule: &Rule, l: &Layer, a: &[f32], bias: &[f64], r: &[f32]) -> Vec<f64> {
    let (nout, nin) = (l.m.len(), l.m[0].len());
    let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let mut out = vec![0f64; nin];
    let p = |v: f64| v.max(0.0);
    let n = |v: f64| v.min(0.0);
    for j in 0..nout {
        let row = &l.m[j];
        let rj = r[j] as f64;
        let b = bias[j];
        let z: f64 = (0..nin).map(|i| row[i] * a[i]).sum::<f64>() + b;
        match rule {
            Rule::Epsilon(rules::Epsilon(e)) => {
                (0..nin).for_each(|i| out[i] += a[i] * row[i] * rj / stab(z, *e as f64))
            }
            Rule::Gradient(_) => (0..nin).for_each(|i| out[i] += row[i] * rj),
            Rule::ZPlus(_) | Rule::AlphaBeta(_) => {
                let (alpha, beta) = match rule {
                    Rule::AlphaBeta(ab) => (ab.alpha as f64, ab.beta as f64),
                    _ => (1.0, 0.0),
                };
                let cp = |i: usize| p(a[i]) * p(row[i]) + n(a[i]) * n(row[i]);
                let cn = |i: usize| p(a[i]) * n(row[i]) + n(a[i]) * p(row[i]);
                let zp = (0..nin).map(cp).sum::<f64>() + p(b);
                let zn = (0..nin).map(cn).sum::<f64>() + n(b);
                for i in 0..nin {
                    out[i] += alpha * cp(i) * rj / stab(zp, 1e-6)
                        - if beta != 0.0 {
                            beta * cn(i) * rj / stab(zn, 1e-6)
                        } else {
                            0.0
                        };
                }
            }
            Rule::Flat(_) => {
                let support: Vec<usize> = (0..nin).filter(|&i| row[i] != 0.0).collect();
                for &i in &support {
                    out[i] += rj / stab(support.len() as f64, 1e-6);
                }
            }
            Rule::WSquare(_) => {
                let zz: f64 = row.iter().map(|w| w * w).sum();
                (0..nin).for_each(|i| out[i] += row[i] * row[i] * rj / stab(zz, 1e-6));
            }
            Rule::ZBox(zb) => {
                let (low, high) = zb.bounds.as_ref().expect("explicit bounds here");
                let lo = |i: usize| low[l.in_channel[i]] as f64;
                let hi = |i: usize| high[l.in_channel[i]] as f64;
                let c = |i: usize| a[i] * row[i] - lo(i) * p(row[i]) - hi(i) * n(row[i]);
                let zz = (0..nin).map(c).sum::<f64>() + b - p(b) - n(b);
                (0..nin).for_each(|i| out[i] += c(i) * rj / stab(zz, 1e-6));
            }
            Rule::Gamma(rules::Gamma(g)) => {
                let g = *g as f64;
                let wp = |i: usize| row[i] + g * p(row[i]);
                let wn = |i: usize| row[i] + g * n(row[i]);
                if z > 0.0 {
                    let c = |i: usize| p(a[i]) * wp(i) + n(a[i]) * wn(i);
                    let d = (0..nin).map(c).sum::<f64>() + b + g * p(b);
                    (0..nin).for_each(|i| out[i] += c(i) * rj / stab(d, 1e-6));
                } else if z < 0.0 {
                    let c = |i: usize| p(a[i]) * wn(i) + n(a[i]) * wp(i);
                    let d = (0..nin).map(c).sum::<f64>() + b + g * n(b);
                    (0..nin).for_each(|i| out[i] += c(i) * rj / stab(d, 1e-6));
                }
            }
            Rule::SrpConv(_) => (0..nin).for_each(|i| out[i] += a[i] * row[i] * rj / (z + 1e-9)),
            Rule::SrpLinear(_) => {
                let zz: f64 = (0..nin).map(|i| a[i] * p(row[i])).sum::<f64>() + 1e-9;
                (0..nin).for_each(|i| out[i] += a[i] * p(row[i]) * rj / zz);
            }
            Rule::Pass(_) => unreachable!(),
        }
    }
    out
}

fn rules() -> Vec<Rule> {
    vec![
        Rule::Epsilon(rules::Epsilon(0.25)),
        Rule::Epsilon(rules::Epsilon(1e-6)),
        Rule::Gradient(rules::Gradient),
        Rule::ZPlus(rules::ZPlus),
        Rule::AlphaBeta(rules::AlphaBeta::new(2.0, 1.0).unwrap()),
        Rule::AlphaBeta(rules::AlphaBeta::new(1.0, 0.0).unwrap()),
        Rule::Flat(rules::Flat),
        Rule::WSquare(rules::WSquare),
        Rule::ZBox(rules::ZBox::with_bounds(
            vec![-2.0, -1.5, -1.0, -0.5],
            vec![2.0, 1.5, 1.0, 0.5],
        )),
        Rule::Gamma(rules::Gamma(0.25)),
        Rule::SrpConv(rules::SrpConv),
        Rule::SrpLinear(rules::SrpLinear),
    ]
}

/// Max abs difference relative to the reference's max abs value.
const TOL: f64 = 1e-4;

fn check(
    name: &str,
    map: &dyn LinearMap,
    layer: &Layer,
    a: &CTensor,
    w: &CTensor,
    b: &[f32],
    bias_per_out: &[f64],
    r: &CTensor,
) {
    // Signed inputs, and inputs with no negative value (after a ReLU), for which the rules that
    // split the input by sign skip the negative part.
    let bt = CTensor::from_slice(b, b.len(), &Device::Cpu).unwrap();
    for (input, a) in [("signed", a.clone()), ("non-negative", a.abs().unwrap())] {
        let a = &a;
        let z = map.fwd(a, w, Some(&bt)).unwrap();
        let a_v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let r_v = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for rule in rules() {
            let got = apply(&rule, map, a, &z, w, Some(&bt), r)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let want = naive(&rule, layer, &a_v, bias_per_out, &r_v);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
            assert!(
                err <= TOL * scale,
                "{name}, {input} input, {rule:?}: max err {err:.3e} vs max |R| {scale:.3e}"
            );
        }
    }
}

fn conv_case(
    name: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: [usize; 4],
    groups: usize,
) {
    let (h, wd) = (7, 6);
    let win = Window {
        kernel: [k, k],
        stride: [stride; 2],
        padding,
        dilation: [1, 1],
    };
    let wshape = [c_out, c_in / groups, k, k];
    let w = rand(wshape.iter().product(), 1);
    let b = rand(c_out, 2);
    let a = rand(c_in * h * wd, 3);
    let (oh, ow) = win.output_size(h, wd, false).unwrap();
    let r = rand(c_out * oh * ow, 4);
    let layer = conv_matrix(&w, wshape, c_in, h, wd, &win, groups);
    let bias_per_out: Vec<f64> = (0..c_out * oh * ow)
        .map(|j| b[j / (oh * ow)] as f64)
        .collect();
    let dev = &Device::Cpu;
    let map = ConvMap {
        win,
        groups,
        in_hw: (h, wd),
        flipped: None,
    };
    check(
        name,
        &map,
        &layer,
        &CTensor::from_slice(&a, (1, c_in, h, wd), dev).unwrap(),
        &CTensor::from_slice(&w, (c_out, c_in / groups, k, k), dev).unwrap(),
        &b,
        &bias_per_out,
        &CTensor::from_slice(&r, (1, c_out, oh, ow), dev).unwrap(),
    );
}

#[test]
fn rules_match_the_dense_reference_on_a_strided_conv_with_asymmetric_padding() {
    // TF-"SAME" style: one extra pixel bottom/right.
    conv_case("conv 3x3 s2 pad [0,0,1,1]", 4, 5, 3, 2, [0, 0, 1, 1], 1);
    conv_case("conv 3x3 s1 pad [1,2,0,1]", 4, 3, 3, 1, [1, 2, 0, 1], 1);
}

#[test]
fn rules_match_the_dense_reference_on_depthwise_and_grouped_convs() {
    conv_case(
        "depthwise 3x3 s2 pad [0,0,1,1]",
        4,
        4,
        3,
        2,
        [0, 0, 1, 1],
        4,
    );
    conv_case(
        "depthwise 5x5 s1 pad [2,2,2,2]",
        4,
        4,
        5,
        1,
        [2, 2, 2, 2],
        4,
    );
    conv_case("grouped 3x3 (2 groups)", 4, 6, 3, 1, [1, 1, 1, 1], 2);
}

#[test]
fn rules_match_the_dense_reference_on_a_dense_layer() {
    let (nin, nout) = (9, 4);
    let w = rand(nin * nout, 5);
    let b = rand(nout, 6);
    let a = rand(nin, 7);
    let r = rand(nout, 8);
    let layer = Layer {
        m: (0..nout)
            .map(|o| (0..nin).map(|i| w[o * nin + i] as f64).collect())
            .collect(),
        in_channel: vec![0; nin],
    };
    let dev = &Device::Cpu;
    check(
        "dense",
        &DenseMap {
            in_shape: vec![1, nin],
        },
        &layer,
        &CTensor::from_slice(&a, (1, nin), dev).unwrap(),
        &CTensor::from_slice(&w, (nout, nin), dev).unwrap(),
        &b,
        &b.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &CTensor::from_slice(&r, (1, nout), dev).unwrap(),
    );
}
