//! Relevance parity against Zennit 0.5.1 (LRP composites), plain PyTorch (gradient) and the
//! reference implementation of the paper's `srp` rule set, on every model, image and method of
//! the golden set (tests/fixtures/golden, made by PyTorch + Zennit; see SOURCE-README.md).
//!
//! Tolerances, none of them taken from srhost's own output:
//! - a map the golden set marks `ok`: Pearson >= 0.99999 and max abs error <= 1e-4 of the
//!   map's max abs value (the README quotes a median of 1.3e-6), or twice the reference's own
//!   float32-vs-float64 difference (`fp64_reference` in its `relevance_stats.json`) where that
//!   is larger: a map cannot be pinned down more precisely than its own round-off.
//! - a map marked `sensitive` (a few ReLU or max-pool winners flip between float32 and
//!   float64): Pearson >= 0.999 and the relative L2 tolerance the golden set suggests.
//! - [`OUTLIERS`]: `ok` maps where one ReLU or max-pool unit decides the other way than in
//!   PyTorch, because the two sums round differently. Each names the window of the map it
//!   moves, with a bound there of about three times the error measured; outside the window
//!   the map is held to the bounds above. An outlier that is compared no more, or whose
//!   error falls to 1e-4, fails the test: the table must be kept true.

use sr_backend_torchvision::{TorchvisionModel, TorchvisionParams};
use sr_core::{Model, RelevanceStage, Tensor};
use sr_relevance_lrp::{Lrp, LrpParams};
use srhost_tests::*;
use std::sync::Arc;

const PEARSON_MIN: f64 = 0.99999;
const PEARSON_MIN_SENSITIVE: f64 = 0.999;
const MAX_ABS_REL: f64 = 1e-4;

/// An `ok` map that differs from the reference in one window only (see the module docs).
struct Outlier {
    map: &'static str,
    /// Rows and columns of the window, inclusive.
    rows: (usize, usize),
    cols: (usize, usize),
    /// Max abs error / max abs value inside the window, and the measured value it is set from.
    bound: f64,
    measured: f64,
}

/// Measured 2026-12-06 on x86-64 with AVX-512; under `qemu-x86_64 -cpu Haswell` (AVX2 only)
/// srhost's maps of these cases are the same bits. Outside its window each map is within
/// 1.2e-6 of the max (the gradients and vgg16_narrow's alpha-beta), 4.1e-6 (Lite0), 8.1e-5
/// (vgg16_bn on coffee) and 2.9e-4 (vgg16_narrow's epsilon 1e-6, whose bound is 8.5e-3).
const OUTLIERS: &[Outlier] = &[
    // VGG-16 (narrow) on coffee: ReLU or max-pool decisions over rows 186-196, columns
    // 108-141 fall the other way (a near tie that round-off decides), in the gradient and in
    // the maps that share its masks. The reference is itself sensitive there (its float32
    // and float64 maps differ by 4e-3 of the max).
    Outlier {
        map: "vgg16_narrow/coffee/gradient.npy",
        rows: (186, 196),
        cols: (108, 141),
        bound: 1e-1,
        measured: 3.49e-2,
    },
    Outlier {
        map: "vgg16_narrow/coffee/grad_x_input.npy",
        rows: (186, 196),
        cols: (108, 141),
        bound: 1e-1,
        measured: 3.71e-2,
    },
    Outlier {
        map: "vgg16_narrow/coffee/eps_1e-6.npy",
        rows: (186, 196),
        cols: (108, 141),
        bound: 1e-1,
        measured: 3.73e-2,
    },
    Outlier {
        map: "vgg16_narrow/coffee/epsilon_alpha2_beta1_flat.npy",
        rows: (186, 196),
        cols: (108, 141),
        bound: 1.2e-2,
        measured: 4.01e-3,
    },
    // VGG-16-BN (narrow) on astronaut: the same over rows 80-93, columns 142-157. The
    // reference's float32 and float64 gradients agree to 5.6e-7 there: only our float32
    // sums decide the near tie the other way.
    Outlier {
        map: "vgg16_bn_narrow/astronaut/gradient.npy",
        rows: (80, 93),
        cols: (142, 157),
        bound: 1e-1,
        measured: 3.36e-2,
    },
    Outlier {
        map: "vgg16_bn_narrow/astronaut/grad_x_input.npy",
        rows: (80, 93),
        cols: (142, 157),
        bound: 1e-1,
        measured: 3.23e-2,
    },
    // VGG-16-BN on coffee with epsilon 1e-6: no single unit; round-off amplified by near-zero
    // denominators over the upper third of the map (one pixel, at row 58, column 63, beyond
    // 1e-3). The reference's own float32 and float64 maps differ by 2.3e-4 of the max.
    Outlier {
        map: "vgg16_bn_narrow/coffee/eps_1e-6.npy",
        rows: (9, 81),
        cols: (33, 206),
        bound: 3.5e-3,
        measured: 1.16e-3,
    },
    // EfficientNet-Lite0 on coffee with epsilon-gamma-box: the same over rows 26-36,
    // columns 94-104. Zennit itself, rerun on this machine by scripts/make_golden_fixtures.py,
    // differs from the committed map by 4.5e-3 (its float32 map against its float64 one: the
    // same 4.5e-3).
    Outlier {
        map: "efficientnet_lite0/coffee/epsilon_gamma_box.npy",
        rows: (26, 36),
        cols: (94, 104),
        bound: 8e-3,
        measured: 2.73e-3,
    },
];

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Max abs error / max abs value of `want`, inside and outside the window (rows, cols) of a
/// `1 x C x H x W` map; infinite when a value is not finite.
fn windowed_err(got: &Tensor, want: &Tensor, o: &Outlier) -> (f64, f64) {
    let s = want.shape();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    let scale = max_abs(&want.data().iter().map(|&v| v as f64).collect::<Vec<_>>());
    let (mut inside, mut outside) = (0f64, 0f64);
    for (i, (a, b)) in got.data().iter().zip(want.data()).enumerate() {
        let d = (*a as f64 - *b as f64).abs();
        let d = if d.is_finite() { d } else { f64::INFINITY };
        let (y, x) = ((i / w) % h, i % w);
        let here = (o.rows.0..=o.rows.1).contains(&y) && (o.cols.0..=o.cols.1).contains(&x);
        let slot = if here { &mut inside } else { &mut outside };
        *slot = slot.max(d);
    }
    (inside / scale, outside / scale)
}

