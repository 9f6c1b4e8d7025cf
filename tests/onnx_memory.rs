//! The onnx_import fuzz target ran out of memory while loading its seeds: the weight-stripped
//! VGG-19 fixture, whose ConstantOfShape nodes fill 144 M weights, needed more than the
//! fuzzer's 2 GiB under AddressSanitizer. Not a hostile file, but what a small file may make the
//! importer fold is now bounded (2^28 f32s in all, index vectors counted), and constants passed
//! through Identity, Reshape, Squeeze or Cast are shared, not copied. This binary holds one test
//! so that the process's peak memory is that import's alone.

use srhost_tests::*;

#[test]
fn importing_the_weight_stripped_vgg19_stays_under_2_gib() {
    let f = repo().join("tests/fixtures/onnx/light_vgg19.onnx");
    let m = sr_backend_onnx::proto::parse(&std::fs::read(&f).unwrap()).unwrap();
    sr_backend_onnx::import::import(&m, None, None).unwrap();
    // The model's 144 M weights are 575 MB as f32, and tensors are made from them.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 2 << 20, "peak memory {peak_kb} kB");
}
