//! Repeats the shipped EfficientNet-Lite0's forward pass (batch 1 unless given) for profiling:
//!     cargo run --release -p sr-backend-torchvision --example forward_time [ITERATIONS [BATCH]]
use sr_backend_torchvision::{TorchvisionModel, TorchvisionParams};
use sr_core::{Model, ModelStage, Tensor};

/// As srhost does: large freed buffers are kept for the next pass (`sr_nn::alloc`).
#[global_allocator]
static ALLOC: sr_nn::alloc::ReuseLarge = sr_nn::alloc::ReuseLarge;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let batch: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let m = TorchvisionModel::load(TorchvisionParams::default()).unwrap();
    let x = Tensor::new(
        vec![batch, 3, 224, 224],
        (0..batch * 3 * 224 * 224)
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
