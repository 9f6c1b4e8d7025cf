"""JPEG decoding references: what PIL (Pillow, with its libjpeg-turbo) decodes, for
tests/jpeg_decode.rs. torchvision's ImageFolder/`default_loader` opens photos with
`PIL.Image.open(f).convert("RGB")`, so this is what PyTorch models are fed.

Writes tests/fixtures/jpeg/: two progressive and grey JPEGs made from the sample photos, and for
every JPEG tested (those two, plus assets/images/*.jpg) PIL's decoded RGB as a lossless PNG,
`<name>.pil.png`, and `versions.json`. Run from the repository root:

    pip install pillow numpy && python scripts/make_jpeg_fixtures.py
"""

import json
from pathlib import Path

import PIL
import PIL.features
from PIL import Image

out = Path("tests/fixtures/jpeg")
out.mkdir(parents=True, exist_ok=True)

# Progressive (4:2:0) and greyscale JPEGs, encoded by libjpeg-turbo through PIL.
Image.open("assets/images/rocket.jpg").convert("RGB").save(
    out / "rocket-progressive.jpg", quality=90, progressive=True, optimize=True)
Image.open("assets/images/grace_hopper.jpg").convert("L").save(
    out / "grace-hopper-grey.jpg", quality=85)
# 4:4:4 progressive, a different upsampling path.
Image.open("assets/images/grace_hopper.jpg").convert("RGB").save(
    out / "grace-hopper-444-progressive.jpg", quality=95, subsampling=0, progressive=True)

jpegs = sorted(Path("assets/images").glob("*.jpg")) + sorted(out.glob("*.jpg"))
for j in jpegs:
    with Image.open(j) as im:
        info = {"mode": im.mode, "size": im.size, "progressive": bool(im.info.get("progressive"))}
        im.convert("RGB").save(out / f"{j.stem}.pil.png")
    print(j, info)


def torchvision_crop(im, size=256, crop=224):
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image (what they call on PIL input:
    PIL's bilinear resize to a shorter side of 256, then the centred box)."""
    w, h = im.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    return im.crop((left, top, left + crop, top + crop))


# The model input crops of the JPEG photos, as a torchvision ImageNet pipeline makes them.
for j in jpegs:
    with Image.open(j) as im:
        torchvision_crop(im.convert("RGB")).save(out / f"{j.stem}.crop224.png")

(out / "versions.json").write_text(json.dumps({
    "pillow": PIL.__version__,
    "libjpeg_turbo": PIL.features.version("libjpeg_turbo"),
    "decoded": [str(j) for j in jpegs],
}, indent=1) + "\n")
