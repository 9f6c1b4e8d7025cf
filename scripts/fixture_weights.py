"""Random weights for the test fixtures' small torchvision models (imported by
make_zoo_fixtures.py and make_densenet_fixtures.py): He-scaled convolution and dense weights,
small biases, random BatchNorm and LayerNorm statistics and ConvNeXt layer scales, so that the
logits depend on the image (torchvision's own initialisation leaves some of these nets almost
constant). Draws from `gen` in module order, so a fixture is reproducible from its seed."""

import torch
from torch import nn


def randomise(model, gen):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.01
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5
        if isinstance(m, nn.LayerNorm):
            n = m.weight.numel()
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
    for name, p in model.named_parameters():
        if name.endswith("layer_scale"):
            p.data = torch.rand(p.shape, generator=gen) * 0.5 + 0.25
