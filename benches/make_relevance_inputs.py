"""The relevance maps that the Table-1 pipeline feeds to context-aware saliency, as bench
inputs (benches/inputs/): the shipped EfficientNet-Lite0's `srp` and `epsilon-plus-flat` maps of
coffee.png and astronaut.png for the top class, turned into the saliency stage's input image
exactly as `relevance_input = "abs-rgb"` does (per channel |R|, one min-max over all channels,
H x W x 3 float32 in [0, 1]).

    pip install ./python numpy && python benches/make_relevance_inputs.py
"""

from pathlib import Path

import numpy as np

import srhost

OUT = Path("benches/inputs")


def abs_rgb(r):
    a = np.abs(r[0]).transpose(1, 2, 0)  # C x H x W -> H x W x C
    lo, hi = a.min(), a.max()
    return ((a - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    model = srhost.Model.torchvision()
    for photo in ["coffee", "astronaut"]:
        path = f"assets/images/{photo}.png"
        for composite in ["srp", "epsilon-plus-flat"]:
            r = model.explain(path, method="lrp", composite=composite)
            np.save(OUT / f"{photo}-{composite}.npy", abs_rgb(r))
            print(photo, composite, r.shape)


if __name__ == "__main__":
    main()
