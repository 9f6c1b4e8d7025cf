"""The earth mover's distance of sr_core::metrics::saliency (through the Python package) against
POT's exact `ot.emd2` (network simplex) on the same two 224 x 224 noise maps, averaged to the
same grids; best of 3 (1 at 32 cells). Table in benches/README.md.

    pip install srhost/python wheel, numpy, pot==0.9.7.post1; python benches/emd_vs_pot.py
"""
import time, numpy as np, ot, srhost
rng = np.random.default_rng(0)
a = rng.random((224, 224)).astype(np.float32); b = rng.random((224, 224)).astype(np.float32)
def grid(m, cells):
    h, w = m.shape; k = -(-max(h, w) // cells); gh, gw = -(-h // k), -(-w // k)
    g = np.array([[m[y*k:(y+1)*k, x*k:(x+1)*k].mean() for x in range(gw)] for y in range(gh)], dtype=np.float64)
    return g / g.sum()
def pot(a, b, cells):
    p, q = grid(a, cells), grid(b, cells)
    yy, xx = np.mgrid[0:p.shape[0], 0:p.shape[1]]
    c = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    return ot.emd2(p.ravel(), q.ravel(), ot.dist(c, c, metric="euclidean"))
def best(f, n=3):
    t = []
    for _ in range(n):
        s = time.perf_counter(); v = f(); t.append(time.perf_counter() - s)
    return min(t), v
for cells in (8, 16, 24, 32):
    n = 3 if cells < 32 else 1
    ts, vs = best(lambda: srhost.emd(a, b, cells=cells), n)
    tp, vp = best(lambda: pot(a, b, cells), n)
    print(f"| {cells} | {cells*cells} | {ts:.3f} s | {tp:.3f} s | {ts/tp:.0f}x | {abs(vs-vp):.1e} |")
