//! The pipeline spec and the batch runner through the CLI: validation errors name the file,
//! key and line; exit codes; resumable, atomic, thread-count-independent batches.

use srhost_tests::*;
use std::path::{Path, PathBuf};

fn example() -> String {
    lit(&plugin_so("sr-plugin-example"))
}

/// A pipeline of `body` plus the example plugin, written to `dir/p.toml`.
fn spec(dir: &Path, body: &str) -> String {
    write(
        dir,
        "p.toml",
        &format!("{body}\n[[plugin]]\npath = {}\n", example()),
    )
}

fn run_table(dir: &Path, images: &[PathBuf]) -> String {
    let imgs: Vec<String> = images.iter().map(|p| lit(p)).collect();
    format!(
        "[run]\nimages = [{}]\noutput = {}\n",
        imgs.join(", "),
        lit(&dir.join("out"))
    )
}

#[test]
fn a_typo_in_a_stage_key_gives_the_key_path_and_line() {
    let dir = scratch("typo");
    let s = spec(
        &dir,
        &format!(
            "{}\n[saliency]\nuse = \"frequency-tuned\"\nblurr = 3\n",
            run_table(&dir, &[photo("coffee.png")])
        ),
    );
    let r = srhost(&dir, &["check", &s]);
    assert_eq!(r.code, 2, "{r:?}");
    // Line 7: [run], images, output, a blank line, [saliency], use, blurr.
    assert!(
        r.stderr.contains(&format!(
            "{s}:7: `saliency.blurr`: unknown key for saliency stage `frequency-tuned`"
        )),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("its keys: blur, color_space; did you mean `blur`?"),
        "{r:?}"
    );
}

#[test]
fn a_wrongly_typed_key_is_named_with_its_line() {
    let dir = scratch("type");
    let s = spec(
        &dir,
        &format!(
            "{}\n[saliency]\nuse = \"frequency-tuned\"\nblur = \"five\"\n",
            run_table(&dir, &[photo("coffee.png")])
        ),
    );
    let r = srhost(&dir, &["check", &s]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(
            ":7: `saliency.blur`: expected an integer (like the default 5), got a string"
        ),
        "{r:?}"
    );
}

#[test]
fn an_unknown_stage_lists_the_known_ones() {
    let dir = scratch("unknown-stage");
    let s = spec(
        &dir,
        &format!(
            "{}\n[saliency]\nuse = \"context-awar\"\n",
            run_table(&dir, &[photo("coffee.png")])
        ),
    );
    let r = srhost(&dir, &["check", &s]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains(":6: `saliency.use`: unknown saliency stage `context-awar`"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("known saliency stages: context-aware, frequency-tuned, itti"),
        "{r:?}"
    );
}

#[test]
fn a_stage_that_does_not_exist_yet_is_an_unknown_stage_not_a_placeholder() {
    let dir = scratch("no-model");
    let s = write(
        &dir,
        "p.toml",
        &format!(
            "{}\n[model]\nuse = \"no-such-backend\"\narch = \"vgg16\"\n",
            run_table(&dir, &[photo("coffee.png")])
        ),
    );
    let r = srhost(&dir, &["--pipeline", &s]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("`model.use`: unknown model stage `no-such-backend`"),
        "{r:?}"
    );
    assert!(
        !dir.join("out").exists(),
        "nothing runs before the spec is valid"
    );
}

#[test]
fn unknown_tables_and_run_keys_are_refused() {
    let dir = scratch("unknown-table");
    let s = spec(
        &dir,
        &format!(
            "{}\n[evaluat]\nmetrics = []\n",
            run_table(&dir, &[photo("coffee.png")])
        ),
    );
    let r = srhost(&dir, &["check", &s]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(":5: `evaluat`: unknown table"), "{r:?}");

    let s = spec(
        &dir,
        &format!(
            "{}outptu = \"x\"\n",
            run_table(&dir, &[photo("coffee.png")])
        ),
    );
    let r = srhost(&dir, &["check", &s]);
    assert!(
        r.stderr.contains(":4: `run.outptu`: unknown key")
            && r.stderr.contains("did you mean `output`?"),
        "{r:?}"
    );
}

#[test]
fn images_that_do_not_exist_are_named() {
    let dir = scratch("missing-images");
    let s = spec(&dir, "[run]\nimages = [\"nowhere/*.png\"]\n");
    let r = srhost(&dir, &["check", &s]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains(":2: `run.images`: the glob `nowhere/*.png` matches no file"),
        "{r:?}"
    );

    let s = spec(&dir, "[run]\nimages = [\"nowhere.png\"]\n");
    let r = srhost(&dir, &["check", &s]);
    assert!(
        r.stderr
            .contains("`run.images`: no such file or folder: `nowhere.png`"),
        "{r:?}"
    );
}

#[test]
fn a_toml_syntax_error_gives_the_line() {
    let dir = scratch("syntax");
    let s = write(&dir, "p.toml", "[run]\nimages = [\"a.png\"\n");
    let r = srhost(&dir, &["check", &s]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&format!("{s}:")) && r.stderr.contains("not valid TOML"),
        "{r:?}"
    );
}

