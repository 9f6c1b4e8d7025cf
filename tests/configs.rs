//! Every pipeline in configs/ validates, and runs (on one photo, into a scratch folder).

use srhost_tests::*;

#[test]
fn every_config_validates() {
    let so = plugin_so("sr-plugin-example");
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let r = srhost(
            &repo(),
            &[
                "--plugin",
                &so.display().to_string(),
                "check",
                &path.display().to_string(),
            ],
        );
        assert_eq!(r.code, 0, "{}: {r:?}", path.display());
    }
}

#[test]
fn the_default_sr_pipeline_produces_relevance_sr_and_photo_saliency() {
    let dir = scratch("config-sr");
    let out = dir.join("out");
    let r = srhost(
        &repo(),
        &[
            "--pipeline",
            "configs/sr.toml",
            "--set",
            "run.images=[\"assets/images/coffee.png\"]",
            "--set",
            &format!("run.output={:?}", out.display().to_string()),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let d = out.join("coffee");
    let rel = read_npy(&d.join("relevance-lrp.npy"));
    assert_eq!(rel.shape, vec![3, 224, 224]);
    for name in ["sr-lrp.npy", "saliency-photo.npy"] {
        let m = read_npy(&d.join(name));
        assert_eq!(m.shape, vec![224, 224], "{name}");
        assert!(m.data.iter().all(|v| (0.0..=1.0).contains(v)), "{name}");
        assert_eq!(m.data.iter().cloned().fold(0.0, f64::max), 1.0, "{name}");
    }
    for name in [
        "relevance-lrp.png",
        "sr-lrp.png",
        "saliency-photo.png",
        "sr-edges-lrp.png",
        "saliency-photo-edges.png",
    ] {
        let p = image::open(d.join(name)).unwrap();
        assert_eq!((p.width(), p.height()), (224, 224), "{name}");
    }
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["label"], "espresso");
}

#[test]
fn the_frequency_tuned_example_config_runs_with_the_plugin() {
    let dir = scratch("config-ft");
    let so = plugin_so("sr-plugin-example");
    let r = srhost(
        &repo(),
        &[
            "--plugin",
            &so.display().to_string(),
            "--pipeline",
            "configs/frequency-tuned.toml",
            "--set",
            "run.images=[\"assets/images/rocket.jpg\"]",
            "--set",
            &format!("run.output={:?}", dir.join("out").display().to_string()),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(dir.join("out/rocket/saliency-photo.png").is_file());
}

#[test]
fn the_onnx_pipeline_gives_the_candle_pipelines_maps() {
    // configs/onnx.toml is configs/sr.toml with the model run by ONNX Runtime from the ONNX
    // export of the same weights: the relevance (walked on the imported ONNX graph) and the SR
    // map must be the candle backend's.
    let dir = scratch("config-onnx");
    let run = |cfg: &str, out: &str| {
        let r = srhost(
            &repo(),
            &[
                "--pipeline",
                cfg,
                "--set",
                "run.images=[\"assets/images/coffee.png\"]",
                "--set",
                &format!("run.output={:?}", dir.join(out).display().to_string()),
            ],
        );
        assert_eq!(r.code, 0, "{cfg}: {r:?}");
    };
    run("configs/sr.toml", "candle");
    run("configs/onnx.toml", "onnx");
    for file in ["relevance-lrp.npy", "sr-lrp.npy", "saliency-photo.npy"] {
        let a = read_npy(&dir.join("candle/coffee").join(file));
        let b = read_npy(&dir.join("onnx/coffee").join(file));
        assert_eq!(a.shape, b.shape, "{file}");
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.data.iter().map(|&v| v as f32).collect(),
            b.data.iter().map(|&v| v as f32).collect(),
        );
        let p = pearson(&a, &b);
        println!("{file}: candle vs onnx pearson {p:.6}");
        assert!(p >= 0.999, "{file}: pearson {p}");
    }
    let result = std::fs::read_to_string(dir.join("onnx/coffee/result.json")).unwrap();
    assert!(result.contains("espresso"), "{result}");
}
