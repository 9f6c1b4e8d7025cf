//! The golden fixtures are the files their generator wrote (issue 29, item 4): every file of
//! `tests/fixtures/golden/manifest.json` (copied from the golden set, written by its generator
//! with PyTorch, Zennit and Captum; versions in it and in SOURCE-README.md) is here with the
//! recorded size and sha256, except the ones this repository does not copy, named below.

use sha2::{Digest, Sha256};
use srhost_tests::*;

/// Not copied into the repository: Lite0's epsilon-1e-6 maps (ill-conditioned, not compared:
/// tests/relevance.rs), the models and label list (the shipped assets are used instead), the
/// layer listings and the sanity checks (no test reads them).
const NOT_COPIED: &[&str] = &[
    "efficientnet_lite0/astronaut/eps_1e-6.npy",
    "efficientnet_lite0/chelsea/eps_1e-6.npy",
    "efficientnet_lite0/coffee/eps_1e-6.npy",
    "models/alexnet_narrow.layers.json",
    "models/efficientnet_lite0.layers.json",
    "models/efficientnet_lite0.safetensors",
    "models/imagenet_classes.txt",
    "models/mtcnn_onet.layers.json",
    "models/mtcnn_onet.safetensors",
    "models/vgg16_bn_narrow.layers.json",
    "models/vgg16_narrow.layers.json",
    "models/zennit_rule_maps.json",
    "sanity_checks.json",
];

#[test]
fn every_golden_fixture_has_its_recorded_size_and_sha256() {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden("manifest.json")).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap();
    let (mut checked, mut bad) = (0, vec![]);
    for f in files {
        let path = f["path"].as_str().unwrap();
        let p = golden(path);
        if NOT_COPIED.contains(&path) {
            assert!(
                !p.exists(),
                "{path} is here now: check it (drop it from NOT_COPIED)"
            );
            continue;
        }
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if bytes.len() as u64 != f["bytes"].as_u64().unwrap() || sha != f["sha256"] {
            bad.push(path.to_string());
        }
        checked += 1;
    }
    assert!(
        bad.is_empty(),
        "fixtures that differ from the manifest: {bad:?}"
    );
    assert_eq!(checked + NOT_COPIED.len(), files.len());
    assert_eq!(checked, 174, "fixtures checked");
}
