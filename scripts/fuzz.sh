#!/usr/bin/env bash
# Fuzzes every parser of untrusted input with AFL++, through cargo-afl on the
# stable toolchain (host/fuzz; docs/security.md#fuzzing).
#
#   scripts/fuzz.sh smoke              every target for FUZZ_SECONDS (10) each:
#                                      what .ci/run runs
#   scripts/fuzz.sh run TARGET SECONDS one target, built with --release
#
# Installs cargo-afl (which builds AFL++) when missing. Prints each target's
# executions, coverage and crashes; fails if any target crashed, naming the
# input and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/../host/fuzz"

CARGO_AFL_VERSION=0.18.2
TARGETS=(sigv4 canonical envelope manifest trust_list plugin_toml component request_body request_headers plugin_reply)

ensure_cargo_afl() {
    if ! cargo afl --version 2>/dev/null | grep -q "$CARGO_AFL_VERSION"; then
        echo "==> installing cargo-afl $CARGO_AFL_VERSION (builds AFL++)" >&2
        cargo install cargo-afl --version "$CARGO_AFL_VERSION" --locked
    fi
    # Builds AFL++ for this toolchain unless it is already there.
    local out
    if ! out=$(cargo afl config --build 2>&1) && ! grep -q "already built" <<<"$out"; then
        echo "$out" >&2
        return 1
    fi
}

# Runs `target` (binary `bin`) for `seconds`; prints one line of stats.
fuzz() {
    local target=$1 bin=$2 seconds=$3 out="out/$1"
    rm -rf "$out"
    # No UI, no CPU pinning, and no demands on the machine's CPU governor or
    # core pattern: CI and containers do not let us change them.
    AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        cargo afl fuzz -i "corpus/$target" -o "$out" -V "$seconds" -- "$bin" >"$out.log" 2>&1 || {
        tail -20 "$out.log" >&2
        echo "afl-fuzz failed for $target (log: host/fuzz/$out.log)" >&2
        return 1
    }
    local stats="$out/default/fuzzer_stats"
    printf '%-15s %12s execs  %8s/s  coverage %-8s corpus %-5s crashes %s  hangs %s\n' "$target" \
        "$(awk -F' : ' '/^execs_done/ {print $2}' "$stats")" \
        "$(awk -F' : ' '/^execs_per_sec/ {print $2}' "$stats")" \
        "$(awk -F' : ' '/^bitmap_cvg/ {print $2}' "$stats")" \
        "$(awk -F' : ' '/^corpus_count/ {print $2}' "$stats")" \
        "$(awk -F' : ' '/^saved_crashes/ {print $2}' "$stats")" \
        "$(awk -F' : ' '/^saved_hangs/ {print $2}' "$stats")"
    local findings
    findings=$(find "$out/default/crashes" "$out/default/hangs" -type f -name 'id:*' 2>/dev/null | head -5)
    if [ -n "$findings" ]; then
        echo "$target crashed or hung; replay with:" >&2
        for finding in $findings; do
            echo "  (cd host/fuzz && $bin < '$finding')" >&2
        done
        return 1
    fi
}

mode=${1:-smoke}
case "$mode" in
    smoke | run) ;;
    *)
        echo "usage: scripts/fuzz.sh smoke | run TARGET SECONDS" >&2
        exit 2
        ;;
esac
ensure_cargo_afl
mkdir -p out
case "$mode" in
    smoke)
        echo "==> building the fuzz targets (AFL-instrumented)" >&2
        cargo afl build --quiet --bins
        failed=0
        for target in "${TARGETS[@]}"; do
            fuzz "$target" "target/debug/$target" "${FUZZ_SECONDS:-10}" || failed=1
        done
        exit "$failed"
        ;;
    run)
        target=${2:?"which target? one of: ${TARGETS[*]}"}
        seconds=${3:?how many seconds}
        cargo afl build --quiet --release --bin "$target"
        fuzz "$target" "target/release/$target" "$seconds"
        ;;
esac
