//! Plugins loaded from their `.so`: the example plugin end to end, and deliberately broken
//! plugins, each refused with an error that names the file while the others still load.

use srhost_tests::*;
use std::path::Path;

fn example_pipeline(dir: &Path, images: &[&str], extra: &str) -> String {
    let imgs: Vec<String> = images.iter().map(|i| lit(&photo(i))).collect();
    write(
        dir,
        "pipeline.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n[saliency]\nuse = \"frequency-tuned\"\n{extra}\n[[plugin]]\npath = {}\n",
            imgs.join(", "),
            lit(&dir.join("out")),
            lit(&plugin_so("sr-plugin-example")),
        ),
    )
}

#[test]
fn example_plugin_loads_from_its_so_and_runs_on_a_photo() {
    let dir = scratch("example-run");
    let spec = example_pipeline(&dir, &["coffee.png"], "");
    let r = srhost(&dir, &["--pipeline", &spec]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("done 1, skipped 0, failed 0"), "{r:?}");
    // coffee.png is 600 x 400: the map is at the photo's size (no model), in [0, 1].
    let map = read_npy(&dir.join("out/coffee/saliency-photo.npy"));
    assert_eq!(map.shape, vec![400, 600]);
    assert!(map.data.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(map.data.iter().cloned().fold(0.0, f64::max), 1.0);
    // The cup (centre) stands out from the table at the top-left corner.
    let at = |x: usize, y: usize| map.data[y * 600 + x];
    assert!(
        at(300, 200) > at(10, 10),
        "centre {} vs corner {}",
        at(300, 200),
        at(10, 10)
    );
    let png = image::open(dir.join("out/coffee/saliency-photo.png")).unwrap();
    assert_eq!((png.width(), png.height()), (600, 400));
    assert!(dir.join("out/run.json").is_file() && dir.join("out/coffee/result.json").is_file());
}

#[test]
fn plugins_command_lists_the_example_plugin_from_its_so() {
    let so = plugin_so("sr-plugin-example");
    let r = srhost(&repo(), &["--plugin", &so.display().to_string(), "plugins"]);
    assert_eq!(r.code, 0, "{r:?}");
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("frequency-tuned"))
        .expect("stage listed");
    assert!(line.starts_with("saliency"), "{line}");
    assert!(
        line.contains(&so.display().to_string()) && line.contains("sr-plugin-example 0.1.0"),
        "{line}"
    );
    assert!(r.stdout.contains("blur = 5"), "{r:?}");
    assert!(r.stdout.contains("color_space = \"lab\""), "{r:?}");
}