/// The reference's own float32-vs-float64 difference for `model/img/file`, as a fraction of
/// the map's max (`fp64_reference` in the golden set's `relevance_stats.json`).
fn reference_round_off(model: &str, img: &str, file: &str) -> f64 {
    stats(&format!("{model}/{img}"))[file]["fp64_reference"]["max_abs_diff_over_max_abs"]
        .as_f64()
        .unwrap_or_else(|| panic!("{model}/{img}/{file}: no fp64_reference"))
}

fn stats(dir: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(golden(&format!("{dir}/relevance_stats.json"))).unwrap())
        .unwrap()
}

/// Compare `got` with the golden map `dir/file`; returns a one-line report. `seen` collects
/// the outliers compared, for [`all_outliers_compared`].
fn compare(
    got: &Tensor,
    dir: &str,
    file: &str,
    seen: &mut Vec<&'static str>,
) -> Result<String, String> {
    let want = npy_tensor(&golden(&format!("{dir}/{file}")));
    assert_eq!(got.shape(), want.shape(), "{dir}/{file}");
    let stats = stats(dir);
    let s = &stats[file];
    let conditioning = s["conditioning"].as_str().unwrap_or("ok");
    let p = pearson(got.data(), want.data());
    let max_rel = rel_max_err(got.data(), want.data());
    let l2 = rel_l2(got.data(), want.data());
    let (model, img) = dir.split_once('/').unwrap();
    let bound = MAX_ABS_REL.max(2.0 * reference_round_off(model, img, file));
    let map = format!("{dir}/{file}");
    let mut line = format!("{map}: pearson {p:.6}, max abs err / max abs {max_rel:.2e}, rel L2 {l2:.2e} ({conditioning}, bound {bound:.1e})");
    let pass = match (conditioning, OUTLIERS.iter().find(|o| o.map == map)) {
        ("ok", None) => p >= PEARSON_MIN && max_rel <= bound,
        ("ok", Some(o)) => {
            seen.push(o.map);
            let (inside, outside) = windowed_err(got, &want, o);
            line += &format!(
                "; outlier: {inside:.2e} in rows {:?} cols {:?} (bound {:.1e}, measured {:.2e}), {outside:.2e} outside",
                o.rows, o.cols, o.bound, o.measured
            );
            // Still an outlier (else the table is stale), within its window's bound, and
            // held to the map's own bound everywhere else.
            p >= PEARSON_MIN_SENSITIVE
                && inside > MAX_ABS_REL
                && inside <= o.bound
                && outside <= bound
        }
        _ => p >= PEARSON_MIN_SENSITIVE && l2 <= s["suggested_rel_l2_tolerance"].as_f64().unwrap(),
    };
    if pass {
        Ok(line)
    } else {
        Err(line)
    }
}

