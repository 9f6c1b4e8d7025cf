//! The saliency benchmark's map-comparison metrics (the MIT/Tübingen saliency benchmark, with
//! pysaliency's definitions, against which tests/saliency_metrics.rs checks them on fixtures):
//! between two maps CC, SIM, KL, EMD (and Spearman's rank correlation); against fixations NSS, AUC-Judd, AUC-Borji and the
//! shuffled AUC.
//!
//! Maps are row-major `f64` slices of one size; fixations are `(x, y)` pixel positions. A map
//! with a negative value is shifted to a minimum of 0 where a metric reads it as a density
//! (SIM, KL), as pysaliency does. Every function returns NaN when a value is not finite, so a
//! bound written `!(x >= MIN)` fails on it.

/// `true` when every value is finite.
fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Mean and population standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// The map as a probability density: shifted to a minimum of 0 if it has a negative value,
/// `floor` added, divided by its sum (uniform when the sum is 0).
fn density(v: &[f64], floor: f64) -> Vec<f64> {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let shift = if lo < 0.0 { -lo } else { 0.0 };
    let d: Vec<f64> = v.iter().map(|x| x + shift + floor).collect();
    let s: f64 = d.iter().sum();
    if s > 0.0 {
        d.iter().map(|x| x / s).collect()
    } else {
        vec![1.0 / v.len() as f64; v.len()]
    }
}

/// Pearson's linear correlation coefficient of two maps; 0 when either is constant (it
/// predicts nothing).
pub fn cc(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "cc: maps of different sizes");
    if !finite(a) || !finite(b) {
        return f64::NAN;
    }
    let ((ma, sa), (mb, sb)) = (mean_std(a), mean_std(b));
    if sa == 0.0 || sb == 0.0 {
        return 0.0;
    }
    let cov = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / a.len() as f64;
    cov / (sa * sb)
}

/// Ranks from 1, ties given their mean rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation: [`cc`] of the ranks (ties: mean ranks), as
/// `scipy.stats.spearmanr`. The randomization checks (Adebayo et al. 2018) use it on |R|.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "spearman: maps of different sizes");
    if !finite(a) || !finite(b) {
        return f64::NAN;
    }
    cc(&ranks(a), &ranks(b))
}

/// The discrete entropy of a map's values (Quantus's `discrete_entropy`, the complexity the
/// efficient MPRT of Hedström et al. 2023 compares): the values' histogram in `bins` bins of
/// equal width between their minimum and maximum (`numpy.histogram`: the last bin closed, a
/// constant map one bin of width 1 around its value), then `-sum p ln p` of the bin shares
/// (`scipy.stats.entropy`). NaN for an empty map, a non-finite value or 0 bins.
pub fn discrete_entropy(v: &[f64], bins: usize) -> f64 {
    if v.is_empty() || bins == 0 || !finite(v) {
        return f64::NAN;
    }
    let (mut lo, mut hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    if lo == hi {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    // numpy's edges (`linspace`: i * step + lo, the last one `hi`) and its bin search: the
    // scaled index, then one step down or up where rounding put a value across an edge.
    let step = (hi - lo) / bins as f64;
    let edge = |i: usize| if i == bins { hi } else { i as f64 * step + lo };
    let mut counts = vec![0u64; bins];
    for &x in v {
        let mut i = (((x - lo) / (hi - lo)) * bins as f64) as usize;
        if i >= bins {
            i = bins - 1;
        }
        if x < edge(i) {
            i -= 1;
        } else if i != bins - 1 && x >= edge(i + 1) {
            i += 1;
        }
        counts[i] += 1;
    }
    let n = v.len() as f64;
    -counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            p * p.ln()
        })
        .sum::<f64>()
}

/// Similarity (histogram intersection): the sum of the pixelwise minimum of the two maps, each
/// normalised to sum 1. 1 for equal maps, 0 for disjoint ones.
pub fn sim(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "sim: maps of different sizes");
    if !finite(a) || !finite(b) {
        return f64::NAN;
    }
    let (pa, pb) = (density(a, 0.0), density(b, 0.0));
    pa.iter().zip(&pb).map(|(x, y)| x.min(*y)).sum()
}

