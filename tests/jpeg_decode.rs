//! Photos decode as PyTorch's data loaders decode them: bit-identical to PIL (Pillow 13.0.0 with
//! libjpeg-turbo 3.2.0), whose `Image.open(f).convert("RGB")` torchvision uses. References:
//! tests/fixtures/jpeg/<name>.pil.png, PIL's decoded pixels saved losslessly by
//! scripts/make_jpeg_fixtures.py (which also made the progressive and grey JPEGs there).

use srhost_tests::*;
use std::path::PathBuf;

fn cases() -> Vec<(PathBuf, PathBuf)> {
    let fx = repo().join("tests/fixtures/jpeg");
    let mut v: Vec<(PathBuf, PathBuf)> = ["grace_hopper", "rocket"]
        .iter()
        .map(|n| {
            (
                repo().join(format!("assets/images/{n}.jpg")),
                fx.join(format!("{n}.pil.png")),
            )
        })
        .collect();
    for n in [
        "rocket-progressive",
        "grace-hopper-444-progressive",
        "grace-hopper-grey",
    ] {
        v.push((fx.join(format!("{n}.jpg")), fx.join(format!("{n}.pil.png"))));
    }
    v
}

#[test]
fn jpegs_decode_bit_identical_to_pil() {
    let mut report = vec![];
    for (jpg, png) in cases() {
        let ours = sr_core::preprocess::load_photo(&jpg).unwrap();
        let pil = image::open(&png).unwrap().to_rgb8();
        assert_eq!(
            (ours.width as u32, ours.height as u32),
            pil.dimensions(),
            "{}",
            jpg.display()
        );
        let differ = ours
            .data
            .chunks(3)
            .zip(pil.as_raw().chunks(3))
            .filter(|(a, b)| a != b)
            .count();
        let max = ours
            .data
            .iter()
            .zip(pil.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap();
        report.push(format!(
            "{}: {differ} of {} pixels differ from PIL (max {max} levels)",
            jpg.file_name().unwrap().to_string_lossy(),
            ours.width * ours.height
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        report.iter().all(|r| r.contains(": 0 of")),
        "{}",
        report.join("\n")
    );
}

/// The model input of each JPEG: our decode + resize + centre crop against PIL's decode +
/// torchvision's `Resize(256)` + `CenterCrop(224)` (made with PIL by
/// scripts/make_jpeg_fixtures.py): bit-identical, so a JPEG photo reaches the model exactly as
/// it reaches a PyTorch model.
#[test]
fn jpeg_model_inputs_equal_torchvisions_crops() {
    let info = sr_core::ModelInfo {
        name: "imagenet-224".into(),
        input_shape: vec![3, 224, 224],
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        resize: 256,
        labels: vec![],
    };
    for (jpg, png) in cases() {
        let crop_png = png.to_string_lossy().replace(".pil.png", ".crop224.png");
        let ours = sr_core::preprocess::resize_and_crop(
            &sr_core::preprocess::load_photo(&jpg).unwrap(),
            &info,
        )
        .unwrap();
        let want = image::open(&crop_png).unwrap().to_rgb8();
        assert_eq!((ours.width, ours.height), (224, 224));
        assert!(
            ours.data == *want.as_raw(),
            "{}: the model input differs from torchvision's",
            jpg.display()
        );
    }
}

/// What the `photo` fuzz target found once libjpeg-turbo decoded JPEGs: a corrupt JPEG (45 KB,
/// a mutation of grace_hopper.jpg) on which libjpeg's fatal-error handler unwound through code
/// that cannot unwind. Now an error naming the file, with and without `allow_truncated`.
#[test]
fn a_jpeg_that_makes_libjpeg_fail_is_an_error() {
    let f = repo().join("tests/fixtures/fuzz/photo-jpeg-error-exit.jpg");
    let bytes = std::fs::read(&f).unwrap();
    for allow_truncated in [false, true] {
        let limits = sr_core::preprocess::PhotoLimits {
            max_pixels: 50_000_000,
            allow_truncated,
        };
        let r = sr_core::preprocess::decode_photo(&bytes, &limits, "crash.jpg");
        eprintln!(
            "allow_truncated {allow_truncated}: {:?}",
            r.as_ref().map(|i| (i.width, i.height))
        );
        let e = r.map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("crash.jpg"), "{e}");
    }
}
