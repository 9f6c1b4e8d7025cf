//! The saliency benchmark's metrics (sr_core::metrics::saliency) against pysaliency 0.2.22 (and
//! EMD against POT 0.9.7's exact `ot.emd2`, Spearman against scipy's `spearmanr`) on
//! three cases: smooth maps, a map with negative values and a quantised map full of ties
//! (tests/fixtures/saliency_metrics, made by scripts/make_saliency_metric_fixtures.py).

use sr_core::metrics::saliency::*;
use srhost_tests::*;

/// float64 on both sides; the sums run in another order: 1e-12 absolute.
const TOL: f64 = 1e-12;

#[test]
fn saliency_metrics_match_pysaliency() {
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/saliency_metrics/cases.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let points = |v: &serde_json::Value| -> Vec<(usize, usize)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_u64().unwrap() as usize,
                    p[1].as_u64().unwrap() as usize,
                )
            })
            .collect()
    };
    let mut compared = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let w = case["w"].as_u64().unwrap() as usize;
        let h = case["h"].as_u64().unwrap() as usize;
        let (pred, truth) = (floats(&case["pred"]), floats(&case["truth"]));
        let (fix, other) = (points(&case["fixations"]), points(&case["other_fixations"]));
        let got = [
            ("cc", cc(&pred, &truth)),
            ("sim", sim(&pred, &truth)),
            ("kl", kl(&pred, &truth)),
            ("nss", nss(&pred, w, &fix)),
            ("emd_8", emd(&pred, &truth, h, w, 8)),
            ("emd_16", emd(&pred, &truth, h, w, 16)),
            ("spearman", spearman(&pred, &truth)),
            ("auc_judd", auc_judd(&pred, w, &fix)),
            ("auc_borji", auc_borji(&pred, w, &fix)),
            ("auc_shuffled", auc_shuffled(&pred, w, &fix, &other)),
        ];
        for (metric, value) in got {
            let want = case["reference"][metric].as_f64().unwrap();
            println!("{name} {metric}: {value:.12} (reference {want:.12})");
            assert!(
                (value - want).abs() <= TOL,
                "{name} {metric}: {value} against the reference's {want}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 3 * 10, "cases x metrics compared");
}
