//! Time the context-aware saliency of one PNG: `cargo run --release --example ca_time -- IMAGE`.
use sr_saliency_context_aware::{ca, imresize::Img};
fn main() {
    let path = std::env::args().nth(1).expect("usage: ca_time IMAGE.png");
    let p = image::open(&path).unwrap().to_rgb8();
    let (w, h) = p.dimensions();
    let img = Img {
        h: h as usize,
        w: w as usize,
        c: 3,
        data: p.into_raw().iter().map(|&v| v as f64 / 255.0).collect(),
    };
    let cfg = ca::Config::reference();
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let s = ca::saliency(&img, &cfg);
        println!(
            "{path}: {}x{} -> {}x{} in {:.3} s",
            w,
            h,
            s.w,
            s.h,
            t.elapsed().as_secs_f64()
        );
    }
}
