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
//!   perturbed by at most 3e-6 relative (a few ulps). Example: EfficientNet-Lite0 on coffee
//!   with eps 0.25 has one unit whose stabilised denominator `z + 0.25 sign(z)` flips sign
//!   under such noise, which moves the map by 5.1e-2 of its max; our map differs from
//!   Zennit's by that same 5.1e-2.

use sr_backend_candle::{CandleModel, CandleParams};
use sr_core::{Model, ModelStage, Relevance, RelevanceStage, Tensor};
use sr_relevance_lrp::{Lrp, LrpParams};
use srhost_tests::*;

const PEARSON_MIN: f64 = 0.999;
const MAX_ABS_REL: f64 = 1e-3;

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (*x as f64 - ma, *y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa.sqrt() * sbb.sqrt())
}

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
    perturbed: &dyn Fn() -> Tensor,
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
        let sensitivity = rel_max_err(perturbed().data(), got.data());
        bound = bound.max(2.0 * sensitivity);
        line += &format!(", round-off sensitivity {sensitivity:.2e}");
    }
    if pass(bound) {
        Ok(line)
    } else {
        Err(line)
    }
}

/// `x` with every value scaled by 1 + k * 1e-6, k in -3..=3: a few ulps of float32.
fn perturb(x: &Tensor) -> Tensor {
    Tensor::new(
        x.shape().to_vec(),
        x.data()
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + 1e-6 * ((i % 7) as f32 - 3.0)))
            .collect(),
    )
    .unwrap()
}

fn labels10() -> String {
    write(&scratch("labels10"), "l.txt", &"c\n".repeat(10))
}

fn load(arch: &str, weights: &str, labels: Option<String>) -> CandleModel {
    CandleModel::load(CandleParams {
        arch: arch.into(),
        weights: weights.into(),
        labels,
        ..Default::default()
    })
    .unwrap()
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
    model: &CandleModel,
    name: &str,
    input_file: &str,
    extra: &[(&str, &str, f32)],
    add: &str,
) {
    let mut failures = vec![];
    for img in ["coffee", "chelsea", "astronaut"] {
        let x = npy_tensor(&golden(&format!("inputs/{img}/{input_file}")));
        let xp = perturb(&x);
        let logits = model.forward(&x).unwrap();
        let target = (0..logits.numel())
            .max_by(|&a, &b| logits.data()[a].total_cmp(&logits.data()[b]))
            .unwrap();
        let dir = format!("{name}/{img}");
        for (file, composite, eps) in LRP_FILES.iter().chain(extra) {
            if !golden(&format!("{dir}/{file}")).exists() {
                continue;
            }
            let method = lrp(composite, *eps, add);
            let e = method.explain(model, &x, &[target]).unwrap();
            match compare(&e.relevance, &dir, file, &|| {
                method.explain(model, &xp, &[target]).unwrap().relevance
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
            match compare(&e.relevance, &dir, file, &|| {
                method.explain(&m, &perturb(&x), &[1]).unwrap().relevance
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
    let models: Vec<(CandleModel, &str, &str)> = vec![
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
            let xp = perturb(&x);
            check(compare(
                &g.explain(m, &x, &[t]).unwrap().relevance,
                &dir,
                "gradient.npy",
                &|| g.explain(m, &xp, &[t]).unwrap().relevance,
            ));
            check(compare(
                &gx.explain(m, &x, &[t]).unwrap().relevance,
                &dir,
                "grad_x_input.npy",
                &|| gx.explain(m, &xp, &[t]).unwrap().relevance,
            ));
        }
    }
    let onet = load("mtcnn_onet", "assets/models/mtcnn-onet.safetensors", None);
    for crop in ["astronaut_face", "coffee_center"] {
        let x = npy_tensor(&golden(&format!("mtcnn_onet/{crop}/input.npy")));
        let dir = format!("mtcnn_onet/{crop}");
        let xp = perturb(&x);
        check(compare(
            &g.explain(&onet, &x, &[1]).unwrap().relevance,
            &dir,
            "gradient.npy",
            &|| g.explain(&onet, &xp, &[1]).unwrap().relevance,
        ));
        check(compare(
            &gx.explain(&onet, &x, &[1]).unwrap().relevance,
            &dir,
            "grad_x_input.npy",
            &|| gx.explain(&onet, &xp, &[1]).unwrap().relevance,
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
