"""AOPC's cost in `configs/compare-relevance.toml` (issue 19, item 4): five relevance branches
and the random order, 50 flips each, on the five sample photos, scored in batches of 8.

Runs the config three times from a release build, one job each (so a run has both cores):
  1. as shipped: the torchvision backend (srhost's executor) on the safetensors Lite0;
  2. the ONNX Lite0 (`assets/models/efficientnet-lite0.onnx`) with `runtime = "srhost"`:
     srhost's executor on the imported graph;
  3. the same ONNX file with ONNX Runtime (the default `runtime`).
Runs 2 and 3 are the same model, so their AOPC values must agree (ONNX Runtime and srhost's
executor round differently, by about 1e-6 of a logit); the script reports the largest
difference and the AOPC seconds per photo (the `aopc.*` entries of each result.json).

    cargo build --release -p srhost && python3 benches/aopc.py
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path("configs/compare-relevance.toml")
TORCHVISION = (
    'use = "torchvision"\n'
    'arch = "efficientnet_lite0"\n'
    'weights = "assets/models/efficientnet-lite0.safetensors"'
)
ONNX = (
    'use = "onnx"\n'
    'path = "assets/models/efficientnet-lite0.onnx"\n'
    "mean = [0.498, 0.498, 0.498]\n"
    "std = [0.502, 0.502, 0.502]\n"
    'runtime = "%s"'
)


def run(srhost, out, model):
    shutil.rmtree(out, ignore_errors=True)
    Path(out).mkdir(parents=True)
    text = CONFIG.read_text()
    if TORCHVISION not in text:
        sys.exit(f"{CONFIG}: its [model] table is not the one this script replaces")
    config = Path(out) / "pipeline.toml"
    config.write_text(text.replace(TORCHVISION, model))
    cmd = [srhost, "--pipeline", str(config), "--jobs", "1",
           "--set", f'run.output="{out}/run"', "--set", "render.use=[]"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"srhost failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    aopc_s, values = [], {}
    for f in sorted(Path(out).glob("run/*/result.json")):
        res = json.loads(f.read_text())
        aopc_s.append(sum(v for k, v in res["seconds"].items() if k.startswith("aopc")))
        photo = f.parent.name
        for b in res["branches"]:
            values[(photo, b["branch"])] = b["aopc"]
        values[(photo, "random")] = res["aopc_random"]
    return wall, aopc_s, values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--srhost", default=os.environ.get("SRHOST_BIN", "target/release/srhost"))
    ap.add_argument("--out", default="target/bench-aopc")
    a = ap.parse_args()
    rows = []
    for name, model in [
        ("torchvision backend (srhost executor)", TORCHVISION),
        ("ONNX file, runtime = srhost", ONNX % "srhost"),
        ("ONNX file, ONNX Runtime", ONNX % "onnxruntime"),
    ]:
        wall, secs, values = run(a.srhost, f"{a.out}/{len(rows)}", model)
        rows.append((name, wall, secs, values))
        print(f"{name}: {len(secs)} photos, wall {wall:.1f} s, AOPC per photo: median "
              f"{statistics.median(secs):.2f} s, total {sum(secs):.1f} s", flush=True)
    (_, _, s_srhost, v_srhost), (_, _, s_ort, v_ort) = rows[1][:4], rows[2][:4]
    diff = max(abs(v_srhost[k] - v_ort[k]) for k in v_srhost)
    print(f"ONNX Runtime vs srhost's executor on the same file: AOPC {sum(s_srhost) / sum(s_ort):.2f}x "
          f"faster; largest AOPC difference over {len(v_srhost)} values: {diff:.2e} "
          f"(AOPC values {min(v_srhost.values()):.4f} to {max(v_srhost.values()):.4f})")


if __name__ == "__main__":
    main()
