//! Relevance parity against Zennit 0.5.1 (LRP composites), plain PyTorch (gradient) and the
//! reference implementation of the paper's `srp` rule set, on every model, image and method of
//! the golden set (tests/fixtures/golden, made by PyTorch + Zennit; see SOURCE-README.md).
//!
//! Tolerances: Pearson correlation >= 0.999 and max abs error <= 1e-3 of the map's max abs
//! value. Files the golden set marks `sensitive` (a few ReLU or max-pool winners flip between
//! float32 and float64) are held to their suggested relative L2 tolerance instead, with the
//! same Pearson bound.
//!
//! A map cannot be pinned down more precisely than float32 round-off allows, so the max-abs
//! bound is widened to twice the map's own round-off sensitivity when that is larger:
//! - the golden set's own float32-vs-float64 difference (`fp64_reference`);
//! - measured here, only for a map that misses the strict bound: our map for the input
//!   perturbed by at most 3e-6 relative (a few ulps; the larger of two perturbations).
//!   Example: EfficientNet-Lite0 on coffee with epsilon-gamma-box moves by up to 4.5e-3 of its
//!   max under such noise, and our map differs from Zennit's by 2.7e-3 (with candle's
//!   convolution it was 4.5e-3; the summation order alone moves it this much).

use sr_backend_torchvision::{TorchvisionModel, TorchvisionParams};
use sr_core::{Model, RelevanceStage, Tensor};
use sr_relevance_lrp::{Lrp, LrpParams};
use srhost_tests::*;
use std::sync::Arc;

const PEARSON_MIN: f64 = 0.999;
const MAX_ABS_REL: f64 = 1e-3;

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Compare `got` with the golden map `dir/file`; returns a one-line report. `perturbed`
/// recomputes our map on a slightly perturbed input (see the module docs).
fn compare(
    got: &Tensor,
    dir: &str,
    file: &str,
    perturbed: &dyn Fn(usize) -> Tensor,
) -> Result<String, String> {
    let want = npy_tensor(&golden(&format!("{dir}/{file}")));
    assert_eq!(got.shape(), want.shape(), "{dir}/{file}");
    let stats: serde_json::Value = serde_json::from_slice(
        &std::fs::read(golden(&format!("{dir}/relevance_stats.json"))).unwrap(),
    )
    .unwrap();
    let s = &stats[file];
    let conditioning = s["conditioning"].as_str().unwrap_or("ok");
    let p = pearson(got.data(), want.data());
    let max_rel = rel_max_err(got.data(), want.data());
    let l2 = rel_l2(got.data(), want.data());
    let intrinsic = s["fp64_reference"]["max_abs_diff_over_max_abs"]
        .as_f64()
        .unwrap_or(0.0);
    let mut bound = MAX_ABS_REL.max(2.0 * intrinsic);
    let mut line = format!("{dir}/{file}: pearson {p:.6}, max abs err / max abs {max_rel:.2e}, rel L2 {l2:.2e} ({conditioning})");
    let pass = |bound: f64| {
        p >= PEARSON_MIN
            && match conditioning {
                "ok" => max_rel <= bound,
                _ => l2 <= s["suggested_rel_l2_tolerance"].as_f64().unwrap(),
            }
    };
    if !pass(bound) && conditioning == "ok" {
        // Two independent perturbations: one draw can miss how far round-off moves the map.
        let sensitivity = (0..2)
            .map(|k| rel_max_err(perturbed(k).data(), got.data()))
            .fold(0f64, f64::max);
        bound = bound.max(2.0 * sensitivity);
        line += &format!(", round-off sensitivity {sensitivity:.2e}");
    }
    if pass(bound) {
        Ok(line)
    } else {
        Err(line)
    }
}

/// `x` with every value scaled by 1 + j * 1e-6, j in -3..=3 (pattern 0: by index mod 7;
/// pattern 1: mod 5, shifted): at most 3e-6 relative, a few ulps of float32.
fn perturb(x: &Tensor, pattern: usize) -> Tensor {
    let (m, shift) = if pattern == 0 { (7, 3.0) } else { (5, 2.0) };
    Tensor::new(
        x.shape().to_vec(),
        x.data()
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + 1e-6 * (((i + pattern) % m) as f32 - shift)))
            .collect(),
    )
    .unwrap()
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
            match compare(&e.relevance, &dir, file, &|k| {
                method
                    .explain(model, &perturb(&x, k), &[target])
                    .unwrap()
                    .relevance
            }) {
                Ok(l) => println!("{l}"),
                Err(l) => {
                    println!("FAIL {l}");
                    failures.push(l)
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
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
    let mut failures = vec![];
    for crop in ["astronaut_face", "coffee_center"] {
        let x = npy_tensor(&golden(&format!("mtcnn_onet/{crop}/input.npy")));
        let dir = format!("mtcnn_onet/{crop}");
        for (file, composite, eps) in LRP_FILES {
            // The face class (index 1), as in the golden set.
            let method = lrp(composite, *eps, "proportional");
            let e = method.explain(&m, &x, &[1]).unwrap();
            match compare(&e.relevance, &dir, file, &|k| {
                method.explain(&m, &perturb(&x, k), &[1]).unwrap().relevance
            }) {
                Ok(l) => println!("{l}"),
                Err(l) => {
                    println!("FAIL {l}");
                    failures.push(l)
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
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
    let mut failures = vec![];
    let mut check = |r: Result<String, String>| match r {
        Ok(l) => println!("{l}"),
        Err(l) => {
            println!("FAIL {l}");
            failures.push(l)
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
                &|k| g.explain(m, &perturb(&x, k), &[t]).unwrap().relevance,
            ));
            check(compare(
                &gx.explain(m, &x, &[t]).unwrap().relevance,
                &dir,
                "grad_x_input.npy",
                &|k| gx.explain(m, &perturb(&x, k), &[t]).unwrap().relevance,
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
            &|k| g.explain(&onet, &perturb(&x, k), &[1]).unwrap().relevance,
        ));
        check(compare(
            &gx.explain(&onet, &x, &[1]).unwrap().relevance,
            &dir,
            "grad_x_input.npy",
            &|k| gx.explain(&onet, &perturb(&x, k), &[1]).unwrap().relevance,
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
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
    let xs: Vec<Tensor> = ["coffee", "chelsea", "astronaut"]
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
    for composite in ["epsilon-plus-flat", "srp"] {
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
            // by that round-off times its sensitivity (chelsea on vgg16_bn_narrow: 2.7e-4,
            // the level at which it also differs from Zennit). Within the parity tolerance.
            println!("{composite} sample {i}: batch vs single max err {err:.2e}");
            assert!(err <= MAX_ABS_REL, "{composite} sample {i}: {err:.3e}");
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
