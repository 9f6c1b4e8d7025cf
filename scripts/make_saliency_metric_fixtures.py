"""Reference values of the saliency benchmark's metrics from pysaliency, for srhost's
sr_core::metrics::saliency (tests/saliency_metrics.rs).

Three cases on small maps (20 x 30): two smooth maps (sums of Gaussian blobs, one with negative
values), a map quantised to 8 levels (many ties, which the AUCs count half), each with a
prediction, a second map, fixations on the first image and fixations of other images (the
shuffled AUC's negatives). pysaliency computes:
- CC: `pysaliency.metrics.CC`; SIM: `metrics.SIM`; KL: `metrics.MIT_KLDiv(pred, truth)`;
- NSS: the mean of `metrics.NSS` over the fixations;
- Spearman: `scipy.stats.spearmanr` (ties: mean ranks; the "ties" case has many);
- EMD: POT's exact `ot.emd2` between the two maps averaged over k x k cells (k = ceil(longer
  side / cells), cells 8 and 16; numpy block means of the pixels each cell has, shifted to a
  minimum of 0 and divided by the sum), the ground distance the Euclidean distance between
  cell centres (`ot.dist(..., metric="euclidean")`);
- AUC-Judd, AUC-Borji (every pixel as a negative) and the shuffled AUC: pysaliency's
  `SaliencyMapModel.AUC_per_image` with thresholds 'fixations' / nonfixations 'uniform',
  thresholds 'all' / 'uniform', and thresholds 'all' / the other images' fixations.

    pip install pysaliency==0.2.22 "setuptools<81" torch numpy pot==0.9.7.post1 && \
        python3 scripts/make_saliency_metric_fixtures.py
"""

import json
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

warnings.filterwarnings("ignore")
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid  # removed in numpy 2.4; pysaliency 0.2.22 still calls it (same function)
import pysaliency  # noqa: E402
from pysaliency import metrics  # noqa: E402

OUT = Path("tests/fixtures/saliency_metrics/cases.json")
H, W = 20, 30


def blobs(rng, n):
    yy, xx = np.mgrid[0:H, 0:W]
    m = np.zeros((H, W))
    for _ in range(n):
        cy, cx, s, a = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(2, 6), rng.uniform(0.2, 1)
        m += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return m


class Fixed(pysaliency.SaliencyMapModel):
    def __init__(self, m):
        super().__init__(caching=False)
        self.m = m

    def _saliency_map(self, stimulus):
        return self.m


def grid(m, cells):
    h, w = m.shape
    k = -(-max(h, w) // cells)
    gh, gw = -(-h // k), -(-w // k)
    g = np.array([[m[y * k:(y + 1) * k, x * k:(x + 1) * k].mean() for x in range(gw)] for y in range(gh)])
    if g.min() < 0:
        g = g - g.min()
    return g / g.sum()


def emd(a, b, cells):
    import ot
    p, q = grid(a, cells), grid(b, cells)
    yy, xx = np.mgrid[0:p.shape[0], 0:p.shape[1]]
    centres = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    return ot.emd2(p.ravel(), q.ravel(), ot.dist(centres, centres, metric="euclidean"))


def aucs(pred, fix, other):
    stimuli = pysaliency.Stimuli([np.zeros((H, W, 3), dtype=np.uint8)])
    xs, ys = zip(*fix)
    f = pysaliency.Fixations.FixationsWithoutHistory(
        np.array(xs, float), np.array(ys, float), np.zeros(len(xs)), np.zeros(len(xs), int), np.zeros(len(xs), int))
    ox, oy = zip(*other)
    o = pysaliency.Fixations.FixationsWithoutHistory(
        np.array(ox, float), np.array(oy, float), np.zeros(len(ox)), np.zeros(len(ox), int), np.zeros(len(ox), int))
    model = Fixed(pred)
    return {
        "auc_judd": model.AUC_per_image(stimuli, f, nonfixations="uniform", thresholds="fixations")[0],
        "auc_borji": model.AUC_per_image(stimuli, f, nonfixations="uniform", thresholds="all")[0],
        "auc_shuffled": model.AUC_per_image(stimuli, f, nonfixations=o, thresholds="all")[0],
    }


def main():
    rng = np.random.default_rng(7)
    cases = []
    for name in ["smooth", "negative", "ties"]:
        pred, truth = blobs(rng, 4), blobs(rng, 3)
        if name == "negative":
            pred = pred - 0.3
        if name == "ties":
            pred = np.floor(pred / pred.max() * 7.999)
        # Fixations drawn from the truth map as a density; other images' near the centre.
        p = (truth / truth.sum()).ravel()
        idx = rng.choice(H * W, size=15, p=p)
        fix = [(int(i % W), int(i // W)) for i in idx]
        other = [(int(np.clip(rng.normal(W / 2, 5), 0, W - 1)), int(np.clip(rng.normal(H / 2, 4), 0, H - 1)))
                 for _ in range(25)]
        xs, ys = zip(*fix)
        want = {
            "cc": metrics.CC(pred, truth),
            "sim": metrics.SIM(pred, truth),
            "kl": metrics.MIT_KLDiv(pred, truth),
            "nss": float(np.mean(metrics.NSS(pred, xs, ys))),
            "emd_8": emd(pred, truth, 8),
            "emd_16": emd(pred, truth, 16),
            "spearman": float(spearmanr(pred.ravel(), truth.ravel()).statistic),
        }
        want.update(aucs(pred, fix, other))
        cases.append({"name": name, "h": H, "w": W, "pred": pred.ravel().tolist(), "truth": truth.ravel().tolist(),
                      "fixations": fix, "other_fixations": other,
                      "reference": {k: float(v) for k, v in want.items()}})
        print(name, {k: round(float(v), 6) for k, v in want.items()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"made_by": f"scripts/make_saliency_metric_fixtures.py, pysaliency "
                                          f"{version('pysaliency')}, POT {version('pot')}, numpy {np.__version__}, scipy {version('scipy')}",
                               "cases": cases}) + "\n")


if __name__ == "__main__":
    main()
