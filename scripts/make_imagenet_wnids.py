"""Copy the ImageNet-1k WordNet IDs (torchvision's class order) from PyPI's timm into
assets/labels/imagenet-wnids.txt, and check them.

    python3 -m pip download --no-deps timm==1.0.31 -d /tmp/timm
    python3 scripts/make_imagenet_wnids.py /tmp/timm/timm-1.0.31-py3-none-any.whl
"""
import sys
import zipfile
from pathlib import Path

wheel = sys.argv[1]
with zipfile.ZipFile(wheel) as z:
    text = z.read("timm/data/_info/imagenet_synsets.txt").decode()
wnids = text.split()
assert len(wnids) == 1000, len(wnids)
# torchvision's ImageFolder numbers classes by their sorted folder names.
assert wnids == sorted(wnids), "not in sorted (torchvision) order"
assert wnids[0] == "n01440764" and wnids[967] == "n07920052"  # tench, espresso
out = Path(__file__).resolve().parent.parent / "assets/labels/imagenet-wnids.txt"
out.write_text("\n".join(wnids) + "\n")
print(f"wrote {out}: {len(wnids)} WordNet IDs")
