//! Repeats the shipped EfficientNet-Lite0's forward pass (batch 1) for profiling:
//!     cargo run --release -p sr-backend-torchvision --example forward_time [ITERATIONS]
use sr_backend_torchvision::{TorchvisionModel, TorchvisionParams};
use sr_core::{Model, ModelStage, Tensor};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let m = TorchvisionModel::load(TorchvisionParams::default()).unwrap();
    let x = Tensor::new(
        vec![1, 3, 224, 224],
        (0..3 * 224 * 224)
            .map(|i| ((i % 97) as f32 - 48.0) / 48.0)
            .collect(),
    )
    .unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(m.forward(&x).unwrap());
    }
    println!(
        "{:.2} ms per forward",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
