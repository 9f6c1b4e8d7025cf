"""Small torchvision models of the families whose ops srhost's ONNX importer learnt last
(tests/zoo.rs): MobileNetV3 (hard swish, hard-sigmoid gates), EfficientNet (SiLU,
squeeze-and-excitation), RegNetY (sigmoid gates), ConvNeXt (channels-last LayerNorm, GELU,
layer scale), ShuffleNetV2 (Split, channel shuffle) and MNASNet (mean over H, W).

Each is torchvision's own class with narrow widths and few blocks, 10 classes, seeded random
He-scaled weights and random BatchNorm and LayerNorm statistics, exported by
`torch.onnx.export(model, x, path, opset_version=13, dynamo=False)` (ConvNeXt also at opset
17, where LayerNorm is one op). Outputs, in tests/fixtures/zoo/:

- <name>.onnx;
- <name>/<img>/logits.npy: PyTorch's logits on the golden inputs
  (tests/fixtures/golden/inputs/<img>/input_imagenet.npy);
- <name>/<img>/lrp0.npy: the reference for srhost's LRP rules on the new ops, for the top class.
  It is gradient x input of a modified copy of the model, computed by autograd in float64,
  which equals LRP-0 (the epsilon rule with epsilon -> 0) with these rules:
  - the smooth activations (SiLU, hard swish, GELU, sigmoid, hard sigmoid) pass relevance
    unchanged: f(x) is computed as x * (f(x) / x).detach();
  - a gate passes all relevance to the signal and none to the gate (Arras et al. 2017):
    squeeze-and-excitation computes scale.detach() * x;
  - LayerNorm holds its normalising factor constant (Ali et al. 2022):
    (x - mean x) / sqrt(var x + eps).detach() * weight + bias;
  - everything else as autograd has it: max pooling to the first maximum, residual sums in
    proportion to their inputs, average pooling as a linear layer, BatchNorm as the affine map.
- <name>/coffee/gradient.npy: the plain gradient of the top logit (the unmodified model,
  float64 autograd), for srhost's `relevance.gradient` through the same ops;
- versions.json.

    pip install torch torchvision onnx numpy && python scripts/make_zoo_fixtures.py
"""

import importlib.metadata
import json
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, efficientnet, mnasnet, mobilenetv3, regnet, shufflenetv2
from torchvision.ops.misc import SqueezeExcitation

from fixture_weights import randomise

OUT = Path("tests/fixtures/zoo")
IMAGES = ["coffee", "chelsea"]


def mobilenet_v3():
    setting, last = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    return mobilenetv3.MobileNetV3(setting[:6], 128, num_classes=10)


def efficientnet_b0():
    setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.34)
    return efficientnet.EfficientNet(setting, 0.2, num_classes=10, last_channel=last)


def regnet_y():
    params = regnet.BlockParams.from_init_params(
        depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return regnet.RegNet(params, num_classes=10)


def convnext_small():
    cfg = convnext.CNBlockConfig
    return convnext.ConvNeXt([cfg(16, 32, 1), cfg(32, 48, 2), cfg(48, None, 1)], num_classes=10)


def shufflenet():
    return shufflenetv2.ShuffleNetV2([1, 2, 1], [8, 16, 32, 64, 128], num_classes=10)


def mnasnet_small():
    return mnasnet.MNASNet(0.25, num_classes=10)


MODELS = {
    "mobilenet_v3_small": (mobilenet_v3, [13]),
    "efficientnet_b0": (efficientnet_b0, [13]),
    "regnet_y": (regnet_y, [13]),
    "convnext": (convnext_small, [13, 17]),
    "shufflenet_v2": (shufflenet, [13]),
    "mnasnet": (mnasnet_small, [13]),
}


class PassAct(nn.Module):
    """f(x) as x * (f(x) / x).detach(): gradient x input passes relevance unchanged."""

    def __init__(self, f, at_zero):
        super().__init__()
        self.f, self.at_zero = f, at_zero

    def forward(self, x):
        y = self.f(x.clone())  # torchvision's activations run in place
        ratio = torch.where(x.abs() > 1e-12, y / torch.where(x == 0, torch.ones_like(x), x),
                            torch.full_like(x, self.at_zero))
        return x * ratio.detach()


def detached_layer_norm(x, weight, bias, eps):
    mu = x.mean(-1, keepdim=True)
    d = x - mu
    var = (d * d).mean(-1, keepdim=True)
    return d / torch.sqrt(var + eps).detach() * weight + bias


def lrp_graph(model):
    """The modified copy whose gradient x input is LRP-0 with srhost's rules (see above)."""
    smooth = {nn.SiLU: 0.5, nn.Hardswish: 0.5, nn.GELU: 0.5, nn.Sigmoid: 0.5, nn.Hardsigmoid: 0.5}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in smooth:
                setattr(parent, name, PassAct(child, smooth[type(child)]))
    for m in model.modules():
        if isinstance(m, SqueezeExcitation):
            m.forward = types.MethodType(lambda self, x: self._scale(x).detach() * x, m)
        if isinstance(m, convnext.LayerNorm2d):
            m.forward = types.MethodType(
                lambda self, x: detached_layer_norm(
                    x.permute(0, 2, 3, 1), self.weight, self.bias, self.eps).permute(0, 3, 1, 2), m)
        elif isinstance(m, nn.LayerNorm):
            m.forward = types.MethodType(
                lambda self, x: detached_layer_norm(x, self.weight, self.bias, self.eps), m)
    return model


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, (make, opsets)) in enumerate(MODELS.items()):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = make()
        randomise(model, gen)
        model.eval()
        x0 = torch.zeros(1, 3, 224, 224)
        for opset in opsets:
            path = OUT / (f"{name}.onnx" if opset == 13 else f"{name}_opset{opset}.onnx")
            torch.onnx.export(model, x0, str(path), opset_version=opset, dynamo=False,
                              input_names=["input"], output_names=["logits"])
        ref = lrp_graph(make())
        ref.load_state_dict(model.state_dict())
        ref = ref.double().eval()
        for img in IMAGES:
            x = torch.from_numpy(np.load(f"tests/fixtures/golden/inputs/{img}/input_imagenet.npy"))
            d = OUT / name / img
            d.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                logits = model(x)
            np.save(d / "logits.npy", logits.numpy().astype(np.float32))
            target = int(logits.argmax())
            xd = x.double().requires_grad_(True)
            out = ref(xd)
            assert abs(float(out[0, target]) - float(logits[0, target])) < 1e-3 * max(1.0, abs(float(logits[0, target]))), name
            out[0, target].backward()
            np.save(d / "lrp0.npy", (xd * xd.grad).detach().numpy().astype(np.float32))
            if img == "coffee":
                plain = make()
                plain.load_state_dict(model.state_dict())
                plain = plain.double().eval()
                xg = x.double().requires_grad_(True)
                plain(xg)[0, target].backward()
                np.save(d / "gradient.npy", xg.grad.numpy().astype(np.float32))
            print(name, img, "top", target, "logit", float(logits[0, target]),
                  "sum R", float((xd * xd.grad).sum()))
    versions = {p: importlib.metadata.version(p) for p in ["torch", "torchvision", "onnx", "numpy"]}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")


if __name__ == "__main__":
    main()
