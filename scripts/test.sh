#!/usr/bin/env bash
# The test command of the README, and what CI (.ci/run) calls. It installs what the tests
# need, builds every workspace crate (the plugin .so files included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every CI step builds the same package selection (--workspace), so dependencies compile once.
cargo build --workspace --locked
cargo test --workspace --locked
