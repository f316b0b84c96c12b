# Shared set-up for the scripts in this directory. Sourced, not run.

# The compile target plugins are built for.
ensure_wasm_target() {
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        echo "==> installing the wasm32-wasip2 target" >&2
        rustup target add wasm32-wasip2
    fi
}

# Prints the free space here and warns below $1 GiB: a cold build with its
# tests writes about 12 GiB, and a full disk fails in odd places (a venv's
# ensurepip, a linker) rather than saying so.
report_free_disk() {
    local want_gib=$1 free_kib
    free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
    echo "==> $((free_kib / 1024 / 1024)) GiB free on this disk" >&2
    if [ "$free_kib" -lt $((want_gib * 1024 * 1024)) ]; then
        echo "warning: under ${want_gib} GiB free; the build may run out of space" >&2
    fi
}

# The host's own target triple (plugin unit tests run natively).
host_target() {
    rustc -vV | sed -n 's/^host: //p'
}

# A virtual environment with the Python the tests use (botocore, moto, ...),
# installed again whenever scripts/requirements-test.txt changes; exports
# AGENT_RUNTIME_PYTHON for them.
ensure_test_python() {
    local venv=.venv requirements=scripts/requirements-test.txt
    local want have
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
    if [ ! -x "$venv/bin/python" ] || [ "$want" != "$have" ]; then
        echo "==> setting up $venv (Python test dependencies)" >&2
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" > "$venv/.requirements.sha256"
    fi
    AGENT_RUNTIME_PYTHON="$(pwd)/$venv/bin/python"
    export AGENT_RUNTIME_PYTHON
}

# The `onnxruntime-gpu` wheel and its CUDA 12 and cuDNN 9 wheels in
# .venv-gpu (about 3.3 GB), for Axon's GPU pool; exports
# AGENT_RUNTIME_ONNXRUNTIME (its libonnxruntime) and LD_LIBRARY_PATH (the
# CUDA libraries, which its CUDA provider loads). Needs an NVIDIA GPU.
# Every step checks its own status: callers use it as `use_gpu_python ||`,
# where `set -e` does not apply.
use_gpu_python() {
    local venv=.venv-gpu site library libraries
    if ! command -v nvidia-smi >/dev/null; then
        echo "no nvidia-smi: this machine has no NVIDIA GPU" >&2
        return 2
    fi
    if [ ! -f "$venv/.installed" ]; then
        echo "==> setting up $venv (onnxruntime-gpu and the CUDA libraries)" >&2
        python3 -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            'onnxruntime-gpu[cuda,cudnn]==1.22.0' || return 1
    fi
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
    library=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)
    libraries=$(ls -d "$site"/nvidia/*/lib 2>/dev/null | paste -sd:)
    if [ -z "$library" ] || [ -z "$libraries" ]; then
        echo "$venv has no libonnxruntime or no CUDA libraries; delete it and run again" >&2
        return 1
    fi
    touch "$venv/.installed"
    AGENT_RUNTIME_ONNXRUNTIME=$library
    LD_LIBRARY_PATH="$libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export AGENT_RUNTIME_ONNXRUNTIME LD_LIBRARY_PATH
}