/// Every outlier of the maps under `prefixes` was compared.
fn all_outliers_compared(prefixes: &[&str], files: &[&str], seen: &[&str]) {
    for o in OUTLIERS {
        let ours = prefixes.iter().any(|p| o.map.starts_with(p))
            && files.iter().any(|f| o.map.ends_with(f));
        assert!(
            !ours || seen.contains(&o.map),
            "{}: a named outlier that was not compared",
            o.map
        );
    }
}

fn load(arch: &str, weights: &str, labels: Option<String>) -> Arc<dyn Model> {
    torchvision(arch, weights, labels)
}

/// Zennit routes max-pool relevance to the first maximum of a window (PyTorch's gradient);
/// our default splits ties evenly, which differs where saturated pixels make exact ties.
fn lrp(composite: &str, epsilon: f32, add: &str) -> Lrp {
    Lrp::build(LrpParams {
        composite: composite.into(),
        epsilon,
        add: add.into(),
        max_pool: "first".into(),
        ..Default::default()
    })
    .unwrap()
}

/// The maps the golden set has no reference for: Zennit's epsilon 1e-6 on Lite0 is
/// ill-conditioned (its README). (Lite0 has no `srp` map either: the paper's code is for VGG
/// and AlexNet, and the Lite0 test does not ask for one.)
const NOT_IN_THE_GOLDEN_SET: &[(&str, &str)] = &[("efficientnet_lite0", "eps_1e-6.npy")];

/// `(golden file, composite, epsilon)` of the LRP methods.
const LRP_FILES: &[(&str, &str, f32)] = &[
    ("eps_1e-6.npy", "epsilon", 1e-6),
    ("eps_0.25.npy", "epsilon", 0.25),
    ("epsilon_plus_flat.npy", "epsilon-plus-flat", 1e-6),
    (
        "epsilon_alpha2_beta1_flat.npy",
        "epsilon-alpha2-beta1-flat",
        1e-6,
    ),
    ("epsilon_gamma_box.npy", "epsilon-gamma-box", 1e-6),
];

