#!/usr/bin/env bash
# The test command of the README, and what CI (.ci/run) calls. It installs what the tests
# need, builds every workspace crate (the plugin .so files included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# ONNX Runtime for the ONNX backend's tests: the shared library from PyPI's `onnxruntime` wheel,
# unpacked once into a cache (no pip install into the system, no other download). A given
# ORT_DYLIB_PATH wins.
ORT_VERSION=1.23.2
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    ort_home="${SRHOST_CACHE:-$HOME/.cache/srhost}/onnxruntime-$ORT_VERSION"
    lib="$ort_home/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
    if [ ! -f "$lib" ]; then
        rm -rf "$ort_home" && mkdir -p "$ort_home/wheel"
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            "onnxruntime==$ORT_VERSION" -d "$ort_home/wheel"
        python3 -m zipfile -e "$ort_home"/wheel/onnxruntime-*.whl "$ort_home"
    fi
    export ORT_DYLIB_PATH="$lib"
fi

# Headless Chromium for the report test (tests/report.rs opens out/report.html): Debian's
# chromium package.
if ! command -v chromium >/dev/null 2>&1; then
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium >/dev/null
fi

# Every CI step builds the same package selection (--workspace), so dependencies compile once.
cargo build --workspace --locked
cargo test --workspace --locked
