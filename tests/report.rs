//! What a run hands its users: per-image and branch metrics (SSIM ratio, AOPC), ground truth
//! from labels.csv, the panel, report.html opened in headless Chromium, `srhost compare`, and
//! a batch killed with SIGKILL that a rerun completes without losing anything.

use srhost_tests::*;
use std::path::Path;

fn spec(dir: &Path, images: &[&str], extra: &str) -> String {
    let imgs: Vec<String> = images.iter().map(|i| lit(&photo(i))).collect();
    write(
        dir,
        "p.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n{extra}\n\n[model]\nuse = \"candle\"\n\n\
             [relevance.lrp]\nuse = \"lrp\"\ncomposite = \"epsilon-plus-flat\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[saliency]\nuse = \"itti\"\n\n\
             [metrics]\naopc = true\naopc_steps = 6\ninsertion_deletion = true\n\
             insertion_deletion_steps = 4\nemd = true\n\n[render]\nuse = [\"panel\"]\n",
            imgs.join(", "),
            lit(&dir.join("out"))
        ),
    )
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("out/metrics.json")).unwrap()).unwrap()
}

#[test]
fn metrics_ground_truth_panel_and_compare() {
    let dir = scratch("report-metrics");
    // chelsea is a cat: "dog" is a wrong ground truth on purpose; coffee's is right.
    let labels = write(
        &dir,
        "labels.csv",
        "image,label\ncoffee.png,espresso\nchelsea,dog\n",
    );
    let cfg = spec(
        &dir,
        &["coffee.png", "chelsea.png"],
        &format!("labels = {}", lit(Path::new(&labels))),
    );
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert_eq!(r.code, 0, "{r:?}");
    // Two branches: the run prints the A/B table and where the report is.
    assert!(
        r.stdout.contains("SSIM2/SSIM1") && r.stdout.contains("report.html"),
        "{}",
        r.stdout
    );

    let m = metrics(&dir);
    let images = m["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for img in images {
        let name = img["image"].as_str().unwrap();
        let coffee = name.ends_with("coffee.png");
        assert_eq!(img["truth"], if coffee { "espresso" } else { "dog" });
        assert_eq!(img["correct"], coffee, "{name}");
        let random = img["aopc_random"].as_f64().unwrap();
        assert_eq!(img["aopc_random_curve"].as_array().unwrap().len(), 7);
        for b in img["branches"].as_array().unwrap() {
            let (s1, s2, q) = (
                b["ssim1"].as_f64().unwrap(),
                b["ssim2"].as_f64().unwrap(),
                b["ssim_ratio"].as_f64().unwrap(),
            );
            assert!((-1.0..=1.0).contains(&s1) && (-1.0..=1.0).contains(&s2));
            assert!((q - s2 / s1).abs() < 1e-12, "{b}");
            let curve: Vec<f64> = b["aopc_curve"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(curve.len(), 7);
            assert_eq!(curve[0], 0.0);
            let aopc = b["aopc"].as_f64().unwrap();
            assert!((aopc - curve.iter().sum::<f64>() / 7.0).abs() < 1e-9, "{b}");
            assert!(aopc.is_finite() && random.is_finite());
            // Insertion and deletion: 4 steps, 5 probabilities each. With every pixel
            // inserted the input is the photo again, as before the first deletion: the same
            // probability. Each area is the trapezoid rule over the curve.
            let curve = |k: &str| -> Vec<f64> {
                b[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            };
            let (ins, del) = (curve("insertion_curve"), curve("deletion_curve"));
            assert_eq!((ins.len(), del.len()), (5, 5), "{b}");
            assert!(
                ins.iter().chain(&del).all(|p| (0.0..=1.0).contains(p)),
                "{b}"
            );
            assert_eq!(ins[4], del[0], "{b}");
            let trapezoids = |c: &[f64]| (c.iter().sum::<f64>() - (c[0] + c[4]) / 2.0) / 4.0;
            assert!((b["insertion"].as_f64().unwrap() - trapezoids(&ins)).abs() < 1e-12);
            assert!((b["deletion"].as_f64().unwrap() - trapezoids(&del)).abs() < 1e-12);
        }
    }
    // The saliency benchmark's metrics against the photo saliency: CC2 is the correlation of
    // the written SR map with the written photo saliency (the support library's Pearson),
    // SIM in [0, 1], KL finite and >= 0.
    let folders = m["folders"].as_array().unwrap();
    for (img, folder) in images.iter().zip(folders) {
        let folder = dir.join("out").join(folder.as_str().unwrap());
        let f32s = |name: &str| -> Vec<f32> {
            read_npy(&folder.join(name))
                .data
                .iter()
                .map(|&v| v as f32)
                .collect()
        };
        let photo_saliency = f32s("saliency-photo.npy");
        for b in img["branches"].as_array().unwrap() {
            let branch = b["branch"].as_str().unwrap();
            let want = pearson(&f32s(&format!("sr-{branch}.npy")), &photo_saliency);
            let cc2 = b["cc2"].as_f64().unwrap();
            assert!(
                (cc2 - want).abs() < 1e-6,
                "{branch}: cc2 {cc2}, Pearson {want}"
            );
            // EMD of the written maps (the function itself is checked against POT).
            let sr = read_npy(&folder.join(format!("sr-{branch}.npy")));
            let sal = read_npy(&folder.join("saliency-photo.npy")).data;
            let want =
                sr_core::metrics::saliency::emd(&sr.data, &sal, sr.shape[0], sr.shape[1], 16);
            let emd2 = b["emd2"].as_f64().unwrap();
            assert!((emd2 - want).abs() < 1e-9, "{branch}: emd2 {emd2}, {want}");
            assert!(b["emd1"].as_f64().unwrap() >= 0.0, "{b}");
            for k in ["cc1", "cc2"] {
                assert!((-1.0..=1.0).contains(&b[k].as_f64().unwrap()), "{k}: {b}");
            }
            for k in ["sim1", "sim2"] {
                assert!((0.0..=1.0).contains(&b[k].as_f64().unwrap()), "{k}: {b}");
            }
            for k in ["kl1", "kl2"] {
                let v = b[k].as_f64().unwrap();
                assert!(v.is_finite() && v >= 0.0, "{k}: {b}");
            }
        }
    }
    // Means per branch, and the best marked.
    let lrp = m["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["branch"] == "lrp")
        .unwrap();
    let mean_ratio: f64 = images
        .iter()
        .map(|i| {
            i["branches"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["branch"] == "lrp")
                .unwrap()["ssim_ratio"]
                .as_f64()
                .unwrap()
        })
        .sum::<f64>()
        / 2.0;
    assert!((lrp["ssim_ratio"].as_f64().unwrap() - mean_ratio).abs() < 1e-12);
    assert!(m["best_aopc"].is_string() && m["best_ssim_ratio"].is_string());
    assert_eq!(m["correct"], serde_json::json!([1, 2]));

    // metrics.csv: a row per image and branch with the same figures.
    let csv = std::fs::read_to_string(dir.join("out/metrics.csv")).unwrap();
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    for col in [
        "truth",
        "correct",
        "ssim1",
        "ssim2",
        "ssim_ratio",
        "cc1",
        "cc2",
        "sim1",
        "sim2",
        "kl1",
        "kl2",
        "emd1",
        "emd2",
        "aopc",
        "aopc_random",
        "insertion",
        "deletion",
        "seconds_relevance",
        "seconds_sr",
    ] {
        assert!(head.contains(&col), "{col} missing from {head:?}");
    }
    assert_eq!(csv.lines().count(), 1 + 4);
    assert!(
        csv.lines()
            .any(|l| l.contains("chelsea") && l.contains(",\"dog\",false,")),
        "{csv}"
    );

    // The panel: 5 tiles wide, a row per branch, under a title.
    let panel = image::open(dir.join("out/coffee/panel.png")).unwrap();
    assert_eq!(panel.width(), 4 + 5 * (224 + 4));
    assert!(panel.height() > 2 * 224);

    // srhost compare prints the same means.
    let c = srhost(&dir, &["compare", &dir.join("out").display().to_string()]);
    assert_eq!(c.code, 0, "{c:?}");
    let line = c.stdout.lines().find(|l| l.starts_with("lrp ")).unwrap();
    assert!(line.contains(&format!("{:.4}", mean_ratio)), "{line}");
    assert!(
        c.stdout.contains("predictions matching labels: 1 of 2"),
        "{}",
        c.stdout
    );
    let bad = srhost(&dir, &["compare", &dir.display().to_string()]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("metrics.json")
            && bad.stderr.contains("output folder of a finished run"),
        "{}",
        bad.stderr
    );
}

#[test]
fn bad_labels_and_metrics_keys_are_named() {
    let dir = scratch("report-bad");
    let labels = write(&dir, "labels.csv", "coffee.png espresso\n");
    let cfg = spec(
        &dir,
        &["coffee.png"],
        &format!("labels = {}", lit(Path::new(&labels))),
    );
    let r = srhost(&dir, &["check", &cfg]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("labels.csv:1: expected `image,label`"),
        "{}",
        r.stderr
    );
    let cfg = spec(&dir, &["coffee.png"], "");
    let r = srhost(&dir, &["check", &cfg, "--set", "metrics.aopc_step=3"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("`metrics.aopc_step`: unknown key")
            && r.stderr.contains("did you mean `aopc_steps`"),
        "{}",
        r.stderr
    );
}

#[test]
fn report_html_opens_in_headless_chromium_with_every_picture() {
    let dir = scratch("report-html");
    let cfg = spec(&dir, &["coffee.png", "astronaut.png"], "");
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert_eq!(r.code, 0, "{r:?}");
    let url = format!("file://{}", dir.join("out/report.html").display());
    let run = load_page(&dir.join("profile-dom"), &dir.join("out/report.html"));
    // No console message: no script error, no failed load the page reports. The check itself
    // sees a page that logs one and throws one.
    assert_eq!(console_messages(&run), Vec::<String>::new());
    let bad = dir.join("bad.html");
    std::fs::write(
        &bad,
        "<html><body><script>console.error('boom'); undefinedFn();</script></body></html>",
    )
    .unwrap();
    let control = load_page(&dir.join("profile-bad"), &bad);
    let seen = console_messages(&control);
    assert!(
        seen.len() == 2 && seen[1].contains("Uncaught ReferenceError"),
        "{seen:?}"
    );
    let dom = String::from_utf8_lossy(&run.stdout);
    // The page's own script records, after load, how many pictures it has and which failed.
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split('>').next())
        .unwrap_or_else(|| panic!("no <body> in {dom}"));
    assert!(body.contains("data-loaded=\"yes\""), "{body}");
    // 2 images x (model input + photo saliency + 2 branches x (relevance + SR)) = 12.
    assert!(body.contains("data-images=\"12\""), "{body}");
    assert!(body.contains("data-broken=\"\""), "broken pictures: {body}");
    assert!(
        dom.contains("<table id=\"summary\">") && dom.contains("class=\"best\""),
        "the summary table is missing"
    );
    for b in ["lrp", "grad"] {
        assert!(dom.contains(&format!("<td>{b}</td>")), "no row for {b}");
        // The spread: a point per image in the SSIM1-vs-SSIM2 scatter, the insertion curve.
        let scatter = dom
            .split(&format!("id=\"scatter-{b}\""))
            .nth(1)
            .and_then(|c| c.split("</svg>").next())
            .unwrap_or_else(|| panic!("no scatter for {b}"));
        assert_eq!(scatter.matches("<circle").count(), 2, "{scatter}");
        assert!(
            dom.contains(&format!("id=\"ratio-{b}\"")),
            "no histogram for {b}"
        );
    }
    assert!(dom.contains("id=\"insertion\"") && dom.contains("id=\"deletion\""));
    // A screenshot, kept as a test artifact.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let s = headless(
        &dir.join("profile-shot"),
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    let img = image::open(&shot).unwrap();
    assert_eq!((img.width(), img.height()), (1400, 1000));
    println!("screenshot: {}", shot.display());
}

#[test]
fn a_batch_killed_with_sigkill_is_completed_by_a_rerun() {
    let dir = scratch("report-kill");
    let photos = [
        "coffee.png",
        "chelsea.png",
        "astronaut.png",
        "rocket.jpg",
        "grace_hopper.jpg",
    ];
    let cfg = spec(&dir, &photos, "");
    let out = dir.join("out");
    let mut child = std::process::Command::new(srhost_bin())
        .current_dir(&dir)
        .args(["--pipeline", &cfg, "--jobs", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first image is finished and before the last one is.
    let finished = || {
        photos
            .iter()
            .filter(|p| {
                out.join(Path::new(p).file_stem().unwrap())
                    .join("result.json")
                    .is_file()
            })
            .count()
    };
    let start = std::time::Instant::now();
    while finished() == 0 {
        assert!(
            start.elapsed().as_secs() < 300,
            "no image finished in 5 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "srhost ended before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = finished();
    assert!(
        before < photos.len(),
        "every image finished before the kill; the test needs a slower batch"
    );

    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "done {}, skipped {before}, failed 0",
            photos.len() - before
        )),
        "{}",
        r.stdout
    );
    for p in photos {
        let d = out.join(Path::new(p).file_stem().unwrap());
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("result.json")).unwrap()).unwrap();
        for o in result["outputs"].as_array().unwrap() {
            let f = d.join(o.as_str().unwrap());
            match f.extension().and_then(|e| e.to_str()) {
                Some("png") => {
                    image::open(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                }
                Some("npy") => {
                    read_npy(&f);
                }
                _ => panic!("unexpected output {}", f.display()),
            }
        }
        let temps: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(
            temps.is_empty(),
            "{}: temporary files left: {temps:?}",
            d.display()
        );
    }
    let m = metrics(&dir);
    assert_eq!(m["images"].as_array().unwrap().len(), photos.len());
}
