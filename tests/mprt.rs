//! srhost's model-parameter randomization against Quantus 0.6.0 (Hedström et al. 2023) on a
//! small seeded CNN (tests/fixtures/mprt, made by scripts/make_mprt_fixtures.py): the same
//! layers in the same order, and the same MPRT, efficient MPRT and smooth MPRT scores. Quantus
//! re-initialises a layer from torch's generator; the fixture's model interface permutes it as
//! srhost does (written in Python from the specification), so both score the same models.

use srhost_tests::*;
use std::path::Path;

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/mprt/quantus.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// float64 histograms and logarithms on both sides, summed in another order.
const ENTROPY_TOL: f64 = 1e-12;

/// The gradients are float32 in both (srhost's executor against PyTorch's autograd, about
/// 1e-7 relative apart), so a near tie of two pixels' |gradient| may rank the other way, and
/// a value at a bin edge may fall into the next bin: Spearman and the entropy ratio to 1e-4.
const MPRT_TOL: f64 = 1e-4;

#[test]
fn discrete_entropy_matches_quantus() {
    let f = fixture();
    let cases = f["entropy_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for c in cases {
        let v = json_floats(&c["values"]);
        let bins = c["bins"].as_u64().unwrap() as usize;
        let got = sr_core::metrics::saliency::discrete_entropy(&v, bins);
        let want = c["entropy"].as_f64().unwrap();
        println!("{}: {got:.15} (Quantus {want:.15})", c["name"]);
        assert!(
            (got - want).abs() <= ENTROPY_TOL,
            "{}: {got} against Quantus's {want}",
            c["name"]
        );
    }
}

fn run(dir: &Path, out: &str, metrics: &str) -> serde_json::Value {
    let f = fixture();
    let fx = repo().join("tests/fixtures/mprt");
    let spec = write(
        dir,
        &format!("{out}.toml"),
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n\
             [model]\nuse = \"onnx\"\nruntime = \"srhost\"\npath = {}\nmean = {}\nstd = {}\nresize = 0\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[metrics]\nssim = false\n\
             randomization = \"cascading\"\nrandomization_steps = 0\nseed = {}\n{metrics}\n",
            lit(&fx.join("photo.png")),
            lit(&dir.join(out)),
            lit(&fx.join("net.onnx")),
            f["mean"],
            f["std"],
            f["seed"],
        ),
    );
    let r = srhost(dir, &["--pipeline", &spec]);
    assert_eq!(r.code, 0, "{r:?}");
    let res: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(out).join("photo/result.json")).unwrap())
            .unwrap();
    let b = &res["branches"][0];
    assert_eq!(b["target"], f["target"], "the top-1 class: {res}");
    b["randomization"].clone()
}

#[test]
fn mprt_and_efficient_mprt_match_quantus() {
    let f = fixture();
    let layers = f["layers_top_down"].as_array().unwrap();
    // The layers, top down: Quantus's order of the torch modules, and srhost's of the nodes
    // holding their weights (node indices as the fixture's permutation seeded them).
    let m = sr_backend_onnx::proto::parse(
        &std::fs::read(repo().join("tests/fixtures/mprt/net.onnx")).unwrap(),
    )
    .unwrap();
    let graph = sr_backend_onnx::import::import(&m, None, None)
        .unwrap()
        .graph;
    let ours = sr_nn::randomize::layers_top_down(&graph);
    let theirs: Vec<usize> = layers
        .iter()
        .map(|l| l["node"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        ours, theirs,
        "srhost's layers against Quantus's: {layers:?}"
    );
    for (&i, l) in ours.iter().zip(layers) {
        assert_eq!(graph.nodes[i].name, l["onnx_name"].as_str().unwrap());
    }

    let dir = scratch("mprt");
    let r = run(&dir, "plain", "");
    let steps: Vec<String> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap().to_string())
        .collect();
    let names: Vec<&str> = layers
        .iter()
        .map(|l| l["onnx_name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, names);
    let spearman = json_floats(&r["spearman"]);
    for (k, l) in layers.iter().enumerate() {
        let want = f["mprt"][l["module"].as_str().unwrap()].as_f64().unwrap();
        println!(
            "MPRT after {}: {:.9} (Quantus {want:.9})",
            l["module"], spearman[k]
        );
        assert!(
            (spearman[k] - want).abs() <= MPRT_TOL,
            "MPRT after {}: {} against Quantus's {want}",
            l["module"],
            spearman[k]
        );
    }
    let (got, want) = (r["emprt"].as_f64().unwrap(), f["emprt"].as_f64().unwrap());
    println!("eMPRT: {got:.9} (Quantus {want:.9})");
    assert!(
        (got - want).abs() <= MPRT_TOL,
        "eMPRT {got} against Quantus's {want}"
    );
}

#[test]
fn smooth_mprt_is_within_quantus_own_spread() {
    let f = fixture();
    let (samples, noise) = (&f["smooth_samples"], &f["smooth_noise"]);
    let dir = scratch("smprt");
    let r = run(
        &dir,
        "smooth",
        &format!("randomization_samples = {samples}\nrandomization_noise = {noise}"),
    );
    assert_eq!(r["samples"], *samples);
    let spearman = json_floats(&r["spearman"]);
    let by_seed = f["smprt_by_numpy_seed"].as_array().unwrap();
    for (k, l) in f["layers_top_down"].as_array().unwrap().iter().enumerate() {
        let module = l["module"].as_str().unwrap();
        let v: Vec<f64> = by_seed
            .iter()
            .map(|s| s[module].as_f64().unwrap())
            .collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt();
        // srhost's noise is its own: its score is one more draw of the same Monte-Carlo
        // estimate, so it must lie within SMOOTH_SDS of Quantus's draws' standard deviation.
        println!(
            "sMPRT after {module}: {:.4} (Quantus over {} numpy seeds: {mean:.4} +- {sd:.4})",
            spearman[k],
            v.len()
        );
        assert!(
            (spearman[k] - mean).abs() <= SMOOTH_SDS * sd,
            "sMPRT after {module}: {} against Quantus's {mean} +- {sd}",
            spearman[k]
        );
    }
}

/// Four standard deviations of Quantus's own seed-to-seed spread.
const SMOOTH_SDS: f64 = 4.0;