fn run_model(
    model: &Arc<dyn Model>,
    name: &str,
    input_file: &str,
    extra: &[(&str, &str, f32)],
    add: &str,
) {
    let mut failures = vec![];
    let mut compared = 0;
    let mut seen = vec![];
    for img in ["coffee", "chelsea", "astronaut"] {
        let x = npy_tensor(&golden(&format!("inputs/{img}/{input_file}")));
        let logits = model.forward(&x).unwrap();
        let target = (0..logits.numel())
            .max_by(|&a, &b| logits.data()[a].total_cmp(&logits.data()[b]))
            .unwrap();
        let dir = format!("{name}/{img}");
        for (file, composite, eps) in LRP_FILES.iter().chain(extra) {
            // The golden set leaves out, by name, the maps it has no reference for; any other
            // missing map fails, and a left-out one that appears must be compared.
            let present = golden(&format!("{dir}/{file}")).exists();
            let left_out = NOT_IN_THE_GOLDEN_SET.contains(&(name, *file));
            assert_eq!(
                present, !left_out,
                "{dir}/{file}: present {present}, left out {left_out}"
            );
            if left_out {
                continue;
            }
            compared += 1;
            let method = lrp(composite, *eps, add);
            let e = method.explain(model, &x, &[target]).unwrap();
            match compare(&e.relevance, &dir, file, &mut seen) {
                Ok(l) => println!("{l}"),
                Err(l) => {
                    println!("FAIL {l}");
                    failures.push(l)
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let files: Vec<&str> = LRP_FILES.iter().chain(extra).map(|f| f.0).collect();
    all_outliers_compared(&[name], &files, &seen);
    let left_out = NOT_IN_THE_GOLDEN_SET
        .iter()
        .filter(|(m, _)| *m == name)
        .count();
    assert_eq!(
        compared,
        3 * (LRP_FILES.len() + extra.len() - left_out),
        "{name}: maps compared"
    );
}

#[test]
fn lrp_matches_zennit_on_vgg16_narrow() {
    let m = load(
        "vgg16",
        &golden("models/vgg16_narrow.safetensors")
            .display()
            .to_string(),
        Some(labels10()),
    );
    run_model(
        &m,
        "vgg16_narrow",
        "input_imagenet.npy",
        &[("srp.npy", "srp", 0.0)],
        "proportional",
    );
}

#[test]
fn lrp_matches_zennit_on_vgg16_bn_narrow() {
    let m = load(
        "vgg16_bn",
        &golden("models/vgg16_bn_narrow.safetensors")
            .display()
            .to_string(),
        Some(labels10()),
    );
    run_model(
        &m,
        "vgg16_bn_narrow",
        "input_imagenet.npy",
        &[("srp.npy", "srp", 0.0)],
        "proportional",
    );
}

#[test]
fn lrp_matches_zennit_on_alexnet_narrow() {
    let m = load(
        "alexnet",
        &golden("models/alexnet_narrow.safetensors")
            .display()
            .to_string(),
        Some(labels10()),
    );
    run_model(
        &m,
        "alexnet_narrow",
        "input_imagenet.npy",
        &[("srp.npy", "srp", 0.0)],
        "proportional",
    );
}

#[test]
fn lrp_matches_zennit_on_efficientnet_lite0_with_copied_adds() {
    // Zennit has no rule for the residual adds and copies relevance to both summands;
    // add = "copy" reproduces it. (eps_1e-6 is ill-conditioned there and not in the set.)
    let m = load(
        "efficientnet_lite0",
        "assets/models/efficientnet-lite0.safetensors",
        None,
    );
    run_model(&m, "efficientnet_lite0", "input_lite.npy", &[], "copy");
}

#[test]
fn lrp_matches_zennit_on_onet() {
    let m = load("mtcnn_onet", "assets/models/mtcnn-onet.safetensors", None);
    let (mut failures, mut seen, mut compared) = (vec![], vec![], 0);
    for crop in ["astronaut_face", "coffee_center"] {
        let x = npy_tensor(&golden(&format!("mtcnn_onet/{crop}/input.npy")));
        let dir = format!("mtcnn_onet/{crop}");
        for (file, composite, eps) in LRP_FILES {
            // The face class (index 1), as in the golden set.
            let method = lrp(composite, *eps, "proportional");
            let e = method.explain(&m, &x, &[1]).unwrap();
            compared += 1;
            match compare(&e.relevance, &dir, file, &mut seen) {
                Ok(l) => println!("{l}"),
                Err(l) => {
                    println!("FAIL {l}");
                    failures.push(l)
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(compared, 2 * LRP_FILES.len(), "ONet: maps compared");
}

#[test]
fn gradient_and_gradient_x_input_match_pytorch() {
    use sr_relevance_gradient::{Gradient, GradientXInput};
    let models: Vec<(Arc<dyn Model>, &str, &str)> = vec![
        (
            load(
                "efficientnet_lite0",
                "assets/models/efficientnet-lite0.safetensors",
                None,
            ),
            "efficientnet_lite0",
            "input_lite.npy",
        ),
        (
            load(
                "vgg16",
                &golden("models/vgg16_narrow.safetensors")
                    .display()
                    .to_string(),
                Some(labels10()),
            ),
            "vgg16_narrow",
            "input_imagenet.npy",
        ),
        (
            load(
                "vgg16_bn",
                &golden("models/vgg16_bn_narrow.safetensors")
                    .display()
                    .to_string(),
                Some(labels10()),
            ),
            "vgg16_bn_narrow",
            "input_imagenet.npy",
        ),
        (
            load(
                "alexnet",
                &golden("models/alexnet_narrow.safetensors")
                    .display()
                    .to_string(),
                Some(labels10()),
            ),
            "alexnet_narrow",
            "input_imagenet.npy",
        ),
    ];
    let (g, gx) = (
        Gradient::build(Default::default()).unwrap(),
        GradientXInput::build(Default::default()).unwrap(),
    );
    let (mut failures, mut seen, mut compared) = (vec![], vec![], 0);
    let mut check = |r: Result<String, String>| {
        compared += 1;
        match r {
            Ok(l) => println!("{l}"),
            Err(l) => {
                println!("FAIL {l}");
                failures.push(l)
            }
        }
    };
    for (m, name, input) in &models {
        for img in ["coffee", "chelsea", "astronaut"] {
            let x = npy_tensor(&golden(&format!("inputs/{img}/{input}")));
            let logits = m.forward(&x).unwrap();
            let t = (0..logits.numel())
                .max_by(|&a, &b| logits.data()[a].total_cmp(&logits.data()[b]))
                .unwrap();
            let dir = format!("{name}/{img}");
            check(compare(
                &g.explain(m, &x, &[t]).unwrap().relevance,
                &dir,
                "gradient.npy",
                &mut seen,
            ));
            check(compare(
                &gx.explain(m, &x, &[t]).unwrap().relevance,
                &dir,
                "grad_x_input.npy",
                &mut seen,
            ));
        }
    }
    let onet = load("mtcnn_onet", "assets/models/mtcnn-onet.safetensors", None);
    for crop in ["astronaut_face", "coffee_center"] {
        let x = npy_tensor(&golden(&format!("mtcnn_onet/{crop}/input.npy")));
        let dir = format!("mtcnn_onet/{crop}");
        check(compare(
            &g.explain(&onet, &x, &[1]).unwrap().relevance,
            &dir,
            "gradient.npy",
            &mut seen,
        ));
        check(compare(
            &gx.explain(&onet, &x, &[1]).unwrap().relevance,
            &dir,
            "grad_x_input.npy",
            &mut seen,
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Four classifiers on three images and ONet on two crops, two maps each.
    assert_eq!(compared, 2 * (4 * 3 + 2), "gradient maps compared");
    all_outliers_compared(
        &[
            "efficientnet_lite0",
            "vgg16_narrow",
            "vgg16_bn_narrow",
            "alexnet_narrow",
        ],
        &["gradient.npy", "grad_x_input.npy"],
        &seen,
    );
}

#[test]
fn hand_derived_values_on_a_two_layer_net() {
    use sr_core::{Graph, Op};
    // x = [1, 2]; W1 = [[1, -1], [2, 1]], no bias -> z1 = [-1, 4]; ReLU -> h = [0, 4];
    // W2 = [[1, 0.5]] -> y = 2.
    let t = |s: Vec<usize>, v: Vec<f32>| Tensor::new(s, v).unwrap();
    let g = Graph {
        nodes: vec![
            node("input", Op::Input { shape: vec![2] }, vec![], vec![]),
            node(
                "fc1",
                Op::Linear,
                vec![0],
                vec![("weight", t(vec![2, 2], vec![1.0, -1.0, 2.0, 1.0]))],
            ),
            node("relu", Op::Relu, vec![1], vec![]),
            node(
                "fc2",
                Op::Linear,
                vec![2],
                vec![("weight", t(vec![1, 2], vec![1.0, 0.5]))],
            ),
        ],
        output: 3,
    };
    let m = shared(GraphModel(sr_nn::Executor::new(g).unwrap()));
    let x = t(vec![1, 2], vec![1.0, 2.0]);
    assert_eq!(m.forward(&x).unwrap().data(), &[2.0]);
    let run = |p: LrpParams| Lrp::build(p).unwrap().explain(&m, &x, &[0]).unwrap();
    // LRP-0 (epsilon 0): R_y = 2; R_h = [0, 4 * 0.5 * 2 / 2] = [0, 2];
    // R_x = [1 * 2 * 2 / 4, 2 * 1 * 2 / 4] = [1, 1]: conserved.
    let e = run(LrpParams {
        composite: "epsilon".into(),
        epsilon: 0.0,
        ..Default::default()
    });
    assert_eq!(e.relevance.data(), &[1.0, 1.0]);
    assert_eq!(
        (e.stats[0].relevance_sum, e.stats[0].target_score),
        (2.0, 2.0)
    );
    // Epsilon 1: R_h = [0, 2 * 2 / (2 + 1)] = [0, 4/3]; R_x = [2 * (4/3) / 5, 2 * (4/3) / 5] = [8/15, 8/15].
    let e = run(LrpParams {
        composite: "epsilon".into(),
        epsilon: 1.0,
        ..Default::default()
    });
    for v in e.relevance.data() {
        assert!((v - 8.0 / 15.0).abs() < 1e-6, "{v}");
    }
    // Alpha2-beta1 on fc1 (all contributions to the live unit are positive): R_x = 2 * [1, 1].
    let mut rules = toml::Table::new();
    rules.insert("fc1".into(), toml::Value::String("alpha2_beta1".into()));
    rules.insert("fc2".into(), toml::Value::String("epsilon(0)".into()));
    let e = run(LrpParams {
        composite: "epsilon".into(),
        epsilon: 0.0,
        rules,
        ..Default::default()
    });
    for v in e.relevance.data() {
        assert!((v - 2.0).abs() < 1e-5, "{v}");
    }
    // start = "one": R_y = 1, so every value halves.
    let e = run(LrpParams {
        composite: "epsilon".into(),
        epsilon: 0.0,
        start: "one".into(),
        ..Default::default()
    });
    assert_eq!(e.relevance.data(), &[0.5, 0.5]);
}

/// vgg16_narrow with every bias set to zero.
fn vgg16_narrow_without_biases() -> TorchvisionModel {
    let mut w =
        sr_backend_torchvision::weights::load(&golden("models/vgg16_narrow.safetensors")).unwrap();
    for (k, t) in w.iter_mut() {
        if k.ends_with(".bias") {
            *t = Tensor::zeros(t.shape().to_vec());
        }
    }
    let p = TorchvisionParams {
        arch: "vgg16".into(),
        labels: Some(labels10()),
        ..Default::default()
    };
    TorchvisionModel::from_weights(&p, &w, "vgg16_narrow without biases").unwrap()
}

#[test]
fn relevance_is_conserved_with_zero_biases_and_a_tiny_epsilon() {
    let m = shared(vgg16_narrow_without_biases());
    for img in ["coffee", "chelsea", "astronaut"] {
        let x = npy_tensor(&golden(&format!("inputs/{img}/input_imagenet.npy")));
        let l = Lrp::build(LrpParams {
            composite: "epsilon".into(),
            epsilon: 1e-9,
            ..Default::default()
        })
        .unwrap();
        let logits = m.forward(&x).unwrap();
        let t = (0..10)
            .max_by(|&a, &b| logits.data()[a].total_cmp(&logits.data()[b]))
            .unwrap();
        let s = l.explain(&m, &x, &[t]).unwrap().stats[0];
        let ratio = s.relevance_sum / s.target_score;
        println!("{img}: input relevance / target score = {ratio:.8}");
        assert!((ratio - 1.0).abs() <= 1e-4, "{img}: {ratio}");
    }
}

#[test]
fn proportional_adds_conserve_relevance_where_copies_do_not() {
    // EfficientNet-Lite0 with zero biases after the BN merge (beta = running mean = 0), the
    // epsilon rule with a tiny epsilon and activations passed through: every layer conserves,
    // so the whole net does exactly when the residual adds split in proportion.
    let mut w = sr_backend_torchvision::weights::load(std::path::Path::new(
        "assets/models/efficientnet-lite0.safetensors",
    ))
    .unwrap();
    for (k, t) in w.iter_mut() {
        if k.ends_with(".bias") || k.ends_with(".running_mean") {
            *t = Tensor::zeros(t.shape().to_vec());
        }
    }
    let m = shared(
        TorchvisionModel::from_weights(
            &TorchvisionParams::default(),
            &w,
            "efficientnet-lite0 without biases",
        )
        .unwrap(),
    );
    let x = npy_tensor(&golden("inputs/coffee/input_lite.npy"));
    let ratio = |add: &str| {
        let l = Lrp::build(LrpParams {
            composite: "epsilon".into(),
            epsilon: 1e-9,
            activation: "pass".into(),
            add: add.into(),
            ..Default::default()
        })
        .unwrap();
        let s = l.explain(&m, &x, &[967]).unwrap().stats[0];
        s.relevance_sum / s.target_score
    };
    let (prop, copy) = (ratio("proportional"), ratio("copy"));
    println!("EfficientNet-Lite0 without biases: ratio {prop:.8} (proportional), {copy:.4} (copy)");
    assert!((prop - 1.0).abs() <= 1e-3, "proportional: {prop}");
    assert!((copy - 1.0).abs() > 0.1, "copy should not conserve: {copy}");
}

#[test]
fn the_batchnorm_canonizer_leaves_the_logits_unchanged() {
    use sr_relevance_lrp::canonizers::merge_batch_norm;
    for (m, input, n_bn) in [
        (
            load(
                "vgg16_bn",
                &golden("models/vgg16_bn_narrow.safetensors")
                    .display()
                    .to_string(),
                Some(labels10()),
            ),
            "input_imagenet.npy",
            13,
        ),
        (
            load(
                "efficientnet_lite0",
                "assets/models/efficientnet-lite0.safetensors",
                None,
            ),
            "input_lite.npy",
            49,
        ),
    ] {
        let g = m.graph().unwrap();
        let merged = merge_batch_norm(&g).unwrap();
        let count = |g: &sr_core::Graph| {
            g.nodes
                .iter()
                .filter(|n| matches!(n.op, sr_core::Op::BatchNorm { .. }))
                .count()
        };
        assert_eq!((count(&g), count(&merged)), (n_bn, 0));
        let ex = sr_nn::Executor::new(merged).unwrap();
        for img in ["coffee", "chelsea", "astronaut"] {
            let x = npy_tensor(&golden(&format!("inputs/{img}/{input}")));
            let err = rel_max_err(
                ex.forward(&x).unwrap().data(),
                m.forward(&x).unwrap().data(),
            );
            println!(
                "canonized {} / {img}: rel max logit err {err:.2e}",
                m.info().name
            );
            assert!(err <= 1e-5, "{err}");
        }
    }
}

#[test]
fn a_batch_gives_the_per_sample_maps_and_threads_do_not_matter() {
    let m = load(
        "vgg16_bn",
        &golden("models/vgg16_bn_narrow.safetensors")
            .display()
            .to_string(),
        Some(labels10()),
    );
    const IMAGES: [&str; 3] = ["coffee", "chelsea", "astronaut"];
    let xs: Vec<Tensor> = IMAGES
        .iter()
        .map(|i| npy_tensor(&golden(&format!("inputs/{i}/input_imagenet.npy"))))
        .collect();
    let batch = Tensor::new(
        vec![3, 3, 224, 224],
        xs.iter().flat_map(|t| t.data().to_vec()).collect(),
    )
    .unwrap();
    // Each sample's top-1 class, as the pipeline explains. (An arbitrary class with a logit
    // near 0 magnifies the float round-off of batched vs single matrix products.)
    let targets: Vec<usize> = xs
        .iter()
        .map(|x| {
            let l = m.forward(x).unwrap();
            (0..10)
                .max_by(|&a, &b| l.data()[a].total_cmp(&l.data()[b]))
                .unwrap()
        })
        .collect();
    for (composite, file) in [
        ("epsilon-plus-flat", "epsilon_plus_flat.npy"),
        ("srp", "srp.npy"),
    ] {
        let l = Lrp::build(LrpParams {
            composite: composite.into(),
            ..Default::default()
        })
        .unwrap();
        let e = l.explain(&m, &batch, &targets).unwrap();
        let per = 3 * 224 * 224;
        for (i, x) in xs.iter().enumerate() {
            let single = l.explain(&m, x, &[targets[i]]).unwrap();
            let err = rel_max_err(
                &e.relevance.data()[i * per..(i + 1) * per],
                single.relevance.data(),
            );
            // A batched matrix product sums in another order than a single one; the map moves
            // by that round-off times its sensitivity, which the reference's own float32 vs
            // float64 difference measures (chelsea: 6.5e-4 of the max; we measured 1.0e-4).
            // The parity bound of the map.
            let bound =
                MAX_ABS_REL.max(2.0 * reference_round_off("vgg16_bn_narrow", IMAGES[i], file));
            println!(
                "{composite} sample {i}: batch vs single max err {err:.2e} (bound {bound:.1e})"
            );
            assert!(err <= bound, "{composite} sample {i}: {err:.3e}");
            assert!(
                (e.stats[i].relevance_sum - single.stats[0].relevance_sum).abs()
                    <= 1e-4 * single.stats[0].relevance_sum.abs().max(1.0)
            );
        }
        let pool = |n: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| l.explain(&m, &batch, &targets).unwrap());
        let two = pool(2).install(|| l.explain(&m, &batch, &targets).unwrap());
        assert_eq!(
            one.relevance.data(),
            two.relevance.data(),
            "{composite}: 1 vs 2 threads"
        );
    }
}

#[test]
fn a_pipeline_writes_relevance_maps_heatmaps_and_metrics_per_branch() {
    let dir = scratch("pipeline-relevance");
    let spec = |target: &str| {
        write(
            &dir,
            "p.toml",
            &format!(
                "[run]\nimages = [{}]\noutput = {}\ntarget = {target}\n\n[model]\nuse = \"candle\"\n\n[relevance.lrp]\nuse = \"lrp\"\n\n[relevance.grad]\nuse = \"gradient\"\n",
                lit(&photo("coffee.png")),
                lit(&dir.join("out"))
            ),
        )
    };
    let r = srhost(&dir, &["--pipeline", &spec("\"top1\"")]);
    assert_eq!(r.code, 0, "{r:?}");
    let rel = read_npy(&dir.join("out/coffee/relevance-lrp.npy"));
    assert_eq!(rel.shape, vec![3, 224, 224]);
    let heat = image::open(dir.join("out/coffee/relevance-lrp.png")).unwrap();
    assert_eq!((heat.width(), heat.height()), (224, 224));
    let csv = std::fs::read_to_string(dir.join("out/metrics.csv")).unwrap();
    let row = csv
        .lines()
        .find(|l| l.contains(",\"lrp\","))
        .expect("a metrics row for the lrp branch");
    let f: Vec<&str> = row.split(',').collect();
    assert_eq!((f[1], f[3]), ("\"espresso\"", "967"), "{row}");
    let (sum, score, ratio): (f64, f64, f64) = (
        f[4].parse().unwrap(),
        f[5].parse().unwrap(),
        f[6].parse().unwrap(),
    );
    // The map on disk sums to the reported relevance, and the score is espresso's logit.
    assert!(
        (rel.data.iter().sum::<f64>() - sum).abs() <= 1e-3 * sum.abs().max(1e-3),
        "{sum}"
    );
    assert!(
        (score - 11.5634).abs() < 1e-3 && (ratio - sum / score).abs() < 1e-9,
        "{row}"
    );

    // top2: one map per class, named by class index.
    let r = srhost(&dir, &["--pipeline", &spec("\"top2\""), "--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        dir.join("out/coffee/relevance-lrp-967.npy").is_file()
            && dir.join("out/coffee/relevance-grad-968.png").is_file()
    );
    // A label, and a misspelt one.
    let r = srhost(&dir, &["--pipeline", &spec("\"cup\""), "--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = srhost(&dir, &["--pipeline", &spec("\"espreso\""), "--force"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("`run.target`: no class is labelled `espreso`"),
        "{r:?}"
    );
    let r = srhost(&dir, &["check", &spec("\"top0\"")]);
    assert_eq!(r.code, 2, "{r:?}");
}

/// The backward walker folds activation masks (ReLU6 into the next convolution, ReLU into the
/// max pooling after it) and the epsilon-like rules' first division `r / stab(z)` into the
/// neighbouring passes. The same operations on the same values in the same order: the maps
/// must equal those of the unfused walker value for value, with every rule mix of the
/// composites (fusable or not) on a ReLU/max-pool net and a ReLU6/residual net, at batch 2.
#[test]
fn fused_and_unfused_backward_passes_agree_value_for_value() {
    let vgg = load(
        "vgg16",
        &golden("models/vgg16_narrow.safetensors")
            .display()
            .to_string(),
        Some(labels10()),
    );
    let lite = load(
        "efficientnet_lite0",
        "assets/models/efficientnet-lite0.safetensors",
        None,
    );
    let batch = |file: &str| {
        let xs: Vec<Tensor> = ["coffee", "astronaut"]
            .iter()
            .map(|i| npy_tensor(&golden(&format!("inputs/{i}/{file}"))))
            .collect();
        let mut dims = xs[0].shape().to_vec();
        dims[0] = 2;
        Tensor::new(dims, xs.iter().flat_map(|t| t.data().to_vec()).collect()).unwrap()
    };
    for (name, m, x) in [
        ("vgg16_narrow", &vgg, batch("input_imagenet.npy")),
        ("efficientnet_lite0", &lite, batch("input_lite.npy")),
    ] {
        for composite in [
            "epsilon",
            "srp",
            "epsilon-plus-flat",
            "epsilon-alpha2-beta1-flat",
            "epsilon-gamma-box",
        ] {
            for add in ["proportional", "copy"] {
                let build = || {
                    Lrp::build(LrpParams {
                        composite: composite.into(),
                        epsilon: 0.25,
                        add: add.into(),
                        ..Default::default()
                    })
                    .unwrap()
                };
                let fused = build().explain(m, &x, &[1, 3]).unwrap();
                let plain = build().unfused().explain(m, &x, &[1, 3]).unwrap();
                let differ = fused
                    .relevance
                    .data()
                    .iter()
                    .zip(plain.relevance.data())
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    fused.relevance.data().iter().any(|&v| v != 0.0),
                    "{name} {composite}: an all-zero map proves nothing"
                );
                assert_eq!(
                    differ, 0,
                    "{name} {composite} add={add}: {differ} values differ"
                );
            }
        }
    }
}
