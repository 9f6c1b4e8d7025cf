//! Exact Euclidean distance transform (Felzenszwalb and Huttenlocher 2012): for every pixel,
//! the distance to the nearest `true` pixel, as Matlab's `bwdist`.

const INF: f64 = 1e20;

/// 1-D squared distance transform of `f` (lower envelope of parabolas).
fn dt1(f: &[f64]) -> Vec<f64> {
    let n = f.len();
    let mut d = vec![0.0; n];
    let mut v = vec![0usize; n];
    let mut z = vec![0.0; n + 1];
    let mut k = 0usize;
    z[0] = -INF;
    z[1] = INF;
    for q in 1..n {
        let s_of = |p: usize| {
            ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * q as f64 - 2.0 * p as f64)
        };
        let mut s = s_of(v[k]);
        while s <= z[k] {
            k -= 1;
            s = s_of(v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = INF;
    }
    k = 0;
    for (q, dq) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        *dq = (q as f64 - p as f64).powi(2) + f[p];
    }
    d
}

/// Distances (not squared) from each pixel of an `h x w` mask to its nearest `true` pixel.
/// All `INF`-like when the mask has no `true` pixel.
pub fn bwdist(mask: &[bool], h: usize, w: usize) -> Vec<f64> {
    let mut g: Vec<f64> = mask.iter().map(|&m| if m { 0.0 } else { INF }).collect();
    for x in 0..w {
        let col: Vec<f64> = (0..h).map(|y| g[y * w + x]).collect();
        for (y, v) in dt1(&col).into_iter().enumerate() {
            g[y * w + x] = v;
        }
    }
    for y in 0..h {
        let row = dt1(&g[y * w..(y + 1) * w]);
        g[y * w..(y + 1) * w].copy_from_slice(&row);
    }
    g.into_iter().map(f64::sqrt).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_brute_force() {
        let (h, w) = (9, 11);
        let mask: Vec<bool> = (0..h * w).map(|i| i == 5 || i == 40 || i == 97).collect();
        let d = bwdist(&mask, h, w);
        for y in 0..h {
            for x in 0..w {
                let want = (0..h * w)
                    .filter(|&i| mask[i])
                    .map(|i| {
                        (((i / w) as f64 - y as f64).powi(2) + ((i % w) as f64 - x as f64).powi(2))
                            .sqrt()
                    })
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    (d[y * w + x] - want).abs() < 1e-9,
                    "({y}, {x}): {} vs {want}",
                    d[y * w + x]
                );
            }
        }
    }
}
