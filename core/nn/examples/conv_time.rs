//! Times sr-core's dense convolution against candle-core's on VGG-16's and
//! EfficientNet-Lite0's layer shapes, and checks that they agree.
//!
//!     cargo run --release -p sr-nn --example conv_time
use candle_core::{Device, Tensor};
use sr_nn::ops::{conv2d_dense, Window};
use std::time::Instant;

fn main() {
    let dev = Device::Cpu;
    // (cin, cout, size, kernel, stride, pad)
    let layers = [
        (3, 64, 224, 3, 1, 1),
        (64, 64, 224, 3, 1, 1),
        (128, 128, 112, 3, 1, 1),
        (256, 256, 56, 3, 1, 1),
        (512, 512, 28, 3, 1, 1),
        (512, 512, 14, 3, 1, 1),
        (32, 16, 112, 1, 1, 0),
        (144, 24, 56, 1, 1, 0),
        (3, 32, 225, 3, 2, 0),
    ];
    for (cin, cout, size, k, s, p) in layers {
        let x = Tensor::randn(0f32, 1.0, (1, cin, size, size), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (cout, cin, k, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, cout, &dev).unwrap();
        let win = Window {
            kernel: [k, k],
            stride: [s, s],
            padding: [p; 4],
            dilation: [1, 1],
        };
        let time = |f: &dyn Fn() -> Tensor| {
            let _ = f();
            let t = Instant::now();
            let reps = 5;
            let mut y = None;
            for _ in 0..reps {
                y = Some(f());
            }
            (t.elapsed().as_secs_f64() * 1e3 / reps as f64, y.unwrap())
        };
        let (tc, yc) = time(&|| {
            x.conv2d(&w, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap()
        });
        let (to, yo) = time(&|| conv2d_dense(&x, &w, Some(&b), &win).unwrap());
        let diff = (yc - yo)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        println!("{cin:>4} -> {cout:>4} @ {size:>3} k{k} s{s}: candle {tc:8.2} ms, ours {to:8.2} ms ({:.2}x), max diff {diff:.1e}", tc / to);
    }
}
