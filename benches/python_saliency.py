"""What calling context-aware saliency from Python costs over the Rust benchmark of the same photo.

In one run: `srhost.saliency(photo, variant="reference", max_dim=250)` from Python (median of
10 calls), given the photo as a uint8 array (decoded once, before timing, by the small PNG
reader below: the Rust benchmark decodes outside its timing too) and given its path (decoded in
every call), then criterion's `cpu/context_aware_stage/reference/<photo>/250`: the context-aware stage's
`Saliency::saliency` on the same photo (as f32 in [0, 1]) and size, the call srhost and the
package make. The array call pays for the keyword check, building the stage, the copy
into srhost's image and the output array. Needs the wheel installed (scripts/test.sh's venv, or `pip install ./python`)
and runs from the repository root:

    RAYON_NUM_THREADS=2 ~/.cache/srhost/pyenv/bin/python benches/python_saliency.py

The issue's target: Python at most 5% over Rust.
"""

import re
import statistics
import struct
import subprocess
import time
import zlib

import numpy as np
import srhost

PHOTOS = ["coffee.png", "astronaut.png"]


def read_png(path):
    """An 8-bit RGB or RGBA, non-interlaced PNG as an H x W x 3 uint8 array."""
    data = open(path, "rb").read()
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            ch = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for x in range(stride):
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 255
        out[y], prev = cur, cur
    return out.reshape(h, w, ch)[:, :, :3].copy()


def median_seconds(arg, n=10):
    srhost.saliency(arg, variant="reference", max_dim=250)  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        srhost.saliency(arg, variant="reference", max_dim=250)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def python_seconds(photo):
    path = f"assets/images/{photo}"
    return median_seconds(read_png(path)), median_seconds(path)


def rust_seconds():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "cpu", "--", r"context_aware_stage/reference/.*/250"],
        capture_output=True, text=True, check=True).stdout
    unit = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    found = {}
    for m in re.finditer(r"context_aware_stage/reference/(\S+)/250\s+time:\s+\[\S+ \S+ (\S+) (\S+)", out):
        found[m.group(1)] = float(m.group(2)) * unit[m.group(3)]
    return found


def main():
    py = {p: python_seconds(p) for p in PHOTOS}
    rs = rust_seconds()
    print("| photo (250 px, reference) | Rust (criterion median) | Python, array | / Rust | Python, path | / Rust |")
    print("|---|---|---|---|---|---|")
    for p in PHOTOS:
        (a, f), r = py[p], rs[p]
        print(f"| {p} | {r * 1e3:.1f} ms | {a * 1e3:.1f} ms | {a / r:.3f} | {f * 1e3:.1f} ms | {f / r:.3f} |")


if __name__ == "__main__":
    main()
