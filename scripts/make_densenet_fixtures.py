"""A narrow DenseNet-121 checkpoint as torchvision saves it, and PyTorch's outputs on it, for the
torchvision-checkpoint backend's DenseNet family (tests/densenet.rs).

torchvision's own DenseNet class with DenseNet-121's blocks (6-12-24-16 layers) and narrow
widths (growth rate 4, bottleneck 2 x 4, 8 initial features), 10 classes, seeded random
He-scaled weights and random BatchNorm statistics. Saved with torch.save(model.state_dict()),
and once more with the key names of torchvision's pretrained DenseNet files (`norm.1` for
`norm1`, which torchvision renames on load).

Outputs (tests/fixtures/densenet/): densenet121_narrow.pth, densenet121_narrow_hub_keys.pth;
<img>/logits.npy on the golden inputs; <img>/lrp0.npy: gradient x input of the top logit in
float64, which for this ReLU network is LRP-0 (the epsilon rule with epsilon -> 0, BatchNorm and
average pooling as linear layers, max pooling to the first maximum); coffee/gradient.npy: the
gradient; versions.json.

    pip install torch torchvision numpy && python scripts/make_densenet_fixtures.py
"""

import importlib.metadata
import json
import re
from pathlib import Path

import numpy as np
import torch
from torchvision.models.densenet import DenseNet

from fixture_weights import randomise

OUT = Path("tests/fixtures/densenet")
IMAGES = ["coffee", "chelsea"]


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = DenseNet(growth_rate=4, block_config=(6, 12, 24, 16), num_init_features=8, bn_size=2,
                     num_classes=10)
    randomise(model, gen)
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    torch.save(sd, OUT / "densenet121_narrow.pth")
    hub = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in sd.items()}
    assert any(".norm.1." in k for k in hub)
    torch.save(hub, OUT / "densenet121_narrow_hub_keys.pth")
    ref = model.double()
    for img in IMAGES:
        x = torch.from_numpy(np.load(f"tests/fixtures/golden/inputs/{img}/input_imagenet.npy")).double()
        d = OUT / img
        d.mkdir(parents=True, exist_ok=True)
        x.requires_grad_(True)
        logits = ref(x)
        np.save(d / "logits.npy", logits.detach().numpy().astype(np.float32))
        target = int(logits.argmax())
        logits[0, target].backward()
        np.save(d / "lrp0.npy", (x * x.grad).detach().numpy().astype(np.float32))
        if img == "coffee":
            np.save(d / "gradient.npy", x.grad.numpy().astype(np.float32))
        print(img, "top", target, float(logits[0, target]), float((x * x.grad).sum()))
    versions = {p: importlib.metadata.version(p) for p in ["torch", "torchvision", "numpy"]}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")


if __name__ == "__main__":
    main()
