//! The bind-once architecture (issue 30) changed how relevance methods reach their model, not
//! what they compute: every map of the golden set is bit-identical to the one the code made
//! before the change.
//!
//! `tests/fixtures/bind-once/hashes.json` holds, per model, image and method, the FNV-1a hash
//! of the map's float32 bits as the previous architecture (commit f0951eb, `Relevance::explain`
//! with a per-stage model cache) computed them, on an x86-64 CPU with AVX-512. Floating-point
//! kernels may pick other instruction sequences on other CPUs, so the hashes are compared on a
//! CPU of the recorded class and the test says so where it is not one (the parity tests in
//! `relevance.rs`, `deeplift.rs` and `zoo.rs` hold on every CPU).
//!
//! `SRHOST_WRITE_HASHES=1 cargo test --test bind_once` rewrites the file (how it was made).

use sr_core::{Explainer, Model, Relevance, RelevanceStage, Request, Tensor};
use sr_relevance_gradient::deeplift::{DeepLift, DeepLiftParams};
use sr_relevance_gradient::{Gradient, GradientXInput};
use sr_relevance_lrp::{Lrp, LrpParams};
use srhost_tests::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// FNV-1a over the little-endian bytes of every value.
fn fnv1a(values: &[f32]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for v in values {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// The class of CPU the hashes were recorded on.
fn cpu_class() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "x86_64-avx512";
        }
        if std::is_x86_feature_detected!("avx2") {
            return "x86_64-avx2";
        }
    }
    "other"
}

fn load(arch: &str, weights: &str, labels: bool) -> Arc<dyn Model> {
    torchvision(arch, weights, labels.then(labels10))
}

fn methods() -> Vec<(String, Box<dyn Relevance>)> {
    let mut out: Vec<(String, Box<dyn Relevance>)> = vec![];
    for composite in [
        "epsilon",
        "epsilon-plus-flat",
        "epsilon-alpha2-beta1-flat",
        "epsilon-gamma-box",
        "srp",
    ] {
        let lrp = Lrp::build(LrpParams {
            composite: composite.into(),
            ..Default::default()
        })
        .unwrap();
        out.push((format!("lrp-{composite}"), Box::new(lrp)));
    }
    out.push((
        "gradient".into(),
        Box::new(Gradient::build(Default::default()).unwrap()),
    ));
    out.push((
        "gradient-x-input".into(),
        Box::new(GradientXInput::build(Default::default()).unwrap()),
    ));
    out.push((
        "deeplift".into(),
        Box::new(
            DeepLift::build(DeepLiftParams {
                baselines: vec!["zero".into(), "black".into()],
                ..Default::default()
            })
            .unwrap(),
        ),
    ));
    out
}

/// The map of `method` for `x` and its top-1 class, the method bound to the model once.
fn map(method: &dyn Explainer, model: &dyn Model, x: &Tensor) -> Vec<f32> {
    let logits = model.forward(x).unwrap();
    let target = (0..logits.numel())
        .max_by(|&a, &b| logits.data()[a].total_cmp(&logits.data()[b]))
        .unwrap();
    method
        .explain(&Request::new(x, &[target]))
        .unwrap()
        .relevance
        .data()
        .to_vec()
}

fn hashes() -> BTreeMap<String, String> {
    let models: Vec<(&str, Arc<dyn Model>, &str)> = vec![
        (
            "vgg16_narrow",
            load(
                "vgg16",
                &golden("models/vgg16_narrow.safetensors")
                    .display()
                    .to_string(),
                true,
            ),
            "input_imagenet.npy",
        ),
        (
            "vgg16_bn_narrow",
            load(
                "vgg16_bn",
                &golden("models/vgg16_bn_narrow.safetensors")
                    .display()
                    .to_string(),
                true,
            ),
            "input_imagenet.npy",
        ),
        (
            "alexnet_narrow",
            load(
                "alexnet",
                &golden("models/alexnet_narrow.safetensors")
                    .display()
                    .to_string(),
                true,
            ),
            "input_imagenet.npy",
        ),
        (
            "efficientnet_lite0",
            load(
                "efficientnet_lite0",
                "assets/models/efficientnet-lite0.safetensors",
                false,
            ),
            "input_lite.npy",
        ),
    ];
    let mut out = BTreeMap::new();
    for (name, model, input) in &models {
        let bound: Vec<(String, Box<dyn Explainer>)> = methods()
            .into_iter()
            .map(|(m, r)| (m, r.bind(model.clone()).unwrap()))
            .collect();
        for img in ["coffee", "chelsea", "astronaut"] {
            let x = npy_tensor(&golden(&format!("inputs/{img}/{input}")));
            for (m, method) in &bound {
                let map = map(method.as_ref(), model.as_ref(), &x);
                out.insert(format!("{name}/{img}/{m}"), fnv1a(&map));
            }
        }
    }
    out
}

#[test]
fn maps_are_bit_identical_to_the_previous_architecture() {
    let file = repo().join("tests/fixtures/bind-once/hashes.json");
    let got = hashes();
    if std::env::var_os("SRHOST_WRITE_HASHES").is_some() {
        let doc = serde_json::json!({ "cpu": cpu_class(), "maps": got });
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        return;
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let want = doc["maps"].as_object().unwrap();
    assert_eq!(want.len(), 4 * 3 * 8, "maps recorded");
    assert_eq!(got.len(), want.len(), "maps computed");
    if doc["cpu"] != cpu_class() {
        println!(
            "note: hashes recorded on {}, this CPU is {}: not compared",
            doc["cpu"],
            cpu_class()
        );
        return;
    }
    let differ: Vec<&String> = got
        .iter()
        .filter(|(k, v)| want.get(*k).and_then(|w| w.as_str()) != Some(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(differ.is_empty(), "maps that changed: {differ:?}");
}