/// The benchmark's image-based KL divergence of `truth` from `pred` (not symmetric):
/// `sum q log(eps + q / (p + eps))` with p and q the maps as densities and eps = 2.2204e-16
/// (Matlab's `eps`), as the MIT benchmark's code and pysaliency's `MIT_KLDiv` compute it.
/// 0 for equal maps; lower is better.
pub fn kl(pred: &[f64], truth: &[f64]) -> f64 {
    assert_eq!(pred.len(), truth.len(), "kl: maps of different sizes");
    if !finite(pred) || !finite(truth) {
        return f64::NAN;
    }
    const EPS: f64 = 2.2204e-16;
    let (p, q) = (density(pred, 0.0), density(truth, 0.0));
    p.iter()
        .zip(&q)
        .map(|(p, q)| q * (EPS + q / (p + EPS)).ln())
        .sum()
}

/// The values of `map` (`w` wide) at the fixations.
fn at(map: &[f64], w: usize, fixations: &[(usize, usize)]) -> Vec<f64> {
    fixations
        .iter()
        .map(|&(x, y)| {
            assert!(
                x < w && y * w + x < map.len(),
                "fixation ({x}, {y}) outside the map"
            );
            map[y * w + x]
        })
        .collect()
}

/// Normalised scanpath saliency: the mean over the fixations of the map standardised to mean
/// 0 and (population) standard deviation 1 (only centred when the map is constant).
pub fn nss(map: &[f64], w: usize, fixations: &[(usize, usize)]) -> f64 {
    if !finite(map) || fixations.is_empty() {
        return f64::NAN;
    }
    let (m, s) = mean_std(map);
    let s = if s > 0.0 { s } else { 1.0 };
    at(map, w, fixations)
        .iter()
        .map(|v| (v - m) / s)
        .sum::<f64>()
        / fixations.len() as f64
}

/// The area under the ROC curve of the map as a classifier of `positives` against
/// `negatives` (pysaliency's `general_roc`): with `judd`, thresholds only at the positives'
/// values (the AUC-Judd convention), else at every value (the exact Mann-Whitney AUC, ties
/// counted half). Trapezoids between the points, from (0, 0) to (1, 1).
pub fn roc_auc(positives: &[f64], negatives: &[f64], judd: bool) -> f64 {
    if positives.is_empty() || negatives.is_empty() || !finite(positives) || !finite(negatives) {
        return f64::NAN;
    }
    let desc = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| b.total_cmp(a));
        s
    };
    let (pos, neg) = (desc(positives), desc(negatives));
    let thresholds = if judd {
        let hi = pos[0].max(neg[0]) + 1.0;
        let lo = pos[pos.len() - 1].min(neg[neg.len() - 1]);
        let mut t = pos.clone();
        t.push(hi);
        t.push(lo);
        desc(&t)
    } else {
        let mut t = pos.clone();
        t.extend_from_slice(&neg);
        desc(&t)
    };
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut auc, mut last) = (0.0, (0.0f64, 0.0f64));
    for theta in thresholds {
        while tp < pos.len() && pos[tp] >= theta {
            tp += 1;
        }
        while fp < neg.len() && neg[fp] >= theta {
            fp += 1;
        }
        let point = (fp as f64 / nn, tp as f64 / np);
        auc += (point.0 - last.0) * (point.1 + last.1) / 2.0;
        last = point;
    }
    auc
}

/// AUC-Judd: the fixated values against every pixel of the map, thresholds at the fixated
/// values.
pub fn auc_judd(map: &[f64], w: usize, fixations: &[(usize, usize)]) -> f64 {
    roc_auc(&at(map, w, fixations), map, true)
}

/// AUC-Borji: the fixated values against uniformly drawn pixels. Computed exactly, against
/// every pixel (the expectation of Borji's 100 random draws of as many pixels as fixations),
/// so it needs no seed: pysaliency's `AUC` with uniform nonfixations.
pub fn auc_borji(map: &[f64], w: usize, fixations: &[(usize, usize)]) -> f64 {
    roc_auc(&at(map, w, fixations), map, false)
}

/// Shuffled AUC: the fixated values against the map's values at `other` fixations (those of
/// the other images of the set), which discounts a centre bias shared by the fixations.
pub fn auc_shuffled(
    map: &[f64],
    w: usize,
    fixations: &[(usize, usize)],
    other: &[(usize, usize)],
) -> f64 {
    roc_auc(&at(map, w, fixations), &at(map, w, other), false)
}