#[test]
fn check_accepts_a_valid_pipeline_and_set_overrides_a_key() {
    let dir = scratch("check-ok");
    let s = spec(
        &dir,
        &format!(
            "{}\n[saliency]\nuse = \"frequency-tuned\"\n",
            run_table(&dir, &[photo("coffee.png")])
        ),
    );
    let r = srhost(&dir, &["check", &s]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(
            "ok (1 images; model: none; relevance branches: none; saliency: frequency-tuned"
        ),
        "{r:?}"
    );
    let r = srhost(&dir, &["check", &s, "--set", "saliency.blur=3"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = srhost(&dir, &["check", &s, "--set", "saliency.blurr=3"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("(--set): `saliency.blurr`: unknown key"),
        "{r:?}"
    );
    let r = srhost(&dir, &["check", &s, "--set", "saliency.blur"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("`saliency.blur` has no `=`"), "{r:?}");
}

#[test]
fn bad_invocations_exit_2() {
    let dir = scratch("bad-invocation");
    assert_eq!(srhost(&dir, &[]).code, 2);
    assert_eq!(srhost(&dir, &["--no-such-flag"]).code, 2);
    let r = srhost(&dir, &["--pipeline", "missing.toml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("missing.toml: cannot read the pipeline file"),
        "{r:?}"
    );
}

#[test]
fn a_rerun_skips_finished_images_and_force_redoes_them() {
    let dir = scratch("resume");
    let s = spec(
        &dir,
        &format!(
            "{}\n[saliency]\nuse = \"frequency-tuned\"\n",
            run_table(&dir, &[photo("coffee.png"), photo("rocket.jpg")])
        ),
    );
    let r = srhost(&dir, &["--pipeline", &s]);
    assert!(r.stdout.contains("done 2, skipped 0, failed 0"), "{r:?}");
    let r = srhost(&dir, &["--pipeline", &s]);
    assert!(r.stdout.contains("done 0, skipped 2, failed 0"), "{r:?}");
    // An image whose result.json is missing (an interrupted run) is redone.
    std::fs::remove_file(dir.join("out/rocket/result.json")).unwrap();
    let r = srhost(&dir, &["--pipeline", &s]);
    assert!(r.stdout.contains("done 1, skipped 1, failed 0"), "{r:?}");
    let r = srhost(&dir, &["--pipeline", &s, "--force"]);
    assert!(r.stdout.contains("done 2, skipped 0, failed 0"), "{r:?}");
    // No temporary file is left behind.
    for d in ["out", "out/coffee", "out/rocket"] {
        for e in std::fs::read_dir(dir.join(d)).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(!n.contains(".tmp-"), "{d}/{n}");
        }
    }
}

#[test]
fn a_corrupt_image_is_reported_and_skipped_and_nothing_else_is_lost() {
    let dir = scratch("corrupt");
    let bad = dir.join("broken.png");
    // A PNG signature followed by garbage.
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let s = spec(
        &dir,
        &format!(
            "{}\n[saliency]\nuse = \"frequency-tuned\"\n",
            run_table(&dir, &[bad.clone(), photo("chelsea.png")])
        ),
    );
    let r = srhost(&dir, &["--pipeline", &s]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("done 1, skipped 0, failed 1"), "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("{}: cannot decode the image", bad.display())),
        "{r:?}"
    );
    assert!(dir.join("out/chelsea/saliency-photo.npy").is_file());
}

#[test]
fn the_thread_count_does_not_change_the_outputs() {
    let images = [
        photo("coffee.png"),
        photo("chelsea.png"),
        photo("rocket.jpg"),
    ];
    let one = scratch("jobs-1");
    let two = scratch("jobs-2");
    for (dir, jobs) in [(&one, "1"), (&two, "2")] {
        let s = spec(
            dir,
            &format!(
                "{}\n[saliency]\nuse = \"frequency-tuned\"\n",
                run_table(dir, &images)
            ),
        );
        let r = srhost(dir, &["--pipeline", &s, "--jobs", jobs]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    for name in ["coffee", "chelsea", "rocket"] {
        let a = std::fs::read(one.join("out").join(name).join("saliency-photo.npy")).unwrap();
        let b = std::fs::read(two.join("out").join(name).join("saliency-photo.npy")).unwrap();
        assert!(a == b, "{name}: outputs differ between 1 and 2 threads");
    }
}

#[test]
fn a_folder_of_images_is_expanded() {
    let dir = scratch("folder");
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::copy(photo("coffee.png"), imgs.join("a.png")).unwrap();
    std::fs::copy(photo("rocket.jpg"), imgs.join("a.jpg")).unwrap();
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
    let s = spec(
        &dir,
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n[saliency]\nuse = \"frequency-tuned\"\n",
            lit(&imgs),
            lit(&dir.join("out"))
        ),
    );
    let r = srhost(&dir, &["--pipeline", &s]);
    assert!(r.stdout.contains("done 2, skipped 0, failed 0"), "{r:?}");
    // Two images share the stem `a`: their folders keep the extension.
    assert!(
        dir.join("out/a_png/saliency-photo.npy").is_file()
            && dir.join("out/a_jpg/saliency-photo.npy").is_file()
    );
}

/// `srhost explain PHOTO`: no pipeline file; the shipped model, LRP epsilon-plus-flat,
/// context-aware saliency and the panel, and the output printed per photo. Keys still take
/// `--set`; a torchvision architecture needs its weights.
#[test]
fn explain_runs_the_sr_pipeline_on_photos_without_a_pipeline_file() {
    let dir = scratch("explain");
    let out = dir.join("ex");
    let coffee = photo("coffee.png").display().to_string();
    let r = srhost(&dir, &["explain", &coffee, "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let panel = out.join("coffee/panel.png");
    assert!(
        r.stdout.contains(&format!("{coffee}: {}", panel.display())),
        "{r:?}"
    );
    for f in [
        "relevance-lrp.npy",
        "sr-lrp.npy",
        "saliency-photo.npy",
        "panel.png",
    ] {
        assert!(out.join("coffee").join(f).is_file(), "{f}");
    }
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("coffee/result.json")).unwrap()).unwrap();
    assert_eq!(result["label"], "espresso");
    // Another method, a key through --set, and a bad invocation.
    let r = srhost(
        &dir,
        &[
            "explain",
            &coffee,
            "--method",
            "gradient",
            "--out",
            out.join("g").to_str().unwrap(),
            "--set",
            "saliency.max_dim=120",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(out.join("g/coffee/sr-gradient.npy").is_file());
    let r = srhost(&dir, &["explain", &coffee, "--arch", "vgg16"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--weights"), "{r:?}");
}
