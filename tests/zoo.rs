//! The torchvision families whose ops the ONNX importer learnt for the model zoo: small
//! MobileNetV3, EfficientNet, RegNetY, ConvNeXt (opset 13 and 17), ShuffleNetV2 and MNASNet
//! with random weights, exported by torch (scripts/make_zoo_fixtures.py, torch and torchvision
//! from PyPI). For each: the importer's graph gives PyTorch's logits and ONNX Runtime's; LRP-0
//! with srhost's rules for the new ops (activations pass relevance, gates give it all to the
//! signal, LayerNorm holds its normalising factor) equals gradient x input of the modified
//! model that the script computes with autograd; and relevance is conserved when the biases are
//! zero.

use sr_backend_onnx::{import, proto, OnnxModel, OnnxParams};
use sr_core::graph::Op;
use sr_core::{Model, ModelStage, Relevance, RelevanceStage, Tensor};
use sr_relevance_lrp::{Lrp, LrpParams};
use srhost_tests::*;

/// (fixture, the IR ops its import must contain).
const MODELS: &[(&str, &[&str])] = &[
    ("mobilenet_v3_small", &["hard_swish", "mul", "hard_sigmoid"]),
    ("efficientnet_b0", &["silu", "mul", "sigmoid"]),
    ("regnet_y", &["mul", "sigmoid"]),
    ("convnext", &["layer_norm", "gelu"]),
    ("convnext_opset17", &["layer_norm", "gelu"]),
    ("shufflenet_v2", &["channel_shuffle", "narrow"]),
    ("mnasnet", &["global_avg_pool"]),
];
const IMAGES: &[&str] = &["coffee", "chelsea"];
/// Max abs logit error / max |logit|, the importer's graph on srhost's executor against
/// PyTorch and against ONNX Runtime.
/// (1e-5, ten times the 1.3e-6 the docs quote; measured at most 1.3e-6 here; it was 1e-4.)
const LOGIT_TOL: f64 = 1e-5;
/// LRP-0 against the autograd reference: Pearson, and max abs error / max |R|. Measured
/// (2026-12-02): Pearson >= 0.999997, errors 6.6e-6 (ShuffleNet) to 6.0e-3 (MobileNetV3 on
/// chelsea), where float32 sums meet near-zero denominators.
const LRP0_MIN_PEARSON: f64 = 0.9999;
const LRP0_TOL: f64 = 1e-2;
/// The gradient against autograd: Pearson, and max abs error / max |gradient|. Measured:
/// 1.2e-7 to 1.9e-6.
const GRADIENT_MIN_PEARSON: f64 = 0.9999;
const GRADIENT_TOL: f64 = 1e-4;
/// Sum of the input relevance / the target logit with every bias zero.
const CONSERVATION_TOL: f64 = 1e-3;

fn fixture(rel: &str) -> std::path::PathBuf {
    repo().join("tests/fixtures/zoo").join(rel)
}

/// The reference of a fixture (the opset-17 ConvNeXt shares the opset-13 one's).
fn reference(name: &str, img: &str, file: &str) -> Tensor {
    let dir = name.trim_end_matches("_opset17");
    npy_tensor(&fixture(&format!("{dir}/{img}/{file}")))
}

