#!/usr/bin/env bash
# Runs the local stack on embedded defaults (no AWS account): installs the
# wasm target if needed, sets up .venv (its `onnxruntime` wheel is the
# library Axon runs models with), builds, publishes the example plugins and
# starts it.
# Extra arguments go to `agentctl up` (try `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_wasm_target
ensure_test_python
echo "==> building (the first build takes several minutes)" >&2
exec cargo run --quiet -p agentctl -- up "$@"
