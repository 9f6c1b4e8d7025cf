//! The comparison helpers every parity test goes through fail on values that are not finite
//! (issue 29): a NaN must never vanish in a `max` or pass a bound; and `run_measured` measures
//! the child's own memory.

use srhost_tests::*;

#[test]
fn rel_max_err_is_infinite_on_nan_and_inf_on_either_side() {
    let good = [1.0f32, -2.0, 0.5];
    assert!((rel_max_err(&good, &good)).abs() < 1e-12);
    assert!((rel_max_err(&[1.0, -2.0, 0.7], &good) - 0.1).abs() < 1e-6);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = good;
        x[1] = bad;
        assert_eq!(rel_max_err(&x, &good), f64::INFINITY, "{bad} in got");
        assert_eq!(rel_max_err(&good, &x), f64::INFINITY, "{bad} in want");
        // An all-NaN output used to score 0.
        assert_eq!(rel_max_err(&[bad; 3], &good), f64::INFINITY);
    }
}

#[test]
fn max_abs_diff_mean_abs_diff_and_max_abs_are_infinite_on_nan_and_inf() {
    assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
    assert_eq!(mean_abs_diff(&[1.0, 2.0], &[1.5, 3.5]), 1.0);
    assert_eq!(max_abs(&[-3.0, 2.0]), 3.0);
    for bad in [f64::NAN, f64::INFINITY] {
        assert_eq!(max_abs_diff(&[bad, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, bad]), f64::INFINITY);
        assert_eq!(mean_abs_diff(&[bad, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(mean_abs_diff(&[1.0, 2.0], &[1.0, bad]), f64::INFINITY);
        assert_eq!(max_abs(&[1.0, bad]), f64::INFINITY);
    }
}

#[test]
fn pearson_is_nan_on_nan_and_inf_so_a_lower_bound_fails() {
    let a = [1.0f32, 2.0, 3.0, 4.0];
    assert!((pearson(&a, &a) - 1.0).abs() < 1e-12);
    for bad in [f32::NAN, f32::INFINITY] {
        let mut x = a;
        x[2] = bad;
        let p = pearson(&x, &a);
        assert!(p.is_nan(), "{bad}: {p}");
        // How the tests write their bounds: a NaN fails them.
        assert!(!(p >= 0.999), "{bad}");
    }
}

/// `run_measured` reports the child's own peak memory: a child that touches 200 MiB shows it,
/// and a small child spawned after this process touched 300 MiB of its own does not inherit
/// that (`wait4`'s `ru_maxrss` did, through the `CLONE_VM` spawn).
#[test]
fn run_measured_reports_the_childs_own_peak() {
    let big = run_measured({
        let mut c = std::process::Command::new("python3");
        c.args([
            "-c",
            "b = bytearray(200 << 20); import time; time.sleep(0.1)",
        ]);
        c
    });
    assert_eq!(big.code, 0, "{big:?}");
    assert!(
        (190.0..400.0).contains(&big.peak_mib),
        "{:.0} MiB",
        big.peak_mib
    );
    let mut mine = vec![1u8; 300 << 20];
    for i in (0..mine.len()).step_by(4096) {
        mine[i] = i as u8;
    }
    let small = run_measured({
        let mut c = std::process::Command::new("sleep");
        c.arg("0.1");
        c
    });
    assert!(mine.iter().step_by(4096).any(|&b| b != 1));
    assert!(small.peak_mib < 50.0, "{:.0} MiB", small.peak_mib);
}