/// The map (`h x w`) averaged over cells to a grid of at most `cells` cells on its longer side
/// (`ceil(h / k) x ceil(w / k)` cells of `k x k` pixels, k = ceil(longer side / cells); a
/// clipped border cell averages the pixels it has), as a density (shifted to a minimum of 0,
/// divided by its sum). Returns the grid's height, width and values.
pub fn downsample(map: &[f64], h: usize, w: usize, cells: usize) -> (usize, usize, Vec<f64>) {
    assert_eq!(map.len(), h * w, "downsample: map size");
    let k = h.max(w).div_ceil(cells.max(1)).max(1);
    let (gh, gw) = (h.div_ceil(k), w.div_ceil(k));
    let mut g = vec![0.0; gh * gw];
    let mut n = vec![0usize; gh * gw];
    for y in 0..h {
        for x in 0..w {
            g[(y / k) * gw + x / k] += map[y * w + x];
            n[(y / k) * gw + x / k] += 1;
        }
    }
    let g: Vec<f64> = g.iter().zip(&n).map(|(s, n)| s / *n as f64).collect();
    (gh, gw, density(&g, 0.0))
}

/// The earth mover's distance between two maps of one size (`h x w`): both averaged to a grid
/// of at most `cells` cells on the longer side and made densities ([`downsample`]), the
/// ground distance the Euclidean distance between cell centres, in cells. Exact: the minimum
/// cost of moving one density onto the other, by successive shortest paths (the
/// transportation problem's optimum, as POT's `ot.emd2` finds it). 0 for equal maps; lower is
/// closer. Cost grows faster than cells^6: on 224 px noise maps 16 cells (256 bins) take about
/// 0.25 s, 32 cells about 21 s, 36-146x POT's network simplex (benches/README.md).
pub fn emd(a: &[f64], b: &[f64], h: usize, w: usize, cells: usize) -> f64 {
    assert_eq!(a.len(), b.len(), "emd: maps of different sizes");
    if !finite(a) || !finite(b) {
        return f64::NAN;
    }
    let (gh, gw, p) = downsample(a, h, w, cells);
    let (_, _, q) = downsample(b, h, w, cells);
    let n = gh * gw;
    let cost = |i: usize, j: usize| {
        let (dy, dx) = (
            (i / gw) as f64 - (j / gw) as f64,
            (i % gw) as f64 - (j % gw) as f64,
        );
        (dy * dy + dx * dx).sqrt()
    };
    transport(&p, &q, n, &cost)
}

