"""AttnLRP and CP-LRP on a full-size vision transformer (issue 34): srhost against its own
forward and against LXT, timed in the same session on this machine.

The model is torchvision's `vit_b_16` with seeded random weights (no trained ViT weights can
ship), exported by torch's default call (`torch.onnx.export(model, (x,), path)`: dynamo,
opset 20, weights in a data file beside it) into a temporary folder. Timed, median seconds per
call over `--repeats` calls after one warm-up, at each batch size:
- srhost: `Model.onnx(path, runtime="srhost").predict` (our forward on srhost's executor) and
  `.explain(composite="attnlrp")` / `composite="cp-lrp"` (forward and backward);
- PyTorch: the model's forward under `torch.no_grad()`;
- LXT 2.1: its map for torchvision's ViT (`lxt.efficient.models.vit_torch.cp_LRP`: CP-LRP
  inside attention, the identity rule on GELU and LayerNorm), forward and backward, gradient
  x input; LXT has no AttnLRP map for torchvision's ViT, so this is its only ViT explanation.

    RAYON_NUM_THREADS=2 python benches/transformer_speed.py [--threads 2] [--batches 1 8]

Needs (PyPI): torch, torchvision, onnx, onnxscript, lxt==2.1, transformers<5 (lxt's init),
numpy, and srhost's wheel (python/, docs/python.md).
"""
import argparse
import importlib.metadata
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import torchvision
    import srhost

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.02)  # torchvision initialises the head to zeros
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "vit_b_16.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path))
    ours = srhost.Model.onnx(str(path), runtime="srhost")
    print(f"threads {a.threads}; torch {torch.__version__}, lxt {importlib.metadata.version('lxt')}, "
          f"srhost {importlib.metadata.version('srhost')}")
    rows = []
    for b in a.batches:
        x = torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(b))
        xn = x.numpy()
        with torch.no_grad():
            t_torch = timed(lambda: model(x), a.repeats)
        t_fwd = timed(lambda: ours.predict(xn), a.repeats)
        t_attn = timed(lambda: ours.explain(xn, composite="attnlrp"), a.repeats)
        t_cp = timed(lambda: ours.explain(xn, composite="cp-lrp"), a.repeats)
        rows.append((b, t_torch, t_fwd, t_attn, t_cp))
    # LXT patches torchvision's classes for the rest of the process: last.
    from lxt.efficient import monkey_patch
    from lxt.efficient.models.vit_torch import cp_LRP
    from torchvision.models import vision_transformer
    monkey_patch(vision_transformer, cp_LRP)
    for i, b in enumerate(a.batches):
        x = torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(b))

        def lxt():
            xi = x.clone().requires_grad_(True)
            out = model(xi)
            out[torch.arange(b), out.argmax(1)].sum().backward()
            return (xi * xi.grad).detach()

        rows[i] = rows[i] + (timed(lxt, a.repeats),)
    print("| batch | PyTorch forward | srhost forward | srhost attnlrp | / our forward | srhost cp-lrp | / our forward | LXT cp-lrp (forward + backward) | srhost attnlrp / LXT |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b, tt, tf, ta, tc, tl in rows:
        print(f"| {b} | {tt:.3f} s | {tf:.3f} s | {ta:.3f} s | {ta / tf:.2f}x | {tc:.3f} s | {tc / tf:.2f}x | {tl:.3f} s | {ta / tl:.2f}x |")


if __name__ == "__main__":
    main()
