"""The sanity study's table (docs/paper.md, "Sanity check") from a run of configs/sanity.toml:
per branch, the Table-1 figures of the trained and of the fully randomized model with 95%
bootstrap intervals of the mean ratio, how often the ratio is above 1 and how often the
randomized model's is higher, and the randomization measures (Spearman of |R|, SSIM of the SR
maps, the efficient MPRT).

    python3 scripts/sanity_study.py out/sanity/metrics.csv

numpy only; the bootstrap is seeded (10,000 resamples of the images).
"""

import csv
import sys

import numpy as np


def col(rows, key):
    return np.array([float(r[key]) if r[key] not in ("", "NaN") else np.nan for r in rows])


def ci(v, rng, n=10_000):
    v = v[np.isfinite(v)]
    means = rng.choice(v, size=(n, len(v)), replace=True).mean(1)
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


def main(path):
    rows = list(csv.DictReader(open(path, newline="")))
    branches = list(dict.fromkeys(r["branch"] for r in rows))
    images = {r["image"] for r in rows}
    correct = {r["image"] for r in rows if r["correct"] == "true"}
    print(f"{len(images)} images, {len(correct)} classified right\n")
    print("| method | model | SSIM1 | SSIM2 | SSIM2 / SSIM1 | ratio > 1 | Spearman of \\|R\\|, trained vs randomized "
          "| SSIM of the SR maps, trained vs randomized | eMPRT, relevance / SR map |")
    print("|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for b in branches:
        rs = [r for r in rows if r["branch"] == b]
        n = len(rs)
        t1, t2, tr = col(rs, "ssim1"), col(rs, "ssim2"), col(rs, "ssim_ratio")
        r1, r2, rr = col(rs, "random_ssim1"), col(rs, "random_ssim2"), col(rs, "random_ssim_ratio")
        sp, ss = col(rs, "random_spearman"), col(rs, "random_ssim_sr")
        e1, e2 = col(rs, "random_emprt"), col(rs, "random_emprt_sr")
        lo, hi = ci(tr, rng)
        print(f"| `{b}` | trained | {np.nanmean(t1):.3f} | {np.nanmean(t2):.3f} | **{np.nanmean(tr):.3f}** "
              f"({lo:.2f}-{hi:.2f}) | {int(np.sum(tr > 1))} of {n} | | | |")
        lo, hi = ci(rr, rng)
        print(f"| `{b}` | randomized | {np.nanmean(r1):.3f} | {np.nanmean(r2):.3f} | **{np.nanmean(rr):.3f}** "
              f"({lo:.2f}-{hi:.2f}) | {int(np.sum(rr > 1))} of {n} | {np.nanmean(sp):.3f} | {np.nanmean(ss):.3f} "
              f"| {np.nanmean(e1):+.3f} / {np.nanmean(e2):+.3f} |")
    print()
    for b in branches:
        rs = [r for r in rows if r["branch"] == b]
        tr, rr = col(rs, "ssim_ratio"), col(rs, "random_ssim_ratio")
        ok = np.isfinite(tr) & np.isfinite(rr)
        print(f"{b}: randomized ratio higher on {int(np.sum(rr[ok] > tr[ok]))} of {int(ok.sum())}; "
              f"SSIM2 lower on {int(np.sum(col(rs, 'random_ssim2')[ok] < col(rs, 'ssim2')[ok]))}")


if __name__ == "__main__":
    main(sys.argv[1])
