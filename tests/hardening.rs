//! Bad input never crashes srhost, exhausts its memory, writes outside its output folder or
//! loads code from the working directory: each case of the hardening issue, named after what it
//! guards, ends in a one-line error naming the file, key or image, with exit 1 (that image) or
//! 2 (spec or model).

use srhost_tests::*;
use std::path::Path;
use std::process::Command;

/// A pipeline over `images` (TOML strings) with the shipped model and the gradient.
fn spec(dir: &Path, images: &[String], extra_run: &str, tail: &str) -> String {
    write(
        dir,
        "p.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n{extra_run}\n\n[model]\nuse = \"torchvision\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n{tail}\n",
            images.join(", "),
            lit(&dir.join("out"))
        ),
    )
}

#[test]
fn the_runtime_probe_never_loads_a_library_from_the_working_directory() {
    // A folder `onnxruntime/capi/` in the working directory with a "library" in it: the probe
    // must not take it for the installed package.
    let dir = scratch("hard-ort");
    let capi = dir.join("onnxruntime/capi");
    std::fs::create_dir_all(&capi).unwrap();
    std::fs::write(capi.join("libonnxruntime.so.1.23.2"), b"not a library").unwrap();
    std::fs::write(dir.join("onnxruntime/__init__.py"), b"").unwrap();
    let out = Command::new(srhost_bin())
        .current_dir(&dir)
        .env_remove("ORT_DYLIB_PATH")
        .env("PYTHONPATH", &dir)
        .args([
            "classify",
            "--set",
            "model.use=onnx",
            "--set",
            &format!(
                "model.path={:?}",
                repo()
                    .join("assets/models/efficientnet-lite0.onnx")
                    .display()
                    .to_string()
            ),
            &photo("coffee.png").display().to_string(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        !err.contains(&dir.display().to_string()),
        "the working directory's library was taken: {err}"
    );
    assert!(err.contains("ONNX Runtime was not found"), "{err}");
}

#[test]
fn a_truncated_jpeg_fails_that_image_unless_allowed() {
    let dir = scratch("hard-jpeg");
    let whole = std::fs::read(photo("grace_hopper.jpg")).unwrap();
    let cut = dir.join("cut.jpg");
    std::fs::write(&cut, &whole[..whole.len() / 100]).unwrap();
    let images = [lit(&cut), lit(&photo("coffee.png"))];
    let r = srhost(&dir, &["--pipeline", &spec(&dir, &images, "", "")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("done 1, skipped 0, failed 1"), "{r:?}");
    assert!(
        r.stderr.contains("cut.jpg") && r.stderr.contains("JPEG file is truncated"),
        "{r:?}"
    );
    let r = srhost(
        &dir,
        &[
            "--pipeline",
            &spec(&dir, &images, "allow_truncated = true", ""),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_photo_declaring_too_many_pixels_is_refused_from_its_header() {
    // A 22000 x 22000 PNG: its header and the start of its data, refused before anything is
    // decoded or allocated (decoding it would take 7.9 GB).
    let dir = scratch("hard-huge");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(22000u32.to_be_bytes());
    ihdr.extend(22000u32.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grey
    png.extend((13u32).to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    // The start of the image data: a zlib header and a few bytes of a stream that never ends.
    let mut idat = b"IDAT".to_vec();
    idat.extend([0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00]);
    png.extend((8u32).to_be_bytes());
    png.extend(&idat);
    png.extend(crc32(&idat).to_be_bytes());
    let f = dir.join("huge.png");
    std::fs::write(&f, png).unwrap();
    let r = srhost(&dir, &["--pipeline", &spec(&dir, &[lit(&f)], "", "")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("huge.png")
            && r.stderr.contains("22000x22000 (484000000 pixels)")
            && r.stderr.contains("at most 50000000"),
        "{r:?}"
    );
}

/// CRC-32 (PNG's), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn an_extremely_elongated_photo_fails_by_name_instead_of_aborting() {
    // 1 x 1,000,000: resized to a shorter side of 256 it would be 256 x 256,000,000.
    let dir = scratch("hard-long");
    let f = dir.join("long.png");
    image::GrayImage::from_pixel(1, 1_000_000, image::Luma([128]))
        .save(&f)
        .unwrap();
    let r = srhost(&dir, &["--pipeline", &spec(&dir, &[lit(&f)], "", "")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("long.png") && r.stderr.contains("would be 256x256000000"),
        "{r:?}"
    );
}

#[test]
fn bad_values_are_refused_at_check_with_their_key() {
    let dir = scratch("hard-values");
    let images = [lit(&photo("coffee.png"))];
    let ca = "\n[saliency]\nuse = \"context-aware\"\n";
    for (set, key, says) in [
        (
            "run.output=\"\"",
            "`run.output`",
            "the output folder is empty",
        ),
        (
            "saliency.max_dim=1000000000",
            "saliency",
            "may be at most 2048",
        ),
        (
            "saliency.levels=[]",
            "saliency",
            "`levels` needs at least one",
        ),
        ("saliency.c=nan", "saliency", "`c` must be a finite number"),
        (
            "saliency.half_sizes=[200, 3, 3, 3]",
            "saliency",
            "does not fit",
        ),
        (
            "metrics.aopc_patch=100000",
            "`metrics.aopc_patch`",
            "from 1 to 1024",
        ),
        (
            "metrics.aopc_steps=1000000000",
            "`metrics.aopc_steps`",
            "from 1 to 10000",
        ),
        (
            "model.weights=\"no-such.pth\"",
            "`model.weights`",
            "no such file",
        ),
    ] {
        // `check` validates the spec; building the stages (the run) checks their values.
        let r = srhost(
            &dir,
            &["--pipeline", &spec(&dir, &images, "", ca), "--set", set],
        );
        assert_eq!(r.code, 2, "{set}: {r:?}");
        assert!(
            r.stderr.contains(key) && r.stderr.contains(says),
            "{set}: {r:?}"
        );
        assert_eq!(
            r.stderr.lines().count(),
            1 + r.stderr.matches("help:").count(),
            "{set}"
        );
    }
    let r = srhost(
        &dir,
        &[
            "--pipeline",
            &spec(&dir, &images, "", ""),
            "--set",
            "model.resize=100000",
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("`resize` = 100000"), "{r:?}");
    // A missing model file fails `check` too, not only the run.
    let r = srhost(
        &dir,
        &[
            "check",
            &spec(&dir, &images, "", ""),
            "--set",
            "model.weights=\"nowhere.safetensors\"",
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("no such file: `nowhere.safetensors`"),
        "{r:?}"
    );
}

#[test]
fn a_60000_level_set_key_is_an_error() {
    let dir = scratch("hard-deep");
    let key = vec!["a"; 60_000].join(".");
    let r = srhost(
        &dir,
        &[
            "check",
            &spec(&dir, &[lit(&photo("coffee.png"))], "", ""),
            "--set",
            &format!("{key}=1"),
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("60000 keys deep"), "{r:?}");
}
