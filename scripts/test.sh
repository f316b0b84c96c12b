#!/usr/bin/env bash
# Runs every test: the plugins' own unit tests (natively), then the host
# workspace with cargo-nextest (falling back to cargo test). Sets up what the
# tests need first: the wasm target, and a Python venv with botocore.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_wasm_target
ensure_test_python

echo "==> plugin unit tests" >&2
(cd plugins && cargo test --quiet --target "$(host_target)" --workspace)

echo "==> host workspace tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "cargo-nextest not found; using cargo test" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
