"""Make tests/fixtures/mprt: Quantus's MPRT, smooth MPRT and efficient MPRT (Hedström et al.
2023) on a small seeded CNN, for tests/mprt.rs to compare with srhost's `[metrics]
randomization`.

    python -m venv /tmp/q && /tmp/q/bin/pip install quantus==0.6.0 torch torchvision captum \
        onnx onnxscript pillow && /tmp/q/bin/python scripts/make_mprt_fixtures.py

What is srhost's and what is the reference's:
- The model, its input and its ONNX file are made here by PyTorch (seeded weights).
- The layer order is Quantus's (`named_modules()` with `reset_parameters`, reversed: top down);
  the test checks that srhost randomizes the same layers in the same order.
- Quantus randomizes a layer by re-initialising it from torch's generator, which srhost cannot
  reproduce; srhost permutes a layer's weight and bias (seeded). So Quantus's model interface
  is patched to keep its loop (the same modules, cascading, top down) and to replace only
  `reset_parameters()` by that permutation, written here from its specification in core/nn/src/randomize.rs (xorshift
  Fisher-Yates, the node's seed from the run's seed, the node's index in srhost's graph and
  the tensor's index among the node's parameters). A node's index in srhost's graph is its
  index in the ONNX file plus one (node 0 is the input; the importer keeps this file's nodes
  one for one); the test checks it.
- The explanations are PyTorch's gradients (autograd; Captum's `Saliency` without abs in the
  smooth MPRT, which calls `quantus.explain`), and the scores are Quantus's: MPRT with Spearman
  of sum over channels of |gradient| (scipy), eMPRT with Quantus's `discrete_entropy` of that
  image (100 bins), sMPRT with Quantus's noise and averaging.
- The smooth MPRT's noise is numpy's in Quantus and srhost's own in srhost, so the two agree
  only up to Monte-Carlo error: the fixture records Quantus's sMPRT under several numpy seeds,
  whose spread sets the test's tolerance.
"""

import copy
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

import quantus
from quantus.functions.complexity_func import discrete_entropy
from quantus.helpers.model.pytorch_model import PyTorchModel

OUT = Path("tests/fixtures/mprt")
M = (1 << 64) - 1
SEED = 5
SIZE = 32
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
SMOOTH_SAMPLES = 20
SMOOTH_NOISE = 0.1
SMOOTH_SEEDS = 8


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.pool = torch.nn.AvgPool2d(2)
        self.conv2 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 16 * 16, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


def shuffle(values, seed):
    """core/kit/src/metrics.rs `shuffle`: xorshift Fisher-Yates."""
    s = ((seed * 0x9E3779B97F4A7C15) & M) | 1
    for i in range(len(values) - 1, 0, -1):
        s ^= (s << 13) & M
        s ^= s >> 7
        s ^= (s << 17) & M
        j = s % (i + 1)
        values[i], values[j] = values[j], values[i]


def permute_(module, node, seed):
    """core/nn/src/randomize.rs `randomized` on one node: weight (parameter 0), bias (1)."""
    with torch.no_grad():
        for k, p in enumerate([module.weight, module.bias]):
            s = seed ^ ((node << 20) & M) ^ ((k * 0xA24BAED4963EE407) & M)
            v = p.detach().flatten().tolist()
            shuffle(v, s)
            p.copy_(torch.tensor(v, dtype=p.dtype).reshape(p.shape))


def onnx_nodes(path, net):
    """Each learned module's ONNX node: srhost's index of it (the ONNX index + 1) and its name
    (found by the weight's values)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for name, mod in net.named_modules():
        if not hasattr(mod, "reset_parameters"):
            continue
        w = mod.weight.detach().numpy()
        for idx, n in enumerate(m.graph.node):
            for inp in n.input:
                a = inits.get(inp)
                if a is not None and a.size == w.size and np.array_equal(a.reshape(-1), w.reshape(-1)):
                    out[name] = (idx + 1, n.name, n.op_type)
    return out, [n.op_type for n in m.graph.node]


NODES = {}


def permuting_generator(self, order="top_down", seed=42):
    """Quantus's `PyTorchModel.get_random_layer_generator` (the same modules, order and
    copies) with srhost's permutation in place of `reset_parameters()`."""
    original = self.state_dict()
    model = copy.deepcopy(self.model)
    modules = [m for m in model.named_modules() if hasattr(m[1], "reset_parameters")]
    if order == "top_down":
        modules = modules[::-1]
    for name, module in modules:
        if order == "independent":
            model.load_state_dict(original)
        permute_(module, NODES[name][0], seed)
        yield name, model


# Every metric wraps the torch model in this class itself, so the class is patched.
PyTorchModel.get_random_layer_generator = permuting_generator


def spearman_abs_sum(a, b, batched=True, **_):
    """Spearman of the |gradient| images (summed over channels), per sample (scipy)."""
    out = []
    for x, y in zip(a, b):
        x = np.abs(x.reshape(3, -1)).sum(0)
        y = np.abs(y.reshape(3, -1)).sum(0)
        out.append(float(spearmanr(x, y).statistic))
    return np.array(out)


