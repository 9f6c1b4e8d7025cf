"""Canny edges from scikit-image, the independent reference for srhost's edge map (the grey
layer of the SR panels, plugins/render-basic: imageproc's Canny).

Inputs (tests/fixtures/canny/): `<name>.png`, grey uint8 crops of scikit-image's photos
(`round(mean(R, G, B))`, which is the grey srhost computes from an RGB photo); outputs:
`<name>_skimage.png`, `skimage.feature.canny(grey as float, sigma=1.4, low_threshold=50,
high_threshold=100)` as a 0/255 mask: the same sigma imageproc fixes and the thresholds srhost
uses by default, on the same 0-255 scale of the (unnormalised) Sobel gradient magnitude.

    pip install scikit-image==0.26.0 numpy pillow && python3 scripts/make_canny_fixtures.py
"""

from pathlib import Path

import numpy as np
import skimage
from PIL import Image
from skimage.feature import canny

OUT = Path("tests/fixtures/canny")
# (photo, top, left, size): a textured crop (coffee cup and saucer) and a portrait (astronaut).
CROPS = {"coffee": ("coffee", 100, 200, 128), "astronaut": ("astronaut", 40, 150, 128)}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (src, top, left, size) in CROPS.items():
        rgb = np.asarray(Image.open(Path(skimage.__file__).parent / "data" / f"{src}.png").convert("RGB"))
        crop = rgb[top:top + size, left:left + size].astype(np.float64)
        grey = np.round(crop.mean(axis=2)).astype(np.uint8)
        Image.fromarray(grey).save(OUT / f"{name}.png")
        edges = canny(grey.astype(np.float64), sigma=1.4, low_threshold=50, high_threshold=100)
        Image.fromarray((edges * 255).astype(np.uint8)).save(OUT / f"{name}_skimage.png")
        print(name, grey.shape, "edge pixels", int(edges.sum()))
    (OUT / "versions.txt").write_text(f"scikit-image {skimage.__version__}\nnumpy {np.__version__}\n")


if __name__ == "__main__":
    main()
