//! `run.fixations`: point lists and fixation maps found per image, moved through the model's
//! resize and centre crop (positions derived by hand below from torchvision's rules), scored
//! with the saliency benchmark's metrics (themselves checked against pysaliency in
//! tests/saliency_metrics.rs), redone when a fixation file changes, and refused with the file
//! and line when they are wrong.

use sr_core::metrics::saliency::{auc_borji, auc_judd, auc_shuffled, nss};
use srhost_tests::*;
use std::path::Path;

fn pipeline(dir: &Path, out: &str, images: &[&str], fixations: &Path) -> String {
    let images: Vec<String> = images.iter().map(|i| lit(&photo(i))).collect();
    write(
        dir,
        &format!("{out}.toml"),
        &format!(
            "[run]\nimages = [{}]\noutput = {}\nfixations = {}\nlabels = {}\n\n\
             [model]\nuse = \"torchvision\"\narch = \"efficientnet_lite0\"\n\
             weights = \"assets/models/efficientnet-lite0.safetensors\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[saliency]\nuse = \"itti\"\n",
            images.join(", "),
            lit(&dir.join(out)),
            lit(fixations),
            lit(Path::new(&write(
                dir,
                "labels.csv",
                "image,label\ncoffee.png,espresso\nastronaut.png,suit\nchelsea.png,tabby\n"
            )))
        ),
    )
}

