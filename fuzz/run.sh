#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 600), seeded from the repository's fixtures,
# and print one line per target: executions, seconds, crashes. Needs cargo-fuzz
# (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the stable toolchain take libFuzzer's
# nightly flags. Crashes are kept under fuzz/artifacts/<target>/. RSS_MB (default 4096) is
# libFuzzer's memory limit: importing a VGG-sized ONNX model whose weights are filled by
# ConstantOfShape legitimately takes about 1.5 GB, more under AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
export RUSTC_BOOTSTRAP=1
repo=..
seed() { # target, files...
    local t=$1; shift
    mkdir -p "corpus/$t"
    for f in "$@"; do [ -f "$f" ] && cp -n "$f" "corpus/$t/" || true; done
}
seed onnx_import $repo/tests/fixtures/onnx/*.onnx $repo/tests/fixtures/zoo/{regnet_y,shufflenet_v2,mobilenet_v3_small,convnext,convnext_opset17}.onnx \
    $repo/tests/fixtures/transformers/{vit,deit,swin}_ts.onnx
seed safetensors $repo/tests/fixtures/golden/models/*.safetensors
seed pth $repo/tests/fixtures/pth/*.pth
seed photo $repo/assets/images/faces/*.png $repo/assets/images/grace_hopper.jpg
seed spec $repo/configs/*.toml
targets="${TARGETS:-onnx_import pth safetensors photo spec}"
for t in $targets; do
    log="artifacts/$t.log"
    mkdir -p "artifacts/$t"
    set +e
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb="${RSS_MB:-4096}" \
        -timeout=20 -artifact_prefix="artifacts/$t/" > "$log" 2>&1
    code=$?
    set -e
    # "Done N runs in S second(s)" at the end of a run; the last "#N" status line if it crashed.
    execs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    crashes=$(ls "artifacts/$t" | grep -c -E '^(crash|oom|timeout|leak)-' || true)
    echo "$t: $execs executions in ${secs} s, exit $code, $crashes crash/oom/timeout files"
done
