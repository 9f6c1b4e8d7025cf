//! Every pipeline in configs/ validates, and runs (on one or two photos, into a scratch
//! folder; the paper-study configs on the narrow fixture weights where real ones cannot ship).

use srhost_tests::*;

/// `srhost args` in the repository root with extra environment variables.
fn srhost_env(args: &[&str], env: &[(&str, String)]) -> Run {
    let mut cmd = std::process::Command::new(srhost_bin());
    cmd.current_dir(repo())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.as_str())));
    run_measured(cmd)
}

#[test]
fn every_config_validates() {
    let so = plugin_so("sr-plugin-example");
    // The configs that take user weights from the environment: check makes sure the files
    // exist, without opening them.
    let dir = scratch("configs-validate");
    let file = |name: &str| write(&dir, name, "");
    let env = [
        ("SRHOST_WEIGHTS", file("vgg16-397923af.pth")),
        ("SRHOST_VGG_FACE", file("vgg_face.safetensors")),
        ("SRHOST_VGG_FACE_NAMES", file("names.txt")),
        ("SRHOST_VIT", file("vit.onnx")),
    ];
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let r = srhost_env(
            &[
                "--plugin",
                &so.display().to_string(),
                "check",
                &path.display().to_string(),
            ],
            &env,
        );
        assert_eq!(r.code, 0, "{}: {r:?}", path.display());
        n += 1;
    }
    assert!(n >= 9, "only {n} configs found");
    // Without the variable, the error names the key and the variable.
    let r = srhost_env(&["check", "configs/alexnet-vs-vgg16.toml"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("`model.weights`") && r.stderr.contains("`SRHOST_WEIGHTS` is not set"),
        "{}",
        r.stderr
    );
}