/// The minimum cost of moving `supply` (n bins) onto `demand` (n bins, the same total) with
/// unlimited routes `i -> j` at `cost(i, j) >= 0`: successive shortest paths with node
/// potentials (Dijkstra on reduced costs, dense), each augmenting as much as its path allows.
fn transport(supply: &[f64], demand: &[f64], n: usize, cost: &dyn Fn(usize, usize) -> f64) -> f64 {
    // Masses below this are round-off of masses that sum to 1.
    const TINY: f64 = 1e-14;
    let mut left: Vec<f64> = supply.to_vec();
    let mut need: Vec<f64> = demand.to_vec();
    let mut flow = vec![0.0f64; n * n];
    // Potentials of the sources (0..n) and the sinks (n..2n).
    let mut pot = vec![0.0f64; 2 * n];
    let mut total = 0.0;
    loop {
        if !left.iter().any(|&v| v > TINY) || !need.iter().any(|&v| v > TINY) {
            break;
        }
        // Dijkstra from every source with mass left, on reduced costs.
        let mut dist = vec![f64::INFINITY; 2 * n];
        let mut prev = vec![usize::MAX; 2 * n];
        let mut done = vec![false; 2 * n];
        for i in 0..n {
            if left[i] > TINY {
                dist[i] = 0.0;
            }
        }
        let mut end = usize::MAX;
        loop {
            let mut u = usize::MAX;
            let mut best = f64::INFINITY;
            for (v, &d) in dist.iter().enumerate() {
                if !done[v] && d < best {
                    best = d;
                    u = v;
                }
            }
            if u == usize::MAX {
                break;
            }
            done[u] = true;
            if u >= n && need[u - n] > TINY {
                end = u;
                break;
            }
            if u < n {
                // Source u -> every sink j.
                for j in 0..n {
                    let v = n + j;
                    let d = best + cost(u, j) + pot[u] - pot[v];
                    if !done[v] && d < dist[v] {
                        dist[v] = d;
                        prev[v] = u;
                    }
                }
            } else {
                // Sink u -> the sources that send it flow (undoing some).
                let j = u - n;
                for i in 0..n {
                    if flow[i * n + j] > TINY {
                        let d = best - cost(i, j) + pot[u] - pot[i];
                        if !done[i] && d < dist[i] {
                            dist[i] = d;
                            prev[i] = u;
                        }
                    }
                }
            }
        }
        if end == usize::MAX {
            break;
        }
        let reach = dist[end];
        for v in 0..2 * n {
            pot[v] += dist[v].min(reach);
        }
        // The path's capacity: the source's mass, the sink's need, the flows it undoes.
        let mut amount = need[end - n];
        let mut v = end;
        while prev[v] != usize::MAX {
            let u = prev[v];
            if u >= n {
                amount = amount.min(flow[v * n + (u - n)]);
            }
            v = u;
        }
        amount = amount.min(left[v]);
        left[v] -= amount;
        need[end - n] -= amount;
        let mut v = end;
        while prev[v] != usize::MAX {
            let u = prev[v];
            if u < n {
                flow[u * n + (v - n)] += amount;
                total += amount * cost(u, v - n);
            } else {
                flow[v * n + (u - n)] -= amount;
                total -= amount * cost(v, u - n);
            }
            v = u;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_derived_values() {
        // CC of a map with itself, its negative, and a constant.
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((cc(&a, &a) - 1.0).abs() < 1e-15);
        assert!((cc(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-15);
        assert_eq!(cc(&a, &[2.0; 4]), 0.0);
        // SIM: densities [0.1 0.2 0.3 0.4] and [0.25 0.25 0.25 0.25]: mins 0.1 0.2 0.25 0.25.
        assert!((sim(&a, &[1.0; 4]) - 0.8).abs() < 1e-15);
        // KL of equal maps is 0 (up to eps).
        assert!(kl(&a, &a).abs() < 1e-12);
        // NSS: mean 2.5, std sqrt(1.25); the fixation on 4: 1.5 / sqrt(1.25).
        assert!((nss(&a, 2, &[(1, 1)]) - 1.5 / 1.25f64.sqrt()).abs() < 1e-15);
        // AUC: 4 against [1 2 3 4]: 3 below, 1 tie -> (3 + 0.5) / 4.
        assert!((auc_borji(&a, 2, &[(1, 1)]) - 0.875).abs() < 1e-15);
        // Judd: thresholds 5, 4, 1 -> points (0, 0), (0.25, 1), (1, 1): area 0.75 + ... = 0.875.
        assert!((auc_judd(&a, 2, &[(1, 1)]) - 0.875).abs() < 1e-15);
        assert!((auc_shuffled(&a, 2, &[(1, 1)], &[(0, 0), (1, 0)]) - 1.0).abs() < 1e-15);
        // EMD: all mass in one corner of a 2 x 2 grid against all in the opposite corner moves
        // 1 by sqrt(2); half of it in each of the other two corners moves 1 by 1.
        let (corner, opposite) = ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]);
        assert!((emd(&corner, &opposite, 2, 2, 2) - 2f64.sqrt()).abs() < 1e-12);
        assert!((emd(&corner, &[0.0, 1.0, 1.0, 0.0], 2, 2, 2) - 1.0).abs() < 1e-12);
        assert!(emd(&a, &a, 2, 2, 2).abs() < 1e-12);
        // Entropy: four values in four bins, ln 4; a constant map, 0; two bins holding 1 and 3
        // (the maximum falls in the closed last bin): -(1/4 ln 1/4 + 3/4 ln 3/4).
        assert!((discrete_entropy(&a, 4) - 4f64.ln()).abs() < 1e-15);
        assert_eq!(discrete_entropy(&[2.0; 5], 100), 0.0);
        let two = -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((discrete_entropy(&a, 2) - 0.5f64.ln().abs()).abs() < 1e-15);
        assert!((discrete_entropy(&[0.0, 1.0, 1.0, 1.0], 2) - two).abs() < 1e-15);
        // Downsampling a 4 x 4 map to 2 x 2 cells averages 2 x 2 blocks.
        let (gh, gw, g) = downsample(&[1.0; 16], 4, 4, 2);
        assert_eq!((gh, gw, g), (2, 2, vec![0.25; 4]));
    }

    #[test]
    fn non_finite_values_give_nan() {
        let bad = [1.0, f64::NAN, 0.0, 2.0];
        let good = [1.0, 2.0, 3.0, 4.0];
        assert!(cc(&bad, &good).is_nan() && cc(&good, &[f64::INFINITY; 4]).is_nan());
        assert!(sim(&bad, &good).is_nan() && kl(&good, &bad).is_nan());
        assert!(nss(&bad, 2, &[(0, 0)]).is_nan() && auc_judd(&bad, 2, &[(0, 0)]).is_nan());
        assert!(auc_borji(&bad, 2, &[(0, 0)]).is_nan());
        assert!(nss(&good, 2, &[]).is_nan(), "no fixations");
        assert!(discrete_entropy(&bad, 10).is_nan() && discrete_entropy(&[], 10).is_nan());
    }
}
