//! Image comparison metrics.

/// SSIM (Wang et al. 2004) with Wang's parameters: an 11 x 11 Gaussian window with sigma 1.5,
/// K1 = 0.01, K2 = 0.03, data range 1, population covariances, averaged over the pixels whose
/// window lies inside the image (as scikit-image's `structural_similarity(gaussian_weights=True,
/// sigma=1.5, use_sample_covariance=False, data_range=1)` crops its map).
pub fn ssim(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    assert_eq!(a.len(), h * w);
    assert_eq!(b.len(), h * w);
    const R: usize = 5;
    let sigma = 1.5f64;
    let g: Vec<f64> = (0..=2 * R)
        .map(|i| (-((i as f64 - R as f64).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / gs).collect();
    let (c1, c2) = ((0.01f64).powi(2), (0.03f64).powi(2));
    if h <= 2 * R || w <= 2 * R {
        return f64::NAN;
    }
    // Separable weighted means of x, y, x^2, y^2, xy at every valid centre.
    let filt = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
        let mut rows = vec![0f64; h * (w - 2 * R)];
        for y in 0..h {
            for x in R..w - R {
                rows[y * (w - 2 * R) + x - R] =
                    (0..=2 * R).map(|k| g[k] * f(y * w + x + k - R)).sum();
            }
        }
        let ow = w - 2 * R;
        let mut out = vec![0f64; (h - 2 * R) * ow];
        for y in R..h - R {
            for x in 0..ow {
                out[(y - R) * ow + x] =
                    (0..=2 * R).map(|k| g[k] * rows[(y + k - R) * ow + x]).sum();
            }
        }
        out
    };
    let mx = filt(&|i| a[i]);
    let my = filt(&|i| b[i]);
    let mxx = filt(&|i| a[i] * a[i]);
    let myy = filt(&|i| b[i] * b[i]);
    let mxy = filt(&|i| a[i] * b[i]);
    let n = mx.len();
    let total: f64 = (0..n)
        .map(|i| {
            let (ux, uy) = (mx[i], my[i]);
            let (vx, vy, vxy) = (mxx[i] - ux * ux, myy[i] - uy * uy, mxy[i] - ux * uy);
            ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        })
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_score_one_and_unrelated_ones_less() {
        let (h, w) = (20, 30);
        let a: Vec<f64> = (0..h * w)
            .map(|i| ((i * 7919) % 101) as f64 / 100.0)
            .collect();
        assert!((ssim(&a, &a, h, w) - 1.0).abs() < 1e-12);
        let b: Vec<f64> = a.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&a, &b, h, w) < 0.0);
    }
}

#[cfg(test)]
mod skimage_parity {
    use super::*;

    fn load(name: &str) -> (Vec<f64>, usize, usize) {
        let path = format!(
            "{}/../../tests/fixtures/ssim/{name}.npy",
            env!("CARGO_MANIFEST_DIR")
        );
        let a = crate::npy::decode(&std::fs::read(&path).unwrap(), &path).unwrap();
        (a.data, a.shape[0], a.shape[1])
    }

    /// scikit-image's structural_similarity on fixed arrays (tests/fixtures/ssim, made by
    /// make_ssim_fixtures.py there), to 1e-4.
    #[test]
    fn matches_scikit_image() {
        let path = format!(
            "{}/../../tests/fixtures/ssim/ssim.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        for (p, q) in [("a", "b"), ("a", "c"), ("b", "c"), ("a", "a")] {
            let key = format!("\"{p}_{q}\": ");
            let i = text.find(&key).unwrap() + key.len();
            let want: f64 = text[i..]
                .split([',', '\n', '}'])
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let (x, h, w) = load(p);
            let (y, _, _) = load(q);
            let got = ssim(&x, &y, h, w);
            assert!(
                (got - want).abs() <= 1e-4,
                "{p}-{q}: {got} vs scikit-image {want}"
            );
        }
    }
}
