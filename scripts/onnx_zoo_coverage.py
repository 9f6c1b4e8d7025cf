"""Which torchvision classifiers srhost's ONNX backend takes today: docs/models.md's coverage table.

For each model: random weights (torchvision's builder, `weights=None`, seeded, then He-scaled
weights, small biases, random BatchNorm/LayerNorm statistics and layer scales: scripts/
fixture_weights.py, as for the test fixtures, so that the logits depend on the photo), exported with
`torch.onnx.export(model, x, path, opset_version=13, dynamo=False)`, then
- imports: `srhost.Model.onnx(path)` (the importer turns the graph into srhost's IR), or the
  first error (an unsupported op names itself);
- ONNX Runtime vs srhost: `Model.predict` with ONNX Runtime (the default) and with
  `runtime="srhost"` (srhost's executor on the imported graph) on the photo; the max abs
  difference of the logits / max |logit|;
- LRP: `epsilon-plus-flat` on the photo (srhost's executor runs the imported graph), its time,
  and the conservation ratio sum(R) / logit of the top class (biases absorb some relevance, and
  z+ drops negative contributions, so it need not be 1);
- the parity test of that family in CI, if any.

Needs torch, torchvision, onnx, onnxscript, onnxruntime and the srhost wheel in one venv, and
ORT_DYLIB_PATH pointing at that onnxruntime's library. Slow (minutes per large model).

    python scripts/onnx_zoo_coverage.py [MODEL ...] > coverage.md
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import srhost
from fixture_weights import randomise

MODELS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "densenet121", "mobilenet_v2",
    "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny",
    "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet", "mnasnet1_0",
]
PHOTO = "assets/images/coffee.png"
# The CI test that checks each family against an independent reference.
PARITY = {
    "resnet18": "tests/resnet.rs (Zennit)", "resnet50": "tests/resnet.rs (Zennit)",
    "resnext50_32x4d": "tests/resnet.rs (Zennit)",
    "densenet121": "tests/densenet.rs (autograd; the checkpoint backend)",
    "mobilenet_v3_small": "tests/zoo.rs (autograd)", "efficientnet_b0": "tests/zoo.rs (autograd)",
    "regnet_y_400mf": "tests/zoo.rs (autograd)", "convnext_tiny": "tests/zoo.rs (autograd)",
    "shufflenet_v2_x1_0": "tests/zoo.rs (autograd)", "mnasnet1_0": "tests/zoo.rs (autograd)",
}


def row(name, tmp):
    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kw)
    randomise(model, torch.Generator().manual_seed(0))
    model.eval()
    path = Path(tmp) / f"{name}.onnx"
    x = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(model, x, str(path), opset_version=13, dynamo=False,
                      input_names=["input"], output_names=["logits"])
    try:
        m = srhost.Model.onnx(str(path))
    except Exception as e:  # noqa: BLE001 - the error is the result
        first = str(e).splitlines()[0]
        return f"| {name} | no: {first.split(': ', 2)[-1][:160]} | | | | |"
    logits_ort = m.predict(PHOTO)
    logits_ours = srhost.Model.onnx(str(path), runtime="srhost").predict(PHOTO)
    err = float(np.abs(logits_ours - logits_ort).max() / np.abs(logits_ort).max())
    t = time.perf_counter()
    r = m.explain(PHOTO, composite="epsilon-plus-flat")
    secs = time.perf_counter() - t
    target = int(logits_ort.argmax())
    ratio = float(r.sum()) / float(logits_ort[0, target])
    parity = PARITY.get(name, "")
    return f"| {name} | yes | {err:.1e} | {secs:.1f} s | {ratio:.4f} | {parity} |"


def main():
    names = sys.argv[1:] or MODELS
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, opset 13\n")
    print("| model | imports | srhost vs ONNX Runtime (logits) | LRP (epsilon-plus-flat) | sum R / logit | parity test |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            try:
                print(row(n, tmp), flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"| {n} | script error: {str(e).splitlines()[0][:160]} | | | | |", flush=True)


if __name__ == "__main__":
    main()
