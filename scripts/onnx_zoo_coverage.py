"""Which classifiers srhost's ONNX backend takes today: docs/models.md's coverage table.

For each model: random weights (torchvision's builder or timm's, `weights=None` /
`pretrained=False`, seeded, then He-scaled weights, small biases, random BatchNorm/LayerNorm
statistics and layer scales: scripts/fixture_weights.py, as for the test fixtures, so that the
logits depend on the photo), exported both ways torch writes ONNX:
- TorchScript: `torch.onnx.export(model, x, path, opset_version=17, dynamo=False)`;
- the default call: `torch.onnx.export(model, (x,), path)` (the dynamo exporter, opset 20,
  weights in `path.data` beside it);
then, for each export:
- imports: `srhost.Model.onnx(path)` (the importer turns the graph into srhost's IR), or the
  first error (an unsupported op names itself);
- ONNX Runtime vs srhost: `Model.predict` with ONNX Runtime (the default) and with
  `runtime="srhost"` (srhost's executor on the imported graph) on the photo; the max abs
  difference of the logits / max |logit| (of the default export when both import);
- relevance: LRP (`epsilon-plus-flat` for CNNs, `attnlrp` for transformers) on the photo, its
  time, and the conservation ratio sum(R) / logit of the top class (biases absorb some
  relevance, z+ drops negative contributions, AttnLRP's softmax rule leaves out a bias term, so
  it need not be 1);
- the parity test of that family in CI, if any.

Needs torch, torchvision, timm, onnx, onnxscript, onnxruntime and the srhost wheel in one venv,
and ORT_DYLIB_PATH pointing at that onnxruntime's library. Slow (minutes per large model).

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
    "vit_b_16", "swin_t", "timm:deit_tiny_patch16_224", "timm:deit_small_patch16_224",
]
TRANSFORMERS = {"vit_b_16", "swin_t", "timm:deit_tiny_patch16_224", "timm:deit_small_patch16_224"}
PHOTO = "assets/images/coffee.png"
# The CI test that checks each family against an independent reference.
PARITY = {
    "resnet18": "tests/resnet.rs (Zennit)", "resnet50": "tests/resnet.rs (Zennit)",
    "resnext50_32x4d": "tests/resnet.rs (Zennit)",
    "densenet121": "tests/densenet.rs (autograd; the checkpoint backend)",
    "mobilenet_v3_small": "tests/zoo.rs (autograd)", "efficientnet_b0": "tests/zoo.rs (autograd)",
    "regnet_y_400mf": "tests/zoo.rs (autograd)", "convnext_tiny": "tests/zoo.rs (autograd)",
    "shufflenet_v2_x1_0": "tests/zoo.rs (autograd)", "mnasnet1_0": "tests/zoo.rs (autograd)",
    "vit_b_16": "tests/transformers.rs (autograd, LXT)",
    "swin_t": "tests/transformers.rs (autograd)",
    "timm:deit_tiny_patch16_224": "tests/transformers.rs (autograd)",
    "timm:deit_small_patch16_224": "tests/transformers.rs (autograd)",
}


def build(name):
    torch.manual_seed(0)
    if name.startswith("timm:"):
        import timm
        model = timm.create_model(name[5:], pretrained=False)
    else:
        kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
        model = getattr(torchvision.models, name)(weights=None, **kw)
    gen = torch.Generator().manual_seed(0)
    randomise(model, gen)
    for pname, p in model.named_parameters():
        if pname in ("class_token", "cls_token"):
            p.data = torch.randn(p.shape, generator=gen) * 0.5
    return model.eval()


def load(path):
    try:
        return srhost.Model.onnx(str(path)), None
    except Exception as e:  # noqa: BLE001 - the error is the result
        first = str(e).splitlines()[0]
        return None, first.split(": ", 2)[-1][:140]


def row(name, tmp):
    model = build(name)
    x = torch.zeros(1, 3, 224, 224)
    stem = name.replace(":", "_")
    ts, dyn = Path(tmp) / f"{stem}_ts.onnx", Path(tmp) / f"{stem}.onnx"
    torch.onnx.export(model, x, str(ts), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"])
    torch.onnx.export(model, (x,), str(dyn))
    (m_ts, e_ts), (m_dyn, e_dyn) = load(ts), load(dyn)
    cells = ["yes" if m_ts else f"no: {e_ts}", "yes" if m_dyn else f"no: {e_dyn}"]
    m, path = (m_dyn, dyn) if m_dyn else (m_ts, ts)
    if m is None:
        return f"| {name} | {cells[0]} | {cells[1]} | | | | | {PARITY.get(name, '')} |"
    logits_ort = m.predict(PHOTO)
    logits_ours = srhost.Model.onnx(str(path), runtime="srhost").predict(PHOTO)
    err = float(np.abs(logits_ours - logits_ort).max() / np.abs(logits_ort).max())
    composite = "attnlrp" if name in TRANSFORMERS else "epsilon-plus-flat"
    t = time.perf_counter()
    r = m.explain(PHOTO, composite=composite)
    secs = time.perf_counter() - t
    target = int(logits_ort.argmax())
    ratio = float(r.sum()) / float(logits_ort[0, target])
    parity = PARITY.get(name, "")
    return (f"| {name} | {cells[0]} | {cells[1]} | {err:.1e} | {composite} | {secs:.1f} s "
            f"| {ratio:.4f} | {parity} |")


def main():
    names = sys.argv[1:] or MODELS
    import timm
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}\n")
    print("| model | TorchScript (opset 17) | default export (dynamo, opset 20) | srhost vs ONNX Runtime (logits) | LRP | time | sum R / logit | parity test |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            try:
                print(row(n, tmp), flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"| {n} | script error: {str(e).splitlines()[0][:160]} | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
