//! Convert a PyTorch checkpoint (`.pth`/`.pt`, zip or legacy format) to safetensors, without
//! executing its pickle. Floating-point tensors are written as f32 under their state-dict
//! names; integer buffers (`num_batches_tracked`) are dropped.
//!
//!     pth2safetensors IN.pth OUT.safetensors

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = &args[..] else {
        eprintln!("usage: pth2safetensors IN.pth OUT.safetensors");
        return ExitCode::from(2);
    };
    match sr_backend_torchvision::weights::load(&PathBuf::from(input)).and_then(|w| {
        sr_backend_torchvision::weights::save_safetensors(&w, &PathBuf::from(output))
            .map(|_| w.len())
    }) {
        Ok(n) => {
            println!("{input} -> {output}: {n} tensors");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
