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
# A one-node Slurm cluster (munge and slurm-wlm from Debian) for tests/slurm.rs, stopped when
# this script ends; if it cannot start, this script stops here with the daemons' logs.
slurm_dir="$(mktemp -d)"
bash scripts/slurm-cluster.sh start "$slurm_dir"
trap 'bash scripts/slurm-cluster.sh stop "$slurm_dir"' EXIT
export SLURM_CONF="$slurm_dir/slurm.conf" SRHOST_REQUIRE_SLURM=1
cargo test --workspace --locked

# The Python package (python/, docs/python.md): a venv under the cache with maturin, ziglang
# and auditwheel from PyPI builds one abi3 wheel (CPython 3.9 and newer) linked by zig against
# glibc 2.28 (manylinux_2_28: RHEL 8 and newer cluster nodes), and auditwheel checks that tag.
# The wheel is installed into a fresh venv with numpy, pytest and kubernetes-validate (it checks
# the Job manifest of docs/scale-out.md), then pytest runs python/tests and the examples of
# docs/python.md there. The tests compare with the srhost binary and load the example plugin
# built above.
cache="${SRHOST_CACHE:-$HOME/.cache/srhost}"
venv="$cache/pyenv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "maturin==1.16.0" "ziglang==0.17.0" "auditwheel==6.8.2"
rm -rf "$cache/wheels"
PATH="$venv/bin:$PATH" "$venv/bin/maturin" build --release --locked -m python/Cargo.toml \
    -o "$cache/wheels" --zig --compatibility manylinux_2_28
# The name carries the tags: a wheel of another tag is not found, and the script stops.
wheel=$(ls "$cache"/wheels/srhost-*-cp39-abi3-manylinux_2_28_x86_64.whl)
shown=$("$venv/bin/auditwheel" show "$wheel")
case "$(echo $shown)" in
    *'is consistent with the following platform tag: "manylinux_2_28_x86_64"'*) ;;
    *) echo "auditwheel: $wheel is not manylinux_2_28:"; echo "$shown"; exit 1 ;;
esac
fresh="$cache/wheel-venv"
rm -rf "$fresh"
python3 -m venv "$fresh"
"$fresh/bin/pip" install --quiet --disable-pip-version-check \
    "numpy==2.4.6" "pytest==9.2.0" "kubernetes-validate==1.37.0" "$wheel"
target="${CARGO_TARGET_DIR:-target}"
SRHOST_REQUIRE=1 SRHOST_BIN="$target/debug/srhost" \
    SRHOST_PLUGIN_SO="$target/debug/libsr_plugin_example.so" \
    "$fresh/bin/python" -m pytest -q -p no:cacheprovider python/tests docs/python.md \
    --doctest-glob='*.md'
