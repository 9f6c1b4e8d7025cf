//! Weight-file bytes -> safetensors (or, failing its header, the checkpoint reader).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sr_backend_torchvision::weights::load_bytes(data, "fuzz.safetensors", true);
});
