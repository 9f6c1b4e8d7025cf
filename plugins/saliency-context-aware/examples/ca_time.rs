//! Time the context-aware saliency of PNGs, and compare the `fast` variant with the reference:
//! `cargo run --release -p sr-saliency-context-aware --example ca_time -- IMAGE...`.
use sr_saliency_context_aware::{ca, imresize::Img};
fn main() {
    for path in std::env::args().skip(1) {
        let p = image::open(&path).unwrap().to_rgb8();
        let (w, h) = p.dimensions();
        let img = Img {
            h: h as usize,
            w: w as usize,
            c: 3,
            data: p.into_raw().iter().map(|&v| v as f64 / 255.0).collect(),
        };
        let reference = ca::Config::reference();
        let mut fast = ca::Config::reference();
        fast.candidate_strides = fast.half_sizes.iter().map(|h| 2 * h).collect();
        let t = std::time::Instant::now();
        let a = ca::saliency(&img, &reference);
        let ta = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let b = ca::saliency(&img, &fast);
        let tb = t.elapsed().as_secs_f64();
        let ssim = sr_core::metrics::ssim(&a.data, &b.data, a.h, a.w);
        let mad = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .sum::<f64>()
            / a.data.len() as f64;
        println!("{path}: reference {ta:.2} s, fast {tb:.2} s, SSIM(fast, reference) {ssim:.4}, mean abs diff {mad:.4}");
    }
}
