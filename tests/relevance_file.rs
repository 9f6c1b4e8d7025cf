//! `relevance.file`: maps made by another tool (here Zennit's golden EpsilonPlusFlat maps of
//! EfficientNet-Lite0, made by PyTorch/Zennit) go through the SR step, the metrics and the report
//! as srhost's own would; bad maps fail their image by name.

use srhost_tests::*;
use std::path::Path;

/// Zennit's maps and srhost's LRP with Zennit's settings agree to float32 round-off (max abs
/// about 1e-6 of the range, tests/relevance.rs); through the context-aware search, whose patch
/// distances can tie, their SR maps agree to this SSIM.
const SR_MIN_SSIM: f64 = 0.99;

fn pipeline(dir: &Path, images: &[&str], maps: &Path, extra: &str) -> String {
    let images: Vec<String> = images.iter().map(|n| lit(&photo(n))).collect();
    write(
        dir,
        "p.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n[model]\nuse = \"torchvision\"\n\n\
             [relevance.zennit]\nuse = \"file\"\nfolder = {}\n{extra}\n\
             [saliency]\nuse = \"context-aware\"\nvariant = \"reference\"\n",
            images.join(", "),
            lit(&dir.join("out")),
            lit(maps),
        ),
    )
}

fn golden_map(name: &str) -> std::path::PathBuf {
    golden(&format!("efficientnet_lite0/{name}/epsilon_plus_flat.npy"))
}

fn ssim(a: &sr_core::npy::NpyArray, b: &sr_core::npy::NpyArray) -> f64 {
    assert_eq!(a.shape, b.shape);
    sr_core::metrics::ssim(&a.data, &b.data, a.shape[0], a.shape[1])
}

#[test]
fn zennit_maps_from_files_give_the_sr_maps_of_srhosts_own_lrp() {
    let dir = scratch("relfile-zennit");
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    for name in ["coffee", "chelsea"] {
        std::fs::copy(golden_map(name), maps.join(format!("{name}.npy"))).unwrap();
    }
    let lrp = "\n[relevance.lrp]\nuse = \"lrp\"\ncomposite = \"epsilon-plus-flat\"\nadd = \"copy\"\nepsilon = 1e-6\n";
    let p = pipeline(&dir, &["coffee.png", "chelsea.png"], &maps, lrp);
    let r = srhost(&dir, &["--pipeline", &p, "-j", "1"]);
    assert_eq!(r.code, 0, "{r:?}");
    for name in ["coffee", "chelsea"] {
        let out = dir.join("out").join(name);
        // The map is taken as it is.
        let golden = read_npy(&golden_map(name));
        let ours = read_npy(&out.join("relevance-zennit.npy"));
        assert_eq!(ours.shape, golden.shape[1..]);
        assert_eq!(ours.data, golden.data, "{name}: the map changed on the way");
        // Its SR map is the SR map of srhost's own LRP.
        let s = ssim(
            &read_npy(&out.join("sr-zennit.npy")),
            &read_npy(&out.join("sr-lrp.npy")),
        );
        eprintln!("{name}: SSIM(SR of Zennit's map, SR of srhost's LRP) = {s:.6}");
        assert!(s >= SR_MIN_SSIM, "{name}: {s}");
        // The statistics and the metrics are those of the file's map.
        let res: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap())
                .unwrap();
        let b = res["branches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["branch"] == "zennit")
            .unwrap();
        let sum: f64 = golden.data.iter().sum();
        let got = b["relevance_sum"].as_f64().unwrap();
        assert!(
            (got - sum).abs() <= 1e-6 * sum.abs().max(1.0),
            "{got} vs {sum}"
        );
        assert!(b["ssim_ratio"].as_f64().unwrap().is_finite(), "{b}");
    }
}

#[test]
fn an_h_x_w_map_is_spread_over_the_channels() {
    let dir = scratch("relfile-hw");
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let hw: Vec<f32> = (0..224 * 224).map(|i| (i % 97) as f32 - 40.0).collect();
    std::fs::write(
        maps.join("coffee.npy"),
        sr_core::npy::encode_f32(&[224, 224], &hw),
    )
    .unwrap();
    let r = srhost(
        &dir,
        &["--pipeline", &pipeline(&dir, &["coffee.png"], &maps, "")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let got = read_npy(&dir.join("out/coffee/relevance-zennit.npy"));
    assert_eq!(got.shape, [3, 224, 224]);
    for c in 0..3 {
        for (i, &v) in hw.iter().enumerate() {
            assert_eq!(got.data[c * 224 * 224 + i], (v as f64 / 3.0) as f32 as f64);
        }
    }
}

#[test]
fn missing_wrong_and_nan_maps_fail_their_image_by_name() {
    let dir = scratch("relfile-bad");
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    // coffee: no map; chelsea: the wrong size; astronaut: a NaN in it.
    std::fs::write(
        maps.join("chelsea.npy"),
        sr_core::npy::encode_f32(&[3, 10, 10], &[0.0; 300]),
    )
    .unwrap();
    let mut nan = vec![0.0f32; 3 * 224 * 224];
    nan[5] = f32::NAN;
    std::fs::write(
        maps.join("astronaut.npy"),
        sr_core::npy::encode_f32(&[3, 224, 224], &nan),
    )
    .unwrap();
    // rocket: a header declaring more values than can be counted, over 8 data bytes.
    let header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    npy.extend([0u8; 8]);
    std::fs::write(maps.join("rocket.npy"), npy).unwrap();
    let p = pipeline(
        &dir,
        &["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg"],
        &maps,
        "",
    );
    let r = srhost(&dir, &["--pipeline", &p]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("done 0, skipped 0, failed 4"), "{r:?}");
    assert!(
        r.stderr.contains("rocket.npy: not a supported .npy file: 8 data bytes for shape [4294967296, 4294967296, 16]"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("no map for") && r.stderr.contains("coffee.npy"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains(
            "chelsea.npy: a map of shape [3, 10, 10] for a model whose input is 3 x 224 x 224"
        ),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("astronaut.npy: value NaN at flat index 5"),
        "{r:?}"
    );
    // A folder that does not exist, or a pipeline without the model: refused at check.
    let r = srhost(
        &dir,
        &["check", &p, "--set", "relevance.zennit.folder=\"nowhere\""],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("`relevance.zennit.folder`") && r.stderr.contains("no such folder"),
        "{r:?}"
    );
}
