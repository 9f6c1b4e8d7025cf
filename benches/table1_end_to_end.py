"""The Table-1 pipeline end to end (issue 19): `configs/table1-ssim.toml` (the shipped Lite0,
`srp`, reference context-aware saliency on the photo and on the relevance map, SSIM) on the
200 ImageNet-style photos of ../shared/imagenet-sample with 2 jobs, from a release build.
Reports the wall time per photo, the per-stage seconds (medians over the photos, from each
result.json), and the process's peak resident memory (from /usr/bin/time -v). Skipped with a
note when the photos are missing (research use only, never shipped).

    cargo build --release -p srhost && python3 benches/table1_end_to_end.py [--sample DIR] [--jobs 2]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", default="../shared/imagenet-sample")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="target/bench-table1")
    # The release build: SRHOST_BIN, else cargo's target dir (CARGO_TARGET_DIR, as .ci/run
    # sets it, or ./target).
    built = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "release" / "srhost"
    ap.add_argument("--srhost", default=os.environ.get("SRHOST_BIN", str(built)))
    a = ap.parse_args()
    sample = Path(a.sample)
    if not sample.is_dir():
        print(f"skipped: {sample} is missing (the research-use sample photos are not shipped)")
        return
    if not Path(a.srhost).is_file():
        sys.exit(f"{a.srhost} is missing: build it first (cargo build --release -p srhost), "
                 "or name it with --srhost or SRHOST_BIN")
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-v", a.srhost, "--pipeline", "configs/table1-ssim.toml",
           "--set", f'run.images=["{sample}"]', "--set", f'run.labels="{sample / "labels.csv"}"',
           "--set", f'run.output="{out}"', "--jobs", str(a.jobs)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"srhost failed ({r.returncode}):\n{r.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    stages = {}
    n = 0
    for f in out.rglob("result.json"):
        secs = json.loads(f.read_text()).get("seconds", {})
        n += 1
        for k, v in secs.items():
            stages.setdefault(k, []).append(v)
    print(f"{n} photos, {a.jobs} jobs: {wall:.1f} s wall, {wall / max(n, 1):.2f} s per photo; "
          f"peak RSS of the process {rss_kb / 1024:.0f} MB")
    total = sum(statistics.median(v) for v in stages.values())
    print(f"per photo in one job (sum of the stage medians): {total:.2f} s")
    for k, v in sorted(stages.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {k}: median {statistics.median(v):.3f} s")


if __name__ == "__main__":
    main()
