//! Datasets at scale: image folders searched recursively with ImageNet-style ground truth,
//! output folders that never collide or leave `run.output`, resume that notices a changed
//! configuration, several processes on one output folder, shards + merge equal to one run (the
//! Slurm job-array script run as local processes), images whose maps are not finite, and a
//! 50,000-image report in headless Chromium.

use srhost_tests::*;
use std::path::Path;
use std::process::Command;

/// A pipeline over `images` (TOML strings) writing into `out`: the shipped model, the
/// gradient, Itti-Koch saliency at its smallest size, SSIM. `extra` goes into `[run]`.
fn spec(dir: &Path, images: &[String], out: &Path, extra: &str) -> String {
    write(
        dir,
        "p.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n{extra}\n\n[model]\nuse = \"torchvision\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[saliency]\nuse = \"itti\"\nmax_dim = 128\n",
            images.join(", "),
            lit(out)
        ),
    )
}

/// A folder of copies of the sample photos: `rel` (path under `root`) -> sample.
fn folder(root: &Path, files: &[(&str, &str)]) {
    for (rel, sample) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(photo(sample), &p).unwrap();
    }
}

fn result(out: &Path, folder: &str) -> serde_json::Value {
    let f = out.join(folder).join("result.json");
    serde_json::from_slice(&std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .unwrap()
}

#[test]
fn same_file_names_in_two_folders_get_two_output_folders() {
    let dir = scratch("ds-collide");
    folder(
        &dir.join("photos"),
        &[
            ("a/coffee.png", "coffee.png"),
            ("b/coffee.png", "chelsea.png"),
        ],
    );
    let out = dir.join("out");
    // The folder, recursively, and one of its files listed again: each image once.
    let images = [
        lit(&dir.join("photos")),
        lit(&dir.join("photos/a/coffee.png")),
    ];
    let r = srhost(&dir, &["--pipeline", &spec(&dir, &images, &out, "")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("done 2, skipped 0, failed 0"), "{r:?}");
    assert_eq!(result(&out, "a/coffee")["label"], "espresso");
    assert_ne!(result(&out, "b/coffee")["label"], "espresso");
    assert!(result(&out, "b/coffee")["image"]
        .as_str()
        .unwrap()
        .ends_with("b/coffee.png"));
    // Both in the tables, each under its own folder.
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        csv.contains(",\"a/coffee\"\n") && csv.contains(",\"b/coffee\"\n"),
        "{csv}"
    );
    // Without recursion the folder has no image of its own.
    let r = srhost(
        &dir,
        &[
            "check",
            &spec(&dir, &[lit(&dir.join("photos"))], &out, "recursive = false"),
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("holds no image"), "{r:?}");
}

#[test]
fn a_dot_dot_file_name_stays_inside_the_output_folder() {
    let dir = scratch("ds-dotdot");
    let photos = dir.join("photos");
    folder(
        &photos,
        &[("...png", "coffee.png"), ("..png", "chelsea.png")],
    );
    let out = dir.join("work/out");
    std::fs::create_dir_all(&out).unwrap();
    let images = [lit(&photos.join("...png")), lit(&photos.join("..png"))];
    let r = srhost(&dir, &["--pipeline", &spec(&dir, &images, &out, "")]);
    assert_eq!(r.code, 0, "{r:?}");
    // Nothing beside the output folder; the images got folders of their own inside it.
    let beside: Vec<String> = std::fs::read_dir(dir.join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["out"]);
    assert_eq!(result(&out, "_..")["label"], "espresso");
    assert!(out.join("_./result.json").is_file());
    // --force redoes them there, and deletes nothing outside.
    std::fs::write(dir.join("work/keep.txt"), "x").unwrap();
    let r = srhost(
        &dir,
        &["--pipeline", &spec(&dir, &images, &out, ""), "--force"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(dir.join("work/keep.txt").is_file());
}

#[test]
fn a_config_change_on_resume_redoes_the_images_and_says_why() {
    let dir = scratch("ds-resume");
    let out = dir.join("out");
    let images = [lit(&photo("coffee.png")), lit(&photo("chelsea.png"))];
    let cfg = spec(&dir, &images, &out, "");
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert_eq!(r.code, 0, "{r:?}");
    let fp = result(&out, "coffee")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fp.len(), 16);
    // The same config: nothing to do.
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert!(r.stdout.contains("done 0, skipped 2, failed 0"), "{r:?}");
    // A second branch: every image is redone, its old files replaced, and the run says so.
    let more = format!(
        "{}\n[relevance.gxi]\nuse = \"gradient-x-input\"\n",
        std::fs::read_to_string(&cfg).unwrap()
    );
    let cfg2 = write(&dir, "p2.toml", &more);
    let r = srhost(&dir, &["--pipeline", &cfg2]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("done 2, skipped 0, failed 0"), "{r:?}");
    assert!(
        r.stdout.contains("redid 2 finished images") && r.stdout.contains(&fp),
        "{r:?}"
    );
    let now = result(&out, "coffee");
    assert_ne!(now["fingerprint"], fp.as_str());
    assert_eq!(now["branches"].as_array().unwrap().len(), 2);
    // Back to one branch: the other branch's files go with its redo.
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert!(r.stdout.contains("redid 2"), "{r:?}");
    assert!(!out.join("coffee/relevance-gxi.npy").exists());
    assert!(out.join("coffee/relevance-grad.npy").exists());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        m["branches"].as_array().unwrap().len(),
        1,
        "one config per table"
    );
}

#[test]
fn two_processes_on_one_output_folder_share_the_work() {
    let dir = scratch("ds-two");
    let photos = dir.join("photos");
    let samples = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg"];
    let files: Vec<(String, &str)> = (0..8)
        .map(|i| (format!("p{i}.png"), samples[i % 4]))
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    folder(&photos, &refs);
    let out = dir.join("out");
    let cfg = spec(&dir, &[lit(&photos)], &out, "");
    let start = || {
        Command::new(srhost_bin())
            .current_dir(&dir)
            .args(["--pipeline", &cfg, "--jobs", "1"])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(start);
        let b = s.spawn(start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    // Every image made once: each process did some and skipped or left the others.
    let done = |t: &str| -> usize {
        t.split("done ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        done(&text(&a)) + done(&text(&b)),
        8,
        "{}\n{}",
        text(&a),
        text(&b)
    );
    // No temporary file or claim left, and the tables hold all 8.
    let left: Vec<String> = files_in(&out)
        .into_iter()
        .filter(|f| f.contains(".tmp-") || f.ends_with(".srhost.lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8, "{csv}");
}

#[test]
fn four_shards_from_the_slurm_script_and_a_merge_equal_one_run() {
    let dir = scratch("ds-shards");
    let photos = dir.join("photos");
    let samples = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg"];
    let names: Vec<(String, &str)> = (0..6)
        .map(|i| (format!("c{}/img{i}.png", i % 2), samples[i % 4]))
        .collect();
    let refs: Vec<(&str, &str)> = names.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    folder(&photos, &refs);
    let one = dir.join("one");
    let sharded = dir.join("sharded");
    let r = srhost(
        &dir,
        &[
            "--pipeline",
            &spec(&dir, &[lit(&photos)], &one, "labels = \"folders\""),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    // The job array's 4 tasks, as concurrent local processes, each the script Slurm would run.
    let cfg = spec(&dir, &[lit(&photos)], &sharded, "labels = \"folders\"");
    let script = repo().join("scripts/slurm-array.sh");
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let (cfg, script, dir) = (cfg.clone(), script.clone(), dir.clone());
                s.spawn(move || {
                    Command::new("bash")
                        .arg(&script)
                        .current_dir(&dir)
                        .env("PIPELINE", &cfg)
                        .env("SRHOST", srhost_bin())
                        .env("SLURM_ARRAY_TASK_ID", k.to_string())
                        .env("SLURM_ARRAY_TASK_COUNT", "4")
                        .env("SLURM_CPUS_PER_TASK", "1")
                        .output()
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, o) in outs.iter().enumerate() {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "shard {k}: {text} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains(&format!("of 6 (shard {k}/4)")), "{text}");
    }
    let m = srhost(&dir, &["merge", &sharded.display().to_string()]);
    assert_eq!(m.code, 0, "{m:?}");
    assert!(m.stdout.contains("merged 6 finished images"), "{m:?}");
    assert_same_run(&one, &sharded);
    // Ground truth from the folders (c0, c1 are no ImageNet class: compared as names).
    assert_eq!(result(&sharded, "c0/img0")["truth"], "c0");
    // Merging again gives the same files.
    let before: Vec<Vec<u8>> = ["metrics.csv", "metrics.json", "report.html", "run.json"]
        .iter()
        .map(|f| std::fs::read(sharded.join(f)).unwrap())
        .collect();
    let m = srhost(&dir, &["merge", &sharded.display().to_string()]);
    assert_eq!(m.code, 0, "{m:?}");
    for (f, b) in ["metrics.csv", "metrics.json", "report.html", "run.json"]
        .iter()
        .zip(before)
    {
        assert!(std::fs::read(sharded.join(f)).unwrap() == b, "{f} changed");
    }
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sharded.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["runs"].as_array().unwrap().len(), 4);
    assert_eq!(run["images"], 6);
}

#[test]
fn imagenet_labels_by_index_wordnet_id_or_name() {
    let dir = scratch("ds-labels");
    let photos = dir.join("photos");
    // torchvision's ImageFolder layout: the folder is the class's WordNet ID.
    folder(
        &photos,
        &[
            ("n07920052/coffee.png", "coffee.png"),
            ("n02123045/chelsea.png", "chelsea.png"),
        ],
    );
    let out = dir.join("out");
    let r = srhost(
        &dir,
        &[
            "--pipeline",
            &spec(&dir, &[lit(&photos)], &out, "labels = \"folders\""),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    // n07920052 is espresso (967), n02123045 tabby (281).
    let c = result(&out, "n07920052/coffee");
    assert_eq!(
        (c["truth"].as_str(), c["truth_index"].as_u64()),
        (Some("espresso"), Some(967))
    );
    assert_eq!(c["correct"], true);
    assert_eq!(result(&out, "n02123045/chelsea")["truth"], "tabby");
    // A CSV with a header: index, WordNet ID or name columns (index first).
    for (csv, want) in [
        (
            "image,index,wnid,label\ncoffee.png,967,n07920052,espresso\n",
            "espresso",
        ),
        ("image,wnid\ncoffee.png,n07920052\n", "espresso"),
        ("image,class\ncoffee.png,cup\n", "cup"),
    ] {
        let labels = write(&dir, "labels.csv", csv);
        let cfg = spec(
            &dir,
            &[lit(&photo("coffee.png"))],
            &dir.join("out-csv"),
            &format!("labels = {}", lit(Path::new(&labels))),
        );
        let r = srhost(&dir, &["--pipeline", &cfg, "--force"]);
        assert_eq!(r.code, 0, "{csv}: {r:?}");
        let res = result(&dir.join("out-csv"), "coffee");
        assert_eq!(res["truth"], want, "{csv}");
        assert_eq!(res["correct"], want == "espresso", "{csv}");
    }
}

#[test]
fn an_image_whose_maps_are_not_finite_fails_by_name_and_the_tables_still_build() {
    // A copy of the shipped model with one weight of its first convolution set to NaN: every
    // logit and every map is NaN.
    let dir = scratch("ds-nan");
    let src = repo().join("assets/models/efficientnet-lite0.safetensors");
    let mut bytes = std::fs::read(&src).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (name, t) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, v)| *k != "__metadata__" && v["dtype"] == "F32" && k.contains("stem"))
        .unwrap_or_else(|| panic!("no stem tensor in {header}"));
    let start = t["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let weights = dir.join("nan.safetensors");
    std::fs::write(&weights, bytes).unwrap();
    let out = dir.join("out");
    let cfg = spec(&dir, &[lit(&photo("coffee.png"))], &out, "");
    let r = srhost(
        &dir,
        &[
            "--pipeline",
            &cfg,
            "--set",
            &format!("model.weights={:?}", weights.display().to_string()),
        ],
    );
    assert_eq!(r.code, 1, "{name}: {r:?}");
    assert!(
        r.stderr.contains("coffee.png") && r.stderr.contains("NaN"),
        "{r:?}"
    );
    assert!(!out.join("coffee/result.json").exists());
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["failed"].as_array().unwrap().len(), 1);
    assert!(out.join("metrics.csv").is_file() && out.join("report.html").is_file());
}

#[test]
fn a_50000_image_report_opens_in_chromium_one_page_at_a_time() {
    let dir = scratch("ds-50k");
    let out = dir.join("out");
    // A synthetic run: 50,000 finished images in 100 classes, one branch, no pictures on disk
    // but the first page's.
    let png = std::fs::read(photo("coffee.png")).unwrap();
    for i in 0..50_000usize {
        let folder = out.join(format!("c{:03}/img{i:05}", i % 100));
        std::fs::create_dir_all(&folder).unwrap();
        // Page 1 holds the first 50 folders in order: class c000's images.
        let first_page = i % 100 == 0;
        let outputs = if first_page { "[\"input.png\"]" } else { "[]" };
        if first_page {
            std::fs::write(folder.join("input.png"), &png).unwrap();
        }
        let r = format!(
            "{{\"image\":\"photos/{i}.png\",\"fingerprint\":\"f\",\"label\":\"l{}\",\"class_index\":1,\
             \"truth\":\"c{:03}\",\"correct\":{},\"branches\":[{{\"branch\":\"lrp\",\"target\":1,\
             \"relevance_sum\":1.0,\"target_score\":1.0,\"ratio\":1.0,\"ssim1\":0.5,\"ssim2\":{},\
             \"ssim_ratio\":{}}}],\"outputs\":{outputs},\"seconds\":{{}}}}",
            i % 7,
            i % 100,
            i % 3 == 0,
            (i % 1000) as f64 / 1000.0,
            (i % 1000) as f64 / 500.0,
        );
        std::fs::write(folder.join("result.json"), r).unwrap();
    }
    let t = std::time::Instant::now();
    let m = srhost(&dir, &["merge", &out.display().to_string()]);
    assert_eq!(m.code, 0, "{m:?}");
    println!(
        "merge of 50,000 results: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.len() < 200_000, "report.html is {} bytes", html.len());
    let url = format!("file://{}", out.join("report.html").display());
    let dom = headless(
        &dir.join("profile"),
        &["--virtual-time-budget=20000", "--dump-dom", &url],
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split('>').next())
        .unwrap_or("");
    assert!(body.contains("data-loaded=\"yes\""), "{body}");
    assert!(body.contains("data-rows=\"50000\""), "{body}");
    // One page: 50 rows, each with its model input; nothing else loaded.
    assert!(body.contains("data-images=\"50\""), "{body}");
    assert!(body.contains("data-broken=\"\""), "{body}");
    assert!(dom.contains("Page 1 of 1000"), "no pager");
    // The summaries: a row per class, the best and worst images of the branch.
    assert!(dom.contains("<table id=\"classes\">") && dom.contains("<td>c099</td>"));
    assert!(dom.contains("Best and worst images per branch"));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["classes"].as_array().unwrap().len(), 100);
    assert_eq!(metrics["correct"], serde_json::json!([16667, 50000]));
}
