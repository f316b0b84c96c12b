#!/usr/bin/env bash
# The GPU path, on a machine with an NVIDIA GPU (CI has none, and every
# other test passes without one). It sets up the `onnxruntime-gpu` wheel
# and its CUDA 12 and cuDNN 9 wheels in .venv-gpu (and .venv and the wasm
# target, as ./scripts/test.sh does), then with Axon's models on ONNX Runtime's CUDA execution
# provider (`--accelerator cuda`):
#   1. Axon's inference tests: the sandbox's outputs against native ONNX
#      Runtime on the same inputs (within 1e-3 on a GPU), a tampered model,
#      the capability, and every bound against the hostile plugin;
#   2. the inference benchmark (release build), in one run: sandbox
#      against native on the GPU, GPU against CPU per call and under
#      concurrency, and native batching on the GPU.
# Copy the figures into docs/performance.md ("Inference on a GPU").
#
#   ./scripts/gpu-check.sh            # both
#   ./scripts/gpu-check.sh tests      # only 1
#
# With AGENT_RUNTIME_ONNXRUNTIME set, it uses that library (its CUDA
# libraries on LD_LIBRARY_PATH) and sets up no .venv-gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -n "${AGENT_RUNTIME_ONNXRUNTIME:-}" ]; then
    # A GPU build of ONNX Runtime of your own (e.g. onnxruntime-gpu 1.30
    # for CUDA 13), its CUDA libraries already on LD_LIBRARY_PATH.
    echo "==> using $AGENT_RUNTIME_ONNXRUNTIME" >&2
else
    use_gpu_python || exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ensure_wasm_target
ensure_test_python # the Python the tests train the models with
export AGENT_RUNTIME_ACCELERATOR=cuda

echo "==> Axon's inference tests on the GPU" >&2
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p axon --test axon inference
else
    cargo test -p axon --test axon inference
fi
if [ "${1:-all}" = tests ]; then
    exit 0
fi
echo "==> the inference benchmark on the GPU" >&2
cargo bench -p axon --bench inference