/// A fixation map of `w` x `h` with white pixels at `points`.
fn fixation_map(path: &Path, w: u32, h: u32, points: &[(u32, u32)]) {
    let mut img = image::GrayImage::new(w, h);
    for &(x, y) in points {
        img.put_pixel(x, y, image::Luma([255]));
    }
    img.save(path).unwrap();
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn map(path: &Path) -> Vec<f64> {
    let a = read_npy(path);
    assert_eq!(a.shape, vec![224, 224], "{}", path.display());
    a.data
}

#[test]
fn fixations_are_cropped_scored_and_rechecked() {
    let dir = scratch("fixations");
    let fx = dir.join("fix");
    std::fs::create_dir_all(&fx).unwrap();
    // coffee.png is 600 x 400: Lite0 resizes it to 384 x 256 (shorter side 256) and crops 224
    // x 224 from x = 80, y = 16; a pixel (x, y) lands at floor((x + 0.5) * 0.64) - (80, 16).
    // (300, 200) -> (112, 112); (150, 50) -> (16, 16); (449.7, 300) -> (207, 176); (10, 10)
    // and (599, 399) are cropped away.
    write(
        &fx,
        "coffee.csv",
        "x,y\n300,200\n10,10 # cropped away\n599 399\n150,50\n449.7,300\n",
    );
    let coffee_points = [(112, 112), (16, 16), (207, 176)];
    // astronaut.png is 512 x 512: resized to 256 x 256, cropped from (16, 16): (256, 256) ->
    // (112, 112), (100, 400) -> (34, 184).
    fixation_map(
        &fx.join("astronaut.png"),
        512,
        512,
        &[(256, 256), (100, 400)],
    );
    let astronaut_points = [(112, 112), (34, 184)];

    let spec = pipeline(&dir, "out", &["coffee.png", "astronaut.png"], &fx);
    let r = srhost(&repo(), &["--pipeline", &spec]);
    assert_eq!(r.code, 0, "{r:?}");

    for (name, points, negatives) in [
        // coffee's negatives: astronaut's fixations placed by their share of its photo,
        // (256, 256) -> (300, 200) -> (112, 112); (100, 400) -> (117, 312), cropped away.
        ("coffee", &coffee_points[..], vec![(112, 112)]),
        // astronaut's: coffee's five placed in 512 x 512 and cropped: (300, 200) -> (256,
        // 256) -> (112, 112); (150, 50) -> (128, 64) -> (48, 16); (449, 300) -> (383, 384)
        // -> (175, 176); the two corners are cropped away.
        (
            "astronaut",
            &astronaut_points[..],
            vec![(112, 112), (48, 16), (175, 176)],
        ),
    ] {
        let out = dir.join("out").join(name);
        let res = json(&out.join("result.json"));
        let f = &res["fixations"];
        assert_eq!(f["points"], points.len(), "{name}: {f}");
        assert_eq!(f["cropped"], if name == "coffee" { 2 } else { 0 }, "{f}");
        assert_eq!(f["shuffled_negatives"], negatives.len(), "{name}: {f}");
        assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
        let photo_sal = map(&out.join("saliency-photo.npy"));
        let sr = map(&out.join("sr-grad.npy"));
        let near = |got: &serde_json::Value, want: f64, what: &str| {
            let got = got
                .as_f64()
                .unwrap_or_else(|| panic!("{name} {what}: {got}"));
            assert!(
                (got - want).abs() < 1e-9,
                "{name} {what}: {got} against {want}"
            );
        };
        near(&f["nss"], nss(&photo_sal, 224, points), "photo NSS");
        near(
            &f["auc_judd"],
            auc_judd(&photo_sal, 224, points),
            "photo AUC-Judd",
        );
        let b = &res["branches"][0];
        near(&b["nss2"], nss(&sr, 224, points), "NSS2");
        near(&b["auc_judd2"], auc_judd(&sr, 224, points), "AUC-Judd2");
        near(&b["auc_borji2"], auc_borji(&sr, 224, points), "AUC-Borji2");
        near(
            &b["sauc2"],
            auc_shuffled(&sr, 224, points, &negatives),
            "sAUC2",
        );
        for key in ["nss1", "auc_judd1", "auc_borji1", "sauc1"] {
            assert!(
                b[key].as_f64().is_some_and(f64::is_finite),
                "{name} {key}: {b}"
            );
        }
    }
    let csv = std::fs::read_to_string(dir.join("out/metrics.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .contains(",nss1,nss2,auc_judd1,"),
        "{csv}"
    );
    // Per class (one image each here), every mean: the class's NSS2 is its image's.
    let metrics = json(&dir.join("out/metrics.json"));
    for c in metrics["classes"].as_array().unwrap() {
        let image = if c["class"] == "espresso" {
            "coffee"
        } else {
            "astronaut"
        };
        let res = json(&dir.join("out").join(image).join("result.json"));
        assert_eq!(c["branches"][0]["nss2"], res["branches"][0]["nss2"], "{c}");
    }
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    assert!(
        html.contains("<th>grad: NSS2</th>"),
        "per-class NSS2 missing"
    );
    let r = srhost(
        &repo(),
        &["compare", &dir.join("out").display().to_string()],
    );
    assert!(
        r.stdout.contains("NSS2") && r.stdout.contains("sAUC2"),
        "{}",
        r.stdout
    );

    // A changed fixation file redoes its image (the configuration is the same), and only it.
    write(&fx, "coffee.csv", "300,200\n150,50\n");
    let r = srhost(&repo(), &["--pipeline", &spec]);
    assert_eq!(r.code, 0, "{r:?}");
    let runs = json(&dir.join("out/run.json"))["runs"].clone();
    let run = runs.as_array().unwrap().last().unwrap();
    let redone = run["redone"].as_array().unwrap();
    assert_eq!(redone.len(), 1, "{run}");
    assert!(
        redone[0]["folder"].as_str().unwrap().contains("coffee"),
        "{run}"
    );
    assert!(
        redone[0]["old_fingerprint"]
            .as_str()
            .unwrap()
            .contains("fixation file changed"),
        "{run}"
    );
    assert_eq!(run["skipped"], 1, "{run}");
    let res = json(&dir.join("out/coffee/result.json"));
    assert_eq!(res["fixations"]["points"], 2, "{res}");
}

#[test]
fn bad_fixations_name_the_file_and_line() {
    let dir = scratch("fixations-bad");
    let fx = dir.join("fix");
    std::fs::create_dir_all(&fx).unwrap();
    // A point outside the photo.
    write(&fx, "coffee.csv", "300,200\n600,10\n");
    let r = srhost(
        &repo(),
        &["--pipeline", &pipeline(&dir, "a", &["coffee.png"], &fx)],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("coffee.csv line 2") && r.stderr.contains("outside the 600x400 photo"),
        "{}",
        r.stderr
    );
    // A fixation map of another size.
    std::fs::remove_file(fx.join("coffee.csv")).unwrap();
    fixation_map(&fx.join("coffee.png"), 300, 200, &[(1, 1)]);
    let r = srhost(
        &repo(),
        &["--pipeline", &pipeline(&dir, "b", &["coffee.png"], &fx)],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("300x200") && r.stderr.contains("photo's size"),
        "{}",
        r.stderr
    );
    // No file for the image: where srhost looked.
    let r = srhost(
        &repo(),
        &["--pipeline", &pipeline(&dir, "c", &["chelsea.png"], &fx)],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("no fixations for") && r.stderr.contains("chelsea.csv"),
        "{}",
        r.stderr
    );
    // Not a folder: a spec error naming the key.
    let r = srhost(
        &repo(),
        &[
            "--pipeline",
            &pipeline(&dir, "d", &["coffee.png"], &dir.join("nowhere")),
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("run.fixations"), "{}", r.stderr);
}
