"""What calling context-aware saliency from Python costs over the Rust benchmark of the same photo.

In one run: `srhost.saliency(path, variant="reference", max_dim=250)` from Python (median of 10
calls; it includes decoding the PNG and building the stage, which the Rust benchmark does not),
then criterion's `cpu/context_aware/reference/<photo>/250` (tests' `ca::saliency` on the same
photo and size). Needs the wheel installed (scripts/test.sh's venv, or `pip install ./python`)
and runs from the repository root:

    RAYON_NUM_THREADS=2 ~/.cache/srhost/pyenv/bin/python benches/python_saliency.py

The issue's target: Python at most 5% over Rust.
"""

import re
import statistics
import subprocess
import time

import srhost

PHOTOS = ["coffee.png", "astronaut.png"]


def python_seconds(photo, n=10):
    path = f"assets/images/{photo}"
    srhost.saliency(path, variant="reference", max_dim=250)  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        srhost.saliency(path, variant="reference", max_dim=250)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rust_seconds():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "cpu", "--", r"context_aware/reference/.*/250"],
        capture_output=True, text=True, check=True).stdout
    unit = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    found = {}
    for m in re.finditer(r"context_aware/reference/(\S+)/250\s+time:\s+\[\S+ \S+ (\S+) (\S+)", out):
        found[m.group(1)] = float(m.group(2)) * unit[m.group(3)]
    return found


def main():
    py = {p: python_seconds(p) for p in PHOTOS}
    rs = rust_seconds()
    print("| photo (250 px, reference) | Rust (criterion median) | Python (median of 10) | Python / Rust |")
    print("|---|---|---|---|")
    for p in PHOTOS:
        print(f"| {p} | {rs[p] * 1e3:.1f} ms | {py[p] * 1e3:.1f} ms | {py[p] / rs[p]:.3f} |")


if __name__ == "__main__":
    main()
