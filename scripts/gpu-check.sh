#!/usr/bin/env bash
# The GPU path, on a machine with an NVIDIA GPU (CI has none, and every
# other test passes without one). It sets up the `onnxruntime-gpu` wheel
# and its CUDA 12 and cuDNN 9 wheels in .venv-gpu (nothing else is
# downloaded), then with Axon's models on ONNX Runtime's CUDA execution
# provider (`--accelerator cuda`):
#   1. Axon's inference tests: the sandbox's outputs against native ONNX
#      Runtime on the same inputs (within 1e-3 on a GPU), a tampered model,
#      the capability, and every bound against the hostile plugin;
#   2. the inference benchmark (release build): sandbox against native on
#      the GPU, and GPU against CPU, per call, in one run.
# Copy the figures into docs/performance.md ("Inference on a GPU").
#
#   ./scripts/gpu-check.sh            # both
#   ./scripts/gpu-check.sh tests      # only 1
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! command -v nvidia-smi >/dev/null; then
    echo "no nvidia-smi: this machine has no NVIDIA GPU (the CPU path is tested by ./scripts/test.sh)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ensure_wasm_target
ensure_test_python # trains the models

venv=.venv-gpu
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
echo "==> onnxruntime-gpu and the CUDA libraries in $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'onnxruntime-gpu[cuda,cudnn]==1.22.0'
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
AGENT_RUNTIME_ONNXRUNTIME=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.*)
# libonnxruntime_providers_cuda finds the CUDA wheels' libraries here.
LD_LIBRARY_PATH="$(ls -d "$site"/nvidia/*/lib | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AGENT_RUNTIME_ONNXRUNTIME LD_LIBRARY_PATH AGENT_RUNTIME_ACCELERATOR=cuda

echo "==> Axon's inference tests on the GPU" >&2
cargo nextest run -p axon --test axon inference
if [ "${1:-all}" = tests ]; then
    exit 0
fi
echo "==> the inference benchmark on the GPU" >&2
cargo bench -p axon --bench inference
