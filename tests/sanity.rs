//! Model-parameter randomization (`[metrics] randomization`, Adebayo et al. 2018) end to end:
//! the steps go from the output layer down, every branch gets a similarity per step and the
//! Table-1 figures under the fully randomized model, the run is seeded (a rerun gives the same
//! numbers, another seed others), it works on the ONNX backend too, and the report draws the
//! curves.

use srhost_tests::*;
use std::path::Path;

fn spec(dir: &Path, out: &str, model: &str, metrics: &str) -> String {
    write(
        dir,
        &format!("{out}.toml"),
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n{model}\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n\
             [relevance.lrp]\nuse = \"lrp\"\ncomposite = \"epsilon-plus-flat\"\n\n\
             [saliency]\nuse = \"itti\"\n\n[metrics]\n{metrics}\n",
            lit(&photo("coffee.png")),
            lit(&dir.join(out))
        ),
    )
}

const LITE0: &str = "[model]\nuse = \"torchvision\"\narch = \"efficientnet_lite0\"\n\
                     weights = \"assets/models/efficientnet-lite0.safetensors\"";

fn result(dir: &Path, out: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(out).join("coffee/result.json")).unwrap())
        .unwrap()
}

#[test]
fn cascading_randomization_is_top_down_seeded_and_reported() {
    let dir = scratch("sanity-cascading");
    let m = "randomization = \"cascading\"\nrandomization_steps = 3\nseed = 5";
    for out in ["a", "b"] {
        let r = srhost(&dir, &["--pipeline", &spec(&dir, out, LITE0, m)]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let other = srhost(
        &dir,
        &[
            "--pipeline",
            &spec(&dir, "c", LITE0, &m.replace("seed = 5", "seed = 6")),
        ],
    );
    assert_eq!(other.code, 0, "{other:?}");
    let (a, b, c) = (result(&dir, "a"), result(&dir, "b"), result(&dir, "c"));
    for (i, branch) in a["branches"].as_array().unwrap().iter().enumerate() {
        let r = &branch["randomization"];
        assert_eq!(r["order"], "cascading");
        let steps = r["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{r}");
        // Top down: the classifier is in the first step, the stem in the last.
        assert!(
            steps[0].as_array().unwrap().iter().any(|n| n == "_fc"),
            "{r}"
        );
        assert!(
            steps[2]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "_conv_stem"),
            "{r}"
        );
        for key in ["ssim_relevance", "spearman", "ssim_sr"] {
            let v = json_floats(&r[key]);
            assert_eq!(v.len(), 3, "{key}: {r}");
            assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)), "{key}: {r}");
        }
        // With every learned layer permuted, the map is not the trained model's.
        let spearman = json_floats(&r["spearman"]);
        assert!(spearman[2] < 0.9, "{}: {spearman:?}", branch["branch"]);
        for key in ["ssim1", "ssim2", "ssim_ratio", "emprt", "emprt_sr"] {
            assert!(r[key].as_f64().unwrap().is_finite(), "{key}: {r}");
        }
        assert_eq!(r["samples"], 1, "the plain MPRT: {r}");
        // Seeded: the same seed the same numbers, another seed others.
        assert_eq!(r, &b["branches"][i]["randomization"]);
        assert_ne!(
            r["spearman"], c["branches"][i]["randomization"]["spearman"],
            "seed 6 gave seed 5's maps"
        );
    }
    let csv = std::fs::read_to_string(dir.join("a/metrics.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().contains("random_spearman,"),
        "{csv}"
    );
    let html = std::fs::read_to_string(dir.join("a/report.html")).unwrap();
    for id in [
        "randomization-spearman",
        "randomization-ssim_sr",
        "randomization-table1",
        "randomization-emprt",
        "dist-random_spearman-grad",
        "dist-random_emprt-lrp",
    ] {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "{id} missing from the report"
        );
    }
    // Headless Chromium loads the report and keeps the curves: a line per branch with a
    // point per step.
    let run = load_page(&dir.join("profile"), &dir.join("a/report.html"));
    assert_eq!(console_messages(&run), Vec::<String>::new());
    let dom = String::from_utf8_lossy(&run.stdout);
    let chart = dom
        .split("id=\"randomization-spearman\"")
        .nth(1)
        .and_then(|c| c.split("</svg>").next())
        .unwrap_or_else(|| panic!("no Spearman chart in the loaded page: {dom}"));
    let lines: Vec<&str> = chart
        .split("points=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{chart}");
    assert!(lines.iter().all(|p| p.split(' ').count() == 3), "{chart}");
}

#[test]
fn independent_randomization_on_an_onnx_model() {
    let dir = scratch("sanity-onnx");
    let model = format!(
        "[model]\nuse = \"onnx\"\nruntime = \"srhost\"\npath = {}\nmean = [0.498, 0.498, 0.498]\nstd = [0.502, 0.502, 0.502]",
        lit(&repo().join("assets/models/efficientnet-lite0.onnx"))
    );
    let m = "randomization = \"independent\"\nrandomization_steps = 2";
    let r = srhost(&dir, &["--pipeline", &spec(&dir, "o", &model, m)]);
    assert_eq!(r.code, 0, "{r:?}");
    let res = result(&dir, "o");
    for branch in res["branches"].as_array().unwrap() {
        let r = &branch["randomization"];
        assert_eq!(r["order"], "independent");
        assert_eq!(json_floats(&r["spearman"]).len(), 2, "{r}");
        // Independent steps keep the other layers: no fully randomized model.
        assert!(r["ssim_ratio"].is_null() && r["emprt"].is_null(), "{r}");
    }
}

#[test]
fn randomization_keys_are_checked() {
    let dir = scratch("sanity-keys");
    for (m, says) in [
        ("randomization = \"shuffle\"", "cascading"),
        (
            "randomization = \"cascading\"\nrandomization_steps = 100000",
            "randomization_steps",
        ),
        (
            "randomization = \"cascading\"\nrandomization_samples = 0",
            "randomization_samples",
        ),
        (
            "randomization = \"cascading\"\nrandomization_noise = -0.1",
            "randomization_noise",
        ),
        (
            "randomization = \"cascading\"\nrandomization_noise = nan",
            "randomization_noise",
        ),
    ] {
        let r = srhost(&dir, &["--pipeline", &spec(&dir, "k", LITE0, m)]);
        assert_eq!(r.code, 2, "{m}: {r:?}");
        assert!(r.stderr.contains(says), "{m}: {}", r.stderr);
    }
}
