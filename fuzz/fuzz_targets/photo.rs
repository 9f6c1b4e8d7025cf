//! Image bytes -> the photo decoder (header checked first) -> torchvision's preprocessing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sr_core::preprocess::{decode_photo, preprocess, PhotoLimits};

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast; the checks are the same at any size.
    let limits = PhotoLimits {
        max_pixels: 1 << 20,
        allow_truncated: data.first().is_some_and(|b| b & 1 == 1),
    };
    let Ok(rgb) = decode_photo(data, &limits, "fuzz") else {
        return;
    };
    let info = sr_core::ModelInfo {
        name: "fuzz".into(),
        input_shape: vec![3, 32, 32],
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
        resize: 36,
        labels: vec![],
    };
    let _ = preprocess(&rgb, &info);
});
