#!/usr/bin/env bash
# Does the whole workspace (tests and benches included) build for aarch64? The context-aware
# search's x86 kernels compile out there and its portable kernel stays (issue 33 item 2).
# A check, not a build: nothing here runs on ARM.
#
#   bash scripts/check-aarch64.sh
#
# Needs rustup's aarch64-unknown-linux-gnu target (the script adds it) and a C compiler for
# aarch64, for mozjpeg-sys (the PIL-exact JPEG decoder's C code): Zig from PyPI's `ziglang`
# (the same package maturin's --zig uses), installed into a venv under the cache once. A given
# CC_aarch64_unknown_linux_gnu wins.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${SRHOST_CACHE:-$HOME/.cache/srhost}"

rustup target add aarch64-unknown-linux-gnu >/dev/null

if [ -z "${CC_aarch64_unknown_linux_gnu:-}" ]; then
    venv="$cache/zig-venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ziglang
    fi
    zig="$("$venv/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
    wrap="$cache/zig-aarch64"
    mkdir -p "$wrap"
    # cc-rs passes --target=aarch64-unknown-linux-gnu, which zig does not parse: drop it.
    cat > "$wrap/cc" <<EOF
#!/bin/sh
for a in "\$@"; do shift; case "\$a" in --target=*) ;; *) set -- "\$@" "\$a";; esac; done
exec "$zig" cc -target aarch64-linux-gnu "\$@"
EOF
    printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" > "$wrap/ar"
    chmod +x "$wrap/cc" "$wrap/ar"
    export CC_aarch64_unknown_linux_gnu="$wrap/cc" AR_aarch64_unknown_linux_gnu="$wrap/ar"
fi

# A target dir of its own: the host build's artefacts stay as they are.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}-aarch64"
RUSTFLAGS="-D warnings" cargo check --workspace --all-targets --locked --target aarch64-unknown-linux-gnu
echo "aarch64: the workspace checks"
