"""Narrow ResNet checkpoints as torchvision saves them, and PyTorch's outputs on them, for the
torchvision-checkpoint backend's ResNet family (tests/resnet.rs).

torchvision's ResNet class hard-codes its widths (64 ... 512), so the models here subclass it
only to divide every width by 8 (the blocks are torchvision's own BasicBlock and Bottleneck, so
the state-dict keys and the computation are torchvision's), with 10 classes, seeded random
weights and random BatchNorm statistics. Saved with torch.save(model.state_dict()), the format
torchvision's pretrained files use.

Outputs (tests/fixtures/resnet/): <arch>_narrow.pth; <arch>_narrow/<img>/logits.npy for the golden
inputs (tests/fixtures/golden/inputs/<img>/input_imagenet.npy); <arch>_narrow/<img>/
epsilon_plus_flat.npy, Zennit's EpsilonPlusFlat with its ResNetCanonizer (the composite srhost's
`epsilon-plus-flat` follows), for the top class; versions.json.

    pip install torch torchvision zennit numpy && python scripts/make_resnet_fixtures.py
"""

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

DIV = 8
OUT = Path("tests/fixtures/resnet")
IMAGES = ["coffee", "chelsea", "astronaut"]


class NarrowResNet(ResNet):
    """torchvision's ResNet.__init__ with every width divided by DIV."""

    def __init__(self, block, layers, num_classes=10, groups=1, width_per_group=64):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = 64 // DIV
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64 // DIV, layers[0])
        self.layer2 = self._make_layer(block, 128 // DIV, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256 // DIV, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512 // DIV, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 // DIV * block.expansion, num_classes)


MODELS = {
    "resnet18": lambda: NarrowResNet(BasicBlock, [2, 2, 2, 2]),
    "resnet50": lambda: NarrowResNet(Bottleneck, [3, 4, 6, 3]),
    # ResNeXt-style grouped 3 x 3 convolutions (4 groups of 4 channels at this width).
    "resnext50_32x4d": lambda: NarrowResNet(Bottleneck, [3, 4, 6, 3], groups=4, width_per_group=32),
}


def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (arch, make) in enumerate(MODELS.items()):
        gen = torch.Generator().manual_seed(seed)
        model = make()
        randomise_bn(model, gen)
        model.eval()
        torch.save(model.state_dict(), OUT / f"{arch}_narrow.pth")
        for img in IMAGES:
            x = torch.from_numpy(np.load(f"tests/fixtures/golden/inputs/{img}/input_imagenet.npy"))
            d = OUT / f"{arch}_narrow" / img
            d.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                logits = model(x)
            np.save(d / "logits.npy", logits.numpy().astype(np.float32))
            target = int(logits.argmax())
            composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
            x = x.clone().requires_grad_(True)
            with composite.context(model) as modified:
                out = modified(x)
                # The golden set's convention: output relevance one-hot(target) * logit[target].
                seed = torch.eye(10)[[target]] * out[:, target:target + 1].detach()
                (grad,) = torch.autograd.grad(out, x, seed)
            relevance = grad.detach()
            np.save(d / "epsilon_plus_flat.npy", relevance.numpy().astype(np.float32))
            print(arch, img, "top", target, "relevance sum", float(relevance.sum()), "logit", float(logits[0, target]))
    (OUT / "versions.json").write_text(json.dumps({
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "zennit": importlib.metadata.version("zennit"), "width_divisor": DIV, "classes": 10,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