fn json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[test]
fn the_paper_study_configs_run() {
    let dir = scratch("config-studies");
    let out = |name: &str| format!("run.output={:?}", dir.join(name).display().to_string());
    let one = "run.images=[\"assets/images/coffee.png\"]";

    // Table 1: the SSIM ratio per image and its mean.
    let r = srhost(
        &repo(),
        &[
            "--pipeline",
            "configs/table1-ssim.toml",
            "--set",
            one,
            "--set",
            &out("table1"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let m = json(&dir.join("table1/metrics.json"));
    assert!(m["branches"][0]["ssim_ratio"].as_f64().unwrap().is_finite());

    // Sec. 4.1 on the narrow fixture weights: one run per model, then compare.
    let labels = write(&dir, "labels10.txt", &"c\n".repeat(10));
    for arch in ["alexnet", "vgg16"] {
        let env = [
            ("SRHOST_ARCH", arch.to_string()),
            (
                "SRHOST_WEIGHTS",
                golden(&format!("models/{arch}_narrow.safetensors"))
                    .display()
                    .to_string(),
            ),
            ("SRHOST_LABELS", labels.clone()),
            ("SRHOST_IMAGES", photo("coffee.png").display().to_string()),
            ("SRHOST_OUT", dir.join("a-vs-v").display().to_string()),
        ];
        let r = srhost_env(&["--pipeline", "configs/alexnet-vs-vgg16.toml"], &env);
        assert_eq!(r.code, 0, "{arch}: {r:?}");
        assert!(dir
            .join(format!("a-vs-v/{arch}/coffee/panel.png"))
            .is_file());
    }
    let (a, v) = (dir.join("a-vs-v/alexnet"), dir.join("a-vs-v/vgg16"));
    let r = srhost(
        &repo(),
        &[
            "compare",
            &a.display().to_string(),
            &v.display().to_string(),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("coffee"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    let s: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!((-1.0..=1.0).contains(&s) && s < 1.0, "{line}");

    // Sec. 4.3: the ImageNet model and ONet on the face crops, compared at ONet's 48 x 48.
    let face = "run.images=[\"assets/images/faces/astronaut_face.png\"]";
    let r = srhost(
        &repo(),
        &[
            "--pipeline",
            "configs/face-vs-object.toml",
            "--set",
            face,
            "--set",
            &out("faces/object"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let env = [
        ("SRHOST_FACE_ARCH", "mtcnn_onet".to_string()),
        (
            "SRHOST_FACE_WEIGHTS",
            "assets/models/mtcnn-onet.safetensors".to_string(),
        ),
    ];
    let r = srhost_env(
        &[
            "--pipeline",
            "configs/face-vs-object.toml",
            "--set",
            face,
            "--set",
            &out("faces/onet"),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let res = json(&dir.join("faces/onet/astronaut_face/result.json"));
    assert_eq!(res["label"], "face");
    assert_eq!(
        read_npy(&dir.join("faces/onet/astronaut_face/sr-lrp.npy")).shape,
        vec![48, 48]
    );
    let r = srhost(
        &repo(),
        &[
            "compare",
            &dir.join("faces/object").display().to_string(),
            &dir.join("faces/onet").display().to_string(),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("astronaut_face") && r.stdout.contains("mean SSIM"),
        "{}",
        r.stdout
    );

    // VGG-Face's config, on the narrow VGG-16 fixture (the same topology; 10 "identities").
    let env = [
        (
            "SRHOST_VGG_FACE",
            golden("models/vgg16_narrow.safetensors")
                .display()
                .to_string(),
        ),
        ("SRHOST_VGG_FACE_NAMES", labels.clone()),
    ];
    let r = srhost_env(
        &[
            "--pipeline",
            "configs/vgg-face.toml",
            "--set",
            face,
            "--set",
            &out("faces/vgg_face"),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(dir
        .join("faces/vgg_face/astronaut_face/panel.png")
        .is_file());

    // Sec. 4.2: only the misclassified photo gets maps.
    let two = "run.images=[\"assets/images/coffee.png\", \"assets/images/chelsea.png\"]";
    let r = srhost(
        &repo(),
        &[
            "--pipeline",
            "configs/misclassified.toml",
            "--set",
            two,
            "--set",
            &out("wrong"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let chelsea = json(&dir.join("wrong/chelsea/result.json"));
    assert_eq!(
        (
            chelsea["truth"].as_str(),
            chelsea["correct"].as_bool(),
            chelsea["selected"].as_bool()
        ),
        (Some("tabby"), Some(false), Some(true))
    );
    assert!(
        dir.join("wrong/chelsea/panel.png").is_file()
            && dir.join("wrong/chelsea/sr-lrp.npy").is_file()
    );
    let coffee = json(&dir.join("wrong/coffee/result.json"));
    assert_eq!(
        (coffee["correct"].as_bool(), coffee["selected"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(!dir.join("wrong/coffee/relevance-lrp.npy").exists());

    // The A/B comparison, with fewer perturbation steps.
    let r = srhost(
        &repo(),
        &[
            "--pipeline",
            "configs/compare-relevance.toml",
            "--set",
            one,
            "--set",
            &out("ab"),
            "--set",
            "metrics.aopc_steps=4",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let m = json(&dir.join("ab/metrics.json"));
    assert_eq!(m["branches"].as_array().unwrap().len(), 5);
    assert!(dir.join("ab/report.html").is_file());
}

/// configs/vit.toml on the small exported ViT of tests/fixtures/transformers (the default
/// dynamo export, its weights in a data file beside it): both branches give a 224 x 224 SR map
/// and its overlay on the photo's edges.
#[test]
fn the_vit_config_runs_attnlrp_and_cp_lrp_on_an_exported_vit() {
    let dir = scratch("config-vit");
    let env = [
        (
            "SRHOST_VIT",
            repo()
                .join("tests/fixtures/transformers/vit_dynamo.onnx")
                .display()
                .to_string(),
        ),
        ("SRHOST_LABELS", "none".to_string()),
        ("SRHOST_IMAGES", photo("coffee.png").display().to_string()),
        ("SRHOST_OUT", dir.join("out").display().to_string()),
    ];
    let r = srhost_env(&["--pipeline", "configs/vit.toml"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    let d = dir.join("out/coffee");
    for branch in ["attnlrp", "cp-lrp"] {
        let m = read_npy(&d.join(format!("sr-{branch}.npy")));
        assert_eq!(m.shape, vec![224, 224], "{branch}");
        let rel = read_npy(&d.join(format!("relevance-{branch}.npy")));
        assert_eq!(rel.shape, vec![3, 224, 224], "{branch}");
        assert!(rel.data.iter().any(|&v| v != 0.0), "{branch}");
        assert!(
            d.join(format!("sr-edges-{branch}.png")).is_file(),
            "{branch}"
        );
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
fn the_onnx_pipeline_gives_the_torchvision_pipelines_maps() {
    // configs/onnx.toml is configs/sr.toml with the model run by ONNX Runtime from the ONNX
    // export of the same weights: the relevance (walked on the imported ONNX graph) and the SR
    // map must be the torchvision backend's.
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
    run("configs/sr.toml", "torchvision");
    run("configs/onnx.toml", "onnx");
    for file in ["relevance-lrp.npy", "sr-lrp.npy", "saliency-photo.npy"] {
        let a = read_npy(&dir.join("torchvision/coffee").join(file));
        let b = read_npy(&dir.join("onnx/coffee").join(file));
        assert_eq!(a.shape, b.shape, "{file}");
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.data.iter().map(|&v| v as f32).collect(),
            b.data.iter().map(|&v| v as f32).collect(),
        );
        let p = pearson(&a, &b);
        println!("{file}: torchvision vs onnx pearson {p:.6}");
        assert!(p >= 0.999, "{file}: pearson {p}");
    }
    let result = std::fs::read_to_string(dir.join("onnx/coffee/result.json")).unwrap();
    assert!(result.contains("espresso"), "{result}");
}

#[test]
fn the_old_backend_name_candle_is_the_torchvision_backend() {
    // `model.candle` was renamed `model.torchvision`; configs written for the old name run
    // unchanged and give the same predictions.
    let classify = |backend: &str| {
        let r = srhost(
            &repo(),
            &[
                "classify",
                "--json",
                "--set",
                &format!("model.use={backend}"),
                "assets/images/coffee.png",
            ],
        );
        assert_eq!(r.code, 0, "{backend}: {r:?}");
        r.stdout
    };
    let new = classify("torchvision");
    assert!(new.contains("espresso"), "{new}");
    assert_eq!(classify("candle"), new);
}
