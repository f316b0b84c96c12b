#!/usr/bin/env bash
# Runs the local stack on embedded defaults (no AWS account): installs the
# wasm target if needed, sets up .venv (its `onnxruntime` wheel is the
# library Axon runs models with), builds, publishes the example plugins and
# starts it.
# Extra arguments go to `agentctl up` (try `--help`). With `--gpu`, on a
# machine with an NVIDIA GPU, it also sets up .venv-gpu (the
# `onnxruntime-gpu` wheel and its CUDA libraries) for Axon's GPU pool.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_wasm_target
ensure_test_python
# `--gpu` goes on to `agentctl up` only with the GPU library set up.
args=()
for arg in "$@"; do
    if [ "$arg" = --gpu ] && ! use_gpu_python; then
        echo "running the CPU pool only" >&2
        continue
    fi
    args+=("$arg")
done
echo "==> building (the first build takes several minutes)" >&2
exec cargo run --quiet -p agentctl -- up ${args[@]+"${args[@]}"}
