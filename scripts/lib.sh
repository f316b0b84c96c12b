# Shared set-up for the scripts in this directory. Sourced, not run.

# The compile target plugins are built for.
ensure_wasm_target() {
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        echo "==> installing the wasm32-wasip2 target" >&2
        rustup target add wasm32-wasip2
    fi
}

# The host's own target triple (plugin unit tests run natively).
host_target() {
    rustc -vV | sed -n 's/^host: //p'
}