def gradient(model, inputs, targets, **_):
    """The plain gradient of the target logit (autograd), N x C x H x W."""
    x = torch.tensor(np.asarray(inputs), dtype=torch.float32, requires_grad=True)
    out = model(x)
    out[torch.arange(len(x)), torch.tensor(np.asarray(targets))].sum().backward()
    return x.grad.detach().numpy()


def abs_sum_gradient(model, inputs, targets, **kw):
    return np.abs(gradient(model, inputs, targets, **kw)).sum(1, keepdims=True)


def entropy_cases(rng):
    cases = []
    for name, v in [
        ("smooth", rng.random(1000)),
        ("heavy_tail", rng.standard_cauchy(1000)),
        ("ties", np.round(rng.random(777) * 7) / 7),
        ("edges", np.linspace(0.0, 1.0, 101)),
        ("constant", np.full(50, 0.3)),
    ]:
        for bins in [10, 100]:
            cases.append({"name": f"{name}_{bins}", "bins": bins, "values": v.tolist(),
                          "entropy": float(discrete_entropy(a=v, x=v, n_bins=bins))})
    return cases


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2023)
    torch.manual_seed(0)
    net = Net().eval()
    # The photo: the shipped coffee photo, resized to the model's input by PIL.
    photo = Image.open("assets/images/coffee.png").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    photo.save(OUT / "photo.png")
    x = (np.asarray(photo, dtype=np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    with torch.no_grad():
        logits = net(torch.tensor(x))
    target = int(logits.argmax())
    onnx_path = OUT / "net.onnx"
    torch.onnx.export(net, (torch.tensor(x),), str(onnx_path), input_names=["input"],
                      output_names=["logits"], dynamo=False)
    nodes, ops = onnx_nodes(onnx_path, net)
    NODES.update(nodes)
    model = PyTorchModel(net, channel_first=True, softmax=False, device="cpu")
    order = [n for n, _ in model.get_random_layer_generator(order="top_down", seed=SEED)]
    y = np.array([target])

    mprt = quantus.MPRT(similarity_func=spearman_abs_sum, layer_order="top_down", seed=SEED,
                        abs=False, normalise=False, disable_warnings=True, display_progressbar=False)
    mprt_scores = mprt(model=net, x_batch=x, y_batch=y, a_batch=None, explain_func=gradient,
                       explain_func_kwargs={}, batch_size=1)

    emprt = quantus.EfficientMPRT(layer_order="top_down", seed=SEED, abs=False, normalise=False,
                                  complexity_func_kwargs={"n_bins": 100}, compute_extra_scores=True,
                                  disable_warnings=True, display_progressbar=False)
    emprt_scores = emprt(model=net, x_batch=x, y_batch=y, a_batch=None, explain_func=abs_sum_gradient,
                         explain_func_kwargs={}, batch_size=1)

    smooth = []
    for s in range(SMOOTH_SEEDS):
        np.random.seed(1000 + s)
        smprt = quantus.SmoothMPRT(similarity_func=spearman_abs_sum, layer_order="top_down", seed=SEED,
                                   nr_samples=SMOOTH_SAMPLES, noise_magnitude=SMOOTH_NOISE, abs=False,
                                   normalise=False, disable_warnings=True, display_progressbar=False)
        scores = smprt(model=net, x_batch=x, y_batch=y, a_batch=None, explain_func=quantus.explain,
                       explain_func_kwargs={"method": "Gradient", "reduce_axes": ()}, batch_size=1)
        smooth.append({k: float(v[0]) for k, v in scores.items()})

    fixture = {
        "made_by": f"scripts/make_mprt_fixtures.py: quantus {version('quantus')}, torch {torch.__version__}, "
                   f"captum {version('captum')}, numpy {np.__version__}",
        "seed": SEED,
        "mean": MEAN, "std": STD, "size": SIZE,
        "target": target,
        "logits": logits[0].tolist(),
        "onnx_ops": ops,
        "layers_top_down": [{"module": n, "node": nodes[n][0], "onnx_name": nodes[n][1]} for n in order],
        "mprt": {k: float(v[0]) for k, v in mprt_scores.items()},
        "emprt": float(emprt_scores[0]),
        "emprt_entropies": {k: float(v[0]) for k, v in emprt.explanation_scores_by_layer.items()},
        "smooth_samples": SMOOTH_SAMPLES,
        "smooth_noise": SMOOTH_NOISE,
        "smprt_by_numpy_seed": smooth,
        "entropy_cases": entropy_cases(rng),
    }
    (OUT / "quantus.json").write_text(json.dumps(fixture, indent=1))
    print(json.dumps({k: v for k, v in fixture.items() if k not in ("entropy_cases",)}, indent=1)[:3000])


if __name__ == "__main__":
    main()
