"""What `Model.explain` costs per call from Python, against the CLI's per-image relevance time.

In one run, on the shipped EfficientNet-Lite0 and `assets/images/coffee.png`, LRP
epsilon-plus-flat, 2 threads:

- Python: `model.explain("assets/images/coffee.png", composite="epsilon-plus-flat")` 20 times on
  one `srhost.Model.torchvision()`; the first call and the median of calls 2-20. A call decodes
  and preprocesses the photo, runs the model for the top-1 class, and explains it.
- CLI: `srhost` (release) on a folder of 6 copies of the photo with one LRP branch
  (epsilon-plus-flat) and nothing else, `--jobs 1`; the median over the copies of each image's
  `seconds` in `result.json`: `relevance.lrp` (the explain call), `forward` (preprocess +
  forward) and `decode`. The first image is left out of the median (before bind-once, it paid
  for preparing the model).

The issue's target: calls 2-20 within 10% of the CLI's per-image relevance time. The script
prints both ratios: against the relevance time alone, and against decode + forward + relevance
(what a Python call does).

Needs the wheel installed (scripts/test.sh's venv, or `pip install ./python`) and a release
`srhost` (`cargo build --release -p srhost`; or SRHOST_BIN), and runs from the repository root:

    RAYON_NUM_THREADS=2 ~/.cache/srhost/pyenv/bin/python benches/python_explain.py
"""

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import srhost

PHOTO = "assets/images/coffee.png"
CALLS = 20
COPIES = 6


def python_calls():
    model = srhost.Model.torchvision()
    times = []
    for _ in range(CALLS):
        t = time.perf_counter()
        model.explain(PHOTO, composite="epsilon-plus-flat")
        times.append(time.perf_counter() - t)
    return times


def cli_seconds():
    binary = os.environ.get("SRHOST_BIN", "target/release/srhost")
    with tempfile.TemporaryDirectory() as d:
        photos = os.path.join(d, "photos")
        os.makedirs(photos)
        for i in range(COPIES):
            shutil.copy(PHOTO, os.path.join(photos, f"coffee{i}.png"))
        out = os.path.join(d, "out")
        config = os.path.join(d, "p.toml")
        with open(config, "w") as f:
            f.write(
                f'[run]\nimages = ["{photos}"]\noutput = "{out}"\n\n'
                '[model]\nuse = "torchvision"\n\n'
                '[relevance.lrp]\nuse = "lrp"\ncomposite = "epsilon-plus-flat"\n\n'
                "[metrics]\nssim = false\n"
            )
        subprocess.run([binary, "--pipeline", config, "--jobs", "1"], check=True,
                       stdout=subprocess.DEVNULL)
        rows = []
        for i in range(COPIES):
            with open(os.path.join(out, f"coffee{i}", "result.json")) as f:
                rows.append(json.load(f)["seconds"])
        return rows


def main():
    py = python_calls()
    rows = cli_seconds()
    later = rows[1:]
    rel = statistics.median(r["relevance.lrp"] for r in later)
    fwd = statistics.median(r["forward"] for r in later)
    dec = statistics.median(r["decode"] for r in later)
    first_cli = rows[0]["relevance.lrp"]
    med = statistics.median(py[1:])
    print(f"Python Model.explain: first call {py[0] * 1e3:.1f} ms, calls 2-{CALLS} median "
          f"{med * 1e3:.1f} ms (min {min(py[1:]) * 1e3:.1f}, max {max(py[1:]) * 1e3:.1f})")
    print(f"CLI per image (median of images 2-{COPIES}): relevance {rel * 1e3:.1f} ms, forward "
          f"{fwd * 1e3:.1f} ms, decode {dec * 1e3:.1f} ms; first image's relevance "
          f"{first_cli * 1e3:.1f} ms")
    print(f"Python call / CLI relevance: {med / rel:.2f}x; Python call / CLI decode + forward + "
          f"relevance: {med / (rel + fwd + dec):.2f}x")


if __name__ == "__main__":
    main()