/// Load `broken` beside the example plugin: `broken` is refused with an error naming it, the
/// example still loads, and the command exits 2.
fn load_beside_example(broken: &Path) -> Run {
    let good = plugin_so("sr-plugin-example");
    let r = srhost(
        &repo(),
        &[
            "--plugin",
            &broken.display().to_string(),
            "--plugin",
            &good.display().to_string(),
            "plugins",
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains("frequency-tuned"),
        "the good plugin must still load: {r:?}"
    );
    assert!(
        r.stderr
            .contains(&format!("plugin not loaded: {}", broken.display())),
        "{r:?}"
    );
    r
}

#[test]
fn a_plugin_built_against_another_abi_version_is_refused() {
    let so = plugin_so("sr-fixture-abi-mismatch");
    let r = load_beside_example(&so);
    assert!(
        r.stderr.contains(
            "plugin built against srhost plugin ABI 0.2.0, but this srhost uses ABI 0.3.0"
        ),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("help: rebuild the plugin against sr-abi 0.3.0"),
        "{r:?}"
    );
}

#[test]
fn a_plugin_whose_layout_differs_is_refused() {
    let so = plugin_so("sr-fixture-abi-layout");
    let r = load_beside_example(&so);
    assert!(
        r.stderr
            .contains("the plugin's ABI types do not match this srhost's (ABI 0.3.0)"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("mismatched package (expected sr-abi, found sr-fixture-abi-layout)"),
        "{r:?}"
    );
}

#[test]
fn a_plugin_that_panics_while_initialising_is_refused() {
    let so = plugin_so("sr-fixture-panicking-init");
    let r = load_beside_example(&so);
    assert!(
        r.stderr
            .contains("the plugin panicked while initialising its root module"),
        "{r:?}"
    );
}

#[test]
fn files_that_are_not_plugins_are_refused() {
    let dir = scratch("not-plugins");
    let text = dir.join("notes.so");
    std::fs::write(&text, "this is not a library\n").unwrap();
    let r = load_beside_example(&text);
    assert!(r.stderr.contains("not a loadable library"), "{r:?}");

    // A real shared library that is not an srhost plugin.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.is_file())
    .expect("no libm.so.6 found on this Linux machine");
    let r = load_beside_example(libm);
    assert!(
        r.stderr
            .contains("not an srhost plugin (it exports no abi_stable root module)"),
        "{r:?}"
    );

    let r = load_beside_example(&dir.join("missing.so"));
    assert!(r.stderr.contains("no such plugin file"), "{r:?}");
}

#[test]
fn a_panic_inside_a_plugin_call_fails_that_image_and_the_run_goes_on() {
    let dir = scratch("panic-call");
    let imgs = [lit(&photo("coffee.png")), lit(&photo("chelsea.png"))];
    // coffee.png is 600 px wide, chelsea.png 451: only coffee panics.
    let spec = write(
        &dir,
        "pipeline.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n[saliency]\nuse = \"panics\"\nwhen_wider_than = 500\n\n[[plugin]]\npath = {}\n",
            imgs.join(", "),
            lit(&dir.join("out")),
            lit(&plugin_so("sr-fixture-panicking"))
        ),
    );
    let r = srhost(&dir, &["--pipeline", &spec, "--jobs", "1"]);
    assert_eq!(r.code, 1, "some images failed: {r:?}");
    assert!(r.stdout.contains("done 1, skipped 0, failed 1"), "{r:?}");
    assert!(
        r.stderr.contains("coffee.png")
            && r.stderr
                .contains("saliency.panics panicked: fixture: image is 600 px wide"),
        "{r:?}"
    );
    assert!(
        dir.join("out/chelsea/saliency-photo.npy").is_file(),
        "the other image was processed"
    );
    assert!(!dir.join("out/coffee/result.json").exists());
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/run.json")).unwrap()).unwrap();
    assert_eq!(run["failed"].as_array().unwrap().len(), 1);
}

#[test]
fn a_panic_while_building_a_plugin_stage_is_a_spec_error() {
    let dir = scratch("panic-build");
    let spec = write(
        &dir,
        "pipeline.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n[saliency]\nuse = \"panics\"\nin_build = true\n\n[[plugin]]\npath = {}\n",
            lit(&photo("coffee.png")),
            lit(&dir.join("out")),
            lit(&plugin_so("sr-fixture-panicking"))
        ),
    );
    let r = srhost(&dir, &["--pipeline", &spec]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("[saliency]: stage `saliency.panics`: saliency.panics panicked: fixture: panicking while building the stage"), "{r:?}");
}

#[test]
fn stage_parameters_reach_the_plugin() {
    // blur = 1 and color_space = "rgb" give a different map than the defaults.
    let a = scratch("params-a");
    let b = scratch("params-b");
    let sa = example_pipeline(&a, &["chelsea.png"], "");
    let sb = example_pipeline(&b, &["chelsea.png"], "blur = 1\ncolor_space = \"rgb\"\n");
    assert_eq!(srhost(&a, &["--pipeline", &sa]).code, 0);
    assert_eq!(srhost(&b, &["--pipeline", &sb]).code, 0);
    let ma = read_npy(&a.join("out/chelsea/saliency-photo.npy"));
    let mb = read_npy(&b.join("out/chelsea/saliency-photo.npy"));
    assert_eq!(ma.shape, mb.shape);
    let diff: f64 = ma
        .data
        .iter()
        .zip(&mb.data)
        .map(|(x, y)| (x - y).abs())
        .sum::<f64>()
        / ma.data.len() as f64;
    assert!(diff > 0.01, "mean difference {diff}");
}