fn graph(name: &str) -> sr_core::Graph {
    let bytes = std::fs::read(fixture(&format!("{name}.onnx"))).unwrap();
    let m = proto::parse(&bytes).unwrap();
    import::import(&m, None, None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .graph
}

/// LRP-0 with the rules the reference implements: epsilon (-> 0) on every layer, activations
/// passing relevance, average pooling as a linear layer, max pooling to the first maximum.
fn lrp0() -> Lrp {
    Lrp::build(LrpParams {
        composite: "epsilon".into(),
        epsilon: 1e-9,
        activation: "pass".into(),
        avg_pool: "norm".into(),
        max_pool: "first".into(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn zoo_models_import_with_their_new_ops_and_give_pytorchs_logits() {
    for (name, ops) in MODELS {
        let g = graph(name);
        for op in *ops {
            assert!(
                g.nodes.iter().any(|n| n.op.name() == *op),
                "{name}: no `{op}` in the imported graph"
            );
        }
        let m = GraphModel(sr_nn::Executor::new(g).unwrap());
        for img in IMAGES {
            let got = m.forward(&golden_input(img)).unwrap();
            let want = reference(name, img, "logits.npy");
            let err = rel_max_err(got.data(), want.data());
            eprintln!("{name} {img}: executor vs PyTorch logits {err:.2e}");
            assert!(err <= LOGIT_TOL, "{name} {img}: {err}");
        }
    }
}

/// ONNX Runtime against srhost's executor, both through the `onnx` backend (`runtime =
/// "srhost"` runs the imported graph, with the same results as the executor on its own).
#[test]
fn zoo_models_agree_with_onnx_runtime() {
    let load = |name: &str, runtime: &str| {
        OnnxModel::load(OnnxParams {
            path: fixture(&format!("{name}.onnx")).display().to_string(),
            labels: Some("none".into()),
            runtime: runtime.into(),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for (name, _) in MODELS {
        let (ort, ours) = (load(name, "onnxruntime"), load(name, "srhost"));
        let exec = GraphModel(sr_nn::Executor::new(graph(name)).unwrap());
        for img in IMAGES {
            let x = golden_input(img);
            let (a, b) = (ort.forward(&x).unwrap(), ours.forward(&x).unwrap());
            assert_eq!(b.data(), exec.forward(&x).unwrap().data(), "{name} {img}");
            let err = rel_max_err(b.data(), a.data());
            eprintln!("{name} {img}: executor vs ONNX Runtime logits {err:.2e}");
            assert!(err <= LOGIT_TOL, "{name} {img}: {err}");
        }
    }
}

#[test]
fn zoo_lrp0_matches_gradient_times_input_of_the_modified_model() {
    let lrp = lrp0();
    let mut bad = vec![];
    for (name, _) in MODELS {
        let m = shared(GraphModel(sr_nn::Executor::new(graph(name)).unwrap()));
        for img in IMAGES {
            let x = golden_input(img);
            let t = top_class(&reference(name, img, "logits.npy"));
            let got = lrp.explain(&m, &x, &[t]).unwrap().relevance;
            let want = reference(name, img, "lrp0.npy");
            let (p, err) = (
                pearson(got.data(), want.data()),
                rel_max_err(got.data(), want.data()),
            );
            eprintln!("{name} {img}: LRP-0 vs autograd: Pearson {p:.7}, max abs error / max |R| {err:.2e}");
            if !(p >= LRP0_MIN_PEARSON && err <= LRP0_TOL) {
                bad.push(format!("{name} {img}: Pearson {p}, error {err}"));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Every bias-like parameter zero: layer biases, BatchNorm shifts and means, LayerNorm biases.
fn without_biases(mut g: sr_core::Graph) -> sr_core::Graph {
    for n in &mut g.nodes {
        for (k, t) in &mut n.params {
            if matches!(k.as_str(), "bias" | "running_mean") {
                *t = Tensor::new(t.shape().to_vec(), vec![0.0; t.numel()]).unwrap();
            }
        }
    }
    g
}

/// LRP-0 conserves relevance through every new op when no bias absorbs any (measured: within
/// 3.3e-5). (epsilon-plus-flat need not: its z+ rule drops the negative contributions, which
/// these nets' inputs to convolutions have after SiLU, GELU or LayerNorm; its ratios are in
/// docs/models.md.)
#[test]
fn zoo_relevance_is_conserved_without_biases() {
    let lrp = lrp0();
    let mut bad = vec![];
    for (name, _) in MODELS {
        let g = without_biases(graph(name));
        assert!(g.nodes.iter().any(|n| !matches!(n.op, Op::Input { .. })));
        let m = shared(GraphModel(sr_nn::Executor::new(g).unwrap()));
        let x = golden_input("coffee");
        let logits = m.forward(&x).unwrap();
        let t = top_class(&logits);
        let r = lrp.explain(&m, &x, &[t]).unwrap().relevance;
        let sum: f64 = r.data().iter().map(|&v| v as f64).sum();
        let ratio = sum / logits.data()[t] as f64;
        eprintln!("{name}: LRP-0 sum R / logit = {ratio:.6}");
        if !((ratio - 1.0).abs() <= CONSERVATION_TOL) {
            bad.push(format!("{name}: {ratio}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The plain gradient through the new ops (the activations' derivatives, both branches of a
/// gate, LayerNorm's full Jacobian) against PyTorch's autograd of the unmodified model.
#[test]
fn zoo_gradient_matches_autograd() {
    use sr_relevance_gradient::Gradient;
    let grad = Gradient::build(sr_core::NoParams {}).unwrap();
    let mut bad = vec![];
    for (name, _) in MODELS {
        let m = shared(GraphModel(sr_nn::Executor::new(graph(name)).unwrap()));
        let x = golden_input("coffee");
        let t = top_class(&reference(name, "coffee", "logits.npy"));
        let got = grad.explain(&m, &x, &[t]).unwrap().relevance;
        let want = reference(name, "coffee", "gradient.npy");
        let (p, err) = (
            pearson(got.data(), want.data()),
            rel_max_err(got.data(), want.data()),
        );
        eprintln!(
            "{name}: gradient vs autograd: Pearson {p:.7}, max abs error / max |g| {err:.2e}"
        );
        if !(p >= GRADIENT_MIN_PEARSON && err <= GRADIENT_TOL) {
            bad.push(format!("{name}: Pearson {p}, error {err}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Every relevance method runs on every zoo model and gives a finite, non-zero map of the
/// input's shape; DeepLIFT keeps its summation-to-delta on MNASNet, whose layers (convolutions,
/// ReLU, residual sums, the mean over H, W) all have exact rescale multipliers (measured: the
/// sum is within 1.4e-7 of f(x) - f(0), relatively).
#[test]
fn every_method_runs_on_the_zoo_and_deeplift_sums_to_delta_on_mnasnet() {
    use sr_relevance_gradient::deeplift::{DeepLift, DeepLiftParams};
    use sr_relevance_gradient::GradientXInput;
    let mut methods: Vec<(String, Box<dyn Relevance>)> = [
        "epsilon-plus-flat",
        "epsilon-alpha2-beta1-flat",
        "epsilon-gamma-box",
        "srp",
    ]
    .iter()
    .map(|c| {
        let lrp = Lrp::build(LrpParams {
            composite: c.to_string(),
            ..Default::default()
        })
        .unwrap();
        (c.to_string(), Box::new(lrp) as Box<dyn Relevance>)
    })
    .collect();
    methods.push((
        "gradient-x-input".into(),
        Box::new(GradientXInput::build(sr_core::NoParams {}).unwrap()),
    ));
    methods.push((
        "deeplift".into(),
        Box::new(DeepLift::build(DeepLiftParams::default()).unwrap()),
    ));
    let x = golden_input("coffee");
    for (name, _) in MODELS {
        let m = shared(GraphModel(sr_nn::Executor::new(graph(name)).unwrap()));
        let t = top_class(&m.forward(&x).unwrap());
        for (label, method) in &methods {
            let r = method
                .explain(&m, &x, &[t])
                .unwrap_or_else(|e| panic!("{name} {label}: {e}"))
                .relevance;
            assert_eq!(r.shape(), x.shape(), "{name} {label}");
            assert!(
                r.data().iter().all(|v| v.is_finite()) && r.data().iter().any(|&v| v != 0.0),
                "{name} {label}"
            );
        }
    }
    // Summation to delta: the zero baseline (the mean image).
    let m = shared(GraphModel(sr_nn::Executor::new(graph("mnasnet")).unwrap()));
    let t = top_class(&m.forward(&x).unwrap());
    let zero = Tensor::new(x.shape().to_vec(), vec![0.0; x.numel()]).unwrap();
    let delta = (m.forward(&x).unwrap().data()[t] - m.forward(&zero).unwrap().data()[t]) as f64;
    let r = DeepLift::build(DeepLiftParams {
        baselines: vec!["zero".into()],
        ..Default::default()
    })
    .unwrap()
    .explain(&m, &x, &[t])
    .unwrap()
    .relevance;
    let sum: f64 = r.data().iter().map(|&v| v as f64).sum();
    eprintln!("mnasnet DeepLIFT: sum {sum:.6}, f(x) - f(0) {delta:.6}");
    assert!(
        (sum - delta).abs() <= 1e-4 * delta.abs().max(1.0),
        "{sum} vs {delta}"
    );
}
