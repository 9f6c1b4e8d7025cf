//! PyTorch checkpoint bytes (zip or legacy) -> the restricted pickle machine -> tensors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sr_backend_torchvision::pth::read_pth_bytes(data, "fuzz.pth");
});
