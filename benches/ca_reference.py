"""Time the numpy brute force of the context-aware saliency (benches/reference/ca_ref.py, a
copy of the project's speed baseline) on the photos and working sizes of the Rust bench.

    python3 benches/ca_reference.py [--sizes 128 250] [--photos coffee astronaut] [--relevance]

--relevance times the relevance-map inputs of `cpu/context_aware_relevance` instead
(benches/inputs/<photo>-<map>.npy, 250 px).

Needs numpy, scipy, scikit-image. Prints one line per measurement (seconds, one run each:
the 250 px runs take minutes).
"""
import argparse
import os
import sys
import time

import numpy as np
from skimage import io

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "reference"))
import ca_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 250])
    ap.add_argument("--photos", nargs="+", default=["coffee", "astronaut"])
    ap.add_argument("--relevance", action="store_true")
    a = ap.parse_args()
    print(f"numpy {np.__version__}")
    if a.relevance:
        for photo in a.photos:
            for m in ["srp", "epsilon-plus-flat"]:
                img = np.load(os.path.join("benches", "inputs", f"{photo}-{m}.npy"))
                t = time.perf_counter()
                ca_ref.ca_saliency(img, mode="tsai", max_dim=250)
                print(f"numpy/context_aware_relevance/{photo}-{m}/250: {time.perf_counter() - t:.2f} s")
        return
    for photo in a.photos:
        img = io.imread(os.path.join("assets", "images", photo + ".png"))[..., :3].astype(np.float32) / 255.0
        for size in a.sizes:
            t = time.perf_counter()
            ca_ref.ca_saliency(img, mode="tsai", max_dim=size)
            print(f"numpy/context_aware/{photo}.png/{size}: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
